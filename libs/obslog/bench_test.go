package obslog_test

import (
	"context"
	"io"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/orbitplane/orbit/libs/obslog"
	"github.com/orbitplane/orbit/libs/reqctx"
)

// BenchmarkLine is one per-query line as the broker writes it: schema,
// trace, request fields and five attributes.
func BenchmarkLine(b *testing.B) {
	log := obslog.New(io.Discard, obslog.Options{Service: "querybroker", Region: "hub"})
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.NeverSample()))
	ctx, span := tp.Tracer("bench").Start(context.Background(), "op")
	defer span.End()
	ctx = reqctx.MustWith(ctx, reqctx.Fields{RequestID: "01JD3X5Q8K2N4M6P8R0T2V4X6Z", Tenant: "tenant-a", Satellite: "8f14e45f-ceea-467f-a0e6-4b2c5d1e9a77", QueryID: "01JD3X5Q8K2N4M6P8R0T2V4X70"})
	b.ReportAllocs()
	for b.Loop() {
		log.InfoContext(ctx, "query finished", obslog.Event("broker.query_finished"), "rows", int64(1), "bytes", int64(8),
			"satellites_ok", int32(1), "satellites", int32(1), "elapsed_ms", int64(0))
	}
}
