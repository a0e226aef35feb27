package querybroker

import (
	"testing"

	"github.com/nats-io/nats.go"
)

// A query that receives more messages than its credits allow gets a nil
// marker (it fails with LOST_FRAME) and the dispatcher never blocks.
func TestRepliesOverflowNeverBlocks(t *testing.T) {
	r := newReplies()
	subject, ch, release := r.register("q1", 2)
	defer release()
	for range 10 {
		r.dispatch(&nats.Msg{Subject: subject, Data: []byte{1}})
	}
	r.dispatch(&nats.Msg{Subject: r.prefix + "unknown"}) // an ended query: dropped, not blocking
	var got []*nats.Msg
	for len(ch) > 0 {
		got = append(got, <-ch)
	}
	if len(got) != 3 || got[0] == nil || got[1] == nil || got[2] != nil {
		t.Fatalf("got %d messages, last %v", len(got), got[len(got)-1])
	}
}
