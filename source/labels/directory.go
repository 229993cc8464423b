package labels

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
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

// Identities is the identity resolver a Directory reads: enrich.Enricher, atkafka's one account cache (one PLC
// request per account, one --plc-rate-limit), which keeps every verification method and service of a document.
type Identities interface {
	// PublicKey returns the key of did's verification method #id; errors as Directory.LabelKey's.
	PublicKey(ctx context.Context, did, id string) (key atcrypto.PublicKey, cached bool, err error)
	// ServiceEndpoint returns the endpoint of did's service #id, "" when the document names none.
	ServiceEndpoint(ctx context.Context, did, id string) (endpoint string, cached bool, err error)
	// InvalidateIdentity forgets did's document, so that the next call fetches it.
	InvalidateIdentity(did string)
}

// errBadDID is a src that is not a DID: no key can ever be found for it.
var errBadDID = errors.New("not a DID")

// refreshAfter is how long after a document was fetched again for a failed signature a failure may fetch it
// once more: a stream of forged or corrupt labels then costs one document fetch per interval, not one per label.
const refreshAfter = 10 * time.Second

// maxRefreshed bounds the refresh times kept; a labeler signs with its own DID, so there are few.
const maxRefreshed = 1024

// identityDirectory is the Directory over Identities.
type identityDirectory struct {
	ids Identities

	mu        sync.Mutex
	refreshed map[string]time.Time // when a failure last fetched a DID's document again
}

// NewDirectory returns the Directory that resolves through ids. Keys live as long as ids caches documents
// (--did-cache-ttl): rotations are rare, and a rotation shows itself as a failure anyway.
func NewDirectory(ids Identities) Directory {
	return &identityDirectory{ids: ids, refreshed: map[string]time.Time{}}
}

// LabelerEndpoint implements Directory.
func (d *identityDirectory) LabelerEndpoint(ctx context.Context, did string) (string, error) {
	if _, err := syntax.ParseDID(did); err != nil {
		return "", fmt.Errorf("%w %q: %v", errBadDID, did, err)
	}
	d.ids.InvalidateIdentity(did) // connections are rare; a stale endpoint would follow no move
	ep, _, err := d.ids.ServiceEndpoint(ctx, did, "atproto_labeler")
	if err != nil {
		return "", fmt.Errorf("resolving %s: %w", did, err)
	}
	if ep == "" {
		return "", fmt.Errorf("the DID document of %s names no #atproto_labeler service: it is not a labeler", did)
	}
	return ep, nil
}

// LabelKey implements Directory.
func (d *identityDirectory) LabelKey(ctx context.Context, did string, refresh bool) (atcrypto.PublicKey, error) {
	if _, err := syntax.ParseDID(did); err != nil {
		return nil, fmt.Errorf("%w %q: %v", errBadDID, did, err)
	}
	if refresh {
		d.mu.Lock()
		if time.Since(d.refreshed[did]) >= refreshAfter {
			if len(d.refreshed) >= maxRefreshed { // srcs come from the stream: keep their number bounded
				clear(d.refreshed)
			}
			d.refreshed[did] = time.Now()
			d.ids.InvalidateIdentity(did)
		}
		d.mu.Unlock()
	}
	key, _, err := d.ids.PublicKey(ctx, did, "atproto_label")
	if err != nil {
		return nil, fmt.Errorf("the #atproto_label key of %s: %w", did, err)
	}
	return key, nil
}
