// Command calyx-bench runs calyx's benchmarks and writes the report.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/calyxnet/calyx/tests/bench"
)

func main() {
	bin := flag.String("bin", "bin", "directory with calyx-agent")
	out := flag.String("out", "BENCHMARKS.md", "report to write")
	quick := flag.Bool("quick", os.Getenv("BENCH_QUICK") != "", "a short pass")
	bpfBench := flag.String("bpf-bench", "", "go test -bench output of ./bpf/ to include")
	only := flag.String("only", "", "comma-separated sections to run ("+strings.Join(bench.Sections, ", ")+"); default all")
	flag.Parse()
	var sections []string
	if *only != "" {
		sections = strings.Split(*only, ",")
	}
	// Ctrl-C or SIGTERM cancels the run; every lab is still removed on the
	// way out (further signals are ignored until then).
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := bench.Run(ctx, bench.Options{BinDir: *bin, Report: *out, Quick: *quick, BPFBench: *bpfBench, Only: sections})
	if ctx.Err() != nil {
		fmt.Fprintln(os.Stderr, "calyx-bench: interrupted; labs removed")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "calyx-bench:", err)
		os.Exit(1)
	}
}
