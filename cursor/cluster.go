package cursor

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// Cluster is the Kafka cluster whose acknowledgements a cursor counts. A cursor promises that its cluster holds
// every record before it, a promise worth nothing to another cluster: a run that lost its --bootstrap-servers and
// fed the embedded broker must not move the cursor a real cluster resumes from. Each cluster therefore gets a
// cursor file of its own.
type Cluster struct {
	// ID is the cluster id from Kafka's metadata.
	ID string
	// Embedded marks atkafka's embedded broker. It never adopts a cursor file of an earlier version (one without
	// a cluster id): such a file counts some real cluster's acknowledgements.
	Embedded bool
	// Ephemeral marks a cluster whose records end with the process (the embedded broker without a data folder).
	// A cursor would outlive what it counts, so none is kept.
	Ephemeral bool
}

// ForCluster returns the store of the cursor file at path for cl alone. The file's name gets the cluster id
// (path "relay-cursor-h.txt" becomes "relay-cursor-h.kafka-<id>.txt") and its content records the id with the
// value, so a run against another cluster neither reads nor overwrites it, and a file copied to the wrong name is
// refused. A file at path itself was written by an earlier version, which recorded no cluster: the first real
// cluster that finds no file of its own adopts it, with a warning (see adopt). fresh says where the source starts
// without a cursor ("at the relay's tip"), for the log line Load writes.
func ForCluster(path string, cl Cluster, fresh string, log *slog.Logger) (Store, error) {
	if cl.ID == "" {
		return nil, errors.New("the Kafka cluster reports no cluster id, so its cursor could not be told from another cluster's")
	}
	if cl.Ephemeral {
		return &none{legacy: path, cluster: cl.ID, fresh: fresh, log: log}, nil
	}
	ext := filepath.Ext(path)
	bound := strings.TrimSuffix(path, ext) + ".kafka-" + SafeName(cl.ID) + ext
	return &clusterFile{file: NewFile(bound), legacy: path, cluster: cl, fresh: fresh, log: log}, nil
}

// SafeName maps s to characters that are safe in a file name everywhere, for names made of hosts or ids.
func SafeName(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '.' || r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' {
			return r
		}
		return '_'
	}, s)
}

// content is a cluster-bound cursor file: JSON, so that an earlier version reading it (after a downgrade) fails
// on it rather than misreading it.
type content struct {
	Cluster string `json:"kafka_cluster_id"`
	Cursor  string `json:"cursor"`
}

// clusterFile is the cursor file of one cluster.
type clusterFile struct {
	file    *File
	legacy  string // the cursor file of earlier versions, shared by every cluster
	cluster Cluster
	fresh   string
	log     *slog.Logger

	once     sync.Once
	adoptErr error
}

// Path returns the cluster's cursor file.
func (f *clusterFile) Path() string { return f.file.Path() }

// Load returns the cluster's cursor, after adopting an earlier version's file if the cluster has none, and says in
// the log which cursor the source starts from and why.
func (f *clusterFile) Load() (string, bool, error) {
	if err := f.adoptOnce(); err != nil {
		return "", false, err
	}
	raw, ok, err := f.file.Load()
	if err != nil {
		return "", false, err
	}
	if !ok {
		f.log.Info("no cursor for this Kafka cluster: starting "+f.fresh, "file", f.Path(), "kafka_cluster", f.cluster.ID)
		return "", false, nil
	}
	var c content
	if err := json.Unmarshal([]byte(raw), &c); err != nil || c.Cursor == "" {
		return "", false, fmt.Errorf("cursor file %s holds %q, not {\"kafka_cluster_id\":…,\"cursor\":…}: fix or remove it", f.Path(), raw)
	}
	if c.Cluster != f.cluster.ID {
		return "", false, fmt.Errorf("cursor file %s was written for Kafka cluster %q, not %q, the cluster connected to: it was copied or renamed; remove it, or rename it after its own cluster", f.Path(), c.Cluster, f.cluster.ID)
	}
	f.log.Info("resuming from this Kafka cluster's cursor", "file", f.Path(), "kafka_cluster", f.cluster.ID, "cursor", c.Cursor)
	return c.Cursor, true, nil
}

// Save replaces the cluster's cursor durably.
func (f *clusterFile) Save(value string) error {
	if err := f.adoptOnce(); err != nil {
		return err
	}
	return f.save(value)
}

func (f *clusterFile) save(value string) error {
	b, err := json.Marshal(content{Cluster: f.cluster.ID, Cursor: value})
	if err != nil {
		return fmt.Errorf("save cursor: %w", err)
	}
	return f.file.Save(string(b))
}

// adoptOnce adopts before the first Load or Save, whichever comes first: a source started with an explicit cursor
// saves without loading, and must still claim the old file for its cluster rather than leave it to the next one.
func (f *clusterFile) adoptOnce() error {
	f.once.Do(func() { f.adoptErr = f.adopt() })
	return f.adoptErr
}

// adopt gives the earlier version's cursor file to this cluster when it has no file of its own and is not the
// embedded broker. That file counts the acknowledgements of the one cluster the earlier version wrote to, which
// is most likely the first real cluster the new version meets; the warning says so, for the operator who knows
// better. The file is first renamed to a name of this cluster's (atomically, so that no other cluster can adopt it
// too, also after a crash), then copied into this cluster's file and removed: left behind, it would be adopted
// again once an operator removed the cluster's file.
func (f *clusterFile) adopt() error {
	if exists, err := fileExists(f.Path()); exists || err != nil {
		return err
	}
	adopting := f.legacy + ".adopting-kafka-" + SafeName(f.cluster.ID)
	exists, err := fileExists(adopting)
	if err != nil {
		return err
	}
	if !exists { // else a crash came between the rename and the copy: finish the copy
		if found, err := fileExists(f.legacy); !found || err != nil {
			return err
		}
		if f.cluster.Embedded {
			warnLegacyLeft(f.log, f.legacy, f.cluster.ID)
			return nil
		}
		if err := os.Rename(f.legacy, adopting); err != nil {
			return fmt.Errorf("adopting cursor file %s: %w", f.legacy, err)
		}
	}
	v, ok, err := NewFile(adopting).Load()
	if err != nil {
		return err
	}
	if ok {
		if err := f.save(v); err != nil {
			return err
		}
		f.log.Warn("adopted the cursor file of an earlier atkafka version, which recorded no Kafka cluster, for this cluster; "+
			"if that version wrote to another cluster, stop now and remove "+f.Path(),
			"legacy_file", f.legacy, "file", f.Path(), "kafka_cluster", f.cluster.ID, "cursor", v)
	}
	if err := os.Remove(adopting); err != nil {
		return fmt.Errorf("adopting cursor file %s: %w", f.legacy, err)
	}
	return nil
}

// none is the store of an ephemeral cluster: nothing is kept, and nothing is read.
type none struct {
	legacy, cluster, fresh string
	log                    *slog.Logger
}

// Load finds no cursor, and says why.
func (n *none) Load() (string, bool, error) {
	if found, _ := fileExists(n.legacy); found {
		warnLegacyLeft(n.log, n.legacy, n.cluster)
	}
	n.log.Info("no cursor for this Kafka cluster: the embedded broker keeps its records in memory only, so no cursor is kept either; starting "+n.fresh,
		"kafka_cluster", n.cluster)
	return "", false, nil
}

// Save keeps nothing: the records it would count end with the process.
func (n *none) Save(string) error { return nil }

// String says where the cursor is kept, for Describe.
func (n *none) String() string { return "nowhere (embedded in-memory broker)" }

// warnLegacyLeft says that the embedded broker passes over an earlier version's cursor file.
func warnLegacyLeft(log *slog.Logger, legacy, cluster string) {
	log.Warn("a cursor file of an earlier atkafka version is left for the first real Kafka cluster; the embedded broker never adopts one",
		"legacy_file", legacy, "kafka_cluster", cluster)
}

func fileExists(path string) (bool, error) {
	_, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("cursor file: %w", err)
	}
	return true, nil
}
