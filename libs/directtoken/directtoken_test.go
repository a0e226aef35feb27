package directtoken

import (
	"crypto/ed25519"
	"errors"
	"testing"
	"time"
)

func TestVerify(t *testing.T) {
	_, key, _ := ed25519.GenerateKey(nil)
	_, other, _ := ed25519.GenerateKey(nil)
	keys := []ed25519.PublicKey{key.Public().(ed25519.PublicKey)}
	tok, exp, err := Issue(key, "sat-1", "tenant-a", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Until(exp); d > MaxTTL || d < MaxTTL-time.Minute {
		t.Fatalf("a 1 h request expires in %v; want it capped at %v", d, MaxTTL)
	}
	if c, err := Verify(tok, keys, "sat-1", "tenant-a"); err != nil || c.Tenant != "tenant-a" {
		t.Fatalf("valid token: %v %v", c, err)
	}
	// Several accepted keys: the right one is found after a wrong one.
	if _, err := Verify(tok, []ed25519.PublicKey{other.Public().(ed25519.PublicKey), keys[0]}, "sat-1", "tenant-a"); err != nil {
		t.Fatalf("second of two keys: %v", err)
	}
	otherTok, _, _ := Issue(other, "sat-1", "tenant-a", time.Minute)
	for name, c := range map[string]struct{ tok, sat, tenant string }{
		"another satellite": {tok, "sat-2", "tenant-a"},
		"another tenant":    {tok, "sat-1", "tenant-b"},
		"another key":       {otherTok, "sat-1", "tenant-a"},
		"garbage":           {"x.y.z", "sat-1", "tenant-a"},
	} {
		if _, err := Verify(c.tok, keys, c.sat, c.tenant); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
	if _, err := Verify(tok, nil, "sat-1", "tenant-a"); !errors.Is(err, ErrInvalid) {
		t.Errorf("no keys: %v", err)
	}
	if _, _, err := Issue(key, "", "tenant-a", 0); err == nil {
		t.Error("a token without a satellite was issued")
	}
}
