package transform

import (
	"hash/maphash"
	"sync"
	"time"

	"github.com/atkafka/atkafka/transform/enrich"
)

// Invalidation says what an event changes about its account, so that the lookups of that event, and of the
// ones after it, do not use what was cached before it.
type Invalidation uint8

const (
	// IdentityChanged: an #identity event; the document (handle, PDS, keys) and the profile view (it carries the
	// handle) are fetched anew.
	IdentityChanged Invalidation = 1 << iota
	// ProfileChanged: a change of the account's app.bsky.actor.profile record.
	ProfileChanged
)

// ProfileCollection is the record whose changes make a cached profile view stale.
const ProfileCollection = "app.bsky.actor.profile"

// Pending is one event (a relay frame, a Tap event) on its way through Pipeline.Prepare. The source owns it,
// typically inside a pooled job: it sets DID, Deadline, Invalidate and Ready, and once Ready is called, Meta holds
// the event's metadata for the filters, the renderer and the verifier.
type Pending struct {
	DID        string
	Deadline   time.Time
	Invalidate Invalidation
	// Ready is called exactly once, when Meta is resolved: events of one DID in the order Prepare saw them, from
	// Prepare itself or from a lookup's goroutine. It must not block.
	Ready func()
	Meta  enrich.Metadata

	p      *Pipeline
	resume func() // p.resume(DID), bound once per Pending so that waiting allocates no closure
}

// scheduler keeps the events that wait for metadata, per DID. An event waits only behind earlier events of its
// own DID (which keeps their order); events of other DIDs pass it. Memory is bounded by the sources' in-flight
// limits: every waiting event holds one of their slots.
type scheduler struct {
	seed   maphash.Seed
	shards [64]schedShard
}

type schedShard struct {
	mu sync.Mutex
	// waiting holds, per DID, the events not yet Ready; its first is the one whose lookup runs.
	waiting map[string][]*Pending
}

// Prepare starts what ev needs before it can be rendered (its account's document, creation time and profile:
// for eventMetadata, the service filter and the verifier's key) and calls ev.Ready when that is known or
// ev.Deadline passed, whichever comes first. Call it as soon as the event is read, in read order: lookups of
// many accounts then overlap, and an account whose lookup is slow holds up only its own later events. Without an
// enricher, or without a DID, ev is ready at once.
func (p *Pipeline) Prepare(ev *Pending) {
	if p.Enricher == nil || ev.DID == "" {
		ev.Meta = enrich.Metadata{}
		ev.Ready()
		return
	}
	p.schedOnce.Do(func() {
		p.sched = &scheduler{seed: maphash.MakeSeed()}
		for i := range p.sched.shards {
			p.sched.shards[i].waiting = map[string][]*Pending{}
		}
	})
	if ev.p != p {
		ev.p = p
		ev.resume = func() { p.resume(ev.DID) }
	}
	sh := p.sched.shard(ev.DID)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if q, ok := sh.waiting[ev.DID]; ok {
		sh.waiting[ev.DID] = append(q, ev)
		return
	}
	if p.start(ev) {
		ev.Ready()
		return
	}
	sh.waiting[ev.DID] = []*Pending{ev}
}

func (s *scheduler) shard(did string) *schedShard {
	return &s.shards[maphash.String(s.seed, did)%uint64(len(s.shards))]
}

// start applies ev's invalidation and resolves its metadata; false means ev.resume will be called.
func (p *Pipeline) start(ev *Pending) bool {
	if ev.Invalidate&IdentityChanged != 0 {
		p.Enricher.InvalidateIdentity(ev.DID)
	}
	if ev.Invalidate != 0 {
		p.Enricher.InvalidateProfile(ev.DID)
	}
	return p.Enricher.Resolve(ev.DID, ev.Deadline, &ev.Meta, ev.resume)
}

// resume is called when the lookup of did's first waiting event is over: that event is ready, and so are the
// ones after it whose metadata is then cached, up to the next that must wait.
func (p *Pipeline) resume(did string) {
	sh := p.sched.shard(did)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	q := sh.waiting[did]
	q[0].Ready()
	for i := 1; i < len(q); i++ {
		if !p.start(q[i]) {
			clear(q[:i])
			sh.waiting[did] = q[i:]
			return
		}
		q[i].Ready()
	}
	delete(sh.waiting, did)
}
