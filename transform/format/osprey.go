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
		ts = string(appendOspreyTime(nil, now)) // #info has no time of its own
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
	dst = appendOspreyTime(dst, now)
	return append(dst, '"', '}')
}

// appendOspreyTime appends t (in UTC) as ospreyTime does, without the layout interpretation of AppendFormat:
// it runs once per Osprey record.
func appendOspreyTime(dst []byte, t time.Time) []byte {
	y, mo, d := t.Date()
	if y < 0 || y > 9999 {
		return t.AppendFormat(dst, ospreyTime)
	}
	h, mi, s := t.Clock()
	ms := t.Nanosecond() / int(time.Millisecond)
	dst = append(dst, byte('0'+y/1000), byte('0'+y/100%10), byte('0'+y/10%10), byte('0'+y%10), '-')
	dst = append(dst, byte('0'+int(mo)/10), byte('0'+int(mo)%10), '-', byte('0'+d/10), byte('0'+d%10), 'T')
	dst = append(dst, byte('0'+h/10), byte('0'+h%10), ':', byte('0'+mi/10), byte('0'+mi%10), ':', byte('0'+s/10), byte('0'+s%10))
	return append(dst, '.', byte('0'+ms/100), byte('0'+ms/10%10), byte('0'+ms%10), 'Z')
}
