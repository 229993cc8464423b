// Command atkafka-bench measures relay mode end to end against issue 7's targets: the real relay capture
// replayed in loops (seqs rewritten) over a local websocket by a separate load-generator process, the full
// pipeline with enrichment against a local fake PLC (warm caches) and the idempotent producer, into a real
// broker (--brokers) or the embedded one (--embedded); plus, in the same run, the single-core atdata floor.
//
//	go run ./cmd/atkafka-bench --embedded
//	. /tmp/x/kafka.env && go run ./cmd/atkafka-bench --brokers "$ATKAFKA_TEST_KAFKA" --modes standard,osprey
//	go run ./cmd/atkafka-bench --brokers "$ATKAFKA_TEST_KAFKA" --rate 2000 --loops 40
//
// The serve subcommand is the load generator; the benchmark starts it itself.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/atkafka/atkafka/bench"
	"github.com/atkafka/atkafka/source/backfill"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch {
	case len(os.Args) > 1 && os.Args[1] == "serve":
		err = serve(ctx, os.Args[2:])
	case len(os.Args) > 1 && os.Args[1] == "backfill":
		err = backfillBench(ctx, os.Args[2:])
	default:
		err = run(ctx, os.Args[1:])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "atkafka-bench:", err)
		os.Exit(1)
	}
}

const defaultCorpus = "../shared/corpus/relay-2026-07-04"

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("atkafka-bench", flag.ExitOnError)
	var cfg bench.Config
	var brokers, modes string
	fs.StringVar(&cfg.CorpusDir, "corpus", defaultCorpus, "relay capture folder (frames.bin.zst, did_docs.json.zst)")
	fs.IntVar(&cfg.Loops, "loops", 400, "times the capture is replayed, seqs rewritten")
	fs.Float64Var(&cfg.Rate, "rate", 0, "pace the replay at this many frames/s (0: as fast as atkafka reads)")
	fs.StringVar(&brokers, "brokers", "", "Kafka bootstrap servers, comma separated (e.g. $ATKAFKA_TEST_KAFKA from testenv/kafka.sh)")
	fs.BoolVar(&cfg.Embedded, "embedded", false, "use the embedded broker (kfake), run in the load-generator process")
	osprey := fs.Bool("osprey", false, "Osprey mode only (shorthand for --modes osprey)")
	fs.StringVar(&modes, "modes", "standard", "modes to run one after the other: standard, osprey, exactly-once (standard, transactional) or a list such as standard,exactly-once")
	fs.IntVar(&cfg.Workers, "relay-workers", 0, "relay workers (0: the source's default)")
	fs.IntVar(&cfg.MaxInFlightFrames, "max-inflight-frames", bench.DefaultMaxInFlightFrames, "as atkafka's flag")
	fs.IntVar(&cfg.MaxInFlightRecords, "max-inflight-records", bench.DefaultMaxInFlightRecords, "as atkafka's flag")
	fs.Int64Var(&cfg.MaxInFlightBytes, "max-inflight-bytes", bench.DefaultMaxInFlightBytes, "as atkafka's flag")
	fs.StringVar(&cfg.Compression, "compression", "zstd", "as atkafka's flag")
	fs.Float64Var(&cfg.PLCRate, "plc-rate-limit", -1, "as atkafka's flag; default unlimited, as for a local PLC mirror (atkafka's default, 100, suits plc.directory)")
	fs.BoolVar(&cfg.Serve.DistinctDIDs, "distinct-dids", false, "each loop rewrites the account DID of every frame to one not seen before (the fake PLC answers for it): a cold start on the network")
	fs.DurationVar(&cfg.Serve.PLCLatency, "plc-latency", 0, "delay every fake PLC answer by this much")
	fs.DurationVar(&cfg.Serve.APILatency, "api-latency", 0, "delay every fake AppView answer by this much")
	fs.BoolVar(&cfg.Profiles, "profiles", false, "enrich with profiles from the fake AppView (atkafka's --api-host)")
	fs.BoolVar(&cfg.NoEnrich, "no-enrich", false, "as atkafka's --enrich=false")
	fs.DurationVar(&cfg.EnrichTimeout, "enrich-timeout", 0, "as atkafka's flag (0: its default)")
	fs.BoolVar(&cfg.NoKafka, "no-kafka", false, "diagnostic: acknowledge every message at once instead of producing it")
	partitions := fs.Int("topic-partitions", 64, "as atkafka's flag: partitions of the topic the benchmark creates")
	fs.DurationVar(&cfg.Linger, "linger", 0, "as atkafka's flag (0: atkafka's default, 5ms)")
	fs.DurationVar(&cfg.FloorDuration, "floor-duration", 0, "how long the floor runs, before and after the pipeline (default 3s)")
	fs.StringVar(&cfg.CPUProfile, "cpuprofile", "", "write a CPU profile of the end-to-end phases here")
	fs.StringVar(&cfg.MemProfile, "memprofile", "", "write an allocation/heap profile of the end-to-end phases here")
	_ = fs.Parse(args)
	cfg.Partitions = int32(*partitions)
	if brokers != "" {
		cfg.Brokers = strings.Split(brokers, ",")
	}
	cfg.Modes = strings.Split(modes, ",")
	if *osprey {
		cfg.Modes = []string{"osprey"}
	}
	fmt.Println("atkafka-bench " + strings.Join(os.Args[1:], " "))
	_, err := bench.Run(ctx, cfg)
	return err
}

func serve(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("atkafka-bench serve", flag.ExitOnError)
	var cfg bench.ServeConfig
	bench.ServeFlags(fs, &cfg)
	_ = fs.Parse(args)
	return bench.Serve(ctx, cfg, os.Stdin, os.Stdout)
}

// backfillBench measures atkafka backfill run against a synthetic network (BENCHMARKS.md, "Backfill").
func backfillBench(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("atkafka-bench backfill", flag.ExitOnError)
	cfg := bench.BackfillConfig{Out: os.Stdout}
	var brokers, instances string
	fs.IntVar(&cfg.Repos, "repos", 3000, "repositories of the synthetic network")
	fs.IntVar(&cfg.MaxRecords, "max-records", 50_000, "records of the largest repository (the tail is Pareto-shaped)")
	fs.Uint64Var(&cfg.Seed, "seed", 1, "seed of the repository sizes")
	fs.StringVar(&brokers, "brokers", "", "Kafka bootstrap servers (empty: an in-process kfake cluster)")
	fs.StringVar(&instances, "instances", "1,2,4", "instance counts to run, one after the other")
	fs.IntVar(&cfg.Concurrency, "concurrency", backfill.DefaultConcurrency, "each instance's --backfill-concurrency")
	fs.IntVar(&cfg.Partitions, "partitions", 16, "--backfill-partitions of the work topic")
	fs.DurationVar(&cfg.PDSLatency, "pds-latency", 0, "each getRepo answers after between half and twice this (a PDS across the internet)")
	fs.IntVar(&cfg.PDSBandwidth, "pds-bandwidth", 0, "bytes/s of each getRepo body at most (0: unlimited)")
	fs.DurationVar(&cfg.FloorDuration, "floor-duration", 5*time.Second, "how long the single-goroutine floor runs at least")
	runArgs := fs.String("run-args", "", "more flags for every instance, space separated (e.g. --enrich=false)")
	fs.StringVar(&cfg.CPUProfile, "cpuprofile", "", "write a 5 s CPU profile of the first instance of the first run here")
	_ = fs.Parse(args)
	if brokers != "" {
		cfg.Brokers = strings.Split(brokers, ",")
	}
	cfg.RunArgs = strings.Fields(*runArgs)
	for _, s := range strings.Split(instances, ",") {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return fmt.Errorf("--instances: %q", s)
		}
		cfg.Instances = append(cfg.Instances, n)
	}
	fmt.Println("atkafka-bench backfill " + strings.Join(args, " "))
	return bench.RunBackfill(ctx, cfg)
}
