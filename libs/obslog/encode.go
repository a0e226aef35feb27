package obslog

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"reflect"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// The handler encodes its lines itself instead of through
// slog.JSONHandler: the schema is fixed, and building a second Record with
// a dozen attributes for JSONHandler to walk cost ≈ 4.5 µs and 13
// allocations a line — four lines on every query's path
// (docs/benchmarks.md). The output is byte for byte what JSONHandler wrote
// (TestEncodingMatchesJSONHandler): the same escaping, number and time
// formats, empty-attribute and empty-group elision, and "!ERROR:" values.

// line is one line being encoded.
type line struct{ b []byte }

var linePool = sync.Pool{New: func() any { return &line{b: make([]byte, 0, 1024)} }}

// maxPooledLine keeps an occasional huge line from pinning its buffer.
const maxPooledLine = 16 << 10

func getLine() *line { return linePool.Get().(*line) }

func putLine(l *line) {
	if cap(l.b) > maxPooledLine {
		return
	}
	l.b = l.b[:0]
	linePool.Put(l)
}

// key appends `"k":` after a separator when the object has members.
func (l *line) key(k string, first bool) {
	if !first {
		l.b = append(l.b, ',')
	}
	l.str(k)
	l.b = append(l.b, ':')
}

// str appends s as a quoted JSON string, escaped as slog.JSONHandler does
// (no HTML escaping; U+2028 and U+2029 escaped; invalid UTF-8 as U+FFFD).
func (l *line) str(s string) {
	l.b = append(l.b, '"')
	l.b = appendEscaped(l.b, s)
	l.b = append(l.b, '"')
}

// hex appends b as a quoted lowercase hex string (trace and span IDs).
func (l *line) hex(b []byte) {
	l.b = append(l.b, '"')
	l.b = hex.AppendEncode(l.b, b)
	l.b = append(l.b, '"')
}

const hexDigits = "0123456789abcdef"

func appendEscaped(buf []byte, s string) []byte {
	start := 0
	for i := 0; i < len(s); {
		if b := s[i]; b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' {
				i++
				continue
			}
			buf = append(buf, s[start:i]...)
			buf = append(buf, '\\')
			switch b {
			case '\\', '"':
				buf = append(buf, b)
			case '\n':
				buf = append(buf, 'n')
			case '\r':
				buf = append(buf, 'r')
			case '\t':
				buf = append(buf, 't')
			default:
				buf = append(buf, 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xF])
			}
			i++
			start = i
			continue
		}
		c, size := utf8.DecodeRuneInString(s[i:])
		if c == utf8.RuneError && size == 1 {
			buf = append(buf, s[start:i]...)
			buf = append(buf, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if c == '\u2028' || c == '\u2029' {
			buf = append(buf, s[start:i]...)
			buf = append(buf, `\u202`...)
			buf = append(buf, hexDigits[c&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	return append(buf, s[start:]...)
}

// attr appends a (resolved) as a member; it reports whether anything was
// written: an empty attribute, and a group with nothing in it, are left
// out.
func (l *line) attr(a slog.Attr, first bool) bool {
	a.Value = a.Value.Resolve()
	if a.Equal(slog.Attr{}) {
		return false
	}
	if a.Value.Kind() != slog.KindGroup {
		l.key(a.Key, first)
		l.value(a.Value)
		return true
	}
	attrs := a.Value.Group()
	if len(attrs) == 0 {
		return false
	}
	mark := len(l.b)
	if a.Key != "" { // a group without a key is inlined
		l.key(a.Key, first)
		l.b = append(l.b, '{')
		first = true
	}
	wrote := l.attrs(attrs, first)
	if !wrote {
		l.b = l.b[:mark]
		return false
	}
	if a.Key != "" {
		l.b = append(l.b, '}')
	}
	return true
}

func (l *line) attrs(as []slog.Attr, first bool) bool {
	wrote := false
	for _, a := range as {
		if l.attr(a, first && !wrote) {
			wrote = true
		}
	}
	return wrote
}

func (l *line) value(v slog.Value) {
	switch v.Kind() {
	case slog.KindString:
		l.str(v.String())
	case slog.KindInt64:
		l.b = strconv.AppendInt(l.b, v.Int64(), 10)
	case slog.KindUint64:
		l.b = strconv.AppendUint(l.b, v.Uint64(), 10)
	case slog.KindBool:
		l.b = strconv.AppendBool(l.b, v.Bool())
	case slog.KindDuration:
		l.b = strconv.AppendInt(l.b, int64(v.Duration()), 10)
	case slog.KindTime:
		l.time(v.Time())
	case slog.KindFloat64:
		// encoding/json's float format, as JSONHandler writes it.
		l.marshal(v.Float64())
	default:
		l.any(v.Any())
	}
}

func (l *line) time(t time.Time) {
	if y := t.Year(); y < 0 || y >= 10000 {
		l.str("!ERROR:time.Time year outside of range [0,9999]")
	}
	l.b = append(l.b, '"')
	l.b = t.AppendFormat(l.b, time.RFC3339Nano)
	l.b = append(l.b, '"')
}

func (l *line) any(a any) {
	defer func() {
		// A nil pointer whose Error or MarshalJSON does not guard
		// against nil reads "<nil>", as in JSONHandler.
		if r := recover(); r != nil {
			if v := reflect.ValueOf(a); v.Kind() == reflect.Pointer && v.IsNil() {
				l.str("<nil>")
				return
			}
			panic(r)
		}
	}()
	_, jm := a.(json.Marshaler)
	if err, ok := a.(error); ok && !jm {
		l.str(err.Error())
		return
	}
	l.marshal(a)
}

// marshal appends v as encoding/json writes it without HTML escaping.
func (l *line) marshal(v any) {
	var bb bytes.Buffer
	enc := json.NewEncoder(&bb)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		l.str(fmt.Sprintf("!ERROR:%v", err))
		return
	}
	out := bb.Bytes()
	l.b = append(l.b, out[:len(out)-1]...) // without Encode's newline
}
