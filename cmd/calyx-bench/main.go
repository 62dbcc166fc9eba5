// Command calyx-bench runs calyx's benchmarks and writes the report
// (BENCHMARKS.md), the machine-readable results and the charts.
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
	bin := flag.String("bin", "bin", "directory with calyx-agent, calyxctl and calyx-load")
	out := flag.String("out", "BENCHMARKS.md", "report to write")
	jsonOut := flag.String("json", "bench/results.json", "machine-readable results to write (empty: none)")
	charts := flag.String("charts", "bench", "directory for the PNG charts (empty: none)")
	quick := flag.Bool("quick", os.Getenv("BENCH_QUICK") != "", "a short pass (about a minute) that checks everything works")
	rounds := flag.Int("rounds", 0, "rounds of the two-host, floating-IP and vm sections (0: 5, or 1 with --quick)")
	bpfBench := flag.String("bpf-bench", "", "`go test -bench` output of ./bpf/ for the per-packet section")
	only := flag.String("only", "", "comma-separated sections to run ("+strings.Join(bench.SectionKeys(), ", ")+"); default all. The other sections keep their figures from --json")
	flag.Parse()
	var sections []string
	if *only != "" {
		sections = strings.Split(*only, ",")
	}
	// Ctrl-C or SIGTERM cancels the run; every lab is still removed on the
	// way out (further signals are ignored until then).
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := bench.Run(ctx, bench.Options{BinDir: *bin, Report: *out, JSON: *jsonOut, ChartDir: *charts, Quick: *quick, Rounds: *rounds, BPFBench: *bpfBench, Only: sections})
	if ctx.Err() != nil {
		fmt.Fprintln(os.Stderr, "calyx-bench: interrupted; labs removed, nothing written")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "calyx-bench:", err)
		os.Exit(1)
	}
}
