package relay

import (
	"time"

	"github.com/atkafka/atkafka/sink"
	"github.com/atkafka/atkafka/transform"
	"github.com/atkafka/atkafka/transform/frame"
)

// maxKeptBuffer is the largest buffer a job keeps when it goes back to the pool: an outlier frame must not pin
// megabytes in every slot for the rest of the run.
const maxKeptBuffer = 256 << 10

// job is one frame on its way from the reader to Kafka. Jobs are pooled, and the pool's size is the in-flight
// limit: the reader cannot read a frame without a free job. Everything the frame's records point into (the
// message bytes, the rendered values, the headers) belongs to the job, so it stays valid until Done and is
// reused without allocating afterwards.
type job struct {
	src *Source

	raw      []byte // the websocket message; frame and record keys alias it
	frame    frame.Frame
	received time.Time
	// seq is the frame's own seq (0 when unknown), did its DID ("" when unknown): both for logs and dead letters.
	seq int64
	did []byte
	// bad is set when the frame cannot become records: the worker then renders a dead letter instead.
	bad *problem
	// truncated is how many bytes the reader had to drop from raw (frames over the size limit).
	truncated int
	// pend carries the frame through the pipeline's lookups; its Meta is the frame's metadata once ready.
	pend transform.Pending

	msg     sink.Message
	records []sink.Record
	headers []sink.Header
	values  []byte // rendered record values and header values
	// stage counts delivery attempts: a failed message is retried as a dead letter, then as a truncated one.
	stage   stage
	failure error       // why Kafka refused the last delivery
	done    func(error) // j.finish, bound once so that sending allocates no closure
}

// problem is why a frame, or one op of it, could not become records.
type problem struct {
	kind string // bounded: a metric label and the dead letter's reason
	err  error
}

// reset prepares a job that went back to the pool for the next frame.
func (j *job) reset() {
	if cap(j.raw) > maxKeptBuffer {
		j.raw = nil
	}
	if cap(j.values) > maxKeptBuffer {
		j.values = nil
	}
	j.raw, j.values = j.raw[:0], j.values[:0]
	clear(j.records) // drop references into the old buffers
	j.records, j.headers = j.records[:0], j.headers[:0]
	j.seq, j.did, j.bad, j.truncated, j.stage, j.failure = 0, nil, nil, 0, stageRecords, nil
	j.msg = sink.Message{Done: j.done}
}

// pool hands out at most its capacity of jobs. Blocking in get is the backpressure that stops the reader.
type pool struct {
	free chan *job
}

func newPool(src *Source, n int) *pool {
	p := &pool{free: make(chan *job, n)}
	for range n {
		j := &job{src: src}
		j.done = j.finish
		j.pend.Ready = j.ready
		j.reset()
		p.free <- j
	}
	return p
}

// put returns j; it never blocks since no more than the capacity of jobs exist.
func (p *pool) put(j *job) {
	j.reset()
	p.free <- j
}

// inFlight is how many jobs are out: read and not yet acknowledged (or never to be).
func (p *pool) inFlight() int { return cap(p.free) - len(p.free) }
