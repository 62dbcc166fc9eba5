package subnetsvc

import (
	"net"
	"time"

	"github.com/gopacket/gopacket/layers"
	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"

	"github.com/calyxnet/calyx/agent/subnets"
)

var v6TypeLabels = map[dhcpv6.MessageType]string{
	dhcpv6.MessageTypeSolicit:            "solicit",
	dhcpv6.MessageTypeRequest:            "request",
	dhcpv6.MessageTypeConfirm:            "confirm",
	dhcpv6.MessageTypeRenew:              "renew",
	dhcpv6.MessageTypeRebind:             "rebind",
	dhcpv6.MessageTypeRelease:            "release",
	dhcpv6.MessageTypeDecline:            "decline",
	dhcpv6.MessageTypeInformationRequest: "information_request",
}

// duidMAC is the link-layer address a DUID-LL or DUID-LLT carries; nil for
// the other kinds (DUID-EN, DUID-UUID), which say nothing about the MAC.
func duidMAC(d dhcpv6.DUID) net.HardwareAddr {
	switch d := d.(type) {
	case *dhcpv6.DUIDLL:
		return d.LinkLayerAddr
	case *dhcpv6.DUIDLLT:
		return d.LinkLayerAddr
	}
	return nil
}

// handleDHCPv6 answers a DHCPv6 client message from the endpoint (RFC
// 8415): Advertise for a Solicit (Reply with Rapid Commit when the client
// asks), Reply for the rest, from fe80::1 and the host side's MAC to the
// client's link-local address and MAC.
func (s *Server) handleDHCPv6(ifc *iface, eth *layers.Ethernet, ip *layers.IPv6, udp *layers.UDP, now time.Time) [][]byte {
	if ifc == nil {
		s.m.ignore("v6", reasonNotEndpoint)
		return nil
	}
	c := ifc.v6
	if c == nil {
		s.m.ignore("v6", reasonNoLease)
		return nil
	}
	if udp.DstPort != portDHCPv6Server || udp.SrcPort != portDHCPv6Client ||
		!(ip.DstIP.Equal(allDHCP) || ip.DstIP.Equal(gatewayV6)) {
		s.m.ignore("v6", reasonNotForUs)
		return nil
	}
	if string(eth.SrcMAC) != string(ifc.svc.MAC) {
		s.m.ignore("v6", reasonWrongMAC)
		return nil
	}
	if len(udp.Payload) > 0 {
		if t := dhcpv6.MessageType(udp.Payload[0]); t == dhcpv6.MessageTypeRelayForward || t == dhcpv6.MessageTypeRelayReply {
			s.m.ignore("v6", reasonUnsupported)
			return nil
		}
	}
	msg, err := dhcpv6.MessageFromBytes(udp.Payload)
	if err != nil || ip.SrcIP.IsUnspecified() {
		s.m.ignore("v6", reasonMalformed)
		return nil
	}
	label, ok := v6TypeLabels[msg.MessageType]
	if !ok {
		s.m.ignore("v6", reasonUnsupported)
		return nil
	}
	cid := msg.Options.ClientID()
	if cid == nil && msg.MessageType != dhcpv6.MessageTypeInformationRequest {
		s.m.ignore("v6", reasonMalformed)
		return nil
	}
	if mac := duidMAC(cid); mac != nil && string(mac) != string(ifc.svc.MAC) {
		s.m.ignore("v6", reasonWrongMAC)
		return nil
	}
	s.m.messages.WithLabelValues("v6", label).Inc()
	log := s.log.With("interface", ifc.svc.Ifname, "endpoint", ifc.svc.Endpoint, "mac", ifc.svc.MAC)

	sid := msg.Options.ServerID()
	ours := sid != nil && ServerDUID.Equal(sid)
	reply := &dhcpv6.Message{MessageType: dhcpv6.MessageTypeReply, TransactionID: msg.TransactionID}
	if cid != nil {
		reply.AddOption(dhcpv6.OptClientID(cid))
	}
	reply.AddOption(dhcpv6.OptServerID(ServerDUID))
	grant := false

	switch msg.MessageType {
	case dhcpv6.MessageTypeSolicit:
		if sid != nil { // RFC 8415 16.2
			s.m.ignore("v6", reasonMalformed)
			return nil
		}
		if msg.GetOneOption(dhcpv6.OptionRapidCommit) != nil {
			dhcpv6.WithRapidCommit(reply)
			grant = s.addIAs(reply, msg, c, false)
		} else {
			reply.MessageType = dhcpv6.MessageTypeAdvertise
			// 255: the client asks at once instead of waiting for other
			// servers (there are none on an instance's link).
			reply.AddOption(dhcpv6.OptPreference(255))
			s.addIAs(reply, msg, c, false)
		}
		s.addDNS(reply, c)

	case dhcpv6.MessageTypeRequest, dhcpv6.MessageTypeRenew, dhcpv6.MessageTypeRebind:
		if msg.MessageType == dhcpv6.MessageTypeRebind {
			if sid != nil {
				s.m.ignore("v6", reasonMalformed)
				return nil
			}
		} else if !ours {
			s.m.ignore("v6", reasonOtherServer)
			return nil
		}
		grant = s.addIAs(reply, msg, c, true)
		s.addDNS(reply, c)

	case dhcpv6.MessageTypeConfirm:
		// Are the client's addresses still right for the link? Only the
		// endpoint's own is.
		addrs := iaAddresses(msg)
		if len(addrs) == 0 { // RFC 8415 18.3.3: no reply
			s.m.ignore("v6", reasonMalformed)
			return nil
		}
		status := &dhcpv6.OptStatusCode{StatusCode: iana.StatusSuccess, StatusMessage: "addresses are on link"}
		for _, a := range addrs {
			if !a.Equal(c.addr) {
				status = &dhcpv6.OptStatusCode{StatusCode: iana.StatusNotOnLink, StatusMessage: "not this endpoint's address"}
			}
		}
		reply.AddOption(status)

	case dhcpv6.MessageTypeRelease, dhcpv6.MessageTypeDecline:
		if !ours {
			s.m.ignore("v6", reasonOtherServer)
			return nil
		}
		reply.AddOption(&dhcpv6.OptStatusCode{StatusCode: iana.StatusSuccess})
		released := false
		for _, a := range iaAddresses(msg) {
			released = released || a.Equal(c.addr)
		}
		if released {
			if msg.MessageType == dhcpv6.MessageTypeDecline {
				log.Warn("DHCPv6 decline: the instance found its address in use", "addr", c.addr)
			} else {
				log.Debug("DHCPv6 release", "addr", c.addr)
			}
			s.released(ifc, c.lease.Addr, now)
		}

	case dhcpv6.MessageTypeInformationRequest:
		if sid != nil && !ours {
			s.m.ignore("v6", reasonOtherServer)
			return nil
		}
		s.addDNS(reply, c)
		reply.AddOption(dhcpv6.OptInformationRefreshTime(c.dur))
	}

	frame, err := udp6Frame(ifc.svc.HostMAC, eth.SrcMAC, gatewayV6, ip.SrcIP, portDHCPv6Server, portDHCPv6Client, reply.ToBytes())
	if err != nil {
		log.Warn("DHCPv6 reply does not build", "err", err)
		return nil
	}
	if reply.MessageType == dhcpv6.MessageTypeAdvertise {
		s.m.messages.WithLabelValues("v6", "advertise").Inc()
	} else {
		s.m.messages.WithLabelValues("v6", "reply").Inc()
	}
	log.Debug("DHCPv6 reply", "to", label, "type", reply.MessageType, "addr", c.addr, "granted", grant)
	if grant {
		s.onLease(subnets.LeaseRecord{
			Endpoint: ifc.svc.Endpoint, Ifindex: ifc.idx, MAC: clone(ifc.svc.MAC), Addr: c.lease.Addr,
			Expires: now.Add(c.dur), LastSeen: now,
		})
	}
	return [][]byte{frame}
}

// addIAs answers the client's identity associations: its first IA_NA gets
// the endpoint's address (and, when revoke, any other address the client
// still holds with lifetimes 0: RFC 8415 18.3.4), further IA_NAs and every
// IA_PD get "none available". It says whether the address was given.
func (s *Server) addIAs(reply, msg *dhcpv6.Message, c *v6conf, revoke bool) bool {
	ianas := msg.Options.IANA()
	for i, ia := range ianas {
		out := &dhcpv6.OptIANA{IaId: ia.IaId}
		if i > 0 {
			out.Options.Add(&dhcpv6.OptStatusCode{StatusCode: iana.StatusNoAddrsAvail, StatusMessage: "one address per endpoint"})
			reply.AddOption(out)
			continue
		}
		// T1 and T2 at 0.5 and 0.8 of the lifetime (RFC 8415 21.4).
		out.T1, out.T2 = c.dur/2, c.dur*4/5
		out.Options.Add(&dhcpv6.OptIAAddress{IPv6Addr: c.addr, PreferredLifetime: c.dur, ValidLifetime: c.dur})
		if revoke {
			for _, a := range ia.Options.Addresses() {
				if !a.IPv6Addr.Equal(c.addr) {
					out.Options.Add(&dhcpv6.OptIAAddress{IPv6Addr: a.IPv6Addr})
				}
			}
		}
		reply.AddOption(out)
	}
	for _, pd := range msg.Options.IAPD() {
		out := &dhcpv6.OptIAPD{IaId: pd.IaId}
		out.Options.Add(&dhcpv6.OptStatusCode{StatusCode: iana.StatusNoPrefixAvail, StatusMessage: "no prefix delegation"})
		reply.AddOption(out)
	}
	if len(ianas) == 0 {
		reply.AddOption(&dhcpv6.OptStatusCode{StatusCode: iana.StatusNoAddrsAvail, StatusMessage: "ask with an IA_NA"})
		return false
	}
	return true
}

func (s *Server) addDNS(reply *dhcpv6.Message, c *v6conf) {
	if len(c.dns) > 0 {
		reply.AddOption(dhcpv6.OptDNS(c.dns...))
	}
}

// iaAddresses are the addresses in every IA_NA of msg.
func iaAddresses(msg *dhcpv6.Message) []net.IP {
	var out []net.IP
	for _, ia := range msg.Options.IANA() {
		for _, a := range ia.Options.Addresses() {
			out = append(out, a.IPv6Addr)
		}
	}
	return out
}
