package kafka

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/atkafka/atkafka/sink"
	"github.com/atkafka/atkafka/testenv"
)

func TestRoundTripKeysHeaders(t *testing.T) {
	k := testenv.Kafka(t)
	topic, dead := testenv.NewTopic(t), testenv.NewTopic(t)+"-dead"
	p := newProducer(t, Config{Brokers: []string{k.Brokers}, Topic: topic, ExtraTopics: []string{dead}, Partitions: 3})

	a := newAcks()
	msg := a.message(1, "", "first", "second")
	msg.Records[0].Headers = []sink.Header{{Key: "kind", Value: []byte("commit")}, {Key: "empty"}}
	msg.Records = append(msg.Records, sink.Record{Topic: dead, Key: []byte("bad"), Value: []byte("undecodable")})
	send(t, p, msg)
	send(t, p, a.message(2, ""))
	if errs := a.wait(t, 30*time.Second); len(errs) > 0 {
		t.Fatalf("Done errors: %v", errs)
	}

	recs := testenv.ReadAll(t, k.Brokers, topic, 2, 30*time.Second)
	if len(recs) != 2 {
		t.Fatalf("read %d records from %s, want 2", len(recs), topic)
	}
	byValue := map[string]int{}
	for i, r := range recs {
		byValue[string(r.Value)] = i
		if string(r.Key) != "key-1" {
			t.Errorf("record %q has key %q, want key-1", r.Value, r.Key)
		}
	}
	first := recs[byValue["first"]]
	if len(first.Headers) != 2 || first.Headers[0].Key != "kind" || string(first.Headers[0].Value) != "commit" || first.Headers[1].Key != "empty" {
		t.Errorf("headers of first record = %v", first.Headers)
	}
	if dl := testenv.ReadAll(t, k.Brokers, dead, 1, 30*time.Second); len(dl) != 1 || string(dl[0].Value) != "undecodable" {
		t.Errorf("dead-letter topic holds %v, want the one undecodable record", dl)
	}
}

func TestCompressionCodecs(t *testing.T) {
	k := testenv.Kafka(t)
	for _, codec := range Compressions {
		t.Run(codec, func(t *testing.T) {
			t.Parallel()
			topic := testenv.NewTopic(t)
			p := newProducer(t, Config{Brokers: []string{k.Brokers}, Topic: topic, Compression: codec, Linger: 5 * time.Millisecond})
			a := newAcks()
			value := strings.Repeat("compressible ", 200)
			for i := range 50 {
				send(t, p, a.message(i, "", value))
			}
			if errs := a.wait(t, 30*time.Second); len(errs) > 0 {
				t.Fatalf("Done errors: %v", errs)
			}
			recs := testenv.ReadAll(t, k.Brokers, topic, 50, 30*time.Second)
			if len(recs) != 50 || string(recs[0].Value) != value {
				t.Fatalf("read %d records, want 50 with the value sent", len(recs))
			}
		})
	}
}

// roundTrip produces one record to a new topic through a producer made from cfg, and reads it back through the
// plaintext listener. It returns the topic.
func roundTrip(t *testing.T, k testenv.KafkaEnv, cfg Config) string {
	t.Helper()
	cfg.Topic = testenv.NewTopic(t)
	p := newProducer(t, cfg)
	a := newAcks()
	send(t, p, a.message(1, "", "secured"))
	if errs := a.wait(t, 30*time.Second); len(errs) > 0 {
		t.Fatalf("Done errors: %v", errs)
	}
	if recs := testenv.ReadAll(t, k.Brokers, cfg.Topic, 1, 30*time.Second); string(recs[0].Value) != "secured" {
		t.Fatalf("read back %q", recs[0].Value)
	}
	return cfg.Topic
}

// TestSASL produces through the broker's SASL listener with each mechanism atkafka offers, and checks that a wrong
// password fails start-up at once, saying so, without the password in the message.
func TestSASL(t *testing.T) {
	k := testenv.Kafka(t)
	for _, mech := range SASLMechanisms {
		t.Run(mech, func(t *testing.T) {
			t.Parallel()
			topic := roundTrip(t, k, Config{Brokers: []string{k.SASLBrokers},
				SASL: SASLConfig{Mechanism: strings.ToLower(mech), Username: k.SASLUser, Password: k.SASLPassword}})

			const wrong = "not-the-password"
			cfg := Config{Brokers: []string{k.SASLBrokers}, Topic: topic, Logger: testLogger(t),
				SASL: SASLConfig{Mechanism: mech, Username: k.SASLUser, Password: wrong}}
			start := time.Now()
			_, err := New(context.Background(), cfg)
			if err == nil {
				t.Fatal("New succeeded with a wrong password")
			}
			t.Logf("error after %s: %v", time.Since(start), err)
			if !strings.Contains(err.Error(), "authentication") || strings.Contains(err.Error(), wrong) {
				t.Errorf("error %q should say authentication failed and not contain the password", err)
			}
			if d := time.Since(start); d > 15*time.Second {
				t.Errorf("took %s to fail", d)
			}
		})
	}
}

func TestTLS(t *testing.T) {
	k := testenv.Kafka(t)
	if k.TLSBrokers == "" {
		testenv.Unavailable(t, "the test broker has no TLS listener")
	}
	topic := roundTrip(t, k, Config{Brokers: []string{k.TLSBrokers}, TLS: TLSConfig{Enabled: true, CAFile: k.TLSCAFile}})

	t.Run("untrusted certificate", func(t *testing.T) {
		_, err := New(context.Background(), Config{Brokers: []string{k.TLSBrokers}, Topic: topic, Logger: testLogger(t),
			TLS: TLSConfig{Enabled: true}, ConnectTimeout: 5 * time.Second})
		if err == nil || !strings.Contains(err.Error(), "TLS handshake") {
			t.Fatalf("New with the system roots = %v, want a certificate error", err)
		}
	})
}

// TestMutualTLS produces through a listener that requires a client certificate, and checks that connecting to it
// without one fails start-up at once, saying what is missing.
func TestMutualTLS(t *testing.T) {
	k := testenv.Kafka(t)
	if k.MTLSBrokers == "" {
		testenv.Unavailable(t, "the test broker has no mutual-TLS listener")
	}
	topic := roundTrip(t, k, Config{Brokers: []string{k.MTLSBrokers},
		TLS: TLSConfig{Enabled: true, CAFile: k.TLSCAFile, CertFile: k.TLSClientCertFile, KeyFile: k.TLSClientKeyFile}})

	t.Run("no client certificate", func(t *testing.T) {
		start := time.Now()
		_, err := New(context.Background(), Config{Brokers: []string{k.MTLSBrokers}, Topic: topic, Logger: testLogger(t),
			TLS: TLSConfig{Enabled: true, CAFile: k.TLSCAFile}})
		t.Logf("error after %s: %v", time.Since(start), err)
		if err == nil || !strings.Contains(err.Error(), "client certificate") {
			t.Fatalf("New without a client certificate = %v, want an error that names the client certificate", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("took %s to fail", d)
		}
	})
}

func TestUnreachable(t *testing.T) {
	start := time.Now()
	_, err := New(context.Background(), Config{Brokers: []string{"127.0.0.1:1"}, Topic: "t", ConnectTimeout: 2 * time.Second, Logger: testLogger(t)})
	if err == nil || !strings.Contains(err.Error(), "no Kafka broker reachable at 127.0.0.1:1 within 2s") {
		t.Fatalf("New = %v, want a reachability error", err)
	}
	// A refused connection is retried until the timeout (a broker may still be starting), and not much longer.
	if d := time.Since(start); d < 2*time.Second || d > 4*time.Second {
		t.Errorf("took %s to fail, want about the 2s connect timeout", d)
	}
}

// TestNewTopicsLed: when New returns after creating its topics, the broker already lists a leader for every
// partition, so the first records do not wait for kgo's metadata retries.
func TestNewTopicsLed(t *testing.T) {
	k := testenv.Kafka(t)
	topic := testenv.NewTopic(t)
	p := newProducer(t, Config{Brokers: []string{k.Brokers}, Topic: topic, ExtraTopics: []string{topic + "-dead"}, Partitions: 16})
	details, err := kadm.NewClient(p.cl).ListTopics(context.Background(), topic, topic+"-dead")
	if err != nil {
		t.Fatal(err)
	}
	if !allLed(details, []string{topic, topic + "-dead"}) {
		t.Errorf("partitions without a leader after New: %+v", details)
	}
}

func TestAllLed(t *testing.T) {
	led := kadm.TopicDetail{Partitions: kadm.PartitionDetails{0: {Leader: 1}, 1: {Leader: 1}}}
	leaderless := kadm.TopicDetail{Partitions: kadm.PartitionDetails{0: {Leader: 1}, 1: {Leader: -1}}}
	for name, c := range map[string]struct {
		details kadm.TopicDetails
		want    bool
	}{
		"all led":           {kadm.TopicDetails{"a": led, "b": led}, true},
		"one leaderless":    {kadm.TopicDetails{"a": led, "b": leaderless}, false},
		"topic not listed":  {kadm.TopicDetails{"a": led}, false},
		"no partitions yet": {kadm.TopicDetails{"a": led, "b": {}}, false},
		"topic error":       {kadm.TopicDetails{"a": led, "b": {Err: kerr.UnknownTopicOrPartition}}, false},
	} {
		if got := allLed(c.details, []string{"a", "b"}); got != c.want {
			t.Errorf("%s: allLed = %v, want %v", name, got, c.want)
		}
	}
}
