package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/calyxnet/calyx/tests/lab"
)

// The paths of the two-host comparison: how wa's traffic reaches wb.
const (
	CaseBPFVXLAN     = "bpf-vxlan"
	CaseBPFIPIP      = "bpf-ipip"
	CaseBPFDirect    = "bpf-direct"
	CaseKernelVXLAN  = "kernel-vxlan"
	CaseKernelRouted = "kernel-routing"
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
	// MTU is set on both ends of wa's and wb's veths for the case.
	MTU int
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
	}
}

// metric is one measurement made on every path of the two-host lab.
type metric struct {
	key, title, unit string
	// streams > 0: iperf3 with that many TCP streams; else a calyx-load
	// mode ("rr", "crr").
	streams int
	mode    string
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

// Goals of issue 3, on one-stream throughput.
var twoHostGoals = map[string]*Goal{
	TwoHostCaseID(MetricTCP1, CaseBPFVXLAN):  {Issue: "issue 3", Text: "BPF VXLAN ≥ kernel VXLAN device (one stream)", MinRatio: 1.0},
	TwoHostCaseID(MetricTCP1, CaseBPFDirect): {Issue: "issue 3", Text: "BPF direct ≥ 0.95 × plain routing (one stream)", MinRatio: 0.95},
}

// twoHostParams are the durations of one two-host run.
type twoHostParams struct {
	rounds, tcpSecs, loadSecs, conns int
}

func twoHostSection() *Section {
	s := &Section{Key: "twohost", Title: "Between workloads on two hosts: BPF encapsulation vs the kernel's"}
	for _, m := range twoHostMetrics() {
		t := Table{Title: m.title}
		for _, p := range EncapCases() {
			c := Case{ID: TwoHostCaseID(m.key, p.Key), Label: p.Label, Unit: m.unit, Better: HigherIsBetter, Kernel: !p.BPF,
				Goal: twoHostGoals[TwoHostCaseID(m.key, p.Key)]}
			if p.Baseline != "" {
				c.Baseline = TwoHostCaseID(m.key, p.Baseline)
			}
			for _, a := range p.Also {
				c.Also = append(c.Also, TwoHostCaseID(m.key, a))
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
			t.Extras = []Extra{
				{Detail: "latencyP50us", Header: "latency p50 µs (median)", Stat: "median", Format: "%.0f"},
				{Detail: "latencyP99us", Header: "latency p99 µs (median)", Stat: "median", Format: "%.0f"},
				{Detail: "errors", Header: "errors (max)", Stat: "max", Format: "%.0f"},
			}
		}
		s.Tables = append(s.Tables, t)
	}
	s.Run = func(ctx context.Context, o *Options, rec *Recorder) error {
		// Five rounds of 5+5+3+3 s on five paths: about 7 minutes
		// with the proofs and the switches between the sides.
		p := twoHostParams{rounds: 5, tcpSecs: 5, loadSecs: 3, conns: 1}
		if o.Quick {
			p = twoHostParams{rounds: 1, tcpSecs: 1, loadSecs: 1, conns: 1}
		}
		if o.Rounds > 0 {
			p.rounds = o.Rounds
		}
		rec.Param("twohost.rounds", p.rounds)
		rec.Param("twohost.tcpSeconds", p.tcpSecs)
		rec.Param("twohost.loadSeconds", p.loadSecs)
		rec.Param("twohost.loadConns", p.conns)
		rec.logf("two hosts: %d rounds of %d paths × (iperf3 1 and 4 streams %d s, rr and crr %d s)", p.rounds, len(EncapCases()), p.tcpSecs, p.loadSecs)
		return TwoHost(ctx, o.BinDir, p, rec)
	}
	s.Method = twoHostMethod
	return s
}

// encapBench is the lab of one two-host run.
type encapBench struct {
	l     *lab.Lab
	m     *lab.MultiHost
	p     twoHostParams
	rec   *Recorder
	logf  func(string, ...any)
	bpfUp bool // agents running and programs attached
	// load is the calyx-load server in wb, up for the whole run.
	load     *lab.Proc
	loadBin  string
	loadAddr string
}

// Addresses of the kernel VXLAN devices, outside the pool and the underlay.
var kernelVXLANAddr = map[string]string{"host-a": "10.97.0.11", "host-b": "10.97.0.12"}

const (
	kernelVXLANDev = "vxcx"
	kernelVXLANVNI = "42"
	loadPort       = 7007
)

// TwoHost builds two hosts on one underlay segment with one workload each
// (wa on host-a, wb on host-b) and measures every metric (iperf3 with one
// and four streams, calyx-load rr and crr) wa → wb on every path of
// EncapCases, p.rounds times, between the same two namespaces. BPF paths
// switch the pool's mode under running agents; kernel paths stop the
// agents, detach calyx's programs and configure the kernel. Each path is
// proven to carry the traffic the way it claims, before and during every
// measurement, or the run fails.
func TwoHost(ctx context.Context, binDir string, p twoHostParams, rec *Recorder) (err error) {
	loadBin := filepath.Join(binDir, "calyx-load")
	if _, err := os.Stat(loadBin); err != nil {
		return fmt.Errorf("the load tool is missing (make build builds it): %w", err)
	}
	l, err := lab.New(lab.Options{BinDir: binDir, Context: ctx, AgentLogLevel: "warn"})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, l.Close()) }()
	rec.logf("two-host lab %s (state in %s)", l.Prefix, l.Dir)
	b := &encapBench{l: l, p: p, rec: rec, logf: rec.logf, loadBin: loadBin}
	if err := b.build(); err != nil {
		return err
	}

	for r := range p.rounds {
		for _, c := range twoHostSchedule(r) {
			if err := ctx.Err(); err != nil {
				return err
			}
			if c.BPF {
				err = b.toBPF()
			} else {
				err = b.toKernel()
			}
			if err != nil {
				return err
			}
			if err := b.measure(c, r); err != nil {
				return fmt.Errorf("round %d, %s: %w", r+1, c.Label, err)
			}
		}
		b.logRound(r)
	}
	return nil
}

// twoHostSchedule is the order of the paths in round r: each BPF path
// next to the kernel path it is compared with, so the two are measured
// seconds apart rather than minutes (this machine's load drifts), and
// every other round in reverse, so each of the two goes first as often.
// Even rounds: BPF VXLAN, kernel VXLAN, plain routing, BPF direct, BPF
// IP-in-IP; odd rounds the same backwards. That is two switches between
// the sides per round (stopping the agents takes well under a second,
// restarting them and waiting for the programs about a second), and none
// between rounds.
func twoHostSchedule(r int) []EncapCase {
	by := map[string]EncapCase{}
	for _, c := range EncapCases() {
		by[c.Key] = c
	}
	order := []EncapCase{by[CaseBPFVXLAN], by[CaseKernelVXLAN], by[CaseKernelRouted], by[CaseBPFDirect], by[CaseBPFIPIP]}
	if r%2 == 1 {
		slices.Reverse(order)
	}
	return order
}

// logRound prints the round's ratios to the baselines.
func (b *encapBench) logRound(r int) {
	for _, m := range twoHostMetrics() {
		var parts []string
		for _, c := range EncapCases() {
			if c.Baseline == "" {
				continue
			}
			pr := b.rec.pairedRatios(TwoHostCaseID(m.key, c.Key), TwoHostCaseID(m.key, c.Baseline))
			if len(pr) > 0 {
				parts = append(parts, fmt.Sprintf("%s/%s %.2f", c.Key, c.Baseline, pr[len(pr)-1]))
			}
		}
		b.logf("round %d/%d %s ratios: %s", r+1, b.p.rounds, m.key, strings.Join(parts, ", "))
	}
}

// build makes the two hosts and workloads, starts the agents and applies
// the model.
func (b *encapBench) build() error {
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
	if b.m.WA, err = b.m.AddWorkload("host-a", "wa", "10.65.1.2", 0); err != nil {
		return err
	}
	if b.m.WB, err = b.m.AddWorkload("host-b", "wb", "10.65.2.2", 0); err != nil {
		return err
	}
	if err := b.m.StartAgents(); err != nil {
		return err
	}
	if out, err := b.m.Apply(); err != nil {
		return fmt.Errorf("apply model: %w: %s", err, out)
	}
	if err := b.waitAttached(30 * time.Second); err != nil {
		return err
	}
	b.bpfUp = true
	return b.startLoadServer()
}

func (b *encapBench) hosts() []*lab.Host { return []*lab.Host{b.m.HostA, b.m.HostB} }

// local returns the workload on h, peer the other host and its workload.
func (b *encapBench) local(h *lab.Host) (w *lab.Workload, peer *lab.Host, pw *lab.Workload) {
	if h == b.m.HostA {
		return b.m.WA, b.m.HostB, b.m.WB
	}
	return b.m.WB, b.m.HostA, b.m.WA
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
	w, _, _ := b.local(h)
	return []string{h.UnderlayIface, w.HostIface}
}

// tcxPrograms counts the programs attached by TCX to iface in ns, both
// directions, asking the kernel (BPF_PROG_QUERY), not calyx's own maps.
func tcxPrograms(ns, iface string) (int, error) {
	n := 0
	err := lab.InNS(ns, func() error {
		ifc, err := net.InterfaceByName(iface)
		if err != nil {
			return err
		}
		for _, at := range []ebpf.AttachType{ebpf.AttachTCXIngress, ebpf.AttachTCXEgress} {
			q, err := link.QueryPrograms(link.QueryOptions{Target: ifc.Index, Attach: at})
			if err != nil {
				return fmt.Errorf("query %s programs on %s: %w", at, iface, err)
			}
			n += len(q.Programs)
		}
		return nil
	})
	return n, err
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
// kernel that nothing of calyx is attached and sets up what both kernel
// cases share: proxy_arp on the workloads' host sides and a /32 to each
// local workload.
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
		w, _, _ := b.local(h)
		if err := b.sh(h.NS,
			[]string{"sysctl", "-qw", "net.ipv4.ip_forward=1"},
			[]string{"sysctl", "-qw", "net.ipv4.conf." + w.HostIface + ".proxy_arp=1"},
			[]string{"ip", "route", "add", w.IP.String() + "/32", "dev", w.HostIface, "scope", "link"},
		); err != nil {
			return err
		}
	}
	return nil
}

// detachCalyx takes calyx out of host h, whose agent is stopped: every
// TCX link pin removed (the pin is the last reference, so the link
// detaches), calyx's kernel routes flushed, and the kernel asked that
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
	if _, err := l.Exec(h.NS, "ip", "route", "flush", "proto", "202"); err != nil {
		return err
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
		w, _, _ := b.local(h)
		if err := b.sh(h.NS,
			[]string{"sysctl", "-qw", "net.ipv4.conf." + w.HostIface + ".proxy_arp=0"},
			[]string{"ip", "route", "del", w.IP.String() + "/32", "dev", w.HostIface},
		); err != nil {
			return err
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

// setMTU gives both ends of both workload veths mtu and drops any cached
// path MTU in the workloads.
func (b *encapBench) setMTU(mtu int) error {
	for _, w := range []*lab.Workload{b.m.WA, b.m.WB} {
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
// interface on host-a whose tx bytes must carry the stream.
func (b *encapBench) kernelSetup(c EncapCase) (string, error) {
	for _, h := range b.hosts() {
		_, peer, pw := b.local(h)
		var err error
		switch c.Key {
		case CaseKernelRouted:
			err = b.sh(h.NS, []string{"ip", "route", "add", pw.IP.String() + "/32", "via", peer.Underlay.Addr().String(), "dev", h.UnderlayIface})
		case CaseKernelVXLAN:
			// As Calico's kernel VXLAN mode programs it: no learning,
			// the peer's tunnel MAC in the FDB (pointing at its
			// underlay address) and in the neighbour table, and the
			// remote workload's /32 via the peer's tunnel address.
			mac, peerMAC := vxlanMAC(h), vxlanMAC(peer)
			err = b.sh(h.NS,
				[]string{"ip", "link", "add", kernelVXLANDev, "address", mac, "type", "vxlan", "id", kernelVXLANVNI,
					"dstport", "4789", "local", h.Underlay.Addr().String(), "dev", h.UnderlayIface, "nolearning", "noudpcsum"},
				[]string{"ip", "link", "set", kernelVXLANDev, "mtu", fmt.Sprint(c.MTU), "up"},
				[]string{"ip", "addr", "add", kernelVXLANAddr[h.Name] + "/32", "dev", kernelVXLANDev},
				[]string{"bridge", "fdb", "append", peerMAC, "dev", kernelVXLANDev, "dst", peer.Underlay.Addr().String()},
				[]string{"ip", "neigh", "replace", kernelVXLANAddr[peer.Name], "lladdr", peerMAC, "dev", kernelVXLANDev, "nud", "permanent"},
				[]string{"ip", "route", "add", pw.IP.String() + "/32", "via", kernelVXLANAddr[peer.Name], "dev", kernelVXLANDev, "onlink"},
			)
		default:
			err = fmt.Errorf("unknown kernel case %q", c.Key)
		}
		if err != nil {
			return "", err
		}
	}
	if c.Key == CaseKernelVXLAN {
		return kernelVXLANDev, nil
	}
	return b.m.HostA.UnderlayIface, nil
}

// kernelTeardown removes what kernelSetup added; it is idempotent.
func (b *encapBench) kernelTeardown(c EncapCase) error {
	var errs []error
	for _, h := range b.hosts() {
		_, _, pw := b.local(h)
		switch c.Key {
		case CaseKernelRouted:
			errs = append(errs, b.sh(h.NS, []string{"ip", "route", "del", pw.IP.String() + "/32", "dev", h.UnderlayIface}))
		case CaseKernelVXLAN:
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

// measure sets a path up, proves it, runs every metric on it and tears the
// path down again (kernel paths).
func (b *encapBench) measure(c EncapCase, round int) (err error) {
	if err := b.setMTU(c.MTU); err != nil {
		return err
	}
	var pc pathCounter
	if c.BPF {
		pc, err = b.proveBPF(c)
	} else {
		var teardown func() error
		pc, teardown, err = b.proveKernel(c)
		if teardown != nil {
			defer func() { err = errors.Join(err, teardown()) }()
		}
	}
	if err != nil {
		return err
	}
	for _, m := range twoHostMetrics() {
		if err := b.l.Context().Err(); err != nil {
			return err
		}
		id := TwoHostCaseID(m.key, c.Key)
		bytes0, pkts0, err := pc()
		if err != nil {
			return err
		}
		var sentBytes uint64
		var value float64
		var transactions uint64
		if m.streams > 0 {
			rep, err := iperfReport(b.l, b.m.WA, b.m.WB, b.p.tcpSecs, m.streams)
			if err != nil {
				return fmt.Errorf("%s: %w", m.key, err)
			}
			value, sentBytes = rep.BitsPerSecond/1e9, uint64(rep.SentBytes)
		} else {
			res, err := b.runLoad(m.mode)
			if err != nil {
				return fmt.Errorf("%s: %w", m.key, err)
			}
			value, transactions = res.PerSecond, uint64(res.Transactions)
			b.rec.Detail(id, "latencyP50us", res.LatencyP50us)
			b.rec.Detail(id, "latencyP99us", res.LatencyP99us)
			b.rec.Detail(id, "errors", float64(res.Errors))
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
			// Every transaction sends at least one packet wa → wb.
			return fmt.Errorf("%s: the %s path carried %d packets for %d transactions", m.key, c.Label, dPkts, transactions)
		}
		b.rec.Add(id, round, value)
		b.logf("round %d/%d %-22s %-4s %10.2f %s", round+1, b.p.rounds, c.Label, m.key, value, m.unit)
	}
	return nil
}

// pathCounter reads the bytes and packets counted on a path so far (on
// host-a, in the direction wa → wb).
type pathCounter func() (bytes, packets uint64, err error)

// encapReasons are the host-a counters of the three BPF cases, and the
// host-b counter each encapsulation must raise.
var (
	encapReason = map[lab.EncapMode]string{lab.ModeVXLAN: lab.ReasonEncapVXLAN, lab.ModeIPIP: lab.ReasonEncapIPIP, lab.ModeNever: lab.ReasonForwardDirect}
	decapReason = map[lab.EncapMode]string{lab.ModeVXLAN: lab.ReasonDecapVXLAN, lab.ModeIPIP: lab.ReasonDecapIPIP}
)

func counterBytes(rows []lab.Counter, reason string) uint64 {
	var n uint64
	for _, r := range rows {
		if r.Reason == reason {
			n += r.Bytes
		}
	}
	return n
}

// proveBPF switches the pool to the case's mode, waits for both hosts to
// route the peer workload with it and checks with pings that host-a's
// counter for the case (and host-b's decap counter) rises and no other
// path's. It returns the case's counter on host-a.
func (b *encapBench) proveBPF(c EncapCase) (pathCounter, error) {
	l, m := b.l, b.m
	if m.Mode != c.Mode {
		if out, err := m.SetMode(c.Mode); err != nil {
			return nil, fmt.Errorf("%w: %s", err, out)
		}
	}
	want := c.Mode.Encap()
	// Both directions: the answers come back the same way.
	for _, p := range []struct {
		h *lab.Host
		w *lab.Workload
	}{{m.HostA, m.WB}, {m.HostB, m.WA}} {
		err := lab.Eventually(15*time.Second, 100*time.Millisecond, func() error {
			rs, err := l.Routes(p.h.Name)
			if err != nil {
				return err
			}
			r, ok := lab.RouteFor(rs, p.w.IP)
			if !ok {
				return fmt.Errorf("%s has no route for %s", p.h.Name, p.w.IP)
			}
			if r.Encap != want {
				return fmt.Errorf("%s routes %s (%s) with encap %q, want %q", p.h.Name, p.w.IP, r.CIDR, r.Encap, want)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	if err := l.WaitPing(m.WA.NS, m.WB.IP.String(), 10*time.Second); err != nil {
		return nil, err
	}

	reason := encapReason[c.Mode]
	beforeA, err := l.Counters(m.HostA.Name)
	if err != nil {
		return nil, err
	}
	beforeB, err := l.Counters(m.HostB.Name)
	if err != nil {
		return nil, err
	}
	const pings = 3
	if _, err := l.Ping(m.WA.NS, m.WB.IP.String(), pings); err != nil {
		return nil, err
	}
	afterA, err := l.Counters(m.HostA.Name)
	if err != nil {
		return nil, err
	}
	afterB, err := l.Counters(m.HostB.Name)
	if err != nil {
		return nil, err
	}
	for _, r := range []string{lab.ReasonEncapVXLAN, lab.ReasonEncapIPIP, lab.ReasonForwardDirect} {
		d := lab.CounterTotal(afterA, r) - lab.CounterTotal(beforeA, r)
		if r == reason && d < pings {
			return nil, fmt.Errorf("host-a counter %s rose by %d during %d pings, want ≥ %d", r, d, pings, pings)
		}
		if r != reason && d != 0 {
			return nil, fmt.Errorf("host-a counter %s rose by %d during %d pings: not the %s path", r, d, pings, c.Label)
		}
	}
	if dr, ok := decapReason[c.Mode]; ok {
		if d := lab.CounterTotal(afterB, dr) - lab.CounterTotal(beforeB, dr); d < pings {
			return nil, fmt.Errorf("host-b counter %s rose by %d during %d pings, want ≥ %d", dr, d, pings, pings)
		}
	}
	return func() (uint64, uint64, error) {
		rows, err := l.Counters(m.HostA.Name)
		if err != nil {
			return 0, 0, err
		}
		return counterBytes(rows, reason), lab.CounterTotal(rows, reason), nil
	}, nil
}

// proveKernel configures a kernel path, checks that host-a's kernel routes
// wb through the path's device, and returns that device's tx counters.
// Its teardown removes the path and fails if any calyx counter moved in
// the meantime (calyx still in the path).
func (b *encapBench) proveKernel(c EncapCase) (pathCounter, func() error, error) {
	l, m := b.l, b.m
	carrier, err := b.kernelSetup(c)
	teardown := func() error { return b.kernelTeardown(c) }
	if err != nil {
		return nil, teardown, err
	}
	res, err := l.Exec(m.HostA.NS, "ip", "route", "get", m.WB.IP.String(), "from", m.WA.IP.String(), "iif", m.WA.HostIface)
	if err != nil {
		return nil, teardown, err
	}
	if !strings.Contains(res.Stdout, "dev "+carrier+" ") {
		return nil, teardown, fmt.Errorf("host-a routes %s not through %s: %s", m.WB.IP, carrier, res.Stdout)
	}
	if err := l.WaitPing(m.WA.NS, m.WB.IP.String(), 10*time.Second); err != nil {
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
	return func() (uint64, uint64, error) { return b.linkTX(m.HostA.NS, carrier) }, teardown, nil
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

// startLoadServer starts calyx-load's server in wb for the whole run, and
// lets wa's connections reuse ports in TIME-WAIT, so thousands of short
// connections per second, run after run, do not run out of ports.
func (b *encapBench) startLoadServer() error {
	b.loadAddr = net.JoinHostPort(b.m.WB.IP.String(), fmt.Sprint(loadPort))
	for _, w := range []*lab.Workload{b.m.WA, b.m.WB} {
		if err := b.sh(w.NS,
			[]string{"sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1"},
			[]string{"sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65535"},
		); err != nil {
			return err
		}
	}
	p, err := b.l.ExecBackground(b.m.WB.NS, 24*time.Hour, onCPU(pinLoadServer, b.loadBin, "serve", "--listen", b.loadAddr)...)
	if err != nil {
		return err
	}
	b.load = p
	return lab.WaitListening(b.l, b.m.WB.NS, loadPort, 10*time.Second)
}

// runLoad runs calyx-load in mode (rr, crr) from wa against wb's server.
func (b *encapBench) runLoad(mode string) (loadResult, error) {
	select {
	case <-b.load.Done():
		_, errOut := b.load.Output()
		return loadResult{}, fmt.Errorf("the calyx-load server in wb exited: %s", errOut)
	default:
	}
	return loadRun(b.l, b.loadBin, b.m.WA.NS, b.loadAddr, mode, b.p.loadSecs, b.p.conns)
}

// loadRun runs calyx-load (bin) in mode (rr, crr) from namespace ns
// against target for secs seconds with conns connections, pinned like
// every measurement.
func loadRun(l *lab.Lab, bin, ns, target, mode string, secs, conns int) (loadResult, error) {
	out, err := l.ExecTimeout(time.Duration(secs+30)*time.Second, ns, onCPU(pinLoadClient, bin, mode,
		"--target", target, "--duration", fmt.Sprintf("%ds", secs), "--conns", fmt.Sprint(conns))...)
	if err != nil {
		return loadResult{}, err
	}
	var res loadResult
	if err := json.Unmarshal([]byte(out.Stdout), &res); err != nil {
		return loadResult{}, fmt.Errorf("calyx-load %s: decode %q: %w", mode, out.Stdout, err)
	}
	if res.Transactions <= 0 || res.PerSecond <= 0 {
		return loadResult{}, fmt.Errorf("calyx-load %s: no transactions: %s", mode, out.Stdout)
	}
	return res, nil
}

// twoHostMethod explains the two-host comparison.
func twoHostMethod(rec *Recorder) string {
	var b strings.Builder
	rounds, tcp, load, conns := rec.ParamInt("twohost.rounds"), rec.ParamInt("twohost.tcpSeconds"), rec.ParamInt("twohost.loadSeconds"), rec.ParamInt("twohost.loadConns")
	fmt.Fprintf(&b, "From workload wa on host-a to workload wb on host-b: two host namespaces whose eth0 veths meet in a Linux bridge (one underlay segment, MTU 1500), one workload namespace per host on a veth. ")
	fmt.Fprintf(&b, "Every path runs between the same two namespaces in the same lab; %s, each measuring every path once with, in this order: iperf3 with one TCP stream (%d s), iperf3 with four streams (%d s), `calyx-load rr` (%d s: %d persistent connection, 1-byte request, 1-byte response, one at a time) and `calyx-load crr` (%d s: %d connection at a time; per transaction connect, 1-byte request, 1-byte response, close). ", plural(rounds, "round"), tcp, tcp, load, conns, load, conns)
	fmt.Fprintf(&b, "Each BPF path is measured right next to the kernel path it is compared with — a round runs BPF VXLAN, kernel VXLAN, plain routing, BPF direct, BPF IP-in-IP, and every other round the same backwards — so a pair is measured seconds apart and each of the two goes first equally often; this machine's load drifts over minutes. Every figure is the median of the rounds, with min and max; *per-round ratio* divides the two paths' figures of the same round.\n\n")
	fmt.Fprintf(&b, "- **MTU**: each path runs at the workload MTU it needs, set on both ends of wa's and wb's veths: VXLAN 1450, IP-in-IP 1480, no encapsulation 1500. Each kernel baseline uses its BPF counterpart's MTU.\n")
	fmt.Fprintf(&b, "- **BPF paths**: calyx-agent on both hosts; the pool's mode is switched by applying the IPPool (vxlanMode Always / ipipMode Always / both Never) without restarting the agents, and a path is measured once `calyxctl routes dump` on both hosts shows the new encapsulation for the peer workload.\n")
	fmt.Fprintf(&b, "- **Kernel paths**: the agents are stopped (SIGTERM), their TCX link pins removed, which detaches the programs (checked with `BPF_PROG_QUERY` on eth0 and the workload veths: nothing attached, no clsact, no XDP), and calyx's routes (proto 202) flushed. ")
	fmt.Fprintf(&b, "Then, on both hosts, proxy_arp on the workload's host side (workloads keep 169.254.1.1 as gateway) and a /32 to the local workload. ")
	fmt.Fprintf(&b, "*Plain routing* adds a /32 to the remote workload via the peer host's underlay address (an L3 fabric that knows the routes). ")
	fmt.Fprintf(&b, "*Kernel VXLAN* adds a vxlan device (VNI 42, port 4789, `nolearning`, `noudpcsum` like calyx's VXLAN, MTU 1450) with the peer's tunnel MAC in the FDB and neighbour table and the remote /32 via the peer's tunnel address, as Calico programs its kernel VXLAN mode. ")
	fmt.Fprintf(&b, "Each kernel path is torn down after its measurements; the agents are restarted (they re-attach) for the next BPF side. There is no kernel IP-in-IP baseline: this kernel has no ipip device, so BPF IP-in-IP is compared with both kernel paths, for information.\n")
	fmt.Fprintf(&b, "- **Proof of the path**, for every measurement: BPF — pings raise host-a's counter for the path (encap-vxlan / encap-ipip / forward-direct) and no other, and host-b's decap counter; during each measurement that counter on host-a counts the stream's bytes (iperf3) or at least one packet per transaction (rr, crr). Kernel — `ip route get` on host-a leads through the path's device, calyx's counters on both hosts stay unchanged over all of the path's measurements, and host-a's vxlan device (VXLAN) or eth0 (routing) transmits the stream's bytes or a packet per transaction. ")
	fmt.Fprintf(&b, "*Path share* is those bytes divided by the bytes iperf3 sent (slightly above 1: headers); *packet on the path* is their mean size: far above the MTU means TSO/GSO super-packets crossed unsegmented, as they should on both sides.\n")
	fmt.Fprintf(&b, "- **CPUs**: %s\n", placementNote(true))
	fmt.Fprintf(&b, "- **TIME-WAIT**: wa and wb run with `net.ipv4.tcp_tw_reuse=1` and ports 1024–65535, the same for every path, so crr's thousands of connections per second do not exhaust wa's ports.\n\n")
	fmt.Fprintf(&b, "What differs per packet: calyx's from-workload program encapsulates (or not) and hands the packet to eth0 itself (`bpf_redirect_neigh`), so host-a's IP forwarding is skipped; ")
	fmt.Fprintf(&b, "host-b's from-underlay program decapsulates and puts the packet straight into wb (`bpf_redirect_peer`), skipping host-b's forwarding and the veth hop. ")
	fmt.Fprintf(&b, "The kernel VXLAN device adds to plain routing a second route lookup for the outer header on host-a and, on host-b, the UDP socket lookup, `vxlan_rcv` and a GRO-cell pass before forwarding. ")
	fmt.Fprintf(&b, "Throughput moves super-packets of tens of kilobytes, so these per-packet costs are paid once per many segments and the streams are bounded mostly by copying data in and out of iperf3 on two CPUs; request/response and connection rate send one small packet at a time, so there the per-packet path is a larger share of the cost.\n")
	return b.String()
}
