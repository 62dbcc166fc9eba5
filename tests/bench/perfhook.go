package bench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Profiling hook for investigations, off by default: with
// CALYX_BENCH_PERF=<dir> (and CALYX_BENCH_PERF_METRIC, tcp4 by default) the
// two-host runs of that metric are sampled machine-wide, call graphs
// included (perf record -a -g, software cpu-clock: this VM has no hardware
// cycles counter), into <dir>/<case>-r<round>.data, with the per-CPU
// /proc/stat and /proc/softirqs of the run beside it (.cpu). perf costs CPU
// itself: figures of a profiled run are not figures for the report.

// profileRun starts perf for metric m of case id in round when the hook is
// on; the function it returns waits for it and writes the CPU readings.
func profileRun(m metric, id string, round, seconds int) (func() error, error) {
	dir := os.Getenv("CALYX_BENCH_PERF")
	want := os.Getenv("CALYX_BENCH_PERF_METRIC")
	if want == "" {
		want = MetricTCP4
	}
	if dir == "" || m.key != want {
		return func() error { return nil }, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	base := filepath.Join(dir, fmt.Sprintf("%s-r%d", id, round+1))
	stat0, _ := os.ReadFile("/proc/stat")
	soft0, _ := os.ReadFile("/proc/softirqs")
	cmd := exec.Command("perf", "record", "-a", "-g", "-e", "cpu-clock", "-F", "999", "-o", base+".data", "--", "sleep", fmt.Sprint(seconds))
	cmd.Stdout, cmd.Stderr = nil, nil
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("perf record: %w", err)
	}
	return func() error {
		werr := cmd.Wait()
		stat1, _ := os.ReadFile("/proc/stat")
		soft1, _ := os.ReadFile("/proc/softirqs")
		var b strings.Builder
		fmt.Fprintf(&b, "# /proc/stat before\n%s# /proc/stat after\n%s# /proc/softirqs before\n%s# /proc/softirqs after\n%s", stat0, stat1, soft0, soft1)
		if err := os.WriteFile(base+".cpu", []byte(b.String()), 0o644); err != nil {
			return err
		}
		if werr != nil {
			return fmt.Errorf("perf record: %w", werr)
		}
		return nil
	}, nil
}
