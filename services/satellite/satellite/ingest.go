package satellite

import (
	"bufio"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/orbitplane/orbit/libs/obslog"
	"github.com/orbitplane/orbit/services/satellite/internal/store"
	collogs "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	colmetrics "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
)

// Ingest limits (docs/limits.md).
const (
	DefaultMaxIngestBytes   = 8 << 20
	DefaultMaxLineBytes     = 1 << 20
	DefaultLineBatch        = 1000
	DefaultLineFlush        = 200 * time.Millisecond
	DefaultHostMetricsEvery = 10 * time.Second
	DefaultMaxLineConns     = 256
)

// IngestConfig configures the local receivers.
type IngestConfig struct {
	// MaxBytes bounds one OTLP request body (after decompression).
	MaxBytes int64
	// TCPAddr receives JSON lines over TCP; "" disables it.
	TCPAddr string
	// UnixSocket receives JSON lines; "" disables it.
	UnixSocket string
	// MaxLineBytes bounds one JSON line; a longer line closes its connection.
	MaxLineBytes int
	MaxConns     int
	// HostMetricsEvery samples host metrics; 0 disables.
	HostMetricsEvery time.Duration
}

// RegisterFlags defines the ingest flags.
func (c *IngestConfig) RegisterFlags(fs *flag.FlagSet) {
	fs.Int64Var(&c.MaxBytes, "ingest-max-bytes", DefaultMaxIngestBytes, "largest OTLP/HTTP request body, after decompression")
	fs.StringVar(&c.TCPAddr, "ingest-tcp", "", "host:port receiving JSON lines over TCP (empty: off)")
	fs.StringVar(&c.UnixSocket, "ingest-unix", "", "Unix socket path receiving JSON lines (empty: off)")
	fs.IntVar(&c.MaxLineBytes, "ingest-max-line-bytes", DefaultMaxLineBytes, "longest JSON line")
	fs.IntVar(&c.MaxConns, "ingest-max-conns", DefaultMaxLineConns, "concurrent JSON-line connections")
	fs.DurationVar(&c.HostMetricsEvery, "host-metrics-interval", DefaultHostMetricsEvery, "host metrics sampling interval (0: off)")
}

func (c *IngestConfig) defaults() {
	if c.MaxBytes <= 0 {
		c.MaxBytes = DefaultMaxIngestBytes
	}
	if c.MaxLineBytes <= 0 {
		c.MaxLineBytes = DefaultMaxLineBytes
	}
	if c.MaxConns <= 0 {
		c.MaxConns = DefaultMaxLineConns
	}
}

// mountIngest serves OTLP/HTTP on the agent's port: /v1/logs, /v1/traces,
// /v1/metrics, protobuf or JSON, optionally gzip'd.
func (a *Agent) mountIngest() {
	a.cfg.Ingest.defaults()
	a.srv.HandleHTTP("POST /v1/logs", a.otlpHandler(func() proto.Message { return &collogs.ExportLogsServiceRequest{} },
		func(m proto.Message) *store.Batch { return convertLogs(m.(*collogs.ExportLogsServiceRequest)) },
		&collogs.ExportLogsServiceResponse{}))
	a.srv.HandleHTTP("POST /v1/traces", a.otlpHandler(func() proto.Message { return &coltrace.ExportTraceServiceRequest{} },
		func(m proto.Message) *store.Batch { return convertTraces(m.(*coltrace.ExportTraceServiceRequest)) },
		&coltrace.ExportTraceServiceResponse{}))
	a.srv.HandleHTTP("POST /v1/metrics", a.otlpHandler(func() proto.Message { return &colmetrics.ExportMetricsServiceRequest{} },
		func(m proto.Message) *store.Batch { return convertMetrics(m.(*colmetrics.ExportMetricsServiceRequest)) },
		&colmetrics.ExportMetricsServiceResponse{}))
}

func (a *Agent) otlpHandler(newReq func() proto.Message, convert func(proto.Message) *store.Batch, okResp proto.Message) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
		if ct != "application/x-protobuf" && ct != "application/json" {
			http.Error(w, "Content-Type must be application/x-protobuf or application/json", http.StatusUnsupportedMediaType)
			return
		}
		var body io.Reader = r.Body
		switch r.Header.Get("Content-Encoding") {
		case "", "identity":
		case "gzip":
			zr, err := gzip.NewReader(r.Body)
			if err != nil {
				http.Error(w, "bad gzip body: "+err.Error(), http.StatusBadRequest)
				return
			}
			defer zr.Close()
			body = zr
		default:
			http.Error(w, "Content-Encoding must be gzip or identity", http.StatusUnsupportedMediaType)
			return
		}
		limit := a.cfg.Ingest.MaxBytes
		raw, err := io.ReadAll(io.LimitReader(body, limit+1))
		if err != nil {
			http.Error(w, "reading body: "+err.Error(), http.StatusBadRequest)
			return
		}
		if int64(len(raw)) > limit {
			http.Error(w, fmt.Sprintf("body exceeds %d bytes; send smaller batches", limit), http.StatusRequestEntityTooLarge)
			return
		}
		req := newReq()
		if ct == "application/json" {
			err = unmarshalOTLPJSON(raw, req)
		} else {
			err = proto.Unmarshal(raw, req)
		}
		if err != nil {
			http.Error(w, "bad OTLP payload: "+err.Error(), http.StatusBadRequest)
			return
		}
		batch := convert(req)
		// Acknowledged only once committed: a 200 means the rows are durable.
		if err := a.store.Append(r.Context(), batch); err != nil {
			a.log.Warn("ingest failed", "error", err)
			http.Error(w, "store unavailable: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		var out []byte
		if ct == "application/json" {
			out, _ = protojson.Marshal(okResp)
		} else {
			out, _ = proto.Marshal(okResp)
		}
		w.Header().Set("Content-Type", ct)
		_, _ = w.Write(out)
	}
}

// unmarshalOTLPJSON decodes OTLP's JSON encoding, which differs from
// protojson in one way: trace and span IDs are hex, not base64.
func unmarshalOTLPJSON(raw []byte, m proto.Message) error {
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return err
	}
	if err := hexIDsToBase64(v); err != nil {
		return err
	}
	fixed, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return protojson.UnmarshalOptions{DiscardUnknown: true}.Unmarshal(fixed, m)
}

var idFields = map[string]bool{"traceId": true, "spanId": true, "parentSpanId": true, "trace_id": true, "span_id": true, "parent_span_id": true}

func hexIDsToBase64(v any) error {
	switch x := v.(type) {
	case map[string]any:
		for k, val := range x {
			if s, ok := val.(string); ok && idFields[k] {
				b, err := decodeHex(s)
				if err != nil {
					return fmt.Errorf("%s: %w", k, err)
				}
				x[k] = b
				continue
			}
			if err := hexIDsToBase64(val); err != nil {
				return err
			}
		}
	case []any:
		for _, e := range x {
			if err := hexIDsToBase64(e); err != nil {
				return err
			}
		}
	}
	return nil
}

// decodeHex turns a hex ID into the base64 text protojson expects.
func decodeHex(s string) (string, error) {
	b, err := hex.DecodeString(s)
	if err != nil {
		return "", fmt.Errorf("not a hex ID: %q", s)
	}
	return base64.StdEncoding.EncodeToString(b), nil
}

// lineIngest receives JSON lines on TCP and/or a Unix socket.
type lineIngest struct {
	listeners []net.Listener
	wg        sync.WaitGroup
}

func (li *lineIngest) close() {
	for _, l := range li.listeners {
		_ = l.Close()
	}
	li.wg.Wait()
}

func (a *Agent) startIngest(ctx context.Context, wg *sync.WaitGroup) (*lineIngest, error) {
	li := &lineIngest{}
	cfg := a.cfg.Ingest
	if cfg.TCPAddr != "" {
		l, err := net.Listen("tcp", cfg.TCPAddr)
		if err != nil {
			return nil, fmt.Errorf("ingest tcp: %w", err)
		}
		li.listeners = append(li.listeners, l)
	}
	if cfg.UnixSocket != "" {
		_ = os.Remove(cfg.UnixSocket)
		l, err := net.Listen("unix", cfg.UnixSocket)
		if err != nil {
			li.close()
			return nil, fmt.Errorf("ingest unix socket: %w", err)
		}
		li.listeners = append(li.listeners, l)
	}
	sem := make(chan struct{}, cfg.MaxConns)
	for _, l := range li.listeners {
		li.wg.Add(1)
		go func() {
			defer li.wg.Done()
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				select {
				case sem <- struct{}{}:
				default:
					_, _ = c.Write([]byte("too many connections\n"))
					_ = c.Close()
					continue
				}
				li.wg.Add(1)
				go func() {
					defer li.wg.Done()
					defer func() { <-sem }()
					a.serveLines(ctx, c)
				}()
			}
		}()
	}
	if cfg.HostMetricsEvery > 0 {
		wg.Add(1)
		go func() { defer wg.Done(); a.sampleHost(ctx, cfg.HostMetricsEvery) }()
	}
	return li, nil
}

// LineAddr returns the bound JSON-line TCP address, if any (tests).
func (li *lineIngest) tcpAddr() string {
	for _, l := range li.listeners {
		if l.Addr().Network() == "tcp" {
			return l.Addr().String()
		}
	}
	return ""
}

func (a *Agent) serveLines(ctx context.Context, c net.Conn) {
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { _ = c.Close() })
	defer stop()
	sc := bufio.NewScanner(c)
	sc.Buffer(make([]byte, 64<<10), a.cfg.Ingest.MaxLineBytes)
	lines := make(chan string, DefaultLineBatch)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(DefaultLineFlush)
		defer t.Stop()
		b := &store.Batch{}
		flush := func() {
			if len(b.Logs) == 0 {
				return
			}
			if err := a.store.Append(context.Background(), b); err != nil {
				a.log.Warn("line ingest failed", "error", err, "lines", len(b.Logs))
			}
			b = &store.Batch{}
		}
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					flush()
					return
				}
				b.Logs = append(b.Logs, parseLine(l, time.Now()))
				if len(b.Logs) >= DefaultLineBatch {
					flush()
				}
			case <-t.C:
				flush()
			}
		}
	}()
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); line != "" {
			lines <- line
		}
	}
	close(lines)
	<-done
	if err := sc.Err(); err != nil && !errors.Is(err, net.ErrClosed) {
		a.log.Warn("JSON-line connection closed", obslog.Event("satellite.ingest_line_error"), "error", err, "remote", c.RemoteAddr().String())
		_, _ = c.Write([]byte("error: " + err.Error() + "\n"))
	}
}

// parseLine maps a JSON line to a log row: well-known fields become columns,
// the rest attributes. A line that is not a JSON object is kept as its body.
func parseLine(line string, now time.Time) store.Log {
	var m map[string]any
	if err := json.Unmarshal([]byte(line), &m); err != nil || m == nil {
		return store.Log{Time: now, Severity: "INFO", Body: line, Source: "jsonl"}
	}
	l := store.Log{Time: now, Severity: "INFO", Source: "jsonl"}
	take := func(keys ...string) string {
		for _, k := range keys {
			if v, ok := m[k]; ok {
				delete(m, k)
				if s, ok := v.(string); ok {
					return s
				}
				return fmt.Sprint(v)
			}
		}
		return ""
	}
	if ts := take("time", "timestamp", "ts", "@timestamp"); ts != "" {
		if t, err := time.Parse(time.RFC3339Nano, ts); err == nil {
			l.Time = t
		}
	}
	if s := take("level", "severity", "lvl"); s != "" {
		l.Severity = strings.ToUpper(s)
	}
	l.Body = take("message", "msg", "body")
	l.Service = take("service", "service.name")
	l.TraceID = take("trace_id", "traceId")
	l.SpanID = take("span_id", "spanId")
	if len(m) > 0 {
		b, _ := json.Marshal(m)
		l.Attributes = string(b)
	}
	return l
}
