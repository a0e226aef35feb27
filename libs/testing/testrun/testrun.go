// Package testrun runs a service's Run(ctx) in the background of a test and
// stops it once — when the test calls stop or at cleanup — failing the test
// if Run returned an error.
package testrun

import (
	"context"
	"sync"
	"testing"
)

// Start runs run(ctx) in a goroutine; stop cancels ctx and waits for run to
// return. t.Cleanup calls stop too; extra calls do nothing.
func Start(t testing.TB, name string, run func(context.Context) error) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("%s: %v", name, err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}
