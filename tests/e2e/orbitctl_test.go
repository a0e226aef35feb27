package e2e

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"regexp"
	"strings"
	"testing"

	"github.com/orbitplane/orbit/tools/orbitctl/cli"
)

func orbitctl(t *testing.T, s *system, tenant string, args ...string) (string, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	no := false
	env := map[string]string{"ORBIT_ENDPOINT": s.gateway.URL(), "ORBIT_API_KEY": s.tenants[tenant].APIKey}
	err := cli.Run(context.Background(), args, cli.Env{Stdout: &out, Stderr: &errOut, Getenv: func(k string) string { return env[k] }, Progress: &no})
	return out.String(), errOut.String(), err
}

func TestOrbitctl(t *testing.T) {
	s := newSystem(t, options{})
	s.startSatellite(satOptions{name: "edge-1", labels: map[string]string{"env": "prod"}})
	s.startSatellite(satOptions{name: "edge-2", labels: map[string]string{"env": "dev"}})

	out, _, err := orbitctl(t, s, "tenant-a", "satellites", "list")
	if err != nil || !strings.Contains(out, "edge-1") || !strings.Contains(out, "HEALTHY") || !strings.HasPrefix(out, "NAME") {
		t.Fatalf("list: %v\n%s", err, out)
	}
	out, _, err = orbitctl(t, s, "tenant-a", "satellites", "list", "--selector", "env=dev", "-o", "json")
	if err != nil || strings.Count(out, "\n") != 1 || !strings.Contains(out, `"name":"edge-2"`) {
		t.Fatalf("list json: %v\n%s", err, out)
	}

	out, _, err = orbitctl(t, s, "tenant-a", "query", "--satellite", "edge-1", "-o", "csv", "SELECT i, 'x' || i::VARCHAR AS s FROM range(3) t(i)")
	if err != nil {
		t.Fatal(err)
	}
	recs, err := csv.NewReader(strings.NewReader(out)).ReadAll()
	if err != nil || len(recs) != 4 || recs[0][1] != "s" || recs[3][0] != "2" || recs[3][1] != "x2" {
		t.Fatalf("csv: %v %q", err, recs)
	}
	out, stderr, err := orbitctl(t, s, "tenant-a", "query", "--selector", "", "-o", "json", "SELECT 1 AS one")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	sats := map[string]bool{}
	for _, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil || m["one"] != float64(1) {
			t.Fatalf("json line %q: %v", l, err)
		}
		sats[m["satellite"].(string)] = true
	}
	if !sats["edge-1"] || !sats["edge-2"] || !strings.Contains(stderr, "2 rows from 2 of 2 satellites") {
		t.Fatalf("fan-out: %v / %s", sats, stderr)
	}
	// --stats: each satellite's line, with its own time for the statement.
	_, stderr, err = orbitctl(t, s, "tenant-a", "query", "--selector", "", "--stats", "-o", "csv", "SELECT 1 AS one")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"edge-1", "edge-2"} {
		if !regexp.MustCompile(`satellite ` + name + `: OK, 1 rows, \d+ B in [0-9.]+[µm]?s \([0-9.]+[µm]?s on the satellite\)`).MatchString(stderr) {
			t.Fatalf("--stats for %s: %s", name, stderr)
		}
	}
	_, stderr, err = orbitctl(t, s, "tenant-a", "query", "--satellite", "edge-1", "--stats", "SELECT 1 AS one")
	if err != nil || !strings.Contains(stderr, "satellite edge-1: OK, 1 rows") {
		t.Fatalf("--stats, one satellite: %v / %s", err, stderr)
	}
	if _, _, err := orbitctl(t, s, "tenant-a", "query", "--satellite", "edge-1", "DELETE FROM logs"); err == nil || !strings.Contains(err.Error(), "only SELECT") {
		t.Fatalf("write SQL: %v", err)
	}
	if _, _, err := orbitctl(t, s, "tenant-a", "query", "SELECT 1"); err == nil || !strings.Contains(err.Error(), "--satellite or --selector") {
		t.Fatalf("no target: %v", err)
	}
	if _, _, err := orbitctl(t, s, "tenant-b", "query", "--satellite", "edge-1", "SELECT 1"); err == nil || !strings.Contains(err.Error(), "no satellite") {
		t.Fatalf("other tenant: %v", err)
	}
	out, _, err = orbitctl(t, s, "tenant-a", "whoami")
	if err != nil || !strings.Contains(out, "tenant-a") {
		t.Fatalf("whoami: %v %s", err, out)
	}
}

// TestOrbitctlStreamsAndLogs: create a stream, publish schema lines and a
// plain line, then read them back with filters, as a user following logs
// would.
func TestOrbitctlStreamsAndLogs(t *testing.T) {
	s := newSystem(t, options{})
	out, _, err := orbitctl(t, s, "tenant-a", "streams", "create", "app", "--subject", "app", "--max-age", "1h")
	if err != nil || !strings.Contains(out, "app") {
		t.Fatalf("create: %v\n%s", err, out)
	}
	lines := []string{
		`{"time":"2026-11-24T00:00:01Z","level":"INFO","message":"served","service":"gateway","trace_id":"aaa"}`,
		`{"time":"2026-11-24T00:00:02Z","level":"ERROR","message":"query failed","service":"querybroker","trace_id":"aaa"}`,
		`{"time":"2026-11-24T00:00:03Z","level":"WARN","message":"slow","service":"satellite","trace_id":"bbb"}`,
		`not json at all`,
	}
	for _, l := range lines {
		if _, _, err := orbitctl(t, s, "tenant-a", "logs", "publish", "app", l); err != nil {
			t.Fatal(err)
		}
	}
	tail := func(args ...string) string {
		t.Helper()
		out, _, err := orbitctl(t, s, "tenant-a", append([]string{"logs", "tail", "app", "--from", "earliest", "--until", "4"}, args...)...)
		if err != nil {
			t.Fatalf("tail %v: %v", args, err)
		}
		return out
	}
	if out := tail(); strings.Count(out, "\n") != 4 || !strings.Contains(out, "ERROR querybroker") || !strings.Contains(out, "not json at all") {
		t.Fatalf("all lines:\n%s", out)
	}
	if out := tail("--level", "warn"); strings.Count(out, "\n") != 2 || strings.Contains(out, "served") {
		t.Fatalf("warn and up:\n%s", out)
	}
	if out := tail("--trace", "aaa", "-o", "json"); strings.Count(out, "\n") != 2 || !strings.Contains(out, `"service":"gateway"`) || !strings.Contains(out, `"service":"querybroker"`) {
		t.Fatalf("one trace:\n%s", out)
	}
	if out := tail("--grep", "json at"); out != "not json at all\n" {
		t.Fatalf("grep:\n%s", out)
	}
	out, _, err = orbitctl(t, s, "tenant-a", "streams", "list", "-o", "json")
	if err != nil || !strings.Contains(out, `"messages":4`) {
		t.Fatalf("list: %v\n%s", err, out)
	}
	// Another tenant sees no such stream.
	if _, _, err := orbitctl(t, s, "tenant-b", "logs", "tail", "app", "--from", "earliest", "--until", "1"); err == nil || !strings.Contains(err.Error(), "not_found") {
		t.Fatalf("tenant-b tail: %v", err)
	}
	if _, _, err := orbitctl(t, s, "tenant-a", "logs", "tail", "app", "--from", "yesterday"); err == nil || !strings.Contains(err.Error(), "--from") {
		t.Fatalf("bad --from: %v", err)
	}
}
