package store

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"math"
	"math/big"
	"strings"
	"time"

	duckdb "github.com/duckdb/duckdb-go/v2"

	"github.com/orbitplane/orbit/libs/colbatch"
	queryv1 "github.com/orbitplane/orbit/proto/orbit/query/v1"
)

// Query limits (docs/limits.md).
const (
	DefaultMaxRows       = 10_000_000
	DefaultMaxBytes      = 1 << 30
	DefaultMaxBatchBytes = 64 << 10
	MinMaxBatchBytes     = 1 << 10
	MaxMaxBatchBytes     = 512 << 10
	// MaxBatchRows bounds one batch's rows whatever their size.
	MaxBatchRows = 65536
	// MaxSQLBytes bounds the statement text.
	MaxSQLBytes = 64 << 10
)

// Limits bound one query. Zero values take the defaults.
type Limits struct {
	MaxRows       int64
	MaxBytes      int64
	MaxBatchBytes int
}

func (l *Limits) defaults() {
	if l.MaxRows <= 0 {
		l.MaxRows = DefaultMaxRows
	}
	if l.MaxBytes <= 0 {
		l.MaxBytes = DefaultMaxBytes
	}
	if l.MaxBatchBytes <= 0 {
		l.MaxBatchBytes = DefaultMaxBatchBytes
	}
	l.MaxBatchBytes = min(max(l.MaxBatchBytes, MinMaxBatchBytes), MaxMaxBatchBytes)
}

// Error is a query failure with its code; Message is safe to show users.
type Error struct {
	Code    queryv1.QueryErrorCode
	Message string
}

func (e *Error) Error() string { return e.Message }

// Proto converts the error for a result frame.
func (e *Error) Proto() *queryv1.QueryError {
	return &queryv1.QueryError{Code: e.Code, Message: e.Message}
}

func errorf(code queryv1.QueryErrorCode, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// AsError maps any error from Query to an *Error.
func AsError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return errorf(queryv1.QueryErrorCode_QUERY_ERROR_CODE_DEADLINE, "query deadline exceeded")
	case errors.Is(err, context.Canceled):
		return errorf(queryv1.QueryErrorCode_QUERY_ERROR_CODE_CANCELED, "query canceled")
	}
	return errorf(queryv1.QueryErrorCode_QUERY_ERROR_CODE_INTERNAL, "%v", err)
}

// Sink receives a query's result: the schema once, then batches. Returning
// an error stops the statement.
type Sink interface {
	Schema(cols []*queryv1.Column) error
	Batch(b *queryv1.ColumnBatch, bytes int) error
}

// Result summarises a finished query.
type Result struct {
	Rows  int64
	Bytes int64
}

// Query runs one read-only statement and streams its result to sink in
// batches of at most MaxBatchBytes (estimated wire size). Writes, ATTACH,
// settings changes, PRAGMA and more than one statement are refused with
// READ_ONLY; parse and bind errors are INVALID_SQL; exceeding a limit stops
// the statement with ROW_LIMIT or BYTE_LIMIT. Canceling ctx interrupts the
// statement inside DuckDB.
func (s *Store) Query(ctx context.Context, text string, lim Limits, sink Sink) (Result, error) {
	lim.defaults()
	if strings.TrimSpace(text) == "" {
		return Result{}, errorf(queryv1.QueryErrorCode_QUERY_ERROR_CODE_INVALID_SQL, "empty SQL statement")
	}
	if len(text) > MaxSQLBytes {
		return Result{}, errorf(queryv1.QueryErrorCode_QUERY_ERROR_CODE_INVALID_SQL, "SQL is %d bytes; the limit is %d", len(text), MaxSQLBytes)
	}
	// duckdb-go's Prepare executes every statement but the last one, so a
	// second statement must never reach it: after trailing semicolons, any ';'
	// is refused, even inside a string literal (use chr(59) there).
	text = strings.TrimRight(strings.TrimSpace(text), "; \t\r\n")
	if strings.Contains(text, ";") {
		return Result{}, errorf(queryv1.QueryErrorCode_QUERY_ERROR_CODE_READ_ONLY,
			"only one statement per query is allowed: remove the ';' (inside a string literal, write chr(59))")
	}
	qc := s.pool.get()
	if qc == nil {
		return Result{}, errorf(queryv1.QueryErrorCode_QUERY_ERROR_CODE_TOO_MANY_QUERIES, "satellite is running %d queries, its limit", s.cfg.MaxQueries)
	}
	defer s.pool.put(qc)
	var res Result
	err := qc.conn.Raw(func(dc any) error {
		c, ok := dc.(*duckdb.Conn)
		if !ok {
			return fmt.Errorf("unexpected driver connection %T", dc)
		}
		key := fmt.Sprintf("%d\x00%s", lim.MaxRows, text)
		version := s.version.Load()
		stmt, cached := qc.get(key, version)
		if !cached {
			var wrapped bool
			var err error
			stmt, wrapped, err = prepare(ctx, c, text, lim.MaxRows)
			if err != nil {
				return err
			}
			if wrapped {
				qc.put(key, stmt, version)
			} else {
				defer stmt.Close()
			}
		}
		rows, err := stmt.QueryContext(ctx, nil)
		if err != nil {
			qc.drop(key)
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return errorf(queryv1.QueryErrorCode_QUERY_ERROR_CODE_INVALID_SQL, "%s", cleanDuckDBError(err))
		}
		defer rows.Close()
		res, err = stream(ctx, rows, lim, sink)
		return err
	})
	if err != nil {
		if ctx.Err() != nil {
			return res, AsError(ctx.Err())
		}
		return res, AsError(err)
	}
	return res, nil
}

// prepare returns the statement to run. duckdb-go (v2.10506) materialises a
// result before the first row can be read, so a SELECT runs wrapped in a
// LIMIT of one row over the row limit: DuckDB never builds more than that.
// Anything the wrapper cannot hold is prepared as written and must be a
// SELECT or EXPLAIN.
func prepare(ctx context.Context, c *duckdb.Conn, text string, maxRows int64) (*duckdb.Stmt, bool, error) {
	wrapped := fmt.Sprintf("SELECT * FROM (\n%s\n) LIMIT %d", text, maxRows+1)
	if ds, err := c.PrepareContext(ctx, wrapped); err == nil {
		stmt := ds.(*duckdb.Stmt)
		if typ, err := stmt.StatementType(); err == nil && typ == duckdb.STATEMENT_TYPE_SELECT && stmt.NumInput() == 0 {
			return stmt, true, nil
		}
		stmt.Close()
	}
	ds, err := c.PrepareContext(ctx, text)
	if err != nil {
		if ctx.Err() != nil {
			return nil, false, ctx.Err()
		}
		return nil, false, errorf(queryv1.QueryErrorCode_QUERY_ERROR_CODE_INVALID_SQL, "%s", cleanDuckDBError(err))
	}
	stmt := ds.(*duckdb.Stmt)
	typ, err := stmt.StatementType()
	if err != nil {
		stmt.Close()
		return nil, false, errorf(queryv1.QueryErrorCode_QUERY_ERROR_CODE_INVALID_SQL, "%s", cleanDuckDBError(err))
	}
	if typ != duckdb.STATEMENT_TYPE_SELECT && typ != duckdb.STATEMENT_TYPE_EXPLAIN {
		stmt.Close()
		return nil, false, errorf(queryv1.QueryErrorCode_QUERY_ERROR_CODE_READ_ONLY,
			"only SELECT queries are allowed (got a %s statement): satellites are read-only to queries", stmtTypeName(typ))
	}
	if stmt.NumInput() > 0 {
		stmt.Close()
		return nil, false, errorf(queryv1.QueryErrorCode_QUERY_ERROR_CODE_INVALID_SQL, "query has %d parameters; parameters are not supported", stmt.NumInput())
	}
	return stmt, false, nil
}

func stream(ctx context.Context, rows driver.Rows, lim Limits, sink Sink) (Result, error) {
	names := rows.Columns()
	tn, _ := rows.(driver.RowsColumnTypeDatabaseTypeName)
	cols := make([]*queryv1.Column, len(names))
	builders := make([]*builder, len(names))
	for i, n := range names {
		dbType := ""
		if tn != nil {
			dbType = tn.ColumnTypeDatabaseTypeName(i)
		}
		t := colbatch.DuckDBType(dbType)
		cols[i] = &queryv1.Column{Name: n, Type: t}
		builders[i] = newBuilder(t)
	}
	if err := sink.Schema(cols); err != nil {
		return Result{}, err
	}
	var res Result
	vals := make([]driver.Value, len(names))
	batchRows, batchBytes := 0, 0
	emit := func() error {
		if batchRows == 0 {
			return nil
		}
		b := &queryv1.ColumnBatch{NumRows: int64(batchRows), Columns: make([]*queryv1.ColumnValues, len(builders))}
		for i, bl := range builders {
			b.Columns[i] = bl.finish()
		}
		if err := sink.Batch(b, batchBytes); err != nil {
			return err
		}
		batchRows, batchBytes = 0, 0
		return nil
	}
	for {
		err := rows.Next(vals)
		if err == io.EOF {
			break
		}
		if err != nil {
			if ctx.Err() != nil {
				return res, ctx.Err()
			}
			return res, errorf(queryv1.QueryErrorCode_QUERY_ERROR_CODE_INVALID_SQL, "%s", cleanDuckDBError(err))
		}
		if res.Rows >= lim.MaxRows {
			return res, errorf(queryv1.QueryErrorCode_QUERY_ERROR_CODE_ROW_LIMIT,
				"result exceeds the row limit of %d; add a LIMIT or narrow the query", lim.MaxRows)
		}
		rowBytes := 0
		for i, v := range vals {
			rowBytes += builders[i].add(v, batchRows)
		}
		res.Rows++
		res.Bytes += int64(rowBytes)
		if res.Bytes > lim.MaxBytes {
			return res, errorf(queryv1.QueryErrorCode_QUERY_ERROR_CODE_BYTE_LIMIT,
				"result exceeds the byte limit of %d; select fewer columns or rows", lim.MaxBytes)
		}
		batchRows++
		batchBytes += rowBytes
		if batchBytes >= lim.MaxBatchBytes-rowBytes || batchRows >= MaxBatchRows {
			if err := emit(); err != nil {
				return res, err
			}
		}
	}
	return res, emit()
}

type builder struct {
	typ   queryv1.ColumnType
	nulls []byte
	bools []bool
	ints  []int64
	flts  []float64
	strs  []string
	blobs [][]byte
}

func newBuilder(t queryv1.ColumnType) *builder { return &builder{typ: t} }

// add appends v as row i and returns its estimated wire size.
func (b *builder) add(v driver.Value, i int) int {
	if v == nil {
		for len(b.nulls) <= i/8 {
			b.nulls = append(b.nulls, 0)
		}
		b.nulls[i/8] |= 1 << (i % 8)
	}
	switch b.typ {
	case queryv1.ColumnType_COLUMN_TYPE_BOOL:
		x, _ := v.(bool)
		b.bools = append(b.bools, x)
		return 1
	case queryv1.ColumnType_COLUMN_TYPE_INT64:
		b.ints = append(b.ints, toInt64(v))
		return 8
	case queryv1.ColumnType_COLUMN_TYPE_FLOAT64:
		b.flts = append(b.flts, toFloat64(v))
		return 8
	case queryv1.ColumnType_COLUMN_TYPE_TIMESTAMP:
		t, _ := v.(time.Time)
		if v == nil {
			b.ints = append(b.ints, 0)
		} else {
			b.ints = append(b.ints, t.UnixNano())
		}
		return 8
	case queryv1.ColumnType_COLUMN_TYPE_BYTES:
		x, _ := v.([]byte)
		b.blobs = append(b.blobs, x)
		return len(x) + 2
	default:
		s := toString(v)
		b.strs = append(b.strs, s)
		return len(s) + 2
	}
}

func (b *builder) finish() *queryv1.ColumnValues {
	cv := &queryv1.ColumnValues{NullBitmap: b.nulls}
	switch b.typ {
	case queryv1.ColumnType_COLUMN_TYPE_BOOL:
		cv.Values = &queryv1.ColumnValues_Bools{Bools: &queryv1.BoolValues{Values: b.bools}}
	case queryv1.ColumnType_COLUMN_TYPE_INT64:
		cv.Values = &queryv1.ColumnValues_Int64S{Int64S: &queryv1.Int64Values{Values: b.ints}}
	case queryv1.ColumnType_COLUMN_TYPE_FLOAT64:
		cv.Values = &queryv1.ColumnValues_Float64S{Float64S: &queryv1.Float64Values{Values: b.flts}}
	case queryv1.ColumnType_COLUMN_TYPE_TIMESTAMP:
		cv.Values = &queryv1.ColumnValues_Timestamps{Timestamps: &queryv1.Int64Values{Values: b.ints}}
	case queryv1.ColumnType_COLUMN_TYPE_BYTES:
		cv.Values = &queryv1.ColumnValues_Bytes{Bytes: &queryv1.BytesValues{Values: b.blobs}}
	default:
		cv.Values = &queryv1.ColumnValues_Strings{Strings: &queryv1.StringValues{Values: b.strs}}
	}
	// The batch owns these slices now; start fresh ones.
	*b = builder{typ: b.typ}
	return cv
}

func toInt64(v driver.Value) int64 {
	switch x := v.(type) {
	case int64:
		return x
	case int32:
		return int64(x)
	case int16:
		return int64(x)
	case int8:
		return int64(x)
	case uint8:
		return int64(x)
	case uint16:
		return int64(x)
	case uint32:
		return int64(x)
	case int:
		return int64(x)
	}
	return 0
}

func toFloat64(v driver.Value) float64 {
	switch x := v.(type) {
	case float64:
		return x
	case float32:
		return float64(x)
	case duckdb.Decimal:
		return x.Float64()
	case int64:
		return float64(x)
	case nil:
		return 0
	}
	return math.NaN()
}

func toString(v driver.Value) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case []byte:
		return string(x)
	case *big.Int:
		return x.String()
	case duckdb.UUID:
		return x.String()
	case *duckdb.UUID:
		return x.String()
	case time.Time:
		return x.UTC().Format(time.RFC3339Nano)
	}
	return fmt.Sprint(v)
}

// cleanDuckDBError drops the driver's prefixes so users see DuckDB's message.
func cleanDuckDBError(err error) string {
	msg := err.Error()
	for _, p := range []string{"database/sql/driver: ", "duckdb: "} {
		msg = strings.TrimPrefix(msg, p)
	}
	return msg
}

func stmtTypeName(t duckdb.StmtType) string {
	names := map[duckdb.StmtType]string{
		duckdb.STATEMENT_TYPE_INSERT: "INSERT", duckdb.STATEMENT_TYPE_UPDATE: "UPDATE",
		duckdb.STATEMENT_TYPE_DELETE: "DELETE", duckdb.STATEMENT_TYPE_CREATE: "CREATE",
		duckdb.STATEMENT_TYPE_DROP: "DROP", duckdb.STATEMENT_TYPE_ALTER: "ALTER",
		duckdb.STATEMENT_TYPE_ATTACH: "ATTACH", duckdb.STATEMENT_TYPE_DETACH: "DETACH",
		duckdb.STATEMENT_TYPE_SET: "SET", duckdb.STATEMENT_TYPE_VARIABLE_SET: "SET",
		duckdb.STATEMENT_TYPE_PRAGMA: "PRAGMA", duckdb.STATEMENT_TYPE_COPY: "COPY",
		duckdb.STATEMENT_TYPE_EXPORT: "EXPORT", duckdb.STATEMENT_TYPE_LOAD: "LOAD",
		duckdb.STATEMENT_TYPE_TRANSACTION: "transaction", duckdb.STATEMENT_TYPE_CALL: "CALL",
		duckdb.STATEMENT_TYPE_VACUUM: "VACUUM", duckdb.STATEMENT_TYPE_CREATE_FUNC: "CREATE FUNCTION",
		duckdb.STATEMENT_TYPE_MULTI: "multi-statement", duckdb.STATEMENT_TYPE_PREPARE: "PREPARE",
		duckdb.STATEMENT_TYPE_EXECUTE: "EXECUTE", duckdb.STATEMENT_TYPE_ANALYZE: "ANALYZE",
	}
	if n, ok := names[t]; ok {
		return n
	}
	return "non-SELECT"
}
