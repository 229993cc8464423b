package relay

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"

	"github.com/atkafka/atkafka/schema/schematest"
	"github.com/atkafka/atkafka/sink/sinktest"
	"github.com/atkafka/atkafka/source/relay/relaytest"
	"github.com/atkafka/atkafka/testenv"
	"github.com/atkafka/atkafka/transform/enrich"
	"github.com/atkafka/atkafka/transform/frame"
	"github.com/atkafka/atkafka/transform/verify"
)

// verifyCorpus serves the capture, with a PLC whose document for one DID (returned) names another key, so
// that DID's commits fail their signature check while every other commit verifies.
func verifyCorpus(t *testing.T, mode verify.Mode, obs verify.Observer) (srv *relaytest.Server, forged string, forgedCommits int, v *verify.Verifier) {
	t.Helper()
	frames := relaytest.CorpusFrames(t)
	var f frame.Frame
	for _, msg := range frames {
		if f.Decode(msg) == nil && f.Kind == frame.KindCommit {
			if forged == "" {
				forged = string(f.Commit.Repo)
			}
			if string(f.Commit.Repo) == forged {
				forgedCommits++
			}
		}
	}
	docs := testenv.CorpusDIDDocs(t)
	other, err := atcrypto.GeneratePrivateKeyK256()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := other.PublicKey()
	var doc map[string]any
	if err := json.Unmarshal(docs[forged], &doc); err != nil {
		t.Fatal(err)
	}
	for _, vm := range doc["verificationMethod"].([]any) {
		if m := vm.(map[string]any); strings.HasSuffix(m["id"].(string), "#atproto") {
			m["publicKeyMultibase"] = pub.Multibase()
		}
	}
	docs[forged], _ = json.Marshal(doc)
	plc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		did := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/"), "/log/audit")
		d, ok := docs[did]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Write(testenv.PLCAuditLog(did, d, "2023-04-01T12:00:00.000Z"))
	}))
	t.Cleanup(plc.Close)
	e, err := enrich.New(enrich.Config{PLCHost: plc.URL, PLCRate: -1, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	v, err = verify.New(verify.Config{Mode: mode, Keys: e, Logger: testLogger(t), Observer: obs})
	if err != nil {
		t.Fatal(err)
	}
	return relaytest.NewServer(frames), forged, forgedCommits, v
}

// TestVerifyStrict: commits that fail verification are dead-lettered instead of produced, with reason
// verify_<reason>; every other real commit verifies and is produced.
func TestVerifyStrict(t *testing.T) {
	obs := &counter{}
	srv, forged, forgedCommits, v := verifyCorpus(t, verify.ModeStrict, obs)
	defer srv.Close()
	var mem sinktest.Sink
	cfg := testConfig(t, srv.URL(), &mem)
	cfg.StartCursor, cfg.Verifier, cfg.Observer = "0", v, obs
	r := start(t, cfg)
	r.waitCommitted(t, srv.LastSeq(), 30*time.Second)
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	for _, rec := range mem.Topic("") {
		if rec.Key == forged && decodeEvent(t, rec.Value).Operation != nil {
			t.Errorf("operation of the forged DID produced: %s", rec.Value)
		}
	}
	letters := mem.Topic("dead")
	if len(letters) != forgedCommits {
		t.Errorf("%d dead letters, want %d (the forged DID's commits)", len(letters), forgedCommits)
	}
	for _, l := range letters {
		schematest.Check(t, schematest.DeadLetter, l.Value)
		if l.Key != forged || l.Header("reason") != "verify_bad_signature" {
			t.Errorf("dead letter key %q reason %q", l.Key, l.Header("reason"))
		}
	}
	if got := obs.Get("dead_lettered/verify_bad_signature"); got != forgedCommits {
		t.Errorf("counted %d verify_bad_signature dead letters, want %d", got, forgedCommits)
	}
	// Everything else of the oracle is there: 148 commits verified on the way.
	produced := 0
	for _, rec := range mem.Topic("") {
		if rec.Key != forged {
			produced++
		}
	}
	if produced == 0 {
		t.Error("nothing produced")
	}
}

// TestVerifyLog: failures are counted and produced anyway; nothing is dead-lettered.
func TestVerifyLog(t *testing.T) {
	obs := &counter{}
	srv, _, forgedCommits, v := verifyCorpus(t, verify.ModeLog, obs)
	defer srv.Close()
	var mem sinktest.Sink
	cfg := testConfig(t, srv.URL(), &mem)
	cfg.StartCursor, cfg.Verifier = "0", v
	r := start(t, cfg)
	r.waitCommitted(t, srv.LastSeq(), 30*time.Second)
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	checkCorpus(t, mem.Topic(""))
	if got := mem.Topic("dead"); len(got) != 0 {
		t.Errorf("%d dead letters in log mode, want none", len(got))
	}
	if got := obs.Get("verify_failed/" + string(verify.ReasonBadSignature)); got != forgedCommits {
		t.Errorf("counted %d bad_signature failures, want %d", got, forgedCommits)
	}
}
