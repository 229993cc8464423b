package kafka

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/atkafka/atkafka/cursor"
	"github.com/atkafka/atkafka/sink"
	"github.com/atkafka/atkafka/testenv"
)

func fakeCluster(t *testing.T, opts ...kfake.Opt) string {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs()[0]
}

func TestValidate(t *testing.T) {
	ok := Config{Brokers: []string{"127.0.0.1:9092"}, Topic: "events"}
	for name, tc := range map[string]struct {
		change func(*Config)
		want   string
	}{
		"valid": {func(*Config) {}, ""},
		"upper case enums": {func(c *Config) {
			c.Compression, c.Acks, c.SASL = "LZ4", "Leader", SASLConfig{"scram-sha-256", "u", "p"}
		}, ""},
		"no brokers":          {func(c *Config) { c.Brokers = nil }, "no brokers"},
		"broker without port": {func(c *Config) { c.Brokers = []string{"kafka"} }, `"kafka" is not host:port`},
		"no topic":            {func(c *Config) { c.Topic = "" }, "no output topic"},
		"compression":         {func(c *Config) { c.Compression = "brotli" }, `unknown compression "brotli"`},
		"acks":                {func(c *Config) { c.Acks = "some" }, `unknown acks "some"`},
		"negative":            {func(c *Config) { c.Partitions = -3 }, "negative"},
		"tls off":             {func(c *Config) { c.TLS.CAFile = "ca.pem" }, "TLS is not enabled"},
		"half a client cert":  {func(c *Config) { c.TLS = TLSConfig{Enabled: true, CertFile: "c.pem"} }, "given together"},
		"sasl no mechanism":   {func(c *Config) { c.SASL.Username = "u" }, "no SASL mechanism"},
		"sasl mechanism":      {func(c *Config) { c.SASL = SASLConfig{"GSSAPI", "u", "p"} }, `unknown SASL mechanism "GSSAPI"`},
		"sasl no user":        {func(c *Config) { c.SASL = SASLConfig{Mechanism: "PLAIN"} }, "needs a username"},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := ok
			tc.change(&cfg)
			err := cfg.withDefaults().validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("validate: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("validate = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	err := Config{Compression: "brotli"}.withDefaults().validate()
	for _, want := range []string{"no brokers", "no output topic", "brotli"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("validate = %v, want it to mention %q", err, want)
		}
	}
}

func TestConfigNeverShowsPassword(t *testing.T) {
	const secret = "hunter2-secret"
	cfg := Config{Brokers: []string{"b:9092"}, Topic: "t", SASL: SASLConfig{Mechanism: "PLAIN", Username: "u", Password: secret}}
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("config", "config", cfg, "sasl", cfg.SASL)
	for _, s := range []string{fmt.Sprint(cfg), fmt.Sprintf("%+v %#v", cfg, cfg), fmt.Sprintf("%v %+v %#v", cfg.SASL, cfg.SASL, cfg.SASL), logged.String()} {
		if strings.Contains(s, secret) {
			t.Errorf("password shown in %s", s)
		}
	}
	if !strings.Contains(cfg.String(), "sasl_username=u") {
		t.Errorf("String() = %s, want the non-secret settings", cfg)
	}
}

func TestSendCallsDoneOnce(t *testing.T) {
	addr := fakeCluster(t)
	topic := "events"
	obs := &counter{}
	p := newProducer(t, Config{Brokers: []string{addr}, Topic: topic, Partitions: 2, Observer: obs})

	a := newAcks()
	const n = 200
	records := 0
	for i := range n {
		values := make([]string, i%4) // every fourth message is empty, as when a filter drops everything
		for j := range values {
			values[j] = fmt.Sprintf("%d/%d", i, j)
		}
		records += len(values)
		send(t, p, a.message(i, "", values...))
	}
	if errs := a.wait(t, 10*time.Second); len(errs) > 0 {
		t.Fatalf("Done errors: %v", errs)
	}
	if got := len(testenv.ReadAll(t, addr, topic, records, 10*time.Second)); got != records {
		t.Errorf("read %d records, want %d", got, records)
	}
	if got := obs.producedN(producedOK); got != records {
		t.Errorf("%d records produced ok, want %d", got, records)
	}
	if got := obs.inFlight(topic); got != 0 {
		t.Errorf("%d records in flight after every ack", got)
	}
}

// Cursor files are bound to the cluster id both producers read at start-up (cursor.ForCluster).
func TestClusterID(t *testing.T) {
	addr := fakeCluster(t, kfake.ClusterID("cluster-1"))
	if got := newProducer(t, Config{Brokers: []string{addr}, Topic: "events"}).ClusterID(); got != "cluster-1" {
		t.Errorf("Producer.ClusterID() = %q", got)
	}
	txn := newTxn(t, addr, TxnConfig{}, Config{})
	if got := txn.ClusterID(); got != "cluster-1" {
		t.Errorf("TxnProducer.ClusterID() = %q", got)
	}
	if got := cursor.Describe(txn.Cursor()); !strings.Contains(got, "cluster-1") {
		t.Errorf("the cursor topic's description %q does not name its cluster", got)
	}
}

// A caller's context that ends after Send returned must not cancel records already queued.
func TestSendContextEndsAfterQueueing(t *testing.T) {
	addr := fakeCluster(t)
	p := newProducer(t, Config{Brokers: []string{addr}, Topic: "events", Linger: 50 * time.Millisecond})
	a := newAcks()
	ctx, cancel := context.WithCancel(context.Background())
	if err := p.Send(ctx, a.message(1, "", "v")); err != nil {
		t.Fatal(err)
	}
	cancel()
	if errs := a.wait(t, 10*time.Second); len(errs) > 0 {
		t.Fatalf("Done errors: %v", errs)
	}
}

func TestFailedRecordFailsItsMessage(t *testing.T) {
	addr := fakeCluster(t)
	p := newProducer(t, Config{Brokers: []string{addr}, Topic: "events", MaxBatchBytes: 1024})
	a := newAcks()
	send(t, p, a.message(1, "", "small", strings.Repeat("x", 4096)))
	send(t, p, a.message(2, "", "small"))
	errs := a.wait(t, 10*time.Second)
	if err := errs[1]; err == nil || !strings.Contains(err.Error(), "producing to Kafka topic events") {
		t.Errorf("message with a record too large: Done(%v), want a produce error", err)
	}
	if err := errs[2]; err != nil {
		t.Errorf("message after it: Done(%v)", err)
	}
}

func TestTopicCreationOff(t *testing.T) {
	addr := fakeCluster(t, kfake.SeedTopics(1, "exists"))
	cfg := Config{Brokers: []string{addr}, Topic: "exists", Logger: testLogger(t)}
	p, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("New with an existing topic: %v", err)
	}
	_ = p.Close(context.Background())

	cfg.ExtraTopics = []string{"missing"}
	if _, err := New(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "missing is not available and topic creation is off") {
		t.Fatalf("New with a missing topic = %v", err)
	}
}

// TestSCRAM checks the SCRAM wiring against kfake; the real broker only offers PLAIN, whose bad-password error
// TestSASLBadPassword checks (kfake just hangs up on a bad password).
func TestSCRAM(t *testing.T) {
	addr := fakeCluster(t, kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-512", "atkafka", "pw"))
	p := newProducer(t, Config{Brokers: []string{addr}, Topic: "events", SASL: SASLConfig{"SCRAM-SHA-512", "atkafka", "pw"}})
	a := newAcks()
	send(t, p, a.message(1, "", "v"))
	if errs := a.wait(t, 10*time.Second); len(errs) > 0 {
		t.Fatalf("Done errors: %v", errs)
	}
}

func TestSendAfterClose(t *testing.T) {
	p := newProducer(t, Config{Brokers: []string{fakeCluster(t)}, Topic: "events"})
	if err := p.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := p.Send(context.Background(), &sink.Message{Done: func(error) { t.Error("Done called") }}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Send after Close = %v, want ErrClosed", err)
	}
}
