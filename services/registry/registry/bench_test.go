package registry

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/orbitplane/orbit/libs/etcdkv"
	"github.com/orbitplane/orbit/libs/testing/testbench"
	"github.com/orbitplane/orbit/libs/testing/testetcd"
	"github.com/orbitplane/orbit/libs/testing/testnats"
	registryv1 "github.com/orbitplane/orbit/proto/orbit/registry/v1"
)

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkHeartbeats: 100k satellites, heartbeats arriving in connector
// batches of 1000 over NATS. Reports heartbeats/s applied, the CPU the whole
// process (NATS server and publisher included) spent per second, and etcd
// writes in steady state (none) and for 1 % of satellites changing address
// (one batched transaction per 128 keys):
//
//	go test -run '^$' -bench Heartbeats -benchtime 1x ./services/registry/registry/
func BenchmarkHeartbeats(b *testing.B) {
	const sats = 100_000
	ns := testnats.Start(b)
	_, etcd := testetcd.Start(b)
	ctx := context.Background()
	if _, err := RegisterInstance(ctx, etcd, "connector", "c1", time.Minute); err != nil {
		b.Fatal(err)
	}
	items := map[string][]byte{}
	ids := make([]string, sats)
	for i := range sats {
		ids[i] = fmt.Sprintf("sat-%06d", i)
		v, _ := proto.Marshal(&registryv1.Satellite{Id: ids[i], TenantId: "t1", Identity: ids[i], Name: ids[i], ConnectorId: "c1",
			Status: registryv1.SatelliteStatus_SATELLITE_STATUS_HEALTHY, RegisteredAt: timestamppb.Now()})
		items[SatellitePrefix+ids[i]] = v
	}
	if err := etcdkv.PutBatch(ctx, etcd, items); err != nil {
		b.Fatal(err)
	}
	f := start(b, testnats.Connect(b, ns), etcd, Config{HeartbeatInterval: time.Minute})
	pub := testnats.Connect(b, ns)
	rev := func() int64 {
		r, err := etcd.Get(ctx, "/none")
		if err != nil {
			b.Fatal(err)
		}
		return r.Header.Revision
	}
	batches := make([][]byte, 0, sats/1000)
	for off := 0; off < sats; off += 1000 {
		req := &registryv1.HeartbeatRequest{ConnectorId: "c1"}
		for _, id := range ids[off : off+1000] {
			req.Heartbeats = append(req.Heartbeats, &registryv1.SatelliteHeartbeat{SatelliteId: id, StoreRows: 42, StoreBytes: 4096, SentAt: timestamppb.Now()})
		}
		m, _ := proto.Marshal(req)
		batches = append(batches, m)
	}
	time.Sleep(300 * time.Millisecond) // let the start-up writes settle
	for range b.N {
		before := rev()
		var rates, cpus []float64
		for round := range 3 {
			applied := testutil.ToFloat64(f.svc.m.heartbeats)
			c0, t0 := cpuTime(), time.Now()
			for range 5 { // 500k heartbeats per round
				for _, m := range batches {
					if err := pub.Publish(HeartbeatSubject, m); err != nil {
						b.Fatal(err)
					}
				}
			}
			for testutil.ToFloat64(f.svc.m.heartbeats) < applied+5*sats {
				time.Sleep(time.Millisecond)
			}
			wall := time.Since(t0)
			rate := 5 * sats / wall.Seconds()
			cpu := float64(cpuTime()-c0) / float64(wall)
			b.Logf("round %d: %.0f heartbeats/s; process CPU %.2f cores", round, rate, cpu)
			rates, cpus = append(rates, rate), append(cpus, cpu)
		}
		time.Sleep(300 * time.Millisecond)
		steady := rev() - before
		// 1 % of satellites change address.
		req := &registryv1.HeartbeatRequest{ConnectorId: "c1"}
		for _, id := range ids[:sats/100] {
			req.Heartbeats = append(req.Heartbeats, &registryv1.SatelliteHeartbeat{SatelliteId: id, Address: "10.9.9.9:443"})
		}
		m, _ := proto.Marshal(req)
		r0 := rev()
		if _, err := pub.Request(HeartbeatSubject, m, 5*time.Second); err != nil {
			b.Fatal(err)
		}
		time.Sleep(500 * time.Millisecond)
		changed := rev() - r0
		b.Logf("etcd revisions: %d during 1.5M unchanged heartbeats; %d for %d address changes", steady, changed, sats/100)
		if steady != 0 {
			b.Fatalf("steady-state heartbeats wrote to etcd (%d revisions)", steady)
		}
		b.ReportMetric(testbench.Median(rates), "heartbeats/s")
		b.ReportMetric(testbench.Median(cpus), "process_cores")
		b.ReportMetric(float64(steady), "steady_etcd_txns")
		b.ReportMetric(float64(changed), "etcd_txns_per_1000_changes")
	}
}
