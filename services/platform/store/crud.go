package store

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/mail"
	"slices"
	"strings"
	"time"

	"github.com/orbitplane/orbit/libs/apikey"
)

// Tenant is a customer account.
type Tenant struct {
	ID                   string
	Name                 string
	MaxConcurrentQueries int32
	MaxRequestsPerSecond int32
	MaxResultBytes       int64
	CreatedAt            time.Time
	Version              uint64
}

// User belongs to a tenant.
type User struct {
	ID, TenantID, Email string
	CreatedAt           time.Time
}

// APIKey is an API key's record; the secret itself is never stored.
type APIKey struct {
	ID, TenantID, Prefix string
	SecretHash           []byte
	Scopes               []string
	Description          string
	CreatedAt, ExpiresAt time.Time
	RevokedAt            time.Time
	Version              uint64
}

// DeployKey is a satellite deploy key's record.
type DeployKey struct {
	ID, TenantID, Prefix string
	SecretHash           []byte
	Labels               map[string]string
	Description          string
	CreatedAt, RevokedAt time.Time
	Version              uint64
}

// Region is a spoke (or the hub) the publisher pushes contexts to.
type Region struct {
	Name          string
	Hub           bool
	GatewayURL    string
	EtcdEndpoints []string
	CreatedAt     time.Time
}

func newID(kind string) string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return kind + "_" + hex.EncodeToString(b)
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

func checkName(what, s string, max int) error {
	if strings.TrimSpace(s) == "" {
		return invalid("%s is empty", what)
	}
	if len(s) > max {
		return invalid("%s is %d bytes, more than %d", what, len(s), max)
	}
	return nil
}

// CreateTenant creates a tenant with a new ID.
func (s *Store) CreateTenant(ctx context.Context, t Tenant) (Tenant, error) {
	if err := checkName("tenant name", t.Name, MaxNameLen); err != nil {
		return Tenant{}, err
	}
	if t.MaxConcurrentQueries < 0 || t.MaxRequestsPerSecond < 0 || t.MaxResultBytes < 0 {
		return Tenant{}, invalid("tenant limits must not be negative")
	}
	t.ID, t.CreatedAt = newID("t"), time.Now().UTC().Truncate(time.Microsecond)
	err := s.write(ctx, func(w tx) error {
		v, err := w.outbox(ctx, KindTenant, t.ID)
		if err != nil {
			return err
		}
		t.Version = v
		_, err = w.exec(ctx, `INSERT INTO tenants (id, name, max_concurrent_queries, max_requests_per_second, max_result_bytes, created_at, version)
			VALUES (?, ?, ?, ?, ?, ?, ?)`, t.ID, t.Name, t.MaxConcurrentQueries, t.MaxRequestsPerSecond, t.MaxResultBytes, toMicros(t.CreatedAt), int64(v))
		if isUnique(err) {
			return fmt.Errorf("%w: a tenant named %q", ErrAlreadyExists, t.Name)
		}
		return err
	})
	return t, err
}

const tenantCols = "id, name, max_concurrent_queries, max_requests_per_second, max_result_bytes, created_at, version"

func scanTenant(sc interface{ Scan(...any) error }) (Tenant, error) {
	var t Tenant
	var created, v int64
	err := sc.Scan(&t.ID, &t.Name, &t.MaxConcurrentQueries, &t.MaxRequestsPerSecond, &t.MaxResultBytes, &created, &v)
	t.CreatedAt, t.Version = fromMicros(created), uint64(v)
	return t, err
}

// GetTenant returns one tenant.
func (s *Store) GetTenant(ctx context.Context, id string) (Tenant, error) {
	var t Tenant
	err := s.read(ctx, func(r tx) error {
		var err error
		t, err = getTenant(ctx, r, id)
		return err
	})
	return t, err
}

func getTenant(ctx context.Context, r tx, id string) (Tenant, error) {
	t, err := scanTenant(r.row(ctx, "SELECT "+tenantCols+" FROM tenants WHERE id = ?", id))
	if errors.Is(err, sql.ErrNoRows) {
		return t, fmt.Errorf("%w: tenant %q", ErrNotFound, id)
	}
	return t, err
}

// ListTenants returns every tenant by name.
func (s *Store) ListTenants(ctx context.Context) ([]Tenant, error) {
	var out []Tenant
	err := s.read(ctx, func(r tx) error {
		rows, err := r.query(ctx, "SELECT "+tenantCols+" FROM tenants ORDER BY name")
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			t, err := scanTenant(rows)
			if err != nil {
				return err
			}
			out = append(out, t)
		}
		return rows.Err()
	})
	return out, err
}

// DeleteTenant deletes a tenant with its users and keys; every key's context
// is deleted too (an outbox row each).
func (s *Store) DeleteTenant(ctx context.Context, id string) error {
	return s.write(ctx, func(w tx) error {
		if _, err := getTenant(ctx, w, id); err != nil {
			return err
		}
		for _, table := range []struct{ name, kind string }{{"api_keys", KindAPIKey}, {"deploy_keys", KindDeployKey}} {
			prefixes, err := strings_(ctx, w, "SELECT prefix FROM "+table.name+" WHERE tenant_id = ?", id)
			if err != nil {
				return err
			}
			for _, p := range prefixes {
				if _, err := w.outbox(ctx, table.kind, p); err != nil {
					return err
				}
			}
			if _, err := w.exec(ctx, "DELETE FROM "+table.name+" WHERE tenant_id = ?", id); err != nil {
				return err
			}
		}
		if _, err := w.exec(ctx, "DELETE FROM users WHERE tenant_id = ?", id); err != nil {
			return err
		}
		if _, err := w.outbox(ctx, KindTenant, id); err != nil {
			return err
		}
		_, err := w.exec(ctx, "DELETE FROM tenants WHERE id = ?", id)
		return err
	})
}

func strings_(ctx context.Context, r tx, query string, args ...any) ([]string, error) {
	rows, err := r.query(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// CreateUser adds a user (by e-mail address) to a tenant.
func (s *Store) CreateUser(ctx context.Context, tenantID, email string) (User, error) {
	if _, err := mail.ParseAddress(email); err != nil || len(email) > MaxNameLen*2 {
		return User{}, invalid("%q is not an e-mail address", email)
	}
	u := User{ID: newID("u"), TenantID: tenantID, Email: email, CreatedAt: time.Now().UTC().Truncate(time.Microsecond)}
	err := s.write(ctx, func(w tx) error {
		if _, err := getTenant(ctx, w, tenantID); err != nil {
			return err
		}
		_, err := w.exec(ctx, "INSERT INTO users (id, tenant_id, email, created_at) VALUES (?, ?, ?, ?)", u.ID, u.TenantID, u.Email, toMicros(u.CreatedAt))
		if isUnique(err) {
			return fmt.Errorf("%w: user %q in tenant %q", ErrAlreadyExists, email, tenantID)
		}
		return err
	})
	return u, err
}

// ListUsers lists a tenant's users.
func (s *Store) ListUsers(ctx context.Context, tenantID string) ([]User, error) {
	var out []User
	err := s.read(ctx, func(r tx) error {
		if _, err := getTenant(ctx, r, tenantID); err != nil {
			return err
		}
		rows, err := r.query(ctx, "SELECT id, tenant_id, email, created_at FROM users WHERE tenant_id = ? ORDER BY email", tenantID)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var u User
			var c int64
			if err := rows.Scan(&u.ID, &u.TenantID, &u.Email, &c); err != nil {
				return err
			}
			u.CreatedAt = fromMicros(c)
			out = append(out, u)
		}
		return rows.Err()
	})
	return out, err
}

// CreateAPIKey makes a new API key and returns its record and the secret,
// which is not stored and cannot be shown again.
func (s *Store) CreateAPIKey(ctx context.Context, tenantID string, scopes []string, expires time.Time, description string) (APIKey, string, error) {
	if len(scopes) == 0 {
		scopes = DefaultScopes
	}
	for _, sc := range scopes {
		if !slices.Contains(Scopes, sc) {
			return APIKey{}, "", invalid("unknown scope %q (known: %s)", sc, strings.Join(Scopes, ", "))
		}
	}
	if !expires.IsZero() && !expires.After(time.Now()) {
		return APIKey{}, "", invalid("expiry %s is in the past", expires.Format(time.RFC3339))
	}
	if len(description) > MaxDescriptionLen {
		return APIKey{}, "", invalid("description is longer than %d bytes", MaxDescriptionLen)
	}
	secret := apikey.Generate(apikey.KindAPI)
	prefix, _ := apikey.Prefix(apikey.KindAPI, secret)
	k := APIKey{
		ID: newID("key"), TenantID: tenantID, Prefix: prefix, SecretHash: apikey.Hash(secret), Scopes: slices.Clone(scopes),
		Description: description, CreatedAt: time.Now().UTC().Truncate(time.Microsecond), ExpiresAt: expires.UTC().Truncate(time.Microsecond),
	}
	err := s.write(ctx, func(w tx) error {
		if _, err := getTenant(ctx, w, tenantID); err != nil {
			return err
		}
		v, err := w.outbox(ctx, KindAPIKey, prefix)
		if err != nil {
			return err
		}
		k.Version = v
		_, err = w.exec(ctx, `INSERT INTO api_keys (id, tenant_id, prefix, secret_hash, scopes, description, created_at, expires_at, version)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`, k.ID, k.TenantID, k.Prefix, k.SecretHash, strings.Join(k.Scopes, ","), k.Description,
			toMicros(k.CreatedAt), toMicros(k.ExpiresAt), int64(v))
		return err
	})
	if err != nil {
		return APIKey{}, "", err
	}
	return k, secret, nil
}

const apiKeyCols = "id, tenant_id, prefix, secret_hash, scopes, description, created_at, expires_at, revoked_at, version"

func scanAPIKey(sc interface{ Scan(...any) error }) (APIKey, error) {
	var k APIKey
	var scopes string
	var c, e, r, v int64
	err := sc.Scan(&k.ID, &k.TenantID, &k.Prefix, &k.SecretHash, &scopes, &k.Description, &c, &e, &r, &v)
	if scopes != "" {
		k.Scopes = strings.Split(scopes, ",")
	}
	k.CreatedAt, k.ExpiresAt, k.RevokedAt, k.Version = fromMicros(c), fromMicros(e), fromMicros(r), uint64(v)
	return k, err
}

// ListAPIKeys lists a tenant's API keys (never their secrets).
func (s *Store) ListAPIKeys(ctx context.Context, tenantID string) ([]APIKey, error) {
	var out []APIKey
	err := s.read(ctx, func(r tx) error {
		if _, err := getTenant(ctx, r, tenantID); err != nil {
			return err
		}
		rows, err := r.query(ctx, "SELECT "+apiKeyCols+" FROM api_keys WHERE tenant_id = ? ORDER BY created_at, id", tenantID)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			k, err := scanAPIKey(rows)
			if err != nil {
				return err
			}
			out = append(out, k)
		}
		return rows.Err()
	})
	return out, err
}

// RevokeAPIKey revokes a key by ID; revoking twice is not an error.
func (s *Store) RevokeAPIKey(ctx context.Context, id string) error {
	return s.revoke(ctx, "api_keys", KindAPIKey, id)
}

// RevokeDeployKey revokes a deploy key by ID; revoking twice is not an error.
func (s *Store) RevokeDeployKey(ctx context.Context, id string) error {
	return s.revoke(ctx, "deploy_keys", KindDeployKey, id)
}

func (s *Store) revoke(ctx context.Context, table, kind, id string) error {
	return s.write(ctx, func(w tx) error {
		var prefix string
		var revoked int64
		err := w.row(ctx, "SELECT prefix, revoked_at FROM "+table+" WHERE id = ?", id).Scan(&prefix, &revoked)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("%w: key %q", ErrNotFound, id)
		}
		if err != nil || revoked != 0 {
			return err
		}
		v, err := w.outbox(ctx, kind, prefix)
		if err != nil {
			return err
		}
		_, err = w.exec(ctx, "UPDATE "+table+" SET revoked_at = ?, version = ? WHERE id = ?", now(), int64(v), id)
		return err
	})
}

// CreateDeployKey makes a satellite deploy key; satellites enrolled with it
// get its labels. The secret is returned once.
func (s *Store) CreateDeployKey(ctx context.Context, tenantID string, labels map[string]string, description string) (DeployKey, string, error) {
	if len(labels) > MaxLabels {
		return DeployKey{}, "", invalid("%d labels, more than %d", len(labels), MaxLabels)
	}
	for k, v := range labels {
		if k == "" || len(k) > MaxLabelLen || len(v) > MaxLabelLen {
			return DeployKey{}, "", invalid("label %q: keys must be 1 to %d bytes and values at most %d", k, MaxLabelLen, MaxLabelLen)
		}
	}
	if len(description) > MaxDescriptionLen {
		return DeployKey{}, "", invalid("description is longer than %d bytes", MaxDescriptionLen)
	}
	secret := apikey.Generate(apikey.KindDeploy)
	prefix, _ := apikey.Prefix(apikey.KindDeploy, secret)
	if labels == nil {
		labels = map[string]string{}
	}
	k := DeployKey{ID: newID("dkey"), TenantID: tenantID, Prefix: prefix, SecretHash: apikey.Hash(secret), Labels: labels,
		Description: description, CreatedAt: time.Now().UTC().Truncate(time.Microsecond)}
	lj, _ := json.Marshal(labels)
	err := s.write(ctx, func(w tx) error {
		if _, err := getTenant(ctx, w, tenantID); err != nil {
			return err
		}
		v, err := w.outbox(ctx, KindDeployKey, prefix)
		if err != nil {
			return err
		}
		k.Version = v
		_, err = w.exec(ctx, `INSERT INTO deploy_keys (id, tenant_id, prefix, secret_hash, labels, description, created_at, version)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?)`, k.ID, k.TenantID, k.Prefix, k.SecretHash, string(lj), k.Description, toMicros(k.CreatedAt), int64(v))
		return err
	})
	if err != nil {
		return DeployKey{}, "", err
	}
	return k, secret, nil
}

const deployKeyCols = "id, tenant_id, prefix, secret_hash, labels, description, created_at, revoked_at, version"

func scanDeployKey(sc interface{ Scan(...any) error }) (DeployKey, error) {
	var k DeployKey
	var labels string
	var c, r, v int64
	if err := sc.Scan(&k.ID, &k.TenantID, &k.Prefix, &k.SecretHash, &labels, &k.Description, &c, &r, &v); err != nil {
		return k, err
	}
	k.CreatedAt, k.RevokedAt, k.Version = fromMicros(c), fromMicros(r), uint64(v)
	if err := json.Unmarshal([]byte(labels), &k.Labels); err != nil {
		return k, fmt.Errorf("deploy key %s labels: %w", k.ID, err)
	}
	return k, nil
}

// ListDeployKeys lists a tenant's deploy keys.
func (s *Store) ListDeployKeys(ctx context.Context, tenantID string) ([]DeployKey, error) {
	var out []DeployKey
	err := s.read(ctx, func(r tx) error {
		if _, err := getTenant(ctx, r, tenantID); err != nil {
			return err
		}
		rows, err := r.query(ctx, "SELECT "+deployKeyCols+" FROM deploy_keys WHERE tenant_id = ? ORDER BY created_at, id", tenantID)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			k, err := scanDeployKey(rows)
			if err != nil {
				return err
			}
			out = append(out, k)
		}
		return rows.Err()
	})
	return out, err
}

// PutRegion creates or replaces a region.
func (s *Store) PutRegion(ctx context.Context, r Region) (Region, error) {
	if err := checkName("region name", r.Name, MaxNameLen); err != nil {
		return Region{}, err
	}
	if len(r.EtcdEndpoints) == 0 || len(r.EtcdEndpoints) > MaxEndpoints {
		return Region{}, invalid("region %q needs 1 to %d etcd endpoints", r.Name, MaxEndpoints)
	}
	for _, e := range r.EtcdEndpoints {
		if e == "" || strings.Contains(e, ",") {
			return Region{}, invalid("etcd endpoint %q", e)
		}
	}
	r.CreatedAt = time.Now().UTC().Truncate(time.Microsecond)
	err := s.write(ctx, func(w tx) error {
		v, err := w.outbox(ctx, KindRegion, r.Name)
		if err != nil {
			return err
		}
		var old int64
		err = w.row(ctx, "SELECT created_at FROM regions WHERE name = ?", r.Name).Scan(&old)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			_, err = w.exec(ctx, "INSERT INTO regions (name, hub, gateway_url, etcd_endpoints, created_at, version) VALUES (?, ?, ?, ?, ?, ?)",
				r.Name, r.Hub, r.GatewayURL, strings.Join(r.EtcdEndpoints, ","), toMicros(r.CreatedAt), int64(v))
		case err == nil:
			r.CreatedAt = fromMicros(old)
			_, err = w.exec(ctx, "UPDATE regions SET hub = ?, gateway_url = ?, etcd_endpoints = ?, version = ? WHERE name = ?",
				r.Hub, r.GatewayURL, strings.Join(r.EtcdEndpoints, ","), int64(v), r.Name)
		}
		return err
	})
	return r, err
}

// DeleteRegion removes a region; the publisher stops pushing to it.
func (s *Store) DeleteRegion(ctx context.Context, name string) error {
	return s.write(ctx, func(w tx) error {
		res, err := w.exec(ctx, "DELETE FROM regions WHERE name = ?", name)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("%w: region %q", ErrNotFound, name)
		}
		_, err = w.outbox(ctx, KindRegion, name)
		return err
	})
}

// ListRegions lists every region by name.
func (s *Store) ListRegions(ctx context.Context) ([]Region, error) {
	var out []Region
	err := s.read(ctx, func(r tx) error {
		rows, err := r.query(ctx, "SELECT name, hub, gateway_url, etcd_endpoints, created_at FROM regions ORDER BY name")
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var g Region
			var eps string
			var c int64
			if err := rows.Scan(&g.Name, &g.Hub, &g.GatewayURL, &eps, &c); err != nil {
				return err
			}
			g.EtcdEndpoints, g.CreatedAt = strings.Split(eps, ","), fromMicros(c)
			out = append(out, g)
		}
		return rows.Err()
	})
	return out, err
}
