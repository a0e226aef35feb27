package platform

import (
	"context"
	"errors"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	platformv1 "github.com/orbitplane/orbit/proto/orbit/platform/v1"
	"github.com/orbitplane/orbit/services/platform/store"
)

// api maps the proto API onto the store; the one place store errors become
// codes.
type api struct{ s *Service }

func toCode(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, store.ErrNotFound):
		return connect.NewError(connect.CodeNotFound, err)
	case errors.Is(err, store.ErrAlreadyExists):
		return connect.NewError(connect.CodeAlreadyExists, err)
	case errors.Is(err, store.ErrInvalid):
		return connect.NewError(connect.CodeInvalidArgument, err)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return connect.NewError(connect.CodeCanceled, err)
	}
	// Database trouble: the text stays in our log, never with the caller.
	return connect.NewError(connect.CodeUnavailable, errors.New("platform database unavailable; try again"))
}

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func tenantPB(t store.Tenant) *platformv1.Tenant {
	return &platformv1.Tenant{Id: t.ID, Name: t.Name, CreatedAt: ts(t.CreatedAt), Limits: &platformv1.TenantLimits{
		MaxConcurrentQueries: t.MaxConcurrentQueries, MaxRequestsPerSecond: t.MaxRequestsPerSecond, MaxResultBytes: t.MaxResultBytes}}
}

func apiKeyPB(k store.APIKey) *platformv1.APIKey {
	return &platformv1.APIKey{Id: k.ID, TenantId: k.TenantID, Prefix: k.Prefix, Scopes: k.Scopes, CreatedAt: ts(k.CreatedAt),
		ExpiresAt: ts(k.ExpiresAt), RevokedAt: ts(k.RevokedAt), Description: k.Description}
}

func deployKeyPB(k store.DeployKey) *platformv1.DeployKey {
	return &platformv1.DeployKey{Id: k.ID, TenantId: k.TenantID, Prefix: k.Prefix, Labels: k.Labels, CreatedAt: ts(k.CreatedAt),
		RevokedAt: ts(k.RevokedAt), Description: k.Description}
}

func regionPB(r store.Region) *platformv1.Region {
	return &platformv1.Region{Name: r.Name, Hub: r.Hub, GatewayUrl: r.GatewayURL, EtcdEndpoints: r.EtcdEndpoints}
}

// done logs an unexpected error, nudges the publisher after a change, and
// maps the error.
func (a *api) done(ctx context.Context, kind string, err error) error {
	if err == nil {
		if kind != "" {
			a.s.changed(kind)
		}
		return nil
	}
	mapped := toCode(err)
	if connect.CodeOf(mapped) == connect.CodeUnavailable {
		a.s.log.ErrorContext(ctx, "platform database", "event", "platform.db_error", "error", err.Error())
	}
	return mapped
}

func (a *api) CreateTenant(ctx context.Context, req *connect.Request[platformv1.CreateTenantRequest]) (*connect.Response[platformv1.CreateTenantResponse], error) {
	l := req.Msg.GetLimits()
	t, err := a.s.st.CreateTenant(ctx, store.Tenant{Name: req.Msg.Name, MaxConcurrentQueries: l.GetMaxConcurrentQueries(),
		MaxRequestsPerSecond: l.GetMaxRequestsPerSecond(), MaxResultBytes: l.GetMaxResultBytes()})
	if err := a.done(ctx, store.KindTenant, err); err != nil {
		return nil, err
	}
	return connect.NewResponse(&platformv1.CreateTenantResponse{Tenant: tenantPB(t)}), nil
}

func (a *api) GetTenant(ctx context.Context, req *connect.Request[platformv1.GetTenantRequest]) (*connect.Response[platformv1.GetTenantResponse], error) {
	t, err := a.s.st.GetTenant(ctx, req.Msg.Id)
	if err := a.done(ctx, "", err); err != nil {
		return nil, err
	}
	return connect.NewResponse(&platformv1.GetTenantResponse{Tenant: tenantPB(t)}), nil
}

func (a *api) ListTenants(ctx context.Context, _ *connect.Request[platformv1.ListTenantsRequest]) (*connect.Response[platformv1.ListTenantsResponse], error) {
	ts, err := a.s.st.ListTenants(ctx)
	if err := a.done(ctx, "", err); err != nil {
		return nil, err
	}
	out := &platformv1.ListTenantsResponse{}
	for _, t := range ts {
		out.Tenants = append(out.Tenants, tenantPB(t))
	}
	return connect.NewResponse(out), nil
}

func (a *api) DeleteTenant(ctx context.Context, req *connect.Request[platformv1.DeleteTenantRequest]) (*connect.Response[platformv1.DeleteTenantResponse], error) {
	if err := a.done(ctx, store.KindTenant, a.s.st.DeleteTenant(ctx, req.Msg.Id)); err != nil {
		return nil, err
	}
	return connect.NewResponse(&platformv1.DeleteTenantResponse{}), nil
}

func (a *api) CreateUser(ctx context.Context, req *connect.Request[platformv1.CreateUserRequest]) (*connect.Response[platformv1.CreateUserResponse], error) {
	u, err := a.s.st.CreateUser(ctx, req.Msg.TenantId, req.Msg.Email)
	if err := a.done(ctx, "", err); err != nil {
		return nil, err
	}
	return connect.NewResponse(&platformv1.CreateUserResponse{User: &platformv1.User{Id: u.ID, TenantId: u.TenantID, Email: u.Email, CreatedAt: ts(u.CreatedAt)}}), nil
}

func (a *api) ListUsers(ctx context.Context, req *connect.Request[platformv1.ListUsersRequest]) (*connect.Response[platformv1.ListUsersResponse], error) {
	us, err := a.s.st.ListUsers(ctx, req.Msg.TenantId)
	if err := a.done(ctx, "", err); err != nil {
		return nil, err
	}
	out := &platformv1.ListUsersResponse{}
	for _, u := range us {
		out.Users = append(out.Users, &platformv1.User{Id: u.ID, TenantId: u.TenantID, Email: u.Email, CreatedAt: ts(u.CreatedAt)})
	}
	return connect.NewResponse(out), nil
}

func (a *api) CreateAPIKey(ctx context.Context, req *connect.Request[platformv1.CreateAPIKeyRequest]) (*connect.Response[platformv1.CreateAPIKeyResponse], error) {
	var exp time.Time
	if req.Msg.ExpiresAt != nil {
		exp = req.Msg.ExpiresAt.AsTime()
	}
	k, secret, err := a.s.st.CreateAPIKey(ctx, req.Msg.TenantId, req.Msg.Scopes, exp, req.Msg.Description)
	if err := a.done(ctx, store.KindAPIKey, err); err != nil {
		return nil, err
	}
	return connect.NewResponse(&platformv1.CreateAPIKeyResponse{Key: apiKeyPB(k), Secret: secret}), nil
}

func (a *api) ListAPIKeys(ctx context.Context, req *connect.Request[platformv1.ListAPIKeysRequest]) (*connect.Response[platformv1.ListAPIKeysResponse], error) {
	ks, err := a.s.st.ListAPIKeys(ctx, req.Msg.TenantId)
	if err := a.done(ctx, "", err); err != nil {
		return nil, err
	}
	out := &platformv1.ListAPIKeysResponse{}
	for _, k := range ks {
		out.Keys = append(out.Keys, apiKeyPB(k))
	}
	return connect.NewResponse(out), nil
}

func (a *api) RevokeAPIKey(ctx context.Context, req *connect.Request[platformv1.RevokeAPIKeyRequest]) (*connect.Response[platformv1.RevokeAPIKeyResponse], error) {
	if err := a.done(ctx, store.KindAPIKey, a.s.st.RevokeAPIKey(ctx, req.Msg.Id)); err != nil {
		return nil, err
	}
	return connect.NewResponse(&platformv1.RevokeAPIKeyResponse{}), nil
}

func (a *api) CreateDeployKey(ctx context.Context, req *connect.Request[platformv1.CreateDeployKeyRequest]) (*connect.Response[platformv1.CreateDeployKeyResponse], error) {
	k, secret, err := a.s.st.CreateDeployKey(ctx, req.Msg.TenantId, req.Msg.Labels, req.Msg.Description)
	if err := a.done(ctx, store.KindDeployKey, err); err != nil {
		return nil, err
	}
	return connect.NewResponse(&platformv1.CreateDeployKeyResponse{Key: deployKeyPB(k), Secret: secret}), nil
}

func (a *api) ListDeployKeys(ctx context.Context, req *connect.Request[platformv1.ListDeployKeysRequest]) (*connect.Response[platformv1.ListDeployKeysResponse], error) {
	ks, err := a.s.st.ListDeployKeys(ctx, req.Msg.TenantId)
	if err := a.done(ctx, "", err); err != nil {
		return nil, err
	}
	out := &platformv1.ListDeployKeysResponse{}
	for _, k := range ks {
		out.Keys = append(out.Keys, deployKeyPB(k))
	}
	return connect.NewResponse(out), nil
}

func (a *api) RevokeDeployKey(ctx context.Context, req *connect.Request[platformv1.RevokeDeployKeyRequest]) (*connect.Response[platformv1.RevokeDeployKeyResponse], error) {
	if err := a.done(ctx, store.KindDeployKey, a.s.st.RevokeDeployKey(ctx, req.Msg.Id)); err != nil {
		return nil, err
	}
	return connect.NewResponse(&platformv1.RevokeDeployKeyResponse{}), nil
}

func (a *api) ListRegions(ctx context.Context, _ *connect.Request[platformv1.ListRegionsRequest]) (*connect.Response[platformv1.ListRegionsResponse], error) {
	rs, err := a.s.st.ListRegions(ctx)
	if err := a.done(ctx, "", err); err != nil {
		return nil, err
	}
	out := &platformv1.ListRegionsResponse{}
	for _, r := range rs {
		out.Regions = append(out.Regions, regionPB(r))
	}
	return connect.NewResponse(out), nil
}

func (a *api) PutRegion(ctx context.Context, req *connect.Request[platformv1.PutRegionRequest]) (*connect.Response[platformv1.PutRegionResponse], error) {
	r := req.Msg.GetRegion()
	got, err := a.s.st.PutRegion(ctx, store.Region{Name: r.GetName(), Hub: r.GetHub(), GatewayURL: r.GetGatewayUrl(), EtcdEndpoints: r.GetEtcdEndpoints()})
	if err := a.done(ctx, store.KindRegion, err); err != nil {
		return nil, err
	}
	return connect.NewResponse(&platformv1.PutRegionResponse{Region: regionPB(got)}), nil
}

func (a *api) DeleteRegion(ctx context.Context, req *connect.Request[platformv1.DeleteRegionRequest]) (*connect.Response[platformv1.DeleteRegionResponse], error) {
	if err := a.done(ctx, store.KindRegion, a.s.st.DeleteRegion(ctx, req.Msg.Name)); err != nil {
		return nil, err
	}
	return connect.NewResponse(&platformv1.DeleteRegionResponse{}), nil
}
