package ozone

import "time"

// Observer receives the Source's measurements, as kgo's hooks do: the Source counts, the caller decides where
// the numbers go (atkafka's metrics.Ozone sends them to Prometheus). Its types are Go's own, so an
// implementation need not import this package. Config.Observer nil observes nothing.
type Observer interface {
	// Read reports an event just read: its action name (as in the record) and id.
	Read(action string, id int64)
	// Lag reports how far the newest event read is behind its creation time; zero once caught up.
	Lag(time.Duration)
	// Polled reports how long one queryEvents request took.
	Polled(time.Duration)
	// Delivered reports how long an event took from being read to Kafka acknowledging it.
	Delivered(time.Duration)
	// Committed reports the id and creation time of the last event up to which Kafka acknowledged everything.
	Committed(id int64, createdAt time.Time)
	// DecodeError counts an event that could not be read whole, by kind; DeadLettered counts one sent to the
	// dead-letter topic.
	DecodeError(kind string)
	DeadLettered(kind string)
	// Auth counts a session login or refresh (kind), and whether it worked.
	Auth(kind string, ok bool)
}

// nopObserver is the Observer of a Config without one.
type nopObserver struct{}

func (nopObserver) Read(string, int64)         {}
func (nopObserver) Auth(string, bool)          {}
func (nopObserver) Lag(time.Duration)          {}
func (nopObserver) Polled(time.Duration)       {}
func (nopObserver) Delivered(time.Duration)    {}
func (nopObserver) Committed(int64, time.Time) {}
func (nopObserver) DecodeError(string)         {}
func (nopObserver) DeadLettered(string)        {}
