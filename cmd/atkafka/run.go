package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/atkafka/atkafka/cursor"
	"github.com/atkafka/atkafka/metrics"
	"github.com/atkafka/atkafka/server"
	"github.com/atkafka/atkafka/sink"
	"github.com/atkafka/atkafka/sink/embedded"
	"github.com/atkafka/atkafka/sink/kafka"
	"github.com/atkafka/atkafka/sink/route"
	"github.com/atkafka/atkafka/source/labels"
	"github.com/atkafka/atkafka/source/ozone"
	"github.com/atkafka/atkafka/source/relay"
	"github.com/atkafka/atkafka/source/tap"
	"github.com/atkafka/atkafka/tail"
	"github.com/atkafka/atkafka/transform"
	"github.com/atkafka/atkafka/transform/enrich"
	"github.com/atkafka/atkafka/transform/filter"
	"github.com/atkafka/atkafka/transform/format"
	"github.com/atkafka/atkafka/transform/verify"
)

// wiring builds the real parts for each command.
type wiring struct{}

func (wiring) relay(ctx context.Context, c *config) error {
	return runSource(ctx, c, "relay", func(rt *runtime, st *stage) (source, error) {
		path, err := relay.CursorFile(c.DataDir, c.Relay.Host)
		if err != nil {
			return nil, err
		}
		store, err := rt.cursor(path, "at the relay's tip")
		if err != nil {
			return nil, err
		}
		return relay.New(relay.Config{
			Host: c.Relay.Host, DataDir: c.DataDir, StartCursor: c.Relay.Cursor, Workers: c.Relay.Workers,
			MaxInFlight: c.Relay.MaxInFlight, ShutdownTimeout: c.ShutdownTimeout,
			Sink: rt.sink, Pipeline: st.pipeline, DeadLetterTopic: c.DeadLetterTopic, Logger: rt.log, Verifier: st.verifier,
			Cursor: store, Observer: metrics.Relay{},
		})
	})
}

// newVerifier builds the --verify-commits verifier; nil (not a typed nil) when it is off, which costs nothing.
// Keys come from the enricher's document cache: one fetch per account, within one --plc-rate-limit.
func newVerifier(c *config, log *slog.Logger, e *enrich.Enricher) (relay.Verifier, error) {
	mode, err := verify.ParseMode(c.Relay.VerifyCommits)
	if err != nil || mode == verify.ModeOff {
		return nil, err
	}
	v, err := verify.New(verify.Config{Mode: mode, Keys: e, Logger: log, Observer: metrics.Verify{}})
	if err != nil {
		return nil, err
	}
	log.Info("verifying commits (Sync 1.1)", "mode", mode, "plc_host", c.Firehose.PLCHost)
	return v, nil
}

func (wiring) tap(ctx context.Context, c *config) error {
	return runSource(ctx, c, "tap", func(rt *runtime, st *stage) (source, error) {
		return tap.New(tap.Config{
			Host: c.Tap.Host, AdminPassword: c.Tap.AdminPassword, DisableAcks: c.Tap.DisableAcks, Workers: c.Tap.Workers,
			MaxInFlight:  c.Tap.MaxInFlight,
			DrainTimeout: c.ShutdownTimeout, Sink: rt.sink, Pipeline: st.pipeline, DeadLetterTopic: c.DeadLetterTopic, Logger: rt.log,
			Observer: metrics.Tap{},
		})
	})
}

func (wiring) ozone(ctx context.Context, c *config) error {
	return runSource(ctx, c, "ozone", func(rt *runtime, _ *stage) (source, error) {
		formatter, err := newFormatter(c.Osprey)
		if err != nil {
			return nil, err
		}
		store, err := rt.cursor(c.Ozone.CursorFile, "at Ozone's oldest event")
		if err != nil {
			return nil, err
		}
		return ozone.New(ozone.Config{
			PDSHost: c.Ozone.PDSHost, Identifier: c.Ozone.Identifier, Password: c.Ozone.Password, LabelerDID: c.Ozone.LabelerDID,
			PollInterval: c.Ozone.PollInterval, Cursor: store, Sink: rt.producer, Formatter: formatter,
			DeadLetterTopic: c.DeadLetterTopic, Logger: rt.log, Observer: metrics.Ozone{},
		})
	})
}

func (wiring) labels(ctx context.Context, c *config) error {
	mode, err := labels.ParseVerifyMode(c.Labels.Verify)
	if err != nil {
		return err
	}
	return runSource(ctx, c, "labels", func(rt *runtime, st *stage) (source, error) {
		var dir labels.Directory
		if st.identities != nil {
			dir = labels.NewDirectory(st.identities)
		}
		ls := labels.ParseLabelers(c.Labels.DIDs, c.Labels.Hosts)
		cfg := labels.Config{
			Labelers: ls, Directory: dir,
			StartCursor: c.Labels.Cursor, DataDir: c.DataDir, Verify: mode, IncludeSig: c.Labels.IncludeSig,
			Cursor: func(l labels.Labeler) (cursor.Store, error) {
				return rt.cursor(labels.CursorFile(c.DataDir, l), "at the labeler's tip")
			},
			ShutdownTimeout: c.ShutdownTimeout, Sink: rt.producer, Pipeline: st.pipeline, DeadLetterTopic: c.DeadLetterTopic,
			Logger: rt.log, Observer: metrics.Labels{},
		}
		if rt.txn != nil && len(ls) > 1 {
			// A transaction commits one cursor with its records: each labeler gets a transactional producer of
			// its own, its id the configured one plus the labeler's name, and its cursor key.
			per := map[string]*kafka.TxnProducer{}
			for _, l := range ls {
				p, err := rt.addTxn(ctx, kafka.TxnConfig{TransactionalID: c.Kafka.TransactionalID + "-" + l.Name(),
					CursorTopic: c.Kafka.CursorTopic, CursorKey: "labels:" + l.Name()})
				if err != nil {
					return nil, err
				}
				per[l.Name()] = p
			}
			cfg.SinkOf = func(l labels.Labeler) sink.Sink { return per[l.Name()] }
			cfg.Cursor = func(l labels.Labeler) (cursor.Store, error) { return per[l.Name()].Cursor(), nil }
		}
		return labels.New(cfg)
	})
}

// source is what every source package's Source offers the wiring.
type source interface {
	Run(ctx context.Context) error
}

// connectedSource is a source that can say whether it holds a live connection (relay, Tap), for /readyz.
type connectedSource interface {
	Connected() bool
}

// runSource starts the shared parts, builds the source with build and runs it until ctx ends. The pipeline is
// built first: it does no I/O, and a filter or PLC host the operator got wrong must fail start-up with its own
// message before anything connects (rather than after Kafka did, or instead of a Kafka error). Shutdown order
// matters for "nothing lost": the source stops reading and drains first, then the producer flushes, then the
// metrics server stops, so /metrics and /healthz stay up while in-flight records are flushed; the enricher
// closes last (its deferred close runs after rt.close).
func runSource(ctx context.Context, c *config, name string, build func(*runtime, *stage) (source, error)) error {
	log := newLogger(c)
	slog.SetDefault(log)
	for _, n := range c.Notices {
		log.Warn(n)
	}
	var st *stage
	if name != "ozone" {
		var err error
		if st, err = newStage(c, log, name); err != nil {
			return err
		}
		defer st.close()
	}
	rt, err := start(ctx, c, log, cursorKey(c, name))
	if err != nil {
		return err
	}
	defer rt.close()
	// --shutdown-timeout bounds the whole shutdown, not each step: the producer's flush gets what the source's
	// drain left of it, counted from the signal.
	stop := context.AfterFunc(ctx, func() { rt.shutdownBegan.Store(time.Now().UnixNano()) })
	defer stop()
	src, err := build(rt, st)
	if err != nil {
		return err
	}
	if rt.server != nil {
		addReadiness(rt, c, name, src)
	}
	rt.log.Info("atkafka starting", "command", name, "version", version, "topic", c.Topic, "dead_letter_topic", c.DeadLetterTopic)
	return src.Run(ctx)
}

// addReadiness adds the /readyz checks of src: connected and its cursor advancing (per labeler for the labels
// source, so that one labeler down shows and holds up no other), and a Kafka broker answering.
func addReadiness(rt *runtime, c *config, name string, src source) {
	switch s := src.(type) {
	case interface{ Labelers() []labels.Status }:
		for _, l := range s.Labelers() {
			rt.server.AddReadiness("labeler "+l.Name()+" connected", func() error {
				if !l.Connected() {
					return fmt.Errorf("not connected to labeler %s", l.Name())
				}
				return nil
			})
			rt.server.AddReadiness("labeler "+l.Name()+" cursor advancing", server.Advancing(c.ReadinessWindow, l.Progress))
		}
	default:
		if cs, ok := src.(connectedSource); ok {
			rt.server.AddReadiness(name+" connected", func() error {
				if !cs.Connected() {
					return fmt.Errorf("not connected to the %s", name)
				}
				return nil
			})
		}
		// Tap's ids are unordered, so it reports its own read and settled counts; the others have ordered cursors.
		advancing := server.Advancing(c.ReadinessWindow, metrics.Cursor(name))
		if ps, ok := src.(interface{ Progress() (read, settled int64) }); ok {
			advancing = server.Advancing(c.ReadinessWindow, ps.Progress)
		}
		rt.server.AddReadiness("cursor advancing", advancing)
	}
	rt.server.AddReadiness("kafka", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := rt.producer.Ping(ctx); err != nil {
			return fmt.Errorf("no Kafka broker answers: %w", err)
		}
		return nil
	})
}

// stage is the transform of the firehose commands: the pipeline, the identity resolver and, for the relay with
// --verify-commits, the verifier.
type stage struct {
	pipeline *transform.Pipeline
	// identities is the enricher, atkafka's one identity resolver, when something needs DID documents; nil
	// otherwise.
	identities *enrich.Enricher
	verifier   relay.Verifier
	close      func() // stops the enricher's background fetches
}

// newStage builds the filters, the enricher (needed for eventMetadata, service rules, the relay's verifier and
// the labels source's labelers given by DID and label keys), the formatter and the relay's verifier.
func newStage(c *config, log *slog.Logger, command string) (*stage, error) {
	verifying := command == "relay" && c.Relay.VerifyCommits != "" && c.Relay.VerifyCommits != "off"
	labelIdentities := command == "labels" && (len(c.Labels.DIDs) > 0 || c.Labels.Verify != "" && c.Labels.Verify != "off")
	p, e, err := newPipeline(c, log, verifying, labelIdentities)
	if err != nil {
		return nil, err
	}
	st := &stage{pipeline: p, identities: e, close: func() {}}
	if e != nil {
		st.close = e.Close
	}
	if verifying {
		if st.verifier, err = newVerifier(c, log, e); err != nil {
			st.close()
			return nil, err
		}
	}
	return st, nil
}

// newPipeline builds the filters, the formatter and, when eventMetadata, service rules or the verifier need
// it, the enricher in the pipeline: its scheduling keeps a slow account's lookups from holding up other accounts'
// events. identities asks for the enricher outside the pipeline too (the labels source resolves labelers with
// it), so that every DID document goes through its cache and rate limit.
func newPipeline(c *config, log *slog.Logger, verifying, identities bool) (*transform.Pipeline, *enrich.Enricher, error) {
	fc := c.Firehose
	f, err := filter.New(filter.Config{WatchedCollections: fc.WatchedCollections, IgnoredCollections: fc.IgnoredCollections,
		WatchedServices: fc.WatchedServices, IgnoredServices: fc.IgnoredServices})
	if err != nil {
		return nil, nil, err
	}
	if len(fc.MetricsCollections) > 0 {
		metrics.SetCollectionLabels(fc.MetricsCollections)
	}
	formatter, err := newFormatter(c.Osprey)
	if err != nil {
		return nil, nil, err
	}
	p := &transform.Pipeline{Collections: transform.Collections(f), Formatter: formatter, Observer: metrics.Pipeline{}}
	inPipeline := fc.Enrich || f.HasServiceRules() || verifying
	if !inPipeline && !identities {
		return p, nil, nil
	}
	apiHost := fc.APIHost
	if !fc.Enrich {
		apiHost = "" // the filter, the verifier and the labels source need documents only
	}
	e, err := enrich.New(enrich.Config{
		PLCHost: fc.PLCHost, APIHost: apiHost, LookupTimeout: fc.EnrichTimeout, Concurrency: fc.EnrichConcurrency,
		DocCacheSize: fc.DIDCacheSize, DocTTL: fc.DIDCacheTTL, ProfileCacheSize: fc.ProfileCacheSize,
		ProfileTTL: fc.ProfileCacheTTL, PLCRate: fc.PLCRate, APIRate: fc.APIRate, Logger: log, Observer: metrics.Enrich{},
	})
	if err != nil {
		return nil, nil, err
	}
	if inPipeline {
		p.Accounts = transform.Accounts(f, log, p.Observer)
		p.Enricher = e
		p.OmitMetadata = !fc.Enrich
	}
	return p, e, nil
}

// newFormatter builds the record format: standard, or the Osprey envelope the flags chose.
func newFormatter(o ospreyConfig) (*format.Formatter, error) {
	if !o.Compatible {
		return format.NewFormatter(), nil
	}
	ids, err := format.NewSnowflake(o.SnowflakeWorker)
	if err != nil {
		return nil, err
	}
	opts := []format.FormatterOption{format.Osprey(ids)}
	if o.Format == format.OspreyCoordinator {
		opts = append(opts, format.Coordinator())
	}
	return format.NewFormatter(opts...), nil
}

func newLogger(c *config) *slog.Logger {
	opts := &slog.HandlerOptions{Level: slog.LevelInfo}
	if c.Debug {
		opts.Level = slog.LevelDebug
	}
	if c.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

// runtime holds what every producing command shares: the logger, the metrics server, the Kafka producer and,
// when no brokers are configured, the embedded broker it talks to.
type runtime struct {
	log        *slog.Logger
	server     *server.Server
	stopServer context.CancelFunc
	serverDone chan struct{}
	producer   producer
	// cluster is the Kafka cluster the producer connected to, which the cursor files are bound to.
	cluster cursor.Cluster
	// sink is what the sources write to: the producer, behind the router when --route is given.
	sink sink.Sink
	// txn is the producer in --exactly-once mode, nil otherwise.
	txn *kafka.TxnProducer
	// kafka is the producers' configuration; extra are the transactional producers made after start-up (addTxn),
	// flushed and closed with the producer.
	kafka        kafka.Config
	extra        []*kafka.TxnProducer
	broker       *embedded.Broker
	flushTimeout time.Duration
	// shutdownBegan is when the command's context ended (Unix nanoseconds), 0 while it runs.
	shutdownBegan atomic.Int64
}

// producer is the Kafka sink: kafka.Producer (at least once) or kafka.TxnProducer (exactly once).
type producer interface {
	sink.Sink
	Ping(ctx context.Context) error
	Close(ctx context.Context) error
	ClusterID() string
}

// cursor is where the source keeps its cursor: in --exactly-once mode the Kafka cursor topic (bound to its cluster
// by living in it), otherwise the cursor file at path, bound to the cluster the producer connected to. fresh says
// where the source starts without a cursor, for the log.
func (rt *runtime) cursor(path, fresh string) (cursor.Store, error) {
	if rt.txn != nil {
		return rt.txn.Cursor(), nil
	}
	return cursor.ForCluster(path, rt.cluster, fresh, rt.log)
}

// cursorKey is the source's identity in the cursor topic, so that sources sharing it keep apart.
func cursorKey(c *config, command string) string {
	switch command {
	case "relay":
		host := c.Relay.Host
		if !strings.Contains(host, "://") {
			host = "wss://" + host
		}
		if u, err := url.Parse(host); err == nil && u.Host != "" {
			return "relay:" + u.Host
		}
		return "relay:" + c.Relay.Host
	case "ozone":
		return "ozone:" + c.Ozone.LabelerDID
	case "labels":
		if ls := labels.ParseLabelers(c.Labels.DIDs, c.Labels.Hosts); len(ls) == 1 {
			return "labels:" + ls[0].Name()
		}
	}
	return command
}

func start(ctx context.Context, c *config, log *slog.Logger, cursorKey string) (*runtime, error) {
	rt := &runtime{log: log, flushTimeout: c.ShutdownTimeout}
	if err := rt.connect(ctx, c, cursorKey); err != nil {
		rt.close()
		return nil, err
	}
	return rt, nil
}

func (rt *runtime) connect(ctx context.Context, c *config, cursorKey string) error {
	if err := rt.startServer(c); err != nil {
		return err
	}
	brokers := c.Brokers
	if len(brokers) == 0 {
		b, err := embedded.Start(ctx, embedded.Config{Addr: c.EmbeddedAddr, DataDir: c.EmbeddedDataDir, Logger: rt.log})
		if err != nil {
			return fmt.Errorf("embedded broker: %w", err)
		}
		rt.broker, brokers = b, b.Addrs()
	}
	kc := kafkaClientConfig(c, brokers)
	kc.Topic, kc.FlushTimeout, kc.Logger = c.Topic, c.ShutdownTimeout, rt.log
	// Routed topics are created with the others, at start-up: a topic missing later would fail records, not start-up.
	kc.ExtraTopics = append([]string{c.DeadLetterTopic}, c.Firehose.Routes.Topics()...)
	rt.kafka = kc
	if c.Kafka.ExactlyOnce {
		p, err := kafka.NewTxn(ctx, kc, kafka.TxnConfig{TransactionalID: c.Kafka.TransactionalID, CursorTopic: c.Kafka.CursorTopic, CursorKey: cursorKey})
		if err != nil {
			return err
		}
		rt.producer, rt.txn = p, p
	} else {
		p, err := kafka.New(ctx, kc)
		if err != nil {
			return err
		}
		rt.producer = p
	}
	rt.cluster = cursor.Cluster{ID: rt.producer.ClusterID(), Embedded: rt.broker != nil, Ephemeral: rt.broker != nil && c.EmbeddedDataDir == ""}
	rt.sink = rt.producer
	if rc := c.Firehose.Routes; len(rc.Routes) > 0 {
		r, err := route.New(rt.producer, rc)
		if err != nil {
			return err
		}
		rt.sink = r
		rt.log.Info("routing operations by collection", "routes", rc.Routes, "account_events_main_only", rc.AccountEventsMainOnly)
	}
	return nil
}

// addTxn starts one more transactional producer, with its own transactional id and cursor key; close flushes it.
func (rt *runtime) addTxn(ctx context.Context, tc kafka.TxnConfig) (*kafka.TxnProducer, error) {
	p, err := kafka.NewTxn(ctx, rt.kafka, tc)
	if err != nil {
		return nil, err
	}
	rt.extra = append(rt.extra, p)
	return p, nil
}

// kafkaClientConfig maps the Kafka flags onto the producer's configuration.
func kafkaClientConfig(c *config, brokers []string) kafka.Config {
	k := c.Kafka
	return kafka.Config{
		Brokers: brokers, Compression: k.Compression, Linger: k.Linger, MaxBatchBytes: int32(k.MaxBatchBytes), Acks: k.Acks,
		CreateTopic: k.CreateTopic, Partitions: int32(k.Partitions), ReplicationFactor: int16(k.ReplicationFactor),
		TLS: kafka.TLSConfig{Enabled: k.TLS, CAFile: k.TLSCAFile, CertFile: k.TLSCertFile, KeyFile: k.TLSKeyFile,
			InsecureSkipVerify: k.TLSInsecureSkipVerify},
		SASL:               kafka.SASLConfig{Mechanism: k.SASLMechanism, Username: k.SASLUsername, Password: k.SASLPassword},
		MaxInFlightRecords: k.MaxInFlightRecords, MaxInFlightBytes: int64(k.MaxInFlightBytes), ConnectTimeout: k.ConnectTimeout,
		Observer: metrics.Kafka{},
	}
}

// startServer binds the metrics listener first, so a taken port fails start-up before anything connects.
func (rt *runtime) startServer(c *config) error {
	if c.MetricsAddr == "" {
		return nil
	}
	srv := server.New(c.MetricsAddr, server.WithLogger(rt.log), server.WithMetrics(metrics.Registry))
	if err := srv.Listen(); err != nil {
		return fmt.Errorf("metrics listener: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	rt.server, rt.stopServer, rt.serverDone = srv, cancel, make(chan struct{})
	go func() {
		defer close(rt.serverDone)
		if err := srv.Run(ctx); err != nil {
			rt.log.Error("metrics server stopped", "err", err)
		}
	}()
	return nil
}

// closeServer stops the metrics server, if one was started, and waits for it.
func (rt *runtime) closeServer() {
	if rt.server != nil {
		rt.stopServer()
		<-rt.serverDone
	}
}

// close flushes the producer, within what is left of --shutdown-timeout since shutdown began (all of it when the
// source stopped on its own), then stops the rest.
func (rt *runtime) close() {
	if rt.producer != nil {
		timeout := rt.flushTimeout
		if began := rt.shutdownBegan.Load(); began != 0 {
			timeout = max(0, time.Until(time.Unix(0, began).Add(rt.flushTimeout)))
		}
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		producers := []producer{rt.producer}
		for _, p := range rt.extra {
			producers = append(producers, p)
		}
		for _, p := range producers {
			if err := p.Close(ctx); err != nil {
				rt.log.Error("records still unacknowledged at shutdown; they will be produced again after a restart", "err", err)
			}
		}
		cancel()
	}
	if rt.broker != nil {
		rt.broker.Close()
	}
	rt.closeServer()
}

// healthcheck probes a running atkafka's /healthz; the container image's HEALTHCHECK runs it.
func healthcheck(ctx context.Context, c *config) error {
	if c.MetricsAddr == "" {
		fmt.Println("metrics listener disabled; nothing to check")
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return server.Probe(ctx, c.MetricsAddr)
}

// tail reads the configured brokers, or the embedded broker's address when none are given: it never starts a
// broker of its own, since a fresh one would be empty.
func (wiring) tail(ctx context.Context, c *config) error {
	brokers := c.Brokers
	if len(brokers) == 0 {
		brokers = []string{c.EmbeddedAddr}
	}
	log := newLogger(c)
	kc := kafkaClientConfig(c, brokers)
	kc.Logger = log
	opts, err := kc.ConnectOpts()
	if err != nil {
		return err
	}
	return tail.Run(ctx, tail.Config{
		Brokers: brokers, Topic: c.Tail.Topic, JSON: c.Tail.JSON, Collection: c.Tail.Collection, DID: c.Tail.DID,
		FromBeginning: c.Tail.FromBeginning, Out: os.Stdout, Opts: opts, ConnectTimeout: c.Kafka.ConnectTimeout, Logger: log,
	})
}
