// Package transform turns source events into Kafka records: it applies the filters, adds eventMetadata and
// renders the configured format. The relay and Tap sources share one Pipeline, so a rule written here holds for
// both.
package transform

import (
	"context"

	"github.com/atkafka/atkafka/metrics"
	"github.com/atkafka/atkafka/transform/format"
)

// AccountFilter decides from an account's DID whether its events are kept (the service rules, which need the
// account's PDS). It must not block for longer than its own lookup deadline.
type AccountFilter interface {
	KeepAccount(ctx context.Context, did string) bool
}

// CollectionFilter decides whether operations on a collection are kept. It needs no network.
type CollectionFilter interface {
	KeepCollection(nsid string) bool
}

// Enricher supplies eventMetadata and learns from events that invalidate what it cached.
type Enricher interface {
	// AppendMetadata appends the rendered eventMetadata object for did to dst. It never fails: what could not be
	// looked up in time is left out. Appending lets the relay's workers reuse one buffer across events.
	AppendMetadata(ctx context.Context, dst []byte, did string) []byte
	// Observe sees every event before it is rendered, so that an #identity event or a profile record change can
	// invalidate cached data.
	Observe(ev *format.Event)
}

// Pipeline holds the configured filters, enricher and formatter. Nil filters keep everything; a nil Enricher
// leaves eventMetadata out.
type Pipeline struct {
	Accounts    AccountFilter
	Collections CollectionFilter
	Enricher    Enricher
	Formatter   *format.Formatter
}

// KeepAccount applies the account (service) rules and counts what it drops.
func (p *Pipeline) KeepAccount(ctx context.Context, did string) bool {
	if p.Accounts == nil || did == "" || p.Accounts.KeepAccount(ctx, did) {
		return true
	}
	metrics.FilteredEvents.WithLabelValues("service").Inc()
	return false
}

// KeepCollection applies the collection rules and counts what it drops.
func (p *Pipeline) KeepCollection(nsid string) bool {
	if p.Collections == nil || p.Collections.KeepCollection(nsid) {
		return true
	}
	metrics.FilteredEvents.WithLabelValues("collection").Inc()
	return false
}

// Metadata returns the rendered eventMetadata for did in a new slice, or nil when enrichment is off or there is
// no DID.
func (p *Pipeline) Metadata(ctx context.Context, did string) []byte {
	return p.AppendMetadata(ctx, nil, did)
}

// AppendMetadata appends the rendered eventMetadata for did to dst; dst unchanged (possibly nil) when enrichment
// is off or there is no DID.
func (p *Pipeline) AppendMetadata(ctx context.Context, dst []byte, did string) []byte {
	if p.Enricher == nil || did == "" {
		return dst
	}
	return p.Enricher.AppendMetadata(ctx, dst, did)
}

// Observe passes ev to the enricher's invalidation logic. Call it for every event, kept or not, before looking up
// metadata for later events of the same DID.
func (p *Pipeline) Observe(ev *format.Event) {
	if p.Enricher != nil {
		p.Enricher.Observe(ev)
	}
}

// AppendValue counts ev as handled and appends its record value to dst.
func (p *Pipeline) AppendValue(dst []byte, ev *format.Event) []byte {
	metrics.HandledEvent(ev.ActionName(), ev.Collection()).Inc()
	return p.Formatter.AppendValue(dst, ev)
}
