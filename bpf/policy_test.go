package bpf_test

// Layer 2 tests of the policy datapath (policy.h) through
// BPF_PROG_TEST_RUN with tables written by hand, so that each lookup rule
// is pinned down on its own: identity fallback, source-port sub-tables,
// rule hit counters, Log events, replies of allowed flows, ingress at every
// delivery path, endpointToHostAction, and the host prefilter at TC and
// XDP (IPv6: ipv6_test.go). policy_compile_test.go runs the same programs
// on tables policy compiled from NetworkPolicy resources.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/gopacket/gopacket/layers"

	"github.com/calyxnet/calyx/bpf/bpftest"
	"github.com/calyxnet/calyx/bpfmap"
)

const (
	ruleAllow  = 100
	ruleDeny   = 101
	ruleLog    = 102
	tableDeny  = 7  // identity 0: everything denied (default deny)
	tableDNS   = 8  // identity 0: UDP 53 allowed, the rest denied
	tableWL1   = 9  // identity idWL1: allowed; the rest denied
	tableSport = 10 // UDP to port 53 decided by the source port: 40000 allowed
	tableLog   = 11 // everything allowed after a Log rule
	idWL1      = 0x1111
)

// allDeny is a table's identity-0 default: deny everything as rule.
func allDeny(table, rule uint32) map[bpfmap.PolicyKey]bpfmap.PolicyVerdict {
	return map[bpfmap.PolicyKey]bpfmap.PolicyVerdict{
		{Table: table}: {Action: bpfmap.PolicyDeny, Rule: rule},
	}
}

func (e *env) putPolicy(tb testing.TB, entries map[bpfmap.PolicyKey]bpfmap.PolicyVerdict) {
	tb.Helper()
	for k, v := range entries {
		must(tb, e.dp.Maps.Policy.Put(k, v))
	}
}

// setTables gives ep's interface policy tables.
func (e *env) setTables(tb testing.TB, ep *endpoint, ingress, egress uint32) {
	tb.Helper()
	ifs, err := e.dp.Maps.Ifaces.All()
	must(tb, err)
	v := ifs[ep.idx()]
	v.IngressTable, v.EgressTable = ingress, egress
	must(tb, e.dp.Maps.Ifaces.Put(ep.idx(), v))
}

func (e *env) hits(tb testing.TB) map[bpfmap.RuleHitKey]bpfmap.Counter {
	tb.Helper()
	h, err := e.dp.Maps.PolicyHits()
	must(tb, err)
	return h
}

// wantHits asserts that the rule counters moved by one packet each for
// exactly keys since before.
func (e *env) wantHits(tb testing.TB, before map[bpfmap.RuleHitKey]bpfmap.Counter, keys ...bpfmap.RuleHitKey) {
	tb.Helper()
	after := e.hits(tb)
	moved := map[bpfmap.RuleHitKey]uint64{}
	for k, a := range after {
		if d := a.Packets - before[k].Packets; d != 0 {
			moved[k] = d
		}
	}
	want := map[bpfmap.RuleHitKey]uint64{}
	for _, k := range keys {
		want[k]++
	}
	if len(moved) != len(want) {
		tb.Errorf("rule hits moved %v, want %v", moved, want)
		return
	}
	for k, n := range want {
		if moved[k] != n {
			tb.Errorf("rule hits moved %v, want %v", moved, want)
			return
		}
	}
}

// newPolicyEnv is newTunnelEnv with the tables above and an identity for
// wl1's address.
func newPolicyEnv(tb testing.TB) *env {
	tb.Helper()
	e := newTunnelEnv(tb)
	e.putTestPolicies(tb)
	return e
}

// putTestPolicies writes the tables above, an identity for wl1's address
// and the host flag for hostAddr.
func (e *env) putTestPolicies(tb testing.TB) {
	tb.Helper()
	e.putPolicy(tb, allDeny(tableDeny, bpfmap.RuleDefaultDenyEgress))
	e.putPolicy(tb, map[bpfmap.PolicyKey]bpfmap.PolicyVerdict{
		{Table: tableDNS}: {Action: bpfmap.PolicyDeny, Rule: ruleDeny},
		{Table: tableDNS, Bits: 24, Proto: bpfmap.ProtoUDP, Port: 53}: {Action: bpfmap.PolicyAllow, Rule: ruleAllow},
		{Table: tableWL1}:                  {Action: bpfmap.PolicyDeny, Rule: bpfmap.RuleDefaultDenyIngress},
		{Table: tableWL1, Identity: idWL1}: {Action: bpfmap.PolicyAllow, Rule: ruleAllow},
		{Table: tableSport}:                {Action: bpfmap.PolicyDeny, Rule: ruleDeny},
		{Table: tableSport, Bits: 24, Proto: bpfmap.ProtoUDP, Port: 53}: {Action: bpfmap.PolicySport, Sub: bpfmap.SubTableFlag | 1},
		{Table: bpfmap.SubTableFlag | 1, Bits: 8}:                       {Action: bpfmap.PolicyDeny, Rule: ruleDeny},
		{Table: bpfmap.SubTableFlag | 1, Bits: 24, Port: 40000}:         {Action: bpfmap.PolicyAllow, Rule: ruleAllow},
		{Table: tableLog}: {Action: bpfmap.PolicyAllow, Rule: ruleAllow, LogRule: ruleLog},
	})
	must(tb, e.dp.Maps.IPCache.Put(netip.PrefixFrom(e.wl1.ip4, 32), bpfmap.IPCacheEntry{Identity: idWL1}))
	must(tb, e.dp.Maps.IPCache.Put(netip.PrefixFrom(hostAddr, 32), bpfmap.IPCacheEntry{Host: true}))
}

// Egress: a table decides a workload's new flows by protocol and port; the
// deciding rule is counted on the endpoint, the drop under drop-policy.
func TestPolicyEgressByPort(t *testing.T) {
	e := newPolicyEnv(t)
	src, dst := e.wl4, e.wl2
	e.setTables(t, src, 0, tableDNS)
	before := e.hits(t)
	in := bpftest.IPv4UDP(src.l2(), bpftest.IPv4{Src: src.ip4, Dst: dst.ip4, TTL: 64}, 40000, 53, nil)
	e.fromWL(t, src, in).want(t, redirect, hit{src, bpfmap.ReasonDeliverLocal}, hit{dst, bpfmap.ReasonToWorkload})
	e.wantHits(t, before, bpfmap.RuleHitKey{Ifindex: src.idx(), Rule: ruleAllow})

	before = e.hits(t)
	in = bpftest.IPv4UDP(src.l2(), bpftest.IPv4{Src: src.ip4, Dst: dst.ip4, TTL: 64}, 40000, 54, nil)
	o := e.fromWL(t, src, in)
	o.want(t, shot, hit{src, bpfmap.ReasonDropPolicy})
	o.unchanged(t)
	e.wantHits(t, before, bpfmap.RuleHitKey{Ifindex: src.idx(), Rule: ruleDeny})

	// Another protocol falls to the any-protocol entry.
	in = bpftest.IPv4TCP(src.l2(), bpftest.IPv4{Src: src.ip4, Dst: dst.ip4, TTL: 64}, 40000, 53)
	e.fromWL(t, src, in).want(t, shot, hit{src, bpfmap.ReasonDropPolicy})
}

// An identity with entries of its own is decided by them; any other
// identity falls back to identity 0's.
func TestPolicyIdentityFallback(t *testing.T) {
	e := newPolicyEnv(t)
	dst := e.wl2
	e.setTables(t, dst, tableWL1, 0)
	for _, src := range []*endpoint{e.wl1, e.wl4} {
		before := e.hits(t)
		in := bpftest.IPv4TCP(src.l2(), bpftest.IPv4{Src: src.ip4, Dst: dst.ip4, TTL: 64}, 40000, 443)
		o := e.fromWL(t, src, in)
		if src == e.wl1 {
			o.want(t, redirect, hit{src, bpfmap.ReasonDeliverLocal}, hit{dst, bpfmap.ReasonToWorkload})
			e.wantHits(t, before, bpfmap.RuleHitKey{Ifindex: dst.idx(), Rule: ruleAllow})
			continue
		}
		// Denied by the destination's ingress: counted on the
		// destination's rule, dropped where it came in.
		o.want(t, shot, hit{src, bpfmap.ReasonDropPolicy})
		e.wantHits(t, before, bpfmap.RuleHitKey{Ifindex: dst.idx(), Rule: bpfmap.RuleDefaultDenyIngress})
	}
}

// A verdict that depends on the source port sends the lookup to a
// sub-table.
func TestPolicySourcePortSubTable(t *testing.T) {
	e := newPolicyEnv(t)
	src, dst := e.wl4, e.wl2
	e.setTables(t, src, 0, tableSport)
	for _, sport := range []uint16{40000, 40001} {
		in := bpftest.IPv4UDP(src.l2(), bpftest.IPv4{Src: src.ip4, Dst: dst.ip4, TTL: 64}, sport, 53, nil)
		o := e.fromWL(t, src, in)
		if sport == 40000 {
			o.want(t, redirect, hit{src, bpfmap.ReasonDeliverLocal}, hit{dst, bpfmap.ReasonToWorkload})
		} else {
			o.want(t, shot, hit{src, bpfmap.ReasonDropPolicy})
		}
	}
}

// Replies of an allowed flow pass both ends' policy as replies (conntrack),
// later packets of the flow skip the lookup, and a new flow the other way
// is denied.
func TestPolicyRepliesOfAllowedFlows(t *testing.T) {
	e := newPolicyEnv(t)
	a, b := e.wl1, e.wl2
	e.setTables(t, a, tableDeny, tableDNS) // a: only DNS out, nothing in
	e.setTables(t, b, tableWL1, tableDeny) // b: only from a in, nothing out
	req := bpftest.IPv4UDP(a.l2(), bpftest.IPv4{Src: a.ip4, Dst: b.ip4, TTL: 64}, 40000, 53, nil)
	before := e.hits(t)
	e.fromWL(t, a, req).want(t, redirect, hit{a, bpfmap.ReasonDeliverLocal}, hit{b, bpfmap.ReasonToWorkload})
	e.wantHits(t, before, bpfmap.RuleHitKey{Ifindex: a.idx(), Rule: ruleAllow}, bpfmap.RuleHitKey{Ifindex: b.idx(), Rule: ruleAllow})

	reply := bpftest.IPv4UDP(b.l2(), bpftest.IPv4{Src: b.ip4, Dst: a.ip4, TTL: 64}, 53, 40000, nil)
	before = e.hits(t)
	e.fromWL(t, b, reply).want(t, redirect, hit{b, bpfmap.ReasonDeliverLocal}, hit{a, bpfmap.ReasonToWorkload})
	e.fromWL(t, a, req).want(t, redirect, hit{a, bpfmap.ReasonDeliverLocal}, hit{b, bpfmap.ReasonToWorkload})
	e.wantHits(t, before) // established: no policy lookup, no rule hit

	// b starting a flow of its own to a: b's egress denies it.
	other := bpftest.IPv4UDP(b.l2(), bpftest.IPv4{Src: b.ip4, Dst: a.ip4, TTL: 64}, 40001, 53, nil)
	e.fromWL(t, b, other).want(t, shot, hit{b, bpfmap.ReasonDropPolicy})
	e.wantHits(t, before, bpfmap.RuleHitKey{Ifindex: b.idx(), Rule: bpfmap.RuleDefaultDenyEgress})
}

// Ingress policy applies on every path into a workload: routed to this
// node directly, decapsulated, and from the host stack. Flows that pass
// are tracked, so the workload's replies pass its egress policy.
func TestPolicyIngressFromUnderlay(t *testing.T) {
	e := newPolicyEnv(t)
	dst := e.wl2
	nodeA := e.tun.nodeA
	peer := e.block(t, nodeA, bpfmap.EncapNone)
	must(t, e.dp.Maps.IPCache.Put(netip.PrefixFrom(peer, 32), bpfmap.IPCacheEntry{Identity: idWL1}))
	e.setTables(t, dst, tableWL1, tableDeny)

	in := bpftest.IPv4UDP(e.nodeL2(nodeA), bpftest.IPv4{Src: peer, Dst: dst.ip4, TTL: 63}, 41000, 9000, nil)
	e.fromUL(t, in).want(t, redirect, hit{e.tun.ul, bpfmap.ReasonDeliverLocal}, hit{dst, bpfmap.ReasonToWorkload})
	reply := bpftest.IPv4UDP(dst.l2(), bpftest.IPv4{Src: dst.ip4, Dst: peer, TTL: 64}, 9000, 41000, nil)
	o := e.fromWL(t, dst, reply)
	if o.verdict == shot {
		t.Fatalf("the reply of an allowed flow from the underlay was dropped: %s", fmtCounters(o.delta))
	}

	stranger := e.block(t, e.tun.nodeC, bpfmap.EncapNone) // identity 0
	in = bpftest.IPv4UDP(e.nodeL2(nodeA), bpftest.IPv4{Src: stranger, Dst: dst.ip4, TTL: 63}, 41000, 9000, nil)
	e.fromUL(t, in).want(t, shot, hit{e.tun.ul, bpfmap.ReasonDropPolicy})

	// Decapsulated: a workload of nodeA's own (the sender may tunnel it)
	// that no rule names.
	nodeAStranger := peer.Next()
	inner := bpftest.IPv4UDP(e.nodeL2(nodeA), bpftest.IPv4{Src: nodeAStranger, Dst: dst.ip4, TTL: 63}, 41000, 9000, nil)[14:]
	vx := bpftest.IPIP(e.nodeL2(nodeA), bpftest.IPv4{Src: nodeA.addr, Dst: hostAddr, TTL: 64}, inner)
	e.fromUL(t, vx).want(t, shot, hit{e.tun.ul, bpfmap.ReasonDropPolicy})
}

// From the host stack: this host's own addresses always reach its
// workloads; anything else it forwards passes ingress policy.
func TestPolicyIngressFromHostStack(t *testing.T) {
	e := newPolicyEnv(t)
	dst := e.wl2
	e.setTables(t, dst, tableDeny, 0)
	l2 := bpftest.L2{Src: dst.hostMAC, Dst: dst.mac}
	in := bpftest.IPv4TCP(l2, bpftest.IPv4{Src: hostAddr, Dst: dst.ip4, TTL: 64}, 40000, 8080)
	e.toWL(t, dst, in).want(t, ok, hit{dst, bpfmap.ReasonToWorkload})
	in = bpftest.IPv4TCP(l2, bpftest.IPv4{Src: netip.MustParseAddr("192.0.2.99"), Dst: dst.ip4, TTL: 64}, 40000, 8080)
	e.toWL(t, dst, in).want(t, shot, hit{dst, bpfmap.ReasonDropPolicy})
}

// endpointToHostAction: Drop keeps workloads off their host except DHCP,
// DNS and metadata; Accept lets them reach it whatever their egress policy
// says; Return leaves it to their egress policy.
func TestPolicyEndpointToHost(t *testing.T) {
	e := newPolicyEnv(t)
	src := e.wl4
	e.setTables(t, src, 0, tableDeny)
	cfg := e.tun.cfg
	cfg.Metadata = netip.AddrPortFrom(hostAddr, 8775)
	ssh := bpftest.IPv4TCP(src.l2(), bpftest.IPv4{Src: src.ip4, Dst: hostAddr, TTL: 64}, 40000, 22)
	dns := bpftest.IPv4UDP(src.l2(), bpftest.IPv4{Src: src.ip4, Dst: hostAddr, TTL: 64}, 40000, 53, nil)
	dhcp := bpftest.IPv4UDP(src.l2(), bpftest.IPv4{Src: src.ip4, Dst: hostAddr, TTL: 64}, 68, 67, nil)
	md := bpftest.IPv4TCP(src.l2(), bpftest.IPv4{Src: src.ip4, Dst: netip.MustParseAddr("169.254.169.254"), TTL: 64}, 40001, 80)

	cfg.EndpointToHost = bpfmap.EndpointToHostDrop
	must(t, e.dp.Maps.Config.Put(0, cfg))
	before := e.hits(t)
	e.fromWL(t, src, ssh).want(t, shot, hit{src, bpfmap.ReasonDropPolicy})
	e.wantHits(t, before, bpfmap.RuleHitKey{Ifindex: src.idx(), Rule: bpfmap.RuleHostDrop})
	e.fromWL(t, src, dhcp).want(t, ok, hit{src, bpfmap.ReasonPassHost})
	o := e.fromWL(t, src, md)
	if o.verdict == shot {
		t.Errorf("metadata dropped under endpointToHostAction Drop: %s", fmtCounters(o.delta))
	}
	// DNS to the host is one of the services: neither dropped nor left
	// to the egress policy (deny-all here).
	before = e.hits(t)
	e.fromWL(t, src, dns).want(t, ok, hit{src, bpfmap.ReasonPassHost})
	e.wantHits(t, before)

	cfg.EndpointToHost = bpfmap.EndpointToHostAccept
	must(t, e.dp.Maps.Config.Put(0, cfg))
	ssh2 := bpftest.IPv4TCP(src.l2(), bpftest.IPv4{Src: src.ip4, Dst: hostAddr, TTL: 64}, 40002, 22)
	e.fromWL(t, src, ssh2).want(t, ok, hit{src, bpfmap.ReasonPassHost})

	cfg.EndpointToHost = bpfmap.EndpointToHostReturn
	must(t, e.dp.Maps.Config.Put(0, cfg))
	before = e.hits(t)
	ssh3 := bpftest.IPv4TCP(src.l2(), bpftest.IPv4{Src: src.ip4, Dst: hostAddr, TTL: 64}, 40003, 22)
	e.fromWL(t, src, ssh3).want(t, shot, hit{src, bpfmap.ReasonDropPolicy})
	e.wantHits(t, before, bpfmap.RuleHitKey{Ifindex: src.idx(), Rule: bpfmap.RuleDefaultDenyEgress})
}

// A Log rule on the way to the verdict is counted and reported to the
// agent through cx_policy_log.
func TestPolicyLogRule(t *testing.T) {
	e := newPolicyEnv(t)
	src, dst := e.wl4, e.wl2
	e.setTables(t, src, 0, tableLog)
	r, err := e.dp.Maps.PolicyLog()
	must(t, err)
	defer r.Close()
	before := e.hits(t)
	in := bpftest.IPv4UDP(src.l2(), bpftest.IPv4{Src: src.ip4, Dst: dst.ip4, TTL: 64}, 40000, 5353, nil)
	e.fromWL(t, src, in).want(t, redirect, hit{src, bpfmap.ReasonDeliverLocal}, hit{dst, bpfmap.ReasonToWorkload})
	e.wantHits(t, before, bpfmap.RuleHitKey{Ifindex: src.idx(), Rule: ruleAllow}, bpfmap.RuleHitKey{Ifindex: src.idx(), Rule: ruleLog})
	want := bpfmap.PolicyEvent{Ifindex: src.idx(), Rule: ruleLog, Proto: bpfmap.ProtoUDP,
		Src: netip.AddrPortFrom(src.ip4, 40000), Dst: netip.AddrPortFrom(dst.ip4, 5353), Allowed: true}
	if evs := drainEvents(policyEvents(r), 300*time.Millisecond); len(evs) != 1 || evs[0] != want {
		t.Errorf("log events %+v, want one: %+v", evs, want)
	}
}

var blocked = netip.MustParsePrefix("198.51.100.0/24")

// The prefilter at TC (veth underlays): a denied source is dropped first
// thing, only while the agent has turned the check on.
func TestPrefilterTC(t *testing.T) {
	e := newPolicyEnv(t)
	must(t, e.dp.Maps.Prefilter.Put(blocked, struct{}{}))
	in := bpftest.IPv4UDP(e.nodeL2(e.tun.router), bpftest.IPv4{Src: netip.MustParseAddr("198.51.100.9"), Dst: hostAddr, TTL: 60}, 4000, 22, nil)
	e.fromUL(t, in).want(t, ok, hit{e.tun.ul, bpfmap.ReasonPassHost})
	cfg := e.tun.cfg
	cfg.PrefilterTC = true
	must(t, e.dp.Maps.Config.Put(0, cfg))
	e.fromUL(t, in).want(t, shot, hit{e.tun.ul, bpfmap.ReasonDropPrefilter})
	in6 := bpftest.IPv6UDP(e.nodeL2(e.tun.router), bpftest.IPv6{Src: netip.MustParseAddr("2001:db8:bad::1"), Dst: netip.MustParseAddr("2001:db8::10")}, 4000, 22, nil)
	e.fromUL(t, in6).want(t, ok, hit{e.tun.ul, bpfmap.ReasonPassHost})
	must(t, e.dp.Maps.Prefilter.Put(netip.MustParsePrefix("2001:db8:bad::/48"), struct{}{}))
	e.fromUL(t, in6).want(t, shot, hit{e.tun.ul, bpfmap.ReasonDropPrefilter})
	ok4 := bpftest.IPv4UDP(e.nodeL2(e.tun.router), bpftest.IPv4{Src: netip.MustParseAddr("198.51.101.9"), Dst: hostAddr, TTL: 60}, 4000, 22, nil)
	e.fromUL(t, ok4).want(t, ok, hit{e.tun.ul, bpfmap.ReasonPassHost})
}

// The prefilter at XDP (physical NICs): XDP_DROP for denied sources,
// counted under drop-prefilter on the NIC; XDP_PASS for the rest,
// uncounted (TC counts them). A test run can only name a device whose
// driver registered XDP queues (veth does once XDP is attached), so it
// runs on the namespace's loopback, ifindex 1.
func TestPrefilterXDP(t *testing.T) {
	e := newPolicyEnv(t)
	must(t, e.dp.Maps.Prefilter.Put(blocked, struct{}{}))
	prog := e.dp.PrefilterProgram()
	run := func(pkt []byte) uint32 {
		var ret uint32
		err := e.ns.Do(func() error {
			var err error
			ret, err = prog.Run(&ebpf.RunOptions{Data: pkt})
			return err
		})
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, ebpf.ErrNotSupported) {
			t.Fatalf("XDP test run: %v", err)
		}
		must(t, err)
		return ret
	}
	const xdpDrop, xdpPass = 1, 2
	in := bpftest.IPv4UDP(e.nodeL2(e.tun.router), bpftest.IPv4{Src: netip.MustParseAddr("198.51.100.9"), Dst: hostAddr, TTL: 60}, 4000, 22, nil)
	before := e.counters(t)
	if v := run(in); v != xdpDrop {
		t.Errorf("denied source: XDP verdict %d, want XDP_DROP", v)
	}
	delta := counterDelta(before, e.counters(t))
	want := map[bpfmap.CounterKey]bpfmap.Counter{{Ifindex: 1, Reason: bpfmap.ReasonDropPrefilter}: {Packets: 1, Bytes: uint64(len(in))}}
	if !mapsEqual(delta, want) {
		t.Errorf("counters moved by %s, want %s", fmtCounters(delta), fmtCounters(want))
	} else {
		markSeen(bpfmap.ReasonDropPrefilter)
	}
	ok4 := bpftest.IPv4UDP(e.nodeL2(e.tun.router), bpftest.IPv4{Src: netip.MustParseAddr("198.51.101.9"), Dst: hostAddr, TTL: 60}, 4000, 22, nil)
	before = e.counters(t)
	if v := run(ok4); v != xdpPass {
		t.Errorf("allowed source: XDP verdict %d, want XDP_PASS", v)
	}
	if d := counterDelta(before, e.counters(t)); len(d) != 0 {
		t.Errorf("a passed packet was counted: %s", fmtCounters(d))
	}
	// An IPv4 frame cut short after the Ethernet header (the kernel's
	// test run wants at least that much).
	if v := run(in[:14+8]); v != xdpPass {
		t.Errorf("truncated frame: XDP verdict %d, want XDP_PASS (the stack drops it)", v)
	}
	// Tagged frames (XDP sees the tags in the frame): the source behind
	// one 802.1Q tag, or an 802.1ad and an 802.1Q tag, is checked too.
	tag := func(frame []byte, tpids ...uint16) []byte {
		out := slices.Clone(frame[:12])
		for _, tp := range tpids {
			out = binary.BigEndian.AppendUint16(out, tp)
			out = binary.BigEndian.AppendUint16(out, 100)
		}
		return append(out, frame[12:]...)
	}
	for name, pkt := range map[string][]byte{
		"802.1Q":          tag(in, 0x8100),
		"802.1ad, 802.1Q": tag(in, 0x88a8, 0x8100),
	} {
		if v := run(pkt); v != xdpDrop {
			t.Errorf("denied source behind %s: XDP verdict %d, want XDP_DROP", name, v)
		}
		if v := run(tag(ok4, 0x8100)); v != xdpPass {
			t.Errorf("allowed source behind %s: XDP verdict %d, want XDP_PASS", name, v)
		}
	}
	if v := run(tag(in, 0x8100, 0x8100, 0x8100)[:14+8]); v != xdpPass {
		t.Errorf("tags cut short: XDP verdict %d, want XDP_PASS", v)
	}
}

// tcpFlags4 is a TCP segment from ep with the given flags: a SYN at
// sequence number 1, any other at 2, the next after it.
func tcpFlags4(ep *endpoint, src, dst netip.Addr, sport, dport uint16, syn, ack, fin bool) []byte {
	ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: src.AsSlice(), DstIP: dst.AsSlice(), Flags: layers.IPv4DontFragment}
	tcp := &layers.TCP{SrcPort: layers.TCPPort(sport), DstPort: layers.TCPPort(dport), Seq: 2, SYN: syn, ACK: ack, FIN: fin, Window: 64240}
	if syn {
		tcp.Seq = 1
	}
	_ = tcp.SetNetworkLayerForChecksum(ip)
	eth := &layers.Ethernet{SrcMAC: ep.mac, DstMAC: ep.hostMAC, EthernetType: layers.EthernetTypeIPv4}
	return bpftest.Serialize(eth, ip, tcp)
}

// A SYN that reuses the ports of a flow its sender closed is a new flow:
// it passes policy again (here revoked in between) instead of riding on the
// closed flow's conntrack entries, on the slow path and the fast path.
func TestPolicyClosedFlowSYNIsNew(t *testing.T) {
	for _, fast := range []bool{false, true} {
		t.Run(fmt.Sprintf("fastpath=%v", fast), func(t *testing.T) {
			e := newPolicyEnv(t)
			if fast {
				cfg := e.tun.cfg
				cfg.RouteGen = 3
				must(t, e.dp.Maps.Config.Put(0, cfg))
			}
			src, dst := e.wl4, e.wl2
			e.setTables(t, src, 0, tableDNS) // TCP denied, UDP 53 allowed
			e.putPolicy(t, map[bpfmap.PolicyKey]bpfmap.PolicyVerdict{
				{Table: 12}: {Action: bpfmap.PolicyAllow, Rule: ruleAllow},
			})
			e.setTables(t, src, 0, 12) // everything allowed
			syn := tcpFlags4(src, src.ip4, dst.ip4, 40000, 80, true, false, false)
			e.fromWL(t, src, syn).want(t, redirect, hit{src, bpfmap.ReasonDeliverLocal}, hit{dst, bpfmap.ReasonToWorkload})
			ack := tcpFlags4(src, src.ip4, dst.ip4, 40000, 80, false, true, false)
			e.fromWL(t, src, ack).want(t, redirect, hit{src, bpfmap.ReasonDeliverLocal}, hit{dst, bpfmap.ReasonToWorkload})
			fin := tcpFlags4(src, src.ip4, dst.ip4, 40000, 80, false, true, true)
			e.fromWL(t, src, fin).want(t, redirect, hit{src, bpfmap.ReasonDeliverLocal}, hit{dst, bpfmap.ReasonToWorkload})

			e.setTables(t, src, 0, tableDNS) // the policy changes: TCP denied
			before := e.hits(t)
			e.fromWL(t, src, syn).want(t, shot, hit{src, bpfmap.ReasonDropPolicy})
			e.wantHits(t, before, bpfmap.RuleHitKey{Ifindex: src.idx(), Rule: ruleDeny})
		})
	}
}

// policyEvents reads r into a channel until r is closed.
func policyEvents(r *bpfmap.PolicyLogReader) <-chan bpfmap.PolicyEvent {
	ch := make(chan bpfmap.PolicyEvent, 4096)
	go func() {
		defer close(ch)
		for {
			ev, err := r.Read()
			if err != nil {
				return
			}
			ch <- ev
		}
	}()
	return ch
}

// drainEvents takes what ch holds until it stays quiet for quiet.
func drainEvents(ch <-chan bpfmap.PolicyEvent, quiet time.Duration) []bpfmap.PolicyEvent {
	var out []bpfmap.PolicyEvent
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				return out
			}
			out = append(out, ev)
		case <-time.After(quiet):
			return out
		}
	}
}

// A new flow policy denies sends a deny event (calyxctl monitor) with the
// deciding rule and the flow; a flood of them sends at most
// CX_EVENTS_PER_SEC a second per CPU, and the rest are counted as
// suppressed, not lost silently.
func TestPolicyDenyEvents(t *testing.T) {
	e := newPolicyEnv(t)
	src, dst := e.wl4, e.wl2
	e.setTables(t, src, 0, tableDeny)
	r, err := e.dp.Maps.PolicyLog()
	must(t, err)
	defer r.Close()
	events := policyEvents(r)

	in := bpftest.IPv4UDP(src.l2(), bpftest.IPv4{Src: src.ip4, Dst: dst.ip4, TTL: 64}, 40000, 5353, nil)
	e.fromWL(t, src, in).want(t, shot, hit{src, bpfmap.ReasonDropPolicy})
	evs := drainEvents(events, 200*time.Millisecond)
	want := bpfmap.PolicyEvent{Kind: bpfmap.PolicyEventDeny, Ifindex: src.idx(), Rule: bpfmap.RuleDefaultDenyEgress,
		Proto: bpfmap.ProtoUDP, Src: netip.AddrPortFrom(src.ip4, 40000), Dst: netip.AddrPortFrom(dst.ip4, 5353)}
	if len(evs) != 1 || evs[0] != want {
		t.Fatalf("events %+v, want one: %+v", evs, want)
	}

	// More than every CPU's budget, in well under a second (no counter
	// reads between runs).
	const flood = 2000
	before, err := e.dp.Maps.EventsSuppressed()
	must(t, err)
	start := time.Now()
	for i := range flood {
		in := bpftest.IPv4UDP(src.l2(), bpftest.IPv4{Src: src.ip4, Dst: dst.ip4, TTL: 64}, uint16(41000+i), 5353, nil)
		if _, err := e.ns.Run(e.from, bpftest.Input{Data: in, Ifindex: src.ifindex}); err != nil {
			t.Fatal(err)
		}
	}
	took := time.Since(start)
	evs = drainEvents(events, 300*time.Millisecond)
	after, err := e.dp.Maps.EventsSuppressed()
	must(t, err)
	suppressed := after - before
	t.Logf("%d denied flows in %v: %d events, %d suppressed", flood, took.Round(time.Millisecond), len(evs), suppressed)
	// At most 256 a second on each CPU: one window each, or two if the
	// flood crossed a second.
	budget := 256 * runtime.NumCPU() * (1 + int(took/time.Second) + 1)
	if suppressed == 0 || uint64(len(evs))+suppressed != flood || len(evs) > budget {
		t.Errorf("%d denied flows gave %d events and %d suppressed: want at most the budget (256 a second) as events, the rest suppressed, none lost",
			flood, len(evs), suppressed)
	}
	for _, ev := range evs {
		if ev.Kind != bpfmap.PolicyEventDeny || ev.Rule != bpfmap.RuleDefaultDenyEgress {
			t.Fatalf("flood event %+v, want deny events of the default deny", ev)
		}
	}
}

// Every drop but a policy denial's reports the packet's start in
// cx_drop_log (calyxctl monitor): its reason, interface and length, and the
// bytes as dropped; a runt comes with none. A policy denial comes once,
// with its rule, in cx_policy_log.
func TestDropEvents(t *testing.T) {
	e := newPolicyEnv(t)
	w, dst := e.wl4, e.wl2
	r, err := e.dp.Maps.DropLog()
	must(t, err)
	defer r.Close()
	drops := make(chan bpfmap.DropEvent, 16)
	go func() {
		for {
			ev, err := r.Read()
			if err != nil {
				return
			}
			drops <- ev
		}
	}()
	next := func() (bpfmap.DropEvent, bool) {
		t.Helper()
		select {
		case ev := <-drops:
			return ev, true
		case <-time.After(300 * time.Millisecond):
			return bpfmap.DropEvent{}, false
		}
	}

	spoofed := bpftest.IPv4UDP(w.l2(), bpftest.IPv4{Src: netip.MustParseAddr("10.65.0.99"), Dst: dst.ip4, TTL: 64}, 40000, 53, make([]byte, 200))
	e.fromWL(t, w, spoofed).want(t, shot, hit{w, bpfmap.ReasonDropSpoofIP})
	if ev, ok := next(); !ok || ev.Reason != bpfmap.ReasonDropSpoofIP || ev.Ifindex != w.idx() ||
		ev.Len != uint32(len(spoofed)) || !bytes.Equal(ev.Head, spoofed[:128]) {
		t.Errorf("spoofed source: event %+v (%v), want drop-spoof-ip on %d, %d bytes, the first 128 as sent", ev, ok, w.idx(), len(spoofed))
	}

	// An ARP cut short (the test runner refuses IPv4 without its header).
	runt := slices.Concat(spoofed[:12], []byte{0x08, 0x06}, make([]byte, 8))
	e.fromWL(t, w, runt).want(t, shot, hit{w, bpfmap.ReasonDropMalformed})
	if ev, ok := next(); !ok || ev.Reason != bpfmap.ReasonDropMalformed || len(ev.Head) != 0 {
		t.Errorf("runt: event %+v (%v), want drop-malformed with no head", ev, ok)
	}

	e.setTables(t, w, 0, tableDeny)
	denied := bpftest.IPv4UDP(w.l2(), bpftest.IPv4{Src: w.ip4, Dst: dst.ip4, TTL: 64}, 40001, 5353, nil)
	e.fromWL(t, w, denied).want(t, shot, hit{w, bpfmap.ReasonDropPolicy})
	if ev, ok := next(); ok {
		t.Errorf("a policy denial also came as a drop event: %+v", ev)
	}
}
