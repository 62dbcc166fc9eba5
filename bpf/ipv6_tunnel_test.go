package bpf_test

// IPv6 workloads across hosts over the IPv4 underlay: a workload's IPv6
// packet to a remote block leaves in 6in4 (protocol 41), in VXLAN with an
// IPv6 inner frame, or routed directly; tunnel packets carrying IPv6 are
// decapsulated, checked (the inner source must be the sending node's to
// use) and policed like IPv4's; what does not fit the tunnel gets an
// ICMPv6 Packet Too Big.

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"slices"
	"testing"

	"github.com/gopacket/gopacket/layers"

	"github.com/calyxnet/calyx/bpf/bpftest"
	"github.com/calyxnet/calyx/bpfmap"
)

// block6 returns the address ::5 of a /122 of remote IPv6 workloads on
// node reached with encap over the IPv4 underlay, adding the route.
func (e *env) block6(tb testing.TB, node *remoteNode, encap bpfmap.Encap) netip.Addr {
	tb.Helper()
	b := [16]byte{0: 0xfd, 1: 0x00, 2: 0x00, 3: 0x66, 5: byte(encap), 7: node.addr.As4()[3]}
	p := netip.PrefixFrom(netip.AddrFrom16(b), 122)
	must(tb, e.dp.Maps.Routes.Put(p, bpfmap.Route{Type: bpfmap.RouteRemoteWorkload, Encap: encap, NextHop: node.addr}))
	b[15] = 5
	return netip.AddrFrom16(b)
}

// icmp6ChecksumOK says whether the ICMPv6 message msg from src to dst
// carries a right checksum (RFC 4443 2.3, with the pseudo-header).
func icmp6ChecksumOK(src, dst netip.Addr, msg []byte) bool {
	b := slices.Concat(src.AsSlice(), dst.AsSlice(), binary.BigEndian.AppendUint32(nil, uint32(len(msg))),
		[]byte{0, 0, 0, 58}, msg)
	return csumOK(b)
}

// A workload's IPv6 packet to a remote block leaves encapsulated (or
// routed directly) for its node: the outer IPv4 header the node's, the
// inner packet byte for byte as sent but for its hop limit.
func TestIPv6TunnelEncap(t *testing.T) {
	e := newTunnelEnv(t)
	src := e.wl1
	direct := struct {
		name   string
		encap  bpfmap.Encap
		reason bpfmap.Reason
		decap  bpfmap.Reason
	}{"direct", bpfmap.EncapNone, bpfmap.ReasonForwardDirect, 0}
	for _, enc := range append(slices.Clone(encaps), direct) {
		t.Run(enc.name, func(t *testing.T) {
			dst := e.block6(t, e.tun.nodeA, enc.encap)
			in := bpftest.IPv6UDP(src.l2(), ip6(src.ip6, dst), 40000, 7000, []byte("over the underlay"))
			o := e.fromWL(t, src, in)
			o.want(t, redirect, hit{src, enc.reason})
			out := o.out
			wantInner := slices.Clone(in[14:])
			wantInner[7]-- // the hop limit
			var inner []byte
			switch enc.encap {
			case bpfmap.EncapIPIP:
				inner = out[34:]
			case bpfmap.EncapVXLAN:
				inner = out[50+14:]
				if !bytes.Equal(out[50:50+14], in[:14]) {
					t.Errorf("inner Ethernet %x, want the original %x", out[50:64], in[:14])
				}
			default:
				inner = out[14:]
			}
			if !bytes.Equal(inner, wantInner) {
				t.Errorf("inner packet:\n got  %x\n want %x", inner, wantInner)
			}
			if !bytes.Equal(out[0:6], e.tun.nodeA.l2) || !bytes.Equal(out[6:12], e.tun.ul.hostMAC) {
				t.Errorf("Ethernet %x, want %s <- %s", out[:12], e.tun.nodeA.l2, e.tun.ul.hostMAC)
			}
			if enc.encap == bpfmap.EncapNone {
				if binary.BigEndian.Uint16(out[12:14]) != 0x86dd {
					t.Errorf("routed directly: ethertype %x, want IPv6's", out[12:14])
				}
				return
			}
			if binary.BigEndian.Uint16(out[12:14]) != 0x0800 {
				t.Errorf("outer ethertype %x, want IPv4's", out[12:14])
			}
			ip, _ := bpftest.Decode(out).Layer(layers.LayerTypeIPv4).(*layers.IPv4)
			if ip == nil {
				t.Fatalf("no outer IPv4")
			}
			wantProto := layers.IPProtocolIPv6 // 6in4
			if enc.encap == bpfmap.EncapVXLAN {
				wantProto = layers.IPProtocolUDP
			}
			if ip.Protocol != wantProto || !ip.SrcIP.Equal(hostAddr.AsSlice()) || !ip.DstIP.Equal(e.tun.nodeA.addr.AsSlice()) ||
				int(ip.Length) != len(out)-14 || ip.Flags != layers.IPv4DontFragment {
				t.Errorf("outer IPv4 %v -> %v proto %v len %d flags %v; want %s -> %s proto %v len %d DF",
					ip.SrcIP, ip.DstIP, ip.Protocol, ip.Length, ip.Flags, hostAddr, e.tun.nodeA.addr, wantProto, len(out)-14)
			}
			if !bpftest.IPv4HeaderChecksumOK(out[14:]) {
				t.Errorf("outer IPv4 header checksum is wrong")
			}
		})
	}
}

// Tunnel packets carrying IPv6 from a node are decapsulated and delivered
// to the local workload, with the outer Ethernet header's type IPv6's.
func TestIPv6TunnelDecap(t *testing.T) {
	e := newTunnelEnv(t)
	ul, dst := e.tun.ul, e.wl2
	frame := func(node *remoteNode, encap bpfmap.Encap, inner []byte) []byte {
		outer := bpftest.IPv4{Src: node.addr, Dst: hostAddr}
		if encap == bpfmap.EncapIPIP {
			return bpftest.IP6in4(e.nodeL2(node), outer, inner[14:])
		}
		return bpftest.VXLAN(e.nodeL2(node), outer, 51234, testVXLANPort, testVNI, inner)
	}
	l2 := bpftest.L2{Src: mac(0x99, 0x01), Dst: mac(0x99, 0xee)}
	for _, enc := range encaps {
		t.Run(enc.name, func(t *testing.T) {
			src := e.block6(t, e.tun.nodeA, enc.encap)
			inner := bpftest.IPv6UDP(l2, ip6(src, dst.ip6), 40000, 7000, []byte("from another host"))
			in := frame(e.tun.nodeA, enc.encap, inner)
			o := e.fromUL(t, in)
			want := slices.Concat(in[:14], inner[14:])
			copy(want[0:6], dst.mac)
			copy(want[6:12], dst.hostMAC)
			want[12], want[13] = 0x86, 0xdd
			want[14+7]--
			o.wantSized(t, redirect, sizedHit{ul, enc.decap, len(in)}, sizedHit{dst, bpfmap.ReasonToWorkload, len(want)})
			if !bytes.Equal(o.out, want) {
				t.Errorf("delivered packet:\n got  %x\n want %x", o.out, want)
			}

			// Hostile and stray inner packets.
			for name, tc := range map[string]struct {
				inner  []byte
				reason bpfmap.Reason
			}{
				"inner source a local workload's": {bpftest.IPv6UDP(l2, ip6(e.wl1.ip6, dst.ip6), 1, 2, nil), bpfmap.ReasonDropTunnelInnerSrc},
				"inner source another node's workload": {bpftest.IPv6UDP(l2, ip6(e.block6(t, e.tun.nodeC, enc.encap), dst.ip6), 1, 2, nil),
					bpfmap.ReasonDropTunnelInnerSrc},
				"inner destination on no workload here": {bpftest.IPv6UDP(l2, ip6(src, outside6), 1, 2, nil), bpfmap.ReasonDropNoRoute},
				"inner v4-mapped destination": {bpftest.IPv6UDP(l2, ip6(src, netip.AddrFrom16(dst.ip4.As16())), 1, 2, nil),
					bpfmap.ReasonDropMalformed},
			} {
				t.Run(name, func(t *testing.T) {
					e.fromUL(t, frame(e.tun.nodeA, enc.encap, tc.inner)).want(t, shot, hit{ul, tc.reason})
				})
			}

			// Ingress policy applies to what is decapsulated.
			e.putTestPolicies(t)
			e.setTables(t, dst, tableDeny, 0)
			defer e.setTables(t, dst, 0, 0)
			denied := bpftest.IPv6UDP(l2, ip6(src, dst.ip6), 40001, 7000, nil)
			e.fromUL(t, frame(e.tun.nodeA, enc.encap, denied)).want(t, shot, hit{ul, bpfmap.ReasonDropPolicy})
		})
	}
}

// An IPv6 packet too big for the tunnel comes back as an ICMPv6 Packet
// Too Big from the workloads' gateway, with the tunnel's MTU; one that
// fits leaves. Between workloads of one host, the workload MTU decides.
func TestIPv6PacketTooBig(t *testing.T) {
	e := newTunnelEnv(t)
	src := e.wl1
	dst := e.block6(t, e.tun.nodeA, bpfmap.EncapVXLAN)
	mtu := underlayMTU - bpfmap.EncapVXLAN.Overhead()
	big := bpftest.IPv6UDP(src.l2(), ip6(src.ip6, dst), 40000, 7000, make([]byte, mtu+1-48))
	o := e.fromWL(t, src, big)
	o.want(t, redirect, hit{src, bpfmap.ReasonICMPFragNeeded})
	checkPacketTooBig(t, o.out, src, mtu, big[14:])

	fits := bpftest.IPv6UDP(src.l2(), ip6(src.ip6, dst), 40000, 7000, make([]byte, mtu-48))
	e.fromWL(t, src, fits).want(t, redirect, hit{src, bpfmap.ReasonEncapVXLAN})

	cfg := e.tun.cfg
	cfg.WorkloadMTU = 1400
	must(t, e.dp.Maps.Config.Put(0, cfg))
	local := bpftest.IPv6UDP(src.l2(), ip6(src.ip6, e.wl2.ip6), 40000, 7000, make([]byte, 1401-48))
	o = e.fromWL(t, src, local)
	o.want(t, redirect, hit{src, bpfmap.ReasonICMPFragNeeded})
	checkPacketTooBig(t, o.out, src, 1400, local[14:])
}

// checkPacketTooBig asserts that out is the Packet Too Big for the IPv6
// packet orig that src sent, advertising mtu.
func checkPacketTooBig(t *testing.T, out []byte, src *endpoint, mtu int, orig []byte) {
	t.Helper()
	if len(out) < 14+40+8+60 {
		t.Fatalf("Packet Too Big of %d bytes: %x", len(out), out)
	}
	if !bytes.Equal(out[0:6], src.mac) || !bytes.Equal(out[6:12], src.hostMAC) {
		t.Errorf("Ethernet %x, want %s <- %s", out[:12], src.mac, src.hostMAC)
	}
	gw := netip.MustParseAddr("fe80::1")
	ip := out[14:54]
	msg := out[54:]
	if ip[0]>>4 != 6 || ip[6] != 58 || ip[7] != 255 || !bytes.Equal(ip[8:24], gw.AsSlice()) || !bytes.Equal(ip[24:40], src.ip6.AsSlice()) ||
		int(binary.BigEndian.Uint16(ip[4:6])) != len(msg) {
		t.Errorf("IPv6 header %x: want fe80::1 -> %s, ICMPv6, hop limit 255, payload %d", ip, src.ip6, len(msg))
	}
	if msg[0] != 2 || msg[1] != 0 || int(binary.BigEndian.Uint32(msg[4:8])) != mtu {
		t.Errorf("ICMPv6 type %d code %d mtu %d, want 2/0 mtu %d", msg[0], msg[1], binary.BigEndian.Uint32(msg[4:8]), mtu)
	}
	if !bytes.Equal(msg[8:], orig[:len(msg)-8]) {
		t.Errorf("quoted %x, want the start of the packet %x", msg[8:], orig[:len(msg)-8])
	}
	if !icmp6ChecksumOK(gw, src.ip6, msg) {
		t.Errorf("ICMPv6 checksum is wrong")
	}
}

// IPv6 routed here directly by another node is delivered to the local
// workload in BPF, after its ingress policy; a source that is a local
// workload's is forged; the rest is the host's.
func TestIPv6UnderlayDirect(t *testing.T) {
	e := newTunnelEnv(t)
	ul, dst := e.tun.ul, e.wl2
	src := e.block6(t, e.tun.nodeA, bpfmap.EncapNone)
	l2 := e.nodeL2(e.tun.nodeA)
	in := bpftest.IPv6UDP(l2, ip6(src, dst.ip6), 40000, 7000, []byte("routed directly"))
	o := e.fromUL(t, in)
	o.want(t, redirect, hit{ul, bpfmap.ReasonDeliverLocal}, hit{dst, bpfmap.ReasonToWorkload})
	want := slices.Clone(in)
	copy(want[0:6], dst.mac)
	copy(want[6:12], dst.hostMAC)
	want[14+7]--
	if !bytes.Equal(o.out, want) {
		t.Errorf("delivered packet:\n got  %x\n want %x", o.out, want)
	}

	e.fromUL(t, bpftest.IPv6UDP(l2, ip6(e.wl1.ip6, dst.ip6), 1, 2, nil)).want(t, shot, hit{ul, bpfmap.ReasonDropUnderlaySpoof})
	e.fromUL(t, bpftest.IPv6UDP(l2, ip6(src, outside6), 1, 2, nil)).want(t, ok, hit{ul, bpfmap.ReasonPassHost})
	e.fromUL(t, bpftest.IPv6UDP(l2, ip6(src, netip.AddrFrom16(dst.ip4.As16())), 1, 2, nil)).want(t, shot,
		hit{ul, bpfmap.ReasonDropMalformed})
	e.putTestPolicies(t)
	e.setTables(t, dst, tableDeny, 0)
	e.fromUL(t, bpftest.IPv6UDP(l2, ip6(src, dst.ip6), 40001, 7000, nil)).want(t, shot, hit{ul, bpfmap.ReasonDropPolicy})
}

var (
	self6  = netip.MustParseAddr("2001:db8:a41:ff::10")
	nodeA6 = netip.MustParseAddr("2001:db8:a41:ff::20")
	nodeB6 = netip.MustParseAddr("2001:db8:a41:ff::21") // no neighbour entry
)

// underlay6 gives the tunnel env an IPv6 underlay: self6 on the underlay,
// nodeA6 (at nodeA's MAC) and nodeB6 as nodes, and cx_config's address.
func (e *env) underlay6(tb testing.TB) {
	tb.Helper()
	ns := e.ns
	must(tb, ns.Sysctl("net.ipv6.conf.all.forwarding", "1"))
	must(tb, ns.Sysctl("net.ipv6.conf.ulh.accept_dad", "0"))
	must(tb, ns.AddAddr("ulh", netip.PrefixFrom(self6, 64)))
	must(tb, ns.AddNeigh("ulh", nodeA6, e.tun.nodeA.l2))
	for _, n := range []netip.Addr{nodeA6, nodeB6} {
		must(tb, e.dp.Maps.Routes.Put(netip.PrefixFrom(n, 128), bpfmap.Route{Type: bpfmap.RouteNode}))
	}
	cfg := e.tun.cfg
	cfg.Address6 = self6
	e.tun.cfg = cfg
	must(tb, e.dp.Maps.Config.Put(0, cfg))
}

// block6u is block6 for a node reached over the IPv6 underlay at node.
func (e *env) block6u(tb testing.TB, node netip.Addr, encap bpfmap.Encap) netip.Addr {
	tb.Helper()
	b := [16]byte{0: 0xfd, 3: 0x67, 5: byte(encap), 7: node.As16()[15]}
	must(tb, e.dp.Maps.Routes.Put(netip.PrefixFrom(netip.AddrFrom16(b), 122),
		bpfmap.Route{Type: bpfmap.RouteRemoteWorkload, Encap: encap, NextHop: node}))
	b[15] = 5
	return netip.AddrFrom16(b)
}

// Over the IPv6 underlay: IPv6 in IPv6 (next header 41), VXLAN over UDP/
// IPv6 (checksum zero), or routed directly; the outer header this node's
// IPv6 address to the node's, the inner packet as sent but for its hop
// limit. A node whose MAC is unknown is reached through the neighbour
// table.
func TestIPv6UnderlayEncap(t *testing.T) {
	e := newTunnelEnv(t)
	e.underlay6(t)
	src := e.wl1
	for _, enc := range []struct {
		name   string
		encap  bpfmap.Encap
		reason bpfmap.Reason
		room   int
		next   uint8
	}{
		{"ip6ip6", bpfmap.EncapIPIP, bpfmap.ReasonEncapIPIP, 40, 41},
		{"vxlan6", bpfmap.EncapVXLAN, bpfmap.ReasonEncapVXLAN, 70, 17},
		{"direct", bpfmap.EncapNone, bpfmap.ReasonForwardDirect, 0, 17},
	} {
		t.Run(enc.name, func(t *testing.T) {
			dst := e.block6u(t, nodeA6, enc.encap)
			in := bpftest.IPv6UDP(src.l2(), ip6(src.ip6, dst), 40000, 7000, []byte("over the IPv6 underlay"))
			o := e.fromWL(t, src, in)
			o.want(t, redirect, hit{src, enc.reason})
			out := o.out
			if len(out) != len(in)+enc.room {
				t.Fatalf("%d bytes in, %d out, want %d more", len(in), len(out), enc.room)
			}
			if !bytes.Equal(out[0:6], e.tun.nodeA.l2) || !bytes.Equal(out[6:12], e.tun.ul.hostMAC) ||
				binary.BigEndian.Uint16(out[12:14]) != 0x86dd {
				t.Errorf("Ethernet %x, want %s <- %s, IPv6", out[:14], e.tun.nodeA.l2, e.tun.ul.hostMAC)
			}
			wantInner := slices.Clone(in[14:])
			wantInner[7]--
			inner := out[14+enc.room:]
			if enc.encap == bpfmap.EncapVXLAN {
				inner = out[14+enc.room-14+14:]
				if !bytes.Equal(out[14+56:14+70], in[:14]) {
					t.Errorf("inner Ethernet %x, want the original %x", out[70:84], in[:14])
				}
			}
			if !bytes.Equal(inner, wantInner) {
				t.Errorf("inner packet:\n got  %x\n want %x", inner, wantInner)
			}
			if enc.room == 0 {
				return
			}
			outer := out[14:54]
			if outer[0]>>4 != 6 || outer[6] != enc.next || outer[7] != 64 || !bytes.Equal(outer[8:24], self6.AsSlice()) ||
				!bytes.Equal(outer[24:40], nodeA6.AsSlice()) || int(binary.BigEndian.Uint16(outer[4:6])) != len(out)-54 {
				t.Errorf("outer IPv6 %x: want %s -> %s, next header %d, hop limit 64, payload %d", outer, self6, nodeA6, enc.next, len(out)-54)
			}
			if enc.encap == bpfmap.EncapVXLAN {
				udp := out[54:62]
				if binary.BigEndian.Uint16(udp[2:4]) != testVXLANPort || int(binary.BigEndian.Uint16(udp[4:6])) != len(out)-54 ||
					binary.BigEndian.Uint16(udp[6:8]) != 0 {
					t.Errorf("UDP %x: want port %d, length %d, checksum 0", udp, testVXLANPort, len(out)-54)
				}
				if want := binary.BigEndian.AppendUint32([]byte{0x08, 0, 0, 0}, testVNI<<8); !bytes.Equal(out[62:70], want) {
					t.Errorf("VXLAN header %x, want %x", out[62:70], want)
				}
			}
		})
	}
	t.Run("node without a neighbour entry", func(t *testing.T) {
		dst := e.block6u(t, nodeB6, bpfmap.EncapVXLAN)
		in := bpftest.IPv6UDP(src.l2(), ip6(src.ip6, dst), 40000, 7000, nil)
		e.fromWL(t, src, in).want(t, redirect, hit{src, bpfmap.ReasonEncapVXLAN})
	})
	t.Run("too big for the IPv6 tunnel", func(t *testing.T) {
		dst := e.block6u(t, nodeA6, bpfmap.EncapVXLAN)
		mtu := underlayMTU - 70
		big := bpftest.IPv6UDP(src.l2(), ip6(src.ip6, dst), 40000, 7000, make([]byte, mtu+1-48))
		o := e.fromWL(t, src, big)
		o.want(t, redirect, hit{src, bpfmap.ReasonICMPFragNeeded})
		checkPacketTooBig(t, o.out, src, mtu, big[14:])
	})
}

// From the IPv6 underlay: IPv6 in IPv6 and VXLAN over IPv6 from a node to
// this node's IPv6 address are decapsulated and delivered; from an address
// that is no node, with a source the node may not send, with another VNI
// or an IPv4 inner frame, they are dropped.
func TestIPv6UnderlayDecap(t *testing.T) {
	e := newTunnelEnv(t)
	e.underlay6(t)
	ul, dst := e.tun.ul, e.wl2
	l2 := bpftest.L2{Src: mac(0x99, 0x01), Dst: mac(0x99, 0xee)}
	frame := func(from netip.Addr, encap bpfmap.Encap, vni uint32, inner []byte) []byte {
		outer := bpftest.IPv6{Src: from, Dst: self6}
		if encap == bpfmap.EncapIPIP {
			return bpftest.IP6in6(e.nodeL2(e.tun.nodeA), outer, inner[14:])
		}
		return bpftest.VXLAN6(e.nodeL2(e.tun.nodeA), outer, 51234, testVXLANPort, vni, inner)
	}
	for _, enc := range encaps {
		t.Run(enc.name, func(t *testing.T) {
			src := e.block6u(t, nodeA6, enc.encap)
			inner := bpftest.IPv6UDP(l2, ip6(src, dst.ip6), 40000, 7000, []byte("from the IPv6 underlay"))
			in := frame(nodeA6, enc.encap, testVNI, inner)
			o := e.fromUL(t, in)
			want := slices.Concat(in[:14], inner[14:])
			copy(want[0:6], dst.mac)
			copy(want[6:12], dst.hostMAC)
			want[14+7]--
			o.wantSized(t, redirect, sizedHit{ul, enc.decap, len(in)}, sizedHit{dst, bpfmap.ReasonToWorkload, len(want)})
			if !bytes.Equal(o.out, want) {
				t.Errorf("delivered packet:\n got  %x\n want %x", o.out, want)
			}
			e.fromUL(t, frame(netip.MustParseAddr("2001:db8:a41:ff::99"), enc.encap, testVNI, inner)).want(t, shot,
				hit{ul, bpfmap.ReasonDropTunnelSrc})
			other := bpftest.IPv6UDP(l2, ip6(e.block6u(t, nodeB6, enc.encap), dst.ip6), 1, 2, nil)
			e.fromUL(t, frame(nodeA6, enc.encap, testVNI, other)).want(t, shot, hit{ul, bpfmap.ReasonDropTunnelInnerSrc})
			if enc.encap == bpfmap.EncapVXLAN {
				e.fromUL(t, frame(nodeA6, enc.encap, testVNI+1, inner)).want(t, shot, hit{ul, bpfmap.ReasonDropTunnelVNI})
				v4 := udp4(dst, e.block(t, e.tun.nodeA, enc.encap), dst.ip4, 64)
				e.fromUL(t, frame(nodeA6, enc.encap, testVNI, v4)).want(t, shot, hit{ul, bpfmap.ReasonDropUnsupported})
			}
		})
	}
	// The host's own traffic to its IPv6 address is its own.
	host := bpftest.IPv6UDP(e.nodeL2(e.tun.nodeA), ip6(nodeA6, self6), 40000, 22, nil)
	e.fromUL(t, host).want(t, ok, hit{ul, bpfmap.ReasonPassHost})
}
