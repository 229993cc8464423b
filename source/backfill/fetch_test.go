package backfill

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

func TestHostHonoursRateLimitHeaders(t *testing.T) {
	var calls atomic.Int64
	var first, second atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch calls.Add(1) {
		case 1:
			first.Store(time.Now().UnixNano())
			w.Header().Set("RateLimit-Limit", "10")
			w.Header().Set("RateLimit-Remaining", "0")
			w.Header().Set("RateLimit-Reset", strconv.FormatInt(time.Now().Add(1500*time.Millisecond).Unix(), 10))
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
		default:
			second.Store(time.Now().UnixNano())
			w.Write([]byte("car"))
		}
	}))
	defer srv.Close()
	f := &fetcher{http: srv.Client(), hosts: newHosts(1, 0), memLimit: 1 << 20}
	_, err := f.getRepo(context.Background(), srv.URL, "did:plc:x")
	if fl, ok := err.(*failure); !ok || fl.reason != "rate_limited" || fl.permanent {
		t.Fatalf("first getRepo: %v, want a transient rate_limited failure", err)
	}
	d, err := f.getRepo(context.Background(), srv.URL, "did:plc:x")
	if err != nil || string(d.b) != "car" {
		t.Fatalf("second getRepo: %v", err)
	}
	if wait := time.Duration(second.Load() - first.Load()); wait < 900*time.Millisecond {
		t.Errorf("second request %s after a 429 with Retry-After 1, want at least 1s", wait)
	}
}

func TestClassify(t *testing.T) {
	for body, want := range map[string]string{
		`{"error":"RepoTakendown"}`:   "inactive takendown",
		`{"error":"RepoDeactivated"}`: "inactive deactivated",
		`{"error":"RepoNotFound"}`:    "permanent not_found",
		`{"error":"InternalError"}`:   "transient server_error",
	} {
		code := http.StatusBadRequest
		if want == "transient server_error" {
			code = http.StatusInternalServerError
		}
		rec := httptest.NewRecorder()
		rec.WriteHeader(code)
		rec.Body.WriteString(body)
		err := classify(rec.Result())
		got := ""
		switch e := err.(type) {
		case *inactiveError:
			got = "inactive " + e.status
		case *failure:
			got = map[bool]string{true: "permanent ", false: "transient "}[e.permanent] + e.reason
		}
		if got != want {
			t.Errorf("%s: %s, want %s", body, got, want)
		}
	}
	// The statuses worth retrying are backoff.TransientStatus's, as for every HTTP client of atkafka.
	rec := httptest.NewRecorder()
	rec.WriteHeader(http.StatusRequestTimeout)
	if f, ok := classify(rec.Result()).(*failure); !ok || f.permanent {
		t.Errorf("408: %v, want transient", f)
	}
}

func TestLargeRepositoriesAreMappedNotHeld(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789"), 100_000)
	f := &fetcher{memLimit: 4096, tmpDir: t.TempDir()}
	d, err := f.read(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	defer d.release()
	if !bytes.Equal(d.b, data) {
		t.Fatal("mapped repository differs from what was read")
	}
	small, err := f.read(bytes.NewReader(data[:100]))
	if err != nil || !bytes.Equal(small.b, data[:100]) {
		t.Fatalf("small repository: %v", err)
	}
	small.release()
}
