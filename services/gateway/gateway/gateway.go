// Package gateway is Orbit's one public door: the query API and the read side
// of the satellite registry over Connect, gRPC and gRPC-Web, for browsers,
// orbitctl and other programs. Every call carries an API key
// (Authorization: Bearer ok_...), which the gateway resolves to a tenant
// through cached context records in the region's etcd; a tenant sees and
// queries only its own satellites, within per-tenant limits.
package gateway

import (
	"context"
	"crypto/ed25519"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/time/rate"

	"github.com/orbitplane/orbit/libs/connectclient"
	"github.com/orbitplane/orbit/libs/connectserver"
	"github.com/orbitplane/orbit/libs/contextstore"
	"github.com/orbitplane/orbit/libs/directtoken"
	"github.com/orbitplane/orbit/libs/loadingcache"
	"github.com/orbitplane/orbit/libs/obslog"
	"github.com/orbitplane/orbit/libs/reqctx"
	"github.com/orbitplane/orbit/libs/svcmain"
	contextsv1 "github.com/orbitplane/orbit/proto/orbit/contexts/v1"
	"github.com/orbitplane/orbit/proto/orbit/ctxpublisher/v1/ctxpublisherv1connect"
	"github.com/orbitplane/orbit/proto/orbit/gateway/v1/gatewayv1connect"
	"github.com/orbitplane/orbit/proto/orbit/logbroker/v1/logbrokerv1connect"
	"github.com/orbitplane/orbit/proto/orbit/platform/v1/platformv1connect"
	queryv1 "github.com/orbitplane/orbit/proto/orbit/query/v1"
	"github.com/orbitplane/orbit/proto/orbit/query/v1/queryv1connect"
	"github.com/orbitplane/orbit/proto/orbit/registry/v1/registryv1connect"
)

// Defaults (docs/limits.md).
const (
	DefaultRequestsPerSecond = 50
	DefaultBurst             = 100
	DefaultMaxQueries        = 16
)

// Config configures the gateway.
type Config struct {
	Server      connectserver.Config
	BrokerURL   string
	RegistryURL string
	// LogBrokerURL, when set, serves the log broker's API (issue 6).
	LogBrokerURL string
	// RequestsPerSecond per tenant when its context sets none.
	RequestsPerSecond int
	Burst             int
	// MaxQueries running at once per tenant when its context sets none.
	MaxQueries int
	Cache      loadingcache.Config
	Region     string
	// DirectTokenTTL is the lifetime of direct-mode tokens.
	DirectTokenTTL time.Duration
	// PlatformURL and CtxPublisherURL, set on the hub's gateway, relay the
	// management APIs (admin token, not API keys) for the web UI's admin
	// pages; empty serves none.
	PlatformURL     string
	CtxPublisherURL string
	// WebDir is the built web UI (web/dist) served at "/"; empty serves none.
	WebDir string
}

// RegisterFlags defines the gateway's flags.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Server.Addr, "addr", "127.0.0.1:8080", "public listen address")
	fs.StringVar(&c.BrokerURL, "broker-url", "http://127.0.0.1:8084", "query broker base URL")
	fs.StringVar(&c.RegistryURL, "registry-url", "http://127.0.0.1:8083", "registry base URL")
	fs.StringVar(&c.LogBrokerURL, "logbroker-url", "http://127.0.0.1:8086", "log broker base URL (empty: no logs API)")
	fs.IntVar(&c.RequestsPerSecond, "tenant-rps", DefaultRequestsPerSecond, "requests per second per tenant (unless its context says otherwise)")
	fs.IntVar(&c.Burst, "tenant-burst", DefaultBurst, "request burst per tenant")
	fs.IntVar(&c.MaxQueries, "tenant-max-queries", DefaultMaxQueries, "queries per tenant at once (unless its context says otherwise)")
	fs.Func("cors-origins", "comma-separated origins browsers may call from (\"*\" = any)", func(s string) error {
		c.Server.CORSOrigins = svcmain.SplitList(s)
		return nil
	})
	fs.DurationVar(&c.Cache.TTL, "auth-cache-ttl", loadingcache.DefaultTTL, "how long a resolved key stays cached (an etcd watch applies changes at once)")
	fs.DurationVar(&c.DirectTokenTTL, "direct-token-ttl", directtoken.DefaultTTL, "lifetime of direct-mode tokens (at most 15m)")
	fs.StringVar(&c.PlatformURL, "platform-url", "", "hub only: the platform service's URL, to relay its admin API (callers present the admin token; empty: not relayed)")
	fs.StringVar(&c.CtxPublisherURL, "ctxpublisher-url", "", "hub only: the context publisher's URL, to relay its status to admins (needs --platform-url to check the admin token)")
	fs.StringVar(&c.WebDir, "web-dir", "", "built web UI to serve at / (web/dist after npm --prefix web run build; empty: no UI)")
	fs.DurationVar(&c.Cache.NegativeTTL, "auth-negative-ttl", loadingcache.DefaultNegativeTTL, "how long an unknown key stays cached as unknown")
}

func (c *Config) defaults() {
	if c.RequestsPerSecond <= 0 {
		c.RequestsPerSecond = DefaultRequestsPerSecond
	}
	if c.Burst <= 0 {
		c.Burst = DefaultBurst
	}
	if c.MaxQueries <= 0 {
		c.MaxQueries = DefaultMaxQueries
	}
	if c.Server.Service == "" {
		c.Server.Service = "gateway"
	}
}

// Needs are the shared clients the gateway binary connects to.
var Needs = svcmain.Needs{Etcd: true}

// Flags registers every flag of the gateway binary.
func Flags(fs *flag.FlagSet) { svcmain.AllFlags(Needs, new(Config).RegisterFlags)(fs) }

// Deps are the gateway's collaborators.
type Deps struct {
	Logger         *slog.Logger
	TracerProvider trace.TracerProvider
	Etcd           *clientv3.Client
	Metrics        *prometheus.Registry
	HTTPClient     *http.Client
}

// Service is a gateway.
type Service struct {
	cfg    Config
	log    *slog.Logger
	srv    *connectserver.Server
	ctxs   *contextstore.Store
	broker queryv1connect.QueryServiceClient
	// rawExecute is the broker's ExecuteQuery, its answers undecoded.
	rawExecute *connect.Client[queryv1.ExecuteQueryRequest, rawResponse]
	registry   registryv1connect.RegistryServiceClient
	// logbroker is nil when the gateway serves no logs API.
	logbroker logbrokerv1connect.LogBrokerServiceClient
	// platform and ctxpub are set on the hub's gateway (admin APIs).
	platform platformv1connect.PlatformServiceClient
	ctxpub   ctxpublisherv1connect.ContextPublisherServiceClient

	mu       sync.Mutex
	limiters map[string]*rate.Limiter
	running  map[string]int

	etcd      *clientv3.Client
	directMu  sync.Mutex
	directSig ed25519.PrivateKey

	authFailures prometheus.Counter
	throttled    *prometheus.CounterVec
}

// New builds a gateway.
func New(cfg Config, deps Deps) (*Service, error) {
	cfg.defaults()
	if deps.Logger == nil {
		deps.Logger = obslog.Discard()
	}
	if deps.Etcd == nil || cfg.BrokerURL == "" || cfg.RegistryURL == "" {
		return nil, errors.New("gateway: etcd, a broker URL and a registry URL are required")
	}
	srv, err := connectserver.New(cfg.Server, connectserver.Deps{Logger: deps.Logger, TracerProvider: deps.TracerProvider, Registry: deps.Metrics})
	if err != nil {
		return nil, err
	}
	hc, opts, err := connectclient.For(deps.HTTPClient, deps.TracerProvider)
	if err != nil {
		return nil, err
	}
	s := &Service{
		cfg: cfg, log: deps.Logger, srv: srv, etcd: deps.Etcd,
		ctxs:       contextstore.New(deps.Etcd, cfg.Cache, deps.Logger),
		broker:     queryv1connect.NewQueryServiceClient(hc, cfg.BrokerURL, opts...),
		rawExecute: rawExecuteQueryClient(hc, cfg.BrokerURL, opts),
		registry:   registryv1connect.NewRegistryServiceClient(hc, cfg.RegistryURL, opts...),
		limiters:   map[string]*rate.Limiter{}, running: map[string]int{},
	}
	if cfg.LogBrokerURL != "" {
		s.logbroker = logbrokerv1connect.NewLogBrokerServiceClient(hc, cfg.LogBrokerURL, opts...)
	}
	if cfg.PlatformURL != "" {
		s.platform = platformv1connect.NewPlatformServiceClient(hc, cfg.PlatformURL, opts...)
	}
	if cfg.CtxPublisherURL != "" {
		if cfg.PlatformURL == "" {
			return nil, errors.New("gateway: --ctxpublisher-url needs --platform-url (the platform checks the admin token)")
		}
		s.ctxpub = ctxpublisherv1connect.NewContextPublisherServiceClient(hc, cfg.CtxPublisherURL, opts...)
	}
	reg := prometheus.WrapRegistererWith(prometheus.Labels{"service": cfg.Server.Service}, srv.Registry())
	s.authFailures = prometheus.NewCounter(prometheus.CounterOpts{Name: "orbit_gateway_auth_failures_total", Help: "Requests refused for a missing or bad API key."})
	s.throttled = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "orbit_gateway_throttled_total", Help: "Requests refused by a per-tenant limit."}, []string{"limit"})
	reg.MustRegister(s.authFailures, s.throttled)
	reg.MustRegister(s.ctxs.Collectors()...)

	hopts := append(srv.HandlerOptions(), connect.WithInterceptors(&auth{s: s}))
	q := &queryAPI{s: s}
	srv.Handle(queryv1connect.NewQueryServiceHandler(q, hopts...))
	// ExecuteQuery's results pass through undecoded (rawquery.go); this
	// exact path takes precedence over the service's prefix.
	eqOpts := append(append(append([]connect.HandlerOption(nil), hopts...), connect.WithSchema(executeQueryMethod)), rawCodecs()...)
	srv.Handle(queryv1connect.QueryServiceExecuteQueryProcedure, connect.NewServerStreamHandler(queryv1connect.QueryServiceExecuteQueryProcedure, q.executeQuery, eqOpts...))
	srv.Handle(registryv1connect.NewRegistryServiceHandler(&registryAPI{s: s}, hopts...))
	srv.Handle(gatewayv1connect.NewGatewayServiceHandler(&gatewayAPI{s: s}, hopts...))
	srv.Handle(logbrokerv1connect.NewLogBrokerServiceHandler(&logsAPI{s: s}, hopts...))
	// The admin APIs take the admin token, not API keys: no auth interceptor.
	if s.platform != nil {
		srv.Handle(platformv1connect.NewPlatformServiceHandler(&platformAPI{s: s}, srv.HandlerOptions()...))
	}
	if s.ctxpub != nil {
		srv.Handle(ctxpublisherv1connect.NewContextPublisherServiceHandler(&ctxpubAPI{s: s}, srv.HandlerOptions()...))
	}
	if cfg.WebDir != "" {
		web, err := webHandler(cfg.WebDir)
		if err != nil {
			return nil, err
		}
		srv.HandleHTTP("/", web)
	}
	return s, nil
}

// Listen binds the port; URL is then valid.
func (s *Service) Listen() error {
	_, err := s.srv.Listen()
	return err
}

// URL is the gateway's public base URL.
func (s *Service) URL() string { return s.srv.URL() }

// Run serves until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	bg, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { s.ctxs.Run(bg); close(done) }()
	err := s.srv.Run(ctx)
	stop()
	<-done
	return err
}

type principal struct {
	key    *contextsv1.APIKeyContext
	tenant *contextsv1.TenantContext
}

type principalKey struct{}

func principalFrom(ctx context.Context) *principal {
	p, _ := ctx.Value(principalKey{}).(*principal)
	return p
}

// auth authenticates every call and replaces the caller's baggage with the
// authenticated tenant.
type auth struct{ s *Service }

// Authenticate is what the gateway does for every call before its handler:
// API key → key and tenant contexts (through the loading cache), the
// tenant's rate limit, and the request context replaced by the
// authenticated one. Exported for the benchmark that weighs it against a
// whole query (docs/benchmarks.md).
func (s *Service) Authenticate(ctx context.Context, procedure string, h http.Header) (context.Context, error) {
	return (&auth{s: s}).authenticate(ctx, procedure, h)
}

// ScopeAdmin grants every scope.
const ScopeAdmin = "admin"

// requiredScope is the API key scope each procedure needs (the platform's
// scope list, services/platform/store.Scopes). WhoAmI and ListRegions need
// none: any valid key may ask what it is and where it works.
var requiredScope = map[string]string{
	queryv1connect.QueryServiceExecuteQueryProcedure:           "query",
	queryv1connect.QueryServiceGetSchemaProcedure:              "query",
	gatewayv1connect.GatewayServiceGetDirectEndpointProcedure:  "query",
	registryv1connect.RegistryServiceGetSatelliteProcedure:     "satellites:read",
	registryv1connect.RegistryServiceListSatellitesProcedure:   "satellites:read",
	registryv1connect.RegistryServiceWatchSatellitesProcedure:  "satellites:read",
	registryv1connect.RegistryServiceDeleteSatelliteProcedure:  "satellites:write",
	logbrokerv1connect.LogBrokerServiceListStreamsProcedure:    "logs:read",
	logbrokerv1connect.LogBrokerServiceDescribeStreamProcedure: "logs:read",
	logbrokerv1connect.LogBrokerServiceSubscribeProcedure:      "logs:read",
	logbrokerv1connect.LogBrokerServiceGetCursorProcedure:      "logs:read",
	logbrokerv1connect.LogBrokerServiceSetCursorProcedure:      "logs:read",
	logbrokerv1connect.LogBrokerServiceCreateStreamProcedure:   "logs:write",
	logbrokerv1connect.LogBrokerServiceDeleteStreamProcedure:   "logs:write",
	logbrokerv1connect.LogBrokerServicePublishProcedure:        "logs:write",
	logbrokerv1connect.LogBrokerServicePublishBatchProcedure:   "logs:write",
	gatewayv1connect.GatewayServiceWhoAmIProcedure:             "",
	gatewayv1connect.GatewayServiceListRegionsProcedure:        "",
}

// permitted reports whether a key's scopes allow a procedure; procedures
// the table does not know are refused (the gateway serves nothing else).
func permitted(procedure string, scopes []string) (string, bool) {
	need, known := requiredScope[procedure]
	if !known {
		return "", false
	}
	if need == "" {
		return "", true
	}
	for _, sc := range scopes {
		if sc == need || sc == ScopeAdmin {
			return need, true
		}
	}
	return need, false
}

func (a *auth) authenticate(ctx context.Context, procedure string, h http.Header) (context.Context, error) {
	s := a.s
	raw := h.Get("Authorization")
	key, ok := strings.CutPrefix(raw, "Bearer ")
	if !ok || key == "" {
		s.authFailures.Inc()
		return ctx, connect.NewError(connect.CodeUnauthenticated, errors.New("missing API key: send 'Authorization: Bearer <key>'"))
	}
	k, t, err := s.ctxs.AuthAPIKey(ctx, strings.TrimSpace(key))
	if err != nil {
		s.authFailures.Inc()
		if errors.Is(err, contextstore.ErrUnauthenticated) {
			return ctx, connect.NewError(connect.CodeUnauthenticated, errors.New("API key is invalid, revoked or expired"))
		}
		return ctx, connect.NewError(connect.CodeUnavailable, fmt.Errorf("cannot check the API key now: %w", err))
	}
	if need, ok := permitted(procedure, k.Scopes); !ok {
		s.authFailures.Inc()
		if need == "" {
			return ctx, connect.NewError(connect.CodePermissionDenied, fmt.Errorf("%s is not served by the gateway", procedure))
		}
		return ctx, connect.NewError(connect.CodePermissionDenied, fmt.Errorf("this API key lacks the %q scope that %s needs", need, procedure))
	}
	if !s.allow(t) {
		s.throttled.WithLabelValues("rate").Inc()
		return ctx, connect.NewError(connect.CodeResourceExhausted, fmt.Errorf("tenant %s is over its request rate; slow down", t.TenantId))
	}
	rid := reqctx.From(ctx).RequestID
	if !reqctx.ValidID(rid) {
		rid = ""
	}
	ctx, err = reqctx.Replace(ctx, reqctx.Fields{RequestID: rid, Tenant: t.TenantId, User: k.KeyId})
	if err != nil {
		return ctx, connect.NewError(connect.CodeInternal, err)
	}
	ctx, _ = reqctx.EnsureRequestID(ctx)
	return context.WithValue(ctx, principalKey{}, &principal{key: k, tenant: t}), nil
}

func (a *auth) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		ctx, err := a.authenticate(ctx, req.Spec().Procedure, req.Header())
		if err != nil {
			return nil, err
		}
		return next(ctx, req)
	}
}

func (a *auth) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (a *auth) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		ctx, err := a.authenticate(ctx, conn.Spec().Procedure, conn.RequestHeader())
		if err != nil {
			return err
		}
		return next(ctx, conn)
	}
}

func (s *Service) allow(t *contextsv1.TenantContext) bool {
	rps, burst := s.cfg.RequestsPerSecond, s.cfg.Burst
	if t.MaxRequestsPerSecond > 0 {
		rps, burst = int(t.MaxRequestsPerSecond), max(int(t.MaxRequestsPerSecond)*2, 1)
	}
	s.mu.Lock()
	l, ok := s.limiters[t.TenantId]
	if !ok || l.Limit() != rate.Limit(rps) {
		l = rate.NewLimiter(rate.Limit(rps), burst)
		s.limiters[t.TenantId] = l
	}
	s.mu.Unlock()
	return l.Allow()
}

// startQuery takes one of the tenant's query slots.
func (s *Service) startQuery(t *contextsv1.TenantContext) (func(), error) {
	limit := s.cfg.MaxQueries
	if t.MaxConcurrentQueries > 0 {
		limit = int(t.MaxConcurrentQueries)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running[t.TenantId] >= limit {
		s.throttled.WithLabelValues("concurrent_queries").Inc()
		return nil, connect.NewError(connect.CodeResourceExhausted, fmt.Errorf("tenant %s runs %d queries, its limit; wait for one to finish", t.TenantId, limit))
	}
	s.running[t.TenantId]++
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.running[t.TenantId]--; s.running[t.TenantId] <= 0 {
				delete(s.running, t.TenantId)
			}
		})
	}, nil
}

// directKey is the region's direct-token signing key, loaded (or created)
// on first use.
func (s *Service) directKey(ctx context.Context) (ed25519.PrivateKey, error) {
	s.directMu.Lock()
	defer s.directMu.Unlock()
	if s.directSig != nil {
		return s.directSig, nil
	}
	k, err := directtoken.LoadOrCreate(ctx, s.etcd)
	if err != nil {
		return nil, err
	}
	s.directSig = k
	return k, nil
}
