// Command collector follows log files, a Unix socket and stdin and ships the
// lines to the log broker (docs/collector.md).
package main

import (
	"context"

	"github.com/orbitplane/orbit/libs/svcmain"
	"github.com/orbitplane/orbit/services/collector/collector"
)

func main() {
	var cfg collector.Config
	svcmain.Main("collector", collector.Needs, cfg.RegisterFlags, func(ctx context.Context, env svcmain.Env) error {
		c, err := collector.New(cfg, collector.Deps{Logger: env.Logger, TracerProvider: env.TracerProvider})
		if err != nil {
			return err
		}
		return c.Run(ctx)
	})
}
