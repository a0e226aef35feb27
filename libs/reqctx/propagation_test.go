package reqctx_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/orbitplane/orbit/libs/connectclient"
	"github.com/orbitplane/orbit/libs/connectserver"
	"github.com/orbitplane/orbit/libs/natsbus"
	"github.com/orbitplane/orbit/libs/reqctx"
	"github.com/orbitplane/orbit/libs/testing/testnats"
	connectorv1 "github.com/orbitplane/orbit/proto/orbit/connector/v1"
	"github.com/orbitplane/orbit/proto/orbit/connector/v1/connectorv1connect"
	queryv1 "github.com/orbitplane/orbit/proto/orbit/query/v1"
	"github.com/orbitplane/orbit/proto/orbit/query/v1/queryv1connect"
	registryv1 "github.com/orbitplane/orbit/proto/orbit/registry/v1"
	"github.com/orbitplane/orbit/proto/orbit/registry/v1/registryv1connect"
)

// seen records what each hop observed of the context object.
type seen struct {
	mu   sync.Mutex
	hops map[string]observation
}

type observation struct {
	traceID string
	fields  reqctx.Fields
}

func (s *seen) record(hop string, ctx context.Context) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hops[hop] = observation{traceID: reqctx.TraceID(ctx), fields: reqctx.From(ctx)}
}

// TestContextSurvivesEveryHop sends one request along the query path's
// carriers: HTTP (Connect) -> NATS -> satellite link stream -> NATS -> HTTP
// (Connect), each hop a real server or connection, and checks that one trace
// ID and the baggage arrive at every hop.
func TestContextSurvivesEveryHop(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tp := sdktrace.NewTracerProvider()
	defer tp.Shutdown(context.Background())
	obs := &seen{hops: map[string]observation{}}
	ns := testnats.Start(t)
	nc := testnats.Connect(t, ns)
	copts, err := connectclient.Options(tp)
	if err != nil {
		t.Fatal(err)
	}
	httpc := connectclient.HTTPClient(nil)

	// Last hop: an HTTP service (here the registry's read API).
	final := serve(t, tp, func(s *connectserver.Server) {
		s.Handle(registryv1connect.NewRegistryServiceHandler(&finalHop{obs: obs}, s.HandlerOptions()...))
	})

	// The link: a connector-like server holds the satellite's stream and
	// bridges NATS to it.
	linkSrv := serve(t, tp, func(s *connectserver.Server) {
		s.Handle(connectorv1connect.NewLinkServiceHandler(&linkHop{obs: obs, nc: nc}, s.HandlerOptions()...))
	})
	satReady := make(chan struct{})
	go runSatellite(ctx, t, tp, connectorv1connect.NewLinkServiceClient(httpc, linkSrv, copts...), obs, satReady)
	select {
	case <-satReady:
	case <-ctx.Done():
		t.Fatal("satellite never linked")
	}

	// First hop: the broker-like Connect service.
	entry := serve(t, tp, func(s *connectserver.Server) {
		s.Handle(queryv1connect.NewQueryServiceHandler(&entryHop{
			obs: obs, nc: nc,
			next: registryv1connect.NewRegistryServiceClient(httpc, final, copts...),
		}, s.HandlerOptions()...))
	})

	// Closing idle client connections first lets each server's drain finish
	// without waiting out HTTP/2's GOAWAY grace period.
	t.Cleanup(httpc.CloseIdleConnections)

	// The caller: a root span and the context object's fields.
	cctx, root := tp.Tracer("client").Start(ctx, "client.query")
	want := reqctx.Fields{RequestID: "req-1", Tenant: "tenant-a", Satellite: "sat-1", QueryID: "q-1", User: "ada"}
	cctx = reqctx.MustWith(cctx, want)
	client := queryv1connect.NewQueryServiceClient(httpc, entry, copts...)
	stream, err := client.ExecuteQuery(cctx, connect.NewRequest(&queryv1.ExecuteQueryRequest{Target: &queryv1.ExecuteQueryRequest_Satellite{Satellite: "sat-1"}, Sql: "select 1"}))
	if err != nil {
		t.Fatal(err)
	}
	for stream.Receive() {
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	root.End()

	wantTrace := root.SpanContext().TraceID().String()
	for _, hop := range []string{"entry (HTTP)", "link server (NATS in)", "satellite (stream)", "link server (stream in)", "entry (NATS reply)", "final (HTTP)"} {
		got, ok := obs.hops[hop]
		if !ok {
			t.Errorf("%s: never reached", hop)
			continue
		}
		if got.traceID != wantTrace {
			t.Errorf("%s: trace ID %q, want %q", hop, got.traceID, wantTrace)
		}
		if got.fields != want {
			t.Errorf("%s: fields %+v, want %+v", hop, got.fields, want)
		}
	}
}

func serve(t *testing.T, tp *sdktrace.TracerProvider, register func(*connectserver.Server)) string {
	t.Helper()
	s, err := connectserver.New(connectserver.Config{Service: t.Name()}, connectserver.Deps{TracerProvider: tp})
	if err != nil {
		t.Fatal(err)
	}
	register(s)
	if _, err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = s.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return s.URL()
}

type entryHop struct {
	queryv1connect.UnimplementedQueryServiceHandler
	obs  *seen
	nc   *nats.Conn
	next registryv1connect.RegistryServiceClient
}

func (h *entryHop) ExecuteQuery(ctx context.Context, req *connect.Request[queryv1.ExecuteQueryRequest], out *connect.ServerStream[queryv1.ExecuteQueryResponse]) error {
	h.obs.record("entry (HTTP)", ctx)
	qid := reqctx.From(ctx).QueryID
	sub, err := h.nc.SubscribeSync("reply." + qid) // before publishing the request
	if err != nil {
		return err
	}
	defer sub.Unsubscribe()
	if err := h.nc.PublishMsg(natsbus.NewMsg(ctx, "satellite."+req.Msg.GetSatellite(), []byte(req.Msg.GetSql()))); err != nil {
		return err
	}
	reply, err := sub.NextMsgWithContext(ctx)
	if err != nil {
		return err
	}
	rctx := natsbus.Extract(context.Background(), reply)
	h.obs.record("entry (NATS reply)", rctx)
	if _, err := h.next.GetSatellite(rctx, connect.NewRequest(&registryv1.GetSatelliteRequest{Satellite: "sat-1"})); err != nil {
		return err
	}
	return out.Send(&queryv1.ExecuteQueryResponse{SatelliteId: "sat-1"})
}

type linkHop struct {
	connectorv1connect.UnimplementedLinkServiceHandler
	obs *seen
	nc  *nats.Conn
}

func (h *linkHop) Connect(ctx context.Context, stream *connect.BidiStream[connectorv1.ConnectRequest, connectorv1.ConnectResponse]) error {
	first, err := stream.Receive()
	if err != nil || first.GetRegister() == nil {
		return errors.New("first frame must be register")
	}
	var sendMu sync.Mutex
	sub, err := h.nc.Subscribe("satellite.sat-1", func(m *nats.Msg) {
		mctx := natsbus.Extract(context.Background(), m)
		h.obs.record("link server (NATS in)", mctx)
		sendMu.Lock()
		defer sendMu.Unlock()
		_ = stream.Send(&connectorv1.ConnectResponse{
			Context: reqctx.ToCarrier(mctx),
			Frame:   &connectorv1.ConnectResponse_Query{Query: &queryv1.QueryRequest{QueryId: reqctx.From(mctx).QueryID, Sql: string(m.Data)}},
		})
	})
	if err != nil {
		return err
	}
	defer sub.Unsubscribe()
	if err := h.nc.Flush(); err != nil {
		return err
	}
	sendMu.Lock()
	err = stream.Send(&connectorv1.ConnectResponse{Frame: &connectorv1.ConnectResponse_Registered{Registered: &connectorv1.Registered{SatelliteId: "sat-1"}}})
	sendMu.Unlock()
	if err != nil {
		return err
	}
	for {
		msg, err := stream.Receive()
		if err != nil {
			return nil
		}
		fctx := reqctx.FromCarrier(context.Background(), msg.GetContext())
		h.obs.record("link server (stream in)", fctx)
		if err := h.nc.PublishMsg(natsbus.NewMsg(fctx, "reply."+msg.GetResult().GetQueryId(), []byte("end"))); err != nil {
			return err
		}
	}
}

func runSatellite(ctx context.Context, t *testing.T, tp *sdktrace.TracerProvider, c connectorv1connect.LinkServiceClient, obs *seen, ready chan<- struct{}) {
	stream := c.Connect(ctx)
	// A blocked Receive does not notice ctx ending (the HTTP/2 request body
	// is still open), so close both directions when it does.
	stop := context.AfterFunc(ctx, func() {
		_ = stream.CloseRequest()
		_ = stream.CloseResponse()
	})
	defer stop()
	if err := stream.Send(&connectorv1.ConnectRequest{Frame: &connectorv1.ConnectRequest_Register{Register: &connectorv1.Register{Identity: "id-1"}}}); err != nil {
		t.Errorf("satellite register: %v", err)
		return
	}
	for {
		msg, err := stream.Receive()
		if err != nil {
			return
		}
		if msg.GetRegistered() != nil {
			close(ready)
			continue
		}
		qctx := reqctx.FromCarrier(ctx, msg.GetContext())
		qctx, span := tp.Tracer("satellite").Start(qctx, "satellite.execute")
		obs.record("satellite (stream)", qctx)
		err = stream.Send(&connectorv1.ConnectRequest{
			Context: reqctx.ToCarrier(qctx),
			Frame:   &connectorv1.ConnectRequest_Result{Result: &queryv1.ResultFrame{QueryId: msg.GetQuery().GetQueryId(), Seq: 1, Kind: &queryv1.ResultFrame_End{End: &queryv1.ResultEnd{}}}},
		})
		span.End()
		if err != nil {
			t.Errorf("satellite send: %v", err)
			return
		}
	}
}

type finalHop struct {
	registryv1connect.UnimplementedRegistryServiceHandler
	obs *seen
}

func (h *finalHop) GetSatellite(ctx context.Context, _ *connect.Request[registryv1.GetSatelliteRequest]) (*connect.Response[registryv1.GetSatelliteResponse], error) {
	h.obs.record("final (HTTP)", ctx)
	return connect.NewResponse(&registryv1.GetSatelliteResponse{}), nil
}
