package logbroker

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/orbitplane/orbit/libs/logstream"
	logbrokerv1 "github.com/orbitplane/orbit/proto/orbit/logbroker/v1"
)

// Consumer-group defaults: a member's unacknowledged messages go to another
// member after GroupAckWait; a group nobody reads for GroupInactive is
// removed.
const (
	GroupAckWait       = 30 * time.Second
	GroupMaxAckPending = 1024
	GroupInactive      = 24 * time.Hour
	// subscribeBuffer is how many messages a subscription pulls ahead;
	// groupBuffer the same for a group member, kept small so members share.
	subscribeBuffer = 256
	groupBuffer     = 8
)

// Subscribe streams a stream's messages from a start position, optionally
// stopping at an offset. Without a group every subscriber sees every message
// (an ordered consumer per call); members of a group share them (one durable
// consumer per group, each message acknowledged once sent to a member).
func (a *api) Subscribe(ctx context.Context, req *connect.Request[logbrokerv1.SubscribeRequest], out *connect.ServerStream[logbrokerv1.SubscribeResponse]) error {
	s := a.s
	tenant, err := tenantOf(ctx)
	if err != nil {
		return err
	}
	r := req.Msg
	st, _, err := s.lookup(ctx, tenant, r.Stream)
	if err != nil {
		return err
	}
	deliver, startSeq, startTime, err := s.start(ctx, tenant, r)
	if err != nil {
		return err
	}
	if r.StopOffset > 0 && startSeq > r.StopOffset {
		return nil // nothing between start and stop
	}
	if err := s.acquireSub(tenant); err != nil {
		return err
	}
	defer s.releaseSub(tenant)

	var cons jetstream.Consumer
	if r.Group == "" {
		cons, err = st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{DeliverPolicy: deliver, OptStartSeq: startSeq, OptStartTime: startTime})
	} else {
		cons, err = s.groupConsumer(ctx, st, r.Group, deliver, startSeq, startTime)
	}
	if err != nil {
		return jsError(err)
	}
	pull := subscribeBuffer
	if r.Group != "" {
		pull = groupBuffer
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(pull))
	if err != nil {
		return jsError(err)
	}
	defer it.Stop()
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	// Response headers now: a Connect client's Subscribe call returns when
	// they arrive, and a live tail may wait long for its first message.
	if err := out.Send(nil); err != nil {
		return err
	}
	for {
		msg, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				return nil // the subscriber left
			}
			return connect.NewError(connect.CodeUnavailable, fmt.Errorf("subscription ended: %w", err))
		}
		md, err := msg.Metadata()
		if err != nil {
			return connect.NewError(connect.CodeInternal, err)
		}
		if err := out.Send(&logbrokerv1.SubscribeResponse{Message: toMessage(tenant, r.Stream, msg, md)}); err != nil {
			return err
		}
		s.m.delivered.Inc()
		if r.Group != "" {
			_ = msg.Ack() // a lost ack redelivers after GroupAckWait
		}
		if r.StopOffset > 0 && md.Sequence.Stream >= r.StopOffset {
			return nil
		}
	}
}

// start resolves the request's start position.
func (s *Service) start(ctx context.Context, tenant string, r *logbrokerv1.SubscribeRequest) (jetstream.DeliverPolicy, uint64, *time.Time, error) {
	bad := func(format string, args ...any) (jetstream.DeliverPolicy, uint64, *time.Time, error) {
		return 0, 0, nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf(format, args...))
	}
	switch r.Start {
	case logbrokerv1.StartPosition_START_POSITION_UNSPECIFIED, logbrokerv1.StartPosition_START_POSITION_LATEST:
		return jetstream.DeliverNewPolicy, 0, nil, nil
	case logbrokerv1.StartPosition_START_POSITION_EARLIEST:
		return jetstream.DeliverAllPolicy, 0, nil, nil
	case logbrokerv1.StartPosition_START_POSITION_OFFSET:
		if r.StartOffset == 0 {
			return bad("start_offset is required with START_POSITION_OFFSET (offsets start at 1)")
		}
		return jetstream.DeliverByStartSequencePolicy, r.StartOffset, nil, nil
	case logbrokerv1.StartPosition_START_POSITION_TIME:
		if r.StartTime == nil {
			return bad("start_time is required with START_POSITION_TIME")
		}
		t := r.StartTime.AsTime()
		return jetstream.DeliverByStartTimePolicy, 0, &t, nil
	case logbrokerv1.StartPosition_START_POSITION_CURSOR:
		off, found, err := s.cursor(ctx, tenant, r.Stream, r.Consumer)
		if err != nil {
			return 0, 0, nil, err
		}
		if !found {
			return jetstream.DeliverAllPolicy, 0, nil, nil
		}
		return jetstream.DeliverByStartSequencePolicy, off + 1, nil, nil
	}
	return bad("unknown start position %v", r.Start)
}

// groupConsumer returns the group's durable consumer, creating it at the
// requested start the first time.
func (s *Service) groupConsumer(ctx context.Context, st jetstream.Stream, group string, deliver jetstream.DeliverPolicy, seq uint64, t *time.Time) (jetstream.Consumer, error) {
	if err := logstream.ValidName("group", group); err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	name := "G_" + group
	c, err := st.Consumer(ctx, name)
	if err == nil {
		return c, nil
	}
	if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, err
	}
	return st.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable: name, AckPolicy: jetstream.AckExplicitPolicy, AckWait: GroupAckWait, MaxAckPending: GroupMaxAckPending,
		DeliverPolicy: deliver, OptStartSeq: seq, OptStartTime: t, InactiveThreshold: GroupInactive,
	})
}

func toMessage(tenant, stream string, msg jetstream.Msg, md *jetstream.MsgMetadata) *logbrokerv1.Message {
	m := &logbrokerv1.Message{Stream: stream, Offset: md.Sequence.Stream, Timestamp: timestamppb.New(md.Timestamp), Value: msg.Data()}
	h := msg.Headers()
	m.Subject = h.Get(logstream.HdrSubject)
	if m.Subject == "" {
		m.Subject = logstream.UserSubject(tenant, msg.Subject())
	}
	if k := h.Get(logstream.HdrKey); k != "" {
		m.Key, _ = base64.StdEncoding.DecodeString(k)
	}
	for k, v := range h {
		lk := strings.ToLower(k)
		if strings.HasPrefix(lk, "nats-") || strings.HasPrefix(lk, "orbit-") || len(v) == 0 {
			continue
		}
		if m.Headers == nil {
			m.Headers = map[string]string{}
		}
		m.Headers[k] = v[0]
	}
	return m
}

func (a *api) SetCursor(ctx context.Context, req *connect.Request[logbrokerv1.SetCursorRequest]) (*connect.Response[logbrokerv1.SetCursorResponse], error) {
	s := a.s
	tenant, err := tenantOf(ctx)
	if err != nil {
		return nil, err
	}
	r := req.Msg
	if err := logstream.ValidName("consumer", r.Consumer); err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	if _, err := s.meta(ctx, tenant, r.Stream); err != nil {
		return nil, err
	}
	pctx, cancel := context.WithTimeout(ctx, s.cfg.PublishTimeout)
	defer cancel()
	if _, err := s.js.Publish(pctx, logstream.CursorSubject(tenant, r.Stream, r.Consumer), []byte(strconv.FormatUint(r.Offset, 10))); err != nil {
		return nil, jsError(err)
	}
	return connect.NewResponse(&logbrokerv1.SetCursorResponse{}), nil
}

func (a *api) GetCursor(ctx context.Context, req *connect.Request[logbrokerv1.GetCursorRequest]) (*connect.Response[logbrokerv1.GetCursorResponse], error) {
	s := a.s
	tenant, err := tenantOf(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := s.meta(ctx, tenant, req.Msg.Stream); err != nil {
		return nil, err
	}
	off, found, err := s.cursor(ctx, tenant, req.Msg.Stream, req.Msg.Consumer)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&logbrokerv1.GetCursorResponse{Offset: off, Found: found}), nil
}

func (s *Service) cursor(ctx context.Context, tenant, stream, consumer string) (uint64, bool, error) {
	if err := logstream.ValidName("consumer", consumer); err != nil {
		return 0, false, connect.NewError(connect.CodeInvalidArgument, err)
	}
	cs, err := s.js.Stream(ctx, logstream.CursorStream)
	if err != nil {
		return 0, false, jsError(err)
	}
	m, err := cs.GetLastMsgForSubject(ctx, logstream.CursorSubject(tenant, stream, consumer))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, jsError(err)
	}
	off, err := strconv.ParseUint(string(m.Data), 10, 64)
	if err != nil {
		return 0, false, connect.NewError(connect.CodeDataLoss, fmt.Errorf("cursor %s/%s is unreadable: %q", stream, consumer, m.Data))
	}
	return off, true, nil
}
