// Package obslog is Orbit's structured logging: slog JSON lines in the
// versioned log schema (docs/logging.md), each carrying the service, region,
// trace and span IDs and the context object's fields from the ctx it was
// logged with. Callers' own attributes go under "attrs".
package obslog

import (
	"context"
	"io"
	"log/slog"
	"sync"

	"go.opentelemetry.io/otel/trace"

	"github.com/orbitplane/orbit/libs/reqctx"
)

// SchemaVersion names the log schema every line declares.
const SchemaVersion = "orbit.log/v1"

// Top-level field names of the schema.
const (
	FieldTime      = "time"
	FieldLevel     = "level"
	FieldMessage   = "message"
	FieldSchema    = "schema"
	FieldService   = "service"
	FieldRegion    = "region"
	FieldEvent     = "event"
	FieldTraceID   = "trace_id"
	FieldSpanID    = "span_id"
	FieldRequestID = "request_id"
	FieldTenant    = "tenant"
	FieldSatellite = "satellite"
	FieldQueryID   = "query_id"
	FieldUser      = "user"
	FieldAttrs     = "attrs"
)

// Options configures a logger.
type Options struct {
	Service string
	Region  string
	Level   slog.Leveler
}

// New returns a logger that writes schema lines to w.
func New(w io.Writer, opts Options) *slog.Logger {
	return slog.New(NewHandler(w, opts))
}

// Event is the attribute naming what happened, e.g. obslog.Event("query.started").
func Event(name string) slog.Attr { return slog.String(FieldEvent, name) }

// NewHandler returns the schema handler.
func NewHandler(w io.Writer, opts Options) slog.Handler {
	level := opts.Level
	if level == nil {
		level = slog.LevelInfo
	}
	return &handler{out: &output{w: w}, level: level, service: opts.Service, region: opts.Region}
}

// output is a writer shared by a handler and the handlers derived from it;
// each line is one Write.
type output struct {
	mu sync.Mutex
	w  io.Writer
}

type handler struct {
	out     *output
	level   slog.Leveler
	service string
	region  string
	prefix  string      // group prefix for attributes, "a.b."
	attrs   []slog.Attr // from WithAttrs, already prefixed
	event   string
}

func (h *handler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level.Level() }

// Handle writes r as one line of the schema: time, level, message, the
// schema's fields, then the caller's attributes under "attrs".
func (h *handler) Handle(ctx context.Context, r slog.Record) error {
	l := getLine()
	defer putLine(l)
	l.b = append(l.b, '{')
	first := true
	if !r.Time.IsZero() {
		l.key(slog.TimeKey, first)
		l.time(r.Time.Round(0))
		first = false
	}
	l.key(slog.LevelKey, first)
	l.str(r.Level.String())
	l.key(FieldMessage, false)
	l.str(r.Message)
	member := func(k, v string) {
		if v != "" {
			l.key(k, false)
			l.str(v)
		}
	}
	member(FieldSchema, SchemaVersion)
	member(FieldService, h.service)
	member(FieldRegion, h.region)
	event := h.event
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == FieldEvent { // event is top-level whatever the group
			event = a.Value.String()
		}
		return true
	})
	member(FieldEvent, event)
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		tid, sid := sc.TraceID(), sc.SpanID()
		l.key(FieldTraceID, false)
		l.hex(tid[:])
		l.key(FieldSpanID, false)
		l.hex(sid[:])
	}
	f := reqctx.From(ctx)
	member(FieldRequestID, f.RequestID)
	member(FieldTenant, f.Tenant)
	member(FieldSatellite, f.Satellite)
	member(FieldQueryID, f.QueryID)
	member(FieldUser, f.User)
	// The caller's attributes, under "attrs" (left out when empty).
	mark := len(l.b)
	l.key(FieldAttrs, false)
	l.b = append(l.b, '{')
	wrote := l.attrs(h.attrs, true)
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == FieldEvent {
			return true
		}
		a.Key = h.prefix + a.Key
		if l.attr(a, !wrote) {
			wrote = true
		}
		return true
	})
	if wrote {
		l.b = append(l.b, '}')
	} else {
		l.b = l.b[:mark]
	}
	l.b = append(l.b, '}', '\n')
	h.out.mu.Lock()
	defer h.out.mu.Unlock()
	_, err := h.out.w.Write(l.b)
	return err
}

func (h *handler) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append([]slog.Attr(nil), h.attrs...)
	for _, a := range as {
		if a.Key == FieldEvent { // event is top-level whatever the group
			c.event = a.Value.String()
			continue
		}
		a.Key = h.prefix + a.Key
		c.attrs = append(c.attrs, a)
	}
	return &c
}

func (h *handler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	c := *h
	c.prefix = h.prefix + name + "."
	return &c
}

// Discard is a logger that writes nothing, for tests and tools that have no
// log destination.
func Discard() *slog.Logger { return slog.New(slog.DiscardHandler) }
