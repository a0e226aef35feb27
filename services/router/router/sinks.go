package router

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"connectrpc.com/connect"
	collogspb "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	logspb "go.opentelemetry.io/proto/otlp/logs/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	"google.golang.org/protobuf/proto"

	logbrokerv1 "github.com/orbitplane/orbit/proto/orbit/logbroker/v1"
	"github.com/orbitplane/orbit/proto/orbit/logbroker/v1/logbrokerv1connect"
)

// Sink writes a batch of encoded events and returns once they are durable
// on its side (a file synced, a 2xx answer, a broker ack): only then does
// the router move its cursor.
type Sink interface {
	Write(ctx context.Context, events []Out) error
	Close() error
}

// Defaults of sinks (docs/limits.md).
const (
	DefaultFileMaxBytes = 64 << 20
	DefaultFileMaxFiles = 5
	DefaultHTTPTimeout  = 10 * time.Second
	// MaxHTTPBatch bounds the events of one HTTP or OTLP request.
	MaxHTTPBatch = 1000
)

type sinkDeps struct {
	stdout io.Writer
	http   *http.Client
	broker logbrokerv1connect.LogBrokerServiceClient
	ctx    func(context.Context) context.Context // adds the tenant
}

func newSink(name string, c SinkConfig, d sinkDeps) (Sink, error) {
	switch c.Type {
	case "file":
		return newFileSink(c)
	case "stdout":
		return &writerSink{w: d.stdout}, nil
	case "http":
		return &httpSink{url: c.URL, headers: c.Headers, timeout: orDefault(c.Timeout.Duration, DefaultHTTPTimeout), hc: d.http}, nil
	case "otlp":
		return &otlpSink{httpSink{url: c.URL, headers: c.Headers, timeout: orDefault(c.Timeout.Duration, DefaultHTTPTimeout), hc: d.http}}, nil
	case "stream":
		return &streamSink{stream: c.Stream, broker: d.broker, ctx: d.ctx}, nil
	}
	return nil, fmt.Errorf("sink %s: unknown type %q", name, c.Type)
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// fileSink appends JSON lines, rotating at maxBytes: path -> path.1 -> ...
// keeping maxFiles old files.
type fileSink struct {
	path     string
	maxBytes int64
	maxFiles int
	mu       sync.Mutex
	f        *os.File
	size     int64
}

func newFileSink(c SinkConfig) (*fileSink, error) {
	s := &fileSink{path: c.Path, maxBytes: c.MaxBytes, maxFiles: c.MaxFiles}
	if s.maxBytes <= 0 {
		s.maxBytes = DefaultFileMaxBytes
	}
	if s.maxFiles <= 0 {
		s.maxFiles = DefaultFileMaxFiles
	}
	if err := os.MkdirAll(filepath.Dir(s.path), 0o755); err != nil {
		return nil, err
	}
	return s, s.open()
}

func (s *fileSink) open() error {
	f, err := os.OpenFile(s.path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	fi, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return err
	}
	s.f, s.size = f, fi.Size()
	return nil
}

func (s *fileSink) rotate() error {
	if err := s.f.Close(); err != nil {
		return err
	}
	for i := s.maxFiles - 1; i >= 1; i-- {
		_ = os.Rename(s.path+"."+strconv.Itoa(i), s.path+"."+strconv.Itoa(i+1))
	}
	_ = os.Remove(s.path + "." + strconv.Itoa(s.maxFiles+1))
	if err := os.Rename(s.path, s.path+".1"); err != nil {
		return err
	}
	return s.open()
}

func (s *fileSink) Write(_ context.Context, events []Out) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var buf bytes.Buffer
	flush := func() error {
		if buf.Len() == 0 {
			return nil
		}
		n, err := s.f.Write(buf.Bytes())
		s.size += int64(n)
		buf.Reset()
		if err != nil {
			return err
		}
		return s.f.Sync()
	}
	for _, e := range events {
		if s.size+int64(buf.Len()+len(e.Data)+1) > s.maxBytes && s.size+int64(buf.Len()) > 0 {
			if err := flush(); err != nil {
				return err
			}
			if err := s.rotate(); err != nil {
				return err
			}
		}
		buf.Write(e.Data)
		buf.WriteByte('\n')
	}
	return flush()
}

func (s *fileSink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.f.Close()
}

type writerSink struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *writerSink) Write(_ context.Context, events []Out) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var buf bytes.Buffer
	for _, e := range events {
		buf.Write(e.Data)
		buf.WriteByte('\n')
	}
	_, err := s.w.Write(buf.Bytes())
	return err
}

func (s *writerSink) Close() error { return nil }

// httpSink POSTs JSON arrays of events; a 2xx answer acknowledges.
type httpSink struct {
	url     string
	headers map[string]string
	timeout time.Duration
	hc      *http.Client
}

func (s *httpSink) post(ctx context.Context, contentType string, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", contentType)
	for k, v := range s.headers {
		req.Header.Set(k, v)
	}
	resp, err := s.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s answered %s", s.url, resp.Status)
	}
	return nil
}

func (s *httpSink) Write(ctx context.Context, events []Out) error {
	for start := 0; start < len(events); start += MaxHTTPBatch {
		part := events[start:min(start+MaxHTTPBatch, len(events))]
		var buf bytes.Buffer
		buf.WriteByte('[')
		for i, e := range part {
			if i > 0 {
				buf.WriteByte(',')
			}
			buf.Write(e.Data)
		}
		buf.WriteByte(']')
		if err := s.post(ctx, "application/json", buf.Bytes()); err != nil {
			return err
		}
	}
	return nil
}

func (s *httpSink) Close() error { return nil }

// otlpSink sends OTLP/HTTP logs (protobuf), one resource per service.
type otlpSink struct{ httpSink }

var severity = map[string]logspb.SeverityNumber{
	"DEBUG": logspb.SeverityNumber_SEVERITY_NUMBER_DEBUG, "INFO": logspb.SeverityNumber_SEVERITY_NUMBER_INFO,
	"WARN": logspb.SeverityNumber_SEVERITY_NUMBER_WARN, "ERROR": logspb.SeverityNumber_SEVERITY_NUMBER_ERROR,
}

func (s *otlpSink) Write(ctx context.Context, events []Out) error {
	for start := 0; start < len(events); start += MaxHTTPBatch {
		byService := map[string]*logspb.ScopeLogs{}
		req := &collogspb.ExportLogsServiceRequest{}
		for _, o := range events[start:min(start+MaxHTTPBatch, len(events))] {
			e, err := decode(o.Data)
			if err != nil {
				continue // events come from the engine, always JSON
			}
			svc := str(e["service"])
			sl := byService[svc]
			if sl == nil {
				sl = &logspb.ScopeLogs{}
				byService[svc] = sl
				req.ResourceLogs = append(req.ResourceLogs, &logspb.ResourceLogs{
					Resource:  &resourcepb.Resource{Attributes: []*commonpb.KeyValue{kv("service.name", svc)}},
					ScopeLogs: []*logspb.ScopeLogs{sl},
				})
			}
			rec := &logspb.LogRecord{
				SeverityText: str(e["level"]), SeverityNumber: severity[str(e["level"])],
				Body: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: str(e["message"])}},
			}
			if t, err := time.Parse(time.RFC3339Nano, str(e["time"])); err == nil {
				rec.TimeUnixNano = uint64(t.UnixNano())
			}
			if id, err := hex.DecodeString(str(e["trace_id"])); err == nil && len(id) == 16 {
				rec.TraceId = id
			}
			if id, err := hex.DecodeString(str(e["span_id"])); err == nil && len(id) == 8 {
				rec.SpanId = id
			}
			for k, v := range e {
				switch k {
				case "time", "level", "message", "trace_id", "span_id", "service":
					continue
				}
				rec.Attributes = append(rec.Attributes, kv(k, str(v)))
			}
			sl.LogRecords = append(sl.LogRecords, rec)
		}
		body, err := proto.Marshal(req)
		if err != nil {
			return err
		}
		if err := s.post(ctx, "application/x-protobuf", body); err != nil {
			return err
		}
	}
	return nil
}

func kv(k, v string) *commonpb.KeyValue {
	return &commonpb.KeyValue{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: v}}}
}

// streamSink publishes to another log broker stream of the tenant.
type streamSink struct {
	stream  string
	broker  logbrokerv1connect.LogBrokerServiceClient
	ctx     func(context.Context) context.Context
	created bool
}

func (s *streamSink) Write(ctx context.Context, events []Out) error {
	ctx = s.ctx(ctx)
	if !s.created {
		_, err := s.broker.CreateStream(ctx, connect.NewRequest(&logbrokerv1.CreateStreamRequest{Config: &logbrokerv1.StreamConfig{Name: s.stream, Subject: s.stream + ".>"}}))
		if err != nil && connect.CodeOf(err) != connect.CodeAlreadyExists {
			return err
		}
		s.created = true
	}
	for start := 0; start < len(events); start += MaxHTTPBatch {
		req := &logbrokerv1.PublishBatchRequest{Stream: s.stream}
		for _, e := range events[start:min(start+MaxHTTPBatch, len(events))] {
			var svc struct {
				Service string `json:"service"`
			}
			_ = json.Unmarshal(e.Data, &svc)
			bm := &logbrokerv1.BatchMessage{Subject: s.stream + "." + token(svc.Service), Value: e.Data}
			if e.Offset > 0 {
				// A batch redelivered after a crash is stored once.
				bm.DedupId = fmt.Sprintf("router/%s/%d", e.Source, e.Offset)
			}
			req.Messages = append(req.Messages, bm)
		}
		if _, err := s.broker.PublishBatch(ctx, connect.NewRequest(req)); err != nil {
			return err
		}
	}
	return nil
}

func (s *streamSink) Close() error { return nil }

func token(s string) string {
	if s == "" {
		return "unknown"
	}
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			b[i] = '_'
		}
	}
	return string(b)
}
