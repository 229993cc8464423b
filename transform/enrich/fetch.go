package enrich

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

const (
	maxAttempts  = 3
	firstBackoff = 100 * time.Millisecond
	maxBody      = 4 << 20 // long PLC audit logs of busy accounts stay well below this
	// After breakerThreshold transient failures in a row the endpoint is presumed down and skipped for
	// breakerCooldown, so that during an outage each new DID costs nothing instead of a full deadline.
	breakerThreshold = 5
	breakerCooldown  = 2 * time.Second
)

var errBreakerOpen = errors.New("endpoint presumed down after repeated failures")

// endpoint is one upstream (the PLC, the AppView, did:web hosts) with its own rate limit and circuit breaker.
// Every HTTP request of the package goes through endpoint.get, so retry, limits and counting exist once.
type endpoint struct {
	name    string
	client  *http.Client
	limiter *rate.Limiter
	log     *slog.Logger
	breaker bool // off for did:web: one broken host says nothing about the others

	mu        sync.Mutex
	failures  int
	openUntil time.Time
}

// get fetches url, retrying transient failures with backoff inside ctx's deadline. Each HTTP request made is
// counted in reqs. 400, 404 and 410 are definitive absences (the AppView answers 400 for an unknown actor).
func (ep *endpoint) get(ctx context.Context, reqs *requestCounters, url string) ([]byte, result) {
	backoff := firstBackoff
	for n := 1; ; n++ {
		a := ep.attempt(ctx, url)
		if a.sent {
			reqs.inc(a.res, false)
		}
		if a.err != nil {
			ep.log.Debug("enrich: request failed", "endpoint", ep.name, "url", url, "attempt", n, "retry", a.retry && n < maxAttempts, "err", a.err)
		}
		if !a.retry || n == maxAttempts {
			return a.body, a.res
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		backoff *= 2
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, resTimeout
		}
	}
}

// attemptResult is the outcome of one request.
type attemptResult struct {
	body  []byte
	res   result
	sent  bool // a request reached the wire (so it is counted)
	retry bool // transient: another attempt may succeed
	err   error
}

func (ep *endpoint) attempt(ctx context.Context, url string) attemptResult {
	if ep.breaker && !ep.allow() {
		return attemptResult{res: resError, err: errBreakerOpen}
	}
	if err := ep.limiter.Wait(ctx); err != nil {
		// No token before the deadline: nothing was sent, and waiting again cannot beat the same deadline.
		return attemptResult{res: resTimeout, err: fmt.Errorf("rate limit: %w", err)}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return attemptResult{res: resNotFound, err: err}
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "atkafka")
	resp, err := ep.client.Do(req)
	if err != nil {
		return ep.transient(ctx, err)
	}
	defer resp.Body.Close()
	code := resp.StatusCode
	switch {
	case code >= 200 && code < 300:
		body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
		if err != nil {
			return ep.transient(ctx, err)
		}
		ep.record(true)
		if len(body) > maxBody {
			return attemptResult{res: resNotFound, sent: true, err: fmt.Errorf("response larger than %d bytes", maxBody)}
		}
		return attemptResult{body: body, res: resOK, sent: true}
	case code == http.StatusNotFound || code == http.StatusGone || code == http.StatusBadRequest:
		ep.record(true)
		drain(resp.Body)
		return attemptResult{res: resNotFound, sent: true}
	case code == http.StatusTooManyRequests || code == http.StatusRequestTimeout || code >= 500:
		drain(resp.Body)
		return ep.transient(ctx, fmt.Errorf("HTTP %d", code))
	default:
		// Another 4xx (401, 403, ...) will not change by retrying; it is an error, not an absence.
		ep.record(true)
		drain(resp.Body)
		return attemptResult{res: resError, sent: true, err: fmt.Errorf("HTTP %d", code)}
	}
}

func (ep *endpoint) transient(ctx context.Context, err error) attemptResult {
	ep.record(false)
	if ctx.Err() != nil {
		return attemptResult{res: resTimeout, sent: true, err: err}
	}
	return attemptResult{res: resError, sent: true, retry: true, err: err}
}

// drain reads a little of an unwanted body so the connection can be reused.
func drain(r io.Reader) { _, _ = io.Copy(io.Discard, io.LimitReader(r, 64<<10)) }

func (ep *endpoint) allow() bool {
	ep.mu.Lock()
	defer ep.mu.Unlock()
	return ep.failures < breakerThreshold || time.Now().After(ep.openUntil)
}

// record feeds the circuit breaker: healthy answers (including 404s) close it, transient failures count
// towards opening it, and one failure after the cooldown reopens it at once.
func (ep *endpoint) record(healthy bool) {
	if !ep.breaker {
		return
	}
	ep.mu.Lock()
	defer ep.mu.Unlock()
	if healthy {
		if ep.failures >= breakerThreshold {
			ep.log.Info("enrich: endpoint answering again", "endpoint", ep.name)
		}
		ep.failures = 0
		return
	}
	ep.failures++
	if ep.failures >= breakerThreshold {
		if ep.failures == breakerThreshold {
			ep.log.Warn("enrich: endpoint failing, skipping lookups for a while", "endpoint", ep.name, "cooldown", breakerCooldown)
		}
		ep.openUntil = time.Now().Add(breakerCooldown)
	}
}
