package bpf_test

// Layer 2 tests of IPv6 through the one conntrack and policy path both
// families take (cx_nat_policed): replies of allowed flows for UDP, TCP and
// ICMPv6 echo, extension headers walked to the L4 header, fragments
// tracked by their first, ICMPv6 errors related to a flow, ingress from
// the host stack, and the hostile cases (v4-mapped addresses, a blind RST).

import (
	"net/netip"
	"testing"
	"time"

	"github.com/calyxnet/calyx/bpf/bpftest"
	"github.com/calyxnet/calyx/bpfmap"
)

const (
	tableV6 = 20 // TCP 8080 and ICMPv6 echo requests allowed, the rest denied
	ruleV6  = 120
)

var (
	hostAddr6 = netip.MustParseAddr("fd00:30::10")
	outside6  = netip.MustParseAddr("2001:db8:99::1")
	router6   = netip.MustParseAddr("2001:db8:99::fe")
)

// newIPv6PolicyEnv is newPolicyEnv with tableV6, wl1's IPv6 address as
// idWL1 and hostAddr6 as one of the host's.
func newIPv6PolicyEnv(tb testing.TB) *env {
	tb.Helper()
	e := newPolicyEnv(tb)
	e.putPolicy(tb, map[bpfmap.PolicyKey]bpfmap.PolicyVerdict{
		{Table: tableV6}: {Action: bpfmap.PolicyDeny, Rule: bpfmap.RuleDefaultDenyEgress},
		{Table: tableV6, Bits: 24, Proto: bpfmap.ProtoTCP, Port: 8080}: {Action: bpfmap.PolicyAllow, Rule: ruleV6},
		// ICMPv6 type 128 (echo request), any code: 8 bits of protocol,
		// 8 of type.
		{Table: tableV6, Bits: 16, Proto: bpfmap.ProtoICMPv6, Port: 128 << 8}: {Action: bpfmap.PolicyAllow, Rule: ruleV6},
	})
	must(tb, e.dp.Maps.IPCache.Put(netip.PrefixFrom(e.wl1.ip6, 128), bpfmap.IPCacheEntry{Identity: idWL1}))
	must(tb, e.dp.Maps.IPCache.Put(netip.PrefixFrom(hostAddr6, 128), bpfmap.IPCacheEntry{Host: true}))
	return e
}

func ip6(src, dst netip.Addr) bpftest.IPv6 { return bpftest.IPv6{Src: src, Dst: dst} }

// findFlow says whether conntrack holds a direction from src to dst.
func (e *env) findFlow(tb testing.TB, proto uint8, src, dst netip.AddrPort) bool {
	tb.Helper()
	found := false
	must(tb, e.dp.Maps.Conntrack(func(k bpfmap.CTKey, v bpfmap.CTEntry) bool {
		if k.Proto == proto && k.Src == src && k.Dst == dst {
			found = true
			return false
		}
		return true
	}))
	return found
}

// UDP over IPv6 as over IPv4: the new flow passes both ends' policy and
// is tracked, its replies pass as replies, a new flow the other way is
// the other end's egress policy's.
func TestIPv6PolicyUDPReplies(t *testing.T) {
	e := newIPv6PolicyEnv(t)
	a, b := e.wl1, e.wl2
	e.setTables(t, a, tableDeny, tableDNS) // a: only DNS out, nothing in
	e.setTables(t, b, tableWL1, tableDeny) // b: only from a in, nothing out

	req := bpftest.IPv6UDP(a.l2(), ip6(a.ip6, b.ip6), 40000, 53, nil)
	before := e.hits(t)
	e.fromWL(t, a, req).want(t, redirect, hit{a, bpfmap.ReasonDeliverLocal}, hit{b, bpfmap.ReasonToWorkload})
	e.wantHits(t, before, bpfmap.RuleHitKey{Ifindex: a.idx(), Rule: ruleAllow}, bpfmap.RuleHitKey{Ifindex: b.idx(), Rule: ruleAllow})
	if !e.findFlow(t, bpfmap.ProtoUDP, netip.AddrPortFrom(a.ip6, 40000), netip.AddrPortFrom(b.ip6, 53)) {
		t.Errorf("no conntrack entry for the IPv6 flow")
	}

	reply := bpftest.IPv6UDP(b.l2(), ip6(b.ip6, a.ip6), 53, 40000, nil)
	before = e.hits(t)
	e.fromWL(t, b, reply).want(t, redirect, hit{b, bpfmap.ReasonDeliverLocal}, hit{a, bpfmap.ReasonToWorkload})
	e.fromWL(t, a, req).want(t, redirect, hit{a, bpfmap.ReasonDeliverLocal}, hit{b, bpfmap.ReasonToWorkload})
	e.wantHits(t, before) // established: no policy lookup

	other := bpftest.IPv6UDP(b.l2(), ip6(b.ip6, a.ip6), 40001, 53, nil)
	e.fromWL(t, b, other).want(t, shot, hit{b, bpfmap.ReasonDropPolicy})
	e.wantHits(t, before, bpfmap.RuleHitKey{Ifindex: b.idx(), Rule: bpfmap.RuleDefaultDenyEgress})

	// To a port a's egress does not allow.
	e.fromWL(t, a, bpftest.IPv6UDP(a.l2(), ip6(a.ip6, b.ip6), 40002, 54, nil)).want(t, shot, hit{a, bpfmap.ReasonDropPolicy})
}

// TCP over IPv6: the handshake's replies pass as replies and sequence
// tracking holds (a blind RST is dropped); a new connection the other way
// is denied.
func TestIPv6PolicyTCP(t *testing.T) {
	e := newIPv6PolicyEnv(t)
	a, b := e.wl1, e.wl2
	e.setTables(t, a, 0, tableV6)
	e.setTables(t, b, 0, tableDeny)
	syn := bpftest.TCPSegment{Sport: 41000, Dport: 8080, Seq: 1000, SYN: true}
	e.fromWL(t, a, bpftest.IPv6TCP(a.l2(), ip6(a.ip6, b.ip6), syn)).want(t, redirect,
		hit{a, bpfmap.ReasonDeliverLocal}, hit{b, bpfmap.ReasonToWorkload})
	synAck := bpftest.TCPSegment{Sport: 8080, Dport: 41000, Seq: 5000, Ack: 1001, SYN: true, ACK: true}
	e.fromWL(t, b, bpftest.IPv6TCP(b.l2(), ip6(b.ip6, a.ip6), synAck)).want(t, redirect,
		hit{b, bpfmap.ReasonDeliverLocal}, hit{a, bpfmap.ReasonToWorkload})
	ack := bpftest.TCPSegment{Sport: 41000, Dport: 8080, Seq: 1001, Ack: 5001, ACK: true}
	e.fromWL(t, a, bpftest.IPv6TCP(a.l2(), ip6(a.ip6, b.ip6), ack)).want(t, redirect,
		hit{a, bpfmap.ReasonDeliverLocal}, hit{b, bpfmap.ReasonToWorkload})

	blind := bpftest.TCPSegment{Sport: 8080, Dport: 41000, Seq: 5001 + 1<<30, RST: true}
	e.fromWL(t, b, bpftest.IPv6TCP(b.l2(), ip6(b.ip6, a.ip6), blind)).want(t, shot, hit{b, bpfmap.ReasonDropTCPWindow})

	back := bpftest.TCPSegment{Sport: 8080, Dport: 41001, Seq: 1, SYN: true}
	e.fromWL(t, b, bpftest.IPv6TCP(b.l2(), ip6(b.ip6, a.ip6), back)).want(t, shot, hit{b, bpfmap.ReasonDropPolicy})
	other := bpftest.TCPSegment{Sport: 41002, Dport: 8081, Seq: 1, SYN: true}
	e.fromWL(t, a, bpftest.IPv6TCP(a.l2(), ip6(a.ip6, b.ip6), other)).want(t, shot, hit{a, bpfmap.ReasonDropPolicy})
}

// ICMPv6 echo: a rule on the type allows requests; the reply passes as
// the flow's; a request the other way and an unsolicited reply are new
// flows the egress policy denies.
func TestIPv6PolicyICMPv6Echo(t *testing.T) {
	e := newIPv6PolicyEnv(t)
	a, b := e.wl1, e.wl2
	e.setTables(t, a, 0, tableV6)
	e.setTables(t, b, 0, tableDeny)
	before := e.hits(t)
	e.fromWL(t, a, bpftest.IPv6ICMPEcho(a.l2(), ip6(a.ip6, b.ip6), false, 77, 1)).want(t, redirect,
		hit{a, bpfmap.ReasonDeliverLocal}, hit{b, bpfmap.ReasonToWorkload})
	e.wantHits(t, before, bpfmap.RuleHitKey{Ifindex: a.idx(), Rule: ruleV6})
	if !e.findFlow(t, bpfmap.ProtoICMPv6, netip.AddrPortFrom(a.ip6, 77), netip.AddrPortFrom(b.ip6, 0)) {
		t.Errorf("no conntrack entry for the echo")
	}
	e.fromWL(t, b, bpftest.IPv6ICMPEcho(b.l2(), ip6(b.ip6, a.ip6), true, 77, 1)).want(t, redirect,
		hit{b, bpfmap.ReasonDeliverLocal}, hit{a, bpfmap.ReasonToWorkload})
	e.fromWL(t, b, bpftest.IPv6ICMPEcho(b.l2(), ip6(b.ip6, a.ip6), false, 78, 1)).want(t, shot,
		hit{b, bpfmap.ReasonDropPolicy})
	e.fromWL(t, b, bpftest.IPv6ICMPEcho(b.l2(), ip6(b.ip6, a.ip6), true, 79, 1)).want(t, shot,
		hit{b, bpfmap.ReasonDropPolicy})
}

// Extension headers are walked to the L4 header (up to four): the port
// decides. Behind five, the L4 header is not looked for: the packet
// matches as its fifth header's number, which no port rule allows.
func TestIPv6PolicyExtensionHeaders(t *testing.T) {
	e := newIPv6PolicyEnv(t)
	a, b := e.wl1, e.wl2
	e.setTables(t, a, 0, tableDNS)
	for _, exts := range [][]uint8{
		{bpftest.ExtHopByHop},
		{bpftest.ExtHopByHop, bpftest.ExtDestOpts},
		{bpftest.ExtHopByHop, bpftest.ExtRouting, bpftest.ExtDestOpts, bpftest.ExtDestOpts},
	} {
		pkt := bpftest.IPv6UDPExt(a.l2(), ip6(a.ip6, b.ip6), exts, 40100+uint16(len(exts)), 53, []byte("q"))
		e.fromWL(t, a, pkt).want(t, redirect, hit{a, bpfmap.ReasonDeliverLocal}, hit{b, bpfmap.ReasonToWorkload})
	}
	deep := []uint8{bpftest.ExtHopByHop, bpftest.ExtDestOpts, bpftest.ExtDestOpts, bpftest.ExtDestOpts, bpftest.ExtDestOpts}
	e.fromWL(t, a, bpftest.IPv6UDPExt(a.l2(), ip6(a.ip6, b.ip6), deep, 40110, 53, []byte("q"))).want(t, shot,
		hit{a, bpfmap.ReasonDropPolicy})
	// Behind the extension headers, the reply of the allowed flow passes.
	e.setTables(t, b, 0, tableDeny)
	reply := bpftest.IPv6UDPExt(b.l2(), ip6(b.ip6, a.ip6), []uint8{bpftest.ExtDestOpts}, 53, 40102, nil)
	e.fromWL(t, b, reply).want(t, redirect, hit{b, bpfmap.ReasonDeliverLocal}, hit{a, bpfmap.ReasonToWorkload})
}

// Fragments: the first carries the ports and is tracked; a later one
// matches by the first's ports; one whose first was never seen is dropped.
func TestIPv6Fragments(t *testing.T) {
	e := newIPv6PolicyEnv(t)
	a, b := e.wl1, e.wl2
	e.setTables(t, a, 0, tableDNS)
	data := bpftest.UDPBytes(40200, 53, make([]byte, 1000))
	first := bpftest.IPv6Fragment(a.l2(), ip6(a.ip6, b.ip6), 0xabcd, 0, true, bpfmap.ProtoUDP, data[:512])
	later := bpftest.IPv6Fragment(a.l2(), ip6(a.ip6, b.ip6), 0xabcd, 512, false, bpfmap.ProtoUDP, data[512:])
	e.fromWL(t, a, first).want(t, redirect, hit{a, bpfmap.ReasonDeliverLocal}, hit{b, bpfmap.ReasonToWorkload})
	e.fromWL(t, a, later).want(t, redirect, hit{a, bpfmap.ReasonDeliverLocal}, hit{b, bpfmap.ReasonToWorkload})

	// The first fragment of a datagram to a denied port: the later one is
	// denied by the first's port.
	bad := bpftest.UDPBytes(40201, 54, make([]byte, 1000))
	e.fromWL(t, a, bpftest.IPv6Fragment(a.l2(), ip6(a.ip6, b.ip6), 0xabce, 0, true, bpfmap.ProtoUDP, bad[:512])).want(t, shot,
		hit{a, bpfmap.ReasonDropPolicy})
	e.fromWL(t, a, bpftest.IPv6Fragment(a.l2(), ip6(a.ip6, b.ip6), 0xabce, 512, false, bpfmap.ProtoUDP, bad[512:])).want(t, shot,
		hit{a, bpfmap.ReasonDropPolicy})

	orphan := bpftest.IPv6Fragment(a.l2(), ip6(a.ip6, b.ip6), 0xabcf, 512, false, bpfmap.ProtoUDP, data[512:])
	o := e.fromWL(t, a, orphan)
	o.want(t, shot, hit{a, bpfmap.ReasonDropFragOrphan})
	o.unchanged(t)
}

// An ICMPv6 error from a router about a tracked flow reaches the workload
// under ingress policy (path MTU discovery must work); one about no flow
// is a new flow, which the policy denies.
func TestIPv6ICMPErrorRelated(t *testing.T) {
	e := newIPv6PolicyEnv(t)
	b := e.wl2
	e.setTables(t, b, tableDeny, 0)
	syn := bpftest.TCPSegment{Sport: 42000, Dport: 443, Seq: 1, SYN: true}
	out := bpftest.IPv6TCP(b.l2(), ip6(b.ip6, outside6), syn)
	e.fromWL(t, b, out).want(t, ok, hit{b, bpfmap.ReasonPassHost})

	l2 := bpftest.L2{Src: b.hostMAC, Dst: b.mac}
	ptb := bpftest.IPv6PacketTooBig(l2, ip6(router6, b.ip6), 1280, out[14:])
	e.toWL(t, b, ptb).want(t, ok, hit{b, bpfmap.ReasonToWorkload})

	stray := bpftest.IPv6TCP(b.l2(), ip6(b.ip6, outside6), bpftest.TCPSegment{Sport: 42001, Dport: 443, Seq: 1, SYN: true})
	e.toWL(t, b, bpftest.IPv6PacketTooBig(l2, ip6(router6, b.ip6), 1280, stray[14:])).want(t, shot,
		hit{b, bpfmap.ReasonDropPolicy})
}

// From the host stack: the host's own IPv6 addresses always reach its
// workloads, the link's own traffic (link-local sources, neighbour
// discovery) always gets in, anything else passes ingress policy, and the
// replies of the workload's own flows pass as replies.
func TestIPv6IngressFromHostStack(t *testing.T) {
	e := newIPv6PolicyEnv(t)
	dst := e.wl2
	e.setTables(t, dst, tableDNS, 0)
	l2 := bpftest.L2{Src: dst.hostMAC, Dst: dst.mac}
	e.toWL(t, dst, bpftest.IPv6UDP(l2, ip6(hostAddr6, dst.ip6), 40000, 9000, nil)).want(t, ok, hit{dst, bpfmap.ReasonToWorkload})
	e.toWL(t, dst, bpftest.IPv6UDP(l2, ip6(outside6, dst.ip6), 40000, 53, nil)).want(t, ok, hit{dst, bpfmap.ReasonToWorkload})
	e.toWL(t, dst, bpftest.IPv6UDP(l2, ip6(outside6, dst.ip6), 40000, 9000, nil)).want(t, shot, hit{dst, bpfmap.ReasonDropPolicy})

	ns := bpftest.NeighborSolicitation(l2, bpftest.IPv6{Src: outside6, Dst: bpftest.SolicitedNode(dst.ip6), HopLimit: 255}, dst.ip6, dst.hostMAC)
	e.toWL(t, dst, ns).want(t, ok, hit{dst, bpfmap.ReasonToWorkload})
	ll := bpftest.IPv6UDP(l2, ip6(netip.MustParseAddr("fe80::1"), dst.ip6), 547, 546, nil)
	e.toWL(t, dst, ll).want(t, ok, hit{dst, bpfmap.ReasonToWorkload})

	// The workload's own flow out, through the host: its reply gets in.
	e.fromWL(t, dst, bpftest.IPv6UDP(dst.l2(), ip6(dst.ip6, outside6), 43000, 9000, nil)).want(t, ok, hit{dst, bpfmap.ReasonPassHost})
	e.toWL(t, dst, bpftest.IPv6UDP(l2, ip6(outside6, dst.ip6), 9000, 43000, nil)).want(t, ok, hit{dst, bpfmap.ReasonToWorkload})
}

// Hostile: an IPv6 packet with a v4-mapped address would share IPv4
// flows' conntrack keys and match IPv4 identities: dropped as malformed,
// from a workload and from the host stack alike.
func TestIPv6V4MappedAddresses(t *testing.T) {
	e := newIPv6PolicyEnv(t)
	a, b := e.wl1, e.wl2
	mapped := netip.AddrFrom16(b.ip4.As16())
	o := e.fromWL(t, a, bpftest.IPv6UDP(a.l2(), ip6(a.ip6, mapped), 40000, 53, nil))
	o.want(t, shot, hit{a, bpfmap.ReasonDropMalformed})
	l2 := bpftest.L2{Src: b.hostMAC, Dst: b.mac}
	e.toWL(t, b, bpftest.IPv6UDP(l2, ip6(netip.AddrFrom16(a.ip4.As16()), b.ip6), 40000, 53, nil)).want(t, shot,
		hit{b, bpfmap.ReasonDropMalformed})
	// Its source: the anti-spoofing check (no route is v4-mapped).
	e.fromWL(t, a, bpftest.IPv6UDP(a.l2(), ip6(netip.AddrFrom16(a.ip4.As16()), b.ip6), 40000, 53, nil)).want(t, shot,
		hit{a, bpfmap.ReasonDropSpoofIP})
}

// A Log rule's event carries the IPv6 addresses.
func TestIPv6PolicyLogRule(t *testing.T) {
	e := newIPv6PolicyEnv(t)
	src, dst := e.wl4, e.wl2
	e.setTables(t, src, 0, tableLog)
	r, err := e.dp.Maps.PolicyLog()
	must(t, err)
	defer r.Close()
	in := bpftest.IPv6UDP(src.l2(), ip6(src.ip6, dst.ip6), 40000, 5353, nil)
	e.fromWL(t, src, in).want(t, redirect, hit{src, bpfmap.ReasonDeliverLocal}, hit{dst, bpfmap.ReasonToWorkload})
	want := bpfmap.PolicyEvent{Ifindex: src.idx(), Rule: ruleLog, Proto: bpfmap.ProtoUDP,
		Src: netip.AddrPortFrom(src.ip6, 40000), Dst: netip.AddrPortFrom(dst.ip6, 5353), Allowed: true}
	if evs := drainEvents(policyEvents(r), 300*time.Millisecond); len(evs) != 1 || evs[0] != want {
		t.Errorf("log events %+v, want one: %+v", evs, want)
	}
}
