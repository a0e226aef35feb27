// Package testwait polls for a condition with a deadline, the way tests here
// wait for something to happen (never a sleep as an assertion).
package testwait

import (
	"testing"
	"time"
)

// Interval between polls.
const Interval = 10 * time.Millisecond

// For fails the test if cond is not true within timeout.
func For(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(Interval)
	}
}
