package e2e

import (
	"context"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/orbitplane/orbit/libs/directclient"
	"github.com/orbitplane/orbit/libs/testing/testbench"
	gatewayv1 "github.com/orbitplane/orbit/proto/orbit/gateway/v1"
	queryv1 "github.com/orbitplane/orbit/proto/orbit/query/v1"
)

// BenchmarkDirectVsPassthrough measures, in the same run against the same
// satellite, a tiny query's round trip and a 1M-row result's throughput
// through the gateway (passthrough: gateway, broker, NATS, connector, link)
// and in direct mode (HTTPS straight to the satellite, certificate verified,
// token checked). Ratios are direct / passthrough: < 1 means direct is
// faster (docs/benchmarks.md).
func BenchmarkDirectVsPassthrough(b *testing.B) {
	s := newSystem(b, options{tls: true, logFile: true, gatewayCfg: gatewayCfg()})
	a := s.startSatellite(satOptions{name: "edge-1"})
	s.waitCertificate(a)
	ctx := context.Background()
	ep, err := s.gatewayAPI("tenant-a").GetDirectEndpoint(ctx, connect.NewRequest(&gatewayv1.GetDirectEndpointRequest{Satellite: "edge-1"}))
	if err != nil {
		b.Fatal(err)
	}
	roots, _ := directclient.Roots(s.caPEM)
	dq, err := directclient.QueryClient(directclient.HTTPClient(roots, s.certdns.DNSAddr()), ep.Msg)
	if err != nil {
		b.Fatal(err)
	}
	pq := s.query("tenant-a")
	run := func(client interface {
		ExecuteQuery(context.Context, *connect.Request[queryv1.ExecuteQueryRequest]) (*connect.ServerStreamForClient[queryv1.ExecuteQueryResponse], error)
	}, sql string) func() error {
		return func() error {
			st, err := client.ExecuteQuery(ctx, one("edge-1", sql))
			if err != nil {
				return err
			}
			_, err = collect(st, false, nil)
			return err
		}
	}
	const bigSQL = "SELECT i, i * 2 AS j, 'row-' || i::VARCHAR AS s FROM range(1000000) t(i)"
	var dP50, pP50, dP99, pP99, dBig, pBig []float64
	for range b.N {
		for round := range 3 {
			dl, err := measure(1000, run(dq, "SELECT 1"))
			if err != nil {
				b.Fatal(err)
			}
			pl, err := measure(1000, run(pq, "SELECT 1"))
			if err != nil {
				b.Fatal(err)
			}
			timeIt := func(f func() error) float64 {
				start := time.Now()
				if err := f(); err != nil {
					b.Fatal(err)
				}
				return time.Since(start).Seconds()
			}
			db, pb := timeIt(run(dq, bigSQL)), timeIt(run(pq, bigSQL))
			dP50, pP50 = append(dP50, ms(dl.Pct(0.5))), append(pP50, ms(pl.Pct(0.5)))
			dP99, pP99 = append(dP99, ms(dl.Pct(0.99))), append(pP99, ms(pl.Pct(0.99)))
			dBig, pBig = append(dBig, db), append(pBig, pb)
			b.Logf("round %d: tiny p50 direct %.3f ms / passthrough %.3f ms, p99 %.3f / %.3f ms; 1M rows direct %.2f s / passthrough %.2f s",
				round, ms(dl.Pct(0.5)), ms(pl.Pct(0.5)), ms(dl.Pct(0.99)), ms(pl.Pct(0.99)), db, pb)
		}
	}
	med := testbench.Median
	b.ReportMetric(med(dP50), "direct_p50_ms")
	b.ReportMetric(med(pP50), "pass_p50_ms")
	b.ReportMetric(med(dP99), "direct_p99_ms")
	b.ReportMetric(med(pP99), "pass_p99_ms")
	b.ReportMetric(med(dBig), "direct_1M_s")
	b.ReportMetric(med(pBig), "pass_1M_s")
	b.ReportMetric(med(dP50)/med(pP50), "p50_ratio")
	b.ReportMetric(med(dBig)/med(pBig), "1M_time_ratio")
}
