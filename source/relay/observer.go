package relay

import "time"

// Observer receives the Source's measurements, as kgo's hooks do: the Source counts, the caller decides where
// the numbers go (atkafka's metrics.Relay sends them to Prometheus). Its types are Go's own, so an
// implementation need not import this package. Config.Observer nil observes nothing.
type Observer interface {
	// Read reports the seq of the frame just read; Committed the seq up to which Kafka acknowledged every frame.
	Read(seq int64)
	Committed(seq int64)
	// Lag reports how far a frame read is behind its event time (sampled: at most every second per worker).
	Lag(time.Duration)
	// Delivered reports how long a frame took from being read to Kafka acknowledging its records.
	Delivered(time.Duration)
	// DecodeError counts a frame that could not be decoded, by kind; DeadLettered counts a dead letter, by
	// reason.
	DecodeError(kind string)
	DeadLettered(reason string)
	// Reconnect counts a reconnection to the relay, by reason.
	Reconnect(reason string)
	// SourceEvent counts an occurrence of the stream worth counting ("seq_gap", "outdated_cursor",
	// "error_frame", ...).
	SourceEvent(kind string)
}

// nopObserver is the Observer of a Config without one.
type nopObserver struct{}

func (nopObserver) Read(int64)              {}
func (nopObserver) Committed(int64)         {}
func (nopObserver) Lag(time.Duration)       {}
func (nopObserver) Delivered(time.Duration) {}
func (nopObserver) DecodeError(string)      {}
func (nopObserver) DeadLettered(string)     {}
func (nopObserver) Reconnect(string)        {}
func (nopObserver) SourceEvent(string)      {}
