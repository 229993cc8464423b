package kafka

import (
	"context"
	"errors"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/atkafka/atkafka/sink"
	"github.com/atkafka/atkafka/testenv"
)

// newTxn starts a TxnProducer on a one-partition output topic, closed when the test ends.
func newTxn(t *testing.T, addr string, tc TxnConfig, cfg Config) *TxnProducer {
	t.Helper()
	cfg.Brokers, cfg.CreateTopic, cfg.Partitions = []string{addr}, true, 1
	if cfg.Topic == "" {
		cfg.Topic = "events"
	}
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	if tc.TransactionalID == "" {
		tc.TransactionalID = "test"
	}
	if tc.CursorTopic == "" {
		tc.CursorTopic = "cursors"
	}
	tc.CursorKey = "relay:test"
	p, err := NewTxn(context.Background(), cfg, tc)
	if err != nil {
		t.Fatalf("NewTxn: %v", err)
	}
	t.Cleanup(func() { _ = p.Close(context.Background()) })
	return p
}

// txnMessage is message pos with one record whose value is the position, and cursor "c<pos>".
func txnMessage(a *acks, pos int, values ...string) *sink.Message {
	if len(values) == 0 {
		values = []string{strconv.Itoa(pos)}
	}
	m := a.message(pos, "", values...)
	m.Position, m.Cursor = uint64(pos), "c"+strconv.Itoa(pos)
	return m
}

// committedValues reads the output topic ("events" unless given) with read_committed until it has n records.
func committedValues(t *testing.T, addr string, n int, topic ...string) []string {
	t.Helper()
	var out []string
	name := "events"
	if len(topic) > 0 {
		name = topic[0]
	}
	for _, r := range testenv.ReadAll(t, addr, name, n, 20*time.Second, kgo.FetchIsolationLevel(kgo.ReadCommitted())) {
		out = append(out, string(r.Value))
	}
	return out
}

// lateCommits starts a kfake cluster that answers every EndTxn after 300 ms, and returns its address.
func lateCommits(t *testing.T) string {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	c.ControlKey(int16(kmsg.EndTxn), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		time.Sleep(300 * time.Millisecond)
		return nil, nil, false
	})
	return c.ListenAddrs()[0]
}

func TestTxnProducesInPositionOrderAndAcksAfterCommit(t *testing.T) {
	// Every commit takes 300 ms to answer: no Done may run before its commit did.
	addr := lateCommits(t)
	obs := &counter{}
	p := newTxn(t, addr, TxnConfig{}, Config{Observer: obs})
	const n = 200
	a := newAcks()
	msgs := make([]*sink.Message, n)
	for i := range msgs {
		msgs[i] = txnMessage(a, i)
	}
	var mu sync.Mutex
	var doneAt []time.Time
	for _, m := range msgs {
		done := m.Done
		m.Done = func(err error) {
			mu.Lock()
			doneAt = append(doneAt, time.Now())
			mu.Unlock()
			done(err)
		}
	}
	// Out of order, from several goroutines, as DID-sharded workers send.
	order := rand.Perm(n)
	sentAt := time.Now()
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := w; i < n; i += 4 {
				send2(t, p, msgs[order[i]])
			}
		})
	}
	wg.Wait()
	if errs := a.wait(t, 20*time.Second); len(errs) > 0 {
		t.Fatalf("Done errors: %v", errs)
	}
	for _, at := range doneAt {
		if at.Sub(sentAt) < 300*time.Millisecond {
			t.Fatalf("Done ran %s after Send, before the commit was answered", at.Sub(sentAt))
		}
	}
	got := committedValues(t, addr, n)
	if len(got) != n {
		t.Fatalf("read %d records, want %d", len(got), n)
	}
	for i, v := range got {
		if v != strconv.Itoa(i) {
			t.Fatalf("record %d is %q: not in position order", i, v)
		}
	}
	if c := obs.transactions(txnCommitted); c < 1 {
		t.Errorf("%d transactions committed", c)
	}
	cur, ok, err := p.Cursor().Load()
	if err != nil || !ok || cur != "c"+strconv.Itoa(n-1) {
		t.Errorf("Cursor().Load = %q, %v, %v; want c%d", cur, ok, err, n-1)
	}
	// A new instance reads the same cursor.
	if err := p.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	p2 := newTxn(t, addr, TxnConfig{}, Config{})
	if cur, ok, err := p2.Cursor().Load(); err != nil || !ok || cur != "c"+strconv.Itoa(n-1) {
		t.Errorf("after restart, Cursor().Load = %q, %v, %v", cur, ok, err)
	}
}

func send2(t *testing.T, p interface {
	Send(context.Context, *sink.Message) error
}, m *sink.Message) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.Send(ctx, m); err != nil {
		t.Errorf("Send: %v", err)
	}
}

func TestTxnCursorEmpty(t *testing.T) {
	p := newTxn(t, fakeCluster(t), TxnConfig{}, Config{})
	if cur, ok, err := p.Cursor().Load(); err != nil || ok {
		t.Errorf("Cursor().Load on a fresh topic = %q, %v, %v", cur, ok, err)
	}
}

// TestTxnAbortAndRetry fails the first commit: the transaction is aborted and produced again, and
// read_committed consumers see every record once.
func TestTxnAbortAndRetry(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// The first commit fails as if the broker broke down answering it (the commit is not applied); handling a
	// request drops the control function, so only that one fails.
	c.ControlKey(int16(kmsg.EndTxn), func(req kmsg.Request) (kmsg.Response, error, bool) {
		r := req.(*kmsg.EndTxnRequest)
		if !r.Commit {
			return nil, nil, false
		}
		resp := r.ResponseKind().(*kmsg.EndTxnResponse)
		resp.ErrorCode = kerr.UnknownServerError.Code
		return resp, nil, true
	})
	addr := c.ListenAddrs()[0]
	obs := &counter{}
	p := newTxn(t, addr, TxnConfig{}, Config{Observer: obs})
	a := newAcks()
	for i := range 20 {
		send2(t, p, txnMessage(a, i))
	}
	if errs := a.wait(t, 20*time.Second); len(errs) > 0 {
		t.Fatalf("Done errors: %v", errs)
	}
	got := committedValues(t, addr, 20)
	if len(got) != 20 {
		t.Errorf("read_committed sees %d records, want 20 (each once): %v", len(got), got)
	}
	if d := obs.transactions(txnAborted); d < 1 {
		t.Errorf("%d transactions aborted, want an abort", d)
	}
	if cur, _, err := p.Cursor().Load(); err != nil || cur != "c19" {
		t.Errorf("Cursor().Load = %q, %v", cur, err)
	}
}

// TestTxnRecordRefused hands a message Kafka refuses back with Done(err); the later messages wait for it to be
// sent again, and everything ends up committed in position order.
func TestTxnRecordRefused(t *testing.T) {
	addr := fakeCluster(t)
	p := newTxn(t, addr, TxnConfig{}, Config{MaxBatchBytes: 1024})
	a := newAcks()
	big := txnMessage(a, 1, strings.Repeat("x", 4096))
	refused := make(chan error, 1)
	big.Done = func(err error) { refused <- err }
	a.all.Done() // big is not counted by a
	send2(t, p, txnMessage(a, 0))
	send2(t, p, big)
	send2(t, p, txnMessage(a, 2))
	select {
	case err := <-refused:
		if err == nil || !errors.Is(err, kerr.MessageTooLarge) {
			t.Fatalf("refused message: Done(%v), want MessageTooLarge", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the refused message got no Done")
	}
	// The source sends it again with the same position, as a dead letter would be.
	send2(t, p, txnMessage(a, 1, "dead letter 1"))
	if errs := a.wait(t, 20*time.Second); len(errs) > 0 {
		t.Fatalf("Done errors: %v", errs)
	}
	if got := committedValues(t, addr, 3); strings.Join(got, ",") != "0,dead letter 1,2" {
		t.Errorf("committed %q", got)
	}
}

// TestTxnFenced starts a second producer with the same transactional id: the first is fenced, which is fatal.
func TestTxnFenced(t *testing.T) {
	testTxnFenced(t, fakeCluster(t), "events", TxnConfig{})
}

// TestKafkaTxnFenced is TestTxnFenced against Apache Kafka, whose transaction protocol (KIP-890) kfake only
// imitates.
func TestKafkaTxnFenced(t *testing.T) {
	k := testenv.Kafka(t)
	topic := testenv.NewTopic(t)
	testTxnFenced(t, k.Brokers, topic, TxnConfig{TransactionalID: topic, CursorTopic: topic + ".cursors"})
}

func testTxnFenced(t *testing.T, addr, topic string, tc TxnConfig) {
	p1 := newTxn(t, addr, tc, Config{Topic: topic})
	a := newAcks()
	send2(t, p1, txnMessage(a, 0))
	if errs := a.wait(t, 10*time.Second); len(errs) > 0 {
		t.Fatalf("Done errors: %v", errs)
	}
	p2 := newTxn(t, addr, tc, Config{Topic: topic})
	if cur, _, err := p2.Cursor().Load(); err != nil || cur != "c0" {
		t.Fatalf("second instance Cursor().Load = %q, %v", cur, err)
	}

	b := newAcks()
	send2(t, p1, txnMessage(b, 1))
	errs := b.wait(t, 30*time.Second)
	if !errors.Is(errs[1], sink.ErrStopped) {
		t.Fatalf("fenced producer: Done(%v), want sink.ErrStopped", errs[1])
	}
	if err := p1.Send(context.Background(), txnMessage(newAcks(), 2)); !errors.Is(err, sink.ErrStopped) {
		t.Errorf("Send after fencing = %v, want sink.ErrStopped", err)
	}
	if err := p1.Close(context.Background()); !errors.Is(err, sink.ErrStopped) || !strings.Contains(err.Error(), "transactional id") {
		t.Errorf("Close = %v, want the fencing error", err)
	}
	// The new instance goes on from the cursor it loaded.
	c := newAcks()
	send2(t, p2, txnMessage(c, 0, "1 again"))
	if errs := c.wait(t, 10*time.Second); len(errs) > 0 {
		t.Fatalf("second instance: %v", errs)
	}
	if got := committedValues(t, addr, 2, topic); strings.Join(got, ",") != "0,1 again" {
		t.Errorf("committed %q", got)
	}
}

// TestTxnBackpressure blocks Send while the limits are reached, but always lets in the next position.
func TestTxnBackpressure(t *testing.T) {
	addr := fakeCluster(t)
	p := newTxn(t, addr, TxnConfig{}, Config{MaxInFlightRecords: 2})
	a := newAcks()
	// Positions 1 and 2 fill the limit; 3 must wait; 0 is let in although the limit is reached.
	send2(t, p, txnMessage(a, 1))
	send2(t, p, txnMessage(a, 2))
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := p.Send(ctx, txnMessage(newAcks(), 3)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Send over the limit = %v, want it to block", err)
	}
	send2(t, p, txnMessage(a, 0))
	send2(t, p, txnMessage(a, 3))
	if errs := a.wait(t, 10*time.Second); len(errs) > 0 {
		t.Fatal(errs)
	}
	if got := committedValues(t, addr, 4); strings.Join(got, ",") != "0,1,2,3" {
		t.Errorf("committed %q", got)
	}
}

// TestTxnSeveralTopics commits the records of one message to several topics in one transaction (--route), and
// counts them in flight under their own topics.
func TestTxnSeveralTopics(t *testing.T) {
	addr := fakeCluster(t)
	obs := &counter{}
	p := newTxn(t, addr, TxnConfig{}, Config{ExtraTopics: []string{"posts"}, Observer: obs})
	a := newAcks()
	m1 := txnMessage(a, 1, "main-1")
	m1.Records = append(m1.Records, sink.Record{Topic: "posts", Key: []byte("key-1"), Value: []byte("post-1")})
	send2(t, p, m1)
	// Position 0 is not there yet: message 1 waits, in flight, under both topics.
	for _, topic := range []string{"events", "posts"} {
		if got := obs.inFlight(topic); got != 1 {
			t.Errorf("%d records of %s in flight, want 1", got, topic)
		}
	}
	m0 := txnMessage(a, 0, "main-0")
	m0.Records[0].Topic = "events"
	send2(t, p, m0)
	if errs := a.wait(t, 10*time.Second); len(errs) > 0 {
		t.Fatal(errs)
	}
	if got := committedValues(t, addr, 2); strings.Join(got, ",") != "main-0,main-1" {
		t.Errorf("events holds %q", got)
	}
	if got := committedValues(t, addr, 1, "posts"); strings.Join(got, ",") != "post-1" {
		t.Errorf("posts holds %q", got)
	}
	for _, topic := range []string{"events", "posts"} {
		if got := obs.inFlight(topic); got != 0 {
			t.Errorf("%d records of %s in flight after the commit, want none", got, topic)
		}
	}
}
