// Package testrelay is the raw relay chain the query path is measured
// against (docs/benchmarks.md): the same hops with nothing but forwarding
// (no auth, no registry, no DuckDB, no credits, no sequence checks), built
// from the same libraries:
//
//	client -Connect-> A -Connect-> B -NATS-> C =bidi= edge
//
// plus the single raw hops: a Connect unary call (A's WhoAmI), a NATS
// request-reply (EchoSubject) and a bidi-stream ping-pong (Echo). A query's
// SQL is "frames:bytes": the edge answers with that many one-value batches
// of that size, then an end frame. "frames:bytes:work" asks the chain to do
// the work the issue requires of the query path besides forwarding (Work):
// a log line per piece and a statement at the edge. The pieces run in one
// process (the in-process benchmarks in tests/e2e) or one per process
// (tools/bench/querypath).
package testrelay

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/orbitplane/orbit/libs/reqctx"
	connectorv1 "github.com/orbitplane/orbit/proto/orbit/connector/v1"
	"github.com/orbitplane/orbit/proto/orbit/connector/v1/connectorv1connect"
	gatewayv1 "github.com/orbitplane/orbit/proto/orbit/gateway/v1"
	"github.com/orbitplane/orbit/proto/orbit/gateway/v1/gatewayv1connect"
	queryv1 "github.com/orbitplane/orbit/proto/orbit/query/v1"
	"github.com/orbitplane/orbit/proto/orbit/query/v1/queryv1connect"
)

// Subjects the relay uses on NATS.
const (
	EdgeSubject = "raw.edge"
	EchoSubject = "raw.echo"
	replyPrefix = "raw.reply."
)

// Work is what each piece does for a query marked "work", besides
// forwarding: it writes one log line for the query, as every service on the
// query path does (the one-trace-ID test needs a line from each),
// and the edge runs a statement before it answers, as the satellite runs the
// query's in DuckDB. A chain doing this is the baseline that pays for the
// same required work as the path (docs/benchmarks.md).
type Work struct {
	// Log receives the piece's line per marked query; nil writes none.
	Log *slog.Logger
	// Exec is the edge's statement; nil runs none.
	Exec func(ctx context.Context) error
}

func (w Work) line(ctx context.Context, piece, qid, sql string, start time.Time) {
	if w.Log != nil {
		w.Log.InfoContext(ctx, "relay query", "piece", piece, "query_id", qid, "sql", sql, "elapsed_ms", time.Since(start).Milliseconds())
	}
}

// A forwards a query to B; its WhoAmI is the single Connect hop.
type A struct {
	queryv1connect.UnimplementedQueryServiceHandler
	gatewayv1connect.UnimplementedGatewayServiceHandler
	B    queryv1connect.QueryServiceClient
	Work Work
}

func (a *A) WhoAmI(context.Context, *connect.Request[gatewayv1.WhoAmIRequest]) (*connect.Response[gatewayv1.WhoAmIResponse], error) {
	return connect.NewResponse(&gatewayv1.WhoAmIResponse{TenantId: "t"}), nil
}

func (a *A) ExecuteQuery(ctx context.Context, req *connect.Request[queryv1.ExecuteQueryRequest], stream *connect.ServerStream[queryv1.ExecuteQueryResponse]) error {
	if IsWork(req.Msg.Sql) {
		// Written when the handler returns, as the gateway's request line is.
		defer a.Work.line(ctx, "a", "", req.Msg.Sql, time.Now())
	}
	up, err := a.B.ExecuteQuery(ctx, connect.NewRequest(req.Msg))
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

// B publishes a query on NATS and streams the frames that come back on a
// reply subject of its own.
type B struct {
	queryv1connect.UnimplementedQueryServiceHandler
	NC   *nats.Conn
	Work Work
}

func (b *B) ExecuteQuery(ctx context.Context, req *connect.Request[queryv1.ExecuteQueryRequest], stream *connect.ServerStream[queryv1.ExecuteQueryResponse]) error {
	qid := reqctx.NewID()
	if IsWork(req.Msg.Sql) {
		defer b.Work.line(ctx, "b", qid, req.Msg.Sql, time.Now())
	}
	// No flow control in the baseline: room for every frame up front.
	frames, _ := ParseSQL(req.Msg.Sql)
	ch := make(chan *nats.Msg, frames+2)
	sub, err := b.NC.ChanSubscribe(replyPrefix+qid, ch)
	if err != nil {
		return err
	}
	defer func() { _ = sub.Unsubscribe() }()
	_ = sub.SetPendingLimits(-1, -1) // no flow control in the baseline
	q, _ := proto.Marshal(&queryv1.QueryRequest{QueryId: qid, Sql: req.Msg.Sql})
	if err := b.NC.Publish(EdgeSubject, q); err != nil {
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

// C holds the edge's stream: queries from NATS go down it, frames coming up
// are published to their reply subject.
type C struct {
	connectorv1connect.UnimplementedLinkServiceHandler
	NC *nats.Conn
	// Work is set before the edge connects.
	Work   Work
	mu     sync.Mutex
	stream *connect.BidiStream[connectorv1.ConnectRequest, connectorv1.ConnectResponse]
	ready  chan struct{}
	once   sync.Once
}

// NewC returns C subscribed to EdgeSubject on nc.
func NewC(nc *nats.Conn) (*C, error) {
	c := &C{NC: nc, ready: make(chan struct{})}
	if _, err := nc.Subscribe(EdgeSubject, c.onQuery); err != nil {
		return nil, err
	}
	return c, nil
}

// Ready is closed once the edge has connected.
func (c *C) Ready() <-chan struct{} { return c.ready }

func (c *C) Connect(ctx context.Context, stream *connect.BidiStream[connectorv1.ConnectRequest, connectorv1.ConnectResponse]) error {
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
		if err := c.NC.Publish(replyPrefix+r.QueryId, b); err != nil {
			return err
		}
	}
}

func (c *C) onQuery(m *nats.Msg) {
	var q queryv1.QueryRequest
	if proto.Unmarshal(m.Data, &q) != nil {
		return
	}
	start := time.Now()
	c.mu.Lock()
	if c.stream != nil {
		_ = c.stream.Send(&connectorv1.ConnectResponse{Frame: &connectorv1.ConnectResponse_Query{Query: &q}})
	}
	c.mu.Unlock()
	if IsWork(q.Sql) {
		// After the frame left, as the connector logs.
		c.Work.line(context.Background(), "c", q.QueryId, q.Sql, start)
	}
}

// RunEdge dials C and answers queries until ctx ends; for a query marked
// "work" it runs work.Exec before answering and logs after.
func RunEdge(ctx context.Context, client connectorv1connect.LinkServiceClient, work Work) {
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
			start := time.Now()
			n, size := ParseSQL(q.Sql)
			if IsWork(q.Sql) {
				// After the answer left, as the satellite logs.
				defer work.line(ctx, "edge", q.QueryId, q.Sql, start)
				if work.Exec != nil {
					if err := work.Exec(ctx); err != nil {
						// The baseline has no error path: an answer without
						// rows shows up in the benchmark's row check.
						n = 0
					}
				}
			}
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

// ParseSQL reads "frames:bytes" (and "frames:bytes:work").
func ParseSQL(s string) (int, int) {
	parts := strings.Split(s, ":")
	if len(parts) < 2 {
		return 0, 0
	}
	n, _ := strconv.Atoi(parts[0])
	size, _ := strconv.Atoi(parts[1])
	return n, size
}

// IsWork reports whether a query asks the chain for the required work.
func IsWork(s string) bool { return strings.HasSuffix(s, ":work") }

// Echo answers every frame of a bidi stream: the single bidi hop.
type Echo struct {
	connectorv1connect.UnimplementedLinkServiceHandler
}

func (Echo) Connect(ctx context.Context, stream *connect.BidiStream[connectorv1.ConnectRequest, connectorv1.ConnectResponse]) error {
	for {
		if _, err := stream.Receive(); err != nil {
			return nil
		}
		if err := stream.Send(&connectorv1.ConnectResponse{Frame: &connectorv1.ConnectResponse_Registered{Registered: &connectorv1.Registered{}}}); err != nil {
			return nil
		}
	}
}

// EchoNATS answers requests on EchoSubject: the single NATS hop.
func EchoNATS(nc *nats.Conn) (*nats.Subscription, error) {
	return nc.Subscribe(EchoSubject, func(m *nats.Msg) { _ = m.Respond(m.Data) })
}

// QueryWork runs one small query marked "work" (Work) through the chain; an
// answer without its 8 bytes (the edge's statement failed) is an error.
func QueryWork(ctx context.Context, client queryv1connect.QueryServiceClient) error {
	n, err := Query(ctx, client, "1:8:work")
	if err == nil && n != 8 {
		err = fmt.Errorf("working relay answered %d bytes, want 8", n)
	}
	return err
}

// Query runs one query through the chain (client is A's QueryService); it
// returns the payload bytes received.
func Query(ctx context.Context, client queryv1connect.QueryServiceClient, sql string) (int64, error) {
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
