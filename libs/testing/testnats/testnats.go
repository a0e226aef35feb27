// Package testnats starts a real embedded NATS server with JetStream for a
// test, on a random loopback port, stopped by t.Cleanup.
package testnats

import (
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/orbitplane/orbit/libs/embednats"
)

// Start starts a server with JetStream in a temp dir.
func Start(t testing.TB) *server.Server {
	t.Helper()
	s, err := embednats.Start(embednats.Config{Port: -1, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatalf("testnats: %v", err)
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}

// Connect returns a client connection to s, closed by t.Cleanup.
func Connect(t testing.TB, s *server.Server, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(s.ClientURL(), opts...)
	if err != nil {
		t.Fatalf("testnats: connect: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}
