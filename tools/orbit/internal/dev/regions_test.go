package dev_test

import (
	"context"
	"crypto/x509"
	"os"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/orbitplane/orbit/libs/connectclient"
	"github.com/orbitplane/orbit/libs/testing/testwait"
	ctxpublisherv1 "github.com/orbitplane/orbit/proto/orbit/ctxpublisher/v1"
	"github.com/orbitplane/orbit/proto/orbit/ctxpublisher/v1/ctxpublisherv1connect"
	gatewayv1 "github.com/orbitplane/orbit/proto/orbit/gateway/v1"
	"github.com/orbitplane/orbit/proto/orbit/gateway/v1/gatewayv1connect"
	platformv1 "github.com/orbitplane/orbit/proto/orbit/platform/v1"
	"github.com/orbitplane/orbit/proto/orbit/platform/v1/platformv1connect"
	queryv1 "github.com/orbitplane/orbit/proto/orbit/query/v1"
	"github.com/orbitplane/orbit/proto/orbit/query/v1/queryv1connect"
	registryv1 "github.com/orbitplane/orbit/proto/orbit/registry/v1"
	"github.com/orbitplane/orbit/proto/orbit/registry/v1/registryv1connect"
	"github.com/orbitplane/orbit/tools/orbit/internal/dev"
)

// TestTwoRegions: `orbit dev --regions 2` runs a hub and two spokes, each
// with its own NATS, etcd and services; the dev tenant, made once through
// the hub's platform API, reaches both; the same API key lists and queries

// startDev runs the whole system (regions of it) in this process until the
// test ends.
func startDev(t *testing.T, regions int) dev.Info {
	t.Helper()
	cfg := dev.Config{DataDir: t.TempDir(), ReadyTimeout: 60 * time.Second, Regions: regions}
	st, err := dev.Start(context.Background(), cfg, dev.Components(regions, dev.RegionNames(regions)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := st.Stop(); err != nil {
			t.Error(err)
		}
	})
	return st.Info()
}

// each region's own satellite through that region's gateway.
func TestTwoRegions(t *testing.T) {
	info := startDev(t, 2)
	if len(info.Regions) != 2 || info.Regions[0].EtcdEndpoints[0] == info.Regions[1].EtcdEndpoints[0] ||
		info.Regions[0].NATSURL == info.Regions[1].NATSURL || info.Regions[0].NATSURL == info.NATSURL {
		t.Fatalf("regions %+v (hub NATS %s): want two regions, each with its own NATS and etcd", info.Regions, info.NATSURL)
	}
	if info.GatewayURL != info.Regions[0].GatewayURL {
		t.Fatalf("gateway_url %s, want region-1's %s", info.GatewayURL, info.Regions[0].GatewayURL)
	}
	// Each region runs certdns with a CA of its own, written for clients.
	var cas []string
	for _, r := range info.Regions {
		pemBytes, err := os.ReadFile(r.CACert)
		if err != nil {
			t.Fatalf("%s: ca_cert %q: %v", r.Name, r.CACert, err)
		}
		if !x509.NewCertPool().AppendCertsFromPEM(pemBytes) {
			t.Fatalf("%s: ca_cert is not a PEM certificate", r.Name)
		}
		cas = append(cas, string(pemBytes))
	}
	if cas[0] == cas[1] {
		t.Fatal("both regions have the same CA; each region's certdns keeps its own in its etcd")
	}
	hc := connectclient.HTTPClient(nil)
	auth := connect.WithInterceptors(connectclient.Bearer(info.APIKey))
	for i, r := range info.Regions {
		want := []string{"demo-1", "demo-2"}[i] // satellites are split between the regions
		reg := registryv1connect.NewRegistryServiceClient(hc, r.GatewayURL, auth)
		var sats []*registryv1.Satellite
		testwait.For(t, r.Name+"'s satellite HEALTHY", 30*time.Second, func() bool {
			resp, err := reg.ListSatellites(context.Background(), connect.NewRequest(&registryv1.ListSatellitesRequest{}))
			if err != nil {
				return false
			}
			sats = resp.Msg.Satellites
			return len(sats) == 1 && sats[0].Status == registryv1.SatelliteStatus_SATELLITE_STATUS_HEALTHY
		})
		if sats[0].Name != want {
			t.Fatalf("%s lists %s, want %s", r.Name, sats[0].Name, want)
		}
		q := queryv1connect.NewQueryServiceClient(hc, r.GatewayURL, auth)
		stream, err := q.ExecuteQuery(context.Background(), connect.NewRequest(&queryv1.ExecuteQueryRequest{
			Target: &queryv1.ExecuteQueryRequest_Satellite{Satellite: sats[0].Id}, Sql: "SELECT 42 AS answer"}))
		if err != nil {
			t.Fatal(err)
		}
		var rows int64
		for stream.Receive() {
			if b := stream.Msg().Batch; b != nil {
				rows += b.NumRows
			}
		}
		if err := stream.Err(); err != nil || rows != 1 {
			t.Fatalf("%s: query: %d rows, %v", r.Name, rows, err)
		}
	}
	adminAPIsOnTheFirstGateway(t, info)
	// One key, every region: each gateway lists both regions' gateways
	// (region contexts from the hub) and marks its own.
	for _, r := range info.Regions {
		gw := gatewayv1connect.NewGatewayServiceClient(hc, r.GatewayURL, auth)
		var got []*gatewayv1.Region
		testwait.For(t, r.Name+" lists both regions", 20*time.Second, func() bool {
			resp, err := gw.ListRegions(context.Background(), connect.NewRequest(&gatewayv1.ListRegionsRequest{}))
			if err != nil {
				return false
			}
			got = resp.Msg.Regions
			return len(got) == 2
		})
		for i, g := range got {
			want := info.Regions[i]
			if g.Name != want.Name || g.GatewayUrl != want.GatewayURL || g.Current != (g.Name == r.Name) {
				t.Fatalf("%s lists %v, want %s at %s (current: %v)", r.Name, g, want.Name, want.GatewayURL, g.Name == r.Name)
			}
		}
	}
}

// adminAPIsOnTheFirstGateway: the gateway that plays the hub's relays the
// platform's admin API and the publisher's status for the web UI, with the
// admin token (never an API key); the other region's gateway serves neither.
func adminAPIsOnTheFirstGateway(t *testing.T, info dev.Info) {
	ctx := context.Background()
	hc := connectclient.HTTPClient(nil)
	admin := connect.WithInterceptors(connectclient.Bearer(info.AdminToken))
	plat := platformv1connect.NewPlatformServiceClient(hc, info.Regions[0].GatewayURL, admin)
	regions, err := plat.ListRegions(ctx, connect.NewRequest(&platformv1.ListRegionsRequest{}))
	if err != nil {
		t.Fatalf("ListRegions through the gateway with the admin token: %v", err)
	}
	if len(regions.Msg.Regions) < 2 {
		t.Fatalf("regions through the gateway: %v", regions.Msg.Regions)
	}
	for name, opt := range map[string]connect.ClientOption{
		"an API key":  connect.WithInterceptors(connectclient.Bearer(info.APIKey)),
		"a wrong one": connect.WithInterceptors(connectclient.Bearer(strings.Repeat("x", 48))),
	} {
		_, err := platformv1connect.NewPlatformServiceClient(hc, info.Regions[0].GatewayURL, opt).ListTenants(ctx, connect.NewRequest(&platformv1.ListTenantsRequest{}))
		if connect.CodeOf(err) != connect.CodeUnauthenticated {
			t.Fatalf("ListTenants with %s: %v, want unauthenticated", name, err)
		}
		_, err = ctxpublisherv1connect.NewContextPublisherServiceClient(hc, info.Regions[0].GatewayURL, opt).GetStatus(ctx, connect.NewRequest(&ctxpublisherv1.GetStatusRequest{}))
		if connect.CodeOf(err) != connect.CodeUnauthenticated {
			t.Fatalf("publisher status with %s: %v, want unauthenticated", name, err)
		}
	}
	st, err := ctxpublisherv1connect.NewContextPublisherServiceClient(hc, info.Regions[0].GatewayURL, admin).GetStatus(ctx, connect.NewRequest(&ctxpublisherv1.GetStatusRequest{}))
	if err != nil || len(st.Msg.Regions) != 2 {
		t.Fatalf("publisher status through the gateway: %v, %v", st, err)
	}
	_, err = platformv1connect.NewPlatformServiceClient(hc, info.Regions[1].GatewayURL, admin).ListRegions(ctx, connect.NewRequest(&platformv1.ListRegionsRequest{}))
	if connect.CodeOf(err) != connect.CodeUnimplemented {
		t.Fatalf("the second region's gateway: %v, want unimplemented (only the hub's relays the admin API)", err)
	}
}
