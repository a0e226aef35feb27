package collector

import (
	"bytes"
	"encoding/json"
	"time"

	"github.com/orbitplane/orbit/libs/obslog"
)

// criLine splits a CRI container log line ("<time> <stdout|stderr> <F|P>
// <text>"); ok is false for anything else.
func criLine(b []byte) (ts time.Time, stream string, partial bool, text []byte, ok bool) {
	sp1 := bytes.IndexByte(b, ' ')
	if sp1 < 20 {
		return
	}
	t, err := time.Parse(time.RFC3339Nano, string(b[:sp1]))
	if err != nil {
		return
	}
	rest := b[sp1+1:]
	var s string
	switch {
	case bytes.HasPrefix(rest, []byte("stdout ")):
		s = "stdout"
	case bytes.HasPrefix(rest, []byte("stderr ")):
		s = "stderr"
	default:
		return
	}
	rest = rest[len(s)+1:]
	if len(rest) < 2 || rest[1] != ' ' || (rest[0] != 'F' && rest[0] != 'P') {
		return
	}
	return t, s, rest[0] == 'P', rest[2:], true
}

// isObject reports whether b is one JSON object.
func isObject(b []byte) bool {
	b = bytes.TrimSpace(b)
	return len(b) > 1 && b[0] == '{' && b[len(b)-1] == '}' && json.Valid(b)
}

// wrapped is a line that was not JSON, in the log schema.
type wrapped struct {
	Time    string            `json:"time"`
	Level   string            `json:"level"`
	Message string            `json:"message"`
	Schema  string            `json:"schema"`
	Service string            `json:"service"`
	Event   string            `json:"event"`
	Attrs   map[string]string `json:"attrs"`
}

// normalize returns what is published for one line: a JSON object as it is,
// anything else wrapped (reported) in a schema line naming its source.
func normalize(text []byte, ts time.Time, service, source, stream string, truncated bool) ([]byte, bool) {
	text = bytes.TrimRight(text, "\r")
	if !truncated && isObject(text) {
		return text, false
	}
	w := wrapped{
		Time: ts.UTC().Format(time.RFC3339Nano), Level: "INFO", Message: string(text), Schema: obslog.SchemaVersion,
		Service: service, Event: "collector.line", Attrs: map[string]string{"source": source},
	}
	if stream != "" {
		w.Attrs["stream"] = stream
	}
	if truncated {
		w.Attrs["truncated"] = "true"
	}
	b, _ := json.Marshal(w)
	return b, true
}
