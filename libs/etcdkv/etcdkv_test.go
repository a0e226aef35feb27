package etcdkv_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/orbitplane/orbit/libs/etcdkv"
	"github.com/orbitplane/orbit/libs/testing/testetcd"
	contextsv1 "github.com/orbitplane/orbit/proto/orbit/contexts/v1"
)

func TestEtcdKV(t *testing.T) {
	srv, cli := testetcd.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	t.Run("connect checks the endpoint", func(t *testing.T) {
		c, err := etcdkv.Connect(ctx, etcdkv.Config{Endpoints: []string{srv.Endpoint}})
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
		if _, err := etcdkv.Connect(ctx, etcdkv.Config{Endpoints: []string{"http://127.0.0.1:1"}, DialTimeout: 500 * time.Millisecond}); err == nil {
			t.Error("connect to a closed port succeeded")
		}
		if _, err := etcdkv.Connect(ctx, etcdkv.Config{}); err == nil {
			t.Error("connect without endpoints succeeded")
		}
	})

	t.Run("proto round trip", func(t *testing.T) {
		in := &contextsv1.TenantContext{TenantId: "t1", Name: "acme", Version: 3}
		if _, err := etcdkv.PutProto(ctx, cli, "/test/t1", in); err != nil {
			t.Fatal(err)
		}
		out := new(contextsv1.TenantContext)
		if _, err := etcdkv.GetProto(ctx, cli, "/test/t1", out); err != nil {
			t.Fatal(err)
		}
		if out.GetName() != "acme" || out.GetVersion() != 3 {
			t.Errorf("got %v, want name acme version 3", out)
		}
		if _, err := etcdkv.GetProto(ctx, cli, "/test/missing", out); !errors.Is(err, etcdkv.ErrNotFound) {
			t.Errorf("missing key: err = %v, want ErrNotFound", err)
		}
	})

	t.Run("create if absent is atomic", func(t *testing.T) {
		const n = 50
		var wg sync.WaitGroup
		var mu sync.Mutex
		winners := 0
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				created, existing, err := etcdkv.CreateIfAbsent(ctx, cli, "/test/claim", []byte(fmt.Sprint(i)))
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				defer mu.Unlock()
				if created {
					winners++
				} else if len(existing) == 0 {
					t.Error("loser did not see the winner's value")
				}
			}(i)
		}
		wg.Wait()
		if winners != 1 {
			t.Errorf("%d creators won, want exactly 1", winners)
		}
	})

	t.Run("batch beyond one transaction", func(t *testing.T) {
		items := map[string][]byte{}
		for i := 0; i < 3*etcdkv.MaxTxnOps+7; i++ {
			items[fmt.Sprintf("/batch/%04d", i)] = []byte("v")
		}
		if err := etcdkv.PutBatch(ctx, cli, items); err != nil {
			t.Fatal(err)
		}
		resp, err := cli.Get(ctx, "/batch/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		if resp.Count != int64(len(items)) {
			t.Errorf("%d keys written, want %d", resp.Count, len(items))
		}
	})
}
