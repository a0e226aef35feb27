package dev

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"connectrpc.com/connect"

	"github.com/orbitplane/orbit/libs/connectclient"
	"github.com/orbitplane/orbit/libs/contextstore"
	"github.com/orbitplane/orbit/libs/etcdkv"
	"github.com/orbitplane/orbit/libs/loadingcache"
	platformv1 "github.com/orbitplane/orbit/proto/orbit/platform/v1"
	"github.com/orbitplane/orbit/proto/orbit/platform/v1/platformv1connect"
)

// BootstrapFile keeps the admin token and the dev tenant's keys across
// restarts (mode 0600).
const BootstrapFile = "bootstrap.json"

// DevTenantName is the bootstrap tenant's name.
const DevTenantName = "Dev tenant"

// RegionName is the one region plain `orbit dev` runs.
const RegionName = "local"

// bootState is bootstrap.json.
type bootState struct {
	AdminToken string `json:"admin_token"`
	contextstore.Bootstrap
}

// loadBoot reads bootstrap.json, or starts a new one with a fresh admin
// token. A file from before the platform service (no admin token) is
// replaced: its tenant never existed in the platform database.
func loadBoot(dir string) (bootState, error) {
	path := filepath.Join(dir, BootstrapFile)
	var b bootState
	raw, err := os.ReadFile(path)
	switch {
	case err == nil:
		if err := json.Unmarshal(raw, &b); err != nil {
			return b, fmt.Errorf("dev: %s: %w", path, err)
		}
		if b.AdminToken != "" {
			return b, nil
		}
		b = bootState{}
	case !errors.Is(err, os.ErrNotExist):
		return b, fmt.Errorf("dev: %w", err)
	}
	tok := make([]byte, 24)
	_, _ = rand.Read(tok)
	b.AdminToken = hex.EncodeToString(tok)
	return b, saveBoot(dir, b)
}

func saveBoot(dir string, b bootState) error {
	out, _ := json.MarshalIndent(b, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, BootstrapFile), out, 0o600); err != nil {
		return fmt.Errorf("dev: %w", err)
	}
	return nil
}

// bootstrap registers the region and, on the first start, creates the dev
// tenant with an API key and a deploy key through the platform's admin API,
// like an operator would. It returns once both keys authenticate from the
// region's etcd, i.e. once the context publisher has pushed them, so the
// services started next can use them.
func bootstrap(ctx context.Context, dir string, b bootState, platformURL string, regions []RegionInfo) (bootState, error) {
	admin := platformv1connect.NewPlatformServiceClient(connectclient.HTTPClient(nil), platformURL,
		connect.WithInterceptors(connectclient.Bearer(b.AdminToken)))
	// The regions of this run replace whatever an earlier run registered
	// (another --regions, new etcd ports).
	old, err := admin.ListRegions(ctx, connect.NewRequest(&platformv1.ListRegionsRequest{}))
	if err != nil {
		return b, fmt.Errorf("dev: list regions: %w", err)
	}
	want := map[string]bool{}
	for _, r := range regions {
		want[r.Name] = true
		if _, err := admin.PutRegion(ctx, connect.NewRequest(&platformv1.PutRegionRequest{Region: &platformv1.Region{
			Name: r.Name, Hub: len(regions) == 1, EtcdEndpoints: r.EtcdEndpoints}})); err != nil {
			return b, fmt.Errorf("dev: register region %s: %w", r.Name, err)
		}
	}
	for _, r := range old.Msg.Regions {
		if !want[r.Name] {
			if _, err := admin.DeleteRegion(ctx, connect.NewRequest(&platformv1.DeleteRegionRequest{Name: r.Name})); err != nil {
				return b, fmt.Errorf("dev: remove region %s: %w", r.Name, err)
			}
		}
	}
	if b.TenantID == "" {
		t, err := admin.CreateTenant(ctx, connect.NewRequest(&platformv1.CreateTenantRequest{Name: DevTenantName}))
		if connect.CodeOf(err) == connect.CodeAlreadyExists {
			// bootstrap.json was lost but the database was not: a new
			// tenant under a dated name keeps both.
			t, err = admin.CreateTenant(ctx, connect.NewRequest(&platformv1.CreateTenantRequest{Name: DevTenantName + " " + time.Now().UTC().Format(time.RFC3339)}))
		}
		if err != nil {
			return b, fmt.Errorf("dev: create the dev tenant: %w", err)
		}
		k, err := admin.CreateAPIKey(ctx, connect.NewRequest(&platformv1.CreateAPIKeyRequest{TenantId: t.Msg.Tenant.Id,
			Scopes: []string{"query", "satellites:read", "satellites:write", "logs:read", "logs:write"}, Description: "orbit dev"}))
		if err != nil {
			return b, fmt.Errorf("dev: create the dev API key: %w", err)
		}
		d, err := admin.CreateDeployKey(ctx, connect.NewRequest(&platformv1.CreateDeployKeyRequest{TenantId: t.Msg.Tenant.Id,
			Labels: map[string]string{"env": "demo"}, Description: "orbit dev demo satellites"}))
		if err != nil {
			return b, fmt.Errorf("dev: create the dev deploy key: %w", err)
		}
		b.TenantID, b.APIKey, b.DeployKey = t.Msg.Tenant.Id, k.Msg.Secret, d.Msg.Secret
		if err := saveBoot(dir, b); err != nil {
			return b, err
		}
	}
	for _, r := range regions {
		if err := waitForKeys(ctx, b, r); err != nil {
			return b, err
		}
	}
	return b, nil
}

// waitForKeys returns once the dev keys authenticate from a region's etcd.
func waitForKeys(ctx context.Context, b bootState, r RegionInfo) error {
	cli, err := etcdkv.Connect(ctx, etcdkv.Config{Endpoints: r.EtcdEndpoints})
	if err != nil {
		return err
	}
	defer cli.Close()
	// A fresh store each poll: a cached "not found" must not hide the push.
	deadline := time.Now().Add(30 * time.Second)
	for {
		cs := contextstore.New(cli, loadingcache.Config{}, nil)
		_, _, errA := cs.AuthAPIKey(ctx, b.APIKey)
		_, errD := cs.AuthDeployKey(ctx, b.DeployKey)
		if errA == nil && errD == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("dev: the dev keys did not reach region %s's etcd within 30 s (API key: %v, deploy key: %v); is the context publisher running?", r.Name, errA, errD)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// publishGateways records each region's gateway URL on the platform, as an
// operator would once a region's gateway is reachable; the region contexts
// carry it to every region.
func publishGateways(ctx context.Context, platformURL, adminToken string, regions []RegionInfo) error {
	admin := platformv1connect.NewPlatformServiceClient(connectclient.HTTPClient(nil), platformURL,
		connect.WithInterceptors(connectclient.Bearer(adminToken)))
	for _, r := range regions {
		if _, err := admin.PutRegion(ctx, connect.NewRequest(&platformv1.PutRegionRequest{Region: &platformv1.Region{
			Name: r.Name, Hub: len(regions) == 1, GatewayUrl: r.GatewayURL, EtcdEndpoints: r.EtcdEndpoints}})); err != nil {
			return fmt.Errorf("dev: publish region %s's gateway: %w", r.Name, err)
		}
	}
	return nil
}
