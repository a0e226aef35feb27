package ctxpublisher_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/orbitplane/orbit/libs/connectclient"
	"github.com/orbitplane/orbit/libs/contextstore"
	"github.com/orbitplane/orbit/libs/etcdkv"
	"github.com/orbitplane/orbit/libs/loadingcache"
	"github.com/orbitplane/orbit/libs/testing/testetcd"
	"github.com/orbitplane/orbit/libs/testing/testnats"
	"github.com/orbitplane/orbit/libs/testing/testrun"
	"github.com/orbitplane/orbit/libs/testing/testwait"
	contextsv1 "github.com/orbitplane/orbit/proto/orbit/contexts/v1"
	ctxpublisherv1 "github.com/orbitplane/orbit/proto/orbit/ctxpublisher/v1"
	"github.com/orbitplane/orbit/proto/orbit/ctxpublisher/v1/ctxpublisherv1connect"
	platformv1 "github.com/orbitplane/orbit/proto/orbit/platform/v1"
	"github.com/orbitplane/orbit/proto/orbit/platform/v1/platformv1connect"
	"github.com/orbitplane/orbit/services/ctxpublisher/ctxpublisher"
	"github.com/orbitplane/orbit/services/platform/platform"
	"github.com/orbitplane/orbit/services/platform/store"
)

const adminToken = "test-admin-token-0123456789abcdef"

// hub is a platform service and a context publisher over one SQLite file and
// one NATS server, publishing to spokes of real etcd.
type hub struct {
	t        testing.TB
	db       string
	nats     string
	admin    platformv1connect.PlatformServiceClient
	status   ctxpublisherv1connect.ContextPublisherServiceClient
	stopPub  func()
	spokes   map[string]*clientv3.Client
	pubDeps  ctxpublisher.Deps
	pubCfg   ctxpublisher.Config
	stopPlat func()
	// etcd endpoint of each spoke, and the platform's URL.
	endpoints   map[string]string
	platformURL string
}

func newHub(t testing.TB, spokes ...string) *hub {
	t.Helper()
	return newHubWith(t, nil, spokes...)
}

// newHubWith lets a test change the publisher's Deps (fault injection).
func newHubWith(t testing.TB, mutate func(h *hub, d *ctxpublisher.Deps), spokes ...string) *hub {
	t.Helper()
	ns := testnats.Start(t)
	h := &hub{t: t, db: filepath.Join(t.TempDir(), "platform.db"), nats: ns.ClientURL(), spokes: map[string]*clientv3.Client{}, endpoints: map[string]string{}}
	nc := testnats.Connect(t, ns)
	plat, err := platform.New(context.Background(), platform.Config{Database: h.db, AdminToken: adminToken}, platform.Deps{NATS: nc})
	if err != nil {
		t.Fatal(err)
	}
	if err := plat.Listen(); err != nil {
		t.Fatal(err)
	}
	h.stopPlat = testrun.Start(t, "platform", plat.Run)
	h.platformURL = plat.URL()
	hc := connectclient.HTTPClient(nil)
	h.admin = platformv1connect.NewPlatformServiceClient(hc, plat.URL(), connect.WithInterceptors(connectclient.Bearer(adminToken)))
	for _, name := range spokes {
		srv, cli := testetcd.Start(t)
		h.spokes[name], h.endpoints[name] = cli, srv.Endpoint
		h.call(h.admin.PutRegion(context.Background(), connect.NewRequest(&platformv1.PutRegionRequest{
			Region: &platformv1.Region{Name: name, EtcdEndpoints: []string{srv.Endpoint}}})))
	}
	h.pubDeps = ctxpublisher.Deps{NATS: testnats.Connect(t, ns)}
	if mutate != nil {
		mutate(h, &h.pubDeps)
	}
	// Only the nudge (or an explicit reconcile) can make a change visible
	// quickly: the poll is slow.
	h.pubCfg = ctxpublisher.Config{Database: h.db, PollInterval: 5 * time.Second, RetryMin: 20 * time.Millisecond, RetryMax: 200 * time.Millisecond}
	h.startPublisher()
	return h
}

func (h *hub) startPublisher() {
	h.t.Helper()
	pub, err := ctxpublisher.New(context.Background(), h.pubCfg, h.pubDeps)
	if err != nil {
		h.t.Fatal(err)
	}
	if err := pub.Listen(); err != nil {
		h.t.Fatal(err)
	}
	h.stopPub = testrun.Start(h.t, "ctxpublisher", pub.Run)
	h.status = ctxpublisherv1connect.NewContextPublisherServiceClient(connectclient.HTTPClient(nil), pub.URL())
	testwait.For(h.t, "the publisher's first reconcile of every reachable region", 10*time.Second, func() bool {
		st, err := h.status.GetStatus(context.Background(), connect.NewRequest(&ctxpublisherv1.GetStatusRequest{}))
		if err != nil || len(st.Msg.Regions) != len(h.spokes) {
			return false
		}
		for _, r := range st.Msg.Regions {
			if r.LastReconcile == nil && !r.Failing {
				return false
			}
		}
		return true
	})
}

func (h *hub) call(_ any, err error) {
	h.t.Helper()
	if err != nil {
		h.t.Fatal(err)
	}
}

func (h *hub) tenantWithKey(name string) (tenantID, keyID, secret string) {
	h.t.Helper()
	ctx := context.Background()
	tr, err := h.admin.CreateTenant(ctx, connect.NewRequest(&platformv1.CreateTenantRequest{Name: name}))
	if err != nil {
		h.t.Fatal(err)
	}
	kr, err := h.admin.CreateAPIKey(ctx, connect.NewRequest(&platformv1.CreateAPIKeyRequest{TenantId: tr.Msg.Tenant.Id, Scopes: []string{"query"}}))
	if err != nil {
		h.t.Fatal(err)
	}
	return tr.Msg.Tenant.Id, kr.Msg.Key.Id, kr.Msg.Secret
}

// authIn is a spoke gateway's view: a contextstore over that spoke's etcd,
// with its watch running.
func (h *hub) authIn(spoke string) *contextstore.Store {
	cs := contextstore.New(h.spokes[spoke], loadingcache.Config{}, nil)
	testrun.Start(h.t, "contextstore "+spoke, func(ctx context.Context) error { cs.Run(ctx); return nil })
	return cs
}

func authenticates(cs *contextstore.Store, key string) bool {
	_, _, err := cs.AuthAPIKey(context.Background(), key)
	return err == nil
}

func (h *hub) has(spoke, key string) bool {
	resp, err := h.spokes[spoke].Get(context.Background(), key)
	return err == nil && len(resp.Kvs) == 1
}

func TestAdminAPIRequiresTheToken(t *testing.T) {
	h := newHub(t)
	anon := platformv1connect.NewPlatformServiceClient(connectclient.HTTPClient(nil), h.platformURL)
	_, err := anon.ListTenants(context.Background(), connect.NewRequest(&platformv1.ListTenantsRequest{}))
	if connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Fatalf("no token: %v, want Unauthenticated", err)
	}
	_, err = h.admin.CreateTenant(context.Background(), connect.NewRequest(&platformv1.CreateTenantRequest{Name: ""}))
	if connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("empty tenant name: %v, want InvalidArgument", err)
	}
	_, err = h.admin.GetTenant(context.Background(), connect.NewRequest(&platformv1.GetTenantRequest{Id: "t_missing"}))
	if connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("unknown tenant: %v, want NotFound", err)
	}
	if _, err := platform.New(context.Background(), platform.Config{Database: filepath.Join(t.TempDir(), "p.db"), AdminToken: "short"}, platform.Deps{}); err == nil {
		t.Fatal("a short admin token was accepted")
	}
}

// TestRevokedAtTheHubRefusedEverywhereWithinASecond: a key revoked through
// the admin API stops authenticating in every spoke (each a real etcd with a
// gateway's contextstore watching it) within one second, through the
// nudge → outbox → push → watch path; the publisher's poll is 5 s, so it
// cannot be what passes this.
func TestRevokedAtTheHubRefusedEverywhereWithinASecond(t *testing.T) {
	h := newHub(t, "eu-1", "us-1")
	eu, us := h.authIn("eu-1"), h.authIn("us-1")
	_, keyID, secret := h.tenantWithKey("acme")
	testwait.For(t, "the new key authenticating in both spokes", 2*time.Second, func() bool {
		return authenticates(eu, secret) && authenticates(us, secret)
	})
	start := time.Now()
	h.call(h.admin.RevokeAPIKey(context.Background(), connect.NewRequest(&platformv1.RevokeAPIKeyRequest{Id: keyID})))
	testwait.For(t, "the revoked key refused in both spokes", time.Second, func() bool {
		return !authenticates(eu, secret) && !authenticates(us, secret)
	})
	t.Logf("revocation visible in both spokes after %v", time.Since(start))
	var st *connect.Response[ctxpublisherv1.GetStatusResponse]
	testwait.For(t, "status: both regions current", time.Second, func() bool {
		var err error
		st, err = h.status.GetStatus(context.Background(), connect.NewRequest(&ctxpublisherv1.GetStatusRequest{}))
		if err != nil || len(st.Msg.Regions) != 2 {
			return false
		}
		for _, r := range st.Msg.Regions {
			if r.LagChanges != 0 || r.Failing || r.LastReconcile == nil {
				return false
			}
		}
		return true
	})
}

// TestDroppedPushAndDeletedTenantHealedByReconcile: a push lost on its way
// to one spoke (fault injected) is written by the next reconcile; a tenant
// deleted while the publisher was down, with the outbox trimmed so no push
// can carry it, disappears from every spoke at the reconcile that follows.
func TestDroppedPushAndDeletedTenantHealedByReconcile(t *testing.T) {
	var dropping atomic.Bool
	dropping.Store(true)
	h := newHubWith(t, func(_ *hub, d *ctxpublisher.Deps) {
		d.Drop = func(region string, c store.Context) bool { return region == "us-1" && dropping.Load() }
	}, "eu-1", "us-1")
	tenantID, _, secret := h.tenantWithKey("acme")
	prefix := secret[3:11]
	apiKey := contextstore.APIKeyPrefix + prefix
	testwait.For(t, "the key in eu-1", 2*time.Second, func() bool { return h.has("eu-1", apiKey) })
	if h.has("us-1", apiKey) {
		t.Fatal("the dropped push reached us-1 anyway: the fault was not injected")
	}
	dropping.Store(false)
	resp, err := h.status.Reconcile(context.Background(), connect.NewRequest(&ctxpublisherv1.ReconcileRequest{Region: "us-1"}))
	if err != nil {
		t.Fatal(err)
	}
	if !h.has("us-1", apiKey) || !h.has("us-1", contextstore.TenantPrefix+tenantID) {
		t.Fatal("reconcile did not write the dropped contexts")
	}
	for _, r := range resp.Msg.Regions {
		if r.Name == "us-1" && r.LastReconcileWritten < 2 {
			t.Fatalf("us-1 status after reconcile: %v, want ≥ 2 written", r)
		}
	}

	h.stopPub()
	st, err := store.Open(context.Background(), h.db)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteTenant(context.Background(), tenantID); err != nil {
		t.Fatal(err)
	}
	head, _ := st.Head(context.Background())
	if _, err := st.TrimOutbox(context.Background(), head); err != nil {
		t.Fatal(err)
	}
	st.Close()
	for _, s := range []string{"eu-1", "us-1"} {
		if !h.has(s, apiKey) {
			t.Fatalf("%s lost the key while the publisher was down", s)
		}
	}
	h.startPublisher()
	testwait.For(t, "the deleted tenant's contexts gone from both spokes", 5*time.Second, func() bool {
		for _, s := range []string{"eu-1", "us-1"} {
			if h.has(s, apiKey) || h.has(s, contextstore.TenantPrefix+tenantID) {
				return false
			}
		}
		return true
	})
}

// TestUnreachableSpokeCatchesUp: a spoke that cannot be reached is reported
// failing with its lag while the other stays current; when it is back it
// catches up.
func TestUnreachableSpokeCatchesUp(t *testing.T) {
	var down atomic.Bool
	h := newHubWith(t, func(h *hub, d *ctxpublisher.Deps) {
		d.Dial = func(ctx context.Context, eps []string) (*clientv3.Client, error) {
			if down.Load() && eps[0] == h.endpoints["us-1"] {
				return nil, errors.New("injected: connection refused")
			}
			return etcdkv.Connect(ctx, etcdkv.Config{Endpoints: eps})
		}
	}, "eu-1", "us-1")
	// Fresh publisher so the fault applies from its first dial.
	h.stopPub()
	down.Store(true)
	h.startPublisher()
	_, _, secret := h.tenantWithKey("acme")
	apiKey := contextstore.APIKeyPrefix + secret[3:11]
	testwait.For(t, "the key in eu-1", 2*time.Second, func() bool { return h.has("eu-1", apiKey) })
	testwait.For(t, "us-1 reported failing with a lag", 5*time.Second, func() bool {
		st, err := h.status.GetStatus(context.Background(), connect.NewRequest(&ctxpublisherv1.GetStatusRequest{}))
		if err != nil {
			return false
		}
		for _, r := range st.Msg.Regions {
			if r.Name == "us-1" && !(r.Failing && r.LagChanges > 0 && r.LastError != "") {
				return false
			}
			if r.Name == "eu-1" && (r.Failing || r.LagChanges != 0) {
				return false
			}
		}
		return true
	})
	down.Store(false)
	testwait.For(t, "us-1 caught up", 5*time.Second, func() bool { return h.has("us-1", apiKey) })
}

// TestPushesNeverRegressAVersion: a region holding a newer version of a
// context keeps it when an older change of it is pushed; a reconcile writes
// the database's truth back.
func TestPushesNeverRegressAVersion(t *testing.T) {
	h := newHub(t, "eu-1")
	ctx := context.Background()
	_, keyID, secret := h.tenantWithKey("acme")
	key := contextstore.APIKeyPrefix + secret[3:11]
	testwait.For(t, "the key in eu-1", 2*time.Second, func() bool { return h.has("eu-1", key) })
	var cur contextsv1.APIKeyContext
	if _, err := etcdkv.GetProto(ctx, h.spokes["eu-1"], key, &cur); err != nil {
		t.Fatal(err)
	}
	future := proto.Clone(&cur).(*contextsv1.APIKeyContext)
	future.Version, future.Scopes = 1<<40, []string{"from-the-future"}
	raw, _ := proto.Marshal(future)
	if _, err := h.spokes["eu-1"].Put(ctx, key, string(raw)); err != nil {
		t.Fatal(err)
	}
	// The revocation's version is far below the region's: the push skips it.
	h.call(h.admin.RevokeAPIKey(ctx, connect.NewRequest(&platformv1.RevokeAPIKeyRequest{Id: keyID})))
	_, _, _ = h.tenantWithKey("beta") // a later change, pushed after the revocation
	testwait.For(t, "the later change in eu-1", 2*time.Second, func() bool {
		st, err := h.status.GetStatus(ctx, connect.NewRequest(&ctxpublisherv1.GetStatusRequest{}))
		return err == nil && st.Msg.Regions[0].LagChanges == 0
	})
	var got contextsv1.APIKeyContext
	if _, err := etcdkv.GetProto(ctx, h.spokes["eu-1"], key, &got); err != nil {
		t.Fatal(err)
	}
	if got.Version != 1<<40 || got.Revoked {
		t.Fatalf("push replaced a newer context: region holds %v", &got)
	}
	h.call(h.status.Reconcile(ctx, connect.NewRequest(&ctxpublisherv1.ReconcileRequest{})))
	if _, err := etcdkv.GetProto(ctx, h.spokes["eu-1"], key, &got); err != nil {
		t.Fatal(err)
	}
	if !got.Revoked || got.Version >= 1<<40 {
		t.Fatalf("after reconcile the region holds %v; want the database's revoked key", &got)
	}
}
