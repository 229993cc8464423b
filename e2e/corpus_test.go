package e2e

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/atkafka/atkafka/source/relay/relaytest"
	"github.com/atkafka/atkafka/testenv"
)

// corpusRecords is how many records the relay capture makes: 150 ops (144 creates, 2 updates, 4 deletes) in 148
// commits, one #identity and one #account, as the capture's Jetstream oracle lists them.
const corpusRecords = 152

// fakePLC serves the capture's DID documents the way plc.directory does, and counts the requests it answers.
type fakePLC struct {
	*httptest.Server
	docs     map[string]json.RawMessage
	requests atomic.Int64
}

// corpusCreated is the creation time the fake PLC's audit logs give every account of the capture.
const corpusCreated = "2023-04-01T12:00:00.000Z"

// newFakePLC serves /{did} from did_docs.json.zst and /{did}/log/audit as the audit log whose one operation
// made that document (the capture has no audit logs), created at corpusCreated.
func newFakePLC(t testing.TB) *fakePLC {
	t.Helper()
	f, err := os.Open(filepath.Join(testenv.SharedDir(t), relaytest.CorpusDir, "did_docs.json.zst"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec, err := zstd.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	plc := &fakePLC{}
	if err := json.NewDecoder(dec).Decode(&plc.docs); err != nil {
		t.Fatal(err)
	}
	plc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		plc.requests.Add(1)
		did, audit := strings.CutSuffix(strings.TrimPrefix(r.URL.Path, "/"), "/log/audit")
		doc, ok := plc.docs[did]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		if audit {
			doc = testenv.PLCAuditLog(did, doc, corpusCreated)
		}
		_, _ = w.Write(doc)
	}))
	t.Cleanup(plc.Close)
	return plc
}

// pdsEndpoint reads the #atproto_pds endpoint of a DID document, independently of atkafka's parser.
func pdsEndpoint(t testing.TB, doc []byte) string {
	t.Helper()
	var d struct {
		Service []struct {
			ID       string `json:"id"`
			Endpoint string `json:"serviceEndpoint"`
		} `json:"service"`
	}
	if err := json.Unmarshal(doc, &d); err != nil {
		t.Fatal(err)
	}
	for _, s := range d.Service {
		if strings.HasSuffix(s.ID, "#atproto_pds") {
			return s.Endpoint
		}
	}
	return ""
}

// envelope is the Osprey record shape (GUIDE §5): what Osprey's worker reads, and nothing it would skip.
type envelope struct {
	Data struct {
		ActionName string          `json:"action_name"`
		ActionID   json.Number     `json:"action_id"`
		Data       json.RawMessage `json:"data"`
		Timestamp  string          `json:"timestamp"`
		SecretData json.RawMessage `json:"secret_data"`
		Encoding   string          `json:"encoding"`
	} `json:"data"`
	SendTime string `json:"send_time"`
}

// TestCorpus replays the real relay capture through the binary in Osprey mode, with a local PLC serving the
// documents plc.directory served at capture time, and checks the records, the envelope and the metrics of that
// one run.
func TestCorpus(t *testing.T) {
	t.Parallel()
	frames := relaytest.CorpusFrames(t)
	plc := newFakePLC(t)
	srv := relaytest.NewServer(frames)
	t.Cleanup(srv.Close)
	const worker = 7
	began := time.Now()
	// The local PLC stands for a mirror (no rate limit): at plc.directory's budget, the capture's burst of 148 new
	// accounts would mostly go without metadata, by design (TestBudget).
	p := startAtkafka(t, runConfig{Args: relayArgs(srv.URL(), "--plc-host", plc.URL, "--plc-rate-limit", "-1",
		"--osprey-compatible", "--snowflake-worker-id", strconv.Itoa(worker))})
	p.WaitCommitted(srv.LastSeq(), 2*time.Minute)
	records := p.Records(corpusRecords)
	if len(records) != corpusRecords {
		t.Fatalf("%d records, want %d", len(records), corpusRecords)
	}
	envelopes := make([]envelope, len(records))
	events := make([]*event, len(records))
	for i, r := range records {
		dec := json.NewDecoder(strings.NewReader(string(r.Value)))
		dec.UseNumber() // action_id must be a JSON integer, which float64 would not tell
		if err := dec.Decode(&envelopes[i]); err != nil {
			t.Fatalf("record %s: %v", r.Value, err)
		}
		events[i] = decodeEvent(t, r.Value)
	}

	t.Run("pdsHost", func(t *testing.T) {
		ops := 0
		for i, e := range events {
			m := meta(t, e)
			doc, known := plc.docs[e.DID]
			switch {
			case m == nil:
				t.Errorf("no eventMetadata: %s", records[i].Value)
			case !known:
				// The #identity and #account DIDs are not in the capture's documents: the PLC says 404.
				if m.PDSHost != "" || m.DIDDocument != nil || m.AccountAge == nil || *m.AccountAge != -1 {
					t.Errorf("metadata of a DID the PLC does not know: %s", e.EventMetadata)
				}
			case m.PDSHost != pdsEndpoint(t, doc) || !testenv.JSONEqual(m.DIDDocument, doc):
				t.Errorf("%s: pdsHost %q, want %q; didDocument %s", e.DID, m.PDSHost, pdsEndpoint(t, doc), m.DIDDocument)
			case m.DIDCreatedAt != corpusCreated || m.AccountAge == nil || *m.AccountAge <= 0:
				t.Errorf("%s: creation time not the audit log's: %s", e.DID, e.EventMetadata)
			}
			if e.Operation != nil && known {
				ops++
			}
		}
		if ops != 150 {
			t.Errorf("%d operations of DIDs with a document, want 150", ops)
		}
	})

	t.Run("osprey", func(t *testing.T) {
		ids := map[int64]bool{}
		for i, env := range envelopes {
			d, e := env.Data, events[i]
			id, err := strconv.ParseInt(d.ActionID.String(), 10, 64)
			if err != nil || strings.ContainsAny(d.ActionID.String(), ".eE") {
				t.Errorf("action_id %q is not an integer", d.ActionID)
			}
			if ids[id] {
				t.Errorf("action_id %d used twice", id)
			}
			ids[id] = true
			// Snowflake: milliseconds since 2015-01-01Z above bit 22, then the worker id, then a sequence.
			at := time.UnixMilli(id>>22 + 1420070400000)
			if at.Before(began.Add(-time.Second)) || at.After(time.Now().Add(time.Second)) || (id>>12)&0x3ff != worker {
				t.Errorf("action_id %d decodes to %s and worker %d", id, at, (id>>12)&0x3ff)
			}
			sent, err := time.Parse(time.RFC3339Nano, env.SendTime)
			if err != nil || !strings.HasSuffix(env.SendTime, "Z") || sent.Before(began.Add(-time.Second)) {
				t.Errorf("send_time %q: %v", env.SendTime, err)
			}
			wantName := e.Kind()
			if e.Operation != nil {
				wantName = "operation#" + e.Operation.Action
			}
			if d.ActionName != wantName || d.Timestamp != e.Timestamp || d.Encoding != "UTF8" || string(d.SecretData) != "{}" {
				t.Errorf("envelope %s", records[i].Value)
			}
		}
	})

	t.Run("metrics", func(t *testing.T) {
		m, err := p.Metrics()
		if err != nil {
			t.Fatal(err)
		}
		checks := []struct {
			name   string
			labels []string
			want   float64
		}{
			{"atkafka_handled_events", nil, corpusRecords},
			{"atkafka_handled_events", []string{`action_name="operation#create"`, `collection="app.bsky.feed.like"`}, float64(count(events, "app.bsky.feed.like", "create"))},
			{"atkafka_produced_events", []string{`status="ok"`}, corpusRecords},
			{"atkafka_produced_events", []string{`status="error"`}, 0},
			{"atkafka_cursor_committed", []string{`source="relay"`}, float64(srv.LastSeq())},
			{"atkafka_cursor_current", []string{`source="relay"`}, float64(srv.LastSeq())},
			// One observation per frame, once Kafka acknowledged all of its records.
			{"atkafka_produce_latency_seconds_count", []string{`source="relay"`}, float64(len(frames))},
			// Every request that reached the PLC, and only those, counted as not cached.
			{"atkafka_plc_requests", []string{`cached="false"`}, float64(plc.requests.Load())},
			{"atkafka_plc_requests", []string{`kind="doc"`, `status="ok"`, `cached="false"`}, float64(len(plc.docs))},
		}
		for _, c := range checks {
			if got := m.value(c.name, c.labels...); got != c.want {
				t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
			}
		}
		if m.value("atkafka_plc_requests", `cached="true"`) == 0 {
			t.Errorf("no PLC lookup answered from the cache, although DIDs commit several times")
		}
	})
}

// count is how many events are operations with action on collection.
func count(events []*event, collection, action string) int {
	n := 0
	for _, e := range events {
		if e.Operation != nil && e.Operation.Collection == collection && e.Operation.Action == action {
			n++
		}
	}
	return n
}
