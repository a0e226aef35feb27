// Package testbench holds helpers for benchmarks that compare a system with a
// baseline measured in the same run (docs/benchmarks.md).
package testbench

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Median of the rounds' figures (rounds are interleaved, system and baseline).
func Median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

// Latencies are one measurement's round trips.
type Latencies []time.Duration

// Pct is the p-th percentile (0 < p <= 1).
func (l Latencies) Pct(p float64) time.Duration {
	if len(l) == 0 {
		return 0
	}
	s := slices.Clone(l)
	slices.Sort(s)
	return s[int(float64(len(s)-1)*p)]
}

// Measure times n sequential calls of f; the first error stops it.
func Measure(n int, f func() error) (Latencies, error) {
	out := make(Latencies, 0, n)
	for range n {
		start := time.Now()
		if err := f(); err != nil {
			return nil, err
		}
		out = append(out, time.Since(start))
	}
	return out, nil
}

// MeasureNet times n sequential calls of f like Measure, and also each
// round trip minus the part f reports (the time the far end says it spent
// on the work itself), so the way there and back can be told apart from the
// work. The first error stops it.
func MeasureNet(n int, f func() (time.Duration, error)) (total, net Latencies, err error) {
	total, net = make(Latencies, 0, n), make(Latencies, 0, n)
	for range n {
		start := time.Now()
		work, err := f()
		if err != nil {
			return nil, nil, err
		}
		d := time.Since(start)
		total, net = append(total, d), append(net, d-work)
	}
	return total, net, nil
}

// Concurrent calls f from clients goroutines for d and returns the calls
// per second; the first error stops it.
func Concurrent(clients int, d time.Duration, f func() error) (float64, error) {
	var n atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	stop := time.Now().Add(d)
	for range clients {
		wg.Go(func() {
			for time.Now().Before(stop) {
				if err := f(); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				n.Add(1)
			}
		})
	}
	wg.Wait()
	if err, ok := firstErr.Load().(error); ok {
		return 0, err
	}
	return float64(n.Load()) / d.Seconds(), nil
}

// Ms is d in milliseconds.
func Ms(d time.Duration) float64 { return float64(d) / 1e6 }
