package collector

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/orbitplane/orbit/libs/obslog"
	"github.com/orbitplane/orbit/libs/testing/testrun"
	"github.com/orbitplane/orbit/services/logbroker/logbroker"
	"github.com/orbitplane/orbit/services/logbroker/logbrokertest"
)

const tenant = "t1"

type running struct {
	c    *Collector
	stop func()
}

func startCollector(t *testing.T, cfg Config, stdin *os.File) *running {
	t.Helper()
	cfg.Server.Addr = "127.0.0.1:0"
	cfg.Tenant = tenant
	cfg.PollEvery = 20 * time.Millisecond
	cfg.Host = "test-host"
	deps := Deps{Metrics: prometheus.NewRegistry()}
	if stdin != nil {
		deps.Stdin = stdin
	}
	c, err := New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	return &running{c: c, stop: testrun.Start(t, "collector", c.Run)}
}

func appendLines(t *testing.T, path string, lines ...string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, l := range lines {
		if _, err := f.WriteString(l + "\n"); err != nil {
			t.Fatal(err)
		}
	}
}

func numbered(prefix string, from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, fmt.Sprintf("%s %04d", prefix, i))
	}
	return out
}

// messages maps each published value to the line it carries: a wrapped
// line's message, or the JSON line itself.
func messages(t *testing.T, values []string) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, v := range values {
		if err := obslog.Validate([]byte(v)); err != nil && strings.Contains(v, `"schema"`) {
			t.Fatalf("published line outside the schema (%v): %s", err, v)
		}
		var w struct {
			Message string `json:"message"`
			Event   string `json:"event"`
		}
		if err := json.Unmarshal([]byte(v), &w); err != nil {
			t.Fatalf("published value is not JSON: %s", v)
		}
		if w.Event == "collector.line" {
			out[w.Message]++
		} else {
			out[v]++
		}
	}
	return out
}

func expectOnce(t *testing.T, got map[string]int, want []string) {
	t.Helper()
	for _, l := range want {
		if got[l] != 1 {
			t.Errorf("line %q arrived %d times", l, got[l])
		}
	}
}

// TestFilesRotationAndTruncation: lines of a file that is renamed away and
// re-created, and of one truncated in place, all arrive, each once.
func TestFilesRotationAndTruncation(t *testing.T) {
	b := logbrokertest.Start(t)
	dir := t.TempDir()
	app := filepath.Join(dir, "app.log")
	appendLines(t, app, numbered("before", 0, 120)...)
	startCollector(t, Config{Files: []string{filepath.Join(dir, "*.log")}, StateDir: t.TempDir(), LogBrokerURL: b.URL(), Stream: "logs", BatchLines: 50}, nil)
	b.Read(tenant, "logs", 120)

	// Rotation: rename away (out of the glob), write to the old file a last
	// time, and start a new one.
	if err := os.Rename(app, app+".1"); err != nil {
		t.Fatal(err)
	}
	appendLines(t, app+".1", numbered("late", 0, 10)...)
	appendLines(t, app, numbered("after", 0, 80)...)
	// copytruncate on another file.
	ct := filepath.Join(dir, "ct.log")
	appendLines(t, ct, numbered("ct-first", 0, 30)...)
	b.Read(tenant, "logs", 240)
	if err := os.Truncate(ct, 0); err != nil {
		t.Fatal(err)
	}
	appendLines(t, ct, numbered("ct-second", 0, 5)...)
	appendLines(t, ct, `{"time":"2026-11-24T00:00:00Z","level":"INFO","message":"json passes as is","schema":"orbit.log/v1","service":"ct"}`)

	got := messages(t, b.Read(tenant, "logs", 246))
	for _, set := range [][]string{numbered("before", 0, 120), numbered("late", 0, 10), numbered("after", 0, 80), numbered("ct-first", 0, 30), numbered("ct-second", 0, 5)} {
		expectOnce(t, got, set)
	}
	if got[`{"time":"2026-11-24T00:00:00Z","level":"INFO","message":"json passes as is","schema":"orbit.log/v1","service":"ct"}`] != 1 {
		t.Errorf("the JSON line was changed or lost")
	}
}

// TestBrokerOutageAndRestart: the broker goes away while lines are written
// and the collector restarts in between; once the broker is back every
// line arrives, and positions saved after acks mean nothing is lost.
func TestBrokerOutageAndRestart(t *testing.T) {
	b := logbrokertest.Start(t)
	dir, state := t.TempDir(), t.TempDir()
	app := filepath.Join(dir, "app.log")
	cfg := Config{Files: []string{app}, StateDir: state, LogBrokerURL: b.URL(), Stream: "logs", BatchLines: 20}
	c := startCollector(t, cfg, nil)
	appendLines(t, app, numbered("a", 0, 50)...)
	b.Read(tenant, "logs", 50)

	b.Stop()
	appendLines(t, app, numbered("b", 0, 100)...)
	time.Sleep(300 * time.Millisecond) // the collector tries and holds the lines
	c.stop()
	appendLines(t, app, numbered("c", 0, 100)...)
	startCollector(t, cfg, nil)
	time.Sleep(200 * time.Millisecond)
	b.Start()

	values := b.Read(tenant, "logs", 250)
	got := messages(t, values)
	for _, set := range [][]string{numbered("a", 0, 50), numbered("b", 0, 100), numbered("c", 0, 100)} {
		expectOnce(t, got, set) // retries carry the same dedup IDs
	}
	if len(values) != 250 {
		t.Errorf("%d values for 250 lines", len(values))
	}
}

// TestSocketAndStdin: lines from a Unix socket and stdin go through the
// spool; a line longer than the limit is cut, not dropped.
func TestSocketAndStdin(t *testing.T) {
	b := logbrokertest.Start(t)
	sock := filepath.Join(t.TempDir(), "c.sock")
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	startCollector(t, Config{Socket: sock, Stdin: true, StateDir: t.TempDir(), LogBrokerURL: b.URL(), Stream: "logs", MaxLineBytes: 100}, r)
	var conn net.Conn
	deadline := time.Now().Add(5 * time.Second)
	for conn == nil {
		if conn, err = net.Dial("unix", sock); err != nil {
			if time.Now().After(deadline) {
				t.Fatal(err)
			}
			conn = nil
			time.Sleep(20 * time.Millisecond)
		}
	}
	defer conn.Close()
	long := strings.Repeat("x", 250)
	fmt.Fprintf(conn, "from the socket\n%s\n", long)
	fmt.Fprintf(w, "from stdin\n")
	_ = w.Close()
	got := messages(t, b.Read(tenant, "logs", 5))
	expectOnce(t, got, []string{"from the socket", "from stdin", strings.Repeat("x", 50)})
	if got[strings.Repeat("x", 100)] != 2 { // 250 bytes: 100 + 100 + 50
		t.Fatalf("long line: %v", got)
	}
}

// TestSpoolWaitsWhenFull: a full spool makes its writer wait; shipping a
// segment makes room.
func TestSpoolWaitsWhenFull(t *testing.T) {
	sp, err := openSpool(t.TempDir(), 100, prometheus.NewGauge(prometheus.GaugeOpts{Name: "g"}))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	line := bytes.Repeat([]byte("y"), 39) // 40 bytes with the newline
	for range 2 {
		if err := sp.write(ctx, line); err != nil {
			t.Fatal(err)
		}
	}
	wrote := make(chan error, 1)
	go func() { wrote <- sp.write(ctx, line) }()
	select {
	case err := <-wrote:
		t.Fatalf("third write into a 100-byte spool returned (%v) instead of waiting", err)
	case <-time.After(200 * time.Millisecond):
	}
	// Ship the full segment: seal it, read it to its end, acknowledge.
	sp.seal()
	for _, tl := range sp.tailers() {
		if err := tl.open(nil); err != nil {
			t.Fatal(err)
		}
		lines, err := tl.next(1<<20, 1000)
		if err != nil || len(lines) != 2 {
			t.Fatalf("segment lines %d: %v", len(lines), err)
		}
		tl.acked = lines[len(lines)-1].end
	}
	sp.release()
	select {
	case err := <-wrote:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("the writer still waits after the spool was shipped")
	}
	// A writer waiting when its context ends gives up.
	cctx, cancel := context.WithCancel(ctx)
	go func() { wrote <- sp.write(cctx, append(line, line...)) }()
	time.Sleep(50 * time.Millisecond)
	cancel()
	sp.wake()
	if err := <-wrote; err == nil {
		t.Fatal("a canceled writer wrote")
	}
}

func TestConfigErrors(t *testing.T) {
	for name, cfg := range map[string]Config{
		"no tenant":  {Files: []string{"x"}, StateDir: t.TempDir(), LogBrokerURL: "http://x"},
		"no input":   {Tenant: "t", StateDir: t.TempDir(), LogBrokerURL: "http://x"},
		"line>batch": {Tenant: "t", Files: []string{"x"}, StateDir: t.TempDir(), LogBrokerURL: "http://x", MaxLineBytes: 10, BatchBytes: 5},
	} {
		if _, err := New(cfg, Deps{Metrics: prometheus.NewRegistry()}); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestBatchesCutByBytes: lines that do not fit a batch's bytes wait for the
// next batch; every line arrives once.
func TestBatchesCutByBytes(t *testing.T) {
	b := logbrokertest.Start(t)
	dir := t.TempDir()
	app := filepath.Join(dir, "app.log")
	var lines []string
	for i := range 60 {
		lines = append(lines, fmt.Sprintf("%04d %s", i, strings.Repeat("z", 95)))
	}
	appendLines(t, app, lines...)
	startCollector(t, Config{Files: []string{app}, StateDir: t.TempDir(), LogBrokerURL: b.URL(), Stream: "logs", BatchBytes: 1000, MaxLineBytes: 500}, nil)
	got := messages(t, b.Read(tenant, "logs", 60))
	expectOnce(t, got, lines)
}

// TestRefusedBatchesAreSplitAndRefusedLinesKept: a broker with smaller
// limits than the collector's refuses whole batches (they are halved until
// accepted) and one line outright (it goes to rejected.log, counted, and
// the lines after it still arrive).
func TestRefusedBatchesAreSplitAndRefusedLinesKept(t *testing.T) {
	b := logbrokertest.StartWith(t, logbroker.Config{MaxBatchMessages: 10, MaxMessageBytes: 2000})
	dir, state := t.TempDir(), t.TempDir()
	app := filepath.Join(dir, "app.log")
	lines := numbered("fits", 0, 40)
	huge := "huge " + strings.Repeat("h", 3000)
	appendLines(t, app, append(append(lines[:20:20], huge), lines[20:]...)...)
	r := startCollector(t, Config{Files: []string{app}, StateDir: state, LogBrokerURL: b.URL(), Stream: "logs", BatchLines: 50, MaxLineBytes: 4000}, nil)
	got := messages(t, b.Read(tenant, "logs", 40))
	expectOnce(t, got, lines)
	rejected, err := os.ReadFile(filepath.Join(state, "rejected.log"))
	if err != nil || !strings.Contains(string(rejected), "hhhh") || !strings.Contains(string(rejected), "resource_exhausted") {
		t.Fatalf("rejected.log: %v\n%s", err, rejected)
	}
	if n := testutil.ToFloat64(r.c.m.rejected); n != 1 {
		t.Fatalf("rejected counter %v", n)
	}
}
