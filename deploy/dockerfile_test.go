package deploy

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/atkafka/atkafka/server"
	"github.com/atkafka/atkafka/testenv"
)

type instruction struct {
	cmd  string // upper case: FROM, RUN, ...
	args string
}

// dockerfile reads the Dockerfile's instructions, joining continued lines and dropping comments.
func dockerfile(t *testing.T) []instruction {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	var out []instruction
	var cur strings.Builder
	for _, l := range strings.Split(string(raw), "\n") {
		trimmed := strings.TrimSpace(l)
		if strings.HasPrefix(trimmed, "#") || (trimmed == "" && cur.Len() == 0) {
			continue
		}
		if body, cont := strings.CutSuffix(trimmed, `\`); cont {
			cur.WriteString(body + " ")
			continue
		}
		cur.WriteString(trimmed)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		out = append(out, instruction{cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args)})
		cur.Reset()
	}
	return out
}

// finalStage returns the instructions after the last FROM, and that FROM's image.
func finalStage(ins []instruction) (string, []instruction) {
	for i := len(ins) - 1; i >= 0; i-- {
		if ins[i].cmd == "FROM" {
			return strings.Fields(ins[i].args)[0], ins[i+1:]
		}
	}
	return "", nil
}

func lastArgs(ins []instruction, cmd string) string {
	for i := len(ins) - 1; i >= 0; i-- {
		if ins[i].cmd == cmd {
			return ins[i].args
		}
	}
	return ""
}

// execForm parses a JSON-array instruction argument (["atkafka", "healthcheck"]).
func execForm(t *testing.T, what, args string) []string {
	t.Helper()
	var argv []string
	if err := json.Unmarshal([]byte(args), &argv); err != nil || len(argv) == 0 {
		t.Fatalf("%s %q is not in exec form: %v", what, args, err)
	}
	return argv
}

func TestDockerfile(t *testing.T) {
	ins := dockerfile(t)

	goMod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	goVersion := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(goMod)
	if goVersion == nil || !slices.ContainsFunc(ins, func(i instruction) bool {
		return i.cmd == "ARG" && i.args == "GO_VERSION="+string(goVersion[1])
	}) {
		t.Errorf("the builder's GO_VERSION does not match go.mod's go %s", goVersion[1])
	}
	build := slices.IndexFunc(ins, func(i instruction) bool { return i.cmd == "RUN" && strings.Contains(i.args, "go build") })
	if build < 0 || !strings.Contains(ins[build].args, "CGO_ENABLED=0") || !strings.Contains(ins[build].args, "./cmd/atkafka") ||
		!strings.Contains(ins[build].args, "--mount=type=cache,target=/go/pkg/mod") {
		t.Errorf("no static, cached build of ./cmd/atkafka: %+v", ins)
	}

	image, final := finalStage(ins)
	if !strings.HasPrefix(image, "gcr.io/distroless/static") && !strings.HasPrefix(image, "alpine") {
		t.Errorf("final image %s: want distroless static or alpine", image)
	}
	if u := lastArgs(final, "USER"); u == "" || u == "root" || strings.HasPrefix(u, "0") {
		t.Errorf("USER %q: the image must run as a non-root user", u)
	}
	if w := lastArgs(final, "WORKDIR"); w != "/data" {
		t.Errorf("WORKDIR %q, want /data: cursor files land in the working directory, and compose mounts /data", w)
	}
	_, port, _ := net.SplitHostPort(server.DefaultAddr)
	if e := lastArgs(final, "EXPOSE"); e != port {
		t.Errorf("EXPOSE %q, want the metrics port %s", e, port)
	}
	if ep := execForm(t, "ENTRYPOINT", lastArgs(final, "ENTRYPOINT")); !slices.Equal(ep, []string{"atkafka"}) {
		t.Errorf("ENTRYPOINT %v, want [atkafka]", ep)
	}
}

func TestDockerignoreKeepsTheBuildInputs(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(root, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	var patterns []string
	for _, l := range strings.Split(string(raw), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			patterns = append(patterns, strings.TrimPrefix(l, "/"))
		}
	}
	ignored := func(path string) bool {
		for _, p := range patterns {
			for prefix := path; prefix != "."; prefix = filepath.Dir(prefix) {
				if ok, _ := filepath.Match(strings.ReplaceAll(p, "**/", ""), prefix); ok {
					return true
				}
			}
		}
		return false
	}
	for _, need := range []string{"go.mod", "go.sum", "cmd/atkafka/main.go", "server/server.go", "sink/sink.go"} {
		if ignored(need) {
			t.Errorf(".dockerignore excludes %s, which the build needs", need)
		}
	}
	for _, secret := range []string{".env", ".git/config"} {
		if !ignored(secret) {
			t.Errorf(".dockerignore lets %s into the build context", secret)
		}
	}
}

// TestHealthcheckCommand runs the image's HEALTHCHECK command against a real listener: it must exit 0 while
// /healthz answers and fail once nothing listens.
func TestHealthcheckCommand(t *testing.T) {
	_, final := finalStage(dockerfile(t))
	hc := lastArgs(final, "HEALTHCHECK")
	_, cmd, ok := strings.Cut(hc, "CMD ")
	if !ok {
		t.Fatalf("HEALTHCHECK %q has no CMD", hc)
	}
	argv := execForm(t, "HEALTHCHECK CMD", strings.TrimSpace(cmd))
	if argv[0] != "atkafka" {
		t.Skipf("HEALTHCHECK runs %s, not atkafka", argv[0])
	}
	bin := atkafka(t)
	if !slices.Contains(commandNames(help(t)), argv[1]) {
		testenv.Unavailable(t, "the Dockerfile's HEALTHCHECK runs `atkafka %s`, which the CLI does not have yet", strings.Join(argv[1:], " "))
	}

	s := server.New("127.0.0.1:0")
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	run := func() error {
		c := exec.Command(bin, argv[1:]...)
		c.Env = append(os.Environ(), "ATKAFKA_METRICS_LISTEN_ADDRESS="+s.Addr().String())
		return c.Run()
	}
	if err := run(); err != nil {
		t.Errorf("healthcheck with /healthz answering: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := run(); err == nil {
		t.Error("healthcheck succeeded with nothing listening")
	}
}
