package connectserver_test

import (
	"testing"

	"go.uber.org/goleak"
)

// A stopped server leaves no goroutines behind, the drain path included.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
