package retry

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestDoRetriesUntilSuccess(t *testing.T) {
	n, retries := 0, 0
	err := Do(context.Background(), Backoff{Min: time.Millisecond, Max: 4 * time.Millisecond}, func() error {
		if n++; n < 4 {
			return errors.New("not yet")
		}
		return nil
	}, func(error) { retries++ })
	if err != nil || n != 4 || retries != 3 {
		t.Fatalf("err %v after %d attempts, %d retries", err, n, retries)
	}
}

func TestDoStopsWithTheContext(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := Do(ctx, Backoff{Min: 10 * time.Millisecond, Max: 20 * time.Millisecond}, func() error { return errors.New("never") }, nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v", err)
	}
}

func TestBackoffIsCappedAndJittered(t *testing.T) {
	b := Backoff{Min: 2 * time.Millisecond, Max: 8 * time.Millisecond}
	for range 5 {
		start := time.Now()
		if err := b.Wait(context.Background()); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d > 50*time.Millisecond {
			t.Fatalf("waited %v with an 8 ms cap", d)
		}
	}
	if b.cur != 8*time.Millisecond {
		t.Fatalf("delay %v, want the 8 ms cap", b.cur)
	}
	b.Reset()
	if b.cur != 0 {
		t.Fatal("reset kept the delay")
	}
}
