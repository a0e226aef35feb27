package e2e

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/orbitplane/orbit/libs/apikey"
	"github.com/orbitplane/orbit/libs/connectclient"
	"github.com/orbitplane/orbit/libs/contextstore"
	"github.com/orbitplane/orbit/libs/testing/testnats"
	"github.com/orbitplane/orbit/libs/testing/testwait"
	contextsv1 "github.com/orbitplane/orbit/proto/orbit/contexts/v1"
	gatewayv1 "github.com/orbitplane/orbit/proto/orbit/gateway/v1"
	"github.com/orbitplane/orbit/proto/orbit/gateway/v1/gatewayv1connect"
	logbrokerv1 "github.com/orbitplane/orbit/proto/orbit/logbroker/v1"
	platformv1 "github.com/orbitplane/orbit/proto/orbit/platform/v1"
	"github.com/orbitplane/orbit/proto/orbit/platform/v1/platformv1connect"
	registryv1 "github.com/orbitplane/orbit/proto/orbit/registry/v1"
	"github.com/orbitplane/orbit/proto/orbit/registry/v1/registryv1connect"
	"github.com/orbitplane/orbit/services/ctxpublisher/ctxpublisher"
	"github.com/orbitplane/orbit/services/platform/platform"
)

const hubAdminToken = "e2e-admin-token-0123456789abcdef"

// TestSpokeServesWithTheHubDown: a tenant and its keys made at the hub
// (platform + context publisher, with their own NATS) reach the spoke; then
// the whole hub stops, and the spoke still enrols a satellite with the
// hub-made deploy key, authenticates the hub-made API key and answers its
// queries — also through a gateway restarted while the hub is down, whose
// caches start empty and fill from the spoke's own etcd.
func TestSpokeServesWithTheHubDown(t *testing.T) {
	s := newSystem(t, options{})
	ctx := context.Background()

	// The hub.
	hubNATS := testnats.Start(t)
	db := filepath.Join(t.TempDir(), "platform.db")
	plat, err := platform.New(ctx, platform.Config{Database: db, AdminToken: hubAdminToken},
		platform.Deps{Logger: logger(s.logs, "platform"), TracerProvider: tracer(t, "platform"), NATS: testnats.Connect(t, hubNATS)})
	if err != nil {
		t.Fatal(err)
	}
	platRun := run(t, plat.Listen, plat.Run)
	pub, err := ctxpublisher.New(ctx, ctxpublisher.Config{Database: db},
		ctxpublisher.Deps{Logger: logger(s.logs, "ctxpublisher"), TracerProvider: tracer(t, "ctxpublisher"), NATS: testnats.Connect(t, hubNATS)})
	if err != nil {
		t.Fatal(err)
	}
	pubRun := run(t, pub.Listen, pub.Run)
	admin := platformv1connect.NewPlatformServiceClient(s.client, plat.URL(), connect.WithInterceptors(connectclient.Bearer(hubAdminToken)))
	if _, err := admin.PutRegion(ctx, connect.NewRequest(&platformv1.PutRegionRequest{Region: &platformv1.Region{
		Name: "spoke-1", EtcdEndpoints: s.etcd.Endpoints()}})); err != nil {
		t.Fatal(err)
	}
	tr, err := admin.CreateTenant(ctx, connect.NewRequest(&platformv1.CreateTenantRequest{Name: "hubco"}))
	if err != nil {
		t.Fatal(err)
	}
	kr, err := admin.CreateAPIKey(ctx, connect.NewRequest(&platformv1.CreateAPIKeyRequest{TenantId: tr.Msg.Tenant.Id, Scopes: []string{"query", "satellites:read"}}))
	if err != nil {
		t.Fatal(err)
	}
	dr, err := admin.CreateDeployKey(ctx, connect.NewRequest(&platformv1.CreateDeployKeyRequest{TenantId: tr.Msg.Tenant.Id}))
	if err != nil {
		t.Fatal(err)
	}
	s.tenants["hubco"] = contextstore.Bootstrap{TenantID: tr.Msg.Tenant.Id, APIKey: kr.Msg.Secret, DeployKey: dr.Msg.Secret}
	whoami := func() error {
		gw := gatewayv1connect.NewGatewayServiceClient(s.client, s.gateway.URL(), connect.WithInterceptors(connectclient.Bearer(kr.Msg.Secret)))
		resp, err := gw.WhoAmI(ctx, connect.NewRequest(&gatewayv1.WhoAmIRequest{}))
		if err == nil && resp.Msg.TenantId != tr.Msg.Tenant.Id {
			t.Fatalf("WhoAmI: tenant %q, want %q", resp.Msg.TenantId, tr.Msg.Tenant.Id)
		}
		return err
	}
	testwait.For(t, "the hub-made key authenticating at the spoke", 5*time.Second, func() bool { return whoami() == nil })
	// The deploy key was made after the API key: wait for its push too
	// before the hub goes.
	dprefix, _ := apikey.Prefix(apikey.KindDeploy, dr.Msg.Secret)
	testwait.For(t, "the hub-made deploy key in the spoke's etcd", 5*time.Second, func() bool {
		resp, err := s.etcd.Get(ctx, contextstore.DeployKeyPrefix+dprefix)
		return err == nil && len(resp.Kvs) == 1
	})

	// The hub goes away entirely.
	pubRun.stop(t)
	platRun.stop(t)
	hubNATS.Shutdown()
	hubNATS.WaitForShutdown()

	sat := s.startSatellite(satOptions{tenant: "hubco", name: "edge-hub"})
	id := sat.agent.State().SatelliteID
	assertQuery := func(what string) {
		t.Helper()
		stream, err := s.query("hubco").ExecuteQuery(ctx, one(id, "SELECT range AS i FROM range(1000)"))
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		res, err := collect(stream, false, nil)
		if err != nil || res.rows[id] != 1000 {
			t.Fatalf("%s: %d rows, %v; want 1000", what, res.rows[id], err)
		}
	}
	testwait.For(t, "edge-hub HEALTHY", 10*time.Second, func() bool { return s.status("hubco", id).String() == "SATELLITE_STATUS_HEALTHY" })
	assertQuery("query with the hub down")

	s.restartGateway()
	if err := whoami(); err != nil {
		t.Fatalf("a gateway restarted while the hub is down does not authenticate: %v", err)
	}
	assertQuery("query through the restarted gateway with the hub down")
}

// TestKeyScopes: the gateway lets a key call only what its scopes allow
// (admin allows everything), and refuses procedures it does not serve.
func TestKeyScopes(t *testing.T) {
	s := newSystem(t, options{})
	ctx := context.Background()
	key := func(name string, scopes ...string) {
		b := s.tenants["tenant-a"]
		k := apikey.Generate(apikey.KindAPI)
		p, _ := apikey.Prefix(apikey.KindAPI, k)
		raw, _ := proto.Marshal(&contextsv1.APIKeyContext{KeyId: name, Prefix: p, SecretHash: apikey.Hash(k), TenantId: b.TenantID, Scopes: scopes, Version: 1})
		if _, err := s.etcd.Put(ctx, contextstore.APIKeyPrefix+p, string(raw)); err != nil {
			t.Fatal(err)
		}
		b.APIKey = k
		s.tenants[name] = b
	}
	key("reader", "satellites:read")
	key("logger", "logs:read")
	key("admin", "admin")
	sat := s.startSatellite(satOptions{name: "edge-scopes"})
	id := sat.agent.State().SatelliteID
	queryCode := func(tenant string) connect.Code {
		st, err := s.query(tenant).ExecuteQuery(ctx, one(id, "SELECT 1"))
		if err == nil {
			_, err = collect(st, false, nil)
		}
		return codeOf(err)
	}
	listCode := func(tenant string) connect.Code {
		_, err := s.satellites(tenant).ListSatellites(ctx, connect.NewRequest(&registryv1.ListSatellitesRequest{}))
		return codeOf(err)
	}
	streamsCode := func(tenant string, create bool) connect.Code {
		var err error
		if create {
			_, err = s.logbroker(tenant).CreateStream(ctx, connect.NewRequest(&logbrokerv1.CreateStreamRequest{Config: &logbrokerv1.StreamConfig{Name: "s-" + tenant, Subject: tenant + ".>"}}))
		} else {
			_, err = s.logbroker(tenant).ListStreams(ctx, connect.NewRequest(&logbrokerv1.ListStreamsRequest{}))
		}
		return codeOf(err)
	}
	testwait.For(t, "edge-scopes answering", 10*time.Second, func() bool { return queryCode("admin") == 0 })
	ok, denied := connect.Code(0), connect.CodePermissionDenied
	for _, c := range []struct {
		what string
		got  connect.Code
		want connect.Code
	}{
		{"reader queries", queryCode("reader"), denied},
		{"reader lists satellites", listCode("reader"), ok},
		{"reader lists streams", streamsCode("reader", false), denied},
		{"logger lists streams", streamsCode("logger", false), ok},
		{"logger creates a stream", streamsCode("logger", true), denied},
		{"logger lists satellites", listCode("logger"), denied},
		{"admin queries", queryCode("admin"), ok},
		{"admin creates a stream", streamsCode("admin", true), ok},
	} {
		if c.got != c.want {
			t.Errorf("%s: code %v, want %v", c.what, c.got, c.want)
		}
	}
	// A procedure the gateway does not serve: refused whatever the scopes.
	_, err := registryv1connect.NewRegistryServiceClient(s.client, s.gateway.URL(), connect.WithInterceptors(connectclient.Bearer(s.tenants["admin"].APIKey))).
		Register(ctx, connect.NewRequest(&registryv1.RegisterRequest{}))
	if connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Fatalf("Register through the gateway: %v, want PermissionDenied", err)
	}
}

// codeOf is connect.CodeOf with 0 for success (CodeOf(nil) is Unknown).
func codeOf(err error) connect.Code {
	if err == nil {
		return 0
	}
	return connect.CodeOf(err)
}
