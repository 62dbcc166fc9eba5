package bench

import (
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"time"
)

// Statistics of the comparisons: a confidence interval of a ratio from its
// per-round paired ratios, and the CPU time the machine spent.

// Interval is a confidence interval of a ratio to the baseline: from the
// ratios of samples measured in the same round, the geometric mean and a
// t-interval on their logarithms (a ratio's noise is multiplicative: a path
// 10% slower in a loud minute is 10% slower whatever its speed).
type Interval struct {
	// Level is the confidence (0.95).
	Level float64 `json:"level"`
	// N is the number of paired rounds it is computed from.
	N int `json:"n"`
	// GeoMean is the geometric mean of the per-round ratios: the
	// interval's centre.
	GeoMean float64 `json:"geoMean"`
	Lo      float64 `json:"lo"`
	Hi      float64 `json:"hi"`
}

// ciLevel is the confidence of every interval of the report.
const ciLevel = 0.95

// t975 are the 0.975 quantiles of Student's t distribution by degrees of
// freedom (1…30); above 30 the normal's 1.96 is close enough.
var t975 = []float64{0, 12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
	2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
	2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042}

func tQuantile975(df int) float64 {
	if df < len(t975) {
		return t975[df]
	}
	return 1.96
}

// ratioInterval returns the 95% interval of the ratio whose per-round
// values are ratios: exp(mean(log r) ± t(n−1) · sd(log r)/√n). Ratios that
// are not positive (a cost that the idle subtraction took to zero or
// below) cannot be logged and are left out. It needs two ratios at least.
func ratioInterval(ratios []float64) (Interval, bool) {
	var logs []float64
	for _, r := range ratios {
		if r > 0 && !math.IsInf(r, 0) && !math.IsNaN(r) {
			logs = append(logs, math.Log(r))
		}
	}
	n := len(logs)
	if n < 2 {
		return Interval{}, false
	}
	var sum float64
	for _, l := range logs {
		sum += l
	}
	mean := sum / float64(n)
	var ss float64
	for _, l := range logs {
		ss += (l - mean) * (l - mean)
	}
	half := tQuantile975(n-1) * math.Sqrt(ss/float64(n-1)) / math.Sqrt(float64(n))
	return Interval{Level: ciLevel, N: n, GeoMean: math.Exp(mean), Lo: math.Exp(mean - half), Hi: math.Exp(mean + half)}, true
}

// String prints the interval: "0.93 (0.85–1.02)".
func (iv *Interval) String() string {
	if iv == nil {
		return "—"
	}
	return fmt.Sprintf("%.2f (%.2f–%.2f)", iv.GeoMean, iv.Lo, iv.Hi)
}

// intervalVerdict judges a ratio goal on the interval: pass when the whole
// interval meets the goal, miss when none of it does, unclear when it
// holds the threshold (the run cannot tell).
func intervalVerdict(g *Goal, iv Interval) string {
	switch {
	case g.MaxRatio > 0 && iv.Hi <= g.MaxRatio, g.MinRatio > 0 && iv.Lo >= g.MinRatio:
		return "pass"
	case g.MaxRatio > 0 && iv.Lo > g.MaxRatio, g.MinRatio > 0 && iv.Hi < g.MinRatio:
		return "miss"
	}
	return "unclear"
}

// userHZ is the unit of /proc/stat's times (USER_HZ: 100 on every Linux
// architecture calyx runs on).
const userHZ = 100

// cpuTimes is a reading of /proc/stat's first line with the time it was
// taken. The machine's work is measured as what its CPUs did not spend
// idle: busy = CPUs × wall − idle − iowait − steal. The kernel keeps idle
// time exactly (NO_HZ: from the clock at each idle entry and exit, and an
// interrupt while idle is not idle), where user, system and softirq are
// sampled at each tick (250 Hz here, without IRQ_TIME_ACCOUNTING): a load
// paced by a timer (iperf3 -b, calyx-load --rate) can run between ticks and
// be missed, and summing those fields read 0.05 CPUs for a 6 Gbit/s
// stream. Steal (the hypervisor running a neighbour) is not this machine's
// work.
type cpuTimes struct {
	// idle is idle + iowait + steal, in jiffies, over cpus CPUs.
	idle uint64
	cpus int
	// ticked is user + nice + system + irq + softirq (tick-sampled), for
	// comparison.
	ticked uint64
	at     time.Time
}

// parseProcStat reads the aggregate "cpu" line of /proc/stat and counts
// the cpuN lines (the online CPUs).
func parseProcStat(s string) (cpuTimes, error) {
	lines := strings.Split(s, "\n")
	f := strings.Fields(lines[0])
	if len(f) < 9 || f[0] != "cpu" {
		return cpuTimes{}, fmt.Errorf("/proc/stat: unexpected first line %q", lines[0])
	}
	var v [10]uint64
	for i := 1; i < len(f) && i <= len(v); i++ {
		n, err := strconv.ParseUint(f[i], 10, 64)
		if err != nil {
			return cpuTimes{}, fmt.Errorf("/proc/stat: %q: %w", lines[0], err)
		}
		v[i-1] = n
	}
	// user nice system idle iowait irq softirq steal guest guest_nice;
	// guest time is already counted in user.
	t := cpuTimes{idle: v[3] + v[4] + v[7], ticked: v[0] + v[1] + v[2] + v[5] + v[6]}
	for _, l := range lines[1:] {
		if strings.HasPrefix(l, "cpu") {
			t.cpus++
		}
	}
	if t.cpus == 0 {
		return cpuTimes{}, fmt.Errorf("/proc/stat: no per-CPU lines")
	}
	return t, nil
}

func readCPUTimes() (cpuTimes, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuTimes{}, err
	}
	t, err := parseProcStat(string(b))
	t.at = time.Now()
	return t, err
}

// busySeconds is the CPU time the machine worked between two readings
// (not idle, not stolen), never below zero.
func busySeconds(t0, t1 cpuTimes) float64 {
	wall := t1.at.Sub(t0.at).Seconds()
	return math.Max(0, float64(t0.cpus)*wall-float64(t1.idle-t0.idle)/userHZ)
}

// tickedSeconds is the tick-sampled work between two readings.
func tickedSeconds(t0, t1 cpuTimes) float64 { return float64(t1.ticked-t0.ticked) / userHZ }

// netCPUSeconds is the CPU time a run of wall seconds cost beyond the
// machine's background: busy minus the idle baseline's rate (CPU seconds
// per second, measured with nothing running in the same round) times the
// run's length.
func netCPUSeconds(busy, wall, idleRate float64) float64 { return busy - idleRate*wall }

// ksoftirqd: softirq work the kernel defers to its per-CPU ksoftirqd/N
// threads (too much of it at one interrupt exit) runs in no process of the
// lab, so no cgroup of the lab is charged for it. The lab's figure adds
// their runtime over the run (see costMethod).

// ksoftirqdPids lists the pids of the ksoftirqd/N kernel threads.
func ksoftirqdPids() ([]int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		comm, err := os.ReadFile("/proc/" + e.Name() + "/comm")
		if err == nil && strings.HasPrefix(string(comm), "ksoftirqd/") {
			pids = append(pids, pid)
		}
	}
	if len(pids) == 0 {
		return nil, fmt.Errorf("no ksoftirqd thread in /proc")
	}
	return pids, nil
}

// parseSchedstat returns the runtime of /proc/<pid>/schedstat (its first
// field: nanoseconds on the CPU, exact, from the scheduler).
func parseSchedstat(s string) (time.Duration, error) {
	f := strings.Fields(s)
	if len(f) < 1 {
		return 0, fmt.Errorf("schedstat: empty")
	}
	n, err := strconv.ParseUint(f[0], 10, 63)
	if err != nil {
		return 0, fmt.Errorf("schedstat %q: %w", s, err)
	}
	return time.Duration(n), nil
}

// threadsRuntime is the summed runtime of the threads pids.
func threadsRuntime(pids []int) (time.Duration, error) {
	var sum time.Duration
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/schedstat", pid))
		if err != nil {
			return 0, err
		}
		d, err := parseSchedstat(string(b))
		if err != nil {
			return 0, err
		}
		sum += d
	}
	return sum, nil
}
