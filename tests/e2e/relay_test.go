package e2e

import (
	"context"
	"encoding/json"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/orbitplane/orbit/libs/connectclient"
	"github.com/orbitplane/orbit/libs/connectserver"
	"github.com/orbitplane/orbit/libs/testing/testnats"
	"github.com/orbitplane/orbit/libs/testing/testrelay"
	"github.com/orbitplane/orbit/libs/testing/testwait"
	"github.com/orbitplane/orbit/proto/orbit/connector/v1/connectorv1connect"
	"github.com/orbitplane/orbit/proto/orbit/gateway/v1/gatewayv1connect"
	"github.com/orbitplane/orbit/proto/orbit/query/v1/queryv1connect"
)

// rawRelay is the baseline the query path is measured against
// (libs/testing/testrelay), in this process on the system's NATS:
//
//	client -Connect-> A -Connect-> B -NATS-> C =bidi= edge
//
// with the single raw hops: A's WhoAmI, a NATS request-reply and a bidi
// ping-pong (D). Queries marked "work" make every piece write a log line
// (to the system's log) and the edge run SELECT 1 in DuckDB first
// (testrelay.Work).
type rawRelay struct {
	urlA string
	urlD string
	nc   *nats.Conn
}

func startServer(t testing.TB, name string, mount func(*connectserver.Server)) string {
	srv, err := connectserver.New(connectserver.Config{Service: name}, connectserver.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	mount(srv)
	run(t, func() error { _, err := srv.Listen(); return err }, srv.Run)
	return srv.URL()
}

func startRawRelay(t testing.TB, s *system) *rawRelay {
	r := &rawRelay{nc: testnats.Connect(t, s.ns)}
	hc := connectclient.HTTPClient(nil)
	opts, _ := connectclient.Options(nil)

	work := func(piece string) testrelay.Work { return testrelay.Work{Log: logger(s.logs, "relay-"+piece)} }
	c, err := testrelay.NewC(testnats.Connect(t, s.ns))
	if err != nil {
		t.Fatal(err)
	}
	c.Work = work("c")
	urlC := startServer(t, "relay-c", func(srv *connectserver.Server) {
		srv.Handle(connectorv1connect.NewLinkServiceHandler(c, srv.HandlerOptions()...))
	})
	b := &testrelay.B{NC: testnats.Connect(t, s.ns), Work: work("b")}
	urlB := startServer(t, "relay-b", func(srv *connectserver.Server) {
		srv.Handle(queryv1connect.NewQueryServiceHandler(b, srv.HandlerOptions()...))
	})
	a := &testrelay.A{B: queryv1connect.NewQueryServiceClient(hc, urlB, opts...), Work: work("a")}
	r.urlA = startServer(t, "relay-a", func(srv *connectserver.Server) {
		srv.Handle(queryv1connect.NewQueryServiceHandler(a, srv.HandlerOptions()...))
		srv.Handle(gatewayv1connect.NewGatewayServiceHandler(a, srv.HandlerOptions()...))
	})
	r.urlD = startServer(t, "relay-d", func(srv *connectserver.Server) {
		srv.Handle(connectorv1connect.NewLinkServiceHandler(testrelay.Echo{}, srv.HandlerOptions()...))
	})
	echo, err := testrelay.EchoNATS(r.nc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = echo.Unsubscribe() })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	edge := work("edge")
	exec, closeDB, err := testrelay.SelectOne(filepath.Join(t.TempDir(), "edge.duckdb"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = closeDB() })
	edge.Exec = exec
	go testrelay.RunEdge(ctx, connectorv1connect.NewLinkServiceClient(hc, urlC, opts...), edge)
	<-c.Ready()
	return r
}

// query runs one query through the relay chain; it returns the payload
// bytes received.
func (r *rawRelay) query(ctx context.Context, client queryv1connect.QueryServiceClient, sql string) (int64, error) {
	return testrelay.Query(ctx, client, sql)
}

// The working relay chain does what it claims for a query marked "work" —
// one line from each of its four pieces and the edge's statement — and
// nothing extra for a plain one, so the benchmarks compare like with like.
func TestWorkingRelayDoesTheWork(t *testing.T) {
	s := newSystem(t, options{})
	raw := startRawRelay(t, s)
	ctx := context.Background()
	opts, _ := connectclient.Options(nil)
	q := queryv1connect.NewQueryServiceClient(connectclient.HTTPClient(nil), raw.urlA, opts...)
	pieces := func() []string {
		var got []string
		for _, line := range strings.Split(s.logs.String(), "\n") {
			var l struct {
				Message string `json:"message"`
				Attrs   struct {
					Piece string `json:"piece"`
				} `json:"attrs"`
			}
			if json.Unmarshal([]byte(line), &l) == nil && l.Message == "relay query" {
				got = append(got, l.Attrs.Piece)
			}
		}
		slices.Sort(got)
		return got
	}
	if n, err := raw.query(ctx, q, "2:8"); err != nil || n != 16 {
		t.Fatalf("plain query: %d bytes, %v", n, err)
	}
	if got := pieces(); len(got) != 0 {
		t.Fatalf("a plain query logged %v", got)
	}
	if n, err := raw.query(ctx, q, "2:8:work"); err != nil || n != 16 {
		t.Fatalf("working query: %d bytes, %v", n, err)
	}
	testwait.For(t, "a line from every piece", 5*time.Second, func() bool { return len(pieces()) == 4 })
	if got := pieces(); !slices.Equal(got, []string{"a", "b", "c", "edge"}) {
		t.Fatalf("pieces that logged: %v", got)
	}
}
