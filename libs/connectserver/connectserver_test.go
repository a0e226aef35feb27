package connectserver_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpcreflect"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/orbitplane/orbit/libs/connectclient"
	"github.com/orbitplane/orbit/libs/connectserver"
	"github.com/orbitplane/orbit/libs/obslog"
	"github.com/orbitplane/orbit/libs/testing/testwait"
	registryv1 "github.com/orbitplane/orbit/proto/orbit/registry/v1"
	"github.com/orbitplane/orbit/proto/orbit/registry/v1/registryv1connect"
)

// registry is a test implementation of one service: it echoes the requested
// satellite, panics on "boom", and blocks on "slow" until released.
type registry struct {
	registryv1connect.UnimplementedRegistryServiceHandler
	slow chan struct{}
}

func (r *registry) GetSatellite(ctx context.Context, req *connect.Request[registryv1.GetSatelliteRequest]) (*connect.Response[registryv1.GetSatelliteResponse], error) {
	switch req.Msg.GetSatellite() {
	case "boom":
		panic("handler bug")
	case "slow":
		<-r.slow
	case "big":
		// A response above the server's compression threshold.
		return connect.NewResponse(&registryv1.GetSatelliteResponse{Satellite: &registryv1.Satellite{Id: "big", StatusDetail: strings.Repeat("a", 64<<10)}}), nil
	}
	return connect.NewResponse(&registryv1.GetSatelliteResponse{Satellite: &registryv1.Satellite{Id: req.Msg.GetSatellite(), TenantId: req.Msg.GetTenantId()}}), nil
}

// WatchSatellites streams from several goroutines at once, corking bursts
// at random, as the query broker does: every message must arrive intact.
func (r *registry) WatchSatellites(ctx context.Context, req *connect.Request[registryv1.WatchSatellitesRequest], stream *connect.ServerStream[registryv1.WatchSatellitesResponse]) error {
	var mu sync.Mutex
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 250 {
				uncork := func() {}
				if i%3 == 0 {
					uncork = connectserver.Cork(ctx)
				}
				mu.Lock()
				err := stream.Send(&registryv1.WatchSatellitesResponse{Satellite: &registryv1.Satellite{Id: fmt.Sprintf("%d-%d", g, i), StatusDetail: strings.Repeat("x", i)}})
				mu.Unlock()
				uncork()
				if err != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	return nil
}

type running struct {
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

func start(t *testing.T, cfg connectserver.Config) (*connectserver.Server, *registry, *running) {
	t.Helper()
	s, err := connectserver.New(cfg, connectserver.Deps{Logger: obslog.Discard()})
	if err != nil {
		t.Fatal(err)
	}
	impl := &registry{slow: make(chan struct{})}
	s.Handle(registryv1connect.NewRegistryServiceHandler(impl, s.HandlerOptions()...))
	if _, err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan struct{})}
	go func() { r.err = s.Run(ctx); close(r.done) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(30 * time.Second):
			t.Error("server did not stop")
		}
	})
	waitReady(t, s.URL())
	return s, impl, r
}

func waitReady(t *testing.T, url string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s never became ready", url)
}

func TestProtocolsOnOnePort(t *testing.T) {
	s, _, _ := start(t, connectserver.Config{Service: "test"})
	opts, err := connectclient.Options(nil)
	if err != nil {
		t.Fatal(err)
	}
	httpc := connectclient.HTTPClient(nil)
	for name, extra := range map[string][]connect.ClientOption{
		"connect":  nil,
		"grpc":     {connect.WithGRPC()},
		"grpc-web": {connect.WithGRPCWeb()},
	} {
		t.Run(name, func(t *testing.T) {
			c := registryv1connect.NewRegistryServiceClient(httpc, s.URL(), append(opts, extra...)...)
			resp, err := c.GetSatellite(context.Background(), connect.NewRequest(&registryv1.GetSatelliteRequest{TenantId: "t1", Satellite: "s1"}))
			if err != nil {
				t.Fatal(err)
			}
			if got := resp.Msg.GetSatellite().GetId(); got != "s1" {
				t.Errorf("id = %q, want s1", got)
			}
			if resp.Header().Get("X-Request-Id") == "" {
				t.Error("no X-Request-Id in response")
			}
		})
	}
	t.Run("connect over HTTP/1.1", func(t *testing.T) {
		c := registryv1connect.NewRegistryServiceClient(http.DefaultClient, s.URL(), opts...)
		if _, err := c.GetSatellite(context.Background(), connect.NewRequest(&registryv1.GetSatelliteRequest{Satellite: "s2"})); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("reflection", func(t *testing.T) {
		stream := grpcreflect.NewClient(httpc, s.URL()).NewStream(context.Background())
		defer stream.Close()
		names, err := stream.ListServices()
		if err != nil {
			t.Fatal(err)
		}
		found := map[protoreflect.FullName]bool{}
		for _, n := range names {
			found[n] = true
		}
		for _, want := range []protoreflect.FullName{registryv1connect.RegistryServiceName, "grpc.health.v1.Health"} {
			if !found[want] {
				t.Errorf("reflection lists %v, missing %s", names, want)
			}
		}
	})
	t.Run("grpc-go client and health", func(t *testing.T) {
		conn, err := grpc.NewClient(s.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		out := new(registryv1.GetSatelliteResponse)
		if err := conn.Invoke(context.Background(), registryv1connect.RegistryServiceGetSatelliteProcedure, &registryv1.GetSatelliteRequest{Satellite: "s3"}, out); err != nil {
			t.Fatal(err)
		}
		if out.GetSatellite().GetId() != "s3" {
			t.Errorf("id = %q, want s3", out.GetSatellite().GetId())
		}
		for _, svc := range []string{"", registryv1connect.RegistryServiceName} {
			hr, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{Service: svc})
			if err != nil {
				t.Fatalf("health %q: %v", svc, err)
			}
			if hr.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				t.Errorf("health %q = %v, want SERVING", svc, hr.GetStatus())
			}
		}
	})
}

func TestPanicBecomesInternalError(t *testing.T) {
	s, _, _ := start(t, connectserver.Config{Service: "test"})
	c := registryv1connect.NewRegistryServiceClient(connectclient.HTTPClient(nil), s.URL())
	_, err := c.GetSatellite(context.Background(), connect.NewRequest(&registryv1.GetSatelliteRequest{Satellite: "boom"}))
	if connect.CodeOf(err) != connect.CodeInternal {
		t.Fatalf("code = %v, want internal", connect.CodeOf(err))
	}
	if strings.Contains(err.Error(), "handler bug") {
		t.Errorf("panic text leaked to client: %v", err)
	}
	// The server still serves after the panic.
	if _, err := c.GetSatellite(context.Background(), connect.NewRequest(&registryv1.GetSatelliteRequest{Satellite: "ok"})); err != nil {
		t.Fatal(err)
	}
}

func TestLimits(t *testing.T) {
	s, _, _ := start(t, connectserver.Config{Service: "test", ReadMaxBytes: 1024, MaxHeaderBytes: 4096})
	c := registryv1connect.NewRegistryServiceClient(connectclient.HTTPClient(nil), s.URL())
	_, err := c.GetSatellite(context.Background(), connect.NewRequest(&registryv1.GetSatelliteRequest{Satellite: strings.Repeat("x", 2048)}))
	if connect.CodeOf(err) != connect.CodeResourceExhausted {
		t.Errorf("2 KiB message over a 1 KiB limit: code = %v, want resource_exhausted", connect.CodeOf(err))
	}

	req, _ := http.NewRequest(http.MethodGet, s.URL()+"/healthz", nil)
	req.Header.Set("X-Big", strings.Repeat("y", 64<<10))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("64 KiB header: status %d, want 431", resp.StatusCode)
	}
}

// Orbit's own clients never accept gzip, so the server never spends CPU
// compressing for them; a client that asks for gzip (a browser) gets it above
// the threshold.
func TestCompression(t *testing.T) {
	s, _, _ := start(t, connectserver.Config{Service: "test"})
	opts, err := connectclient.Options(nil)
	if err != nil {
		t.Fatal(err)
	}
	req := func(c registryv1connect.RegistryServiceClient) *connect.Response[registryv1.GetSatelliteResponse] {
		t.Helper()
		resp, err := c.GetSatellite(context.Background(), connect.NewRequest(&registryv1.GetSatelliteRequest{Satellite: "big"}))
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Msg.GetSatellite().GetStatusDetail()) != 64<<10 {
			t.Fatal("response body damaged")
		}
		return resp
	}
	if enc := req(registryv1connect.NewRegistryServiceClient(connectclient.HTTPClient(nil), s.URL(), opts...)).Header().Get("Content-Encoding"); enc != "" {
		t.Errorf("orbit client got Content-Encoding %q, want none", enc)
	}
	if enc := req(registryv1connect.NewRegistryServiceClient(connectclient.HTTPClient(nil), s.URL())).Header().Get("Content-Encoding"); enc != "gzip" {
		t.Errorf("gzip-accepting client got Content-Encoding %q for 64 KiB, want gzip", enc)
	}
}

// A client that never finishes its request headers is cut off after
// ReadHeaderTimeout (slowloris).
func TestReadHeaderTimeout(t *testing.T) {
	s, _, _ := start(t, connectserver.Config{Service: "test", ReadHeaderTimeout: 200 * time.Millisecond})
	conn, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("GET /healthz HTTP/1.1\r\nHost: x\r\n")); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 512)
	n, err := conn.Read(buf)
	for err == nil { // the server may answer 408 before closing
		var m int
		m, err = conn.Read(buf[n:])
		n += m
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("connection with unfinished headers still open after 5 s")
	}
}

// Every request is logged once, in the log schema, with its context.
func TestRequestLog(t *testing.T) {
	var buf syncBuffer
	s, err := connectserver.New(connectserver.Config{Service: "logged"}, connectserver.Deps{Logger: obslog.New(&buf, obslog.Options{Service: "logged"})})
	if err != nil {
		t.Fatal(err)
	}
	s.Handle(registryv1connect.NewRegistryServiceHandler(&registry{}, s.HandlerOptions()...))
	if _, err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = s.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	waitReady(t, s.URL())

	c := registryv1connect.NewRegistryServiceClient(connectclient.HTTPClient(nil), s.URL())
	resp, err := c.GetSatellite(context.Background(), connect.NewRequest(&registryv1.GetSatelliteRequest{Satellite: "x"}))
	if err != nil {
		t.Fatal(err)
	}
	reqID := resp.Header().Get("X-Request-Id")
	var line map[string]any
	testwait.For(t, "request log line", 5*time.Second, func() bool {
		for _, l := range strings.Split(buf.String(), "\n") {
			if strings.Contains(l, `"rpc.done"`) && strings.Contains(l, "GetSatellite") {
				return json.Unmarshal([]byte(l), &line) == nil
			}
		}
		return false
	})
	attrs, _ := line["attrs"].(map[string]any)
	if line["request_id"] != reqID || line["schema"] != obslog.SchemaVersion || attrs["code"] != "ok" || attrs["procedure"] != registryv1connect.RegistryServiceGetSatelliteProcedure {
		t.Errorf("log line %v: want request_id %s, schema, code ok and the procedure", line, reqID)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestCORSAndMetrics(t *testing.T) {
	s, _, _ := start(t, connectserver.Config{Service: "test", CORSOrigins: []string{"https://ui.example"}})
	req, _ := http.NewRequest(http.MethodOptions, s.URL()+registryv1connect.RegistryServiceGetSatelliteProcedure, nil)
	req.Header.Set("Origin", "https://ui.example")
	req.Header.Set("Access-Control-Request-Method", "POST")
	req.Header.Set("Access-Control-Request-Headers", "connect-protocol-version,content-type") // sorted, as browsers send it
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get("Access-Control-Allow-Origin"); got != "https://ui.example" {
		t.Errorf("allowed origin = %q, want https://ui.example", got)
	}
	req.Header.Set("Origin", "https://evil.example")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get("Access-Control-Allow-Origin"); got != "" {
		t.Errorf("unlisted origin allowed: %q", got)
	}

	c := registryv1connect.NewRegistryServiceClient(connectclient.HTTPClient(nil), s.URL())
	if _, err := c.GetSatellite(context.Background(), connect.NewRequest(&registryv1.GetSatelliteRequest{Satellite: "m"})); err != nil {
		t.Fatal(err)
	}
	mresp, err := http.Get(s.URL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(mresp.Body)
	mresp.Body.Close()
	want := `orbit_rpc_requests_total{code="ok",procedure="/orbit.registry.v1.RegistryService/GetSatellite",server="test"} 1`
	if !strings.Contains(string(body), want) {
		t.Errorf("metrics lack %q", want)
	}
}

func TestGracefulDrain(t *testing.T) {
	s, impl, r := start(t, connectserver.Config{Service: "test", ShutdownTimeout: 10 * time.Second, DrainDelay: 300 * time.Millisecond})
	c := registryv1connect.NewRegistryServiceClient(connectclient.HTTPClient(nil), s.URL())
	inflight := make(chan error, 1)
	go func() {
		_, err := c.GetSatellite(context.Background(), connect.NewRequest(&registryv1.GetSatelliteRequest{Satellite: "slow"}))
		inflight <- err
	}()
	// Wait until the slow request is being handled, then start draining.
	testwait.For(t, "slow request in flight", 10*time.Second, func() bool {
		return strings.Contains(get(t, s.URL()+"/metrics"), `orbit_rpc_in_flight{procedure="/orbit.registry.v1.RegistryService/GetSatellite",server="test"} 1`)
	})
	conn, err := grpc.NewClient(s.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	health := healthpb.NewHealthClient(conn)
	if _, err := health.Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	r.cancel()
	// During the drain delay the port still answers, and says NOT_SERVING.
	testwait.For(t, "health NOT_SERVING", 10*time.Second, func() bool {
		hr, err := health.Check(context.Background(), &healthpb.HealthCheckRequest{})
		return err == nil && hr.GetStatus() == healthpb.HealthCheckResponse_NOT_SERVING
	})
	select {
	case <-r.done:
		t.Fatalf("Run returned (%v) before the in-flight request finished", r.err)
	case <-time.After(500 * time.Millisecond):
	}
	close(impl.slow)
	if err := <-inflight; err != nil {
		t.Errorf("in-flight request failed during drain: %v", err)
	}
	select {
	case <-r.done:
		if r.err != nil {
			t.Errorf("Run = %v, want nil after a clean drain", r.err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return after the drain")
	}
	if _, err := http.Get(s.URL() + "/healthz"); err == nil {
		t.Error("server still accepts connections after Run returned")
	}
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func TestCorkedConcurrentStreaming(t *testing.T) {
	s, _, _ := start(t, connectserver.Config{})
	c := registryv1connect.NewRegistryServiceClient(connectclient.HTTPClient(nil), s.URL())
	stream, err := c.WatchSatellites(context.Background(), connect.NewRequest(&registryv1.WatchSatellitesRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for stream.Receive() {
		sat := stream.Msg().Satellite
		var g, i int
		if _, err := fmt.Sscanf(sat.Id, "%d-%d", &g, &i); err != nil || len(sat.StatusDetail) != i {
			t.Fatalf("corrupt message %q (%d bytes of detail)", sat.Id, len(sat.StatusDetail))
		}
		seen[sat.Id] = true
	}
	if err := stream.Err(); err != nil || len(seen) != 1000 {
		t.Fatalf("%d messages, %v", len(seen), err)
	}
	// Outside a handler, Cork does nothing.
	connectserver.Cork(context.Background())()
}
