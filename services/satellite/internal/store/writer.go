package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"time"

	duckdb "github.com/duckdb/duckdb-go/v2"
)

// ErrClosed is returned by Append after Close.
var ErrClosed = errors.New("store: closed")

type pending struct {
	batch *Batch
	done  chan error
}

// Append commits the batch and returns once it is durable (in DuckDB's WAL)
// or failed. Concurrent callers share commits (group commit): rows are
// appended through DuckDB's Appender and committed as soon as no other batch
// is queued, or every FlushRows rows. It blocks while 64 batches are queued.
func (s *Store) Append(ctx context.Context, b *Batch) error {
	if b.Len() == 0 {
		return nil
	}
	p := &pending{batch: b, done: make(chan error, 1)}
	select {
	case s.in <- p:
	case <-s.quit:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-p.done:
		return err
	case <-ctx.Done():
		// The rows are queued and will be committed; the caller stops waiting.
		return ctx.Err()
	}
}

type writer struct {
	s       *Store
	conn    *sql.Conn
	logs    *duckdb.Appender
	spans   *duckdb.Appender
	metrics *duckdb.Appender
	row     []driver.Value
}

func newWriter(s *Store, conn *sql.Conn) (*writer, error) {
	w := &writer{s: s, conn: conn}
	err := conn.Raw(func(dc any) error {
		c, ok := dc.(driver.Conn)
		if !ok {
			return errors.New("not a driver connection")
		}
		var err error
		if w.logs, err = duckdb.NewAppenderFromConn(c, "", LogsTable.Name); err != nil {
			return err
		}
		if w.spans, err = duckdb.NewAppenderFromConn(c, "", SpansTable.Name); err != nil {
			return err
		}
		w.metrics, err = duckdb.NewAppenderFromConn(c, "", MetricsTable.Name)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("store: appender: %w", err)
	}
	return w, nil
}

func (w *writer) run() {
	s := w.s
	defer close(s.done)
	flush := time.NewTicker(s.cfg.FlushInterval)
	defer flush.Stop()
	retain := time.NewTicker(s.cfg.RetainEvery)
	defer retain.Stop()

	var waiting []*pending
	rows := 0
	lastStats := time.Now()
	commit := func() {
		if len(waiting) == 0 {
			return
		}
		err := w.flush()
		s.version.Add(1) // after the commit: statements prepared from now on see it
		for _, p := range waiting {
			p.done <- err
		}
		if err != nil {
			s.log.Error("store commit failed", "error", err, "rows", rows)
		}
		waiting, rows = waiting[:0], 0
		if time.Since(lastStats) >= time.Second {
			lastStats = time.Now()
			if err := s.refreshStats(context.Background()); err != nil {
				s.log.Warn("store stats failed", "error", err)
			}
		}
	}
	for {
		select {
		case p := <-s.in:
			if err := w.append(p.batch); err != nil {
				p.done <- err
				continue
			}
			waiting = append(waiting, p)
			rows += p.batch.Len()
			// Group commit: commit once nobody else is queued (what arrives
			// meanwhile shares the next commit), or at FlushRows.
			if rows >= s.cfg.FlushRows || len(s.in) == 0 {
				commit()
			}
		case <-flush.C:
			commit()
		case <-retain.C:
			commit()
			if err := s.Retain(context.Background()); err != nil {
				s.log.Error("store retention failed", "error", err)
			}
		case <-s.quit:
			// Drain what is queued, then close the appenders.
			for {
				select {
				case p := <-s.in:
					if err := w.append(p.batch); err != nil {
						p.done <- err
						continue
					}
					waiting = append(waiting, p)
				default:
					commit()
					s.err = errors.Join(w.logs.Close(), w.spans.Close(), w.metrics.Close(), w.conn.Close())
					return
				}
			}
		}
	}
}

func (w *writer) append(b *Batch) error {
	for i := range b.Logs {
		l := &b.Logs[i]
		if err := w.logs.AppendRow(l.Time.UTC(), l.Service, l.Severity, l.Body, l.TraceID, l.SpanID, nullIfEmpty(l.Attributes), l.Source); err != nil {
			return fmt.Errorf("store: append log: %w", err)
		}
	}
	for i := range b.Spans {
		sp := &b.Spans[i]
		if err := w.spans.AppendRow(sp.Start.UTC(), int64(sp.Duration), sp.TraceID, sp.SpanID, sp.ParentSpanID, sp.Service, sp.Name, sp.Kind, sp.Status, nullIfEmpty(sp.Attributes)); err != nil {
			return fmt.Errorf("store: append span: %w", err)
		}
	}
	for i := range b.Metrics {
		m := &b.Metrics[i]
		if err := w.metrics.AppendRow(m.Time.UTC(), m.Service, m.Name, m.Kind, m.Value, m.Unit, nullIfEmpty(m.Attributes)); err != nil {
			return fmt.Errorf("store: append metric: %w", err)
		}
	}
	return nil
}

func (w *writer) flush() error {
	return errors.Join(w.logs.Flush(), w.spans.Flush(), w.metrics.Flush())
}

func nullIfEmpty(s string) driver.Value {
	if s == "" {
		return nil
	}
	return s
}
