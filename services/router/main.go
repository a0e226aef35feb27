// Command router routes log broker streams to sinks by the rules of a YAML
// file (docs/router.md). `router test RULES.yaml` runs the file's tests
// section against the rules and exits 1 if any fails.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/orbitplane/orbit/libs/svcmain"
	"github.com/orbitplane/orbit/services/router/router"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "test" {
		os.Exit(runTests(os.Args[2:]))
	}
	var cfg router.Config
	svcmain.Main("router", router.Needs, cfg.RegisterFlags, func(ctx context.Context, env svcmain.Env) error {
		cfg.Region = env.Region
		r, err := router.New(cfg, router.Deps{Logger: env.Logger, TracerProvider: env.TracerProvider})
		if err != nil {
			return err
		}
		return r.Run(ctx)
	})
}

func runTests(args []string) int {
	if len(args) != 1 {
		fmt.Fprintln(os.Stderr, "usage: router test RULES.yaml")
		return 2
	}
	rf, err := router.LoadRules(args[0])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	failed, err := router.RunTests(rf, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if failed > 0 {
		return 1
	}
	return 0
}
