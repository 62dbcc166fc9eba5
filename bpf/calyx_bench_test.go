package bpf_test

// Per-packet cost of the programs through BPF_PROG_TEST_RUN.
//
// ns/op is the kernel's own measure of ONE program run (the repeat loop's
// time divided by its count, truncated to whole ns), not the wall time of
// the syscall; wall-ns/op is the wall time per run for comparison. The
// loop's own bookkeeping is included: BenchmarkHarnessEmptyTC measures it
// (an empty TC program) for both ways of running below, so it can be
// subtracted by whoever reads the numbers; nothing is subtracted here.
//
// Repeat reuses one skb (TestHarnessRepeatReusesSKB), so:
//   - pass-host leaves the packet alone: long repeats;
//   - local delivery decrements the TTL and rewrites the source MAC: the
//     sender is wl4 (no CheckMAC; with CheckMAC the second iteration would
//     be a MAC-spoof drop) and the TTL starts at 255 with at most 250
//     iterations per syscall, so every iteration delivers;
//   - an ARP request becomes a reply on the first run: one run per syscall;
//   - the overlay paths (encapsulation, decapsulation, direct routing to a
//     node) change the packet so that a second run on the same skb would
//     take another path (a VXLAN packet from a workload's address becomes
//     one from the node's: a spoof), so they run one packet per syscall, a
//     fresh skb each time, like BenchmarkHarnessEmptyTC/repeat=1. They also
//     report net-ns/op: ns/op minus that empty program's cost at repeat=1,
//     measured once per process in the same way.
// Each benchmark checks that the counters saw exactly b.N runs of the path
// it claims to measure.

import (
	"sync"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/calyxnet/calyx/bpf/bpftest"
	"github.com/calyxnet/calyx/bpfmap"
)

// benchProg runs prog b.N times on pkt from ifindex, at most perSyscall
// iterations per BPF_PROG_TEST_RUN, asserts every call's verdict, and
// reports the kernel-measured time of one run as ns/op.
func benchProg(b *testing.B, e *env, prog *ebpf.Program, ifindex int, pkt []byte, perSyscall int, verdict uint32) bpftest.BenchResult {
	b.Helper()
	b.ResetTimer()
	res, err := e.ns.Bench(prog, bpftest.Input{Data: pkt, Ifindex: ifindex, Repeat: uint32(perSyscall)}, b.N)
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	if res.Runs != b.N || res.Verdicts[verdict] != res.Syscalls {
		b.Fatalf("%d runs in %d calls with verdicts %v, want %d runs, all %s", res.Runs, res.Syscalls,
			res.Verdicts, b.N, bpftest.VerdictName(verdict))
	}
	b.ReportMetric(float64(res.Kernel.Nanoseconds())/float64(b.N), "ns/op")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "wall-ns/op")
	return res
}

// wantCounted fails b unless the counters moved under each of keys, and
// nothing else, by one packet of size bytes per run: res.Runs, plus at most
// the runs of calls a signal interrupted (they ran in part and were made
// again).
func wantCounted(b *testing.B, e *env, before map[bpfmap.CounterKey]bpfmap.Counter, res bpftest.BenchResult, perSyscall, size int, keys ...bpfmap.CounterKey) {
	b.Helper()
	sized := make([]sizedKey, len(keys))
	for i, k := range keys {
		sized[i] = sizedKey{k, size}
	}
	wantCountedSized(b, e, before, res, perSyscall, sized...)
}

// sizedKey is a counter and the size of the packet it counts.
type sizedKey struct {
	key  bpfmap.CounterKey
	size int
}

// wantCountedSized is wantCounted with a packet size per counter (after a
// decap the destination counts the inner packet).
func wantCountedSized(b *testing.B, e *env, before map[bpfmap.CounterKey]bpfmap.Counter, res bpftest.BenchResult, perSyscall int, keys ...sizedKey) {
	b.Helper()
	got := counterDelta(before, e.counters(b))
	slack := uint64(res.Interrupted * perSyscall)
	bad := len(got) != len(keys)
	for _, k := range keys {
		c := got[k.key]
		if c.Packets < uint64(res.Runs) || c.Packets > uint64(res.Runs)+slack || c.Bytes != c.Packets*uint64(k.size) {
			bad = true
		}
	}
	if bad {
		b.Fatalf("counters moved by %s for %d runs (+ up to %d in %d interrupted calls) under %v",
			fmtCounters(got), res.Runs, slack, res.Interrupted, keys)
	}
}

func BenchmarkFromWorkloadLocalDeliver(b *testing.B) {
	e := newEnv(b)
	src, dst := e.wl4, e.wl2
	pkt := udp4(src, src.ip4, dst.ip4, 255)
	before := e.counters(b)
	res := benchProg(b, e, e.from, src.ifindex, pkt, 250, redirect)
	wantCounted(b, e, before, res, 250, len(pkt),
		bpfmap.CounterKey{Ifindex: src.idx(), Reason: bpfmap.ReasonDeliverLocal},
		bpfmap.CounterKey{Ifindex: dst.idx(), Reason: bpfmap.ReasonToWorkload})
}

func BenchmarkFromWorkloadPassHost(b *testing.B) {
	e := newEnv(b)
	pkt := udp4(e.wl1, e.wl1.ip4, internet, 64)
	before := e.counters(b)
	res := benchProg(b, e, e.from, e.wl1.ifindex, pkt, 10000, ok)
	wantCounted(b, e, before, res, 10000, len(pkt), bpfmap.CounterKey{Ifindex: e.wl1.idx(), Reason: bpfmap.ReasonPassHost})
}

func BenchmarkARPReply(b *testing.B) {
	e := newEnv(b)
	pkt := bpftest.ARPRequest(e.wl1.mac, e.wl1.ip4, gatewayV4)
	before := e.counters(b)
	res := benchProg(b, e, e.from, e.wl1.ifindex, pkt, 1, redirect)
	wantCounted(b, e, before, res, 1, len(pkt), bpfmap.CounterKey{Ifindex: e.wl1.idx(), Reason: bpfmap.ReasonARPReply})
}

// BenchmarkHarnessEmptyTC is the floor: a TC program that only returns
// TC_ACT_OK, run the two ways the benchmarks above run.
func BenchmarkHarnessEmptyTC(b *testing.B) {
	requireBPF(b)
	prog, err := emptyTCProgram()
	if err != nil {
		b.Fatal(err)
	}
	defer prog.Close()
	for _, tc := range []struct {
		name       string
		perSyscall int
	}{{"repeat=1", 1}, {"repeat=250", 250}, {"repeat=10000", 10000}} {
		b.Run(tc.name, func(b *testing.B) {
			e := newEnv(b)
			benchProg(b, e, prog, e.wl1.ifindex, udp4(e.wl1, e.wl1.ip4, internet, 64), tc.perSyscall, ok)
		})
	}
}

// harnessFloor is the kernel-measured cost of one run of the empty TC
// program at repeat=1: what the harness adds to every one-packet run.
var harnessFloor struct {
	once sync.Once
	ns   float64
	err  error
}

func floorNs(b *testing.B, e *env) float64 {
	b.Helper()
	harnessFloor.once.Do(func() {
		prog, err := emptyTCProgram()
		if err != nil {
			harnessFloor.err = err
			return
		}
		defer prog.Close()
		const runs = 20000
		res, err := e.ns.Bench(prog, bpftest.Input{Data: udp4(e.wl1, e.wl1.ip4, internet, 64), Ifindex: e.wl1.ifindex, Repeat: 1}, runs)
		if err != nil {
			harnessFloor.err = err
			return
		}
		harnessFloor.ns = float64(res.Kernel.Nanoseconds()) / runs
	})
	if harnessFloor.err != nil {
		b.Fatalf("harness floor: %v", harnessFloor.err)
	}
	return harnessFloor.ns
}

// benchOnePacket runs prog b.N times, one fresh packet per syscall, and
// reports net-ns/op besides benchProg's metrics.
func benchOnePacket(b *testing.B, e *env, prog *ebpf.Program, ifindex int, pkt []byte, verdict uint32) bpftest.BenchResult {
	b.Helper()
	res := benchProg(b, e, prog, ifindex, pkt, 1, verdict)
	b.ReportMetric(float64(res.Kernel.Nanoseconds())/float64(b.N)-floorNs(b, e), "net-ns/op")
	return res
}

// benchToNode measures calyx_from_wl sending a workload's packet to a
// remote workload on nodeA (FIB neighbour known) with encap.
func benchToNode(b *testing.B, encap bpfmap.Encap, reason bpfmap.Reason) {
	e := newTunnelEnv(b)
	w := e.wl1
	pkt := udp4(w, w.ip4, e.block(b, e.tun.nodeA, encap), 64)
	before := e.counters(b)
	res := benchOnePacket(b, e, e.from, w.ifindex, pkt, redirect)
	wantCounted(b, e, before, res, 1, len(pkt), bpfmap.CounterKey{Ifindex: w.idx(), Reason: reason})
}

// benchDecap measures calyx_from_underlay taking a tunnel packet from
// nodeA apart and delivering it to wl2 (redirect_peer).
func benchDecap(b *testing.B, encap bpfmap.Encap, reason bpfmap.Reason) {
	e := newTunnelEnv(b)
	inner := udp4(e.wl2, e.block(b, e.tun.nodeA, encap), e.wl2.ip4, 64)
	pkt := tunnelFrame(e, e.tun.nodeA, hostAddr, encap, inner)
	before := e.counters(b)
	res := benchOnePacket(b, e, e.ulIngress, e.tun.ul.ifindex, pkt, redirect)
	wantCountedSized(b, e, before, res, 1,
		sizedKey{bpfmap.CounterKey{Ifindex: e.tun.ul.idx(), Reason: reason}, len(pkt)},
		sizedKey{bpfmap.CounterKey{Ifindex: e.wl2.idx(), Reason: bpfmap.ReasonToWorkload}, len(inner)})
}

func BenchmarkEncapVXLAN(b *testing.B) { benchToNode(b, bpfmap.EncapVXLAN, bpfmap.ReasonEncapVXLAN) }
func BenchmarkEncapIPIP(b *testing.B)  { benchToNode(b, bpfmap.EncapIPIP, bpfmap.ReasonEncapIPIP) }

// BenchmarkForwardDirect is a workload's packet routed to a node without
// encapsulation: FIB lookup, TTL, MACs.
func BenchmarkForwardDirect(b *testing.B) {
	benchToNode(b, bpfmap.EncapNone, bpfmap.ReasonForwardDirect)
}

func BenchmarkDecapVXLAN(b *testing.B) { benchDecap(b, bpfmap.EncapVXLAN, bpfmap.ReasonDecapVXLAN) }
func BenchmarkDecapIPIP(b *testing.B)  { benchDecap(b, bpfmap.EncapIPIP, bpfmap.ReasonDecapIPIP) }

// BenchmarkLocalDeliverFresh is local delivery (wl1 → wl2, redirect_peer)
// measured like the overlay paths: one fresh packet per syscall, with
// net-ns/op, so the per-packet table compares every path the same way.
// wl1 has CheckMAC, as in the overlay benchmarks.
func BenchmarkLocalDeliverFresh(b *testing.B) {
	e := newEnv(b)
	src, dst := e.wl1, e.wl2
	pkt := udp4(src, src.ip4, dst.ip4, 64)
	before := e.counters(b)
	res := benchOnePacket(b, e, e.from, src.ifindex, pkt, redirect)
	wantCounted(b, e, before, res, 1, len(pkt),
		bpfmap.CounterKey{Ifindex: src.idx(), Reason: bpfmap.ReasonDeliverLocal},
		bpfmap.CounterKey{Ifindex: dst.idx(), Reason: bpfmap.ReasonToWorkload})
}
