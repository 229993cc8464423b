package tap

import "time"

// Observer receives the Source's measurements, as kgo's hooks do: the Source counts, the caller decides where the
// numbers go (atkafka's metrics.Tap sends them to Prometheus). Its types are Go's own, so an implementation need
// not import this package. Config.Observer nil observes nothing.
type Observer interface {
	// Read reports the id of the event just read.
	Read(id uint64)
	// Acked reports the id of the last event of a batch of acks written to Tap. Tap's ids are not ordered across
	// DIDs, so it only shows that acks move.
	Acked(id uint64)
	// Lag reports how far the newest live record read is behind its commit time.
	Lag(time.Duration)
	// Delivered reports how long an event took from being read to Kafka acknowledging its records.
	Delivered(time.Duration)
	// Acks counts n acks by fate: "ok" (written), "kafka_error" (not sent: Kafka failed the records, Tap
	// redelivers) or "disconnected" (not sent: the connection was gone).
	Acks(status string, n int)
	// DecodeError counts an event that could not be decoded, by reason; DeadLettered counts one once its
	// dead-letter record is in Kafka.
	DecodeError(reason string)
	DeadLettered(reason string)
	// Reconnect counts a reconnection to Tap, by reason ("dial", "read", ...).
	Reconnect(reason string)
}

// The fates Observer.Acks counts.
const (
	acksOK           = "ok"
	acksKafkaError   = "kafka_error"
	acksDisconnected = "disconnected"
)

// nopObserver is the Observer of a Config without one.
type nopObserver struct{}

func (nopObserver) Read(uint64)             {}
func (nopObserver) Acked(uint64)            {}
func (nopObserver) Lag(time.Duration)       {}
func (nopObserver) Delivered(time.Duration) {}
func (nopObserver) Acks(string, int)        {}
func (nopObserver) DecodeError(string)      {}
func (nopObserver) DeadLettered(string)     {}
func (nopObserver) Reconnect(string)        {}
