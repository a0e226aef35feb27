package router

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"reflect"
	"slices"
)

// Test is a fixture run by `router test`: inputs go through the rules and
// each listed sink must receive exactly the listed events, each a subset
// of what the sink got (fields not listed are not compared).
type Test struct {
	Name    string                      `json:"name"`
	Inputs  []map[string]any            `json:"inputs"`
	Outputs map[string][]map[string]any `json:"outputs,omitempty"`
	// Dropped, when set, is how many inputs rules must drop.
	Dropped *int `json:"dropped,omitempty"`
}

// RunTests runs a rule file's tests, printing PASS/FAIL lines to w; it
// returns how many failed.
func RunTests(rf *RuleFile, w io.Writer) (int, error) {
	if len(rf.Tests) == 0 {
		return 0, fmt.Errorf("the rule file has no tests: section")
	}
	failed := 0
	for i, tc := range rf.Tests {
		name := tc.Name
		if name == "" {
			name = fmt.Sprintf("test %d", i+1)
		}
		en, err := NewEngine(rf, "test-region")
		if err != nil {
			return 0, err
		}
		res := newResult()
		for j, in := range tc.Inputs {
			b, err := json.Marshal(in)
			if err != nil {
				return 0, fmt.Errorf("%s: input %d: %w", name, j+1, err)
			}
			en.Process("test", b, uint64(j+1), res)
		}
		en.Flush(res, true)
		problems := check(tc, res)
		if len(problems) == 0 {
			fmt.Fprintf(w, "PASS %s\n", name)
			continue
		}
		failed++
		fmt.Fprintf(w, "FAIL %s\n", name)
		for _, p := range problems {
			fmt.Fprintf(w, "     %s\n", p)
		}
	}
	fmt.Fprintf(w, "%d passed, %d failed\n", len(rf.Tests)-failed, failed)
	return failed, nil
}

func check(tc Test, res *Result) []string {
	var problems []string
	for _, sink := range slices.Sorted(maps.Keys(tc.Outputs)) {
		want := tc.Outputs[sink]
		got := res.Out[sink]
		if len(got) != len(want) {
			problems = append(problems, fmt.Sprintf("sink %s: got %d events, want %d", sink, len(got), len(want)))
		}
		for k := range min(len(got), len(want)) {
			var ev map[string]any
			_ = json.Unmarshal(got[k].Data, &ev)
			if path, ok := subset(want[k], ev, ""); !ok {
				problems = append(problems, fmt.Sprintf("sink %s event %d: %s differs: got %s", sink, k+1, path, got[k].Data))
			}
		}
	}
	if tc.Dropped != nil {
		n := 0
		for _, v := range res.Dropped {
			n += v
		}
		if n != *tc.Dropped {
			problems = append(problems, fmt.Sprintf("dropped %d, want %d (%v)", n, *tc.Dropped, res.Dropped))
		}
	}
	return problems
}

// subset reports whether every field of want is in got with an equal value
// (objects compared recursively); path names the first difference.
func subset(want, got map[string]any, prefix string) (string, bool) {
	for _, k := range slices.Sorted(maps.Keys(want)) {
		path := prefix + k
		g, ok := got[k]
		if !ok {
			return path + " (missing)", false
		}
		if wm, ok := want[k].(map[string]any); ok {
			gm, ok := g.(map[string]any)
			if !ok {
				return path, false
			}
			if p, ok := subset(wm, gm, path+"."); !ok {
				return p, false
			}
			continue
		}
		if !reflect.DeepEqual(normalizeJSON(want[k]), normalizeJSON(g)) {
			return path, false
		}
	}
	return "", true
}

// normalizeJSON makes numbers comparable however they were decoded.
func normalizeJSON(v any) any {
	b, _ := json.Marshal(v)
	var out any
	_ = json.Unmarshal(b, &out)
	return out
}
