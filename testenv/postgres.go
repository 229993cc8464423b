package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// StartPostgres starts a private PostgreSQL cluster for the test (a fresh data folder, a free loopback port, trust
// authentication, durability off for speed) and returns its connection URL, e.g.
// postgresql://postgres@127.0.0.1:PORT/postgres. The cluster is stopped and its files removed when the test ends.
// Missing server binaries make the test Unavailable (testenv/setup-atproto.sh installs them).
func StartPostgres(t testing.TB) string {
	t.Helper()
	bin, err := postgresBinDir()
	if err != nil {
		Unavailable(t, "%v (run testenv/setup-atproto.sh)", err)
	}
	cred, err := postgresCredential()
	if err != nil {
		t.Fatalf("postgres: %v", err)
	}
	// Not under t.TempDir(): its parent folder is private to root, and the server runs as another user.
	dir, err := os.MkdirTemp("", "atkafka-pg-")
	if err != nil {
		t.Fatalf("postgres: %v", err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			t.Fatalf("postgres: %v", err)
		}
	}
	data := filepath.Join(dir, "data")

	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8",
		"--no-sync", "--no-instructions")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	initdb.Dir = dir // the server's user may not be allowed into the test's working folder
	if out, err := initdb.CombinedOutput(); err != nil {
		t.Fatalf("postgres: initdb: %v\n%s", err, out)
	}

	// A port picked now can be taken before the server binds it; a few attempts make that race harmless.
	var lastErr string
	for attempt := 0; attempt < 3; attempt++ {
		port, err := freePort()
		if err != nil {
			t.Fatalf("postgres: %v", err)
		}
		cmd := exec.Command(filepath.Join(bin, "postgres"), "-D", data, "-p", strconv.Itoa(port),
			"-k", dir, // the Unix socket goes in our folder, not /var/run/postgresql
			"-c", "listen_addresses=127.0.0.1",
			"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		cmd.Dir = dir
		proc, err := startPeer("postgres", cmd)
		if err != nil {
			t.Fatalf("postgres: %v", err)
		}
		err = waitFor(proc, 30*time.Second, func() bool { return proc.out.contains("ready to accept connections") })
		if err == nil {
			// SIGINT is PostgreSQL's fast shutdown: it disconnects clients instead of waiting for them.
			t.Cleanup(func() { proc.stop(os.Interrupt, 10*time.Second) })
			return fmt.Sprintf("postgresql://postgres@127.0.0.1:%d/postgres", port)
		}
		proc.stop(os.Interrupt, 5*time.Second)
		lastErr = fmt.Sprintf("%v: %s", err, proc.describe())
	}
	t.Fatalf("postgres: %s", lastErr)
	return ""
}

// postgresBinDir finds a folder holding both initdb and postgres: PATH first (Debian puts neither there, but
// other systems do), then Debian's versioned folders, newest first.
func postgresBinDir() (string, error) {
	var candidates []string
	if p, err := exec.LookPath("initdb"); err == nil {
		candidates = append(candidates, filepath.Dir(p))
	}
	versioned, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(versioned, func(i, j int) bool { return pgVersion(versioned[i]) > pgVersion(versioned[j]) })
	for _, dir := range append(candidates, versioned...) {
		if isExecutable(filepath.Join(dir, "initdb")) && isExecutable(filepath.Join(dir, "postgres")) {
			return dir, nil
		}
	}
	return "", fmt.Errorf("PostgreSQL server binaries (initdb, postgres) not found")
}

// pgVersion reads the major version from /usr/lib/postgresql/<major>/bin.
func pgVersion(binDir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return v
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0
}

// postgresCredential returns who the server must run as: initdb and postgres refuse to run as root, so as root
// we switch to the postgres user (or nobody), dropping root's groups; as anyone else we stay ourselves (nil).
func postgresCredential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, _ := strconv.ParseUint(u.Uid, 10, 32)
		gid, _ := strconv.ParseUint(u.Gid, 10, 32)
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
	}
	return nil, fmt.Errorf("running as root and neither user postgres nor nobody exists to run the server as")
}
