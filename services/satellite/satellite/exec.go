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

func (e *execution) take(ctx context.Context) error {
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

func (e *execution) frame(f *queryv1.ResultFrame) error {
	e.seq++
	f.QueryId, f.Seq = e.id, e.seq
	return e.link.send(&connectorv1.ConnectRequest{Frame: &connectorv1.ConnectRequest_Result{Result: f}})
}

// sink adapts the store's result callbacks to credited frames.
type sink struct {
	ctx context.Context
	e   *execution
}

func (s sink) Schema(cols []*queryv1.Column) error {
	if err := s.e.take(s.ctx); err != nil {
		return err
	}
	return s.e.frame(&queryv1.ResultFrame{Kind: &queryv1.ResultFrame_Schema{Schema: &queryv1.ResultSchema{Columns: cols}}})
}

func (s sink) Batch(b *queryv1.ColumnBatch, _ int) error {
	if err := s.e.take(s.ctx); err != nil {
		return err
	}
	return s.e.frame(&queryv1.ResultFrame{Kind: &queryv1.ResultFrame_Batch{Batch: b}})
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
		if err != nil {
			qe := store.AsError(err)
			a.log.InfoContext(ctx, "query failed", obslog.Event("satellite.query"), "query_id", q.QueryId, "code", qe.Code.String(), "error", qe.Message, "elapsed_ms", elapsed.Milliseconds())
			// End frames need no credit: the receiver keeps room for them.
			_ = e.frame(&queryv1.ResultFrame{Kind: &queryv1.ResultFrame_Error{Error: qe.Proto()}})
			return
		}
		a.log.InfoContext(ctx, "query answered", obslog.Event("satellite.query"), "query_id", q.QueryId, "rows", res.Rows, "bytes", res.Bytes, "elapsed_ms", elapsed.Milliseconds())
		_ = e.frame(&queryv1.ResultFrame{Kind: &queryv1.ResultFrame_End{End: &queryv1.ResultEnd{Rows: res.Rows, Bytes: res.Bytes, Elapsed: durationpb.New(elapsed)}}})
	}()
}
