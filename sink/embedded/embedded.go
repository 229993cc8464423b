// Package embedded runs an in-process Kafka-compatible broker (franz-go's kfake), which atkafka serves when no
// brokers are configured so that a newcomer can try it, and read its topics with any Kafka client, without
// installing Kafka. It is not Apache Kafka and not meant for production.
package embedded

import (
	"cmp"
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"net"

	"github.com/twmb/franz-go/pkg/kfake"
)

// DefaultAddr is Kafka's usual port on loopback, where Kafka clients look by default.
const DefaultAddr = "127.0.0.1:9092"

// ClusterIDPrefix starts the cluster id of every embedded broker, so that logs and cursor file names tell it
// from a real cluster.
const ClusterIDPrefix = "atkafka-embedded-"

// Config configures the embedded broker.
type Config struct {
	// Addr is the host:port to listen on and to advertise to clients; default DefaultAddr. Port 0 picks a free one.
	Addr string
	// DataDir keeps topics and offsets across restarts; empty keeps them in memory only.
	DataDir string
	// Logger receives the start-up warning and the broker's own warnings; default slog.Default().
	Logger *slog.Logger
}

// Broker is a running embedded broker.
type Broker struct {
	cluster *kfake.Cluster
	log     *slog.Logger
}

// Start listens on cfg.Addr and serves a single-broker cluster until Close.
func Start(ctx context.Context, cfg Config) (*Broker, error) {
	addr := cmp.Or(cfg.Addr, DefaultAddr)
	log := cmp.Or(cfg.Logger, slog.Default())
	if err := checkAdvertisable(addr); err != nil {
		return nil, err
	}
	opts := []kfake.Opt{
		kfake.NumBrokers(1),
		// kfake listens on loopback with a random port; we take over the listener to honour Addr. Its address is
		// also what metadata advertises, hence checkAdvertisable.
		kfake.ListenFn(func(network, _ string) (net.Listener, error) { return net.Listen(network, addr) }),
		// An id of its own for each broker, so that no cursor of another cluster (nor of an earlier in-memory
		// broker, whose records are gone) is taken for this one's. With a data folder, kfake keeps the id it
		// stored there first, and the broker's cursors stay valid across restarts as its records do.
		kfake.ClusterID(ClusterIDPrefix + rand.Text()),
		// As Apache Kafka's defaults: a client may create a topic by using it, with one partition.
		kfake.AllowAutoTopicCreation(),
		kfake.DefaultNumPartitions(1),
		kfake.WithLogger(kfakeLogger{log}),
	}
	if cfg.DataDir != "" {
		opts = append(opts, kfake.DataDir(cfg.DataDir))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return nil, fmt.Errorf("starting the embedded Kafka broker on %s: %w", addr, err)
	}
	b := &Broker{cluster: c, log: log}
	storage := "in memory only: everything is lost when atkafka stops"
	if cfg.DataDir != "" {
		storage = "in " + cfg.DataDir
	}
	log.WarnContext(ctx, "serving an EMBEDDED Kafka-compatible broker (kfake) for trying atkafka out; it is not Apache Kafka, "+
		"give --bootstrap-servers for real use", "addr", b.Addrs()[0], "data", storage)
	return b, nil
}

// checkAdvertisable refuses wildcard hosts: clients are told to connect to the listener's own address, and
// 0.0.0.0 or :: is no address to connect to.
func checkAdvertisable(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("embedded Kafka broker address %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		return fmt.Errorf("embedded Kafka broker address %q must name the host clients connect to (it is advertised to them), not a wildcard", addr)
	}
	return nil
}

// Addrs returns the host:port clients bootstrap from.
func (b *Broker) Addrs() []string { return b.cluster.ListenAddrs() }

// Close stops the broker, writing its state to the data folder if there is one.
func (b *Broker) Close() {
	b.cluster.Close()
	b.log.Info("embedded Kafka broker stopped")
}

// kfakeLogger passes kfake's warnings and errors to slog; its info level traces every request.
type kfakeLogger struct{ l *slog.Logger }

func (k kfakeLogger) Logf(level kfake.LogLevel, format string, args ...any) {
	switch level {
	case kfake.LogLevelError:
		k.l.Error("embedded broker: " + fmt.Sprintf(format, args...))
	case kfake.LogLevelWarn:
		k.l.Warn("embedded broker: " + fmt.Sprintf(format, args...))
	}
}
