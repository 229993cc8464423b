package tap

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"

	"github.com/atkafka/atkafka/sink"
	"github.com/atkafka/atkafka/testenv"
)

// countingSink counts the messages Kafka acknowledged.
type countingSink struct {
	sink.Sink
	delivered atomic.Int64
}

func (s *countingSink) Send(ctx context.Context, msg *sink.Message) error {
	done := msg.Done
	msg.Done = func(err error) {
		if err == nil {
			s.delivered.Add(1)
		}
		done(err)
	}
	return s.Sink.Send(ctx, msg)
}

// BenchmarkBackfill measures records/s from a real Tap into a real Kafka during a backfill: Tap first stores
// the backfill of several accounts in its outbox, then a Source drains it. With acks every event's ack must also
// have reached Tap; with disable-acks (a second Tap, started with --disable-acks) Tap forgets events once
// written. Both share one network and one Kafka, so their rates compare: similar rates mean acks are not the
// bottleneck.
//
//	go test -run '^$' -bench Backfill -benchtime 3x ./source/tap
func BenchmarkBackfill(b *testing.B) {
	const accounts, perAccount = 4, 1250
	e := startE2EWith(b, testenv.PrivateKafka(b), 0, false)
	noAcks := testenv.StartTap(b, testenv.TapOptions{RelayURL: e.env.PDS[0].URL, PLCURL: e.env.PLCURL, DisableAcks: true})
	want := writes{}
	var dids []string
	for i := range accounts {
		acct := e.env.CreateAccount(e.env.PDS[0], fmt.Sprintf("bench%d", i))
		createPosts(b, e.env, acct, perAccount, want)
		dids = append(dids, acct.DID)
	}
	events := int64(len(want) + len(dids)) // records plus one identity event per account
	snk := &countingSink{Sink: e.producer(b)}
	for _, tap := range []*testenv.Tap{e.tap, noAcks} {
		disableAcks := tap == noAcks
		b.Run(fmt.Sprintf("disable-acks=%t", disableAcks), func(b *testing.B) {
			for range b.N {
				b.StopTimer()
				backfill(b, tap, snk, e.dlq, dids, events, disableAcks)
			}
			b.ReportMetric(float64(events)*float64(b.N)/b.Elapsed().Seconds(), "records/s")
		})
	}
}

// backfill has tap backfill dids into its outbox, then times a Source draining it into snk.
func backfill(b *testing.B, tap *testenv.Tap, snk *countingSink, dlq string, dids []string, events int64, disableAcks bool) {
	tap.AddRepos(dids...)
	waitFor(b, 2*time.Minute, "backfilled into Tap's outbox", func() bool { return tap.OutboxSize() >= events })
	obs := &tally{}
	src, err := New(Config{Host: tap.ChannelURL(), Sink: snk, Pipeline: testPipeline(), DeadLetterTopic: dlq,
		DisableAcks: disableAcks, Logger: testLogger(b.Output()), Observer: obs})
	if err != nil {
		b.Fatal(err)
	}
	delivered := snk.delivered.Load()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)

	b.StartTimer()
	go func() { done <- src.Run(ctx) }()
	waitFor(b, 2*time.Minute, "all delivered", func() bool {
		return snk.delivered.Load()-delivered >= events && (disableAcks || obs.Get("acks "+acksOK) >= int(events))
	})
	b.StopTimer()

	cancel()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	tap.WaitOutboxEmpty(time.Minute)
	tap.RemoveRepos(dids...) // so that the next iteration backfills them again
}

// BenchmarkAckPath pushes events from an in-process fake Tap through a Source into a sink that acknowledges at
// once: the ceiling of reader, workers and ack writer together, far above what Tap sends.
func BenchmarkAckPath(b *testing.B) {
	for _, disableAcks := range []bool{false, true} {
		b.Run(fmt.Sprintf("disable-acks=%t", disableAcks), func(b *testing.B) {
			tap := newFakeTap(b, "")
			var delivered atomic.Int64
			snk := sink.Func(func(_ context.Context, msg *sink.Message) error {
				go func() { delivered.Add(1); msg.Done(nil) }()
				return nil
			})
			src, err := New(Config{Host: tap.host(), Sink: snk, Pipeline: testPipeline(), DeadLetterTopic: "dlq",
				DisableAcks: disableAcks, Logger: testLogger(b.Output())})
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go func() { _ = src.Run(ctx) }()
			conn := tap.accept(b)
			msgs := make([]string, 1000)
			for i := range msgs {
				msgs[i] = recordJSON(uint64(i), false, fmt.Sprintf("did:plc:%024d", i%97), "app.bsky.feed.post",
					syntax.NewTID(1_700_000_000_000_000+int64(i), 0).String(), "create", `{"$type":"app.bsky.feed.post","text":"hello world","createdAt":"2025-01-01T00:00:00.000Z"}`)
			}
			b.ResetTimer()
			for i := range b.N {
				conn.send(b, msgs[i%len(msgs)])
			}
			if disableAcks {
				waitFor(b, time.Minute, "all delivered", func() bool { return delivered.Load() >= int64(b.N) })
			} else {
				conn.waitAcks(b, b.N, time.Minute)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}
