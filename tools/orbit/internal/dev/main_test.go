package dev_test

import (
	"testing"

	"go.uber.org/goleak"
)

// A stopped stack (NATS, etcd, components) leaves no goroutines behind but
// the loading caches' one process-wide coarse clock, which is meant to live
// as long as the process.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/orbitplane/orbit/libs/loadingcache.startClock.func1.1"))
}
