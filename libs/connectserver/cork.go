package connectserver

import (
	"context"
	"net/http"
	"sync"
)

// Connect flushes the response after every streamed message. A handler that
// sends several messages in a burst (a result's schema, batch and summary)
// can Cork the response so they leave in one write instead of one write (and
// one wake-up at the reader) each.

type corkKey struct{}

// corkWriter delays Flush while corked. Its lock also orders writes and
// flushes, since an uncork may flush from another goroutine than the one
// writing.
type corkWriter struct {
	http.ResponseWriter
	mu      sync.Mutex
	corked  int
	pending bool
}

func (c *corkWriter) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ResponseWriter.Write(p)
}

func (c *corkWriter) Flush() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.corked > 0 {
		c.pending = true
		return
	}
	c.flush()
}

func (c *corkWriter) flush() {
	if f, ok := c.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the real writer.
func (c *corkWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }

func corked(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cw := &corkWriter{ResponseWriter: w}
		h.ServeHTTP(cw, r.WithContext(context.WithValue(r.Context(), corkKey{}, cw)))
	})
}

// Cork holds back the flushes of the response the handler behind ctx is
// writing until the returned function is called (which flushes if any was
// held back). Corks nest. Data is never held back beyond uncork, and large
// writes still leave as the transport's buffer fills. Outside a server
// handler it does nothing.
func Cork(ctx context.Context) (uncork func()) {
	cw, ok := ctx.Value(corkKey{}).(*corkWriter)
	if !ok {
		return func() {}
	}
	cw.mu.Lock()
	cw.corked++
	cw.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			cw.mu.Lock()
			defer cw.mu.Unlock()
			cw.corked--
			if cw.corked == 0 && cw.pending {
				cw.pending = false
				cw.flush()
			}
		})
	}
}
