// Command connector terminates satellite links and bridges them to NATS
// (docs/query-path.md).
package main

import (
	"context"

	"github.com/orbitplane/orbit/libs/svcmain"
	"github.com/orbitplane/orbit/services/connector/connector"
)

func main() {
	var cfg connector.Config
	svcmain.Main("connector", connector.Needs, cfg.RegisterFlags, func(ctx context.Context, env svcmain.Env) error {
		svc, err := connector.New(cfg, connector.Deps{Logger: env.Logger, TracerProvider: env.TracerProvider, NATS: env.NATS, Etcd: env.Etcd})
		if err != nil {
			return err
		}
		return svc.Run(ctx)
	})
}
