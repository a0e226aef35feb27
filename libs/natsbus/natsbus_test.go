package natsbus_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/orbitplane/orbit/libs/embednats"
	"github.com/orbitplane/orbit/libs/natsbus"
	"github.com/orbitplane/orbit/libs/reqctx"
	"github.com/orbitplane/orbit/libs/testing/testnats"
	"github.com/orbitplane/orbit/libs/testing/testwait"
)

func TestHeadersCarryContext(t *testing.T) {
	srv := testnats.Start(t)
	nc, err := natsbus.Connect(context.Background(), natsbus.Config{URL: srv.ClientURL(), Name: "test"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	sub, err := nc.SubscribeSync("satellite.s1")
	if err != nil {
		t.Fatal(err)
	}
	ctx := reqctx.MustWith(context.Background(), reqctx.Fields{Tenant: "t1", QueryID: "q1"})
	if err := nc.PublishMsg(natsbus.NewMsg(ctx, "satellite.s1", []byte("x"))); err != nil {
		t.Fatal(err)
	}
	m, err := sub.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	got := reqctx.From(natsbus.Extract(context.Background(), m))
	if got.Tenant != "t1" || got.QueryID != "q1" {
		t.Errorf("extracted %+v, want tenant t1 query q1", got)
	}
	if m.Header.Get("baggage") == "" {
		t.Error("no lower-case baggage header on the wire")
	}
}

func TestReconnectsAfterServerRestart(t *testing.T) {
	dir := t.TempDir()
	srv, err := embednats.Start(embednats.Config{Port: -1, StoreDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	port := srv.Addr().(*net.TCPAddr).Port
	url := srv.ClientURL()
	nc, err := natsbus.Connect(context.Background(), natsbus.Config{URL: url, Name: "test"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	srv.Shutdown()
	srv.WaitForShutdown()
	testwait.For(t, "disconnect", 15*time.Second, func() bool { return !nc.IsConnected() })

	// Restart on the same port.
	srv2, err := embednats.Start(embednats.Config{Port: port, StoreDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer srv2.Shutdown()
	testwait.For(t, "reconnect", 15*time.Second, nc.IsConnected)
	sub, err := nc.SubscribeSync("after")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish("after", []byte("ok")); err != nil {
		t.Fatal(err)
	}
	if _, err := sub.NextMsg(5 * time.Second); err != nil {
		t.Fatalf("no message after reconnect: %v", err)
	}
}

func TestConnectFailsClearly(t *testing.T) {
	if _, err := natsbus.Connect(context.Background(), natsbus.Config{URL: "nats://127.0.0.1:1", ConnectTimeout: 500 * time.Millisecond}, nil); err == nil {
		t.Error("connect to a closed port succeeded")
	}
	if _, err := natsbus.Connect(context.Background(), natsbus.Config{}, nil); err == nil {
		t.Error("connect without URL succeeded")
	}
}
