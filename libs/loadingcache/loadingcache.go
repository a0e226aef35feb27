// Package loadingcache is a read-through cache: concurrent misses for one key
// share one fill, "not found" is cached for its own (shorter) TTL, fills run
// with bounded concurrency, and the size is bounded (random eviction).
// Invalidate applies a change at once (the contexts' etcd watch calls it).
package loadingcache

import (
	"context"
	"errors"
	"sync"
	"time"
)

// ErrNotFound is returned by a fill for a missing key; it is cached for
// NegativeTTL. Other fill errors are not cached.
var ErrNotFound = errors.New("not found")

// Defaults (docs/limits.md).
const (
	DefaultTTL                = 5 * time.Minute
	DefaultNegativeTTL        = 10 * time.Second
	DefaultMaxEntries         = 100_000
	DefaultMaxConcurrentFills = 64
)

// Config configures a cache. Zero values take the defaults.
type Config struct {
	TTL                time.Duration
	NegativeTTL        time.Duration
	MaxEntries         int
	MaxConcurrentFills int
}

// Cache maps K to V through fill.
type Cache[K comparable, V any] struct {
	cfg   Config
	fill  func(context.Context, K) (V, error)
	sem   chan struct{}
	mu    sync.Mutex
	items map[K]*item[V]
	calls map[K]*call[V]
	fills int64
}

type item[V any] struct {
	v       V
	err     error
	expires time.Time
}

type call[V any] struct {
	done  chan struct{}
	v     V
	err   error
	stale bool // invalidated while filling: not stored
}

// New returns a cache that loads misses with fill.
func New[K comparable, V any](cfg Config, fill func(context.Context, K) (V, error)) *Cache[K, V] {
	if cfg.TTL <= 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.NegativeTTL <= 0 {
		cfg.NegativeTTL = DefaultNegativeTTL
	}
	if cfg.MaxEntries <= 0 {
		cfg.MaxEntries = DefaultMaxEntries
	}
	if cfg.MaxConcurrentFills <= 0 {
		cfg.MaxConcurrentFills = DefaultMaxConcurrentFills
	}
	return &Cache[K, V]{cfg: cfg, fill: fill, sem: make(chan struct{}, cfg.MaxConcurrentFills), items: map[K]*item[V]{}, calls: map[K]*call[V]{}}
}

// Get returns the cached value or error for k, filling it on a miss.
func (c *Cache[K, V]) Get(ctx context.Context, k K) (V, error) {
	now := time.Now()
	c.mu.Lock()
	if it, ok := c.items[k]; ok && now.Before(it.expires) {
		c.mu.Unlock()
		return it.v, it.err
	}
	cl, ok := c.calls[k]
	if !ok {
		cl = &call[V]{done: make(chan struct{})}
		c.calls[k] = cl
		c.fills++
		go c.run(k, cl)
	}
	c.mu.Unlock()
	select {
	case <-cl.done:
		return cl.v, cl.err
	case <-ctx.Done():
		var zero V
		return zero, ctx.Err()
	}
}

func (c *Cache[K, V]) run(k K, cl *call[V]) {
	c.sem <- struct{}{}
	// A fill outlives any one caller: it is shared.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	cl.v, cl.err = c.fill(ctx, k)
	cancel()
	<-c.sem
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.calls, k)
	var ttl time.Duration
	switch {
	case cl.err == nil:
		ttl = c.cfg.TTL
	case errors.Is(cl.err, ErrNotFound):
		ttl = c.cfg.NegativeTTL
	}
	if ttl > 0 && !cl.stale {
		if _, exists := c.items[k]; !exists && len(c.items) >= c.cfg.MaxEntries {
			for victim := range c.items { // random eviction
				delete(c.items, victim)
				break
			}
		}
		c.items[k] = &item[V]{v: cl.v, err: cl.err, expires: time.Now().Add(ttl)}
	}
	close(cl.done)
}

// Invalidate drops k; the next Get fills it again.
func (c *Cache[K, V]) Invalidate(k K) {
	c.mu.Lock()
	delete(c.items, k)
	if cl, ok := c.calls[k]; ok {
		cl.stale = true
	}
	c.mu.Unlock()
}

// Len is the number of cached entries (values and negatives).
func (c *Cache[K, V]) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.items)
}

// Fills counts fills started.
func (c *Cache[K, V]) Fills() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.fills
}
