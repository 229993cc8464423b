// Package relaytest serves recorded firehose frames as a local com.atproto.sync.subscribeRepos endpoint, for
// tests and benchmarks of relay consumers.
//
// A Server replays a capture the way a relay serves its backlog: ?cursor=N resumes after seq N, a cursor ahead
// of the stream gets a FutureCursor error frame and close code 1008, a cursor older than the stream gets an
// #info OutdatedCursor first. Options loop the capture with rewritten seqs (so the loops form one contiguous
// stream), pace it, cut connections, and inject raw messages.
package relaytest

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/atkafka/atkafka/testenv"
)

// CorpusDir is the real relay capture under the shared folder (testenv.SharedDir).
const CorpusDir = testenv.CorpusDir

// LoadFrames reads a capture file of repeated [u32 little-endian length][message bytes], zstd-compressed when
// its name ends in .zst.
func LoadFrames(path string) ([][]byte, error) { return testenv.ReadFrames(path) }

// CorpusFrames loads the shared relay capture, failing in CI and skipping elsewhere when it is missing.
func CorpusFrames(t testing.TB) [][]byte { return testenv.CorpusFrames(t) }

// Option configures a Server.
type Option func(*Server)

// Loops serves the capture n times; loop k's seqs are shifted by k times the capture's seq span. Default 1.
func Loops(n int) Option { return func(s *Server) { s.loops = max(n, 1) } }

// Pace sends at most perSecond frames per second on each connection. Default: as fast as the client reads.
func Pace(perSecond float64) Option { return func(s *Server) { s.rate = perSecond } }

// DisconnectAfter cuts every connection, without a close frame (like a network failure), after it sent n
// frames.
func DisconnectAfter(n int) Option { return func(s *Server) { s.disconnectAfter = n } }

// DistinctDIDs rewrites the account DID of every did:plc frame (its repo or did field) to one that no other loop
// uses (LoopDID), so that every loop brings accounts never seen before, as a cold start on the network does.
// Only the envelope is rewritten: the signed commit inside still names the original DID.
func DistinctDIDs() Option { return func(s *Server) { s.distinct = true } }

// LoopDID is the DID that DistinctDIDs gives did in loop k: its first six identifier characters encode k, the
// other eighteen stay, so OriginalKey(LoopDID(did, k)) == OriginalKey(did).
func LoopDID(did string, k int) string {
	b := []byte(did)
	const alphabet = "abcdefghijklmnopqrstuvwxyz234567"
	for i := 13; i >= 8; i-- {
		b[i] = alphabet[k%32]
		k /= 32
	}
	return string(b)
}

// OriginalKey is what a did:plc keeps through LoopDID: the part that identifies the captured account.
func OriginalKey(did string) string {
	if len(did) != 32 {
		return did
	}
	return did[14:]
}

// Inject sends msg right before the frame at stream position at (counting over all loops from 0), whenever a
// connection passes that position.
func Inject(at int, msg []byte) Option {
	return func(s *Server) { s.inject[at] = append(s.inject[at], msg) }
}

// Server serves frames over websocket on 127.0.0.1.
type Server struct {
	frames          []frameInfo
	first, span     int64 // seq of the first frame with one, and last-first+1
	loops           int
	rate            float64
	disconnectAfter int
	inject          map[int][][]byte
	distinct        bool

	http    *httptest.Server
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	conns   atomic.Int64
	sent    atomic.Int64
	mu      sync.Mutex
	cursors []string
}

type frameInfo struct {
	msg        []byte
	seq        int64 // 0 when the frame has none
	start, end int   // where the seq value sits in msg
	// after is the seq of the nearest earlier frame with one: where a frame without seq sits in the stream.
	after int64
}

// NewServer starts serving frames. Close it when done.
func NewServer(frames [][]byte, opts ...Option) *Server {
	s := &Server{loops: 1, inject: map[int][][]byte{}}
	for _, o := range opts {
		o(s)
	}
	var last, prev int64
	for _, msg := range frames {
		fi := frameInfo{msg: msg, after: prev}
		if start, end, err := FieldSpan(msg, "seq"); err == nil {
			if seq, ok := Seq(msg); ok && seq > 0 {
				fi.seq, fi.start, fi.end, prev = seq, start, end, seq
				if s.first == 0 {
					s.first = seq
				}
				last = seq
			}
		}
		s.frames = append(s.frames, fi)
	}
	s.span = last - s.first + 1
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.http = httptest.NewServer(http.HandlerFunc(s.serve))
	return s
}

// URL is the server's base address (ws://127.0.0.1:port), to be used as a relay host.
func (s *Server) URL() string { return "ws" + s.http.URL[len("http"):] }

// Close stops the server and ends every connection.
func (s *Server) Close() {
	s.cancel()
	s.http.CloseClientConnections()
	s.http.Close()
	s.wg.Wait()
}

// Len is the number of frames in the stream, over all loops.
func (s *Server) Len() int { return len(s.frames) * s.loops }

// FirstSeq and LastSeq are the seqs at both ends of the stream, over all loops.
func (s *Server) FirstSeq() int64 { return s.first }

// LastSeq is the seq of the last frame of the last loop.
func (s *Server) LastSeq() int64 { return s.first + int64(s.loops)*s.span - 1 }

// Connections is how many websocket connections were accepted.
func (s *Server) Connections() int { return int(s.conns.Load()) }

// Sent is how many frames (injected ones included) were written, over all connections.
func (s *Server) Sent() int64 { return s.sent.Load() }

// Cursors returns the cursor query parameter of every connection so far, in order ("" when absent).
func (s *Server) Cursors() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.cursors)
}

// seqAt is the seq a stream position is served with, and after is where a frame without seq sits.
func (s *Server) seqAt(i int) (seq, after int64) {
	fi := &s.frames[i%len(s.frames)]
	shift := int64(i/len(s.frames)) * s.span
	if fi.seq == 0 {
		if fi.after == 0 { // before the capture's first seq: just after the previous loop
			return 0, s.first - 1 + shift
		}
		return 0, fi.after + shift
	}
	return fi.seq + shift, fi.seq + shift
}

// start is the first stream position served after cursor. Positions are ordered by seq, a frame without one
// sitting just after the nearest earlier frame with one; so the predicate below is monotonic.
func (s *Server) start(cursor int64) int {
	return sort.Search(s.Len(), func(i int) bool {
		seq, after := s.seqAt(i)
		if seq == 0 {
			return after >= cursor
		}
		return seq > cursor
	})
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	conn, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	s.wg.Add(1)
	defer s.wg.Done()
	defer conn.CloseNow()
	s.conns.Add(1)
	param := r.URL.Query().Get("cursor")
	s.mu.Lock()
	s.cursors = append(s.cursors, param)
	s.mu.Unlock()

	// CloseRead answers the client's pings and notices when it leaves.
	ctx := conn.CloseRead(s.ctx)
	pos := 0
	if param != "" {
		cursor, err := strconv.ParseInt(param, 10, 64)
		if err != nil {
			conn.Close(websocket.StatusPolicyViolation, "bad cursor")
			return
		}
		if cursor > s.LastSeq() {
			_ = conn.Write(ctx, websocket.MessageBinary, ErrorFrame("FutureCursor", "cursor in the future"))
			conn.Close(websocket.StatusPolicyViolation, "FutureCursor")
			return
		}
		if cursor > 0 && cursor < s.first-1 {
			_ = conn.Write(ctx, websocket.MessageBinary, InfoFrame("OutdatedCursor", "requested cursor exceeded limit. possibly missing events"))
		}
		pos = s.start(cursor)
	}
	if err := s.stream(ctx, conn, pos); err != nil {
		return
	}
	<-ctx.Done() // like a live relay with nothing new: keep the connection open
}

// stream writes the stream from position pos to its end.
func (s *Server) stream(ctx context.Context, conn *websocket.Conn, pos int) error {
	var buf []byte
	began, n := time.Now(), 0
	for i := pos; i < s.Len(); i++ {
		for _, msg := range s.inject[i] {
			if err := s.write(ctx, conn, msg, &n); err != nil {
				return err
			}
		}
		if s.rate > 0 {
			due := began.Add(time.Duration(float64(n) / s.rate * float64(time.Second)))
			if d := time.Until(due); d > 0 {
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(d):
				}
			}
		}
		buf = s.message(buf[:0], i)
		if err := s.write(ctx, conn, buf, &n); err != nil {
			return err
		}
	}
	return nil
}

func (s *Server) write(ctx context.Context, conn *websocket.Conn, msg []byte, n *int) error {
	if s.disconnectAfter > 0 && *n >= s.disconnectAfter {
		conn.CloseNow()
		return errors.New("disconnected on purpose")
	}
	if err := conn.Write(ctx, websocket.MessageBinary, msg); err != nil {
		return err
	}
	*n++
	s.sent.Add(1)
	return nil
}

// message renders stream position i into buf, with its seq rewritten for loops after the first.
func (s *Server) message(buf []byte, i int) []byte {
	fi := &s.frames[i%len(s.frames)]
	seq, _ := s.seqAt(i)
	start := len(buf)
	if fi.seq == 0 || seq == fi.seq {
		buf = append(buf, fi.msg...)
	} else {
		buf = splice(buf, fi.msg, fi.start, fi.end, seq)
	}
	if s.distinct {
		rewriteDID(buf[start:], i/len(s.frames))
	}
	return buf
}

// rewriteDID replaces, in place, the did:plc of msg's repo or did field by its LoopDID for loop k.
func rewriteDID(msg []byte, k int) {
	for _, key := range []string{"repo", "did"} {
		start, end, err := FieldSpan(msg, key)
		// A 32-byte did:plc is a text string of 32 bytes: its CBOR head is 0x78 0x20.
		if err != nil || end-start != 34 || msg[start] != 0x78 || !bytes.HasPrefix(msg[start+2:end], []byte("did:plc:")) {
			continue
		}
		copy(msg[start+2:end], LoopDID(string(msg[start+2:end]), k))
		return
	}
}

// Messages returns the whole stream as the server sends it from the start: handy for computing what a
// consumer must have produced.
func (s *Server) Messages() [][]byte {
	out := make([][]byte, 0, s.Len())
	for i := range s.Len() {
		for _, msg := range s.inject[i] {
			out = append(out, bytes.Clone(msg))
		}
		out = append(out, s.message(nil, i))
	}
	return out
}
