package subnetsvc

import (
	"net"
	"net/netip"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"

	"github.com/calyxnet/calyx/agent/subnets"
)

// handleV4 takes an IPv4 frame from interface idx and returns the replies
// to send back out of it (none, or one).
func (s *Server) handleV4(idx int, frame []byte, now time.Time) [][]byte {
	var (
		eth layers.Ethernet
		ip  layers.IPv4
		udp layers.UDP
	)
	p := gopacket.NewDecodingLayerParser(layers.LayerTypeEthernet, &eth, &ip, &udp)
	p.IgnoreUnsupported = true
	decoded := make([]gopacket.LayerType, 0, 3)
	if err := p.DecodeLayers(frame, &decoded); err != nil || len(decoded) != 3 || decoded[1] != layers.LayerTypeIPv4 {
		s.m.ignore("v4", reasonMalformed)
		return nil
	}
	if ip.Flags&layers.IPv4MoreFragments != 0 || ip.FragOffset != 0 {
		s.m.ignore("v4", reasonMalformed)
		return nil
	}
	ifc := s.table.Load().byIndex[idx]
	if ifc == nil {
		s.m.ignore("v4", reasonNotEndpoint)
		return nil
	}
	c := ifc.v4
	if c == nil {
		s.m.ignore("v4", reasonNoLease)
		return nil
	}
	// Only a client's own broadcast or a unicast to the gateway is ours:
	// an instance may run a DHCP server or relay of its own for others.
	if udp.DstPort != portDHCPv4Server || udp.SrcPort != portDHCPv4Client ||
		!(ip.DstIP.Equal(net.IPv4bcast) || ip.DstIP.Equal(c.gw)) {
		s.m.ignore("v4", reasonNotForUs)
		return nil
	}
	if string(eth.SrcMAC) != string(ifc.svc.MAC) {
		s.m.ignore("v4", reasonWrongMAC)
		return nil
	}
	req, err := dhcpv4.FromBytes(udp.Payload)
	if err != nil {
		s.m.ignore("v4", reasonMalformed)
		return nil
	}
	if req.OpCode != dhcpv4.OpcodeBootRequest {
		s.m.ignore("v4", reasonUnsupported)
		return nil
	}
	if req.HWType != iana.HWTypeEthernet || string(req.ClientHWAddr) != string(ifc.svc.MAC) {
		s.m.ignore("v4", reasonWrongMAC)
		return nil
	}
	if !req.GatewayIPAddr.IsUnspecified() {
		s.m.ignore("v4", reasonNotForUs) // relayed: not from the link
		return nil
	}
	log := s.log.With("interface", ifc.svc.Ifname, "endpoint", ifc.svc.Endpoint, "mac", ifc.svc.MAC)
	switch mt := req.MessageType(); mt {
	case dhcpv4.MessageTypeDiscover:
		s.m.messages.WithLabelValues("v4", "discover").Inc()
		return s.v4Reply(ifc, req, dhcpv4.MessageTypeOffer, "", now)

	case dhcpv4.MessageTypeRequest:
		s.m.messages.WithLabelValues("v4", "request").Inc()
		sid, want, ciaddr := req.ServerIdentifier(), req.RequestedIPAddress(), req.ClientIPAddr
		switch {
		case sid != nil: // SELECTING: the answer to our OFFER
			if !sid.Equal(c.gw) {
				return s.v4Reply(ifc, req, dhcpv4.MessageTypeNak, "server identifier is not this server's", now)
			}
			if want == nil {
				want = ciaddr
			}
			if !want.Equal(c.addr) {
				return s.v4Reply(ifc, req, dhcpv4.MessageTypeNak, "requested address is not this client's", now)
			}
		case !ciaddr.IsUnspecified(): // RENEWING, REBINDING
			if !ciaddr.Equal(c.addr) {
				return s.v4Reply(ifc, req, dhcpv4.MessageTypeNak, "address is not this client's", now)
			}
		case want != nil: // INIT-REBOOT
			if !want.Equal(c.addr) {
				return s.v4Reply(ifc, req, dhcpv4.MessageTypeNak, "requested address is not this client's", now)
			}
		default:
			s.m.ignore("v4", reasonMalformed) // a REQUEST that asks for nothing
			return nil
		}
		return s.v4Reply(ifc, req, dhcpv4.MessageTypeAck, "", now)

	case dhcpv4.MessageTypeRelease:
		s.m.messages.WithLabelValues("v4", "release").Inc()
		if !req.ClientIPAddr.Equal(c.addr) {
			s.m.ignore("v4", reasonNotLeased)
			return nil
		}
		log.Debug("DHCPv4 release", "addr", c.addr)
		s.released(ifc, ifc.svc.V4.Addr, now)
		return nil

	case dhcpv4.MessageTypeDecline:
		s.m.messages.WithLabelValues("v4", "decline").Inc()
		if !req.RequestedIPAddress().Equal(c.addr) {
			s.m.ignore("v4", reasonNotLeased)
			return nil
		}
		// Something else on the instance's link claims its address: worth
		// an operator's look, since only the host is on that link.
		log.Warn("DHCPv4 decline: the instance found its address in use", "addr", c.addr)
		s.released(ifc, ifc.svc.V4.Addr, now)
		return nil

	case dhcpv4.MessageTypeInform:
		s.m.messages.WithLabelValues("v4", "inform").Inc()
		return s.v4Reply(ifc, req, dhcpv4.MessageTypeAck, "", now)

	default:
		s.m.ignore("v4", reasonUnsupported)
		return nil
	}
}

// v4Reply builds an OFFER, ACK or NAK for req. They come from the gateway
// IP and the host side's MAC; they go to the client's address and MAC when
// it has one (ciaddr: renewing, rebinding, informing), else broadcast,
// which every client receives whatever its state and broadcast flag. A
// NAK is always broadcast (RFC 2131 4.3.2). An ACK with a lease is
// recorded through onLease.
func (s *Server) v4Reply(ifc *iface, req *dhcpv4.DHCPv4, mt dhcpv4.MessageType, why string, now time.Time) [][]byte {
	c := ifc.v4
	inform := req.MessageType() == dhcpv4.MessageTypeInform
	mods := []dhcpv4.Modifier{dhcpv4.WithMessageType(mt), dhcpv4.WithOption(dhcpv4.OptServerIdentifier(c.gw))}
	switch mt {
	case dhcpv4.MessageTypeNak:
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptMessage(why)))
	default:
		if mt == dhcpv4.MessageTypeAck {
			mods = append(mods, dhcpv4.WithClientIP(req.ClientIPAddr))
		}
		if !inform { // RFC 2131 4.3.5: no yiaddr, no lease time
			mods = append(mods,
				dhcpv4.WithYourIP(c.addr),
				dhcpv4.WithOption(dhcpv4.OptIPAddressLeaseTime(c.dur)),
				dhcpv4.WithOption(dhcpv4.OptRenewTimeValue(c.dur/2)),
				dhcpv4.WithOption(dhcpv4.OptRebindingTimeValue(c.dur*7/8)),
			)
		}
		for _, o := range c.opts {
			mods = append(mods, dhcpv4.WithOption(o))
		}
	}
	resp, err := dhcpv4.NewReplyFromRequest(req, mods...)
	if err != nil {
		s.log.Warn("DHCPv4 reply does not build", "interface", ifc.svc.Ifname, "err", err)
		return nil
	}
	dstMAC, dstIP := layers.EthernetBroadcast, net.IPv4bcast
	if mt != dhcpv4.MessageTypeNak && !req.ClientIPAddr.IsUnspecified() {
		dstMAC, dstIP = ifc.svc.MAC, req.ClientIPAddr
	}
	frame, err := udp4Frame(ifc.svc.HostMAC, dstMAC, c.gw, dstIP, portDHCPv4Server, portDHCPv4Client, resp.ToBytes())
	if err != nil {
		s.log.Warn("DHCPv4 reply does not build", "interface", ifc.svc.Ifname, "err", err)
		return nil
	}
	s.m.messages.WithLabelValues("v4", v4TypeLabel(mt)).Inc()
	s.log.Debug("DHCPv4 reply", "interface", ifc.svc.Ifname, "endpoint", ifc.svc.Endpoint, "type", mt, "addr", c.addr, "why", why)
	if mt == dhcpv4.MessageTypeAck && !inform {
		s.onLease(subnets.LeaseRecord{
			Endpoint: ifc.svc.Endpoint, Ifindex: ifc.idx, MAC: clone(ifc.svc.MAC), Addr: ifc.svc.V4.Addr,
			Expires: now.Add(c.dur), LastSeen: now,
		})
	}
	return [][]byte{frame}
}

// released tells onLease that the endpoint gave addr back.
func (s *Server) released(ifc *iface, addr netip.Addr, now time.Time) {
	s.onLease(subnets.LeaseRecord{
		Endpoint: ifc.svc.Endpoint, Ifindex: ifc.idx, MAC: clone(ifc.svc.MAC), Addr: addr,
		Expires: now, LastSeen: now, Released: true,
	})
}

func clone(m net.HardwareAddr) net.HardwareAddr { return append(net.HardwareAddr(nil), m...) }

func v4TypeLabel(mt dhcpv4.MessageType) string {
	switch mt {
	case dhcpv4.MessageTypeOffer:
		return "offer"
	case dhcpv4.MessageTypeAck:
		return "ack"
	}
	return "nak"
}
