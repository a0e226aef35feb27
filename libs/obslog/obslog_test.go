package obslog_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/orbitplane/orbit/libs/obslog"
	"github.com/orbitplane/orbit/libs/reqctx"
)

func TestLineCarriesSchemaAndContext(t *testing.T) {
	var buf bytes.Buffer
	log := obslog.New(&buf, obslog.Options{Service: "querybroker", Region: "spoke-1"})

	tp := sdktrace.NewTracerProvider()
	ctx, span := tp.Tracer("test").Start(context.Background(), "op")
	defer span.End()
	ctx = reqctx.MustWith(ctx, reqctx.Fields{RequestID: "r1", Tenant: "t1", Satellite: "s1", QueryID: "q1", User: "u1"})

	log.With("conn", 7).WithGroup("db").InfoContext(ctx, "query started", obslog.Event("query.started"), "rows", 3)

	var got map[string]any
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
		t.Fatalf("line is not JSON: %v: %s", err, buf.String())
	}
	want := map[string]any{
		"schema": obslog.SchemaVersion, "service": "querybroker", "region": "spoke-1",
		"level": "INFO", "message": "query started", "event": "query.started",
		"trace_id": span.SpanContext().TraceID().String(), "span_id": span.SpanContext().SpanID().String(),
		"request_id": "r1", "tenant": "t1", "satellite": "s1", "query_id": "q1", "user": "u1",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	attrs, _ := got["attrs"].(map[string]any)
	if attrs["conn"] != float64(7) || attrs["db.rows"] != float64(3) {
		t.Errorf("attrs = %v, want conn=7 and db.rows=3", attrs)
	}
	if _, ok := got["time"]; !ok {
		t.Error("no time field")
	}
}

func TestLevelFilters(t *testing.T) {
	var buf bytes.Buffer
	log := obslog.New(&buf, obslog.Options{Service: "x", Level: slog.LevelWarn})
	log.Info("dropped")
	if buf.Len() != 0 {
		t.Fatalf("info line written at warn level: %s", buf.String())
	}
	log.Warn("kept")
	if buf.Len() == 0 {
		t.Fatal("warn line not written")
	}
}

func TestValidate(t *testing.T) {
	var buf bytes.Buffer
	log := obslog.New(&buf, obslog.Options{Service: "svc", Region: "r1"})
	log.Info("hello", obslog.Event("x.y"), "k", 1, slog.Group("g", "a", "b"))
	log.Error("boom", "error", "bad")
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if err := obslog.Validate([]byte(line)); err != nil {
			t.Fatalf("our own line %s: %v", line, err)
		}
	}
	// Lines written outside obslog fail.
	var plain bytes.Buffer
	slog.New(slog.NewJSONHandler(&plain, nil)).Info("hi", "k", 1)
	for name, line := range map[string]string{
		"plain slog":       plain.String(),
		"text":             "2026/11/24 starting up",
		"missing service":  `{"time":"2026-11-24T00:00:00Z","level":"INFO","message":"m","schema":"orbit.log/v1"}`,
		"unknown field":    `{"time":"2026-11-24T00:00:00Z","level":"INFO","message":"m","schema":"orbit.log/v1","service":"s","k":1}`,
		"wrong schema":     `{"time":"2026-11-24T00:00:00Z","level":"INFO","message":"m","schema":"orbit.log/v2","service":"s"}`,
		"bad level":        `{"time":"2026-11-24T00:00:00Z","level":"LOUD","message":"m","schema":"orbit.log/v1","service":"s"}`,
		"bad time":         `{"time":"yesterday","level":"INFO","message":"m","schema":"orbit.log/v1","service":"s"}`,
		"attrs not object": `{"time":"2026-11-24T00:00:00Z","level":"INFO","message":"m","schema":"orbit.log/v1","service":"s","attrs":3}`,
		"id not string":    `{"time":"2026-11-24T00:00:00Z","level":"INFO","message":"m","schema":"orbit.log/v1","service":"s","tenant":7}`,
	} {
		if err := obslog.Validate([]byte(line)); err == nil {
			t.Errorf("%s: accepted %s", name, line)
		}
	}
}
