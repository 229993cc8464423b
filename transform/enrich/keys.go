package enrich

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/identity"
)

// SigningKey returns did's atproto signing key, and whether its document came from the cache. It reads the same
// document cache as Metadata, through the same fetches and PLC rate limit, so that --verify-commits costs no
// second lookup per account and no second rate budget; InvalidateIdentity forgets the key with the document.
// ctx bounds the wait for a fetch. An error wrapping identity.ErrDIDNotFound or identity.ErrKeyNotDeclared is
// definitive (no such account, or no usable key in its document); any other is transient.
func (e *Enricher) SigningKey(ctx context.Context, did string) (atcrypto.PublicKey, bool, error) {
	doc, cached := e.docs.get(ctx, did, 0)
	switch {
	case doc == nil:
		return nil, false, fmt.Errorf("DID document of %s: lookup did not finish in time", did)
	case doc.res == resNotFound:
		return nil, cached, fmt.Errorf("DID document of %s: %w", did, identity.ErrDIDNotFound)
	case doc.res != resOK:
		return nil, cached, fmt.Errorf("DID document of %s: lookup failed (%s)", did, resultLabels[doc.res])
	}
	key, err := doc.val.signingKey()
	if err != nil {
		return nil, cached, fmt.Errorf("DID document of %s: %w", did, err)
	}
	return key, cached, nil
}

// signingKey parses the document's key once; most documents are only ever rendered, never asked for a key.
func (d *docInfo) signingKey() (atcrypto.PublicKey, error) {
	d.keyOnce.Do(func() {
		var doc identity.DIDDocument
		if err := json.Unmarshal(d.doc, &doc); err != nil {
			d.keyErr = fmt.Errorf("%w: %w", identity.ErrKeyNotDeclared, err)
			return
		}
		ident := identity.ParseIdentity(&doc)
		d.key, d.keyErr = ident.PublicKey()
		if d.keyErr != nil && !errors.Is(d.keyErr, identity.ErrKeyNotDeclared) {
			// A declared key that does not parse is as unusable as none.
			d.keyErr = fmt.Errorf("%w: %w", identity.ErrKeyNotDeclared, d.keyErr)
		}
	})
	return d.key, d.keyErr
}
