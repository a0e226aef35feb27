package store

import (
	"context"
	"fmt"
	"strings"
)

// migrations are applied in order, each once, in one transaction with its
// row in schema_migrations. Append only: never edit a released migration.
// {{id}} and {{blob}} are the engines' words for an auto-increment key and
// bytes.
var migrations = []string{
	// 1: platform data and the outbox.
	`CREATE TABLE tenants (
		id TEXT PRIMARY KEY,
		name TEXT NOT NULL UNIQUE,
		max_concurrent_queries INTEGER NOT NULL DEFAULT 0,
		max_requests_per_second INTEGER NOT NULL DEFAULT 0,
		max_result_bytes BIGINT NOT NULL DEFAULT 0,
		created_at BIGINT NOT NULL,
		version BIGINT NOT NULL
	);
	CREATE TABLE users (
		id TEXT PRIMARY KEY,
		tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
		email TEXT NOT NULL,
		created_at BIGINT NOT NULL,
		UNIQUE (tenant_id, email)
	);
	CREATE TABLE api_keys (
		id TEXT PRIMARY KEY,
		tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
		prefix TEXT NOT NULL UNIQUE,
		secret_hash {{blob}} NOT NULL,
		scopes TEXT NOT NULL,
		description TEXT NOT NULL DEFAULT '',
		created_at BIGINT NOT NULL,
		expires_at BIGINT NOT NULL DEFAULT 0,
		revoked_at BIGINT NOT NULL DEFAULT 0,
		version BIGINT NOT NULL
	);
	CREATE INDEX api_keys_tenant ON api_keys (tenant_id);
	CREATE TABLE deploy_keys (
		id TEXT PRIMARY KEY,
		tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
		prefix TEXT NOT NULL UNIQUE,
		secret_hash {{blob}} NOT NULL,
		labels TEXT NOT NULL DEFAULT '{}',
		description TEXT NOT NULL DEFAULT '',
		created_at BIGINT NOT NULL,
		revoked_at BIGINT NOT NULL DEFAULT 0,
		version BIGINT NOT NULL
	);
	CREATE INDEX deploy_keys_tenant ON deploy_keys (tenant_id);
	CREATE TABLE regions (
		name TEXT PRIMARY KEY,
		hub BOOLEAN NOT NULL DEFAULT FALSE,
		gateway_url TEXT NOT NULL DEFAULT '',
		etcd_endpoints TEXT NOT NULL,
		created_at BIGINT NOT NULL
	);
	CREATE TABLE outbox (
		id {{id}},
		kind TEXT NOT NULL,
		key TEXT NOT NULL,
		created_at BIGINT NOT NULL
	)`,
	// 2: regions are contexts too (the region picker); version = the outbox
	// ID of their latest change.
	`ALTER TABLE regions ADD COLUMN version BIGINT NOT NULL DEFAULT 0`,
}

func (s *Store) migrate(ctx context.Context) error {
	if _, err := s.db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)`); err != nil {
		return fmt.Errorf("platform: migrations table: %w", err)
	}
	id, blob := "INTEGER PRIMARY KEY AUTOINCREMENT", "BLOB"
	if s.dialect == postgres {
		id, blob = "BIGSERIAL PRIMARY KEY", "BYTEA"
	}
	for i, m := range migrations {
		version := i + 1
		err := s.write(ctx, func(t tx) error {
			var n int
			if err := t.row(ctx, "SELECT count(*) FROM schema_migrations WHERE version = ?", version).Scan(&n); err != nil {
				return err
			}
			if n > 0 {
				return nil
			}
			m = strings.NewReplacer("{{id}}", id, "{{blob}}", blob).Replace(m)
			for _, stmt := range strings.Split(m, ";") {
				if strings.TrimSpace(stmt) == "" {
					continue
				}
				if _, err := t.exec(ctx, stmt); err != nil {
					return err
				}
			}
			_, err := t.exec(ctx, "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)", version, now())
			return err
		})
		if err != nil {
			return fmt.Errorf("platform: migration %d: %w", version, err)
		}
	}
	return nil
}
