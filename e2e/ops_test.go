package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/atkafka/atkafka/source/relay/relaytest"
	"github.com/atkafka/atkafka/testenv"
)

// switchProxy forwards TCP connections to a target while on; while off it closes every connection at once,
// which to atkafka looks like a relay that is not there. It gives a test a relay it can take away and bring
// back on the same address.
type switchProxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	on    bool
	conns map[net.Conn]bool
}

// newSwitchProxy listens on a free loopback port, forwarding to target (host:port) once switched on.
func newSwitchProxy(t testing.TB, target string) *switchProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	px := &switchProxy{ln: ln, target: target, conns: map[net.Conn]bool{}}
	go px.accept()
	t.Cleanup(func() {
		ln.Close()
		px.set(false)
	})
	return px
}

func (px *switchProxy) accept() {
	for {
		c, err := px.ln.Accept()
		if err != nil {
			return
		}
		go px.forward(c)
	}
}

func (px *switchProxy) forward(c net.Conn) {
	px.mu.Lock()
	on := px.on
	px.mu.Unlock()
	if !on {
		c.Close()
		return
	}
	up, err := net.Dial("tcp", px.target)
	if err != nil {
		c.Close()
		return
	}
	px.mu.Lock()
	px.conns[c], px.conns[up] = true, true
	px.mu.Unlock()
	go func() { _, _ = io.Copy(up, c); up.Close() }()
	_, _ = io.Copy(c, up)
	c.Close()
}

// set switches forwarding; switching off also cuts every forwarded connection.
func (px *switchProxy) set(on bool) {
	px.mu.Lock()
	defer px.mu.Unlock()
	px.on = on
	if !on {
		for c := range px.conns {
			c.Close()
		}
		clear(px.conns)
	}
}

// readiness fetches /readyz and returns its status code and the checks that failed, by name.
func readiness(p *atkafka) (int, map[string]string, error) {
	code, body, err := p.get("/readyz")
	if err != nil {
		return 0, nil, err
	}
	var rep struct {
		Status string `json:"status"`
		Checks []struct {
			Name   string `json:"name"`
			OK     bool   `json:"ok"`
			Detail string `json:"detail"`
		} `json:"checks"`
	}
	if err := json.Unmarshal(body, &rep); err != nil {
		return code, nil, fmt.Errorf("/readyz body %q: %w", body, err)
	}
	failed := map[string]string{}
	for _, c := range rep.Checks {
		if !c.OK {
			failed[c.Name] = c.Detail
		}
	}
	return code, failed, nil
}

// waitReadiness waits until /readyz answers code, with the relay check failing exactly when code is 503.
func waitReadiness(t testing.TB, p *atkafka, code int, why string) {
	t.Helper()
	eventually(t, time.Minute, fmt.Sprintf("/readyz %d (%s)", code, why), func() error {
		got, failed, err := readiness(p)
		if err != nil {
			return stopUnlessRunning(p, "%v", err)
		}
		if _, relayDown := failed["relay connected"]; got != code || relayDown != (code == http.StatusServiceUnavailable) {
			return stopUnlessRunning(p, "HTTP %d, failed checks %v", got, failed)
		}
		return nil
	})
}

// healthcheck runs `atkafka healthcheck` against addr and returns its exit code.
func healthcheck(t testing.TB, addr string) int {
	t.Helper()
	cmd := exec.Command(binary, "healthcheck", "--metrics-listen-address", addr)
	cmd.Dir = t.TempDir()
	out, err := cmd.CombinedOutput()
	if exit, ok := err.(*exec.ExitError); ok {
		return exit.ExitCode()
	}
	if err != nil {
		t.Fatalf("healthcheck: %v: %s", err, out)
	}
	return 0
}

// TestHealthEndpoints follows /readyz through a relay that is not there yet, is reachable, and goes away again,
// with /healthz and `atkafka healthcheck` saying alive throughout.
func TestHealthEndpoints(t *testing.T) {
	t.Parallel()
	srv := relaytest.NewServer(relaytest.CorpusFrames(t))
	t.Cleanup(srv.Close)
	px := newSwitchProxy(t, strings.TrimPrefix(srv.URL(), "ws://"))
	p := startAtkafka(t, runConfig{Args: relayArgs("ws://"+px.ln.Addr().String(), "--enrich=false")})

	waitReadiness(t, p, http.StatusServiceUnavailable, "relay not reachable yet")
	if code, body, err := p.get("/healthz"); err != nil || code != http.StatusOK || !strings.Contains(string(body), `"ok"`) {
		t.Errorf("/healthz while the relay is unreachable: HTTP %d %s %v", code, body, err)
	}
	if code := healthcheck(t, p.MetricsAddr()); code != 0 {
		t.Errorf("healthcheck against a running atkafka: exit %d", code)
	}

	px.set(true)
	waitReadiness(t, p, http.StatusOK, "relay connected")
	p.WaitCommitted(srv.LastSeq(), time.Minute)
	waitReadiness(t, p, http.StatusOK, "capture delivered")

	px.set(false)
	waitReadiness(t, p, http.StatusServiceUnavailable, "relay gone")
	if code, _, err := p.get("/healthz"); err != nil || code != http.StatusOK {
		t.Errorf("/healthz after the relay went away: HTTP %d %v", code, err)
	}

	addr := p.MetricsAddr()
	p.Stop()
	if code := healthcheck(t, addr); code != 1 {
		t.Errorf("healthcheck with nothing listening: exit %d, want 1", code)
	}
}

// TestShutdownFlushes sends SIGTERM in the middle of a fast replay: atkafka must exit 0 within
// --shutdown-timeout with a cursor file whose every frame is in Kafka, and a restart must resume right after it
// (the cursor it asks the relay for) and leave nothing missing.
func TestShutdownFlushes(t *testing.T) {
	t.Parallel()
	// 40 loops of the capture (6000 frames, contiguous seqs) at a pace that keeps the replay going for seconds
	// after the first records reach Kafka (a new topic takes a moment to accept them), so the signal surely
	// lands mid-stream.
	srv := relaytest.NewServer(relaytest.CorpusFrames(t), relaytest.Loops(40), relaytest.Pace(1000))
	t.Cleanup(srv.Close)
	const shutdownTimeout = 10 * time.Second
	args := relayArgs(srv.URL(), "--enrich=false", "--shutdown-timeout", shutdownTimeout.String())
	p := startAtkafka(t, runConfig{Args: args})
	p.WaitCommitted(srv.FirstSeq()+500, time.Minute)

	began := time.Now()
	p.Signal(syscall.SIGTERM)
	if code := p.Wait(2 * shutdownTimeout); code != 0 {
		t.Errorf("exit code %d after SIGTERM", code)
	}
	if took := time.Since(began); took > shutdownTimeout {
		t.Errorf("shutdown took %s, more than --shutdown-timeout %s", took, shutdownTimeout)
	}
	saved, ok := p.Cursor()
	if !ok || saved >= srv.LastSeq() {
		t.Fatalf("cursor file %d (present: %v): the replay was not interrupted before seq %d", saved, ok, srv.LastSeq())
	}
	// Every capture frame makes at least one record (checked over the whole stream below).
	first := seqCounts(p.Records(int(saved - srv.FirstSeq() + 1)))
	for seq := srv.FirstSeq(); seq <= saved; seq++ {
		if first[seq] == 0 {
			t.Fatalf("seq %d is at or before the saved cursor %d but not in Kafka", seq, saved)
		}
	}

	again := startAtkafka(t, runConfig{Topic: p.Topic, DataDir: p.DataDir, Args: args})
	again.WaitCommitted(srv.LastSeq(), 2*time.Minute)
	if cursors := srv.Cursors(); len(cursors) != 2 || cursors[1] != strconv.FormatInt(saved, 10) {
		t.Errorf("connections asked for cursors %q, want the tip then %d", cursors, saved)
	}
	all := seqCounts(again.Records(srv.Len()))
	for seq := srv.FirstSeq(); seq <= srv.LastSeq(); seq++ {
		if all[seq] == 0 {
			t.Errorf("seq %d missing after the restart", seq)
		}
	}
	t.Logf("SIGTERM at cursor %d of %d..%d", saved, srv.FirstSeq(), srv.LastSeq())
}

// seqCounts counts records per seq header.
func seqCounts(records []record) map[int64]int {
	n := map[int64]int{}
	for _, r := range records {
		n[r.Seq]++
	}
	return n
}

// TestShutdownBoundedWhileKafkaDown sends SIGTERM while the broker is gone and frames wait for it: atkafka must
// still exit within --shutdown-timeout (a stuck flush must not hold an orchestrator's stop), with a cursor file
// that claims only what Kafka acknowledged.
func TestShutdownBoundedWhileKafkaDown(t *testing.T) {
	t.Parallel()
	k := testenv.PrivateKafka(t)
	// Slow enough that frames keep arriving for the whole test.
	srv := relaytest.NewServer(relaytest.CorpusFrames(t), relaytest.Loops(20), relaytest.Pace(100))
	t.Cleanup(srv.Close)
	const shutdownTimeout = 3 * time.Second
	p := startAtkafka(t, runConfig{Brokers: k.Brokers,
		Args: relayArgs(srv.URL(), "--enrich=false", "--shutdown-timeout", shutdownTimeout.String())})
	p.WaitCommitted(srv.FirstSeq()+20, time.Minute)
	k.StopBroker(t)
	// Frames read since the broker went away are pending: the cursor read runs ahead of the committed one.
	var committed float64
	eventually(t, time.Minute, "frames pending for the stopped broker", func() error {
		m, err := p.Metrics()
		if err != nil {
			return stopUnlessRunning(p, "%v", err)
		}
		committed = m.value("atkafka_cursor_committed", `source="relay"`)
		if pending := m.value("atkafka_cursor_current", `source="relay"`) - committed; pending < 20 {
			return fmt.Errorf("%v frames pending", pending)
		}
		return nil
	})

	// /readyz says which part is missing: Kafka, not the relay.
	eventually(t, time.Minute, "/readyz failing its kafka check", func() error {
		code, failed, err := readiness(p)
		if err != nil {
			return stopUnlessRunning(p, "%v", err)
		}
		if _, kafkaDown := failed["kafka"]; code != http.StatusServiceUnavailable || !kafkaDown {
			return fmt.Errorf("HTTP %d, failed checks %v", code, failed)
		}
		if _, relayDown := failed["relay connected"]; relayDown {
			return fmt.Errorf("relay check failed too: %v", failed)
		}
		return nil
	})

	began := time.Now()
	p.Signal(syscall.SIGTERM)
	code := p.Wait(time.Minute)
	if took := time.Since(began); took > shutdownTimeout+2*time.Second {
		t.Errorf("shutdown with Kafka down took %s, --shutdown-timeout is %s", took, shutdownTimeout)
	}
	if code != 0 {
		t.Errorf("exit code %d after SIGTERM", code)
	}
	// Nothing was acknowledged after the broker stopped, so the saved cursor is the last committed one.
	if saved, ok := p.Cursor(); !ok || saved != int64(committed) {
		t.Errorf("cursor file %d (present: %v), want %.0f, what Kafka had acknowledged", saved, ok, committed)
	}
}
