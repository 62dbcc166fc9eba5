package bench

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/calyxnet/calyx/tests/lab"
)

// Case IDs of the one-host comparison.
const (
	caseLocalBPF    = "local.tcp1.bpf"
	caseLocalKernel = "local.tcp1.kernel-routing"
)

func localSection() *Section {
	return &Section{
		Key:   "local",
		Title: "Throughput between two workloads on one host",
		Tables: []Table{{
			Title: "One TCP stream, workload to workload on one host",
			Cases: []Case{
				{ID: caseLocalBPF, Label: "calyx BPF local delivery", Unit: "Gbit/s", Better: HigherIsBetter, Baseline: caseLocalKernel},
				{ID: caseLocalKernel, Label: "kernel routing", Unit: "Gbit/s", Better: HigherIsBetter, Kernel: true},
			},
		}},
		Run: func(ctx context.Context, o *Options, rec *Recorder) error {
			secs, runs := 4, 5
			if o.Quick {
				secs, runs = 1, 1
			}
			rec.Param("local.seconds", secs)
			rec.Param("local.runs", runs)
			rec.logf("one host: %d runs of %d s per path", runs, secs)
			return LocalThroughput(ctx, o.BinDir, secs, runs, rec)
		},
		Method: func(rec *Recorder) string {
			var b strings.Builder
			fmt.Fprintf(&b, "One TCP stream (iperf3, %d s per run, %s per path, alternating which goes first), workload namespaces on veth pairs into one host namespace. ", rec.ParamInt("local.seconds"), plural(rec.ParamInt("local.runs"), "run"))
			fmt.Fprintf(&b, "calyx: BPF local delivery (`bpf_redirect_peer`) between two calyx workloads. Kernel: two other workloads on the same host routed by the kernel (proxy_arp + /32 routes), in the same run. ")
			b.WriteString(placementNote(false) + "\n")
			return b.String()
		},
	}
}

// Median returns the median of xs.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if n := len(s); n%2 == 0 {
		return (s[n/2-1] + s[n/2]) / 2
	}
	return s[len(s)/2]
}

// plural writes "1 run", "5 runs".
func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

// minMax returns the smallest and largest of xs.
func minMax(xs []float64) (lo, hi float64) {
	if len(xs) == 0 {
		return 0, 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return s[0], s[len(s)-1]
}

// LocalThroughput builds one host with two calyx workloads and two workloads
// routed by the kernel alone, and runs iperf3 between each pair in turn,
// recording local.tcp1.* samples.
func LocalThroughput(ctx context.Context, binDir string, seconds, runs int, rec *Recorder) (err error) {
	l, err := lab.New(lab.Options{BinDir: binDir, Context: ctx, AgentLogLevel: "warn"})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, l.Close()) }()
	h, err := l.AddHost("host-a", "10.30.0.11/24")
	if err != nil {
		return err
	}
	var ws []*lab.Workload
	for i, spec := range [][2]string{{"w1", "10.65.0.2"}, {"w2", "10.65.0.3"}, {"k1", "10.66.0.2"}, {"k2", "10.66.0.3"}} {
		w, err := l.AddWorkload("host-a", spec[0], spec[1], fmt.Sprintf("02:00:00:00:01:%02x", i+1))
		if err != nil {
			return err
		}
		ws = append(ws, w)
	}
	// The kernel's own way: routes to the /32s and proxy_arp answering the
	// workloads' gateway. calyx's agent leaves these alone (not its protocol).
	for _, w := range ws[2:] {
		for _, args := range [][]string{
			{"ip", "link", "set", w.HostIface, "up"},
			{"ip", "route", "add", w.IP.String() + "/32", "dev", w.HostIface, "scope", "link"},
			{"sysctl", "-qw", "net.ipv4.conf." + w.HostIface + ".proxy_arp=1"},
		} {
			if _, err := l.Exec(h.NS, args...); err != nil {
				return err
			}
		}
	}
	if err := l.StartAgent("host-a"); err != nil {
		return err
	}
	model := lab.JoinYAML(lab.PoolYAML("bench", "10.65.0.0/16"), lab.NodeYAML(h), lab.EndpointYAML(ws[0]), lab.EndpointYAML(ws[1]))
	if _, err := l.Apply("", model); err != nil {
		return err
	}
	if err := l.WaitPing(ws[0].NS, ws[1].IP.String(), 15*time.Second); err != nil {
		return fmt.Errorf("calyx pair: %w", err)
	}
	if err := l.WaitPing(ws[2].NS, ws[3].IP.String(), 15*time.Second); err != nil {
		return fmt.Errorf("kernel pair: %w", err)
	}

	for i := 0; i < runs; i++ {
		pairs := []struct {
			src, dst *lab.Workload
			id       string
		}{{ws[0], ws[1], caseLocalBPF}, {ws[2], ws[3], caseLocalKernel}}
		if i%2 == 1 {
			pairs[0], pairs[1] = pairs[1], pairs[0]
		}
		for _, p := range pairs {
			if err := ctx.Err(); err != nil {
				return err
			}
			rep, err := iperfReport(l, p.src, p.dst, seconds, 1)
			if err != nil {
				return err
			}
			rec.Add(p.id, i, rep.BitsPerSecond/1e9)
			rec.logf("one host, run %d/%d %-26s %6.2f Gbit/s", i+1, runs, p.id, rep.BitsPerSecond/1e9)
		}
	}
	return nil
}

// iperfReport runs iperf3 src → dst for seconds with streams parallel TCP
// streams; the report's figures are the sums over the streams.
func iperfReport(l *lab.Lab, src, dst *lab.Workload, seconds, streams int) (lab.IperfReport, error) {
	return iperfRun(l, src.NS, dst.NS, dst.IP.String(), dst.IP.String(), seconds, streams)
}

// iperfRun runs iperf3 from namespace srcNS to target, its server in dstNS
// listening on bind ("" for every address: a target that is translated on
// the way, such as a floating IP), pinned like every measurement.
func iperfRun(l *lab.Lab, srcNS, dstNS, target, bind string, seconds, streams int) (lab.IperfReport, error) {
	rep, _, err := iperfRunAt(l, srcNS, dstNS, target, bind, seconds, streams, 0)
	return rep, err
}

// cpuUse is the CPU time of one measured run over wall seconds. busy
// (and the tick-sampled ticked) is the whole machine's, from /proc/stat.
// With the lab's cgroup (hasLab), lab is the CPU time of the lab's own
// processes over the run, from the cgroup's cpu.stat (agents the part of
// it the calyx agents used), and softirqd that of the ksoftirqd threads
// (softirq work the kernel deferred to them, which no process of the lab
// is charged for).
type cpuUse struct {
	busy, wall, ticked    float64
	hasLab                bool
	lab, agents, softirqd float64
}

// cpuSeconds is the run's CPU cost: with the cgroup, the lab's processes
// plus ksoftirqd; on the /proc/stat fallback, the machine's busy time less
// the idle baseline (idle CPU seconds per second) over the run.
func (u cpuUse) cpuSeconds(idle float64) float64 {
	if u.hasLab {
		return u.lab + u.softirqd
	}
	return netCPUSeconds(u.busy, u.wall, idle)
}

// cpuReading is one reading of every CPU counter measureCPU compares.
type cpuReading struct {
	machine     cpuTimes
	lab, agents lab.CPUStat
	softirqd    time.Duration
}

func readCPU(cg *lab.Cgroup, softirqd []int) (cpuReading, error) {
	var r cpuReading
	var err error
	if cg != nil {
		if r.lab, err = cg.CPUStat(); err != nil {
			return r, err
		}
		if r.agents, err = cg.AgentsCPUStat(); err != nil {
			return r, err
		}
		if r.softirqd, err = threadsRuntime(softirqd); err != nil {
			return r, err
		}
	}
	r.machine, err = readCPUTimes()
	return r, err
}

// measureCPU runs f and returns the CPU time over it: the machine's, and
// with a cgroup (cg not nil) the lab's and ksoftirqd's.
func measureCPU(cg *lab.Cgroup, f func() error) (cpuUse, error) {
	var softirqd []int
	if cg != nil {
		var err error
		if softirqd, err = ksoftirqdPids(); err != nil {
			return cpuUse{}, err
		}
	}
	r0, err := readCPU(cg, softirqd)
	if err != nil {
		return cpuUse{}, err
	}
	if err := f(); err != nil {
		return cpuUse{}, err
	}
	r1, err := readCPU(cg, softirqd)
	if err != nil {
		return cpuUse{}, err
	}
	t0, t1 := r0.machine, r1.machine
	u := cpuUse{busy: busySeconds(t0, t1), wall: t1.at.Sub(t0.at).Seconds(), ticked: tickedSeconds(t0, t1)}
	if cg != nil {
		u.hasLab = true
		u.lab = (r1.lab.Usage - r0.lab.Usage).Seconds()
		u.agents = (r1.agents.Usage - r0.agents.Usage).Seconds()
		u.softirqd = (r1.softirqd - r0.softirqd).Seconds()
	}
	return u, nil
}

// iperfRunAt is iperfRun offering gbps in total over the streams (iperf3
// -b, per stream; 0 for as fast as the path goes); it also returns the CPU
// time the machine worked while the client ran.
func iperfRunAt(l *lab.Lab, srcNS, dstNS, target, bind string, seconds, streams int, gbps float64) (lab.IperfReport, cpuUse, error) {
	server := []string{"iperf3", "-s", "-1"}
	if bind != "" {
		server = append(server, "-B", bind)
	}
	srv, err := l.ExecBackground(dstNS, time.Duration(seconds+30)*time.Second, onCPU(pinIperfServer, server...)...)
	if err != nil {
		return lab.IperfReport{}, cpuUse{}, err
	}
	defer srv.Stop(9, time.Second)
	if err := lab.WaitListening(l, dstNS, 5201, 10*time.Second); err != nil {
		return lab.IperfReport{}, cpuUse{}, err
	}
	args := []string{"iperf3", "-c", target, "-t", fmt.Sprint(seconds), "-P", fmt.Sprint(streams), "-J"}
	if gbps > 0 {
		args = append(args, "-b", fmt.Sprintf("%.0f", gbps*1e9/float64(streams)))
	}
	var out lab.Result
	use, err := measureCPU(l.Cgroup(), func() (err error) {
		out, err = l.ExecTimeout(time.Duration(seconds+30)*time.Second, srcNS, onCPU(pinIperfClient, args...)...)
		return err
	})
	if err != nil {
		return lab.IperfReport{}, cpuUse{}, err
	}
	rep, err := lab.ParseIperf(out.Stdout)
	return rep, use, err
}

// idleCPU is the machine's background: its CPU time over seconds with
// nothing of the benchmark running, in CPU seconds per second.
func idleCPU(ctx context.Context, seconds int) (float64, error) {
	use, err := measureCPU(nil, func() error {
		select {
		case <-time.After(time.Duration(seconds) * time.Second):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	if err != nil {
		return 0, err
	}
	return use.busy / use.wall, nil
}

// Where the measuring processes run. On a 2-vCPU VM, leaving it to the
// scheduler made single-connection request/response bimodal (about 8,000
// or 30,000 transactions/s, by whether the two ends happened to share a
// CPU: a wakeup across CPUs costs tens of µs in a VM) and moved iperf3 by
// ±30%. So every path gets the same placement: iperf3's client on the
// first CPU this process may use and its server on the second; calyx-load's
// client and server both on the second, so one transaction's whole path
// runs on one CPU and its rate measures that path's cost. With a single
// CPU nothing is pinned.
var pinIperfClient, pinIperfServer, pinLoadClient, pinLoadServer = benchCPUs()

func benchCPUs() (iperfClient, iperfServer, loadClient, loadServer int) {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return -1, -1, -1, -1
	}
	var cpus []int
	for i := 0; i < 1024 && len(cpus) < 2; i++ {
		if set.IsSet(i) {
			cpus = append(cpus, i)
		}
	}
	if len(cpus) < 2 {
		return -1, -1, -1, -1
	}
	return cpus[0], cpus[1], cpus[1], cpus[1]
}

// placementNote says where the measuring processes ran, for the report.
func placementNote(load bool) string {
	if pinIperfClient < 0 {
		return "Nothing is pinned to a CPU (a single CPU is available)."
	}
	if !load {
		return fmt.Sprintf("iperf3's client runs on CPU %d and its server on CPU %d (taskset), the same for both paths.", pinIperfClient, pinIperfServer)
	}
	return fmt.Sprintf("iperf3's client runs on CPU %d and its server on CPU %d; calyx-load's client and server both on CPU %d (taskset), so one transaction's whole path runs on one CPU; the same for every path. "+
		"Left to the scheduler, whether the two ends of a single connection shared a CPU decided the figure more than the path did (request/response jumped between about 8,000 and 30,000 transactions/s: a wakeup across CPUs costs tens of µs in a VM).",
		pinIperfClient, pinIperfServer, pinLoadClient)
}

// onCPU runs args on one CPU (taskset) when cpu ≥ 0.
func onCPU(cpu int, args ...string) []string {
	if cpu < 0 {
		return args
	}
	return append([]string{"taskset", "-c", fmt.Sprint(cpu)}, args...)
}
