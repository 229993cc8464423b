package bench

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/atkafka/atkafka/testenv"
)

// TestMain lets the test binary be its own load generator: StartHelper re-executes it as `<exe> serve ...`.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "serve" {
		fs := flag.NewFlagSet("serve", flag.ExitOnError)
		var cfg ServeConfig
		ServeFlags(fs, &cfg)
		_ = fs.Parse(os.Args[2:])
		if err := Serve(context.Background(), cfg, os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestQuantile(t *testing.T) {
	before := hist{bounds: []float64{.001, .01, .1, 1 << 62}, counts: []uint64{5, 5, 5, 5}}
	// 100 new observations: 50 up to 1 ms, 40 in (1, 10] ms, 10 in (10, 100] ms.
	after := hist{bounds: before.bounds, counts: []uint64{55, 95, 105, 105}}
	if got, bucket := quantile(before, after, 0.5); got != time.Millisecond || bucket != .001 {
		t.Errorf("p50 = %v (bucket %g), want 1ms", got, bucket)
	}
	if got, bucket := quantile(before, after, 0.99); bucket != .1 || got < 90*time.Millisecond || got > 92*time.Millisecond {
		t.Errorf("p99 = %v (bucket %g), want 91ms", got, bucket)
	}
	if got, _ := quantile(before, before, 0.99); got != 0 {
		t.Errorf("no observations: %v", got)
	}
}

// TestRunEmbedded runs the whole benchmark briefly, exactly-once too: every frame of every loop becomes its
// records in the embedded broker, none dead-lettered, and the report names every target.
func TestRunEmbedded(t *testing.T) {
	dir := filepath.Join(testenv.SharedDir(t), "corpus", "relay-2026-07-04")
	var out bytes.Buffer
	res, err := Run(context.Background(), Config{CorpusDir: dir, Loops: 3, Embedded: true, Modes: []string{"standard", "osprey", "exactly-once"},
		FloorDuration: 50 * time.Millisecond, Out: &out, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range res.Modes {
		if m.Frames != 450 || m.Records != 3*152 || m.DeadLetters != 0 {
			t.Errorf("%s: %d frames, %d records, %d dead letters; want 450, 456, 0", m.Mode, m.Frames, m.Records, m.DeadLetters)
		}
		if m.CPU <= 0 || m.PeakRSS <= 0 || m.P99 <= 0 {
			t.Errorf("%s: missing figures: %+v", m.Mode, m)
		}
	}
	for _, want := range []string{"own CPU per op", "ops/s ÷ floor", "peak RSS", "osprey ops/s ÷ standard", "exactly-once ops/s ÷ standard"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
}

// TestRunPaced runs a short paced benchmark: the broker baseline is measured before and after, and the report
// holds the latency target.
func TestRunPaced(t *testing.T) {
	dir := filepath.Join(testenv.SharedDir(t), "corpus", "relay-2026-07-04")
	var out bytes.Buffer
	res, err := Run(context.Background(), Config{CorpusDir: dir, Loops: 2, Rate: 1000, Embedded: true,
		FloorDuration: 50 * time.Millisecond, Out: &out, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Baselines) != 2 {
		t.Fatalf("%d baselines, want 2", len(res.Baselines))
	}
	for _, b := range res.Baselines {
		// 300 frames at 1000/s: 0.3 s, so about 300 records.
		if b.Records < 250 || b.Records > 300 || b.P99 <= 0 || b.P50 > b.P99 {
			t.Errorf("baseline: %+v", b)
		}
	}
	for _, want := range []string{"p99 latency", "broker baseline"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
}
