package tail

import (
	"cmp"
	"encoding/binary"
	"encoding/json"
	"strconv"
	"strings"
	"unicode"

	"github.com/atkafka/atkafka/schema"
)

// line is what one summary line shows and what the filters match, taken from whichever shape the value has.
type line struct {
	time   string
	action string
	did    string
	// path is collection/rkey for operations and for Ozone events about a record, else empty.
	path   string
	detail []string
}

func (l *line) collection() string {
	c, _, _ := strings.Cut(l.path, "/")
	return c
}

func (l *line) add(detail ...string) {
	for _, d := range detail {
		if d != "" {
			l.detail = append(l.detail, d)
		}
	}
}

// value is the union of the shapes a topic atkafka writes may hold: the standard events, the Osprey envelope
// around them, and Ozone's modEventView. Decoding into one struct tells them apart by which fields are present.
type value struct {
	schema.Event
	Data json.RawMessage `json:"data"` // the Osprey envelope: {"action_name",...,"data":<event>}

	// tools.ozone.moderation.defs#modEventView.
	ID            *int64      `json:"id"`
	ModEvent      *modEvent   `json:"event"`
	Subject       *modSubject `json:"subject"`
	CreatedBy     string      `json:"createdBy"`
	CreatorHandle string      `json:"creatorHandle"`
	CreatedAt     string      `json:"createdAt"`
}

type ospreyEnvelope struct {
	ActionName string          `json:"action_name"`
	Data       json.RawMessage `json:"data"`
}

type modEvent struct {
	Type            string   `json:"$type"`
	Comment         string   `json:"comment"`
	CreateLabelVals []string `json:"createLabelVals"`
	NegateLabelVals []string `json:"negateLabelVals"`
	Add             []string `json:"add"`
	Remove          []string `json:"remove"`
	ReportType      string   `json:"reportType"`
	DurationInHours int      `json:"durationInHours"`
}

// modSubject covers com.atproto.admin.defs#repoRef (did), com.atproto.repo.strongRef (uri) and
// chat.bsky.convo.defs#messageRef (did, messageId).
type modSubject struct {
	DID       string `json:"did"`
	URI       string `json:"uri"`
	MessageID string `json:"messageId"`
}

// record holds the fields a one-line summary of a record shows, by the lexicons that have them.
type record struct {
	Text        string          `json:"text"`        // posts
	DisplayName string          `json:"displayName"` // profiles, feed generators
	Name        string          `json:"name"`        // lists
	Subject     json.RawMessage `json:"subject"`     // likes and reposts (strongRef), follows and blocks (DID)
}

// msgpackString returns the content of b when b is exactly one MessagePack string (fixstr, str8, str16 or
// str32), as --osprey-format coordinator writes; a JSON value never starts with those bytes.
func msgpackString(b []byte) ([]byte, bool) {
	if len(b) == 0 {
		return nil, false
	}
	var n, hdr int
	switch c := b[0]; {
	case c >= 0xa0 && c <= 0xbf:
		n, hdr = int(c&0x1f), 1
	case c == 0xd9 && len(b) >= 2:
		n, hdr = int(b[1]), 2
	case c == 0xda && len(b) >= 3:
		n, hdr = int(binary.BigEndian.Uint16(b[1:])), 3
	case c == 0xdb && len(b) >= 5:
		n, hdr = int(binary.BigEndian.Uint32(b[1:])), 5
	default:
		return nil, false
	}
	if len(b) != hdr+n {
		return nil, false
	}
	return b[hdr:], true
}

// summarize reads an event value. It reports false for values of no known shape (a dead-letter record, another
// producer's data), which the caller shows raw.
func summarize(raw []byte) (line, bool) {
	if body, ok := msgpackString(raw); ok {
		// Osprey's coordinator format: {"id","name","data":<event>,"secret_data"} inside the string.
		var c struct {
			Name string          `json:"name"`
			Data json.RawMessage `json:"data"`
		}
		if json.Unmarshal(body, &c) != nil || c.Name == "" {
			return line{}, false
		}
		raw = c.Data
	}
	var v value
	if json.Unmarshal(raw, &v) != nil {
		return line{}, false
	}
	if len(v.Data) > 0 {
		var env ospreyEnvelope
		if json.Unmarshal(v.Data, &env) == nil && env.ActionName != "" {
			// Unwrap once; the inner event is a standard one.
			v = value{}
			if json.Unmarshal(env.Data, &v) != nil {
				return line{}, false
			}
		}
	}
	l := line{time: v.Timestamp, did: v.DID}
	switch {
	case v.Operation != nil:
		op := v.Operation
		l.action, l.path = op.Action, op.Collection+"/"+op.Rkey
		l.add(recordSummary(op.Record))
	case v.Identity != nil:
		l.action = "identity"
		l.add("handle="+v.Identity.Handle, boolField("active", v.Identity.IsActive), field("status", v.Identity.Status))
	case v.Account != nil:
		l.action = "account"
		l.add(boolField("active", &v.Account.Active), field("status", v.Account.Status))
	case v.Info != nil:
		l.action = "info"
		l.add(v.Info.Name, quote(v.Info.Message))
	case v.Sync != nil:
		l.action = "sync"
		l.add(field("rev", v.Sync.Rev), field("commit", v.Sync.Commit))
	case v.ID != nil && v.ModEvent != nil:
		return ozoneSummary(&v), true
	default:
		return line{}, false
	}
	if v.Live != nil && !*v.Live {
		l.add("(backfill)") // Tap's historical records, as opposed to live ones
	}
	return l, true
}

func ozoneSummary(v *value) line {
	ev := v.ModEvent
	l := line{time: v.CreatedAt, action: "ozone#" + ozoneAction(ev.Type)}
	if s := v.Subject; s != nil {
		l.did = s.DID
		if s.URI != "" {
			l.did, l.path = splitATURI(s.URI)
		}
		l.add(field("message", s.MessageID))
	}
	l.add("id="+strconv.FormatInt(*v.ID, 10), field("by", cmp.Or(v.CreatorHandle, v.CreatedBy)))
	if _, rt, ok := strings.Cut(ev.ReportType, "#"); ok {
		l.add("reason=" + rt)
	}
	if ev.DurationInHours != 0 {
		l.add(field("hours", strconv.Itoa(ev.DurationInHours)))
	}
	l.add(changes("labels", ev.CreateLabelVals, ev.NegateLabelVals), changes("tags", ev.Add, ev.Remove), quote(ev.Comment))
	return l
}

// ozoneAction shortens tools.ozone.moderation.defs#modEventTakedown to "takedown".
func ozoneAction(typ string) string {
	_, name, _ := strings.Cut(typ, "#")
	name = strings.TrimPrefix(name, "modEvent")
	if name == "" {
		return "unknown"
	}
	r := []rune(name)
	r[0] = unicode.ToLower(r[0])
	return string(r)
}

// splitATURI turns at://did/collection/rkey into the DID and collection/rkey.
func splitATURI(uri string) (did, path string) {
	rest, ok := strings.CutPrefix(uri, "at://")
	if !ok {
		return "", uri
	}
	did, path, _ = strings.Cut(rest, "/")
	return did, path
}

func recordSummary(raw json.RawMessage) string {
	if len(raw) == 0 {
		return ""
	}
	var r record
	if json.Unmarshal(raw, &r) != nil {
		return ""
	}
	switch {
	case r.Text != "":
		return quote(r.Text)
	case r.DisplayName != "":
		return quote(r.DisplayName)
	case r.Name != "":
		return quote(r.Name)
	case len(r.Subject) > 0:
		var did string
		if json.Unmarshal(r.Subject, &did) == nil {
			return "→ " + did
		}
		var ref modSubject
		if json.Unmarshal(r.Subject, &ref) == nil && ref.URI != "" {
			return "→ " + ref.URI
		}
	}
	return ""
}

// maxText keeps a line on one terminal row in the common case.
const maxText = 100

// quote shows free text on one line: whitespace runs (newlines included) become one space, long text is cut.
func quote(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if s == "" {
		return ""
	}
	if r := []rune(s); len(r) > maxText {
		s = string(r[:maxText]) + "…"
	}
	return strconv.Quote(s)
}

func field(name, v string) string {
	if v == "" {
		return ""
	}
	return name + "=" + v
}

func boolField(name string, v *bool) string {
	if v == nil {
		return ""
	}
	return name + "=" + strconv.FormatBool(*v)
}

func changes(name string, added, removed []string) string {
	var parts []string
	for _, a := range added {
		parts = append(parts, "+"+a)
	}
	for _, r := range removed {
		parts = append(parts, "-"+r)
	}
	if len(parts) == 0 {
		return ""
	}
	return name + "=" + strings.Join(parts, ",")
}
