package bpf_test

// Per-packet cost of a new flow's policy decision (issue 5): a TCP SYN from
// workload wl1 to local workload wl2 through calyx_from_wl, with tables
// policy compiled from 0, 10 or 10,000 rules over 1,000 endpoints
// (tests/bench/policymodel). wl1's egress table and wl2's ingress table
// are both consulted and the flow is allowed, by the last rule of each.
//
// Every run is a new flow: each packet has a source port of its own, and
// The flows' cx_ct_v2 entries (an LRU map) are deleted, between runs and
// outside the timed region, every ctBatch packets, so every run creates
// its conntrack entry the same way (with BenchmarkPolicyNewFlowFull, in a
// table 90% full of other flows). One packet per
// BPF_PROG_TEST_RUN (a fresh skb each), net-ns/op subtracts the harness's
// cost at repeat=1, as for the overlay paths.

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"sync"
	"testing"

	"github.com/calyxnet/calyx/bpf"
	"github.com/calyxnet/calyx/bpf/bpftest"
	"github.com/calyxnet/calyx/bpfmap"
	"github.com/calyxnet/calyx/model"
	"github.com/calyxnet/calyx/policy"
	"github.com/calyxnet/calyx/tests/bench/policymodel"
)

// policyBenchEndpoints is the model's size; ctBatch the runs between two
// emptyings of cx_ct (and the number of distinct source ports).
const (
	policyBenchEndpoints = 1000
	ctBatch              = 4096
)

// compiledModel is a model and what policy made of it for node-0.
type compiledModel struct {
	pm  policymodel.PerPacket
	out *policy.Output
	// egress and ingress are the rule numbers that must decide the flow
	// (0 without policy).
	egress, ingress uint32
}

var compiled sync.Map // rules → *compiledModel

// compiledFor compiles the model of rules once per process (go test runs a
// benchmark function more than once).
func compiledFor(b *testing.B, src, dst netip.Addr, rules int) *compiledModel {
	b.Helper()
	if v, ok := compiled.Load(rules); ok {
		return v.(*compiledModel)
	}
	pm := policymodel.PerPacketModel(policyBenchEndpoints, rules, src, dst)
	out, err := policy.Compile(policy.Input{Snapshot: pm.Snapshot, Node: pm.Node, HostAddrs: []netip.Addr{hostAddr}})
	if err != nil {
		b.Fatal(err)
	}
	c := &compiledModel{pm: pm, out: out}
	for id, r := range out.Rules {
		if r.Policy != pm.Flow.Policy || r.Index != pm.Flow.LastRule {
			continue
		}
		switch r.Direction {
		case model.PolicyEgress:
			c.egress = id
		case model.PolicyIngress:
			c.ingress = id
		}
	}
	if rules > 0 && (c.egress == 0 || c.ingress == 0) {
		b.Fatalf("no rule %s[%d] in both directions among %d rules", pm.Flow.Policy, pm.Flow.LastRule, len(out.Rules))
	}
	compiled.Store(rules, c)
	return c
}

func BenchmarkPolicyNewFlow(b *testing.B) {
	for _, rules := range []int{0, 10, 10000} {
		b.Run(fmt.Sprintf("rules=%d", rules), func(b *testing.B) { benchPolicyNewFlow(b, rules, false) })
	}
}

// BenchmarkPolicyNewFlowFull is BenchmarkPolicyNewFlow with 10 rules and
// both conntrack maps 90% full of other flows: the LRU's cost when it is
// near capacity.
func BenchmarkPolicyNewFlowFull(b *testing.B) { benchPolicyNewFlow(b, 10, true) }

func benchPolicyNewFlow(b *testing.B, rules int, full bool) {
	e := newTunnelEnv(b)
	if full {
		fillConntrack(b, e, 0.9)
	}
	src, dst := e.wl1, e.wl2
	c := compiledFor(b, src.ip4, dst.ip4, rules)
	for p, v := range c.out.IPCache {
		must(b, e.dp.Maps.IPCache.Put(p, v))
	}
	for k, v := range c.out.Policy {
		must(b, e.dp.Maps.Policy.Put(k, v))
	}
	st, dt := c.out.Endpoints[c.pm.Src], c.out.Endpoints[c.pm.Dst]
	if rules > 0 && (st.Egress == 0 || dt.Ingress == 0) {
		b.Fatalf("source tables %+v, destination tables %+v: want an egress and an ingress table", st, dt)
	}
	e.setTables(b, src, st.Ingress, st.Egress)
	e.setTables(b, dst, dt.Ingress, dt.Egress)
	// The verdict the compiler gives is the one the datapath must give.
	if rules > 0 {
		id := func(a netip.Addr) bpfmap.IPCacheEntry { ent, _ := policy.LookupIdentity(c.out, a); return ent }
		for _, chk := range []struct {
			table uint32
			id    bpfmap.IPCacheEntry
			rule  uint32
		}{{st.Egress, id(dst.ip4), c.egress}, {dt.Ingress, id(src.ip4), c.ingress}} {
			v, ok := policy.Lookup(c.out, chk.table, chk.id.Identity, chk.id.NetIdentity, bpfmap.ProtoTCP, c.pm.Flow.Port, 20000)
			if !ok || v.Action != bpfmap.PolicyAllow || v.Rule != chk.rule {
				b.Fatalf("table %d: the flow's verdict is %+v (found %v), want allow by rule %d", chk.table, v, ok, chk.rule)
			}
		}
	}

	pkts := make([][]byte, ctBatch)
	for i := range pkts {
		pkts[i] = bpftest.IPv4TCP(src.l2(), bpftest.IPv4{Src: src.ip4, Dst: dst.ip4, TTL: 64}, uint16(20000+i), c.pm.Flow.Port)
	}
	floor := floorNs(b, e)
	emptyCT := func(b *testing.B, e *env) int { return deleteFlows(b, e, pkts) }
	emptyCT(b, e)
	before, hits0 := e.counters(b), e.hits(b)
	total := bpftest.BenchResult{Verdicts: map[uint32]int{}}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i > 0 && i%ctBatch == 0 {
			b.StopTimer()
			if n := emptyCT(b, e); n < ctBatch {
				b.Fatalf("%d conntrack entries after %d new flows", n, ctBatch)
			}
			b.StartTimer()
		}
		res, err := e.ns.Bench(e.from, bpftest.Input{Data: pkts[i%ctBatch], Ifindex: src.ifindex, Repeat: 1}, 1)
		if err != nil {
			b.Fatal(err)
		}
		total.Runs += res.Runs
		total.Syscalls += res.Syscalls
		total.Kernel += res.Kernel
		total.Interrupted += res.Interrupted
		for v, n := range res.Verdicts {
			total.Verdicts[v] += n
		}
	}
	b.StopTimer()
	if total.Runs != b.N || total.Verdicts[redirect] != b.N {
		b.Fatalf("%d runs with verdicts %v, want %d, all redirect", total.Runs, total.Verdicts, b.N)
	}
	wantCounted(b, e, before, total, 1, len(pkts[0]),
		bpfmap.CounterKey{Ifindex: src.idx(), Reason: bpfmap.ReasonDeliverLocal},
		bpfmap.CounterKey{Ifindex: dst.idx(), Reason: bpfmap.ReasonToWorkload})
	// Each run was decided by the two rules: a new flow in both tables.
	if rules > 0 {
		e.wantHitsN(b, hits0, uint64(b.N),
			bpfmap.RuleHitKey{Ifindex: src.idx(), Rule: c.egress}, bpfmap.RuleHitKey{Ifindex: dst.idx(), Rule: c.ingress})
	} else {
		e.wantHitsN(b, hits0, uint64(b.N))
	}
	ns := float64(total.Kernel.Nanoseconds()) / float64(b.N)
	b.ReportMetric(ns, "ns/op")
	b.ReportMetric(ns-floor, "net-ns/op")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "wall-ns/op")
	b.ReportMetric(float64(len(c.out.Policy)), "policy-entries")
	b.ReportMetric(float64(len(c.out.IPCache)), "ipcache-entries")
	b.ReportMetric(float64(len(c.out.Rules)), "rules")
}

// deleteFlows deletes the conntrack entries of the flows pkts start (and
// nothing else) and returns how many there were.
func deleteFlows(b *testing.B, e *env, pkts [][]byte) int {
	b.Helper()
	keys := make([]bpfmap.CTKey, len(pkts))
	for i, p := range pkts {
		ip := p[14:]
		src, _ := netip.AddrFromSlice(ip[12:16])
		dst, _ := netip.AddrFromSlice(ip[16:20])
		keys[i] = bpfmap.CTKey{Src: netip.AddrPortFrom(src, binary.BigEndian.Uint16(ip[20:])),
			Dst: netip.AddrPortFrom(dst, binary.BigEndian.Uint16(ip[22:])), Proto: ip[9]}
	}
	n, err := e.dp.Maps.DeleteConntrack(keys)
	must(b, err)
	return n
}

// fillConntrack fills cx_ct_v2 and cx_nat_v2 to frac of their capacity
// with flows of a network no test packet uses.
func fillConntrack(b *testing.B, e *env, frac float64) {
	b.Helper()
	ct, nat := openMap(b, e, bpfmap.CTName), openMap(b, e, bpfmap.NATName)
	nct, nnat := int(float64(ct.MaxEntries())*frac), int(float64(nat.MaxEntries())*frac)
	ctKeys, ctVals := make([]bpf.CalyxCxCtKey, nct), make([]bpf.CalyxCxCtEntry, nct)
	for i := range ctKeys {
		a := netip.AddrFrom4([4]byte{100, 100, byte(i >> 8), byte(i)}).As16()
		ctKeys[i] = bpf.CalyxCxCtKey{AddrA: a, AddrB: netip.MustParseAddr("100.101.0.1").As16(),
			PortA: uint16(i>>16) + 1, PortB: 53 << 8, Proto: bpfmap.ProtoUDP}
	}
	natKeys, natVals := make([]bpf.CalyxCxNatKey, nnat), make([]bpf.CalyxCxNatEntry, nnat)
	for i := range natKeys {
		a := netip.AddrFrom4([4]byte{100, 102, byte(i >> 8), byte(i)}).As16()
		natKeys[i] = bpf.CalyxCxNatKey{Saddr: a, Daddr: netip.MustParseAddr("100.103.0.1").As16(),
			Sport: uint16(i>>16) + 1, Dport: 53 << 8, Proto: bpfmap.ProtoUDP}
		natVals[i] = bpf.CalyxCxNatEntry{Nat: bpfmap.NATDNAT}
	}
	must(b, e.ns.Do(func() error {
		if n, err := ct.BatchUpdate(ctKeys, ctVals, nil); err != nil || n != nct {
			return fmt.Errorf("fill %s: %d of %d, %v", bpfmap.CTName, n, nct, err)
		}
		if n, err := nat.BatchUpdate(natKeys, natVals, nil); err != nil || n != nnat {
			return fmt.Errorf("fill %s: %d of %d, %v", bpfmap.NATName, n, nnat, err)
		}
		return nil
	}))
}

// wantHitsN asserts that the rule counters moved by n packets for each of
// keys and not at all for any other rule since before.
func (e *env) wantHitsN(tb testing.TB, before map[bpfmap.RuleHitKey]bpfmap.Counter, n uint64, keys ...bpfmap.RuleHitKey) {
	tb.Helper()
	moved := map[bpfmap.RuleHitKey]uint64{}
	for k, a := range e.hits(tb) {
		if d := a.Packets - before[k].Packets; d != 0 {
			moved[k] = d
		}
	}
	ok := len(moved) == len(keys)
	for _, k := range keys {
		ok = ok && moved[k] == n
	}
	if !ok {
		tb.Fatalf("rule hits moved %v, want %d on each of %v", moved, n, keys)
	}
}
