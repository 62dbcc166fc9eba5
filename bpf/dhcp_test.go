package bpf_test

// Layer 2 tests of IPv4 from 0.0.0.0 in calyx_from_wl (cx_from_wl_dhcp):
// an unconfigured workload may send a DHCP client's request (UDP 68 -> 67,
// BOOTREQUEST, Ethernet, chaddr its own MAC), broadcast or to its gateway
// (the host side's MAC), and it goes to the host stack for the agent's DHCP
// server. Anything else from an address nobody owns is spoofing, and a
// request for another MAC (a lease for someone else, pool exhaustion) is a
// MAC spoof. The messages are built with gopacket's DHCPv4, as a client
// would send them.

import (
	"encoding/binary"
	"net"
	"net/netip"
	"slices"
	"testing"

	"github.com/gopacket/gopacket/layers"

	"github.com/calyxnet/calyx/bpf/bpftest"
	"github.com/calyxnet/calyx/bpfmap"
)

var ip4Broadcast = netip.AddrFrom4([4]byte{255, 255, 255, 255})

// Offsets in a frame from dhcpFrame (IPv4 header without options).
const (
	dhcpOff    = 14 + 20 + 8 // the BOOTP message
	dhcpHLen   = dhcpOff + 2
	dhcpChaddr = dhcpOff + 28
)

// dhcpMsg is a DHCP client's message of type typ asking for chaddr.
func dhcpMsg(typ layers.DHCPMsgType, chaddr net.HardwareAddr) *layers.DHCPv4 {
	opts := layers.DHCPOptions{
		layers.NewDHCPOption(layers.DHCPOptMessageType, []byte{byte(typ)}),
		layers.NewDHCPOption(layers.DHCPOptParamsRequest, []byte{byte(layers.DHCPOptSubnetMask), byte(layers.DHCPOptRouter), byte(layers.DHCPOptDNS)}),
	}
	if typ == layers.DHCPMsgTypeRequest {
		opts = append(opts, layers.NewDHCPOption(layers.DHCPOptRequestIP, []byte{10, 65, 0, 10}))
	}
	return &layers.DHCPv4{Operation: layers.DHCPOpRequest, HardwareType: layers.LinkTypeEthernet,
		Xid: 0xca1fca1f, Flags: 0x8000, ClientHWAddr: chaddr, Options: opts}
}

// dhcpFrame is msg in UDP sport -> dport from 0.0.0.0 to dst, in an
// Ethernet frame l2.
func dhcpFrame(l2 bpftest.L2, dst netip.Addr, sport, dport uint16, msg *layers.DHCPv4) []byte {
	ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolUDP, Id: 0x4444,
		SrcIP: net.IPv4zero.To4(), DstIP: dst.AsSlice()}
	udp := &layers.UDP{SrcPort: layers.UDPPort(sport), DstPort: layers.UDPPort(dport)}
	_ = udp.SetNetworkLayerForChecksum(ip)
	eth := &layers.Ethernet{SrcMAC: l2.Src, DstMAC: l2.Dst, EthernetType: layers.EthernetTypeIPv4}
	return bpftest.Serialize(eth, ip, udp, msg)
}

// discover is a DHCPDISCOVER from ep, broadcast, asking for its MAC.
func discover(ep *endpoint) []byte {
	return dhcpFrame(bpftest.L2{Src: ep.mac, Dst: bpftest.Broadcast}, ip4Broadcast, 68, 67,
		dhcpMsg(layers.DHCPMsgTypeDiscover, ep.mac))
}

// edited returns a copy of frame changed by fn, with its IPv4 header
// checksum recomputed.
func edited(frame []byte, fn func(b []byte)) []byte {
	out := slices.Clone(frame)
	fn(out)
	fixIPv4Checksum(out[14:])
	return out
}

// udpFrom0 is a UDP datagram from 0.0.0.0 carrying payload (cut BOOTP
// messages and the like), the lengths fixed.
func udpFrom0(l2 bpftest.L2, dst netip.Addr, sport, dport uint16, payload []byte) []byte {
	return bpftest.IPv4UDP(l2, bpftest.IPv4{Src: netip.IPv4Unspecified(), Dst: dst, NoDF: true}, sport, dport, payload)
}

// What an unconfigured workload may send: passed to the host stack as it
// is, counted pass-host.
func TestDHCPFromUnconfiguredWorkload(t *testing.T) {
	e := newEnv(t)
	vm, _ := e.addVM(t, 5, true, false)
	// The gateway IP stands for the host (a subnet's gatewayIP is in the
	// ipcache as one of its addresses): renewals are unicast to it.
	must(t, e.dp.Maps.IPCache.Put(netip.PrefixFrom(gatewayV4, 32), bpfmap.IPCacheEntry{Host: true}))
	w := e.wl1
	bcast := bpftest.L2{Src: w.mac, Dst: bpftest.Broadcast}
	for _, tc := range []struct {
		name string
		ep   *endpoint
		in   []byte
	}{
		{"discover, broadcast", w, discover(w)},
		{"request, broadcast", w, dhcpFrame(bcast, ip4Broadcast, 68, 67, dhcpMsg(layers.DHCPMsgTypeRequest, w.mac))},
		{"decline, broadcast", w, dhcpFrame(bcast, ip4Broadcast, 68, 67, dhcpMsg(layers.DHCPMsgTypeDecline, w.mac))},
		{"request to the gateway (the host side's MAC)", w, dhcpFrame(w.l2(), gatewayV4, 68, 67, dhcpMsg(layers.DHCPMsgTypeRequest, w.mac))},
		{"discover without options (plain BOOTP)", w, dhcpFrame(bcast, ip4Broadcast, 68, 67,
			&layers.DHCPv4{Operation: layers.DHCPOpRequest, HardwareType: layers.LinkTypeEthernet, ClientHWAddr: w.mac})},
		{"discover with a zero UDP checksum", w, edited(discover(w), func(b []byte) { b[14+20+6], b[14+20+7] = 0, 0 })},
		{"discover with hops 1 (not checked: still a client's)", w, edited(discover(w), func(b []byte) { b[dhcpOff+3] = 1 })},
		{"discover, TTL 1", w, edited(discover(w), func(b []byte) { b[14+8] = 1 })},
		{"a VM on a tap", vm, discover(vm)},
		// No CheckMAC: no MAC to hold the request to but its own frame's.
		{"no CheckMAC, another MAC asking for itself", e.wl4, dhcpFrame(bpftest.L2{Src: otherMAC, Dst: bpftest.Broadcast},
			ip4Broadcast, 68, 67, dhcpMsg(layers.DHCPMsgTypeDiscover, otherMAC))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := e.fromWL(t, tc.ep, tc.in)
			o.want(t, ok, hit{tc.ep, bpfmap.ReasonPassHost})
			o.unchanged(t)
		})
	}
	t.Run("with IP options", func(t *testing.T) {
		// The BOOTP header is found after them.
		in := withOptions(discover(w))
		o := e.fromWL(t, w, in)
		o.want(t, ok, hit{w, bpfmap.ReasonPassHost})
		o.unchanged(t)
		bad := slices.Clone(in)
		copy(bad[dhcpChaddr+4:], otherMAC) // chaddr, 4 bytes of options later
		e.fromWL(t, w, bad).want(t, shot, hit{w, bpfmap.ReasonDropSpoofMAC})
	})
}

// Everything else from 0.0.0.0, and DHCP requests that are not the
// endpoint's own: dropped where they came in, untouched.
func TestDHCPFromUnconfiguredWorkloadDrops(t *testing.T) {
	e := newEnv(t)
	w := e.wl1
	bcast := bpftest.L2{Src: w.mac, Dst: bpftest.Broadcast}
	ip4bc := ip4Broadcast
	disc := discover(w)
	msg := func() *layers.DHCPv4 { return dhcpMsg(layers.DHCPMsgTypeDiscover, w.mac) }
	// bootp is the serialized message, to cut.
	bootp := disc[dhcpOff:]
	for _, tc := range []struct {
		name   string
		ep     *endpoint
		in     []byte
		reason bpfmap.Reason
	}{
		// Not UDP: nothing but DHCP comes from an address nobody owns.
		{"tcp to 67", w, bpftest.IPv4TCP(bcast, bpftest.IPv4{Src: netip.IPv4Unspecified(), Dst: ip4bc}, 68, 67), bpfmap.ReasonDropSpoofIP},
		{"icmp echo", w, bpftest.IPv4ICMPEcho(w.l2(), bpftest.IPv4{Src: netip.IPv4Unspecified(), Dst: internet}, 1, 1), bpfmap.ReasonDropSpoofIP},
		{"icmp echo, broadcast", w, bpftest.IPv4ICMPEcho(bcast, bpftest.IPv4{Src: netip.IPv4Unspecified(), Dst: ip4bc}, 1, 1), bpfmap.ReasonDropSpoofIP},
		{"ip-in-ip", w, bpftest.IPIP(w.l2(), bpftest.IPv4{Src: netip.IPv4Unspecified(), Dst: hostAddr}, udp4(w, w.ip4, e.wl2.ip4, 64)[14:]), bpfmap.ReasonDropSpoofIP},
		// Fragments: the ports and the message cannot be checked.
		{"first fragment (MF)", w, edited(disc, func(b []byte) { b[14+6] |= 0x20 }), bpfmap.ReasonDropSpoofIP},
		{"later fragment (offset)", w, edited(disc, func(b []byte) { b[14+7] = 0x10 }), bpfmap.ReasonDropSpoofIP},
		// UDP, but not a DHCP client's request.
		{"udp 67 -> 67 (a relay or a server)", w, dhcpFrame(bcast, ip4bc, 67, 67, msg()), bpfmap.ReasonDropSpoofIP},
		{"udp 67 -> 68 (a rogue server's offer)", w, dhcpFrame(bcast, ip4bc, 67, 68, msg()), bpfmap.ReasonDropSpoofIP},
		{"udp 68 -> 68", w, dhcpFrame(bcast, ip4bc, 68, 68, msg()), bpfmap.ReasonDropSpoofIP},
		{"udp 40000 -> 67", w, dhcpFrame(bcast, ip4bc, 40000, 67, msg()), bpfmap.ReasonDropSpoofIP},
		{"udp 68 -> 53 (dns)", w, dhcpFrame(w.l2(), hostAddr, 68, 53, msg()), bpfmap.ReasonDropSpoofIP},
		{"udp to a workload", w, udpFrom0(w.l2(), e.wl2.ip4, 40000, 53, []byte("x")), bpfmap.ReasonDropSpoofIP},
		{"ip header only, protocol udp", w, edited(udpFrom0(bcast, ip4bc, 68, 67, nil)[:34], func(b []byte) {
			binary.BigEndian.PutUint16(b[16:], 20)
		}), bpfmap.ReasonDropSpoofIP},
		// The addresses: broadcast both ways, or unicast to the gateway.
		{"broadcast IP, another unicast MAC", w, dhcpFrame(bpftest.L2{Src: w.mac, Dst: otherMAC}, ip4bc, 68, 67, msg()), bpfmap.ReasonDropSpoofIP},
		{"broadcast IP, a multicast MAC", w, dhcpFrame(bpftest.L2{Src: w.mac, Dst: net.HardwareAddr{0x01, 0x00, 0x5e, 0x7f, 0xff, 0xff}}, ip4bc, 68, 67, msg()), bpfmap.ReasonDropSpoofIP},
		{"broadcast IP, MAC almost broadcast", w, dhcpFrame(bpftest.L2{Src: w.mac, Dst: net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xfe}}, ip4bc, 68, 67, msg()), bpfmap.ReasonDropSpoofIP},
		// The host side's MAC is the gateway's, for a unicast IP; the
		// broadcast IP goes with the broadcast MAC.
		{"broadcast IP, the host side's MAC", w, dhcpFrame(w.l2(), ip4bc, 68, 67, msg()), bpfmap.ReasonDropSpoofIP},
		{"subnet broadcast IP, broadcast MAC", w, dhcpFrame(bcast, netip.MustParseAddr("10.65.0.255"), 68, 67, msg()), bpfmap.ReasonDropSpoofIP},
		{"unicast IP, broadcast MAC", w, dhcpFrame(bcast, gatewayV4, 68, 67, msg()), bpfmap.ReasonDropSpoofIP},
		{"unicast IP, another MAC (someone else's server)", w, dhcpFrame(bpftest.L2{Src: w.mac, Dst: otherMAC}, netip.MustParseAddr("10.65.0.2"), 68, 67, msg()), bpfmap.ReasonDropSpoofIP},
		// To the gateway's MAC but not to the host: from 0.0.0.0 to
		// anyone else is no renewal (the host stack would only drop it
		// as a martian).
		{"unicast to another workload's address, the host side's MAC", w,
			dhcpFrame(w.l2(), e.wl2.ip4, 68, 67, msg()), bpfmap.ReasonDropSpoofIP},
		{"unicast to an outside address, the host side's MAC", w,
			dhcpFrame(w.l2(), internet, 68, 67, msg()), bpfmap.ReasonDropSpoofIP},
		{"unicast IP, another workload's host side MAC", w, dhcpFrame(bpftest.L2{Src: w.mac, Dst: e.wl2.hostMAC}, gatewayV4, 68, 67, msg()), bpfmap.ReasonDropSpoofIP},
		// Too short for the BOOTP header up to chaddr.
		{"no BOOTP message", w, udpFrom0(bcast, ip4bc, 68, 67, nil), bpfmap.ReasonDropMalformed},
		{"BOOTP cut after xid", w, udpFrom0(bcast, ip4bc, 68, 67, bootp[:8]), bpfmap.ReasonDropMalformed},
		{"BOOTP cut in giaddr", w, udpFrom0(bcast, ip4bc, 68, 67, bootp[:26]), bpfmap.ReasonDropMalformed},
		{"BOOTP cut in chaddr", w, udpFrom0(bcast, ip4bc, 68, 67, bootp[:33]), bpfmap.ReasonDropMalformed},
		// A workload posing as a relay agent, to be leased an address of
		// another subnet.
		{"giaddr set", w, edited(disc, func(b []byte) { copy(b[dhcpOff+24:], []byte{10, 99, 0, 1}) }), bpfmap.ReasonDropSpoofIP},
		// Not an Ethernet client's request.
		{"op 2 (BOOTREPLY)", w, edited(disc, func(b []byte) { b[dhcpOff] = 2 }), bpfmap.ReasonDropMalformed},
		{"op 0", w, edited(disc, func(b []byte) { b[dhcpOff] = 0 }), bpfmap.ReasonDropMalformed},
		{"htype 6 (IEEE 802)", w, edited(disc, func(b []byte) { b[dhcpOff+1] = 6 }), bpfmap.ReasonDropMalformed},
		{"htype 0", w, edited(disc, func(b []byte) { b[dhcpOff+1] = 0 }), bpfmap.ReasonDropMalformed},
		{"hlen 16", w, edited(disc, func(b []byte) { b[dhcpHLen] = 16 }), bpfmap.ReasonDropMalformed},
		{"hlen 0", w, edited(disc, func(b []byte) { b[dhcpHLen] = 0 }), bpfmap.ReasonDropMalformed},
		{"hlen 5", w, edited(disc, func(b []byte) { b[dhcpHLen] = 5 }), bpfmap.ReasonDropMalformed},
		// A lease for another MAC: another instance's, or one of many to
		// exhaust the pool.
		{"chaddr another MAC", w, dhcpFrame(bcast, ip4bc, 68, 67, dhcpMsg(layers.DHCPMsgTypeDiscover, otherMAC)), bpfmap.ReasonDropSpoofMAC},
		{"chaddr another workload's MAC", w, dhcpFrame(bcast, ip4bc, 68, 67, dhcpMsg(layers.DHCPMsgTypeDiscover, e.wl2.mac)), bpfmap.ReasonDropSpoofMAC},
		{"chaddr one byte off", w, edited(disc, func(b []byte) { b[dhcpChaddr+5] ^= 1 }), bpfmap.ReasonDropSpoofMAC},
		{"chaddr first byte off", w, edited(disc, func(b []byte) { b[dhcpChaddr] ^= 0x80 }), bpfmap.ReasonDropSpoofMAC},
		{"chaddr zero", w, edited(disc, func(b []byte) { copy(b[dhcpChaddr:], make([]byte, 6)) }), bpfmap.ReasonDropSpoofMAC},
		{"no CheckMAC, chaddr not the frame's source", e.wl4, dhcpFrame(bpftest.L2{Src: otherMAC, Dst: bpftest.Broadcast}, ip4bc, 68, 67,
			dhcpMsg(layers.DHCPMsgTypeDiscover, e.wl4.mac)), bpfmap.ReasonDropSpoofMAC},
		// The frame's source MAC is checked against the endpoint's first.
		{"CheckMAC, another source MAC asking for itself", w, dhcpFrame(bpftest.L2{Src: otherMAC, Dst: bpftest.Broadcast}, ip4bc, 68, 67,
			dhcpMsg(layers.DHCPMsgTypeDiscover, otherMAC)), bpfmap.ReasonDropSpoofMAC},
		{"CheckMAC, another source MAC asking for the endpoint's", w, dhcpFrame(bpftest.L2{Src: otherMAC, Dst: bpftest.Broadcast}, ip4bc, 68, 67,
			dhcpMsg(layers.DHCPMsgTypeDiscover, w.mac)), bpfmap.ReasonDropSpoofMAC},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := e.fromWL(t, tc.ep, tc.in)
			o.want(t, shot, hit{tc.ep, tc.reason})
			o.unchanged(t)
		})
	}
}

// A DHCP request from 0.0.0.0 is decided before policy: an endpoint whose
// egress policy denies everything, with endpointToHostAction Drop, still
// gets its address, and no rule is counted for it.
func TestDHCPFromUnconfiguredWorkloadUnderPolicy(t *testing.T) {
	e := newPolicyEnv(t)
	w := e.wl1
	e.setTables(t, w, tableDeny, tableDeny)
	cfg := e.tun.cfg
	cfg.EndpointToHost = bpfmap.EndpointToHostDrop
	must(t, e.dp.Maps.Config.Put(0, cfg))
	before := e.hits(t)
	o := e.fromWL(t, w, discover(w))
	o.want(t, ok, hit{w, bpfmap.ReasonPassHost})
	o.unchanged(t)
	e.wantHits(t, before)
	// ... and nothing else from 0.0.0.0 gets that far.
	in := udpFrom0(w.l2(), hostAddr, 68, 53, []byte("x"))
	e.fromWL(t, w, in).want(t, shot, hit{w, bpfmap.ReasonDropSpoofIP})
	e.wantHits(t, before)
}

// dhcpFuzzSeeds are DHCP messages from 0.0.0.0 for FuzzFromWorkload: a
// good discover and request, and a request for another MAC.
func dhcpFuzzSeeds(w *endpoint) [][]byte {
	bcast := bpftest.L2{Src: w.mac, Dst: bpftest.Broadcast}
	return [][]byte{
		discover(w),
		dhcpFrame(w.l2(), gatewayV4, 68, 67, dhcpMsg(layers.DHCPMsgTypeRequest, w.mac)),
		dhcpFrame(bcast, ip4Broadcast, 68, 67, dhcpMsg(layers.DHCPMsgTypeDiscover, otherMAC)),
		dhcpFrame(bcast, ip4Broadcast, 68, 67, dhcpMsg(layers.DHCPMsgTypeDiscover, w.mac))[:dhcpOff+30],
	}
}
