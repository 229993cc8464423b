package deploy

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
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
	Volumes         []string              `yaml:"volumes"`
	Healthcheck     *healthcheck          `yaml:"healthcheck"`
	StopGracePeriod string                `yaml:"stop_grace_period"`
	Restart         string                `yaml:"restart"`
	Hostname        string                `yaml:"hostname"`
}

type healthcheck struct {
	Test        []string `yaml:"test"`
	Interval    string   `yaml:"interval"`
	Timeout     string   `yaml:"timeout"`
	Retries     int      `yaml:"retries"`
	StartPeriod string   `yaml:"start_period"`
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

var composeFiles = []struct {
	file     string
	required []string // variables the mode cannot run without
}{
	{"docker-compose.yml", []string{"ATKAFKA_RELAY_HOST"}},
	{"docker-compose.tap.yml", []string{"ATKAFKA_TAP_HOST"}},
	{"docker-compose.ozone.yml", []string{"ATKAFKA_OZONE_PDS_HOST", "ATKAFKA_OZONE_IDENTIFIER", "ATKAFKA_OZONE_PASSWORD", "ATKAFKA_OZONE_LABELER_DID"}},
	{"docker-compose.labels.yml", []string{"ATKAFKA_LABELERS"}},
}

var anyATKafkaVar = regexp.MustCompile(`\bATKAFKA_[A-Z0-9_]+`)

// TestComposeVariablesExistInCLI: every ATKAFKA_* variable a compose file sets, or mentions in a comment, is one
// the command that file runs reads, per that command's --help.
func TestComposeVariablesExistInCLI(t *testing.T) {
	for _, cf := range composeFiles {
		t.Run(cf.file, func(t *testing.T) {
			f, text := loadCompose(t, cf.file)
			a := f.Services["atkafka"]
			if a == nil || len(a.Command) == 0 {
				t.Fatal("no atkafka service with a command")
			}
			known := envVars(t, a.Command...)
			for k := range a.Environment {
				if strings.HasPrefix(k, "ATKAFKA_") && !known[k] {
					t.Errorf("sets %s, which `atkafka %s` does not read", k, strings.Join(a.Command, " "))
				}
			}
			for _, k := range anyATKafkaVar.FindAllString(text, -1) {
				if !known[k] {
					t.Errorf("mentions %s, which `atkafka %s` does not read", k, strings.Join(a.Command, " "))
				}
			}
			for _, k := range cf.required {
				if a.Environment[k] == "" {
					t.Errorf("does not set %s", k)
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
				t.Error("no project name: the three files would share one project and see each other's containers as orphans")
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

			a := f.Services["atkafka"]
			if a.DependsOn["kafka"].Condition != "service_healthy" {
				t.Error("atkafka does not wait for a healthy Kafka")
			}
			if bs := a.Environment["ATKAFKA_BOOTSTRAP_SERVERS"]; !strings.Contains(env["KAFKA_ADVERTISED_LISTENERS"], "://"+bs) {
				t.Errorf("ATKAFKA_BOOTSTRAP_SERVERS = %q is not one of Kafka's advertised listeners %q", bs, env["KAFKA_ADVERTISED_LISTENERS"])
			}
		})
	}
}

// TestComposeAtkafkaService checks what ties the atkafka service to the image: the data folder, the metrics port
// and a stop grace period long enough for the graceful shutdown.
func TestComposeAtkafkaService(t *testing.T) {
	for _, cf := range composeFiles {
		t.Run(cf.file, func(t *testing.T) {
			f, _ := loadCompose(t, cf.file)
			a := f.Services["atkafka"]
			env := a.Environment
			if env["ATKAFKA_DATA_DIR"] != "/data" {
				t.Errorf("ATKAFKA_DATA_DIR = %q, want /data (the image's working directory)", env["ATKAFKA_DATA_DIR"])
			}
			if cf.file != "docker-compose.tap.yml" { // Tap keeps the position itself
				if !hasMount(a.Volumes, "/data") {
					t.Error("the cursor folder /data is not on a volume: a new container would start from scratch")
				}
			}

			_, port, err := net.SplitHostPort(env["ATKAFKA_METRICS_LISTEN_ADDRESS"])
			if err != nil {
				t.Fatalf("ATKAFKA_METRICS_LISTEN_ADDRESS: %v", err)
			}
			if !publishes(a.Ports, port) {
				t.Errorf("the metrics port %s is not published (ports %v)", port, a.Ports)
			}

			grace, err := time.ParseDuration(a.StopGracePeriod)
			if err != nil {
				t.Fatalf("stop_grace_period %q: %v", a.StopGracePeriod, err)
			}
			shutdown := 30 * time.Second // --shutdown-timeout's default
			if v := env["ATKAFKA_SHUTDOWN_TIMEOUT"]; v != "" {
				if shutdown, err = time.ParseDuration(v); err != nil {
					t.Fatal(err)
				}
			}
			if grace <= shutdown {
				t.Errorf("stop_grace_period %s does not exceed the shutdown timeout %s: Docker would kill atkafka mid-flush", grace, shutdown)
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
