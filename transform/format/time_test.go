package format

import (
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"
)

func TestRecordTime(t *testing.T) {
	recv := time.Date(2026, 7, 4, 1, 2, 3, 0, time.UTC)
	tidTime := time.Date(2024, 2, 3, 4, 5, 6, 789000000, time.UTC)
	tid := syntax.NewTIDFromTime(tidTime, 1).String()
	for _, c := range []struct {
		record, rkey string
		want         time.Time
	}{
		{`{"createdAt":"2025-01-01T00:00:00Z"}`, tid, time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)},
		{`{"createdAt":"2025-01-01T01:00:00.5+01:00"}`, "self", time.Date(2025, 1, 1, 0, 0, 0, 5e8, time.UTC)},
		{`{"createdAt":"yesterday"}`, tid, tidTime},
		{`{"createdAt":12}`, tid, tidTime},
		{``, tid, tidTime},
		{`{"text":"no date"}`, "self", recv},
	} {
		var rec []byte
		if c.record != "" {
			rec = []byte(c.record)
		}
		if got := RecordTime(rec, c.rkey, recv); !got.Equal(c.want) {
			t.Errorf("RecordTime(%s, %s) = %v, want %v", c.record, c.rkey, got, c.want)
		}
	}
}
