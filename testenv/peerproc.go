package testenv

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// peerProc is a peer (node, postgres, tap) run as a child of the test process. Its output is kept, bounded, for
// failure messages, and on Linux it is signalled when the test process dies, so a crashed `go test` leaves no
// stray servers behind.
type peerProc struct {
	name   string
	cmd    *exec.Cmd
	out    *tailBuffer
	exited chan struct{} // closed once Wait returned
	err    error         // Wait's result, readable after exited is closed
}

// startPeer starts cmd, capturing whatever of its stdout and stderr the caller did not redirect itself.
func startPeer(name string, cmd *exec.Cmd) (*peerProc, error) {
	p := &peerProc{name: name, cmd: cmd, out: &tailBuffer{max: 64 << 10}, exited: make(chan struct{})}
	if cmd.Stdout == nil {
		cmd.Stdout = p.out
	}
	if cmd.Stderr == nil {
		cmd.Stderr = p.out
	}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	dieWithParent(cmd.SysProcAttr)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// running reports whether the process has not exited yet.
func (p *peerProc) running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// stop asks the process to exit with sig and kills it if it has not after grace. Stopping an exited process is
// a no-op, so cleanups may call it unconditionally.
func (p *peerProc) stop(sig os.Signal, grace time.Duration) {
	if !p.running() {
		return
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.exited:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// describe says how the process ended (if it did) followed by the tail of its output, for failure messages.
func (p *peerProc) describe() string {
	state := "still running"
	if !p.running() {
		state = fmt.Sprintf("exited: %v", p.err)
	}
	return fmt.Sprintf("%s (%s); last output:\n%s", p.name, state, p.out.String())
}

// tailBuffer keeps the last max bytes written to it; peers can be chatty and tests only need the end.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - b.max; over > 0 {
		b.buf = append(b.buf[:0], b.buf[over:]...)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}

// contains reports whether the kept output holds s (used to spot readiness log lines).
func (b *tailBuffer) contains(s string) bool {
	return strings.Contains(b.String(), s)
}

// freePort asks the kernel for a free loopback TCP port. Another process may take it before the peer binds it;
// peers that fail to bind are retried by their starters.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// waitFor polls cond every 50 ms until it returns true, the process exits, or timeout passes.
func waitFor(p *peerProc, timeout time.Duration, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return nil
		}
		if !p.running() {
			return errors.New("exited before it was ready")
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %s", timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
