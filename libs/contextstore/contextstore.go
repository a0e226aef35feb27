// Package contextstore reads the platform contexts (tenants, API keys,
// deploy keys) from the region's etcd (docs/contexts.md), through loading
// caches that an etcd watch invalidates at once, so a revoked key stops
// working everywhere within the watch latency. Services authenticate with it;
// they never call the hub.
package contextstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/orbitplane/orbit/libs/apikey"
	"github.com/orbitplane/orbit/libs/etcdkv"
	"github.com/orbitplane/orbit/libs/loadingcache"
	contextsv1 "github.com/orbitplane/orbit/proto/orbit/contexts/v1"
)

// Key layout.
const (
	Prefix          = "/orbit/contexts/v1/"
	TenantPrefix    = Prefix + "tenants/"
	APIKeyPrefix    = Prefix + "apikeys/"
	DeployKeyPrefix = Prefix + "deploykeys/"
	RegionPrefix    = Prefix + "regions/"
)

// ErrUnauthenticated is returned for a missing, malformed, unknown, revoked
// or expired key; callers show one message for all of them.
var ErrUnauthenticated = errors.New("invalid, revoked or expired key")

// Store reads contexts.
type Store struct {
	etcd    *clientv3.Client
	log     *slog.Logger
	tenants *loadingcache.Cache[string, *contextsv1.TenantContext]
	api     *loadingcache.Cache[string, *contextsv1.APIKeyContext]
	deploy  *loadingcache.Cache[string, *contextsv1.DeployKeyContext]
}

// New returns a store; Run keeps its caches current.
func New(etcd *clientv3.Client, cfg loadingcache.Config, log *slog.Logger) *Store {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Store{etcd: etcd, log: log}
	s.tenants = loadingcache.New(cfg, func(ctx context.Context, id string) (*contextsv1.TenantContext, error) {
		return get[contextsv1.TenantContext](ctx, etcd, TenantPrefix+id)
	})
	s.api = loadingcache.New(cfg, func(ctx context.Context, p string) (*contextsv1.APIKeyContext, error) {
		return get[contextsv1.APIKeyContext](ctx, etcd, APIKeyPrefix+p)
	})
	s.deploy = loadingcache.New(cfg, func(ctx context.Context, p string) (*contextsv1.DeployKeyContext, error) {
		return get[contextsv1.DeployKeyContext](ctx, etcd, DeployKeyPrefix+p)
	})
	return s
}

func get[T any, P interface {
	*T
	proto.Message
}](ctx context.Context, etcd *clientv3.Client, key string) (*T, error) {
	var v T
	if _, err := etcdkv.GetProto(ctx, etcd, key, P(&v)); err != nil {
		if errors.Is(err, etcdkv.ErrNotFound) {
			return nil, loadingcache.ErrNotFound
		}
		return nil, err
	}
	return &v, nil
}

// MaxRegions bounds the region contexts Regions reads.
const MaxRegions = 1000

// Regions lists the region contexts the hub published, by name: one range
// read (a UI asks once per sign-in; not cached).
func (s *Store) Regions(ctx context.Context) ([]*contextsv1.RegionContext, error) {
	resp, err := s.etcd.Get(ctx, RegionPrefix, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend), clientv3.WithLimit(MaxRegions))
	if err != nil {
		return nil, err
	}
	out := make([]*contextsv1.RegionContext, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var r contextsv1.RegionContext
		if err := proto.Unmarshal(kv.Value, &r); err != nil {
			s.log.WarnContext(ctx, "bad region context", "key", string(kv.Key), "error", err)
			continue
		}
		out = append(out, &r)
	}
	return out, nil
}

// Run watches the contexts and invalidates changed entries until ctx ends.
func (s *Store) Run(ctx context.Context) {
	for ctx.Err() == nil {
		for resp := range s.etcd.Watch(clientv3.WithRequireLeader(ctx), Prefix, clientv3.WithPrefix()) {
			for _, ev := range resp.Events {
				s.invalidate(string(ev.Kv.Key))
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func (s *Store) invalidate(key string) {
	switch {
	case strings.HasPrefix(key, TenantPrefix):
		s.tenants.Invalidate(strings.TrimPrefix(key, TenantPrefix))
	case strings.HasPrefix(key, APIKeyPrefix):
		s.api.Invalidate(strings.TrimPrefix(key, APIKeyPrefix))
	case strings.HasPrefix(key, DeployKeyPrefix):
		s.deploy.Invalidate(strings.TrimPrefix(key, DeployKeyPrefix))
	}
}

// Collectors export the three caches' metrics (orbit_cache_*{cache=tenants|
// apikeys|deploykeys}); a service registers them in its registry.
func (s *Store) Collectors() []prometheus.Collector {
	return []prometheus.Collector{s.tenants.Collector("tenants"), s.api.Collector("apikeys"), s.deploy.Collector("deploykeys")}
}

// Tenant returns a tenant's context.
func (s *Store) Tenant(ctx context.Context, id string) (*contextsv1.TenantContext, error) {
	t, err := s.tenants.Get(ctx, id)
	if errors.Is(err, loadingcache.ErrNotFound) {
		return nil, fmt.Errorf("tenant %q: %w", id, ErrUnauthenticated)
	}
	return t, err
}

// AuthAPIKey checks an API key and returns it with its tenant.
func (s *Store) AuthAPIKey(ctx context.Context, key string) (*contextsv1.APIKeyContext, *contextsv1.TenantContext, error) {
	prefix, err := apikey.Prefix(apikey.KindAPI, key)
	if err != nil {
		return nil, nil, ErrUnauthenticated
	}
	k, err := s.api.Get(ctx, prefix)
	if err != nil {
		if errors.Is(err, loadingcache.ErrNotFound) {
			return nil, nil, ErrUnauthenticated
		}
		return nil, nil, err
	}
	if k.Revoked || !apikey.Matches(key, k.SecretHash) || (k.ExpiresAt != nil && time.Now().After(k.ExpiresAt.AsTime())) {
		return nil, nil, ErrUnauthenticated
	}
	t, err := s.Tenant(ctx, k.TenantId)
	if err != nil {
		return nil, nil, err
	}
	return k, t, nil
}

// AuthDeployKey checks a satellite deploy key.
func (s *Store) AuthDeployKey(ctx context.Context, key string) (*contextsv1.DeployKeyContext, error) {
	prefix, err := apikey.Prefix(apikey.KindDeploy, key)
	if err != nil {
		return nil, ErrUnauthenticated
	}
	k, err := s.deploy.Get(ctx, prefix)
	if err != nil {
		if errors.Is(err, loadingcache.ErrNotFound) {
			return nil, ErrUnauthenticated
		}
		return nil, err
	}
	if k.Revoked || !apikey.Matches(key, k.SecretHash) {
		return nil, ErrUnauthenticated
	}
	return k, nil
}

// Bootstrap holds what WriteBootstrap created.
type Bootstrap struct {
	TenantID  string `json:"tenant_id"`
	APIKey    string `json:"api_key"`
	DeployKey string `json:"deploy_key"`
}

// WriteBootstrap writes a tenant with one API key and one deploy key in the
// context format (what the platform's publisher writes in production).
// orbit dev and tests use it; keys are given so restarts keep them.
func WriteBootstrap(ctx context.Context, kv clientv3.KV, b Bootstrap, tenantName string) error {
	apiPrefix, err := apikey.Prefix(apikey.KindAPI, b.APIKey)
	if err != nil {
		return fmt.Errorf("bootstrap API key: %w", err)
	}
	depPrefix, err := apikey.Prefix(apikey.KindDeploy, b.DeployKey)
	if err != nil {
		return fmt.Errorf("bootstrap deploy key: %w", err)
	}
	items := map[string]proto.Message{
		TenantPrefix + b.TenantID: &contextsv1.TenantContext{TenantId: b.TenantID, Name: tenantName, Version: 1},
		APIKeyPrefix + apiPrefix: &contextsv1.APIKeyContext{
			KeyId: "key-" + apiPrefix, Prefix: apiPrefix, SecretHash: apikey.Hash(b.APIKey), TenantId: b.TenantID,
			Scopes: []string{"query", "satellites:read", "satellites:write", "logs:read", "logs:write"}, Version: 1,
		},
		DeployKeyPrefix + depPrefix: &contextsv1.DeployKeyContext{
			KeyId: "dkey-" + depPrefix, Prefix: depPrefix, SecretHash: apikey.Hash(b.DeployKey), TenantId: b.TenantID, Version: 1,
		},
	}
	raw := map[string][]byte{}
	for k, m := range items {
		v, err := proto.Marshal(m)
		if err != nil {
			return err
		}
		raw[k] = v
	}
	return etcdkv.PutBatch(ctx, kv, raw)
}
