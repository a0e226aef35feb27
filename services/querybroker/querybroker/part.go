package querybroker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/orbitplane/orbit/libs/connectserver"
	"github.com/orbitplane/orbit/libs/reqctx"
	connectorv1 "github.com/orbitplane/orbit/proto/orbit/connector/v1"
	queryv1 "github.com/orbitplane/orbit/proto/orbit/query/v1"
	wirev1 "github.com/orbitplane/orbit/proto/orbit/wire/v1"
	"github.com/orbitplane/orbit/services/connector/connector"
)

// NoRespondersRetry is how long a query waits before asking a satellite a
// second time when no connector held its link the first time.
const NoRespondersRetry = 25 * time.Millisecond

// part is one satellite's share of a query.
type part struct {
	s     *Service
	satID string
	// satName names the satellite in errors (with its ID).
	satName string
	queryID string
	sql     string
	limits  *queryv1.QueryLimits
	timeout time.Duration
}

// handler receives a part's frames in order. It may hold them back until
// flush, which run calls after the frames of each NATS message (not after
// the last: what is held then leaves with the satellite's result). Returning
// an error cancels the part (the client went away).
type handler interface {
	schema(*queryv1.ResultSchema) error
	// batch gets an encoded ColumnBatch.
	batch(b []byte) error
	flush() error
}

// readHeader reads a batch's row count and skips its columns.
var readHeader = proto.UnmarshalOptions{DiscardUnknown: true}

// outcome is how a part ended.
type outcome struct {
	result *queryv1.SatelliteResult
}

func failed(o queryv1.SatelliteOutcome, code queryv1.QueryErrorCode, format string, args ...any) outcome {
	return outcome{result: &queryv1.SatelliteResult{Outcome: o, Error: &queryv1.QueryError{Code: code, Message: fmt.Sprintf(format, args...)}}}
}

func (p *part) publish(ctx context.Context, m *connectorv1.ConnectResponse, reply string) error {
	m.Context = reqctx.ToCarrier(ctx)
	b, err := proto.Marshal(m)
	if err != nil {
		return err
	}
	msg := &nats.Msg{Subject: connector.SatelliteSubjectPrefix + p.satID, Reply: reply, Data: b}
	return p.s.nc.PublishMsg(msg)
}

// run executes the part: subscribe to the reply subject, then publish the
// query (with the reply subject set, so a satellite no replica holds answers
// at once with NATS "no responders"), then relay frames, checking sequence
// numbers and granting credits as h consumes them.
func (p *part) run(ctx context.Context, h handler) outcome {
	start := time.Now()
	window := p.s.cfg.Window
	// Room for a full window plus the end frame and a no-responders status:
	// with credits, NATS never has more than this in flight for us. The
	// broker's one reply subscription is already in place, so it precedes
	// the publish below.
	reply, ch, release := p.s.replies.register(p.queryID, window+4)
	defer release()

	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	req := &queryv1.QueryRequest{
		QueryId: p.queryID, Sql: p.sql, Limits: p.limits, Timeout: durationpb.New(p.timeout),
		InitialCredits: int32(window), MaxBatchBytes: int32(p.s.cfg.MaxBatchBytes), ReplySubject: reply,
	}
	query := &connectorv1.ConnectResponse{Frame: &connectorv1.ConnectResponse_Query{Query: req}}
	if err := p.publish(ctx, query, reply); err != nil {
		return failed(queryv1.SatelliteOutcome_SATELLITE_OUTCOME_ERROR, queryv1.QueryErrorCode_QUERY_ERROR_CODE_INTERNAL, "publish: %v", err)
	}
	retried := false
	cancelSatellite := func(reason string) {
		// Best effort, outside the query's context which may have ended.
		_ = p.publish(context.WithoutCancel(ctx), &connectorv1.ConnectResponse{Frame: &connectorv1.ConnectResponse_Cancel{Cancel: &queryv1.Cancel{QueryId: p.queryID, Reason: reason}}}, "")
	}
	var (
		next     uint64 = 1
		consumed int
		rows     int64
		bytes    int64
	)
	for {
		var m *nats.Msg
		select {
		case m = <-ch:
			if m == nil { // more frames than credits: the satellite broke the protocol
				cancelSatellite("flow control violated")
				return failed(queryv1.SatelliteOutcome_SATELLITE_OUTCOME_ERROR, queryv1.QueryErrorCode_QUERY_ERROR_CODE_LOST_FRAME, "the satellite sent more frames than it had credits for")
			}
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				cancelSatellite("deadline")
				return failed(queryv1.SatelliteOutcome_SATELLITE_OUTCOME_TIMEOUT, queryv1.QueryErrorCode_QUERY_ERROR_CODE_DEADLINE, "no complete answer within %v", p.timeout)
			}
			cancelSatellite("client canceled")
			return failed(queryv1.SatelliteOutcome_SATELLITE_OUTCOME_CANCELED, queryv1.QueryErrorCode_QUERY_ERROR_CODE_CANCELED, "query canceled")
		}
		if len(m.Data) == 0 && m.Header.Get("Status") == "503" {
			// A connector registers a satellite (HEALTHY) a moment before
			// its subscription reaches NATS: one late retry covers a query
			// sent in that moment.
			if !retried {
				retried = true
				select {
				case <-time.After(NoRespondersRetry):
				case <-ctx.Done():
					continue
				}
				if err := p.publish(ctx, query, reply); err == nil {
					continue
				}
			}
			return failed(queryv1.SatelliteOutcome_SATELLITE_OUTCOME_UNAVAILABLE, queryv1.QueryErrorCode_QUERY_ERROR_CODE_SATELLITE_UNAVAILABLE, "satellite %s (%s) is not connected to any connector", p.satName, p.satID)
		}
		// Batches stay encoded: the view decodes everything else.
		var fs wirev1.ResultFramesView
		if err := proto.Unmarshal(m.Data, &fs); err != nil {
			cancelSatellite("bad frame")
			return failed(queryv1.SatelliteOutcome_SATELLITE_OUTCOME_ERROR, queryv1.QueryErrorCode_QUERY_ERROR_CODE_INTERNAL, "undecodable result frames: %v", err)
		}
		// Result bytes are counted as they travel (the frames' encoding),
		// not by walking every batch again.
		p.s.m.bytes.Add(float64(len(m.Data)))
		bytes += int64(len(m.Data))
		// The frames of one message reach the client in one write.
		o, done := func() (outcome, bool) {
			uncork := connectserver.Cork(ctx)
			defer uncork()
			for _, f := range fs.Frames {
				if f.QueryId != p.queryID || f.Seq != next {
					cancelSatellite("lost frame")
					return failed(queryv1.SatelliteOutcome_SATELLITE_OUTCOME_ERROR, queryv1.QueryErrorCode_QUERY_ERROR_CODE_LOST_FRAME, "result frame %d arrived when %d was expected: a frame was lost", f.Seq, next), true
				}
				next++
				p.s.m.frames.Inc()
				var err error
				switch k := f.Kind.(type) {
				case *wirev1.ResultFrameView_Schema:
					err = h.schema(k.Schema)
				case *wirev1.ResultFrameView_Batch:
					var hdr wirev1.ColumnBatchHeader
					if err := readHeader.Unmarshal(k.Batch, &hdr); err != nil {
						cancelSatellite("bad frame")
						return failed(queryv1.SatelliteOutcome_SATELLITE_OUTCOME_ERROR, queryv1.QueryErrorCode_QUERY_ERROR_CODE_INTERNAL, "undecodable result batch: %v", err), true
					}
					rows += hdr.NumRows
					err = h.batch(k.Batch)
				case *wirev1.ResultFrameView_End:
					res := &queryv1.SatelliteResult{Outcome: queryv1.SatelliteOutcome_SATELLITE_OUTCOME_OK, Rows: k.End.Rows, Bytes: bytes, Elapsed: durationpb.New(time.Since(start)), Execution: k.End.Elapsed}
					return outcome{result: res}, true
				case *wirev1.ResultFrameView_Error:
					o := queryv1.SatelliteOutcome_SATELLITE_OUTCOME_ERROR
					switch k.Error.Code {
					case queryv1.QueryErrorCode_QUERY_ERROR_CODE_SATELLITE_UNAVAILABLE:
						o = queryv1.SatelliteOutcome_SATELLITE_OUTCOME_UNAVAILABLE
					case queryv1.QueryErrorCode_QUERY_ERROR_CODE_DEADLINE:
						o = queryv1.SatelliteOutcome_SATELLITE_OUTCOME_TIMEOUT
					case queryv1.QueryErrorCode_QUERY_ERROR_CODE_CANCELED:
						o = queryv1.SatelliteOutcome_SATELLITE_OUTCOME_CANCELED
					}
					return outcome{result: &queryv1.SatelliteResult{Outcome: o, Rows: rows, Bytes: bytes, Elapsed: durationpb.New(time.Since(start)), Error: k.Error}}, true
				}
				if err != nil {
					cancelSatellite("client gone")
					return failed(queryv1.SatelliteOutcome_SATELLITE_OUTCOME_CANCELED, queryv1.QueryErrorCode_QUERY_ERROR_CODE_CANCELED, "client stopped reading: %v", err), true
				}
				consumed++
			}
			if err := h.flush(); err != nil {
				cancelSatellite("client gone")
				return failed(queryv1.SatelliteOutcome_SATELLITE_OUTCOME_CANCELED, queryv1.QueryErrorCode_QUERY_ERROR_CODE_CANCELED, "client stopped reading: %v", err), true
			}
			return outcome{}, false
		}()
		if done {
			return o
		}
		// The frames reached the client: the satellite may send more.
		// Credits go back in half-window lumps to keep control traffic low.
		if consumed >= window/2 {
			if err := p.publish(ctx, &connectorv1.ConnectResponse{Frame: &connectorv1.ConnectResponse_Credit{Credit: &queryv1.Credit{QueryId: p.queryID, Frames: int32(consumed)}}}, ""); err != nil {
				cancelSatellite("credit publish failed")
				return failed(queryv1.SatelliteOutcome_SATELLITE_OUTCOME_ERROR, queryv1.QueryErrorCode_QUERY_ERROR_CODE_INTERNAL, "credit: %v", err)
			}
			consumed = 0
		}
	}
}
