package dev_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/orbitplane/orbit/libs/testing/testwait"
	"github.com/orbitplane/orbit/tools/orbit/internal/dev"
	"github.com/orbitplane/orbit/tools/orbitctl/cli"
)

// TestOrbitctlAdmin: orbitctl's admin commands against the whole dev system
// (platform, context publisher, the gateway that relays them): a tenant is
// made, it gets an API key that then works at the gateway, the key is
// revoked and refused, a deploy key is made, regions list with the key and
// their status with the admin token; a wrong token says which flag to fix.
func TestOrbitctlAdmin(t *testing.T) {
	info := startDev(t, 1)
	ctl := func(env map[string]string, args ...string) (string, string, error) {
		var out, errOut bytes.Buffer
		no := false
		full := map[string]string{"ORBIT_ENDPOINT": info.GatewayURL, "ORBIT_ADMIN_TOKEN": info.AdminToken}
		for k, v := range env {
			full[k] = v
		}
		err := cli.Run(context.Background(), args, cli.Env{Stdout: &out, Stderr: &errOut, Getenv: func(k string) string { return full[k] }, Progress: &no})
		return out.String(), errOut.String(), err
	}
	admin := map[string]string{}

	out, _, err := ctl(admin, "tenants", "create", "acme")
	if err != nil || !strings.Contains(out, "created tenant acme") {
		t.Fatalf("tenants create: %v %s", err, out)
	}
	out, _, err = ctl(admin, "tenants", "list", "-o", "yaml")
	var tenants []map[string]any
	if err != nil || yaml.Unmarshal([]byte(out), &tenants) != nil {
		t.Fatalf("tenants list -o yaml: %v\n%s", err, out)
	}
	var acme string
	for _, tn := range tenants {
		if tn["name"] == "acme" {
			acme = tn["id"].(string)
		}
	}
	if acme == "" {
		t.Fatalf("acme not in %v", tenants)
	}

	secret, stderr, err := ctl(admin, "keys", "create", "--tenant", acme, "--scopes", "query,satellites:read", "--description", "ci")
	secret = strings.TrimSpace(secret)
	if err != nil || !strings.HasPrefix(secret, "ok_") || !strings.Contains(stderr, "shown once") {
		t.Fatalf("keys create: %v %q %s", err, secret, stderr)
	}
	withKey := map[string]string{"ORBIT_API_KEY": secret}
	testwait.For(t, "the new key works at the gateway", 10*time.Second, func() bool {
		out, _, err := ctl(withKey, "whoami")
		return err == nil && strings.Contains(out, "acme")
	})
	// --tenant defaults to the API key's tenant.
	out, _, err = ctl(withKey, "keys", "list", "-o", "json")
	if err != nil {
		t.Fatalf("keys list: %v", err)
	}
	var keyID string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var k map[string]any
		if json.Unmarshal([]byte(line), &k) == nil && strings.HasPrefix(secret, "ok_"+k["prefix"].(string)+"_") {
			keyID = k["id"].(string)
		}
	}
	if keyID == "" {
		t.Fatalf("the new key is not in keys list:\n%s", out)
	}
	if out, _, err := ctl(admin, "keys", "revoke", keyID); err != nil || !strings.Contains(out, "revoked") {
		t.Fatalf("keys revoke: %v %s", err, out)
	}
	testwait.For(t, "the revoked key is refused", 10*time.Second, func() bool {
		_, _, err := ctl(withKey, "whoami")
		return err != nil && strings.Contains(err.Error(), "--api-key")
	})

	dk, stderr, err := ctl(admin, "deploy-keys", "create", "--tenant", acme, "--labels", "env=prod,site=eu")
	if err != nil || !strings.HasPrefix(strings.TrimSpace(dk), "odk_") || !strings.Contains(stderr, "--connector-url") {
		t.Fatalf("deploy-keys create: %v %q %s", err, dk, stderr)
	}
	out, _, err = ctl(admin, "deploy-keys", "list", "--tenant", acme, "-o", "csv")
	if err != nil || !strings.Contains(out, "env=prod,site=eu") {
		t.Fatalf("deploy-keys list: %v\n%s", err, out)
	}

	devKey := map[string]string{"ORBIT_API_KEY": info.APIKey}
	out, _, err = ctl(devKey, "regions", "list", "-o", "csv")
	if err != nil || !strings.Contains(out, dev.RegionName+","+info.GatewayURL+",") {
		t.Fatalf("regions list: %v\n%s", err, out)
	}
	testwait.For(t, "regions status in sync", 10*time.Second, func() bool {
		out, _, err = ctl(admin, "regions", "status")
		return err == nil && strings.Contains(out, "in sync")
	})
	testwait.For(t, "satellite names for completion", 30*time.Second, func() bool {
		out, _, _ = ctl(devKey, "__complete", "satellites")
		return strings.Contains(out, "demo-1\n")
	})

	_, _, err = ctl(map[string]string{"ORBIT_ADMIN_TOKEN": strings.Repeat("x", 40)}, "tenants", "list")
	if err == nil || !strings.Contains(err.Error(), "--admin-token") {
		t.Fatalf("a wrong admin token: %v", err)
	}
	// A service that relays no admin API (here the registry) is named as
	// the wrong endpoint.
	_, _, err = ctl(map[string]string{"ORBIT_ENDPOINT": info.Services["registry"]}, "tenants", "list")
	if err == nil || !strings.Contains(err.Error(), "hub's gateway") {
		t.Fatalf("admin command at a gateway without the relay: %v", err)
	}
	_, _, err = ctl(map[string]string{"ORBIT_ADMIN_TOKEN": ""}, "tenants", "list")
	if err == nil || !strings.Contains(err.Error(), "no admin token") {
		t.Fatalf("no admin token: %v", err)
	}
}
