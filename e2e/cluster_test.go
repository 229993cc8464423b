package e2e

import (
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/atkafka/atkafka/source/relay"
	"github.com/atkafka/atkafka/source/relay/relaytest"
)

// TestCursorBoundToCluster is issue 12's loss path: a run against the real cluster, then one that lost its
// --bootstrap-servers (so atkafka served its embedded broker), then the real cluster again, all in one data
// folder. The embedded run must neither start from nor move the real cluster's cursor, so that every frame of the
// replay ends up in the real cluster. (Before cursors were bound to their cluster, the third run resumed where the
// embedded one stopped, and the real cluster missed every frame in between.) The folder starts with an earlier
// version's cursor file, which the first run adopts.
func TestCursorBoundToCluster(t *testing.T) {
	t.Parallel()
	// 20 loops of the capture (3000 frames, contiguous seqs), paced so that each run stops mid-stream.
	srv := relaytest.NewServer(relaytest.CorpusFrames(t), relaytest.Loops(20), relaytest.Pace(300))
	t.Cleanup(srv.Close)
	args := relayArgs(srv.URL(), "--enrich=false")
	// The data folder of an upgrade: an earlier version's cursor file, naming no cluster, from just before the
	// replay. The first real cluster adopts it.
	dir := t.TempDir()
	legacy, err := relay.CursorFile(dir, srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	legacySeq := strconv.FormatInt(srv.FirstSeq()-1, 10)
	if err := os.WriteFile(legacy, []byte(legacySeq+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	first := startAtkafka(t, runConfig{Args: args, DataDir: dir})
	first.WaitCommitted(srv.FirstSeq()+300, time.Minute)
	first.Stop()
	saved, cluster, ok := first.cursorFile()
	if !ok || saved >= srv.LastSeq()-600 {
		t.Fatalf("cursor file %d (present: %v): the first run was not stopped early enough in %d..%d", saved, ok, srv.FirstSeq(), srv.LastSeq())
	}
	if !strings.Contains(first.Log(), `"msg":"adopted the cursor file of an earlier atkafka version`) {
		t.Errorf("the first run did not warn that it adopted the earlier version's cursor file")
	}

	embedded := startAtkafka(t, runConfig{Args: args, DataDir: dir, Embedded: true})
	// It reads from the start of the replay, having no cursor: past saved means it consumed frames the real
	// cluster has not got yet.
	embedded.WaitCommitted(saved+300, time.Minute)
	embedded.Stop()
	if after, afterCluster, _ := first.cursorFile(); after != saved || afterCluster != cluster {
		t.Errorf("after the embedded run the cursor file holds %d of cluster %s, want %d of %s", after, afterCluster, saved, cluster)
	}
	if !strings.Contains(embedded.Log(), "no cursor for this Kafka cluster: the embedded broker keeps its records in memory only") {
		t.Errorf("the embedded run did not say why it has no cursor")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("data folder holds %v, want the real cluster's cursor file alone", entries)
	}

	third := startAtkafka(t, runConfig{Args: args, DataDir: dir, Topic: first.Topic})
	third.WaitCommitted(srv.LastSeq(), 2*time.Minute)
	if cursors := srv.Cursors(); !slices.Equal(cursors, []string{legacySeq, "", strconv.FormatInt(saved, 10)}) {
		t.Errorf("connections asked for cursors %q, want the adopted %s, the tip, then %d", cursors, legacySeq, saved)
	}
	resumed := `"msg":"resuming from this Kafka cluster's cursor","file":`
	if log := third.Log(); !strings.Contains(log, resumed) || !strings.Contains(log, `"kafka_cluster":"`+cluster+`","cursor":"`+strconv.FormatInt(saved, 10)+`"`) {
		t.Errorf("the third run did not say which cursor it resumed from")
	}
	// Every capture frame makes at least one record.
	all := seqCounts(third.Records(srv.Len()))
	missing := 0
	for seq := srv.FirstSeq(); seq <= srv.LastSeq(); seq++ {
		if all[seq] == 0 {
			missing++
		}
	}
	if missing > 0 {
		t.Errorf("%d of the replay's %d frames are missing from the real cluster", missing, srv.Len())
	}
	t.Logf("real cluster %s: first run to %d, embedded run past %d, all %d frames delivered", cluster, saved, saved+300, srv.Len())
}
