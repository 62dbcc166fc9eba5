package bpf_test

// IPv6 neighbour discovery answered in BPF: a workload's solicitation for
// any address but its own gets an advertisement with the host side's MAC,
// so fe80::1 (or any gateway) is the local host, with no proxy NDP.

import (
	"bytes"
	"net"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket/layers"

	"github.com/calyxnet/calyx/bpf/bpftest"
	"github.com/calyxnet/calyx/bpfmap"
)

func TestFromWorkloadNDPAnswered(t *testing.T) {
	e := newEnv(t)
	w := e.wl1
	linkLocal := netip.MustParseAddr("fe80::2")
	for _, tc := range []struct {
		name     string
		src      netip.Addr
		dst      netip.Addr
		dstMAC   net.HardwareAddr
		target   netip.Addr
		withSLLA bool
	}{
		{"gateway fe80::1, multicast, from link-local", linkLocal, bpftest.SolicitedNode(gatewayV6), net.HardwareAddr{0x33, 0x33, 0xff, 0, 0, 1}, gatewayV6, true},
		{"another workload, from the global address", w.ip6, bpftest.SolicitedNode(e.wl2.ip6), net.HardwareAddr{0x33, 0x33, 0xff, 0, 0, 0x20}, e.wl2.ip6, true},
		{"unicast refresh without options (the packet grows)", linkLocal, gatewayV6, w.hostMAC, gatewayV6, false},
		{"a remote address", w.ip6, bpftest.SolicitedNode(netip.MustParseAddr("fd00:66::1")), net.HardwareAddr{0x33, 0x33, 0xff, 0, 0, 1}, netip.MustParseAddr("fd00:66::1"), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var slla net.HardwareAddr
			if tc.withSLLA {
				slla = w.mac
			}
			in := bpftest.NeighborSolicitation(bpftest.L2{Src: w.mac, Dst: tc.dstMAC}, bpftest.IPv6{Src: tc.src, Dst: tc.dst}, tc.target, slla)
			o := e.fromWL(t, w, in)
			o.wantSized(t, redirect, sizedHit{w, bpfmap.ReasonNDReply, len(in)})
			checkNA(t, o.out, w, tc.src, tc.target)
		})
	}
}

// checkNA asserts out is a valid advertisement from target to dst with the
// host side's MAC, R, S and O set, and a correct checksum.
func checkNA(t *testing.T, out []byte, w *endpoint, dst, target netip.Addr) {
	t.Helper()
	pkt := bpftest.Decode(out)
	eth, _ := pkt.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	ip6, _ := pkt.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
	icmp, _ := pkt.Layer(layers.LayerTypeICMPv6).(*layers.ICMPv6)
	na, _ := pkt.Layer(layers.LayerTypeICMPv6NeighborAdvertisement).(*layers.ICMPv6NeighborAdvertisement)
	if eth == nil || ip6 == nil || icmp == nil || na == nil {
		t.Fatalf("output is not Ethernet/IPv6/ICMPv6 NA: %v", pkt)
	}
	if !bytes.Equal(eth.SrcMAC, w.hostMAC) || !bytes.Equal(eth.DstMAC, w.mac) {
		t.Errorf("Ethernet %s -> %s, want %s -> %s", eth.SrcMAC, eth.DstMAC, w.hostMAC, w.mac)
	}
	if !ip6.SrcIP.Equal(target.AsSlice()) || !ip6.DstIP.Equal(dst.AsSlice()) || ip6.HopLimit != 255 {
		t.Errorf("IPv6 %s -> %s hop %d, want %s -> %s hop 255", ip6.SrcIP, ip6.DstIP, ip6.HopLimit, target, dst)
	}
	if !na.TargetAddress.Equal(target.AsSlice()) || !na.Router() || !na.Solicited() || !na.Override() {
		t.Errorf("NA target %s flags %#x, want %s with R, S, O", na.TargetAddress, na.Flags, target)
	}
	var lla net.HardwareAddr
	for _, opt := range na.Options {
		if opt.Type == layers.ICMPv6OptTargetAddress {
			lla = opt.Data
		}
	}
	if !bytes.Equal(lla, w.hostMAC) {
		t.Errorf("target link-layer address %s, want the host side's %s", lla, w.hostMAC)
	}
	// Recompute the checksum over the pseudo-header and the message.
	msg := out[14+40:]
	if len(msg) != int(ip6.Length) {
		t.Fatalf("payload length %d, message %d bytes", ip6.Length, len(msg))
	}
	if s := icmp6Sum(ip6.SrcIP, ip6.DstIP, msg); s != 0xffff {
		t.Errorf("ICMPv6 checksum does not verify (sum %#x)", s)
	}
}

// icmp6Sum is the one's-complement sum of the pseudo-header and msg; a
// correct checksum makes it 0xffff.
func icmp6Sum(src, dst net.IP, msg []byte) uint16 {
	var b []byte
	b = append(b, src.To16()...)
	b = append(b, dst.To16()...)
	b = append(b, 0, 0, byte(len(msg)>>8), byte(len(msg)), 0, 0, 0, 58)
	b = append(b, msg...)
	if len(b)%2 == 1 {
		b = append(b, 0)
	}
	var s uint32
	for i := 0; i < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

func TestFromWorkloadNDPNotAnswered(t *testing.T) {
	e := newEnv(t)
	w := e.wl1
	mcast := net.HardwareAddr{0x33, 0x33, 0xff, 0, 0, 0x10}
	for _, tc := range []struct {
		name    string
		in      []byte
		verdict uint32
		reason  bpfmap.Reason
	}{
		{"duplicate-address probe from ::", bpftest.NeighborSolicitation(bpftest.L2{Src: w.mac, Dst: mcast},
			bpftest.IPv6{Src: netip.IPv6Unspecified(), Dst: bpftest.SolicitedNode(w.ip6)}, w.ip6, nil), shot, bpfmap.ReasonDropNDIgnored},
		{"solicitation for its own address", bpftest.NeighborSolicitation(bpftest.L2{Src: w.mac, Dst: mcast},
			bpftest.IPv6{Src: netip.MustParseAddr("fe80::2"), Dst: bpftest.SolicitedNode(w.ip6)}, w.ip6, w.mac), shot, bpfmap.ReasonDropNDIgnored},
		{"global source that is not the endpoint's", bpftest.NeighborSolicitation(bpftest.L2{Src: w.mac, Dst: mcast},
			bpftest.IPv6{Src: e.wl2.ip6, Dst: bpftest.SolicitedNode(gatewayV6)}, gatewayV6, w.mac), shot, bpfmap.ReasonDropSpoofIP},
		{"hop limit below 255 (not from the link)", bpftest.NeighborSolicitation(bpftest.L2{Src: w.mac, Dst: mcast},
			bpftest.IPv6{Src: netip.MustParseAddr("fe80::2"), Dst: bpftest.SolicitedNode(gatewayV6), HopLimit: 64}, gatewayV6, w.mac), shot, bpfmap.ReasonDropMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := e.fromWL(t, w, tc.in)
			o.want(t, tc.verdict, hit{w, tc.reason})
			if !bytes.Equal(o.out[:len(tc.in)], tc.in) {
				t.Errorf("dropped packet was modified")
			}
		})
	}
}
