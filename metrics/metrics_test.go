package metrics

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

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
