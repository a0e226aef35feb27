// Package satellite is the edge agent: it keeps telemetry in a local DuckDB
// store, dials out to a connector (it never listens for the cloud), enrols
// with a deploy key under a stable identity kept in its data dir, heartbeats,
// and answers read-only SQL in bounded column batches sent against credits.
package satellite

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/orbitplane/orbit/libs/connectclient"
	"github.com/orbitplane/orbit/libs/connectserver"
	"github.com/orbitplane/orbit/libs/obslog"
	"github.com/orbitplane/orbit/libs/svcmain"
	queryv1 "github.com/orbitplane/orbit/proto/orbit/query/v1"
	"github.com/orbitplane/orbit/services/satellite/internal/store"
)

// Version is reported in heartbeats.
const Version = "0.3.0"

// Defaults (docs/limits.md).
const (
	DefaultHeartbeatInterval = 5 * time.Second
	DefaultBackoffMin        = 200 * time.Millisecond
	DefaultBackoffMax        = 30 * time.Second
	DefaultMaxQueryTime      = 10 * time.Minute
	DefaultInitialCredits    = 16
)

// Config configures the agent.
type Config struct {
	Server       connectserver.Config
	DataDir      string
	ConnectorURL string
	DeployKey    string
	Name         string
	Labels       Labels
	// Address is advertised for direct mode; default the listen address.
	Address string
	// HeartbeatInterval until the connector says otherwise.
	HeartbeatInterval time.Duration
	BackoffMin        time.Duration
	BackoffMax        time.Duration
	// MaxQueryTime caps any query's deadline.
	MaxQueryTime time.Duration
	// MaxRows and MaxBytes cap any query's result.
	MaxRows  int64
	MaxBytes int64
	Store    store.Config
	Demo     DemoConfig
	Ingest   IngestConfig
	// ConnectorCA (PEM file) verifies an https:// connector; empty: the
	// system roots.
	ConnectorCA string
	// DirectAddr serves direct mode (HTTPS) once a certificate arrived;
	// empty: no direct mode.
	DirectAddr        string
	DirectCORSOrigins []string
	MaxDirectQueries  int
}

// Labels is a k=v,k=v flag.
type Labels map[string]string

func (l *Labels) String() string {
	var parts []string
	for k, v := range *l {
		parts = append(parts, k+"="+v)
	}
	return strings.Join(parts, ",")
}

// Set parses k=v,k=v.
func (l *Labels) Set(s string) error {
	if *l == nil {
		*l = Labels{}
	}
	for _, kv := range strings.Split(s, ",") {
		if kv = strings.TrimSpace(kv); kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return fmt.Errorf("label %q: want key=value", kv)
		}
		(*l)[k] = v
	}
	return nil
}

// RegisterFlags defines the agent's flags.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Server.Addr, "addr", "127.0.0.1:8090", "listen address for local ingest (OTLP/HTTP), health and metrics")
	fs.StringVar(&c.DataDir, "data-dir", "satellite-data", "directory for the identity, store and state")
	fs.StringVar(&c.ConnectorURL, "connector-url", "http://127.0.0.1:8082", "connector base URL to dial out to")
	fs.StringVar(&c.DeployKey, "deploy-key", os.Getenv("ORBIT_DEPLOY_KEY"), "deploy key (default $ORBIT_DEPLOY_KEY)")
	fs.StringVar(&c.Name, "name", "", "display name (default: hostname)")
	fs.Var(&c.Labels, "labels", "labels, k=v,k=v")
	fs.StringVar(&c.Address, "advertise-address", "", "host:port advertised for direct mode (default: the --direct-addr listener's address)")
	fs.StringVar(&c.ConnectorCA, "connector-ca", "", "CA certificate (PEM) that verifies an https:// connector (default: system roots)")
	fs.StringVar(&c.DirectAddr, "direct-addr", "127.0.0.1:8443", "HTTPS listen address for direct-mode queries (empty: off)")
	fs.Func("direct-cors-origins", "origins browsers may call direct mode from (comma-separated, default *)", func(v string) error {
		c.DirectCORSOrigins = svcmain.SplitList(v)
		return nil
	})
	fs.IntVar(&c.MaxDirectQueries, "max-direct-queries", DefaultMaxDirectQueries, "direct-mode queries running at once")
	fs.DurationVar(&c.HeartbeatInterval, "heartbeat-interval", DefaultHeartbeatInterval, "heartbeat interval until the connector says otherwise")
	fs.DurationVar(&c.BackoffMin, "reconnect-min", DefaultBackoffMin, "first reconnect delay (doubles, with jitter)")
	fs.DurationVar(&c.BackoffMax, "reconnect-max", DefaultBackoffMax, "longest reconnect delay")
	fs.DurationVar(&c.MaxQueryTime, "max-query-time", DefaultMaxQueryTime, "longest any query may run")
	fs.Int64Var(&c.MaxRows, "max-result-rows", store.DefaultMaxRows, "most rows any result may have")
	fs.Int64Var(&c.MaxBytes, "max-result-bytes", store.DefaultMaxBytes, "most bytes any result may have")
	fs.DurationVar(&c.Store.MaxAge, "retention-age", store.DefaultMaxAge, "delete telemetry older than this")
	fs.Int64Var(&c.Store.MaxBytes, "retention-bytes", store.DefaultMaxStoreBytes, "keep the store under about this many bytes")
	fs.StringVar(&c.Store.MemoryLimit, "duckdb-memory-limit", "", "DuckDB memory limit, e.g. 1GB (default: DuckDB's)")
	fs.IntVar(&c.Store.Threads, "duckdb-threads", 0, "DuckDB threads (default: half the CPUs this process may use, at least 1; docs/satellite.md)")
	c.Demo.RegisterFlags(fs)
	c.Ingest.RegisterFlags(fs)
}

func (c *Config) defaults() error {
	if c.DataDir == "" {
		return errors.New("satellite: a data dir is required")
	}
	if c.ConnectorURL == "" {
		return errors.New("satellite: a connector URL is required")
	}
	if c.DeployKey == "" {
		return errors.New("satellite: a deploy key is required (--deploy-key or $ORBIT_DEPLOY_KEY)")
	}
	if c.Name == "" {
		c.Name, _ = os.Hostname()
	}
	if c.HeartbeatInterval <= 0 {
		c.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if c.BackoffMin <= 0 {
		c.BackoffMin = DefaultBackoffMin
	}
	if c.BackoffMax < c.BackoffMin {
		c.BackoffMax = max(DefaultBackoffMax, c.BackoffMin)
	}
	if c.MaxQueryTime <= 0 {
		c.MaxQueryTime = DefaultMaxQueryTime
	}
	if c.Server.Service == "" {
		c.Server.Service = "satellite"
	}
	if c.MaxDirectQueries <= 0 {
		c.MaxDirectQueries = DefaultMaxDirectQueries
	}
	if c.DirectCORSOrigins == nil {
		c.DirectCORSOrigins = []string{"*"}
	}
	if c.Store.Path == "" {
		c.Store.Path = filepath.Join(c.DataDir, "store.duckdb")
	}
	return nil
}

// Needs: a satellite talks to no shared infrastructure, only its connector.
var Needs = svcmain.Needs{}

// Flags registers every flag of the satellite binary.
func Flags(fs *flag.FlagSet) { svcmain.AllFlags(Needs, new(Config).RegisterFlags)(fs) }

// Deps are the agent's collaborators.
type Deps struct {
	Logger         *slog.Logger
	TracerProvider trace.TracerProvider
	Metrics        *prometheus.Registry
	// HTTPClient dials the connector; default h2c.
	HTTPClient *http.Client
}

// Agent is a satellite.
type Agent struct {
	cfg      Config
	log      *slog.Logger
	deps     Deps
	srv      *connectserver.Server
	store    *store.Store
	identity string

	// direct serves direct mode; nil when DirectAddr is empty.
	direct *connectserver.Server
	cert   atomic.Pointer[heldCert]
	// hbNow asks the heartbeat loop for one at once (a new certificate).
	hbNow chan struct{}
	// connectorRoots verify an https:// connector (nil: system roots).
	connectorRoots *x509.CertPool

	mu    sync.Mutex
	state State
	link  *linkState
	lines *lineIngest
}

// State is what the agent persists about its enrolment (state.json).
type State struct {
	SatelliteID string `json:"satellite_id"`
	TenantID    string `json:"tenant_id"`
	ConnectorID string `json:"connector_id,omitempty"`
	// DirectTokenKeys are the region's direct-token public keys (kept so a
	// satellite restarted while the cloud is away still serves direct mode).
	DirectTokenKeys [][]byte `json:"direct_token_keys,omitempty"`
}

// New opens the store and loads (or creates) the identity.
func New(ctx context.Context, cfg Config, deps Deps) (*Agent, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	if deps.Logger == nil {
		deps.Logger = obslog.Discard()
	}
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return nil, fmt.Errorf("satellite: data dir: %w", err)
	}
	identity, err := loadIdentity(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	a := &Agent{cfg: cfg, log: deps.Logger, deps: deps, identity: identity, hbNow: make(chan struct{}, 1)}
	if cfg.ConnectorCA != "" {
		b, err := os.ReadFile(cfg.ConnectorCA)
		if err == nil {
			a.connectorRoots, err = connectclient.CertPool(b)
		}
		if err != nil {
			return nil, fmt.Errorf("satellite: --connector-ca %s: %w", cfg.ConnectorCA, err)
		}
	}
	held, err := loadHeld(cfg.DataDir)
	if err != nil {
		// A damaged pair is not fatal: the connector refuses this satellite
		// until an operator deletes it or restores the files; say so.
		deps.Logger.Error("the certificate in the data dir is unusable", "error", err, "dir", tlsDir(cfg.DataDir))
	} else if held != nil {
		a.cert.Store(held)
	}
	if b, err := os.ReadFile(filepath.Join(cfg.DataDir, "state.json")); err == nil {
		_ = json.Unmarshal(b, &a.state)
	}
	st, err := store.Open(ctx, cfg.Store, deps.Logger)
	if err != nil {
		return nil, err
	}
	a.store = st
	srv, err := connectserver.New(cfg.Server, connectserver.Deps{Logger: deps.Logger, TracerProvider: deps.TracerProvider, Registry: deps.Metrics})
	if err != nil {
		st.Close()
		return nil, err
	}
	a.srv = srv
	if cfg.DirectAddr != "" {
		if a.direct, err = a.newDirectServer(); err != nil {
			st.Close()
			return nil, err
		}
	}
	a.mountIngest()
	return a, nil
}

// loadIdentity returns the identity kept in dir, creating it once.
func loadIdentity(dir string) (string, error) {
	path := filepath.Join(dir, "identity")
	b, err := os.ReadFile(path)
	if err == nil {
		id := strings.TrimSpace(string(b))
		if id != "" {
			return id, nil
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("satellite: identity: %w", err)
	}
	raw := make([]byte, 16)
	_, _ = rand.Read(raw)
	id := hex.EncodeToString(raw)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(id+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("satellite: identity: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", fmt.Errorf("satellite: identity: %w", err)
	}
	return id, nil
}

func (a *Agent) saveState(st State) {
	a.mu.Lock()
	a.state = st
	a.mu.Unlock()
	b, _ := json.MarshalIndent(st, "", "  ")
	path := filepath.Join(a.cfg.DataDir, "state.json")
	if err := os.WriteFile(path+".tmp", b, 0o600); err == nil {
		_ = os.Rename(path+".tmp", path)
	}
}

// State returns the enrolment state (empty SatelliteID before the first
// registration).
func (a *Agent) State() State {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.state
}

// Identity is the stable identity kept in the data dir.
func (a *Agent) Identity() string { return a.identity }

// Store is the agent's telemetry store.
func (a *Agent) Store() *store.Store { return a.store }

// Listen binds the local port; URL is then valid.
func (a *Agent) Listen() error {
	_, err := a.srv.Listen()
	return err
}

// URL is the local server's base URL (ingest, health).
func (a *Agent) URL() string { return a.srv.URL() }

// Run keeps the link up, ingests and serves until ctx ends, then closes the
// store (committing what is pending).
func (a *Agent) Run(ctx context.Context) error {
	if _, err := a.srv.Listen(); err != nil {
		return err
	}
	var wg sync.WaitGroup
	bg, stop := context.WithCancel(ctx)
	if a.direct != nil {
		if _, err := a.direct.Listen(); err != nil {
			stop()
			return fmt.Errorf("satellite: direct mode: %w", err)
		}
		if a.cfg.Address == "" {
			a.cfg.Address = a.direct.Addr()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := a.direct.Run(bg); err != nil && bg.Err() == nil {
				a.log.Error("direct-mode server stopped", "error", err)
			}
		}()
	}
	if a.cfg.Address == "" {
		a.cfg.Address = a.srv.Addr()
	}
	wg.Add(1)
	go func() { defer wg.Done(); a.linkLoop(bg) }()
	if a.cfg.Demo.Enabled {
		wg.Add(1)
		go func() { defer wg.Done(); a.runDemo(bg) }()
	}
	ing, err := a.startIngest(bg, &wg)
	if err != nil {
		stop()
		wg.Wait()
		return errors.Join(err, a.store.Close())
	}
	a.mu.Lock()
	a.lines = ing
	a.mu.Unlock()
	err = a.srv.Run(ctx)
	stop()
	ing.close()
	wg.Wait()
	return errors.Join(err, a.store.Close())
}

// RunLocal runs a query on the local store and discards the result: the
// satellite's own execution time, without any network (benchmarks compare
// the end-to-end path against it).
func (a *Agent) RunLocal(ctx context.Context, sql string, maxBatchBytes int) (rows, bytes int64, err error) {
	res, err := a.store.Query(ctx, sql, store.Limits{MaxRows: a.cfg.MaxRows, MaxBytes: a.cfg.MaxBytes, MaxBatchBytes: maxBatchBytes}, discard{})
	return res.Rows, res.Bytes, err
}

type discard struct{}

func (discard) Schema([]*queryv1.Column) error        { return nil }
func (discard) Batch(*queryv1.ColumnBatch, int) error { return nil }
