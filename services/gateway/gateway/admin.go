package gateway

import (
	"context"
	"errors"

	"connectrpc.com/connect"

	ctxpublisherv1 "github.com/orbitplane/orbit/proto/orbit/ctxpublisher/v1"
	"github.com/orbitplane/orbit/proto/orbit/ctxpublisher/v1/ctxpublisherv1connect"
	platformv1 "github.com/orbitplane/orbit/proto/orbit/platform/v1"
	"github.com/orbitplane/orbit/proto/orbit/platform/v1/platformv1connect"
)

// The hub gateway's management APIs (the web UI's admin pages, docs/web.md):
// PlatformService and the context publisher's status, relayed to the hub's
// services. They do not take API keys: the caller presents the platform's
// admin token, which the gateway passes on and the platform checks (so a
// gateway never holds it). The publisher has no authentication of its own,
// so its calls are let through only after the platform accepted the token.

type platformAPI struct{ s *Service }

type ctxpubAPI struct{ s *Service }

var (
	_ platformv1connect.PlatformServiceHandler             = (*platformAPI)(nil)
	_ ctxpublisherv1connect.ContextPublisherServiceHandler = (*ctxpubAPI)(nil)
)

// withToken forwards one admin call with the caller's Authorization header.
func withToken[Req, Res any](ctx context.Context, req *connect.Request[Req], call func(context.Context, *connect.Request[Req]) (*connect.Response[Res], error)) (*connect.Response[Res], error) {
	up := connect.NewRequest(req.Msg)
	if a := req.Header().Get("Authorization"); a != "" {
		up.Header().Set("Authorization", a)
	}
	resp, err := call(ctx, up)
	if err != nil {
		return nil, forward(err)
	}
	return connect.NewResponse(resp.Msg), nil
}

func (p *platformAPI) CreateTenant(ctx context.Context, r *connect.Request[platformv1.CreateTenantRequest]) (*connect.Response[platformv1.CreateTenantResponse], error) {
	return withToken(ctx, r, p.s.platform.CreateTenant)
}

func (p *platformAPI) GetTenant(ctx context.Context, r *connect.Request[platformv1.GetTenantRequest]) (*connect.Response[platformv1.GetTenantResponse], error) {
	return withToken(ctx, r, p.s.platform.GetTenant)
}

func (p *platformAPI) ListTenants(ctx context.Context, r *connect.Request[platformv1.ListTenantsRequest]) (*connect.Response[platformv1.ListTenantsResponse], error) {
	return withToken(ctx, r, p.s.platform.ListTenants)
}

func (p *platformAPI) DeleteTenant(ctx context.Context, r *connect.Request[platformv1.DeleteTenantRequest]) (*connect.Response[platformv1.DeleteTenantResponse], error) {
	return withToken(ctx, r, p.s.platform.DeleteTenant)
}

func (p *platformAPI) CreateUser(ctx context.Context, r *connect.Request[platformv1.CreateUserRequest]) (*connect.Response[platformv1.CreateUserResponse], error) {
	return withToken(ctx, r, p.s.platform.CreateUser)
}

func (p *platformAPI) ListUsers(ctx context.Context, r *connect.Request[platformv1.ListUsersRequest]) (*connect.Response[platformv1.ListUsersResponse], error) {
	return withToken(ctx, r, p.s.platform.ListUsers)
}

func (p *platformAPI) CreateAPIKey(ctx context.Context, r *connect.Request[platformv1.CreateAPIKeyRequest]) (*connect.Response[platformv1.CreateAPIKeyResponse], error) {
	return withToken(ctx, r, p.s.platform.CreateAPIKey)
}

func (p *platformAPI) ListAPIKeys(ctx context.Context, r *connect.Request[platformv1.ListAPIKeysRequest]) (*connect.Response[platformv1.ListAPIKeysResponse], error) {
	return withToken(ctx, r, p.s.platform.ListAPIKeys)
}

func (p *platformAPI) RevokeAPIKey(ctx context.Context, r *connect.Request[platformv1.RevokeAPIKeyRequest]) (*connect.Response[platformv1.RevokeAPIKeyResponse], error) {
	return withToken(ctx, r, p.s.platform.RevokeAPIKey)
}

func (p *platformAPI) CreateDeployKey(ctx context.Context, r *connect.Request[platformv1.CreateDeployKeyRequest]) (*connect.Response[platformv1.CreateDeployKeyResponse], error) {
	return withToken(ctx, r, p.s.platform.CreateDeployKey)
}

func (p *platformAPI) ListDeployKeys(ctx context.Context, r *connect.Request[platformv1.ListDeployKeysRequest]) (*connect.Response[platformv1.ListDeployKeysResponse], error) {
	return withToken(ctx, r, p.s.platform.ListDeployKeys)
}

func (p *platformAPI) RevokeDeployKey(ctx context.Context, r *connect.Request[platformv1.RevokeDeployKeyRequest]) (*connect.Response[platformv1.RevokeDeployKeyResponse], error) {
	return withToken(ctx, r, p.s.platform.RevokeDeployKey)
}

func (p *platformAPI) ListRegions(ctx context.Context, r *connect.Request[platformv1.ListRegionsRequest]) (*connect.Response[platformv1.ListRegionsResponse], error) {
	return withToken(ctx, r, p.s.platform.ListRegions)
}

func (p *platformAPI) PutRegion(ctx context.Context, r *connect.Request[platformv1.PutRegionRequest]) (*connect.Response[platformv1.PutRegionResponse], error) {
	return withToken(ctx, r, p.s.platform.PutRegion)
}

func (p *platformAPI) DeleteRegion(ctx context.Context, r *connect.Request[platformv1.DeleteRegionRequest]) (*connect.Response[platformv1.DeleteRegionResponse], error) {
	return withToken(ctx, r, p.s.platform.DeleteRegion)
}

// admitted asks the platform whether the caller's token is the admin token
// (a cheap read) before a call to the unauthenticated publisher.
func (c *ctxpubAPI) admitted(ctx context.Context, h interface{ Get(string) string }) error {
	if c.s.platform == nil {
		return connect.NewError(connect.CodeUnimplemented, errors.New("this gateway relays no platform (--platform-url is empty), so it cannot check the admin token"))
	}
	req := connect.NewRequest(&platformv1.ListRegionsRequest{})
	req.Header().Set("Authorization", h.Get("Authorization"))
	if _, err := c.s.platform.ListRegions(ctx, req); err != nil {
		return forward(err)
	}
	return nil
}

func (c *ctxpubAPI) GetStatus(ctx context.Context, r *connect.Request[ctxpublisherv1.GetStatusRequest]) (*connect.Response[ctxpublisherv1.GetStatusResponse], error) {
	if err := c.admitted(ctx, r.Header()); err != nil {
		return nil, err
	}
	return withToken(ctx, r, c.s.ctxpub.GetStatus)
}

func (c *ctxpubAPI) Reconcile(ctx context.Context, r *connect.Request[ctxpublisherv1.ReconcileRequest]) (*connect.Response[ctxpublisherv1.ReconcileResponse], error) {
	if err := c.admitted(ctx, r.Header()); err != nil {
		return nil, err
	}
	return withToken(ctx, r, c.s.ctxpub.Reconcile)
}
