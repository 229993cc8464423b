package tap

import (
	"context"
	"time"

	"github.com/atkafka/atkafka/sink"
	"github.com/atkafka/atkafka/transform/format"
)

// handle turns one job into a sink message, or acks it at once when a filter drops it. It returns when the
// message is queued in the sink, not when Kafka acknowledged it: the ack follows from Done, on another goroutine.
func (ss *session) handle(ctx context.Context, j *job) {
	switch {
	case j.ev == nil:
		ss.deadLetter(ctx, j)
	case j.ev.Type == "record":
		ss.handleRecord(ctx, j)
	default:
		ss.handleIdentity(ctx, j)
	}
}

func (ss *session) handleRecord(ctx context.Context, j *job) {
	r := j.ev.Record
	if r.Live {
		if lag, ok := liveLag(r, time.Now()); ok {
			ss.src.obs.Lag(lag)
		}
	}
	ev := recordEvent(r, j.received)
	p := ss.src.cfg.Pipeline
	if !p.KeepCollection(r.Collection) || !p.KeepAccount(r.DID, &j.pend.Meta) {
		ss.filtered(j)
		return
	}
	ev.Metadata = p.AppendMetadata(nil, &j.pend, 1)
	ss.send(ctx, j, []sink.Record{ss.record(ev, recordHeaders(r))}, nil)
}

func (ss *session) handleIdentity(ctx context.Context, j *job) {
	id := j.ev.Identity
	evs := identityEvents(id, j.received)
	p := ss.src.cfg.Pipeline
	if !p.KeepAccount(id.DID, &j.pend.Meta) {
		ss.filtered(j)
		return
	}
	meta := p.AppendMetadata(nil, &j.pend, len(evs))
	headers := identityHeaders(id)
	records := make([]sink.Record, len(evs))
	for i, ev := range evs {
		ev.Metadata = meta
		records[i] = ss.record(ev, headers)
	}
	ss.send(ctx, j, records, nil)
}

// record renders ev as a Kafka record keyed by its DID.
func (ss *session) record(ev *format.Event, headers []sink.Header) sink.Record {
	return sink.Record{
		Key:     []byte(ev.DID),
		Value:   ss.src.cfg.Pipeline.AppendValue(nil, ev),
		Headers: headers,
	}
}

// filtered acks an event a filter dropped. The filters look nothing up (the event's metadata was prepared
// before it reached the worker), so their answer is final.
func (ss *session) filtered(j *job) { ss.ack(j.id) }

// deadLetter writes an undecodable message to the dead-letter topic; its ack, when its id is known, follows the
// dead-letter record's delivery.
func (ss *session) deadLetter(ctx context.Context, j *job) {
	ss.src.obs.DecodeError(j.reason)
	ss.src.log.Warn("dead-lettering a Tap event that could not be decoded",
		"reason", j.reason, "error", j.err, "id", j.id, "id_known", j.hasID, "did", j.did, "bytes", len(j.raw))
	dl := sink.DeadLetter{Source: "tap", Reason: j.reason, Err: j.err, DID: j.did, Raw: j.raw}
	ss.send(ctx, j, []sink.Record{dl.Record(ss.src.cfg.DeadLetterTopic)}, func() {
		ss.src.obs.DeadLettered(j.reason)
	})
}

// send hands records to the sink; Done acks the job once Kafka acknowledged them all. delivered, when not nil,
// runs on success before the ack.
func (ss *session) send(ctx context.Context, j *job, records []sink.Record, delivered func()) {
	ss.inflight.Add()
	msg := &sink.Message{Records: records, Done: func(err error) {
		defer ss.inflight.Settle()
		if err != nil {
			ss.src.obs.Acks(acksKafkaError, 1)
			if j.hasID {
				ss.src.settled.Add(1) // left for Tap to redeliver
			}
			ss.src.kafkaFailed(err)
			return
		}
		ss.src.obs.Delivered(time.Since(j.received))
		if delivered != nil {
			delivered()
		}
		if j.hasID {
			ss.ack(j.id)
		}
	}}
	if err := ss.src.cfg.Sink.Send(ctx, msg); err != nil {
		// Only when ctx ended or the sink closed: the event stays unacked and Tap sends it again.
		ss.inflight.Settle()
	}
}
