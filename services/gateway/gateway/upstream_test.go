package gateway

import (
	"sync/atomic"
	"testing"
	"time"
)

// TestUpstreamBoundAfterReleaseArmsNothing: the goroutine reading a query's
// upstream may finish (release) before the handler, whose answer ended at
// the summary, bounds the wait for it. A timer armed then would hold the
// call's context for the whole timeout after every query.
func TestUpstreamBoundAfterReleaseArmsNothing(t *testing.T) {
	var canceled atomic.Int32
	newUpstream := func() *upstream {
		return &upstream{cancel: func() { canceled.Add(1) }, close: func() error { return nil }}
	}

	// Released first: nothing is armed.
	u := newUpstream()
	u.release()
	if u.bound(time.Hour) {
		t.Fatal("bound armed a timer for a call that had already ended")
	}
	if u.timer != nil {
		t.Fatal("a timer is held for a call that had already ended")
	}

	// Bound first, then released: the release stops the timer.
	canceled.Store(0)
	u = newUpstream()
	if !u.bound(50 * time.Millisecond) {
		t.Fatal("bound did not arm a timer for an open call")
	}
	u.release()
	if u.timer.Stop() {
		t.Fatal("the timer was still armed after the release")
	}
	if n := canceled.Load(); n != 1 {
		t.Fatalf("cancel called %d times, want once (by the release)", n)
	}

	// Bound and never released: the timer cuts the call.
	canceled.Store(0)
	u = newUpstream()
	u.bound(time.Millisecond)
	deadline := time.Now().Add(5 * time.Second)
	for canceled.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the bound did not cut a call that never ended")
		}
		time.Sleep(time.Millisecond)
	}
}
