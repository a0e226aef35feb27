package cli

import (
	"encoding/base64"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"sigs.k8s.io/yaml"
)

// writer prints rows as they arrive.
type writer interface {
	row([]any) error
	close() error
}

func newWriter(format string, out io.Writer, header []string) (writer, error) {
	switch format {
	case "table":
		return &tableWriter{out: out, header: header}, nil
	case "csv":
		w := csv.NewWriter(out)
		if err := w.Write(header); err != nil {
			return nil, err
		}
		return &csvWriter{w: w}, nil
	case "json":
		return &jsonWriter{enc: json.NewEncoder(out), header: header}, nil
	case "yaml":
		return &yamlWriter{out: out, header: header}, nil
	}
	return nil, fmt.Errorf("-o %q: want table, json, csv or yaml", format)
}

func cell(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case time.Time:
		return x.Format(time.RFC3339Nano)
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64)
	case []byte:
		return base64.StdEncoding.EncodeToString(x)
	}
	return fmt.Sprint(v)
}

type csvWriter struct{ w *csv.Writer }

func (c *csvWriter) row(r []any) error {
	s := make([]string, len(r))
	for i, v := range r {
		s[i] = cell(v)
	}
	return c.w.Write(s)
}

func (c *csvWriter) close() error {
	c.w.Flush()
	return c.w.Error()
}

type jsonWriter struct {
	enc    *json.Encoder
	header []string
}

func (j *jsonWriter) row(r []any) error {
	m := make(map[string]any, len(r))
	for i, v := range r {
		if b, ok := v.([]byte); ok {
			v = base64.StdEncoding.EncodeToString(b)
		}
		m[j.header[i]] = v
	}
	return j.enc.Encode(m)
}

func (j *jsonWriter) close() error { return nil }

// yamlWriter prints a YAML sequence, one mapping per row, as rows arrive
// (keys in column order is not kept: YAML mappings are sorted, as in JSON).
type yamlWriter struct {
	out    io.Writer
	header []string
	rows   int
}

func (y *yamlWriter) row(r []any) error {
	// sigs.k8s.io/yaml goes through encoding/json: []byte becomes base64
	// and time.Time RFC 3339, as in -o json.
	m := make(map[string]any, len(r))
	for i, v := range r {
		m[y.header[i]] = v
	}
	b, err := yaml.Marshal([]map[string]any{m})
	if err != nil {
		return err
	}
	y.rows++
	_, err = y.out.Write(b)
	return err
}

func (y *yamlWriter) close() error {
	if y.rows == 0 {
		_, err := io.WriteString(y.out, "[]\n")
		return err
	}
	return nil
}

// tableWriter sizes columns from the first tableSample rows, then streams;
// later, wider cells are cut with an ellipsis so a huge result never sits in
// memory.
type tableWriter struct {
	out     io.Writer
	header  []string
	sample  [][]string
	widths  []int
	started bool
}

const (
	tableSample   = 500
	maxTableWidth = 60
)

func (t *tableWriter) row(r []any) error {
	s := make([]string, len(r))
	for i, v := range r {
		s[i] = strings.ReplaceAll(cell(v), "\n", " ")
	}
	if !t.started {
		t.sample = append(t.sample, s)
		if len(t.sample) < tableSample {
			return nil
		}
		return t.flushSample()
	}
	return t.print(s)
}

func (t *tableWriter) flushSample() error {
	t.started = true
	t.widths = make([]int, len(t.header))
	for i, h := range t.header {
		t.widths[i] = utf8.RuneCountInString(h)
	}
	for _, r := range t.sample {
		for i, c := range r {
			t.widths[i] = min(max(t.widths[i], utf8.RuneCountInString(c)), maxTableWidth)
		}
	}
	upper := make([]string, len(t.header))
	for i, h := range t.header {
		upper[i] = strings.ToUpper(h)
	}
	if err := t.print(upper); err != nil {
		return err
	}
	for _, r := range t.sample {
		if err := t.print(r); err != nil {
			return err
		}
	}
	t.sample = nil
	return nil
}

func (t *tableWriter) print(r []string) error {
	var b strings.Builder
	for i, c := range r {
		if utf8.RuneCountInString(c) > t.widths[i] {
			c = string([]rune(c)[:t.widths[i]-1]) + "…"
		}
		b.WriteString(c)
		if i < len(r)-1 {
			b.WriteString(strings.Repeat(" ", t.widths[i]-utf8.RuneCountInString(c)+2))
		}
	}
	b.WriteByte('\n')
	_, err := io.WriteString(t.out, b.String())
	return err
}

func (t *tableWriter) close() error {
	if !t.started {
		return t.flushSample()
	}
	return nil
}
