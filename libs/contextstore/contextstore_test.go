package contextstore

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/orbitplane/orbit/libs/apikey"
	"github.com/orbitplane/orbit/libs/loadingcache"
	"github.com/orbitplane/orbit/libs/testing/testetcd"
	"github.com/orbitplane/orbit/libs/testing/testwait"
	contextsv1 "github.com/orbitplane/orbit/proto/orbit/contexts/v1"
)

func TestAuthAndRevocation(t *testing.T) {
	_, etcd := testetcd.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b := Bootstrap{TenantID: "t1", APIKey: apikey.Generate(apikey.KindAPI), DeployKey: apikey.Generate(apikey.KindDeploy)}
	if err := WriteBootstrap(ctx, etcd, b, "Tenant One"); err != nil {
		t.Fatal(err)
	}
	s := New(etcd, loadingcache.Config{}, nil)
	go s.Run(ctx)
	k, tenant, err := s.AuthAPIKey(ctx, b.APIKey)
	if err != nil || k.TenantId != "t1" || tenant.Name != "Tenant One" {
		t.Fatalf("%v %v %v", k, tenant, err)
	}
	if d, err := s.AuthDeployKey(ctx, b.DeployKey); err != nil || d.TenantId != "t1" {
		t.Fatalf("%v %v", d, err)
	}
	// Wrong secret with a right prefix, wrong kind, garbage: all refused.
	p, _ := apikey.Prefix(apikey.KindAPI, b.APIKey)
	for _, bad := range []string{"ok_" + p + "_" + "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", b.DeployKey, "", "ok_x_y", apikey.Generate(apikey.KindAPI)} {
		if _, _, err := s.AuthAPIKey(ctx, bad); !errors.Is(err, ErrUnauthenticated) {
			t.Errorf("%q: %v", bad, err)
		}
	}
	// Revoke in etcd: refused within the watch latency.
	var rec contextsv1.APIKeyContext
	r, _ := etcd.Get(ctx, APIKeyPrefix+p)
	_ = proto.Unmarshal(r.Kvs[0].Value, &rec)
	rec.Revoked, rec.Version = true, 2
	v, _ := proto.Marshal(&rec)
	if _, err := etcd.Put(ctx, APIKeyPrefix+p, string(v)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	testwait.For(t, "revoked key refused", time.Second, func() bool {
		_, _, err := s.AuthAPIKey(ctx, b.APIKey)
		return errors.Is(err, ErrUnauthenticated)
	})
	t.Logf("revocation applied after %v", time.Since(start))
}

// countingKV counts the reads that reach etcd.
type countingKV struct {
	clientv3.KV
	gets *atomic.Int64
}

func (c countingKV) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	c.gets.Add(1)
	return c.KV.Get(ctx, key, opts...)
}

// TestOneNewKeyOneRead: 10k concurrent requests with a key the gateway has
// never seen (of a tenant in use) cost exactly one etcd read; a flood of
// 10k requests over 100 unknown keys costs 100 reads, then none while the
// not-founds are cached; malformed keys cost none.
func TestOneNewKeyOneRead(t *testing.T) {
	_, etcd := testetcd.Start(t)
	ctx := context.Background()
	b := Bootstrap{TenantID: "t1", APIKey: apikey.Generate(apikey.KindAPI), DeployKey: apikey.Generate(apikey.KindDeploy)}
	if err := WriteBootstrap(ctx, etcd, b, "Tenant One"); err != nil {
		t.Fatal(err)
	}
	var gets atomic.Int64
	etcd.KV = countingKV{etcd.KV, &gets}
	s := New(etcd, loadingcache.Config{}, nil)
	if _, _, err := s.AuthAPIKey(ctx, b.APIKey); err != nil { // the tenant is in use
		t.Fatal(err)
	}
	newKey := apikey.Generate(apikey.KindAPI)
	p, _ := apikey.Prefix(apikey.KindAPI, newKey)
	raw, _ := proto.Marshal(&contextsv1.APIKeyContext{KeyId: "k2", Prefix: p, SecretHash: apikey.Hash(newKey), TenantId: "t1", Version: 2})
	if _, err := etcd.Put(ctx, APIKeyPrefix+p, string(raw)); err != nil {
		t.Fatal(err)
	}
	flood := func(n int, key func(i int) string) (ok int64) {
		var wg sync.WaitGroup
		var okc atomic.Int64
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, _, err := s.AuthAPIKey(ctx, key(i)); err == nil {
					okc.Add(1)
				}
			}()
		}
		wg.Wait()
		return okc.Load()
	}
	gets.Store(0)
	if ok := flood(10_000, func(int) string { return newKey }); ok != 10_000 {
		t.Fatalf("%d of 10000 requests authenticated", ok)
	}
	if n := gets.Load(); n != 1 {
		t.Fatalf("10000 concurrent requests with one new key made %d etcd reads, want exactly 1", n)
	}
	unknown := make([]string, 100)
	for i := range unknown {
		unknown[i] = apikey.Generate(apikey.KindAPI)
	}
	gets.Store(0)
	if ok := flood(10_000, func(i int) string { return unknown[i%100] }); ok != 0 {
		t.Fatalf("%d unknown keys authenticated", ok)
	}
	if n := gets.Load(); n != 100 {
		t.Fatalf("10000 requests over 100 unknown keys made %d etcd reads, want 100", n)
	}
	gets.Store(0)
	flood(10_000, func(i int) string { return unknown[i%100] })
	flood(1000, func(i int) string { return "ok_not-a-key" })
	if n := gets.Load(); n != 0 {
		t.Fatalf("cached not-founds and malformed keys made %d etcd reads, want 0", n)
	}
}
