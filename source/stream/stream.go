// Package stream holds what every client of an atproto event stream (subscribeRepos, subscribeLabels) needs
// around its websocket, so the relay and labels sources share one implementation: the stream URL, a dialer with
// large read buffers, messages read under a size limit without buffering what is over it, keepalive pings and
// why a connection ended.
package stream

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/coder/websocket"
)

// Connection timing. Stream servers ping rarely or never, so the client pings: without it a half-open TCP
// connection (a host that vanished) would look like a quiet stream forever.
const (
	DialTimeout  = 30 * time.Second
	PingInterval = 30 * time.Second
	PingTimeout  = 30 * time.Second
)

// Reconnect backoff of stream clients: capped exponential (backoff.New(ReconnectBase, ReconnectMax)).
const (
	ReconnectBase = time.Second
	ReconnectMax  = time.Minute
)

// readBufferSize is how much one read from the connection may fetch. Relays send frames of a few KB back to
// back; reading them straight from the socket costs a syscall or more per frame, which weighs more than decoding
// them.
const readBufferSize = 64 << 10

// ErrPingTimeout is the cause of a session that Keepalive ended.
var ErrPingTimeout = errors.New("the stream's server did not answer a ping")

// HTTPClient dials stream servers with large read buffers. HTTP/2 stays off: websockets need HTTP/1.1.
var HTTPClient = &http.Client{Transport: &http.Transport{
	Proxy:               http.ProxyFromEnvironment,
	DialContext:         dialBuffered,
	TLSHandshakeTimeout: DialTimeout,
}}

func dialBuffered(ctx context.Context, network, addr string) (net.Conn, error) {
	d := net.Dialer{Timeout: DialTimeout, KeepAlive: 30 * time.Second}
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return &bufferedConn{Conn: c, r: bufio.NewReaderSize(c, readBufferSize)}, nil
}

// bufferedConn is a net.Conn whose reads go through a buffer.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// Dial opens a websocket to u with HTTPClient, within DialTimeout. The read limit is off: callers read with
// ReadLimited, so that an oversized message can be dead-lettered instead of ending the connection (which would
// only fetch the same message again on reconnect).
func Dial(ctx context.Context, u string) (*websocket.Conn, error) {
	dctx, cancel := context.WithTimeout(ctx, DialTimeout)
	defer cancel()
	conn, _, err := websocket.Dial(dctx, u, &websocket.DialOptions{HTTPClient: HTTPClient, HTTPHeader: http.Header{"User-Agent": {"atkafka"}}})
	if err != nil {
		return nil, err
	}
	conn.SetReadLimit(-1)
	return conn, nil
}

// URL turns a host setting into the websocket URL of the XRPC endpoint path (without a cursor). host may be ws,
// wss, http or https, with or without a scheme (wss is assumed); path is added unless already present. what
// names the setting in errors ("relay host").
func URL(what, host, path string) (*url.URL, error) {
	if !strings.Contains(host, "://") {
		host = "wss://" + host
	}
	u, err := url.Parse(host)
	if err != nil {
		return nil, fmt.Errorf("%s %q: %w", what, host, err)
	}
	switch u.Scheme {
	case "ws", "wss":
	case "http":
		u.Scheme = "ws"
	case "https":
		u.Scheme = "wss"
	default:
		return nil, fmt.Errorf("%s %q: scheme must be ws, wss, http or https", what, host)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("%s %q has no host name", what, host)
	}
	if !strings.HasSuffix(u.Path, path) {
		u.Path = strings.TrimRight(u.Path, "/") + path
	}
	u.RawPath, u.Fragment = "", ""
	return u, nil
}

// ReadLimited appends what r holds to buf, up to limit bytes; the rest is read and discarded, and its size
// returned, so that an oversized message costs no memory.
func ReadLimited(r io.Reader, buf []byte, limit int) ([]byte, int, error) {
	for len(buf) < limit {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)] // let append pick the growth
		}
		n, err := r.Read(buf[len(buf):min(cap(buf), limit)])
		buf = buf[:len(buf)+n]
		if errors.Is(err, io.EOF) {
			return buf, 0, nil
		}
		if err != nil {
			return buf, 0, err
		}
	}
	dropped, err := io.Copy(io.Discard, r)
	return buf, int(dropped), err
}

// Activity is what Keepalive knows of the reader: a reader stalled by backpressure does not read pongs, and
// frames arriving prove the connection alive, so no verdict is made in either case.
type Activity interface {
	// Stalled reports whether the reader waits for room downstream instead of reading.
	Stalled() bool
	// Reads counts the messages read so far.
	Reads() int64
}

// Keepalive pings conn every PingInterval and ends the session (stop with ErrPingTimeout) when a ping goes
// unanswered while the reader was neither stalled nor receiving. It returns when ctx ends.
func Keepalive(ctx context.Context, conn *websocket.Conn, a Activity, stop context.CancelCauseFunc) {
	t := time.NewTicker(PingInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if a.Stalled() {
			continue
		}
		before := a.Reads()
		pctx, cancel := context.WithTimeout(ctx, PingTimeout)
		err := conn.Ping(pctx)
		cancel()
		if err != nil && ctx.Err() == nil && !a.Stalled() && a.Reads() == before {
			stop(ErrPingTimeout)
			return
		}
	}
}

// CloseReason names why a read failed, as a bounded metric label; ctx is the session's context.
func CloseReason(ctx context.Context, err error) string {
	if errors.Is(context.Cause(ctx), ErrPingTimeout) {
		return "ping_timeout"
	}
	if websocket.CloseStatus(err) != -1 {
		return "closed" // the server closed the connection properly: a restart or a deploy
	}
	return "network"
}

// Drop is a connection that ended for a reason worth reconnecting over. Reason is a bounded metric label.
type Drop struct {
	Reason string
	Err    error
}

func (d *Drop) Error() string { return d.Reason + ": " + d.Err.Error() }
func (d *Drop) Unwrap() error { return d.Err }

// Live is the start cursor that starts at the stream's tip, ignoring any saved cursor.
const Live = "live"

// NoCursor is a reader's position before it read anything when it started at the tip. (0 is a real cursor: the
// oldest events the server keeps.)
const NoCursor = -1

// ParseStartCursor interprets a start cursor setting: "" resumes from the saved cursor (fromStore), Live starts at
// the tip (NoCursor), and a decimal seq N starts right after N.
func ParseStartCursor(s string) (seq int64, fromStore bool, err error) {
	switch s {
	case "":
		return NoCursor, true, nil
	case Live:
		return NoCursor, false, nil
	}
	seq, err = strconv.ParseInt(s, 10, 64)
	if err != nil || seq < 0 {
		return NoCursor, false, fmt.Errorf("start cursor %q is neither %q nor a seq", s, Live)
	}
	return seq, false, nil
}

// DescribeCursor is seq for logs: Live for NoCursor.
func DescribeCursor(seq int64) string {
	if seq == NoCursor {
		return Live
	}
	return strconv.FormatInt(seq, 10)
}
