package labels

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"

	"github.com/atkafka/atkafka/cursor"
	"github.com/atkafka/atkafka/sink"
	"github.com/atkafka/atkafka/source/stream"
	"github.com/atkafka/atkafka/transform"
)

// Defaults of the Config fields left at their zero value.
const (
	// DefaultMaxInFlight bounds the frames of one labeler read and not yet acknowledged: labels come a few at a
	// time, so a small window keeps a replay's memory low without slowing it.
	DefaultMaxInFlight     = 256
	DefaultShutdownTimeout = 10 * time.Second
	// DefaultMaxFrameBytes is far above any #labels frame (labels are small) and small enough that one hostile
	// message cannot exhaust memory.
	DefaultMaxFrameBytes = 4 << 20
)

// subscribePath is the XRPC endpoint added to a labeler's host.
const subscribePath = "/xrpc/com.atproto.label.subscribeLabels"

// StartLive is the Config.StartCursor value that starts every labeler at its tip, ignoring saved cursors.
const StartLive = stream.Live

// Labeler is one labeler to subscribe to: by DID, whose document names the endpoint (#atproto_labeler, resolved
// again at every connection, so a labeler that moved is followed), or by host.
type Labeler struct {
	DID  string
	Host string
}

// Name identifies the labeler in metrics, logs, headers and cursor file names: its DID, or its host and port.
func (l Labeler) Name() string {
	if l.DID != "" {
		return l.DID
	}
	if u, err := stream.URL("labeler host", l.Host, subscribePath); err == nil {
		return u.Host
	}
	return l.Host
}

// Config configures a Source. The zero value of a field means its default.
type Config struct {
	// Labelers are the labelers to subscribe to, at least one, each once.
	Labelers []Labeler
	// Directory resolves DIDs: labelers' endpoints and the keys labels are verified with. Required when a labeler
	// is given by DID or Verify is not VerifyOff.
	Directory Directory
	// StartCursor chooses where each labeler starts: "" resumes from its saved cursor (its tip when there is
	// none), StartLive starts at its tip, and a decimal seq N starts right after N once ("0" replays the
	// labeler's whole history), after which the saved cursor takes over.
	StartCursor string
	// Cursor returns where a labeler's cursor is kept (a cursor.ForCluster file, or the exactly-once cursor
	// topic); nil means CursorFile in DataDir, bound to no Kafka cluster.
	Cursor func(l Labeler) (cursor.Store, error)
	// DataDir holds the cursor files when Cursor is nil. Default: the working directory.
	DataDir string
	// Verify says what to do with each label's signature.
	Verify VerifyMode
	// IncludeSig adds each label's signature to its record.
	IncludeSig bool
	// MaxInFlight bounds one labeler's frames read and not yet acknowledged; reading it pauses meanwhile.
	// Default DefaultMaxInFlight.
	MaxInFlight int
	// MaxFrameBytes is the largest websocket message accepted; larger ones are dead-lettered, truncated. Default
	// DefaultMaxFrameBytes.
	MaxFrameBytes int
	// ShutdownTimeout bounds how long Run waits, after its context ends, for what was read to be acknowledged.
	// Default DefaultShutdownTimeout.
	ShutdownTimeout time.Duration

	// Sink receives one message per frame. Required.
	Sink sink.Sink
	// SinkOf, when set, gives each labeler a sink of its own instead of Sink: with --exactly-once, a
	// transactional producer per labeler, since one transaction commits one cursor with its records.
	SinkOf func(l Labeler) sink.Sink
	// Pipeline renders labels and, with an enricher, adds the subject's eventMetadata. Required, with a
	// Formatter.
	Pipeline *transform.Pipeline
	// DeadLetterTopic receives what could not become label records. Required.
	DeadLetterTopic string
	// Logger receives state changes. Default slog.Default().
	Logger *slog.Logger
	// Observer receives the Source's measurements; nil observes nothing.
	Observer Observer
}

func (cfg Config) withDefaults() Config {
	cfg.DataDir = cmp.Or(cfg.DataDir, ".")
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
	if err := CheckLabelers(cfg.Labelers); err != nil {
		errs = append(errs, err)
	}
	byDID := slices.ContainsFunc(cfg.Labelers, func(l Labeler) bool { return l.DID != "" })
	if (byDID || cfg.Verify != VerifyOff) && cfg.Directory == nil {
		bad("no DID directory given, needed for labelers given by DID and for verification")
	}
	if _, _, err := stream.ParseStartCursor(cfg.StartCursor); err != nil {
		bad("%w", err)
	}
	if cfg.MaxInFlight < 0 || cfg.MaxFrameBytes < 0 || cfg.ShutdownTimeout < 0 {
		bad("negative in-flight limit, frame size or shutdown timeout")
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
		return fmt.Errorf("invalid labels configuration: %w", err)
	}
	return nil
}

// CheckLabelers reports every problem of a labeler list at once: none given, an empty entry, a DID or host that
// cannot be, one given twice. atkafka checks the flags with it before connecting to anything.
func CheckLabelers(labelers []Labeler) error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if len(labelers) == 0 {
		bad("no labeler given")
	}
	names := map[string]bool{}
	for _, l := range labelers {
		switch {
		case l.DID == "" && l.Host == "":
			bad("an empty labeler DID or host")
			continue
		case l.DID != "" && l.Host != "":
			bad("labeler %q and %q: a labeler is given by DID or by host, not both", l.DID, l.Host)
			continue
		case l.DID != "":
			if _, err := syntax.ParseDID(l.DID); err != nil {
				bad("labeler DID %q: %v", l.DID, err)
			}
		default:
			if _, err := stream.URL("labeler host", l.Host, subscribePath); err != nil {
				bad("%w", err)
			}
		}
		if names[l.Name()] {
			bad("labeler %s given twice", l.Name())
		}
		names[l.Name()] = true
	}
	return errors.Join(errs...)
}

// CursorFile is the cursor file of l in dataDir ("" meaning the working directory) that a Source keeps when
// Config.Cursor is nil; atkafka binds it to its Kafka cluster (cursor.ForCluster) instead.
func CursorFile(dataDir string, l Labeler) string {
	return filepath.Join(cmp.Or(dataDir, "."), "labels-cursor-"+cursor.SafeName(l.Name())+".txt")
}

// noCursor is a labeler's position before anything was read when it starts at its tip.
const noCursor = stream.NoCursor

// ParseLabelers turns the --labeler and --labeler-host values into Labelers.
func ParseLabelers(dids, hosts []string) []Labeler {
	var out []Labeler
	for _, d := range dids {
		out = append(out, Labeler{DID: strings.TrimSpace(d)})
	}
	for _, h := range hosts {
		out = append(out, Labeler{Host: strings.TrimSpace(h)})
	}
	return out
}
