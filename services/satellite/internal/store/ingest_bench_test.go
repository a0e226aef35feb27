package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	duckdb "github.com/duckdb/duckdb-go/v2"

	"github.com/orbitplane/orbit/libs/testing/testbench"
)

// BenchmarkIngest compares the store's ingest path (Append: batches from
// concurrent writers, group commit, durable on return) with DuckDB's raw
// Appender writing the same rows in one loop, in the same run
// (docs/benchmarks.md):
//
//	go test -run '^$' -bench Ingest -benchtime 1x ./services/satellite/internal/store/
func BenchmarkIngest(b *testing.B) {
	const rows = 500_000
	const batch = 1000
	start := time.Now().Add(-time.Hour)
	mk := func(i int) Log {
		return Log{Time: start.Add(time.Duration(i) * time.Microsecond), Service: "checkout", Severity: "INFO",
			Body: fmt.Sprintf("request %d handled in 12ms", i), TraceID: "4bf92f3577b34da6a3ce929d0e0e4736", SpanID: "00f067aa0ba902b7",
			Attributes: `{"http.route":"/cart","host.name":"web-1"}`, Source: "bench"}
	}
	var ratios, raws, stores []float64
	for range b.N {
		for range 3 {
			// Raw Appender.
			dir := b.TempDir()
			db, err := sql.Open("duckdb", filepath.Join(dir, "raw.duckdb"))
			if err != nil {
				b.Fatal(err)
			}
			if _, err := db.Exec(LogsTable.DDL); err != nil {
				b.Fatal(err)
			}
			conn, _ := db.Conn(context.Background())
			t0 := time.Now()
			err = conn.Raw(func(dc any) error {
				a, err := duckdb.NewAppenderFromConn(dc.(driver.Conn), "", "logs")
				if err != nil {
					return err
				}
				for i := range rows {
					l := mk(i)
					if err := a.AppendRow(l.Time, l.Service, l.Severity, l.Body, l.TraceID, l.SpanID, l.Attributes, l.Source); err != nil {
						return err
					}
				}
				return a.Close()
			})
			if err != nil {
				b.Fatal(err)
			}
			raw := float64(rows) / time.Since(t0).Seconds()
			conn.Close()
			db.Close()

			// The store: 4 writers, 1000-row batches, each waits for its commit.
			s, err := Open(context.Background(), Config{Path: filepath.Join(dir, "store.duckdb"), RetainEvery: time.Hour}, nil)
			if err != nil {
				b.Fatal(err)
			}
			t0 = time.Now()
			var wg sync.WaitGroup
			for w := range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for off := w * batch; off < rows; off += 4 * batch {
						bt := &Batch{}
						for i := off; i < off+batch && i < rows; i++ {
							bt.Logs = append(bt.Logs, mk(i))
						}
						if err := s.Append(context.Background(), bt); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			st := float64(rows) / time.Since(t0).Seconds()
			if err := s.Close(); err != nil {
				b.Fatal(err)
			}
			b.Logf("raw Appender %.0f rows/s, store ingest %.0f rows/s", raw, st)
			ratios, raws, stores = append(ratios, st/raw), append(raws, raw), append(stores, st)
		}
	}
	b.ReportMetric(testbench.Median(stores), "rows/s")
	b.ReportMetric(testbench.Median(raws), "raw_rows/s")
	b.ReportMetric(testbench.Median(ratios), "ratio")
}
