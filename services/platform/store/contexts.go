package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/orbitplane/orbit/libs/contextstore"
	contextsv1 "github.com/orbitplane/orbit/proto/orbit/contexts/v1"
)

// Change is one outbox row: a context (or a region) changed.
type Change struct {
	ID        uint64
	Kind, Key string
	At        time.Time
}

// Context is one context as the spokes store it: its etcd key, its value
// (binary protobuf), and its version. Deleted means the key must go.
type Context struct {
	Key     string
	Value   []byte
	Version uint64
	Deleted bool
}

// Head is the newest outbox ID (0 for none).
func (s *Store) Head(ctx context.Context) (uint64, error) {
	var head uint64
	err := s.read(ctx, func(r tx) error {
		var err error
		head, err = readHead(ctx, r)
		return err
	})
	return head, err
}

func readHead(ctx context.Context, r tx) (uint64, error) {
	var h sql.NullInt64
	if err := r.row(ctx, "SELECT max(id) FROM outbox").Scan(&h); err != nil {
		return 0, fmt.Errorf("platform: outbox head: %w", err)
	}
	return uint64(h.Int64), nil
}

// Pending reads, in one transaction, up to limit outbox rows after ID after
// (oldest first) and the current contexts they name: one per distinct
// context (regions are skipped); a context whose row is gone is returned
// Deleted, at the version of its newest change.
func (s *Store) Pending(ctx context.Context, after uint64, limit int) ([]Change, []Context, error) {
	var changes []Change
	var cs []Context
	err := s.read(ctx, func(r tx) error {
		var err error
		if changes, err = readChanges(ctx, r, after, limit); err != nil || len(changes) == 0 {
			return err
		}
		cs, err = contextsFor(ctx, r, changes)
		return err
	})
	return changes, cs, err
}

func readChanges(ctx context.Context, r tx, after uint64, limit int) ([]Change, error) {
	if limit <= 0 || limit > MaxChangesRead {
		limit = MaxChangesRead
	}
	rows, err := r.query(ctx, "SELECT id, kind, key, created_at FROM outbox WHERE id > ? ORDER BY id LIMIT ?", int64(after), limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Change
	for rows.Next() {
		var c Change
		var id, at int64
		if err := rows.Scan(&id, &c.Kind, &c.Key, &at); err != nil {
			return nil, err
		}
		c.ID, c.At = uint64(id), fromMicros(at)
		out = append(out, c)
	}
	return out, rows.Err()
}

// TrimOutbox deletes rows up to and including upto, always keeping the
// newest row so the head (and so versions) never go back.
func (s *Store) TrimOutbox(ctx context.Context, upto uint64) (int64, error) {
	var n int64
	err := s.write(ctx, func(w tx) error {
		head, err := readHead(ctx, w)
		if err != nil {
			return err
		}
		if upto >= head {
			upto = head - 1
		}
		res, err := w.exec(ctx, "DELETE FROM outbox WHERE id <= ?", int64(upto))
		if err != nil {
			return err
		}
		n, _ = res.RowsAffected()
		return nil
	})
	return n, err
}

func contextsFor(ctx context.Context, r tx, changes []Change) ([]Context, error) {
	type ref struct{ kind, key string }
	newest := map[ref]uint64{}
	var order []ref
	for _, c := range changes {
		r := ref{c.Kind, c.Key}
		if _, ok := newest[r]; !ok {
			order = append(order, r)
		}
		newest[r] = max(newest[r], c.ID)
	}
	out := make([]Context, 0, len(order))
	for _, ref := range order {
		c, err := buildOne(ctx, r, ref.kind, ref.key)
		if errors.Is(err, ErrNotFound) {
			c = Context{Key: etcdKey(ref.kind, ref.key), Version: newest[ref], Deleted: true}
		} else if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

func etcdKey(kind, key string) string {
	switch kind {
	case KindTenant:
		return contextstore.TenantPrefix + key
	case KindAPIKey:
		return contextstore.APIKeyPrefix + key
	case KindRegion:
		return contextstore.RegionPrefix + key
	default:
		return contextstore.DeployKeyPrefix + key
	}
}

func buildOne(ctx context.Context, r tx, kind, key string) (Context, error) {
	switch kind {
	case KindTenant:
		t, err := getTenant(ctx, r, key)
		if err != nil {
			return Context{}, err
		}
		return tenantContext(t), nil
	case KindAPIKey:
		k, err := scanAPIKey(r.row(ctx, "SELECT "+apiKeyCols+" FROM api_keys WHERE prefix = ?", key))
		if errors.Is(err, sql.ErrNoRows) {
			return Context{}, ErrNotFound
		}
		if err != nil {
			return Context{}, err
		}
		return apiKeyContext(k), nil
	case KindDeployKey:
		k, err := scanDeployKey(r.row(ctx, "SELECT "+deployKeyCols+" FROM deploy_keys WHERE prefix = ?", key))
		if errors.Is(err, sql.ErrNoRows) {
			return Context{}, ErrNotFound
		}
		if err != nil {
			return Context{}, err
		}
		return deployKeyContext(k), nil
	case KindRegion:
		g, err := scanRegionContext(r.row(ctx, "SELECT "+regionContextCols+" FROM regions WHERE name = ?", key))
		if errors.Is(err, sql.ErrNoRows) {
			return Context{}, ErrNotFound
		}
		return g, err
	}
	return Context{}, fmt.Errorf("platform: unknown outbox kind %q", kind)
}

func marshal(key string, m proto.Message, version uint64) Context {
	v, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		panic(err) // only our own well-formed messages reach here
	}
	return Context{Key: key, Value: v, Version: version}
}

func tenantContext(t Tenant) Context {
	return marshal(contextstore.TenantPrefix+t.ID, &contextsv1.TenantContext{
		TenantId: t.ID, Name: t.Name, MaxConcurrentQueries: t.MaxConcurrentQueries, MaxRequestsPerSecond: t.MaxRequestsPerSecond,
		MaxResultBytes: t.MaxResultBytes, Version: t.Version,
	}, t.Version)
}

func apiKeyContext(k APIKey) Context {
	m := &contextsv1.APIKeyContext{KeyId: k.ID, Prefix: k.Prefix, SecretHash: k.SecretHash, TenantId: k.TenantID, Scopes: k.Scopes,
		Revoked: !k.RevokedAt.IsZero(), Version: k.Version}
	if !k.ExpiresAt.IsZero() {
		m.ExpiresAt = timestamppb.New(k.ExpiresAt)
	}
	return marshal(contextstore.APIKeyPrefix+k.Prefix, m, k.Version)
}

func deployKeyContext(k DeployKey) Context {
	return marshal(contextstore.DeployKeyPrefix+k.Prefix, &contextsv1.DeployKeyContext{KeyId: k.ID, Prefix: k.Prefix, SecretHash: k.SecretHash,
		TenantId: k.TenantID, Labels: k.Labels, Revoked: !k.RevokedAt.IsZero(), Version: k.Version}, k.Version)
}

const regionContextCols = "name, hub, gateway_url, version"

// scanRegionContext reads a region row as the context every region gets
// (its name, whether it is the hub, its gateway: no etcd endpoints).
func scanRegionContext(sc interface{ Scan(...any) error }) (Context, error) {
	var m contextsv1.RegionContext
	var v int64
	if err := sc.Scan(&m.Name, &m.Hub, &m.GatewayUrl, &v); err != nil {
		return Context{}, err
	}
	m.Version = uint64(v)
	return marshal(contextstore.RegionPrefix+m.Name, &m, m.Version), nil
}

// Snapshot builds every context from one consistent read, with the outbox
// head it is current to: what a full reconcile writes.
func (s *Store) Snapshot(ctx context.Context) ([]Context, uint64, error) {
	var out []Context
	var head uint64
	err := s.read(ctx, func(r tx) error {
		var err error
		if head, err = readHead(ctx, r); err != nil {
			return err
		}
		scan := func(query string, build func(interface{ Scan(...any) error }) (Context, error)) error {
			rows, err := r.query(ctx, query)
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
				c, err := build(rows)
				if err != nil {
					return err
				}
				out = append(out, c)
			}
			return rows.Err()
		}
		if err := scan("SELECT "+tenantCols+" FROM tenants", func(sc interface{ Scan(...any) error }) (Context, error) {
			t, err := scanTenant(sc)
			return tenantContext(t), err
		}); err != nil {
			return err
		}
		if err := scan("SELECT "+apiKeyCols+" FROM api_keys", func(sc interface{ Scan(...any) error }) (Context, error) {
			k, err := scanAPIKey(sc)
			return apiKeyContext(k), err
		}); err != nil {
			return err
		}
		if err := scan("SELECT "+deployKeyCols+" FROM deploy_keys", func(sc interface{ Scan(...any) error }) (Context, error) {
			k, err := scanDeployKey(sc)
			return deployKeyContext(k), err
		}); err != nil {
			return err
		}
		return scan("SELECT "+regionContextCols+" FROM regions", scanRegionContext)
	})
	if err != nil {
		return nil, 0, fmt.Errorf("platform: snapshot: %w", err)
	}
	return out, head, nil
}

// IsContextKey reports whether an etcd key is one the publisher owns.
func IsContextKey(key string) bool {
	return strings.HasPrefix(key, contextstore.TenantPrefix) || strings.HasPrefix(key, contextstore.APIKeyPrefix) ||
		strings.HasPrefix(key, contextstore.DeployKeyPrefix) || strings.HasPrefix(key, contextstore.RegionPrefix)
}
