package relay

import (
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/atkafka/atkafka/cursor"
	"github.com/atkafka/atkafka/sink"
	"github.com/atkafka/atkafka/sink/sinktest"
	"github.com/atkafka/atkafka/source/relay/relaytest"
	"github.com/atkafka/atkafka/transform"
	"github.com/atkafka/atkafka/transform/enrich"
	"github.com/atkafka/atkafka/transform/format"
)

// TestCorpusInMemory is the fast form of the Kafka conformance test: every oracle event exactly once.
func TestCorpusInMemory(t *testing.T) {
	srv := relaytest.NewServer(relaytest.CorpusFrames(t))
	defer srv.Close()
	var mem sinktest.Sink
	cfg := testConfig(t, srv.URL(), &mem)
	cfg.StartCursor = "0"
	r := start(t, cfg)
	r.waitCommitted(t, srv.LastSeq(), 30*time.Second)
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	checkCorpus(t, mem.Topic(""))
	if got := mem.Topic("dead"); len(got) != 0 {
		t.Errorf("%d dead letters, want none", len(got))
	}
}

func TestFutureCursorStops(t *testing.T) {
	srv := relaytest.NewServer(relaytest.CorpusFrames(t))
	defer srv.Close()
	cfg := testConfig(t, srv.URL(), &sinktest.Sink{})
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
	var mem sinktest.Sink
	cfg := testConfig(t, srv.URL(), &mem)
	obs := &counter{}
	cfg.StartCursor, cfg.Observer = "5", obs
	r := start(t, cfg)
	r.waitCommitted(t, srv.LastSeq(), 30*time.Second)
	if got := obs.Get("source_event/outdated_cursor"); got != 1 {
		t.Errorf("outdated_cursor counted %d times, want 1", got)
	}
	var info []record
	for _, rec := range mem.Topic("") {
		if rec.Key == "<unknown>" {
			info = append(info, rec)
		}
	}
	if len(info) != 1 || decodeEvent(t, info[0].Value).Info.Name != "OutdatedCursor" {
		t.Errorf("info records %v, want one OutdatedCursor keyed <unknown>", info)
	}
}

// TestRefusedRecordsDeadLettered: a message Kafka refuses for good is retried as a dead letter holding the raw
// frame, and the cursor moves on only once that is acknowledged.
func TestRefusedRecordsDeadLettered(t *testing.T) {
	frames := relaytest.CorpusFrames(t)
	srv := relaytest.NewServer(frames)
	defer srv.Close()
	refused := itoa(srv.FirstSeq() + 10)
	mem := &sinktest.Sink{Fail: func(msg *sink.Message) error {
		for _, r := range msg.Records {
			if r.Topic == "" && headerValue(r.Headers, "seq") == refused {
				return errors.New("MESSAGE_TOO_LARGE")
			}
		}
		return nil
	}}
	cfg := testConfig(t, srv.URL(), mem)
	cfg.StartCursor = "0"
	r := start(t, cfg)
	r.waitCommitted(t, srv.LastSeq(), 30*time.Second)
	dead := mem.Topic("dead")
	if len(dead) != 1 || dead[0].Header("reason") != "produce_failed" || dead[0].Header("seq") != refused {
		t.Fatalf("dead letters %v, want one produce_failed for seq %s", dead, refused)
	}
	if !r.Connected() || time.Since(r.LastProgress()) > time.Minute {
		t.Errorf("Connected %v, LastProgress %v", r.Connected(), r.LastProgress())
	}
}

// TestRefusedDeadLetterStops: when the dead letter is refused too, Run stops with an error and the saved cursor
// stays before the frame, so that a restart retries it.
func TestRefusedDeadLetterStops(t *testing.T) {
	frames := relaytest.CorpusFrames(t)
	srv := relaytest.NewServer(frames)
	defer srv.Close()
	refused := srv.FirstSeq() + 10
	mem := &sinktest.Sink{Fail: func(msg *sink.Message) error {
		for _, r := range msg.Records {
			if headerValue(r.Headers, "seq") == itoa(refused) {
				return errors.New("TOPIC_AUTHORIZATION_FAILED")
			}
		}
		return nil
	}}
	cfg := testConfig(t, srv.URL(), mem)
	cfg.StartCursor = "0"
	src, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	err = src.Run(t.Context())
	if err == nil || !strings.Contains(err.Error(), "TOPIC_AUTHORIZATION_FAILED") || !strings.Contains(err.Error(), itoa(refused)) {
		t.Fatalf("Run returned %v, want the refusal of seq %d", err, refused)
	}
	saved, _, _ := cursor.NewFile(src.CursorPath()).Load()
	if atoi(saved) >= refused {
		t.Errorf("cursor saved at %s, at or past the refused frame %d", saved, refused)
	}
}

// TestFilters: filtered accounts and collections produce no records, but their frames still move the cursor,
// and the enricher hears of the #identity frame.
func TestFilters(t *testing.T) {
	frames := relaytest.CorpusFrames(t)
	srv := relaytest.NewServer(frames)
	defer srv.Close()
	var mem sinktest.Sink
	cfg := testConfig(t, srv.URL(), &mem)
	cfg.StartCursor = "0"
	enricher := &observer{}
	cfg.Pipeline = &transform.Pipeline{Formatter: format.NewFormatter(), Enricher: enricher,
		Accounts:    accountFunc(func(did string) bool { return did != "did:plc:wq4aajammjtxdomz3e23667t" }),
		Collections: collectionFunc(func(nsid string) bool { return nsid != "app.bsky.feed.like" })}
	r := start(t, cfg)
	r.waitCommitted(t, srv.LastSeq(), 30*time.Second)
	likes := 0
	for _, rec := range mem.Topic("") {
		e := decodeEvent(t, rec.Value)
		if e.DID == "did:plc:wq4aajammjtxdomz3e23667t" {
			t.Errorf("filtered account produced %s", e.key())
		}
		if e.Operation != nil && e.Operation.Collection == "app.bsky.feed.like" {
			likes++
		}
		if !strings.Contains(string(rec.Value), `"eventMetadata":{"accountAge":-1}`) {
			t.Errorf("no eventMetadata in %s", rec.Value)
		}
	}
	if likes != 0 {
		t.Errorf("%d likes produced", likes)
	}
	if enricher.identities.Load() != 1 {
		t.Errorf("%d #identity invalidations, want 1", enricher.identities.Load())
	}
	if len(mem.Messages()) != len(frames) {
		t.Errorf("%d messages for %d frames: filtered frames must still be sent", len(mem.Messages()), len(frames))
	}
}

type accountFunc func(string) bool

func (f accountFunc) KeepAccount(did string, _ *enrich.Metadata) bool { return f(did) }

type collectionFunc func(string) bool

func (f collectionFunc) KeepCollection(nsid string) bool { return f(nsid) }

// observer is an enricher that knows nothing (every event is ready at once, without metadata) and counts the
// identity changes it is told of.
type observer struct{ identities atomic.Int64 }

func (o *observer) Resolve(string, time.Time, *enrich.Metadata, func()) bool { return true }
func (o *observer) InvalidateIdentity(string)                                { o.identities.Add(1) }
func (o *observer) InvalidateProfile(string)                                 {}
func (o *observer) LookupTimeout() time.Duration                             { return time.Second }

func headerValue(hs []sink.Header, key string) string {
	for _, h := range hs {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}
