package gateway

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWebHandler(t *testing.T) {
	dir := t.TempDir()
	if _, err := webHandler(dir); err == nil || !strings.Contains(err.Error(), "npm --prefix web") {
		t.Fatalf("a directory without index.html: err %v, want one that says how to build the UI", err)
	}
	must(t, os.MkdirAll(filepath.Join(dir, "assets"), 0o755))
	must(t, os.WriteFile(filepath.Join(dir, "index.html"), []byte("<!doctype html><title>Orbit</title>"), 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "assets", "app-1a2b.js"), []byte("console.log(1)"), 0o644))
	h, err := webHandler(dir)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()

	for _, tc := range []struct {
		method, path string
		status       int
		body, cache  string
		csp          bool
	}{
		{"GET", "/", 200, "<title>Orbit</title>", "no-cache", true},
		{"GET", "/satellites", 200, "<title>Orbit</title>", "no-cache", true}, // a client-side route
		{"GET", "/query/run", 200, "<title>Orbit</title>", "no-cache", true},
		{"GET", "/assets/", 200, "<title>Orbit</title>", "no-cache", true}, // never a listing
		{"GET", "/index.html", 301, "", "", true},                          // net/http redirects it to /
		{"GET", "/assets/app-1a2b.js", 200, "console.log(1)", "immutable", false},
		{"GET", "/assets/gone-0000.js", 404, "", "", false},
		{"GET", "/../../etc/passwd", 400, "", "", true}, // refused, never outside the directory
		{"POST", "/", 404, "", "", false},
		{"POST", "/orbit.platform.v1.PlatformService/ListTenants", 404, "", "", false}, // unimplemented to Connect clients
	} {
		req, _ := http.NewRequest(tc.method, srv.URL+tc.path, nil)
		resp, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("%s %s: status %d, want %d", tc.method, tc.path, resp.StatusCode, tc.status)
			continue
		}
		if tc.body != "" && !strings.Contains(string(body), tc.body) {
			t.Errorf("%s %s: body %q, want %q", tc.method, tc.path, body, tc.body)
		}
		if tc.cache != "" && !strings.Contains(resp.Header.Get("Cache-Control"), tc.cache) {
			t.Errorf("%s %s: Cache-Control %q, want %q", tc.method, tc.path, resp.Header.Get("Cache-Control"), tc.cache)
		}
		if got := resp.Header.Get("Content-Security-Policy") != ""; got != tc.csp {
			t.Errorf("%s %s: CSP set %v, want %v", tc.method, tc.path, got, tc.csp)
		}
		if resp.Header.Get("X-Content-Type-Options") != "nosniff" && resp.StatusCode == 200 {
			t.Errorf("%s %s: no nosniff", tc.method, tc.path)
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
