// Command logbroker runs the log broker: Liftbridge-style streams over NATS
// JetStream (docs/logbroker.md).
package main

import (
	"context"

	"github.com/orbitplane/orbit/libs/svcmain"
	"github.com/orbitplane/orbit/services/logbroker/logbroker"
)

func main() {
	var cfg logbroker.Config
	svcmain.Main("logbroker", logbroker.Needs, cfg.RegisterFlags, func(ctx context.Context, env svcmain.Env) error {
		svc, err := logbroker.New(cfg, logbroker.Deps{Logger: env.Logger, TracerProvider: env.TracerProvider, NATS: env.NATS})
		if err != nil {
			return err
		}
		return svc.Run(ctx)
	})
}
