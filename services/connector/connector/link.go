package connector

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/orbitplane/orbit/libs/contextstore"
	"github.com/orbitplane/orbit/libs/obslog"
	"github.com/orbitplane/orbit/libs/reqctx"
	connectorv1 "github.com/orbitplane/orbit/proto/orbit/connector/v1"
	"github.com/orbitplane/orbit/proto/orbit/connector/v1/connectorv1connect"
	queryv1 "github.com/orbitplane/orbit/proto/orbit/query/v1"
	registryv1 "github.com/orbitplane/orbit/proto/orbit/registry/v1"
)

type linkHandler struct {
	connectorv1connect.UnimplementedLinkServiceHandler
	s *Service
}

// link is one satellite's live stream on this replica.
type link struct {
	s              *Service
	satID          string
	tenant         string
	generation     uint64
	heartbeatEvery time.Duration
	stream         *connect.BidiStream[upFrame, connectorv1.ConnectResponse]
	cancel         context.CancelFunc
	last           atomic.Int64 // unix nanos of the last frame received

	sendMu     sync.Mutex
	delivering atomic.Bool

	mu      sync.Mutex
	queries map[string]*inflight
	reason  string
	closed  bool
}

type inflight struct {
	reply   string
	lastSeq uint64
}

func (l *link) lastFrame() time.Time { return time.Unix(0, l.last.Load()) }

func (l *link) send(m *connectorv1.ConnectResponse) error {
	l.sendMu.Lock()
	defer l.sendMu.Unlock()
	return l.stream.Send(m)
}

// close ends the link, telling the satellite why first.
func (l *link) close(reason, message string) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed, l.reason = true, reason
	l.mu.Unlock()
	code := connectorv1.LinkErrorCode_LINK_ERROR_CODE_PROTOCOL
	switch reason {
	case "superseded":
		code = connectorv1.LinkErrorCode_LINK_ERROR_CODE_SUPERSEDED
	case "shutdown":
		code = connectorv1.LinkErrorCode_LINK_ERROR_CODE_SHUTTING_DOWN
	}
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		_ = l.send(&connectorv1.ConnectResponse{Frame: &connectorv1.ConnectResponse_Error{Error: &connectorv1.LinkError{Code: code, Message: message}}})
	}()
	// Tell the satellite why before the stream ends, but never let a stuck
	// stream block the closer for long.
	select {
	case <-sent:
	case <-time.After(time.Second):
	}
	l.cancel()
}

// Connect serves one satellite link: Register first, then heartbeats and
// result frames up, queries/credits/cancels down.
//
// It is mounted at Connect's path with upCodec (rawup.go): result frames pass
// through to NATS undecoded.
func (h *linkHandler) connect(ctx context.Context, stream *connect.BidiStream[upFrame, connectorv1.ConnectResponse]) error {
	s := h.s
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// Receive runs on its own goroutine: a blocked Receive does not see ctx.
	// On the way out the handler closes the request body, which ends a
	// blocked Receive, and waits for the goroutine, so no Receive is still
	// running when the stream is finished (otelconnect's stream state is
	// not safe for that).
	frames := make(chan *upFrame)
	recvErr := make(chan error, 1)
	recvDone := make(chan struct{})
	defer func() {
		cancel()
		if body := requestBody(ctx); body != nil {
			_ = body.Close()
		}
		select {
		case <-recvDone:
		case <-time.After(time.Second):
			s.log.Warn("link receiver did not stop within 1 s")
		}
	}()
	go func() {
		defer close(recvDone)
		for {
			m, err := stream.Receive()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case frames <- m:
			case <-ctx.Done():
				recvErr <- ctx.Err()
				return
			}
		}
	}()

	var firstUp *upFrame
	select {
	case firstUp = <-frames:
	case err := <-recvErr:
		return err
	case <-time.After(s.cfg.RegisterTimeout):
		return connect.NewError(connect.CodeDeadlineExceeded, fmt.Errorf("no Register frame within %v", s.cfg.RegisterTimeout))
	case <-ctx.Done():
		return nil
	}
	first := firstUp.msg
	reg := first.GetRegister()
	if reg == nil {
		return connect.NewError(connect.CodeInvalidArgument, errors.New("the first frame must be Register"))
	}
	ctx = reqctx.FromCarrier(ctx, first.Context)
	dk, err := s.ctxs.AuthDeployKey(ctx, reg.DeployKey)
	if err != nil {
		if errors.Is(err, contextstore.ErrUnauthenticated) {
			_ = stream.Send(&connectorv1.ConnectResponse{Frame: &connectorv1.ConnectResponse_Error{Error: &connectorv1.LinkError{
				Code: connectorv1.LinkErrorCode_LINK_ERROR_CODE_BAD_DEPLOY_KEY, Message: "deploy key is invalid or revoked"}}})
			s.log.WarnContext(ctx, "satellite refused: bad deploy key", obslog.Event("connector.bad_deploy_key"), "identity", reg.Identity)
			return connect.NewError(connect.CodeUnauthenticated, errors.New("deploy key is invalid or revoked"))
		}
		return connect.NewError(connect.CodeUnavailable, err)
	}
	need, err := s.checkCertificate(ctx, dk.TenantId, reg.Identity)
	if err != nil {
		var ce *errCertificate
		if errors.As(err, &ce) {
			_ = stream.Send(&connectorv1.ConnectResponse{Frame: &connectorv1.ConnectResponse_Error{Error: &connectorv1.LinkError{
				Code: connectorv1.LinkErrorCode_LINK_ERROR_CODE_CERTIFICATE_REQUIRED, Message: ce.msg}}})
			s.m.linksTotal.WithLabelValues("certificate_refused").Inc()
			s.log.WarnContext(ctx, "satellite refused: certificate", obslog.Event("connector.certificate_refused"), "identity", reg.Identity, "reason", ce.msg)
			return connect.NewError(connect.CodePermissionDenied, ce)
		}
		return connect.NewError(connect.CodeUnavailable, err)
	}
	labels := maps.Clone(dk.Labels)
	if labels == nil {
		labels = map[string]string{}
	}
	maps.Copy(labels, reg.Labels)
	sat, err := s.registerSatellite(ctx, &registryv1.RegisterRequest{
		TenantId: dk.TenantId, Identity: reg.Identity, Name: reg.Name, Labels: labels,
		Version: reg.Version, Address: reg.Address, ConnectorId: s.cfg.ID,
	})
	if err != nil {
		s.log.ErrorContext(ctx, "registration failed", obslog.Event("connector.register_failed"), "error", err, "identity", reg.Identity)
		return connect.NewError(connect.CodeUnavailable, fmt.Errorf("registration failed: %w", err))
	}
	ctx = reqctx.MustWith(ctx, reqctx.Fields{Tenant: sat.TenantId, Satellite: sat.Id})
	l := &link{
		s: s, satID: sat.Id, tenant: sat.TenantId, generation: sat.LinkGeneration,
		heartbeatEvery: s.cfg.HeartbeatInterval, stream: stream, cancel: cancel, queries: map[string]*inflight{},
	}
	l.last.Store(time.Now().UnixNano())
	if err := s.adopt(l); err != nil {
		return connect.NewError(connect.CodeResourceExhausted, err)
	}
	s.claim(l)
	// Registered must be the satellite's first frame: hold the send lock
	// from the moment queries can arrive until it is sent.
	l.sendMu.Lock()
	sub, err := s.nc.QueueSubscribe(SatelliteSubjectPrefix+sat.Id, queueGroup, l.onDown)
	if err != nil {
		l.sendMu.Unlock()
		s.release(l)
		return connect.NewError(connect.CodeUnavailable, err)
	}
	_ = sub.SetPendingLimits(-1, 64<<20)
	// The registry already says HEALTHY: make the interest known to the
	// server now, not when the client's flusher gets to it, so a query sent
	// on that word finds this link.
	if err := s.nc.FlushTimeout(5 * time.Second); err != nil {
		l.sendMu.Unlock()
		_ = sub.Unsubscribe()
		s.release(l)
		return connect.NewError(connect.CodeUnavailable, err)
	}
	err = l.stream.Send(&connectorv1.ConnectResponse{Frame: &connectorv1.ConnectResponse_Registered{Registered: &connectorv1.Registered{
		SatelliteId: sat.Id, TenantId: sat.TenantId, HeartbeatIntervalMs: int32(l.heartbeatEvery / time.Millisecond), ConnectorId: s.cfg.ID,
		DirectTokenKeys: s.tokenKeys,
	}}})
	l.sendMu.Unlock()
	if err != nil {
		_ = sub.Unsubscribe()
		s.release(l)
		return err
	}
	if s.certdns != nil && need != needNothing {
		go l.deliverCertificate(ctx, need == needRenew)
	}
	s.log.InfoContext(ctx, "satellite linked", obslog.Event("connector.linked"), "generation", sat.LinkGeneration, "name", sat.Name)

	var cause error
loop:
	for {
		select {
		case m := <-frames:
			l.last.Store(time.Now().UnixNano())
			l.onUp(ctx, m)
		case cause = <-recvErr:
			break loop
		case <-ctx.Done():
			break loop
		}
	}
	_ = sub.Unsubscribe()
	current := s.release(l)
	l.mu.Lock()
	reason := l.reason
	if reason == "" {
		reason = "stream_ended"
		l.closed = true
	}
	pending := l.queries
	l.queries = map[string]*inflight{}
	l.mu.Unlock()
	// Queries that were running here end with an explicit error frame: the
	// broker never waits on silence.
	for qid, q := range pending {
		l.publishResult(&queryv1.ResultFrame{QueryId: qid, Seq: q.lastSeq + 1, Kind: &queryv1.ResultFrame_Error{Error: &queryv1.QueryError{
			Code: queryv1.QueryErrorCode_QUERY_ERROR_CODE_SATELLITE_UNAVAILABLE, Message: "the satellite's link closed during the query (" + reason + ")"}}}, q.reply)
	}
	if current && reason != "superseded" {
		s.disconnect(sat.Id)
	}
	s.m.linksTotal.WithLabelValues(reason).Inc()
	s.log.InfoContext(ctx, "satellite link closed", obslog.Event("connector.unlinked"), "reason", reason, "cause", errString(cause), "queries_aborted", len(pending))
	return nil
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// onUp handles a frame from the satellite.
func (l *link) onUp(ctx context.Context, u *upFrame) {
	if u.results != nil {
		l.relayRaw(ctx, u)
		return
	}
	switch f := u.msg.Frame.(type) {
	case *connectorv1.ConnectRequest_Heartbeat:
		hb := f.Heartbeat
		st := hb.GetStore()
		l.s.queueHeartbeat(&registryv1.SatelliteHeartbeat{
			SatelliteId: l.satID, Degraded: hb.Health == connectorv1.Health_HEALTH_DEGRADED, Address: hb.Address,
			Version: hb.Version, StoreRows: st.GetRows(), StoreBytes: st.GetBytes(), SentAt: hb.SentAt, Detail: hb.Detail,
			DnsName: hb.DnsName, CertNotAfter: hb.CertNotAfter,
		})
	case *connectorv1.ConnectRequest_Result:
		l.relay(ctx, &queryv1.ResultFrames{Frames: []*queryv1.ResultFrame{f.Result}})
	case *connectorv1.ConnectRequest_Register:
		l.close("protocol", "Register is only valid as the first frame")
	case *connectorv1.ConnectRequest_Renew:
		if l.s.certdns != nil {
			go l.deliverCertificate(ctx, true)
		}
	}
}

// relay publishes a decoded single `result` frame (the link's older form;
// satellites send `results`, which relayRaw handles).
func (l *link) relay(ctx context.Context, rs *queryv1.ResultFrames) {
	b, err := proto.Marshal(rs)
	if err != nil {
		l.s.log.ErrorContext(ctx, "result frames do not encode", "error", err)
		return
	}
	frames := make([]frameMeta, len(rs.Frames))
	for i, f := range rs.Frames {
		frames[i] = frameMeta{queryID: f.QueryId, seq: f.Seq, last: f.GetEnd() != nil || f.GetError() != nil}
	}
	l.route(ctx, frames, b)
}

// relayRaw publishes result frames as the satellite encoded them, then
// recycles their buffer.
func (l *link) relayRaw(ctx context.Context, u *upFrame) {
	defer u.release()
	l.route(ctx, u.frames, u.results)
}

// route publishes encoded ResultFrames (all of one query) to the query's
// reply subject, and forgets the query once its last frame went by.
func (l *link) route(ctx context.Context, frames []frameMeta, payload []byte) {
	if len(frames) == 0 {
		return
	}
	qid := frames[0].queryID
	l.mu.Lock()
	q, ok := l.queries[qid]
	if ok {
		for _, f := range frames {
			if f.queryID != qid {
				ok = false
				break
			}
			q.lastSeq = f.seq
			if f.last {
				delete(l.queries, qid)
			}
		}
	}
	l.mu.Unlock()
	if !ok {
		l.s.m.unknown.Inc()
		l.s.log.WarnContext(ctx, "result frames for a query not running on this link", "query_id", qid, "frames", len(frames))
		return
	}
	l.publishEncoded(payload, len(frames), qid, frames[0].seq, q.reply)
}

func (l *link) publishResult(r *queryv1.ResultFrame, reply string) {
	l.publish(&queryv1.ResultFrames{Frames: []*queryv1.ResultFrame{r}}, reply)
}

func (l *link) publish(rs *queryv1.ResultFrames, reply string) {
	b, err := proto.Marshal(rs)
	if err != nil {
		l.s.log.Error("result frames do not encode", "error", err, "query_id", rs.Frames[0].QueryId)
		return
	}
	l.publishEncoded(b, len(rs.Frames), rs.Frames[0].QueryId, rs.Frames[0].Seq, reply)
}

func (l *link) publishEncoded(payload []byte, frames int, queryID string, seq uint64, reply string) {
	if err := l.s.nc.Publish(reply, payload); err != nil {
		l.s.log.Error("result publish failed", "error", err, "query_id", queryID, "seq", seq)
		return
	}
	l.s.m.frames.WithLabelValues("up").Add(float64(frames))
}

// validReply accepts reply.<query-id> or reply.<broker>.<query-id>.
func validReply(subject, queryID string) bool {
	rest, ok := strings.CutPrefix(subject, ReplySubjectPrefix)
	if !ok || strings.ContainsAny(rest, " *>\t\r\n") {
		return false
	}
	if rest == queryID {
		return true
	}
	broker, id, ok := strings.Cut(rest, ".")
	return ok && broker != "" && id == queryID
}

// onDown forwards a query, credit or cancel from NATS to the satellite.
func (l *link) onDown(msg *nats.Msg) {
	var m connectorv1.ConnectResponse
	if err := proto.Unmarshal(msg.Data, &m); err != nil {
		l.s.log.Warn("bad frame on satellite subject", "error", err, "subject", msg.Subject)
		return
	}
	var queryCtx context.Context
	if q := m.GetQuery(); q != nil {
		ctx := reqctx.FromCarrier(context.Background(), m.Context)
		reply := q.ReplySubject
		if q.QueryId == "" || strings.ContainsAny(q.QueryId, " .*>\t\r\n") || !validReply(reply, q.QueryId) {
			l.s.log.WarnContext(ctx, "query with a bad ID or reply subject refused", "query_id", q.QueryId)
			return
		}
		l.mu.Lock()
		full := len(l.queries) >= l.s.cfg.MaxQueriesPerLink
		if !full && !l.closed {
			l.queries[q.QueryId] = &inflight{reply: reply}
		}
		closed := l.closed
		l.mu.Unlock()
		switch {
		case closed:
			l.publishResult(&queryv1.ResultFrame{QueryId: q.QueryId, Seq: 1, Kind: &queryv1.ResultFrame_Error{Error: &queryv1.QueryError{
				Code: queryv1.QueryErrorCode_QUERY_ERROR_CODE_SATELLITE_UNAVAILABLE, Message: "the satellite's link is closing"}}}, reply)
			return
		case full:
			l.publishResult(&queryv1.ResultFrame{QueryId: q.QueryId, Seq: 1, Kind: &queryv1.ResultFrame_Error{Error: &queryv1.QueryError{
				Code: queryv1.QueryErrorCode_QUERY_ERROR_CODE_TOO_MANY_QUERIES, Message: fmt.Sprintf("the satellite runs %d queries, its link's limit", l.s.cfg.MaxQueriesPerLink)}}}, reply)
			return
		}
		queryCtx = ctx
	}
	if err := l.send(&m); err != nil {
		l.s.log.Warn("send to satellite failed", "error", err)
		l.close("send_failed", "send failed")
		return
	}
	l.s.m.frames.WithLabelValues("down").Inc()
	if queryCtx != nil {
		// Logged once the query is on its way, off its critical path.
		l.s.log.InfoContext(queryCtx, "query forwarded to satellite", obslog.Event("connector.query"), "satellite", l.satID)
	}
}
