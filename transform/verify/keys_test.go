package verify

import (
	"context"
	"encoding/json"
	"log/slog"
	"testing"

	"github.com/bluesky-social/indigo/atproto/atcrypto"

	"github.com/atkafka/atkafka/transform/enrich"
)

// enricherVerifier returns a strict Verifier whose keys come from an Enricher on plc, as atkafka wires them when
// it enriches, and that Enricher.
func enricherVerifier(t *testing.T, plc *fakePLC) (*Verifier, *enrich.Enricher) {
	t.Helper()
	e := newEnricher(t, plc.URL)
	v, err := New(Config{Mode: ModeStrict, Keys: e, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return v, e
}

// TestEnricherKeys: with its keys from enrichment's document cache, the Verifier needs no request of its own,
// follows a key rotation with one refetch, and tells an unknown DID (no_key) from a PLC outage (key_unavailable).
func TestEnricherKeys(t *testing.T) {
	ctx := context.Background()
	a, plc, _ := setup(t)
	v, e := enricherVerifier(t, plc)

	e.Metadata(ctx, testDID) // an event of the account was enriched: its document is cached
	before := plc.requests
	if err := v.CheckCommit(ctx, body(t, a.commit(nil, change{text: "one"}))); err != nil {
		t.Fatal(err)
	}
	if plc.requests != before {
		t.Errorf("%d PLC requests for a document enrichment had cached, want 0", plc.requests-before)
	}

	rotated, err := atcrypto.GeneratePrivateKeyK256()
	if err != nil {
		t.Fatal(err)
	}
	a.key = rotated
	plc.set(testDID, didDoc(testDID, mustPublic(t, rotated)))
	if err := v.CheckCommit(ctx, body(t, a.commit(nil, change{text: "rotated"}))); err != nil {
		t.Fatalf("commit signed with the rotated key: %v", err)
	}
	if plc.requests != before+1 {
		t.Errorf("%d PLC requests for the rotation, want 1", plc.requests-before)
	}
	if m := e.Metadata(ctx, testDID); !json.Valid(m.AppendJSON(nil)) {
		t.Errorf("metadata after the rotation: %s", m.AppendJSON(nil))
	}

	msg := body(t, a.commit(nil, change{text: "x"}))
	unknown, _ := enricherVerifier(t, newPLC(t, map[string]json.RawMessage{}))
	if got := reasonOf(t, unknown.CheckCommit(ctx, msg)); got != ReasonNoKey {
		t.Errorf("unknown DID: reason %q, want %q", got, ReasonNoKey)
	}
	downPLC := newPLC(t, map[string]json.RawMessage{testDID: didDoc(testDID, mustPublic(t, rotated))})
	downPLC.setDown(true)
	down, _ := enricherVerifier(t, downPLC)
	if got := reasonOf(t, down.CheckCommit(ctx, msg)); got != ReasonKeyUnavailable {
		t.Errorf("PLC down: reason %q, want %q", got, ReasonKeyUnavailable)
	}
	noKey := newPLC(t, map[string]json.RawMessage{testDID: json.RawMessage(`{"id":"` + testDID + `","alsoKnownAs":[]}`)})
	keyless, _ := enricherVerifier(t, noKey)
	if got := reasonOf(t, keyless.CheckCommit(ctx, msg)); got != ReasonNoKey {
		t.Errorf("document without a key: reason %q, want %q", got, ReasonNoKey)
	}
}
