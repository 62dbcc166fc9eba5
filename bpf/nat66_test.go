package bpf_test

// natOutgoing for IPv6 (NAT66): a workload of a natOutgoing IPv6 pool
// talking to outside every pool leaves as the node's IPv6 address, from a
// port of the NAT range, routed over the IPv6 underlay; the replies, to the
// node's address, go back to the workload. What it leaves alone: pools,
// link-local and multicast destinations, destinations the underlay has no
// route to, workloads outside natOutgoing pools, a node without an IPv6
// address, and the host's own traffic to that address.

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"slices"
	"testing"

	"github.com/calyxnet/calyx/bpf/bpftest"
	"github.com/calyxnet/calyx/bpfmap"
)

var (
	server6    = netip.MustParseAddr("2001:db8:53::53") // outside, behind nodeA6 as the router
	internet6  = netip.MustParsePrefix("2001:db8:53::/48")
	noRoute6   = netip.MustParseAddr("2001:db8:99::1") // outside, and the underlay has no route
	protocols6 = []struct {
		name  string
		proto uint8
	}{{"tcp", bpfmap.ProtoTCP}, {"udp", bpfmap.ProtoUDP}, {"icmpv6 echo", bpfmap.ProtoICMPv6}}
)

// newNAT66Env is newNATEnv with the IPv6 underlay (underlay6), wl1's IPv6
// address in a natOutgoing pool and a kernel route to internet6 via nodeA6.
func newNAT66Env(tb testing.TB) *natEnv {
	tb.Helper()
	ne := newNATEnv(tb)
	ne.underlay6(tb)
	w := ne.wl1
	must(tb, ne.dp.Maps.Routes.Put(netip.PrefixFrom(w.ip6, 128), bpfmap.Route{Type: bpfmap.RouteLocalWorkload,
		Ifindex: w.idx(), MAC: bpfmap.MACFrom(w.mac), HostMAC: bpfmap.MACFrom(w.hostMAC), NATOutgoing: true, Peer: true,
		CounterSlot: w.slot}))
	must(tb, ne.ns.AddRoute("ulh", internet6, nodeA6))
	return ne
}

// frame6 builds an IPv6 packet of proto from src:sport to dst:dport (an
// echo's identifier is sport; reply: the answer to it: a SYN-ACK, an echo
// reply).
func frame6(l2 bpftest.L2, proto uint8, src netip.Addr, sport uint16, dst netip.Addr, dport uint16, reply bool) []byte {
	ip := ip6(src, dst)
	switch proto {
	case bpfmap.ProtoTCP:
		seg := bpftest.TCPSegment{Sport: sport, Dport: dport, Seq: 1000, SYN: true}
		if reply {
			seg.Seq, seg.Ack, seg.ACK = 5000, 1001, true
		}
		return bpftest.IPv6TCP(l2, ip, seg)
	case bpfmap.ProtoUDP:
		return bpftest.IPv6UDP(l2, ip, sport, dport, []byte("calyx-nat66"))
	}
	return bpftest.IPv6ICMPEcho(l2, ip, reply, sport, 1)
}

// ports6 returns an IPv6 frame's (no extension headers) source and
// destination ports; an echo's identifier is both.
func ports6(frame []byte) (sport, dport uint16) {
	l4 := frame[54:]
	if frame[20] == bpfmap.ProtoICMPv6 {
		id := binary.BigEndian.Uint16(l4[4:])
		return id, id
	}
	return binary.BigEndian.Uint16(l4[0:]), binary.BigEndian.Uint16(l4[2:])
}

// check6 asserts an IPv6 frame's addresses, hop limit, ports (echo: the
// identifier in sport) and L4 checksum, and that its payload is in's.
func check6(t *testing.T, what string, out, in []byte, src, dst netip.Addr, sport, dport uint16, hop uint8) {
	t.Helper()
	if len(out) != len(in) {
		t.Fatalf("%s: %d bytes, want %d", what, len(out), len(in))
	}
	ip := out[14:]
	if !bytes.Equal(ip[8:24], src.AsSlice()) || !bytes.Equal(ip[24:40], dst.AsSlice()) || ip[7] != hop {
		t.Errorf("%s: %x -> %x hop limit %d, want %s -> %s hop limit %d", what, ip[8:24], ip[24:40], ip[7], src, dst, hop)
	}
	gs, gd := ports6(out)
	if in[20] == bpfmap.ProtoICMPv6 {
		dport = sport
	}
	if gs != sport || gd != dport {
		t.Errorf("%s: ports %d -> %d, want %d -> %d", what, gs, gd, sport, dport)
	}
	msg := ip[40:]
	pseudo := slices.Concat(ip[8:40], binary.BigEndian.AppendUint32(nil, uint32(len(msg))), []byte{0, 0, 0, ip[6]})
	if !csumOK(slices.Concat(pseudo, msg)) {
		t.Errorf("%s: the L4 checksum is wrong after translation", what)
	}
	hdr := map[uint8]int{bpfmap.ProtoTCP: 20, bpfmap.ProtoUDP: 8, bpfmap.ProtoICMPv6: 8}[in[20]]
	if !bytes.Equal(out[54+hdr:], in[54+hdr:]) {
		t.Errorf("%s: payload changed", what)
	}
}

// A natOutgoing workload's TCP, UDP and echo to outside: out as the node's
// IPv6 address from a port of the NAT range, hop limit one less, to the
// router's MAC; the reply to that port comes back to the workload's address
// and port, delivered in BPF; a later packet keeps the port; both entries
// are in conntrack.
func TestNAT66Outgoing(t *testing.T) {
	ne := newNAT66Env(t)
	ul, w := ne.tun.ul, ne.wl1
	for i, p := range protocols6 {
		t.Run(p.name, func(t *testing.T) {
			sport, dport := uint16(40100+i), uint16(443)
			if p.proto == bpfmap.ProtoICMPv6 {
				sport, dport = 0x0666, 0
			}
			in := frame6(w.l2(), p.proto, w.ip6, sport, server6, dport, false)
			o := ne.fromWL(t, w, in)
			o.want(t, redirect, hit{w, bpfmap.ReasonForwardDirect})
			if !bytes.Equal(o.out[0:6], ne.tun.nodeA.l2) {
				t.Errorf("to %x, want the router %s", o.out[0:6], ne.tun.nodeA.l2)
			}
			port, _ := ports6(o.out)
			if port < natPorts[0] || port > natPorts[1] {
				t.Errorf("source port %d, want %d-%d", port, natPorts[0], natPorts[1])
			}
			check6(t, "translated", o.out, in, self6, server6, port, dport, 63)

			rin := frame6(ne.routerL2(), p.proto, server6, dport, self6, port, true)
			if p.proto == bpfmap.ProtoICMPv6 {
				rin = frame6(ne.routerL2(), p.proto, server6, port, self6, 0, true)
			}
			r := ne.fromUL(t, rin)
			r.want(t, redirect, hit{ul, bpfmap.ReasonDeliverLocal}, hit{w, bpfmap.ReasonToWorkload})
			rs, _ := ports6(rin) // the server's port; an echo reply's identifier is the workload's
			if p.proto == bpfmap.ProtoICMPv6 {
				rs = sport
			}
			check6(t, "reply", r.out, rin, server6, w.ip6, rs, sport, 63)

			n := ne.fromWL(t, w, in)
			n.want(t, redirect, hit{w, bpfmap.ReasonForwardDirect})
			check6(t, "later", n.out, in, self6, server6, port, dport, 63)

			xl := mkFlow(p.proto, self6, port, server6, dport)
			orig := mkFlow(p.proto, w.ip6, sport, server6, dport)
			oe, re := flowEntries(t, ne.conntrack(t), orig, xl, bpfmap.NATSNAT)
			if oe.Packets != 2 || re.Packets != 1 {
				t.Errorf("entries saw %d and %d packets, want 2 and 1", oe.Packets, re.Packets)
			}
		})
	}
}

// What NAT66 leaves alone: a destination in a pool, link-local or
// multicast, or one the underlay has no route to; a workload outside
// natOutgoing pools; a node without an IPv6 address. None is translated.
func TestNAT66NotTranslated(t *testing.T) {
	ne := newNAT66Env(t)
	w := ne.wl1
	pass := func(t *testing.T, ep *endpoint, dst netip.Addr) {
		t.Helper()
		in := bpftest.IPv6UDP(ep.l2(), ip6(ep.ip6, dst), 40200, 53, []byte("left alone"))
		o := ne.fromWL(t, ep, in)
		if o.verdict == redirect && len(o.out) >= 54 && bytes.Equal(o.out[22:38], self6.AsSlice()) {
			t.Fatalf("%s -> %s was translated to the node's address", ep.ip6, dst)
		}
		if o.verdict != bpftest.ActOK && o.verdict != redirect {
			t.Errorf("%s -> %s: verdict %s, want it passed on untranslated", ep.ip6, dst, bpftest.VerdictName(o.verdict))
		}
	}
	t.Run("a workload beside it", func(t *testing.T) { pass(t, w, ne.wl2.ip6) })
	t.Run("link-local", func(t *testing.T) { pass(t, w, netip.MustParseAddr("fe80::a9fe:a9fe")) })
	t.Run("multicast", func(t *testing.T) { pass(t, w, netip.MustParseAddr("ff02::fb")) })
	t.Run("no route in the underlay", func(t *testing.T) { pass(t, w, noRoute6) })
	t.Run("a workload outside natOutgoing pools", func(t *testing.T) { pass(t, ne.wl2, server6) })
	t.Run("a node without an IPv6 address", func(t *testing.T) {
		cfg := ne.tun.cfg
		cfg.Address6 = netip.Addr{}
		must(t, ne.dp.Maps.Config.Put(0, cfg))
		defer func() { must(t, ne.dp.Maps.Config.Put(0, ne.tun.cfg)) }()
		pass(t, w, server6)
	})
}

// From the underlay to the node's IPv6 address, no tunnel: TCP to a port
// outside the NAT range (the host's SSH) and an echo request go to the host
// with no conntrack lookup; a port of the range without a flow goes to the
// host too, untranslated.
func TestNAT66HostTraffic(t *testing.T) {
	ne := newNAT66Env(t)
	ul := ne.tun.ul
	for name, in := range map[string][]byte{
		"ssh":                 bpftest.IPv6TCP(ne.routerL2(), ip6(server6, self6), bpftest.TCPSegment{Sport: 40000, Dport: 22, SYN: true}),
		"echo request":        bpftest.IPv6ICMPEcho(ne.routerL2(), ip6(server6, self6), false, 7, 1),
		"a NAT port, no flow": bpftest.IPv6UDP(ne.routerL2(), ip6(server6, self6), 53, natPorts[0]+7, nil),
	} {
		t.Run(name, func(t *testing.T) {
			o := ne.fromUL(t, in)
			o.want(t, bpftest.ActOK, hit{ul, bpfmap.ReasonPassHost})
			if !bytes.Equal(o.out, in) {
				t.Errorf("changed on the way to the host")
			}
		})
	}
}

// A Packet Too Big from a router on the way, about a NAT66 flow's packet
// (quoting it as translated, to the node's address), reaches the workload
// translated back: the outer destination and the quoted source and port
// are the workload's again, and the ICMPv6 checksum is right.
func TestNAT66PacketTooBig(t *testing.T) {
	ne := newNAT66Env(t)
	ul, w := ne.tun.ul, ne.wl1
	router := netip.MustParseAddr("2001:db8:53::1")
	in := frame6(w.l2(), bpfmap.ProtoTCP, w.ip6, 40300, server6, 443, false)
	o := ne.fromWL(t, w, in)
	o.want(t, redirect, hit{w, bpfmap.ReasonForwardDirect})
	port, _ := ports6(o.out)

	ptb := bpftest.IPv6PacketTooBig(ne.routerL2(), ip6(router, self6), 1400, o.out[14:])
	r := ne.fromUL(t, ptb)
	r.want(t, redirect, hit{ul, bpfmap.ReasonDeliverLocal}, hit{w, bpfmap.ReasonToWorkload})
	ip := r.out[14:]
	if !bytes.Equal(ip[8:24], router.AsSlice()) || !bytes.Equal(ip[24:40], w.ip6.AsSlice()) {
		t.Errorf("outer %x -> %x, want %s -> %s", ip[8:24], ip[24:40], router, w.ip6)
	}
	if !icmp6ChecksumOK(router, w.ip6, ip[40:]) {
		t.Errorf("ICMPv6 checksum wrong after translation")
	}
	quoted := ip[48:]
	if !bytes.Equal(quoted[8:24], w.ip6.AsSlice()) || !bytes.Equal(quoted[24:40], server6.AsSlice()) {
		t.Errorf("quoted %x -> %x, want %s -> %s", quoted[8:24], quoted[24:40], w.ip6, server6)
	}
	if sp, dp := binary.BigEndian.Uint16(quoted[40:]), binary.BigEndian.Uint16(quoted[42:]); sp != 40300 || dp != 443 {
		t.Errorf("quoted ports %d -> %d (translated from %d), want 40300 -> 443", sp, dp, port)
	}
	if mtu := binary.BigEndian.Uint32(ip[44:48]); mtu != 1400 {
		t.Errorf("MTU %d, want 1400 as the router said", mtu)
	}
}
