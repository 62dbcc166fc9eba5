package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/calyxnet/calyx/tests/lab"
)

// The paths of the two-host comparison: how wa's traffic reaches wb.
const (
	CaseBPFVXLAN     = "bpf-vxlan"
	CaseBPFIPIP      = "bpf-ipip"
	CaseBPFDirect    = "bpf-direct"
	CaseKernelVXLAN  = "kernel-vxlan"
	CaseKernelRouted = "kernel-routing"
	// The same between the workloads' IPv6 addresses, over the same
	// IPv4 underlay.
	CaseBPFVXLAN6     = "bpf-vxlan6"
	CaseBPFDirect6    = "bpf-direct6"
	CaseKernelVXLAN6  = "kernel-vxlan6"
	CaseKernelRouted6 = "kernel-routing6"
	// Between two workloads of one host (the VM section).
	CaseBPFLocal    = "bpf-local"
	CaseKernelLocal = "kernel-local"
)

// Counter reasons of the delivery into a workload: deliver-local on the
// interface a packet came from, to-workload on the one it is delivered
// into.
const (
	reasonDeliverLocal = "deliver-local"
	reasonToWorkload   = "to-workload"
)

// EncapCase is one way of carrying wa → wb traffic between the two hosts.
type EncapCase struct {
	Key   string
	Label string
	// BPF cases run with calyx's agents up; kernel cases with calyx's
	// programs detached and the kernel configured by hand.
	BPF bool
	// Mode is the pool's encapsulation for a BPF case.
	Mode lab.EncapMode
	// Local says the destination is on the source's host: calyx's local
	// delivery (BPF), or the kernel routing between the two host sides.
	Local bool
	// MTU is set on both ends of wa's and wb's veths for the case.
	MTU int
	// IPv6: the traffic goes between the workloads' IPv6 addresses (an
	// IPv6 inner packet over the IPv4 underlay), else their IPv4 ones.
	IPv6 bool
	// Baseline is the kernel path the case is compared with; Also, the
	// ones it is compared with for information.
	Baseline string
	Also     []string
}

// EncapCases returns the paths in report order.
func EncapCases() []EncapCase {
	return []EncapCase{
		{Key: CaseBPFVXLAN, Label: "calyx BPF VXLAN", BPF: true, Mode: lab.ModeVXLAN, MTU: lab.UnderlayMTU - lab.VXLANOverhead, Baseline: CaseKernelVXLAN},
		{Key: CaseBPFIPIP, Label: "calyx BPF IP-in-IP", BPF: true, Mode: lab.ModeIPIP, MTU: lab.UnderlayMTU - lab.IPIPOverhead, Baseline: CaseKernelVXLAN, Also: []string{CaseKernelRouted}},
		{Key: CaseBPFDirect, Label: "calyx BPF direct", BPF: true, Mode: lab.ModeNever, MTU: lab.UnderlayMTU, Baseline: CaseKernelRouted},
		{Key: CaseKernelVXLAN, Label: "kernel VXLAN device", MTU: lab.UnderlayMTU - lab.VXLANOverhead},
		{Key: CaseKernelRouted, Label: "plain kernel routing", MTU: lab.UnderlayMTU},
		// The outer headers are the IPv4 underlay's whatever the inner
		// family, so the MTUs are the IPv4 cases'.
		{Key: CaseBPFVXLAN6, Label: "calyx BPF VXLAN (IPv6)", BPF: true, IPv6: true, Mode: lab.ModeVXLAN, MTU: lab.UnderlayMTU - lab.VXLANOverhead, Baseline: CaseKernelVXLAN6},
		{Key: CaseBPFDirect6, Label: "calyx BPF direct (IPv6)", BPF: true, IPv6: true, Mode: lab.ModeNever, MTU: lab.UnderlayMTU, Baseline: CaseKernelRouted6},
		{Key: CaseKernelVXLAN6, Label: "kernel VXLAN device (IPv6)", IPv6: true, MTU: lab.UnderlayMTU - lab.VXLANOverhead},
		{Key: CaseKernelRouted6, Label: "plain kernel routing (IPv6)", IPv6: true, MTU: lab.UnderlayMTU},
	}
}

// metric is one measurement made on every path of the two-host lab.
type metric struct {
	key, title, unit string
	// streams > 0: iperf3 with that many TCP streams; else a calyx-load
	// mode ("rr", "crr").
	streams int
	mode    string
	// rateOf, when set, makes the metric a CPU cost at a fixed rate
	// (cost.go), set from that throughput metric's figure.
	rateOf string
}

// Metric keys: the first part of the two-host case IDs (tcp1.bpf-vxlan).
const (
	MetricTCP1 = "tcp1"
	MetricTCP4 = "tcp4"
	MetricRR   = "rr"
	MetricCRR  = "crr"
)

func twoHostMetrics() []metric {
	return []metric{
		{key: MetricTCP1, title: "Throughput, one TCP stream", unit: "Gbit/s", streams: 1},
		{key: MetricTCP4, title: "Throughput, four TCP streams", unit: "Gbit/s", streams: 4},
		{key: MetricRR, title: "Request/response, one persistent connection", unit: "transactions/s", mode: "rr"},
		{key: MetricCRR, title: "Connection rate: connect, request, response, close", unit: "connections/s", mode: "crr"},
	}
}

// TwoHostCaseID is the ID of a path's case for a metric.
func TwoHostCaseID(metric, path string) string { return metric + "." + path }

// Goals of issue 3, on one-stream throughput, and of issue 18 for the
// IPv6 paths: at least the kernel's figure in one stream, rr and crr.
var twoHostGoals = func() map[string]*Goal {
	g := map[string]*Goal{
		TwoHostCaseID(MetricTCP1, CaseBPFVXLAN):  {Issue: "issue 3", Text: "BPF VXLAN ≥ kernel VXLAN device (one stream)", MinRatio: 1.0},
		TwoHostCaseID(MetricTCP1, CaseBPFDirect): {Issue: "issue 3", Text: "BPF direct ≥ 0.95 × plain routing (one stream)", MinRatio: 0.95},
	}
	for _, m := range []struct{ key, what string }{{MetricTCP1, "one stream"}, {MetricRR, "request/response"}, {MetricCRR, "connection rate"}} {
		g[TwoHostCaseID(m.key, CaseBPFVXLAN6)] = &Goal{Issue: "issue 18", Text: "IPv6: BPF VXLAN ≥ kernel VXLAN device (" + m.what + ")", MinRatio: 1.0}
		g[TwoHostCaseID(m.key, CaseBPFDirect6)] = &Goal{Issue: "issue 18", Text: "IPv6: BPF direct ≥ plain kernel routing (" + m.what + ")", MinRatio: 1.0}
	}
	return g
}()

// twoHostParams are the durations of one two-host run.
type twoHostParams struct {
	rounds, tcpSecs, loadSecs, conns int
	// costKey, when set, is the section key of the CPU cost figures: the
	// lab's processes then run in the lab's own cgroup (see newCostLab).
	costKey string
}

func twoHostSection() *Section {
	s := &Section{Key: "twohost", Title: "Between workloads on two hosts: BPF encapsulation vs the kernel's"}
	for _, m := range twoHostMetrics() {
		s.Tables = append(s.Tables, pathTable(m, m.title, EncapCases(), TwoHostCaseID, func(c EncapCase) *Goal {
			return twoHostGoals[TwoHostCaseID(m.key, c.Key)]
		}))
	}
	for _, m := range twoHostCostMetrics() {
		s.Tables = append(s.Tables, costTable(m, EncapCases(), TwoHostCaseID, func(c EncapCase) *Goal {
			return twoHostCostGoals[TwoHostCaseID(m.key, c.Key)]
		}))
	}
	// Five rounds of 5+5+3+3+5+5 s on nine paths (five IPv4, four IPv6):
	// about 21 minutes on this 2-CPU machine (4.2 minutes a round) with
	// the proofs and the four switches between the sides per round.
	s.Run = pathRun(s.Key, EncapCases(), append(twoHostMetrics(), twoHostCostMetrics()...), TwoHost)
	s.Method = twoHostMethod
	return s
}

// pathTable is the table of metric m on the paths cases (IDs by id, goals
// by goal), with the details measure records as extra columns.
func pathTable(m metric, title string, cases []EncapCase, id func(metric, path string) string, goal func(EncapCase) *Goal) Table {
	t := Table{Title: title}
	for _, p := range cases {
		c := Case{ID: id(m.key, p.Key), Label: p.Label, Unit: m.unit, Better: HigherIsBetter, Kernel: !p.BPF, Goal: goal(p)}
		if p.Baseline != "" {
			c.Baseline = id(m.key, p.Baseline)
		}
		for _, a := range p.Also {
			c.Also = append(c.Also, id(m.key, a))
		}
		t.Cases = append(t.Cases, c)
	}
	if m.streams > 0 {
		t.Extras = []Extra{
			{Detail: "mtu", Header: "workload MTU", Stat: "median", Format: "%.0f"},
			{Detail: "pathShare", Header: "path share (min)", Stat: "min", Format: "%.3f"},
			{Detail: "pathPacketBytes", Header: "packet on the path (median)", Stat: "median", Format: "%.0f B"},
		}
	} else {
		t.Extras = loadExtras()
	}
	return t
}

// pathRun is the Run of a section of paths measured by run: the
// parameters (pathParams, under key) and a line saying what it measures.
func pathRun(key string, cases []EncapCase, metrics []metric, run func(context.Context, string, twoHostParams, *Recorder) error) func(context.Context, *Options, *Recorder) error {
	return func(ctx context.Context, o *Options, rec *Recorder) error {
		p := pathParams(o, rec, key)
		var what []string
		for _, m := range metrics {
			if m.rateOf != "" {
				what = append(what, fmt.Sprintf("iperf3 %s at a fixed rate %d s", plural(m.streams, "stream"), p.tcpSecs))
			} else if m.streams > 0 {
				what = append(what, fmt.Sprintf("iperf3 %s %d s", plural(m.streams, "stream"), p.tcpSecs))
			} else {
				what = append(what, fmt.Sprintf("%s %d s", m.mode, p.loadSecs))
			}
		}
		rec.logf("%s: %s of %d paths × (%s)", key, plural(p.rounds, "round"), len(cases), strings.Join(what, ", "))
		return run(ctx, o.BinDir, p, rec)
	}
}

// pathParams are the durations of a path run (five rounds of 5 s streams
// and 3 s load runs; one round of 1 s each in a quick pass; --rounds
// replaces the rounds), recorded as the parameters <key>.rounds, ...
func pathParams(o *Options, rec *Recorder, key string) twoHostParams {
	p := twoHostParams{rounds: 5, tcpSecs: 5, loadSecs: 3, conns: 1}
	if o.Quick {
		p = twoHostParams{rounds: 1, tcpSecs: 1, loadSecs: 1, conns: 1}
	}
	if o.Rounds > 0 {
		p.rounds = o.Rounds
	}
	rec.Param(key+".rounds", p.rounds)
	rec.Param(key+".tcpSeconds", p.tcpSecs)
	rec.Param(key+".loadSeconds", p.loadSecs)
	rec.Param(key+".loadConns", p.conns)
	return p
}

// encapBench is the two-host lab of one run: host-a and host-b on one
// underlay segment, workloads on both, and what switches the traffic
// between calyx and the kernel. The two-host, VM and policy sections share
// it.
type encapBench struct {
	l     *lab.Lab
	m     *lab.MultiHost
	p     twoHostParams
	rec   *Recorder
	logf  func(string, ...any)
	bpfUp bool // agents running and programs attached
	// loads are the calyx-load servers, by the address they listen on
	// (each workload's IPv4 and IPv6 address), up for the whole run.
	loads   map[netip.Addr]*lab.Proc
	loadBin string
	// rates are the fixed rates of the cost metrics (Gbit/s), set at
	// their first use; idle is the idle baseline of the path being
	// measured (CPU seconds per second), negative until measured.
	rates map[string]float64
	idle  float64
	// ipv6: the workloads have IPv6 addresses too, and the model an IPv6
	// pool switched with the IPv4 one (pool6Name).
	ipv6 bool
}

// Addresses of the kernel VXLAN devices, outside the pools and the
// underlay, by family.
var (
	kernelVXLANAddr  = map[string]string{"host-a": "10.97.0.11", "host-b": "10.97.0.12"}
	kernelVXLANAddr6 = map[string]string{"host-a": "fd00:97::11", "host-b": "fd00:97::12"}
)

// The IPv6 pool of a lab whose workloads have IPv6 addresses, beside the
// IPv4 one (lab.MultiPool) and always in the same mode (ipipMode,
// vxlanMode): as a dual-stack deployment configures its two pools.
const (
	pool6Name = "workloads6"
	pool6CIDR = "fd00:65:1::/64"
)

const (
	kernelVXLANDev = "vxcx"
	kernelVXLANVNI = "42"
	loadPort       = 7007
)

// benchWorkload is a workload to build in an encapBench lab, with an
// IPv6 address too when ip6 is set; server runs a calyx-load server in it
// (on each of its addresses) for the whole run.
type benchWorkload struct {
	host, name, ip, ip6 string
	server              bool
}

// twoHostWorkloads are wa on host-a and wb (the load server) on host-b,
// dual-stack; their IPv6 addresses are in different blocks of the IPv6
// pool, as the IPv4 ones are.
var twoHostWorkloads = []benchWorkload{
	{host: "host-a", name: "wa", ip: "10.65.1.2", ip6: "fd00:65:1::1:2"},
	{host: "host-b", name: "wb", ip: "10.65.2.2", ip6: "fd00:65:1::2:2", server: true},
}

// pathEnds are the two workloads a path is measured between: the iperf3
// and calyx-load clients run in src, the servers in dst; ipv6 says the
// traffic goes between their IPv6 addresses (measure sets it from the
// case).
type pathEnds struct {
	src, dst *lab.Workload
	ipv6     bool
}

// addr is w's address of the path's family.
func (e pathEnds) addr(w *lab.Workload) netip.Addr { return familyAddr(e.ipv6, w) }

// familyAddr is w's IPv6 address if ipv6, else its IPv4 address.
func familyAddr(ipv6 bool, w *lab.Workload) netip.Addr {
	if ipv6 {
		return w.IPv6
	}
	return w.IP
}

// hostPrefix is a as a host route's destination (/32, /128).
func hostPrefix(a netip.Addr) string { return netip.PrefixFrom(a, a.BitLen()).String() }

// pathSet is what one run of an encapBench measures.
type pathSet struct {
	// cases are the paths in report order; schedule gives a round's
	// order of them.
	cases    []EncapCase
	schedule func(round int) []EncapCase
	// ends gives the workloads a path runs between.
	ends func(EncapCase) pathEnds
	// metrics are measured on every path; id names a metric's case of a
	// path.
	metrics []metric
	id      func(metric, path string) string
	// watch, when set, is called before each measurement of metric m
	// with its case ID; the function it returns is called after it (to
	// record details).
	watch func(m metric, id string, e pathEnds) (func() error, error)
}

// TwoHost builds two hosts on one underlay segment with one workload each
// (wa on host-a, wb on host-b) and measures every metric (iperf3 with one
// and four streams, calyx-load rr and crr) wa → wb on every path of
// EncapCases, p.rounds times, between the same two namespaces. BPF paths
// switch the pool's mode under running agents; kernel paths stop the
// agents, detach calyx's programs and configure the kernel. Each path is
// proven to carry the traffic the way it claims, before and during every
// measurement, or the run fails.
func TwoHost(ctx context.Context, binDir string, p twoHostParams, rec *Recorder) (err error) {
	p.costKey = "twohost"
	b, err := openEncapBench(ctx, binDir, lab.KindVeth, p, rec, "two-host", twoHostWorkloads...)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, b.l.Close()) }()
	return b.run(pathSet{
		cases:    EncapCases(),
		schedule: twoHostSchedule,
		ends:     func(EncapCase) pathEnds { return b.waWB() },
		metrics:  append(twoHostMetrics(), twoHostCostMetrics()...),
		id:       TwoHostCaseID,
	})
}

// openEncapBench creates the lab (what names it in the log) and builds
// the workloads ws, of kind, in it (see build); the caller closes b.l. On
// an error the lab is already removed.
func openEncapBench(ctx context.Context, binDir string, kind lab.WorkloadKind, p twoHostParams, rec *Recorder, what string, ws ...benchWorkload) (*encapBench, error) {
	loadBin := filepath.Join(binDir, "calyx-load")
	if _, err := os.Stat(loadBin); err != nil {
		return nil, fmt.Errorf("the load tool is missing (make build builds it): %w", err)
	}
	opts := lab.Options{BinDir: binDir, Context: ctx, AgentLogLevel: "warn", WorkloadKind: kind}
	var l *lab.Lab
	var err error
	if p.costKey != "" {
		l, err = newCostLab(opts, rec, p.costKey)
	} else {
		l, err = lab.New(opts)
	}
	if err != nil {
		return nil, err
	}
	rec.logf("%s lab %s (state in %s)", what, l.Prefix, l.Dir)
	b := &encapBench{l: l, p: p, rec: rec, logf: rec.logf, loadBin: loadBin, loads: map[netip.Addr]*lab.Proc{}, rates: map[string]float64{}}
	if err := b.build(ws...); err != nil {
		return nil, errors.Join(err, l.Close())
	}
	return b, nil
}

// run measures every metric on every path of ps, p.rounds times: before
// each path calyx is switched in or out as the path needs.
func (b *encapBench) run(ps pathSet) error {
	for r := range b.p.rounds {
		for _, c := range ps.schedule(r) {
			if err := b.l.Context().Err(); err != nil {
				return err
			}
			var err error
			if c.BPF {
				err = b.toBPF()
			} else {
				err = b.toKernel()
			}
			if err != nil {
				return err
			}
			if err := b.measure(c, ps, r); err != nil {
				return fmt.Errorf("round %d, %s: %w", r+1, c.Label, err)
			}
		}
		b.logRound(ps, r)
	}
	return nil
}

// twoHostSchedule is the order of the paths in round r: each BPF path
// next to the kernel path it is compared with, so the two are measured
// seconds apart rather than minutes (this machine's load drifts), and
// every other round in reverse, so each of the two goes first as often.
// Even rounds: BPF VXLAN, kernel VXLAN, plain routing, BPF direct, BPF
// IP-in-IP, then the IPv6 paths the other way round: BPF direct, plain
// routing, kernel VXLAN, BPF VXLAN; odd rounds the same backwards. That is
// four switches between the sides per round (stopping the agents takes
// well under a second, restarting them and waiting for the programs about
// a second), and none between rounds.
func twoHostSchedule(r int) []EncapCase {
	return scheduleOf(EncapCases(), r, CaseBPFVXLAN, CaseKernelVXLAN, CaseKernelRouted, CaseBPFDirect, CaseBPFIPIP,
		CaseBPFDirect6, CaseKernelRouted6, CaseKernelVXLAN6, CaseBPFVXLAN6)
}

// scheduleOf returns the cases named by keys in that order, backwards in
// odd rounds r.
func scheduleOf(cases []EncapCase, r int, keys ...string) []EncapCase {
	by := map[string]EncapCase{}
	for _, c := range cases {
		by[c.Key] = c
	}
	order := make([]EncapCase, 0, len(keys))
	for _, k := range keys {
		order = append(order, by[k])
	}
	if r%2 == 1 {
		slices.Reverse(order)
	}
	return order
}

// logRound prints the round's ratios to the baselines.
func (b *encapBench) logRound(ps pathSet, r int) {
	for _, m := range ps.metrics {
		var parts []string
		for _, c := range ps.cases {
			if c.Baseline == "" {
				continue
			}
			pr := b.rec.pairedRatios(ps.id(m.key, c.Key), ps.id(m.key, c.Baseline))
			if len(pr) > 0 {
				parts = append(parts, fmt.Sprintf("%s/%s %.2f", c.Key, c.Baseline, pr[len(pr)-1]))
			}
		}
		b.logf("round %d/%d %s ratios: %s", r+1, b.p.rounds, m.key, strings.Join(parts, ", "))
	}
}

// build makes host-a and host-b and the workloads ws (the first on each
// host becomes m.WA and m.WB), starts the agents, applies the model and
// starts the load servers.
func (b *encapBench) build(ws ...benchWorkload) error {
	l := b.l
	ha, err := l.AddHost("host-a", "10.30.0.11/24")
	if err != nil {
		return err
	}
	hb, err := l.AddHost("host-b", "10.30.0.12/24")
	if err != nil {
		return err
	}
	b.m = &lab.MultiHost{Lab: l, Mode: lab.ModeVXLAN, HostA: ha, HostB: hb}
	var servers []*lab.Workload
	for _, spec := range ws {
		w, err := b.m.AddWorkload(spec.host, spec.name, spec.ip, 0)
		if err != nil {
			return err
		}
		if spec.ip6 != "" {
			if err := l.AddIPv6(w, spec.ip6); err != nil {
				return err
			}
			b.ipv6 = true
		}
		if spec.host == ha.Name && b.m.WA == nil {
			b.m.WA = w
		}
		if spec.host == hb.Name && b.m.WB == nil {
			b.m.WB = w
		}
		if spec.server {
			servers = append(servers, w)
		}
	}
	if err := b.m.StartAgents(); err != nil {
		return err
	}
	if out, err := l.Apply("", lab.JoinYAML(b.m.ModelYAML(), b.pool6YAML(b.m.Mode))); err != nil {
		return fmt.Errorf("apply model: %w: %s", err, out)
	}
	if err := b.waitAttached(30 * time.Second); err != nil {
		return err
	}
	b.bpfUp = true
	return b.startLoadServers(servers...)
}

// pool6YAML is the IPv6 pool in mode, or nothing when the workloads have
// no IPv6 addresses.
func (b *encapBench) pool6YAML(mode lab.EncapMode) string {
	if !b.ipv6 {
		return ""
	}
	ipip, vxlan := mode.PoolModes()
	return lab.PoolModeYAML(pool6Name, pool6CIDR, ipip, vxlan)
}

// setMode switches the pool, and the IPv6 pool with it, to mode.
func (b *encapBench) setMode(mode lab.EncapMode) error {
	m := b.m
	if !b.ipv6 {
		if out, err := m.SetMode(mode); err != nil {
			return fmt.Errorf("%w: %s", err, out)
		}
		return nil
	}
	if out, err := b.l.Apply("", lab.JoinYAML(m.PoolYAML(mode), b.pool6YAML(mode))); err != nil {
		return fmt.Errorf("switch pools %s and %s to %s: %w: %s", lab.MultiPool, pool6Name, mode, err, out)
	}
	m.Mode = mode
	return nil
}

func (b *encapBench) hosts() []*lab.Host { return []*lab.Host{b.m.HostA, b.m.HostB} }

// waWB is the path from m.WA to m.WB.
func (b *encapBench) waWB() pathEnds { return pathEnds{src: b.m.WA, dst: b.m.WB} }

// on returns the workloads on h.
func (b *encapBench) on(h *lab.Host) []*lab.Workload {
	var out []*lab.Workload
	for _, w := range b.l.Workloads() {
		if w.Host == h.Name {
			out = append(out, w)
		}
	}
	return out
}

// peer returns the other host.
func (b *encapBench) peer(h *lab.Host) *lab.Host {
	if h == b.m.HostA {
		return b.m.HostB
	}
	return b.m.HostA
}

// hostOf returns the host w runs on.
func (b *encapBench) hostOf(w *lab.Workload) *lab.Host {
	if w.Host == b.m.HostA.Name {
		return b.m.HostA
	}
	return b.m.HostB
}

// sh runs each command (ip, sysctl, tc, bridge) in namespace ns.
func (b *encapBench) sh(ns string, cmds ...[]string) error {
	for _, c := range cmds {
		if _, err := b.l.Exec(ns, c...); err != nil {
			return err
		}
	}
	return nil
}

// ifaces lists the interfaces of h calyx attaches to.
func (b *encapBench) ifaces(h *lab.Host) []string {
	out := []string{h.UnderlayIface}
	for _, w := range b.on(h) {
		out = append(out, w.HostIface)
	}
	return out
}

// tcxPrograms counts the programs attached to iface in ns, both
// directions, asking the kernel, not calyx's own maps.
func tcxPrograms(ns, iface string) (int, error) {
	in, out, err := lab.TCPrograms(ns, iface)
	return in + out, err
}

// waitAttached waits until the kernel reports programs on both hooks of
// every interface calyx manages, on both hosts.
func (b *encapBench) waitAttached(timeout time.Duration) error {
	return lab.Eventually(timeout, 100*time.Millisecond, func() error {
		for _, h := range b.hosts() {
			for _, ifc := range b.ifaces(h) {
				n, err := tcxPrograms(h.NS, ifc)
				if err != nil {
					return err
				}
				if n < 2 {
					return fmt.Errorf("%s %s: %d TCX programs attached, want 2", h.Name, ifc, n)
				}
			}
		}
		return nil
	})
}

// toKernel takes calyx out of the data path: agents stopped, every link
// pin removed (the agent is gone, so the pin is the last reference and the
// link detaches), calyx's kernel routes removed; then it checks with the
// kernel that nothing of calyx is attached and sets up what every kernel
// case shares (kernelLocal): proxy_arp on the workloads' host sides and a
// /32 to each local workload (all that the kernel needs between two
// workloads of one host), the same for IPv6.
func (b *encapBench) toKernel() error {
	if !b.bpfUp {
		return nil
	}
	b.logf("calyx out: stop agents, detach programs")
	defer func(t time.Time) { b.logf("calyx out in %s", time.Since(t).Round(time.Millisecond)) }(time.Now())
	for _, h := range b.hosts() {
		if err := b.l.StopAgent(h.Name); err != nil {
			return err
		}
	}
	b.bpfUp = false
	for _, h := range b.hosts() {
		if err := detachCalyx(b.l, h, b.ifaces(h)); err != nil {
			return err
		}
		if err := b.sh(h.NS,
			[]string{"sysctl", "-qw", "net.ipv4.ip_forward=1"},
			[]string{"sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"},
		); err != nil {
			return err
		}
		for _, w := range b.on(h) {
			if err := b.sh(h.NS, kernelLocal(w, true)...); err != nil {
				return err
			}
		}
	}
	return nil
}

// kernelLocal are the commands that make host w.Host's kernel w's first
// hop (add) or undo them: proxy_arp on w's host side, which answers for
// 169.254.1.1, w's gateway, and a /32 to w through it; with an IPv6
// address, w's IPv6 gateway fe80::1 as an address of the host side (w
// keeps its neighbour entry for it; calyx answers its solicitations in
// BPF, the kernel answers for its own address, much as Calico gives the
// host side a fixed link-local address as the workloads' gateway) and a
// /128 to w through it.
func kernelLocal(w *lab.Workload, add bool) [][]string {
	if !add {
		cmds := [][]string{
			{"sysctl", "-qw", "net.ipv4.conf." + w.HostIface + ".proxy_arp=0"},
			{"ip", "route", "del", hostPrefix(w.IP), "dev", w.HostIface},
		}
		if w.IPv6.IsValid() {
			cmds = append(cmds,
				[]string{"ip", "-6", "addr", "del", lab.WorkloadGatewayV6 + "/64", "dev", w.HostIface},
				[]string{"ip", "-6", "route", "del", hostPrefix(w.IPv6), "dev", w.HostIface})
		}
		return cmds
	}
	cmds := [][]string{
		{"sysctl", "-qw", "net.ipv4.conf." + w.HostIface + ".proxy_arp=1"},
		{"ip", "route", "add", hostPrefix(w.IP), "dev", w.HostIface, "scope", "link"},
	}
	if w.IPv6.IsValid() {
		cmds = append(cmds,
			[]string{"ip", "-6", "addr", "add", lab.WorkloadGatewayV6 + "/64", "dev", w.HostIface, "nodad"},
			[]string{"ip", "-6", "route", "add", hostPrefix(w.IPv6), "dev", w.HostIface})
	}
	return cmds
}

// detachCalyx takes calyx out of host h, whose agent is stopped: every
// TCX link pin removed (the pin is the last reference, so the link
// detaches), calyx's kernel routes of both families flushed, and the kernel asked that
// nothing of calyx is left on ifaces (checkDetached).
func detachCalyx(l *lab.Lab, h *lab.Host, ifaces []string) error {
	pins, err := filepath.Glob(filepath.Join(h.BPFFS, "links", "*"))
	if err != nil {
		return err
	}
	for _, p := range pins {
		if err := os.Remove(p); err != nil {
			return fmt.Errorf("unpin %s: %w", p, err)
		}
	}
	// IPv4 and IPv6, and calyx's IPv6 local routes too (the workloads'
	// gateway fe80::1 on every workload interface, which toKernel gives
	// the host sides as an address instead).
	for _, flush := range [][]string{
		{"ip", "route", "flush", "proto", "202"},
		{"ip", "-6", "route", "flush", "proto", "202"},
		{"ip", "-6", "route", "flush", "table", "local", "proto", "202"},
	} {
		if _, err := l.Exec(h.NS, flush...); err != nil {
			return err
		}
	}
	return checkDetached(l, h, ifaces)
}

// checkDetached fails unless the kernel reports no TCX program, no clsact
// qdisc and no XDP program on h's calyx interfaces, and calyxctl lists no
// pinned link.
func checkDetached(l *lab.Lab, h *lab.Host, ifaces []string) error {
	for _, ifc := range ifaces {
		n, err := tcxPrograms(h.NS, ifc)
		if err != nil {
			return err
		}
		if n != 0 {
			return fmt.Errorf("%s %s: %d TCX programs still attached after unpinning", h.Name, ifc, n)
		}
		res, err := l.Exec(h.NS, "tc", "qdisc", "show", "dev", ifc)
		if err != nil {
			return err
		}
		if strings.Contains(res.Stdout, "clsact") {
			return fmt.Errorf("%s %s: a clsact qdisc is left: %s", h.Name, ifc, res.Stdout)
		}
		res, err = l.Exec(h.NS, "ip", "-d", "link", "show", "dev", ifc)
		if err != nil {
			return err
		}
		if strings.Contains(res.Stdout, "prog/xdp") {
			return fmt.Errorf("%s %s: an XDP program is attached: %s", h.Name, ifc, res.Stdout)
		}
	}
	var links []struct {
		Interface string `json:"interface"`
		Pinned    bool   `json:"pinned"`
	}
	if err := l.CalyxctlJSON(h.Name, &links, "links"); err != nil {
		return err
	}
	for _, k := range links {
		if k.Pinned {
			return fmt.Errorf("calyxctl links on %s: %s still pinned", h.Name, k.Interface)
		}
	}
	return nil
}

// toBPF undoes toKernel's shared setup and restarts the agents, which
// re-attach their programs and re-add their routes.
func (b *encapBench) toBPF() error {
	if b.bpfUp {
		return nil
	}
	b.logf("calyx in: restart agents")
	defer func(t time.Time) { b.logf("calyx in in %s", time.Since(t).Round(time.Millisecond)) }(time.Now())
	for _, h := range b.hosts() {
		for _, w := range b.on(h) {
			if err := b.sh(h.NS, kernelLocal(w, false)...); err != nil {
				return err
			}
		}
	}
	if err := b.m.StartAgents(); err != nil {
		return err
	}
	if err := b.waitAttached(30 * time.Second); err != nil {
		return err
	}
	b.bpfUp = true
	return nil
}

// setMTU gives both ends of every workload's veth (or both taps of a VM)
// mtu and drops any cached path MTU in the workloads.
func (b *encapBench) setMTU(mtu int) error {
	for _, w := range b.l.Workloads() {
		if w.MTU != mtu {
			if err := b.l.SetWorkloadMTU(w, mtu); err != nil {
				return err
			}
		}
		if err := b.sh(w.NS, []string{"ip", "route", "flush", "cache"}); err != nil {
			return err
		}
	}
	return nil
}

// calyxPackets sums every calyx counter on both hosts; the pinned maps
// outlive the agents, so this reads them in kernel cases too.
func (b *encapBench) calyxPackets() (uint64, error) {
	var n uint64
	for _, h := range b.hosts() {
		rows, err := b.l.Counters(h.Name)
		if err != nil {
			return 0, err
		}
		for _, r := range rows {
			n += r.Packets
		}
	}
	return n, nil
}

// linkTX returns the tx byte and packet counters of iface in ns.
func (b *encapBench) linkTX(ns, iface string) (bytes, packets uint64, err error) {
	res, err := b.l.Exec(ns, "ip", "-s", "-j", "link", "show", "dev", iface)
	if err != nil {
		return 0, 0, err
	}
	var v []struct {
		Stats64 struct {
			TX struct {
				Bytes   uint64 `json:"bytes"`
				Packets uint64 `json:"packets"`
			} `json:"tx"`
		} `json:"stats64"`
	}
	if err := json.Unmarshal([]byte(res.Stdout), &v); err != nil || len(v) != 1 {
		return 0, 0, fmt.Errorf("ip -s -j link show %s in %s: %v: %s", iface, ns, err, res.Stdout)
	}
	return v[0].Stats64.TX.Bytes, v[0].Stats64.TX.Packets, nil
}

// kernelSetup configures a kernel case on both hosts and returns the
// interface on e.src's host whose tx bytes must carry the stream: the
// destination's host side for a local case (toKernel's /32s and proxy_arp
// are all it needs), the VXLAN device, or the underlay. An IPv6 case
// routes the workloads' IPv6 addresses the same way.
func (b *encapBench) kernelSetup(c EncapCase, e pathEnds) (string, error) {
	if c.Local {
		return e.dst.HostIface, nil
	}
	for _, h := range b.hosts() {
		peer := b.peer(h)
		var cmds [][]string
		switch c.Key {
		case CaseKernelRouted, CaseKernelRouted6:
			// An L3 fabric that knows the workload routes: the remote
			// workloads via the peer host. The underlay is IPv4 only,
			// and the kernel has no IPv6 route via an IPv4 next hop;
			// the IPv6 next hop is the peer's eth0 link-local address,
			// which every IPv6-enabled interface has, so the underlay
			// gets no address of another family (as a router peering
			// over link-local addresses would route it).
			via := peer.Underlay.Addr()
			if c.IPv6 {
				var err error
				if via, err = b.linkLocal(peer.NS, peer.UnderlayIface); err != nil {
					return "", err
				}
			}
			for _, pw := range b.on(peer) {
				if a := familyAddr(c.IPv6, pw); a.IsValid() {
					cmds = append(cmds, []string{"ip", "route", "add", hostPrefix(a), "via", via.String(), "dev", h.UnderlayIface})
				}
			}
		case CaseKernelVXLAN, CaseKernelVXLAN6:
			// As Calico's kernel VXLAN mode programs it: no learning,
			// the peer's tunnel MAC in the FDB (pointing at its
			// underlay address) and in the neighbour table, and the
			// remote workloads' /32s via the peer's tunnel address. For
			// IPv6 the same device over the IPv4 underlay, with IPv6
			// tunnel addresses and /128s: the inner frame carries IPv6,
			// as calyx's does.
			mac, peerMAC := vxlanMAC(h), vxlanMAC(peer)
			tunnel := kernelVXLANAddr
			var nodad []string
			if c.IPv6 {
				tunnel, nodad = kernelVXLANAddr6, []string{"nodad"}
			}
			cmds = [][]string{
				{"ip", "link", "add", kernelVXLANDev, "address", mac, "type", "vxlan", "id", kernelVXLANVNI,
					"dstport", "4789", "local", h.Underlay.Addr().String(), "dev", h.UnderlayIface, "nolearning", "noudpcsum"},
				{"ip", "link", "set", kernelVXLANDev, "mtu", fmt.Sprint(c.MTU), "up"},
				append([]string{"ip", "addr", "add", hostPrefix(netip.MustParseAddr(tunnel[h.Name])), "dev", kernelVXLANDev}, nodad...),
				{"bridge", "fdb", "append", peerMAC, "dev", kernelVXLANDev, "dst", peer.Underlay.Addr().String()},
				{"ip", "neigh", "replace", tunnel[peer.Name], "lladdr", peerMAC, "dev", kernelVXLANDev, "nud", "permanent"},
			}
			for _, pw := range b.on(peer) {
				if a := familyAddr(c.IPv6, pw); a.IsValid() {
					cmds = append(cmds, []string{"ip", "route", "add", hostPrefix(a), "via", tunnel[peer.Name], "dev", kernelVXLANDev, "onlink"})
				}
			}
		default:
			return "", fmt.Errorf("unknown kernel case %q", c.Key)
		}
		if err := b.sh(h.NS, cmds...); err != nil {
			return "", err
		}
	}
	if c.Key == CaseKernelVXLAN || c.Key == CaseKernelVXLAN6 {
		return kernelVXLANDev, nil
	}
	return b.hostOf(e.src).UnderlayIface, nil
}

// linkLocal returns the IPv6 link-local address of iface in ns.
func (b *encapBench) linkLocal(ns, iface string) (netip.Addr, error) {
	res, err := b.l.Exec(ns, "ip", "-6", "-j", "addr", "show", "dev", iface, "scope", "link")
	if err != nil {
		return netip.Addr{}, err
	}
	a, err := parseLinkLocal(res.Stdout)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%s in %s: %w", iface, ns, err)
	}
	return a, nil
}

// parseLinkLocal returns the first usable (not tentative, not failed
// duplicate address detection) link-local address in the output of
// "ip -6 -j addr show dev IFACE".
func parseLinkLocal(out string) (netip.Addr, error) {
	var links []struct {
		AddrInfo []struct {
			Family    string `json:"family"`
			Local     string `json:"local"`
			Scope     string `json:"scope"`
			Tentative bool   `json:"tentative"`
			DADFailed bool   `json:"dadfailed"`
		} `json:"addr_info"`
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil {
		return netip.Addr{}, fmt.Errorf("decode ip addr output %q: %w", out, err)
	}
	for _, l := range links {
		for _, ai := range l.AddrInfo {
			a, err := netip.ParseAddr(ai.Local)
			if err != nil || ai.Family != "inet6" || !a.IsLinkLocalUnicast() || ai.Tentative || ai.DADFailed {
				continue
			}
			return a, nil
		}
	}
	return netip.Addr{}, errors.New("no usable IPv6 link-local address")
}

// kernelTeardown removes what kernelSetup added; it is idempotent.
func (b *encapBench) kernelTeardown(c EncapCase) error {
	var errs []error
	for _, h := range b.hosts() {
		switch c.Key {
		case CaseKernelRouted, CaseKernelRouted6:
			for _, pw := range b.on(b.peer(h)) {
				if a := familyAddr(c.IPv6, pw); a.IsValid() {
					errs = append(errs, b.sh(h.NS, []string{"ip", "route", "del", hostPrefix(a), "dev", h.UnderlayIface}))
				}
			}
		case CaseKernelVXLAN, CaseKernelVXLAN6:
			// Routes, neighbours and FDB entries go with the device.
			errs = append(errs, b.sh(h.NS, []string{"ip", "link", "del", kernelVXLANDev}))
		}
	}
	return errors.Join(errs...)
}

// vxlanMAC is a fixed, locally administered MAC for h's kernel VXLAN
// device, derived from its underlay address.
func vxlanMAC(h *lab.Host) string {
	a := h.Underlay.Addr().As4()
	return fmt.Sprintf("02:cc:%02x:%02x:%02x:%02x", a[0], a[1], a[2], a[3])
}

// measure sets a path up, proves it, runs every metric of ps on it and
// tears the path down again (kernel paths).
func (b *encapBench) measure(c EncapCase, ps pathSet, round int) (err error) {
	e := ps.ends(c)
	e.ipv6 = c.IPv6
	if !e.addr(e.src).IsValid() || !e.addr(e.dst).IsValid() {
		return fmt.Errorf("%s or %s has no address of the path's family", e.src.Name, e.dst.Name)
	}
	b.idle = -1
	if err := b.setMTU(c.MTU); err != nil {
		return err
	}
	var pc pathCounter
	if c.BPF {
		pc, err = b.proveBPF(c, e)
	} else {
		var teardown func() error
		pc, teardown, err = b.proveKernel(c, e)
		if teardown != nil {
			defer func() { err = errors.Join(err, teardown()) }()
		}
	}
	if err != nil {
		return err
	}
	for _, m := range ps.metrics {
		if err := b.l.Context().Err(); err != nil {
			return err
		}
		id := ps.id(m.key, c.Key)
		bytes0, pkts0, err := pc()
		if err != nil {
			return err
		}
		watched := func() error { return nil }
		if ps.watch != nil {
			if watched, err = ps.watch(m, id, e); err != nil {
				return err
			}
		}
		profiled, err := profileRun(m, id, round, b.p.tcpSecs)
		if err != nil {
			return err
		}
		var sentBytes uint64
		var value float64
		var transactions uint64
		if m.rateOf != "" {
			if value, sentBytes, err = b.cost(m, c, ps, e, id); err != nil {
				return fmt.Errorf("%s: %w", m.key, err)
			}
		} else if m.streams > 0 {
			dst := e.addr(e.dst).String()
			rep, err := iperfRun(b.l, e.src.NS, e.dst.NS, dst, dst, b.p.tcpSecs, m.streams)
			if err != nil {
				return fmt.Errorf("%s: %w", m.key, err)
			}
			value, sentBytes = rep.BitsPerSecond/1e9, uint64(rep.SentBytes)
		} else {
			res, err := b.runLoad(m.mode, e)
			if err != nil {
				return fmt.Errorf("%s: %w", m.key, err)
			}
			value, transactions = res.PerSecond, uint64(res.Transactions)
			recordLoad(b.rec, id, res)
		}
		if err := errors.Join(watched(), profiled()); err != nil {
			return err
		}
		bytes1, pkts1, err := pc()
		if err != nil {
			return err
		}
		dBytes, dPkts := bytes1-bytes0, pkts1-pkts0
		if m.streams > 0 {
			share := float64(dBytes) / float64(max(sentBytes, 1))
			if share < 0.9 {
				return fmt.Errorf("%s: the %s path carried only %.0f%% of iperf3's bytes", m.key, c.Label, share*100)
			}
			b.rec.Detail(id, "mtu", float64(c.MTU))
			b.rec.Detail(id, "pathShare", share)
			if dPkts > 0 {
				b.rec.Detail(id, "pathPacketBytes", float64(dBytes)/float64(dPkts))
			}
		} else if dPkts < transactions {
			// Every transaction sends at least one packet src → dst.
			return fmt.Errorf("%s: the %s path carried %d packets for %d transactions", m.key, c.Label, dPkts, transactions)
		}
		b.rec.Add(id, round, value)
		b.logf("round %d/%d %-22s %-4s %10.2f %s", round+1, b.p.rounds, c.Label, m.key, value, m.unit)
	}
	return nil
}

// pathCounter reads the bytes and packets counted on a path so far (on the
// source's host, in the direction src → dst).
type pathCounter func() (bytes, packets uint64, err error)

// encapReason is the counter a BPF case raises on the source workload's
// interface (deliver-local for a local one), decapReason the counter on
// the destination's host each encapsulation must raise. pathReasons are
// every way out of the source's from-workload program to another
// workload: a BPF path must raise its own and none of the others.
var (
	encapReason = map[lab.EncapMode]string{lab.ModeVXLAN: lab.ReasonEncapVXLAN, lab.ModeIPIP: lab.ReasonEncapIPIP, lab.ModeNever: lab.ReasonForwardDirect}
	decapReason = map[lab.EncapMode]string{lab.ModeVXLAN: lab.ReasonDecapVXLAN, lab.ModeIPIP: lab.ReasonDecapIPIP}
	pathReasons = []string{reasonDeliverLocal, lab.ReasonEncapVXLAN, lab.ReasonEncapIPIP, lab.ReasonForwardDirect}
)

// pathReason is the counter case c raises on its source interface.
func pathReason(c EncapCase) string {
	if c.Local {
		return reasonDeliverLocal
	}
	return encapReason[c.Mode]
}

// counterOn sums the bytes and packets of the rows of iface and reason.
func counterOn(rows []lab.Counter, iface, reason string) (bytes, packets uint64) {
	for _, r := range rows {
		if r.Interface == iface && r.Reason == reason {
			bytes += r.Bytes
			packets += r.Packets
		}
	}
	return bytes, packets
}

// proveBPF switches the pool to the case's mode (remote cases), waits for
// both hosts to route the other workload the case's way and checks with
// pings that the source interface's counter for the case rises and no
// other path's, that the destination host decapsulates (remote cases) and
// that calyx delivers into the destination's interface (to-workload). It
// returns the case's counter on the source interface.
func (b *encapBench) proveBPF(c EncapCase, e pathEnds) (pathCounter, error) {
	l, m := b.l, b.m
	src, dst := b.hostOf(e.src), b.hostOf(e.dst)
	if !c.Local && m.Mode != c.Mode {
		if err := b.setMode(c.Mode); err != nil {
			return nil, err
		}
	}
	// Both directions: the answers come back the same way.
	for _, p := range []struct {
		h    *lab.Host
		from *lab.Workload
		to   *lab.Workload
	}{{src, e.src, e.dst}, {dst, e.dst, e.src}} {
		err := lab.Eventually(15*time.Second, 100*time.Millisecond, func() error {
			rs, err := l.Routes(p.h.Name)
			if err != nil {
				return err
			}
			to := e.addr(p.to)
			r, ok := lab.RouteFor(rs, to)
			if !ok {
				return fmt.Errorf("%s has no route for %s", p.h.Name, to)
			}
			if c.Local {
				if r.Type != "local-workload" || r.Interface != p.to.HostIface {
					return fmt.Errorf("%s routes %s (%s) as %s on %q, want local-workload on %s", p.h.Name, to, r.CIDR, r.Type, r.Interface, p.to.HostIface)
				}
			} else if want := c.Mode.Encap(); r.Encap != want {
				return fmt.Errorf("%s routes %s (%s) with encap %q, want %q", p.h.Name, to, r.CIDR, r.Encap, want)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	to := e.addr(e.dst).String()
	if err := l.WaitPing(e.src.NS, to, 10*time.Second); err != nil {
		return nil, err
	}

	reason := pathReason(c)
	beforeS, err := l.Counters(src.Name)
	if err != nil {
		return nil, err
	}
	beforeD, err := l.Counters(dst.Name)
	if err != nil {
		return nil, err
	}
	const pings = 3
	if _, err := l.Ping(e.src.NS, to, pings); err != nil {
		return nil, err
	}
	afterS, err := l.Counters(src.Name)
	if err != nil {
		return nil, err
	}
	afterD, err := l.Counters(dst.Name)
	if err != nil {
		return nil, err
	}
	rose := func(before, after []lab.Counter, iface, r string) uint64 {
		_, p0 := counterOn(before, iface, r)
		_, p1 := counterOn(after, iface, r)
		return p1 - p0
	}
	for _, r := range pathReasons {
		d := rose(beforeS, afterS, e.src.HostIface, r)
		if r == reason && d < pings {
			return nil, fmt.Errorf("%s counter %s on %s rose by %d during %d pings, want ≥ %d", src.Name, r, e.src.HostIface, d, pings, pings)
		}
		if r != reason && d != 0 {
			return nil, fmt.Errorf("%s counter %s on %s rose by %d during %d pings: not the %s path", src.Name, r, e.src.HostIface, d, pings, c.Label)
		}
	}
	if dr, ok := decapReason[c.Mode]; ok && !c.Local {
		if d := lab.CounterTotal(afterD, dr) - lab.CounterTotal(beforeD, dr); d < pings {
			return nil, fmt.Errorf("%s counter %s rose by %d during %d pings, want ≥ %d", dst.Name, dr, d, pings, pings)
		}
	}
	if d := rose(beforeD, afterD, e.dst.HostIface, reasonToWorkload); d < pings {
		return nil, fmt.Errorf("%s counter %s on %s rose by %d during %d pings, want ≥ %d", dst.Name, reasonToWorkload, e.dst.HostIface, d, pings, pings)
	}
	return func() (uint64, uint64, error) {
		rows, err := l.Counters(src.Name)
		if err != nil {
			return 0, 0, err
		}
		by, pk := counterOn(rows, e.src.HostIface, reason)
		return by, pk, nil
	}, nil
}

// proveKernel configures a kernel path, checks that the source host's
// kernel routes the destination through the path's device, and returns
// that device's tx counters. Its teardown removes the path and fails if
// any calyx counter moved in the meantime (calyx still in the path).
func (b *encapBench) proveKernel(c EncapCase, e pathEnds) (pathCounter, func() error, error) {
	l := b.l
	src := b.hostOf(e.src)
	carrier, err := b.kernelSetup(c, e)
	teardown := func() error { return b.kernelTeardown(c) }
	if err != nil {
		return nil, teardown, err
	}
	dst := e.addr(e.dst).String()
	res, err := l.Exec(src.NS, "ip", "route", "get", dst, "from", e.addr(e.src).String(), "iif", e.src.HostIface)
	if err != nil {
		return nil, teardown, err
	}
	if !strings.Contains(res.Stdout, "dev "+carrier+" ") {
		return nil, teardown, fmt.Errorf("%s routes %s not through %s: %s", src.Name, dst, carrier, res.Stdout)
	}
	if err := l.WaitPing(e.src.NS, dst, 10*time.Second); err != nil {
		return nil, teardown, err
	}
	calyx0, err := b.calyxPackets()
	if err != nil {
		return nil, teardown, err
	}
	teardown = func() error {
		calyx1, err := b.calyxPackets()
		if err == nil && calyx1 != calyx0 {
			err = fmt.Errorf("calyx counters rose by %d packets during the kernel runs: calyx is still in the path", calyx1-calyx0)
		}
		return errors.Join(err, b.kernelTeardown(c))
	}
	return func() (uint64, uint64, error) { return b.linkTX(src.NS, carrier) }, teardown, nil
}

// loadResult is calyx-load's JSON report.
type loadResult struct {
	Mode         string  `json:"mode"`
	Conns        int     `json:"conns"`
	Seconds      float64 `json:"seconds"`
	Transactions int64   `json:"transactions"`
	PerSecond    float64 `json:"perSecond"`
	LatencyP50us float64 `json:"latencyP50us"`
	LatencyP99us float64 `json:"latencyP99us"`
	Errors       int64   `json:"errors"`
}

// loadExtras are the columns of a table of calyx-load runs (recordLoad).
func loadExtras() []Extra {
	return []Extra{
		{Detail: "latencyP50us", Header: "latency p50 µs (median)", Stat: "median", Format: "%.0f"},
		{Detail: "latencyP99us", Header: "latency p99 µs (median)", Stat: "median", Format: "%.0f"},
		{Detail: "errors", Header: "errors (max)", Stat: "max", Format: "%.0f"},
	}
}

// recordLoad records a calyx-load run's latency and errors as details of
// case id.
func recordLoad(rec *Recorder, id string, res loadResult) {
	rec.Detail(id, "latencyP50us", res.LatencyP50us)
	rec.Detail(id, "latencyP99us", res.LatencyP99us)
	rec.Detail(id, "errors", float64(res.Errors))
}

// startLoadServers starts calyx-load's server in each of servers for the
// whole run, and lets every workload's connections reuse ports in
// TIME-WAIT, so thousands of short connections per second, run after run,
// do not run out of ports.
func (b *encapBench) startLoadServers(servers ...*lab.Workload) error {
	for _, w := range b.l.Workloads() {
		if err := b.sh(w.NS,
			[]string{"sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1"},
			[]string{"sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65535"},
		); err != nil {
			return err
		}
	}
	for _, w := range servers {
		// One server per address, each listening on that address only,
		// so the IPv4 server is the same with or without IPv6.
		for _, a := range []netip.Addr{w.IP, w.IPv6} {
			if !a.IsValid() {
				continue
			}
			p, err := b.l.ExecBackground(w.NS, 24*time.Hour, onCPU(pinLoadServer, b.loadBin, "serve", "--listen", loadAddr(a))...)
			if err != nil {
				return err
			}
			b.loads[a] = p
			if err := waitListeningOn(b.l, w.NS, loadAddr(a), 10*time.Second); err != nil {
				return err
			}
		}
	}
	return nil
}

// waitListeningOn waits until a TCP socket in ns listens on addrPort
// ("10.65.2.2:7007", "[fd00::2]:7007", as ss prints them).
func waitListeningOn(l *lab.Lab, ns, addrPort string, timeout time.Duration) error {
	return lab.Eventually(timeout, 100*time.Millisecond, func() error {
		res, err := l.ExecTimeout(5*time.Second, ns, "ss", "-Hltn")
		if err != nil {
			return err
		}
		for _, f := range strings.Fields(res.Stdout) {
			if f == addrPort {
				return nil
			}
		}
		return fmt.Errorf("nothing listens on %s in %s", addrPort, ns)
	})
}

// loadAddr is the address of a calyx-load server listening on a.
func loadAddr(a netip.Addr) string { return net.JoinHostPort(a.String(), fmt.Sprint(loadPort)) }

// runLoad runs calyx-load in mode (rr, crr) from e.src against e.dst's
// server on its address of the path's family.
func (b *encapBench) runLoad(mode string, e pathEnds) (loadResult, error) {
	srv := b.loads[e.addr(e.dst)]
	if srv == nil {
		return loadResult{}, fmt.Errorf("no calyx-load server in %s on %s", e.dst.Name, e.addr(e.dst))
	}
	select {
	case <-srv.Done():
		_, errOut := srv.Output()
		return loadResult{}, fmt.Errorf("the calyx-load server in %s exited: %s", e.dst.Name, errOut)
	default:
	}
	return loadRun(b.l, b.loadBin, e.src.NS, loadAddr(e.addr(e.dst)), mode, b.p.loadSecs, b.p.conns)
}

// loadRun runs calyx-load (bin) in mode (rr, crr) from namespace ns
// against target for secs seconds with conns connections, pinned like
// every measurement.
func loadRun(l *lab.Lab, bin, ns, target, mode string, secs, conns int) (loadResult, error) {
	res, _, err := loadRunAt(l, bin, ns, target, mode, secs, conns, 0)
	return res, err
}

// loadRunAt is loadRun offering rate transactions per second (0 for as
// fast as the path goes); it also returns the CPU time the machine worked
// while the client ran.
func loadRunAt(l *lab.Lab, bin, ns, target, mode string, secs, conns int, rate float64) (loadResult, cpuUse, error) {
	args := []string{bin, mode, "--target", target, "--duration", fmt.Sprintf("%ds", secs), "--conns", fmt.Sprint(conns)}
	if rate > 0 {
		args = append(args, "--rate", fmt.Sprintf("%.0f", rate))
	}
	var out lab.Result
	use, err := measureCPU(l.Cgroup(), func() (err error) {
		out, err = l.ExecTimeout(time.Duration(secs+30)*time.Second, ns, onCPU(pinLoadClient, args...)...)
		return err
	})
	if err != nil {
		return loadResult{}, cpuUse{}, err
	}
	var res loadResult
	if err := json.Unmarshal([]byte(out.Stdout), &res); err != nil {
		return loadResult{}, cpuUse{}, fmt.Errorf("calyx-load %s: decode %q: %w", mode, out.Stdout, err)
	}
	if res.Transactions <= 0 || res.PerSecond <= 0 {
		return loadResult{}, cpuUse{}, fmt.Errorf("calyx-load %s: no transactions: %s", mode, out.Stdout)
	}
	return res, use, nil
}

// twoHostMethod explains the two-host comparison.
func twoHostMethod(rec *Recorder) string {
	var b strings.Builder
	rounds, tcp, load, conns := rec.ParamInt("twohost.rounds"), rec.ParamInt("twohost.tcpSeconds"), rec.ParamInt("twohost.loadSeconds"), rec.ParamInt("twohost.loadConns")
	fmt.Fprintf(&b, "From workload wa on host-a to workload wb on host-b: two host namespaces whose eth0 veths meet in a Linux bridge (one underlay segment, MTU 1500), one workload namespace per host on a veth. ")
	fmt.Fprintf(&b, "Every path runs between the same two namespaces in the same lab; %s, each measuring every path once with, in this order: iperf3 with one TCP stream (%d s), iperf3 with four streams (%d s), `calyx-load rr` (%d s: %d persistent connection, 1-byte request, 1-byte response, one at a time) and `calyx-load crr` (%d s: %d connection at a time; per transaction connect, 1-byte request, 1-byte response, close). ", plural(rounds, "round"), tcp, tcp, load, conns, load, conns)
	var order []string
	for _, c := range twoHostSchedule(0) {
		order = append(order, c.Label)
	}
	fmt.Fprintf(&b, "Each BPF path is measured right next to the kernel path it is compared with — a round runs %s, and every other round the same backwards — so a pair is measured seconds apart and each of the two goes first equally often; this machine's load drifts over minutes. Every figure is the median of the rounds, with min and max; *per-round ratio* divides the two paths' figures of the same round.\n\n", strings.Join(order, ", "))
	fmt.Fprintf(&b, "- **IPv6** (issue 18): wa and wb are dual-stack (%s and %s, in two blocks of a second pool, %s, switched with the IPv4 pool to the same mode), and the paths marked *(IPv6)* run the same measurements between those addresses, over the same IPv4 underlay (the hosts have no IPv6 underlay address): BPF VXLAN carries an IPv6 inner frame, BPF direct puts the IPv6 packet on the underlay as it is. Their figures come from the same lab and rounds as the IPv4 ones.\n", twoHostWorkloads[0].ip6, twoHostWorkloads[1].ip6, pool6CIDR)
	fmt.Fprintf(&b, "- **MTU**: each path runs at the workload MTU it needs, set on both ends of wa's and wb's veths: VXLAN 1450, IP-in-IP 1480, no encapsulation 1500, for IPv6 as for IPv4 (the outer headers are the IPv4 underlay's). Each kernel baseline uses its BPF counterpart's MTU.\n")
	fmt.Fprintf(&b, "- **BPF paths**: calyx-agent on both hosts; the pools' mode is switched by applying the IPPools (vxlanMode Always / ipipMode Always / both Never) without restarting the agents, and a path is measured once `calyxctl routes dump` on both hosts shows the new encapsulation for the peer workload's address of the path's family.\n")
	fmt.Fprintf(&b, "- **Kernel paths**: the agents are stopped (SIGTERM), their TCX link pins removed, which detaches the programs (checked with `BPF_PROG_QUERY` on eth0 and the workload veths: nothing attached, no clsact, no XDP), and calyx's routes (proto 202, both families) flushed. ")
	fmt.Fprintf(&b, "Then, on both hosts, proxy_arp on the workload's host side (workloads keep 169.254.1.1 as gateway) and a /32 to the local workload; for IPv6, the workloads' IPv6 gateway fe80::1 as an address of the host side (calyx answers its neighbour solicitations in BPF, the kernel for its own address) and a /128 to the local workload. ")
	fmt.Fprintf(&b, "*Plain routing* adds a /32 to the remote workload via the peer host's underlay address (an L3 fabric that knows the routes); *plain kernel routing (IPv6)* a /128 via the peer's eth0 link-local address (the kernel has no IPv6 route via an IPv4 next hop, and every IPv6-enabled interface has a link-local address, so the IPv4 underlay gets no IPv6 address for it). ")
	fmt.Fprintf(&b, "*Kernel VXLAN* adds a vxlan device (VNI 42, port 4789, `nolearning`, `noudpcsum` like calyx's VXLAN, MTU 1450) with the peer's tunnel MAC in the FDB and neighbour table and the remote /32 via the peer's tunnel address, as Calico programs its kernel VXLAN mode; *kernel VXLAN device (IPv6)* the same device over the IPv4 underlay with IPv6 tunnel addresses (%s, %s) and the remote /128 via the peer's. ", kernelVXLANAddr6["host-a"], kernelVXLANAddr6["host-b"])
	fmt.Fprintf(&b, "Each kernel path is torn down after its measurements; the agents are restarted (they re-attach) for the next BPF side. There is no kernel IP-in-IP baseline: this kernel has no ipip device, so BPF IP-in-IP is compared with both kernel paths, for information.\n")
	fmt.Fprintf(&b, "- **Proof of the path**, for every measurement: BPF — pings raise host-a's counter for the path (encap-vxlan / encap-ipip / forward-direct) and no other, and host-b's decap counter; during each measurement that counter on host-a counts the stream's bytes (iperf3) or at least one packet per transaction (rr, crr). Kernel — `ip route get` on host-a leads through the path's device, calyx's counters on both hosts stay unchanged over all of the path's measurements, and host-a's vxlan device (VXLAN) or eth0 (routing) transmits the stream's bytes or a packet per transaction. ")
	fmt.Fprintf(&b, "*Path share* is those bytes divided by the bytes iperf3 sent (slightly above 1: headers); *packet on the path* is their mean size: far above the MTU means TSO/GSO super-packets crossed unsegmented, as they should on both sides.\n")
	fmt.Fprintf(&b, "- **CPUs**: %s\n", placementNote(true))
	b.WriteString(costMethod(rec, "twohost"))
	fmt.Fprintf(&b, "- **TIME-WAIT**: wa and wb run with `net.ipv4.tcp_tw_reuse=1` and ports 1024–65535, the same for every path, so crr's thousands of connections per second do not exhaust wa's ports.\n\n")
	fmt.Fprintf(&b, "What differs per packet: calyx's from-workload program encapsulates (or not) and hands the packet to eth0 itself (`bpf_redirect_neigh`), so host-a's IP forwarding is skipped; ")
	fmt.Fprintf(&b, "host-b's from-underlay program decapsulates and puts the packet straight into wb (`bpf_redirect_peer`), skipping host-b's forwarding and the veth hop. ")
	fmt.Fprintf(&b, "The kernel VXLAN device adds to plain routing a second route lookup for the outer header on host-a and, on host-b, the UDP socket lookup, `vxlan_rcv` and a GRO-cell pass before forwarding. ")
	fmt.Fprintf(&b, "Throughput moves super-packets of tens of kilobytes, so these per-packet costs are paid once per many segments and the streams are bounded mostly by copying data in and out of iperf3 on two CPUs; request/response and connection rate send one small packet at a time, so there the per-packet path is a larger share of the cost.\n")
	return b.String()
}
