package verify

import (
	"bytes"
	"context"
	"fmt"

	"github.com/bluesky-social/indigo/atproto/repo"
	"github.com/bluesky-social/indigo/atproto/syntax"

	"github.com/atkafka/atkafka/transform/dagcbor"
)

// RepoCommit returns the signed commit at the root of a whole repository's CAR (com.atproto.sync.getRepo),
// checked to be well formed and to belong to did. Its signature is Verifier.Repo's business: a backfill reads
// the commit (its rev and MST root) whether or not it verifies it.
func RepoCommit(car *dagcbor.CAR, did string) (*repo.Commit, error) {
	if len(car.Roots()) == 0 {
		return nil, repo.ErrNoRoot
	}
	data, ok := car.BlockByLink(car.Roots()[0])
	if !ok {
		return nil, repo.ErrNoCommit
	}
	var c repo.Commit
	if err := c.UnmarshalCBOR(bytes.NewReader(data)); err != nil {
		return nil, fmt.Errorf("commit block: %w", err)
	}
	if err := c.VerifyStructure(); err != nil {
		return nil, fmt.Errorf("commit block: %w", err)
	}
	if c.DID != did {
		return nil, fmt.Errorf("commit block is for %s, not %s", c.DID, did)
	}
	return &c, nil
}

// Repo checks the signature of a repository's commit (from RepoCommit) with the account's key and applies the
// mode as Commit does: nil when the repository may be produced, the failure's *Error in ModeStrict.
func (v *Verifier) Repo(ctx context.Context, c *repo.Commit) error {
	if v.mode == ModeOff {
		return nil
	}
	did, err := syntax.ParseDID(c.DID)
	if err != nil {
		return v.judge("repo", &Error{Reason: ReasonBadStructure, DID: c.DID, Err: err})
	}
	if reason, err := v.checkSignature(ctx, did, c); err != nil {
		return v.judge("repo", &Error{Reason: reason, DID: c.DID, Err: err})
	}
	return v.judge("repo", nil)
}
