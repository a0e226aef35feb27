package reqctx

import (
	"context"
	"errors"

	"connectrpc.com/connect"
)

// RequestIDHeader echoes the request ID to callers so they can quote it.
const RequestIDHeader = "X-Request-Id"

// ServerInterceptor makes sure every request handled has a request ID and
// returns it in the response header. It runs after otelconnect's interceptor,
// which extracts the trace context and baggage from the request headers.
func ServerInterceptor() connect.Interceptor { return serverInterceptor{} }

type serverInterceptor struct{}

func (serverInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if req.Spec().IsClient {
			return next(ctx, req)
		}
		ctx, id := EnsureRequestID(ctx)
		resp, err := next(ctx, req)
		if resp != nil {
			resp.Header().Set(RequestIDHeader, id)
		}
		var cerr *connect.Error
		if errors.As(err, &cerr) {
			cerr.Meta().Set(RequestIDHeader, id)
		}
		return resp, err
	}
}

func (serverInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (serverInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		ctx, id := EnsureRequestID(ctx)
		conn.ResponseHeader().Set(RequestIDHeader, id)
		return next(ctx, conn)
	}
}
