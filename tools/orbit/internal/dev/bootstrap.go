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
func bootstrap(ctx context.Context, dir string, b bootState, platformURL string, etcdEndpoints []string) (bootState, error) {
	admin := platformv1connect.NewPlatformServiceClient(connectclient.HTTPClient(nil), platformURL,
		connect.WithInterceptors(connectclient.Bearer(b.AdminToken)))
	if _, err := admin.PutRegion(ctx, connect.NewRequest(&platformv1.PutRegionRequest{Region: &platformv1.Region{
		Name: RegionName, Hub: true, EtcdEndpoints: etcdEndpoints}})); err != nil {
		return b, fmt.Errorf("dev: register region: %w", err)
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
	cli, err := etcdkv.Connect(ctx, etcdkv.Config{Endpoints: etcdEndpoints})
	if err != nil {
		return b, err
	}
	defer cli.Close()
	// A fresh store each poll: a cached "not found" must not hide the push.
	deadline := time.Now().Add(30 * time.Second)
	for {
		cs := contextstore.New(cli, loadingcache.Config{}, nil)
		_, _, errA := cs.AuthAPIKey(ctx, b.APIKey)
		_, errD := cs.AuthDeployKey(ctx, b.DeployKey)
		if errA == nil && errD == nil {
			return b, nil
		}
		if time.Now().After(deadline) {
			return b, fmt.Errorf("dev: the dev keys did not reach the region's etcd within 30 s (API key: %v, deploy key: %v); is the context publisher running?", errA, errD)
		}
		select {
		case <-ctx.Done():
			return b, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}
