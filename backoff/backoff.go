// Package backoff computes retry delays for reconnecting to a dead dependency: capped exponential growth with
// full jitter, so a fleet of atkafka instances does not reconnect in lockstep and nothing busy-loops.
package backoff

import (
	"context"
	"math/rand/v2"
	"net/http"
	"time"
)

// Policy is a capped exponential backoff. The zero value is not useful; use New.
type Policy struct {
	base, max time.Duration
	attempt   int
}

// New returns a policy whose delays grow from base to at most max.
func New(base, max time.Duration) *Policy { return &Policy{base: base, max: max} }

// Next returns the delay before the next attempt: a random duration in [d/2, d], where d doubles on every call
// from base up to max.
func (p *Policy) Next() time.Duration {
	d := p.base << min(p.attempt, 30)
	if d <= 0 || d > p.max {
		d = p.max
	}
	p.attempt++
	return d/2 + rand.N(d/2+1)
}

// Reset starts the sequence over, after a success.
func (p *Policy) Reset() { p.attempt = 0 }

// Attempt is the number of delays handed out since the last Reset.
func (p *Policy) Attempt() int { return p.attempt }

// Sleep waits for d or until ctx ends, reporting whether the full delay passed.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// TransientStatus reports whether an HTTP answer with status code may turn out otherwise when the same request is
// made again later: 408 and 429 (the server asks to wait) and 5xx (it failed). Every HTTP client of atkafka retries
// exactly these, plus network errors and timeouts; any other status is the answer.
func TransientStatus(code int) bool {
	return code == http.StatusRequestTimeout || code == http.StatusTooManyRequests || code >= 500
}
