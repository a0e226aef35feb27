package logbroker

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orbitplane/orbit/libs/logstream"
	"github.com/orbitplane/orbit/libs/testing/testbench"
	"github.com/orbitplane/orbit/libs/testing/testnats"
	logbrokerv1 "github.com/orbitplane/orbit/proto/orbit/logbroker/v1"
)

// Benchmarks against raw JetStream on the same server in the same run
// (docs/benchmarks.md):
//
//	go test -run '^$' -bench . -benchtime 1x ./services/logbroker/logbroker/
//
// Messages are 128 B, streams R1 on file storage, as in the shared notes.

const benchSize = 128

// BenchmarkAsyncPublish: the broker's PublishBatch (1000 messages a batch,
// four batches in flight) against raw JetStream async publishing of the
// same messages from one client.
func BenchmarkAsyncPublish(b *testing.B) {
	f := start(b, Config{})
	ctx := as("bench")
	nc := testnats.Connect(b, f.ns)
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4000))
	if err != nil {
		b.Fatal(err)
	}
	value := make([]byte, benchSize)
	const total, batch, inflight = 200_000, 1000, 4
	var raws, brokers, ratios []float64
	for range b.N {
		for round := range 3 {
			raw := fmt.Sprintf("raw%d", round)
			if _, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: raw, Subjects: []string{raw}, Storage: jetstream.FileStorage}); err != nil {
				b.Fatal(err)
			}
			start := time.Now()
			for range total {
				if _, err := js.PublishAsync(raw, value); err != nil {
					b.Fatal(err)
				}
			}
			select {
			case <-js.PublishAsyncComplete():
			case <-time.After(time.Minute):
				b.Fatal("raw async publish did not complete")
			}
			rawRate := total / time.Since(start).Seconds()

			name := fmt.Sprintf("lb%d", round)
			f.create(b, "bench", &logbrokerv1.StreamConfig{Name: name, Subject: name})
			req := &logbrokerv1.PublishBatchRequest{Stream: name}
			for range batch {
				req.Messages = append(req.Messages, &logbrokerv1.BatchMessage{Value: value})
			}
			start = time.Now()
			var wg sync.WaitGroup
			errs := make(chan error, inflight)
			for w := range inflight {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := w; i < total/batch; i += inflight {
						if _, err := f.client.PublishBatch(ctx, connect.NewRequest(req)); err != nil {
							errs <- err
							return
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			if err := <-errs; err != nil {
				b.Fatal(err)
			}
			brokerRate := total / time.Since(start).Seconds()
			b.Logf("round %d: logbroker PublishBatch %.0f msg/s, raw JetStream async %.0f msg/s", round, brokerRate, rawRate)
			raws, brokers, ratios = append(raws, rawRate), append(brokers, brokerRate), append(ratios, brokerRate/rawRate)
		}
	}
	b.ReportMetric(testbench.Median(brokers), "msg/s")
	b.ReportMetric(testbench.Median(raws), "raw_msg/s")
	b.ReportMetric(testbench.Median(ratios), "ratio")
}

// BenchmarkSyncPublish: one publish at a time, waiting for the ack —
// through the broker's Publish RPC and through logstream.Publisher (direct to
// JetStream under the broker's conventions) — against raw JetStream's
// synchronous publish.
func BenchmarkSyncPublish(b *testing.B) {
	f := start(b, Config{})
	ctx := as("bench")
	nc := testnats.Connect(b, f.ns)
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "raw", Subjects: []string{"raw"}, Storage: jetstream.FileStorage}); err != nil {
		b.Fatal(err)
	}
	f.create(b, "bench", &logbrokerv1.StreamConfig{Name: "lb", Subject: "lb"})
	value := make([]byte, benchSize)
	const n = 3000
	p50 := func(f func() error) time.Duration {
		l := make([]time.Duration, n)
		for i := range l {
			t := time.Now()
			if err := f(); err != nil {
				b.Fatal(err)
			}
			l[i] = time.Since(t)
		}
		slices.Sort(l)
		return l[n/2]
	}
	direct := logstream.NewPublisher(js, "bench", 0)
	var raws, brokers, directs, ratios, directRatios []float64
	for range b.N {
		for round := range 3 {
			raw := p50(func() error { _, err := js.Publish(context.Background(), "raw", value); return err })
			broker := p50(func() error {
				_, err := f.client.Publish(ctx, connect.NewRequest(&logbrokerv1.PublishRequest{Stream: "lb", Value: value}))
				return err
			})
			d := p50(func() error {
				_, err := direct.Publish(context.Background(), "lb", logstream.Message{Value: value})
				return err
			})
			b.Logf("round %d: logbroker Publish RPC p50 %v, logstream.Publisher (direct) p50 %v, raw JetStream sync publish p50 %v", round, broker, d, raw)
			raws, brokers, directs = append(raws, float64(raw)/1e6), append(brokers, float64(broker)/1e6), append(directs, float64(d)/1e6)
			ratios, directRatios = append(ratios, float64(broker)/float64(raw)), append(directRatios, float64(d)/float64(raw))
		}
	}
	b.ReportMetric(testbench.Median(brokers), "rpc_p50_ms")
	b.ReportMetric(testbench.Median(directs), "direct_p50_ms")
	b.ReportMetric(testbench.Median(raws), "raw_p50_ms")
	b.ReportMetric(testbench.Median(ratios), "rpc_ratio")
	b.ReportMetric(testbench.Median(directRatios), "direct_ratio")
}
