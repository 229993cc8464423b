package bench

import (
	"context"
	"flag"
	"fmt"
	"os"
	"testing"
)

// TestMain lets the test binary be its own load generator: StartHelper re-executes it as `<exe> serve ...`.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "serve" {
		fs := flag.NewFlagSet("serve", flag.ExitOnError)
		var cfg ServeConfig
		fs.StringVar(&cfg.CorpusDir, "corpus", "", "")
		fs.IntVar(&cfg.Loops, "loops", 1, "")
		fs.Float64Var(&cfg.Rate, "rate", 0, "")
		fs.BoolVar(&cfg.Embedded, "embedded", false, "")
		_ = fs.Parse(os.Args[2:])
		if err := Serve(context.Background(), cfg, os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}
