package satellite

import (
	"context"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/orbitplane/orbit/libs/obslog"
	connectorv1 "github.com/orbitplane/orbit/proto/orbit/connector/v1"
	queryv1 "github.com/orbitplane/orbit/proto/orbit/query/v1"
	"github.com/orbitplane/orbit/services/satellite/internal/store"
)

// execution is one query running here. It sends a result frame only while
// it holds a credit: a slow reader at the far end pauses the statement
// instead of making anyone drop data.
type execution struct {
	id     string
	cancel context.CancelFunc
	link   *linkState
	seq    uint64

	// Frames numbered but not yet sent (only the query's goroutine uses them).
	pending      []*queryv1.ResultFrame
	pendingBytes int

	mu      sync.Mutex
	credits int
	more    chan struct{}
}

func (e *execution) grant(n int) {
	if n <= 0 {
		return
	}
	e.mu.Lock()
	e.credits += n
	e.mu.Unlock()
	select {
	case e.more <- struct{}{}:
	default:
	}
}

// take waits for a credit. Frames held back for coalescing go out first
// when there is none: they may be what the receiver needs to grant more.
func (e *execution) take(ctx context.Context) error {
	e.mu.Lock()
	empty := e.credits == 0
	e.mu.Unlock()
	if empty {
		if err := e.flush(); err != nil {
			return err
		}
	}
	for {
		e.mu.Lock()
		if e.credits > 0 {
			e.credits--
			e.mu.Unlock()
			return nil
		}
		e.mu.Unlock()
		select {
		case <-e.more:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// add numbers a frame and queues it; flush sends the queue as one message.
func (e *execution) add(f *queryv1.ResultFrame) {
	e.seq++
	f.QueryId, f.Seq = e.id, e.seq
	e.pending = append(e.pending, f)
}

func (e *execution) flush() error {
	if len(e.pending) == 0 {
		return nil
	}
	frames := e.pending
	e.pending, e.pendingBytes = nil, 0
	return e.link.send(&connectorv1.ConnectRequest{Frame: &connectorv1.ConnectRequest_Results{Results: &queryv1.ResultFrames{Frames: frames}}})
}

// maxCoalesceBytes bounds the batch bytes sent in one message, well under
// NATS's 1 MiB payload limit.
const maxCoalesceBytes = 128 << 10

// sink adapts the store's result callbacks to credited frames. It holds the
// newest batch back until the next one (or the end) is known, so a small
// result travels as one message: schema, batch and end together.
type sink struct {
	ctx context.Context
	e   *execution
}

func (s sink) Schema(cols []*queryv1.Column) error {
	if err := s.e.take(s.ctx); err != nil {
		return err
	}
	s.e.add(&queryv1.ResultFrame{Kind: &queryv1.ResultFrame_Schema{Schema: &queryv1.ResultSchema{Columns: cols}}})
	return nil
}

func (s sink) Batch(b *queryv1.ColumnBatch, bytes int) error {
	if err := s.e.take(s.ctx); err != nil {
		return err
	}
	// Send what is queued (the schema and the previous batch), unless this
	// batch can still join them.
	if s.e.pendingBytes > 0 && s.e.pendingBytes+bytes > maxCoalesceBytes || hasBatch(s.e.pending) {
		if err := s.e.flush(); err != nil {
			return err
		}
	}
	s.e.add(&queryv1.ResultFrame{Kind: &queryv1.ResultFrame_Batch{Batch: b}})
	s.e.pendingBytes += bytes
	return nil
}

func hasBatch(fs []*queryv1.ResultFrame) bool {
	for _, f := range fs {
		if f.GetBatch() != nil {
			return true
		}
	}
	return false
}

// finish sends what is queued with the final frame.
func (e *execution) finish(f *queryv1.ResultFrame) error {
	e.add(f)
	return e.flush()
}

func (a *Agent) startQuery(ctx context.Context, l *linkState, q *queryv1.QueryRequest, satID string) {
	timeout := a.cfg.MaxQueryTime
	if d := q.Timeout.AsDuration(); q.Timeout != nil && d > 0 && d < timeout {
		timeout = d
	}
	qctx, cancel := context.WithTimeout(ctx, timeout)
	e := &execution{id: q.QueryId, cancel: cancel, link: l, credits: int(q.InitialCredits), more: make(chan struct{}, 1)}
	if e.credits <= 0 {
		e.credits = DefaultInitialCredits
	}
	l.mu.Lock()
	if _, dup := l.execs[q.QueryId]; dup {
		l.mu.Unlock()
		cancel()
		return
	}
	l.execs[q.QueryId] = e
	l.mu.Unlock()
	go func() {
		defer func() {
			cancel()
			l.mu.Lock()
			delete(l.execs, q.QueryId)
			l.mu.Unlock()
		}()
		lim := store.Limits{MaxRows: a.cfg.MaxRows, MaxBytes: a.cfg.MaxBytes, MaxBatchBytes: int(q.MaxBatchBytes)}
		if r := q.GetLimits().GetMaxRows(); r > 0 && (lim.MaxRows <= 0 || r < lim.MaxRows) {
			lim.MaxRows = r
		}
		if b := q.GetLimits().GetMaxBytes(); b > 0 && (lim.MaxBytes <= 0 || b < lim.MaxBytes) {
			lim.MaxBytes = b
		}
		start := time.Now()
		res, err := a.store.Query(qctx, q.Sql, lim, sink{ctx: qctx, e: e})
		elapsed := time.Since(start)
		// The answer leaves first and the line is written after it, so the
		// log write is off the query's critical path.
		if err != nil {
			qe := store.AsError(err)
			// End frames need no credit: the receiver keeps room for them.
			sendErr := e.finish(&queryv1.ResultFrame{Kind: &queryv1.ResultFrame_Error{Error: qe.Proto()}})
			a.log.InfoContext(ctx, "query failed", obslog.Event("satellite.query"), "query_id", q.QueryId, "code", qe.Code.String(), "error", qe.Message, "elapsed_ms", elapsed.Milliseconds(), "sent", sendErr == nil)
			return
		}
		sendErr := e.finish(&queryv1.ResultFrame{Kind: &queryv1.ResultFrame_End{End: &queryv1.ResultEnd{Rows: res.Rows, Bytes: res.Bytes, Elapsed: durationpb.New(elapsed)}}})
		a.log.InfoContext(ctx, "query answered", obslog.Event("satellite.query"), "query_id", q.QueryId, "rows", res.Rows, "bytes", res.Bytes, "elapsed_ms", elapsed.Milliseconds(), "sent", sendErr == nil)
	}()
}
