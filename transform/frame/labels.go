package frame

import (
	"errors"
	"fmt"

	"github.com/atkafka/atkafka/transform/dagcbor"
)

// Labels is a "#labels" event of com.atproto.label.subscribeLabels: the labels a labeler emitted under one seq.
type Labels struct {
	Seq    int64
	Labels []Label
}

// Label is one com.atproto.label.defs#label as received. Fields absent from the label are nil (or false); a
// label whose fields are present but of the wrong type still decodes, with Err saying what is wrong, so that one
// bad label is set aside without losing the others of its frame. Checking that the required fields are there is
// the consumer's business.
type Label struct {
	// Raw is the label's DAG-CBOR encoding, as signed (with sig).
	Raw []byte
	Ver int64 // 0 when absent
	Src []byte
	URI []byte
	CID []byte
	Val []byte
	Neg bool
	Cts []byte
	Exp []byte
	Sig []byte
	// Err is the first problem with a field's type, nil when none.
	Err error

	entries int // map entries in Raw
	head    int // length of Raw's map head
	// sigStart and sigEnd delimit the "sig" entry (key and value) in Raw; equal when there is none.
	sigStart, sigEnd int
}

func (ls *Labels) decode(d *dagcbor.Decoder) error {
	ls.Seq, ls.Labels = 0, ls.Labels[:0]
	seen, err := eachField(d, func(k []byte) (f fields, err error) {
		switch string(k) {
		case "seq":
			ls.Seq, err = d.Int()
			return eSeq, err
		case "labels":
			n, err := d.ArrayHeader()
			if err != nil {
				return 0, err
			}
			for range n {
				ls.Labels = append(ls.Labels, Label{})
				if err := ls.Labels[len(ls.Labels)-1].decode(d); err != nil {
					return 0, fmt.Errorf("label %d: %w", len(ls.Labels)-1, err)
				}
			}
			return eBlocks, nil // the bit of "labels": this body has no blocks
		}
		return 0, d.Skip()
	})
	if err != nil {
		return err
	}
	if seen&eSeq == 0 {
		return errors.New(`missing "seq"`)
	}
	if seen&eBlocks == 0 {
		return errors.New(`missing "labels"`)
	}
	return nil
}

// decode reads one label map. Only a malformed encoding is an error; a field of the wrong type sets l.Err.
func (l *Label) decode(d *dagcbor.Decoder) error {
	start := d.Offset()
	n, err := d.MapHeader()
	if err != nil {
		return err
	}
	l.entries, l.head = n, d.Offset()-start
	fieldErr := func(key string, err error) {
		if err != nil && l.Err == nil {
			l.Err = fmt.Errorf("%q: %w", key, err)
		}
	}
	for range n {
		entry := d.Offset()
		k, err := d.Text()
		if err != nil {
			return err
		}
		key := string(k)
		// Each field is read from a copy, so that a value of the wrong type can still be skipped whole.
		v := *d
		switch key {
		case "ver":
			l.Ver, err = v.Int()
		case "src":
			l.Src, err = text(&v)
		case "uri":
			l.URI, err = text(&v)
		case "cid":
			l.CID, err = optText(&v)
		case "val":
			l.Val, err = text(&v)
		case "neg":
			l.Neg, err = v.Bool()
		case "cts":
			l.Cts, err = text(&v)
		case "exp":
			l.Exp, err = optText(&v)
		case "sig":
			l.Sig, err = v.Bytes()
		}
		fieldErr(key, err)
		if err := d.Skip(); err != nil {
			return err
		}
		if key == "sig" {
			l.sigStart, l.sigEnd = entry-start, d.Offset()-start
		}
	}
	l.Raw = d.Since(start)
	return nil
}

// Unsigned appends to dst the DAG-CBOR encoding of the label without its sig: what the labeler signed. Dropping
// the entry from the canonical encoding keeps every other byte as the labeler encoded it, so unknown fields
// (added by a later lexicon) are covered too.
func (l *Label) Unsigned(dst []byte) []byte {
	if l.sigStart == l.sigEnd {
		return append(dst, l.Raw...)
	}
	dst = appendMapHead(dst, l.entries-1)
	dst = append(dst, l.Raw[l.head:l.sigStart]...)
	return append(dst, l.Raw[l.sigEnd:]...)
}

// appendMapHead appends the shortest CBOR head of a map of n entries, as DAG-CBOR requires.
func appendMapHead(dst []byte, n int) []byte {
	const major = 5 << 5
	switch {
	case n < 24:
		return append(dst, byte(major|n))
	case n < 1<<8:
		return append(dst, major|24, byte(n))
	case n < 1<<16:
		return append(dst, major|25, byte(n>>8), byte(n))
	}
	return append(dst, major|26, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
}
