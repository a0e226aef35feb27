package cli

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"connectrpc.com/connect"

	registryv1 "github.com/orbitplane/orbit/proto/orbit/registry/v1"
)

// command is one top-level command for shell completion.
type command struct {
	name  string
	subs  []string
	flags []string
}

// commands is orbitctl's command tree, which the completion scripts are
// generated from (TestCompletionCoversEveryCommand keeps it in step with Run).
var commands = []command{
	{"satellites", []string{"list", "get", "delete"}, []string{"--selector", "--status", "-o"}},
	{"query", nil, []string{"--satellite", "--selector", "--direct", "--ca-cert", "--dns-server", "--timeout", "--max-rows", "--stats", "-o"}},
	{"streams", []string{"list", "describe", "create", "delete"}, []string{"--subject", "--max-age", "--max-bytes", "--max-messages", "--compact", "--replicas", "-o"}},
	{"logs", []string{"tail", "publish"}, []string{"--from", "--until", "--level", "--service", "--tenant", "--trace", "--grep", "--subject", "--key", "--dedup-id", "-o"}},
	{"tenants", []string{"list", "create", "delete"}, []string{"-o"}},
	{"keys", []string{"list", "create", "revoke"}, []string{"--tenant", "--scopes", "--expires", "--description", "-o"}},
	{"deploy-keys", []string{"list", "create", "revoke"}, []string{"--tenant", "--labels", "--description", "-o"}},
	{"regions", []string{"list", "status"}, []string{"-o"}},
	{"whoami", nil, nil},
	{"completion", []string{"bash", "zsh", "fish"}, nil},
	{"help", nil, nil},
}

var globalFlags = []string{"--endpoint", "--api-key", "--admin-token"}

func completion(args []string, env Env) error {
	if len(args) != 1 {
		fmt.Fprint(env.Stderr, completionHelp)
		return fmt.Errorf("completion: want bash, zsh or fish")
	}
	switch args[0] {
	case "bash":
		fmt.Fprint(env.Stdout, bashCompletion())
	case "zsh":
		fmt.Fprint(env.Stdout, "#compdef orbitctl\nautoload -U +X bashcompinit && bashcompinit\n"+bashCompletion())
	case "fish":
		fmt.Fprint(env.Stdout, fishCompletion())
	case "-h", "--help", "help":
		fmt.Fprint(env.Stdout, completionHelp)
	default:
		return fmt.Errorf("completion: %q: want bash, zsh or fish", args[0])
	}
	return nil
}

func bashCompletion() string {
	var b strings.Builder
	names := make([]string, 0, len(commands))
	for _, c := range commands {
		names = append(names, c.name)
	}
	b.WriteString("# orbitctl completion for bash (orbitctl completion bash)\n_orbitctl() {\n")
	b.WriteString("  local cur prev cmd i\n  cur=${COMP_WORDS[COMP_CWORD]}\n  prev=${COMP_WORDS[COMP_CWORD-1]}\n")
	b.WriteString("  if [[ $prev == --satellite ]]; then\n    COMPREPLY=($(compgen -W \"$(orbitctl __complete satellites 2>/dev/null)\" -- \"$cur\")); return\n  fi\n")
	b.WriteString("  if [[ $prev == -o ]]; then COMPREPLY=($(compgen -W 'table json csv yaml' -- \"$cur\")); return; fi\n")
	b.WriteString("  if [[ $prev == --level ]]; then COMPREPLY=($(compgen -W 'DEBUG INFO WARN ERROR' -- \"$cur\")); return; fi\n")
	b.WriteString("  cmd=\"\"\n  for ((i = 1; i < COMP_CWORD; i++)); do\n")
	b.WriteString("    case ${COMP_WORDS[i]} in\n      --endpoint|--api-key|--admin-token) ((i++)) ;;\n      -*) ;;\n      *) cmd=${COMP_WORDS[i]}; break ;;\n    esac\n  done\n")
	fmt.Fprintf(&b, "  if [[ -z $cmd ]]; then\n    COMPREPLY=($(compgen -W '%s %s' -- \"$cur\")); return\n  fi\n", strings.Join(names, " "), strings.Join(globalFlags, " "))
	b.WriteString("  case $cmd in\n")
	for _, c := range commands {
		words := append(append([]string{}, c.subs...), c.flags...)
		if len(words) == 0 {
			continue
		}
		fmt.Fprintf(&b, "    %s) COMPREPLY=($(compgen -W '%s' -- \"$cur\")) ;;\n", c.name, strings.Join(words, " "))
	}
	b.WriteString("  esac\n}\ncomplete -F _orbitctl orbitctl\n")
	return b.String()
}

func fishCompletion() string {
	var b strings.Builder
	b.WriteString("# orbitctl completion for fish (orbitctl completion fish)\n")
	var names []string
	for _, c := range commands {
		names = append(names, c.name)
	}
	fmt.Fprintf(&b, "complete -c orbitctl -f -n '__fish_use_subcommand' -a '%s'\n", strings.Join(names, " "))
	for _, g := range globalFlags {
		fmt.Fprintf(&b, "complete -c orbitctl -n '__fish_use_subcommand' -l %s -r\n", strings.TrimPrefix(g, "--"))
	}
	for _, c := range commands {
		if len(c.subs) > 0 {
			fmt.Fprintf(&b, "complete -c orbitctl -f -n '__fish_seen_subcommand_from %s' -a '%s'\n", c.name, strings.Join(c.subs, " "))
		}
		for _, f := range c.flags {
			if strings.HasPrefix(f, "--") {
				fmt.Fprintf(&b, "complete -c orbitctl -n '__fish_seen_subcommand_from %s' -l %s\n", c.name, strings.TrimPrefix(f, "--"))
			} else {
				fmt.Fprintf(&b, "complete -c orbitctl -n '__fish_seen_subcommand_from %s' -s %s -a 'table json csv yaml'\n", c.name, strings.TrimPrefix(f, "-"))
			}
		}
	}
	b.WriteString("complete -c orbitctl -n '__fish_seen_subcommand_from query' -l satellite -x -a '(orbitctl __complete satellites 2>/dev/null)'\n")
	return b.String()
}

// completeNames answers the completion scripts' "__complete satellites":
// the names of the caller's satellites, one per line (nothing on error: a
// shell completion must never print an error into the command line).
func completeNames(ctx context.Context, c *clients, what string, env Env) error {
	if what != "satellites" {
		return nil
	}
	resp, err := c.satellites.ListSatellites(ctx, connect.NewRequest(&registryv1.ListSatellitesRequest{PageSize: 1000}))
	if err != nil {
		return nil
	}
	var names []string
	for _, s := range resp.Msg.Satellites {
		names = append(names, s.Name)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintln(env.Stdout, n)
	}
	return nil
}
