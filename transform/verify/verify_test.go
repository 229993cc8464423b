package verify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"testing"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/bluesky-social/indigo/atproto/atcrypto"
	lexutil "github.com/bluesky-social/indigo/lex/util"

	"github.com/atkafka/atkafka/testenv"
	"github.com/atkafka/atkafka/transform/frame"
)

const testDID = "did:plc:verifytest0000000000000"

// setup returns an account with history, a PLC serving its document, and a strict Verifier using that PLC.
func setup(t *testing.T) (*account, *fakePLC, *Verifier) {
	t.Helper()
	a := newAccount(t, testDID, 40)
	plc := newPLC(t, map[string]json.RawMessage{testDID: didDoc(testDID, mustPublic(t, a.key))})
	return a, plc, newVerifier(t, ModeStrict, plc.URL)
}

func mustPublic(t testing.TB, k atcrypto.PrivateKey) atcrypto.PublicKey {
	t.Helper()
	pub, err := k.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

// reasonOf returns the Reason of a verdict, "" for nil.
func reasonOf(t *testing.T, err error) Reason {
	t.Helper()
	if err == nil {
		return ""
	}
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("verdict %v is not an *Error", err)
	}
	return e.Reason
}

func TestValidCommits(t *testing.T) {
	a, _, v := setup(t)
	ctx := context.Background()
	creates := a.commit(nil, change{text: "one"}, change{text: "two"})
	update := a.commit(nil, change{path: creates.Ops[0].Path, text: "one, edited"})
	del := a.commit(nil, change{path: creates.Ops[1].Path})
	mixed := a.commit(nil, change{text: "three"}, change{path: "app.bsky.feed.post/3l00000000003"},
		change{path: "app.bsky.feed.post/3l00000000004", text: "four, edited"})
	for name, msg := range map[string]*comatproto.SyncSubscribeRepos_Commit{"creates": creates, "update": update, "delete": del, "mixed": mixed} {
		if err := v.CheckCommit(ctx, body(t, msg)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		if err := v.Commit(ctx, body(t, msg)); err != nil {
			t.Errorf("%s: Commit in strict mode: %v", name, err)
		}
	}
	if err := v.CheckSync(ctx, body(t, a.sync(nil))); err != nil {
		t.Errorf("sync: %v", err)
	}
}

func TestFailures(t *testing.T) {
	ctx := context.Background()
	other, err := atcrypto.GeneratePrivateKeyK256()
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		build  func(a *account) []byte
		reason Reason
	}{
		{"wrong signature", func(a *account) []byte { return body(t, a.commit(other, change{text: "forged"})) }, ReasonBadSignature},
		{"tampered record block", func(a *account) []byte {
			msg := a.commit(nil, change{text: "original text"})
			i := bytes.Index(msg.Blocks, []byte("original text"))
			if i < 0 {
				t.Fatal("record text not found in the CAR")
			}
			msg.Blocks = bytes.Clone(msg.Blocks)
			copy(msg.Blocks[i:], "tampered")
			return body(t, msg)
		}, ReasonBadBlock},
		{"op left out of the list", func(a *account) []byte {
			msg := a.commit(nil, change{text: "shown"}, change{text: "hidden"})
			msg.Ops = msg.Ops[:1]
			return body(t, msg)
		}, ReasonOpsMismatch},
		{"op with another record's CID", func(a *account) []byte {
			msg := a.commit(nil, change{text: "real"})
			other := a.record("substituted")
			msg.Ops[0].Cid = (*lexutil.LexLink)(other.cid)
			return body(t, msg)
		}, ReasonOpsMismatch},
		{"prevData of another state", func(a *account) []byte {
			first := a.commit(nil, change{text: "a"})
			msg := a.commit(nil, change{text: "b"})
			msg.PrevData = first.PrevData
			return body(t, msg)
		}, ReasonOpsMismatch},
		{"commit CID not the CAR root", func(a *account) []byte {
			first := a.commit(nil, change{text: "a"})
			msg := a.commit(nil, change{text: "b"})
			msg.Commit = first.Commit
			return body(t, msg)
		}, ReasonBadStructure},
		{"another account's commit", func(a *account) []byte {
			msg := a.commit(nil, change{text: "a"})
			msg.Repo = "did:plc:someoneelse000000000000"
			return body(t, msg)
		}, ReasonBadStructure},
		{"not a commit body", func(a *account) []byte { return []byte{0xa1, 0x61, 0x78, 0x01} }, ReasonBadStructure},
		{"no prevData", func(a *account) []byte {
			msg := a.commit(nil, change{text: "old style"})
			msg.PrevData = nil
			return body(t, msg)
		}, ReasonUnverifiable},
		{"no prevData and a wrong signature", func(a *account) []byte {
			msg := a.commit(other, change{text: "old style"})
			msg.PrevData = nil
			return body(t, msg)
		}, ReasonBadSignature},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a, _, v := setup(t)
			if got := reasonOf(t, v.CheckCommit(ctx, tc.build(a))); got != tc.reason {
				t.Errorf("reason %q, want %q", got, tc.reason)
			}
		})
	}
	t.Run("sync signed by another key", func(t *testing.T) {
		a, _, v := setup(t)
		if got := reasonOf(t, v.CheckSync(ctx, body(t, a.sync(other)))); got != ReasonBadSignature {
			t.Errorf("reason %q, want %q", got, ReasonBadSignature)
		}
	})
	t.Run("document without an atproto key", func(t *testing.T) {
		a, plc, v := setup(t)
		plc.set(testDID, json.RawMessage(`{"id":"`+testDID+`","alsoKnownAs":[],"verificationMethod":[]}`))
		if got := reasonOf(t, v.CheckCommit(ctx, body(t, a.commit(nil, change{text: "x"})))); got != ReasonNoKey {
			t.Errorf("reason %q, want %q", got, ReasonNoKey)
		}
	})
}

// TestKeyRotation: a signature that fails with the cached key is retried once with a fresh document.
func TestKeyRotation(t *testing.T) {
	a, plc, v := setup(t)
	ctx := context.Background()
	if err := v.CheckCommit(ctx, body(t, a.commit(nil, change{text: "before"}))); err != nil {
		t.Fatal(err)
	}
	rotated, err := atcrypto.GeneratePrivateKeyK256()
	if err != nil {
		t.Fatal(err)
	}
	a.key = rotated
	plc.set(testDID, didDoc(testDID, mustPublic(t, rotated)))
	before := plc.requests
	if err := v.CheckCommit(ctx, body(t, a.commit(nil, change{text: "after"}))); err != nil {
		t.Fatalf("commit signed with the rotated key: %v", err)
	}
	if plc.requests != before+1 {
		t.Errorf("%d PLC requests for the rotation, want 1", plc.requests-before)
	}
	// Cached now: no more requests.
	if err := v.CheckCommit(ctx, body(t, a.commit(nil, change{text: "again"}))); err != nil || plc.requests != before+1 {
		t.Errorf("after rotation: %v, %d requests", err, plc.requests-before)
	}
}

func TestModes(t *testing.T) {
	ctx := context.Background()
	other, _ := atcrypto.GeneratePrivateKeyK256()
	a, plc, strict := setup(t)
	logMode := newVerifier(t, ModeLog, plc.URL)
	off := newVerifier(t, ModeOff, plc.URL)
	forged := body(t, a.commit(other, change{text: "forged"}))

	if err := logMode.Commit(ctx, forged); err != nil {
		t.Errorf("log mode returned %v, want nil (produce anyway)", err)
	}
	if got := counted(logMode, "failed "+string(ReasonBadSignature)); got != 1 {
		t.Errorf("log mode counted %v failures, want 1", got)
	}
	if got := reasonOf(t, strict.Commit(ctx, forged)); got != ReasonBadSignature {
		t.Errorf("strict mode: reason %q, want %q", got, ReasonBadSignature)
	}
	requests := plc.requests
	if err := off.Commit(ctx, forged); err != nil || plc.requests != requests {
		t.Errorf("off mode: %v, %d PLC requests", err, plc.requests-requests)
	}

	// Unverifiable commits pass, counted.
	old := a.commit(nil, change{text: "old style"})
	old.PrevData = nil
	n := counted(strict, "commit "+string(ReasonUnverifiable))
	if err := strict.Commit(ctx, body(t, old)); err != nil {
		t.Errorf("strict mode rejected an unverifiable commit: %v", err)
	}
	if got := counted(strict, "commit "+string(ReasonUnverifiable)) - n; got != 1 {
		t.Errorf("counted %v unverifiable, want 1", got)
	}
}

// TestPLCDown: without the DID document the frame passes (fail open), counted as key_unavailable, and
// verification resumes once PLC is back.
func TestPLCDown(t *testing.T) {
	ctx := context.Background()
	a, plc, v := setup(t)
	plc.setDown(true)
	msg := body(t, a.commit(nil, change{text: "x"}))
	if got := reasonOf(t, v.CheckCommit(ctx, msg)); got != ReasonKeyUnavailable {
		t.Errorf("reason %q, want %q", got, ReasonKeyUnavailable)
	}
	n := counted(v, "commit "+string(ReasonKeyUnavailable))
	if err := v.Commit(ctx, msg); err != nil {
		t.Errorf("strict mode rejected a commit whose key is unavailable: %v", err)
	}
	if got := counted(v, "commit "+string(ReasonKeyUnavailable)) - n; got != 1 {
		t.Errorf("counted %v key_unavailable, want 1", got)
	}

	gone := httptest.NewServer(nil)
	gone.Close()
	v2 := newVerifier(t, ModeStrict, gone.URL) // nothing listening at all
	if err := v2.Commit(ctx, msg); err != nil {
		t.Errorf("unreachable PLC: %v", err)
	}
	if got := reasonOf(t, v2.CheckCommit(ctx, msg)); got != ReasonKeyUnavailable {
		t.Errorf("unreachable PLC: reason %q", got)
	}

	plc.setDown(false)
	time.Sleep(10 * time.Millisecond) // failures are remembered for a millisecond in tests
	if err := v.CheckCommit(ctx, msg); err != nil {
		t.Errorf("after PLC came back: %v", err)
	}
}

func TestConfig(t *testing.T) {
	for _, s := range []string{"", "off", "log", "strict"} {
		if _, err := ParseMode(s); err != nil {
			t.Errorf("%q: %v", s, err)
		}
	}
	if _, err := ParseMode("on"); err == nil {
		t.Error("mode on accepted")
	}
	if _, err := New(Config{Mode: "loud"}); err == nil {
		t.Error("New accepted mode loud")
	}
	if _, err := New(Config{Mode: ModeLog}); err == nil {
		t.Error("New accepted no Keys")
	}
}

// TestCorpus verifies every commit of the real relay capture against the DID documents plc.directory served
// for it: the proof that verification holds on network data, not only on commits built here.
func TestCorpus(t *testing.T) {
	frames := testenv.CorpusFrames(t)
	docs := testenv.CorpusDIDDocs(t)
	plc := newPLC(t, docs)
	v := newVerifier(t, ModeStrict, plc.URL)
	ctx := context.Background()
	var commits, withPrevData, inverted int
	var f frame.Frame
	for _, msg := range frames {
		if err := f.Decode(msg); err != nil {
			t.Fatal(err)
		}
		if f.Kind != frame.KindCommit {
			continue
		}
		commits++
		if f.Commit.PrevData != nil {
			withPrevData++
		}
		err := v.CheckCommit(ctx, frameBody(t, msg))
		switch reasonOf(t, err) {
		case "":
			inverted++
		case ReasonUnverifiable:
			if f.Commit.PrevData != nil {
				t.Errorf("seq %d: has prevData but %v", f.Commit.Seq, err)
			}
		default:
			t.Errorf("seq %d (%s): %v", f.Commit.Seq, f.Commit.Repo, err)
		}
	}
	if commits != 148 {
		t.Errorf("%d commits, want 148", commits)
	}
	t.Logf("%d real commits: all signatures verified; %d carry prevData, %d of them verified by inversion", commits, withPrevData, inverted)
	if inverted != withPrevData {
		t.Errorf("%d commits verified by inversion, want every one with prevData (%d)", inverted, withPrevData)
	}

	// A real commit relabelled as another account's is caught.
	for _, msg := range frames {
		if f.Decode(msg) != nil || f.Kind != frame.KindCommit {
			continue
		}
		b := bytes.Clone(frameBody(t, msg))
		var c comatproto.SyncSubscribeRepos_Commit
		if err := c.UnmarshalCBOR(bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
		c.Repo = "did:plc:" + "aaaaaaaaaaaaaaaaaaaaaaaa"
		if got := reasonOf(t, v.CheckCommit(ctx, body(t, &c))); got != ReasonBadStructure {
			t.Errorf("corpus commit relabelled to another DID: reason %q", got)
		}
		break
	}
}

// BenchmarkCommit is the cost of verifying one real commit with its key cached.
func BenchmarkCommit(b *testing.B) {
	frames := testenv.CorpusFrames(b)
	plc := newPLC(b, testenv.CorpusDIDDocs(b))
	v := newVerifier(b, ModeStrict, plc.URL)
	ctx := context.Background()
	var bodies [][]byte
	var f frame.Frame
	size := 0
	for _, msg := range frames {
		if f.Decode(msg) == nil && f.Kind == frame.KindCommit {
			bodies = append(bodies, frameBody(b, msg))
			size += len(msg)
		}
	}
	for _, body := range bodies { // warm the key cache
		if err := v.Commit(ctx, body); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(int64(size / len(bodies)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if err := v.Commit(ctx, bodies[i%len(bodies)]); err != nil {
			b.Fatal(err)
		}
	}
}

// A DID the PLC does not know cannot have signed anything: strict mode must reject it, not wave it through as
// "unavailable" the way it does during an outage.
func TestUnknownDIDFailsStrict(t *testing.T) {
	ctx := context.Background()
	a, plc, v := setup(t)
	msg := body(t, a.commit(nil, change{text: "x"}))
	plc.mu.Lock()
	plc.docs = map[string]json.RawMessage{}
	plc.mu.Unlock()
	if got := reasonOf(t, v.CheckCommit(ctx, msg)); got != ReasonNoKey {
		t.Errorf("reason %q, want %q", got, ReasonNoKey)
	}
	if err := v.Commit(ctx, msg); err == nil {
		t.Error("strict mode accepted a commit from a DID the PLC does not know")
	}
}
