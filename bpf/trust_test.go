package bpf_test

// Trust boundaries (issue 15): what the underlay and the tunnels may claim
// as a source, what a floating IP does with a packet it cannot translate,
// and what the DHCP exemption from egress policy covers. Each hostile
// packet is dropped and counted under its own reason.

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/calyxnet/calyx/bpf"
	"github.com/calyxnet/calyx/bpf/bpftest"
	"github.com/calyxnet/calyx/bpfmap"
)

// From the underlay, a source that is this host's (its address, an address
// the ipcache marks as the host's, such as a subnet gateway), a local
// workload's or a floating IP held here is forged: dropped before any
// delivery, tunnel or translation. Other sources pass as before.
func TestUnderlaySourceSpoof(t *testing.T) {
	ne := newNATEnv(t)
	ul := ne.tun.ul
	gateway := netip.MustParseAddr("10.65.0.1")
	must(t, ne.dp.Maps.IPCache.Put(netip.PrefixFrom(gateway, 32), bpfmap.IPCacheEntry{Host: true}))
	l2 := ne.routerL2()
	udp := func(src, dst netip.Addr) []byte {
		return bpftest.IPv4UDP(l2, bpftest.IPv4{Src: src, Dst: dst, TTL: 63}, 40000, 9000, nil)
	}
	// Also on a port of the NAT range, and before the underlay's cheap
	// exit for the host's own traffic (any other port).
	toNATPort := bpftest.IPv4UDP(l2, bpftest.IPv4{Src: hostAddr, Dst: hostAddr, TTL: 63}, 40000, natPorts[0]+7, nil)
	for name, in := range map[string][]byte{
		"this host's address to a workload":      udp(hostAddr, ne.wl2.ip4),
		"this host's address to this host":       udp(hostAddr, hostAddr),
		"this host's address to its NAT ports":   toNATPort,
		"a local workload to this host":          udp(ne.wl1.ip4, hostAddr),
		"a host-marked address (subnet gateway)": udp(gateway, ne.wl2.ip4),
		"a local workload to another":            udp(ne.wl1.ip4, ne.wl2.ip4),
		"a local workload to the internet":       udp(ne.wl1.ip4, server),
		"a local floating IP to a workload":      udp(fipWL2, ne.wl1.ip4),
		"a local floating IP to itself":          udp(fipWL2, fipWL2),
		"this host's address in IP-in-IP from nodeA's MAC": bpftest.IPIP(ne.nodeL2(ne.tun.nodeA),
			bpftest.IPv4{Src: hostAddr, Dst: hostAddr}, udp(ne.tun.nodeA.addr, ne.wl2.ip4)[14:]),
	} {
		t.Run("dropped/"+name, func(t *testing.T) {
			o := ne.fromUL(t, in)
			o.want(t, shot, hit{ul, bpfmap.ReasonDropUnderlaySpoof})
			o.unchanged(t)
		})
	}
	for name, in := range map[string][]byte{
		"an outside client to this host":             udp(client, hostAddr),
		"a floating IP held elsewhere to this host":  udp(fipRemote, hostAddr),
		"a remote node to this host":                 udp(ne.tun.nodeA.addr, hostAddr),
		"a remote workload to this host (direct)":    udp(ne.block(t, ne.tun.nodeA, bpfmap.EncapNone), hostAddr),
		"an address in a pool but no block, to host": udp(netip.MustParseAddr("10.65.200.9"), hostAddr),
	} {
		t.Run("passed/"+name, func(t *testing.T) {
			o := ne.fromUL(t, in)
			o.want(t, ok, hit{ul, bpfmap.ReasonPassHost})
			o.unchanged(t)
		})
	}
}

// A node may tunnel only sources that are its to send: its own address,
// its workloads', and addresses that are no workload's (an outside
// client's traffic it forwards to a floating IP here). This host's
// address, a local workload's, another node's and another node's
// workloads' are refused.
func TestTunnelInnerSource(t *testing.T) {
	ne := newNATEnv(t)
	ul := ne.tun.ul
	nodeA, nodeC := ne.tun.nodeA, ne.tun.nodeC
	ofA := ne.block(t, nodeA, bpfmap.EncapVXLAN)
	ofC := ne.block(t, nodeC, bpfmap.EncapVXLAN)
	dst := ne.wl2
	l2 := bpftest.L2{Src: mac(0x99, 0x01), Dst: mac(0x99, 0xee)}
	inner := func(src netip.Addr) []byte {
		return bpftest.IPv4UDP(l2, bpftest.IPv4{Src: src, Dst: dst.ip4, TTL: 63}, 40000, 9000, nil)
	}
	for _, enc := range encaps {
		for name, src := range map[string]netip.Addr{
			"this host":                    hostAddr,
			"a local workload":             ne.wl1.ip4,
			"a floating IP held here":      fipWL2,
			"another node's address":       nodeC.addr,
			"a workload of another node":   ofC,
			"a node's /32 of another node": ne.tun.nodeB.addr,
		} {
			t.Run(enc.name+"/dropped/"+name, func(t *testing.T) {
				o := ne.fromUL(t, tunnelFrame(ne.env, nodeA, hostAddr, enc.encap, inner(src)))
				o.want(t, shot, hit{ul, bpfmap.ReasonDropTunnelInnerSrc})
				o.unchanged(t)
			})
		}
		for name, src := range map[string]netip.Addr{
			"the sender's own address":   nodeA.addr,
			"a workload of the sender":   ofA,
			"an outside client":          client,
			"a floating IP held by none": netip.MustParseAddr("192.0.2.77"),
		} {
			t.Run(enc.name+"/delivered/"+name, func(t *testing.T) {
				in := tunnelFrame(ne.env, nodeA, hostAddr, enc.encap, inner(src))
				o := ne.fromUL(t, in)
				o.wantSized(t, redirect, sizedHit{ul, enc.decap, len(in)}, sizedHit{dst, bpfmap.ReasonToWorkload, len(inner(src))})
			})
		}
	}
}

// The DHCP exemption from egress policy covers the instance's own lease:
// UDP to port 67 at the broadcast address or at the host. To port 67
// anywhere else it is a flow like any other, and a workload whose egress
// policy denies everything cannot send it.
func TestDHCPPortNotAPolicyBypass(t *testing.T) {
	e := newPolicyEnv(t)
	w := e.wl1
	e.setTables(t, w, 0, tableDeny)
	must(t, e.dp.Maps.IPCache.Put(netip.PrefixFrom(hostAddr, 32), bpfmap.IPCacheEntry{Host: true}))
	to := func(dst netip.Addr) []byte {
		return bpftest.IPv4UDP(w.l2(), bpftest.IPv4{Src: w.ip4, Dst: dst, TTL: 64}, 68, 67, []byte("not really BOOTP"))
	}
	e.fromWL(t, w, to(e.wl2.ip4)).want(t, shot, hit{w, bpfmap.ReasonDropPolicy})
	e.fromWL(t, w, to(e.block(t, e.tun.nodeA, bpfmap.EncapVXLAN))).want(t, shot, hit{w, bpfmap.ReasonDropPolicy})
	e.fromWL(t, w, to(netip.MustParseAddr("198.51.100.67"))).want(t, shot, hit{w, bpfmap.ReasonDropPolicy})
	for name, dst := range map[string]netip.Addr{
		"broadcast": netip.MustParseAddr("255.255.255.255"),
		"the host":  hostAddr,
	} {
		t.Run("exempt/"+name, func(t *testing.T) {
			o := e.fromWL(t, w, to(dst))
			o.want(t, ok, hit{w, bpfmap.ReasonPassHost})
		})
	}
}

// An ICMP error is related to a tracked flow only when it goes to the end
// that sent the quoted packet and comes from the flow's other end (or, from
// the underlay, a router on the path). A workload's error about another
// workload's flow is a new flow for its egress policy, and does not touch
// the quoted flow's entry; an error from outside to another address than
// the quoted packet's source is neither translated nor delivered.
func TestICMPErrorRelatedOnlyToItsEnds(t *testing.T) {
	ne := newNATEnv(t)
	ul := ne.tun.ul
	w, other := ne.wl2, ne.wl3
	orig := mkFlow(bpfmap.ProtoUDP, client, 40500, fipWL2, 53)
	xl := mkFlow(bpfmap.ProtoUDP, client, 40500, w.ip4, 53)
	o := ne.fromUL(t, orig.frame(ne.routerL2(), seg{}))
	o.want(t, redirect, hit{ul, bpfmap.ReasonDeliverLocal}, hit{w, bpfmap.ReasonToWorkload})
	quoted := o.out[14:]
	before := ne.conntrack(t)

	// another workload, under an egress policy that denies everything,
	// claims to be a router on w's path: no.
	ne.setTables(t, other, 0, tableDenyAll(t, ne.env))
	in := icmpError(other.l2(), other.ip4, client, layers.ICMPv4TypeDestinationUnreachable, layers.ICMPv4CodePort, quoted)
	e := ne.fromWL(t, other, in)
	e.want(t, shot, hit{other, bpfmap.ReasonDropPolicy})
	e.unchanged(t)
	oe, re := flowEntries(t, ne.conntrack(t), orig, xl, bpfmap.NATDNAT)
	boe, bre := flowEntries(t, before, orig, xl, bpfmap.NATDNAT)
	if oe != boe || re != bre {
		t.Errorf("an unrelated error refreshed the quoted flow:\n before %+v %+v\n after  %+v %+v", boe, bre, oe, re)
	}

	// From outside, to another floating IP than the one that sent the
	// quoted packet: not w's flow's.
	reply := ne.fromWL(t, w, xl.reverse().frame(w.l2(), seg{}))
	if reply.verdict == shot {
		t.Fatalf("w's reply dropped: %s", fmtCounters(reply.delta))
	}
	rq := reply.out[14:] // as it left: from fipWL2
	e = ne.fromUL(t, icmpError(ne.routerL2(), ne.tun.router.addr, fipWL3, layers.ICMPv4TypeDestinationUnreachable, layers.ICMPv4CodeHost, rq))
	e.want(t, shot, hit{ul, bpfmap.ReasonDropNoRoute})
	e.unchanged(t)

	// The same error to the right address is w's: translated to it.
	e = ne.fromUL(t, icmpError(ne.routerL2(), ne.tun.router.addr, fipWL2, layers.ICMPv4TypeDestinationUnreachable, layers.ICMPv4CodeHost, rq))
	e.want(t, redirect, hit{ul, bpfmap.ReasonDeliverLocal}, hit{w, bpfmap.ReasonToWorkload})
}

// tableDenyAll puts a policy table denying everything (as the default-deny
// egress rule) and returns it.
func tableDenyAll(tb testing.TB, e *env) uint32 {
	tb.Helper()
	const table = 77
	e.putPolicy(tb, allDeny(table, bpfmap.RuleDefaultDenyEgress))
	return table
}

// icmpv6 is Ethernet/IPv6/ICMPv6 of type typ with hop limit hl and 20
// bytes of body: 4 of flags, then src as the target (an NA for its own
// address, a redirect's target).
func icmpv6(l2 bpftest.L2, src, dst netip.Addr, hl uint8, typ uint8) []byte {
	ip := &layers.IPv6{Version: 6, HopLimit: hl, NextHeader: layers.IPProtocolICMPv6, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
	icmp := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(typ, 0)}
	_ = icmp.SetNetworkLayerForChecksum(ip)
	eth := &layers.Ethernet{SrcMAC: l2.Src, DstMAC: l2.Dst, EthernetType: layers.EthernetTypeIPv6}
	body := make([]byte, 20)
	copy(body[4:], src.AsSlice())
	return bpftest.Serialize(eth, ip, icmp, gopacket.Payload(body))
}

// IPv6 for the host follows endpointToHostAction Drop, through the host
// side's link-local address and multicast too: only neighbour discovery,
// DHCPv6, DNS and the metadata service ([fe80::a9fe:a9fe]:80) get through. A workload under egress policy may still
// send NDP with a global source; the rest is the policy's, as for IPv4.
func TestIPv6EndpointToHostAndNDP(t *testing.T) {
	e := newPolicyEnv(t)
	w := e.wl4
	hostLL := netip.MustParseAddr("fe80::1")
	metadata6 := netip.MustParseAddr("fe80::a9fe:a9fe") // the agent's metadata proxy on every workload link
	ll := netip.MustParseAddr("fe80::4")
	host6 := netip.MustParseAddr("fd00:30::10")
	must(t, e.dp.Maps.Routes.Put(netip.PrefixFrom(host6, 128), bpfmap.Route{Type: bpfmap.RouteHost}))
	must(t, e.dp.Maps.IPCache.Put(netip.PrefixFrom(host6, 128), bpfmap.IPCacheEntry{Host: true}))
	outside := netip.MustParseAddr("2001:db8:99::1")
	udp := func(src, dst netip.Addr, dport uint16) []byte {
		return bpftest.IPv6UDP(w.l2(), bpftest.IPv6{Src: src, Dst: dst}, 40000, dport, nil)
	}
	setE2H := func(v bpfmap.EndpointToHost) {
		cfg := e.tun.cfg
		cfg.EndpointToHost = v
		must(t, e.dp.Maps.Config.Put(0, cfg))
	}

	setE2H(bpfmap.EndpointToHostDrop)
	for name, in := range map[string][]byte{
		"link-local to the host side's link-local": udp(ll, hostLL, 9000),
		"global to one of the host's addresses":    udp(w.ip6, host6, 22),
		"global to all-nodes multicast":            udp(w.ip6, netip.MustParseAddr("ff02::1"), 9000),
		"link-local MLD-like ICMPv6 (type 143)":    icmpv6(w.l2(), ll, netip.MustParseAddr("ff02::16"), 1, 143),
		"global NA with hop limit 64 (not NDP)":    icmpv6(w.l2(), w.ip6, host6, 64, 136),
		"TCP 81 to the metadata address":           bpftest.IPv6TCP(w.l2(), bpftest.IPv6{Src: ll, Dst: metadata6}, bpftest.TCPSegment{Sport: 40000, Dport: 81, SYN: true}),
		"TCP 80 to the host side's link-local":     bpftest.IPv6TCP(w.l2(), bpftest.IPv6{Src: ll, Dst: hostLL}, bpftest.TCPSegment{Sport: 40000, Dport: 80, SYN: true}),
	} {
		t.Run("e2h drop/dropped/"+name, func(t *testing.T) {
			before := e.hits(t)
			e.fromWL(t, w, in).want(t, shot, hit{w, bpfmap.ReasonDropPolicy})
			e.wantHits(t, before, bpfmap.RuleHitKey{Ifindex: w.idx(), Rule: bpfmap.RuleHostDrop})
		})
	}
	for name, in := range map[string][]byte{
		"router solicitation":                icmpv6(w.l2(), ll, netip.MustParseAddr("ff02::2"), 255, 133),
		"neighbour advertisement":            icmpv6(w.l2(), ll, hostLL, 255, 136),
		"DHCPv6 solicit":                     bpftest.IPv6UDP(w.l2(), bpftest.IPv6{Src: ll, Dst: netip.MustParseAddr("ff02::1:2")}, 546, 547, nil),
		"DNS to the host":                    udp(w.ip6, host6, 53),
		"global NA to the host (hop 255)":    icmpv6(w.l2(), w.ip6, host6, 255, 136),
		"to the outside (not the host's)":    udp(w.ip6, outside, 443),
		"link-local DNS to the host side":    udp(ll, hostLL, 53),
		"metadata ([fe80::a9fe:a9fe]:80)":    bpftest.IPv6TCP(w.l2(), bpftest.IPv6{Src: ll, Dst: metadata6}, bpftest.TCPSegment{Sport: 40000, Dport: 80, SYN: true}),
		"global RS to all-routers (hop 255)": icmpv6(w.l2(), w.ip6, netip.MustParseAddr("ff02::2"), 255, 133),
	} {
		t.Run("e2h drop/passed/"+name, func(t *testing.T) {
			e.fromWL(t, w, in).want(t, ok, hit{w, bpfmap.ReasonPassHost})
		})
	}

	setE2H(bpfmap.EndpointToHostAccept)
	e.fromWL(t, w, udp(ll, hostLL, 9000)).want(t, ok, hit{w, bpfmap.ReasonPassHost})
	e.fromWL(t, w, udp(w.ip6, host6, 22)).want(t, ok, hit{w, bpfmap.ReasonPassHost})

	// Under egress policy: NDP with a global source still goes to the
	// host, and with endpointToHostAction Accept so does the rest to the
	// host (as for IPv4); anything else global is the policy's.
	e.setTables(t, w, 0, tableDeny)
	e.fromWL(t, w, icmpv6(w.l2(), w.ip6, host6, 255, 136)).want(t, ok, hit{w, bpfmap.ReasonPassHost})
	e.fromWL(t, w, icmpv6(w.l2(), w.ip6, netip.MustParseAddr("ff02::2"), 255, 133)).want(t, ok, hit{w, bpfmap.ReasonPassHost})
	e.fromWL(t, w, icmpv6(w.l2(), w.ip6, host6, 64, 136)).want(t, ok, hit{w, bpfmap.ReasonPassHost})
	e.fromWL(t, w, udp(w.ip6, outside, 444)).want(t, shot, hit{w, bpfmap.ReasonDropPolicy})
	setE2H(bpfmap.EndpointToHostReturn)
	e.fromWL(t, w, icmpv6(w.l2(), w.ip6, host6, 64, 136)).want(t, shot, hit{w, bpfmap.ReasonDropPolicy})
}

// natOutgoing's source port (issue 15, finding 9): the workload's own when
// it is in the configured range and free, else a random one of the range,
// never one derived from the flow.
func TestNATOutgoingPortChoice(t *testing.T) {
	ne := newNATEnv(t)
	w := ne.wl1
	cfg := ne.tun.cfg
	cfg.NATPorts = [2]uint16{30000, 31023}
	must(t, ne.dp.Maps.Config.Put(0, cfg))
	port := func(o outcome) uint16 {
		t.Helper()
		if o.verdict != redirect {
			t.Fatalf("not forwarded: %s", fmtCounters(o.delta))
		}
		p, _ := natPort(o.out)
		return p
	}
	udp := func(sport, dport uint16) []byte {
		return mkFlow(bpfmap.ProtoUDP, w.ip4, sport, server, dport).frame(w.l2(), seg{})
	}
	if p := port(ne.fromWL(t, w, udp(30500, 53))); p != 30500 {
		t.Errorf("the workload's port 30500 is in the range and free: translated to %d", p)
	}
	// 30600 towards server:53 is taken: another port of the range.
	must(t, ne.nat.Update(rawNATKey(mkFlow(bpfmap.ProtoUDP, hostAddr, 30600, server, 53).reverse()),
		bpf.CalyxCxNatEntry{Dir: 1, Nat: bpfmap.NATSNAT}, 0))
	if p := port(ne.fromWL(t, w, udp(30600, 53))); p == 30600 || p < 30000 || p > 31023 {
		t.Errorf("the workload's port 30600 is taken: translated to %d, want another of 30000-31023", p)
	}
	// Out of the range: random ports of the range, not a function of the
	// workload's port.
	seen := map[uint16]bool{}
	for i := range 32 {
		p := port(ne.fromWL(t, w, udp(40000+uint16(i), 53)))
		if p < 30000 || p > 31023 {
			t.Errorf("workload port %d translated to %d, outside 30000-31023", 40000+i, p)
		}
		seen[p] = true
	}
	if len(seen) < 28 {
		t.Errorf("32 flows got only %d distinct ports", len(seen))
	}
	// The same workload port to two servers: random, so the choice for
	// one reveals nothing of the other's.
	a := port(ne.fromWL(t, w, udp(45000, 5353)))
	b := port(ne.fromWL(t, w, udp(45000, 5354)))
	c := port(ne.fromWL(t, w, udp(45000, 5355)))
	if a == b && b == c {
		t.Errorf("workload port 45000 to three servers: %d each time, want random ports", a)
	}
}

// TTL 1 goes to the host stack for its time-exceeded, but not around
// policy: to the host's own addresses the stack would deliver it whatever
// the TTL, so endpointToHostAction Drop drops it, as the egress policy does
// a new flow elsewhere.
func TestTTL1NotAroundPolicy(t *testing.T) {
	e := newPolicyEnv(t)
	w := e.wl4
	must(t, e.dp.Maps.IPCache.Put(netip.PrefixFrom(hostAddr, 32), bpfmap.IPCacheEntry{Host: true}))
	cfg := e.tun.cfg
	cfg.EndpointToHost = bpfmap.EndpointToHostDrop
	must(t, e.dp.Maps.Config.Put(0, cfg))
	ping := func(dst netip.Addr, ttl uint8, id uint16) []byte {
		return bpftest.IPv4ICMPEcho(w.l2(), bpftest.IPv4{Src: w.ip4, Dst: dst, TTL: ttl}, id, 1)
	}
	e.fromWL(t, w, ping(hostAddr, 1, 1)).want(t, shot, hit{w, bpfmap.ReasonDropPolicy})
	e.fromWL(t, w, ping(hostAddr, 0, 2)).want(t, shot, hit{w, bpfmap.ReasonDropPolicy})
	e.fromWL(t, w, ping(internet, 1, 3)).want(t, ok, hit{w, bpfmap.ReasonPassHost})

	// Under an egress policy that denies everything: a new flow at TTL 1
	// is dropped; a packet of an allowed, tracked flow still expires at
	// the host.
	cfg.EndpointToHost = bpfmap.EndpointToHostAccept
	must(t, e.dp.Maps.Config.Put(0, cfg))
	e.setTables(t, w, 0, tableDeny)
	e.fromWL(t, w, ping(internet, 1, 4)).want(t, shot, hit{w, bpfmap.ReasonDropPolicy})
	e.setTables(t, w, 0, 0)
	first := e.fromWL(t, w, bpftest.IPv4UDP(w.l2(), bpftest.IPv4{Src: w.ip4, Dst: e.wl2.ip4, TTL: 64}, 40000, 9000, nil))
	if first.verdict == shot {
		t.Fatalf("the flow's first packet: %s", fmtCounters(first.delta))
	}
	e.setTables(t, w, 0, tableDeny)
	later := bpftest.IPv4UDP(w.l2(), bpftest.IPv4{Src: w.ip4, Dst: e.wl2.ip4, TTL: 1}, 40000, 9000, nil)
	e.fromWL(t, w, later).want(t, ok, hit{w, bpfmap.ReasonPassHost})
}

// An unsolicited NA may only claim the workload's own addresses: the
// gateway fe80::1 and every other address are the host's on that link.
func TestNAOnlyForOwnAddresses(t *testing.T) {
	e := newEnv(t)
	w := e.wl1
	na := func(src, target netip.Addr) []byte {
		ip := &layers.IPv6{Version: 6, HopLimit: 255, NextHeader: layers.IPProtocolICMPv6, SrcIP: src.AsSlice(),
			DstIP: netip.MustParseAddr("ff02::1").AsSlice()}
		icmp := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(layers.ICMPv6TypeNeighborAdvertisement, 0)}
		_ = icmp.SetNetworkLayerForChecksum(ip)
		adv := &layers.ICMPv6NeighborAdvertisement{Flags: 0x20, TargetAddress: target.AsSlice(),
			Options: layers.ICMPv6Options{{Type: layers.ICMPv6OptTargetAddress, Data: w.mac}}}
		eth := &layers.Ethernet{SrcMAC: w.mac, DstMAC: net.HardwareAddr{0x33, 0x33, 0, 0, 0, 1}, EthernetType: layers.EthernetTypeIPv6}
		return bpftest.Serialize(eth, ip, icmp, adv)
	}
	ll := netip.MustParseAddr("fe80::4")
	for name, in := range map[string][]byte{
		"the gateway fe80::1, from its link-local": na(ll, netip.MustParseAddr("fe80::1")),
		"the gateway fe80::1, from its global":     na(w.ip6, netip.MustParseAddr("fe80::1")),
		"another workload's address":               na(ll, e.wl2.ip6),
		"an outside address":                       na(w.ip6, netip.MustParseAddr("2001:db8::1")),
	} {
		t.Run("dropped/"+name, func(t *testing.T) {
			o := e.fromWL(t, w, in)
			o.want(t, shot, hit{w, bpfmap.ReasonDropSpoofIP})
			o.unchanged(t)
		})
	}
	for name, in := range map[string][]byte{
		"its own global address":     na(w.ip6, w.ip6),
		"its own link-local address": na(ll, ll),
	} {
		t.Run("passed/"+name, func(t *testing.T) {
			e.fromWL(t, w, in).want(t, ok, hit{w, bpfmap.ReasonPassHost})
		})
	}
}

// A packet from one workload to another on this host must fit the
// workloads' MTU (a workload may raise its own): too big with DF, the
// sender gets ICMP fragmentation-needed with that MTU; without DF it is
// dropped (calyx does not fragment).
func TestLocalDeliveryMTU(t *testing.T) {
	e := newTunnelEnv(t)
	w := e.wl1
	cfg := e.tun.cfg
	cfg.WorkloadMTU = 1450
	must(t, e.dp.Maps.Config.Put(0, cfg))
	ip := bpftest.IPv4{Src: w.ip4, Dst: e.wl2.ip4, TTL: 64}
	o := e.fromWL(t, w, udpSized(w, ip, 1450))
	o.want(t, redirect, hit{w, bpfmap.ReasonDeliverLocal}, hit{e.wl2, bpfmap.ReasonToWorkload})
	o = e.fromWL(t, w, udpSized(w, ip, 1454))
	o.want(t, redirect, hit{w, bpfmap.ReasonICMPFragNeeded})
	pkt := bpftest.Decode(o.out)
	icmp, _ := pkt.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
	if icmp == nil || icmp.TypeCode != layers.CreateICMPv4TypeCode(layers.ICMPv4TypeDestinationUnreachable, layers.ICMPv4CodeFragmentationNeeded) ||
		binary.BigEndian.Uint16(icmp.Contents[6:8]) != 1450 {
		t.Errorf("want ICMP fragmentation needed, MTU 1450: %v", pkt)
	}
	noDF := ip
	noDF.NoDF = true
	o = e.fromWL(t, w, udpSized(w, noDF, 1454))
	o.want(t, shot, hit{w, bpfmap.ReasonDropTooBig})
	o.unchanged(t)
}

// A blind attacker knows a flow's addresses and ports but not its sequence
// numbers (finding 8). A segment that is not in sequence changes nothing
// of its flow's state: an RST is dropped (drop-tcp-window), a FIN or data
// pass for the ends to refuse, unrecorded. An RST within the receiver's
// window, scaled as the SYNs agreed, closes the flow as before; so does the
// RST that answers a SYN, when it acknowledges just that SYN.
func TestTCPBlindReset(t *testing.T) {
	ne := newNATEnv(t)
	ul, w := ne.tun.ul, ne.wl2
	fromOutside := func(t *testing.T, f flow, s seg) outcome { return ne.fromUL(t, f.frame(ne.routerL2(), s)) }
	delivered := func(o outcome) {
		o.want(t, redirect, hit{ul, bpfmap.ReasonDeliverLocal}, hit{w, bpfmap.ReasonToWorkload})
	}
	// handshake opens client:sport -> fipWL2:22 with window scaling (shift 7
	// both ways) when ws, and returns the flow as it leaves and the entries.
	handshake := func(t *testing.T, sport uint16, ws bool) (orig, xl flow) {
		t.Helper()
		orig = mkFlow(bpfmap.ProtoTCP, client, sport, fipWL2, 22)
		xl = mkFlow(bpfmap.ProtoTCP, client, sport, w.ip4, 22)
		scale := 0
		if ws {
			scale = 8
		}
		delivered(fromOutside(t, orig, seg{flags: bpfmap.TCPSyn, seq: 1000, wscale: scale}))
		ne.fromWL(t, w, xl.reverse().frame(w.l2(), seg{flags: bpfmap.TCPSyn | bpfmap.TCPAck, seq: 5000, ack: 1001,
			win: 65535, wscale: scale})).want(t, ok, hit{w, bpfmap.ReasonPassHost})
		delivered(fromOutside(t, orig, seg{flags: bpfmap.TCPAck, seq: 1001, ack: 5001, win: 1000}))
		return orig, xl
	}
	entries := func(t *testing.T, orig, xl flow) (o, r bpfmap.CTEntry) {
		t.Helper()
		return flowEntries(t, ne.conntrack(t), orig, xl, bpfmap.NATDNAT)
	}

	t.Run("out of window", func(t *testing.T) {
		orig, xl := handshake(t, 41000, true)
		o, r := entries(t, orig, xl)
		if !o.SeqKnown || o.SeqEnd != 1001+17 || o.WScale != 7 || !r.SeqKnown || r.SeqEnd != 5001 || r.WScale != 7 || r.MaxWin != 65535 {
			t.Fatalf("after the handshake: original %+v, reply %+v", o, r)
		}
		far := uint32(1001 + 0x80000000)
		fromOutside(t, orig, seg{flags: bpfmap.TCPRst | bpfmap.TCPAck, seq: far}).want(t, shot, hit{ul, bpfmap.ReasonDropTCPWindow})
		delivered(fromOutside(t, orig, seg{flags: bpfmap.TCPFin | bpfmap.TCPAck, seq: far}))
		delivered(fromOutside(t, orig, seg{flags: bpfmap.TCPAck, seq: far}))
		o2, _ := entries(t, orig, xl)
		if o2.TCPFlags != o.TCPFlags || o2.SeqEnd != o.SeqEnd {
			t.Errorf("segments out of sequence changed the flow: flags %#x -> %#x, end %d -> %d", o.TCPFlags, o2.TCPFlags, o.SeqEnd, o2.SeqEnd)
		}
		// 1,000,000 past the end: beyond the 65,535 the workload
		// advertised, within it scaled by 2^7.
		delivered(fromOutside(t, orig, seg{flags: bpfmap.TCPRst | bpfmap.TCPAck, seq: o.SeqEnd + 1000000}))
		if o3, _ := entries(t, orig, xl); o3.TCPFlags&bpfmap.TCPRst == 0 {
			t.Errorf("an RST within the scaled window was not recorded: flags %#x", o3.TCPFlags)
		}
	})
	t.Run("unscaled window", func(t *testing.T) {
		orig, xl := handshake(t, 41001, false)
		o, _ := entries(t, orig, xl)
		fromOutside(t, orig, seg{flags: bpfmap.TCPRst, seq: o.SeqEnd + 1000000}).want(t, shot, hit{ul, bpfmap.ReasonDropTCPWindow})
		// Behind the end, within the window: a retransmission's place.
		delivered(fromOutside(t, orig, seg{flags: bpfmap.TCPRst, seq: o.SeqEnd - 30000}))
		if o2, _ := entries(t, orig, xl); o2.TCPFlags&bpfmap.TCPRst == 0 {
			t.Errorf("an RST within the window was not recorded: flags %#x", o2.TCPFlags)
		}
	})
	t.Run("reset answering the SYN", func(t *testing.T) {
		orig := mkFlow(bpfmap.ProtoTCP, client, 41002, fipWL2, 22)
		xl := mkFlow(bpfmap.ProtoTCP, client, 41002, w.ip4, 22)
		delivered(fromOutside(t, orig, seg{flags: bpfmap.TCPSyn, seq: 1000}))
		back := xl.reverse()
		ne.fromWL(t, w, back.frame(w.l2(), seg{flags: bpfmap.TCPRst | bpfmap.TCPAck, seq: 1, ack: 1234})).
			want(t, shot, hit{w, bpfmap.ReasonDropTCPWindow})
		ne.fromWL(t, w, back.frame(w.l2(), seg{flags: bpfmap.TCPRst, seq: 1})).
			want(t, shot, hit{w, bpfmap.ReasonDropTCPWindow})
		ne.fromWL(t, w, back.frame(w.l2(), seg{flags: bpfmap.TCPRst | bpfmap.TCPAck, seq: 1, ack: 1001})).
			want(t, ok, hit{w, bpfmap.ReasonPassHost})
		if _, r := entries(t, orig, xl); r.TCPFlags&bpfmap.TCPRst == 0 || !r.SeqKnown {
			t.Errorf("the RST answering the SYN was not recorded: %+v", r)
		}
	})
	t.Run("fast path", func(t *testing.T) {
		cfg := ne.tun.cfg
		cfg.RouteGen = 3
		must(t, ne.dp.Maps.Config.Put(0, cfg))
		src, dst := ne.wl4, ne.wl2
		f := mkFlow(bpfmap.ProtoTCP, src.ip4, 40000, dst.ip4, 80)
		local := hit{src, bpfmap.ReasonDeliverLocal}
		ne.fromWL(t, src, f.frame(src.l2(), seg{flags: bpfmap.TCPSyn, seq: 1000})).want(t, redirect, local, hit{dst, bpfmap.ReasonToWorkload})
		ne.fromWL(t, src, f.frame(src.l2(), seg{flags: bpfmap.TCPAck, seq: 1001})).want(t, redirect, local, hit{dst, bpfmap.ReasonToWorkload})
		ne.fromWL(t, src, f.frame(src.l2(), seg{flags: bpfmap.TCPRst, seq: 1001 + 0x40000000})).want(t, shot, hit{src, bpfmap.ReasonDropTCPWindow})
		ne.fromWL(t, src, f.frame(src.l2(), seg{flags: bpfmap.TCPRst, seq: 1001 + 17})).want(t, redirect, local, hit{dst, bpfmap.ReasonToWorkload})
	})
}
