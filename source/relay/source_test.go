package relay

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/atkafka/atkafka/metrics"
	"github.com/atkafka/atkafka/source/relay/relaytest"
)

// TestCorpusInMemory is the fast form of the Kafka conformance test: every oracle event exactly once.
func TestCorpusInMemory(t *testing.T) {
	srv := relaytest.NewServer(relaytest.CorpusFrames(t))
	defer srv.Close()
	var mem memSink
	cfg := testConfig(t, srv.URL(), &mem)
	cfg.StartCursor = "0"
	r := start(t, cfg)
	r.waitCommitted(t, srv.LastSeq(), 30*time.Second)
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	checkCorpus(t, mem.topic(""))
	if got := mem.topic("dead"); len(got) != 0 {
		t.Errorf("%d dead letters, want none", len(got))
	}
}

func TestFutureCursorStops(t *testing.T) {
	srv := relaytest.NewServer(relaytest.CorpusFrames(t))
	defer srv.Close()
	cfg := testConfig(t, srv.URL(), &memSink{})
	cfg.StartCursor = "99999999999"
	src, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- src.Run(t.Context()) }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "FutureCursor") || !strings.Contains(err.Error(), "--cursor live") ||
			!strings.Contains(err.Error(), "99999999999") {
			t.Fatalf("Run returned %v, want a FutureCursor error naming the cursor and --cursor live", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run kept retrying a future cursor")
	}
	if n := srv.Connections(); n != 1 {
		t.Errorf("%d connections, want 1: a future cursor must not be retried", n)
	}
}

func TestOutdatedCursorCounted(t *testing.T) {
	srv := relaytest.NewServer(relaytest.CorpusFrames(t))
	defer srv.Close()
	counter := metrics.SourceEvents.WithLabelValues(label, "outdated_cursor")
	before := testutil.ToFloat64(counter)
	var mem memSink
	cfg := testConfig(t, srv.URL(), &mem)
	cfg.StartCursor = "5"
	r := start(t, cfg)
	r.waitCommitted(t, srv.LastSeq(), 30*time.Second)
	if got := testutil.ToFloat64(counter) - before; got != 1 {
		t.Errorf("outdated_cursor counted %v times, want 1", got)
	}
	var info []record
	for _, rec := range mem.topic("") {
		if rec.Key == "<unknown>" {
			info = append(info, rec)
		}
	}
	if len(info) != 1 || decodeEvent(t, info[0].Value).Info.Name != "OutdatedCursor" {
		t.Errorf("info records %v, want one OutdatedCursor keyed <unknown>", info)
	}
}
