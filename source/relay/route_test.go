package relay

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/atkafka/atkafka/sink/kafka"
	"github.com/atkafka/atkafka/sink/route"
	"github.com/atkafka/atkafka/source/relay/relaytest"
	"github.com/atkafka/atkafka/testenv"
)

// routing is a set of --route flags and, written independently of sink/route, what they must do.
type routing struct {
	name string
	// routes are PATTERN=SUFFIX: the topic is the output topic, a dot and the suffix.
	routes   []string
	mainOnly bool // --route-account-events main
	// suffixOf is the topic suffix of an operation on collection, "" for the output topic.
	suffixOf func(collection string) string
}

// routings route the capture three ways: by exact collection, by prefix after an exact route (first match wins),
// and with account and identity events kept in the output topic only.
// oneTopic is no routing at all.
var oneTopic = routing{name: "one topic", suffixOf: func(string) string { return "" }}

var routings = []routing{
	{"exact", []string{"app.bsky.feed.post=posts", "app.bsky.feed.like=likes"}, false, func(c string) string {
		return map[string]string{"app.bsky.feed.post": "posts", "app.bsky.feed.like": "likes"}[c]
	}},
	{"first match wins", []string{"app.bsky.feed.like=likes", "app.bsky.*=bsky", "app.bsky.feed.post=never"}, false, func(c string) string {
		switch {
		case c == "app.bsky.feed.like":
			return "likes"
		case strings.HasPrefix(c, "app.bsky."):
			return "bsky"
		}
		return ""
	}},
	{"account events in the main topic", []string{"app.bsky.graph.*=graph"}, true, func(c string) string {
		if strings.HasPrefix(c, "app.bsky.graph.") {
			return "graph"
		}
		return ""
	}},
}

// flags are the routes for output topic main, as --route takes them.
func (r routing) flags(main string) []string {
	var out []string
	for _, s := range r.routes {
		pattern, suffix, _ := strings.Cut(s, "=")
		out = append(out, pattern+"="+main+"."+suffix)
	}
	return out
}

// config is the routing's route.Config for output topic main.
func (r routing) config(main string) route.Config {
	return routeConfig(main, r.flags(main), r.mainOnly)
}

// routeConfig reads routes (PATTERN=TOPIC) as the atkafka command does.
func routeConfig(main string, routes []string, mainOnly bool) route.Config {
	cfg := route.Config{Topic: main, AccountEventsMainOnly: mainOnly}
	for _, s := range routes {
		rt, _ := route.Parse(s) // what does not parse is an empty route, which route.New rejects
		cfg.Routes = append(cfg.Routes, rt)
	}
	return cfg
}

// expect splits the wanted ops by topic: each operation in its collection's topic, each account and identity
// event in every topic (the output topic only with mainOnly). Topics no op goes to are still listed, empty.
func (r routing) expect(main string, want map[opID]bool) map[string]map[opID]bool {
	byTopic := map[string]map[opID]bool{main: {}}
	for _, s := range r.flags(main) {
		_, topic, _ := strings.Cut(s, "=")
		byTopic[topic] = map[opID]bool{}
	}
	for id := range want {
		collection, _, isOp := strings.Cut(id.what, "/")
		switch {
		case isOp && r.suffixOf(collection) != "":
			byTopic[main+"."+r.suffixOf(collection)][id] = true
		case isOp || r.mainOnly:
			byTopic[main][id] = true
		default:
			for topic := range byTopic {
				byTopic[topic][id] = true
			}
		}
	}
	return byTopic
}

// checkTopics reads every topic of the routing and checks that it holds exactly its ops, none missing; it returns
// the duplicates per topic.
func (r routing) checkTopics(t *testing.T, k kafkaTopics, want map[opID]bool, read func(topic string, n int) []record) map[string]int {
	t.Helper()
	dups := map[string]int{}
	for topic, here := range r.expect(k.topic, want) {
		name := "main"
		if topic != k.topic {
			name = strings.TrimPrefix(topic, k.topic+".")
		}
		t.Run(name, func(t *testing.T) {
			if topic != k.topic && len(here) == 0 {
				t.Fatalf("the routing sends nothing to %s: the test routes nothing", topic)
			}
			dups[topic] = checkNoLoss(t, here, gotOps(t, read(topic, len(here))))
		})
	}
	return dups
}

// TestKafkaRoutes produces the capture routed three ways: every record is in exactly its expected topic(s), once,
// keyed by its DID, in each DID's seq order; the topics were created at start-up.
func TestKafkaRoutes(t *testing.T) {
	k := testenv.Kafka(t)
	frames := relaytest.CorpusFrames(t)
	for _, r := range routings {
		t.Run(r.name, func(t *testing.T) {
			srv := relaytest.NewServer(frames)
			defer srv.Close()
			topics := newTopics(t, k.Brokers)
			rc := r.config(topics.topic)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			p, err := kafka.New(ctx, kafka.Config{Brokers: []string{k.Brokers}, Topic: topics.topic,
				ExtraTopics: append([]string{topics.dead}, rc.Topics()...), CreateTopic: true, Partitions: 4, Logger: testLogger(t)})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = p.Close(context.Background()) })
			routed, err := route.New(p, rc)
			if err != nil {
				t.Fatal(err)
			}
			cfg := testConfig(t, srv.URL(), routed)
			cfg.DeadLetterTopic, cfg.StartCursor = topics.dead, "0"
			run := start(t, cfg)
			run.waitCommitted(t, srv.LastSeq(), 60*time.Second)
			if err := run.stop(t); err != nil {
				t.Fatal(err)
			}
			read := func(topic string, n int) []record {
				recs := topics.read(t, topic, n)
				checkKeysAndOrder(t, recs)
				return recs
			}
			for topic, n := range r.checkTopics(t, topics, wantOps(t, srv.Messages()), read) {
				if n != 0 {
					t.Errorf("%s: %d duplicates", topic, n)
				}
			}
		})
	}
}

// checkKeysAndOrder checks that records are keyed by their DID and that each DID's records come in seq order.
func checkKeysAndOrder(t testing.TB, recs []record) {
	t.Helper()
	last := map[string]int64{}
	for _, r := range recs {
		e := decodeEvent(t, r.Value)
		seq, _ := strconv.ParseInt(r.Header("seq"), 10, 64)
		if r.Key != e.DID || seq < last[e.DID] {
			t.Errorf("record %s key %q seq %d after seq %d", e.key(), r.Key, seq, last[e.DID])
		}
		last[e.DID] = seq
	}
}
