package relay

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/atkafka/atkafka/sink/sinktest"
	"github.com/atkafka/atkafka/source/relay/relaytest"
	"github.com/atkafka/atkafka/testenv"
	"github.com/atkafka/atkafka/transform"
	"github.com/atkafka/atkafka/transform/enrich"
	"github.com/atkafka/atkafka/transform/filter"
	"github.com/atkafka/atkafka/transform/format"
	"github.com/atkafka/atkafka/transform/frame"
)

// enrichedPipeline is the pipeline cmd/atkafka builds by default (no filters, enrichment on), against a local
// PLC serving the corpus DID documents, with its caches warmed.
func enrichedPipeline(b *testing.B, opts ...format.FormatterOption) *transform.Pipeline {
	docs := testenv.CorpusDIDDocs(b)
	plc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		did, audit := strings.CutSuffix(strings.TrimPrefix(r.URL.Path, "/"), "/log/audit")
		doc, ok := docs[did]
		switch {
		case !ok:
			http.NotFound(w, r)
		case audit:
			w.Write(testenv.PLCAuditLog(did, doc, "2023-04-01T12:00:00.000Z"))
		default:
			w.Write(doc)
		}
	}))
	b.Cleanup(plc.Close)
	e, err := enrich.New(enrich.Config{PLCHost: plc.URL, PLCRate: -1, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(e.Close)
	for did := range docs {
		e.Metadata(context.Background(), did)
	}
	fl, _ := filter.New(filter.Config{})
	return &transform.Pipeline{Collections: transform.Collections(fl), Accounts: transform.Accounts(fl, nil, nil),
		Enricher: e, Formatter: format.NewFormatter(opts...)}
}

// BenchmarkFrameEnriched is BenchmarkFrame with the pipeline atkafka runs by default: enrichment on (warm
// caches), standard and Osprey formats. It is the whole per-frame path of the reader and a worker, short of the
// websocket and Kafka. The corpus's #identity frame invalidates its DID's document, and that frame then waits
// for the local PLC once per pass, as atkafka's does.
func BenchmarkFrameEnriched(b *testing.B) {
	for _, mode := range []string{"standard", "osprey"} {
		b.Run(mode, func(b *testing.B) {
			var opts []format.FormatterOption
			if mode == "osprey" {
				ids, _ := format.NewSnowflake(1)
				opts = append(opts, format.Osprey(ids))
			}
			benchFrames(b, enrichedPipeline(b, opts...))
		})
	}
}

// benchFrames runs the reader's handling and a worker's build of every corpus frame, in a loop, with p.
func benchFrames(b *testing.B, p *transform.Pipeline) {
	frames := relaytest.CorpusFrames(b)
	src, err := New(Config{Host: "ws://127.0.0.1:1", DataDir: b.TempDir(), Sink: &sinktest.Sink{}, Pipeline: p,
		DeadLetterTopic: "dead", MaxInFlight: 1, Workers: 1, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	records := 0
	var f frame.Frame
	for _, m := range frames {
		if f.Decode(m) == nil {
			records += max(len(f.Commit.Ops), 1)
		}
	}
	src.lastSeq = noCursor
	w := &worker{s: src, p: p}
	ctx := context.Background()
	b.ReportAllocs()
	cpu0 := cpuTime()
	for i := 0; b.Loop(); i++ {
		j := <-src.jobs.free
		j.raw = append(j.raw[:0], frames[i%len(frames)]...)
		if err := src.handle(j); err != nil {
			b.Fatal(err)
		}
		j = <-src.queues[0] // ready once its metadata is
		w.build(ctx, j)
		src.cp.Done(&j.msg)
		src.jobs.put(j)
		if i%len(frames) == len(frames)-1 {
			src.lastSeq = noCursor // the corpus starts over
		}
	}
	cpu := float64((cpuTime() - cpu0).Nanoseconds())
	b.ReportMetric(cpu/float64(b.N), "cpu-ns/frame")
	b.ReportMetric(cpu/float64(b.N)*float64(len(frames))/float64(records), "cpu-ns/record")
}
