package kafka

import (
	"cmp"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// Defaults applied by New to zero fields of Config; atkafka's flags default to them too.
const (
	DefaultCompression        = "zstd"
	DefaultAcks               = "all"
	DefaultMaxInFlightRecords = 50_000
	DefaultMaxInFlightBytes   = 64 << 20
	DefaultConnectTimeout     = 15 * time.Second
	DefaultFlushTimeout       = 30 * time.Second
	DefaultClientID           = "atkafka"
)

// Accepted values of the Config fields that take one of a fixed set, in the order help texts should list them.
var (
	Compressions   = []string{"zstd", "none", "gzip", "snappy", "lz4"}
	AcksModes      = []string{"all", "leader", "none"}
	SASLMechanisms = []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"}
)

// Config configures a Producer. The zero value of a field means its default.
type Config struct {
	// Brokers are the seed brokers, host:port.
	Brokers []string
	// Topic receives every record whose Topic is empty.
	Topic string
	// ExtraTopics are other topics records may name (the dead-letter topic, for example). They are created along
	// with Topic when CreateTopic is set.
	ExtraTopics []string

	// Compression is one of Compressions; default DefaultCompression.
	Compression string
	// Linger is how long a partition waits for more records before sending a batch; zero keeps kgo's default.
	Linger time.Duration
	// MaxBatchBytes caps one record batch; zero keeps kgo's default (about 1 MB, the broker's default limit).
	MaxBatchBytes int32
	// Acks is one of AcksModes; default DefaultAcks. Only all keeps the producer idempotent: with fewer acks Kafka cannot
	// deduplicate retries, so idempotence is turned off.
	Acks string

	// CreateTopic creates Topic and ExtraTopics at start-up when missing. When false, New fails if one is missing.
	CreateTopic bool
	// Partitions and ReplicationFactor apply to topics New creates; zero means the broker's default.
	Partitions        int32
	ReplicationFactor int16

	TLS  TLSConfig
	SASL SASLConfig

	// MaxInFlightRecords and MaxInFlightBytes bound the records handed to Kafka and not yet acknowledged. Send
	// blocks while they are reached, which is how a slow or absent broker slows the sources down instead of
	// growing memory. A message larger than the limits is still let through when nothing else is in flight.
	// Defaults DefaultMaxInFlightRecords and DefaultMaxInFlightBytes.
	MaxInFlightRecords int
	MaxInFlightBytes   int64

	// ConnectTimeout bounds New's reachability, authentication and topic checks; default DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// FlushTimeout bounds how long Close waits for in-flight records; default DefaultFlushTimeout.
	FlushTimeout time.Duration
	// ClientID is the Kafka client id brokers log and quota by; default DefaultClientID.
	ClientID string
	// Logger receives the producer's state changes and kgo's warnings; default slog.Default().
	Logger *slog.Logger
	// Observer receives the producer's measurements; nil observes nothing.
	Observer Observer

	// clientOpts are added to every client's options: tests put a faulty dialer between client and broker.
	clientOpts []kgo.Opt
}

// TLSConfig configures TLS to the brokers.
type TLSConfig struct {
	Enabled bool
	// CAFile is a PEM bundle of the CAs trusted for the brokers' certificates; empty means the system roots.
	CAFile string
	// CertFile and KeyFile are a PEM client certificate and key, for brokers that require client authentication.
	CertFile string
	KeyFile  string
	// InsecureSkipVerify accepts any broker certificate. For tests only: it allows a man in the middle.
	InsecureSkipVerify bool
}

// SASLConfig configures SASL authentication. An empty Mechanism means none.
type SASLConfig struct {
	// Mechanism is one of SASLMechanisms.
	Mechanism string
	Username  string
	Password  string
}

// withDefaults returns cfg with its zero fields set to their defaults and its enumerations normalised.
func (cfg Config) withDefaults() Config {
	cfg.Compression = strings.ToLower(cmp.Or(cfg.Compression, DefaultCompression))
	cfg.Acks = strings.ToLower(cmp.Or(cfg.Acks, DefaultAcks))
	cfg.SASL.Mechanism = strings.ToUpper(cfg.SASL.Mechanism)
	cfg.MaxInFlightRecords = cmp.Or(cfg.MaxInFlightRecords, DefaultMaxInFlightRecords)
	cfg.MaxInFlightBytes = cmp.Or(cfg.MaxInFlightBytes, DefaultMaxInFlightBytes)
	cfg.ConnectTimeout = cmp.Or(cfg.ConnectTimeout, DefaultConnectTimeout)
	cfg.FlushTimeout = cmp.Or(cfg.FlushTimeout, DefaultFlushTimeout)
	cfg.ClientID = cmp.Or(cfg.ClientID, DefaultClientID)
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Observer == nil {
		cfg.Observer = nopObserver{}
	}
	return cfg
}

// validate reports every problem with a defaulted Config at once, so that a user fixes them in one go.
func (cfg Config) validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if len(cfg.Brokers) == 0 {
		bad("no brokers given")
	}
	for _, b := range cfg.Brokers {
		if !strings.Contains(b, ":") {
			bad("broker %q is not host:port", b)
		}
	}
	if cfg.Topic == "" {
		bad("no output topic given")
	}
	if !slices.Contains(Compressions, cfg.Compression) {
		bad("unknown compression %q (want one of %s)", cfg.Compression, strings.Join(Compressions, ", "))
	}
	if !slices.Contains(AcksModes, cfg.Acks) {
		bad("unknown acks %q (want one of %s)", cfg.Acks, strings.Join(AcksModes, ", "))
	}
	if cfg.Linger < 0 || cfg.MaxBatchBytes < 0 || cfg.Partitions < 0 || cfg.ReplicationFactor < 0 ||
		cfg.MaxInFlightRecords < 0 || cfg.MaxInFlightBytes < 0 || cfg.ConnectTimeout < 0 || cfg.FlushTimeout < 0 {
		bad("negative linger, batch size, partitions, replication factor, in-flight limit or timeout")
	}
	if !cfg.TLS.Enabled && (cfg.TLS.CAFile != "" || cfg.TLS.CertFile != "" || cfg.TLS.KeyFile != "" || cfg.TLS.InsecureSkipVerify) {
		bad("TLS options given but TLS is not enabled")
	}
	if (cfg.TLS.CertFile == "") != (cfg.TLS.KeyFile == "") {
		bad("TLS client certificate and key must be given together")
	}
	switch {
	case cfg.SASL.Mechanism == "" && (cfg.SASL.Username != "" || cfg.SASL.Password != ""):
		bad("SASL credentials given but no SASL mechanism")
	case cfg.SASL.Mechanism != "" && !slices.Contains(SASLMechanisms, cfg.SASL.Mechanism):
		bad("unknown SASL mechanism %q (want one of %s)", cfg.SASL.Mechanism, strings.Join(SASLMechanisms, ", "))
	case cfg.SASL.Mechanism != "" && cfg.SASL.Username == "":
		bad("SASL mechanism %s needs a username", cfg.SASL.Mechanism)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("invalid Kafka configuration: %w", err)
	}
	return nil
}

// ConnectOpts returns the client options that reach and authenticate to the brokers (seed brokers, client id,
// dial timeout, TLS, SASL, logging), so that other Kafka clients of atkafka, such as the tail consumer, connect
// exactly as the producer does.
func (cfg Config) ConnectOpts() ([]kgo.Opt, error) {
	cfg = cfg.withDefaults()
	opts := []kgo.Opt{
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.ClientID(cfg.ClientID),
		kgo.DialTimeout(cfg.ConnectTimeout),
		kgo.WithLogger(newKgoLogger(cfg.Logger)),
	}
	if cfg.TLS.Enabled {
		tc, err := cfg.TLS.config()
		if err != nil {
			return nil, err
		}
		opts = append(opts, kgo.DialTLSConfig(tc))
	}
	if m := cfg.SASL.mechanism(); m != nil {
		opts = append(opts, kgo.SASL(m))
	}
	return append(opts, cfg.clientOpts...), nil
}

// ProducerOpts returns the Producer's client options: ConnectOpts, plus compression, linger, batch size and acks,
// for a client that must produce exactly as atkafka does (the benchmark's bare-producer baseline).
func (cfg Config) ProducerOpts() ([]kgo.Opt, error) {
	cfg = cfg.withDefaults()
	opts, err := cfg.ConnectOpts()
	if err != nil {
		return nil, err
	}
	opts = append(opts,
		kgo.ProducerBatchCompression(compression(cfg.Compression)),
		// Our in-flight limiter is the only limit, so Produce never blocks inside kgo with a message half queued.
		kgo.MaxBufferedRecords(1<<40),
	)
	if cfg.Linger > 0 {
		opts = append(opts, kgo.ProducerLinger(cfg.Linger))
	}
	if cfg.MaxBatchBytes > 0 {
		opts = append(opts, kgo.ProducerBatchMaxBytes(cfg.MaxBatchBytes))
	}
	switch cfg.Acks {
	case "leader":
		opts = append(opts, kgo.RequiredAcks(kgo.LeaderAck()), kgo.DisableIdempotentWrite())
	case "none":
		opts = append(opts, kgo.RequiredAcks(kgo.NoAck()), kgo.DisableIdempotentWrite())
	default:
		opts = append(opts, kgo.RequiredAcks(kgo.AllISRAcks()))
	}
	return opts, nil
}

func compression(name string) kgo.CompressionCodec {
	switch name {
	case "none":
		return kgo.NoCompression()
	case "gzip":
		return kgo.GzipCompression()
	case "snappy":
		return kgo.SnappyCompression()
	case "lz4":
		return kgo.Lz4Compression()
	default:
		// The fastest level: batches of a firehose spread over many partitions are small, where the default
		// level's extra matching costs about twice the CPU (it was 40% of atkafka's CPU in cmd/atkafka-bench)
		// for a few percent smaller batches.
		return kgo.ZstdCompression().WithLevel(int(zstd.SpeedFastest))
	}
}

// config loads the files now, so that a missing or malformed one fails start-up rather than every dial.
func (c TLSConfig) config() (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: c.InsecureSkipVerify}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("reading Kafka TLS CA file: %w", err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("kafka TLS CA file %s holds no PEM certificate", c.CAFile)
		}
	}
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("loading Kafka TLS client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

func (c SASLConfig) mechanism() sasl.Mechanism {
	switch c.Mechanism {
	case "PLAIN":
		return plain.Auth{User: c.Username, Pass: c.Password}.AsMechanism()
	case "SCRAM-SHA-256":
		return scram.Auth{User: c.Username, Pass: c.Password}.AsSha256Mechanism()
	case "SCRAM-SHA-512":
		return scram.Auth{User: c.Username, Pass: c.Password}.AsSha512Mechanism()
	}
	return nil
}

// LogValue lists the settings with the SASL password redacted, so a Config can be logged whole.
func (cfg Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.Any("brokers", cfg.Brokers),
		slog.String("topic", cfg.Topic),
		slog.Any("extra_topics", cfg.ExtraTopics),
		slog.String("compression", cfg.Compression),
		slog.Duration("linger", cfg.Linger),
		slog.Int("max_batch_bytes", int(cfg.MaxBatchBytes)),
		slog.String("acks", cfg.Acks),
		slog.Bool("create_topic", cfg.CreateTopic),
		slog.Int("partitions", int(cfg.Partitions)),
		slog.Int("replication_factor", int(cfg.ReplicationFactor)),
		slog.Bool("tls", cfg.TLS.Enabled),
		slog.String("tls_ca_file", cfg.TLS.CAFile),
		slog.String("tls_cert_file", cfg.TLS.CertFile),
		slog.Bool("tls_insecure_skip_verify", cfg.TLS.InsecureSkipVerify),
		slog.String("sasl_mechanism", cfg.SASL.Mechanism),
		slog.String("sasl_username", cfg.SASL.Username),
		slog.String("sasl_password", redact(cfg.SASL.Password)),
		slog.Int("max_inflight_records", cfg.MaxInFlightRecords),
		slog.Int64("max_inflight_bytes", cfg.MaxInFlightBytes),
		slog.Duration("connect_timeout", cfg.ConnectTimeout),
		slog.Duration("flush_timeout", cfg.FlushTimeout),
		slog.String("client_id", cfg.ClientID),
	)
}

// String formats the settings as LogValue does, so that %v and %+v cannot leak the password either.
func (cfg Config) String() string {
	var b strings.Builder
	for i, a := range cfg.LogValue().Group() {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%v", a.Key, a.Value)
	}
	return b.String()
}

// GoString keeps %#v from showing the password.
func (cfg Config) GoString() string { return cfg.String() }

// String hides the password from %v of the SASL settings alone.
func (c SASLConfig) String() string {
	return fmt.Sprintf("{Mechanism:%s Username:%s Password:%s}", c.Mechanism, c.Username, redact(c.Password))
}

// GoString keeps %#v from showing the password.
func (c SASLConfig) GoString() string { return c.String() }

// LogValue hides the password from logs of the SASL settings alone.
func (c SASLConfig) LogValue() slog.Value {
	return slog.GroupValue(slog.String("mechanism", c.Mechanism), slog.String("username", c.Username),
		slog.String("password", redact(c.Password)))
}

func redact(secret string) string {
	if secret == "" {
		return ""
	}
	return "REDACTED"
}
