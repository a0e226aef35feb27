// Command satellite is the edge agent (docs/satellite.md).
package main

import (
	"context"

	"github.com/orbitplane/orbit/libs/svcmain"
	"github.com/orbitplane/orbit/services/satellite/satellite"
)

func main() {
	var cfg satellite.Config
	svcmain.Main("satellite", satellite.Needs, cfg.RegisterFlags, func(ctx context.Context, env svcmain.Env) error {
		a, err := satellite.New(ctx, cfg, satellite.Deps{Logger: env.Logger, TracerProvider: env.TracerProvider})
		if err != nil {
			return err
		}
		return a.Run(ctx)
	})
}
