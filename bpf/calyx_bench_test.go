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
//   - an ARP request becomes a reply on the first run: one run per syscall.
// Each benchmark checks that the counters saw exactly b.N runs of the path
// it claims to measure.

import (
	"testing"

	"github.com/cilium/ebpf"

	"github.com/calyxnet/calyx/bpf/bpftest"
	"github.com/calyxnet/calyx/maps"
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
// nothing else, by one packet per run: res.Runs, plus at most the runs of
// calls a signal interrupted (they ran in part and were made again).
func wantCounted(b *testing.B, e *env, before map[maps.CounterKey]maps.Counter, res bpftest.BenchResult, perSyscall, size int, keys ...maps.CounterKey) {
	b.Helper()
	got := counterDelta(before, e.counters(b))
	slack := uint64(res.Interrupted * perSyscall)
	bad := len(got) != len(keys)
	for _, k := range keys {
		c := got[k]
		if c.Packets < uint64(res.Runs) || c.Packets > uint64(res.Runs)+slack || c.Bytes != c.Packets*uint64(size) {
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
		maps.CounterKey{Ifindex: src.idx(), Reason: maps.ReasonDeliverLocal},
		maps.CounterKey{Ifindex: dst.idx(), Reason: maps.ReasonToWorkload})
}

func BenchmarkFromWorkloadPassHost(b *testing.B) {
	e := newEnv(b)
	pkt := udp4(e.wl1, e.wl1.ip4, internet, 64)
	before := e.counters(b)
	res := benchProg(b, e, e.from, e.wl1.ifindex, pkt, 10000, ok)
	wantCounted(b, e, before, res, 10000, len(pkt), maps.CounterKey{Ifindex: e.wl1.idx(), Reason: maps.ReasonPassHost})
}

func BenchmarkARPReply(b *testing.B) {
	e := newEnv(b)
	pkt := bpftest.ARPRequest(e.wl1.mac, e.wl1.ip4, gatewayV4)
	before := e.counters(b)
	res := benchProg(b, e, e.from, e.wl1.ifindex, pkt, 1, redirect)
	wantCounted(b, e, before, res, 1, len(pkt), maps.CounterKey{Ifindex: e.wl1.idx(), Reason: maps.ReasonARPReply})
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
