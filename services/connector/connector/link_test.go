package connector

import "testing"

func TestValidReply(t *testing.T) {
	for subject, want := range map[string]bool{
		"reply.q1":          true,
		"reply.b7.q1":       true,
		"reply.q2":          false, // another query's subject
		"reply.b7.q2":       false,
		"reply.*":           false, // a wildcard would deliver elsewhere
		"reply.>":           false,
		"satellite.q1":      false,
		"reply..q1":         false,
		"reply.b7.q1 extra": false,
		"reply.b7.x.q1":     false,
	} {
		if got := validReply(subject, "q1"); got != want {
			t.Errorf("validReply(%q) = %v, want %v", subject, got, want)
		}
	}
}
