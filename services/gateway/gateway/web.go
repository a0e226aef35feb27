package gateway

import (
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path"
	"strings"
)

// webCSP is the web UI's Content-Security-Policy: its own scripts and styles
// only; connections to this gateway, to other regions' gateways and to
// satellites over HTTPS (direct mode).
const webCSP = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; " +
	"connect-src 'self' https: http:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"

// webHandler serves the built web UI (web/dist) at "/". A path that names no
// file and has no extension is a client-side route and gets index.html;
// hashed assets under /assets/ are cached for good, index.html never.
func webHandler(dir string) (http.Handler, error) {
	root := os.DirFS(dir)
	if _, err := fs.Stat(root, "index.html"); err != nil {
		return nil, fmt.Errorf("gateway: --web-dir %s has no index.html (build the UI: npm --prefix web ci && npm --prefix web run build): %w", dir, err)
	}
	files := http.FileServerFS(root)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			// Not a file: 404, as without a UI, so a call to a procedure
			// this gateway does not serve stays "unimplemented" to
			// Connect and gRPC clients.
			http.NotFound(w, r)
			return
		}
		h := w.Header()
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		name := strings.TrimPrefix(path.Clean("/"+r.URL.Path), "/")
		if name == "" {
			name = "index.html"
		}
		info, err := fs.Stat(root, name)
		switch {
		case errors.Is(err, fs.ErrNotExist) && path.Ext(name) != "":
			http.NotFound(w, r)
			return
		case err != nil || info.IsDir():
			name = "index.html" // a route of the single-page app (directories are never listed)
		}
		if name == "index.html" {
			h.Set("Cache-Control", "no-cache")
			h.Set("Content-Security-Policy", webCSP)
			http.ServeFileFS(w, r, root, "index.html")
			return
		}
		if strings.HasPrefix(name, "assets/") {
			h.Set("Cache-Control", "public, max-age=31536000, immutable")
		}
		files.ServeHTTP(w, r)
	}), nil
}
