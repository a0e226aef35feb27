package store_test

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/orbitplane/orbit/libs/apikey"
	"github.com/orbitplane/orbit/libs/contextstore"
	"github.com/orbitplane/orbit/libs/testing/testpg"
	contextsv1 "github.com/orbitplane/orbit/proto/orbit/contexts/v1"
	"github.com/orbitplane/orbit/services/platform/store"
)

// engines runs every store test against SQLite and a real PostgreSQL: the
// same migrations, the same suite.
func engines(t *testing.T, test func(t *testing.T, dsn string)) {
	t.Run("sqlite", func(t *testing.T) {
		test(t, filepath.Join(t.TempDir(), "platform.db"))
	})
	t.Run("postgres", func(t *testing.T) {
		test(t, testpg.Start(t))
	})
}

func open(t *testing.T, dsn string) *store.Store {
	t.Helper()
	s, err := store.Open(context.Background(), dsn)
	if err != nil {
		t.Fatalf("open %s: %v", dsn, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestTenantsAndUsers(t *testing.T) {
	engines(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		s := open(t, dsn)
		a, err := s.CreateTenant(ctx, store.Tenant{Name: "acme", MaxConcurrentQueries: 4})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.CreateTenant(ctx, store.Tenant{Name: "acme"}); !errors.Is(err, store.ErrAlreadyExists) {
			t.Fatalf("second tenant named acme: got %v, want ErrAlreadyExists", err)
		}
		for _, bad := range []store.Tenant{{Name: ""}, {Name: strings.Repeat("x", store.MaxNameLen+1)}, {Name: "neg", MaxResultBytes: -1}} {
			if _, err := s.CreateTenant(ctx, bad); !errors.Is(err, store.ErrInvalid) {
				t.Errorf("CreateTenant(%+v): got %v, want ErrInvalid", bad, err)
			}
		}
		got, err := s.GetTenant(ctx, a.ID)
		if err != nil || got.Name != "acme" || got.MaxConcurrentQueries != 4 || !got.CreatedAt.Equal(a.CreatedAt) {
			t.Fatalf("GetTenant = %+v, %v; want %+v", got, err, a)
		}
		if _, err := s.GetTenant(ctx, "t_nope"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("GetTenant(unknown): %v, want ErrNotFound", err)
		}
		if _, err := s.CreateUser(ctx, a.ID, "ops@acme.example"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.CreateUser(ctx, a.ID, "ops@acme.example"); !errors.Is(err, store.ErrAlreadyExists) {
			t.Fatalf("same user twice: %v", err)
		}
		if _, err := s.CreateUser(ctx, a.ID, "not an address"); !errors.Is(err, store.ErrInvalid) {
			t.Fatalf("bad e-mail: %v", err)
		}
		if _, err := s.CreateUser(ctx, "t_nope", "x@y.example"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("user of unknown tenant: %v", err)
		}
		users, err := s.ListUsers(ctx, a.ID)
		if err != nil || len(users) != 1 || users[0].Email != "ops@acme.example" {
			t.Fatalf("ListUsers = %+v, %v", users, err)
		}
		if _, err := s.CreateTenant(ctx, store.Tenant{Name: "beta"}); err != nil {
			t.Fatal(err)
		}
		list, err := s.ListTenants(ctx)
		if err != nil || len(list) != 2 || list[0].Name != "acme" || list[1].Name != "beta" {
			t.Fatalf("ListTenants = %+v, %v", list, err)
		}
	})
}

func TestAPIKeysAreStoredOnlyAsHashes(t *testing.T) {
	engines(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		s := open(t, dsn)
		ten, _ := s.CreateTenant(ctx, store.Tenant{Name: "acme"})
		k, secret, err := s.CreateAPIKey(ctx, ten.ID, []string{"query"}, time.Now().Add(time.Hour), "ci")
		if err != nil {
			t.Fatal(err)
		}
		prefix, err := apikey.Prefix(apikey.KindAPI, secret)
		if err != nil || prefix != k.Prefix || !apikey.Matches(secret, k.SecretHash) {
			t.Fatalf("secret %q does not match record %+v (%v)", secret, k, err)
		}
		// No column anywhere holds the secret.
		s.Close()
		db := rawDB(t, dsn)
		rows, err := db.Query("SELECT id, tenant_id, prefix, secret_hash, scopes, description FROM api_keys")
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var cols [6][]byte
			if err := rows.Scan(&cols[0], &cols[1], &cols[2], &cols[3], &cols[4], &cols[5]); err != nil {
				t.Fatal(err)
			}
			for _, c := range cols {
				if strings.Contains(string(c), secret[len(apikey.KindAPI)+1+8+1:]) {
					t.Fatalf("the key's secret part is stored in clear: %q", c)
				}
			}
		}
		rows.Close()
		s = open(t, dsn)
		for name, call := range map[string]func() error{
			"unknown scope": func() error { _, _, err := s.CreateAPIKey(ctx, ten.ID, []string{"root"}, time.Time{}, ""); return err },
			"past expiry": func() error {
				_, _, err := s.CreateAPIKey(ctx, ten.ID, nil, time.Now().Add(-time.Minute), "")
				return err
			},
		} {
			if err := call(); !errors.Is(err, store.ErrInvalid) {
				t.Errorf("%s: got %v, want ErrInvalid", name, err)
			}
		}
		if _, _, err := s.CreateAPIKey(ctx, "t_nope", nil, time.Time{}, ""); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("key for unknown tenant: %v", err)
		}
		def, _, err := s.CreateAPIKey(ctx, ten.ID, nil, time.Time{}, "")
		if err != nil || !slices.Equal(def.Scopes, store.DefaultScopes) {
			t.Fatalf("key without scopes got %v (%v), want the defaults %v", def.Scopes, err, store.DefaultScopes)
		}
		if err := s.RevokeAPIKey(ctx, k.ID); err != nil {
			t.Fatal(err)
		}
		if err := s.RevokeAPIKey(ctx, k.ID); err != nil {
			t.Fatalf("revoking twice: %v", err)
		}
		if err := s.RevokeAPIKey(ctx, "key_nope"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("revoke unknown: %v", err)
		}
		keys, err := s.ListAPIKeys(ctx, ten.ID)
		if err != nil || len(keys) != 2 {
			t.Fatalf("ListAPIKeys = %d keys, %v", len(keys), err)
		}
		for _, got := range keys {
			if got.ID == k.ID && (got.RevokedAt.IsZero() || !got.ExpiresAt.Equal(k.ExpiresAt) || got.Description != "ci") {
				t.Fatalf("listed key %+v: want revoked, expiry %v, description ci", got, k.ExpiresAt)
			}
		}
		dk, dsecret, err := s.CreateDeployKey(ctx, ten.ID, map[string]string{"site": "berlin"}, "edge")
		if err != nil || !apikey.Matches(dsecret, dk.SecretHash) || !strings.HasPrefix(dsecret, apikey.KindDeploy+"_") {
			t.Fatalf("CreateDeployKey = %+v, %q, %v", dk, dsecret, err)
		}
		if _, _, err := s.CreateDeployKey(ctx, ten.ID, map[string]string{"": "x"}, ""); !errors.Is(err, store.ErrInvalid) {
			t.Fatalf("empty label key: %v", err)
		}
		if err := s.RevokeDeployKey(ctx, dk.ID); err != nil {
			t.Fatal(err)
		}
		dks, err := s.ListDeployKeys(ctx, ten.ID)
		if err != nil || len(dks) != 1 || dks[0].Labels["site"] != "berlin" || dks[0].RevokedAt.IsZero() {
			t.Fatalf("ListDeployKeys = %+v, %v", dks, err)
		}
	})
}

func rawDB(t *testing.T, dsn string) *sql.DB {
	driver, name := "sqlite", dsn
	if strings.HasPrefix(dsn, "postgres") {
		driver = "pgx"
	}
	db, err := sql.Open(driver, name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// TestEveryMutationIsInTheOutbox: each mutation that changes a context adds
// an outbox row in its own transaction, and the context's version is that
// row's ID, so the publisher can never miss one.
func TestEveryMutationIsInTheOutbox(t *testing.T) {
	engines(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		s := open(t, dsn)
		var after uint64
		// expect checks the outbox rows after the last seen and returns
		// them with the contexts they name (what the publisher reads).
		var cs []store.Context
		expect := func(what string, want ...store.Change) []store.Change {
			t.Helper()
			got, contexts, err := s.Pending(ctx, after, 0)
			cs = contexts
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(want) {
				t.Fatalf("%s: %d outbox rows %+v, want %d", what, len(got), got, len(want))
			}
			for i := range want {
				if got[i].Kind != want[i].Kind || got[i].Key != want[i].Key {
					t.Fatalf("%s: row %d = %s/%s, want %s/%s", what, i, got[i].Kind, got[i].Key, want[i].Kind, want[i].Key)
				}
				if got[i].ID <= after {
					t.Fatalf("%s: outbox ID %d not after %d", what, got[i].ID, after)
				}
				after = got[i].ID
			}
			return got
		}
		ten, _ := s.CreateTenant(ctx, store.Tenant{Name: "acme"})
		rows := expect("create tenant", store.Change{Kind: store.KindTenant, Key: ten.ID})
		if ten.Version != rows[0].ID {
			t.Fatalf("tenant version %d, outbox ID %d", ten.Version, rows[0].ID)
		}
		k, _, _ := s.CreateAPIKey(ctx, ten.ID, nil, time.Time{}, "")
		expect("create API key", store.Change{Kind: store.KindAPIKey, Key: k.Prefix})
		dk, _, _ := s.CreateDeployKey(ctx, ten.ID, nil, "")
		expect("create deploy key", store.Change{Kind: store.KindDeployKey, Key: dk.Prefix})
		if _, err := s.CreateUser(ctx, ten.ID, "a@b.example"); err != nil {
			t.Fatal(err)
		}
		expect("create user (no context)")
		_ = s.RevokeAPIKey(ctx, k.ID)
		rows = expect("revoke", store.Change{Kind: store.KindAPIKey, Key: k.Prefix})
		if len(cs) != 1 {
			t.Fatalf("contexts of the revocation = %+v", cs)
		}
		var kc contextsv1.APIKeyContext
		if err := proto.Unmarshal(cs[0].Value, &kc); err != nil || !kc.Revoked || kc.Version != rows[0].ID || cs[0].Key != contextstore.APIKeyPrefix+k.Prefix {
			t.Fatalf("revoked key context %v at %s (%v); want revoked, version %d", &kc, cs[0].Key, err, rows[0].ID)
		}
		_ = s.RevokeAPIKey(ctx, k.ID)
		expect("revoke again (nothing changes)")
		if _, err := s.PutRegion(ctx, store.Region{Name: "eu-1", GatewayURL: "https://eu-1.example", EtcdEndpoints: []string{"http://127.0.0.1:2379"}}); err != nil {
			t.Fatal(err)
		}
		rows = expect("put region", store.Change{Kind: store.KindRegion, Key: "eu-1"})
		// Every region learns of the others (the UI's region picker): name,
		// hub flag and gateway, never the etcd endpoints.
		var rc contextsv1.RegionContext
		if len(cs) != 1 || cs[0].Key != contextstore.RegionPrefix+"eu-1" || proto.Unmarshal(cs[0].Value, &rc) != nil ||
			rc.GatewayUrl != "https://eu-1.example" || rc.Version != rows[0].ID || cs[0].Version != rows[0].ID {
			t.Fatalf("region context %+v (%v), want eu-1's gateway at version %d", cs, &rc, rows[0].ID)
		}
		if snap, _, err := s.Snapshot(ctx); err != nil || !hasKey(snap, contextstore.RegionPrefix+"eu-1") {
			t.Fatalf("snapshot %v (%v) lacks the region context", snap, err)
		}
		if err := s.DeleteRegion(ctx, "eu-1"); err != nil {
			t.Fatal(err)
		}
		expect("delete region", store.Change{Kind: store.KindRegion, Key: "eu-1"})
		if len(cs) != 1 || !cs[0].Deleted || cs[0].Key != contextstore.RegionPrefix+"eu-1" {
			t.Fatalf("contexts of the region deletion = %+v, want eu-1 deleted", cs)
		}
		if err := s.DeleteTenant(ctx, ten.ID); err != nil {
			t.Fatal(err)
		}
		rows = expect("delete tenant", store.Change{Kind: store.KindAPIKey, Key: k.Prefix}, store.Change{Kind: store.KindDeployKey, Key: dk.Prefix},
			store.Change{Kind: store.KindTenant, Key: ten.ID})
		if len(cs) != 3 {
			t.Fatalf("contexts of the tenant deletion = %+v", cs)
		}
		for i, c := range cs {
			if !c.Deleted || c.Version != rows[i].ID {
				t.Fatalf("context %s after tenant deletion: %+v, want deleted at version %d", c.Key, c, rows[i].ID)
			}
		}
		if err := s.DeleteTenant(ctx, ten.ID); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("delete twice: %v", err)
		}
	})
}

func TestSnapshotAndTrim(t *testing.T) {
	engines(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		s := open(t, dsn)
		for _, name := range []string{"a", "b", "c"} {
			ten, _ := s.CreateTenant(ctx, store.Tenant{Name: name})
			_, _, _ = s.CreateAPIKey(ctx, ten.ID, nil, time.Time{}, "")
			_, _, _ = s.CreateDeployKey(ctx, ten.ID, nil, "")
		}
		cs, head, err := s.Snapshot(ctx)
		if err != nil || len(cs) != 9 {
			t.Fatalf("Snapshot = %d contexts, %v; want 9", len(cs), err)
		}
		for _, c := range cs {
			if c.Version == 0 || c.Version > head || !store.IsContextKey(c.Key) || len(c.Value) == 0 {
				t.Fatalf("snapshot context %+v (head %d)", c, head)
			}
		}
		n, err := s.TrimOutbox(ctx, head+100)
		if err != nil || n != int64(head-1) {
			t.Fatalf("TrimOutbox = %d, %v; want %d rows (all but the newest)", n, err, head-1)
		}
		if h, _ := s.Head(ctx); h != head {
			t.Fatalf("head after trim = %d, want %d (the newest row stays)", h, head)
		}
		ten, _ := s.CreateTenant(ctx, store.Tenant{Name: "d"})
		if ten.Version != head+1 {
			t.Fatalf("version after trim = %d, want %d: versions never go back", ten.Version, head+1)
		}
	})
}

func TestRegionsAndReopen(t *testing.T) {
	engines(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		s := open(t, dsn)
		if _, err := s.PutRegion(ctx, store.Region{Name: "eu-1"}); !errors.Is(err, store.ErrInvalid) {
			t.Fatalf("region without endpoints: %v", err)
		}
		r, err := s.PutRegion(ctx, store.Region{Name: "eu-1", EtcdEndpoints: []string{"http://a:2379"}, GatewayURL: "http://gw"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.PutRegion(ctx, store.Region{Name: "eu-1", EtcdEndpoints: []string{"http://a:2379", "http://b:2379"}}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.PutRegion(ctx, store.Region{Name: "us-1", Hub: true, EtcdEndpoints: []string{"http://c:2379"}}); err != nil {
			t.Fatal(err)
		}
		s.Close()
		s = open(t, dsn) // migrations run again: nothing to do, data kept
		rs, err := s.ListRegions(ctx)
		if err != nil || len(rs) != 2 || len(rs[0].EtcdEndpoints) != 2 || !rs[0].CreatedAt.Equal(r.CreatedAt) || !rs[1].Hub {
			t.Fatalf("ListRegions after reopen = %+v, %v", rs, err)
		}
		if err := s.DeleteRegion(ctx, "eu-1"); err != nil {
			t.Fatal(err)
		}
		if err := s.DeleteRegion(ctx, "eu-1"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("delete region twice: %v", err)
		}
	})
}

func hasKey(cs []store.Context, key string) bool {
	for _, c := range cs {
		if c.Key == key {
			return true
		}
	}
	return false
}
