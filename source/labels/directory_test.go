package labels_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/identity"

	"github.com/atkafka/atkafka/source/labels"
)

// identities is an in-memory labels.Identities, a mock directory: keys and services by DID and id.
type identities struct {
	keys        map[string]atcrypto.PublicKey // "did#id"
	services    map[string]string             // "did#id"
	invalidated map[string]int
}

func (m *identities) PublicKey(_ context.Context, did, id string) (atcrypto.PublicKey, bool, error) {
	if k, ok := m.keys[did+"#"+id]; ok {
		return k, true, nil
	}
	return nil, false, fmt.Errorf("DID document of %s: %w", did, identity.ErrKeyNotDeclared)
}

func (m *identities) ServiceEndpoint(_ context.Context, did, id string) (string, bool, error) {
	return m.services[did+"#"+id], true, nil
}

func (m *identities) InvalidateIdentity(did string) { m.invalidated[did]++ }

// The Directory reads labelers' endpoints afresh at each connection and their #atproto_label keys from the
// identity resolver, and a stream of failing signatures refetches a document once per interval, not per label.
func TestDirectoryOverIdentities(t *testing.T) {
	ctx := context.Background()
	priv, err := atcrypto.GeneratePrivateKeyK256()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := priv.PublicKey()
	const mod = "did:plc:labelera"
	ids := &identities{keys: map[string]atcrypto.PublicKey{mod + "#atproto_label": pub},
		services: map[string]string{mod + "#atproto_labeler": "https://mod.example"}, invalidated: map[string]int{}}
	dir := labels.NewDirectory(ids)

	if ep, err := dir.LabelerEndpoint(ctx, mod); err != nil || ep != "https://mod.example" || ids.invalidated[mod] != 1 {
		t.Errorf("endpoint %q, %v, %d invalidations; want https://mod.example, fetched afresh", ep, err, ids.invalidated[mod])
	}
	if _, err := dir.LabelerEndpoint(ctx, "did:plc:notalabeler"); err == nil {
		t.Error("a DID without #atproto_labeler resolved")
	}
	if _, err := dir.LabelerEndpoint(ctx, "nonsense"); err == nil {
		t.Error("a non-DID resolved")
	}

	for _, refresh := range []bool{false, true, true, true} {
		if k, err := dir.LabelKey(ctx, mod, refresh); err != nil || k.DIDKey() != pub.DIDKey() {
			t.Fatalf("label key (refresh %v): %v, %v", refresh, k, err)
		}
	}
	if n := ids.invalidated[mod]; n != 2 {
		t.Errorf("%d invalidations after three refreshes in a row, want 1 (plus the endpoint's)", n-1)
	}
	if _, err := dir.LabelKey(ctx, "did:plc:nokey", false); !errors.Is(err, identity.ErrKeyNotDeclared) {
		t.Errorf("no key: %v, want ErrKeyNotDeclared (definitive)", err)
	}
}
