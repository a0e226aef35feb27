package gateway

import (
	"errors"
	"fmt"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/orbitplane/orbit/libs/bufpool"
	queryv1 "github.com/orbitplane/orbit/proto/orbit/query/v1"
	"github.com/orbitplane/orbit/proto/orbit/query/v1/queryv1connect"
)

// rawResponse is one ExecuteQueryResponse as the broker encoded it. The
// gateway only forwards query results, so it does not decode them into Go
// values and encode them again: a 64 KiB batch crosses it as one copy
// (docs/query-path.md, docs/benchmarks.md). Clients that speak JSON get it
// converted on the way out.
type rawResponse struct{ b []byte }

// release gives the message's buffer back to libs/bufpool once it has
// been sent on; the message is empty after it.
func (r *rawResponse) release() {
	bufpool.Put(r.b)
	r.b = nil
}

// executeQueryMethod is ExecuteQuery's schema, which the generated code
// would attach to its client and handler.
var executeQueryMethod = queryv1.File_orbit_query_v1_query_proto.Services().ByName("QueryService").Methods().ByName("ExecuteQuery")

// isSummary reports whether the message carries the summary, the stream's
// last message. It walks the top-level fields (a few tags and lengths,
// whatever the message's size), so a message whose framing is broken is an
// error here rather than at the client.
func (r *rawResponse) isSummary() (bool, error) {
	b := r.b
	summary := false
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false, protowire.ParseError(n)
		}
		b = b[n:]
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return false, protowire.ParseError(n)
		}
		b = b[n:]
		summary = summary || num == summaryField
	}
	return summary, nil
}

// summaryField is ExecuteQueryResponse.summary's field number.
var summaryField = executeQueryMethod.Output().Fields().ByName("summary").Number()

// rawCodec is connect's binary protobuf or JSON codec, except that a
// *rawResponse passes as its bytes. Everything else (the request) is
// handled as connect's own codecs handle it.
type rawCodec struct {
	name   string
	binary bool
}

// rawCodecs replace connect's defaults ("proto", "json" and
// "json; charset=utf-8") on the gateway's ExecuteQuery handler.
func rawCodecs() []connect.HandlerOption {
	return []connect.HandlerOption{
		connect.WithCodec(rawCodec{name: "proto", binary: true}),
		connect.WithCodec(rawCodec{name: "json"}),
		connect.WithCodec(rawCodec{name: "json; charset=utf-8"}),
	}
}

func (c rawCodec) Name() string   { return c.name }
func (c rawCodec) IsBinary() bool { return c.binary }

// Marshal returns a new slice: connect keeps what Marshal returns (it puts
// it into its buffer pool), so a raw message's own buffer must never leave
// by this way. Connect sends through MarshalAppend, below.
func (c rawCodec) Marshal(v any) ([]byte, error) {
	return c.MarshalAppend(nil, v)
}

// MarshalAppend appends the message to dst, a buffer from connect's pool: a
// raw message is copied in as it came.
func (c rawCodec) MarshalAppend(dst []byte, v any) ([]byte, error) {
	if r, ok := v.(*rawResponse); ok {
		if c.binary {
			return append(dst, r.b...), nil
		}
		var m queryv1.ExecuteQueryResponse
		if err := proto.Unmarshal(r.b, &m); err != nil {
			return nil, fmt.Errorf("gateway: a result message from the broker does not decode: %w", err)
		}
		return protojson.MarshalOptions{}.MarshalAppend(dst, &m)
	}
	m, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("gateway: %T is not a protobuf message", v)
	}
	if c.binary {
		return proto.MarshalOptions{}.MarshalAppend(dst, m)
	}
	return protojson.MarshalOptions{}.MarshalAppend(dst, m)
}

func (c rawCodec) Unmarshal(data []byte, v any) error {
	if r, ok := v.(*rawResponse); ok {
		if !c.binary {
			return errors.New("gateway: the broker answered in JSON; internal calls use binary protobuf")
		}
		r.b = bufpool.Copy(data) // connect reuses data's buffer
		return nil
	}
	m, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("gateway: %T is not a protobuf message", v)
	}
	if c.binary {
		return proto.Unmarshal(data, m)
	}
	if len(data) == 0 {
		return errors.New("zero-length payload is not a valid JSON object")
	}
	return protojson.UnmarshalOptions{DiscardUnknown: true}.Unmarshal(data, m)
}

// rawExecuteQueryClient calls the broker's ExecuteQuery and receives its
// messages undecoded.
func rawExecuteQueryClient(hc connect.HTTPClient, brokerURL string, opts []connect.ClientOption) *connect.Client[queryv1.ExecuteQueryRequest, rawResponse] {
	// A client has one codec (the last WithCodec): binary protobuf.
	o := append([]connect.ClientOption{connect.WithSchema(executeQueryMethod)}, opts...)
	o = append(o, connect.WithCodec(rawCodec{name: "proto", binary: true}))
	return connect.NewClient[queryv1.ExecuteQueryRequest, rawResponse](hc, brokerURL+queryv1connect.QueryServiceExecuteQueryProcedure, o...)
}
