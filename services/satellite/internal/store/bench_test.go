package store

import (
	"context"
	"testing"
)

func BenchmarkTinyQuery(b *testing.B) {
	s := open(b, Config{})
	ctx := context.Background()
	for b.Loop() {
		if _, err := s.Query(ctx, "SELECT 1", Limits{}, &collect{}); err != nil {
			b.Fatal(err)
		}
	}
}
