package e2e

import (
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/atkafka/atkafka/source/relay/relaytest"
)

// TestFilterConfigErrors: a filter configuration that cannot be right stops the binary at start-up with a
// message naming the problem, before it connects to anything. The broker address is a closed port with a long
// connect timeout, so a binary that tried Kafka first would fail late and with the wrong message.
func TestFilterConfigErrors(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		args []string
		env  []string
		want string
	}{
		{"watched and ignored collections", []string{"--watched-collections", "app.bsky.feed.post", "--ignored-collections", "app.bsky.feed.like"},
			nil, "watched and ignored collections are both set"},
		{"watched and ignored services", []string{"--ignored-services", "bsky.network"},
			[]string{"ATKAFKA_MATCHED_SERVICES=blacksky.app"}, "watched and ignored services are both set"},
		{"malformed collection pattern", []string{"--watched-collections", "app.*.post"}, nil, `"app.*.post"`},
		{"empty entry", []string{"--ignored-collections", "app.bsky.feed.like,,app.bsky.feed.post"}, nil, "empty entry"},
		{"service URL", []string{"--watched-services", "https://bsky.network"}, nil, "not a URL"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			p := startAtkafka(t, runConfig{Brokers: "127.0.0.1:1", Env: c.env,
				Args: append(relayArgs("ws://127.0.0.1:1", "--kafka-connect-timeout", "1m"), c.args...)})
			if code := p.Wait(30 * time.Second); code == 0 {
				t.Fatalf("exit code 0, want an error")

			}
			// The error is the process's last line, after the log.
			lines := strings.Split(strings.TrimSpace(p.Log()), "\n")
			if last := lines[len(lines)-1]; !strings.HasPrefix(last, "atkafka: ") || !strings.Contains(last, c.want) {
				t.Errorf("last line %q, want an error holding %q", last, c.want)
			}
		})
	}
}

// TestFilterEverythingResumes: a run whose filter drops every frame of the capture still commits its cursor
// past them, so the next run, even without a filter, resumes after them instead of reading them again.
func TestFilterEverythingResumes(t *testing.T) {
	t.Parallel()
	srv := relaytest.NewServer(relaytest.CorpusFrames(t))
	t.Cleanup(srv.Close)
	plc := newFakePLC(t)
	dir := t.TempDir()
	// No capture account lives on this host, and the two whose DID the PLC does not know match no host at all.
	p := startAtkafka(t, runConfig{DataDir: dir, Args: relayArgs(srv.URL(), "--plc-host", plc.URL, "--plc-rate-limit", "-1",
		"--watched-services", "pds.example.invalid", "--enrich=false")})
	eventually(t, time.Minute, "the cursor file to reach the capture's last seq", func() error {
		if seq, ok := p.Cursor(); !ok || seq != srv.LastSeq() {
			return stopUnlessRunning(p, "cursor file holds %d (present: %v), want %d", seq, ok, srv.LastSeq())
		}
		return nil
	})
	m, err := p.Metrics()
	if err != nil {
		t.Fatal(err)
	}
	if got := m.value("atkafka_filtered_events", `reason="service"`); got != float64(srv.Len()) {
		t.Errorf("filtered_events{reason=service} = %v, want one per frame (%d)", got, srv.Len())
	}
	if got := m.value("atkafka_produced_events"); got != 0 {
		t.Errorf("produced %v records, want none", got)
	}
	p.Signal(syscall.SIGTERM)
	if code := p.Wait(time.Minute); code != 0 {
		t.Fatalf("exit code %d after SIGTERM", code)
	}

	again := startAtkafka(t, runConfig{DataDir: dir, Topic: p.Topic, Args: relayArgs(srv.URL(), "--enrich=false")})
	eventually(t, time.Minute, "the second run to connect", func() error {
		if len(srv.Cursors()) < 2 {
			return stopUnlessRunning(again, "%d connections", len(srv.Cursors()))
		}
		return nil
	})
	if cursors := srv.Cursors(); !slices.Equal(cursors, []string{"", strconv.FormatInt(srv.LastSeq(), 10)}) {
		t.Errorf("connections asked for cursors %q, want the tip then %d", cursors, srv.LastSeq())
	}
	if recs := again.Records(0); len(recs) != 0 {
		t.Errorf("the resumed run produced %d records of frames the first run had filtered", len(recs))
	}
}
