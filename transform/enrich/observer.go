package enrich

import "time"

// Observer receives the Enricher's measurements, as kgo's hooks do: the Enricher counts, the caller decides where
// the numbers go (atkafka's metrics.Enrich sends them to Prometheus). Each method is called once per label
// combination, in New, and returns the function the Enricher then calls: counting a cache hit, on the per-event
// path, is one call with no label lookup. Its types are Go's own, so an implementation need not import this
// package. Config.Observer nil observes nothing.
type Observer interface {
	// Lookups returns what counts one lookup of kind ("doc": an account's document and creation time, "profile")
	// that ended with status ("ok", "not_found", "error", "timeout", "budget"), answered from the cache or not.
	Lookups(kind, status string, cached bool) func()
	// Failures returns what counts one event left without its kind ("doc", "audit", "profile") of metadata.
	Failures(kind string) func()
	// CacheSize returns what reports how many entries kind's cache ("doc", "profile") holds.
	CacheSize(kind string) func(entries int)
	// Requests returns what reports how long one HTTP request to endpoint ("plc", "did:web", "api") that ended
	// with status took.
	Requests(endpoint, status string) func(time.Duration)
	// InFlight returns what adds delta (1 when a request starts, -1 when it ends) to endpoint's requests in flight.
	InFlight(endpoint string) func(delta int)
}

// nopObserver is the Observer of a Config without one.
type nopObserver struct{}

func (nopObserver) Lookups(string, string, bool) func()         { return func() {} }
func (nopObserver) Failures(string) func()                      { return func() {} }
func (nopObserver) CacheSize(string) func(int)                  { return func(int) {} }
func (nopObserver) Requests(string, string) func(time.Duration) { return func(time.Duration) {} }
func (nopObserver) InFlight(string) func(int)                   { return func(int) {} }
