package backfill

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bluesky-social/indigo/atproto/repo"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/atkafka/atkafka/backoff"
	"github.com/atkafka/atkafka/sink"
	"github.com/atkafka/atkafka/transform"
	"github.com/atkafka/atkafka/transform/filter"
	"github.com/atkafka/atkafka/transform/format"
)

// Defaults applied by Run to zero fields of RunConfig (atkafka's flags default to them too).
const (
	DefaultConcurrency     = 32
	DefaultHostConcurrency = 4
	// DefaultHostRate is what atkafka's --backfill-host-rate defaults to; a zero RunConfig.HostRate means no rate.
	DefaultHostRate           = 10.0
	DefaultRetryWindow        = 24 * time.Hour
	DefaultTransactionTimeout = time.Minute
	// DefaultSessionTimeout is kgo's own default, which a zero RunConfig.SessionTimeout keeps.
	DefaultSessionTimeout     = 45 * time.Second
	DefaultMemoryLimit        = 4 << 20
	DefaultMaxBufferedRecords = 10_000
)

// checkEvery is how many records a repository produces between two looks at its transaction's deadline: at least
// that many per transaction, so a split repository always progresses.
const checkEvery = 256

// BackfillHeader marks every record Run produces (value "true"). Values take Tap's shape (schema tap-event:
// operations with "live": false, account events without seq), the shape of backfilled records already; the header
// tells a consumer mixing them with Tap's or the relay's records which came from atkafka's backfill.
const BackfillHeader = "backfill"

// RunConfig configures Run.
type RunConfig struct {
	// Opts connect to Kafka and shape the producer (kafka.Config.ProducerOpts).
	Opts []kgo.Opt
	// WorkTopic is the plan's topic; Group the consumer group every instance joins.
	WorkTopic, Group string
	// OutputTopic receives the records, FailedTopic the repositories that failed for good (with the reason),
	// DeadLetterTopic single records that could not be decoded.
	OutputTopic, FailedTopic, DeadLetterTopic string

	// ExactlyOnce commits each batch's records with its work offsets in one transaction (TransactionalID, unique
	// per instance). Without it, offsets are committed after Kafka acknowledged the records: a crash repeats the
	// repositories of the batch in flight (at least once).
	ExactlyOnce        bool
	TransactionalID    string
	TransactionTimeout time.Duration
	// TransactionTime bounds how long a batch produces (default a quarter of TransactionTimeout): a repository
	// still producing then stops between two records and the rest of it is put back in the work topic (Work.After),
	// one still loading is put back whole (Work.Slow), so a repository of any size loads over as many transactions
	// as it takes, and read_committed consumers of the output topic are never held back longer than that by an
	// open transaction.
	TransactionTime time.Duration
	// SessionTimeout is how long the group waits for a silent instance before giving its partitions to the
	// others; zero keeps Kafka's client default (45s).
	SessionTimeout time.Duration

	// Concurrency is how many repositories an instance loads at once (also its batch size);
	// HostConcurrency and HostRate bound the getRepo requests to one PDS (HostRate per second, 0: no rate).
	Concurrency     int
	HostConcurrency int
	HostRate        float64
	// RetryWindow is how long a repository keeps being retried after its first transient failure (PDS down,
	// 5xx, rate limited) before it goes to FailedTopic.
	RetryWindow time.Duration
	// MemoryLimit is the CAR size held in memory; larger repositories are spilled to a file in TempDir.
	MemoryLimit int64
	TempDir     string
	// MaxBufferedRecords bounds the records produced and not yet acknowledged, whatever a repository's size.
	MaxBufferedRecords int

	// Pipeline renders records, applies the filters and resolves each account's PDS; its Enricher is required.
	Pipeline *transform.Pipeline
	// Verifier checks each repository's commit signature (--verify-commits); nil: no check.
	Verifier Verifier
	HTTP     *http.Client
	Logger   *slog.Logger
	// Observer receives the run's measurements; nil observes nothing.
	Observer Observer
}

func (cfg *RunConfig) defaults() error {
	cfg.Concurrency = cmp.Or(cfg.Concurrency, DefaultConcurrency)
	cfg.HostConcurrency = cmp.Or(cfg.HostConcurrency, DefaultHostConcurrency)
	cfg.RetryWindow = cmp.Or(cfg.RetryWindow, DefaultRetryWindow)
	cfg.TransactionTimeout = cmp.Or(cfg.TransactionTimeout, DefaultTransactionTimeout)
	cfg.TransactionTime = cmp.Or(cfg.TransactionTime, cfg.TransactionTimeout/4)
	cfg.MemoryLimit = cmp.Or(cfg.MemoryLimit, DefaultMemoryLimit)
	cfg.MaxBufferedRecords = cmp.Or(cfg.MaxBufferedRecords, DefaultMaxBufferedRecords)
	cfg.HTTP = cmp.Or(cfg.HTTP, &http.Client{Timeout: 10 * time.Minute})
	cfg.Logger = cmp.Or(cfg.Logger, slog.Default())
	cfg.Observer = observerOr(cfg.Observer)
	var errs []error
	if cfg.WorkTopic == "" || cfg.Group == "" || cfg.OutputTopic == "" || cfg.FailedTopic == "" || cfg.DeadLetterTopic == "" {
		errs = append(errs, errors.New("backfill run needs the work, output, failed and dead-letter topics and a group"))
	}
	if cfg.TransactionTime > cfg.TransactionTimeout/2 {
		errs = append(errs, fmt.Errorf("the transaction time (%s) must leave half the transaction timeout (%s) to flush and commit",
			cfg.TransactionTime, cfg.TransactionTimeout))
	}
	if cfg.ExactlyOnce && cfg.TransactionalID == "" {
		errs = append(errs, errors.New("exactly-once backfill needs a transactional id"))
	}
	if cfg.Pipeline == nil || cfg.Pipeline.Enricher == nil {
		errs = append(errs, errors.New("backfill run needs a pipeline with an enricher (each account's PDS)"))
	}
	return errors.Join(errs...)
}

// Verifier checks a repository's signed commit (*verify.Verifier): nil when it may be produced.
type Verifier interface {
	Repo(ctx context.Context, c *repo.Commit) error
}

// runner is one backfill run instance.
type runner struct {
	cfg   RunConfig
	log   *slog.Logger
	fetch *fetcher
	// produceErr is the first error a produce promise reported in the current batch; refused holds, by DID, the
	// errors of records Kafka refused for good (too large, say), so that when the aborted batch comes back those
	// repositories go to the failed topic instead of aborting it again, forever.
	mu         sync.Mutex
	produceErr error
	refused    map[string]error
}

// client is what the loop needs of Kafka: a plain group consumer (at least once) or a group transact session.
type client interface {
	poll(ctx context.Context, n int) kgo.Fetches
	begin() error
	produce(ctx context.Context, r *kgo.Record, promise func(*kgo.Record, error))
	// end commits the batch (records and the offsets of polled) or, when commit is false, drops it; it reports
	// whether it committed.
	end(ctx context.Context, polled []*kgo.Record, commit bool) (bool, error)
	close()
}

// Run consumes the work topic in cfg.Group until ctx ends, loading each repository.
func Run(ctx context.Context, cfg RunConfig) error {
	if err := cfg.defaults(); err != nil {
		return err
	}
	r := &runner{cfg: cfg, log: cfg.Logger, refused: map[string]error{}, fetch: &fetcher{http: cfg.HTTP, hosts: newHosts(cfg.HostConcurrency, cfg.HostRate),
		memLimit: cfg.MemoryLimit, tmpDir: cfg.TempDir}}
	opts := append(cfg.Opts[:len(cfg.Opts):len(cfg.Opts)],
		kgo.ConsumerGroup(cfg.Group), kgo.ConsumeTopics(cfg.WorkTopic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		// The producer's limit is ours here: Produce blocks when it is reached, which bounds memory whatever a
		// repository's size.
		kgo.MaxBufferedRecords(cfg.MaxBufferedRecords), kgo.MaxBufferedBytes(32<<20),
	)
	if cfg.SessionTimeout > 0 {
		opts = append(opts, kgo.SessionTimeout(cfg.SessionTimeout))
	}
	var cl client
	var err error
	if cfg.ExactlyOnce {
		cl, err = newTxnClient(append(opts, kgo.TransactionalID(cfg.TransactionalID), kgo.TransactionTimeout(cfg.TransactionTimeout)))
	} else {
		cl, err = newPlainClient(append(opts, kgo.DisableAutoCommit(), kgo.BlockRebalanceOnPoll()))
	}
	if err != nil {
		return fmt.Errorf("creating the Kafka client: %w", err)
	}
	defer cl.close()
	r.log.Info("backfill run starting", "group", cfg.Group, "work_topic", cfg.WorkTopic, "exactly_once", cfg.ExactlyOnce,
		"transactional_id", cfg.TransactionalID, "concurrency", cfg.Concurrency)
	for ctx.Err() == nil {
		fetches := cl.poll(ctx, cfg.Concurrency)
		if fetches.IsClientClosed() || ctx.Err() != nil {
			break
		}
		var fetchErr error
		fetches.EachError(func(topic string, p int32, err error) {
			if !errors.Is(err, context.Canceled) {
				fetchErr = cmp.Or(fetchErr, fmt.Errorf("fetching %s/%d: %w", topic, p, err))
			}
		})
		if fetchErr != nil {
			r.log.Warn("fetching work failed; polling again", "err", fetchErr)
		}
		polled := fetches.Records()
		if len(polled) == 0 {
			continue
		}
		if err := r.batch(ctx, cl, polled); err != nil {
			return err
		}
	}
	r.log.Info("backfill run stopping")
	return nil
}

// batch loads the repositories of polled concurrently, each producing its records as soon as it is loaded and
// checked, and commits them together. Kafka counts a transaction's timeout from its first record, so the batch
// produces for at most TransactionTime from then: a repository still producing is split, one still loading is
// deferred (put back, to load before anything of its next batch is produced, so that a download longer than a
// transaction can take is not deferred again).
func (r *runner) batch(ctx context.Context, cl client, polled []*kgo.Record) error {
	works := make([]polledWork, len(polled))
	for i, rec := range polled {
		works[i].rec = rec
		works[i].w, works[i].err = decodeWork(rec.Value)
	}
	r.waitDue(ctx, works)
	if err := cl.begin(); err != nil {
		return fmt.Errorf("beginning a transaction: %w", err)
	}
	r.mu.Lock()
	r.produceErr = nil
	r.mu.Unlock()
	r.cfg.Observer.Loading(len(polled))
	defer r.cfg.Observer.Loading(-len(polled))

	loadCtx, stopLoads := context.WithCancel(ctx)
	defer stopLoads()
	var (
		wg, slow sync.WaitGroup
		canceled atomic.Bool
		deadline time.Time // set before started is closed
		started  = make(chan struct{})
	)
	for _, pw := range works {
		isSlow := pw.err == nil && pw.w.Slow
		if isSlow {
			slow.Add(1)
		}
		wg.Go(func() {
			j, ok := r.load(ctx, loadCtx, cl, pw)
			if isSlow {
				slow.Done()
			}
			<-started
			switch {
			case !ok:
				canceled.Store(true)
			case j.produce != nil:
				j.produce(deadline)
			}
			if j.release != nil {
				j.release()
			}
		})
	}
	slow.Wait()
	deadline = time.Now().Add(r.cfg.TransactionTime)
	close(started)
	defer time.AfterFunc(r.cfg.TransactionTime, stopLoads).Stop()
	wg.Wait()

	r.mu.Lock()
	produceErr := r.produceErr
	r.mu.Unlock()
	commit := produceErr == nil && !canceled.Load() && ctx.Err() == nil
	if produceErr != nil {
		r.log.Warn("producing a batch failed; it is dropped and its repositories loaded again", "err", produceErr)
	}
	endCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.TransactionTimeout)
	defer cancel()
	committed, err := cl.end(endCtx, polled, commit)
	status := "aborted"
	if committed {
		status = "committed"
	}
	r.cfg.Observer.Transaction(status)
	if err != nil {
		return fmt.Errorf("ending a backfill batch: %w", err)
	}
	if !committed && ctx.Err() == nil {
		r.log.Info("backfill batch not committed (rebalance or produce error); its repositories will be loaded again", "repos", len(polled))
	}
	return nil
}

// polledWork is a polled work record, decoded once.
type polledWork struct {
	rec *kgo.Record
	w   *Work
	err error // why rec does not decode
}

// job is a loaded work record: what it produces in its batch's transaction (nil: nothing), and what to free
// then.
type job struct {
	produce func(deadline time.Time)
	release func()
}

// waitDue sleeps, briefly, when every repository of the batch is a retry not yet due, so that a partition
// holding only those does not spin.
func (r *runner) waitDue(ctx context.Context, works []polledWork) {
	now := time.Now()
	earliest := time.Time{}
	for _, pw := range works {
		if pw.err != nil || !pw.w.NotBefore.After(now) {
			return
		}
		if earliest.IsZero() || pw.w.NotBefore.Before(earliest) {
			earliest = pw.w.NotBefore
		}
	}
	backoff.Sleep(ctx, min(time.Until(earliest), 5*time.Second))
}

// load does what one work record needs before its batch produces: the account's lookups, the repository's
// download and checks. It decides what the record produces: the repository's records, its account event, a retry
// or a failure. It returns false when ctx ended, leaving the batch incomplete.
//
// Lookups, download and checks run under loadCtx, which ends with the batch's producing time: a repository not
// loaded by then is deferred.
func (r *runner) load(ctx, loadCtx context.Context, cl client, pw polledWork) (job, bool) {
	fail := func(w *Work, pds string, f *failure, raw []byte) job {
		return job{produce: func(time.Time) { r.failed(ctx, cl, w, pds, f, raw) }}
	}
	rec, w := pw.rec, pw.w
	if pw.err != nil {
		return fail(&Work{DID: string(rec.Key)}, "", permanent("bad_work", pw.err), rec.Value), true
	}
	r.mu.Lock()
	refused, ok := r.refused[w.DID]
	delete(r.refused, w.DID)
	r.mu.Unlock()
	if ok {
		return fail(w, "", permanent("produce_refused", refused), nil), true
	}
	now := time.Now()
	if w.NotBefore.After(now) {
		// Not due yet: back to the end of its partition, so that the repositories behind it go first.
		return job{produce: func(time.Time) {
			r.emit(ctx, cl, sink.Record{Topic: r.cfg.WorkTopic, Key: rec.Key, Value: rec.Value})
		}}, true
	}
	p := r.cfg.Pipeline
	pend := &transform.Pending{DID: w.DID, Deadline: p.Deadline(now)}
	ready := make(chan struct{})
	pend.Ready = func() { close(ready) }
	p.Prepare(pend)
	select {
	case <-ready:
	case <-loadCtx.Done():
		return r.deferred(ctx, cl, w)
	}
	if !p.KeepAccount(w.DID, &pend.Meta) {
		r.cfg.Observer.Repo("filtered")
		return job{}, true
	}
	account := func(status string) job {
		return job{produce: func(time.Time) { r.account(ctx, cl, w, pend, status) }}
	}
	if w.inactive() {
		return account(w.Status), true
	}
	pds := pend.Meta.PDSHost()
	switch {
	case pds == "" && pend.Meta.PDS().Outcome == filter.NoPDS:
		// Definitive: the PLC does not know the DID, or its document names no PDS. Retrying cannot help.
		return fail(w, pds, permanent("no_pds", errNoPDS), nil), true
	case pds == "":
		f := transient("pds_unknown", errors.New("the account's DID document could not be looked up"))
		return job{produce: func(time.Time) { r.retry(ctx, cl, w, pds, f) }}, true
	}
	data, err := r.get(loadCtx, pds, w.DID)
	var inactive *inactiveError
	var f *failure
	switch {
	case loadCtx.Err() != nil:
		if data != nil {
			data.release()
		}
		return r.deferred(ctx, cl, w)
	case errors.As(err, &inactive):
		return account(inactive.status), true
	case errors.As(err, &f) && f.permanent:
		return fail(w, pds, f, nil), true
	case errors.As(err, &f):
		return job{produce: func(time.Time) { r.retry(ctx, cl, w, pds, f) }}, true
	}
	repo, f := r.check(loadCtx, w, data.b)
	switch {
	case loadCtx.Err() != nil: // a verifier's lookup cut short is no verdict
		if repo != nil {
			repo.release()
		}
		data.release()
		return r.deferred(ctx, cl, w)
	case f != nil:
		data.release()
		return fail(w, pds, f, nil), true
	}
	// Released once its records are produced: nothing produced points into the CAR.
	release := func() {
		repo.release()
		data.release()
	}
	return job{release: release, produce: func(deadline time.Time) { r.records(ctx, cl, w, pend, repo, deadline) }}, true
}

// deferred puts back a repository not loaded within its batch's producing time, marked to load before its next
// batch produces anything; it returns false when ctx ended instead (shutdown, not the batch's time).
func (r *runner) deferred(ctx context.Context, cl client, w *Work) (job, bool) {
	if ctx.Err() != nil {
		return job{}, false
	}
	return job{produce: func(time.Time) {
		rest := *w
		rest.Slow = true
		r.emit(ctx, cl, sink.Record{Topic: r.cfg.WorkTopic, Key: []byte(w.DID), Value: rest.encode()})
		r.cfg.Observer.Repo("deferred")
	}}, true
}

// get downloads a repository, retrying transient failures a few times at once (a 5xx, a reset connection)
// before the repository is put back for later.
func (r *runner) get(ctx context.Context, pds, did string) (*repoData, error) {
	bo := backoff.New(250*time.Millisecond, 2*time.Second)
	for {
		start := time.Now()
		d, err := r.fetch.getRepo(ctx, pds, did)
		if err == nil {
			r.cfg.Observer.Fetched(time.Since(start), len(d.b))
			return d, nil
		}
		var f *failure
		if !errors.As(err, &f) || f.permanent || bo.Attempt() >= 2 || ctx.Err() != nil {
			if f != nil {
				r.cfg.Observer.FetchError(f.reason)
			}
			return nil, err
		}
		r.cfg.Observer.FetchError(f.reason)
		if !backoff.Sleep(ctx, bo.Next()) {
			return nil, ctx.Err()
		}
	}
}

// account produces the account event of an inactive account, its only record in a backfill.
func (r *runner) account(ctx context.Context, cl client, w *Work, pend *transform.Pending, status string) {
	p := r.cfg.Pipeline
	ev := &format.Event{DID: w.DID, Timestamp: time.Now().UTC().Format(format.TimeFormat), Account: &format.Account{Active: false, Status: status}}
	ev.Metadata = p.AppendMetadata(nil, pend, 1)
	did := []byte(w.DID)
	r.emit(ctx, cl, sink.Record{Key: did, Value: p.AppendValue(nil, ev), Headers: []sink.Header{
		{Key: "did", Value: did}, {Key: BackfillHeader, Value: []byte("true")}}})
	r.cfg.Observer.Repo("inactive")
}

// retry puts a repository back at the end of its partition after a transient failure, due after a backoff, or
// sends it to the failed topic once its retry window has passed.
func (r *runner) retry(ctx context.Context, cl client, w *Work, pds string, f *failure) {
	now := time.Now()
	if w.FirstFailure.IsZero() {
		w.FirstFailure = now
	}
	if now.Sub(w.FirstFailure) > r.cfg.RetryWindow {
		r.failed(ctx, cl, w, pds, &failure{reason: f.reason, permanent: true,
			err: fmt.Errorf("still failing %s after the first failure: %w", r.cfg.RetryWindow, f.err)}, nil)
		return
	}
	w.Attempt++
	w.LastError = f.Error()
	delay := min(time.Second<<min(w.Attempt, 20), time.Hour)
	w.NotBefore = now.Add(delay)
	r.emit(ctx, cl, sink.Record{Topic: r.cfg.WorkTopic, Key: []byte(w.DID), Value: w.encode()})
	r.cfg.Observer.Repo("retried")
}

// failed writes a repository that failed for good to the failed topic, with the reason and its work record.
func (r *runner) failed(ctx context.Context, cl client, w *Work, pds string, f *failure, raw []byte) {
	if raw == nil {
		raw = w.encode()
	}
	r.log.Warn("backfill of a repository failed for good", "did", w.DID, "pds", pds, "reason", f.reason, "err", f.err)
	dl := sink.DeadLetter{Source: "backfill", Reason: f.reason, Err: f.err, DID: w.DID, Raw: raw}
	rec := dl.Record(r.cfg.FailedTopic)
	rec.Headers = append(rec.Headers, sink.Header{Key: "pds", Value: []byte(pds)},
		sink.Header{Key: "attempt", Value: strconv.AppendInt(nil, int64(w.Attempt), 10)})
	r.emit(ctx, cl, rec)
	r.cfg.Observer.Repo("failed")
}
