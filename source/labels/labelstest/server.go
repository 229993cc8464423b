// Package labelstest serves a labeler's com.atproto.label.subscribeLabels from frames held in memory, signed
// with a key of its own: the second labeler of tests that need two, and the source of malformed frames no real
// labeler sends.
package labelstest

import (
	"bytes"
	"net"
	"net/http"
	"strconv"
	"sync"
	"testing"

	"github.com/bluesky-social/indigo/api/atproto"
	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/labeling"
	"github.com/coder/websocket"

	"github.com/atkafka/atkafka/source/relay/relaytest"
)

// Server is a labeler's stream. Frames get seqs 1, 2, ... in the order they are added; a connection with
// ?cursor=N receives every frame after N and then the new ones, one without a cursor only the new ones, and one
// with a cursor past the newest frame a FutureCursor error frame, as the reference implementation does.
type Server struct {
	// DID is the src of the labels Emit signs.
	DID string
	Key atcrypto.PrivateKey

	t    testing.TB
	addr string

	mu     sync.Mutex
	frames [][]byte // frames[i] has seq i+1
	added  chan struct{}
	srv    *http.Server
	conns  map[*websocket.Conn]bool
}

// NewServer starts a server for labeler did on a port the kernel picks; it stops when the test ends.
func NewServer(t testing.TB, did string) *Server {
	t.Helper()
	key, err := atcrypto.GeneratePrivateKeyK256()
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{DID: did, Key: key, t: t, added: make(chan struct{}), conns: map[*websocket.Conn]bool{}}
	s.Start()
	t.Cleanup(s.Stop)
	return s
}

// URL is the server's ws:// address, what --labeler-host takes.
func (s *Server) URL() string { return "ws://" + s.addr }

// Start listens again after Stop, on the same port.
func (s *Server) Start() {
	s.t.Helper()
	addr := s.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		s.t.Fatalf("labelstest: %v", err)
	}
	s.mu.Lock()
	s.addr = ln.Addr().String()
	s.srv = &http.Server{Handler: http.HandlerFunc(s.serve)}
	srv := s.srv
	s.mu.Unlock()
	go func() { _ = srv.Serve(ln) }()
}

// Stop closes the listener and every connection, as a labeler going down does.
func (s *Server) Stop() {
	s.mu.Lock()
	srv := s.srv
	s.srv = nil
	conns := s.conns
	s.conns = map[*websocket.Conn]bool{}
	s.mu.Unlock()
	if srv != nil {
		_ = srv.Close()
	}
	for c := range conns {
		_ = c.CloseNow()
	}
}

// Emit signs labels (src, ver and sig set here) and adds them as one #labels frame; it returns the frame's seq.
func (s *Server) Emit(labels ...labeling.Label) int64 {
	s.t.Helper()
	body := &atproto.LabelSubscribeLabels_Labels{}
	for i := range labels {
		l := labels[i]
		l.SourceDID, l.Version = s.DID, labeling.ATPROTO_LABEL_VERSION
		if err := l.Sign(s.Key); err != nil {
			s.t.Fatal(err)
		}
		lex := l.ToLexicon()
		body.Labels = append(body.Labels, &lex)
	}
	s.mu.Lock()
	body.Seq = int64(len(s.frames) + 1)
	s.mu.Unlock()
	return s.Add(Frame(s.t, body))
}

// Add adds a frame as it is (malformed ones included) under the next seq, which it returns. A #labels frame's
// own seq should be that one.
func (s *Server) Add(msg []byte) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.frames = append(s.frames, msg)
	close(s.added)
	s.added = make(chan struct{})
	return int64(len(s.frames))
}

// Seq is the newest frame's seq.
func (s *Server) Seq() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return int64(len(s.frames))
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	conn, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer conn.CloseNow()
	s.mu.Lock()
	if s.srv == nil {
		s.mu.Unlock()
		return
	}
	s.conns[conn] = true
	next := len(s.frames) // index of the next frame to send
	s.mu.Unlock()
	ctx := conn.CloseRead(r.Context())
	if c := r.URL.Query().Get("cursor"); c != "" {
		n, err := strconv.Atoi(c)
		if err != nil || n > next {
			_ = conn.Write(ctx, websocket.MessageBinary, relaytest.ErrorFrame("FutureCursor", "Cursor in the future."))
			_ = conn.Close(websocket.StatusPolicyViolation, "FutureCursor")
			return
		}
		next = n
	}
	for {
		s.mu.Lock()
		pending, added := s.frames[next:], s.added
		s.mu.Unlock()
		for _, f := range pending {
			if err := conn.Write(ctx, websocket.MessageBinary, f); err != nil {
				return
			}
			next++
		}
		select {
		case <-added:
		case <-ctx.Done():
			return
		}
	}
}

// Frame encodes body as a #labels frame.
func Frame(t testing.TB, body *atproto.LabelSubscribeLabels_Labels) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := body.MarshalCBOR(&buf); err != nil {
		t.Fatal(err)
	}
	return relaytest.Encode(relaytest.Encode(nil, relaytest.Map{{Key: "t", Value: "#labels"}, {Key: "op", Value: 1}}), relaytest.Raw(buf.Bytes()))
}
