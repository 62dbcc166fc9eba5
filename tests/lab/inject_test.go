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

func TestBuildersRefuseBadInput(t *testing.T) {
	for name, f := range map[string]func(){
		"IPv6 in IPv4": func() {
			ICMPEchoFrame(injEth, IPv4Header{Src: netip.MustParseAddr("fd00::1"), Dst: injDst}, 1, 1, nil)
		},
		"short MAC": func() {
			UDPFrame(Eth{Src: injSrcMAC[:3], Dst: injDstMAC}, IPv4Header{Src: injSrc, Dst: injDst}, 1, 2, nil)
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
