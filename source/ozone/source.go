package ozone

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/atkafka/atkafka/backoff"
	"github.com/atkafka/atkafka/checkpoint"
	"github.com/atkafka/atkafka/cursor"
	"github.com/atkafka/atkafka/sink"
	"github.com/atkafka/atkafka/transform/format"
)

// Defaults of the Config fields left at their zero value; atkafka's flags default to them too.
const (
	DefaultPollInterval = time.Second
	DefaultSettleDelay  = 2 * time.Second
)

const (
	requestTimeout = 30 * time.Second
	// drainTimeout bounds how long Run waits at shutdown for Kafka to acknowledge what is in flight, so that the
	// cursor saved last includes it; whatever is still unacknowledged then is produced again after a restart.
	drainTimeout = 10 * time.Second
	pageLimit    = 100
	// maxInFlight bounds how far reading runs ahead of the cursor on disk: one page, so that a kill -9 repeats at
	// most the page in flight. Kafka acknowledges a page in milliseconds, far faster than any Ozone produces
	// events, so a wider window would buy little.
	maxInFlight = pageLimit
)

// Config configures a Source. PDSHost, Identifier, Password, LabelerDID, Cursor and Sink are required.
type Config struct {
	// PDSHost is the moderator's PDS, such as https://pds.example.com; every call goes through it.
	PDSHost string
	// Identifier and Password are the moderator's PDS login (handle or DID, and password or app password).
	Identifier string
	Password   string
	// LabelerDID is the Ozone service's DID; the PDS proxies to its #atproto_labeler endpoint.
	LabelerDID string
	// PollInterval is the wait after reaching the newest event before asking again. Default DefaultPollInterval.
	PollInterval time.Duration
	// SettleDelay keeps the source this far behind Ozone's clock: Ozone stamps createdAt before its transaction
	// commits, so the newest events may still be joined by older-stamped ones. It must exceed Ozone's longest
	// emitEvent transaction plus the clock skew between the hosts. Default DefaultSettleDelay; negative disables it.
	SettleDelay time.Duration
	// Cursor stores the position of the last acknowledged event; see the package documentation for its format.
	// A cursor file (atkafka's is bound to its Kafka cluster: cursor.ForCluster), or in exactly-once mode (Sink is
	// a sink.Committer) the Kafka cursor topic, only loaded: the sink commits the cursor with the records.
	Cursor cursor.Store
	// Sink receives one message per event.
	Sink sink.Sink
	// Topic overrides the sink's output topic. Empty means the sink's default.
	Topic string
	// Formatter wraps each event in the Osprey envelope it is configured with; nil, or one in standard mode,
	// produces the event unchanged.
	Formatter *format.Formatter
	// DeadLetterTopic receives events that cannot be produced (not a JSON object, no integer id) as
	// sink.DeadLetter records. Empty: they are skipped, counted in decode_errors and logged.
	DeadLetterTopic string
	// HTTPClient makes the requests. Default: a client with a 30s timeout.
	HTTPClient *http.Client
	// Logger receives state changes. Default slog.Default().
	Logger *slog.Logger
	// Observer receives the Source's measurements; nil observes nothing.
	Observer Observer
}

// Source polls one Ozone labeler and produces its moderation events. Create it with New.
type Source struct {
	cfg    Config
	log    *slog.Logger
	auth   *authenticator
	xrpc   *xrpcClient
	proxy  string
	now    func() time.Time
	settle time.Duration

	// Backoff bounds and the shutdown wait; tests shorten them.
	minBackoff, maxBackoff time.Duration
	drainTimeout           time.Duration

	// cp orders the events' positions, saves the cursor as soon as it moves, bounds the events read and not yet
	// saved to maxInFlight, and drains.
	cp        *checkpoint.Checkpoint[position]
	sinkRetry *retrier
	lastRead  position // of the newest event read; used by the polling goroutine only
	// stop ends Run with a sink that stopped for good (sink.ErrStopped): retrying cannot deliver anything.
	stop context.CancelCauseFunc
}

// New checks cfg and returns a Source. It does not contact the PDS: Run does, so that start-up errors surface
// where the service runs.
func New(cfg Config) (*Source, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	settle := cfg.SettleDelay
	if settle == 0 {
		settle = DefaultSettleDelay
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: requestTimeout}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Observer == nil {
		cfg.Observer = nopObserver{}
	}
	log := cfg.Logger.With("source", "ozone")
	xc := &xrpcClient{http: cfg.HTTPClient, host: strings.TrimRight(cfg.PDSHost, "/"), timeout: requestTimeout}
	s := &Source{
		cfg:          cfg,
		log:          log,
		xrpc:         xc,
		proxy:        cfg.LabelerDID + "#atproto_labeler",
		now:          time.Now,
		settle:       max(settle, 0),
		minBackoff:   500 * time.Millisecond,
		maxBackoff:   30 * time.Second,
		drainTimeout: drainTimeout,
	}
	// The in-flight window counts events read but not yet durable in the cursor store, rather than events not yet
	// acknowledged by Kafka: that is what bounds the repeats after a kill -9 to one window. The cursor is therefore
	// saved as soon as it moves (one fsync per Kafka acknowledgement batch, cheap at Ozone's event rates).
	s.cp = checkpoint.New(checkpoint.Config[position]{Sink: cfg.Sink, Store: cfg.Cursor, Cursor: position.cursor,
		Window: maxInFlight, OnAdvance: s.advanced, Logger: log})
	s.auth = &authenticator{xrpc: xc, identifier: cfg.Identifier, password: cfg.Password, log: log, now: s.now, obs: cfg.Observer}
	return s, nil
}

func (c *Config) validate() error {
	var missing []string
	for _, f := range []struct{ name, v string }{
		{"PDSHost", c.PDSHost}, {"Identifier", c.Identifier}, {"Password", c.Password}, {"LabelerDID", c.LabelerDID},
	} {
		if f.v == "" {
			missing = append(missing, f.name)
		}
	}
	if c.Cursor == nil {
		missing = append(missing, "Cursor")
	}
	if c.Sink == nil {
		missing = append(missing, "Sink")
	}
	if len(missing) > 0 {
		return fmt.Errorf("ozone: missing configuration: %s", strings.Join(missing, ", "))
	}
	if u, err := url.Parse(c.PDSHost); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("ozone: PDS host %q is not an http(s) URL", c.PDSHost)
	}
	if !strings.HasPrefix(c.LabelerDID, "did:") {
		return fmt.Errorf("ozone: labeler DID %q is not a DID", c.LabelerDID)
	}
	return nil
}

// Run produces events until ctx ends, then waits briefly for Kafka to acknowledge what is in flight, saves the
// cursor and returns nil. Outages of the PDS, Ozone or Kafka are retried forever; Run returns an error only when
// it cannot start (an unreadable cursor file or credentials the PDS rejects) or when the sink stopped for good
// (an exactly-once producer fenced by another instance). Run must not be called twice.
func (s *Source) Run(ctx context.Context) error {
	start, err := s.loadCursor()
	if err != nil {
		return err
	}
	if err := s.startSession(ctx); err != nil || ctx.Err() != nil {
		return err
	}
	s.sinkRetry = s.newRetrier("kafka delivery")
	outer := ctx
	ctx, s.stop = context.WithCancelCause(ctx)
	defer s.stop(nil)
	s.cp.Start()
	pollErr := s.poll(ctx, start)
	s.drain()
	_ = s.cp.Close() // a failed final save is logged; it only repeats the last events after a restart
	if pollErr != nil {
		return pollErr
	}
	if outer.Err() == nil && ctx.Err() != nil {
		return context.Cause(ctx)
	}
	return nil
}

// loadCursor returns the position to resume after, or nil to start at Ozone's oldest event.
func (s *Source) loadCursor() (*position, error) {
	line, ok, err := s.cp.Load()
	if err != nil || !ok {
		return nil, err
	}
	p, legacy, err := parsePosition(line)
	if err != nil {
		return nil, fmt.Errorf("ozone: %s: %w", s.cp.Describe(), err)
	}
	if legacy {
		s.log.Info("starting from a timestamp cursor of an earlier bridge; events of that millisecond may repeat",
			"created_at", p.createdAt.Format(isoMillis))
	} else {
		s.log.Info("resuming", "after_created_at", p.createdAt.Format(isoMillis), "after_id", p.id)
	}
	return &p, nil
}

// startSession logs in, retrying while the PDS is unreachable; rejected credentials are a start-up error.
func (s *Source) startSession(ctx context.Context) error {
	r := s.newRetrier("ozone login")
	for {
		err := s.auth.login(ctx)
		if err == nil {
			r.ok()
			s.log.Info("logged in", "pds", s.xrpc.host, "did", s.auth.sess.did, "labeler", s.cfg.LabelerDID)
			return nil
		}
		if errors.Is(err, errCredentials) {
			return err
		}
		if !backoff.Sleep(ctx, r.failed(err)) {
			return nil
		}
	}
}

func (s *Source) newRetrier(what string) *retrier {
	return newRetrier(s.log, what, s.minBackoff, s.maxBackoff)
}
