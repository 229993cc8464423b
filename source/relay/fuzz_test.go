package relay

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/atkafka/atkafka/sink/sinktest"
	"github.com/atkafka/atkafka/source/relay/relaytest"
	"github.com/atkafka/atkafka/source/stream"
	"github.com/atkafka/atkafka/testenv"
)

// FuzzFrame feeds arbitrary messages through the reader's and a worker's handling of one frame: whatever comes
// in, nothing panics, a frame that cannot become records becomes exactly one dead letter, and every other
// record value is valid JSON.
func FuzzFrame(f *testing.F) {
	// The corpus is optional here: fuzzing must not depend on the shared folder.
	frames, _ := relaytest.LoadFrames(filepath.Join(testenv.RepoRoot(), "..", "shared", relaytest.CorpusDir, "frames.bin.zst"))
	for _, i := range []int{0, 11, 53, 148, 149} {
		if i < len(frames) {
			f.Add(frames[i])
			f.Add(frames[i][:len(frames[i])*2/3])
		}
	}
	f.Add(relaytest.InfoFrame("OutdatedCursor", "too old"))
	f.Add(relaytest.ErrorFrame("ConsumerTooSlow", "slow"))
	f.Add(relaytest.Message(1, "#sync", relaytest.Map{{Key: "did", Value: "did:plc:x"}, {Key: "seq", Value: 5}}))
	f.Add([]byte{0xff})

	mem := &sinktest.Sink{}
	src, err := New(Config{Host: "ws://127.0.0.1:1", DataDir: f.TempDir(), Sink: mem, Pipeline: standardPipeline(),
		DeadLetterTopic: "dead", MaxInFlight: 1, Workers: 1, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		f.Fatal(err)
	}
	src.lastSeq = noCursor
	w := &worker{s: src, p: src.cfg.Pipeline}
	f.Fuzz(func(t *testing.T, msg []byte) {
		j := <-src.jobs.free
		j.raw = append(j.raw[:0], msg...)
		j.truncated = 0
		if err := src.handle(j); err != nil {
			var d *stream.Drop
			var fatal fatalError
			if !errors.As(err, &d) && !errors.As(err, &fatal) {
				t.Fatalf("handle returned %T %v", err, err)
			}
			return // an error frame: its job is back in the pool
		}
		j = <-src.queues[0]
		bad := j.bad != nil
		w.build(context.Background(), j)
		dead := 0
		for _, r := range j.records {
			if r.Topic == "dead" {
				dead++
				continue
			}
			if !json.Valid(r.Value) {
				t.Fatalf("invalid JSON record: %s", r.Value)
			}
		}
		if bad && (dead != 1 || len(j.records) != 1) {
			t.Fatalf("undecodable frame gave %d records, %d dead letters; want one dead letter", len(j.records), dead)
		}
		src.cp.Done(&j.msg)
		src.jobs.put(j)
	})
}
