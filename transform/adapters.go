package transform

import (
	"log/slog"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/atkafka/atkafka/transform/enrich"
	"github.com/atkafka/atkafka/transform/filter"
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

// Accounts adapts a filter's service rules to AccountFilter, reading each account's PDS from its prepared
// metadata (the pipeline's Enricher must be set). The events it keeps although their account's PDS is unknown are
// counted in obs (nil: not counted) and logged once per account. It returns nil when f has no service rules.
func Accounts(f *filter.Filter, log *slog.Logger, obs Observer) AccountFilter {
	if !f.HasServiceRules() {
		return nil
	}
	logged, _ := lru.New[string, struct{}](10000)
	return &accounts{f: f, log: log, obs: obs, logged: logged}
}

type accounts struct {
	f      *filter.Filter
	log    *slog.Logger
	obs    Observer
	logged *lru.Cache[string, struct{}] // DIDs whose fail-open was logged: once per DID, bounded
}

func (a *accounts) KeepAccount(did string, m *enrich.Metadata) bool {
	r := m.PDS()
	if r.Outcome == filter.Unknown {
		// Fail open: a PLC outage must never lose a watched account's events.
		if a.obs != nil {
			a.obs.FailOpen(filter.ReasonService)
		}
		if ok, _ := a.logged.ContainsOrAdd(did, struct{}{}); !ok {
			a.log.Warn("PDS of account unknown (PLC unreachable or failing); keeping its events", "did", did)
		}
	}
	return a.f.Service(r)
}
