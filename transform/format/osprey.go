package format

import (
	"strconv"
	"time"
)

// Formatter renders events as Kafka record values, either as the standard event object or wrapped in one of the
// Osprey envelopes. It is safe for concurrent use.
type Formatter struct {
	osprey      bool
	coordinator bool
	ids         *Snowflake
	now         func() time.Time
}

// Osprey reads Kafka in two places, each with its own encoding: these are the values of --osprey-format.
const (
	// OspreyWorker is the JSON envelope Osprey's Python worker reads.
	OspreyWorker = "worker"
	// OspreyCoordinator is what Osprey's Rust coordinator reads from a record without an "encoding: proto"
	// header: one MessagePack string holding the JSON {"id","name","data","secret_data"}.
	OspreyCoordinator = "coordinator"
)

// OspreyFormats are the accepted Osprey formats, the default first.
var OspreyFormats = []string{OspreyWorker, OspreyCoordinator}

// FormatterOption configures a Formatter.
type FormatterOption func(*Formatter)

// Osprey wraps every event in the envelope Osprey's worker reads, with action ids drawn from ids.
func Osprey(ids *Snowflake) FormatterOption {
	return func(f *Formatter) { f.osprey, f.ids = true, ids }
}

// Coordinator makes Osprey mode write the coordinator's encoding (OspreyCoordinator) instead of the worker's.
// It has no effect without Osprey.
func Coordinator() FormatterOption {
	return func(f *Formatter) { f.coordinator = true }
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
	ts := ev.Timestamp
	if ev.Info != nil && !f.coordinator {
		ts = string(appendOspreyTime(nil, f.now().UTC())) // #info has no time of its own
	}
	return f.appendEnvelope(dst, ev.ActionName(), ts, func(dst []byte) []byte { return ev.AppendJSON(dst) })
}

// AppendRaw appends the record value for an event that is already a JSON object (an Ozone moderation event):
// data itself in standard mode, else the Osprey envelope around it, with name as the action name and timestamp
// as the event time.
func (f *Formatter) AppendRaw(dst []byte, name, timestamp string, data []byte) []byte {
	if !f.osprey {
		return append(dst, data...)
	}
	return f.appendEnvelope(dst, name, timestamp, func(dst []byte) []byte { return append(dst, data...) })
}

// appendEnvelope appends the configured Osprey envelope around the event appendData appends.
func (f *Formatter) appendEnvelope(dst []byte, name, timestamp string, appendData func([]byte) []byte) []byte {
	if f.coordinator {
		return appendMsgpackString(dst, func(dst []byte) []byte {
			dst = append(dst, `{"id":"`...)
			dst = strconv.AppendInt(dst, f.ids.Next(), 10)
			dst = append(dst, `","name":`...)
			dst = AppendString(dst, name)
			dst = append(dst, `,"data":`...)
			dst = appendData(dst)
			return append(dst, `,"secret_data":{}}`...)
		})
	}
	dst = append(dst, `{"data":{"action_name":`...)
	dst = AppendString(dst, name)
	dst = append(dst, `,"action_id":`...)
	dst = strconv.AppendInt(dst, f.ids.Next(), 10)
	dst = append(dst, `,"data":`...)
	dst = appendData(dst)
	dst = append(dst, `,"timestamp":`...)
	dst = AppendString(dst, timestamp)
	dst = append(dst, `,"secret_data":{},"encoding":"UTF8"},"send_time":"`...)
	dst = appendOspreyTime(dst, f.now().UTC())
	return append(dst, '"', '}')
}

// appendMsgpackString appends, as one MessagePack string, what appendBody appends. The body's length is known
// only once it is written, so it is written after room for the longest header (str32) and moved back when a
// shorter header fits: MessagePack requires the shortest.
func appendMsgpackString(dst []byte, appendBody func([]byte) []byte) []byte {
	start := len(dst)
	dst = appendBody(append(dst, 0, 0, 0, 0, 0))
	n := len(dst) - start - 5
	var hdr [5]byte
	h := hdr[:0]
	switch {
	case n < 32:
		h = append(h, 0xa0|byte(n)) // fixstr
	case n < 1<<8:
		h = append(h, 0xd9, byte(n)) // str8
	case n < 1<<16:
		h = append(h, 0xda, byte(n>>8), byte(n)) // str16
	default:
		h = append(h, 0xdb, byte(n>>24), byte(n>>16), byte(n>>8), byte(n)) // str32
	}
	copy(dst[start:], h)
	if len(h) < 5 {
		copy(dst[start+len(h):], dst[start+5:])
		dst = dst[:start+len(h)+n]
	}
	return dst
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
