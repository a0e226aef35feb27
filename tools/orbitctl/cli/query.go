package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/orbitplane/orbit/libs/colbatch"
	"github.com/orbitplane/orbit/libs/directclient"
	gatewayv1 "github.com/orbitplane/orbit/proto/orbit/gateway/v1"
	queryv1 "github.com/orbitplane/orbit/proto/orbit/query/v1"
	registryv1 "github.com/orbitplane/orbit/proto/orbit/registry/v1"
)

func query(ctx context.Context, c *clients, args []string, env Env) error {
	fs := newFlags("query", env, queryHelp)
	satellite := fs.String("satellite", "", "one satellite, by ID or name")
	selector := fs.String("selector", "", "every satellite whose labels match k=v,k=v (\"\" = all)")
	out := fs.String("o", "table", "output: table, json (one object per line), csv, yaml")
	timeout := fs.Duration("timeout", 30*time.Second, "query deadline")
	maxRows := fs.Int64("max-rows", 0, "fail if the result has more rows (0 = server default)")
	direct := fs.Bool("direct", false, "query the satellite directly over HTTPS (falls back to passthrough with a notice)")
	caCert := fs.String("ca-cert", env.Getenv("ORBIT_CA_CERT"), "platform CA (PEM) that verifies satellites in direct mode (default $ORBIT_CA_CERT, else system roots)")
	dnsServer := fs.String("dns-server", env.Getenv("ORBIT_DNS"), "DNS server (host:port) resolving satellite names (default $ORBIT_DNS, else the system resolver)")
	stats := fs.Bool("stats", false, "after the result, print each satellite's outcome, rows, bytes, time, and its own time for the statement to stderr")
	if err := fs.Parse(args); err != nil {
		return err
	}
	selectorSet := false
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "selector" {
			selectorSet = true
		}
	})
	if fs.NArg() != 1 {
		return errors.New("query: want exactly one SQL argument (quote it)")
	}
	if (*satellite == "") == !selectorSet {
		return errors.New("query: give --satellite or --selector (an empty selector means every satellite)")
	}
	if *direct && *satellite == "" {
		return errors.New("query: --direct queries one satellite; give --satellite")
	}
	req := &queryv1.ExecuteQueryRequest{Sql: fs.Arg(0), Timeout: durationpb.New(*timeout)}
	if *maxRows > 0 {
		req.Limits = &queryv1.QueryLimits{MaxRows: *maxRows}
	}
	fanout := *satellite == ""
	names := map[string]string{}
	if fanout {
		labels, err := parseLabels(*selector)
		if err != nil {
			return err
		}
		req.Target = &queryv1.ExecuteQueryRequest_Selector{Selector: &queryv1.LabelSelector{MatchLabels: labels}}
		// Names for the satellite column (IDs are what the stream carries).
		if resp, err := c.satellites.ListSatellites(ctx, connect.NewRequest(&registryv1.ListSatellitesRequest{MatchLabels: labels, PageSize: 5000})); err == nil {
			for _, s := range resp.Msg.Satellites {
				names[s.Id] = s.Name
			}
		}
	} else {
		req.Target = &queryv1.ExecuteQueryRequest_Satellite{Satellite: *satellite}
	}
	// Ctrl-C cancels the query (the satellite's statement stops too).
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var stream resultStream
	if *direct {
		ds, err := openDirect(ctx, c, req, *satellite, *caCert, *dnsServer)
		if err != nil {
			if !fallback(err) {
				return explain(err)
			}
			fmt.Fprintf(env.Stderr, "direct mode unavailable (%v); using passthrough\n", err)
		} else {
			stream = ds
		}
	}
	if stream == nil {
		ps, err := c.query.ExecuteQuery(ctx, connect.NewRequest(req))
		if err != nil {
			return explain(err)
		}
		stream = ps
	}
	defer stream.Close()

	progress := env.Progress != nil && *env.Progress
	if env.Progress == nil {
		if f, ok := env.Stderr.(*os.File); ok {
			if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
				progress = true
			}
		}
	}
	start := time.Now()
	var (
		w       writer
		header  []string
		rows    int64
		bytes   int64
		lastOut time.Time
		summary *queryv1.QuerySummary
		done    []*queryv1.ExecuteQueryResponse
	)
	for stream.Receive() {
		m := stream.Msg()
		// The parts of one message are read in field order.
		if sc := m.Schema; sc != nil && w == nil { // every satellite sends its schema; the first one names the columns
			for _, col := range sc.Columns {
				header = append(header, col.Name)
			}
			if fanout {
				header = append([]string{"satellite"}, header...)
			}
			var err error
			if w, err = newWriter(*out, env.Stdout, header); err != nil {
				return err
			}
		}
		if b := m.Batch; b != nil {
			if w == nil {
				return errors.New("result batch before its schema")
			}
			sat := firstNonEmpty(names[m.SatelliteId], m.SatelliteId)
			for _, r := range colbatch.Rows(b) {
				if fanout {
					r = append([]any{sat}, r...)
				}
				if err := w.row(r); err != nil {
					return err
				}
			}
			rows += b.NumRows
			for _, c := range b.Columns {
				bytes += int64(approxSize(c))
			}
		}
		if m.SatelliteDone != nil {
			done = append(done, m)
		}
		if progress && (m.Batch != nil || m.SatelliteDone != nil) && time.Since(lastOut) > 500*time.Millisecond && time.Since(start) > time.Second {
			lastOut = time.Now()
			line := fmt.Sprintf("%d rows, %s, %s elapsed", rows, human(bytes), time.Since(start).Round(100*time.Millisecond))
			if fanout && len(names) > 0 {
				line = progressBar(len(done), len(names)) + " satellites · " + line
			}
			fmt.Fprintf(env.Stderr, "\r%s\x1b[K", line)
		}
		if m.Summary != nil {
			summary = m.Summary
		}
	}
	if progress && !lastOut.IsZero() {
		fmt.Fprintln(env.Stderr)
	}
	if w != nil {
		if err := w.close(); err != nil {
			return err
		}
	}
	if err := stream.Err(); err != nil {
		if ctx.Err() != nil {
			return errors.New("query canceled")
		}
		return explain(err)
	}
	name := func(d *queryv1.ExecuteQueryResponse) string {
		if !fanout {
			return *satellite
		}
		return firstNonEmpty(names[d.SatelliteId], d.SatelliteId)
	}
	if *stats {
		for _, d := range done {
			fmt.Fprintf(env.Stderr, "satellite %s: %s\n", name(d), satelliteStats(d.GetSatelliteDone()))
		}
	}
	if summary != nil && (fanout || summary.Partial) {
		for _, d := range done {
			r := d.GetSatelliteDone()
			if r.Outcome != queryv1.SatelliteOutcome_SATELLITE_OUTCOME_OK && !*stats {
				fmt.Fprintf(env.Stderr, "satellite %s: %s: %s\n", name(d),
					strings.TrimPrefix(r.Outcome.String(), "SATELLITE_OUTCOME_"), r.GetError().GetMessage())
			}
		}
		fmt.Fprintf(env.Stderr, "%d rows from %d of %d satellites in %s%s\n", summary.Rows, summary.SatellitesOk, summary.SatellitesTotal,
			time.Since(start).Round(time.Millisecond), map[bool]string{true: " (partial result)", false: ""}[summary.Partial])
	}
	return nil
}

// satelliteStats is one satellite's line for --stats: "OK, 5 rows, 120 B in
// 12.3ms (3.1ms on the satellite)"; a failure ends with its error.
func satelliteStats(r *queryv1.SatelliteResult) string {
	line := fmt.Sprintf("%s, %d rows, %s in %s", strings.TrimPrefix(r.GetOutcome().String(), "SATELLITE_OUTCOME_"), r.GetRows(),
		human(r.GetBytes()), r.GetElapsed().AsDuration().Round(10*time.Microsecond))
	if r.GetExecution() != nil {
		line += fmt.Sprintf(" (%s on the satellite)", r.GetExecution().AsDuration().Round(10*time.Microsecond))
	}
	if e := r.GetError(); e != nil {
		line += ": " + e.GetMessage()
	}
	return line
}

// progressBar draws "[######------] 2/3" for n of total done.
func progressBar(n, total int) string {
	const width = 20
	if total <= 0 {
		return ""
	}
	full := min(width, n*width/total)
	return "[" + strings.Repeat("#", full) + strings.Repeat("-", width-full) + "] " + fmt.Sprintf("%d/%d", n, total)
}

func approxSize(c *queryv1.ColumnValues) int {
	switch v := c.Values.(type) {
	case *queryv1.ColumnValues_Strings:
		n := 0
		for _, s := range v.Strings.Values {
			n += len(s)
		}
		return n
	case *queryv1.ColumnValues_Bytes:
		n := 0
		for _, b := range v.Bytes.Values {
			n += len(b)
		}
		return n
	case *queryv1.ColumnValues_Bools:
		return len(v.Bools.Values)
	case *queryv1.ColumnValues_Int64S:
		return 8 * len(v.Int64S.Values)
	case *queryv1.ColumnValues_Float64S:
		return 8 * len(v.Float64S.Values)
	case *queryv1.ColumnValues_Timestamps:
		return 8 * len(v.Timestamps.Values)
	}
	return 0
}

func human(b int64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(b)/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
	case b >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(b)/(1<<10))
	}
	return fmt.Sprintf("%d B", b)
}

// resultStream is a query's answer stream, from the gateway or directly
// from a satellite.
type resultStream interface {
	Receive() bool
	Msg() *queryv1.ExecuteQueryResponse
	Err() error
	Close() error
}

// peeked replays a first message already received.
type peeked struct {
	*connect.ServerStreamForClient[queryv1.ExecuteQueryResponse]
	first bool
}

func (p *peeked) Receive() bool {
	if p.first {
		p.first = false
		return true
	}
	return p.ServerStreamForClient.Receive()
}

// openDirect starts the query on the satellite itself and waits for its
// first message, so a failure to reach it (DNS, TLS, token) is known before
// anything is printed and the caller can fall back.
func openDirect(ctx context.Context, c *clients, req *queryv1.ExecuteQueryRequest, satellite, caFile, dnsServer string) (resultStream, error) {
	var caPEM []byte
	if caFile != "" {
		b, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("--ca-cert: %w", err)
		}
		caPEM = b
	}
	roots, err := directclient.Roots(caPEM)
	if err != nil {
		return nil, err
	}
	ep, err := c.gateway.GetDirectEndpoint(ctx, connect.NewRequest(&gatewayv1.GetDirectEndpointRequest{Satellite: satellite}))
	if err != nil {
		return nil, err
	}
	qc, err := directclient.QueryClient(directclient.HTTPClient(roots, dnsServer), ep.Msg)
	if err != nil {
		return nil, err
	}
	st, err := qc.ExecuteQuery(ctx, connect.NewRequest(req))
	if err != nil {
		return nil, err
	}
	if !st.Receive() {
		err := st.Err()
		_ = st.Close()
		if err == nil {
			err = errors.New("the satellite closed the stream without an answer")
		}
		return nil, err
	}
	return &peeked{ServerStreamForClient: st, first: true}, nil
}

// fallback reports whether a direct-mode failure is about reaching the
// satellite (fall back to passthrough) rather than the query itself (the
// same answer would come through the gateway).
func fallback(err error) bool {
	if err == nil {
		return false
	}
	if strings.HasPrefix(err.Error(), "--ca-cert") {
		return false
	}
	switch connect.CodeOf(err) {
	case connect.CodeInvalidArgument, connect.CodeResourceExhausted, connect.CodeNotFound, connect.CodePermissionDenied,
		connect.CodeCanceled, connect.CodeDeadlineExceeded, connect.CodeOutOfRange:
		return false
	}
	return true
}
