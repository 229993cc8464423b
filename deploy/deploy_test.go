// Package deploy checks the files that ship atkafka (Dockerfile, compose files, Grafana dashboard) against the
// code, since no Docker engine or Grafana runs in the test environment: a variable the CLI does not know, a
// dashboard query on a metric that does not exist, or a health check calling a missing command would otherwise
// only show up in someone's deployment.
package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/atkafka/atkafka/testenv"
)

// root is the repository root, where the compose files and the Dockerfile live.
var root = testenv.RepoRoot()

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// atkafka builds the binary once per test run: the CLI's help output is the source of truth for its variables.
func atkafka(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "atkafka-deploy-test")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "atkafka")
		cmd := exec.Command("go", "build", "-o", binPath, "./cmd/atkafka")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = &buildError{err: err, out: string(out)}
		}
	})
	if buildErr != nil {
		t.Fatalf("building ./cmd/atkafka: %v", buildErr)
	}
	return binPath
}

type buildError struct {
	err error
	out string
}

func (e *buildError) Error() string { return e.err.Error() + "\n" + e.out }

func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" {
		_ = os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

// help runs `atkafka <args> --help`.
func help(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(atkafka(t), append(args, "--help")...).CombinedOutput()
	if err != nil {
		t.Fatalf("atkafka %s --help: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// urfave/cli prints a flag's variables as [$A] or [$A, $B].
var helpEnv = regexp.MustCompile(`\$([A-Z][A-Z0-9_]*)`)

// envVars returns the variables `atkafka <command>` reads, from its help output.
func envVars(t *testing.T, command ...string) map[string]bool {
	t.Helper()
	vars := map[string]bool{}
	for _, m := range helpEnv.FindAllStringSubmatch(help(t, command...), -1) {
		vars[m[1]] = true
	}
	if !vars["ATKAFKA_BOOTSTRAP_SERVERS"] {
		t.Fatalf("atkafka %s --help names no ATKAFKA_BOOTSTRAP_SERVERS: did the help format change?", strings.Join(command, " "))
	}
	return vars
}

// commandNames lists the subcommands in the COMMANDS section of a help text.
func commandNames(helpText string) []string {
	_, section, ok := strings.Cut(helpText, "COMMANDS:")
	if !ok {
		return nil
	}
	var names []string
	for _, l := range strings.Split(section, "\n") {
		if !strings.HasPrefix(l, "   ") {
			if len(names) > 0 && strings.TrimSpace(l) != "" {
				break // the next section
			}
			continue
		}
		if f := strings.Fields(l); len(f) > 0 {
			names = append(names, strings.TrimSuffix(f[0], ","))
		}
	}
	return names
}

func TestCommandNames(t *testing.T) {
	text := "NAME:\n   x\n\nCOMMANDS:\n   firehose      produce\n   tail, t       print\n   help, h       Shows\n\nGLOBAL OPTIONS:\n   --a  b\n"
	if got, want := commandNames(text), []string{"firehose", "tail", "help"}; !slices.Equal(got, want) {
		t.Fatalf("commandNames = %v, want %v", got, want)
	}
}
