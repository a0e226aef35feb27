package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	logbrokerv1 "github.com/orbitplane/orbit/proto/orbit/logbroker/v1"
)

var streamHeader = []string{"name", "subject", "messages", "bytes", "first_offset", "last_offset", "replicas", "compact", "max_age", "max_messages", "max_bytes"}

func streamRow(s *logbrokerv1.StreamInfo) []any {
	c := s.Config
	age := ""
	if d := c.GetRetention().GetMaxAge(); d != nil {
		age = d.AsDuration().String()
	}
	return []any{c.Name, c.Subject, s.Messages, s.Bytes, s.FirstOffset, s.LastOffset, c.Replicas, c.CompactByKey, age, c.GetRetention().GetMaxMessages(), c.GetRetention().GetMaxBytes()}
}

func streams(ctx context.Context, c *clients, args []string, env Env) error {
	if len(args) == 0 {
		return errors.New("streams: want list, create, describe or delete")
	}
	fs := newFlags("streams "+args[0], env, streamsHelp)
	out := fs.String("o", "table", "output: table, json, csv, yaml")
	cfg := &logbrokerv1.StreamConfig{Retention: &logbrokerv1.Retention{}}
	var maxAge time.Duration
	var replicas int
	if args[0] == "create" {
		fs.StringVar(&cfg.Subject, "subject", "", "subject the stream captures (wildcards * and > allowed); default: the name")
		fs.DurationVar(&maxAge, "max-age", 0, "drop messages older than this (0 = keep)")
		fs.Int64Var(&cfg.Retention.MaxBytes, "max-bytes", 0, "keep at most this many bytes (0 = no limit)")
		fs.Int64Var(&cfg.Retention.MaxMessages, "max-messages", 0, "keep at most this many messages (0 = no limit)")
		fs.BoolVar(&cfg.CompactByKey, "compact", false, "keep only the newest message per key")
		fs.IntVar(&replicas, "replicas", 1, "replicas")
	}
	pos, err := parseInterspersed(fs, args[1:])
	if err != nil {
		return err
	}
	one := func() (string, error) { return oneArg(pos, "streams "+args[0], "stream name") }
	var infos []*logbrokerv1.StreamInfo
	switch args[0] {
	case "list", "ls":
		resp, err := c.logs.ListStreams(ctx, connect.NewRequest(&logbrokerv1.ListStreamsRequest{}))
		if err != nil {
			return explain(err)
		}
		infos = resp.Msg.Streams
	case "describe", "get":
		name, err := one()
		if err != nil {
			return err
		}
		resp, err := c.logs.DescribeStream(ctx, connect.NewRequest(&logbrokerv1.DescribeStreamRequest{Name: name}))
		if err != nil {
			return explain(err)
		}
		infos = append(infos, resp.Msg.Stream)
	case "create":
		name, err := one()
		if err != nil {
			return err
		}
		cfg.Name, cfg.Replicas = name, int32(replicas)
		if cfg.Subject == "" {
			cfg.Subject = name
		}
		if maxAge > 0 {
			cfg.Retention.MaxAge = durationpb.New(maxAge)
		}
		resp, err := c.logs.CreateStream(ctx, connect.NewRequest(&logbrokerv1.CreateStreamRequest{Config: cfg}))
		if err != nil {
			return explain(err)
		}
		if !resp.Msg.Created {
			fmt.Fprintf(env.Stderr, "stream %s already exists with this config\n", name)
		}
		infos = append(infos, resp.Msg.Stream)
	case "delete", "rm":
		name, err := one()
		if err != nil {
			return err
		}
		if _, err := c.logs.DeleteStream(ctx, connect.NewRequest(&logbrokerv1.DeleteStreamRequest{Name: name})); err != nil {
			return explain(err)
		}
		fmt.Fprintf(env.Stdout, "deleted stream %s\n", name)
		return nil
	default:
		return fmt.Errorf("streams: unknown subcommand %q", args[0])
	}
	w, err := newWriter(*out, env.Stdout, streamHeader)
	if err != nil {
		return err
	}
	for _, s := range infos {
		if err := w.row(streamRow(s)); err != nil {
			return err
		}
	}
	return w.close()
}

// logLine is the part of an orbit.log/v1 line the filters and the text
// output read (docs/logging.md).
type logLine struct {
	Time    string `json:"time"`
	Level   string `json:"level"`
	Message string `json:"message"`
	Service string `json:"service"`
	Event   string `json:"event"`
	Tenant  string `json:"tenant"`
	TraceID string `json:"trace_id"`
	QueryID string `json:"query_id"`
}

type logFilter struct {
	level, service, tenant, trace, grep string
}

func (f logFilter) empty() bool { return f == logFilter{} }

var levelRank = map[string]int{"DEBUG": 0, "INFO": 1, "WARN": 2, "ERROR": 3}

// match reports whether a message passes; a line that is not JSON passes
// only filters it can be judged by (--grep).
func (f logFilter) match(value []byte, l *logLine, isJSON bool) bool {
	if f.grep != "" && !strings.Contains(string(value), f.grep) {
		return false
	}
	if !isJSON {
		return f.level == "" && f.service == "" && f.tenant == "" && f.trace == ""
	}
	if f.level != "" && levelRank[strings.ToUpper(l.Level)] < levelRank[strings.ToUpper(f.level)] {
		return false
	}
	return (f.service == "" || l.Service == f.service) && (f.tenant == "" || l.Tenant == f.tenant) && (f.trace == "" || l.TraceID == f.trace)
}

// parseFrom reads --from: latest, earliest, an offset, an RFC 3339 time or
// a duration ago (10m).
func parseFrom(s string, now time.Time, r *logbrokerv1.SubscribeRequest) error {
	switch s {
	case "", "latest":
		r.Start = logbrokerv1.StartPosition_START_POSITION_LATEST
		return nil
	case "earliest", "start", "beginning":
		r.Start = logbrokerv1.StartPosition_START_POSITION_EARLIEST
		return nil
	}
	if off, err := strconv.ParseUint(s, 10, 64); err == nil {
		r.Start, r.StartOffset = logbrokerv1.StartPosition_START_POSITION_OFFSET, off
		return nil
	}
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		r.Start, r.StartTime = logbrokerv1.StartPosition_START_POSITION_TIME, timestamppb.New(now.Add(-d))
		return nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		r.Start, r.StartTime = logbrokerv1.StartPosition_START_POSITION_TIME, timestamppb.New(t)
		return nil
	}
	return fmt.Errorf("--from %q: want latest, earliest, an offset, a duration ago (10m) or an RFC 3339 time", s)
}

func logs(ctx context.Context, c *clients, args []string, env Env) error {
	if len(args) == 0 || (args[0] != "tail" && args[0] != "publish") {
		return errors.New("logs: want 'tail STREAM' or 'publish STREAM VALUE'")
	}
	if args[0] == "publish" {
		return logsPublish(ctx, c, args[1:], env)
	}
	fs := newFlags("logs tail", env, logsHelp)
	from := fs.String("from", "latest", "start: latest (follow new lines), earliest, an offset, a duration ago (10m) or an RFC 3339 time")
	until := fs.Uint64("until", 0, "stop after this offset (0 = follow)")
	var f logFilter
	fs.StringVar(&f.level, "level", "", "at least this level: DEBUG, INFO, WARN, ERROR")
	fs.StringVar(&f.service, "service", "", "only this service")
	fs.StringVar(&f.tenant, "tenant", "", "only lines about this tenant")
	fs.StringVar(&f.trace, "trace", "", "only this trace ID (every line of one request, across services)")
	fs.StringVar(&f.grep, "grep", "", "only lines containing this text")
	out := fs.String("o", "text", "output: text (time level service message) or json (the lines as stored)")
	pos, err := parseInterspersed(fs, args[1:])
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return errors.New("logs tail: want one stream name")
	}
	if *out != "text" && *out != "json" {
		return fmt.Errorf("-o %q: want text or json", *out)
	}
	if _, ok := levelRank[strings.ToUpper(f.level)]; f.level != "" && !ok {
		return fmt.Errorf("--level %q: want DEBUG, INFO, WARN or ERROR", f.level)
	}
	req := &logbrokerv1.SubscribeRequest{Stream: pos[0], StopOffset: *until}
	if err := parseFrom(*from, time.Now(), req); err != nil {
		return err
	}
	st, err := c.logs.Subscribe(ctx, connect.NewRequest(req))
	if err != nil {
		return explain(err)
	}
	defer st.Close()
	for st.Receive() {
		m := st.Msg().Message
		var l logLine
		isJSON := json.Unmarshal(m.Value, &l) == nil
		if !f.empty() && !f.match(m.Value, &l, isJSON) {
			continue
		}
		if *out == "json" || !isJSON {
			fmt.Fprintf(env.Stdout, "%s\n", strings.TrimRight(string(m.Value), "\n"))
			continue
		}
		line := fmt.Sprintf("%s %-5s %-12s %s", l.Time, l.Level, l.Service, l.Message)
		if l.Event != "" {
			line += " event=" + l.Event
		}
		if l.TraceID != "" {
			line += " trace=" + l.TraceID
		}
		fmt.Fprintln(env.Stdout, line)
	}
	if err := st.Err(); err != nil && ctx.Err() == nil {
		return explain(err)
	}
	return nil
}

func logsPublish(ctx context.Context, c *clients, args []string, env Env) error {
	fs := newFlags("logs publish", env, logsHelp)
	subject := fs.String("subject", "", "subject (default: the stream's, when it has no wildcards)")
	key := fs.String("key", "", "message key")
	dedup := fs.String("dedup-id", "", "publish at most once per ID within the stream's dedup window")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return errors.New("logs publish: want STREAM VALUE")
	}
	resp, err := c.logs.Publish(ctx, connect.NewRequest(&logbrokerv1.PublishRequest{Stream: pos[0], Subject: *subject, Key: []byte(*key), Value: []byte(pos[1]), DedupId: *dedup}))
	if err != nil {
		return explain(err)
	}
	dup := ""
	if resp.Msg.Duplicate {
		dup = " (duplicate: already stored)"
	}
	fmt.Fprintf(env.Stdout, "offset %d%s\n", resp.Msg.Offset, dup)
	return nil
}

// parseInterspersed parses flags before, between and after positional
// arguments ("streams create app --subject x"); "--" ends the flags.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if len(args) > len(rest) && args[len(args)-len(rest)-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}
