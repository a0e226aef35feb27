// Package logbrokertest runs a real log broker over a real embedded
// JetStream for other services' tests, on a fixed loopback port so it can
// be stopped and started again where its clients expect it.
package logbrokertest

import (
	"context"
	"net"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/nats-io/nats-server/v2/server"

	"github.com/orbitplane/orbit/libs/connectclient"
	"github.com/orbitplane/orbit/libs/reqctx"
	"github.com/orbitplane/orbit/libs/testing/testnats"
	"github.com/orbitplane/orbit/libs/testing/testrun"
	logbrokerv1 "github.com/orbitplane/orbit/proto/orbit/logbroker/v1"
	"github.com/orbitplane/orbit/proto/orbit/logbroker/v1/logbrokerv1connect"
	"github.com/orbitplane/orbit/services/logbroker/logbroker"
)

// Broker is a running (or stopped) log broker.
type Broker struct {
	t    testing.TB
	NATS *server.Server
	addr string
	cfg  logbroker.Config
	stop func()
}

// Start starts a broker on its own NATS server; t.Cleanup stops it.
func Start(t testing.TB) *Broker {
	t.Helper()
	return StartWith(t, logbroker.Config{})
}

// StartWith is Start with a broker config (its address is chosen here).
func StartWith(t testing.TB, cfg logbroker.Config) *Broker {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	b := &Broker{t: t, NATS: testnats.Start(t), addr: addr, cfg: cfg}
	b.Start()
	t.Cleanup(b.Stop)
	return b
}

// Start starts the broker again after Stop.
func (b *Broker) Start() {
	b.t.Helper()
	cfg := b.cfg
	cfg.Server.Addr = b.addr
	svc, err := logbroker.New(cfg, logbroker.Deps{NATS: testnats.Connect(b.t, b.NATS)})
	if err != nil {
		b.t.Fatal(err)
	}
	if err := svc.Listen(); err != nil {
		b.t.Fatal(err)
	}
	b.stop = testrun.Start(b.t, "logbroker", svc.Run)
}

// Stop stops the broker; its streams stay in JetStream.
func (b *Broker) Stop() {
	if b.stop != nil {
		b.stop()
		b.stop = nil
	}
}

// URL is the broker's base URL.
func (b *Broker) URL() string { return "http://" + b.addr }

// Client is a client for the broker.
func (b *Broker) Client() logbrokerv1connect.LogBrokerServiceClient {
	opts, _ := connectclient.Options(nil)
	return logbrokerv1connect.NewLogBrokerServiceClient(connectclient.HTTPClient(nil), b.URL(), opts...)
}

// As is a context carrying tenant, as the gateway sets it.
func As(tenant string) context.Context {
	return reqctx.MustWith(context.Background(), reqctx.Fields{Tenant: tenant})
}

// Read returns a stream's values from the start, waiting (up to 15 s) for
// the stream to exist and for want distinct values.
func (b *Broker) Read(tenant, stream string, want int) []string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(As(tenant), 15*time.Second)
	defer cancel()
	c := b.Client()
	for {
		_, err := c.DescribeStream(ctx, connect.NewRequest(&logbrokerv1.DescribeStreamRequest{Name: stream}))
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			b.t.Fatalf("stream %s: %v", stream, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	st, err := c.Subscribe(ctx, connect.NewRequest(&logbrokerv1.SubscribeRequest{Stream: stream, Start: logbrokerv1.StartPosition_START_POSITION_EARLIEST}))
	if err != nil {
		b.t.Fatal(err)
	}
	defer st.Close()
	var out []string
	seen := map[string]bool{}
	for len(seen) < want && st.Receive() {
		v := string(st.Msg().Message.Value)
		out = append(out, v)
		seen[v] = true
	}
	if len(seen) < want {
		b.t.Fatalf("got %d distinct of %d values: %v", len(seen), want, st.Err())
	}
	return out
}
