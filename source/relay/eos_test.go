package relay

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/atkafka/atkafka/sink"
	"github.com/atkafka/atkafka/sink/sinktest"
	"github.com/atkafka/atkafka/source/relay/relaytest"
	"github.com/atkafka/atkafka/testenv"
)

// TestKafkaExactlyOnceKill9 runs the real atkafka command with --exactly-once against Apache Kafka and kills it
// with SIGKILL several times mid-replay, restarting it each time: a read_committed consumer then sees every op
// of every seq exactly once, none missing and none twice, and the cursor topic holds the last seq. It runs with one
// topic, and routed to several, whose records then share each transaction.
func TestKafkaExactlyOnceKill9(t *testing.T) {
	k := testenv.Kafka(t)
	bin := buildAtkafka(t)
	for _, r := range []routing{oneTopic, routings[1]} {
		t.Run(r.name, func(t *testing.T) { testExactlyOnceKill9(t, k, bin, r) })
	}
}

func testExactlyOnceKill9(t *testing.T, k testenv.KafkaEnv, bin string, r routing) {
	srv := relaytest.NewServer(relaytest.CorpusFrames(t), relaytest.Loops(20), relaytest.Pace(1000))
	defer srv.Close()
	topics := newTopics(t, k.Brokers)
	cursorTopic := topics.topic + ".cursors"
	c := childConfig{Host: srv.URL(), Brokers: k.Brokers, Topic: topics.topic, Dead: topics.dead, DataDir: t.TempDir(), MaxInFlight: 256,
		Routes: r.flags(topics.topic), RouteAccountEventsMain: r.mainOnly}
	run := func() *exec.Cmd { return startCommand(t, atkafkaCommand(bin, c, "ATKAFKA_EXACTLY_ONCE=true")) }

	// Kill at a fifth, two fifths and three fifths of the stream, each time after the restarted instance has read
	// past the previous kill, so that every kill lands mid-stream with transactions open.
	const kills = 3
	var killedAt []string
	for i := range kills {
		conns := srv.Connections()
		cmd := run()
		threshold := int64(srv.Len()) * int64(i+1) / (kills + 2)
		for deadline := time.Now().Add(90 * time.Second); srv.Connections() == conns || srv.Sent() < threshold; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("run %d: %d frames sent, want %d", i+1, srv.Sent(), threshold)
			}
		}
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = cmd.Wait()
		killedAt = append(killedAt, lastCursor(t, k.Brokers, cursorTopic))
		t.Logf("kill -9 number %d after %d of %d frames sent; cursor topic at %s", i+1, srv.Sent(), srv.Len(), killedAt[i])
	}

	last := run()
	want := strconv.FormatInt(srv.LastSeq(), 10)
	for deadline := time.Now().Add(120 * time.Second); lastCursor(t, k.Brokers, cursorTopic) != want; time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the cursor topic holds %s, want the last seq %s", lastCursor(t, k.Brokers, cursorTopic), want)
		}
	}
	if err := last.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := last.Wait(); err != nil {
		t.Fatalf("graceful stop: %v", err)
	}
	cursors := srv.Cursors()
	t.Logf("connections resumed from cursors %q", cursors)
	if len(cursors) != kills+1 {
		t.Errorf("%d connections, want %d", len(cursors), kills+1)
	}
	for i, c := range killedAt {
		if i+1 < len(cursors) && cursors[i+1] != c {
			t.Errorf("restart %d resumed from %q, want the committed cursor %s", i+1, cursors[i+1], c)
		}
	}

	readCommitted := kgo.FetchIsolationLevel(kgo.ReadCommitted())
	var committed, uncommitted int
	dups := r.checkTopics(t, topics, wantOps(t, srv.Messages()), func(topic string, n int) []record {
		recs := topics.read(t, topic, n, readCommitted)
		committed += len(recs)
		// Without read_committed, the records of the transactions the kills cut short show up too: the kills did
		// land mid-transaction.
		uncommitted += len(topics.read(t, topic, len(recs)))
		return recs
	})
	t.Logf("read_committed after %d kill -9: %d records read, duplicates by topic %v; read_uncommitted sees %d more from aborted transactions",
		kills, committed, dups, uncommitted-committed)
	for topic, n := range dups {
		if n != 0 {
			t.Errorf("%s: %d duplicates with --exactly-once", topic, n)
		}
	}
	if got := lastCursor(t, k.Brokers, cursorTopic); got != want {
		t.Errorf("cursor topic holds %s, want %s", got, want)
	}
}

// lastCursor is the newest committed value of the cursor topic ("" when it holds none).
func lastCursor(t *testing.T, brokers, topic string) string {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var last string
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		fs := cl.PollFetches(ctx)
		cancel()
		recs := fs.Records()
		if len(recs) == 0 {
			return last
		}
		last = string(recs[len(recs)-1].Value)
	}
}

// TestStoppedSinkStopsWithoutDeadLetters: a sink that stopped for good (an exactly-once producer fenced by
// another instance) ends Run with its error, and no frame goes to the dead-letter topic for it.
func TestStoppedSinkStopsWithoutDeadLetters(t *testing.T) {
	srv := relaytest.NewServer(relaytest.CorpusFrames(t))
	defer srv.Close()
	fenced := fmt.Errorf("%w: fenced", sink.ErrStopped)
	var positions sync.Map
	s := &sinktest.Sink{Fail: func(msg *sink.Message) error {
		if _, dup := positions.LoadOrStore(msg.Position, true); dup {
			t.Errorf("position %d sent twice", msg.Position)
		}
		return fenced
	}}
	cfg := testConfig(t, srv.URL(), s)
	src, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- src.Run(context.Background()) }()
	select {
	case err := <-done:
		if !errors.Is(err, sink.ErrStopped) {
			t.Errorf("Run = %v, want the sink's ErrStopped", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not stop on a stopped sink")
	}
	if dl := s.Topic(cfg.DeadLetterTopic); len(dl) > 0 {
		t.Errorf("%d dead letters for a stopped sink", len(dl))
	}
}

// TestMessagesCarryPositionAndCursor: positions are contiguous from 0 in read order, and each message's cursor
// is its frame's seq (the watermark position).
func TestMessagesCarryPositionAndCursor(t *testing.T) {
	srv := relaytest.NewServer(relaytest.CorpusFrames(t))
	defer srv.Close()
	var mu sync.Mutex
	cursors := map[uint64]string{}
	s := &sinktest.Sink{Fail: func(msg *sink.Message) error {
		mu.Lock()
		cursors[msg.Position] = msg.Cursor
		mu.Unlock()
		return nil
	}}
	r := start(t, testConfig(t, srv.URL(), s))
	r.waitCommitted(t, srv.LastSeq(), 30*time.Second)
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	prev := int64(0)
	for pos := range uint64(len(cursors)) {
		c, ok := cursors[pos]
		if !ok {
			t.Fatalf("positions not contiguous: %d missing of %d", pos, len(cursors))
		}
		if c == "" {
			continue
		}
		seq, err := strconv.ParseInt(c, 10, 64)
		if err != nil || seq < prev {
			t.Fatalf("position %d: cursor %q after %d", pos, c, prev)
		}
		prev = seq
	}
	if prev != srv.LastSeq() {
		t.Errorf("last cursor %d, want %d", prev, srv.LastSeq())
	}
}
