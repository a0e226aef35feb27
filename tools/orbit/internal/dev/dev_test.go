package dev_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/orbitplane/orbit/libs/connectserver"
	"github.com/orbitplane/orbit/tools/orbit/internal/dev"
)

// echoComponent is a real connectserver with a gRPC health service.
func echoComponent(name string) dev.Component {
	return dev.Component{Name: name, Start: func(ctx context.Context, env dev.Env) (dev.Running, error) {
		s, err := connectserver.New(connectserver.Config{Service: name}, connectserver.Deps{Logger: env.Logger})
		if err != nil {
			return dev.Running{}, err
		}
		if _, err := s.Listen(); err != nil {
			return dev.Running{}, err
		}
		done := make(chan error, 1)
		go func() { done <- s.Run(ctx) }()
		return dev.Running{URL: s.URL(), Done: done}, nil
	}}
}

// sickComponent listens, but every request (its health check included) gets
// 503 Service Unavailable.
func sickComponent(t *testing.T) dev.Component {
	return dev.Component{Name: "sick", Start: func(ctx context.Context, env dev.Env) (dev.Running, error) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "starting", http.StatusServiceUnavailable)
		}))
		t.Cleanup(srv.Close)
		return dev.Running{URL: srv.URL}, nil
	}}
}

func TestStackStartsWritesInfoAndRestartsOnSameData(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	cfg := dev.Config{DataDir: dir, ReadyTimeout: 20 * time.Second}

	st, err := dev.Start(ctx, cfg, []dev.Component{echoComponent("echo")})
	if err != nil {
		t.Fatal(err)
	}
	var info dev.Info
	b, err := os.ReadFile(filepath.Join(dir, dev.InfoFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &info); err != nil {
		t.Fatal(err)
	}
	if info.NATSURL == "" || len(info.EtcdEndpoints) != 1 || info.Services["echo"] == "" {
		t.Fatalf("dev.json incomplete: %s", b)
	}

	// A second stack on the same directory is refused, clearly.
	if _, err := dev.Start(ctx, cfg, nil); !errors.Is(err, dev.ErrLocked) {
		t.Errorf("second start on the same dir: err = %v, want ErrLocked", err)
	}

	// Write data into both engines.
	nc, err := nats.Connect(info.NATSURL)
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "KEEP", Subjects: []string{"keep.>"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "keep.one", []byte("hello")); err != nil {
		t.Fatal(err)
	}
	nc.Close()
	cli, err := clientv3.New(clientv3.Config{Endpoints: info.EtcdEndpoints, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "/keep", "v1"); err != nil {
		t.Fatal(err)
	}
	cli.Close()

	if err := st.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, dev.InfoFile)); !os.IsNotExist(err) {
		t.Error("dev.json left behind after stop")
	}

	// Restart on the same data: both engines still have it.
	st2, err := dev.Start(ctx, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Stop()
	info2 := st2.Info()
	nc2, err := nats.Connect(info2.NATSURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc2.Close()
	js2, _ := jetstream.New(nc2)
	stream, err := js2.Stream(ctx, "KEEP")
	if err != nil {
		t.Fatalf("stream lost across restart: %v", err)
	}
	msg, err := stream.GetLastMsgForSubject(ctx, "keep.one")
	if err != nil || string(msg.Data) != "hello" {
		t.Fatalf("message lost across restart: %v", err)
	}
	cli2, err := clientv3.New(clientv3.Config{Endpoints: info2.EtcdEndpoints, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli2.Close()
	resp, err := cli2.Get(ctx, "/keep")
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v1" {
		t.Fatalf("etcd key lost across restart: %v %v", err, resp)
	}
}

func TestUnhealthyComponentFailsStart(t *testing.T) {
	dir := t.TempDir()
	_, err := dev.Start(context.Background(), dev.Config{DataDir: dir, ReadyTimeout: 500 * time.Millisecond}, []dev.Component{sickComponent(t)})
	if err == nil || !strings.Contains(err.Error(), "sick") {
		t.Fatalf("err = %v, want a health error naming the component", err)
	}
	// Everything was stopped again: the directory can be used at once.
	st, err := dev.Start(context.Background(), dev.Config{DataDir: dir}, nil)
	if err != nil {
		t.Fatalf("restart after failed start: %v", err)
	}
	st.Stop()
}
