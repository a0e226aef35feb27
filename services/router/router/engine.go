package router

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// Engine applies a rule file to events. It keeps the state of sampling,
// dedup and aggregation windows; it is not safe for concurrent use.
type Engine struct {
	rules    []compiled
	defaults []string
	now      func() time.Time

	rate   map[int]uint64                // fixed-rate sampling: events seen per rule
	keyed  map[int]map[string]*keyWindow // dynamic sampling per key
	dedup  map[int]map[uint64]time.Time  // last seen per fields hash
	agg    map[int]*aggWindow
	region string
}

type keyWindow struct {
	start time.Time
	count int
}

type aggWindow struct {
	start  time.Time
	groups map[string]*aggGroup
	// first is the lowest source offset counted in this window; the cursor
	// must not pass it before the counts are out.
	first uint64
}

type aggGroup struct {
	by    map[string]any
	count int64
}

// Out is one encoded event for a sink, with the source offset it came from
// (0 for counts an aggregation made).
type Out struct {
	Source string
	Offset uint64
	Data   []byte
}

// Result is what processing produced.
type Result struct {
	// Out holds encoded events per sink, in order.
	Out map[string][]Out
	// Dropped counts events dropped on purpose, by rule name (or "rule N").
	Dropped map[string]int
	// Unrouted counts events that no route took and no default sink had.
	Unrouted int
	// Undecodable counts input that was not a JSON object (routed as a
	// wrapped event, never dropped).
	Undecodable int
}

func newResult() *Result {
	return &Result{Out: map[string][]Out{}, Dropped: map[string]int{}}
}

// NewEngine compiles a rule file.
func NewEngine(rf *RuleFile, region string) (*Engine, error) {
	rules, err := compileRules(rf)
	if err != nil {
		return nil, err
	}
	return &Engine{
		rules: rules, defaults: rf.DefaultSinks, now: time.Now, region: region,
		rate: map[int]uint64{}, keyed: map[int]map[string]*keyWindow{}, dedup: map[int]map[uint64]time.Time{}, agg: map[int]*aggWindow{},
	}, nil
}

func ruleName(i int, r compiled) string {
	if r.Name != "" {
		return r.Name
	}
	return fmt.Sprintf("rule %d", i+1)
}

// Process runs one event (raw JSON) from a source at an offset through the
// rules.
func (en *Engine) Process(source string, raw []byte, offset uint64, res *Result) {
	e, err := decode(raw)
	if err != nil || e == nil {
		res.Undecodable++
		e = Event{"message": string(raw), "event": "router.undecodable"}
	}
	now := en.now()
	var routes []string
	for i, r := range en.rules {
		ok := true
		for _, c := range r.match {
			if !c.ok(e) {
				ok = false
				break
			}
		}
		if !ok {
			continue
		}
		switch {
		case r.Drop:
			res.Dropped[ruleName(i, r)]++
			return
		case r.Sample != nil:
			keep, rate := en.sample(i, r.Sample, e, now)
			if !keep {
				res.Dropped[ruleName(i, r)]++
				return
			}
			if rate > 1 {
				e.set("attrs.sample_rate", rate)
			}
		case r.Dedup != nil:
			if en.seen(i, r.Dedup, e, now) {
				res.Dropped[ruleName(i, r)]++
				return
			}
		case r.Aggregate != nil:
			en.count(i, r, e, offset, now)
			return
		}
		if r.Mask != nil {
			mask(e, r)
		}
		for k, v := range r.Enrich {
			if s, ok := v.(string); ok && s == "${region}" {
				v = en.region
			}
			e.set(k, v)
		}
		routes = append(routes, r.Route...)
		if r.Final {
			break
		}
	}
	en.emit(e, routes, source, offset, res)
}

func (en *Engine) emit(e Event, routes []string, source string, offset uint64, res *Result) {
	if len(routes) == 0 {
		routes = en.defaults
	}
	if len(routes) == 0 {
		res.Unrouted++
		return
	}
	b, err := json.Marshal(map[string]any(e))
	if err != nil {
		res.Undecodable++
		return
	}
	for _, s := range slices.Compact(slices.Sorted(slices.Values(routes))) {
		res.Out[s] = append(res.Out[s], Out{Source: source, Offset: offset, Data: b})
	}
}

func (en *Engine) sample(i int, s *Sample, e Event, now time.Time) (bool, int) {
	if s.Key == "" {
		n := en.rate[i]
		en.rate[i] = n + 1
		return n%uint64(s.Rate) == 0, s.Rate
	}
	m := en.keyed[i]
	if m == nil {
		m = map[string]*keyWindow{}
		en.keyed[i] = m
	}
	v, _ := e.get(s.Key)
	k := str(v)
	w := m[k]
	if w == nil || now.Sub(w.start) >= s.Window.Duration {
		if w == nil && len(m) >= MaxSampleKeys {
			clear(m) // bounded: a flood of new keys starts the window over
		}
		w = &keyWindow{start: now}
		m[k] = w
	}
	w.count++
	if w.count <= s.PerKey {
		return true, 1
	}
	rate := (w.count + s.PerKey - 1) / s.PerKey
	return w.count%rate == 0, rate
}

func (en *Engine) seen(i int, d *Dedup, e Event, now time.Time) bool {
	m := en.dedup[i]
	if m == nil {
		m = map[uint64]time.Time{}
		en.dedup[i] = m
	}
	h := hashFields(e, d.Fields)
	if t, ok := m[h]; ok && now.Sub(t) < d.Window.Duration {
		return true
	}
	if len(m) >= MaxDedupKeys {
		for k, t := range m {
			if now.Sub(t) >= d.Window.Duration {
				delete(m, k)
			}
		}
		if len(m) >= MaxDedupKeys {
			clear(m) // bounded; worst case a duplicate passes
		}
	}
	m[h] = now
	return false
}

func (en *Engine) count(i int, r compiled, e Event, offset uint64, now time.Time) {
	w := en.agg[i]
	if w == nil {
		w = &aggWindow{start: now, groups: map[string]*aggGroup{}, first: offset}
		en.agg[i] = w
	}
	by := map[string]any{}
	var key strings.Builder
	for _, f := range r.Aggregate.By {
		v, _ := e.get(f)
		by[f] = v
		key.WriteString(str(v))
		key.WriteByte(0)
	}
	g := w.groups[key.String()]
	if g == nil {
		if len(w.groups) >= MaxAggGroups {
			g = w.groups["\x00overflow"]
			if g == nil {
				g = &aggGroup{by: map[string]any{"overflow": true}}
				w.groups["\x00overflow"] = g
			}
		} else {
			g = &aggGroup{by: by}
			w.groups[key.String()] = g
		}
	}
	g.count++
}

// Flush emits the counts of aggregation windows that are over (all of them
// with force) and returns the lowest source offset still held in an open
// window (0 if none).
func (en *Engine) Flush(res *Result, force bool) uint64 {
	now := en.now()
	var held uint64
	for i, w := range en.agg {
		r := en.rules[i]
		if !force && now.Sub(w.start) < r.Aggregate.Window.Duration {
			if held == 0 || w.first < held {
				held = w.first
			}
			continue
		}
		keys := slices.Sorted(maps.Keys(w.groups))
		for _, k := range keys {
			g := w.groups[k]
			attrs := map[string]any{"count": g.count, "window": r.Aggregate.Window.String(), "rule": ruleName(i, r)}
			maps.Copy(attrs, g.by)
			ev := Event{
				"time": w.start.UTC().Format(time.RFC3339Nano), "level": "INFO", "message": "count of matching events",
				"schema": "orbit.log/v1", "service": "router", "event": "router.count", "attrs": attrs,
			}
			en.emit(ev, r.Route, "", 0, res)
		}
		delete(en.agg, i)
	}
	return held
}

// mask hides the rule's fields, named fields and patterns in place.
func mask(e Event, r compiled) {
	for _, f := range r.Mask.Fields {
		if _, ok := e.get(f); ok {
			e.set(f, "[masked]")
		}
	}
	maskValue(map[string]any(e), r)
}

func maskValue(v any, r compiled) any {
	switch x := v.(type) {
	case map[string]any:
		for k, val := range x {
			if r.names[strings.ToLower(k)] {
				x[k] = "[masked]"
				continue
			}
			x[k] = maskValue(val, r)
		}
		return x
	case []any:
		for i, val := range x {
			x[i] = maskValue(val, r)
		}
		return x
	case string:
		if len(r.patterns) > 0 {
			return maskString(x, r.patterns)
		}
		return x
	case json.Number:
		if len(r.patterns) > 0 {
			if m := maskString(x.String(), r.patterns); m != x.String() {
				return m
			}
		}
		return x
	}
	return v
}
