// Package reqctx is Orbit's context object: the request ID, tenant, satellite,
// query ID and user that every hop carries, together with the W3C trace
// context. The fields live in OpenTelemetry baggage, so one propagator moves
// all of it across Connect (HTTP headers), NATS message headers and the
// satellite link's frames, and every log line can show it (docs/context.md).
package reqctx

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"

	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	contextv1 "github.com/orbitplane/orbit/proto/orbit/context/v1"
)

// Baggage keys of the context object's fields.
const (
	KeyRequestID = "orbit.request_id"
	KeyTenant    = "orbit.tenant"
	KeySatellite = "orbit.satellite"
	KeyQueryID   = "orbit.query_id"
	KeyUser      = "orbit.user"
)

// MaxValueLen bounds one field's value. W3C baggage allows 8192 bytes in all;
// the five fields together stay well under that.
const MaxValueLen = 256

// Fields is the context object's content.
type Fields struct {
	RequestID string
	Tenant    string
	Satellite string
	QueryID   string
	User      string
}

func (f Fields) pairs() [][2]string {
	return [][2]string{
		{KeyRequestID, f.RequestID},
		{KeyTenant, f.Tenant},
		{KeySatellite, f.Satellite},
		{KeyQueryID, f.QueryID},
		{KeyUser, f.User},
	}
}

// From returns the fields carried by ctx.
func From(ctx context.Context) Fields {
	b := baggage.FromContext(ctx)
	return Fields{
		RequestID: b.Member(KeyRequestID).Value(),
		Tenant:    b.Member(KeyTenant).Value(),
		Satellite: b.Member(KeySatellite).Value(),
		QueryID:   b.Member(KeyQueryID).Value(),
		User:      b.Member(KeyUser).Value(),
	}
}

// With returns ctx carrying the non-empty fields of f, replacing earlier
// values of those fields and keeping the rest.
//
// The baggage is built once (baggage.New) rather than member by member:
// every SetMember copies the whole list, and the path sets two or three
// fields at a time (BenchmarkHops).
func With(ctx context.Context, f Fields) (context.Context, error) {
	var set [5]baggage.Member
	n := 0
	for _, kv := range f.pairs() {
		if kv[1] == "" {
			continue
		}
		if len(kv[1]) > MaxValueLen {
			return ctx, fmt.Errorf("reqctx: %s is %d bytes, limit %d", kv[0], len(kv[1]), MaxValueLen)
		}
		m, err := baggage.NewMemberRaw(kv[0], kv[1])
		if err != nil {
			return ctx, fmt.Errorf("reqctx: %s: %w", kv[0], err)
		}
		set[n] = m
		n++
	}
	if n == 0 {
		return ctx, nil
	}
	b := baggage.FromContext(ctx)
	var err error
	if n == 1 {
		// One field: SetMember's copy is cheaper than a new list
		// (BenchmarkHops: 6,768 against 7,496 B and 57 against 63
		// allocations per query without this case).
		b, err = b.SetMember(set[0])
	} else {
		members := make([]baggage.Member, 0, b.Len()+n)
	keep:
		for _, m := range b.Members() {
			for _, s := range set[:n] {
				if m.Key() == s.Key() {
					continue keep
				}
			}
			members = append(members, m)
		}
		b, err = baggage.New(append(members, set[:n]...)...)
	}
	if err != nil {
		return ctx, fmt.Errorf("reqctx: %w", err)
	}
	return baggage.ContextWithBaggage(ctx, b), nil
}

// MustWith is With for values known to be valid (IDs the caller generated).
func MustWith(ctx context.Context, f Fields) context.Context {
	ctx, err := With(ctx, f)
	if err != nil {
		panic(err)
	}
	return ctx
}

// EnsureRequestID gives ctx a request ID if it has none and returns it.
func EnsureRequestID(ctx context.Context) (context.Context, string) {
	if id := From(ctx).RequestID; id != "" {
		return ctx, id
	}
	id := NewID()
	return MustWith(ctx, Fields{RequestID: id}), id
}

// NewID returns a random 128-bit ID in hex.
func NewID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+).
	return hex.EncodeToString(b[:])
}

// Propagator moves the trace context and the baggage; every carrier in Orbit
// uses it.
func Propagator() propagation.TextMapPropagator {
	return propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
}

// TraceID returns ctx's trace ID, or "" if it has none.
func TraceID(ctx context.Context) string {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.HasTraceID() {
		return ""
	}
	return sc.TraceID().String()
}

// ToCarrier encodes ctx for a satellite link frame.
func ToCarrier(ctx context.Context) *contextv1.Carrier {
	c := &contextv1.Carrier{}
	propagator.Inject(ctx, carrier{c})
	return c
}

// FromCarrier returns ctx with the trace context and baggage of c (a nil c
// leaves ctx as it is).
func FromCarrier(ctx context.Context, c *contextv1.Carrier) context.Context {
	if c == nil {
		return ctx
	}
	return propagator.Extract(ctx, carrier{c})
}

var propagator = Propagator()

// carrier is a propagation.TextMapCarrier over a Carrier's three fields, so
// moving the context object through a link frame needs no map.
type carrier struct{ c *contextv1.Carrier }

func (c carrier) Get(key string) string {
	switch key {
	case "traceparent":
		return c.c.GetTraceparent()
	case "tracestate":
		return c.c.GetTracestate()
	case "baggage":
		return c.c.GetBaggage()
	}
	return ""
}

func (c carrier) Set(key, value string) {
	switch key {
	case "traceparent":
		c.c.Traceparent = value
	case "tracestate":
		c.c.Tracestate = value
	case "baggage":
		c.c.Baggage = value
	}
}

func (c carrier) Keys() []string { return []string{"traceparent", "tracestate", "baggage"} }

// Replace drops every baggage member the caller sent and sets f. The public
// edge (the gateway) uses it, so a caller can never choose its own tenant,
// satellite or query ID.
func Replace(ctx context.Context, f Fields) (context.Context, error) {
	return With(baggage.ContextWithoutBaggage(ctx), f)
}

// ValidID reports whether s can be used as an ID inside NATS subjects and
// keys: 1..64 of [A-Za-z0-9_-].
func ValidID(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}
