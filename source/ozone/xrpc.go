package ozone

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/atkafka/atkafka/backoff"
)

// maxResponseBytes bounds what one response may hold: a page of 100 events is far below it, and a broken proxy
// answering with something huge must not exhaust memory.
const maxResponseBytes = 64 << 20

// xrpcError is a non-2xx XRPC answer.
type xrpcError struct {
	Status     int
	Name       string // the XRPC error name, such as "ExpiredToken"; empty when the body carried none
	Message    string
	RetryAfter time.Duration // from a Retry-After header; zero when absent
}

func (e *xrpcError) Error() string {
	s := "HTTP " + strconv.Itoa(e.Status)
	if e.Name != "" {
		s += " " + e.Name
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// transient reports whether retrying the same request later may succeed. Network errors and timeouts (not
// xrpcErrors) are transient too; see isTransient.
func (e *xrpcError) transient() bool {
	return backoff.TransientStatus(e.Status)
}

// isTransient reports whether err is worth retrying unchanged: everything except a definite rejection.
func isTransient(err error) bool {
	var xe *xrpcError
	if errors.As(err, &xe) {
		return xe.transient()
	}
	return true
}

// errorName returns the XRPC error name of err, or "".
func errorName(err error) string {
	var xe *xrpcError
	if errors.As(err, &xe) {
		return xe.Name
	}
	return ""
}

// retryAfter returns the delay the server asked for, or zero.
func retryAfter(err error) time.Duration {
	var xe *xrpcError
	if errors.As(err, &xe) {
		return xe.RetryAfter
	}
	return 0
}

// xrpcClient calls XRPC methods on one host (the moderator's PDS).
type xrpcClient struct {
	http    *http.Client
	host    string        // base URL without a trailing slash
	timeout time.Duration // per request, so that an http.Client without a timeout cannot hang the source
}

// call performs one XRPC request. body, if not nil, is sent as JSON (a procedure); headers are added as given.
func (c *xrpcClient) call(ctx context.Context, method, nsid string, query url.Values, body any, headers map[string]string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	req, err := c.newRequest(ctx, method, nsid, query, body)
	if err != nil {
		return nil, err
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", nsid, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return nil, fmt.Errorf("%s: read response: %w", nsid, err)
	}
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("%s: %w", nsid, newXRPCError(resp, data))
	}
	return data, nil
}

func (c *xrpcClient) newRequest(ctx context.Context, method, nsid string, query url.Values, body any) (*http.Request, error) {
	u := c.host + "/xrpc/" + nsid
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", nsid, err)
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, r)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", nsid, err)
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return req, nil
}

func newXRPCError(resp *http.Response, body []byte) *xrpcError {
	e := &xrpcError{Status: resp.StatusCode, RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())}
	var eb struct {
		Error   string `json:"error"`
		Message string `json:"message"`
	}
	if json.Unmarshal(body, &eb) == nil {
		e.Name, e.Message = eb.Error, eb.Message
	}
	return e
}

// parseRetryAfter reads either form of Retry-After: delay seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil && s > 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}
