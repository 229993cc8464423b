//go:build !unix

package backfill

import (
	"bytes"
	"io"
)

// spill reads the rest of r into memory where files cannot be mapped: only the memory bound is lost.
func spill(_ string, head []byte, r io.Reader) (*repoData, error) {
	b := bytes.NewBuffer(append([]byte(nil), head...))
	if _, err := b.ReadFrom(r); err != nil {
		return nil, err
	}
	return &repoData{b: b.Bytes(), release: func() {}}, nil
}
