package backfill

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"

	"github.com/bluesky-social/indigo/atproto/atdata"
	"github.com/bluesky-social/indigo/atproto/repo"
	"github.com/ipfs/go-cid"

	"github.com/atkafka/atkafka/source/backfill/backfilltest"
)

// benchRepo is one repository of 2,000 records, the size where per-record costs dominate.
func benchRepo(b *testing.B) *backfilltest.Repo {
	net, err := backfilltest.Generate([]int{2000})
	if err != nil {
		b.Fatal(err)
	}
	return net.Repos[0]
}

// BenchmarkFloor is the path Run takes: the dagcbor CAR index over the bytes as read, the MST walked in place,
// records transcoded straight to JSON.
func BenchmarkFloor(b *testing.B) {
	r := benchRepo(b)
	b.SetBytes(int64(len(r.CAR)))
	for b.Loop() {
		if _, err := Floor([][]byte{r.CAR}, []string{r.DID}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(r.Records)), "ns/record")
}

// BenchmarkIndigoRepo is the alternative measured for issue 15: indigo's atproto/repo loads the CAR into its
// blockstore and MST, then each record goes through atdata to JSON.
func BenchmarkIndigoRepo(b *testing.B) {
	r := benchRepo(b)
	b.SetBytes(int64(len(r.CAR)))
	ctx := context.Background()
	for b.Loop() {
		_, rp, err := repo.LoadRepoFromCAR(ctx, bytes.NewReader(r.CAR))
		if err != nil {
			b.Fatal(err)
		}
		err = rp.MST.Walk(func(key []byte, value cid.Cid) error {
			blk, err := rp.RecordStore.Get(ctx, value)
			if err != nil {
				return err
			}
			d, err := atdata.UnmarshalCBOR(blk.RawData())
			if err != nil {
				return err
			}
			_, err = json.Marshal(d)
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(r.Records)), "ns/record")
}
