package cursor

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// bind opens the cursor of cl at dir/relay-cursor-h.txt, logging into the returned buffer.
func bind(t *testing.T, dir string, cl Cluster) (Store, *bytes.Buffer) {
	t.Helper()
	var log bytes.Buffer
	s, err := ForCluster(filepath.Join(dir, "relay-cursor-h.txt"), cl, "at the tip", slog.New(slog.NewTextHandler(&log, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return s, &log
}

func load(t *testing.T, s Store) string {
	t.Helper()
	v, ok, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	if !ok {
		return "none"
	}
	return v
}

// wantCursor checks the cursor a new run against cl finds in dir ("none" for none).
func wantCursor(t *testing.T, dir string, cl Cluster, want, when string) {
	t.Helper()
	s, _ := bind(t, dir, cl)
	if got := load(t, s); got != want {
		t.Errorf("%s: cluster %s finds cursor %s, want %s", when, cl.ID, got, want)
	}
}

func save(t *testing.T, s Store, v string) {
	t.Helper()
	if err := s.Save(v); err != nil {
		t.Fatal(err)
	}
}

func files(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func writeLegacy(t *testing.T, dir, value string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "relay-cursor-h.txt"), []byte(value+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

var (
	clusterA = Cluster{ID: "MkU3OEVBNTcwNTJENDM2Qk"}
	clusterB = Cluster{ID: "Zm9vYmFyYmF6cXV4MTIzNA"}
	embedded = Cluster{ID: "atkafka-embedded-1", Embedded: true}
	inMemory = Cluster{ID: "atkafka-embedded-2", Embedded: true, Ephemeral: true}
)

// The loss path of issue 12: a run against another cluster (the embedded broker, after a restart lost
// --bootstrap-servers) must neither read nor move the cursor of the real one.
func TestClustersKeepApart(t *testing.T) {
	dir := t.TempDir()
	a, aLog := bind(t, dir, clusterA)
	if got := load(t, a); got != "none" {
		t.Fatalf("fresh cursor of A: %s", got)
	}
	if !strings.Contains(aLog.String(), `msg="no cursor for this Kafka cluster: starting at the tip"`) ||
		!strings.Contains(aLog.String(), "kafka_cluster="+clusterA.ID) {
		t.Errorf("log without a cursor: %s", aLog)
	}
	save(t, a, "10")
	wantCursor(t, dir, clusterB, "none", "after A saved")
	b, _ := bind(t, dir, clusterB)
	save(t, b, "20")
	e, _ := bind(t, dir, embedded)
	save(t, e, "30")

	a, aLog = bind(t, dir, clusterA)
	b, _ = bind(t, dir, clusterB)
	e, _ = bind(t, dir, embedded)
	if got := []string{load(t, a), load(t, b), load(t, e)}; !slices.Equal(got, []string{"10", "20", "30"}) {
		t.Errorf("cursors of A, B, embedded: %v", got)
	}
	if !strings.Contains(aLog.String(), `msg="resuming from this Kafka cluster's cursor"`) || !strings.Contains(aLog.String(), "cursor=10") {
		t.Errorf("log with a cursor: %s", aLog)
	}
	want := []string{"relay-cursor-h.kafka-" + clusterA.ID + ".txt", "relay-cursor-h.kafka-" + clusterB.ID + ".txt",
		"relay-cursor-h.kafka-atkafka-embedded-1.txt"}
	if got := files(t, dir); !sameSet(got, want) {
		t.Errorf("files %v, want %v", got, want)
	}
	raw, _ := os.ReadFile(filepath.Join(dir, want[0]))
	if string(raw) != `{"kafka_cluster_id":"`+clusterA.ID+`","cursor":"10"}`+"\n" {
		t.Errorf("cursor file content %q", raw)
	}
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

func TestInMemoryEmbeddedKeepsNoCursor(t *testing.T) {
	dir := t.TempDir()
	writeLegacy(t, dir, "100")
	s, log := bind(t, dir, inMemory)
	save(t, s, "5")
	if got := load(t, s); got != "none" {
		t.Errorf("in-memory broker's cursor: %s", got)
	}
	if got := files(t, dir); !slices.Equal(got, []string{"relay-cursor-h.txt"}) {
		t.Errorf("files %v: the in-memory broker wrote or moved a cursor file", got)
	}
	for _, want := range []string{"in memory only", "starting at the tip", "left for the first real Kafka cluster"} {
		if !strings.Contains(log.String(), want) {
			t.Errorf("log lacks %q: %s", want, log)
		}
	}
	if describe := Describe(s); !strings.Contains(describe, "in-memory") {
		t.Errorf("Describe = %q", describe)
	}
}

// A file of the earlier version goes to the first real cluster, never to the embedded broker, and to one cluster
// only.
func TestLegacyFileAdoptedByFirstRealCluster(t *testing.T) {
	dir := t.TempDir()
	writeLegacy(t, dir, "100")
	e, eLog := bind(t, dir, embedded)
	if got := load(t, e); got != "none" {
		t.Fatalf("the embedded broker adopted the legacy cursor: %s", got)
	}
	if !strings.Contains(eLog.String(), "left for the first real Kafka cluster") {
		t.Errorf("embedded log: %s", eLog)
	}
	a, aLog := bind(t, dir, clusterA)
	if got := load(t, a); got != "100" {
		t.Fatalf("A adopted %s, want 100", got)
	}
	if !strings.Contains(aLog.String(), "level=WARN msg=\"adopted the cursor file of an earlier atkafka version") {
		t.Errorf("no warning on adoption: %s", aLog)
	}
	if got := files(t, dir); !slices.Equal(got, []string{"relay-cursor-h.kafka-" + clusterA.ID + ".txt"}) {
		t.Errorf("files after adoption: %v", got)
	}
	wantCursor(t, dir, clusterB, "none", "after A adopted the legacy cursor")
}

// A source started with an explicit cursor saves before it ever loads: the legacy file is still claimed, so
// that the next cluster does not take a cursor this one moved past.
func TestLegacyFileAdoptedOnFirstSave(t *testing.T) {
	dir := t.TempDir()
	writeLegacy(t, dir, "100")
	a, _ := bind(t, dir, clusterA)
	save(t, a, "150")
	wantCursor(t, dir, clusterA, "150", "after A saved first")
	wantCursor(t, dir, clusterB, "none", "after A saved first")
}

// A crash after the legacy file was renamed for a cluster, before its copy: the next start of that cluster
// finishes the adoption, and no other cluster takes it.
func TestAdoptionResumesAfterCrash(t *testing.T) {
	dir := t.TempDir()
	renamed := filepath.Join(dir, "relay-cursor-h.txt.adopting-kafka-"+clusterA.ID)
	if err := os.WriteFile(renamed, []byte("100\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	wantCursor(t, dir, clusterB, "none", "during A's adoption")
	wantCursor(t, dir, clusterA, "100", "resuming the adoption")
	if _, err := os.Stat(renamed); !os.IsNotExist(err) {
		t.Errorf("the renamed legacy file is still there: %v", err)
	}
}

func TestClusterFileRefusesAnotherClustersContent(t *testing.T) {
	dir := t.TempDir()
	a, _ := bind(t, dir, clusterA)
	save(t, a, "10")
	// An operator copies A's file to B's name.
	raw, _ := os.ReadFile(filepath.Join(dir, "relay-cursor-h.kafka-"+clusterA.ID+".txt"))
	if err := os.WriteFile(filepath.Join(dir, "relay-cursor-h.kafka-"+clusterB.ID+".txt"), raw, 0o644); err != nil {
		t.Fatal(err)
	}
	b, _ := bind(t, dir, clusterB)
	if _, _, err := b.Load(); err == nil || !strings.Contains(err.Error(), "was written for Kafka cluster") {
		t.Errorf("Load of a copied file: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "relay-cursor-h.kafka-"+clusterB.ID+".txt"), []byte("20\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.Load(); err == nil || !strings.Contains(err.Error(), "kafka_cluster_id") {
		t.Errorf("Load of a bare value in a cluster's file: %v", err)
	}
}

func TestForClusterNeedsAnID(t *testing.T) {
	if _, err := ForCluster("c.txt", Cluster{}, "", slog.Default()); err == nil {
		t.Error("no error for a cluster without id")
	}
}
