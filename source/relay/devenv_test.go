package relay

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/atkafka/atkafka/schema/schematest"
	"github.com/atkafka/atkafka/testenv"
	"github.com/atkafka/atkafka/transform"
	"github.com/atkafka/atkafka/transform/format"
)

// TestDevEnvEndToEnd subscribes straight to the reference PDS's firehose and makes real traffic: every op,
// handle change, deactivation and takedown comes out as the expected record, in standard and Osprey format.
func TestDevEnvEndToEnd(t *testing.T) {
	k := testenv.Kafka(t)
	env := testenv.StartDevEnv(t, testenv.DevEnvOptions{})
	pds := env.PDS[0]

	standard, osprey := newTopics(t, k.Brokers), newTopics(t, k.Brokers)
	ids, _ := format.NewSnowflake(3)
	for _, c := range []struct {
		topics   kafkaTopics
		pipeline *transform.Pipeline
	}{
		{standard, standardPipeline()},
		{osprey, &transform.Pipeline{Formatter: format.NewFormatter(format.Osprey(ids))}},
	} {
		cfg := testConfig(t, pds.WebsocketURL(), c.topics.producer(t))
		cfg.DeadLetterTopic, cfg.StartCursor, cfg.Pipeline = c.topics.dead, "0", c.pipeline
		start(t, cfg)
	}

	alice, bob, carol := env.CreateAccount(pds, "alice"), env.CreateAccount(pds, "bob"), env.CreateAccount(pds, "carol")
	want := newExpectations()
	post1, post1CID := env.Post(alice, "hello from alice")
	want.op(post1, "create", post1CID, `"text":"hello from alice"`)
	post2, post2CID := env.Post(bob, "hello from bob")
	want.op(post2, "create", post2CID, `"text":"hello from bob"`)
	like, likeCID := env.Like(bob, post1, post1CID)
	want.op(like, "create", likeCID, `"uri":"`+post1+`"`)
	follow, followCID := env.Follow(alice, bob.DID)
	want.op(follow, "create", followCID, `"subject":"`+bob.DID+`"`)
	profile, profileCID := env.UpsertProfile(alice, "Alice", "first")
	want.op(profile, "create", profileCID, `"displayName":"Alice"`)
	_, profileCID2 := env.UpsertProfile(alice, "Alice A.", "second")
	want.op(profile, "update", profileCID2, `"displayName":"Alice A."`)
	env.DeleteRecord(bob, post2)
	want.op(post2, "delete", "", "")
	env.DeleteRecord(bob, like)
	want.op(like, "delete", "", "")
	env.UpdateHandle(alice, "alice-renamed")
	want.event(alice.DID+" identity", `"handle":"alice-renamed.test"`)
	env.Deactivate(carol)
	want.event(carol.DID+" account", `"active":false`, `"status":"deactivated"`)
	env.Takedown(bob)
	want.event(bob.DID+" account", `"active":false`, `"status":"takendown"`)

	for _, c := range []struct {
		name   string
		topics kafkaTopics
	}{{"standard", standard}, {"osprey", osprey}} {
		t.Run(c.name, func(t *testing.T) {
			// Creating an account also emits #identity, #account (active) and #sync of the new repo.
			const perAccount = 3
			dids := []string{alice.DID, bob.DID, carol.DID}
			records := c.topics.read(t, c.topics.topic, want.count()+perAccount*len(dids))
			want.check(t, records, dids)
			if len(records) != want.count()+perAccount*len(dids) {
				t.Errorf("%d records, want %d", len(records), want.count()+perAccount*len(dids))
			}
			if c.name == "osprey" {
				checkFormat(t, schematest.Worker, records)
			}
			if dl := testenv.ReadAll(t, k.Brokers, c.topics.dead, 0, time.Second); len(dl) != 0 {
				t.Errorf("%d dead letters, want none", len(dl))
			}
		})
	}
}

// expectations lists the events a test's traffic must produce, by event key, with fragments their JSON must
// hold.
type expectations struct {
	keys      []string
	fragments map[string][]string
	cids      map[string]string
}

func newExpectations() *expectations {
	return &expectations{fragments: map[string][]string{}, cids: map[string]string{}}
}

// op expects one operation on the record at uri (at://did/collection/rkey).
func (x *expectations) op(uri, action, cid string, fragments ...string) {
	parts := strings.Split(strings.TrimPrefix(uri, "at://"), "/")
	key := strings.Join([]string{parts[0], action, parts[1], parts[2]}, " ")
	x.event(key, fragments...)
	x.cids[key] = cid
}

func (x *expectations) event(key string, fragments ...string) {
	x.keys = append(x.keys, key)
	x.fragments[key] = slices.DeleteFunc(fragments, func(s string) bool { return s == "" })
}

func (x *expectations) count() int { return len(x.keys) }

// check checks that records hold exactly the expected ops (once each), the expected identity and account
// events, and no event of any other DID. Account creation adds identity and account events of its own, which
// are allowed.
func (x *expectations) check(t *testing.T, records []record, dids []string) {
	t.Helper()
	byKey := map[string][]event{}
	raw := map[string][]string{}
	for _, r := range records {
		e := decodeEvent(t, r.Value)
		if !slices.Contains(dids, e.DID) {
			t.Errorf("event of an unknown DID: %s", r.Value)
		}
		if r.Key != e.DID || r.Header("seq") == "" {
			t.Errorf("record key %q, seq header %q for %s", r.Key, r.Header("seq"), e.key())
		}
		if e.Sync != nil && (e.Sync.Rev == "" || !strings.HasPrefix(e.Sync.Commit, "bafy")) {
			t.Errorf("sync event without rev or commit: %s", r.Value)
		}
		byKey[e.key()] = append(byKey[e.key()], e)
		j, _ := json.Marshal(e)
		raw[e.key()] = append(raw[e.key()], string(j))
	}
	for _, key := range x.keys {
		evs := byKey[key]
		found := slices.IndexFunc(raw[key], func(j string) bool {
			return !slices.ContainsFunc(x.fragments[key], func(f string) bool { return !strings.Contains(j, f) })
		})
		if found < 0 {
			t.Errorf("no %s event holding %q; got %q", key, x.fragments[key], raw[key])
			continue
		}
		if evs[found].Operation == nil {
			continue
		}
		if len(evs) != 1 {
			t.Errorf("%s produced %d times", key, len(evs))
		}
		if op := evs[found].Operation; op.CID != x.cids[key] || (op.Action == "delete") != (op.Record == nil) {
			t.Errorf("%s: cid %q (want %q), record %s", key, op.CID, x.cids[key], op.Record)
		}
	}
	for key, evs := range byKey {
		if evs[0].Operation != nil && !slices.Contains(x.keys, key) {
			t.Errorf("unexpected op %s", key)
		}
	}
	t.Logf("%d records: %s", len(records), summarize(byKey))
}

func summarize(byKey map[string][]event) string {
	kinds := map[string]int{}
	for _, evs := range byKey {
		for _, e := range evs {
			kind := strings.Fields(e.key())[1]
			kinds[kind]++
		}
	}
	return fmt.Sprint(kinds)
}
