package subnetsvc

import (
	"bytes"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/calyxnet/calyx/agent/subnets"
)

// defaultLease stands in for a Lease without a Duration: the model's
// default leaseSeconds.
const defaultLease = 24 * time.Hour

// table is what the server answers, by ifindex. It is never modified once
// published: Update builds a new one and swaps the pointer, so the readers
// never lock.
type table struct {
	byIndex map[int]*iface
}

// iface is one endpoint interface with what its replies are built from,
// computed once per change of its Service.
type iface struct {
	idx int
	svc subnets.Service // a deep copy: the caller's slices are not kept
	v4  *v4conf         // nil: no DHCPv4 here
	v6  *v6conf         // nil: no router advertisements or DHCPv6 here
}

type v4conf struct {
	addr, gw net.IP
	dur      time.Duration
	// opts are every option of an OFFER or ACK but the message type and
	// the lease times, in the library's types.
	opts []dhcpv4.Option
}

type v6conf struct {
	lease subnets.Lease
	addr  net.IP
	dns   []net.IP
	dur   time.Duration
	// ra is the periodic (multicast) router advertisement, built once.
	ra []byte
}

func newIface(log *slog.Logger, idx int, svc subnets.Service) *iface {
	svc = cloneService(svc)
	ifc := &iface{idx: idx, svc: svc}
	if (svc.V4 != nil || svc.V6 != nil) && (len(svc.HostMAC) != 6 || len(svc.MAC) != 6) {
		log.Warn("subnet services not served: the host side's and the endpoint's MACs must be Ethernet addresses",
			"interface", svc.Ifname, "endpoint", svc.Endpoint, "hostMAC", svc.HostMAC, "mac", svc.MAC)
		return ifc
	}
	if l := svc.V4; l != nil {
		if c, ok := newV4conf(l); ok {
			ifc.v4 = c
		} else {
			log.Warn("DHCPv4 lease not served: address and gateway must be IPv4 and the gateway inside the prefix",
				"interface", svc.Ifname, "endpoint", svc.Endpoint, "addr", l.Addr, "prefix", l.Prefix, "gateway", l.Gateway)
		}
	}
	if l := svc.V6; l != nil {
		if !l.Addr.Is6() || l.Addr.Is4In6() {
			log.Warn("IPv6 lease not served: the address must be IPv6",
				"interface", svc.Ifname, "endpoint", svc.Endpoint, "addr", l.Addr)
		} else {
			c := &v6conf{lease: *l, addr: net.IP(l.Addr.AsSlice()), dur: leaseDuration(l)}
			for _, d := range l.DNS {
				if d.Is6() && !d.Is4In6() {
					c.dns = append(c.dns, net.IP(d.AsSlice()))
				}
			}
			ra, err := buildRA(svc.HostMAC, multicastMAC(allNodes), allNodes, c, routerLifetime)
			if err != nil {
				log.Warn("IPv6 lease not served: router advertisement does not build", "interface", svc.Ifname, "err", err)
			} else {
				c.ra = ra
				ifc.v6 = c
			}
		}
	}
	return ifc
}

func newV4conf(l *subnets.Lease) (*v4conf, bool) {
	if !l.Addr.Is4() || !l.Gateway.Is4() || !l.Prefix.Addr().Is4() || !l.Prefix.Contains(l.Gateway) {
		return nil, false
	}
	pfx := l.Prefix.Masked()
	gw := net.IP(l.Gateway.AsSlice())
	c := &v4conf{addr: net.IP(l.Addr.AsSlice()), gw: gw, dur: leaseDuration(l)}
	c.opts = append(c.opts,
		dhcpv4.OptSubnetMask(net.CIDRMask(pfx.Bits(), 32)),
		// Option 3 for clients that know no option 121; the rest ignore it
		// when 121 is present (RFC 3442), hence the default route there too.
		dhcpv4.OptRouter(gw),
		dhcpv4.OptServerIdentifier(gw),
		dhcpv4.OptClasslessStaticRoute(classlessRoutes(l)...),
	)
	if pfx.Bits() < 31 {
		c.opts = append(c.opts, dhcpv4.OptBroadcastAddress(broadcast(pfx)))
	}
	var dns []net.IP
	for _, d := range l.DNS {
		if d.Is4() {
			dns = append(dns, net.IP(d.AsSlice()))
		}
	}
	if len(dns) > 0 {
		c.opts = append(c.opts, dhcpv4.OptDNS(dns...))
	}
	// 68 is the least MTU IPv4 allows (RFC 2132 9.1); an out-of-range
	// value is not sent rather than clamped.
	if l.MTU >= 68 && l.MTU <= 0xffff {
		c.opts = append(c.opts, dhcpv4.Option{Code: dhcpv4.OptionInterfaceMTU, Value: dhcpv4.Uint16(l.MTU)})
	}
	return c, true
}

// classlessRoutes is option 121's content: every host route via the
// gateway (the local host routes everything, whatever next hop the model
// wrote), then the default route.
func classlessRoutes(l *subnets.Lease) []*dhcpv4.Route {
	gw := net.IP(l.Gateway.AsSlice())
	var rs []*dhcpv4.Route
	hasDefault := false
	for _, r := range l.Routes {
		if !r.Dst.Addr().Is4() {
			continue
		}
		d := r.Dst.Masked()
		if d.Bits() == 0 {
			hasDefault = true
		}
		rs = append(rs, &dhcpv4.Route{
			Dest:   &net.IPNet{IP: net.IP(d.Addr().AsSlice()), Mask: net.CIDRMask(d.Bits(), 32)},
			Router: gw,
		})
	}
	if !hasDefault {
		rs = append(rs, &dhcpv4.Route{Dest: &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, Router: gw})
	}
	return rs
}

func broadcast(p netip.Prefix) net.IP {
	a := p.Addr().As4()
	for i := p.Bits(); i < 32; i++ {
		a[i/8] |= 0x80 >> (i % 8)
	}
	return net.IP(a[:])
}

func leaseDuration(l *subnets.Lease) time.Duration {
	if l.Duration < time.Second {
		return defaultLease
	}
	return l.Duration
}

func cloneService(s subnets.Service) subnets.Service {
	s.HostMAC = slices.Clone(s.HostMAC)
	s.MAC = slices.Clone(s.MAC)
	s.V4, s.V6 = cloneLease(s.V4), cloneLease(s.V6)
	return s
}

func cloneLease(l *subnets.Lease) *subnets.Lease {
	if l == nil {
		return nil
	}
	c := *l
	c.DNS = slices.Clone(l.DNS)
	c.Routes = slices.Clone(l.Routes)
	return &c
}

func sameService(a, b subnets.Service) bool {
	return a.Endpoint == b.Endpoint && a.Ifname == b.Ifname && a.Ifindex == b.Ifindex &&
		bytes.Equal(a.HostMAC, b.HostMAC) && bytes.Equal(a.MAC, b.MAC) &&
		sameLease(a.V4, b.V4) && sameLease(a.V6, b.V6)
}

func sameLease(a, b *subnets.Lease) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Addr == b.Addr && a.Prefix == b.Prefix && a.Gateway == b.Gateway &&
		slices.Equal(a.DNS, b.DNS) && slices.Equal(a.Routes, b.Routes) &&
		a.MTU == b.MTU && a.Duration == b.Duration && a.Subnet == b.Subnet && a.Network == b.Network
}
