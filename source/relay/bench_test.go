package relay

import (
	"context"
	"log/slog"
	"syscall"
	"testing"
	"time"

	"github.com/atkafka/atkafka/sink"
	"github.com/atkafka/atkafka/source/relay/relaytest"
)

// BenchmarkFrame measures the source's own work per corpus frame, without network or Kafka: the reader's
// decode and dispatch plus the worker's transcoding and rendering, with the plain pipeline (no enrichment).
func BenchmarkFrame(b *testing.B) { benchFrames(b, standardPipeline()) }

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
