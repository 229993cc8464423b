package dagcbor

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"iter"
	"slices"

	"github.com/ipfs/go-cid"
)

// linearLookupMax is the block count up to which lookups scan instead of binary searching a sorted index:
// firehose diffs hold a handful of blocks, where a scan beats sorting.
const linearLookupMax = 16

// CAR is a read-only index over a CARv1 byte slice. Roots and blocks alias the slice; nothing is copied.
//
// Block hashes are not verified while parsing: a hash check alone proves nothing about who wrote the data
// (that needs the commit signature and the account's DID document, which the relay checks under Sync 1.1),
// and hashing every block of every frame would cost more than transcoding its records. [CAR.Verify] is there
// for callers who want to catch corruption anyway.
type CAR struct {
	roots  []Link
	blocks []carBlock
	sorted bool
}

type carBlock struct {
	cid  Link
	data []byte
}

// ParseCAR indexes the CARv1 in b. Use [CAR.Parse] to reuse a CAR's memory across calls.
func ParseCAR(b []byte) (*CAR, error) {
	c := new(CAR)
	if err := c.Parse(b); err != nil {
		return nil, err
	}
	return c, nil
}

// Parse replaces c's contents with an index of the CARv1 in b, reusing c's memory. Every varint, length and
// CID is bounds-checked against b; on error c is empty.
func (c *CAR) Parse(b []byte) error {
	c.roots, c.blocks, c.sorted = c.roots[:0], c.blocks[:0], false
	if err := c.parse(b); err != nil {
		c.roots, c.blocks = c.roots[:0], c.blocks[:0]
		return err
	}
	if len(c.blocks) > linearLookupMax {
		slices.SortFunc(c.blocks, func(a, b carBlock) int { return compareBytes(a.cid, b.cid) })
		c.sorted = true
	}
	return nil
}

func (c *CAR) parse(b []byte) error {
	hlen, n, err := uvarint(b)
	if err != nil {
		return carErrorf(0, "header length: %v", err)
	}
	if hlen == 0 || hlen > uint64(len(b)-n) {
		return carErrorf(0, "header length %d exceeds input", hlen)
	}
	if err := c.header(b[n : n+int(hlen)]); err != nil {
		return carErrorf(n, "header: %v", err)
	}
	off := n + int(hlen)
	for off < len(b) {
		slen, n, err := uvarint(b[off:])
		if err != nil {
			return carErrorf(off, "section length: %v", err)
		}
		if slen == 0 || slen > uint64(len(b)-off-n) {
			return carErrorf(off, "section length %d exceeds input", slen)
		}
		section := b[off+n : off+n+int(slen)]
		clen, err := cidLen(section)
		if err != nil {
			return carErrorf(off+n, "block CID: %v", err)
		}
		c.blocks = append(c.blocks, carBlock{cid: Link(section[:clen]), data: section[clen:]})
		off += n + int(slen)
	}
	return nil
}

// header reads {roots: [links], version: 1}.
func (c *CAR) header(b []byte) error {
	d := NewDecoder(b)
	n, err := d.MapHeader()
	if err != nil {
		return err
	}
	version := int64(-1)
	for range n {
		k, err := d.Text()
		if err != nil {
			return err
		}
		switch string(k) {
		case "version":
			if version, err = d.Int(); err != nil {
				return err
			}
		case "roots":
			m, err := d.ArrayHeader()
			if err != nil {
				return err
			}
			for range m {
				l, err := d.Link()
				if err != nil {
					return err
				}
				c.roots = append(c.roots, l)
			}
		default:
			if err := d.Skip(); err != nil {
				return err
			}
		}
	}
	if len(d.Remaining()) != 0 {
		return errors.New("trailing bytes")
	}
	if version != 1 {
		return fmt.Errorf("unsupported CAR version %d", version)
	}
	return nil
}

func carErrorf(off int, format string, args ...any) error {
	return &Error{Offset: off, Reason: "CAR " + fmt.Sprintf(format, args...)}
}

// Roots returns the CIDs listed in the CAR header (for a firehose commit, the first is the commit block).
func (c *CAR) Roots() []Link { return c.roots }

// Len returns the number of blocks.
func (c *CAR) Len() int { return len(c.blocks) }

// All yields every block's CID and data, in no particular order.
func (c *CAR) All() iter.Seq2[Link, []byte] {
	return func(yield func(Link, []byte) bool) {
		for _, b := range c.blocks {
			if !yield(b.cid, b.data) {
				return
			}
		}
	}
}

// Block returns the data of the block with CID id.
func (c *CAR) Block(id cid.Cid) ([]byte, bool) { return c.data(index(c, id.KeyString())) }

// BlockByLink returns the data of the block whose binary CID is l, as read by [Decoder.Link].
func (c *CAR) BlockByLink(l Link) ([]byte, bool) { return c.data(index(c, l)) }

// IndexByLink returns the index, for [CAR.At], of the block whose binary CID is l: a block found once can be
// kept as 4 bytes rather than its CID and data.
func (c *CAR) IndexByLink(l Link) (int, bool) {
	i := index(c, l)
	return i, i >= 0
}

// At returns the CID and data of block i, 0 ≤ i < [CAR.Len], as numbered by [CAR.IndexByLink].
func (c *CAR) At(i int) (Link, []byte) { return c.blocks[i].cid, c.blocks[i].data }

func (c *CAR) data(i int) ([]byte, bool) {
	if i < 0 {
		return nil, false
	}
	return c.blocks[i].data, true
}

// index returns the index of the block with CID k, or -1. It is generic over the key so that cid.Cid (a string)
// and Link ([]byte) are both found without converting, which would copy the key.
func index[K ~string | ~[]byte](c *CAR, k K) int {
	if !c.sorted {
		for i := range c.blocks {
			if b := &c.blocks[i]; len(b.cid) == len(k) && compareBytes(b.cid, k) == 0 {
				return i
			}
		}
		return -1
	}
	i, found := slices.BinarySearchFunc(c.blocks, k, func(b carBlock, k K) int { return compareBytes(b.cid, k) })
	if !found {
		return -1
	}
	return i
}

// compareBytes orders a and b bytewise, shorter first on a common prefix.
func compareBytes[K ~string | ~[]byte](a []byte, b K) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			if a[i] < b[i] {
				return -1
			}
			return 1
		}
	}
	return len(a) - len(b)
}

// Verify checks that every block hashes to its CID. Only sha2-256, the hash atproto repositories use, is
// supported; other multihash functions are reported as errors.
func (c *CAR) Verify() error {
	for _, b := range c.blocks {
		digest, err := sha256Digest(b.cid)
		if err != nil {
			return fmt.Errorf("dagcbor: block %s: %w", b.cid, err)
		}
		if sum := sha256.Sum256(b.data); string(sum[:]) != string(digest) {
			return fmt.Errorf("dagcbor: block %s: hash mismatch", b.cid)
		}
	}
	return nil
}

// sha256Digest returns the digest of a validated CID whose multihash is sha2-256.
func sha256Digest(l Link) ([]byte, error) {
	mh := []byte(l)
	if !isCIDv0(l) {
		_, n, _ := uvarint(mh) // version
		mh = mh[n:]
		_, n, _ = uvarint(mh) // codec
		mh = mh[n:]
	}
	if len(mh) != 34 || mh[0] != 0x12 || mh[1] != 32 {
		return nil, errors.New("multihash is not sha2-256")
	}
	return mh[2:], nil
}
