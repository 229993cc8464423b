package e2e

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/atkafka/atkafka/source/relay/relaytest"
	"github.com/atkafka/atkafka/testenv"
)

// TestSecureKafka replays the capture through the binary into the broker's authenticated listeners, configured
// the way an operator would: mutual TLS by flags, SCRAM by environment variables with the password in a file.
// Every record must arrive, read back through the plaintext listener.
func TestSecureKafka(t *testing.T) {
	t.Parallel()
	k := testenv.Kafka(t)
	if k.MTLSBrokers == "" {
		testenv.Unavailable(t, "the test broker has no mutual-TLS listener")
	}
	password := filepath.Join(t.TempDir(), "kafka-password")
	if err := os.WriteFile(password, []byte(k.SASLPassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name    string
		brokers string
		args    []string
		env     []string
	}{
		{"mutual TLS", k.MTLSBrokers, []string{"--kafka-tls", "--kafka-tls-ca-file", k.TLSCAFile,
			"--kafka-tls-cert-file", k.TLSClientCertFile, "--kafka-tls-key-file", k.TLSClientKeyFile}, nil},
		{"SCRAM-SHA-512", k.SASLBrokers, nil, []string{"ATKAFKA_KAFKA_SASL_MECHANISM=SCRAM-SHA-512",
			"ATKAFKA_KAFKA_SASL_USERNAME=" + k.SASLUser, "ATKAFKA_KAFKA_SASL_PASSWORD_FILE=" + password}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			srv := relaytest.NewServer(relaytest.CorpusFrames(t))
			t.Cleanup(srv.Close)
			p := startAtkafka(t, runConfig{Brokers: c.brokers, Env: c.env,
				Args: relayArgs(srv.URL(), append([]string{"--enrich=false"}, c.args...)...)})
			p.WaitCommitted(srv.LastSeq(), time.Minute)
			if got := len(readRecords(t, k.Brokers, p.Topic, corpusRecords)); got != corpusRecords {
				t.Errorf("%d records, want %d", got, corpusRecords)
			}
		})
	}
}
