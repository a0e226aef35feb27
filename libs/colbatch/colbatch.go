// Package colbatch reads and describes the typed column batches query
// results travel in (orbit.query.v1.ColumnBatch): the type a DuckDB column
// maps to, and cell values for printing and tests.
package colbatch

import (
	"strings"
	"time"

	queryv1 "github.com/orbitplane/orbit/proto/orbit/query/v1"
)

// DuckDBType maps a DuckDB type name to the wire type. Types without an
// exact wire form (UBIGINT, HUGEINT, UUID, INTERVAL, LIST, STRUCT, MAP,
// ENUM, ...) travel as text, which keeps every value exact.
func DuckDBType(name string) queryv1.ColumnType {
	switch {
	case name == "BOOLEAN":
		return queryv1.ColumnType_COLUMN_TYPE_BOOL
	case name == "TINYINT", name == "SMALLINT", name == "INTEGER", name == "BIGINT",
		name == "UTINYINT", name == "USMALLINT", name == "UINTEGER":
		return queryv1.ColumnType_COLUMN_TYPE_INT64
	case name == "FLOAT", name == "DOUBLE", strings.HasPrefix(name, "DECIMAL"):
		return queryv1.ColumnType_COLUMN_TYPE_FLOAT64
	case name == "BLOB":
		return queryv1.ColumnType_COLUMN_TYPE_BYTES
	case strings.HasPrefix(name, "TIMESTAMP"), name == "DATE":
		return queryv1.ColumnType_COLUMN_TYPE_TIMESTAMP
	}
	return queryv1.ColumnType_COLUMN_TYPE_STRING
}

// IsNull reports whether row i of c is NULL.
func IsNull(c *queryv1.ColumnValues, i int) bool {
	nb := c.GetNullBitmap()
	return i/8 < len(nb) && nb[i/8]&(1<<(i%8)) != 0
}

// Value returns row i of c as bool, int64, float64, string, []byte or
// time.Time (UTC), or nil for NULL.
func Value(c *queryv1.ColumnValues, i int) any {
	if IsNull(c, i) {
		return nil
	}
	switch v := c.GetValues().(type) {
	case *queryv1.ColumnValues_Bools:
		return v.Bools.Values[i]
	case *queryv1.ColumnValues_Int64S:
		return v.Int64S.Values[i]
	case *queryv1.ColumnValues_Float64S:
		return v.Float64S.Values[i]
	case *queryv1.ColumnValues_Strings:
		return v.Strings.Values[i]
	case *queryv1.ColumnValues_Bytes:
		return v.Bytes.Values[i]
	case *queryv1.ColumnValues_Timestamps:
		return time.Unix(0, v.Timestamps.Values[i]).UTC()
	}
	return nil
}

// Rows returns the batch row by row.
func Rows(b *queryv1.ColumnBatch) [][]any {
	out := make([][]any, b.GetNumRows())
	for r := range out {
		row := make([]any, len(b.Columns))
		for c, col := range b.Columns {
			row[c] = Value(col, r)
		}
		out[r] = row
	}
	return out
}
