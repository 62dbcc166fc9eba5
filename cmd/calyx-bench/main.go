// Command calyx-bench runs calyx's benchmarks and writes the report.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/calyxnet/calyx/tests/bench"
)

func main() {
	bin := flag.String("bin", "bin", "directory with calyx-agent")
	out := flag.String("out", "BENCHMARKS.md", "report to write")
	quick := flag.Bool("quick", os.Getenv("BENCH_QUICK") != "", "a short pass")
	bpfBench := flag.String("bpf-bench", "", "go test -bench output of ./bpf/ to include")
	flag.Parse()
	if err := bench.Run(context.Background(), bench.Options{BinDir: *bin, Report: *out, Quick: *quick, BPFBench: *bpfBench}); err != nil {
		fmt.Fprintln(os.Stderr, "calyx-bench:", err)
		os.Exit(1)
	}
}
