package bpf_test

// Layer 2 tests of the overlay through BPF_PROG_TEST_RUN: calyx_from_wl
// sending to remote workloads (IP-in-IP, VXLAN, direct routing, the MTU),
// calyx_from_underlay (decapsulation, direct delivery) and
// calyx_to_underlay (the host's own traffic). The FIB the programs ask is
// the fixture namespace's own: newTunnelEnv in env_test.go.
//
// Every test runs each packet once: a repeated run reuses the skb, and an
// encapsulated packet would be encapsulated again (or dropped as a spoof).

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/calyxnet/calyx/bpf/bpftest"
	"github.com/calyxnet/calyx/bpfmap"
)

// cxMarkRouted is CX_MARK_ROUTED (delivery.h): skb->mark of a packet a calyx
// program routed to an underlay interface.
const cxMarkRouted = 0x0ca10000

var encaps = []struct {
	name  string
	encap bpfmap.Encap
	// reason is what the sending interface counts.
	reason bpfmap.Reason
	// decap is what the receiving underlay counts for a delivered packet.
	decap bpfmap.Reason
}{
	{"ipip", bpfmap.EncapIPIP, bpfmap.ReasonEncapIPIP, bpfmap.ReasonDecapIPIP},
	{"vxlan", bpfmap.EncapVXLAN, bpfmap.ReasonEncapVXLAN, bpfmap.ReasonDecapVXLAN},
}

// udpSized is a UDP datagram from ep whose IPv4 packet is ipLen bytes.
func udpSized(ep *endpoint, ip bpftest.IPv4, ipLen int) []byte {
	return bpftest.IPv4UDP(ep.l2(), ip, 40000, 53, bytes.Repeat([]byte{0xa5}, ipLen-28))
}

// withOptions inserts 4 bytes of IPv4 options (NOPs) into an
// Ethernet/IPv4 frame: ihl 6.
func withOptions(frame []byte) []byte {
	out := slices.Concat(frame[:34], []byte{1, 1, 1, 0}, frame[34:])
	out[14] = 0x46
	binary.BigEndian.PutUint16(out[16:], binary.BigEndian.Uint16(frame[16:])+4)
	fixIPv4Checksum(out[14:])
	return out
}

// csumOK reports whether b sums to 0xffff (RFC 1071): its checksum is right.
func csumOK(b []byte) bool {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return sum == 0xffff
}

// checkEncap asserts that o.out is o.in, an Ethernet/IPv4 frame,
// encapsulated for node as encap says: the outer headers field by field
// (gopacket parses them), the inner packet byte for byte (TTL one less when
// forwarded for a workload, with its checksum fixed), and the Ethernet
// addresses the FIB gave (left alone for redirect_neigh when the neighbour
// is unknown).
func checkEncap(t *testing.T, e *env, o outcome, node *remoteNode, encap bpfmap.Encap, forwarded bool) {
	t.Helper()
	room := encap.Overhead()
	out := o.out
	if len(out) != len(o.in)+room {
		t.Fatalf("%d bytes in, %d out, want %d more (%s)", len(o.in), len(out), room, encap)
	}
	wantEth := slices.Clone(o.in[:14])
	if node.l2 != nil {
		copy(wantEth[0:6], node.l2)
		copy(wantEth[6:12], e.tun.ul.hostMAC)
	}
	if !bytes.Equal(out[:14], wantEth) {
		t.Errorf("outer Ethernet %x, want %x", out[:14], wantEth)
	}
	inner := slices.Clone(o.in[14:])
	if forwarded {
		inner[8]--
		fixIPv4Checksum(inner)
	}
	var innerFrame []byte
	switch encap {
	case bpfmap.EncapIPIP:
		innerFrame = slices.Concat(out[:14], out[34:])
	case bpfmap.EncapVXLAN:
		innerFrame = out[14+36:]
		if !bytes.Equal(innerFrame[:14], o.in[:14]) {
			t.Errorf("inner Ethernet %x, want the original %x", innerFrame[:14], o.in[:14])
		}
	}
	if !bytes.Equal(innerFrame[14:], inner) {
		t.Errorf("inner packet:\n got  %x\n want %x", innerFrame[14:], inner)
	}

	pkt := bpftest.Decode(out)
	ip, _ := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	if ip == nil {
		t.Fatalf("no outer IPv4: %v", pkt)
	}
	wantProto := layers.IPProtocolIPv4
	if encap == bpfmap.EncapVXLAN {
		wantProto = layers.IPProtocolUDP
	}
	if ip.Version != 4 || ip.IHL != 5 || ip.TOS != o.in[15] || int(ip.Length) != len(out)-14 || ip.Id != 0 ||
		ip.Flags != layers.IPv4DontFragment || ip.FragOffset != 0 || ip.TTL != 64 || ip.Protocol != wantProto {
		t.Errorf("outer IPv4 v%d ihl %d tos %#x len %d id %d flags %v frag %d ttl %d proto %v; want v4 ihl 5 tos %#x len %d id 0 DF frag 0 ttl 64 proto %v",
			ip.Version, ip.IHL, ip.TOS, ip.Length, ip.Id, ip.Flags, ip.FragOffset, ip.TTL, ip.Protocol,
			o.in[15], len(out)-14, wantProto)
	}
	if !ip.SrcIP.Equal(hostAddr.AsSlice()) || !ip.DstIP.Equal(node.addr.AsSlice()) {
		t.Errorf("outer %v -> %v, want %s -> %s", ip.SrcIP, ip.DstIP, hostAddr, node.addr)
	}
	if !bpftest.IPv4HeaderChecksumOK(out[14:]) {
		t.Errorf("outer IPv4 header checksum %#04x is wrong", ip.Checksum)
	}
	if encap == bpfmap.EncapVXLAN {
		udp, _ := pkt.Layer(layers.LayerTypeUDP).(*layers.UDP)
		vx, _ := pkt.Layer(layers.LayerTypeVXLAN).(*layers.VXLAN)
		if udp == nil || vx == nil {
			t.Fatalf("no UDP/VXLAN: %v", pkt)
		}
		if udp.SrcPort < 32768 || udp.SrcPort >= 61000 || udp.DstPort != testVXLANPort ||
			int(udp.Length) != len(out)-34 || udp.Checksum != 0 {
			t.Errorf("UDP %d -> %d len %d csum %#04x; want 32768..60999 -> %d len %d csum 0",
				udp.SrcPort, udp.DstPort, udp.Length, udp.Checksum, testVXLANPort, len(out)-34)
		}
		if !vx.ValidIDFlag || vx.VNI != testVNI || vx.GBPExtension || vx.GBPGroupPolicyID != 0 {
			t.Errorf("VXLAN %+v, want I flag and VNI %#x", vx, testVNI)
		}
		wantVX := binary.BigEndian.AppendUint32([]byte{0x08, 0, 0, 0}, testVNI<<8)
		if !bytes.Equal(out[42:50], wantVX) {
			t.Errorf("VXLAN header %x, want %x", out[42:50], wantVX)
		}
	} else if ips := ipv4Layers(pkt); len(ips) != 2 {
		t.Errorf("gopacket sees %d IPv4 layers, want outer and inner", len(ips))
	}
	verifyIPv4(t, innerFrame, inner[8])
}

func ipv4Layers(pkt gopacket.Packet) []*layers.IPv4 {
	var out []*layers.IPv4
	for _, l := range pkt.Layers() {
		if ip, ok := l.(*layers.IPv4); ok {
			out = append(out, ip)
		}
	}
	return out
}

// checkFragNeeded asserts that o.out is the ICMP "fragmentation needed"
// for o.in: from src to o.in's source, advertising mtu, quoting o.in's IP
// header as it came and 20 bytes after it, with valid checksums and the
// Ethernet addresses swapped.
func checkFragNeeded(t *testing.T, o outcome, src netip.Addr, mtu int) {
	t.Helper()
	out := o.out
	if len(out) != 14+20+8+40 {
		t.Fatalf("ICMP frame of %d bytes, want 82: %x", len(out), out)
	}
	if !bytes.Equal(out[0:6], o.in[6:12]) || !bytes.Equal(out[6:12], o.in[0:6]) || out[12] != 0x08 || out[13] != 0 {
		t.Errorf("Ethernet %x, want the input's swapped (%x)", out[:14], o.in[:14])
	}
	pkt := bpftest.Decode(out)
	ip, _ := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	icmp, _ := pkt.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
	if ip == nil || icmp == nil {
		t.Fatalf("not IPv4/ICMP: %v", pkt)
	}
	if ip.IHL != 5 || ip.TOS != 0xc0 || ip.Length != 68 || ip.Flags != 0 || ip.FragOffset != 0 || ip.TTL != 64 ||
		ip.Protocol != layers.IPProtocolICMPv4 {
		t.Errorf("IPv4 ihl %d tos %#x len %d flags %v frag %d ttl %d proto %v; want 5 0xc0 68 0 0 64 ICMPv4",
			ip.IHL, ip.TOS, ip.Length, ip.Flags, ip.FragOffset, ip.TTL, ip.Protocol)
	}
	if !ip.SrcIP.Equal(src.AsSlice()) || !ip.DstIP.Equal(net.IP(o.in[26:30])) {
		t.Errorf("ICMP %v -> %v, want %s -> %v", ip.SrcIP, ip.DstIP, src, net.IP(o.in[26:30]))
	}
	if !bpftest.IPv4HeaderChecksumOK(out[14:]) {
		t.Errorf("IPv4 header checksum %#04x is wrong", ip.Checksum)
	}
	if icmp.TypeCode != layers.CreateICMPv4TypeCode(layers.ICMPv4TypeDestinationUnreachable, layers.ICMPv4CodeFragmentationNeeded) {
		t.Errorf("ICMP %v, want destination unreachable / fragmentation needed", icmp.TypeCode)
	}
	if icmp.Id != 0 || int(icmp.Seq) != mtu { // unused, next-hop MTU (RFC 1191)
		t.Errorf("ICMP unused %d, next-hop MTU %d; want 0, %d", icmp.Id, icmp.Seq, mtu)
	}
	if !csumOK(out[34:]) {
		t.Errorf("ICMP checksum %#04x is wrong", icmp.Checksum)
	}
	c := *icmp
	buf := gopacket.NewSerializeBuffer()
	must(t, gopacket.SerializeLayers(buf, gopacket.SerializeOptions{ComputeChecksums: true}, &c, gopacket.Payload(c.Payload)))
	if got := binary.BigEndian.Uint16(buf.Bytes()[2:]); got != icmp.Checksum {
		t.Errorf("ICMP checksum %#04x, gopacket computes %#04x", icmp.Checksum, got)
	}
	if !bytes.Equal(icmp.Payload, o.in[14:54]) {
		t.Errorf("ICMP quotes %x, want the original header and 20 bytes %x", icmp.Payload, o.in[14:54])
	}
}

// 1. A workload's packet to a remote workload is encapsulated as the
// route says, with the MACs from the FIB, and redirected to the underlay
// marked as routed.
func TestTunnelEncapFromWorkload(t *testing.T) {
	e := newTunnelEnv(t)
	w := e.wl1
	for _, enc := range encaps {
		for _, node := range []*remoteNode{e.tun.nodeA, e.tun.nodeC} {
			dst := e.block(t, node, enc.encap)
			cases := ipv4Protocols(w.l2(), bpftest.IPv4{Src: w.ip4, Dst: dst})
			cases["udp, tos 0xb8"] = bpftest.IPv4UDP(w.l2(), bpftest.IPv4{Src: w.ip4, Dst: dst, TOS: 0xb8}, 1, 2, []byte("ef"))
			cases["udp, ttl 2"] = udp4(w, w.ip4, dst, 2)
			cases["udp, no DF"] = bpftest.IPv4UDP(w.l2(), bpftest.IPv4{Src: w.ip4, Dst: dst, NoDF: true}, 1, 2, []byte("x"))
			cases["udp, ip options"] = withOptions(udp4(w, w.ip4, dst, 64))
			cases["udp, 1400 bytes"] = udpSized(w, bpftest.IPv4{Src: w.ip4, Dst: dst}, 1400)
			for name, in := range cases {
				t.Run(fmt.Sprintf("%s/%s/%s", enc.name, node.name, name), func(t *testing.T) {
					o := e.fromWL(t, w, in)
					o.want(t, redirect, hit{w, enc.reason})
					checkEncap(t, e, o, node, enc.encap, true)
					if o.ctx.Mark != cxMarkRouted {
						t.Errorf("skb->mark %#x, want %#x", o.ctx.Mark, cxMarkRouted)
					}
				})
			}
		}
	}
}

// 2. The VXLAN source port comes from the inner flow's hash: one flow
// keeps its port, different flows spread over 32768..60999.
func TestTunnelVXLANSourcePort(t *testing.T) {
	e := newTunnelEnv(t)
	w := e.wl1
	dst := e.block(t, e.tun.nodeA, bpfmap.EncapVXLAN)
	ports := map[uint16]bool{}
	const flows = 64
	for i := range flows {
		in := bpftest.IPv4UDP(w.l2(), bpftest.IPv4{Src: w.ip4, Dst: dst}, uint16(20000+i), 53, []byte("flow"))
		var first uint16
		for run := range 2 {
			o := e.fromWL(t, w, in)
			o.want(t, redirect, hit{w, bpfmap.ReasonEncapVXLAN})
			checkEncap(t, e, o, e.tun.nodeA, bpfmap.EncapVXLAN, true)
			port := binary.BigEndian.Uint16(o.out[34:])
			if run == 0 {
				first = port
			} else if port != first {
				t.Errorf("flow %d: source port %d, then %d", i, first, port)
			}
		}
		ports[first] = true
	}
	if len(ports) < flows*3/4 {
		t.Errorf("%d flows got only %d distinct source ports", flows, len(ports))
	}
}

// 3. Direct routing (no encapsulation): the packet is only routed, TTL one
// less, MACs from the FIB.
func TestTunnelDirect(t *testing.T) {
	e := newTunnelEnv(t)
	w := e.wl1
	for _, node := range []*remoteNode{e.tun.nodeA, e.tun.nodeC, e.tun.nodeB} {
		dst := e.block(t, node, bpfmap.EncapNone)
		for proto, in := range ipv4Protocols(w.l2(), bpftest.IPv4{Src: w.ip4, Dst: dst}) {
			t.Run(node.name+"/"+proto, func(t *testing.T) {
				o := e.fromWL(t, w, in)
				o.want(t, redirect, hit{w, bpfmap.ReasonForwardDirect})
				want := slices.Clone(o.in)
				want[14+8]--
				fixIPv4Checksum(want[14:])
				if node.l2 != nil {
					copy(want[0:6], node.l2)
					copy(want[6:12], e.tun.ul.hostMAC)
				}
				if !bytes.Equal(o.out, want) {
					t.Errorf("routed packet:\n got  %x\n want %x", o.out, want)
				}
				verifyIPv4(t, o.out, o.in[14+8]-1)
				if o.ctx.Mark != cxMarkRouted {
					t.Errorf("skb->mark %#x, want %#x", o.ctx.Mark, cxMarkRouted)
				}
			})
		}
	}
}

// 4. The neighbour of the node is not known yet: the packet is still
// encapsulated and goes out through bpf_redirect_neigh, which resolves it.
func TestTunnelNoNeighbour(t *testing.T) {
	e := newTunnelEnv(t)
	w := e.wl1
	for _, enc := range encaps {
		t.Run(enc.name, func(t *testing.T) {
			o := e.fromWL(t, w, udp4(w, w.ip4, e.block(t, e.tun.nodeB, enc.encap), 64))
			o.want(t, redirect, hit{w, enc.reason})
			checkEncap(t, e, o, e.tun.nodeB, enc.encap, true)
			if o.ctx.Mark != cxMarkRouted {
				t.Errorf("skb->mark %#x, want %#x", o.ctx.Mark, cxMarkRouted)
			}
		})
	}
}

// 5. The underlay has no route to the node: dropped, untouched.
func TestTunnelDropFIB(t *testing.T) {
	e := newTunnelEnv(t)
	w := e.wl1
	for _, encap := range []bpfmap.Encap{bpfmap.EncapIPIP, bpfmap.EncapVXLAN, bpfmap.EncapNone} {
		dst := e.block(t, e.tun.nodeX, encap)
		t.Run("from a workload/"+encap.String(), func(t *testing.T) {
			o := e.fromWL(t, w, udp4(w, w.ip4, dst, 64))
			o.want(t, shot, hit{w, bpfmap.ReasonDropFIB})
			o.unchanged(t)
		})
		t.Run("from the host/"+encap.String(), func(t *testing.T) {
			o := e.runOn(t, e.ulEgress, e.tun.ul.ifindex, bpftest.IPv4UDP(e.hostL2(), bpftest.IPv4{Src: hostAddr, Dst: dst}, 1, 2, nil))
			o.want(t, shot, hit{e.tun.ul, bpfmap.ReasonDropFIB})
			o.unchanged(t)
		})
	}
}

// 6. A workload's packet whose TTL runs out here goes to the host stack
// (which sends the time-exceeded), before anything else is looked at.
func TestTunnelTTLExpiring(t *testing.T) {
	e := newTunnelEnv(t)
	w := e.wl1
	for _, encap := range []bpfmap.Encap{bpfmap.EncapIPIP, bpfmap.EncapVXLAN, bpfmap.EncapNone} {
		for _, node := range []*remoteNode{e.tun.nodeA, e.tun.nodeX} {
			dst := e.block(t, node, encap)
			for _, ttl := range []uint8{1, 0} {
				for _, size := range []int{64, 3000} {
					in := udpSized(w, bpftest.IPv4{Src: w.ip4, Dst: dst, TTL: ttl}, size)
					if ttl == 0 {
						in[14+8] = 0
						fixIPv4Checksum(in[14:])
					}
					t.Run(fmt.Sprintf("%s/%s/ttl %d/%d bytes", encap, node.name, ttl, size), func(t *testing.T) {
						o := e.fromWL(t, w, in)
						o.want(t, ok, hit{w, bpfmap.ReasonPassHost})
						o.unchanged(t)
					})
				}
			}
		}
	}
}

// 7. Too big for the underlay once encapsulated: a DF packet gets an ICMP
// "fragmentation needed" built in BPF, sent back to the workload; one
// without DF (no fragmentation here) or with IP options (no room in the
// ICMP) is dropped. A packet that fits exactly is sent.
func TestTunnelMTU(t *testing.T) {
	e := newTunnelEnv(t)
	w := e.wl1
	for _, tc := range []struct {
		encap bpfmap.Encap
		ok    bpfmap.Reason
	}{{bpfmap.EncapIPIP, bpfmap.ReasonEncapIPIP}, {bpfmap.EncapVXLAN, bpfmap.ReasonEncapVXLAN}, {bpfmap.EncapNone, bpfmap.ReasonForwardDirect}} {
		dst := e.block(t, e.tun.nodeA, tc.encap)
		fit := underlayMTU - tc.encap.Overhead()
		ip := bpftest.IPv4{Src: w.ip4, Dst: dst}
		noDF := ip
		noDF.NoDF = true
		name := tc.encap.String()
		t.Run(name+"/fits exactly", func(t *testing.T) {
			o := e.fromWL(t, w, udpSized(w, ip, fit))
			o.want(t, redirect, hit{w, tc.ok})
			if len(o.out)-14 != underlayMTU {
				t.Errorf("%d bytes of IP on the underlay, want %d", len(o.out)-14, underlayMTU)
			}
		})
		// 3000: bigger than the underlay device takes, which the FIB
		// lookup itself reports (FRAG_NEEDED): still an ICMP.
		for _, size := range []int{fit + 1, fit + 100, 3000} {
			t.Run(fmt.Sprintf("%s/DF, %d bytes", name, size), func(t *testing.T) {
				o := e.fromWL(t, w, udpSized(w, ip, size))
				o.want(t, redirect, hit{w, bpfmap.ReasonICMPFragNeeded})
				checkFragNeeded(t, o, hostAddr, fit)
				if o.ctx.Mark != 0 {
					t.Errorf("skb->mark %#x on the ICMP, want 0", o.ctx.Mark)
				}
			})
			t.Run(fmt.Sprintf("%s/no DF, %d bytes", name, size), func(t *testing.T) {
				o := e.fromWL(t, w, udpSized(w, noDF, size))
				o.want(t, shot, hit{w, bpfmap.ReasonDropTooBig})
				o.unchanged(t)
			})
			t.Run(fmt.Sprintf("%s/DF with IP options, %d bytes", name, size), func(t *testing.T) {
				o := e.fromWL(t, w, withOptions(udpSized(w, ip, size-4)))
				o.want(t, shot, hit{w, bpfmap.ReasonDropTooBig})
				o.unchanged(t)
			})
		}
		t.Run(name+"/tcp and icmp are quoted too", func(t *testing.T) {
			tcp := bpftest.IPv4TCP(w.l2(), ip, 40000, 443)
			big := slices.Concat(tcp, make([]byte, fit+1-(len(tcp)-14)))
			binary.BigEndian.PutUint16(big[16:], uint16(fit+1))
			fixIPv4Checksum(big[14:])
			o := e.fromWL(t, w, big)
			o.want(t, redirect, hit{w, bpfmap.ReasonICMPFragNeeded})
			checkFragNeeded(t, o, hostAddr, fit)
		})
	}
	t.Run("an underlay MTU below the device's", func(t *testing.T) {
		cfg := e.tun.cfg
		cfg.UnderlayMTU = 1400
		must(t, e.dp.Maps.Config.Put(0, cfg))
		t.Cleanup(func() { _ = e.dp.Maps.Config.Put(0, e.tun.cfg) })
		dst := e.block(t, e.tun.nodeA, bpfmap.EncapVXLAN)
		ip := bpftest.IPv4{Src: w.ip4, Dst: dst}
		o := e.fromWL(t, w, udpSized(w, ip, 1350))
		o.want(t, redirect, hit{w, bpfmap.ReasonEncapVXLAN})
		o = e.fromWL(t, w, udpSized(w, ip, 1351))
		o.want(t, redirect, hit{w, bpfmap.ReasonICMPFragNeeded})
		checkFragNeeded(t, o, hostAddr, 1350)
	})
}

// 8. GSO packets are never answered with ICMP (their segments are resized
// instead). The test run can make an skb GSO (gso_size) but cannot give it
// a GSO type, and bpf_skb_adjust_room refuses to resize a GSO skb that is
// neither TCP nor UDP-L4: drop-helper, the path any packet takes that the
// helper refuses (also an skb encapsulated before: -EALREADY).
func TestTunnelGSO(t *testing.T) {
	e := newTunnelEnv(t)
	w := e.wl1
	for _, enc := range encaps {
		dst := e.block(t, e.tun.nodeA, enc.encap)
		for _, size := range []int{1000, 3000} {
			t.Run(fmt.Sprintf("%s/%d bytes", enc.name, size), func(t *testing.T) {
				in := udpSized(w, bpftest.IPv4{Src: w.ip4, Dst: dst}, size)
				o := e.runIn(t, e.from, bpftest.Input{Data: in, Ifindex: w.ifindex, GSOSize: 1400})
				o.want(t, shot, hit{w, bpfmap.ReasonDropHelper})
			})
		}
	}
	t.Run("direct: nothing to resize", func(t *testing.T) {
		in := udpSized(w, bpftest.IPv4{Src: w.ip4, Dst: e.block(t, e.tun.nodeA, bpfmap.EncapNone)}, 3000)
		o := e.runIn(t, e.from, bpftest.Input{Data: in, Ifindex: w.ifindex, GSOSize: 1400})
		o.want(t, redirect, hit{w, bpfmap.ReasonForwardDirect})
	})
	t.Run("decap", func(t *testing.T) {
		for _, enc := range encaps {
			in := tunnelFrame(e, e.tun.nodeA, hostAddr, enc.encap,
				udp4(e.wl2, e.block(t, e.tun.nodeA, enc.encap), e.wl2.ip4, 64))
			o := e.runIn(t, e.ulIngress, bpftest.Input{Data: in, Ifindex: e.tun.ul.ifindex, GSOSize: 1400})
			o.want(t, shot, hit{e.tun.ul, bpfmap.ReasonDropHelper})
			o.unchanged(t)
		}
	})
}

// tunnelFrame wraps inner, an Ethernet/IPv4 frame, as node sends it to
// outerDst: IP-in-IP carries its IP packet, VXLAN the whole frame.
func tunnelFrame(e *env, node *remoteNode, outerDst netip.Addr, encap bpfmap.Encap, inner []byte) []byte {
	outer := bpftest.IPv4{Src: node.addr, Dst: outerDst}
	if encap == bpfmap.EncapIPIP {
		return bpftest.IPIP(e.nodeL2(node), outer, inner[14:])
	}
	return bpftest.VXLAN(e.nodeL2(node), outer, 51234, testVXLANPort, testVNI, inner)
}

// innerOf is the inner frame of a tunnel frame a remote workload src sends
// to dst (its Ethernet header is the remote host's).
func innerOf(src, dst netip.Addr, ttl uint8) map[string][]byte {
	l2 := bpftest.L2{Src: mac(0x99, 0x01), Dst: mac(0x99, 0xee)}
	m := ipv4Protocols(l2, bpftest.IPv4{Src: src, Dst: dst, TTL: ttl})
	m["udp, 1450 bytes"] = bpftest.IPv4UDP(l2, bpftest.IPv4{Src: src, Dst: dst, TTL: ttl}, 1, 2, bytes.Repeat([]byte{7}, 1450-28))
	return m
}

// 9. Tunnel packets from a node to this node are decapsulated and the
// inner packet delivered to the local workload: byte for byte as the
// remote workload sent it, but for its TTL (and checksum) and the MACs.
// The underlay counts decap-* with the frame it got, the destination
// to-workload with what enters it.
func TestUnderlayDecap(t *testing.T) {
	e := newTunnelEnv(t)
	ul := e.tun.ul
	for _, enc := range encaps {
		src := e.block(t, e.tun.nodeA, enc.encap)
		for _, dst := range []*endpoint{e.wl2, e.wl3} {
			for proto, inner := range innerOf(src, dst.ip4, 64) {
				t.Run(enc.name+"/"+dst.name+"/"+proto, func(t *testing.T) {
					in := tunnelFrame(e, e.tun.nodeA, hostAddr, enc.encap, inner)
					o := e.fromUL(t, in)
					want := slices.Concat(in[:14], inner[14:])
					want[14+8]--
					fixIPv4Checksum(want[14:])
					if dst == e.wl2 {
						o.wantSized(t, redirect, sizedHit{ul, enc.decap, len(in)}, sizedHit{dst, bpfmap.ReasonToWorkload, len(want)})
						copy(want[0:6], dst.mac)
						copy(want[6:12], dst.hostMAC)
					} else {
						// No MAC: redirect_neigh, and the egress hook counts to-workload.
						o.wantSized(t, redirect, sizedHit{ul, enc.decap, len(in)})
						e.toWL(t, dst, o.out).want(t, ok, hit{dst, bpfmap.ReasonToWorkload})
					}
					if !bytes.Equal(o.out, want) {
						t.Errorf("delivered packet:\n got  %x\n want %x", o.out, want)
					}
					verifyIPv4(t, o.out, inner[14+8]-1)
				})
			}
		}
		t.Run(enc.name+"/from a node behind a router", func(t *testing.T) {
			inner := udp4(e.wl2, e.block(t, e.tun.nodeC, enc.encap), e.wl2.ip4, 64)
			in := tunnelFrame(e, e.tun.nodeC, hostAddr, enc.encap, inner)
			o := e.fromUL(t, in)
			o.wantSized(t, redirect, sizedHit{ul, enc.decap, len(in)}, sizedHit{e.wl2, bpfmap.ReasonToWorkload, len(inner)})
		})
	}
	t.Run("vxlan/reserved bits set are ignored (RFC 7348)", func(t *testing.T) {
		inner := udp4(e.wl2, e.block(t, e.tun.nodeA, bpfmap.EncapVXLAN), e.wl2.ip4, 64)
		in := tunnelFrame(e, e.tun.nodeA, hostAddr, bpfmap.EncapVXLAN, inner)
		in[42] |= 0x80 // G flag
		in[43] = 0x40
		in[49] = 0xff // the byte after the VNI
		o := e.fromUL(t, in)
		o.wantSized(t, redirect, sizedHit{ul, bpfmap.ReasonDecapVXLAN, len(in)}, sizedHit{e.wl2, bpfmap.ReasonToWorkload, len(inner)})
	})
	t.Run("vxlan/another port", func(t *testing.T) {
		cfg := e.tun.cfg
		cfg.VXLANPort = 8472
		must(t, e.dp.Maps.Config.Put(0, cfg))
		t.Cleanup(func() { _ = e.dp.Maps.Config.Put(0, e.tun.cfg) })
		inner := udp4(e.wl2, e.block(t, e.tun.nodeA, bpfmap.EncapVXLAN), e.wl2.ip4, 64)
		in := bpftest.VXLAN(e.nodeL2(e.tun.nodeA), bpftest.IPv4{Src: e.tun.nodeA.addr, Dst: hostAddr}, 40000, 8472, testVNI, inner)
		o := e.fromUL(t, in)
		o.wantSized(t, redirect, sizedHit{ul, bpfmap.ReasonDecapVXLAN, len(in)}, sizedHit{e.wl2, bpfmap.ReasonToWorkload, len(inner)})
		// ... and 4789 is then just UDP for the host.
		o = e.fromUL(t, tunnelFrame(e, e.tun.nodeA, hostAddr, bpfmap.EncapVXLAN, inner))
		o.want(t, ok, hit{ul, bpfmap.ReasonPassHost})
		o.unchanged(t)
	})
}

// 10. Decapsulated packets for the host itself, or whose TTL runs out
// here, go to the host stack decapsulated.
func TestUnderlayDecapToHost(t *testing.T) {
	e := newTunnelEnv(t)
	ul := e.tun.ul
	for _, enc := range encaps {
		src := e.block(t, e.tun.nodeA, enc.encap)
		for _, tc := range []struct {
			name string
			dst  netip.Addr
			ttl  uint8
		}{{"for the host", hostAddr, 64}, {"for the host, ttl 1", hostAddr, 1}, {"ttl 1 to a workload", e.wl2.ip4, 1}} {
			for proto, inner := range innerOf(src, tc.dst, tc.ttl) {
				t.Run(enc.name+"/"+tc.name+"/"+proto, func(t *testing.T) {
					in := tunnelFrame(e, e.tun.nodeA, hostAddr, enc.encap, inner)
					o := e.fromUL(t, in)
					o.want(t, ok, hit{ul, bpfmap.ReasonPassHost})
					if want := slices.Concat(in[:14], inner[14:]); !bytes.Equal(o.out, want) {
						t.Errorf("packet for the host:\n got  %x\n want %x", o.out, want)
					}
				})
			}
		}
	}
}

// 11. What is encapsulated but not from a node to this node, not in this
// overlay, or for nowhere, is dropped as it came: never passed to a stack
// that might route it.
func TestUnderlayDecapDrops(t *testing.T) {
	e := newTunnelEnv(t)
	ul := e.tun.ul
	nodeA := e.tun.nodeA
	type tc struct {
		name   string
		in     []byte
		reason bpfmap.Reason
	}
	var cases []tc
	for _, enc := range encaps {
		src := e.block(t, nodeA, enc.encap)
		inner := udp4(e.wl2, src, e.wl2.ip4, 64)
		frame := func(n *remoteNode, outerDst netip.Addr, in []byte) []byte {
			return tunnelFrame(e, n, outerDst, enc.encap, in)
		}
		from := func(addr netip.Addr) []byte {
			return frame(&remoteNode{name: "stranger", addr: addr}, hostAddr, inner)
		}
		edit := func(f []byte, fn func(b []byte)) []byte {
			f = slices.Clone(f)
			fn(f)
			return f
		}
		good := frame(nodeA, hostAddr, inner)
		n := enc.name + "/"
		cases = append(cases,
			tc{n + "outer dst another address", frame(nodeA, netip.MustParseAddr("10.30.0.99"), inner), bpfmap.ReasonDropTunnelDst},
			tc{n + "outer dst a local workload", frame(nodeA, e.wl2.ip4, inner), bpfmap.ReasonDropTunnelDst},
			tc{n + "outer dst another node", frame(nodeA, e.tun.nodeB.addr, inner), bpfmap.ReasonDropTunnelDst},
			tc{n + "outer src unknown", from(netip.MustParseAddr("192.0.2.7")), bpfmap.ReasonDropTunnelSrc},
			tc{n + "outer src in this node's subnet, not a node", from(netip.MustParseAddr("10.30.0.99")), bpfmap.ReasonDropTunnelSrc},
			tc{n + "outer src a remote workload", from(src), bpfmap.ReasonDropTunnelSrc},
			// A source of this host's own is forged on the wire, before
			// any tunnel is looked at.
			tc{n + "outer src a local workload", from(e.wl1.ip4), bpfmap.ReasonDropUnderlaySpoof},
			tc{n + "outer src this host", from(hostAddr), bpfmap.ReasonDropUnderlaySpoof},
			tc{n + "inner dst on the internet", frame(nodeA, hostAddr, udp4(e.wl2, src, internet, 64)), bpfmap.ReasonDropNoRoute},
			tc{n + "inner dst a workload on another node", frame(nodeA, hostAddr, udp4(e.wl2, src, e.block(t, e.tun.nodeC, enc.encap), 64)), bpfmap.ReasonDropNoRoute},
			tc{n + "inner dst an unrouted pool address", frame(nodeA, hostAddr, udp4(e.wl2, src, netip.MustParseAddr("10.65.0.99"), 64)), bpfmap.ReasonDropNoRoute},
			tc{n + "inner dst a node", frame(nodeA, hostAddr, udp4(e.wl2, src, e.tun.nodeB.addr, 64)), bpfmap.ReasonDropNoRoute},
			tc{n + "outer ip options", withOptions(good), bpfmap.ReasonDropMalformed},
			tc{n + "outer fragment (MF)", edit(good, func(b []byte) { b[20] |= 0x20; fixIPv4Checksum(b[14:]) }), bpfmap.ReasonDropMalformed},
			tc{n + "outer fragment (offset)", edit(good, func(b []byte) { b[21] = 0x10; fixIPv4Checksum(b[14:]) }), bpfmap.ReasonDropMalformed},
		)
		// The inner packet, cut or broken: malformed, never decapsulated.
		off := 14 + 20 // IP-in-IP: the inner IPv4 header
		if enc.encap == bpfmap.EncapVXLAN {
			off = 14 + 50
		}
		innerLen := func(f []byte, n int) []byte {
			out := slices.Clone(f[:off+n])
			binary.BigEndian.PutUint16(out[16:], uint16(len(out)-14))
			if enc.encap == bpfmap.EncapVXLAN {
				binary.BigEndian.PutUint16(out[38:], uint16(len(out)-34))
			}
			fixIPv4Checksum(out[14:])
			return out
		}
		for _, k := range []int{0, 1, 10, 19} {
			cases = append(cases, tc{fmt.Sprintf("%sinner packet of %d bytes", n, k), innerLen(good, k), bpfmap.ReasonDropMalformed})
		}
		cases = append(cases,
			tc{n + "inner version 6", edit(good, func(b []byte) { b[off] = 0x65 }), bpfmap.ReasonDropMalformed},
			tc{n + "inner ihl 4", edit(good, func(b []byte) { b[off] = 0x44 }), bpfmap.ReasonDropMalformed},
			tc{n + "inner tot_len past the end", edit(good, func(b []byte) { binary.BigEndian.PutUint16(b[off+2:], 2000) }), bpfmap.ReasonDropMalformed},
		)
	}
	// VXLAN only.
	src := e.block(t, nodeA, bpfmap.EncapVXLAN)
	inner := udp4(e.wl2, src, e.wl2.ip4, 64)
	vx := func(vni uint32, edit func(b []byte)) []byte {
		f := bpftest.VXLAN(e.nodeL2(nodeA), bpftest.IPv4{Src: nodeA.addr, Dst: hostAddr}, 51234, testVXLANPort, vni, inner)
		if edit != nil {
			edit(f)
		}
		return f
	}
	cut := func(n int) []byte {
		f := vx(testVNI, nil)[:14+28+n]
		binary.BigEndian.PutUint16(f[16:], uint16(len(f)-14))
		binary.BigEndian.PutUint16(f[38:], uint16(len(f)-34))
		fixIPv4Checksum(f[14:])
		return f
	}
	// IPv6 inside is carried (ipv6_tunnel_test.go), but not from a
	// local workload's address.
	ipv6Inner := bpftest.VXLAN(e.nodeL2(nodeA), bpftest.IPv4{Src: nodeA.addr, Dst: hostAddr}, 51234, testVXLANPort, testVNI,
		udp6(e.wl2, e.wl1.ip6, e.wl2.ip6, 64))
	arpInner := bpftest.VXLAN(e.nodeL2(nodeA), bpftest.IPv4{Src: nodeA.addr, Dst: hostAddr}, 51234, testVXLANPort, testVNI,
		bpftest.ARPRequest(mac(0x99, 0x01), src, e.wl2.ip4))
	cases = append(cases,
		tc{"vxlan/another VNI", vx(testVNI+1, nil), bpfmap.ReasonDropTunnelVNI},
		tc{"vxlan/VNI 0", vx(0, nil), bpfmap.ReasonDropTunnelVNI},
		tc{"vxlan/no I flag", vx(testVNI, func(b []byte) { b[42] = 0 }), bpfmap.ReasonDropTunnelVNI},
		tc{"vxlan/G flag only", vx(testVNI, func(b []byte) { b[42] = 0x80 }), bpfmap.ReasonDropTunnelVNI},
		tc{"vxlan/no VXLAN header", cut(0), bpfmap.ReasonDropMalformed},
		tc{"vxlan/half a VXLAN header", cut(4), bpfmap.ReasonDropMalformed},
		tc{"vxlan/VXLAN header, no inner Ethernet", cut(8), bpfmap.ReasonDropMalformed},
		tc{"vxlan/inner Ethernet cut", cut(8 + 10), bpfmap.ReasonDropMalformed},
		tc{"vxlan/inner IPv6 from a local workload's address", ipv6Inner, bpfmap.ReasonDropTunnelInnerSrc},
		tc{"vxlan/inner ARP", arpInner, bpfmap.ReasonDropUnsupported},
	)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := e.fromUL(t, c.in)
			o.want(t, shot, hit{ul, c.reason})
			o.unchanged(t)
		})
	}
}

// 12. Plain packets on the underlay: workload traffic another node routed
// here directly is delivered; everything else is the host's, untouched.
func TestUnderlayPlain(t *testing.T) {
	e := newTunnelEnv(t)
	ul := e.tun.ul
	l2 := e.nodeL2(e.tun.nodeA)
	remote := e.block(t, e.tun.nodeA, bpfmap.EncapNone)
	for proto, in := range ipv4Protocols(l2, bpftest.IPv4{Src: remote, Dst: e.wl2.ip4}) {
		t.Run("direct to a workload with a MAC/"+proto, func(t *testing.T) {
			o := e.fromUL(t, in)
			o.want(t, redirect, hit{ul, bpfmap.ReasonDeliverLocal}, hit{e.wl2, bpfmap.ReasonToWorkload})
			checkForwarded4(t, o, e.wl2, true)
		})
	}
	t.Run("direct to a workload without a MAC", func(t *testing.T) {
		o := e.fromUL(t, bpftest.IPv4UDP(l2, bpftest.IPv4{Src: remote, Dst: e.wl3.ip4}, 1, 2, nil))
		o.want(t, redirect, hit{ul, bpfmap.ReasonDeliverLocal})
		checkForwarded4(t, o, e.wl3, false)
	})
	for _, tc := range []struct {
		name string
		in   []byte
	}{
		{"ttl 1 to a workload", bpftest.IPv4UDP(l2, bpftest.IPv4{Src: remote, Dst: e.wl2.ip4, TTL: 1}, 1, 2, nil)},
		{"to the host", bpftest.IPv4TCP(l2, bpftest.IPv4{Src: e.tun.nodeA.addr, Dst: hostAddr}, 40000, 22)},
		{"to the internet", bpftest.IPv4UDP(l2, bpftest.IPv4{Src: e.tun.nodeA.addr, Dst: internet}, 1, 2, nil)},
		{"to a remote workload", bpftest.IPv4UDP(l2, bpftest.IPv4{Src: internet, Dst: remote}, 1, 2, nil)},
		{"udp from a node to another port", bpftest.IPv4UDP(l2, bpftest.IPv4{Src: e.tun.nodeA.addr, Dst: hostAddr}, 4789, 4790, []byte("not vxlan"))},
		{"arp", bpftest.ARPRequest(l2.Src, e.tun.nodeA.addr, hostAddr)},
		{"ipv6", bpftest.IPv6UDP(l2, bpftest.IPv6{Src: netip.MustParseAddr("fe80::1"), Dst: netip.MustParseAddr("ff02::1")}, 1, 2, nil)},
		// (IPv6 to a workload is delivered: ipv6_tunnel_test.go.)
		{"ipv6 to no workload", bpftest.IPv6UDP(l2, bpftest.IPv6{Src: netip.MustParseAddr("2001:db8::1"), Dst: netip.MustParseAddr("2001:db8::2")}, 1, 2, nil)},
		{"lldp", bpftest.Raw(bpftest.L2{Src: l2.Src, Dst: net.HardwareAddr{0x01, 0x80, 0xc2, 0, 0, 0x0e}}, 0x88cc, make([]byte, 46))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := e.fromUL(t, tc.in)
			o.want(t, ok, hit{ul, bpfmap.ReasonPassHost})
			o.unchanged(t)
		})
	}
	t.Run("broken IPv4 header", func(t *testing.T) {
		in := bpftest.IPv4UDP(l2, bpftest.IPv4{Src: remote, Dst: e.wl2.ip4}, 1, 2, nil)
		in[14] = 0x44
		o := e.fromUL(t, in)
		o.want(t, shot, hit{ul, bpfmap.ReasonDropMalformed})
		o.unchanged(t)
	})
}

// 13. Until the agent has written cx_config (no node address), the
// underlay programs touch nothing and workloads' remote traffic goes to
// the host stack.
func TestTunnelNotConfigured(t *testing.T) {
	e := newTunnelEnv(t)
	ul := e.tun.ul
	w := e.wl1
	ipip := e.block(t, e.tun.nodeA, bpfmap.EncapIPIP)
	vxlan := e.block(t, e.tun.nodeA, bpfmap.EncapVXLAN)
	inner := udp4(e.wl2, ipip, e.wl2.ip4, 64)
	for _, cfg := range []struct {
		name string
		cfg  bpfmap.NodeConfig
	}{
		{"zero config", bpfmap.NodeConfig{}},
		{"no address", bpfmap.NodeConfig{UnderlayMTU: 1500, VXLANVNI: testVNI, VXLANPort: testVXLANPort}},
	} {
		must(t, e.dp.Maps.Config.Put(0, cfg.cfg))
		for name, in := range map[string][]byte{
			"ipip":   tunnelFrame(e, e.tun.nodeA, hostAddr, bpfmap.EncapIPIP, inner),
			"vxlan":  tunnelFrame(e, e.tun.nodeA, hostAddr, bpfmap.EncapVXLAN, inner),
			"direct": inner,
			"broken": withOptions(inner)[:40],
		} {
			t.Run(cfg.name+"/from the underlay/"+name, func(t *testing.T) {
				o := e.fromUL(t, in)
				o.want(t, ok, hit{ul, bpfmap.ReasonPassHost})
				o.unchanged(t)
			})
		}
		for _, dst := range []netip.Addr{ipip, vxlan} {
			t.Run(cfg.name+"/from a workload to "+dst.String(), func(t *testing.T) {
				o := e.fromWL(t, w, udp4(w, w.ip4, dst, 64))
				o.want(t, ok, hit{w, bpfmap.ReasonPassHost})
				o.unchanged(t)
			})
			t.Run(cfg.name+"/from the host to "+dst.String(), func(t *testing.T) {
				o := e.runOn(t, e.ulEgress, ul.ifindex, bpftest.IPv4UDP(e.hostL2(), bpftest.IPv4{Src: hostAddr, Dst: dst}, 1, 2, nil))
				o.want(t, ok, hit{ul, bpfmap.ReasonPassHost})
				o.unchanged(t)
			})
		}
	}
	t.Run("a remote route without a next hop", func(t *testing.T) {
		must(t, e.dp.Maps.Config.Put(0, e.tun.cfg))
		dst := netip.MustParsePrefix("10.68.0.0/26")
		must(t, e.dp.Maps.Routes.Put(dst, bpfmap.Route{Type: bpfmap.RouteRemoteWorkload, Encap: bpfmap.EncapVXLAN}))
		o := e.fromWL(t, w, udp4(w, w.ip4, dst.Addr().Next(), 64))
		o.want(t, ok, hit{w, bpfmap.ReasonPassHost})
		o.unchanged(t)
	})
	t.Run("no underlay MTU", func(t *testing.T) {
		cfg := e.tun.cfg
		cfg.UnderlayMTU = 0
		must(t, e.dp.Maps.Config.Put(0, cfg))
		o := e.fromWL(t, w, udp4(w, w.ip4, vxlan, 64))
		o.want(t, ok, hit{w, bpfmap.ReasonPassHost})
		o.unchanged(t)
	})
}

// 14. The host's own packets to remote workloads take the same route out
// of the underlay's egress hook: encapsulated in place when the FIB says
// this interface, redirected (and marked) when it says another. Its TTL is
// the host's business.
func TestToUnderlay(t *testing.T) {
	e := newTunnelEnv(t)
	ul, ul2 := e.tun.ul, e.tun.ul2
	host := func(dst netip.Addr, ttl uint8) map[string][]byte {
		return ipv4Protocols(e.hostL2(), bpftest.IPv4{Src: hostAddr, Dst: dst, TTL: ttl})
	}
	for _, enc := range encaps {
		for _, node := range []*remoteNode{e.tun.nodeA, e.tun.nodeC} {
			for proto, in := range host(e.block(t, node, enc.encap), 64) {
				t.Run(enc.name+"/"+node.name+"/"+proto, func(t *testing.T) {
					o := e.runOn(t, e.ulEgress, ul.ifindex, in)
					o.want(t, ok, hit{ul, enc.reason})
					checkEncap(t, e, o, node, enc.encap, false)
					if o.ctx.Mark != 0 {
						t.Errorf("skb->mark %#x, want 0 (sent in place)", o.ctx.Mark)
					}
				})
			}
		}
		t.Run(enc.name+"/ttl 1 is not ours to check", func(t *testing.T) {
			o := e.runOn(t, e.ulEgress, ul.ifindex, host(e.block(t, e.tun.nodeA, enc.encap), 1)["udp"])
			o.want(t, ok, hit{ul, enc.reason})
			checkEncap(t, e, o, e.tun.nodeA, enc.encap, false)
		})
		t.Run(enc.name+"/no neighbour: redirect_neigh", func(t *testing.T) {
			o := e.runOn(t, e.ulEgress, ul.ifindex, host(e.block(t, e.tun.nodeB, enc.encap), 64)["udp"])
			o.want(t, redirect, hit{ul, enc.reason})
			checkEncap(t, e, o, e.tun.nodeB, enc.encap, false)
			if o.ctx.Mark != cxMarkRouted {
				t.Errorf("skb->mark %#x, want %#x", o.ctx.Mark, cxMarkRouted)
			}
		})
		t.Run(enc.name+"/on an interface the FIB does not pick: redirect", func(t *testing.T) {
			o := e.runOn(t, e.ulEgress, ul2.ifindex, host(e.block(t, e.tun.nodeA, enc.encap), 64)["udp"])
			o.want(t, redirect, hit{ul2, enc.reason})
			checkEncap(t, e, o, e.tun.nodeA, enc.encap, false)
			if o.ctx.Mark != cxMarkRouted {
				t.Errorf("skb->mark %#x, want %#x", o.ctx.Mark, cxMarkRouted)
			}
		})
	}
	t.Run("direct", func(t *testing.T) {
		in := host(e.block(t, e.tun.nodeA, bpfmap.EncapNone), 64)["udp"]
		o := e.runOn(t, e.ulEgress, ul.ifindex, in)
		o.want(t, ok, hit{ul, bpfmap.ReasonForwardDirect})
		want := slices.Clone(in)
		copy(want[0:6], e.tun.nodeA.l2)
		if !bytes.Equal(o.out, want) {
			t.Errorf("routed packet:\n got  %x\n want %x", o.out, want)
		}
	})
	for _, tc := range []struct {
		encap bpfmap.Encap
		node  *remoteNode
	}{{bpfmap.EncapVXLAN, e.tun.nodeA}, {bpfmap.EncapIPIP, e.tun.nodeC}, {bpfmap.EncapNone, e.tun.nodeA}} {
		fit := underlayMTU - tc.encap.Overhead()
		dst := e.block(t, tc.node, tc.encap)
		t.Run(tc.encap.String()+"/too big: ICMP from the remote node, into the host", func(t *testing.T) {
			in := bpftest.IPv4UDP(e.hostL2(), bpftest.IPv4{Src: hostAddr, Dst: dst}, 1, 2, make([]byte, fit+1-28))
			o := e.runOn(t, e.ulEgress, ul.ifindex, in)
			o.want(t, redirect, hit{ul, bpfmap.ReasonICMPFragNeeded})
			checkFragNeeded(t, o, tc.node.addr, fit)
		})
		t.Run(tc.encap.String()+"/too big without DF", func(t *testing.T) {
			in := bpftest.IPv4UDP(e.hostL2(), bpftest.IPv4{Src: hostAddr, Dst: dst, NoDF: true}, 1, 2, make([]byte, fit+1-28))
			o := e.runOn(t, e.ulEgress, ul.ifindex, in)
			o.want(t, shot, hit{ul, bpfmap.ReasonDropTooBig})
			o.unchanged(t)
		})
	}
	t.Run("routed already (CX_MARK_ROUTED): through, unmarked, uncounted", func(t *testing.T) {
		for name, in := range map[string][]byte{
			"encapsulated":         tunnelFrame(e, e.tun.nodeA, e.tun.nodeA.addr, bpfmap.EncapVXLAN, udp4(e.wl1, e.wl1.ip4, e.block(t, e.tun.nodeA, bpfmap.EncapVXLAN), 64)),
			"to a remote workload": host(e.block(t, e.tun.nodeA, bpfmap.EncapIPIP), 64)["udp"],
			"arp":                  bpftest.ARPRequest(ul.hostMAC, hostAddr, e.tun.nodeA.addr),
		} {
			for _, ifindex := range []int{ul.ifindex, ul2.ifindex} {
				o := e.runIn(t, e.ulEgress, bpftest.Input{Data: in, Ifindex: ifindex, Mark: cxMarkRouted})
				o.want(t, ok)
				o.unchanged(t)
				if o.ctx.Mark != 0 {
					t.Errorf("%s: skb->mark %#x after, want 0", name, o.ctx.Mark)
				}
			}
		}
	})
	for name, tc := range map[string]struct {
		in   []byte
		mark uint32
	}{
		"to the internet":        {host(internet, 64)["tcp"], 0},
		"to a local workload":    {host(e.wl2.ip4, 64)["udp"], 0},
		"to a node":              {host(e.tun.nodeA.addr, 64)["udp"], 0},
		"vxlan the host sends":   {bpftest.VXLAN(e.hostL2(), bpftest.IPv4{Src: hostAddr, Dst: e.tun.nodeA.addr}, 1, testVXLANPort, testVNI, udp4(e.wl1, e.wl1.ip4, e.wl2.ip4, 64)), 0},
		"another mark":           {host(internet, 64)["udp"], 0x1234},
		"another calyx-ish mark": {host(internet, 64)["udp"], cxMarkRouted | 1},
		"arp":                    {bpftest.ARPRequest(ul.hostMAC, hostAddr, e.tun.nodeA.addr), 0},
		"ipv6":                   {bpftest.IPv6UDP(e.hostL2(), bpftest.IPv6{Src: netip.MustParseAddr("2001:db8::10"), Dst: netip.MustParseAddr("2001:db8::20")}, 1, 2, nil), 0},
	} {
		t.Run("pass/"+name, func(t *testing.T) {
			o := e.runIn(t, e.ulEgress, bpftest.Input{Data: tc.in, Ifindex: ul.ifindex, Mark: tc.mark})
			o.want(t, ok, hit{ul, bpfmap.ReasonPassHost})
			o.unchanged(t)
			if o.ctx.Mark != tc.mark {
				t.Errorf("skb->mark %#x after, want it left at %#x", o.ctx.Mark, tc.mark)
			}
		})
	}
	t.Run("broken IPv4 header", func(t *testing.T) {
		in := host(e.block(t, e.tun.nodeA, bpfmap.EncapIPIP), 64)["udp"]
		in[14] = 0x44
		o := e.runOn(t, e.ulEgress, ul.ifindex, in)
		o.want(t, shot, hit{ul, bpfmap.ReasonDropMalformed})
		o.unchanged(t)
	})
}

// 15. What one node's calyx_from_wl sends, the other node's
// calyx_from_underlay takes apart again: the destination workload gets the
// packet the source sent, but for its TTL (one less per node) and MACs.
// The fixture plays both: first this host sending to nodeA, then nodeA
// (its address in cx_config, this host a RouteNode, the destination a
// local workload).
func TestTunnelRoundTrip(t *testing.T) {
	e := newTunnelEnv(t)
	w := e.wl1
	nodeA := e.tun.nodeA
	asNodeA := func(dst netip.Addr) func() {
		cfg := e.tun.cfg
		cfg.Address = nodeA.addr
		must(t, e.dp.Maps.Config.Put(0, cfg))
		must(t, e.dp.Maps.Routes.Put(netip.PrefixFrom(hostAddr, 32), bpfmap.Route{Type: bpfmap.RouteNode}))
		must(t, e.dp.Maps.Routes.Put(netip.PrefixFrom(dst, 32), bpfmap.Route{Type: bpfmap.RouteLocalWorkload,
			Ifindex: e.wl2.idx(), MAC: bpfmap.MACFrom(e.wl2.mac), HostMAC: bpfmap.MACFrom(e.wl2.hostMAC), Peer: true,
			CounterSlot: e.wl2.slot}))
		// To nodeA the sender is a workload of this host's, which may
		// tunnel it (the inner source check).
		wr, err := e.dp.Maps.Routes.All()
		must(t, err)
		src := netip.PrefixFrom(w.ip4, 32)
		must(t, e.dp.Maps.Routes.Put(src, bpfmap.Route{Type: bpfmap.RouteRemoteWorkload, Encap: bpfmap.EncapVXLAN, NextHop: hostAddr}))
		return func() {
			must(t, e.dp.Maps.Config.Put(0, e.tun.cfg))
			must(t, e.dp.Maps.Routes.Put(netip.PrefixFrom(hostAddr, 32), bpfmap.Route{Type: bpfmap.RouteHost}))
			must(t, e.dp.Maps.Routes.Delete(netip.PrefixFrom(dst, 32)))
			must(t, e.dp.Maps.Routes.Put(src, wr[src]))
		}
	}
	for _, enc := range encaps {
		dst := e.block(t, nodeA, enc.encap)
		for proto, in := range ipv4Protocols(w.l2(), bpftest.IPv4{Src: w.ip4, Dst: dst}) {
			t.Run(enc.name+"/"+proto, func(t *testing.T) {
				sent := e.fromWL(t, w, in)
				sent.want(t, redirect, hit{w, enc.reason})
				restore := asNodeA(dst)
				got := e.fromUL(t, sent.out)
				restore()
				want := slices.Concat(e.wl2.mac, e.wl2.hostMAC, in[12:])
				want[14+8] -= 2
				fixIPv4Checksum(want[14:])
				got.wantSized(t, redirect, sizedHit{e.tun.ul, enc.decap, len(sent.out)}, sizedHit{e.wl2, bpfmap.ReasonToWorkload, len(want)})
				if !bytes.Equal(got.out, want) {
					t.Errorf("round trip:\n got  %x\n want %x", got.out, want)
				}
				verifyIPv4(t, got.out, in[14+8]-2)
			})
		}
	}
}
