// Package connector terminates the satellites' long-lived outbound streams
// and bridges them to NATS: queries, credits and cancels published on
// satellite.<id> go down the satellite's stream; result frames coming up go
// to reply.<query-id>. It checks deploy keys, registers satellites with the
// registry and batches their heartbeats to it. Several replicas run; a
// satellite that reconnects elsewhere (or twice) keeps exactly one live link.
package connector

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"

	"github.com/orbitplane/orbit/libs/connectclient"
	"github.com/orbitplane/orbit/libs/connectserver"
	"github.com/orbitplane/orbit/libs/contextstore"
	"github.com/orbitplane/orbit/libs/directtoken"
	"github.com/orbitplane/orbit/libs/loadingcache"
	"github.com/orbitplane/orbit/libs/obslog"
	"github.com/orbitplane/orbit/libs/svcmain"
	"github.com/orbitplane/orbit/proto/orbit/certdns/v1/certdnsv1connect"
	"github.com/orbitplane/orbit/proto/orbit/connector/v1/connectorv1connect"
	registryv1 "github.com/orbitplane/orbit/proto/orbit/registry/v1"
	"github.com/orbitplane/orbit/proto/orbit/registry/v1/registryv1connect"
	"github.com/orbitplane/orbit/services/registry/registry"
)

// Subjects (docs/query-path.md).
const (
	// SatelliteSubjectPrefix + <id> carries ConnectResponse frames (query,
	// credit, cancel) for a satellite; only the replica holding its link
	// subscribes.
	SatelliteSubjectPrefix = "satellite."
	// ReplySubjectPrefix + <query-id> carries ResultFrames to the broker.
	ReplySubjectPrefix = "reply."
	// ClaimSubjectPrefix + <id>: a replica announces a new link so others
	// close older ones.
	ClaimSubjectPrefix = "link.claim."
	queueGroup         = "connector"
)

// Defaults (docs/limits.md).
const (
	DefaultMaxLinks          = 10000
	DefaultMaxQueriesPerLink = 64
	DefaultRegisterTimeout   = 10 * time.Second
	DefaultHeartbeatFlush    = time.Second
	DefaultHeartbeatBatch    = 1000
)

// Config configures a connector.
type Config struct {
	Server      connectserver.Config
	RegistryURL string
	// ID names this replica; default a random UUID.
	ID                string
	MaxLinks          int
	MaxQueriesPerLink int
	// RegisterTimeout bounds the wait for a new stream's Register frame.
	RegisterTimeout time.Duration
	// HeartbeatFlush: heartbeats reach the registry batched, this often.
	HeartbeatFlush time.Duration
	// IdleTimeout closes a link that sent nothing for this long; default
	// MissedHeartbeats × the registry's heartbeat interval.
	IdleTimeout time.Duration
	InstanceTTL time.Duration
	// HeartbeatInterval is told to satellites at registration.
	HeartbeatInterval time.Duration
	// TLSCert and TLSKey (PEM files) make the link listener HTTPS; ClientCA
	// (the region's platform CA, PEM) verifies satellites' client
	// certificates. All three or none.
	TLSCert, TLSKey, ClientCA string
	// CertDNSURL, when set, gives every newly enrolled satellite a
	// certificate over its link and renews it on request (needs TLS).
	CertDNSURL string
}

// RegisterFlags defines the connector's flags.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Server.Addr, "addr", "127.0.0.1:8082", "listen address for satellite links (and health, metrics)")
	fs.StringVar(&c.RegistryURL, "registry-url", "http://127.0.0.1:8083", "registry base URL")
	fs.StringVar(&c.ID, "id", "", "replica ID (default: random)")
	fs.IntVar(&c.MaxLinks, "max-links", DefaultMaxLinks, "satellite links this replica holds at most")
	fs.IntVar(&c.MaxQueriesPerLink, "max-queries-per-link", DefaultMaxQueriesPerLink, "queries in flight per satellite link")
	fs.DurationVar(&c.RegisterTimeout, "register-timeout", DefaultRegisterTimeout, "time a new link has to send Register")
	fs.DurationVar(&c.HeartbeatFlush, "heartbeat-flush", DefaultHeartbeatFlush, "how often batched heartbeats go to the registry")
	fs.DurationVar(&c.IdleTimeout, "idle-timeout", 0, "close a link silent this long (default 3 heartbeat intervals)")
	fs.DurationVar(&c.InstanceTTL, "instance-ttl", registry.DefaultInstanceTTL, "TTL of this replica's etcd lease")
	fs.DurationVar(&c.HeartbeatInterval, "heartbeat-interval", registry.DefaultHeartbeatInterval, "how often satellites heartbeat (match the registry's)")
	fs.StringVar(&c.TLSCert, "tls-cert", "", "server certificate for the link listener (PEM); with --tls-key and --client-ca")
	fs.StringVar(&c.TLSKey, "tls-key", "", "server private key (PEM)")
	fs.StringVar(&c.ClientCA, "client-ca", "", "CA that signs satellites' client certificates (PEM; the region's platform CA)")
	fs.StringVar(&c.CertDNSURL, "certdns-url", "", "certdns base URL: deliver and renew satellite certificates (empty: none; needs TLS)")
}

// tlsConfig builds the link listener's TLS: client certificates are asked
// for and verified against the CA when given; whether one is required is
// decided per satellite (enrolled satellites must present theirs).
func (c *Config) tlsConfig() (*tls.Config, error) {
	if c.TLSCert == "" && c.TLSKey == "" && c.ClientCA == "" {
		if c.CertDNSURL != "" {
			return nil, errors.New("connector: --certdns-url needs --tls-cert, --tls-key and --client-ca (certificates are for mutual TLS)")
		}
		return nil, nil
	}
	if c.TLSCert == "" || c.TLSKey == "" || c.ClientCA == "" {
		return nil, errors.New("connector: --tls-cert, --tls-key and --client-ca go together")
	}
	cert, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("connector: --tls-cert/--tls-key: %w", err)
	}
	caPEM, err := os.ReadFile(c.ClientCA)
	if err != nil {
		return nil, fmt.Errorf("connector: --client-ca: %w", err)
	}
	pool, err := connectclient.CertPool(caPEM)
	if err != nil {
		return nil, fmt.Errorf("connector: --client-ca %s: %w", c.ClientCA, err)
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert},
		ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: pool,
	}, nil
}

func (c *Config) defaults() {
	if c.ID == "" {
		c.ID = uuid.NewString()
	}
	if c.MaxLinks <= 0 {
		c.MaxLinks = DefaultMaxLinks
	}
	if c.MaxQueriesPerLink <= 0 {
		c.MaxQueriesPerLink = DefaultMaxQueriesPerLink
	}
	if c.RegisterTimeout <= 0 {
		c.RegisterTimeout = DefaultRegisterTimeout
	}
	if c.HeartbeatFlush <= 0 {
		c.HeartbeatFlush = DefaultHeartbeatFlush
	}
	if c.InstanceTTL <= 0 {
		c.InstanceTTL = registry.DefaultInstanceTTL
	}
	if c.HeartbeatInterval <= 0 {
		c.HeartbeatInterval = registry.DefaultHeartbeatInterval
	}
	if c.Server.Service == "" {
		c.Server.Service = "connector"
	}
}

// Needs are the shared clients the connector binary connects to.
var Needs = svcmain.Needs{NATS: true, Etcd: true}

// Flags registers every flag of the connector binary.
func Flags(fs *flag.FlagSet) { svcmain.AllFlags(Needs, new(Config).RegisterFlags)(fs) }

// Deps are the connector's collaborators.
type Deps struct {
	Logger         *slog.Logger
	TracerProvider trace.TracerProvider
	NATS           *nats.Conn
	Etcd           *clientv3.Client
	Metrics        *prometheus.Registry
	// HTTPClient calls the registry; default an h2c client.
	HTTPClient *http.Client
}

// Service is a connector replica.
type Service struct {
	cfg      Config
	log      *slog.Logger
	nc       *nats.Conn
	etcd     *clientv3.Client
	srv      *connectserver.Server
	ctxs     *contextstore.Store
	registry registryv1connect.RegistryServiceClient
	// certdns is nil when this connector hands out no certificates.
	certdns certdnsv1connect.CertDNSServiceClient
	// tls: the link listener is HTTPS with client certificates.
	tls bool
	// tokenKeys are the public keys of the region's direct-mode token
	// signer, told to satellites at registration.
	tokenKeys [][]byte

	mu    sync.Mutex
	links map[string]*link // satellite ID -> its live link here

	hbMu      sync.Mutex
	hbPending map[string]*registryv1.SatelliteHeartbeat
	hbKick    chan struct{}

	m metrics
}

type metrics struct {
	links      prometheus.GaugeFunc
	linksTotal *prometheus.CounterVec
	frames     *prometheus.CounterVec
	unknown    prometheus.Counter
	certs      *prometheus.CounterVec
}

// New builds a connector.
func New(cfg Config, deps Deps) (*Service, error) {
	cfg.defaults()
	if deps.Logger == nil {
		deps.Logger = obslog.Discard()
	}
	if deps.NATS == nil || deps.Etcd == nil || cfg.RegistryURL == "" {
		return nil, errors.New("connector: NATS, etcd and a registry URL are required")
	}
	tc, err := cfg.tlsConfig()
	if err != nil {
		return nil, err
	}
	cfg.Server.TLS = tc
	srv, err := connectserver.New(cfg.Server, connectserver.Deps{Logger: deps.Logger, TracerProvider: deps.TracerProvider, Registry: deps.Metrics})
	if err != nil {
		return nil, err
	}
	hc, opts, err := connectclient.For(deps.HTTPClient, deps.TracerProvider)
	if err != nil {
		return nil, err
	}
	s := &Service{
		cfg: cfg, log: deps.Logger.With("connector", cfg.ID), nc: deps.NATS, etcd: deps.Etcd, srv: srv,
		ctxs:      contextstore.New(deps.Etcd, loadingcache.Config{}, deps.Logger),
		registry:  registryv1connect.NewRegistryServiceClient(hc, cfg.RegistryURL, opts...),
		tls:       tc != nil,
		links:     map[string]*link{},
		hbPending: map[string]*registryv1.SatelliteHeartbeat{},
		hbKick:    make(chan struct{}, 1),
	}
	reg := prometheus.WrapRegistererWith(prometheus.Labels{"service": cfg.Server.Service}, srv.Registry())
	s.m.linksTotal = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "orbit_connector_links_closed_total", Help: "Satellite links closed, by reason."}, []string{"reason"})
	s.m.frames = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "orbit_connector_frames_total", Help: "Frames relayed, by direction."}, []string{"direction"})
	s.m.unknown = prometheus.NewCounter(prometheus.CounterOpts{Name: "orbit_connector_unroutable_results_total", Help: "Result frames for queries this link does not run (logged, dropped)."})
	s.m.links = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "orbit_connector_links", Help: "Live satellite links."}, func() float64 {
		s.mu.Lock()
		defer s.mu.Unlock()
		return float64(len(s.links))
	})
	s.m.certs = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "orbit_connector_certificates_total", Help: "Certificates delivered to satellites, by kind (assigned, renewed)."}, []string{"kind"})
	reg.MustRegister(s.m.linksTotal, s.m.frames, s.m.unknown, s.m.links, s.m.certs)
	reg.MustRegister(s.ctxs.Collectors()...)
	if cfg.CertDNSURL != "" {
		s.certdns = certdnsv1connect.NewCertDNSServiceClient(hc, cfg.CertDNSURL, opts...)
	}
	lh := &linkHandler{s: s}
	srv.Handle(withPeerCertificates(connectorv1connect.NewLinkServiceHandler(lh, srv.HandlerOptions()...)))
	// Connect itself, at its exact path (ahead of the service's prefix),
	// with the codec that leaves result frames encoded (rawup.go).
	srv.Handle(withPeerCertificates(connectorv1connect.LinkServiceConnectProcedure, connect.NewBidiStreamHandler(connectorv1connect.LinkServiceConnectProcedure, lh.connect, linkHandlerOptions(srv.HandlerOptions())...)))
	return s, nil
}

// Listen binds the port; URL is then valid.
func (s *Service) Listen() error {
	_, err := s.srv.Listen()
	return err
}

// URL is where satellites connect.
func (s *Service) URL() string { return s.srv.URL() }

// HasLink reports whether this replica holds a live link for the satellite.
func (s *Service) HasLink(satelliteID string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.links[satelliteID]
	return ok
}

// ID is this replica's ID.
func (s *Service) ID() string { return s.cfg.ID }

// Run serves until ctx ends. Closing links tells their satellites to
// reconnect (to another replica).
func (s *Service) Run(ctx context.Context) error {
	lease, err := registry.RegisterInstance(ctx, s.etcd, "connector", s.cfg.ID, s.cfg.InstanceTTL)
	if err != nil {
		return fmt.Errorf("connector: %w", err)
	}
	key, err := directtoken.LoadOrCreate(ctx, s.etcd)
	if err != nil {
		return fmt.Errorf("connector: %w", err)
	}
	s.tokenKeys = [][]byte{key.Public().(ed25519.PublicKey)}
	defer func() {
		rctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, _ = s.etcd.Revoke(rctx, lease) // the registry disconnects our satellites at once
	}()
	claims, err := s.nc.Subscribe(ClaimSubjectPrefix+"*", s.onClaim)
	if err != nil {
		return fmt.Errorf("connector: subscribe claims: %w", err)
	}
	defer func() { _ = claims.Unsubscribe() }()
	bg, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); s.ctxs.Run(bg) }()
	go func() { defer wg.Done(); s.heartbeatLoop(bg) }()
	go func() { defer wg.Done(); s.idleLoop(bg) }()
	// Links are endless streams: close them at once on shutdown so their
	// satellites reconnect elsewhere instead of waiting out the drain.
	stopClosing := context.AfterFunc(ctx, func() {
		s.mu.Lock()
		all := make([]*link, 0, len(s.links))
		for _, l := range s.links {
			all = append(all, l)
		}
		s.mu.Unlock()
		for _, l := range all {
			l.close("shutdown", "connector shutting down; reconnect")
		}
	})
	defer stopClosing()
	err = s.srv.Run(ctx)
	stop()
	wg.Wait()
	return err
}

// onClaim closes our link for a satellite that registered again with a
// newer generation on another replica.
func (s *Service) onClaim(m *nats.Msg) {
	id := m.Subject[len(ClaimSubjectPrefix):]
	if m.Header.Get("Orbit-Connector") == s.cfg.ID {
		return
	}
	gen, err := strconv.ParseUint(m.Header.Get("Orbit-Generation"), 10, 64)
	if err != nil {
		return
	}
	s.mu.Lock()
	l := s.links[id]
	s.mu.Unlock()
	if l != nil && l.generation < gen {
		l.close("superseded", "the satellite connected again elsewhere")
	}
}

func (s *Service) claim(l *link) {
	m := nats.NewMsg(ClaimSubjectPrefix + l.satID)
	m.Header.Set("Orbit-Connector", s.cfg.ID)
	m.Header.Set("Orbit-Generation", strconv.FormatUint(l.generation, 10))
	if err := s.nc.PublishMsg(m); err != nil {
		s.log.Warn("claim publish failed", "error", err, "satellite", l.satID)
	}
}

// adopt makes l the satellite's live link here, closing an older one.
func (s *Service) adopt(l *link) error {
	s.mu.Lock()
	old := s.links[l.satID]
	if old == nil && len(s.links) >= s.cfg.MaxLinks {
		s.mu.Unlock()
		return fmt.Errorf("replica holds %d links, its limit", s.cfg.MaxLinks)
	}
	s.links[l.satID] = l
	s.mu.Unlock()
	if old != nil {
		old.close("superseded", "the satellite connected again")
	}
	return nil
}

// release forgets l if it is still the satellite's live link; true if so.
func (s *Service) release(l *link) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.links[l.satID] == l {
		delete(s.links, l.satID)
		return true
	}
	return false
}

func (s *Service) queueHeartbeat(hb *registryv1.SatelliteHeartbeat) {
	s.hbMu.Lock()
	s.hbPending[hb.SatelliteId] = hb
	n := len(s.hbPending)
	s.hbMu.Unlock()
	if n >= DefaultHeartbeatBatch {
		select {
		case s.hbKick <- struct{}{}:
		default:
		}
	}
}

func (s *Service) heartbeatLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.HeartbeatFlush)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.hbKick:
		}
		s.hbMu.Lock()
		if len(s.hbPending) == 0 {
			s.hbMu.Unlock()
			continue
		}
		req := &registryv1.HeartbeatRequest{ConnectorId: s.cfg.ID}
		for _, hb := range s.hbPending {
			req.Heartbeats = append(req.Heartbeats, hb)
		}
		clear(s.hbPending)
		s.hbMu.Unlock()
		b, err := proto.Marshal(req)
		if err != nil {
			continue
		}
		msg, err := s.nc.Request(registry.HeartbeatSubject, b, 5*time.Second)
		if err != nil {
			s.log.Warn("heartbeat batch not acknowledged", obslog.Event("connector.heartbeat_failed"), "error", err, "satellites", len(req.Heartbeats))
			continue
		}
		var resp registryv1.HeartbeatResponse
		if err := proto.Unmarshal(msg.Data, &resp); err != nil {
			continue
		}
		for _, id := range resp.UnknownIds {
			s.mu.Lock()
			l := s.links[id]
			s.mu.Unlock()
			if l != nil {
				l.close("unknown", "the registry does not know this satellite; register again")
			}
		}
	}
}

func (s *Service) idleLoop(ctx context.Context) {
	idle := s.cfg.IdleTimeout
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			s.mu.Lock()
			var stale []*link
			for _, l := range s.links {
				limit := idle
				if limit <= 0 {
					limit = time.Duration(registry.DefaultMissedHeartbeats) * l.heartbeatEvery
				}
				if now.Sub(l.lastFrame()) > limit {
					stale = append(stale, l)
				}
			}
			s.mu.Unlock()
			for _, l := range stale {
				l.close("idle", "no frame from the satellite within 3 heartbeat intervals")
			}
		}
	}
}

// registerSatellite asks the registry for the satellite's ID.
func (s *Service) registerSatellite(ctx context.Context, req *registryv1.RegisterRequest) (*registryv1.Satellite, error) {
	resp, err := s.registry.Register(ctx, connect.NewRequest(req))
	if err != nil {
		return nil, err
	}
	return resp.Msg.Satellite, nil
}

func (s *Service) disconnect(id string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := s.registry.Disconnect(ctx, connect.NewRequest(&registryv1.DisconnectRequest{ConnectorId: s.cfg.ID, SatelliteIds: []string{id}}))
	if err != nil {
		// The registry still notices: missed heartbeats, or our lease.
		s.log.Warn("disconnect not delivered", "error", err, "satellite", id)
	}
}
