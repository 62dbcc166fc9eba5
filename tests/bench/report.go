package bench

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"runtime"
	"sort"
	"strings"
	"time"
)

// Options control one benchmark run.
type Options struct {
	BinDir   string
	Report   string // BENCHMARKS.md to write
	BPFBench string // `go test -bench` output of ./bpf/ to include, if any
	Quick    bool
}

// Run measures every case and writes the report.
func Run(ctx context.Context, o Options) error {
	n, adds, secs, runs := 10000, 100, 5, 5
	if o.Quick {
		n, adds, secs, runs = 2000, 20, 2, 2
	}
	fmt.Fprintf(os.Stderr, "throughput: %d runs of %d s per path\n", runs, secs)
	tp, err := LocalThroughput(ctx, o.BinDir, secs, runs)
	if err != nil {
		return fmt.Errorf("throughput: %w", err)
	}
	fmt.Fprintf(os.Stderr, "control plane: %d endpoints, %d single adds\n", n, adds)
	cp, err := ControlPlane(ctx, o.BinDir, n, adds)
	if err != nil {
		return fmt.Errorf("control plane: %w", err)
	}

	var b strings.Builder
	fmt.Fprintf(&b, "# calyx benchmarks\n\n")
	fmt.Fprintf(&b, "Written by `make bench` on %s. Figures are this machine's: %s.\n", time.Now().UTC().Format("2006-01-02"), machine())
	fmt.Fprintf(&b, "Performance is reported, never asserted in tests.\n\n")

	fmt.Fprintf(&b, "## Throughput between two workloads on one host\n\n")
	fmt.Fprintf(&b, "One TCP stream (iperf3, %d s, %d runs per path, alternating), workload namespaces on veth pairs into one host namespace.\n", secs, runs)
	fmt.Fprintf(&b, "calyx: BPF local delivery (`bpf_redirect_peer`). Kernel: the same topology routed by the kernel (proxy_arp + /32 routes), in the same run.\n\n")
	fmt.Fprintf(&b, "| path | median Gbit/s | min | max |\n|---|---|---|---|\n")
	for _, r := range []struct {
		name string
		xs   []float64
	}{{"calyx BPF local delivery", tp.BPFGbps}, {"kernel routing", tp.KernelGbps}} {
		s := append([]float64(nil), r.xs...)
		sort.Float64s(s)
		fmt.Fprintf(&b, "| %s | %.1f | %.1f | %.1f |\n", r.name, Median(s), s[0], s[len(s)-1])
	}
	fmt.Fprintf(&b, "\n**Ratio calyx / kernel: %.2f**\n\n", Median(tp.BPFGbps)/Median(tp.KernelGbps))

	fmt.Fprintf(&b, "## Control plane\n\n")
	fmt.Fprintf(&b, "A real `calyx-agent` in its own network namespace follows a file datastore holding %d endpoints;\n", cp.Endpoints)
	fmt.Fprintf(&b, "each is a route in the BPF map. Time is measured from the datastore write to the entry being visible in the pinned map.\n\n")
	fmt.Fprintf(&b, "| measure | value |\n|---|---|\n")
	fmt.Fprintf(&b, "| write %d endpoints to the datastore (one apply) | %s |\n", cp.Endpoints, cp.ModelWriteTime.Round(time.Millisecond))
	fmt.Fprintf(&b, "| agent start → all %d routes in the map | %s |\n", cp.Endpoints, cp.FirstSync.Round(time.Millisecond))
	fmt.Fprintf(&b, "| one endpoint added at %d: p50 | %s |\n", cp.Endpoints, Percentile(cp.AddLatencies, 50).Round(10*time.Microsecond))
	fmt.Fprintf(&b, "| one endpoint added at %d: p99 | %s |\n", cp.Endpoints, Percentile(cp.AddLatencies, 99).Round(10*time.Microsecond))
	fmt.Fprintf(&b, "| one endpoint added at %d: max (n=%d) | %s |\n", cp.Endpoints, len(cp.AddLatencies), Percentile(cp.AddLatencies, 100).Round(10*time.Microsecond))
	fmt.Fprintf(&b, "| of which the datastore apply call (validate the whole model + write): p50 | %s |\n", Percentile(cp.ApplyTimes, 50).Round(10*time.Microsecond))
	fmt.Fprintf(&b, "| agent RSS after the adds | %.1f MiB |\n\n", float64(cp.AgentRSSKiB)/1024)
	fmt.Fprintf(&b, "Goal (issue: foundation): an endpoint added to a model of 10,000 is programmed in well under a second — ")
	if p99 := Percentile(cp.AddLatencies, 99); cp.Endpoints >= 10000 && p99 < 500*time.Millisecond {
		fmt.Fprintf(&b, "**pass** (p99 %s).\n\n", p99.Round(10*time.Microsecond))
	} else {
		fmt.Fprintf(&b, "**miss or not measured at 10,000** (p99 %s at %d).\n\n", p99.Round(10*time.Microsecond), cp.Endpoints)
	}

	if o.BPFBench != "" {
		rows, err := parseGoBench(o.BPFBench)
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "## Per-packet cost (BPF_PROG_TEST_RUN)\n\n")
		fmt.Fprintf(&b, "One program run per packet, repeated in the kernel (`RunOptions.Repeat`); includes the harness's own per-run cost.\n\n")
		fmt.Fprintf(&b, "| path | ns/packet |\n|---|---|\n")
		for _, r := range rows {
			fmt.Fprintf(&b, "| %s | %s |\n", r[0], r[1])
		}
		b.WriteString("\n")
	}
	return os.WriteFile(o.Report, []byte(b.String()), 0o644)
}

// parseGoBench takes `BenchmarkX-2  N  123 ns/op` lines.
func parseGoBench(path string) ([][2]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out [][2]string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) >= 4 && strings.HasPrefix(fs[0], "Benchmark") && fs[3] == "ns/op" {
			name := strings.TrimPrefix(fs[0], "Benchmark")
			if i := strings.LastIndex(name, "-"); i > 0 {
				name = name[:i]
			}
			out = append(out, [2]string{name, fs[2]})
		}
	}
	return out, sc.Err()
}

func machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "model name") {
				if _, v, ok := strings.Cut(l, ":"); ok {
					model = strings.TrimSpace(v)
				}
				break
			}
		}
	}
	kernel := ""
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = strings.TrimSpace(string(b))
	}
	return fmt.Sprintf("%s, %d CPUs, kernel %s, %s", model, runtime.NumCPU(), kernel, runtime.Version())
}
