package e2e

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"testing"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/orbitplane/orbit/libs/connectclient"
	"github.com/orbitplane/orbit/libs/connectserver"
	"github.com/orbitplane/orbit/libs/reqctx"
	"github.com/orbitplane/orbit/libs/testing/testnats"
	connectorv1 "github.com/orbitplane/orbit/proto/orbit/connector/v1"
	"github.com/orbitplane/orbit/proto/orbit/connector/v1/connectorv1connect"
	gatewayv1 "github.com/orbitplane/orbit/proto/orbit/gateway/v1"
	"github.com/orbitplane/orbit/proto/orbit/gateway/v1/gatewayv1connect"
	queryv1 "github.com/orbitplane/orbit/proto/orbit/query/v1"
	"github.com/orbitplane/orbit/proto/orbit/query/v1/queryv1connect"
)

// The raw relay chain is the baseline the query path is measured against:
// the same hops with nothing but forwarding (no auth, no registry, no
// DuckDB, no credits, no sequence checks), built from the same libraries:
//
//	client -Connect-> A -Connect-> B -NATS-> C =bidi= edge
//
// It also serves the single raw hops: a Connect unary call (A's WhoAmI), a
// NATS request-reply and a bidi-stream ping-pong (D).
type rawRelay struct {
	urlA  string
	urlD  string
	nc    *nats.Conn
	edgeC chan struct{}
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
	r := &rawRelay{nc: testnats.Connect(t, s.ns), edgeC: make(chan struct{})}
	hc := connectclient.HTTPClient(nil)
	opts, _ := connectclient.Options(nil)

	// C: holds the edge's stream; NATS raw.edge -> stream; frames -> reply.
	c := &relayC{nc: testnats.Connect(t, s.ns), ready: make(chan struct{})}
	urlC := startServer(t, "relay-c", func(srv *connectserver.Server) {
		srv.Handle(connectorv1connect.NewLinkServiceHandler(c, srv.HandlerOptions()...))
	})
	sub, err := c.nc.Subscribe("raw.edge", c.onQuery)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	// B: NATS request with a streamed reply subject.
	b := &relayB{nc: testnats.Connect(t, s.ns)}
	urlB := startServer(t, "relay-b", func(srv *connectserver.Server) {
		srv.Handle(queryv1connect.NewQueryServiceHandler(b, srv.HandlerOptions()...))
	})
	// A: forwards to B.
	a := &relayA{b: queryv1connect.NewQueryServiceClient(hc, urlB, opts...)}
	r.urlA = startServer(t, "relay-a", func(srv *connectserver.Server) {
		srv.Handle(queryv1connect.NewQueryServiceHandler(a, srv.HandlerOptions()...))
		srv.Handle(gatewayv1connect.NewGatewayServiceHandler(a, srv.HandlerOptions()...))
	})
	// D: bidi ping-pong server.
	r.urlD = startServer(t, "relay-d", func(srv *connectserver.Server) {
		srv.Handle(connectorv1connect.NewLinkServiceHandler(&echo{}, srv.HandlerOptions()...))
	})
	// NATS request-reply responder.
	echoSub, err := r.nc.Subscribe("raw.echo", func(m *nats.Msg) { _ = m.Respond(m.Data) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = echoSub.Unsubscribe() })
	// The edge dials C and answers queries "rows:bytes" with that many
	// frames of that size, then an end frame.
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go runEdge(ctx, connectorv1connect.NewLinkServiceClient(hc, urlC, opts...))
	<-c.ready
	return r
}

type relayA struct {
	queryv1connect.UnimplementedQueryServiceHandler
	gatewayv1connect.UnimplementedGatewayServiceHandler
	b queryv1connect.QueryServiceClient
}

func (a *relayA) WhoAmI(context.Context, *connect.Request[gatewayv1.WhoAmIRequest]) (*connect.Response[gatewayv1.WhoAmIResponse], error) {
	return connect.NewResponse(&gatewayv1.WhoAmIResponse{TenantId: "t"}), nil
}

func (a *relayA) ExecuteQuery(ctx context.Context, req *connect.Request[queryv1.ExecuteQueryRequest], stream *connect.ServerStream[queryv1.ExecuteQueryResponse]) error {
	up, err := a.b.ExecuteQuery(ctx, connect.NewRequest(req.Msg))
	if err != nil {
		return err
	}
	defer up.Close()
	for up.Receive() {
		if err := stream.Send(up.Msg()); err != nil {
			return err
		}
	}
	return up.Err()
}

type relayB struct {
	queryv1connect.UnimplementedQueryServiceHandler
	nc *nats.Conn
}

func (b *relayB) ExecuteQuery(ctx context.Context, req *connect.Request[queryv1.ExecuteQueryRequest], stream *connect.ServerStream[queryv1.ExecuteQueryResponse]) error {
	qid := reqctx.NewID()
	// No flow control in the baseline: room for every frame up front.
	frames, _ := parseRawSQL(req.Msg.Sql)
	ch := make(chan *nats.Msg, frames+2)
	sub, err := b.nc.ChanSubscribe("raw.reply."+qid, ch)
	if err != nil {
		return err
	}
	defer func() { _ = sub.Unsubscribe() }()
	_ = sub.SetPendingLimits(-1, -1) // no flow control in the baseline
	q, _ := proto.Marshal(&queryv1.QueryRequest{QueryId: qid, Sql: req.Msg.Sql})
	if err := b.nc.Publish("raw.edge", q); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case m := <-ch:
			var f queryv1.ResultFrame
			if err := proto.Unmarshal(m.Data, &f); err != nil {
				return err
			}
			if f.GetEnd() != nil {
				return nil
			}
			if err := stream.Send(&queryv1.ExecuteQueryResponse{Batch: f.GetBatch()}); err != nil {
				return err
			}
		}
	}
}

type relayC struct {
	connectorv1connect.UnimplementedLinkServiceHandler
	nc     *nats.Conn
	mu     sync.Mutex
	stream *connect.BidiStream[connectorv1.ConnectRequest, connectorv1.ConnectResponse]
	ready  chan struct{}
	once   sync.Once
}

func (c *relayC) Connect(ctx context.Context, stream *connect.BidiStream[connectorv1.ConnectRequest, connectorv1.ConnectResponse]) error {
	c.mu.Lock()
	c.stream = stream
	c.mu.Unlock()
	c.once.Do(func() { close(c.ready) })
	for {
		m, err := stream.Receive()
		if err != nil {
			return nil
		}
		r := m.GetResult()
		if r == nil {
			continue
		}
		b, _ := proto.Marshal(r)
		if err := c.nc.Publish("raw.reply."+r.QueryId, b); err != nil {
			return err
		}
	}
}

func (c *relayC) onQuery(m *nats.Msg) {
	var q queryv1.QueryRequest
	if proto.Unmarshal(m.Data, &q) != nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	_ = c.stream.Send(&connectorv1.ConnectResponse{Frame: &connectorv1.ConnectResponse_Query{Query: &q}})
}

func runEdge(ctx context.Context, client connectorv1connect.LinkServiceClient) {
	stream := client.Connect(ctx)
	context.AfterFunc(ctx, func() { _ = stream.CloseRequest(); _ = stream.CloseResponse() })
	_ = stream.Send(&connectorv1.ConnectRequest{Frame: &connectorv1.ConnectRequest_Heartbeat{Heartbeat: &connectorv1.Heartbeat{}}})
	var mu sync.Mutex
	for {
		m, err := stream.Receive()
		if err != nil {
			return
		}
		q := m.GetQuery()
		if q == nil {
			continue
		}
		go func() {
			n, size := parseRawSQL(q.Sql)
			payload := strings.Repeat("x", size)
			mu.Lock()
			defer mu.Unlock()
			for i := range n {
				b := &queryv1.ColumnBatch{NumRows: 1, Columns: []*queryv1.ColumnValues{{Values: &queryv1.ColumnValues_Strings{Strings: &queryv1.StringValues{Values: []string{payload}}}}}}
				if err := stream.Send(&connectorv1.ConnectRequest{Frame: &connectorv1.ConnectRequest_Result{Result: &queryv1.ResultFrame{QueryId: q.QueryId, Seq: uint64(i + 1), Kind: &queryv1.ResultFrame_Batch{Batch: b}}}}); err != nil {
					return
				}
			}
			_ = stream.Send(&connectorv1.ConnectRequest{Frame: &connectorv1.ConnectRequest_Result{Result: &queryv1.ResultFrame{QueryId: q.QueryId, Seq: uint64(n + 1), Kind: &queryv1.ResultFrame_End{End: &queryv1.ResultEnd{}}}}})
		}()
	}
}

// parseRawSQL reads "frames:bytes".
func parseRawSQL(s string) (int, int) {
	a, b, _ := strings.Cut(s, ":")
	n, _ := strconv.Atoi(a)
	size, _ := strconv.Atoi(b)
	return n, size
}

type echo struct {
	connectorv1connect.UnimplementedLinkServiceHandler
}

func (echo) Connect(ctx context.Context, stream *connect.BidiStream[connectorv1.ConnectRequest, connectorv1.ConnectResponse]) error {
	for {
		if _, err := stream.Receive(); err != nil {
			return nil
		}
		if err := stream.Send(&connectorv1.ConnectResponse{Frame: &connectorv1.ConnectResponse_Registered{Registered: &connectorv1.Registered{}}}); err != nil {
			return nil
		}
	}
}

// rawQuery runs one query through the relay chain; it returns the payload
// bytes received.
func (r *rawRelay) query(ctx context.Context, client queryv1connect.QueryServiceClient, sql string) (int64, error) {
	stream, err := client.ExecuteQuery(ctx, connect.NewRequest(&queryv1.ExecuteQueryRequest{Sql: sql}))
	if err != nil {
		return 0, err
	}
	defer stream.Close()
	var n int64
	for stream.Receive() {
		for _, v := range stream.Msg().GetBatch().GetColumns()[0].GetStrings().GetValues() {
			n += int64(len(v))
		}
	}
	return n, stream.Err()
}
