package bench

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/bluesky-social/indigo/atproto/atdata"
	"github.com/ipfs/go-cid"
	car "github.com/ipld/go-car"
	cbg "github.com/whyrusleeping/cbor-gen"
)

// FloorResult is what the single-core floor did in one timed stretch.
type FloorResult struct {
	Ops     int64
	Frames  int64
	Elapsed time.Duration
	CPU     time.Duration
}

// OpsPerSec is the floor's throughput.
func (r FloorResult) OpsPerSec() float64 { return float64(r.Ops) / r.Elapsed.Seconds() }

// Floor runs issue 7's single-core floor over frames, cycling, for at least d on the calling goroutine: decode
// each frame as upstream consumers do (cbor-gen), read its CAR blocks into a map keyed by CID, and turn each
// record into JSON with indigo's atdata. One op is one commit operation, or one non-commit event, which is also
// what one Kafka record of the pipeline is.
func Floor(frames [][]byte, d time.Duration) (FloorResult, error) {
	var r FloorResult
	start, cpu0 := time.Now(), CPUTime()
	for i := 0; ; i++ {
		if i%len(frames) == 0 && time.Since(start) >= d {
			break
		}
		n, err := FloorFrame(frames[i%len(frames)])
		if err != nil {
			return r, err
		}
		r.Ops += int64(n)
		r.Frames++
	}
	r.Elapsed, r.CPU = time.Since(start), CPUTime()-cpu0
	return r, nil
}

// FloorFrame does the floor's work for one frame, the way upstream consumers decode it, and returns its op count
// (a non-commit event counts as one op). The micro-benchmarks of transform/frame use it as their baseline.
func FloorFrame(msg []byte) (int, error) {
	body, err := CborGenBody(msg)
	if err != nil {
		return 0, err
	}
	c, ok := body.(*comatproto.SyncSubscribeRepos_Commit)
	if !ok {
		return 1, nil
	}
	cr, err := car.NewCarReader(bytes.NewReader(c.Blocks))
	if err != nil {
		return 0, err
	}
	blocks := map[string][]byte{}
	for {
		blk, err := cr.Next()
		if err != nil {
			break
		}
		blocks[blk.Cid().KeyString()] = blk.RawData()
	}
	for _, op := range c.Ops {
		if op.Cid == nil {
			continue
		}
		m, err := atdata.UnmarshalCBOR(blocks[cid.Cid(*op.Cid).KeyString()])
		if err != nil {
			return 0, err
		}
		if _, err := json.Marshal(m); err != nil {
			return 0, err
		}
		_ = cid.Cid(*op.Cid).String()
	}
	return len(c.Ops), nil
}

// CborGenBody decodes a frame the way indigo-based consumers do: the header with cbor-gen's generic reader,
// then the body into the generated type its "t" names.
func CborGenBody(msg []byte) (any, error) {
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
	case "#sync":
		body = new(comatproto.SyncSubscribeRepos_Sync)
	default:
		return nil, fmt.Errorf("unexpected frame type %q", typ)
	}
	return body, body.UnmarshalCBOR(r)
}
