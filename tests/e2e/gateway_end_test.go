package e2e

import (
	"context"
	"errors"
	"runtime"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/orbitplane/orbit/libs/connectclient"
	"github.com/orbitplane/orbit/libs/connectserver"
	queryv1 "github.com/orbitplane/orbit/proto/orbit/query/v1"
	"github.com/orbitplane/orbit/proto/orbit/query/v1/queryv1connect"
	"github.com/orbitplane/orbit/services/gateway/gateway"
)

// heldBroker answers every query with one message (the summary when
// summary is set) and then holds its end of the stream for hold; it reports
// how its handler ended: nil, or the context's error if the call was
// canceled while it held.
type heldBroker struct {
	queryv1connect.UnimplementedQueryServiceHandler
	summary bool
	hold    time.Duration
	ended   chan error
}

func (b *heldBroker) ExecuteQuery(ctx context.Context, _ *connect.Request[queryv1.ExecuteQueryRequest], stream *connect.ServerStream[queryv1.ExecuteQueryResponse]) error {
	m := &queryv1.ExecuteQueryResponse{SatelliteId: "s1", SatelliteDone: &queryv1.SatelliteResult{Outcome: queryv1.SatelliteOutcome_SATELLITE_OUTCOME_OK}}
	if b.summary {
		m.Summary = &queryv1.QuerySummary{QueryId: "q1", SatellitesTotal: 1, SatellitesOk: 1}
	}
	if err := stream.Send(m); err != nil {
		b.ended <- err
		return err
	}
	select {
	case <-time.After(b.hold):
		b.ended <- nil
		return nil
	case <-ctx.Done():
		b.ended <- ctx.Err()
		return ctx.Err()
	}
}

// gatewayOver runs a second gateway of the system in front of broker.
func gatewayOver(t *testing.T, s *system, broker queryv1connect.QueryServiceHandler) queryv1connect.QueryServiceClient {
	t.Helper()
	url := startServer(t, "held-broker", func(srv *connectserver.Server) {
		srv.Handle(queryv1connect.NewQueryServiceHandler(broker, srv.HandlerOptions()...))
	})
	cfg := s.gatewayCfg
	cfg.BrokerURL = url
	gw, err := gateway.New(cfg, gateway.Deps{Logger: logger(s.logs, "gateway"), TracerProvider: tracer(t, "gateway"), Etcd: s.etcd})
	if err != nil {
		t.Fatal(err)
	}
	run(t, gw.Listen, gw.Run)
	opts, _ := connectclient.Options(nil)
	return queryv1connect.NewQueryServiceClient(s.client, gw.URL(), append(opts, connect.WithInterceptors(connectclient.Bearer(s.tenants["tenant-a"].APIKey)))...)
}

// TestAnswerEndsAtTheSummary: the summary is a query's last message, so the
// gateway ends the client's stream once it is sent. A broker slow to close
// its side holds neither the client nor the gateway, and is not canceled
// for it; a client that leaves before the summary cancels the broker's call.
func TestAnswerEndsAtTheSummary(t *testing.T) {
	s := newSystem(t, options{})
	const hold = 3 * time.Second

	b := &heldBroker{summary: true, hold: hold, ended: make(chan error, 1)}
	client := gatewayOver(t, s, b)
	start := time.Now()
	stream, err := client.ExecuteQuery(context.Background(), one("s1", "SELECT 1"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := collect(stream, false, nil)
	took := time.Since(start)
	if err != nil {
		t.Fatalf("answer: %v", err)
	}
	if r.summary == nil || r.summary.QueryId != "q1" {
		t.Fatalf("summary %v, want the broker's", r.summary)
	}
	if took >= hold {
		t.Fatalf("the answer took %v: the client waited for the broker's end of stream (held %v)", took, hold)
	}
	select {
	case err := <-b.ended:
		t.Fatalf("the broker's call ended (%v) before it closed its stream: the gateway canceled it", err)
	case <-time.After(200 * time.Millisecond):
	}
	if err := <-b.ended; err != nil {
		t.Fatalf("the broker's call ended with %v, want its own end", err)
	}

	// No summary yet: the client leaving cancels the broker's call.
	b2 := &heldBroker{hold: time.Minute, ended: make(chan error, 1)}
	client = gatewayOver(t, s, b2)
	ctx, cancel := context.WithCancel(context.Background())
	stream, err = client.ExecuteQuery(ctx, one("s1", "SELECT 1"))
	if err != nil {
		t.Fatal(err)
	}
	if !stream.Receive() {
		t.Fatalf("first message: %v", stream.Err())
	}
	cancel()
	select {
	case err := <-b2.ended:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("the broker's call ended with %v, want canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the broker's call was not canceled when the client left")
	}
}

// TestFinishedQueriesHoldNoMemory: a finished query leaves nothing behind in
// the services. The gateway once re-armed its drain timer after the
// upstream call had already ended, which kept every query's request
// context alive for UpstreamDrainTimeout: ≈ 4.6 KB per query (≈ 90 MB of
// live heap at 2,000 queries/s); with nothing held, 2,000 queries leave
// ≈ 0.1 KB each (pools and caches warming up).
func TestFinishedQueriesHoldNoMemory(t *testing.T) {
	// Logs go to a file: in memory they would grow with every query.
	s := newSystem(t, options{logFile: true, gatewayCfg: gatewayCfg()})
	s.startSatellite(satOptions{name: "edge-1"})
	q := s.query("tenant-a")
	query := func() {
		t.Helper()
		st, err := q.ExecuteQuery(context.Background(), one("edge-1", "SELECT 1"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := collect(st, false, nil); err != nil {
			t.Fatal(err)
		}
	}
	heap := func() int64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return int64(m.HeapAlloc)
	}
	for range 200 { // warm-up: connections, pools, caches
		query()
	}
	before := heap()
	const n = 2000
	for range n {
		query()
	}
	perQuery := (heap() - before) / n
	t.Logf("live heap after %d queries: %+d bytes per query", n, perQuery)
	if perQuery > 1024 {
		t.Fatalf("every finished query left %d bytes of live heap behind (limit 1 KiB)", perQuery)
	}
}
