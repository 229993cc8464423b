package tap

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"

	"github.com/atkafka/atkafka/schema/schematest"
	"github.com/atkafka/atkafka/sink"
	"github.com/atkafka/atkafka/sink/sinktest"
	"github.com/atkafka/atkafka/transform/enrich"
)

const (
	didA = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"
	didB = "did:plc:bbbbbbbbbbbbbbbbbbbbbbbb"
)

func header(r sink.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return "<absent>"
}

func sortedIDs(ids []uint64) []uint64 { slices.Sort(ids); return ids }

func TestRecordsAckedOnlyAfterKafka(t *testing.T) {
	tap := newFakeTap(t, "")
	snk := sinktest.Holding()
	src, _ := startSource(t, Config{Host: tap.host(), Sink: snk, Workers: 1})
	conn := tap.accept(t)

	post := `{"$type":"app.bsky.feed.post","createdAt":"2024-05-06T07:08:09.123+02:00","text":"a \u003c b","embed":{"$link":"bafy"}}`
	tidTime := time.Date(2023, 1, 2, 3, 4, 5, 678000000, time.UTC)
	tid := syntax.NewTIDFromTime(tidTime, 7).String()
	before := time.Now()
	conn.send(t, recordJSON(1, false, didA, "app.bsky.feed.post", "3kabc", "create", post))
	conn.send(t, recordJSON(2, true, didA, "app.bsky.feed.like", tid, "delete", ""))
	conn.send(t, recordJSON(3, true, didB, "app.bsky.actor.profile", "self", "update", `{"displayName":"B"}`))
	conn.send(t, identityJSON(4, didB, "b.test", false, "deactivated"))

	msgs := snk.WaitMessages(t, 4)
	after := time.Now()
	conn.noAck(t, 200*time.Millisecond)
	if !src.LastProgress().IsZero() {
		t.Errorf("LastProgress = %v before any ack", src.LastProgress())
	}

	create := msgs[0].Records[0]
	wantCreate := `{"did":"` + didA + `","timestamp":"2024-05-06T05:08:09.123Z","live":false,"operation":{"action":"create",` +
		`"collection":"app.bsky.feed.post","rkey":"3kabc","uri":"at://` + didA + `/app.bsky.feed.post/3kabc",` +
		`"cid":"bafyreib2rxk3rybk3aobmv5cjuql3bm2twh4jo5uxgf5gpqbyzvtrrdvq4","path":"app.bsky.feed.post/3kabc","record":` + post + `}}`
	if string(create.Value) != wantCreate {
		t.Errorf("create value\n got %s\nwant %s", create.Value, wantCreate)
	}
	if string(create.Key) != didA || create.Topic != "" {
		t.Errorf("create key %q topic %q", create.Key, create.Topic)
	}
	for k, want := range map[string]string{"did": didA, "rev": "3lbmo6vhgvs2a", "collection": "app.bsky.feed.post", "rkey": "3kabc", "live": "false"} {
		if got := header(create, k); got != want {
			t.Errorf("create header %s = %q, want %q", k, got, want)
		}
	}

	del := msgs[1].Records[0]
	wantDel := `{"did":"` + didA + `","timestamp":"2023-01-02T03:04:05.678Z","live":true,"operation":{"action":"delete",` +
		`"collection":"app.bsky.feed.like","rkey":"` + tid + `","uri":"at://` + didA + `/app.bsky.feed.like/` + tid + `",` +
		`"path":"app.bsky.feed.like/` + tid + `"}}`
	if string(del.Value) != wantDel {
		t.Errorf("delete value\n got %s\nwant %s", del.Value, wantDel)
	}
	if header(del, "live") != "true" {
		t.Errorf("delete live header %q", header(del, "live"))
	}

	var profile struct{ Timestamp string }
	if err := json.Unmarshal(msgs[2].Records[0].Value, &profile); err != nil {
		t.Fatal(err)
	}
	ts, err := time.Parse(time.RFC3339, profile.Timestamp)
	if err != nil || ts.Before(before.Truncate(time.Millisecond)) || ts.After(after) {
		t.Errorf("profile timestamp %q (%v) should be the receive time, between %v and %v", profile.Timestamp, err, before, after)
	}

	ident := msgs[3].Records
	if len(ident) != 2 {
		t.Fatalf("identity event made %d records, want 2", len(ident))
	}
	prefix := `{"did":"` + didB + `","timestamp":"`
	wantIdent := `","identity":{"handle":"b.test","isActive":false,"status":"deactivated"}}`
	wantAccount := `","account":{"active":false,"status":"deactivated"}}`
	for i, want := range []string{wantIdent, wantAccount} {
		v := string(ident[i].Value)
		if !strings.HasPrefix(v, prefix) || !strings.HasSuffix(v, want) || string(ident[i].Key) != didB || header(ident[i], "did") != didB {
			t.Errorf("identity record %d = %s key %q, want %s...%s", i, v, ident[i].Key, prefix, want)
		}
		if header(ident[i], "rev") != "<absent>" {
			t.Errorf("identity record %d has a rev header", i)
		}
	}

	snk.Release()
	if got := sortedIDs(conn.waitAcks(t, 4, 5*time.Second)); !slices.Equal(got, []uint64{1, 2, 3, 4}) {
		t.Errorf("acks %v", got)
	}
	// The source records its progress right after writing the acks, so the fake may read them first.
	waitFor(t, 5*time.Second, "LastProgress after acks", func() bool { return !src.LastProgress().IsZero() })
	if !src.Connected() {
		t.Error("not connected after acks")
	}
}

func TestActiveIdentityAccountHasNoStatus(t *testing.T) {
	evs := identityEvents(&wireIdentity{DID: didA, Handle: "a.test", IsActive: true, Status: "active"}, time.Unix(0, 0))
	p := testPipeline()
	want := []string{
		`{"did":"` + didA + `","timestamp":"1970-01-01T00:00:00.000Z","identity":{"handle":"a.test","isActive":true,"status":"active"}}`,
		`{"did":"` + didA + `","timestamp":"1970-01-01T00:00:00.000Z","account":{"active":true}}`,
	}
	for i, ev := range evs {
		if got := string(p.AppendValue(nil, ev)); got != want[i] {
			t.Errorf("event %d\n got %s\nwant %s", i, got, want[i])
		}
	}
}

type collectionFunc func(string) bool

func (f collectionFunc) KeepCollection(nsid string) bool { return f(nsid) }

type accountFunc func(string) bool

func (f accountFunc) KeepAccount(did string, _ *enrich.Metadata) bool { return f(did) }

func TestFilteredEventsAckedAtOnce(t *testing.T) {
	tap := newFakeTap(t, "")
	snk := sinktest.Holding()
	p := testPipeline()
	p.Collections = collectionFunc(func(c string) bool { return c != "app.bsky.feed.like" })
	p.Accounts = accountFunc(func(did string) bool { return did != didB })
	startSource(t, Config{Host: tap.host(), Sink: snk, Pipeline: p})
	conn := tap.accept(t)

	conn.send(t, recordJSON(1, false, didA, "app.bsky.feed.post", "3kabc", "create", `{"text":"kept"}`))
	conn.send(t, recordJSON(2, false, didA, "app.bsky.feed.like", "3kabd", "create", `{"text":"dropped"}`))
	conn.send(t, identityJSON(3, didB, "b.test", true, "active"))
	if got := sortedIDs(conn.waitAcks(t, 2, 5*time.Second)); !slices.Equal(got, []uint64{2, 3}) {
		t.Errorf("filtered acks %v, want [2 3]", got)
	}
	snk.WaitMessages(t, 1)
	conn.noAck(t, 100*time.Millisecond)
	snk.Release()
	if got := conn.waitAcks(t, 1, 5*time.Second); got[0] != 1 {
		t.Errorf("ack %v, want 1", got)
	}
	if n := len(snk.WaitMessages(t, 1)); n != 1 {
		t.Errorf("sink got %d messages, want only the kept one", n)
	}
}

func TestKafkaFailureIsNotAcked(t *testing.T) {
	tap := newFakeTap(t, "")
	snk := &sinktest.Sink{}
	failure := errors.New("broker said no")
	snk.Fail = func(*sink.Message) error { return failure }
	src, _ := startSource(t, Config{Host: tap.host(), Sink: snk})
	conn := tap.accept(t)

	conn.send(t, recordJSON(1, true, didA, "app.bsky.feed.post", "3kabc", "create", `{}`))
	snk.WaitMessages(t, 1)
	conn.noAck(t, 300*time.Millisecond)
	if got := tallyOf(src).Get("acks " + acksKafkaError); got != 1 {
		t.Errorf("%v acks not sent for a Kafka error, want 1", got)
	}
}

func TestMalformedEventsAreDeadLettered(t *testing.T) {
	tap := newFakeTap(t, "")
	snk := sinktest.Holding()
	src, _ := startSource(t, Config{Host: tap.host(), Sink: snk, DeadLetterTopic: "dlq"})
	conn := tap.accept(t)

	inputs := []string{
		`not json at all`,                          // no id: dead-lettered, never acked
		`{"id":7,"type":"record","record":{"did":`, // truncated: id from the prefix
		`{"id":8,"type":"mystery"}`,                // unknown type
		`{"id":9,"type":"record","record":{"did":"` + didA + `","action":"create"}}`, // no collection/rkey
		`{"id":10,"type":"record","record":"oops"}`,                                  // wrong JSON type
	}
	for _, in := range inputs {
		conn.send(t, in)
	}
	msgs := snk.WaitMessages(t, len(inputs))
	conn.noAck(t, 200*time.Millisecond)

	var raws []string
	for _, m := range msgs {
		r := m.Records[0]
		schematest.Check(t, schematest.DeadLetter, r.Value)
		var dl struct{ Source, Reason, Raw, DID string }
		if err := json.Unmarshal(r.Value, &dl); err != nil || r.Topic != "dlq" || dl.Source != "tap" {
			t.Fatalf("dead letter %s topic %q: %v", r.Value, r.Topic, err)
		}
		raw, _ := base64.StdEncoding.DecodeString(dl.Raw)
		raws = append(raws, string(raw))
		if string(raw) == inputs[3] && (dl.Reason != reasonInvalid || dl.DID != didA) {
			t.Errorf("invalid record event dead-lettered with reason %q did %q", dl.Reason, dl.DID)
		}
	}
	slices.Sort(raws)
	want := slices.Clone(inputs)
	slices.Sort(want)
	if !slices.Equal(raws, want) {
		t.Errorf("dead-lettered raws %q, want %q", raws, want)
	}
	if got := tallyOf(src).Get("decode " + reasonDecode); got != 3 {
		t.Errorf("%v decode errors of kind decode, want 3", got)
	}

	snk.Release()
	if got := sortedIDs(conn.waitAcks(t, 4, 5*time.Second)); !slices.Equal(got, []uint64{7, 8, 9, 10}) {
		t.Errorf("acks %v, want [7 8 9 10]", got)
	}
	conn.noAck(t, 200*time.Millisecond)
}

func TestReconnectDropsAcksOfTheDeadConnection(t *testing.T) {
	tap := newFakeTap(t, "")
	snk := sinktest.Holding()
	src, _ := startSource(t, Config{Host: tap.host(), Sink: snk})

	first := tap.accept(t)
	first.send(t, recordJSON(1, true, didA, "app.bsky.feed.post", "3kabc", "create", `{"createdAt":"2025-01-01T00:00:00Z"}`))
	snk.WaitMessages(t, 1)
	_ = first.c.CloseNow() // Tap restarts
	second := tap.accept(t)
	if got := tallyOf(src).Get("reconnect read"); got != 1 {
		t.Errorf("%v reconnects for reason read, want 1", got)
	}

	// Kafka acknowledges the first copy only now: its ack belongs to the dead connection.
	snk.Release()
	second.noAck(t, 200*time.Millisecond)
	// Tap resends it after its retry timeout, and this copy is acked.
	second.send(t, recordJSON(1, true, didA, "app.bsky.feed.post", "3kabc", "create", `{"createdAt":"2025-01-01T00:00:00Z"}`))
	if got := second.waitAcks(t, 1, 5*time.Second); got[0] != 1 {
		t.Errorf("ack %v, want 1", got)
	}
	msgs := snk.WaitMessages(t, 2)
	if a, b := msgs[0].Records[0], msgs[1].Records[0]; !reflect.DeepEqual(a, b) {
		t.Errorf("a redelivered event must produce the same record:\n%+v\n%+v", a, b)
	}
	if !src.Connected() {
		t.Error("not Connected after reconnecting")
	}
}

// TestAcksNeverWaitBehindSlowWork blocks the only worker in the sink with the event queue full behind it, and
// checks that an earlier event's ack still reaches Tap.
func TestAcksNeverWaitBehindSlowWork(t *testing.T) {
	tap := newFakeTap(t, "")
	var (
		mu      sync.Mutex
		first   *sink.Message
		sends   int
		unblock = make(chan struct{})
		sent1   = make(chan struct{})
	)
	snk := sink.Func(func(ctx context.Context, msg *sink.Message) error {
		mu.Lock()
		sends++
		n := sends
		mu.Unlock()
		switch n {
		case 1:
			first = msg // Kafka is slow to acknowledge it
			close(sent1)
			return nil
		case 2:
			select { // backpressure: the sink is full
			case <-unblock:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		go msg.Done(nil)
		return nil
	})
	startSource(t, Config{Host: tap.host(), Sink: snk, Workers: 1})
	conn := tap.accept(t)

	const total = 3 * DefaultMaxInFlight
	for i := 1; i <= total; i++ {
		conn.send(t, recordJSON(uint64(i), false, fmt.Sprintf("did:plc:%024d", i), "app.bsky.feed.post", "3kabc", "create", `{}`))
	}
	<-sent1
	time.Sleep(100 * time.Millisecond) // let the queue fill and the reader block
	first.Done(nil)
	if got := conn.waitAcks(t, 1, 5*time.Second); got[0] != 1 {
		t.Fatalf("ack %v, want 1", got)
	}
	close(unblock)
	got := sortedIDs(conn.waitAcks(t, total-1, 10*time.Second))
	if got[0] != 2 || got[len(got)-1] != total {
		t.Errorf("acks from %d to %d, want 2 to %d", got[0], got[len(got)-1], total)
	}
}

// TestPerDIDLiveGating plays Tap's outbox rule (a DID's next live event waits for the ack of the previous one)
// for one busy DID, among historical events of many others, against a sink that acknowledges in random order.
func TestPerDIDLiveGating(t *testing.T) {
	tap := newFakeTap(t, "")
	snk := sink.Func(func(_ context.Context, msg *sink.Message) error {
		go func() {
			time.Sleep(time.Duration(rand.IntN(1000)) * time.Microsecond)
			msg.Done(nil)
		}()
		return nil
	})
	startSource(t, Config{Host: tap.host(), Sink: snk, Workers: 2})
	conn := tap.accept(t)

	const live, historical = 300, 3000
	// Live events have ids 1..live, historical ones follow.
	go func() {
		for i := range historical {
			did := fmt.Sprintf("did:plc:%024d", i%50)
			conn.send(t, recordJSON(uint64(live+1+i), false, did, "app.bsky.feed.post", fmt.Sprint(i), "create", `{}`))
		}
	}()
	conn.send(t, recordJSON(1, true, didA, "app.bsky.feed.post", "l1", "create", `{}`))
	nextLive := uint64(2)
	seen := map[uint64]bool{}
	deadline := time.After(60 * time.Second)
	for len(seen) < live+historical {
		select {
		case id := <-conn.acks:
			if seen[id] {
				t.Fatalf("ack %d twice", id)
			}
			seen[id] = true
			if id == nextLive-1 && nextLive <= live {
				conn.send(t, recordJSON(nextLive, true, didA, "app.bsky.feed.post", fmt.Sprintf("l%d", nextLive), "create", `{}`))
				nextLive++
			}
		case <-deadline:
			t.Fatalf("stalled: %d of %d acks, next live event %d", len(seen), live+historical, nextLive)
		}
	}
}

func TestDisableAcks(t *testing.T) {
	tap := newFakeTap(t, "")
	snk := &sinktest.Sink{}
	var logs logBuffer
	src, _ := startSource(t, Config{Host: tap.host(), Sink: snk, DisableAcks: true, Logger: testLogger(&logs)})
	conn := tap.accept(t)
	for i := range 3 {
		conn.send(t, recordJSON(uint64(i+1), true, didA, "app.bsky.feed.post", fmt.Sprint(i), "create", `{}`))
	}
	snk.WaitMessages(t, 3)
	conn.noAck(t, 200*time.Millisecond)
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "events in flight are lost") {
		t.Errorf("no warning about lost events in:\n%s", logs.String())
	}
	deadline := time.Now().Add(5 * time.Second)
	for src.LastProgress().IsZero() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if src.LastProgress().IsZero() {
		t.Error("LastProgress did not move with acks disabled")
	}
}

func TestGracefulStopSendsPendingAcks(t *testing.T) {
	tap := newFakeTap(t, "")
	snk := sinktest.Holding()
	src, stop := startSource(t, Config{Host: tap.host(), Sink: snk})
	conn := tap.accept(t)
	for i := range 5 {
		conn.send(t, recordJSON(uint64(i+1), false, fmt.Sprintf("did:plc:%024d", i), "app.bsky.feed.post", "3kabc", "create", `{}`))
	}
	snk.WaitMessages(t, 5)

	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	time.Sleep(100 * time.Millisecond)
	conn.send(t, recordJSON(6, false, didA, "app.bsky.feed.post", "late", "create", `{}`)) // read after the stop: dropped
	snk.Release()
	if got := sortedIDs(conn.waitAcks(t, 5, 5*time.Second)); !slices.Equal(got, []uint64{1, 2, 3, 4, 5}) {
		t.Errorf("acks %v", got)
	}
	if err := <-stopped; err != nil {
		t.Errorf("Run after graceful stop: %v", err)
	}
	select {
	case <-conn.done:
	case <-time.After(5 * time.Second):
		t.Error("connection still open after Run returned")
	}
	if n := len(snk.WaitMessages(t, 5)); n != 5 {
		t.Errorf("sink got %d messages, want 5: an event read after the stop was sent", n)
	}
	if src.Connected() {
		t.Error("Connected after Run returned")
	}
}

func TestAdminPassword(t *testing.T) {
	tap := newFakeTap(t, "s3cret")
	snk := &sinktest.Sink{}
	startSource(t, Config{Host: tap.host() + "/", Sink: snk, AdminPassword: "s3cret"})
	conn := tap.accept(t)
	conn.send(t, recordJSON(1, true, didA, "app.bsky.feed.post", "3kabc", "create", `{}`))
	conn.waitAcks(t, 1, 5*time.Second)

	src, err := New(Config{Host: tap.host(), Sink: snk, Pipeline: testPipeline(), DeadLetterTopic: "dlq", AdminPassword: "wrong",
		Logger: testLogger(t.Output())})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := src.Run(ctx); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("Run with a wrong password = %v, want an error naming HTTP 401", err)
	}
}

func TestConfig(t *testing.T) {
	for host, want := range map[string]string{
		"":                            "ws://localhost:2480/channel",
		"ws://127.0.0.1:2480":         "ws://127.0.0.1:2480/channel",
		"wss://tap.example/":          "wss://tap.example/channel",
		"http://tap:1/prefix":         "http://tap:1/prefix/channel",
		"ws://127.0.0.1:2480/channel": "ws://127.0.0.1:2480/channel",
	} {
		got, err := channelURL(Config{Host: host}.withDefaults().Host)
		if err != nil || got != want {
			t.Errorf("channelURL(%q) = %q, %v; want %q", host, got, err, want)
		}
	}
	for _, host := range []string{"localhost:2480", "ftp://x", "ws://"} {
		if _, err := channelURL(host); err == nil {
			t.Errorf("channelURL(%q) accepted", host)
		}
	}
	if _, err := New(Config{}); err == nil || !strings.Contains(err.Error(), "Sink") || !strings.Contains(err.Error(), "DeadLetterTopic") {
		t.Errorf("New(Config{}) = %v, want errors naming Sink and DeadLetterTopic", err)
	}
	if _, err := New(Config{Sink: committer{}, Pipeline: testPipeline(), DeadLetterTopic: "dlq"}); err == nil || !strings.Contains(err.Error(), "exactly-once") {
		t.Errorf("New with a sink.Committer = %v, want it refused", err)
	}
}

// committer is an exactly-once sink, which Tap must refuse: its events carry no cursor.
type committer struct{ sink.Func }

func (committer) CommitsCursor() {}

func TestIDPrefix(t *testing.T) {
	for raw, want := range map[string]int64{
		`{"id":42,"type":`:   42,
		`{"id":42}`:          -1,
		`{"id":-1,"type":`:   -1,
		`{"type":"x","id":4`: -1,
		`{"id":,`:            -1,
	} {
		id, ok := idPrefix([]byte(raw))
		if (want < 0 && ok) || (want >= 0 && (!ok || id != uint64(want))) {
			t.Errorf("idPrefix(%s) = %d, %v; want %d", raw, id, ok, want)
		}
	}
}

// FuzzDecode checks that no message makes decode panic, and that a job is either a valid event or a dead letter
// carrying the raw bytes.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(recordJSON(1, true, didA, "app.bsky.feed.post", "3kabc", "create", `{"text":"x"}`)))
	f.Add([]byte(identityJSON(2, didA, "a.test", true, "active")))
	f.Add([]byte(`{"id":3,"type":"record","record":{"did":`))
	f.Add([]byte(`{"id":4,"type":"record","record":null}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		j := decode(raw, time.Unix(0, 0))
		if j.ev == nil {
			if j.reason == "" || j.err == nil || !bytes.Equal(j.raw, raw) {
				t.Fatalf("dead letter without reason, error or raw bytes: %+v", j)
			}
			return
		}
		if j.ev.validate() != nil || j.did == "" {
			t.Fatalf("decoded an invalid event: %+v", j.ev)
		}
		if j.ev.Type == "record" {
			_ = recordEvent(j.ev.Record, j.received)
		} else {
			_ = identityEvents(j.ev.Identity, j.received)
		}
	})
}
