package testenv

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TapVersion is the indigo version testenv/setup-atproto.sh installs Tap from; tests are written against it.
const TapVersion = "v0.0.0-20260605210604-af2fec94f34c"

// TapOptions configures a Tap started by StartTap.
type TapOptions struct {
	// RelayURL is the firehose Tap follows (http(s) URL); a PDS's own URL works.
	RelayURL string
	// PLCURL is the PLC directory Tap resolves DIDs with.
	PLCURL string
	// AdminPassword, when set, puts HTTP Basic auth (user "admin") on every route, /channel included.
	AdminPassword string
	// DisableAcks makes Tap count an event as acked once written to the socket.
	DisableAcks bool
	// RetryTimeout is how long Tap waits for an ack before redelivering; zero keeps Tap's default (60 s). Tests
	// of redelivery want it short.
	RetryTimeout time.Duration
	// ExtraArgs are appended to `tap run` (e.g. --collection-filters=app.bsky.feed.post).
	ExtraArgs []string
}

// Tap is a running indigo Tap with its own SQLite database, kept across Stop/Start so that its outbox (the events
// not acked yet) survives restarts like in production.
type Tap struct {
	t      testing.TB
	opts   TapOptions
	bin    string
	dbPath string
	port   int
	proc   *peerProc
	client *http.Client
}

// TapBinary returns where testenv/setup-atproto.sh installs Tap, or $ATKAFKA_TAP_BIN.
func TapBinary() string {
	if bin := os.Getenv("ATKAFKA_TAP_BIN"); bin != "" {
		return bin
	}
	cache := os.Getenv("XDG_CACHE_HOME")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache")
	}
	return filepath.Join(cache, "atkafka", "bin", "tap")
}

// StartTap starts Tap on a free loopback port and waits until it answers; it is stopped when the test ends.
// A missing binary makes the test Unavailable.
func StartTap(t testing.TB, opts TapOptions) *Tap {
	t.Helper()
	bin := TapBinary()
	if !isExecutable(bin) {
		Unavailable(t, "tap not found at %s (run testenv/setup-atproto.sh)", bin)
	}
	port, err := freePort()
	if err != nil {
		t.Fatalf("tap: %v", err)
	}
	tp := &Tap{t: t, opts: opts, bin: bin, dbPath: filepath.Join(t.TempDir(), "tap.db"), port: port,
		client: &http.Client{Timeout: 10 * time.Second}}
	t.Cleanup(func() {
		if tp.proc != nil && t.Failed() {
			t.Logf("tap: %s", tp.proc.describe())
		}
		tp.Stop()
	})
	tp.Start()
	return tp
}

// URL returns Tap's HTTP base URL (http://127.0.0.1:PORT).
func (tp *Tap) URL() string { return fmt.Sprintf("http://127.0.0.1:%d", tp.port) }

// ChannelURL returns the websocket URL of Tap's event channel (ws://127.0.0.1:PORT/channel).
func (tp *Tap) ChannelURL() string { return fmt.Sprintf("ws://127.0.0.1:%d/channel", tp.port) }

// Start starts Tap (again) on the same port with the same database. Starting a running Tap is a no-op.
func (tp *Tap) Start() {
	tp.t.Helper()
	if tp.proc != nil && tp.proc.running() {
		return
	}
	args := []string{"run",
		"--db-url", "sqlite://" + tp.dbPath,
		"--bind", fmt.Sprintf("127.0.0.1:%d", tp.port),
		"--relay-url", tp.opts.RelayURL,
		"--plc-url", tp.opts.PLCURL,
		// Tests stop Tap and expect it to resume where it was: save the firehose cursor often.
		"--cursor-save-interval", "100ms",
	}
	if tp.opts.AdminPassword != "" {
		args = append(args, "--admin-password", tp.opts.AdminPassword)
	}
	if tp.opts.DisableAcks {
		args = append(args, "--disable-acks")
	}
	if tp.opts.RetryTimeout > 0 {
		args = append(args, "--retry-timeout", tp.opts.RetryTimeout.String())
	}
	args = append(args, tp.opts.ExtraArgs...)
	proc, err := startPeer("tap", exec.Command(tp.bin, args...))
	if err != nil {
		tp.t.Fatalf("tap: %v", err)
	}
	tp.proc = proc
	err = waitFor(proc, 30*time.Second, func() bool {
		resp, err := tp.get("/health")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	if err != nil {
		tp.t.Fatalf("tap: %v: %s", err, proc.describe())
	}
}

// Stop stops Tap gracefully (SIGTERM), keeping its database. Stopping a stopped Tap is a no-op.
func (tp *Tap) Stop() {
	if tp.proc != nil {
		tp.proc.stop(syscall.SIGTERM, 10*time.Second)
	}
}

// Restart stops and starts Tap, keeping its port and database.
func (tp *Tap) Restart() {
	tp.t.Helper()
	tp.Stop()
	tp.Start()
}

// AddRepos asks Tap to track dids: it backfills their repos (live:false records) and then follows them live.
func (tp *Tap) AddRepos(dids ...string) {
	tp.t.Helper()
	body, _ := json.Marshal(map[string]any{"dids": dids})
	tp.do(http.MethodPost, "/repos/add", body, nil)
}

// RemoveRepos asks Tap to stop tracking dids.
func (tp *Tap) RemoveRepos(dids ...string) {
	tp.t.Helper()
	body, _ := json.Marshal(map[string]any{"dids": dids})
	tp.do(http.MethodPost, "/repos/remove", body, nil)
}

// OutboxSize returns how many events Tap's outbox holds (GET /stats/outbox-buffer). Tap deletes acked events in
// batches of 1000 or every 10 s, so it reaches zero up to 10 s after the last ack; a Tap stopped before that
// forgets the pending batch and redelivers those events after its restart.
func (tp *Tap) OutboxSize() int64 {
	tp.t.Helper()
	var out struct {
		N int64 `json:"outbox_buffer"`
	}
	tp.do(http.MethodGet, "/stats/outbox-buffer", nil, &out)
	return out.N
}

// WaitOutboxEmpty waits until Tap's outbox drained to zero, failing the test after timeout (give it more than
// 10 s, see OutboxSize).
func (tp *Tap) WaitOutboxEmpty(timeout time.Duration) {
	tp.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		n := tp.OutboxSize()
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			tp.t.Fatalf("tap: outbox still holds %d events after %s", n, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// do calls Tap's HTTP API and fails the test unless it answered 2xx.
func (tp *Tap) do(method, path string, body []byte, out any) {
	tp.t.Helper()
	req, err := http.NewRequest(method, tp.URL()+path, bytes.NewReader(body))
	if err != nil {
		tp.t.Fatalf("tap: %v", err)
	}
	resp, err := tp.send(req)
	if err != nil {
		tp.t.Fatalf("tap: %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		tp.t.Fatalf("tap: %s %s: HTTP %d: %s", method, path, resp.StatusCode, strings.TrimSpace(string(b)))
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			tp.t.Fatalf("tap: %s %s: decoding %q: %v", method, path, b, err)
		}
	}
}

func (tp *Tap) get(path string) (*http.Response, error) {
	req, err := http.NewRequest(http.MethodGet, tp.URL()+path, nil)
	if err != nil {
		return nil, err
	}
	return tp.send(req)
}

// send adds the admin credentials Tap was started with.
func (tp *Tap) send(req *http.Request) (*http.Response, error) {
	if tp.opts.AdminPassword != "" {
		req.SetBasicAuth("admin", tp.opts.AdminPassword)
	}
	if req.Body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return tp.client.Do(req)
}
