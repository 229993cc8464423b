package backfill

import (
	"context"

	"github.com/twmb/franz-go/pkg/kgo"
)

// txnClient is the exactly-once client: a group transact session, which aborts the open transaction when the
// group rebalances before it commits and fences an instance the group has moved on from (KIP-447).
type txnClient struct{ s *kgo.GroupTransactSession }

func newTxnClient(opts []kgo.Opt) (*txnClient, error) {
	s, err := kgo.NewGroupTransactSession(opts...)
	if err != nil {
		return nil, err
	}
	return &txnClient{s}, nil
}

func (c *txnClient) poll(ctx context.Context, n int) kgo.Fetches { return c.s.PollRecords(ctx, n) }
func (c *txnClient) begin() error                                { return c.s.Begin() }
func (c *txnClient) produce(ctx context.Context, r *kgo.Record, promise func(*kgo.Record, error)) {
	c.s.Produce(ctx, r, promise)
}
func (c *txnClient) end(ctx context.Context, _ []*kgo.Record, commit bool) (bool, error) {
	return c.s.End(ctx, kgo.TransactionEndTry(commit))
}
func (c *txnClient) close() { c.s.Close() }

// plainClient is the at-least-once client: records are flushed, then the batch's offsets committed; rebalances
// wait for the batch (BlockRebalanceOnPoll), so a partition moves only between batches. A crash between the
// flush and the commit repeats the batch.
type plainClient struct{ cl *kgo.Client }

func newPlainClient(opts []kgo.Opt) (*plainClient, error) {
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, err
	}
	return &plainClient{cl}, nil
}

func (c *plainClient) poll(ctx context.Context, n int) kgo.Fetches {
	f := c.cl.PollRecords(ctx, n)
	if f.NumRecords() == 0 {
		c.cl.AllowRebalance() // no batch follows whose end would allow it
	}
	return f
}
func (c *plainClient) begin() error { return nil }
func (c *plainClient) produce(ctx context.Context, r *kgo.Record, promise func(*kgo.Record, error)) {
	c.cl.Produce(ctx, r, promise)
}

func (c *plainClient) end(ctx context.Context, polled []*kgo.Record, commit bool) (bool, error) {
	defer c.cl.AllowRebalance()
	if err := c.cl.Flush(ctx); err != nil {
		return false, err
	}
	if !commit {
		// Records already produced stay (at least once); rewinding makes the batch load again.
		c.cl.SetOffsets(rewind(polled))
		return false, nil
	}
	return true, c.cl.CommitRecords(ctx, polled...)
}

func (c *plainClient) close() { c.cl.Close() }

// rewind returns, per partition, the offset of the first polled record, for SetOffsets.
func rewind(polled []*kgo.Record) map[string]map[int32]kgo.EpochOffset {
	out := map[string]map[int32]kgo.EpochOffset{}
	for _, r := range polled {
		ps := out[r.Topic]
		if ps == nil {
			ps = map[int32]kgo.EpochOffset{}
			out[r.Topic] = ps
		}
		if cur, ok := ps[r.Partition]; !ok || r.Offset < cur.Offset {
			ps[r.Partition] = kgo.EpochOffset{Epoch: r.LeaderEpoch, Offset: r.Offset}
		}
	}
	return out
}
