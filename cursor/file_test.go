package cursor

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

func TestFileRoundTrip(t *testing.T) {
	f := NewFile(filepath.Join(t.TempDir(), "cursor"))
	if _, ok, err := f.Load(); ok || err != nil {
		t.Fatalf("fresh cursor: ok=%v err=%v", ok, err)
	}
	for _, v := range []string{"1", "31527015471"} {
		if err := f.Save(v); err != nil {
			t.Fatal(err)
		}
		got, ok, err := f.Load()
		if err != nil || !ok || got != v {
			t.Fatalf("Load = %q %v %v, want %q", got, ok, err, v)
		}
	}
	entries, _ := os.ReadDir(filepath.Dir(f.Path()))
	if len(entries) != 1 {
		t.Fatalf("temporary files left behind: %v", entries)
	}
}

func TestPersistSavesOnShutdown(t *testing.T) {
	f := NewFile(filepath.Join(t.TempDir(), "cursor"))
	var pos atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		errc <- Persist(ctx, f, time.Hour, func() (string, bool) {
			p := pos.Load()
			return strconv.FormatInt(p, 10), p > 0
		}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	}()
	pos.Store(42)
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if got, _, _ := f.Load(); got != "42" {
		t.Fatalf("cursor after shutdown = %q, want 42", got)
	}
}
