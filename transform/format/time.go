package format

import (
	"bytes"
	"encoding/json"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"
)

// TimeFormat is RFC 3339 in UTC with milliseconds, the atproto date-time style of the timestamp field.
const TimeFormat = "2006-01-02T15:04:05.000Z"

// RecordTime is the timestamp of an event carrying a whole record (Tap, backfill): the record's createdAt when it
// is an RFC 3339 date-time, else the time in a TID rkey, else the receive time.
func RecordTime(record []byte, rkey string, received time.Time) time.Time {
	if v, ok := createdAt(record); ok {
		if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
			return t
		}
	}
	if tid, err := syntax.ParseTID(rkey); err == nil {
		return tid.Time()
	}
	return received
}

// createdAt returns the top-level "createdAt" string of a JSON object (the first, if repeated) without decoding
// the rest: a record carries it beside text, facets and embeds many times its size, and decoding the whole record
// to find it was a quarter of a backfill's CPU. It does not validate the rest of the document.
func createdAt(b []byte) (string, bool) {
	depth := 0
	for i := 0; i < len(b); i++ {
		switch b[i] {
		case '{', '[':
			depth++
		case '}', ']':
			depth--
		case '"':
			end := stringEnd(b, i)
			if end < 0 {
				return "", false
			}
			j := skipSpace(b, end+1)
			if depth == 1 && j < len(b) && b[j] == ':' && string(b[i+1:end]) == "createdAt" {
				j = skipSpace(b, j+1)
				if j == len(b) || b[j] != '"' {
					return "", false
				}
				vend := stringEnd(b, j)
				if vend < 0 {
					return "", false
				}
				if v := b[j+1 : vend]; bytes.IndexByte(v, '\\') < 0 {
					return string(v), true
				}
				var v string // escaped: rare enough to decode properly
				return v, json.Unmarshal(b[j:vend+1], &v) == nil
			}
			i = end
		}
	}
	return "", false
}

// stringEnd returns the index of the quote closing the JSON string opening at b[start], or -1.
func stringEnd(b []byte, start int) int {
	for i := start + 1; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i
		}
	}
	return -1
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}
