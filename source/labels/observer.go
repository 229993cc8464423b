package labels

import "time"

// Observer receives the Source's measurements, as kgo's hooks do: the Source counts, the caller decides where
// the numbers go (atkafka's metrics.Labels sends them to Prometheus). Its types are Go's own, so an
// implementation need not import this package. Config.Observer nil observes nothing.
//
// The methods that return a function are called once per labeler, and what they return per frame: an
// implementation resolves the labeler's labels up front.
type Observer interface {
	// Cursor returns the functions that report a labeler's newest seq read, and the seq up to which Kafka
	// acknowledged every label.
	Cursor(labeler string) (read, committed func(seq int64))
	// Connected returns the function that reports whether a labeler's subscribeLabels is connected.
	Connected(labeler string) func(bool)
	// Lag returns the function that reports how far a labeler's newest label Kafka acknowledged is behind its
	// cts.
	Lag(labeler string) func(time.Duration)
	// Reconnect counts a reconnection to a labeler, by reason.
	Reconnect(labeler, reason string)
	// Produced counts a label Kafka acknowledged, by its value (unbounded: the implementation bounds it).
	Produced(labeler, val string)
	// Verified counts a label checked by --verify-labels, by result (ok|failed|unsigned|key_unavailable).
	Verified(labeler, result string)
	// Delivered reports how long a frame took from being read to Kafka acknowledging its records.
	Delivered(time.Duration)
	// DecodeError counts a frame that could not be decoded, by kind; DeadLettered counts a dead letter, by
	// reason.
	DecodeError(kind string)
	DeadLettered(reason string)
	// SourceEvent counts an occurrence of a stream worth counting ("seq_regression", "outdated_cursor",
	// "error_frame", ...).
	SourceEvent(kind string)
}

// nopObserver is the Observer of a Config without one.
type nopObserver struct{}

func (nopObserver) Cursor(string) (read, committed func(int64)) { return nopSeq, nopSeq }
func (nopObserver) Connected(string) func(bool)                 { return func(bool) {} }
func (nopObserver) Lag(string) func(time.Duration)              { return func(time.Duration) {} }
func (nopObserver) Reconnect(string, string)                    {}
func (nopObserver) Produced(string, string)                     {}
func (nopObserver) Verified(string, string)                     {}
func (nopObserver) Delivered(time.Duration)                     {}
func (nopObserver) DecodeError(string)                          {}
func (nopObserver) DeadLettered(string)                         {}
func (nopObserver) SourceEvent(string)                          {}

func nopSeq(int64) {}
