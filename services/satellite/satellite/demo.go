package satellite

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"math"
	mrand "math/rand/v2"
	"time"

	"github.com/orbitplane/orbit/libs/obslog"
	"github.com/orbitplane/orbit/services/satellite/internal/store"
)

// DefaultDemoBackfill is the history --demo generates at first start.
const DefaultDemoBackfill = 15 * time.Minute

// DemoConfig drives --demo: realistic traffic of a few services (request
// spans with children, logs with trace IDs, metrics), so a fresh system has
// something to query.
type DemoConfig struct {
	Enabled bool
	// Rate is requests per second across all services.
	Rate int
	// Backfill is history generated at start.
	Backfill time.Duration
	Seed     uint64
}

// RegisterFlags defines the demo's flags.
func (d *DemoConfig) RegisterFlags(fs *flag.FlagSet) {
	fs.BoolVar(&d.Enabled, "demo", false, "generate demo telemetry (request spans, logs, metrics of a few services)")
	fs.IntVar(&d.Rate, "demo-rate", 20, "demo requests per second")
	fs.DurationVar(&d.Backfill, "demo-backfill", DefaultDemoBackfill, "demo history generated at start")
}

type demoService struct {
	name       string
	endpoints  []string
	p50        time.Duration
	errRate    float64
	downstream []string
}

var demoServices = []demoService{
	{name: "frontend", endpoints: []string{"GET /", "GET /product", "POST /cart", "POST /checkout"}, p50: 12 * time.Millisecond, errRate: 0.01, downstream: []string{"cart", "catalog", "checkout"}},
	{name: "cart", endpoints: []string{"AddItem", "GetCart", "EmptyCart"}, p50: 3 * time.Millisecond, errRate: 0.005},
	{name: "catalog", endpoints: []string{"ListProducts", "GetProduct", "Search"}, p50: 5 * time.Millisecond, errRate: 0.002},
	{name: "checkout", endpoints: []string{"PlaceOrder"}, p50: 40 * time.Millisecond, errRate: 0.03, downstream: []string{"payments", "cart"}},
	{name: "payments", endpoints: []string{"Charge", "Refund"}, p50: 80 * time.Millisecond, errRate: 0.02},
}

type demoGen struct {
	r *mrand.Rand
}

func randHex(r *mrand.Rand, n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return hex.EncodeToString(b)
}

func (g *demoGen) latency(p50 time.Duration) time.Duration {
	// Log-normal around p50: a long tail like real services.
	return time.Duration(float64(p50) * math.Exp(g.r.NormFloat64()*0.6))
}

// request appends one request (its spans, logs and a latency metric) at t.
func (g *demoGen) request(b *store.Batch, t time.Time) {
	svc := demoServices[0]
	if g.r.IntN(4) == 0 {
		svc = demoServices[1+g.r.IntN(len(demoServices)-1)]
	}
	trace := randHex(g.r, 16)
	g.span(b, svc, trace, "", t, 0)
}

func (g *demoGen) span(b *store.Batch, svc demoService, trace, parent string, t time.Time, depth int) time.Duration {
	id := randHex(g.r, 8)
	ep := svc.endpoints[g.r.IntN(len(svc.endpoints))]
	d := g.latency(svc.p50)
	failed := g.r.Float64() < svc.errRate
	if depth < 2 {
		for _, ds := range svc.downstream {
			for _, s := range demoServices {
				if s.name == ds && g.r.IntN(3) > 0 {
					d += g.span(b, s, trace, id, t.Add(time.Millisecond), depth+1)
				}
			}
		}
	}
	status, sev, body := "OK", "INFO", fmt.Sprintf("%s handled in %s", ep, d.Round(time.Microsecond))
	if failed {
		status, sev = "ERROR", "ERROR"
		body = fmt.Sprintf("%s failed: %s", ep, []string{"upstream timeout", "connection reset by peer", "card declined", "deadline exceeded"}[g.r.IntN(4)])
	} else if d > 5*svc.p50 {
		sev, body = "WARN", fmt.Sprintf("%s slow: %s", ep, d.Round(time.Millisecond))
	}
	kind := "SERVER"
	if parent != "" {
		kind = "INTERNAL"
	}
	attrs := fmt.Sprintf(`{"http.route":%q,"deployment.environment":"demo","host.name":"%s-%d"}`, ep, svc.name, g.r.IntN(3))
	b.Spans = append(b.Spans, store.Span{Start: t, Duration: d, TraceID: trace, SpanID: id, ParentSpanID: parent, Service: svc.name, Name: ep, Kind: kind, Status: status, Attributes: attrs})
	b.Logs = append(b.Logs, store.Log{Time: t.Add(d), Service: svc.name, Severity: sev, Body: body, TraceID: trace, SpanID: id, Attributes: attrs, Source: "demo"})
	b.Metrics = append(b.Metrics, store.Metric{Time: t.Add(d), Service: svc.name, Name: "request.duration", Kind: "histogram", Value: float64(d) / 1e6, Unit: "ms", Attributes: fmt.Sprintf(`{"endpoint":%q,"status":%q}`, ep, status)})
	return d
}

func (g *demoGen) gauges(b *store.Batch, t time.Time) {
	for _, s := range demoServices {
		b.Metrics = append(b.Metrics,
			store.Metric{Time: t, Service: s.name, Name: "process.cpu.utilization", Kind: "gauge", Value: 0.05 + 0.4*g.r.Float64(), Unit: "1"},
			store.Metric{Time: t, Service: s.name, Name: "process.memory.rss", Kind: "gauge", Value: float64(80<<20 + g.r.IntN(40<<20)), Unit: "By"},
		)
	}
}

func (a *Agent) runDemo(ctx context.Context) {
	cfg := a.cfg.Demo
	if cfg.Rate <= 0 {
		cfg.Rate = 20
	}
	seed := cfg.Seed
	if seed == 0 {
		var s [8]byte
		_, _ = rand.Read(s[:])
		for _, x := range s {
			seed = seed<<8 | uint64(x)
		}
	}
	g := &demoGen{r: mrand.New(mrand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
	now := time.Now()
	// History first, in one-minute batches, if the store is empty.
	if cfg.Backfill > 0 && a.store.Stats().Rows == 0 {
		for t := now.Add(-cfg.Backfill); t.Before(now) && ctx.Err() == nil; t = t.Add(time.Minute) {
			b := &store.Batch{}
			n := cfg.Rate * 60
			for i := range n {
				g.request(b, t.Add(time.Duration(i)*time.Minute/time.Duration(n)))
			}
			for s := time.Duration(0); s < time.Minute; s += 10 * time.Second {
				g.gauges(b, t.Add(s))
			}
			if err := a.store.Append(ctx, b); err != nil {
				a.log.Warn("demo backfill failed", "error", err)
				return
			}
		}
		a.log.Info("demo backfill done", obslog.Event("satellite.demo_backfill"), "history", cfg.Backfill.String())
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case t := <-tick.C:
			b := &store.Batch{}
			for i := range cfg.Rate {
				g.request(b, t.Add(time.Duration(i)*time.Second/time.Duration(cfg.Rate)))
			}
			if t.Unix()%10 == 0 {
				g.gauges(b, t)
			}
			if err := a.store.Append(ctx, b); err != nil && ctx.Err() == nil {
				a.log.Warn("demo append failed", "error", err)
			}
		}
	}
}
