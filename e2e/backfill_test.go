package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/atkafka/atkafka/schema/schematest"
	"github.com/atkafka/atkafka/source/backfill"
	"github.com/atkafka/atkafka/testenv"
)

// backfillCollections are the collections the seeded accounts write.
var backfillCollections = []string{"app.bsky.feed.post", "app.bsky.feed.like", "app.bsky.feed.repost",
	"app.bsky.graph.follow", "app.bsky.actor.profile"}

// seedPerPDS accounts are seeded on each PDS.
const seedPerPDS = 150

// seedShape is what one seeded account holds.
type seedShape struct {
	records int // besides the profile
	// deleteTenths deletes every tenth record (the first one included) in a later commit, rewriteProfile
	// updates the profile in that commit.
	deleteTenths, rewriteProfile bool
	status                       string // "deactivated", "takendown" or "" (active)
}

// shapeOf shapes account i of each PDS like the network: most accounts a handful of records, every 40th
// 100-300 (an MST several levels deep, written in applyWrites batches as a busy client or an import would), some
// with deletes and a rewritten profile, and six per PDS deactivated or taken down once seeded (one of them large).
func shapeOf(i int) seedShape {
	s := seedShape{records: 3 + i%5, deleteTenths: i%5 == 0, rewriteProfile: i%7 == 0}
	if i%40 == 3 {
		s.records, s.deleteTenths = 100+66*(i/40), true
	}
	switch i % 50 {
	case 3:
		s.status = "deactivated"
	case 7:
		s.status = "takendown"
	}
	return s
}

// seedAccounts creates seedPerPDS accounts on each PDS, shaped by shapeOf, and returns them in order (PDS, then
// i) with the status of each inactive one by DID. Each account takes one createAccount, an applyWrites per 100
// records (the PDS takes up to 200) and one more for its deletes and update: a few requests per account keep
// seeding to seconds.
func seedAccounts(t *testing.T, env *testenv.DevEnv) (accts []*testenv.Account, inactive map[string]string) {
	t.Helper()
	accts = make([]*testenv.Account, len(env.PDS)*seedPerPDS)
	parallel(t, len(accts), func(k int) error {
		p, i := k/seedPerPDS, k%seedPerPDS
		var err error
		accts[k], err = seedAccount(env, env.PDS[p], fmt.Sprintf("bf%d-%d.test", p, i), shapeOf(i))
		return err
	})
	// The helpers fail the test, so from the test goroutine: a dozen requests.
	inactive = map[string]string{}
	for k, a := range accts {
		switch status := shapeOf(k % seedPerPDS).status; status {
		case "deactivated":
			env.Deactivate(a)
			inactive[a.DID] = status
		case "takendown":
			env.Takedown(a)
			inactive[a.DID] = status
		}
	}
	return accts, inactive
}

func seedAccount(env *testenv.DevEnv, pds testenv.PDS, handle string, s seedShape) (*testenv.Account, error) {
	// No password: hashing it (scrypt) was about a third of the network's CPU time in seeding, and the session
	// createAccount opens is all the test needs.
	acct := &testenv.Account{PDS: pds.URL}
	if err := env.XRPC(testenv.XRPCRequest{Service: pds.URL, NSID: "com.atproto.server.createAccount", Procedure: true,
		Input: map[string]any{"handle": handle, "email": handle + "@example.com"}}, acct); err != nil {
		return nil, err
	}
	profile := map[string]any{"$type": "app.bsky.actor.profile", "displayName": "Backfill " + handle}
	writes := []any{map[string]any{"$type": "com.atproto.repo.applyWrites#create", "collection": "app.bsky.actor.profile",
		"rkey": "self", "value": profile}}
	now := time.Now().UTC()
	for j := range s.records {
		coll, v := seedRecord(handle, j, now.Add(time.Duration(j)*time.Millisecond).Format("2006-01-02T15:04:05.000Z"))
		v["$type"] = coll
		writes = append(writes, map[string]any{"$type": "com.atproto.repo.applyWrites#create", "collection": coll, "value": v})
	}
	var uris []string
	for batch := range slices.Chunk(writes, 100) {
		var out struct {
			Results []struct {
				URI string `json:"uri"`
			} `json:"results"`
		}
		if err := applyWrites(env, acct, batch, &out); err != nil {
			return nil, err
		}
		for _, r := range out.Results {
			uris = append(uris, r.URI)
		}
	}
	var later []any
	for j := 0; s.deleteTenths && j < s.records; j += 10 {
		parts := uriParts(uris[1+j])
		later = append(later, map[string]any{"$type": "com.atproto.repo.applyWrites#delete", "collection": parts[1], "rkey": parts[2]})
	}
	if s.rewriteProfile {
		profile["description"] = "rewritten after the first commit"
		later = append(later, map[string]any{"$type": "com.atproto.repo.applyWrites#update", "collection": "app.bsky.actor.profile",
			"rkey": "self", "value": profile})
	}
	if len(later) > 0 {
		if err := applyWrites(env, acct, later, nil); err != nil {
			return nil, err
		}
	}
	return acct, nil
}

// uriParts splits at://DID/collection/rkey.
func uriParts(uri string) []string { return strings.Split(strings.TrimPrefix(uri, "at://"), "/") }

func applyWrites(env *testenv.DevEnv, acct *testenv.Account, writes []any, out any) error {
	return env.XRPC(testenv.XRPCRequest{Service: acct.PDS, NSID: "com.atproto.repo.applyWrites", Procedure: true, Auth: acct.Bearer(),
		Input: map[string]any{"repo": acct.DID, "writes": writes}}, out)
}

// seedRecord is an account's j-th record: posts (some replies, some with non-ASCII text), likes, reposts and
// follows in turn. Each is distinct, so no two share a CID; subjects need not exist.
func seedRecord(handle string, j int, createdAt string) (collection string, record map[string]any) {
	ref := map[string]any{"uri": fmt.Sprintf("at://did:plc:ewvi7nxzyoun6zhxrhs64oiz/app.bsky.feed.post/3kabcdefg%04d", j),
		"cid": "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"}
	switch j % 6 {
	case 0:
		return "app.bsky.feed.post", map[string]any{"text": fmt.Sprintf("post %d of %s", j, handle), "createdAt": createdAt}
	case 1:
		return "app.bsky.feed.like", map[string]any{"subject": ref, "createdAt": createdAt}
	case 2:
		return "app.bsky.graph.follow", map[string]any{"subject": "did:plc:ewvi7nxzyoun6zhxrhs64oiz", "createdAt": createdAt}
	case 3:
		return "app.bsky.feed.post", map[string]any{"text": fmt.Sprintf("reply %d, with ünïcode 🎉", j), "createdAt": createdAt,
			"langs": []any{"en"}, "reply": map[string]any{"root": ref, "parent": ref}}
	case 4:
		return "app.bsky.feed.repost", map[string]any{"subject": ref, "createdAt": createdAt}
	default:
		return "app.bsky.feed.post", map[string]any{"text": fmt.Sprintf("post %d", j), "createdAt": createdAt}
	}
}

// pdsRecord is one record as the PDS serves it.
type pdsRecord struct {
	CID   string          `json:"cid"`
	Value json.RawMessage `json:"value"`
}

// pdsState lists every record of accts (listRecords per collection, page by page), keyed by at:// URI: the truth.
func pdsState(t *testing.T, env *testenv.DevEnv, accts []*testenv.Account) map[string]pdsRecord {
	t.Helper()
	state := map[string]pdsRecord{}
	var mu sync.Mutex
	parallel(t, len(accts)*len(backfillCollections), func(i int) error {
		acct, coll := accts[i/len(backfillCollections)], backfillCollections[i%len(backfillCollections)]
		params := url.Values{"repo": {acct.DID}, "collection": {coll}, "limit": {"100"}}
		for {
			var page struct {
				Records []struct {
					URI string `json:"uri"`
					pdsRecord
				} `json:"records"`
				Cursor string `json:"cursor"`
			}
			if err := env.XRPC(testenv.XRPCRequest{Service: acct.PDS, NSID: "com.atproto.repo.listRecords", Params: params}, &page); err != nil {
				return err
			}
			mu.Lock()
			for _, r := range page.Records {
				state[r.URI] = r.pdsRecord
			}
			mu.Unlock()
			if page.Cursor == "" || len(page.Records) == 0 {
				return nil
			}
			params.Set("cursor", page.Cursor)
		}
	})
	return state
}

// parallel runs f(0..n-1) on 16 goroutines, failing the test with the first error.
func parallel(t *testing.T, n int, f func(i int) error) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	next := make(chan int)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := f(i); err != nil {
					errs <- err
				}
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func jsonEqual(a, b []byte) bool {
	var x, y any
	return json.Unmarshal(a, &x) == nil && json.Unmarshal(b, &y) == nil && reflect.DeepEqual(x, y)
}

// TestBackfill runs the whole backfill against dev-env with two PDSes (300 accounts, seedAccounts): plan from each
// PDS's listRepos, three run instances through the binary, one killed with SIGKILL mid-way and one added, the live
// relay mode alongside with writes during the backfill. Every record is produced once (read_committed), equal to
// what getRecord serves, an inactive account gives its account event alone, the newest rev per record over both
// modes gives the PDSes' final state, and Tap's own backfill of the same repositories gives the same records.
func TestBackfill(t *testing.T) {
	env := testenv.StartDevEnv(t, testenv.DevEnvOptions{SecondPDS: true})
	brokers := testenv.Kafka(t).Brokers
	topic := testenv.NewTopic(t)
	group := topic + "-group"

	start := time.Now()
	accts, inactive := seedAccounts(t, env)
	t.Logf("seeded %d accounts (%d inactive) in %s", len(accts), len(inactive), time.Since(start).Round(time.Millisecond))
	seeded := time.Now()

	// The live firehose first: each PDS serves subscribeRepos itself.
	var relays []*atkafka
	for _, pds := range env.PDS {
		r := startAtkafka(t, runConfig{Topic: topic, Args: []string{"firehose", "relay", "--relay-host", pds.WebsocketURL(),
			"--enrich=false", "--plc-host", env.PLCURL}})
		relays = append(relays, r)
	}
	for _, r := range relays {
		eventually(t, time.Minute, "relay connected", func() error {
			code, body, err := r.get("/readyz")
			if err != nil || code != http.StatusOK {
				return fmt.Errorf("readyz %d %s %v", code, body, err)
			}
			return nil
		})
	}

	common := []string{"--backfill-group", group, "--plc-host", env.PLCURL, "--plc-rate-limit", "-1"}
	for _, pds := range env.PDS {
		plan := startAtkafka(t, runConfig{Topic: topic, Args: append([]string{"backfill", "plan", "--backfill-source", pds.URL,
			"--backfill-partitions", "6", "--backfill-page-size", "37"}, common...)})
		if code := plan.Wait(time.Minute); code != 0 {
			t.Fatalf("backfill plan exited %d:\n%s", code, plan.Log())
		}
	}
	// Planning again is a no-op.
	again := startAtkafka(t, runConfig{Topic: topic, Args: append([]string{"backfill", "plan", "--backfill-source", env.PDS[0].URL}, common...)})
	if code := again.Wait(time.Minute); code != 0 || !strings.Contains(again.Log(), "already complete") {
		t.Fatalf("re-running a complete plan exited %d:\n%s", code, again.Log())
	}

	// A producing time of 1ms splits every repository past 256 records (the largest accounts): the rest is loaded
	// in a later transaction, through the work topic, kill -9 and rebalances included.
	runArgs := append([]string{"backfill", "run", "--backfill-concurrency", "4", "--backfill-host-rate", "10",
		"--backfill-transaction-timeout", "10s", "--backfill-transaction-time", "1ms", "--backfill-session-timeout", "6s",
		"--verify-commits", "strict"}, common...)
	var runs []*atkafka
	for range 3 {
		runs = append(runs, startAtkafka(t, runConfig{Topic: topic, Args: runArgs}))
	}
	// Kill one instance once it loaded something, without a chance to clean up.
	eventually(t, time.Minute, "the first instance to load repositories", func() error {
		m, err := runs[0].Metrics()
		if err != nil || m.value("atkafka_backfill_repos", `outcome="loaded"`) < 3 {
			return fmt.Errorf("not yet (%v)", err)
		}
		return nil
	})
	runs[0].Signal(syscall.SIGKILL)
	added := startAtkafka(t, runConfig{Topic: topic, Args: runArgs})

	// Live writes while the backfill runs: a new post, a deleted post, an updated profile; on both PDSes, one of
	// them a large account.
	live := []*testenv.Account{accts[10], accts[11], accts[seedPerPDS+12], accts[seedPerPDS+43]}
	for _, a := range live {
		env.Post(a, "written during the backfill")
		env.UpsertProfile(a, "Updated", "during the backfill")
	}
	stateNow := pdsState(t, env, live[:1])
	for uri := range stateNow {
		if strings.Contains(uri, "app.bsky.feed.post") {
			env.DeleteRecord(live[0], uri)
			break
		}
	}

	// Done when the group committed every work record.
	opts := []kgo.Opt{kgo.SeedBrokers(strings.Split(brokers, ",")...)}
	eventually(t, 3*time.Minute, "the backfill to finish", func() error {
		p, err := backfill.Status(context.Background(), backfill.StatusConfig{Opts: opts, WorkTopic: topic + ".backfill",
			FailedTopic: topic + ".backfill.failed", OutputTopic: topic, Group: group})
		if err != nil || p.Remaining > 0 || p.Planned == 0 {
			return fmt.Errorf("%+v %v", p, err)
		}
		return nil
	})
	t.Logf("backfill done %s after seeding", time.Since(seeded).Round(time.Millisecond))
	m, err := added.Metrics()
	if err != nil || m.value("atkafka_backfill_repos", `outcome="loaded"`) == 0 {
		t.Errorf("the instance added mid-way loaded nothing (%v)", err)
	}
	status := startAtkafka(t, runConfig{Topic: topic, Args: []string{"backfill", "status", "--interval", "0s", "--json", "--backfill-group", group}})
	if code := status.Wait(time.Minute); code != 0 || !strings.Contains(status.Log(), `"remaining":0`) || !strings.Contains(status.Log(), `"failed":0`) {
		t.Errorf("backfill status exited %d:\n%s", code, status.Log())
	}

	// The accounts past 256 records were split: their rest went back to the work topic (Work.After).
	split := map[string]bool{}
	for _, r := range testenv.ReadAll(t, brokers, topic+".backfill", 1, time.Minute, kgo.FetchIsolationLevel(kgo.ReadCommitted())) {
		var w backfill.Work
		if json.Unmarshal(r.Value, &w) == nil && w.After != "" {
			split[w.DID] = true
		}
	}
	for k, a := range accts {
		if shape := shapeOf(k % seedPerPDS); shape.records > 256 && shape.status == "" && !split[a.DID] {
			t.Errorf("%s (%d records) was not split over transactions", a.DID, shape.records)
		}
	}

	var active []*testenv.Account
	for _, a := range accts {
		if inactive[a.DID] == "" {
			active = append(active, a)
		}
	}
	truth := pdsState(t, env, active)
	recs := testenv.ReadAll(t, brokers, topic, len(truth), time.Minute, kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	type version struct {
		rev     string
		deleted bool
		cid     string
		record  json.RawMessage
	}
	newest := map[string]version{}
	backfilled := map[string]int{}
	accountEvents := map[string][]string{}
	liveDIDs := map[string]bool{}
	for _, a := range live {
		liveDIDs[a.DID] = true
	}
	var compare []string // backfilled URIs of accounts without live writes, checked against getRecord
	values := map[string]json.RawMessage{}
	for _, r := range recs {
		h := map[string]string{}
		for _, x := range r.Headers {
			h[x.Key] = string(x.Value)
		}
		var ev *event
		if h[backfill.BackfillHeader] == "true" {
			// Backfilled records take Tap's shape: they are what Tap's backfill delivers.
			data, _, _ := schematest.Check(t, schematest.TapEvent, r.Value)
			ev = new(event)
			if err := json.Unmarshal(data, ev); err != nil {
				t.Fatal(err)
			}
		} else {
			ev = decodeEvent(t, r.Value)
		}
		if ev.Account != nil && h[backfill.BackfillHeader] == "true" {
			accountEvents[ev.DID] = append(accountEvents[ev.DID], ev.Account.Status)
			continue
		}
		if ev.Operation == nil {
			continue
		}
		op := ev.Operation
		if h[backfill.BackfillHeader] == "true" {
			backfilled[op.URI]++
			if op.Action != "create" || h["rev"] == "" {
				t.Errorf("%s: backfilled as %s rev %q", op.URI, op.Action, h["rev"])
			}
			if !liveDIDs[ev.DID] && backfilled[op.URI] == 1 {
				compare = append(compare, op.URI)
				values[op.URI] = op.Record
			}
		}
		if v, ok := newest[op.URI]; !ok || h["rev"] > v.rev {
			newest[op.URI] = version{rev: h["rev"], deleted: op.Action == "delete", cid: op.CID, record: op.Record}
		}
	}
	for uri, n := range backfilled {
		if n != 1 {
			t.Errorf("%s backfilled %d times", uri, n)
		}
	}
	// Every record of the accounts nobody wrote to meanwhile was backfilled.
	for uri := range truth {
		did := uriParts(uri)[0]
		if !liveDIDs[did] && backfilled[uri] != 1 {
			t.Errorf("%s not backfilled", uri)
		}
	}
	// JSON-equal to getRecord.
	var mu sync.Mutex
	parallel(t, len(compare), func(i int) error {
		parts := uriParts(compare[i])
		var got pdsRecord
		pds := ""
		for _, a := range accts {
			if a.DID == parts[0] {
				pds = a.PDS
			}
		}
		err := env.XRPC(testenv.XRPCRequest{Service: pds, NSID: "com.atproto.repo.getRecord",
			Params: url.Values{"repo": {parts[0]}, "collection": {parts[1]}, "rkey": {parts[2]}}}, &got)
		if err != nil {
			return fmt.Errorf("getRecord %s: %w", compare[i], err)
		}
		mu.Lock()
		defer mu.Unlock()
		if !jsonEqual(got.Value, values[compare[i]]) {
			t.Errorf("%s: backfilled %s, getRecord %s", compare[i], values[compare[i]], got.Value)
		}
		return nil
	})
	// The rev rule over live and backfilled records gives the PDSes' state (inactive accounts aside: listRecords
	// serves nothing for them).
	for uri, v := range newest {
		did := uriParts(uri)[0]
		if inactive[did] != "" {
			continue
		}
		want, ok := truth[uri]
		switch {
		case v.deleted && ok:
			t.Errorf("%s: newest event is a delete, the PDS holds it", uri)
		case !v.deleted && !ok:
			t.Errorf("%s: newest event (rev %s) is a %s, the PDS does not hold it", uri, v.rev, v.cid)
		case !v.deleted && (v.cid != want.CID || !jsonEqual(v.record, want.Value)):
			t.Errorf("%s: newest event %s %s, the PDS %s %s", uri, v.cid, v.record, want.CID, want.Value)
		}
	}
	for uri := range truth {
		if _, ok := newest[uri]; !ok {
			t.Errorf("%s held by the PDS, in no event", uri)
		}
	}
	// An inactive account gives exactly its account event and no record.
	wantAccounts := map[string][]string{}
	for did, status := range inactive {
		wantAccounts[did] = []string{status}
	}
	if !reflect.DeepEqual(accountEvents, wantAccounts) {
		t.Errorf("backfilled account events %v, want %v", accountEvents, wantAccounts)
	}
	for uri := range backfilled {
		if did := uriParts(uri)[0]; inactive[did] != "" {
			t.Errorf("%s of a %s account backfilled", uri, inactive[did])
		}
	}
	t.Logf("%d records backfilled, %d records on the PDSes, %d events in all", len(backfilled), len(truth), len(recs))

	// The same repositories through Tap (its own backfill, firehose tap mode) give the same records.
	tp := testenv.StartTap(t, testenv.TapOptions{RelayURL: env.PDS[0].URL, PLCURL: env.PLCURL})
	wantTap := map[string]string{}
	var dids []string
	for _, a := range active {
		if a.PDS == env.PDS[0].URL && !liveDIDs[a.DID] {
			dids = append(dids, a.DID)
		}
	}
	for uri, n := range newest {
		did := uriParts(uri)[0]
		if slices.Contains(dids, did) && n.cid != "" {
			wantTap[uri] = n.cid
		}
	}
	tapTopic := testenv.NewTopic(t)
	startAtkafka(t, runConfig{Topic: tapTopic, Args: []string{"firehose", "tap", "--tap-host", strings.TrimSuffix(tp.ChannelURL(), "/channel"),
		"--enrich=false", "--plc-host", env.PLCURL}})
	tp.AddRepos(dids...)
	gotTap := map[string]string{}
	cl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(brokers, ",")...), kgo.ConsumeTopics(tapTopic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	// Tap also sends identity and account events: read until the operations are all there (or stop coming).
	for deadline := time.Now().Add(2 * time.Minute); len(gotTap) < len(wantTap) && time.Now().Before(deadline); {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			var ev struct {
				Operation *struct {
					URI string `json:"uri"`
					CID string `json:"cid"`
				} `json:"operation"`
			}
			if json.Unmarshal(r.Value, &ev) == nil && ev.Operation != nil {
				gotTap[ev.Operation.URI] = ev.Operation.CID
			}
		})
		cancel()
	}
	if !reflect.DeepEqual(gotTap, wantTap) {
		t.Errorf("Tap gave %d records, the backfill %d for the same %d accounts; they differ", len(gotTap), len(wantTap), len(dids))
		for uri, c := range wantTap {
			if gotTap[uri] != c {
				t.Logf("%s: backfill %s, Tap %q", uri, c, gotTap[uri])
			}
		}
	}
}
