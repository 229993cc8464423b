package verify

import (
	"context"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
)

// Keys resolves accounts' atproto signing keys for a Verifier. When a signature fails with a cached key, the
// Verifier calls InvalidateIdentity and asks once more: the account may have rotated its key.
type Keys interface {
	// SigningKey returns did's key and whether it came from a cache. An error wrapping identity.ErrDIDNotFound or
	// identity.ErrKeyNotDeclared is definitive (no such account, no usable key); any other is transient.
	SigningKey(ctx context.Context, did string) (key atcrypto.PublicKey, cached bool, err error)
	// InvalidateIdentity forgets did's key, so that the next SigningKey fetches it.
	InvalidateIdentity(did string)
}
