package frame_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"testing"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/bluesky-social/indigo/atproto/atdata"
	"github.com/ipfs/go-cid"
	car "github.com/ipld/go-car"
	cbg "github.com/whyrusleeping/cbor-gen"

	"github.com/atkafka/atkafka/transform/frame"
)

func perFrame(b *testing.B, n int) {
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/frame")
}

// BenchmarkDecode decodes every frame of the capture (header and body, no records) into a reused Frame.
func BenchmarkDecode(b *testing.B) {
	frames := loadFrames(b)
	b.ReportAllocs()
	var f frame.Frame
	for b.Loop() {
		for _, msg := range frames {
			if err := f.Decode(msg); err != nil {
				b.Fatal(err)
			}
		}
	}
	perFrame(b, len(frames))
}

// BenchmarkDecodeCborGen is the baseline: header skipped and body decoded by indigo's cbor-gen types.
func BenchmarkDecodeCborGen(b *testing.B) {
	frames := loadFrames(b)
	b.ReportAllocs()
	for b.Loop() {
		for _, msg := range frames {
			if _, err := cborGenBody(msg); err != nil {
				b.Fatal(err)
			}
		}
	}
	perFrame(b, len(frames))
}

// cborGenBody decodes a frame the way indigo-based consumers do: the header with cbor-gen's generic reader,
// then the body into the generated type its "t" names.
func cborGenBody(msg []byte) (any, error) {
	r := bytes.NewReader(msg)
	cr := cbg.NewCborReader(r)
	_, n, err := cr.ReadHeader()
	if err != nil {
		return nil, err
	}
	var typ string
	for range n {
		k, err := cbg.ReadString(cr)
		if err != nil {
			return nil, err
		}
		if k == "t" {
			if typ, err = cbg.ReadString(cr); err != nil {
				return nil, err
			}
		} else if err := cbg.ScanForLinks(cr, func(cid.Cid) {}); err != nil {
			return nil, err
		}
	}
	var body interface{ UnmarshalCBOR(io.Reader) error }
	switch typ {
	case "#commit":
		body = new(comatproto.SyncSubscribeRepos_Commit)
	case "#identity":
		body = new(comatproto.SyncSubscribeRepos_Identity)
	case "#account":
		body = new(comatproto.SyncSubscribeRepos_Account)
	default:
		return nil, fmt.Errorf("unexpected type %q", typ)
	}
	return body, body.UnmarshalCBOR(r)
}

// BenchmarkCommitRecords is the whole per-frame hot path: decode, index the CAR, render every op's record.
// ns/op divided by the number of ops (reported as ns/op-record) is the figure issue 7 budgets.
func BenchmarkCommitRecords(b *testing.B) {
	frames := loadFrames(b)
	b.ReportAllocs()
	var f frame.Frame
	var recs frame.Records
	ops := 0
	for b.Loop() {
		ops = 0
		for _, msg := range frames {
			if err := f.Decode(msg); err != nil {
				b.Fatal(err)
			}
			if f.Kind != frame.KindCommit {
				continue
			}
			for _, err := range recs.Ops(&f.Commit) {
				if err != nil {
					b.Fatal(err)
				}
				ops++
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*ops), "ns/op-record")
}

// BenchmarkCommitRecordsAtdata is the upstream-style baseline for the same work: cbor-gen body, go-car into
// a map, atdata.UnmarshalCBOR and json.Marshal per record.
func BenchmarkCommitRecordsAtdata(b *testing.B) {
	frames := loadFrames(b)
	b.ReportAllocs()
	ops := 0
	for b.Loop() {
		ops = 0
		for _, msg := range frames {
			body, err := cborGenBody(msg)
			if err != nil {
				b.Fatal(err)
			}
			c, ok := body.(*comatproto.SyncSubscribeRepos_Commit)
			if !ok {
				continue
			}
			r, err := car.NewCarReader(bytes.NewReader(c.Blocks))
			if err != nil {
				b.Fatal(err)
			}
			blocks := map[string][]byte{}
			for {
				blk, err := r.Next()
				if err != nil {
					break
				}
				blocks[blk.Cid().KeyString()] = blk.RawData()
			}
			for _, op := range c.Ops {
				ops++
				if op.Cid == nil {
					continue
				}
				m, err := atdata.UnmarshalCBOR(blocks[cid.Cid(*op.Cid).KeyString()])
				if err != nil {
					b.Fatal(err)
				}
				if _, err := json.Marshal(m); err != nil {
					b.Fatal(err)
				}
				_ = cid.Cid(*op.Cid).String()
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*ops), "ns/op-record")
}
