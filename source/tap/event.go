package tap

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"

	"github.com/atkafka/atkafka/sink"
	"github.com/atkafka/atkafka/transform"
	"github.com/atkafka/atkafka/transform/format"
)

// The JSON Tap writes on /channel (cmd/tap types.go: MarshallableEvt, RecordEvt, IdentityEvt).
type (
	wireEvent struct {
		ID       uint64        `json:"id"`
		Type     string        `json:"type"`
		Record   *wireRecord   `json:"record"`
		Identity *wireIdentity `json:"identity"`
	}
	wireRecord struct {
		Live       bool            `json:"live"`
		DID        string          `json:"did"`
		Rev        string          `json:"rev"`
		Collection string          `json:"collection"`
		Rkey       string          `json:"rkey"`
		Action     string          `json:"action"`
		Record     json.RawMessage `json:"record"`
		CID        string          `json:"cid"`
	}
	wireIdentity struct {
		DID      string `json:"did"`
		Handle   string `json:"handle"`
		IsActive bool   `json:"is_active"`
		Status   string `json:"status"`
	}
)

// Dead-letter reasons, also label values of atkafka_decode_errors and atkafka_dead_lettered_events.
const (
	reasonDecode  = "decode"  // not JSON, or JSON of the wrong types
	reasonInvalid = "invalid" // JSON, but not an event Tap would send
)

// job is one message read from Tap, on its way to a worker.
type job struct {
	id       uint64
	hasID    bool // false only for dead letters whose id could not be read: they cannot be acked
	received time.Time
	did      string // dispatches the job to a worker; empty when unknown
	ev       *wireEvent
	// For messages that could not be decoded: the reason, the error and the raw bytes for the dead-letter topic.
	reason string
	err    error
	raw    []byte
	// pend carries the event through the pipeline's lookups; ss.queue(j) runs once it is ready.
	pend transform.Pending
}

// invalidation says what the event changes of its account's cached metadata.
func (ev *wireEvent) invalidation() transform.Invalidation {
	switch {
	case ev.Identity != nil:
		return transform.IdentityChanged
	case ev.Record != nil && ev.Record.Collection == transform.ProfileCollection:
		return transform.ProfileChanged
	}
	return 0
}

// decode turns one Tap message into a job. It never fails: what cannot be decoded becomes a dead-letter job.
func decode(raw []byte, received time.Time) *job {
	j := &job{received: received}
	var ev wireEvent
	if err := json.Unmarshal(raw, &ev); err != nil {
		j.id, j.hasID = idPrefix(raw)
		j.reason, j.err, j.raw = reasonDecode, err, raw
		return j
	}
	j.id, j.hasID = ev.ID, true
	j.did = ev.did()
	if err := ev.validate(); err != nil {
		j.reason, j.err, j.raw = reasonInvalid, err, raw
		return j
	}
	j.ev = &ev
	return j
}

// idPrefixStart is how every Tap event begins: encoding/json writes MarshallableEvt's fields in order, id first.
var idPrefixStart = []byte(`{"id":`)

// idPrefix reads the id of a message that is not valid JSON from the prefix Tap always writes, so that it can
// still be acked once dead-lettered.
func idPrefix(raw []byte) (uint64, bool) {
	rest, ok := bytes.CutPrefix(raw, idPrefixStart)
	if !ok {
		return 0, false
	}
	digits, _, ok := bytes.Cut(rest, []byte{','})
	if !ok {
		return 0, false
	}
	id, err := strconv.ParseUint(string(digits), 10, 64)
	return id, err == nil
}

// did is the DID of the part the event's type names, when present; dead letters keep it for their key.
func (ev *wireEvent) did() string {
	switch {
	case ev.Type == "record" && ev.Record != nil:
		return ev.Record.DID
	case ev.Type == "identity" && ev.Identity != nil:
		return ev.Identity.DID
	}
	return ""
}

func (ev *wireEvent) validate() error {
	switch ev.Type {
	case "record":
		r := ev.Record
		if r == nil {
			return errors.New("record event without record")
		}
		if r.DID == "" || r.Collection == "" || r.Rkey == "" {
			return errors.New("record event without did, collection or rkey")
		}
		switch r.Action {
		case "create", "update", "delete":
		default:
			return fmt.Errorf("record event with unknown action %q", r.Action)
		}
	case "identity":
		if ev.Identity == nil || ev.Identity.DID == "" {
			return errors.New("identity event without did")
		}
	default:
		return fmt.Errorf("unknown event type %q", ev.Type)
	}
	return nil
}

// recordEvent builds the operation event for a record event.
func recordEvent(r *wireRecord, received time.Time) *format.Event {
	op := &format.Operation{Action: r.Action, Collection: r.Collection, Rkey: r.Rkey, CID: r.CID}
	if len(r.Record) > 0 && !bytes.Equal(r.Record, []byte("null")) {
		op.Record = r.Record
	}
	live := r.Live
	return &format.Event{
		DID:       r.DID,
		Timestamp: format.RecordTime(op.Record, r.Rkey, received).UTC().Format(format.TimeFormat),
		Live:      &live,
		Operation: op,
	}
}

// identityEvents builds the identity and account events for an identity event (see the package doc).
func identityEvents(id *wireIdentity, received time.Time) []*format.Event {
	ts := received.UTC().Format(format.TimeFormat)
	active := id.IsActive
	accountStatus := id.Status
	if accountStatus == "active" {
		accountStatus = "" // the relay's #account carries a status only for inactive accounts
	}
	return []*format.Event{
		{DID: id.DID, Timestamp: ts, Identity: &format.Identity{Handle: id.Handle, IsActive: &active, Status: id.Status}},
		{DID: id.DID, Timestamp: ts, Account: &format.Account{Active: active, Status: accountStatus}},
	}
}

// recordHeaders identify a record event for consumers that deduplicate Tap's redeliveries.
func recordHeaders(r *wireRecord) []sink.Header {
	return []sink.Header{
		{Key: "did", Value: []byte(r.DID)},
		{Key: "rev", Value: []byte(r.Rev)},
		{Key: "collection", Value: []byte(r.Collection)},
		{Key: "rkey", Value: []byte(r.Rkey)},
		{Key: "live", Value: strconv.AppendBool(nil, r.Live)},
	}
}

func identityHeaders(id *wireIdentity) []sink.Header {
	return []sink.Header{{Key: "did", Value: []byte(id.DID)}}
}

// liveLag is how old a live record is, by its commit rev (a TID the PDS minted at commit time), which unlike
// createdAt is not set by the author's client.
func liveLag(r *wireRecord, now time.Time) (time.Duration, bool) {
	tid, err := syntax.ParseTID(r.Rev)
	if err != nil {
		return 0, false
	}
	return now.Sub(tid.Time()), true
}
