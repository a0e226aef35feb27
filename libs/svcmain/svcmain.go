// Package svcmain is the shared body of every service's main: the common
// flags (logging, tracing, NATS, etcd, region), building those clients, a
// context that ends on SIGINT/SIGTERM, and a clear exit. A service's main is
// one call:
//
//	func main() { svcmain.Main("registry", needs, cfg.RegisterFlags, run) }
package svcmain

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/nats-io/nats.go"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.opentelemetry.io/otel/trace"

	"github.com/orbitplane/orbit/libs/etcdkv"
	"github.com/orbitplane/orbit/libs/natsbus"
	"github.com/orbitplane/orbit/libs/obslog"
	"github.com/orbitplane/orbit/libs/otelsetup"
)

// Needs says which shared clients a service uses.
type Needs struct {
	NATS bool
	Etcd bool
}

// Common are the flags every service has.
type Common struct {
	LogLevel      string
	Region        string
	OTel          otelsetup.Config
	NATSURL       string
	EtcdEndpoints string
}

// RegisterFlags defines the common flags on fs.
func (c *Common) RegisterFlags(fs *flag.FlagSet, needs Needs) {
	fs.StringVar(&c.LogLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&c.Region, "region", "local", "region this instance serves, written into every log line")
	fs.StringVar(&c.OTel.Exporter, "otel-exporter", otelsetup.ExporterNone, "trace exporter: none or otlp")
	fs.StringVar(&c.OTel.Endpoint, "otel-endpoint", "127.0.0.1:4317", "OTLP/gRPC collector host:port (with --otel-exporter=otlp)")
	fs.BoolVar(&c.OTel.Insecure, "otel-insecure", true, "send OTLP without TLS")
	fs.Float64Var(&c.OTel.SampleRatio, "otel-sample-ratio", 1, "share of new traces sampled, 0 < r <= 1")
	if needs.NATS {
		fs.StringVar(&c.NATSURL, "nats-url", "nats://127.0.0.1:4222", "NATS server URL(s), comma-separated")
	}
	if needs.Etcd {
		fs.StringVar(&c.EtcdEndpoints, "etcd-endpoints", "http://127.0.0.1:2379", "etcd client endpoints, comma-separated")
	}
}

// Env is what Main hands the service.
type Env struct {
	Logger         *slog.Logger
	TracerProvider trace.TracerProvider
	NATS           *nats.Conn
	Etcd           *clientv3.Client
	Region         string
}

// FlagsFunc registers a service's own flags.
type FlagsFunc func(fs *flag.FlagSet)

// AllFlags registers the common flags and the service's: what the binary
// parses, and what tests/deploy checks manifests against.
func AllFlags(needs Needs, own FlagsFunc) func(fs *flag.FlagSet) {
	return func(fs *flag.FlagSet) {
		var c Common
		c.RegisterFlags(fs, needs)
		if own != nil {
			own(fs)
		}
	}
}

// Main parses flags, builds the clients, runs run until SIGINT/SIGTERM and
// exits: 0 after a clean stop, 2 for bad flags, 1 otherwise.
func Main(service string, needs Needs, own FlagsFunc, run func(ctx context.Context, env Env) error) {
	fs := flag.NewFlagSet(service, flag.ContinueOnError)
	var c Common
	c.RegisterFlags(fs, needs)
	if own != nil {
		own(fs)
	}
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		os.Exit(2)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "%s: unexpected arguments %q\n", service, fs.Args())
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := start(ctx, service, needs, c, run); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", service, err)
		stop()
		os.Exit(1)
	}
}

func start(ctx context.Context, service string, needs Needs, c Common, run func(context.Context, Env) error) error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	env := Env{Region: c.Region}
	env.Logger = obslog.New(os.Stderr, obslog.Options{Service: service, Region: c.Region, Level: level})
	c.OTel.Service = service
	tp, err := otelsetup.Setup(ctx, c.OTel)
	if err != nil {
		return err
	}
	defer func() { _ = tp.Shutdown(context.Background()) }()
	env.TracerProvider = tp
	if needs.NATS {
		nc, err := natsbus.Connect(ctx, natsbus.Config{URL: c.NATSURL, Name: service}, env.Logger)
		if err != nil {
			return err
		}
		defer nc.Close()
		env.NATS = nc
	}
	if needs.Etcd {
		cli, err := etcdkv.Connect(ctx, etcdkv.Config{Endpoints: SplitList(c.EtcdEndpoints)})
		if err != nil {
			return err
		}
		defer cli.Close()
		env.Etcd = cli
	}
	return run(ctx, env)
}

// SplitList splits a comma-separated flag value, dropping empty items.
func SplitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
