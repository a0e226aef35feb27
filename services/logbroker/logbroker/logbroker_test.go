package logbroker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/orbitplane/orbit/libs/connectclient"
	"github.com/orbitplane/orbit/libs/embednats"
	"github.com/orbitplane/orbit/libs/logstream"
	"github.com/orbitplane/orbit/libs/reqctx"
	"github.com/orbitplane/orbit/libs/testing/testnats"
	"github.com/orbitplane/orbit/libs/testing/testrun"
	logbrokerv1 "github.com/orbitplane/orbit/proto/orbit/logbroker/v1"
	"github.com/orbitplane/orbit/proto/orbit/logbroker/v1/logbrokerv1connect"
)

type fixture struct {
	ns     *server.Server
	svc    *Service
	client logbrokerv1connect.LogBrokerServiceClient
}

func start(t testing.TB, cfg Config) *fixture {
	t.Helper()
	ns := testnats.Start(t)
	return startOn(t, ns, cfg)
}

func startOn(t testing.TB, ns *server.Server, cfg Config) *fixture {
	t.Helper()
	cfg.Server.Addr = "127.0.0.1:0"
	svc, err := New(cfg, Deps{NATS: testnats.Connect(t, ns)})
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Listen(); err != nil {
		t.Fatal(err)
	}
	testrun.Start(t, "logbroker", svc.Run)
	opts, err := connectclient.Options(nil)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{ns: ns, svc: svc, client: logbrokerv1connect.NewLogBrokerServiceClient(connectclient.HTTPClient(nil), svc.URL(), opts...)}
	// Run creates the cursor stream; wait for it.
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := svc.js.Stream(context.Background(), logstream.CursorStream); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("cursor stream not created")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return f
}

func as(tenant string) context.Context {
	return reqctx.MustWith(context.Background(), reqctx.Fields{Tenant: tenant})
}

func (f *fixture) create(t testing.TB, tenant string, c *logbrokerv1.StreamConfig) *logbrokerv1.CreateStreamResponse {
	t.Helper()
	resp, err := f.client.CreateStream(as(tenant), connect.NewRequest(&logbrokerv1.CreateStreamRequest{Config: c}))
	if err != nil {
		t.Fatalf("create %s: %v", c.Name, err)
	}
	return resp.Msg
}

func (f *fixture) publish(t testing.TB, tenant string, r *logbrokerv1.PublishRequest) *logbrokerv1.PublishResponse {
	t.Helper()
	resp, err := f.client.Publish(as(tenant), connect.NewRequest(r))
	if err != nil {
		t.Fatalf("publish: %v", err)
	}
	return resp.Msg
}

// read subscribes and collects messages until stop_offset or n messages.
func (f *fixture) read(t testing.TB, tenant string, r *logbrokerv1.SubscribeRequest, n int) []*logbrokerv1.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(as(tenant), 10*time.Second)
	defer cancel()
	st, err := f.client.Subscribe(ctx, connect.NewRequest(r))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var out []*logbrokerv1.Message
	for (n <= 0 || len(out) < n) && st.Receive() {
		out = append(out, st.Msg().Message)
	}
	if n <= 0 {
		if err := st.Err(); err != nil {
			t.Fatalf("subscribe: %v", err)
		}
	} else if len(out) < n {
		t.Fatalf("got %d of %d messages: %v", len(out), n, st.Err())
	}
	return out
}

func offsets(ms []*logbrokerv1.Message) []uint64 {
	var o []uint64
	for _, m := range ms {
		o = append(o, m.Offset)
	}
	return o
}

func code(err error) connect.Code { return connect.CodeOf(err) }

func TestCreateIsIdempotentAndChecked(t *testing.T) {
	f := start(t, Config{})
	c := &logbrokerv1.StreamConfig{Name: "app", Subject: "app.>", Retention: &logbrokerv1.Retention{MaxMessages: 100}}
	if r := f.create(t, "t1", c); !r.Created || r.Stream.Config.Subject != "app.>" || r.Stream.TenantId != "t1" {
		t.Fatalf("first create: %v", r)
	}
	if r := f.create(t, "t1", c); r.Created {
		t.Fatal("second create with the same config reported created")
	}
	// Same name, another config: refused, not silently kept.
	_, err := f.client.CreateStream(as("t1"), connect.NewRequest(&logbrokerv1.CreateStreamRequest{Config: &logbrokerv1.StreamConfig{Name: "app", Subject: "other.>"}}))
	if code(err) != connect.CodeAlreadyExists {
		t.Fatalf("changed config: %v", err)
	}
	// The same name in another tenant is another stream.
	if r := f.create(t, "t2", c); !r.Created {
		t.Fatal("t2's stream not created")
	}
	for _, bad := range []*logbrokerv1.StreamConfig{
		{Name: "", Subject: "a"},
		{Name: "has.dot", Subject: "a"},
		{Name: "x", Subject: ""},
		{Name: "x", Subject: "a..b"},
		{Name: "x", Subject: "a.>.b"},
		{Name: "x", Subject: "a", Replicas: 9},
		{Name: "x", Subject: "a", Retention: &logbrokerv1.Retention{MaxBytes: -1}},
	} {
		if _, err := f.client.CreateStream(as("t1"), connect.NewRequest(&logbrokerv1.CreateStreamRequest{Config: bad})); code(err) != connect.CodeInvalidArgument {
			t.Errorf("%v: %v", bad, err)
		}
	}
	// Replicas beyond what a single server can hold: a clear error.
	_, err = f.client.CreateStream(as("t1"), connect.NewRequest(&logbrokerv1.CreateStreamRequest{Config: &logbrokerv1.StreamConfig{Name: "r3", Subject: "r3", Replicas: 3}}))
	if err == nil || !strings.Contains(err.Error(), "replicas") {
		t.Fatalf("R3 on one server: %v", err)
	}
	// Overlapping subjects within a tenant.
	_, err = f.client.CreateStream(as("t1"), connect.NewRequest(&logbrokerv1.CreateStreamRequest{Config: &logbrokerv1.StreamConfig{Name: "app2", Subject: "app.x"}}))
	if code(err) != connect.CodeAlreadyExists || !strings.Contains(err.Error(), "overlaps") {
		t.Fatalf("overlap: %v", err)
	}
	l, err := f.client.ListStreams(as("t1"), connect.NewRequest(&logbrokerv1.ListStreamsRequest{}))
	if err != nil || len(l.Msg.Streams) != 1 || l.Msg.Streams[0].Config.Name != "app" {
		t.Fatalf("list: %v %v", l, err)
	}
	if _, err := f.client.DeleteStream(as("t1"), connect.NewRequest(&logbrokerv1.DeleteStreamRequest{Name: "app"})); err != nil {
		t.Fatal(err)
	}
	if _, err := f.client.DescribeStream(as("t1"), connect.NewRequest(&logbrokerv1.DescribeStreamRequest{Name: "app"})); code(err) != connect.CodeNotFound {
		t.Fatalf("deleted stream: %v", err)
	}
	if _, err := f.client.DescribeStream(as("t2"), connect.NewRequest(&logbrokerv1.DescribeStreamRequest{Name: "app"})); err != nil {
		t.Fatalf("t2's stream went with t1's: %v", err)
	}
}

// TestTenantsAreApart: a tenant reaches only its own streams — by name, by
// subject, by cursor — and a call without a tenant is refused.
func TestTenantsAreApart(t *testing.T) {
	f := start(t, Config{})
	f.create(t, "t1", &logbrokerv1.StreamConfig{Name: "secret", Subject: "secret"})
	f.publish(t, "t1", &logbrokerv1.PublishRequest{Stream: "secret", Value: []byte("t1 only")})
	ctx := as("t2")
	if _, err := f.client.DescribeStream(ctx, connect.NewRequest(&logbrokerv1.DescribeStreamRequest{Name: "secret"})); code(err) != connect.CodeNotFound {
		t.Fatalf("describe: %v", err)
	}
	if _, err := f.client.Publish(ctx, connect.NewRequest(&logbrokerv1.PublishRequest{Stream: "secret", Value: []byte("x")})); code(err) != connect.CodeNotFound {
		t.Fatalf("publish: %v", err)
	}
	st, err := f.client.Subscribe(ctx, connect.NewRequest(&logbrokerv1.SubscribeRequest{Stream: "secret", Start: logbrokerv1.StartPosition_START_POSITION_EARLIEST}))
	if err == nil {
		for st.Receive() {
			t.Fatalf("t2 read %q", st.Msg().Message.Value)
		}
		err = st.Err()
	}
	if code(err) != connect.CodeNotFound {
		t.Fatalf("subscribe: %v", err)
	}
	if _, err := f.client.GetCursor(ctx, connect.NewRequest(&logbrokerv1.GetCursorRequest{Stream: "secret", Consumer: "c"})); code(err) != connect.CodeNotFound {
		t.Fatalf("cursor: %v", err)
	}
	if l, err := f.client.ListStreams(ctx, connect.NewRequest(&logbrokerv1.ListStreamsRequest{})); err != nil || len(l.Msg.Streams) != 0 {
		t.Fatalf("t2 lists %v %v", l, err)
	}
	if _, err := f.client.ListStreams(context.Background(), connect.NewRequest(&logbrokerv1.ListStreamsRequest{})); code(err) != connect.CodePermissionDenied {
		t.Fatalf("no tenant: %v", err)
	}
}

func TestPublishSubscribePositions(t *testing.T) {
	f := start(t, Config{})
	f.create(t, "t1", &logbrokerv1.StreamConfig{Name: "app", Subject: "app.*"})
	var mid time.Time
	for i := 1; i <= 10; i++ {
		if i == 6 {
			time.Sleep(20 * time.Millisecond)
			mid = time.Now()
		}
		r := f.publish(t, "t1", &logbrokerv1.PublishRequest{Stream: "app", Subject: "app.web", Key: []byte(fmt.Sprint("k", i%3)), Value: []byte(fmt.Sprint("m", i)), Headers: map[string]string{"level": "info"}})
		if r.Offset != uint64(i) {
			t.Fatalf("publish %d got offset %d", i, r.Offset)
		}
	}
	all := f.read(t, "t1", &logbrokerv1.SubscribeRequest{Stream: "app", Start: logbrokerv1.StartPosition_START_POSITION_EARLIEST, StopOffset: 10}, 0)
	if len(all) != 10 || all[0].Offset != 1 || string(all[9].Value) != "m10" || all[3].Subject != "app.web" || string(all[3].Key) != "k1" || all[3].Headers["level"] != "info" {
		t.Fatalf("earliest: %v", all)
	}
	if o := offsets(f.read(t, "t1", &logbrokerv1.SubscribeRequest{Stream: "app", Start: logbrokerv1.StartPosition_START_POSITION_OFFSET, StartOffset: 4, StopOffset: 6}, 0)); fmt.Sprint(o) != "[4 5 6]" {
		t.Fatalf("offset 4..6: %v", o)
	}
	if o := offsets(f.read(t, "t1", &logbrokerv1.SubscribeRequest{Stream: "app", Start: logbrokerv1.StartPosition_START_POSITION_TIME, StartTime: timestamp(mid), StopOffset: 10}, 0)); fmt.Sprint(o) != "[6 7 8 9 10]" {
		t.Fatalf("from time: %v", o)
	}
	// Latest: only what is published after subscribing (a live tail).
	ctx, cancel := context.WithTimeout(as("t1"), 10*time.Second)
	defer cancel()
	st, err := f.client.Subscribe(ctx, connect.NewRequest(&logbrokerv1.SubscribeRequest{Stream: "app", Start: logbrokerv1.StartPosition_START_POSITION_LATEST}))
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(200 * time.Millisecond)
		f.publish(t, "t1", &logbrokerv1.PublishRequest{Stream: "app", Subject: "app.api", Value: []byte("live")})
	}()
	if !st.Receive() || string(st.Msg().Message.Value) != "live" || st.Msg().Message.Offset != 11 {
		t.Fatalf("live tail: %v %v", st.Msg(), st.Err())
	}
	cancel()
	// Bad input.
	for _, r := range []*logbrokerv1.PublishRequest{
		{Stream: "app", Value: []byte("x")},                                               // wildcard stream needs a subject
		{Stream: "app", Subject: "other.x", Value: []byte("x")},                           // not under app.*
		{Stream: "app", Subject: "app.a.b", Value: []byte("x")},                           // * is one token
		{Stream: "app", Subject: "app.*", Value: []byte("x")},                             // wildcard message subject
		{Stream: "app", Subject: "app.x", Headers: map[string]string{"Nats-Msg-Id": "x"}}, // reserved header
		{Stream: "app", Subject: "app.x", Key: make([]byte, logstream.MaxKeyBytes+1)},
	} {
		if _, err := f.client.Publish(as("t1"), connect.NewRequest(r)); code(err) != connect.CodeInvalidArgument {
			t.Errorf("%v: %v", r, err)
		}
	}
	if _, err := f.client.Publish(as("t1"), connect.NewRequest(&logbrokerv1.PublishRequest{Stream: "nope", Subject: "x"})); code(err) != connect.CodeNotFound {
		t.Errorf("unknown stream: %v", err)
	}
	// A start offset of 0 with START_POSITION_OFFSET is refused, not read
	// from somewhere.
	st, err = f.client.Subscribe(as("t1"), connect.NewRequest(&logbrokerv1.SubscribeRequest{Stream: "app", Start: logbrokerv1.StartPosition_START_POSITION_OFFSET}))
	if err == nil {
		for st.Receive() {
			t.Fatalf("read %v", st.Msg())
		}
		err = st.Err()
	}
	if code(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "start_offset") {
		t.Fatalf("offset 0: %v", err)
	}
}

func TestAckPoliciesAndDedup(t *testing.T) {
	f := start(t, Config{})
	f.create(t, "t1", &logbrokerv1.StreamConfig{Name: "app", Subject: "app"})
	first := f.publish(t, "t1", &logbrokerv1.PublishRequest{Stream: "app", Value: []byte("a"), DedupId: "id-1", AckPolicy: logbrokerv1.AckPolicy_ACK_POLICY_ALL})
	again := f.publish(t, "t1", &logbrokerv1.PublishRequest{Stream: "app", Value: []byte("a"), DedupId: "id-1"})
	if first.Duplicate || !again.Duplicate || again.Offset != first.Offset {
		t.Fatalf("dedup: first %v again %v", first, again)
	}
	// Fire and forget still lands in the stream.
	if r := f.publish(t, "t1", &logbrokerv1.PublishRequest{Stream: "app", Value: []byte("b"), AckPolicy: logbrokerv1.AckPolicy_ACK_POLICY_NONE}); r.Offset != 0 {
		t.Fatalf("ack none returned offset %d", r.Offset)
	}
	got := f.read(t, "t1", &logbrokerv1.SubscribeRequest{Stream: "app", Start: logbrokerv1.StartPosition_START_POSITION_EARLIEST}, 2)
	if string(got[0].Value) != "a" || string(got[1].Value) != "b" || got[1].Offset != 2 {
		t.Fatalf("stored: %v", got)
	}
}

func TestBatchLimitsAndOrder(t *testing.T) {
	f := start(t, Config{MaxBatchMessages: 100, MaxMessageBytes: 1000, MaxBatchBytes: 20000})
	f.create(t, "t1", &logbrokerv1.StreamConfig{Name: "app", Subject: "app"})
	batch := func(n, size int) *logbrokerv1.PublishBatchRequest {
		r := &logbrokerv1.PublishBatchRequest{Stream: "app"}
		for i := range n {
			r.Messages = append(r.Messages, &logbrokerv1.BatchMessage{Value: []byte(fmt.Sprintf("%0*d", size, i)), DedupId: fmt.Sprint("b-", n, "-", i)})
		}
		return r
	}
	resp, err := f.client.PublishBatch(as("t1"), connect.NewRequest(batch(100, 10)))
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range resp.Msg.Results {
		if r.Offset != uint64(i+1) {
			t.Fatalf("result %d offset %d", i, r.Offset)
		}
	}
	// A retried batch is all duplicates.
	resp, err = f.client.PublishBatch(as("t1"), connect.NewRequest(batch(100, 10)))
	if err != nil || !resp.Msg.Results[99].Duplicate || resp.Msg.Results[99].Offset != 100 {
		t.Fatalf("retry: %v %v", resp, err)
	}
	for name, r := range map[string]*logbrokerv1.PublishBatchRequest{
		"101 messages":  batch(101, 1),
		"25 × 900 B":    batch(25, 900),
		"one of 1001 B": batch(1, 1001),
	} {
		if _, err := f.client.PublishBatch(as("t1"), connect.NewRequest(r)); code(err) != connect.CodeResourceExhausted {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := f.client.PublishBatch(as("t1"), connect.NewRequest(&logbrokerv1.PublishBatchRequest{Stream: "app"})); code(err) != connect.CodeInvalidArgument {
		t.Errorf("empty batch: %v", err)
	}
	// An invalid message stores nothing of its batch.
	bad := batch(3, 1)
	bad.Messages[2].Subject = "elsewhere"
	if _, err := f.client.PublishBatch(as("t1"), connect.NewRequest(bad)); code(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "message 2") {
		t.Fatalf("bad batch: %v", err)
	}
	d, _ := f.client.DescribeStream(as("t1"), connect.NewRequest(&logbrokerv1.DescribeStreamRequest{Name: "app"}))
	if d.Msg.Stream.LastOffset != 100 {
		t.Fatalf("last offset %d after the refused batches", d.Msg.Stream.LastOffset)
	}
}

// TestRetentionAndCompaction: both are visible to a subscriber.
func TestRetentionAndCompaction(t *testing.T) {
	f := start(t, Config{})
	f.create(t, "t1", &logbrokerv1.StreamConfig{Name: "capped", Subject: "capped", Retention: &logbrokerv1.Retention{MaxMessages: 10}})
	for i := 1; i <= 25; i++ {
		f.publish(t, "t1", &logbrokerv1.PublishRequest{Stream: "capped", Value: []byte(fmt.Sprint(i))})
	}
	if o := offsets(f.read(t, "t1", &logbrokerv1.SubscribeRequest{Stream: "capped", Start: logbrokerv1.StartPosition_START_POSITION_EARLIEST}, 10)); o[0] != 16 || o[9] != 25 {
		t.Fatalf("max 10 messages kept %v", o)
	}
	// By bytes: the oldest go first.
	f.create(t, "t1", &logbrokerv1.StreamConfig{Name: "sized", Subject: "sized", Retention: &logbrokerv1.Retention{MaxBytes: 4000}})
	for i := 1; i <= 50; i++ {
		f.publish(t, "t1", &logbrokerv1.PublishRequest{Stream: "sized", Value: make([]byte, 200)})
	}
	d, err := f.client.DescribeStream(as("t1"), connect.NewRequest(&logbrokerv1.DescribeStreamRequest{Name: "sized"}))
	if err != nil || d.Msg.Stream.Bytes > 4000 || d.Msg.Stream.LastOffset != 50 || d.Msg.Stream.Messages >= 50 {
		t.Fatalf("max 4000 bytes: %v %v", d, err)
	}
	if o := offsets(f.read(t, "t1", &logbrokerv1.SubscribeRequest{Stream: "sized", Start: logbrokerv1.StartPosition_START_POSITION_EARLIEST, StopOffset: 50}, 0)); o[0] != d.Msg.Stream.FirstOffset || o[0] == 1 {
		t.Fatalf("bytes retention: subscriber starts at %d (first offset %d)", o[0], d.Msg.Stream.FirstOffset)
	}
	f.create(t, "t1", &logbrokerv1.StreamConfig{Name: "aged", Subject: "aged", Retention: &logbrokerv1.Retention{MaxAge: durationpb.New(time.Second)}})
	f.publish(t, "t1", &logbrokerv1.PublishRequest{Stream: "aged", Value: []byte("old")})
	deadline := time.Now().Add(5 * time.Second)
	for {
		d, err := f.client.DescribeStream(as("t1"), connect.NewRequest(&logbrokerv1.DescribeStreamRequest{Name: "aged"}))
		if err != nil {
			t.Fatal(err)
		}
		if d.Msg.Stream.Messages == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a 1 s max age kept the message for 5 s")
		}
		time.Sleep(100 * time.Millisecond)
	}

	f.create(t, "t1", &logbrokerv1.StreamConfig{Name: "state", Subject: "state.*", CompactByKey: true})
	for i, k := range []string{"a", "b", "a", "c", "a", "b"} {
		f.publish(t, "t1", &logbrokerv1.PublishRequest{Stream: "state", Subject: "state.x", Key: []byte(k), Value: []byte(fmt.Sprint(k, i))})
	}
	got := f.read(t, "t1", &logbrokerv1.SubscribeRequest{Stream: "state", Start: logbrokerv1.StartPosition_START_POSITION_EARLIEST, StopOffset: 6}, 0)
	var seen []string
	for _, m := range got {
		seen = append(seen, string(m.Value))
		if m.Subject != "state.x" {
			t.Fatalf("keyed message subject %q", m.Subject)
		}
	}
	if fmt.Sprint(seen) != "[c3 a4 b5]" {
		t.Fatalf("compacted: %v", seen)
	}
	if _, err := f.client.Publish(as("t1"), connect.NewRequest(&logbrokerv1.PublishRequest{Stream: "state", Subject: "state.x", Value: []byte("no key")})); code(err) != connect.CodeInvalidArgument {
		t.Fatalf("keyless in compacted stream: %v", err)
	}
}

// TestPlainNATSPublishersAreCaptured: anything published on the bound
// subject, through the broker or not, is in the stream.
func TestPlainNATSPublishersAreCaptured(t *testing.T) {
	f := start(t, Config{})
	f.create(t, "t1", &logbrokerv1.StreamConfig{Name: "app", Subject: "app.>"})
	nc := testnats.Connect(t, f.ns)
	if err := nc.Publish("lb.t1.app.legacy.service", []byte("plain")); err != nil {
		t.Fatal(err)
	}
	m := f.read(t, "t1", &logbrokerv1.SubscribeRequest{Stream: "app", Start: logbrokerv1.StartPosition_START_POSITION_EARLIEST}, 1)[0]
	if string(m.Value) != "plain" || m.Subject != "app.legacy.service" {
		t.Fatalf("captured %v", m)
	}
}

func TestCursorsAndGroups(t *testing.T) {
	f := start(t, Config{})
	f.create(t, "t1", &logbrokerv1.StreamConfig{Name: "app", Subject: "app"})
	for i := 1; i <= 20; i++ {
		f.publish(t, "t1", &logbrokerv1.PublishRequest{Stream: "app", Value: []byte(fmt.Sprint(i))})
	}
	ctx := as("t1")
	c, err := f.client.GetCursor(ctx, connect.NewRequest(&logbrokerv1.GetCursorRequest{Stream: "app", Consumer: "router"}))
	if err != nil || c.Msg.Found {
		t.Fatalf("fresh cursor: %v %v", c, err)
	}
	// No cursor: from the start.
	if o := offsets(f.read(t, "t1", &logbrokerv1.SubscribeRequest{Stream: "app", Start: logbrokerv1.StartPosition_START_POSITION_CURSOR, Consumer: "router"}, 1)); o[0] != 1 {
		t.Fatalf("no cursor started at %v", o)
	}
	for _, off := range []uint64{5, 12} {
		if _, err := f.client.SetCursor(ctx, connect.NewRequest(&logbrokerv1.SetCursorRequest{Stream: "app", Consumer: "router", Offset: off})); err != nil {
			t.Fatal(err)
		}
	}
	c, err = f.client.GetCursor(ctx, connect.NewRequest(&logbrokerv1.GetCursorRequest{Stream: "app", Consumer: "router"}))
	if err != nil || !c.Msg.Found || c.Msg.Offset != 12 {
		t.Fatalf("cursor: %v %v", c, err)
	}
	if o := offsets(f.read(t, "t1", &logbrokerv1.SubscribeRequest{Stream: "app", Start: logbrokerv1.StartPosition_START_POSITION_CURSOR, Consumer: "router"}, 1)); o[0] != 13 {
		t.Fatalf("resumed at %v, want 13", o)
	}
	// The cursor stream keeps one message per cursor (compacted).
	cs, err := f.svc.js.Stream(context.Background(), logstream.CursorStream)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := cs.Info(context.Background()); err != nil || info.State.Msgs != 1 {
		t.Fatalf("cursor stream holds %v messages: %v", info.State.Msgs, err)
	}

	// Two members of one group share the messages: each offset once.
	f.create(t, "t1", &logbrokerv1.StreamConfig{Name: "jobs", Subject: "jobs"})
	const jobs = 40
	var mu sync.Mutex
	seen := map[uint64]int{}
	per := map[int]int{}
	gctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	for member := range 2 {
		st, err := f.client.Subscribe(gctx, connect.NewRequest(&logbrokerv1.SubscribeRequest{Stream: "jobs", Group: "g", Start: logbrokerv1.StartPosition_START_POSITION_EARLIEST}))
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for st.Receive() {
				mu.Lock()
				seen[st.Msg().Message.Offset]++
				per[member]++
				mu.Unlock()
				time.Sleep(5 * time.Millisecond) // let the other member take some
			}
		}()
	}
	// Both members are subscribed (Subscribe returns once the server set up
	// the consumer); now the work arrives.
	for i := 1; i <= jobs; i++ {
		f.publish(t, "t1", &logbrokerv1.PublishRequest{Stream: "jobs", Value: []byte(fmt.Sprint(i))})
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := len(seen)
		mu.Unlock()
		if n == jobs || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	wg.Wait()
	if len(seen) != jobs {
		t.Fatalf("group saw %d of %d offsets", len(seen), jobs)
	}
	for off, n := range seen {
		if n != 1 {
			t.Errorf("offset %d delivered %d times", off, n)
		}
	}
	if per[0] == 0 || per[1] == 0 {
		t.Errorf("one member took everything: %v", per)
	}
	// Deleting the stream removes its cursors.
	if _, err := f.client.DeleteStream(ctx, connect.NewRequest(&logbrokerv1.DeleteStreamRequest{Name: "app"})); err != nil {
		t.Fatal(err)
	}
	if info, err := cs.Info(context.Background()); err != nil || info.State.Msgs != 0 {
		t.Fatalf("cursors left after delete: %v %v", info.State.Msgs, err)
	}
}

func TestSubscriptionLimit(t *testing.T) {
	f := start(t, Config{MaxSubscriptionsPerTenant: 2})
	f.create(t, "t1", &logbrokerv1.StreamConfig{Name: "app", Subject: "app"})
	ctx, cancel := context.WithCancel(as("t1"))
	defer cancel()
	var open []*connect.ServerStreamForClient[logbrokerv1.SubscribeResponse]
	for range 2 {
		st, err := f.client.Subscribe(ctx, connect.NewRequest(&logbrokerv1.SubscribeRequest{Stream: "app"}))
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, st)
	}
	// The two are registered once the server runs their handlers.
	deadline := time.Now().Add(5 * time.Second)
	for {
		f.svc.mu.Lock()
		n := f.svc.subs["t1"]
		f.svc.mu.Unlock()
		if n == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d subscriptions registered", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	st, err := f.client.Subscribe(ctx, connect.NewRequest(&logbrokerv1.SubscribeRequest{Stream: "app"}))
	if err == nil {
		st.Receive()
		err = st.Err()
	}
	if code(err) != connect.CodeResourceExhausted {
		t.Fatalf("third subscription: %v", err)
	}
	// Another tenant is not affected.
	f.create(t, "t2", &logbrokerv1.StreamConfig{Name: "app", Subject: "app"})
	f.publish(t, "t2", &logbrokerv1.PublishRequest{Stream: "app", Value: []byte("x")})
	f.read(t, "t2", &logbrokerv1.SubscribeRequest{Stream: "app", Start: logbrokerv1.StartPosition_START_POSITION_EARLIEST}, 1)
	for _, s := range open {
		_ = s.Close()
	}
}

// TestJetStreamRestartLosesNothingAcknowledged: publishers keep publishing
// (retrying with their dedup IDs) while the NATS server restarts on the same
// store; every acknowledged message is there afterwards, once.
func TestJetStreamRestartLosesNothingAcknowledged(t *testing.T) {
	dir := t.TempDir()
	ns := startNATS(t, dir, -1)
	f := startOn(t, ns, Config{PublishTimeout: 2 * time.Second})
	f.create(t, "t1", &logbrokerv1.StreamConfig{Name: "app", Subject: "app"})

	var mu sync.Mutex
	acked := map[string]uint64{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("w%d-%d", w, i)
				for { // retry until acknowledged, as a collector does
					r, err := f.client.Publish(as("t1"), connect.NewRequest(&logbrokerv1.PublishRequest{Stream: "app", Value: []byte(id), DedupId: id}))
					if err == nil {
						mu.Lock()
						acked[id] = r.Msg.Offset
						mu.Unlock()
						break
					}
					select {
					case <-stop:
						return
					case <-time.After(50 * time.Millisecond):
					}
				}
			}
		}()
	}
	time.Sleep(500 * time.Millisecond)
	port := ns.Addr().(*net.TCPAddr).Port
	ns.Shutdown()
	ns.WaitForShutdown()
	time.Sleep(300 * time.Millisecond)
	startNATS(t, dir, port)
	time.Sleep(1500 * time.Millisecond)
	close(stop)
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	if len(acked) < 50 {
		t.Fatalf("only %d publishes acknowledged", len(acked))
	}
	d, err := f.client.DescribeStream(as("t1"), connect.NewRequest(&logbrokerv1.DescribeStreamRequest{Name: "app"}))
	if err != nil {
		t.Fatal(err)
	}
	got := f.read(t, "t1", &logbrokerv1.SubscribeRequest{Stream: "app", Start: logbrokerv1.StartPosition_START_POSITION_EARLIEST, StopOffset: d.Msg.Stream.LastOffset}, 0)
	stored := map[string]int{}
	for _, m := range got {
		stored[string(m.Value)]++
	}
	for id, off := range acked {
		if stored[id] != 1 {
			t.Errorf("acknowledged %s (offset %d) stored %d times", id, off, stored[id])
		}
	}
	t.Logf("%d acknowledged, %d stored, across a NATS restart", len(acked), len(got))
}

func timestamp(t time.Time) *timestamppb.Timestamp { return timestamppb.New(t) }

// startNATS runs a NATS server with JetStream on dir; port -1 picks one.
func startNATS(t testing.TB, dir string, port int) *server.Server {
	t.Helper()
	ns, err := embednats.Start(embednats.Config{Port: port, StoreDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	})
	return ns
}

// TestDirectPublisher: logstream.Publisher writes straight to JetStream and
// the broker reads what it wrote as its own: subject, key, headers, dedup,
// compaction; another tenant's publisher finds no such stream.
func TestDirectPublisher(t *testing.T) {
	f := start(t, Config{})
	f.create(t, "t1", &logbrokerv1.StreamConfig{Name: "app", Subject: "app.*"})
	f.create(t, "t1", &logbrokerv1.StreamConfig{Name: "state", Subject: "state", CompactByKey: true})
	js, err := jetstream.New(testnats.Connect(t, f.ns))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	p := logstream.NewPublisher(js, "t1", 0)
	a1, err := p.Publish(ctx, "app", logstream.Message{Subject: "app.web", Key: []byte("k"), Value: []byte("direct"), Headers: map[string]string{"level": "info"}, DedupID: "d1"})
	if err != nil {
		t.Fatal(err)
	}
	a2, err := p.Publish(ctx, "app", logstream.Message{Subject: "app.web", Value: []byte("direct"), DedupID: "d1"})
	if err != nil || !a2.Duplicate || a2.Sequence != a1.Sequence {
		t.Fatalf("dedup: %v %v", a2, err)
	}
	m := f.read(t, "t1", &logbrokerv1.SubscribeRequest{Stream: "app", Start: logbrokerv1.StartPosition_START_POSITION_EARLIEST}, 1)[0]
	if string(m.Value) != "direct" || m.Subject != "app.web" || string(m.Key) != "k" || m.Headers["level"] != "info" || m.Offset != 1 {
		t.Fatalf("read back %v", m)
	}
	for _, k := range []string{"a", "b", "a"} {
		if _, err := p.Publish(ctx, "state", logstream.Message{Key: []byte(k), Value: []byte(k)}); err != nil {
			t.Fatal(err)
		}
	}
	d, err := f.client.DescribeStream(as("t1"), connect.NewRequest(&logbrokerv1.DescribeStreamRequest{Name: "state"}))
	if err != nil || d.Msg.Stream.Messages != 2 {
		t.Fatalf("compacted stream holds %v: %v", d.Msg.GetStream().GetMessages(), err)
	}
	if _, err := p.Publish(ctx, "app", logstream.Message{Subject: "elsewhere", Value: []byte("x")}); !errors.Is(err, logstream.ErrInvalid) {
		t.Fatalf("bad subject: %v", err)
	}
	if _, err := logstream.NewPublisher(js, "t2", 0).Publish(ctx, "app", logstream.Message{Subject: "app.web", Value: []byte("x")}); !errors.Is(err, logstream.ErrNotFound) {
		t.Fatalf("t2 publishing into t1's stream: %v", err)
	}
}
