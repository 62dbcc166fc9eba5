package bench

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/calyxnet/calyx/tests/lab"
)

// The VM comparison (issue 12): instances that reach their host as tap
// devices, as QEMU with vhost-net attaches them. Each VM is the lab's
// KindVM workload: a host tap whose fd a relay (calyx-lab vm-relay) joins to
// the instance's eth0, a second tap, with virtio_net_hdr and TSO/checksum
// offload on both, so TCP super-frames cross the relay unsegmented. calyx
// delivers into a tap with an L2 rewrite and bpf_redirect to its egress;
// the kernel routes into it. Both use the same taps, relays and
// namespaces in one lab: the two-host bench's machinery (encapBench) with
// VMs instead of veths.

// VMCaseID is the ID of a VM path's case for a metric ("vm.tcp1.bpf-local").
func VMCaseID(metric, path string) string { return "vm." + metric + "." + path }

// The VMs: va and va2 on host-a, vb on host-b; the servers in va2 and vb.
var vmWorkloads = []benchWorkload{
	{host: "host-a", name: "va", ip: "10.65.1.2"},
	{host: "host-a", name: "va2", ip: "10.65.1.3", server: true},
	{host: "host-b", name: "vb", ip: "10.65.2.2", server: true},
}

// vmCases are the VM paths in report order: va → va2 on one host, va → vb
// between the hosts. Each path runs at the workload MTU it needs.
func vmCases() []EncapCase {
	vxlanMTU := lab.UnderlayMTU - lab.VXLANOverhead
	return []EncapCase{
		{Key: CaseBPFLocal, Label: "calyx BPF local delivery (one host)", BPF: true, Local: true, MTU: lab.UnderlayMTU, Baseline: CaseKernelLocal},
		{Key: CaseKernelLocal, Label: "kernel routing (one host)", Local: true, MTU: lab.UnderlayMTU},
		{Key: CaseBPFVXLAN, Label: "calyx BPF VXLAN (two hosts)", BPF: true, Mode: lab.ModeVXLAN, MTU: vxlanMTU, Baseline: CaseKernelVXLAN},
		{Key: CaseKernelVXLAN, Label: "kernel VXLAN device (two hosts)", MTU: vxlanMTU},
	}
}

// vmSchedule is round r's order: each BPF path next to its kernel
// baseline, the two kernel paths together (one switch to the kernel and
// one back per round), every other round backwards.
func vmSchedule(r int) []EncapCase {
	return scheduleOf(vmCases(), r, CaseBPFLocal, CaseKernelLocal, CaseKernelVXLAN, CaseBPFVXLAN)
}

// vmMetrics are one TCP stream and request/response.
func vmMetrics() []metric {
	var out []metric
	for _, m := range twoHostMetrics() {
		if m.key == MetricTCP1 || m.key == MetricRR {
			out = append(out, m)
		}
	}
	return out
}

// ethHeader is the Ethernet header on every frame a relay carries.
const ethHeader = 14

// Details the VM runs record from the relays, per measurement.
const (
	// detailOutMax is the largest frame the sending VM put out (its
	// relay, VM → host tap); detailInMax the largest the receiving VM
	// got (its relay, host tap → VM).
	detailOutMax = "relayOutMaxFrame"
	detailInMax  = "relayInMaxFrame"
	// detailInGSO is the share of the frames into the receiving VM that
	// carried a GSO type.
	detailInGSO = "relayInGSOShare"
	// detailRelayDrops counts frames either relay could not write and
	// packets the receiving VM's host tap dropped (not read in time).
	detailRelayDrops = "relayDrops"
	// detailDelivered is the mean size of the packets calyx delivered
	// into the receiver's tap (its to-workload counter, counted at the
	// tap's egress hook, before the tap transmits them).
	detailDelivered = "deliveredPacketBytes"
)

func vmSection() *Section {
	s := &Section{Key: "vm", Title: "Between virtual machines (taps): calyx vs the kernel on the same taps"}
	for _, m := range vmMetrics() {
		t := pathTable(m, "VM to VM: "+strings.ToLower(m.title[:1])+m.title[1:], vmCases(), VMCaseID, func(c EncapCase) *Goal {
			if c.Baseline == "" {
				return nil
			}
			return &Goal{Issue: "issue 12", Text: fmt.Sprintf("calyx ≥ 1.0× the kernel: VMs, %s, %s", vmWhere(c), vmWhat(m)), MinRatio: 1.0}
		})
		t.Extras = append(t.Extras,
			Extra{Detail: detailOutMax, Header: "largest frame out of the sending VM", Stat: "max", Format: "%.0f B"},
			Extra{Detail: detailInMax, Header: "largest frame into the receiving VM", Stat: "max", Format: "%.0f B"})
		s.Tables = append(s.Tables, t)
	}
	// Five rounds of 5+3 s on four paths: about 5 minutes with the
	// proofs and the switches between the sides.
	s.Run = pathRun(s.Key, vmCases(), vmMetrics(), VMs)
	s.Method = vmMethod
	return s
}

// vmWhere says where a VM path runs, for goal texts.
func vmWhere(c EncapCase) string {
	if c.Local {
		return "one host"
	}
	return "two hosts over VXLAN"
}

// vmWhat names a metric for goal texts.
func vmWhat(m metric) string {
	if m.streams > 0 {
		return "one TCP stream"
	}
	return "request/response"
}

// VMs builds host-a with VMs va and va2 and host-b with VM vb, and
// measures one TCP stream and request/response va → va2 (calyx's local
// delivery into a tap vs the kernel routing between the taps) and va → vb
// (calyx's BPF VXLAN vs a kernel VXLAN device), p.rounds times, switching
// calyx out for the kernel paths as the two-host bench does. Every path is
// proven by counters, and the relays' largest frames are recorded per
// measurement.
func VMs(ctx context.Context, binDir string, p twoHostParams, rec *Recorder) (err error) {
	b, err := openEncapBench(ctx, binDir, lab.KindVM, p, rec, "VM", vmWorkloads...)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, b.l.Close()) }()
	ws := map[string]*lab.Workload{}
	for _, spec := range vmWorkloads {
		w, err := b.l.Workload(spec.name)
		if err != nil {
			return err
		}
		if w.Kind != lab.KindVM || !b.l.VMRunning(w) {
			return fmt.Errorf("workload %s is a %s (running %v), want a running %s", w.Name, w.Kind, b.l.VMRunning(w), lab.KindVM)
		}
		ws[spec.name] = w
	}
	return b.run(pathSet{
		cases:    vmCases(),
		schedule: vmSchedule,
		ends: func(c EncapCase) pathEnds {
			if c.Local {
				return pathEnds{src: ws["va"], dst: ws["va2"]}
			}
			return pathEnds{src: ws["va"], dst: ws["vb"]}
		},
		metrics: vmMetrics(),
		id:      VMCaseID,
		watch:   b.watchRelays,
	})
}

// watchRelays places the relays of both VMs for metric m (pinRelays) and
// reads them before a measurement (which restarts their largest-frame
// window) and, after it, records the largest
// frame the sending VM put out and the receiving VM got, the share of GSO
// frames into the receiver, any frame a relay or the receiver's host tap
// dropped and the mean size of the packets calyx delivered into that tap.
func (b *encapBench) watchRelays(m metric, id string, e pathEnds) (func() error, error) {
	type snap struct {
		src, dst lab.RelayStats
		tap      lab.IfaceStats
		// to-workload on the receiver's tap: what calyx handed to it.
		toBytes, toPackets uint64
	}
	read := func() (s snap, err error) {
		if s.src, err = b.l.RelayStats(e.src); err != nil {
			return s, err
		}
		if s.dst, err = b.l.RelayStats(e.dst); err != nil {
			return s, err
		}
		if s.tap, err = b.l.HostIfaceStats(e.dst); err != nil {
			return s, err
		}
		rows, err := b.l.Counters(e.dst.Host)
		s.toBytes, s.toPackets = counterOn(rows, e.dst.HostIface, reasonToWorkload)
		return s, err
	}
	s0, err := read()
	if err != nil {
		return nil, err
	}
	if err := b.pinRelays(m, e, s0.src.PID, s0.dst.PID); err != nil {
		return nil, err
	}
	return func() error {
		s1, err := read()
		if err != nil {
			return err
		}
		in0, in1 := s0.dst.HostToVM, s1.dst.HostToVM
		b.rec.Detail(id, detailOutMax, float64(s1.src.VMToHost.RecentMaxFrame))
		b.rec.Detail(id, detailInMax, float64(in1.RecentMaxFrame))
		if frames := in1.Frames - in0.Frames; frames > 0 {
			b.rec.Detail(id, detailInGSO, float64(in1.GSOFrames-in0.GSOFrames)/float64(frames))
		}
		drops := s1.tap.TxDropped - s0.tap.TxDropped
		for _, p := range [][2]lab.RelayStats{{s0.src, s1.src}, {s0.dst, s1.dst}} {
			drops += p[1].HostToVM.WriteErrors - p[0].HostToVM.WriteErrors
			drops += p[1].VMToHost.WriteErrors - p[0].VMToHost.WriteErrors
		}
		b.rec.Detail(id, detailRelayDrops, float64(drops))
		if n := s1.toPackets - s0.toPackets; n > 0 {
			b.rec.Detail(id, detailDelivered, float64(s1.toBytes-s0.toBytes)/float64(n))
		}
		b.logf("  %s: largest frame out of %s %d B, into %s %d B, %d dropped", id, e.src.Name, s1.src.VMToHost.RecentMaxFrame, e.dst.Name, in1.RecentMaxFrame, drops)
		return nil
	}, nil
}

// vmMethod explains the VM comparison, with the relays' largest frames.
func vmMethod(rec *Recorder) string {
	return fmt.Sprintf(`Three VMs: va and va2 on host-a, vb on host-b (host namespaces on one underlay segment, MTU 1500). A VM is a tap on its host (the host side calyx attaches to, as libvirt/QEMU's `+"`tapXXXX`"+`) whose fd a relay process (`+"`calyx-lab vm-relay`"+`, standing for vhost-net) joins to a second tap, eth0 in the VM's namespace; both taps carry a virtio_net_hdr and have checksum and TSO offload on (`+"`IFF_VNET_HDR`, `TUNSETOFFLOAD`"+`), so a TCP super-frame crosses the relay as one frame with its GSO type, as it reaches a guest. The same taps, relays and namespaces serve calyx and the kernel, in one lab; %s, each measuring every path once: iperf3 with one TCP stream (%d s), then `+"`calyx-load rr`"+` (%d s: %d persistent connection, 1-byte request, 1-byte response, one at a time). A round runs BPF local delivery, kernel routing on one host, kernel VXLAN, BPF VXLAN, and every other round the same backwards, so each calyx path is measured right next to its kernel baseline. Every figure is the median of the rounds, with min and max.

- **One host** (va → va2, MTU 1500): calyx's from-workload program on va's tap rewrites the Ethernet header and redirects to va2's tap's egress (`+"`bpf_redirect`: a tap has no peer for `bpf_redirect_peer`"+`), where the to-workload program counts it. Kernel: proxy_arp on both taps and a /32 to each VM, as on the routed hosts of the other sections.
- **Two hosts** (va → vb, MTU 1450 on both taps of every VM): calyx BPF VXLAN (host-b's from-underlay program decapsulates and redirects to vb's tap's egress) vs the kernel VXLAN device of the two-host section (VNI 42, port 4789, `+"`nolearning`, `noudpcsum`"+`, FDB and neighbour entries and /32s via the peer's tunnel address).
- **Switching sides**: as in the two-host section, the kernel paths run with the agents stopped, their TCX link pins removed (checked with `+"`BPF_PROG_QUERY`"+` on eth0 and every tap: nothing attached, no clsact, no XDP) and calyx's routes flushed; restarting the agents re-attaches them.
- **Proof of the path**, for every measurement: calyx — pings raise va's tap's counter for the path (deliver-local, or encap-vxlan) and none of the other ways out (deliver-local, encap-vxlan, encap-ipip, forward-direct), host-b's decap-vxlan (two hosts), and to-workload on the receiving VM's tap; during each measurement va's tap's counter counts the stream's bytes (iperf3) or at least a packet per transaction (rr). Kernel — `+"`ip route get`"+` on host-a leads into va2's tap (one host) or the vxlan device (two hosts), which transmits the stream's bytes or a packet per transaction, and calyx's counters on both hosts stay unchanged over the path's measurements.
- **CPUs**: %s The relays (each VM's backend) are placed too, the same for every path: during a stream the sender's relay runs on iperf3's client CPU and the receiver's on its server CPU; during request/response both run on calyx-load's CPU, with the client and the server.
- **Frames across the relays**: the tables give the largest frame the sending VM's relay carried out of the VM (VM → host tap) and the receiving VM's relay into it (host tap → VM) during each case's measurements, Ethernet header included; above the MTU + 14 B means GSO super-frames crossed unsegmented. Per case, the largest over the rounds:
%s
`, plural(rec.ParamInt("vm.rounds"), "round"), rec.ParamInt("vm.tcpSeconds"), rec.ParamInt("vm.loadSeconds"), rec.ParamInt("vm.loadConns"), placementNote(true), vmFrameNote(rec))
}

// vmFrameNote sums the relays' frames up per case: the largest frames each
// way against the MTU, the share of GSO frames into the receiver, the size
// of what calyx delivered into the receiver's tap when the tap segmented
// it, and any drops.
func vmFrameNote(rec *Recorder) string {
	var lines []string
	for _, m := range vmMetrics() {
		for _, c := range vmCases() {
			id := VMCaseID(m.key, c.Key)
			out, in := detailValues(rec, id, detailOutMax), detailValues(rec, id, detailInMax)
			if len(out) == 0 || len(in) == 0 {
				continue
			}
			// A frame without GSO is at most the MTU and its
			// Ethernet header.
			mo, mi, limit := maxOf(out), maxOf(in), float64(c.MTU+ethHeader)
			verdict := "no frame above the MTU: nothing needed segmenting"
			switch {
			case mo > limit && mi > limit:
				verdict = "GSO super-frames crossed unsegmented both ways"
			case mo > limit:
				verdict = "**super-frames left the sender but were segmented before the receiver**"
				if d := detailValues(rec, id, detailDelivered); len(d) > 0 {
					verdict += fmt.Sprintf(" — calyx handed the receiver's tap packets of %.0f B on average (to-workload), so the tap segmented them in software after calyx's hook", Median(d))
				}
			case mi > limit:
				verdict = "the receiver got super-frames (GRO on the way)"
			}
			line := fmt.Sprintf("  - %s, %s: out of the sender %.0f B, into the receiver %.0f B (MTU %d, %d B frames): %s", m.title, c.Label, mo, mi, c.MTU, c.MTU+ethHeader, verdict)
			if g := detailValues(rec, id, detailInGSO); len(g) > 0 && m.streams > 0 {
				line += fmt.Sprintf("; GSO frames into the receiver %.0f%%", Median(g)*100)
			}
			if d := detailValues(rec, id, detailRelayDrops); len(d) > 0 && maxOf(d) > 0 {
				line += fmt.Sprintf("; up to %.0f frames dropped by a relay or the receiver's tap in a run", maxOf(d))
			}
			lines = append(lines, line)
		}
	}
	return strings.Join(lines, "\n")
}

// pinRelays places the relay processes of a measurement's two VMs, as the
// measuring processes are placed (benchCPUs), so that every path gets the
// same placement: for a stream, the sender's relay on iperf3's client CPU
// and the receiver's on its server CPU (each VM's backend beside it); for
// request/response both on calyx-load's CPU, with the client and server,
// so one transaction's whole path, relays included, runs on one CPU. With
// a single CPU nothing is pinned.
func (b *encapBench) pinRelays(m metric, e pathEnds, srcPID, dstPID int) error {
	srcCPU, dstCPU := pinIperfClient, pinIperfServer
	if m.streams == 0 {
		srcCPU, dstCPU = pinLoadClient, pinLoadServer
	}
	for _, p := range []struct{ pid, cpu int }{{srcPID, srcCPU}, {dstPID, dstCPU}} {
		if p.cpu < 0 {
			continue
		}
		// -a: every thread of the Go process; threads created later
		// inherit the mask.
		if _, err := b.l.Exec("", "taskset", "-a", "-p", "-c", fmt.Sprint(p.cpu), fmt.Sprint(p.pid)); err != nil {
			return fmt.Errorf("pin relay %d to CPU %d: %w", p.pid, p.cpu, err)
		}
	}
	return nil
}
