// Package bench measures relay mode end to end, as issue 7 asks: the real capture replayed in loops as
// subscribeRepos by a separate load-generator process, the full pipeline (relay source, transform with
// enrichment against a fake PLC with warm caches, the idempotent Kafka producer) into a real or embedded broker,
// and in the same run the single-core floor the issue compares against.
//
// Only the pipeline runs in the measuring process, so its CPU time (getrusage) and peak RSS (VmHWM) are
// atkafka's own. cmd/atkafka-bench is the command.
package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/atkafka/atkafka/cursor"
	"github.com/atkafka/atkafka/metrics"
	"github.com/atkafka/atkafka/sink"
	"github.com/atkafka/atkafka/sink/kafka"
	"github.com/atkafka/atkafka/source/relay"
	"github.com/atkafka/atkafka/source/relay/relaytest"
	"github.com/atkafka/atkafka/transform"
	"github.com/atkafka/atkafka/transform/enrich"
	"github.com/atkafka/atkafka/transform/filter"
	"github.com/atkafka/atkafka/transform/format"
)

// Config configures a benchmark run. Zero sizes take the CLI's defaults.
type Config struct {
	CorpusDir string
	Loops     int
	Rate      float64 // frames/s per connection; 0: as fast as atkafka reads
	Brokers   []string
	Embedded  bool
	Modes     []string // "standard", "osprey", "exactly-once" (standard through kafka.TxnProducer)

	Workers            int
	MaxInFlightFrames  int
	MaxInFlightRecords int
	MaxInFlightBytes   int64
	Partitions         int32
	Linger             time.Duration
	Compression        string

	// PLCRate is --plc-rate-limit: requests per second to the PLC. Zero or negative: unlimited, as for a private
	// PLC mirror, which the local fake PLC stands for. (With the CLI's default of 100/s for plc.directory, the
	// refetch after each #identity event caps this corpus at about 100 loops per second.)
	PLCRate float64
	// Serve shapes the load generator's replay: distinct DIDs per loop, PLC and AppView latency.
	Serve ServeConfig
	// Profiles enriches with profiles from the fake AppView; NoEnrich turns enrichment off (--enrich=false).
	Profiles, NoEnrich bool
	// EnrichTimeout is --enrich-timeout; zero: its default.
	EnrichTimeout time.Duration
	// NoKafka acknowledges every message at once instead of producing it (a diagnostic: the pipeline short of
	// Kafka; the producer is still created, and warmed up, but idle).
	NoKafka bool

	FloorDuration time.Duration
	CPUProfile    string
	MemProfile    string
	Out           io.Writer
	Log           *slog.Logger
}

// ModeResult is one end-to-end phase.
type ModeResult struct {
	Mode             string
	Frames           int64
	Records          int64
	DeadLetters      int64
	InBytes, OutByte int64
	Elapsed          time.Duration
	CPU              time.Duration
	HelperCPU        time.Duration
	PeakRSS          int64
	PeakRSSReset     bool
	P50, P99         time.Duration
	P99Bucket        float64 // upper bound of the histogram bucket holding p99, seconds
	GCs              uint32
	// WithDoc counts the records whose eventMetadata carries a didDocument, among OfKnown records of accounts the
	// fake PLC knows.
	WithDoc, OfKnown int64
	// Lookups counts the requests made to the PLC and the AppView; LookupP50 and LookupP99 their latency.
	Lookups              int64
	LookupP50, LookupP99 time.Duration
	// Accounts is how many accounts the enricher caches at the end; HeapPerAccount the live heap's growth over
	// the phase divided by it.
	Accounts       int64
	HeapPerAccount float64
}

// OpsPerSec is records produced per second.
func (r *ModeResult) OpsPerSec() float64 { return float64(r.Records) / r.Elapsed.Seconds() }

// DocShare is the share of the records of accounts the fake PLC knows that carry a didDocument.
func (r *ModeResult) DocShare() float64 { return float64(r.WithDoc) / float64(max(r.OfKnown, 1)) }

// CPUPerOp is atkafka's own CPU per record.
func (r *ModeResult) CPUPerOp() time.Duration { return r.CPU / time.Duration(max(r.Records, 1)) }

// Result is a whole run.
type Result struct {
	Modes       []ModeResult
	FloorBefore FloorResult
	FloorAfter  FloorResult
	// Baselines are the broker's latency without atkafka, before and after the end-to-end phases; paced runs only.
	Baselines []BaselineResult
}

// FloorOpsPerSec is the mean of the floor measured before and after the end-to-end phases.
func (r *Result) FloorOpsPerSec() float64 {
	return float64(r.FloorBefore.Ops+r.FloorAfter.Ops) / (r.FloorBefore.Elapsed + r.FloorAfter.Elapsed).Seconds()
}

// FloorCPUPerOp is the floor's CPU time per op over both measurements.
func (r *Result) FloorCPUPerOp() time.Duration {
	return (r.FloorBefore.CPU + r.FloorAfter.CPU) / time.Duration(max(r.FloorBefore.Ops+r.FloorAfter.Ops, 1))
}

// Run runs the benchmark and writes its report to cfg.Out.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	// Allocation samples of the floor would only blur the heap profile of the pipeline.
	memRate := runtime.MemProfileRate
	runtime.MemProfileRate = 0
	cfg = cfg.withDefaults()
	frames, err := relaytest.LoadFrames(filepath.Join(cfg.CorpusDir, "frames.bin.zst"))
	if err != nil {
		return nil, err
	}
	docs, err := LoadDIDDocs(cfg.CorpusDir)
	if err != nil {
		return nil, err
	}
	sc := cfg.Serve
	sc.CorpusDir, sc.Loops, sc.Rate, sc.Embedded = cfg.CorpusDir, cfg.Loops, cfg.Rate, cfg.Embedded
	h, err := StartHelper(sc)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	brokers := cfg.Brokers
	if cfg.Embedded {
		brokers = []string{h.Broker}
	}
	if len(brokers) == 0 {
		return nil, errors.New("no broker: give --brokers or --embedded")
	}
	var inBytes int64
	for _, f := range frames {
		inBytes += int64(len(f))
	}
	inBytes = inBytes * int64(cfg.Loops)

	res := &Result{}
	fmt.Fprintf(cfg.Out, "floor (before): %s of cbor-gen decode + go-car map + atdata JSON on one goroutine...\n", cfg.FloorDuration)
	if res.FloorBefore, err = Floor(frames, cfg.FloorDuration); err != nil {
		return nil, fmt.Errorf("floor: %w", err)
	}
	// A paced run measures the broker alone too, before and after, for atkafka's latency to be read against it.
	baseline := func() error {
		if cfg.Rate <= 0 {
			return nil
		}
		d := time.Duration(float64(len(frames)*cfg.Loops) / cfg.Rate * float64(time.Second))
		fmt.Fprintf(cfg.Out, "broker baseline: a bare franz-go producer at %.0f records/s for %s...\n", cfg.Rate, d.Round(time.Millisecond))
		b, err := Baseline(ctx, cfg, brokers, slices.Collect(maps.Keys(docs)), cfg.Rate, d)
		if err != nil {
			return fmt.Errorf("broker baseline: %w", err)
		}
		res.Baselines = append(res.Baselines, b)
		return nil
	}
	if err := baseline(); err != nil {
		return nil, err
	}
	runtime.MemProfileRate = memRate
	if cfg.CPUProfile != "" {
		f, err := os.Create(cfg.CPUProfile)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return nil, err
		}
	}
	for _, mode := range cfg.Modes {
		fmt.Fprintf(cfg.Out, "end to end (%s): %d loops of %d frames...\n", mode, cfg.Loops, len(frames))
		m, err := runMode(ctx, cfg, mode, h, brokers, docs)
		if err != nil {
			pprof.StopCPUProfile()
			return nil, fmt.Errorf("%s mode: %w", mode, err)
		}
		m.InBytes = inBytes
		res.Modes = append(res.Modes, *m)
	}
	if cfg.CPUProfile != "" {
		pprof.StopCPUProfile()
	}
	if cfg.MemProfile != "" {
		if err := writeHeapProfile(cfg.MemProfile); err != nil {
			return nil, err
		}
	}
	runtime.MemProfileRate = 0
	if err := baseline(); err != nil {
		return nil, err
	}
	fmt.Fprintf(cfg.Out, "floor (after)...\n")
	if res.FloorAfter, err = Floor(frames, cfg.FloorDuration); err != nil {
		return nil, fmt.Errorf("floor: %w", err)
	}
	Report(cfg.Out, &cfg, res)
	return res, nil
}

func (cfg Config) withDefaults() Config {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&cfg.Loops, 400)
	def(&cfg.MaxInFlightFrames, DefaultMaxInFlightFrames)
	def(&cfg.MaxInFlightRecords, DefaultMaxInFlightRecords)
	if cfg.MaxInFlightBytes == 0 {
		cfg.MaxInFlightBytes = DefaultMaxInFlightBytes
	}
	if cfg.Partitions == 0 {
		cfg.Partitions = 64
	}
	if cfg.Linger == 0 {
		cfg.Linger = 5 * time.Millisecond
	}
	if cfg.Compression == "" {
		cfg.Compression = "zstd"
	}
	if cfg.PLCRate == 0 {
		cfg.PLCRate = -1
	}
	if cfg.FloorDuration == 0 {
		cfg.FloorDuration = 3 * time.Second
	}
	if len(cfg.Modes) == 0 {
		cfg.Modes = []string{"standard"}
	}
	if cfg.Out == nil {
		cfg.Out = os.Stdout
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	return cfg
}

// sinkConfig is the producer's configuration, bar its topics: the pipeline's and the broker baseline's.
func (cfg Config) sinkConfig(brokers []string) kafka.Config {
	return kafka.Config{Brokers: brokers, Compression: cfg.Compression, Linger: cfg.Linger, MaxBatchBytes: 1 << 20,
		Acks: "all", Partitions: cfg.Partitions, MaxInFlightRecords: cfg.MaxInFlightRecords,
		MaxInFlightBytes: cfg.MaxInFlightBytes, Logger: cfg.Log, Observer: metrics.Kafka{}}
}

// The defaults of atkafka's CLI, which are the libraries' (cmd/atkafka/flags.go), and which the benchmark
// measures unless told otherwise.
const (
	DefaultMaxInFlightFrames  = relay.DefaultMaxInFlight
	DefaultMaxInFlightRecords = kafka.DefaultMaxInFlightRecords
	DefaultMaxInFlightBytes   = kafka.DefaultMaxInFlightBytes
)

// countingSink counts what passes to the producer.
type countingSink struct {
	next             sink.Sink
	records, bytes   atomic.Int64
	dead             atomic.Int64
	deadLetterTopic  string
	docs             []byte          // how a record with a didDocument begins its eventMetadata
	known            map[string]bool // relaytest.OriginalKey of the accounts the fake PLC knows
	withDoc, ofKnown atomic.Int64    // records with a didDocument; records of accounts the PLC knows
}

func (c *countingSink) Send(ctx context.Context, msg *sink.Message) error {
	var n int64
	for i := range msg.Records {
		r := &msg.Records[i]
		n += int64(len(r.Key) + len(r.Value))
		if r.Topic == c.deadLetterTopic {
			c.dead.Add(1)
		}
	}
	c.records.Add(int64(len(msg.Records)))
	var withDoc, ofKnown int64
	for i := range msg.Records {
		if r := &msg.Records[i]; r.Topic == "" && c.known[relaytest.OriginalKey(string(r.Key))] {
			ofKnown++
			if bytes.Contains(r.Value, c.docs) {
				withDoc++
			}
		}
	}
	c.withDoc.Add(withDoc)
	c.ofKnown.Add(ofKnown)
	c.bytes.Add(n)
	return c.next.Send(ctx, msg)
}

func runMode(ctx context.Context, cfg Config, mode string, h *Helper, brokers []string, docs map[string]json.RawMessage) (*ModeResult, error) {
	log := cfg.Log
	f, err := filter.New(filter.Config{})
	if err != nil {
		return nil, err
	}
	var fopts []format.FormatterOption
	switch mode {
	case "standard", "exactly-once":
	case "osprey":
		ids, err := format.NewSnowflake(1)
		if err != nil {
			return nil, err
		}
		fopts = append(fopts, format.Osprey(ids))
	default:
		return nil, fmt.Errorf("unknown mode %q (want standard, osprey or exactly-once)", mode)
	}
	// As cmd/atkafka wires it with --enrich (the default) and the CLI's defaults.
	p := &transform.Pipeline{Collections: transform.Collections(f), Formatter: format.NewFormatter(fopts...), Observer: metrics.Pipeline{}}
	var e *enrich.Enricher
	if !cfg.NoEnrich {
		ec := enrich.Config{PLCHost: h.PLCURL, LookupTimeout: cfg.EnrichTimeout, PLCRate: cfg.PLCRate, Logger: log, Observer: metrics.Enrich{}}
		if cfg.Profiles {
			ec.APIHost = h.PLCURL
		}
		if e, err = enrich.New(ec); err != nil {
			return nil, err
		}
		defer e.Close()
		for did := range docs { // warm caches, as a long-running instance has them
			e.Metadata(ctx, did)
		}
		p.Accounts, p.Enricher = transform.Accounts(f, log, p.Observer), e
	}

	topic := "atkafka-bench-" + mode + "-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	dlTopic := topic + ".deadletter"
	kc := cfg.sinkConfig(brokers)
	kc.Topic, kc.ExtraTopics, kc.CreateTopic = topic, []string{dlTopic}, true
	var prod interface {
		sink.Sink
		Close(context.Context) error
	}
	prod, err = kafka.New(ctx, kc)
	if err != nil {
		return nil, err
	}
	if err := warmUp(ctx, prod, int(cfg.Partitions)); err != nil {
		prod.Close(context.Background())
		return nil, err
	}
	var store cursor.Store
	if mode == "exactly-once" {
		// The warm-up went through an at-least-once producer: a transactional one holds a message without a
		// cursor. Done then means committed, so the phase ends when a read_committed reader can read it all.
		if err := prod.Close(ctx); err != nil {
			return nil, err
		}
		txn, err := kafka.NewTxn(ctx, kc, kafka.TxnConfig{TransactionalID: topic, CursorTopic: topic + ".cursors", CursorKey: "relay:bench"})
		if err != nil {
			return nil, err
		}
		prod, store = txn, txn.Cursor()
	}
	cs := &countingSink{next: prod, deadLetterTopic: dlTopic, docs: []byte(`"eventMetadata":{"didDocument":`), known: map[string]bool{}}
	for did := range docs {
		cs.known[relaytest.OriginalKey(did)] = true
	}
	if cfg.NoKafka {
		cs.next = sink.Func(func(_ context.Context, msg *sink.Message) error { go msg.Done(nil); return nil })
	}
	dir, err := os.MkdirTemp("", "atkafka-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	src, err := relay.New(relay.Config{Host: h.RelayURL, DataDir: dir, StartCursor: strconv.FormatInt(h.FirstSeq-1, 10),
		Workers: cfg.Workers, MaxInFlight: cfg.MaxInFlightFrames, Sink: cs, Pipeline: p, DeadLetterTopic: dlTopic, Logger: log,
		Cursor: store, Observer: metrics.Relay{}})
	if err != nil {
		return nil, err
	}

	committed := metrics.CursorCommitted.WithLabelValues("relay")
	committed.Set(0)
	hist0 := histogram(metrics.ProduceLatency.WithLabelValues("relay"))
	lookups0 := lookupHistograms()
	accounts0 := gauge(metrics.CacheSize.WithLabelValues("doc"))
	runtime.GC()
	m := &ModeResult{Mode: mode, PeakRSSReset: ResetPeakRSS()}
	var ms0 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	start, cpu0, hcpu0 := time.Now(), CPUTime(), ProcessCPU(h.PID())
	go func() { done <- src.Run(rctx) }()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	// The heap an account costs is measured between a quarter of the replay and its end: by then the pipeline's
	// pooled buffers have grown to the frames' sizes, so what grows after is the account cache.
	quarter := float64(h.FirstSeq) + float64(h.LastSeq-h.FirstSeq)/4
	var heapAt func() (heap uint64, accounts float64)
	if e != nil && cfg.Serve.DistinctDIDs {
		heapAt = func() (uint64, float64) {
			runtime.GC()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			return ms.HeapAlloc, gauge(metrics.CacheSize.WithLabelValues("doc"))
		}
	}
	var heapQ uint64
	var accountsQ float64
	for gauge(committed) < float64(h.LastSeq) {
		if heapAt != nil && heapQ == 0 && gauge(committed) >= quarter {
			heapQ, accountsQ = heapAt()
		}
		select {
		case err := <-done:
			prod.Close(context.Background())
			return nil, fmt.Errorf("relay source stopped early: %v", err)
		case <-ctx.Done():
			prod.Close(context.Background())
			return nil, ctx.Err()
		case <-tick.C:
		}
	}
	m.Elapsed, m.CPU, m.HelperCPU = time.Since(start), CPUTime()-cpu0, ProcessCPU(h.PID())-hcpu0
	m.PeakRSS = PeakRSS()
	var ms1 runtime.MemStats
	runtime.ReadMemStats(&ms1)
	m.GCs = ms1.NumGC - ms0.NumGC
	if heapAt != nil {
		heap, accounts := heapAt()
		m.Accounts = int64(accounts - accounts0)
		if n := accounts - accountsQ; heapQ != 0 && n > 0 {
			m.HeapPerAccount = (float64(heap) - float64(heapQ)) / n
		}
	}
	lookups1 := lookupHistograms()
	if len(lookups0.counts) != len(lookups1.counts) { // no request was made before this phase
		lookups0 = hist{bounds: lookups1.bounds, counts: make([]uint64, len(lookups1.counts))}
	}
	m.Lookups = int64(lookups1.counts[len(lookups1.counts)-1] - lookups0.counts[len(lookups0.counts)-1])
	m.LookupP50, _ = quantile(lookups0, lookups1, 0.50)
	m.LookupP99, _ = quantile(lookups0, lookups1, 0.99)
	cancel()
	runErr := <-done
	closeErr := prod.Close(context.Background())
	if err := errors.Join(runErr, closeErr); err != nil {
		return nil, err
	}
	m.Frames, m.Records, m.OutByte, m.DeadLetters = int64(h.Frames), cs.records.Load(), cs.bytes.Load(), cs.dead.Load()
	m.WithDoc, m.OfKnown = cs.withDoc.Load(), cs.ofKnown.Load()
	hist1 := histogram(metrics.ProduceLatency.WithLabelValues("relay"))
	m.P50, _ = quantile(hist0, hist1, 0.50)
	m.P99, m.P99Bucket = quantile(hist0, hist1, 0.99)
	return m, nil
}

// warmUp produces a few records per partition and waits for them, so that the leaders of a topic created a
// moment ago are known before the clock starts: the first records would otherwise wait for them, which is
// start-up, not the steady state being measured.
func warmUp(ctx context.Context, s sink.Sink, partitions int) error {
	recs := make([]sink.Record, 4*max(partitions, 1))
	for i := range recs {
		recs[i] = sink.Record{Key: []byte("warm-up-" + strconv.Itoa(i)), Value: []byte(`{"warmUp":true}`)}
	}
	done := make(chan error, 1)
	if err := s.Send(ctx, &sink.Message{Records: recs, Done: func(err error) { done <- err }}); err != nil {
		return err
	}
	select {
	case err := <-done:
		return err
	case <-time.After(time.Minute):
		return errors.New("warm-up records not acknowledged within a minute")
	}
}

// lookupHistograms sums the enrichment request latency histograms of every endpoint and status.
func lookupHistograms() hist {
	var sum hist
	ch := make(chan prometheus.Metric, 64)
	go func() { metrics.EnrichLookups.Collect(ch); close(ch) }()
	for mt := range ch {
		var d dto.Metric
		_ = mt.Write(&d)
		bs := d.GetHistogram().GetBucket()
		if sum.bounds == nil {
			for _, b := range bs {
				sum.bounds = append(sum.bounds, b.GetUpperBound())
			}
			sum.bounds = append(sum.bounds, float64(1<<62))
			sum.counts = make([]uint64, len(sum.bounds))
		}
		for i, b := range bs {
			sum.counts[i] += b.GetCumulativeCount()
		}
		sum.counts[len(bs)] += d.GetHistogram().GetSampleCount()
	}
	if sum.bounds == nil {
		sum = hist{bounds: []float64{float64(1 << 62)}, counts: []uint64{0}}
	}
	return sum
}

func gauge(g prometheus.Gauge) float64 {
	var d dto.Metric
	_ = g.Write(&d)
	return d.GetGauge().GetValue()
}

// hist is a snapshot of a histogram: cumulative counts per upper bound, the last bound +Inf.
type hist struct {
	bounds []float64
	counts []uint64
}

func histogram(o prometheus.Observer) hist {
	var d dto.Metric
	_ = o.(prometheus.Metric).Write(&d)
	var h hist
	for _, b := range d.GetHistogram().GetBucket() {
		h.bounds = append(h.bounds, b.GetUpperBound())
		h.counts = append(h.counts, b.GetCumulativeCount())
	}
	h.counts = append(h.counts, d.GetHistogram().GetSampleCount())
	h.bounds = append(h.bounds, float64(1<<62))
	return h
}

// quantile estimates quantile q of the observations between two snapshots, interpolating linearly inside
// the bucket as Prometheus' histogram_quantile does, and returns that bucket's upper bound as well.
func quantile(before, after hist, q float64) (time.Duration, float64) {
	n := after.counts[len(after.counts)-1] - before.counts[len(before.counts)-1]
	if n == 0 {
		return 0, 0
	}
	rank := q * float64(n)
	var prevCount uint64
	prevBound := 0.0
	for i, b := range after.bounds {
		c := after.counts[i] - before.counts[i]
		if float64(c) >= rank {
			inBucket := float64(c - prevCount)
			frac := 1.0
			if inBucket > 0 {
				frac = (rank - float64(prevCount)) / inBucket
			}
			v := prevBound + (b-prevBound)*frac
			return time.Duration(v * float64(time.Second)), b
		}
		prevCount, prevBound = c, b
	}
	return 0, 0
}

func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return pprof.Lookup("allocs").WriteTo(f, 0)
}
