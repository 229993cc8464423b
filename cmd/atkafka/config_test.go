package main

import (
	"context"
	"encoding/json"
	"flag"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/atkafka/atkafka/sink/route"
	"github.com/atkafka/atkafka/testenv"
)

// recorder captures the configuration a command would run with.
type recorder struct {
	cmd string
	cfg *config
}

func (r *recorder) relay(_ context.Context, c *config) error { r.cmd, r.cfg = "relay", c; return nil }
func (r *recorder) tap(_ context.Context, c *config) error   { r.cmd, r.cfg = "tap", c; return nil }
func (r *recorder) ozone(_ context.Context, c *config) error {
	if err := c.validateOzone(); err != nil {
		return err
	}
	r.cmd, r.cfg = "ozone", c
	return nil
}
func (r *recorder) labels(_ context.Context, c *config) error {
	if err := c.validateLabels(); err != nil {
		return err
	}
	if err := c.validateExactlyOnce("labels"); err != nil {
		return err
	}
	r.cmd, r.cfg = "labels", c
	return nil
}
func (r *recorder) tail(_ context.Context, c *config) error { r.cmd, r.cfg = "tail", c; return nil }
func (r *recorder) backfillPlan(_ context.Context, c *config) error {
	r.cmd, r.cfg = "backfill plan", c
	return nil
}
func (r *recorder) backfillRun(_ context.Context, c *config) error {
	r.cmd, r.cfg = "backfill run", c
	return nil
}
func (r *recorder) backfillStatus(_ context.Context, c *config) error {
	r.cmd, r.cfg = "backfill status", c
	return nil
}

func parse(t *testing.T, args ...string) (*recorder, error) {
	t.Helper()
	r := &recorder{}
	err := newApp(r).Run(context.Background(), append([]string{"atkafka"}, args...))
	return r, err
}

func TestGlobalFlagsBeforeOrAfterSubcommand(t *testing.T) {
	before, err := parse(t, "--bootstrap-servers", "k1:9092,k2:9092", "--output-topic", "events", "firehose", "relay")
	if err != nil {
		t.Fatal(err)
	}
	after, err := parse(t, "firehose", "relay", "--bootstrap-servers", "k1:9092,k2:9092", "--output-topic", "events")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []*recorder{before, after} {
		if r.cmd != "relay" || strings.Join(r.cfg.Brokers, ",") != "k1:9092,k2:9092" || r.cfg.Topic != "events" ||
			r.cfg.DeadLetterTopic != "events.deadletter" {
			t.Fatalf("parsed %s %+v", r.cmd, r.cfg)
		}
	}
}

func TestEnvironmentVariables(t *testing.T) {
	t.Setenv("ATKAFKA_BOOTSTRAP_SERVERS", "a:1,b:2")
	t.Setenv("ATKAFKA_OUTPUT_TOPIC", "t")
	t.Setenv("METRICS_LISTEN_ADDRESS", "127.0.0.1:7000") // the legacy name still works
	t.Setenv("DEBUG", "true")
	t.Setenv("ATKAFKA_RELAY_HOST", "ws://127.0.0.1:1")
	t.Setenv("ATKAFKA_MATCHED_COLLECTIONS", "app.bsky.*,chat.bsky.*") // documented synonym of watched
	t.Setenv("ATKAFKA_KAFKA_SASL_MECHANISM", "scram-sha-512")
	t.Setenv("ATKAFKA_KAFKA_SASL_USERNAME", "u")
	t.Setenv("ATKAFKA_KAFKA_SASL_PASSWORD", "p")
	t.Setenv("ATKAFKA_OSPREY_COMPATIBLE", "true")
	t.Setenv("ATKAFKA_VERIFY_COMMITS", "strict")
	r, err := parse(t, "firehose", "relay")
	if err != nil {
		t.Fatal(err)
	}
	c := r.cfg
	if len(c.Brokers) != 2 || c.Topic != "t" || c.MetricsAddr != "127.0.0.1:7000" || !c.Debug || c.Relay.Host != "ws://127.0.0.1:1" ||
		strings.Join(c.Firehose.WatchedCollections, "|") != "app.bsky.*|chat.bsky.*" || c.Kafka.SASLMechanism != "SCRAM-SHA-512" ||
		c.Kafka.SASLPassword != "p" || !c.Osprey.Compatible || c.Relay.VerifyCommits != "strict" {
		t.Fatalf("parsed %+v", c)
	}
}

func TestDefaults(t *testing.T) {
	r, err := parse(t, "firehose", "tap")
	if err != nil {
		t.Fatal(err)
	}
	c := r.cfg
	if len(c.Brokers) != 0 || c.Topic != "atproto-events" || c.MetricsAddr != "0.0.0.0:6009" || c.Kafka.Compression != "zstd" ||
		c.Kafka.Acks != "all" || !c.Kafka.CreateTopic || c.Tap.Host != "ws://localhost:2480" || c.Tap.Workers != 10 ||
		c.DataDir != "." || c.Firehose.PLCHost != "https://plc.directory" || !c.Firehose.Enrich || c.EmbeddedAddr != "127.0.0.1:9092" {
		t.Fatalf("defaults %+v", c)
	}
}

func TestSecretsFromFiles(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := parse(t, "ozone-events", "--pds-host", "http://pds", "--identifier", "mod.test", "--password-file", pw,
		"--labeler-did", "did:plc:x", "--data-dir", dir)
	if err != nil {
		t.Fatal(err)
	}
	if r.cfg.Ozone.Password != "s3cret" || r.cfg.Ozone.CursorFile != filepath.Join(dir, "ozone-cursor.txt") || r.cfg.Ozone.PollInterval != time.Second {
		t.Fatalf("ozone config %+v", r.cfg.Ozone)
	}
	if _, err := parse(t, "ozone-events", "--pds-host", "http://pds", "--identifier", "m", "--password", "x", "--password-file", pw, "--labeler-did", "d"); err == nil {
		t.Fatal("password and password file together accepted")
	}
}

func TestRoutes(t *testing.T) {
	t.Setenv("ATKAFKA_ROUTES", "app.bsky.feed.post=posts, app.bsky.*=bsky")
	r, err := parse(t, "--output-topic", "all", "firehose", "tap", "--route-account-events", "main")
	if err != nil {
		t.Fatal(err)
	}
	want := route.Config{Topic: "all", AccountEventsMainOnly: true,
		Routes: []route.Route{{Pattern: "app.bsky.feed.post", Topic: "posts"}, {Pattern: "app.bsky.*", Topic: "bsky"}}}
	if got := r.cfg.Firehose.Routes; !reflect.DeepEqual(got, want) {
		t.Fatalf("routes %+v, want %+v", got, want)
	}
	r, err = parse(t, "firehose", "relay", "--route", "app.bsky.feed.like=likes", "--route", "chat.*=chat")
	if err != nil || len(r.cfg.Firehose.Routes.Routes) != 2 || r.cfg.Firehose.Routes.AccountEventsMainOnly {
		t.Fatalf("routes from flags: %+v, %v", r.cfg.Firehose.Routes, err)
	}
}

func TestValidationErrors(t *testing.T) {
	cases := map[string][]string{
		"compression":    {"--compression", "brotli", "firehose", "relay"},
		"acks":           {"--acks", "some", "firehose", "relay"},
		"log-format":     {"--log-format", "xml", "firehose", "relay"},
		"kafka-sasl":     {"--kafka-sasl-mechanism", "PLAIN", "firehose", "relay"},
		"cert-file":      {"--kafka-tls-cert-file", "c.pem", "firehose", "relay"},
		"cursor":         {"firehose", "relay", "--cursor", "yesterday"},
		"verify-commits": {"firehose", "relay", "--verify-commits", "on"},
		"snowflake":      {"firehose", "relay", "--snowflake-worker-id", "1024"},
		"osprey-format":  {"firehose", "tap", "--osprey-compatible", "--osprey-format", "rust"},
		"needs --osprey-compatible": {"ozone-events", "--osprey-format", "coordinator", "--pds-host", "http://pds",
			"--identifier", "m", "--password", "x", "--labeler-did", "d"},
		"ozone-events":      {"ozone-events"},
		"dead-letter-topic": {"--output-topic", "x", "--dead-letter-topic", "x", "firehose", "relay"},
	}
	for want, args := range cases {
		_, err := parse(t, args...)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%v: error %v, want one naming %q", args, err, want)
		}
	}
}

func TestHelpHidesSecretsAndListsEnv(t *testing.T) {
	t.Setenv("ATKAFKA_KAFKA_SASL_PASSWORD", "hunter2")
	t.Setenv("ATKAFKA_TAP_ADMIN_PASSWORD", "hunter3")
	var out strings.Builder
	app := newApp(&recorder{})
	app.Writer = &out
	for _, args := range [][]string{{"firehose", "relay", "--help"}, {"firehose", "tap", "--help"}, {"ozone-events", "--help"}} {
		if err := app.Run(context.Background(), append([]string{"atkafka"}, args...)); err != nil {
			t.Fatal(err)
		}
	}
	help := out.String()
	if strings.Contains(help, "hunter") {
		t.Fatal("help output shows a secret")
	}
	for _, env := range []string{"$ATKAFKA_RELAY_HOST", "$ATKAFKA_BOOTSTRAP_SERVERS", "$ATKAFKA_TAP_HOST", "$ATKAFKA_OZONE_PASSWORD"} {
		if !strings.Contains(help, env) {
			t.Errorf("help does not mention %s", env)
		}
	}
}

var update = flag.Bool("update", false, "rewrite the configuration table in README.md")

const tableStart, tableEnd = "<!-- config-table:start -->\n", "<!-- config-table:end -->"

// The README's configuration table is generated from the flags; run `go test ./cmd/atkafka -update` after
// changing a flag.
func TestREADMEConfigTable(t *testing.T) {
	path := filepath.Join(testenv.RepoRoot(), "README.md")
	readme, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := string(readme)
	i, j := strings.Index(s, tableStart), strings.Index(s, tableEnd)
	if i < 0 || j < i {
		t.Fatalf("README.md lacks the %q ... %q markers", tableStart, tableEnd)
	}
	want := configTable(newApp(&recorder{}))
	if got := s[i+len(tableStart) : j]; got != want {
		if !*update {
			t.Fatal("README.md configuration table is out of date: run go test ./cmd/atkafka -update")
		}
		if err := os.WriteFile(path, []byte(s[:i+len(tableStart)]+want+s[j:]), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestNewStageVerifier: off builds no verifier at all (a nil interface, so the relay skips verification), the
// other modes build one, with or without enrichment (whose document cache it then shares); only the relay verifies,
// and a wrong PLC host fails the stage before anything connects.
func TestNewStageVerifier(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	for _, enrich := range []bool{false, true} {
		for mode, want := range map[string]bool{"": false, "off": false, "log": true, "strict": true} {
			c := &config{Relay: relayConfig{VerifyCommits: mode}, Firehose: firehoseConfig{PLCHost: "https://plc.directory", Enrich: enrich}}
			for command, want := range map[string]bool{"relay": want, "tap": false} {
				st, err := newStage(c, log, command)
				if err != nil {
					t.Errorf("%s, %q, enrich %v: %v", command, mode, enrich, err)
					continue
				}
				if (st.verifier != nil) != want {
					t.Errorf("%s, %q, enrich %v: verifier %v", command, mode, enrich, st.verifier)
				}
				st.close()
			}
		}
		c := &config{Relay: relayConfig{VerifyCommits: "log"}, Firehose: firehoseConfig{PLCHost: "plc", Enrich: enrich}}
		if _, err := newStage(c, log, "relay"); err == nil {
			t.Errorf("enrich %v: a PLC host without scheme accepted", enrich)
		}
	}
}

func TestExactlyOnceFlags(t *testing.T) {
	t.Setenv("ATKAFKA_EXACTLY_ONCE", "true")
	r, err := parse(t, "--output-topic", "events", "firehose", "relay")
	if err != nil {
		t.Fatal(err)
	}
	k := r.cfg.Kafka
	if !k.ExactlyOnce || k.CursorTopic != "events.cursors" || k.TransactionalID != "" {
		t.Fatalf("parsed %+v", k)
	}
	if err := r.cfg.validateExactlyOnce("relay"); err != nil || r.cfg.Kafka.TransactionalID != "atkafka-relay-events" {
		t.Errorf("validateExactlyOnce = %v, transactional id %q", err, r.cfg.Kafka.TransactionalID)
	}
	if got := cursorKey(r.cfg, "relay"); got != "relay:bsky.network" {
		t.Errorf("relay cursor key %q", got)
	}

	r, err = parse(t, "firehose", "tap")
	if err != nil {
		t.Fatal(err)
	}
	if err := r.cfg.validateExactlyOnce("tap"); err == nil || !strings.Contains(err.Error(), "not supported by firehose tap") {
		t.Errorf("tap with --exactly-once: %v", err)
	}

	if _, err := parse(t, "--acks", "leader", "firehose", "relay"); err == nil || !strings.Contains(err.Error(), "--exactly-once needs --acks all") {
		t.Errorf("--acks leader with --exactly-once: %v", err)
	}
	if _, err := parse(t, "--cursor-topic", "atproto-events", "firehose", "relay"); err == nil || !strings.Contains(err.Error(), "--cursor-topic must differ") {
		t.Errorf("cursor topic = output topic: %v", err)
	}
	r, err = parse(t, "--transactional-id", "mine", "--cursor-topic", "c", "firehose", "relay")
	if err != nil || r.cfg.validateExactlyOnce("relay") != nil || r.cfg.Kafka.TransactionalID != "mine" || r.cfg.Kafka.CursorTopic != "c" {
		t.Errorf("explicit values: %v %+v", err, r.cfg.Kafka)
	}
}

func TestSchemaCommand(t *testing.T) {
	run := func(args ...string) (string, error) {
		var out strings.Builder
		app := newApp(&recorder{})
		app.Writer = &out
		err := app.Run(context.Background(), append([]string{"atkafka", "schema"}, args...))
		return out.String(), err
	}
	names, err := run()
	if err != nil || !strings.Contains(names, "relay-event\n") || !strings.Contains(names, "osprey-coordinator\n") {
		t.Fatalf("schema names: %q, %v", names, err)
	}
	for _, name := range strings.Fields(names) {
		out, err := run(name)
		if err != nil || !json.Valid([]byte(out)) || !strings.Contains(out, `"$id"`) {
			t.Errorf("schema %s: %v\n%.200s", name, err, out)
		}
	}
	if _, err := run("nope"); err == nil || !strings.Contains(err.Error(), "dead-letter") {
		t.Errorf("unknown schema: %v", err)
	}
}

func TestLabelsFlags(t *testing.T) {
	t.Setenv("ATKAFKA_LABELERS", "did:plc:a,did:plc:b")
	r, err := parse(t, "labels", "--labeler-host", "wss://l.test", "--labeler-cursor", "0", "--verify-labels", "strict",
		"--include-sig", "--enrich=false")
	if err != nil {
		t.Fatal(err)
	}
	l := r.cfg.Labels
	if r.cmd != "labels" || strings.Join(l.DIDs, ",") != "did:plc:a,did:plc:b" || strings.Join(l.Hosts, ",") != "wss://l.test" ||
		l.Cursor != "0" || l.Verify != "strict" || !l.IncludeSig || r.cfg.Firehose.Enrich {
		t.Fatalf("parsed %s %+v", r.cmd, r.cfg)
	}
	t.Setenv("ATKAFKA_LABELERS", "")
	for _, args := range [][]string{
		{"labels"}, // no labeler
		{"labels", "--labeler", "did:plc:a", "--verify-labels", "maybe"},
		{"labels", "--labeler", "did:plc:a,"},               // an empty entry
		{"labels", "--labeler", "plc:a"},                    // not a DID
		{"labels", "--labeler-host", "wss://l.test,l.test"}, // the same labeler twice
		{"labels", "--labeler-host", "ftp://l.test"},
		{"labels", "--labeler", "did:plc:a", "--labeler-cursor", "-1"},
		{"labels", "--labeler", "did:plc:a", "--labeler", "did:plc:b", "--exactly-once"}, // one cursor per transaction
	} {
		if _, err := parse(t, args...); err == nil {
			t.Errorf("%v: accepted", args)
		}
	}
	if _, err := parse(t, "labels", "--labeler", "did:plc:a", "--exactly-once"); err != nil {
		t.Errorf("one labeler with --exactly-once: %v", err)
	}
}
