package querybroker

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/orbitplane/orbit/libs/colbatch"
	"github.com/orbitplane/orbit/libs/connectserver"
	"github.com/orbitplane/orbit/libs/obslog"
	"github.com/orbitplane/orbit/libs/queryerr"
	"github.com/orbitplane/orbit/libs/reqctx"
	queryv1 "github.com/orbitplane/orbit/proto/orbit/query/v1"
	"github.com/orbitplane/orbit/proto/orbit/query/v1/queryv1connect"
	registryv1 "github.com/orbitplane/orbit/proto/orbit/registry/v1"
	wirev1 "github.com/orbitplane/orbit/proto/orbit/wire/v1"
)

type api struct {
	queryv1connect.UnimplementedQueryServiceHandler
	s *Service
}

// tenantOf returns the caller's tenant from the context object; the gateway
// sets it after authenticating.
func tenantOf(ctx context.Context) (string, error) {
	t := reqctx.From(ctx).Tenant
	if t == "" {
		return "", connect.NewError(connect.CodePermissionDenied, errors.New("no tenant in the request context; call through the gateway"))
	}
	return t, nil
}

// QueryError turns a QueryError into a Connect error that carries it as a
// detail (libs/queryerr).
func QueryError(qe *queryv1.QueryError, prefix string) error { return queryerr.ToConnect(qe, prefix) }

func (a *api) timeout(req *queryv1.ExecuteQueryRequest) (time.Duration, error) {
	if req.Timeout == nil {
		return a.s.cfg.DefaultTimeout, nil
	}
	d := req.Timeout.AsDuration()
	if d <= 0 || d > a.s.cfg.MaxTimeout {
		return 0, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("timeout must be in (0, %v]", a.s.cfg.MaxTimeout))
	}
	return d, nil
}

func (a *api) limits(req *queryv1.ExecuteQueryRequest) *queryv1.QueryLimits {
	l := &queryv1.QueryLimits{MaxRows: a.s.cfg.MaxRows, MaxBytes: a.s.cfg.MaxBytes}
	if r := req.GetLimits().GetMaxRows(); r > 0 && r < l.MaxRows {
		l.MaxRows = r
	}
	if b := req.GetLimits().GetMaxBytes(); b > 0 && b < l.MaxBytes {
		l.MaxBytes = b
	}
	return l
}

// targets resolves the request to satellites of the tenant. For one named
// satellite, an unknown or DISCONNECTED one fails fast.
func (a *api) targets(ctx context.Context, tenant string, req *queryv1.ExecuteQueryRequest) ([]*registryv1.Satellite, bool, error) {
	switch t := req.Target.(type) {
	case *queryv1.ExecuteQueryRequest_Satellite:
		if sat := a.s.sats.lookup(tenant, t.Satellite); sat != nil && sat.Status != registryv1.SatelliteStatus_SATELLITE_STATUS_DISCONNECTED {
			return []*registryv1.Satellite{sat}, true, nil
		}
		resp, err := a.s.registry.GetSatellite(ctx, connect.NewRequest(&registryv1.GetSatelliteRequest{TenantId: tenant, Satellite: t.Satellite}))
		if err != nil {
			if connect.CodeOf(err) == connect.CodeNotFound {
				return nil, true, QueryError(&queryv1.QueryError{Code: queryv1.QueryErrorCode_QUERY_ERROR_CODE_SATELLITE_NOT_FOUND, Message: fmt.Sprintf("no satellite %q", t.Satellite)}, "")
			}
			return nil, true, err
		}
		sat := resp.Msg.Satellite
		if sat.Status == registryv1.SatelliteStatus_SATELLITE_STATUS_DISCONNECTED {
			return nil, true, QueryError(&queryv1.QueryError{Code: queryv1.QueryErrorCode_QUERY_ERROR_CODE_SATELLITE_UNAVAILABLE,
				Message: fmt.Sprintf("satellite %s (%s) is DISCONNECTED: %s", sat.Name, sat.Id, sat.StatusDetail)}, "")
		}
		return []*registryv1.Satellite{sat}, true, nil
	case *queryv1.ExecuteQueryRequest_Selector:
		var out []*registryv1.Satellite
		token := ""
		for {
			resp, err := a.s.registry.ListSatellites(ctx, connect.NewRequest(&registryv1.ListSatellitesRequest{
				TenantId: tenant, MatchLabels: t.Selector.GetMatchLabels(), PageSize: 1000, PageToken: token,
			}))
			if err != nil {
				return nil, false, err
			}
			out = append(out, resp.Msg.Satellites...)
			if len(out) > a.s.cfg.MaxFanout {
				return nil, false, connect.NewError(connect.CodeResourceExhausted, fmt.Errorf("the selector matches more than %d satellites, the fan-out limit; narrow it", a.s.cfg.MaxFanout))
			}
			if token = resp.Msg.NextPageToken; token == "" {
				return out, false, nil
			}
		}
	}
	return nil, false, connect.NewError(connect.CodeInvalidArgument, errors.New("set a satellite or a selector"))
}

// ExecuteQuery streams one merged result: per satellite a schema, batches
// and a satellite_done, then a summary. A single-satellite query that fails
// fails the RPC with the satellite's error; a fan-out reports failures per
// satellite and marks the summary partial.
//
// Result batches pass through as the satellite encoded them
// (wirev1.ExecuteQueryResponseView): callers speaking protobuf get them from
// executeView; this generated handler serves the JSON codecs and decodes
// each batch for them.
func (a *api) ExecuteQuery(ctx context.Context, req *connect.Request[queryv1.ExecuteQueryRequest], stream *connect.ServerStream[queryv1.ExecuteQueryResponse]) error {
	return a.execute(ctx, req, func(v *wirev1.ExecuteQueryResponseView) error {
		m, err := fromView(v)
		if err != nil {
			return err
		}
		return stream.Send(m)
	})
}

// executeView is ExecuteQuery for the protobuf codecs: each batch is sent as
// it arrived from the satellite, without being decoded and encoded again.
func (a *api) executeView(ctx context.Context, req *connect.Request[queryv1.ExecuteQueryRequest], stream *connect.ServerStream[wirev1.ExecuteQueryResponseView]) error {
	return a.execute(ctx, req, stream.Send)
}

// fromView decodes a view's batch.
func fromView(v *wirev1.ExecuteQueryResponseView) (*queryv1.ExecuteQueryResponse, error) {
	m := &queryv1.ExecuteQueryResponse{SatelliteId: v.SatelliteId, Schema: v.Schema, SatelliteDone: v.SatelliteDone, Summary: v.Summary}
	if v.Batch != nil {
		m.Batch = &queryv1.ColumnBatch{}
		if err := proto.Unmarshal(v.Batch, m.Batch); err != nil {
			return nil, connect.NewError(connect.CodeInternal, fmt.Errorf("a result batch from the satellite is malformed: %w", err))
		}
	}
	return m, nil
}

func (a *api) execute(ctx context.Context, req *connect.Request[queryv1.ExecuteQueryRequest], sendMsg func(*wirev1.ExecuteQueryResponseView) error) error {
	s := a.s
	start := time.Now()
	r := req.Msg
	sql := strings.TrimSpace(r.Sql)
	if sql == "" {
		return connect.NewError(connect.CodeInvalidArgument, errors.New("sql is empty"))
	}
	if len(sql) > MaxSQLBytes {
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("sql is %d bytes; the limit is %d", len(sql), MaxSQLBytes))
	}
	timeout, err := a.timeout(r)
	if err != nil {
		return err
	}
	tenant, err := tenantOf(ctx)
	if err != nil {
		return err
	}
	if err := s.acquireTenant(tenant); err != nil {
		return err
	}
	defer s.releaseTenant(tenant)
	sats, single, err := a.targets(ctx, tenant, r)
	kind := "selector"
	if single {
		kind = "satellite"
	}
	if err != nil {
		s.m.queries.WithLabelValues(kind, "error").Inc()
		return err
	}
	queryID := reqctx.From(ctx).QueryID
	if !reqctx.ValidID(queryID) || len(queryID) > 48 {
		queryID = reqctx.NewID()
	}
	ctx = reqctx.MustWith(ctx, reqctx.Fields{QueryID: queryID})
	s.log.DebugContext(ctx, "query started", obslog.Event("broker.query_started"), "target", kind, "satellites", len(sats))

	var sendMu sync.Mutex
	send := func(m *wirev1.ExecuteQueryResponseView) error {
		sendMu.Lock()
		defer sendMu.Unlock()
		return sendMsg(m)
	}
	// What is left to say when every part has ended: a single-satellite
	// query's last message (its held-back parts and its satellite_done) and
	// the satellite_done of satellites that never ran. The summary joins the
	// last of them.
	results := make([]*queryv1.SatelliteResult, len(sats))
	closing := make([]*wirev1.ExecuteQueryResponseView, len(sats))
	var wg sync.WaitGroup
	for i, sat := range sats {
		if sat.Status == registryv1.SatelliteStatus_SATELLITE_STATUS_DISCONNECTED {
			results[i] = failed(queryv1.SatelliteOutcome_SATELLITE_OUTCOME_UNAVAILABLE, queryv1.QueryErrorCode_QUERY_ERROR_CODE_SATELLITE_UNAVAILABLE,
				"satellite %s is DISCONNECTED: %s", sat.Name, sat.StatusDetail).result
			closing[i] = &wirev1.ExecuteQueryResponseView{SatelliteId: sat.Id, SatelliteDone: results[i]}
			continue
		}
		if !s.acquireSatellite(sat.Id) {
			results[i] = failed(queryv1.SatelliteOutcome_SATELLITE_OUTCOME_ERROR, queryv1.QueryErrorCode_QUERY_ERROR_CODE_TOO_MANY_QUERIES,
				"satellite %s runs %d queries through this broker, its limit", sat.Name, s.cfg.MaxQueriesPerSatellite).result
			closing[i] = &wirev1.ExecuteQueryResponseView{SatelliteId: sat.Id, SatelliteDone: results[i]}
			continue
		}
		pid := queryID
		if !single {
			pid = queryID + "-" + strconv.Itoa(i)
		}
		p := &part{s: s, satID: sat.Id, satName: sat.Name, queryID: pid, sql: sql, limits: a.limits(r), timeout: timeout}
		runPart := func() {
			defer s.releaseSatellite(sat.Id)
			pctx := reqctx.MustWith(ctx, reqctx.Fields{Satellite: sat.Id})
			h := &streamHandler{satID: sat.Id, send: send}
			o := p.run(pctx, h)
			results[i] = o.result
			last := h.take()
			last.SatelliteDone = o.result
			if single {
				closing[i] = last
				return
			}
			// A fan-out reports each satellite as soon as it is done.
			_ = send(last) // a failed send means the client is gone; ctx says so below
		}
		if single {
			// One satellite runs on the request's goroutine: no goroutine
			// to start (and grow a stack for) and none to wait for.
			runPart()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			runPart()
		}()
	}
	wg.Wait()

	summary := &queryv1.QuerySummary{QueryId: queryID, SatellitesTotal: int32(len(sats)), Elapsed: durationpb.New(time.Since(start))}
	var out []*wirev1.ExecuteQueryResponseView
	for i, res := range results {
		s.m.outcomes.WithLabelValues(res.Outcome.String()).Inc()
		summary.Rows += res.Rows
		summary.Bytes += res.Bytes
		if res.Outcome == queryv1.SatelliteOutcome_SATELLITE_OUTCOME_OK {
			summary.SatellitesOk++
		} else {
			summary.Partial = true
		}
		if single && res.Outcome != queryv1.SatelliteOutcome_SATELLITE_OUTCOME_OK {
			s.m.queries.WithLabelValues(kind, "error").Inc()
			s.log.InfoContext(ctx, "query failed", obslog.Event("broker.query_failed"), "code", res.Error.GetCode().String(), "error", res.Error.GetMessage())
			return QueryError(res.Error, "")
		}
		if closing[i] != nil {
			out = append(out, closing[i])
		}
	}
	if ctx.Err() != nil {
		return connect.NewError(connect.CodeCanceled, ctx.Err())
	}
	s.m.latency.Observe(time.Since(start).Seconds())
	result := "ok"
	if summary.Partial {
		result = "partial"
	}
	s.m.queries.WithLabelValues(kind, result).Inc()
	if len(out) == 0 {
		out = append(out, &wirev1.ExecuteQueryResponseView{})
	}
	out[len(out)-1].Summary = summary
	// The closing messages leave in one write; the line is written after
	// it, off the answer's critical path (the gateway ends the client's
	// stream at the summary).
	uncork := connectserver.Cork(ctx)
	var sendErr error
	for _, m := range out {
		if sendErr = send(m); sendErr != nil {
			break
		}
	}
	uncork()
	s.log.InfoContext(ctx, "query finished", obslog.Event("broker.query_finished"), "rows", summary.Rows, "bytes", summary.Bytes,
		"satellites_ok", summary.SatellitesOk, "satellites", summary.SatellitesTotal, "elapsed_ms", time.Since(start).Milliseconds(), "sent", sendErr == nil)
	return sendErr
}

// streamHandler turns one satellite's frames into response messages: a
// schema and the batch after it share a message, and what a NATS message
// brought leaves when run flushes. The last message is held for the
// satellite_done (take). Batches stay encoded.
type streamHandler struct {
	satID   string
	send    func(*wirev1.ExecuteQueryResponseView) error
	pending *wirev1.ExecuteQueryResponseView
}

func (h *streamHandler) schema(s *queryv1.ResultSchema) error {
	if err := h.flush(); err != nil {
		return err
	}
	h.pending = &wirev1.ExecuteQueryResponseView{SatelliteId: h.satID, Schema: s}
	return nil
}

func (h *streamHandler) batch(b []byte) error {
	if h.pending != nil && h.pending.Batch != nil {
		if err := h.flush(); err != nil {
			return err
		}
	}
	if h.pending == nil {
		h.pending = &wirev1.ExecuteQueryResponseView{SatelliteId: h.satID}
	}
	if b == nil {
		b = []byte{} // present, if empty
	}
	h.pending.Batch = b
	return nil
}

func (h *streamHandler) flush() error {
	if h.pending == nil {
		return nil
	}
	m := h.pending
	h.pending = nil
	return h.send(m)
}

// take returns the held-back message, or a new one for the satellite.
func (h *streamHandler) take() *wirev1.ExecuteQueryResponseView {
	m := h.pending
	h.pending = nil
	if m == nil {
		m = &wirev1.ExecuteQueryResponseView{SatelliteId: h.satID}
	}
	return m
}

// schemaSQL lists the satellite's tables and columns; it runs over the same
// read-only query path as any query.
const schemaSQL = `SELECT c.table_name, c.column_name, c.data_type, t.estimated_size
FROM duckdb_columns() c JOIN duckdb_tables() t ON c.table_oid = t.table_oid
WHERE c.schema_name = 'main' ORDER BY c.table_name, c.column_index`

type collect struct{ batches []*queryv1.ColumnBatch }

func (c *collect) schema(*queryv1.ResultSchema) error { return nil }
func (c *collect) flush() error                       { return nil }
func (c *collect) batch(raw []byte) error {
	b := &queryv1.ColumnBatch{}
	if err := proto.Unmarshal(raw, b); err != nil {
		return fmt.Errorf("a result batch from the satellite is malformed: %w", err)
	}
	c.batches = append(c.batches, b)
	return nil
}

// GetSchema lists the tables and columns of one satellite.
func (a *api) GetSchema(ctx context.Context, req *connect.Request[queryv1.GetSchemaRequest]) (*connect.Response[queryv1.GetSchemaResponse], error) {
	tenant, err := tenantOf(ctx)
	if err != nil {
		return nil, err
	}
	sats, _, err := a.targets(ctx, tenant, &queryv1.ExecuteQueryRequest{Target: &queryv1.ExecuteQueryRequest_Satellite{Satellite: req.Msg.Satellite}})
	if err != nil {
		return nil, err
	}
	if !a.s.acquireSatellite(sats[0].Id) {
		return nil, connect.NewError(connect.CodeResourceExhausted, errors.New("satellite is at its query limit"))
	}
	defer a.s.releaseSatellite(sats[0].Id)
	c := &collect{}
	p := &part{s: a.s, satID: sats[0].Id, satName: sats[0].Name, queryID: reqctx.NewID(), sql: schemaSQL, limits: &queryv1.QueryLimits{MaxRows: 100000}, timeout: a.s.cfg.DefaultTimeout}
	o := p.run(ctx, c)
	if o.result.Outcome != queryv1.SatelliteOutcome_SATELLITE_OUTCOME_OK {
		return nil, QueryError(o.result.Error, "")
	}
	resp := &queryv1.GetSchemaResponse{}
	var cur *queryv1.Table
	for _, b := range c.batches {
		for _, row := range colbatch.Rows(b) {
			name, _ := row[0].(string)
			col, _ := row[1].(string)
			typ, _ := row[2].(string)
			est, _ := row[3].(int64)
			if cur == nil || cur.Name != name {
				cur = &queryv1.Table{Name: name, ApproxRows: est}
				resp.Tables = append(resp.Tables, cur)
			}
			cur.Columns = append(cur.Columns, &queryv1.Column{Name: col, Type: colbatch.DuckDBType(typ)})
		}
	}
	return connect.NewResponse(resp), nil
}

// executeQueryMethod is ExecuteQuery's schema, given to the view handler as
// the generated code gives it to its own.
var executeQueryMethod = queryv1.File_orbit_query_v1_query_proto.Services().ByName("QueryService").Methods().ByName("ExecuteQuery")

// byCodec sends requests in a JSON codec to json and the rest (protobuf,
// which the view handler answers with batches undecoded) to view.
func byCodec(view, json http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.Header.Get("Content-Type"), "json") {
			json.ServeHTTP(w, r)
			return
		}
		view.ServeHTTP(w, r)
	})
}
