package route

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/atkafka/atkafka/sink"
)

// capture keeps the last message it was sent.
type capture struct{ msg *sink.Message }

func (c *capture) Send(_ context.Context, msg *sink.Message) error { c.msg = msg; return nil }

func op(did, collection string) sink.Record {
	return sink.Record{Key: []byte(did), Value: []byte(collection),
		Headers: []sink.Header{{Key: "seq", Value: []byte("1")}, {Key: "collection", Value: []byte(collection)}}}
}

func event(key, kind string) sink.Record {
	return sink.Record{Key: []byte(key), Value: []byte(kind), Headers: []sink.Header{{Key: "seq", Value: []byte("1")}}}
}

// topicsOf lists "value→topic" for each record, in order.
func topicsOf(msg *sink.Message) []string {
	var out []string
	for _, r := range msg.Records {
		out = append(out, string(r.Value)+"→"+r.Topic)
	}
	return out
}

func TestRouting(t *testing.T) {
	routes := []Route{{Pattern: "app.bsky.feed.post", Topic: "posts"}, {Pattern: "app.bsky.feed.*", Topic: "feed"},
		{Pattern: "app.bsky.feed.like", Topic: "never"}, {Pattern: "chat.bsky.*", Topic: "posts"}}
	in := []sink.Record{
		op("did:plc:a", "app.bsky.feed.post"), op("did:plc:a", "app.bsky.feed.like"), op("did:plc:a", "app.bsky.graph.follow"),
		op("did:plc:a", "chat.bsky.convo"), event("did:plc:a", "account"), event("<unknown>", "info"),
		{Topic: "dead", Key: []byte("did:plc:a"), Value: []byte("dead letter")},
		{Topic: "main", Key: []byte("did:plc:b"), Value: []byte("identity")},
		// Tap's record events carry did, rev, collection, rkey and live headers; its identity events a did header.
		{Key: []byte("did:plc:c"), Value: []byte("tap like"), Headers: []sink.Header{{Key: "did", Value: []byte("did:plc:c")},
			{Key: "rev", Value: []byte("3r")}, {Key: "collection", Value: []byte("app.bsky.feed.like")}}},
		{Key: []byte("did:plc:c"), Value: []byte("tap identity"), Headers: []sink.Header{{Key: "did", Value: []byte("did:plc:c")}}},
	}
	for _, c := range []struct {
		mainOnly bool
		want     []string
	}{
		{false, []string{"app.bsky.feed.post→posts", "app.bsky.feed.like→feed", "app.bsky.graph.follow→main",
			"chat.bsky.convo→posts", "account→main", "account→posts", "account→feed", "account→never", "info→main",
			"dead letter→dead", "identity→main", "identity→posts", "identity→feed", "identity→never",
			"tap like→feed", "tap identity→main", "tap identity→posts", "tap identity→feed", "tap identity→never"}},
		{true, []string{"app.bsky.feed.post→posts", "app.bsky.feed.like→feed", "app.bsky.graph.follow→main",
			"chat.bsky.convo→posts", "account→main", "info→main", "dead letter→dead", "identity→main",
			"tap like→feed", "tap identity→main"}},
	} {
		var next capture
		s, err := New(&next, Config{Routes: routes, Topic: "main", AccountEventsMainOnly: c.mainOnly})
		if err != nil {
			t.Fatal(err)
		}
		done := 0
		msg := &sink.Message{Records: slices.Clone(in), Done: func(error) { done++ }, Mark: sink.Mark{Position: 7, Cursor: "42"}}
		if err := s.Send(context.Background(), msg); err != nil {
			t.Fatal(err)
		}
		if got := topicsOf(next.msg); !slices.Equal(got, c.want) {
			t.Errorf("main only %v:\n got %q\nwant %q", c.mainOnly, got, c.want)
		}
		next.msg.Done(nil)
		if done != 1 || next.msg.Position != 7 || next.msg.Cursor != "42" {
			t.Errorf("Done ran %d times, position %d, cursor %q", done, next.msg.Position, next.msg.Cursor)
		}
		if !slices.EqualFunc(msg.Records, in, func(a, b sink.Record) bool { return a.Topic == b.Topic }) {
			t.Error("the source's message was modified")
		}
	}
}

func TestConfig(t *testing.T) {
	cfg := Config{Topic: "main", Routes: []Route{{"app.bsky.feed.post", "posts"}, {"app.bsky.*", "main"}, {"chat.*", "posts"}}}
	if got := cfg.Topics(); !slices.Equal(got, []string{"posts"}) {
		t.Errorf("Topics = %q", got)
	}
	bad := Config{Topic: "main", Routes: []Route{{"app.*.post", "x"}, {"app.bsky.feed.post", ""}}}
	err := bad.Validate()
	if err == nil || !strings.Contains(err.Error(), `--route 1 "app.*.post=x"`) || !strings.Contains(err.Error(), "--route 2") {
		t.Errorf("Validate = %v", err)
	}
	if _, err := Parse("app.bsky.feed.post"); err == nil {
		t.Error("a route without a topic parsed")
	}
	if r, err := Parse("app.bsky.*=bsky=x"); err != nil || r.Topic != "bsky=x" {
		t.Errorf("Parse = %+v, %v", r, err)
	}
}

func BenchmarkSend(b *testing.B) {
	s, _ := New(sink.Func(func(context.Context, *sink.Message) error { return nil }), Config{Topic: "main",
		Routes: []Route{{"app.bsky.feed.post", "posts"}, {"app.bsky.feed.*", "feed"}, {"chat.bsky.*", "chat"}}})
	msg := &sink.Message{Records: []sink.Record{op("did:plc:a", "app.bsky.feed.like"), op("did:plc:a", "app.bsky.graph.follow")}}
	b.ReportAllocs()
	for b.Loop() {
		_ = s.Send(context.Background(), msg)
	}
}

// committer stands for an exactly-once sink.
type committer struct{ capture }

func (*committer) CommitsCursor() {}

func TestCommitsCursorSeesThroughTheRouter(t *testing.T) {
	for _, c := range []struct {
		next sink.Sink
		want bool
	}{{&capture{}, false}, {&committer{}, true}} {
		s, err := New(c.next, Config{Topic: "main"})
		if err != nil {
			t.Fatal(err)
		}
		if got := sink.CommitsCursor(s); got != c.want {
			t.Errorf("CommitsCursor(router in front of %T) = %v", c.next, got)
		}
	}
}
