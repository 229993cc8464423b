// Package enrich builds the eventMetadata object atkafka adds to every event that has a DID: the account's DID
// document, PDS host and handle, its creation time from the PLC audit log, and optionally its profile.
//
// It is built for the network's shape: thousands of accounts never seen before every second on a cold start,
// against a PLC and an AppView tens of milliseconds away with rate limits. So:
//   - one PLC request per account: the audit log, from which both the document and the creation time derive;
//   - lookups are cached (bounded LRUs with TTLs, ~0.5 KB per account) and shared (one request per key);
//   - Resolve never blocks: a source starts the lookups of an event as soon as it reads it and is called back
//     when they are done or the event's deadline passed, so many are in flight at once (Config.Concurrency) and
//     a slow account holds up no other;
//   - a request is only sent if the rate limit and the concurrency bound can grant it early enough to answer
//     before the asking event's deadline: under a budget too small for the arrival of new accounts, events go on
//     without metadata at the stream's speed while the whole budget still goes to lookups that finish in time;
//   - profiles are fetched 25 accounts a request (app.bsky.actor.getProfiles), gathered over ProfileBatchWait.
//
// Whatever is not known in time is left out of that event and counted (Observer.Failures per event, and the
// pipeline's metrics.EnrichMissing per record, by reason), and the fetch still completes in the background to
// serve the next event of the same account.
package enrich

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"golang.org/x/time/rate"
)

// Defaults of the Config fields left at their zero value.
const (
	DefaultPLCHost          = "https://plc.directory"
	DefaultCacheSize        = 500_000
	DefaultDocTTL           = time.Hour
	DefaultProfileCacheSize = 200_000
	DefaultProfileTTL       = 10 * time.Minute
	DefaultProfileSettle    = 10 * time.Second
	DefaultNotFoundTTL      = 5 * time.Minute
	DefaultFailureTTL       = 5 * time.Second
	DefaultPLCRate          = 100
	DefaultAPIRate          = 50
	DefaultLookupTimeout    = 2 * time.Second
	DefaultFetchTimeout     = 10 * time.Second
	DefaultConcurrency      = 256
	DefaultProfileBatchWait = 5 * time.Millisecond
)

// Config configures an Enricher. Every zero field takes its default (the Default constants), so Config{} works
// against plc.directory.
type Config struct {
	// PLCHost is the PLC directory's base URL; default DefaultPLCHost. Must be an http(s) URL serving
	// /{did}/log/audit (plc.directory and its mirrors do); a trailing slash is tolerated.
	PLCHost string
	// APIHost is the AppView's base URL (e.g. https://public.api.bsky.app). Empty: no profile lookups and no
	// profile field.
	APIHost string

	// DocCacheSize bounds the account cache (documents with creation times); default DefaultCacheSize. Documents
	// are also what the service filter and the verifier read, so this cache is the hottest.
	DocCacheSize int
	// DocTTL bounds how stale a document may get; default DefaultDocTTL. #identity events invalidate documents
	// early (InvalidateIdentity), so this only matters for changes the stream did not announce.
	DocTTL time.Duration
	// ProfileCacheSize bounds the profile cache; default DefaultProfileCacheSize.
	ProfileCacheSize int
	// ProfileTTL: default DefaultProfileTTL. Profile record and identity changes invalidate early
	// (InvalidateProfile); the TTL covers what the AppView derives from elsewhere (follower counts, labels).
	ProfileTTL time.Duration
	// ProfileSettle is how long after a profile record change (InvalidateProfile) the AppView's answers for that
	// account are used but not cached; default DefaultProfileSettle. The AppView indexes the change from the
	// firehose as atkafka sees it, typically some hundreds of milliseconds later, so the profile fetched for the
	// change's own event is usually the old one: cached, it would be served for ProfileTTL. Meanwhile each event
	// of the account asks the AppView again (within APIRate), so the first event after the AppView indexed the
	// change carries the new profile. An AppView lagging more than this can still leave an old profile cached.
	ProfileSettle time.Duration
	// NotFoundTTL is how long a definitive "not found" (HTTP 404) is cached, for every kind; default
	// DefaultNotFoundTTL. Shorter than the positive TTLs because a new account's document can appear just after
	// its first event.
	NotFoundTTL time.Duration
	// FailureTTL is how long a failed lookup (5xx, timeout) is remembered before the next attempt; default
	// DefaultFailureTTL. Without it a busy account whose lookup keeps failing would be asked for on every event.
	FailureTTL time.Duration

	// PLCRate limits requests to the PLC per second; default DefaultPLCRate. Negative: unlimited (a private PLC
	// mirror). did:web hosts get a separate limiter with the same rate.
	PLCRate float64
	// PLCBurst is the PLC limiter's bucket size; default max(1, PLCRate/5).
	PLCBurst int
	// APIRate limits requests to the AppView per second; default DefaultAPIRate. Negative: unlimited.
	APIRate float64
	// APIBurst is the AppView limiter's bucket size; default max(1, APIRate/5).
	APIBurst int
	// Concurrency bounds the requests in flight to each endpoint (the PLC, the AppView, did:web hosts); default
	// DefaultConcurrency. Negative: unbounded. At a PLC 50 ms away, 2,000 new accounts a second need about 100.
	Concurrency int
	// ProfileBatchWait is how long a profile lookup waits for others to share its getProfiles request (up to
	// 25 accounts); default DefaultProfileBatchWait.
	ProfileBatchWait time.Duration

	// LookupTimeout is the longest an event waits for its metadata, from when it was read; default
	// DefaultLookupTimeout. Events of one account are handled in order, so this is how long a cold or failing
	// lookup can hold that account back (and no other).
	LookupTimeout time.Duration
	// FetchTimeout bounds one background fetch including its retries; default DefaultFetchTimeout. It outlives
	// the event's LookupTimeout on purpose: a slow answer still fills the cache for the next event.
	FetchTimeout time.Duration

	// HTTPClient makes every request; default a client with a private transport. Deadlines come from
	// contexts, so its Timeout may stay zero.
	HTTPClient *http.Client
	// Logger receives failures at debug level (they can be per DID) and endpoint outages at warn; default
	// discards.
	Logger *slog.Logger
	// Observer receives the measurements (lookups, failures, cache sizes, requests); nil: none.
	Observer Observer
}

// Enricher looks up eventMetadata. It is safe for concurrent use; a slow lookup for one DID never holds up
// lookups for others (no lock is held across I/O).
type Enricher struct {
	timeout  time.Duration
	plcHost  string
	apiHost  string
	log      *slog.Logger
	cancel   context.CancelFunc
	plc      *endpoint
	api      *endpoint
	web      *endpoint
	webURL   func(host string) string // tests point did:web at a local server
	accounts *store[*account]
	profiles *store[[]byte] // nil without APIHost
	batcher  *profileBatcher
	docReqs  *requestCounters
	profReqs *requestCounters
	failures [numKinds]func()
}

// New validates cfg, applies defaults and returns an Enricher. Call Close when done to stop background fetches.
func New(cfg Config) (*Enricher, error) {
	cfg.PLCHost = cmp.Or(cfg.PLCHost, DefaultPLCHost)
	plcHost, err := baseURL(cfg.PLCHost)
	if err != nil {
		return nil, fmt.Errorf("PLC host: %w", err)
	}
	var apiHost string
	if cfg.APIHost != "" {
		if apiHost, err = baseURL(cfg.APIHost); err != nil {
			return nil, fmt.Errorf("API host: %w", err)
		}
	}
	positive := map[string]time.Duration{"DocTTL": cfg.DocTTL, "ProfileTTL": cfg.ProfileTTL,
		"ProfileSettle": cfg.ProfileSettle, "NotFoundTTL": cfg.NotFoundTTL, "FailureTTL": cfg.FailureTTL,
		"LookupTimeout": cfg.LookupTimeout, "FetchTimeout": cfg.FetchTimeout, "ProfileBatchWait": cfg.ProfileBatchWait}
	for name, d := range positive {
		if d < 0 {
			return nil, fmt.Errorf("%s must not be negative", name)
		}
	}
	if cfg.DocCacheSize < 0 || cfg.ProfileCacheSize < 0 {
		return nil, errors.New("cache sizes must not be negative")
	}
	def(&cfg.DocCacheSize, DefaultCacheSize)
	def(&cfg.ProfileCacheSize, DefaultProfileCacheSize)
	def(&cfg.DocTTL, DefaultDocTTL)
	def(&cfg.ProfileTTL, DefaultProfileTTL)
	def(&cfg.ProfileSettle, DefaultProfileSettle)
	def(&cfg.NotFoundTTL, DefaultNotFoundTTL)
	def(&cfg.FailureTTL, DefaultFailureTTL)
	def(&cfg.PLCRate, DefaultPLCRate)
	def(&cfg.APIRate, DefaultAPIRate)
	def(&cfg.Concurrency, DefaultConcurrency)
	def(&cfg.ProfileBatchWait, DefaultProfileBatchWait)
	def(&cfg.LookupTimeout, DefaultLookupTimeout)
	def(&cfg.FetchTimeout, DefaultFetchTimeout)
	if cfg.HTTPClient == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		// All requests go to one or two hosts, many at once: keep as many connections as may be in flight.
		t.MaxIdleConnsPerHost = max(64, cfg.Concurrency)
		cfg.HTTPClient = &http.Client{Transport: t}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	obs := cfg.Observer
	if obs == nil {
		obs = nopObserver{}
	}

	// A tenth of the deadline: at the defaults, an event queues at most 200 ms for a rate-limit token.
	maxWait := cfg.LookupTimeout / 10
	base, cancel := context.WithCancel(context.Background())
	e := &Enricher{
		timeout:  cfg.LookupTimeout,
		plcHost:  plcHost,
		apiHost:  apiHost,
		log:      cfg.Logger,
		cancel:   cancel,
		plc:      newEndpoint("plc", cfg.HTTPClient, limiter(cfg.PLCRate, cfg.PLCBurst), cfg.Concurrency, maxWait, cfg.Logger, obs, true),
		web:      newEndpoint("did:web", cfg.HTTPClient, limiter(cfg.PLCRate, cfg.PLCBurst), cfg.Concurrency, maxWait, cfg.Logger, obs, false),
		webURL:   func(host string) string { return "https://" + host + "/.well-known/did.json" },
		docReqs:  newRequestCounters(obs, "doc"),
		profReqs: newRequestCounters(obs, "profile"),
	}
	for k := range numKinds {
		e.failures[k] = obs.Failures(kindLabels[k])
	}
	e.accounts = newStore("doc", cfg.DocCacheSize, cfg.DocTTL, cfg.NotFoundTTL, cfg.FailureTTL, cfg.FetchTimeout, base, e.docReqs,
		obs.CacheSize("doc"), e.fetchAccount)
	if apiHost != "" {
		e.api = newEndpoint("api", cfg.HTTPClient, limiter(cfg.APIRate, cfg.APIBurst), cfg.Concurrency, maxWait, cfg.Logger, obs, true)
		e.batcher = newProfileBatcher(e, cfg.ProfileBatchWait, cfg.FetchTimeout)
		go e.batcher.run(base)
		e.profiles = newStore("profile", cfg.ProfileCacheSize, cfg.ProfileTTL, cfg.NotFoundTTL, cfg.FailureTTL, cfg.FetchTimeout, base, e.profReqs,
			obs.CacheSize("profile"), e.batcher.fetch)
		e.profiles.settleAfterInvalidate(cfg.ProfileCacheSize, cfg.ProfileSettle)
	}
	return e, nil
}

func def[T comparable](v *T, d T) {
	var zero T
	if *v == zero {
		*v = d
	}
}

func limiter(perSecond float64, burst int) *rate.Limiter {
	if perSecond < 0 {
		return rate.NewLimiter(rate.Inf, 0)
	}
	if burst <= 0 {
		burst = max(1, int(perSecond/5))
	}
	return rate.NewLimiter(rate.Limit(perSecond), burst)
}

// baseURL validates an http(s) base URL and strips trailing slashes so paths can be appended.
func baseURL(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", err
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", fmt.Errorf("%q: want an http or https URL", raw)
	}
	if u.Host == "" {
		return "", fmt.Errorf("%q: no host", raw)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return "", fmt.Errorf("%q: want a base URL without query, fragment or credentials", raw)
	}
	return strings.TrimRight(u.String(), "/"), nil
}

// Close stops background fetches. Lookups after Close find only what is cached.
func (e *Enricher) Close() { e.cancel() }

// LookupTimeout is how long an event may wait for its metadata: sources set each event's deadline to its
// receive time plus this.
func (e *Enricher) LookupTimeout() time.Duration { return e.timeout }

// Resolve fills m with did's metadata without waiting. When everything is cached it returns true and done is
// never called. Otherwise it starts the missing lookups (one per key, shared with other events) and returns
// false; done is then called exactly once, from another goroutine, when m is as complete as it gets before
// deadline: what was not known by then is left out and counted (Observer.Failures), and the lookups go on
// to fill the cache for the next events. A definitive absence (unknown DID, no profile) is not a failure.
func (e *Enricher) Resolve(did string, deadline time.Time, m *Metadata, done func()) bool {
	*m = Metadata{did: did}
	if did == "" {
		return true
	}
	acct, acctOK := e.accounts.cached(did)
	var prof *entry[[]byte]
	profOK := e.profiles == nil
	if !profOK {
		prof, profOK = e.profiles.cached(did)
	}
	if acctOK && profOK {
		e.fill(m, acct, prof)
		return true
	}
	var acctFl *flight[*account]
	var profFl *flight[[]byte]
	if !acctOK {
		acctFl = e.accounts.start(did, deadline)
	}
	if !profOK {
		profFl = e.profiles.start(did, deadline)
	}
	go func() {
		t := time.NewTimer(time.Until(deadline))
		defer t.Stop()
		var expired bool
		if acctFl != nil {
			acct = awaitUntil(acctFl, t.C, &expired)
		}
		if profFl != nil {
			prof = awaitUntil(profFl, t.C, &expired)
		}
		e.fill(m, acct, prof)
		done()
	}()
	return false
}

// awaitUntil returns fl's answer, or nil if the deadline timer fires first. Once it fired (*expired), later calls
// do not wait: a fired timer's channel delivers once, and waiting on it again would wait for the fetch instead.
func awaitUntil[V any](fl *flight[V], deadline <-chan time.Time, expired *bool) *entry[V] {
	select {
	case <-fl.done:
		return fl.ent
	default:
	}
	if *expired {
		return nil
	}
	select {
	case <-fl.done:
		return fl.ent
	case <-deadline:
		*expired = true
		return nil
	}
}

// fill sets m from the answers (nil: not in time) and counts what is missing.
func (e *Enricher) fill(m *Metadata, acct *entry[*account], prof *entry[[]byte]) {
	if r := missOf(acct); r != 0 {
		e.missing(m, kindDoc, r)
		if strings.HasPrefix(m.did, "did:plc:") {
			e.missing(m, kindAudit, r) // one request carries both
		}
	} else if acct.res == resOK {
		m.acct = acct.val
		if a := acct.val; a.createdAt != 0 {
			m.age, m.ageKnown = max(0, int64(time.Since(time.UnixMilli(a.createdAt))/time.Second)), true
		}
	}
	if e.profiles == nil {
		return
	}
	if r := missOf(prof); r != 0 {
		e.missing(m, kindProfile, r)
	} else if prof.res == resOK {
		m.profile = prof.val
	}
}

// missOf says why an answer (nil: none in time) leaves its piece out: 0 when it does not (an answer, or a
// definitive absence), else the failed result plus one, or missDeadline.
func missOf[V any](en *entry[V]) uint8 {
	switch {
	case en == nil:
		return missDeadline
	case en.res == resOK || en.res == resNotFound:
		return 0
	}
	return uint8(en.res) + 1
}

// missing records in m that a kind is missing for reason r, and counts it.
func (e *Enricher) missing(m *Metadata, kind int, r uint8) {
	m.missing[kind] = r
	e.failures[kind]()
	e.log.Debug("enrich: metadata incomplete", "kind", kindLabels[kind], "did", m.did, "reason", missReason(r))
}

// missReason labels a Metadata.missing value.
func missReason(r uint8) string {
	if r == missDeadline {
		return "deadline"
	}
	switch result(r - 1) {
	case resBudget:
		return "budget"
	case resTimeout:
		return "timeout"
	}
	return "error"
}

// Missing calls f for each kind of metadata m lacks for a reason other than a definitive absence, with the
// reason (deadline, budget, timeout, error): sources count records produced without metadata with it.
func (m *Metadata) Missing(f func(kind, reason string)) {
	if m == nil {
		return
	}
	for k, r := range m.missing {
		if r != 0 {
			f(kindLabels[k], missReason(r))
		}
	}
}

// Metadata returns the eventMetadata of did, waiting for the network at most LookupTimeout (or until ctx is
// done): Resolve for callers that may block.
func (e *Enricher) Metadata(ctx context.Context, did string) *Metadata {
	deadline := time.Now().Add(e.timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	m := &Metadata{}
	done := make(chan struct{})
	if !e.Resolve(did, deadline, m, func() { close(done) }) {
		<-done
	}
	return m
}

// InvalidateIdentity forgets did's document (and so its handle and PDS) after an #identity event, so the next
// lookup fetches the new one.
func (e *Enricher) InvalidateIdentity(did string) { e.accounts.invalidate(did) }

// InvalidateProfile forgets did's profile after a change the AppView will show (the account's
// app.bsky.actor.profile record, or its identity: the view carries the handle), and keeps the answers of the next
// Config.ProfileSettle out of the cache while the AppView catches up with the change.
func (e *Enricher) InvalidateProfile(did string) {
	if e.profiles != nil {
		e.profiles.invalidate(did)
	}
}
