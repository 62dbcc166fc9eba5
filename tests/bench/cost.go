package bench

import (
	"fmt"
	"math"
	"os"
	"strings"

	"github.com/calyxnet/calyx/tests/lab"
)

// CPU cost at a fixed offered load (issue 17). On a shared machine a
// saturating run measures the neighbours as much as the path: what the
// neighbours take, the stream does not get, and the verdicts flipped run to
// run. A run at a fixed rate well below saturation carries the same load on
// every path; what differs is the CPU time spent on it. Measured
// machine-wide, that time held the neighbours' too (half the CPUs, varying
// by the minute), and no idle baseline taken before a run could take them
// out again: intervals of 0.005–12. So the lab's processes run in a cgroup
// of their own (lab.Options.Cgroup) and the cost is their CPU time from
// its cpu.stat, plus the ksoftirqd threads'; /proc/stat less an idle
// baseline is the fallback where there is no cgroup v2.

// costFraction is the offered rate as a share of the first saturated
// figure measured in the run (the first path of the first round): low
// enough that every path carries it in a loud minute too.
const costFraction = 0.4

// Cost metric keys: the first part of the case IDs (cost1.bpf-direct).
const (
	MetricCost1 = "cost1"
	MetricCost4 = "cost4"
)

// Unit of a CPU cost per volume or per transaction.
const (
	unitCPUPerGB = "CPU s/GB"
	unitCPUPerKT = "CPU ms/1k transactions"
)

func twoHostCostMetrics() []metric {
	return []metric{
		{key: MetricCost1, title: "CPU cost at a fixed rate, one TCP stream", unit: unitCPUPerGB, streams: 1, rateOf: MetricTCP1},
		{key: MetricCost4, title: "CPU cost at a fixed rate, four TCP streams", unit: unitCPUPerGB, streams: 4, rateOf: MetricTCP4},
	}
}

// Goals of issue 17: every BPF path costs no more CPU per GB than the
// kernel's equivalent, judged on the 95% interval of the per-round ratios.
var twoHostCostGoals = map[string]*Goal{
	TwoHostCaseID(MetricCost1, CaseBPFDirect): {Issue: "issue 17", Text: "CPU per GB at a fixed rate: BPF direct ≤ plain routing (one stream)", MaxRatio: 1.0, OnInterval: true},
	TwoHostCaseID(MetricCost4, CaseBPFDirect): {Issue: "issue 17", Text: "CPU per GB at a fixed rate: BPF direct ≤ plain routing (four streams)", MaxRatio: 1.0, OnInterval: true},
	TwoHostCaseID(MetricCost1, CaseBPFVXLAN):  {Issue: "issue 17", Text: "CPU per GB at a fixed rate: BPF VXLAN ≤ kernel VXLAN device (one stream)", MaxRatio: 1.0, OnInterval: true},
	TwoHostCaseID(MetricCost4, CaseBPFVXLAN):  {Issue: "issue 17", Text: "CPU per GB at a fixed rate: BPF VXLAN ≤ kernel VXLAN device (four streams)", MaxRatio: 1.0, OnInterval: true},
}

// costTable is the table of cost metric m on the paths cases.
func costTable(m metric, cases []EncapCase, id func(metric, path string) string, goal func(EncapCase) *Goal) Table {
	t := Table{Title: m.title}
	for _, p := range cases {
		c := Case{ID: id(m.key, p.Key), Label: p.Label, Unit: m.unit, Better: LowerIsBetter, Kernel: !p.BPF, Goal: goal(p)}
		if p.Baseline != "" {
			c.Baseline = id(m.key, p.Baseline)
		}
		for _, a := range p.Also {
			c.Also = append(c.Also, id(m.key, a))
		}
		t.Cases = append(t.Cases, c)
	}
	t.Extras = []Extra{
		{Detail: "offeredGbps", Header: "carried Gbit/s (median)", Stat: "median", Format: "%.2f"},
		{Detail: "reached", Header: "share of the rate (min)", Stat: "min", Format: "%.2f"},
	}
	t.Extras = append(t.Extras, cpuExtras...)
	return t
}

// cpuExtras are the columns of a cost table on the CPU time measured: the
// lab's and ksoftirqd's (cgroup), the whole machine's (for comparison) and,
// on the /proc/stat fallback only, the idle baseline.
var cpuExtras = []Extra{
	{Detail: "labCPUs", Header: "lab's processes, CPUs (median)", Stat: "median", Format: "%.2f"},
	{Detail: "agentsCPUs", Header: "of which agents (median)", Stat: "median", Format: "%.3f"},
	{Detail: "ksoftirqdCPUs", Header: "ksoftirqd, CPUs (median)", Stat: "median", Format: "%.3f"},
	{Detail: "busyCPUs", Header: "whole machine busy, CPUs (median)", Stat: "median", Format: "%.2f"},
	{Detail: "idleCPUs", Header: "idle baseline CPUs (fallback, median)", Stat: "median", Format: "%.2f"},
}

// recordCPU records the CPU details of a cost run (see cpuExtras).
func recordCPU(rec *Recorder, id string, use cpuUse, idle float64) {
	rec.Detail(id, "busyCPUs", use.busy/use.wall)
	if use.hasLab {
		rec.Detail(id, "labCPUs", use.lab/use.wall)
		rec.Detail(id, "agentsCPUs", use.agents/use.wall)
		rec.Detail(id, "ksoftirqdCPUs", use.softirqd/use.wall)
		return
	}
	rec.Detail(id, "idleCPUs", idle)
}

// cpuNote is a cost run's CPU figures for the log.
func cpuNote(use cpuUse, idle float64) string {
	if use.hasLab {
		return fmt.Sprintf("lab %.3f CPUs (agents %.3f), ksoftirqd %.3f, machine %.2f", use.lab/use.wall, use.agents/use.wall, use.softirqd/use.wall, use.busy/use.wall)
	}
	return fmt.Sprintf("machine %.2f CPUs, idle baseline %.2f", use.busy/use.wall, idle)
}

// newCostLab creates the lab of a section with CPU cost figures (key) with
// its processes in a cgroup of their own. Without one (no cgroup v2, or it
// cannot be written) it fails under CI=true; elsewhere it warns, records
// why in <key>.cpuFallback (the report says so) and measures the whole
// machine from /proc/stat.
func newCostLab(opts lab.Options, rec *Recorder, key string) (*lab.Lab, error) {
	opts.Cgroup = true
	l, err := lab.New(opts)
	if err == nil {
		cg := l.Cgroup()
		rec.Param(key+".cgroup", cg.Path)
		rec.Param(key+".cgroupCPUController", cg.HasController("cpu"))
		return l, nil
	}
	if os.Getenv("CI") == "true" {
		return nil, fmt.Errorf("the lab's own cgroup, which the CPU cost needs (CI=true: no fallback): %w", err)
	}
	rec.logf("WARNING: %s: no cgroup of the lab's own (%v): the CPU cost falls back to the whole machine from /proc/stat less an idle baseline, which counts the neighbours too", key, err)
	rec.Param(key+".cpuFallback", err.Error())
	opts.Cgroup = false
	return lab.New(opts)
}

// fixedRate rounds a share of a saturated figure down to a step (0.5
// Gbit/s, 500 transactions/s), at least one step.
func fixedRate(saturated, step float64) float64 {
	return math.Max(step, math.Floor(saturated*costFraction/step)*step)
}

// costPerGB is the run's CPU seconds (cpuUse.cpuSeconds: the lab's with a
// cgroup, else busy less the idle baseline over the run) per GB carried.
func costPerGB(use cpuUse, idle float64, bytes int64) float64 {
	return use.cpuSeconds(idle) / (float64(bytes) / 1e9)
}

// costPerKT is the run's CPU milliseconds per thousand transactions.
func costPerKT(use cpuUse, idle float64, transactions int64) float64 {
	return use.cpuSeconds(idle) * 1e3 / (float64(transactions) / 1e3)
}

// cost runs metric m (a fixed-rate iperf3) on path c: the rate is fixed at
// its first use in the run from the path's saturated figure of m.rateOf
// just measured; on the /proc/stat fallback the idle baseline is measured
// once per path, right before its first cost run. It records the details and returns the cost
// per GB and the bytes iperf3 sent.
func (b *encapBench) cost(m metric, c EncapCase, ps pathSet, e pathEnds, id string) (float64, uint64, error) {
	gbps := b.rates[m.key]
	if gbps == 0 {
		sat := b.rec.Values(ps.id(m.rateOf, c.Key))
		if len(sat) == 0 {
			return 0, 0, fmt.Errorf("%s: no %s figure of %s to set the rate from", m.key, m.rateOf, c.Label)
		}
		gbps = fixedRate(sat[len(sat)-1], 0.5)
		b.rates[m.key] = gbps
		b.rec.Param("twohost."+m.key+"Gbps", gbps)
		b.logf("%s: fixed rate %.1f Gbit/s (%.0f%% of %s's %.2f Gbit/s)", m.key, gbps, costFraction*100, c.Label, sat[len(sat)-1])
	}
	if b.idle < 0 && b.l.Cgroup() == nil {
		idle, err := idleCPU(b.l.Context(), b.p.tcpSecs)
		if err != nil {
			return 0, 0, err
		}
		b.idle = idle
	}
	dst := e.addr(e.dst).String()
	rep, use, err := iperfRunAt(b.l, e.src.NS, e.dst.NS, dst, dst, b.p.tcpSecs, m.streams, gbps)
	if err != nil {
		return 0, 0, err
	}
	got := rep.BitsPerSecond / 1e9
	b.rec.Detail(id, "offeredGbps", got)
	b.rec.Detail(id, "reached", got/gbps)
	recordCPU(b.rec, id, use, b.idle)
	b.logf("%s %s: %.2f Gbit/s, %s", id, c.Label, got, cpuNote(use, b.idle))
	return costPerGB(use, b.idle, rep.SentBytes), uint64(rep.SentBytes), nil
}

// costMethod explains the fixed-rate cost measurements of a section.
func costMethod(rec *Recorder, key string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "- **CPU cost at a fixed rate** (issue 17): saturating throughput on this shared 2-CPU machine measures the neighbours as much as the path, and its verdicts flipped run to run. ")
	fmt.Fprintf(&b, "So every path also carries the same fixed load, well below saturation: iperf3 `-b` at %.1f Gbit/s (one stream) and %.1f Gbit/s (four streams, a quarter each), %.0f%% of the first saturated figure of the run (the first path of the first round), rounded down to 0.5 Gbit/s; each run is as long as a throughput run. ",
		paramFloat(rec, key+"."+MetricCost1+"Gbps"), paramFloat(rec, key+"."+MetricCost4+"Gbps"), costFraction*100)
	b.WriteString(cpuMethod(rec, key, "the iperf3 client's run", "GB iperf3 sent"))
	fmt.Fprintf(&b, "*Carried* is the rate iperf3 reached (*share of the rate* below 1 means the path could not carry it in some round). ")
	fmt.Fprintf(&b, "Lower is better; the ratio is BPF / kernel. The goals are judged on the 95%% interval of the per-round ratios (geometric mean, t-interval on the logarithms over the rounds): **pass** when the whole interval is ≤ 1, **miss** when the whole interval is above 1, **unclear** when it holds 1.\n")
	return b.String()
}

// cpuMethod explains how the CPU time of a cost run (over what, per what)
// is measured in section key: with the lab's cgroup, or on the /proc/stat
// fallback (key.cpuFallback says why).
func cpuMethod(rec *Recorder, key, over, per string) string {
	var b strings.Builder
	if why := paramString(rec, key+".cpuFallback"); why != "" {
		fmt.Fprintf(&b, "**This run had no cgroup of the lab's own (%s), so its cost figures are the whole machine's and count the neighbours too.** ", why)
		fmt.Fprintf(&b, "Over %s the machine's CPU time is read from /proc/stat as what its CPUs did not spend idle: CPUs × wall clock − (idle + iowait + steal), all CPUs. Right before a path's first cost run, the same reading over a run of the same length with nothing running is its *idle baseline*, and the cost is (busy − baseline × run length) per %s. ", over, per)
		return b.String()
	}
	fmt.Fprintf(&b, "The CPU time is the lab's own: every process the lab starts (the agents, iperf3's client and server, calyx-load's, BIRD, every `ip` and `calyxctl`) is created in a cgroup v2 of the run's own (`%s`, made when the lab starts and removed with it; clone3 with `CLONE_INTO_CGROUP`), and the cost is the growth of its `cpu.stat` `usage_usec` over %s — the scheduler's exact runtime of those processes — plus the runtime of the kernel's `ksoftirqd/N` threads over the run (`/proc/<pid>/schedstat`), per %s. The agents run in a child cgroup, `agents/`, so *of which agents* shows their share (the kernel paths run without agents). Their work includes a conntrack GC pass every 10 s, which removes the thousands of closed flows each crr run leaves: it lands in one of the cost runs that follow crr (which one depends on the tick) and shows there as 0.1–0.2 CPUs under *of which agents*, so that run's BPF cost carries the cleanup of crr's flows (see bench/cgroup-cost.md). ", paramString(rec, key+".cgroup"), over, per)
	if !paramBool(rec, key+".cgroupCPUController") {
		fmt.Fprintf(&b, "(This machine mounts cgroup v2 beside the v1 hierarchies and binds the cpu controller to v1; `usage_usec` does not need it: the cgroup core keeps it for every v2 cgroup.) ")
	}
	fmt.Fprintf(&b, "The neighbours' CPU time is in neither, so there is no idle baseline to subtract; *whole machine busy* (/proc/stat, neighbours included) is shown only for comparison. ")
	fmt.Fprintf(&b, "What this counts of the packet work: this kernel has no IRQ time accounting (/proc/stat's irq column stays 0), so softirq work is charged to the task the CPU was running. In the veth lab a packet is mostly carried in the sending process's context — `veth_xmit` queues it to the peer and the receive softirq runs at the sender's `local_bh_enable` — and so is charged to the lab. ")
	fmt.Fprintf(&b, "%s\n", softirqNote)
	return b.String()
}

// softirqNote is what the lab's CPU figure misses of the softirq work, as
// measured (see BENCHMARKS.md's Method).
const softirqNote = "What the cgroup misses was measured with `perf record -a -g` (cpu-clock, 999 Hz) over the one-stream fixed-rate run of each two-host path (one round, 5 × 5 s; see bench/cgroup-cost.md), counting the samples in softirq context by the task they interrupted. Relative to the lab's own samples, softirq work ran in the ksoftirqd threads 0.4% (added back; with no lab running they ran 0 ns over 10 s), in the idle task 3.0% (1.4% receive processing, the rest timers: TCP's pacing and delayed ACKs fire from hrtimers on whatever the CPU is doing) and in other tasks 1.8% (0.8% receive processing), some of the last two the neighbours' own. So the lab's figure is low by at most about 5% (per path 3.7–6.2%: least for BPF direct, most for plain routing), and a ratio can be off by a few percent either way; that is inside the intervals, not nothing."

// paramBool returns a boolean parameter (false when unset).
func paramBool(rec *Recorder, key string) bool {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	v, _ := rec.params[key].(bool)
	return v
}

// paramFloat returns a numeric parameter (0 when unset).
func paramFloat(rec *Recorder, key string) float64 {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	switch v := rec.params[key].(type) {
	case float64:
		return v
	case int:
		return float64(v)
	}
	return 0
}
