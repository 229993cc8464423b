package backfill

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/atkafka/atkafka/backoff"
	"github.com/atkafka/atkafka/cursor"
	"github.com/atkafka/atkafka/sink"
	"github.com/atkafka/atkafka/transform"
)

// PlanDone is the plan cursor once the listing reached its end: a plan that finds it does nothing, which makes
// re-running plan idempotent.
const PlanDone = "done"

// DefaultPageSize is listRepos' largest page.
const DefaultPageSize = 1000

// PlanConfig configures Plan.
type PlanConfig struct {
	// Host is the relay (or PDS) listing the repositories, an http(s) URL.
	Host string
	// Collection, when set, lists only the repositories holding records of it (listReposByCollection).
	Collection string
	// PageSize is the listing's page size; default DefaultPageSize.
	PageSize int
	// Sink writes the work records (Topic empty: the work topic) and must commit each message's Cursor with its
	// records (kafka.TxnProducer): that is what makes a crashed plan resume without repeating or losing a page.
	Sink sink.Sink
	// Cursor is where Sink keeps the plan's page cursor.
	Cursor cursor.Store
	// Pipeline applies the service filters (its Accounts); nil or without them, every repository is planned.
	Pipeline *transform.Pipeline
	HTTP     *http.Client
	Logger   *slog.Logger
	// Observer receives the plan's measurements; nil observes nothing.
	Observer Observer
}

// listed is one page of listRepos or listReposByCollection.
type listed struct {
	Cursor string `json:"cursor"`
	Repos  []Work `json:"repos"`
}

// Plan lists every repository of cfg.Host into the work topic, one record per DID, resuming after the last page
// a previous run committed. It returns once every page is committed.
func Plan(ctx context.Context, cfg PlanConfig) (planned int64, err error) {
	cfg.PageSize = cmp.Or(cfg.PageSize, DefaultPageSize)
	cfg.HTTP = cmp.Or(cfg.HTTP, http.DefaultClient)
	log := cmp.Or(cfg.Logger, slog.Default())
	obs := observerOr(cfg.Observer)
	page, ok, err := cfg.Cursor.Load()
	if err != nil {
		return 0, fmt.Errorf("loading the plan cursor: %w", err)
	}
	if ok && page == PlanDone {
		log.Info("backfill plan already complete; nothing to do")
		return 0, nil
	}
	log.Info("backfill plan starting", "host", cfg.Host, "collection", cfg.Collection, "resume_cursor", page)

	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	failed := func() error {
		mu.Lock()
		defer mu.Unlock()
		return firstErr
	}
	defer wg.Wait()
	for pos := uint64(0); ; pos++ {
		if err := failed(); err != nil {
			return planned, err
		}
		l, err := cfg.list(ctx, page, log)
		if err != nil {
			return planned, err
		}
		repos := cfg.keep(ctx, l.Repos)
		next := l.Cursor
		if next == "" || len(l.Repos) == 0 {
			next = PlanDone
		}
		msg := &sink.Message{Mark: sink.Mark{Position: pos, Cursor: next}, Records: make([]sink.Record, len(repos))}
		for i := range repos {
			msg.Records[i] = sink.Record{Key: []byte(repos[i].DID), Value: repos[i].encode()}
		}
		n := len(repos)
		wg.Add(1)
		msg.Done = func(err error) {
			defer wg.Done()
			if err != nil {
				mu.Lock()
				firstErr = cmp.Or(firstErr, err)
				mu.Unlock()
				return
			}
			obs.Planned(n)
		}
		if err := cfg.Sink.Send(ctx, msg); err != nil {
			wg.Done()
			return planned, err
		}
		planned += int64(n)
		if next == PlanDone {
			wg.Wait()
			if err := failed(); err != nil {
				return planned, err
			}
			log.Info("backfill plan complete", "planned_this_run", planned)
			return planned, nil
		}
		page = next
	}
}

// keep applies the service filters, looking each account's PDS up through the pipeline's scheduling.
func (cfg *PlanConfig) keep(ctx context.Context, repos []Work) []Work {
	p := cfg.Pipeline
	if p == nil || p.Accounts == nil {
		return repos
	}
	pend := make([]transform.Pending, len(repos))
	var wg sync.WaitGroup
	now := time.Now()
	for i := range repos {
		wg.Add(1)
		pend[i] = transform.Pending{DID: repos[i].DID, Deadline: p.Deadline(now), Ready: wg.Done}
		p.Prepare(&pend[i])
	}
	wg.Wait()
	kept := repos[:0]
	for i := range repos {
		if ctx.Err() == nil && p.KeepAccount(repos[i].DID, &pend[i].Meta) {
			kept = append(kept, repos[i])
		}
	}
	return kept
}

// list fetches one page, retrying transient failures (network, 429, 5xx) with backoff until ctx ends.
func (cfg *PlanConfig) list(ctx context.Context, page string, log *slog.Logger) (*listed, error) {
	q := url.Values{"limit": {strconv.Itoa(cfg.PageSize)}}
	method := "com.atproto.sync.listRepos"
	if cfg.Collection != "" {
		method = "com.atproto.sync.listReposByCollection"
		q.Set("collection", cfg.Collection)
	}
	if page != "" {
		q.Set("cursor", page)
	}
	u := strings.TrimSuffix(cfg.Host, "/") + "/xrpc/" + method + "?" + q.Encode()
	bo := backoff.New(time.Second, time.Minute)
	for {
		l, retry, err := cfg.get(ctx, u)
		if err == nil {
			return l, nil
		}
		if !retry || ctx.Err() != nil {
			return nil, fmt.Errorf("%s: %w", method, err)
		}
		d := bo.Next()
		log.Warn("listing repositories failed; retrying", "err", err, "retry_in", d)
		if !backoff.Sleep(ctx, d) {
			return nil, ctx.Err()
		}
	}
}

func (cfg *PlanConfig) get(ctx context.Context, u string) (l *listed, retry bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, false, err
	}
	resp, err := cfg.HTTP.Do(req)
	if err != nil {
		return nil, true, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, backoff.TransientStatus(resp.StatusCode), errors.New(resp.Status)
	}
	l = new(listed)
	if err := json.NewDecoder(resp.Body).Decode(l); err != nil {
		return nil, true, fmt.Errorf("decoding the page: %w", err)
	}
	return l, false, nil
}
