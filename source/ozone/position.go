package ozone

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// isoMillis is how Ozone writes createdAt (JavaScript's Date.toISOString); createdBefore is compared with the
// stored text as a string, so it must be written exactly this way.
const isoMillis = "2006-01-02T15:04:05.000Z"

// position is a place in Ozone's (createdAt, id) event order: the last event read or acknowledged.
type position struct {
	createdAt time.Time // truncated to the millisecond, the precision Ozone stores and pages by
	id        int64     // 0 for a legacy timestamp cursor: every event of that millisecond comes after it
}

func newPosition(createdAt time.Time, id int64) position {
	return position{createdAt: createdAt.UTC().Truncate(time.Millisecond), id: id}
}

// String is the cursor file line.
func (p position) String() string {
	return p.createdAt.Format(isoMillis) + " " + strconv.FormatInt(p.id, 10)
}

// cursor is the stored cursor of p. A zero position comes only from events without a readable createdAt before any
// other, with no cursor to start from: it is no cursor (saving it would mean "start over").
func (p position) cursor() (string, bool) { return p.String(), !p.createdAt.IsZero() }

// ozoneCursor is the queryEvents cursor that resumes right after p (see TimeIdKeyset in @atproto/ozone).
func (p position) ozoneCursor() string {
	return strconv.FormatInt(p.createdAt.UnixMilli(), 10) + "::" + strconv.FormatInt(p.id, 10)
}

// parsePosition reads a cursor file line: "<RFC 3339> <id>", or a bare RFC 3339 timestamp from earlier bridges.
func parsePosition(line string) (p position, legacy bool, err error) {
	ts, idText, hasID := strings.Cut(strings.TrimSpace(line), " ")
	t, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil {
		return position{}, false, fmt.Errorf("cursor %q: want %q or an RFC 3339 timestamp: %w", line, "<RFC 3339 createdAt> <event id>", err)
	}
	if !hasID {
		return newPosition(t, 0), true, nil
	}
	id, err := strconv.ParseInt(strings.TrimSpace(idText), 10, 64)
	if err != nil || id < 0 {
		return position{}, false, fmt.Errorf("cursor %q: event id %q is not a non-negative integer", line, idText)
	}
	return newPosition(t, id), false, nil
}
