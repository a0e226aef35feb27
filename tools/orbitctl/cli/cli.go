// Package cli is orbitctl: the command line for Orbit's public API (the
// gateway). main is a thin wrapper so tests can run commands in-process.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/orbitplane/orbit/libs/connectclient"
	gatewayv1 "github.com/orbitplane/orbit/proto/orbit/gateway/v1"
	"github.com/orbitplane/orbit/proto/orbit/gateway/v1/gatewayv1connect"
	"github.com/orbitplane/orbit/proto/orbit/logbroker/v1/logbrokerv1connect"
	"github.com/orbitplane/orbit/proto/orbit/query/v1/queryv1connect"
	registryv1 "github.com/orbitplane/orbit/proto/orbit/registry/v1"
	"github.com/orbitplane/orbit/proto/orbit/registry/v1/registryv1connect"
)

const usage = `orbitctl: query satellites, follow log streams and manage Orbit through its gateway.

Usage:
  orbitctl [global flags] <command> [flags] [args]
  orbitctl <command> -h          help and examples for one command

Commands:
  satellites list        list your satellites (filter with --selector, --status)
  satellites get ID|NAME show one satellite
  satellites delete ID|NAME  forget a satellite and revoke its certificate
  query SQL              run read-only SQL on one satellite (--satellite [--direct]) or many (--selector)
  whoami                 show the tenant your API key belongs to
  regions list|status    the regions your key works in; (admin) the context publisher's lag
  tenants list|create NAME|delete ID                (admin) tenants
  keys list|create|revoke ID [--tenant ID]          (admin) API keys; a new secret is shown once
  deploy-keys list|create|revoke ID [--tenant ID]   (admin) satellite deploy keys
  completion bash|zsh|fish                          shell completion script
  streams list|describe NAME|create NAME|delete NAME
                         manage your log streams (create: --subject, --max-age, --max-bytes,
                         --max-messages, --compact, --replicas)
  logs tail STREAM       follow a stream's lines (--from latest|earliest|OFFSET|10m|TIME,
                         --until OFFSET, --level, --service, --tenant, --trace, --grep, -o text|json)
  logs publish STREAM V  publish one message (--subject, --key, --dedup-id)

Global flags (before the command):
  --endpoint URL       gateway URL (default $ORBIT_ENDPOINT, else http://127.0.0.1:8080)
  --api-key KEY        API key (default $ORBIT_API_KEY)
  --admin-token TOKEN  the platform's admin token, for admin commands (default $ORBIT_ADMIN_TOKEN)

Output: -o table|json|csv|yaml on every listing and query.

Examples:
  export ORBIT_ENDPOINT=http://127.0.0.1:8080 ORBIT_API_KEY=ok_...
  orbitctl satellites list -o table
  orbitctl query --satellite demo-1 "SELECT service, count(*) AS n FROM logs GROUP BY service ORDER BY n DESC"
  orbitctl query --selector env=demo -o csv "SELECT * FROM spans WHERE status = 'ERROR' LIMIT 100"
  orbitctl query --selector "" "SELECT count(*) FROM metrics"      # every satellite
  orbitctl streams create app --subject 'app.>' --max-age 24h
  orbitctl logs tail app --level WARN                              # live, warnings and errors
  orbitctl logs tail app --from 1h --trace 4bf92f3577b34da6a3ce929d0e0e4736
  orbitctl --admin-token "$ORBIT_ADMIN_TOKEN" keys create --scopes query,satellites:read --expires 720h
  source <(orbitctl completion bash)
`

// Env is what a command reads from its environment.
type Env struct {
	Stdout, Stderr io.Writer
	Getenv         func(string) string
	// HTTPClient talks to the gateway; default h2c / TLS.
	HTTPClient *http.Client
	// Progress forces (true) or suppresses (false) progress lines; nil =
	// when stderr is a terminal.
	Progress *bool
}

// globals are the flags before the command.
type globals struct{ endpoint, apiKey, adminToken string }

// Run executes one orbitctl command line. Errors are returned, not printed.
func Run(ctx context.Context, args []string, env Env) error {
	if env.Getenv == nil {
		env.Getenv = os.Getenv
	}
	fs := flag.NewFlagSet("orbitctl", flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	fs.Usage = func() { fmt.Fprint(env.Stderr, usage) }
	var g globals
	fs.StringVar(&g.endpoint, "endpoint", firstNonEmpty(env.Getenv("ORBIT_ENDPOINT"), "http://127.0.0.1:8080"), "gateway URL")
	fs.StringVar(&g.apiKey, "api-key", env.Getenv("ORBIT_API_KEY"), "API key")
	fs.StringVar(&g.adminToken, "admin-token", env.Getenv("ORBIT_ADMIN_TOKEN"), "platform admin token (admin commands)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	rest := fs.Args()
	if len(rest) == 0 {
		fmt.Fprint(env.Stderr, usage)
		return errors.New("no command")
	}
	// keyed makes the gateway clients for commands that take an API key.
	keyed := func() (*clients, error) {
		if g.apiKey == "" {
			return nil, errors.New("no API key: pass --api-key or set ORBIT_API_KEY (orbit dev prints one)")
		}
		return newClients(g.endpoint, g.apiKey, env.HTTPClient)
	}
	withKey := func(cmd func(context.Context, *clients, []string, Env) error) error {
		c, err := keyed()
		if err != nil {
			return err
		}
		return cmd(ctx, c, rest[1:], env)
	}
	switch rest[0] {
	case "help", "-h", "--help":
		fmt.Fprint(env.Stdout, usage)
		return nil
	case "completion":
		return completion(rest[1:], env)
	case "tenants", "tenant":
		return tenants(ctx, g, rest[1:], env)
	case "keys", "key", "api-keys":
		return apiKeys(ctx, g, rest[1:], env)
	case "deploy-keys", "deploy-key":
		return deployKeys(ctx, g, rest[1:], env)
	case "regions", "region":
		return regions(ctx, g, rest[1:], env)
	case "__complete":
		c, err := keyed()
		if err != nil || len(rest) != 2 {
			return nil // completion prints nothing rather than an error
		}
		return completeNames(ctx, c, rest[1], env)
	case "satellites", "satellite", "sats":
		return withKey(satellites)
	case "query", "q":
		return withKey(query)
	case "streams", "stream":
		return withKey(streams)
	case "logs", "log":
		return withKey(logs)
	case "whoami":
		return withKey(whoami)
	}
	fmt.Fprint(env.Stderr, usage)
	return fmt.Errorf("unknown command %q", rest[0])
}

func satellites(ctx context.Context, c *clients, args []string, env Env) error {
	if len(args) == 0 {
		return errors.New("satellites: want 'list', 'get ID|NAME' or 'delete ID|NAME'")
	}
	switch args[0] {
	case "list", "ls":
		return satellitesList(ctx, c, args[1:], env)
	case "get":
		return satellitesGet(ctx, c, args[1:], env)
	case "delete", "rm":
		id, err := oneArg(args[1:], "satellites delete", "ID or name")
		if err != nil {
			return err
		}
		resp, err := c.satellites.DeleteSatellite(ctx, connect.NewRequest(&registryv1.DeleteSatelliteRequest{Satellite: id}))
		if err != nil {
			return explain(err)
		}
		fmt.Fprintf(env.Stdout, "deleted satellite %s (%s); its certificate is revoked. A satellite still running with a valid deploy key enrols again as a new one.\n",
			resp.Msg.Satellite.Name, resp.Msg.Satellite.Id)
		return nil
	}
	return fmt.Errorf("satellites: unknown subcommand %q", args[0])
}

func whoami(ctx context.Context, c *clients, _ []string, env Env) error {
	resp, err := c.gateway.WhoAmI(ctx, connect.NewRequest(&gatewayv1.WhoAmIRequest{}))
	if err != nil {
		return explain(err)
	}
	fmt.Fprintf(env.Stdout, "tenant: %s (%s)\nregion: %s\nscopes: %s\n", resp.Msg.TenantId, resp.Msg.TenantName, resp.Msg.Region, strings.Join(resp.Msg.Scopes, ", "))
	return nil
}

// oneArg is the one positional argument a subcommand takes.
func oneArg(pos []string, cmd, what string) (string, error) {
	if len(pos) != 1 {
		return "", fmt.Errorf("%s: want one %s", cmd, what)
	}
	return pos[0], nil
}

type clients struct {
	query      queryv1connect.QueryServiceClient
	satellites registryv1connect.RegistryServiceClient
	gateway    gatewayv1connect.GatewayServiceClient
	logs       logbrokerv1connect.LogBrokerServiceClient
}

func newClients(endpoint, key string, hc *http.Client) (*clients, error) {
	hc, opts, err := connectclient.For(hc, nil)
	if err != nil {
		return nil, err
	}
	endpoint = strings.TrimRight(endpoint, "/")
	opts = append(opts, connect.WithInterceptors(connectclient.Bearer(key)))
	return &clients{
		query:      queryv1connect.NewQueryServiceClient(hc, endpoint, opts...),
		satellites: registryv1connect.NewRegistryServiceClient(hc, endpoint, opts...),
		gateway:    gatewayv1connect.NewGatewayServiceClient(hc, endpoint, opts...),
		logs:       logbrokerv1connect.NewLogBrokerServiceClient(hc, endpoint, opts...),
	}, nil
}

// explain makes API errors read well on a terminal.
func explain(err error) error {
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return err
	}
	switch ce.Code() {
	case connect.CodeUnauthenticated:
		return fmt.Errorf("%s (check --api-key / ORBIT_API_KEY)", ce.Message())
	case connect.CodeUnavailable:
		if strings.Contains(ce.Message(), "connection refused") || strings.Contains(ce.Message(), "dial") {
			return fmt.Errorf("cannot reach the gateway: %s (check --endpoint / ORBIT_ENDPOINT; is 'orbit dev' running?)", ce.Message())
		}
	}
	return fmt.Errorf("%s: %s", ce.Code(), ce.Message())
}

func firstNonEmpty(v ...string) string {
	for _, s := range v {
		if s != "" {
			return s
		}
	}
	return ""
}

func parseLabels(s string) (map[string]string, error) {
	out := map[string]string{}
	for _, kv := range strings.Split(s, ",") {
		if kv = strings.TrimSpace(kv); kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("selector %q: want key=value[,key=value]", kv)
		}
		out[k] = v
	}
	return out, nil
}

func satellitesList(ctx context.Context, c *clients, args []string, env Env) error {
	fs := newFlags("satellites list", env, satellitesHelp)
	sel := fs.String("selector", "", "labels to match, k=v,k=v")
	status := fs.String("status", "", "HEALTHY, DEGRADED or DISCONNECTED")
	out := fs.String("o", "table", "output: table, json, csv, yaml")
	if err := fs.Parse(args); err != nil {
		return err
	}
	labels, err := parseLabels(*sel)
	if err != nil {
		return err
	}
	req := &registryv1.ListSatellitesRequest{MatchLabels: labels}
	if *status != "" {
		v, ok := registryv1.SatelliteStatus_value["SATELLITE_STATUS_"+strings.ToUpper(*status)]
		if !ok {
			return fmt.Errorf("--status %q: want HEALTHY, DEGRADED or DISCONNECTED", *status)
		}
		req.Statuses = []registryv1.SatelliteStatus{registryv1.SatelliteStatus(v)}
	}
	var sats []*registryv1.Satellite
	for {
		resp, err := c.satellites.ListSatellites(ctx, connect.NewRequest(req))
		if err != nil {
			return explain(err)
		}
		sats = append(sats, resp.Msg.Satellites...)
		if req.PageToken = resp.Msg.NextPageToken; req.PageToken == "" {
			break
		}
	}
	w, err := newWriter(*out, env.Stdout, []string{"name", "id", "status", "labels", "version", "address", "last_heartbeat", "store_rows"})
	if err != nil {
		return err
	}
	for _, s := range sats {
		if err := w.row(satelliteRow(s)); err != nil {
			return err
		}
	}
	return w.close()
}

func satelliteRow(s *registryv1.Satellite) []any {
	hb := ""
	if s.LastHeartbeat != nil {
		hb = s.LastHeartbeat.AsTime().Format(time.RFC3339)
	}
	return []any{s.Name, s.Id, strings.TrimPrefix(s.Status.String(), "SATELLITE_STATUS_"), labelString(s.Labels), s.Version, s.Address, hb, s.StoreRows}
}

func satellitesGet(ctx context.Context, c *clients, args []string, env Env) error {
	fs := newFlags("satellites get", env, satellitesHelp)
	out := fs.String("o", "table", "output: table, json, csv, yaml")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return errors.New("satellites get: want one ID or name")
	}
	resp, err := c.satellites.GetSatellite(ctx, connect.NewRequest(&registryv1.GetSatelliteRequest{Satellite: pos[0]}))
	if err != nil {
		return explain(err)
	}
	w, err := newWriter(*out, env.Stdout, []string{"name", "id", "status", "labels", "version", "address", "last_heartbeat", "store_rows", "dns_name", "cert_not_after"})
	if err != nil {
		return err
	}
	sat := resp.Msg.Satellite
	notAfter := ""
	if sat.CertNotAfter != nil {
		notAfter = sat.CertNotAfter.AsTime().UTC().Format(time.RFC3339)
	}
	if err := w.row(append(satelliteRow(sat), sat.DnsName, notAfter)); err != nil {
		return err
	}
	return w.close()
}
