package e2e

import (
	"context"
	"testing"
	"time"

	"connectrpc.com/connect"

	logbrokerv1 "github.com/orbitplane/orbit/proto/orbit/logbroker/v1"
)

// TestLogStreamsThroughTheGateway: with an API key a tenant creates a
// stream, publishes and live-tails it through the public gateway; another
// tenant's key reaches none of it, and no key reaches nothing.
func TestLogStreamsThroughTheGateway(t *testing.T) {
	s := newSystem(t, options{})
	a, b := s.logbroker("tenant-a"), s.logbroker("tenant-b")
	ctx := context.Background()
	if _, err := a.CreateStream(ctx, connect.NewRequest(&logbrokerv1.CreateStreamRequest{Config: &logbrokerv1.StreamConfig{Name: "app", Subject: "app.>"}})); err != nil {
		t.Fatal(err)
	}
	tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	// The tail opens before anything is published (headers come first).
	tail, err := a.Subscribe(tctx, connect.NewRequest(&logbrokerv1.SubscribeRequest{Stream: "app", Start: logbrokerv1.StartPosition_START_POSITION_LATEST}))
	if err != nil {
		t.Fatal(err)
	}
	defer tail.Close()
	p, err := a.Publish(ctx, connect.NewRequest(&logbrokerv1.PublishRequest{Stream: "app", Subject: "app.web", Value: []byte(`{"level":"INFO","message":"hello"}`)}))
	if err != nil || p.Msg.Offset != 1 {
		t.Fatalf("publish: %v %v", p, err)
	}
	if !tail.Receive() || string(tail.Msg().Message.Value) != `{"level":"INFO","message":"hello"}` || tail.Msg().Message.Subject != "app.web" {
		t.Fatalf("tail: %v %v", tail.Msg(), tail.Err())
	}

	// Tenant B: the same name is not A's stream.
	if _, err := b.DescribeStream(ctx, connect.NewRequest(&logbrokerv1.DescribeStreamRequest{Name: "app"})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("B describes A's stream: %v", err)
	}
	st, err := b.Subscribe(ctx, connect.NewRequest(&logbrokerv1.SubscribeRequest{Stream: "app", Start: logbrokerv1.StartPosition_START_POSITION_EARLIEST}))
	if err == nil {
		for st.Receive() {
			t.Fatalf("B read %q", st.Msg().Message.Value)
		}
		err = st.Err()
	}
	if connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("B subscribes to A's stream: %v", err)
	}
	if _, err := b.Publish(ctx, connect.NewRequest(&logbrokerv1.PublishRequest{Stream: "app", Subject: "app.web", Value: []byte("x")})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("B publishes into A's stream: %v", err)
	}
	if l, err := b.ListStreams(ctx, connect.NewRequest(&logbrokerv1.ListStreamsRequest{})); err != nil || len(l.Msg.Streams) != 0 {
		t.Fatalf("B lists %v %v", l, err)
	}
	// No key at all.
	if _, err := s.logbroker("nobody").ListStreams(ctx, connect.NewRequest(&logbrokerv1.ListStreamsRequest{})); connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Fatalf("no key: %v", err)
	}
}
