package obslog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/orbitplane/orbit/libs/reqctx"
)

// reference is how lines were written before the handler encoded them
// itself: a second Record handed to slog.JSONHandler. The handler must
// write the same bytes.
type reference struct {
	inner   slog.Handler
	service string
	region  string
	prefix  string
	attrs   []slog.Attr
	event   string
}

func newReference(w io.Writer, service, region string) *reference {
	inner := slog.NewJSONHandler(w, &slog.HandlerOptions{
		Level: slog.LevelDebug,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.MessageKey {
				a.Key = FieldMessage
			}
			return a
		},
	})
	return &reference{inner: inner, service: service, region: region}
}

func (h *reference) Enabled(context.Context, slog.Level) bool { return true }

func (h *reference) Handle(ctx context.Context, r slog.Record) error {
	out := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	out.AddAttrs(slog.String(FieldSchema, SchemaVersion))
	if h.service != "" {
		out.AddAttrs(slog.String(FieldService, h.service))
	}
	if h.region != "" {
		out.AddAttrs(slog.String(FieldRegion, h.region))
	}
	event := h.event
	attrs := append([]slog.Attr(nil), h.attrs...)
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == FieldEvent {
			event = a.Value.String()
			return true
		}
		a.Key = h.prefix + a.Key
		attrs = append(attrs, a)
		return true
	})
	if event != "" {
		out.AddAttrs(slog.String(FieldEvent, event))
	}
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		out.AddAttrs(slog.String(FieldTraceID, sc.TraceID().String()), slog.String(FieldSpanID, sc.SpanID().String()))
	}
	f := reqctx.From(ctx)
	for _, kv := range [][2]string{{FieldRequestID, f.RequestID}, {FieldTenant, f.Tenant}, {FieldSatellite, f.Satellite}, {FieldQueryID, f.QueryID}, {FieldUser, f.User}} {
		if kv[1] != "" {
			out.AddAttrs(slog.String(kv[0], kv[1]))
		}
	}
	if len(attrs) > 0 {
		out.AddAttrs(slog.Attr{Key: FieldAttrs, Value: slog.GroupValue(attrs...)})
	}
	return h.inner.Handle(ctx, out)
}

func (h *reference) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append([]slog.Attr(nil), h.attrs...)
	for _, a := range as {
		if a.Key == FieldEvent {
			c.event = a.Value.String()
			continue
		}
		a.Key = h.prefix + a.Key
		c.attrs = append(c.attrs, a)
	}
	return &c
}

func (h *reference) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	c := *h
	c.prefix = h.prefix + name + "."
	return &c
}

type valuer struct{ v any }

func (v valuer) LogValue() slog.Value { return slog.AnyValue(v.v) }

type nilErr struct{ msg string }

func (e *nilErr) Error() string { return e.msg } // panics on a nil pointer

type marshaler struct{ N int }

func (m marshaler) MarshalJSON() ([]byte, error) { return []byte(fmt.Sprintf(`{"n": %d}`, m.N)), nil }

type badMarshaler struct{}

func (badMarshaler) MarshalJSON() ([]byte, error) { return nil, errors.New("cannot") }

func TestEncodingMatchesJSONHandler(t *testing.T) {
	tp := sdktrace.NewTracerProvider()
	traced, span := tp.Tracer("test").Start(context.Background(), "op")
	defer span.End()
	full := reqctx.MustWith(traced, reqctx.Fields{RequestID: "r1", Tenant: "t\"1", Satellite: "s1", QueryID: "q1", User: "ü<&>"})
	partial := reqctx.MustWith(context.Background(), reqctx.Fields{Tenant: "t2"})
	when := time.Date(2026, 11, 29, 12, 0, 0, 123456789, time.FixedZone("X", 3600))

	var nilE *nilErr
	cases := []struct {
		name  string
		ctx   context.Context
		log   func(*slog.Logger) *slog.Logger
		level slog.Level
		msg   string
		args  []any
	}{
		{name: "plain", ctx: context.Background(), msg: "hello"},
		{name: "context and trace", ctx: full, msg: "query finished", args: []any{Event("broker.query_finished"), "rows", int64(1), "bytes", int64(8), "ok", true}},
		{name: "partial context", ctx: partial, level: slog.LevelWarn, msg: "w"},
		{name: "levels", ctx: context.Background(), level: slog.LevelDebug - 2, msg: "d"},
		{name: "error level", ctx: context.Background(), level: slog.LevelError + 1, msg: "e", args: []any{"error", errors.New("boom\n\"quoted\"")}},
		{name: "escapes", ctx: context.Background(), msg: "ctl \x00\x01\x1f\t\r\n \\ \" </script> \u2028\u2029 \xff\xfe end", args: []any{"k\x02\"", "v\u2029\xc3"}},
		{name: "unicode", ctx: context.Background(), msg: "日本語 ✓ 🚀", args: []any{"ключ", "значение"}},
		{name: "kinds", ctx: context.Background(), msg: "kinds", args: []any{
			"i", -42, "u", uint64(math.MaxUint64), "f", 3.25, "big", 1e21, "small", 1e-7, "nan", math.NaN(), "inf", math.Inf(1),
			"d", 1500 * time.Millisecond, "t", when, "b", false, "s", "", "any", map[string]int{"a": 1}, "slice", []string{"x", "<y>"},
			"nil", nil, "bytes", []byte("hi"), "marshaler", marshaler{N: 3}, "bad", badMarshaler{}, "nilerr", nilE,
			"struct", struct{ A, B int }{1, 2},
		}},
		{name: "valuers", ctx: context.Background(), msg: "v", args: []any{"lv", valuer{7}, "lvg", valuer{slog.GroupValue(slog.Int("x", 1))}}},
		{name: "groups", ctx: context.Background(), msg: "g", args: []any{
			slog.Group("g", "a", 1, slog.Group("h", "b", 2)), slog.Group("empty"), slog.Group("", "inline", 3),
			slog.Group("onlyempty", slog.Group("e")), slog.Attr{}, slog.Any("", nil), slog.Int("", 0),
		}},
		{name: "event in group", ctx: context.Background(), msg: "x", log: func(l *slog.Logger) *slog.Logger { return l.WithGroup("db") }, args: []any{Event("e.v"), "rows", 3}},
		{name: "with and group", ctx: full, msg: "x", log: func(l *slog.Logger) *slog.Logger {
			return l.With("conn", 7, Event("base.event")).WithGroup("db").With("pool", "p").WithGroup("q")
		}, args: []any{"rows", 3}},
		{name: "only event", ctx: context.Background(), msg: "x", args: []any{Event("only")}},
		{name: "only empty attrs", ctx: context.Background(), msg: "x", args: []any{slog.Group("e"), slog.Attr{}}},
		{name: "bad key args", ctx: context.Background(), msg: "x", args: []any{42, "dangling"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var got, want bytes.Buffer
			h := NewHandler(&got, Options{Service: "svc", Region: "r\u2028", Level: slog.LevelDebug - 4})
			for _, pair := range []struct {
				h   slog.Handler
				buf *bytes.Buffer
			}{{h, &got}, {newReference(&want, "svc", "r\u2028"), &want}} {
				l := slog.New(pair.h)
				if c.log != nil {
					l = c.log(l)
				}
				r := slog.NewRecord(when, c.level, c.msg, 0)
				r.Add(c.args...)
				if err := l.Handler().Handle(c.ctx, r); err != nil {
					t.Fatal(err)
				}
			}
			if got.String() != want.String() {
				t.Fatalf("line differs from slog.JSONHandler's\n got: %s\nwant: %s", got.String(), want.String())
			}
			standard := c.level == slog.LevelDebug || c.level == slog.LevelInfo || c.level == slog.LevelWarn || c.level == slog.LevelError
			if err := Validate(bytes.TrimSpace(got.Bytes())); err != nil && standard && c.name != "kinds" {
				t.Fatalf("line is outside the schema: %v: %s", err, got.String())
			}
		})
	}
}
