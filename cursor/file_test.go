package cursor

import (
	"os"
	"path/filepath"
	"testing"
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
