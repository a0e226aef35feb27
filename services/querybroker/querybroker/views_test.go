package querybroker

import (
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"

	queryv1 "github.com/orbitplane/orbit/proto/orbit/query/v1"
	wirev1 "github.com/orbitplane/orbit/proto/orbit/wire/v1"
)

// TestViewsMirrorTheirOriginals: each view has its original's fields — the
// same numbers, names, kinds, cardinalities and oneofs — except that the
// batch is bytes where the original has a ColumnBatch. A field added to an
// original and not to its view fails here, not as a silently dropped field.
func TestViewsMirrorTheirOriginals(t *testing.T) {
	batch := (&queryv1.ColumnBatch{}).ProtoReflect().Descriptor()
	viewOf := map[protoreflect.FullName]protoreflect.FullName{
		"orbit.query.v1.ResultFrames":         "orbit.wire.v1.ResultFramesView",
		"orbit.query.v1.ResultFrame":          "orbit.wire.v1.ResultFrameView",
		"orbit.query.v1.ExecuteQueryResponse": "orbit.wire.v1.ExecuteQueryResponseView",
	}
	for _, pair := range []struct {
		orig, view protoreflect.MessageDescriptor
	}{
		{(&queryv1.ResultFrames{}).ProtoReflect().Descriptor(), (&wirev1.ResultFramesView{}).ProtoReflect().Descriptor()},
		{(&queryv1.ResultFrame{}).ProtoReflect().Descriptor(), (&wirev1.ResultFrameView{}).ProtoReflect().Descriptor()},
		{(&queryv1.ExecuteQueryResponse{}).ProtoReflect().Descriptor(), (&wirev1.ExecuteQueryResponseView{}).ProtoReflect().Descriptor()},
	} {
		orig, view := pair.orig, pair.view
		if orig.Fields().Len() != view.Fields().Len() {
			t.Errorf("%s has %d fields, its view %s %d", orig.FullName(), orig.Fields().Len(), view.FullName(), view.Fields().Len())
		}
		for i := range orig.Fields().Len() {
			of := orig.Fields().Get(i)
			vf := view.Fields().ByNumber(of.Number())
			if vf == nil {
				t.Errorf("%s: field %d (%s) is missing from the view", orig.FullName(), of.Number(), of.Name())
				continue
			}
			if vf.Name() != of.Name() || vf.Cardinality() != of.Cardinality() {
				t.Errorf("%s.%s: the view's field is %s (%v), want %s (%v)", orig.FullName(), of.Name(), vf.Name(), vf.Cardinality(), of.Name(), of.Cardinality())
			}
			inOneof := func(f protoreflect.FieldDescriptor) bool {
				o := f.ContainingOneof()
				return o != nil && !o.IsSynthetic() // proto3 optional is not a oneof here
			}
			if inOneof(vf) != inOneof(of) {
				t.Errorf("%s.%s: in a oneof in one and not the other", orig.FullName(), of.Name())
			}
			switch {
			case of.Kind() == protoreflect.MessageKind && of.Message().FullName() == batch.FullName():
				if vf.Kind() != protoreflect.BytesKind || !vf.HasPresence() {
					t.Errorf("%s.%s: the view's field must be bytes with presence (an empty batch is still sent)", orig.FullName(), of.Name())
				}
			case of.Kind() == protoreflect.MessageKind:
				want := of.Message().FullName()
				if v, ok := viewOf[want]; ok {
					want = v
				}
				if vf.Kind() != protoreflect.MessageKind || vf.Message().FullName() != want {
					t.Errorf("%s.%s: the view's field is %v, want message %s", orig.FullName(), of.Name(), vf.Kind(), want)
				}
			default:
				if vf.Kind() != of.Kind() {
					t.Errorf("%s.%s: the view's field is %v, want %v", orig.FullName(), of.Name(), vf.Kind(), of.Kind())
				}
			}
		}
	}
	header := (&wirev1.ColumnBatchHeader{}).ProtoReflect().Descriptor().Fields().ByName("num_rows")
	rows := batch.Fields().ByName("num_rows")
	if header.Number() != rows.Number() || header.Kind() != rows.Kind() {
		t.Errorf("ColumnBatchHeader.num_rows is %d %v, ColumnBatch.num_rows %d %v", header.Number(), header.Kind(), rows.Number(), rows.Kind())
	}
}

// TestViewsRoundTrip: what the satellite encodes, the broker decodes as a
// view and encodes again; the gateway's client decodes the original — equal.
func TestViewsRoundTrip(t *testing.T) {
	b := &queryv1.ColumnBatch{NumRows: 2, Columns: []*queryv1.ColumnValues{
		{Values: &queryv1.ColumnValues_Int64S{Int64S: &queryv1.Int64Values{Values: []int64{1, -2}}}},
		{Values: &queryv1.ColumnValues_Strings{Strings: &queryv1.StringValues{Values: []string{"a", "ü"}}}},
	}}
	schema := &queryv1.ResultSchema{Columns: []*queryv1.Column{{Name: "i", Type: queryv1.ColumnType_COLUMN_TYPE_INT64}, {Name: "s", Type: queryv1.ColumnType_COLUMN_TYPE_STRING}}}
	frames := &queryv1.ResultFrames{Frames: []*queryv1.ResultFrame{
		{QueryId: "q", Seq: 1, Kind: &queryv1.ResultFrame_Schema{Schema: schema}},
		{QueryId: "q", Seq: 2, Kind: &queryv1.ResultFrame_Batch{Batch: b}},
		{QueryId: "q", Seq: 3, Kind: &queryv1.ResultFrame_Batch{Batch: &queryv1.ColumnBatch{}}}, // empty
		{QueryId: "q", Seq: 4, Kind: &queryv1.ResultFrame_End{End: &queryv1.ResultEnd{Rows: 2, Bytes: 9, Elapsed: durationpb.New(5)}}},
	}}
	wire, err := proto.Marshal(frames)
	if err != nil {
		t.Fatal(err)
	}
	var view wirev1.ResultFramesView
	if err := proto.Unmarshal(wire, &view); err != nil {
		t.Fatal(err)
	}
	var hdr wirev1.ColumnBatchHeader
	if err := readHeader.Unmarshal(view.Frames[1].GetBatch(), &hdr); err != nil || hdr.NumRows != 2 {
		t.Fatalf("batch header: %d rows, %v; want 2", hdr.NumRows, err)
	}
	if got := view.Frames[2].GetBatch(); got == nil || len(got) != 0 {
		t.Fatalf("the empty batch reads as %v, want present and empty", got)
	}
	again, err := proto.Marshal(&view)
	if err != nil {
		t.Fatal(err)
	}
	var back queryv1.ResultFrames
	if err := proto.Unmarshal(again, &back); err != nil || !proto.Equal(&back, frames) {
		t.Fatalf("frames after the view: %v (%v), want %v", &back, err, frames)
	}

	// The broker's answer: a schema, a batch, the satellite's end and the
	// summary in one message, and a message with an empty batch.
	done := &queryv1.SatelliteResult{Outcome: queryv1.SatelliteOutcome_SATELLITE_OUTCOME_OK, Rows: 2}
	for _, v := range []*wirev1.ExecuteQueryResponseView{
		{SatelliteId: "s1", Schema: schema, Batch: view.Frames[1].GetBatch(), SatelliteDone: done, Summary: &queryv1.QuerySummary{QueryId: "q", Rows: 2}},
		{SatelliteId: "s1", Batch: []byte{}},
	} {
		enc, err := proto.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		var client queryv1.ExecuteQueryResponse
		if err := proto.Unmarshal(enc, &client); err != nil {
			t.Fatal(err)
		}
		decoded, err := fromView(v)
		if err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(&client, decoded) {
			t.Fatalf("a protobuf client reads %v, a JSON client's message is %v", &client, decoded)
		}
		if client.Batch == nil {
			t.Fatalf("the batch is missing from %v", &client)
		}
	}
	if _, err := fromView(&wirev1.ExecuteQueryResponseView{Batch: []byte{0xff}}); err == nil {
		t.Fatal("a malformed batch decoded without an error")
	}
}
