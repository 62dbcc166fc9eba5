package subnetsvc

import (
	"net"
	"testing"
	"time"

	"github.com/gopacket/gopacket/layers"
	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"
)

var (
	v6addr  = net.ParseIP("fd00:65::7")
	v6old   = net.ParseIP("fd00:65::99")
	v6dns   = net.ParseIP("fd00:65::53")
	vmDUID  = &dhcpv6.DUIDLLT{HWType: iana.HWTypeEthernet, Time: 12345, LinkLayerAddr: vmMAC}
	iaid    = [4]byte{0, 0, 0, 7}
	xid     = dhcpv6.TransactionID{1, 2, 3}
	otherSv = &dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: otherMAC}
)

// clientV6 builds a client message with the library: type, client DUID
// (nil: none), server DUID (nil: none), IA_NAs holding addrs.
func clientV6(mt dhcpv6.MessageType, client, server dhcpv6.DUID, ianas [][]net.IP, extra ...dhcpv6.Option) *dhcpv6.Message {
	m := &dhcpv6.Message{MessageType: mt, TransactionID: xid}
	if client != nil {
		m.AddOption(dhcpv6.OptClientID(client))
	}
	if server != nil {
		m.AddOption(dhcpv6.OptServerID(server))
	}
	m.AddOption(dhcpv6.OptElapsedTime(0))
	for i, addrs := range ianas {
		ia := &dhcpv6.OptIANA{IaId: iaid}
		ia.IaId[0] = byte(i)
		for _, a := range addrs {
			ia.Options.Add(&dhcpv6.OptIAAddress{IPv6Addr: a, PreferredLifetime: time.Hour, ValidLifetime: time.Hour})
		}
		m.AddOption(ia)
	}
	for _, o := range extra {
		m.AddOption(o)
	}
	return m
}

func v6Frame(t testing.TB, srcMAC net.HardwareAddr, src, dst net.IP, m dhcpv6.DHCPv6) []byte {
	t.Helper()
	f, err := udp6Frame(srcMAC, multicastMAC(dst), src, dst, portDHCPv6Client, portDHCPv6Server, m.ToBytes())
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// v6Reply decodes the one reply and checks its addressing: fe80::1 and
// the host side's MAC to the client's link-local address and MAC.
func v6Reply(t *testing.T, frames [][]byte) *dhcpv6.Message {
	t.Helper()
	if len(frames) != 1 {
		t.Fatalf("%d reply frames, want 1", len(frames))
	}
	p := decode(t, frames[0])
	eth := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	ip, _ := p.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
	udp, _ := p.Layer(layers.LayerTypeUDP).(*layers.UDP)
	if ip == nil || udp == nil {
		t.Fatalf("reply is not IPv6/UDP: %v", p)
	}
	if eth.DstMAC.String() != vmMAC.String() || !ip.DstIP.Equal(vmLL) || !ip.SrcIP.Equal(net.ParseIP("fe80::1")) {
		t.Errorf("reply %s → %s/%s, want fe80::1 → %s/%s", ip.SrcIP, eth.DstMAC, ip.DstIP, vmMAC, vmLL)
	}
	if udp.SrcPort != 547 || udp.DstPort != 546 || ip.HopLimit != 255 {
		t.Errorf("ports %d→%d hop limit %d", udp.SrcPort, udp.DstPort, ip.HopLimit)
	}
	m, err := dhcpv6.MessageFromBytes(udp.Payload)
	if err != nil {
		t.Fatalf("reply payload: %v", err)
	}
	if m.TransactionID != xid {
		t.Errorf("transaction id %v", m.TransactionID)
	}
	if sid := m.Options.ServerID(); sid == nil || !ServerDUID.Equal(sid) {
		t.Errorf("server id %v, want %v", sid, ServerDUID)
	}
	return m
}

// checkIANA checks the first IA_NA gives the endpoint's address for the
// lease's time, and returns the addresses in it.
func checkIANA(t *testing.T, m *dhcpv6.Message) []*dhcpv6.OptIAAddress {
	t.Helper()
	ia := m.Options.OneIANA()
	if ia == nil {
		t.Fatalf("no IA_NA in %v", m.Summary())
	}
	if ia.IaId != iaid {
		t.Errorf("IAID %v, want the client's %v", ia.IaId, iaid)
	}
	if ia.T1 != 30*time.Minute || ia.T2 != 48*time.Minute {
		t.Errorf("T1 %v T2 %v", ia.T1, ia.T2)
	}
	addrs := ia.Options.Addresses()
	if len(addrs) == 0 || !addrs[0].IPv6Addr.Equal(v6addr) || addrs[0].ValidLifetime != time.Hour || addrs[0].PreferredLifetime != time.Hour {
		t.Fatalf("IA_NA addresses %v, want %v for 1h", addrs, v6addr)
	}
	return addrs
}

func checkDNS(t *testing.T, m *dhcpv6.Message) {
	t.Helper()
	if d := m.Options.DNS(); len(d) != 1 || !d[0].Equal(v6dns) {
		t.Errorf("DNS %v, want %v", d, v6dns)
	}
}

func TestDHCPv6(t *testing.T) {
	ours := [][]net.IP{{v6addr}}
	rapid := &dhcpv6.OptionGeneric{OptionCode: dhcpv6.OptionRapidCommit}
	type check func(t *testing.T, h *harness, m *dhcpv6.Message)
	grant := func(t *testing.T, h *harness) {
		t.Helper()
		if len(h.leases) != 1 || h.leases[0].Released || h.leases[0].Addr != mustAddr("fd00:65::7") ||
			!h.leases[0].Expires.Equal(t0.Add(time.Hour)) || h.leases[0].MAC.String() != vmMAC.String() {
			t.Errorf("lease records %+v, want fd00:65::7 until %v", h.leases, t0.Add(time.Hour))
		}
	}
	noLease := func(t *testing.T, h *harness) {
		t.Helper()
		if len(h.leases) != 0 {
			t.Errorf("lease records %+v, want none", h.leases)
		}
	}
	status := func(code iana.StatusCode) check {
		return func(t *testing.T, h *harness, m *dhcpv6.Message) {
			t.Helper()
			if s := m.Options.Status(); s == nil || s.StatusCode != code {
				t.Errorf("status %v, want %v", s, code)
			}
			if m.Options.OneIANA() != nil {
				t.Errorf("IA_NA in %v", m.Summary())
			}
		}
	}
	cases := []struct {
		name    string
		idx     int
		srcMAC  net.HardwareAddr
		msg     *dhcpv6.Message
		reply   dhcpv6.MessageType // 0: none
		counted string
		ignored string
		check   check
	}{
		{name: "solicit → advertise", idx: ifDual, msg: clientV6(dhcpv6.MessageTypeSolicit, vmDUID, nil, [][]net.IP{nil}),
			reply: dhcpv6.MessageTypeAdvertise, counted: "solicit",
			check: func(t *testing.T, h *harness, m *dhcpv6.Message) {
				checkIANA(t, m)
				checkDNS(t, m)
				if m.Options.Preference() != 255 {
					t.Errorf("preference %d, want 255", m.Options.Preference())
				}
				noLease(t, h)
			}},
		{name: "solicit with rapid commit → reply", idx: ifDual, msg: clientV6(dhcpv6.MessageTypeSolicit, vmDUID, nil, [][]net.IP{nil}, rapid),
			reply: dhcpv6.MessageTypeReply, counted: "solicit",
			check: func(t *testing.T, h *harness, m *dhcpv6.Message) {
				checkIANA(t, m)
				if m.GetOneOption(dhcpv6.OptionRapidCommit) == nil {
					t.Error("no rapid commit option")
				}
				grant(t, h)
			}},
		{name: "solicit for two IA_NAs and a prefix", idx: ifDual,
			msg:   clientV6(dhcpv6.MessageTypeSolicit, vmDUID, nil, [][]net.IP{nil, nil}, &dhcpv6.OptIAPD{IaId: iaid}),
			reply: dhcpv6.MessageTypeAdvertise, counted: "solicit",
			check: func(t *testing.T, h *harness, m *dhcpv6.Message) {
				ias := m.Options.IANA()
				if len(ias) != 2 || len(ias[0].Options.Addresses()) != 1 || ias[1].Options.Status() == nil ||
					ias[1].Options.Status().StatusCode != iana.StatusNoAddrsAvail {
					t.Errorf("IA_NAs %v: want the address in the first, NoAddrsAvail in the second", ias)
				}
				if pd := m.Options.OneIAPD(); pd == nil || pd.Options.Status() == nil || pd.Options.Status().StatusCode != iana.StatusNoPrefixAvail {
					t.Errorf("IA_PD %v, want NoPrefixAvail", pd)
				}
			}},
		{name: "solicit without IA_NA → NoAddrsAvail", idx: ifDual, msg: clientV6(dhcpv6.MessageTypeSolicit, vmDUID, nil, nil),
			reply: dhcpv6.MessageTypeAdvertise, counted: "solicit", check: status(iana.StatusNoAddrsAvail)},
		{name: "request → reply", idx: ifDual, msg: clientV6(dhcpv6.MessageTypeRequest, vmDUID, ServerDUID, ours),
			reply: dhcpv6.MessageTypeReply, counted: "request",
			check: func(t *testing.T, h *harness, m *dhcpv6.Message) {
				checkIANA(t, m)
				checkDNS(t, m)
				grant(t, h)
			}},
		{name: "request to another server → ignored", idx: ifDual, msg: clientV6(dhcpv6.MessageTypeRequest, vmDUID, otherSv, ours),
			counted: "request", ignored: reasonOtherServer},
		{name: "renew holding an old address → reply revokes it", idx: ifDual,
			msg:   clientV6(dhcpv6.MessageTypeRenew, vmDUID, ServerDUID, [][]net.IP{{v6old, v6addr}}),
			reply: dhcpv6.MessageTypeReply, counted: "renew",
			check: func(t *testing.T, h *harness, m *dhcpv6.Message) {
				addrs := checkIANA(t, m)
				if len(addrs) != 2 || !addrs[1].IPv6Addr.Equal(v6old) || addrs[1].ValidLifetime != 0 || addrs[1].PreferredLifetime != 0 {
					t.Errorf("addresses %v, want %v with lifetimes 0 after ours", addrs, v6old)
				}
				grant(t, h)
			}},
		{name: "rebind → reply", idx: ifDual, msg: clientV6(dhcpv6.MessageTypeRebind, vmDUID, nil, ours),
			reply: dhcpv6.MessageTypeReply, counted: "rebind",
			check: func(t *testing.T, h *harness, m *dhcpv6.Message) { checkIANA(t, m); grant(t, h) }},
		{name: "confirm of our address → success", idx: ifDual, msg: clientV6(dhcpv6.MessageTypeConfirm, vmDUID, nil, ours),
			reply: dhcpv6.MessageTypeReply, counted: "confirm", check: status(iana.StatusSuccess)},
		{name: "confirm of another address → NotOnLink", idx: ifDual, msg: clientV6(dhcpv6.MessageTypeConfirm, vmDUID, nil, [][]net.IP{{v6old}}),
			reply: dhcpv6.MessageTypeReply, counted: "confirm", check: status(iana.StatusNotOnLink)},
		{name: "release → reply, lease goes", idx: ifDual, msg: clientV6(dhcpv6.MessageTypeRelease, vmDUID, ServerDUID, ours),
			reply: dhcpv6.MessageTypeReply, counted: "release",
			check: func(t *testing.T, h *harness, m *dhcpv6.Message) {
				status(iana.StatusSuccess)(t, h, m)
				if len(h.leases) != 1 || !h.leases[0].Released || h.leases[0].Addr != mustAddr("fd00:65::7") {
					t.Errorf("lease records %+v, want fd00:65::7 released", h.leases)
				}
			}},
		{name: "decline → reply, lease goes", idx: ifDual, msg: clientV6(dhcpv6.MessageTypeDecline, vmDUID, ServerDUID, ours),
			reply: dhcpv6.MessageTypeReply, counted: "decline",
			check: func(t *testing.T, h *harness, m *dhcpv6.Message) {
				if len(h.leases) != 1 || !h.leases[0].Released {
					t.Errorf("lease records %+v, want one released", h.leases)
				}
			}},
		{name: "information-request without client id → DNS", idx: ifDual, msg: clientV6(dhcpv6.MessageTypeInformationRequest, nil, nil, nil),
			reply: dhcpv6.MessageTypeReply, counted: "information_request",
			check: func(t *testing.T, h *harness, m *dhcpv6.Message) {
				checkDNS(t, m)
				if m.Options.OneIANA() != nil {
					t.Error("IA_NA in a reply to information-request")
				}
				if irt := m.Options.InformationRefreshTime(0); irt != time.Hour {
					t.Errorf("information refresh time %v", irt)
				}
				noLease(t, h)
			}},
		{name: "DUID-EN client from the endpoint's MAC → answered", idx: ifDual,
			msg:   clientV6(dhcpv6.MessageTypeSolicit, &dhcpv6.DUIDEN{EnterpriseNumber: 43793, EnterpriseIdentifier: []byte{1, 2, 3}}, nil, [][]net.IP{nil}),
			reply: dhcpv6.MessageTypeAdvertise, counted: "solicit",
			check: func(t *testing.T, h *harness, m *dhcpv6.Message) { checkIANA(t, m) }},
		{name: "DUID-LL of another MAC → ignored", idx: ifDual,
			msg:     clientV6(dhcpv6.MessageTypeSolicit, &dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: otherMAC}, nil, [][]net.IP{nil}),
			ignored: reasonWrongMAC},
		{name: "frame from another MAC → ignored", idx: ifDual, srcMAC: otherMAC,
			msg: clientV6(dhcpv6.MessageTypeSolicit, vmDUID, nil, [][]net.IP{nil}), ignored: reasonWrongMAC},
		{name: "solicit naming a server → ignored", idx: ifDual, msg: clientV6(dhcpv6.MessageTypeSolicit, vmDUID, ServerDUID, [][]net.IP{nil}),
			counted: "solicit", ignored: reasonMalformed},
		{name: "request without client id → ignored", idx: ifDual, msg: clientV6(dhcpv6.MessageTypeRequest, nil, ServerDUID, ours),
			ignored: reasonMalformed},
		{name: "v4-only endpoint → ignored", idx: ifV4, msg: clientV6(dhcpv6.MessageTypeSolicit, vmDUID, nil, [][]net.IP{nil}),
			ignored: reasonNoLease},
		{name: "no endpoint → ignored", idx: ifAbsent, msg: clientV6(dhcpv6.MessageTypeSolicit, vmDUID, nil, [][]net.IP{nil}),
			ignored: reasonNotEndpoint},
		{name: "an advertise from the instance → ignored", idx: ifDual, msg: clientV6(dhcpv6.MessageTypeAdvertise, vmDUID, nil, nil),
			ignored: reasonUnsupported},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			src := tc.srcMAC
			if src == nil {
				src = vmMAC
			}
			out := h.s.handleV6(tc.idx, v6Frame(t, src, vmLL, allDHCP, tc.msg), h.now)
			if tc.reply == 0 {
				if len(out) != 0 {
					t.Fatalf("%d replies, want none", len(out))
				}
			} else {
				m := v6Reply(t, out)
				if m.MessageType != tc.reply {
					t.Fatalf("reply %v, want %v", m.MessageType, tc.reply)
				}
				if cid := m.Options.ClientID(); tc.msg.Options.ClientID() != nil && (cid == nil || !tc.msg.Options.ClientID().Equal(cid)) {
					t.Errorf("client id %v not echoed", cid)
				}
				label := "reply"
				if tc.reply == dhcpv6.MessageTypeAdvertise {
					label = "advertise"
				}
				if h.count("v6", label) != 1 {
					t.Errorf("calyx_dhcp_messages_total{v6,%s} not 1", label)
				}
				if tc.check != nil {
					tc.check(t, h, m)
				}
			}
			if tc.counted != "" && h.count("v6", tc.counted) != 1 {
				t.Errorf("calyx_dhcp_messages_total{v6,%s} not 1", tc.counted)
			}
			if tc.ignored != "" && (h.ignored("v6", tc.ignored) != 1 || h.count("v6", "ignored") != 1) {
				t.Errorf("not counted as ignored (%s)", tc.ignored)
			}
			if tc.ignored == "" && h.count("v6", "ignored") != 0 {
				t.Errorf("counted as ignored")
			}
		})
	}
}

// TestDHCPv6LibraryClient: the library's own client messages (Solicit
// with a DUID-LLT of the MAC, then the Request it derives from our
// Advertise) get the address, as a real client would.
func TestDHCPv6LibraryClient(t *testing.T) {
	h := newHarness(t)
	sol, err := dhcpv6.NewSolicit(vmMAC)
	if err != nil {
		t.Fatal(err)
	}
	sol.TransactionID = xid
	adv := v6Reply(t, h.s.handleV6(ifDual, v6Frame(t, vmMAC, vmLL, allDHCP, sol), h.now))
	req, err := dhcpv6.NewRequestFromAdvertise(adv)
	if err != nil {
		t.Fatal(err)
	}
	req.TransactionID = xid
	rep := v6Reply(t, h.s.handleV6(ifDual, v6Frame(t, vmMAC, vmLL, allDHCP, req), h.now))
	if rep.MessageType != dhcpv6.MessageTypeReply {
		t.Fatalf("got %v", rep.MessageType)
	}
	if a := rep.Options.OneIANA().Options.OneAddress(); a == nil || !a.IPv6Addr.Equal(v6addr) {
		t.Errorf("address %v, want %v", a, v6addr)
	}
	if len(h.leases) != 1 {
		t.Errorf("%d lease records, want 1", len(h.leases))
	}
}

// TestDHCPv6NotForUs: unicast to another address, or relay messages, are
// someone else's.
func TestDHCPv6NotForUs(t *testing.T) {
	h := newHarness(t)
	sol := clientV6(dhcpv6.MessageTypeSolicit, vmDUID, nil, [][]net.IP{nil})
	if out := h.s.handleV6(ifDual, v6Frame(t, vmMAC, vmLL, net.ParseIP("fd00:65::99"), sol), h.now); len(out) != 0 {
		t.Errorf("answered a unicast to another address")
	}
	relay, err := dhcpv6.EncapsulateRelay(sol, dhcpv6.MessageTypeRelayForward, net.IPv6zero, vmLL)
	if err != nil {
		t.Fatal(err)
	}
	if out := h.s.handleV6(ifDual, v6Frame(t, vmMAC, vmLL, allDHCP, relay), h.now); len(out) != 0 {
		t.Errorf("answered a relay-forward")
	}
	if h.ignored("v6", reasonNotForUs) != 1 || h.ignored("v6", reasonUnsupported) != 1 {
		t.Errorf("ignored: not_for_us %v, unsupported %v", h.ignored("v6", reasonNotForUs), h.ignored("v6", reasonUnsupported))
	}
}
