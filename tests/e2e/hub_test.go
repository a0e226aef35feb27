package e2e

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/orbitplane/orbit/libs/connectclient"
	"github.com/orbitplane/orbit/libs/contextstore"
	"github.com/orbitplane/orbit/libs/testing/testnats"
	"github.com/orbitplane/orbit/libs/testing/testwait"
	gatewayv1 "github.com/orbitplane/orbit/proto/orbit/gateway/v1"
	"github.com/orbitplane/orbit/proto/orbit/gateway/v1/gatewayv1connect"
	platformv1 "github.com/orbitplane/orbit/proto/orbit/platform/v1"
	"github.com/orbitplane/orbit/proto/orbit/platform/v1/platformv1connect"
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
