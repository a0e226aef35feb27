package dev

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.opentelemetry.io/otel/trace"

	"github.com/orbitplane/orbit/libs/etcdkv"
	"github.com/orbitplane/orbit/libs/natsbus"
	"github.com/orbitplane/orbit/libs/otelsetup"
	"github.com/orbitplane/orbit/libs/svcmain"
	certdnsv1 "github.com/orbitplane/orbit/proto/orbit/certdns/v1"
	"github.com/orbitplane/orbit/proto/orbit/certdns/v1/certdnsv1connect"
	"github.com/orbitplane/orbit/services/certdns/certdns"
	"github.com/orbitplane/orbit/services/certdns/pki"
	"github.com/orbitplane/orbit/services/collector/collector"
	"github.com/orbitplane/orbit/services/connector/connector"
	"github.com/orbitplane/orbit/services/ctxpublisher/ctxpublisher"
	"github.com/orbitplane/orbit/services/gateway/gateway"
	"github.com/orbitplane/orbit/services/logbroker/logbroker"
	"github.com/orbitplane/orbit/services/platform/platform"
	"github.com/orbitplane/orbit/services/querybroker/querybroker"
	"github.com/orbitplane/orbit/services/registry/registry"
	"github.com/orbitplane/orbit/services/router/router"
	"github.com/orbitplane/orbit/services/satellite/satellite"
)

// DevDomain is orbit dev's satellites zone: <uuid>.satellites.orbit.local.
const DevDomain = "orbit.local"

// CACertFile (in each region's certdns directory) is the region's platform
// CA certificate.
const CACertFile = "ca.pem"

// LogDir (under the data dir) holds the services' log files; the collector
// ships them to the stream LogStream of the dev tenant.
const (
	LogDir    = "logs"
	LogStream = "orbit-logs"
	// RoutedLog is the router's file sink, under the router's own
	// directory (not LogDir: the collector would ship it again).
	RoutedLog = "routed.log"
)

// DevRules are the router's rules in a new data dir (edit
// <data-dir>/router/rules.yaml; the router reloads it): mask secrets and
// personal data, keep everything in a rotated file.
const DevRules = `version: 1
sources:
  - stream: orbit-logs
sinks:
  archive: {type: file, path: %q, max_bytes: 67108864, max_files: 3}
rules:
  - name: mask
    mask: {field_names: [password, authorization, api_key, deploy_key], patterns: [email, token, card]}
    route: [archive]
`

// Components are the services `orbit dev` runs, in start order: the hub's
// platform and context publisher (the dev tenant is made through them), the
// registry, a connector, the query broker, the log broker, the collector,
// the router, the gateway, then the demo satellites.
func Components(satellites int, regions []string) []Component {
	if len(regions) == 0 {
		regions = []string{RegionName}
	}
	cs := []Component{
		hub(service("platform", platform.Needs, func(ctx context.Context, env Env, d deps) (svcLib, error) {
			return platform.New(ctx, platform.Config{Database: filepath.Join(env.DataDir, "platform.db"), AdminToken: env.AdminToken},
				platform.Deps{Logger: d.log, TracerProvider: d.tp, NATS: d.nc})
		})),
		hub(service("ctxpublisher", ctxpublisher.Needs, func(ctx context.Context, env Env, d deps) (svcLib, error) {
			return ctxpublisher.New(ctx, ctxpublisher.Config{Database: filepath.Join(filepath.Dir(env.DataDir), "platform", "platform.db")},
				ctxpublisher.Deps{Logger: d.log, TracerProvider: d.tp, NATS: d.nc})
		})),
	}
	for ri, region := range regions {
		for _, c := range spokeComponents(ri == 0) {
			c.Region = region
			cs = append(cs, c)
		}
	}
	sites := []string{"berlin", "tokyo", "ohio", "sydney", "lagos"}
	for i := range satellites {
		name := fmt.Sprintf("demo-%d", i+1)
		c := service(name, satellite.Needs, func(ctx context.Context, env Env, d deps) (svcLib, error) {
			cfg := satellite.Config{
				DataDir: filepath.Join(env.DataDir, "data"), ConnectorURL: env.Services["connector"], DeployKey: env.Bootstrap.DeployKey,
				Name: name, Labels: satellite.Labels{"env": "demo", "site": sites[i%len(sites)]},
				Demo: satellite.DemoConfig{Enabled: true, Rate: 20, Backfill: satellite.DefaultDemoBackfill},
			}
			cfg.Ingest.HostMetricsEvery = satellite.DefaultHostMetricsEvery
			cfg.DirectAddr = "127.0.0.1:0"
			if strings.HasPrefix(cfg.ConnectorURL, "https://") {
				// The connector's certificate is from the region's CA.
				ca, err := fetchCA(ctx, env.Services["certdns"])
				if err != nil {
					return nil, err
				}
				cfg.ConnectorCA = filepath.Join(env.DataDir, "connector-ca.pem")
				if err := os.WriteFile(cfg.ConnectorCA, ca, 0o644); err != nil {
					return nil, err
				}
			}
			return satellite.New(ctx, cfg, satellite.Deps{Logger: d.log, TracerProvider: d.tp})
		})
		c.Region = regions[i%len(regions)] // split between the regions
		cs = append(cs, c)
	}
	return cs
}

// spokeComponents are one region's services; the first region also runs
// the collector and the router (orbit dev has one log file to ship), and its
// gateway takes --gateway-port.
func spokeComponents(first bool) []Component {
	cs := []Component{
		service("registry", registry.Needs, func(ctx context.Context, env Env, d deps) (svcLib, error) {
			return registry.New(registry.Config{Region: env.Region}, registry.Deps{Logger: d.log, TracerProvider: d.tp, NATS: d.nc, Etcd: d.etcd})
		}),
		service("certdns", certdns.Needs, func(ctx context.Context, env Env, d deps) (svcLib, error) {
			svc, err := certdns.New(ctx, certdns.Config{Domain: DevDomain, PoolSize: 20, LowWatermark: 5, Lifetime: certdns.DefaultLifetime,
				RefillInterval: certdns.DefaultRefillInterval, DNSAddr: "127.0.0.1:0", DNSTTL: certdns.DefaultDNSTTL}, certdns.Deps{Logger: d.log, TracerProvider: d.tp, Etcd: d.etcd})
			if err != nil {
				return nil, err
			}
			// The region's CA, for clients that verify satellites
			// (dev.json's regions[].ca_cert).
			if err := os.WriteFile(filepath.Join(env.DataDir, CACertFile), svc.CAPEM(), 0o644); err != nil {
				return nil, err
			}
			return svc, nil
		}),
		service("connector", connector.Needs, func(ctx context.Context, env Env, d deps) (svcLib, error) {
			// Satellites link over mutual TLS: the connector serves a
			// certificate from the region's CA (for its loopback address)
			// and verifies satellites' client certificates against it.
			ca, err := pki.LoadOrCreate(ctx, d.etcd, DevDomain)
			if err != nil {
				return nil, err
			}
			is, err := ca.IssueFor("connector.satellites."+DevDomain, []net.IP{net.IPv4(127, 0, 0, 1)}, certdns.DefaultLifetime)
			if err != nil {
				return nil, err
			}
			cfg := connector.Config{ID: "dev-connector-" + env.Region, RegistryURL: env.Services["registry"], CertDNSURL: env.Services["certdns"],
				TLSCert: filepath.Join(env.DataDir, "connector.pem"), TLSKey: filepath.Join(env.DataDir, "connector.key"), ClientCA: filepath.Join(env.DataDir, CACertFile)}
			for f, b := range map[string][]byte{cfg.TLSCert: is.CertPEM, cfg.TLSKey: is.KeyPEM, cfg.ClientCA: ca.CertPEM} {
				if err := os.WriteFile(f, b, 0o600); err != nil {
					return nil, err
				}
			}
			c, err := connector.New(cfg, connector.Deps{Logger: d.log, TracerProvider: d.tp, NATS: d.nc, Etcd: d.etcd})
			if err != nil {
				return nil, err
			}
			return withRootCAs{c, ca.CertPEM}, nil
		}),
		service("querybroker", querybroker.Needs, func(ctx context.Context, env Env, d deps) (svcLib, error) {
			return querybroker.New(querybroker.Config{RegistryURL: env.Services["registry"]},
				querybroker.Deps{Logger: d.log, TracerProvider: d.tp, NATS: d.nc})
		}),
		service("logbroker", logbroker.Needs, func(ctx context.Context, env Env, d deps) (svcLib, error) {
			return logbroker.New(logbroker.Config{}, logbroker.Deps{Logger: d.log, TracerProvider: d.tp, NATS: d.nc})
		}),
	}
	if first {
		cs = append(cs,
			service("collector", collector.Needs, func(ctx context.Context, env Env, d deps) (svcLib, error) {
				return collector.New(collector.Config{
					Files: []string{filepath.Join(env.Config.DataDir, LogDir, "*.log")}, StateDir: env.DataDir,
					LogBrokerURL: env.Services["logbroker"], Tenant: env.Bootstrap.TenantID, Stream: LogStream,
				}, collector.Deps{Logger: d.log, TracerProvider: d.tp})
			}),
			service("router", router.Needs, func(ctx context.Context, env Env, d deps) (svcLib, error) {
				rules := filepath.Join(env.DataDir, "rules.yaml")
				if _, err := os.Stat(rules); errors.Is(err, os.ErrNotExist) {
					if err := os.WriteFile(rules, []byte(fmt.Sprintf(DevRules, filepath.Join(env.DataDir, RoutedLog))), 0o644); err != nil {
						return nil, err
					}
				}
				return router.New(router.Config{Rules: rules, LogBrokerURL: env.Services["logbroker"], Tenant: env.Bootstrap.TenantID, Region: env.Region},
					router.Deps{Logger: d.log, TracerProvider: d.tp})
			}))
	}
	return append(cs, service("gateway", gateway.Needs, func(ctx context.Context, env Env, d deps) (svcLib, error) {
		cfg := gateway.Config{BrokerURL: env.Services["querybroker"], RegistryURL: env.Services["registry"], LogBrokerURL: env.Services["logbroker"], Region: env.Region, WebDir: env.Config.WebDir}
		port := 0
		if first {
			port = env.Config.GatewayPort
			// The first region's gateway also plays the hub's: it relays the
			// admin APIs for the web UI (docs/web.md).
			cfg.PlatformURL, cfg.CtxPublisherURL = env.Services["platform"], env.Services["ctxpublisher"]
		}
		cfg.Server.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		cfg.Server.CORSOrigins = []string{"*"}
		return gateway.New(cfg, gateway.Deps{Logger: d.log, TracerProvider: d.tp, Etcd: d.etcd})
	}))
}

func hub(c Component) Component {
	c.Hub = true
	return c
}

type svcLib interface {
	Listen() error
	URL() string
	Run(ctx context.Context) error
}

// withRootCAs is a service whose https URL verifies against ca.
type withRootCAs struct {
	svcLib
	ca []byte
}

func (w withRootCAs) RootCAs() []byte { return w.ca }

type deps struct {
	log  *slog.Logger
	tp   trace.TracerProvider
	nc   *nats.Conn
	etcd *clientv3.Client
}

// service adapts a service library (New, Listen, URL, Run) to a Component:
// it gives the service its own logger, tracer, NATS connection and etcd
// client, and closes them when the service stops.
func service(name string, needs svcmain.Needs, build func(context.Context, Env, deps) (svcLib, error)) Component {
	return Component{Name: name, Start: func(ctx context.Context, env Env) (Running, error) {
		d := deps{log: env.ServiceLogger(name)}
		var closers []func()
		closeAll := func() {
			for i := len(closers) - 1; i >= 0; i-- {
				closers[i]()
			}
		}
		tp, err := otelsetup.Setup(ctx, otelsetup.Config{Service: name})
		if err != nil {
			return Running{}, err
		}
		closers = append(closers, func() { _ = tp.Shutdown(context.Background()) })
		d.tp = tp
		if needs.NATS {
			nc, err := natsbus.Connect(ctx, natsbus.Config{URL: env.NATSURL, Name: name}, d.log)
			if err != nil {
				closeAll()
				return Running{}, err
			}
			closers = append(closers, nc.Close)
			d.nc = nc
		}
		if needs.Etcd {
			cli, err := etcdkv.Connect(ctx, etcdkv.Config{Endpoints: env.EtcdEndpoints})
			if err != nil {
				closeAll()
				return Running{}, err
			}
			closers = append(closers, func() { _ = cli.Close() })
			d.etcd = cli
		}
		svc, err := build(ctx, env, d)
		if err == nil {
			err = svc.Listen()
		}
		if err != nil {
			closeAll()
			return Running{}, err
		}
		done := make(chan error, 1)
		go func() {
			err := svc.Run(ctx)
			closeAll()
			done <- err
		}()
		r := Running{URL: svc.URL(), Done: done}
		if v, ok := svc.(interface{ RootCAs() []byte }); ok {
			r.RootCAs = v.RootCAs()
		}
		if v, ok := svc.(interface{ DNSAddr() string }); ok {
			r.DNSAddr = v.DNSAddr()
		}
		return r, nil
	}}
}

// fetchCA asks the region's certdns for its CA certificate.
func fetchCA(ctx context.Context, certdnsURL string) ([]byte, error) {
	if certdnsURL == "" {
		return nil, errors.New("dev: no certdns in this region to get the CA from")
	}
	c := certdnsv1connect.NewCertDNSServiceClient(http.DefaultClient, certdnsURL)
	resp, err := c.GetCA(ctx, connect.NewRequest(&certdnsv1.GetCARequest{}))
	if err != nil {
		return nil, fmt.Errorf("dev: certdns CA: %w", err)
	}
	return resp.Msg.CaPem, nil
}
