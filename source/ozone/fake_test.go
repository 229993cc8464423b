package ozone

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/atkafka/atkafka/cursor"
	"github.com/atkafka/atkafka/sink"
	"github.com/atkafka/atkafka/sink/sinktest"
	"github.com/atkafka/atkafka/testenv"
)

const (
	fakeLabeler  = "did:plc:fakelabeler"
	fakeUser     = "mod.test"
	fakePassword = "hunter2-secret"
)

// fakeOzone is a PDS that proxies to an Ozone, in one handler. Its queryEvents follows @atproto/ozone's keyset
// rules: order by (createdAt, id), cursor "<ms>::<id>" exclusive, createdBefore an inclusive string comparison.
type fakeOzone struct {
	t   *testing.T
	srv *httptest.Server

	mu          sync.Mutex
	events      []fakeEvent
	nextID      int64
	accessTTL   time.Duration
	access      map[string]time.Time // token -> expiry
	refresh     map[string]bool
	tokenSeq    int
	failRefresh bool
	// fail, when set, answers a queryEvents request instead of the handler; it returns false to let it through.
	fail                       func(w http.ResponseWriter) bool
	logins, refreshes, queries int
	expiredAnswers             int
}

type fakeEvent struct {
	id        int64
	createdAt string
	raw       json.RawMessage // nil: built from the fields
}

func newFakeOzone(t *testing.T) *fakeOzone {
	f := &fakeOzone{t: t, accessTTL: time.Hour, access: map[string]time.Time{}, refresh: map[string]bool{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /xrpc/com.atproto.server.createSession", f.createSession)
	mux.HandleFunc("POST /xrpc/com.atproto.server.refreshSession", f.refreshSession)
	mux.HandleFunc("GET /xrpc/tools.ozone.moderation.queryEvents", f.queryEvents)
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	return f
}

// add appends n events created at ts (ISO with milliseconds), returning their ids.
func (f *fakeOzone) add(ts string, n int) []int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	var ids []int64
	for range n {
		f.nextID++
		f.events = append(f.events, fakeEvent{id: f.nextID, createdAt: ts})
		ids = append(ids, f.nextID)
	}
	sort.SliceStable(f.events, func(i, j int) bool {
		a, b := f.events[i], f.events[j]
		return a.createdAt < b.createdAt || a.createdAt == b.createdAt && a.id < b.id
	})
	return ids
}

// addRaw appends an event answered verbatim (for malformed events); createdAt orders it.
func (f *fakeOzone) addRaw(createdAt, raw string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nextID++
	f.events = append(f.events, fakeEvent{id: f.nextID, createdAt: createdAt, raw: json.RawMessage(raw)})
}

func (e fakeEvent) view() json.RawMessage {
	if e.raw != nil {
		return e.raw
	}
	return json.RawMessage(fmt.Sprintf(`{"id":%d,"event":{"$type":"tools.ozone.moderation.defs#modEventComment","comment":"c%d"},`+
		`"subject":{"$type":"com.atproto.admin.defs#repoRef","did":"did:plc:x"},"subjectBlobCids":[],"createdBy":"did:plc:mod",`+
		`"createdAt":%q}`, e.id, e.id, e.createdAt))
}

func xrpcErr(w http.ResponseWriter, status int, name, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"error":%q,"message":%q}`, name, msg)
}

func fakeJWT(seq int, iat, exp time.Time) string {
	enc := base64.RawURLEncoding.EncodeToString
	payload := fmt.Sprintf(`{"sub":"did:plc:mod","jti":"%d","iat":%d,"exp":%d}`, seq, iat.Unix(), exp.Unix())
	return enc([]byte(`{"alg":"ES256K","typ":"at+jwt"}`)) + "." + enc([]byte(payload)) + ".c2ln"
}

// issue hands out a new token pair; f.mu is held.
func (f *fakeOzone) issue(w http.ResponseWriter) {
	f.tokenSeq++
	now := time.Now()
	acc := fakeJWT(f.tokenSeq, now, now.Add(f.accessTTL))
	ref := fakeJWT(-f.tokenSeq, now, now.Add(90*24*time.Hour))
	f.access[acc] = now.Add(f.accessTTL)
	f.refresh[ref] = true
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"did":"did:plc:mod","handle":%q,"accessJwt":%q,"refreshJwt":%q}`, fakeUser, acc, ref)
}

func (f *fakeOzone) createSession(w http.ResponseWriter, r *http.Request) {
	var in struct{ Identifier, Password string }
	_ = json.NewDecoder(r.Body).Decode(&in)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.logins++
	if in.Identifier != fakeUser || in.Password != fakePassword {
		xrpcErr(w, http.StatusUnauthorized, "AuthenticationRequired", "Invalid identifier or password")
		return
	}
	f.issue(w)
}

func (f *fakeOzone) refreshSession(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.refreshes++
	tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	if f.failRefresh || !f.refresh[tok] {
		xrpcErr(w, http.StatusBadRequest, "ExpiredToken", "Token has been revoked")
		return
	}
	delete(f.refresh, tok)
	f.issue(w)
}

// expireTokens makes every access token issued so far expired.
func (f *fakeOzone) expireTokens() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for k := range f.access {
		f.access[k] = time.Now().Add(-time.Second)
	}
}

func (f *fakeOzone) queryEvents(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.queries++
	if f.fail != nil && f.fail(w) {
		return
	}
	if got := r.Header.Get("atproto-proxy"); got != fakeLabeler+"#atproto_labeler" {
		xrpcErr(w, http.StatusBadRequest, "InvalidRequest", "bad atproto-proxy "+got)
		return
	}
	exp, ok := f.access[strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")]
	if !ok {
		xrpcErr(w, http.StatusUnauthorized, "AuthenticationRequired", "Authentication Required")
		return
	}
	if time.Now().After(exp) {
		f.expiredAnswers++
		xrpcErr(w, http.StatusBadRequest, "ExpiredToken", "Token has expired")
		return
	}
	q := r.URL.Query()
	if q.Get("sortDirection") != "asc" || q.Get("limit") != "100" {
		xrpcErr(w, http.StatusBadRequest, "InvalidRequest", "want sortDirection=asc&limit=100, got "+r.URL.RawQuery)
		return
	}
	out := f.page(q.Get("cursor"), q.Get("createdBefore"), 100)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

func (f *fakeOzone) page(cur, before string, limit int) any {
	var afterMs, afterID int64 = -1 << 62, 0
	if cur != "" {
		ms, id, _ := strings.Cut(cur, "::")
		afterMs, _ = strconv.ParseInt(ms, 10, 64)
		afterID, _ = strconv.ParseInt(id, 10, 64)
	}
	var events []json.RawMessage
	var last fakeEvent
	for _, e := range f.events {
		ms := fakeMillis(e.createdAt)
		if ms < afterMs || ms == afterMs && e.id <= afterID || before != "" && e.createdAt > before {
			continue
		}
		if len(events) == limit {
			break
		}
		events, last = append(events, e.view()), e
	}
	out := map[string]any{"events": events}
	if len(events) > 0 {
		out["cursor"] = fmt.Sprintf("%d::%d", fakeMillis(last.createdAt), last.id)
	}
	return out
}

func fakeMillis(ts string) int64 {
	t, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil {
		return 0
	}
	return t.UnixMilli()
}

func (f *fakeOzone) counts() (logins, refreshes, queries int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.logins, f.refreshes, f.queries
}

// ackedKeys returns the keys of the records s delivered, in delivery order.
func ackedKeys(s *sinktest.Sink) []string {
	var keys []string
	for _, r := range s.Records() {
		keys = append(keys, r.Key)
	}
	return keys
}

// failTimes fails the first n deliveries of the event with key.
func failTimes(key string, n int) func(*sink.Message) error {
	var mu sync.Mutex
	return func(msg *sink.Message) error {
		mu.Lock()
		defer mu.Unlock()
		if string(msg.Records[0].Key) != key || n == 0 {
			return nil
		}
		n--
		return fmt.Errorf("delivery of %s failed", key)
	}
}

// testEnv is one Source wired to a fake and a cursor file.
type testEnv struct {
	t      *testing.T
	fake   *fakeOzone
	cursor *cursor.File
	obs    *counter
}

func newTestEnv(t *testing.T) *testEnv {
	return &testEnv{t: t, fake: newFakeOzone(t), cursor: cursor.NewFile(filepath.Join(t.TempDir(), "ozone-cursor.txt")),
		obs: &counter{decodeErrors: map[string]int{}}}
}

// counter is an Observer that keeps what the tests check.
type counter struct {
	mu           sync.Mutex
	committed    int64
	decodeErrors map[string]int
	logins       int // that worked
}

func (*counter) Read(string, int64)      {}
func (*counter) Lag(time.Duration)       {}
func (*counter) Polled(time.Duration)    {}
func (*counter) Delivered(time.Duration) {}
func (*counter) DeadLettered(string)     {}

func (c *counter) Committed(id int64, _ time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.committed = id
}

func (c *counter) Auth(kind string, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if kind == "login" && ok {
		c.logins++
	}
}

// loginsOK reads how many logins worked.
func (c *counter) loginsOK() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.logins
}

func (c *counter) DecodeError(kind string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.decodeErrors[kind]++
}

// lastCommitted and decodeErrorsOf read the counts.
func (c *counter) lastCommitted() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.committed
}

func (c *counter) decodeErrorsOf(kind string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.decodeErrors[kind]
}

func (e *testEnv) config(s sink.Sink) Config {
	return Config{
		PDSHost: e.fake.srv.URL, Identifier: fakeUser, Password: fakePassword, LabelerDID: fakeLabeler,
		PollInterval: 20 * time.Millisecond, SettleDelay: -1, Cursor: e.cursor, Sink: s,
		Logger: testLogger(e.t), Observer: e.obs,
	}
}

func (e *testEnv) source(cfg Config) *Source {
	e.t.Helper()
	s, err := New(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	s.minBackoff, s.maxBackoff, s.drainTimeout = 10*time.Millisecond, 100*time.Millisecond, 500*time.Millisecond
	return s
}

// run starts s and returns a stop function that cancels it and returns Run's error.
func run(t *testing.T, s *Source) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(30 * time.Second):
				t.Fatal("Run did not return after cancel")
			}
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

// waitFor polls cond until it holds or fails the test after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func testLogger(t testing.TB) *slog.Logger { return testenv.Logger(t, slog.LevelDebug) }

// logBuffer captures log output for assertions.
type logBuffer = testenv.Buffer
