// Package natsbus connects services to NATS the Orbit way: named connections
// that reconnect forever with jitter and log their state changes, and the
// context object carried in NATS message headers.
package natsbus

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/orbitplane/orbit/libs/reqctx"
)

// Defaults (docs/limits.md).
const (
	DefaultConnectTimeout  = 5 * time.Second
	DefaultReconnectWait   = 250 * time.Millisecond
	DefaultReconnectJitter = 250 * time.Millisecond
	// DefaultReconnectBufSize bounds what a publisher may buffer while
	// disconnected; publishing beyond it fails instead of growing memory.
	DefaultReconnectBufSize = 8 << 20
)

// Config configures a connection.
type Config struct {
	// URL is one or more comma-separated server URLs.
	URL string
	// Name identifies the connection in server monitoring, e.g. "querybroker".
	Name string
	// ConnectTimeout bounds the first connection; default 5 s.
	ConnectTimeout time.Duration
}

// Connect dials NATS. Once connected, the connection reconnects forever.
func Connect(ctx context.Context, cfg Config, log *slog.Logger) (*nats.Conn, error) {
	if cfg.URL == "" {
		return nil, fmt.Errorf("natsbus: no URL")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	timeout := cfg.ConnectTimeout
	if timeout <= 0 {
		timeout = DefaultConnectTimeout
	}
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < timeout {
		timeout = time.Until(dl)
	}
	nc, err := nats.Connect(cfg.URL,
		nats.Name(cfg.Name),
		nats.Timeout(timeout),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(DefaultReconnectWait),
		nats.ReconnectJitter(DefaultReconnectJitter, DefaultReconnectJitter),
		nats.ReconnectBufSize(DefaultReconnectBufSize),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			log.Warn("nats disconnected", "event", "nats.disconnected", "error", fmt.Sprint(err))
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			log.Info("nats reconnected", "event", "nats.reconnected", "url", c.ConnectedUrlRedacted())
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subject := ""
			if sub != nil {
				subject = sub.Subject
			}
			log.Error("nats async error", "event", "nats.error", "subject", subject, "error", err.Error())
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("natsbus: connect %s: %w", cfg.URL, err)
	}
	return nc, nil
}

// HeaderCarrier adapts NATS headers to the OpenTelemetry propagator. Keys are
// used as given (lower case, as W3C writes them): NATS headers are
// case-sensitive.
type HeaderCarrier nats.Header

// Get returns the first value of key.
func (h HeaderCarrier) Get(key string) string {
	if v := h[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// Set replaces key's values.
func (h HeaderCarrier) Set(key, value string) { h[key] = []string{value} }

// Keys lists the keys.
func (h HeaderCarrier) Keys() []string {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	return keys
}

// NewMsg returns a message for subject carrying ctx's trace context and
// baggage in its headers.
func NewMsg(ctx context.Context, subject string, data []byte) *nats.Msg {
	m := nats.NewMsg(subject)
	m.Data = data
	Inject(ctx, m)
	return m
}

// Inject writes ctx's trace context and baggage into m's headers.
func Inject(ctx context.Context, m *nats.Msg) {
	if m.Header == nil {
		m.Header = nats.Header{}
	}
	reqctx.Propagator().Inject(ctx, HeaderCarrier(m.Header))
}

// Extract returns ctx with the trace context and baggage of m's headers.
func Extract(ctx context.Context, m *nats.Msg) context.Context {
	if m.Header == nil {
		return ctx
	}
	return reqctx.Propagator().Extract(ctx, HeaderCarrier(m.Header))
}
