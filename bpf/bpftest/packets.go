package bpftest

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// Serialize lays out the layers with FixLengths and ComputeChecksums. It
// panics on an error: builders are called with fixed, known-good inputs.
// Note that layers.Ethernet pads a frame to 60 bytes.
func Serialize(ls ...gopacket.SerializableLayer) []byte {
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, ls...); err != nil {
		panic(fmt.Sprintf("bpftest: serialize: %v", err))
	}
	return buf.Bytes()
}

// Broadcast is ff:ff:ff:ff:ff:ff.
var Broadcast = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// L2 is the Ethernet header of a built frame.
type L2 struct {
	Src, Dst net.HardwareAddr
}

func (l L2) eth(t layers.EthernetType) *layers.Ethernet {
	return &layers.Ethernet{SrcMAC: l.Src, DstMAC: l.Dst, EthernetType: t}
}

// ARP builds an Ethernet/IPv4 ARP frame (42 bytes before padding). For a
// request l2.Dst is normally Broadcast and targetMAC zero.
func ARP(l2 L2, op uint16, senderMAC net.HardwareAddr, senderIP netip.Addr,
	targetMAC net.HardwareAddr, targetIP netip.Addr) []byte {
	if targetMAC == nil {
		targetMAC = make(net.HardwareAddr, 6)
	}
	return Serialize(l2.eth(layers.EthernetTypeARP), &layers.ARP{
		AddrType:          layers.LinkTypeEthernet,
		Protocol:          layers.EthernetTypeIPv4,
		HwAddressSize:     6,
		ProtAddressSize:   4,
		Operation:         op,
		SourceHwAddress:   senderMAC,
		SourceProtAddress: v4(senderIP),
		DstHwAddress:      targetMAC,
		DstProtAddress:    v4(targetIP),
	})
}

// ARPRequest is who-has target tell sender, broadcast, from senderMAC.
func ARPRequest(senderMAC net.HardwareAddr, sender, target netip.Addr) []byte {
	return ARP(L2{Src: senderMAC, Dst: Broadcast}, layers.ARPRequest, senderMAC, sender, nil, target)
}

// IPv4 is the IPv4 header of a built packet; zero TTL means 64. DF is set
// unless NoDF.
type IPv4 struct {
	Src, Dst netip.Addr
	TTL      uint8
	TOS      uint8
	NoDF     bool
}

func (ip IPv4) layer(proto layers.IPProtocol) *layers.IPv4 {
	ttl := ip.TTL
	if ttl == 0 {
		ttl = 64
	}
	flags := layers.IPv4DontFragment
	if ip.NoDF {
		flags = 0
	}
	return &layers.IPv4{Version: 4, IHL: 5, TTL: ttl, TOS: ip.TOS, Protocol: proto, Flags: flags,
		Id: 0x1234, SrcIP: v4(ip.Src), DstIP: v4(ip.Dst)}
}

// IPIP builds Ethernet/IPv4 (protocol 4) around inner, an IPv4 packet
// from its header on.
func IPIP(l2 L2, outer IPv4, inner []byte) []byte {
	return Serialize(l2.eth(layers.EthernetTypeIPv4), outer.layer(layers.IPProtocolIPv4), gopacket.Payload(inner))
}

// VXLAN builds Ethernet/IPv4/UDP/VXLAN around inner, an Ethernet frame,
// with the I flag and vni, and a zero UDP checksum as VXLAN senders use.
func VXLAN(l2 L2, outer IPv4, sport, dport uint16, vni uint32, inner []byte) []byte {
	ipl := outer.layer(layers.IPProtocolUDP)
	udp := &layers.UDP{SrcPort: layers.UDPPort(sport), DstPort: layers.UDPPort(dport)}
	_ = udp.SetNetworkLayerForChecksum(ipl)
	out := Serialize(l2.eth(layers.EthernetTypeIPv4), ipl, udp,
		&layers.VXLAN{ValidIDFlag: true, VNI: vni}, gopacket.Payload(inner))
	out[14+20+6], out[14+20+7] = 0, 0
	return out
}

// IPv4UDP builds Ethernet/IPv4/UDP with payload.
func IPv4UDP(l2 L2, ip IPv4, sport, dport uint16, payload []byte) []byte {
	ipl := ip.layer(layers.IPProtocolUDP)
	udp := &layers.UDP{SrcPort: layers.UDPPort(sport), DstPort: layers.UDPPort(dport)}
	_ = udp.SetNetworkLayerForChecksum(ipl)
	return Serialize(l2.eth(layers.EthernetTypeIPv4), ipl, udp, gopacket.Payload(payload))
}

// IPv4TCP builds Ethernet/IPv4/TCP SYN.
func IPv4TCP(l2 L2, ip IPv4, sport, dport uint16) []byte {
	ipl := ip.layer(layers.IPProtocolTCP)
	tcp := &layers.TCP{SrcPort: layers.TCPPort(sport), DstPort: layers.TCPPort(dport), Seq: 1, SYN: true, Window: 64240}
	_ = tcp.SetNetworkLayerForChecksum(ipl)
	return Serialize(l2.eth(layers.EthernetTypeIPv4), ipl, tcp)
}

// IPv4ICMPEcho builds Ethernet/IPv4/ICMP echo request.
func IPv4ICMPEcho(l2 L2, ip IPv4, id, seq uint16) []byte {
	icmp := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoRequest, 0), Id: id, Seq: seq}
	return Serialize(l2.eth(layers.EthernetTypeIPv4), ip.layer(layers.IPProtocolICMPv4), icmp,
		gopacket.Payload([]byte("calyx-ping-payload")))
}

// IPv6 is the IPv6 header of a built packet; zero HopLimit means 64.
type IPv6 struct {
	Src, Dst netip.Addr
	HopLimit uint8
}

// IPv6UDP builds Ethernet/IPv6/UDP with payload.
func IPv6UDP(l2 L2, ip IPv6, sport, dport uint16, payload []byte) []byte {
	hl := ip.HopLimit
	if hl == 0 {
		hl = 64
	}
	ipl := &layers.IPv6{Version: 6, HopLimit: hl, NextHeader: layers.IPProtocolUDP,
		SrcIP: ip.Src.AsSlice(), DstIP: ip.Dst.AsSlice()}
	udp := &layers.UDP{SrcPort: layers.UDPPort(sport), DstPort: layers.UDPPort(dport)}
	_ = udp.SetNetworkLayerForChecksum(ipl)
	return Serialize(l2.eth(layers.EthernetTypeIPv6), ipl, udp, gopacket.Payload(payload))
}

// Raw builds an Ethernet header of type ethType followed by payload, with
// no padding: for malformed and unsupported frames.
func Raw(l2 L2, ethType uint16, payload []byte) []byte {
	out := make([]byte, 0, 14+len(payload))
	out = append(out, l2.Dst...)
	out = append(out, l2.Src...)
	out = append(out, byte(ethType>>8), byte(ethType))
	return append(out, payload...)
}

// Decode parses a frame from its Ethernet header on.
func Decode(frame []byte) gopacket.Packet {
	return gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
}

func v4(a netip.Addr) net.IP {
	if !a.Is4() {
		panic(fmt.Sprintf("bpftest: %s is not IPv4", a))
	}
	return a.AsSlice()
}

// IPv4HeaderChecksumOK reports whether the IPv4 header at the start of b
// sums to 0xffff (RFC 1071), i.e. its checksum field is right.
func IPv4HeaderChecksumOK(b []byte) bool {
	if len(b) < 20 {
		return false
	}
	hl := int(b[0]&0x0f) * 4
	if hl < 20 || len(b) < hl {
		return false
	}
	var sum uint32
	for i := 0; i < hl; i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return sum == 0xffff
}

// NeighborSolicitation builds Ethernet/IPv6/ICMPv6 NS for target with hop
// limit 255; with senderMAC non-nil it carries a source link-layer option.
func NeighborSolicitation(l2 L2, ip IPv6, target netip.Addr, senderMAC net.HardwareAddr) []byte {
	hl := ip.HopLimit
	if hl == 0 {
		hl = 255
	}
	ipl := &layers.IPv6{Version: 6, HopLimit: hl, NextHeader: layers.IPProtocolICMPv6,
		SrcIP: ip.Src.AsSlice(), DstIP: ip.Dst.AsSlice()}
	icmp := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(layers.ICMPv6TypeNeighborSolicitation, 0)}
	_ = icmp.SetNetworkLayerForChecksum(ipl)
	ns := &layers.ICMPv6NeighborSolicitation{TargetAddress: target.AsSlice()}
	if senderMAC != nil {
		ns.Options = layers.ICMPv6Options{{Type: layers.ICMPv6OptSourceAddress, Data: senderMAC}}
	}
	return Serialize(l2.eth(layers.EthernetTypeIPv6), ipl, icmp, ns)
}

// SolicitedNode is the solicited-node multicast address of a (RFC 4291 2.7.1).
func SolicitedNode(a netip.Addr) netip.Addr {
	b := a.As16()
	return netip.AddrFrom16([16]byte{0: 0xff, 1: 0x02, 11: 0x01, 12: 0xff, 13: b[13], 14: b[14], 15: b[15]})
}

func (ip IPv6) layer(next layers.IPProtocol) *layers.IPv6 {
	hl := ip.HopLimit
	if hl == 0 {
		hl = 64
	}
	return &layers.IPv6{Version: 6, HopLimit: hl, NextHeader: next, SrcIP: ip.Src.AsSlice(), DstIP: ip.Dst.AsSlice()}
}

// TCPSegment is a TCP header's fields a test sets.
type TCPSegment struct {
	Sport, Dport       uint16
	Seq, Ack           uint32
	SYN, ACK, FIN, RST bool
	Window             uint16
}

func (s TCPSegment) layer() *layers.TCP {
	w := s.Window
	if w == 0 {
		w = 64240
	}
	return &layers.TCP{SrcPort: layers.TCPPort(s.Sport), DstPort: layers.TCPPort(s.Dport), Seq: s.Seq, Ack: s.Ack,
		SYN: s.SYN, ACK: s.ACK, FIN: s.FIN, RST: s.RST, Window: w}
}

// IPv6TCP builds Ethernet/IPv6/TCP segment seg.
func IPv6TCP(l2 L2, ip IPv6, seg TCPSegment) []byte {
	ipl := ip.layer(layers.IPProtocolTCP)
	tcp := seg.layer()
	_ = tcp.SetNetworkLayerForChecksum(ipl)
	return Serialize(l2.eth(layers.EthernetTypeIPv6), ipl, tcp)
}

// IPv6ICMP builds Ethernet/IPv6/ICMPv6 of type and code with body (the
// bytes after the checksum: an echo's identifier and sequence number, an
// error's unused word and quoted packet).
func IPv6ICMP(l2 L2, ip IPv6, typ, code uint8, body []byte) []byte {
	ipl := ip.layer(layers.IPProtocolICMPv6)
	icmp := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(typ, code)}
	_ = icmp.SetNetworkLayerForChecksum(ipl)
	return Serialize(l2.eth(layers.EthernetTypeIPv6), ipl, icmp, gopacket.Payload(body))
}

// IPv6ICMPEcho builds an ICMPv6 echo request (reply: an echo reply).
func IPv6ICMPEcho(l2 L2, ip IPv6, reply bool, id, seq uint16) []byte {
	typ := uint8(layers.ICMPv6TypeEchoRequest)
	if reply {
		typ = layers.ICMPv6TypeEchoReply
	}
	body := append([]byte{byte(id >> 8), byte(id), byte(seq >> 8), byte(seq)}, "calyx-ping-payload"...)
	return IPv6ICMP(l2, ip, typ, 0, body)
}

// IPv6PacketTooBig builds an ICMPv6 Packet Too Big (RFC 4443 3.2) with
// mtu, quoting quoted (an IPv6 packet from its header on).
func IPv6PacketTooBig(l2 L2, ip IPv6, mtu uint32, quoted []byte) []byte {
	body := append([]byte{byte(mtu >> 24), byte(mtu >> 16), byte(mtu >> 8), byte(mtu)}, quoted...)
	return IPv6ICMP(l2, ip, layers.ICMPv6TypePacketTooBig, 0, body)
}

// IPv6 extension header numbers the builders take.
const (
	ExtHopByHop = 0
	ExtRouting  = 43
	ExtFragment = 44
	ExtDestOpts = 60
)

// IPv6UDPExt builds Ethernet/IPv6, the extension headers exts (hop-by-hop,
// routing or destination options, 8 bytes each, padded with PadN), then
// UDP with payload.
func IPv6UDPExt(l2 L2, ip IPv6, exts []uint8, sport, dport uint16, payload []byte) []byte {
	udpl := &layers.UDP{SrcPort: layers.UDPPort(sport), DstPort: layers.UDPPort(dport)}
	_ = udpl.SetNetworkLayerForChecksum(ip.layer(layers.IPProtocolUDP))
	l4 := Serialize(udpl, gopacket.Payload(payload))
	return ipv6Chain(l2, ip, exts, uint8(layers.IPProtocolUDP), l4)
}

// ipv6Chain lays out an IPv6 header, 8-byte extension headers exts, and
// l4 (protocol proto).
func ipv6Chain(l2 L2, ip IPv6, exts []uint8, proto uint8, l4 []byte) []byte {
	var chain []byte
	for i := range exts {
		next := proto
		if i+1 < len(exts) {
			next = exts[i+1]
		}
		// Next header, length 0 (8 bytes), then a PadN option of 4 bytes
		// of padding (routing: type 0 segments left 0, and 4 reserved).
		chain = append(chain, next, 0, 1, 4, 0, 0, 0, 0)
	}
	first := proto
	if len(exts) > 0 {
		first = exts[0]
	}
	return Serialize(l2.eth(layers.EthernetTypeIPv6), ip.layer(layers.IPProtocol(first)),
		gopacket.Payload(append(chain, l4...)))
}

// IPv6Fragment builds Ethernet/IPv6 with a fragment header (identification
// id, offset in bytes, a multiple of 8; more: more fragments follow) over
// proto, carrying data: for the first fragment, the L4 header and what of
// the payload it holds.
func IPv6Fragment(l2 L2, ip IPv6, id uint32, offset int, more bool, proto uint8, data []byte) []byte {
	fo := uint16(offset) &^ 7
	if more {
		fo |= 1
	}
	frag := []byte{proto, 0, byte(fo >> 8), byte(fo), byte(id >> 24), byte(id >> 16), byte(id >> 8), byte(id)}
	return Serialize(l2.eth(layers.EthernetTypeIPv6), ip.layer(layers.IPProtocolIPv6Fragment),
		gopacket.Payload(append(frag, data...)))
}

// UDPBytes is a UDP header (checksum 0) and payload, as a fragment's data.
func UDPBytes(sport, dport uint16, payload []byte) []byte {
	n := 8 + len(payload)
	return append([]byte{byte(sport >> 8), byte(sport), byte(dport >> 8), byte(dport), byte(n >> 8), byte(n), 0, 0}, payload...)
}

// IP6in4 builds Ethernet/IPv4 (protocol 41, RFC 4213) around inner, an
// IPv6 packet from its header on.
func IP6in4(l2 L2, outer IPv4, inner []byte) []byte {
	return Serialize(l2.eth(layers.EthernetTypeIPv4), outer.layer(layers.IPProtocolIPv6), gopacket.Payload(inner))
}

// IP6in6 builds Ethernet/IPv6 (next header 41, RFC 2473) around inner, an
// IPv6 packet from its header on.
func IP6in6(l2 L2, outer IPv6, inner []byte) []byte {
	return Serialize(l2.eth(layers.EthernetTypeIPv6), outer.layer(layers.IPProtocolIPv6), gopacket.Payload(inner))
}

// VXLAN6 is VXLAN over UDP/IPv6, with a zero UDP checksum as calyx's nodes
// send it.
func VXLAN6(l2 L2, outer IPv6, sport, dport uint16, vni uint32, inner []byte) []byte {
	ipl := outer.layer(layers.IPProtocolUDP)
	udp := &layers.UDP{SrcPort: layers.UDPPort(sport), DstPort: layers.UDPPort(dport)}
	_ = udp.SetNetworkLayerForChecksum(ipl)
	out := Serialize(l2.eth(layers.EthernetTypeIPv6), ipl, udp,
		&layers.VXLAN{ValidIDFlag: true, VNI: vni}, gopacket.Payload(inner))
	out[14+40+6], out[14+40+7] = 0, 0
	return out
}
