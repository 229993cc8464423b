package transform

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/atkafka/atkafka/testenv"
	"github.com/atkafka/atkafka/transform/enrich"
)

// fakeLookups answers each DID's lookup after that DID's latency, as a PLC would, without metadata.
type fakeLookups struct {
	latency func(did string) time.Duration
	timeout time.Duration
}

func (f *fakeLookups) Resolve(did string, deadline time.Time, _ *enrich.Metadata, done func()) bool {
	d := f.latency(did)
	if d == 0 {
		return true
	}
	go func() {
		time.Sleep(min(d, time.Until(deadline)))
		done()
	}()
	return false
}
func (f *fakeLookups) InvalidateIdentity(string)    {}
func (f *fakeLookups) InvalidateProfile(string)     {}
func (f *fakeLookups) LookupTimeout() time.Duration { return f.timeout }

// readyLog records the order events became ready in, and when.
type readyLog struct {
	mu    sync.Mutex
	order []string // "did#n"
	at    map[string]time.Time
}

func (l *readyLog) pending(p *Pipeline, did string, n int, received time.Time) *Pending {
	ev := &Pending{DID: did, Deadline: p.Deadline(received)}
	ev.Ready = func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		key := fmt.Sprintf("%s#%d", did, n)
		l.order = append(l.order, key)
		l.at[key] = time.Now()
	}
	return ev
}

// TestSlowAccountDelaysNoOther: an account whose lookup takes seconds holds back its own events (up to their
// deadline) and nobody else's, whatever share of the stream it has. On a worker that looked up in line, every
// event behind the slow one waited too.
func TestSlowAccountDelaysNoOther(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const slow = "did:plc:slowslowslowslowslowslow"
		f := &fakeLookups{timeout: 2 * time.Second, latency: func(did string) time.Duration {
			if did == slow {
				return 10 * time.Second
			}
			return 50 * time.Millisecond
		}}
		p := &Pipeline{Enricher: f}
		log := &readyLog{at: map[string]time.Time{}}
		start := time.Now()
		for i := range 200 {
			did := slow
			if i%4 != 0 {
				did = fmt.Sprintf("did:plc:%024d", i)
			}
			p.Prepare(log.pending(p, did, i, time.Now()))
			time.Sleep(time.Millisecond) // 1,000 events a second
		}
		time.Sleep(5 * time.Second)
		synctest.Wait()
		if len(log.order) != 200 {
			t.Fatalf("%d of 200 events ready", len(log.order))
		}
		for key, at := range log.at {
			waited := at.Sub(start)
			if strings.HasPrefix(key, slow) {
				if waited < 2*time.Second || waited > 2*time.Second+200*time.Millisecond {
					t.Errorf("%s ready after %v, want its 2s deadline", key, waited)
				}
				continue
			}
			var n int
			fmt.Sscanf(key[strings.Index(key, "#")+1:], "%d", &n)
			if own := waited - time.Duration(n)*time.Millisecond; own > 60*time.Millisecond {
				t.Errorf("%s waited %v, want its own 50ms lookup", key, own)
			}
		}
	})
}

// TestPerDIDOrder: under random lookup latencies and deadlines, every DID's events become ready in the order
// they were prepared, and every event does.
func TestPerDIDOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(1, 2))
		var mu sync.Mutex
		f := &fakeLookups{timeout: 300 * time.Millisecond, latency: func(string) time.Duration {
			mu.Lock()
			defer mu.Unlock()
			if rng.IntN(3) == 0 {
				return 0 // cached
			}
			return time.Duration(rng.IntN(500)) * time.Millisecond
		}}
		p := &Pipeline{Enricher: f}
		log := &readyLog{at: map[string]time.Time{}}
		const events, dids = 3000, 40
		for i := range events {
			p.Prepare(log.pending(p, fmt.Sprintf("did:plc:%024d", i%dids), i, time.Now()))
			if i%10 == 0 {
				time.Sleep(time.Millisecond)
			}
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if len(log.order) != events {
			t.Fatalf("%d of %d events ready", len(log.order), events)
		}
		last := map[string]int{}
		for _, key := range log.order {
			did, num, _ := strings.Cut(key, "#")
			var n int
			fmt.Sscanf(num, "%d", &n)
			if prev, ok := last[did]; ok && n < prev {
				t.Fatalf("%s ready after #%d of the same DID", key, prev)
			}
			last[did] = n
		}
	})
}

// TestIdentityRefreshesMetadata: an #identity event's lookup, and those after it, see the account's new
// document and profile; the events before it keep what they had.
func TestIdentityRefreshesMetadata(t *testing.T) {
	const did = "did:plc:observetestaaaaaaaaaaaa"
	var handle atomic.Value
	handle.Store("old.example.com")
	doc := func() []byte {
		return []byte(`{"@context":["https://www.w3.org/ns/did/v1","https://w3id.org/security/multikey/v1"],"id":"` + did +
			`","alsoKnownAs":["at://` + handle.Load().(string) + `"],"verificationMethod":[],"service":[]}`)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := handle.Load().(string)
		switch r.URL.Path {
		case "/xrpc/app.bsky.actor.getProfiles":
			fmt.Fprintf(w, `{"profiles":[{"did":%q,"handle":%q}]}`, did, h)
		case "/" + did + "/log/audit":
			w.Write(testenv.PLCAuditLog(did, doc(), "2023-04-01T00:00:00.000Z"))
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	e, err := enrich.New(enrich.Config{PLCHost: srv.URL, APIHost: srv.URL, PLCRate: -1, APIRate: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	p := &Pipeline{Enricher: e}
	metadata := func(inv Invalidation) string {
		done := make(chan struct{})
		ev := &Pending{DID: did, Deadline: p.Deadline(time.Now()), Invalidate: inv, Ready: func() { close(done) }}
		p.Prepare(ev)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("event never ready")
		}
		return string(ev.Meta.AppendJSON(nil))
	}
	if m := metadata(0); !strings.Contains(m, `"profile":{"did":"`+did+`","handle":"old.example.com"}`) {
		t.Fatalf("metadata %s", m)
	}
	handle.Store("new.example.com")
	if m := metadata(0); strings.Contains(m, "new.example.com") {
		t.Fatalf("metadata changed without an event: %s", m)
	}
	if m := metadata(IdentityChanged); strings.Contains(m, "old.example.com") || !strings.Contains(m, `"handle":"new.example.com"}`) {
		t.Errorf("after #identity, the document and the profile should both carry the new handle: %s", m)
	}
}
