package frame_test

import (
	"testing"

	"github.com/atkafka/atkafka/bench"

	"github.com/atkafka/atkafka/transform/frame"
)

func perFrame(b *testing.B, n int) {
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/frame")
}

// BenchmarkDecode decodes every frame of the capture (header and body, no records) into a reused Frame.
func BenchmarkDecode(b *testing.B) {
	frames := loadFrames(b)
	b.ReportAllocs()
	var f frame.Frame
	for b.Loop() {
		for _, msg := range frames {
			if err := f.Decode(msg); err != nil {
				b.Fatal(err)
			}
		}
	}
	perFrame(b, len(frames))
}

// BenchmarkDecodeCborGen is the baseline: header skipped and body decoded by indigo's cbor-gen types.
func BenchmarkDecodeCborGen(b *testing.B) {
	frames := loadFrames(b)
	b.ReportAllocs()
	for b.Loop() {
		for _, msg := range frames {
			if _, err := bench.CborGenBody(msg); err != nil {
				b.Fatal(err)
			}
		}
	}
	perFrame(b, len(frames))
}

// BenchmarkCommitRecords is the whole per-frame hot path: decode, index the CAR, render every op's record.
// ns/op divided by the number of ops (reported as ns/op-record) is the figure issue 7 budgets.
func BenchmarkCommitRecords(b *testing.B) {
	frames := loadFrames(b)
	b.ReportAllocs()
	var f frame.Frame
	var recs frame.Records
	ops := 0
	for b.Loop() {
		ops = 0
		for _, msg := range frames {
			if err := f.Decode(msg); err != nil {
				b.Fatal(err)
			}
			if f.Kind != frame.KindCommit {
				ops++ // one record, as in issue 7's op count and bench.FloorFrame
				continue
			}
			for _, err := range recs.Ops(&f.Commit) {
				if err != nil {
					b.Fatal(err)
				}
				ops++
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*ops), "ns/op-record")
}

// BenchmarkCommitRecordsAtdata is the upstream-style baseline for the same work, issue 7's floor: cbor-gen body,
// go-car into a map, atdata.UnmarshalCBOR and json.Marshal per record (bench.FloorFrame).
func BenchmarkCommitRecordsAtdata(b *testing.B) {
	frames := loadFrames(b)
	b.ReportAllocs()
	ops := 0
	for b.Loop() {
		ops = 0
		for _, msg := range frames {
			n, err := bench.FloorFrame(msg)
			if err != nil {
				b.Fatal(err)
			}
			ops += n
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*ops), "ns/op-record")
}
