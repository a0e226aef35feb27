package satellite

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/orbitplane/orbit/libs/connectserver"
	"github.com/orbitplane/orbit/libs/directtoken"
	"github.com/orbitplane/orbit/libs/obslog"
	"github.com/orbitplane/orbit/libs/queryerr"
	"github.com/orbitplane/orbit/libs/reqctx"
	queryv1 "github.com/orbitplane/orbit/proto/orbit/query/v1"
	"github.com/orbitplane/orbit/proto/orbit/query/v1/queryv1connect"
	"github.com/orbitplane/orbit/services/satellite/internal/store"
)

// DefaultMaxDirectQueries bounds direct-mode queries running at once
// (docs/limits.md).
const DefaultMaxDirectQueries = 16

// newDirectServer builds the direct-mode HTTPS server: the same
// QueryService the gateway serves, on the satellite's advertised address,
// with the certificate the cloud delivered (hot-reloaded per handshake).
// Every call needs a token from the region's gateway (directtoken).
func (a *Agent) newDirectServer() (*connectserver.Server, error) {
	srv, err := connectserver.New(connectserver.Config{
		Addr: a.cfg.DirectAddr, Service: "satellite-direct", CORSOrigins: a.cfg.DirectCORSOrigins,
		TLS: &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: a.serverCertificate},
	}, connectserver.Deps{Logger: a.log, TracerProvider: a.deps.TracerProvider})
	if err != nil {
		return nil, err
	}
	opts := append(srv.HandlerOptions(), connect.WithInterceptors(directAuth{a: a}))
	srv.Handle(queryv1connect.NewQueryServiceHandler(&directAPI{a: a, slots: make(chan struct{}, a.cfg.MaxDirectQueries)}, opts...))
	return srv, nil
}

// directAuth verifies the bearer token of every direct-mode call.
type directAuth struct{ a *Agent }

func (d directAuth) check(ctx context.Context, header string) error {
	token, ok := strings.CutPrefix(header, "Bearer ")
	if !ok || token == "" {
		return connect.NewError(connect.CodeUnauthenticated, errors.New("direct mode needs a token from the gateway's GetDirectEndpoint (Authorization: Bearer ...)"))
	}
	st := d.a.State()
	keys := make([]ed25519.PublicKey, 0, len(st.DirectTokenKeys))
	for _, k := range st.DirectTokenKeys {
		if len(k) == ed25519.PublicKeySize {
			keys = append(keys, ed25519.PublicKey(k))
		}
	}
	if _, err := directtoken.Verify(token, keys, st.SatelliteID, st.TenantID); err != nil {
		d.a.log.WarnContext(ctx, "direct call refused", obslog.Event("satellite.direct_refused"), "error", err)
		return connect.NewError(connect.CodeUnauthenticated, err)
	}
	return nil
}

func (d directAuth) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if err := d.check(ctx, req.Header().Get("Authorization")); err != nil {
			return nil, err
		}
		return next(ctx, req)
	}
}

func (d directAuth) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (d directAuth) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		if err := d.check(ctx, conn.RequestHeader().Get("Authorization")); err != nil {
			return err
		}
		return next(ctx, conn)
	}
}

type directAPI struct {
	queryv1connect.UnimplementedQueryServiceHandler
	a     *Agent
	slots chan struct{}
}

// ExecuteQuery answers a query on this satellite straight from its store:
// schema, batches, this satellite's result and the summary, like the
// gateway's stream for one satellite. HTTP/2 flow control paces it: a slow
// reader blocks Send, which pauses the statement.
func (d *directAPI) ExecuteQuery(ctx context.Context, req *connect.Request[queryv1.ExecuteQueryRequest], stream *connect.ServerStream[queryv1.ExecuteQueryResponse]) error {
	a := d.a
	st := a.State()
	switch t := req.Msg.Target.(type) {
	case *queryv1.ExecuteQueryRequest_Selector:
		return connect.NewError(connect.CodeInvalidArgument, errors.New("direct mode queries one satellite; use the gateway for a selector"))
	case *queryv1.ExecuteQueryRequest_Satellite:
		if t.Satellite != "" && t.Satellite != st.SatelliteID && t.Satellite != a.cfg.Name {
			return connect.NewError(connect.CodeNotFound, fmt.Errorf("this is satellite %s, not %q", st.SatelliteID, t.Satellite))
		}
	}
	select {
	case d.slots <- struct{}{}:
		defer func() { <-d.slots }()
	default:
		return connect.NewError(connect.CodeResourceExhausted, fmt.Errorf("%d direct queries are running, the limit", cap(d.slots)))
	}
	timeout := a.cfg.MaxQueryTime
	if req.Msg.Timeout != nil {
		t := req.Msg.Timeout.AsDuration()
		if t <= 0 || t > a.cfg.MaxQueryTime {
			return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("timeout must be in (0, %v]", a.cfg.MaxQueryTime))
		}
		timeout = t
	}
	lim := store.Limits{MaxRows: a.cfg.MaxRows, MaxBytes: a.cfg.MaxBytes}
	if r := req.Msg.GetLimits().GetMaxRows(); r > 0 && (lim.MaxRows <= 0 || r < lim.MaxRows) {
		lim.MaxRows = r
	}
	if b := req.Msg.GetLimits().GetMaxBytes(); b > 0 && (lim.MaxBytes <= 0 || b < lim.MaxBytes) {
		lim.MaxBytes = b
	}
	qctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	qid := reqctx.NewID()
	start := time.Now()
	res, err := a.store.Query(qctx, req.Msg.Sql, lim, directSink{id: st.SatelliteID, stream: stream})
	elapsed := time.Since(start)
	if err != nil {
		qe := store.AsError(err)
		a.log.InfoContext(ctx, "direct query failed", obslog.Event("satellite.query"), "query_id", qid, "direct", true, "code", qe.Code.String(), "error", qe.Message)
		return queryerr.ToConnect(qe.Proto(), "")
	}
	a.log.InfoContext(ctx, "direct query answered", obslog.Event("satellite.query"), "query_id", qid, "direct", true, "rows", res.Rows, "bytes", res.Bytes, "elapsed_ms", elapsed.Milliseconds())
	return stream.Send(&queryv1.ExecuteQueryResponse{
		SatelliteId:   st.SatelliteID,
		SatelliteDone: &queryv1.SatelliteResult{Outcome: queryv1.SatelliteOutcome_SATELLITE_OUTCOME_OK, Rows: res.Rows, Bytes: res.Bytes, Elapsed: durationpb.New(elapsed)},
		Summary:       &queryv1.QuerySummary{QueryId: qid, SatellitesTotal: 1, SatellitesOk: 1, Rows: res.Rows, Bytes: res.Bytes, Elapsed: durationpb.New(elapsed)},
	})
}

type directSink struct {
	id     string
	stream *connect.ServerStream[queryv1.ExecuteQueryResponse]
}

func (s directSink) Schema(cols []*queryv1.Column) error {
	return s.stream.Send(&queryv1.ExecuteQueryResponse{SatelliteId: s.id, Schema: &queryv1.ResultSchema{Columns: cols}})
}

func (s directSink) Batch(b *queryv1.ColumnBatch, _ int) error {
	return s.stream.Send(&queryv1.ExecuteQueryResponse{SatelliteId: s.id, Batch: b})
}
