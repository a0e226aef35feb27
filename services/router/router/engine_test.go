package router

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

func mustEngine(t testing.TB, yamlText string) *Engine {
	t.Helper()
	rf, err := ParseRules([]byte(yamlText))
	if err != nil {
		t.Fatal(err)
	}
	en, err := NewEngine(rf, "eu-1")
	if err != nil {
		t.Fatal(err)
	}
	return en
}

func run(en *Engine, lines ...string) *Result {
	res := newResult()
	for i, l := range lines {
		en.Process("src", []byte(l), uint64(i+1), res)
	}
	return res
}

func decodeOut(t *testing.T, o []Out) []Event {
	t.Helper()
	var out []Event
	for _, x := range o {
		e, err := decode(x.Data)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}

const sinks = `
version: 1
sources: [{stream: logs}]
sinks:
  all: {type: stdout}
  errors: {type: stdout}
`

func TestMatchDropRouteFinal(t *testing.T) {
	en := mustEngine(t, sinks+`
rules:
  - name: no-debug
    match: {level: DEBUG}
    drop: true
  - match: {level: {in: [ERROR, WARN]}, attrs.code: {exists: true}}
    route: [errors]
    final: true
  - match: {service: {regex: "^gate"}}
    enrich: {region: "${region}", attrs.team: edge}
  - route: [all]
`)
	res := run(en,
		`{"level":"DEBUG","message":"noise"}`,
		`{"level":"ERROR","message":"bad","attrs":{"code":"x"}}`,
		`{"level":"ERROR","message":"bad, no code"}`,
		`{"level":"INFO","service":"gateway","message":"ok","attrs":{"n":12345678901234567890}}`,
		`not json`,
	)
	if res.Dropped["no-debug"] != 1 {
		t.Fatalf("dropped %v", res.Dropped)
	}
	errs := decodeOut(t, res.Out["errors"])
	if len(errs) != 1 || errs[0]["message"] != "bad" {
		t.Fatalf("errors sink %v", errs)
	}
	all := decodeOut(t, res.Out["all"])
	if len(all) != 3 {
		t.Fatalf("all sink %d events: %v", len(all), all)
	}
	gw := all[1]
	if gw["region"] != "eu-1" || gw["attrs"].(map[string]any)["team"] != "edge" {
		t.Fatalf("enrich: %v", gw)
	}
	// Big numbers survive exactly.
	if !bytes.Contains(res.Out["all"][1].Data, []byte("12345678901234567890")) {
		t.Fatalf("number changed: %s", res.Out["all"][1].Data)
	}
	if res.Undecodable != 1 || all[2]["message"] != "not json" {
		t.Fatalf("undecodable line: %d %v", res.Undecodable, all[2])
	}
}

func TestUnroutedAndDefaultSinks(t *testing.T) {
	en := mustEngine(t, sinks+`
rules:
  - match: {level: ERROR}
    route: [errors]
`)
	if res := run(en, `{"level":"INFO"}`); res.Unrouted != 1 {
		t.Fatalf("unrouted %d", res.Unrouted)
	}
	en = mustEngine(t, sinks+`
default_sinks: [all]
rules:
  - match: {level: ERROR}
    route: [errors]
`)
	if res := run(en, `{"level":"INFO"}`); res.Unrouted != 0 || len(res.Out["all"]) != 1 {
		t.Fatalf("default sink: %+v", res)
	}
}

func TestSampling(t *testing.T) {
	en := mustEngine(t, sinks+`
rules:
  - sample: {rate: 10}
  - route: [all]
`)
	var lines []string
	for range 1000 {
		lines = append(lines, `{"m":1}`)
	}
	res := run(en, lines...)
	if n := len(res.Out["all"]); n != 100 {
		t.Fatalf("1 in 10 of 1000 kept %d", n)
	}
	if e := decodeOut(t, res.Out["all"][:1])[0]; fmt.Sprint(e["attrs"].(map[string]any)["sample_rate"]) != "10" {
		t.Fatalf("sample_rate: %v", e)
	}

	// Dynamic per key: a chatty key is thinned, a quiet one kept whole.
	en = mustEngine(t, sinks+`
rules:
  - sample: {key: service, per_key: 10, window: 1m}
  - route: [all]
`)
	lines = nil
	for range 1000 {
		lines = append(lines, `{"service":"chatty"}`)
	}
	for range 5 {
		lines = append(lines, `{"service":"quiet"}`)
	}
	res = run(en, lines...)
	quiet, chatty := 0, 0
	for _, e := range decodeOut(t, res.Out["all"]) {
		if e["service"] == "quiet" {
			quiet++
		} else {
			chatty++
		}
	}
	if quiet != 5 || chatty < 10 || chatty > 200 {
		t.Fatalf("per-key sampling kept quiet %d, chatty %d of 1000", quiet, chatty)
	}
}

func TestDedupWindow(t *testing.T) {
	en := mustEngine(t, sinks+`
rules:
  - dedup: {fields: [message, service], window: 10s}
  - route: [all]
`)
	now := time.Unix(1000, 0)
	en.now = func() time.Time { return now }
	res := run(en, `{"message":"a","service":"s"}`, `{"message":"a","service":"s"}`, `{"message":"a","service":"t"}`)
	if len(res.Out["all"]) != 2 {
		t.Fatalf("dedup kept %d", len(res.Out["all"]))
	}
	now = now.Add(11 * time.Second)
	if res := run(en, `{"message":"a","service":"s"}`); len(res.Out["all"]) != 1 {
		t.Fatal("after the window the event passes again")
	}
}

func TestAggregateHoldsTheCursor(t *testing.T) {
	en := mustEngine(t, sinks+`
rules:
  - match: {level: INFO}
    aggregate: {by: [service], window: 10s}
    route: [all]
  - route: [errors]
`)
	now := time.Unix(1000, 0)
	en.now = func() time.Time { return now }
	res := newResult()
	for i, l := range []string{`{"level":"INFO","service":"a"}`, `{"level":"INFO","service":"a"}`, `{"level":"INFO","service":"b"}`, `{"level":"ERROR","service":"a"}`} {
		en.Process("src", []byte(l), uint64(i+7), res)
	}
	if held := en.Flush(res, false); held != 7 {
		t.Fatalf("open window holds offset %d, want 7", held)
	}
	if len(res.Out["all"]) != 0 || len(res.Out["errors"]) != 1 {
		t.Fatalf("before the window ends: %v", res.Out)
	}
	now = now.Add(10 * time.Second)
	if held := en.Flush(res, false); held != 0 {
		t.Fatalf("held %d after the window", held)
	}
	counts := decodeOut(t, res.Out["all"])
	if len(counts) != 2 || counts[0]["event"] != "router.count" || fmt.Sprint(counts[0]["attrs"].(map[string]any)["count"]) != "2" {
		t.Fatalf("counts %v", counts)
	}
}

func TestMaskFieldsNamesAndPatterns(t *testing.T) {
	en := mustEngine(t, sinks+`
rules:
  - mask: {fields: [attrs.user], field_names: [password], patterns: [email, ipv4, card, token]}
    route: [all]
`)
	res := run(en, `{"message":"login bob@example.com from 10.1.2.3 card 4111 1111 1111 1111 Bearer abc.def-ghi","attrs":{"user":"bob","nested":{"Password":"hunter2"},"list":["x@y.io"]}}`)
	out := string(res.Out["all"][0].Data)
	for _, leak := range []string{"bob@example.com", "10.1.2.3", "4111", "hunter2", `"bob"`, "abc.def-ghi", "x@y.io"} {
		if strings.Contains(out, leak) {
			t.Errorf("%q leaked: %s", leak, out)
		}
	}
	if !strings.Contains(out, "[masked:email]") || !strings.Contains(out, "[masked:ipv4]") {
		t.Fatalf("no masks: %s", out)
	}
}

// TestMaskNeverLetsAMatchThrough is the property: whatever text surrounds
// them, values matching a mask pattern never reach a sink.
func TestMaskNeverLetsAMatchThrough(t *testing.T) {
	names := []string{"email", "ipv4", "ipv6", "card", "token"}
	ps, err := compilePatterns(names)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 20000 {
		s := randomText(rng)
		out := maskString(s, ps)
		for _, p := range ps {
			if m := p.re.FindString(out); m != "" {
				t.Fatalf("case %d: %s match %q survived masking\n in:  %q\n out: %q", i, p.name, m, s, out)
			}
		}
	}
}

func FuzzMask(f *testing.F) {
	for _, s := range []string{"bob@example.com", "10.0.0.1", "fe80::1", "4111-1111-1111-1111", "Bearer eyJa.eyJb.sig", "password=x", "a@b.co 1.2.3.4"} {
		f.Add(s)
	}
	ps, err := compilePatterns([]string{"email", "ipv4", "ipv6", "card", "token"})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := maskString(s, ps)
		for _, p := range ps {
			if m := p.re.FindString(out); m != "" {
				t.Fatalf("%s match %q survived: %q -> %q", p.name, m, s, out)
			}
		}
	})
}

func randomText(rng *rand.Rand) string {
	pieces := []func() string{
		func() string {
			return fmt.Sprintf("%s%d@%s.%s", word(rng), rng.IntN(100), word(rng), []string{"com", "io", "de", "co.uk"}[rng.IntN(4)])
		},
		func() string {
			return fmt.Sprintf("%d.%d.%d.%d", rng.IntN(256), rng.IntN(256), rng.IntN(256), rng.IntN(256))
		},
		func() string { return fmt.Sprintf("%x:%x::%x", rng.IntN(65536), rng.IntN(65536), rng.IntN(65536)) },
		func() string { return cardNumber(rng) },
		func() string { return "Bearer " + word(rng) + "." + word(rng) },
		func() string { return "ok_" + word(rng) + word(rng) + "12345678" },
		func() string { return "api_key=" + word(rng) },
		func() string { return flipCase(rng, "eyJ"+word(rng)+"."+word(rng)+"."+word(rng)) },
		func() string { return flipCase(rng, "bearer ") + word(rng) },
		func() string { return word(rng) },
		func() string {
			return []string{" ", ", ", ":", "=", "\"", "(", ")", "/", "-", "@", ".", "\n"}[rng.IntN(12)]
		},
		func() string { return fmt.Sprint(rng.IntN(1_000_000)) },
	}
	var b strings.Builder
	for range 1 + rng.IntN(12) {
		b.WriteString(pieces[rng.IntN(len(pieces))]())
	}
	return b.String()
}

// flipCase changes the case of random letters (the token expression is
// case-insensitive; a shortcut that is not would let values through).
func flipCase(rng *rand.Rand, s string) string {
	b := []byte(s)
	for i, c := range b {
		if rng.IntN(2) == 0 {
			switch {
			case c >= 'a' && c <= 'z':
				b[i] = c - 32
			case c >= 'A' && c <= 'Z':
				b[i] = c + 32
			}
		}
	}
	return string(b)
}

func word(rng *rand.Rand) string {
	const letters = "abcdefghijklmnopqrstuvwxyzABCDEF0123456789_"
	n := 1 + rng.IntN(10)
	b := make([]byte, n)
	for i := range b {
		b[i] = letters[rng.IntN(len(letters))]
	}
	return string(b)
}

func cardNumber(rng *rand.Rand) string {
	var b strings.Builder
	n := 13 + rng.IntN(7)
	sep := []string{"", " ", "-"}[rng.IntN(3)]
	for i := range n {
		if i > 0 && i%4 == 0 {
			b.WriteString(sep)
		}
		b.WriteByte(byte('0' + rng.IntN(10)))
	}
	return b.String()
}

func TestRuleFileErrors(t *testing.T) {
	for name, y := range map[string]string{
		"version":       "version: 2",
		"unknown field": sinks + "rules: [{route: [all], drpo: true}]",
		"unknown sink":  sinks + "rules: [{route: [nowhere]}]",
		"two actions":   sinks + "rules: [{drop: true, sample: {rate: 2}}]",
		"does nothing":  sinks + "rules: [{match: {level: INFO}}]",
		"bad regex":     sinks + "rules: [{match: {m: {regex: '('}}, route: [all]}]",
		"bad pattern":   sinks + "rules: [{mask: {patterns: ['(']}, route: [all]}]",
		"sink type":     "version: 1\nsinks: {x: {type: kafka}}",
		"agg no route":  sinks + "rules: [{aggregate: {by: [a], window: 1s}}]",
		"bad duration":  sinks + "rules: [{dedup: {fields: [a], window: soon}}]",
	} {
		if _, err := ParseRules([]byte(y)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestRunTests(t *testing.T) {
	rf, err := ParseRules([]byte(sinks + `
rules:
  - match: {level: DEBUG}
    drop: true
  - mask: {patterns: [email]}
    route: [all]
tests:
  - name: masks and drops
    inputs:
      - {level: DEBUG, message: x}
      - {level: INFO, message: "mail a@b.io"}
    outputs:
      all: [{message: "mail [masked:email]"}]
    dropped: 1
  - name: wrong on purpose
    inputs: [{level: INFO, message: "plain"}]
    outputs:
      all: [{message: "other"}]
`))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	failed, err := RunTests(rf, &out)
	if err != nil || failed != 1 || !strings.Contains(out.String(), "PASS masks and drops") || !strings.Contains(out.String(), "FAIL wrong on purpose") || !strings.Contains(out.String(), "message differs") {
		t.Fatalf("failed %d %v\n%s", failed, err, out.String())
	}
}
