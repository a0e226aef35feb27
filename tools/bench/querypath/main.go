// Command querypath measures the query path with every service in its own
// process, as deployed, against the raw relay chain with every piece in its
// own process too — the composition of the reference figures issue 3 gives
// (docs/benchmarks.md, "Across processes"). Run it from the repository root:
//
//	go run ./tools/bench/querypath
//
// It builds the services, starts NATS and etcd (one process), registry,
// connector, query broker, gateway and one satellite (one process each), and
// the relay chain's A, B, C, the edge and the single-hop echo servers (one
// process each), then interleaves the measurements round by round and prints
// medians and ratios — against the raw chain (the goals) and against
// the same chain doing the work the issue requires besides forwarding (a log
// line per piece, SELECT 1 in DuckDB at the edge; testrelay.Work). Everything
// listens on 127.0.0.1.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/orbitplane/orbit/libs/apikey"
	"github.com/orbitplane/orbit/libs/connectclient"
	"github.com/orbitplane/orbit/libs/connectserver"
	"github.com/orbitplane/orbit/libs/contextstore"
	"github.com/orbitplane/orbit/libs/embedetcd"
	"github.com/orbitplane/orbit/libs/embednats"
	"github.com/orbitplane/orbit/libs/obslog"
	"github.com/orbitplane/orbit/libs/testing/testbench"
	"github.com/orbitplane/orbit/libs/testing/testrelay"
	connectorv1 "github.com/orbitplane/orbit/proto/orbit/connector/v1"
	"github.com/orbitplane/orbit/proto/orbit/connector/v1/connectorv1connect"
	gatewayv1 "github.com/orbitplane/orbit/proto/orbit/gateway/v1"
	"github.com/orbitplane/orbit/proto/orbit/gateway/v1/gatewayv1connect"
	queryv1 "github.com/orbitplane/orbit/proto/orbit/query/v1"
	"github.com/orbitplane/orbit/proto/orbit/query/v1/queryv1connect"
	registryv1 "github.com/orbitplane/orbit/proto/orbit/registry/v1"
	"github.com/orbitplane/orbit/proto/orbit/registry/v1/registryv1connect"
)

func main() {
	if len(os.Args) > 2 && os.Args[1] == "role" {
		if err := role(os.Args[2], os.Args[3:]); err != nil {
			fmt.Fprintf(os.Stderr, "querypath %s: %v\n", os.Args[2], err)
			os.Exit(1)
		}
		return
	}
	fs := flag.NewFlagSet("querypath", flag.ExitOnError)
	rounds := fs.Int("rounds", 3, "measurement rounds (baseline and system interleaved; medians reported)")
	n := fs.Int("n", 1500, "sequential queries per latency measurement")
	clients := fs.Int("clients", 8, "concurrent clients for the throughput measurement")
	dur := fs.Duration("duration", 3*time.Second, "length of one throughput measurement")
	keep := fs.Bool("keep", false, "keep the work directory (binaries, data, every process's log)")
	_ = fs.Parse(os.Args[1:])
	if *rounds < 1 || *n < 100 || *clients < 1 || *dur < time.Second {
		fmt.Fprintln(os.Stderr, "querypath: want -rounds >= 1, -n >= 100, -clients >= 1, -duration >= 1s")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := orchestrate(ctx, *rounds, *n, *clients, *dur, *keep); err != nil {
		fmt.Fprintf(os.Stderr, "querypath: %v\n", err)
		os.Exit(1)
	}
}

// procs are the child processes; stopAll ends them.
type procs struct {
	mu   sync.Mutex
	list []*exec.Cmd
	logs string
}

func (p *procs) start(name string, bin string, args ...string) error {
	f, err := os.Create(filepath.Join(p.logs, name+".log"))
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("start %s: %w", name, err)
	}
	p.mu.Lock()
	p.list = append(p.list, cmd)
	p.mu.Unlock()
	return nil
}

func (p *procs) stopAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := len(p.list) - 1; i >= 0; i-- {
		c := p.list[i]
		_ = c.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = c.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = c.Process.Kill()
			<-done
		}
	}
}

// dumpLogs prints the last lines of every process's log.
func (p *procs) dumpLogs(w io.Writer, lines int) {
	entries, _ := os.ReadDir(p.logs)
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(p.logs, e.Name()))
		if err != nil {
			continue
		}
		all := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
		fmt.Fprintf(w, "--- %s (last %d lines)\n%s\n", e.Name(), min(lines, len(all)), strings.Join(all[max(0, len(all)-lines):], "\n"))
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func orchestrate(ctx context.Context, rounds, n, clients int, dur time.Duration, keep bool) (err error) {
	if _, err := os.Stat("go.mod"); err != nil {
		return errors.New("run from the repository root (it builds ./services/...)")
	}
	dir, err := os.MkdirTemp("", "orbit-querypath-")
	if err != nil {
		return err
	}
	if keep {
		fmt.Printf("work directory: %s\n", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	bin := filepath.Join(dir, "bin")
	p := &procs{logs: filepath.Join(dir, "logs")}
	if err := os.MkdirAll(p.logs, 0o755); err != nil {
		return err
	}
	defer func() {
		p.stopAll()
		if err != nil && !keep {
			p.dumpLogs(os.Stderr, 20) // the work directory goes with this run
		}
	}()

	fmt.Println("building the services and this program …")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin+"/", "./services/registry", "./services/connector", "./services/querybroker",
		"./services/gateway", "./services/satellite", "./tools/bench/querypath")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("go build: %w", err)
	}
	self := filepath.Join(bin, "querypath")

	ports := map[string]int{}
	for _, name := range []string{"nats", "etcd", "etcd-peer", "registry", "connector", "broker", "gateway", "satellite", "relay-a", "relay-b", "relay-c", "relay-d"} {
		if ports[name], err = freePort(); err != nil {
			return err
		}
	}
	url := func(name string) string { return fmt.Sprintf("http://127.0.0.1:%d", ports[name]) }
	addr := func(name string) string { return fmt.Sprintf("127.0.0.1:%d", ports[name]) }
	natsURL := fmt.Sprintf("nats://127.0.0.1:%d", ports["nats"])
	etcdURL := url("etcd")

	// NATS and etcd, one process.
	if err := p.start("infra", self, "role", "infra", "-nats-port", strconv.Itoa(ports["nats"]), "-etcd-port", strconv.Itoa(ports["etcd"]),
		"-etcd-peer-port", strconv.Itoa(ports["etcd-peer"]), "-dir", filepath.Join(dir, "etcd")); err != nil {
		return err
	}
	nc, err := waitNATS(ctx, natsURL)
	if err != nil {
		return err
	}
	defer nc.Close()
	etcd, err := clientv3.New(clientv3.Config{Endpoints: []string{etcdURL}, DialTimeout: 5 * time.Second})
	if err != nil {
		return err
	}
	defer etcd.Close()
	boot := contextstore.Bootstrap{TenantID: "bench", APIKey: apikey.Generate(apikey.KindAPI), DeployKey: apikey.Generate(apikey.KindDeploy)}
	if err := retryUntil(ctx, 30*time.Second, func() error { return contextstore.WriteBootstrap(ctx, etcd, boot, "bench") }); err != nil {
		return fmt.Errorf("bootstrap tenant: %w", err)
	}

	// The system, one process per service.
	svc := func(name string) string { return filepath.Join(bin, name) }
	steps := []struct {
		name string
		args []string
	}{
		{"registry", []string{"--addr", addr("registry"), "--nats-url", natsURL, "--etcd-endpoints", etcdURL}},
		{"connector", []string{"--addr", addr("connector"), "--registry-url", url("registry"), "--nats-url", natsURL, "--etcd-endpoints", etcdURL}},
		{"querybroker", []string{"--addr", addr("broker"), "--registry-url", url("registry"), "--nats-url", natsURL}},
		{"gateway", []string{"--addr", addr("gateway"), "--broker-url", url("broker"), "--registry-url", url("registry"), "--etcd-endpoints", etcdURL,
			"--logbroker-url", "", "--tenant-rps", "1000000", "--tenant-burst", "1000000", "--tenant-max-queries", "64"}},
		{"satellite", []string{"--addr", addr("satellite"), "--connector-url", url("connector"), "--deploy-key", boot.DeployKey, "--name", "edge-1",
			"--data-dir", filepath.Join(dir, "satellite"), "--direct-addr", "", "--host-metrics-interval", "0"}},
	}
	for _, s := range steps {
		if err := p.start(s.name, svc(s.name), s.args...); err != nil {
			return err
		}
	}
	// The raw relay chain, one process per piece.
	relays := []struct {
		name string
		args []string
	}{
		{"relay-c", []string{"-addr", addr("relay-c"), "-nats", natsURL}},
		{"relay-b", []string{"-addr", addr("relay-b"), "-nats", natsURL}},
		{"relay-a", []string{"-addr", addr("relay-a"), "-b", url("relay-b")}},
		{"relay-d", []string{"-addr", addr("relay-d"), "-nats", natsURL}},
		{"edge", []string{"-c", url("relay-c"), "-dir", dir}},
	}
	for _, r := range relays {
		if err := p.start(r.name, self, append([]string{"role", r.name}, r.args...)...); err != nil {
			return err
		}
	}

	hc := connectclient.HTTPClient(nil)
	opts, _ := connectclient.Options(nil)
	keyed := append(slices.Clone(opts), connect.WithInterceptors(connectclient.Bearer(boot.APIKey)))
	reg := registryv1connect.NewRegistryServiceClient(hc, url("gateway"), keyed...)
	fmt.Println("waiting for the satellite to be HEALTHY and the relay to answer …")
	if err := retryUntil(ctx, 60*time.Second, func() error {
		resp, err := reg.ListSatellites(ctx, connect.NewRequest(&registryv1.ListSatellitesRequest{}))
		if err != nil {
			return err
		}
		for _, s := range resp.Msg.Satellites {
			if s.Name == "edge-1" && s.Status == registryv1.SatelliteStatus_SATELLITE_STATUS_HEALTHY {
				return nil
			}
		}
		return errors.New("edge-1 not HEALTHY yet")
	}); err != nil {
		return fmt.Errorf("%w (logs in %s; -keep keeps them)", err, p.logs)
	}
	q := queryv1connect.NewQueryServiceClient(hc, url("gateway"), keyed...)
	rawQ := queryv1connect.NewQueryServiceClient(hc, url("relay-a"), opts...)
	// The raw relay has no error path: a query published before the edge has
	// linked to C is dropped and its caller would wait for ever, so every
	// attempt gets a deadline of its own.
	if err := retryUntil(ctx, 30*time.Second, func() error {
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, err := testrelay.Query(actx, rawQ, "1:8")
		return err
	}); err != nil {
		return fmt.Errorf("relay chain: %w", err)
	}

	// fullNet also reports the satellite's own time for the statement
	// (SatelliteResult.execution), so the way there and back is measured
	// apart from it.
	fullNet := func() (time.Duration, error) {
		st, err := q.ExecuteQuery(ctx, connect.NewRequest(&queryv1.ExecuteQueryRequest{Target: &queryv1.ExecuteQueryRequest_Satellite{Satellite: "edge-1"}, Sql: "SELECT 1"}))
		if err != nil {
			return 0, err
		}
		defer st.Close()
		rows := int64(0)
		var done *queryv1.SatelliteResult
		for st.Receive() {
			rows += st.Msg().GetBatch().GetNumRows()
			if d := st.Msg().GetSatelliteDone(); d != nil {
				done = d
			}
		}
		if err := st.Err(); err != nil {
			return 0, err
		}
		if rows != 1 {
			return 0, fmt.Errorf("SELECT 1 returned %d rows", rows)
		}
		if done.GetExecution() == nil {
			return 0, fmt.Errorf("the answer carries no satellite execution time: %v", done)
		}
		return done.GetExecution().AsDuration(), nil
	}
	full := func() error { _, err := fullNet(); return err }
	chain := func() error { _, err := testrelay.Query(ctx, rawQ, "1:8"); return err }
	// The relay chain doing the work the issue requires of the path besides
	// forwarding: a log line per piece, SELECT 1 in DuckDB at the edge.
	working := func() error { return testrelay.QueryWork(ctx, rawQ) }
	rawA := gatewayv1connect.NewGatewayServiceClient(hc, url("relay-a"), opts...)
	bidi := connectorv1connect.NewLinkServiceClient(hc, url("relay-d"), opts...).Connect(ctx)
	defer bidi.CloseRequest()
	unary := func() error { _, err := rawA.WhoAmI(ctx, connect.NewRequest(&gatewayv1.WhoAmIRequest{})); return err }
	hops := []func() error{
		unary, // client -> gateway
		unary, // gateway -> broker
		func() error { _, err := nc.Request(testrelay.EchoSubject, []byte("ping"), time.Second); return err }, // broker -> connector
		func() error { // connector <-> satellite
			if err := bidi.Send(&connectorv1.ConnectRequest{}); err != nil {
				return err
			}
			_, err := bidi.Receive()
			return err
		},
	}
	paths := append([]func() error{full, chain, working}, hops...)
	names := []string{"the full path", "the relay chain", "the working relay chain", "hop client -> gateway", "hop gateway -> broker", "hop broker -> connector", "hop connector <-> satellite"}
	for range 300 { // warm every path
		for i, f := range paths {
			if err := f(); err != nil {
				return fmt.Errorf("warm-up of %s: %w (logs in %s; -keep keeps them)", names[i], err, p.logs)
			}
		}
	}

	var fullP50, fullP99, netP50, chainP50, chainP99, workP50, workP99, hopP50, hopP99, fullQPS, chainQPS, workQPS []float64
	for round := range rounds {
		var s50, s99 time.Duration
		for _, h := range hops {
			l, err := testbench.Measure(n, h)
			if err != nil {
				return err
			}
			s50 += l.Pct(0.5)
			s99 += l.Pct(0.99)
		}
		c, err := testbench.Measure(n, chain)
		if err != nil {
			return err
		}
		w, err := testbench.Measure(n, working)
		if err != nil {
			return err
		}
		f, net, err := testbench.MeasureNet(n, fullNet)
		if err != nil {
			return err
		}
		cq, err := testbench.Concurrent(clients, dur, chain)
		if err != nil {
			return err
		}
		wq, err := testbench.Concurrent(clients, dur, working)
		if err != nil {
			return err
		}
		fq, err := testbench.Concurrent(clients, dur, full)
		if err != nil {
			return err
		}
		fullP50, fullP99 = append(fullP50, testbench.Ms(f.Pct(0.5))), append(fullP99, testbench.Ms(f.Pct(0.99)))
		netP50 = append(netP50, testbench.Ms(net.Pct(0.5)))
		chainP50, chainP99 = append(chainP50, testbench.Ms(c.Pct(0.5))), append(chainP99, testbench.Ms(c.Pct(0.99)))
		hopP50, hopP99 = append(hopP50, testbench.Ms(s50)), append(hopP99, testbench.Ms(s99))
		fullQPS, chainQPS = append(fullQPS, fq), append(chainQPS, cq)
		workP50, workP99, workQPS = append(workP50, testbench.Ms(w.Pct(0.5))), append(workP99, testbench.Ms(w.Pct(0.99))), append(workQPS, wq)
		fmt.Printf("round %d: full p50 %.3f p99 %.3f ms (without the satellite's own execution p50 %.3f ms); relay chain p50 %.3f p99 %.3f ms; working relay p50 %.3f p99 %.3f ms; hop sum p50 %.3f p99 %.3f ms; %d clients: full %.0f q/s, relay %.0f q/s, working relay %.0f q/s\n",
			round, testbench.Ms(f.Pct(0.5)), testbench.Ms(f.Pct(0.99)), testbench.Ms(net.Pct(0.5)), testbench.Ms(c.Pct(0.5)), testbench.Ms(c.Pct(0.99)), testbench.Ms(w.Pct(0.5)), testbench.Ms(w.Pct(0.99)), testbench.Ms(s50), testbench.Ms(s99), clients, fq, cq, wq)
	}
	m := testbench.Median
	fmt.Printf("\nmedians of %d rounds (every service and relay piece in its own process):\n", rounds)
	fmt.Printf("  tiny query p50 %.3f ms: %.2fx the relay chain (%.3f ms), %.2fx the hop sum (%.3f ms)  [goal <= 1.3x]\n",
		m(fullP50), m(fullP50)/m(chainP50), m(chainP50), m(fullP50)/m(hopP50), m(hopP50))
	fmt.Printf("  tiny query p50 without the satellite's own execution %.3f ms: %.2fx the relay chain  [not a goal: where the rest goes]\n",
		m(netP50), m(netP50)/m(chainP50))
	fmt.Printf("  tiny query p99 %.3f ms: %.2fx the relay chain (%.3f ms), %.2fx the hop sum (%.3f ms)  [goal <= 1.5x]\n",
		m(fullP99), m(fullP99)/m(chainP99), m(chainP99), m(fullP99)/m(hopP99), m(hopP99))
	fmt.Printf("  %d clients: %.0f q/s, %.2fx the relay chain (%.0f q/s)  [goal >= 0.8x]\n", clients, m(fullQPS), m(fullQPS)/m(chainQPS), m(chainQPS))
	fmt.Printf("against the relay chain doing the required work (a log line per piece, SELECT 1 in DuckDB at the edge; not the issue's goal):\n")
	fmt.Printf("  tiny query p50 %.2fx (%.3f ms), p99 %.2fx (%.3f ms); %d clients %.2fx (%.0f q/s)\n",
		m(fullP50)/m(workP50), m(workP50), m(fullP99)/m(workP99), m(workP99), clients, m(fullQPS)/m(workQPS), m(workQPS))
	return nil
}

func retryUntil(ctx context.Context, limit time.Duration, f func() error) error {
	deadline := time.Now().Add(limit)
	for {
		err := f()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("gave up after %v: %w", limit, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func waitNATS(ctx context.Context, u string) (*nats.Conn, error) {
	var nc *nats.Conn
	err := retryUntil(ctx, 30*time.Second, func() error {
		var err error
		nc, err = nats.Connect(u)
		return err
	})
	return nc, err
}

// role runs one piece in this process until SIGTERM.
func role(name string, args []string) error {
	fs := flag.NewFlagSet(name, flag.ExitOnError)
	addr := fs.String("addr", "", "listen address")
	natsURL := fs.String("nats", "", "NATS URL")
	bURL := fs.String("b", "", "relay B's URL")
	cURL := fs.String("c", "", "relay C's URL")
	natsPort := fs.Int("nats-port", 0, "infra: NATS port")
	etcdPort := fs.Int("etcd-port", 0, "infra: etcd client port")
	etcdPeer := fs.Int("etcd-peer-port", 0, "infra: etcd peer port")
	dir := fs.String("dir", "", "infra: etcd data directory; edge: where its DuckDB file goes")
	_ = fs.Parse(args)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	serve := func(mount func(*connectserver.Server)) error {
		srv, err := connectserver.New(connectserver.Config{Service: name, Addr: *addr}, connectserver.Deps{})
		if err != nil {
			return err
		}
		mount(srv)
		if _, err := srv.Listen(); err != nil {
			return err
		}
		return srv.Run(ctx)
	}
	connectNATS := func() (*nats.Conn, error) { return nats.Connect(*natsURL) }
	// Queries marked "work" get a log line from every relay piece, on its
	// stderr as the services log (testrelay.Work).
	work := testrelay.Work{Log: obslog.New(os.Stderr, obslog.Options{Service: name})}
	hc := connectclient.HTTPClient(nil)
	opts, _ := connectclient.Options(nil)

	switch name {
	case "infra":
		ns, err := embednats.Start(embednats.Config{Port: *natsPort})
		if err != nil {
			return err
		}
		defer ns.Shutdown()
		es, err := embedetcd.Start(embedetcd.Config{Dir: *dir, ClientPort: *etcdPort, PeerPort: *etcdPeer})
		if err != nil {
			return err
		}
		defer es.Close()
		<-ctx.Done()
		return nil
	case "relay-c":
		nc, err := connectNATS()
		if err != nil {
			return err
		}
		defer nc.Close()
		c, err := testrelay.NewC(nc)
		if err != nil {
			return err
		}
		c.Work = work
		return serve(func(srv *connectserver.Server) {
			srv.Handle(connectorv1connect.NewLinkServiceHandler(c, srv.HandlerOptions()...))
		})
	case "relay-b":
		nc, err := connectNATS()
		if err != nil {
			return err
		}
		defer nc.Close()
		return serve(func(srv *connectserver.Server) {
			srv.Handle(queryv1connect.NewQueryServiceHandler(&testrelay.B{NC: nc, Work: work}, srv.HandlerOptions()...))
		})
	case "relay-a":
		a := &testrelay.A{B: queryv1connect.NewQueryServiceClient(hc, *bURL, opts...), Work: work}
		return serve(func(srv *connectserver.Server) {
			srv.Handle(queryv1connect.NewQueryServiceHandler(a, srv.HandlerOptions()...))
			srv.Handle(gatewayv1connect.NewGatewayServiceHandler(a, srv.HandlerOptions()...))
		})
	case "relay-d":
		nc, err := connectNATS()
		if err != nil {
			return err
		}
		defer nc.Close()
		if _, err := testrelay.EchoNATS(nc); err != nil {
			return err
		}
		return serve(func(srv *connectserver.Server) {
			srv.Handle(connectorv1connect.NewLinkServiceHandler(testrelay.Echo{}, srv.HandlerOptions()...))
		})
	case "edge":
		// Dial C until it listens, then answer until told to stop.
		for ctx.Err() == nil {
			resp, err := http.Get(*cURL + "/healthz")
			if err == nil {
				resp.Body.Close()
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		exec, closeDB, err := testrelay.SelectOne(filepath.Join(*dir, "edge.duckdb"))
		if err != nil {
			return err
		}
		defer closeDB()
		work.Exec = exec
		testrelay.RunEdge(ctx, connectorv1connect.NewLinkServiceClient(hc, *cURL, opts...), work)
		return nil
	}
	return fmt.Errorf("unknown role %q", name)
}
