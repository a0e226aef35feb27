// Package registry is the satellite registry: registration (ID assignment,
// idempotent by the satellite's stable identity), heartbeats, status
// (HEALTHY / DEGRADED / DISCONNECTED), get, list and watch.
//
// Liveness lives in memory. etcd holds the satellites and is written only when
// something a user can see changes, in batches; there is one etcd lease per
// registry and per connector instance, never one per satellite (a connector's
// lease expiring disconnects its satellites at once).
package registry

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"

	"github.com/orbitplane/orbit/libs/connectserver"
	"github.com/orbitplane/orbit/libs/etcdkv"
	"github.com/orbitplane/orbit/libs/obslog"
	"github.com/orbitplane/orbit/libs/svcmain"
	registryv1 "github.com/orbitplane/orbit/proto/orbit/registry/v1"
	"github.com/orbitplane/orbit/proto/orbit/registry/v1/registryv1connect"
)

// Keys and subjects (docs/registry.md).
const (
	SatellitePrefix         = "/orbit/registry/v1/satellites/"
	IdentityPrefix          = "/orbit/registry/v1/identities/"
	InstancePrefix          = "/orbit/registry/v1/instances/"
	ConnectorInstancePrefix = InstancePrefix + "connector/"
	// HeartbeatSubject carries HeartbeatRequest batches from connectors; a
	// request with a reply subject gets a HeartbeatResponse.
	HeartbeatSubject = "registry.heartbeats"
)

// Defaults (docs/limits.md).
const (
	DefaultHeartbeatInterval = 5 * time.Second
	DefaultMissedHeartbeats  = 3
	DefaultFlushInterval     = 100 * time.Millisecond
	DefaultInstanceTTL       = 10 * time.Second
	DefaultWatchBuffer       = 1024
	DefaultMaxWatchers       = 10000
	DefaultPageSize          = 500
	MaxPageSize              = 5000
	MaxIdentityLen           = 128
	MaxNameLen               = 128
	MaxLabels                = 64
	MaxLabelKeyLen           = 63
	MaxLabelValueLen         = 256
)

// Config configures the registry.
type Config struct {
	Server connectserver.Config
	// HeartbeatInterval is how often satellites heartbeat (told to them at
	// registration).
	HeartbeatInterval time.Duration
	// MissedHeartbeats after which a satellite is DISCONNECTED.
	MissedHeartbeats int
	// FlushInterval: visible changes reach etcd within this, batched.
	FlushInterval time.Duration
	// InstanceTTL of this instance's etcd lease.
	InstanceTTL time.Duration
	// WatchBuffer events per watcher; a watcher further behind is closed
	// with RESOURCE_EXHAUSTED (never silently skipped).
	WatchBuffer int
	MaxWatchers int
	Region      string
}

// RegisterFlags defines the registry's flags.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Server.Addr, "addr", "127.0.0.1:8083", "listen address (Connect, gRPC, gRPC-Web, health, metrics)")
	fs.DurationVar(&c.HeartbeatInterval, "heartbeat-interval", DefaultHeartbeatInterval, "how often satellites heartbeat")
	fs.IntVar(&c.MissedHeartbeats, "missed-heartbeats", DefaultMissedHeartbeats, "missed heartbeats after which a satellite is DISCONNECTED")
	fs.DurationVar(&c.FlushInterval, "flush-interval", DefaultFlushInterval, "how long visible changes may wait to be written to etcd in one batch")
	fs.DurationVar(&c.InstanceTTL, "instance-ttl", DefaultInstanceTTL, "TTL of this instance's etcd lease")
	fs.IntVar(&c.WatchBuffer, "watch-buffer", DefaultWatchBuffer, "events buffered per watcher before it is closed as too slow")
	fs.IntVar(&c.MaxWatchers, "max-watchers", DefaultMaxWatchers, "concurrent watch streams")
}

func (c *Config) defaults() {
	if c.HeartbeatInterval <= 0 {
		c.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if c.MissedHeartbeats <= 0 {
		c.MissedHeartbeats = DefaultMissedHeartbeats
	}
	if c.FlushInterval <= 0 {
		c.FlushInterval = DefaultFlushInterval
	}
	if c.InstanceTTL <= 0 {
		c.InstanceTTL = DefaultInstanceTTL
	}
	if c.WatchBuffer <= 0 {
		c.WatchBuffer = DefaultWatchBuffer
	}
	if c.MaxWatchers <= 0 {
		c.MaxWatchers = DefaultMaxWatchers
	}
	if c.Server.Service == "" {
		c.Server.Service = "registry"
	}
}

// Deps are the registry's collaborators.
type Deps struct {
	Logger         *slog.Logger
	TracerProvider trace.TracerProvider
	NATS           *nats.Conn
	Etcd           *clientv3.Client
	Metrics        *prometheus.Registry
}

// Service is a running registry.
type Service struct {
	cfg   Config
	log   *slog.Logger
	nc    *nats.Conn
	etcd  *clientv3.Client
	srv   *connectserver.Server
	state *state
	id    string
	m     metrics
	// flushMu: a batch being written and a deletion never interleave.
	flushMu sync.Mutex
}

type metrics struct {
	heartbeats  prometheus.Counter
	etcdKeys    prometheus.Counter
	etcdBatches prometheus.Counter
	registers   prometheus.Counter
	disconnects *prometheus.CounterVec
	watchers    prometheus.Gauge
}

// New builds the registry; Run loads its state and serves.
func New(cfg Config, deps Deps) (*Service, error) {
	cfg.defaults()
	if deps.Logger == nil {
		deps.Logger = obslog.Discard()
	}
	if deps.NATS == nil || deps.Etcd == nil {
		return nil, errors.New("registry: NATS and etcd are required")
	}
	srv, err := connectserver.New(cfg.Server, connectserver.Deps{Logger: deps.Logger, TracerProvider: deps.TracerProvider, Registry: deps.Metrics})
	if err != nil {
		return nil, err
	}
	s := &Service{cfg: cfg, log: deps.Logger, nc: deps.NATS, etcd: deps.Etcd, srv: srv, state: newState(), id: uuid.NewString()}
	f := prometheus.WrapRegistererWith(prometheus.Labels{"service": cfg.Server.Service}, srv.Registry())
	s.m = metrics{
		heartbeats:  prometheus.NewCounter(prometheus.CounterOpts{Name: "orbit_registry_heartbeats_total", Help: "Satellite heartbeats applied."}),
		etcdKeys:    prometheus.NewCounter(prometheus.CounterOpts{Name: "orbit_registry_etcd_keys_written_total", Help: "Satellite records written to etcd."}),
		etcdBatches: prometheus.NewCounter(prometheus.CounterOpts{Name: "orbit_registry_etcd_batches_total", Help: "Batched writes to etcd."}),
		registers:   prometheus.NewCounter(prometheus.CounterOpts{Name: "orbit_registry_registrations_total", Help: "Register calls answered."}),
		disconnects: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "orbit_registry_disconnects_total", Help: "Satellites marked DISCONNECTED, by cause."}, []string{"cause"}),
		watchers:    prometheus.NewGauge(prometheus.GaugeOpts{Name: "orbit_registry_watchers", Help: "Open watch streams."}),
	}
	f.MustRegister(s.m.heartbeats, s.m.etcdKeys, s.m.etcdBatches, s.m.registers, s.m.disconnects, s.m.watchers)
	f.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "orbit_registry_satellites", Help: "Satellites known."}, func() float64 {
		s.state.mu.RLock()
		defer s.state.mu.RUnlock()
		return float64(len(s.state.byID))
	}))
	srv.Handle(registryv1connect.NewRegistryServiceHandler(&api{s: s}, srv.HandlerOptions()...))
	return s, nil
}

// Listen binds the port; URL is then valid.
func (s *Service) Listen() error {
	_, err := s.srv.Listen()
	return err
}

// URL is the registry's base URL (after Listen or Run).
func (s *Service) URL() string { return s.srv.URL() }

// Run loads the satellites from etcd, then serves until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	if err := s.loadAll(ctx); err != nil {
		return err
	}
	lease, err := RegisterInstance(ctx, s.etcd, "registry", s.id, s.cfg.InstanceTTL)
	if err != nil {
		return err
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, _ = s.etcd.Revoke(rctx, lease)
	}()
	sub, err := s.nc.Subscribe(HeartbeatSubject, s.onHeartbeatMsg)
	if err != nil {
		return fmt.Errorf("registry: subscribe: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	// Heartbeat batches from many connectors: a deep buffer, and slow
	// consumption shows as a NATS slow-consumer error in the log.
	_ = sub.SetPendingLimits(1<<16, 256<<20)

	bg, stopBG := context.WithCancel(ctx)
	done := make(chan struct{}, 3)
	go func() { s.flushLoop(bg); done <- struct{}{} }()
	go func() { s.sweepLoop(bg); done <- struct{}{} }()
	go func() { s.watchConnectors(bg); done <- struct{}{} }()
	err = s.srv.Run(ctx)
	stopBG()
	for range 3 {
		<-done
	}
	// Last writes before exit.
	fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s.flush(fctx)
	return err
}

func (s *Service) loadAll(ctx context.Context) error {
	resp, err := s.etcd.Get(ctx, SatellitePrefix, clientv3.WithPrefix())
	if err != nil {
		return fmt.Errorf("registry: load satellites: %w", err)
	}
	now := time.Now()
	for _, kv := range resp.Kvs {
		sat := &registryv1.Satellite{}
		if err := proto.Unmarshal(kv.Value, sat); err != nil {
			return fmt.Errorf("registry: bad record %s: %w", kv.Key, err)
		}
		// Liveness is not persisted: loaded satellites get one full
		// interval window to heartbeat before they turn DISCONNECTED.
		s.state.load(sat, now)
	}
	// Satellites whose connector is gone are disconnected now.
	inst, err := s.etcd.Get(ctx, ConnectorInstancePrefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return fmt.Errorf("registry: load connectors: %w", err)
	}
	alive := map[string]bool{}
	for _, kv := range inst.Kvs {
		alive[string(kv.Key[len(ConnectorInstancePrefix):])] = true
	}
	s.state.mu.Lock()
	for _, e := range s.state.byID {
		if !alive[e.sat.ConnectorId] {
			s.state.markDisconnected(e, "connector "+e.sat.ConnectorId+" is gone")
		}
	}
	s.state.mu.Unlock()
	s.log.Info("registry loaded", obslog.Event("registry.loaded"), "satellites", len(resp.Kvs), "connectors", len(alive))
	return nil
}

// RegisterInstance keeps /orbit/registry/v1/instances/<kind>/<id> alive
// under one lease until ctx ends; the registry watches connector keys to
// disconnect a dead replica's satellites at once.
func RegisterInstance(ctx context.Context, cli *clientv3.Client, kind, id string, ttl time.Duration) (clientv3.LeaseID, error) {
	secs := int64(ttl / time.Second)
	if secs < 2 {
		secs = 2
	}
	lease, err := cli.Grant(ctx, secs)
	if err != nil {
		return 0, fmt.Errorf("instance lease: %w", err)
	}
	if _, err := cli.Put(ctx, InstancePrefix+kind+"/"+id, time.Now().UTC().Format(time.RFC3339), clientv3.WithLease(lease.ID)); err != nil {
		return 0, fmt.Errorf("instance key: %w", err)
	}
	ka, err := cli.KeepAlive(ctx, lease.ID)
	if err != nil {
		return 0, fmt.Errorf("instance keepalive: %w", err)
	}
	go func() {
		for range ka { //nolint:revive // drain keepalive responses
		}
	}()
	return lease.ID, nil
}

func (s *Service) flushLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.flush(ctx)
		}
	}
}

// flush writes every dirty satellite in batched transactions.
func (s *Service) flush(ctx context.Context) {
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	sats := s.state.takeDirty()
	if len(sats) == 0 {
		return
	}
	items := make(map[string][]byte, len(sats))
	for _, sat := range sats {
		b, err := proto.Marshal(sat)
		if err != nil {
			s.log.Error("registry marshal", "error", err, "satellite", sat.Id)
			continue
		}
		items[SatellitePrefix+sat.Id] = b
	}
	if err := etcdkv.PutBatch(ctx, s.etcd, items); err != nil {
		s.log.Error("registry etcd write failed; retrying next flush", obslog.Event("registry.flush_failed"), "error", err, "satellites", len(sats))
		s.state.redirty(sats)
		return
	}
	s.m.etcdKeys.Add(float64(len(items)))
	s.m.etcdBatches.Add(float64((len(items) + etcdkv.MaxTxnOps - 1) / etcdkv.MaxTxnOps))
}

func (s *Service) sweepLoop(ctx context.Context) {
	t := time.NewTicker(max(s.cfg.HeartbeatInterval/4, 10*time.Millisecond))
	defer t.Stop()
	window := time.Duration(s.cfg.MissedHeartbeats) * s.cfg.HeartbeatInterval
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if n := s.state.sweep(now.Add(-window)); n > 0 {
				s.m.disconnects.WithLabelValues("missed_heartbeats").Add(float64(n))
				s.log.Info("satellites missed heartbeats", obslog.Event("registry.missed_heartbeats"), "count", n)
			}
		}
	}
}

// watchConnectors disconnects a connector's satellites when its instance
// key goes (lease expired or revoked).
func (s *Service) watchConnectors(ctx context.Context) {
	for ctx.Err() == nil {
		wch := s.etcd.Watch(clientv3.WithRequireLeader(ctx), ConnectorInstancePrefix, clientv3.WithPrefix())
		for resp := range wch {
			for _, ev := range resp.Events {
				if ev.Type != clientv3.EventTypeDelete {
					continue
				}
				id := string(ev.Kv.Key[len(ConnectorInstancePrefix):])
				n := s.state.disconnectConnector(id)
				s.m.disconnects.WithLabelValues("connector_gone").Add(float64(n))
				s.log.Info("connector gone", obslog.Event("registry.connector_gone"), "connector", id, "satellites", n)
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func (s *Service) onHeartbeatMsg(m *nats.Msg) {
	req := &registryv1.HeartbeatRequest{}
	if err := proto.Unmarshal(m.Data, req); err != nil {
		s.log.Warn("bad heartbeat batch", "error", err, "subject", m.Subject)
		return
	}
	unknown := s.applyHeartbeats(req)
	if m.Reply != "" {
		b, _ := proto.Marshal(&registryv1.HeartbeatResponse{UnknownIds: unknown})
		_ = m.Respond(b)
	}
}

func (s *Service) applyHeartbeats(req *registryv1.HeartbeatRequest) []string {
	now := time.Now()
	var unknown []string
	for _, hb := range req.Heartbeats {
		if !s.state.heartbeat(hb, now) {
			unknown = append(unknown, hb.SatelliteId)
		}
	}
	s.m.heartbeats.Add(float64(len(req.Heartbeats)))
	return unknown
}

// Needs are the shared clients the registry binary connects to.
var Needs = svcmain.Needs{NATS: true, Etcd: true}

// Flags registers every flag of the registry binary (tests/deploy checks
// manifests against it).
func Flags(fs *flag.FlagSet) { svcmain.AllFlags(Needs, new(Config).RegisterFlags)(fs) }
