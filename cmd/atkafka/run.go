package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/atkafka/atkafka/cursor"
	"github.com/atkafka/atkafka/sink/embedded"
	"github.com/atkafka/atkafka/sink/kafka"
	"github.com/atkafka/atkafka/source/ozone"
)

// wiring builds the real parts for each command.
type wiring struct{}

var errNotYet = errors.New("not available yet in this build")

func (wiring) relay(ctx context.Context, c *config) error { return errNotYet }
func (wiring) tap(ctx context.Context, c *config) error   { return errNotYet }
func (wiring) tail(ctx context.Context, c *config) error  { return errNotYet }

func (wiring) ozone(ctx context.Context, c *config) error {
	if err := c.validateOzone(); err != nil {
		return err
	}
	rt, err := start(ctx, c)
	if err != nil {
		return err
	}
	defer rt.close()
	src, err := ozone.New(ozone.Config{
		PDSHost: c.Ozone.PDSHost, Identifier: c.Ozone.Identifier, Password: c.Ozone.Password, LabelerDID: c.Ozone.LabelerDID,
		PollInterval: c.Ozone.PollInterval, Cursor: cursor.NewFile(c.Ozone.CursorFile), Sink: rt.producer,
		DeadLetterTopic: c.DeadLetterTopic, Logger: rt.log,
	})
	if err != nil {
		return err
	}
	return src.Run(ctx)
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

// runtime holds what every producing command shares: the logger, the Kafka producer and, when no brokers are
// configured, the embedded broker it talks to.
type runtime struct {
	log      *slog.Logger
	producer *kafka.Producer
	broker   *embedded.Broker
	shutdown time.Duration
}

func start(ctx context.Context, c *config) (*runtime, error) {
	rt := &runtime{log: newLogger(c), shutdown: c.ShutdownTimeout}
	slog.SetDefault(rt.log)
	brokers := c.Brokers
	if len(brokers) == 0 {
		b, err := embedded.Start(ctx, embedded.Config{Addr: c.EmbeddedAddr, DataDir: c.EmbeddedDataDir, Logger: rt.log})
		if err != nil {
			return nil, fmt.Errorf("embedded broker: %w", err)
		}
		rt.broker, brokers = b, b.Addrs()
	}
	k := c.Kafka
	p, err := kafka.New(ctx, kafka.Config{
		Brokers: brokers, Topic: c.Topic, ExtraTopics: []string{c.DeadLetterTopic},
		Compression: k.Compression, Linger: k.Linger, MaxBatchBytes: int32(k.MaxBatchBytes), Acks: k.Acks,
		CreateTopic: k.CreateTopic, Partitions: int32(k.Partitions), ReplicationFactor: int16(k.ReplicationFactor),
		TLS: kafka.TLSConfig{Enabled: k.TLS, CAFile: k.TLSCAFile, CertFile: k.TLSCertFile, KeyFile: k.TLSKeyFile,
			InsecureSkipVerify: k.TLSInsecureSkipVerify},
		SASL:               kafka.SASLConfig{Mechanism: k.SASLMechanism, Username: k.SASLUsername, Password: k.SASLPassword},
		MaxInFlightRecords: k.MaxInFlightRecords, MaxInFlightBytes: int64(k.MaxInFlightBytes),
		ConnectTimeout: k.ConnectTimeout, FlushTimeout: c.ShutdownTimeout, Logger: rt.log,
	})
	if err != nil {
		rt.close()
		return nil, err
	}
	rt.producer = p
	return rt, nil
}

// close flushes the producer (bounded by --shutdown-timeout) and stops the embedded broker.
func (rt *runtime) close() {
	if rt.producer != nil {
		ctx, cancel := context.WithTimeout(context.Background(), rt.shutdown)
		if err := rt.producer.Close(ctx); err != nil {
			rt.log.Error("records still unacknowledged at shutdown; they will be produced again after a restart", "err", err)
		}
		cancel()
	}
	if rt.broker != nil {
		rt.broker.Close()
	}
}
