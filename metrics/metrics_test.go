package metrics

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/atkafka/atkafka/sink/kafka"
	"github.com/atkafka/atkafka/source/backfill"
	"github.com/atkafka/atkafka/source/labels"
	"github.com/atkafka/atkafka/source/ozone"
	"github.com/atkafka/atkafka/source/relay"
	"github.com/atkafka/atkafka/source/tap"
	"github.com/atkafka/atkafka/transform"
	"github.com/atkafka/atkafka/transform/enrich"
	"github.com/atkafka/atkafka/transform/verify"
)

// The Prometheus observers implement the libraries' interfaces.
var (
	_ enrich.Observer    = Enrich{}
	_ verify.Observer    = Verify{}
	_ transform.Observer = Pipeline{}
	_ tap.Observer       = Tap{}
	_ kafka.Observer     = Kafka{}
	_ relay.Observer     = Relay{}
	_ labels.Observer    = Labels{}
	_ backfill.Observer  = Backfill{}
	_ ozone.Observer     = Ozone{}
)

// Enrich counts document lookups in plc_requests and profile lookups in api_requests, under the labels the
// dashboard reads.
func TestEnrichObserver(t *testing.T) {
	doc, profile := PLCRequests.WithLabelValues("doc", "ok", "true"), APIRequests.WithLabelValues("profile", "error", "false")
	docBefore, profileBefore := testutil.ToFloat64(doc), testutil.ToFloat64(profile)
	Enrich{}.Lookups("doc", "ok", true)()
	Enrich{}.Lookups("profile", "error", false)()
	if d, p := testutil.ToFloat64(doc)-docBefore, testutil.ToFloat64(profile)-profileBefore; d != 1 || p != 1 {
		t.Errorf("plc_requests grew by %v, api_requests by %v; want 1 each", d, p)
	}
	Enrich{}.CacheSize("doc")(42)
	if n := testutil.ToFloat64(CacheSize.WithLabelValues("doc")); n != 42 {
		t.Errorf("cache_size{doc} = %v", n)
	}
	inFlight := Enrich{}.InFlight("plc")
	inFlight(1)
	if n := testutil.ToFloat64(EnrichInFlight.WithLabelValues("plc")); n != 1 {
		t.Errorf("enrich_lookups_in_flight{plc} = %v", n)
	}
	inFlight(-1)
	Enrich{}.Requests("plc", "ok")(50 * time.Millisecond)
	if n := testutil.CollectAndCount(EnrichLookups); n < 1 {
		t.Errorf("enrich_lookup_seconds has %d series", n)
	}
}

// Collections outside the allow-list fold into "other", and changing the list takes effect for counters
// HandledEvent already cached.
func TestHandledEventFolding(t *testing.T) {
	t.Cleanup(func() { SetCollectionLabels(DefaultCollectionLabels) })
	const action, nsid = "operation#create", "com.example.thing"
	other := HandledEvents.WithLabelValues(action, "other")
	before := testutil.ToFloat64(other)
	HandledEvent(action, nsid).Inc()
	if got := testutil.ToFloat64(other) - before; got != 1 {
		t.Fatalf("other grew by %v, want 1", got)
	}
	SetCollectionLabels([]string{"com.example.*"})
	HandledEvent(action, nsid).Inc()
	if got := testutil.ToFloat64(HandledEvents.WithLabelValues(action, nsid)); got != 1 {
		t.Fatalf("%s counted %v after allowing it, want 1", nsid, got)
	}
	if got := CollectionLabel("app.bsky.feed.post"); got != "other" {
		t.Fatalf("app.bsky.feed.post folds to %q once the list no longer allows it", got)
	}
}

// Cursor reads the gauges the sources set, for server.Advancing.
func TestCursorReadsGauges(t *testing.T) {
	const source = "metrics-test"
	defer CursorCurrent.DeleteLabelValues(source)
	defer CursorCommitted.DeleteLabelValues(source)
	CursorCurrent.WithLabelValues(source).Set(50)
	CursorCommitted.WithLabelValues(source).Set(42)
	if read, committed := Cursor(source)(); read != 50 || committed != 42 {
		t.Errorf("Cursor = %d, %d; want 50, 42", read, committed)
	}
}
