package e2e

import (
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/atkafka/atkafka/testenv"
)

// fleet is one atkafka configuration, run as one process per PDS firehose it follows (a PDS serves only its own
// accounts), all writing to one topic. That topic is what a single instance on a relay carrying both PDSes would
// produce.
type fleet struct {
	name  string
	procs []*atkafka
	pds   []int // procs[i] follows PDS pds[i]
	topic string
}

// startFleet starts a fleet following the given PDSes of env from their first event (--cursor 0), so nothing
// depends on how fast the processes connect.
func startFleet(t *testing.T, env *testenv.DevEnv, name string, pds []int, extraEnv []string, args ...string) *fleet {
	t.Helper()
	f := &fleet{name: name, pds: pds, topic: testenv.NewTopic(t) + "-" + name}
	for _, i := range pds {
		f.procs = append(f.procs, startAtkafka(t, runConfig{Topic: f.topic, Env: extraEnv,
			Args: append(relayArgs(env.PDS[i].WebsocketURL(), "--plc-host", env.PLCURL, "--cursor", "0"), args...)}))
	}
	return f
}

// waitCommitted waits until every process of the fleet committed its PDS's firehose up to marks[pds].
func (f *fleet) waitCommitted(marks map[int]int64) {
	for i, p := range f.procs {
		p.WaitCommitted(marks[f.pds[i]], 2*time.Minute)
	}
}

// relayArgs are the arguments of `atkafka firehose relay` following host, plus extra.
func relayArgs(host string, extra ...string) []string {
	return append([]string{"firehose", "relay", "--relay-host", host}, extra...)
}

// eventKey identifies a produced event across topics: account, seq, kind and, for operations, the record path,
// since one commit can hold several ops.
func eventKey(r record, e *event) string {
	key := fmt.Sprintf("%s %d %s", e.DID, r.Seq, e.Kind())
	if e.Operation != nil {
		key += " " + e.Operation.Action + " " + e.Operation.Rkey
	}
	return key
}

// TestDevEnvFiltersAndEnrichment runs the binary against the reference PLC and two PDSes with real traffic. One
// network serves every case: each filter configuration runs as its own fleet beside an unfiltered one, whose
// topic is the reference the filtered topics must be exact subsets of. Then the PLC is stopped under a fleet
// started cold.
func TestDevEnvFiltersAndEnrichment(t *testing.T) {
	t.Parallel()
	k := testenv.Kafka(t)
	env := testenv.StartDevEnv(t, testenv.DevEnvOptions{SecondPDS: true})
	pds1, pds2 := env.PDS[0], env.PDS[1]
	pds1HostPort := hostPort(t, pds1.PublicURL) // localhost:PORT; PDS 2's documents say 127.0.0.1:PORT

	all := startFleet(t, env, "all", []int{0, 1}, nil)
	filtered := []struct {
		fleet *fleet
		// keep says which events of the unfiltered topic this fleet must produce; pds is the account's PDS.
		keep func(e *event, pds int) bool
	}{
		{startFleet(t, env, "watched-services", []int{0, 1}, nil, "--watched-services", pds1HostPort),
			func(_ *event, pds int) bool { return pds == 0 }},
		{startFleet(t, env, "ignored-services", []int{0, 1}, nil, "--ignored-services", pds1HostPort),
			func(_ *event, pds int) bool { return pds == 1 }},
		// The synonym documented elsewhere, as an environment variable, with a bare IP host (no port), and with
		// enrichment off: service filtering still resolves PDSes, but no event carries eventMetadata.
		{startFleet(t, env, "matched-services-env", []int{0, 1}, []string{"ATKAFKA_MATCHED_SERVICES=127.0.0.1"}, "--enrich=false"),
			func(_ *event, pds int) bool { return pds == 1 }},
		// Collection rules apply to operations only: account, identity and sync events pass.
		{startFleet(t, env, "watched-collections", []int{0}, nil, "--watched-collections", "app.bsky.feed.*"),
			func(e *event, pds int) bool {
				return pds == 0 && (e.Operation == nil || strings.HasPrefix(e.Operation.Collection, "app.bsky.feed."))
			}},
		{startFleet(t, env, "ignored-collections", []int{0}, nil, "--ignored-collections", "app.bsky.feed.like,app.bsky.actor.profile"),
			func(e *event, pds int) bool {
				return pds == 0 && (e.Operation == nil || !slices.Contains([]string{"app.bsky.feed.like", "app.bsky.actor.profile"}, e.Operation.Collection))
			}},
	}

	// Traffic on both PDSes: every collection the filters name, plus account and identity events.
	alice, bob := env.CreateAccount(pds1, "alice"), env.CreateAccount(pds1, "bob")
	carol, dave := env.CreateAccount(pds2, "carol"), env.CreateAccount(pds2, "dave")
	pdsOf := map[string]int{alice.DID: 0, bob.DID: 0, carol.DID: 1, dave.DID: 1}
	post, postCID := env.Post(alice, "hello from alice")
	env.Like(bob, post, postCID)
	env.Follow(alice, bob.DID)
	env.UpsertProfile(alice, "Alice", "on the first PDS")
	post2, post2CID := env.Post(carol, "hello from carol")
	env.Like(dave, post2, post2CID)
	env.Follow(carol, dave.DID)
	env.UpsertProfile(carol, "Carol", "on the second PDS")
	env.Deactivate(dave)

	// The handle change comes once the unfiltered fleet has cached alice's document, so that only the
	// #identity event's invalidation can make the next event show the new handle.
	allReader := newTopicReader(t, k.Brokers, all.topic)
	allReader.find(t, time.Minute, "alice's first post in the unfiltered topic", func(e *event) bool {
		return e.Operation != nil && e.Operation.URI == post
	})
	oldHandle, docBefore := alice.Handle, testenv.CurrentPLCFormat(t, alice.DID, getJSON(t, env.PLCURL+"/"+alice.DID))
	env.UpdateHandle(alice, "alice-renamed")
	renamedPost, _ := env.Post(alice, "after the rename")
	marker1, _ := env.Post(bob, "last on the first PDS")
	marker2, _ := env.Post(carol, "last on the second PDS")

	marks := map[int]int64{}
	for pds, uri := range []string{marker1, marker2} {
		r, _ := allReader.find(t, time.Minute, "the last post of PDS "+fmt.Sprint(pds+1), func(e *event) bool {
			return e.Operation != nil && e.Operation.URI == uri
		})
		marks[pds] = r.Seq
	}
	all.waitCommitted(marks)
	reference := readRecords(t, k.Brokers, all.topic, len(allReader.recs))

	t.Run("filters", func(t *testing.T) {
		for _, c := range filtered {
			t.Run(c.fleet.name, func(t *testing.T) {
				t.Parallel()
				var want []string
				for _, r := range reference {
					if e := decodeEvent(t, r.Value); c.keep(e, pdsOf[e.DID]) {
						want = append(want, eventKey(r, e))
					}
				}
				// The cursor moves over filtered frames too, or this wait would time out.
				c.fleet.waitCommitted(marks)
				var got []string
				for _, r := range readRecords(t, k.Brokers, c.fleet.topic, len(want)) {
					e := decodeEvent(t, r.Value)
					got = append(got, eventKey(r, e))
					if enrichOff := c.fleet.name == "matched-services-env"; enrichOff != (e.EventMetadata == nil) {
						t.Errorf("eventMetadata %s in %s", e.EventMetadata, r.Value)
					}
				}
				compareKeys(t, got, want)
			})
		}
	})

	t.Run("enrichment", func(t *testing.T) {
		docs := map[string][]byte{}
		created := map[string]string{}
		for did := range pdsOf {
			// dev-env's PLC serves an older document format than plc.directory's, which atkafka renders.
			docs[did] = testenv.CurrentPLCFormat(t, did, getJSON(t, env.PLCURL+"/"+did))
			var audit []struct {
				CreatedAt string `json:"createdAt"`
			}
			if err := json.Unmarshal(getJSON(t, env.PLCURL+"/"+did+"/log/audit"), &audit); err != nil || len(audit) == 0 {
				t.Fatalf("audit log of %s: %v", did, err)
			}
			created[did] = audit[0].CreatedAt
		}
		handles := map[string]string{alice.DID: alice.Handle, bob.DID: bob.Handle, carol.DID: carol.Handle, dave.DID: dave.Handle}
		publicURL := []string{pds1.PublicURL, pds2.PublicURL}
		renamed := false // alice's events until her #identity event carry the old document
		sawRenamedPost := false
		for _, r := range reference {
			e := decodeEvent(t, r.Value)
			m := meta(t, e)
			if m == nil {
				t.Errorf("no eventMetadata: %s", r.Value)
				continue
			}
			wantDoc, wantHandle := docs[e.DID], handles[e.DID]
			if e.DID == alice.DID {
				renamed = renamed || (e.Identity != nil && e.Identity.Handle == alice.Handle)
				if !renamed {
					wantDoc, wantHandle = docBefore, oldHandle
				}
			}
			age := time.Since(mustTime(t, created[e.DID])).Seconds()
			if !testenv.JSONEqual(m.DIDDocument, wantDoc) || m.PDSHost != publicURL[pdsOf[e.DID]] || m.Handle != wantHandle ||
				m.DIDCreatedAt != created[e.DID] || m.AccountAge == nil || *m.AccountAge < 0 || float64(*m.AccountAge) > age+1 {
				t.Errorf("%s: eventMetadata %s; want didDocument %s, pdsHost %s, handle %s, didCreatedAt %s, accountAge in [0, %.0f]",
					eventKey(r, e), e.EventMetadata, wantDoc, publicURL[pdsOf[e.DID]], wantHandle, created[e.DID], age)
			}
			if e.Operation != nil && e.Operation.URI == renamedPost {
				sawRenamedPost = true
				if m.Handle != alice.Handle {
					t.Errorf("the post after the handle change carries handle %q, want %q", m.Handle, alice.Handle)
				}
			}
		}
		if !renamed || !sawRenamedPost {
			t.Errorf("#identity event with alice's new handle %s found: %v; post after it found: %v", alice.Handle, renamed, sawRenamedPost)
		}
	})

	t.Run("plc-outage", func(t *testing.T) {
		env.StopPLC()
		stopped := true
		t.Cleanup(func() {
			if stopped {
				env.StartPLC()
			}
		})
		// Started while the PLC is down, so nothing is cached: every lookup fails. A short timeout keeps the
		// replay quick; the point is that events flow and none is lost.
		cold := startFleet(t, env, "cold", []int{0}, nil, "--enrich-timeout", "500ms")
		outage, _ := env.Post(alice, "while the PLC is down")
		coldReader := newTopicReader(t, k.Brokers, cold.topic)
		r, _ := coldReader.find(t, time.Minute, "the post made during the outage", func(e *event) bool {
			return e.Operation != nil && e.Operation.URI == outage
		})
		cold.waitCommitted(map[int]int64{0: r.Seq})
		var want []string
		for _, r := range reference {
			if e := decodeEvent(t, r.Value); pdsOf[e.DID] == 0 {
				want = append(want, eventKey(r, e))
			}
		}
		var got []string
		for _, r := range readRecords(t, k.Brokers, cold.topic, len(want)+1) {
			e := decodeEvent(t, r.Value)
			if e.Operation != nil && e.Operation.URI == outage {
				continue // not in the reference, which was read before
			}
			got = append(got, eventKey(r, e))
			if m := meta(t, e); m == nil || m.DIDDocument != nil || m.PDSHost != "" || m.AccountAge == nil || *m.AccountAge != -1 {
				t.Errorf("metadata although the PLC is down: %s", r.Value)
			}
		}
		compareKeys(t, got, want)
		// The unfiltered fleet, warm, still enriches from its cache.
		_, e := allReader.find(t, time.Minute, "the outage post in the unfiltered topic", func(e *event) bool {
			return e.Operation != nil && e.Operation.URI == outage
		})
		if m := meta(t, e); m == nil || m.PDSHost != pds1.PublicURL {
			t.Errorf("warm cache lost metadata during the outage: %s", e.EventMetadata)
		}

		env.StartPLC()
		stopped = false
		// Failed lookups are remembered for a few seconds: post until an event is enriched again.
		n := 0
		eventually(t, time.Minute, "metadata to return after the PLC restarted", func() error {
			n++
			uri, _ := env.Post(alice, fmt.Sprintf("PLC back, try %d", n))
			_, e := coldReader.find(t, time.Minute, "post "+uri, func(e *event) bool {
				return e.Operation != nil && e.Operation.URI == uri
			})
			if m := meta(t, e); m == nil || m.PDSHost != pds1.PublicURL || m.Handle != alice.Handle {
				return fmt.Errorf("eventMetadata %s", e.EventMetadata)
			}
			return nil
		})
	})
}

// hostPort returns the host:port of an http URL with an explicit port, the form of a service pattern that tells
// two local PDSes apart.
func hostPort(t testing.TB, raw string) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil || u.Port() == "" {
		t.Fatalf("%q is not a URL with a port: %v", raw, err)
	}
	return u.Host
}

func mustTime(t testing.TB, s string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// compareKeys fails the test unless got and want hold the same event keys the same number of times, listing
// what is missing and what is extra.
func compareKeys(t testing.TB, got, want []string) {
	t.Helper()
	count := map[string]int{}
	for _, k := range want {
		count[k]++
	}
	for _, k := range got {
		count[k]--
	}
	var missing, extra []string
	for k, n := range count {
		for ; n > 0; n-- {
			missing = append(missing, k)
		}
		for ; n < 0; n++ {
			extra = append(extra, k)
		}
	}
	slices.Sort(missing)
	slices.Sort(extra)
	if len(missing)+len(extra) > 0 {
		t.Errorf("%d events, want %d; missing %q; unexpected %q", len(got), len(want), missing, extra)
	}
}
