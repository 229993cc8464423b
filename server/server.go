// Package server is atkafka's operating HTTP listener (--metrics-listen-address): Prometheus metrics, pprof,
// liveness and readiness. It is deliberately separate from the data path: it must keep answering while a source
// reconnects or Kafka is down, since that is exactly when an operator looks at it.
//
// Endpoints:
//
//   - /metrics: every metric of the gatherer given WithMetrics (atkafka's: metrics.Registry), in the Prometheus
//     text format.
//   - /healthz: 200 {"status":"ok"} while the process serves HTTP. It checks nothing else on purpose: a liveness
//     probe that failed on a Kafka outage would make an orchestrator restart atkafka in a loop, which cannot fix
//     Kafka and throws away in-flight work.
//   - /readyz: 200 when every readiness check passes, 503 otherwise (and from the moment shutdown begins), with a
//     JSON body listing each check; see ReadinessReport.
//   - /debug/pprof/: the runtime profiles of net/http/pprof.
//
// Shutdown: when Run's context ends, /readyz turns 503, the listener stops accepting, and requests in progress get
// the shutdown timeout (default 5s, WithShutdownTimeout) to finish before their connections are closed, so the
// listener never holds up process exit for longer than that.
package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// DefaultAddr is the listen address used when New gets an empty one, as upstream atkafka listens.
const DefaultAddr = "0.0.0.0:6009"

const (
	defaultShutdownTimeout = 5 * time.Second
	// defaultCheckTimeout keeps /readyz answering within a probe's usual timeout even when a check hangs.
	defaultCheckTimeout = 2 * time.Second
	// readHeaderTimeout bounds slow clients. There is no write timeout: a CPU profile streams for 30s by design.
	readHeaderTimeout = 10 * time.Second
	idleTimeout       = 2 * time.Minute
)

// Server serves the operating endpoints. Create it with New, add checks with WithReadiness or AddReadiness, and
// serve with Run.
type Server struct {
	addr            string
	logger          *slog.Logger
	shutdownTimeout time.Duration
	checkTimeout    time.Duration

	mu       sync.Mutex
	checks   []namedCheck
	listener net.Listener

	shuttingDown atomic.Bool
	handler      http.Handler
	gatherer     prometheus.Gatherer
}

type namedCheck struct {
	name  string
	check func() error
}

// Option configures a Server.
type Option func(*Server)

// WithReadiness adds a readiness check shown in /readyz under name. check returns nil when ready, or an error
// whose message becomes the check's detail; it should be cheap, since every probe runs it.
func WithReadiness(name string, check func() error) Option {
	return func(s *Server) { s.AddReadiness(name, check) }
}

// WithShutdownTimeout bounds how long Run waits for requests in progress once its context ends. Default 5s.
func WithShutdownTimeout(d time.Duration) Option {
	return func(s *Server) { s.shutdownTimeout = d }
}

// WithCheckTimeout bounds each readiness check; one still running then is reported as failed. Default 2s.
func WithCheckTimeout(d time.Duration) Option {
	return func(s *Server) { s.checkTimeout = d }
}

// WithMetrics sets what /metrics serves. Default: an empty registry, for a listener that only answers probes.
func WithMetrics(g prometheus.Gatherer) Option {
	return func(s *Server) { s.gatherer = g }
}

// WithLogger sets where the listener's state changes are logged. Default slog.Default().
func WithLogger(l *slog.Logger) Option {
	return func(s *Server) { s.logger = l }
}

// New returns a Server for addr (host:port; empty means DefaultAddr). It does not listen yet: see Listen and Run.
func New(addr string, opts ...Option) *Server {
	if addr == "" {
		addr = DefaultAddr
	}
	s := &Server{
		addr:            addr,
		logger:          slog.Default(),
		shutdownTimeout: defaultShutdownTimeout,
		checkTimeout:    defaultCheckTimeout,
		gatherer:        prometheus.NewRegistry(),
	}
	for _, o := range opts {
		o(s)
	}
	s.handler = s.routes()
	return s
}

// AddReadiness adds a readiness check after New, for parts (a source, the producer) created after the listener
// was already serving /healthz and /metrics during start-up. Checks are shown in the order they were added.
func (s *Server) AddReadiness(name string, check func() error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checks = append(s.checks, namedCheck{name: name, check: check})
}

// Handler returns the server's routes, for tests and for embedding them in another listener.
func (s *Server) Handler() http.Handler { return s.handler }

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	// The classic text format keeps the contract names as declared (atkafka_handled_events, not ..._total), which
	// existing dashboards query; OpenMetrics negotiation would append _total to counters.
	mux.Handle("/metrics", promhttp.HandlerFor(s.gatherer, promhttp.HandlerOpts{
		ErrorLog:      slog.NewLogLogger(s.logger.Handler(), slog.LevelWarn),
		ErrorHandling: promhttp.ContinueOnError,
	}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		rep := s.Readiness()
		code := http.StatusOK
		if !rep.Ready {
			code = http.StatusServiceUnavailable
		}
		writeJSON(w, code, rep)
	})
	// Registered explicitly rather than through net/http/pprof's init, which would also expose them on
	// http.DefaultServeMux for whatever else might serve it.
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	// Probes and load balancers must see the state now, not a cached one.
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// ReadinessReport is the /readyz body, for example
//
//	{"status":"not ready","checks":[{"name":"kafka","ok":true},{"name":"relay connected","ok":false,"detail":"dial tcp: connection refused"}]}
//
// Status is "ready", "not ready" or "shutting down".
type ReadinessReport struct {
	Ready  bool          `json:"-"`
	Status string        `json:"status"`
	Checks []CheckResult `json:"checks"`
}

// CheckResult is one readiness check's outcome; Detail is the check's error message when it failed.
type CheckResult struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail,omitempty"`
}

// Readiness runs every check concurrently and reports the outcome. A check that panics or outlives the check
// timeout counts as failed; it is never allowed to take /readyz down with it.
func (s *Server) Readiness() ReadinessReport {
	s.mu.Lock()
	checks := append([]namedCheck(nil), s.checks...)
	s.mu.Unlock()

	results := make([]CheckResult, len(checks))
	var wg sync.WaitGroup
	for i, c := range checks {
		wg.Go(func() { results[i] = s.run(c) })
	}
	wg.Wait()

	rep := ReadinessReport{Ready: true, Status: "ready", Checks: results}
	for _, r := range results {
		if !r.OK {
			rep.Ready, rep.Status = false, "not ready"
		}
	}
	if s.shuttingDown.Load() {
		// Tell load balancers to drain while in-flight requests finish.
		rep.Ready, rep.Status = false, "shutting down"
	}
	return rep
}

func (s *Server) run(c namedCheck) CheckResult {
	done := make(chan error, 1) // buffered: a check finishing after the timeout must not leak a blocked goroutine
	go func() {
		defer func() {
			if p := recover(); p != nil {
				done <- fmt.Errorf("check panicked: %v", p)
			}
		}()
		done <- c.check()
	}()
	timer := time.NewTimer(s.checkTimeout)
	defer timer.Stop()
	select {
	case err := <-done:
		if err != nil {
			return CheckResult{Name: c.name, Detail: err.Error()}
		}
		return CheckResult{Name: c.name, OK: true}
	case <-timer.C:
		return CheckResult{Name: c.name, Detail: fmt.Sprintf("check did not answer within %s", s.checkTimeout)}
	}
}

// Listen binds the address without serving yet, so that a port already in use fails start-up with a clear error
// before any source starts. Run calls it when it has not been called.
func (s *Server) Listen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.listener != nil {
		return nil
	}
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		return fmt.Errorf("metrics listener on %s: %w", s.addr, err)
	}
	s.listener = ln
	return nil
}

// Addr is the bound address once Listen or Run has bound it (useful with port 0), else nil.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.listener == nil {
		return nil
	}
	return s.listener.Addr()
}

// Run serves until ctx ends, then shuts down within the shutdown timeout. It returns nil after a shutdown
// requested through ctx, and an error when the address cannot be bound or serving fails.
func (s *Server) Run(ctx context.Context) error {
	if err := s.Listen(); err != nil {
		return err
	}
	s.mu.Lock()
	ln := s.listener
	s.mu.Unlock()

	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		ErrorLog:          slog.NewLogLogger(s.logger.Handler(), slog.LevelDebug),
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	s.logger.Info("metrics and health listener started", "addr", ln.Addr().String())

	select {
	case err := <-served:
		return fmt.Errorf("metrics listener on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}

	s.shuttingDown.Store(true)
	// ctx is already done; the shutdown deadline needs a context of its own.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.shutdownTimeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	if errors.Is(err, context.DeadlineExceeded) {
		// Typically a CPU profile or trace still streaming: cut it rather than delay exit.
		s.logger.Warn("metrics listener: requests still running at shutdown timeout, closing them", "timeout", s.shutdownTimeout)
		err = srv.Close()
	}
	<-served // Serve returns http.ErrServerClosed once Shutdown or Close began
	if err != nil {
		return fmt.Errorf("metrics listener shutdown: %w", err)
	}
	s.logger.Info("metrics and health listener stopped")
	return nil
}
