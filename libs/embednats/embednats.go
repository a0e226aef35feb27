// Package embednats runs a NATS server with JetStream inside the process: the
// embedded default of `orbit dev` and of tests. Production points services at
// a NATS cluster instead.
package embednats

import (
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Defaults (docs/limits.md).
const (
	// DefaultMaxPayload is NATS's own default and the largest message any
	// Orbit component may publish.
	DefaultMaxPayload = 1 << 20
	// ReadyTimeout bounds waiting for the server to accept connections.
	ReadyTimeout = 10 * time.Second
)

// Config configures the embedded server.
type Config struct {
	// Host to listen on; default 127.0.0.1.
	Host string
	// Port to listen on; -1 picks a free one, 0 means 4222.
	Port int
	// StoreDir holds JetStream data; empty disables JetStream.
	StoreDir string
	// MaxPayload bounds one message; default DefaultMaxPayload.
	MaxPayload int32
	// ServerName is reported to clients; default "orbit-dev".
	ServerName string
}

// Start starts the server and waits until it accepts connections.
func Start(cfg Config) (*server.Server, error) {
	if cfg.Host == "" {
		cfg.Host = "127.0.0.1"
	}
	if cfg.MaxPayload <= 0 {
		cfg.MaxPayload = DefaultMaxPayload
	}
	if cfg.ServerName == "" {
		cfg.ServerName = "orbit-dev"
	}
	opts := &server.Options{
		ServerName: cfg.ServerName,
		Host:       cfg.Host,
		Port:       cfg.Port,
		MaxPayload: cfg.MaxPayload,
		NoSigs:     true,
		NoLog:      true,
	}
	if cfg.StoreDir != "" {
		opts.JetStream = true
		opts.StoreDir = cfg.StoreDir
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embednats: %w", err)
	}
	s.Start()
	if !s.ReadyForConnections(ReadyTimeout) {
		s.Shutdown()
		return nil, errors.New("embednats: server not ready (is the port in use?)")
	}
	if cfg.StoreDir != "" && !s.JetStreamEnabled() {
		s.Shutdown()
		return nil, errors.New("embednats: JetStream did not start")
	}
	return s, nil
}
