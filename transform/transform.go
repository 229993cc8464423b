// Package transform turns source events into Kafka records: it schedules the lookups each event needs, applies
// the filters, adds eventMetadata and renders the configured format. The relay and Tap sources share one
// Pipeline, so a rule written here holds for both.
//
// The steps run in one order for every source: Prepare as soon as an event is read (its invalidations, then its
// lookups, in per-DID order), then, once it is ready, the filters (KeepAccount, KeepCollection) and rendering
// (AppendMetadata, AppendValue) on the source's workers, which never wait on the network.
package transform

import (
	"sync"
	"time"

	"github.com/atkafka/atkafka/transform/enrich"
	"github.com/atkafka/atkafka/transform/filter"
	"github.com/atkafka/atkafka/transform/format"
)

// AccountFilter decides from an account's DID and metadata whether its events are kept (the service rules,
// which need the account's PDS).
type AccountFilter interface {
	KeepAccount(did string, m *enrich.Metadata) bool
}

// CollectionFilter decides whether operations on a collection are kept. It needs no network.
type CollectionFilter interface {
	KeepCollection(nsid string) bool
}

// Enricher looks up what events need to know of their accounts (*enrich.Enricher).
type Enricher interface {
	// Resolve fills m without waiting; when it returns false, done is called once m is as complete as it gets
	// before deadline.
	Resolve(did string, deadline time.Time, m *enrich.Metadata, done func()) bool
	InvalidateIdentity(did string)
	InvalidateProfile(did string)
	// LookupTimeout is how long an event may wait for its metadata after it was read.
	LookupTimeout() time.Duration
}

// Pipeline holds the configured filters, enricher and formatter. Nil filters keep everything; a nil Enricher
// looks nothing up.
type Pipeline struct {
	Accounts    AccountFilter
	Collections CollectionFilter
	// Enricher serves eventMetadata and the lookups of the service filter and the verifier.
	Enricher Enricher
	// OmitMetadata leaves eventMetadata out of the records while Enricher still serves the filter and the
	// verifier (--enrich=false with service rules or --verify-commits).
	OmitMetadata bool
	Formatter    *format.Formatter
	// Observer counts the events handled and filtered and the records without some metadata; nil: none.
	Observer Observer

	schedOnce sync.Once
	sched     *scheduler
}

// Observer receives the pipeline's counts, as kgo's hooks do: the pipeline counts, the caller decides where the
// numbers go (atkafka's metrics.Pipeline sends them to Prometheus). Its types are Go's own, so an implementation
// need not import this package.
type Observer interface {
	// Handled counts one event rendered, by its Osprey action name and its collection ("" when it has none).
	Handled(action, collection string)
	// Filtered counts one event a filter dropped, by the kind of rule (filter.ReasonService,
	// filter.ReasonCollection).
	Filtered(rule string)
	// FailOpen counts one event kept although the rule of that kind could not decide (the account's PDS is
	// unknown).
	FailOpen(rule string)
	// MissingMetadata counts records produced without the kind ("doc", "audit", "profile") of eventMetadata, by
	// reason.
	MissingMetadata(kind, reason string, records int)
}

// Deadline is when an event read at received stops waiting for its metadata; the zero time without an
// enricher, when nothing is looked up.
func (p *Pipeline) Deadline(received time.Time) time.Time {
	if p.Enricher == nil {
		return time.Time{}
	}
	return received.Add(p.Enricher.LookupTimeout())
}

// KeepAccount applies the account (service) rules and counts what it drops.
func (p *Pipeline) KeepAccount(did string, m *enrich.Metadata) bool {
	if p.Accounts == nil || did == "" || p.Accounts.KeepAccount(did, m) {
		return true
	}
	if p.Observer != nil {
		p.Observer.Filtered(filter.ReasonService)
	}
	return false
}

// KeepCollection applies the collection rules and counts what it drops.
func (p *Pipeline) KeepCollection(nsid string) bool {
	if p.Collections == nil || p.Collections.KeepCollection(nsid) {
		return true
	}
	if p.Observer != nil {
		p.Observer.Filtered(filter.ReasonCollection)
	}
	return false
}

// Metadata reports whether records carry eventMetadata.
func (p *Pipeline) Metadata() bool { return p.Enricher != nil && !p.OmitMetadata }

// AppendMetadata appends the rendered eventMetadata of a prepared event to dst; dst unchanged (possibly nil)
// when records carry none or there is no DID. records is how many records will carry it: those produced
// without some piece of it are counted (Observer.MissingMetadata), by kind and reason.
func (p *Pipeline) AppendMetadata(dst []byte, ev *Pending, records int) []byte {
	if !p.Metadata() || ev.DID == "" {
		return dst
	}
	p.CountMissing(ev, records)
	return ev.Meta.AppendJSON(dst)
}

// CountMissing counts records produced with ev's eventMetadata where some piece of it is missing
// (Observer.MissingMetadata), for a caller that renders the metadata before it knows how many records carry it.
func (p *Pipeline) CountMissing(ev *Pending, records int) {
	if p.Observer != nil && p.Metadata() {
		ev.Meta.Missing(func(kind, reason string) { p.Observer.MissingMetadata(kind, reason, records) })
	}
}

// AppendValue counts ev as handled and appends its record value to dst.
func (p *Pipeline) AppendValue(dst []byte, ev *format.Event) []byte {
	if p.Observer != nil {
		p.Observer.Handled(ev.ActionName(), ev.Collection())
	}
	return p.Formatter.AppendValue(dst, ev)
}
