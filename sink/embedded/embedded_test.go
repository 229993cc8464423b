package embedded

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/atkafka/atkafka/sink"
	"github.com/atkafka/atkafka/sink/kafka"
	"github.com/atkafka/atkafka/testenv"
)

func logger(t *testing.T) *slog.Logger { return slog.New(slog.NewTextHandler(t.Output(), nil)) }

func start(t *testing.T, cfg Config) *Broker {
	t.Helper()
	cfg.Logger = logger(t)
	b, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// produce sends one record through the real sink and waits for its acknowledgement.
func produce(t *testing.T, addr, topic, value string) {
	t.Helper()
	ctx := context.Background()
	p, err := kafka.New(ctx, kafka.Config{Brokers: []string{addr}, Topic: topic, CreateTopic: true, Logger: logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(ctx)
	acked := make(chan error, 1)
	msg := &sink.Message{Records: []sink.Record{{Key: []byte("k"), Value: []byte(value)}}, Done: func(err error) { acked <- err }}
	if err := p.Send(ctx, msg); err != nil {
		t.Fatal(err)
	}
	if err := <-acked; err != nil {
		t.Fatalf("Done: %v", err)
	}
}

func TestRoundTrip(t *testing.T) {
	b := start(t, Config{Addr: "127.0.0.1:0"})
	defer b.Close()
	addr := b.Addrs()[0]
	produce(t, addr, "events", "hello")
	recs := testenv.ReadAll(t, addr, "events", 1, 10*time.Second)
	if len(recs) != 1 || string(recs[0].Value) != "hello" {
		t.Fatalf("read %v, want the one record produced", recs)
	}
}

func TestDataDirSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	b := start(t, Config{Addr: "127.0.0.1:0", DataDir: dir})
	produce(t, b.Addrs()[0], "events", "kept")
	b.Close()

	b = start(t, Config{Addr: "127.0.0.1:0", DataDir: dir})
	defer b.Close()
	if recs := testenv.ReadAll(t, b.Addrs()[0], "events", 1, 10*time.Second); string(recs[0].Value) != "kept" {
		t.Fatalf("after a restart read %q, want kept", recs[0].Value)
	}
}

// Cursors are bound to the cluster id (cursor.ForCluster): each in-memory broker has an id of its own, and one
// with a data folder keeps its id across restarts, as it keeps its records.
func TestClusterID(t *testing.T) {
	dir := t.TempDir()
	var ids []string
	for _, dataDir := range []string{"", "", dir, dir} {
		b := start(t, Config{Addr: "127.0.0.1:0", DataDir: dataDir})
		cl, err := kgo.NewClient(kgo.SeedBrokers(b.Addrs()...))
		if err != nil {
			t.Fatal(err)
		}
		meta, err := kadm.NewClient(cl).BrokerMetadata(context.Background())
		cl.Close()
		b.Close()
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(meta.Cluster, ClusterIDPrefix) {
			t.Errorf("cluster id %q lacks the prefix %q", meta.Cluster, ClusterIDPrefix)
		}
		ids = append(ids, meta.Cluster)
	}
	if ids[0] == ids[1] || ids[1] == ids[2] || ids[2] != ids[3] {
		t.Errorf("cluster ids of two in-memory brokers, then twice one data folder: %q", ids)
	}
}

func TestAddressErrors(t *testing.T) {
	b := start(t, Config{Addr: "127.0.0.1:0"})
	defer b.Close()
	for addr, want := range map[string]string{
		"0.0.0.0:9092":  "not a wildcard",
		":9092":         "not a wildcard",
		"localhost":     "missing port",
		b.Addrs()[0]:    "address already in use",
		"[::]:9092":     "not a wildcard",
		"127.0.0.1:abc": "unknown port",
	} {
		if _, err := Start(context.Background(), Config{Addr: addr, Logger: logger(t)}); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Start(%q) = %v, want an error containing %q", addr, err, want)
		}
	}
}
