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
	plc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		doc, ok := docs[strings.TrimPrefix(r.URL.Path, "/")]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Write(doc)
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
		if got, want := e.AppendMetadata(ctx, []byte("x"), did), append([]byte("x"), m.AppendJSON(nil)...); string(got) != string(want) {
			t.Errorf("%s: AppendMetadata %s, want %s", did, got, want)
		}
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
		if r, want := e.PDS(ctx, did), filter.ResolvedEndpoint(wantPDS); r != want || r.Outcome != filter.Resolved {
			t.Errorf("%s: PDS %+v, want %+v", did, r, want)
		}
	}
}
