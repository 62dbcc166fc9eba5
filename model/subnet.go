package model

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// SubnetIndex finds the Subnet an address belongs to: the most specific
// one containing it, with one map lookup per distinct prefix length in
// use.
type SubnetIndex struct {
	byPrefix map[netip.Prefix]*Subnet
	v4, v6   []int // distinct prefix lengths, longest first
}

// NewSubnetIndex indexes subnets. Subnets whose cidr is not a valid network
// prefix are left out; of two with the same cidr (which Validate refuses)
// the one whose name sorts first is kept.
func NewSubnetIndex(subnets map[string]*Subnet) *SubnetIndex {
	ix := &SubnetIndex{byPrefix: make(map[netip.Prefix]*Subnet, len(subnets))}
	for _, name := range sortedKeys(subnets) {
		sn := subnets[name]
		if sn == nil {
			continue
		}
		p := sn.Spec.CIDR
		if !p.IsValid() || p.Masked() != p || p.Addr().Is4In6() || p.Addr().Zone() != "" {
			continue
		}
		if _, dup := ix.byPrefix[p]; dup {
			continue
		}
		ix.byPrefix[p] = sn
		lens := &ix.v6
		if p.Addr().Is4() {
			lens = &ix.v4
		}
		if !slices.Contains(*lens, p.Bits()) {
			*lens = append(*lens, p.Bits())
			slices.Sort(*lens)
			slices.Reverse(*lens)
		}
	}
	return ix
}

// Lookup returns the most specific Subnet containing a, or nil.
func (ix *SubnetIndex) Lookup(a netip.Addr) *Subnet {
	if ix == nil || !a.IsValid() {
		return nil
	}
	a = a.WithZone("")
	lens := ix.v6
	if a.Is4() {
		lens = ix.v4
	}
	for _, bits := range lens {
		if sn, ok := ix.byPrefix[netip.PrefixFrom(a, bits).Masked()]; ok {
			return sn
		}
	}
	return nil
}

// validateSubnets checks the rules between Subnets and endpoints: no two
// Subnets have the same cidr (an address belongs to the most specific
// Subnet containing it, which must be one), no endpoint has a Subnet's
// gatewayIP (it stands for the local host on every host), and no endpoint
// address is the network or broadcast address of its Subnet.
func (s *Snapshot) validateSubnets(changed map[Ref]bool, add func(ref Ref, path, format string, args ...any),
	subject func(kind, earlier, later string) (string, string)) {
	if len(s.Subnets) == 0 {
		return
	}
	names := sortedKeys(s.Subnets)
	byCIDR := make(map[netip.Prefix]string, len(names))
	gateways := make(map[netip.Addr][]string)
	for _, name := range names {
		sn := s.Subnets[name]
		cidr := sn.Spec.CIDR
		if !cidr.IsValid() || cidr.Masked() != cidr {
			continue // reported on its own
		}
		if o, ok := byCIDR[cidr]; ok {
			subj, other := subject(KindSubnet, o, name)
			add(Ref{KindSubnet, subj}, "spec.cidr", "%s is already the cidr of Subnet/%s; an address belongs to the most specific Subnet containing it, "+
				"so two Subnets with one cidr would leave it undecided (Subnets may overlap, but not coincide)", cidr, other)
		} else {
			byCIDR[cidr] = name
		}
		if gw := sn.Spec.GatewayIP; gw.IsValid() && cidr.Contains(gw) {
			gateways[gw] = append(gateways[gw], name)
		}
	}
	ix := NewSubnetIndex(s.Subnets)

	for _, epName := range sortedKeys(s.Endpoints) {
		ep := s.Endpoints[epName]
		epRef := Ref{KindWorkloadEndpoint, epName}
		for i, p := range ep.Spec.IPNetworks {
			if !p.IsValid() || p.Bits() != p.Addr().BitLen() {
				continue // reported on its own
			}
			a := p.Addr()
			epPath := fmt.Sprintf("spec.ipNetworks[%d]", i)
			for _, sname := range gateways[a] {
				snRef := Ref{KindSubnet, sname}
				if changed[epRef] && !changed[snRef] {
					add(epRef, epPath, "%s is the gatewayIP of Subnet/%s, which stands for the local host on every host; an instance cannot have it", p, sname)
				} else {
					add(snRef, "spec.gatewayIP", "%s is an address of WorkloadEndpoint/%s (%s); the gateway stands for the local host on every host and is never an instance's address",
						a, epName, epPath)
				}
			}
			sn := ix.Lookup(a)
			if sn == nil || slices.Contains(gateways[a], sn.Metadata.Name) {
				continue
			}
			cidr := sn.Spec.CIDR
			what := ""
			switch {
			case a == cidr.Addr():
				what = "network"
			case a.Is4() && a == lastAddr(cidr):
				what = "broadcast"
			default:
				continue
			}
			snRef := RefOf(sn)
			if changed[epRef] && !changed[snRef] {
				add(epRef, epPath, "%s is the %s address of Subnet/%s (%s); an instance needs a host address of its subnet", p, what, sn.Metadata.Name, cidr)
			} else {
				add(snRef, "spec.cidr", "%s makes %s, an address of WorkloadEndpoint/%s (%s), its %s address; an instance needs a host address of its subnet",
					cidr, a, epName, epPath, what)
			}
		}
	}
}

// Warnings returns what the model allows but cannot mean, one line per
// problem in the form "Kind/name: path: what (harmless, but ...: why)",
// sorted. Only problems touching a resource in changed are returned (all
// of them when changed is nil), so calyxctl apply warns about what it
// wrote. Today there is one: a Subnet with hostRoutes whose endpoints all
// belong to single-NIC instances. An instance with several NICs is declared
// by giving its endpoints (on one node) the same value of the label
// calyx.io/instance (InstanceLabel); a Subnet with no endpoint yet is not
// judged.
func Warnings(s *Snapshot, changed map[Ref]bool) []string {
	if s == nil || len(s.Subnets) == 0 {
		return nil
	}
	touched := func(r Ref) bool { return changed == nil || changed[r] }

	nics := map[[2]string]int{} // (node, instance) → endpoints
	for _, ep := range s.Endpoints {
		if inst := ep.Metadata.Labels[InstanceLabel]; inst != "" {
			nics[[2]string{ep.Spec.Node, inst}]++
		}
	}
	multiNIC := func(ep *WorkloadEndpoint) bool {
		inst := ep.Metadata.Labels[InstanceLabel]
		return inst != "" && nics[[2]string{ep.Spec.Node, inst}] > 1
	}

	ix := NewSubnetIndex(s.Subnets)
	members := map[string][]string{} // subnet → endpoint names, sorted
	for _, name := range sortedKeys(s.Endpoints) {
		ep := s.Endpoints[name]
		for _, p := range ep.Spec.IPNetworks {
			sn := ix.Lookup(p.Addr())
			if sn == nil {
				continue
			}
			if m := members[sn.Metadata.Name]; len(m) == 0 || m[len(m)-1] != name {
				members[sn.Metadata.Name] = append(m, name)
			}
		}
	}

	var out []string
	for _, name := range sortedKeys(s.Subnets) {
		sn := s.Subnets[name]
		eps := members[name]
		if len(sn.Spec.HostRoutes) == 0 || len(eps) == 0 {
			continue
		}
		relevant := touched(RefOf(sn))
		single := true
		for _, e := range eps {
			relevant = relevant || touched(Ref{KindWorkloadEndpoint, e})
			if multiNIC(s.Endpoints[e]) {
				single = false
			}
		}
		if !relevant || !single {
			continue
		}
		out = append(out, fmt.Sprintf("%s: spec.hostRoutes: every instance in %s has a single NIC: no endpoint in it (%s) shares its node and its %s label "+
			"with another endpoint (harmless, but it cannot change anything: a single-NIC instance already sends all its traffic to its gateway %s, "+
			"the local host, which routes it; host routes only choose between an instance's NICs)",
			RefOf(sn), sn.Spec.CIDR, endpointList(eps), InstanceLabel, sn.Spec.GatewayIP))
	}
	return out
}

// endpointList names a few endpoints for a message.
func endpointList(names []string) string {
	const most = 3
	parts := make([]string, 0, most+1)
	for i, n := range names {
		if i == most {
			parts = append(parts, fmt.Sprintf("and %d more", len(names)-most))
			break
		}
		parts = append(parts, "WorkloadEndpoint/"+n)
	}
	return strings.Join(parts, ", ")
}
