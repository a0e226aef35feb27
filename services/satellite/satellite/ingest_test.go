package satellite

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/orbitplane/orbit/libs/colbatch"
	"github.com/orbitplane/orbit/libs/testing/testwait"
	queryv1 "github.com/orbitplane/orbit/proto/orbit/query/v1"
	"github.com/orbitplane/orbit/services/satellite/internal/store"
	collogs "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	logspb "go.opentelemetry.io/proto/otlp/logs/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
)

type rows struct{ batches []*queryv1.ColumnBatch }

func (r *rows) Schema([]*queryv1.Column) error { return nil }
func (r *rows) Batch(b *queryv1.ColumnBatch, _ int) error {
	r.batches = append(r.batches, b)
	return nil
}

func query(t *testing.T, a *Agent, sql string) [][]any {
	t.Helper()
	var r rows
	if _, err := a.Store().Query(context.Background(), sql, store.Limits{}, &r); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	var out [][]any
	for _, b := range r.batches {
		out = append(out, colbatch.Rows(b)...)
	}
	return out
}

func startAgent(t *testing.T) (*Agent, *lineIngest) {
	t.Helper()
	dir := t.TempDir()
	cfg := Config{DataDir: dir, ConnectorURL: "http://127.0.0.1:1", DeployKey: "odk_x", Name: "t", BackoffMin: time.Hour}
	cfg.Ingest.TCPAddr = "127.0.0.1:0"
	cfg.Ingest.UnixSocket = filepath.Join(dir, "ingest.sock")
	cfg.Ingest.HostMetricsEvery = 50 * time.Millisecond
	a, err := New(context.Background(), cfg, Deps{})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	// Run starts the receivers; the line listener's address is read back.
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	var li *lineIngest
	testwait.For(t, "receivers up", 5*time.Second, func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		li = a.lines
		return li != nil
	})
	return a, li
}

func TestOTLPHTTPIngest(t *testing.T) {
	a, _ := startAgent(t)
	req := &collogs.ExportLogsServiceRequest{ResourceLogs: []*logspb.ResourceLogs{{
		Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{{Key: "service.name", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: "billing"}}}}},
		ScopeLogs: []*logspb.ScopeLogs{{LogRecords: []*logspb.LogRecord{{
			TimeUnixNano: uint64(time.Now().UnixNano()), SeverityText: "WARN",
			Body:    &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: "invoice late"}},
			TraceId: bytes.Repeat([]byte{0xab}, 16), SpanId: bytes.Repeat([]byte{0xcd}, 8),
		}}}},
	}}}
	pb, _ := proto.Marshal(req)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write(pb)
	_ = zw.Close()
	post := func(path, ct, enc string, body []byte) int {
		r, _ := http.NewRequest(http.MethodPost, a.URL()+path, bytes.NewReader(body))
		r.Header.Set("Content-Type", ct)
		if enc != "" {
			r.Header.Set("Content-Encoding", enc)
		}
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if c := post("/v1/logs", "application/x-protobuf", "gzip", gz.Bytes()); c != 200 {
		t.Fatalf("protobuf logs: %d", c)
	}
	// OTLP JSON: hex IDs, camelCase, string nanos.
	now := time.Now()
	traces := fmt.Sprintf(`{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"api"}}]},
	  "scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"GET /users",
	  "kind":2,"startTimeUnixNano":"%d","endTimeUnixNano":"%d","status":{"code":2}}]}]}]}`, now.UnixNano(), now.Add(3*time.Millisecond).UnixNano())
	if c := post("/v1/traces", "application/json", "", []byte(traces)); c != 200 {
		t.Fatalf("json traces: %d", c)
	}
	metrics := fmt.Sprintf(`{"resourceMetrics":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"api"}}]},
	  "scopeMetrics":[{"metrics":[{"name":"queue.depth","unit":"1","gauge":{"dataPoints":[{"timeUnixNano":"%d","asInt":"17"}]}}]}]}]}`, time.Now().UnixNano())
	if c := post("/v1/metrics", "application/json", "", []byte(metrics)); c != 200 {
		t.Fatalf("json metrics: %d", c)
	}
	// Acknowledged means stored: no waiting needed.
	if got := query(t, a, "SELECT service, severity, body, trace_id, span_id, source FROM logs WHERE source = 'otlp'"); len(got) != 1 ||
		got[0][0] != "billing" || got[0][1] != "WARN" || got[0][2] != "invoice late" || got[0][3] != strings.Repeat("ab", 16) {
		t.Fatalf("logs %v", got)
	}
	if got := query(t, a, "SELECT service, name, kind, status, duration_ns, trace_id FROM spans"); len(got) != 1 ||
		got[0][0] != "api" || got[0][2] != "SERVER" || got[0][3] != "ERROR" || got[0][4] != int64(3*time.Millisecond) || got[0][5] != "5b8efff798038103d269b633813fc60c" {
		t.Fatalf("spans %v", got)
	}
	if got := query(t, a, "SELECT name, value FROM metrics WHERE service = 'api'"); len(got) != 1 || got[0][1] != float64(17) {
		t.Fatalf("metrics %v", got)
	}
	// Bad input gets clear errors, not silence.
	if c := post("/v1/logs", "text/plain", "", []byte("x")); c != http.StatusUnsupportedMediaType {
		t.Errorf("text/plain: %d", c)
	}
	if c := post("/v1/logs", "application/json", "", []byte(`{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"traceId":"zz"}]}]}]}`)); c != http.StatusBadRequest {
		t.Errorf("bad hex ID: %d", c)
	}
	if c := post("/v1/logs", "application/x-protobuf", "", bytes.Repeat([]byte{0xff}, DefaultMaxIngestBytes+1)); c != http.StatusRequestEntityTooLarge {
		t.Errorf("oversized body: %d", c)
	}
}

func TestJSONLinesAndHostMetrics(t *testing.T) {
	a, li := startAgent(t)
	send := func(network, addr, text string) {
		c, err := net.Dial(network, addr)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = c.Write([]byte(text))
		c.Close()
	}
	send("tcp", li.tcpAddr(), `{"time":"2026-11-23T10:00:00Z","level":"error","msg":"disk full","service":"db","trace_id":"t1","node":"n7"}`+"\nplain text line\n")
	send("unix", filepath.Join(a.cfg.DataDir, "ingest.sock"), `{"message":"from the socket","service":"agent"}`+"\n")
	testwait.For(t, "three lines stored", 5*time.Second, func() bool {
		return len(query(t, a, "SELECT 1 FROM logs WHERE source = 'jsonl'")) == 3
	})
	got := query(t, a, "SELECT service, severity, body, trace_id, attributes FROM logs WHERE source = 'jsonl' ORDER BY body")
	if got[0][2] != "disk full" || got[0][1] != "ERROR" || got[0][0] != "db" || got[0][3] != "t1" || got[0][4] != `{"node":"n7"}` {
		t.Fatalf("json line %v", got[0])
	}
	if got[1][2] != "from the socket" || got[2][2] != "plain text line" {
		t.Fatalf("lines %v", got)
	}
	testwait.For(t, "host metrics", 5*time.Second, func() bool {
		return len(query(t, a, "SELECT 1 FROM metrics WHERE service = 'host' AND name = 'system.memory.total' AND value > 0")) > 0
	})
}
