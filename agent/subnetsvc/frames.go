package subnetsvc

import (
	"net"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"golang.org/x/net/bpf"
)

const (
	portDHCPv4Server = 67
	portDHCPv4Client = 68
	portDHCPv6Client = 546
	portDHCPv6Server = 547
	accept           = 1 << 18 // more than any frame: take it whole
)

// v4Filter takes IPv4 UDP to port 67, first fragments and whole datagrams
// only, so the reader wakes for DHCP requests and nothing else the host
// receives.
var v4Filter = []bpf.Instruction{
	bpf.LoadAbsolute{Off: 23, Size: 1}, // IPv4 protocol
	bpf.JumpIf{Cond: bpf.JumpEqual, Val: 17, SkipFalse: 6},
	bpf.LoadAbsolute{Off: 20, Size: 2}, // flags and fragment offset
	bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: 0x1fff, SkipTrue: 4},
	bpf.LoadMemShift{Off: 14},          // X = IPv4 header length
	bpf.LoadIndirect{Off: 16, Size: 2}, // UDP destination port
	bpf.JumpIf{Cond: bpf.JumpEqual, Val: portDHCPv4Server, SkipFalse: 1},
	bpf.RetConstant{Val: accept},
	bpf.RetConstant{Val: 0},
}

// v6Filter takes IPv6 UDP to port 547 and ICMPv6 router solicitations
// (type 133), without extension headers: neither carries any.
var v6Filter = []bpf.Instruction{
	bpf.LoadAbsolute{Off: 20, Size: 1}, // next header
	bpf.JumpIf{Cond: bpf.JumpEqual, Val: 17, SkipFalse: 2},
	bpf.LoadAbsolute{Off: 56, Size: 2}, // UDP destination port
	bpf.JumpIf{Cond: bpf.JumpEqual, Val: portDHCPv6Server, SkipTrue: 3, SkipFalse: 4},
	bpf.JumpIf{Cond: bpf.JumpEqual, Val: 58, SkipFalse: 3},
	bpf.LoadAbsolute{Off: 54, Size: 1}, // ICMPv6 type
	bpf.JumpIf{Cond: bpf.JumpEqual, Val: 133, SkipFalse: 1},
	bpf.RetConstant{Val: accept},
	bpf.RetConstant{Val: 0},
}

var serializeOpts = gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}

// udp4Frame is an Ethernet/IPv4/UDP frame with correct lengths and
// checksums around payload.
func udp4Frame(srcMAC, dstMAC net.HardwareAddr, src, dst net.IP, sport, dport uint16, payload []byte) ([]byte, error) {
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: src.To4(), DstIP: dst.To4()}
	return udpFrame(srcMAC, dstMAC, layers.EthernetTypeIPv4, ip, sport, dport, payload)
}

// udp6Frame is udp4Frame for IPv6; replies stay on the link, so the hop
// limit is 255 like every link-local conversation of a router.
func udp6Frame(srcMAC, dstMAC net.HardwareAddr, src, dst net.IP, sport, dport uint16, payload []byte) ([]byte, error) {
	ip := &layers.IPv6{Version: 6, HopLimit: 255, NextHeader: layers.IPProtocolUDP, SrcIP: src, DstIP: dst}
	return udpFrame(srcMAC, dstMAC, layers.EthernetTypeIPv6, ip, sport, dport, payload)
}

// udpNetwork is the IP header under a UDP datagram (*layers.IPv4 or
// *layers.IPv6).
type udpNetwork interface {
	gopacket.NetworkLayer
	gopacket.SerializableLayer
}

// udpFrame serializes Ethernet, ip, UDP and payload, the UDP checksum
// over ip's pseudo-header.
func udpFrame(srcMAC, dstMAC net.HardwareAddr, et layers.EthernetType, ip udpNetwork, sport, dport uint16, payload []byte) ([]byte, error) {
	eth := &layers.Ethernet{SrcMAC: srcMAC, DstMAC: dstMAC, EthernetType: et}
	udp := &layers.UDP{SrcPort: layers.UDPPort(sport), DstPort: layers.UDPPort(dport)}
	if err := udp.SetNetworkLayerForChecksum(ip); err != nil {
		return nil, err
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, serializeOpts, eth, ip, udp, gopacket.Payload(payload)); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// multicastMAC is the Ethernet address an IPv6 multicast group maps to
// (RFC 2464: 33:33 and the group's last 32 bits).
func multicastMAC(group net.IP) net.HardwareAddr {
	g := group.To16()
	return net.HardwareAddr{0x33, 0x33, g[12], g[13], g[14], g[15]}
}
