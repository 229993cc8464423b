package ozone

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/atkafka/atkafka/cursor"
	"github.com/atkafka/atkafka/schema/schematest"
	"github.com/atkafka/atkafka/sink"
	"github.com/atkafka/atkafka/sink/kafka"
	"github.com/atkafka/atkafka/testenv"
	"github.com/atkafka/atkafka/transform/format"
)

// e2e is one end-to-end scenario: its own PLC + PDS + Ozone (dev-env), the shared real Kafka, a topic of its own.
type e2e struct {
	t       *testing.T
	env     *testenv.DevEnv
	brokers string
	topic   string
	subject string // DID of an account the moderation events are about
	record  string // at-uri and cid of one of its posts
	cid     string
}

func newE2E(t *testing.T) *e2e {
	if testing.Short() {
		t.Skip("end-to-end: starts dev-env and needs Kafka")
	}
	k := testenv.Kafka(t)
	env := testenv.StartDevEnv(t, testenv.DevEnvOptions{Ozone: true})
	e := &e2e{t: t, env: env, brokers: k.Brokers, topic: testenv.NewTopic(t)}
	acct := env.CreateAccount(env.PDS[0], "subject")
	e.subject = acct.DID
	e.record, e.cid = env.Post(acct, "hello")
	return e
}

// producer is a Kafka sink writing to the scenario's topic.
func (e *e2e) producer() *kafka.Producer {
	return newProducer(e.t, e.brokers, e.topic)
}

func newProducer(t testing.TB, brokers, topic string) *kafka.Producer {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p, err := kafka.New(ctx, kafka.Config{Brokers: []string{brokers}, Topic: topic, CreateTopic: true, Partitions: 3,
		Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("kafka producer: %v", err)
	}
	t.Cleanup(func() { _ = p.Close(context.Background()) })
	return p
}

func (e *e2e) config(s sink.Sink, cursorPath string) Config {
	return Config{
		PDSHost: e.env.Moderator.PDSURL, Identifier: e.env.Moderator.Identifier, Password: e.env.Moderator.Password,
		LabelerDID:   e.env.OzoneDID,
		PollInterval: 100 * time.Millisecond, Cursor: cursor.NewFile(cursorPath), Sink: s, Logger: testLogger(e.t),
	}
}

// runSource runs a Source until stop is called.
func (e *e2e) runSource(cfg Config) (stop func() error) {
	s, err := New(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	s.minBackoff, s.maxBackoff = 50*time.Millisecond, time.Second
	return run(e.t, s)
}

// allEvents is every event queryEvents lists (the harness asks Ozone itself, not through the PDS or the Source):
// id -> raw view.
func (e *e2e) allEvents() map[int64]json.RawMessage {
	e.t.Helper()
	views := map[int64]json.RawMessage{}
	for _, raw := range e.env.QueryOzoneEvents(nil) {
		ev, err := decodeEvent(raw)
		if err != nil {
			e.t.Fatalf("queryEvents returned an undecodable event: %v", err)
		}
		views[ev.id] = raw
	}
	return views
}

// kafkaEvents reads the topic until it holds at least want records, each checked against the published schema:
// id -> values in offset order per id.
func (e *e2e) kafkaEvents(want int) map[int64][][]byte {
	e.t.Helper()
	recs := testenv.ReadAll(e.t, e.brokers, e.topic, want, 2*time.Minute)
	got := map[int64][][]byte{}
	for _, r := range recs {
		id, err := strconv.ParseInt(string(r.Key), 10, 64)
		if err != nil {
			e.t.Fatalf("record key %q is not an event id", r.Key)
		}
		schematest.Check(e.t, schematest.OzoneEvent, r.Value)
		got[id] = append(got[id], r.Value)
	}
	return got
}

// checkExactlyOnce asserts Kafka holds every event Ozone has, once, byte for byte as queryEvents returns it.
func (e *e2e) checkExactlyOnce() {
	e.t.Helper()
	views := e.allEvents()
	got := e.kafkaEvents(len(views))
	e.checkSame(views, got, nil)
}

// checkSame compares Kafka with Ozone; ids in mayRepeat may appear twice (a kill -9 repeats the in-flight ones).
func (e *e2e) checkSame(views map[int64]json.RawMessage, got map[int64][][]byte, mayRepeat func(int64) bool) {
	e.t.Helper()
	for id, view := range views {
		vals := got[id]
		switch {
		case len(vals) == 0:
			e.t.Errorf("event %d is missing from Kafka", id)
		case len(vals) > 1 && (mayRepeat == nil || !mayRepeat(id) || len(vals) > 2):
			e.t.Errorf("event %d is in Kafka %d times", id, len(vals))
		}
		for _, v := range vals {
			if !bytes.Equal(v, view) {
				e.t.Errorf("event %d differs:\nkafka: %s\nozone: %s", id, v, view)
			}
		}
	}
	for id := range got {
		if _, ok := views[id]; !ok {
			e.t.Errorf("Kafka has event %d that Ozone does not", id)
		}
	}
}

// emitKinds emits one event of every kind the issue names, about the subject account and its post.
func (e *e2e) emitKinds() {
	repo := map[string]any{"$type": "com.atproto.admin.defs#repoRef", "did": e.subject}
	post := map[string]any{"$type": "com.atproto.repo.strongRef", "uri": e.record, "cid": e.cid}
	const defs = "tools.ozone.moderation.defs#"
	for _, ev := range []struct {
		subject map[string]any
		event   map[string]any
	}{
		{post, map[string]any{"$type": defs + "modEventReport", "reportType": "com.atproto.moderation.defs#reasonSpam", "comment": "spam"}},
		{repo, map[string]any{"$type": defs + "modEventComment", "comment": "looking into it"}},
		{post, map[string]any{"$type": defs + "modEventLabel", "createLabelVals": []string{"spam"}, "negateLabelVals": []string{}}},
		{repo, map[string]any{"$type": defs + "modEventTag", "add": []string{"lang:en"}, "remove": []string{}}},
		{post, map[string]any{"$type": defs + "modEventAcknowledge"}},
		{repo, map[string]any{"$type": defs + "modEventTakedown", "comment": "taken down"}},
		{repo, map[string]any{"$type": defs + "modEventReverseTakedown", "comment": "restored"}},
		{repo, map[string]any{"$type": defs + "modEventEscalate"}},
	} {
		e.env.EmitOzoneEvent(map[string]any{"event": ev.event, "subject": ev.subject})
	}
}

// emitParallel emits n comments at once, so that Ozone stamps several of them with one millisecond. It calls
// XRPC directly: the harness's helpers fail the test and so belong to the test goroutine.
func (e *e2e) emitParallel(n int) {
	e.t.Helper()
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			errs <- e.env.XRPC(testenv.XRPCRequest{Service: e.env.OzoneURL, NSID: "tools.ozone.moderation.emitEvent",
				Procedure: true, Auth: e.env.AdminAuth(), Input: map[string]any{
					"event":     map[string]any{"$type": "tools.ozone.moderation.defs#modEventComment", "comment": fmt.Sprintf("parallel %d", i)},
					"subject":   map[string]any{"$type": "com.atproto.admin.defs#repoRef", "did": e.subject},
					"createdBy": e.env.Moderator.DID,
				}}, nil)
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			e.t.Fatalf("emitEvent: %v", err)
		}
	}
}

// sameMillisecond counts events that share their createdAt with another one.
func sameMillisecond(views map[int64]json.RawMessage) int {
	byTime := map[string]int{}
	for _, v := range views {
		var h struct{ CreatedAt string }
		_ = json.Unmarshal(v, &h)
		byTime[h.CreatedAt]++
	}
	n := 0
	for _, c := range byTime {
		if c > 1 {
			n += c
		}
	}
	return n
}

// Every kind of event, many within one millisecond, reaches Kafka exactly once and unchanged; a restart from the
// cursor file produces only what is new.
func TestE2EExactlyOnceAndRestart(t *testing.T) {
	e := newE2E(t)
	e.emitKinds()
	for range 5 { // parallel emits usually share a millisecond somewhere; try a few batches to be sure
		e.emitParallel(40)
		if views := e.allEvents(); sameMillisecond(views) > 0 {
			break
		}
	}
	views := e.allEvents()
	t.Logf("%d events, %d of them sharing their createdAt millisecond with another", len(views), sameMillisecond(views))
	if sameMillisecond(views) == 0 {
		t.Log("no two events shared a millisecond this time; the unit tests cover that case deterministically")
	}

	cursorPath := filepath.Join(t.TempDir(), "ozone-cursor.txt")
	p := e.producer()
	stop := e.runSource(e.config(p, cursorPath))
	e.kafkaEvents(len(views))
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	e.checkExactlyOnce()
	line, _, _ := cursor.NewFile(cursorPath).Load()
	t.Logf("cursor after the first run: %q", line)

	e.emitKinds()
	e.emitParallel(20)
	stop = e.runSource(e.config(p, cursorPath))
	views = e.allEvents()
	e.kafkaEvents(len(views))
	_ = stop()
	e.checkExactlyOnce()
}

// In both Osprey formats, each moderation event arrives unchanged inside the envelope, named by its type, with a
// unique id, as each Osprey input decodes it.
func TestE2EOspreyFormats(t *testing.T) {
	e := newE2E(t)
	e.emitKinds()
	views := e.allEvents()
	ids, _ := format.NewSnowflake(2)
	for _, f := range []struct {
		name schematest.Format
		opts []format.FormatterOption
	}{{schematest.Worker, []format.FormatterOption{format.Osprey(ids)}},
		{schematest.Coordinator, []format.FormatterOption{format.Osprey(ids), format.Coordinator()}}} {
		e.topic = testenv.NewTopic(t)
		cfg := e.config(e.producer(), filepath.Join(t.TempDir(), "ozone-cursor.txt"))
		cfg.Formatter = format.NewFormatter(f.opts...)
		stop := e.runSource(cfg)
		got := e.kafkaEvents(len(views))
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		seen := map[uint64]bool{}
		for id, vals := range got {
			for i, v := range vals {
				data, form, env := schematest.Check(t, schematest.OzoneEvent, v)
				ev, err := decodeEvent(data)
				if form != f.name || err != nil || env.Name != actionName(ev.typ) || seen[env.ID] {
					t.Errorf("event %d: format %s, action %q, id %d (seen %v), %v: %q", id, form, env.Name, env.ID, seen[env.ID], err, v)
				}
				seen[env.ID], vals[i] = true, data
			}
		}
		e.checkSame(views, got, nil)
	}
}

// The Ozone service stopping and starting again mid-run loses nothing; the source waits it out.
func TestE2EOzoneRestart(t *testing.T) {
	e := newE2E(t)
	e.emitKinds()
	cursorPath := filepath.Join(t.TempDir(), "ozone-cursor.txt")
	stop := e.runSource(e.config(e.producer(), cursorPath))
	views := e.allEvents()
	e.kafkaEvents(len(views))

	e.env.StopOzone()
	time.Sleep(3 * time.Second) // several failed polls: the source must keep going
	e.env.StartOzone()
	e.emitKinds()
	e.emitParallel(20)
	views = e.allEvents()
	e.kafkaEvents(len(views))
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	e.checkExactlyOnce()
}

// Refusals of the real PDS's tokens, injected on the wire: an ExpiredToken answer makes the source refresh through
// the real PDS, and a refused refresh makes it log in again; no event is lost or repeated.
func TestE2ETokenExpiry(t *testing.T) {
	e := newE2E(t)
	e.emitKinds()
	ft := &faultTransport{next: http.DefaultTransport, expireQueries: 1, failRefreshes: 1}
	cfg := e.config(e.producer(), filepath.Join(t.TempDir(), "ozone-cursor.txt"))
	cfg.HTTPClient = &http.Client{Transport: ft, Timeout: 30 * time.Second}
	stop := e.runSource(cfg)
	views := e.allEvents()
	e.kafkaEvents(len(views))
	ft.expire(1)
	e.emitKinds()
	views = e.allEvents()
	e.kafkaEvents(len(views))
	_ = stop()
	e.checkExactlyOnce()
	if logins, refreshes := ft.counts(); logins != 2 || refreshes != 1 {
		t.Fatalf("logins %d, refreshes %d; want 2 (start, after the refused refresh) and 1", logins, refreshes)
	}
}

// faultTransport answers chosen requests with the PDS's ExpiredToken error instead of sending them.
type faultTransport struct {
	next http.RoundTripper

	mu                           sync.Mutex
	expireQueries, failRefreshes int
	armed                        bool
	logins, refreshes            int
}

func (f *faultTransport) expire(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.expireQueries, f.armed = n, true
}

func (f *faultTransport) counts() (int, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.logins, f.refreshes
}

func (f *faultTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	f.mu.Lock()
	fault := false
	switch {
	case strings.HasSuffix(r.URL.Path, createSessionNSID):
		f.logins++
	case strings.HasSuffix(r.URL.Path, refreshSessionNSID):
		f.refreshes++
		if f.failRefreshes > 0 {
			f.failRefreshes--
			fault = true
		}
	case f.armed && f.expireQueries > 0 && strings.HasSuffix(r.URL.Path, queryEventsNSID):
		f.expireQueries--
		fault = true
	}
	f.mu.Unlock()
	if !fault {
		return f.next.RoundTrip(r)
	}
	body := `{"error":"ExpiredToken","message":"Token has expired"}`
	return &http.Response{StatusCode: http.StatusBadRequest, Header: http.Header{"Content-Type": {"application/json"}},
		Body: io.NopCloser(strings.NewReader(body)), Request: r}, nil
}

// childEnv carries the configuration of a source run in a child process, for the kill -9 test.
const childEnv = "ATKAFKA_OZONE_E2E_CHILD"

type childConfig struct {
	PDS, Identifier, Password, Labeler, Brokers, Topic, Cursor string
	KillAfter                                                  int // sends after which the child says "kill me"
}

// TestE2EChild is not a test: it is the process TestE2EKillMidPage kills.
func TestE2EChild(t *testing.T) {
	raw := os.Getenv(childEnv)
	if raw == "" {
		t.Skip("helper process for TestE2EKillMidPage")
	}
	var c childConfig
	if err := json.Unmarshal([]byte(raw), &c); err != nil {
		t.Fatal(err)
	}
	p := newProducer(t, c.Brokers, c.Topic)
	var sends int
	var mu sync.Mutex
	counting := sink.Func(func(ctx context.Context, msg *sink.Message) error {
		mu.Lock()
		sends++
		if sends == c.KillAfter {
			fmt.Println("KILL ME")
		}
		mu.Unlock()
		return p.Send(ctx, msg)
	})
	s, err := New(Config{PDSHost: c.PDS, Identifier: c.Identifier, Password: c.Password, LabelerDID: c.Labeler,
		PollInterval: 100 * time.Millisecond, Cursor: cursor.NewFile(c.Cursor), Sink: counting})
	if err != nil {
		t.Fatal(err)
	}
	_ = s.Run(context.Background())
}

// kill -9 in the middle of a page: after a restart every event is in Kafka, and only events after the cursor the
// killed process left behind are repeated, at most once and no more than the in-flight window.
func TestE2EKillMidPage(t *testing.T) {
	e := newE2E(t)
	for range 6 {
		e.emitParallel(50)
	}
	views := e.allEvents()
	cursorPath := filepath.Join(t.TempDir(), "ozone-cursor.txt")
	// Past the settle delay every event is readable at once, so the child runs through whole pages and the kill
	// lands in the middle of one.
	time.Sleep(DefaultSettleDelay)

	m := e.env.Moderator
	cfg, _ := json.Marshal(childConfig{PDS: m.PDSURL, Identifier: m.Identifier, Password: m.Password,
		Labeler: e.env.OzoneDID, Brokers: e.brokers, Topic: e.topic, Cursor: cursorPath, KillAfter: 150})
	cmd := exec.Command(os.Args[0], "-test.run=^TestE2EChild$", "-test.v")
	cmd.Env = append(os.Environ(), childEnv+"="+string(cfg))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = testenv.LogWriter(t)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitLine(t, out, "KILL ME", time.Minute)
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	line, ok, err := cursor.NewFile(cursorPath).Load()
	if err != nil {
		t.Fatal(err)
	}
	var left position
	if ok {
		if left, _, err = parsePosition(line); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("killed; the cursor file says %q", line)

	stop := e.runSource(e.config(e.producer(), cursorPath))
	got := e.kafkaEvents(len(views))
	_ = stop()
	after := func(id int64) bool {
		var h struct{ CreatedAt string }
		_ = json.Unmarshal(views[id], &h)
		t, _ := time.Parse(time.RFC3339Nano, h.CreatedAt)
		p := newPosition(t, id)
		return !ok || p.createdAt.After(left.createdAt) || p.createdAt.Equal(left.createdAt) && p.id > left.id
	}
	e.checkSame(views, got, after)
	repeated := 0
	for _, v := range got {
		repeated += len(v) - 1
	}
	t.Logf("%d events, %d repeated after the kill", len(views), repeated)
	// The in-flight page, plus what Kafka acknowledged since the last cursor save (persistInterval).
	if repeated > 2*maxInFlight {
		t.Fatalf("%d events repeated; want at most about the in-flight page (%d)", repeated, maxInFlight)
	}
}

// waitLine reads r until a line equal to want, failing the test after timeout.
func waitLine(t *testing.T, r io.Reader, want string, timeout time.Duration) {
	t.Helper()
	found := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			if sc.Text() == want {
				found <- true
				go func() { _, _ = io.Copy(io.Discard, r) }()
				return
			}
		}
		found <- false
	}()
	select {
	case ok := <-found:
		if !ok {
			t.Fatalf("child exited before printing %q", want)
		}
	case <-time.After(timeout):
		t.Fatalf("no %q within %s", want, timeout)
	}
}
