// Package cursor keeps a source's position on disk so that a restart resumes where delivery stopped.
package cursor

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Store keeps a source's cursor: a File, or (exactly-once) the Kafka cursor topic, which package checkpoint only
// loads, since the transaction that delivered the records stored the cursor with them.
type Store interface {
	// Load returns the stored cursor; ok is false when none was ever saved.
	Load() (value string, ok bool, err error)
	// Save replaces the stored cursor durably.
	Save(value string) error
}

// Describe names where s keeps the cursor, for logs and error messages: a file's path, or what s says of itself.
func Describe(s Store) string {
	if f, ok := s.(interface{ Path() string }); ok {
		return f.Path()
	}
	return fmt.Sprint(s)
}

// File is a cursor stored as a single line of text in a file.
type File struct {
	path string
}

// NewFile returns the cursor stored at path. The folder must exist.
func NewFile(path string) *File { return &File{path: path} }

// Path returns the file's path.
func (f *File) Path() string { return f.path }

// Load returns the stored cursor. ok is false when no cursor was ever saved.
func (f *File) Load() (value string, ok bool, err error) {
	b, err := os.ReadFile(f.path)
	if errors.Is(err, os.ErrNotExist) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("read cursor %s: %w", f.path, err)
	}
	v := strings.TrimSpace(string(b))
	return v, v != "", nil
}

// Save replaces the stored cursor atomically: a crash leaves either the old or the new value, never a torn one,
// and a successful return means the value survives a power loss (file and folder are fsynced).
func (f *File) Save(value string) error {
	dir := filepath.Dir(f.path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(f.path)+".tmp*")
	if err != nil {
		return fmt.Errorf("save cursor: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after a successful rename
	if _, err := tmp.WriteString(value + "\n"); err != nil {
		tmp.Close()
		return fmt.Errorf("save cursor: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("save cursor: fsync: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("save cursor: %w", err)
	}
	if err := os.Rename(tmp.Name(), f.path); err != nil {
		return fmt.Errorf("save cursor: %w", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("save cursor: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("save cursor: fsync folder: %w", err)
	}
	return nil
}
