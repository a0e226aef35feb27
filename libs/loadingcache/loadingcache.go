// Package loadingcache is a read-through cache in the shape the seed's
// gateway uses (warpstream-multi-region-contexts.txt): concurrent misses for
// one key share one fill; "not found" is cached for its own, shorter TTL;
// fills run with bounded concurrency, so a flood of new keys reaches the
// source at a steady rate; an entry older than RefreshAfter is refreshed in
// the background (bounded too) while callers keep getting the cached value,
// and a failed refresh keeps it; the size is bounded (random eviction).
// Invalidate applies a change at once (the contexts' etcd watch calls it) and
// wins over a refresh in flight. Stats and Collector expose the counters.
//
// The hit path takes no lock and reads no clock: entries live in a sync.Map
// and expiry is checked against a coarse clock ticked every ClockResolution.
package loadingcache

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// ErrNotFound is returned by a fill for a missing key; it is cached for
// NegativeTTL. Other fill errors are not cached.
var ErrNotFound = errors.New("not found")

// Defaults (docs/limits.md).
const (
	DefaultTTL                    = 5 * time.Minute
	DefaultNegativeTTL            = 10 * time.Second
	DefaultMaxEntries             = 100_000
	DefaultMaxConcurrentFills     = 64
	DefaultMaxConcurrentRefreshes = 8
	DefaultFillTimeout            = 10 * time.Second
	// ClockResolution is how stale the cache's notion of now may be: TTLs
	// are honoured to within it.
	ClockResolution = 5 * time.Millisecond
)

// Config configures a cache. Zero values take the defaults.
type Config struct {
	TTL         time.Duration
	NegativeTTL time.Duration
	// RefreshAfter is the age after which a hit starts a background
	// refresh (default TTL/2; negative disables refreshing).
	RefreshAfter           time.Duration
	MaxEntries             int
	MaxConcurrentFills     int
	MaxConcurrentRefreshes int
	FillTimeout            time.Duration
}

// Cache maps K to V through fill.
type Cache[K comparable, V any] struct {
	cfg        Config
	fill       func(context.Context, K) (V, error)
	sem        chan struct{}
	refreshSem chan struct{}
	items      sync.Map // K -> *item[V]
	entries    atomic.Int64

	mu    sync.Mutex
	calls map[K]*call[V]

	hits     stripes
	misses   atomic.Int64
	negHits  stripes
	fills    atomic.Int64
	fillErrs atomic.Int64
	refr     atomic.Int64
	refrErrs atomic.Int64
	refrSkip atomic.Int64
	evicted  atomic.Int64
}

type item[V any] struct {
	v          V
	err        error
	expires    int64 // coarse-clock nanoseconds
	refreshAt  int64 // 0: never
	refreshing atomic.Bool
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
	if cfg.RefreshAfter == 0 {
		cfg.RefreshAfter = cfg.TTL / 2
	}
	if cfg.MaxEntries <= 0 {
		cfg.MaxEntries = DefaultMaxEntries
	}
	if cfg.MaxConcurrentFills <= 0 {
		cfg.MaxConcurrentFills = DefaultMaxConcurrentFills
	}
	if cfg.MaxConcurrentRefreshes <= 0 {
		cfg.MaxConcurrentRefreshes = DefaultMaxConcurrentRefreshes
	}
	if cfg.FillTimeout <= 0 {
		cfg.FillTimeout = DefaultFillTimeout
	}
	startClock()
	return &Cache[K, V]{cfg: cfg, fill: fill, sem: make(chan struct{}, cfg.MaxConcurrentFills),
		refreshSem: make(chan struct{}, cfg.MaxConcurrentRefreshes), calls: map[K]*call[V]{}}
}

// Get returns the cached value or error for k, filling it on a miss.
func (c *Cache[K, V]) Get(ctx context.Context, k K) (V, error) {
	if v, ok := c.items.Load(k); ok {
		it := v.(*item[V])
		now := clock.Load()
		if now < it.expires {
			if it.err != nil {
				c.negHits.add()
			} else {
				c.hits.add()
				if it.refreshAt != 0 && now >= it.refreshAt && it.refreshing.CompareAndSwap(false, true) {
					c.refresh(k, it)
				}
			}
			return it.v, it.err
		}
	}
	c.mu.Lock()
	// Look again under the lock: a fill may have just stored k.
	if v, ok := c.items.Load(k); ok {
		if it := v.(*item[V]); clock.Load() < it.expires {
			c.mu.Unlock()
			return it.v, it.err
		}
	}
	c.misses.Add(1)
	cl, ok := c.calls[k]
	if !ok {
		cl = &call[V]{done: make(chan struct{})}
		c.calls[k] = cl
		c.fills.Add(1)
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

func (c *Cache[K, V]) newItem(v V, err error) *item[V] {
	now := clock.Load()
	it := &item[V]{v: v, err: err}
	if err == nil {
		it.expires = now + int64(c.cfg.TTL)
		if c.cfg.RefreshAfter > 0 && c.cfg.RefreshAfter < c.cfg.TTL {
			it.refreshAt = now + int64(c.cfg.RefreshAfter)
		}
	} else {
		it.expires = now + int64(c.cfg.NegativeTTL)
	}
	return it
}

func (c *Cache[K, V]) run(k K, cl *call[V]) {
	c.sem <- struct{}{}
	// A fill outlives any one caller: it is shared.
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.FillTimeout)
	cl.v, cl.err = c.fill(ctx, k)
	cancel()
	<-c.sem
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.calls, k)
	cacheable := cl.err == nil || errors.Is(cl.err, ErrNotFound)
	if cl.err != nil && !cacheable {
		c.fillErrs.Add(1)
	}
	if cacheable && !cl.stale {
		c.store(k, c.newItem(cl.v, cl.err))
	}
	close(cl.done)
}

// store puts it under k, evicting a random entry when full.
func (c *Cache[K, V]) store(k K, it *item[V]) {
	if _, loaded := c.items.Swap(k, it); loaded {
		return
	}
	if c.entries.Add(1) <= int64(c.cfg.MaxEntries) {
		return
	}
	c.items.Range(func(victim, _ any) bool { // map order is random
		if victim.(K) == k {
			return true
		}
		if _, ok := c.items.LoadAndDelete(victim); ok {
			c.entries.Add(-1)
			c.evicted.Add(1)
		}
		return false
	})
}

// refresh reloads k in the background; the old entry serves meanwhile. It
// replaces the entry only if the entry is still the one refreshed (an
// Invalidate in between wins). A failed refresh keeps the old value.
func (c *Cache[K, V]) refresh(k K, old *item[V]) {
	select {
	case c.refreshSem <- struct{}{}:
	default:
		c.refrSkip.Add(1) // all refresh slots busy: a later hit tries again
		old.refreshing.Store(false)
		return
	}
	c.refr.Add(1)
	go func() {
		defer func() { <-c.refreshSem }()
		ctx, cancel := context.WithTimeout(context.Background(), c.cfg.FillTimeout)
		v, err := c.fill(ctx, k)
		cancel()
		if err != nil && !errors.Is(err, ErrNotFound) {
			c.refrErrs.Add(1)
			old.refreshing.Store(false)
			return
		}
		c.items.CompareAndSwap(k, old, c.newItem(v, err))
	}()
}

// Invalidate drops k; the next Get fills it again.
func (c *Cache[K, V]) Invalidate(k K) {
	c.mu.Lock()
	if _, ok := c.items.LoadAndDelete(k); ok {
		c.entries.Add(-1)
	}
	if cl, ok := c.calls[k]; ok {
		cl.stale = true
	}
	c.mu.Unlock()
}

// Len is the number of cached entries (values and negatives).
func (c *Cache[K, V]) Len() int { return int(c.entries.Load()) }

// Fills counts fills started (refreshes not included).
func (c *Cache[K, V]) Fills() int64 { return c.fills.Load() }

// Stats are a cache's counters since it was made. Hits and NegativeHits
// are sampled (exact in expectation); the others are exact.
type Stats struct {
	Hits, NegativeHits, Misses          int64
	Fills, FillErrors                   int64
	Refreshes, RefreshErrors, Throttled int64
	Evictions, Entries                  int64
}

// Stats returns the counters.
func (c *Cache[K, V]) Stats() Stats {
	return Stats{
		Hits: c.hits.sum(), NegativeHits: c.negHits.sum(), Misses: c.misses.Load(), Fills: c.fills.Load(), FillErrors: c.fillErrs.Load(),
		Refreshes: c.refr.Load(), RefreshErrors: c.refrErrs.Load(), Throttled: c.refrSkip.Load(), Evictions: c.evicted.Load(), Entries: c.entries.Load(),
	}
}

// Collector exports the counters as orbit_cache_* metrics labelled
// cache=name; several caches' collectors can be registered side by side.
func (c *Cache[K, V]) Collector(name string) prometheus.Collector {
	col := collector{stats: c.Stats}
	for _, n := range names {
		col.descs = append(col.descs, prometheus.NewDesc(n.name, n.help, nil, prometheus.Labels{"cache": name}))
	}
	return col
}

var (
	names = []struct{ name, help string }{
		{"orbit_cache_hits_total", "Gets answered from a cached value (counted 1 in 8, scaled)."},
		{"orbit_cache_negative_hits_total", "Gets answered from a cached not-found (counted 1 in 8, scaled)."},
		{"orbit_cache_misses_total", "Gets that waited for a fill."},
		{"orbit_cache_fills_total", "Fills started (one per key however many callers wait)."},
		{"orbit_cache_fill_errors_total", "Fills that failed (not cached)."},
		{"orbit_cache_refreshes_total", "Background refreshes started."},
		{"orbit_cache_refresh_errors_total", "Background refreshes that failed (the old value kept)."},
		{"orbit_cache_refreshes_throttled_total", "Refreshes skipped because every refresh slot was busy."},
		{"orbit_cache_evictions_total", "Entries evicted by the size bound."},
		{"orbit_cache_entries", "Entries cached (values and not-founds)."},
	}
)

type collector struct {
	descs []*prometheus.Desc
	stats func() Stats
}

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	s := c.stats()
	vals := []int64{s.Hits, s.NegativeHits, s.Misses, s.Fills, s.FillErrors, s.Refreshes, s.RefreshErrors, s.Throttled, s.Evictions, s.Entries}
	for i, n := range names {
		typ := prometheus.CounterValue
		if n.name == "orbit_cache_entries" {
			typ = prometheus.GaugeValue
		}
		ch <- prometheus.MustNewConstMetric(c.descs[i], typ, float64(vals[i]))
	}
}

// stripes is a sampled counter spread over cache lines: one hit in
// hitSample adds hitSample to a random stripe. Counting every hit in shared
// memory cost more than the lookup itself (two cores trading the counter's
// cache line: ≈ 60 ns a hit, measured with BenchmarkHit); sampled, the count
// is exact in expectation and within about 1 % after 10^5 hits.
type stripes [16]struct {
	n atomic.Int64
	_ [56]byte
}

const hitSample = 8

func (s *stripes) add() {
	if r := rand.Uint32(); r&(hitSample-1) == 0 {
		s[(r>>8)&15].n.Add(hitSample)
	}
}

func (s *stripes) sum() int64 {
	var t int64
	for i := range s {
		t += s[i].n.Load()
	}
	return t
}

// clock is a coarse monotonic-enough clock (Unix nanoseconds) ticked by one
// goroutine for every cache in the process.
var (
	clock     atomic.Int64
	clockOnce sync.Once
)

func startClock() {
	clockOnce.Do(func() {
		clock.Store(time.Now().UnixNano())
		go func() {
			t := time.NewTicker(ClockResolution)
			for now := range t.C {
				clock.Store(now.UnixNano())
			}
		}()
	})
}
