package relay

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"time"
)

// readBufferSize is how much one read from the relay's connection may fetch. Relays send frames of a few KB
// back to back; reading them straight from the socket costs a syscall or more per frame, which weighs more
// than decoding them.
const readBufferSize = 64 << 10

// httpClient dials relays with large read buffers. HTTP/2 stays off: websockets need HTTP/1.1.
var httpClient = &http.Client{Transport: &http.Transport{
	Proxy:               http.ProxyFromEnvironment,
	DialContext:         dialBuffered,
	TLSHandshakeTimeout: dialTimeout,
}}

func dialBuffered(ctx context.Context, network, addr string) (net.Conn, error) {
	d := net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}
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
