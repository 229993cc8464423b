package enrich

import (
	"context"
	"fmt"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/identity"
)

// SigningKey returns did's atproto signing key, and whether its document came from the cache. It reads the same
// account cache as Metadata, through the same fetches and PLC rate limit, so that --verify-commits costs no
// second lookup per account and no second rate budget; InvalidateIdentity forgets the key with the document.
// ctx bounds the wait for a fetch. An error wrapping identity.ErrDIDNotFound or identity.ErrKeyNotDeclared is
// definitive (no such account, or no usable key in its document); any other is transient.
func (e *Enricher) SigningKey(ctx context.Context, did string) (atcrypto.PublicKey, bool, error) {
	acct, cached := e.accounts.get(ctx, did, 0)
	switch {
	case acct == nil:
		return nil, false, fmt.Errorf("DID document of %s: lookup did not finish in time", did)
	case acct.res == resNotFound:
		return nil, cached, fmt.Errorf("DID document of %s: %w", did, identity.ErrDIDNotFound)
	case acct.res != resOK:
		return nil, cached, fmt.Errorf("DID document of %s: lookup failed (%s)", did, resultLabels[acct.res])
	}
	key, err := acct.val.signingKey()
	if err != nil {
		return nil, cached, fmt.Errorf("DID document of %s: %w", did, err)
	}
	return key, cached, nil
}
