package checkpoint

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/atkafka/atkafka/sink"
	"github.com/atkafka/atkafka/testenv"
)

// memStore is a cursor.Store in memory that records every save.
type memStore struct {
	mu    sync.Mutex
	saves []string
	fail  error
}

func (m *memStore) Load() (string, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.saves) == 0 {
		return "", false, nil
	}
	return m.saves[len(m.saves)-1], true, nil
}

func (m *memStore) Save(v string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return m.fail
	}
	m.saves = append(m.saves, v)
	return nil
}

func (*memStore) String() string { return "memory" }

func (m *memStore) last() string {
	v, _, _ := m.Load()
	return v
}

// recorder is a sink that keeps what it was sent, in order.
type recorder struct {
	mu   sync.Mutex
	msgs []*sink.Message
	err  error
}

func (r *recorder) Send(_ context.Context, m *sink.Message) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return r.err
	}
	r.msgs = append(r.msgs, m)
	return nil
}

func (r *recorder) sent() []*sink.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*sink.Message(nil), r.msgs...)
}

// committer is a recorder that stores the cursor itself.
type committer struct{ recorder }

func (*committer) CommitsCursor() {}

func intCursor(p int) (string, bool) { return strconv.Itoa(p), p > 0 }

func add(t *testing.T, c *Checkpoint[int], positions ...int) []*sink.Message {
	t.Helper()
	var msgs []*sink.Message
	for _, p := range positions {
		m := &sink.Message{}
		if err := c.Add(context.Background(), m, p); err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, m)
	}
	return msgs
}

func TestMarksAndSavesInOrder(t *testing.T) {
	st := &memStore{}
	c := New(Config[int]{Sink: &recorder{}, Store: st, Cursor: intCursor})
	c.Start()
	msgs := add(t, c, 0, 5, 6, 6, 9)
	for i, m := range msgs {
		if m.Position != uint64(i) {
			t.Errorf("message %d has Position %d", i, m.Position)
		}
	}
	if msgs[0].Cursor != "" || msgs[1].Cursor != "5" || msgs[4].Cursor != "9" {
		t.Errorf("cursors %q %q %q, want none, 5, 9", msgs[0].Cursor, msgs[1].Cursor, msgs[4].Cursor)
	}
	c.Done(msgs[2])
	c.Done(msgs[0])
	if p, ok := c.Committed(); !ok || p != 0 {
		t.Fatalf("committed %d %v, want 0: position 5 is pending", p, ok)
	}
	c.Done(msgs[1])
	c.Done(msgs[4]) // behind pending msgs[3]
	waitFor(t, func() bool { return st.last() == "6" })
	c.Done(msgs[3])
	if n := c.Drain(context.Background()); n != 0 {
		t.Errorf("Drain left %d", n)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if st.last() != "9" {
		t.Errorf("saved %v, want 9 last", st.saves)
	}
}

func TestSavesOnClose(t *testing.T) {
	st := &memStore{}
	c := New(Config[int]{Sink: &recorder{}, Store: st, Cursor: intCursor, SaveEvery: time.Hour})
	c.Start()
	c.Done(add(t, c, 42)[0])
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if st.last() != "42" {
		t.Errorf("saved %v, want 42 at Close", st.saves)
	}
}

func TestResumeIsSavedUntilTheFirstCommit(t *testing.T) {
	st := &memStore{}
	c := New(Config[int]{Sink: &recorder{}, Store: st, Cursor: intCursor, SaveEvery: time.Hour})
	c.Resume(7)
	c.Start()
	add(t, c, 8) // not delivered
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if st.last() != "7" {
		t.Errorf("saved %v, want the resume position 7", st.saves)
	}
}

func TestDrainSkipsAbandonedAndTimesOut(t *testing.T) {
	st := &memStore{}
	c := New(Config[int]{Sink: &recorder{}, Store: st, Cursor: intCursor})
	c.Start()
	msgs := add(t, c, 1, 2, 3)
	c.Abandon(msgs[0])
	c.Done(msgs[1])
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if n := c.Drain(ctx); n != 1 {
		t.Errorf("Drain left %d, want 1 (msgs[2])", n)
	}
	c.Done(msgs[2])
	if n := c.Drain(context.Background()); n != 0 {
		t.Errorf("Drain left %d after the last Done", n)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if len(st.saves) != 0 {
		t.Errorf("saved %v past an abandoned position", st.saves)
	}
}

func TestWindowWaitsForSaves(t *testing.T) {
	st := &memStore{fail: errors.New("disk full")}
	c := New(Config[int]{Sink: &recorder{}, Store: st, Cursor: intCursor, Window: 2, Logger: testenv.Logger(t, slog.LevelInfo)})
	c.Start()
	defer c.Close()
	msgs := add(t, c, 1, 2)
	c.Done(msgs[0])
	c.Done(msgs[1])
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := c.Add(ctx, &sink.Message{}, 3); err == nil {
		t.Fatal("Add found room while no save covered the window")
	}
	st.mu.Lock()
	st.fail = nil
	st.mu.Unlock()
	if err := c.Add(context.Background(), &sink.Message{}, 3); err != nil { // room once the retried save covered it
		t.Fatal(err)
	}
	if st.last() != "2" {
		t.Errorf("saved %v, want 2", st.saves)
	}
}

func TestCommitterGetsPositionOrderAndNoSave(t *testing.T) {
	st := &memStore{}
	sk := &committer{}
	c := New(Config[int]{Sink: sk, Store: st, Cursor: intCursor})
	c.Start()
	msgs := add(t, c, 1, 2, 3, 4)
	ctx := context.Background()
	for _, i := range []int{2, 0, 3} {
		if err := c.Send(ctx, msgs[i]); err != nil {
			t.Fatal(err)
		}
	}
	if got := sk.sent(); len(got) != 1 || got[0] != msgs[0] {
		t.Fatalf("sent %d messages before position 1 came, want only position 0", len(got))
	}
	if err := c.Send(ctx, msgs[1]); err != nil {
		t.Fatal(err)
	}
	got := sk.sent()
	for i, m := range got {
		if m.Position != uint64(i) {
			t.Fatalf("sent position %d at %d", m.Position, i)
		}
	}
	if len(got) != 4 {
		t.Fatalf("sent %d, want 4", len(got))
	}
	// A delivery that failed comes back with its Position: straight through.
	if err := c.Send(ctx, msgs[1]); err != nil || len(sk.sent()) != 5 {
		t.Fatalf("resend: %v, %d sent", err, len(sk.sent()))
	}
	for _, m := range msgs {
		c.Done(m)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if len(st.saves) != 0 {
		t.Errorf("saved %v: the committer stores the cursor", st.saves)
	}
}

func TestCommitterFailureAbandonsHeld(t *testing.T) {
	sk := &committer{}
	c := New(Config[int]{Sink: sk, Store: &memStore{}, Cursor: intCursor})
	c.Start()
	defer c.Close()
	msgs := add(t, c, 1, 2, 3)
	ctx := context.Background()
	if err := c.Send(ctx, msgs[2]); err != nil { // held
		t.Fatal(err)
	}
	stopped := errors.New("stopped")
	sk.mu.Lock()
	sk.err = stopped
	sk.mu.Unlock()
	if err := c.Send(ctx, msgs[0]); !errors.Is(err, stopped) {
		t.Fatalf("Send = %v, want the sink's error", err)
	}
	c.Abandon(msgs[0]) // as the source does with a refused message
	if err := c.Send(ctx, msgs[1]); !errors.Is(err, stopped) {
		t.Fatalf("Send after the failure = %v", err)
	}
	c.Abandon(msgs[1])
	// msgs[2] was held: the checkpoint abandoned it, so the drain does not wait for it.
	if n := c.Drain(ctx); n != 0 {
		t.Errorf("Drain left %d", n)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(time.Millisecond)
	}
}
