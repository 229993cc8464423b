package backfill

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/atkafka/atkafka/sink/kafka"
	"github.com/atkafka/atkafka/source/backfill/backfilltest"
	"github.com/atkafka/atkafka/testenv"
	"github.com/atkafka/atkafka/transform"
	"github.com/atkafka/atkafka/transform/dagcbor"
	"github.com/atkafka/atkafka/transform/enrich"
	"github.com/atkafka/atkafka/transform/filter"
	"github.com/atkafka/atkafka/transform/format"
)

func TestWalkMST(t *testing.T) {
	net, err := backfilltest.Generate([]int{0, 1, 7, 400})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range net.Repos {
		car, err := dagcbor.ParseCAR(r.CAR)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		commitRoot := func() dagcbor.Link {
			c, err := verifyRepoCommit(car, r.DID)
			if err != nil {
				t.Fatal(err)
			}
			return c
		}()
		if err := walkMST(car, commitRoot, func(key []byte, v dagcbor.Link) error {
			got = append(got, string(key)+" "+v.String())
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		want := map[string]bool{}
		for _, rec := range r.Records {
			want[rec.Collection+"/"+rec.Rkey+" "+rec.CID] = true
		}
		if len(got) != len(want) {
			t.Fatalf("%s: walked %d entries, want %d", r.DID, len(got), len(want))
		}
		for i, g := range got {
			if !want[g] {
				t.Errorf("walked %s, not in the repository", g)
			}
			if i > 0 && got[i-1] >= g {
				t.Errorf("walk out of order: %s after %s", g, got[i-1])
			}
		}
	}
}

// fixture is a synthetic network, an in-process Kafka cluster and a planned work topic.
type fixture struct {
	net     *backfilltest.Network
	brokers []string
	work    string
}

func newFixture(t *testing.T, sizes []int, partitions int32) *fixture {
	t.Helper()
	net, err := backfilltest.Generate(sizes)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(net)
	t.Cleanup(srv.Close)
	net.PDS = srv.URL
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.DefaultNumPartitions(int(partitions)),
		kfake.SeedTopics(-1, "events", "events.backfill.failed", "events.deadletter"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return &fixture{net: net, brokers: c.ListenAddrs(), work: "events.backfill"}
}

func (f *fixture) plan(t *testing.T, pageSize int) int64 {
	t.Helper()
	ctx := context.Background()
	p, err := kafka.NewTxn(ctx, kafka.Config{Brokers: f.brokers, Topic: f.work, CreateTopic: true, Logger: testenv.Logger(t, slog.LevelInfo)},
		kafka.TxnConfig{TransactionalID: "plan", CursorTopic: "events.cursors", CursorKey: "backfill-plan"})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(ctx)
	n, err := Plan(ctx, PlanConfig{Host: f.net.PDS, PageSize: pageSize, Sink: p, Cursor: p.Cursor(), Logger: testenv.Logger(t, slog.LevelInfo)})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func (f *fixture) pipeline(t *testing.T) *transform.Pipeline {
	e, err := enrich.New(enrich.Config{PLCHost: f.net.PDS, PLCRate: -1, Logger: testenv.Logger(t, slog.LevelInfo)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return &transform.Pipeline{Formatter: format.NewFormatter(), Enricher: e}
}

func (f *fixture) run(ctx context.Context, t *testing.T, id string, exactlyOnce bool) error {
	return Run(ctx, f.config(t, id, exactlyOnce))
}

func (f *fixture) config(t *testing.T, id string, exactlyOnce bool) RunConfig {
	return RunConfig{MemoryLimit: 4096, TempDir: t.TempDir(),
		Opts: []kgo.Opt{kgo.SeedBrokers(f.brokers...)}, WorkTopic: f.work, Group: "backfill",
		OutputTopic: "events", FailedTopic: "events.backfill.failed", DeadLetterTopic: "events.deadletter",
		ExactlyOnce: exactlyOnce, TransactionalID: id, Concurrency: 8, RetryWindow: time.Minute,
		Pipeline: f.pipeline(t), Logger: testenv.Logger(t, slog.LevelInfo).With("instance", id),
	}
}

// readAll reads a topic from its start, read_committed, until it has want records or timeout passes.
func readAll(t *testing.T, brokers []string, topic string, want int, timeout time.Duration) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var out []*kgo.Record
	deadline := time.Now().Add(timeout)
	for len(out) < want && time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		out = append(out, cl.PollFetches(ctx).Records()...)
		cancel()
	}
	// Anything more (a duplicate) gets a moment to show up.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	out = append(out, cl.PollFetches(ctx).Records()...)
	cancel()
	return out
}

func TestPlanResumesAndIsIdempotent(t *testing.T) {
	f := newFixture(t, make([]int, 25), 4)
	if n := f.plan(t, 10); n != 25 {
		t.Fatalf("planned %d, want 25", n)
	}
	if n := f.plan(t, 10); n != 0 {
		t.Fatalf("re-running a complete plan planned %d, want 0", n)
	}
	got := readAll(t, f.brokers, f.work, 25, 10*time.Second)
	if len(got) != 25 {
		t.Fatalf("work topic holds %d records, want 25", len(got))
	}
}

func TestRunExactlyOnce(t *testing.T) {
	sizes := []int{0, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 300, 2, 2, 2, 4, 4, 4, 1}
	f := newFixture(t, sizes, 6)
	f.net.Repos[3].Status = "takendown"
	f.net.Repos[4].Status = "deactivated"
	var failOnce sync.Map
	f.net.Fail = func(did string, _ int64) int {
		if did == f.net.Repos[6].DID {
			return http.StatusNotFound
		}
		if did == f.net.Repos[5].DID {
			if _, done := failOnce.LoadOrStore(did, true); !done {
				return http.StatusServiceUnavailable
			}
		}
		return 0
	}
	f.plan(t, 7)
	// An account the PLC does not know fails for good at once, without retries.
	unknown := (&Work{DID: "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"}).encode()
	cl, err := kgo.NewClient(kgo.SeedBrokers(f.brokers...))
	if err != nil {
		t.Fatal(err)
	}
	// And a work record that does not decode goes to the failed topic with its bytes, blocking nothing.
	if err := cl.ProduceSync(context.Background(), &kgo.Record{Topic: f.work, Key: []byte("did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"), Value: unknown},
		&kgo.Record{Topic: f.work, Key: []byte("did:plc:bbbbbbbbbbbbbbbbbbbbbbbb"), Value: []byte("{not json")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	cl.Close()

	want := map[string]backfilltest.Record{}
	for i, r := range f.net.Repos {
		if i == 3 || i == 4 || i == 6 {
			continue
		}
		for _, rec := range r.Records {
			want["at://"+r.DID+"/"+rec.Collection+"/"+rec.Rkey] = rec
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f.run(ctx, t, fmt.Sprint("instance-", i), true); err != nil {
				t.Error(err)
			}
		}()
	}
	got := readAll(t, f.brokers, "events", len(want)+2, 60*time.Second)
	defer wg.Wait()
	defer cancel()
	accounts := map[string]string{}
	seen := map[string]bool{}
	for _, r := range got {
		var ev struct {
			DID       string `json:"did"`
			Live      *bool  `json:"live"`
			Operation *struct {
				Action string          `json:"action"`
				URI    string          `json:"uri"`
				CID    string          `json:"cid"`
				Record json.RawMessage `json:"record"`
			} `json:"operation"`
			Account *struct {
				Active bool   `json:"active"`
				Status string `json:"status"`
			} `json:"account"`
		}
		if err := json.Unmarshal(r.Value, &ev); err != nil {
			t.Fatal(err)
		}
		if string(r.Key) != ev.DID {
			t.Errorf("record keyed %s for %s", r.Key, ev.DID)
		}
		if ev.Account != nil {
			accounts[ev.DID] = ev.Account.Status
			continue
		}
		op := ev.Operation
		if seen[op.URI] {
			t.Errorf("%s produced twice", op.URI)
		}
		seen[op.URI] = true
		w, ok := want[op.URI]
		if !ok {
			t.Errorf("%s produced, not in any repository", op.URI)
			continue
		}
		var a, b any
		_ = json.Unmarshal(op.Record, &a)
		_ = json.Unmarshal(w.JSON, &b)
		if op.Action != "create" || op.CID != w.CID || !reflect.DeepEqual(a, b) || ev.Live == nil || *ev.Live {
			t.Errorf("%s: got %s %s %s live=%v, want create %s %s", op.URI, op.Action, op.CID, op.Record, ev.Live, w.CID, w.JSON)
		}
		if h := header(r, BackfillHeader); h != "true" {
			t.Errorf("%s: backfill header %q", op.URI, h)
		}
		if h := header(r, "rev"); h != f.net.Repos[indexOf(f.net, ev.DID)].Rev {
			t.Errorf("%s: rev header %q", op.URI, h)
		}
	}
	if len(seen) != len(want) {
		t.Errorf("produced %d records, want %d", len(seen), len(want))
	}
	wantAccounts := map[string]string{f.net.Repos[3].DID: "takendown", f.net.Repos[4].DID: "deactivated"}
	if !reflect.DeepEqual(accounts, wantAccounts) {
		t.Errorf("account events %v, want %v", accounts, wantAccounts)
	}
	// The failed repository's transaction may commit after the last record showed: wait for the status to settle.
	var st *Progress
	for deadline := time.Now().Add(30 * time.Second); ; {
		var err error
		st, err = Status(context.Background(), StatusConfig{Opts: []kgo.Opt{kgo.SeedBrokers(f.brokers...)}, WorkTopic: f.work,
			FailedTopic: "events.backfill.failed", OutputTopic: "events", Group: "backfill"})
		if err != nil {
			t.Fatal(err)
		}
		if (st.Remaining == 0 && st.Failed == 3) || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if st.Remaining != 0 || st.Failed != 3 || st.FailedBy["not_found"] != 1 || st.FailedByPDS[f.net.PDS] != 1 || st.FailedBy["no_pds"] != 1 ||
		st.FailedBy["bad_work"] != 1 {
		t.Errorf("status %+v, want nothing remaining, one repository not found at the PDS, one without a PDS and one bad work record", st)
	}
}

func header(r *kgo.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

func indexOf(n *backfilltest.Network, did string) int {
	for i, r := range n.Repos {
		if r.DID == did {
			return i
		}
	}
	return -1
}

func TestRunAtLeastOnce(t *testing.T) {
	f := newFixture(t, []int{3, 30, 1, 0, 12}, 2)
	f.plan(t, 2)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.run(ctx, t, "alo", false) }()
	want := 3 + 30 + 1 + 12
	got := readAll(t, f.brokers, "events", want, 30*time.Second)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if len(got) != want {
		t.Errorf("at least once without a crash produced %d records, want %d", len(got), want)
	}
}

func TestPlanAppliesServiceFilters(t *testing.T) {
	f := newFixture(t, make([]int, 12), 2)
	ctx := context.Background()
	for _, c := range []struct {
		watched string
		want    int64
	}{{"pds.elsewhere.example", 0}, {"127.0.0.1", 12}} {
		fl, err := filter.New(filter.Config{WatchedServices: []string{c.watched}})
		if err != nil {
			t.Fatal(err)
		}
		p := f.pipeline(t)
		p.Accounts = transform.Accounts(fl, testenv.Logger(t, slog.LevelInfo), nil)
		prod, err := kafka.NewTxn(ctx, kafka.Config{Brokers: f.brokers, Topic: f.work, CreateTopic: true, Logger: testenv.Logger(t, slog.LevelInfo)},
			kafka.TxnConfig{TransactionalID: "plan-" + c.watched, CursorTopic: "events.cursors", CursorKey: "plan-" + c.watched})
		if err != nil {
			t.Fatal(err)
		}
		n, err := Plan(ctx, PlanConfig{Host: f.net.PDS, Sink: prod, Cursor: prod.Cursor(), Pipeline: p, Logger: testenv.Logger(t, slog.LevelInfo)})
		_ = prod.Close(ctx)
		if err != nil || n != c.want {
			t.Errorf("watching %s planned %d (%v), want %d", c.watched, n, err, c.want)
		}
	}
}

// fakeClient is a client that refuses, for good, the output records of one DID, as Kafka refuses a record too large.
type fakeClient struct {
	refuse string
	mu     sync.Mutex
	// committed holds the records of committed batches, pending those of the open one.
	committed, pending []*kgo.Record
}

func (c *fakeClient) poll(context.Context, int) kgo.Fetches { return nil }
func (c *fakeClient) begin() error                          { return nil }
func (c *fakeClient) close()                                {}
func (c *fakeClient) produce(_ context.Context, r *kgo.Record, promise func(*kgo.Record, error)) {
	if r.Topic == "events" && string(r.Key) == c.refuse {
		promise(r, kerr.MessageTooLarge)
		return
	}
	c.mu.Lock()
	c.pending = append(c.pending, r)
	c.mu.Unlock()
	promise(r, nil)
}
func (c *fakeClient) end(_ context.Context, _ []*kgo.Record, commit bool) (bool, error) {
	if commit {
		c.committed = append(c.committed, c.pending...)
	}
	c.pending = nil
	return commit, nil
}

func TestRefusedRecordsDoNotBlockTheBatch(t *testing.T) {
	f := newFixture(t, []int{3, 4}, 1)
	cfg := RunConfig{WorkTopic: f.work, Group: "g", OutputTopic: "events", FailedTopic: "failed", DeadLetterTopic: "dl",
		Pipeline: f.pipeline(t), Logger: testenv.Logger(t, slog.LevelInfo)}
	if err := cfg.defaults(); err != nil {
		t.Fatal(err)
	}
	r := &runner{cfg: cfg, log: cfg.Logger, refused: map[string]error{}, fetch: &fetcher{http: http.DefaultClient,
		hosts: newHosts(4, 0), memLimit: 1 << 20}}
	var polled []*kgo.Record
	for _, repo := range f.net.Repos {
		polled = append(polled, &kgo.Record{Topic: f.work, Key: []byte(repo.DID), Value: (&Work{DID: repo.DID}).encode()})
	}
	cl := &fakeClient{refuse: f.net.Repos[0].DID}
	for range 2 {
		if err := r.batch(context.Background(), cl, polled); err != nil {
			t.Fatal(err)
		}
	}
	var records, failed int
	for _, rec := range cl.committed {
		switch rec.Topic {
		case "events":
			records++
		case "failed":
			failed++
			if string(rec.Key) != f.net.Repos[0].DID || !strings.Contains(string(rec.Value), "produce_refused") {
				t.Errorf("failed record %s: %s", rec.Key, rec.Value)
			}
		}
	}
	if records != 4 || failed != 1 {
		t.Errorf("after the refused batch came back: %d records and %d failed repositories committed, want 4 and 1", records, failed)
	}
}

// outcomes counts the repositories by outcome.
type outcomes struct {
	nopObserver
	testenv.Counts
}

func (o *outcomes) Repo(outcome string) { o.Add(outcome, 1) }

// runOnce runs one exactly-once instance with cfg's changes until every record of the network is read, checking
// each was produced once and in key order per repository.
func runOnce(t *testing.T, f *fixture, change func(*RunConfig)) {
	t.Helper()
	want := 0
	for _, r := range f.net.Repos {
		want += len(r.Records)
	}
	cfg := f.config(t, t.Name(), true)
	change(&cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg) }()
	got := readAll(t, f.brokers, "events", want, 30*time.Second)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	last := map[string]string{}
	for _, r := range got {
		key := header(r, "collection") + "/" + header(r, "rkey")
		did := string(r.Key)
		seen[did+"/"+key]++
		if key <= last[did] {
			t.Errorf("%s: %s after %s", did, key, last[did])
		}
		last[did] = key
	}
	for k, n := range seen {
		if n != 1 {
			t.Errorf("%s produced %d times", k, n)
		}
	}
	if len(seen) != want {
		t.Errorf("produced %d distinct records, want %d", len(seen), want)
	}
}

// TestRunSplitsLargeRepositories loads repositories larger than one transaction may take (a producing time of
// 1ns: checkEvery records per transaction) over several transactions, every record once and in key order.
func TestRunSplitsLargeRepositories(t *testing.T) {
	f := newFixture(t, []int{3 * checkEvery, checkEvery + 1, 5, 2*checkEvery - 1}, 2)
	f.plan(t, 10)
	obs := &outcomes{}
	runOnce(t, f, func(cfg *RunConfig) { cfg.TransactionTime, cfg.Observer = time.Nanosecond, obs })
	// 3×checkEvery: two splits; checkEvery+1 and 2×checkEvery-1: one each.
	if n := obs.Get("split"); n != 4 {
		t.Errorf("%d splits, want 4", n)
	}
}

// TestRunDefersSlowDownloads: a repository whose download outlasts its batch's producing time is put back, then
// loaded before its next batch produces anything, instead of holding the transaction open or being deferred again.
func TestRunDefersSlowDownloads(t *testing.T) {
	f := newFixture(t, []int{3000, 5, 5, 5, 5}, 1)
	f.net.Bandwidth = 1 << 20 // the large repository (~1 MB) takes about a second, the others milliseconds
	f.plan(t, 10)
	obs := &outcomes{}
	runOnce(t, f, func(cfg *RunConfig) {
		cfg.TransactionTime, cfg.Observer, cfg.MemoryLimit = 200*time.Millisecond, obs, 4<<20
	})
	// At least the large one (a loaded machine may defer a small one too); all were read, so none for ever.
	if n := obs.Get("deferred"); n < 1 {
		t.Errorf("%d deferred, want the large repository's", n)
	}
}
