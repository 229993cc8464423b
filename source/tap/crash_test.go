package tap

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/atkafka/atkafka/sink/kafka"
	"github.com/atkafka/atkafka/testenv"
	"github.com/atkafka/atkafka/transform/format"
)

// Environment of the crash helper process (TestCrashHelper).
const (
	helperEnv        = "ATKAFKA_TAP_CRASH_HELPER"
	helperTapEnv     = "ATKAFKA_TAP_CRASH_TAP"
	helperBrokersEnv = "ATKAFKA_TAP_CRASH_BROKERS"
	helperTopicEnv   = "ATKAFKA_TAP_CRASH_TOPIC"
	helperDLQEnv     = "ATKAFKA_TAP_CRASH_DLQ"
)

// applyWritesMax is how many writes the PDS takes in one com.atproto.repo.applyWrites call.
const applyWritesMax = 200

// createPosts writes n posts to acct's repo in applyWrites batches and records them in want as backfill.
func createPosts(t testing.TB, env *testenv.DevEnv, acct *testenv.Account, n int, want writes) {
	t.Helper()
	for start := 0; start < n; start += applyWritesMax {
		var ops []map[string]any
		var values []map[string]any
		for i := start; i < min(n, start+applyWritesMax); i++ {
			v := map[string]any{"$type": "app.bsky.feed.post", "text": fmt.Sprintf("post %d of %s", i, acct.Handle),
				"createdAt": time.Now().UTC().Format(format.TimeFormat)}
			values = append(values, v)
			ops = append(ops, map[string]any{"$type": "com.atproto.repo.applyWrites#create", "collection": "app.bsky.feed.post", "value": v})
		}
		var out struct {
			Results []struct{ URI, CID string }
		}
		err := env.XRPC(testenv.XRPCRequest{Service: acct.PDS, NSID: "com.atproto.repo.applyWrites", Procedure: true,
			Auth: acct.Bearer(), Input: map[string]any{"repo": acct.DID, "writes": ops}}, &out)
		if err != nil || len(out.Results) != len(values) {
			t.Fatalf("applyWrites: %d results for %d writes: %v", len(out.Results), len(values), err)
		}
		for i, r := range out.Results {
			want.create(r.URI, r.CID, values[i], false)
		}
	}
}

// endOffsets sums the end offsets of topic's partitions: how many records it holds.
func endOffsets(ctx context.Context, adm *kadm.Client, topic string) int64 {
	offsets, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return 0
	}
	var n int64
	offsets.Each(func(o kadm.ListedOffset) { n += o.Offset })
	return n
}

// TestCrashMidBackfill kills -9 a process running a Source in the middle of a backfill of several thousand
// records, starts another, and checks that Kafka holds every record and that Tap's outbox drains.
func TestCrashMidBackfill(t *testing.T) {
	t.Parallel() // each test has its own network: overlap their start-up
	e := startE2E(t, 2*time.Second, false)
	want := writes{}
	var dids []string
	for i := range 3 {
		acct := e.env.CreateAccount(e.env.PDS[0], fmt.Sprintf("bulk%d", i))
		createPosts(t, e.env, acct, 1000, want)
		dids = append(dids, acct.DID)
	}
	e.producer(t) // creates the topics before the helper needs them

	cl, err := kgo.NewClient(kgo.SeedBrokers(e.kafka.Brokers))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)

	helper, out := e.startHelper(t)
	e.tap.AddRepos(dids...)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	killAt := int64(len(want) / 5)
	for endOffsets(ctx, adm, e.topic) < killAt {
		if ctx.Err() != nil {
			t.Fatalf("Kafka holds fewer than %d records after 60s; helper output:\n%s", killAt, out)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := helper.Process.Kill(); err != nil { // SIGKILL: no flush, no acks
		t.Fatal(err)
	}
	_ = helper.Wait()
	atKill := endOffsets(ctx, adm, e.topic)
	t.Logf("killed the first process with %d of %d records in Kafka, Tap outbox at %d", atKill, len(want), e.tap.OutboxSize())
	if atKill >= int64(len(want)+len(dids)*2) {
		t.Errorf("the kill came after the whole backfill was in Kafka: the test proved nothing")
	}

	e.runSource(t, false)
	e.tap.WaitOutboxEmpty(90 * time.Second)
	recs := testenv.ReadAll(t, e.kafka.Brokers, e.topic, len(want), 30*time.Second)
	checkRecords(t, recs, want)
	t.Logf("Kafka holds %d records for %d writes (+%d identity/account): duplicates are Tap's redeliveries",
		len(recs), len(want), 2*len(dids))
}

// startHelper runs TestCrashHelper in a child process, a Source writing to the test's Kafka topics.
func (e *e2e) startHelper(t *testing.T) (*exec.Cmd, *logBuffer) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashHelper$", "-test.v")
	cmd.Env = append(os.Environ(), helperEnv+"=1", helperTapEnv+"="+e.tap.ChannelURL(), helperBrokersEnv+"="+e.kafka.Brokers,
		helperTopicEnv+"="+e.topic, helperDLQEnv+"="+e.dlq)
	out := &logBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("crash helper output:\n%s", out)
		}
	})
	return cmd, out
}

// TestCrashHelper is the process TestCrashMidBackfill kills; it does nothing in a normal test run.
func TestCrashHelper(t *testing.T) {
	if os.Getenv(helperEnv) == "" {
		t.Skip("the process TestCrashMidBackfill starts and kills")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute) // never outlive a parent that forgot us
	defer cancel()
	p, err := kafka.New(ctx, kafka.Config{Brokers: strings.Split(os.Getenv(helperBrokersEnv), ","),
		Topic: os.Getenv(helperTopicEnv), ExtraTopics: []string{os.Getenv(helperDLQEnv)}})
	if err != nil {
		t.Fatal(err)
	}
	src, err := New(Config{Host: os.Getenv(helperTapEnv), Sink: p, Pipeline: testPipeline(),
		DeadLetterTopic: os.Getenv(helperDLQEnv), Logger: testLogger(os.Stderr)})
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Run(ctx); err != nil {
		t.Fatal(err)
	}
}
