package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	queryv1 "github.com/orbitplane/orbit/proto/orbit/query/v1"
)

type collect struct {
	cols    []*queryv1.Column
	batches []*queryv1.ColumnBatch
	sizes   []int
	onBatch func() error
}

func (c *collect) Schema(cols []*queryv1.Column) error { c.cols = cols; return nil }
func (c *collect) Batch(b *queryv1.ColumnBatch, n int) error {
	c.batches = append(c.batches, b)
	c.sizes = append(c.sizes, n)
	if c.onBatch != nil {
		return c.onBatch()
	}
	return nil
}

func (c *collect) rows() int64 {
	var n int64
	for _, b := range c.batches {
		n += b.NumRows
	}
	return n
}

func open(t testing.TB, cfg Config) *Store {
	t.Helper()
	if cfg.Path == "" {
		cfg.Path = filepath.Join(t.TempDir(), "store.duckdb")
	}
	s, err := Open(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return s
}

func logs(n int, start time.Time, step time.Duration) *Batch {
	b := &Batch{}
	for i := range n {
		b.Logs = append(b.Logs, Log{
			Time: start.Add(time.Duration(i) * step), Service: fmt.Sprintf("svc-%d", i%3),
			Severity: "INFO", Body: fmt.Sprintf("line %d", i), Attributes: `{"k":1}`,
		})
	}
	return b
}

func TestAppendAndAggregate(t *testing.T) {
	s := open(t, Config{})
	ctx := context.Background()
	if err := s.Append(ctx, logs(3000, time.Now().Add(-time.Hour), time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	var c collect
	res, err := s.Query(ctx, "SELECT service, count(*) AS n FROM logs GROUP BY service ORDER BY service", Limits{}, &c)
	if err != nil {
		t.Fatal(err)
	}
	if res.Rows != 3 || len(c.cols) != 2 || c.cols[1].Type != queryv1.ColumnType_COLUMN_TYPE_INT64 {
		t.Fatalf("result %+v cols %v", res, c.cols)
	}
	got := c.batches[0].Columns[1].GetInt64S().Values
	if got[0] != 1000 || got[1] != 1000 || got[2] != 1000 {
		t.Fatalf("counts %v", got)
	}
	if names := c.batches[0].Columns[0].GetStrings().Values; names[0] != "svc-0" || names[2] != "svc-2" {
		t.Fatalf("names %v", names)
	}
}

func TestTypesAndNulls(t *testing.T) {
	s := open(t, Config{})
	var c collect
	_, err := s.Query(context.Background(), `SELECT true AS b, 42::INTEGER AS i, 1.5::DOUBLE AS f, 'x' AS s,
		TIMESTAMP '2026-01-02 03:04:05' AS ts, NULL::BIGINT AS n, 12.25::DECIMAL(10,2) AS d, '\xAA'::BLOB AS bl`, Limits{}, &c)
	if err != nil {
		t.Fatal(err)
	}
	want := []queryv1.ColumnType{1, 2, 3, 4, 6, 2, 3, 5}
	for i, col := range c.cols {
		if col.Type != want[i] {
			t.Errorf("column %s: type %v, want %v", col.Name, col.Type, want[i])
		}
	}
	b := c.batches[0]
	if ts := b.Columns[4].GetTimestamps().Values[0]; ts != time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC).UnixNano() {
		t.Errorf("timestamp %d", ts)
	}
	if nb := b.Columns[5].NullBitmap; len(nb) != 1 || nb[0]&1 != 1 {
		t.Errorf("null bitmap %v", nb)
	}
	if len(b.Columns[1].NullBitmap) != 0 {
		t.Errorf("non-null column has a bitmap")
	}
	if d := b.Columns[6].GetFloat64S().Values[0]; d != 12.25 {
		t.Errorf("decimal %v", d)
	}
}

func TestReadOnly(t *testing.T) {
	s := open(t, Config{})
	ctx := context.Background()
	if err := s.Append(ctx, logs(10, time.Now(), time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		"INSERT INTO logs (time) VALUES (now())",
		"DELETE FROM logs",
		"UPDATE logs SET body = 'x'",
		"DROP TABLE logs",
		"CREATE TABLE x (a INT)",
		"ATTACH '/tmp/other.duckdb' AS other",
		"SET threads = 1",
		"PRAGMA enable_profiling",
		"DELETE FROM logs; SELECT 1",
		"SELECT 1; DELETE FROM logs",
		"BEGIN TRANSACTION",
	} {
		_, err := s.Query(ctx, q, Limits{}, &collect{})
		if e := AsError(err); err == nil || e.Code != queryv1.QueryErrorCode_QUERY_ERROR_CODE_READ_ONLY {
			t.Errorf("%q: got %v, want READ_ONLY", q, err)
		}
	}
	// No file access at all, even through a SELECT.
	out := filepath.Join(t.TempDir(), "out.csv")
	for _, q := range []string{"SELECT * FROM read_csv('/etc/passwd')", "COPY logs TO '" + out + "'"} {
		_, err := s.Query(ctx, q, Limits{}, &collect{})
		if err == nil {
			t.Errorf("%q was allowed", q)
		}
	}
	if _, err := os.Stat(out); err == nil {
		t.Errorf("COPY wrote %s", out)
	}
	var c collect
	if _, err := s.Query(ctx, "SELECT count(*) FROM logs;", Limits{}, &c); err != nil {
		t.Fatal(err)
	}
	if n := c.batches[0].Columns[0].GetInt64S().Values[0]; n != 10 {
		t.Fatalf("rows after refused writes: %d, want 10", n)
	}
}

func TestBadSQL(t *testing.T) {
	s := open(t, Config{})
	_, err := s.Query(context.Background(), "SELEC nonsense", Limits{}, &collect{})
	e := AsError(err)
	if e.Code != queryv1.QueryErrorCode_QUERY_ERROR_CODE_INVALID_SQL || !strings.Contains(e.Message, "syntax error") {
		t.Fatalf("got %v (%v)", e.Code, e.Message)
	}
	_, err = s.Query(context.Background(), "SELECT nope FROM logs", Limits{}, &collect{})
	if e := AsError(err); e.Code != queryv1.QueryErrorCode_QUERY_ERROR_CODE_INVALID_SQL || !strings.Contains(e.Message, "nope") {
		t.Fatalf("got %v (%v)", e.Code, e.Message)
	}
}

func TestLimitsAndBatchSize(t *testing.T) {
	s := open(t, Config{})
	ctx := context.Background()
	q := "SELECT i, 'row ' || i::VARCHAR AS label FROM range(200000) t(i)"
	var c collect
	res, err := s.Query(ctx, q, Limits{MaxBatchBytes: 16 << 10}, &c)
	if err != nil {
		t.Fatal(err)
	}
	if res.Rows != 200000 || c.rows() != 200000 {
		t.Fatalf("rows %d / %d", res.Rows, c.rows())
	}
	for i, b := range c.batches {
		if size := proto.Size(b); size > 16<<10+512 {
			t.Fatalf("batch %d is %d bytes on the wire, limit 16 KiB", i, size)
		}
	}
	_, err = s.Query(ctx, q, Limits{MaxRows: 1000}, &collect{})
	if e := AsError(err); e.Code != queryv1.QueryErrorCode_QUERY_ERROR_CODE_ROW_LIMIT {
		t.Fatalf("row limit: %v", err)
	}
	_, err = s.Query(ctx, q, Limits{MaxBytes: 100 << 10}, &collect{})
	if e := AsError(err); e.Code != queryv1.QueryErrorCode_QUERY_ERROR_CODE_BYTE_LIMIT {
		t.Fatalf("byte limit: %v", err)
	}
}

func TestCancelStopsStatement(t *testing.T) {
	s := open(t, Config{})
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancel)
	start := time.Now()
	// Minutes of work if not interrupted.
	_, err := s.Query(ctx, "SELECT count(*) FROM range(1000000000000) a(x) WHERE x % 7 = 3", Limits{}, &collect{})
	if e := AsError(err); e.Code != queryv1.QueryErrorCode_QUERY_ERROR_CODE_CANCELED {
		t.Fatalf("got %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("cancel took %v", d)
	}
	dctx, dcancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer dcancel()
	_, err = s.Query(dctx, "SELECT count(*) FROM range(1000000000000) a(x) WHERE x % 7 = 3", Limits{}, &collect{})
	if e := AsError(err); e.Code != queryv1.QueryErrorCode_QUERY_ERROR_CODE_DEADLINE {
		t.Fatalf("got %v", err)
	}
}

func TestSinkErrorStopsQuery(t *testing.T) {
	s := open(t, Config{})
	boom := errors.New("client went away")
	c := collect{onBatch: func() error { return boom }}
	_, err := s.Query(context.Background(), "SELECT * FROM range(1000000)", Limits{MaxBatchBytes: 4096}, &c)
	if !errors.Is(err, boom) && AsError(err).Message != boom.Error() {
		t.Fatalf("got %v", err)
	}
	if len(c.batches) != 1 {
		t.Fatalf("%d batches after the sink failed", len(c.batches))
	}
}

func TestAgeRetention(t *testing.T) {
	s := open(t, Config{MaxAge: time.Hour})
	ctx := context.Background()
	old := logs(100, time.Now().Add(-3*time.Hour), time.Second)
	fresh := logs(50, time.Now().Add(-time.Minute), time.Millisecond)
	if err := s.Append(ctx, old); err != nil {
		t.Fatal(err)
	}
	if err := s.Append(ctx, fresh); err != nil {
		t.Fatal(err)
	}
	if err := s.Retain(ctx); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Rows != 50 || st.Oldest.Before(time.Now().Add(-time.Hour)) {
		t.Fatalf("stats after retention %+v", st)
	}
}

func TestSizeRetention(t *testing.T) {
	s := open(t, Config{MaxBytes: 4 << 20})
	ctx := context.Background()
	start := time.Now().Add(-time.Hour)
	for i := range 20 {
		b := logs(20000, start.Add(time.Duration(i)*time.Minute), time.Millisecond)
		for j := range b.Logs {
			b.Logs[j].Body = strings.Repeat(fmt.Sprintf("%d-%d ", i, j), 8)
		}
		if err := s.Append(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.refreshStats(ctx); err != nil {
		t.Fatal(err)
	}
	before := s.Stats()
	if err := s.Retain(ctx); err != nil {
		t.Fatal(err)
	}
	after := s.Stats()
	// The oldest rows went, in proportion to the overshoot; the newest stayed.
	wantGone := 1 - 0.9*float64(4<<20)/float64(before.Bytes)
	gone := 1 - float64(after.Rows)/float64(before.Rows)
	if before.Bytes <= 4<<20 || gone < wantGone-0.05 || gone > wantGone+0.05 || !after.Oldest.After(before.Oldest) {
		t.Fatalf("before %+v after %+v: %.2f of rows deleted, want %.2f", before, after, gone, wantGone)
	}
	if after.Newest != before.Newest {
		t.Fatalf("size retention removed the newest rows")
	}
}

// TestCrashRecovery appends in a child process that dies without closing the
// store, then reopens the file: every acknowledged row is there (WAL).
func TestCrashRecovery(t *testing.T) {
	if os.Getenv("ORBIT_STORE_CRASH_CHILD") != "" {
		s, err := Open(context.Background(), Config{Path: os.Getenv("ORBIT_STORE_CRASH_CHILD")}, nil)
		if err != nil {
			fmt.Println("open:", err)
			os.Exit(3)
		}
		if err := s.Append(context.Background(), logs(5000, time.Now(), time.Millisecond)); err != nil {
			fmt.Println("append:", err)
			os.Exit(3)
		}
		os.Exit(0) // no Close, no checkpoint: like a kill
	}
	path := filepath.Join(t.TempDir(), "crash.duckdb")
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashRecovery$")
	cmd.Env = append(os.Environ(), "ORBIT_STORE_CRASH_CHILD="+path)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	if _, err := os.Stat(path + ".wal"); err != nil {
		t.Fatalf("expected a WAL left behind: %v", err)
	}
	s := open(t, Config{Path: path})
	if st := s.Stats(); st.Rows != 5000 {
		t.Fatalf("rows after crash: %d, want 5000", st.Rows)
	}
}

// DuckDB runs with half the CPUs unless told otherwise, and with what it is
// told; a query sees the setting.
func TestThreads(t *testing.T) {
	threads := func(s *Store) int64 {
		var c collect
		if _, err := s.Query(context.Background(), "SELECT current_setting('threads')::BIGINT", Limits{}, &c); err != nil {
			t.Fatal(err)
		}
		return c.batches[0].Columns[0].GetInt64S().Values[0]
	}
	if got, want := threads(open(t, Config{})), int64(max(1, runtime.GOMAXPROCS(0)/2)); got != want {
		t.Errorf("default threads %d, want %d (half of GOMAXPROCS %d)", got, want, runtime.GOMAXPROCS(0))
	}
	if got := threads(open(t, Config{Threads: 3})); got != 3 {
		t.Errorf("threads %d, want the configured 3", got)
	}
}

// A statement the cache holds answers from the data as it is now, not as it
// was when the statement was prepared: DuckDB plans with the table's
// statistics, and a plan made while no row matched must not stay empty.
func TestCachedStatementSeesNewRows(t *testing.T) {
	s := open(t, Config{})
	ctx := context.Background()
	metric := func(service string, v float64) *Batch {
		return &Batch{Metrics: []Metric{{Time: time.Now(), Service: service, Name: "m", Kind: "gauge", Value: v}}}
	}
	count := func() int64 {
		t.Helper()
		var c collect
		if _, err := s.Query(ctx, "SELECT count(*) FROM metrics WHERE service = 'host' AND value > 100", Limits{}, &c); err != nil {
			t.Fatal(err)
		}
		return c.batches[0].Columns[0].GetInt64S().Values[0]
	}
	if err := s.Append(ctx, metric("app", 5)); err != nil {
		t.Fatal(err)
	}
	for range DefaultMaxQueries + 1 { // prepared and cached on every pooled connection while nothing matches
		if n := count(); n != 0 {
			t.Fatalf("count %d before the matching row", n)
		}
	}
	if err := s.Append(ctx, metric("host", 200)); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 1 {
		t.Fatalf("count %d after a matching row was stored, want 1: the cached statement answered from stale statistics", n)
	}
}
