package dev

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/orbitplane/orbit/libs/apikey"
	"github.com/orbitplane/orbit/libs/contextstore"
	"github.com/orbitplane/orbit/libs/etcdkv"
)

// BootstrapFile keeps the dev tenant's keys across restarts.
const BootstrapFile = "bootstrap.json"

// bootstrap loads (or creates) the dev tenant with an API key and a deploy
// key, and writes them into etcd in the context format the platform's
// publisher uses (docs/contexts.md).
func bootstrap(ctx context.Context, dir, endpoint string) (contextstore.Bootstrap, error) {
	path := filepath.Join(dir, BootstrapFile)
	var b contextstore.Bootstrap
	raw, err := os.ReadFile(path)
	switch {
	case err == nil:
		if err := json.Unmarshal(raw, &b); err != nil {
			return b, fmt.Errorf("dev: %s: %w", path, err)
		}
	case errors.Is(err, os.ErrNotExist):
		b = contextstore.Bootstrap{TenantID: "dev", APIKey: apikey.Generate(apikey.KindAPI), DeployKey: apikey.Generate(apikey.KindDeploy)}
		out, _ := json.MarshalIndent(b, "", "  ")
		if err := os.WriteFile(path, out, 0o600); err != nil {
			return b, fmt.Errorf("dev: %w", err)
		}
	default:
		return b, fmt.Errorf("dev: %w", err)
	}
	cli, err := etcdkv.Connect(ctx, etcdkv.Config{Endpoints: []string{endpoint}})
	if err != nil {
		return b, err
	}
	defer cli.Close()
	if err := contextstore.WriteBootstrap(ctx, cli, b, "Dev tenant"); err != nil {
		return b, fmt.Errorf("dev: bootstrap contexts: %w", err)
	}
	return b, nil
}
