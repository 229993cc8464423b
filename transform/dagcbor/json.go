package dagcbor

import (
	"encoding/base64"
	"encoding/binary"
	"strconv"
	"unicode/utf8"

	"github.com/ipfs/go-cid"
)

// Limits of the atproto data model, as indigo's atdata enforces them.
const (
	// MaxRecordSize is the largest DAG-CBOR value AppendJSON accepts (atdata.MAX_CBOR_RECORD_SIZE).
	MaxRecordSize = 1 << 20
	// MaxContainerLen is the most entries an array or map may have (atdata.MAX_CBOR_CONTAINER_LEN).
	MaxContainerLen = 128 * 1024
	// MaxKeyLen is the longest map key, in bytes (atdata.MAX_OBJECT_KEY_LEN).
	MaxKeyLen = 8192
)

// AppendJSON transcodes exactly one DAG-CBOR value in data to the atproto JSON data model and appends it to
// dst. Links become {"$link":"<cid>"}, byte strings {"$bytes":"<unpadded standard base64>"}; blobs need no
// special case since their CBOR form already maps onto {"$type":"blob","ref":{"$link":...},...}. Map keys keep
// their input order. On error dst is returned truncated to its original length, with an [*Error].
//
// Accepts and rejects what atdata.UnmarshalCBOR followed by json.Marshal does, including its rules for
// "$type", "$link", "$bytes", blob and legacy blob maps, its duplicate-key rejection and its size limits,
// with these deliberate differences (atdata's behaviour in parentheses):
//   - floats are rejected (integral floats become integers): atproto data has no floats;
//   - undefined is rejected (becomes null) and so are indefinite lengths (accepted): DAG-CBOR forbids both;
//   - an unsigned integer above the int64 range is rejected (wraps around to a negative number);
//   - invalid UTF-8 is rejected (json.Marshal replaces it with U+FFFD, changing the record);
//   - nesting is limited to [MaxDepth] levels (unlimited);
//   - a blob with a negative size is rejected (re-rendered as a legacy blob), and so is a legacy blob whose
//     "cid" is a byte string (accepted as a binary CID);
//   - any value is accepted at the top level (a map is required), so callers that need a record check that
//     data starts with a map;
//   - "<", ">" and "&" are not HTML-escaped, which changes bytes, not the JSON value.
//
// Besides growing dst it allocates only for the rare maps that need atdata's re-rendering ("$link" or
// "$bytes" keys, legacy blobs) and for maps whose keys are not in canonical DAG-CBOR order.
func AppendJSON(dst, data []byte) ([]byte, error) {
	start := len(dst)
	if len(data) > MaxRecordSize {
		return dst, &Error{Offset: 0, Reason: "value larger than " + strconv.Itoa(MaxRecordSize) + " bytes"}
	}
	t := transcoder{Decoder: NewDecoder(data)}
	dst, err := t.value(dst, 0)
	if err == nil && t.off != len(data) {
		err = t.errorf(t.off, "%d trailing bytes after value", len(data)-t.off)
	}
	if err != nil {
		return dst[:start], err
	}
	return dst, nil
}

// transcoder walks one value, writing JSON as it reads CBOR.
type transcoder struct {
	Decoder
	// linkMap is set by object when the map it just rendered was a valid {"$link": "..."} map, which atdata
	// accepts as a blob's ref.
	linkMap bool
}

func (t *transcoder) value(dst []byte, depth int) ([]byte, error) {
	if t.off >= len(t.data) {
		return dst, t.errorf(t.off, "unexpected end of input")
	}
	switch t.data[t.off] >> 5 {
	case majUint, majNegInt:
		v, err := t.Int()
		if err != nil {
			return dst, err
		}
		return strconv.AppendInt(dst, v, 10), nil
	case majText:
		off := t.off
		s, err := t.Text()
		if err != nil {
			return dst, err
		}
		return t.appendText(dst, s, off)
	case majBytes:
		b, err := t.Bytes()
		if err != nil {
			return dst, err
		}
		dst = append(dst, `{"$bytes":"`...)
		dst = base64.RawStdEncoding.AppendEncode(dst, b)
		return append(dst, `"}`...), nil
	case majTag:
		l, err := t.Link()
		if err != nil {
			return dst, err
		}
		dst = append(dst, `{"$link":"`...)
		dst = l.AppendString(dst)
		return append(dst, `"}`...), nil
	case majArray:
		return t.array(dst, depth)
	case majMap:
		return t.object(dst, depth)
	}
	switch t.data[t.off] {
	case 0xf4:
		t.off++
		return append(dst, "false"...), nil
	case 0xf5:
		t.off++
		return append(dst, "true"...), nil
	case 0xf6:
		t.off++
		return append(dst, "null"...), nil
	}
	_, _, err := t.head() // names the offending simple value or float
	if err == nil {
		err = t.errorf(t.off, "unexpected simple value")
	}
	return dst, err
}

func (t *transcoder) array(dst []byte, depth int) ([]byte, error) {
	start := t.off
	n, err := t.ArrayHeader()
	if err != nil {
		return dst, err
	}
	if depth >= MaxDepth {
		return dst, t.errorf(start, "nesting deeper than %d", MaxDepth)
	}
	if n > MaxContainerLen {
		return dst, t.errorf(start, "array of %d items exceeds %d", n, MaxContainerLen)
	}
	dst = append(dst, '[')
	for i := range n {
		if i > 0 {
			dst = append(dst, ',')
		}
		if dst, err = t.value(dst, depth+1); err != nil {
			return dst, err
		}
	}
	return append(dst, ']'), nil
}

// Keys with a meaning in the atproto data model, tracked per map.
const (
	seenType = 1 << iota
	seenLink
	seenBytes
	seenRef
	seenSize
	seenMime
	seenCID
)

// specials records what a map's special keys held, to apply atdata's rules once the map is complete.
type specials struct {
	seen                   uint8
	typ, link, bytes, mime []byte // text values (nil when the value was not text)
	cidText                []byte // legacy blob "cid" as text
	cidLink                Link   // legacy blob "cid" as a link
	refOK, sizeOK, sizeNeg bool
}

func (t *transcoder) object(dst []byte, depth int) ([]byte, error) {
	start := t.off
	n, err := t.MapHeader()
	if err != nil {
		return dst, err
	}
	if depth >= MaxDepth {
		return dst, t.errorf(start, "nesting deeper than %d", MaxDepth)
	}
	if n > MaxContainerLen {
		return dst, t.errorf(start, "map of %d entries exceeds %d", n, MaxContainerLen)
	}
	outStart := len(dst)
	dst = append(dst, '{')
	keysOff := t.off
	var prev []byte
	var seenKeys map[string]struct{} // only for maps not in canonical key order
	var sp specials
	for i := range n {
		koff := t.off
		if t.off < len(t.data) && t.data[t.off]>>5 != majText {
			return dst, t.errorf(koff, "map key is not a text string")
		}
		key, err := t.Text()
		if err != nil {
			return dst, err
		}
		if len(key) > MaxKeyLen {
			return dst, t.errorf(koff, "map key of %d bytes exceeds %d", len(key), MaxKeyLen)
		}
		if i > 0 {
			if seenKeys == nil {
				switch c := compareKeys(prev, key); {
				case c == 0:
					return dst, t.errorf(koff, "duplicate map key %q", key)
				case c > 0:
					if seenKeys, err = t.keySet(keysOff, i); err != nil {
						return dst, err
					}
				}
			}
			if seenKeys != nil {
				if _, dup := seenKeys[string(key)]; dup {
					return dst, t.errorf(koff, "duplicate map key %q", key)
				}
				seenKeys[string(key)] = struct{}{}
			}
			dst = append(dst, ',')
		}
		prev = key
		if dst, err = t.appendText(dst, key, koff); err != nil {
			return dst, err
		}
		dst = append(dst, ':')

		voff := t.off
		kind := t.Peek()
		if dst, err = t.value(dst, depth+1); err != nil {
			return dst, err
		}
		switch string(key) {
		case "$type":
			sp.seen |= seenType
			sp.typ = t.textAt(kind, voff)
		case "$link":
			sp.seen |= seenLink
			sp.link = t.textAt(kind, voff)
		case "$bytes":
			sp.seen |= seenBytes
			sp.bytes = t.textAt(kind, voff)
		case "ref":
			sp.seen |= seenRef
			sp.refOK = kind == KindLink || (kind == KindMap && t.linkMap)
		case "size":
			sp.seen |= seenSize
			sp.sizeOK = kind == KindInt
			sp.sizeNeg = kind == KindInt && t.data[voff]>>5 == majNegInt
		case "mimeType":
			sp.seen |= seenMime
			sp.mime = t.textAt(kind, voff)
		case "cid":
			sp.seen |= seenCID
			sp.cidText = t.textAt(kind, voff)
			if kind == KindLink {
				sub := t.Decoder
				sub.off = voff
				sp.cidLink, _ = sub.Link()
			}
		}
	}
	dst = append(dst, '}')
	t.linkMap = false
	if sp.seen != 0 {
		return t.applySpecials(dst, outStart, start, n, &sp)
	}
	return dst, nil
}

// textAt re-reads the text value rendered at off, or returns nil if the value was not text.
func (t *transcoder) textAt(kind Kind, off int) []byte {
	if kind != KindText {
		return nil
	}
	sub := t.Decoder
	sub.off = off
	s, _ := sub.Text()
	if s == nil {
		s = []byte{}
	}
	return s
}

// applySpecials enforces atdata's parseMap rules on a completed map and, in the rare cases where atdata
// re-renders a value (string links, "$bytes" maps, legacy blobs), rewrites the map at dst[outStart:] the same
// way.
func (t *transcoder) applySpecials(dst []byte, outStart, off, n int, sp *specials) ([]byte, error) {
	switch {
	case sp.seen&seenLink != 0:
		if n != 1 || sp.link == nil {
			return dst, t.errorf(off, "$link objects must have a single string field")
		}
		c, err := cid.Parse(string(sp.link))
		if err != nil || !c.Defined() {
			return dst, t.errorf(off, "invalid $link CID %q", sp.link)
		}
		if s := c.String(); s != string(sp.link) {
			dst = append(append(dst[:outStart], `{"$link":"`...), s...)
			dst = append(dst, `"}`...)
		}
		t.linkMap = true
		return dst, nil
	case sp.seen&seenBytes != 0:
		if n != 1 || sp.bytes == nil {
			return dst, t.errorf(off, "$bytes objects must have a single string field")
		}
		b, err := base64.RawStdEncoding.DecodeString(string(sp.bytes))
		if err != nil {
			return dst, t.errorf(off, "invalid $bytes base64: %v", err)
		}
		dst = append(dst[:outStart], `{"$bytes":"`...)
		dst = base64.RawStdEncoding.AppendEncode(dst, b)
		return append(dst, `"}`...), nil
	case sp.seen&seenType != 0:
		if len(sp.typ) == 0 {
			return dst, t.errorf(off, "$type field must contain a non-empty string")
		}
		if string(sp.typ) != "blob" {
			return dst, nil
		}
		switch {
		case n != 4 || sp.seen&(seenRef|seenSize|seenMime) != seenRef|seenSize|seenMime:
			return dst, t.errorf(off, "blob must have exactly $type, ref, mimeType and size")
		case !sp.refOK:
			return dst, t.errorf(off, "blob ref is not a CID link")
		case !sp.sizeOK || sp.sizeNeg:
			return dst, t.errorf(off, "blob size is not a non-negative integer")
		case sp.mime == nil:
			return dst, t.errorf(off, "blob mimeType is not a string")
		}
		return dst, nil
	case n == 2 && sp.seen&(seenCID|seenMime) == seenCID|seenMime:
		// atdata reads {cid, mimeType} as a legacy blob and prints it back with a normalised CID string.
		if sp.mime == nil {
			return dst, t.errorf(off, "legacy blob mimeType is not a string")
		}
		dst = append(dst[:outStart], `{"cid":"`...)
		switch {
		case sp.cidLink != nil:
			dst = sp.cidLink.AppendString(dst)
		case sp.cidText != nil:
			c, err := cid.Parse(string(sp.cidText))
			if err != nil {
				return dst[:outStart], t.errorf(off, "invalid CID in legacy blob: %q", sp.cidText)
			}
			dst = append(dst, c.String()...)
		default:
			return dst[:outStart], t.errorf(off, "legacy blob cid is not a string or link")
		}
		dst = append(dst, `","mimeType":`...)
		dst, err := t.appendText(dst, sp.mime, off)
		return append(dst, '}'), err
	}
	return dst, nil
}

// keySet collects the first n keys of the map whose entries start at off. It is the fallback for maps not
// in canonical order, where duplicates can no longer be caught by comparing neighbours.
func (t *transcoder) keySet(off, n int) (map[string]struct{}, error) {
	sub := t.Decoder
	sub.off = off
	set := make(map[string]struct{}, n+1)
	for range n {
		k, err := sub.Text()
		if err != nil {
			return nil, err
		}
		set[string(k)] = struct{}{}
		if err := sub.Skip(); err != nil {
			return nil, err
		}
	}
	return set, nil
}

// compareKeys orders map keys as DAG-CBOR requires: shorter first, then bytewise.
func compareKeys(a, b []byte) int {
	if len(a) != len(b) {
		if len(a) < len(b) {
			return -1
		}
		return 1
	}
	for i := range a {
		if a[i] != b[i] {
			if a[i] < b[i] {
				return -1
			}
			return 1
		}
	}
	return 0
}

// plain marks the bytes that can be copied into a JSON string unchanged.
var plain = func() (p [256]bool) {
	for c := 0x20; c < 0x80; c++ {
		p[c] = c != '"' && c != '\\'
	}
	return p
}()

const hexDigits = "0123456789abcdef"

// plainWord reports whether none of the eight bytes in x needs escaping or UTF-8 decoding, using the
// classic "has byte less than / equal to" bit tricks, which are exact as booleans.
func plainWord(x uint64) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	hasZero := func(v uint64) uint64 { return (v - ones) & ^v & highs }
	control := (x - ones*0x20) & ^x & highs
	return (x|control|hasZero(x^(ones*'"'))|hasZero(x^(ones*'\\')))&highs == 0
}

// appendText appends s as a JSON string, requiring valid UTF-8 (off locates s for the error).
func (t *transcoder) appendText(dst, s []byte, off int) ([]byte, error) {
	out, ok := AppendJSONString(dst, s)
	if !ok {
		return dst, t.errorf(off, "invalid UTF-8 in text string")
	}
	return out, nil
}

// AppendJSONString appends s as a quoted JSON string. It reports ok=false, with dst unchanged, when s is not
// valid UTF-8: the caller decides whether that is an error (a record) or needs repair (a log-derived string). It
// is the one JSON string escaper in atkafka, shared by the record transcoder and the event formatter.
func AppendJSONString(dst, s []byte) (out []byte, ok bool) {
	start := len(dst)
	dst = append(dst, '"')
	last := 0
	for i := 0; i < len(s); {
		// Skip eight plain ASCII bytes at a time: most text in records is.
		for i+8 <= len(s) && plainWord(binary.LittleEndian.Uint64(s[i:])) {
			i += 8
		}
		if i >= len(s) {
			break
		}
		c := s[i]
		if plain[c] {
			i++
			continue
		}
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRune(s[i:])
			if r == utf8.RuneError && size == 1 {
				return dst[:start], false
			}
			i += size
			continue
		}
		dst = append(dst, s[last:i]...)
		switch c {
		case '"', '\\':
			dst = append(dst, '\\', c)
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		case '\t':
			dst = append(dst, '\\', 't')
		case '\b':
			dst = append(dst, '\\', 'b')
		case '\f':
			dst = append(dst, '\\', 'f')
		default:
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		i++
		last = i
	}
	dst = append(dst, s[last:]...)
	return append(dst, '"'), true
}
