package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// BaselineResult is the broker's own latency at the paced rate, without atkafka.
type BaselineResult struct {
	Records  int
	P50, P99 time.Duration
}

// baselineValueSize is about the mean size of a standard-format record of the corpus.
const baselineValueSize = 1400

// Baseline produces with a bare franz-go client with the pipeline producer's options (idempotent, acks=all, the
// same compression, linger and batch size; a new topic with cfg's partitions), keyed by the corpus's DIDs, at rate
// records/s for the given time, and measures each record from Produce to its acknowledgement. atkafka's p99 reads
// against it: a slow broker's or disk's stalls show here too, and then they are not atkafka's.
func Baseline(ctx context.Context, cfg Config, brokers []string, dids []string, rate float64, d time.Duration) (BaselineResult, error) {
	opts, err := cfg.sinkConfig(brokers).ProducerOpts()
	if err != nil {
		return BaselineResult{}, err
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return BaselineResult{}, err
	}
	defer cl.Close()
	topic := "atkafka-bench-baseline-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	if _, err := kadm.NewClient(cl).CreateTopic(ctx, cfg.Partitions, -1, nil, topic); err != nil {
		return BaselineResult{}, fmt.Errorf("creating %s: %w", topic, err)
	}
	// Warm up as runMode does: the leaders of the new topic are found before the clock starts.
	for p := range 4 * int(cfg.Partitions) {
		cl.Produce(ctx, &kgo.Record{Topic: topic, Key: []byte("warm-up-" + strconv.Itoa(p))}, nil)
	}
	if err := cl.Flush(ctx); err != nil {
		return BaselineResult{}, err
	}

	// Hex text compresses about as well as the records' JSON.
	value := []byte(`{"text":"`)
	for len(value) < baselineValueSize-2 {
		value = strconv.AppendUint(value, rand.Uint64(), 16)
	}
	value = append(value, `"}`...)

	var (
		mu       sync.Mutex
		lats     []time.Duration
		firstErr error
	)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	start := time.Now()
	sent := 0
	for now := start; now.Sub(start) < d; now = <-tick.C {
		for due := int(now.Sub(start).Seconds() * rate); sent < due; sent++ {
			t0 := time.Now()
			rec := &kgo.Record{Topic: topic, Key: []byte(dids[rand.IntN(len(dids))]), Value: value}
			cl.Produce(ctx, rec, func(_ *kgo.Record, err error) {
				lat := time.Since(t0)
				mu.Lock()
				defer mu.Unlock()
				if err != nil && firstErr == nil {
					firstErr = err
				}
				lats = append(lats, lat)
			})
		}
	}
	if err := cl.Flush(ctx); err != nil {
		return BaselineResult{}, err
	}
	mu.Lock()
	defer mu.Unlock()
	if firstErr != nil {
		return BaselineResult{}, fmt.Errorf("baseline producer: %w", firstErr)
	}
	slices.Sort(lats)
	res := BaselineResult{Records: len(lats)}
	if len(lats) > 0 {
		res.P50, res.P99 = lats[len(lats)/2], lats[len(lats)*99/100]
	}
	return res, nil
}
