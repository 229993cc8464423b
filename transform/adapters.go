package transform

import (
	"context"
	"log/slog"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/atkafka/atkafka/metrics"
	"github.com/atkafka/atkafka/transform/enrich"
	"github.com/atkafka/atkafka/transform/filter"
	"github.com/atkafka/atkafka/transform/format"
)

// Collections adapts a filter's collection rules to CollectionFilter; nil when f has none, so the pipeline skips
// the check entirely.
func Collections(f *filter.Filter) CollectionFilter {
	if !f.HasCollectionRules() {
		return nil
	}
	return collections{f}
}

type collections struct{ f *filter.Filter }

func (c collections) KeepCollection(nsid string) bool { return c.f.Collection(nsid) }

// Accounts adapts a filter's service rules to AccountFilter, resolving each account's PDS through e. It returns
// nil when f has no service rules.
func Accounts(f *filter.Filter, e *enrich.Enricher, log *slog.Logger) AccountFilter {
	if !f.HasServiceRules() {
		return nil
	}
	logged, _ := lru.New[string, struct{}](10000)
	return &accounts{f: f, e: e, log: log, logged: logged}
}

type accounts struct {
	f      *filter.Filter
	e      *enrich.Enricher
	log    *slog.Logger
	logged *lru.Cache[string, struct{}] // DIDs whose fail-open was logged: once per DID, bounded
}

func (a *accounts) KeepAccount(ctx context.Context, did string) bool {
	r := a.e.PDS(ctx, did)
	if r.Outcome == filter.Unknown {
		// Fail open: a PLC outage must never lose a watched account's events.
		metrics.FilterFailOpen.WithLabelValues("service").Inc()
		if ok, _ := a.logged.ContainsOrAdd(did, struct{}{}); !ok {
			a.log.Warn("PDS of account unknown (PLC unreachable or failing); keeping its events", "did", did)
		}
	}
	return a.f.Service(r)
}

// Enrichment adapts an Enricher to the pipeline's Enricher seam.
func Enrichment(e *enrich.Enricher) Enricher { return enrichment{e} }

type enrichment struct{ e *enrich.Enricher }

func (en enrichment) AppendMetadata(ctx context.Context, dst []byte, did string) []byte {
	return en.e.AppendMetadata(ctx, dst, did)
}

// profileCollection is the record whose changes make a cached profile view stale.
const profileCollection = "app.bsky.actor.profile"

func (en enrichment) Observe(ev *format.Event) {
	switch {
	case ev.Identity != nil:
		// The profile view carries the handle, and a new account's first #identity comes before the AppView has
		// indexed it: both are covered by InvalidateProfile's settle period.
		en.e.InvalidateIdentity(ev.DID)
		en.e.InvalidateProfile(ev.DID)
	case ev.Operation != nil && ev.Operation.Collection == profileCollection:
		en.e.InvalidateProfile(ev.DID)
	}
}
