package server

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// probeTimeout keeps a container health check well inside Docker's default 30s timeout.
const probeTimeout = 3 * time.Second

// Probe asks the /healthz of an atkafka listening on listenAddr (the --metrics-listen-address value) and returns
// nil on a 200. It backs `atkafka healthcheck`, the container HEALTHCHECK: distroless images have no curl or wget,
// and reading the same flag as the server keeps the probe right when the port is changed. A wildcard or empty
// host (0.0.0.0, [::], ":6009") is probed on loopback, where the listener also answers.
func Probe(ctx context.Context, listenAddr string) error {
	if listenAddr == "" {
		listenAddr = DefaultAddr
	}
	host, port, err := net.SplitHostPort(listenAddr)
	if err != nil {
		return fmt.Errorf("healthcheck: metrics listen address %q: %w", listenAddr, err)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	url := "http://" + net.JoinHostPort(host, port) + "/healthz"

	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck: GET %s: %s", url, resp.Status)
	}
	return nil
}
