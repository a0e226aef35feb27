// Package testbench holds helpers for benchmarks that compare a system with a
// baseline measured in the same run (docs/benchmarks.md).
package testbench

import "slices"

// Median of the rounds' figures (rounds are interleaved, system and baseline).
func Median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}
