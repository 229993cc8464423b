package format

import (
	"strings"
	"unsafe"

	"github.com/atkafka/atkafka/transform/dagcbor"
)

// AppendString appends s as a JSON string. Invalid UTF-8 is replaced by U+FFFD so the output is always valid
// JSON; sources validate text, so this only guards against a hostile relay.
func AppendString(dst []byte, s string) []byte {
	// A read-only view of the string's bytes: the escaper never writes to its input, and this runs several times
	// per record, where a copy would allocate.
	b := unsafe.Slice(unsafe.StringData(s), len(s))
	if out, ok := dagcbor.AppendJSONString(dst, b); ok {
		return out
	}
	out, _ := dagcbor.AppendJSONString(dst, []byte(strings.ToValidUTF8(s, "\uFFFD")))
	return out
}

// appendStringBody appends s escaped for use inside a JSON string, without the quotes, for values such as an
// at:// URI assembled from several parts.
func appendStringBody(dst []byte, s string) []byte {
	start := len(dst)
	dst = AppendString(dst, s)
	n := copy(dst[start:], dst[start+1:len(dst)-1])
	return dst[:start+n]
}
