package labels

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/identity"
	"github.com/bluesky-social/indigo/atproto/syntax"
)

// Directory resolves what the labels source needs from DID documents.
type Directory interface {
	// LabelerEndpoint returns the #atproto_labeler service endpoint of did, read from its document now: a
	// labeler that moved is followed at the next connection.
	LabelerEndpoint(ctx context.Context, did string) (string, error)
	// LabelKey returns the #atproto_label key of did. refresh asks for the document anew (after a signature
	// failed: the labeler may have rotated its key) instead of a cached key. An error wrapping
	// identity.ErrDIDNotFound or identity.ErrKeyNotDeclared is definitive; any other may pass.
	LabelKey(ctx context.Context, did string, refresh bool) (atcrypto.PublicKey, error)
}

// errBadDID is a src that is not a DID: no key can ever be found for it.
var errBadDID = errors.New("not a DID")

// refreshAfter is how old a cached key must be before a failed signature fetches it again: a stream of forged
// or corrupt labels then costs one document fetch per interval, not one per label.
const refreshAfter = 10 * time.Second

// keyTTL is how long a label key is trusted without a failure prompting a refresh: rotations are rare, and a
// rotation shows itself as a failure anyway.
const keyTTL = time.Hour

// PLCDirectory resolves did:plc through a PLC directory and did:web over HTTPS (indigo's identity package),
// caching label keys.
type PLCDirectory struct {
	dir identity.BaseDirectory

	mu   sync.Mutex
	keys map[string]cachedKey
}

type cachedKey struct {
	key     atcrypto.PublicKey
	fetched time.Time
}

// NewDirectory returns a PLCDirectory over the PLC directory at plcURL (https://plc.directory).
func NewDirectory(plcURL string) *PLCDirectory {
	return &PLCDirectory{dir: identity.BaseDirectory{PLCURL: plcURL, SkipHandleVerification: true, UserAgent: "atkafka",
		HTTPClient: http.Client{Timeout: keyTimeout}}, keys: map[string]cachedKey{}}
}

func (d *PLCDirectory) resolve(ctx context.Context, did string) (*identity.Identity, error) {
	id, err := syntax.ParseDID(did)
	if err != nil {
		return nil, fmt.Errorf("%w %q: %v", errBadDID, did, err)
	}
	doc, err := d.dir.ResolveDID(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("resolving %s: %w", did, err)
	}
	ident := identity.ParseIdentity(doc)
	return &ident, nil
}

// LabelerEndpoint implements Directory.
func (d *PLCDirectory) LabelerEndpoint(ctx context.Context, did string) (string, error) {
	ident, err := d.resolve(ctx, did)
	if err != nil {
		return "", err
	}
	ep := ident.GetServiceEndpoint("atproto_labeler")
	if ep == "" {
		return "", fmt.Errorf("the DID document of %s names no #atproto_labeler service: it is not a labeler", did)
	}
	return ep, nil
}

// LabelKey implements Directory.
func (d *PLCDirectory) LabelKey(ctx context.Context, did string, refresh bool) (atcrypto.PublicKey, error) {
	d.mu.Lock()
	c, ok := d.keys[did]
	d.mu.Unlock()
	age := time.Since(c.fetched)
	if ok && age < keyTTL && (!refresh || age < refreshAfter) {
		return c.key, nil
	}
	ident, err := d.resolve(ctx, did)
	if err != nil {
		return nil, err
	}
	key, err := ident.GetPublicKey("atproto_label")
	if errors.Is(err, identity.ErrKeyNotDeclared) {
		return nil, fmt.Errorf("the DID document of %s declares no #atproto_label key: %w", did, err)
	}
	if err != nil {
		return nil, fmt.Errorf("the #atproto_label key of %s: %w", did, err)
	}
	d.mu.Lock()
	d.keys[did] = cachedKey{key: key, fetched: time.Now()}
	d.mu.Unlock()
	return key, nil
}
