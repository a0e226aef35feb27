package otelsetup_test

import (
	"context"
	"testing"

	"github.com/orbitplane/orbit/libs/otelsetup"
)

func TestSetup(t *testing.T) {
	ctx := context.Background()
	tp, err := otelsetup.Setup(ctx, otelsetup.Config{Service: "test"})
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Shutdown(ctx)
	_, span := tp.Tracer("t").Start(ctx, "op")
	if !span.SpanContext().HasTraceID() || !span.SpanContext().IsSampled() {
		t.Errorf("span %v has no sampled trace ID without an exporter", span.SpanContext())
	}
	span.End()

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
