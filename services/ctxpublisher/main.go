// Command ctxpublisher runs the hub's context publisher: it pushes contexts
// built from the platform database into every region's etcd
// (docs/contexts.md).
package main

import (
	"context"

	"github.com/orbitplane/orbit/libs/svcmain"
	"github.com/orbitplane/orbit/services/ctxpublisher/ctxpublisher"
)

func main() {
	var cfg ctxpublisher.Config
	svcmain.Main("ctxpublisher", ctxpublisher.Needs, cfg.RegisterFlags, func(ctx context.Context, env svcmain.Env) error {
		svc, err := ctxpublisher.New(ctx, cfg, ctxpublisher.Deps{Logger: env.Logger, TracerProvider: env.TracerProvider, NATS: env.NATS})
		if err != nil {
			return err
		}
		return svc.Run(ctx)
	})
}
