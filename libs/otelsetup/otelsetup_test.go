package otelsetup_test

import (
	"context"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/orbitplane/orbit/libs/otelsetup"
)

func TestSetup(t *testing.T) {
	ctx := context.Background()
	tp, err := otelsetup.Setup(ctx, otelsetup.Config{Service: "test"})
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Shutdown(ctx)
	// No exporter: IDs for log lines and propagation, nothing recorded.
	_, span := tp.Tracer("t").Start(ctx, "op")
	if !span.SpanContext().HasTraceID() || !span.SpanContext().HasSpanID() || span.SpanContext().IsSampled() || span.IsRecording() {
		t.Errorf("without an exporter: span %v (recording %v), want IDs, unsampled, not recording", span.SpanContext(), span.IsRecording())
	}
	span.End()
	// A trace sampled upstream stays sampled.
	parent := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1}, SpanID: trace.SpanID{2}, TraceFlags: trace.FlagsSampled, Remote: true})
	_, child := tp.Tracer("t").Start(trace.ContextWithRemoteSpanContext(ctx, parent), "op")
	if !child.SpanContext().IsSampled() || child.SpanContext().TraceID() != parent.TraceID() {
		t.Errorf("child of a sampled parent: %v", child.SpanContext())
	}
	child.End()
	// With an exporter, new traces are sampled (the exporter connects lazily).
	etp, err := otelsetup.Setup(ctx, otelsetup.Config{Service: "test", Exporter: otelsetup.ExporterOTLP, Endpoint: "127.0.0.1:1", Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	_, root := etp.Tracer("t").Start(ctx, "op")
	if !root.SpanContext().IsSampled() || !root.IsRecording() {
		t.Errorf("with an exporter: %v recording %v", root.SpanContext(), root.IsRecording())
	}
	root.End()
	sctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	_ = etp.Shutdown(sctx) // nothing listens on :1; dropping the span is fine here

	for name, cfg := range map[string]otelsetup.Config{
		"unknown exporter":   {Exporter: "zipkin"},
		"otlp no endpoint":   {Exporter: otelsetup.ExporterOTLP},
		"ratio out of range": {SampleRatio: 1.5},
		"negative ratio":     {SampleRatio: -0.1},
	} {
		if _, err := otelsetup.Setup(ctx, cfg); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
