package reqctx_test

import (
	"context"
	"testing"

	"github.com/orbitplane/orbit/libs/reqctx"
)

// BenchmarkHops is the context object's work for one query on its way
// down: the gateway sets the caller's fields, the broker adds the query ID
// and sends it to the connector in a carrier, the connector reads it and
// adds the satellite, and the satellite reads the carrier again.
func BenchmarkHops(b *testing.B) {
	base := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		ctx, err := reqctx.Replace(base, reqctx.Fields{RequestID: "5f2b8c1d9e0a4b7c8d6e5f4a3b2c1d0e", Tenant: "tenant-a", User: "key-0123456789"})
		if err != nil {
			b.Fatal(err)
		}
		ctx = reqctx.MustWith(ctx, reqctx.Fields{QueryID: "9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d"})
		c := reqctx.ToCarrier(ctx)
		ctx = reqctx.FromCarrier(base, c)
		ctx = reqctx.MustWith(ctx, reqctx.Fields{Tenant: "tenant-a", Satellite: "8f14e45f-ceea-467f-a0e6-4b2c5d1e9a77"})
		ctx = reqctx.FromCarrier(base, reqctx.ToCarrier(ctx))
		if reqctx.From(ctx).Satellite == "" {
			b.Fatal("satellite lost")
		}
	}
}
