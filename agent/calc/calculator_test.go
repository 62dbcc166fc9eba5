package calc

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"testing"

	"github.com/calyxnet/calyx/agent/host"
	"github.com/calyxnet/calyx/bpfmap"
	"github.com/calyxnet/calyx/model"
)

// TestCalculatorIncrementalEqualsFull applies random sequences of changes
// (endpoints, local and remote, added, moved, readdressed into and out of
// blocks and into conflicts; floating IPs; blocks claimed and released;
// interfaces appearing and going; now and then a node, pool or policy), in a
// dual-stack model: nodes with and without an ipv6Address, an IPv6 pool
// whose traffic goes over either underlay, dual-stack endpoints.
// and checks after every change that one Calculator, reused throughout,
// gives exactly what a fresh Compute of the same input gives.
func TestCalculatorIncrementalEqualsFull(t *testing.T) {
	steps := 0
	seen := map[string]int{} // what the random models reached
	for seed := range uint64(60) {
		r := rand.New(rand.NewPCG(seed, 11))
		s := model.NewSnapshot()
		s.Put(&model.IPPool{Metadata: model.Metadata{Name: "p"}, Spec: model.IPPoolSpec{CIDR: netip.MustParsePrefix("10.65.0.0/16"), NATOutgoing: true}})
		s.Put(&model.IPPool{Metadata: model.Metadata{Name: "ext"}, Spec: model.IPPoolSpec{CIDR: netip.MustParsePrefix("172.16.0.0/24"), External: true}})
		s.Put(&model.IPPool{Metadata: model.Metadata{Name: "p6"}, Spec: model.IPPoolSpec{CIDR: netip.MustParsePrefix("2001:db8:a41:3::/64")}})
		for i, n := range []string{"a", "b", "c"} {
			s.Put(&model.Node{Metadata: model.Metadata{Name: n}, Spec: model.NodeSpec{
				IPv4Address: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 30, 0, byte(11 + i)}), 24), IPv6Address: randomV6(r, byte(11+i))}})
		}
		links := map[string]host.Interface{
			"eth0": {Name: "eth0", Ifindex: 2, MTU: 1500, Addrs: []netip.Addr{netip.MustParseAddr("10.30.0.11")}},
			"lo":   {Name: "lo", Ifindex: 1, Loopback: true},
		}
		c := NewCalculator()
		var prevGen uint64
		var prevRoutes map[netip.Prefix]bpfmap.Route
		var prevFIPs map[netip.Addr]bpfmap.FloatingIP
		var prevIPCache map[netip.Prefix]bpfmap.IPCacheEntry
		var prevIfaces map[uint32]bpfmap.Iface
		for i := range 40 {
			what := mutateModel(r, s, links)
			in := Input{Snapshot: s, Node: "a", Underlay: "eth0", Links: maps.Clone(links), HostAddrs: []netip.Addr{netip.MustParseAddr("10.30.0.11")}}
			got := c.Compute(in)
			// A fresh Calculator that finds the slots in the maps keeps
			// them (AdoptCounterSlots), as one started by a new agent.
			fresh := NewCalculator()
			fresh.AdoptCounterSlots(slotsOf(got.Ifaces))
			want := fresh.Compute(in)
			checkFreshSlots(t, prevIfaces, got)
			prevIfaces = maps.Clone(got.Ifaces)
			delta := got.Delta
			got.Delta, want.Delta = nil, nil
			got.FreshCounterSlots, want.FreshCounterSlots = nil, nil
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("seed %d step %d (%s): incremental differs from full:\n%s", seed, i, what, diffDesired(got, want))
			}
			// The delta names every entry that differs from the last
			// Desired (a syncer looks at nothing else).
			if delta == nil || delta.Prev != 0 && delta.Prev != prevGen {
				t.Fatalf("seed %d step %d: delta %+v after generation %d", seed, i, delta, prevGen)
			}
			if delta.Prev != 0 {
				if k, ok := undeclared(prevRoutes, got.Routes, delta.Routes); ok {
					t.Fatalf("seed %d step %d (%s): route %s changed but is not in the delta", seed, i, what, k)
				}
				if k, ok := undeclared(prevFIPs, got.FloatingIPs, delta.FloatingIPs); ok {
					t.Fatalf("seed %d step %d (%s): floating IP %s changed but is not in the delta", seed, i, what, k)
				}
				if k, ok := undeclared(prevIPCache, got.IPCache, delta.IPCache); ok && delta.IPCache != nil {
					t.Fatalf("seed %d step %d (%s): ipcache %s changed but is not in the delta", seed, i, what, k)
				}
			}
			for p, rt := range got.Routes {
				if rt.Type == bpfmap.RouteRemoteWorkload && p.Addr().Is6() {
					seen["IPv6 workload over the "+bpfmap.UnderlayOf(rt.NextHop)+" underlay, encap "+rt.Encap.String()]++
				}
			}
			prevGen, prevRoutes, prevFIPs, prevIPCache = delta.Gen, maps.Clone(got.Routes), maps.Clone(got.FloatingIPs), maps.Clone(got.IPCache)
			steps++
			s = s.Clone()
		}
	}
	t.Logf("%d changes compared; %v", steps, seen)
	for _, u := range []string{"ipv4", "ipv6"} {
		for _, e := range []bpfmap.Encap{bpfmap.EncapNone, bpfmap.EncapIPIP, bpfmap.EncapVXLAN} {
			if k := "IPv6 workload over the " + u + " underlay, encap " + e.String(); seen[k] == 0 {
				t.Errorf("the random models never had an %s", k)
			}
		}
	}
}

func slotsOf(ifaces map[uint32]bpfmap.Iface) map[uint32]uint16 {
	out := map[uint32]uint16{}
	for idx, v := range ifaces {
		out[idx] = v.CounterSlot
	}
	return out
}

// checkFreshSlots checks d's counter slots against the interfaces of the
// Desired before it: one per interface, none shared, an interface keeps
// its own, and the fresh ones are exactly those no interface had before.
func checkFreshSlots(t *testing.T, prev map[uint32]bpfmap.Iface, d *Desired) {
	t.Helper()
	owner := map[uint16]uint32{}
	wantFresh := []uint16{}
	for idx, v := range d.Ifaces {
		s := v.CounterSlot
		if s < bpfmap.FirstWorkloadCounterSlot || s >= bpfmap.CounterSlots {
			t.Fatalf("interface %d has counter slot %d, out of range", idx, s)
		}
		if o, ok := owner[s]; ok {
			t.Fatalf("interfaces %d and %d share counter slot %d", o, idx, s)
		}
		owner[s] = idx
		if p, ok := prev[idx]; ok && p.CounterSlot != s {
			t.Fatalf("interface %d moved from counter slot %d to %d", idx, p.CounterSlot, s)
		}
		if _, ok := prev[idx]; !ok {
			wantFresh = append(wantFresh, s)
		}
	}
	for p, r := range d.Routes {
		if r.Type == bpfmap.RouteLocalWorkload && r.CounterSlot != d.Ifaces[r.Ifindex].CounterSlot {
			t.Fatalf("route %s has counter slot %d, its interface %d has %d", p, r.CounterSlot, r.Ifindex, d.Ifaces[r.Ifindex].CounterSlot)
		}
	}
	// A slot an interface that went had is only fresh again: to be zeroed.
	got := slices.Sorted(slices.Values(d.FreshCounterSlots))
	slices.Sort(wantFresh)
	if !slices.Equal(got, wantFresh) {
		t.Fatalf("fresh counter slots %v, want %v (the new interfaces')", got, wantFresh)
	}
}

// undeclared returns a key whose entry differs between before and after
// but that changed does not name.
func undeclared[K, V comparable](before, after map[K]V, changed map[K]struct{}) (K, bool) {
	for k, v := range after {
		if b, ok := before[k]; (!ok || b != v) && !has(changed, k) {
			return k, true
		}
	}
	for k := range before {
		if _, ok := after[k]; !ok && !has(changed, k) {
			return k, true
		}
	}
	var zero K
	return zero, false
}

func has[K comparable](m map[K]struct{}, k K) bool { _, ok := m[k]; return ok }

func diffDesired(got, want *Desired) string {
	out := ""
	g, w := reflect.ValueOf(*got), reflect.ValueOf(*want)
	for i := range g.NumField() {
		if !reflect.DeepEqual(g.Field(i).Interface(), w.Field(i).Interface()) {
			out += fmt.Sprintf("%s:\n  got  %v\n  want %v\n", g.Type().Field(i).Name, g.Field(i).Interface(), w.Field(i).Interface())
		}
	}
	return out
}

// randomV6 is a node's ipv6Address, half the time none, in one of two
// subnets.
func randomV6(r *rand.Rand, host byte) netip.Prefix {
	if r.IntN(2) == 0 {
		return netip.Prefix{}
	}
	return netip.PrefixFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0x0a, 0x41, 0, byte(0xfe + r.IntN(2)), 15: host}), 64)
}

func mutateModel(r *rand.Rand, s *model.Snapshot, links map[string]host.Interface) string {
	addr := func() netip.Prefix {
		return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 65, byte(r.IntN(3)), byte(r.IntN(8))}), 32)
	}
	addr6 := func() netip.Prefix {
		return netip.PrefixFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0x0a, 0x41, 0, 3, 13: byte(r.IntN(3)), 15: byte(r.IntN(8))}), 128)
	}
	names := func(m map[string]*model.WorkloadEndpoint) []string { return slices.Sorted(maps.Keys(m)) }
	switch r.IntN(12) {
	case 0, 1: // an endpoint added or replaced
		name := fmt.Sprintf("ep%d", r.IntN(12))
		node := []string{"a", "a", "b", "c", "gone"}[r.IntN(5)]
		ep := &model.WorkloadEndpoint{Metadata: model.Metadata{Name: name, Labels: map[string]string{"role": []string{"web", "db"}[r.IntN(2)]}},
			Spec: model.WorkloadEndpointSpec{Node: node, Interface: fmt.Sprintf("tap%d", r.IntN(6)), IPNetworks: []netip.Prefix{addr()}}}
		if r.IntN(4) == 0 {
			ep.Spec.IPNetworks = append(ep.Spec.IPNetworks, addr())
		}
		if r.IntN(2) == 0 { // dual stack
			ep.Spec.IPNetworks = append(ep.Spec.IPNetworks, addr6())
		}
		switch r.IntN(20) {
		case 0:
			ep.Spec.IPNetworks[0] = netip.MustParsePrefix("10.30.0.12/32") // a node's address
		case 1:
			if n := s.Nodes["b"]; n != nil && n.Spec.IPv6Address.IsValid() {
				ep.Spec.IPNetworks[0] = netip.PrefixFrom(n.Spec.IPv6Address.Addr(), 128) // a node's IPv6 address
			}
		}
		s.Put(ep)
		return fmt.Sprintf("put endpoint %s on %s %v %s", name, node, ep.Spec.IPNetworks, ep.Spec.Interface)
	case 2:
		if n := names(s.Endpoints); len(n) > 0 {
			name := n[r.IntN(len(n))]
			s.Remove(model.Ref{Kind: model.KindWorkloadEndpoint, Name: name})
			return "remove endpoint " + name
		}
	case 3: // a floating IP
		n := names(s.Endpoints)
		if len(n) == 0 {
			break
		}
		name := fmt.Sprintf("fip%d", r.IntN(4))
		f := &model.FloatingIP{Metadata: model.Metadata{Name: name}, Spec: model.FloatingIPSpec{
			IP: netip.AddrFrom4([4]byte{172, 16, 0, byte(1 + r.IntN(3))}), Endpoint: n[r.IntN(len(n))]}}
		s.Put(f)
		return fmt.Sprintf("put floating IP %s %s → %s", name, f.Spec.IP, f.Spec.Endpoint)
	case 4:
		for name := range s.FloatingIPs {
			s.Remove(model.Ref{Kind: model.KindFloatingIP, Name: name})
			return "remove floating IP " + name
		}
	case 5: // a block claimed or moved
		cidr := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 65, byte(r.IntN(3)), 0}), 29)
		if r.IntN(2) == 0 {
			cidr = netip.PrefixFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0x0a, 0x41, 0, 3, 13: byte(r.IntN(3))}), 122)
		}
		node := []string{"a", "b", "c", "gone"}[r.IntN(4)]
		b := &model.IPAMBlock{Metadata: model.Metadata{Name: model.BlockName(cidr)}, Spec: model.IPAMBlockSpec{CIDR: cidr, Node: node}}
		s.Put(b)
		return fmt.Sprintf("block %s to %s", cidr, node)
	case 6:
		for name := range s.Blocks {
			s.Remove(model.Ref{Kind: model.KindIPAMBlock, Name: name})
			return "release block " + name
		}
	case 7: // an interface appears, changes or goes
		name := fmt.Sprintf("tap%d", r.IntN(6))
		if _, ok := links[name]; ok && r.IntN(2) == 0 {
			delete(links, name)
			return "interface gone " + name
		}
		l := host.Interface{Name: name, Ifindex: 10 + r.IntN(8), MAC: bpfmap.MAC{2, 0, 0, 0, 0, byte(r.IntN(4))}, Kind: bpfmap.IfaceTap}
		if r.IntN(8) == 0 {
			l.Addrs = []netip.Addr{netip.MustParseAddr("192.168.9.9")}
		}
		links[name] = l
		return fmt.Sprintf("interface %s %d", name, l.Ifindex)
	case 8: // the basis: a node moves, gains or loses IPv6; a pool's mode
		modes := []model.EncapMode{model.EncapNever, model.EncapAlways, model.EncapCrossSubnet}
		switch r.IntN(4) {
		case 0:
			n := model.NodeSpec{IPv4Address: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 31, 0, byte(r.IntN(3))}), 24), IPv6Address: randomV6(r, 13)}
			s.Put(&model.Node{Metadata: model.Metadata{Name: "c"}, Spec: n})
			return fmt.Sprintf("node c moves to %s %s", n.IPv4Address, n.IPv6Address)
		case 1:
			n := *s.Nodes[[]string{"a", "b"}[r.IntN(2)]]
			n.Spec.IPv6Address = randomV6(r, n.Spec.IPv4Address.Addr().As4()[3])
			s.Put(&n)
			return fmt.Sprintf("node %s IPv6 %s", n.Metadata.Name, n.Spec.IPv6Address)
		case 2:
			p := *s.Pools["p6"]
			p.Spec.IPIPMode, p.Spec.VXLANMode = model.EncapNever, model.EncapNever
			if r.IntN(2) == 0 {
				p.Spec.IPIPMode = modes[r.IntN(3)]
			} else {
				p.Spec.VXLANMode = modes[r.IntN(3)]
			}
			s.Put(&p)
			return fmt.Sprintf("IPv6 pool modes ipip %s vxlan %s", p.Spec.IPIPMode, p.Spec.VXLANMode)
		}
		p := *s.Pools["p"]
		p.Spec.VXLANMode = modes[r.IntN(3)]
		s.Put(&p)
		return "pool mode " + string(p.Spec.VXLANMode)
	case 9: // policy
		sel := []string{`role == "web"`, `all()`}[r.IntN(2)]
		s.Put(&model.NetworkPolicy{Metadata: model.Metadata{Name: "pol"}, Spec: model.NetworkPolicySpec{Selector: sel,
			Types:   []model.PolicyType{model.PolicyIngress},
			Ingress: []model.Rule{{Action: model.RuleAllow, Source: model.EntityRule{Selector: `role == "db"`}}}}})
		return "policy selects " + sel
	case 10:
		if n := names(s.Endpoints); len(n) > 0 { // a relabel
			e := *s.Endpoints[n[r.IntN(len(n))]]
			e.Metadata.Labels = map[string]string{"role": []string{"web", "db", "cache"}[r.IntN(3)]}
			s.Put(&e)
			return "relabel " + e.Metadata.Name
		}
	}
	return "nothing"
}
