package tail

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"

	"github.com/atkafka/atkafka/testenv"
	"github.com/atkafka/atkafka/transform/format"
)

const topic = "events"

// fakeCluster is an in-process Kafka with the topic "events" (one partition, so order is the produce order).
func fakeCluster(t *testing.T, opts ...kfake.Opt) []string {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1), kfake.SeedTopics(1, topic)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs()
}

func produce(t *testing.T, brokers []string, topic string, recs []*kgo.Record, opts ...kgo.Opt) {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic(topic)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}
}

func values(vs ...string) []*kgo.Record {
	recs := make([]*kgo.Record, len(vs))
	for i, v := range vs {
		recs[i] = &kgo.Record{Key: []byte("k"), Value: []byte(v), Timestamp: recordTime}
	}
	return recs
}

// output is an io.Writer the test reads while Run writes to it.
type output struct{ testenv.Buffer }

func (o *output) lines() []string {
	return strings.Split(strings.TrimSuffix(o.String(), "\n"), "\n")
}

// waitFor waits until the output holds a line containing last, and returns every line printed.
func (o *output) waitFor(t *testing.T, last string) []string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		lines := o.lines()
		if slices.ContainsFunc(lines, func(l string) bool { return strings.Contains(l, last) }) {
			return lines
		}
		if time.Now().After(deadline) {
			t.Fatalf("no line with %q; output so far:\n%s", last, strings.Join(lines, "\n"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// start runs tail in the background until the test ends; Run must then return nil.
func start(t *testing.T, cfg Config) *output {
	t.Helper()
	out := &output{}
	cfg.Out = out
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return out
}

// sentinel is produced last: once it is printed, everything before it has been considered.
const sentinel = `{"did":"did:plc:sentinel","timestamp":"2024-01-01T12:00:00.000Z","operation":{"action":"create","collection":"app.bsky.feed.post","rkey":"last","record":{"text":"last"}}}`

func TestTailSummariesFromBeginning(t *testing.T) {
	brokers := fakeCluster(t)
	produce(t, brokers, topic, values(standard(post), osprey(t, handle), ozoneTakedown, `{"raw":"dead letter"}`, sentinel))

	lines := start(t, Config{Brokers: brokers, Topic: topic, FromBeginning: true}).waitFor(t, "did:plc:sentinel")
	want := []string{
		ts + ` create   did:plc:alice app.bsky.feed.post/3k2a "Hello world"`,
		ts + ` identity did:plc:alice handle=alice.test`,
		`2024-01-01T12:00:05.000Z ozone#takedown did:plc:alice app.bsky.feed.post/3k2a id=42 by=mod.test hours=24 "spam ring"`,
		`2024-01-01T12:00:09.000Z ?        partition=0 offset=3 key="k" value="{\"raw\":\"dead letter\"}"`,
		ts + ` create   did:plc:sentinel app.bsky.feed.post/last "last"`,
	}
	if !slices.Equal(lines, want) {
		t.Fatalf("got\n%s\nwant\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
}

func TestTailFilters(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		end  format.Event // matches the filter; produced last
		want []string     // what the lines before end contain, in order
	}{
		{"did", Config{DID: "did:plc:bob"}, endEvent("did:plc:bob", "app.bsky.feed.post"),
			[]string{"did:plc:bob app.bsky.feed.like/3k2b", "did:plc:bob app.bsky.graph.follow/3k2c", "did:plc:bob id=43"}},
		{"collection", Config{Collection: "app.bsky.feed.post"}, endEvent("did:plc:carol", "app.bsky.feed.post"),
			[]string{"did:plc:alice app.bsky.feed.post/3k2a"}},
		{"namespace", Config{Collection: "app.bsky.feed.*"}, endEvent("did:plc:carol", "app.bsky.feed.repost"),
			[]string{"app.bsky.feed.post/3k2a", "app.bsky.feed.like/3k2b"}},
		{"both", Config{Collection: "app.bsky.actor.profile", DID: "did:plc:alice"}, endEvent("did:plc:alice", "app.bsky.actor.profile"),
			[]string{"did:plc:alice app.bsky.actor.profile/self"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			brokers := fakeCluster(t)
			produce(t, brokers, topic, values(standard(post), standard(like), standard(follow), standard(handle),
				ozoneLabel, osprey(t, profile), `not json`, standard(tc.end)))
			cfg := tc.cfg
			cfg.Brokers, cfg.Topic, cfg.FromBeginning = brokers, topic, true
			lines := start(t, cfg).waitFor(t, "/end")
			lines = lines[:len(lines)-1]
			if len(lines) != len(tc.want) {
				t.Fatalf("got %d lines, want %d:\n%s", len(lines), len(tc.want), strings.Join(lines, "\n"))
			}
			for i, w := range tc.want {
				if !strings.Contains(lines[i], w) {
					t.Errorf("line %d = %s, want it to contain %q", i, lines[i], w)
				}
			}
		})
	}
}

func endEvent(did, collection string) format.Event {
	return format.Event{DID: did, Timestamp: ts, Operation: &format.Operation{Action: "delete", Collection: collection, Rkey: "end"}}
}

func TestTailJSONPrintsValuesAsTheyAre(t *testing.T) {
	brokers := fakeCluster(t)
	vs := []string{standard(post), osprey(t, takedown), ozoneLabel, `not json`, sentinel}
	produce(t, brokers, topic, values(vs...))
	lines := start(t, Config{Brokers: brokers, Topic: topic, FromBeginning: true, JSON: true}).waitFor(t, "did:plc:sentinel")
	if !slices.Equal(lines, vs) {
		t.Fatalf("got\n%s\nwant\n%s", strings.Join(lines, "\n"), strings.Join(vs, "\n"))
	}

	// With a filter, raw values are still raw, and values of unknown shape are left out.
	lines = start(t, Config{Brokers: brokers, Topic: topic, FromBeginning: true, JSON: true, DID: "did:plc:alice"}).
		waitFor(t, "takendown")
	if want := []string{vs[0], vs[1]}; !slices.Equal(lines, want) {
		t.Fatalf("got\n%s\nwant\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
}

func TestTailStartsAtNow(t *testing.T) {
	brokers := fakeCluster(t)
	old, recent := values(standard(post))[0], values(standard(handle))[0]
	// Timestamps decide where "now" starts, so the test needs no sleeps: one record before, one after.
	old.Timestamp, recent.Timestamp = time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	produce(t, brokers, topic, []*kgo.Record{old, recent})

	out := start(t, Config{Brokers: brokers, Topic: topic})
	produce(t, brokers, topic, values(sentinel))
	lines := out.waitFor(t, "did:plc:sentinel")
	if len(lines) != 2 || !strings.Contains(lines[0], "handle=alice.test") {
		t.Fatalf("got\n%s\nwant the recent identity event and the sentinel only", strings.Join(lines, "\n"))
	}
}

func TestTailWaitsForTopic(t *testing.T) {
	brokers := fakeCluster(t)
	out := start(t, Config{Brokers: brokers, Topic: "later", FromBeginning: true})

	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := kadm.NewClient(cl).CreateTopic(context.Background(), 1, 1, nil, "later"); err != nil {
		t.Fatal(err)
	}
	produce(t, brokers, "later", values(sentinel))
	out.waitFor(t, "did:plc:sentinel")
}

func TestTailUnreachableBroker(t *testing.T) {
	begin := time.Now()
	err := Run(context.Background(), Config{Brokers: []string{"127.0.0.1:1"}, Topic: topic, ConnectTimeout: 500 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "no answer from 127.0.0.1:1") {
		t.Fatalf("Run = %v", err)
	}
	if d := time.Since(begin); d > 5*time.Second {
		t.Fatalf("took %s", d)
	}
	if err := Run(context.Background(), Config{Topic: topic}); err == nil {
		t.Fatal("Run without brokers succeeded")
	}
}

// TestTailRealKafka reads from the real Apache Kafka broker, in plain text and through SASL and TLS as the CLI
// builds them (Config.Opts).
func TestTailRealKafka(t *testing.T) {
	k := testenv.Kafka(t)
	tp := testenv.NewTopic(t)
	brokers := strings.Split(k.Brokers, ",")
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := kadm.NewClient(cl).CreateTopic(context.Background(), 3, 1, nil, tp); err != nil {
		t.Fatal(err)
	}
	produce(t, brokers, tp, values(standard(post), ozoneLabel, sentinel))

	sasl := Config{Brokers: strings.Split(k.SASLBrokers, ","),
		Opts: []kgo.Opt{kgo.SASL(plain.Auth{User: k.SASLUser, Pass: k.SASLPassword}.AsMechanism())}}
	pem, err := os.ReadFile(k.TLSCAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	tlsCfg := Config{Brokers: strings.Split(k.TLSBrokers, ","), Opts: []kgo.Opt{kgo.DialTLSConfig(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})}}

	for name, cfg := range map[string]Config{"plaintext": {Brokers: brokers}, "sasl": sasl, "tls": tlsCfg} {
		t.Run(name, func(t *testing.T) {
			if len(cfg.Brokers) == 0 || cfg.Brokers[0] == "" {
				testenv.Unavailable(t, "the test broker has no %s listener", name)
			}
			cfg.Topic, cfg.FromBeginning = tp, true
			lines := start(t, cfg).waitFor(t, "did:plc:sentinel")
			// Three partitions: order across them is not defined, the set is.
			if len(lines) != 3 || !slices.ContainsFunc(lines, func(l string) bool { return strings.Contains(l, `"Hello world"`) }) ||
				!slices.ContainsFunc(lines, func(l string) bool { return strings.Contains(l, "ozone#label did:plc:bob") }) {
				t.Fatalf("got\n%s", strings.Join(lines, "\n"))
			}
		})
	}
}
