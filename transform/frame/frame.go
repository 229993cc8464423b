// Package frame decodes websocket messages of com.atproto.sync.subscribeRepos (the relay firehose) and of
// com.atproto.label.subscribeLabels (a labeler's stream, which uses the same framing) into
// typed events, without reflection and without allocating once a [Frame] is reused.
//
// Every []byte and [dagcbor.Link] in a decoded Frame aliases the message it was decoded from: it is valid
// only while that message is neither modified nor reused. Copy what must outlive it (string(f.Commit.Repo)).
// Decoding writes nothing into the message.
package frame

import (
	"fmt"

	"github.com/atkafka/atkafka/transform/dagcbor"
)

// Kind says which event a Frame holds.
type Kind uint8

// Frame kinds. KindUnknown is not an error: relays may add event types, which consumers count and skip.
const (
	KindUnknown  Kind = iota // a message type this package does not know; Frame.Type names it
	KindCommit               // "#commit"
	KindSync                 // "#sync"
	KindIdentity             // "#identity"
	KindAccount              // "#account"
	KindInfo                 // "#info"
	KindError                // an error frame (header op -1)
	KindLabels               // "#labels", of com.atproto.label.subscribeLabels
)

var kindNames = [...]string{"unknown", "commit", "sync", "identity", "account", "info", "error", "labels"}

// String returns a short lowercase name ("commit", "error", ...), suitable as a metric label.
func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// Frame is one decoded message. Only the field matching Kind is meaningful; the others keep stale data from
// earlier decodes so that their memory (Commit.Ops) is reused.
type Frame struct {
	Kind Kind
	// Type is the header's "t" as received ("#commit", ...); empty for error frames.
	Type     []byte
	Commit   Commit
	Sync     Sync
	Identity Identity
	Account  Account
	Info     Info
	Error    ErrorFrame
	Labels   Labels
}

// Commit is a "#commit" event: a repository change, with the blocks it touched.
//
// The deprecated "blobs" and "rebase" fields are validated and skipped.
type Commit struct {
	Repo   []byte       // DID of the repository
	Rev    []byte       // revision (TID) of this commit
	Since  []byte       // revision of the previous commit; nil when null or absent
	Commit dagcbor.Link // CID of the signed commit block
	// Blocks is a CARv1 holding the commit block, the MST diff and the records of creates and updates.
	Blocks   []byte
	Ops      []Op
	PrevData dagcbor.Link // MST root of the previous commit (Sync 1.1); nil when absent
	Time     []byte       // when the event was first broadcast, as sent (RFC 3339)
	Seq      int64
	TooBig   bool // deprecated: ops and blocks are incomplete
}

// Op is one record mutation of a commit.
type Op struct {
	Action Action
	Path   []byte       // "<collection>/<rkey>"
	CID    dagcbor.Link // the new record's CID; nil for deletes
	Prev   dagcbor.Link // the previous record's CID; nil when absent (creates, older relays)
}

// Action is the kind of an [Op].
type Action uint8

// Op actions. The lexicon lists these three; any other value makes the frame undecodable.
const (
	ActionCreate Action = iota + 1
	ActionUpdate
	ActionDelete
)

// String returns the action as it appears on the wire ("create", "update", "delete").
func (a Action) String() string {
	switch a {
	case ActionCreate:
		return "create"
	case ActionUpdate:
		return "update"
	case ActionDelete:
		return "delete"
	}
	return fmt.Sprintf("Action(%d)", uint8(a))
}

// Sync is a "#sync" event: the repository's current state is the commit in Blocks, whatever came before.
type Sync struct {
	DID    []byte
	Blocks []byte // CARv1 with the signed commit block as its root
	Rev    []byte
	Time   []byte
	Seq    int64
}

// Identity is an "#identity" event: the account's DID document or handle may have changed.
type Identity struct {
	DID    []byte
	Handle []byte // nil when absent
	Time   []byte
	Seq    int64
}

// Account is an "#account" event: the account's hosting status changed.
type Account struct {
	DID    []byte
	Status []byte // why the account is inactive ("takendown", "deactivated", ...); nil when absent
	Time   []byte
	Seq    int64
	Active bool
}

// Info is an "#info" event, such as OutdatedCursor.
type Info struct {
	Name    []byte
	Message []byte // nil when absent
}

// ErrorFrame is the body of an error frame (header op -1), such as FutureCursor or ConsumerTooSlow. The relay
// normally closes the connection after sending one.
type ErrorFrame struct {
	Error   []byte
	Message []byte // nil when absent
}
