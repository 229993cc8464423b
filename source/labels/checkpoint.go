package labels

import (
	"context"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/atkafka/atkafka/ack"
	"github.com/atkafka/atkafka/cursor"
)

// persistInterval is how often a labeler's committed cursor is written: a crash re-reads at most this much more
// than was in flight.
const persistInterval = time.Second

// checkpoint is one labeler's cursor bookkeeping, all of it behind this type: frames' seqs in read order on an
// ordered watermark, the seq up to which Kafka acknowledged everything, and its persistence. It is what the
// relay source does with the same parts, kept thin so that it moves onto a shared checkpoint package whole.
type checkpoint struct {
	wm        *ack.Watermark[int64]
	store     cursor.Store
	committed atomic.Int64 // noCursor until a frame was acknowledged, when starting at the tip
	progress  atomic.Int64 // Unix nanoseconds when committed last moved
	gauge     prometheus.Gauge
}

func newCheckpoint(gauge prometheus.Gauge) *checkpoint {
	c := &checkpoint{gauge: gauge}
	c.wm = ack.NewWatermark(c.advance)
	return c
}

// open sets where the cursor is kept and where it starts, before anything is added.
func (c *checkpoint) open(store cursor.Store, start int64) {
	c.store = store
	c.committed.Store(start)
}

// add records the next frame read, at seq pos; Done its ticket once Kafka holds the frame's records.
func (c *checkpoint) add(pos int64) ack.Ticket { return c.wm.Add(pos) }

// done says that the frame of t is in Kafka.
func (c *checkpoint) done(t ack.Ticket) { c.wm.Done(t) }

// pending is how many frames were added and are not yet done, or are done behind one that is not.
func (c *checkpoint) pending() int { return c.wm.Pending() }

func (c *checkpoint) advance(pos int64) {
	if pos > c.committed.Load() {
		c.committed.Store(pos)
		c.progress.Store(time.Now().UnixNano())
		c.gauge.Set(float64(pos))
	}
}

// value is what the store should hold: nothing before the first frame was acknowledged at the tip.
func (c *checkpoint) value() (string, bool) {
	v := c.committed.Load()
	return strconv.FormatInt(v, 10), v >= 0
}

// persist saves the committed cursor every persistInterval and once more when ctx ends.
func (c *checkpoint) persist(ctx context.Context, log *slog.Logger) error {
	return cursor.Persist(ctx, c.store, persistInterval, c.value, log)
}
