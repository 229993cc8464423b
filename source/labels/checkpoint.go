package labels

import (
	"strconv"
	"time"

	"github.com/atkafka/atkafka/checkpoint"
	"github.com/atkafka/atkafka/cursor"
)

// saveInterval is how often a labeler's committed cursor is written: a crash re-reads at most this much more
// than was in flight.
const saveInterval = time.Second

// openCheckpoint creates the labeler's checkpoint, with where the cursor is kept and where it starts, before
// anything is read.
func (l *labeler) openCheckpoint(store cursor.Store, start int64) {
	l.committed.Store(start)
	l.cp = checkpoint.New(checkpoint.Config[int64]{Sink: l.sink(), Store: store, Cursor: seqCursor,
		SaveEvery: saveInterval, OnAdvance: l.advance, Logger: l.log})
	l.cp.Resume(start)
}

// advance is the checkpoint's OnAdvance: every frame up to pos is in Kafka.
func (l *labeler) advance(pos int64) {
	if pos > l.committed.Load() {
		l.committed.Store(pos)
		l.committedSeq(pos)
	}
}

// seqCursor is the stored cursor of a position: its seq; none before the first frame acknowledged at the tip.
func seqCursor(seq int64) (string, bool) { return strconv.FormatInt(seq, 10), seq >= 0 }
