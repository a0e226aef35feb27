package logstream

import (
	"errors"
	"strings"
	"testing"
)

func TestSubjects(t *testing.T) {
	for _, c := range []struct {
		pattern, subject string
		want             bool
	}{
		{"app", "app", true}, {"app", "app.x", false},
		{"app.*", "app.x", true}, {"app.*", "app.x.y", false}, {"app.*", "app", false},
		{"app.>", "app.x.y", true}, {"app.>", "app", false}, {"*.web", "x.web", true},
	} {
		if got := Matches(c.pattern, c.subject); got != c.want {
			t.Errorf("Matches(%q, %q) = %v", c.pattern, c.subject, got)
		}
	}
	for s, ok := range map[string]bool{"a.b": true, "a..b": false, "": false, "a b": false, "a.*": false, "a.>": false} {
		if err := ValidSubject(s, false); (err == nil) != ok {
			t.Errorf("ValidSubject(%q): %v", s, err)
		}
	}
	if err := ValidSubject("a.>.b", true); err == nil {
		t.Error("'>' in the middle accepted")
	}
	if JSName("a_b", "c") == JSName("a", "b_c") {
		t.Error("tenant and stream names collide")
	}
}

func TestBuild(t *testing.T) {
	st := Stream{Tenant: "t1", JS: JSName("t1", "app"), Name: "app", Subject: "app.*"}
	msg, err := Build(st, Message{Subject: "app.web", Key: []byte("k"), Value: []byte("v"), Headers: map[string]string{"level": "info"}, DedupID: "d1"}, 1000)
	if err != nil || msg.Subject != "lb.t1.app.web" || msg.Header.Get(HdrKey) != "aw==" || msg.Header.Get("Nats-Msg-Id") != "d1" || msg.Header.Get("level") != "info" {
		t.Fatalf("%v %v", msg, err)
	}
	compact := Stream{Tenant: "t1", JS: JSName("t1", "state"), Name: "state", Subject: "state", Compact: true}
	msg, err = Build(compact, Message{Key: []byte("k"), Value: []byte("v")}, 1000)
	if err != nil || !strings.HasPrefix(msg.Subject, "lbk.t1.state.") || msg.Header.Get(HdrSubject) != "state" {
		t.Fatalf("compacted: %v %v", msg, err)
	}
	for name, m := range map[string]Message{
		"no subject on a wildcard stream": {Value: []byte("x")},
		"outside the stream's subject":    {Subject: "other", Value: []byte("x")},
		"reserved header":                 {Subject: "app.x", Headers: map[string]string{"Orbit-Key": "x"}},
		"long key":                        {Subject: "app.x", Key: make([]byte, MaxKeyBytes+1)},
	} {
		if _, err := Build(st, m, 1000); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := Build(compact, Message{Value: []byte("x")}, 1000); !errors.Is(err, ErrInvalid) {
		t.Errorf("keyless message in a compacted stream: %v", err)
	}
	if _, err := Build(st, Message{Subject: "app.x", Value: make([]byte, 1001)}, 1000); !errors.Is(err, ErrTooLarge) {
		t.Errorf("too large: %v", err)
	}
}
