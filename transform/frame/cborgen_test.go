package frame_test

import (
	"bytes"
	"testing"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	lexutil "github.com/bluesky-social/indigo/lex/util"
	"github.com/ipfs/go-cid"
	cbg "github.com/whyrusleeping/cbor-gen"

	"github.com/atkafka/atkafka/transform/dagcbor"
	"github.com/atkafka/atkafka/transform/frame"
)

// body returns the reader positioned after the header, using cbor-gen so the split is independent of ours.
func body(t *testing.T, msg []byte) *bytes.Reader {
	t.Helper()
	r := bytes.NewReader(msg)
	if err := cbg.ScanForLinks(r, func(cid.Cid) {}); err != nil {
		t.Fatal(err)
	}
	return r
}

func optString(b []byte) *string {
	if b == nil {
		return nil
	}
	s := string(b)
	return &s
}

func linkString(l dagcbor.Link) string {
	if l == nil {
		return ""
	}
	return l.String()
}

func lexLinkString(l *lexutil.LexLink) string {
	if l == nil {
		return ""
	}
	return cid.Cid(*l).String()
}

func eqOpt(a, b *string) bool { return (a == nil) == (b == nil) && (a == nil || *a == *b) }

// TestMatchesCborGen compares every corpus frame with indigo's generated decoders.
func TestMatchesCborGen(t *testing.T) {
	var f frame.Frame
	for i, msg := range loadFrames(t) {
		if err := f.Decode(msg); err != nil {
			t.Fatal(err)
		}
		r := body(t, msg)
		switch f.Kind {
		case frame.KindCommit:
			var ref comatproto.SyncSubscribeRepos_Commit
			if err := ref.UnmarshalCBOR(r); err != nil {
				t.Fatal(err)
			}
			c := &f.Commit
			if string(c.Repo) != ref.Repo || string(c.Rev) != ref.Rev || !eqOpt(optString(c.Since), ref.Since) ||
				c.Commit.String() != cid.Cid(ref.Commit).String() || !bytes.Equal(c.Blocks, ref.Blocks) ||
				linkString(c.PrevData) != lexLinkString(ref.PrevData) || string(c.Time) != ref.Time ||
				c.Seq != ref.Seq || c.TooBig != ref.TooBig || len(c.Ops) != len(ref.Ops) {
				t.Fatalf("frame %d: commit differs from cbor-gen", i)
			}
			for j, op := range c.Ops {
				want := ref.Ops[j]
				if op.Action.String() != want.Action || string(op.Path) != want.Path ||
					linkString(op.CID) != lexLinkString(want.Cid) || linkString(op.Prev) != lexLinkString(want.Prev) {
					t.Fatalf("frame %d op %d: %+v, cbor-gen %+v", i, j, op, want)
				}
			}
		case frame.KindIdentity:
			var ref comatproto.SyncSubscribeRepos_Identity
			if err := ref.UnmarshalCBOR(r); err != nil {
				t.Fatal(err)
			}
			id := f.Identity
			if string(id.DID) != ref.Did || !eqOpt(optString(id.Handle), ref.Handle) || string(id.Time) != ref.Time || id.Seq != ref.Seq {
				t.Fatalf("frame %d: identity differs from cbor-gen", i)
			}
		case frame.KindAccount:
			var ref comatproto.SyncSubscribeRepos_Account
			if err := ref.UnmarshalCBOR(r); err != nil {
				t.Fatal(err)
			}
			a := f.Account
			if string(a.DID) != ref.Did || !eqOpt(optString(a.Status), ref.Status) || string(a.Time) != ref.Time ||
				a.Seq != ref.Seq || a.Active != ref.Active {
				t.Fatalf("frame %d: account differs from cbor-gen", i)
			}
		default:
			t.Fatalf("frame %d: unexpected kind %s", i, f.Kind)
		}
	}
}
