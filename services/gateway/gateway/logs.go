package gateway

import (
	"context"
	"errors"

	"connectrpc.com/connect"

	logbrokerv1 "github.com/orbitplane/orbit/proto/orbit/logbroker/v1"
	"github.com/orbitplane/orbit/proto/orbit/logbroker/v1/logbrokerv1connect"
)

// logsAPI relays the log broker. The broker scopes every call to the tenant
// in the context object, which the auth interceptor set from the API key, so
// a caller reaches only its own tenant's streams.
type logsAPI struct {
	s *Service
}

var _ logbrokerv1connect.LogBrokerServiceHandler = (*logsAPI)(nil)

func (l *logsAPI) up() (logbrokerv1connect.LogBrokerServiceClient, error) {
	if l.s.logbroker == nil {
		return nil, connect.NewError(connect.CodeUnimplemented, errors.New("this gateway has no log broker (--logbroker-url is empty)"))
	}
	return l.s.logbroker, nil
}

// unary forwards one call.
func unary[Req, Res any](ctx context.Context, req *connect.Request[Req], call func(context.Context, *connect.Request[Req]) (*connect.Response[Res], error)) (*connect.Response[Res], error) {
	resp, err := call(ctx, connect.NewRequest(req.Msg))
	if err != nil {
		return nil, forward(err)
	}
	return connect.NewResponse(resp.Msg), nil
}

func (l *logsAPI) CreateStream(ctx context.Context, req *connect.Request[logbrokerv1.CreateStreamRequest]) (*connect.Response[logbrokerv1.CreateStreamResponse], error) {
	up, err := l.up()
	if err != nil {
		return nil, err
	}
	return unary(ctx, req, up.CreateStream)
}

func (l *logsAPI) DeleteStream(ctx context.Context, req *connect.Request[logbrokerv1.DeleteStreamRequest]) (*connect.Response[logbrokerv1.DeleteStreamResponse], error) {
	up, err := l.up()
	if err != nil {
		return nil, err
	}
	return unary(ctx, req, up.DeleteStream)
}

func (l *logsAPI) ListStreams(ctx context.Context, req *connect.Request[logbrokerv1.ListStreamsRequest]) (*connect.Response[logbrokerv1.ListStreamsResponse], error) {
	up, err := l.up()
	if err != nil {
		return nil, err
	}
	return unary(ctx, req, up.ListStreams)
}

func (l *logsAPI) DescribeStream(ctx context.Context, req *connect.Request[logbrokerv1.DescribeStreamRequest]) (*connect.Response[logbrokerv1.DescribeStreamResponse], error) {
	up, err := l.up()
	if err != nil {
		return nil, err
	}
	return unary(ctx, req, up.DescribeStream)
}

func (l *logsAPI) Publish(ctx context.Context, req *connect.Request[logbrokerv1.PublishRequest]) (*connect.Response[logbrokerv1.PublishResponse], error) {
	up, err := l.up()
	if err != nil {
		return nil, err
	}
	return unary(ctx, req, up.Publish)
}

func (l *logsAPI) PublishBatch(ctx context.Context, req *connect.Request[logbrokerv1.PublishBatchRequest]) (*connect.Response[logbrokerv1.PublishBatchResponse], error) {
	up, err := l.up()
	if err != nil {
		return nil, err
	}
	return unary(ctx, req, up.PublishBatch)
}

func (l *logsAPI) SetCursor(ctx context.Context, req *connect.Request[logbrokerv1.SetCursorRequest]) (*connect.Response[logbrokerv1.SetCursorResponse], error) {
	up, err := l.up()
	if err != nil {
		return nil, err
	}
	return unary(ctx, req, up.SetCursor)
}

func (l *logsAPI) GetCursor(ctx context.Context, req *connect.Request[logbrokerv1.GetCursorRequest]) (*connect.Response[logbrokerv1.GetCursorResponse], error) {
	up, err := l.up()
	if err != nil {
		return nil, err
	}
	return unary(ctx, req, up.GetCursor)
}

// Subscribe relays a subscription; the response headers go out as soon as
// the broker's arrive, so a browser's live tail opens before the first line.
func (l *logsAPI) Subscribe(ctx context.Context, req *connect.Request[logbrokerv1.SubscribeRequest], stream *connect.ServerStream[logbrokerv1.SubscribeResponse]) error {
	up, err := l.up()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sub, err := up.Subscribe(ctx, connect.NewRequest(req.Msg))
	if err != nil {
		return forward(err)
	}
	if err := stream.Send(nil); err != nil {
		_ = sub.Close()
		return err
	}
	_, err = relay(ctx, sub, stream, nil, func() { _ = sub.Close() })
	return err
}
