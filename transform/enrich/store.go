package enrich

import (
	"context"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
)

// result is how one lookup ended. Its values index the status label of the request metrics.
type result uint8

const (
	resOK       result = iota
	resNotFound        // definitive absence (404): cached for NotFoundTTL
	resError           // transient failure: remembered for FailureTTL so a hot DID does not retry per event
	resTimeout         // the deadline passed first: treated like resError
	// resBudget: the rate limit or the concurrency bound could not grant a request before the event's deadline,
	// so none was sent. Not cached: the next event of the account asks again, and may find room.
	resBudget
	numResults
)

var resultLabels = [numResults]string{"ok", "not_found", "error", "timeout", "budget"}

// requestCounters holds the Observer's counters of one kind's lookups, by result and cached (index 1), resolved
// once so that counting a cache hit on the per-event path is one call instead of a label lookup.
type requestCounters [numResults][2]func()

func newRequestCounters(obs Observer, kind string) *requestCounters {
	var c requestCounters
	for r := range numResults {
		c[r][0] = obs.Lookups(kind, resultLabels[r], false)
		c[r][1] = obs.Lookups(kind, resultLabels[r], true)
	}
	return &c
}

func (c *requestCounters) inc(r result, cached bool) {
	i := 0
	if cached {
		i = 1
	}
	c[r][i]()
}

// entry is one cached answer, until expires: the store's TTL for an answer, shorter ones for absences and
// failures. Expiry is checked when the entry is read, so the caches run no goroutine of their own (the expiring
// LRU of golang-lru starts one per cache that never exits); the LRU bound keeps their size.
type entry[V any] struct {
	val     V
	res     result
	expires time.Time
}

// flight is one fetch in progress, shared by every caller that missed the same key meanwhile.
type flight[V any] struct {
	done chan struct{}
	ent  *entry[V] // set before done is closed
	// stale (guarded by store.mu) keeps the answer out of the cache: the key was invalidated while the fetch ran,
	// or is still settling (store.settling) from an invalidation just before it started.
	stale bool
}

// store is a bounded, expiring cache in front of one kind of lookup, with one fetch in flight per key. Fetches
// run detached from the callers (bounded by fetchTimeout and the Enricher's lifetime) so that a caller giving
// up does not waste the request: its answer still warms the cache for the next event.
type store[V any] struct {
	kind         string
	lru          *lru.Cache[string, *entry[V]]
	ttl          time.Duration
	negTTL       time.Duration
	failTTL      time.Duration
	fetchTimeout time.Duration
	base         context.Context
	// fetch looks key up. deadline is when the event that asked stops waiting: a request that cannot be sent in
	// time to answer before it is not sent (resBudget). ctx outlives it, so a slow answer still fills the cache.
	fetch func(ctx context.Context, key string, deadline time.Time) (V, result)
	reqs  *requestCounters
	size  func(entries int)
	// settling holds the keys invalidated less than a settle period ago (nil: none is kept). Their answers serve
	// the lookups that asked but are not cached, for an upstream that learns of a change after atkafka does: the
	// AppView indexes a profile change from the firehose too, so the fetch made when atkafka sees the change
	// usually gets the old profile, which caching would then serve for the whole TTL.
	settling *lru.Cache[string, time.Time] // key → when it settles
	settle   time.Duration

	mu      sync.Mutex
	flights map[string]*flight[V]
}

func newStore[V any](kind string, size int, ttl, negTTL, failTTL, fetchTimeout time.Duration, base context.Context,
	reqs *requestCounters, sizeOf func(entries int), fetch func(context.Context, string, time.Time) (V, result)) *store[V] {
	return &store[V]{
		kind:         kind,
		lru:          mustLRU[*entry[V]](size),
		ttl:          ttl,
		negTTL:       negTTL,
		failTTL:      failTTL,
		fetchTimeout: fetchTimeout,
		base:         base,
		fetch:        fetch,
		reqs:         reqs,
		size:         sizeOf,
		flights:      map[string]*flight[V]{},
	}
}

// settleAfterInvalidate makes answers fetched within settle of an invalidation of their key uncached. size
// bounds how many keys are remembered as settling; beyond it the oldest settle early, and are cached as before.
func (s *store[V]) settleAfterInvalidate(size int, settle time.Duration) {
	s.settling, s.settle = mustLRU[time.Time](size), settle
}

// mustLRU makes an LRU of size entries; New fails only for a size below 1, which the Config defaults rule out.
func mustLRU[V any](size int) *lru.Cache[string, V] {
	c, err := lru.New[string, V](max(size, 1))
	if err != nil {
		panic(err)
	}
	return c
}

// cached returns the cached answer for key, if any is still valid, and counts the hit.
func (s *store[V]) cached(key string) (*entry[V], bool) {
	e, ok := s.lru.Get(key)
	if !ok || !e.valid() {
		return nil, false
	}
	s.reqs.inc(e.res, true)
	return e, true
}

func (e *entry[V]) valid() bool { return time.Now().Before(e.expires) }

// get returns key's answer, cached or else fetched, and whether it was cached. A fetch is awaited until ctx ends
// or, when timeout is positive, for timeout at most (set up on a miss only: hits are the per-event path). A nil
// answer means the wait ended first.
func (s *store[V]) get(ctx context.Context, key string, timeout time.Duration) (*entry[V], bool) {
	if e, ok := s.cached(key); ok {
		return e, true
	}
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(s.fetchTimeout)
	}
	return s.await(ctx, s.start(key, deadline)), false
}

// closed is the done channel of flights that were over before they started.
var closed = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// start returns the flight fetching key, starting one for an event that waits until deadline unless one is
// already running.
func (s *store[V]) start(key string, deadline time.Time) *flight[V] {
	s.mu.Lock()
	defer s.mu.Unlock()
	if fl := s.flights[key]; fl != nil {
		return fl
	}
	// A flight may have finished between the caller's cache miss and now. It stored its answer under s.mu,
	// so looking again here is enough to avoid a second request.
	if e, ok := s.lru.Peek(key); ok && e.valid() {
		s.reqs.inc(e.res, true)
		return &flight[V]{done: closed, ent: e}
	}
	fl := &flight[V]{done: make(chan struct{})}
	if s.settling != nil {
		until, ok := s.settling.Peek(key)
		fl.stale = ok && time.Now().Before(until)
	}
	s.flights[key] = fl
	go s.run(key, deadline, fl)
	return fl
}

func (s *store[V]) run(key string, deadline time.Time, fl *flight[V]) {
	ctx, cancel := context.WithTimeout(s.base, s.fetchTimeout)
	v, res := s.fetch(ctx, key, deadline)
	cancel()
	ent := &entry[V]{val: v, res: res, expires: time.Now().Add(s.ttl)}
	switch res {
	case resNotFound:
		ent.expires = time.Now().Add(s.negTTL)
	case resError, resTimeout:
		ent.expires = time.Now().Add(s.failTTL)
	}
	s.mu.Lock()
	// Adding under s.mu orders this against invalidate: an answer fetched before an invalidation never
	// lands in the cache after it.
	if !fl.stale && res != resBudget && s.base.Err() == nil {
		s.lru.Add(key, ent)
	}
	if s.flights[key] == fl {
		delete(s.flights, key)
	}
	s.mu.Unlock()
	s.size(s.lru.Len())
	fl.ent = ent
	close(fl.done)
}

// await waits for fl until ctx is done. A nil answer means the caller's deadline passed first.
func (s *store[V]) await(ctx context.Context, fl *flight[V]) *entry[V] {
	select {
	case <-fl.done:
		return fl.ent
	case <-ctx.Done():
		return nil
	}
}

// invalidate drops key's cached answer and detaches a running fetch, so the next lookup fetches afresh; with
// settleAfterInvalidate, so do the lookups during the settle period.
func (s *store[V]) invalidate(key string) {
	s.mu.Lock()
	s.lru.Remove(key)
	if s.settling != nil {
		s.settling.Add(key, time.Now().Add(s.settle))
	}
	if fl := s.flights[key]; fl != nil {
		fl.stale = true
		delete(s.flights, key)
	}
	s.mu.Unlock()
	s.size(s.lru.Len())
}
