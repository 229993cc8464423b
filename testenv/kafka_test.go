package testenv

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestNewTopic(t *testing.T) {
	a, b := NewTopic(t), NewTopic(t)
	if a == b {
		t.Fatalf("NewTopic returned %s twice", a)
	}
	if !regexp.MustCompile(`^test-TestNewTopic-[0-9a-f]{12}$`).MatchString(a) {
		t.Errorf("NewTopic = %s", a)
	}
	t.Run("odd/name with spaces", func(t *testing.T) {
		if name := NewTopic(t); !regexp.MustCompile(`^[a-zA-Z0-9._-]{1,249}$`).MatchString(name) {
			t.Errorf("NewTopic = %q is not a valid Kafka topic name", name)
		}
	})
}

func TestReadKafkaEnv(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kafka.env")
	if err := os.WriteFile(path, []byte("ATKAFKA_TEST_KAFKA=127.0.0.1:1\nATKAFKA_TEST_KAFKA_TLS_CA=/x/ca.pem\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	vars, err := readKafkaEnv(path)
	if err != nil {
		t.Fatal(err)
	}
	if k := kafkaEnv(vars, false); k.Brokers != "127.0.0.1:1" || k.TLSCAFile != "/x/ca.pem" || k.SASLUser == "" {
		t.Errorf("kafkaEnv = %+v", k)
	}
	if _, err := readKafkaEnv(filepath.Join(t.TempDir(), "none")); err == nil {
		t.Error("readKafkaEnv of a missing file succeeded")
	}
}

func TestReadAllSharedBroker(t *testing.T) {
	k := Kafka(t)
	topic := NewTopic(t)
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.Brokers))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	// The broker does not create topics on use.
	if _, err := kadm.NewClient(cl).CreateTopic(t.Context(), 1, 1, nil, topic); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"a", "b", "c"} {
		if err := cl.ProduceSync(t.Context(), &kgo.Record{Topic: topic, Value: []byte(v)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	if recs := ReadAll(t, k.Brokers, topic, 2, 30*time.Second); len(recs) != 3 {
		t.Fatalf("ReadAll read %d records, want all 3 present", len(recs))
	}
}
