package relay

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/atkafka/atkafka/cursor"
	"github.com/atkafka/atkafka/sink"
	"github.com/atkafka/atkafka/sink/kafka"
	"github.com/atkafka/atkafka/sink/route"
	"github.com/atkafka/atkafka/source/relay/relaytest"
	"github.com/atkafka/atkafka/testenv"
)

// childEnv carries the configuration of a source run in a child process (see TestMain).
const childEnv = "ATKAFKA_RELAY_TEST_CHILD"

type childConfig struct {
	Host, Brokers, Topic, Dead, DataDir string
	MaxInFlight                         int
	// Routes and RouteAccountEventsMain are --route and --route-account-events main.
	Routes                 []string
	RouteAccountEventsMain bool
}

func TestMain(m *testing.M) {
	if v := os.Getenv(childEnv); v != "" {
		os.Exit(runChild(v))
	}
	os.Exit(m.Run())
}

// runChild runs a relay source into Kafka until SIGTERM (graceful) or SIGKILL (the crash under test).
func runChild(config string) int {
	var c childConfig
	if err := json.Unmarshal([]byte(config), &c); err != nil {
		panic(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	rc := routeConfig(c.Topic, c.Routes, c.RouteAccountEventsMain)
	p, err := kafka.New(ctx, kafka.Config{Brokers: []string{c.Brokers}, Topic: c.Topic, ExtraTopics: append([]string{c.Dead}, rc.Topics()...),
		CreateTopic: true, Partitions: 4})
	if err != nil {
		panic(err)
	}
	defer p.Close(context.Background())
	var out sink.Sink = p
	if len(rc.Routes) > 0 {
		if out, err = route.New(p, rc); err != nil {
			panic(err)
		}
	}
	src, err := New(Config{Host: c.Host, DataDir: c.DataDir, Sink: out, Pipeline: standardPipeline(), DeadLetterTopic: c.Dead, MaxInFlight: c.MaxInFlight})
	if err != nil {
		panic(err)
	}
	if err := src.Run(ctx); err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		return 1
	}
	return 0
}

// startChild runs the source in a child process of the test binary.
func startChild(t *testing.T, c childConfig) *exec.Cmd {
	t.Helper()
	b, _ := json.Marshal(c)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+string(b))
	return startCommand(t, cmd)
}

// startCommand starts cmd with its output in the test log, and kills it when the test ends.
func startCommand(t *testing.T, cmd *exec.Cmd) *exec.Cmd {
	t.Helper()
	cmd.Stdout, cmd.Stderr = testenv.LogWriter(t), testenv.LogWriter(t)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return cmd
}

// savedCursor polls the cursor file until it holds at least seq.
func savedCursor(t *testing.T, f cursor.Store, seq int64, timeout time.Duration) int64 {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		v, ok, err := f.Load()
		if err != nil {
			t.Fatal(err)
		}
		if n, _ := strconv.ParseInt(v, 10, 64); ok && n >= seq {
			return n
		}
		if time.Now().After(deadline) {
			t.Fatalf("cursor file holds %q, want at least %d within %s", v, seq, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestKafkaKill9 kills a source mid-replay with SIGKILL and restarts it: no op of any seq is missing, and the
// only repeats are of frames after the cursor saved before the kill, that is, of what was in flight. It runs the
// source both in a child of the test binary and as the real atkafka command, which also routes by collection.
func TestKafkaKill9(t *testing.T) {
	k := testenv.Kafka(t)
	t.Run("source", func(t *testing.T) { testKill9(t, k, oneTopic, startChild, false) })
	bin := buildAtkafka(t)
	startAtkafka := func(t *testing.T, c childConfig) *exec.Cmd { return startCommand(t, atkafkaCommand(bin, c)) }
	t.Run("atkafka", func(t *testing.T) { testKill9(t, k, oneTopic, startAtkafka, true) })
	t.Run("atkafka routed", func(t *testing.T) { testKill9(t, k, routings[0], startAtkafka, true) })
}

// buildAtkafka builds the atkafka command into the test's temporary folder.
func buildAtkafka(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "atkafka")
	build := exec.Command("go", "build", "-o", bin, "./cmd/atkafka")
	build.Dir = testenv.RepoRoot()
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/atkafka: %v\n%s", err, out)
	}
	return bin
}

// atkafkaCommand is the atkafka command bin running c, plus the extra environment. It is configured through the
// environment rather than flags: that does not depend on which command level declares a flag.
func atkafkaCommand(bin string, c childConfig, extra ...string) *exec.Cmd {
	cmd := exec.Command(bin, "firehose", "relay")
	cmd.Env = append(os.Environ(), "ATKAFKA_BOOTSTRAP_SERVERS="+c.Brokers, "ATKAFKA_OUTPUT_TOPIC="+c.Topic,
		"ATKAFKA_DEAD_LETTER_TOPIC="+c.Dead, "ATKAFKA_DATA_DIR="+c.DataDir, "ATKAFKA_METRICS_LISTEN_ADDRESS=127.0.0.1:0",
		"ATKAFKA_ENRICH=false", "ATKAFKA_TOPIC_PARTITIONS=4", "ATKAFKA_RELAY_HOST="+c.Host,
		"ATKAFKA_MAX_INFLIGHT_FRAMES="+strconv.Itoa(c.MaxInFlight))
	if len(c.Routes) > 0 {
		cmd.Env = append(cmd.Env, "ATKAFKA_ROUTES="+strings.Join(c.Routes, ","))
	}
	if c.RouteAccountEventsMain {
		cmd.Env = append(cmd.Env, "ATKAFKA_ROUTE_ACCOUNT_EVENTS=main")
	}
	cmd.Env = append(cmd.Env, extra...)
	return cmd
}

// testKill9 runs the kill -9 scenario, routed as r, with children that startChild starts. perCluster says that
// they keep the cursor file of each Kafka cluster apart, as atkafka does (cursor.ForCluster).
func testKill9(t *testing.T, k testenv.KafkaEnv, r routing, startChild func(*testing.T, childConfig) *exec.Cmd, perCluster bool) {
	srv := relaytest.NewServer(relaytest.CorpusFrames(t), relaytest.Loops(20), relaytest.Pace(1000))
	defer srv.Close()
	topics := newTopics(t, k.Brokers)
	c := childConfig{Host: srv.URL(), Brokers: k.Brokers, Topic: topics.topic, Dead: topics.dead, DataDir: t.TempDir(), MaxInFlight: 256,
		Routes: r.flags(topics.topic), RouteAccountEventsMain: r.mainOnly}
	u, _ := subscribeURL(c.Host)
	var file cursor.Store = cursor.NewFile(cursorPath(c.DataDir, u))
	if perCluster {
		cl := cursor.Cluster{ID: topics.producer(t).ClusterID()}
		var err error
		if file, err = cursor.ForCluster(cursorPath(c.DataDir, u), cl, "", slog.New(slog.DiscardHandler)); err != nil {
			t.Fatal(err)
		}
	}
	// Start from the beginning of the stream: a cursor just before it.
	if err := file.Save(strconv.FormatInt(srv.FirstSeq()-1, 10)); err != nil {
		t.Fatal(err)
	}

	first := startChild(t, c)
	savedCursor(t, file, srv.FirstSeq()+int64(srv.Len())/5, 60*time.Second)
	if srv.Sent() == int64(srv.Len()) {
		t.Log("the replay ended before the kill: the machine is slow; the restart is still checked")
	}
	if err := first.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = first.Wait()
	killedAt, _, _ := file.Load()
	t.Logf("killed with cursor %s saved, %d of %d frames sent", killedAt, srv.Sent(), srv.Len())

	second := startChild(t, c)
	// The cursor file may already be at the end; the second run must have connected before it is stopped.
	for deadline := time.Now().Add(60 * time.Second); srv.Connections() < 2; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the restarted source did not connect")
		}
	}
	savedCursor(t, file, srv.LastSeq(), 90*time.Second)
	if err := second.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := second.Wait(); err != nil {
		t.Fatalf("graceful stop: %v", err)
	}
	if cs := srv.Cursors(); len(cs) != 2 || cs[1] != killedAt {
		t.Errorf("connections asked for cursors %q, want the second to resume at %s", cs, killedAt)
	}

	saved := atoi(killedAt)
	dups := r.checkTopics(t, topics, wantOps(t, srv.Messages()), func(topic string, n int) []record {
		recs := topics.read(t, topic, n)
		for id, n := range gotOps(t, recs) {
			if n > 1 && id.seq <= saved {
				t.Errorf("%d %s produced %d times in %s, though at or before the cursor saved before the kill", id.seq, id.what, n, topic)
			}
		}
		return recs
	})
	t.Logf("duplicates by topic after kill -9 (in flight: frames after cursor %d): %v", saved, dups)
}

// TestKafkaBrokerOutage stops the broker mid-stream: reading stalls with a bounded number of frames in flight,
// and resumes when the broker is back, with nothing missing.
func TestKafkaBrokerOutage(t *testing.T) {
	k := testenv.PrivateKafka(t)
	srv := relaytest.NewServer(relaytest.CorpusFrames(t), relaytest.Loops(20), relaytest.Pace(500)) // long enough to outlast a slow stop-broker
	defer srv.Close()
	topics := newTopics(t, k.Brokers)
	cfg := testConfig(t, srv.URL(), topics.producer(t))
	cfg.DeadLetterTopic, cfg.StartCursor, cfg.MaxInFlight = topics.dead, "0", 64
	r := start(t, cfg)
	r.waitCommitted(t, srv.FirstSeq()+200, 60*time.Second)

	k.StopBroker(t)
	deadline := time.Now().Add(30 * time.Second)
	for !r.stalled.Load() {
		if time.Now().After(deadline) {
			t.Fatal("reader never stalled while the broker was down")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The memory bound: with every job out of the pool, nothing more is read until Kafka is back. A moment first,
	// for an acknowledgement already on its way to free a job.
	time.Sleep(200 * time.Millisecond)
	readsAt := r.reads.Load()
	time.Sleep(2 * time.Second)
	if n := r.reads.Load() - readsAt; n > 0 {
		t.Errorf("%d frames read during the outage: reading must stop while MaxInFlight (%d) frames are unacknowledged", n, cfg.MaxInFlight)
	}
	t.Logf("stalled after %d frames read, %d sent by the relay; %d in flight", readsAt, srv.Sent(), r.jobs.inFlight())
	k.StartBroker(t)

	r.waitCommitted(t, srv.LastSeq(), 120*time.Second)
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	want := wantOps(t, srv.Messages())
	dups := checkNoLoss(t, want, gotOps(t, topics.read(t, topics.topic, len(want))))
	t.Logf("%d duplicates across the outage", dups)
}
