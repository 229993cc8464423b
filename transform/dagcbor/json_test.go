package dagcbor_test

import (
	"errors"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/multiformats/go-multibase"

	"github.com/atkafka/atkafka/transform/dagcbor"
)

// TestCorpusBlocksMatchAtdata transcodes every block of the capture (records, MST nodes, commits).
func TestCorpusBlocksMatchAtdata(t *testing.T) {
	blocks := corpusBlocks(t)
	for i, b := range blocks {
		want, err := viaAtdata(b)
		if err != nil {
			t.Fatalf("block %d: atdata: %v", i, err)
		}
		got, err := dagcbor.AppendJSON(nil, b)
		if err != nil {
			t.Fatalf("block %d: %v", i, err)
		}
		if !jsonEqual(t, got, want) {
			t.Fatalf("block %d:\n got %s\nwant %s", i, got, want)
		}
	}
	t.Logf("%d blocks", len(blocks))
}

var (
	edgeInts = []int64{0, 1, 23, 24, 255, 256, 65535, 65536, 1<<32 - 1, 1 << 32, 1<<53 + 1, math.MaxInt64,
		-1, -24, -25, -256, -257, -65537, -1 << 32, math.MinInt64 + 1, math.MinInt64}
	runePool = []rune("abcXYZ09 \"\\/\n\r\t\b\f\x00\x01\x1f\x7fé日😀\u2028\u2029<>&$")
)

type gen struct {
	t *testing.T
	r *rand.Rand
}

func (g gen) string(maxLen int) string {
	var sb strings.Builder
	for range g.r.IntN(maxLen + 1) {
		sb.WriteRune(runePool[g.r.IntN(len(runePool))])
	}
	return sb.String()
}

// value appends a random value; maps get distinct keys, sorted canonically unless shuffle says otherwise.
func (g gen) value(e enc, depth int) enc {
	k := g.r.IntN(10)
	if depth >= 4 && k >= 8 {
		k = g.r.IntN(8)
	}
	switch k {
	case 0:
		return e.int(edgeInts[g.r.IntN(len(edgeInts))])
	case 1:
		return e.int(g.r.Int64() - g.r.Int64())
	case 2, 3:
		return e.text(g.string(20))
	case 4:
		b := make([]byte, g.r.IntN(40))
		for i := range b {
			b[i] = byte(g.r.Uint32())
		}
		return e.bytes(b)
	case 5:
		switch g.r.IntN(3) {
		case 0:
			return e.link(testCID(g.t, g.string(8), 0, 0))
		case 1:
			return e.link(testCID(g.t, g.string(8), 1, 0x55))
		}
		return e.link(testCID(g.t, g.string(8), 1, 0x71))
	case 6:
		return append(e, []byte{0xf4, 0xf5, 0xf6}[g.r.IntN(3)])
	case 7:
		if depth > 0 && g.r.IntN(4) == 0 {
			return e.text("")
		}
		return e.int(int64(g.r.IntN(100)))
	case 8:
		n := g.r.IntN(6)
		e = e.arrn(n)
		for range n {
			e = g.value(e, depth+1)
		}
		return e
	}
	return g.mapValue(e, depth)
}

func (g gen) mapValue(e enc, depth int) enc {
	n := g.r.IntN(7)
	keys := map[string]bool{}
	for len(keys) < n {
		key := g.string(6)
		if g.r.IntN(8) == 0 {
			key = "$type"
		}
		keys[key] = true
	}
	sorted := make([]string, 0, n)
	for k := range keys {
		sorted = append(sorted, k)
	}
	slices.SortFunc(sorted, func(a, b string) int {
		if len(a) != len(b) {
			return len(a) - len(b)
		}
		return strings.Compare(a, b)
	})
	if g.r.IntN(5) == 0 {
		g.r.Shuffle(len(sorted), func(i, j int) { sorted[i], sorted[j] = sorted[j], sorted[i] })
	}
	e = e.mapn(n)
	for _, k := range sorted {
		e = e.text(k)
		if k == "$type" {
			e = e.text("app.test." + g.string(3))
			continue
		}
		e = g.value(e, depth+1)
	}
	return e
}

// TestGeneratedMatchAtdata checks random values of every kind against atdata, including accept/reject.
func TestGeneratedMatchAtdata(t *testing.T) {
	g := gen{t: t, r: rand.New(rand.NewPCG(1, 2))}
	n := 5000
	if testing.Short() {
		n = 500
	}
	for i := range n {
		b := g.mapValue(nil, 0)
		want, werr := viaAtdata(b)
		got, err := dagcbor.AppendJSON(nil, b)
		if (err != nil) != (werr != nil) {
			t.Fatalf("value %d % x: error %v, atdata error %v", i, b, err, werr)
		}
		if err == nil && !jsonEqual(t, got, want) {
			t.Fatalf("value %d % x:\n got %s\nwant %s", i, b, got, want)
		}
	}
}

func mapOf(kv ...func(enc) enc) enc {
	e := enc(nil).mapn(len(kv))
	for _, f := range kv {
		e = f(e)
	}
	return e
}

func kv(k string, v func(enc) enc) func(enc) enc { return func(e enc) enc { return v(e.text(k)) } }
func txt(s string) func(enc) enc                 { return func(e enc) enc { return e.text(s) } }
func num(v int64) func(enc) enc                  { return func(e enc) enc { return e.int(v) } }
func raw(b ...byte) func(enc) enc                { return func(e enc) enc { return append(e, b...) } }
func sub(m enc) func(enc) enc                    { return func(e enc) enc { return append(e, m...) } }

// TestSpecialKeysMatchAtdata covers atdata's rules for $type, $link, $bytes, blobs and legacy blobs.
func TestSpecialKeysMatchAtdata(t *testing.T) {
	ref := testCID(t, "blob", 1, 0x55)
	link := func(e enc) enc { return e.link(ref) }
	v1b58, err := ref.StringOfBase(multibase.Base58BTC)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		in   enc
	}{
		{"blob", mapOf(kv("ref", link), kv("size", num(12)), kv("$type", txt("blob")), kv("mimeType", txt("image/png")))},
		{"blob ref as $link map", mapOf(kv("ref", sub(mapOf(kv("$link", txt(ref.String()))))), kv("size", num(1)), kv("$type", txt("blob")), kv("mimeType", txt("a/b")))},
		{"blob extra field", mapOf(kv("a", num(1)), kv("ref", link), kv("size", num(12)), kv("$type", txt("blob")), kv("mimeType", txt("image/png")))},
		{"blob missing size", mapOf(kv("ref", link), kv("$type", txt("blob")), kv("mimeType", txt("image/png")))},
		{"blob text size", mapOf(kv("ref", link), kv("size", txt("1")), kv("$type", txt("blob")), kv("mimeType", txt("x")))},
		{"blob text ref", mapOf(kv("ref", txt(ref.String())), kv("size", num(1)), kv("$type", txt("blob")), kv("mimeType", txt("x")))},
		{"blob int mimeType", mapOf(kv("ref", link), kv("size", num(1)), kv("$type", txt("blob")), kv("mimeType", num(3)))},
		{"blob wrong fourth key", mapOf(kv("ref", link), kv("size", num(1)), kv("$type", txt("blob")), kv("mimeTyp", txt("x")))},
		{"$type int", mapOf(kv("$type", num(1)))},
		{"$type empty", mapOf(kv("$type", txt("")))},
		{"$type null", mapOf(kv("$type", raw(0xf6)))},
		{"$type ok", mapOf(kv("a", num(1)), kv("$type", txt("app.bsky.feed.post")))},
		{"$link string", mapOf(kv("x", sub(mapOf(kv("$link", txt(ref.String()))))))},
		{"$link base58 v1", mapOf(kv("x", sub(mapOf(kv("$link", txt(v1b58))))))},
		{"$link invalid", mapOf(kv("x", sub(mapOf(kv("$link", txt("nope"))))))},
		{"$link two fields", mapOf(kv("x", sub(mapOf(kv("a", num(1)), kv("$link", txt(ref.String()))))))},
		{"$link as link", mapOf(kv("x", sub(mapOf(kv("$link", link)))))},
		{"$bytes", mapOf(kv("x", sub(mapOf(kv("$bytes", txt("AAEC"))))))},
		{"$bytes non-canonical", mapOf(kv("x", sub(mapOf(kv("$bytes", txt("AAF"))))))},
		{"$bytes padded", mapOf(kv("x", sub(mapOf(kv("$bytes", txt("AA=="))))))},
		{"$bytes int", mapOf(kv("x", sub(mapOf(kv("$bytes", num(1))))))},
		{"legacy blob", mapOf(kv("cid", txt(ref.String())), kv("mimeType", txt("image/jpeg")))},
		{"legacy blob base58 v1", mapOf(kv("cid", txt(v1b58)), kv("mimeType", txt("image/jpeg")))},
		{"legacy blob link", mapOf(kv("cid", link), kv("mimeType", txt("image/jpeg")))},
		{"legacy blob bad cid", mapOf(kv("cid", txt("bad")), kv("mimeType", txt("x")))},
		{"legacy blob int mimeType", mapOf(kv("cid", txt(ref.String())), kv("mimeType", num(1)))},
		{"strong ref", mapOf(kv("cid", txt(ref.String())), kv("uri", txt("at://x")))},
		{"cid and mimeType among three", mapOf(kv("a", num(1)), kv("cid", txt("bad")), kv("mimeType", num(1)))},
		{"unsorted keys", mapOf(kv("bb", num(1)), kv("a", num(2)), kv("c", num(3)))},
		{"unsorted duplicate", mapOf(kv("bb", num(1)), kv("a", num(2)), kv("bb", num(3)))},
		{"sorted duplicate", mapOf(kv("a", num(1)), kv("a", num(2)))},
		{"empty bytes", mapOf(kv("a", func(e enc) enc { return e.bytes(nil) }))},
		{"empty map and array", mapOf(kv("a", raw(0xa0)), kv("b", raw(0x80)))},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := mapOf(kv("x", sub(tc.in))) // atdata wants a map at the top
			want, werr := viaAtdata(in)
			got, err := dagcbor.AppendJSON(nil, in)
			if (err != nil) != (werr != nil) {
				t.Fatalf("error %v, atdata error %v", err, werr)
			}
			if err == nil && !jsonEqual(t, got, want) {
				t.Fatalf("got %s, atdata %s", got, want)
			}
		})
	}
}

// TestEncoding pins exact output bytes, where JSON equality would hide escaping or number formatting.
func TestEncoding(t *testing.T) {
	v0 := testCID(t, "v0", 0, 0)
	v1 := testCID(t, "v1", 1, 0x71)
	cases := []struct {
		in   enc
		want string
	}{
		{enc(nil).text("a\"b\\c\n\r\t\b\f\x00\x1f\x7f/é😀<&"), `"a\"b\\c\n\r\t\b\f\u0000\u001f` + "\x7f/é😀<&\""},
		{enc(nil).int(math.MinInt64), "-9223372036854775808"},
		{enc(nil).int(math.MaxInt64), "9223372036854775807"},
		{enc(nil).bytes([]byte{0xfb, 0xff}), `{"$bytes":"+/8"}`},
		{enc(nil).bytes(nil), `{"$bytes":""}`},
		{enc(nil).link(v0), `{"$link":"` + v0.String() + `"}`},
		{enc(nil).link(v1), `{"$link":"` + v1.String() + `"}`},
		{enc(nil).arrn(3).int(1).text("x").append(0xf6), `[1,"x",null]`},
		{mapOf(kv("b", raw(0xf5)), kv("aa", raw(0xf4))), `{"b":true,"aa":false}`},
	}
	for _, tc := range cases {
		got, err := dagcbor.AppendJSON([]byte("prefix:"), tc.in)
		if err != nil {
			t.Fatalf("% x: %v", tc.in, err)
		}
		if string(got) != "prefix:"+tc.want {
			t.Errorf("% x:\n got %s\nwant prefix:%s", tc.in, got, tc.want)
		}
	}
}

func (e enc) append(b ...byte) enc { return append(e, b...) }

func nested(depth int) enc {
	var e enc
	for range depth {
		e = e.arrn(1)
	}
	return e.int(1)
}

// TestRejects checks that every kind of invalid input gives an *Error, without panicking and without
// allocating in proportion to a forged length.
func TestRejects(t *testing.T) {
	v1 := testCID(t, "x", 1, 0x71)
	big := make(enc, 0, dagcbor.MaxRecordSize+10)
	big = big.bytes(make([]byte, dagcbor.MaxRecordSize))
	cases := []struct {
		name, reason string
		in           enc
	}{
		{"empty", "end of input", nil},
		{"float16", "float", enc{0xf9, 0x3c, 0x00}},
		{"float32", "float", enc{0xfa, 0x3f, 0x80, 0, 0}},
		{"float64", "float", mapOf(kv("a", raw(0xfb, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0)))},
		{"undefined", "undefined", enc{0xf7}},
		{"simple value", "simple value", enc{0xf0}},
		{"simple value 1 byte", "simple value", enc{0xf8, 0x20}},
		{"break", "break", enc{0xff}},
		{"reserved info", "reserved", enc{0x1c}},
		{"indefinite map", "indefinite", enc{0xbf, 0x61, 'a', 0x01, 0xff}},
		{"indefinite array", "indefinite", enc{0x9f, 0x01, 0xff}},
		{"indefinite bytes", "indefinite", enc{0x5f, 0x41, 0x00, 0xff}},
		{"indefinite text", "indefinite", enc{0x7f, 0x61, 'a', 0xff}},
		{"tag 1", "tag 1", enc{0xc1, 0x01}},
		{"tag 42 over text", "byte string", enc(nil).head(6, 42).text("x")},
		{"link without 0x00", "0x00", enc(nil).head(6, 42).bytes(v1.Bytes())},
		{"link empty", "0x00", enc(nil).head(6, 42).bytes(nil)},
		{"link bad CID", "invalid CID", enc(nil).head(6, 42).bytes([]byte{0, 1, 0x71, 0x12, 0x20, 1})},
		{"link trailing", "invalid CID", enc(nil).head(6, 42).bytes(append(append([]byte{0}, v1.Bytes()...), 7))},
		{"link version 2", "invalid CID", enc(nil).head(6, 42).bytes([]byte{0, 2, 0x71, 0x12, 1, 1})},
		{"int key", "not a text string", enc{0xa1, 0x01, 0x01}},
		{"bytes key", "not a text string", enc{0xa1, 0x41, 'a', 0x01}},
		{"duplicate key", "duplicate", mapOf(kv("a", num(1)), kv("a", num(2)))},
		{"duplicate unsorted key", "duplicate", mapOf(kv("b", num(1)), kv("a", num(2)), kv("b", num(2)))},
		{"uint above int64", "overflows", enc(nil).head(0, math.MaxInt64+1)},
		{"negint below int64", "overflows", enc(nil).head(1, math.MaxInt64+1)},
		{"invalid UTF-8", "UTF-8", enc(nil).text("\xff")},
		{"surrogate", "UTF-8", enc(nil).text("\xed\xa0\x80")},
		{"invalid UTF-8 key", "UTF-8", mapOf(kv("\xc3", num(1)))},
		{"huge bytes", "exceeds remaining", enc(nil).head(2, math.MaxUint64)},
		{"huge text", "exceeds remaining", enc(nil).head(3, 1<<40)},
		{"huge array", "exceeds remaining", enc(nil).head(4, 1<<62)},
		{"huge map", "exceeds remaining", enc(nil).head(5, 1<<31)},
		{"truncated text", "exceeds remaining", enc(nil).head(3, 5).append('a')},
		{"truncated head", "truncated", enc{0x19, 0x01}},
		{"truncated map", "exceeds remaining", enc{0xa2, 0x61, 'a', 0x01, 0x61}},
		{"missing map value", "end of input", enc{0xa2, 0x61, 'a', 0x01, 0x61, 'b'}},
		{"too deep", "nesting", nested(dagcbor.MaxDepth + 1)},
		{"trailing bytes", "trailing", enc{0x01, 0x02}},
		{"too large", "larger than", big},
		{"long key", "map key of", mapOf(kv(strings.Repeat("k", dagcbor.MaxKeyLen+1), num(1)))},
		{"negative blob size", "blob size", mapOf(kv("ref", func(e enc) enc { return e.link(v1) }), kv("size", num(-1)), kv("$type", txt("blob")), kv("mimeType", txt("x")))},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var ms0, ms1 runtime.MemStats
			runtime.ReadMemStats(&ms0)
			out, err := dagcbor.AppendJSON([]byte("keep"), tc.in)
			runtime.ReadMemStats(&ms1)
			var de *dagcbor.Error
			if !errors.As(err, &de) {
				t.Fatalf("got %q, %v; want a *dagcbor.Error", out, err)
			}
			if !strings.Contains(de.Reason, tc.reason) {
				t.Errorf("error %q does not mention %q", err, tc.reason)
			}
			if string(out) != "keep" {
				t.Errorf("dst not restored: %q", out)
			}
			if grown := ms1.TotalAlloc - ms0.TotalAlloc; grown > 64<<10 {
				t.Errorf("allocated %d bytes rejecting it", grown)
			}
		})
	}
	if _, err := dagcbor.AppendJSON(nil, nested(dagcbor.MaxDepth)); err != nil {
		t.Errorf("nesting of exactly MaxDepth rejected: %v", err)
	}
}

// TestLinkString checks CID rendering against go-cid for both versions.
func TestLinkString(t *testing.T) {
	for i := range 200 {
		for _, c := range []struct {
			v     int
			codec uint64
		}{{0, 0}, {1, 0x71}, {1, 0x55}} {
			id := testCID(t, strings.Repeat("s", i), c.v, c.codec)
			l := dagcbor.Link(id.Bytes())
			if l.String() != id.String() {
				t.Fatalf("%s rendered as %s", id, l)
			}
			back, err := l.CID()
			if err != nil || !back.Equals(id) {
				t.Fatalf("CID() = %v, %v", back, err)
			}
		}
	}
}

// TestZeroAllocs checks that transcoding a record allocates nothing once dst has room.
func TestZeroAllocs(t *testing.T) {
	blocks := corpusBlocks(t)
	dst := make([]byte, 0, 1<<16)
	allocs := testing.AllocsPerRun(20, func() {
		for _, b := range blocks {
			if _, err := dagcbor.AppendJSON(dst[:0], b); err != nil {
				t.Fatal(err)
			}
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per pass over the corpus", allocs)
	}
}
