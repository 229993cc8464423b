package relay

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"path/filepath"
	"runtime"
	"time"

	"github.com/atkafka/atkafka/cursor"
	"github.com/atkafka/atkafka/sink"
	"github.com/atkafka/atkafka/source/stream"
	"github.com/atkafka/atkafka/transform"
)

// Defaults of the Config fields left at their zero value; atkafka's flags default to them too.
const (
	DefaultHost            = "wss://bsky.network"
	DefaultMaxInFlight     = 1024
	DefaultShutdownTimeout = 30 * time.Second
	// DefaultMaxFrameBytes is far above any frame a relay sends (commit CARs are capped near 2 MB) and small
	// enough that one hostile message cannot exhaust memory.
	DefaultMaxFrameBytes = 8 << 20
)

// DefaultWorkers is the default of Config.Workers: twice GOMAXPROCS, at least 4, since workers also wait on
// enrichment lookups.
func DefaultWorkers() int { return max(4, 2*runtime.GOMAXPROCS(0)) }

// subscribePath is the XRPC endpoint added to Config.Host.
const subscribePath = "/xrpc/com.atproto.sync.subscribeRepos"

// StartLive is the Config.StartCursor value that starts at the relay's tip, ignoring any saved cursor.
const StartLive = stream.Live

// Config configures a Source. The zero value of a field means its default.
type Config struct {
	// Host is the relay (or PDS) to subscribe to: ws, wss, http or https, with or without a scheme (wss is
	// assumed). The subscribeRepos path is added unless already present. Default DefaultHost.
	Host string
	// DataDir holds the cursor file, named after the relay host so that two relays never share one. It is
	// created if missing. Default: the working directory.
	DataDir string
	// StartCursor chooses where the first connection starts: "" resumes from the cursor file (or the tip when
	// there is none), StartLive starts at the tip, and a decimal seq N starts right after N once, after which the
	// cursor file takes over as usual.
	StartCursor string
	// Workers is how many goroutines turn frames into records. Frames of one DID always go to the same worker,
	// which keeps their order. Default DefaultWorkers().
	Workers int
	// MaxInFlight bounds the frames read from the relay and not yet acknowledged by Kafka. Reading stops while it
	// is reached, so memory is bounded by it and not by any backlog. Default DefaultMaxInFlight.
	MaxInFlight int
	// MaxFrameBytes is the largest websocket message accepted. Larger ones are dead-lettered, truncated, without
	// buffering them whole. Default DefaultMaxFrameBytes.
	MaxFrameBytes int
	// ShutdownTimeout bounds how long Run waits, after its context ends, for frames already read to be
	// acknowledged. Frames still pending then are read again after a restart. Default DefaultShutdownTimeout.
	ShutdownTimeout time.Duration

	// Sink receives one message per frame, through the source's checkpoint. Required.
	Sink sink.Sink
	// Pipeline filters, enriches and renders events. Required, with a Formatter.
	Pipeline *transform.Pipeline
	// DeadLetterTopic receives the frames that could not be turned into records. Required.
	DeadLetterTopic string
	// Logger receives state changes. Default slog.Default().
	Logger *slog.Logger
	// Observer receives the Source's measurements; nil observes nothing.
	Observer Observer
	// Verifier checks #commit and #sync frames (Sync 1.1) before they are rendered; nil verifies nothing.
	Verifier Verifier
	// Cursor keeps the committed cursor; nil means the cursor file in DataDir (CursorFile), bound to no Kafka
	// cluster. In exactly-once mode (Sink is a sink.Committer, kafka.TxnProducer) it is the Kafka cursor topic,
	// only loaded: the sink commits the cursor with the records.
	Cursor cursor.Store
}

// Verifier checks that a frame is what the account signed (transform/verify). body is the frame's DAG-CBOR
// body. A non-nil error rejects the frame: it is dead-lettered instead of rendered, with the error's
// DeadLetterReason() when it has one ("verify_failed" otherwise). Failures the Verifier lets through (fail
// open, log-only mode) are its own business: it returns nil for them.
type Verifier interface {
	Commit(ctx context.Context, body []byte) error
	Sync(ctx context.Context, body []byte) error
}

// withDefaults returns cfg with its zero fields set.
func (cfg Config) withDefaults() Config {
	cfg.Host = cmp.Or(cfg.Host, DefaultHost)
	cfg.DataDir = cmp.Or(cfg.DataDir, ".")
	cfg.Workers = cmp.Or(cfg.Workers, DefaultWorkers())
	cfg.MaxInFlight = cmp.Or(cfg.MaxInFlight, DefaultMaxInFlight)
	cfg.MaxFrameBytes = cmp.Or(cfg.MaxFrameBytes, DefaultMaxFrameBytes)
	cfg.ShutdownTimeout = cmp.Or(cfg.ShutdownTimeout, DefaultShutdownTimeout)
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Observer == nil {
		cfg.Observer = nopObserver{}
	}
	return cfg
}

// validate reports every problem of a defaulted Config at once.
func (cfg Config) validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if _, err := subscribeURL(cfg.Host); err != nil {
		bad("%w", err)
	}
	if _, _, err := parseStartCursor(cfg.StartCursor); err != nil {
		bad("%w", err)
	}
	if cfg.Workers < 0 || cfg.MaxInFlight < 0 || cfg.MaxFrameBytes < 0 || cfg.ShutdownTimeout < 0 {
		bad("negative workers, in-flight limit, frame size or shutdown timeout")
	}
	if cfg.Sink == nil {
		bad("no sink given")
	}
	if cfg.Pipeline == nil || cfg.Pipeline.Formatter == nil {
		bad("no pipeline with a formatter given")
	}
	if cfg.DeadLetterTopic == "" {
		bad("no dead-letter topic given")
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("invalid relay configuration: %w", err)
	}
	return nil
}

// subscribeURL turns a Host setting into the websocket URL of subscribeRepos, without a cursor.
func subscribeURL(host string) (*url.URL, error) {
	return stream.URL("relay host", host, subscribePath)
}

// cursorPath names the cursor file after the relay's host and port, so that two relays never share one.
func cursorPath(dir string, u *url.URL) string {
	return filepath.Join(dir, "relay-cursor-"+cursor.SafeName(u.Host)+".txt")
}

// CursorFile is the cursor file of host in dataDir (zero values meaning their defaults, as in Config) that a
// Source keeps when Config.Cursor is nil; atkafka binds it to its Kafka cluster (cursor.ForCluster) instead.
func CursorFile(dataDir, host string) (string, error) {
	u, err := subscribeURL(cmp.Or(host, DefaultHost))
	if err != nil {
		return "", err
	}
	return cursorPath(cmp.Or(dataDir, "."), u), nil
}

// noCursor is the reader's position before it read anything when starting at the tip.
const noCursor = stream.NoCursor

// parseStartCursor interprets Config.StartCursor: fromFile is true for "", seq is noCursor for the tip.
func parseStartCursor(s string) (seq int64, fromFile bool, err error) {
	return stream.ParseStartCursor(s)
}
