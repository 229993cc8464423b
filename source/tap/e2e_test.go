package tap

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/atkafka/atkafka/schema"
	"github.com/atkafka/atkafka/schema/schematest"
	"github.com/atkafka/atkafka/sink/kafka"
	"github.com/atkafka/atkafka/testenv"
	"github.com/atkafka/atkafka/transform"
	"github.com/atkafka/atkafka/transform/format"
)

// e2e is a real network for end-to-end tests: the reference PLC and PDS, Tap following the PDS, and Kafka.
type e2e struct {
	env   *testenv.DevEnv
	kafka testenv.KafkaEnv
	tap   *testenv.Tap
	topic string
	dlq   string
	// pipeline renders the records; nil for the standard format.
	pipeline *transform.Pipeline
}

// startE2E starts the peers; Tap redelivers unacked events after retry (Tap's default when zero).
func startE2E(t testing.TB, retry time.Duration, disableAcks bool) *e2e {
	t.Helper()
	return startE2EWith(t, testenv.Kafka(t), retry, disableAcks)
}

// startE2EWith is startE2E with a given Kafka (a private one, for benchmarks that must not share the broker).
func startE2EWith(t testing.TB, k testenv.KafkaEnv, retry time.Duration, disableAcks bool) *e2e {
	t.Helper()
	env := testenv.StartDevEnv(t, testenv.DevEnvOptions{})
	tp := testenv.StartTap(t, testenv.TapOptions{RelayURL: env.PDS[0].URL, PLCURL: env.PLCURL, RetryTimeout: retry,
		DisableAcks: disableAcks})
	return &e2e{env: env, kafka: k, tap: tp, topic: testenv.NewTopic(t), dlq: testenv.NewTopic(t) + "-dlq"}
}

// producer returns a Kafka sink writing to the test's topics, closed when the test ends.
func (e *e2e) producer(t testing.TB) *kafka.Producer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := kafka.New(ctx, kafka.Config{Brokers: []string{e.kafka.Brokers}, Topic: e.topic, ExtraTopics: []string{e.dlq},
		CreateTopic: true, Partitions: 4, Logger: slog.New(slog.NewTextHandler(t.Output(), nil))})
	if err != nil {
		t.Fatalf("kafka sink: %v", err)
	}
	t.Cleanup(func() { _ = p.Close(context.Background()) })
	return p
}

// expected is what one record in Kafka must hold.
type expected struct {
	action string
	cid    string
	record map[string]any // nil for deletes
	live   bool
}

// writes records what the test wrote to the network, keyed by did/collection/rkey/action.
type writes map[string]expected

func writeKey(did, collection, rkey, action string) string {
	return did + "/" + collection + "/" + rkey + "/" + action
}

func (w writes) create(uri, cid string, record map[string]any, live bool) {
	w[uriKey(uri, "create")] = expected{action: "create", cid: cid, record: record, live: live}
}

func splitURI(uri string) (did, collection, rkey string) {
	parts := strings.Split(strings.TrimPrefix(uri, "at://"), "/")
	return parts[0], parts[1], parts[2]
}

// outEvent is the standard event as consumers decode it: the output schema's Go type.
type outEvent = schema.Event

// decodeOut decodes a record in any format, as its consumers do.
func decodeOut(t testing.TB, r *kgo.Record) outEvent {
	t.Helper()
	data, _, _ := schematest.Check(t, schematest.TapEvent, r.Value)
	var ev outEvent
	if err := json.Unmarshal(data, &ev); err != nil {
		t.Fatalf("record value %s: %v", r.Value, err)
	}
	if string(r.Key) != ev.DID {
		t.Errorf("record key %q, did %q", r.Key, ev.DID)
	}
	return ev
}

func kgoHeader(r *kgo.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return "<absent>"
}

// checkRecords checks that every write arrived in Kafka as expected and that no other record event did.
// Duplicates (Tap's redeliveries) are allowed but must be identical.
func checkRecords(t testing.TB, recs []*kgo.Record, want writes) {
	t.Helper()
	got := map[string]bool{}
	for _, r := range recs {
		ev := decodeOut(t, r)
		op := ev.Operation
		if op == nil {
			continue
		}
		key := writeKey(ev.DID, op.Collection, op.Rkey, op.Action)
		w, ok := want[key]
		if !ok {
			t.Errorf("unexpected record event %s: %s", key, r.Value)
			continue
		}
		got[key] = true
		if ev.Live == nil || *ev.Live != w.live || kgoHeader(r, "live") != fmt.Sprint(w.live) {
			t.Errorf("%s: live %v header %q, want %v", key, ev.Live, kgoHeader(r, "live"), w.live)
		}
		if op.CID != w.cid || op.URI != "at://"+ev.DID+"/"+op.Collection+"/"+op.Rkey || op.Path != op.Collection+"/"+op.Rkey {
			t.Errorf("%s: cid %q uri %q path %q, want cid %q", key, op.CID, op.URI, op.Path, w.cid)
		}
		for h, v := range map[string]string{"did": ev.DID, "collection": op.Collection, "rkey": op.Rkey} {
			if kgoHeader(r, h) != v {
				t.Errorf("%s: header %s = %q, want %q", key, h, kgoHeader(r, h), v)
			}
		}
		if kgoHeader(r, "rev") == "" || kgoHeader(r, "rev") == "<absent>" {
			t.Errorf("%s: no rev header", key)
		}
		var rec map[string]any
		if len(op.Record) > 0 {
			if err := json.Unmarshal(op.Record, &rec); err != nil {
				t.Errorf("%s: record %s: %v", key, op.Record, err)
			}
		}
		if !reflect.DeepEqual(rec, w.record) {
			t.Errorf("%s: record\n got %v\nwant %v", key, rec, w.record)
		}
		if ca, ok := w.record["createdAt"].(string); ok && ev.Timestamp != ca {
			t.Errorf("%s: timestamp %q, want the record's createdAt %q", key, ev.Timestamp, ca)
		}
	}
	for key := range want {
		if !got[key] {
			t.Errorf("missing in Kafka: %s", key)
		}
	}
}

// identityStates lists, per DID, the (handle, isActive, status) of its identity events and (active, status) of
// its account events, in Kafka order.
func identityStates(t testing.TB, recs []*kgo.Record) (identities, accounts map[string][]string) {
	identities, accounts = map[string][]string{}, map[string][]string{}
	for _, r := range recs {
		ev := decodeOut(t, r)
		switch {
		case ev.Identity != nil:
			identities[ev.DID] = append(identities[ev.DID], fmt.Sprintf("%s %v %s", ev.Identity.Handle, *ev.Identity.IsActive, ev.Identity.Status))
		case ev.Account != nil:
			accounts[ev.DID] = append(accounts[ev.DID], fmt.Sprintf("%v %s", ev.Account.Active, ev.Account.Status))
		}
	}
	return identities, accounts
}

func countOps(t testing.TB, recs []*kgo.Record) int {
	n := 0
	for _, r := range recs {
		if decodeOut(t, r).Operation != nil {
			n++
		}
	}
	return n
}

// TestEndToEnd backfills two accounts with existing records through a real Tap into a real Kafka, then follows
// their live records and account changes.
// TestEndToEnd runs in the standard format and in Osprey's coordinator format, whose events must be the same.
func TestEndToEnd(t *testing.T) {
	t.Parallel() // each test has its own network: overlap their start-up
	ids, _ := format.NewSnowflake(1)
	for _, f := range []struct {
		name string
		f    *format.Formatter
	}{{"standard", format.NewFormatter()}, {"coordinator", format.NewFormatter(format.Osprey(ids), format.Coordinator())}} {
		// One after the other: each reads the global reconnect counter.
		t.Run(f.name, func(t *testing.T) { testEndToEnd(t, f.f) })
	}
}

func testEndToEnd(t *testing.T, f *format.Formatter) {
	e := startE2E(t, 3*time.Second, false)
	e.pipeline = &transform.Pipeline{Formatter: f}
	env := e.env
	alice := env.CreateAccount(env.PDS[0], "alice")
	bob := env.CreateAccount(env.PDS[0], "bob")

	want := writes{}
	var alicePosts []string
	for i := range 3 {
		uri, cid := env.Post(alice, fmt.Sprintf("alice post %d <&> ü 🦋", i))
		alicePosts = append(alicePosts, uri)
		want.create(uri, cid, getRecord(t, env, alice, uri), false)
	}
	bobPost, bobPostCID := env.Post(bob, "bob post")
	want.create(bobPost, bobPostCID, getRecord(t, env, bob, bobPost), false)
	uri, cid := env.Like(alice, bobPost, bobPostCID)
	want.create(uri, cid, getRecord(t, env, alice, uri), false)
	uri, cid = env.Follow(bob, alice.DID)
	want.create(uri, cid, getRecord(t, env, bob, uri), false)
	uri, cid = env.UpsertProfile(alice, "Alice", "existing profile")
	want.create(uri, cid, getRecord(t, env, alice, uri), false)
	// Deleted before the backfill: Tap's resync never sees it, and never emits deletes.
	env.DeleteRecord(alice, alicePosts[2])
	delete(want, uriKey(alicePosts[2], "create"))

	src := e.runSource(t, false)
	e.tap.AddRepos(alice.DID, bob.DID)
	// Tap delivers one DID's events one ack at a time, so the read must wait for all of them, the identity and
	// account event of each DID included, not stop at a quiet second.
	recs := testenv.ReadAll(t, e.kafka.Brokers, e.topic, len(want)+2*2, 60*time.Second)
	checkRecords(t, recs, want)
	if t.Failed() {
		t.FailNow()
	}

	// Tap restarts: the Source reconnects by itself.
	reconnects := tallyOf(src).Get("reconnect read")
	e.tap.Restart()
	waitFor(t, 30*time.Second, "reconnected to the restarted Tap", func() bool {
		return src.Connected() && tallyOf(src).Get("reconnect read") > reconnects
	})

	// Live traffic once the backfill is in.
	uri, cid = env.Post(alice, "live post")
	want.create(uri, cid, getRecord(t, env, alice, uri), true)
	uri, cid = env.Like(bob, alicePosts[0], want[uriKey(alicePosts[0], "create")].cid)
	want.create(uri, cid, getRecord(t, env, bob, uri), true)
	env.DeleteRecord(alice, alicePosts[1])
	want[uriKey(alicePosts[1], "delete")] = expected{action: "delete", live: true}
	uri, cid = env.UpsertProfile(alice, "Alice", "updated profile")
	want[uriKey(uri, "update")] = expected{action: "update", cid: cid, record: getRecord(t, env, alice, uri), live: true}
	// Handles: Tap verifies them both ways, and .test handles do not resolve here, so Tap reports every handle as
	// handle.invalid and a handle change makes no event. Account status changes do.
	env.Deactivate(bob)
	env.Activate(bob)

	recs = testenv.ReadAll(t, e.kafka.Brokers, e.topic, len(want)+2*4, 60*time.Second)
	checkRecords(t, recs, want)
	if n := countOps(t, recs); n != len(want) {
		t.Logf("%d record events for %d writes: Tap redelivered some", n, len(want))
	}
	identities, accounts := identityStates(t, recs)
	for did, want := range map[string][]string{
		alice.DID: {"handle.invalid true active"}, // from the backfill
		bob.DID:   {"handle.invalid true active", "handle.invalid false deactivated", "handle.invalid true active"},
	} {
		// A redelivered event repeats in place: Tap holds a DID's next event until the previous one is acked.
		if got := slices.Compact(identities[did]); !reflect.DeepEqual(got, want) {
			t.Errorf("identity events of %s: %q, want %q", did, got, want)
		}
	}
	for did, want := range map[string][]string{
		alice.DID: {"true "},
		bob.DID:   {"true ", "false deactivated", "true "},
	} {
		if got := slices.Compact(accounts[did]); !reflect.DeepEqual(got, want) {
			t.Errorf("account events of %s: %q, want %q", did, got, want)
		}
	}
	e.tap.WaitOutboxEmpty(30 * time.Second)
	if !src.Connected() || src.LastProgress().IsZero() {
		t.Errorf("Connected %v, LastProgress %v", src.Connected(), src.LastProgress())
	}
}

// waitFor polls cond until it holds, failing the test after timeout.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not %s after %s", what, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func uriKey(uri, action string) string {
	did, coll, rkey := splitURI(uri)
	return writeKey(did, coll, rkey, action)
}

// getRecord reads a record back from the PDS, the truth Kafka is compared with.
func getRecord(t testing.TB, env *testenv.DevEnv, acct *testenv.Account, uri string) map[string]any {
	t.Helper()
	did, coll, rkey := splitURI(uri)
	var out struct {
		Value map[string]any `json:"value"`
	}
	err := env.XRPC(testenv.XRPCRequest{Service: acct.PDS, NSID: "com.atproto.repo.getRecord",
		Params: map[string][]string{"repo": {did}, "collection": {coll}, "rkey": {rkey}}}, &out)
	if err != nil {
		t.Fatalf("getRecord %s: %v", uri, err)
	}
	return out.Value
}

// runSource runs a Source with a real Kafka sink until the test ends.
func (e *e2e) runSource(t *testing.T, disableAcks bool) *Source {
	t.Helper()
	src, _ := startSource(t, Config{Host: e.tap.ChannelURL(), Sink: e.producer(t), DeadLetterTopic: e.dlq,
		DisableAcks: disableAcks, Pipeline: e.pipeline})
	return src
}
