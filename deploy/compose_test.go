package deploy

import (
	"maps"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/atkafka/atkafka/sink/kafka"
	"github.com/atkafka/atkafka/source/backfill"
)

// composeFile is the part of the Compose specification these files use. Environments are maps (not lists) so that
// every variable has its own line and comment.
type composeFile struct {
	Name     string              `yaml:"name"`
	Include  []string            `yaml:"include"`
	Services map[string]*service `yaml:"services"`
	Volumes  map[string]any      `yaml:"volumes"`
}

type service struct {
	Image           string                `yaml:"image"`
	Build           any                   `yaml:"build"`
	Command         []string              `yaml:"command"`
	DependsOn       map[string]dependency `yaml:"depends_on"`
	Environment     map[string]string     `yaml:"environment"`
	Ports           []string              `yaml:"ports"`
	Expose          []string              `yaml:"expose"`
	Deploy          *deployment           `yaml:"deploy"`
	Volumes         []string              `yaml:"volumes"`
	Healthcheck     *healthcheck          `yaml:"healthcheck"`
	StopGracePeriod string                `yaml:"stop_grace_period"`
	Restart         string                `yaml:"restart"`
	Hostname        string                `yaml:"hostname"`
}

type healthcheck struct {
	Disable     bool     `yaml:"disable"`
	Test        []string `yaml:"test"`
	Interval    string   `yaml:"interval"`
	Timeout     string   `yaml:"timeout"`
	Retries     int      `yaml:"retries"`
	StartPeriod string   `yaml:"start_period"`
}

type deployment struct {
	Replicas *int `yaml:"replicas"`
}

type dependency struct {
	Condition string `yaml:"condition"`
}

// loadCompose reads a compose file and merges the files it includes, as `docker compose` does. It also returns
// the raw text of every file read, for checks on comments.
func loadCompose(t *testing.T, name string) (*composeFile, string) {
	t.Helper()
	path := filepath.Join(root, name)
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var f composeFile
	dec := yaml.NewDecoder(strings.NewReader(string(raw)))
	dec.KnownFields(true) // a misspelt key (depends_no) must fail here rather than be ignored by the test
	if err := dec.Decode(&f); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	text := string(raw)
	for _, inc := range f.Include {
		incPath, err := filepath.Rel(root, filepath.Join(filepath.Dir(path), inc))
		if err != nil {
			t.Fatal(err)
		}
		sub, subText := loadCompose(t, incPath)
		text += subText
		for k, s := range sub.Services {
			if f.Services[k] != nil {
				t.Fatalf("%s: service %s defined both here and in %s", name, k, inc)
			}
			f.Services[k] = s
		}
		for k, v := range sub.Volumes {
			if f.Volumes == nil {
				f.Volumes = map[string]any{}
			}
			f.Volumes[k] = v
		}
	}
	return &f, text
}

// atkafkaImage is the image every atkafka service of the compose files builds.
const atkafkaImage = "atkafka:local"

var composeFiles = []struct {
	file    string
	atkafka map[string][]string // every service running atkafka, and the variables each cannot run without
}{
	{"docker-compose.yml", map[string][]string{"atkafka": {"ATKAFKA_RELAY_HOST"}}},
	{"docker-compose.tap.yml", map[string][]string{"atkafka": {"ATKAFKA_TAP_HOST"}}},
	{"docker-compose.ozone.yml", map[string][]string{"atkafka": {"ATKAFKA_OZONE_PDS_HOST", "ATKAFKA_OZONE_IDENTIFIER", "ATKAFKA_OZONE_PASSWORD", "ATKAFKA_OZONE_LABELER_DID"}}},
	{"docker-compose.labels.yml", map[string][]string{"atkafka": {"ATKAFKA_LABELERS"}}},
	{"docker-compose.backfill.yml", map[string][]string{
		"relay":         {"ATKAFKA_RELAY_HOST", "ATKAFKA_OUTPUT_TOPIC"},
		"backfill-plan": {"ATKAFKA_BACKFILL_SOURCE", "ATKAFKA_OUTPUT_TOPIC", "ATKAFKA_BACKFILL_TOPIC"},
		"backfill-run":  {"ATKAFKA_OUTPUT_TOPIC", "ATKAFKA_BACKFILL_TOPIC", "ATKAFKA_BACKFILL_GROUP", "ATKAFKA_PLC_HOST"},
	}},
}

// atkafkaServices returns the file's atkafka services by name, after checking that they are exactly the ones
// listed (so none escapes the checks) and that each builds the image and runs a command.
func atkafkaServices(t *testing.T, f *composeFile, listed map[string][]string) map[string]*service {
	t.Helper()
	out := map[string]*service{}
	for name, s := range f.Services {
		if s.Image == atkafkaImage {
			out[name] = s
			if _, ok := listed[name]; !ok {
				t.Errorf("service %s runs atkafka but is not listed in composeFiles", name)
			}
			if s.Build != "." || len(s.Command) == 0 {
				t.Errorf("service %s: build %v, command %v; want build . and a command", name, s.Build, s.Command)
			}
		}
	}
	for name := range listed {
		if out[name] == nil {
			t.Fatalf("no service %s on image %s", name, atkafkaImage)
		}
	}
	return out
}

var anyATKafkaVar = regexp.MustCompile(`\bATKAFKA_[A-Z0-9_]+`)

// TestComposeVariablesExistInCLI: every ATKAFKA_* variable a service sets is one the command it runs reads, per
// that command's --help, and every one a comment mentions is read by a command of the file (a comment belongs to
// no service).
func TestComposeVariablesExistInCLI(t *testing.T) {
	for _, cf := range composeFiles {
		t.Run(cf.file, func(t *testing.T) {
			f, text := loadCompose(t, cf.file)
			anyKnown := map[string]bool{}
			var commands []string
			for name, a := range atkafkaServices(t, f, cf.atkafka) {
				known := envVars(t, a.Command...)
				for k := range a.Environment {
					if strings.HasPrefix(k, "ATKAFKA_") && !known[k] {
						t.Errorf("%s sets %s, which `atkafka %s` does not read", name, k, strings.Join(a.Command, " "))
					}
				}
				for _, k := range cf.atkafka[name] {
					if a.Environment[k] == "" {
						t.Errorf("%s does not set %s", name, k)
					}
				}
				maps.Copy(anyKnown, known)
				commands = append(commands, "`atkafka "+strings.Join(a.Command, " ")+"`")
			}
			slices.Sort(commands)
			for _, k := range anyATKafkaVar.FindAllString(text, -1) {
				if !anyKnown[k] {
					t.Errorf("mentions %s, which none of %s reads", k, strings.Join(commands, ", "))
				}
			}
		})
	}
}

func TestComposeKafkaAndStartOrder(t *testing.T) {
	for _, cf := range composeFiles {
		t.Run(cf.file, func(t *testing.T) {
			f, _ := loadCompose(t, cf.file)
			if f.Name == "" {
				t.Error("no project name: the files would share one project and see each other's containers as orphans")
			}
			for name, s := range f.Services {
				if strings.Contains(s.Image, "zookeeper") {
					t.Errorf("service %s runs ZooKeeper; Kafka runs in KRaft mode", name)
				}
				for dep, d := range s.DependsOn {
					target := f.Services[dep]
					switch {
					case target == nil:
						t.Errorf("%s depends on a missing service %s", name, dep)
					case d.Condition != "service_healthy":
						t.Errorf("%s starts when %s is %q; it must wait for service_healthy", name, dep, d.Condition)
					case target.Healthcheck == nil || len(target.Healthcheck.Test) == 0:
						t.Errorf("%s waits for %s to be healthy, which has no healthcheck", name, dep)
					}
				}
				for _, v := range s.Volumes {
					if src, _, ok := strings.Cut(v, ":"); ok && !strings.ContainsAny(src, "./") {
						if _, declared := f.Volumes[src]; !declared {
							t.Errorf("%s mounts the undeclared volume %s", name, src)
						}
					}
				}
			}

			k := f.Services["kafka"]
			if k == nil || !strings.HasPrefix(k.Image, "apache/kafka:") {
				t.Fatalf("no kafka service on the official apache/kafka image")
			}
			env := k.Environment
			if roles := env["KAFKA_PROCESS_ROLES"]; !strings.Contains(roles, "broker") || !strings.Contains(roles, "controller") {
				t.Errorf("KAFKA_PROCESS_ROLES = %q, want a combined broker,controller node", roles)
			}
			for _, v := range []string{"KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"} {
				if env[v] != "1" {
					t.Errorf("%s = %q; a single broker needs 1", v, env[v])
				}
			}

			for name, a := range atkafkaServices(t, f, cf.atkafka) {
				if a.DependsOn["kafka"].Condition != "service_healthy" {
					t.Errorf("%s does not wait for a healthy Kafka", name)
				}
				if bs := a.Environment["ATKAFKA_BOOTSTRAP_SERVERS"]; !strings.Contains(env["KAFKA_ADVERTISED_LISTENERS"], "://"+bs) {
					t.Errorf("%s: ATKAFKA_BOOTSTRAP_SERVERS = %q is not one of Kafka's advertised listeners %q", name, bs, env["KAFKA_ADVERTISED_LISTENERS"])
				}
			}
		})
	}
}

// TestComposeAtkafkaService checks what ties each atkafka service to the image: the data folder, the metrics port,
// the health check and a stop grace period long enough for the graceful shutdown.
func TestComposeAtkafkaService(t *testing.T) {
	commands := commandNames(help(t))
	for _, cf := range composeFiles {
		t.Run(cf.file, func(t *testing.T) {
			f, _ := loadCompose(t, cf.file)
			for name, a := range atkafkaServices(t, f, cf.atkafka) {
				t.Run(name, func(t *testing.T) { checkAtkafkaService(t, a, commands) })
			}
		})
	}
}

func checkAtkafkaService(t *testing.T, a *service, commands []string) {
	cmd := strings.Join(a.Command, " ")
	env := a.Environment
	if hc := a.Healthcheck; hc != nil && len(hc.Test) >= 3 && hc.Test[0] == "CMD" && hc.Test[1] == "atkafka" && !slices.Contains(commands, hc.Test[2]) {
		t.Errorf("the health check runs `atkafka %s`, which the CLI does not have", strings.Join(hc.Test[2:], " "))
	}
	// backfill status serves no /metrics or /healthz (cmd/atkafka/backfill.go).
	if cmd == "backfill status" {
		if a.Healthcheck == nil || !a.Healthcheck.Disable {
			t.Errorf("`atkafka %s` serves no /healthz: the image's health check would mark it unhealthy unless disabled", cmd)
		}
		return
	}

	if !strings.HasPrefix(cmd, "backfill ") { // a backfill's progress is in Kafka: no cursor file
		if env["ATKAFKA_DATA_DIR"] != "/data" {
			t.Errorf("ATKAFKA_DATA_DIR = %q, want /data (the image's working directory)", env["ATKAFKA_DATA_DIR"])
		}
		if cmd != "firehose tap" && !hasMount(a.Volumes, "/data") { // Tap keeps the position itself
			t.Error("the cursor folder /data is not on a volume: a new container would start from scratch")
		}
	}

	_, port, err := net.SplitHostPort(env["ATKAFKA_METRICS_LISTEN_ADDRESS"])
	if err != nil {
		t.Fatalf("ATKAFKA_METRICS_LISTEN_ADDRESS: %v", err)
	}
	if a.Deploy != nil && a.Deploy.Replicas != nil {
		if len(a.Ports) > 0 {
			t.Errorf("a scaled service publishes %v: its replicas would collide on the host port", a.Ports)
		}
		if !slices.Contains(a.Expose, port) {
			t.Errorf("the metrics port %s is not exposed to the network (expose %v)", port, a.Expose)
		}
	} else if !publishes(a.Ports, port) {
		t.Errorf("the metrics port %s is not published (ports %v)", port, a.Ports)
	}

	grace, err := time.ParseDuration(a.StopGracePeriod)
	if err != nil {
		t.Fatalf("stop_grace_period %q: %v", a.StopGracePeriod, err)
	}
	if stop := stopTime(t, cmd, env); grace <= stop {
		t.Errorf("stop_grace_period %s does not exceed the %s a stop may take: Docker would kill atkafka mid-flush", grace, stop)
	}
}

// stopTime is how long `atkafka <cmd>` may take to stop gracefully, from its environment.
func stopTime(t *testing.T, cmd string, env map[string]string) time.Duration {
	t.Helper()
	if cmd != "backfill run" {
		return duration(t, env, "ATKAFKA_SHUTDOWN_TIMEOUT", kafka.DefaultFlushTimeout)
	}
	// The batch in flight produces for the transaction time, then ends within the transaction timeout.
	timeout := duration(t, env, "ATKAFKA_BACKFILL_TRANSACTION_TIMEOUT", backfill.DefaultTransactionTimeout)
	produce := duration(t, env, "ATKAFKA_BACKFILL_TRANSACTION_TIME", timeout/4)
	if produce > timeout/2 {
		t.Errorf("ATKAFKA_BACKFILL_TRANSACTION_TIME %s is over half the timeout %s, which backfill run refuses", produce, timeout)
	}
	return timeout + produce
}

// duration reads a duration variable, def when it is not set.
func duration(t *testing.T, env map[string]string, name string, def time.Duration) time.Duration {
	t.Helper()
	v, ok := env[name]
	if !ok {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return d
}

// TestComposeBackfill checks a file running a backfill as README.md's "Live and backfill together" has it: the
// live relay starts first and writes to the same topic, plan lists what that relay follows into the work topic
// run reads, plan runs once and run is scaled.
func TestComposeBackfill(t *testing.T) {
	for _, cf := range composeFiles {
		f, _ := loadCompose(t, cf.file)
		services := atkafkaServices(t, f, cf.atkafka)
		byCommand := map[string]string{}
		for name, s := range services {
			byCommand[strings.Join(s.Command, " ")] = name
		}
		if byCommand["backfill run"] == "" {
			continue
		}
		t.Run(cf.file, func(t *testing.T) {
			relay, plan, run := byCommand["firehose relay"], byCommand["backfill plan"], byCommand["backfill run"]
			if relay == "" || plan == "" {
				t.Fatalf("a backfill needs a firehose relay service (%q) and a backfill plan service (%q)", relay, plan)
			}
			r, p, w := services[relay], services[plan], services[run]
			for name, s := range map[string]*service{plan: p, run: w} {
				if s.DependsOn[relay].Condition != "service_healthy" {
					t.Errorf("%s does not wait for %s: writes made before the live firehose started would be missed", name, relay)
				}
				if s.Environment["ATKAFKA_OUTPUT_TOPIC"] != r.Environment["ATKAFKA_OUTPUT_TOPIC"] {
					t.Errorf("%s writes to %q, %s to %q: the backfill and the live events belong in one topic", name,
						s.Environment["ATKAFKA_OUTPUT_TOPIC"], relay, r.Environment["ATKAFKA_OUTPUT_TOPIC"])
				}
			}
			if pt, wt := p.Environment["ATKAFKA_BACKFILL_TOPIC"], w.Environment["ATKAFKA_BACKFILL_TOPIC"]; pt != wt {
				t.Errorf("%s plans into %q, %s reads %q", plan, pt, run, wt)
			}
			source, err := url.Parse(p.Environment["ATKAFKA_BACKFILL_SOURCE"])
			if err != nil {
				t.Fatal(err)
			}
			if live, err := url.Parse(r.Environment["ATKAFKA_RELAY_HOST"]); err != nil || live.Host != source.Host {
				t.Errorf("%s lists %s, but %s follows %s", plan, source, relay, r.Environment["ATKAFKA_RELAY_HOST"])
			}

			if p.Restart != "on-failure" {
				t.Errorf("%s restart: %q; want on-failure, since a complete plan exits", plan, p.Restart)
			}
			if w.Deploy == nil || w.Deploy.Replicas == nil || *w.Deploy.Replicas < 2 {
				t.Errorf("%s does not run several replicas (deploy.replicas)", run)
			}
			if _, ok := w.Environment["ATKAFKA_TRANSACTIONAL_ID"]; ok {
				t.Errorf("%s sets ATKAFKA_TRANSACTIONAL_ID: replicas sharing it would fence one another", run)
			}
		})
	}
}

func hasMount(volumes []string, target string) bool {
	for _, v := range volumes {
		if parts := strings.Split(v, ":"); len(parts) >= 2 && parts[1] == target {
			return true
		}
	}
	return false
}

func publishes(ports []string, container string) bool {
	for _, p := range ports {
		if strings.HasSuffix(p, ":"+container) || p == container {
			return true
		}
	}
	return false
}

// TestComposeHealthchecksAreValidShell parses each CMD-SHELL health check with sh -n, after Compose's own
// unescaping of $$, since a quoting mistake there would only show as a container that never turns healthy.
func TestComposeHealthchecksAreValidShell(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	for _, cf := range composeFiles {
		f, _ := loadCompose(t, cf.file)
		for name, s := range f.Services {
			if s.Healthcheck == nil || len(s.Healthcheck.Test) < 2 || s.Healthcheck.Test[0] != "CMD-SHELL" {
				continue
			}
			script := strings.ReplaceAll(s.Healthcheck.Test[1], "$$", "$")
			if out, err := exec.Command(sh, "-n", "-c", script).CombinedOutput(); err != nil {
				t.Errorf("%s: %s healthcheck is not valid sh: %v\n%s\n%s", cf.file, name, err, script, out)
			}
			if strings.Contains(strings.ReplaceAll(s.Healthcheck.Test[1], "$$", ""), "$") {
				t.Errorf("%s: %s healthcheck has a single $, which Compose would interpolate from the host", cf.file, name)
			}
		}
	}
}
