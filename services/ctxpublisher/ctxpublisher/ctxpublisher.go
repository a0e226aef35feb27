// Package ctxpublisher pushes contexts from the platform database into every
// region's etcd (docs/contexts.md): one worker per region does a full
// reconcile at start and every ReconcileInterval (it rebuilds every context
// from the database and deletes those that no longer exist), and in between
// pushes each change from the outbox at once, woken by the platform's NATS
// nudge or, failing that, by a poll. Writes are idempotent and versioned: a
// push never replaces a context with an older version. A region that cannot
// be reached is retried with backoff and reported failing; the others go on.
// Spokes never call the hub: they only read their own etcd.
package ctxpublisher

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/orbitplane/orbit/libs/connectserver"
	"github.com/orbitplane/orbit/libs/etcdkv"
	"github.com/orbitplane/orbit/libs/obslog"
	"github.com/orbitplane/orbit/libs/svcmain"
	ctxpublisherv1 "github.com/orbitplane/orbit/proto/orbit/ctxpublisher/v1"
	"github.com/orbitplane/orbit/proto/orbit/ctxpublisher/v1/ctxpublisherv1connect"
	"github.com/orbitplane/orbit/services/platform/platform"
	"github.com/orbitplane/orbit/services/platform/store"
)

// Defaults (docs/limits.md).
const (
	DefaultReconcileInterval = 10 * time.Minute
	DefaultPollInterval      = time.Second
	DefaultRetryMin          = 100 * time.Millisecond
	DefaultRetryMax          = 10 * time.Second
	// DefaultTxnContexts is how many contexts one etcd transaction writes
	// (under etcd's default --max-txn-ops 128).
	DefaultTxnContexts = 100
	// DefaultTxnsInFlight is how many transactions a reconcile keeps in
	// flight to one region.
	DefaultTxnsInFlight = 4
	// DefaultWriteTimeout bounds one etcd call.
	DefaultWriteTimeout = 10 * time.Second
)

// Config configures the publisher.
type Config struct {
	Server            connectserver.Config
	Database          string
	ReconcileInterval time.Duration
	PollInterval      time.Duration
	RetryMin          time.Duration
	RetryMax          time.Duration
	TxnContexts       int
	TxnsInFlight      int
	WriteTimeout      time.Duration
}

// RegisterFlags defines the publisher's flags.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Server.Addr, "addr", "127.0.0.1:8091", "listen address (status API, health, metrics)")
	fs.StringVar(&c.Database, "database", "platform.db", "the platform database: SQLite file or postgres:// URL")
	fs.DurationVar(&c.ReconcileInterval, "reconcile-interval", DefaultReconcileInterval, "full reconcile of every region this often")
	fs.DurationVar(&c.PollInterval, "poll-interval", DefaultPollInterval, "read the outbox this often even without a nudge")
	fs.DurationVar(&c.RetryMin, "retry-min", DefaultRetryMin, "first retry delay for a failing region")
	fs.DurationVar(&c.RetryMax, "retry-max", DefaultRetryMax, "longest retry delay for a failing region")
	fs.IntVar(&c.TxnContexts, "txn-contexts", DefaultTxnContexts, "contexts per etcd transaction (at most 120)")
	fs.IntVar(&c.TxnsInFlight, "txns-in-flight", DefaultTxnsInFlight, "etcd transactions in flight per region during a reconcile")
	fs.DurationVar(&c.WriteTimeout, "write-timeout", DefaultWriteTimeout, "longest wait for one etcd call")
}

func (c *Config) defaults() error {
	dur := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	dur(&c.ReconcileInterval, DefaultReconcileInterval)
	dur(&c.PollInterval, DefaultPollInterval)
	dur(&c.RetryMin, DefaultRetryMin)
	dur(&c.RetryMax, DefaultRetryMax)
	dur(&c.WriteTimeout, DefaultWriteTimeout)
	if c.TxnContexts <= 0 {
		c.TxnContexts = DefaultTxnContexts
	}
	if c.TxnContexts > etcdkv.MaxTxnOps-8 {
		return fmt.Errorf("ctxpublisher: --txn-contexts %d: at most %d fit etcd's transaction limit", c.TxnContexts, etcdkv.MaxTxnOps-8)
	}
	if c.TxnsInFlight <= 0 {
		c.TxnsInFlight = DefaultTxnsInFlight
	}
	if c.Server.Service == "" {
		c.Server.Service = "ctxpublisher"
	}
	return nil
}

// Needs: NATS for the platform's nudges.
var Needs = svcmain.Needs{NATS: true}

// Flags registers every flag of the binary.
func Flags(fs *flag.FlagSet) { svcmain.AllFlags(Needs, new(Config).RegisterFlags)(fs) }

// Deps are the publisher's collaborators.
type Deps struct {
	Logger         *slog.Logger
	TracerProvider trace.TracerProvider
	// NATS is optional: without it changes are found by polling.
	NATS    *nats.Conn
	Metrics *prometheus.Registry
	// Store, if set, is used instead of opening Config.Database.
	Store *store.Store
	// Dial connects to a region's etcd (default etcdkv.Connect); tests
	// inject faults here.
	Dial func(ctx context.Context, endpoints []string) (*clientv3.Client, error)
	// Drop, if set, is asked before each pushed context is written; true
	// drops it as if the write were lost (fault injection for tests; the
	// next reconcile must heal it). Reconciles are never dropped.
	Drop func(region string, c store.Context) bool
}

// Service is the context publisher.
type Service struct {
	cfg     Config
	log     *slog.Logger
	st      *store.Store
	ownsSt  bool
	nc      *nats.Conn
	srv     *connectserver.Server
	dial    func(context.Context, []string) (*clientv3.Client, error)
	drop    func(string, store.Context) bool
	m       metrics
	regions chan struct{} // re-read the regions

	mu      sync.Mutex
	workers map[string]*worker
}

type metrics struct {
	lag       *prometheus.GaugeVec
	lagSec    *prometheus.GaugeVec
	reconcile *prometheus.GaugeVec
	failing   *prometheus.GaugeVec
	pushed    *prometheus.CounterVec
	errors    *prometheus.CounterVec
	visible   prometheus.Histogram
}

// New builds the publisher.
func New(ctx context.Context, cfg Config, deps Deps) (*Service, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	if deps.Logger == nil {
		deps.Logger = obslog.Discard()
	}
	s := &Service{cfg: cfg, log: deps.Logger, st: deps.Store, nc: deps.NATS, dial: deps.Dial, drop: deps.Drop,
		regions: make(chan struct{}, 1), workers: map[string]*worker{}}
	if s.dial == nil {
		s.dial = func(ctx context.Context, eps []string) (*clientv3.Client, error) {
			return etcdkv.Connect(ctx, etcdkv.Config{Endpoints: eps})
		}
	}
	if s.st == nil {
		st, err := store.Open(ctx, cfg.Database)
		if err != nil {
			return nil, err
		}
		s.st, s.ownsSt = st, true
	}
	srv, err := connectserver.New(cfg.Server, connectserver.Deps{Logger: deps.Logger, TracerProvider: deps.TracerProvider, Registry: deps.Metrics})
	if err != nil {
		s.close()
		return nil, err
	}
	s.srv = srv
	region := []string{"region"}
	s.m = metrics{
		lag:       prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "orbit_ctxpublisher_lag_changes", Help: "Outbox changes not yet in the region."}, region),
		lagSec:    prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "orbit_ctxpublisher_lag_seconds", Help: "How long the region has been behind (0 when current)."}, region),
		reconcile: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "orbit_ctxpublisher_last_reconcile_timestamp_seconds", Help: "End of the region's last full reconcile."}, region),
		failing:   prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "orbit_ctxpublisher_failing", Help: "1 while the region's last attempt failed."}, region),
		pushed:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "orbit_ctxpublisher_pushed_total", Help: "Contexts written to or deleted from the region."}, region),
		errors:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "orbit_ctxpublisher_errors_total", Help: "Failed attempts to bring the region current."}, region),
		visible: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "orbit_ctxpublisher_visible_seconds",
			Help: "From a change's commit to its context being written in a region.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}),
	}
	srv.Registry().MustRegister(s.m.lag, s.m.lagSec, s.m.reconcile, s.m.failing, s.m.pushed, s.m.errors, s.m.visible)
	srv.Handle(ctxpublisherv1connect.NewContextPublisherServiceHandler(&api{s: s}, srv.HandlerOptions()...))
	return s, nil
}

func (s *Service) close() {
	if s.ownsSt {
		s.st.Close()
	}
}

// Listen binds the port; URL is then valid.
func (s *Service) Listen() error {
	_, err := s.srv.Listen()
	return err
}

// URL is the status API's base URL.
func (s *Service) URL() string { return s.srv.URL() }

// Run publishes until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	defer s.close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if s.nc != nil {
		sub, err := s.nc.Subscribe(platform.PublishSubject, func(m *nats.Msg) {
			if string(m.Data) == store.KindRegion {
				s.reloadRegions()
			}
			s.kickAll()
		})
		if err != nil {
			return fmt.Errorf("ctxpublisher: subscribe %s: %w", platform.PublishSubject, err)
		}
		defer sub.Unsubscribe() //nolint:errcheck
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.manage(ctx)
	}()
	err := s.srv.Run(ctx)
	cancel()
	wg.Wait()
	return err
}

func (s *Service) reloadRegions() {
	select {
	case s.regions <- struct{}{}:
	default:
	}
}

func (s *Service) kickAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, w := range s.workers {
		w.kick()
	}
}

// trimEvery is how many polls pass between outbox trims.
const trimEvery = 60

// manage keeps one worker per region of the database and trims the outbox
// to what every region has.
func (s *Service) manage(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	tick := time.NewTicker(s.cfg.PollInterval)
	defer tick.Stop()
	var trimmed uint64
	ticks := 0
	for {
		if rs, err := s.st.ListRegions(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			s.log.Warn("read regions", "event", "ctxpublisher.regions_failed", "error", err.Error())
		} else {
			s.sync(ctx, rs, &wg)
		}
		// Regions also change without a nudge (another writer, no NATS):
		// re-read them every 10 polls.
		for i := 0; i < 10; i++ {
			select {
			case <-ctx.Done():
				return
			case <-s.regions:
				i = 10
			case <-tick.C:
				s.kickAll()
				_, _ = s.Status(ctx) // refreshes the lag gauges
				// Trimming is a write (an fsync on SQLite): once a
				// minute is plenty, and keeps it off the push path.
				if ticks++; ticks%trimEvery == 0 {
					trimmed = s.trim(ctx, trimmed)
				}
			}
		}
	}
}

func (s *Service) sync(ctx context.Context, rs []store.Region, wg *sync.WaitGroup) {
	s.mu.Lock()
	defer s.mu.Unlock()
	want := map[string]store.Region{}
	for _, r := range rs {
		want[r.Name] = r
	}
	for name, w := range s.workers {
		if r, ok := want[name]; !ok || fmt.Sprint(r.EtcdEndpoints) != fmt.Sprint(w.region.EtcdEndpoints) {
			w.stop()
			delete(s.workers, name)
			for _, m := range []*prometheus.GaugeVec{s.m.lag, s.m.lagSec, s.m.reconcile, s.m.failing} {
				m.DeleteLabelValues(name)
			}
			s.log.Info("region removed", "event", "ctxpublisher.region_removed", "region_name", name)
		}
	}
	for name, r := range want {
		if _, ok := s.workers[name]; ok {
			continue
		}
		w := newWorker(s, r)
		wctx, cancel := context.WithCancel(ctx)
		w.cancel = cancel
		s.workers[name] = w
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer cancel()
			w.run(wctx)
		}()
		s.log.Info("region added", "event", "ctxpublisher.region_added", "region_name", name, "etcd", fmt.Sprint(r.EtcdEndpoints))
	}
}

// trim deletes outbox rows every region has (keeping the newest).
func (s *Service) trim(ctx context.Context, trimmed uint64) uint64 {
	s.mu.Lock()
	low := uint64(0)
	first := true
	for _, w := range s.workers {
		p := w.pushedVersion()
		if first || p < low {
			low, first = p, false
		}
	}
	s.mu.Unlock()
	if first || low <= trimmed {
		return trimmed
	}
	if _, err := s.st.TrimOutbox(ctx, low); err != nil {
		s.log.Warn("trim the outbox", "event", "ctxpublisher.trim_failed", "error", err.Error())
		return trimmed
	}
	return low
}

// Status returns every region's status, by name.
func (s *Service) Status(ctx context.Context) ([]*ctxpublisherv1.RegionStatus, error) {
	head, err := s.st.Head(ctx)
	if err != nil {
		return nil, connect.NewError(connect.CodeUnavailable, errors.New("platform database unavailable"))
	}
	s.mu.Lock()
	ws := make([]*worker, 0, len(s.workers))
	for _, w := range s.workers {
		ws = append(ws, w)
	}
	s.mu.Unlock()
	out := make([]*ctxpublisherv1.RegionStatus, 0, len(ws))
	for _, w := range ws {
		out = append(out, w.status(head))
	}
	sortStatus(out)
	return out, nil
}

// Reconcile runs a full reconcile of one region (or all) and waits for it.
func (s *Service) Reconcile(ctx context.Context, region string) error {
	s.mu.Lock()
	var ws []*worker
	for name, w := range s.workers {
		if region == "" || name == region {
			ws = append(ws, w)
		}
	}
	s.mu.Unlock()
	if len(ws) == 0 && region != "" {
		return connect.NewError(connect.CodeNotFound, fmt.Errorf("no region %q", region))
	}
	var errs []error
	for _, w := range ws {
		if err := w.reconcileNow(ctx); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", w.region.Name, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return connect.NewError(connect.CodeUnavailable, err)
	}
	return nil
}

type api struct{ s *Service }

func (a *api) GetStatus(ctx context.Context, _ *connect.Request[ctxpublisherv1.GetStatusRequest]) (*connect.Response[ctxpublisherv1.GetStatusResponse], error) {
	st, err := a.s.Status(ctx)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&ctxpublisherv1.GetStatusResponse{Regions: st}), nil
}

func (a *api) Reconcile(ctx context.Context, req *connect.Request[ctxpublisherv1.ReconcileRequest]) (*connect.Response[ctxpublisherv1.ReconcileResponse], error) {
	if err := a.s.Reconcile(ctx, req.Msg.Region); err != nil {
		return nil, err
	}
	st, err := a.s.Status(ctx)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&ctxpublisherv1.ReconcileResponse{Regions: st}), nil
}

func pbTime(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func pbDur(d time.Duration) *durationpb.Duration { return durationpb.New(d) }
