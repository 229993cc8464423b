// Package format renders events in the JSON shapes atkafka's users consume: the standard event object and the
// Osprey envelope around it. The shapes are a contract with existing consumers; field names and presence rules
// here must not change.
//
// Rendering appends to a caller-owned buffer without reflection: it runs once per record on the hot path.
package format

import (
	"encoding/base64"
	"strconv"
)

// Event is the source-neutral form of one Kafka record's payload. Exactly one of Operation, Account, Identity,
// Info, Sync and Label is set.
type Event struct {
	DID string
	// Timestamp is the event time as RFC 3339, as the source reported it.
	Timestamp string
	// Metadata is the rendered eventMetadata object, or nil to leave the field out (enrichment off).
	Metadata []byte
	// Live is set by the Tap source only: false for backfilled records, true for live ones.
	Live *bool

	Operation *Operation
	Account   *Account
	Identity  *Identity
	Info      *Info
	Sync      *Sync
	Label     *Label
}

// Operation is one record create, update or delete in a repository.
type Operation struct {
	Action     string // create, update or delete
	Collection string
	Rkey       string
	CID        string // empty for deletes
	// Record is the record as atproto JSON, nil for deletes.
	Record []byte
}

// Account is an account status change (#account).
type Account struct {
	Active bool
	Seq    int64  // omitted when 0 (Tap has no seq)
	Status string // omitted when empty
}

// Identity is an identity change (#identity). Tap's identity events also carry IsActive and Status.
type Identity struct {
	Seq      int64 // omitted when 0 (Tap has no seq)
	Handle   string
	IsActive *bool  // omitted when nil
	Status   string // omitted when empty
}

// Info is an informational relay message (#info), such as OutdatedCursor.
type Info struct {
	Name    string
	Message *string // omitted when nil
}

// Sync says that a repository's state is now the given commit (#sync, Sync 1.1): consumers that need
// completeness re-fetch the repository.
type Sync struct {
	Seq    int64
	Rev    string
	Commit string // the signed commit's CID
}

// Label is one label from a labeler's com.atproto.label.subscribeLabels stream: the fields of
// com.atproto.label.defs#label, plus where it came from. The event's DID is the subject's account.
type Label struct {
	Labeler string // the DID or host atkafka subscribed to
	Seq     int64  // the stream's seq of the #labels frame that carried it
	Ver     int64  // omitted when 0 (absent)
	Src     string
	URI     string
	CID     string // omitted when empty
	Val     string
	Neg     bool
	Cts     string
	Exp     string // omitted when empty
	Sig     []byte // omitted when nil; rendered as {"$bytes": base64}
}

// LabelAction is the Osprey action name of a label event, negations included: rules tell them apart by
// $.label.neg, as they tell creates from deletes by the action name only for repository operations.
const LabelAction = "label"

// ActionName is the event's kind as Osprey rules and the handled_events metric name it.
func (e *Event) ActionName() string {
	switch {
	case e.Operation != nil:
		switch e.Operation.Action { // constants for the usual actions: this runs per event
		case "create":
			return "operation#create"
		case "update":
			return "operation#update"
		case "delete":
			return "operation#delete"
		}
		return "operation#" + e.Operation.Action
	case e.Account != nil:
		return "account"
	case e.Identity != nil:
		return "identity"
	case e.Info != nil:
		return "info"
	case e.Sync != nil:
		return "sync"
	case e.Label != nil:
		return LabelAction
	}
	return "unknown"
}

// Collection is the operation's collection, empty for other events.
func (e *Event) Collection() string {
	if e.Operation != nil {
		return e.Operation.Collection
	}
	return ""
}

// AppendJSON appends the standard event object to dst.
func (e *Event) AppendJSON(dst []byte) []byte {
	dst = append(dst, '{')
	if e.Info != nil {
		// #info carries no DID or time: consumers know it as {"info":{...}} alone.
		dst = append(dst, `"info":{"name":`...)
		dst = AppendString(dst, e.Info.Name)
		if e.Info.Message != nil {
			dst = append(dst, `,"message":`...)
			dst = AppendString(dst, *e.Info.Message)
		}
		return append(dst, "}}"...)
	}
	dst = append(dst, `"did":`...)
	dst = AppendString(dst, e.DID)
	dst = append(dst, `,"timestamp":`...)
	dst = AppendString(dst, e.Timestamp)
	if e.Metadata != nil {
		dst = append(dst, `,"eventMetadata":`...)
		dst = append(dst, e.Metadata...)
	}
	if e.Live != nil {
		dst = append(dst, `,"live":`...)
		dst = strconv.AppendBool(dst, *e.Live)
	}
	switch {
	case e.Operation != nil:
		dst = e.Operation.appendJSON(append(dst, `,"operation":`...), e.DID)
	case e.Account != nil:
		a := e.Account
		dst = append(dst, `,"account":{"active":`...)
		dst = strconv.AppendBool(dst, a.Active)
		dst = appendSeq(dst, a.Seq)
		dst = appendOptString(dst, "status", a.Status)
		dst = append(dst, '}')
	case e.Identity != nil:
		id := e.Identity
		dst = append(dst, `,"identity":{"handle":`...)
		dst = AppendString(dst, id.Handle)
		dst = appendSeq(dst, id.Seq)
		if id.IsActive != nil {
			dst = append(dst, `,"isActive":`...)
			dst = strconv.AppendBool(dst, *id.IsActive)
		}
		dst = appendOptString(dst, "status", id.Status)
		dst = append(dst, '}')
	case e.Sync != nil:
		dst = append(dst, `,"sync":{"seq":`...)
		dst = strconv.AppendInt(dst, e.Sync.Seq, 10)
		dst = append(dst, `,"rev":`...)
		dst = AppendString(dst, e.Sync.Rev)
		dst = append(dst, `,"commit":`...)
		dst = AppendString(dst, e.Sync.Commit)
		dst = append(dst, '}')
	case e.Label != nil:
		dst = e.Label.appendJSON(append(dst, `,"label":`...))
	}
	return append(dst, '}')
}

func (l *Label) appendJSON(dst []byte) []byte {
	dst = append(dst, `{"labeler":`...)
	dst = AppendString(dst, l.Labeler)
	dst = append(dst, `,"seq":`...)
	dst = strconv.AppendInt(dst, l.Seq, 10)
	if l.Ver != 0 {
		dst = append(dst, `,"ver":`...)
		dst = strconv.AppendInt(dst, l.Ver, 10)
	}
	dst = append(dst, `,"src":`...)
	dst = AppendString(dst, l.Src)
	dst = append(dst, `,"uri":`...)
	dst = AppendString(dst, l.URI)
	dst = appendOptString(dst, "cid", l.CID)
	dst = append(dst, `,"val":`...)
	dst = AppendString(dst, l.Val)
	dst = append(dst, `,"neg":`...)
	dst = strconv.AppendBool(dst, l.Neg)
	dst = append(dst, `,"cts":`...)
	dst = AppendString(dst, l.Cts)
	dst = appendOptString(dst, "exp", l.Exp)
	if l.Sig != nil {
		// The atproto data model's bytes: unpadded standard base64.
		dst = append(dst, `,"sig":{"$bytes":"`...)
		dst = base64.RawStdEncoding.AppendEncode(dst, l.Sig)
		dst = append(dst, `"}`...)
	}
	return append(dst, '}')
}

func (op *Operation) appendJSON(dst []byte, did string) []byte {
	dst = append(dst, `{"action":`...)
	dst = AppendString(dst, op.Action)
	dst = append(dst, `,"collection":`...)
	dst = AppendString(dst, op.Collection)
	dst = append(dst, `,"rkey":`...)
	dst = AppendString(dst, op.Rkey)
	// uri and path are derived rather than stored so they can never disagree with collection and rkey.
	dst = append(dst, `,"uri":"at://`...)
	dst = appendStringBody(dst, did)
	dst = append(dst, '/')
	dst = appendStringBody(dst, op.Collection)
	dst = append(dst, '/')
	dst = appendStringBody(dst, op.Rkey)
	dst = append(dst, '"')
	dst = appendOptString(dst, "cid", op.CID)
	dst = append(dst, `,"path":"`...)
	dst = appendStringBody(dst, op.Collection)
	dst = append(dst, '/')
	dst = appendStringBody(dst, op.Rkey)
	dst = append(dst, '"')
	if op.Record != nil {
		dst = append(dst, `,"record":`...)
		dst = append(dst, op.Record...)
	}
	return append(dst, '}')
}

func appendSeq(dst []byte, seq int64) []byte {
	if seq == 0 {
		return dst
	}
	dst = append(dst, `,"seq":`...)
	return strconv.AppendInt(dst, seq, 10)
}

func appendOptString(dst []byte, key, v string) []byte {
	if v == "" {
		return dst
	}
	dst = append(dst, ',', '"')
	dst = append(dst, key...)
	dst = append(dst, '"', ':')
	return AppendString(dst, v)
}
