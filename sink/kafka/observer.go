package kafka

// Observer receives the producers' measurements, as kgo's hooks do: the producer counts, the caller decides
// where the numbers go (atkafka's metrics.Kafka sends them to Prometheus). Its types are Go's own, so an
// implementation need not import this package. Config.Observer nil observes nothing.
type Observer interface {
	// Produced counts n records Kafka acknowledged (status "ok") or that failed for good ("error").
	Produced(status string, n int)
	// InFlight returns the function that adds to a topic's records and bytes handed to Kafka and not yet
	// acknowledged. It is called once per topic, and what it returns once per record: it resolves its
	// labels up front.
	InFlight(topic string) func(records, bytes int64)
	// Transaction counts a Kafka transaction of TxnProducer by status ("committed" or "aborted").
	Transaction(status string)
}

// The statuses Observer.Produced and Observer.Transaction count.
const (
	producedOK    = "ok"
	producedError = "error"
	txnCommitted  = "committed"
	txnAborted    = "aborted"
)

// nopObserver is the Observer of a Config without one.
type nopObserver struct{}

func (nopObserver) Produced(string, int)                       {}
func (nopObserver) InFlight(string) func(records, bytes int64) { return nopInFlight }
func (nopObserver) Transaction(string)                         {}

func nopInFlight(int64, int64) {}
