// Package store is the satellite's local telemetry store: DuckDB (columnar,
// a 1M-row GROUP BY in tens of milliseconds), fed in batches through the
// Appender with group commit, answering read-only SQL as bounded typed column
// batches, and trimmed by age and size. It is the only package in Orbit that
// links DuckDB (cgo), so only the satellite binary pays for it.
package store

import (
	"container/list"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	duckdb "github.com/duckdb/duckdb-go/v2"
)

// Defaults (docs/limits.md).
const (
	DefaultFlushRows     = 8192
	DefaultFlushInterval = 200 * time.Millisecond
	// QueueBatches bounds batches waiting for a commit; Append blocks beyond.
	QueueBatches         = 64
	DefaultMaxAge        = 7 * 24 * time.Hour
	DefaultMaxStoreBytes = 4 << 30
	DefaultRetainEvery   = time.Minute
	// DefaultMaxQueries bounds statements running at once.
	DefaultMaxQueries = 8
)

// Config configures a store.
type Config struct {
	// Path is the database file; "" opens an in-memory store (tests only).
	Path string
	// FlushRows: a batch is committed once this many rows are pending.
	FlushRows int
	// FlushInterval: pending rows are committed at least this often.
	FlushInterval time.Duration
	// MaxAge: rows older than this are deleted.
	MaxAge time.Duration
	// MaxBytes: when the database uses more, the oldest rows are deleted.
	MaxBytes int64
	// RetainEvery is how often retention runs.
	RetainEvery time.Duration
	// MaxQueries bounds statements running at once; more get TOO_MANY_QUERIES.
	MaxQueries int
	// Threads for DuckDB; 0 = DefaultThreads().
	Threads int
	// MemoryLimit for DuckDB, e.g. "1GB"; "" = its default (80 % of RAM).
	MemoryLimit string
}

func (c *Config) defaults() {
	if c.FlushRows <= 0 {
		c.FlushRows = DefaultFlushRows
	}
	if c.FlushInterval <= 0 {
		c.FlushInterval = DefaultFlushInterval
	}
	if c.MaxAge <= 0 {
		c.MaxAge = DefaultMaxAge
	}
	if c.MaxBytes <= 0 {
		c.MaxBytes = DefaultMaxStoreBytes
	}
	if c.RetainEvery <= 0 {
		c.RetainEvery = DefaultRetainEvery
	}
	if c.MaxQueries <= 0 {
		c.MaxQueries = DefaultMaxQueries
	}
	if c.Threads <= 0 {
		c.Threads = DefaultThreads()
	}
}

// DefaultThreads is DuckDB's thread count unless configured: half the CPUs
// this process may use (GOMAXPROCS, which follows a container's CPU limit),
// at least one. DuckDB's own default is every core; a satellite shares its
// host with the workload it watches, and with worker threads DuckDB wakes
// them for every statement while the calling thread waits busily, which on
// a small host takes the core the agent's network path needs: on 2 CPUs a
// SELECT 1 costs 80 µs with 2 threads against 48 µs with 1, and the query
// path's 8-client rate rose from ≈0.62× to ≈0.72× of the raw relay
// (docs/benchmarks.md). Big scans on bigger hosts keep parallel workers.
func DefaultThreads() int {
	return max(1, runtime.GOMAXPROCS(0)/2)
}

// Store is an open database.
type Store struct {
	cfg  Config
	log  *slog.Logger
	db   *sql.DB
	pool connPool

	in     chan *pending
	quit   chan struct{}
	done   chan struct{}
	closed sync.Once
	err    error

	writerMu sync.Mutex // serialises retention passes
	// version moves after every commit and retention pass (MaxCachedStatements).
	version atomic.Uint64
	statsMu sync.Mutex
	stats   Stats
}

// Stats describe what the store holds.
type Stats struct {
	Rows   int64
	Bytes  int64
	Oldest time.Time
	Newest time.Time
}

// Open opens (creating if needed) the database and starts its writer. A
// database left by a crash is recovered from DuckDB's write-ahead log.
func Open(ctx context.Context, cfg Config, log *slog.Logger) (*Store, error) {
	cfg.defaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dsn := ""
	if cfg.Path != "" {
		if err := os.MkdirAll(filepath.Dir(cfg.Path), 0o750); err != nil {
			return nil, fmt.Errorf("store: %w", err)
		}
		dsn = cfg.Path
	}
	// Queries may read only this database: no files, no network, no
	// extensions, and no settings changes (the configuration is locked).
	opts := url.Values{}
	opts.Set("enable_external_access", "false")
	opts.Set("autoinstall_known_extensions", "false")
	opts.Set("autoload_known_extensions", "false")
	opts.Set("lock_configuration", "true")
	opts.Set("threads", strconv.Itoa(cfg.Threads))
	if cfg.MemoryLimit != "" {
		opts.Set("memory_limit", cfg.MemoryLimit)
	}
	connector, err := duckdb.NewConnector(dsn+"?"+opts.Encode(), nil)
	if err != nil {
		return nil, fmt.Errorf("store: open %q: %w", cfg.Path, err)
	}
	db := sql.OpenDB(connector)
	db.SetMaxIdleConns(cfg.MaxQueries + 2)
	s := &Store{
		cfg:  cfg,
		log:  log,
		db:   db,
		in:   make(chan *pending, 64),
		quit: make(chan struct{}),
		done: make(chan struct{}),
	}
	if err := s.migrate(ctx); err != nil {
		db.Close()
		return nil, err
	}
	if err := s.refreshStats(ctx); err != nil {
		db.Close()
		return nil, err
	}
	for range cfg.MaxQueries {
		c, err := db.Conn(ctx)
		if err != nil {
			s.closePool()
			db.Close()
			return nil, fmt.Errorf("store: query connection: %w", err)
		}
		s.pool.put(&queryConn{conn: c, stmts: map[string]*list.Element{}, order: list.New()})
	}
	wconn, err := db.Conn(ctx)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("store: writer connection: %w", err)
	}
	w, err := newWriter(s, wconn)
	if err != nil {
		wconn.Close()
		db.Close()
		return nil, err
	}
	go w.run()
	return s, nil
}

func (s *Store) migrate(ctx context.Context) error {
	for _, t := range Tables {
		if _, err := s.db.ExecContext(ctx, t.DDL); err != nil {
			return fmt.Errorf("store: create %s: %w", t.Name, err)
		}
	}
	return nil
}

// Close commits pending rows, stops the writer and closes the database
// (checkpointing it).
func (s *Store) Close() error {
	s.closed.Do(func() {
		close(s.quit)
		<-s.done
		s.closePool()
		if err := s.db.Close(); err != nil {
			s.err = errors.Join(s.err, fmt.Errorf("store: close: %w", err))
		}
	})
	return s.err
}

// Stats returns the figures of the last refresh (after each commit and
// retention pass).
func (s *Store) Stats() Stats {
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	return s.stats
}

func (s *Store) refreshStats(ctx context.Context) error {
	var st Stats
	for _, t := range Tables {
		var n int64
		var lo, hi sql.NullTime
		q := fmt.Sprintf("SELECT count(*), min(%[1]s), max(%[1]s) FROM %[2]s", t.TimeColumn, t.Name)
		if err := s.db.QueryRowContext(ctx, q).Scan(&n, &lo, &hi); err != nil {
			return fmt.Errorf("store: stats %s: %w", t.Name, err)
		}
		st.Rows += n
		if lo.Valid && (st.Oldest.IsZero() || lo.Time.Before(st.Oldest)) {
			st.Oldest = lo.Time
		}
		if hi.Valid && hi.Time.After(st.Newest) {
			st.Newest = hi.Time
		}
	}
	b, err := s.usedBytes(ctx)
	if err != nil {
		return err
	}
	st.Bytes = b
	s.statsMu.Lock()
	s.stats = st
	s.statsMu.Unlock()
	return nil
}

// usedBytes is the database's size in used blocks (plus WAL), the figure
// size retention bounds.
func (s *Store) usedBytes(ctx context.Context) (int64, error) {
	var blockSize, used int64
	var wal string
	err := s.db.QueryRowContext(ctx,
		"SELECT block_size, used_blocks, wal_size FROM pragma_database_size() WHERE database_name = current_database()").
		Scan(&blockSize, &used, &wal)
	if err != nil {
		return 0, fmt.Errorf("store: database size: %w", err)
	}
	return blockSize*used + parseSize(wal), nil
}

// MaxCachedStatements bounds the prepared statements kept per query
// connection (repeated queries, e.g. dashboards, skip DuckDB's planner).
//
// A cached statement is used only while the data is as it was when it was
// prepared: DuckDB plans with the tables' statistics (a filter no stored row
// can match becomes an empty result), and it does not re-plan a prepared
// statement when rows are added. Every commit and retention pass moves the
// store's data version, and a statement prepared at an older version is
// prepared again (TestCachedStatementSeesNewRows).
const MaxCachedStatements = 32

// queryConn is one pooled DuckDB connection with its prepared statements.
type queryConn struct {
	conn  *sql.Conn
	stmts map[string]*list.Element
	order *list.List // front = most recently used
}

type cachedStmt struct {
	key     string
	stmt    *duckdb.Stmt
	version uint64 // the store's data version when it was prepared
}

// get returns the statement cached for key if it was prepared at the data
// version given; one prepared earlier is dropped.
func (q *queryConn) get(key string, version uint64) (*duckdb.Stmt, bool) {
	e, ok := q.stmts[key]
	if !ok {
		return nil, false
	}
	c := e.Value.(*cachedStmt)
	if c.version != version {
		q.remove(e)
		return nil, false
	}
	q.order.MoveToFront(e)
	return c.stmt, true
}

func (q *queryConn) put(key string, stmt *duckdb.Stmt, version uint64) {
	q.stmts[key] = q.order.PushFront(&cachedStmt{key: key, stmt: stmt, version: version})
	for q.order.Len() > MaxCachedStatements {
		q.remove(q.order.Back())
	}
}

func (q *queryConn) drop(key string) {
	if e, ok := q.stmts[key]; ok {
		q.remove(e)
	}
}

func (q *queryConn) remove(e *list.Element) {
	c := q.order.Remove(e).(*cachedStmt)
	delete(q.stmts, c.key)
	_ = c.stmt.Close()
}

func (s *Store) closePool() {
	for {
		q := s.pool.get()
		if q == nil {
			return
		}
		for q.order.Len() > 0 {
			q.remove(q.order.Back())
		}
		_ = q.conn.Close()
	}
}

// connPool holds the idle query connections, last in first out: a lone
// query stream keeps using the connection (and the DuckDB state) it used
// last, rather than cycling through all of them. (Its effect on latency
// was not measured apart from the other changes of 2026-11-29.)
type connPool struct {
	mu   sync.Mutex
	idle []*queryConn
}

// get returns an idle connection, or nil when every one is in use.
func (p *connPool) get() *queryConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(p.idle)
	if n == 0 {
		return nil
	}
	q := p.idle[n-1]
	p.idle = p.idle[:n-1]
	return q
}

func (p *connPool) put(q *queryConn) {
	p.mu.Lock()
	p.idle = append(p.idle, q)
	p.mu.Unlock()
}
