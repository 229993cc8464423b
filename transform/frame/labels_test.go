package frame_test

import (
	"bytes"
	"testing"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/labeling"

	"github.com/atkafka/atkafka/transform/dagcbor"
	"github.com/atkafka/atkafka/transform/frame"
)

// A #labels frame decodes into its labels, and a label's Unsigned bytes are what indigo's labeler signs, so the
// signature verifies over them.
func TestLabelsFrame(t *testing.T) {
	key, err := atcrypto.GeneratePrivateKeyK256()
	must(t, err)
	exp, cid := "2030-01-01T00:00:00.000Z", "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"
	neg := true
	signed := []labeling.Label{
		{SourceDID: "did:plc:labeler", URI: "did:plc:alice", Val: "spam", CreatedAt: "2026-07-04T14:38:08.999Z", Version: 1},
		{SourceDID: "did:plc:labeler", URI: "at://did:plc:bob/app.bsky.feed.post/3k", CID: &cid, Val: "!hide",
			CreatedAt: "2026-07-04T14:38:09.000Z", ExpiresAt: &exp, Negated: &neg, Version: 1},
	}
	var lex []*comatproto.LabelDefs_Label
	for i := range signed {
		must(t, signed[i].Sign(key))
		l := signed[i].ToLexicon()
		lex = append(lex, &l)
	}
	var f frame.Frame
	must(t, f.Decode(message(t, 1, "#labels", &comatproto.LabelSubscribeLabels_Labels{Seq: 42, Labels: lex})))
	if f.Kind != frame.KindLabels || f.Labels.Seq != 42 || len(f.Labels.Labels) != 2 {
		t.Fatalf("labels frame: kind %s, %+v", f.Kind, f.Labels)
	}
	pub, err := key.PublicKey()
	must(t, err)
	for i, got := range f.Labels.Labels {
		want := signed[i]
		if got.Err != nil || string(got.Src) != want.SourceDID || string(got.URI) != want.URI || string(got.Val) != want.Val ||
			string(got.Cts) != want.CreatedAt || got.Ver != 1 || got.Neg != (want.Negated != nil) || !bytes.Equal(got.Sig, want.Sig) {
			t.Errorf("label %d: %+v", i, got)
		}
		if (want.CID != nil) != (got.CID != nil) || (want.ExpiresAt != nil) != (got.Exp != nil) {
			t.Errorf("label %d: cid %q exp %q", i, got.CID, got.Exp)
		}
		unsigned, err := want.UnsignedBytes()
		must(t, err)
		if u := got.Unsigned(nil); !bytes.Equal(u, unsigned) {
			t.Errorf("label %d: unsigned bytes\n%x\nwant\n%x", i, u, unsigned)
		}
		if err := pub.HashAndVerify(got.Unsigned(nil), got.Sig); err != nil {
			t.Errorf("label %d: signature: %v", i, err)
		}
	}
	// A frame without seq or labels is malformed.
	if err := f.Decode(message(t, 1, "#labels", &comatproto.SyncSubscribeRepos_Info{Name: "x"})); err == nil {
		t.Error("a #labels body without seq and labels decoded")
	}
}

// FuzzLabels: whatever a labeler sends, decoding never panics, and a label's Unsigned bytes are one whole
// DAG-CBOR item.
func FuzzLabels(f *testing.F) {
	key, err := atcrypto.GeneratePrivateKeyK256()
	if err != nil {
		f.Fatal(err)
	}
	l := labeling.Label{SourceDID: "did:plc:l", URI: "did:plc:a", Val: "spam", CreatedAt: "2026-07-04T14:38:08.999Z", Version: 1}
	if err := l.Sign(key); err != nil {
		f.Fatal(err)
	}
	lex := l.ToLexicon()
	f.Add(message(f, 1, "#labels", &comatproto.LabelSubscribeLabels_Labels{Seq: 1, Labels: []*comatproto.LabelDefs_Label{&lex}}))
	f.Fuzz(func(t *testing.T, msg []byte) {
		var fr frame.Frame
		if fr.Decode(msg) != nil || fr.Kind != frame.KindLabels {
			return
		}
		for _, l := range fr.Labels.Labels {
			u := l.Unsigned(nil)
			d := dagcbor.NewDecoder(u)
			if err := d.Skip(); err != nil || len(d.Remaining()) != 0 {
				t.Fatalf("unsigned bytes %x of label %x: %v", u, l.Raw, err)
			}
		}
	})
}
