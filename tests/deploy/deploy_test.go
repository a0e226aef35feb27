// Package deploy checks every service's Kubernetes manifests: strict decoding
// into the Kubernetes API types, and container args parsed with the flags the
// service's binary really registers (tools/manifestcheck).
package deploy

import (
	"os"
	"path/filepath"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/orbitplane/orbit/services/certdns/certdns"
	"github.com/orbitplane/orbit/services/collector/collector"
	"github.com/orbitplane/orbit/services/connector/connector"
	"github.com/orbitplane/orbit/services/ctxpublisher/ctxpublisher"
	"github.com/orbitplane/orbit/services/gateway/gateway"
	"github.com/orbitplane/orbit/services/logbroker/logbroker"
	"github.com/orbitplane/orbit/services/platform/platform"
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
	"connector":    connector.Flags,
	"gateway":      gateway.Flags,
	"querybroker":  querybroker.Flags,
	"logbroker":    logbroker.Flags,
	"collector":    collector.Flags,
	"router":       router.Flags,
	"registry":     registry.Flags,
	"satellite":    satellite.Flags,
	"platform":     platform.Flags,
	"ctxpublisher": ctxpublisher.Flags,
	"certdns":      certdns.Flags,
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

// TestOverlays: every overlay under deploy/ refers to bases that exist, and
// its ORBIT_REGION patch (a JSON patch of env/0) hits ORBIT_REGION in every
// workload it reaches.
func TestOverlays(t *testing.T) {
	if os.Getenv("TEST_SRCDIR") != "" {
		t.Skip("walks the source tree; runs under go test (tools/test.sh runs both)")
	}
	overlays, _ := filepath.Glob("../../deploy/*/kustomization.yaml")
	more, _ := filepath.Glob("../../deploy/regions/*/kustomization.yaml")
	overlays = append(overlays, more...)
	if len(overlays) < 4 {
		t.Fatalf("found %d overlays, want hub, spoke and two regions", len(overlays))
	}
	for _, k := range overlays {
		t.Run(filepath.Dir(k), func(t *testing.T) {
			files := workloads(t, filepath.Dir(k))
			if len(files) == 0 {
				t.Fatal("reaches no workload")
			}
			for _, f := range files {
				b, err := os.ReadFile(f)
				if err != nil {
					t.Fatal(err)
				}
				var w struct {
					Kind string `json:"kind"`
					Spec struct {
						Template struct {
							Spec struct {
								Containers []struct {
									Env []struct {
										Name string `json:"name"`
									} `json:"env"`
								} `json:"containers"`
							} `json:"spec"`
						} `json:"template"`
					} `json:"spec"`
				}
				if err := yaml.Unmarshal(b, &w); err != nil {
					t.Fatalf("%s: %v", f, err)
				}
				if w.Kind != "Deployment" && w.Kind != "DaemonSet" {
					continue // StatefulSets (satellites) are not in overlays
				}
				c := w.Spec.Template.Spec.Containers
				if len(c) == 0 || len(c[0].Env) == 0 || c[0].Env[0].Name != "ORBIT_REGION" {
					t.Errorf("%s: the first env var of the first container must be ORBIT_REGION (the overlays patch env/0)", f)
				}
			}
		})
	}
}

// workloads follows a kustomization's resources to the workload files.
func workloads(t *testing.T, dir string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		t.Fatalf("%s: %v", dir, err)
	}
	var k struct {
		Resources []string `json:"resources"`
	}
	if err := yaml.Unmarshal(b, &k); err != nil {
		t.Fatalf("%s: %v", dir, err)
	}
	var out []string
	for _, r := range k.Resources {
		p := filepath.Join(dir, r)
		st, err := os.Stat(p)
		if err != nil {
			t.Fatalf("%s: resource %s: %v", dir, r, err)
		}
		if st.IsDir() {
			out = append(out, workloads(t, p)...)
		} else if filepath.Base(p) != "service.yaml" && filepath.Base(p) != "configmap.yaml" {
			out = append(out, p)
		}
	}
	return out
}
