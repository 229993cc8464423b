package bench

import (
	"bufio"
	"cmp"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/atkafka/atkafka/source/backfill"
	"github.com/atkafka/atkafka/source/backfill/backfilltest"
	"github.com/atkafka/atkafka/testenv"
)

// BackfillConfig configures the backfill benchmark.
type BackfillConfig struct {
	// Repos and MaxRecords shape the synthetic network (backfilltest.Sizes); Seed makes it repeatable.
	Repos, MaxRecords int
	Seed              uint64
	// Brokers is a real Kafka cluster; empty runs an in-process kfake cluster in the benchmark's process.
	Brokers []string
	// Instances lists the instance counts to run, one after the other, e.g. 1, 2, 4.
	Instances []int
	// Concurrency is each instance's --backfill-concurrency.
	Concurrency int
	// Partitions is the work topic's --backfill-partitions.
	Partitions int
	// PDSLatency and PDSBandwidth make the synthetic PDS answer like one across the internet (backfilltest.Network).
	PDSLatency   time.Duration
	PDSBandwidth int
	// FloorDuration is how long the single-goroutine floor runs at least.
	FloorDuration time.Duration
	// RunArgs are more flags for every instance (--enrich=false, say).
	RunArgs []string
	// CPUProfile, when set, is where a 5-second CPU profile of the first instance of the first run is written.
	CPUProfile string
	Out        io.Writer
}

// instanceResult is one atkafka backfill run process's share.
type instanceResult struct {
	records float64
	cpu     time.Duration
	rss     int64
}

// RunBackfill builds the synthetic network, measures the floor, then for each instance count plans a fresh work
// topic and runs that many `atkafka backfill run` processes (the built binary) until the group committed every
// work record, reporting records/s, CPU per record and peak RSS per instance and the spread of work.
func RunBackfill(ctx context.Context, cfg BackfillConfig) error {
	w := cfg.Out
	start := time.Now()
	sizes := backfilltest.Sizes(cfg.Repos, cfg.MaxRecords, cfg.Seed)
	network, err := backfilltest.Generate(sizes)
	if err != nil {
		return err
	}
	var total, carBytes int
	cars, dids := make([][]byte, len(network.Repos)), make([]string, len(network.Repos))
	for i, r := range network.Repos {
		total += len(r.Records)
		carBytes += len(r.CAR)
		cars[i], dids[i] = r.CAR, r.DID
	}
	sorted := slices.Clone(sizes)
	slices.Sort(sorted)
	fmt.Fprintf(w, "network: %d repositories, %d records (median %d, p99 %d, max %d per repository), %.1f MB of CARs, generated in %s\n",
		len(sizes), total, sorted[len(sorted)/2], sorted[len(sorted)*99/100], sorted[len(sorted)-1], float64(carBytes)/1e6,
		time.Since(start).Round(time.Millisecond))

	floorStart, floorCPU := time.Now(), CPUTime()
	floorRecords := 0
	for time.Since(floorStart) < cfg.FloorDuration || floorRecords == 0 {
		n, err := backfill.Floor(cars, dids)
		if err != nil {
			return fmt.Errorf("floor: %w", err)
		}
		floorRecords += n
	}
	floorElapsed, floorCPUUsed := time.Since(floorStart), CPUTime()-floorCPU
	// Per CPU-second, not per wall second: on a shared machine the floor's goroutine does not own a core.
	floorRate := float64(floorRecords) / floorCPUUsed.Seconds()
	fmt.Fprintf(w, "floor (one goroutine: CAR index, commit, MST walk, record to JSON, event): %.0f records/s wall, %.2f µs CPU/record (%.0f records per CPU-second)\n",
		float64(floorRecords)/floorElapsed.Seconds(), us(floorCPUUsed)/float64(floorRecords), floorRate)

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	network.PDS = "http://" + lis.Addr().String()
	network.Latency, network.Bandwidth = cfg.PDSLatency, cfg.PDSBandwidth
	srv := &http.Server{Handler: network}
	go srv.Serve(lis)
	defer srv.Close()

	brokers := cfg.Brokers
	if len(brokers) == 0 {
		c, err := kfake.NewCluster(kfake.NumBrokers(1))
		if err != nil {
			return err
		}
		defer c.Close()
		brokers = c.ListenAddrs()
	}
	dir, err := os.MkdirTemp("", "atkafka-bench-backfill-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	binary := filepath.Join(dir, "atkafka")
	build := exec.CommandContext(ctx, "go", "build", "-o", binary, "./cmd/atkafka")
	build.Dir = testenv.RepoRoot()
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("building atkafka: %v\n%s", err, out)
	}
	for i, n := range cfg.Instances {
		if i > 0 {
			cfg.CPUProfile = ""
		}
		if err := runInstances(ctx, cfg, binary, dir, brokers, network.PDS, n, total, floorRate); err != nil {
			return err
		}
	}
	return nil
}

func runInstances(ctx context.Context, cfg BackfillConfig, binary, dir string, brokers []string, pds string, n, total int,
	floorRate float64) error {
	w := cfg.Out
	topic := fmt.Sprintf("bench-backfill-%d-%d", n, time.Now().UnixNano())
	group := topic + "-group"
	common := []string{"--bootstrap-servers", strings.Join(brokers, ","), "--output-topic", topic, "--backfill-group", group,
		"--plc-host", pds, "--plc-rate-limit", "-1", "--log-format", "json", "--data-dir", dir, "--topic-partitions", "16"}
	plan := exec.CommandContext(ctx, binary, append([]string{"backfill", "plan", "--backfill-source", pds,
		"--backfill-partitions", strconv.Itoa(cfg.Partitions), "--metrics-listen-address", ""}, common...)...)
	if out, err := plan.CombinedOutput(); err != nil {
		return fmt.Errorf("backfill plan: %v\n%s", err, out)
	}
	type proc struct {
		cmd    *exec.Cmd
		addr   string
		log    string
		exited chan struct{} // closed once the process exited; err is its Wait's
		err    error
	}
	var procs []*proc
	started := time.Now()
	for i := range n {
		addr, err := freeAddr()
		if err != nil {
			return err
		}
		p := &proc{addr: addr, log: filepath.Join(dir, fmt.Sprintf("run-%d-%d.log", n, i)), exited: make(chan struct{})}
		p.cmd = exec.CommandContext(ctx, binary, append([]string{"backfill", "run", "--metrics-listen-address", addr,
			"--backfill-concurrency", strconv.Itoa(cfg.Concurrency), "--backfill-host-rate", "0", "--backfill-host-concurrency", "256",
			"--backfill-session-timeout", "10s"}, append(common, cfg.RunArgs...)...)...)
		logFile, err := os.Create(p.log)
		if err != nil {
			return err
		}
		defer logFile.Close()
		p.cmd.Stderr = logFile
		if err := p.cmd.Start(); err != nil {
			return err
		}
		go func() { p.err = p.cmd.Wait(); close(p.exited) }()
		procs = append(procs, p)
	}
	defer func() {
		for _, p := range procs {
			_ = p.cmd.Process.Signal(os.Interrupt)
			<-p.exited
		}
	}()
	if cfg.CPUProfile != "" {
		go profile(procs[0].addr, cfg.CPUProfile)
	}
	// Timed until the instances produced as many records as the network holds (a batch redone after a rebalance
	// counts twice, so this may be early by that batch); the group's offsets then confirm the work is done. Timing
	// Status instead added its own latency (it waits out the transaction markers at the work partitions' ends).
	opts := []kgo.Opt{kgo.SeedBrokers(brokers...)}
	var elapsed time.Duration
	for {
		if elapsed == 0 {
			var produced float64
			for _, p := range procs {
				produced += scrape(p.addr, "atkafka_backfill_records")
			}
			if produced >= float64(total) {
				elapsed = time.Since(started)
			}
		}
		p, err := backfill.Status(ctx, backfill.StatusConfig{Opts: opts, WorkTopic: topic + ".backfill",
			FailedTopic: topic + ".backfill.failed", OutputTopic: topic, Group: group})
		if err == nil && p.Planned > 0 && p.Remaining == 0 {
			elapsed = cmp.Or(elapsed, time.Since(started))
			break
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		for _, p := range procs {
			select {
			case <-p.exited: // an instance must run until the work is done: waiting for it would wait for ever
				tail, _ := os.ReadFile(p.log)
				return fmt.Errorf("backfill run on %s exited before the work was done (%v):\n%s", p.addr, p.err, lastLines(tail, 30))
			default:
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	var res []instanceResult
	var sum float64
	for _, p := range procs {
		r := instanceResult{cpu: ProcessCPU(p.cmd.Process.Pid), rss: ProcessPeakRSS(p.cmd.Process.Pid)}
		r.records = scrape(p.addr, "atkafka_backfill_records")
		sum += r.records
		res = append(res, r)
	}
	rate := float64(total) / elapsed.Seconds()
	fmt.Fprintf(w, "%d instance(s): %d records in %s (start-up and group join included): %.0f records/s in all, %.0f per instance\n",
		n, total, elapsed.Round(time.Millisecond), rate, rate/float64(n))
	mean := sum / float64(n)
	for i, r := range res {
		cpuPer := time.Duration(0)
		if r.records > 0 {
			cpuPer = r.cpu / time.Duration(r.records)
		}
		perCore := 0.0
		if r.cpu > 0 {
			perCore = r.records / r.cpu.Seconds()
		}
		fmt.Fprintf(w, "  instance %d: %.0f records (%+.1f%% of the mean), CPU %s (%.2f µs/record, %.0f records per CPU-second = %.2f× the floor), peak RSS %.0f MB\n",
			i, r.records, 100*(r.records-mean)/max(mean, 1), r.cpu.Round(time.Millisecond), us(cpuPer), perCore, perCore/floorRate,
			float64(r.rss)/1e6)
	}
	return nil
}

// scrape reads one unlabelled metric from an instance's /metrics.
func scrape(addr, name string) float64 {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}

// profile saves a 5-second CPU profile of the instance serving addr, taken once it is under way.
func profile(addr, path string) {
	time.Sleep(3 * time.Second)
	resp, err := http.Get("http://" + addr + "/debug/pprof/profile?seconds=5")
	if err != nil {
		return
	}
	defer resp.Body.Close()
	f, err := os.Create(path)
	if err != nil {
		return
	}
	defer f.Close()
	_, _ = io.Copy(f, resp.Body)
}

// freeAddr returns a loopback address with a port free now, for an instance's metrics: fixed ports would collide
// with another benchmark running on the machine.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// lastLines returns the last n lines of b.
func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
