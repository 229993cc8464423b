package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v3"

	"github.com/atkafka/atkafka/sink/kafka"
	"github.com/atkafka/atkafka/sink/route"
	"github.com/atkafka/atkafka/source/labels"
	"github.com/atkafka/atkafka/transform/format"
	"github.com/atkafka/atkafka/transform/verify"
)

// config is everything the flags say, checked, before any part is built.
type config struct {
	// Command is the command being run, named as its source is in logs, cursor keys and transactional ids
	// (relay, tap, ozone), or tail, healthcheck.
	Command string
	// Notices are warnings about the configuration (deprecated flags), logged at start-up.
	Notices         []string
	Brokers         []string
	Topic           string
	DeadLetterTopic string
	Kafka           kafkaConfig
	EmbeddedAddr    string
	EmbeddedDataDir string

	DataDir         string
	MetricsAddr     string
	ReadinessWindow time.Duration
	ShutdownTimeout time.Duration
	Debug           bool
	LogFormat       string

	Osprey   ospreyConfig
	Firehose firehoseConfig
	Relay    relayConfig
	Tap      tapConfig
	Ozone    ozoneConfig
	Labels   labelsConfig
	Tail     tailConfig
	Backfill backfillConfig
}

type backfillConfig struct {
	Topic, FailedTopic, Group string
	Source                    string
	Partitions, PageSize      int
	Concurrency               int
	HostConcurrency           int
	HostRate                  float64
	RetryWindow               time.Duration
	ExactlyOnce               bool
	TransactionTimeout        time.Duration
	TransactionTime           time.Duration
	SessionTimeout            time.Duration
	MemoryLimit               int
	StatusInterval            time.Duration
}

type kafkaConfig struct {
	Compression        string
	Linger             time.Duration
	MaxBatchBytes      int
	Acks               string
	MaxInFlightRecords int
	MaxInFlightBytes   int
	CreateTopic        bool
	Partitions         int
	ReplicationFactor  int
	ConnectTimeout     time.Duration

	ExactlyOnce     bool
	TransactionalID string
	CursorTopic     string

	TLS                   bool
	TLSCAFile             string
	TLSCertFile           string
	TLSKeyFile            string
	TLSInsecureSkipVerify bool
	SASLMechanism         string
	SASLUsername          string
	SASLPassword          string
}

// ospreyConfig is the Osprey envelope of every producing command.
type ospreyConfig struct {
	Compatible      bool
	Format          string
	SnowflakeWorker int
}

type firehoseConfig struct {
	// Routes send operations to topics by collection; its Topic is the output topic.
	Routes             route.Config
	RouteAccountEvents string
	MetricsCollections []string
	WatchedCollections []string
	IgnoredCollections []string
	WatchedServices    []string
	IgnoredServices    []string

	Enrich            bool
	PLCHost           string
	APIHost           string
	EnrichTimeout     time.Duration
	DIDCacheSize      int
	DIDCacheTTL       time.Duration
	EnrichConcurrency int
	ProfileCacheSize  int
	ProfileCacheTTL   time.Duration
	PLCRate           float64
	APIRate           float64
}

type relayConfig struct {
	Host          string
	Cursor        string
	Workers       int
	MaxInFlight   int
	VerifyCommits string
}

type tapConfig struct {
	Host          string
	DisableAcks   bool
	Workers       int
	MaxInFlight   int
	AdminPassword string
}

type ozoneConfig struct {
	PDSHost      string
	Identifier   string
	Password     string
	LabelerDID   string
	PollInterval time.Duration
	CursorFile   string
}

type labelsConfig struct {
	DIDs       []string
	Hosts      []string
	Cursor     string
	Verify     string
	IncludeSig bool
}

type tailConfig struct {
	Topic         string
	JSON          bool
	Collection    string
	DID           string
	FromBeginning bool
}

// oneOf checks that v is one of the allowed values.
func oneOf[T ~string](flag string, v T, allowed []T) error {
	if slices.Contains(allowed, v) {
		return nil
	}
	return fmt.Errorf("--%s: %q is not one of %s", flag, v, choices(allowed))
}

// secret returns the value of a secret given either directly or as a file, never both.
func secret(cmd *cli.Command, flag, fileFlag string) (string, error) {
	v, file := cmd.String(flag), cmd.String(fileFlag)
	if file == "" {
		return v, nil
	}
	if v != "" {
		return "", fmt.Errorf("give --%s or --%s, not both", flag, fileFlag)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("--%s: %w", fileFlag, err)
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

// splitList flattens comma-separated flag values and trims spaces; empty entries are kept so that the filter
// package can reject them with a clear message.
func splitList(values []string) []string {
	var out []string
	for _, v := range values {
		for _, p := range strings.Split(v, ",") {
			out = append(out, strings.TrimSpace(p))
		}
	}
	return out
}

// commandName is the name config.Command gives the command cmd.
func commandName(cmd *cli.Command) string {
	if cmd.Name == "ozone-events" {
		return "ozone"
	}
	return cmd.Name
}

// parseConfig reads and checks every flag the command tree defines, and every rule of the command being run: the
// one place a configuration is validated. Flags of other commands read as zero values.
func parseConfig(cmd *cli.Command) (*config, error) {
	c := &config{
		Command:         commandName(cmd),
		Brokers:         splitList(cmd.StringSlice("bootstrap-servers")),
		Topic:           cmd.String("output-topic"),
		DeadLetterTopic: cmd.String("dead-letter-topic"),
		EmbeddedAddr:    cmd.String("embedded-broker-address"),
		EmbeddedDataDir: cmd.String("embedded-data-dir"),
		DataDir:         cmd.String("data-dir"),
		MetricsAddr:     cmd.String("metrics-listen-address"),
		ReadinessWindow: cmd.Duration("readiness-window"),
		ShutdownTimeout: cmd.Duration("shutdown-timeout"),
		Debug:           cmd.Bool("debug"),
		LogFormat:       cmd.String("log-format"),
		Kafka: kafkaConfig{
			Compression:           cmd.String("compression"),
			Linger:                cmd.Duration("linger"),
			MaxBatchBytes:         int(cmd.Int("max-batch-bytes")),
			Acks:                  cmd.String("acks"),
			MaxInFlightRecords:    int(cmd.Int("max-inflight-records")),
			MaxInFlightBytes:      int(cmd.Int("max-inflight-bytes")),
			CreateTopic:           cmd.Bool("create-topic"),
			Partitions:            int(cmd.Int("topic-partitions")),
			ReplicationFactor:     int(cmd.Int("topic-replication-factor")),
			ConnectTimeout:        cmd.Duration("kafka-connect-timeout"),
			ExactlyOnce:           cmd.Bool("exactly-once"),
			TransactionalID:       cmd.String("transactional-id"),
			CursorTopic:           cmd.String("cursor-topic"),
			TLSCAFile:             cmd.String("kafka-tls-ca-file"),
			TLSCertFile:           cmd.String("kafka-tls-cert-file"),
			TLSKeyFile:            cmd.String("kafka-tls-key-file"),
			TLSInsecureSkipVerify: cmd.Bool("kafka-tls-insecure-skip-verify"),
			SASLMechanism:         strings.ToUpper(cmd.String("kafka-sasl-mechanism")),
			SASLUsername:          cmd.String("kafka-sasl-username"),
		},
		Osprey: ospreyConfig{
			Compatible:      cmd.Bool("osprey-compatible"),
			Format:          cmd.String("osprey-format"),
			SnowflakeWorker: int(cmd.Int("snowflake-worker-id")),
		},
		Firehose: firehoseConfig{
			RouteAccountEvents: cmd.String("route-account-events"),
			MetricsCollections: splitList(cmd.StringSlice("metrics-collections")),
			WatchedCollections: splitList(cmd.StringSlice("watched-collections")),
			IgnoredCollections: splitList(cmd.StringSlice("ignored-collections")),
			WatchedServices:    splitList(cmd.StringSlice("watched-services")),
			IgnoredServices:    splitList(cmd.StringSlice("ignored-services")),
			Enrich:             cmd.Bool("enrich"),
			PLCHost:            cmd.String("plc-host"),
			APIHost:            cmd.String("api-host"),
			EnrichTimeout:      cmd.Duration("enrich-timeout"),
			DIDCacheSize:       int(cmd.Int("did-cache-size")),
			DIDCacheTTL:        cmd.Duration("did-cache-ttl"),
			EnrichConcurrency:  int(cmd.Int("enrich-concurrency")),
			ProfileCacheSize:   int(cmd.Int("profile-cache-size")),
			ProfileCacheTTL:    cmd.Duration("profile-cache-ttl"),
			PLCRate:            cmd.Float("plc-rate-limit"),
			APIRate:            cmd.Float("api-rate-limit"),
		},
		Relay: relayConfig{
			Host:          cmd.String("relay-host"),
			Cursor:        cmd.String("cursor"),
			Workers:       int(cmd.Int("relay-workers")),
			MaxInFlight:   int(cmd.Int("max-inflight-frames")),
			VerifyCommits: cmd.String("verify-commits"),
		},
		Tap: tapConfig{
			Host:          cmd.String("tap-host"),
			DisableAcks:   cmd.Bool("disable-acks"),
			Workers:       int(cmd.Int("tap-workers")),
			MaxInFlight:   int(cmd.Int("tap-max-inflight")),
			AdminPassword: cmd.String("tap-admin-password"),
		},
		Ozone: ozoneConfig{
			PDSHost:      cmd.String("pds-host"),
			Identifier:   cmd.String("identifier"),
			LabelerDID:   cmd.String("labeler-did"),
			PollInterval: cmd.Duration("poll-interval"),
			CursorFile:   cmd.String("cursor-file"),
		},
		Labels: labelsConfig{
			DIDs:       splitList(cmd.StringSlice("labeler")),
			Hosts:      splitList(cmd.StringSlice("labeler-host")),
			Cursor:     cmd.String("labeler-cursor"),
			Verify:     cmd.String("verify-labels"),
			IncludeSig: cmd.Bool("include-sig"),
		},
		Backfill: backfillConfig{
			Topic: cmd.String("backfill-topic"), FailedTopic: cmd.String("backfill-failed-topic"), Group: cmd.String("backfill-group"),
			Source: cmd.String("backfill-source"), Partitions: int(cmd.Int("backfill-partitions")), PageSize: int(cmd.Int("backfill-page-size")),
			Concurrency: int(cmd.Int("backfill-concurrency")), HostConcurrency: int(cmd.Int("backfill-host-concurrency")),
			HostRate: cmd.Float("backfill-host-rate"), RetryWindow: cmd.Duration("backfill-retry-window"),
			ExactlyOnce: cmd.Bool("backfill-exactly-once"), TransactionTimeout: cmd.Duration("backfill-transaction-timeout"),
			TransactionTime: cmd.Duration("backfill-transaction-time"),
			SessionTimeout:  cmd.Duration("backfill-session-timeout"), MemoryLimit: int(cmd.Int("backfill-memory-limit")),
			StatusInterval: cmd.Duration("interval"),
		},
		Tail: tailConfig{
			Topic:         cmd.String("topic"),
			JSON:          cmd.Bool("json"),
			Collection:    cmd.String("collection"),
			DID:           cmd.String("did"),
			FromBeginning: cmd.Bool("from-beginning"),
		},
	}
	var errs []error
	var err error
	if c.Kafka.SASLPassword, err = secret(cmd, "kafka-sasl-password", "kafka-sasl-password-file"); err != nil {
		errs = append(errs, err)
	}
	if c.Ozone.Password, err = secret(cmd, "password", "password-file"); err != nil {
		errs = append(errs, err)
	}
	if c.DeadLetterTopic == "" {
		c.DeadLetterTopic = c.Topic + ".deadletter"
	}
	rc := &c.Firehose.Routes
	rc.Topic, rc.AccountEventsMainOnly = c.Topic, c.Firehose.RouteAccountEvents == "main"
	for _, v := range splitList(cmd.StringSlice("route")) {
		r, err := route.Parse(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("--route: %w", err))
			continue
		}
		rc.Routes = append(rc.Routes, r)
	}
	if c.Backfill.Topic == "" {
		c.Backfill.Topic = c.Topic + ".backfill"
	}
	if c.Backfill.FailedTopic == "" {
		c.Backfill.FailedTopic = c.Backfill.Topic + ".failed"
	}
	if c.Tail.Topic == "" {
		c.Tail.Topic = c.Topic
	}
	if c.Kafka.CursorTopic == "" {
		c.Kafka.CursorTopic = c.Topic + ".cursors"
	}
	if c.Kafka.ExactlyOnce && c.Kafka.TransactionalID == "" {
		c.Kafka.TransactionalID = "atkafka-" + c.Command + "-" + c.Topic
	}
	if c.Ozone.CursorFile != "" && !filepath.IsAbs(c.Ozone.CursorFile) {
		c.Ozone.CursorFile = filepath.Join(c.DataDir, c.Ozone.CursorFile)
	}
	if cmd.IsSet("audit-cache-size") || cmd.IsSet("audit-cache-ttl") {
		c.Notices = append(c.Notices, "--audit-cache-size and --audit-cache-ttl are ignored: one PLC request per account "+
			"fills the DID cache with the creation date too; size it with --did-cache-size")
	}
	// Any TLS file means the operator wants TLS; requiring --kafka-tls as well would only add a way to get it wrong.
	k := &c.Kafka
	k.TLS = cmd.Bool("kafka-tls") || k.TLSCAFile != "" || k.TLSCertFile != "" || k.TLSInsecureSkipVerify
	return c, errors.Join(append(errs, c.validate()...)...)
}

func (c *config) validate() []error {
	var errs []error
	check := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	if c.Topic == "" {
		check(errors.New("--output-topic must not be empty"))
	}
	if c.DeadLetterTopic == c.Topic {
		check(errors.New("--dead-letter-topic must differ from --output-topic"))
	}
	for _, b := range c.Brokers {
		if b == "" {
			check(errors.New("--bootstrap-servers has an empty entry"))
		}
	}
	check(oneOf("log-format", c.LogFormat, logFormats))
	k := c.Kafka
	check(oneOf("compression", k.Compression, kafka.Compressions))
	check(oneOf("acks", k.Acks, kafka.AcksModes))
	if k.SASLMechanism != "" {
		check(oneOf("kafka-sasl-mechanism", k.SASLMechanism, kafka.SASLMechanisms))
		if k.SASLUsername == "" || k.SASLPassword == "" {
			check(errors.New("--kafka-sasl-mechanism needs --kafka-sasl-username and a password"))
		}
	}
	if (k.TLSCertFile == "") != (k.TLSKeyFile == "") {
		check(errors.New("--kafka-tls-cert-file and --kafka-tls-key-file go together"))
	}
	if k.ExactlyOnce && c.Command == "tap" {
		check(errors.New("--exactly-once is not supported by firehose tap: Tap's event ids are not a durable, " +
			"ordered position that could be committed with the records (use firehose relay, or drop --exactly-once)"))
	}
	if k.ExactlyOnce && k.Acks != "all" {
		check(fmt.Errorf("--exactly-once needs --acks all, not %s", k.Acks))
	}
	if k.ExactlyOnce && (k.CursorTopic == c.Topic || k.CursorTopic == c.DeadLetterTopic) {
		check(errors.New("--cursor-topic must differ from --output-topic and --dead-letter-topic"))
	}
	if k.Partitions < 1 {
		check(errors.New("--topic-partitions must be at least 1"))
	}
	if k.MaxInFlightRecords < 1 || k.MaxInFlightBytes < 1 {
		check(errors.New("--max-inflight-records and --max-inflight-bytes must be positive"))
	}
	if w := c.Osprey.SnowflakeWorker; w < 0 || w > 1023 {
		check(fmt.Errorf("--snowflake-worker-id %d is outside 0-1023", w))
	}
	if o := c.Osprey; o.Format != "" { // "" for commands without the Osprey flags
		check(oneOf("osprey-format", o.Format, format.OspreyFormats))
		if o.Format != format.OspreyWorker && !o.Compatible {
			check(fmt.Errorf("--osprey-format %s needs --osprey-compatible", o.Format))
		}
	}
	if fc := c.Firehose; fc.RouteAccountEvents != "" { // "" when the command is not a firehose one
		check(oneOf("route-account-events", fc.RouteAccountEvents, routeAccountEvents))
		check(fc.Routes.Validate())
		for _, t := range fc.Routes.Topics() {
			if t == c.DeadLetterTopic || (k.ExactlyOnce && t == k.CursorTopic) {
				check(fmt.Errorf("--route topic %s is the dead-letter or cursor topic", t))
			}
		}
	}
	if c.Relay.VerifyCommits != "" { // "" when the command is not relay
		check(oneOf("verify-commits", verify.Mode(c.Relay.VerifyCommits), verify.Modes))
	}
	if c.Labels.Verify != "" { // "" when the command is not labels
		check(oneOf("verify-labels", verify.Mode(c.Labels.Verify), verify.Modes))
	}
	if cur := c.Labels.Cursor; cur != "" && cur != "live" {
		if n, err := strconv.ParseInt(cur, 10, 64); err != nil || n < 0 {
			check(fmt.Errorf("--labeler-cursor %q is neither a sequence number nor \"live\"", cur))
		}
	}
	if cur := c.Relay.Cursor; cur != "" && cur != "live" {
		if n, err := strconv.ParseInt(cur, 10, 64); err != nil || n < 0 {
			check(fmt.Errorf("--cursor %q is neither a sequence number nor \"live\"", cur))
		}
	}
	if c.Command == "ozone" {
		check(c.validateOzone())
	}
	if c.Command == "labels" {
		check(c.validateLabels())
	}
	return errs
}

// validateLabels checks what only the labels command needs.
func (c *config) validateLabels() error {
	if len(c.Labels.DIDs)+len(c.Labels.Hosts) == 0 {
		return errors.New("labels needs at least one --labeler DID or --labeler-host")
	}
	return labels.CheckLabelers(labels.ParseLabelers(c.Labels.DIDs, c.Labels.Hosts))
}

// validateOzone checks what only the ozone-events command needs.
func (c *config) validateOzone() error {
	var missing []string
	for flag, v := range map[string]string{"pds-host": c.Ozone.PDSHost, "identifier": c.Ozone.Identifier,
		"password": c.Ozone.Password, "labeler-did": c.Ozone.LabelerDID} {
		if v == "" {
			missing = append(missing, "--"+flag)
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		return fmt.Errorf("ozone-events needs %s", strings.Join(missing, ", "))
	}
	if c.Ozone.PollInterval <= 0 {
		return errors.New("--poll-interval must be positive")
	}
	return nil
}
