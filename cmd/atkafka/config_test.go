package main

import (
	"context"
	"encoding/json"
	"flag"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/atkafka/atkafka/sink/kafka"
	"github.com/atkafka/atkafka/sink/route"
	"github.com/atkafka/atkafka/source/relay"
	"github.com/atkafka/atkafka/source/tap"
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
	want := defaults("relay")
	want.Brokers, want.Topic, want.DeadLetterTopic, want.Tail.Topic = []string{"a:1", "b:2"}, "t", "t.deadletter", "t"
	want.Kafka.CursorTopic, want.Firehose.Routes.Topic = "t.cursors", "t"
	want.Backfill.Topic, want.Backfill.FailedTopic = "t.backfill", "t.backfill.failed"
	want.MetricsAddr, want.Debug, want.Relay.Host, want.Relay.VerifyCommits = "127.0.0.1:7000", true, "ws://127.0.0.1:1", "strict"
	want.Firehose.WatchedCollections = []string{"app.bsky.*", "chat.bsky.*"}
	want.Kafka.SASLMechanism, want.Kafka.SASLUsername, want.Kafka.SASLPassword = "SCRAM-SHA-512", "u", "p"
	want.Osprey.Compatible = true
	if diff := cmp.Diff(want, r.cfg); diff != "" {
		t.Fatalf("configuration (-want +got):\n%s", diff)
	}
}

// defaults is the configuration of a firehose command (relay or tap) run without flags or variables: what users
// run, spelled out rather than taken from the libraries' Default constants, so that a changed library default
// shows here as a changed CLI default.
func defaults(command string) *config {
	c := &config{
		Command: command, Topic: "atproto-events", DeadLetterTopic: "atproto-events.deadletter",
		Kafka: kafkaConfig{Compression: "zstd", Linger: 5 * time.Millisecond, MaxBatchBytes: 1 << 20, Acks: "all",
			MaxInFlightRecords: 50_000, MaxInFlightBytes: 64 << 20, CreateTopic: true, Partitions: 64,
			ConnectTimeout: 15 * time.Second, CursorTopic: "atproto-events.cursors"},
		EmbeddedAddr: "127.0.0.1:9092", DataDir: ".", MetricsAddr: "0.0.0.0:6009", ReadinessWindow: 2 * time.Minute,
		ShutdownTimeout: 30 * time.Second, LogFormat: "text",
		Osprey: ospreyConfig{Format: "worker"},
		Firehose: firehoseConfig{Routes: route.Config{Topic: "atproto-events"}, RouteAccountEvents: "all",
			Enrich: true, PLCHost: "https://plc.directory", EnrichTimeout: 2 * time.Second, DIDCacheSize: 500_000,
			DIDCacheTTL: time.Hour, EnrichConcurrency: 256, ProfileCacheSize: 200_000, ProfileCacheTTL: 10 * time.Minute,
			PLCRate: 100, APIRate: 50},
		Tail:     tailConfig{Topic: "atproto-events"},
		Backfill: backfillConfig{Topic: "atproto-events.backfill", FailedTopic: "atproto-events.backfill.failed"},
	}
	switch command {
	case "relay":
		c.Relay = relayConfig{Host: "wss://bsky.network", MaxInFlight: 1024, VerifyCommits: "off"}
	case "tap":
		c.Tap = tapConfig{Host: "ws://localhost:2480", Workers: 10, MaxInFlight: 1024}
	}
	return c
}

func TestDefaults(t *testing.T) {
	for _, command := range []string{"relay", "tap"} {
		r, err := parse(t, "firehose", command)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(defaults(command), r.cfg); diff != "" {
			t.Errorf("firehose %s defaults (-want +got):\n%s", command, diff)
		}
	}
}

// TestLibraryDefaults: what a library does with a zero field is what the CLI does by default, so that a library
// user and an operator get the same service. The flags name the constants; --shutdown-timeout stands for three.
func TestLibraryDefaults(t *testing.T) {
	want := defaults("relay").ShutdownTimeout
	for name, got := range map[string]time.Duration{"relay.DefaultShutdownTimeout": relay.DefaultShutdownTimeout,
		"tap.DefaultDrainTimeout": tap.DefaultDrainTimeout, "kafka.DefaultFlushTimeout": kafka.DefaultFlushTimeout} {
		if got != want {
			t.Errorf("%s = %v, --shutdown-timeout defaults to %v", name, got, want)
		}
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
	if diff := cmp.Diff(want, r.cfg.Firehose.Routes); diff != "" {
		t.Fatalf("routes (-want +got):\n%s", diff)
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

// tail's help lists the global flags that apply to reading and none of the producer's, exactly-once or operations
// flags, which it accepts (they are global) but ignores.
func TestTailHelpListsReadingFlagsOnly(t *testing.T) {
	var out strings.Builder
	app := newApp(&recorder{})
	app.Writer = &out
	if err := app.Run(context.Background(), []string{"atkafka", "tail", "--help"}); err != nil {
		t.Fatal(err)
	}
	help := out.String()
	for _, f := range []string{"--topic", "--from-beginning", "--bootstrap-servers", "--output-topic", "--kafka-connect-timeout",
		"--kafka-tls-ca-file", "--kafka-sasl-mechanism", "--embedded-broker-address", "--log-format"} {
		if !strings.Contains(help, f+" ") {
			t.Errorf("tail --help lacks %s", f)
		}
	}
	for _, f := range []string{"--compression", "--acks", "--max-inflight-records", "--create-topic", "--dead-letter-topic",
		"--exactly-once", "--transactional-id", "--cursor-topic", "--enrich", "--plc-host", "--data-dir",
		"--shutdown-timeout", "--metrics-listen-address", "--embedded-data-dir"} {
		if strings.Contains(help, f+" ") {
			t.Errorf("tail --help lists %s", f)
		}
	}
	if _, err := parse(t, "tail", "--compression", "lz4"); err != nil {
		t.Errorf("tail no longer accepts a global producer flag: %v", err)
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

// TestNewStageLabelsIdentities: the labels source resolves labelers given by DID and label keys through the
// enricher (the one identity resolver), built for it even without enrichment, and only then in the pipeline.
func TestNewStageLabelsIdentities(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	for _, tc := range []struct {
		labels labelsConfig
		want   bool
	}{
		{labels: labelsConfig{Hosts: []string{"mod.example"}}},
		{labels: labelsConfig{Hosts: []string{"mod.example"}, Verify: "off"}},
		{labels: labelsConfig{DIDs: []string{"did:plc:labelera"}}, want: true},
		{labels: labelsConfig{Hosts: []string{"mod.example"}, Verify: "strict"}, want: true},
	} {
		c := &config{Labels: tc.labels, Firehose: firehoseConfig{PLCHost: "https://plc.directory"}}
		st, err := newStage(c, log, "labels")
		if err != nil {
			t.Fatalf("%+v: %v", tc.labels, err)
		}
		if (st.identities != nil) != tc.want || st.pipeline.Enricher != nil {
			t.Errorf("%+v: identities %v, in the pipeline %v; want identities %v, not in the pipeline",
				tc.labels, st.identities != nil, st.pipeline.Enricher != nil, tc.want)
		}
		st.close()
	}
}

func TestExactlyOnceFlags(t *testing.T) {
	t.Setenv("ATKAFKA_EXACTLY_ONCE", "true")
	r, err := parse(t, "--output-topic", "events", "firehose", "relay")
	if err != nil {
		t.Fatal(err)
	}
	k := r.cfg.Kafka
	if !k.ExactlyOnce || k.CursorTopic != "events.cursors" || k.TransactionalID != "atkafka-relay-events" {
		t.Fatalf("parsed %+v", k)
	}
	if got := cursorKey(r.cfg, "relay"); got != "relay:bsky.network" {
		t.Errorf("relay cursor key %q", got)
	}

	if _, err := parse(t, "firehose", "tap"); err == nil || !strings.Contains(err.Error(), "not supported by firehose tap") {
		t.Errorf("tap with --exactly-once: %v", err)
	}
	r, err = parse(t, "ozone-events", "--pds-host", "http://pds", "--identifier", "m", "--password", "x", "--labeler-did", "d")
	if err != nil || r.cfg.Kafka.TransactionalID != "atkafka-ozone-atproto-events" {
		t.Errorf("ozone-events: %v, transactional id %q", err, r.cfg.Kafka.TransactionalID)
	}

	if _, err := parse(t, "--acks", "leader", "firehose", "relay"); err == nil || !strings.Contains(err.Error(), "--exactly-once needs --acks all") {
		t.Errorf("--acks leader with --exactly-once: %v", err)
	}
	if _, err := parse(t, "--cursor-topic", "atproto-events", "firehose", "relay"); err == nil || !strings.Contains(err.Error(), "--cursor-topic must differ") {
		t.Errorf("cursor topic = output topic: %v", err)
	}
	r, err = parse(t, "--transactional-id", "mine", "--cursor-topic", "c", "firehose", "relay")
	if err != nil || r.cfg.Kafka.TransactionalID != "mine" || r.cfg.Kafka.CursorTopic != "c" {
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
	} {
		if _, err := parse(t, args...); err == nil {
			t.Errorf("%v: accepted", args)
		}
	}
	if _, err := parse(t, "labels", "--labeler", "did:plc:a", "--labeler", "did:plc:b", "--exactly-once"); err != nil {
		t.Errorf("two labelers with --exactly-once (a transactional producer each): %v", err)
	}
}
