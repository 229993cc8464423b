package ozone

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/atkafka/atkafka/cursor"
	"github.com/atkafka/atkafka/schema/schematest"
	"github.com/atkafka/atkafka/sink"
	"github.com/atkafka/atkafka/sink/sinktest"
)

// keys returns the decimal ids 1..n.
func keys(from, to int64) []string {
	var out []string
	for i := from; i <= to; i++ {
		out = append(out, strconv.FormatInt(i, 10))
	}
	return out
}

func (e *testEnv) cursorLine() string {
	e.t.Helper()
	v, _, err := e.cursor.Load()
	if err != nil {
		e.t.Fatal(err)
	}
	return v
}

func TestPagesInOrderAndProducesViewsUnchanged(t *testing.T) {
	e := newTestEnv(t)
	base := time.Date(2026, 7, 4, 10, 0, 0, 0, time.UTC)
	for i := range 250 {
		e.fake.add(base.Add(time.Duration(i/3)*time.Millisecond).Format(isoMillis), 1) // three per millisecond
	}
	ms := &sinktest.Sink{}
	stop := run(t, e.source(e.config(ms)))
	// The empty page that ends the catch-up may be asked for after the last ack: wait for both before stopping.
	waitFor(t, 10*time.Second, "250 acks and the empty page", func() bool {
		_, _, q := e.fake.counts()
		return len(ackedKeys(ms)) == 250 && q >= 4
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	sent := ms.Messages()
	for i, m := range sent {
		rec := m.Records[0]
		want := e.fake.events[i].view()
		if string(rec.Key) != strconv.Itoa(i+1) || !bytes.Equal(rec.Value, want) {
			t.Fatalf("message %d: key %s value %s, want %d %s", i, rec.Key, rec.Value, i+1, want)
		}
		if rec.Topic != "" {
			t.Fatalf("topic %q, want the sink default", rec.Topic)
		}
	}
	h := sent[0].Records[0].Headers
	wantHeaders := []sink.Header{{Key: "ozone-event-id", Value: []byte("1")},
		{Key: "ozone-event-type", Value: []byte("tools.ozone.moderation.defs#modEventComment")},
		{Key: "created-at", Value: []byte("2026-07-04T10:00:00.000Z")}}
	if fmt.Sprint(h) != fmt.Sprint(wantHeaders) {
		t.Fatalf("headers %s, want %s", h, wantHeaders)
	}
	if got, want := e.cursorLine(), "2026-07-04T10:00:00.083Z 250"; got != want {
		t.Fatalf("cursor %q, want %q", got, want)
	}
	if _, _, q := e.fake.counts(); q < 4 {
		t.Fatalf("%d queries for 3 pages and an empty one", q)
	}
	if v := e.obs.lastCommitted(); v != 250 {
		t.Fatalf("committed up to %v, want 250", v)
	}
}

// Events sharing one millisecond, half acknowledged before a stop: the restart produces exactly the rest.
func TestSameMillisecondAcrossRestart(t *testing.T) {
	e := newTestEnv(t)
	e.fake.add("2026-07-04T10:00:00.000Z", 1)
	e.fake.add("2026-07-04T10:00:00.123Z", 6)
	e.fake.add("2026-07-04T10:00:00.124Z", 1)

	// First run: the sink acknowledges ids 1..4 only; 5..8 stay in flight when the process stops.
	held := sinktest.Holding()
	stop := run(t, e.source(e.config(held)))
	waitFor(t, 5*time.Second, "8 sends", func() bool { return len(held.Messages()) == 8 })
	for _, m := range held.Messages()[:4] {
		held.Ack(m)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if got, want := e.cursorLine(), "2026-07-04T10:00:00.123Z 4"; got != want {
		t.Fatalf("cursor %q, want %q", got, want)
	}

	ms := &sinktest.Sink{}
	stop = run(t, e.source(e.config(ms)))
	waitFor(t, 5*time.Second, "4 acks", func() bool { return len(ackedKeys(ms)) >= 4 })
	time.Sleep(100 * time.Millisecond) // several more polls: nothing else may arrive
	_ = stop()
	if got := ackedKeys(ms); !slices.Equal(got, keys(5, 8)) && !slices.Equal(sortedKeys(got), keys(5, 8)) {
		t.Fatalf("after restart got %v, want 5..8 once each", got)
	}
	if got, want := e.cursorLine(), "2026-07-04T10:00:00.124Z 8"; got != want {
		t.Fatalf("cursor %q, want %q", got, want)
	}
}

func sortedKeys(k []string) []string {
	out := slices.Clone(k)
	slices.SortFunc(out, func(a, b string) int { x, _ := strconv.Atoi(a); y, _ := strconv.Atoi(b); return x - y })
	return out
}

// The cursor moves only over a prefix of acknowledged events, whatever order Kafka acknowledges them in.
func TestCursorMovesOnlyAfterDone(t *testing.T) {
	e := newTestEnv(t)
	e.fake.add("2026-07-04T10:00:00.001Z", 1)
	e.fake.add("2026-07-04T10:00:00.002Z", 1)
	e.fake.add("2026-07-04T10:00:00.003Z", 1)
	held := sinktest.Holding()
	s := e.source(e.config(held))
	stop := run(t, s)
	waitFor(t, 5*time.Second, "3 sends", func() bool { return len(held.Messages()) == 3 })
	m := held.Messages()
	held.Ack(m[1])
	held.Ack(m[2])
	time.Sleep(300 * time.Millisecond)
	if line := e.cursorLine(); line != "" {
		t.Fatalf("cursor %q saved while event 1 is unacknowledged", line)
	}
	held.Ack(m[0])
	waitFor(t, 5*time.Second, "cursor after 3", func() bool { return e.cursorLine() == "2026-07-04T10:00:00.003Z 3" })
	_ = stop()
}

// A delivery that fails is retried; the cursor waits for it and nothing after it is lost or repeated.
func TestFailedDeliveryIsRetried(t *testing.T) {
	e := newTestEnv(t)
	e.fake.add("2026-07-04T10:00:00.001Z", 3)
	ms := &sinktest.Sink{}
	ms.Fail = failTimes("2", 2)
	stop := run(t, e.source(e.config(ms)))
	waitFor(t, 5*time.Second, "3 acks", func() bool { return len(ackedKeys(ms)) == 3 })
	_ = stop()
	if got := sortedKeys(ackedKeys(ms)); !slices.Equal(got, keys(1, 3)) {
		t.Fatalf("acked %v", got)
	}
	if got, want := e.cursorLine(), "2026-07-04T10:00:00.001Z 3"; got != want {
		t.Fatalf("cursor %q, want %q", got, want)
	}
}

// A cursor file of an earlier bridge (a bare timestamp) resumes at that millisecond, inclusive.
func TestLegacyTimestampCursor(t *testing.T) {
	e := newTestEnv(t)
	e.fake.add("2026-07-04T10:00:00.122Z", 1)
	e.fake.add("2026-07-04T10:00:00.123Z", 2)
	e.fake.add("2026-07-04T10:00:00.124Z", 1)
	if err := os.WriteFile(e.cursor.Path(), []byte("2026-07-04T12:00:00.123+02:00\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ms := &sinktest.Sink{}
	stop := run(t, e.source(e.config(ms)))
	waitFor(t, 5*time.Second, "3 acks", func() bool { return len(ackedKeys(ms)) >= 3 })
	time.Sleep(50 * time.Millisecond)
	_ = stop()
	if got := sortedKeys(ackedKeys(ms)); !slices.Equal(got, keys(2, 4)) {
		t.Fatalf("got %v, want 2..4", got)
	}
	if got, want := e.cursorLine(), "2026-07-04T10:00:00.124Z 4"; got != want {
		t.Fatalf("cursor %q, want %q", got, want)
	}
}

// The cursor file is bound to the Kafka cluster (cursor.ForCluster): the earlier version's file goes to the first
// real cluster, and a run against another one (the embedded broker, when a restart lost --bootstrap-servers)
// neither starts from nor moves the real cluster's cursor.
func TestCursorFilePerCluster(t *testing.T) {
	e := newTestEnv(t)
	e.fake.add("2026-07-04T10:00:00.001Z", 3)
	if err := os.WriteFile(e.cursor.Path(), []byte("2026-07-04T10:00:00.001Z 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	runWith := func(cl cursor.Cluster) []string {
		t.Helper()
		store, err := cursor.ForCluster(e.cursor.Path(), cl, "at Ozone's oldest event", testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		cfg := e.config(&sinktest.Sink{})
		cfg.Cursor = store
		ms := cfg.Sink.(*sinktest.Sink)
		stop := run(t, e.source(cfg))
		last := strconv.Itoa(len(e.fake.events))
		waitFor(t, 5*time.Second, "the last event acknowledged", func() bool { return slices.Contains(ackedKeys(ms), last) })
		if err := stop(); err != nil { // after the drain: every event sent was acknowledged
			t.Fatal(err)
		}
		return sortedKeys(ackedKeys(ms))
	}
	real := cursor.Cluster{ID: "real"}
	if got := runWith(real); !slices.Equal(got, keys(2, 3)) {
		t.Fatalf("first run against the real cluster, which adopts the old file: %v, want 2..3", got)
	}
	e.fake.add("2026-07-04T10:00:00.002Z", 2)
	if got := runWith(cursor.Cluster{ID: "atkafka-embedded-x", Embedded: true}); !slices.Equal(got, keys(1, 5)) {
		t.Fatalf("run against the embedded broker: %v, want 1..5 (no cursor of its own)", got)
	}
	if got := runWith(real); !slices.Equal(got, keys(4, 5)) {
		t.Fatalf("real cluster again: %v, want 4..5, which the embedded run must not have taken from it", got)
	}
}

func TestMalformedCursorFileFailsStartUp(t *testing.T) {
	e := newTestEnv(t)
	if err := os.WriteFile(e.cursor.Path(), []byte("yesterday\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := e.source(e.config(&sinktest.Sink{}))
	if err := s.Run(t.Context()); err == nil || !strings.Contains(err.Error(), e.cursor.Path()) {
		t.Fatalf("Run = %v, want an error naming the cursor file", err)
	}
}

// An access token the PDS reports expired is refreshed and the request repeated.
func TestExpiredTokenRefreshes(t *testing.T) {
	e := newTestEnv(t)
	e.fake.add("2026-07-04T10:00:00.001Z", 1)
	ms := &sinktest.Sink{}
	stop := run(t, e.source(e.config(ms)))
	waitFor(t, 5*time.Second, "first event", func() bool { return len(ackedKeys(ms)) == 1 })
	e.fake.expireTokens()
	e.fake.add("2026-07-04T10:00:00.002Z", 1)
	waitFor(t, 5*time.Second, "second event", func() bool { return len(ackedKeys(ms)) == 2 })
	_ = stop()
	logins, refreshes, _ := e.fake.counts()
	if logins != 1 || refreshes != 1 {
		t.Fatalf("logins %d refreshes %d, want 1 and 1", logins, refreshes)
	}
}

// When the refresh is refused too, the source logs in again.
func TestRefreshFailureLogsInAgain(t *testing.T) {
	e := newTestEnv(t)
	e.fake.add("2026-07-04T10:00:00.001Z", 1)
	ms := &sinktest.Sink{}
	stop := run(t, e.source(e.config(ms)))
	waitFor(t, 5*time.Second, "first event", func() bool { return len(ackedKeys(ms)) == 1 })
	before := e.obs.loginsOK()
	e.fake.mu.Lock()
	e.fake.failRefresh = true
	e.fake.mu.Unlock()
	e.fake.expireTokens()
	e.fake.add("2026-07-04T10:00:00.002Z", 1)
	waitFor(t, 5*time.Second, "second event", func() bool { return len(ackedKeys(ms)) == 2 })
	_ = stop()
	if logins, refreshes, _ := e.fake.counts(); logins != 2 || refreshes != 1 {
		t.Fatalf("logins %d refreshes %d, want 2 and 1", logins, refreshes)
	}
	if after := e.obs.loginsOK(); after != before+1 {
		t.Fatalf("logins that worked went from %d to %d, want one more", before, after)
	}
}

// A token is refreshed ahead of its exp, without waiting to be refused.
func TestRefreshBeforeExpiry(t *testing.T) {
	e := newTestEnv(t)
	e.fake.accessTTL = 2 * time.Second // renewed at exp - 0.5s
	e.fake.add("2026-07-04T10:00:00.001Z", 1)
	ms := &sinktest.Sink{}
	stop := run(t, e.source(e.config(ms)))
	waitFor(t, 10*time.Second, "a refresh", func() bool { _, r, _ := e.fake.counts(); return r >= 1 })
	_ = stop()
	e.fake.mu.Lock()
	defer e.fake.mu.Unlock()
	if e.fake.expiredAnswers != 0 {
		t.Fatalf("%d ExpiredToken answers; the token should have been refreshed before", e.fake.expiredAnswers)
	}
}

func TestRenewTime(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	cases := []struct {
		name string
		jwt  string
		want time.Time
	}{
		{"two hours", fakeJWT(1, now, now.Add(2*time.Hour)), now.Add(2*time.Hour - refreshMargin)},
		{"short-lived", fakeJWT(1, now, now.Add(40*time.Second)), now.Add(30 * time.Second)},
		{"not a JWT", "opaque", time.Time{}},
	}
	for _, c := range cases {
		if got := renewTime(c.jwt, now); !got.Equal(c.want) {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

func TestWrongPasswordFailsStartUpWithoutThePassword(t *testing.T) {
	e := newTestEnv(t)
	cfg := e.config(&sinktest.Sink{})
	cfg.Password = "wrong-" + fakePassword
	var logs logBuffer
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	err := e.source(cfg).Run(t.Context())
	if err == nil {
		t.Fatal("Run succeeded with a wrong password")
	}
	msg := err.Error()
	if !strings.Contains(msg, "Invalid identifier or password") || !strings.Contains(msg, fakeUser) {
		t.Fatalf("error %q should say the credentials were rejected and for whom", msg)
	}
	if strings.Contains(msg+logs.String(), fakePassword) {
		t.Fatalf("password leaked: %q / %q", msg, logs.String())
	}
	if logins, _, _ := e.fake.counts(); logins != 1 {
		t.Fatalf("%d login attempts; a rejected password must not be retried", logins)
	}
}

// A labeler that refuses the very first query (wrong --labeler-did, or an account that is not a moderator) is a
// configuration mistake: Run ends with an error saying what to check instead of retrying forever.
func TestWrongLabelerFailsStartUp(t *testing.T) {
	e := newTestEnv(t)
	e.fake.add("2026-07-04T10:00:00.001Z", 1)
	cfg := e.config(&sinktest.Sink{})
	cfg.LabelerDID = "did:plc:notthelabeler"
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	err := e.source(cfg).Run(ctx)
	if err == nil || ctx.Err() != nil {
		t.Fatalf("Run = %v (ctx %v), want a start-up error", err, ctx.Err())
	}
	if msg := err.Error(); !strings.Contains(msg, "--labeler-did") || !strings.Contains(msg, "did:plc:notthelabeler") {
		t.Fatalf("error %q should name the labeler and the flag to check", msg)
	}
}

// 5xx and 429 are retried with backoff, Retry-After respected, with one log line for the outage and one for the
// recovery.
func TestBackoffOn5xxAnd429(t *testing.T) {
	e := newTestEnv(t)
	e.fake.add("2026-07-04T10:00:00.001Z", 1)
	failures := 0
	var failedAt []time.Time
	e.fake.fail = func(w http.ResponseWriter) bool {
		failures++
		failedAt = append(failedAt, time.Now())
		switch {
		case failures <= 3:
			xrpcErr(w, http.StatusBadGateway, "UpstreamFailure", "ozone is down")
		case failures == 4:
			w.Header().Set("Retry-After", "1")
			xrpcErr(w, http.StatusTooManyRequests, "RateLimitExceeded", "slow down")
		default:
			return false
		}
		return true
	}
	var logs logBuffer
	cfg := e.config(&sinktest.Sink{})
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	ms := cfg.Sink.(*sinktest.Sink)
	stop := run(t, e.source(cfg))
	waitFor(t, 10*time.Second, "the event", func() bool { return len(ackedKeys(ms)) == 1 })
	recovered := time.Now()
	_ = stop()
	e.fake.mu.Lock()
	defer e.fake.mu.Unlock()
	if wait := recovered.Sub(failedAt[3]); wait < time.Second {
		t.Fatalf("retried %v after a 429 with Retry-After: 1", wait)
	}
	for i := 1; i < 3; i++ {
		if gap := failedAt[i].Sub(failedAt[i-1]); gap < 5*time.Millisecond {
			t.Fatalf("retry %d after %v: busy loop", i, gap)
		}
	}
	out := logs.String()
	if n := strings.Count(out, "queryEvents failing"); n != 1 {
		t.Fatalf("%d failure log lines, want 1:\n%s", n, out)
	}
	if n := strings.Count(out, "queryEvents recovered"); n != 1 {
		t.Fatalf("%d recovery log lines, want 1:\n%s", n, out)
	}
}

// The PDS being unreachable at start-up is waited out, not a start-up error.
func TestPDSDownAtStartUpIsRetried(t *testing.T) {
	e := newTestEnv(t)
	cfg := e.config(&sinktest.Sink{})
	cfg.PDSHost = "http://127.0.0.1:1"
	s := e.source(cfg)
	stop := run(t, s)
	time.Sleep(200 * time.Millisecond)
	if err := stop(); err != nil {
		t.Fatalf("Run = %v after cancel, want nil", err)
	}
}

// Events without an id are skipped and counted, or dead-lettered when a topic is configured; an event with an
// unreadable createdAt is produced but does not move the cursor past itself.
func TestMalformedEvents(t *testing.T) {
	for _, dlt := range []string{"", "ozone-dlq"} {
		t.Run("dlt="+dlt, func(t *testing.T) {
			e := newTestEnv(t)
			e.fake.add("2026-07-04T10:00:00.001Z", 1)
			e.fake.addRaw("2026-07-04T10:00:00.002Z", `"a string"`)
			e.fake.addRaw("2026-07-04T10:00:00.003Z", `{"createdAt":"2026-07-04T10:00:00.003Z"}`)
			e.fake.addRaw("2026-07-04T10:00:00.004Z", `{"id":4,"createdAt":"soon","event":{}}`)
			ms := &sinktest.Sink{}
			cfg := e.config(ms)
			cfg.DeadLetterTopic = dlt
			stop := run(t, e.source(cfg))
			want := 2
			if dlt != "" {
				want = 4
			}
			waitFor(t, 5*time.Second, "acks", func() bool { return len(ackedKeys(ms)) == want })
			time.Sleep(50 * time.Millisecond)
			_ = stop()
			if got := len(ms.Messages()); got != want {
				t.Fatalf("%d messages, want %d", got, want)
			}
			if n := e.obs.decodeErrorsOf("missing_id"); n != 1 {
				t.Fatalf("%d decode errors missing_id, want 1", n)
			}
			if got, want := e.cursorLine(), "2026-07-04T10:00:00.001Z 1"; got != want {
				t.Fatalf("cursor %q, want %q", got, want)
			}
			for _, m := range ms.Messages() {
				if r := m.Records[0]; dlt != "" && string(r.Key) == "<unknown>" {
					if r.Topic != dlt {
						t.Fatalf("dead letter on topic %q", r.Topic)
					}
					schematest.Check(t, schematest.DeadLetter, r.Value)
				}
			}
		})
	}
}

// Events newer than the settle delay are not read yet: Ozone may still commit older-stamped ones.
func TestSettleDelay(t *testing.T) {
	e := newTestEnv(t)
	e.fake.add(time.Now().UTC().Format(isoMillis), 1)
	ms := &sinktest.Sink{}
	cfg := e.config(ms)
	cfg.SettleDelay = 300 * time.Millisecond
	began := time.Now()
	stop := run(t, e.source(cfg))
	waitFor(t, 5*time.Second, "the event", func() bool { return len(ackedKeys(ms)) == 1 })
	if d := time.Since(began); d < 250*time.Millisecond {
		t.Fatalf("event read %v after creation, before the settle delay", d)
	}
	_ = stop()
}

// The in-flight window is bounded: with nothing acknowledged, reading stops a few pages ahead.
func TestInFlightBounded(t *testing.T) {
	e := newTestEnv(t)
	e.fake.add("2026-07-04T10:00:00.001Z", 1000)
	held := sinktest.Holding()
	stop := run(t, e.source(e.config(held)))
	waitFor(t, 5*time.Second, "a full window", func() bool { return len(held.Messages()) == maxInFlight })
	time.Sleep(100 * time.Millisecond)
	if n := len(held.Messages()); n != maxInFlight {
		t.Fatalf("%d messages in flight, want at most %d", n, maxInFlight)
	}
	for _, m := range held.Messages()[:10] {
		held.Ack(m)
	}
	waitFor(t, 5*time.Second, "the window to move", func() bool { return len(held.Messages()) == maxInFlight+10 })
	_ = stop()
}

func TestParsePosition(t *testing.T) {
	cases := []struct {
		in, want, ozone string
		legacy, bad     bool
	}{
		{in: "2026-07-04T10:00:00.123Z 42", want: "2026-07-04T10:00:00.123Z 42", ozone: "1783159200123::42"},
		{in: "2026-07-04T10:00:00.1239Z", want: "2026-07-04T10:00:00.123Z 0", ozone: "1783159200123::0", legacy: true},
		{in: "2026-07-04T10:00:00Z", want: "2026-07-04T10:00:00.000Z 0", ozone: "1783159200000::0", legacy: true},
		{in: "2026-07-04T10:00:00Z x", bad: true},
		{in: "1783159200123::42", bad: true},
	}
	for _, c := range cases {
		p, legacy, err := parsePosition(c.in)
		if c.bad {
			if err == nil {
				t.Errorf("%q: no error", c.in)
			}
			continue
		}
		if err != nil || p.String() != c.want || p.ozoneCursor() != c.ozone || legacy != c.legacy {
			t.Errorf("%q: %v %q %q legacy=%v err=%v", c.in, p, p.String(), p.ozoneCursor(), legacy, err)
		}
	}
}

func TestNewValidates(t *testing.T) {
	e := newTestEnv(t)
	good := e.config(&sinktest.Sink{})
	for name, mutate := range map[string]func(*Config){
		"no password": func(c *Config) { c.Password = "" },
		"bad host":    func(c *Config) { c.PDSHost = "pds.example.com" },
		"bad did":     func(c *Config) { c.LabelerDID = "labeler.example.com" },
		"no sink":     func(c *Config) { c.Sink = nil },
	} {
		cfg := good
		mutate(&cfg)
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: New accepted it", name)
		} else if strings.Contains(err.Error(), fakePassword) {
			t.Errorf("%s: password in %q", name, err)
		}
	}
}

func TestActionName(t *testing.T) {
	for in, want := range map[string]string{
		"tools.ozone.moderation.defs#modEventTakedown": "ozone:modEventTakedown",
		"": "ozone:unknown",
	} {
		if got := actionName(in); got != want {
			t.Errorf("%q: %q", in, got)
		}
	}
	var v json.RawMessage = []byte(`{"$type":"x#y"}`)
	if eventType(v) != "x#y" {
		t.Error("eventType")
	}
}
