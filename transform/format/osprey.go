package format

import (
	"strconv"
	"time"
)

// Formatter renders events as Kafka record values, either as the standard event object or wrapped in the
// Osprey envelope. It is safe for concurrent use.
type Formatter struct {
	osprey bool
	ids    *Snowflake
	now    func() time.Time
}

// FormatterOption configures a Formatter.
type FormatterOption func(*Formatter)

// Osprey wraps every event in the envelope Osprey's Kafka consumer reads, with action ids drawn from ids.
func Osprey(ids *Snowflake) FormatterOption {
	return func(f *Formatter) { f.osprey, f.ids = true, ids }
}

// WithClock sets the clock used for send_time and for #info timestamps (tests).
func WithClock(now func() time.Time) FormatterOption {
	return func(f *Formatter) { f.now = now }
}

// NewFormatter returns a Formatter producing standard events unless Osprey is given.
func NewFormatter(opts ...FormatterOption) *Formatter {
	f := &Formatter{now: time.Now}
	for _, o := range opts {
		o(f)
	}
	return f
}

// OspreyCompatible reports whether f wraps events in the Osprey envelope.
func (f *Formatter) OspreyCompatible() bool { return f.osprey }

// ospreyTime is RFC 3339 in UTC with a Z and milliseconds: what Osprey's date parser reads without ambiguity.
const ospreyTime = "2006-01-02T15:04:05.000Z"

// AppendValue appends the record value for ev to dst.
func (f *Formatter) AppendValue(dst []byte, ev *Event) []byte {
	if !f.osprey {
		return ev.AppendJSON(dst)
	}
	now := f.now().UTC()
	ts := ev.Timestamp
	if ev.Info != nil {
		ts = now.Format(ospreyTime) // #info has no time of its own
	}
	dst = append(dst, `{"data":{"action_name":`...)
	dst = AppendString(dst, ev.ActionName())
	dst = append(dst, `,"action_id":`...)
	dst = strconv.AppendInt(dst, f.ids.Next(), 10)
	dst = append(dst, `,"data":`...)
	dst = ev.AppendJSON(dst)
	dst = append(dst, `,"timestamp":`...)
	dst = AppendString(dst, ts)
	dst = append(dst, `,"secret_data":{},"encoding":"UTF8"},"send_time":"`...)
	dst = now.AppendFormat(dst, ospreyTime)
	return append(dst, '"', '}')
}
