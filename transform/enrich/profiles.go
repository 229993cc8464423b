package enrich

import (
	"bytes"
	"context"
	"encoding/json"
	"net/url"
	"strings"
	"time"
)

// maxProfileBatch is how many actors app.bsky.actor.getProfiles takes in one request.
const maxProfileBatch = 25

// profileBatcher gathers the profile lookups of different accounts into getProfiles requests: within the same
// AppView rate limit, a cold start learns up to 25 times as many profiles a second as with one request each.
type profileBatcher struct {
	e       *Enricher
	wait    time.Duration // how long the first lookup of a batch waits for company
	timeout time.Duration // bounds one batch's request, retries included
	in      chan *profileRequest
}

type profileRequest struct {
	did      string
	deadline time.Time
	reply    chan profileAnswer // buffered: the batch never waits for a caller that gave up
}

type profileAnswer struct {
	val []byte
	res result
}

func newProfileBatcher(e *Enricher, wait, timeout time.Duration) *profileBatcher {
	return &profileBatcher{e: e, wait: wait, timeout: timeout, in: make(chan *profileRequest)}
}

// fetch is the profile store's fetch: it queues did for the next batch and waits for that batch's answer.
func (b *profileBatcher) fetch(ctx context.Context, did string, deadline time.Time) ([]byte, result) {
	if _, ok := atprotoDID(did); !ok {
		return nil, resNotFound
	}
	req := &profileRequest{did: did, deadline: deadline, reply: make(chan profileAnswer, 1)}
	select {
	case b.in <- req:
	case <-ctx.Done():
		return nil, resTimeout
	}
	select {
	case a := <-req.reply:
		return a.val, a.res
	case <-ctx.Done():
		return nil, resTimeout
	}
}

// run forms batches until ctx ends: a batch closes when it is full or wait after its first lookup, and its
// request runs on its own goroutine, so the next batch forms meanwhile (the endpoint bounds how many run).
func (b *profileBatcher) run(ctx context.Context) {
	for {
		var batch []*profileRequest
		select {
		case r := <-b.in:
			batch = append(batch, r)
		case <-ctx.Done():
			return
		}
		t := time.NewTimer(b.wait)
	collect:
		for len(batch) < maxProfileBatch {
			select {
			case r := <-b.in:
				batch = append(batch, r)
			case <-t.C:
				break collect
			case <-ctx.Done():
				t.Stop()
				return
			}
		}
		t.Stop()
		go b.send(ctx, batch)
	}
}

// send makes one getProfiles request for batch and answers each lookup: its compacted profile view, or not
// found when the AppView left the actor out (it omits unknown actors).
func (b *profileBatcher) send(ctx context.Context, batch []*profileRequest) {
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	deadline := batch[0].deadline
	var u strings.Builder
	u.WriteString(b.e.apiHost + "/xrpc/app.bsky.actor.getProfiles?")
	for i, r := range batch {
		if r.deadline.Before(deadline) {
			deadline = r.deadline
		}
		if i > 0 {
			u.WriteByte('&')
		}
		u.WriteString("actors=" + url.QueryEscape(r.did))
	}
	body, res := b.e.api.get(ctx, b.e.profReqs, u.String(), deadline)
	var views map[string][]byte
	if res == resOK {
		if views = parseProfiles(body); views == nil {
			b.e.log.Debug("enrich: unusable getProfiles answer", "bytes", len(body))
			res = resError
		}
	}
	for _, r := range batch {
		a := profileAnswer{res: res}
		if res == resOK {
			if a.val = views[r.did]; a.val == nil {
				a.res = resNotFound
			}
		}
		r.reply <- a
	}
}

// parseProfiles maps each profile view of a getProfiles answer to its DID, compacted once so that events carry
// it verbatim. nil means the answer is not a getProfiles answer.
func parseProfiles(body []byte) map[string][]byte {
	var resp struct {
		Profiles []json.RawMessage `json:"profiles"`
	}
	if err := json.Unmarshal(body, &resp); err != nil || resp.Profiles == nil {
		return nil
	}
	views := make(map[string][]byte, len(resp.Profiles))
	for _, raw := range resp.Profiles {
		var v struct {
			DID string `json:"did"`
		}
		var buf bytes.Buffer
		if json.Unmarshal(raw, &v) != nil || v.DID == "" || json.Compact(&buf, raw) != nil || buf.Bytes()[0] != '{' {
			continue
		}
		views[v.DID] = buf.Bytes()
	}
	return views
}
