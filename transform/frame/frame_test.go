package frame_test

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	lexutil "github.com/bluesky-social/indigo/lex/util"
	"github.com/ipfs/go-cid"
	cbg "github.com/whyrusleeping/cbor-gen"

	"github.com/atkafka/atkafka/transform/frame"
)

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func writeText(t testing.TB, cw *cbg.CborWriter, s string) {
	must(t, cw.WriteMajorTypeHeader(cbg.MajTextString, uint64(len(s))))
	_, err := cw.WriteString(s)
	must(t, err)
}

// message builds a frame: a header {op, t} (t omitted when empty) then a body marshalled by indigo's
// cbor-gen encoders.
func message(t testing.TB, op int64, typ string, body interface{ MarshalCBOR(io.Writer) error }) []byte {
	t.Helper()
	var buf bytes.Buffer
	cw := cbg.NewCborWriter(&buf)
	n := uint64(2)
	if typ == "" {
		n = 1
	}
	must(t, cw.WriteMajorTypeHeader(cbg.MajMap, n))
	writeText(t, cw, "op")
	if op >= 0 {
		must(t, cw.WriteMajorTypeHeader(cbg.MajUnsignedInt, uint64(op)))
	} else {
		must(t, cw.WriteMajorTypeHeader(cbg.MajNegativeInt, uint64(-op-1)))
	}
	if typ != "" {
		writeText(t, cw, "t")
		writeText(t, cw, typ)
	}
	must(t, body.MarshalCBOR(&buf))
	return buf.Bytes()
}

func ptr[T any](v T) *T { return &v }

func TestSmallEvents(t *testing.T) {
	var f frame.Frame

	must(t, f.Decode(message(t, 1, "#sync", &comatproto.SyncSubscribeRepos_Sync{
		Did: "did:plc:a", Blocks: []byte{1, 2}, Rev: "3k", Seq: 7, Time: "2026-01-01T00:00:00Z"})))
	if f.Kind != frame.KindSync || string(f.Sync.DID) != "did:plc:a" || !bytes.Equal(f.Sync.Blocks, []byte{1, 2}) ||
		string(f.Sync.Rev) != "3k" || f.Sync.Seq != 7 || string(f.Sync.Time) != "2026-01-01T00:00:00Z" {
		t.Errorf("sync: %+v", f.Sync)
	}

	must(t, f.Decode(message(t, 1, "#info", &comatproto.SyncSubscribeRepos_Info{Name: "OutdatedCursor", Message: ptr("too old")})))
	if f.Kind != frame.KindInfo || string(f.Info.Name) != "OutdatedCursor" || string(f.Info.Message) != "too old" {
		t.Errorf("info: %+v", f.Info)
	}
	must(t, f.Decode(message(t, 1, "#info", &comatproto.SyncSubscribeRepos_Info{Name: "X"})))
	if f.Info.Message != nil {
		t.Errorf("info message %q, want nil", f.Info.Message)
	}

	must(t, f.Decode(message(t, 1, "#account", &comatproto.SyncSubscribeRepos_Account{
		Did: "did:plc:b", Active: false, Status: ptr("takendown"), Seq: 9, Time: "t"})))
	if f.Kind != frame.KindAccount || f.Account.Active || string(f.Account.Status) != "takendown" || f.Account.Seq != 9 {
		t.Errorf("account: %+v", f.Account)
	}

	must(t, f.Decode(message(t, 1, "#identity", &comatproto.SyncSubscribeRepos_Identity{
		Did: "did:plc:c", Handle: ptr("alice.test"), Seq: 10, Time: "t"})))
	if f.Kind != frame.KindIdentity || string(f.Identity.Handle) != "alice.test" || f.Identity.Seq != 10 {
		t.Errorf("identity: %+v", f.Identity)
	}

	must(t, f.Decode(message(t, -1, "", &errorBody{"FutureCursor", "cursor in the future"})))
	if f.Kind != frame.KindError || string(f.Error.Error) != "FutureCursor" || string(f.Error.Message) != "cursor in the future" {
		t.Errorf("error frame: %+v", f.Error)
	}

	must(t, f.Decode(message(t, 1, "#future", &comatproto.SyncSubscribeRepos_Info{Name: "whatever"})))
	if f.Kind != frame.KindUnknown || string(f.Type) != "#future" {
		t.Errorf("unknown type: kind %s, type %q", f.Kind, f.Type)
	}
}

// errorBody is an error frame's body; indigo has no cbor-gen type for it.
type errorBody struct{ err, msg string }

func (e *errorBody) MarshalCBOR(w io.Writer) error {
	cw := cbg.NewCborWriter(w)
	if err := cw.WriteMajorTypeHeader(cbg.MajMap, 2); err != nil {
		return err
	}
	for _, s := range []string{"error", e.err, "message", e.msg} {
		if err := cw.WriteMajorTypeHeader(cbg.MajTextString, uint64(len(s))); err != nil {
			return err
		}
		if _, err := cw.WriteString(s); err != nil {
			return err
		}
	}
	return nil
}

// rawBody is a body given as CBOR bytes.
type rawBody []byte

func (r rawBody) MarshalCBOR(w io.Writer) error { _, err := w.Write(r); return err }

func TestMalformed(t *testing.T) {
	info := &comatproto.SyncSubscribeRepos_Info{Name: "x"}
	cases := map[string][]byte{
		"empty":            nil,
		"header not a map": {0x01},
		"unknown op":       message(t, 2, "#info", info),
		"op 1 without t":   message(t, 1, "", info),
		"trailing bytes":   append(message(t, 1, "#info", info), 0x00),
		"no body":          message(t, 1, "#info", rawBody(nil)),
		"body not a map":   message(t, 1, "#info", rawBody{0x01}),
		"missing name":     message(t, 1, "#info", rawBody{0xa0}),
		"wrong type":       message(t, 1, "#identity", &comatproto.SyncSubscribeRepos_Info{Name: "x"}),
		"bad UTF-8":        message(t, 1, "#info", rawBody{0xa1, 0x64, 'n', 'a', 'm', 'e', 0x61, 0xff}),
		"float in body":    message(t, 1, "#info", rawBody{0xa2, 0x64, 'n', 'a', 'm', 'e', 0x61, 'x', 0x61, 'z', 0xf9, 0, 0}),
		"huge body length": message(t, 1, "#info", rawBody{0xa1, 0x64, 'n', 'a', 'm', 'e', 0x7b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}),
	}
	var f frame.Frame
	for name, msg := range cases {
		if err := f.Decode(msg); err == nil {
			t.Errorf("%s: accepted as %s", name, f.Kind)
		}
	}
}

// corpusCommit returns the first corpus commit with a create, decoded by cbor-gen for editing.
func corpusCommit(t *testing.T) *comatproto.SyncSubscribeRepos_Commit {
	t.Helper()
	for _, msg := range loadFrames(t) {
		var f frame.Frame
		must(t, f.Decode(msg))
		if f.Kind == frame.KindCommit && f.Commit.Ops[0].Action == frame.ActionCreate {
			var c comatproto.SyncSubscribeRepos_Commit
			must(t, c.UnmarshalCBOR(body(t, msg)))
			return &c
		}
	}
	t.Fatal("no create in the corpus")
	return nil
}

func firstOp(t *testing.T, c *comatproto.SyncSubscribeRepos_Commit) (frame.RecordOp, error) {
	t.Helper()
	var f frame.Frame
	must(t, f.Decode(message(t, 1, "#commit", c)))
	var recs frame.Records
	for op, err := range recs.Ops(&f.Commit) {
		return op, err
	}
	t.Fatal("no op")
	return frame.RecordOp{}, nil
}

func TestRecordErrors(t *testing.T) {
	c := corpusCommit(t)
	if _, err := firstOp(t, c); err != nil {
		t.Fatalf("unchanged commit: %v", err)
	}

	missing := *c
	op := *c.Ops[0]
	absent, err := cid.V1Builder{Codec: cid.DagCBOR, MhType: 0x12}.Sum([]byte("not in the CAR"))
	must(t, err)
	op.Cid = ptr(lexutil.LexLink(absent))
	missing.Ops = []*comatproto.SyncSubscribeRepos_RepoOp{&op}
	rec, err := firstOp(t, &missing)
	if !errors.Is(err, frame.ErrRecordMissing) {
		t.Errorf("missing record: %v", err)
	}
	if string(rec.CID) != absent.String() || string(rec.Collection) == "" || rec.Record != nil {
		t.Errorf("missing record: op %+v", rec)
	}

	noCID := *c
	op2 := *c.Ops[0]
	op2.Cid = nil
	noCID.Ops = []*comatproto.SyncSubscribeRepos_RepoOp{&op2}
	if _, err := firstOp(t, &noCID); !errors.Is(err, frame.ErrInvalidOp) {
		t.Errorf("create without CID: %v", err)
	}

	for _, path := range []string{"nocollection", "/rkey", "coll/", "a/b/c"} {
		badPath := *c
		op3 := *c.Ops[0]
		op3.Path = path
		badPath.Ops = []*comatproto.SyncSubscribeRepos_RepoOp{&op3}
		if _, err := firstOp(t, &badPath); !errors.Is(err, frame.ErrInvalidOp) {
			t.Errorf("path %q: %v", path, err)
		}
	}

	badCAR := *c
	badCAR.Blocks = []byte{0x05, 0x01}
	if _, err := firstOp(t, &badCAR); !errors.Is(err, frame.ErrInvalidCAR) || !strings.Contains(err.Error(), "CAR") {
		t.Errorf("bad CAR: %v", err)
	}
}

func TestUnknownAction(t *testing.T) {
	c := corpusCommit(t)
	op := *c.Ops[0]
	op.Action = "move"
	c.Ops = []*comatproto.SyncSubscribeRepos_RepoOp{&op}
	var f frame.Frame
	if err := f.Decode(message(t, 1, "#commit", c)); err == nil || !strings.Contains(err.Error(), "move") {
		t.Errorf("unknown action: %v", err)
	}
}

func TestSyncCommitCID(t *testing.T) {
	c := corpusCommit(t)
	var f frame.Frame
	must(t, f.Decode(message(t, 1, "#sync", &comatproto.SyncSubscribeRepos_Sync{
		Did: c.Repo, Blocks: c.Blocks, Rev: c.Rev, Seq: 1, Time: c.Time})))
	got, err := f.Sync.CommitCID()
	if err != nil || got.String() != cid.Cid(c.Commit).String() {
		t.Errorf("CommitCID() = %v, %v; want %s", got, err, cid.Cid(c.Commit))
	}
	f.Sync.Blocks = []byte{1}
	if _, err := f.Sync.CommitCID(); !errors.Is(err, frame.ErrInvalidCAR) {
		t.Errorf("bad CAR: %v", err)
	}
}
