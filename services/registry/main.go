// Command registry runs the satellite registry (docs/registry.md).
package main

import (
	"context"

	"github.com/orbitplane/orbit/libs/svcmain"
	"github.com/orbitplane/orbit/services/registry/registry"
)

func main() {
	var cfg registry.Config
	svcmain.Main("registry", registry.Needs, cfg.RegisterFlags, func(ctx context.Context, env svcmain.Env) error {
		cfg.Region = env.Region
		svc, err := registry.New(cfg, registry.Deps{Logger: env.Logger, TracerProvider: env.TracerProvider, NATS: env.NATS, Etcd: env.Etcd})
		if err != nil {
			return err
		}
		return svc.Run(ctx)
	})
}
