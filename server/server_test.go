package server

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/atkafka/atkafka/metrics"
)

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec.Code, rec.Body.String()
}

func readyz(t *testing.T, s *Server) (int, ReadinessReport) {
	t.Helper()
	code, body := get(t, s.Handler(), "/readyz")
	var rep ReadinessReport
	if err := json.Unmarshal([]byte(body), &rep); err != nil {
		t.Fatalf("/readyz body %q: %v", body, err)
	}
	return code, rep
}

func TestHealthz(t *testing.T) {
	// Liveness ignores readiness: a failing dependency must not get the process restarted.
	s := New("", WithReadiness("kafka", func() error { return errors.New("down") }))
	code, body := get(t, s.Handler(), "/healthz")
	if code != http.StatusOK || strings.TrimSpace(body) != `{"status":"ok"}` {
		t.Fatalf("/healthz = %d %q", code, body)
	}
}

func TestReadyzFollowsChecks(t *testing.T) {
	var connected atomic.Bool
	s := New("", WithReadiness("relay connected", func() error {
		if !connected.Load() {
			return errors.New("dialing wss://relay.example")
		}
		return nil
	}))
	s.AddReadiness("kafka", func() error { return nil })

	code, rep := readyz(t, s)
	if code != http.StatusServiceUnavailable || rep.Status != "not ready" {
		t.Fatalf("before connecting: %d %+v", code, rep)
	}
	want := []CheckResult{{Name: "relay connected", Detail: "dialing wss://relay.example"}, {Name: "kafka", OK: true}}
	if len(rep.Checks) != 2 || rep.Checks[0] != want[0] || rep.Checks[1] != want[1] {
		t.Fatalf("checks = %+v, want %+v", rep.Checks, want)
	}

	connected.Store(true)
	if code, rep := readyz(t, s); code != http.StatusOK || rep.Status != "ready" {
		t.Fatalf("after connecting: %d %+v", code, rep)
	}

	connected.Store(false)
	if code, _ := readyz(t, s); code != http.StatusServiceUnavailable {
		t.Fatalf("after disconnecting: %d", code)
	}
}

func TestReadyzSurvivesHangingAndPanickingChecks(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	s := New("", WithCheckTimeout(50*time.Millisecond),
		WithReadiness("hangs", func() error { <-release; return nil }),
		WithReadiness("panics", func() error { panic("boom") }))
	start := time.Now()
	code, rep := readyz(t, s)
	if code != http.StatusServiceUnavailable || rep.Checks[0].OK || rep.Checks[1].OK {
		t.Fatalf("got %d %+v", code, rep)
	}
	if !strings.Contains(rep.Checks[0].Detail, "did not answer") || !strings.Contains(rep.Checks[1].Detail, "boom") {
		t.Fatalf("details: %+v", rep.Checks)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("/readyz took %s with a hanging check", d)
	}
}

func TestMetricsExposesContractNames(t *testing.T) {
	// Vecs only appear once a child exists; touch a few as the sources do.
	metrics.HandledEvents.WithLabelValues("operation#create", metrics.CollectionLabel("app.bsky.feed.post")).Inc()
	metrics.ProducedEvents.WithLabelValues("ok").Inc()
	metrics.ProduceLatency.WithLabelValues("relay").Observe(0.01)

	code, body := get(t, New("", WithMetrics(metrics.Registry)).Handler(), "/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics = %d", code)
	}
	for _, want := range []string{
		`atkafka_handled_events{action_name="operation#create",collection="app.bsky.feed.post"} `,
		`atkafka_produced_events{status="ok"} `,
		`atkafka_produce_latency_seconds_bucket{source="relay",le="0.025"} `,
		"go_goroutines ",
		"process_start_time_seconds ",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if strings.Contains(body, "atkafka_handled_events_total") {
		t.Error("counter exposed with a _total suffix: dashboards query atkafka_handled_events")
	}
}

func TestPprofIndex(t *testing.T) {
	code, body := get(t, New("").Handler(), "/debug/pprof/")
	if code != http.StatusOK || !strings.Contains(body, "goroutine") {
		t.Fatalf("/debug/pprof/ = %d", code)
	}
}

func TestRunServesAndShutsDown(t *testing.T) {
	s := New("127.0.0.1:0", WithShutdownTimeout(200*time.Millisecond))
	stop := serve(t, s)

	base := "http://" + s.Addr().String()
	resp, err := http.Get(base + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/healthz = %d", resp.StatusCode)
	}

	// A request that outlives the shutdown timeout (a CPU profile) must not hold up Run.
	profile := make(chan struct{})
	go func() {
		defer close(profile)
		if resp, err := http.Get(base + "/debug/pprof/profile?seconds=10"); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
		}
	}()
	time.Sleep(50 * time.Millisecond)

	start := time.Now()
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("shutdown took %s with a 200ms timeout", d)
	}
	<-profile
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Fatal("still serving after Run returned")
	}
	if code, rep := readyz(t, s); code != http.StatusServiceUnavailable || rep.Status != "shutting down" {
		t.Fatalf("/readyz after shutdown: %d %+v", code, rep)
	}
}

func TestListenAddressInUse(t *testing.T) {
	a := New("127.0.0.1:0")
	serve(t, a)
	err := New(a.Addr().String()).Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), a.Addr().String()) {
		t.Fatalf("Run on a busy address: %v", err)
	}
}

// serve runs s in the background; the returned stop ends Run and returns its error (idempotent).
func serve(t *testing.T, s *Server) (stop func() error) {
	t.Helper()
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	stop = sync.OnceValue(func() error { cancel(); return <-done })
	t.Cleanup(func() { _ = stop() })
	return stop
}

func TestProbe(t *testing.T) {
	s := New("0.0.0.0:0")
	stop := serve(t, s)
	_, port, err := net.SplitHostPort(s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	for _, addr := range []string{"0.0.0.0:" + port, ":" + port, "127.0.0.1:" + port} {
		if err := Probe(context.Background(), addr); err != nil {
			t.Fatalf("Probe(%q): %v", addr, err)
		}
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if err := Probe(context.Background(), "127.0.0.1:"+port); err == nil {
		t.Fatal("Probe succeeded with nothing listening")
	}
}
