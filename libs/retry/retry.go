// Package retry is capped exponential backoff with full jitter around the
// middle (a wait is uniform in [d/2, d]), and Do, which retries until
// success or the context ends.
package retry

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff doubles its delay after every Wait, from Min up to Max.
type Backoff struct {
	Min, Max time.Duration
	cur      time.Duration
}

// Wait sleeps the next delay; it returns ctx's error if ctx ends first.
func (b *Backoff) Wait(ctx context.Context) error {
	if b.cur < b.Min {
		b.cur = b.Min
	}
	d := b.cur/2 + rand.N(b.cur/2+1)
	b.cur = min(2*b.cur, b.Max)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Reset starts the delays over from Min.
func (b *Backoff) Reset() { b.cur = 0 }

// Do runs f until it returns nil, waiting with b between attempts and
// calling onRetry (if set) after each failure. It returns ctx's error when
// ctx ends first.
func Do(ctx context.Context, b Backoff, f func() error, onRetry func(error)) error {
	for {
		err := f()
		if err == nil {
			return nil
		}
		if onRetry != nil {
			onRetry(err)
		}
		if werr := b.Wait(ctx); werr != nil {
			return werr
		}
	}
}
