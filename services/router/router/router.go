// Package router is the observability pipeline's data router: it consumes
// log broker streams from its cursor, applies the rules of a YAML file
// (match; drop, sample, dedup, mask, enrich, aggregate; route) and writes to
// sinks (file, stdout, HTTP, OTLP/HTTP, another stream). The cursor moves
// only after every sink acknowledged the batch, so a crash redelivers at
// most one batch and loses nothing. The rule file is reloaded when it
// changes; a broken file keeps the last good rules (docs/router.md).
package router

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

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
	DefaultBatch       = 500
	DefaultBatchWait   = 200 * time.Millisecond
	DefaultReloadEvery = time.Second
	maxBackoff         = 10 * time.Second
)

// Config configures a router.
type Config struct {
	Server       connectserver.Config
	Rules        string
	LogBrokerURL string
	Tenant       string
	// Consumer names this router's cursors; routers with the same name
	// share them (run one per name).
	Consumer    string
	Batch       int
	BatchWait   time.Duration
	ReloadEvery time.Duration
	Region      string
}

// RegisterFlags defines the router's flags.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Server.Addr, "addr", "127.0.0.1:8088", "listen address (health, metrics)")
	fs.StringVar(&c.Rules, "rules", "rules.yaml", "rule file (reloaded when it changes)")
	fs.StringVar(&c.LogBrokerURL, "logbroker-url", "http://127.0.0.1:8086", "log broker base URL")
	fs.StringVar(&c.Tenant, "tenant", "", "tenant whose streams are routed (required)")
	fs.StringVar(&c.Consumer, "consumer", "router", "cursor name of this router")
	fs.IntVar(&c.Batch, "batch", DefaultBatch, "most events per batch (one cursor commit each)")
	fs.DurationVar(&c.BatchWait, "batch-wait", DefaultBatchWait, "longest wait to fill a batch")
	fs.DurationVar(&c.ReloadEvery, "reload-every", DefaultReloadEvery, "how often the rule file is checked for changes")
}

func (c *Config) defaults() error {
	if c.Batch <= 0 {
		c.Batch = DefaultBatch
	}
	if c.BatchWait <= 0 {
		c.BatchWait = DefaultBatchWait
	}
	if c.ReloadEvery <= 0 {
		c.ReloadEvery = DefaultReloadEvery
	}
	if c.Consumer == "" {
		c.Consumer = "router"
	}
	if c.Server.Service == "" {
		c.Server.Service = "router"
	}
	switch {
	case !reqctx.ValidID(c.Tenant):
		return errors.New("router: --tenant is required (letters, digits, '-', '_')")
	case c.LogBrokerURL == "":
		return errors.New("router: --logbroker-url is required")
	case c.Rules == "":
		return errors.New("router: --rules is required")
	}
	return nil
}

// Needs: the router uses neither NATS nor etcd.
var Needs = svcmain.Needs{}

// Flags registers every flag of the router binary.
func Flags(fs *flag.FlagSet) { svcmain.AllFlags(Needs, new(Config).RegisterFlags)(fs) }

// Deps are the router's collaborators.
type Deps struct {
	Logger         *slog.Logger
	TracerProvider trace.TracerProvider
	Metrics        *prometheus.Registry
	HTTPClient     *http.Client
	// Stdout is the stdout sink's writer; default os.Stdout.
	Stdout io.Writer
}

// Router is one router.
type Router struct {
	cfg    Config
	log    *slog.Logger
	srv    *connectserver.Server
	broker logbrokerv1connect.LogBrokerServiceClient
	deps   sinkDeps

	mu      sync.Mutex
	current *pipeline
	stamp   fileStamp

	m metrics
}

// pipeline is one loaded rule file: the engine per source and the sinks.
type pipeline struct {
	rules   *RuleFile
	engines map[string]*Engine
	sinks   map[string]Sink
	adopted atomic.Bool // consumers run on it; Run closes it when they stop
}

type fileStamp struct {
	mod  time.Time
	size int64
}

type metrics struct {
	in, out, dropped, unrouted, undecodable *prometheus.CounterVec
	reloads                                 *prometheus.CounterVec
	lag                                     *prometheus.GaugeVec
}

// New builds a router and loads its rules; bad rules are an error here.
func New(cfg Config, deps Deps) (*Router, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	if deps.Logger == nil {
		deps.Logger = obslog.Discard()
	}
	if deps.Stdout == nil {
		deps.Stdout = os.Stdout
	}
	srv, err := connectserver.New(cfg.Server, connectserver.Deps{Logger: deps.Logger, TracerProvider: deps.TracerProvider, Registry: deps.Metrics})
	if err != nil {
		return nil, err
	}
	hc, opts, err := connectclient.For(deps.HTTPClient, deps.TracerProvider)
	if err != nil {
		return nil, err
	}
	r := &Router{cfg: cfg, log: deps.Logger, srv: srv, broker: logbrokerv1connect.NewLogBrokerServiceClient(hc, cfg.LogBrokerURL, opts...)}
	sinkHTTP := deps.HTTPClient
	if sinkHTTP == nil {
		sinkHTTP = &http.Client{}
	}
	r.deps = sinkDeps{stdout: deps.Stdout, http: sinkHTTP, broker: r.broker, ctx: r.ctx}
	reg := prometheus.WrapRegistererWith(prometheus.Labels{"service": cfg.Server.Service}, srv.Registry())
	r.m = metrics{
		in:          prometheus.NewCounterVec(prometheus.CounterOpts{Name: "orbit_router_events_in_total", Help: "Events read, by stream."}, []string{"stream"}),
		out:         prometheus.NewCounterVec(prometheus.CounterOpts{Name: "orbit_router_events_out_total", Help: "Events written, by sink."}, []string{"sink"}),
		dropped:     prometheus.NewCounterVec(prometheus.CounterOpts{Name: "orbit_router_dropped_total", Help: "Events dropped on purpose, by rule."}, []string{"rule"}),
		unrouted:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "orbit_router_unrouted_total", Help: "Events no route and no default sink took."}, []string{"stream"}),
		undecodable: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "orbit_router_undecodable_total", Help: "Messages that were not JSON objects (routed wrapped)."}, []string{"stream"}),
		reloads:     prometheus.NewCounterVec(prometheus.CounterOpts{Name: "orbit_router_reloads_total", Help: "Rule file reloads, by result."}, []string{"result"}),
		lag:         prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "orbit_router_committed_offset", Help: "Last committed offset, by stream."}, []string{"stream"}),
	}
	reg.MustRegister(r.m.in, r.m.out, r.m.dropped, r.m.unrouted, r.m.undecodable, r.m.reloads, r.m.lag)
	if _, err := r.reload(); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *Router) ctx(ctx context.Context) context.Context {
	return reqctx.MustWith(ctx, reqctx.Fields{Tenant: r.cfg.Tenant})
}

// Listen binds the health/metrics port.
func (r *Router) Listen() error {
	_, err := r.srv.Listen()
	return err
}

// URL is the router's base URL.
func (r *Router) URL() string { return r.srv.URL() }

// reload loads the rule file if it changed; a bad file keeps the current
// rules. It reports whether new rules were installed.
func (r *Router) reload() (bool, error) {
	fi, err := os.Stat(r.cfg.Rules)
	if err != nil {
		return false, fmt.Errorf("router: rules: %w", err)
	}
	stamp := fileStamp{mod: fi.ModTime(), size: fi.Size()}
	r.mu.Lock()
	same := r.current != nil && stamp == r.stamp
	r.mu.Unlock()
	if same {
		return false, nil
	}
	rf, err := LoadRules(r.cfg.Rules)
	if err == nil {
		err = r.install(rf)
	}
	if err != nil {
		r.m.reloads.WithLabelValues("error").Inc()
		r.mu.Lock()
		r.stamp = stamp // do not retry the same broken file every tick
		r.mu.Unlock()
		return false, err
	}
	r.mu.Lock()
	r.stamp = stamp
	r.mu.Unlock()
	r.m.reloads.WithLabelValues("ok").Inc()
	return true, nil
}

func (r *Router) install(rf *RuleFile) error {
	p := &pipeline{rules: rf, engines: map[string]*Engine{}, sinks: map[string]Sink{}}
	for _, src := range rf.Sources {
		en, err := NewEngine(rf, r.cfg.Region)
		if err != nil {
			return err
		}
		p.engines[src.Stream] = en
	}
	for name, sc := range rf.Sinks {
		s, err := newSink(name, sc, r.deps)
		if err != nil {
			for _, s := range p.sinks {
				_ = s.Close()
			}
			return err
		}
		p.sinks[name] = s
	}
	r.mu.Lock()
	old := r.current
	r.current = p
	r.mu.Unlock()
	if old != nil && !old.adopted.Load() {
		old.close() // never used; Run closes the ones its consumers used
	}
	return nil
}

func (p *pipeline) close() {
	for _, s := range p.sinks {
		_ = s.Close()
	}
}

func (r *Router) pipeline() *pipeline {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.current
}

// Run routes until ctx ends.
func (r *Router) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var serveErr error
	served := make(chan struct{})
	go func() { serveErr = r.srv.Run(ctx); close(served) }()
	var wg sync.WaitGroup
	// Reload loop; a source list change restarts the consumers.
	restart := make(chan struct{}, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(r.cfg.ReloadEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			changed, err := r.reload()
			if err != nil {
				r.log.ErrorContext(ctx, "rule file not loaded; keeping the last good rules", "event", "router.reload_failed", "error", err.Error())
				continue
			}
			if changed {
				r.log.InfoContext(ctx, "rules reloaded", "event", "router.reloaded", "rules", len(r.pipeline().rules.Rules))
				select {
				case restart <- struct{}{}:
				default:
				}
			}
		}
	}()
	for ctx.Err() == nil {
		p := r.pipeline()
		p.adopted.Store(true)
		gctx, gcancel := context.WithCancel(ctx)
		var cw sync.WaitGroup
		for stream := range p.engines {
			cw.Add(1)
			go func() {
				defer cw.Done()
				r.consume(gctx, stream)
			}()
		}
		select {
		case <-ctx.Done():
		case <-restart:
		}
		gcancel()
		cw.Wait()
		if r.pipeline() != p || ctx.Err() != nil {
			p.close()
		}
	}
	wg.Wait()
	cancel()
	<-served
	return serveErr
}

// consume follows one stream from the cursor, reconnecting with backoff.
func (r *Router) consume(ctx context.Context, stream string) {
	b := backoff
	for ctx.Err() == nil {
		err := r.follow(ctx, stream)
		if ctx.Err() != nil {
			return
		}
		r.log.WarnContext(ctx, "stream interrupted; resuming from the cursor", "event", "router.resume", "stream", stream, "error", errString(err))
		if b.Wait(ctx) != nil {
			return
		}
	}
}

// backoff paces reconnects and sink retries.
var backoff = retry.Backoff{Min: 100 * time.Millisecond, Max: maxBackoff}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

type received struct {
	msg *logbrokerv1.Message
	err error
}

// follow subscribes from the cursor and routes batches until an error.
func (r *Router) follow(ctx context.Context, stream string) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sub, err := r.broker.Subscribe(r.ctx(ctx), connect.NewRequest(&logbrokerv1.SubscribeRequest{
		Stream: stream, Start: logbrokerv1.StartPosition_START_POSITION_CURSOR, Consumer: r.cfg.Consumer,
	}))
	if err != nil {
		return err
	}
	defer sub.Close()
	ch := make(chan received, r.cfg.Batch)
	go func() {
		defer close(ch)
		for sub.Receive() {
			select {
			case ch <- received{msg: sub.Msg().Message}:
			case <-ctx.Done():
				return
			}
		}
		select {
		case ch <- received{err: fmt.Errorf("subscription ended: %v", sub.Err())}:
		case <-ctx.Done():
		}
	}()
	tick := time.NewTicker(r.cfg.BatchWait)
	defer tick.Stop()
	var batch []*logbrokerv1.Message
	var endErr error
	for endErr == nil {
		select {
		case <-ctx.Done():
			return nil
		case m, ok := <-ch:
			if !ok {
				return nil
			}
			if m.err != nil {
				endErr = m.err
				break
			}
			batch = append(batch, m.msg)
			if len(batch) < r.cfg.Batch {
				continue
			}
		case <-tick.C:
		}
		if err := r.route(ctx, stream, batch); err != nil {
			return err
		}
		batch = batch[:0]
	}
	if err := r.route(ctx, stream, batch); err != nil {
		return err
	}
	return endErr
}

// route runs a batch through the rules, writes every sink's share and then
// commits the cursor — not past an event still counted in an open
// aggregation window.
func (r *Router) route(ctx context.Context, stream string, batch []*logbrokerv1.Message) error {
	p := r.pipeline()
	en := p.engines[stream]
	if en == nil {
		return nil // this stream left the rules; the consumer restarts
	}
	res := newResult()
	var last uint64
	for _, m := range batch {
		en.Process(r.cfg.Consumer+"/"+stream, m.Value, m.Offset, res)
		last = m.Offset
	}
	held := en.Flush(res, false)
	if len(batch) == 0 && len(res.Out) == 0 {
		return nil
	}
	for name, events := range res.Out {
		s := p.sinks[name]
		if err := retrySink(ctx, s, events); err != nil {
			return fmt.Errorf("sink %s: %w", name, err)
		}
		r.m.out.WithLabelValues(name).Add(float64(len(events)))
	}
	r.m.in.WithLabelValues(stream).Add(float64(len(batch)))
	for rule, n := range res.Dropped {
		r.m.dropped.WithLabelValues(rule).Add(float64(n))
	}
	r.m.unrouted.WithLabelValues(stream).Add(float64(res.Unrouted))
	r.m.undecodable.WithLabelValues(stream).Add(float64(res.Undecodable))
	commit := last
	if held > 0 && held-1 < commit {
		commit = held - 1
	}
	if commit == 0 {
		return nil
	}
	_, err := r.broker.SetCursor(r.ctx(ctx), connect.NewRequest(&logbrokerv1.SetCursorRequest{Stream: stream, Consumer: r.cfg.Consumer, Offset: commit}))
	if err != nil {
		return fmt.Errorf("cursor: %w", err)
	}
	r.m.lag.WithLabelValues(stream).Set(float64(commit))
	return nil
}

// retrySink writes until the sink acknowledges; the router waits (and the
// cursor stays) rather than dropping.
func retrySink(ctx context.Context, s Sink, events []Out) error {
	return retry.Do(ctx, backoff, func() error { return s.Write(ctx, events) }, nil)
}
