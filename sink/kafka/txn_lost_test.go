package kafka

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/atkafka/atkafka/sink"
	"github.com/atkafka/atkafka/testenv"
)

// TestKafkaTxnCommitAnswerLost cuts the connection that carries the commit (EndTxn) against Apache Kafka, every
// time kgo retries it, until kgo gives up: once after the broker applied it, its answer lost, and once before the
// broker saw it. The producer must look its transaction up in the cursor topic and, in the first case, not
// produce the batch again (a duplicate), in the second, produce it again (or it is lost).
func TestKafkaTxnCommitAnswerLost(t *testing.T) {
	for _, applied := range []bool{true, false} {
		name := map[bool]string{true: "applied", false: "not applied"}[applied]
		t.Run(name, func(t *testing.T) {
			k := testenv.Kafka(t)
			topic := testenv.NewTopic(t)
			d := &endTxnCutter{afterAnswer: applied}
			var logs testenv.Buffer
			log := slog.New(slog.NewTextHandler(io.MultiWriter(testenv.LogWriter(t), &logs), nil))
			p := newTxn(t, k.Brokers, TxnConfig{TransactionalID: topic, CursorTopic: topic + ".cursors"},
				Config{Topic: topic, Logger: log, clientOpts: d.opts()})
			a := newAcks()
			send2(t, p, txnMessage(a, 0))
			if errs := a.wait(t, 20*time.Second); len(errs) > 0 {
				t.Fatal(errs)
			}

			d.armed.Store(true)
			b := newAcks()
			for i := 1; i <= 5; i++ {
				send2(t, p, txnMessage(b, i))
			}
			if errs := b.wait(t, 60*time.Second); len(errs) > 0 {
				t.Fatalf("Done errors: %v", errs)
			}
			if d.cut.Load() == 0 {
				t.Fatal("no commit was cut")
			}
			got := committedValues(t, k.Brokers, 6, topic)
			if strings.Join(got, ",") != "0,1,2,3,4,5" {
				t.Errorf("read_committed sees %q, want each of 0 to 5 once", got)
			}
			if cur, _, err := p.Cursor().Load(); err != nil || cur != "c5" {
				t.Errorf("Cursor().Load = %q, %v; want c5", cur, err)
			}
			found := strings.Contains(logs.String(), "Kafka reported a failed commit, but the transaction had committed")
			if found != applied {
				t.Errorf("logged that the commit had applied: %v, want %v:\n%s", found, applied, logs.String())
			}
		})
	}
}

// endTxnCutter is a client dialer that, while armed, cuts every connection carrying an EndTxn request: after the
// broker answered it (afterAnswer), or before forwarding it. It disarms when kgo, having given up, initialises
// the producer id again (which is how it settles an unconfirmed transaction).
type endTxnCutter struct {
	afterAnswer bool
	armed       atomic.Bool
	cut         atomic.Int32
}

func (d *endTxnCutter) opts() []kgo.Opt {
	return []kgo.Opt{
		kgo.Dialer(func(ctx context.Context, network, host string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, host)
			if err != nil {
				return nil, err
			}
			return &cutConn{Conn: c, d: d, corr: -1}, nil
		}),
		// kgo retries a commit whose connection broke; give up soon, as it would after a longer outage.
		kgo.RequestRetries(2),
		kgo.RetryBackoffFn(func(int) time.Duration { return 50 * time.Millisecond }),
	}
}

// cutConn reads whole responses, to drop the one answering the EndTxn it forwarded. kgo writes each request in
// one Write, and reads from one goroutine per connection.
type cutConn struct {
	net.Conn
	d *endTxnCutter

	mu   sync.Mutex
	corr int64 // correlation id of the EndTxn whose answer is dropped, -1 for none
	buf  []byte
}

func (c *cutConn) Write(b []byte) (int, error) {
	if len(b) < 12 {
		return c.Conn.Write(b)
	}
	switch int16(binary.BigEndian.Uint16(b[4:])) {
	case int16(kmsg.EndTxn):
		if !c.d.armed.Load() {
			break
		}
		if !c.d.afterAnswer {
			c.d.cut.Add(1)
			c.Conn.Close()
			return 0, net.ErrClosed
		}
		c.mu.Lock()
		c.corr = int64(binary.BigEndian.Uint32(b[8:]))
		c.mu.Unlock()
	case int16(kmsg.InitProducerID):
		if c.d.cut.Load() > 0 {
			c.d.armed.Store(false)
		}
	}
	return c.Conn.Write(b)
}

func (c *cutConn) Read(b []byte) (int, error) {
	if len(c.buf) == 0 {
		var size [4]byte
		if _, err := io.ReadFull(c.Conn, size[:]); err != nil {
			return 0, err
		}
		frame := make([]byte, 4+binary.BigEndian.Uint32(size[:]))
		copy(frame, size[:])
		if _, err := io.ReadFull(c.Conn, frame[4:]); err != nil {
			return 0, err
		}
		c.mu.Lock()
		drop := len(frame) >= 8 && int64(binary.BigEndian.Uint32(frame[4:])) == c.corr
		c.mu.Unlock()
		if drop {
			c.d.cut.Add(1)
			c.Conn.Close()
			return 0, io.EOF
		}
		c.buf = frame
	}
	n := copy(b, c.buf)
	c.buf = c.buf[n:]
	return n, nil
}

// TestTxnAbortBounded makes the abort of a failed transaction hang: after AbortTimeout the producer stops with an
// error that says so, every message gets it, and the failed abort is one warning.
func TestTxnAbortBounded(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.ControlKey(int16(kmsg.EndTxn), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		if !req.(*kmsg.EndTxnRequest).Commit {
			time.Sleep(time.Second)
		}
		return nil, nil, false
	})
	var logs testenv.Buffer
	log := slog.New(slog.NewTextHandler(io.MultiWriter(testenv.LogWriter(t), &logs), nil))
	p := newTxn(t, c.ListenAddrs()[0], TxnConfig{AbortTimeout: 300 * time.Millisecond}, Config{MaxBatchBytes: 1024, Logger: log})
	a := newAcks()
	// The second message's record is too large: the transaction fails and is aborted. It is sent first, so that
	// it waits for the first and both go in one transaction, however fast the producer takes the first.
	send2(t, p, txnMessage(a, 1, strings.Repeat("x", 4096)))
	send2(t, p, txnMessage(a, 0))
	errs := a.wait(t, 10*time.Second)
	for i := range 2 {
		if !errors.Is(errs[i], sink.ErrStopped) {
			t.Errorf("message %d: Done(%v), want sink.ErrStopped", i, errs[i])
		}
	}
	if err := p.Close(context.Background()); !errors.Is(err, sink.ErrStopped) || !strings.Contains(err.Error(), "could not abort") {
		t.Errorf("Close = %v, want the abort failure", err)
	}
	if n := strings.Count(logs.String(), "level=WARN msg=\"aborting the Kafka transaction failed"); n != 1 {
		t.Errorf("%d warnings for the failed abort, want 1:\n%s", n, logs.String())
	}
}

// TestTxnInFlightPerTopic counts held records in the gauges of their own topics, as Producer does, until Done.
func TestTxnInFlightPerTopic(t *testing.T) {
	// The commit is answered late, so the records are still held when the test looks.
	addr := lateCommits(t)
	topic := "events-" + t.Name()
	obs := &counter{}
	p := newTxn(t, addr, TxnConfig{}, Config{Topic: topic, ExtraTopics: []string{topic + ".dead"}, Observer: obs})
	gauge := obs.inFlight
	a := newAcks()
	m := txnMessage(a, 0, "out", "out too")
	m.Records = append(m.Records, sink.Record{Topic: topic + ".dead", Value: []byte("dead letter")})
	send2(t, p, m)
	if out, dead := gauge(topic), gauge(topic+".dead"); out != 2 || dead != 1 {
		t.Errorf("in flight: %v records for the output topic, %v for the dead-letter one; want 2 and 1", out, dead)
	}
	if errs := a.wait(t, 10*time.Second); len(errs) > 0 {
		t.Fatal(errs)
	}
	if out, dead := gauge(topic), gauge(topic+".dead"); out != 0 || dead != 0 {
		t.Errorf("after Done: %v and %v records in flight, want none", out, dead)
	}
	if cur, ok, err := NewCursorStore(Config{Brokers: []string{addr}}, "cursors", "relay:test").Load(); err != nil || !ok || cur != "c0" {
		t.Errorf("a CursorStore of its own reads %q, %v, %v; want c0", cur, ok, err)
	}
}
