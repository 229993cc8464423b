package enrich

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/bluesky-social/indigo/atproto/identity"

	"github.com/atkafka/atkafka/testenv"
	"github.com/atkafka/atkafka/transform/filter"
)

// fakePLC serves DID documents, audit logs and profiles from maps, with per-path failure injection, and
// records every request.
type fakePLC struct {
	URL      string
	mu       sync.Mutex
	docs     map[string]string // did → document JSON
	created  map[string]string // did → creation time of its audit log (default defaultCreated)
	profiles map[string]string // did → profile JSON
	fail     map[string]int    // path → number of 500s to answer before succeeding
	delay    map[string]time.Duration
	hits     map[string]int
	times    []time.Time
}

func newFakePLC(t testing.TB) *fakePLC {
	f := newMemPLC()
	srv := httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(srv.Close)
	f.URL = srv.URL
	return f
}

// newMemPLC is a fakePLC without a server: its client serves requests in the caller's goroutine, so that a test
// can run in a synctest bubble, where time is fake and the timing of deadlines and TTLs is exact.
func newMemPLC() *fakePLC {
	return &fakePLC{URL: "http://plc.test", docs: map[string]string{}, created: map[string]string{}, profiles: map[string]string{},
		fail: map[string]int{}, delay: map[string]time.Duration{}, hits: map[string]int{}}
}

// client is the HTTP client of a newMemPLC.
func (f *fakePLC) client() *http.Client {
	return &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		rec := httptest.NewRecorder()
		f.serve(rec, r)
		if err := r.Context().Err(); err != nil {
			return nil, err
		}
		return rec.Result(), nil
	})}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (fn roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return fn(r) }

func (f *fakePLC) serve(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	if r.URL.RawQuery != "" {
		path += "?" + r.URL.RawQuery
	}
	f.mu.Lock()
	f.hits[path]++
	f.times = append(f.times, time.Now())
	delay := f.delay[path]
	failing := f.fail[path] > 0
	if failing {
		f.fail[path]--
	}
	var body string
	var ok bool
	switch {
	case strings.HasSuffix(path, "/log/audit"):
		did := strings.TrimSuffix(strings.TrimPrefix(path, "/"), "/log/audit")
		var doc string
		if doc, ok = f.docs[did]; ok {
			body = string(testenv.PLCAuditLog(did, []byte(doc), cmp.Or(f.created[did], defaultCreated)))
		}
	case strings.HasPrefix(path, "/xrpc/app.bsky.actor.getProfiles"):
		// Unknown actors are left out of the answer, as the AppView does.
		var views []string
		for _, actor := range r.URL.Query()["actors"] {
			if v, found := f.profiles[actor]; found {
				views = append(views, v)
			}
		}
		body, ok = `{"profiles":[`+strings.Join(views, ",")+`]}`, true
	case strings.HasPrefix(path, "/web/"):
		body, ok = f.docs["did:web:"+strings.TrimPrefix(path, "/web/")]
	default:
		body, ok = f.docs[strings.TrimPrefix(path, "/")]
	}
	f.mu.Unlock()
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return
		}
	}
	switch {
	case failing:
		http.Error(w, "upstream trouble", http.StatusInternalServerError)
	case !ok:
		http.NotFound(w, r)
	default:
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, body)
	}
}

func (f *fakePLC) set(m map[string]string, k, v string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m[k] = v
}

func (f *fakePLC) count(path string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.hits[path]
}

func (f *fakePLC) total() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.times)
}

// testDID makes a syntactically valid did:plc from a short name.
func testDID(name string) string {
	id := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '2' && r <= '7' {
			return r
		}
		return 'a'
	}, name)
	return "did:plc:" + (id + strings.Repeat("a", 24))[:24]
}

func docJSON(did, handle, pds string) string {
	aka := `[]`
	if handle != "" {
		aka = `["at://` + handle + `"]`
	}
	svc := `[]`
	if pds != "" {
		svc = `[{"id": "#atproto_pds", "type": "AtprotoPersonalDataServer", "serviceEndpoint": "` + pds + `"}]`
	}
	// Indented like plc.directory's output, to show that events carry it compacted.
	return "{\n  \"@context\": [\"https://www.w3.org/ns/did/v1\", \"https://w3id.org/security/multikey/v1\", " +
		"\"https://w3id.org/security/suites/secp256k1-2019/v1\"],\n  \"id\": \"" + did + "\",\n  \"alsoKnownAs\": " + aka +
		",\n  \"verificationMethod\": [{\"id\": \"" + did + "#atproto\", \"type\": \"Multikey\", \"controller\": \"" + did +
		"\", \"publicKeyMultibase\": \"zQ3shrc8v5X6ZiANcZxA6JerfT2T4SskeCGxpmtDfMuHF9KRj\"}],\n  \"service\": " + svc + "\n}"
}

// defaultCreated is the creation time of a fake account whose test does not set one.
const defaultCreated = "2023-04-01T00:00:00.000Z"

// auditPath is where the PLC serves did's audit log: the one request an account costs.
func auditPath(did string) string { return "/" + did + "/log/audit" }

// profilesPath is the getProfiles request of one account.
func profilesPath(did string) string {
	return "/xrpc/app.bsky.actor.getProfiles?actors=" + strings.ReplaceAll(did, ":", "%3A")
}

// counts is an Observer of the test's own: what one Enricher measured, by kind and labels ("failures doc",
// "lookups doc error false", "cache doc", "requests plc ok", "inflight plc"), rather than deltas of process-wide
// metrics that other tests move too.
type counts struct {
	mu sync.Mutex
	m  map[string]float64
}

func newCounts() *counts { return &counts{m: map[string]float64{}} }

func (c *counts) get(key string) float64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[key]
}

// adder returns what adds to key, or sets it when set is true.
func (c *counts) adder(key string, set bool) func(float64) {
	return func(v float64) {
		c.mu.Lock()
		defer c.mu.Unlock()
		if set {
			c.m[key] = v
		} else {
			c.m[key] += v
		}
	}
}

func (c *counts) Lookups(kind, status string, cached bool) func() {
	add := c.adder(fmt.Sprint("lookups ", kind, " ", status, " ", cached), false)
	return func() { add(1) }
}

func (c *counts) Failures(kind string) func() {
	add := c.adder("failures "+kind, false)
	return func() { add(1) }
}

func (c *counts) CacheSize(kind string) func(int) {
	set := c.adder("cache "+kind, true)
	return func(n int) { set(float64(n)) }
}

func (c *counts) Requests(endpoint, status string) func(time.Duration) {
	add := c.adder("requests "+endpoint+" "+status, false)
	return func(time.Duration) { add(1) }
}

func (c *counts) InFlight(endpoint string) func(int) {
	add := c.adder("inflight "+endpoint, false)
	return func(d int) { add(float64(d)) }
}

func newEnricher(t testing.TB, cfg Config) *Enricher {
	t.Helper()
	if cfg.PLCRate == 0 {
		cfg.PLCRate = -1
	}
	if cfg.APIRate == 0 {
		cfg.APIRate = -1
	}
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e
}

func render(m *Metadata) map[string]any {
	var out map[string]any
	b := m.AppendJSON(nil)
	if err := json.Unmarshal(b, &out); err != nil {
		panic(fmt.Sprintf("AppendJSON produced invalid JSON %s: %v", b, err))
	}
	return out
}

func TestMetadataFields(t *testing.T) {
	plc := newFakePLC(t)
	did := testDID("alice")
	doc := docJSON(did, "Alice.Test", "https://pds.example:8443")
	plc.set(plc.docs, did, doc)
	created := time.Now().Add(-90 * time.Minute).UTC().Format("2006-01-02T15:04:05.000Z")
	plc.set(plc.created, did, created)
	plc.set(plc.profiles, did, "{\n \"did\": \""+did+"\", \"displayName\": \"Alice <3\"\n}")

	e := newEnricher(t, Config{PLCHost: plc.URL + "/", APIHost: plc.URL})
	m := e.Metadata(context.Background(), did)
	got := render(m)

	var wantDoc map[string]any
	_ = json.Unmarshal([]byte(doc), &wantDoc)
	if gotDoc, _ := json.Marshal(got["didDocument"]); string(gotDoc) != mustMarshal(wantDoc) {
		t.Errorf("didDocument = %s", gotDoc)
	}
	if !strings.Contains(string(m.AppendJSON(nil)), `"didDocument":{"@context":["https://www.w3.org/ns/did/v1",`) {
		t.Errorf("didDocument not compacted: %s", m.AppendJSON(nil))
	}
	if got["pdsHost"] != "https://pds.example:8443" || m.PDSHost() != "https://pds.example:8443" {
		t.Errorf("pdsHost = %v", got["pdsHost"])
	}
	if got["handle"] != "alice.test" || m.Handle() != "alice.test" {
		t.Errorf("handle = %v, want the normalised alice.test", got["handle"])
	}
	if got["didCreatedAt"] != created {
		t.Errorf("didCreatedAt = %v, want %s (the first audit entry)", got["didCreatedAt"], created)
	}
	if age := got["accountAge"].(float64); age < 90*60 || age > 90*60+5 {
		t.Errorf("accountAge = %v, want about %d", age, 90*60)
	}
	if p, _ := got["profile"].(map[string]any); p["displayName"] != "Alice <3" {
		t.Errorf("profile = %v", got["profile"])
	}
	keys := slices.Sorted(func(yield func(string) bool) {
		for k := range got {
			if !yield(k) {
				return
			}
		}
	})
	if want := []string{"accountAge", "didCreatedAt", "didDocument", "handle", "pdsHost", "profile"}; !slices.Equal(keys, want) {
		t.Errorf("keys = %v, want %v", keys, want)
	}
	if r := e.Metadata(context.Background(), did).PDS(); r != (filter.Resolution{Outcome: filter.Resolved, Host: "pds.example", Port: 8443}) {
		t.Errorf("PDS = %+v", r)
	}
	// The trailing slash of PLCHost did not make "//did:plc:..." paths.
	if plc.count(auditPath(did)) != 1 || plc.count("/"+did+"/log/audit") != 1 {
		t.Errorf("requests: %v", plc.hits)
	}
}

func mustMarshal(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestMetadataWithoutProfileHost(t *testing.T) {
	plc := newFakePLC(t)
	did := testDID("bob")
	plc.set(plc.docs, did, docJSON(did, "bob.test", "https://pds.example"))
	e := newEnricher(t, Config{PLCHost: plc.URL})
	got := render(e.Metadata(context.Background(), did))
	if _, ok := got["profile"]; ok {
		t.Error("profile present without an API host")
	}
	if got["didCreatedAt"] != defaultCreated {
		t.Errorf("got %v", got)
	}
}

func TestNotFound(t *testing.T) {
	plc := newFakePLC(t)
	did := testDID("nobody")
	noPDS := testDID("nopds")
	plc.set(plc.docs, noPDS, docJSON(noPDS, "nopds.test", ""))
	obs := newCounts()
	e := newEnricher(t, Config{PLCHost: plc.URL, APIHost: plc.URL, Observer: obs})

	for range 3 {
		m := e.Metadata(context.Background(), did)
		if b := string(m.AppendJSON(nil)); b != `{"accountAge":-1}` {
			t.Errorf("unknown DID renders %s", b)
		}
		if r := e.Metadata(context.Background(), did).PDS(); r.Outcome != filter.NoPDS {
			t.Errorf("PDS of an unknown DID = %+v, want NoPDS", r)
		}
	}
	if n := plc.count(auditPath(did)); n != 1 {
		t.Errorf("404 fetched %d times, want 1 (negative cache)", n)
	}
	if d := obs.get("failures doc"); d != 0 {
		t.Errorf("a 404 counted %v enrich failures: it is an answer, not a failure", d)
	}
	if d := obs.get("lookups doc not_found false"); d != 1 {
		t.Errorf("%v uncached doc lookups not found, want 1", d)
	}

	m := e.Metadata(context.Background(), noPDS)
	if m.Handle() != "nopds.test" || m.PDSHost() != "" {
		t.Errorf("document without PDS: handle %q pds %q", m.Handle(), m.PDSHost())
	}
	if r := e.Metadata(context.Background(), noPDS).PDS(); r.Outcome != filter.NoPDS {
		t.Errorf("PDS of a document without #atproto_pds = %+v, want NoPDS", r)
	}
	// Invalid and non-atproto DIDs never reach the network.
	before := plc.total()
	for _, bad := range []string{"", "did:plc:", "did:key:z6Mk", "not a did", "did:web:10.0.0.1", "did:web:localhost"} {
		if r := e.Metadata(context.Background(), bad).PDS(); r.Outcome != filter.NoPDS {
			t.Errorf("PDS(%q) = %+v", bad, r)
		}
		e.Metadata(context.Background(), bad)
	}
	if after := plc.total(); after != before {
		t.Errorf("%d requests for invalid DIDs: %v", after-before, plc.hits)
	}
}

func TestRetryThenOK(t *testing.T) {
	plc := newFakePLC(t)
	did := testDID("flaky")
	plc.set(plc.docs, did, docJSON(did, "flaky.test", "https://pds.example"))
	plc.mu.Lock()
	plc.fail[auditPath(did)] = 2
	plc.mu.Unlock()
	obs := newCounts()
	e := newEnricher(t, Config{PLCHost: plc.URL, LookupTimeout: 3 * time.Second, Observer: obs})
	m := e.Metadata(context.Background(), did)
	if m.Handle() != "flaky.test" {
		t.Errorf("handle after two 500s = %q", m.Handle())
	}
	if n := plc.count(auditPath(did)); n != 3 {
		t.Errorf("%d document requests, want 3", n)
	}
	if d := obs.get("lookups doc error false"); d != 2 {
		t.Errorf("%v uncached doc lookups failed, want 2", d)
	}
}

func TestPersistentFailureIsRemembered(t *testing.T) {
	// In a synctest bubble: time is fake, so the deadlines and TTLs below are exact whatever the load.
	synctest.Test(t, func(t *testing.T) {
		plc := newMemPLC()
		did := testDID("broken")
		plc.set(plc.docs, did, docJSON(did, "broken.test", "https://pds.example"))
		plc.mu.Lock()
		plc.fail[auditPath(did)] = 1000
		plc.mu.Unlock()
		obs := newCounts()
		e := newEnricher(t, Config{HTTPClient: plc.client(), PLCHost: plc.URL, LookupTimeout: 3 * time.Second, FailureTTL: time.Hour, Observer: obs})
		if r := e.Metadata(context.Background(), did).PDS(); r.Outcome != filter.Unknown {
			t.Errorf("PDS after 5xx = %+v, want Unknown", r)
		}
		start := time.Now()
		for range 10 {
			if m := e.Metadata(context.Background(), did); m.Handle() != "" {
				t.Error("metadata from a failing PLC")
			}
		}
		if time.Since(start) > 250*time.Millisecond { // retrying each would cost 10 × ~300ms
			t.Errorf("remembered failures took %v", time.Since(start))
		}
		if n := plc.count(auditPath(did)); n != maxAttempts {
			t.Errorf("%d requests, want %d (one flight, then remembered)", n, maxAttempts)
		}
		if d := obs.get("failures doc"); d != 11 {
			t.Errorf("%v doc failures, want 11 (one per event without a document)", d)
		}
	})
}

func TestSlowLookupHitsDeadlineAndBlocksNoOne(t *testing.T) {
	// In a synctest bubble: time is fake, so the deadlines and TTLs below are exact whatever the load.
	synctest.Test(t, func(t *testing.T) {
		plc := newMemPLC()
		slow, fast := testDID("slow"), testDID("fast")
		plc.set(plc.docs, slow, docJSON(slow, "slow.test", "https://pds.example"))
		plc.set(plc.docs, fast, docJSON(fast, "fast.test", "https://pds.example"))
		plc.mu.Lock()
		plc.delay[auditPath(slow)] = 400 * time.Millisecond
		plc.mu.Unlock()
		obs := newCounts()
		e := newEnricher(t, Config{HTTPClient: plc.client(), PLCHost: plc.URL, LookupTimeout: 100 * time.Millisecond, Observer: obs})

		done := make(chan time.Duration)
		go func() {
			start := time.Now()
			if m := e.Metadata(context.Background(), slow); m.Handle() != "" {
				t.Error("slow lookup answered within the deadline?")
			}
			done <- time.Since(start)
		}()
		time.Sleep(20 * time.Millisecond)
		start := time.Now()
		if m := e.Metadata(context.Background(), fast); m.Handle() != "fast.test" {
			t.Errorf("fast DID: handle %q", m.Handle())
		}
		if d := time.Since(start); d > 300*time.Millisecond { // blocked behind the slow DID would be 400ms
			t.Errorf("fast DID took %v while another DID was slow", d)
		}
		if d := <-done; d < 90*time.Millisecond || d > 300*time.Millisecond {
			t.Errorf("slow lookup returned after %v, want about the 100ms deadline", d)
		}
		if d := obs.get("failures doc"); d != 1 {
			t.Errorf("%v doc failures, want 1", d)
		}
		// The next event of the slow DID waits out its own deadline on the same fetch, without a second request.
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		if r := e.Metadata(ctx, slow).PDS(); r.Outcome != filter.Unknown {
			t.Errorf("PDS while the fetch is still running = %+v, want Unknown", r)
		}
		// …and once the fetch completes in the background, its answer is cached.
		time.Sleep(450 * time.Millisecond)
		if m := e.Metadata(context.Background(), slow); m.Handle() != "slow.test" {
			t.Errorf("after the slow answer arrived: handle %q", m.Handle())
		}
		if n := plc.count(auditPath(slow)); n != 1 {
			t.Errorf("%d requests for the slow DID, want 1", n)
		}
	})
}

func TestConcurrentMissesShareOneRequest(t *testing.T) {
	plc := newFakePLC(t)
	did := testDID("popular")
	plc.set(plc.docs, did, docJSON(did, "popular.test", "https://pds.example"))
	plc.set(plc.created, did, "2023-04-01T00:00:00.000Z")
	plc.set(plc.profiles, did, `{"did":"`+did+`"}`)
	plc.mu.Lock()
	plc.delay[auditPath(did)] = 50 * time.Millisecond
	plc.mu.Unlock()
	e := newEnricher(t, Config{PLCHost: plc.URL, APIHost: plc.URL, LookupTimeout: 2 * time.Second})
	var wg sync.WaitGroup
	var good atomic.Int32
	for range 100 {
		wg.Go(func() {
			m := e.Metadata(context.Background(), did)
			r := e.Metadata(context.Background(), did).PDS()
			if m.Handle() == "popular.test" && m.AccountAge() > 0 && r.Host == "pds.example" {
				good.Add(1)
			}
		})
	}
	wg.Wait()
	if good.Load() != 100 {
		t.Errorf("%d of 100 callers got full metadata", good.Load())
	}
	if a, p := plc.count(auditPath(did)), plc.count(profilesPath(did)); a != 1 || p != 1 {
		t.Errorf("requests: audit log %d, profiles %d, want 1 each (%v)", a, p, plc.hits)
	}
}

func TestInvalidation(t *testing.T) {
	plc := newFakePLC(t)
	did := testDID("mover")
	plc.set(plc.docs, did, docJSON(did, "old.test", "https://old.example"))
	plc.set(plc.created, did, "2023-04-01T00:00:00.000Z")
	plc.set(plc.profiles, did, `{"did":"`+did+`","displayName":"Old"}`)
	e := newEnricher(t, Config{PLCHost: plc.URL, APIHost: plc.URL})
	ctx := context.Background()
	e.Metadata(ctx, did)

	plc.set(plc.docs, did, docJSON(did, "new.test", "https://new.example"))
	plc.set(plc.profiles, did, `{"did":"`+did+`","displayName":"New"}`)
	if m := e.Metadata(ctx, did); m.Handle() != "old.test" {
		t.Errorf("cached handle = %q", m.Handle())
	}

	e.InvalidateIdentity(did)
	m := e.Metadata(ctx, did)
	if m.Handle() != "new.test" || m.PDSHost() != "https://new.example" || e.Metadata(ctx, did).PDS().Host != "new.example" {
		t.Errorf("after InvalidateIdentity: handle %q pds %q", m.Handle(), m.PDSHost())
	}
	if p := render(m)["profile"].(map[string]any); p["displayName"] != "Old" {
		t.Errorf("InvalidateIdentity dropped the profile: %v", p)
	}
	e.InvalidateProfile(did)
	if p := render(e.Metadata(ctx, did))["profile"].(map[string]any); p["displayName"] != "New" {
		t.Errorf("after InvalidateProfile: %v", p)
	}
	if n := plc.count(auditPath(did)); n != 2 {
		t.Errorf("audit log fetched %d times, want 2: once, then once after the #identity", n)
	}
}

// TestProfileSettle is the AppView catching up with a profile change after atkafka saw it: the answer fetched for
// the change's own event is still the old profile, and must not be what later events get once the AppView has
// the new one. After ProfileSettle, answers are cached again.
func TestProfileSettle(t *testing.T) {
	// In a synctest bubble: time is fake, so the deadlines and TTLs below are exact whatever the load.
	synctest.Test(t, func(t *testing.T) {
		plc := newMemPLC()
		did := testDID("settler")
		plc.set(plc.docs, did, docJSON(did, "settler.test", "https://pds.example"))
		plc.set(plc.profiles, did, `{"did":"`+did+`","displayName":"Old"}`)
		e := newEnricher(t, Config{HTTPClient: plc.client(), PLCHost: plc.URL, APIHost: plc.URL, ProfileSettle: 200 * time.Millisecond})
		ctx := context.Background()
		path := profilesPath(did)
		displayName := func() any { return render(e.Metadata(ctx, did))["profile"].(map[string]any)["displayName"] }
		displayName()

		e.InvalidateProfile(did)
		if got := displayName(); got != "Old" { // the AppView has not indexed the change yet
			t.Fatalf("displayName %v before the AppView changed", got)
		}
		plc.set(plc.profiles, did, `{"did":"`+did+`","displayName":"New"}`)
		if got := displayName(); got != "New" {
			t.Fatalf("displayName %v after the AppView indexed the change: the old answer was cached", got)
		}
		if n := plc.count(path); n != 3 {
			t.Errorf("%d profile requests, want 3: one per lookup while settling", n)
		}

		time.Sleep(250 * time.Millisecond)
		displayName()
		displayName()
		if n := plc.count(path); n != 4 {
			t.Errorf("%d profile requests, want 4: settled, the answer is cached again", n)
		}
	})
}

func TestInvalidateDuringFetch(t *testing.T) {
	// In a synctest bubble: time is fake, so the deadlines and TTLs below are exact whatever the load.
	synctest.Test(t, func(t *testing.T) {
		plc := newMemPLC()
		did := testDID("racer")
		plc.set(plc.docs, did, docJSON(did, "old.test", "https://pds.example"))
		plc.mu.Lock()
		plc.delay[auditPath(did)] = 100 * time.Millisecond
		plc.mu.Unlock()
		e := newEnricher(t, Config{HTTPClient: plc.client(), PLCHost: plc.URL, LookupTimeout: 10 * time.Millisecond})
		e.Metadata(context.Background(), did) // starts a fetch that will answer "old.test"
		time.Sleep(20 * time.Millisecond)
		plc.set(plc.docs, did, docJSON(did, "new.test", "https://pds.example"))
		e.InvalidateIdentity(did) // the #identity event arrives while the old fetch is running
		time.Sleep(150 * time.Millisecond)
		m := e.Metadata(context.Background(), did)
		if m.Handle() == "old.test" {
			t.Error("a fetch started before the invalidation was cached after it")
		}
	})
}

func TestTTLExpiry(t *testing.T) {
	// In a synctest bubble: time is fake, so the deadlines and TTLs below are exact whatever the load.
	synctest.Test(t, func(t *testing.T) {
		plc := newMemPLC()
		did, gone := testDID("ttl"), testDID("gone")
		plc.set(plc.docs, did, docJSON(did, "ttl.test", "https://pds.example"))
		obs := newCounts()
		e := newEnricher(t, Config{HTTPClient: plc.client(), PLCHost: plc.URL, DocTTL: 100 * time.Millisecond, NotFoundTTL: 50 * time.Millisecond, Observer: obs})
		ctx := context.Background()
		e.Metadata(ctx, did).PDS()
		e.Metadata(ctx, gone).PDS()
		e.Metadata(ctx, did).PDS()
		e.Metadata(ctx, gone).PDS()
		if plc.count(auditPath(did)) != 1 || plc.count(auditPath(gone)) != 1 {
			t.Fatalf("cache did not answer: %v", plc.hits)
		}
		time.Sleep(70 * time.Millisecond) // the negative entry expired, the positive one not yet
		e.Metadata(ctx, did).PDS()
		e.Metadata(ctx, gone).PDS()
		if plc.count(auditPath(did)) != 1 || plc.count(auditPath(gone)) != 2 {
			t.Errorf("after 70ms: %v", plc.hits)
		}
		time.Sleep(60 * time.Millisecond)
		e.Metadata(ctx, did).PDS()
		if plc.count(auditPath(did)) != 2 {
			t.Errorf("after DocTTL: %v", plc.hits)
		}
		if n := obs.get("cache doc"); n < 1 {
			t.Errorf("doc cache size %v", n)
		}
	})
}

func TestRateLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		plc := newMemPLC()
		const n, perSecond = 8, 20.0
		dids := make([]string, n)
		for i := range dids {
			dids[i] = testDID(fmt.Sprintf("rate%c", 'a'+i))
			plc.set(plc.docs, dids[i], docJSON(dids[i], "r.test", "https://pds.example"))
			plc.set(plc.created, dids[i], "2023-04-01T00:00:00.000Z")
		}
		e := newEnricher(t, Config{HTTPClient: plc.client(), PLCHost: plc.URL, PLCRate: perSecond, PLCBurst: 1, LookupTimeout: 5 * time.Second})
		var wg sync.WaitGroup
		for _, did := range dids {
			wg.Go(func() {
				if m := e.Metadata(context.Background(), did); m.Handle() != "r.test" || m.AccountAge() < 0 {
					t.Errorf("%s: incomplete metadata", did)
				}
			})
		}
		wg.Wait()
		plc.mu.Lock()
		times := slices.Clone(plc.times)
		plc.mu.Unlock()
		if len(times) != n {
			t.Fatalf("%d requests, want %d (one per account)", len(times), n)
		}
		slices.SortFunc(times, func(a, b time.Time) int { return a.Compare(b) })
		// With a burst of 1, request i cannot come before (i / rate) after the first; allow scheduling slack.
		for i, at := range times {
			min := time.Duration(float64(i)/perSecond*float64(time.Second)) - 15*time.Millisecond
			if at.Sub(times[0]) < min {
				t.Errorf("request %d at +%v, before the limiter allows (+%v)", i, at.Sub(times[0]), min)
			}
		}
	})
}

func TestCircuitBreaker(t *testing.T) {
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down", http.StatusServiceUnavailable)
	}))
	defer down.Close()
	e := newEnricher(t, Config{PLCHost: down.URL, LookupTimeout: 5 * time.Second})
	for i := range 3 { // 3 DIDs × (doc + audit) × 3 attempts: well past the threshold
		e.Metadata(context.Background(), testDID(fmt.Sprintf("down%c", 'a'+i)))
	}
	start := time.Now()
	for i := range 20 {
		if r := e.Metadata(context.Background(), testDID(fmt.Sprintf("new%c", 'a'+i))).PDS(); r.Outcome != filter.Unknown {
			t.Errorf("PDS with the PLC down = %+v", r)
		}
	}
	if d := time.Since(start); d > 500*time.Millisecond { // without the breaker: 20 × ~300ms of backoff
		t.Errorf("20 new DIDs with the PLC known down took %v", d)
	}
}

func TestDIDWeb(t *testing.T) {
	plc := newFakePLC(t)
	did := "did:web:alice.example.com"
	plc.set(plc.docs, did, docJSON(did, "alice.example.com", "https://pds.example.com"))
	e := newEnricher(t, Config{PLCHost: plc.URL})
	e.webURL = func(host string) string { return plc.URL + "/web/" + host }
	m := e.Metadata(context.Background(), did)
	if m.Handle() != "alice.example.com" || m.PDSHost() != "https://pds.example.com" || m.AccountAge() != -1 {
		t.Errorf("did:web metadata: %s", m.AppendJSON(nil))
	}
	if plc.total() != 1 {
		t.Errorf("requests: %v (no audit log for did:web)", plc.hits)
	}
	// Keys and services by id come from the same cached document, as indigo reads it.
	ctx := context.Background()
	if k, cached, err := e.PublicKey(ctx, did, "atproto"); err != nil || !cached || k.Multibase() != "zQ3shrc8v5X6ZiANcZxA6JerfT2T4SskeCGxpmtDfMuHF9KRj" {
		t.Errorf("#atproto key: %v, cached %v, %v", k, cached, err)
	}
	if _, _, err := e.PublicKey(ctx, did, "atproto_label"); !errors.Is(err, identity.ErrKeyNotDeclared) {
		t.Errorf("#atproto_label key: %v, want ErrKeyNotDeclared", err)
	}
	if ep, cached, err := e.ServiceEndpoint(ctx, did, "atproto_pds"); err != nil || !cached || ep != "https://pds.example.com" {
		t.Errorf("#atproto_pds: %q, cached %v, %v", ep, cached, err)
	}
	if ep, _, err := e.ServiceEndpoint(ctx, did, "atproto_labeler"); err != nil || ep != "" {
		t.Errorf("#atproto_labeler: %q, %v; want none", ep, err)
	}
	if _, _, err := e.ServiceEndpoint(ctx, "did:web:nobody.example.com", "atproto_pds"); !errors.Is(err, identity.ErrDIDNotFound) {
		t.Errorf("unknown DID: %v, want ErrDIDNotFound", err)
	}
	if plc.total() != 2 {
		t.Errorf("requests: %v, want one more, for the unknown DID", plc.hits)
	}
}

func TestDocumentForAnotherDID(t *testing.T) {
	plc := newFakePLC(t)
	did, other := "did:web:asked.example.com", "did:web:other.example.com"
	plc.set(plc.docs, did, docJSON(other, "other.test", "https://pds.example"))
	e := newEnricher(t, Config{PLCHost: plc.URL})
	e.webURL = func(host string) string { return plc.URL + "/web/" + host }
	if r := e.Metadata(context.Background(), did).PDS(); r.Outcome != filter.NoPDS {
		t.Errorf("document with the wrong id: PDS %+v", r)
	}
}

func TestConfig(t *testing.T) {
	for _, bad := range []Config{
		{PLCHost: "plc.directory"},
		{PLCHost: "ftp://plc.directory"},
		{PLCHost: "https://"},
		{PLCHost: "https://plc.directory?x=1"},
		{APIHost: "public.api.bsky.app"},
		{LookupTimeout: -time.Second},
		{DocCacheSize: -1},
	} {
		if _, err := New(bad); err == nil {
			t.Errorf("New(%+v) accepted", bad)
		}
	}
	e, err := New(Config{PLCHost: "https://plc.example///"})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if e.plcHost != "https://plc.example" || e.timeout != DefaultLookupTimeout || e.profiles != nil {
		t.Errorf("defaults: host %q timeout %v", e.plcHost, e.timeout)
	}
	d, _ := New(Config{})
	defer d.Close()
	if d.plcHost != "https://plc.directory" {
		t.Errorf("default PLC host %q", d.plcHost)
	}
}

func TestNilMetadata(t *testing.T) {
	var m *Metadata
	if b := string(m.AppendJSON([]byte("x"))); b != `x{"accountAge":-1}` {
		t.Errorf("nil renders %s", b)
	}
	if m.Handle() != "" || m.PDSHost() != "" || m.AccountAge() != -1 || !m.CreatedAt().IsZero() {
		t.Error("nil getters")
	}
}

// TestBudget: under a rate limit too small for the accounts arriving, events do not wait for requests the limit
// cannot grant soon (reason budget, at once), while the limit's whole budget still goes to lookups that answer in
// time.
func TestBudget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		plc := newMemPLC()
		const n, every = 60, 25 * time.Millisecond // 40 new accounts a second, for 1.5 s
		dids := make([]string, n)
		for i := range dids {
			dids[i] = testDID(fmt.Sprintf("budget%c%c", 'a'+i/26, 'a'+i%26))
			plc.set(plc.docs, dids[i], docJSON(dids[i], "b.test", "https://pds.example"))
		}
		obs := newCounts()
		e := newEnricher(t, Config{HTTPClient: plc.client(), PLCHost: plc.URL, PLCRate: 20, PLCBurst: 1, LookupTimeout: 500 * time.Millisecond, Observer: obs})
		var wg sync.WaitGroup
		var enriched, quick atomic.Int32
		start := time.Now()
		for _, did := range dids {
			wg.Go(func() {
				t0 := time.Now()
				m := e.Metadata(context.Background(), did)
				switch {
				case m.Handle() == "b.test":
					enriched.Add(1)
				case time.Since(t0) < 100*time.Millisecond:
					quick.Add(1) // on without metadata at once, not at its deadline
				}
			})
			time.Sleep(every)
		}
		arrivals := time.Since(start) // 1.5 s, longer on a busy machine
		wg.Wait()
		if d := time.Since(start) - arrivals; d > 600*time.Millisecond {
			t.Errorf("the last events took %v after the last arrived, want their 500ms deadline at most", d)
		}
		// The budget grants 20 a second over the arrivals, plus the lookups of the last deadline: it is spent.
		budgetN := int32(20*(arrivals+500*time.Millisecond).Seconds()) + 1
		if got := enriched.Load(); got < budgetN*7/10 || got > budgetN+2 {
			t.Errorf("%d of %d events enriched, want about the %d the budget allows", got, n, budgetN)
		}
		// A few at the edge may be sent and answer late: the expected latency is an estimate.
		if got := quick.Load(); got+enriched.Load() < n-4 {
			t.Errorf("%d events went on at once and %d were enriched, of %d: the others waited out their deadline", got, enriched.Load(), n)
		}
		if d := obs.get("lookups doc budget false"); d < float64(n-enriched.Load()-4) {
			t.Errorf("%v doc lookups refused by the budget, want one per event not enriched", d)
		}
		// Requests are sent only when expected to answer in time; the expectation learns from answers, so a few may
		// miss.
		if total := plc.total(); total > int(enriched.Load())+4 {
			t.Errorf("%d requests reached the PLC for %d enriched events: requests sent should answer in time", total, enriched.Load())
		}
	})
}

// TestDeadlineBoundsEveryPiece: when the document and the profile are both slow, the event waits for its
// deadline once, not for the profile's fetch after the document's wait used the deadline up.
func TestDeadlineBoundsEveryPiece(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		plc := newMemPLC()
		did := testDID("bothslow")
		plc.set(plc.docs, did, docJSON(did, "slow.test", "https://pds.example"))
		plc.set(plc.profiles, did, `{"did":"`+did+`"}`)
		plc.mu.Lock()
		plc.delay[auditPath(did)] = 5 * time.Second
		plc.delay[profilesPath(did)] = 5 * time.Second
		plc.mu.Unlock()
		e := newEnricher(t, Config{HTTPClient: plc.client(), PLCHost: plc.URL, APIHost: plc.URL, LookupTimeout: time.Second})
		start := time.Now()
		m := e.Metadata(context.Background(), did)
		if d := time.Since(start); d != time.Second {
			t.Errorf("metadata after %v, want the 1s deadline", d)
		}
		if m.Handle() != "" || render(m)["profile"] != nil {
			t.Errorf("metadata before the slow answers: %s", m.AppendJSON(nil))
		}
	})
}
