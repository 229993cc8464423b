// Package e2e tests the real atkafka binary as an operator runs it: built once, started as a subprocess with
// flags and ATKAFKA_* variables, talking to a real Kafka broker and real (or replayed) atproto peers. What it
// produced is read back from Kafka, and /metrics, /readyz and the cursor file are read the way an operator
// would. The packages' own tests cover the parts; these cover the wiring in cmd/atkafka between them.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/atkafka/atkafka/schema"
	"github.com/atkafka/atkafka/schema/schematest"
	"github.com/atkafka/atkafka/testenv"
)

// binary is the atkafka executable TestMain builds for the whole package run.
var binary string

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

// runTests builds the binary into a temporary folder: building per test would cost seconds each on a loaded
// machine, and every test must run the same build.
func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "atkafka-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	binary = filepath.Join(dir, "atkafka")
	build := exec.Command("go", "build", "-o", binary, "./cmd/atkafka")
	build.Dir = testenv.RepoRoot()
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: building atkafka: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// runConfig describes one atkafka process.
type runConfig struct {
	// Args are the command and its flags, e.g. "firehose", "relay", "--relay-host", url.
	Args []string
	// Env adds KEY=VALUE variables to the test's environment.
	Env []string
	// Brokers is the Kafka bootstrap address; empty means the shared test broker (testenv.Kafka).
	Brokers string
	// Topic is the output topic; empty means a new one (testenv.NewTopic).
	Topic string
	// DataDir holds the cursor file; empty means a new temporary folder. Pass the same folder to resume.
	DataDir string
	// Embedded runs without --bootstrap-servers (nor ATKAFKA_BOOTSTRAP_SERVERS), as after a restart that lost
	// the variable: atkafka serves its embedded broker, on a port the kernel picks. Brokers is ignored.
	Embedded bool
}

// atkafka is a running (or exited) atkafka process.
type atkafka struct {
	t       testing.TB
	cmd     *exec.Cmd
	Topic   string
	DataDir string
	Brokers string

	mu      sync.Mutex
	logs    bytes.Buffer
	addr    string        // metrics listener address, from the start-up log line
	addrSet chan struct{} // closed once addr is known or the process exited
	exited  chan struct{} // closed once Wait returned
	err     error         // Wait's result, readable after exited is closed
}

// startAtkafka starts the binary with cfg plus what every test needs: the broker, a unique output topic, a
// private data folder, a metrics listener on a port the kernel picks (read back from the log, so parallel tests
// never race for ports), JSON logs, and few partitions (the shared broker serves many topics at once). The
// process is stopped with SIGTERM when the test ends, and its log is shown if the test failed.
func startAtkafka(t testing.TB, cfg runConfig) *atkafka {
	t.Helper()
	p := &atkafka{t: t, Topic: cfg.Topic, DataDir: cfg.DataDir, Brokers: cfg.Brokers,
		addrSet: make(chan struct{}), exited: make(chan struct{})}
	if p.Brokers == "" && !cfg.Embedded {
		p.Brokers = testenv.Kafka(t).Brokers
	}
	if p.Topic == "" {
		p.Topic = testenv.NewTopic(t)
	}
	if p.DataDir == "" {
		p.DataDir = t.TempDir()
	}
	args := append(append([]string(nil), cfg.Args...), "--output-topic", p.Topic, "--data-dir", p.DataDir,
		"--metrics-listen-address", "127.0.0.1:0", "--log-format", "json", "--topic-partitions", "4")
	env := os.Environ()
	if cfg.Embedded {
		p.Brokers = ""
		args = append(args, "--embedded-broker-address", "127.0.0.1:0")
		env = slices.DeleteFunc(env, func(kv string) bool { return strings.HasPrefix(kv, "ATKAFKA_BOOTSTRAP_SERVERS=") })
	} else {
		args = append(args, "--bootstrap-servers", p.Brokers)
	}
	p.cmd = exec.Command(binary, args...)
	// A .env in the working directory would be read: run in the data folder, which has none.
	p.cmd.Dir = p.DataDir
	p.cmd.Env = append(env, cfg.Env...)
	p.cmd.SysProcAttr = &syscall.SysProcAttr{}
	dieWithParent(p.cmd.SysProcAttr)
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stdout = logWriter{p} // unused by the firehose commands; kept with the log for failure messages
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting atkafka: %v", err)
	}
	go p.readLog(stderr)
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("atkafka %s log:\n%s", strings.Join(cfg.Args, " "), p.Log())
		}
	})
	return p
}

// readLog keeps the process's log and picks the metrics address out of it; it then waits for the process, so
// that Wait never closes the pipe before everything was read.
func (p *atkafka) readLog(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var entry struct {
			Msg  string `json:"msg"`
			Addr string `json:"addr"`
		}
		p.mu.Lock()
		p.logs.Write(line)
		p.logs.WriteByte('\n')
		if p.addr == "" && json.Unmarshal(line, &entry) == nil && entry.Msg == "metrics and health listener started" {
			p.addr = entry.Addr
			close(p.addrSet)
		}
		p.mu.Unlock()
	}
	_, _ = io.Copy(io.Discard, r)
	p.err = p.cmd.Wait()
	p.mu.Lock()
	if p.addr == "" {
		close(p.addrSet)
	}
	p.mu.Unlock()
	close(p.exited)
}

// logWriter appends to the process's log under its lock: exec copies stdout from a goroutine of its own.
type logWriter struct{ p *atkafka }

func (w logWriter) Write(b []byte) (int, error) {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	return w.p.logs.Write(b)
}

// Log returns everything the process wrote so far.
func (p *atkafka) Log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.logs.String()
}

// MetricsAddr returns the metrics listener's address, waiting for the process to log it.
func (p *atkafka) MetricsAddr() string {
	p.t.Helper()
	select {
	case <-p.addrSet:
	case <-time.After(time.Minute):
		p.t.Fatalf("atkafka did not start its metrics listener within a minute:\n%s", p.Log())
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.addr == "" {
		p.t.Fatalf("atkafka exited before starting its metrics listener (%v):\n%s", p.err, p.logs.String())
	}
	return p.addr
}

// get fetches path from the metrics listener, returning the status code and body.
func (p *atkafka) get(path string) (int, []byte, error) {
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get("http://" + p.MetricsAddr() + path)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// Metrics scrapes /metrics.
func (p *atkafka) Metrics() (metricSet, error) {
	code, body, err := p.get("/metrics")
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("/metrics: HTTP %d: %s", code, body)
	}
	return parseMetrics(body), nil
}

// WaitCommitted waits until the relay cursor committed to Kafka reaches seq: from then on every frame up to seq
// is in Kafka, produced or filtered, so a test can read the topic knowing nothing more will come for it.
func (p *atkafka) WaitCommitted(seq int64, timeout time.Duration) {
	p.t.Helper()
	eventually(p.t, timeout, fmt.Sprintf("relay cursor committed to reach %d", seq), func() error {
		m, err := p.Metrics()
		if err != nil {
			return stopUnlessRunning(p, "%v", err)
		}
		if got := m.value("atkafka_cursor_committed", `source="relay"`); got < float64(seq) {
			return stopUnlessRunning(p, "committed %.0f", got)
		}
		return nil
	})
}

// Exited reports whether the process has exited.
func (p *atkafka) Exited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// Wait waits up to timeout for the process to exit and returns its exit code (-1 when killed by a signal).
func (p *atkafka) Wait(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.exited:
	case <-time.After(timeout):
		p.t.Fatalf("atkafka still running after %s:\n%s", timeout, p.Log())
	}
	var exit *exec.ExitError
	switch {
	case p.err == nil:
		return 0
	case errors.As(p.err, &exit):
		return exit.ExitCode()
	default:
		p.t.Fatalf("atkafka: %v", p.err)
		return -1
	}
}

// Signal sends sig to the process.
func (p *atkafka) Signal(sig os.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil && !p.Exited() {
		p.t.Fatalf("signalling atkafka: %v", err)
	}
}

// Stop ends the process gracefully (SIGTERM), killing it if it is still there after a minute. It returns at
// once when the process already exited, so cleanups may call it unconditionally.
func (p *atkafka) Stop() {
	if p.Exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(time.Minute):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// Cursor returns the seq in the relay cursor file (relay-cursor-<host>.kafka-<cluster id>.txt), ok false while
// there is none.
func (p *atkafka) Cursor() (seq int64, ok bool) {
	p.t.Helper()
	seq, _, ok = p.cursorFile()
	return seq, ok
}

// cursorFile returns the seq in the relay cursor file and the Kafka cluster id it names.
func (p *atkafka) cursorFile() (seq int64, cluster string, ok bool) {
	p.t.Helper()
	files, _ := filepath.Glob(filepath.Join(p.DataDir, "relay-cursor-*.txt"))
	if len(files) == 0 {
		return 0, "", false
	}
	if len(files) > 1 {
		p.t.Fatalf("several cursor files in %s: %v", p.DataDir, files)
	}
	b, err := os.ReadFile(files[0])
	if err != nil {
		p.t.Fatal(err)
	}
	var c struct {
		Cluster string `json:"kafka_cluster_id"`
		Cursor  string `json:"cursor"`
	}
	err = json.Unmarshal(b, &c)
	if err == nil {
		seq, err = strconv.ParseInt(c.Cursor, 10, 64)
	}
	if err != nil || !strings.HasSuffix(files[0], ".kafka-"+c.Cluster+".txt") {
		p.t.Fatalf("cursor file %s holds %q", files[0], b)
	}
	return seq, c.Cluster, true
}

// Records reads the whole output topic: at least atLeast records, then whatever else comes within a second.
func (p *atkafka) Records(atLeast int) []record {
	p.t.Helper()
	return readRecords(p.t, p.Brokers, p.Topic, atLeast)
}

// stopTrying makes eventually give up at once: the condition can no longer become true.
type stopTrying struct{ error }

// stopUnlessRunning is an eventually condition's error, final when p has exited: nothing can change then.
func stopUnlessRunning(p *atkafka, format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	if p.Exited() {
		return stopTrying{fmt.Errorf("atkafka exited (%v): %w", p.err, err)}
	}
	return err
}

// eventually calls cond until it returns nil, failing the test with cond's last error after timeout. The one
// way these tests wait: everything they watch (a subprocess, Kafka, a network) changes asynchronously.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		var stop stopTrying
		if errors.As(err, &stop) || time.Now().After(deadline) {
			t.Fatalf("waiting for %s (%s): %v", what, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// metricSet is a /metrics scrape: the value of each series, keyed by its name and labels as printed
// (`atkafka_produced_events{status="ok"}`).
type metricSet map[string]float64

// parseMetrics reads the Prometheus text format; atkafka's label values never hold spaces, which keeps it simple.
func parseMetrics(body []byte) metricSet {
	m := metricSet{}
	for line := range strings.SplitSeq(string(body), "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			m[line[:i]] = v
		}
	}
	return m
}

// value sums the series of metric name whose labels include every one of labels (each `key="value"`).
func (m metricSet) value(name string, labels ...string) float64 {
	var sum float64
	for series, v := range m {
		base, rest, _ := strings.Cut(series, "{")
		if base != name {
			continue
		}
		matches := true
		for _, l := range labels {
			if !strings.Contains(rest, l) {
				matches = false
				break
			}
		}
		if matches {
			sum += v
		}
	}
	return sum
}

// record is one Kafka record as the tests look at it.
type record struct {
	Key   string
	Value []byte
	Seq   int64 // the seq header
}

// readRecords reads topic from the start: at least atLeast records, then until a second passes without more.
func readRecords(t testing.TB, brokers, topic string, atLeast int) []record {
	t.Helper()
	var out []record
	for _, r := range testenv.ReadAll(t, brokers, topic, atLeast, time.Minute) {
		out = append(out, toRecord(r))
	}
	return out
}

func toRecord(r *kgo.Record) record {
	rec := record{Key: string(r.Key), Value: r.Value}
	for _, h := range r.Headers {
		if h.Key == "seq" {
			rec.Seq, _ = strconv.ParseInt(string(h.Value), 10, 64)
		}
	}
	return rec
}

// event is a standard-format record value (README "Events"), as the output schema's Go type decodes it.
type event = schema.Event

// meta decodes eventMetadata; nil when the event has none.
func meta(t testing.TB, e *event) *schema.Metadata {
	t.Helper()
	m, err := e.Metadata()
	if err != nil {
		t.Fatalf("%s: %v", e.EventMetadata, err)
	}
	return m
}

// decodeEvent decodes a record value in any format, checked against the published relay schema.
func decodeEvent(t testing.TB, value []byte) *event {
	t.Helper()
	data, _, _ := schematest.Check(t, schematest.RelayEvent, value)
	e, err := schema.DecodeEvent(data)
	if err != nil {
		t.Fatalf("record value %s: %v", value, err)
	}
	return e
}

// getJSON fetches url and returns its body, failing the test unless it is a 200.
func getJSON(t testing.TB, url string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: HTTP %d %v: %s", url, resp.StatusCode, err, b)
	}
	return b
}

// topicReader follows a topic from its start and keeps what it read, for tests that wait for one particular
// record (a post they just made) rather than for a known number of them.
type topicReader struct {
	cl   *kgo.Client
	recs []record
}

// newTopicReader starts reading topic; it is closed when the test ends.
func newTopicReader(t testing.TB, brokers, topic string) *topicReader {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(brokers, ",")...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return &topicReader{cl: cl}
}

// find waits up to timeout for a record whose event satisfies match and returns it with its event.
func (r *topicReader) find(t testing.TB, timeout time.Duration, what string, match func(*event) bool) (record, *event) {
	t.Helper()
	var found record
	var ev *event
	eventually(t, timeout, what, func() error {
		for _, rec := range r.recs {
			if e := decodeEvent(t, rec.Value); match(e) {
				found, ev = rec, e
				return nil
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		fs := r.cl.PollFetches(ctx)
		if errs := fs.Errors(); len(errs) > 0 && ctx.Err() == nil {
			return stopTrying{fmt.Errorf("reading %s: %w", errs[0].Topic, errs[0].Err)}
		}
		fs.EachRecord(func(kr *kgo.Record) { r.recs = append(r.recs, toRecord(kr)) })
		return fmt.Errorf("not among %d records", len(r.recs))
	})
	return found, ev
}
