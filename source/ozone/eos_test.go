package ozone

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/atkafka/atkafka/sink"
	"github.com/atkafka/atkafka/sink/kafka"
	"github.com/atkafka/atkafka/testenv"
)

// TestExactlyOnceTakeover runs the source through the exactly-once producer (on kfake), then starts a second
// producer with the same transactional id mid-stream, as a replacement instance would: the first source stops
// with the fencing error, the second resumes from the cursor topic, and read_committed consumers see every
// event exactly once.
func TestExactlyOnceTakeover(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	addr := c.ListenAddrs()[0]
	newProducer := func() *kafka.TxnProducer {
		p, err := kafka.NewTxn(context.Background(), kafka.Config{Brokers: []string{addr}, Topic: "mod", CreateTopic: true,
			Partitions: 2, Logger: testLogger(t)}, kafka.TxnConfig{TransactionalID: "ozone", CursorTopic: "mod.cursors",
			CursorKey: "ozone:" + fakeLabeler})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = p.Close(context.Background()) })
		return p
	}

	e := newTestEnv(t)
	e.fake.add("2026-07-04T10:00:00.001Z", 150)
	e.fake.add("2026-07-04T10:00:00.002Z", 150)
	p1 := newProducer()
	cfg := e.config(p1)
	cfg.Cursor = p1.Cursor()
	s1 := e.source(cfg)
	done1 := make(chan error, 1)
	go func() { done1 <- s1.Run(context.Background()) }()
	waitFor(t, 10*time.Second, "a committed cursor", func() bool { _, ok, _ := p1.Cursor().Load(); return ok })

	p2 := newProducer() // fences p1
	e.fake.add("2026-07-04T10:00:00.003Z", 200)
	select {
	case err := <-done1:
		if !errors.Is(err, sink.ErrStopped) {
			t.Fatalf("fenced source: Run = %v, want sink.ErrStopped", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the fenced source did not stop")
	}
	from, _, _ := p2.Cursor().Load()
	t.Logf("the second instance resumes after %q", from)

	cfg = e.config(p2)
	cfg.Cursor = p2.Cursor()
	stop := run(t, e.source(cfg))
	waitFor(t, 20*time.Second, "the cursor at the last event", func() bool {
		v, _, _ := p2.Cursor().Load()
		return v == "2026-07-04T10:00:00.003Z 500"
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, r := range testenv.ReadAll(t, addr, "mod", 500, 20*time.Second, kgo.FetchIsolationLevel(kgo.ReadCommitted())) {
		count[string(r.Key)]++
	}
	dups := 0
	for _, n := range count {
		dups += n - 1
	}
	if len(count) != 500 || dups != 0 {
		t.Errorf("read_committed: %d distinct events of 500, %d duplicates", len(count), dups)
	}
}
