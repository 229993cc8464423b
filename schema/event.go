package schema

import (
	"encoding/json"
	"fmt"
)

// Event decodes a standard-format record value of the firehose commands (relay-event and tap-event): what
// consumers in Go, `atkafka tail` and the tests read. Exactly one of Operation, Account, Identity, Info and Sync is
// set. An Osprey envelope must be taken off first; its data is an Event.
type Event struct {
	// DID and Timestamp are empty for #info only.
	DID       string `json:"did,omitempty"`
	Timestamp string `json:"timestamp,omitempty"`
	// Live is written by firehose tap only: false for backfilled records, true for live ones.
	Live *bool `json:"live,omitempty"`
	// EventMetadata is kept raw, so that a reader tells an absent object (enrichment off) from an empty one;
	// Metadata decodes it.
	EventMetadata json.RawMessage `json:"eventMetadata,omitempty"`

	Operation *Operation `json:"operation,omitempty"`
	Account   *Account   `json:"account,omitempty"`
	Identity  *Identity  `json:"identity,omitempty"`
	Info      *Info      `json:"info,omitempty"`
	Sync      *Sync      `json:"sync,omitempty"`
}

// Operation is one record create, update or delete of a #commit.
type Operation struct {
	Action     string `json:"action"`
	Collection string `json:"collection"`
	Rkey       string `json:"rkey"`
	URI        string `json:"uri"`
	// CID is empty for deletes.
	CID  string `json:"cid,omitempty"`
	Path string `json:"path"`
	// Record is the record as atproto JSON, nil for deletes.
	Record json.RawMessage `json:"record,omitempty"`
}

// Account is an account status change (#account). Seq is 0 from Tap, which has none.
type Account struct {
	Active bool   `json:"active"`
	Seq    int64  `json:"seq,omitempty"`
	Status string `json:"status,omitempty"`
}

// Identity is an identity change (#identity). Seq is 0 from Tap; IsActive and Status come from Tap only.
type Identity struct {
	Seq      int64  `json:"seq,omitempty"`
	Handle   string `json:"handle,omitempty"`
	IsActive *bool  `json:"isActive,omitempty"`
	Status   string `json:"status,omitempty"`
}

// Info is an informational relay message (#info). Message is empty when the relay sent none.
type Info struct {
	Name    string `json:"name"`
	Message string `json:"message,omitempty"`
}

// Sync says that a repository's state is now the given signed commit (#sync).
type Sync struct {
	Seq    int64  `json:"seq"`
	Rev    string `json:"rev"`
	Commit string `json:"commit"`
}

// Metadata is eventMetadata: what is known of the event's account.
type Metadata struct {
	DIDDocument  json.RawMessage `json:"didDocument,omitempty"`
	PDSHost      string          `json:"pdsHost,omitempty"`
	Handle       string          `json:"handle,omitempty"`
	DIDCreatedAt string          `json:"didCreatedAt,omitempty"`
	// AccountAge is in seconds since DIDCreatedAt, -1 when that is unknown; always written, so nil only when a
	// value lacks it.
	AccountAge *int64 `json:"accountAge,omitempty"`
	// Profile is app.bsky.actor.getProfile's answer (with --api-host), kept raw.
	Profile json.RawMessage `json:"profile,omitempty"`
}

// Kind names the event's kind: the operation's collection, or account, identity, sync or info.
func (e *Event) Kind() string {
	switch {
	case e.Operation != nil:
		return e.Operation.Collection
	case e.Account != nil:
		return "account"
	case e.Identity != nil:
		return "identity"
	case e.Sync != nil:
		return "sync"
	default:
		return "info"
	}
}

// Metadata decodes EventMetadata; nil when the event has none.
func (e *Event) Metadata() (*Metadata, error) {
	if e.EventMetadata == nil {
		return nil, nil
	}
	var m Metadata
	if err := json.Unmarshal(e.EventMetadata, &m); err != nil {
		return nil, fmt.Errorf("eventMetadata: %w", err)
	}
	return &m, nil
}

// DecodeEvent decodes a standard-format record value.
func DecodeEvent(value []byte) (*Event, error) {
	var e Event
	if err := json.Unmarshal(value, &e); err != nil {
		return nil, fmt.Errorf("event: %w", err)
	}
	return &e, nil
}
