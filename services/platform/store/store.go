// Package store is the platform's source of truth: tenants, users, API keys,
// satellite deploy keys and regions, in SQLite (embedded, the default) or
// PostgreSQL (production), with one list of migrations for both.
//
// Every mutation that changes a context (docs/contexts.md) inserts an outbox
// row in the same transaction, and the row's ID becomes the context's
// version. The context publisher reads the outbox, so no code path can
// change platform data and forget to publish it.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
	_ "modernc.org/sqlite"             // database/sql driver "sqlite" (pure Go)
)

// Domain errors; the API maps them to codes.
var (
	ErrNotFound      = errors.New("platform: not found")
	ErrAlreadyExists = errors.New("platform: already exists")
	ErrInvalid       = errors.New("platform: invalid argument")
)

// Limits (docs/limits.md).
const (
	MaxNameLen        = 128
	MaxDescriptionLen = 512
	MaxLabels         = 32
	MaxLabelLen       = 128
	MaxEndpoints      = 16
	// MaxChangesRead bounds one outbox read.
	MaxChangesRead = 10_000
)

// Scopes an API key may carry.
var Scopes = []string{"query", "satellites:read", "satellites:write", "logs:read", "logs:write", "admin"}

// DefaultScopes are given to a key created without any.
var DefaultScopes = []string{"query", "satellites:read", "logs:read"}

// Kinds of outbox row: the context kinds, plus region (not a context; it
// tells the publisher to re-read the regions).
const (
	KindTenant    = "tenant"
	KindAPIKey    = "apikey"
	KindDeployKey = "deploykey"
	KindRegion    = "region"
)

// Store is the platform database.
type Store struct {
	db      *sql.DB
	rdb     *sql.DB // reads; for SQLite a second pool with deferred transactions
	dialect dialect
}

type dialect int

const (
	sqlite dialect = iota
	postgres
)

// Open opens (and migrates) the database named by dsn: a postgres:// or
// postgresql:// URL for PostgreSQL, anything else is a SQLite file path.
func Open(ctx context.Context, dsn string) (*Store, error) {
	s := &Store{}
	var err error
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		s.dialect = postgres
		s.db, err = sql.Open("pgx", dsn)
	} else {
		if dsn == "" {
			return nil, fmt.Errorf("%w: empty database path", ErrInvalid)
		}
		// WAL so the publisher reads while the API writes; FULL sync so a
		// commit survives power loss; immediate transactions so writers
		// queue at BEGIN instead of failing at COMMIT.
		q := url.Values{}
		for _, p := range []string{"journal_mode(WAL)", "synchronous(FULL)", "busy_timeout(10000)", "foreign_keys(1)"} {
			q.Add("_pragma", p)
		}
		s.dialect = sqlite
		q.Set("_txlock", "immediate")
		s.db, err = sql.Open("sqlite", "file:"+dsn+"?"+q.Encode())
		if err == nil {
			// One writer at a time is SQLite's model.
			s.db.SetMaxOpenConns(1)
			q.Set("_txlock", "deferred")
			s.rdb, err = sql.Open("sqlite", "file:"+dsn+"?"+q.Encode())
		}
	}
	if s.rdb == nil {
		s.rdb = s.db
	}
	if err != nil {
		return nil, fmt.Errorf("platform: open database: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := s.db.PingContext(pctx); err != nil {
		s.Close()
		return nil, fmt.Errorf("platform: database unreachable: %w", err)
	}
	if err := s.migrate(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Close closes the database.
func (s *Store) Close() error {
	if s.rdb != s.db {
		s.rdb.Close()
	}
	return s.db.Close()
}

// Dialect names the engine: "sqlite" or "postgres".
func (s *Store) Dialect() string {
	if s.dialect == postgres {
		return "postgres"
	}
	return "sqlite"
}

// q rewrites ? placeholders for PostgreSQL ($1, $2, ...).
func (s *Store) q(query string) string {
	if s.dialect != postgres {
		return query
	}
	var b strings.Builder
	n := 0
	for _, r := range query {
		if r == '?' {
			n++
			fmt.Fprintf(&b, "$%d", n)
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

type tx struct {
	s  *Store
	tx *sql.Tx
}

func (t tx) exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return t.tx.ExecContext(ctx, t.s.q(query), args...)
}

func (t tx) query(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return t.tx.QueryContext(ctx, t.s.q(query), args...)
}

func (t tx) row(ctx context.Context, query string, args ...any) *sql.Row {
	return t.tx.QueryRowContext(ctx, t.s.q(query), args...)
}

// outboxLock serialises writers on PostgreSQL so outbox IDs become visible
// in commit order: otherwise a lower ID committing after a higher one would
// be skipped by the publisher's incremental read. (SQLite's immediate
// transactions already serialise writers.)
const outboxLock = 0x6f72626974 // "orbit"

// write runs fn in a read-write transaction.
func (s *Store) write(ctx context.Context, fn func(tx) error) error {
	t, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("platform: begin: %w", err)
	}
	defer t.Rollback() //nolint:errcheck // after Commit it is a no-op
	w := tx{s: s, tx: t}
	if s.dialect == postgres {
		if _, err := w.exec(ctx, "SELECT pg_advisory_xact_lock(?)", outboxLock); err != nil {
			return fmt.Errorf("platform: lock: %w", err)
		}
	}
	if err := fn(w); err != nil {
		return err
	}
	if err := t.Commit(); err != nil {
		return fmt.Errorf("platform: commit: %w", err)
	}
	return nil
}

// read runs fn in a read-only transaction (one consistent snapshot).
func (s *Store) read(ctx context.Context, fn func(tx) error) error {
	var opts *sql.TxOptions
	if s.dialect == postgres {
		opts = &sql.TxOptions{ReadOnly: true, Isolation: sql.LevelRepeatableRead}
	}
	t, err := s.rdb.BeginTx(ctx, opts)
	if err != nil {
		return fmt.Errorf("platform: begin: %w", err)
	}
	defer t.Rollback() //nolint:errcheck
	return fn(tx{s: s, tx: t})
}

// outbox records a change of one context and returns its version.
func (t tx) outbox(ctx context.Context, kind, key string) (uint64, error) {
	var id int64
	if err := t.row(ctx, "INSERT INTO outbox (kind, key, created_at) VALUES (?, ?, ?) RETURNING id", kind, key, now()).Scan(&id); err != nil {
		return 0, fmt.Errorf("platform: outbox: %w", err)
	}
	return uint64(id), nil
}

func now() int64 { return time.Now().UnixMicro() }

func fromMicros(us int64) time.Time {
	if us == 0 {
		return time.Time{}
	}
	return time.UnixMicro(us).UTC()
}

func toMicros(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMicro()
}

// isUnique reports a unique-constraint violation in either engine.
func isUnique(err error) bool {
	if err == nil {
		return false
	}
	msg := err.Error()
	return strings.Contains(msg, "UNIQUE constraint failed") || strings.Contains(msg, "SQLSTATE 23505") || strings.Contains(msg, "duplicate key value")
}
