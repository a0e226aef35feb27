package connectclient

import (
	"context"
	"net/http"

	"connectrpc.com/connect"
	"go.opentelemetry.io/otel/trace"
)

// Bearer sends "Authorization: Bearer <key>" on every call: how programs
// present an API key to the gateway.
func Bearer(key string) connect.Interceptor { return bearer(key) }

type bearer string

func (b bearer) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		req.Header().Set("Authorization", "Bearer "+string(b))
		return next(ctx, req)
	}
}

func (b bearer) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		conn.RequestHeader().Set("Authorization", "Bearer "+string(b))
		return conn
	}
}

func (b bearer) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// For returns what a service needs to call others: hc (or, if nil, a new
// HTTPClient without TLS config) and the standard Options.
func For(hc *http.Client, tp trace.TracerProvider) (*http.Client, []connect.ClientOption, error) {
	if hc == nil {
		hc = HTTPClient(nil)
	}
	opts, err := Options(tp)
	return hc, opts, err
}
