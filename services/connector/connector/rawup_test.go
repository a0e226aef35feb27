package connector

import (
	"bytes"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	connectorv1 "github.com/orbitplane/orbit/proto/orbit/connector/v1"
	contextv1 "github.com/orbitplane/orbit/proto/orbit/context/v1"
	queryv1 "github.com/orbitplane/orbit/proto/orbit/query/v1"
)

func TestResultFramesPassThroughUndecoded(t *testing.T) {
	frames := &queryv1.ResultFrames{Frames: []*queryv1.ResultFrame{
		{QueryId: "q1", Seq: 7, Kind: &queryv1.ResultFrame_Schema{Schema: &queryv1.ResultSchema{Columns: []*queryv1.Column{{Name: "s"}}}}},
		{QueryId: "q1", Seq: 8, Kind: &queryv1.ResultFrame_Batch{Batch: &queryv1.ColumnBatch{NumRows: 1, Columns: []*queryv1.ColumnValues{
			{Values: &queryv1.ColumnValues_Strings{Strings: &queryv1.StringValues{Values: []string{strings.Repeat("x", 4096)}}}}}}}},
		{QueryId: "q1", Seq: 9, Kind: &queryv1.ResultFrame_End{End: &queryv1.ResultEnd{Rows: 1}}},
	}}
	carrier := &contextv1.Carrier{Traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
	wire, err := proto.Marshal(&connectorv1.ConnectRequest{Context: carrier, Frame: &connectorv1.ConnectRequest_Results{Results: frames}})
	if err != nil {
		t.Fatal(err)
	}
	want, _ := proto.Marshal(frames)
	var u upFrame
	if err := (upCodec{}).Unmarshal(wire, &u); err != nil {
		t.Fatal(err)
	}
	// NATS gets exactly the satellite's encoding of the frames, which the
	// broker decodes as before.
	if !bytes.Equal(u.results, want) {
		t.Fatal("the results published are not the satellite's ResultFrames")
	}
	var back queryv1.ResultFrames
	if err := proto.Unmarshal(u.results, &back); err != nil || !proto.Equal(&back, frames) {
		t.Fatalf("the broker would read %v (%v)", &back, err)
	}
	wantMeta := []frameMeta{{"q1", 7, false}, {"q1", 8, false}, {"q1", 9, true}}
	if len(u.frames) != len(wantMeta) {
		t.Fatalf("frames %+v, want %+v", u.frames, wantMeta)
	}
	for i := range wantMeta {
		if u.frames[i] != wantMeta[i] {
			t.Fatalf("frame %d: %+v, want %+v", i, u.frames[i], wantMeta[i])
		}
	}
	if !proto.Equal(u.msg.Context, carrier) || u.msg.Frame != nil {
		t.Fatalf("the rest of the frame decoded to %v", u.msg)
	}
	u.release()
	if u.results != nil || u.frames != nil {
		t.Fatal("release left the frame's data in place")
	}

	// An error frame ends the query too.
	wire, _ = proto.Marshal(&connectorv1.ConnectRequest{Frame: &connectorv1.ConnectRequest_Results{Results: &queryv1.ResultFrames{Frames: []*queryv1.ResultFrame{
		{QueryId: "q2", Seq: 1, Kind: &queryv1.ResultFrame_Error{Error: &queryv1.QueryError{Message: "boom"}}}}}}})
	var e upFrame
	if err := (upCodec{}).Unmarshal(wire, &e); err != nil || len(e.frames) != 1 || !e.frames[0].last || e.frames[0].queryID != "q2" {
		t.Fatalf("error frame read as %+v (%v)", e.frames, err)
	}

	// Other frames decode as usual.
	wire, _ = proto.Marshal(&connectorv1.ConnectRequest{Frame: &connectorv1.ConnectRequest_Heartbeat{Heartbeat: &connectorv1.Heartbeat{Version: "v9"}}})
	var h upFrame
	if err := (upCodec{}).Unmarshal(wire, &h); err != nil || h.results != nil || h.msg.GetHeartbeat().GetVersion() != "v9" {
		t.Fatalf("heartbeat decoded to %v, results %d bytes (%v)", h.msg, len(h.results), err)
	}

	// A truncated frame is an error, not a partial publish.
	wire, _ = proto.Marshal(&connectorv1.ConnectRequest{Frame: &connectorv1.ConnectRequest_Results{Results: frames}})
	var bad upFrame
	if err := (upCodec{}).Unmarshal(wire[:len(wire)-3], &bad); err == nil {
		t.Fatal("a truncated frame was accepted")
	}
}

// BenchmarkRelayFrame is the connector's work per link message of a 64 KiB
// batch before the NATS publish: the frame decoded and its ResultFrames
// encoded again (before), against read for routing and passed on (now).
func BenchmarkRelayFrame(b *testing.B) {
	vals := make([]string, 64)
	for i := range vals {
		vals[i] = strings.Repeat("x", 1020)
	}
	wire, err := proto.Marshal(&connectorv1.ConnectRequest{Frame: &connectorv1.ConnectRequest_Results{Results: &queryv1.ResultFrames{Frames: []*queryv1.ResultFrame{
		{QueryId: "01JD3X5Q8K2N4M6P8R0T2V4X70", Seq: 12, Kind: &queryv1.ResultFrame_Batch{Batch: &queryv1.ColumnBatch{NumRows: 64, Columns: []*queryv1.ColumnValues{
			{Values: &queryv1.ColumnValues_Strings{Strings: &queryv1.StringValues{Values: vals}}}}}}}}}}})
	if err != nil {
		b.Fatal(err)
	}
	b.Run("decode-encode", func(b *testing.B) {
		b.SetBytes(int64(len(wire)))
		b.ReportAllocs()
		for b.Loop() {
			var m connectorv1.ConnectRequest
			if err := proto.Unmarshal(wire, &m); err != nil {
				b.Fatal(err)
			}
			if _, err := proto.Marshal(m.GetResults()); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("raw", func(b *testing.B) {
		b.SetBytes(int64(len(wire)))
		b.ReportAllocs()
		for b.Loop() {
			var u upFrame // connect receives each message into a new one
			if err := (upCodec{}).Unmarshal(wire, &u); err != nil || len(u.frames) != 1 {
				b.Fatal(err)
			}
			u.release() // as relayRaw does after the publish
		}
	})
}
