package e2e

import (
	"net/http"
	"sync"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/orbitplane/orbit/libs/connectclient"
	"github.com/orbitplane/orbit/libs/reqctx"
	queryv1 "github.com/orbitplane/orbit/proto/orbit/query/v1"
	"github.com/orbitplane/orbit/proto/orbit/query/v1/queryv1connect"
)

// headerLog records the responses' content encodings.
type headerLog struct {
	next http.RoundTripper
	mu   sync.Mutex
	seen []string
}

func (h *headerLog) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := h.next.RoundTrip(r)
	if err == nil {
		h.mu.Lock()
		h.seen = append(h.seen, resp.Header.Get("Connect-Content-Encoding")+resp.Header.Get("Grpc-Encoding")+"|"+resp.Header.Get("Content-Type"))
		h.mu.Unlock()
	}
	return resp, err
}

// The gateway forwards the broker's result messages without decoding them
// (services/gateway/gateway/rawquery.go). Whatever a client speaks — the
// Connect protocol in binary or JSON, gzip or not, gRPC, gRPC-Web — it gets
// the same answer, message for message.
func TestEveryClientEncodingGetsTheSameAnswer(t *testing.T) {
	s := newSystem(t, options{})
	s.startSatellite(satOptions{name: "edge-1"})
	ctx := t.Context()
	// ≈ 250 KB in several batches: larger than the size above which the
	// gateway gzips for a client that accepts it.
	const sql = "SELECT i, repeat('x', 120) || i::VARCHAR AS s, i * 0.5 AS half, NULL::INTEGER AS nothing FROM range(2000) t(i)"
	ref, err := collect(mustStream(t)(s.query("tenant-a").ExecuteQuery(ctx, one("edge-1", sql))))
	if err != nil {
		t.Fatal(err)
	}
	if ref.summary == nil || ref.summary.Rows != 2000 {
		t.Fatalf("reference answer: summary %v", ref.summary)
	}
	var refBatches int
	for _, bs := range ref.values {
		refBatches += len(bs)
	}
	if refBatches < 2 {
		t.Fatalf("the reference answer came in %d batch(es); the test wants several", refBatches)
	}
	key := s.tenants["tenant-a"].APIKey
	for _, tc := range []struct {
		name     string
		opts     []connect.ClientOption
		encoding string // expected in the response headers
	}{
		{"connect+json", []connect.ClientOption{connect.WithProtoJSON()}, "|application/connect+json"},
		{"connect+proto, gzip accepted", nil, "gzip|application/connect+proto"},
		{"grpc", []connect.ClientOption{connect.WithGRPC()}, "|application/grpc"},
		{"grpc-web+json", []connect.ClientOption{connect.WithGRPCWeb(), connect.WithProtoJSON()}, "|application/grpc-web+json"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Orbit's own clients turn gzip off; connect's defaults accept it.
			base, _ := connectclient.Options(nil)
			if tc.opts == nil {
				base = nil
			}
			hc := connectclient.HTTPClient(nil)
			hl := &headerLog{next: hc.Transport}
			hc.Transport = hl
			c := queryv1connect.NewQueryServiceClient(hc, s.gateway.URL(), append(append(base, connect.WithInterceptors(connectclient.Bearer(key))), tc.opts...)...)
			got, err := collect(mustStream(t)(c.ExecuteQuery(ctx, one("edge-1", sql))))
			if err != nil {
				t.Fatal(err)
			}
			sameAnswer(t, got, ref)
			hl.mu.Lock()
			defer hl.mu.Unlock()
			if len(hl.seen) != 1 || hl.seen[0] != tc.encoding {
				t.Fatalf("response encodings %q, want [%q]", hl.seen, tc.encoding)
			}
		})
	}
}

// TestBrokerAnswersEveryCodec: the broker passes result batches on as the
// satellite encoded them to protobuf callers (wirev1.ExecuteQueryResponseView)
// and decodes them for JSON callers; both get the same answer.
func TestBrokerAnswersEveryCodec(t *testing.T) {
	s := newSystem(t, options{})
	s.startSatellite(satOptions{name: "edge-1"})
	// Called directly, the broker takes the tenant from the context object
	// the gateway would have set.
	ctx := reqctx.MustWith(t.Context(), reqctx.Fields{Tenant: "tenant-a"})
	const sql = "SELECT i, repeat('x', 120) || i::VARCHAR AS s, i * 0.5 AS half, NULL::INTEGER AS nothing FROM range(2000) t(i)"
	ref, err := collect(mustStream(t)(s.query("tenant-a").ExecuteQuery(ctx, one("edge-1", sql))))
	if err != nil {
		t.Fatal(err)
	}
	empty := "SELECT 1 AS x WHERE false"
	for _, tc := range []struct {
		name string
		opts []connect.ClientOption
	}{
		{"connect+proto", nil},
		{"connect+json", []connect.ClientOption{connect.WithProtoJSON()}},
		{"grpc", []connect.ClientOption{connect.WithGRPC()}},
		{"grpc-web+json", []connect.ClientOption{connect.WithGRPCWeb(), connect.WithProtoJSON()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base, _ := connectclient.Options(nil)
			c := queryv1connect.NewQueryServiceClient(connectclient.HTTPClient(nil), s.broker.URL(), append(base, tc.opts...)...)
			got, err := collect(mustStream(t)(c.ExecuteQuery(ctx, one("edge-1", sql))))
			if err != nil {
				t.Fatal(err)
			}
			sameAnswer(t, got, ref)
			none, err := collect(mustStream(t)(c.ExecuteQuery(ctx, one("edge-1", empty))))
			if err != nil {
				t.Fatal(err)
			}
			if none.summary == nil || none.summary.Rows != 0 || none.summary.SatellitesOk != 1 {
				t.Fatalf("empty result: summary %v, want 0 rows from 1 satellite", none.summary)
			}
		})
	}
}

// sameAnswer fails unless got has ref's summary figures, schemas and
// batches.
func sameAnswer(t *testing.T, got, ref *result) {
	t.Helper()
	// Bytes are counted as the frames travel, and the satellite's end frame
	// carries its elapsed time, whose encoding is a byte longer or shorter
	// from one run to the next: the same answer is within a few bytes.
	if got.summary == nil || got.summary.Rows != ref.summary.Rows || got.summary.SatellitesOk != 1 ||
		got.summary.Bytes < ref.summary.Bytes-8 || got.summary.Bytes > ref.summary.Bytes+8 {
		t.Fatalf("summary %v, want the rows and (within 8) the bytes of %v", got.summary, ref.summary)
	}
	for sat, want := range ref.schemas {
		if !proto.Equal(got.schemas[sat], want) {
			t.Fatalf("schema %v, want %v", got.schemas[sat], want)
		}
	}
	for sat, want := range ref.values {
		g := got.values[sat]
		if len(g) != len(want) {
			t.Fatalf("%d batches, want %d", len(g), len(want))
		}
		for i := range want {
			if !proto.Equal(g[i], want[i]) {
				t.Fatalf("batch %d differs from the binary client's", i)
			}
		}
	}
}

func mustStream(t *testing.T) func(*connect.ServerStreamForClient[queryv1.ExecuteQueryResponse], error) (*connect.ServerStreamForClient[queryv1.ExecuteQueryResponse], bool, func()) {
	return func(st *connect.ServerStreamForClient[queryv1.ExecuteQueryResponse], err error) (*connect.ServerStreamForClient[queryv1.ExecuteQueryResponse], bool, func()) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return st, true, nil
	}
}
