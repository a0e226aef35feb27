package store

import (
	"strconv"
	"strings"
	"time"
)

// Table describes one telemetry table (docs/satellite.md lists the columns).
type Table struct {
	Name       string
	TimeColumn string
	DDL        string
	Columns    []string
}

// The tables every satellite has. Attributes are JSON text.
var (
	LogsTable = Table{
		Name:       "logs",
		TimeColumn: "time",
		DDL: `CREATE TABLE IF NOT EXISTS logs (
			time TIMESTAMP NOT NULL,
			service VARCHAR,
			severity VARCHAR,
			body VARCHAR,
			trace_id VARCHAR,
			span_id VARCHAR,
			attributes VARCHAR,
			source VARCHAR)`,
		Columns: []string{"time", "service", "severity", "body", "trace_id", "span_id", "attributes", "source"},
	}
	SpansTable = Table{
		Name:       "spans",
		TimeColumn: "start_time",
		DDL: `CREATE TABLE IF NOT EXISTS spans (
			start_time TIMESTAMP NOT NULL,
			duration_ns BIGINT,
			trace_id VARCHAR,
			span_id VARCHAR,
			parent_span_id VARCHAR,
			service VARCHAR,
			name VARCHAR,
			kind VARCHAR,
			status VARCHAR,
			attributes VARCHAR)`,
		Columns: []string{"start_time", "duration_ns", "trace_id", "span_id", "parent_span_id", "service", "name", "kind", "status", "attributes"},
	}
	MetricsTable = Table{
		Name:       "metrics",
		TimeColumn: "time",
		DDL: `CREATE TABLE IF NOT EXISTS metrics (
			time TIMESTAMP NOT NULL,
			service VARCHAR,
			name VARCHAR,
			kind VARCHAR,
			value DOUBLE,
			unit VARCHAR,
			attributes VARCHAR)`,
		Columns: []string{"time", "service", "name", "kind", "value", "unit", "attributes"},
	}
	Tables = []Table{LogsTable, SpansTable, MetricsTable}
)

// Log is one row of logs.
type Log struct {
	Time       time.Time
	Service    string
	Severity   string
	Body       string
	TraceID    string
	SpanID     string
	Attributes string
	Source     string
}

// Span is one row of spans.
type Span struct {
	Start        time.Time
	Duration     time.Duration
	TraceID      string
	SpanID       string
	ParentSpanID string
	Service      string
	Name         string
	Kind         string
	Status       string
	Attributes   string
}

// Metric is one row of metrics.
type Metric struct {
	Time       time.Time
	Service    string
	Name       string
	Kind       string
	Value      float64
	Unit       string
	Attributes string
}

// Batch is rows for any of the tables, committed together.
type Batch struct {
	Logs    []Log
	Spans   []Span
	Metrics []Metric
}

// Len is the number of rows in the batch.
func (b *Batch) Len() int { return len(b.Logs) + len(b.Spans) + len(b.Metrics) }

// parseSize reads DuckDB's human-readable sizes ("0 bytes", "1.5 MiB").
func parseSize(s string) int64 {
	f := strings.Fields(s)
	if len(f) != 2 {
		return 0
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return 0
	}
	mult := map[string]float64{
		"bytes": 1, "byte": 1, "B": 1,
		"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40,
		"KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12,
	}[f[1]]
	return int64(v * mult)
}
