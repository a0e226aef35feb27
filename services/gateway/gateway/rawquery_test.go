package gateway

import (
	"bytes"
	"testing"

	"google.golang.org/protobuf/proto"

	queryv1 "github.com/orbitplane/orbit/proto/orbit/query/v1"
)

func TestRawResponsePassesThroughAsEncoded(t *testing.T) {
	batch := &queryv1.ExecuteQueryResponse{SatelliteId: "s1", Batch: &queryv1.ColumnBatch{NumRows: 2, Columns: []*queryv1.ColumnValues{
		{Values: &queryv1.ColumnValues_Strings{Strings: &queryv1.StringValues{Values: []string{"a", "b"}}}}}}}
	last := &queryv1.ExecuteQueryResponse{SatelliteId: "s1", SatelliteDone: &queryv1.SatelliteResult{Rows: 2}, Summary: &queryv1.QuerySummary{Rows: 2, SatellitesOk: 1, SatellitesTotal: 1}}
	c := rawCodec{name: "proto", binary: true}
	for _, tc := range []struct {
		m       *queryv1.ExecuteQueryResponse
		summary bool
	}{{batch, false}, {last, true}} {
		wire, err := proto.Marshal(tc.m)
		if err != nil {
			t.Fatal(err)
		}
		var r rawResponse
		if err := c.Unmarshal(wire, &r); err != nil {
			t.Fatal(err)
		}
		wire[0] ^= 0xff // connect reuses the buffer it read into
		out, err := c.MarshalAppend([]byte("env"), &r)
		if err != nil {
			t.Fatal(err)
		}
		wire[0] ^= 0xff
		if !bytes.Equal(out, append([]byte("env"), wire...)) {
			t.Fatalf("forwarded %x, want the broker's bytes %x after what connect's buffer held", out, wire)
		}
		// What Marshal returns belongs to connect (it pools it): never the
		// message's own buffer, which goes back to libs/bufpool once sent.
		m, err := c.Marshal(&r)
		if err != nil {
			t.Fatal(err)
		}
		r.release()
		var next rawResponse
		if err := c.Unmarshal(bytes.Repeat([]byte{0}, len(wire)), &next); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(m, wire) {
			t.Fatal("a recycled buffer overwrote bytes handed to connect")
		}
		if err := c.Unmarshal(wire, &r); err != nil {
			t.Fatal(err)
		}
		if got, err := r.isSummary(); err != nil || got != tc.summary {
			t.Fatalf("isSummary = %v, %v; want %v", got, err, tc.summary)
		}
		// A JSON client gets the same message as JSON.
		js, err := rawCodec{name: "json"}.Marshal(&r)
		if err != nil {
			t.Fatal(err)
		}
		var back queryv1.ExecuteQueryResponse
		if err := (rawCodec{name: "json"}).Unmarshal(js, &back); err != nil || !proto.Equal(&back, tc.m) {
			t.Fatalf("JSON %s decodes to %v (%v), want %v", js, &back, err, tc.m)
		}
	}
	// A truncated message is an error, not a guess.
	wire, _ := proto.Marshal(last)
	r := rawResponse{b: wire[:len(wire)-1]}
	if _, err := r.isSummary(); err == nil {
		t.Fatal("a truncated message passed the summary check")
	}
	if _, err := (rawCodec{name: "json"}).Marshal(&r); err == nil {
		t.Fatal("a truncated message became JSON")
	}
}

// BenchmarkForwardBatch is what the gateway spends per result message it
// forwards, for a 64 KiB batch of 64 strings of 1 KiB (the streaming
// benchmark's shape): decoded into Go values and encoded again, as the
// generated handler does, against passed through as bytes.
func BenchmarkForwardBatch(b *testing.B) {
	vals := make([]string, 64)
	for i := range vals {
		vals[i] = string(bytes.Repeat([]byte{'x'}, 1020))
	}
	wire, err := proto.Marshal(&queryv1.ExecuteQueryResponse{SatelliteId: "8f14e45f-ceea-467f-a0e6-4b2c5d1e9a77", Batch: &queryv1.ColumnBatch{NumRows: 64, Columns: []*queryv1.ColumnValues{
		{Values: &queryv1.ColumnValues_Strings{Strings: &queryv1.StringValues{Values: vals}}}}}})
	if err != nil {
		b.Fatal(err)
	}
	b.Run("decode-encode", func(b *testing.B) {
		var dst []byte
		b.SetBytes(int64(len(wire)))
		b.ReportAllocs()
		for b.Loop() {
			var m queryv1.ExecuteQueryResponse
			if err := proto.Unmarshal(wire, &m); err != nil {
				b.Fatal(err)
			}
			if m.Summary != nil {
				b.Fatal("summary")
			}
			if dst, err = (proto.MarshalOptions{}).MarshalAppend(dst[:0], &m); err != nil { // connect's pooled buffer
				b.Fatal(err)
			}
		}
	})
	b.Run("raw", func(b *testing.B) {
		c := rawCodec{name: "proto", binary: true}
		var dst []byte
		b.SetBytes(int64(len(wire)))
		b.ReportAllocs()
		for b.Loop() {
			var r rawResponse // connect receives each message into a new one
			if err := c.Unmarshal(wire, &r); err != nil {
				b.Fatal(err)
			}
			if last, err := r.isSummary(); err != nil || last {
				b.Fatal("summary", err)
			}
			if dst, err = c.MarshalAppend(dst[:0], &r); err != nil { // connect's pooled buffer
				b.Fatal(err)
			}
			r.release() // as relay does once the message is sent
		}
	})
}
