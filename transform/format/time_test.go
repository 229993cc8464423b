package format

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"
	"unicode/utf8"

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
		// Only the top level counts, whatever comes before it.
		{`{"embed":{"createdAt":"2020-01-01T00:00:00Z"},"langs":["createdAt"],"createdAt":"2025-01-01T00:00:00Z"}`, tid, time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)},
		{`{"embed":{"createdAt":"2020-01-01T00:00:00Z"}}`, tid, tidTime},
		{`{"text":"a \"createdAt\": \"2020-01-01T00:00:00Z\" {[","createdAt" : "2025-01-01T00:00:00Z" }`, tid, time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)},
		{`{"createdAt":"2025-01-01T00:00:00\u005a"}`, tid, time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)},
		{`{"createdAt":"2025-01-01T00:00:00Z`, tid, tidTime},
		{`{"text":"unterminated`, tid, tidTime},
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

// FuzzCreatedAt holds the scanner to what decoding the whole record gives, on every valid JSON object.
func FuzzCreatedAt(f *testing.F) {
	for _, s := range []string{`{"createdAt":"2025-01-01T00:00:00Z"}`, `{"a":{"createdAt":"x"},"createdAt":"y"}`,
		`{"a":["createdAt",{"createdAt":1}],"b":"\\\"","createdAt":"z\n"}`, ` { "createdAt" : "t" } `, `{"createdAt":null}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var doc map[string]json.RawMessage
		// Invalid UTF-8 decodes to U+FFFD, which no date-time holds anyway.
		if !utf8.Valid(b) || json.Unmarshal(b, &doc) != nil || bytes.Count(b, []byte(`createdAt`)) > 1 && hasDuplicateKeys(b) {
			return
		}
		var want string
		wantOK := doc["createdAt"] != nil && json.Unmarshal(doc["createdAt"], &want) == nil && doc["createdAt"][0] == '"'
		got, ok := createdAt(b)
		if ok != wantOK || got != want {
			t.Errorf("createdAt(%s) = %q, %v; want %q, %v", b, got, ok, want, wantOK)
		}
	})
}

// hasDuplicateKeys reports whether a top-level key repeats: decoding keeps the last, the scanner the first.
func hasDuplicateKeys(b []byte) bool {
	dec := json.NewDecoder(bytes.NewReader(b))
	if _, err := dec.Token(); err != nil {
		return true
	}
	seen := map[string]bool{}
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			return true
		}
		key, _ := k.(string)
		if seen[key] {
			return true
		}
		seen[key] = true
		var skip json.RawMessage
		if dec.Decode(&skip) != nil {
			return true
		}
	}
	return false
}
