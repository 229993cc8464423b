package verify

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/identity"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"golang.org/x/time/rate"
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

// directoryKeys is the Verifier's own Keys: indigo's identity directory on the PLC, behind its cache.
type directoryKeys struct{ dir *identity.CacheDirectory }

func newDirectoryKeys(cfg Config) (directoryKeys, error) {
	host := strings.TrimRight(cmp.Or(cfg.PLCHost, DefaultPLCHost), "/")
	if u, err := url.Parse(host); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return directoryKeys{}, fmt.Errorf("verify: PLC host %q is not an http(s) URL", host)
	}
	// Handles play no part in signatures: skipping their verification saves a DNS or HTTPS lookup per DID.
	base := &identity.BaseDirectory{PLCURL: host, SkipHandleVerification: true, UserAgent: "atkafka"}
	if r := cmp.Or(cfg.PLCRate, DefaultPLCRate); r > 0 {
		base.PLCLimiter = rate.NewLimiter(rate.Limit(r), max(1, int(r/5)))
	}
	ttl := cmp.Or(cfg.CacheTTL, DefaultCacheTTL)
	// Handles are never verified here, so every entry has an invalid handle: the cache would expire such entries
	// after its invalid-handle TTL, which therefore has to be the document TTL.
	return directoryKeys{identity.NewCacheDirectory(base, cmp.Or(cfg.CacheSize, DefaultCacheSize), ttl,
		cmp.Or(cfg.ErrorTTL, DefaultErrorTTL), ttl)}, nil
}

func (d directoryKeys) SigningKey(ctx context.Context, did string) (atcrypto.PublicKey, bool, error) {
	id, err := syntax.ParseDID(did)
	if err != nil {
		return nil, false, fmt.Errorf("DID %q: %w", did, identity.ErrDIDNotFound)
	}
	ident, cached, err := d.dir.LookupDIDWithCacheState(ctx, id)
	if err != nil {
		return nil, cached, fmt.Errorf("DID document: %w", err)
	}
	key, err := ident.PublicKey()
	if err != nil && !errors.Is(err, identity.ErrKeyNotDeclared) {
		// A declared key that does not parse is as unusable as none.
		err = fmt.Errorf("%w: %w", identity.ErrKeyNotDeclared, err)
	}
	if err != nil {
		return nil, cached, fmt.Errorf("DID document: %w", err)
	}
	return key, cached, nil
}

func (d directoryKeys) InvalidateIdentity(did string) {
	if id, err := syntax.ParseDID(did); err == nil {
		_ = d.dir.Purge(context.Background(), id.AtIdentifier()) // cannot fail for a DID
	}
}
