package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"connectrpc.com/connect"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/orbitplane/orbit/libs/connectserver"
	"github.com/orbitplane/orbit/libs/directtoken"

	gatewayv1 "github.com/orbitplane/orbit/proto/orbit/gateway/v1"
	"github.com/orbitplane/orbit/proto/orbit/gateway/v1/gatewayv1connect"
	queryv1 "github.com/orbitplane/orbit/proto/orbit/query/v1"
	"github.com/orbitplane/orbit/proto/orbit/query/v1/queryv1connect"
	registryv1 "github.com/orbitplane/orbit/proto/orbit/registry/v1"
	"github.com/orbitplane/orbit/proto/orbit/registry/v1/registryv1connect"
)

// forward copies the error of an internal call, keeping its code, message
// and details, but not its transport metadata.
func forward(err error) error {
	var ce *connect.Error
	if errors.As(err, &ce) {
		out := connect.NewError(ce.Code(), errors.New(ce.Message()))
		for _, d := range ce.Details() {
			out.AddDetail(d)
		}
		return out
	}
	return connect.NewError(connect.CodeUnavailable, err)
}

type queryAPI struct {
	queryv1connect.UnimplementedQueryServiceHandler
	s *Service
}

// ExecuteQuery relays the broker's stream; the tenant travels in the
// context object the auth interceptor set.
//
// The summary is the stream's last message (the broker sends nothing after
// it), so the answer ends as soon as the summary is sent: the client does not
// wait for the broker's own end of stream, which the goroutine reading the
// upstream takes in afterwards (at most UpstreamDrainTimeout). A client that
// leaves earlier cancels the upstream call at once.
//
// The result messages pass through undecoded (rawResponse); the handler is
// mounted at ExecuteQuery's path by New, ahead of the generated service
// handler.
func (q *queryAPI) executeQuery(ctx context.Context, req *connect.Request[queryv1.ExecuteQueryRequest], stream *connect.ServerStream[rawResponse]) error {
	p := principalFrom(ctx)
	done, err := q.s.startQuery(p.tenant)
	if err != nil {
		return err
	}
	defer done()
	upCtx, cancelUp := context.WithCancel(context.WithoutCancel(ctx))
	stopFollowing := context.AfterFunc(ctx, cancelUp)
	up, err := q.s.rawExecute.CallServerStream(upCtx, connect.NewRequest(req.Msg))
	if err != nil {
		stopFollowing()
		cancelUp()
		return forward(err)
	}
	u := &upstream{cancel: cancelUp, close: up.Close}
	last := func(m *rawResponse) (bool, error) {
		ok, err := m.isSummary()
		if err != nil {
			return false, connect.NewError(connect.CodeInternal, fmt.Errorf("a result message from the broker is malformed: %w", err))
		}
		return ok, nil
	}
	ended, err := relay(ctx, up, stream, last, u.release)
	if ended && stopFollowing() {
		// The upstream's end may still be to come; bound the wait for it.
		u.bound(UpstreamDrainTimeout)
	}
	return err
}

// upstream is a query's call to the broker once the client's answer may
// have ended without it. release (by the goroutine reading it, at its end)
// and bound (by the handler, once the answer ended) may come in either
// order: bound arms a timer that cuts the call only while it is still open,
// and release stops it. A timer armed after the release would keep the
// call's context — the request, its baggage and span — alive for the whole
// timeout after every query: at 2,000 queries/s, ≈ 90 MB of live heap that
// every GC cycle had to mark (docs/benchmarks.md).
type upstream struct {
	cancel   context.CancelFunc
	close    func() error
	mu       sync.Mutex
	released bool
	timer    *time.Timer
}

func (u *upstream) release() {
	_ = u.close()
	u.cancel()
	u.mu.Lock()
	defer u.mu.Unlock()
	u.released = true
	if u.timer != nil {
		u.timer.Stop()
	}
}

// bound cuts the call after d unless it ends first; it reports whether a
// timer was armed (false: the call had already ended).
func (u *upstream) bound(d time.Duration) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.released {
		return false
	}
	u.timer = time.AfterFunc(d, u.cancel)
	return true
}

// UpstreamDrainTimeout bounds how long the gateway reads a query's upstream
// stream after its summary went to the client.
const UpstreamDrainTimeout = 10 * time.Second

// relay copies a server stream. Messages that arrived together leave
// together: a burst is sent corked and flushed once, when no further message
// is ready. If last reports a message as the stream's last, relay returns
// (true, nil) once it is sent; an error from last ends the relay with it.
// release is called when the upstream is done with: by the goroutine
// reading it, after its end (or an error).
func relay[T any](ctx context.Context, up *connect.ServerStreamForClient[T], down *connect.ServerStream[T], last func(*T) (bool, error), release func()) (bool, error) {
	msgs := make(chan *T, 16)
	var upErr error
	go func() {
		defer release()
		defer close(msgs)
		for up.Receive() {
			select {
			case msgs <- up.Msg():
			case <-ctx.Done():
				return
			}
		}
		upErr = up.Err()
	}()
	isLast := func(m *T) (bool, error) {
		if last == nil {
			return false, nil
		}
		return last(m)
	}
	send := func(m *T) error {
		err := down.Send(m)
		if r, ok := any(m).(interface{ release() }); ok {
			r.release() // sent: its buffer may be reused
		}
		return err
	}
	for m := range msgs {
		uncork := connectserver.Cork(ctx)
		ended, err := isLast(m)
		if err == nil {
			err = send(m)
		}
	burst:
		for err == nil && !ended {
			select {
			case next, ok := <-msgs:
				if !ok {
					break burst
				}
				if ended, err = isLast(next); err == nil {
					err = send(next)
				}
			default:
				break burst
			}
		}
		uncork()
		if err != nil {
			return false, err
		}
		if ended {
			return true, nil
		}
	}
	if upErr != nil {
		return false, forward(upErr)
	}
	return false, nil
}

func (q *queryAPI) GetSchema(ctx context.Context, req *connect.Request[queryv1.GetSchemaRequest]) (*connect.Response[queryv1.GetSchemaResponse], error) {
	resp, err := q.s.broker.GetSchema(ctx, connect.NewRequest(req.Msg))
	if err != nil {
		return nil, forward(err)
	}
	return connect.NewResponse(resp.Msg), nil
}

// registryAPI is the read side of the registry, scoped to the caller's
// tenant whatever tenant the request names.
type registryAPI struct {
	registryv1connect.UnimplementedRegistryServiceHandler
	s *Service
}

var errReadOnly = connect.NewError(connect.CodePermissionDenied, errors.New("satellites register through a connector with a deploy key, not through the public API"))

func (r *registryAPI) Register(context.Context, *connect.Request[registryv1.RegisterRequest]) (*connect.Response[registryv1.RegisterResponse], error) {
	return nil, errReadOnly
}

func (r *registryAPI) Heartbeat(context.Context, *connect.Request[registryv1.HeartbeatRequest]) (*connect.Response[registryv1.HeartbeatResponse], error) {
	return nil, errReadOnly
}

func (r *registryAPI) Disconnect(context.Context, *connect.Request[registryv1.DisconnectRequest]) (*connect.Response[registryv1.DisconnectResponse], error) {
	return nil, errReadOnly
}

func (r *registryAPI) GetSatellite(ctx context.Context, req *connect.Request[registryv1.GetSatelliteRequest]) (*connect.Response[registryv1.GetSatelliteResponse], error) {
	m := req.Msg
	m.TenantId = principalFrom(ctx).tenant.TenantId
	resp, err := r.s.registry.GetSatellite(ctx, connect.NewRequest(m))
	if err != nil {
		return nil, forward(err)
	}
	return connect.NewResponse(resp.Msg), nil
}

func (r *registryAPI) ListSatellites(ctx context.Context, req *connect.Request[registryv1.ListSatellitesRequest]) (*connect.Response[registryv1.ListSatellitesResponse], error) {
	m := req.Msg
	m.TenantId = principalFrom(ctx).tenant.TenantId
	resp, err := r.s.registry.ListSatellites(ctx, connect.NewRequest(m))
	if err != nil {
		return nil, forward(err)
	}
	return connect.NewResponse(resp.Msg), nil
}

func (r *registryAPI) WatchSatellites(ctx context.Context, req *connect.Request[registryv1.WatchSatellitesRequest], stream *connect.ServerStream[registryv1.WatchSatellitesResponse]) error {
	m := req.Msg
	m.TenantId = principalFrom(ctx).tenant.TenantId
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	up, err := r.s.registry.WatchSatellites(ctx, connect.NewRequest(m))
	if err != nil {
		return forward(err)
	}
	defer up.Close()
	// Headers at once: a browser knows the watch is live before the first
	// event (a tenant with no satellites gets none).
	if err := stream.Send(nil); err != nil {
		return err
	}
	for up.Receive() {
		if err := stream.Send(up.Msg()); err != nil {
			return err
		}
	}
	if err := up.Err(); err != nil && ctx.Err() == nil {
		return forward(err)
	}
	return nil
}

// DeleteSatellite deletes one of the caller's satellites (satellites:write).
func (r *registryAPI) DeleteSatellite(ctx context.Context, req *connect.Request[registryv1.DeleteSatelliteRequest]) (*connect.Response[registryv1.DeleteSatelliteResponse], error) {
	m := req.Msg
	m.TenantId = principalFrom(ctx).tenant.TenantId
	resp, err := r.s.registry.DeleteSatellite(ctx, connect.NewRequest(m))
	if err != nil {
		return nil, forward(err)
	}
	return connect.NewResponse(resp.Msg), nil
}

type gatewayAPI struct {
	gatewayv1connect.UnimplementedGatewayServiceHandler
	s *Service
}

func (g *gatewayAPI) WhoAmI(ctx context.Context, _ *connect.Request[gatewayv1.WhoAmIRequest]) (*connect.Response[gatewayv1.WhoAmIResponse], error) {
	p := principalFrom(ctx)
	return connect.NewResponse(&gatewayv1.WhoAmIResponse{TenantId: p.tenant.TenantId, TenantName: p.tenant.Name, Scopes: p.key.Scopes, Region: g.s.cfg.Region}), nil
}

// ListRegions lists the regions with a published gateway: the same key
// works in each (contexts reach every region). Any valid key may ask.
func (g *gatewayAPI) ListRegions(ctx context.Context, _ *connect.Request[gatewayv1.ListRegionsRequest]) (*connect.Response[gatewayv1.ListRegionsResponse], error) {
	rs, err := g.s.ctxs.Regions(ctx)
	if err != nil {
		return nil, connect.NewError(connect.CodeUnavailable, fmt.Errorf("region contexts: %w", err))
	}
	out := &gatewayv1.ListRegionsResponse{}
	for _, r := range rs {
		if r.GatewayUrl == "" && r.Name != g.s.cfg.Region {
			continue // a region without a public gateway cannot be picked
		}
		out.Regions = append(out.Regions, &gatewayv1.Region{Name: r.Name, GatewayUrl: r.GatewayUrl, Hub: r.Hub, Current: r.Name == g.s.cfg.Region})
	}
	return connect.NewResponse(out), nil
}

// GetDirectEndpoint tells the caller where one of its satellites serves
// direct mode and signs a short-lived token for it: audience that
// satellite, the caller's tenant.
func (g *gatewayAPI) GetDirectEndpoint(ctx context.Context, req *connect.Request[gatewayv1.GetDirectEndpointRequest]) (*connect.Response[gatewayv1.GetDirectEndpointResponse], error) {
	p := principalFrom(ctx)
	if req.Msg.Satellite == "" {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("satellite (ID or name) is required"))
	}
	resp, err := g.s.registry.GetSatellite(ctx, connect.NewRequest(&registryv1.GetSatelliteRequest{TenantId: p.tenant.TenantId, Satellite: req.Msg.Satellite}))
	if err != nil {
		return nil, forward(err)
	}
	sat := resp.Msg.Satellite
	if sat.Status == registryv1.SatelliteStatus_SATELLITE_STATUS_DISCONNECTED {
		return nil, connect.NewError(connect.CodeUnavailable, fmt.Errorf("satellite %s is disconnected", sat.Name))
	}
	if sat.DnsName == "" {
		return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("satellite %s has no certificate yet: direct mode is not available; use passthrough", sat.Name))
	}
	_, portText, err := net.SplitHostPort(sat.Address)
	port, perr := strconv.Atoi(portText)
	if err != nil || perr != nil || port <= 0 || port > 65535 {
		return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("satellite %s advertises no usable direct address (%q); use passthrough", sat.Name, sat.Address))
	}
	key, err := g.s.directKey(ctx)
	if err != nil {
		g.s.log.ErrorContext(ctx, "direct token key", "error", err)
		return nil, connect.NewError(connect.CodeUnavailable, errors.New("direct mode is unavailable (signing key); use passthrough"))
	}
	token, exp, err := directtoken.Issue(key, sat.Id, p.tenant.TenantId, g.s.cfg.DirectTokenTTL)
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	return connect.NewResponse(&gatewayv1.GetDirectEndpointResponse{DnsName: sat.DnsName, Port: int32(port), Token: token, ExpiresAt: timestamppb.New(exp)}), nil
}
