package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/calyxnet/calyx/tests/lab"
)

// The cases of the two-host throughput comparison (issue 3).
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
}

// EncapCases returns the cases in report order.
func EncapCases() []EncapCase {
	return []EncapCase{
		{Key: CaseBPFVXLAN, Label: "calyx BPF VXLAN", BPF: true, Mode: lab.ModeVXLAN, MTU: lab.UnderlayMTU - lab.VXLANOverhead},
		{Key: CaseBPFIPIP, Label: "calyx BPF IP-in-IP", BPF: true, Mode: lab.ModeIPIP, MTU: lab.UnderlayMTU - lab.IPIPOverhead},
		{Key: CaseBPFDirect, Label: "calyx BPF direct", BPF: true, Mode: lab.ModeNever, MTU: lab.UnderlayMTU},
		{Key: CaseKernelVXLAN, Label: "kernel VXLAN device", MTU: lab.UnderlayMTU - lab.VXLANOverhead},
		{Key: CaseKernelRouted, Label: "plain kernel routing", MTU: lab.UnderlayMTU},
	}
}

// EncapRun is one measurement of one case.
type EncapRun struct {
	Round int
	Gbps  float64
	// PathShare is the bytes counted on the path the case claims (a calyx
	// counter for BPF, the vxlan device or the underlay eth0 for the
	// kernel) divided by the bytes iperf3 sent: ≈ 1 (plus headers) when
	// the whole stream took that path.
	PathShare float64
	// PathPacket is the mean size in bytes of what passed there: far
	// above the MTU when TSO/GSO super-packets travel unsegmented.
	PathPacket float64
}

// EncapResult is the two-host comparison: every case measured once per
// round, rounds alternating which side (BPF or kernel) goes first.
type EncapResult struct {
	Seconds, Rounds int
	Runs            map[string][]EncapRun
}

// Gbps returns the figures of one case in round order.
func (r *EncapResult) Gbps(key string) []float64 {
	var out []float64
	for _, x := range r.Runs[key] {
		out = append(out, x.Gbps)
	}
	return out
}

// PairedRatios returns a/b per round (both measured in the same round).
func (r *EncapResult) PairedRatios(a, b string) []float64 {
	byRound := map[int]float64{}
	for _, x := range r.Runs[b] {
		byRound[x.Round] = x.Gbps
	}
	var out []float64
	for _, x := range r.Runs[a] {
		if d := byRound[x.Round]; d > 0 {
			out = append(out, x.Gbps/d)
		}
	}
	return out
}

// encapBench is the lab of one EncapThroughput run.
type encapBench struct {
	l       *lab.Lab
	m       *lab.MultiHost
	seconds int
	logf    func(string, ...any)
	bpfUp   bool // agents running and programs attached
}

// Addresses of the kernel VXLAN devices, outside the pool and the underlay.
var kernelVXLANAddr = map[string]string{"host-a": "10.97.0.11", "host-b": "10.97.0.12"}

const (
	kernelVXLANDev = "vxcx"
	kernelVXLANVNI = "42"
)

// EncapThroughput builds two hosts on one underlay segment with one
// workload each (wa on host-a, wb on host-b) and measures one TCP stream
// wa → wb for every case of EncapCases, rounds times, between the same two
// namespaces. BPF cases switch the pool's mode under running agents; kernel
// cases stop the agents, detach calyx's programs and configure the kernel.
// Each case is proven to carry the traffic the way it claims before and
// after it is measured, or the run fails.
func EncapThroughput(ctx context.Context, binDir string, seconds, rounds int, logf func(string, ...any)) (res *EncapResult, err error) {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	l, err := lab.New(lab.Options{BinDir: binDir, Context: ctx, AgentLogLevel: "warn"})
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, l.Close()) }()
	logf("two-host lab %s (state in %s)", l.Prefix, l.Dir)
	b := &encapBench{l: l, seconds: seconds, logf: logf}
	if err := b.build(); err != nil {
		return nil, err
	}

	res = &EncapResult{Seconds: seconds, Rounds: rounds, Runs: map[string][]EncapRun{}}
	var bpfCases, kernelCases []EncapCase
	for _, c := range EncapCases() {
		if c.BPF {
			bpfCases = append(bpfCases, c)
		} else {
			kernelCases = append(kernelCases, c)
		}
	}
	for r := range rounds {
		phases := [][]EncapCase{bpfCases, kernelCases}
		if r%2 == 1 {
			// The side that ran last keeps going: one switch per
			// round, and each side goes first in every other round.
			phases[0], phases[1] = phases[1], phases[0]
		}
		for _, cases := range phases {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			if cases[0].BPF {
				err = b.toBPF()
			} else {
				err = b.toKernel()
			}
			if err != nil {
				return nil, err
			}
			// Rotate the order inside a side too.
			for i := range cases {
				c := cases[(i+r)%len(cases)]
				run, err := b.measure(c)
				if err != nil {
					return nil, fmt.Errorf("round %d, %s: %w", r+1, c.Label, err)
				}
				run.Round = r
				res.Runs[c.Key] = append(res.Runs[c.Key], run)
				logf("round %d/%d %-22s MTU %d: %5.2f Gbit/s (path share %.3f, mean packet %.0f B)", r+1, rounds, c.Label, c.MTU, run.Gbps, run.PathShare, run.PathPacket)
			}
		}
	}
	return res, nil
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
	return nil
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
	for _, h := range b.hosts() {
		if err := b.l.StopAgent(h.Name); err != nil {
			return err
		}
	}
	b.bpfUp = false
	for _, h := range b.hosts() {
		pins, err := filepath.Glob(filepath.Join(h.BPFFS, "links", "*"))
		if err != nil {
			return err
		}
		for _, p := range pins {
			if err := os.Remove(p); err != nil {
				return fmt.Errorf("unpin %s: %w", p, err)
			}
		}
		if err := b.sh(h.NS, []string{"ip", "route", "flush", "proto", "202"}); err != nil {
			return err
		}
		if err := b.checkDetached(h); err != nil {
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

// checkDetached fails unless the kernel reports no TCX program, no clsact
// qdisc and no XDP program on h's calyx interfaces, and calyxctl lists no
// pinned link.
func (b *encapBench) checkDetached(h *lab.Host) error {
	for _, ifc := range b.ifaces(h) {
		n, err := tcxPrograms(h.NS, ifc)
		if err != nil {
			return err
		}
		if n != 0 {
			return fmt.Errorf("%s %s: %d TCX programs still attached after unpinning", h.Name, ifc, n)
		}
		res, err := b.l.Exec(h.NS, "tc", "qdisc", "show", "dev", ifc)
		if err != nil {
			return err
		}
		if strings.Contains(res.Stdout, "clsact") {
			return fmt.Errorf("%s %s: a clsact qdisc is left: %s", h.Name, ifc, res.Stdout)
		}
		res, err = b.l.Exec(h.NS, "ip", "-d", "link", "show", "dev", ifc)
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
	if err := b.l.CalyxctlJSON(h.Name, &links, "links"); err != nil {
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

// measure sets a case up, proves its path, runs iperf3 and tears the case
// down again (kernel cases).
func (b *encapBench) measure(c EncapCase) (EncapRun, error) {
	if err := b.setMTU(c.MTU); err != nil {
		return EncapRun{}, err
	}
	if c.BPF {
		return b.measureBPF(c)
	}
	return b.measureKernel(c)
}

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

// pathRun fills in a run from iperf3's report and the bytes and packets
// counted on the case's path meanwhile.
func pathRun(rep lab.IperfReport, bytes, packets uint64) EncapRun {
	run := EncapRun{Gbps: rep.BitsPerSecond / 1e9}
	if rep.SentBytes > 0 {
		run.PathShare = float64(bytes) / float64(rep.SentBytes)
	}
	if packets > 0 {
		run.PathPacket = float64(bytes) / float64(packets)
	}
	return run
}

func (b *encapBench) measureBPF(c EncapCase) (EncapRun, error) {
	l, m := b.l, b.m
	if m.Mode != c.Mode {
		if out, err := m.SetMode(c.Mode); err != nil {
			return EncapRun{}, fmt.Errorf("%w: %s", err, out)
		}
	}
	want := c.Mode.Encap()
	// Both directions: the ACKs come back the same way.
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
			return EncapRun{}, err
		}
	}
	if err := l.WaitPing(m.WA.NS, m.WB.IP.String(), 10*time.Second); err != nil {
		return EncapRun{}, err
	}

	// Proof: pings raise the case's counter on host-a (and the matching
	// decap counter on host-b), and no other path's counter.
	reason := encapReason[c.Mode]
	beforeA, err := l.Counters(m.HostA.Name)
	if err != nil {
		return EncapRun{}, err
	}
	beforeB, err := l.Counters(m.HostB.Name)
	if err != nil {
		return EncapRun{}, err
	}
	const pings = 3
	if _, err := l.Ping(m.WA.NS, m.WB.IP.String(), pings); err != nil {
		return EncapRun{}, err
	}
	afterA, err := l.Counters(m.HostA.Name)
	if err != nil {
		return EncapRun{}, err
	}
	afterB, err := l.Counters(m.HostB.Name)
	if err != nil {
		return EncapRun{}, err
	}
	for _, r := range []string{lab.ReasonEncapVXLAN, lab.ReasonEncapIPIP, lab.ReasonForwardDirect} {
		d := lab.CounterTotal(afterA, r) - lab.CounterTotal(beforeA, r)
		if r == reason && d < pings {
			return EncapRun{}, fmt.Errorf("host-a counter %s rose by %d during %d pings, want ≥ %d", r, d, pings, pings)
		}
		if r != reason && d != 0 {
			return EncapRun{}, fmt.Errorf("host-a counter %s rose by %d during %d pings: not the %s path", r, d, pings, c.Label)
		}
	}
	if dr, ok := decapReason[c.Mode]; ok {
		if d := lab.CounterTotal(afterB, dr) - lab.CounterTotal(beforeB, dr); d < pings {
			return EncapRun{}, fmt.Errorf("host-b counter %s rose by %d during %d pings, want ≥ %d", dr, d, pings, pings)
		}
	}

	rep, err := iperfReport(l, m.WA, m.WB, b.seconds)
	if err != nil {
		return EncapRun{}, err
	}
	after2, err := l.Counters(m.HostA.Name)
	if err != nil {
		return EncapRun{}, err
	}
	run := pathRun(rep, counterBytes(after2, reason)-counterBytes(afterA, reason), lab.CounterTotal(after2, reason)-lab.CounterTotal(afterA, reason))
	if run.PathShare < 0.9 {
		return EncapRun{}, fmt.Errorf("host-a counted only %.0f%% of iperf3's bytes as %s", run.PathShare*100, reason)
	}
	return run, nil
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

func (b *encapBench) measureKernel(c EncapCase) (run EncapRun, err error) {
	l, m := b.l, b.m
	carrier, err := b.kernelSetup(c)
	defer func() {
		if terr := b.kernelTeardown(c); terr != nil && err == nil {
			err = terr
		}
	}()
	if err != nil {
		return EncapRun{}, err
	}
	// The route host-a's kernel takes to wb must be the case's.
	res, err := l.Exec(m.HostA.NS, "ip", "route", "get", m.WB.IP.String(), "from", m.WA.IP.String(), "iif", m.WA.HostIface)
	if err != nil {
		return EncapRun{}, err
	}
	if !strings.Contains(res.Stdout, "dev "+carrier+" ") {
		return EncapRun{}, fmt.Errorf("host-a routes %s not through %s: %s", m.WB.IP, carrier, res.Stdout)
	}
	if err := l.WaitPing(m.WA.NS, m.WB.IP.String(), 10*time.Second); err != nil {
		return EncapRun{}, err
	}
	calyx0, err := b.calyxPackets()
	if err != nil {
		return EncapRun{}, err
	}
	tx0, pk0, err := b.linkTX(m.HostA.NS, carrier)
	if err != nil {
		return EncapRun{}, err
	}
	rep, err := iperfReport(l, m.WA, m.WB, b.seconds)
	if err != nil {
		return EncapRun{}, err
	}
	tx1, pk1, err := b.linkTX(m.HostA.NS, carrier)
	if err != nil {
		return EncapRun{}, err
	}
	calyx1, err := b.calyxPackets()
	if err != nil {
		return EncapRun{}, err
	}
	if calyx1 != calyx0 {
		return EncapRun{}, fmt.Errorf("calyx counters rose by %d packets during the kernel run: calyx is still in the path", calyx1-calyx0)
	}
	run = pathRun(rep, tx1-tx0, pk1-pk0)
	if run.PathShare < 0.9 {
		return EncapRun{}, fmt.Errorf("host-a %s sent only %.0f%% of iperf3's bytes", carrier, run.PathShare*100)
	}
	return run, nil
}
