package cli

// Help texts of the subcommands (orbitctl CMD -h), each with examples.

const tenantsHelp = `Usage: orbitctl tenants list|create NAME|delete ID [-o table|json|csv|yaml]

Manage tenants on the hub (admin token: --admin-token or $ORBIT_ADMIN_TOKEN;
--endpoint is the hub's gateway).

Examples:
  orbitctl tenants list -o yaml
  orbitctl tenants create acme
  orbitctl tenants delete t_0123456789abcdef
`

const keysHelp = `Usage: orbitctl keys list|create|revoke ID [--tenant ID] [flags]

Manage a tenant's API keys (admin token). The secret of a new key is printed
once on stdout; Orbit keeps only its hash. --tenant defaults to the tenant of
the API key in use, if any.

Examples:
  orbitctl keys list --tenant t_0123456789abcdef
  orbitctl keys create --tenant t_0123456789abcdef --scopes query,satellites:read --expires 720h --description ci
  export ORBIT_API_KEY=$(orbitctl keys create --description laptop)
  orbitctl keys revoke k_0123456789abcdef
`

const deployKeysHelp = `Usage: orbitctl deploy-keys list|create|revoke ID [--tenant ID] [flags]

Manage the deploy keys satellites enrol with (admin token). The secret of a
new key is printed once on stdout, with an install command on stderr.

Examples:
  orbitctl deploy-keys create --labels env=prod,site=eu-1 --description "EU sites"
  orbitctl deploy-keys list -o json
  orbitctl deploy-keys revoke dk_0123456789abcdef
`

const regionsHelp = `Usage: orbitctl regions list|status [-o table|json|csv|yaml]

list:   the regions your API key works in, with their gateways
status: (admin token) every region with the context publisher's lag

Examples:
  orbitctl regions list
  ORBIT_ENDPOINT=$(orbitctl regions list -o csv | awk -F, '$1=="eu-1"{print $2}') orbitctl satellites list
  orbitctl regions status
`

const completionHelp = `Usage: orbitctl completion bash|zsh|fish

Prints a shell completion script: commands, subcommands, flags, and
satellite names for --satellite (asked from the gateway as you type).

Examples:
  source <(orbitctl completion bash)                 # this shell
  orbitctl completion bash > /etc/bash_completion.d/orbitctl
  orbitctl completion zsh > "${fpath[1]}/_orbitctl"
  orbitctl completion fish > ~/.config/fish/completions/orbitctl.fish
`

const satellitesHelp = `Usage: orbitctl satellites list [--selector k=v,...] [--status S] [-o FORMAT]
       orbitctl satellites get ID|NAME [-o FORMAT]
       orbitctl satellites delete ID|NAME

Your tenant's satellites with status, address, DNS name, version and labels.

Examples:
  orbitctl satellites list --selector env=prod --status HEALTHY
  orbitctl satellites get edge-berlin-1 -o yaml
  orbitctl satellites delete 0b9f2c7e-...      # also revokes its certificate
`

const queryHelp = `Usage: orbitctl query (--satellite ID|NAME [--direct] | --selector k=v,...) [-o table|json|csv|yaml] [--stats] SQL

Read-only SQL (DuckDB) on one satellite or on every satellite whose labels
match (an empty selector means all). Rows stream as they arrive; progress
(rows, bytes, elapsed, and for a fan-out a bar of satellites answered) goes to
stderr on a terminal; Ctrl-C cancels the query on the satellites too.
--stats prints, after the result, each satellite's outcome, rows, bytes and
time, with its own time for the statement: the rest was spent on the way.
--direct asks the satellite over HTTPS (its certificate checked against
--ca-cert) and falls back to the gateway with a notice.

Examples:
  orbitctl query --satellite demo-1 "SELECT service, count(*) AS n FROM spans GROUP BY 1 ORDER BY n DESC"
  orbitctl query --selector env=prod -o csv "SELECT time, service, body FROM logs WHERE severity = 'ERROR'" > errors.csv
  orbitctl query --selector "" --stats "SELECT count(*) FROM metrics"
  orbitctl query --satellite demo-1 --direct --ca-cert ca.pem --dns-server 127.0.0.1:5353 "SELECT 1"
`

const streamsHelp = `Usage: orbitctl streams list|describe NAME|create NAME|delete NAME [flags]

Your tenant's durable log streams (the log broker).

Examples:
  orbitctl streams list
  orbitctl streams create app --subject 'app.>' --max-age 24h --max-bytes 1073741824
  orbitctl streams create users --compact              # newest message per key
  orbitctl streams describe app -o yaml
`

const logsHelp = `Usage: orbitctl logs tail STREAM [flags]
       orbitctl logs publish STREAM VALUE [--subject S] [--key K] [--dedup-id ID]

tail follows a stream from --from (latest, earliest, an offset, 10m ago or an
RFC 3339 time) until Ctrl-C or --until; filters apply to orbit.log/v1 lines.

Examples:
  orbitctl logs tail orbit-logs --level WARN
  orbitctl logs tail orbit-logs --from 1h --trace 4bf92f3577b34da6a3ce929d0e0e4736
  orbitctl logs tail app --from earliest --until 100 -o json
  orbitctl logs publish app '{"level":"INFO","message":"deployed"}' --key deploy
`
