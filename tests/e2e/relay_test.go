package e2e

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/orbitplane/orbit/libs/connectclient"
	"github.com/orbitplane/orbit/libs/connectserver"
	"github.com/orbitplane/orbit/libs/testing/testnats"
	"github.com/orbitplane/orbit/libs/testing/testrelay"
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
// ping-pong (D).
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

	c, err := testrelay.NewC(testnats.Connect(t, s.ns))
	if err != nil {
		t.Fatal(err)
	}
	urlC := startServer(t, "relay-c", func(srv *connectserver.Server) {
		srv.Handle(connectorv1connect.NewLinkServiceHandler(c, srv.HandlerOptions()...))
	})
	b := &testrelay.B{NC: testnats.Connect(t, s.ns)}
	urlB := startServer(t, "relay-b", func(srv *connectserver.Server) {
		srv.Handle(queryv1connect.NewQueryServiceHandler(b, srv.HandlerOptions()...))
	})
	a := &testrelay.A{B: queryv1connect.NewQueryServiceClient(hc, urlB, opts...)}
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
	go testrelay.RunEdge(ctx, connectorv1connect.NewLinkServiceClient(hc, urlC, opts...))
	<-c.Ready()
	return r
}

// query runs one query through the relay chain; it returns the payload
// bytes received.
func (r *rawRelay) query(ctx context.Context, client queryv1connect.QueryServiceClient, sql string) (int64, error) {
	return testrelay.Query(ctx, client, sql)
}
