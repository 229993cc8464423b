package format

import (
	"fmt"
	"sync"
	"time"
)

// SnowflakeEpoch is the Discord/Osprey epoch, 2015-01-01T00:00:00Z, in Unix milliseconds.
const SnowflakeEpoch = 1420070400000

// MaxSnowflakeWorker is the largest worker id: 10 bits, the 5-bit datacenter and 5-bit worker fields together.
const MaxSnowflakeWorker = 1<<10 - 1

// Snowflake generates unique 64-bit ids laid out as Osprey expects: 41 bits of milliseconds since
// SnowflakeEpoch, 10 bits of worker id (datacenter << 5 | worker), 12 bits of sequence.
//
// Ids never repeat within a process: when 4096 ids are drawn in one millisecond, Next waits for the next one.
// Time comes from the monotonic clock, so a wall-clock step back cannot make ids repeat while the process runs.
// Across restarts uniqueness rests on the wall clock not going back by more than the restart took; give every
// concurrently running instance its own worker id.
type Snowflake struct {
	mu     sync.Mutex
	worker int64
	start  time.Time // wall and monotonic reading at creation
	lastMs int64
	seq    int64
	sleep  func(time.Duration)
}

// NewSnowflake returns a generator for the given worker id (0 to MaxSnowflakeWorker).
func NewSnowflake(worker int) (*Snowflake, error) {
	if worker < 0 || worker > MaxSnowflakeWorker {
		return nil, fmt.Errorf("snowflake worker id %d out of range 0-%d", worker, MaxSnowflakeWorker)
	}
	return &Snowflake{worker: int64(worker), start: time.Now(), lastMs: -1, sleep: time.Sleep}, nil
}

func (s *Snowflake) nowMs() int64 {
	// time.Since uses the monotonic reading; adding it to the start's wall time gives a clock that never steps back.
	return s.start.UnixMilli() + time.Since(s.start).Milliseconds() - SnowflakeEpoch
}

// Next returns a new id.
func (s *Snowflake) Next() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	ms := s.nowMs()
	if ms == s.lastMs {
		s.seq = (s.seq + 1) & 0xfff
		for s.seq == 0 && ms <= s.lastMs { // sequence exhausted in this millisecond
			s.sleep(100 * time.Microsecond)
			ms = s.nowMs()
		}
	} else {
		s.seq = 0
	}
	s.lastMs = ms
	return ms<<22 | s.worker<<12 | s.seq
}

// SnowflakeTime returns the creation time encoded in a snowflake id.
func SnowflakeTime(id int64) time.Time {
	return time.UnixMilli(id>>22 + SnowflakeEpoch)
}
