package dagcbor_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"reflect"
	"slices"
	"testing"

	"github.com/bluesky-social/indigo/atproto/atdata"
	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"

	"github.com/atkafka/atkafka/testenv"
	"github.com/atkafka/atkafka/transform/dagcbor"
)

// enc builds DAG-CBOR by hand, so tests can also write what no well-behaved encoder would.
type enc []byte

func (e enc) head(major byte, n uint64) enc {
	m := major << 5
	switch {
	case n < 24:
		return append(e, m|byte(n))
	case n <= 0xff:
		return append(e, m|24, byte(n))
	case n <= 0xffff:
		return binary.BigEndian.AppendUint16(append(e, m|25), uint16(n))
	case n <= 0xffffffff:
		return binary.BigEndian.AppendUint32(append(e, m|26), uint32(n))
	}
	return binary.BigEndian.AppendUint64(append(e, m|27), n)
}

func (e enc) int(v int64) enc {
	if v >= 0 {
		return e.head(0, uint64(v))
	}
	return e.head(1, uint64(-1-v))
}

func (e enc) text(s string) enc  { return append(e.head(3, uint64(len(s))), s...) }
func (e enc) bytes(b []byte) enc { return append(e.head(2, uint64(len(b))), b...) }
func (e enc) mapn(n int) enc     { return e.head(5, uint64(n)) }
func (e enc) arrn(n int) enc     { return e.head(4, uint64(n)) }

func (e enc) link(c cid.Cid) enc {
	return append(e.head(6, 42), enc(nil).bytes(append([]byte{0}, c.Bytes()...))...)
}

// testCID returns a deterministic CIDv1 (codec dag-cbor or raw) or CIDv0 derived from seed.
func testCID(t testing.TB, seed string, version int, codec uint64) cid.Cid {
	t.Helper()
	sum := sha256.Sum256([]byte(seed))
	mh, err := multihash.Encode(sum[:], multihash.SHA2_256)
	if err != nil {
		t.Fatal(err)
	}
	if version == 0 {
		return cid.NewCidV0(mh)
	}
	return cid.NewCidV1(codec, mh)
}

// viaAtdata is the reference path the transcoder must match.
func viaAtdata(b []byte) ([]byte, error) {
	m, err := atdata.UnmarshalCBOR(b)
	if err != nil {
		return nil, err
	}
	return json.Marshal(m)
}

// decodeJSON parses JSON keeping numbers exact, so int64 extremes compare correctly.
func decodeJSON(t testing.TB, b []byte) any {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		t.Fatalf("invalid JSON %q: %v", b, err)
	}
	if d.More() {
		t.Fatalf("trailing JSON in %q", b)
	}
	return v
}

func jsonEqual(t testing.TB, a, b []byte) bool {
	t.Helper()
	return reflect.DeepEqual(decodeJSON(t, a), decodeJSON(t, b))
}

// corpusCARs returns the "blocks" CAR of every commit in the relay capture, found with the Decoder alone so
// that these tests do not depend on package frame.
func corpusCARs(t testing.TB) [][]byte {
	t.Helper()
	var cars [][]byte
	for _, msg := range testenv.CorpusFrames(t) {
		d := dagcbor.NewDecoder(msg)
		if err := d.Skip(); err != nil { // header
			t.Fatal(err)
		}
		n2, err := d.MapHeader()
		if err != nil {
			t.Fatal(err)
		}
		for range n2 {
			k, err := d.Text()
			if err != nil {
				t.Fatal(err)
			}
			if string(k) == "blocks" {
				b, err := d.Bytes()
				if err != nil {
					t.Fatal(err)
				}
				cars = append(cars, b)
			} else if err := d.Skip(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if len(cars) != 148 {
		t.Fatalf("found %d commit CARs, want 148", len(cars))
	}
	return cars
}

// corpusBlocks returns every block of every commit CAR in the capture: records, MST nodes and commits.
func corpusBlocks(t testing.TB) [][]byte {
	t.Helper()
	var blocks [][]byte
	for _, b := range corpusCARs(t) {
		car, err := dagcbor.ParseCAR(b)
		if err != nil {
			t.Fatal(err)
		}
		for _, data := range car.All() {
			blocks = append(blocks, data)
		}
	}
	return slices.Clip(blocks)
}
