package relay

import (
	"testing"
	"time"

	"github.com/atkafka/atkafka/sink/sinktest"
	"github.com/atkafka/atkafka/source/relay/relaytest"
	"github.com/atkafka/atkafka/transform"
	"github.com/atkafka/atkafka/transform/enrich"
	"github.com/atkafka/atkafka/transform/format"
	"github.com/atkafka/atkafka/transform/frame"
)

// heldLookups answers every account's lookup at once, except held's, which waits for release.
type heldLookups struct {
	held    string
	release chan struct{}
}

func (h *heldLookups) Resolve(did string, _ time.Time, _ *enrich.Metadata, done func()) bool {
	if did != h.held {
		return true
	}
	go func() { <-h.release; done() }()
	return false
}
func (h *heldLookups) InvalidateIdentity(string)    {}
func (h *heldLookups) InvalidateProfile(string)     {}
func (h *heldLookups) LookupTimeout() time.Duration { return time.Minute }

// TestSlowAccountHoldsOnlyItself: while one account's lookup hangs, every other account's frames are produced,
// the account's own frames wait (in order), and the cursor never passes the first of them: a crash then would
// read it again. Once the lookup answers, the rest follows and the cursor reaches the end.
func TestSlowAccountHoldsOnlyItself(t *testing.T) {
	frames := relaytest.CorpusFrames(t)
	srv := relaytest.NewServer(frames)
	defer srv.Close()
	// The account of a commit early in the capture: frames of others come before and after it.
	held, firstHeld := "", int64(0)
	records := map[string]int{} // per DID
	for _, msg := range frames {
		var f frame.Frame
		if err := f.Decode(msg); err != nil {
			t.Fatal(err)
		}
		seq, did := envelope(&f)
		n := 1
		if f.Kind == frame.KindCommit {
			n = len(f.Commit.Ops)
			if held == "" && seq > srv.FirstSeq()+4 {
				held, firstHeld = string(did), seq
			}
		}
		records[string(did)] += n
	}
	lookups := &heldLookups{held: held, release: make(chan struct{})}
	var mem sinktest.Sink
	cfg := testConfig(t, srv.URL(), &mem)
	cfg.StartCursor = "0"
	cfg.Pipeline = &transform.Pipeline{Formatter: format.NewFormatter(), Enricher: lookups, OmitMetadata: true}
	r := start(t, cfg)

	others := 0
	for did, n := range records {
		if did != held {
			others += n
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(mem.Records()) < others {
		if time.Now().After(deadline) {
			t.Fatalf("%d of the %d records of other accounts produced while one account's lookup hangs", len(mem.Records()), others)
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // room for a wrong record or cursor move to show
	for _, rec := range mem.Records() {
		if rec.Key == held {
			t.Fatalf("a record of the held account was produced before its lookup answered: %s", rec.Value)
		}
	}
	if c := r.committed.Load(); c >= firstHeld {
		t.Fatalf("cursor %d passed the held account's first frame %d", c, firstHeld)
	}

	close(lookups.release)
	r.waitCommitted(t, srv.LastSeq(), 30*time.Second)
	var seqs []int64
	for _, rec := range mem.Records() {
		if rec.Key == held {
			seqs = append(seqs, atoi(rec.Header(headerSeq)))
		}
	}
	if len(seqs) == 0 {
		t.Fatal("the held account's records never came")
	}
	for i := 1; i < len(seqs); i++ {
		if seqs[i] < seqs[i-1] {
			t.Errorf("the held account's records out of order: %v", seqs)
		}
	}
}

// TestShutdownWhileFramesWait: stopping the source while frames wait for their metadata lets them reach the
// workers first (they are ready by their deadline), then stops; nothing is sent to a closed queue.
func TestShutdownWhileFramesWait(t *testing.T) {
	frames := relaytest.CorpusFrames(t)
	srv := relaytest.NewServer(frames)
	defer srv.Close()
	var mem sinktest.Sink
	cfg := testConfig(t, srv.URL(), &mem)
	cfg.StartCursor = "0"
	slow := &slowLookups{delay: 300 * time.Millisecond}
	cfg.Pipeline = &transform.Pipeline{Formatter: format.NewFormatter(), Enricher: slow, OmitMetadata: true}
	r := start(t, cfg)
	deadline := time.Now().Add(10 * time.Second)
	for r.reads.Load() < int64(len(frames)) {
		if time.Now().After(deadline) {
			t.Fatal("frames not read")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := r.stop(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if r.committed.Load() != srv.LastSeq() {
		t.Errorf("cursor %d after a graceful stop, want %d: the waiting frames were delivered before it", r.committed.Load(), srv.LastSeq())
	}
}

// slowLookups answers every lookup after delay.
type slowLookups struct{ delay time.Duration }

func (s *slowLookups) Resolve(_ string, _ time.Time, _ *enrich.Metadata, done func()) bool {
	time.AfterFunc(s.delay, done)
	return false
}
func (s *slowLookups) InvalidateIdentity(string)    {}
func (s *slowLookups) InvalidateProfile(string)     {}
func (s *slowLookups) LookupTimeout() time.Duration { return time.Second }
