// Package certdns is the region's DNS/cert allocator (docs/certdns.md): the
// platform CA; a pool of pre-issued certificates for
// <uuid>.satellites.<domain>, assigned to satellites at registration,
// renewed on request and released (revoked) when the registry deletes the
// satellite, through orbit.certdns.v1.CertDNSService; a CRL at /crl; and
// the authoritative DNS server for the satellites zone, following the
// assignments and the registry's records in etcd.
package certdns

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.opentelemetry.io/otel/trace"

	"github.com/orbitplane/orbit/libs/connectserver"
	"github.com/orbitplane/orbit/libs/obslog"
	"github.com/orbitplane/orbit/libs/svcmain"
	certdnsv1 "github.com/orbitplane/orbit/proto/orbit/certdns/v1"
	"github.com/orbitplane/orbit/proto/orbit/certdns/v1/certdnsv1connect"
	"github.com/orbitplane/orbit/services/certdns/pki"
	"github.com/orbitplane/orbit/services/certdns/pool"
)

// Defaults (docs/limits.md).
const (
	DefaultPoolSize       = 100
	DefaultLowWatermark   = 20
	DefaultLifetime       = 90 * 24 * time.Hour
	DefaultRefillInterval = 30 * time.Second
	DefaultDNSAddr        = "127.0.0.1:8053"
	DefaultDNSTTL         = 10 * time.Second
	// CRLValidity is the NextUpdate of the served CRL.
	CRLValidity = time.Hour
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
	// DNSAddr serves the zone over UDP and TCP; empty: no DNS server.
	DNSAddr string
	DNSTTL  time.Duration
	// DNSNS is the zone's NS name (default ns.satellites.<domain>).
	DNSNS string
	// RFC2136Server (host:port), when set, receives RFC 2136 updates of
	// the zone (RFC2136Zone, default satellites.<domain>), signed with the
	// TSIG key RFC2136KeyName / RFC2136KeySecret (base64, hmac-sha256).
	RFC2136Server, RFC2136Zone       string
	RFC2136KeyName, RFC2136KeySecret string
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
	fs.StringVar(&c.DNSAddr, "dns-addr", DefaultDNSAddr, "authoritative DNS for the satellites zone, UDP and TCP (empty: off)")
	fs.DurationVar(&c.DNSTTL, "dns-ttl", DefaultDNSTTL, "TTL of the zone's records")
	fs.StringVar(&c.DNSNS, "dns-ns", "", "the zone's NS name (default ns.satellites.<domain>)")
	fs.StringVar(&c.RFC2136Server, "rfc2136-server", "", "also keep the zone in this DNS server (host:port) with RFC 2136 dynamic updates (empty: off)")
	fs.StringVar(&c.RFC2136Zone, "rfc2136-zone", "", "the zone to update there (default satellites.<domain>)")
	fs.StringVar(&c.RFC2136KeyName, "rfc2136-key-name", "", "TSIG key name for the updates (hmac-sha256)")
	fs.Func("rfc2136-key-file", "file holding the TSIG secret (base64)", func(path string) error {
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		c.RFC2136KeySecret = strings.TrimSpace(string(b))
		return nil
	})
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
	etcd *clientv3.Client
	zone *zone

	dnsUDP, dnsTCP *dns.Server
	crlNumber      atomic.Int64
	// updater is nil without --rfc2136-server.
	updater *updater
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
	if cfg.DNSTTL <= 0 {
		cfg.DNSTTL = DefaultDNSTTL
	}
	s := &Service{cfg: cfg, log: deps.Logger, srv: srv, ca: ca, pool: p, etcd: deps.Etcd, zone: newZone()}
	s.crlNumber.Store(time.Now().Unix())
	if cfg.RFC2136Server != "" {
		if (cfg.RFC2136KeyName == "") != (cfg.RFC2136KeySecret == "") {
			return nil, errors.New("certdns: --rfc2136-key-name and --rfc2136-key-file go together")
		}
		s.updater = newUpdater(cfg, s.zone, deps.Logger)
		s.zone.changed = s.updater.mark
		srv.Registry().MustRegister(s.updater.results)
	}
	srv.Handle(certdnsv1connect.NewCertDNSServiceHandler(&api{s: s}, srv.HandlerOptions()...))
	srv.HandleHTTP("GET /crl", http.HandlerFunc(s.serveCRL))
	return s, nil
}

// serveCRL answers the CA's current revocation list (DER,
// application/pkix-crl).
func (s *Service) serveCRL(w http.ResponseWriter, r *http.Request) {
	revoked, err := s.pool.Revoked(r.Context())
	if err != nil {
		http.Error(w, "etcd unavailable; try again", http.StatusServiceUnavailable)
		return
	}
	entries := make([]pki.Revoked, len(revoked))
	for i, rv := range revoked {
		entries[i] = pki.Revoked{Serial: rv.Serial, RevokedAt: rv.RevokedAt}
	}
	der, err := s.ca.CRL(entries, s.crlNumber.Add(1), CRLValidity)
	if err != nil {
		s.log.Error("sign CRL", "error", err)
		http.Error(w, "could not sign the CRL", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/pkix-crl")
	_, _ = w.Write(der)
}

// listenDNS binds the DNS server's TCP port first and UDP on the same port
// (so :0 picks one port for both).
func (s *Service) listenDNS() error {
	if s.cfg.DNSAddr == "" || s.dnsTCP != nil {
		return nil
	}
	tl, err := net.Listen("tcp", s.cfg.DNSAddr)
	if err != nil {
		return fmt.Errorf("certdns: DNS listen: %w", err)
	}
	pc, err := net.ListenPacket("udp", tl.Addr().String())
	if err != nil {
		_ = tl.Close()
		return fmt.Errorf("certdns: DNS listen: %w", err)
	}
	h := newDNSServer(s.zone, s.cfg.Domain, s.cfg.DNSNS, s.cfg.DNSTTL)
	s.dnsTCP = &dns.Server{Listener: tl, Handler: h, ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second}
	s.dnsUDP = &dns.Server{PacketConn: pc, Handler: h}
	return nil
}

// DNSAddr is the DNS server's address (after Listen), empty when off.
func (s *Service) DNSAddr() string {
	if s.dnsTCP == nil {
		return ""
	}
	return s.dnsTCP.Listener.Addr().String()
}

// released revokes the certificate of a satellite the registry deleted.
func (s *Service) released(id string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := s.pool.Release(ctx, id, "satellite deleted")
	switch {
	case err != nil:
		s.log.Error("release the certificate of a deleted satellite", obslog.Event("certdns.release_failed"), "satellite", id, "error", err)
	case c != nil:
		s.log.Info("certificate revoked: satellite deleted", obslog.Event("certdns.released"), "satellite", id, "dns_name", c.DnsName, "serial", c.Serial)
	}
}

// Listen binds the port; URL is then valid.
func (s *Service) Listen() error {
	if _, err := s.srv.Listen(); err != nil {
		return err
	}
	return s.listenDNS()
}

// CAPEM is the platform CA's certificate (PEM).
func (s *Service) CAPEM() []byte { return s.ca.CertPEM }

// URL is the API's base URL.
func (s *Service) URL() string { return s.srv.URL() }

// Run keeps the pool filled and serves until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if err := s.listenDNS(); err != nil {
		return err
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); s.pool.Run(ctx, s.cfg.RefillInterval) }()
	go func() { defer wg.Done(); s.zone.follow(ctx, s.etcd, s.released) }()
	if s.updater != nil {
		wg.Add(1)
		go func() { defer wg.Done(); s.updater.run(ctx) }()
	}
	if s.dnsTCP != nil {
		wg.Add(2)
		for _, d := range []*dns.Server{s.dnsTCP, s.dnsUDP} {
			go func() {
				defer wg.Done()
				if err := d.ActivateAndServe(); err != nil && ctx.Err() == nil {
					s.log.Error("DNS server stopped", "error", err)
				}
			}()
		}
		stop := context.AfterFunc(ctx, func() {
			_ = s.dnsTCP.Shutdown()
			_ = s.dnsUDP.Shutdown()
		})
		defer stop()
		s.log.Info("DNS server listening", "addr", s.DNSAddr(), "zone", "satellites."+s.cfg.Domain)
	}
	err := s.srv.Run(ctx)
	cancel()
	wg.Wait()
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
		a.s.log.ErrorContext(ctx, "assign a certificate", obslog.Event("certdns.assign_failed"), "error", err.Error())
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

func (a *api) RenewCertificate(ctx context.Context, req *connect.Request[certdnsv1.RenewCertificateRequest]) (*connect.Response[certdnsv1.RenewCertificateResponse], error) {
	if req.Msg.SatelliteId == "" {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("satellite_id is required"))
	}
	c, err := a.s.pool.Renew(ctx, req.Msg.SatelliteId)
	if errors.Is(err, pool.ErrNotAssigned) {
		return nil, connect.NewError(connect.CodeNotFound, err)
	}
	if err != nil {
		a.s.log.ErrorContext(ctx, "renew a certificate", obslog.Event("certdns.renew_failed"), "error", err.Error(), "satellite", req.Msg.SatelliteId)
		return nil, connect.NewError(connect.CodeUnavailable, errors.New("certificate renewal unavailable; try again"))
	}
	a.s.log.InfoContext(ctx, "certificate renewed", obslog.Event("certdns.renewed"), "satellite", req.Msg.SatelliteId, "serial", c.Serial)
	return connect.NewResponse(&certdnsv1.RenewCertificateResponse{Certificate: c}), nil
}

func (a *api) ReleaseCertificate(ctx context.Context, req *connect.Request[certdnsv1.ReleaseCertificateRequest]) (*connect.Response[certdnsv1.ReleaseCertificateResponse], error) {
	if req.Msg.SatelliteId == "" {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("satellite_id is required"))
	}
	if _, err := a.s.pool.Release(ctx, req.Msg.SatelliteId, "released"); err != nil {
		a.s.log.ErrorContext(ctx, "release a certificate", obslog.Event("certdns.release_failed"), "error", err.Error(), "satellite", req.Msg.SatelliteId)
		return nil, connect.NewError(connect.CodeUnavailable, errors.New("certificate release unavailable; try again"))
	}
	return connect.NewResponse(&certdnsv1.ReleaseCertificateResponse{}), nil
}
