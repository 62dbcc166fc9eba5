package subnetsvc

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/calyxnet/calyx/agent/subnets"
)

var (
	hostMAC  = net.HardwareAddr{0xee, 0xee, 0xee, 0xee, 0xee, 0xee}
	vmMAC    = net.HardwareAddr{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}
	otherMAC = net.HardwareAddr{0x52, 0x54, 0x00, 0x99, 0x99, 0x99}
	vmLL     = net.ParseIP("fe80::5054:ff:fe12:3456")
	t0       = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
)

// The interfaces of the fixed Service set the tests and fuzz targets use.
const (
	ifDual   = 10 // IPv4 and IPv6, host routes, MTU 1450
	ifV4     = 11 // IPv4 only, no DNS, no host routes, no MTU
	ifNone   = 12 // an endpoint with neither lease
	ifAbsent = 99 // no endpoint at all
)

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func mustAddr(s string) netip.Addr     { return netip.MustParseAddr(s) }

func testServices() map[int]subnets.Service {
	gw := mustAddr("10.65.0.1")
	return map[int]subnets.Service{
		ifDual: {
			Endpoint: "vm-dual", Ifname: "tap0", Ifindex: ifDual, HostMAC: hostMAC, MAC: vmMAC,
			V4: &subnets.Lease{
				Addr: mustAddr("10.65.0.7"), Prefix: mustPrefix("10.65.0.0/24"), Gateway: gw,
				DNS: []netip.Addr{mustAddr("10.65.0.53"), mustAddr("10.65.0.54")},
				Routes: []subnets.Route{
					{Dst: mustPrefix("11.11.0.0/16"), Via: gw},
					{Dst: mustPrefix("192.0.2.128/25"), Via: gw},
				},
				MTU: 1450, Duration: time.Hour, Subnet: "calico-v4", Network: "internal",
			},
			V6: &subnets.Lease{
				Addr: mustAddr("fd00:65::7"), Prefix: mustPrefix("fd00:65::/64"), Gateway: subnets.V6Gateway,
				DNS: []netip.Addr{mustAddr("fd00:65::53")}, MTU: 1450, Duration: time.Hour, Subnet: "calico-v6",
			},
		},
		ifV4: {
			Endpoint: "vm-v4", Ifname: "tap1", Ifindex: ifV4, HostMAC: hostMAC, MAC: vmMAC,
			V4: &subnets.Lease{
				Addr: mustAddr("11.8.0.9"), Prefix: mustPrefix("11.8.0.0/24"), Gateway: mustAddr("11.8.0.1"),
				Duration: 2 * time.Hour,
			},
		},
		ifNone: {Endpoint: "vm-none", Ifname: "tap2", Ifindex: ifNone, HostMAC: hostMAC, MAC: vmMAC},
	}
}

type harness struct {
	s      *Server
	now    time.Time
	leases []subnets.LeaseRecord
}

func newHarness(t testing.TB) *harness {
	h := &harness{now: t0}
	h.s = newServer(nil, func(r subnets.LeaseRecord) { h.leases = append(h.leases, r) })
	h.s.now = func() time.Time { return h.now }
	h.s.Update(testServices())
	return h
}

func (h *harness) count(fam, typ string) float64 {
	return testutil.ToFloat64(h.s.m.messages.WithLabelValues(fam, typ))
}

func (h *harness) ignored(fam, reason string) float64 {
	return testutil.ToFloat64(h.s.m.ignored.WithLabelValues(fam, reason))
}

// decode parses a reply frame and checks what every reply shares: from
// the host side's MAC, checksums right.
func decode(t *testing.T, frame []byte) gopacket.Packet {
	t.Helper()
	p := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
	if el := p.ErrorLayer(); el != nil {
		t.Fatalf("reply does not decode: %v", el.Error())
	}
	eth := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	if eth.SrcMAC.String() != hostMAC.String() {
		t.Errorf("reply from MAC %s, want the host side's %s", eth.SrcMAC, hostMAC)
	}
	verifyChecksums(t, p)
	return p
}

// verifyChecksums recomputes the IPv4 header checksum and the UDP/ICMPv6
// checksum over the pseudo-header: a real client drops a frame whose sums
// are wrong.
func verifyChecksums(t *testing.T, p gopacket.Packet) {
	t.Helper()
	var pseudo []byte
	var proto byte
	var l4 []byte
	if ip4, ok := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4); ok {
		if sum(ip4.Contents) != 0xffff {
			t.Errorf("IPv4 header checksum wrong")
		}
		proto = byte(ip4.Protocol)
		l4 = ip4.Payload
		pseudo = append(append(append([]byte{}, ip4.SrcIP.To4()...), ip4.DstIP.To4()...), 0, proto, byte(len(l4)>>8), byte(len(l4)))
	} else if ip6, ok := p.Layer(layers.LayerTypeIPv6).(*layers.IPv6); ok {
		proto = byte(ip6.NextHeader)
		l4 = ip6.Payload
		pseudo = append(append([]byte{}, ip6.SrcIP.To16()...), ip6.DstIP.To16()...)
		pseudo = binary.BigEndian.AppendUint32(pseudo, uint32(len(l4)))
		pseudo = append(pseudo, 0, 0, 0, proto)
	} else {
		t.Fatal("reply is neither IPv4 nor IPv6")
	}
	if sum(append(pseudo, l4...)) != 0xffff {
		t.Errorf("protocol %d checksum wrong", proto)
	}
}

func sum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}
