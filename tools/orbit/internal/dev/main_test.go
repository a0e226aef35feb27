package dev_test

import (
	"testing"

	"go.uber.org/goleak"
)

// A stopped stack (NATS, etcd, components) leaves no goroutines behind.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
