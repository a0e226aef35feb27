package registry

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/orbitplane/orbit/libs/testing/testetcd"
	"github.com/orbitplane/orbit/libs/testing/testnats"
	"github.com/orbitplane/orbit/libs/testing/testwait"
	registryv1 "github.com/orbitplane/orbit/proto/orbit/registry/v1"
	"github.com/orbitplane/orbit/proto/orbit/registry/v1/registryv1connect"
)

type fixture struct {
	nc     *nats.Conn
	etcd   *clientv3.Client
	svc    *Service
	client registryv1connect.RegistryServiceClient
	stop   func()
}

func start(t testing.TB, nc *nats.Conn, etcd *clientv3.Client, cfg Config) *fixture {
	t.Helper()
	svc, err := New(cfg, Deps{NATS: nc, Etcd: etcd})
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	}
	t.Cleanup(stop)
	client := registryv1connect.NewRegistryServiceClient(http.DefaultClient, svc.URL())
	testwait.For(t, "registry serving", 5*time.Second, func() bool {
		_, err := client.ListSatellites(context.Background(), connect.NewRequest(&registryv1.ListSatellitesRequest{}))
		return err == nil
	})
	return &fixture{nc: nc, etcd: etcd, svc: svc, client: client, stop: stop}
}

func newFixture(t *testing.T, cfg Config) *fixture {
	ns := testnats.Start(t)
	_, etcd := testetcd.Start(t)
	return start(t, testnats.Connect(t, ns), etcd, cfg)
}

func (f *fixture) register(t *testing.T, tenant, identity, name, connector string, labels map[string]string) *registryv1.RegisterResponse {
	t.Helper()
	resp, err := f.client.Register(context.Background(), connect.NewRequest(&registryv1.RegisterRequest{
		TenantId: tenant, Identity: identity, Name: name, Labels: labels, ConnectorId: connector, Version: "v1",
	}))
	if err != nil {
		t.Fatal(err)
	}
	return resp.Msg
}

func (f *fixture) get(t *testing.T, tenant, ref string) *registryv1.Satellite {
	t.Helper()
	resp, err := f.client.GetSatellite(context.Background(), connect.NewRequest(&registryv1.GetSatelliteRequest{TenantId: tenant, Satellite: ref}))
	if err != nil {
		t.Fatal(err)
	}
	return resp.Msg.Satellite
}

func (f *fixture) heartbeat(t *testing.T, hbs ...*registryv1.SatelliteHeartbeat) {
	t.Helper()
	b, _ := proto.Marshal(&registryv1.HeartbeatRequest{ConnectorId: "c1", Heartbeats: hbs})
	if _, err := f.nc.Request(HeartbeatSubject, b, 2*time.Second); err != nil {
		t.Fatal(err)
	}
}

func TestRegisterIsIdempotent(t *testing.T) {
	f := newFixture(t, Config{})
	a := f.register(t, "t1", "ident-a", "alpha", "c1", nil)
	b := f.register(t, "t1", "ident-a", "alpha", "c2", nil)
	if !a.Created || b.Created || a.Satellite.Id != b.Satellite.Id {
		t.Fatalf("first %v second %v", a, b)
	}
	if b.Satellite.LinkGeneration != a.Satellite.LinkGeneration+1 || b.Satellite.ConnectorId != "c2" {
		t.Fatalf("generation %d -> %d, connector %s", a.Satellite.LinkGeneration, b.Satellite.LinkGeneration, b.Satellite.ConnectorId)
	}
	// The same identity in another tenant is another satellite.
	c := f.register(t, "t2", "ident-a", "alpha", "c1", nil)
	if !c.Created || c.Satellite.Id == a.Satellite.Id {
		t.Fatalf("other tenant got %v", c)
	}
	// A restarted registry loads the same satellites from etcd.
	f.stop()
	g := start(t, f.nc, f.etcd, Config{})
	d := g.register(t, "t1", "ident-a", "alpha", "c1", nil)
	if d.Created || d.Satellite.Id != a.Satellite.Id || d.Satellite.LinkGeneration != b.Satellite.LinkGeneration+1 {
		t.Fatalf("after restart %v", d)
	}
}

func TestRegisterValidation(t *testing.T) {
	f := newFixture(t, Config{})
	for _, r := range []*registryv1.RegisterRequest{
		{Identity: "x"},
		{TenantId: "t"},
		{TenantId: "t", Identity: string(make([]byte, MaxIdentityLen+1))},
		{TenantId: "t", Identity: "x", Labels: map[string]string{"": "v"}},
	} {
		_, err := f.client.Register(context.Background(), connect.NewRequest(r))
		if connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Errorf("%v: got %v", r, err)
		}
	}
}

func TestStatusFollowsHeartbeats(t *testing.T) {
	interval := 100 * time.Millisecond
	f := newFixture(t, Config{HeartbeatInterval: interval})
	id := f.register(t, "t1", "ident-a", "alpha", "c1", nil).Satellite.Id
	f.heartbeat(t, &registryv1.SatelliteHeartbeat{SatelliteId: id, Degraded: true, Detail: "disk full", Address: "10.0.0.1:8443"})
	sat := f.get(t, "t1", id)
	if sat.Status != registryv1.SatelliteStatus_SATELLITE_STATUS_DEGRADED || sat.StatusDetail != "disk full" || sat.Address != "10.0.0.1:8443" {
		t.Fatalf("after degraded heartbeat: %v", sat)
	}
	f.heartbeat(t, &registryv1.SatelliteHeartbeat{SatelliteId: id})
	if sat := f.get(t, "t1", "alpha"); sat.Status != registryv1.SatelliteStatus_SATELLITE_STATUS_HEALTHY {
		t.Fatalf("after healthy heartbeat: %v", sat.Status)
	}
	// Silence: DISCONNECTED after 3 missed intervals, not before 2.
	last := time.Now()
	testwait.For(t, "DISCONNECTED", 3*time.Second, func() bool {
		return f.get(t, "t1", id).Status == registryv1.SatelliteStatus_SATELLITE_STATUS_DISCONNECTED
	})
	if d := time.Since(last); d < 2*interval || d > 3*interval+interval {
		t.Fatalf("DISCONNECTED after %v; want ~3 intervals (%v)", d, 3*interval)
	}
	// Unknown IDs are reported back.
	b, _ := proto.Marshal(&registryv1.HeartbeatRequest{Heartbeats: []*registryv1.SatelliteHeartbeat{{SatelliteId: "nope"}}})
	m, err := f.nc.Request(HeartbeatSubject, b, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var resp registryv1.HeartbeatResponse
	if err := proto.Unmarshal(m.Data, &resp); err != nil || len(resp.UnknownIds) != 1 || resp.UnknownIds[0] != "nope" {
		t.Fatalf("unknown ids %v %v", resp.UnknownIds, err)
	}
}

func TestDisconnect(t *testing.T) {
	f := newFixture(t, Config{})
	id := f.register(t, "t1", "ident-a", "alpha", "c1", nil).Satellite.Id
	// A connector that no longer holds the satellite cannot disconnect it.
	if _, err := f.client.Disconnect(context.Background(), connect.NewRequest(&registryv1.DisconnectRequest{ConnectorId: "old", SatelliteIds: []string{id}})); err != nil {
		t.Fatal(err)
	}
	if f.get(t, "t1", id).Status != registryv1.SatelliteStatus_SATELLITE_STATUS_HEALTHY {
		t.Fatal("stale connector disconnected the satellite")
	}
	if _, err := f.client.Disconnect(context.Background(), connect.NewRequest(&registryv1.DisconnectRequest{ConnectorId: "c1", SatelliteIds: []string{id}})); err != nil {
		t.Fatal(err)
	}
	if f.get(t, "t1", id).Status != registryv1.SatelliteStatus_SATELLITE_STATUS_DISCONNECTED {
		t.Fatal("still connected after Disconnect")
	}
}

func TestConnectorLeaseExpiryDisconnects(t *testing.T) {
	f := newFixture(t, Config{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	lease, err := RegisterInstance(ctx, f.etcd, "connector", "c9", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	id := f.register(t, "t1", "ident-a", "alpha", "c9", nil).Satellite.Id
	other := f.register(t, "t1", "ident-b", "beta", "c1", nil).Satellite.Id
	if _, err := f.etcd.Revoke(ctx, lease); err != nil { // the replica died
		t.Fatal(err)
	}
	testwait.For(t, "satellite of dead connector DISCONNECTED", 2*time.Second, func() bool {
		return f.get(t, "t1", id).Status == registryv1.SatelliteStatus_SATELLITE_STATUS_DISCONNECTED
	})
	if f.get(t, "t1", other).Status != registryv1.SatelliteStatus_SATELLITE_STATUS_HEALTHY {
		t.Fatal("another connector's satellite was disconnected")
	}
}

// TestHeartbeatsDoNotWriteEtcd: a thousand heartbeats that change nothing
// visible leave etcd's revision where it was; a visible change is written
// once, in the next batch.
func TestHeartbeatsDoNotWriteEtcd(t *testing.T) {
	f := newFixture(t, Config{FlushInterval: 20 * time.Millisecond})
	var ids []string
	for i := range 50 {
		ids = append(ids, f.register(t, "t1", fmt.Sprintf("ident-%d", i), "", "c1", nil).Satellite.Id)
	}
	rev := func() int64 {
		r, err := f.etcd.Get(context.Background(), "/orbit/none")
		if err != nil {
			t.Fatal(err)
		}
		return r.Header.Revision
	}
	time.Sleep(100 * time.Millisecond)
	before := rev()
	for range 20 {
		var hbs []*registryv1.SatelliteHeartbeat
		for _, id := range ids {
			hbs = append(hbs, &registryv1.SatelliteHeartbeat{SatelliteId: id, StoreRows: 5})
		}
		f.heartbeat(t, hbs...)
	}
	time.Sleep(100 * time.Millisecond)
	if after := rev(); after != before {
		t.Fatalf("1000 heartbeats moved etcd from revision %d to %d", before, after)
	}
	// Every satellite changes address at once: written in one batch per
	// 128 keys, each key once.
	var hbs []*registryv1.SatelliteHeartbeat
	for _, id := range ids {
		hbs = append(hbs, &registryv1.SatelliteHeartbeat{SatelliteId: id, Address: "10.1.1.1:1"})
	}
	f.heartbeat(t, hbs...)
	testwait.For(t, "address change written", 2*time.Second, func() bool {
		var sat registryv1.Satellite
		r, err := f.etcd.Get(context.Background(), SatellitePrefix+ids[49])
		return err == nil && len(r.Kvs) == 1 && proto.Unmarshal(r.Kvs[0].Value, &sat) == nil && sat.Address == "10.1.1.1:1"
	})
	if d := rev() - before; d != 1 {
		t.Fatalf("50 changes took %d etcd revisions; want 1 transaction", d)
	}
}

func TestListGetAndTenants(t *testing.T) {
	f := newFixture(t, Config{})
	f.register(t, "t1", "i1", "web-1", "c1", map[string]string{"env": "prod"})
	f.register(t, "t1", "i2", "web-2", "c1", map[string]string{"env": "dev"})
	f.register(t, "t2", "i3", "other", "c1", map[string]string{"env": "prod"})
	list := func(r *registryv1.ListSatellitesRequest) []string {
		resp, err := f.client.ListSatellites(context.Background(), connect.NewRequest(r))
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, s := range resp.Msg.Satellites {
			names = append(names, s.Name)
		}
		return names
	}
	if got := list(&registryv1.ListSatellitesRequest{TenantId: "t1"}); fmt.Sprint(got) != "[web-1 web-2]" {
		t.Fatalf("t1: %v", got)
	}
	if got := list(&registryv1.ListSatellitesRequest{TenantId: "t1", MatchLabels: map[string]string{"env": "prod"}}); fmt.Sprint(got) != "[web-1]" {
		t.Fatalf("t1 prod: %v", got)
	}
	if got := list(&registryv1.ListSatellitesRequest{TenantId: "t1", Statuses: []registryv1.SatelliteStatus{registryv1.SatelliteStatus_SATELLITE_STATUS_DISCONNECTED}}); len(got) != 0 {
		t.Fatalf("disconnected: %v", got)
	}
	resp, err := f.client.ListSatellites(context.Background(), connect.NewRequest(&registryv1.ListSatellitesRequest{TenantId: "t1", PageSize: 1}))
	if err != nil || len(resp.Msg.Satellites) != 1 || resp.Msg.NextPageToken == "" {
		t.Fatalf("page 1: %v %v", resp, err)
	}
	resp, err = f.client.ListSatellites(context.Background(), connect.NewRequest(&registryv1.ListSatellitesRequest{TenantId: "t1", PageSize: 1, PageToken: resp.Msg.NextPageToken}))
	if err != nil || len(resp.Msg.Satellites) != 1 || resp.Msg.Satellites[0].Name != "web-2" || resp.Msg.NextPageToken != "" {
		t.Fatalf("page 2: %v %v", resp, err)
	}
	// Tenant t2 cannot get t1's satellite, by name or ID.
	id := f.get(t, "t1", "web-1").Id
	for _, ref := range []string{"web-1", id} {
		_, err := f.client.GetSatellite(context.Background(), connect.NewRequest(&registryv1.GetSatelliteRequest{TenantId: "t2", Satellite: ref}))
		if connect.CodeOf(err) != connect.CodeNotFound {
			t.Errorf("t2 got t1's %s: %v", ref, err)
		}
	}
}

func TestWatch(t *testing.T) {
	f := newFixture(t, Config{})
	id := f.register(t, "t1", "i1", "web-1", "c1", nil).Satellite.Id
	f.register(t, "t2", "i2", "other", "c1", nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := f.client.WatchSatellites(ctx, connect.NewRequest(&registryv1.WatchSatellitesRequest{TenantId: "t1"}))
	if err != nil {
		t.Fatal(err)
	}
	next := func() *registryv1.WatchSatellitesResponse {
		if !stream.Receive() {
			t.Fatalf("watch ended: %v", stream.Err())
		}
		return stream.Msg()
	}
	if ev := next(); ev.Type != registryv1.WatchEventType_WATCH_EVENT_TYPE_EXISTING || ev.Satellite.Id != id {
		t.Fatalf("first event %v", ev)
	}
	f.heartbeat(t, &registryv1.SatelliteHeartbeat{SatelliteId: id, Degraded: true})
	if ev := next(); ev.Type != registryv1.WatchEventType_WATCH_EVENT_TYPE_UPSERTED || ev.Satellite.Status != registryv1.SatelliteStatus_SATELLITE_STATUS_DEGRADED {
		t.Fatalf("change event %v", ev)
	}
	// t2's changes never reach t1's watcher: the next event is t1's.
	f.register(t, "t2", "i2", "other", "c1", nil)
	f.register(t, "t1", "i3", "web-3", "c1", nil)
	if ev := next(); ev.Satellite.Name != "web-3" {
		t.Fatalf("got %v", ev.Satellite)
	}
}

func TestSlowWatcherIsClosedNotSkipped(t *testing.T) {
	f := newFixture(t, Config{WatchBuffer: 4})
	id := f.register(t, "t1", "i1", "web-1", "c1", nil).Satellite.Id
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := f.client.WatchSatellites(ctx, connect.NewRequest(&registryv1.WatchSatellitesRequest{TenantId: "t1"}))
	if err != nil {
		t.Fatal(err)
	}
	if !stream.Receive() {
		t.Fatal(stream.Err())
	}
	// Flood 100k changes without reading: more than HTTP/2 flow control
	// windows hold, so the server-side buffer overflows.
	for range 100 {
		var hbs []*registryv1.SatelliteHeartbeat
		for i := range 1000 {
			hbs = append(hbs, &registryv1.SatelliteHeartbeat{SatelliteId: id, Degraded: i%2 == 0})
		}
		f.heartbeat(t, hbs...)
	}
	var n int
	for stream.Receive() {
		n++
	}
	if connect.CodeOf(stream.Err()) != connect.CodeResourceExhausted {
		t.Fatalf("after %d events: %v", n, stream.Err())
	}
}

// TestDeleteSatellite: a deleted satellite is gone from memory, watchers
// (DELETED) and etcd (record and identity) — and stays gone when it had a
// change waiting for the flusher; another tenant cannot delete it; the same
// identity registering again gets a new ID; heartbeats for the old ID are
// answered "unknown" (its connector closes the link).
func TestDeleteSatellite(t *testing.T) {
	f := newFixture(t, Config{})
	ctx := context.Background()
	id := f.register(t, "t1", "i1", "web-1", "c1", nil).Satellite.Id
	stream, err := f.client.WatchSatellites(ctx, connect.NewRequest(&registryv1.WatchSatellitesRequest{TenantId: "t1"}))
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	if !stream.Receive() || stream.Msg().Type != registryv1.WatchEventType_WATCH_EVENT_TYPE_EXISTING {
		t.Fatalf("first event: %v %v", stream.Msg(), stream.Err())
	}
	if _, err := f.client.DeleteSatellite(ctx, connect.NewRequest(&registryv1.DeleteSatelliteRequest{TenantId: "t2", Satellite: id})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("another tenant's delete: %v, want NotFound", err)
	}
	// A visible change queued for the flusher, then the delete.
	f.heartbeat(t, &registryv1.SatelliteHeartbeat{SatelliteId: id, Degraded: true, Address: "10.0.0.1:8443"})
	if _, err := f.client.DeleteSatellite(ctx, connect.NewRequest(&registryv1.DeleteSatelliteRequest{TenantId: "t1", Satellite: "web-1"})); err != nil {
		t.Fatal(err)
	}
	for stream.Receive() {
		if stream.Msg().Type == registryv1.WatchEventType_WATCH_EVENT_TYPE_DELETED {
			break
		}
	}
	if ev := stream.Msg(); ev.Type != registryv1.WatchEventType_WATCH_EVENT_TYPE_DELETED || ev.Satellite.Id != id {
		t.Fatalf("want a DELETED event for %s, got %v", id, ev)
	}
	if _, err := f.client.GetSatellite(ctx, connect.NewRequest(&registryv1.GetSatelliteRequest{TenantId: "t1", Satellite: id})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("get after delete: %v", err)
	}
	time.Sleep(3 * DefaultFlushInterval) // a flush that would resurrect it
	for _, key := range []string{SatellitePrefix + id, IdentityPrefix + "t1/i1"} {
		if resp, err := f.etcd.Get(ctx, key); err != nil || len(resp.Kvs) != 0 {
			t.Fatalf("%s still in etcd after delete (%v)", key, err)
		}
	}
	b, _ := proto.Marshal(&registryv1.HeartbeatRequest{ConnectorId: "c1", Heartbeats: []*registryv1.SatelliteHeartbeat{{SatelliteId: id}}})
	msg, err := f.nc.Request(HeartbeatSubject, b, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var hr registryv1.HeartbeatResponse
	if err := proto.Unmarshal(msg.Data, &hr); err != nil || len(hr.UnknownIds) != 1 || hr.UnknownIds[0] != id {
		t.Fatalf("heartbeat for a deleted satellite: %v %v; want it unknown", &hr, err)
	}
	if again := f.register(t, "t1", "i1", "web-1", "c1", nil).Satellite.Id; again == id {
		t.Fatal("the deleted identity got its old ID back")
	}
}
