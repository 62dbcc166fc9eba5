package lab

// Hand-built packets for the hostile-traffic tests (issue 15): frames are
// built here with gopacket and written, as they are, to an AF_PACKET socket
// on an interface inside a lab namespace by "calyx-lab inject", so they
// reach calyx's programs exactly as a misbehaving underlay neighbour or
// workload would send them: any source address, any MAC, any header.

import (
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"golang.org/x/sys/unix"
)

// The VXLAN defaults of calyx ("calyxctl node status" VXLAN-PORT and
// VXLAN-VNI unless the Config says otherwise).
const (
	DefaultVXLANPort = 4789
	DefaultVXLANVNI  = 4096
)

// maxInjectCount bounds "calyx-lab inject --count": the injector is for a
// handful of crafted packets, not for floods.
const maxInjectCount = 10000

// Eth is the Ethernet header of a built frame.
type Eth struct {
	Src, Dst net.HardwareAddr
}

// BroadcastMAC is ff:ff:ff:ff:ff:ff.
var BroadcastMAC = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// IPv4Header is the IPv4 header of a built packet. A zero TTL means 64
// (ZeroTTL sends 0), a zero ID 0x1234; DF is set unless NoDF or the packet
// is a fragment (MF or a FragOffset).
type IPv4Header struct {
	Src, Dst netip.Addr
	TTL      uint8
	ID       uint16
	NoDF     bool
	// ZeroTTL sends TTL 0, which TTL cannot say.
	ZeroTTL bool
	// MF sets More Fragments; FragOffset is the fragment's offset in
	// 8-byte units (13 bits). The builders do not cut the payload: a
	// fragment carries what the caller gives it (for one after the first,
	// raw bytes from IPv4Frame).
	MF         bool
	FragOffset uint16
	// Options are IPv4 options, padded to 4 bytes: the header grows past
	// 20 bytes (IHL above 5).
	Options []layers.IPv4Option
	// TotalLength, when not zero, is written as the header's total length
	// in place of the real one (and the header checksum fixed): a header
	// that lies about the size of its packet.
	TotalLength uint16
}

// RouterAlert is IPv4's Router Alert option (RFC 2113): four bytes, so a
// header with it has IHL 6.
var RouterAlert = layers.IPv4Option{OptionType: 148, OptionLength: 4, OptionData: []byte{0, 0}}

// TCPFlags is a set of TCP flags (TCPSyn|TCPAck, ...).
type TCPFlags uint8

// The TCP flags a built segment may carry.
const (
	TCPFin TCPFlags = 1 << iota
	TCPSyn
	TCPRst
	TCPPsh
	TCPAck
)

// String is tcpdump's notation: "S", "S.", ".", "R", "F.", ...
func (f TCPFlags) String() string {
	var b strings.Builder
	for _, x := range []struct {
		f TCPFlags
		c string
	}{{TCPSyn, "S"}, {TCPFin, "F"}, {TCPRst, "R"}, {TCPPsh, "P"}, {TCPAck, "."}} {
		if f&x.f != 0 {
			b.WriteString(x.c)
		}
	}
	if b.Len() == 0 {
		return "none"
	}
	return b.String()
}

// serialize lays out ls with FixLengths and ComputeChecksums. Builders are
// called with addresses and values the caller chose; an error here is a
// bug in the caller (an IPv6 address in an IPv4 header, a short MAC), so it
// panics with what went wrong.
func serialize(ls ...gopacket.SerializableLayer) []byte {
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, ls...); err != nil {
		panic(fmt.Sprintf("lab: build packet: %v", err))
	}
	return buf.Bytes()
}

func (e Eth) layer(t layers.EthernetType) *layers.Ethernet {
	for _, m := range []net.HardwareAddr{e.Src, e.Dst} {
		if len(m) != 6 {
			panic(fmt.Sprintf("lab: build packet: MAC %q is not 6 bytes", m))
		}
	}
	return &layers.Ethernet{SrcMAC: e.Src, DstMAC: e.Dst, EthernetType: t}
}

func v4slice(a netip.Addr) net.IP {
	if !a.Is4() {
		panic(fmt.Sprintf("lab: build packet: %v is not an IPv4 address", a))
	}
	b := a.As4()
	return net.IP(b[:])
}

func (h IPv4Header) layer(proto layers.IPProtocol) *layers.IPv4 {
	ttl, id := h.TTL, h.ID
	switch {
	case h.ZeroTTL:
		ttl = 0
	case ttl == 0:
		ttl = 64
	}
	if id == 0 {
		id = 0x1234
	}
	if h.FragOffset > 0x1fff {
		panic(fmt.Sprintf("lab: build packet: fragment offset %d does not fit 13 bits", h.FragOffset))
	}
	flags := layers.IPv4DontFragment
	if h.NoDF || h.MF || h.FragOffset != 0 {
		flags = 0
	}
	if h.MF {
		flags |= layers.IPv4MoreFragments
	}
	return &layers.IPv4{Version: 4, IHL: 5, TTL: ttl, Id: id, Flags: flags, FragOffset: h.FragOffset,
		Protocol: proto, SrcIP: v4slice(h.Src), DstIP: v4slice(h.Dst), Options: h.Options}
}

// patch writes h.TotalLength, when set, into the serialized IPv4 header at
// the start of b and fixes its checksum. It returns b.
func (h IPv4Header) patch(b []byte) []byte {
	if h.TotalLength == 0 {
		return b
	}
	hdr := b[:int(b[0]&0x0f)*4]
	binary.BigEndian.PutUint16(hdr[2:], h.TotalLength)
	hdr[10], hdr[11] = 0, 0
	binary.BigEndian.PutUint16(hdr[10:], gopacket.FoldChecksum(gopacket.ComputeChecksum(hdr, 0)))
	return b
}

// patchFrame is patch for a frame whose IPv4 header follows the Ethernet
// header.
func (h IPv4Header) patchFrame(frame []byte) []byte {
	h.patch(frame[14:])
	return frame
}

func icmpEchoLayers(id, seq uint16, payload []byte) []gopacket.SerializableLayer {
	return []gopacket.SerializableLayer{
		&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoRequest, 0), Id: id, Seq: seq},
		gopacket.Payload(payload),
	}
}

// ICMPEchoFrame builds Ethernet/IPv4/ICMP echo request with payload.
func ICMPEchoFrame(eth Eth, ip IPv4Header, id, seq uint16, payload []byte) []byte {
	ls := append([]gopacket.SerializableLayer{eth.layer(layers.EthernetTypeIPv4), ip.layer(layers.IPProtocolICMPv4)},
		icmpEchoLayers(id, seq, payload)...)
	return ip.patchFrame(serialize(ls...))
}

// ICMPEchoPacket is ICMPEchoFrame without the Ethernet header: an IPv4
// packet from its header on, the inner packet of IP-in-IP.
func ICMPEchoPacket(ip IPv4Header, id, seq uint16, payload []byte) []byte {
	ls := append([]gopacket.SerializableLayer{ip.layer(layers.IPProtocolICMPv4)}, icmpEchoLayers(id, seq, payload)...)
	return ip.patch(serialize(ls...))
}

// TCPFrame builds Ethernet/IPv4/TCP with flags, seq and ack, no options
// and no payload.
func TCPFrame(eth Eth, ip IPv4Header, sport, dport uint16, flags TCPFlags, seq, ack uint32) []byte {
	ipl := ip.layer(layers.IPProtocolTCP)
	tcp := &layers.TCP{SrcPort: layers.TCPPort(sport), DstPort: layers.TCPPort(dport), Seq: seq, Ack: ack,
		SYN: flags&TCPSyn != 0, ACK: flags&TCPAck != 0, RST: flags&TCPRst != 0, FIN: flags&TCPFin != 0,
		PSH: flags&TCPPsh != 0, Window: 64240}
	_ = tcp.SetNetworkLayerForChecksum(ipl)
	return ip.patchFrame(serialize(eth.layer(layers.EthernetTypeIPv4), ipl, tcp))
}

// UDPFrame builds Ethernet/IPv4/UDP with payload.
func UDPFrame(eth Eth, ip IPv4Header, sport, dport uint16, payload []byte) []byte {
	ipl := ip.layer(layers.IPProtocolUDP)
	udp := &layers.UDP{SrcPort: layers.UDPPort(sport), DstPort: layers.UDPPort(dport)}
	_ = udp.SetNetworkLayerForChecksum(ipl)
	return ip.patchFrame(serialize(eth.layer(layers.EthernetTypeIPv4), ipl, udp, gopacket.Payload(payload)))
}

// IPv4Frame builds Ethernet/IPv4 with protocol proto and payload as it is
// (no L4 header is made): a fragment after the first, or a protocol the
// other builders do not make.
func IPv4Frame(eth Eth, ip IPv4Header, proto layers.IPProtocol, payload []byte) []byte {
	return ip.patchFrame(serialize(eth.layer(layers.EthernetTypeIPv4), ip.layer(proto), gopacket.Payload(payload)))
}

// VXLANFrame builds Ethernet/IPv4/UDP/VXLAN around inner, an Ethernet
// frame, with the I flag and vni, from UDP port sport to dport, and a zero
// UDP checksum as VXLAN senders (calyx and the kernel) use.
func VXLANFrame(eth Eth, outer IPv4Header, sport, dport uint16, vni uint32, inner []byte) []byte {
	ipl := outer.layer(layers.IPProtocolUDP)
	udp := &layers.UDP{SrcPort: layers.UDPPort(sport), DstPort: layers.UDPPort(dport)}
	_ = udp.SetNetworkLayerForChecksum(ipl)
	out := serialize(eth.layer(layers.EthernetTypeIPv4), ipl, udp,
		&layers.VXLAN{ValidIDFlag: true, VNI: vni}, gopacket.Payload(inner))
	// The UDP checksum: after Ethernet (14) and the IPv4 header.
	udpOff := 14 + int(out[14]&0x0f)*4
	out[udpOff+6], out[udpOff+7] = 0, 0
	return outer.patchFrame(out)
}

// IPIPFrame builds Ethernet/IPv4 (protocol 4) around inner, an IPv4 packet
// from its header on (ICMPEchoPacket, or a frame without its first 14
// bytes).
func IPIPFrame(eth Eth, outer IPv4Header, inner []byte) []byte {
	return outer.patchFrame(serialize(eth.layer(layers.EthernetTypeIPv4), outer.layer(layers.IPProtocolIPv4), gopacket.Payload(inner)))
}

// DHCPRequestOptions shapes the BOOTREQUEST DHCPMessage builds.
type DHCPRequestOptions struct {
	// Type is the DHCP message type (option 53); 0 means DISCOVER.
	Type layers.DHCPMsgType
	// ClientMAC is chaddr.
	ClientMAC net.HardwareAddr
	// Xid is the transaction id.
	Xid uint32
	// RelayIP, when valid, is giaddr (a relay agent's address).
	RelayIP netip.Addr
}

// DHCPMessage builds the UDP payload of a client's BOOTREQUEST: Ethernet
// hardware type, chaddr, the magic cookie, option 53 and the end option.
func DHCPMessage(o DHCPRequestOptions) []byte {
	t := o.Type
	if t == 0 {
		t = layers.DHCPMsgTypeDiscover
	}
	d := &layers.DHCPv4{Operation: layers.DHCPOpRequest, HardwareType: layers.LinkTypeEthernet,
		Xid: o.Xid, Flags: 0x8000, ClientHWAddr: o.ClientMAC,
		Options: layers.DHCPOptions{layers.NewDHCPOption(layers.DHCPOptMessageType, []byte{byte(t)})}}
	if o.RelayIP.IsValid() {
		d.RelayAgentIP = v4slice(o.RelayIP)
	}
	return serialize(d)
}

// ARP opcodes (RFC 826).
const (
	ARPRequest uint16 = 1
	ARPReply   uint16 = 2
)

// ARP is an Ethernet/IPv4 ARP message: whoever sends it claims that
// SenderIP is at SenderMAC.
type ARP struct {
	// Op is ARPRequest, ARPReply or any other opcode.
	Op                   uint16
	SenderMAC, TargetMAC net.HardwareAddr
	SenderIP, TargetIP   netip.Addr
}

// ARPFrame builds Ethernet/ARP (padded to 60 bytes). A nil
// TargetMAC is all zeros, as in a request.
func ARPFrame(eth Eth, a ARP) []byte {
	tha := a.TargetMAC
	if tha == nil {
		tha = make(net.HardwareAddr, 6)
	}
	for _, m := range []net.HardwareAddr{a.SenderMAC, tha} {
		if len(m) != 6 {
			panic(fmt.Sprintf("lab: build packet: ARP MAC %q is not 6 bytes", m))
		}
	}
	return serialize(eth.layer(layers.EthernetTypeARP), &layers.ARP{
		AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4,
		Operation: a.Op, SourceHwAddress: a.SenderMAC, SourceProtAddress: v4slice(a.SenderIP),
		DstHwAddress: tha, DstProtAddress: v4slice(a.TargetIP)})
}

// IPv6Header is the IPv6 header of a built packet. A zero HopLimit means
// 255, the only one neighbour discovery is valid with (RFC 4861).
// Addresses may be v4-mapped (::ffff:a.b.c.d): no IPv6 packet on the wire
// carries one (RFC 4291 2.5.5.2), which is what a hostile packet may try.
type IPv6Header struct {
	Src, Dst netip.Addr
	HopLimit uint8
}

// v6slice refuses IPv4 addresses (a netip.Addr of 4 bytes), which would
// be a caller's mix-up, but takes v4-mapped IPv6 ones as they are.
func v6slice(a netip.Addr) net.IP {
	if !a.Is6() {
		panic(fmt.Sprintf("lab: build packet: %v is not an IPv6 address", a))
	}
	b := a.As16()
	return net.IP(b[:])
}

func (h IPv6Header) layer(next layers.IPProtocol) *layers.IPv6 {
	hl := h.HopLimit
	if hl == 0 {
		hl = 255
	}
	return &layers.IPv6{Version: 6, NextHeader: next, HopLimit: hl, SrcIP: v6slice(h.Src), DstIP: v6slice(h.Dst)}
}

func icmp6EchoLayers(ipl *layers.IPv6, id, seq uint16, payload []byte) []gopacket.SerializableLayer {
	icmp := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(layers.ICMPv6TypeEchoRequest, 0)}
	_ = icmp.SetNetworkLayerForChecksum(ipl)
	return []gopacket.SerializableLayer{ipl, icmp, &layers.ICMPv6Echo{Identifier: id, SeqNumber: seq}, gopacket.Payload(payload)}
}

// ICMPv6EchoFrame builds Ethernet/IPv6/ICMPv6 echo request with payload.
func ICMPv6EchoFrame(eth Eth, ip IPv6Header, id, seq uint16, payload []byte) []byte {
	ls := append([]gopacket.SerializableLayer{eth.layer(layers.EthernetTypeIPv6)},
		icmp6EchoLayers(ip.layer(layers.IPProtocolICMPv6), id, seq, payload)...)
	return serialize(ls...)
}

// ICMPv6EchoPacket is ICMPv6EchoFrame without the Ethernet header: an
// IPv6 packet from its header on, the inner packet of IPv6-in-IPv6.
func ICMPv6EchoPacket(ip IPv6Header, id, seq uint16, payload []byte) []byte {
	return serialize(icmp6EchoLayers(ip.layer(layers.IPProtocolICMPv6), id, seq, payload)...)
}

// IP6IP6Frame builds Ethernet/IPv6 (next header 41) around inner, an IPv6
// packet from its header on (ICMPv6EchoPacket, or a frame without its
// first 14 bytes): IPv6 in IPv6 as calyx's IP-in-IP over an IPv6 underlay.
func IP6IP6Frame(eth Eth, outer IPv6Header, inner []byte) []byte {
	return serialize(eth.layer(layers.EthernetTypeIPv6), outer.layer(layers.IPProtocolIPv6), gopacket.Payload(inner))
}

// VXLAN6Frame builds Ethernet/IPv6/UDP/VXLAN around inner, an Ethernet
// frame, with the I flag and vni, from UDP port sport to dport. Unlike
// VXLANFrame it computes the UDP checksum: over IPv6 a zero one is only
// taken by receivers that opted in (RFC 6935), a right one by all.
func VXLAN6Frame(eth Eth, outer IPv6Header, sport, dport uint16, vni uint32, inner []byte) []byte {
	ipl := outer.layer(layers.IPProtocolUDP)
	udp := &layers.UDP{SrcPort: layers.UDPPort(sport), DstPort: layers.UDPPort(dport)}
	_ = udp.SetNetworkLayerForChecksum(ipl)
	return serialize(eth.layer(layers.EthernetTypeIPv6), ipl, udp,
		&layers.VXLAN{ValidIDFlag: true, VNI: vni}, gopacket.Payload(inner))
}

// NAFlags are the flags of a neighbour advertisement.
type NAFlags uint8

// The neighbour advertisement flags (RFC 4861 4.4).
const (
	NAOverride  NAFlags = 0x20
	NASolicited NAFlags = 0x40
	NARouter    NAFlags = 0x80
)

// AllNodes is ff02::1, where unsolicited advertisements go.
var AllNodes = netip.MustParseAddr("ff02::1")

// SolicitedNode is the solicited-node multicast address of a
// (ff02::1:ffXX:XXXX), where solicitations for it go.
func SolicitedNode(a netip.Addr) netip.Addr {
	b := a.As16()
	return netip.AddrFrom16([16]byte{0xff, 0x02, 10: 0, 11: 1, 12: 0xff, 13: b[13], 14: b[14], 15: b[15]})
}

// IPv6MulticastMAC is the Ethernet address of IPv6 multicast group a
// (33:33 and its last four bytes, RFC 2464).
func IPv6MulticastMAC(a netip.Addr) net.HardwareAddr {
	b := a.As16()
	return net.HardwareAddr{0x33, 0x33, b[12], b[13], b[14], b[15]}
}

// LinkLocalEUI64 is the link-local address Linux gives an interface with
// MAC mac (addr_gen_mode eui64): fe80:: and the modified EUI-64.
func LinkLocalEUI64(mac net.HardwareAddr) netip.Addr {
	if len(mac) != 6 {
		panic(fmt.Sprintf("lab: build packet: MAC %q is not 6 bytes", mac))
	}
	return netip.AddrFrom16([16]byte{0xfe, 0x80, 8: mac[0] ^ 0x02, 9: mac[1], 10: mac[2], 11: 0xff, 12: 0xfe,
		13: mac[3], 14: mac[4], 15: mac[5]})
}

// ndp serializes Ethernet/IPv6/ICMPv6 with body, with the ICMPv6 checksum.
func ndp(eth Eth, ip IPv6Header, typ uint8, body gopacket.SerializableLayer) []byte {
	ipl := ip.layer(layers.IPProtocolICMPv6)
	icmp := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(typ, 0)}
	_ = icmp.SetNetworkLayerForChecksum(ipl)
	return serialize(eth.layer(layers.EthernetTypeIPv6), ipl, icmp, body)
}

// NeighborSolicitFrame builds a neighbour solicitation for target, with a
// source link-layer address option when sll is not nil (a solicitation
// from :: has none).
func NeighborSolicitFrame(eth Eth, ip IPv6Header, target netip.Addr, sll net.HardwareAddr) []byte {
	ns := &layers.ICMPv6NeighborSolicitation{TargetAddress: v6slice(target)}
	if sll != nil {
		ns.Options = layers.ICMPv6Options{{Type: layers.ICMPv6OptSourceAddress, Data: sll}}
	}
	return ndp(eth, ip, layers.ICMPv6TypeNeighborSolicitation, ns)
}

// NeighborAdvertFrame builds a neighbour advertisement that target is at
// tll (the target link-layer address option, left out when nil) with
// flags: with NAOverride and no NASolicited, the unsolicited advertisement
// that rewrites a neighbour cache entry.
func NeighborAdvertFrame(eth Eth, ip IPv6Header, target netip.Addr, flags NAFlags, tll net.HardwareAddr) []byte {
	na := &layers.ICMPv6NeighborAdvertisement{Flags: uint8(flags), TargetAddress: v6slice(target)}
	if tll != nil {
		na.Options = layers.ICMPv6Options{{Type: layers.ICMPv6OptTargetAddress, Data: tll}}
	}
	return ndp(eth, ip, layers.ICMPv6TypeNeighborAdvertisement, na)
}

// ParseHexFrame decodes one frame given in hex as "calyx-lab inject"
// takes it: hex digits, optionally separated by ':', '-', '.' or spaces.
// A frame shorter than an Ethernet header is refused.
func ParseHexFrame(s string) ([]byte, error) {
	clean := strings.Map(func(r rune) rune {
		switch r {
		case ':', '-', '.', ' ', '\t', '\n':
			return -1
		}
		return r
	}, s)
	b, err := hex.DecodeString(clean)
	if err != nil {
		return nil, fmt.Errorf("frame %.20q...: %w", s, err)
	}
	if len(b) < 14 {
		return nil, fmt.Errorf("frame of %d bytes: shorter than an Ethernet header", len(b))
	}
	return b, nil
}

// InjectConfig is what "calyx-lab inject" is given.
type InjectConfig struct {
	// Iface is the interface to write to, in the current network
	// namespace.
	Iface string
	// Count is how many times each frame is written (0 means once).
	Count int
	// Frames are whole Ethernet frames, written as they are.
	Frames [][]byte
}

// RunInject writes every frame of cfg, Count times each in turn, to an
// AF_PACKET/SOCK_RAW socket bound to cfg.Iface in the current network
// namespace: they leave the interface as they are, with no checksum or
// header touched (on a veth they arrive at its peer's ingress). It returns
// the number of frames written.
func RunInject(cfg InjectConfig) (int, error) {
	if cfg.Iface == "" {
		return 0, errors.New("inject: no interface")
	}
	if len(cfg.Frames) == 0 {
		return 0, errors.New("inject: no frame")
	}
	count := cfg.Count
	if count == 0 {
		count = 1
	}
	if count < 0 || count > maxInjectCount {
		return 0, fmt.Errorf("inject: count %d: want 1..%d", count, maxInjectCount)
	}
	ifi, err := net.InterfaceByName(cfg.Iface)
	if err != nil {
		return 0, fmt.Errorf("inject: interface %s: %w", cfg.Iface, err)
	}
	for i, f := range cfg.Frames {
		if len(f) < 14 {
			return 0, fmt.Errorf("inject: frame %d: %d bytes, shorter than an Ethernet header", i, len(f))
		}
		if limit := ifi.MTU + 14; len(f) > limit {
			return 0, fmt.Errorf("inject: frame %d: %d bytes, more than %s takes (MTU %d + 14)", i, len(f), cfg.Iface, ifi.MTU)
		}
	}
	// Protocol 0: the socket only sends, it is handed no packet.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("inject: packet socket: %w", err)
	}
	defer unix.Close(fd)
	sa := &unix.SockaddrLinklayer{Ifindex: ifi.Index}
	if err := unix.Bind(fd, sa); err != nil {
		return 0, fmt.Errorf("inject: bind to %s: %w", cfg.Iface, err)
	}
	sent := 0
	for range count {
		for i, f := range cfg.Frames {
			if err := unix.Sendto(fd, f, 0, sa); err != nil {
				return sent, fmt.Errorf("inject: frame %d on %s: %w", i, cfg.Iface, err)
			}
			sent++
		}
	}
	return sent, nil
}

// InjectBinary is the program Inject runs: calyx-lab (see RelayBinary).
func (l *Lab) InjectBinary() string { return l.RelayBinary() }

// Inject writes frames, once each, to iface inside namespace ns ("calyx-lab
// inject" run there): from a namespace on an underlay segment they are what
// a neighbour on the segment sends, from a workload's namespace what the
// workload sends.
func (l *Lab) Inject(ns, iface string, frames ...[]byte) error {
	return l.InjectCount(ns, iface, 1, frames...)
}

// InjectCount is Inject writing each frame count times.
func (l *Lab) InjectCount(ns, iface string, count int, frames ...[]byte) error {
	if len(frames) == 0 {
		return errors.New("inject: no frame")
	}
	args := []string{l.InjectBinary(), "inject", "--iface", iface, "--count", strconv.Itoa(count)}
	for _, f := range frames {
		args = append(args, hex.EncodeToString(f))
	}
	if _, err := l.Run(Command{NS: ns, Args: args}); err != nil {
		return fmt.Errorf("inject %d frame(s) x%d on %s in %s: %w", len(frames), count, iface, ns, err)
	}
	return nil
}

// MAC returns the MAC address of iface in namespace ns ("" for the root
// namespace), from "ip -j link show".
func (l *Lab) MAC(ns, iface string) (net.HardwareAddr, error) {
	args := []string{"ip"}
	if ns != "" {
		args = append(args, "-n", ns)
	}
	res, err := l.Exec("", append(args, "-j", "link", "show", "dev", iface)...)
	if err != nil {
		return nil, err
	}
	mac, err := ParseLinkMAC([]byte(res.Stdout))
	if err != nil {
		return nil, fmt.Errorf("%s in %s: %w", iface, ns, err)
	}
	return mac, nil
}

// ParseLinkMAC reads the MAC address of the one interface of
// "ip -j link show dev IFACE".
func ParseLinkMAC(out []byte) (net.HardwareAddr, error) {
	var links []struct {
		Name    string `json:"ifname"`
		Address string `json:"address"`
	}
	if err := json.Unmarshal(out, &links); err != nil {
		return nil, fmt.Errorf("ip -j link show: %w", err)
	}
	if len(links) != 1 {
		return nil, fmt.Errorf("ip -j link show: %d interfaces, want 1", len(links))
	}
	mac, err := net.ParseMAC(links[0].Address)
	if err != nil || len(mac) != 6 {
		return nil, fmt.Errorf("ip -j link show: %s has no Ethernet address (%q)", links[0].Name, links[0].Address)
	}
	return mac, nil
}
