package router

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"sigs.k8s.io/yaml"
)

// RuleFile is the router's configuration file (docs/router.md).
type RuleFile struct {
	// Version must be 1.
	Version int `json:"version"`
	// Sources are the streams to consume.
	Sources []Source `json:"sources"`
	// Sinks by name.
	Sinks map[string]SinkConfig `json:"sinks"`
	// Rules apply in order to every event.
	Rules []Rule `json:"rules"`
	// DefaultSinks take events no route rule took; without them such events
	// are counted (orbit_router_unrouted_total) and dropped.
	DefaultSinks []string `json:"default_sinks,omitempty"`
	// Tests are fixtures for `router test` (docs/router.md).
	Tests []Test `json:"tests,omitempty"`
}

// Source is a stream the router consumes from its cursor.
type Source struct {
	Stream string `json:"stream"`
}

// SinkConfig configures one sink.
type SinkConfig struct {
	// Type: file, stdout, http, otlp or stream.
	Type string `json:"type"`
	// file: Path, rotated at MaxBytes keeping MaxFiles old files.
	Path     string `json:"path,omitempty"`
	MaxBytes int64  `json:"max_bytes,omitempty"`
	MaxFiles int    `json:"max_files,omitempty"`
	// http, otlp: URL, headers, timeout per request.
	URL     string            `json:"url,omitempty"`
	Headers map[string]string `json:"headers,omitempty"`
	Timeout Duration          `json:"timeout,omitempty"`
	// stream: another log broker stream of the same tenant (created if
	// missing with subject <stream>.>).
	Stream string `json:"stream,omitempty"`
}

// Rule is one step. Match selects events (every condition must hold; none
// means every event); then at most one of drop, sample, dedup, aggregate and
// any of mask, enrich and route apply, in that order.
type Rule struct {
	Name      string         `json:"name,omitempty"`
	Match     map[string]any `json:"match,omitempty"`
	Drop      bool           `json:"drop,omitempty"`
	Sample    *Sample        `json:"sample,omitempty"`
	Dedup     *Dedup         `json:"dedup,omitempty"`
	Mask      *Mask          `json:"mask,omitempty"`
	Enrich    map[string]any `json:"enrich,omitempty"`
	Aggregate *Aggregate     `json:"aggregate,omitempty"`
	Route     []string       `json:"route,omitempty"`
	// Final stops the rules after this one for a matching event.
	Final bool `json:"final,omitempty"`
}

// Sample keeps 1 in Rate events; with Key, it samples per key dynamically:
// within each Window the first PerKey events of a key are kept, then 1 in
// (count / PerKey). Kept events carry attrs.sample_rate.
type Sample struct {
	Rate   int      `json:"rate,omitempty"`
	Key    string   `json:"key,omitempty"`
	PerKey int      `json:"per_key,omitempty"`
	Window Duration `json:"window,omitempty"`
}

// Dedup drops an event whose Fields equal those of one seen within Window.
type Dedup struct {
	Fields []string `json:"fields"`
	Window Duration `json:"window"`
}

// Mask hides values: whole Fields (paths), any field whose name is one of
// FieldNames (any depth, case-insensitive), and every match of Patterns
// (email, ipv4, ipv6, card, token or a regular expression) in any string.
type Mask struct {
	Fields     []string `json:"fields,omitempty"`
	FieldNames []string `json:"field_names,omitempty"`
	Patterns   []string `json:"patterns,omitempty"`
}

// Aggregate replaces matching events by counts: one event per distinct By
// value set per Window, {"event":"router.count","attrs":{...by, "count": n}},
// routed to Route.
type Aggregate struct {
	By     []string `json:"by"`
	Window Duration `json:"window"`
}

// Duration reads "10s"-style durations.
type Duration struct{ time.Duration }

func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration: want a string like \"10s\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// Limits of a rule file (docs/limits.md).
const (
	MaxRules      = 1000
	MaxSinks      = 64
	MaxRuleBytes  = 1 << 20
	MaxDedupKeys  = 100_000
	MaxAggGroups  = 100_000
	MaxSampleKeys = 100_000
)

// LoadRules reads and checks a rule file.
func LoadRules(path string) (*RuleFile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseRules(b)
}

// ParseRules parses and checks rule-file YAML; unknown fields are errors.
func ParseRules(b []byte) (*RuleFile, error) {
	if len(b) > MaxRuleBytes {
		return nil, fmt.Errorf("rule file is %d bytes; the limit is %d", len(b), MaxRuleBytes)
	}
	var rf RuleFile
	if err := yaml.UnmarshalStrict(b, &rf); err != nil {
		return nil, fmt.Errorf("rules: %w", err)
	}
	if err := rf.check(); err != nil {
		return nil, fmt.Errorf("rules: %w", err)
	}
	return &rf, nil
}

func (rf *RuleFile) check() error {
	if rf.Version != 1 {
		return fmt.Errorf("version %d: want 1", rf.Version)
	}
	if len(rf.Rules) > MaxRules {
		return fmt.Errorf("%d rules; the limit is %d", len(rf.Rules), MaxRules)
	}
	if len(rf.Sinks) > MaxSinks {
		return fmt.Errorf("%d sinks; the limit is %d", len(rf.Sinks), MaxSinks)
	}
	for name, s := range rf.Sinks {
		var err error
		switch s.Type {
		case "file":
			if s.Path == "" {
				err = errors.New("a file sink needs path")
			}
		case "stdout":
		case "http", "otlp":
			if !strings.HasPrefix(s.URL, "http://") && !strings.HasPrefix(s.URL, "https://") {
				err = fmt.Errorf("an %s sink needs an http(s) url", s.Type)
			}
		case "stream":
			if s.Stream == "" {
				err = errors.New("a stream sink needs stream")
			}
		default:
			err = fmt.Errorf("type %q: want file, stdout, http, otlp or stream", s.Type)
		}
		if err != nil {
			return fmt.Errorf("sink %s: %w", name, err)
		}
	}
	known := func(where string, sinks []string) error {
		for _, s := range sinks {
			if _, ok := rf.Sinks[s]; !ok {
				return fmt.Errorf("%s: no sink named %q", where, s)
			}
		}
		return nil
	}
	if err := known("default_sinks", rf.DefaultSinks); err != nil {
		return err
	}
	for i, r := range rf.Rules {
		where := fmt.Sprintf("rule %d", i+1)
		if r.Name != "" {
			where += " (" + r.Name + ")"
		}
		n := 0
		for _, set := range []bool{r.Drop, r.Sample != nil, r.Dedup != nil, r.Aggregate != nil} {
			if set {
				n++
			}
		}
		if n > 1 {
			return fmt.Errorf("%s: at most one of drop, sample, dedup and aggregate", where)
		}
		if n == 0 && r.Mask == nil && len(r.Enrich) == 0 && len(r.Route) == 0 {
			return fmt.Errorf("%s: does nothing (give drop, sample, dedup, aggregate, mask, enrich or route)", where)
		}
		if err := known(where, r.Route); err != nil {
			return err
		}
		if _, err := compileMatch(r.Match); err != nil {
			return fmt.Errorf("%s: match: %w", where, err)
		}
		if s := r.Sample; s != nil {
			if s.Key == "" && s.Rate < 1 || s.Key != "" && (s.PerKey < 1 || s.Window.Duration <= 0) {
				return fmt.Errorf("%s: sample needs rate >= 1, or key with per_key >= 1 and a window", where)
			}
		}
		if d := r.Dedup; d != nil && (len(d.Fields) == 0 || d.Window.Duration <= 0) {
			return fmt.Errorf("%s: dedup needs fields and a window", where)
		}
		if a := r.Aggregate; a != nil && (len(a.By) == 0 || a.Window.Duration <= 0 || len(r.Route) == 0) {
			return fmt.Errorf("%s: aggregate needs by, a window and a route for the counts", where)
		}
		if m := r.Mask; m != nil {
			if len(m.Fields)+len(m.FieldNames)+len(m.Patterns) == 0 {
				return fmt.Errorf("%s: mask needs fields, field_names or patterns", where)
			}
			if _, err := compilePatterns(m.Patterns); err != nil {
				return fmt.Errorf("%s: %w", where, err)
			}
		}
	}
	return nil
}

// Event is one decoded log line.
type Event map[string]any

// get returns the value at a dotted path.
func (e Event) get(path string) (any, bool) {
	var cur any = map[string]any(e)
	for _, p := range strings.Split(path, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[p]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// set writes a value at a dotted path, creating objects on the way.
func (e Event) set(path string, v any) {
	parts := strings.Split(path, ".")
	m := map[string]any(e)
	for _, p := range parts[:len(parts)-1] {
		next, ok := m[p].(map[string]any)
		if !ok {
			next = map[string]any{}
			m[p] = next
		}
		m = next
	}
	m[parts[len(parts)-1]] = v
}

func str(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case nil:
		return ""
	case json.Number:
		return x.String()
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// cond is one compiled match condition.
type cond struct {
	path   string
	equals *string
	in     []string
	re     *regexp.Regexp
	exists *bool
	not    bool
}

// compileMatch reads a match block: path: value (equality), or path:
// {equals|in|regex|exists|not_equals}.
func compileMatch(m map[string]any) ([]cond, error) {
	var out []cond
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, path := range keys {
		c := cond{path: path}
		switch v := m[path].(type) {
		case map[string]any:
			for op, arg := range v {
				switch op {
				case "equals", "not_equals":
					s := str(arg)
					c.equals, c.not = &s, op == "not_equals"
				case "in":
					list, ok := arg.([]any)
					if !ok {
						return nil, fmt.Errorf("%s: in wants a list", path)
					}
					for _, x := range list {
						c.in = append(c.in, str(x))
					}
				case "regex":
					re, err := regexp.Compile(str(arg))
					if err != nil {
						return nil, fmt.Errorf("%s: %w", path, err)
					}
					c.re = re
				case "exists":
					b, ok := arg.(bool)
					if !ok {
						return nil, fmt.Errorf("%s: exists wants true or false", path)
					}
					c.exists = &b
				default:
					return nil, fmt.Errorf("%s: unknown operator %q (equals, not_equals, in, regex, exists)", path, op)
				}
			}
		case []any:
			return nil, fmt.Errorf("%s: a list needs {in: [...]}", path)
		default:
			s := str(v)
			c.equals = &s
		}
		out = append(out, c)
	}
	return out, nil
}

func (c cond) ok(e Event) bool {
	v, found := e.get(c.path)
	if c.exists != nil {
		return found == *c.exists
	}
	if !found {
		return c.not
	}
	s := str(v)
	switch {
	case c.equals != nil:
		return (s == *c.equals) != c.not
	case c.in != nil:
		return slices.Contains(c.in, s)
	case c.re != nil:
		return c.re.MatchString(s)
	}
	return true
}

// Built-in masking patterns.
var builtinPatterns = map[string]string{
	"email": `[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}`,
	"ipv4":  `\b(?:\d{1,3}\.){3}\d{1,3}\b`,
	"ipv6":  `(?i)\b(?:[0-9a-f]{1,4}:){3,7}[0-9a-f]{1,4}\b|(?i)\b(?:[0-9a-f]{1,4}:)*[0-9a-f]{0,4}::(?:[0-9a-f]{1,4}:)*[0-9a-f]{0,4}\b`,
	"card":  `\b(?:\d[ \-]?){12,18}\d\b`,
	"token": `(?i)\bbearer\s+[A-Za-z0-9._~+/\-]+=*|\beyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+|\b(?:ok|odk|sk|pk|ghp|gho|xox[abpr])[_\-][A-Za-z0-9_\-]{8,}|(?i)\b(?:password|passwd|secret|token|api[_\-]?key)\s*[=:]\s*\S+`,
}

type pattern struct {
	name string
	re   *regexp.Regexp
	// may is a cheap test that is true for every string the expression can
	// match; false skips the expression (most fields — IDs, times, levels —
	// cannot hold an email, an address or a card number).
	may func(string) bool
}

func countDigits(s string) int {
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] >= '0' && s[i] <= '9' {
			n++
		}
	}
	return n
}

// prefilters hold for every match of the built-in pattern of that name.
var prefilters = map[string]func(string) bool{
	"email": func(s string) bool { return strings.IndexByte(s, '@') >= 0 },
	"ipv4":  func(s string) bool { return strings.Count(s, ".") >= 3 },
	"ipv6":  func(s string) bool { return strings.Count(s, ":") >= 2 },
	"card":  func(s string) bool { return countDigits(s) >= 13 },
	"token": func(s string) bool {
		// bearer / key=value forms, JWTs, prefixed keys
		// The expression is case-insensitive throughout.
		if strings.ContainsAny(s, "=:_-") {
			return true
		}
		l := strings.ToLower(s)
		return strings.Contains(l, "eyj") || strings.Contains(l, "bearer")
	},
}

func compilePatterns(names []string) ([]pattern, error) {
	var out []pattern
	for _, n := range names {
		src, ok := builtinPatterns[n]
		name := n
		if !ok {
			src, name = n, "custom"
		}
		re, err := regexp.Compile(src)
		if err != nil {
			return nil, fmt.Errorf("mask pattern %q is neither built in (email, ipv4, ipv6, card, token) nor a valid regular expression: %w", n, err)
		}
		may := prefilters[name]
		if !ok || may == nil {
			may = func(string) bool { return true }
		}
		out = append(out, pattern{name: name, re: re, may: may})
	}
	return out, nil
}

// maskString replaces every match of every pattern. It repeats until a pass
// changes nothing, and a string that still matches after that is replaced
// whole, so no matching value ever gets through.
func maskString(s string, ps []pattern) string {
	for range 4 {
		changed := false
		for _, p := range ps {
			if p.may(s) && p.re.MatchString(s) {
				s = p.re.ReplaceAllLiteralString(s, "[masked:"+p.name+"]")
				changed = true
			}
		}
		if !changed {
			return s
		}
	}
	for _, p := range ps {
		if p.may(s) && p.re.MatchString(s) {
			return "[masked]"
		}
	}
	return s
}

// compiled is a rule ready to run.
type compiled struct {
	Rule
	match    []cond
	patterns []pattern
	names    map[string]bool
}

func compileRules(rf *RuleFile) ([]compiled, error) {
	out := make([]compiled, len(rf.Rules))
	for i, r := range rf.Rules {
		c := compiled{Rule: r}
		var err error
		if c.match, err = compileMatch(r.Match); err != nil {
			return nil, err
		}
		if r.Mask != nil {
			if c.patterns, err = compilePatterns(r.Mask.Patterns); err != nil {
				return nil, err
			}
			c.names = map[string]bool{}
			for _, n := range r.Mask.FieldNames {
				c.names[strings.ToLower(n)] = true
			}
		}
		out[i] = c
	}
	return out, nil
}

func hashFields(e Event, fields []string) uint64 {
	h := fnv.New64a()
	for _, f := range fields {
		v, _ := e.get(f)
		h.Write([]byte(str(v)))
		h.Write([]byte{0})
	}
	return h.Sum64()
}

// decode parses one JSON line; numbers stay exact.
func decode(b []byte) (Event, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var e Event
	if err := d.Decode(&e); err != nil {
		return nil, err
	}
	return e, nil
}
