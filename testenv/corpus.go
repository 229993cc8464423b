package testenv

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// CorpusDir is the real relay capture's folder under the shared folder (see its README).
const CorpusDir = "corpus/relay-2026-07-04"

// CorpusFile returns the path of a file of the relay capture, failing in CI when the shared folder is missing.
func CorpusFile(t testing.TB, name string) string {
	t.Helper()
	return filepath.Join(SharedDir(t), CorpusDir, name)
}

// readMaybeZstd reads a file, decompressing it when its name ends in .zst.
func readMaybeZstd(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var r io.Reader = f
	if filepath.Ext(path) == ".zst" {
		zr, err := zstd.NewReader(f)
		if err != nil {
			return nil, err
		}
		defer zr.Close()
		r = zr
	}
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return data, nil
}

// ReadFrames reads a capture of websocket messages laid out as repeated [u32 little-endian length][message],
// zstd-compressed when the name ends in .zst. Every length is checked against what is left of the file.
func ReadFrames(path string) ([][]byte, error) {
	data, err := readMaybeZstd(path)
	if err != nil {
		return nil, err
	}
	var frames [][]byte
	for len(data) > 0 {
		if len(data) < 4 {
			return nil, fmt.Errorf("%s: truncated length prefix", path)
		}
		n := binary.LittleEndian.Uint32(data)
		if uint64(n) > uint64(len(data)-4) {
			return nil, fmt.Errorf("%s: frame of %d bytes exceeds the file", path, n)
		}
		frames = append(frames, data[4:4+n:4+n])
		data = data[4+n:]
	}
	return frames, nil
}

// CorpusFrames returns the 150 websocket messages of the relay capture.
func CorpusFrames(t testing.TB) [][]byte {
	t.Helper()
	frames, err := ReadFrames(CorpusFile(t, "frames.bin.zst"))
	if err != nil {
		t.Fatal(err)
	}
	return frames
}

// CorpusExpected decodes each line of expected_jetstream_v1.jsonl, the oracle for the capture, into a T.
func CorpusExpected[T any](t testing.TB) []T {
	t.Helper()
	data, err := readMaybeZstd(CorpusFile(t, "expected_jetstream_v1.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	var out []T
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 16<<20)
	for sc.Scan() {
		var v T
		if err := json.Unmarshal(sc.Bytes(), &v); err != nil {
			t.Fatalf("expected_jetstream_v1.jsonl line %d: %v", len(out)+1, err)
		}
		out = append(out, v)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// CorpusDIDDocs returns the DID documents plc.directory served for the capture's commit DIDs, by DID.
func CorpusDIDDocs(t testing.TB) map[string]json.RawMessage {
	t.Helper()
	data, err := readMaybeZstd(CorpusFile(t, "did_docs.json.zst"))
	if err != nil {
		t.Fatal(err)
	}
	var docs map[string]json.RawMessage
	if err := json.Unmarshal(data, &docs); err != nil {
		t.Fatal(err)
	}
	return docs
}
