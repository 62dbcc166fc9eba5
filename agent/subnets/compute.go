package subnets

import (
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/calyxnet/calyx/agent/calc"
	"github.com/calyxnet/calyx/agent/host"
	"github.com/calyxnet/calyx/model"
)

// Compute returns what the subnet services answer on each of node's
// endpoint interfaces, keyed by the host side's ifindex. An endpoint is
// served when its interface exists in links (by name, with an ifindex), may
// be touched (calc.Untouchable with underlay says 0) and it has a MAC in the
// model (spec.mac: only that client is ever answered). Each of its
// addresses belongs to the most specific Subnet containing it; the first
// IPv4 address whose Subnet has DHCP enabled becomes V4, the first such
// IPv6 address V6. An endpoint with neither gets no entry. workloadMTU is
// told to every client (0: not said). Compute is pure: it keeps nothing of
// its arguments, so the result may be handed to another goroutine.
func Compute(s *model.Snapshot, node, underlay string, links map[string]host.Interface, workloadMTU int) map[int]Service {
	out := map[int]Service{}
	if s == nil || len(s.Subnets) == 0 {
		return out
	}
	ix := model.NewSubnetIndex(s.Subnets)
	names := make([]string, 0, len(s.Endpoints))
	for name, ep := range s.Endpoints {
		if ep != nil && ep.Spec.Node == node {
			names = append(names, name)
		}
	}
	// Sorted, so that of two endpoints naming one interface (which the
	// model refuses) the same one is served every time.
	slices.Sort(names)
	for _, name := range names {
		ep := s.Endpoints[name]
		link, ok := links[ep.Spec.Interface]
		if !ok || link.Ifindex <= 0 || calc.Untouchable(link, underlay) != 0 || len(ep.Spec.MAC) != 6 {
			continue
		}
		if _, taken := out[link.Ifindex]; taken {
			continue
		}
		svc := Service{
			Endpoint: name,
			Ifname:   link.Name,
			Ifindex:  link.Ifindex,
			HostMAC:  net.HardwareAddr(append([]byte(nil), link.MAC[:]...)),
			MAC:      append(net.HardwareAddr(nil), ep.Spec.MAC...),
		}
		for _, p := range ep.Spec.IPNetworks {
			if !p.IsValid() {
				continue
			}
			a := p.Addr()
			slot := &svc.V6
			if a.Is4() {
				slot = &svc.V4
			}
			if *slot != nil {
				continue
			}
			sn := ix.Lookup(a)
			if sn == nil || !sn.Spec.DHCPEnabled() {
				continue
			}
			*slot = lease(a, sn, workloadMTU)
		}
		if svc.V4 != nil || svc.V6 != nil {
			out[link.Ifindex] = svc
		}
	}
	return out
}

// lease is what sn tells the endpoint holding a.
func lease(a netip.Addr, sn *model.Subnet, mtu int) *Lease {
	l := &Lease{
		Addr:     a,
		Prefix:   sn.Spec.CIDR,
		Gateway:  sn.Spec.GatewayIP,
		DNS:      slices.Clone(sn.Spec.DNSNameservers),
		MTU:      mtu,
		Duration: time.Duration(sn.Spec.Lease()) * time.Second,
		Subnet:   sn.Metadata.Name,
		Network:  sn.Spec.Network,
	}
	for _, r := range sn.Spec.HostRoutes {
		// Every next hop is the gateway (the model refuses any other).
		l.Routes = append(l.Routes, Route{Dst: r.Destination, Via: sn.Spec.GatewayIP})
	}
	return l
}
