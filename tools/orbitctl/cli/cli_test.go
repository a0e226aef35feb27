package cli

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

func run(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := Run(context.Background(), args, Env{Stdout: &out, Stderr: &errOut, Getenv: func(string) string { return "" }})
	return out.String(), errOut.String(), err
}

// Every command the completion knows is one Run knows and the usage lists,
// and each has help with examples.
func TestCompletionCoversEveryCommand(t *testing.T) {
	usageOut, _, err := run(t, "help")
	if err != nil {
		t.Fatal(err)
	}
	// An unknown command is named as such (before any API key check), so
	// the loop below can tell a known command from an unknown one.
	if _, _, err := run(t, "satelites"); err == nil || !strings.Contains(err.Error(), "unknown command") {
		t.Fatalf("a misspelt command: %v", err)
	}
	if _, _, err := run(t, "whoami"); err == nil || !strings.Contains(err.Error(), "no API key") {
		t.Fatalf("whoami without a key: %v", err)
	}
	for _, c := range commands {
		if !strings.Contains(usageOut, "  "+c.name) && c.name != "help" {
			t.Errorf("usage does not list %q", c.name)
		}
		_, _, err := run(t, c.name)
		if err != nil && strings.Contains(err.Error(), "unknown command") {
			t.Errorf("completion offers %q, which Run does not know", c.name)
		}
	}
	for _, args := range [][]string{{"keys", "list", "-h"}, {"deploy-keys", "create", "-h"}, {"tenants", "list", "-h"}, {"regions", "list", "-h"}} {
		_, stderr, _ := run(t, args...)
		if !strings.Contains(stderr, "Examples:") || !strings.Contains(stderr, "Flags:") {
			t.Errorf("%v: help without examples or flags:\n%s", args, stderr)
		}
	}
}

// The bash script completes commands, subcommands and flag values in a
// real bash.
func TestBashCompletion(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash")
	}
	script, _, err := run(t, "completion", "bash")
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "orbitctl.bash")
	if err := os.WriteFile(f, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	complete := func(words ...string) string {
		t.Helper()
		quoted := make([]string, len(words))
		for i, w := range words {
			quoted[i] = "'" + w + "'"
		}
		cmd := exec.Command(bash, "-c", "source "+f+"; COMP_WORDS=("+strings.Join(quoted, " ")+"); COMP_CWORD="+
			strconv.Itoa(len(words)-1)+"; _orbitctl; echo \"${COMPREPLY[*]}\"")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("bash: %v\n%s", err, out)
		}
		return strings.TrimSpace(string(out))
	}
	for _, tc := range []struct {
		words []string
		want  string
	}{
		{[]string{"orbitctl", "sat"}, "satellites"},
		{[]string{"orbitctl", "--endpoint", "http://x", "dep"}, "deploy-keys"},
		{[]string{"orbitctl", "keys", "re"}, "revoke"},
		{[]string{"orbitctl", "query", "--sel"}, "--selector"},
		{[]string{"orbitctl", "query", "-o", "y"}, "yaml"},
		{[]string{"orbitctl", "logs", "tail", "x", "--level", "W"}, "WARN"},
	} {
		if got := complete(tc.words...); got != tc.want {
			t.Errorf("complete %q = %q, want %q", tc.words, got, tc.want)
		}
	}
	if fish, _, _ := run(t, "completion", "fish"); !strings.Contains(fish, "__fish_seen_subcommand_from keys") {
		t.Errorf("fish script lacks keys:\n%s", fish)
	}
	if zsh, _, _ := run(t, "completion", "zsh"); !strings.HasPrefix(zsh, "#compdef orbitctl") {
		t.Errorf("zsh script: %.80s", zsh)
	}
	if _, _, err := run(t, "completion", "powershell"); err == nil {
		t.Error("completion powershell: no error")
	}
}

func TestYAMLOutput(t *testing.T) {
	var buf bytes.Buffer
	w, err := newWriter("yaml", &buf, []string{"name", "n", "at", "raw"})
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 11, 29, 4, 0, 0, 0, time.UTC)
	for _, r := range [][]any{{"a: b", int64(1), at, []byte{1, 2}}, {"x", int64(2), at, nil}} {
		if err := w.row(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.close(); err != nil {
		t.Fatal(err)
	}
	var got []map[string]any
	if err := yaml.Unmarshal(buf.Bytes(), &got); err != nil {
		t.Fatalf("%v\n%s", err, buf.String())
	}
	if len(got) != 2 || got[0]["name"] != "a: b" || got[0]["n"] != float64(1) || got[0]["at"] != "2026-11-29T04:00:00Z" || got[0]["raw"] != "AQI=" || got[1]["raw"] != nil {
		t.Fatalf("yaml rows %v from\n%s", got, buf.String())
	}
	buf.Reset()
	w, _ = newWriter("yaml", &buf, []string{"a"})
	_ = w.close()
	if buf.String() != "[]\n" {
		t.Fatalf("empty yaml %q", buf.String())
	}
	if _, err := newWriter("xml", &buf, nil); err == nil || !strings.Contains(err.Error(), "yaml") {
		t.Fatalf("-o xml: %v", err)
	}
}

func TestProgressBar(t *testing.T) {
	for _, tc := range []struct {
		n, total int
		want     string
	}{
		{0, 3, "[--------------------] 0/3"},
		{2, 4, "[##########----------] 2/4"},
		{3, 3, "[####################] 3/3"},
		{5, 3, "[####################] 5/3"}, // never overflows the bar
	} {
		if got := progressBar(tc.n, tc.total); got != tc.want {
			t.Errorf("progressBar(%d, %d) = %q, want %q", tc.n, tc.total, got, tc.want)
		}
	}
}
