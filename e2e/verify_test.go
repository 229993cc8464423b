package e2e

import (
	"testing"
	"time"

	"github.com/atkafka/atkafka/source/relay/relaytest"
)

// TestVerifyCommitsStrict replays the capture through the binary with --verify-commits strict and enrichment on:
// every real commit verifies, nothing is dead-lettered, and the verifier takes its keys from enrichment's
// document cache, so the PLC serves each account's document once (plus the refetch after the #identity event),
// not once for each.
func TestVerifyCommitsStrict(t *testing.T) {
	t.Parallel()
	srv := relaytest.NewServer(relaytest.CorpusFrames(t))
	t.Cleanup(srv.Close)
	plc := newFakePLC(t)
	p := startAtkafka(t, runConfig{Args: relayArgs(srv.URL(), "--plc-host", plc.URL, "--plc-rate-limit", "-1",
		"--verify-commits", "strict")})
	p.WaitCommitted(srv.LastSeq(), 2*time.Minute)
	if got := len(p.Records(corpusRecords)); got != corpusRecords {
		t.Errorf("%d records, want %d", got, corpusRecords)
	}
	m, err := p.Metrics()
	if err != nil {
		t.Fatal(err)
	}
	const commits = 148
	if ok := m.value("atkafka_verified_frames", `kind="commit"`, `result="ok"`); ok != commits {
		t.Errorf("verified_frames{kind=commit,result=ok} = %v, want %d; all: %v", ok, commits,
			m.value("atkafka_verified_frames", `kind="commit"`))
	}
	if n := m.value("atkafka_dead_lettered_events"); n != 0 {
		t.Errorf("%v frames dead-lettered", n)
	}
	// One request per account of the capture (its audit log: enrichment and the verifier share it), and one
	// refetch after its #identity event.
	if got, most := plc.requests.Load(), int64(len(plc.docs)+1); got > most {
		t.Errorf("the PLC answered %d requests, more than one per account (%d)", got, most)
	}
}
