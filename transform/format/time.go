package format

import (
	"encoding/json"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"
)

// TimeFormat is RFC 3339 in UTC with milliseconds, the atproto date-time style of the timestamp field.
const TimeFormat = "2006-01-02T15:04:05.000Z"

// RecordTime is the timestamp of an event carrying a whole record (Tap, backfill): the record's createdAt when it
// is an RFC 3339 date-time, else the time in a TID rkey, else the receive time.
func RecordTime(record []byte, rkey string, received time.Time) time.Time {
	if record != nil {
		var r struct {
			CreatedAt string `json:"createdAt"`
		}
		if json.Unmarshal(record, &r) == nil && r.CreatedAt != "" {
			if t, err := time.Parse(time.RFC3339Nano, r.CreatedAt); err == nil {
				return t
			}
		}
	}
	if tid, err := syntax.ParseTID(rkey); err == nil {
		return tid.Time()
	}
	return received
}
