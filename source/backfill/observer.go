package backfill

import "time"

// Observer receives Plan's and Run's measurements, as kgo's hooks do: the backfill counts, the caller decides
// where the numbers go (atkafka's metrics.Backfill sends them to Prometheus). Its types are Go's own, so an
// implementation need not import this package. A nil Observer in PlanConfig or RunConfig observes nothing.
type Observer interface {
	// Planned counts work records (repositories) a plan committed to the work topic.
	Planned(repos int)
	// Repo counts a repository a run finished, by outcome (loaded|inactive|filtered|failed|retried), or put back:
	// with its rest to load in a later transaction (split), or not loaded within its batch's producing time
	// (deferred).
	Repo(outcome string)
	// Loading adds delta to the repositories being fetched or produced.
	Loading(delta int)
	// Fetched reports a repository downloaded: how long getRepo took (the host's limits included) and its size.
	Fetched(d time.Duration, bytes int)
	// FetchError counts a failed getRepo attempt, by reason.
	FetchError(reason string)
	// Produced counts the records of a loaded repository.
	Produced(records int)
	// DeadLettered counts a record written to the dead-letter topic, by reason.
	DeadLettered(reason string)
	// Transaction counts a batch's end, by status ("committed" or "aborted").
	Transaction(status string)
}

// nopObserver is the Observer of a configuration without one.
type nopObserver struct{}

func (nopObserver) Planned(int)                {}
func (nopObserver) Repo(string)                {}
func (nopObserver) Loading(int)                {}
func (nopObserver) Fetched(time.Duration, int) {}
func (nopObserver) FetchError(string)          {}
func (nopObserver) Produced(int)               {}
func (nopObserver) DeadLettered(string)        {}
func (nopObserver) Transaction(string)         {}

// observerOr is obs, or the nop observer when it is nil.
func observerOr(obs Observer) Observer {
	if obs == nil {
		return nopObserver{}
	}
	return obs
}
