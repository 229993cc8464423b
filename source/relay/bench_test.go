package relay

import (
	"context"
	"log/slog"
	"syscall"
	"testing"
	"time"

	"github.com/atkafka/atkafka/sink"
	"github.com/atkafka/atkafka/source/relay/relaytest"
	"github.com/atkafka/atkafka/transform/frame"
)

// BenchmarkFrame measures the source's own work per corpus frame, without network or Kafka: the reader's
// decode and dispatch plus the worker's transcoding and rendering. ops/s counts commit ops.
func BenchmarkFrame(b *testing.B) {
	frames := relaytest.CorpusFrames(b)
	src, err := New(Config{Host: "ws://127.0.0.1:1", DataDir: b.TempDir(), Sink: &memSink{}, Pipeline: standardPipeline(),
		DeadLetterTopic: "dead", MaxInFlight: 1, Workers: 1, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	ops := 0
	var f frame.Frame
	for _, m := range frames {
		if f.Decode(m) == nil {
			ops += max(len(f.Commit.Ops), 1)
		}
	}
	src.lastSeq = noCursor
	w := &worker{s: src, p: src.cfg.Pipeline}
	ctx := context.Background()
	b.ReportAllocs()
	cpu0 := cpuTime()
	for i := 0; b.Loop(); i++ {
		j := <-src.jobs.free
		j.raw = append(j.raw[:0], frames[i%len(frames)]...)
		if err := src.handle(j); err != nil {
			b.Fatal(err)
		}
		j = <-src.queues[0]
		w.build(ctx, j)
		src.wm.Done(j.ticket)
		src.jobs.put(j)
		if i%len(frames) == len(frames)-1 {
			src.lastSeq = noCursor // the corpus starts over
		}
	}
	// CPU time rather than wall time: the machines this runs on are often shared.
	cpu := float64((cpuTime() - cpu0).Nanoseconds())
	b.ReportMetric(cpu/float64(b.N), "cpu-ns/frame")
	b.ReportMetric(cpu/float64(b.N)*float64(len(frames))/float64(ops), "cpu-ns/event")
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkEndToEnd replays the corpus in loops over a local websocket into a sink that acknowledges at once:
// the source's throughput with all its goroutines, short of Kafka.
func BenchmarkEndToEnd(b *testing.B) {
	frames := relaytest.CorpusFrames(b)
	loops := max(b.N/len(frames), 1)
	srv := relaytest.NewServer(frames, relaytest.Loops(loops))
	defer srv.Close()
	ack := sink.Func(func(_ context.Context, msg *sink.Message) error { go msg.Done(nil); return nil })
	cfg := Config{Host: srv.URL(), DataDir: b.TempDir(), StartCursor: "0", Sink: ack, Pipeline: standardPipeline(),
		DeadLetterTopic: "dead", Logger: slog.New(slog.DiscardHandler)}
	src, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	b.ResetTimer()
	start, cpu0 := time.Now(), cpuTime()
	go func() { done <- src.Run(ctx) }()
	for src.committed.Load() < srv.LastSeq() {
		time.Sleep(time.Millisecond)
	}
	elapsed, cpu := time.Since(start), cpuTime()-cpu0
	b.StopTimer()
	cancel()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(srv.Len())/elapsed.Seconds(), "frames/s")
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(srv.Len()), "cpu-ns/frame") // includes the replay server
}
