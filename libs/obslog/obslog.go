// Package obslog is Orbit's structured logging: slog JSON lines in the
// versioned log schema (docs/logging.md), each carrying the service, region,
// trace and span IDs and the context object's fields from the ctx it was
// logged with. Callers' own attributes go under "attrs".
package obslog

import (
	"context"
	"io"
	"log/slog"

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
	inner := slog.NewJSONHandler(w, &slog.HandlerOptions{
		Level: level,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.MessageKey {
				a.Key = FieldMessage
			}
			return a
		},
	})
	return &handler{inner: inner, service: opts.Service, region: opts.Region}
}

type handler struct {
	inner   slog.Handler
	service string
	region  string
	prefix  string      // group prefix for attributes, "a.b."
	attrs   []slog.Attr // from WithAttrs, already prefixed
	event   string
}

func (h *handler) Enabled(ctx context.Context, l slog.Level) bool { return h.inner.Enabled(ctx, l) }

func (h *handler) Handle(ctx context.Context, r slog.Record) error {
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
		if a.Key == FieldEvent { // event is top-level whatever the group
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
	for _, kv := range [][2]string{
		{FieldRequestID, f.RequestID},
		{FieldTenant, f.Tenant},
		{FieldSatellite, f.Satellite},
		{FieldQueryID, f.QueryID},
		{FieldUser, f.User},
	} {
		if kv[1] != "" {
			out.AddAttrs(slog.String(kv[0], kv[1]))
		}
	}
	if len(attrs) > 0 {
		out.AddAttrs(slog.Attr{Key: FieldAttrs, Value: slog.GroupValue(attrs...)})
	}
	return h.inner.Handle(ctx, out)
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
