// Package dagcbor reads DAG-CBOR as used by atproto without building Go maps or interfaces: a streaming item
// [Decoder], a direct DAG-CBOR → atproto JSON transcoder ([AppendJSON]) and a zero-copy CARv1 block index
// ([CAR]). It exists because the relay firehose is the hot path of atkafka: decoding every record into
// map[string]any and marshalling it again (indigo's atdata) costs several times more than transcoding.
//
// Every byte slice handed out by this package aliases the input buffer: it stays valid, and must not be
// modified, for as long as the caller keeps that buffer unchanged.
package dagcbor

import (
	"encoding/binary"
	"fmt"
	"math"
)

// MaxDepth bounds the nesting of arrays and maps. The atproto data model suggests 32 levels (not enforced by
// indigo); the looser bound keeps odd but real records while making recursion on forged input cheap.
const MaxDepth = 64

// CBOR major types.
const (
	majUint   = 0
	majNegInt = 1
	majBytes  = 2
	majText   = 3
	majArray  = 4
	majMap    = 5
	majTag    = 6
	majSimple = 7
)

// linkTag is the CBOR tag DAG-CBOR uses for CIDs.
const linkTag = 42

// Kind is the type of the next data model item, as reported by [Decoder.Peek].
type Kind uint8

// The kinds of the atproto data model that DAG-CBOR can carry.
const (
	KindInvalid Kind = iota // truncated input or a type atproto does not allow (float, undefined, other tags)
	KindInt
	KindBytes
	KindText
	KindArray
	KindMap
	KindLink
	KindBool
	KindNull
)

// Error reports malformed or non-atproto DAG-CBOR, with the input offset where decoding stopped.
type Error struct {
	Offset int    // byte offset into the value being decoded
	Reason string // what was wrong, e.g. "float not allowed in atproto data"
}

func (e *Error) Error() string {
	return fmt.Sprintf("dagcbor: %s at offset %d", e.Reason, e.Offset)
}

// Decoder reads DAG-CBOR items one at a time from a byte slice. The zero value reads nothing; use
// [NewDecoder] or [Decoder.Reset]. A Decoder is a small value: keep it on the stack.
type Decoder struct {
	data []byte
	off  int
}

// NewDecoder returns a Decoder reading b from its start.
func NewDecoder(b []byte) Decoder { return Decoder{data: b} }

// Reset makes d read b from its start.
func (d *Decoder) Reset(b []byte) { d.data, d.off = b, 0 }

// Offset returns how many bytes have been consumed.
func (d *Decoder) Offset() int { return d.off }

// Since returns the input consumed from offset start (an earlier Offset) to the current position: the
// encoding of the items read in between, aliasing the input.
func (d *Decoder) Since(start int) []byte { return d.data[start:d.off] }

// Remaining returns the bytes not yet consumed (aliasing the input).
func (d *Decoder) Remaining() []byte { return d.data[d.off:] }

func (d *Decoder) errorf(off int, format string, args ...any) error {
	return &Error{Offset: off, Reason: fmt.Sprintf(format, args...)}
}

// head reads an item head. Indefinite lengths, reserved additional-information values and, for major type
// 7, anything but false/true/null are rejected here so that callers only see data model items.
func (d *Decoder) head() (major byte, arg uint64, err error) {
	if d.off >= len(d.data) {
		return 0, 0, d.errorf(d.off, "unexpected end of input")
	}
	start := d.off
	b := d.data[d.off]
	major, info := b>>5, b&0x1f
	d.off++
	switch {
	case info < 24:
		arg = uint64(info)
	case info <= 27:
		n := 1 << (info - 24)
		if len(d.data)-d.off < n {
			d.off = start
			return 0, 0, d.errorf(start, "truncated item head")
		}
		switch n {
		case 1:
			arg = uint64(d.data[d.off])
		case 2:
			arg = uint64(binary.BigEndian.Uint16(d.data[d.off:]))
		case 4:
			arg = uint64(binary.BigEndian.Uint32(d.data[d.off:]))
		default:
			arg = binary.BigEndian.Uint64(d.data[d.off:])
		}
		d.off += n
	case info == 31:
		d.off = start
		if major == majSimple {
			return 0, 0, d.errorf(start, "unexpected break code")
		}
		return 0, 0, d.errorf(start, "indefinite-length item not allowed in DAG-CBOR")
	default:
		d.off = start
		return 0, 0, d.errorf(start, "reserved additional information %d", info)
	}
	if major == majSimple {
		switch {
		case info >= 25 && info <= 27:
			d.off = start
			return 0, 0, d.errorf(start, "float not allowed in atproto data")
		case arg == 23:
			d.off = start
			return 0, 0, d.errorf(start, "undefined not allowed in atproto data")
		case arg < 20 || arg > 22 || info == 24:
			d.off = start
			return 0, 0, d.errorf(start, "simple value %d not allowed", arg)
		}
	}
	return major, arg, nil
}

// expect reads a head of the given major type.
func (d *Decoder) expect(major byte, what string) (uint64, error) {
	start := d.off
	m, arg, err := d.head()
	if err != nil {
		return 0, err
	}
	if m != major {
		d.off = start
		return 0, d.errorf(start, "expected %s, found %s", what, majorName(m))
	}
	return arg, nil
}

func majorName(m byte) string {
	switch m {
	case majUint, majNegInt:
		return "integer"
	case majBytes:
		return "byte string"
	case majText:
		return "text string"
	case majArray:
		return "array"
	case majMap:
		return "map"
	case majTag:
		return "tag"
	default:
		return "simple value"
	}
}

// span returns the next n payload bytes. The length is checked against the remaining input before anything
// is sliced, so a forged length costs nothing.
func (d *Decoder) span(start int, n uint64) ([]byte, error) {
	if rem := len(d.data) - d.off; n > uint64(rem) {
		d.off = start
		return nil, d.errorf(start, "length %d exceeds remaining input (%d bytes)", n, rem)
	}
	b := d.data[d.off : d.off+int(n)]
	d.off += int(n)
	return b, nil
}

// Peek reports the kind of the next item without consuming it.
func (d *Decoder) Peek() Kind {
	if d.off >= len(d.data) {
		return KindInvalid
	}
	b := d.data[d.off]
	switch b >> 5 {
	case majUint, majNegInt:
		return KindInt
	case majBytes:
		return KindBytes
	case majText:
		return KindText
	case majArray:
		return KindArray
	case majMap:
		return KindMap
	case majTag:
		sub := *d
		if _, tag, err := sub.head(); err == nil && tag == linkTag {
			return KindLink
		}
	case majSimple:
		switch b {
		case 0xf4, 0xf5:
			return KindBool
		case 0xf6:
			return KindNull
		}
	}
	return KindInvalid
}

// MapHeader reads a map head and returns its number of entries, bounded by the remaining input (each entry
// takes at least two bytes).
func (d *Decoder) MapHeader() (int, error) {
	start := d.off
	n, err := d.expect(majMap, "map")
	if err != nil {
		return 0, err
	}
	if n > uint64(len(d.data)-d.off)/2 {
		d.off = start
		return 0, d.errorf(start, "map of %d entries exceeds remaining input", n)
	}
	return int(n), nil
}

// ArrayHeader reads an array head and returns its length, bounded by the remaining input.
func (d *Decoder) ArrayHeader() (int, error) {
	start := d.off
	n, err := d.expect(majArray, "array")
	if err != nil {
		return 0, err
	}
	if n > uint64(len(d.data)-d.off) {
		d.off = start
		return 0, d.errorf(start, "array of %d items exceeds remaining input", n)
	}
	return int(n), nil
}

// Text reads a text string. Its UTF-8 is not validated here: [AppendJSON] validates what it renders, and
// callers of Text compare or copy bytes.
func (d *Decoder) Text() ([]byte, error) {
	start := d.off
	n, err := d.expect(majText, "text string")
	if err != nil {
		return nil, err
	}
	return d.span(start, n)
}

// Bytes reads a byte string.
func (d *Decoder) Bytes() ([]byte, error) {
	start := d.off
	n, err := d.expect(majBytes, "byte string")
	if err != nil {
		return nil, err
	}
	return d.span(start, n)
}

// Int reads an integer in the int64 range.
func (d *Decoder) Int() (int64, error) {
	start := d.off
	m, arg, err := d.head()
	if err != nil {
		return 0, err
	}
	switch m {
	case majUint:
		if arg > math.MaxInt64 {
			d.off = start
			return 0, d.errorf(start, "integer %d overflows int64", arg)
		}
		return int64(arg), nil
	case majNegInt:
		if arg > math.MaxInt64 {
			d.off = start
			return 0, d.errorf(start, "integer -1-%d overflows int64", arg)
		}
		return -1 - int64(arg), nil
	}
	d.off = start
	return 0, d.errorf(start, "expected integer, found %s", majorName(m))
}

// Bool reads true or false.
func (d *Decoder) Bool() (bool, error) {
	if d.off < len(d.data) {
		switch d.data[d.off] {
		case 0xf4:
			d.off++
			return false, nil
		case 0xf5:
			d.off++
			return true, nil
		}
	}
	return false, d.errorf(d.off, "expected boolean")
}

// Null consumes a null if one is next and reports whether it did.
func (d *Decoder) Null() bool {
	if d.off < len(d.data) && d.data[d.off] == 0xf6 {
		d.off++
		return true
	}
	return false
}

// Link reads a CID link (tag 42 over a byte string holding 0x00 then a binary CID) and checks the CID's
// structure the way go-cid's Cast does.
func (d *Decoder) Link() (Link, error) {
	start := d.off
	tag, err := d.expect(majTag, "CID link")
	if err != nil {
		return nil, err
	}
	if tag != linkTag {
		d.off = start
		return nil, d.errorf(start, "tag %d not allowed in atproto data", tag)
	}
	b, err := d.Bytes()
	if err != nil {
		return nil, err
	}
	if len(b) == 0 || b[0] != 0 {
		d.off = start
		return nil, d.errorf(start, "CID link must start with a 0x00 multibase prefix")
	}
	if n, err := cidLen(b[1:]); err != nil || n != len(b)-1 {
		d.off = start
		if err == nil {
			err = fmt.Errorf("trailing bytes")
		}
		return nil, d.errorf(start, "invalid CID in link: %v", err)
	}
	return Link(b[1:]), nil
}

// Skip consumes one complete item of any allowed kind, validating it like [AppendJSON] does for structure
// (but not UTF-8 or atproto-specific map rules). It is how readers ignore fields they do not know.
func (d *Decoder) Skip() error { return d.skip(0) }

func (d *Decoder) skip(depth int) error {
	switch d.Peek() {
	case KindLink:
		_, err := d.Link()
		return err
	case KindInt:
		_, err := d.Int()
		return err
	case KindBool, KindNull:
		d.off++
		return nil
	}
	start := d.off
	m, arg, err := d.head()
	if err != nil {
		return err
	}
	switch m {
	case majBytes, majText:
		_, err = d.span(start, arg)
		return err
	case majArray, majMap:
		if depth >= MaxDepth {
			d.off = start
			return d.errorf(start, "nesting deeper than %d", MaxDepth)
		}
		n := arg
		if m == majMap {
			if n > uint64(len(d.data)-d.off)/2 {
				d.off = start
				return d.errorf(start, "map of %d entries exceeds remaining input", n)
			}
			n *= 2
		}
		if n > uint64(len(d.data)-d.off) {
			d.off = start
			return d.errorf(start, "array of %d items exceeds remaining input", n)
		}
		for i := uint64(0); i < n; i++ {
			if m == majMap && i%2 == 0 && d.Peek() != KindText {
				return d.errorf(d.off, "map key is not a text string")
			}
			if err := d.skip(depth + 1); err != nil {
				return err
			}
		}
		return nil
	case majTag:
		d.off = start
		return d.errorf(start, "tag %d not allowed in atproto data", arg)
	}
	d.off = start
	return d.errorf(start, "unexpected item")
}
