package dagcbor_test

import (
	"bytes"
	"fmt"
	"testing"

	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	car "github.com/ipld/go-car"

	"github.com/atkafka/atkafka/transform/dagcbor"
)

// TestCorpusCARs compares the index of every commit CAR with go-car's reader and checks block hashes.
func TestCorpusCARs(t *testing.T) {
	var c dagcbor.CAR // reused, as on the hot path
	for i, b := range corpusCARs(t) {
		if err := c.Parse(b); err != nil {
			t.Fatalf("CAR %d: %v", i, err)
		}
		ref, err := car.NewCarReader(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		if len(c.Roots()) != len(ref.Header.Roots) || c.Roots()[0].String() != ref.Header.Roots[0].String() {
			t.Fatalf("CAR %d: roots %v, go-car %v", i, c.Roots(), ref.Header.Roots)
		}
		n := 0
		for {
			blk, err := ref.Next()
			if err != nil {
				break
			}
			n++
			data, ok := c.Block(blk.Cid())
			if !ok || !bytes.Equal(data, blk.RawData()) {
				t.Fatalf("CAR %d: block %s missing or different", i, blk.Cid())
			}
			if data, ok := c.BlockByLink(dagcbor.Link(blk.Cid().Bytes())); !ok || !bytes.Equal(data, blk.RawData()) {
				t.Fatalf("CAR %d: block %s not found by link", i, blk.Cid())
			}
		}
		if n != c.Len() {
			t.Fatalf("CAR %d: %d blocks, go-car %d", i, c.Len(), n)
		}
		if err := c.Verify(); err != nil {
			t.Fatalf("CAR %d: %v", i, err)
		}
		if _, ok := c.Block(testCID(t, "absent", 1, 0x71)); ok {
			t.Fatalf("CAR %d: found an absent block", i)
		}
	}
}

// buildCAR writes a CARv1 with n blocks through go-car, the reference writer.
func buildCAR(t *testing.T, n int) ([]byte, []blocks.Block) {
	t.Helper()
	var blks []blocks.Block
	for i := range n {
		data := enc(nil).text(fmt.Sprint("block ", i))
		blk, err := blocks.NewBlockWithCid(data, cidOf(t, data))
		if err != nil {
			t.Fatal(err)
		}
		blks = append(blks, blk)
	}
	var buf bytes.Buffer
	if err := car.WriteHeader(&car.CarHeader{Roots: []cid.Cid{blks[0].Cid()}, Version: 1}, &buf); err != nil {
		t.Fatal(err)
	}
	for _, b := range blks {
		if err := carutilWrite(&buf, b); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes(), blks
}

func cidOf(t *testing.T, data []byte) cid.Cid {
	c, err := cid.V1Builder{Codec: cid.DagCBOR, MhType: 0x12}.Sum(data)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// carutilWrite writes one CAR section: varint length, CID, data.
func carutilWrite(buf *bytes.Buffer, b blocks.Block) error {
	c := b.Cid().Bytes()
	var v [10]byte
	n := putUvarint(v[:], uint64(len(c)+len(b.RawData())))
	buf.Write(v[:n])
	buf.Write(c)
	_, err := buf.Write(b.RawData())
	return err
}

func putUvarint(b []byte, x uint64) int {
	i := 0
	for x >= 0x80 {
		b[i] = byte(x) | 0x80
		x >>= 7
		i++
	}
	b[i] = byte(x)
	return i + 1
}

// TestCARSorted exercises the sorted index used for CARs larger than a firehose diff.
func TestCARSorted(t *testing.T) {
	for _, n := range []int{1, 16, 17, 100} {
		b, blks := buildCAR(t, n)
		c, err := dagcbor.ParseCAR(b)
		if err != nil {
			t.Fatal(err)
		}
		for _, blk := range blks {
			if data, ok := c.Block(blk.Cid()); !ok || !bytes.Equal(data, blk.RawData()) {
				t.Fatalf("n=%d: block %s", n, blk.Cid())
			}
		}
		if err := c.Verify(); err != nil {
			t.Fatal(err)
		}
		if _, ok := c.Block(testCID(t, "absent", 1, 0x71)); ok {
			t.Fatal("found an absent block")
		}
	}
}

func TestCARRejects(t *testing.T) {
	good, _ := buildCAR(t, 3)
	hlen := int(good[0]) // header is short: one-byte varint
	tampered := bytes.Clone(good)
	tampered[len(tampered)-1] ^= 1
	cases := map[string][]byte{
		"empty":                 {},
		"truncated header":      good[:hlen],
		"header length too big": append([]byte{0xff, 0xff, 0xff, 0xff, 0x0f}, good[1:]...),
		"varint too long":       bytes.Repeat([]byte{0x80}, 12),
		"truncated section":     good[:len(good)-1],
		"section length forged": append(bytes.Clone(good[:1+hlen]), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f),
		"zero section":          append(bytes.Clone(good[:1+hlen]), 0x00),
		"bad section CID":       append(bytes.Clone(good[:1+hlen]), 0x03, 0x05, 0x71, 0x12),
	}
	v2 := enc(nil).mapn(2).text("roots").arrn(0).text("version").int(2)
	cases["version 2"] = append([]byte{byte(len(v2))}, v2...)
	for name, b := range cases {
		if _, err := dagcbor.ParseCAR(b); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	c, err := dagcbor.ParseCAR(tampered)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Verify(); err == nil {
		t.Error("tampered block verified")
	}
}
