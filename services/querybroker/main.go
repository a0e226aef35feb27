// Command querybroker runs the query broker (docs/query-path.md).
package main

import (
	"context"

	"github.com/orbitplane/orbit/libs/svcmain"
	"github.com/orbitplane/orbit/services/querybroker/querybroker"
)

func main() {
	var cfg querybroker.Config
	svcmain.Main("querybroker", querybroker.Needs, cfg.RegisterFlags, func(ctx context.Context, env svcmain.Env) error {
		svc, err := querybroker.New(cfg, querybroker.Deps{Logger: env.Logger, TracerProvider: env.TracerProvider, NATS: env.NATS})
		if err != nil {
			return err
		}
		return svc.Run(ctx)
	})
}
