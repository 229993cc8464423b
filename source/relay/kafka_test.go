package relay

import (
	"bytes"
	"context"
	"encoding/json"
	"maps"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/atkafka/atkafka/schema/schematest"
	"github.com/atkafka/atkafka/sink"
	"github.com/atkafka/atkafka/sink/kafka"
	"github.com/atkafka/atkafka/source/relay/relaytest"
	"github.com/atkafka/atkafka/testenv"
	"github.com/atkafka/atkafka/transform"
	"github.com/atkafka/atkafka/transform/format"
	"github.com/atkafka/atkafka/transform/frame"
)

// kafkaTopics is an output topic and its dead-letter topic on a real broker.
type kafkaTopics struct {
	brokers     string
	topic, dead string
}

func newTopics(t testing.TB, brokers string) kafkaTopics {
	topic := testenv.NewTopic(t)
	return kafkaTopics{brokers: brokers, topic: topic, dead: topic + ".deadletter"}
}

// producer is the real Kafka sink for k, closed when the test ends.
func (k kafkaTopics) producer(t testing.TB) *kafka.Producer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := kafka.New(ctx, kafka.Config{Brokers: []string{k.brokers}, Topic: k.topic, ExtraTopics: []string{k.dead},
		CreateTopic: true, Partitions: 4, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close(context.Background()) })
	return p
}

// read returns at least n records of topic, and any that follow within a quiet second; opts add client options
// (isolation).
func (k kafkaTopics) read(t testing.TB, topic string, n int, opts ...kgo.Opt) []record {
	t.Helper()
	var out []record
	for _, r := range testenv.ReadAll(t, k.brokers, topic, n, 60*time.Second, opts...) {
		hs := make([]sink.Header, len(r.Headers))
		for i, h := range r.Headers {
			hs[i] = sink.Header{Key: h.Key, Value: h.Value}
		}
		out = append(out, copyRecord(topic, r.Key, r.Value, hs))
	}
	return out
}

// TestKafkaCorpusConformance produces the capture in every format; the Osprey formats must carry exactly the
// standard events, decoded the way each Osprey input decodes them.
func TestKafkaCorpusConformance(t *testing.T) {
	k := testenv.Kafka(t)
	frames := relaytest.CorpusFrames(t)
	events := map[string]map[string]json.RawMessage{} // format → event key → event
	for _, mode := range []string{"standard", "worker", "coordinator"} {
		t.Run(mode, func(t *testing.T) {
			srv := relaytest.NewServer(frames)
			defer srv.Close()
			topics := newTopics(t, k.Brokers)
			cfg := testConfig(t, srv.URL(), topics.producer(t))
			cfg.DeadLetterTopic, cfg.StartCursor = topics.dead, "0"
			if mode != "standard" {
				ids, _ := format.NewSnowflake(7)
				opts := []format.FormatterOption{format.Osprey(ids)}
				if mode == "coordinator" {
					opts = append(opts, format.Coordinator())
				}
				cfg.Pipeline = &transform.Pipeline{Formatter: format.NewFormatter(opts...)}
			}
			r := start(t, cfg)
			r.waitCommitted(t, srv.LastSeq(), 60*time.Second)
			if err := r.stop(t); err != nil {
				t.Fatal(err)
			}
			records := topics.read(t, topics.topic, 152)
			checkCorpus(t, records)
			checkHeaders(t, frames, records)
			events[mode] = checkFormat(t, schematest.Format(mode), records)
		})
	}
	for _, mode := range []string{"worker", "coordinator"} {
		if !maps.EqualFunc(events[mode], events["standard"], func(a, b json.RawMessage) bool { return bytes.Equal(a, b) }) {
			t.Errorf("%s events differ from the standard ones", mode)
		}
	}
}

// checkFormat checks that every record is in format f, with unique Osprey ids and the event's action name, and
// returns the events by key.
func checkFormat(t testing.TB, f schematest.Format, records []record) map[string]json.RawMessage {
	t.Helper()
	events := map[string]json.RawMessage{}
	ids := map[uint64]bool{}
	for _, r := range records {
		data, got, env := schematest.Check(t, schematest.RelayEvent, r.Value)
		if got != f {
			t.Fatalf("record in format %s, want %s: %q", got, f, r.Value)
		}
		e := decodeEvent(t, r.Value)
		events[e.key()] = data
		if f == schematest.Standard {
			continue
		}
		if ids[env.ID] {
			t.Errorf("duplicate Osprey id %d", env.ID)
		}
		ids[env.ID] = true
		if want := e.actionName(); env.Name != want {
			t.Errorf("%s: action name %q, want %q", e.key(), env.Name, want)
		}
	}
	return events
}

// checkHeaders checks the seq, rev, collection and action headers against the frames.
func checkHeaders(t testing.TB, frames [][]byte, records []record) {
	t.Helper()
	revs := map[string]string{}
	var f frame.Frame
	for _, m := range frames {
		if f.Decode(m) == nil && f.Kind == frame.KindCommit {
			revs[itoa(f.Commit.Seq)] = string(f.Commit.Rev)
		}
	}
	for _, r := range records {
		e := decodeEvent(t, r.Value)
		if e.Operation == nil {
			continue
		}
		if rev := revs[r.Header("seq")]; rev == "" || r.Header("rev") != rev {
			t.Errorf("%s: seq header %q, rev header %q (frame rev %q)", e.key(), r.Header("seq"), r.Header("rev"), rev)
		}
		if r.Header("collection") != e.Operation.Collection || r.Header("action") != e.Operation.Action {
			t.Errorf("%s: headers %v", e.key(), r.Headers)
		}
	}
}

// TestKafkaRelayDisconnects cuts the connection every 60 frames: every reconnect resumes after the last frame
// read, so nothing is missing and nothing repeats.
func TestKafkaRelayDisconnects(t *testing.T) {
	k := testenv.Kafka(t)
	srv := relaytest.NewServer(relaytest.CorpusFrames(t), relaytest.Loops(2), relaytest.DisconnectAfter(60))
	defer srv.Close()
	topics := newTopics(t, k.Brokers)
	cfg := testConfig(t, srv.URL(), topics.producer(t))
	cfg.DeadLetterTopic, cfg.StartCursor = topics.dead, "0"
	r := start(t, cfg)
	r.waitCommitted(t, srv.LastSeq(), 90*time.Second)
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	want := wantOps(t, srv.Messages())
	if dups := checkNoLoss(t, want, gotOps(t, topics.read(t, topics.topic, len(want)))); dups != 0 {
		t.Errorf("%d duplicates, want none: reconnects resume after the last frame read", dups)
	}
	if n := srv.Connections(); n < srv.Len()/60 {
		t.Errorf("%d connections, want at least %d", n, srv.Len()/60)
	}
	cursors := srv.Cursors()
	for i := 1; i < len(cursors); i++ {
		if atoi(cursors[i]) <= atoi(cursors[i-1]) {
			t.Errorf("reconnect %d resumed at %s after %s", i, cursors[i], cursors[i-1])
		}
	}
}

// corruptions are broken versions of corpus frames, each with the dead-letter reason it must get.
func corruptions(t testing.TB, frames [][]byte) (out map[int][]byte, reasons map[string]int) {
	t.Helper()
	must := func(b []byte, err error) []byte {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	out = map[int][]byte{
		3:  frames[3][:len(frames[3])/2],                                                                // truncated CBOR
		5:  must(relaytest.SetField(frames[5], "blocks", []byte("not a CAR"))),                          // bad CAR
		7:  must(relaytest.SetField(frames[7], "seq", "31527015329")),                                   // wrong type
		9:  must(relaytest.SetField(frames[9], "ops", "nope")),                                          // wrong type
		10: must(relaytest.SetField(frames[10], "blocks", relaytest.Raw{0x5b, 0, 0, 0, 1, 0, 0, 0, 0})), // huge length
		53: withoutRecordBlock(t, frames[53], 1),                                                        // missing record block, 2 of 3 ops fine
	}
	reasons = map[string]int{"decode": 4, "bad_car": 1, "missing_block": 1}
	return out, reasons
}

// withoutRecordBlock removes the record block of op i from a commit's CAR.
func withoutRecordBlock(t testing.TB, msg []byte, i int) []byte {
	t.Helper()
	var f frame.Frame
	if err := f.Decode(msg); err != nil {
		t.Fatal(err)
	}
	car, cid := bytes.Clone(f.Commit.Blocks), []byte(f.Commit.Ops[i].CID)
	hlen, n := uvarint(car)
	out := bytes.Clone(car[:n+hlen])
	for off := n + hlen; off < len(car); {
		slen, n := uvarint(car[off:])
		section := car[off : off+n+slen]
		if !bytes.HasPrefix(section[n:], cid) {
			out = append(out, section...)
		}
		off += n + slen
	}
	if len(out) == len(car) {
		t.Fatal("record block not found")
	}
	b, err := relaytest.SetField(msg, "blocks", out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func uvarint(b []byte) (v, n int) {
	for s := 0; ; s += 7 {
		c := b[n]
		n++
		v |= int(c&0x7f) << s
		if c < 0x80 {
			return v, n
		}
	}
}

// TestKafkaMalformedFrames serves broken frames among good ones: every broken frame lands in the dead-letter
// topic, every good event in the output topic, and the source keeps running to the end of the stream.
func TestKafkaMalformedFrames(t *testing.T) {
	k := testenv.Kafka(t)
	frames := relaytest.CorpusFrames(t)
	broken, reasons := corruptions(t, frames)
	served := make([][]byte, len(frames))
	for i, f := range frames {
		served[i] = f
		if b, ok := broken[i]; ok {
			served[i] = b
		}
	}
	garbage := []byte{0xff, 0x00, 0x13, 0x37}
	unknown := relaytest.Message(1, "#future", relaytest.Map{{Key: "did", Value: "did:plc:x"}})
	srv := relaytest.NewServer(served, relaytest.Inject(20, garbage), relaytest.Inject(30, unknown),
		relaytest.Inject(40, bytes.Repeat([]byte{0xa1}, 300<<10)))
	defer srv.Close()
	reasons["decode"]++
	reasons["unknown_type"]++
	reasons["too_large"]++

	topics := newTopics(t, k.Brokers)
	cfg := testConfig(t, srv.URL(), topics.producer(t))
	cfg.DeadLetterTopic, cfg.StartCursor, cfg.MaxFrameBytes = topics.dead, "0", 256<<10
	r := start(t, cfg)
	r.waitCommitted(t, srv.LastSeq(), 60*time.Second)
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}

	total := 0
	for _, n := range reasons {
		total += n
	}
	got := map[string]int{}
	for _, rec := range topics.read(t, topics.dead, total) {
		schematest.Check(t, schematest.DeadLetter, rec.Value)
		var dl struct {
			Source, Reason, Error, Raw string
			Seq                        int64
		}
		if err := json.Unmarshal(rec.Value, &dl); err != nil || dl.Source != "relay" || dl.Raw == "" || dl.Error == "" {
			t.Errorf("bad dead letter (%v): %.300s", err, rec.Value)
		}
		got[dl.Reason]++
	}
	for reason, n := range reasons {
		if got[reason] != n {
			t.Errorf("%d dead letters with reason %s, want %d (all: %v)", got[reason], reason, n, got)
		}
	}
	// Good frames, and the good ops of the commit with a missing block, are all produced.
	good := make([][]byte, 0, len(frames))
	for i, f := range frames {
		if _, bad := broken[i]; !bad || i == 53 {
			good = append(good, f)
		}
	}
	want := wantOps(t, good)
	var f frame.Frame
	_ = f.Decode(frames[53])
	delete(want, opID{f.Commit.Seq, string(f.Commit.Ops[1].Path) + " create"})
	if dups := checkNoLoss(t, want, gotOps(t, topics.read(t, topics.topic, len(want)))); dups != 0 {
		t.Errorf("%d duplicates", dups)
	}
}

func itoa(v int64) string { return strconv.FormatInt(v, 10) }

func atoi(s string) int64 {
	v, _ := strconv.ParseInt(s, 10, 64)
	return v
}
