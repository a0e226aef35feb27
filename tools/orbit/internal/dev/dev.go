// Package dev is `orbit dev`: the whole system in one process on a fresh
// machine. It starts embedded NATS (with JetStream) and etcd under a data
// directory, then every registered component, waits until each reports
// healthy, and writes dev.json so scripts and tests can find everything.
// Stopping and starting again on the same data directory keeps the data.
package dev

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"connectrpc.com/grpchealth"
	"github.com/nats-io/nats-server/v2/server"

	"github.com/orbitplane/orbit/libs/connectclient"
	"github.com/orbitplane/orbit/libs/contextstore"
	"github.com/orbitplane/orbit/libs/embedetcd"
	"github.com/orbitplane/orbit/libs/embednats"
)

// Defaults.
const (
	DefaultNATSPort     = 4222
	DefaultEtcdPort     = 2379
	DefaultEtcdPeerPort = 2380
	DefaultReadyTimeout = 60 * time.Second
	DefaultGatewayPort  = 8080
	DefaultSatellites   = 3
	// InfoFile is written into the data directory once everything is healthy.
	InfoFile = "dev.json"
)

// Config configures the stack. Ports of 0 pick free ones.
type Config struct {
	DataDir      string
	NATSPort     int
	EtcdPort     int
	EtcdPeerPort int
	// ReadyTimeout bounds the wait for each component to become healthy.
	ReadyTimeout time.Duration
	Logger       *slog.Logger
	// ServiceLogger makes each service's own logger for a region ("hub"
	// for the hub's); default: Logger with a component attribute.
	ServiceLogger func(service, region string) *slog.Logger
	// GatewayPort is the gateway's port (0 = any free one).
	GatewayPort int
	// Satellites is how many demo satellites to run.
	Satellites int
	// Regions is how many spoke regions to run (default 1: one region,
	// "local", sharing the hub's NATS and etcd). With 2 or more, each
	// region "region-N" gets its own NATS and etcd and its own services,
	// and the demo satellites are split between them.
	Regions int
	// WebDir is the built web UI every gateway serves at "/" (empty: none).
	WebDir string
}

// MaxRegions bounds --regions (each region is a NATS server, an etcd member
// and six services in one process).
const MaxRegions = 8

// RegionNames are the regions a configuration runs.
func RegionNames(regions int) []string {
	if regions <= 1 {
		return []string{RegionName}
	}
	names := make([]string, regions)
	for i := range names {
		names[i] = fmt.Sprintf("region-%d", i+1)
	}
	return names
}

// Env is what a component gets to start with.
type Env struct {
	NATSURL       string
	EtcdEndpoints []string
	// DataDir is the component's own directory under the stack's data dir.
	DataDir string
	Logger  *slog.Logger
	// ServiceLogger makes a service's own logger.
	ServiceLogger func(service string) *slog.Logger
	// Region is the component's region ("hub" for the hub's).
	Region string
	// Services are the URLs of the components started before this one.
	Services map[string]string
	// Bootstrap is the dev tenant with its API key and deploy key (empty
	// for the hub's components, which start before it exists).
	Bootstrap contextstore.Bootstrap
	// AdminToken authorises the platform's admin API.
	AdminToken string
	// Config is the stack's configuration.
	Config Config
}

// Running is a started component.
type Running struct {
	// URL is the component's Connect base URL; its gRPC health service is
	// polled until SERVING, and it is listed in dev.json.
	URL string
	// RootCAs (PEM) verify URL when it is https (the connector's link
	// listener, signed by the region's platform CA).
	RootCAs []byte
	// DNSAddr is the DNS server a component serves (certdns), if any.
	DNSAddr string
	// Done yields the component's result once it has stopped.
	Done <-chan error
}

// Component is one service (or helper) that `orbit dev` runs. Start must
// return once the component is listening; it keeps running until ctx ends.
type Component struct {
	Name string
	// Hub components (platform, ctxpublisher) start before the dev tenant
	// is bootstrapped through them.
	Hub bool
	// Region is the spoke region a non-hub component runs in (empty: the
	// first).
	Region string
	Start  func(ctx context.Context, env Env) (Running, error)
}

// Info is the content of dev.json.
type Info struct {
	DataDir       string            `json:"data_dir"`
	NATSURL       string            `json:"nats_url"`
	EtcdEndpoints []string          `json:"etcd_endpoints"`
	Services      map[string]string `json:"services"`
	// GatewayURL is where orbitctl, browsers and programs connect.
	GatewayURL string `json:"gateway_url,omitempty"`
	// TenantID, APIKey and DeployKey are the bootstrap tenant's (kept in
	// bootstrap.json, so restarts keep them).
	TenantID  string `json:"tenant_id,omitempty"`
	APIKey    string `json:"api_key,omitempty"`
	DeployKey string `json:"deploy_key,omitempty"`
	// AdminToken is the platform admin API's bearer token.
	AdminToken string `json:"admin_token,omitempty"`
	// Regions are the spoke regions, each with its gateway, NATS and etcd
	// (with one region they are the hub's).
	Regions   []RegionInfo `json:"regions"`
	PID       int          `json:"pid"`
	StartedAt time.Time    `json:"started_at"`
}

// RegionInfo describes one spoke region in dev.json.
type RegionInfo struct {
	Name          string   `json:"name"`
	GatewayURL    string   `json:"gateway_url"`
	NATSURL       string   `json:"nats_url"`
	EtcdEndpoints []string `json:"etcd_endpoints"`
	// CACert is the path of the region's platform CA certificate (PEM),
	// which satellites' certificates chain to.
	CACert string `json:"ca_cert,omitempty"`
	// DNSAddr is the region's certdns DNS server (UDP and TCP), which
	// resolves <uuid>.satellites.orbit.local to satellites' addresses.
	DNSAddr string `json:"dns_addr,omitempty"`
}

// Stack is a running system.
type Stack struct {
	info Info
	lock *os.File
	nats *server.Server
	etcd *embedetcd.Server
	// spokes' own NATS and etcd (with 2 or more regions).
	spokeNATS []*server.Server
	spokeEtcd []*embedetcd.Server
	cancel    context.CancelFunc
	running   []namedRunning
	once      sync.Once
	stopErr   error
}

type namedRunning struct {
	name   string
	cancel context.CancelFunc
	Running
}

// ErrLocked means another `orbit dev` uses the data directory.
var ErrLocked = errors.New("dev: data directory in use by another orbit dev")

// Start brings the stack up. On error, whatever started is stopped again.
func Start(ctx context.Context, cfg Config, components []Component) (_ *Stack, err error) {
	if cfg.DataDir == "" {
		return nil, errors.New("dev: no data directory")
	}
	if cfg.ReadyTimeout <= 0 {
		cfg.ReadyTimeout = DefaultReadyTimeout
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("dev: data dir: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("dev: data dir: %w", err)
	}
	s := &Stack{info: Info{DataDir: dir, Services: map[string]string{}, PID: os.Getpid(), StartedAt: time.Now().UTC()}}
	defer func() {
		if err != nil {
			_ = s.Stop()
		}
	}()
	if s.lock, err = lockDir(dir); err != nil {
		return nil, err
	}
	// A dev.json from an earlier run must not be mistaken for this one.
	_ = os.Remove(filepath.Join(dir, InfoFile))

	natsPort := cfg.NATSPort
	if natsPort == 0 {
		natsPort = -1
	}
	if s.nats, err = embednats.Start(embednats.Config{Port: natsPort, StoreDir: filepath.Join(dir, "nats")}); err != nil {
		return nil, fmt.Errorf("dev: nats on port %d: %w", cfg.NATSPort, err)
	}
	s.info.NATSURL = s.nats.ClientURL()
	log.Info("nats ready", "event", "dev.nats_ready", "url", s.info.NATSURL)

	if s.etcd, err = embedetcd.Start(embedetcd.Config{Dir: filepath.Join(dir, "etcd"), ClientPort: cfg.EtcdPort, PeerPort: cfg.EtcdPeerPort}); err != nil {
		return nil, fmt.Errorf("dev: etcd on ports %d/%d: %w", cfg.EtcdPort, cfg.EtcdPeerPort, err)
	}
	s.info.EtcdEndpoints = []string{s.etcd.Endpoint}
	log.Info("etcd ready", "event", "dev.etcd_ready", "endpoint", s.etcd.Endpoint)

	boot, err := loadBoot(dir)
	if err != nil {
		return nil, err
	}
	booted := false
	names := RegionNames(cfg.Regions)
	regions := map[string]*RegionInfo{}
	for _, name := range names {
		r := &RegionInfo{Name: name, NATSURL: s.info.NATSURL, EtcdEndpoints: s.info.EtcdEndpoints}
		if len(names) > 1 {
			rdir := filepath.Join(dir, "regions", name)
			ns, err := embednats.Start(embednats.Config{Port: -1, StoreDir: filepath.Join(rdir, "nats")})
			if err != nil {
				return nil, fmt.Errorf("dev: %s nats: %w", name, err)
			}
			s.spokeNATS = append(s.spokeNATS, ns)
			es, err := embedetcd.Start(embedetcd.Config{Dir: filepath.Join(rdir, "etcd")})
			if err != nil {
				return nil, fmt.Errorf("dev: %s etcd: %w", name, err)
			}
			s.spokeEtcd = append(s.spokeEtcd, es)
			r.NATSURL, r.EtcdEndpoints = ns.ClientURL(), []string{es.Endpoint}
			log.Info("region ready", "event", "dev.region_ready", "region_name", name, "nats", r.NATSURL, "etcd", es.Endpoint)
		}
		regions[name] = r
	}
	// Each region's services see the hub's and their own region's URLs.
	hubServices := map[string]string{}
	regionServices := map[string]map[string]string{}
	for _, n := range names {
		regionServices[n] = map[string]string{}
	}

	svcLog := cfg.ServiceLogger
	if svcLog == nil {
		svcLog = func(name, region string) *slog.Logger { return log.With("component", name, "region", region) }
	}
	cctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel = cancel
	for _, c := range components {
		if !booted && !c.Hub {
			// The hub's components are up: make the dev tenant through
			// the platform API before the services that use its keys.
			if _, ok := s.info.Services["platform"]; ok {
				var rs []RegionInfo
				for _, n := range names {
					rs = append(rs, *regions[n])
				}
				if boot, err = bootstrap(ctx, dir, boot, s.info.Services["platform"], rs); err != nil {
					return nil, err
				}
			}
			booted = true
			s.info.TenantID, s.info.APIKey, s.info.DeployKey, s.info.AdminToken = boot.TenantID, boot.APIKey, boot.DeployKey, boot.AdminToken
		}
		region, key, cdir := "hub", c.Name, filepath.Join(dir, c.Name)
		natsURL, etcdEPs, services := s.info.NATSURL, s.info.EtcdEndpoints, maps.Clone(hubServices)
		if !c.Hub {
			region = c.Region
			if region == "" {
				region = names[0]
			}
			ri, ok := regions[region]
			if !ok {
				return nil, fmt.Errorf("dev: %s: unknown region %q", c.Name, region)
			}
			natsURL, etcdEPs = ri.NATSURL, ri.EtcdEndpoints
			maps.Copy(services, regionServices[region])
			if len(names) > 1 {
				key, cdir = region+"/"+c.Name, filepath.Join(dir, "regions", region, c.Name)
			}
		}
		if err := os.MkdirAll(cdir, 0o755); err != nil {
			return nil, fmt.Errorf("dev: %s: %w", c.Name, err)
		}
		ccctx, ccancel := context.WithCancel(cctx)
		r, err := c.Start(ccctx, Env{
			NATSURL: natsURL, EtcdEndpoints: etcdEPs, DataDir: cdir, Logger: log.With("component", key), Region: region,
			ServiceLogger: func(svc string) *slog.Logger { return svcLog(svc, region) }, Services: services,
			Bootstrap: boot.Bootstrap, AdminToken: boot.AdminToken, Config: cfg,
		})
		if err != nil {
			ccancel()
			return nil, fmt.Errorf("dev: start %s: %w", c.Name, err)
		}
		s.running = append(s.running, namedRunning{c.Name, ccancel, r})
		if r.URL != "" {
			if err := waitHealthy(ctx, r.URL, r.RootCAs, cfg.ReadyTimeout); err != nil {
				return nil, fmt.Errorf("dev: %s at %s: %w", c.Name, r.URL, err)
			}
			s.info.Services[key] = r.URL
			if r.DNSAddr != "" && !c.Hub {
				regions[region].DNSAddr = r.DNSAddr
			}
			if c.Hub {
				hubServices[c.Name] = r.URL
			} else {
				regionServices[region][c.Name] = r.URL
			}
		}
		log.Info("component ready", "event", "dev.component_ready", "name", key, "url", r.URL)
	}
	for _, n := range names {
		regions[n].GatewayURL = regionServices[n]["gateway"]
		if _, ok := regionServices[n]["certdns"]; ok {
			cdir := filepath.Join(dir, "certdns")
			if len(names) > 1 {
				cdir = filepath.Join(dir, "regions", n, "certdns")
			}
			regions[n].CACert = filepath.Join(cdir, CACertFile)
		}
		s.info.Regions = append(s.info.Regions, *regions[n])
	}
	s.info.GatewayURL = s.info.Regions[0].GatewayURL
	if platformURL, ok := s.info.Services["platform"]; ok {
		// Now that the gateways listen, publish them: every region learns
		// the others' (the web UI's region picker).
		if err := publishGateways(ctx, platformURL, boot.AdminToken, s.info.Regions); err != nil {
			return nil, err
		}
	}
	if err := writeInfo(filepath.Join(dir, InfoFile), s.info); err != nil {
		return nil, err
	}
	return s, nil
}

// Info describes the running stack (the content of dev.json).
func (s *Stack) Info() Info { return s.info }

// Stop stops the components in reverse order, then etcd and NATS. It is safe
// to call more than once.
func (s *Stack) Stop() error {
	s.once.Do(func() {
		var errs []error
		// Reverse start order, one at a time: satellites first, the registry
		// last, so every service can still reach what it depends on.
		for i := len(s.running) - 1; i >= 0; i-- {
			r := s.running[i]
			r.cancel()
			if r.Done == nil {
				continue
			}
			if err := <-r.Done; err != nil && !errors.Is(err, context.Canceled) {
				errs = append(errs, fmt.Errorf("%s: %w", r.name, err))
			}
		}
		if s.cancel != nil {
			s.cancel()
		}
		for _, e := range s.spokeEtcd {
			e.Close()
		}
		for _, n := range s.spokeNATS {
			n.Shutdown()
			n.WaitForShutdown()
		}
		if s.etcd != nil {
			s.etcd.Close()
		}
		if s.nats != nil {
			s.nats.Shutdown()
			s.nats.WaitForShutdown()
		}
		if s.info.DataDir != "" {
			_ = os.Remove(filepath.Join(s.info.DataDir, InfoFile))
		}
		if s.lock != nil {
			_ = s.lock.Close() // releases the flock
		}
		s.stopErr = errors.Join(errs...)
	})
	return s.stopErr
}

func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, "LOCK"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("dev: lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("%w: %s", ErrLocked, dir)
	}
	return f, nil
}

func waitHealthy(ctx context.Context, url string, rootCAs []byte, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	hc := http.DefaultClient
	if len(rootCAs) > 0 {
		roots, err := connectclient.CertPool(rootCAs)
		if err != nil {
			return fmt.Errorf("root CAs: %w", err)
		}
		hc = connectclient.HTTPClient(&tls.Config{RootCAs: roots})
		defer hc.CloseIdleConnections()
	}
	client := grpchealth.NewClient(hc, url)
	var last error
	for {
		resp, err := client.Check(ctx, &grpchealth.CheckRequest{})
		switch {
		case err == nil && resp.Status == grpchealth.StatusServing:
			return nil
		case err == nil:
			last = fmt.Errorf("health %v", resp.Status)
		default:
			last = err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not healthy after %v: %w", timeout, last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func writeInfo(path string, info Info) error {
	b, err := json.MarshalIndent(info, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("dev: write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("dev: write %s: %w", path, err)
	}
	return nil
}
