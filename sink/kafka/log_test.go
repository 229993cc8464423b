package kafka

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/atkafka/atkafka/testenv"
)

// During an outage kgo warns on every reconnect attempt; the log must show the outage once per window.
func TestKgoWarningsRepeatAtDebug(t *testing.T) {
	var buf testenv.Buffer
	k := newKgoLogger(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	now := time.Unix(0, 0)
	k.now = func() time.Time { return now }
	for range 5 {
		k.Log(kgo.LogLevelWarn, "unable to open connection to broker", "addr", "127.0.0.1:1")
		now = now.Add(time.Second)
	}
	k.Log(kgo.LogLevelWarn, "another warning")
	now = now.Add(repeatWindow)
	k.Log(kgo.LogLevelWarn, "unable to open connection to broker", "addr", "127.0.0.1:1")
	out := buf.String()
	if n := strings.Count(out, "level=WARN msg=\"kgo: unable to open connection"); n != 2 {
		t.Errorf("%d warnings for the repeated message, want 2 (first, and after the window):\n%s", n, out)
	}
	if n := strings.Count(out, "level=DEBUG msg=\"kgo: unable to open connection"); n != 4 {
		t.Errorf("%d debug repeats, want 4:\n%s", n, out)
	}
	if !strings.Contains(out, "level=WARN msg=\"kgo: another warning\"") {
		t.Errorf("a different warning was demoted:\n%s", out)
	}
}
