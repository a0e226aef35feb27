// Package collector is the log collector, a dumb pipe (seed: the
// observability pipeline's data collector): it reads container log files
// (following rotation and truncation), a Unix socket and stdin, wraps lines
// that are not JSON in the log schema, and ships them in batches to the
// log broker. A position is saved only after the broker acknowledged the
// batch (at-least-once; the batch's dedup IDs make a retry store once).
// When the broker is slow or down the collector waits instead of dropping:
// files are their own buffer, and socket and stdin lines go through a
// bounded on-disk spool whose writers block when it is full
// (docs/collector.md).
package collector

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/orbitplane/orbit/libs/connectclient"
	"github.com/orbitplane/orbit/libs/connectserver"
	"github.com/orbitplane/orbit/libs/obslog"
	"github.com/orbitplane/orbit/libs/reqctx"
	"github.com/orbitplane/orbit/libs/retry"
	"github.com/orbitplane/orbit/libs/svcmain"
	logbrokerv1 "github.com/orbitplane/orbit/proto/orbit/logbroker/v1"
	"github.com/orbitplane/orbit/proto/orbit/logbroker/v1/logbrokerv1connect"
)

// Defaults (docs/limits.md).
const (
	DefaultStream       = "orbit-logs"
	DefaultBatchLines   = 500
	DefaultBatchBytes   = 1 << 20
	DefaultPollEvery    = 200 * time.Millisecond
	DefaultMaxLineBytes = 256 << 10
	DefaultSpoolBytes   = 256 << 20
	DefaultStreamMaxAge = 24 * time.Hour
	spoolSegmentBytes   = 16 << 20
	maxBackoff          = 10 * time.Second
)

// Config configures a collector.
type Config struct {
	Server connectserver.Config
	// Files are glob patterns of log files to follow.
	Files []string
	// Socket, if set, is a Unix socket path accepting newline-delimited lines.
	Socket string
	// Stdin reads lines from standard input.
	Stdin bool
	// StateDir keeps positions and the spool.
	StateDir     string
	LogBrokerURL string
	// Tenant owns the stream; the collector runs inside the platform, next
	// to the log broker, and speaks for this tenant.
	Tenant       string
	Stream       string
	StreamMaxAge time.Duration
	BatchLines   int
	BatchBytes   int
	MaxLineBytes int
	SpoolBytes   int64
	PollEvery    time.Duration
	// Host names this collector in dedup IDs; default the hostname.
	Host string
}

// RegisterFlags defines the collector's flags.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Server.Addr, "addr", "127.0.0.1:8087", "listen address (health, metrics)")
	fs.Func("files", "comma-separated glob patterns of log files to follow, e.g. /var/log/containers/*.log", func(s string) error {
		c.Files = append(c.Files, svcmain.SplitList(s)...)
		return nil
	})
	fs.StringVar(&c.Socket, "socket", "", "Unix socket to accept newline-delimited lines on")
	fs.BoolVar(&c.Stdin, "stdin", false, "read lines from standard input")
	fs.StringVar(&c.StateDir, "state-dir", "/var/lib/orbit-collector", "positions and the spool")
	fs.StringVar(&c.LogBrokerURL, "logbroker-url", "http://127.0.0.1:8086", "log broker base URL")
	fs.StringVar(&c.Tenant, "tenant", "", "tenant that owns the stream (required)")
	fs.StringVar(&c.Stream, "stream", DefaultStream, "stream to publish to (created if missing, subject <stream>.>)")
	fs.DurationVar(&c.StreamMaxAge, "stream-max-age", DefaultStreamMaxAge, "retention of a stream the collector creates")
	fs.IntVar(&c.BatchLines, "batch-lines", DefaultBatchLines, "most lines per batch (at most the broker's batch limit)")
	fs.IntVar(&c.BatchBytes, "batch-bytes", DefaultBatchBytes, "most bytes per batch")
	fs.IntVar(&c.MaxLineBytes, "max-line-bytes", DefaultMaxLineBytes, "longer lines are cut and marked truncated")
	fs.Int64Var(&c.SpoolBytes, "spool-bytes", DefaultSpoolBytes, "on-disk buffer for socket and stdin lines; writers wait when it is full")
	fs.DurationVar(&c.PollEvery, "poll", DefaultPollEvery, "how often files are checked for new lines")
	fs.StringVar(&c.Host, "host", "", "name in dedup IDs (default: the hostname)")
}

func (c *Config) defaults() error {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&c.BatchLines, DefaultBatchLines)
	def(&c.BatchBytes, DefaultBatchBytes)
	def(&c.MaxLineBytes, DefaultMaxLineBytes)
	if c.SpoolBytes <= 0 {
		c.SpoolBytes = DefaultSpoolBytes
	}
	if c.PollEvery <= 0 {
		c.PollEvery = DefaultPollEvery
	}
	if c.Stream == "" {
		c.Stream = DefaultStream
	}
	if c.StreamMaxAge <= 0 {
		c.StreamMaxAge = DefaultStreamMaxAge
	}
	if c.Host == "" {
		c.Host, _ = os.Hostname()
	}
	if c.Server.Service == "" {
		c.Server.Service = "collector"
	}
	switch {
	case c.Tenant == "" || !reqctx.ValidID(c.Tenant):
		return errors.New("collector: --tenant is required (letters, digits, '-', '_')")
	case c.LogBrokerURL == "":
		return errors.New("collector: --logbroker-url is required")
	case c.StateDir == "":
		return errors.New("collector: --state-dir is required")
	case len(c.Files) == 0 && c.Socket == "" && !c.Stdin:
		return errors.New("collector: nothing to read: give --files, --socket or --stdin")
	case c.MaxLineBytes > c.BatchBytes:
		return fmt.Errorf("collector: --max-line-bytes %d exceeds --batch-bytes %d", c.MaxLineBytes, c.BatchBytes)
	}
	return nil
}

// Needs: the collector uses neither NATS nor etcd.
var Needs = svcmain.Needs{}

// Flags registers every flag of the collector binary.
func Flags(fs *flag.FlagSet) { svcmain.AllFlags(Needs, new(Config).RegisterFlags)(fs) }

// Deps are the collector's collaborators.
type Deps struct {
	Logger         *slog.Logger
	TracerProvider trace.TracerProvider
	Metrics        *prometheus.Registry
	HTTPClient     *http.Client
	// Stdin replaces os.Stdin (tests).
	Stdin interface{ Read([]byte) (int, error) }
}

// Collector is one collector.
type Collector struct {
	cfg    Config
	log    *slog.Logger
	srv    *connectserver.Server
	broker logbrokerv1connect.LogBrokerServiceClient
	stdin  interface{ Read([]byte) (int, error) }

	tailers   map[string]*tailer // by path
	positions *positions
	spools    []*spool

	m metrics
}

type metrics struct {
	lines    prometheus.Counter
	bytes    prometheus.Counter
	batches  prometheus.Counter
	retries  prometheus.Counter
	wrapped  prometheus.Counter
	cut      prometheus.Counter
	rejected prometheus.Counter
	spooled  prometheus.Gauge
	shipping prometheus.Gauge
}

// New builds a collector.
func New(cfg Config, deps Deps) (*Collector, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	if deps.Logger == nil {
		deps.Logger = obslog.Discard()
	}
	if deps.Stdin == nil {
		deps.Stdin = os.Stdin
	}
	if err := os.MkdirAll(cfg.StateDir, 0o755); err != nil {
		return nil, fmt.Errorf("collector: state dir: %w", err)
	}
	srv, err := connectserver.New(cfg.Server, connectserver.Deps{Logger: deps.Logger, TracerProvider: deps.TracerProvider, Registry: deps.Metrics})
	if err != nil {
		return nil, err
	}
	hc, opts, err := connectclient.For(deps.HTTPClient, deps.TracerProvider)
	if err != nil {
		return nil, err
	}
	pos, err := loadPositions(filepath.Join(cfg.StateDir, "positions.json"))
	if err != nil {
		return nil, err
	}
	c := &Collector{
		cfg: cfg, log: deps.Logger, srv: srv, stdin: deps.Stdin, tailers: map[string]*tailer{}, positions: pos,
		broker: logbrokerv1connect.NewLogBrokerServiceClient(hc, cfg.LogBrokerURL, opts...),
	}
	reg := prometheus.WrapRegistererWith(prometheus.Labels{"service": cfg.Server.Service}, srv.Registry())
	c.m = metrics{
		lines:    prometheus.NewCounter(prometheus.CounterOpts{Name: "orbit_collector_lines_total", Help: "Lines acknowledged by the log broker."}),
		bytes:    prometheus.NewCounter(prometheus.CounterOpts{Name: "orbit_collector_bytes_total", Help: "Bytes acknowledged by the log broker."}),
		batches:  prometheus.NewCounter(prometheus.CounterOpts{Name: "orbit_collector_batches_total", Help: "Batches acknowledged."}),
		retries:  prometheus.NewCounter(prometheus.CounterOpts{Name: "orbit_collector_retries_total", Help: "Batch publishes retried (broker slow or down)."}),
		wrapped:  prometheus.NewCounter(prometheus.CounterOpts{Name: "orbit_collector_wrapped_total", Help: "Lines that were not JSON, wrapped in the log schema."}),
		cut:      prometheus.NewCounter(prometheus.CounterOpts{Name: "orbit_collector_truncated_total", Help: "Lines longer than --max-line-bytes, cut."}),
		rejected: prometheus.NewCounter(prometheus.CounterOpts{Name: "orbit_collector_rejected_total", Help: "Lines the broker refuses, kept in <state-dir>/rejected.log."}),
		spooled:  prometheus.NewGauge(prometheus.GaugeOpts{Name: "orbit_collector_spool_bytes", Help: "Bytes in the on-disk spool."}),
		shipping: prometheus.NewGauge(prometheus.GaugeOpts{Name: "orbit_collector_blocked", Help: "1 while a batch waits for the broker."}),
	}
	reg.MustRegister(c.m.lines, c.m.bytes, c.m.batches, c.m.retries, c.m.wrapped, c.m.cut, c.m.rejected, c.m.spooled, c.m.shipping)
	return c, nil
}

// Listen binds the health/metrics port.
func (c *Collector) Listen() error {
	_, err := c.srv.Listen()
	return err
}

// URL is the collector's base URL (health, metrics).
func (c *Collector) URL() string { return c.srv.URL() }

func (c *Collector) ctx(ctx context.Context) context.Context {
	return reqctx.MustWith(ctx, reqctx.Fields{Tenant: c.cfg.Tenant})
}

// Run ships until ctx ends.
func (c *Collector) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	var serveErr error
	served := make(chan struct{})
	go func() { serveErr = c.srv.Run(ctx); close(served) }()
	finish := func() error { cancel(); <-served; return serveErr }
	if c.cfg.Socket != "" {
		sp, err := openSpool(filepath.Join(c.cfg.StateDir, "spool", "socket"), c.cfg.SpoolBytes, c.m.spooled)
		if err != nil {
			return err
		}
		c.spools = append(c.spools, sp)
		ln, err := listenSocket(c.cfg.Socket)
		if err != nil {
			return err
		}
		wg.Add(1)
		go func() { defer wg.Done(); c.serveSocket(ctx, ln, sp) }()
	}
	if c.cfg.Stdin {
		sp, err := openSpool(filepath.Join(c.cfg.StateDir, "spool", "stdin"), c.cfg.SpoolBytes, c.m.spooled)
		if err != nil {
			return err
		}
		c.spools = append(c.spools, sp)
		wg.Add(1)
		go func() { defer wg.Done(); c.readStdin(ctx, sp) }()
	}
	defer wg.Wait()
	defer cancel()
	if err := c.ensureStream(ctx); err != nil {
		return finish() // stopped before the broker was reachable
	}
	tick := time.NewTicker(c.cfg.PollEvery)
	defer tick.Stop()
	for {
		batch, err := c.gather()
		if err != nil {
			c.log.WarnContext(ctx, "reading logs", "event", "collector.read_failed", "error", err.Error())
		}
		if len(batch) > 0 {
			if err := c.ship(ctx, batch); err != nil {
				return finish() // ctx ended; nothing acknowledged is lost, the rest is re-read
			}
			c.commit(batch)
			if len(batch) >= c.cfg.BatchLines {
				continue // more is waiting
			}
		}
		select {
		case <-ctx.Done():
			return finish()
		case <-served:
			return serveErr
		case <-tick.C:
		}
	}
}

// ensureStream creates the stream (idempotent), retrying while the broker
// is unreachable.
func (c *Collector) ensureStream(ctx context.Context) error {
	cfg := &logbrokerv1.StreamConfig{Name: c.cfg.Stream, Subject: c.cfg.Stream + ".>", Retention: &logbrokerv1.Retention{MaxAge: durationpb.New(c.cfg.StreamMaxAge)}}
	return retry.Do(ctx, backoff, func() error {
		_, err := c.broker.CreateStream(c.ctx(ctx), connect.NewRequest(&logbrokerv1.CreateStreamRequest{Config: cfg}))
		if connect.CodeOf(err) == connect.CodeAlreadyExists {
			c.log.InfoContext(ctx, "stream exists with another config; using it", "event", "collector.stream_exists", "stream", c.cfg.Stream)
			return nil
		}
		return err
	}, func(err error) {
		c.log.WarnContext(ctx, "log broker not ready", "event", "collector.broker_unavailable", "error", err.Error())
	})
}

// backoff paces retries while the broker is away.
var backoff = retry.Backoff{Min: 100 * time.Millisecond, Max: maxBackoff}

// entry is one line ready to publish.
type entry struct {
	t       *tailer
	end     int64
	subject string
	value   []byte
	dedup   string
}

// sources lists every tailer in reading order: files by path (new matches
// join), then spool segments oldest first.
func (c *Collector) sources() []*tailer {
	var paths []string
	for _, g := range c.cfg.Files {
		m, _ := filepath.Glob(g)
		paths = append(paths, m...)
	}
	slices.Sort(paths)
	var out []*tailer
	for _, p := range slices.Compact(paths) {
		t := c.tailers[p]
		if t == nil {
			t = &tailer{path: p, service: serviceOf(p)}
			c.tailers[p] = t
		}
		out = append(out, t)
	}
	for _, sp := range c.spools {
		out = append(out, sp.tailers()...)
	}
	return out
}

// serviceOf names a file's lines: the base name without .log; for
// Kubernetes container logs (<pod>_<namespace>_<container>-<id>.log) the
// container.
func serviceOf(path string) string {
	b := strings.TrimSuffix(filepath.Base(path), ".log")
	if parts := strings.Split(b, "_"); len(parts) == 3 {
		if i := strings.LastIndexByte(parts[2], '-'); i > 0 {
			return parts[2][:i]
		}
		return parts[2]
	}
	return b
}

func subjectToken(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '_'
	}, s)
}

// gather reads new lines up to one batch.
func (c *Collector) gather() ([]entry, error) {
	var batch []entry
	size := 0
	var firstErr error
	for _, t := range c.sources() {
		for _, tt := range []*tailer{t.old, t} {
			if tt == nil {
				continue
			}
			if tt == t {
				if err := t.check(); err != nil && firstErr == nil {
					firstErr = err
				}
				if t.truncated {
					c.positions.truncated(t.id)
					t.truncated = false
				}
				if err := t.open(c.positions.offset); err != nil && firstErr == nil {
					firstErr = err
				}
			}
			for cut := false; !cut && size < c.cfg.BatchBytes && len(batch) < c.cfg.BatchLines; {
				lines, err := tt.next(c.cfg.BatchBytes-size, c.cfg.MaxLineBytes)
				if err != nil && firstErr == nil {
					firstErr = err
				}
				if len(lines) == 0 {
					break
				}
				for _, l := range lines {
					if len(batch) >= c.cfg.BatchLines || size+len(l.text) > c.cfg.BatchBytes && len(batch) > 0 {
						tt.read = l.start // the rest waits for the next batch
						cut = true
						break
					}
					e, ok := c.entry(l)
					if !ok {
						continue
					}
					batch = append(batch, e)
					size += len(e.value)
				}
			}
		}
	}
	return batch, firstErr
}

// entry turns a line into what is published; a CRI partial line is held
// until its final part.
func (c *Collector) entry(l line) (entry, bool) {
	t := l.t
	text, ts, stream, start := l.text, time.Now(), "", l.start
	if cts, s, partial, body, ok := criLine(text); ok {
		ts, stream = cts, s
		if partial && len(t.partial)+len(body) < c.cfg.MaxLineBytes {
			if len(t.partial) == 0 {
				t.partialStart = l.start
			}
			t.partial = append(t.partial, body...)
			return entry{}, false
		}
		if len(t.partial) > 0 {
			body = append(t.partial, body...)
			start = t.partialStart
			t.partial = nil
		}
		text = body
	}
	if l.trunc {
		c.m.cut.Inc()
	}
	v, wrapped := normalize(text, ts, t.service, t.path, stream, l.trunc)
	if wrapped {
		c.m.wrapped.Inc()
	}
	return entry{
		t: t, end: l.end, subject: c.cfg.Stream + "." + subjectToken(t.service), value: v,
		dedup: fmt.Sprintf("%s/%s/%d/%d", c.cfg.Host, l.id, c.positions.epoch(l.id), start),
	}, true
}

// ship publishes one batch, waiting (and retrying with the same dedup IDs)
// until the broker acknowledges it.
func (c *Collector) ship(ctx context.Context, batch []entry) error {
	c.m.shipping.Set(1)
	defer c.m.shipping.Set(0)
	warned := false
	var refused error
	err := retry.Do(ctx, backoff, func() error {
		refused = nil
		req := &logbrokerv1.PublishBatchRequest{Stream: c.cfg.Stream, AckPolicy: logbrokerv1.AckPolicy_ACK_POLICY_LEADER}
		for _, e := range batch {
			req.Messages = append(req.Messages, &logbrokerv1.BatchMessage{Subject: e.subject, Value: e.value, DedupId: e.dedup})
		}
		_, err := c.broker.PublishBatch(c.ctx(ctx), connect.NewRequest(req))
		if code := connect.CodeOf(err); code == connect.CodeInvalidArgument || code == connect.CodeResourceExhausted && strings.Contains(err.Error(), "; the limit is") {
			refused = err // retrying the same request cannot succeed
			return nil
		}
		if err != nil && !warned && ctx.Err() == nil {
			warned = true
			c.log.WarnContext(ctx, "log broker did not take a batch; holding the lines and retrying", "event", "collector.blocked", "lines", len(batch), "error", err.Error())
		}
		if err == nil && warned {
			c.log.InfoContext(ctx, "log broker took the held batch", "event", "collector.unblocked", "lines", len(batch))
		}
		return err
	}, func(error) { c.m.retries.Inc() })
	if err != nil || refused == nil {
		return err
	}
	// The broker refuses this request for what it is (over its batch limits,
	// or a line it will never take). Halve it until the refusal is down to
	// one line; that line goes to rejected.log with the reason — set aside
	// where an operator sees it and counted, never silently dropped.
	if len(batch) > 1 {
		half := len(batch) / 2
		if err := c.ship(ctx, batch[:half]); err != nil {
			return err
		}
		return c.ship(ctx, batch[half:])
	}
	return c.reject(ctx, batch[0], refused)
}

// reject keeps a line the broker refuses in <state-dir>/rejected.log.
func (c *Collector) reject(ctx context.Context, e entry, why error) error {
	f, err := os.OpenFile(filepath.Join(c.cfg.StateDir, "rejected.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	rec, _ := json.Marshal(map[string]string{"reason": why.Error(), "source": e.t.path, "dedup_id": e.dedup, "line": string(e.value)})
	if _, err := f.Write(append(rec, '\n')); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	c.m.rejected.Inc()
	c.log.ErrorContext(ctx, "the log broker refuses a line; kept in rejected.log", "event", "collector.rejected", "source", e.t.path, "error", why.Error())
	return nil
}

// commit records an acknowledged batch: positions advance and are saved,
// finished rotated files close, and shipped spool segments go.
func (c *Collector) commit(batch []entry) {
	for _, e := range batch {
		e.t.acked = e.end
		c.positions.set(e.t.id, e.end)
		c.m.bytes.Add(float64(len(e.value)))
	}
	c.m.lines.Add(float64(len(batch)))
	c.m.batches.Inc()
	live := map[fileID]bool{}
	for _, t := range c.tailers {
		if t.old != nil && t.old.drained() {
			t.old.close()
			t.old = nil
		}
		if t.old != nil {
			live[t.old.id] = true
		}
		if t.f != nil {
			live[t.id] = true
		}
	}
	for _, sp := range c.spools {
		sp.release()
		for _, t := range sp.tailers() {
			if t.f != nil {
				live[t.id] = true
			}
		}
	}
	c.positions.keep(live)
	if err := c.positions.save(); err != nil {
		c.log.Error("positions not saved", "event", "collector.positions_failed", "error", err.Error())
	}
}

// positions are the acknowledged offsets per file ID, saved atomically.
type positions struct {
	path string
	mu   sync.Mutex
	m    map[string]position
}

type position struct {
	Offset int64 `json:"offset"`
	// Epoch counts truncations, so dedup IDs of a rewritten file differ.
	Epoch int `json:"epoch"`
}

func loadPositions(path string) (*positions, error) {
	p := &positions{path: path, m: map[string]position{}}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return p, nil
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, &p.m); err != nil {
		return nil, fmt.Errorf("collector: %s is corrupt (%v); move it away to start over", path, err)
	}
	return p, nil
}

// offset is the saved position of a file.
func (p *positions) offset(id fileID) (int64, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	v, ok := p.m[id.String()]
	return v.Offset, ok
}

func (p *positions) epoch(id fileID) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.m[id.String()].Epoch
}

func (p *positions) set(id fileID, off int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	v := p.m[id.String()]
	v.Offset = off
	p.m[id.String()] = v
}

// truncated starts a new epoch for a file rewritten from the start, so its
// new lines get new dedup IDs.
func (p *positions) truncated(id fileID) {
	p.mu.Lock()
	defer p.mu.Unlock()
	v := p.m[id.String()]
	v.Offset = 0
	v.Epoch++
	p.m[id.String()] = v
}

// keep forgets files no longer followed, so a reused inode starts fresh.
func (p *positions) keep(live map[fileID]bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	names := map[string]bool{}
	for id := range live {
		names[id.String()] = true
	}
	for k := range p.m {
		if !names[k] {
			delete(p.m, k)
		}
	}
}

func (p *positions) save() error {
	p.mu.Lock()
	b, err := json.Marshal(p.m)
	p.mu.Unlock()
	if err != nil {
		return err
	}
	tmp := p.path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, p.path)
}
