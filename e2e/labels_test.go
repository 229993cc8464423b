package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/api/atproto"
	"github.com/bluesky-social/indigo/atproto/labeling"
	"github.com/coder/websocket"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/atkafka/atkafka/schema/schematest"
	"github.com/atkafka/atkafka/source/labels/labelstest"
	"github.com/atkafka/atkafka/testenv"
	"github.com/atkafka/atkafka/transform/frame"
)

// lexLabel is com.atproto.label.defs#label as JSON, as queryLabels answers and as the label records carry it.
type lexLabel struct {
	Ver int64  `json:"ver"`
	Src string `json:"src"`
	URI string `json:"uri"`
	CID string `json:"cid,omitempty"`
	Val string `json:"val"`
	Neg bool   `json:"neg,omitempty"`
	Cts string `json:"cts"`
	Exp string `json:"exp,omitempty"`
	Sig struct {
		Bytes string `json:"$bytes"`
	} `json:"sig"`
}

// labelEvent is a label record's value.
type labelEvent struct {
	DID           string          `json:"did"`
	Timestamp     string          `json:"timestamp"`
	EventMetadata json.RawMessage `json:"eventMetadata"`
	Label         struct {
		lexLabel
		Labeler string `json:"labeler"`
		Seq     int64  `json:"seq"`
	} `json:"label"`
}

// labelsRun follows the output and dead-letter topics of the labels command.
type labelsRun struct {
	t         *testing.T
	out, dead *kgo.Client
	recs      []labelRecord
	deads     []*kgo.Record
}

type labelRecord struct {
	key, labeler string
	seq          int64
	ev           labelEvent
}

func followLabels(t *testing.T, brokers, topic string) *labelsRun {
	t.Helper()
	r := &labelsRun{t: t}
	for _, c := range []struct {
		cl    **kgo.Client
		topic string
	}{{&r.out, topic}, {&r.dead, topic + ".deadletter"}} {
		cl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(brokers, ",")...), kgo.ConsumeTopics(c.topic),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(200*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cl.Close)
		*c.cl = cl
	}
	return r
}

// poll adds what arrived within a short while.
func (r *labelsRun) poll() {
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	r.out.PollFetches(ctx).EachRecord(func(kr *kgo.Record) {
		schematest.Check(r.t, schematest.LabelEvent, kr.Value)
		rec := labelRecord{key: string(kr.Key)}
		for _, h := range kr.Headers {
			switch h.Key {
			case "labeler":
				rec.labeler = string(h.Value)
			case "seq":
				fmt.Sscan(string(h.Value), &rec.seq)
			}
		}
		if err := json.Unmarshal(kr.Value, &rec.ev); err != nil {
			r.t.Fatalf("label record %s: %v", kr.Value, err)
		}
		r.recs = append(r.recs, rec)
	})
	ctx2, cancel2 := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel2()
	r.dead.PollFetches(ctx2).EachRecord(func(kr *kgo.Record) { r.deads = append(r.deads, kr) })
}

// of returns the records of labeler, in seq order (partitions interleave; within a subject they keep order).
func (r *labelsRun) of(labeler string) []labelRecord {
	var out []labelRecord
	for _, rec := range r.recs {
		if rec.labeler == labeler {
			out = append(out, rec)
		}
	}
	slices.SortStableFunc(out, func(a, b labelRecord) int { return int(a.seq - b.seq) })
	return out
}

// wait polls until cond holds.
func (r *labelsRun) wait(what string, cond func() error) {
	r.t.Helper()
	eventually(r.t, time.Minute, what, func() error {
		r.poll()
		return cond()
	})
}

// queryLabels is every label Ozone holds now (com.atproto.label.queryLabels), in id order.
func queryLabels(t *testing.T, env *testenv.DevEnv) []lexLabel {
	t.Helper()
	var page struct {
		Labels []lexLabel `json:"labels"`
	}
	if err := env.XRPC(testenv.XRPCRequest{Service: env.OzoneURL, NSID: "com.atproto.label.queryLabels",
		Params: url.Values{"uriPatterns": {"*"}, "limit": {"250"}}}, &page); err != nil {
		t.Fatal(err)
	}
	return page.Labels
}

// captureFrames reads Ozone's subscribeLabels from the start: its first n frames, exactly as sent.
func captureFrames(t *testing.T, env *testenv.DevEnv, n int) [][]byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	u := "ws" + strings.TrimPrefix(env.OzoneURL, "http") + "/xrpc/com.atproto.label.subscribeLabels?cursor=0"
	conn, _, err := websocket.Dial(ctx, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	var out [][]byte
	for len(out) < n {
		_, b, err := conn.Read(ctx)
		if err != nil {
			t.Fatalf("reading Ozone's subscribeLabels: %v", err)
		}
		out = append(out, b)
	}
	return out
}

// TestLabelsOzone runs atkafka labels against dev-env's Ozone (by DID) and a replay of frames captured from it
// (by host), with strict verification: labels applied and negated through Ozone's moderation API arrive with
// their subject as key and the fields queryLabels answers, signatures verify and a tampered label is
// dead-lettered; the replay labeler stopping holds up nothing; a restart resumes without repeating anything, a
// kill -9 and an Ozone restart lose nothing.
func TestLabelsOzone(t *testing.T) {
	t.Parallel()
	env := testenv.StartDevEnv(t, testenv.DevEnvOptions{Ozone: true})
	alice := env.CreateAccount(env.PDS[0], "alice")
	bob := env.CreateAccount(env.PDS[0], "bob")
	post, postCID := env.Post(bob, "hello")
	repo := func(did string) map[string]any {
		return map[string]any{"$type": "com.atproto.admin.defs#repoRef", "did": did}
	}
	record := map[string]any{"$type": "com.atproto.repo.strongRef", "uri": post, "cid": postCID}
	label := func(subject map[string]any, create, negate []string, extra ...any) {
		ev := map[string]any{"$type": "tools.ozone.moderation.defs#modEventLabel", "createLabelVals": create, "negateLabelVals": negate}
		for i := 0; i+1 < len(extra); i += 2 {
			ev[extra[i].(string)] = extra[i+1]
		}
		env.EmitOzoneEvent(map[string]any{"event": ev, "subject": subject})
	}
	none := []string{}

	// Before atkafka runs: two labels, replayed with --labeler-cursor 0; the replay labeler serves the frames
	// captured from Ozone as they are, plus a copy of the first with its value changed after signing.
	label(repo(alice.DID), []string{"spam"}, none)
	label(record, []string{"!hide"}, none)
	replay := labelstest.NewServer(t, env.OzoneDID)
	var first frame.Label
	for i, raw := range captureFrames(t, env, 2) {
		var f frame.Frame
		if err := f.Decode(raw); err != nil || f.Kind != frame.KindLabels || f.Labels.Seq != int64(i+1) {
			t.Fatalf("captured frame %d: %v %+v", i, err, f.Labels)
		}
		replay.Add(raw)
		if i == 0 {
			first = f.Labels.Labels[0]
		}
	}
	tampered := atproto.LabelDefs_Label{Src: string(first.Src), Uri: string(first.URI), Val: "!takedown", Cts: string(first.Cts),
		Sig: first.Sig, Ver: &first.Ver}
	replay.Add(labelstest.Frame(t, &atproto.LabelSubscribeLabels_Labels{Seq: 3, Labels: []*atproto.LabelDefs_Label{&tampered}}))
	replayName := strings.TrimPrefix(replay.URL(), "ws://")

	args := []string{"labels", "--labeler", env.OzoneDID, "--labeler-host", replay.URL(), "--plc-host", env.PLCURL,
		"--plc-rate-limit", "-1", "--verify-labels", "strict", "--include-sig", "--shutdown-timeout", "5s"}
	p := startAtkafka(t, runConfig{Args: append(args, "--labeler-cursor", "0")})
	r := followLabels(t, p.Brokers, p.Topic)

	// Ozone keeps only the newest label per (src, uri, cid, val), under a new seq: a negation replaces the label
	// in what a replay sees. So the replay is read first, then labels are made live.
	r.wait("the replay of Ozone's two labels", func() error {
		if n := len(r.of(env.OzoneDID)); n < 2 {
			return fmt.Errorf("%d", n)
		}
		return nil
	})
	// Live: alice's label negated, and a label with an expiry on bob's account.
	label(repo(alice.DID), none, []string{"spam"})
	label(repo(bob.DID), []string{"rude"}, none, "durationInHours", 24)
	r.wait("Ozone's four labels", func() error {
		if n := len(r.of(env.OzoneDID)); n < 4 {
			return fmt.Errorf("%d", n)
		}
		return nil
	})
	got := r.of(env.OzoneDID)
	want := []struct {
		key, uri, val string
		neg, exp      bool
	}{{alice.DID, alice.DID, "spam", false, false}, {bob.DID, post, "!hide", false, false},
		{alice.DID, alice.DID, "spam", true, false}, {bob.DID, bob.DID, "rude", false, true}}
	for i, w := range want {
		g := got[i]
		l := g.ev.Label
		if g.key != w.key || g.ev.DID != w.key || l.URI != w.uri || l.Val != w.val || l.Neg != w.neg || (l.Exp != "") != w.exp ||
			l.Src != env.OzoneDID || l.Labeler != env.OzoneDID || l.Seq != g.seq || g.ev.Timestamp != l.Cts || l.Sig.Bytes == "" {
			t.Errorf("Ozone label %d: key %s seq %d %+v", i, g.key, g.seq, g.ev)
		}
		if !bytes.Contains(g.ev.EventMetadata, []byte(`"didDocument"`)) {
			t.Errorf("Ozone label %d: eventMetadata %s", i, g.ev.EventMetadata)
		}
	}
	if got[1].ev.Label.CID != postCID {
		t.Errorf("the post's label has cid %q, want %q", got[1].ev.Label.CID, postCID)
	}
	// Ozone keeps the newest label per (src, uri, cid, val): each is the last record of its kind, to the byte.
	checkQueryLabels(t, env, r)

	// The replay labeler: the captured frames verify with Ozone's real key; the tampered label does not.
	r.wait("the replay labeler's labels and dead letter", func() error {
		if n, d := len(r.of(replayName)), len(r.deads); n < 2 || d < 1 {
			return fmt.Errorf("%d records, %d dead letters", n, d)
		}
		return nil
	})
	if d := r.deads[0]; !bytes.Contains(d.Value, []byte(`"reason":"verify_failed"`)) || string(d.Key) != alice.DID {
		t.Errorf("dead letter: %s %s", d.Key, d.Value)
	}
	m, err := p.Metrics()
	if err != nil {
		t.Fatal(err)
	}
	if ok, bad := m.value("atkafka_label_verifications", `result="ok"`), m.value("atkafka_label_verifications", `result="failed"`); ok != 6 || bad != 1 {
		t.Errorf("label_verifications: %v ok, %v failed; want 6 and 1", ok, bad)
	}

	// The replay labeler goes down: Ozone's labels keep coming, and /readyz names the one that is down.
	replay.Stop()
	label(repo(alice.DID), []string{"porn"}, none)
	r.wait("a label while the other labeler is down", func() error { return lastVal(r, env.OzoneDID, "porn") })
	eventually(t, 30*time.Second, "/readyz naming the labeler that is down", func() error {
		_, body, err := p.get("/readyz")
		if err != nil {
			return err
		}
		var rep struct {
			Checks []struct {
				Name string `json:"name"`
				OK   bool   `json:"ok"`
			} `json:"checks"`
		}
		if err := json.Unmarshal(body, &rep); err != nil {
			return err
		}
		states := map[string]bool{}
		for _, c := range rep.Checks {
			states[c.Name] = c.OK
		}
		if up, down := states["labeler "+env.OzoneDID+" connected"], states["labeler "+replayName+" connected"]; !up || down {
			return fmt.Errorf("%s", body)
		}
		return nil
	})
	replay.Start()

	// A graceful restart resumes after the cursor: nothing is read twice.
	beforeStop := r.of(env.OzoneDID)
	lastBeforeStop := beforeStop[len(beforeStop)-1].seq
	p.Stop()
	label(repo(bob.DID), []string{"spam"}, none)
	p = startAtkafka(t, runConfig{Args: args, Topic: p.Topic, DataDir: p.DataDir})
	r.wait("the label made while atkafka was down", func() error { return lastVal(r, env.OzoneDID, "spam") })

	// kill -9 while labels are being made, then Ozone stopped and started again: nothing is lost.
	for i := range 6 {
		label(repo(alice.DID), []string{fmt.Sprintf("k%d", i)}, none)
		if i == 2 {
			p.Signal(syscall.SIGKILL)
			p.Wait(30 * time.Second)
		}
	}
	p = startAtkafka(t, runConfig{Args: args, Topic: p.Topic, DataDir: p.DataDir})
	r.wait("the labels made around the kill", func() error { return lastVal(r, env.OzoneDID, "k5") })
	label(repo(bob.DID), []string{"before-stop"}, none) // maybe not yet streamed when Ozone stops
	env.StopOzone()
	eventually(t, 30*time.Second, "the labeler seen down", func() error {
		m, err := p.Metrics()
		if err != nil {
			return err
		}
		if v := m.value("atkafka_labeler_connected", `labeler="`+env.OzoneDID+`"`); v != 0 {
			return fmt.Errorf("labeler_connected %v", v)
		}
		return nil
	})
	env.StartOzone()
	t.Log("Ozone restarted")
	label(repo(bob.DID), []string{"after-restart"}, none)
	r.wait("a label after Ozone's restart", func() error { return lastVal(r, env.OzoneDID, "after-restart") })
	if recs := r.of(env.OzoneDID); recs[len(recs)-2].ev.Label.Val != "before-stop" {
		t.Errorf("the label made as Ozone stopped is not right before the one after its restart: %+v", recs[len(recs)-2].ev.Label)
	}

	// Every label Ozone made is in Kafka, each once except what the killed run had read: between the graceful
	// restart and the kill (at most one persist interval of them was acknowledged and not yet saved).
	r.poll()
	seen := map[int64]int{}
	killedAfter := int64(0)
	for _, rec := range r.of(env.OzoneDID) {
		seen[rec.seq]++
		if rec.ev.Label.Val == "k2" {
			killedAfter = rec.seq
		}
	}
	repeated := 0
	for seq, n := range seen {
		if n > 1 {
			repeated += n - 1
			if seq <= lastBeforeStop || seq > killedAfter {
				t.Errorf("seq %d produced %d times: only seqs %d to %d, read by the killed run, may be", seq, n, lastBeforeStop+1, killedAfter)
			}
		}
	}
	checkQueryLabels(t, env, r)
	t.Logf("%d label records from Ozone (%d distinct seqs, %d repeated), %d from the replay labeler, %d dead letters",
		len(r.of(env.OzoneDID)), len(seen), repeated, len(r.of(replayName)), len(r.deads))
}

// lastVal is nil once labeler's newest record has value val.
func lastVal(r *labelsRun, labeler, val string) error {
	recs := r.of(labeler)
	if len(recs) == 0 || recs[len(recs)-1].ev.Label.Val != val {
		return fmt.Errorf("no %q yet among %d records", val, len(recs))
	}
	return nil
}

// checkQueryLabels checks that every label queryLabels returns is in Kafka, as the newest record of its (uri,
// cid, val), field for field and with the same signature.
func checkQueryLabels(t *testing.T, env *testenv.DevEnv, r *labelsRun) {
	t.Helper()
	newest := map[string]lexLabel{}
	for _, rec := range r.of(env.OzoneDID) {
		l := rec.ev.Label.lexLabel
		newest[l.URI+" "+l.CID+" "+l.Val] = l
	}
	for _, q := range queryLabels(t, env) {
		got, ok := newest[q.URI+" "+q.CID+" "+q.Val]
		if _, err := base64.RawStdEncoding.DecodeString(got.Sig.Bytes); err != nil || !ok || got != q {
			t.Errorf("queryLabels has %+v, Kafka %+v", q, got)
		}
	}
}

// TestLabelsExactlyOnce: with --exactly-once the labeler's cursor lives in the cursor topic, and a restart
// resumes from it: a read_committed consumer sees every label exactly once.
func TestLabelsExactlyOnce(t *testing.T) {
	t.Parallel()
	// Two labelers in one process: each gets a transactional producer and a cursor key of its own.
	one, two := labelstest.NewServer(t, "did:plc:replaylabeler"), labelstest.NewServer(t, "did:plc:secondlabeler")
	emit := func(s *labelstest.Server, vals ...string) {
		for _, v := range vals {
			s.Emit(labeling.Label{URI: "did:plc:subject", Val: v, CreatedAt: "2026-07-04T14:38:08.999Z"})
		}
	}
	emit(one, "a", "b", "c")
	emit(two, "x", "y")
	args := []string{"labels", "--labeler-host", one.URL(), "--labeler-host", two.URL(), "--exactly-once", "--enrich=false"}
	p := startAtkafka(t, runConfig{Args: append(args, "--labeler-cursor", "0")})
	committed := kgo.FetchIsolationLevel(kgo.ReadCommitted())
	testenv.ReadAll(t, p.Brokers, p.Topic, 5, time.Minute, committed)
	p.Stop()
	emit(one, "d", "e")
	emit(two, "z")
	p = startAtkafka(t, runConfig{Args: args, Topic: p.Topic, DataDir: p.DataDir})
	var vals []string
	for _, r := range testenv.ReadAll(t, p.Brokers, p.Topic, 8, time.Minute, committed) {
		var ev labelEvent
		if err := json.Unmarshal(r.Value, &ev); err != nil {
			t.Fatal(err)
		}
		vals = append(vals, ev.Label.Val)
	}
	slices.Sort(vals)
	if strings.Join(vals, "") != "abcdexyz" {
		t.Errorf("read_committed labels %v, want a to e and x to z once each", vals)
	}
}
