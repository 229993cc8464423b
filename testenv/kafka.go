package testenv

import (
	"bufio"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// KafkaEnv is a real Apache Kafka broker started by testenv/kafka.sh.
type KafkaEnv struct {
	// Brokers is the PLAINTEXT listener, host:port.
	Brokers string
	// SASLBrokers is the SASL_PLAINTEXT listener, accepting mechanisms PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 with
	// SASLUser and SASLPassword.
	SASLBrokers  string
	SASLUser     string
	SASLPassword string
	// TLSBrokers is the SSL listener; its certificate is signed by the CA in TLSCAFile and names 127.0.0.1.
	TLSBrokers string
	TLSCAFile  string
	// MTLSBrokers is an SSL listener that also requires a client certificate signed by the CA in TLSCAFile, such
	// as the one in TLSClientCertFile and TLSClientKeyFile.
	MTLSBrokers       string
	TLSClientCertFile string
	TLSClientKeyFile  string

	script  string
	state   string
	private bool
}

// Test credentials of kafka.sh's SASL listener.
const (
	kafkaSASLUser     = "atkafka"
	kafkaSASLPassword = "atkafka-secret"
)

// kafkaScriptTimeout bounds one kafka.sh call; a broker start is bounded by the script itself well within it.
const kafkaScriptTimeout = 3 * time.Minute

// Kafka returns the broker shared by every package's tests: the one scripts/test.sh started, found through the
// ATKAFKA_TEST_KAFKA* variables or, for a developer who ran `testenv/kafka.sh start` by hand, through the
// kafka.env it wrote. Tests must not stop it (see PrivateKafka), and should use their own topics (NewTopic).
func Kafka(t testing.TB) KafkaEnv {
	t.Helper()
	vars := map[string]string{}
	for _, k := range []string{"ATKAFKA_TEST_KAFKA", "ATKAFKA_TEST_KAFKA_SASL", "ATKAFKA_TEST_KAFKA_TLS",
		"ATKAFKA_TEST_KAFKA_TLS_CA", "ATKAFKA_TEST_KAFKA_MTLS", "ATKAFKA_TEST_KAFKA_TLS_CLIENT_CERT",
		"ATKAFKA_TEST_KAFKA_TLS_CLIENT_KEY", "ATKAFKA_TEST_KAFKA_SCRIPT", "ATKAFKA_TEST_STATE"} {
		if v := os.Getenv(k); v != "" {
			vars[k] = v
		}
	}
	if vars["ATKAFKA_TEST_KAFKA"] == "" {
		file := filepath.Join(cmp.Or(os.Getenv("ATKAFKA_TEST_STATE"), defaultKafkaState()), "kafka.env")
		fromFile, err := readKafkaEnv(file)
		if err != nil {
			Unavailable(t, "no Kafka broker: ATKAFKA_TEST_KAFKA is unset and %v (run testenv/kafka.sh start, or scripts/test.sh)", err)
		}
		vars = fromFile
	}
	return kafkaEnv(vars, false)
}

// PrivateKafka starts a broker of the test's own, stopped at the end of the test. Tests that stop or restart the
// broker need one: the shared broker serves other packages' tests at the same time. It takes about ten seconds.
func PrivateKafka(t testing.TB) KafkaEnv {
	t.Helper()
	if _, err := exec.LookPath("java"); err != nil {
		Unavailable(t, "java not found, needed for a private Kafka broker: %v", err)
	}
	state := t.TempDir()
	k := KafkaEnv{script: filepath.Join(RepoRoot(), "testenv", "kafka.sh"), state: state, private: true}
	t.Cleanup(func() { k.run(t, "stop") })
	k.run(t, "start")
	vars, err := readKafkaEnv(filepath.Join(state, "kafka.env"))
	if err != nil {
		t.Fatalf("private Kafka broker started but %v", err)
	}
	return kafkaEnv(vars, true)
}

func kafkaEnv(vars map[string]string, private bool) KafkaEnv {
	return KafkaEnv{
		Brokers:           vars["ATKAFKA_TEST_KAFKA"],
		SASLBrokers:       vars["ATKAFKA_TEST_KAFKA_SASL"],
		SASLUser:          kafkaSASLUser,
		SASLPassword:      kafkaSASLPassword,
		TLSBrokers:        vars["ATKAFKA_TEST_KAFKA_TLS"],
		TLSCAFile:         vars["ATKAFKA_TEST_KAFKA_TLS_CA"],
		MTLSBrokers:       vars["ATKAFKA_TEST_KAFKA_MTLS"],
		TLSClientCertFile: vars["ATKAFKA_TEST_KAFKA_TLS_CLIENT_CERT"],
		TLSClientKeyFile:  vars["ATKAFKA_TEST_KAFKA_TLS_CLIENT_KEY"],
		script:            cmp.Or(vars["ATKAFKA_TEST_KAFKA_SCRIPT"], filepath.Join(RepoRoot(), "testenv", "kafka.sh")),
		state:             vars["ATKAFKA_TEST_STATE"],
		private:           private,
	}
}

// StopBroker stops the broker process, keeping its ports and data for StartBroker.
func (k KafkaEnv) StopBroker(t testing.TB) {
	t.Helper()
	k.mustBePrivate(t)
	k.run(t, "stop-broker")
}

// StartBroker starts the broker process again and waits until it answers.
func (k KafkaEnv) StartBroker(t testing.TB) {
	t.Helper()
	k.mustBePrivate(t)
	k.run(t, "start-broker")
}

// RestartBroker stops the broker cleanly and starts it again on the same ports and data.
func (k KafkaEnv) RestartBroker(t testing.TB) {
	t.Helper()
	k.mustBePrivate(t)
	k.run(t, "restart-broker")
}

func (k KafkaEnv) mustBePrivate(t testing.TB) {
	t.Helper()
	if !k.private {
		t.Fatal("testenv: only a PrivateKafka broker may be stopped; the shared one serves other tests too")
	}
}

// run calls kafka.sh. It is safe from cleanups, where a failure can only be reported.
func (k KafkaEnv) run(t testing.TB, command string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), kafkaScriptTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", k.script, command)
	cmd.Env = append(os.Environ(), "ATKAFKA_TEST_STATE="+k.state)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		if InCI() || command != "start" {
			t.Fatalf("testenv/kafka.sh %s: %v\n%s", command, err, out)
		}
		Unavailable(t, "testenv/kafka.sh start failed: %v\n%s", err, out)
	}
	t.Logf("testenv/kafka.sh %s took %s", command, time.Since(start).Round(time.Millisecond))
}

func defaultKafkaState() string {
	return filepath.Join(os.TempDir(), fmt.Sprintf("atkafka-kafka-%d", os.Getuid()))
}

// readKafkaEnv reads the KEY=VALUE lines kafka.sh writes.
func readKafkaEnv(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	vars := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			vars[k] = v
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if vars["ATKAFKA_TEST_KAFKA"] == "" {
		return nil, errors.New(path + " names no ATKAFKA_TEST_KAFKA")
	}
	return vars, nil
}

var notTopicChars = regexp.MustCompile(`[^a-zA-Z0-9._-]+`)

// NewTopic returns a topic name no other test uses, readable in broker logs: the test's name and a random suffix.
func NewTopic(t testing.TB) string {
	t.Helper()
	name := strings.Trim(notTopicChars.ReplaceAllString(t.Name(), "-"), "-")
	if len(name) > 150 {
		name = name[:150]
	}
	var suffix [6]byte
	_, _ = rand.Read(suffix[:])
	return "test-" + name + "-" + hex.EncodeToString(suffix[:])
}

// readAllQuiet is how long ReadAll keeps reading after it has enough, to also return duplicates.
const readAllQuiet = time.Second

// ReadAll reads topic from the beginning through brokers (comma separated) until it has at least wantAtLeast
// records, failing the test if that takes longer than timeout. It then keeps reading until nothing new comes for a
// second, so that a test counting records sees duplicates too. opts add client options (SASL, TLS, isolation).
func ReadAll(t testing.TB, brokers, topic string, wantAtLeast int, timeout time.Duration, opts ...kgo.Opt) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{
		kgo.SeedBrokers(strings.Split(brokers, ",")...),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(250 * time.Millisecond),
	}, opts...)...)
	if err != nil {
		t.Fatalf("ReadAll: %v", err)
	}
	defer cl.Close()

	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var recs []*kgo.Record
	for len(recs) < wantAtLeast {
		got, err := pollKafka(ctx, cl)
		if err != nil {
			t.Fatalf("ReadAll: read %d of at least %d records from %s within %s: %v", len(recs), wantAtLeast, topic, timeout, err)
		}
		recs = append(recs, got...)
	}
	for {
		quiet, cancel := context.WithTimeout(context.Background(), readAllQuiet)
		got, _ := pollKafka(quiet, cl)
		cancel()
		if len(got) == 0 {
			return recs
		}
		recs = append(recs, got...)
	}
}

// pollKafka returns one poll's records, or the first fetch error; an ended ctx is an error.
func pollKafka(ctx context.Context, cl *kgo.Client) ([]*kgo.Record, error) {
	fs := cl.PollFetches(ctx)
	if err := ctx.Err(); err != nil {
		return fs.Records(), err
	}
	if errs := fs.Errors(); len(errs) > 0 {
		return nil, fmt.Errorf("fetching %s[%d]: %w", errs[0].Topic, errs[0].Partition, errs[0].Err)
	}
	return fs.Records(), nil
}
