// Package testetcd starts a real embedded etcd member for a test, on random
// loopback ports with its data in a temp dir, stopped by t.Cleanup.
package testetcd

import (
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/orbitplane/orbit/libs/embedetcd"
)

// Start starts a member and returns it with a connected client.
func Start(t testing.TB) (*embedetcd.Server, *clientv3.Client) {
	t.Helper()
	s, err := embedetcd.Start(embedetcd.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatalf("testetcd: %v", err)
	}
	t.Cleanup(s.Close)
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{s.Endpoint}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("testetcd: client: %v", err)
	}
	t.Cleanup(func() { cli.Close() })
	return s, cli
}
