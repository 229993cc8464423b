// Package verify checks that a relay's #commit and #sync frames are what the account signed (Sync 1.1), so that
// atkafka only vouches in Kafka for repository changes the account really made.
//
// A #commit is checked in three steps, cheapest first:
//
//  1. structure: the body decodes, every block of its CAR hashes to its CID, the CAR's root is the commit the
//     frame names, and that commit block is for the frame's DID and rev;
//  2. ops: each op agrees with the commit's MST (the record CID a create or update names is the tree's value,
//     a deleted path is gone), and, when the frame carries prevData, applying the inverted ops to the tree
//     yields prevData: nothing was changed that the ops do not say;
//  3. signature: the commit block is signed by the #atproto key of the account's DID document, from [Keys]:
//     enrichment's document cache, atkafka's one identity resolver. A signature that
//     does not verify with a cached key is retried once with a freshly fetched document, since the account may
//     have rotated its key.
//
// The verdict is an [*Error] with a bounded [Reason]. Two reasons are not failures: [ReasonUnverifiable] (the
// signature verified but the ops could not be inverted: no prevData, as in commits older than Sync 1.1) and
// [ReasonKeyUnavailable] (the DID document could not be fetched, usually transient): both pass, counted, since
// holding the firehose back on them would turn a PLC outage into an atkafka outage.
//
// Verification is opt-in: it decodes the frame a second time with indigo's generated decoder and checks a
// signature per frame, which costs far more than atkafka's zero-copy path (see the package benchmark).
package verify

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/identity"
	"github.com/bluesky-social/indigo/atproto/repo"
	"github.com/bluesky-social/indigo/atproto/repo/mst"
	"github.com/bluesky-social/indigo/atproto/syntax"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"

	"github.com/atkafka/atkafka/transform/dagcbor"
)

// Mode says what a Verifier does with a frame that fails verification.
type Mode string

// Modes.
const (
	// ModeOff verifies nothing; callers should not even build a Verifier (nil means off in the relay source).
	ModeOff Mode = "off"
	// ModeLog verifies, counts and logs failures, and lets the frame through.
	ModeLog Mode = "log"
	// ModeStrict verifies and returns failures, so that the caller dead-letters the frame instead.
	ModeStrict Mode = "strict"
)

// Modes lists every Mode, in the order help texts list them.
var Modes = []Mode{ModeOff, ModeLog, ModeStrict}

// ParseMode reads a Mode; "" is ModeOff.
func ParseMode(s string) (Mode, error) {
	if m := Mode(cmp.Or(s, string(ModeOff))); slices.Contains(Modes, m) {
		return m, nil
	}
	return "", fmt.Errorf("verify mode %q is not one of %v", s, Modes)
}

// Reason is why a frame is not verified. It is bounded: a metric label and, prefixed with "verify_", a
// dead-letter reason.
type Reason string

// Reasons.
const (
	// ReasonBadStructure: the body, its CAR or its commit block does not decode, or the commit block is not the
	// one the frame names (CID, DID, rev).
	ReasonBadStructure Reason = "bad_structure"
	// ReasonBadBlock: a block of the CAR does not hash to its CID (tampered or corrupted).
	ReasonBadBlock Reason = "bad_block"
	// ReasonOpsMismatch: the ops do not match the commit's MST, or inverting them does not yield prevData.
	ReasonOpsMismatch Reason = "ops_mismatch"
	// ReasonBadSignature: the commit's signature does not verify with the account's current key.
	ReasonBadSignature Reason = "bad_signature"
	// ReasonNoKey: the account's DID document declares no usable #atproto signing key, or the DID does not exist
	// (PLC or did:web answered "not found"): no signature from it can be valid.
	ReasonNoKey Reason = "no_key"

	// ReasonKeyUnavailable: the DID document could not be fetched (PLC unreachable, failing or too slow). Not a
	// verification failure: the frame passes (fail open), so a PLC outage never stalls or loses the firehose.
	ReasonKeyUnavailable Reason = "key_unavailable"
	// ReasonUnverifiable: the signature verified but the ops could not be checked by inversion (no prevData,
	// ops without prev, tooBig). Not a verification failure: the frame passes.
	ReasonUnverifiable Reason = "unverifiable"
)

// Error is a verdict other than "verified".
type Error struct {
	Reason Reason
	DID    string // as the frame names it; "" when the body did not decode
	Seq    int64
	Err    error
}

func (e *Error) Error() string { return "verify: " + string(e.Reason) + ": " + e.Err.Error() }

// Unwrap returns the underlying error.
func (e *Error) Unwrap() error { return e.Err }

// DeadLetterReason is the reason a frame rejected in ModeStrict carries in the dead-letter topic:
// "verify_" + Reason.
func (e *Error) DeadLetterReason() string { return "verify_" + string(e.Reason) }

// Passes reports whether the frame may be produced although it is not verified: ReasonUnverifiable and
// ReasonKeyUnavailable.
func (e *Error) Passes() bool {
	return e.Reason == ReasonUnverifiable || e.Reason == ReasonKeyUnavailable
}

// DefaultLookupTimeout is Config.LookupTimeout's default.
const DefaultLookupTimeout = 5 * time.Second

// Config configures a Verifier. The zero value of a field means its default.
type Config struct {
	// Mode is what Commit and Sync do with failures. Default ModeOff, in which they do nothing.
	Mode Mode
	// Keys is where signing keys come from, required unless Mode is ModeOff: atkafka's one identity resolver,
	// enrich.Enricher, so that verifying shares enrichment's document cache and PLC rate limit (tests may pass
	// an in-memory Keys).
	Keys Keys
	// LookupTimeout bounds one DID document fetch. Default DefaultLookupTimeout.
	LookupTimeout time.Duration
	// Logger receives, in ModeLog, one warning per failed frame (with seq and DID); in ModeStrict the caller
	// logs what it does with the frame. Default slog.Default().
	Logger *slog.Logger
	// Observer receives the counts of verified and failed frames; nil: none.
	Observer Observer
}

// Observer receives a Verifier's counts, as kgo's hooks do: the Verifier counts, the caller decides where the
// numbers go (atkafka's metrics.Verify sends them to Prometheus). Its types are Go's own, so an implementation
// need not import this package.
type Observer interface {
	// Verified counts one frame of kind ("commit", "sync") by result: "ok", a Reason the frame passes with
	// (ReasonUnverifiable, ReasonKeyUnavailable), or "failed".
	Verified(kind, result string)
	// Failed counts one frame that failed verification, by its Reason.
	Failed(reason string)
}

// nopObserver is the Observer of a Config without one.
type nopObserver struct{}

func (nopObserver) Verified(string, string) {}
func (nopObserver) Failed(string)           {}

// Verifier checks #commit and #sync frames. It is safe for concurrent use.
type Verifier struct {
	mode    Mode
	keys    Keys
	timeout time.Duration
	log     *slog.Logger
	obs     Observer
}

// New builds a Verifier. It does no I/O.
func New(cfg Config) (*Verifier, error) {
	mode, err := ParseMode(string(cfg.Mode))
	if err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	if cfg.Keys == nil && mode != ModeOff {
		return nil, errors.New("verify: no Keys to resolve signing keys with")
	}
	return &Verifier{mode: mode, keys: cfg.Keys, timeout: cmp.Or(cfg.LookupTimeout, DefaultLookupTimeout), log: log,
		obs: cmp.Or(cfg.Observer, Observer(nopObserver{}))}, nil
}

// Mode returns the Verifier's mode.
func (v *Verifier) Mode() Mode { return v.mode }

// Commit verifies the DAG-CBOR body of a #commit frame and applies the mode: it returns nil when the frame may
// be produced (verified, unverifiable, key unavailable, or any failure in ModeLog, counted and logged) and
// the failure's *Error in ModeStrict. In ModeOff it does nothing.
func (v *Verifier) Commit(ctx context.Context, body []byte) error {
	if v.mode == ModeOff {
		return nil
	}
	return v.judge("commit", v.CheckCommit(ctx, body))
}

// Sync is Commit for the body of a #sync frame, which carries only the signed commit: its signature and
// structure are checked.
func (v *Verifier) Sync(ctx context.Context, body []byte) error {
	if v.mode == ModeOff {
		return nil
	}
	return v.judge("sync", v.CheckSync(ctx, body))
}

// judge counts a verdict and turns it into what Commit and Sync return.
func (v *Verifier) judge(kind string, err error) error {
	if err == nil {
		v.obs.Verified(kind, "ok")
		return nil
	}
	var e *Error
	if !errors.As(err, &e) { // CheckCommit and CheckSync only return *Error
		e = &Error{Reason: ReasonBadStructure, Err: err}
	}
	if e.Passes() {
		v.obs.Verified(kind, string(e.Reason))
		return nil
	}
	v.obs.Verified(kind, "failed")
	v.obs.Failed(string(e.Reason))
	if v.mode == ModeStrict {
		return e // the caller dead-letters the frame, and logs that
	}
	v.log.Warn("frame failed Sync 1.1 verification; produced anyway (--verify-commits log)", "kind", kind,
		"reason", e.Reason, "seq", e.Seq, "did", e.DID, "err", e.Err)
	return nil
}

// CheckCommit verifies the DAG-CBOR body of a #commit frame whatever the mode, counting and logging nothing.
// It returns nil when the commit verified completely and an *Error otherwise.
func (v *Verifier) CheckCommit(ctx context.Context, body []byte) error {
	var msg comatproto.SyncSubscribeRepos_Commit
	if err := msg.UnmarshalCBOR(bytes.NewReader(body)); err != nil {
		return &Error{Reason: ReasonBadStructure, Err: fmt.Errorf("decode #commit: %w", err)}
	}
	fail := func(r Reason, err error) error { return &Error{Reason: r, DID: msg.Repo, Seq: msg.Seq, Err: err} }
	did, err := syntax.ParseDID(msg.Repo)
	if err != nil {
		return fail(ReasonBadStructure, err)
	}
	c, store, reason, err := loadCommit(msg.Blocks, cid.Cid(msg.Commit), msg.Repo, msg.Rev)
	if err != nil {
		return fail(reason, err)
	}
	unverifiable, err := checkOps(ctx, &msg, c, store)
	if err != nil {
		return fail(ReasonOpsMismatch, err)
	}
	if reason, err := v.checkSignature(ctx, did, c); err != nil {
		return fail(reason, err)
	}
	if unverifiable != "" {
		return fail(ReasonUnverifiable, errors.New(unverifiable))
	}
	return nil
}

// CheckSync verifies the DAG-CBOR body of a #sync frame whatever the mode, counting and logging nothing.
func (v *Verifier) CheckSync(ctx context.Context, body []byte) error {
	var msg comatproto.SyncSubscribeRepos_Sync
	if err := msg.UnmarshalCBOR(bytes.NewReader(body)); err != nil {
		return &Error{Reason: ReasonBadStructure, Err: fmt.Errorf("decode #sync: %w", err)}
	}
	fail := func(r Reason, err error) error { return &Error{Reason: r, DID: msg.Did, Seq: msg.Seq, Err: err} }
	did, err := syntax.ParseDID(msg.Did)
	if err != nil {
		return fail(ReasonBadStructure, err)
	}
	c, _, reason, err := loadCommit(msg.Blocks, cid.Undef, msg.Did, msg.Rev)
	if err != nil {
		return fail(reason, err)
	}
	if reason, err := v.checkSignature(ctx, did, c); err != nil {
		return fail(reason, err)
	}
	return nil
}

// carStore serves an MST's blocks from a verified CAR without copying them.
type carStore struct{ car *dagcbor.CAR }

func (s carStore) Get(_ context.Context, id cid.Cid) (blocks.Block, error) {
	data, ok := s.car.Block(id)
	if !ok {
		return nil, &ipld.ErrNotFound{Cid: id}
	}
	return blocks.NewBlockWithCid(data, id)
}

// loadCommit indexes a frame's CAR, checks every block's hash and returns its root commit, checked against what
// the frame says: its CID (unless want is cid.Undef), DID and rev.
func loadCommit(car []byte, want cid.Cid, did, rev string) (*repo.Commit, carStore, Reason, error) {
	idx, err := dagcbor.ParseCAR(car)
	if err != nil {
		return nil, carStore{}, ReasonBadStructure, err
	}
	if err := idx.Verify(); err != nil {
		return nil, carStore{}, ReasonBadBlock, err
	}
	if len(idx.Roots()) == 0 {
		return nil, carStore{}, ReasonBadStructure, repo.ErrNoRoot
	}
	root, err := idx.Roots()[0].CID()
	if err != nil {
		return nil, carStore{}, ReasonBadStructure, fmt.Errorf("CAR root: %w", err)
	}
	if want.Defined() && root != want {
		return nil, carStore{}, ReasonBadStructure, fmt.Errorf("CAR root %s is not the frame's commit %s", root, want)
	}
	data, ok := idx.Block(root)
	if !ok {
		return nil, carStore{}, ReasonBadStructure, repo.ErrNoCommit
	}
	var c repo.Commit
	if err := c.UnmarshalCBOR(bytes.NewReader(data)); err != nil {
		return nil, carStore{}, ReasonBadStructure, fmt.Errorf("commit block: %w", err)
	}
	if err := c.VerifyStructure(); err != nil {
		return nil, carStore{}, ReasonBadStructure, fmt.Errorf("commit block: %w", err)
	}
	if c.DID != did || c.Rev != rev {
		return nil, carStore{}, ReasonBadStructure, fmt.Errorf("commit block is for %s rev %s, the frame for %s rev %s", c.DID, c.Rev, did, rev)
	}
	return &c, carStore{idx}, "", nil
}

// checkOps checks the ops against the commit's MST, then inverts them when the frame allows it. It returns why
// the inversion was not possible ("" when it was done and matched).
func checkOps(ctx context.Context, msg *comatproto.SyncSubscribeRepos_Commit, c *repo.Commit, store carStore) (unverifiable string, err error) {
	if msg.TooBig {
		return "tooBig: the frame's blocks are incomplete", nil // deprecated; nothing in the CAR can be relied on
	}
	tree, err := mst.LoadTreeFromStore(ctx, store, c.Data)
	if err != nil {
		return "", fmt.Errorf("commit MST: %w", err)
	}
	ops := make([]repo.Operation, 0, len(msg.Ops))
	legacy := false
	for _, o := range msg.Ops {
		if o == nil {
			return "", errors.New("null op")
		}
		op := repo.Operation{Path: o.Path, Value: (*cid.Cid)(o.Cid), Prev: (*cid.Cid)(o.Prev)}
		switch o.Action {
		case "create":
			if op.Value == nil || op.Prev != nil {
				return "", fmt.Errorf("create of %s without cid or with prev", o.Path)
			}
		case "update", "delete":
			if (op.Value == nil) != (o.Action == "delete") {
				return "", fmt.Errorf("%s of %s with a wrong cid", o.Action, o.Path)
			}
			legacy = legacy || op.Prev == nil
		default:
			return "", fmt.Errorf("op action %q", o.Action)
		}
		if _, _, err := syntax.ParseRepoPath(o.Path); err != nil {
			return "", err
		}
		if err := repo.CheckOp(tree, &op); err != nil {
			return "", err
		}
		ops = append(ops, op)
	}
	switch {
	case msg.PrevData == nil:
		return "no prevData (a commit from before Sync 1.1)", nil
	case legacy:
		return "an update or delete without prev", nil
	}
	if ops, err = repo.NormalizeOps(ops); err != nil {
		return "", err
	}
	for i := range ops {
		if err := repo.InvertOp(tree, &ops[i]); err != nil {
			return "", err
		}
	}
	root, err := tree.RootCID()
	if err != nil {
		return "", fmt.Errorf("inverted MST: %w", err)
	}
	if prev := cid.Cid(*msg.PrevData); *root != prev {
		return "", fmt.Errorf("inverted ops give MST root %s, not prevData %s", root, prev)
	}
	return "", nil
}

// checkSignature verifies c's signature with the account's key. A failure with a cached document is retried
// once with a fresh one: the account may have rotated its key since the document was cached.
func (v *Verifier) checkSignature(ctx context.Context, did syntax.DID, c *repo.Commit) (Reason, error) {
	for attempt := 0; ; attempt++ {
		key, cached, reason, err := v.key(ctx, did)
		if err == nil {
			if err = c.VerifySignature(key); err == nil {
				return "", nil
			}
			reason, err = ReasonBadSignature, fmt.Errorf("signature: %w", err)
		}
		if reason == ReasonKeyUnavailable || !cached || attempt > 0 {
			return reason, err
		}
		v.keys.InvalidateIdentity(did.String())
	}
}

// key returns the account's signing key and whether it came from the cache.
func (v *Verifier) key(ctx context.Context, did syntax.DID) (atcrypto.PublicKey, bool, Reason, error) {
	ctx, cancel := context.WithTimeout(ctx, v.timeout)
	defer cancel()
	key, cached, err := v.keys.SigningKey(ctx, did.String())
	switch {
	case errors.Is(err, identity.ErrDIDNotFound) || errors.Is(err, identity.ErrKeyNotDeclared):
		// Definitive, unlike an outage: a forged DID must not pass strict mode as "unavailable".
		return nil, cached, ReasonNoKey, err
	case err != nil:
		return nil, cached, ReasonKeyUnavailable, err
	}
	return key, cached, "", nil
}
