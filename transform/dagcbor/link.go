package dagcbor

import (
	"encoding/base32"
	"errors"

	"github.com/ipfs/go-cid"
)

// Link is a binary CID (without the 0x00 multibase prefix DAG-CBOR puts in front of it), aliasing the input
// it was read from. Links returned by this package have been checked to be well-formed CIDs.
type Link []byte

// base32Lower is the multibase "b" alphabet go-cid uses to print CIDv1.
var base32Lower = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// AppendString appends the CID's canonical string form to dst: base58btc for CIDv0 ("Qm..."), multibase
// base32 ("b...") for CIDv1, exactly as go-cid's Cid.String prints them.
func (l Link) AppendString(dst []byte) []byte {
	if isCIDv0(l) && len(l) == 34 {
		return appendBase58(dst, l)
	}
	dst = append(dst, 'b')
	return base32Lower.AppendEncode(dst, l)
}

// String returns the CID's canonical string form (see [Link.AppendString]).
func (l Link) String() string { return string(l.AppendString(nil)) }

// CID converts l to a go-cid Cid, copying it.
func (l Link) CID() (cid.Cid, error) { return cid.Cast(l) }

// isCIDv0 reports whether b is laid out as a CIDv0 (a bare sha2-256 multihash), as go-cid decides it.
func isCIDv0(b []byte) bool { return len(b) > 2 && b[0] == 0x12 && b[1] == 32 }

var (
	errVarintOverflow   = errors.New("varint overflows 63 bits")
	errVarintNotMinimal = errors.New("varint not minimally encoded")
	errVarintTruncated  = errors.New("truncated varint")
)

// uvarint decodes an unsigned LEB128 varint the way go-varint does for multiformats: at most 9 bytes and
// minimally encoded.
func uvarint(b []byte) (uint64, int, error) {
	var x uint64
	var s uint
	for i := 0; i < len(b); i++ {
		if i == 9 {
			return 0, 0, errVarintOverflow
		}
		c := b[i]
		if c < 0x80 {
			if c == 0 && i > 0 {
				return 0, 0, errVarintNotMinimal
			}
			return x | uint64(c)<<s, i + 1, nil
		}
		x |= uint64(c&0x7f) << s
		s += 7
	}
	return 0, 0, errVarintTruncated
}

// cidLen returns the length of the binary CID at the start of b, validating it as go-cid's CidFromBytes
// does: a 34-byte sha2-256 CIDv0, or version 1, a codec and a complete multihash.
func cidLen(b []byte) (int, error) {
	if isCIDv0(b) {
		if len(b) < 34 {
			return 0, errors.New("not enough bytes for cid v0")
		}
		return 34, nil
	}
	vers, n, err := uvarint(b)
	if err != nil {
		return 0, err
	}
	if vers != 1 {
		return 0, errors.New("CID version is not 1")
	}
	_, cn, err := uvarint(b[n:])
	if err != nil {
		return 0, err
	}
	n += cn
	if len(b)-n < 2 {
		return 0, errors.New("multihash too short")
	}
	_, hn, err := uvarint(b[n:])
	if err != nil {
		return 0, err
	}
	n += hn
	size, sn, err := uvarint(b[n:])
	if err != nil {
		return 0, err
	}
	n += sn
	if size > uint64(len(b)-n) {
		return 0, errors.New("multihash digest longer than input")
	}
	return n + int(size), nil
}

const base58Alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"

// appendBase58 encodes a CIDv0 (always 34 bytes) in base58btc without allocating: CIDv0 links are rare
// enough that the quadratic big-number division is irrelevant, but they must not fall off the fast path.
func appendBase58(dst, b []byte) []byte {
	var buf [48]byte // ceil(34 * log(256) / log(58)) = 47
	zeros := 0
	for zeros < len(b) && b[zeros] == 0 {
		zeros++
	}
	size := 0 // number of base58 digits in use, least significant at buf[len(buf)-1]
	for _, c := range b[zeros:] {
		carry := int(c)
		for i := 0; i < size || carry != 0; i++ {
			idx := len(buf) - 1 - i
			if i >= size {
				buf[idx] = 0
			}
			carry += 256 * int(buf[idx])
			buf[idx] = byte(carry % 58)
			carry /= 58
			if i >= size {
				size = i + 1
			}
		}
	}
	for range zeros {
		dst = append(dst, '1')
	}
	for _, digit := range buf[len(buf)-size:] {
		dst = append(dst, base58Alphabet[digit])
	}
	return dst
}
