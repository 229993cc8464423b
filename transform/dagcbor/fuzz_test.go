package dagcbor_test

import (
	"encoding/json"
	"testing"

	"github.com/atkafka/atkafka/transform/dagcbor"
)

// FuzzAppendJSON checks that any input either fails with an *Error or yields valid JSON, and that whatever the
// transcoder accepts as a map, atdata accepts too with a JSON-equal result. (The converse does not hold by
// design: see AppendJSON's list of differences.)
func FuzzAppendJSON(f *testing.F) {
	for _, b := range corpusBlocks(f) {
		f.Add(b)
	}
	f.Add([]byte{0xa1, 0x61, 'a', 0xfb, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{0xbf, 0x61, 'a', 0x01, 0xff})
	f.Add([]byte{0xa1, 0x61, 'a', 0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		out, err := dagcbor.AppendJSON(nil, data)
		if err != nil {
			if _, ok := err.(*dagcbor.Error); !ok {
				t.Fatalf("error of type %T: %v", err, err)
			}
			return
		}
		if !json.Valid(out) {
			t.Fatalf("invalid JSON %q", out)
		}
		if d := dagcbor.NewDecoder(data); d.Peek() != dagcbor.KindMap {
			return
		}
		want, err := viaAtdata(data)
		if err != nil {
			t.Fatalf("accepted %q but atdata rejects: %v", out, err)
		}
		if !jsonEqual(t, out, want) {
			t.Fatalf("got %s, atdata %s", out, want)
		}
	})
}

// FuzzParseCAR checks that the CAR index never panics and only hands out blocks inside the input.
func FuzzParseCAR(f *testing.F) {
	for _, b := range corpusCARs(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := dagcbor.ParseCAR(data)
		if err != nil {
			return
		}
		for l, b := range c.All() {
			if got, ok := c.BlockByLink(l); !ok || len(got) != len(b) {
				t.Fatalf("block %s not found by its own CID", l)
			}
		}
		_ = c.Verify()
	})
}
