package enrich

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/atkafka/atkafka/backoff"
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

var (
	errBreakerOpen = errors.New("endpoint presumed down after repeated failures")
	errBudget      = errors.New("no request could be sent in time to answer before the event's deadline")
)

// endpoint is one upstream (the PLC, the AppView, did:web hosts) with its own rate limit, concurrency bound and
// circuit breaker. Every HTTP request of the package goes through endpoint.get, so retry, limits and counting
// exist once.
type endpoint struct {
	name    string
	client  *http.Client
	limiter *rate.Limiter
	// slots bounds the requests in flight; nil: unbounded.
	slots   chan struct{}
	log     *slog.Logger
	breaker bool // off for did:web: one broken host says nothing about the others
	// maxWait bounds how long a request queues for a token or a slot (admit).
	maxWait time.Duration
	// latency is a moving average of answered requests' latency (nanoseconds): what a request sent now is
	// expected to take, so that admit sends none that cannot answer before its event's deadline.
	latency atomic.Int64
	// budgetLogged is when the last "over budget" warning was logged (Unix nanoseconds): one a minute at most.
	budgetLogged atomic.Int64
	inFlight     func(delta int)
	observe      [numResults]func(time.Duration)

	mu        sync.Mutex
	failures  int
	openUntil time.Time
}

func newEndpoint(name string, client *http.Client, limiter *rate.Limiter, concurrency int, maxWait time.Duration, log *slog.Logger,
	obs Observer, breaker bool) *endpoint {
	ep := &endpoint{name: name, client: client, limiter: limiter, maxWait: maxWait, log: log, breaker: breaker,
		inFlight: obs.InFlight(name)}
	if concurrency > 0 {
		ep.slots = make(chan struct{}, concurrency)
	}
	for r := range numResults {
		ep.observe[r] = obs.Requests(name, resultLabels[r])
	}
	return ep
}

// get fetches url, retrying transient failures with backoff inside ctx's deadline. Each HTTP request made is
// counted in reqs. 400, 404 and 410 are definitive absences (the AppView answers 400 for an unknown actor).
// The first attempt is only made if it can answer before deadline (the asking event's); retries serve the
// cache, within ctx.
func (ep *endpoint) get(ctx context.Context, reqs *requestCounters, url string, deadline time.Time) ([]byte, result) {
	retries := backoff.New(firstBackoff, firstBackoff<<(maxAttempts-2))
	for n := 1; ; n++ {
		if n > 1 {
			deadline, _ = ctx.Deadline()
		}
		a := ep.attempt(ctx, url, deadline)
		if a.sent || a.res == resBudget {
			reqs.inc(a.res, false) // a lookup the budget refused is counted too, as one not sent
		}
		if a.res == resBudget {
			ep.overBudget(a.err)
		}
		if a.err != nil {
			ep.log.Debug("enrich: request failed", "endpoint", ep.name, "url", url, "attempt", n, "retry", a.retry && n < maxAttempts, "err", a.err)
		}
		if !a.retry || n == maxAttempts {
			return a.body, a.res
		}
		if !backoff.Sleep(ctx, retries.Next()) {
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
	start time.Time
}

func (ep *endpoint) attempt(ctx context.Context, url string, deadline time.Time) attemptResult {
	if ep.breaker && !ep.allow() {
		return attemptResult{res: resError, err: errBreakerOpen}
	}
	release, err := ep.admit(ctx, deadline)
	if err != nil {
		// Nothing was sent, and waiting again cannot beat the same deadline.
		return attemptResult{res: resBudget, err: err}
	}
	defer release()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return attemptResult{res: resNotFound, err: err}
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "atkafka")
	a := ep.do(ctx, req)
	if a.sent {
		ep.observe[a.res](time.Since(a.start))
		if a.res == resOK || a.res == resNotFound {
			ep.learn(time.Since(a.start))
		}
	}
	return a
}

// admit waits for a rate-limit token and a concurrency slot, unless they cannot be had early enough for the
// request to answer before deadline: then it sends nothing and returns errBudget at once, so that an event never
// waits on a lookup that cannot help it, and the budget goes to lookups that can. The token of a request that
// is not sent is given back.
//
// Nor does it queue for longer than maxWait, whatever the deadline: an event waiting for its lookup holds one of
// its source's in-flight slots, and a queue as long as the deadline would hold rate × deadline of them (times 25
// for a profile batch), enough to stall the stream on the budget. Waits that short still spend the whole budget
// while lookups arrive faster than it grants them: every token is taken as soon as it is there. (Bounding the
// events queued instead, 256 of them each up to its deadline, served a cold start's first burst but kept the
// stream at 0.85-0.90x of a 2,000 frames/s cold replay where this keeps it at 0.97x.)
func (ep *endpoint) admit(ctx context.Context, deadline time.Time) (release func(), err error) {
	now := time.Now()
	room := min(deadline.Sub(now)-ep.expected(), ep.maxWait)
	r := ep.limiter.ReserveN(now, 1)
	if !r.OK() {
		return nil, errBudget
	}
	if wait := r.DelayFrom(now); wait > room {
		r.CancelAt(now)
		return nil, fmt.Errorf("rate limit: %w", errBudget)
	} else if wait > 0 && !backoff.Sleep(ctx, wait) {
		r.Cancel()
		return nil, ctx.Err()
	}
	if ep.slots != nil {
		select {
		case ep.slots <- struct{}{}:
		default:
			t := time.NewTimer(max(0, min(time.Until(deadline)-ep.expected(), ep.maxWait)))
			select {
			case ep.slots <- struct{}{}:
				t.Stop()
			case <-t.C:
				return nil, fmt.Errorf("concurrency: %w", errBudget)
			case <-ctx.Done():
				t.Stop()
				return nil, ctx.Err()
			}
		}
	}
	ep.inFlight(1)
	return func() {
		ep.inFlight(-1)
		if ep.slots != nil {
			<-ep.slots
		}
	}, nil
}

// expected is how long a request sent now is expected to take: twice the moving average plus 5 ms, since a
// request that answers after its event's deadline spent the budget for nothing.
func (ep *endpoint) expected() time.Duration {
	return 2*time.Duration(ep.latency.Load()) + 5*time.Millisecond
}

// overBudget warns, once a minute at most, that lookups go unmade: the operator should know that events go on
// without metadata because of the rate limit or the concurrency bound, not a failing endpoint.
func (ep *endpoint) overBudget(err error) {
	now := time.Now().UnixNano()
	last := ep.budgetLogged.Load()
	if now-last < int64(time.Minute) || !ep.budgetLogged.CompareAndSwap(last, now) {
		return
	}
	ep.log.Warn("enrich: new accounts arrive faster than the lookup budget allows; their events go on without that "+
		"metadata (atkafka_enrich_missing_records{reason=\"budget\"}); raise --plc-rate-limit/--api-rate-limit or "+
		"--enrich-concurrency, or use a PLC mirror", "endpoint", ep.name, "reason", err)
}

// learn folds one answer's latency into the moving average (weight 1/8).
func (ep *endpoint) learn(d time.Duration) {
	old := ep.latency.Load()
	ep.latency.Store(old + (int64(d)-old)/8)
}

// do sends req and classifies the answer.
func (ep *endpoint) do(ctx context.Context, req *http.Request) attemptResult {
	start := time.Now()
	resp, err := ep.client.Do(req)
	a := ep.classify(ctx, resp, err)
	a.start = start
	return a
}

func (ep *endpoint) classify(ctx context.Context, resp *http.Response, err error) attemptResult {
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
	case backoff.TransientStatus(code):
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
