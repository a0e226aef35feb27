package loadingcache

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestConcurrentMissesShareOneFill(t *testing.T) {
	var fills atomic.Int64
	release := make(chan struct{})
	c := New(Config{}, func(_ context.Context, k string) (string, error) {
		fills.Add(1)
		<-release
		return "v-" + k, nil
	})
	var wg sync.WaitGroup
	for range 1000 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if v, err := c.Get(context.Background(), "a"); err != nil || v != "v-a" {
				t.Errorf("got %q %v", v, err)
			}
		}()
	}
	time.Sleep(50 * time.Millisecond)
	close(release)
	wg.Wait()
	if n := fills.Load(); n != 1 {
		t.Fatalf("%d fills for 1000 concurrent misses", n)
	}
}

func TestNegativeCachingAndErrors(t *testing.T) {
	var fills atomic.Int64
	boom := errors.New("etcd down")
	c := New(Config{NegativeTTL: 50 * time.Millisecond}, func(_ context.Context, k string) (int, error) {
		fills.Add(1)
		if k == "boom" {
			return 0, boom
		}
		return 0, ErrNotFound
	})
	for range 100 {
		if _, err := c.Get(context.Background(), "missing"); !errors.Is(err, ErrNotFound) {
			t.Fatal(err)
		}
	}
	if fills.Load() != 1 {
		t.Fatalf("%d fills for a cached miss", fills.Load())
	}
	time.Sleep(60 * time.Millisecond)
	_, _ = c.Get(context.Background(), "missing")
	if fills.Load() != 2 {
		t.Fatalf("negative entry did not expire: %d fills", fills.Load())
	}
	// Other errors are not cached.
	_, _ = c.Get(context.Background(), "boom")
	_, _ = c.Get(context.Background(), "boom")
	if fills.Load() != 4 {
		t.Fatalf("an error was cached: %d fills", fills.Load())
	}
}

func TestInvalidateAndSizeBound(t *testing.T) {
	var version atomic.Int64
	c := New(Config{MaxEntries: 10}, func(_ context.Context, k int) (int64, error) { return version.Load(), nil })
	if v, _ := c.Get(context.Background(), 1); v != 0 {
		t.Fatal(v)
	}
	version.Store(7)
	if v, _ := c.Get(context.Background(), 1); v != 0 {
		t.Fatalf("cached value changed to %d without invalidation", v)
	}
	c.Invalidate(1)
	if v, _ := c.Get(context.Background(), 1); v != 7 {
		t.Fatalf("after invalidate: %d", v)
	}
	for i := range 100 {
		_, _ = c.Get(context.Background(), i)
	}
	if n := c.Len(); n > 10 {
		t.Fatalf("%d entries, bound 10", n)
	}
}
