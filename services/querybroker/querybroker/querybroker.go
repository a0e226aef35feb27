// Package querybroker is the RequestProxyer: it gives each query an ID,
// publishes it to the satellite's NATS subject, streams the reply frames
// back, and fans a query out to every satellite matching a label selector,
// merging their results with a per-satellite status summary.
//
// Every frame carries the query ID and a sequence number; a gap is an error.
// Core NATS has no backpressure, so satellites send only against credits the
// broker grants as the client consumes: a slow reader pauses the satellite
// instead of losing data.
package querybroker

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/orbitplane/orbit/libs/connectclient"
	"github.com/orbitplane/orbit/libs/connectserver"
	"github.com/orbitplane/orbit/libs/obslog"
	"github.com/orbitplane/orbit/libs/svcmain"
	"github.com/orbitplane/orbit/proto/orbit/query/v1/queryv1connect"
	"github.com/orbitplane/orbit/proto/orbit/registry/v1/registryv1connect"
)

// Defaults (docs/limits.md).
const (
	DefaultMaxQueriesPerTenant    = 32
	DefaultMaxQueriesPerSatellite = 8
	DefaultMaxFanout              = 1000
	DefaultTimeout                = 30 * time.Second
	DefaultMaxTimeout             = 10 * time.Minute
	DefaultWindowBytes            = 1 << 20
	MinWindow                     = 4
	MaxWindow                     = 1024
	DefaultMaxBatchBytes          = 64 << 10
	DefaultMaxRows                = 10_000_000
	DefaultMaxBytes               = 1 << 30
	MaxSQLBytes                   = 64 << 10
)

// Config configures the broker.
type Config struct {
	Server                 connectserver.Config
	RegistryURL            string
	MaxQueriesPerTenant    int
	MaxQueriesPerSatellite int
	// MaxFanout bounds the satellites one selector query reaches.
	MaxFanout      int
	DefaultTimeout time.Duration
	MaxTimeout     time.Duration
	// WindowBytes is how much result data a satellite may send ahead of the
	// client: Window = WindowBytes / MaxBatchBytes frames of credit (between
	// MinWindow and MaxWindow), so small batches do not starve a fast link
	// and memory per satellite stays about WindowBytes.
	WindowBytes   int
	Window        int
	MaxBatchBytes int
	MaxRows       int64
	MaxBytes      int64
}

// RegisterFlags defines the broker's flags.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Server.Addr, "addr", "127.0.0.1:8084", "listen address")
	fs.StringVar(&c.RegistryURL, "registry-url", "http://127.0.0.1:8083", "registry base URL")
	fs.IntVar(&c.MaxQueriesPerTenant, "max-queries-per-tenant", DefaultMaxQueriesPerTenant, "queries a tenant may run at once")
	fs.IntVar(&c.MaxQueriesPerSatellite, "max-queries-per-satellite", DefaultMaxQueriesPerSatellite, "queries one satellite may run at once (through this broker)")
	fs.IntVar(&c.MaxFanout, "max-fanout", DefaultMaxFanout, "satellites one selector query may reach")
	fs.DurationVar(&c.DefaultTimeout, "default-timeout", DefaultTimeout, "query deadline when the caller gives none")
	fs.DurationVar(&c.MaxTimeout, "max-timeout", DefaultMaxTimeout, "longest query deadline a caller may ask for")
	fs.IntVar(&c.WindowBytes, "credit-window-bytes", DefaultWindowBytes, "result bytes in flight per satellite (credits = this / max-batch-bytes frames)")
	fs.IntVar(&c.MaxBatchBytes, "max-batch-bytes", DefaultMaxBatchBytes, "largest result batch a satellite sends")
	fs.Int64Var(&c.MaxRows, "max-result-rows", DefaultMaxRows, "most rows per satellite result")
	fs.Int64Var(&c.MaxBytes, "max-result-bytes", DefaultMaxBytes, "most bytes per satellite result")
}

func (c *Config) defaults() {
	if c.MaxQueriesPerTenant <= 0 {
		c.MaxQueriesPerTenant = DefaultMaxQueriesPerTenant
	}
	if c.MaxQueriesPerSatellite <= 0 {
		c.MaxQueriesPerSatellite = DefaultMaxQueriesPerSatellite
	}
	if c.MaxFanout <= 0 {
		c.MaxFanout = DefaultMaxFanout
	}
	if c.DefaultTimeout <= 0 {
		c.DefaultTimeout = DefaultTimeout
	}
	if c.MaxTimeout <= 0 {
		c.MaxTimeout = DefaultMaxTimeout
	}
	if c.MaxBatchBytes <= 0 {
		c.MaxBatchBytes = DefaultMaxBatchBytes
	}
	if c.WindowBytes <= 0 {
		c.WindowBytes = DefaultWindowBytes
	}
	c.Window = min(max(c.WindowBytes/c.MaxBatchBytes, MinWindow), MaxWindow)
	if c.MaxRows <= 0 {
		c.MaxRows = DefaultMaxRows
	}
	if c.MaxBytes <= 0 {
		c.MaxBytes = DefaultMaxBytes
	}
	if c.Server.Service == "" {
		c.Server.Service = "querybroker"
	}
}

// Needs are the shared clients the broker binary connects to.
var Needs = svcmain.Needs{NATS: true}

// Flags registers every flag of the broker binary.
func Flags(fs *flag.FlagSet) { svcmain.AllFlags(Needs, new(Config).RegisterFlags)(fs) }

// Deps are the broker's collaborators.
type Deps struct {
	Logger         *slog.Logger
	TracerProvider trace.TracerProvider
	NATS           *nats.Conn
	Metrics        *prometheus.Registry
	HTTPClient     *http.Client
}

// Service is a broker.
type Service struct {
	cfg      Config
	log      *slog.Logger
	nc       *nats.Conn
	srv      *connectserver.Server
	registry registryv1connect.RegistryServiceClient

	sats    *satCache
	replies *replies

	mu          sync.Mutex
	perTenant   map[string]int
	perSatelite map[string]int

	m metrics
}

type metrics struct {
	queries  *prometheus.CounterVec
	outcomes *prometheus.CounterVec
	frames   prometheus.Counter
	bytes    prometheus.Counter
	latency  prometheus.Histogram
}

// New builds a broker.
func New(cfg Config, deps Deps) (*Service, error) {
	cfg.defaults()
	if deps.Logger == nil {
		deps.Logger = obslog.Discard()
	}
	if deps.NATS == nil || cfg.RegistryURL == "" {
		return nil, errors.New("querybroker: NATS and a registry URL are required")
	}
	// ExecuteQuery writes its own line (broker.query_finished) when a query ends.
	cfg.Server.SelfLogged = append(cfg.Server.SelfLogged, queryv1connect.QueryServiceExecuteQueryProcedure)
	srv, err := connectserver.New(cfg.Server, connectserver.Deps{Logger: deps.Logger, TracerProvider: deps.TracerProvider, Registry: deps.Metrics})
	if err != nil {
		return nil, err
	}
	hc, opts, err := connectclient.For(deps.HTTPClient, deps.TracerProvider)
	if err != nil {
		return nil, err
	}
	s := &Service{
		cfg: cfg, log: deps.Logger, nc: deps.NATS, srv: srv,
		registry:  registryv1connect.NewRegistryServiceClient(hc, cfg.RegistryURL, opts...),
		perTenant: map[string]int{}, perSatelite: map[string]int{}, sats: newSatCache(), replies: newReplies(),
	}
	reg := prometheus.WrapRegistererWith(prometheus.Labels{"service": cfg.Server.Service}, srv.Registry())
	s.m = metrics{
		queries:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "orbit_broker_queries_total", Help: "Queries, by target kind and result."}, []string{"target", "result"}),
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "orbit_broker_satellite_outcomes_total", Help: "Per-satellite query outcomes."}, []string{"outcome"}),
		frames:   prometheus.NewCounter(prometheus.CounterOpts{Name: "orbit_broker_result_frames_total", Help: "Result frames relayed."}),
		bytes:    prometheus.NewCounter(prometheus.CounterOpts{Name: "orbit_broker_result_bytes_total", Help: "Result bytes relayed (NATS payload)."}),
		latency:  prometheus.NewHistogram(prometheus.HistogramOpts{Name: "orbit_broker_query_seconds", Help: "Query duration.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 18)}),
	}
	reg.MustRegister(s.m.queries, s.m.outcomes, s.m.frames, s.m.bytes, s.m.latency)
	a := &api{s: s}
	path, generated := queryv1connect.NewQueryServiceHandler(a, srv.HandlerOptions()...)
	srv.Handle(path, generated)
	// ExecuteQuery's own path, ahead of the service's: protobuf callers get
	// the batches as the satellites encoded them, JSON callers the generated
	// handler.
	view := connect.NewServerStreamHandler(queryv1connect.QueryServiceExecuteQueryProcedure, a.executeView,
		append(append([]connect.HandlerOption(nil), srv.HandlerOptions()...), connect.WithSchema(executeQueryMethod))...)
	srv.Handle(queryv1connect.QueryServiceExecuteQueryProcedure, byCodec(view, generated))
	return s, nil
}

// Listen binds the port; URL is then valid.
func (s *Service) Listen() error {
	_, err := s.srv.Listen()
	return err
}

// URL is the broker's base URL.
func (s *Service) URL() string { return s.srv.URL() }

// Run serves until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	bg, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { s.sats.run(bg, s); close(done) }()
	if err := s.replies.start(s.nc); err != nil {
		stop()
		<-done
		return err
	}
	defer s.replies.stop()
	err := s.srv.Run(ctx)
	stop()
	<-done
	return err
}

// acquire takes a tenant slot; release gives it back.
func (s *Service) acquireTenant(tenant string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.perTenant[tenant] >= s.cfg.MaxQueriesPerTenant {
		return connect.NewError(connect.CodeResourceExhausted, fmt.Errorf("tenant runs %d queries, its limit; retry when one finishes", s.cfg.MaxQueriesPerTenant))
	}
	s.perTenant[tenant]++
	return nil
}

func (s *Service) releaseTenant(tenant string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.perTenant[tenant]--; s.perTenant[tenant] <= 0 {
		delete(s.perTenant, tenant)
	}
}

func (s *Service) acquireSatellite(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.perSatelite[id] >= s.cfg.MaxQueriesPerSatellite {
		return false
	}
	s.perSatelite[id]++
	return true
}

func (s *Service) releaseSatellite(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.perSatelite[id]--; s.perSatelite[id] <= 0 {
		delete(s.perSatelite, id)
	}
}
