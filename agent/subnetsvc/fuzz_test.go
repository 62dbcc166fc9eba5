package subnetsvc

import (
	"net"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv6"
)

// FuzzHandleV4 feeds any frame to the DHCPv4 handler on the fixed Service
// set: it must not panic, and whatever it answers must be a well-formed
// IPv4/UDP frame from the host side.
func FuzzHandleV4(f *testing.F) {
	for _, c := range []clientV4{
		{mt: dhcpv4.MessageTypeDiscover, srcMAC: vmMAC},
		{mt: dhcpv4.MessageTypeRequest, srcMAC: vmMAC, requested: v4addr, serverID: v4gw},
		{mt: dhcpv4.MessageTypeRequest, srcMAC: vmMAC, ciaddr: v4addr, src: v4addr, dst: v4gw, unicastToGW: true},
		{mt: dhcpv4.MessageTypeRelease, srcMAC: vmMAC, ciaddr: v4addr, src: v4addr},
		{mt: dhcpv4.MessageTypeDecline, srcMAC: vmMAC, requested: v4addr},
		{mt: dhcpv4.MessageTypeInform, srcMAC: vmMAC, ciaddr: v4addr, src: v4addr},
	} {
		f.Add(c.frame(f), uint8(0))
		f.Add(c.frame(f), uint8(1))
	}
	s := newServer(nil, nil)
	s.Update(testServices())
	f.Fuzz(func(t *testing.T, frame []byte, which uint8) {
		idx := []int{ifDual, ifV4, ifNone, ifAbsent}[int(which)%4]
		for _, out := range s.handleV4(idx, frame, t0) {
			checkOut(t, out, layers.LayerTypeIPv4)
		}
	})
}

// FuzzHandleV6 is FuzzHandleV4 for DHCPv6 and router solicitations.
func FuzzHandleV6(f *testing.F) {
	ours := [][]net.IP{{v6addr}}
	for _, m := range []*dhcpv6.Message{
		clientV6(dhcpv6.MessageTypeSolicit, vmDUID, nil, [][]net.IP{nil}),
		clientV6(dhcpv6.MessageTypeSolicit, vmDUID, nil, [][]net.IP{nil, nil}, &dhcpv6.OptIAPD{IaId: iaid}),
		clientV6(dhcpv6.MessageTypeRequest, vmDUID, ServerDUID, ours),
		clientV6(dhcpv6.MessageTypeRenew, vmDUID, ServerDUID, [][]net.IP{{v6old, v6addr}}),
		clientV6(dhcpv6.MessageTypeRebind, vmDUID, nil, ours),
		clientV6(dhcpv6.MessageTypeConfirm, vmDUID, nil, ours),
		clientV6(dhcpv6.MessageTypeRelease, vmDUID, ServerDUID, ours),
		clientV6(dhcpv6.MessageTypeInformationRequest, nil, nil, nil),
	} {
		f.Add(v6Frame(f, vmMAC, vmLL, allDHCP, m), uint8(0))
	}
	f.Add(rsFrame(f, vmMAC, vmLL, 255), uint8(0))
	f.Add(rsFrame(f, vmMAC, net.IPv6unspecified, 255), uint8(1))
	s := newServer(nil, nil)
	s.Update(testServices())
	f.Fuzz(func(t *testing.T, frame []byte, which uint8) {
		idx := []int{ifDual, ifV4, ifNone, ifAbsent}[int(which)%4]
		for _, out := range s.handleV6(idx, frame, t0) {
			checkOut(t, out, layers.LayerTypeIPv6)
		}
	})
}

func checkOut(t *testing.T, out []byte, network gopacket.LayerType) {
	p := gopacket.NewPacket(out, layers.LayerTypeEthernet, gopacket.Default)
	if el := p.ErrorLayer(); el != nil {
		t.Fatalf("reply does not decode: %v", el.Error())
	}
	if p.Layer(network) == nil {
		t.Fatalf("reply has no %v layer", network)
	}
	if eth := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet); eth.SrcMAC.String() != hostMAC.String() {
		t.Fatalf("reply from %s", eth.SrcMAC)
	}
}
