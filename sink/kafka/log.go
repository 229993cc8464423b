package kafka

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// repeatWindow is how long a warning kgo repeats stays at debug level after it was logged once.
const repeatWindow = 30 * time.Second

// kgoLogger routes kgo's logs to slog. kgo's info level reports every connection and metadata refresh, so it is
// only passed on when debugging; its warnings (a broker unreachable, a request retried) always are, but kgo
// repeats them on every reconnect attempt during an outage, so a repeat within repeatWindow goes to debug: an
// outage reads as one line, not one per retry.
type kgoLogger struct {
	l    *slog.Logger
	now  func() time.Time
	mu   sync.Mutex
	last map[string]time.Time // message → when it was last logged above debug
}

func newKgoLogger(l *slog.Logger) *kgoLogger {
	return &kgoLogger{l: l, now: time.Now, last: map[string]time.Time{}}
}

func (k *kgoLogger) Level() kgo.LogLevel {
	if k.l.Enabled(context.Background(), slog.LevelDebug) {
		return kgo.LogLevelInfo
	}
	return kgo.LogLevelWarn
}

func (k *kgoLogger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	lvl := slogLevel(level)
	if lvl > slog.LevelDebug && k.repeated(msg) {
		lvl = slog.LevelDebug
	}
	k.l.Log(context.Background(), lvl, "kgo: "+msg, keyvals...)
}

// repeated reports whether msg was logged above debug within repeatWindow, and records it otherwise.
func (k *kgoLogger) repeated(msg string) bool {
	now := k.now()
	k.mu.Lock()
	defer k.mu.Unlock()
	if t, ok := k.last[msg]; ok && now.Sub(t) < repeatWindow {
		return true
	}
	k.last[msg] = now // kgo's messages are a fixed set of constants, so this map stays small
	return false
}

func slogLevel(l kgo.LogLevel) slog.Level {
	switch l {
	case kgo.LogLevelError:
		return slog.LevelError
	case kgo.LogLevelWarn:
		return slog.LevelWarn
	default:
		return slog.LevelDebug
	}
}
