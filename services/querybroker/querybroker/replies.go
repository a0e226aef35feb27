package querybroker

import (
	"fmt"
	"strings"
	"sync"

	"github.com/nats-io/nats.go"

	"github.com/orbitplane/orbit/libs/reqctx"
	"github.com/orbitplane/orbit/services/connector/connector"
)

// replies is the broker's one reply subscription, reply.<broker>.*: a query
// costs no SUB/UNSUB round of its own; frames are handed to the query by its
// ID (the subject's last token).
type replies struct {
	prefix string // reply.<broker>.
	sub    *nats.Subscription

	mu      sync.Mutex
	waiting map[string]*waiter
}

type waiter struct {
	ch       chan *nats.Msg
	size     int
	overflow bool
}

func newReplies() *replies {
	return &replies{prefix: connector.ReplySubjectPrefix + reqctx.NewID()[:12] + ".", waiting: map[string]*waiter{}}
}

func (r *replies) start(nc *nats.Conn) error {
	sub, err := nc.Subscribe(r.prefix+"*", r.dispatch)
	if err != nil {
		return fmt.Errorf("querybroker: reply subscription: %w", err)
	}
	// Credits bound what is in flight per query; this bounds the sum.
	_ = sub.SetPendingLimits(1<<20, 1<<30)
	r.sub = sub
	return nil
}

func (r *replies) stop() {
	if r.sub != nil {
		_ = r.sub.Unsubscribe()
	}
}

// register returns the reply subject for a query and the channel its
// messages arrive on. A query that overruns its channel (more frames than
// credits) gets a nil message and fails; nothing blocks the dispatcher.
func (r *replies) register(queryID string, size int) (string, chan *nats.Msg, func()) {
	// One slot more than messages may use: room for the overflow marker.
	ch := make(chan *nats.Msg, size+1)
	r.mu.Lock()
	r.waiting[queryID] = &waiter{ch: ch, size: size}
	r.mu.Unlock()
	return r.prefix + queryID, ch, func() {
		r.mu.Lock()
		delete(r.waiting, queryID)
		r.mu.Unlock()
	}
}

func (r *replies) dispatch(m *nats.Msg) {
	id := strings.TrimPrefix(m.Subject, r.prefix)
	r.mu.Lock()
	defer r.mu.Unlock()
	w, ok := r.waiting[id]
	if !ok || w.overflow {
		return // the query ended (canceled, timed out) or failed; late frames are moot
	}
	if len(w.ch) < w.size {
		w.ch <- m
		return
	}
	w.overflow = true
	w.ch <- nil // the reserved slot
}
