// Command platform runs the hub's platform service: tenants, users, API keys,
// deploy keys and regions over SQLite or PostgreSQL (docs/platform.md).
package main

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/orbitplane/orbit/libs/svcmain"
	"github.com/orbitplane/orbit/services/platform/platform"
)

func main() {
	var cfg platform.Config
	svcmain.Main("platform", platform.Needs, cfg.RegisterFlags, func(ctx context.Context, env svcmain.Env) error {
		cfg.AdminToken = os.Getenv("ORBIT_ADMIN_TOKEN")
		if cfg.AdminTokenFile != "" {
			raw, err := os.ReadFile(cfg.AdminTokenFile)
			if err != nil {
				return fmt.Errorf("--admin-token-file: %w", err)
			}
			cfg.AdminToken = strings.TrimSpace(string(raw))
		}
		svc, err := platform.New(ctx, cfg, platform.Deps{Logger: env.Logger, TracerProvider: env.TracerProvider, NATS: env.NATS})
		if err != nil {
			return err
		}
		return svc.Run(ctx)
	})
}
