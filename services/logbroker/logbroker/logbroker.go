// Package logbroker is a Liftbridge-style log: named streams bound to NATS
// subjects, with offsets, retention, key compaction, acks, dedup, cursors and
// consumer groups. Storage and replication are NATS JetStream's; this
// service maps the stream API onto it, keeps tenants apart and enforces the
// limits (docs/logbroker.md).
//
// Every JetStream object it creates is named from the tenant, so a tenant
// reaches only its own streams: stream "app" of tenant T is the JetStream
// stream LB_<hash(T)>_app on subjects lb.T.<subject>, and its metadata names
// the tenant, which every lookup checks.
package logbroker

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
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/orbitplane/orbit/libs/connectserver"
	"github.com/orbitplane/orbit/libs/loadingcache"
	"github.com/orbitplane/orbit/libs/logstream"
	"github.com/orbitplane/orbit/libs/obslog"
	"github.com/orbitplane/orbit/libs/svcmain"
	"github.com/orbitplane/orbit/proto/orbit/logbroker/v1/logbrokerv1connect"
)

// Defaults (docs/limits.md).
const (
	// DefaultMaxMessageBytes leaves room for headers under NATS's default
	// 1 MiB max_payload.
	DefaultMaxMessageBytes           = logstream.DefaultMaxMessageBytes
	DefaultMaxBatchMessages          = 1000
	DefaultMaxBatchBytes             = 8 << 20
	DefaultMaxSubscriptionsPerTenant = 64
	DefaultMaxStreamsPerTenant       = 100
	DefaultDuplicateWindow           = 2 * time.Minute
	DefaultPublishTimeout            = 10 * time.Second
	// MaxReplicas is the most replicas a stream may ask for.
	MaxReplicas = 5
)

// Config configures the broker.
type Config struct {
	Server                    connectserver.Config
	MaxMessageBytes           int
	MaxBatchMessages          int
	MaxBatchBytes             int
	MaxSubscriptionsPerTenant int
	MaxStreamsPerTenant       int
	// DuplicateWindow is how long a dedup ID is remembered.
	DuplicateWindow time.Duration
	// PublishTimeout bounds waiting for JetStream's ack.
	PublishTimeout time.Duration
	// CursorReplicas is the replica count of the cursor stream.
	CursorReplicas int
}

// RegisterFlags defines the broker's flags.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Server.Addr, "addr", "127.0.0.1:8086", "listen address")
	fs.IntVar(&c.MaxMessageBytes, "max-message-bytes", DefaultMaxMessageBytes, "largest message (key + value + headers); at most the NATS server's max_payload")
	fs.IntVar(&c.MaxBatchMessages, "max-batch-messages", DefaultMaxBatchMessages, "most messages in one PublishBatch")
	fs.IntVar(&c.MaxBatchBytes, "max-batch-bytes", DefaultMaxBatchBytes, "largest PublishBatch (sum of its messages)")
	fs.IntVar(&c.MaxSubscriptionsPerTenant, "max-subscriptions-per-tenant", DefaultMaxSubscriptionsPerTenant, "open Subscribe streams per tenant on this instance")
	fs.IntVar(&c.MaxStreamsPerTenant, "max-streams-per-tenant", DefaultMaxStreamsPerTenant, "streams a tenant may have")
	fs.DurationVar(&c.DuplicateWindow, "duplicate-window", DefaultDuplicateWindow, "how long a publish dedup ID is remembered")
	fs.DurationVar(&c.PublishTimeout, "publish-timeout", DefaultPublishTimeout, "longest wait for JetStream to acknowledge a publish")
	fs.IntVar(&c.CursorReplicas, "cursor-replicas", 1, "replicas of the cursor stream")
}

func (c *Config) defaults() {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&c.MaxMessageBytes, DefaultMaxMessageBytes)
	def(&c.MaxBatchMessages, DefaultMaxBatchMessages)
	def(&c.MaxBatchBytes, DefaultMaxBatchBytes)
	def(&c.MaxSubscriptionsPerTenant, DefaultMaxSubscriptionsPerTenant)
	def(&c.MaxStreamsPerTenant, DefaultMaxStreamsPerTenant)
	def(&c.CursorReplicas, 1)
	if c.DuplicateWindow <= 0 {
		c.DuplicateWindow = DefaultDuplicateWindow
	}
	if c.PublishTimeout <= 0 {
		c.PublishTimeout = DefaultPublishTimeout
	}
	// A batch arrives as one request: room for it and its framing.
	if c.Server.ReadMaxBytes < c.MaxBatchBytes+c.MaxBatchBytes/8 {
		c.Server.ReadMaxBytes = c.MaxBatchBytes + c.MaxBatchBytes/8
	}
	if c.Server.Service == "" {
		c.Server.Service = "logbroker"
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
}

// Service is a log broker instance; instances share nothing but JetStream.
type Service struct {
	cfg     Config
	log     *slog.Logger
	nc      *nats.Conn
	js      jetstream.JetStream
	srv     *connectserver.Server
	streams *loadingcache.Cache[streamKey, *streamMeta]

	mu   sync.Mutex
	subs map[string]int // open subscriptions per tenant

	m metrics
}

type metrics struct {
	published *prometheus.CounterVec
	bytes     prometheus.Counter
	delivered prometheus.Counter
	subs      prometheus.Gauge
	publish   prometheus.Histogram
}

// New builds a broker.
func New(cfg Config, deps Deps) (*Service, error) {
	cfg.defaults()
	if deps.Logger == nil {
		deps.Logger = obslog.Discard()
	}
	if deps.NATS == nil {
		return nil, errors.New("logbroker: a NATS connection is required")
	}
	if mp := deps.NATS.MaxPayload(); mp > 0 && int64(cfg.MaxMessageBytes) > mp-4096 {
		return nil, fmt.Errorf("logbroker: --max-message-bytes %d does not fit the NATS server's max_payload %d (minus 4 KiB for headers)", cfg.MaxMessageBytes, mp)
	}
	js, err := jetstream.New(deps.NATS, jetstream.WithPublishAsyncMaxPending(4*cfg.MaxBatchMessages))
	if err != nil {
		return nil, fmt.Errorf("logbroker: jetstream: %w", err)
	}
	// Publishing and cursor commits are the broker's hot path, and in
	// orbit dev its own log lines flow back into it: one line per publish
	// would feed itself. They log at debug (failures still at info).
	cfg.Server.SelfLogged = append(cfg.Server.SelfLogged,
		logbrokerv1connect.LogBrokerServicePublishProcedure, logbrokerv1connect.LogBrokerServicePublishBatchProcedure,
		logbrokerv1connect.LogBrokerServiceSetCursorProcedure, logbrokerv1connect.LogBrokerServiceGetCursorProcedure)
	srv, err := connectserver.New(cfg.Server, connectserver.Deps{Logger: deps.Logger, TracerProvider: deps.TracerProvider, Registry: deps.Metrics})
	if err != nil {
		return nil, err
	}
	s := &Service{cfg: cfg, log: deps.Logger, nc: deps.NATS, js: js, srv: srv, subs: map[string]int{}}
	// Stream configs change rarely; a stale entry is caught by JetStream
	// (no stream answers the subject) and dropped.
	s.streams = loadingcache.New(loadingcache.Config{TTL: 30 * time.Second, NegativeTTL: time.Second, MaxEntries: 10000}, s.loadStream)
	reg := prometheus.WrapRegistererWith(prometheus.Labels{"service": cfg.Server.Service}, srv.Registry())
	s.m = metrics{
		published: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "orbit_logbroker_published_total", Help: "Messages published, by ack policy."}, []string{"ack"}),
		bytes:     prometheus.NewCounter(prometheus.CounterOpts{Name: "orbit_logbroker_published_bytes_total", Help: "Message bytes published (key + value)."}),
		delivered: prometheus.NewCounter(prometheus.CounterOpts{Name: "orbit_logbroker_delivered_total", Help: "Messages sent to subscribers."}),
		subs:      prometheus.NewGauge(prometheus.GaugeOpts{Name: "orbit_logbroker_subscriptions", Help: "Open Subscribe streams."}),
		publish:   prometheus.NewHistogram(prometheus.HistogramOpts{Name: "orbit_logbroker_publish_seconds", Help: "Publish (and PublishBatch) latency to JetStream's ack.", Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18)}),
	}
	reg.MustRegister(s.m.published, s.m.bytes, s.m.delivered, s.m.subs, s.m.publish)
	srv.Handle(logbrokerv1connect.NewLogBrokerServiceHandler(&api{s: s}, srv.HandlerOptions()...))
	return s, nil
}

// Listen binds the port; URL is then valid.
func (s *Service) Listen() error {
	_, err := s.srv.Listen()
	return err
}

// URL is the broker's base URL.
func (s *Service) URL() string { return s.srv.URL() }

// Run creates the cursor stream and serves until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	_, err := s.js.CreateOrUpdateStream(cctx, jetstream.StreamConfig{
		Name:              logstream.CursorStream,
		Description:       "logbroker consumer cursors: the newest offset per tenant, stream and consumer",
		Subjects:          []string{logstream.CursorPrefix + ".>"},
		Storage:           jetstream.FileStorage,
		Replicas:          s.cfg.CursorReplicas,
		MaxMsgsPerSubject: 1,
		AllowDirect:       true,
	})
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped while starting
		}
		return fmt.Errorf("logbroker: cursor stream: %w", err)
	}
	return s.srv.Run(ctx)
}

func (s *Service) acquireSub(tenant string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.subs[tenant] >= s.cfg.MaxSubscriptionsPerTenant {
		return connect.NewError(connect.CodeResourceExhausted, fmt.Errorf("tenant has %d open subscriptions on this broker, its limit; close one first", s.cfg.MaxSubscriptionsPerTenant))
	}
	s.subs[tenant]++
	s.m.subs.Inc()
	return nil
}

func (s *Service) releaseSub(tenant string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.subs[tenant]--; s.subs[tenant] <= 0 {
		delete(s.subs, tenant)
	}
	s.m.subs.Dec()
}
