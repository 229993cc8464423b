package ozone

import (
	"log/slog"
	"sync"
	"time"

	"github.com/atkafka/atkafka/backoff"
)

// maxRetryAfter caps a server's Retry-After, so that a misconfigured proxy asking for hours does not stall the
// source silently.
const maxRetryAfter = 5 * time.Minute

// retrier spaces out retries of one operation and logs once when the operation starts failing and once when it
// recovers, however many retries lie between. Safe for concurrent use: Kafka delivery failures arrive from sink
// goroutines.
type retrier struct {
	log  *slog.Logger
	what string

	mu       sync.Mutex
	policy   *backoff.Policy
	failures int
	since    time.Time
}

func newRetrier(log *slog.Logger, what string, base, max time.Duration) *retrier {
	return &retrier{log: log, what: what, policy: backoff.New(base, max)}
}

// failed records a failure and returns how long to wait before the next attempt: the backoff, or the server's
// Retry-After when that is longer.
func (r *retrier) failed(err error) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failures++
	if r.failures == 1 {
		r.since = time.Now()
		r.log.Warn(r.what+" failing; retrying with backoff", "err", err)
	}
	return max(r.policy.Next(), min(retryAfter(err), maxRetryAfter))
}

// ok records a success, logging the recovery when failures preceded it.
func (r *retrier) ok() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failures == 0 {
		return
	}
	r.log.Info(r.what+" recovered", "failed_attempts", r.failures, "after", time.Since(r.since).Round(time.Millisecond))
	r.failures = 0
	r.policy.Reset()
}
