package backfill

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/atkafka/atkafka/backoff"
)

// failure is why a repository could not be loaded. Permanent failures go to the failed topic at once; the others
// are retried until the retry window has passed.
type failure struct {
	reason    string // bounded: a metric label and the failed record's reason
	permanent bool
	err       error
}

func (f *failure) Error() string { return f.reason + ": " + f.err.Error() }
func (f *failure) Unwrap() error { return f.err }

func permanent(reason string, err error) *failure {
	return &failure{reason: reason, permanent: true, err: err}
}
func transient(reason string, err error) *failure { return &failure{reason: reason, err: err} }

// inactiveError is a PDS saying the account is not active: its account event is produced instead of records.
type inactiveError struct{ status string }

func (e *inactiveError) Error() string { return "account " + e.status }

// hosts limits the requests to each PDS: at most concurrency at once, rate per second, and none while the host
// asked us to wait (429, or RateLimit-Remaining 0 until RateLimit-Reset). One slow or throttling PDS holds up only
// the repositories it hosts.
type hosts struct {
	concurrency int
	rate        float64

	mu sync.Mutex
	m  map[string]*host
}

type host struct {
	sem chan struct{}
	lim *rate.Limiter

	mu    sync.Mutex
	until time.Time // no request before this
}

func newHosts(concurrency int, perSecond float64) *hosts {
	return &hosts{concurrency: max(1, concurrency), rate: perSecond, m: map[string]*host{}}
}

func (hs *hosts) get(name string) *host {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	h, ok := hs.m[name]
	if !ok {
		lim := rate.NewLimiter(rate.Inf, 1)
		if hs.rate > 0 {
			lim = rate.NewLimiter(rate.Limit(hs.rate), max(1, int(hs.rate)))
		}
		h = &host{sem: make(chan struct{}, hs.concurrency), lim: lim}
		hs.m[name] = h
	}
	return h
}

// acquire waits for a request slot on h; release it when the response is read.
func (h *host) acquire(ctx context.Context) (release func(), err error) {
	select {
	case h.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	for {
		h.mu.Lock()
		wait := time.Until(h.until)
		h.mu.Unlock()
		if wait <= 0 {
			break
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			<-h.sem
			return nil, ctx.Err()
		}
	}
	if err := h.lim.Wait(ctx); err != nil {
		<-h.sem
		return nil, err
	}
	return func() { <-h.sem }, nil
}

// observe reads the RateLimit-* headers (and Retry-After on a 429): when the host says its budget is spent, no
// request goes to it before the reset.
func (h *host) observe(resp *http.Response, now time.Time) {
	var until time.Time
	reset := func() time.Time {
		v, err := strconv.ParseInt(resp.Header.Get("RateLimit-Reset"), 10, 64)
		if err != nil {
			return time.Time{}
		}
		if v < 1e9 { // some servers send seconds from now rather than a Unix time
			return now.Add(time.Duration(v) * time.Second)
		}
		return time.Unix(v, 0)
	}
	if rem := resp.Header.Get("RateLimit-Remaining"); rem == "0" {
		until = reset()
	}
	if resp.StatusCode == http.StatusTooManyRequests {
		until = reset()
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil {
			until = now.Add(time.Duration(s) * time.Second)
		}
		if until.IsZero() {
			until = now.Add(5 * time.Second)
		}
	}
	if until.IsZero() {
		return
	}
	if limit := now.Add(10 * time.Minute); until.After(limit) { // a bogus header must not park a host for good
		until = limit
	}
	h.mu.Lock()
	if until.After(h.until) {
		h.until = until
	}
	h.mu.Unlock()
}

// fetcher downloads repositories.
type fetcher struct {
	http  *http.Client
	hosts *hosts
	// memLimit is the size up to which a repository is held in memory; larger ones are written to a temporary
	// file in tmpDir and mapped, so memory stays bounded whatever a repository's size.
	memLimit int64
	tmpDir   string
	bufs     sync.Pool
}

// repoData is a downloaded repository CAR; release it once its records are produced.
type repoData struct {
	b       []byte
	release func()
}

// getRepo downloads did's repository from pds. It returns *failure or *inactiveError on failure.
func (f *fetcher) getRepo(ctx context.Context, pds, did string) (*repoData, error) {
	u, err := url.Parse(pds)
	if err != nil || u.Host == "" {
		return nil, permanent("bad_pds", fmt.Errorf("PDS endpoint %q", pds))
	}
	h := f.hosts.get(u.Host)
	release, err := h.acquire(ctx)
	if err != nil {
		return nil, transient("canceled", err)
	}
	defer release()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet,
		strings.TrimSuffix(pds, "/")+"/xrpc/com.atproto.sync.getRepo?did="+url.QueryEscape(did), nil)
	if err != nil {
		return nil, permanent("bad_pds", err)
	}
	req.Header.Set("Accept", "application/vnd.ipld.car")
	resp, err := f.http.Do(req)
	if err != nil {
		return nil, transient("unreachable", err)
	}
	defer resp.Body.Close()
	h.observe(resp, time.Now())
	if resp.StatusCode != http.StatusOK {
		return nil, classify(resp)
	}
	d, err := f.read(resp.Body)
	if err != nil {
		return nil, transient("read", err)
	}
	return d, nil
}

// classify turns an error response into a failure; the XRPC error name tells a missing repository (permanent)
// from an inactive account (its account event) and from a PDS in trouble (transient).
func classify(resp *http.Response) error {
	var x struct {
		Error   string `json:"error"`
		Message string `json:"message"`
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	_ = json.Unmarshal(body, &x)
	err := fmt.Errorf("%s: %s %s", resp.Status, x.Error, x.Message)
	switch {
	case x.Error == "RepoTakendown":
		return &inactiveError{status: "takendown"}
	case x.Error == "RepoDeactivated":
		return &inactiveError{status: "deactivated"}
	case x.Error == "RepoSuspended":
		return &inactiveError{status: "suspended"}
	case resp.StatusCode == http.StatusNotFound || x.Error == "RepoNotFound":
		return permanent("not_found", err)
	case resp.StatusCode == http.StatusTooManyRequests:
		return transient("rate_limited", err)
	case backoff.TransientStatus(resp.StatusCode): // 408 and 5xx
		return transient("server_error", err)
	}
	return permanent("http_"+strconv.Itoa(resp.StatusCode), err)
}

// read reads a CAR into a pooled buffer, or, past memLimit, into a mapped temporary file.
func (f *fetcher) read(r io.Reader) (*repoData, error) {
	buf, _ := f.bufs.Get().(*bytes.Buffer)
	if buf == nil {
		buf = new(bytes.Buffer)
	}
	buf.Reset()
	n, err := buf.ReadFrom(io.LimitReader(r, f.memLimit+1))
	if err != nil {
		f.put(buf)
		return nil, err
	}
	if n <= f.memLimit {
		return &repoData{b: buf.Bytes(), release: func() { f.put(buf) }}, nil
	}
	defer f.put(buf)
	return spill(f.tmpDir, buf.Bytes(), r)
}

// put pools buf again unless it is large: a pooled buffer keeps its size, so small repositories would end up each
// holding the largest buffer seen. Past 256 KB (~800 records) buffers go back to the GC.
func (f *fetcher) put(buf *bytes.Buffer) {
	if buf.Cap() <= 256<<10 {
		f.bufs.Put(buf)
	}
}

var errNoPDS = errors.New("the PLC does not know the account, or its DID document names no PDS")
