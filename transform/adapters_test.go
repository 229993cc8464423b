package transform

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/atkafka/atkafka/transform/enrich"
	"github.com/atkafka/atkafka/transform/format"
)

// TestEnrichmentObserve: an #identity event refreshes the cached profile as well as the document, since the
// profile view carries the handle; a profile record change refreshes the profile.
func TestEnrichmentObserve(t *testing.T) {
	const did = "did:plc:observetest000000000000"
	var handle atomic.Value
	handle.Store("old.example.com")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := handle.Load().(string)
		if strings.HasPrefix(r.URL.Path, "/xrpc/app.bsky.actor.getProfile") {
			fmt.Fprintf(w, `{"did":%q,"handle":%q}`, did, h)
			return
		}
		if r.URL.Path == "/"+did {
			fmt.Fprintf(w, `{"id":%q,"alsoKnownAs":["at://%s"]}`, did, h)
			return
		}
		http.NotFound(w, r)
	}))
	t.Cleanup(srv.Close)
	e, err := enrich.New(enrich.Config{PLCHost: srv.URL, APIHost: srv.URL, PLCRate: -1, APIRate: -1, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	en := Enrichment(e)
	metadata := func() string { return string(en.AppendMetadata(context.Background(), nil, did)) }

	if m := metadata(); !strings.Contains(m, `"profile":{"did":"`+did+`","handle":"old.example.com"}`) {
		t.Fatalf("metadata %s", m)
	}
	handle.Store("new.example.com")
	if m := metadata(); strings.Contains(m, "new.example.com") {
		t.Fatalf("metadata changed without an event: %s", m)
	}
	en.Observe(&format.Event{DID: did, Identity: &format.Identity{}})
	if m := metadata(); strings.Contains(m, "old.example.com") || !strings.Contains(m, `"handle":"new.example.com"}`) {
		t.Errorf("after #identity, the document and the profile should both carry the new handle: %s", m)
	}
}
