// Package connectserver is the one HTTP server every Orbit service runs: a
// single port serving Connect, gRPC and gRPC-Web (HTTP/1.1 and h2c, or TLS),
// with gRPC health, reflection, Prometheus /metrics, /healthz and /readyz,
// CORS for browsers, header and message size limits, panic recovery, request
// logging, OpenTelemetry tracing, and a graceful drain when its context ends.
package connectserver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	connectcors "connectrpc.com/cors"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"connectrpc.com/otelconnect"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/cors"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/orbitplane/orbit/libs/reqctx"
)

// Defaults for the limits in Config (docs/limits.md).
const (
	DefaultAddr                 = "127.0.0.1:0"
	DefaultReadHeaderTimeout    = 10 * time.Second
	DefaultIdleTimeout          = 2 * time.Minute
	DefaultMaxHeaderBytes       = 64 << 10
	DefaultReadMaxBytes         = 16 << 20
	DefaultSendMaxBytes         = 16 << 20
	DefaultCompressMinBytes     = 16 << 10
	DefaultShutdownTimeout      = 20 * time.Second
	DefaultMaxConcurrentStreams = 1000
)

// Config configures a server. Zero values take the defaults above.
type Config struct {
	// Addr is host:port to listen on; port 0 picks a free one.
	Addr string
	// Service names the server in logs and metrics.
	Service string
	// ReadHeaderTimeout bounds reading a request's headers (slowloris).
	ReadHeaderTimeout time.Duration
	// IdleTimeout closes idle keep-alive connections.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds a request's headers; larger gets 431.
	MaxHeaderBytes int
	// ReadMaxBytes bounds one received message; larger gets ResourceExhausted.
	ReadMaxBytes int
	// SendMaxBytes bounds one sent message.
	SendMaxBytes int
	// CompressMinBytes: responses smaller than this are never compressed.
	CompressMinBytes int
	// MaxConcurrentStreams bounds HTTP/2 streams per connection.
	MaxConcurrentStreams int
	// CORSOrigins may call from browsers; "*" allows any. Empty: no CORS.
	CORSOrigins []string
	// ShutdownTimeout bounds the drain; streams still open then are canceled.
	ShutdownTimeout time.Duration
	// DrainDelay keeps serving (while /readyz and health say NOT_SERVING) so
	// load balancers stop routing here before the listener closes.
	DrainDelay time.Duration
	// DistrustRemoteTrace starts a new trace per request (linked to the
	// caller's) instead of continuing the caller's trace.
	DistrustRemoteTrace bool
	// TLS, if set, serves HTTPS (HTTP/2 and HTTP/1.1) instead of h2c.
	TLS *tls.Config
	// SelfLogged names procedures whose handlers write their own line when
	// they finish; the generic request line is then at debug level, so one
	// request is one info line. Failures are logged as usual.
	SelfLogged []string
}

func (c *Config) setDefaults() {
	if c.Addr == "" {
		c.Addr = DefaultAddr
	}
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&c.MaxHeaderBytes, DefaultMaxHeaderBytes)
	def(&c.ReadMaxBytes, DefaultReadMaxBytes)
	def(&c.SendMaxBytes, DefaultSendMaxBytes)
	def(&c.CompressMinBytes, DefaultCompressMinBytes)
	def(&c.MaxConcurrentStreams, DefaultMaxConcurrentStreams)
	defd := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	defd(&c.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	defd(&c.IdleTimeout, DefaultIdleTimeout)
	defd(&c.ShutdownTimeout, DefaultShutdownTimeout)
}

// Deps are the server's collaborators.
type Deps struct {
	Logger         *slog.Logger
	TracerProvider trace.TracerProvider
	// Registry receives the server's metrics and is served on /metrics; nil
	// makes a new one with the Go and process collectors.
	Registry *prometheus.Registry
}

// Server is one listening port with its services.
type Server struct {
	cfg      Config
	log      *slog.Logger
	reg      *prometheus.Registry
	mux      *http.ServeMux
	health   *grpchealth.StaticChecker
	opts     []connect.HandlerOption
	srv      *http.Server
	baseCtx  context.Context
	cancel   context.CancelFunc
	mu       sync.Mutex
	services []string
	ln       net.Listener
	ready    bool
	started  bool
}

// New builds a server; register services with Handle, then Run it. Servers
// sharing one Registry (services composed in one process) need distinct
// Config.Service names: their metrics differ only by that label.
func New(cfg Config, deps Deps) (*Server, error) {
	cfg.setDefaults()
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	tp := deps.TracerProvider
	if tp == nil {
		tp = noop.NewTracerProvider()
	}
	reg := deps.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	otelOpts := []otelconnect.Option{
		otelconnect.WithTracerProvider(tp),
		otelconnect.WithPropagator(reqctx.Propagator()),
		otelconnect.WithoutMetrics(),
	}
	if !cfg.DistrustRemoteTrace {
		otelOpts = append(otelOpts, otelconnect.WithTrustRemote())
	}
	otel, err := otelconnect.NewInterceptor(otelOpts...)
	if err != nil {
		return nil, fmt.Errorf("connectserver: otel interceptor: %w", err)
	}
	m, err := newMetrics(reg, cfg.Service)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:    cfg,
		log:    log,
		reg:    reg,
		mux:    http.NewServeMux(),
		health: grpchealth.NewStaticChecker(),
	}
	s.baseCtx, s.cancel = context.WithCancel(context.Background())
	s.opts = []connect.HandlerOption{
		connect.WithInterceptors(otel, reqctx.ServerInterceptor(), m.interceptor(), newLogInterceptor(log, cfg.SelfLogged)),
		connect.WithReadMaxBytes(cfg.ReadMaxBytes),
		connect.WithSendMaxBytes(cfg.SendMaxBytes),
		connect.WithCompressMinBytes(cfg.CompressMinBytes),
		connect.WithRecover(s.recover),
	}
	s.mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	s.mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	s.mux.HandleFunc("/readyz", s.readyz)
	return s, nil
}

// HandlerOptions must be passed to every generated New...Handler so the
// server's interceptors and limits apply.
func (s *Server) HandlerOptions() []connect.HandlerOption { return s.opts }

// Handle mounts a generated handler at its path ("/pkg.v1.Service/"); the
// service becomes visible to health checks and reflection. Call it before Run.
func (s *Server) Handle(path string, h http.Handler) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if name := strings.Trim(path, "/"); name != "" && !strings.Contains(name, "/") {
		s.services = append(s.services, name)
	}
	s.mux.Handle(path, corked(h))
}

// HandleHTTP mounts a plain HTTP handler (the web UI, OTLP ingest) that is not
// part of health or reflection.
func (s *Server) HandleHTTP(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// Registry is where the server's and its services' metrics go.
func (s *Server) Registry() *prometheus.Registry { return s.reg }

// Listen binds the port (Run does so if not yet done) and returns its address.
func (s *Server) Listen() (net.Addr, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln != nil {
		return s.ln.Addr(), nil
	}
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("connectserver: listen %s: %w", s.cfg.Addr, err)
	}
	s.ln = ln
	return ln.Addr(), nil
}

// Addr is the bound address, or "" before Listen.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// URL is the base URL clients use, after Listen.
func (s *Server) URL() string {
	scheme := "http"
	if s.cfg.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + s.Addr()
}

// SetReady flips health (every service) and /readyz.
func (s *Server) SetReady(ready bool) {
	s.mu.Lock()
	s.ready = ready
	services := append([]string{""}, s.services...)
	s.mu.Unlock()
	st := grpchealth.StatusNotServing
	if ready {
		st = grpchealth.StatusServing
	}
	for _, name := range services {
		s.health.SetStatus(name, st)
	}
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	ready := s.ready
	s.mu.Unlock()
	if !ready {
		http.Error(w, "not ready", http.StatusServiceUnavailable)
		return
	}
	_, _ = w.Write([]byte("ok\n"))
}

// Run serves until ctx ends, then drains: health turns NOT_SERVING, after
// DrainDelay the listener closes, in-flight requests get ShutdownTimeout to
// finish, and streams still open after that are canceled. It returns nil
// after a clean drain.
func (s *Server) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.started {
		s.mu.Unlock()
		return errors.New("connectserver: Run called twice")
	}
	s.started = true
	services := append([]string(nil), s.services...)
	s.mu.Unlock()
	if _, err := s.Listen(); err != nil {
		return err
	}

	healthPath, healthHandler := grpchealth.NewHandler(s.health, s.opts...)
	s.mux.Handle(healthPath, healthHandler)
	reflector := grpcreflect.NewStaticReflector(append(services, grpchealth.HealthV1ServiceName)...)
	s.mux.Handle(grpcreflect.NewHandlerV1(reflector, s.opts...))
	s.mux.Handle(grpcreflect.NewHandlerV1Alpha(reflector, s.opts...))

	var handler http.Handler = s.mux
	if len(s.cfg.CORSOrigins) > 0 {
		handler = cors.New(cors.Options{
			AllowedOrigins: s.cfg.CORSOrigins,
			AllowedMethods: connectcors.AllowedMethods(),
			AllowedHeaders: append(connectcors.AllowedHeaders(), "Authorization", "Traceparent", "Tracestate", "Baggage"),
			ExposedHeaders: append(connectcors.ExposedHeaders(), reqctx.RequestIDHeader),
			MaxAge:         7200,
		}).Handler(handler)
	}
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	if s.cfg.TLS != nil {
		protocols.SetHTTP2(true)
	} else {
		protocols.SetUnencryptedHTTP2(true)
	}
	s.srv = &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: s.cfg.ReadHeaderTimeout,
		IdleTimeout:       s.cfg.IdleTimeout,
		MaxHeaderBytes:    s.cfg.MaxHeaderBytes,
		Protocols:         protocols,
		HTTP2:             &http.HTTP2Config{MaxConcurrentStreams: s.cfg.MaxConcurrentStreams},
		BaseContext:       func(net.Listener) context.Context { return s.baseCtx },
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	ln := s.ln
	if s.cfg.TLS != nil {
		tc := s.cfg.TLS.Clone()
		tc.NextProtos = []string{"h2", "http/1.1"}
		ln = tls.NewListener(ln, tc)
	}
	s.SetReady(true)
	serveErr := make(chan error, 1)
	go func() { serveErr <- s.srv.Serve(ln) }()
	s.log.Info("serving", "service", s.cfg.Service, "addr", s.Addr(), "services", services)

	select {
	case err := <-serveErr:
		s.cancel()
		return fmt.Errorf("connectserver: serve: %w", err)
	case <-ctx.Done():
	}
	s.SetReady(false)
	s.log.Info("draining", "service", s.cfg.Service, "drain_delay", s.cfg.DrainDelay, "timeout", s.cfg.ShutdownTimeout)
	if s.cfg.DrainDelay > 0 {
		time.Sleep(s.cfg.DrainDelay)
	}
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	err := s.srv.Shutdown(sctx)
	s.cancel() // cancels streams still open
	if err != nil {
		_ = s.srv.Close()
		s.log.Warn("drain timed out; open streams canceled", "service", s.cfg.Service)
	}
	if e := <-serveErr; e != nil && !errors.Is(e, http.ErrServerClosed) {
		return fmt.Errorf("connectserver: serve: %w", e)
	}
	return nil
}

func (s *Server) recover(ctx context.Context, spec connect.Spec, _ http.Header, p any) error {
	s.log.ErrorContext(ctx, "panic in handler", "procedure", spec.Procedure, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
	return connect.NewError(connect.CodeInternal, errors.New("internal error"))
}
