package labels_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/api/atproto"
	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/labeling"

	"github.com/atkafka/atkafka/cursor"
	"github.com/atkafka/atkafka/schema/schematest"
	"github.com/atkafka/atkafka/sink"
	"github.com/atkafka/atkafka/sink/sinktest"
	"github.com/atkafka/atkafka/source/labels"
	"github.com/atkafka/atkafka/source/labels/labelstest"
	"github.com/atkafka/atkafka/source/relay/relaytest"
	"github.com/atkafka/atkafka/testenv"
	"github.com/atkafka/atkafka/transform"
	"github.com/atkafka/atkafka/transform/format"
)

// keys is a Directory of fixed label keys.
type keys map[string]atcrypto.PublicKey

func (k keys) LabelerEndpoint(context.Context, string) (string, error) {
	return "", errors.New("no endpoints here")
}

func (k keys) LabelKey(_ context.Context, did string, _ bool) (atcrypto.PublicKey, error) {
	if key, ok := k[did]; ok {
		return key, nil
	}
	return nil, errors.New("unknown DID")
}

type run struct {
	src  *labels.Source
	sink *sinktest.Sink
	err  chan error
	stop context.CancelFunc
}

func start(t *testing.T, cfg labels.Config) *run {
	t.Helper()
	r := &run{sink: &sinktest.Sink{}, err: make(chan error, 1)}
	cfg.Sink, cfg.DeadLetterTopic, cfg.Logger = r.sink, "dead", testenv.Logger(t, slog.LevelDebug)
	cfg.Pipeline = &transform.Pipeline{Formatter: format.NewFormatter()}
	src, err := labels.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.src, r.stop = src, cancel
	go func() { r.err <- src.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-r.err })
	return r
}

// wait returns the records once there are n of them.
func (r *run) wait(t *testing.T, n int) []sinktest.Record {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		recs := r.sink.Records()
		if len(recs) >= n {
			return recs
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d records after 20s, want %d: %+v", len(recs), n, recs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type labelRecord struct {
	DID   string `json:"did"`
	Label struct {
		Labeler string `json:"labeler"`
		Seq     int64  `json:"seq"`
		URI     string `json:"uri"`
		Val     string `json:"val"`
		Neg     bool   `json:"neg"`
		Exp     string `json:"exp"`
		Sig     *struct {
			Bytes string `json:"$bytes"`
		} `json:"sig"`
	} `json:"label"`
}

func decode(t *testing.T, r sinktest.Record) labelRecord {
	t.Helper()
	var l labelRecord
	schematest.Check(t, schematest.LabelEvent, r.Value)
	if err := json.Unmarshal(r.Value, &l); err != nil {
		t.Fatalf("%s: %v", r.Value, err)
	}
	return l
}

const cts = "2026-07-04T14:38:08.999Z"

// Two labelers in one source: each label is a record keyed by its subject, negations and expiries carried, bad
// labels and frames dead-lettered without holding up the rest, and one labeler going down stops nothing else.
func TestTwoLabelers(t *testing.T) {
	a := labelstest.NewServer(t, "did:plc:labelera")
	b := labelstest.NewServer(t, "did:plc:labelerb")
	dir := t.TempDir()
	exp := "2030-01-01T00:00:00.000Z"
	neg := true
	a.Emit(labeling.Label{URI: "did:plc:alice", Val: "spam", CreatedAt: cts})
	a.Emit(labeling.Label{URI: "at://did:plc:bob/app.bsky.feed.post/3k", Val: "!hide", CreatedAt: cts, ExpiresAt: &exp},
		labeling.Label{URI: "at://bob.test/app.bsky.feed.post/3k", Val: "porn", CreatedAt: cts}, // a handle: no DID to key by
		labeling.Label{URI: "did:plc:carol", CreatedAt: cts})                                    // no val
	a.Add(append([]byte("not cbor"), make([]byte, 300<<10)...)) // also too big for a dead letter whole
	a.Add(labelstest.Frame(t, &atproto.LabelSubscribeLabels_Labels{Seq: 4, Labels: []*atproto.LabelDefs_Label{
		{Src: "labeler", Uri: "did:plc:carol", Val: "spam", Cts: cts}, // src not a DID
		{Src: a.DID, Uri: "did:plc:carol", Val: "spam", Cts: "yesterday"},
	}}))
	a.Emit(labeling.Label{URI: "did:plc:alice", Val: "spam", CreatedAt: cts, Negated: &neg})
	b.Emit(labeling.Label{URI: "did:plc:dave", Val: "rude", CreatedAt: cts})

	r := start(t, labels.Config{Labelers: []labels.Labeler{{Host: a.URL()}, {Host: b.URL()}}, DataDir: dir, StartCursor: "0",
		IncludeSig: true})
	recs := r.wait(t, 9)
	var fromA, dead []sinktest.Record
	for _, rec := range recs {
		switch {
		case rec.Topic == "dead":
			schematest.Check(t, schematest.DeadLetter, rec.Value)
			dead = append(dead, rec)
		case rec.Header("labeler") == strings.TrimPrefix(a.URL(), "ws://"):
			fromA = append(fromA, rec)
		default:
			if l := decode(t, rec); rec.Topic != "" || rec.Key != "did:plc:dave" || l.Label.Val != "rude" || rec.Header("seq") != "1" {
				t.Errorf("labeler b's record: %s %s", rec.Key, rec.Value)
			}
		}
	}
	want := []struct {
		key, val, seq string
		neg, exp      bool
	}{{"did:plc:alice", "spam", "1", false, false}, {"did:plc:bob", "!hide", "2", false, true}, {"did:plc:alice", "spam", "5", true, false}}
	if len(fromA) != len(want) {
		t.Fatalf("labeler a: %d records, want %d", len(fromA), len(want))
	}
	for i, w := range want {
		l := decode(t, fromA[i])
		if fromA[i].Key != w.key || l.DID != w.key || l.Label.Val != w.val || fromA[i].Header("seq") != w.seq ||
			l.Label.Neg != w.neg || (l.Label.Exp != "") != w.exp || l.Label.Sig == nil {
			t.Errorf("record %d: key %s seq %s %s", i, fromA[i].Key, fromA[i].Header("seq"), fromA[i].Value)
		}
	}
	var reasons []string
	for _, d := range dead {
		reasons = append(reasons, d.Header("reason"))
		if len(d.Value) > 400<<10 {
			t.Errorf("a dead letter of %d bytes", len(d.Value))
		}
	}
	if strings.Join(reasons, ",") != "bad_uri,missing_field,decode,bad_field,bad_field" {
		t.Errorf("dead letters %v, want bad_uri, missing_field, decode, bad_field twice", reasons)
	}

	// a goes down; b keeps going, and a's cursor stays at what Kafka has.
	a.Stop()
	b.Emit(labeling.Label{URI: "did:plc:erin", Val: "rude", CreatedAt: cts})
	r.wait(t, 10)
	r.stop()
	if err := <-r.err; err != nil {
		t.Fatal(err)
	}
	r.err <- nil // for the cleanup
	for _, srv := range []*labelstest.Server{a, b} {
		v, ok, err := cursor.NewFile(labels.CursorFile(dir, labels.Labeler{Host: srv.URL()})).Load()
		if err != nil || !ok || v != "5" && srv == a || v != "2" && srv == b {
			t.Errorf("cursor of %s: %q %v %v", srv.URL(), v, ok, err)
		}
	}
}

// A cursor past the labeler's newest frame stops the source with the FutureCursor error, as the relay does.
func TestFutureCursorStops(t *testing.T) {
	a := labelstest.NewServer(t, "did:plc:labelera")
	a.Emit(labeling.Label{URI: "did:plc:alice", Val: "spam", CreatedAt: cts})
	r := start(t, labels.Config{Labelers: []labels.Labeler{{Host: a.URL()}}, DataDir: t.TempDir(), StartCursor: "5"})
	select {
	case err := <-r.err:
		if err == nil || !strings.Contains(err.Error(), "FutureCursor") {
			t.Fatalf("Run returned %v, want the FutureCursor error", err)
		}
		r.err <- nil
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not stop")
	}
}

// Strict verification produces what the labeler signed and dead-letters a label altered after signing.
func TestVerifyStrict(t *testing.T) {
	a := labelstest.NewServer(t, "did:plc:labelera")
	a.Emit(labeling.Label{URI: "did:plc:alice", Val: "spam", CreatedAt: cts})
	tampered := labeling.Label{SourceDID: a.DID, Version: 1, URI: "did:plc:alice", Val: "spam", CreatedAt: cts}
	if err := tampered.Sign(a.Key); err != nil {
		t.Fatal(err)
	}
	tampered.Val = "!takedown"
	lex := tampered.ToLexicon()
	a.Add(labelstest.Frame(t, &atproto.LabelSubscribeLabels_Labels{Seq: 2, Labels: []*atproto.LabelDefs_Label{&lex}}))
	pub, err := a.Key.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	r := start(t, labels.Config{Labelers: []labels.Labeler{{Host: a.URL()}}, DataDir: t.TempDir(), StartCursor: "0",
		Verify: labels.VerifyStrict, Directory: keys{a.DID: pub}})
	recs := r.wait(t, 2)
	if recs[0].Topic != "" || decode(t, recs[0]).Label.Val != "spam" {
		t.Errorf("signed label: %s %s", recs[0].Topic, recs[0].Value)
	}
	if recs[1].Topic != "dead" || recs[1].Header("reason") != "verify_failed" {
		t.Errorf("tampered label: %s %s", recs[1].Topic, recs[1].Value)
	}

}

// moving is a Directory whose labeler endpoint can change, as after a labeler moved and updated its document.
type moving struct {
	mu       sync.Mutex
	endpoint string
}

func (m *moving) set(ep string) { m.mu.Lock(); m.endpoint = ep; m.mu.Unlock() }

func (m *moving) LabelerEndpoint(context.Context, string) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.endpoint, nil
}

func (m *moving) LabelKey(context.Context, string, bool) (atcrypto.PublicKey, error) {
	return nil, errors.New("no keys here")
}

// A labeler given by DID is resolved again at every connection: when it moves, the source follows it, resuming
// after the last seq it read.
func TestLabelerFollowsItsDIDDocument(t *testing.T) {
	old := labelstest.NewServer(t, "did:plc:labelera")
	moved := labelstest.NewServer(t, "did:plc:labelera")
	for _, srv := range []*labelstest.Server{old, moved} {
		srv.Emit(labeling.Label{URI: "did:plc:alice", Val: "spam", CreatedAt: cts})
	}
	dir := &moving{endpoint: strings.Replace(old.URL(), "ws://", "http://", 1)}
	r := start(t, labels.Config{Labelers: []labels.Labeler{{DID: "did:plc:labelera"}}, DataDir: t.TempDir(), StartCursor: "0",
		Directory: dir})
	r.wait(t, 1)
	dir.set(moved.URL())
	old.Stop()
	moved.Emit(labeling.Label{URI: "did:plc:bob", Val: "rude", CreatedAt: cts})
	recs := r.wait(t, 2)
	if l := decode(t, recs[1]); l.Label.Val != "rude" || recs[1].Header("seq") != "2" || recs[1].Header("labeler") != "did:plc:labelera" {
		t.Errorf("after the move: %s %s", recs[1].Header("seq"), recs[1].Value)
	}
}

// flaky is a Directory that cannot be reached for its first calls.
type flaky struct {
	keys
	mu    sync.Mutex
	fails int
}

func (f *flaky) LabelKey(ctx context.Context, did string, refresh bool) (atcrypto.PublicKey, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fails > 0 {
		f.fails--
		return nil, errors.New("connection refused")
	}
	return f.keys.LabelKey(ctx, did, refresh)
}

// In strict mode a directory that cannot be reached holds the labeler up until it answers: its labels are not
// dead-lettered for a cause that is not theirs. A labeler whose document declares no label key is definitive.
func TestVerifyStrictWaitsForTheDirectory(t *testing.T) {
	a := labelstest.NewServer(t, "did:plc:labelera")
	a.Emit(labeling.Label{URI: "did:plc:alice", Val: "spam", CreatedAt: cts})
	pub, err := a.Key.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	r := start(t, labels.Config{Labelers: []labels.Labeler{{Host: a.URL()}}, DataDir: t.TempDir(), StartCursor: "0",
		Verify: labels.VerifyStrict, Directory: &flaky{keys: keys{a.DID: pub}, fails: 1}})
	if recs := r.wait(t, 1); recs[0].Topic != "" {
		t.Errorf("label dead-lettered while the directory was down: %s", recs[0].Value)
	}
}

// A frame Kafka refuses goes to the dead-letter topic whole, and the cursor moves on; when the dead letter is
// refused too, Run stops with the cursor before the frame.
func TestRefusedFrameDeadLettered(t *testing.T) {
	for _, always := range []bool{false, true} {
		a := labelstest.NewServer(t, "did:plc:labelera")
		a.Emit(labeling.Label{URI: "did:plc:alice", Val: "spam", CreatedAt: cts})
		a.Emit(labeling.Label{URI: "did:plc:alice", Val: "rude", CreatedAt: cts})
		s := &sinktest.Sink{Fail: func(msg *sink.Message) error {
			if len(msg.Records) == 0 {
				return nil
			}
			if r := msg.Records[0]; r.Topic == "" && strings.Contains(string(r.Value), "spam") || always && r.Topic == "dead" {
				return errors.New("record too large")
			}
			return nil
		}}
		dir := t.TempDir()
		src, err := labels.New(labels.Config{Labelers: []labels.Labeler{{Host: a.URL()}}, DataDir: dir, StartCursor: "0", Sink: s,
			ShutdownTimeout: 5 * time.Second,
			DeadLetterTopic: "dead", Logger: testenv.Logger(t, slog.LevelDebug), Pipeline: &transform.Pipeline{Formatter: format.NewFormatter()}})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err = src.Run(ctx)
		cancel()
		v, _, _ := cursor.NewFile(labels.CursorFile(dir, labels.Labeler{Host: a.URL()})).Load()
		recs := s.Records()
		if always {
			// The cursor stays at 0, before seq 1; frame 2's record, sent meanwhile, is read again by the next run.
			if err == nil || !strings.Contains(err.Error(), "also as a dead letter") || v != "0" || len(recs) != 1 {
				t.Errorf("dead letter refused: Run %v, cursor %q, records %d", err, v, len(recs))
			}
			continue
		}
		// The dead letter is sent once the refusal is known, maybe after the next frame's records.
		slices.SortFunc(recs, func(a, b sinktest.Record) int { return strings.Compare(b.Topic, a.Topic) })
		if err != nil || v != "2" || len(recs) != 2 || recs[0].Topic != "dead" || recs[0].Header("reason") != "produce_failed" {
			t.Errorf("records refused: Run %v, cursor %q, records %+v", err, v, recs)
		}
	}
}

// An #info frame (OutdatedCursor) is counted and logged, not produced, and does not move the cursor.
func TestInfoCounted(t *testing.T) {
	a := labelstest.NewServer(t, "did:plc:labelera")
	a.Add(relaytest.InfoFrame("OutdatedCursor", "Requested cursor exceeded limit. Possibly missing events"))
	a.Emit(labeling.Label{URI: "did:plc:alice", Val: "spam", CreatedAt: cts})
	obs := &sourceEvents{}
	r := start(t, labels.Config{Labelers: []labels.Labeler{{Host: a.URL()}}, DataDir: t.TempDir(), StartCursor: "0",
		Observer: obs})
	if recs := r.wait(t, 1); len(recs) != 1 || recs[0].Header("seq") != "2" {
		t.Errorf("records %+v", recs)
	}
	if got := obs.Get("outdated_cursor"); got != 1 {
		t.Errorf("outdated_cursor counted %d times, want 1", got)
	}
}

// sourceEvents is a labels.Observer that counts source events only.
type sourceEvents struct{ testenv.Counts }

func (o *sourceEvents) SourceEvent(kind string) { o.Add(kind, 1) }

func (*sourceEvents) Cursor(string) (read, committed func(int64)) {
	return func(int64) {}, func(int64) {}
}
func (*sourceEvents) Connected(string) func(bool)    { return func(bool) {} }
func (*sourceEvents) Lag(string) func(time.Duration) { return func(time.Duration) {} }
func (*sourceEvents) Reconnect(string, string)       {}
func (*sourceEvents) Produced(string, string)        {}
func (*sourceEvents) Verified(string, string)        {}
func (*sourceEvents) Delivered(time.Duration)        {}
func (*sourceEvents) DecodeError(string)             {}
func (*sourceEvents) DeadLettered(string)            {}
