// Command certdns runs the region's DNS/cert allocator: the platform CA and
// the pool of satellite certificates (docs/certdns.md).
package main

import (
	"context"

	"github.com/orbitplane/orbit/libs/svcmain"
	"github.com/orbitplane/orbit/services/certdns/certdns"
)

func main() {
	var cfg certdns.Config
	svcmain.Main("certdns", certdns.Needs, cfg.RegisterFlags, func(ctx context.Context, env svcmain.Env) error {
		svc, err := certdns.New(ctx, cfg, certdns.Deps{Logger: env.Logger, TracerProvider: env.TracerProvider, Etcd: env.Etcd})
		if err != nil {
			return err
		}
		return svc.Run(ctx)
	})
}
