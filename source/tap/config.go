package tap

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/atkafka/atkafka/sink"
	"github.com/atkafka/atkafka/transform"
)

// Defaults applied by New to zero fields of Config; atkafka's flags default to them too.
const (
	DefaultHost         = "ws://localhost:2480"
	DefaultWorkers      = 10
	DefaultDrainTimeout = 30 * time.Second
	// DefaultMaxInFlight bounds the events read and not yet handed to the sink, most of them waiting for their
	// account's metadata: enough for a cold backfill's lookups to overlap against a PLC 50 ms away.
	DefaultMaxInFlight = 1024
)

// adminUser is the HTTP Basic user Tap's --admin-password protects every route with.
const adminUser = "admin"

// Config configures a Source. The zero value of a field means its default.
type Config struct {
	// Host is Tap's address, ws://, wss://, http:// or https://; default DefaultHost. The /channel path is
	// added unless the address already ends with it.
	Host string
	// AdminPassword is Tap's --admin-password, sent with HTTP Basic auth as user admin. Empty sends none.
	AdminPassword string
	// DisableAcks must match Tap's --disable-acks: no acks are sent, and events in flight when atkafka or Kafka
	// fails are lost.
	DisableAcks bool
	// Workers is the number of goroutines filtering, enriching and rendering events; default DefaultWorkers. A DID's events
	// always go to the same worker.
	Workers int
	// MaxInFlight bounds the events read from Tap and not yet handed to the sink (waiting for their metadata or a
	// worker); reading stops while it is reached. Default DefaultMaxInFlight.
	MaxInFlight int
	// DrainTimeout bounds how long Run, once its context ends, waits for Kafka to acknowledge the events already
	// handed to the sink so that their acks can still be sent; default DefaultDrainTimeout. Events not acked by then are sent
	// again by Tap.
	DrainTimeout time.Duration

	// Sink receives one message per Tap event that was not filtered out.
	Sink sink.Sink
	// Pipeline filters, enriches and renders events; its Formatter is required.
	Pipeline *transform.Pipeline
	// DeadLetterTopic receives the Tap messages that could not be decoded.
	DeadLetterTopic string
	// Logger receives state changes; default slog.Default().
	Logger *slog.Logger
	// Observer receives the measurements (cursor, lag, latency, acks, decode errors, reconnects); nil: none.
	Observer Observer
}

func (c Config) withDefaults() Config {
	c.Host = cmp.Or(c.Host, DefaultHost)
	c.Workers = cmp.Or(c.Workers, DefaultWorkers)
	c.MaxInFlight = cmp.Or(c.MaxInFlight, DefaultMaxInFlight)
	c.DrainTimeout = cmp.Or(c.DrainTimeout, DefaultDrainTimeout)
	c.Logger = cmp.Or(c.Logger, slog.Default())
	c.Observer = cmp.Or(c.Observer, Observer(nopObserver{}))
	return c
}

func (c Config) validate() error {
	var errs []error
	if c.Sink == nil {
		errs = append(errs, errors.New("tap: Config.Sink is required"))
	}
	if sink.CommitsCursor(c.Sink) {
		// A Committer stores a cursor with the records and needs messages in cursor order: Tap acks each event on
		// its own, in any order, and has no cursor to give it.
		errs = append(errs, errors.New("tap: Config.Sink stores a source cursor (exactly-once), and Tap events have none"))
	}
	if c.Pipeline == nil || c.Pipeline.Formatter == nil {
		errs = append(errs, errors.New("tap: Config.Pipeline with a Formatter is required"))
	}
	if c.DeadLetterTopic == "" {
		errs = append(errs, errors.New("tap: Config.DeadLetterTopic is required: undecodable events are written there before they are acked"))
	}
	if c.MaxInFlight < 0 {
		errs = append(errs, fmt.Errorf("tap: Config.MaxInFlight must be positive, got %d", c.MaxInFlight))
	}
	if c.Workers < 0 {
		errs = append(errs, fmt.Errorf("tap: Config.Workers must be positive, got %d", c.Workers))
	}
	if _, err := channelURL(c.Host); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// channelURL turns Config.Host into the /channel websocket address.
func channelURL(host string) (string, error) {
	u, err := url.Parse(host)
	if err != nil {
		return "", fmt.Errorf("tap: invalid host %q: %w", host, err)
	}
	switch u.Scheme {
	case "ws", "wss", "http", "https":
	default:
		return "", fmt.Errorf("tap: host %q must start with ws://, wss://, http:// or https://", host)
	}
	if u.Host == "" {
		return "", fmt.Errorf("tap: host %q names no host", host)
	}
	if !strings.HasSuffix(u.Path, "/channel") {
		u.Path = strings.TrimSuffix(u.Path, "/") + "/channel"
	}
	return u.String(), nil
}
