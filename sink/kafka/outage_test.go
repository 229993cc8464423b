package kafka

import (
	"context"
	"errors"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/atkafka/atkafka/testenv"
)

// TestBrokerOutage stops and restarts a broker of its own, so that other packages' tests keep theirs. The subtests
// share it, in order: each leaves the broker as the next expects it, and the last leaves it stopped.
func TestBrokerOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a private Kafka broker")
	}
	k := testenv.PrivateKafka(t)
	t.Run("restart while producing", func(t *testing.T) { testRestartWhileProducing(t, k) })
	t.Run("backpressure while stopped", func(t *testing.T) { testBackpressure(t, k) })
	t.Run("close while stopped", func(t *testing.T) { testCloseWhileStopped(t, k) })
}

// testRestartWhileProducing checks that a clean broker restart loses nothing and, thanks to idempotence,
// duplicates nothing, while Send keeps being called throughout.
func testRestartWhileProducing(t *testing.T, k testenv.KafkaEnv) {
	const n = 3000
	topic := testenv.NewTopic(t)
	p := newProducer(t, Config{Brokers: []string{k.Brokers}, Topic: topic, Partitions: 3, MaxInFlightRecords: 200, Linger: 2 * time.Millisecond})
	a := newAcks()
	var acked atomic.Int64
	sendErr := make(chan error, 1)
	go func() {
		for i := range n {
			msg := a.message(i, "", strconv.Itoa(i))
			done := msg.Done
			msg.Done = func(err error) { acked.Add(1); done(err) }
			if err := p.Send(context.Background(), msg); err != nil {
				sendErr <- err
				return
			}
			if i%100 == 0 {
				time.Sleep(5 * time.Millisecond) // spread the stream over the restart
			}
		}
		sendErr <- nil
	}()
	waitFor(t, 30*time.Second, func() bool { return acked.Load() >= n/3 })
	k.RestartBroker(t)
	t.Logf("restarted the broker after %d of %d acks", acked.Load(), n)
	if err := <-sendErr; err != nil {
		t.Fatalf("Send: %v", err)
	}
	if errs := a.wait(t, 60*time.Second); len(errs) > 0 {
		t.Fatalf("%d messages failed, e.g. %v", len(errs), errs)
	}
	seen := map[string]int{}
	for _, r := range testenv.ReadAll(t, k.Brokers, topic, n, 30*time.Second) {
		seen[string(r.Value)]++
	}
	for i := range n {
		if c := seen[strconv.Itoa(i)]; c != 1 {
			t.Errorf("record %d present %d times", i, c)
		}
	}
}

// testBackpressure checks that Send blocks once the in-flight limit is reached while no broker answers, and
// resumes when it is back.
func testBackpressure(t *testing.T, k testenv.KafkaEnv) {
	const limit = 10
	topic := testenv.NewTopic(t)
	obs := &counter{}
	p := newProducer(t, Config{Brokers: []string{k.Brokers}, Topic: topic, MaxInFlightRecords: limit, Observer: obs})
	k.StopBroker(t)
	a := newAcks()
	for i := range limit {
		send(t, p, a.message(i, "", "queued"))
	}
	if got := obs.inFlight(topic); got != limit {
		t.Errorf("%d records in flight, want %d", got, limit)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := p.Send(ctx, a.message(limit, "", "over the limit")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Send over the limit = %v, want it to block until its context ends", err)
	}
	a.all.Done() // that message was refused, so its Done must never run

	sent := make(chan error, 1)
	go func() { sent <- p.Send(context.Background(), a.message(limit+1, "", "after the restart")) }()
	select {
	case err := <-sent:
		t.Fatalf("Send returned %v while the broker was down and the limit reached", err)
	case <-time.After(300 * time.Millisecond):
	}
	k.StartBroker(t)
	select {
	case err := <-sent:
		if err != nil {
			t.Fatalf("Send after the broker came back: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("Send still blocked a minute after the broker came back")
	}
	if errs := a.wait(t, 60*time.Second); len(errs) > 0 {
		t.Fatalf("Done errors: %v", errs)
	}
	if _, refused := a.calls[limit]; refused {
		t.Error("Done ran for the message whose Send failed")
	}
	testenv.ReadAll(t, k.Brokers, topic, limit+1, 30*time.Second)
}

// testCloseWhileStopped checks that Close gives up after the flush timeout and fails every undelivered message.
func testCloseWhileStopped(t *testing.T, k testenv.KafkaEnv) {
	p := newProducer(t, Config{Brokers: []string{k.Brokers}, Topic: testenv.NewTopic(t), FlushTimeout: time.Second})
	k.StopBroker(t)
	a := newAcks()
	for i := range 5 {
		send(t, p, a.message(i, "", "never delivered"))
	}
	start := time.Now()
	if err := p.Close(context.Background()); err == nil {
		t.Error("Close reported success with undelivered records")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Close took %s with a 1s flush timeout", d)
	}
	if errs := a.wait(t, time.Second); len(errs) != 5 {
		t.Errorf("%d of 5 undelivered messages got an error", len(errs))
	}
	if err := p.Send(context.Background(), a.message(5, "", "late")); !errors.Is(err, ErrClosed) {
		t.Errorf("Send after Close = %v, want ErrClosed", err)
	}
}

func waitFor(t *testing.T, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s", timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
