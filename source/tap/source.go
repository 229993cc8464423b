package tap

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/atkafka/atkafka/backoff"
)

const (
	// dialTimeout bounds one connection attempt, handshake included.
	dialTimeout = 10 * time.Second
	// maxMessageBytes caps one Tap event. coder/websocket's default (32 KiB) is smaller than a large record, and
	// a message over the limit closes the connection, after which Tap would resend it forever.
	maxMessageBytes = 64 << 20
	// Reconnection delays grow from backoffBase to backoffMax.
	backoffBase = 250 * time.Millisecond
	backoffMax  = 30 * time.Second
	// stableAfter is how long a connection must last, even without events, for backoff to start over: an idle
	// Tap sends nothing, and a connection that keeps working is not a failure to back off from.
	stableAfter = time.Minute
	// kafkaErrorLogEvery throttles the log line about events Kafka refused, which can come per event.
	kafkaErrorLogEvery = 10 * time.Second
)

// Source reads events from Tap's /channel websocket and delivers them to the sink, acking each to Tap once Kafka
// acknowledged it. Create it with New and call Run once.
type Source struct {
	cfg Config
	url string
	log *slog.Logger
	obs Observer

	connected    atomic.Bool
	lastProgress atomic.Int64 // Unix nanoseconds
	// read and settled count the events of the current connection handed to workers and those whose fate is
	// sealed (acked, or left for Tap to redeliver), for the readiness check: Tap's ids say nothing about order.
	read, settled atomic.Int64

	kafkaErrMu      sync.Mutex
	kafkaErrLogged  time.Time
	kafkaErrSkipped int
}

// New validates cfg and returns a Source. It does not connect: Run does.
func New(cfg Config) (*Source, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	u, _ := channelURL(cfg.Host) // validated above
	return &Source{cfg: cfg, url: u, log: cfg.Logger.With("source", "tap"), obs: cfg.Observer}, nil
}

// Connected reports whether a websocket connection to Tap is currently open.
func (s *Source) Connected() bool { return s.connected.Load() }

// LastProgress is when an ack was last written to Tap (with DisableAcks: when Kafka last acknowledged an event),
// the zero time before the first. An idle Tap sends nothing, so readiness checks should combine it with
// Connected rather than expect it to move all the time.
func (s *Source) LastProgress() time.Time {
	ns := s.lastProgress.Load()
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

// progress records that n events, the last with id lastID, were acked (Observer.Acked).
func (s *Source) progress(lastID uint64, n int) {
	s.lastProgress.Store(time.Now().UnixNano())
	s.settled.Add(int64(n))
	s.obs.Acked(lastID)
}

// Progress returns how many events of the current connection were handed to workers and how many of those are
// settled: acked, or left unacked for Tap to redeliver. While they differ and settled does not move, atkafka is
// stuck; when they are equal it is idle. A new connection starts both over, since Tap redelivers whatever the
// old one left unacked.
func (s *Source) Progress() (read, settled int64) {
	return s.read.Load(), s.settled.Load()
}

// Run connects to Tap and delivers its events until ctx ends, reconnecting with backoff when the connection
// drops or Tap restarts. After ctx ends it stops reading, waits up to DrainTimeout for Kafka to acknowledge the
// events already handed to the sink, sends their acks and returns nil. It returns an error only when Tap refuses
// the connection in a way retrying cannot fix (a wrong admin password, or Tap in webhook mode).
func (s *Source) Run(ctx context.Context) error {
	if s.cfg.DisableAcks {
		s.log.Warn("acks disabled: Tap counts an event as delivered once written to the socket, so events in flight are lost if atkafka or Kafka fails")
	}
	bo := backoff.New(backoffBase, backoffMax)
	for {
		worked, err := s.connectOnce(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, errPermanent) {
			return err
		}
		if worked {
			bo.Reset()
		}
		reason := "dial"
		if ce := (*connError)(nil); errors.As(err, &ce) {
			reason = ce.reason
		}
		s.obs.Reconnect(reason)
		delay := bo.Next()
		// One line per outage: the retries of the same outage log at debug level.
		level := slog.LevelDebug
		if bo.Attempt() == 1 {
			level = slog.LevelWarn
		}
		s.log.Log(ctx, level, "Tap connection ended; reconnecting", "reason", reason, "error", err,
			"retry_in", delay.Round(time.Millisecond), "attempt", bo.Attempt())
		if !backoff.Sleep(ctx, delay) {
			return nil
		}
	}
}

// connectOnce dials Tap and serves the connection until it ends, reporting whether the connection worked (an
// event arrived, or it lasted stableAfter) so that Run can start its backoff over.
func (s *Source) connectOnce(ctx context.Context) (bool, error) {
	conn, err := s.dial(ctx)
	if err != nil {
		return false, err
	}
	s.connected.Store(true)
	defer s.connected.Store(false)
	s.log.Info("connected to Tap", "url", s.url, "workers", s.cfg.Workers, "acks", !s.cfg.DisableAcks)
	start := time.Now()
	s.settled.Store(s.read.Load())
	ss := newSession(s, conn)
	err = ss.run(ctx)
	return ss.active.Load() || time.Since(start) >= stableAfter, err
}

func (s *Source) dial(ctx context.Context) (*websocket.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	opts := &websocket.DialOptions{HTTPHeader: http.Header{}}
	if s.cfg.AdminPassword != "" {
		cred := base64.StdEncoding.EncodeToString([]byte(adminUser + ":" + s.cfg.AdminPassword))
		opts.HTTPHeader.Set("Authorization", "Basic "+cred)
	}
	conn, resp, err := websocket.Dial(ctx, s.url, opts)
	if err != nil {
		if resp != nil {
			switch resp.StatusCode {
			case http.StatusBadRequest, http.StatusUnauthorized, http.StatusForbidden:
				return nil, fmt.Errorf("%w: %s: HTTP %d (check the admin password, and that Tap is not in webhook mode): %v",
					errPermanent, s.url, resp.StatusCode, err)
			}
		}
		return nil, &connError{"dial", err}
	}
	conn.SetReadLimit(maxMessageBytes)
	return conn, nil
}

// kafkaFailed logs, at most once per kafkaErrorLogEvery, that events Kafka refused are left for Tap to resend.
func (s *Source) kafkaFailed(err error) {
	s.kafkaErrMu.Lock()
	defer s.kafkaErrMu.Unlock()
	if time.Since(s.kafkaErrLogged) < kafkaErrorLogEvery {
		s.kafkaErrSkipped++
		return
	}
	s.log.Error("Kafka refused an event; not acking it, Tap sends it again after its retry timeout",
		"error", err, "more_since_last_log", s.kafkaErrSkipped)
	s.kafkaErrLogged, s.kafkaErrSkipped = time.Now(), 0
}
