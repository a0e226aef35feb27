package store

import (
	"context"
	"fmt"
	"time"
)

// retain deletes rows older than MaxAge, then, if the database uses more
// than MaxBytes, the oldest share of rows that brings it under, and
// checkpoints so freed blocks are reused.
func (s *Store) retain(ctx context.Context) error {
	defer s.version.Add(1)
	cutoff := time.Now().Add(-s.cfg.MaxAge).UTC()
	for _, t := range Tables {
		q := fmt.Sprintf("DELETE FROM %s WHERE %s < ?", t.Name, t.TimeColumn)
		if _, err := s.db.ExecContext(ctx, q, cutoff); err != nil {
			return fmt.Errorf("store: age retention %s: %w", t.Name, err)
		}
	}
	if _, err := s.db.ExecContext(ctx, "CHECKPOINT"); err != nil {
		return fmt.Errorf("store: checkpoint: %w", err)
	}
	used, err := s.usedBytes(ctx)
	if err != nil {
		return err
	}
	if used > s.cfg.MaxBytes {
		// Delete the oldest share of every table that brings the size to 90 %
		// of the bound. DuckDB frees space lazily (freed blocks are reused by
		// later writes), so the file stops growing rather than shrinking.
		frac := min(1-0.9*float64(s.cfg.MaxBytes)/float64(used), 0.9)
		deleted := int64(0)
		for _, t := range Tables {
			q := fmt.Sprintf(`DELETE FROM %[1]s WHERE %[2]s < (
				SELECT quantile_disc(%[2]s, %[3]f) FROM %[1]s)`, t.Name, t.TimeColumn, frac)
			res, err := s.db.ExecContext(ctx, q)
			if err != nil {
				return fmt.Errorf("store: size retention %s: %w", t.Name, err)
			}
			n, _ := res.RowsAffected()
			deleted += n
		}
		if _, err := s.db.ExecContext(ctx, "CHECKPOINT"); err != nil {
			return fmt.Errorf("store: checkpoint: %w", err)
		}
		s.log.Info("store size retention", "used_bytes", used, "max_bytes", s.cfg.MaxBytes, "deleted_rows", deleted)
	}
	return s.refreshStats(ctx)
}

// Retain runs retention now (tests and operators; it also runs every
// RetainEvery).
func (s *Store) Retain(ctx context.Context) error {
	s.writerMu.Lock()
	defer s.writerMu.Unlock()
	return s.retain(ctx)
}
