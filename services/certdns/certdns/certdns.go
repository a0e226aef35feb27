// Package certdns is the region's DNS/cert allocator (docs/certdns.md): the
// platform CA and a pool of pre-issued certificates for
// <uuid>.satellites.<domain>, assigned to satellites at registration through
// orbit.certdns.v1.CertDNSService. Built so far: the CA, the pool and the
// assign / status / CA calls; renewal, release, the DNS server and delivery
// over the satellite link come with the rest of issue 4 (those calls answer
// UNIMPLEMENTED saying so).
package certdns

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.opentelemetry.io/otel/trace"

	"github.com/orbitplane/orbit/libs/connectserver"
	"github.com/orbitplane/orbit/libs/obslog"
	"github.com/orbitplane/orbit/libs/svcmain"
	certdnsv1 "github.com/orbitplane/orbit/proto/orbit/certdns/v1"
	"github.com/orbitplane/orbit/proto/orbit/certdns/v1/certdnsv1connect"
	"github.com/orbitplane/orbit/services/certdns/internal/pki"
	"github.com/orbitplane/orbit/services/certdns/internal/pool"
)

// Defaults (docs/limits.md).
const (
	DefaultPoolSize       = 100
	DefaultLowWatermark   = 20
	DefaultLifetime       = 90 * 24 * time.Hour
	DefaultRefillInterval = 30 * time.Second
	// MaxPoolSize bounds --pool-size (each pooled certificate is an etcd key
	// of ≈ 1.5 KiB).
	MaxPoolSize = 100_000
)

// Config configures certdns.
type Config struct {
	Server         connectserver.Config
	Domain         string
	PoolSize       int
	LowWatermark   int
	Lifetime       time.Duration
	RefillInterval time.Duration
	// CACert and CAKey name an operator's CA (PEM files); without them a CA
	// is generated once per region and kept in etcd.
	CACert, CAKey string
}

// RegisterFlags defines certdns's flags.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Server.Addr, "addr", "127.0.0.1:8092", "listen address")
	fs.StringVar(&c.Domain, "domain", "orbit.local", "satellites are named <uuid>.satellites.<domain>")
	fs.IntVar(&c.PoolSize, "pool-size", DefaultPoolSize, "pre-issued certificates to keep ready")
	fs.IntVar(&c.LowWatermark, "low-watermark", DefaultLowWatermark, "refill the pool when it holds this many or fewer")
	fs.DurationVar(&c.Lifetime, "cert-lifetime", DefaultLifetime, "lifetime of an issued certificate")
	fs.DurationVar(&c.RefillInterval, "refill-interval", DefaultRefillInterval, "check the pool at least this often")
	fs.StringVar(&c.CACert, "ca-cert", "", "operator CA certificate (PEM); empty: generate one per region, kept in etcd")
	fs.StringVar(&c.CAKey, "ca-key", "", "operator CA private key (PEM, ECDSA)")
}

// Needs: the region's etcd.
var Needs = svcmain.Needs{Etcd: true}

// Flags registers every flag of the binary.
func Flags(fs *flag.FlagSet) { svcmain.AllFlags(Needs, new(Config).RegisterFlags)(fs) }

// Deps are certdns's collaborators.
type Deps struct {
	Logger         *slog.Logger
	TracerProvider trace.TracerProvider
	Etcd           *clientv3.Client
	Metrics        *prometheus.Registry
}

// Service is one certdns replica.
type Service struct {
	cfg  Config
	log  *slog.Logger
	srv  *connectserver.Server
	ca   *pki.CA
	pool *pool.Pool
}

// New loads (or creates) the CA and builds the pool and the API.
func New(ctx context.Context, cfg Config, deps Deps) (*Service, error) {
	if deps.Logger == nil {
		deps.Logger = obslog.Discard()
	}
	if deps.Etcd == nil {
		return nil, errors.New("certdns: an etcd client is required")
	}
	if cfg.PoolSize > MaxPoolSize {
		return nil, fmt.Errorf("certdns: --pool-size %d is over %d", cfg.PoolSize, MaxPoolSize)
	}
	if cfg.Server.Service == "" {
		cfg.Server.Service = "certdns"
	}
	var ca *pki.CA
	var err error
	switch {
	case cfg.CACert != "" || cfg.CAKey != "":
		certPEM, err1 := os.ReadFile(cfg.CACert)
		keyPEM, err2 := os.ReadFile(cfg.CAKey)
		if err := errors.Join(err1, err2); err != nil {
			return nil, fmt.Errorf("certdns: --ca-cert and --ca-key: %w", err)
		}
		ca, err = pki.Parse(certPEM, keyPEM)
	default:
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		ca, err = pki.LoadOrCreate(cctx, deps.Etcd, cfg.Domain)
		cancel()
	}
	if err != nil {
		return nil, err
	}
	m := pool.NewMetrics()
	p, err := pool.New(pool.Config{Domain: cfg.Domain, Size: cfg.PoolSize, LowWatermark: cfg.LowWatermark, Lifetime: cfg.Lifetime}, deps.Etcd, ca, m)
	if err != nil {
		return nil, err
	}
	srv, err := connectserver.New(cfg.Server, connectserver.Deps{Logger: deps.Logger, TracerProvider: deps.TracerProvider, Registry: deps.Metrics})
	if err != nil {
		return nil, err
	}
	srv.Registry().MustRegister(m.Collectors()...)
	s := &Service{cfg: cfg, log: deps.Logger, srv: srv, ca: ca, pool: p}
	srv.Handle(certdnsv1connect.NewCertDNSServiceHandler(&api{s: s}, srv.HandlerOptions()...))
	return s, nil
}

// Listen binds the port; URL is then valid.
func (s *Service) Listen() error {
	_, err := s.srv.Listen()
	return err
}

// CAPEM is the platform CA's certificate (PEM).
func (s *Service) CAPEM() []byte { return s.ca.CertPEM }

// URL is the API's base URL.
func (s *Service) URL() string { return s.srv.URL() }

// Run keeps the pool filled and serves until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	refill := make(chan struct{})
	go func() {
		defer close(refill)
		s.pool.Run(ctx, s.cfg.RefillInterval)
	}()
	err := s.srv.Run(ctx)
	cancel()
	<-refill
	return err
}

type api struct {
	certdnsv1connect.UnimplementedCertDNSServiceHandler
	s *Service
}

func (a *api) AssignCertificate(ctx context.Context, req *connect.Request[certdnsv1.AssignCertificateRequest]) (*connect.Response[certdnsv1.AssignCertificateResponse], error) {
	c, err := a.s.pool.Assign(ctx, req.Msg.SatelliteId)
	if errors.Is(err, pool.ErrInvalid) {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	if err != nil {
		a.s.log.ErrorContext(ctx, "assign a certificate", "event", "certdns.assign_failed", "error", err.Error())
		return nil, connect.NewError(connect.CodeUnavailable, errors.New("certificate pool unavailable; try again"))
	}
	return connect.NewResponse(&certdnsv1.AssignCertificateResponse{Certificate: c}), nil
}

func (a *api) GetPoolStatus(ctx context.Context, _ *connect.Request[certdnsv1.GetPoolStatusRequest]) (*connect.Response[certdnsv1.GetPoolStatusResponse], error) {
	avail, err1 := a.s.pool.Available(ctx)
	assigned, err2 := a.s.pool.Assigned(ctx)
	if err := errors.Join(err1, err2); err != nil {
		return nil, connect.NewError(connect.CodeUnavailable, errors.New("etcd unavailable; try again"))
	}
	return connect.NewResponse(&certdnsv1.GetPoolStatusResponse{Available: int32(avail), Assigned: int32(assigned),
		TargetSize: int32(a.s.cfg.PoolSize), LowWatermark: int32(a.s.cfg.LowWatermark)}), nil
}

func (a *api) GetCA(context.Context, *connect.Request[certdnsv1.GetCARequest]) (*connect.Response[certdnsv1.GetCAResponse], error) {
	return connect.NewResponse(&certdnsv1.GetCAResponse{CaPem: a.s.ca.CertPEM}), nil
}

func (a *api) RenewCertificate(context.Context, *connect.Request[certdnsv1.RenewCertificateRequest]) (*connect.Response[certdnsv1.RenewCertificateResponse], error) {
	return nil, connect.NewError(connect.CodeUnimplemented, errors.New("renewal is not built yet (issue 4)"))
}

func (a *api) ReleaseCertificate(context.Context, *connect.Request[certdnsv1.ReleaseCertificateRequest]) (*connect.Response[certdnsv1.ReleaseCertificateResponse], error) {
	return nil, connect.NewError(connect.CodeUnimplemented, errors.New("release and revocation are not built yet (issue 4)"))
}
