package backfill

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// exactTail is the lag per partition up to which Status reads the remaining work records to count them exactly:
// offsets alone overcount by the transaction markers (one per committed transaction and partition).
const exactTail = 2000

// StatusConfig configures Status.
type StatusConfig struct {
	Opts                                []kgo.Opt
	WorkTopic, FailedTopic, OutputTopic string
	Group                               string
	// Interval is how long Status watches the offsets move to measure rates; zero reports no rates.
	Interval time.Duration
}

// Progress is a backfill's state as Kafka holds it.
type Progress struct {
	// Planned counts the work topic's offsets (work records, retries put back and transaction markers).
	Planned int64 `json:"planned"`
	// Remaining is the work not yet committed by the group: exact for partitions nearly done, else offsets.
	Remaining int64 `json:"remaining"`
	// Done is Planned - Remaining.
	Done int64 `json:"done"`
	// Failed counts the repositories in the failed topic, by reason and by PDS host.
	Failed      int64            `json:"failed"`
	FailedBy    map[string]int64 `json:"failedByReason,omitempty"`
	FailedByPDS map[string]int64 `json:"failedByPDS,omitempty"`
	// WorkPerSecond and RecordsPerSecond are measured over the interval (the output topic's offsets: live
	// records produced meanwhile count too); ETA is Remaining at WorkPerSecond.
	WorkPerSecond    float64 `json:"workPerSecond"`
	RecordsPerSecond float64 `json:"recordsPerSecond"`
	ETA              string  `json:"eta,omitempty"`
}

// Status reads a backfill's progress from the topics' offsets, the group's committed offsets and the failed
// topic: Kafka is the only store.
func Status(ctx context.Context, cfg StatusConfig) (*Progress, error) {
	cl, err := kgo.NewClient(cfg.Opts...)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	first, err := snapshot(ctx, adm, cfg)
	if err != nil {
		return nil, err
	}
	p := &Progress{}
	last := first
	if cfg.Interval > 0 {
		t := time.NewTimer(cfg.Interval)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		}
		if last, err = snapshot(ctx, adm, cfg); err != nil {
			return nil, err
		}
		secs := last.at.Sub(first.at).Seconds()
		p.WorkPerSecond = float64(last.committed-first.committed) / secs
		p.RecordsPerSecond = float64(last.output-first.output) / secs
	}
	p.Planned = last.end - last.start
	p.Remaining, err = remaining(ctx, cl, cfg, last)
	if err != nil {
		return nil, err
	}
	p.Done = p.Planned - p.Remaining
	if p.WorkPerSecond > 0 {
		p.ETA = (time.Duration(float64(p.Remaining)/p.WorkPerSecond) * time.Second).Round(time.Second).String()
	}
	p.Failed, p.FailedBy, p.FailedByPDS, err = failures(ctx, cl, adm, cfg.FailedTopic)
	return p, err
}

type offsets struct {
	at                          time.Time
	start, end, committed       int64
	output                      int64
	endBy, committedBy, startBy map[int32]int64
}

func snapshot(ctx context.Context, adm *kadm.Client, cfg StatusConfig) (*offsets, error) {
	o := &offsets{at: time.Now(), endBy: map[int32]int64{}, committedBy: map[int32]int64{}, startBy: map[int32]int64{}}
	starts, err := adm.ListStartOffsets(ctx, cfg.WorkTopic)
	if err != nil {
		return nil, fmt.Errorf("work topic start offsets: %w", err)
	}
	ends, err := adm.ListEndOffsets(ctx, cfg.WorkTopic, cfg.OutputTopic)
	if err != nil {
		return nil, fmt.Errorf("end offsets: %w", err)
	}
	if err := cmp.Or(starts.Error(), ends.Error()); err != nil {
		return nil, err
	}
	committed, err := adm.FetchOffsetsForTopics(ctx, cfg.Group, cfg.WorkTopic)
	if err != nil {
		return nil, fmt.Errorf("group offsets: %w", err)
	}
	starts.Each(func(l kadm.ListedOffset) { o.startBy[l.Partition] = l.Offset; o.start += l.Offset })
	ends.Each(func(l kadm.ListedOffset) {
		if l.Topic == cfg.OutputTopic {
			o.output += l.Offset
			return
		}
		o.endBy[l.Partition] = l.Offset
		o.end += l.Offset
	})
	for p, start := range o.startBy {
		c := start
		if r, ok := committed.Lookup(cfg.WorkTopic, p); ok && r.Err == nil && r.At >= 0 {
			c = max(r.At, start)
		}
		o.committedBy[p] = c
		o.committed += c - start
	}
	return o, nil
}

// remaining counts the work after the committed offsets: by reading it where little is left (so a finished
// backfill shows 0, not its transaction markers), by offsets elsewhere.
func remaining(ctx context.Context, cl *kgo.Client, cfg StatusConfig, o *offsets) (int64, error) {
	var n int64
	read := map[int32]kgo.Offset{}
	for p, end := range o.endBy {
		lag := end - o.committedBy[p]
		switch {
		case lag <= 0:
		case lag > exactTail:
			n += lag
		default:
			read[p] = kgo.NewOffset().At(o.committedBy[p])
		}
	}
	if len(read) == 0 {
		return n, nil
	}
	ends := map[int32]int64{}
	for p := range read {
		ends[p] = o.endBy[p]
	}
	count, err := readRange(ctx, cl, cfg.WorkTopic, read, ends, nil)
	return n + count, err
}

// readRange reads topic's partitions from the given offsets to ends, read_committed, calling each (if set) per
// record, and returns how many records it read.
func readRange(ctx context.Context, base *kgo.Client, topic string, from map[int32]kgo.Offset, ends map[int32]int64, each func(*kgo.Record)) (int64, error) {
	opts := append(slices.Clone(base.Opts()), kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: from}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	left := maps.Clone(ends)
	for p, end := range left {
		if from[p].EpochOffset().Offset >= end {
			delete(left, p)
		}
	}
	var n int64
	for len(left) > 0 && ctx.Err() == nil {
		pollCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
		f := cl.PollFetches(pollCtx)
		cancel()
		if f.NumRecords() == 0 {
			// Only markers (or aborted records) left: read_committed returns nothing more for these partitions.
			if err := f.Err0(); err != nil && !errors.Is(err, context.DeadlineExceeded) {
				return n, err
			}
			break
		}
		f.EachRecord(func(r *kgo.Record) {
			if end, ok := left[r.Partition]; ok && r.Offset < end {
				n++
				if each != nil {
					each(r)
				}
			}
			if r.Offset+1 >= left[r.Partition] {
				delete(left, r.Partition)
			}
		})
	}
	return n, ctx.Err()
}

// failures reads the failed topic whole: one record per repository that failed for good.
func failures(ctx context.Context, cl *kgo.Client, adm *kadm.Client, topic string) (int64, map[string]int64, map[string]int64, error) {
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil || ends.Error() != nil {
		return 0, nil, nil, cmp.Or(err, ends.Error())
	}
	starts, err := adm.ListStartOffsets(ctx, topic)
	if err != nil || starts.Error() != nil {
		return 0, nil, nil, cmp.Or(err, starts.Error())
	}
	from, to := map[int32]kgo.Offset{}, map[int32]int64{}
	starts.Each(func(l kadm.ListedOffset) { from[l.Partition] = kgo.NewOffset().At(l.Offset) })
	ends.Each(func(l kadm.ListedOffset) { to[l.Partition] = l.Offset })
	byReason, byPDS := map[string]int64{}, map[string]int64{}
	n, err := readRange(ctx, cl, topic, from, to, func(r *kgo.Record) {
		for _, h := range r.Headers {
			switch h.Key {
			case "reason":
				byReason[string(h.Value)]++
			case "pds":
				byPDS[cmp.Or(string(h.Value), "unknown")]++
			}
		}
	})
	return n, byReason, byPDS, err
}

// Print writes p for humans.
func (p *Progress) Print(w io.Writer, asJSON bool) error {
	if asJSON {
		return json.NewEncoder(w).Encode(p)
	}
	pct := 100.0
	if p.Planned > 0 {
		pct = 100 * float64(p.Done) / float64(p.Planned)
	}
	_, err := fmt.Fprintf(w, "planned   %d\ndone      %d (%.1f%%)\nremaining %d\nfailed    %d\nrepos/s   %.1f\nrecords/s %.1f\neta       %s\n",
		p.Planned, p.Done, pct, p.Remaining, p.Failed, p.WorkPerSecond, p.RecordsPerSecond, cmp.Or(p.ETA, "-"))
	if err != nil {
		return err
	}
	for _, k := range slices.Sorted(maps.Keys(p.FailedBy)) {
		fmt.Fprintf(w, "failed by reason %s: %d\n", k, p.FailedBy[k])
	}
	for _, k := range slices.Sorted(maps.Keys(p.FailedByPDS)) {
		fmt.Fprintf(w, "failed at PDS %s: %d\n", k, p.FailedByPDS[k])
	}
	return nil
}
