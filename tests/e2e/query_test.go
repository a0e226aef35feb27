package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/orbitplane/orbit/libs/colbatch"
	"github.com/orbitplane/orbit/libs/connectclient"
	"github.com/orbitplane/orbit/libs/testing/testwait"
	queryv1 "github.com/orbitplane/orbit/proto/orbit/query/v1"
	registryv1 "github.com/orbitplane/orbit/proto/orbit/registry/v1"
	"github.com/orbitplane/orbit/proto/orbit/registry/v1/registryv1connect"
)

func one(sat string, sql string) *connect.Request[queryv1.ExecuteQueryRequest] {
	return connect.NewRequest(&queryv1.ExecuteQueryRequest{Target: &queryv1.ExecuteQueryRequest_Satellite{Satellite: sat}, Sql: sql})
}

func selector(labels map[string]string, sql string) *connect.Request[queryv1.ExecuteQueryRequest] {
	return connect.NewRequest(&queryv1.ExecuteQueryRequest{Target: &queryv1.ExecuteQueryRequest_Selector{Selector: &queryv1.LabelSelector{MatchLabels: labels}}, Sql: sql})
}

func queryErr(t *testing.T, err error) *queryv1.QueryError {
	t.Helper()
	var ce *connect.Error
	if err == nil {
		t.Fatal("query succeeded; want an error")
	}
	ok := false
	if ce, ok = err.(*connect.Error); !ok {
		t.Fatalf("not a connect error: %v", err)
	}
	for _, d := range ce.Details() {
		if v, err := d.Value(); err == nil {
			if qe, ok := v.(*queryv1.QueryError); ok {
				return qe
			}
		}
	}
	t.Fatalf("error without a QueryError detail: %v", err)
	return nil
}

func TestThreeSatellitesAndFanout(t *testing.T) {
	s := newSystem(t, options{connectors: 2})
	sats := map[string]*sat{}
	for i, name := range []string{"edge-1", "edge-2", "edge-3"} {
		env := "prod"
		if i == 2 {
			env = "dev"
		}
		sats[name] = s.startSatellite(satOptions{name: name, labels: map[string]string{"env": env}, connector: i % 2})
	}
	ctx := context.Background()
	q := s.query("tenant-a")

	// One satellite by name: its own identity, so the rows are its own.
	stream, err := q.ExecuteQuery(ctx, one("edge-2", "SELECT 'hello' AS greeting, 41 + 1 AS answer, range AS i FROM range(5)"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := collect(stream, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	id2 := sats["edge-2"].agent.State().SatelliteID
	if r.rows[id2] != 5 || r.summary.SatellitesOk != 1 || r.summary.Partial {
		t.Fatalf("single: rows %v summary %v", r.rows, r.summary)
	}
	// A small answer is one message: schema, batch, satellite_done, summary.
	if r.messages != 1 || r.done[id2].GetOutcome() != queryv1.SatelliteOutcome_SATELLITE_OUTCOME_OK {
		t.Fatalf("single: %d messages, done %v", r.messages, r.done[id2])
	}
	// The satellite's own time for the statement rides with its answer and
	// lies inside the broker's view of the query.
	if d := r.done[id2]; d.Execution == nil || d.Execution.AsDuration() <= 0 || d.Execution.AsDuration() > d.Elapsed.AsDuration() {
		t.Fatalf("single: execution %v, elapsed %v", d.Execution.AsDuration(), d.Elapsed.AsDuration())
	}
	row := colbatch.Rows(r.values[id2][0])[3]
	if row[0] != "hello" || row[1] != int64(42) || row[2] != int64(3) {
		t.Fatalf("row 3 = %v", row)
	}
	if cols := r.schemas[id2].Columns; len(cols) != 3 || cols[0].Name != "greeting" || cols[2].Type != queryv1.ColumnType_COLUMN_TYPE_INT64 {
		t.Fatalf("schema %v", cols)
	}

	// Fan-out to every satellite: rows from all three, tagged by satellite.
	stream, err = q.ExecuteQuery(ctx, selector(nil, "SELECT * FROM range(1000)"))
	if err != nil {
		t.Fatal(err)
	}
	r, err = collect(stream, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.rows) != 3 || len(r.done) != 3 || r.summary.SatellitesTotal != 3 || r.summary.SatellitesOk != 3 || r.summary.Rows != 3000 {
		t.Fatalf("fan-out: rows %v summary %v", r.rows, r.summary)
	}
	for name, st := range sats {
		if r.rows[st.agent.State().SatelliteID] != 1000 {
			t.Errorf("%s answered %d rows", name, r.rows[st.agent.State().SatelliteID])
		}
	}
	// A selector picks by label.
	stream, err = q.ExecuteQuery(ctx, selector(map[string]string{"env": "prod"}, "SELECT 1"))
	if err != nil {
		t.Fatal(err)
	}
	if r, err = collect(stream, false, nil); err != nil || r.summary.SatellitesTotal != 2 {
		t.Fatalf("prod selector: %v %v", r.summary, err)
	}

	// One satellite down: partial results that say which.
	down := sats["edge-3"]
	down.run.stop(t)
	downID := down.agent.State().SatelliteID
	testwait.For(t, "edge-3 DISCONNECTED", 5*time.Second, func() bool {
		return s.status("tenant-a", downID) == registryv1.SatelliteStatus_SATELLITE_STATUS_DISCONNECTED
	})
	stream, err = q.ExecuteQuery(ctx, selector(nil, "SELECT * FROM range(10)"))
	if err != nil {
		t.Fatal(err)
	}
	r, err = collect(stream, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !r.summary.Partial || r.summary.SatellitesOk != 2 || r.summary.SatellitesTotal != 3 || r.summary.Rows != 20 {
		t.Fatalf("partial summary %v", r.summary)
	}
	if d := r.done[downID]; d == nil || d.Outcome != queryv1.SatelliteOutcome_SATELLITE_OUTCOME_UNAVAILABLE || !strings.Contains(d.Error.Message, "edge-3") || d.Execution != nil {
		t.Fatalf("down satellite's result %v", d)
	}
	// Querying the down satellite alone fails fast with a clear error.
	start := time.Now()
	stream, err = q.ExecuteQuery(ctx, one("edge-3", "SELECT 1"))
	if err == nil {
		_, err = collect(stream, false, nil)
	}
	if qe := queryErr(t, err); qe.Code != queryv1.QueryErrorCode_QUERY_ERROR_CODE_SATELLITE_UNAVAILABLE || time.Since(start) > time.Second {
		t.Fatalf("down satellite: %v after %v", qe, time.Since(start))
	}
	stream, err = q.ExecuteQuery(ctx, one("no-such-satellite", "SELECT 1"))
	if err == nil {
		_, err = collect(stream, false, nil)
	}
	if qe := queryErr(t, err); qe.Code != queryv1.QueryErrorCode_QUERY_ERROR_CODE_SATELLITE_NOT_FOUND {
		t.Fatalf("unknown satellite: %v", qe)
	}
}

func TestBadQueriesGiveClearErrors(t *testing.T) {
	s := newSystem(t, options{})
	s.startSatellite(satOptions{name: "edge-1"})
	q := s.query("tenant-a")
	for _, c := range []struct {
		sql  string
		code queryv1.QueryErrorCode
		rpc  connect.Code
		msg  string
	}{
		{"DELETE FROM logs", queryv1.QueryErrorCode_QUERY_ERROR_CODE_READ_ONLY, connect.CodeInvalidArgument, "only SELECT"},
		{"SELEC 1", queryv1.QueryErrorCode_QUERY_ERROR_CODE_INVALID_SQL, connect.CodeInvalidArgument, "syntax error"},
		{"SELECT * FROM range(100000000)", queryv1.QueryErrorCode_QUERY_ERROR_CODE_ROW_LIMIT, connect.CodeResourceExhausted, "row limit"},
	} {
		req := one("edge-1", c.sql)
		req.Msg.Limits = &queryv1.QueryLimits{MaxRows: 1000}
		stream, err := q.ExecuteQuery(context.Background(), req)
		if err == nil {
			_, err = collect(stream, false, nil)
		}
		qe := queryErr(t, err)
		if qe.Code != c.code || connect.CodeOf(err) != c.rpc || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%q: %v (%v)", c.sql, err, qe.Code)
		}
	}
	// A deadline that passes mid-statement.
	req := one("edge-1", "SELECT count(*) FROM range(1000000000000) a(x) WHERE x % 7 = 3")
	req.Msg.Timeout = durationpb.New(300 * time.Millisecond)
	stream, err := q.ExecuteQuery(context.Background(), req)
	if err == nil {
		_, err = collect(stream, false, nil)
	}
	if connect.CodeOf(err) != connect.CodeDeadlineExceeded {
		t.Errorf("deadline: %v", err)
	}
}

func TestTenantIsolation(t *testing.T) {
	s := newSystem(t, options{})
	a := s.startSatellite(satOptions{name: "a-edge", tenant: "tenant-a"})
	s.startSatellite(satOptions{name: "b-edge", tenant: "tenant-b"})
	idA := a.agent.State().SatelliteID
	qb := s.query("tenant-b")
	for _, ref := range []string{"a-edge", idA} {
		stream, err := qb.ExecuteQuery(context.Background(), one(ref, "SELECT 1"))
		if err == nil {
			_, err = collect(stream, false, nil)
		}
		if qe := queryErr(t, err); qe.Code != queryv1.QueryErrorCode_QUERY_ERROR_CODE_SATELLITE_NOT_FOUND {
			t.Errorf("tenant-b queried %s: %v", ref, err)
		}
	}
	list, err := s.satellites("tenant-b").ListSatellites(context.Background(), connect.NewRequest(&registryv1.ListSatellitesRequest{TenantId: "tenant-a"}))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(list.Msg.Satellites); n != 1 || list.Msg.Satellites[0].Name != "b-edge" {
		t.Fatalf("tenant-b sees %v", list.Msg.Satellites)
	}
	stream, err := qb.ExecuteQuery(context.Background(), selector(nil, "SELECT 1"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := collect(stream, false, nil)
	if err != nil || r.summary.SatellitesTotal != 1 {
		t.Fatalf("tenant-b fan-out reached %v (%v)", r.summary, err)
	}
	// No key, a bad key: refused.
	opts, _ := connectclient.Options(nil)
	for _, key := range []string{"", "ok_aaaaaaaa_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"} {
		c := registryv1connect.NewRegistryServiceClient(s.client, s.gateway.URL(), append(opts, connect.WithInterceptors(connectclient.Bearer(key)))...)
		_, err := c.ListSatellites(context.Background(), connect.NewRequest(&registryv1.ListSatellitesRequest{}))
		if connect.CodeOf(err) != connect.CodeUnauthenticated {
			t.Errorf("key %q: %v", key, err)
		}
	}
}

func TestSchemaDiscovery(t *testing.T) {
	s := newSystem(t, options{})
	s.startSatellite(satOptions{name: "edge-1"})
	resp, err := s.query("tenant-a").GetSchema(context.Background(), connect.NewRequest(&queryv1.GetSchemaRequest{Satellite: "edge-1"}))
	if err != nil {
		t.Fatal(err)
	}
	tables := map[string][]string{}
	for _, tb := range resp.Msg.Tables {
		for _, c := range tb.Columns {
			tables[tb.Name] = append(tables[tb.Name], fmt.Sprintf("%s:%s", c.Name, c.Type))
		}
	}
	if got := fmt.Sprint(tables["logs"][:2]); got != "[time:COLUMN_TYPE_TIMESTAMP service:COLUMN_TYPE_STRING]" {
		t.Fatalf("logs columns %v", tables["logs"])
	}
	if len(tables) != 3 || len(tables["spans"]) != 10 {
		t.Fatalf("tables %v", tables)
	}
}
