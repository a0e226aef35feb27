package querybroker

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	queryv1 "github.com/orbitplane/orbit/proto/orbit/query/v1"
	wirev1 "github.com/orbitplane/orbit/proto/orbit/wire/v1"
)

// BenchmarkRelayBatch is the broker's work for one 64 KiB result message
// from NATS to the gateway, without the network: decode the frames and
// encode the response message. "decoded" is how it was done before the
// views; "view" is how it is done now.
func BenchmarkRelayBatch(b *testing.B) {
	s := strings.Repeat("x", 1000)
	vals := make([]string, 64)
	for i := range vals {
		vals[i] = s
	}
	frames := &queryv1.ResultFrames{Frames: []*queryv1.ResultFrame{{QueryId: "q", Seq: 7, Kind: &queryv1.ResultFrame_Batch{Batch: &queryv1.ColumnBatch{
		NumRows: 64, Columns: []*queryv1.ColumnValues{{Values: &queryv1.ColumnValues_Strings{Strings: &queryv1.StringValues{Values: vals}}}},
	}}}}}
	data, err := proto.Marshal(frames)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("decoded", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			var fs queryv1.ResultFrames
			if err := proto.Unmarshal(data, &fs); err != nil {
				b.Fatal(err)
			}
			m := &queryv1.ExecuteQueryResponse{SatelliteId: "s1", Batch: fs.Frames[0].GetBatch()}
			if _, err := proto.Marshal(m); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("view", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			var fs wirev1.ResultFramesView
			if err := proto.Unmarshal(data, &fs); err != nil {
				b.Fatal(err)
			}
			var hdr wirev1.ColumnBatchHeader
			if err := readHeader.Unmarshal(fs.Frames[0].GetBatch(), &hdr); err != nil || hdr.NumRows != 64 {
				b.Fatal(hdr.NumRows, err)
			}
			m := &wirev1.ExecuteQueryResponseView{SatelliteId: "s1", Batch: fs.Frames[0].GetBatch()}
			if _, err := proto.Marshal(m); err != nil {
				b.Fatal(err)
			}
		}
	})
}
