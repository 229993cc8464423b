package relaytest

import (
	"errors"
	"fmt"
	"math"

	"github.com/atkafka/atkafka/transform/dagcbor"
)

// Raw is CBOR that SetField inserts verbatim: the way to put malformed items (a byte string claiming a huge
// length, a wrong major type) into an otherwise valid frame.
type Raw []byte

// KV is one entry of a Map, the ordered map Encode writes.
type KV struct {
	Key   string
	Value any
}

// Map is a CBOR map with text keys, written in the given order.
type Map []KV

// Encode appends the CBOR encoding of v to dst. It knows nil, bool, int, int64, string, []byte, Raw, Map and
// []any: enough to build frames and to break them.
func Encode(dst []byte, v any) []byte {
	switch v := v.(type) {
	case nil:
		return append(dst, 0xf6)
	case bool:
		if v {
			return append(dst, 0xf5)
		}
		return append(dst, 0xf4)
	case int:
		return appendInt(dst, int64(v))
	case int64:
		return appendInt(dst, v)
	case string:
		return append(appendHead(dst, 3, uint64(len(v))), v...)
	case []byte:
		return append(appendHead(dst, 2, uint64(len(v))), v...)
	case Raw:
		return append(dst, v...)
	case Map:
		dst = appendHead(dst, 5, uint64(len(v)))
		for _, kv := range v {
			dst = Encode(Encode(dst, kv.Key), kv.Value)
		}
		return dst
	case []any:
		dst = appendHead(dst, 4, uint64(len(v)))
		for _, e := range v {
			dst = Encode(dst, e)
		}
		return dst
	}
	panic(fmt.Sprintf("relaytest: cannot encode %T", v))
}

func appendInt(dst []byte, v int64) []byte {
	if v < 0 {
		return appendHead(dst, 1, uint64(-1-v))
	}
	return appendHead(dst, 0, uint64(v))
}

// appendHead writes a CBOR head in its shortest form, as DAG-CBOR requires.
func appendHead(dst []byte, major byte, n uint64) []byte {
	m := major << 5
	switch {
	case n < 24:
		return append(dst, m|byte(n))
	case n <= math.MaxUint8:
		return append(dst, m|24, byte(n))
	case n <= math.MaxUint16:
		return append(dst, m|25, byte(n>>8), byte(n))
	case n <= math.MaxUint32:
		return append(dst, m|26, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	return append(dst, m|27, byte(n>>56), byte(n>>48), byte(n>>40), byte(n>>32), byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
}

// Message encodes a firehose message: the header {t, op} followed by body.
func Message(op int, typ string, body Map) []byte {
	header := Map{{"op", op}}
	if typ != "" {
		header = Map{{"t", typ}, {"op", op}}
	}
	return Encode(Encode(nil, header), body)
}

// ErrorFrame encodes an error frame such as FutureCursor or ConsumerTooSlow.
func ErrorFrame(name, message string) []byte {
	return Message(-1, "", Map{{"error", name}, {"message", message}})
}

// InfoFrame encodes an #info frame such as OutdatedCursor.
func InfoFrame(name, message string) []byte {
	return Message(1, "#info", Map{{"name", name}, {"message", message}})
}

// errNoField is returned by SetField when the body has no such key.
var errNoField = errors.New("relaytest: no such field in the frame body")

// FieldSpan returns where the value of key sits in the body of msg, as offsets into msg.
func FieldSpan(msg []byte, key string) (start, end int, err error) {
	d := dagcbor.NewDecoder(msg)
	if err := d.Skip(); err != nil {
		return 0, 0, fmt.Errorf("relaytest: header: %w", err)
	}
	n, err := d.MapHeader()
	if err != nil {
		return 0, 0, fmt.Errorf("relaytest: body: %w", err)
	}
	for range n {
		k, err := d.Text()
		if err != nil {
			return 0, 0, fmt.Errorf("relaytest: body key: %w", err)
		}
		start := d.Offset()
		if err := d.Skip(); err != nil {
			return 0, 0, fmt.Errorf("relaytest: body %q: %w", k, err)
		}
		if string(k) == key {
			return start, d.Offset(), nil
		}
	}
	return 0, 0, errNoField
}

// SetField returns a copy of msg whose body field key holds value (encoded with Encode) instead.
func SetField(msg []byte, key string, value any) ([]byte, error) {
	start, end, err := FieldSpan(msg, key)
	if err != nil {
		return nil, err
	}
	return splice(nil, msg, start, end, value), nil
}

// splice appends msg to dst with msg[start:end] replaced by the encoding of value.
func splice(dst, msg []byte, start, end int, value any) []byte {
	dst = append(dst, msg[:start]...)
	dst = Encode(dst, value)
	return append(dst, msg[end:]...)
}

// Seq returns the seq of a frame, or ok=false when it has none (#info, error frames) or cannot be read.
func Seq(msg []byte) (seq int64, ok bool) {
	start, end, err := FieldSpan(msg, "seq")
	if err != nil {
		return 0, false
	}
	d := dagcbor.NewDecoder(msg[start:end])
	seq, err = d.Int()
	return seq, err == nil
}
