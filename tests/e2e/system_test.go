// Package e2e runs the query path end to end in one process with the real
// parts: embedded NATS (JetStream) and etcd servers, the registry, connector
// replicas, the broker, the gateway and DuckDB-backed satellites.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.opentelemetry.io/otel/trace"

	"github.com/orbitplane/orbit/libs/apikey"
	"github.com/orbitplane/orbit/libs/connectclient"
	"github.com/orbitplane/orbit/libs/contextstore"
	"github.com/orbitplane/orbit/libs/obslog"
	"github.com/orbitplane/orbit/libs/otelsetup"
	"github.com/orbitplane/orbit/libs/testing/testetcd"
	"github.com/orbitplane/orbit/libs/testing/testnats"
	"github.com/orbitplane/orbit/libs/testing/testwait"
	connectorv1 "github.com/orbitplane/orbit/proto/orbit/connector/v1"
	"github.com/orbitplane/orbit/proto/orbit/connector/v1/connectorv1connect"
	"github.com/orbitplane/orbit/proto/orbit/logbroker/v1/logbrokerv1connect"
	queryv1 "github.com/orbitplane/orbit/proto/orbit/query/v1"
	"github.com/orbitplane/orbit/proto/orbit/query/v1/queryv1connect"
	registryv1 "github.com/orbitplane/orbit/proto/orbit/registry/v1"
	"github.com/orbitplane/orbit/proto/orbit/registry/v1/registryv1connect"
	"github.com/orbitplane/orbit/services/certdns/certdns"
	"github.com/orbitplane/orbit/services/certdns/pki"
	"github.com/orbitplane/orbit/services/connector/connector"
	"github.com/orbitplane/orbit/services/gateway/gateway"
	"github.com/orbitplane/orbit/services/logbroker/logbroker"
	"github.com/orbitplane/orbit/services/querybroker/querybroker"
	"github.com/orbitplane/orbit/services/registry/registry"
	"github.com/orbitplane/orbit/services/satellite/satellite"
)

// logBuf collects every service's JSON log lines for assertions. With a
// file (benchmarks), lines go there, one write each, as a service's lines go
// to its stderr in production, instead of growing a buffer in memory.
type logBuf struct {
	file *os.File
	mu   sync.Mutex
	buf  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	if l.file != nil {
		return l.file.Write(p)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuf) String() string {
	if l.file != nil {
		b, _ := os.ReadFile(l.file.Name())
		return string(b)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

type running struct {
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error
}

// stop ends the service and waits for Run to return (once; later calls
// return the same result).
func (r *running) stop(t testing.TB) {
	t.Helper()
	r.once.Do(func() {
		r.cancel()
		select {
		case r.err = <-r.done:
		case <-time.After(30 * time.Second):
			r.err = fmt.Errorf("service did not stop in 30s")
		}
	})
	if r.err != nil {
		t.Errorf("stop: %v", r.err)
	}
}

func run(t testing.TB, listen func() error, runFn func(context.Context) error) *running {
	t.Helper()
	if err := listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- runFn(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

type system struct {
	t          testing.TB
	logs       *logBuf
	ns         *server.Server
	nc         *nats.Conn
	etcd       *clientv3.Client
	registry   *registry.Service
	connectors []*connector.Service
	connRun    []*running
	broker     *querybroker.Service
	gateway    *gateway.Service
	gatewayCfg gateway.Config
	gatewayRun *running
	tenants    map[string]contextstore.Bootstrap
	client     *http.Client
	hbInterval time.Duration
	// With options.tls: certdns, its CA (file) and the connectors' TLS.
	certdns           *certdns.Service
	caFile            string
	connCert, connKey string
	caPEM             []byte
}

type options struct {
	connectors int
	hbInterval time.Duration
	brokerCfg  querybroker.Config
	gatewayCfg gateway.Config
	logFile    bool // logs to a file, not memory (benchmarks)
	// tls runs certdns (with its DNS server) and connectors that serve
	// HTTPS with client certificates and deliver certificates; satellites
	// then serve direct mode.
	tls          bool
	certLifetime time.Duration
}

func logger(l *logBuf, service string) *slog.Logger {
	return obslog.New(l, obslog.Options{Service: service, Level: slog.LevelInfo})
}

// tracer is a real SDK provider (no exporter), as every binary has.
func tracer(t testing.TB, service string) trace.TracerProvider {
	tp, err := otelsetup.Setup(context.Background(), otelsetup.Config{Service: service})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return tp
}

func newSystem(t testing.TB, o options) *system {
	t.Helper()
	if o.connectors == 0 {
		o.connectors = 1
	}
	if o.hbInterval == 0 {
		o.hbInterval = 200 * time.Millisecond
	}
	s := &system{t: t, logs: &logBuf{}, tenants: map[string]contextstore.Bootstrap{}, client: connectclient.HTTPClient(nil), hbInterval: o.hbInterval}
	if o.logFile {
		f, err := os.Create(filepath.Join(t.TempDir(), "services.log"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = f.Close() })
		s.logs.file = f
	}
	t.Cleanup(func() {
		// Every service logs in the schema (docs/logging.md): a line
		// outside it fails the test that made it.
		for i, line := range strings.Split(s.logs.String(), "\n") {
			if strings.TrimSpace(line) == "" {
				continue
			}
			if err := obslog.Validate([]byte(line)); err != nil {
				t.Errorf("log line %d is outside the log schema (%v): %s", i+1, err, line)
				break
			}
		}
		if t.Failed() {
			t.Logf("service logs:\n%s", s.logs.String())
		}
	})
	s.ns = testnats.Start(t)
	s.nc = testnats.Connect(t, s.ns)
	_, s.etcd = testetcd.Start(t)
	for _, tenant := range []string{"tenant-a", "tenant-b"} {
		b := contextstore.Bootstrap{TenantID: tenant, APIKey: apikey.Generate(apikey.KindAPI), DeployKey: apikey.Generate(apikey.KindDeploy)}
		if err := contextstore.WriteBootstrap(context.Background(), s.etcd, b, tenant); err != nil {
			t.Fatal(err)
		}
		s.tenants[tenant] = b
	}
	if o.tls {
		s.startCertDNS(o.certLifetime)
	}
	reg, err := registry.New(registry.Config{HeartbeatInterval: o.hbInterval}, registry.Deps{Logger: logger(s.logs, "registry"), TracerProvider: tracer(t, "registry"), NATS: s.nc, Etcd: s.etcd})
	if err != nil {
		t.Fatal(err)
	}
	run(t, reg.Listen, reg.Run)
	s.registry = reg
	for i := range o.connectors {
		s.startConnector(fmt.Sprintf("connector-%d", i))
	}
	bcfg := o.brokerCfg
	bcfg.RegistryURL = reg.URL()
	br, err := querybroker.New(bcfg, querybroker.Deps{Logger: logger(s.logs, "querybroker"), TracerProvider: tracer(t, "querybroker"), NATS: s.nc})
	if err != nil {
		t.Fatal(err)
	}
	run(t, br.Listen, br.Run)
	s.broker = br
	lb, err := logbroker.New(logbroker.Config{}, logbroker.Deps{Logger: logger(s.logs, "logbroker"), TracerProvider: tracer(t, "logbroker"), NATS: s.nc})
	if err != nil {
		t.Fatal(err)
	}
	run(t, lb.Listen, lb.Run)
	gcfg := o.gatewayCfg
	gcfg.BrokerURL, gcfg.RegistryURL, gcfg.LogBrokerURL = br.URL(), reg.URL(), lb.URL()
	gw, err := gateway.New(gcfg, gateway.Deps{Logger: logger(s.logs, "gateway"), TracerProvider: tracer(t, "gateway"), Etcd: s.etcd})
	if err != nil {
		t.Fatal(err)
	}
	s.gatewayRun = run(t, gw.Listen, gw.Run)
	s.gateway, s.gatewayCfg = gw, gcfg
	return s
}

// startCertDNS runs certdns on the system's etcd and issues the connectors'
// server certificate from its CA (name and 127.0.0.1).
func (s *system) startCertDNS(lifetime time.Duration) {
	t := s.t
	if lifetime == 0 {
		lifetime = time.Hour
	}
	svc, err := certdns.New(context.Background(), certdns.Config{Domain: "orbit.test", PoolSize: 10, LowWatermark: 2, Lifetime: lifetime,
		RefillInterval: time.Second, DNSAddr: "127.0.0.1:0", DNSTTL: time.Second}, certdns.Deps{Logger: logger(s.logs, "certdns"), TracerProvider: tracer(t, "certdns"), Etcd: s.etcd})
	if err != nil {
		t.Fatal(err)
	}
	run(t, svc.Listen, svc.Run)
	s.certdns = svc
	ca, err := pki.LoadOrCreate(context.Background(), s.etcd, "orbit.test")
	if err != nil {
		t.Fatal(err)
	}
	is, err := ca.IssueFor("connector.satellites.orbit.test", []net.IP{net.IPv4(127, 0, 0, 1)}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	s.caFile, s.connCert, s.connKey = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "connector.pem"), filepath.Join(dir, "connector.key")
	for f, b := range map[string][]byte{s.caFile: ca.CertPEM, s.connCert: is.CertPEM, s.connKey: is.KeyPEM} {
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	s.caPEM = ca.CertPEM
}

// restartGateway stops the gateway and starts a new one (empty caches) on
// the same etcd.
func (s *system) restartGateway() {
	s.t.Helper()
	s.gatewayRun.stop(s.t)
	gw, err := gateway.New(s.gatewayCfg, gateway.Deps{Logger: logger(s.logs, "gateway"), TracerProvider: tracer(s.t, "gateway"), Etcd: s.etcd})
	if err != nil {
		s.t.Fatal(err)
	}
	s.gatewayRun = run(s.t, gw.Listen, gw.Run)
	s.gateway = gw
}

func (s *system) newConnector(id, addr string) (*connector.Service, *running) {
	s.t.Helper()
	nc := testnats.Connect(s.t, s.ns)
	cfg := connector.Config{ID: id, RegistryURL: s.registry.URL(), HeartbeatInterval: s.hbInterval, HeartbeatFlush: 50 * time.Millisecond}
	cfg.Server.Addr = addr
	if s.certdns != nil {
		cfg.TLSCert, cfg.TLSKey, cfg.ClientCA, cfg.CertDNSURL = s.connCert, s.connKey, s.caFile, s.certdns.URL()
	}
	c, err := connector.New(cfg, connector.Deps{Logger: logger(s.logs, "connector"), TracerProvider: tracer(s.t, "connector"), NATS: nc, Etcd: s.etcd})
	if err != nil {
		s.t.Fatal(err)
	}
	return c, run(s.t, c.Listen, c.Run)
}

func (s *system) startConnector(id string) {
	c, r := s.newConnector(id, "")
	s.connectors = append(s.connectors, c)
	s.connRun = append(s.connRun, r)
}

// restartConnector starts replica i again on its old address (after stop).
func (s *system) restartConnector(i int) {
	u, err := url.Parse(s.connectors[i].URL())
	if err != nil {
		s.t.Fatal(err)
	}
	s.connectors[i], s.connRun[i] = s.newConnector(s.connectors[i].ID(), u.Host)
}

// rawLinkConn is a hand-driven satellite link (no agent behind it).
type rawLinkConn struct {
	stream *connect.BidiStreamForClient[connectorv1.ConnectRequest, connectorv1.ConnectResponse]
	errs   chan *connectorv1.LinkError
}

// rawLink registers identity on connector i and then stays silent.
func (s *system) rawLink(i int, identity string) *rawLinkConn {
	s.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s.t.Cleanup(cancel)
	client := connectorv1connect.NewLinkServiceClient(s.client, s.connectors[i].URL())
	stream := client.Connect(ctx)
	context.AfterFunc(ctx, func() { _ = stream.CloseRequest(); _ = stream.CloseResponse() })
	if err := stream.Send(&connectorv1.ConnectRequest{Frame: &connectorv1.ConnectRequest_Register{Register: &connectorv1.Register{
		DeployKey: s.tenants["tenant-a"].DeployKey, Identity: identity, Name: "stale"}}}); err != nil {
		s.t.Fatal(err)
	}
	m, err := stream.Receive()
	if err != nil || m.GetRegistered() == nil {
		s.t.Fatalf("raw link: %v %v", m, err)
	}
	r := &rawLinkConn{stream: stream, errs: make(chan *connectorv1.LinkError, 1)}
	go func() {
		for {
			m, err := stream.Receive()
			if err != nil {
				close(r.errs)
				return
			}
			if le := m.GetError(); le != nil {
				r.errs <- le
			}
		}
	}()
	return r
}

func (r *rawLinkConn) waitError(t testing.TB) *connectorv1.LinkError {
	t.Helper()
	select {
	case le, ok := <-r.errs:
		if !ok {
			t.Fatal("link closed without a LinkError")
		}
		return le
	case <-time.After(5 * time.Second):
		t.Fatal("stale link was not closed")
	}
	return nil
}

type sat struct {
	agent *satellite.Agent
	run   *running
	dir   string
}

type satOptions struct {
	tenant    string
	name      string
	labels    map[string]string
	connector int
	dir       string
	cfg       func(*satellite.Config)
}

func (s *system) startSatellite(o satOptions) *sat {
	s.t.Helper()
	if o.tenant == "" {
		o.tenant = "tenant-a"
	}
	if o.dir == "" {
		o.dir = filepath.Join(s.t.TempDir(), o.name)
	}
	cfg := satellite.Config{
		DataDir: o.dir, ConnectorURL: s.connectors[o.connector].URL(), DeployKey: s.tenants[o.tenant].DeployKey,
		Name: o.name, Labels: o.labels, HeartbeatInterval: s.hbInterval, BackoffMin: 50 * time.Millisecond, BackoffMax: 500 * time.Millisecond,
	}
	cfg.Ingest.HostMetricsEvery = -1
	// ORBIT_BENCH_DUCKDB_THREADS measures the satellites with another DuckDB
	// thread count than the default (docs/benchmarks.md).
	if v := os.Getenv("ORBIT_BENCH_DUCKDB_THREADS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			s.t.Fatalf("ORBIT_BENCH_DUCKDB_THREADS=%q: want a positive number", v)
		}
		cfg.Store.Threads = n
	}
	if s.certdns != nil {
		cfg.ConnectorCA, cfg.DirectAddr = s.caFile, "127.0.0.1:0"
	}
	if o.cfg != nil {
		o.cfg(&cfg)
	}
	a, err := satellite.New(context.Background(), cfg, satellite.Deps{Logger: logger(s.logs, "satellite"), TracerProvider: tracer(s.t, "satellite")})
	if err != nil {
		s.t.Fatal(err)
	}
	r := run(s.t, a.Listen, a.Run)
	testwait.For(s.t, o.name+" registered", 10*time.Second, func() bool { return a.State().SatelliteID != "" })
	return &sat{agent: a, run: r, dir: o.dir}
}

func (s *system) query(tenant string) queryv1connect.QueryServiceClient {
	opts, _ := connectclient.Options(nil)
	return queryv1connect.NewQueryServiceClient(s.client, s.gateway.URL(), append(opts, connect.WithInterceptors(connectclient.Bearer(s.tenants[tenant].APIKey)))...)
}

func (s *system) satellites(tenant string) registryv1connect.RegistryServiceClient {
	opts, _ := connectclient.Options(nil)
	return registryv1connect.NewRegistryServiceClient(s.client, s.gateway.URL(), append(opts, connect.WithInterceptors(connectclient.Bearer(s.tenants[tenant].APIKey)))...)
}

func (s *system) logbroker(tenant string) logbrokerv1connect.LogBrokerServiceClient {
	opts, _ := connectclient.Options(nil)
	return logbrokerv1connect.NewLogBrokerServiceClient(s.client, s.gateway.URL(), append(opts, connect.WithInterceptors(connectclient.Bearer(s.tenants[tenant].APIKey)))...)
}

func (s *system) status(tenant, id string) registryv1.SatelliteStatus {
	resp, err := s.satellites(tenant).GetSatellite(context.Background(), connect.NewRequest(&registryv1.GetSatelliteRequest{Satellite: id}))
	if err != nil {
		return registryv1.SatelliteStatus_SATELLITE_STATUS_UNSPECIFIED
	}
	return resp.Msg.Satellite.Status
}

// result is a whole query answer as a client sees it.
type result struct {
	schemas map[string]*queryv1.ResultSchema
	rows    map[string]int64
	batches int
	done    map[string]*queryv1.SatelliteResult
	summary *queryv1.QuerySummary
	values  map[string][]*queryv1.ColumnBatch
	// messages is how many stream messages carried the answer.
	messages int
}

func collect(stream *connect.ServerStreamForClient[queryv1.ExecuteQueryResponse], keep bool, each func()) (*result, error) {
	r := &result{schemas: map[string]*queryv1.ResultSchema{}, rows: map[string]int64{}, done: map[string]*queryv1.SatelliteResult{}, values: map[string][]*queryv1.ColumnBatch{}}
	for stream.Receive() {
		m := stream.Msg()
		r.messages++
		// The stream's order: per satellite a schema, batches, a done; the
		// summary last.
		if r.summary != nil {
			return r, fmt.Errorf("message %d after the summary", r.messages)
		}
		if m.Batch != nil && r.schemas[m.SatelliteId] == nil && m.Schema == nil {
			return r, fmt.Errorf("satellite %s: batch before its schema", m.SatelliteId)
		}
		if (m.Schema != nil || m.Batch != nil) && r.done[m.SatelliteId] != nil {
			return r, fmt.Errorf("satellite %s: results after its satellite_done", m.SatelliteId)
		}
		if m.Schema != nil {
			r.schemas[m.SatelliteId] = m.Schema
		}
		if b := m.Batch; b != nil {
			r.rows[m.SatelliteId] += b.NumRows
			r.batches++
			if keep {
				r.values[m.SatelliteId] = append(r.values[m.SatelliteId], b)
			}
		}
		if m.SatelliteDone != nil {
			r.done[m.SatelliteId] = m.SatelliteDone
		}
		if m.Summary != nil {
			r.summary = m.Summary
		}
		if each != nil {
			each()
		}
	}
	return r, stream.Err()
}
