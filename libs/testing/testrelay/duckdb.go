package testrelay

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"runtime"
	"strconv"

	_ "github.com/duckdb/duckdb-go/v2" // the "duckdb" database/sql driver
)

// SelectOne opens a DuckDB database at path (created if needed) with the
// satellite's default thread count (half the CPUs this process may use, at
// least one) and returns a Work.Exec that runs a prepared SELECT 1 and reads
// its row — the statement the query path's tiny-query benchmark sends to the
// satellite. close closes the database.
func SelectOne(path string) (exec func(ctx context.Context) error, close func() error, err error) {
	threads := max(1, runtime.GOMAXPROCS(0)/2)
	db, err := sql.Open("duckdb", path+"?"+url.Values{"threads": {strconv.Itoa(threads)}}.Encode())
	if err != nil {
		return nil, nil, err
	}
	stmt, err := db.Prepare("SELECT 1")
	if err != nil {
		db.Close()
		return nil, nil, err
	}
	exec = func(ctx context.Context) error {
		var v int
		if err := stmt.QueryRowContext(ctx).Scan(&v); err != nil {
			return err
		}
		if v != 1 {
			return fmt.Errorf("SELECT 1 returned %d", v)
		}
		return nil
	}
	return exec, func() error { stmt.Close(); return db.Close() }, nil
}
