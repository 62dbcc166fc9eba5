package lab

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

var (
	injSrcMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x01}
	injDstMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x02}
	injEth    = Eth{Src: injSrcMAC, Dst: injDstMAC}
	injSrc    = netip.MustParseAddr("10.30.0.254")
	injDst    = netip.MustParseAddr("10.30.0.11")
	injWA     = netip.MustParseAddr("10.65.1.2")
	injWC     = netip.MustParseAddr("10.65.3.2")
)

// decode parses a frame and fails on any decoding error.
func decode(t *testing.T, frame []byte) gopacket.Packet {
	t.Helper()
	p := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
	if el := p.ErrorLayer(); el != nil {
		t.Fatalf("decode: %v\n%s", el.Error(), hex.Dump(frame))
	}
	return p
}

// checkIPv4 checks the header checksum and total length of the IPv4
// header at b and returns the header.
func checkIPv4(t *testing.T, b []byte, src, dst netip.Addr, proto byte) []byte {
	t.Helper()
	if len(b) < 20 || b[0] != 0x45 {
		t.Fatalf("not an IPv4 header without options: % x", b[:min(len(b), 20)])
	}
	if inetChecksum(b[:20]) != 0 {
		t.Errorf("IPv4 header checksum wrong: % x", b[:20])
	}
	if got := int(binary.BigEndian.Uint16(b[2:])); got != len(b) && !(len(b) == 46 && got < 46) {
		t.Errorf("IPv4 total length %d, packet %d bytes", got, len(b))
	}
	if b[8] != 64 {
		t.Errorf("TTL %d, want 64", b[8])
	}
	if binary.BigEndian.Uint16(b[6:])&0x4000 == 0 {
		t.Errorf("DF not set")
	}
	if b[9] != proto {
		t.Errorf("protocol %d, want %d", b[9], proto)
	}
	if s, d := netip.AddrFrom4([4]byte(b[12:16])), netip.AddrFrom4([4]byte(b[16:20])); s != src || d != dst {
		t.Errorf("addresses %s > %s, want %s > %s", s, d, src, dst)
	}
	return b[:binary.BigEndian.Uint16(b[2:])]
}

// l4Checksum verifies a TCP or UDP checksum over the pseudo-header.
func l4Checksum(ip []byte) uint16 {
	seg := ip[20:]
	pseudo := make([]byte, 0, 12+len(seg))
	pseudo = append(pseudo, ip[12:20]...)
	pseudo = append(pseudo, 0, ip[9])
	pseudo = binary.BigEndian.AppendUint16(pseudo, uint16(len(seg)))
	return inetChecksum(append(pseudo, seg...))
}

func TestICMPEchoFrame(t *testing.T) {
	f := ICMPEchoFrame(injEth, IPv4Header{Src: injSrc, Dst: injWA}, 0xbeef, 7, []byte("calyx hostile"))
	if !bytes.Equal(f[0:6], injDstMAC) || !bytes.Equal(f[6:12], injSrcMAC) || binary.BigEndian.Uint16(f[12:]) != 0x0800 {
		t.Fatalf("Ethernet header % x", f[:14])
	}
	ip := checkIPv4(t, f[14:], injSrc, injWA, 1)
	icmp := ip[20:]
	if icmp[0] != 8 || icmp[1] != 0 || binary.BigEndian.Uint16(icmp[4:]) != 0xbeef || binary.BigEndian.Uint16(icmp[6:]) != 7 {
		t.Errorf("ICMP header % x", icmp[:8])
	}
	if inetChecksum(icmp) != 0 {
		t.Errorf("ICMP checksum wrong")
	}
	if !bytes.Equal(icmp[8:], []byte("calyx hostile")) {
		t.Errorf("payload %q", icmp[8:])
	}
	p := decode(t, f)
	if p.Layer(layers.LayerTypeICMPv4) == nil {
		t.Errorf("gopacket finds no ICMPv4 layer")
	}
	// The same packet without Ethernet (nor its padding to 60 bytes), for
	// IP-in-IP.
	if pk := ICMPEchoPacket(IPv4Header{Src: injSrc, Dst: injWA}, 0xbeef, 7, []byte("calyx hostile")); !bytes.Equal(pk, ip) {
		t.Errorf("ICMPEchoPacket differs from the frame's packet:\n% x\n% x", pk, ip)
	}
}

func TestTCPFrame(t *testing.T) {
	for _, flags := range []TCPFlags{TCPSyn, TCPAck, TCPSyn | TCPAck, TCPRst, TCPFin | TCPAck | TCPPsh} {
		f := TCPFrame(injEth, IPv4Header{Src: injSrc, Dst: injDst}, 40000, 7000, flags, 1000, 2000)
		ip := checkIPv4(t, f[14:], injSrc, injDst, 6)
		tcp := ip[20:]
		if binary.BigEndian.Uint16(tcp) != 40000 || binary.BigEndian.Uint16(tcp[2:]) != 7000 {
			t.Errorf("%s: ports % x", flags, tcp[:4])
		}
		if binary.BigEndian.Uint32(tcp[4:]) != 1000 || binary.BigEndian.Uint32(tcp[8:]) != 2000 {
			t.Errorf("%s: seq/ack % x", flags, tcp[4:12])
		}
		want := map[TCPFlags]byte{TCPFin: 0x01, TCPSyn: 0x02, TCPRst: 0x04, TCPPsh: 0x08, TCPAck: 0x10}
		var wb byte
		for k, v := range want {
			if flags&k != 0 {
				wb |= v
			}
		}
		if tcp[13] != wb {
			t.Errorf("%s: flags byte %#x, want %#x", flags, tcp[13], wb)
		}
		if tcp[12]>>4 != 5 {
			t.Errorf("%s: data offset %d, want 5", flags, tcp[12]>>4)
		}
		if l4Checksum(ip) != 0 {
			t.Errorf("%s: TCP checksum wrong", flags)
		}
		decode(t, f)
	}
	if s := (TCPSyn | TCPAck).String(); s != "S." {
		t.Errorf("SYN|ACK prints %q, want S.", s)
	}
	if s := TCPAck.String(); s != "." {
		t.Errorf("ACK prints %q", s)
	}
}

func TestUDPFrameAndDHCP(t *testing.T) {
	msg := DHCPMessage(DHCPRequestOptions{ClientMAC: injSrcMAC, Xid: 0x11223344})
	f := UDPFrame(Eth{Src: injSrcMAC, Dst: BroadcastMAC}, IPv4Header{Src: netip.IPv4Unspecified(), Dst: netip.MustParseAddr("255.255.255.255")}, 68, 67, msg)
	ip := checkIPv4(t, f[14:], netip.IPv4Unspecified(), netip.MustParseAddr("255.255.255.255"), 17)
	udp := ip[20:]
	if binary.BigEndian.Uint16(udp) != 68 || binary.BigEndian.Uint16(udp[2:]) != 67 || int(binary.BigEndian.Uint16(udp[4:])) != len(udp) {
		t.Errorf("UDP header % x (segment %d bytes)", udp[:8], len(udp))
	}
	if l4Checksum(ip) != 0 {
		t.Errorf("UDP checksum wrong")
	}
	bootp := udp[8:]
	// op, htype, hlen; giaddr; chaddr; the magic cookie; option 53 = 1.
	if bootp[0] != 1 || bootp[1] != 1 || bootp[2] != 6 {
		t.Errorf("op/htype/hlen % x", bootp[:3])
	}
	if binary.BigEndian.Uint32(bootp[4:]) != 0x11223344 {
		t.Errorf("xid % x", bootp[4:8])
	}
	if !bytes.Equal(bootp[24:28], []byte{0, 0, 0, 0}) {
		t.Errorf("giaddr % x, want zero", bootp[24:28])
	}
	if !bytes.Equal(bootp[28:34], injSrcMAC) {
		t.Errorf("chaddr % x", bootp[28:34])
	}
	if binary.BigEndian.Uint32(bootp[236:]) != 0x63825363 || !bytes.Equal(bootp[240:243], []byte{53, 1, 1}) || bootp[243] != 255 {
		t.Errorf("options % x", bootp[236:])
	}
	p := decode(t, f)
	d, _ := p.Layer(layers.LayerTypeDHCPv4).(*layers.DHCPv4)
	if d == nil || d.Operation != layers.DHCPOpRequest {
		t.Fatalf("gopacket decodes no DHCP request: %v", p)
	}

	relay := DHCPMessage(DHCPRequestOptions{Type: layers.DHCPMsgTypeRequest, ClientMAC: injDstMAC, RelayIP: injDst})
	if !bytes.Equal(relay[24:28], injDst.AsSlice()) || relay[242] != byte(layers.DHCPMsgTypeRequest) {
		t.Errorf("relay request: giaddr % x, type %d", relay[24:28], relay[242])
	}
}

func TestVXLANFrame(t *testing.T) {
	inner := ICMPEchoFrame(Eth{Src: injDstMAC, Dst: injSrcMAC}, IPv4Header{Src: injWC, Dst: injWA}, 1, 1, []byte("inner"))
	f := VXLANFrame(injEth, IPv4Header{Src: netip.MustParseAddr("10.30.0.12"), Dst: injDst}, 40001, DefaultVXLANPort, DefaultVXLANVNI, inner)
	ip := checkIPv4(t, f[14:], netip.MustParseAddr("10.30.0.12"), injDst, 17)
	udp := ip[20:]
	if binary.BigEndian.Uint16(udp) != 40001 || binary.BigEndian.Uint16(udp[2:]) != DefaultVXLANPort {
		t.Errorf("ports % x", udp[:4])
	}
	if int(binary.BigEndian.Uint16(udp[4:])) != len(udp) {
		t.Errorf("UDP length %d, segment %d", binary.BigEndian.Uint16(udp[4:]), len(udp))
	}
	if udp[6] != 0 || udp[7] != 0 {
		t.Errorf("UDP checksum % x, want zero", udp[6:8])
	}
	vx := udp[8:16]
	if vx[0] != 0x08 || binary.BigEndian.Uint32(vx[4:])>>8 != DefaultVXLANVNI {
		t.Errorf("VXLAN header % x, want I flag and VNI %d", vx, DefaultVXLANVNI)
	}
	if !bytes.Equal(udp[16:], inner) {
		t.Errorf("inner frame not carried as it is")
	}
	p := decode(t, f)
	if v, _ := p.Layer(layers.LayerTypeVXLAN).(*layers.VXLAN); v == nil || v.VNI != DefaultVXLANVNI {
		t.Errorf("gopacket decodes no VXLAN with VNI %d", DefaultVXLANVNI)
	}
	// Another VNI lands in the header.
	g := VXLANFrame(injEth, IPv4Header{Src: injSrc, Dst: injDst}, 40001, 4789, 77, inner)
	if binary.BigEndian.Uint32(g[14+20+8+4:])>>8 != 77 {
		t.Errorf("VNI 77 not in the header")
	}
}

func TestIPIPFrame(t *testing.T) {
	inner := ICMPEchoPacket(IPv4Header{Src: injWC, Dst: injWA}, 2, 3, []byte("ipip"))
	f := IPIPFrame(injEth, IPv4Header{Src: netip.MustParseAddr("10.30.0.12"), Dst: injDst}, inner)
	ip := checkIPv4(t, f[14:], netip.MustParseAddr("10.30.0.12"), injDst, 4)
	if !bytes.Equal(ip[20:], inner) {
		t.Errorf("inner packet not carried as it is")
	}
	checkIPv4(t, ip[20:], injWC, injWA, 1)
	decode(t, f)
}

func TestIPv4HeaderShapes(t *testing.T) {
	hdr := func(f []byte) []byte {
		t.Helper()
		b := f[14:]
		ihl := int(b[0]&0x0f) * 4
		if b[0]>>4 != 4 || ihl < 20 || len(b) < ihl {
			t.Fatalf("not an IPv4 header: % x", b[:min(len(b), 24)])
		}
		if inetChecksum(b[:ihl]) != 0 {
			t.Errorf("IPv4 header checksum wrong: % x", b[:ihl])
		}
		return b
	}
	flags := func(b []byte) uint16 { return binary.BigEndian.Uint16(b[6:]) }
	payload := []byte("0123456789abcdef")

	// A first fragment: MF, no DF, offset 0; the L4 header is there.
	b := hdr(UDPFrame(injEth, IPv4Header{Src: injWA, Dst: injWC, MF: true, ID: 0x4242}, 40000, 7000, payload))
	if flags(b) != 0x2000 || binary.BigEndian.Uint16(b[4:]) != 0x4242 {
		t.Errorf("first fragment: flags/offset %#04x id %#x, want 0x2000 (MF) and 0x4242", flags(b), binary.BigEndian.Uint16(b[4:]))
	}
	// A later fragment: the offset, no DF, no MF, the payload raw.
	f := IPv4Frame(injEth, IPv4Header{Src: injWA, Dst: injWC, FragOffset: 185}, layers.IPProtocolUDP, payload)
	b = hdr(f)
	if flags(b) != 185 || b[9] != 17 || !bytes.Equal(b[20:20+len(payload)], payload) || int(binary.BigEndian.Uint16(b[2:])) != 20+len(payload) {
		t.Errorf("later fragment: flags/offset %#04x proto %d, packet % x", flags(b), b[9], b)
	}
	p := decode(t, f)
	if ip4, _ := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4); ip4 == nil || ip4.FragOffset != 185 {
		t.Errorf("gopacket reads no fragment offset 185")
	}
	// Both: MF and an offset.
	if b = hdr(IPv4Frame(injEth, IPv4Header{Src: injWA, Dst: injWC, MF: true, FragOffset: 1}, layers.IPProtocolICMPv4, payload)); flags(b) != 0x2001 {
		t.Errorf("middle fragment: flags/offset %#04x, want 0x2001", flags(b))
	}
	// Options: IHL 6, the option after the fixed header, the ICMP after it.
	b = hdr(ICMPEchoFrame(injEth, IPv4Header{Src: injWA, Dst: injWC, Options: []layers.IPv4Option{RouterAlert}}, 9, 1, payload))
	if b[0] != 0x46 || !bytes.Equal(b[20:24], []byte{148, 4, 0, 0}) || b[24] != 8 || int(binary.BigEndian.Uint16(b[2:])) != len(b) {
		t.Errorf("router alert: header % x, total length %d of %d", b[:25], binary.BigEndian.Uint16(b[2:]), len(b))
	}
	if inetChecksum(b[24:]) != 0 {
		t.Errorf("router alert: ICMP checksum wrong")
	}
	if flags(b) != 0x4000 {
		t.Errorf("router alert: flags %#04x, want DF", flags(b))
	}
	// TTL 0 and 1.
	if b = hdr(ICMPEchoFrame(injEth, IPv4Header{Src: injWA, Dst: injWC, ZeroTTL: true, TTL: 9}, 9, 1, nil)); b[8] != 0 {
		t.Errorf("ZeroTTL: TTL %d", b[8])
	}
	if b = hdr(ICMPEchoFrame(injEth, IPv4Header{Src: injWA, Dst: injWC, TTL: 1}, 9, 1, nil)); b[8] != 1 {
		t.Errorf("TTL 1: TTL %d", b[8])
	}
	// A total length that lies, either way; the checksum still holds.
	for _, tl := range []uint16{1400, 16} {
		f := ICMPEchoFrame(injEth, IPv4Header{Src: injWA, Dst: injWC, TotalLength: tl}, 9, 1, payload)
		// Ethernet pads the frame to 60 bytes.
		if b = hdr(f); binary.BigEndian.Uint16(b[2:]) != tl || len(b) != 46 {
			t.Errorf("total length %d: header says %d, packet %d bytes", tl, binary.BigEndian.Uint16(b[2:]), len(b))
		}
	}
	if pk := ICMPEchoPacket(IPv4Header{Src: injWA, Dst: injWC, TotalLength: 999}, 9, 1, payload); binary.BigEndian.Uint16(pk[2:]) != 999 || inetChecksum(pk[:20]) != 0 {
		t.Errorf("ICMPEchoPacket ignores TotalLength: % x", pk[:20])
	}
	// Outer headers of tunnels take the same fields: a fragmented VXLAN
	// packet with options keeps a zero UDP checksum after the options.
	inner := ICMPEchoFrame(injEth, IPv4Header{Src: injWC, Dst: injWA}, 1, 1, nil)
	vx := VXLANFrame(injEth, IPv4Header{Src: injSrc, Dst: injDst, MF: true, Options: []layers.IPv4Option{RouterAlert}}, 40001, DefaultVXLANPort, DefaultVXLANVNI, inner)
	b = hdr(vx)
	if b[0] != 0x46 || flags(b) != 0x2000 || binary.BigEndian.Uint16(b[26:]) != DefaultVXLANPort || b[30] != 0 || b[31] != 0 || !bytes.Equal(b[24+16:], inner) {
		t.Errorf("VXLAN with outer options and MF: % x", b[:40])
	}
	ipip := IPIPFrame(injEth, IPv4Header{Src: injSrc, Dst: injDst, FragOffset: 3}, ICMPEchoPacket(IPv4Header{Src: injWC, Dst: injWA}, 1, 1, nil))
	if b = hdr(ipip); flags(b) != 3 || b[9] != 4 {
		t.Errorf("IP-in-IP fragment: flags/offset %#04x proto %d", flags(b), b[9])
	}
}

func TestARPFrame(t *testing.T) {
	gw := netip.MustParseAddr("169.254.1.1")
	f := ARPFrame(Eth{Src: injSrcMAC, Dst: BroadcastMAC}, ARP{Op: ARPRequest, SenderMAC: injSrcMAC, SenderIP: gw, TargetIP: injWA})
	// Padded to Ethernet's 60 bytes.
	if len(f) != 60 || binary.BigEndian.Uint16(f[12:]) != 0x0806 {
		t.Fatalf("ARP frame of %d bytes, ethertype %#04x", len(f), binary.BigEndian.Uint16(f[12:]))
	}
	want := []byte{0, 1, 8, 0, 6, 4, 0, 1}
	want = append(want, injSrcMAC...)
	want = append(want, gw.AsSlice()...)
	want = append(want, 0, 0, 0, 0, 0, 0)
	want = append(want, injWA.AsSlice()...)
	if !bytes.Equal(f[14:42], want) {
		t.Errorf("ARP request % x, want % x", f[14:42], want)
	}
	p := decode(t, ARPFrame(injEth, ARP{Op: ARPReply, SenderMAC: injSrcMAC, SenderIP: injWC, TargetMAC: injDstMAC, TargetIP: injWA}))
	a, _ := p.Layer(layers.LayerTypeARP).(*layers.ARP)
	if a == nil || a.Operation != 2 || !bytes.Equal(a.SourceProtAddress, injWC.AsSlice()) || !bytes.Equal(a.DstHwAddress, injDstMAC) {
		t.Errorf("ARP reply decodes as %+v", a)
	}
}

// icmp6Checksum verifies an ICMPv6 checksum over the IPv6 pseudo-header.
func icmp6Checksum(ip6 []byte) uint16 {
	body := ip6[40:]
	pseudo := append([]byte(nil), ip6[8:40]...)
	pseudo = binary.BigEndian.AppendUint32(pseudo, uint32(len(body)))
	pseudo = append(pseudo, 0, 0, 0, 58)
	return inetChecksum(append(pseudo, body...))
}

func TestNeighborFrames(t *testing.T) {
	waMAC := net.HardwareAddr{0x02, 0xca, 0x15, 0x00, 0x00, 0x01}
	ll := LinkLocalEUI64(waMAC)
	if ll.String() != "fe80::ca:15ff:fe00:1" {
		t.Errorf("LinkLocalEUI64(%s) = %s", waMAC, ll)
	}
	gw := netip.MustParseAddr("fe80::1")
	if sn := SolicitedNode(netip.MustParseAddr("fd00:65:1::2")); sn.String() != "ff02::1:ff00:2" {
		t.Errorf("SolicitedNode = %s", sn)
	}
	if m := IPv6MulticastMAC(SolicitedNode(gw)); m.String() != "33:33:ff:00:00:01" {
		t.Errorf("IPv6MulticastMAC = %s", m)
	}

	na := NeighborAdvertFrame(Eth{Src: waMAC, Dst: IPv6MulticastMAC(AllNodes)}, IPv6Header{Src: ll, Dst: AllNodes}, gw, NAOverride|NARouter, waMAC)
	ip6 := na[14:]
	if binary.BigEndian.Uint16(na[12:]) != 0x86dd || ip6[6] != 58 || ip6[7] != 255 || int(binary.BigEndian.Uint16(ip6[4:])) != len(ip6)-40 {
		t.Fatalf("NA: ethertype %#04x, IPv6 header % x", binary.BigEndian.Uint16(na[12:]), ip6[:8])
	}
	body := ip6[40:]
	if len(body) != 32 || body[0] != 136 || body[4] != 0xa0 || !bytes.Equal(body[8:24], gw.AsSlice()) ||
		!bytes.Equal(body[24:26], []byte{2, 1}) || !bytes.Equal(body[26:32], waMAC) {
		t.Errorf("NA body % x", body)
	}
	if icmp6Checksum(ip6) != 0 {
		t.Errorf("NA: ICMPv6 checksum wrong")
	}
	p := decode(t, na)
	if a, _ := p.Layer(layers.LayerTypeICMPv6NeighborAdvertisement).(*layers.ICMPv6NeighborAdvertisement); a == nil || !a.Override() || a.Solicited() {
		t.Errorf("NA decodes as %+v", a)
	}

	ns := NeighborSolicitFrame(Eth{Src: waMAC, Dst: IPv6MulticastMAC(SolicitedNode(gw))}, IPv6Header{Src: netip.MustParseAddr("fd00:65:1::3"), Dst: SolicitedNode(gw)}, gw, waMAC)
	ip6 = ns[14:]
	body = ip6[40:]
	if ip6[7] != 255 || len(body) != 32 || body[0] != 135 || !bytes.Equal(body[8:24], gw.AsSlice()) || !bytes.Equal(body[24:26], []byte{1, 1}) {
		t.Errorf("NS % x", ip6)
	}
	if icmp6Checksum(ip6) != 0 {
		t.Errorf("NS: ICMPv6 checksum wrong")
	}
	decode(t, ns)
	// Duplicate-address detection: from ::, no option; another hop limit.
	dad := NeighborSolicitFrame(injEth, IPv6Header{Src: netip.IPv6Unspecified(), Dst: SolicitedNode(gw), HopLimit: 64}, gw, nil)
	if ip6 = dad[14:]; ip6[7] != 64 || len(ip6) != 40+24 || icmp6Checksum(ip6) != 0 {
		t.Errorf("DAD NS % x", ip6)
	}
}

var (
	inj6A  = netip.MustParseAddr("2001:db8:a41:ff::11")
	inj6B  = netip.MustParseAddr("2001:db8:a41:ff::12")
	inj6WA = netip.MustParseAddr("fd00:65:1::2")
	inj6WB = netip.MustParseAddr("fd00:65:1::3")
)

// checkIPv6 checks the version, payload length, next header, hop limit
// and addresses of the IPv6 header at b and returns its payload.
func checkIPv6(t *testing.T, b []byte, src, dst netip.Addr, next, hopLimit byte) []byte {
	t.Helper()
	if len(b) < 40 || b[0]>>4 != 6 {
		t.Fatalf("not an IPv6 header: % x", b[:min(len(b), 40)])
	}
	if got := int(binary.BigEndian.Uint16(b[4:])); got != len(b)-40 {
		t.Errorf("IPv6 payload length %d, packet %d bytes", got, len(b))
	}
	if b[6] != next || b[7] != hopLimit {
		t.Errorf("next header %d hop limit %d, want %d and %d", b[6], b[7], next, hopLimit)
	}
	if s, d := netip.AddrFrom16([16]byte(b[8:24])), netip.AddrFrom16([16]byte(b[24:40])); s != src || d != dst {
		t.Errorf("addresses %s > %s, want %s > %s", s, d, src, dst)
	}
	return b[40:]
}

// l4Checksum6 verifies a checksum over the IPv6 pseudo-header (RFC 8200
// 8.1) for the upper-layer protocol next.
func l4Checksum6(ip6 []byte, next byte) uint16 {
	body := ip6[40:]
	pseudo := append([]byte(nil), ip6[8:40]...)
	pseudo = binary.BigEndian.AppendUint32(pseudo, uint32(len(body)))
	pseudo = append(pseudo, 0, 0, 0, next)
	return inetChecksum(append(pseudo, body...))
}

// checkEcho6 checks the ICMPv6 echo request of the IPv6 packet ip6.
func checkEcho6(t *testing.T, ip6 []byte, id, seq uint16, payload []byte) {
	t.Helper()
	icmp := ip6[40:]
	if len(icmp) < 8 || icmp[0] != 128 || icmp[1] != 0 || binary.BigEndian.Uint16(icmp[4:]) != id || binary.BigEndian.Uint16(icmp[6:]) != seq {
		t.Fatalf("ICMPv6 echo header % x", icmp[:min(len(icmp), 8)])
	}
	if icmp6Checksum(ip6) != 0 {
		t.Errorf("ICMPv6 checksum wrong")
	}
	if !bytes.Equal(icmp[8:], payload) {
		t.Errorf("payload %q, want %q", icmp[8:], payload)
	}
}

func TestICMPv6EchoFrame(t *testing.T) {
	payload := []byte("calyx hostile6")
	f := ICMPv6EchoFrame(injEth, IPv6Header{Src: inj6B, Dst: inj6WA}, 0xbeef, 7, payload)
	if !bytes.Equal(f[0:6], injDstMAC) || !bytes.Equal(f[6:12], injSrcMAC) || binary.BigEndian.Uint16(f[12:]) != 0x86dd {
		t.Fatalf("Ethernet header % x", f[:14])
	}
	// A zero HopLimit is 255.
	checkIPv6(t, f[14:], inj6B, inj6WA, 58, 255)
	checkEcho6(t, f[14:], 0xbeef, 7, payload)
	p := decode(t, f)
	if e, _ := p.Layer(layers.LayerTypeICMPv6Echo).(*layers.ICMPv6Echo); e == nil || e.Identifier != 0xbeef || e.SeqNumber != 7 {
		t.Errorf("gopacket decodes no echo request with id 0xbeef, seq 7: %v", p)
	}
	if pk := ICMPv6EchoPacket(IPv6Header{Src: inj6B, Dst: inj6WA}, 0xbeef, 7, payload); !bytes.Equal(pk, f[14:]) {
		t.Errorf("ICMPv6EchoPacket differs from the frame's packet:\n% x\n% x", pk, f[14:])
	}
	// A v4-mapped source is written as it is (the hostile case), and the
	// checksum covers it.
	mapped := netip.AddrFrom16(injWA.As16())
	g := ICMPv6EchoFrame(injEth, IPv6Header{Src: mapped, Dst: inj6WA, HopLimit: 64}, 1, 2, nil)
	checkIPv6(t, g[14:], mapped, inj6WA, 58, 64)
	checkEcho6(t, g[14:], 1, 2, nil)
	if !bytes.Equal(g[14+8:14+24], []byte{10: 0xff, 11: 0xff, 12: 10, 13: 65, 14: 1, 15: 2}) {
		t.Errorf("v4-mapped source % x", g[14+8:14+24])
	}
}

func TestIP6IP6Frame(t *testing.T) {
	inner := ICMPv6EchoPacket(IPv6Header{Src: inj6WB, Dst: inj6WA, HopLimit: 64}, 2, 3, []byte("ip6ip6"))
	f := IP6IP6Frame(injEth, IPv6Header{Src: inj6B, Dst: inj6A}, inner)
	if binary.BigEndian.Uint16(f[12:]) != 0x86dd {
		t.Fatalf("ethertype %#04x", binary.BigEndian.Uint16(f[12:]))
	}
	in := checkIPv6(t, f[14:], inj6B, inj6A, 41, 255)
	if !bytes.Equal(in, inner) {
		t.Errorf("inner packet not carried as it is")
	}
	checkIPv6(t, in, inj6WB, inj6WA, 58, 64)
	checkEcho6(t, in, 2, 3, []byte("ip6ip6"))
	p := decode(t, f)
	var ips []*layers.IPv6
	for _, l := range p.Layers() {
		if ip, ok := l.(*layers.IPv6); ok {
			ips = append(ips, ip)
		}
	}
	if len(ips) != 2 || !ips[1].SrcIP.Equal(inj6WB.AsSlice()) || p.Layer(layers.LayerTypeICMPv6Echo) == nil {
		t.Errorf("gopacket decodes %d IPv6 headers (want 2, the inner from %s) and echo %v", len(ips), inj6WB, p.Layer(layers.LayerTypeICMPv6Echo) != nil)
	}
}

func TestVXLAN6Frame(t *testing.T) {
	inner := ICMPv6EchoFrame(Eth{Src: injDstMAC, Dst: injSrcMAC}, IPv6Header{Src: inj6WB, Dst: inj6WA}, 1, 1, []byte("inner"))
	f := VXLAN6Frame(injEth, IPv6Header{Src: inj6B, Dst: inj6A}, 40001, DefaultVXLANPort, DefaultVXLANVNI, inner)
	udp := checkIPv6(t, f[14:], inj6B, inj6A, 17, 255)
	if binary.BigEndian.Uint16(udp) != 40001 || binary.BigEndian.Uint16(udp[2:]) != DefaultVXLANPort {
		t.Errorf("ports % x", udp[:4])
	}
	if int(binary.BigEndian.Uint16(udp[4:])) != len(udp) {
		t.Errorf("UDP length %d, segment %d", binary.BigEndian.Uint16(udp[4:]), len(udp))
	}
	if binary.BigEndian.Uint16(udp[6:]) == 0 || l4Checksum6(f[14:], 17) != 0 {
		t.Errorf("UDP checksum %#04x wrong", binary.BigEndian.Uint16(udp[6:]))
	}
	vx := udp[8:16]
	if vx[0] != 0x08 || binary.BigEndian.Uint32(vx[4:])>>8 != DefaultVXLANVNI {
		t.Errorf("VXLAN header % x, want I flag and VNI %d", vx, DefaultVXLANVNI)
	}
	if !bytes.Equal(udp[16:], inner) {
		t.Errorf("inner frame not carried as it is")
	}
	p := decode(t, f)
	if v, _ := p.Layer(layers.LayerTypeVXLAN).(*layers.VXLAN); v == nil || v.VNI != DefaultVXLANVNI {
		t.Errorf("gopacket decodes no VXLAN with VNI %d", DefaultVXLANVNI)
	}
	if e, _ := p.Layer(layers.LayerTypeICMPv6Echo).(*layers.ICMPv6Echo); e == nil {
		t.Errorf("gopacket decodes no inner echo request")
	}
	// Another VNI lands in the header, and the checksum follows it.
	g := VXLAN6Frame(injEth, IPv6Header{Src: inj6B, Dst: inj6A}, 40001, 4789, 77, inner)
	if binary.BigEndian.Uint32(g[14+40+8+4:])>>8 != 77 || l4Checksum6(g[14:], 17) != 0 {
		t.Errorf("VNI 77: header % x", g[14+40+8:14+40+16])
	}
}

func TestBuildersRefuseBadInput(t *testing.T) {
	for name, f := range map[string]func(){
		"IPv6 in IPv4": func() {
			ICMPEchoFrame(injEth, IPv4Header{Src: netip.MustParseAddr("fd00::1"), Dst: injDst}, 1, 1, nil)
		},
		"short MAC": func() {
			UDPFrame(Eth{Src: injSrcMAC[:3], Dst: injDstMAC}, IPv4Header{Src: injSrc, Dst: injDst}, 1, 2, nil)
		},
		"fragment offset past 13 bits": func() {
			IPv4Frame(injEth, IPv4Header{Src: injSrc, Dst: injDst, FragOffset: 0x2000}, layers.IPProtocolUDP, nil)
		},
		"IPv4 in IPv6": func() {
			NeighborSolicitFrame(injEth, IPv6Header{Src: injSrc, Dst: AllNodes}, AllNodes, nil)
		},
		"IPv4 in IPv6-in-IPv6": func() {
			IP6IP6Frame(injEth, IPv6Header{Src: inj6B, Dst: injDst}, nil)
		},
		"short ARP MAC": func() {
			ARPFrame(injEth, ARP{Op: ARPRequest, SenderMAC: injSrcMAC[:4], SenderIP: injSrc, TargetIP: injDst})
		},
	} {
		func() {
			defer func() {
				if r := recover(); r == nil || !strings.Contains(r.(string), "lab: build packet") {
					t.Errorf("%s: recovered %v, want a build packet panic", name, r)
				}
			}()
			f()
		}()
	}
}

func TestParseHexFrame(t *testing.T) {
	want := []byte{0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00, 0x45}
	for _, s := range []string{
		"020000000002020000000001080045",
		"02:00:00:00:00:02:02:00:00:00:00:01:08:00:45",
		"0200 0000 0002 0200 0000 0001 0800 45",
		"02-00-00-00-00-02.02-00-00-00-00-01.0800.45",
	} {
		got, err := ParseHexFrame(s)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("ParseHexFrame(%q) = % x, %v", s, got, err)
		}
	}
	for _, s := range []string{"", "0200", "zz0000000002020000000001080045", "02000000000202000000000108004"} {
		if _, err := ParseHexFrame(s); err == nil {
			t.Errorf("ParseHexFrame(%q) accepted", s)
		}
	}
	// What Inject passes round-trips.
	f := TCPFrame(injEth, IPv4Header{Src: injSrc, Dst: injDst}, 1, 2, TCPSyn, 0, 0)
	if got, err := ParseHexFrame(hex.EncodeToString(f)); err != nil || !bytes.Equal(got, f) {
		t.Errorf("round trip: %v", err)
	}
}

func TestRunInjectRefuses(t *testing.T) {
	frame := TCPFrame(injEth, IPv4Header{Src: injSrc, Dst: injDst}, 1, 2, TCPSyn, 0, 0)
	for _, c := range []struct {
		name string
		cfg  InjectConfig
		want string
	}{
		{"no iface", InjectConfig{Frames: [][]byte{frame}}, "no interface"},
		{"no frame", InjectConfig{Iface: "lo"}, "no frame"},
		{"negative count", InjectConfig{Iface: "lo", Count: -1, Frames: [][]byte{frame}}, "count"},
		{"huge count", InjectConfig{Iface: "lo", Count: maxInjectCount + 1, Frames: [][]byte{frame}}, "count"},
		{"unknown iface", InjectConfig{Iface: "cxnosuch0", Frames: [][]byte{frame}}, "cxnosuch0"},
		{"runt", InjectConfig{Iface: "lo", Frames: [][]byte{frame[:10]}}, "shorter than an Ethernet header"},
		{"too big", InjectConfig{Iface: "lo", Frames: [][]byte{make([]byte, 70000)}}, "more than lo takes"},
	} {
		n, err := RunInject(c.cfg)
		if err == nil || n != 0 || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: RunInject = %d, %v; want an error about %q", c.name, n, err, c.want)
		}
	}
}

func TestParseLinkMAC(t *testing.T) {
	out := `[{"ifindex":2,"ifname":"eth0","flags":["BROADCAST","MULTICAST","UP","LOWER_UP"],"mtu":1500,"link_type":"ether","address":"aa:bb:cc:00:11:22","broadcast":"ff:ff:ff:ff:ff:ff"}]`
	mac, err := ParseLinkMAC([]byte(out))
	if err != nil || mac.String() != "aa:bb:cc:00:11:22" {
		t.Errorf("ParseLinkMAC = %v, %v", mac, err)
	}
	for _, bad := range []string{
		`[]`,
		`not json`,
		`[{"ifname":"a","address":"aa:bb:cc:00:11:22"},{"ifname":"b","address":"aa:bb:cc:00:11:23"}]`,
		`[{"ifname":"ipip0","link_type":"ipip","address":"0.0.0.0"}]`,
	} {
		if _, err := ParseLinkMAC([]byte(bad)); err == nil {
			t.Errorf("ParseLinkMAC(%s) accepted", bad)
		}
	}
}
