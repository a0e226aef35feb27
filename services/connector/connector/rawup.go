package connector

import (
	"errors"
	"fmt"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/orbitplane/orbit/libs/bufpool"
	connectorv1 "github.com/orbitplane/orbit/proto/orbit/connector/v1"
	queryv1 "github.com/orbitplane/orbit/proto/orbit/query/v1"
)

// upFrame is one frame from a satellite. Result frames — almost all of a
// link's bytes — are not decoded: the connector publishes them to NATS as
// the satellite encoded them (the ResultFrames message inside the frame is
// exactly the NATS payload the broker reads), and reads only what it needs
// to route them: each frame's query ID and sequence number and whether it
// ends the query. Every other frame is decoded as usual into msg.
type upFrame struct {
	msg *connectorv1.ConnectRequest
	// results is the encoded ResultFrames (field `results`), when the frame
	// carried results; frames is what was read from it.
	results []byte
	frames  []frameMeta
}

// frameMeta is what the connector reads of one result frame.
type frameMeta struct {
	queryID string
	seq     uint64
	last    bool // an end or error frame
}

// Field numbers the connector reads, from the generated descriptors
// (proto/orbit/connector/v1, proto/orbit/query/v1).
var (
	resultsField = (&connectorv1.ConnectRequest{}).ProtoReflect().Descriptor().Fields().ByName("results").Number()
	framesField  = (&queryv1.ResultFrames{}).ProtoReflect().Descriptor().Fields().ByName("frames").Number()
	frameFields  = (&queryv1.ResultFrame{}).ProtoReflect().Descriptor().Fields()
	frameQueryID = frameFields.ByName("query_id").Number()
	frameSeq     = frameFields.ByName("seq").Number()
	frameEnd     = frameFields.ByName("end").Number()
	frameError   = frameFields.ByName("error").Number()
)

// release gives the frame's results buffer back to libs/bufpool once
// published (nats.go copies the payload in Publish).
func (u *upFrame) release() {
	bufpool.Put(u.results)
	u.results, u.frames = nil, nil
}

// upCodec is connect's binary protobuf codec for the link, reading result
// frames as above. Satellites speak binary protobuf only.
type upCodec struct{}

func (upCodec) Name() string   { return "proto" }
func (upCodec) IsBinary() bool { return true }

func (upCodec) Marshal(v any) ([]byte, error) {
	m, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("connector: %T is not a protobuf message", v)
	}
	return proto.Marshal(m)
}

func (upCodec) Unmarshal(data []byte, v any) error {
	u, ok := v.(*upFrame)
	if !ok {
		m, ok := v.(proto.Message)
		if !ok {
			return fmt.Errorf("connector: %T is not a protobuf message", v)
		}
		return proto.Unmarshal(data, m)
	}
	u.msg = &connectorv1.ConnectRequest{}
	// Find the results field; everything else is small and decoded.
	var results []byte
	rest := data
	for b := data; len(b) > 0; {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			return protowire.ParseError(m)
		}
		if num == resultsField && typ == protowire.BytesType {
			if results != nil {
				return errors.New("connector: a frame carries results twice")
			}
			v, _ := protowire.ConsumeBytes(b[n:])
			results = v
			// The fields before and after it, without it.
			start := len(data) - len(b)
			rest = append(append([]byte(nil), data[:start]...), b[n+m:]...)
		}
		b = b[n+m:]
	}
	if err := proto.Unmarshal(rest, u.msg); err != nil {
		return err
	}
	if results == nil {
		return nil
	}
	if u.msg.Frame != nil {
		return errors.New("connector: a frame carries results and another kind of frame")
	}
	frames, err := readFrames(results, u.frames[:0])
	if err != nil {
		return err
	}
	u.frames = frames
	u.results = bufpool.Copy(results) // connect reuses data's buffer
	return nil
}

// readFrames reads each frame's routing fields from an encoded ResultFrames.
func readFrames(b []byte, out []frameMeta) ([]frameMeta, error) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		b = b[n:]
		if num != framesField || typ != protowire.BytesType {
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return nil, protowire.ParseError(n)
			}
			b = b[n:]
			continue
		}
		f, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		b = b[n:]
		var meta frameMeta
		for len(f) > 0 {
			num, typ, n := protowire.ConsumeTag(f)
			if n < 0 {
				return nil, protowire.ParseError(n)
			}
			f = f[n:]
			switch {
			case num == frameQueryID && typ == protowire.BytesType:
				v, n := protowire.ConsumeBytes(f)
				if n < 0 {
					return nil, protowire.ParseError(n)
				}
				meta.queryID = string(v)
				f = f[n:]
				continue
			case num == frameSeq && typ == protowire.VarintType:
				v, n := protowire.ConsumeVarint(f)
				if n < 0 {
					return nil, protowire.ParseError(n)
				}
				meta.seq = v
				f = f[n:]
				continue
			case num == frameEnd || num == frameError:
				meta.last = true
			}
			n = protowire.ConsumeFieldValue(num, typ, f)
			if n < 0 {
				return nil, protowire.ParseError(n)
			}
			f = f[n:]
		}
		out = append(out, meta)
	}
	return out, nil
}

// linkHandlerOptions are the link handler's options with upCodec.
func linkHandlerOptions(opts []connect.HandlerOption) []connect.HandlerOption {
	method := connectorv1.File_orbit_connector_v1_link_proto.Services().ByName("LinkService").Methods().ByName("Connect")
	return append(append([]connect.HandlerOption(nil), opts...), connect.WithSchema(method), connect.WithCodec(upCodec{}))
}
