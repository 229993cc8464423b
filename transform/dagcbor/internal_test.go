package dagcbor

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"
)

// TestPlainWord checks the eight-byte fast path against the byte table, for every byte value in every
// position and for random words.
func TestPlainWord(t *testing.T) {
	check := func(x uint64) {
		var b [8]byte
		binary.LittleEndian.PutUint64(b[:], x)
		want := true
		for _, c := range b {
			want = want && plain[c]
		}
		if got := plainWord(x); got != want {
			t.Fatalf("plainWord(% x) = %v, want %v", b, got, want)
		}
	}
	for pos := range 8 {
		for c := range 256 {
			b := []byte("abcdefgh")
			b[pos] = byte(c)
			check(binary.LittleEndian.Uint64(b))
		}
	}
	r := rand.New(rand.NewPCG(3, 4))
	for range 1 << 20 {
		check(r.Uint64())
		check(r.Uint64() & 0x7f7f7f7f7f7f7f7f)
	}
}
