package dev

import (
	"fmt"
	"testing"

	"github.com/orbitplane/orbit/services/router/router"
)

// TestDevRulesParse: the rules orbit dev writes for its router pass the
// router's checks.
func TestDevRulesParse(t *testing.T) {
	if _, err := router.ParseRules([]byte(fmt.Sprintf(DevRules, "/tmp/routed.log"))); err != nil {
		t.Fatal(err)
	}
}
