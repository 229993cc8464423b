package stream

import (
	"bytes"
	"strings"
	"testing"
)

func TestURL(t *testing.T) {
	for _, c := range []struct{ host, want string }{
		{"bsky.network", "wss://bsky.network/x"},
		{"http://localhost:2583", "ws://localhost:2583/x"},
		{"https://mod.example/", "wss://mod.example/x"},
		{"wss://mod.example/x", "wss://mod.example/x"},
	} {
		u, err := URL("host", c.host, "/x")
		if err != nil || u.String() != c.want {
			t.Errorf("URL(%q) = %v, %v; want %s", c.host, u, err, c.want)
		}
	}
	for _, bad := range []string{"ftp://h", "wss://", "http://[::1"} {
		if _, err := URL("labeler host", bad, "/x"); err == nil || !strings.Contains(err.Error(), "labeler host") {
			t.Errorf("URL(%q): %v", bad, err)
		}
	}
}

// An oversized message keeps its first limit bytes and reports the rest, without buffering it.
func TestReadLimited(t *testing.T) {
	msg := bytes.Repeat([]byte("x"), 100)
	got, dropped, err := ReadLimited(bytes.NewReader(msg), nil, 40)
	if err != nil || len(got) != 40 || dropped != 60 {
		t.Fatalf("got %d bytes, dropped %d, %v", len(got), dropped, err)
	}
	got, dropped, err = ReadLimited(bytes.NewReader(msg), make([]byte, 0, 8), 1000)
	if err != nil || !bytes.Equal(got, msg) || dropped != 0 {
		t.Fatalf("got %d bytes, dropped %d, %v", len(got), dropped, err)
	}
}

func TestParseStartCursor(t *testing.T) {
	for _, c := range []struct {
		in        string
		seq       int64
		fromStore bool
	}{{"", NoCursor, true}, {Live, NoCursor, false}, {"0", 0, false}, {"42", 42, false}} {
		seq, fromStore, err := ParseStartCursor(c.in)
		if err != nil || seq != c.seq || fromStore != c.fromStore {
			t.Errorf("ParseStartCursor(%q) = %d, %v, %v", c.in, seq, fromStore, err)
		}
	}
	for _, bad := range []string{"-1", "tip", "1.5"} {
		if _, _, err := ParseStartCursor(bad); err == nil {
			t.Errorf("ParseStartCursor(%q) accepted", bad)
		}
	}
	if DescribeCursor(NoCursor) != Live || DescribeCursor(7) != "7" {
		t.Error("DescribeCursor")
	}
}
