package registry

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/orbitplane/orbit/libs/etcdkv"
	"github.com/orbitplane/orbit/libs/obslog"
	registryv1 "github.com/orbitplane/orbit/proto/orbit/registry/v1"
	"github.com/orbitplane/orbit/proto/orbit/registry/v1/registryv1connect"
)

type api struct {
	registryv1connect.UnimplementedRegistryServiceHandler
	s *Service
}

func invalid(format string, args ...any) error {
	return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf(format, args...))
}

func validateRegister(r *registryv1.RegisterRequest) error {
	switch {
	case r.TenantId == "":
		return invalid("tenant_id is required")
	case r.Identity == "" || len(r.Identity) > MaxIdentityLen:
		return invalid("identity must be 1..%d bytes", MaxIdentityLen)
	case len(r.Name) > MaxNameLen:
		return invalid("name is longer than %d bytes", MaxNameLen)
	case len(r.Labels) > MaxLabels:
		return invalid("%d labels; the limit is %d", len(r.Labels), MaxLabels)
	}
	for k, v := range r.Labels {
		if k == "" || len(k) > MaxLabelKeyLen || len(v) > MaxLabelValueLen {
			return invalid("label %q: keys must be 1..%d bytes and values at most %d", k, MaxLabelKeyLen, MaxLabelValueLen)
		}
	}
	return nil
}

// Register assigns (or finds) the satellite's ID and records it as HEALTHY
// on the calling connector with a new link generation. The record is in etcd
// before the answer.
func (a *api) Register(ctx context.Context, req *connect.Request[registryv1.RegisterRequest]) (*connect.Response[registryv1.RegisterResponse], error) {
	r := req.Msg
	if err := validateRegister(r); err != nil {
		return nil, err
	}
	s := a.s
	ikey := IdentityKey(r.TenantId, r.Identity)
	s.state.mu.RLock()
	id, known := s.state.identity[ikey]
	s.state.mu.RUnlock()
	created := false
	if !known {
		// The identity -> ID mapping is claimed atomically in etcd, so two
		// registrations racing (even on two registries) agree on one ID.
		newID := uuid.NewString()
		ok, existing, err := etcdkv.CreateIfAbsent(ctx, s.etcd, IdentityPrefix+ikey, []byte(newID))
		if err != nil {
			return nil, connect.NewError(connect.CodeUnavailable, err)
		}
		id, created = newID, ok
		if !ok {
			if existing == nil {
				return nil, connect.NewError(connect.CodeAborted, errors.New("identity changed concurrently; retry"))
			}
			id = string(existing)
		}
	}
	now := time.Now()
	name := r.Name
	if name == "" {
		name = r.Identity
		if len(name) > 12 {
			name = name[:12]
		}
	}
	s.state.mu.Lock()
	e, ok := s.state.byID[id]
	if !ok {
		e = &entry{sat: &registryv1.Satellite{Id: id, TenantId: r.TenantId, Identity: r.Identity, RegisteredAt: timestamppb.New(now), Region: s.cfg.Region}}
		s.state.byID[id] = e
	}
	s.state.identity[ikey] = id
	sat := e.sat
	sat.Name, sat.Labels, sat.Version, sat.Address = name, cloneLabels(r.Labels), r.Version, r.Address
	sat.ConnectorId = r.ConnectorId
	sat.Status = registryv1.SatelliteStatus_SATELLITE_STATUS_HEALTHY
	sat.StatusDetail = ""
	sat.LinkGeneration++
	sat.LastHeartbeat = timestamppb.New(now)
	e.lastSeen = now
	s.state.changed(e)
	delete(s.state.dirty, id) // written below, synchronously
	out := proto.Clone(sat).(*registryv1.Satellite)
	s.state.mu.Unlock()

	if _, err := etcdkv.PutProto(ctx, s.etcd, SatellitePrefix+id, out); err != nil {
		s.state.redirty([]*registryv1.Satellite{out})
		return nil, connect.NewError(connect.CodeUnavailable, err)
	}
	s.m.etcdKeys.Inc()
	s.m.registers.Inc()
	s.log.InfoContext(ctx, "satellite registered", obslog.Event("registry.registered"),
		"satellite", id, "tenant", r.TenantId, "name", name, "created", created, "connector", r.ConnectorId, "generation", out.LinkGeneration)
	return connect.NewResponse(&registryv1.RegisterResponse{Satellite: out, Created: created}), nil
}

func (a *api) Heartbeat(_ context.Context, req *connect.Request[registryv1.HeartbeatRequest]) (*connect.Response[registryv1.HeartbeatResponse], error) {
	unknown := a.s.applyHeartbeats(req.Msg)
	return connect.NewResponse(&registryv1.HeartbeatResponse{UnknownIds: unknown}), nil
}

func (a *api) Disconnect(ctx context.Context, req *connect.Request[registryv1.DisconnectRequest]) (*connect.Response[registryv1.DisconnectResponse], error) {
	n := a.s.state.disconnect(req.Msg.SatelliteIds, req.Msg.ConnectorId, "link closed")
	a.s.m.disconnects.WithLabelValues("link_closed").Add(float64(n))
	if n > 0 {
		a.s.log.InfoContext(ctx, "satellites disconnected", obslog.Event("registry.disconnected"), "connector", req.Msg.ConnectorId, "count", n)
	}
	return connect.NewResponse(&registryv1.DisconnectResponse{}), nil
}

func (a *api) GetSatellite(_ context.Context, req *connect.Request[registryv1.GetSatelliteRequest]) (*connect.Response[registryv1.GetSatelliteResponse], error) {
	if req.Msg.Satellite == "" {
		return nil, invalid("satellite (ID or name) is required")
	}
	sat, n := a.s.state.get(req.Msg.TenantId, req.Msg.Satellite)
	switch {
	case n == 0:
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("no satellite %q", req.Msg.Satellite))
	case n > 1:
		return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("%d satellites are named %q; use an ID", n, req.Msg.Satellite))
	}
	return connect.NewResponse(&registryv1.GetSatelliteResponse{Satellite: sat}), nil
}

func (a *api) ListSatellites(_ context.Context, req *connect.Request[registryv1.ListSatellitesRequest]) (*connect.Response[registryv1.ListSatellitesResponse], error) {
	r := req.Msg
	size := int(r.PageSize)
	if size <= 0 {
		size = DefaultPageSize
	}
	if size > MaxPageSize {
		return nil, invalid("page_size %d exceeds %d", size, MaxPageSize)
	}
	offset := 0
	if r.PageToken != "" {
		b, err := base64.RawURLEncoding.DecodeString(r.PageToken)
		if err == nil {
			offset, err = strconv.Atoi(string(b))
		}
		if err != nil || offset < 0 {
			return nil, invalid("bad page_token")
		}
	}
	all := a.s.state.list(filter{tenant: r.TenantId, labels: r.MatchLabels, statuses: r.Statuses})
	resp := &registryv1.ListSatellitesResponse{}
	if offset < len(all) {
		end := min(offset+size, len(all))
		resp.Satellites = all[offset:end]
		if end < len(all) {
			resp.NextPageToken = base64.RawURLEncoding.EncodeToString([]byte(strconv.Itoa(end)))
		}
	}
	return connect.NewResponse(resp), nil
}

// WatchSatellites sends every matching satellite (EXISTING), then each
// change (UPSERTED). A watcher that falls WatchBuffer events behind is
// ended with RESOURCE_EXHAUSTED so it re-watches; events are never skipped.
func (a *api) WatchSatellites(ctx context.Context, req *connect.Request[registryv1.WatchSatellitesRequest], stream *connect.ServerStream[registryv1.WatchSatellitesResponse]) error {
	s := a.s
	w := &watcher{
		f:        filter{tenant: req.Msg.TenantId, labels: req.Msg.MatchLabels},
		ch:       make(chan *registryv1.WatchSatellitesResponse, s.cfg.WatchBuffer),
		overflow: make(chan struct{}),
	}
	s.state.mu.Lock()
	if len(s.state.watchers) >= s.cfg.MaxWatchers {
		s.state.mu.Unlock()
		return connect.NewError(connect.CodeResourceExhausted, fmt.Errorf("%d watch streams open, the limit", s.cfg.MaxWatchers))
	}
	var initial []*registryv1.Satellite
	for _, e := range s.state.byID {
		if w.f.matches(e.sat) {
			initial = append(initial, proto.Clone(e.sat).(*registryv1.Satellite))
		}
	}
	s.state.watchers[w] = struct{}{}
	s.state.mu.Unlock()
	s.m.watchers.Inc()
	defer func() {
		s.state.mu.Lock()
		delete(s.state.watchers, w)
		s.state.mu.Unlock()
		s.m.watchers.Dec()
	}()
	for _, sat := range initial {
		if err := stream.Send(&registryv1.WatchSatellitesResponse{Type: registryv1.WatchEventType_WATCH_EVENT_TYPE_EXISTING, Satellite: sat}); err != nil {
			return err
		}
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-w.overflow:
			return connect.NewError(connect.CodeResourceExhausted, errors.New("watch fell behind; watch again"))
		case ev := <-w.ch:
			if err := stream.Send(ev); err != nil {
				return err
			}
		}
	}
}

// DeleteSatellite forgets a satellite: memory, watchers (DELETED) and etcd
// (record and identity, in one transaction). Its connector closes the link
// at the next heartbeat batch (unknown satellite); certdns, following the
// records, revokes its certificate and drops its name.
func (a *api) DeleteSatellite(ctx context.Context, req *connect.Request[registryv1.DeleteSatelliteRequest]) (*connect.Response[registryv1.DeleteSatelliteResponse], error) {
	if req.Msg.TenantId == "" || req.Msg.Satellite == "" {
		return nil, invalid("tenant_id and satellite (ID or name) are required")
	}
	s := a.s
	sat, n := s.state.get(req.Msg.TenantId, req.Msg.Satellite)
	switch {
	case n == 0:
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("no satellite %q", req.Msg.Satellite))
	case n > 1:
		return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("%d satellites are named %q; use an ID", n, req.Msg.Satellite))
	}
	// The flusher must not write the record back after it is gone.
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	ikey := IdentityPrefix + IdentityKey(sat.TenantId, sat.Identity)
	if _, err := s.etcd.Txn(ctx).Then(clientv3.OpDelete(SatellitePrefix+sat.Id), clientv3.OpDelete(ikey)).Commit(); err != nil {
		return nil, connect.NewError(connect.CodeUnavailable, err)
	}
	s.state.remove(sat.Id)
	s.log.InfoContext(ctx, "satellite deleted", obslog.Event("registry.deleted"), "satellite", sat.Id, "tenant", sat.TenantId, "name", sat.Name)
	return connect.NewResponse(&registryv1.DeleteSatelliteResponse{Satellite: sat}), nil
}

type watcher struct {
	f        filter
	ch       chan *registryv1.WatchSatellitesResponse
	overflow chan struct{}
	once     sync.Once
}

func (w *watcher) matches(sat *registryv1.Satellite) bool { return w.f.matches(sat) }

// send queues ev, or marks the watcher overflowed. Called with state.mu held.
func (w *watcher) send(ev *registryv1.WatchSatellitesResponse) {
	select {
	case w.ch <- ev:
	default:
		w.once.Do(func() { close(w.overflow) })
	}
}
