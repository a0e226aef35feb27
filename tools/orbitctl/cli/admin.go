package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"sort"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/orbitplane/orbit/libs/connectclient"
	ctxpublisherv1 "github.com/orbitplane/orbit/proto/orbit/ctxpublisher/v1"
	"github.com/orbitplane/orbit/proto/orbit/ctxpublisher/v1/ctxpublisherv1connect"
	gatewayv1 "github.com/orbitplane/orbit/proto/orbit/gateway/v1"
	platformv1 "github.com/orbitplane/orbit/proto/orbit/platform/v1"
	"github.com/orbitplane/orbit/proto/orbit/platform/v1/platformv1connect"
)

// The admin commands (tenants, keys, deploy-keys, regions status) call the
// hub gateway's relay of the platform API with the platform's admin token
// (--admin-token / $ORBIT_ADMIN_TOKEN), not an API key (docs/orbitctl.md).

type adminClients struct {
	platform  platformv1connect.PlatformServiceClient
	publisher ctxpublisherv1connect.ContextPublisherServiceClient
}

func newAdminClients(g globals, env Env) (*adminClients, error) {
	if g.adminToken == "" {
		return nil, errors.New("no admin token: pass --admin-token or set ORBIT_ADMIN_TOKEN (the platform's --admin-token-file; orbit dev saves it as admin_token in dev.json)")
	}
	hc, opts, err := connectclient.For(env.HTTPClient, nil)
	if err != nil {
		return nil, err
	}
	opts = append(opts, connect.WithInterceptors(connectclient.Bearer(g.adminToken)))
	ep := strings.TrimRight(g.endpoint, "/")
	return &adminClients{
		platform:  platformv1connect.NewPlatformServiceClient(hc, ep, opts...),
		publisher: ctxpublisherv1connect.NewContextPublisherServiceClient(hc, ep, opts...),
	}, nil
}

// explainAdmin is explain for admin calls: a refusal is about the admin token.
func explainAdmin(err error) error {
	var ce *connect.Error
	if errors.As(err, &ce) {
		switch ce.Code() {
		case connect.CodeUnauthenticated:
			return fmt.Errorf("%s (check --admin-token / ORBIT_ADMIN_TOKEN)", ce.Message())
		case connect.CodeUnimplemented: // a gateway without --platform-url answers 404
			return fmt.Errorf("this gateway relays no admin API; point --endpoint at the hub's gateway (%s)", ce.Message())
		}
	}
	return explain(err)
}

func ts(t *timestamppb.Timestamp) any {
	if t == nil {
		return nil
	}
	return t.AsTime().UTC().Truncate(time.Second)
}

// tenantOf defaults --tenant to the API key's tenant when there is one.
func tenantOf(ctx context.Context, flagValue string, g globals, env Env) (string, error) {
	if flagValue != "" {
		return flagValue, nil
	}
	if g.apiKey == "" {
		return "", errors.New("give --tenant ID (or an API key, whose tenant is the default)")
	}
	c, err := newClients(g.endpoint, g.apiKey, env.HTTPClient)
	if err != nil {
		return "", err
	}
	who, err := c.gateway.WhoAmI(ctx, connect.NewRequest(&gatewayv1.WhoAmIRequest{}))
	if err != nil {
		return "", explain(err)
	}
	return who.Msg.TenantId, nil
}

// adminFlags parses an admin subcommand's flags and makes the admin clients.
func adminFlags(fs *flag.FlagSet, args []string, g globals, env Env) ([]string, *adminClients, error) {
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return nil, nil, err
	}
	a, err := newAdminClients(g, env)
	return pos, a, err
}

// removeByID runs a delete or revoke that takes one ID and says what
// happened (done has one %s for the ID).
func removeByID(ctx context.Context, pos []string, cmd, what string, call func(context.Context, string) error, done string, env Env) error {
	id, err := oneArg(pos, cmd, what)
	if err != nil {
		return err
	}
	if err := call(ctx, id); err != nil {
		return explainAdmin(err)
	}
	fmt.Fprintf(env.Stdout, done+"\n", id)
	return nil
}

// keyTenant is the tenant a keys or deploy-keys subcommand works on: list
// and create need one; revoke takes the key's ID alone.
func keyTenant(ctx context.Context, sub, flagValue string, g globals, env Env) (string, error) {
	switch sub {
	case "list", "ls", "create":
		return tenantOf(ctx, flagValue, g, env)
	}
	return "", nil
}

func tenants(ctx context.Context, g globals, args []string, env Env) error {
	if len(args) == 0 {
		return errors.New("tenants: want list, create NAME or delete ID")
	}
	fs := newFlags("tenants "+args[0], env, tenantsHelp)
	out := fs.String("o", "table", "output: table, json, csv, yaml")
	pos, a, err := adminFlags(fs, args[1:], g, env)
	if err != nil {
		return err
	}
	switch args[0] {
	case "list", "ls":
		resp, err := a.platform.ListTenants(ctx, connect.NewRequest(&platformv1.ListTenantsRequest{}))
		if err != nil {
			return explainAdmin(err)
		}
		return table(*out, env, []string{"id", "name", "created"}, len(resp.Msg.Tenants), func(i int) []any {
			t := resp.Msg.Tenants[i]
			return []any{t.Id, t.Name, ts(t.CreatedAt)}
		})
	case "create":
		name, err := oneArg(pos, "tenants create", "NAME")
		if err != nil {
			return err
		}
		resp, err := a.platform.CreateTenant(ctx, connect.NewRequest(&platformv1.CreateTenantRequest{Name: name}))
		if err != nil {
			return explainAdmin(err)
		}
		fmt.Fprintf(env.Stdout, "created tenant %s (%s)\nnext: orbitctl keys create --tenant %s; orbitctl deploy-keys create --tenant %s\n",
			resp.Msg.Tenant.Name, resp.Msg.Tenant.Id, resp.Msg.Tenant.Id, resp.Msg.Tenant.Id)
		return nil
	case "delete", "rm":
		return removeByID(ctx, pos, "tenants delete", "tenant ID", func(ctx context.Context, id string) error {
			_, err := a.platform.DeleteTenant(ctx, connect.NewRequest(&platformv1.DeleteTenantRequest{Id: id}))
			return err
		}, "deleted tenant %s; its API keys and deploy keys stop working in every region", env)
	}
	return fmt.Errorf("tenants: unknown subcommand %q", args[0])
}

func apiKeys(ctx context.Context, g globals, args []string, env Env) error {
	if len(args) == 0 {
		return errors.New("keys: want list, create or revoke ID")
	}
	fs := newFlags("keys "+args[0], env, keysHelp)
	out := fs.String("o", "table", "output: table, json, csv, yaml")
	tenant := fs.String("tenant", "", "tenant ID (default: the API key's tenant)")
	scopes := fs.String("scopes", "query,satellites:read,logs:read", "comma-separated scopes: query, satellites:read, satellites:write, logs:read, logs:write, admin")
	expires := fs.Duration("expires", 0, "lifetime, e.g. 720h (0 = never expires)")
	description := fs.String("description", "", "what the key is for")
	pos, a, err := adminFlags(fs, args[1:], g, env)
	if err != nil {
		return err
	}
	tid, err := keyTenant(ctx, args[0], *tenant, g, env)
	if err != nil {
		return err
	}
	switch args[0] {
	case "list", "ls":
		resp, err := a.platform.ListAPIKeys(ctx, connect.NewRequest(&platformv1.ListAPIKeysRequest{TenantId: tid}))
		if err != nil {
			return explainAdmin(err)
		}
		return table(*out, env, []string{"id", "prefix", "description", "scopes", "created", "expires", "revoked"}, len(resp.Msg.Keys), func(i int) []any {
			k := resp.Msg.Keys[i]
			return []any{k.Id, k.Prefix, k.Description, strings.Join(k.Scopes, ","), ts(k.CreatedAt), ts(k.ExpiresAt), ts(k.RevokedAt)}
		})
	case "create":
		req := &platformv1.CreateAPIKeyRequest{TenantId: tid, Scopes: splitList(*scopes), Description: *description}
		if *expires < 0 {
			return errors.New("keys create: --expires must be positive (or 0 for never)")
		}
		if *expires > 0 {
			req.ExpiresAt = timestamppb.New(time.Now().Add(*expires))
		}
		resp, err := a.platform.CreateAPIKey(ctx, connect.NewRequest(req))
		if err != nil {
			return explainAdmin(err)
		}
		fmt.Fprintln(env.Stdout, resp.Msg.Secret)
		fmt.Fprintf(env.Stderr, "API key %s for tenant %s (scopes %s): shown once; Orbit keeps only its hash\n",
			resp.Msg.Key.Prefix, tid, strings.Join(resp.Msg.Key.Scopes, ","))
		return nil
	case "revoke":
		return removeByID(ctx, pos, "keys revoke", "key ID (orbitctl keys list shows them)", func(ctx context.Context, id string) error {
			_, err := a.platform.RevokeAPIKey(ctx, connect.NewRequest(&platformv1.RevokeAPIKeyRequest{Id: id}))
			return err
		}, "revoked API key %s; gateways refuse it within moments, in every region", env)
	}
	return fmt.Errorf("keys: unknown subcommand %q", args[0])
}

func deployKeys(ctx context.Context, g globals, args []string, env Env) error {
	if len(args) == 0 {
		return errors.New("deploy-keys: want list, create or revoke ID")
	}
	fs := newFlags("deploy-keys "+args[0], env, deployKeysHelp)
	out := fs.String("o", "table", "output: table, json, csv, yaml")
	tenant := fs.String("tenant", "", "tenant ID (default: the API key's tenant)")
	labels := fs.String("labels", "", "labels every satellite enrolled with the key gets: k=v,k=v")
	description := fs.String("description", "", "which sites the key is for")
	pos, a, err := adminFlags(fs, args[1:], g, env)
	if err != nil {
		return err
	}
	tid, err := keyTenant(ctx, args[0], *tenant, g, env)
	if err != nil {
		return err
	}
	switch args[0] {
	case "list", "ls":
		resp, err := a.platform.ListDeployKeys(ctx, connect.NewRequest(&platformv1.ListDeployKeysRequest{TenantId: tid}))
		if err != nil {
			return explainAdmin(err)
		}
		return table(*out, env, []string{"id", "prefix", "description", "labels", "created", "revoked"}, len(resp.Msg.Keys), func(i int) []any {
			k := resp.Msg.Keys[i]
			return []any{k.Id, k.Prefix, k.Description, labelString(k.Labels), ts(k.CreatedAt), ts(k.RevokedAt)}
		})
	case "create":
		l, err := parseLabels(*labels)
		if err != nil {
			return err
		}
		resp, err := a.platform.CreateDeployKey(ctx, connect.NewRequest(&platformv1.CreateDeployKeyRequest{TenantId: tid, Labels: l, Description: *description}))
		if err != nil {
			return explainAdmin(err)
		}
		fmt.Fprintln(env.Stdout, resp.Msg.Secret)
		fmt.Fprintf(env.Stderr, "deploy key %s for tenant %s: shown once. Install a satellite with it:\n"+
			"  ORBIT_DEPLOY_KEY=%s bazel run //services/satellite -- --connector-url https://CONNECTOR --connector-ca platform-ca.pem --name \"$(hostname)\"\n",
			resp.Msg.Key.Prefix, tid, resp.Msg.Secret)
		return nil
	case "revoke":
		return removeByID(ctx, pos, "deploy-keys revoke", "key ID (orbitctl deploy-keys list shows them)", func(ctx context.Context, id string) error {
			_, err := a.platform.RevokeDeployKey(ctx, connect.NewRequest(&platformv1.RevokeDeployKeyRequest{Id: id}))
			return err
		}, "revoked deploy key %s; satellites can no longer enrol with it (enrolled ones keep their identity)", env)
	}
	return fmt.Errorf("deploy-keys: unknown subcommand %q", args[0])
}

// regions: "list" needs only an API key (every region's gateway, from the
// region contexts); "status" is the admin view with the publisher's lag.
func regions(ctx context.Context, g globals, args []string, env Env) error {
	if len(args) == 0 {
		return errors.New("regions: want list or status")
	}
	fs := newFlags("regions "+args[0], env, regionsHelp)
	out := fs.String("o", "table", "output: table, json, csv, yaml")
	if _, err := parseInterspersed(fs, args[1:]); err != nil {
		return err
	}
	switch args[0] {
	case "list", "ls":
		if g.apiKey == "" {
			return errors.New("no API key: pass --api-key or set ORBIT_API_KEY")
		}
		c, err := newClients(g.endpoint, g.apiKey, env.HTTPClient)
		if err != nil {
			return err
		}
		resp, err := c.gateway.ListRegions(ctx, connect.NewRequest(&gatewayv1.ListRegionsRequest{}))
		if err != nil {
			return explain(err)
		}
		return table(*out, env, []string{"name", "gateway", "hub", "current"}, len(resp.Msg.Regions), func(i int) []any {
			r := resp.Msg.Regions[i]
			return []any{r.Name, r.GatewayUrl, r.Hub, r.Current}
		})
	case "status":
		a, err := newAdminClients(g, env)
		if err != nil {
			return err
		}
		rs, err := a.platform.ListRegions(ctx, connect.NewRequest(&platformv1.ListRegionsRequest{}))
		if err != nil {
			return explainAdmin(err)
		}
		st, err := a.publisher.GetStatus(ctx, connect.NewRequest(&ctxpublisherv1.GetStatusRequest{}))
		if err != nil {
			return explainAdmin(err)
		}
		byName := map[string]*ctxpublisherv1.RegionStatus{}
		for _, s := range st.Msg.Regions {
			byName[s.Name] = s
		}
		list := rs.Msg.Regions
		sort.Slice(list, func(i, j int) bool { return list[i].Name < list[j].Name })
		return table(*out, env, []string{"name", "hub", "gateway", "pushed", "head", "lag_changes", "lag", "last_reconcile", "state"}, len(list), func(i int) []any {
			r := list[i]
			s := byName[r.Name]
			if s == nil {
				return []any{r.Name, r.Hub, r.GatewayUrl, nil, nil, nil, nil, nil, "no status"}
			}
			state := "in sync"
			if s.Failing {
				state = "failing: " + s.LastError
			} else if s.LagChanges > 0 {
				state = "catching up"
			}
			return []any{r.Name, r.Hub, r.GatewayUrl, s.PushedVersion, s.HeadVersion, s.LagChanges, s.Lag.AsDuration().Round(time.Millisecond).String(), ts(s.LastReconcile), state}
		})
	}
	return fmt.Errorf("regions: unknown subcommand %q", args[0])
}

// table writes n rows through the -o writer.
func table(format string, env Env, header []string, n int, row func(int) []any) error {
	w, err := newWriter(format, env.Stdout, header)
	if err != nil {
		return err
	}
	for i := 0; i < n; i++ {
		if err := w.row(row(i)); err != nil {
			return err
		}
	}
	return w.close()
}

func labelString(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		keys[i] = k + "=" + m[k]
	}
	return strings.Join(keys, ",")
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// newFlags is a subcommand's flag set whose -h prints its help text with
// examples, then the flags.
func newFlags(name string, env Env, help string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	fs.Usage = func() {
		fmt.Fprint(env.Stderr, help)
		fmt.Fprintln(env.Stderr, "\nFlags:")
		fs.PrintDefaults()
	}
	return fs
}
