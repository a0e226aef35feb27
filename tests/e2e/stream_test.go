package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/orbitplane/orbit/libs/testing/testwait"
	connectorv1 "github.com/orbitplane/orbit/proto/orbit/connector/v1"
	registryv1 "github.com/orbitplane/orbit/proto/orbit/registry/v1"
)

// bigSQL is ~1.2M rows of three columns (int, float, text): ~40 MB on the wire.
const bigSQL = "SELECT i, i * 0.5 AS half, 'row-' || i::VARCHAR AS label FROM range(1200000) t(i)"

// TestMillionRowsBoundedMemory streams a 1.2M-row result through the whole
// path and checks the count, the order of rows and that the process heap
// (every service and the client share it here) stays far below the result's
// size: nothing buffers the result.
func TestMillionRowsBoundedMemory(t *testing.T) {
	s := newSystem(t, options{})
	s.startSatellite(satOptions{name: "edge-1"})
	var peak atomic.Uint64
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		var ms runtime.MemStats
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
				runtime.ReadMemStats(&ms)
				if ms.HeapInuse > peak.Load() {
					peak.Store(ms.HeapInuse)
				}
			}
		}
	}()
	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)
	stream, err := s.query("tenant-a").ExecuteQuery(context.Background(), one("edge-1", bigSQL))
	if err != nil {
		t.Fatal(err)
	}
	var rows, next int64
	var bytes int64
	for stream.Receive() {
		if b := stream.Msg().GetBatch(); b != nil {
			ids := b.Columns[0].GetInt64S().Values
			if ids[0] != next {
				t.Fatalf("batch starts at row %d, want %d", ids[0], next)
			}
			next += b.NumRows
			rows += b.NumRows
			for _, l := range b.Columns[2].GetStrings().Values {
				bytes += int64(len(l))
			}
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if rows != 1200000 {
		t.Fatalf("%d rows", rows)
	}
	grew := int64(peak.Load()) - int64(base.HeapInuse)
	t.Logf("1.2M rows (%d MB of labels alone); heap in use grew at most %d MB", bytes>>20, grew>>20)
	if grew > 64<<20 {
		t.Fatalf("heap grew by %d MB while streaming: the result is being buffered", grew>>20)
	}
}

// TestSlowClientLosesNothing reads a large result slowly: credits pause the
// satellite, and every row arrives in order.
func TestSlowClientLosesNothing(t *testing.T) {
	s := newSystem(t, options{})
	s.startSatellite(satOptions{name: "edge-1"})
	stream, err := s.query("tenant-a").ExecuteQuery(context.Background(), one("edge-1", "SELECT i FROM range(300000) t(i)"))
	if err != nil {
		t.Fatal(err)
	}
	var next int64
	n := 0
	for stream.Receive() {
		if b := stream.Msg().GetBatch(); b != nil {
			for _, v := range b.Columns[0].GetInt64S().Values {
				if v != next {
					t.Fatalf("row %d arrived where %d was expected", v, next)
				}
				next++
			}
			if n++; n%4 == 0 {
				time.Sleep(15 * time.Millisecond) // a slow reader
			}
		}
	}
	if err := stream.Err(); err != nil || next != 300000 {
		t.Fatalf("%d rows, %v", next, err)
	}
}

// TestCancelStopsSatelliteStatement: the client goes away mid-stream; the
// satellite's statement is interrupted (its log says canceled) and its
// query slot is free again.
func TestCancelStopsSatelliteStatement(t *testing.T) {
	s := newSystem(t, options{})
	s.startSatellite(satOptions{name: "edge-1"})
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := s.query("tenant-a").ExecuteQuery(ctx, one("edge-1", "SELECT i FROM range(1000000000000) t(i)"))
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	for stream.Receive() && got < 3 {
		if stream.Msg().GetBatch() != nil {
			got++
		}
	}
	cancel()
	_ = stream.Close()
	testwait.For(t, "satellite statement canceled", 5*time.Second, func() bool {
		return strings.Contains(s.logs.String(), `"message":"query failed"`) && strings.Contains(s.logs.String(), "QUERY_ERROR_CODE_CANCELED")
	})
	// All DuckDB query slots are free: a full set of queries still runs.
	for range 8 {
		st, err := s.query("tenant-a").ExecuteQuery(context.Background(), one("edge-1", "SELECT 1"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := collect(st, false, nil); err != nil {
			t.Fatal(err)
		}
	}
}

// TestSatelliteKilledMidQuery: the satellite dies while streaming; the
// client gets a clear UNAVAILABLE error at once, not a hang.
func TestSatelliteKilledMidQuery(t *testing.T) {
	s := newSystem(t, options{})
	sat := s.startSatellite(satOptions{name: "edge-1"})
	stream, err := s.query("tenant-a").ExecuteQuery(context.Background(), one("edge-1", "SELECT i FROM range(1000000000000) t(i)"))
	if err != nil {
		t.Fatal(err)
	}
	batches := 0
	start := time.Time{}
	for stream.Receive() {
		if stream.Msg().GetBatch() != nil {
			if batches++; batches == 5 {
				start = time.Now()
				go sat.run.stop(t) // the satellite goes away mid-stream
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	err = stream.Err()
	if connect.CodeOf(err) != connect.CodeUnavailable || !strings.Contains(err.Error(), "link closed") {
		t.Fatalf("got %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("error after %v", d)
	}
}

// TestConnectorRestart: a connector restarts mid-run; its satellite
// reconnects (backoff with jitter) and queries work again.
func TestConnectorRestart(t *testing.T) {
	s := newSystem(t, options{})
	a := s.startSatellite(satOptions{name: "edge-1"})
	id := a.agent.State().SatelliteID
	s.connRun[0].stop(t)
	testwait.For(t, "edge-1 DISCONNECTED", 5*time.Second, func() bool {
		return s.status("tenant-a", id) == registryv1.SatelliteStatus_SATELLITE_STATUS_DISCONNECTED
	})
	stream, err := s.query("tenant-a").ExecuteQuery(context.Background(), one("edge-1", "SELECT 42"))
	if err == nil {
		_, err = collect(stream, false, nil)
	}
	if connect.CodeOf(err) != connect.CodeUnavailable {
		t.Fatalf("while the connector is down: %v", err)
	}
	s.restartConnector(0)
	testwait.For(t, "edge-1 back", 10*time.Second, func() bool {
		return s.status("tenant-a", id) == registryv1.SatelliteStatus_SATELLITE_STATUS_HEALTHY
	})
	stream, err = s.query("tenant-a").ExecuteQuery(context.Background(), one("edge-1", "SELECT 42"))
	if err != nil {
		t.Fatal(err)
	}
	if r, err := collect(stream, false, nil); err != nil || r.summary.SatellitesOk != 1 {
		t.Fatalf("after restart: %v %v", r, err)
	}
	if a.agent.State().SatelliteID != id {
		t.Fatalf("reconnecting changed the ID")
	}
}

// TestReconnectElsewhereLeavesOneLink: a satellite whose old link still
// looks alive to replica 0 (a half-open connection) reconnects to replica 1;
// replica 0 closes its stale link (SUPERSEDED) and queries reach the new one.
// The same happens when it reconnects to the same replica.
func TestReconnectElsewhereLeavesOneLink(t *testing.T) {
	for _, target := range []int{1, 0} {
		s := newSystem(t, options{connectors: 2})
		dir := t.TempDir()
		identity := "0123456789abcdef0123456789abcdef"
		if err := os.WriteFile(filepath.Join(dir, "identity"), []byte(identity+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		stale := s.rawLink(0, identity)
		a := s.startSatellite(satOptions{name: "edge-1", dir: dir, connector: target})
		id := a.agent.State().SatelliteID
		le := stale.waitError(t)
		if le.Code != connectorv1.LinkErrorCode_LINK_ERROR_CODE_SUPERSEDED {
			t.Fatalf("stale link got %v", le)
		}
		testwait.For(t, "one link", 3*time.Second, func() bool {
			return s.connectors[target].HasLink(id) && !s.connectors[1-target].HasLink(id)
		})
		stream, err := s.query("tenant-a").ExecuteQuery(context.Background(), one("edge-1", "SELECT 1"))
		if err != nil {
			t.Fatal(err)
		}
		if r, err := collect(stream, false, nil); err != nil || r.summary.SatellitesOk != 1 {
			t.Fatalf("target %d: %v %v", target, r, err)
		}
	}
}

// TestOneTraceAcrossServices: one query leaves the same trace ID in the logs
// of the gateway, the broker, the connector and the satellite.
func TestOneTraceAcrossServices(t *testing.T) {
	s := newSystem(t, options{})
	s.startSatellite(satOptions{name: "edge-1"})
	stream, err := s.query("tenant-a").ExecuteQuery(context.Background(), one("edge-1", "SELECT 7"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := collect(stream, false, nil); err != nil {
		t.Fatal(err)
	}
	var trace string
	seen := map[string]bool{}
	testwait.For(t, "trace in every service's log", 3*time.Second, func() bool {
		for _, line := range strings.Split(s.logs.String(), "\n") {
			var rec map[string]any
			if json.Unmarshal([]byte(line), &rec) != nil {
				continue
			}
			if rec["event"] == "broker.query_finished" {
				trace, _ = rec["trace_id"].(string)
			}
		}
		if trace == "" {
			return false
		}
		clear(seen)
		for _, line := range strings.Split(s.logs.String(), "\n") {
			var rec map[string]any
			if json.Unmarshal([]byte(line), &rec) != nil {
				continue
			}
			if rec["trace_id"] == trace {
				seen[rec["service"].(string)] = true
			}
		}
		return seen["gateway"] && seen["querybroker"] && seen["connector"] && seen["satellite"]
	})
	if trace == "" {
		t.Fatal(errors.New("no trace ID"))
	}
	t.Logf("trace %s in %v", trace, seen)
}

// TestSatelliteRestartKeepsID: a satellite restarted on its data dir keeps
// its ID, and its data.
func TestSatelliteRestartKeepsID(t *testing.T) {
	s := newSystem(t, options{})
	a := s.startSatellite(satOptions{name: "edge-1"})
	id := a.agent.State().SatelliteID
	a.run.stop(t)
	b := s.startSatellite(satOptions{name: "edge-1", dir: a.dir})
	if got := b.agent.State().SatelliteID; got != id {
		t.Fatalf("ID changed across a restart: %s -> %s", id, got)
	}
	testwait.For(t, "edge-1 HEALTHY again", 5*time.Second, func() bool {
		return s.status("tenant-a", id) == registryv1.SatelliteStatus_SATELLITE_STATUS_HEALTHY
	})
}
