package logstream

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Limits every publish path enforces (docs/limits.md).
const (
	// MaxKeyBytes bounds a message key (it becomes a subject token in
	// compacted streams).
	MaxKeyBytes = 256
	// MaxHeaders bounds the headers of one message.
	MaxHeaders = 32
	// MaxDedupIDBytes bounds a dedup ID.
	MaxDedupIDBytes = 128
	// DefaultMaxMessageBytes leaves room for headers under NATS's default
	// 1 MiB max_payload.
	DefaultMaxMessageBytes = 1000 << 10
)

// Stream is what publishing needs to know about a tenant's stream.
type Stream struct {
	Tenant string
	// JS is the JetStream stream's name.
	JS   string
	Name string
	// Subject is the stream's subject pattern as the tenant wrote it.
	Subject string
	Compact bool
}

// StreamOf reads a stream's conventions from its JetStream config; ok is
// false for a stream that is not a logbroker stream of tenant.
func StreamOf(tenant string, c jetstream.StreamConfig) (Stream, bool) {
	md := c.Metadata
	if md[MetaTenant] != tenant || md[MetaName] == "" || c.Name != JSName(tenant, md[MetaName]) {
		return Stream{}, false
	}
	return Stream{Tenant: tenant, JS: c.Name, Name: md[MetaName], Subject: md[MetaSubject], Compact: md[MetaCompact] == "true"}, true
}

// Message is one message to publish.
type Message struct {
	// Subject is a literal subject under the stream's; empty means the
	// stream's own when it has no wildcards.
	Subject string
	Key     []byte
	Value   []byte
	Headers map[string]string
	DedupID string
}

// ErrInvalid marks input a publish refuses; ErrTooLarge a message over the
// size limit.
var (
	ErrInvalid  = errors.New("invalid message")
	ErrTooLarge = errors.New("message too large")
)

// Build checks a message against the stream and the limits and returns the
// NATS message to publish.
func Build(st Stream, m Message, maxBytes int) (*nats.Msg, error) {
	bad := func(format string, args ...any) (*nats.Msg, error) {
		return nil, fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
	}
	subject := m.Subject
	if subject == "" {
		if !Literal(st.Subject) {
			return bad("subject is required: the stream's subject %q has wildcards", st.Subject)
		}
		subject = st.Subject
	}
	if err := ValidSubject(subject, false); err != nil {
		return bad("%v", err)
	}
	if !Matches(st.Subject, subject) {
		return bad("subject %q is not under the stream's subject %q", subject, st.Subject)
	}
	if len(m.Key) > MaxKeyBytes {
		return bad("key is %d bytes; the limit is %d", len(m.Key), MaxKeyBytes)
	}
	if st.Compact && len(m.Key) == 0 {
		return bad("the stream is compacted by key: every message needs a key")
	}
	if len(m.DedupID) > MaxDedupIDBytes {
		return bad("dedup_id is %d bytes; the limit is %d", len(m.DedupID), MaxDedupIDBytes)
	}
	if len(m.Headers) > MaxHeaders {
		return bad("%d headers; the limit is %d", len(m.Headers), MaxHeaders)
	}
	size := len(m.Key) + len(m.Value)
	msg := &nats.Msg{Subject: NATSSubject(st.Tenant, subject), Data: m.Value}
	if len(m.Headers) > 0 || len(m.Key) > 0 || m.DedupID != "" {
		msg.Header = make(nats.Header, len(m.Headers)+3)
	}
	for k, v := range m.Headers {
		lk := strings.ToLower(k)
		if strings.HasPrefix(lk, "nats-") || strings.HasPrefix(lk, "orbit-") || k == "" || strings.ContainsAny(k, ": \r\n") || strings.ContainsAny(v, "\r\n") {
			return bad("header %q: names starting Nats- or Orbit- are reserved; no ':', spaces or line breaks", k)
		}
		msg.Header.Set(k, v)
		size += len(k) + len(v)
	}
	if size > maxBytes {
		return nil, fmt.Errorf("%w: %d bytes; the limit is %d", ErrTooLarge, size, maxBytes)
	}
	if len(m.Key) > 0 {
		msg.Header.Set(HdrKey, base64.StdEncoding.EncodeToString(m.Key))
		if st.Compact {
			msg.Header.Set(HdrSubject, subject)
			msg.Subject = KeyedSubject(st.Tenant, st.Name, m.Key)
		}
	}
	if m.DedupID != "" {
		msg.Header.Set(jetstream.MsgIDHeader, m.DedupID)
	}
	return msg, nil
}

// ErrNotFound is returned for a stream the tenant does not have.
var ErrNotFound = errors.New("stream not found")

// Publisher publishes a tenant's messages straight to JetStream under the
// broker's conventions: the same checks, subjects, headers and dedup, and
// JetStream's own ack — no hop through the log broker. It is for trusted
// producers inside the platform with NATS access scoped to the tenant's
// subjects (lb.<tenant>.>, lbk.<tenant>.>); everyone else publishes through
// the broker's API, which authenticates them.
type Publisher struct {
	js       jetstream.JetStream
	tenant   string
	maxBytes int

	mu      sync.Mutex
	streams map[string]Stream
}

// NewPublisher returns a publisher for tenant; maxBytes 0 means
// DefaultMaxMessageBytes.
func NewPublisher(js jetstream.JetStream, tenant string, maxBytes int) *Publisher {
	if maxBytes <= 0 {
		maxBytes = DefaultMaxMessageBytes
	}
	return &Publisher{js: js, tenant: tenant, maxBytes: maxBytes, streams: map[string]Stream{}}
}

func (p *Publisher) stream(ctx context.Context, name string) (Stream, error) {
	p.mu.Lock()
	st, ok := p.streams[name]
	p.mu.Unlock()
	if ok {
		return st, nil
	}
	if err := ValidName("stream name", name); err != nil {
		return Stream{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	s, err := p.js.Stream(ctx, JSName(p.tenant, name))
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return Stream{}, fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	if err != nil {
		return Stream{}, err
	}
	st, ok = StreamOf(p.tenant, s.CachedInfo().Config)
	if !ok {
		return Stream{}, fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	p.mu.Lock()
	p.streams[name] = st
	p.mu.Unlock()
	return st, nil
}

// Publish stores one message and returns JetStream's ack.
func (p *Publisher) Publish(ctx context.Context, stream string, m Message) (*jetstream.PubAck, error) {
	st, err := p.stream(ctx, stream)
	if err != nil {
		return nil, err
	}
	msg, err := Build(st, m, p.maxBytes)
	if err != nil {
		return nil, err
	}
	ack, err := p.js.PublishMsg(ctx, msg)
	if errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) {
		p.mu.Lock()
		delete(p.streams, stream) // deleted meanwhile; look again next time
		p.mu.Unlock()
	}
	return ack, err
}
