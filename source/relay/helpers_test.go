package relay

import (
	"context"
	"encoding/json"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/atkafka/atkafka/schema"
	"github.com/atkafka/atkafka/schema/schematest"
	"github.com/atkafka/atkafka/sink"
	"github.com/atkafka/atkafka/sink/sinktest"
	"github.com/atkafka/atkafka/testenv"
	"github.com/atkafka/atkafka/transform"
	"github.com/atkafka/atkafka/transform/format"
	"github.com/atkafka/atkafka/transform/frame"
)

// record is a produced record as tests see it, copied out of the source's buffers.
type record = sinktest.Record

func copyRecord(topic string, key, value []byte, headers []sink.Header) record {
	return sinktest.Copy(sink.Record{Topic: topic, Key: key, Value: value, Headers: headers})
}

func testLogger(t testing.TB) *slog.Logger { return testenv.Logger(t, slog.LevelInfo) }

func standardPipeline() *transform.Pipeline {
	return &transform.Pipeline{Formatter: format.NewFormatter()}
}

// testConfig is a Config for host with a fresh data dir and test defaults.
func testConfig(t testing.TB, host string, s sink.Sink) Config {
	return Config{Host: host, DataDir: t.TempDir(), Sink: s, Pipeline: standardPipeline(), DeadLetterTopic: "dead",
		Logger: testLogger(t), ShutdownTimeout: 10 * time.Second}
}

// running is a Source started by start.
type running struct {
	*Source
	cancel context.CancelFunc
	done   chan error
}

// start runs a Source for cfg until the test ends or stop is called.
func start(t testing.TB, cfg Config) *running {
	t.Helper()
	src, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{Source: src, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- src.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop cancels the source and returns Run's result (once; later calls return nil).
func (r *running) stop(t testing.TB) error {
	t.Helper()
	r.cancel()
	select {
	case err, ok := <-r.done:
		if ok {
			close(r.done)
		}
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return within 30s of cancellation")
	}
	return nil
}

// waitCommitted waits until the committed cursor reaches seq.
func (r *running) waitCommitted(t testing.TB, seq int64, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for r.committed.Load() < seq {
		if time.Now().After(deadline) {
			t.Fatalf("committed cursor %d, want %d within %s", r.committed.Load(), seq, timeout)
		}
		select {
		case err := <-r.done:
			t.Fatalf("Run returned early: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// expected is one line of the corpus oracle, expected_jetstream_v1.jsonl.
type expected struct {
	DID    string `json:"did"`
	Kind   string `json:"kind"`
	Commit *struct {
		Rev        string          `json:"rev"`
		Operation  string          `json:"operation"`
		Collection string          `json:"collection"`
		Rkey       string          `json:"rkey"`
		CID        string          `json:"cid"`
		Record     json.RawMessage `json:"record"`
	} `json:"commit"`
	Identity *struct {
		Seq int64 `json:"seq"`
	} `json:"identity"`
	Account *struct {
		Active bool   `json:"active"`
		Seq    int64  `json:"seq"`
		Status string `json:"status"`
	} `json:"account"`
}

// key identifies an event across the oracle and our records.
func (e expected) key() string {
	if e.Commit != nil {
		return strings.Join([]string{e.DID, e.Commit.Operation, e.Commit.Collection, e.Commit.Rkey}, " ")
	}
	return e.DID + " " + e.Kind
}

func loadExpected(t testing.TB) []expected { return testenv.CorpusExpected[expected](t) }

// event is a standard-format record value, as the output schema's Go type decodes it, with the tests' keys.
type event struct{ schema.Event }

func (e event) key() string {
	switch {
	case e.Operation != nil:
		return strings.Join([]string{e.DID, e.Operation.Action, e.Operation.Collection, e.Operation.Rkey}, " ")
	case e.Identity != nil:
		return e.DID + " identity"
	case e.Account != nil:
		return e.DID + " account"
	case e.Sync != nil:
		return e.DID + " sync"
	case e.Info != nil:
		return "info " + e.Info.Name
	}
	return "unknown"
}

// actionName is the Osprey action name the event must carry.
func (e event) actionName() string {
	switch {
	case e.Operation != nil:
		return "operation#" + e.Operation.Action
	case e.Identity != nil:
		return "identity"
	case e.Account != nil:
		return "account"
	case e.Sync != nil:
		return "sync"
	case e.Info != nil:
		return "info"
	}
	return "unknown"
}

// decodeEvent parses a record value in any format, unwrapping the Osprey envelope when there is one.
func decodeEvent(t testing.TB, value []byte) event {
	t.Helper()
	data, _, _ := schematest.Check(t, schematest.RelayEvent, value)
	var e event
	if err := json.Unmarshal(data, &e); err != nil {
		t.Fatalf("record value is not an event: %v\n%s", err, data)
	}
	return e
}

// checkCorpus checks that records hold every oracle event exactly once, with equal content, and nothing else.
func checkCorpus(t testing.TB, records []record) {
	t.Helper()
	want := loadExpected(t)
	got := map[string][]event{}
	for _, r := range records {
		e := decodeEvent(t, r.Value)
		if r.Key != e.DID {
			t.Errorf("record key %q, event did %q", r.Key, e.DID)
		}
		if r.Header("seq") == "" {
			t.Errorf("record %s has no seq header", e.key())
		}
		got[e.key()] = append(got[e.key()], e)
	}
	for _, w := range want {
		g := got[w.key()]
		if len(g) != 1 {
			t.Errorf("%s: produced %d times, want once", w.key(), len(g))
			continue
		}
		delete(got, w.key())
		if w.Commit == nil {
			continue
		}
		op := g[0].Operation
		if op.CID != w.Commit.CID {
			t.Errorf("%s: cid %q, want %q", w.key(), op.CID, w.Commit.CID)
		}
		if w.Commit.Record != nil && !testenv.JSONEqual(op.Record, w.Commit.Record) {
			t.Errorf("%s: record differs\n got %s\nwant %s", w.key(), op.Record, w.Commit.Record)
		}
		if w.Commit.Record == nil && op.Record != nil {
			t.Errorf("%s: delete has a record", w.key())
		}
	}
	for k, evs := range got {
		t.Errorf("unexpected event %s (%d times)", k, len(evs))
	}
}

// opID names one produced op or event of a frame, for loss and duplicate accounting across loops.
type opID struct {
	seq  int64
	what string // "<collection>/<rkey> <action>" or the event kind
}

// wantOps lists what a stream of messages must produce: every op of every commit and every identity or account
// event, by seq.
func wantOps(t testing.TB, msgs [][]byte) map[opID]bool {
	t.Helper()
	want := map[opID]bool{}
	var f frame.Frame
	for _, m := range msgs {
		if err := f.Decode(m); err != nil {
			continue
		}
		switch f.Kind {
		case frame.KindCommit:
			for _, op := range f.Commit.Ops {
				want[opID{f.Commit.Seq, string(op.Path) + " " + op.Action.String()}] = true
			}
		case frame.KindIdentity:
			want[opID{f.Identity.Seq, "identity"}] = true
		case frame.KindAccount:
			want[opID{f.Account.Seq, "account"}] = true
		}
	}
	return want
}

// gotOps counts the produced ops by opID, from the seq header and the value.
func gotOps(t testing.TB, records []record) map[opID]int {
	t.Helper()
	got := map[opID]int{}
	for _, r := range records {
		seq, err := strconv.ParseInt(r.Header("seq"), 10, 64)
		if err != nil {
			continue // #info
		}
		e := decodeEvent(t, r.Value)
		what := "other"
		switch {
		case e.Operation != nil:
			what = e.Operation.Path + " " + e.Operation.Action
		case e.Identity != nil:
			what = "identity"
		case e.Account != nil:
			what = "account"
		}
		got[opID{seq, what}]++
	}
	return got
}

// checkNoLoss fails for every wanted op not produced, and returns how many were produced more than once.
func checkNoLoss(t testing.TB, want map[opID]bool, got map[opID]int) (dups int) {
	t.Helper()
	missing := 0
	for id := range want {
		if got[id] == 0 {
			missing++
			if missing <= 10 {
				t.Errorf("missing %d %s", id.seq, id.what)
			}
		}
	}
	if missing > 0 {
		t.Errorf("%d of %d ops missing", missing, len(want))
	}
	for id, n := range got {
		if !want[id] {
			t.Errorf("unexpected op %d %s", id.seq, id.what)
		}
		dups += n - 1
	}
	return dups
}

// counter is an Observer, and a verify.Observer, that keeps the counts the tests check, by "method/label".
type counter struct{ testenv.Counts }

func (c *counter) add(key string) { c.Add(key, 1) }

func (*counter) Read(int64)                {}
func (*counter) Committed(int64)           {}
func (*counter) Lag(time.Duration)         {}
func (*counter) Delivered(time.Duration)   {}
func (c *counter) DecodeError(kind string) { c.add("decode_error/" + kind) }
func (c *counter) DeadLettered(r string)   { c.add("dead_lettered/" + r) }
func (c *counter) Reconnect(reason string) { c.add("reconnect/" + reason) }
func (c *counter) SourceEvent(kind string) { c.add("source_event/" + kind) }
func (*counter) Verified(string, string)   {}
func (c *counter) Failed(reason string)    { c.add("verify_failed/" + reason) }
