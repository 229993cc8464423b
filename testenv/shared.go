// Package testenv gives tests the real peers they need (Apache Kafka, the atproto dev-env, Tap) and the shared
// corpus, failing loudly in CI when something is missing instead of skipping.
package testenv

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// InCI reports whether the tests run in CI (CI=true), where missing peers or data are failures.
func InCI() bool { return os.Getenv("CI") == "true" }

// Unavailable fails the test in CI and skips it elsewhere, saying what is missing.
func Unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	if InCI() {
		t.Fatalf("required test dependency unavailable (CI=true): "+format, args...)
	}
	t.Skipf("skipping: "+format, args...)
}

// RepoRoot returns the project's root folder.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(file))
}

// SharedDir returns ../shared beside the checkout (or $ATKAFKA_SHARED_DIR), failing in CI when it is missing.
func SharedDir(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("ATKAFKA_SHARED_DIR")
	if dir == "" {
		dir = filepath.Join(RepoRoot(), "..", "shared")
	}
	if _, err := os.Stat(filepath.Join(dir, "corpus")); err != nil {
		Unavailable(t, "shared corpus not found at %s (set ATKAFKA_SHARED_DIR): %v", dir, err)
	}
	return dir
}
