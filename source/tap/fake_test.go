package tap

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/atkafka/atkafka/testenv"
	"github.com/atkafka/atkafka/transform"
	"github.com/atkafka/atkafka/transform/format"
)

// fakeTap is an in-process Tap /channel endpoint: tests push events to the connected client and read its acks.
type fakeTap struct {
	srv      *httptest.Server
	conns    chan *fakeConn
	password string
}

// fakeConn is one client connection to a fakeTap.
type fakeConn struct {
	c    *websocket.Conn
	acks chan uint64
	done chan struct{} // closed when the client went away
}

func newFakeTap(t testing.TB, password string) *fakeTap {
	f := &fakeTap{conns: make(chan *fakeConn, 16), password: password}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeTap) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/channel" {
		http.NotFound(w, r)
		return
	}
	if user, pw, ok := r.BasicAuth(); f.password != "" && (!ok || user != "admin" || pw != f.password) {
		http.Error(w, "Unauthorized", http.StatusUnauthorized)
		return
	}
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	fc := &fakeConn{c: c, acks: make(chan uint64, 1<<20), done: make(chan struct{})}
	f.conns <- fc
	defer close(fc.done)
	for {
		_, data, err := c.Read(context.Background())
		if err != nil {
			return
		}
		var ack struct {
			Type string `json:"type"`
			ID   uint64 `json:"id"`
		}
		if json.Unmarshal(data, &ack) != nil || ack.Type != "ack" {
			panic(fmt.Sprintf("fake tap: unexpected message from client: %q", data))
		}
		fc.acks <- ack.ID
	}
}

func (f *fakeTap) host() string { return "ws" + f.srv.URL[len("http"):] }

// accept waits for the next client connection.
func (f *fakeTap) accept(t testing.TB) *fakeConn {
	t.Helper()
	select {
	case c := <-f.conns:
		return c
	case <-time.After(10 * time.Second):
		t.Fatal("no connection to the fake Tap within 10s")
		return nil
	}
}

func (c *fakeConn) send(t testing.TB, msg string) {
	t.Helper()
	if err := c.c.Write(context.Background(), websocket.MessageText, []byte(msg)); err != nil {
		t.Errorf("fake tap: write: %v", err)
	}
}

// waitAcks returns the next n acks, failing the test if they take longer than timeout.
func (c *fakeConn) waitAcks(t testing.TB, n int, timeout time.Duration) []uint64 {
	t.Helper()
	deadline := time.After(timeout)
	ids := make([]uint64, 0, n)
	for len(ids) < n {
		select {
		case id := <-c.acks:
			ids = append(ids, id)
		case <-deadline:
			t.Fatalf("got %d of %d acks within %s: %v", len(ids), n, timeout, ids)
		}
	}
	return ids
}

// noAck fails the test if an ack arrives within d.
func (c *fakeConn) noAck(t testing.TB, d time.Duration) {
	t.Helper()
	select {
	case id := <-c.acks:
		t.Fatalf("unexpected ack %d", id)
	case <-time.After(d):
	}
}

// recordJSON renders a Tap record event as Tap does.
func recordJSON(id uint64, live bool, did, collection, rkey, action, record string) string {
	var rec string
	if record != "" {
		rec = `,"record":` + record + `,"cid":"bafyreib2rxk3rybk3aobmv5cjuql3bm2twh4jo5uxgf5gpqbyzvtrrdvq4"`
	}
	return fmt.Sprintf(`{"id":%d,"type":"record","record":{"live":%t,"did":%q,"rev":"3lbmo6vhgvs2a","collection":%q,"rkey":%q,"action":%q%s}}`,
		id, live, did, collection, rkey, action, rec)
}

func identityJSON(id uint64, did, handle string, active bool, status string) string {
	return fmt.Sprintf(`{"id":%d,"type":"identity","identity":{"did":%q,"handle":%q,"is_active":%t,"status":%q}}`,
		id, did, handle, active, status)
}

func testPipeline() *transform.Pipeline {
	return &transform.Pipeline{Formatter: format.NewFormatter()}
}

// logBuffer is a concurrency-safe log sink for asserting on warnings.
type logBuffer = testenv.Buffer

func testLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// startSource runs a Source until the test ends. stop cancels Run and returns its result.
func startSource(t *testing.T, cfg Config) (src *Source, stop func() error) {
	t.Helper()
	if cfg.Pipeline == nil {
		cfg.Pipeline = testPipeline()
	}
	if cfg.DeadLetterTopic == "" {
		cfg.DeadLetterTopic = "dead-letter"
	}
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t.Output())
	}
	if cfg.Observer == nil {
		cfg.Observer = &tally{}
	}
	src, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx) }()
	stop = sync.OnceValue(func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(30 * time.Second):
			return errors.New("Run did not return within 30s of cancel")
		}
	})
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return src, stop
}

// tally is an Observer of the test's own, which startSource gives every Source: a test counts its own source's
// measurements (tallyOf) rather than deltas of process-wide metrics that other tests move too.
type tally struct{ testenv.Counts }

func (c *tally) Read(uint64)             {}
func (c *tally) Acked(uint64)            {}
func (c *tally) Lag(time.Duration)       {}
func (c *tally) Delivered(time.Duration) {}

// Its keys: "acks <status>", "decode <reason>", "dead_lettered <reason>", "reconnect <reason>".
func (c *tally) Acks(status string, n int)  { c.Add("acks "+status, n) }
func (c *tally) DecodeError(reason string)  { c.Add("decode "+reason, 1) }
func (c *tally) DeadLettered(reason string) { c.Add("dead_lettered "+reason, 1) }
func (c *tally) Reconnect(reason string)    { c.Add("reconnect "+reason, 1) }

// tallyOf returns the tally of a Source startSource started.
func tallyOf(src *Source) *tally { return src.obs.(*tally) }
