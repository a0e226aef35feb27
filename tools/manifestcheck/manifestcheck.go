// Package manifestcheck validates a service's Kubernetes manifests (a
// kustomize base under services/<svc>/deploy/): every document decodes
// strictly into the Kubernetes API type its kind names (an unknown or
// misspelled field fails), every workload has probes, resources and a
// security context, and every container's args parse with the flags the
// service's binary really registers.
package manifestcheck

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"
)

// Kustomization is the subset of kustomize's file format Orbit's bases use;
// anything else is rejected so a typo cannot pass silently.
type Kustomization struct {
	APIVersion         string              `json:"apiVersion"`
	Kind               string              `json:"kind"`
	Resources          []string            `json:"resources"`
	Labels             []KustomizeLabels   `json:"labels,omitempty"`
	ConfigMapGenerator []ConfigMapGenerate `json:"configMapGenerator,omitempty"`
	Images             []KustomizeImage    `json:"images,omitempty"`
}

type KustomizeLabels struct {
	Pairs            map[string]string `json:"pairs"`
	IncludeSelectors bool              `json:"includeSelectors,omitempty"`
}

type ConfigMapGenerate struct {
	Name     string   `json:"name"`
	Literals []string `json:"literals,omitempty"`
	Files    []string `json:"files,omitempty"`
}

type KustomizeImage struct {
	Name    string `json:"name"`
	NewName string `json:"newName,omitempty"`
	NewTag  string `json:"newTag,omitempty"`
}

// FlagSetFunc registers a binary's flags on fs, exactly as its main does.
type FlagSetFunc func(fs *flag.FlagSet)

// Check validates the kustomize base in dir. flagsFor maps a container name
// to its binary's flags; a container with no entry is an error.
func Check(dir string, flagsFor map[string]FlagSetFunc) error {
	kb, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		return fmt.Errorf("%s: %w", dir, err)
	}
	var k Kustomization
	if err := yaml.UnmarshalStrict(kb, &k); err != nil {
		return fmt.Errorf("%s/kustomization.yaml: %w", dir, err)
	}
	if k.Kind != "Kustomization" || len(k.Resources) == 0 {
		return fmt.Errorf("%s/kustomization.yaml: want kind Kustomization with resources", dir)
	}
	var errs []error
	workloads := 0
	for _, res := range k.Resources {
		path := filepath.Join(dir, res)
		b, err := os.ReadFile(path)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", path, err))
			continue
		}
		for i, doc := range splitDocs(b) {
			n, err := checkDoc(doc, flagsFor)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s (document %d): %w", path, i+1, err))
			}
			workloads += n
		}
	}
	if workloads == 0 && len(errs) == 0 {
		errs = append(errs, fmt.Errorf("%s: no Deployment or DaemonSet", dir))
	}
	return errors.Join(errs...)
}

func splitDocs(b []byte) [][]byte {
	var docs [][]byte
	for _, d := range bytes.Split(b, []byte("\n---")) {
		if len(bytes.TrimSpace(stripComments(d))) > 0 {
			docs = append(docs, d)
		}
	}
	return docs
}

func stripComments(b []byte) []byte {
	var out []byte
	for _, line := range bytes.Split(b, []byte("\n")) {
		if t := bytes.TrimSpace(line); len(t) > 0 && t[0] != '#' {
			out = append(out, line...)
			out = append(out, '\n')
		}
	}
	return out
}

// checkDoc decodes one document strictly and checks workloads; it returns
// the number of workloads found.
func checkDoc(doc []byte, flagsFor map[string]FlagSetFunc) (int, error) {
	var meta struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	if err := yaml.Unmarshal(doc, &meta); err != nil {
		return 0, err
	}
	var obj any
	switch meta.APIVersion + "/" + meta.Kind {
	case "apps/v1/Deployment":
		obj = new(appsv1.Deployment)
	case "apps/v1/DaemonSet":
		obj = new(appsv1.DaemonSet)
	case "apps/v1/StatefulSet":
		obj = new(appsv1.StatefulSet)
	case "v1/Service":
		obj = new(corev1.Service)
	case "v1/ConfigMap":
		obj = new(corev1.ConfigMap)
	case "v1/ServiceAccount":
		obj = new(corev1.ServiceAccount)
	case "policy/v1/PodDisruptionBudget":
		obj = new(policyv1.PodDisruptionBudget)
	case "rbac.authorization.k8s.io/v1/Role":
		obj = new(rbacv1.Role)
	case "rbac.authorization.k8s.io/v1/RoleBinding":
		obj = new(rbacv1.RoleBinding)
	default:
		return 0, fmt.Errorf("unsupported kind %s %s (add it to manifestcheck)", meta.APIVersion, meta.Kind)
	}
	if err := strictDecode(doc, obj); err != nil {
		return 0, fmt.Errorf("%s: %w", meta.Kind, err)
	}
	var tmpl *corev1.PodTemplateSpec
	switch o := obj.(type) {
	case *appsv1.Deployment:
		tmpl = &o.Spec.Template
	case *appsv1.DaemonSet:
		tmpl = &o.Spec.Template
	case *appsv1.StatefulSet:
		tmpl = &o.Spec.Template
	default:
		return 0, nil
	}
	return 1, checkPod(meta.Kind, tmpl, flagsFor)
}

func strictDecode(doc []byte, into any) error {
	j, err := yaml.YAMLToJSON(doc)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.DisallowUnknownFields()
	if err := dec.Decode(into); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("trailing data")
	}
	return nil
}

// RunAsRootAnnotation on a pod template allows it to run as root; its value
// says why (a node agent reading root-owned files). Capabilities are still
// dropped.
const RunAsRootAnnotation = "orbit.dev/run-as-root"

func checkPod(kind string, tmpl *corev1.PodTemplateSpec, flagsFor map[string]FlagSetFunc) error {
	var errs []error
	pod := &tmpl.Spec
	if why := tmpl.Annotations[RunAsRootAnnotation]; why != "" {
		if pod.SecurityContext == nil || pod.SecurityContext.RunAsUser == nil || *pod.SecurityContext.RunAsUser != 0 {
			errs = append(errs, fmt.Errorf("%s: %s is set: say runAsUser: 0 explicitly", kind, RunAsRootAnnotation))
		}
	} else if pod.SecurityContext == nil || pod.SecurityContext.RunAsNonRoot == nil || !*pod.SecurityContext.RunAsNonRoot {
		errs = append(errs, fmt.Errorf("%s: pod securityContext.runAsNonRoot must be true (or annotate the template %s with the reason)", kind, RunAsRootAnnotation))
	}
	for _, c := range pod.Containers {
		where := fmt.Sprintf("%s container %q", kind, c.Name)
		if c.ReadinessProbe == nil || c.LivenessProbe == nil {
			errs = append(errs, fmt.Errorf("%s: needs readiness and liveness probes", where))
		}
		if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
			errs = append(errs, fmt.Errorf("%s: needs cpu/memory requests and a memory limit", where))
		}
		sc := c.SecurityContext
		if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
			sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
			sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
			errs = append(errs, fmt.Errorf("%s: securityContext must drop ALL capabilities, forbid privilege escalation and use a read-only root filesystem", where))
		}
		reg, ok := flagsFor[c.Name]
		if !ok {
			errs = append(errs, fmt.Errorf("%s: no flag set registered for this binary", where))
			continue
		}
		fs := flag.NewFlagSet(c.Name, flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		reg(fs)
		if err := fs.Parse(c.Args); err != nil {
			errs = append(errs, fmt.Errorf("%s: args %q: %w", where, strings.Join(c.Args, " "), err))
		} else if fs.NArg() > 0 {
			errs = append(errs, fmt.Errorf("%s: unexpected positional args %q", where, fs.Args()))
		}
	}
	return errors.Join(errs...)
}
