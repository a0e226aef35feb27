// Command gateway is Orbit's public API (docs/query-path.md).
package main

import (
	"context"

	"github.com/orbitplane/orbit/libs/svcmain"
	"github.com/orbitplane/orbit/services/gateway/gateway"
)

func main() {
	var cfg gateway.Config
	svcmain.Main("gateway", gateway.Needs, cfg.RegisterFlags, func(ctx context.Context, env svcmain.Env) error {
		cfg.Region = env.Region
		svc, err := gateway.New(cfg, gateway.Deps{Logger: env.Logger, TracerProvider: env.TracerProvider, Etcd: env.Etcd})
		if err != nil {
			return err
		}
		return svc.Run(ctx)
	})
}
