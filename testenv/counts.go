package testenv

import "sync"

// Counts is a set of counters by name, safe for concurrent use: what a test's own observer keeps, so that the
// test reads its own numbers rather than deltas of process-wide metrics that other tests move too. The zero
// value is ready.
type Counts struct {
	mu sync.Mutex
	n  map[string]int
}

// Add adds n to the counter key.
func (c *Counts) Add(key string, n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[key] += n
}

// Get reads the counter key.
func (c *Counts) Get(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[key]
}
