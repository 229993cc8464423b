package dagcbor_test

import (
	"bytes"
	"fmt"
	"testing"

	car "github.com/ipld/go-car"

	"github.com/atkafka/atkafka/transform/dagcbor"
)

// corpusRecords returns the record blocks of the capture: the top-level maps with a "$type".
func corpusRecords(b *testing.B) [][]byte {
	var recs [][]byte
	for _, blk := range corpusBlocks(b) {
		d := dagcbor.NewDecoder(blk)
		n, err := d.MapHeader()
		if err != nil {
			continue
		}
		for range n {
			k, err := d.Text()
			if err != nil {
				b.Fatal(err)
			}
			if string(k) == "$type" {
				recs = append(recs, blk)
				break
			}
			if err := d.Skip(); err != nil {
				b.Fatal(err)
			}
		}
	}
	return recs
}

func recordBytes(recs [][]byte) int64 {
	var n int64
	for _, r := range recs {
		n += int64(len(r))
	}
	return n
}

// BenchmarkAppendJSON transcodes every record of the capture; ns/record is the figure to compare with
// BenchmarkAtdata.
func BenchmarkAppendJSON(b *testing.B) {
	recs := corpusRecords(b)
	b.SetBytes(recordBytes(recs))
	b.ReportAllocs()
	dst := make([]byte, 0, 1<<16)
	for b.Loop() {
		for _, r := range recs {
			var err error
			if dst, err = dagcbor.AppendJSON(dst[:0], r); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(recs)), "ns/record")
}

// BenchmarkAtdata is the baseline: indigo's atdata.UnmarshalCBOR then json.Marshal, per record.
func BenchmarkAtdata(b *testing.B) {
	recs := corpusRecords(b)
	b.SetBytes(recordBytes(recs))
	b.ReportAllocs()
	for b.Loop() {
		for _, r := range recs {
			if _, err := viaAtdata(r); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(recs)), "ns/record")
}

// BenchmarkParseCAR indexes every commit CAR of the capture with a reused CAR; the verify case adds sha256
// verification of every block, to size what skipping it saves.
func BenchmarkParseCAR(b *testing.B) {
	cars := corpusCARs(b)
	for _, verify := range []bool{false, true} {
		b.Run(fmt.Sprintf("verify=%v", verify), func(b *testing.B) {
			b.ReportAllocs()
			var c dagcbor.CAR
			for b.Loop() {
				for _, data := range cars {
					if err := c.Parse(data); err != nil {
						b.Fatal(err)
					}
					if verify {
						if err := c.Verify(); err != nil {
							b.Fatal(err)
						}
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(cars)), "ns/commit")
		})
	}
}

// BenchmarkGoCAR is the baseline CAR reader: go-car into a map keyed by CID, as upstream bridges do.
func BenchmarkGoCAR(b *testing.B) {
	cars := corpusCARs(b)
	b.ReportAllocs()
	for b.Loop() {
		for _, data := range cars {
			r, err := car.NewCarReader(bytes.NewReader(data))
			if err != nil {
				b.Fatal(err)
			}
			m := map[string][]byte{}
			for {
				blk, err := r.Next()
				if err != nil {
					break
				}
				m[blk.Cid().KeyString()] = blk.RawData()
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(cars)), "ns/commit")
}
