package contextstore

import (
	"context"
	"errors"
	"testing"
	"time"

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
