package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/atkafka/atkafka/sink/embedded"
	"github.com/atkafka/atkafka/source/relay/relaytest"
)

// ServeConfig configures the load-generator process: everything atkafka talks to except a real broker.
type ServeConfig struct {
	CorpusDir string
	Loops     int
	// Rate paces the replay in frames per second per connection; 0 sends as fast as the client reads.
	Rate float64
	// Embedded also starts an embedded broker (kfake) in this process.
	Embedded bool
	// DistinctDIDs gives every loop's frames account DIDs no other loop has (relaytest.DistinctDIDs).
	DistinctDIDs bool
	// PLCLatency and APILatency delay every answer of the fake PLC and the fake AppView.
	PLCLatency, APILatency time.Duration
}

// ServeFlags defines on fs the flags of the load generator's serve subcommand, which StartHelper passes.
func ServeFlags(fs *flag.FlagSet, cfg *ServeConfig) {
	fs.StringVar(&cfg.CorpusDir, "corpus", "", "relay capture folder")
	fs.IntVar(&cfg.Loops, "loops", 1, "times the capture is replayed")
	fs.Float64Var(&cfg.Rate, "rate", 0, "frames/s per connection (0: unpaced)")
	fs.BoolVar(&cfg.Embedded, "embedded", false, "also run the embedded broker")
	fs.BoolVar(&cfg.DistinctDIDs, "distinct-dids", false, "rewrite account DIDs per loop")
	fs.DurationVar(&cfg.PLCLatency, "plc-latency", 0, "delay of every fake PLC answer")
	fs.DurationVar(&cfg.APILatency, "api-latency", 0, "delay of every fake AppView answer")
}

// Endpoints is what the load-generator process serves, written as one JSON line on its stdout.
type Endpoints struct {
	RelayURL string `json:"relay_url"`
	PLCURL   string `json:"plc_url"`
	Broker   string `json:"broker,omitempty"`
	FirstSeq int64  `json:"first_seq"`
	LastSeq  int64  `json:"last_seq"`
	Frames   int    `json:"frames"`
}

// Serve runs the load generator until stdin closes (the parent went away): the corpus replayed as
// subscribeRepos, a fake PLC serving the corpus DID documents, and optionally the embedded broker.
func Serve(ctx context.Context, cfg ServeConfig, stdin io.Reader, stdout io.Writer) error {
	frames, err := relaytest.LoadFrames(filepath.Join(cfg.CorpusDir, "frames.bin.zst"))
	if err != nil {
		return err
	}
	docs, err := LoadDIDDocs(cfg.CorpusDir)
	if err != nil {
		return err
	}
	opts := []relaytest.Option{relaytest.Loops(cfg.Loops)}
	if cfg.Rate > 0 {
		opts = append(opts, relaytest.Pace(cfg.Rate))
	}
	if cfg.DistinctDIDs {
		opts = append(opts, relaytest.DistinctDIDs())
	}
	srv := relaytest.NewServer(frames, opts...)
	defer srv.Close()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	plc := &http.Server{Handler: FakePLC(docs, cfg.PLCLatency, cfg.APILatency)}
	go plc.Serve(ln)
	defer plc.Close()

	ep := Endpoints{RelayURL: srv.URL(), PLCURL: "http://" + ln.Addr().String(), FirstSeq: srv.FirstSeq(),
		LastSeq: srv.LastSeq(), Frames: srv.Len()}
	if cfg.Embedded {
		b, err := embedded.Start(ctx, embedded.Config{Addr: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			return err
		}
		defer b.Close()
		ep.Broker = b.Addrs()[0]
	}
	line, _ := json.Marshal(ep)
	if _, err := fmt.Fprintf(stdout, "%s\n", line); err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, stdin) // until the parent closes it or exits
	return nil
}

// LoadDIDDocs reads the corpus DID documents (did_docs.json.zst): DID → document.
func LoadDIDDocs(dir string) (map[string]json.RawMessage, error) {
	f, err := os.Open(filepath.Join(dir, "did_docs.json.zst"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	zr, err := zstd.NewReader(f)
	if err != nil {
		return nil, err
	}
	defer zr.Close()
	var docs map[string]json.RawMessage
	if err := json.NewDecoder(zr).Decode(&docs); err != nil {
		return nil, fmt.Errorf("did_docs.json.zst: %w", err)
	}
	return docs, nil
}

// Helper is the load-generator process started by StartHelper.
type Helper struct {
	Endpoints
	cmd   *exec.Cmd
	stdin io.WriteCloser
}

// StartHelper re-executes this binary as `<exe> serve <args>` and waits for its endpoints. The binary's main
// must route the serve subcommand to Serve.
func StartHelper(cfg ServeConfig) (*Helper, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	args := []string{"serve", "--corpus", cfg.CorpusDir, "--loops", strconv.Itoa(cfg.Loops),
		"--rate", strconv.FormatFloat(cfg.Rate, 'g', -1, 64)}
	if cfg.Embedded {
		args = append(args, "--embedded")
	}
	if cfg.DistinctDIDs {
		args = append(args, "--distinct-dids")
	}
	args = append(args, "--plc-latency", cfg.PLCLatency.String(), "--api-latency", cfg.APILatency.String())
	cmd := exec.Command(exe, args...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	h := &Helper{cmd: cmd, stdin: stdin}
	line, err := bufio.NewReader(stdout).ReadBytes('\n')
	if err == nil {
		err = json.Unmarshal(line, &h.Endpoints)
	}
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("load generator did not start: %w", err)
	}
	return h, nil
}

// PID is the load generator's process id.
func (h *Helper) PID() int { return h.cmd.Process.Pid }

// Close ends the load generator and waits for it.
func (h *Helper) Close() {
	h.stdin.Close()
	_ = h.cmd.Wait()
}
