package logbroker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/orbitplane/orbit/libs/loadingcache"
	"github.com/orbitplane/orbit/libs/logstream"
	"github.com/orbitplane/orbit/libs/reqctx"
	logbrokerv1 "github.com/orbitplane/orbit/proto/orbit/logbroker/v1"
	"github.com/orbitplane/orbit/proto/orbit/logbroker/v1/logbrokerv1connect"
)

type api struct {
	logbrokerv1connect.UnimplementedLogBrokerServiceHandler
	s *Service
}

type streamKey struct{ tenant, name string }

// streamMeta is what publishing needs to know about a stream.
type streamMeta struct {
	js      string // JetStream stream name
	name    string
	subject string // the tenant's subject pattern
	compact bool
}

// tenantOf returns the caller's tenant from the context object; the gateway
// sets it after authenticating the API key.
func tenantOf(ctx context.Context) (string, error) {
	t := reqctx.From(ctx).Tenant
	if t == "" {
		return "", connect.NewError(connect.CodePermissionDenied, errors.New("no tenant in the request context; call through the gateway"))
	}
	return t, nil
}

func notFound(name string) error {
	return connect.NewError(connect.CodeNotFound, fmt.Errorf("stream %q not found", name))
}

// lookup returns a tenant's stream and its info; another tenant's stream is
// not found.
func (s *Service) lookup(ctx context.Context, tenant, name string) (jetstream.Stream, *jetstream.StreamInfo, error) {
	if err := logstream.ValidName("stream name", name); err != nil {
		return nil, nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	st, err := s.js.Stream(ctx, logstream.JSName(tenant, name))
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, nil, notFound(name)
	}
	if err != nil {
		return nil, nil, jsError(err)
	}
	info := st.CachedInfo()
	if info.Config.Metadata[logstream.MetaTenant] != tenant || info.Config.Metadata[logstream.MetaName] != name {
		return nil, nil, notFound(name)
	}
	return st, info, nil
}

func (s *Service) loadStream(ctx context.Context, k streamKey) (*streamMeta, error) {
	_, info, err := s.lookup(ctx, k.tenant, k.name)
	if connect.CodeOf(err) == connect.CodeNotFound {
		return nil, loadingcache.ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	md := info.Config.Metadata
	return &streamMeta{js: info.Config.Name, name: k.name, subject: md[logstream.MetaSubject], compact: md[logstream.MetaCompact] == "true"}, nil
}

func (s *Service) meta(ctx context.Context, tenant, name string) (*streamMeta, error) {
	if err := logstream.ValidName("stream name", name); err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	m, err := s.streams.Get(ctx, streamKey{tenant, name})
	if errors.Is(err, loadingcache.ErrNotFound) {
		return nil, notFound(name)
	}
	return m, err
}

// jsError maps a JetStream failure to an RPC code.
func jsError(err error) error {
	var api *jetstream.APIError
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return connect.NewError(connect.CodeDeadlineExceeded, err)
	case errors.Is(err, context.Canceled):
		return connect.NewError(connect.CodeCanceled, err)
	case errors.As(err, &api) && api.Code == 400:
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("jetstream refused: %s", api.Description))
	case errors.Is(err, nats.ErrMaxPayload):
		return connect.NewError(connect.CodeResourceExhausted, err)
	}
	return connect.NewError(connect.CodeUnavailable, fmt.Errorf("jetstream: %w", err))
}

func streamInfo(info *jetstream.StreamInfo) *logbrokerv1.StreamInfo {
	c, md := info.Config, info.Config.Metadata
	cfg := &logbrokerv1.StreamConfig{
		Name: md[logstream.MetaName], Subject: md[logstream.MetaSubject], Replicas: int32(c.Replicas), CompactByKey: md[logstream.MetaCompact] == "true",
		Retention: &logbrokerv1.Retention{},
	}
	if c.MaxAge > 0 {
		cfg.Retention.MaxAge = durationpb.New(c.MaxAge)
	}
	if c.MaxBytes > 0 {
		cfg.Retention.MaxBytes = c.MaxBytes
	}
	if c.MaxMsgs > 0 {
		cfg.Retention.MaxMessages = c.MaxMsgs
	}
	return &logbrokerv1.StreamInfo{
		Config: cfg, TenantId: md[logstream.MetaTenant], FirstOffset: info.State.FirstSeq, LastOffset: info.State.LastSeq,
		Messages: info.State.Msgs, Bytes: info.State.Bytes, CreatedAt: timestamppb.New(info.Created),
	}
}

func (a *api) CreateStream(ctx context.Context, req *connect.Request[logbrokerv1.CreateStreamRequest]) (*connect.Response[logbrokerv1.CreateStreamResponse], error) {
	s := a.s
	tenant, err := tenantOf(ctx)
	if err != nil {
		return nil, err
	}
	c := req.Msg.GetConfig()
	if c == nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("config is required"))
	}
	if err := logstream.ValidName("stream name", c.Name); err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	if err := logstream.ValidSubject(c.Subject, true); err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	replicas := int(c.Replicas)
	if replicas == 0 {
		replicas = 1
	}
	if replicas < 1 || replicas > MaxReplicas {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("replicas %d: want 1 to %d", c.Replicas, MaxReplicas))
	}
	r := c.GetRetention()
	if r.GetMaxBytes() < 0 || r.GetMaxMessages() < 0 || r.GetMaxAge().AsDuration() < 0 {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("retention limits cannot be negative"))
	}
	cfg := jetstream.StreamConfig{
		Name:       logstream.JSName(tenant, c.Name),
		Subjects:   []string{logstream.NATSSubject(tenant, c.Subject)},
		Storage:    jetstream.FileStorage,
		Replicas:   replicas,
		MaxAge:     r.GetMaxAge().AsDuration(),
		MaxBytes:   -1,
		MaxMsgs:    -1,
		Duplicates: s.cfg.DuplicateWindow,
		MaxMsgSize: int32(s.cfg.MaxMessageBytes + 4096),
		Metadata: map[string]string{
			logstream.MetaTenant: tenant, logstream.MetaName: c.Name, logstream.MetaSubject: c.Subject, logstream.MetaCompact: strconv.FormatBool(c.CompactByKey),
		},
	}
	if cfg.MaxAge > 0 && cfg.MaxAge < cfg.Duplicates {
		cfg.Duplicates = cfg.MaxAge // JetStream requires it
	}
	if r.GetMaxBytes() > 0 {
		cfg.MaxBytes = r.GetMaxBytes()
	}
	if r.GetMaxMessages() > 0 {
		cfg.MaxMsgs = r.GetMaxMessages()
	}
	if c.CompactByKey {
		// The newest message per subject survives; keyed messages get a
		// subject of their own.
		cfg.Subjects = append(cfg.Subjects, logstream.KeyedPattern(tenant, c.Name))
		cfg.MaxMsgsPerSubject = 1
	}
	if _, info, err := s.lookup(ctx, tenant, c.Name); err == nil {
		have := streamInfo(info).Config
		want := &logbrokerv1.StreamConfig{Name: c.Name, Subject: c.Subject, Replicas: int32(replicas), CompactByKey: c.CompactByKey, Retention: &logbrokerv1.Retention{
			MaxAge: r.GetMaxAge(), MaxBytes: r.GetMaxBytes(), MaxMessages: r.GetMaxMessages(),
		}}
		if !sameConfig(have, want) {
			return nil, connect.NewError(connect.CodeAlreadyExists, fmt.Errorf("stream %q exists with another config (subject %q, replicas %d, compact %v, retention %v)",
				c.Name, have.Subject, have.Replicas, have.CompactByKey, have.Retention))
		}
		return connect.NewResponse(&logbrokerv1.CreateStreamResponse{Stream: streamInfo(info)}), nil
	} else if connect.CodeOf(err) != connect.CodeNotFound {
		return nil, err
	}
	if n, err := s.countStreams(ctx, tenant); err != nil {
		return nil, err
	} else if n >= s.cfg.MaxStreamsPerTenant {
		return nil, connect.NewError(connect.CodeResourceExhausted, fmt.Errorf("tenant has %d streams, its limit; delete one first", s.cfg.MaxStreamsPerTenant))
	}
	st, err := s.js.CreateStream(ctx, cfg)
	if err != nil {
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamNameInUse {
			return nil, connect.NewError(connect.CodeAlreadyExists, fmt.Errorf("stream %q was just created with another config", c.Name))
		}
		if errors.As(err, &apiErr) && strings.Contains(apiErr.Description, "overlap") {
			return nil, connect.NewError(connect.CodeAlreadyExists, fmt.Errorf("subject %q overlaps another stream's subject: %s", c.Subject, apiErr.Description))
		}
		if errors.As(err, &apiErr) && strings.Contains(apiErr.Description, "replicas") {
			return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("replicas %d: %s", replicas, apiErr.Description))
		}
		return nil, jsError(err)
	}
	s.streams.Invalidate(streamKey{tenant, c.Name})
	s.log.InfoContext(ctx, "stream created", "event", "logbroker.stream_created", "stream", c.Name, "subject", c.Subject, "replicas", replicas, "compact", c.CompactByKey)
	return connect.NewResponse(&logbrokerv1.CreateStreamResponse{Stream: streamInfo(st.CachedInfo()), Created: true}), nil
}

func sameConfig(a, b *logbrokerv1.StreamConfig) bool {
	return a.Name == b.Name && a.Subject == b.Subject && a.Replicas == b.Replicas && a.CompactByKey == b.CompactByKey &&
		a.GetRetention().GetMaxAge().AsDuration() == b.GetRetention().GetMaxAge().AsDuration() &&
		a.GetRetention().GetMaxBytes() == b.GetRetention().GetMaxBytes() &&
		a.GetRetention().GetMaxMessages() == b.GetRetention().GetMaxMessages()
}

// listStreams lists a tenant's streams.
func (s *Service) listStreams(ctx context.Context, tenant string) ([]*jetstream.StreamInfo, error) {
	l := s.js.ListStreams(ctx, jetstream.WithStreamListSubject(logstream.SubjectPrefix+"."+tenant+".>"))
	var out []*jetstream.StreamInfo
	for info := range l.Info() {
		if info.Config.Metadata[logstream.MetaTenant] == tenant {
			out = append(out, info)
		}
	}
	if err := l.Err(); err != nil {
		return nil, jsError(err)
	}
	return out, nil
}

func (s *Service) countStreams(ctx context.Context, tenant string) (int, error) {
	l, err := s.listStreams(ctx, tenant)
	return len(l), err
}

func (a *api) DeleteStream(ctx context.Context, req *connect.Request[logbrokerv1.DeleteStreamRequest]) (*connect.Response[logbrokerv1.DeleteStreamResponse], error) {
	s := a.s
	tenant, err := tenantOf(ctx)
	if err != nil {
		return nil, err
	}
	_, info, err := s.lookup(ctx, tenant, req.Msg.Name)
	if err != nil {
		return nil, err
	}
	if err := s.js.DeleteStream(ctx, info.Config.Name); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, jsError(err)
	}
	s.streams.Invalidate(streamKey{tenant, req.Msg.Name})
	// Its cursors go with it.
	if cs, err := s.js.Stream(ctx, logstream.CursorStream); err == nil {
		if err := cs.Purge(ctx, jetstream.WithPurgeSubject(logstream.CursorSubject(tenant, req.Msg.Name, ">"))); err != nil {
			s.log.WarnContext(ctx, "cursors of a deleted stream not purged", "event", "logbroker.cursor_purge_failed", "stream", req.Msg.Name, "error", err.Error())
		}
	}
	s.log.InfoContext(ctx, "stream deleted", "event", "logbroker.stream_deleted", "stream", req.Msg.Name)
	return connect.NewResponse(&logbrokerv1.DeleteStreamResponse{}), nil
}

func (a *api) ListStreams(ctx context.Context, _ *connect.Request[logbrokerv1.ListStreamsRequest]) (*connect.Response[logbrokerv1.ListStreamsResponse], error) {
	tenant, err := tenantOf(ctx)
	if err != nil {
		return nil, err
	}
	infos, err := a.s.listStreams(ctx, tenant)
	if err != nil {
		return nil, err
	}
	resp := &logbrokerv1.ListStreamsResponse{}
	for _, info := range infos {
		resp.Streams = append(resp.Streams, streamInfo(info))
	}
	return connect.NewResponse(resp), nil
}

func (a *api) DescribeStream(ctx context.Context, req *connect.Request[logbrokerv1.DescribeStreamRequest]) (*connect.Response[logbrokerv1.DescribeStreamResponse], error) {
	tenant, err := tenantOf(ctx)
	if err != nil {
		return nil, err
	}
	_, info, err := a.s.lookup(ctx, tenant, req.Msg.Name)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&logbrokerv1.DescribeStreamResponse{Stream: streamInfo(info)}), nil
}

// message builds the NATS message of one publish, enforcing the limits.
func (s *Service) message(tenant string, m *streamMeta, subject string, key, value []byte, headers map[string]string, dedup string) (*nats.Msg, error) {
	msg, err := logstream.Build(logstream.Stream{Tenant: tenant, JS: m.js, Name: m.name, Subject: m.subject, Compact: m.compact},
		logstream.Message{Subject: subject, Key: key, Value: value, Headers: headers, DedupID: dedup}, s.cfg.MaxMessageBytes)
	switch {
	case errors.Is(err, logstream.ErrTooLarge):
		return nil, connect.NewError(connect.CodeResourceExhausted, err)
	case err != nil:
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	return msg, nil
}

func ackPolicy(p logbrokerv1.AckPolicy) string {
	switch p {
	case logbrokerv1.AckPolicy_ACK_POLICY_NONE:
		return "none"
	case logbrokerv1.AckPolicy_ACK_POLICY_ALL:
		return "all"
	}
	return "leader"
}

// publishErr maps a failed JetStream publish; a stream that vanished is
// dropped from the cache.
func (s *Service) publishErr(tenant, name string, err error) error {
	if errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) {
		s.streams.Invalidate(streamKey{tenant, name})
		return connect.NewError(connect.CodeUnavailable, fmt.Errorf("stream %q did not answer (deleted, or JetStream is down): %w", name, err))
	}
	return jsError(err)
}

func (a *api) Publish(ctx context.Context, req *connect.Request[logbrokerv1.PublishRequest]) (*connect.Response[logbrokerv1.PublishResponse], error) {
	s := a.s
	tenant, err := tenantOf(ctx)
	if err != nil {
		return nil, err
	}
	r := req.Msg
	m, err := s.meta(ctx, tenant, r.Stream)
	if err != nil {
		return nil, err
	}
	msg, err := s.message(tenant, m, r.Subject, r.Key, r.Value, r.Headers, r.DedupId)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	ack := ackPolicy(r.AckPolicy)
	if ack == "none" {
		if err := s.nc.PublishMsg(msg); err != nil {
			return nil, connect.NewError(connect.CodeUnavailable, err)
		}
		s.m.published.WithLabelValues(ack).Inc()
		s.m.bytes.Add(float64(len(r.Key) + len(r.Value)))
		return connect.NewResponse(&logbrokerv1.PublishResponse{}), nil
	}
	pctx, cancel := context.WithTimeout(ctx, s.cfg.PublishTimeout)
	defer cancel()
	pa, err := s.js.PublishMsg(pctx, msg)
	if err != nil {
		return nil, s.publishErr(tenant, r.Stream, err)
	}
	s.m.publish.Observe(time.Since(start).Seconds())
	s.m.published.WithLabelValues(ack).Inc()
	s.m.bytes.Add(float64(len(r.Key) + len(r.Value)))
	return connect.NewResponse(&logbrokerv1.PublishResponse{Offset: pa.Sequence, Duplicate: pa.Duplicate}), nil
}

func (a *api) PublishBatch(ctx context.Context, req *connect.Request[logbrokerv1.PublishBatchRequest]) (*connect.Response[logbrokerv1.PublishBatchResponse], error) {
	s := a.s
	tenant, err := tenantOf(ctx)
	if err != nil {
		return nil, err
	}
	r := req.Msg
	if len(r.Messages) == 0 {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("the batch is empty"))
	}
	if len(r.Messages) > s.cfg.MaxBatchMessages {
		return nil, connect.NewError(connect.CodeResourceExhausted, fmt.Errorf("batch of %d messages; the limit is %d", len(r.Messages), s.cfg.MaxBatchMessages))
	}
	m, err := s.meta(ctx, tenant, r.Stream)
	if err != nil {
		return nil, err
	}
	// Every message is checked before any is published.
	msgs := make([]*nats.Msg, len(r.Messages))
	total := 0
	for i, bm := range r.Messages {
		if msgs[i], err = s.message(tenant, m, bm.Subject, bm.Key, bm.Value, bm.Headers, bm.DedupId); err != nil {
			return nil, connect.NewError(connect.CodeOf(err), fmt.Errorf("message %d: %w", i, errors.Unwrap(err)))
		}
		total += len(bm.Key) + len(bm.Value)
	}
	if total > s.cfg.MaxBatchBytes {
		return nil, connect.NewError(connect.CodeResourceExhausted, fmt.Errorf("batch of %d bytes; the limit is %d", total, s.cfg.MaxBatchBytes))
	}
	start := time.Now()
	ack := ackPolicy(r.AckPolicy)
	resp := &logbrokerv1.PublishBatchResponse{Results: make([]*logbrokerv1.PublishResponse, len(msgs))}
	if ack == "none" {
		for i, msg := range msgs {
			if err := s.nc.PublishMsg(msg); err != nil {
				return nil, connect.NewError(connect.CodeUnavailable, fmt.Errorf("message %d: %w", i, err))
			}
			resp.Results[i] = &logbrokerv1.PublishResponse{}
		}
		if err := s.nc.FlushWithContext(ctx); err != nil {
			return nil, connect.NewError(connect.CodeUnavailable, err)
		}
	} else {
		// In order on one connection; JetStream acknowledges each. A batch
		// that fails part way may be partly stored: retry it with the same
		// dedup IDs and nothing is stored twice.
		pctx, cancel := context.WithTimeout(ctx, s.cfg.PublishTimeout)
		defer cancel()
		futures := make([]jetstream.PubAckFuture, len(msgs))
		for i, msg := range msgs {
			if futures[i], err = s.js.PublishMsgAsync(msg); err != nil {
				return nil, connect.NewError(connect.CodeUnavailable, fmt.Errorf("message %d of %d not sent: %w", i, len(msgs), err))
			}
		}
		for i, f := range futures {
			select {
			case pa := <-f.Ok():
				resp.Results[i] = &logbrokerv1.PublishResponse{Offset: pa.Sequence, Duplicate: pa.Duplicate}
			case err := <-f.Err():
				return nil, s.publishErr(tenant, r.Stream, fmt.Errorf("message %d of %d: %w", i, len(msgs), err))
			case <-pctx.Done():
				if ctx.Err() != nil { // the caller went away
					return nil, connect.NewError(connect.CodeCanceled, fmt.Errorf("publish canceled at message %d of %d", i, len(msgs)))
				}
				return nil, connect.NewError(connect.CodeDeadlineExceeded, fmt.Errorf("no ack for message %d of %d within %v", i, len(msgs), s.cfg.PublishTimeout))
			}
		}
		s.m.publish.Observe(time.Since(start).Seconds())
	}
	s.m.published.WithLabelValues(ack).Add(float64(len(msgs)))
	s.m.bytes.Add(float64(total))
	return connect.NewResponse(resp), nil
}
