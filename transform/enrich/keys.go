package enrich

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/identity"
)

// SigningKey returns did's atproto signing key (verification method #atproto), and whether its document came
// from the cache: verify.Keys, so that --verify-commits costs no second lookup per account and no second rate
// budget. See PublicKey.
func (e *Enricher) SigningKey(ctx context.Context, did string) (atcrypto.PublicKey, bool, error) {
	return e.PublicKey(ctx, did, "atproto")
}

// PublicKey returns the key of did's verification method #id ("atproto" signs repositories, "atproto_label"
// labels), and whether its document came from the cache. It reads the same account cache as Metadata, through
// the same fetches and PLC rate limit: the enricher is atkafka's one identity resolver. InvalidateIdentity
// forgets the keys with the document. ctx bounds the wait for a fetch. An error wrapping identity.ErrDIDNotFound
// or identity.ErrKeyNotDeclared is definitive (no such account, or no usable key in its document); any other is
// transient.
func (e *Enricher) PublicKey(ctx context.Context, did, id string) (atcrypto.PublicKey, bool, error) {
	acct, cached, err := e.account(ctx, did)
	if err != nil {
		return nil, cached, err
	}
	key, err := acct.publicKey(id)
	if err != nil {
		return nil, cached, fmt.Errorf("DID document of %s: #%s key: %w", did, id, err)
	}
	return key, cached, nil
}

// ServiceEndpoint returns the endpoint of did's service #id ("atproto_pds", "atproto_labeler"), "" when the
// document names none (or one that is no URL), and whether the document came from the cache. Errors are
// PublicKey's.
func (e *Enricher) ServiceEndpoint(ctx context.Context, did, id string) (string, bool, error) {
	acct, cached, err := e.account(ctx, did)
	if err != nil {
		return "", cached, err
	}
	return acct.serviceEndpoint(id), cached, nil
}

// account returns did's cached or fetched account, or why there is none.
func (e *Enricher) account(ctx context.Context, did string) (*account, bool, error) {
	acct, cached := e.accounts.get(ctx, did, 0)
	switch {
	case acct == nil:
		return nil, false, fmt.Errorf("DID document of %s: lookup did not finish in time", did)
	case acct.res == resNotFound:
		return nil, cached, fmt.Errorf("DID document of %s: %w", did, identity.ErrDIDNotFound)
	case acct.res != resOK:
		return nil, cached, fmt.Errorf("DID document of %s: lookup failed (%s)", did, resultLabels[acct.res])
	}
	return acct.val, cached, nil
}

// parsedKey is a verification method's key, parsed on first use; an account keeps the few it was asked for in
// a list (most accounts are only ever rendered, a labeler's is asked for #atproto_label).
type parsedKey struct {
	id   string
	key  atcrypto.PublicKey
	err  error
	next *parsedKey
}

// publicKey returns the key of the verification method #id, parsed once.
func (a *account) publicKey(id string) (atcrypto.PublicKey, error) {
	head := a.keys.Load()
	for k := head; k != nil; k = k.next {
		if k.id == id {
			return k.key, k.err
		}
	}
	k := &parsedKey{id: id, next: head}
	if a.plc != nil {
		if mb := a.plc.verificationMethod(id); mb == "" {
			k.err = identity.ErrKeyNotDeclared
		} else {
			k.key, k.err = atcrypto.ParsePublicMultibase(mb)
		}
	} else if ident, err := a.web.identity(); err != nil {
		k.err = err
	} else {
		k.key, k.err = ident.GetPublicKey(id)
	}
	if k.err != nil && !errors.Is(k.err, identity.ErrKeyNotDeclared) {
		// A declared key that does not parse is as unusable as none.
		k.err = fmt.Errorf("%w: %w", identity.ErrKeyNotDeclared, k.err)
	}
	// A racing first use loses nothing but this parse: the loser's key is parsed again when next asked for. The
	// ids come from callers' code ("atproto", "atproto_label"), never from data, so the list stays short.
	a.keys.CompareAndSwap(head, k)
	return k.key, k.err
}

// serviceEndpoint returns the endpoint of the service #id, or "" when there is none or it is no URL (indigo's
// reading).
func (a *account) serviceEndpoint(id string) string {
	if a.plc != nil {
		return a.plc.serviceEndpoint(id)
	}
	ident, err := a.web.identity()
	if err != nil {
		return ""
	}
	return ident.GetServiceEndpoint(id)
}

// identity parses the kept did:web document, as indigo reads it: did:web is rare, so it is parsed per call.
func (w *webDoc) identity() (*identity.Identity, error) {
	var doc identity.DIDDocument
	if err := json.Unmarshal(w.doc, &doc); err != nil {
		return nil, err
	}
	ident := identity.ParseIdentity(&doc)
	return &ident, nil
}
