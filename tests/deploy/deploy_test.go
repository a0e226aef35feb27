// Package deploy checks every service's Kubernetes manifests: strict decoding
// into the Kubernetes API types, and container args parsed with the flags the
// service's binary really registers (tools/manifestcheck).
package deploy

import (
	"os"
	"path/filepath"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/orbitplane/orbit/services/collector/collector"
	"github.com/orbitplane/orbit/services/connector/connector"
	"github.com/orbitplane/orbit/services/gateway/gateway"
	"github.com/orbitplane/orbit/services/logbroker/logbroker"
	"github.com/orbitplane/orbit/services/querybroker/querybroker"
	"github.com/orbitplane/orbit/services/registry/registry"
	"github.com/orbitplane/orbit/services/router/router"
	"github.com/orbitplane/orbit/services/satellite/satellite"
	"github.com/orbitplane/orbit/tools/manifestcheck"
)

// flagSets maps each service (its directory under services/, which is also
// its container name) to the function its main uses to register flags. A
// service with deploy/ manifests but no entry here fails the test.
var flagSets = map[string]manifestcheck.FlagSetFunc{
	"connector":   connector.Flags,
	"gateway":     gateway.Flags,
	"querybroker": querybroker.Flags,
	"logbroker":   logbroker.Flags,
	"collector":   collector.Flags,
	"router":      router.Flags,
	"registry":    registry.Flags,
	"satellite":   satellite.Flags,
}

func TestManifests(t *testing.T) {
	if os.Getenv("TEST_SRCDIR") != "" {
		t.Skip("walks the source tree; runs under go test (tools/test.sh runs both)")
	}
	dirs, err := filepath.Glob("../../services/*/deploy")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, dir := range dirs {
		svc := filepath.Base(filepath.Dir(dir))
		seen[svc] = true
		t.Run(svc, func(t *testing.T) {
			if _, ok := flagSets[svc]; !ok {
				t.Fatalf("services/%s/deploy exists but no flag set is registered in flagSets", svc)
			}
			if err := manifestcheck.Check(dir, flagSets); err != nil {
				t.Fatal(err)
			}
		})
	}
	for svc := range flagSets {
		if !seen[svc] {
			t.Errorf("%s registers flags but has no services/%s/deploy manifests", svc, svc)
		}
	}
	if len(dirs) == 0 {
		t.Log("no services with deploy/ yet; manifestcheck's own tests cover the checker")
	}
}

// TestRouterRulesConfigMap: the rules shipped in the router's ConfigMap
// pass the router's own checks.
func TestRouterRulesConfigMap(t *testing.T) {
	if os.Getenv("TEST_SRCDIR") != "" {
		t.Skip("walks the source tree; runs under go test (tools/test.sh runs both)")
	}
	b, err := os.ReadFile("../../services/router/deploy/configmap.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var cm struct {
		Data map[string]string `json:"data"`
	}
	if err := yaml.Unmarshal(b, &cm); err != nil {
		t.Fatal(err)
	}
	if _, err := router.ParseRules([]byte(cm.Data["rules.yaml"])); err != nil {
		t.Fatalf("configmap rules: %v", err)
	}
}
