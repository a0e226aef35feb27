// Command orbit is the developer launcher. `orbit dev` runs the whole system
// in one process on embedded NATS (JetStream) and etcd (docs/development.md).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/orbitplane/orbit/libs/obslog"
	"github.com/orbitplane/orbit/tools/orbit/internal/dev"
)

const usage = `Usage: orbit <command> [flags]

Commands:
  dev    run the whole system locally on embedded NATS and etcd

Run 'orbit <command> -h' for a command's flags.
`

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "orbit:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command")
	}
	switch args[0] {
	case "dev":
		return runDev(args[1:], stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", args[0])
	}
}

// devFlags registers `orbit dev`'s flags; the deploy manifest test reads the
// same set.
func devFlags(fs *flag.FlagSet) (*dev.Config, *string) {
	cfg := &dev.Config{}
	fs.StringVar(&cfg.DataDir, "data-dir", ".orbit/dev", "directory for all state (NATS, etcd, services); relative paths are taken from the workspace root under 'bazel run'")
	fs.IntVar(&cfg.NATSPort, "nats-port", dev.DefaultNATSPort, "NATS client port (0 = any free port)")
	fs.IntVar(&cfg.EtcdPort, "etcd-port", dev.DefaultEtcdPort, "etcd client port (0 = any free port)")
	fs.IntVar(&cfg.EtcdPeerPort, "etcd-peer-port", dev.DefaultEtcdPeerPort, "etcd peer port (0 = any free port)")
	fs.DurationVar(&cfg.ReadyTimeout, "ready-timeout", dev.DefaultReadyTimeout, "how long each service may take to become healthy")
	fs.IntVar(&cfg.GatewayPort, "gateway-port", dev.DefaultGatewayPort, "gateway (public API) port (0 = any free port)")
	fs.IntVar(&cfg.Satellites, "satellites", dev.DefaultSatellites, "demo satellites to run (split between the regions)")
	fs.IntVar(&cfg.Regions, "regions", 1, "spoke regions: 1 shares the hub's NATS and etcd; 2 or more run region-1..N, each with its own NATS, etcd and services, fed by the hub's context publisher")
	fs.StringVar(&cfg.WebDir, "web-dir", "auto", "built web UI the gateways serve at / (\"auto\": web/dist of the workspace when built; empty: none)")
	level := fs.String("log-level", "info", "log level: debug, info, warn, error")
	return cfg, level
}

func runDev(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("orbit dev", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg, level := devFlags(fs)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: orbit dev [flags]\n\nStarts embedded NATS and etcd and every Orbit service, waits until all are\nhealthy, prints the endpoints and writes <data-dir>/dev.json. Ctrl-C stops it;\nstarting again on the same --data-dir keeps the data.\n\nExample:\n  orbit dev --data-dir /tmp/orbit --nats-port 0 --etcd-port 0 --etcd-peer-port 0\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("dev: unexpected arguments %q", fs.Args())
	}
	if cfg.Regions < 1 || cfg.Regions > dev.MaxRegions {
		return fmt.Errorf("dev: --regions %d: want 1 to %d", cfg.Regions, dev.MaxRegions)
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*level)); err != nil {
		return fmt.Errorf("dev: --log-level: %w", err)
	}
	// `bazel run` starts us in the runfiles tree; resolve relative paths
	// against the workspace the user ran it from.
	ws := os.Getenv("BUILD_WORKSPACE_DIRECTORY")
	if ws != "" && !filepath.IsAbs(cfg.DataDir) {
		cfg.DataDir = filepath.Join(ws, cfg.DataDir)
	}
	cfg.WebDir = webDir(cfg.WebDir, ws, stderr)
	// Every service's lines also go to <data-dir>/logs/services.log, which
	// the collector follows into the log broker (docs/development.md).
	logDir := filepath.Join(cfg.DataDir, dev.LogDir)
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return fmt.Errorf("dev: %w", err)
	}
	logFile, err := os.OpenFile(filepath.Join(logDir, "services.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("dev: %w", err)
	}
	defer logFile.Close()
	logOut := io.MultiWriter(stderr, logFile)
	cfg.Logger = obslog.New(logOut, obslog.Options{Service: "orbit-dev", Level: lvl})
	cfg.ServiceLogger = func(service, region string) *slog.Logger {
		return obslog.New(logOut, obslog.Options{Service: service, Region: region, Level: lvl})
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	st, err := dev.Start(ctx, *cfg, dev.Components(cfg.Satellites, dev.RegionNames(cfg.Regions)))
	if err != nil {
		return err
	}
	info := st.Info()
	fmt.Fprintf(stdout, "orbit dev is up (Ctrl-C stops it)\n")
	fmt.Fprintf(stdout, "  nats:     %s\n", info.NATSURL)
	fmt.Fprintf(stdout, "  etcd:     %s\n", strings.Join(info.EtcdEndpoints, ","))
	for name, url := range info.Services {
		fmt.Fprintf(stdout, "  %-9s %s\n", name+":", url)
	}
	if len(info.Regions) > 1 {
		for _, r := range info.Regions {
			fmt.Fprintf(stdout, "  region %s: gateway %s, nats %s, etcd %s\n", r.Name, r.GatewayURL, r.NATSURL, strings.Join(r.EtcdEndpoints, ","))
		}
	}
	fmt.Fprintf(stdout, "  dev.json: %s\n", filepath.Join(info.DataDir, dev.InfoFile))
	if cfg.WebDir != "" {
		fmt.Fprintf(stdout, "  web UI:   %s (sign in with the API key below)\n", info.GatewayURL)
	}
	fmt.Fprintf(stdout, "\nTry it:\n  export ORBIT_ENDPOINT=%s ORBIT_API_KEY=%s\n  orbitctl satellites list\n  orbitctl query --selector env=demo \"SELECT service, count(*) FROM logs GROUP BY 1\"\n",
		info.GatewayURL, info.APIKey)
	if r := info.Regions[0]; r.CACert != "" && r.DNSAddr != "" {
		// Direct mode (docs/direct.md): the region's CA and DNS.
		fmt.Fprintf(stdout, "  export ORBIT_CA_CERT=%s ORBIT_DNS=%s\n  orbitctl query --satellite demo-1 --direct \"SELECT 1\"\n", r.CACert, r.DNSAddr)
	}
	<-ctx.Done()
	stop() // a second Ctrl-C now ends the process at once
	fmt.Fprintln(stdout, "stopping... (Ctrl-C again to force)")
	return st.Stop()
}

// webDir resolves --web-dir: "auto" is the workspace's web/dist when it has
// been built (tools/dev.sh builds it), else no UI, said once on stderr.
func webDir(flagValue, workspace string, stderr io.Writer) string {
	if flagValue != "auto" {
		if flagValue != "" && workspace != "" && !filepath.IsAbs(flagValue) {
			return filepath.Join(workspace, flagValue)
		}
		return flagValue
	}
	dir := filepath.Join("web", "dist")
	if workspace != "" {
		dir = filepath.Join(workspace, dir)
	}
	if _, err := os.Stat(filepath.Join(dir, "index.html")); err != nil {
		fmt.Fprintln(stderr, "orbit dev: no web UI (web/dist is not built: npm --prefix web ci && npm --prefix web run build, or use tools/dev.sh)")
		return ""
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return dir
	}
	return abs
}
