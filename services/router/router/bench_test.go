package router

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/orbitplane/orbit/libs/testing/testbench"
)

// BenchmarkRouterVsPlainLoop: the engine against a hand-written loop doing
// the same work on the same events — decode, drop DEBUG, mask emails, IPv4
// addresses and tokens in every string, route ERROR to one sink and
// everything kept to another, encode (docs/benchmarks.md):
//
//	go test -run '^$' -bench RouterVsPlainLoop -benchtime 1x ./services/router/router/
func BenchmarkRouterVsPlainLoop(b *testing.B) {
	events := benchEvents(100_000)
	en := mustEngine(b, `
version: 1
sources: [{stream: logs}]
sinks: {all: {type: stdout}, errors: {type: stdout}}
rules:
  - match: {level: DEBUG}
    drop: true
  - mask: {patterns: [email, ipv4, token]}
  - match: {level: ERROR}
    route: [errors]
  - route: [all]
`)
	ps, err := compilePatterns([]string{"email", "ipv4", "token"})
	if err != nil {
		b.Fatal(err)
	}
	plain := func() int {
		out := 0
		for _, raw := range events {
			var e map[string]any
			if err := json.Unmarshal(raw, &e); err != nil {
				continue
			}
			if e["level"] == "DEBUG" {
				continue
			}
			plainMask(e, ps)
			enc, err := json.Marshal(e)
			if err != nil {
				continue
			}
			if e["level"] == "ERROR" {
				out += len(enc)
			}
			out += len(enc)
		}
		return out
	}
	engine := func() int {
		res := newResult()
		for i, raw := range events {
			en.Process("logs", raw, uint64(i+1), res)
		}
		return len(res.Out["all"]) + len(res.Out["errors"])
	}
	var engines, plains, ratios []float64
	for range b.N {
		for round := range 3 {
			t := time.Now()
			plain()
			p := float64(len(events)) / time.Since(t).Seconds()
			t = time.Now()
			engine()
			r := float64(len(events)) / time.Since(t).Seconds()
			b.Logf("round %d: router engine %.0f events/s, plain loop %.0f events/s", round, r, p)
			engines, plains, ratios = append(engines, r), append(plains, p), append(ratios, r/p)
		}
	}
	b.ReportMetric(testbench.Median(engines), "events/s")
	b.ReportMetric(testbench.Median(plains), "plain_events/s")
	b.ReportMetric(testbench.Median(ratios), "ratio")
}

// plainMask is what a hand-written loop does: every string, every pattern.
func plainMask(v any, ps []pattern) any {
	switch x := v.(type) {
	case map[string]any:
		for k, val := range x {
			x[k] = plainMask(val, ps)
		}
	case []any:
		for i, val := range x {
			x[i] = plainMask(val, ps)
		}
	case string:
		for _, p := range ps {
			x = p.re.ReplaceAllLiteralString(x, "[masked:"+p.name+"]")
		}
		return x
	}
	return v
}

// benchEvents makes schema lines of about 300 bytes: five services, mostly
// INFO, some DEBUG, WARN and ERROR, a few carrying emails, addresses and
// tokens.
func benchEvents(n int) [][]byte {
	rng := rand.New(rand.NewPCG(7, 7))
	levels := []string{"DEBUG", "INFO", "INFO", "INFO", "INFO", "INFO", "WARN", "ERROR"}
	services := []string{"gateway", "querybroker", "connector", "registry", "satellite"}
	out := make([][]byte, n)
	for i := range out {
		msg := "request served"
		switch rng.IntN(10) {
		case 0:
			msg = fmt.Sprintf("login by user%d@example.com", rng.IntN(1000))
		case 1:
			msg = fmt.Sprintf("peer 10.%d.%d.%d reset", rng.IntN(256), rng.IntN(256), rng.IntN(256))
		case 2:
			msg = "auth header Bearer abcdef.123456.zzz"
		}
		out[i] = fmt.Appendf(nil, `{"time":"2026-11-24T00:00:%02d.%09dZ","level":%q,"message":%q,"schema":"orbit.log/v1","service":%q,"region":"local","event":"rpc.done","trace_id":"%032x","span_id":"%016x","tenant":"dev","attrs":{"procedure":"/orbit.query.v1.QueryService/ExecuteQuery","code":"ok","duration_ms":%d}}`,
			i%60, i, levels[rng.IntN(len(levels))], msg, services[rng.IntN(len(services))], rng.Uint64(), rng.Uint64(), rng.IntN(500))
	}
	return out
}
