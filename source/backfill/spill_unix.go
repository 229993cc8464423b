//go:build unix

package backfill

import (
	"fmt"
	"io"
	"os"
	"syscall"
)

// spill writes head and the rest of r to an unlinked temporary file and maps it read-only: the kernel pages the
// CAR in as the MST walk needs it and can drop those pages again, so a repository of gigabytes costs no heap.
func spill(dir string, head []byte, r io.Reader) (*repoData, error) {
	file, err := os.CreateTemp(dir, "atkafka-repo-*.car")
	if err != nil {
		return nil, err
	}
	defer file.Close()
	_ = os.Remove(file.Name()) // unlinked: the space is freed when the mapping goes, even after a crash
	if _, err := file.Write(head); err != nil {
		return nil, err
	}
	n, err := io.Copy(file, r)
	if err != nil {
		return nil, err
	}
	size := int64(len(head)) + n
	b, err := syscall.Mmap(int(file.Fd()), 0, int(size), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mapping the repository: %w", err)
	}
	return &repoData{b: b, release: func() { _ = syscall.Munmap(b) }}, nil
}
