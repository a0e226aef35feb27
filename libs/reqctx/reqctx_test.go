package reqctx_test

import (
	"context"
	"strings"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/orbitplane/orbit/libs/reqctx"
)

func TestWithAndFrom(t *testing.T) {
	ctx := reqctx.MustWith(context.Background(), reqctx.Fields{Tenant: "t1", User: "u=1;x"})
	ctx = reqctx.MustWith(ctx, reqctx.Fields{QueryID: "q1"})
	got := reqctx.From(ctx)
	if got.Tenant != "t1" || got.QueryID != "q1" || got.User != "u=1;x" {
		t.Errorf("got %+v", got)
	}
	if _, err := reqctx.With(ctx, reqctx.Fields{Tenant: strings.Repeat("x", reqctx.MaxValueLen+1)}); err == nil {
		t.Error("over-long value accepted")
	}
	ctx, id := reqctx.EnsureRequestID(ctx)
	if len(id) != 32 {
		t.Errorf("request id %q, want 32 hex chars", id)
	}
	if _, id2 := reqctx.EnsureRequestID(ctx); id2 != id {
		t.Errorf("EnsureRequestID replaced %q with %q", id, id2)
	}
}

func TestCarrierRoundTrip(t *testing.T) {
	tp := sdktrace.NewTracerProvider()
	ctx, span := tp.Tracer("t").Start(context.Background(), "op")
	defer span.End()
	ctx = reqctx.MustWith(ctx, reqctx.Fields{Tenant: "t1", Satellite: "s1"})
	c := reqctx.ToCarrier(ctx)
	if !strings.HasPrefix(c.GetTraceparent(), "00-"+span.SpanContext().TraceID().String()) {
		t.Errorf("traceparent %q lacks the trace ID", c.GetTraceparent())
	}
	back := reqctx.FromCarrier(context.Background(), c)
	if reqctx.TraceID(back) != span.SpanContext().TraceID().String() {
		t.Error("trace ID lost in the carrier")
	}
	if f := reqctx.From(back); f.Tenant != "t1" || f.Satellite != "s1" {
		t.Errorf("fields lost: %+v", f)
	}
	if reqctx.FromCarrier(ctx, nil) != ctx {
		t.Error("nil carrier changed ctx")
	}
}
