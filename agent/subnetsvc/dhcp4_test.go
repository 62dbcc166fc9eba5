package subnetsvc

import (
	"net"
	"slices"
	"testing"
	"time"

	"github.com/gopacket/gopacket/layers"
	"github.com/insomniacslk/dhcp/dhcpv4"
)

var (
	v4gw    = net.IPv4(10, 65, 0, 1).To4()
	v4addr  = net.IPv4(10, 65, 0, 7).To4()
	v4other = net.IPv4(10, 65, 0, 8).To4()
)

// clientV4 is a request as a client sends it: from srcMAC (and chaddr),
// IP src → dst, UDP 68 → 67, built with the DHCP library.
type clientV4 struct {
	mt          dhcpv4.MessageType
	srcMAC      net.HardwareAddr
	chaddr      net.HardwareAddr // default srcMAC
	src, dst    net.IP           // default 0.0.0.0 → 255.255.255.255
	ciaddr      net.IP
	requested   net.IP
	serverID    net.IP
	giaddr      net.IP
	sport       uint16 // default 68
	unicastToGW bool   // Ethernet destination the host side, not broadcast
}

func (c clientV4) frame(t testing.TB) []byte {
	t.Helper()
	if c.chaddr == nil {
		c.chaddr = c.srcMAC
	}
	if c.src == nil {
		c.src = net.IPv4zero
	}
	if c.dst == nil {
		c.dst = net.IPv4bcast
	}
	if c.sport == 0 {
		c.sport = portDHCPv4Client
	}
	mods := []dhcpv4.Modifier{dhcpv4.WithMessageType(c.mt), dhcpv4.WithHwAddr(c.chaddr),
		dhcpv4.WithRequestedOptions(dhcpv4.OptionSubnetMask, dhcpv4.OptionRouter, dhcpv4.OptionClasslessStaticRoute, dhcpv4.OptionInterfaceMTU)}
	if c.ciaddr != nil {
		mods = append(mods, dhcpv4.WithClientIP(c.ciaddr))
	}
	if c.requested != nil {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(c.requested)))
	}
	if c.serverID != nil {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptServerIdentifier(c.serverID)))
	}
	if c.giaddr != nil {
		mods = append(mods, dhcpv4.WithGatewayIP(c.giaddr))
	}
	m, err := dhcpv4.New(mods...)
	if err != nil {
		t.Fatal(err)
	}
	dstMAC := layers.EthernetBroadcast
	if c.unicastToGW {
		dstMAC = hostMAC
	}
	f, err := udp4Frame(c.srcMAC, dstMAC, c.src, c.dst, c.sport, portDHCPv4Server, m.ToBytes())
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// v4Reply decodes the one reply frame and checks its addressing.
func v4Reply(t *testing.T, frames [][]byte, dstMAC net.HardwareAddr, dstIP net.IP) *dhcpv4.DHCPv4 {
	t.Helper()
	if len(frames) != 1 {
		t.Fatalf("%d reply frames, want 1", len(frames))
	}
	p := decode(t, frames[0])
	eth := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	ip, _ := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	udp, _ := p.Layer(layers.LayerTypeUDP).(*layers.UDP)
	if ip == nil || udp == nil {
		t.Fatalf("reply is not IPv4/UDP: %v", p)
	}
	if eth.DstMAC.String() != dstMAC.String() || !ip.DstIP.Equal(dstIP) {
		t.Errorf("reply to %s/%s, want %s/%s", eth.DstMAC, ip.DstIP, dstMAC, dstIP)
	}
	if !ip.SrcIP.Equal(v4gw) || udp.SrcPort != 67 || udp.DstPort != 68 {
		t.Errorf("reply from %s:%d to port %d, want the gateway %s:67 to port 68", ip.SrcIP, udp.SrcPort, udp.DstPort, v4gw)
	}
	m, err := dhcpv4.FromBytes(udp.Payload)
	if err != nil {
		t.Fatalf("reply payload: %v", err)
	}
	if m.OpCode != dhcpv4.OpcodeBootReply || m.ClientHWAddr.String() != vmMAC.String() {
		t.Errorf("reply op %v chaddr %s", m.OpCode, m.ClientHWAddr)
	}
	return m
}

// checkConfig checks everything an OFFER or ACK on ifDual tells the
// client, decoded by the library; lease says whether the lease times (and
// yiaddr) are there.
func checkConfig(t *testing.T, m *dhcpv4.DHCPv4, lease bool) {
	t.Helper()
	if got := m.SubnetMask(); got.String() != net.CIDRMask(24, 32).String() {
		t.Errorf("subnet mask %v, want /24", got)
	}
	if got := m.Router(); len(got) != 1 || !got[0].Equal(v4gw) {
		t.Errorf("router %v, want %v", got, v4gw)
	}
	if got := m.ServerIdentifier(); !got.Equal(v4gw) {
		t.Errorf("server identifier %v, want %v", got, v4gw)
	}
	if got := m.DNS(); len(got) != 2 || !got[0].Equal(net.IPv4(10, 65, 0, 53)) || !got[1].Equal(net.IPv4(10, 65, 0, 54)) {
		t.Errorf("DNS %v", got)
	}
	if got := m.BroadcastAddress(); !got.Equal(net.IPv4(10, 65, 0, 255)) {
		t.Errorf("broadcast %v", got)
	}
	var routes []string
	for _, r := range m.ClasslessStaticRoute() {
		routes = append(routes, r.Dest.String()+" via "+r.Router.String())
	}
	want := []string{"11.11.0.0/16 via 10.65.0.1", "192.0.2.128/25 via 10.65.0.1", "0.0.0.0/0 via 10.65.0.1"}
	if !slices.Equal(routes, want) {
		t.Errorf("option 121: %q, want %q", routes, want)
	}
	if mtu, err := dhcpv4.GetUint16(dhcpv4.OptionInterfaceMTU, m.Options); err != nil || mtu != 1450 {
		t.Errorf("option 26: %d, %v; want 1450", mtu, err)
	}
	if lease {
		if !m.YourIPAddr.Equal(v4addr) {
			t.Errorf("yiaddr %v, want %v", m.YourIPAddr, v4addr)
		}
		if d := m.IPAddressLeaseTime(0); d != time.Hour {
			t.Errorf("lease time %v", d)
		}
		if d := m.IPAddressRenewalTime(0); d != 30*time.Minute {
			t.Errorf("T1 %v", d)
		}
		if d := m.IPAddressRebindingTime(0); d != time.Hour*7/8 {
			t.Errorf("T2 %v", d)
		}
	} else {
		if !m.YourIPAddr.IsUnspecified() {
			t.Errorf("yiaddr %v in an ACK to INFORM", m.YourIPAddr)
		}
		for _, o := range []dhcpv4.OptionCode{dhcpv4.OptionIPAddressLeaseTime, dhcpv4.OptionRenewTimeValue, dhcpv4.OptionRebindingTimeValue} {
			if m.Options.Has(o) {
				t.Errorf("option %v in an ACK to INFORM", o)
			}
		}
	}
}

func TestDHCPv4(t *testing.T) {
	bcastMAC, bcastIP := layers.EthernetBroadcast, net.IPv4bcast
	type want struct {
		mt       dhcpv4.MessageType // 0: no reply
		dstMAC   net.HardwareAddr
		dstIP    net.IP
		lease    bool   // an ACK recorded through onLease
		released bool   // onLease with Released
		ignored  string // the reason counted, when no reply
		counted  string // the received type counted
	}
	cases := []struct {
		name string
		idx  int
		req  clientV4
		want want
	}{
		{"discover → offer", ifDual, clientV4{mt: dhcpv4.MessageTypeDiscover, srcMAC: vmMAC},
			want{mt: dhcpv4.MessageTypeOffer, dstMAC: bcastMAC, dstIP: bcastIP, counted: "discover"}},
		{"request (selecting) → ack", ifDual, clientV4{mt: dhcpv4.MessageTypeRequest, srcMAC: vmMAC, requested: v4addr, serverID: v4gw},
			want{mt: dhcpv4.MessageTypeAck, dstMAC: bcastMAC, dstIP: bcastIP, lease: true, counted: "request"}},
		{"request for another address → nak", ifDual, clientV4{mt: dhcpv4.MessageTypeRequest, srcMAC: vmMAC, requested: v4other, serverID: v4gw},
			want{mt: dhcpv4.MessageTypeNak, dstMAC: bcastMAC, dstIP: bcastIP, counted: "request"}},
		{"request naming another server → nak", ifDual, clientV4{mt: dhcpv4.MessageTypeRequest, srcMAC: vmMAC, requested: v4addr, serverID: net.IPv4(10, 65, 0, 2)},
			want{mt: dhcpv4.MessageTypeNak, dstMAC: bcastMAC, dstIP: bcastIP, counted: "request"}},
		{"init-reboot, right address → ack", ifDual, clientV4{mt: dhcpv4.MessageTypeRequest, srcMAC: vmMAC, requested: v4addr},
			want{mt: dhcpv4.MessageTypeAck, dstMAC: bcastMAC, dstIP: bcastIP, lease: true, counted: "request"}},
		{"init-reboot, wrong address → nak", ifDual, clientV4{mt: dhcpv4.MessageTypeRequest, srcMAC: vmMAC, requested: v4other},
			want{mt: dhcpv4.MessageTypeNak, dstMAC: bcastMAC, dstIP: bcastIP, counted: "request"}},
		{"renew (unicast to the gateway) → unicast ack", ifDual, clientV4{mt: dhcpv4.MessageTypeRequest, srcMAC: vmMAC, ciaddr: v4addr, src: v4addr, dst: v4gw, unicastToGW: true},
			want{mt: dhcpv4.MessageTypeAck, dstMAC: vmMAC, dstIP: v4addr, lease: true, counted: "request"}},
		{"rebind (broadcast) → unicast ack", ifDual, clientV4{mt: dhcpv4.MessageTypeRequest, srcMAC: vmMAC, ciaddr: v4addr, src: v4addr},
			want{mt: dhcpv4.MessageTypeAck, dstMAC: vmMAC, dstIP: v4addr, lease: true, counted: "request"}},
		{"renew of another address → broadcast nak", ifDual, clientV4{mt: dhcpv4.MessageTypeRequest, srcMAC: vmMAC, ciaddr: v4other, src: v4other, dst: v4gw, unicastToGW: true},
			want{mt: dhcpv4.MessageTypeNak, dstMAC: bcastMAC, dstIP: bcastIP, counted: "request"}},
		{"request asking for nothing → ignored", ifDual, clientV4{mt: dhcpv4.MessageTypeRequest, srcMAC: vmMAC},
			want{ignored: reasonMalformed, counted: "request"}},
		{"release → lease goes, no reply", ifDual, clientV4{mt: dhcpv4.MessageTypeRelease, srcMAC: vmMAC, ciaddr: v4addr, src: v4addr, dst: v4gw, serverID: v4gw, unicastToGW: true},
			want{released: true, counted: "release"}},
		{"release of another address → ignored", ifDual, clientV4{mt: dhcpv4.MessageTypeRelease, srcMAC: vmMAC, ciaddr: v4other, src: v4other, dst: v4gw, unicastToGW: true},
			want{ignored: reasonNotLeased, counted: "release"}},
		{"decline → lease goes, no reply", ifDual, clientV4{mt: dhcpv4.MessageTypeDecline, srcMAC: vmMAC, requested: v4addr, serverID: v4gw},
			want{released: true, counted: "decline"}},
		{"inform → ack without lease", ifDual, clientV4{mt: dhcpv4.MessageTypeInform, srcMAC: vmMAC, ciaddr: v4addr, src: v4addr},
			want{mt: dhcpv4.MessageTypeAck, dstMAC: vmMAC, dstIP: v4addr, counted: "inform"}},
		{"another MAC → ignored", ifDual, clientV4{mt: dhcpv4.MessageTypeDiscover, srcMAC: otherMAC},
			want{ignored: reasonWrongMAC}},
		{"endpoint's frame MAC, another chaddr → ignored", ifDual, clientV4{mt: dhcpv4.MessageTypeDiscover, srcMAC: vmMAC, chaddr: otherMAC},
			want{ignored: reasonWrongMAC}},
		{"endpoint without a v4 lease → ignored", ifNone, clientV4{mt: dhcpv4.MessageTypeDiscover, srcMAC: vmMAC},
			want{ignored: reasonNoLease}},
		{"no endpoint on the interface → ignored", ifAbsent, clientV4{mt: dhcpv4.MessageTypeDiscover, srcMAC: vmMAC},
			want{ignored: reasonNotEndpoint}},
		{"unicast to another server → ignored", ifDual, clientV4{mt: dhcpv4.MessageTypeRequest, srcMAC: vmMAC, ciaddr: v4addr, src: v4addr, dst: net.IPv4(10, 65, 0, 9), unicastToGW: true},
			want{ignored: reasonNotForUs}},
		{"relayed → ignored", ifDual, clientV4{mt: dhcpv4.MessageTypeDiscover, srcMAC: vmMAC, giaddr: net.IPv4(10, 65, 0, 3)},
			want{ignored: reasonNotForUs}},
		{"from a server port → ignored", ifDual, clientV4{mt: dhcpv4.MessageTypeDiscover, srcMAC: vmMAC, sport: 67},
			want{ignored: reasonNotForUs}},
		{"an offer from the instance → ignored", ifDual, clientV4{mt: dhcpv4.MessageTypeOffer, srcMAC: vmMAC},
			want{ignored: reasonUnsupported}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			out := h.s.handleV4(tc.idx, tc.req.frame(t), h.now)
			w := tc.want
			if w.mt == 0 {
				if len(out) != 0 {
					t.Fatalf("%d replies, want none", len(out))
				}
			} else {
				m := v4Reply(t, out, w.dstMAC, w.dstIP)
				if m.MessageType() != w.mt {
					t.Fatalf("reply %v, want %v", m.MessageType(), w.mt)
				}
				if h.count("v4", v4TypeLabel(w.mt)) != 1 {
					t.Errorf("calyx_dhcp_messages_total{v4,%s} not 1", v4TypeLabel(w.mt))
				}
				switch w.mt {
				case dhcpv4.MessageTypeNak:
					if !m.YourIPAddr.IsUnspecified() || !m.ServerIdentifier().Equal(v4gw) || m.Message() == "" {
						t.Errorf("nak: yiaddr %v server id %v message %q", m.YourIPAddr, m.ServerIdentifier(), m.Message())
					}
				default:
					checkConfig(t, m, tc.req.mt != dhcpv4.MessageTypeInform)
					if tc.req.ciaddr != nil && !m.ClientIPAddr.Equal(tc.req.ciaddr) {
						t.Errorf("ciaddr %v, want %v", m.ClientIPAddr, tc.req.ciaddr)
					}
				}
			}
			if w.counted != "" && h.count("v4", w.counted) != 1 {
				t.Errorf("calyx_dhcp_messages_total{v4,%s} not 1", w.counted)
			}
			if w.ignored != "" && (h.ignored("v4", w.ignored) != 1 || h.count("v4", "ignored") != 1) {
				t.Errorf("not counted as ignored (%s)", w.ignored)
			}
			if w.ignored == "" && h.count("v4", "ignored") != 0 {
				t.Errorf("counted as ignored")
			}
			switch {
			case w.lease:
				if len(h.leases) != 1 {
					t.Fatalf("%d lease records, want 1", len(h.leases))
				}
				r := h.leases[0]
				if r.Released || r.Endpoint != "vm-dual" || r.Ifindex != ifDual || r.MAC.String() != vmMAC.String() ||
					r.Addr != mustAddr("10.65.0.7") || !r.Expires.Equal(t0.Add(time.Hour)) || !r.LastSeen.Equal(t0) {
					t.Errorf("lease record %+v", r)
				}
			case w.released:
				if len(h.leases) != 1 || !h.leases[0].Released || h.leases[0].Addr != mustAddr("10.65.0.7") {
					t.Fatalf("lease records %+v, want one released 10.65.0.7", h.leases)
				}
			default:
				if len(h.leases) != 0 {
					t.Errorf("lease records %+v, want none", h.leases)
				}
			}
		})
	}
}

// TestDHCPv4Minimal: a lease with no MTU, DNS or host routes gets no
// option 26 or 6, and option 121 holds the default route alone.
func TestDHCPv4Minimal(t *testing.T) {
	h := newHarness(t)
	out := h.s.handleV4(ifV4, clientV4{mt: dhcpv4.MessageTypeDiscover, srcMAC: vmMAC}.frame(t), h.now)
	if len(out) != 1 {
		t.Fatalf("%d replies", len(out))
	}
	p := decode(t, out[0])
	m, err := dhcpv4.FromBytes(p.Layer(layers.LayerTypeUDP).(*layers.UDP).Payload)
	if err != nil {
		t.Fatal(err)
	}
	if m.Options.Has(dhcpv4.OptionInterfaceMTU) || m.Options.Has(dhcpv4.OptionDomainNameServer) {
		t.Errorf("options 26 or 6 sent without an MTU or DNS: %v", m.Options)
	}
	rs := m.ClasslessStaticRoute()
	if len(rs) != 1 || rs[0].Dest.String() != "0.0.0.0/0" || !rs[0].Router.Equal(net.IPv4(11, 8, 0, 1)) {
		t.Errorf("option 121 %v, want the default route via 11.8.0.1 alone", rs)
	}
	if !m.YourIPAddr.Equal(net.IPv4(11, 8, 0, 9)) || m.IPAddressLeaseTime(0) != 2*time.Hour {
		t.Errorf("yiaddr %v lease %v", m.YourIPAddr, m.IPAddressLeaseTime(0))
	}
}

// TestDHCPv4Malformed: frames cut short or with a bad DHCP payload are
// counted and dropped.
func TestDHCPv4Malformed(t *testing.T) {
	h := newHarness(t)
	good := clientV4{mt: dhcpv4.MessageTypeDiscover, srcMAC: vmMAC}.frame(t)
	for i, f := range [][]byte{
		nil,
		good[:20],      // inside the IPv4 header
		good[:14+20+8], // UDP header, no payload
		good[:14+20+8+100],
	} {
		if out := h.s.handleV4(ifDual, f, h.now); len(out) != 0 {
			t.Errorf("frame %d: %d replies", i, len(out))
		}
	}
	if got := h.ignored("v4", reasonMalformed); got != 4 {
		t.Errorf("malformed counted %v times, want 4", got)
	}
}
