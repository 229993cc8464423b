// Package enrich builds the eventMetadata object atkafka adds to every event that has a DID: the account's DID
// document, PDS host and handle, its creation time from the PLC audit log, and optionally its profile.
//
// Lookups are cached (bounded LRUs with TTLs), shared between concurrent callers (one request per key at a
// time), rate limited per upstream and bounded by a deadline, so the stream never waits on the network for long:
// whatever is not known in time is left out of that event and counted in metrics.EnrichFailures, and the fetch
// still completes in the background to serve the next event of the same account.
package enrich

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/atkafka/atkafka/metrics"
	"github.com/atkafka/atkafka/transform/filter"
)

// Config configures an Enricher. Every zero field takes the default written next to it, so Config{} works
// against plc.directory.
type Config struct {
	// PLCHost is the PLC directory's base URL; default https://plc.directory. Must be an http(s) URL; a
	// trailing slash is tolerated.
	PLCHost string
	// APIHost is the AppView's base URL (e.g. https://public.api.bsky.app). Empty: no profile lookups and no
	// profile field.
	APIHost string

	// DocCacheSize bounds the DID document cache (entries); default 100000. Documents are also what the service
	// filter reads, so this cache is the hottest.
	DocCacheSize int
	// DocTTL bounds how stale a document may get; default 1h. #identity events invalidate documents early
	// (InvalidateIdentity), so this only matters for changes the stream did not announce.
	DocTTL time.Duration
	// AuditCacheSize bounds the cache of creation times from the PLC audit log; default 100000.
	AuditCacheSize int
	// AuditTTL: default 24h. A DID's first audit entry never changes, so this only ages out idle accounts.
	AuditTTL time.Duration
	// ProfileCacheSize bounds the profile cache; default 50000.
	ProfileCacheSize int
	// ProfileTTL: default 10m. Profile record and identity changes invalidate early (InvalidateProfile); the TTL
	// covers what the AppView derives from elsewhere (follower counts, labels).
	ProfileTTL time.Duration
	// ProfileSettle is how long after a profile record change (InvalidateProfile) the AppView's answers for that
	// account are used but not cached; default 10s. The AppView indexes the change from the firehose as atkafka
	// sees it, typically some hundreds of milliseconds later, so the profile fetched for the change's own event
	// is usually the old one: cached, it would be served for ProfileTTL. Meanwhile each event of the account asks
	// the AppView again (one request at a time, within APIRate), so the first event after the AppView indexed the
	// change carries the new profile. An AppView lagging more than this can still leave an old profile cached.
	ProfileSettle time.Duration
	// NotFoundTTL is how long a definitive "not found" (HTTP 404) is cached, for every kind; default 5m.
	// Shorter than the positive TTLs because a new account's document can appear just after its first event.
	NotFoundTTL time.Duration
	// FailureTTL is how long a failed lookup (5xx, timeout) is remembered before the next attempt; default 5s.
	// Without it a busy account whose lookup keeps failing would cost a full deadline on every event.
	FailureTTL time.Duration

	// PLCRate limits requests to the PLC (documents and audit logs together) per second; default 50. Negative:
	// unlimited (a private PLC mirror). did:web hosts get a separate limiter with the same rate.
	PLCRate float64
	// PLCBurst is the PLC limiter's bucket size; default max(1, PLCRate/5).
	PLCBurst int
	// APIRate limits requests to the AppView per second; default 20. Negative: unlimited.
	APIRate float64
	// APIBurst is the AppView limiter's bucket size; default max(1, APIRate/5).
	APIBurst int

	// LookupTimeout is the longest one Metadata or PDS call waits for the network; default 1s. Events of one
	// account are handled in order, so this is how long a cold or failing lookup can hold that account back.
	LookupTimeout time.Duration
	// FetchTimeout bounds one background fetch including its retries; default 10s. It outlives the caller's
	// LookupTimeout on purpose: a slow answer still fills the cache for the next event.
	FetchTimeout time.Duration

	// HTTPClient makes every request; default a client with a private transport. Deadlines come from
	// contexts, so its Timeout may stay zero.
	HTTPClient *http.Client
	// Logger receives failures at debug level (they can be per DID) and endpoint outages at warn; default
	// discards.
	Logger *slog.Logger
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
	docs     *store[*docInfo]
	audits   *store[*auditInfo]
	profiles *store[[]byte] // nil without APIHost
	docReqs  *requestCounters
	auditReq *requestCounters
	profReqs *requestCounters
}

// New validates cfg, applies defaults and returns an Enricher. Call Close when done to stop background fetches.
func New(cfg Config) (*Enricher, error) {
	if cfg.PLCHost == "" {
		cfg.PLCHost = "https://plc.directory"
	}
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
	positive := map[string]time.Duration{"DocTTL": cfg.DocTTL, "AuditTTL": cfg.AuditTTL, "ProfileTTL": cfg.ProfileTTL,
		"ProfileSettle": cfg.ProfileSettle, "NotFoundTTL": cfg.NotFoundTTL, "FailureTTL": cfg.FailureTTL,
		"LookupTimeout": cfg.LookupTimeout, "FetchTimeout": cfg.FetchTimeout}
	for name, d := range positive {
		if d < 0 {
			return nil, fmt.Errorf("%s must not be negative", name)
		}
	}
	if cfg.DocCacheSize < 0 || cfg.AuditCacheSize < 0 || cfg.ProfileCacheSize < 0 {
		return nil, errors.New("cache sizes must not be negative")
	}
	def(&cfg.DocCacheSize, 100_000)
	def(&cfg.AuditCacheSize, 100_000)
	def(&cfg.ProfileCacheSize, 50_000)
	def(&cfg.DocTTL, time.Hour)
	def(&cfg.AuditTTL, 24*time.Hour)
	def(&cfg.ProfileTTL, 10*time.Minute)
	def(&cfg.ProfileSettle, 10*time.Second)
	def(&cfg.NotFoundTTL, 5*time.Minute)
	def(&cfg.FailureTTL, 5*time.Second)
	def(&cfg.PLCRate, 50)
	def(&cfg.APIRate, 20)
	def(&cfg.LookupTimeout, time.Second)
	def(&cfg.FetchTimeout, 10*time.Second)
	if cfg.HTTPClient == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = 64 // all requests go to one or two hosts
		cfg.HTTPClient = &http.Client{Transport: t}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}

	base, cancel := context.WithCancel(context.Background())
	e := &Enricher{
		timeout:  cfg.LookupTimeout,
		plcHost:  plcHost,
		apiHost:  apiHost,
		log:      cfg.Logger,
		cancel:   cancel,
		plc:      &endpoint{name: "plc", client: cfg.HTTPClient, limiter: limiter(cfg.PLCRate, cfg.PLCBurst), log: cfg.Logger, breaker: true},
		web:      &endpoint{name: "did:web", client: cfg.HTTPClient, limiter: limiter(cfg.PLCRate, cfg.PLCBurst), log: cfg.Logger},
		webURL:   func(host string) string { return "https://" + host + "/.well-known/did.json" },
		docReqs:  newRequestCounters(metrics.PLCRequests, "doc"),
		auditReq: newRequestCounters(metrics.PLCRequests, "audit"),
		profReqs: newRequestCounters(metrics.APIRequests, "profile"),
	}
	e.docs = newStore("doc", cfg.DocCacheSize, cfg.DocTTL, cfg.NotFoundTTL, cfg.FailureTTL, cfg.FetchTimeout, base, e.docReqs, e.fetchDoc)
	e.audits = newStore("audit", cfg.AuditCacheSize, cfg.AuditTTL, cfg.NotFoundTTL, cfg.FailureTTL, cfg.FetchTimeout, base, e.auditReq, e.fetchAudit)
	if apiHost != "" {
		e.api = &endpoint{name: "api", client: cfg.HTTPClient, limiter: limiter(cfg.APIRate, cfg.APIBurst), log: cfg.Logger, breaker: true}
		e.profiles = newStore("profile", cfg.ProfileCacheSize, cfg.ProfileTTL, cfg.NotFoundTTL, cfg.FailureTTL, cfg.FetchTimeout, base, e.profReqs, e.fetchProfile)
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

// Metadata returns the eventMetadata of did. It never fails and waits for the network at most LookupTimeout
// (or until ctx is done): what could not be looked up in time is missing from the result and counted in
// metrics.EnrichFailures by kind (doc, audit, profile). A definitive absence (unknown DID, no profile) is not a
// failure. On a warm cache it does no I/O and one allocation.
func (e *Enricher) Metadata(ctx context.Context, did string) *Metadata {
	m := &Metadata{}
	e.lookup(ctx, did, m)
	return m
}

// AppendMetadata appends the rendered eventMetadata of did to dst: Metadata(ctx, did).AppendJSON(dst) without
// allocating on a warm cache, for the per-event path.
func (e *Enricher) AppendMetadata(ctx context.Context, dst []byte, did string) []byte {
	var m Metadata
	e.lookup(ctx, did, &m)
	return m.AppendJSON(dst)
}

// lookup fills m as Metadata describes.
func (e *Enricher) lookup(ctx context.Context, did string, m *Metadata) {
	m.age = -1
	if did == "" {
		return
	}
	isPLC := strings.HasPrefix(did, "did:plc:")
	doc, docOK := e.docs.cached(did)
	var audit *entry[*auditInfo]
	auditOK := !isPLC // only plc DIDs have an audit log
	if isPLC {
		audit, auditOK = e.audits.cached(did)
	}
	var prof *entry[[]byte]
	profOK := e.profiles == nil
	if e.profiles != nil {
		prof, profOK = e.profiles.cached(did)
	}
	if !docOK || !auditOK || !profOK {
		ctx, cancel := context.WithTimeout(ctx, e.timeout)
		defer cancel()
		// Start every missing fetch before waiting on any, so they overlap within the one deadline.
		var docFl *flight[*docInfo]
		var auditFl *flight[*auditInfo]
		var profFl *flight[[]byte]
		if !docOK {
			docFl = e.docs.start(did)
		}
		if !auditOK {
			auditFl = e.audits.start(did)
		}
		if !profOK {
			profFl = e.profiles.start(did)
		}
		if docFl != nil {
			doc = e.docs.await(ctx, docFl)
		}
		if auditFl != nil {
			audit = e.audits.await(ctx, auditFl)
		}
		if profFl != nil {
			prof = e.profiles.await(ctx, profFl)
		}
	}
	if doc != nil && doc.res == resOK {
		m.doc = doc.val
	} else if doc == nil || doc.res != resNotFound {
		e.failed(e.docs.failures, "doc", did, reasonOf(doc))
	}
	if isPLC {
		if audit != nil && audit.res == resOK {
			m.audit = audit.val
			m.age = max(0, int64(time.Since(audit.val.createdAt)/time.Second))
		} else if audit == nil || audit.res != resNotFound {
			e.failed(e.audits.failures, "audit", did, reasonOf(audit))
		}
	}
	if e.profiles != nil {
		if prof != nil && prof.res == resOK {
			m.profile = prof.val
		} else if prof == nil || prof.res != resNotFound {
			e.failed(e.profiles.failures, "profile", did, reasonOf(prof))
		}
	}
}

// failed counts and logs one piece of metadata an event goes without.
func (e *Enricher) failed(c prometheus.Counter, kind, did, reason string) {
	c.Inc()
	e.log.Debug("enrich: metadata incomplete", "kind", kind, "did", did, "reason", reason)
}

// reasonOf names why a lookup gave no answer: the caller's deadline, or the cached failure.
func reasonOf[V any](en *entry[V]) string {
	if en == nil {
		return "deadline"
	}
	return resultLabels[en.res]
}

// PDS resolves did's PDS for the service filter, from the same document cache as Metadata and within the same
// LookupTimeout. A transient failure is filter.Unknown (the filter fails open); it is not counted in
// EnrichFailures, since no event lost metadata, but the requests behind it are counted in PLCRequests.
func (e *Enricher) PDS(ctx context.Context, did string) filter.Resolution {
	if did == "" {
		return filter.Resolution{Outcome: filter.NoPDS}
	}
	doc, _ := e.docs.get(ctx, did, e.timeout)
	switch {
	case doc == nil || doc.res == resError || doc.res == resTimeout:
		return filter.Resolution{Outcome: filter.Unknown}
	case doc.res == resNotFound:
		return filter.Resolution{Outcome: filter.NoPDS}
	default:
		return doc.val.pds
	}
}

// InvalidateIdentity forgets did's document (and so its handle and PDS) after an #identity event, so the next
// lookup fetches the new one. The creation time is kept: it cannot change.
func (e *Enricher) InvalidateIdentity(did string) { e.docs.invalidate(did) }

// InvalidateProfile forgets did's profile after a change the AppView will show (the account's
// app.bsky.actor.profile record, or its identity: the view carries the handle), and keeps the answers of the next
// Config.ProfileSettle out of the cache while the AppView catches up with the change.
func (e *Enricher) InvalidateProfile(did string) {
	if e.profiles != nil {
		e.profiles.invalidate(did)
	}
}
