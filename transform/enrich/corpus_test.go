package enrich

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/bluesky-social/indigo/atproto/identity"

	"github.com/atkafka/atkafka/testenv"
	"github.com/atkafka/atkafka/transform/filter"
)

// loadCorpusDocs reads the DID documents plc.directory served for the 148 DIDs of the relay capture.
func loadCorpusDocs(t testing.TB) map[string]json.RawMessage { return testenv.CorpusDIDDocs(t) }

// TestCorpusDocuments serves the real documents from a local PLC and checks every DID's metadata against
// indigo's reading of the same document, an independent implementation.
func TestCorpusDocuments(t *testing.T) {
	docs := loadCorpusDocs(t)
	if len(docs) != 148 {
		t.Fatalf("corpus has %d documents, want 148", len(docs))
	}
	// The PLC serves each account's audit log, made of the operation the served document derives from: what is
	// checked is that atkafka renders, from the one request it makes, the document plc.directory served.
	plc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		did, _ := strings.CutSuffix(strings.TrimPrefix(r.URL.Path, "/"), "/log/audit")
		doc, ok := docs[did]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Write(testenv.PLCAuditLog(did, doc, defaultCreated))
	}))
	defer plc.Close()
	e := newEnricher(t, Config{PLCHost: plc.URL})
	ctx := context.Background()
	for did, raw := range docs {
		var doc identity.DIDDocument
		if err := json.Unmarshal(raw, &doc); err != nil {
			t.Fatalf("%s: %v", did, err)
		}
		ident := identity.ParseIdentity(&doc)
		wantPDS := ident.PDSEndpoint()
		wantHandle, err := ident.DeclaredHandle()
		if wantPDS == "" || err != nil {
			t.Errorf("%s: corpus document without PDS or handle (%v)", did, err)
		}

		m := e.Metadata(ctx, did)
		if m.PDSHost() != wantPDS {
			t.Errorf("%s: pdsHost %q, want %q", did, m.PDSHost(), wantPDS)
		}
		if m.Handle() != wantHandle.String() {
			t.Errorf("%s: handle %q, want %q", did, m.Handle(), wantHandle)
		}
		var got struct {
			DIDDocument json.RawMessage `json:"didDocument"`
			PDSHost     string          `json:"pdsHost"`
			Handle      string          `json:"handle"`
		}
		if err := json.Unmarshal(m.AppendJSON(nil), &got); err != nil {
			t.Fatalf("%s: %v", did, err)
		}
		if got.PDSHost != wantPDS || got.Handle != wantHandle.String() || !testenv.JSONEqual(got.DIDDocument, raw) {
			t.Errorf("%s: rendered %s", did, m.AppendJSON(nil))
		}
		if r, want := e.Metadata(ctx, did).PDS(), filter.ResolvedEndpoint(wantPDS); r != want || r.Outcome != filter.Resolved {
			t.Errorf("%s: PDS %+v, want %+v", did, r, want)
		}
	}
}
