package model

import (
	"fmt"
	"math/rand"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// modelGen makes small random models whose resources collide often: few
// names, few addresses, pools that are external, disabled or overlapping.
type modelGen struct{ r *rand.Rand }

// addrs are what endpoints, floating IPs, subnets and peers take their
// addresses from: in the usable pool, a disabled one, the external ones,
// none, IPv6.
var genAddrs = []string{
	"10.0.0.0", "10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.7",
	"10.0.1.1", "10.0.1.2", "192.0.2.1", "192.0.2.2", "192.0.2.3",
	"198.51.100.1", "10.9.9.9", "172.16.0.1", "172.16.0.2", "fd00::1", "fd00::2",
}

func (g modelGen) pick(list ...string) string { return list[g.r.Intn(len(list))] }
func (g modelGen) chance(n int) bool          { return g.r.Intn(n) == 0 }
func (g modelGen) addr() netip.Addr           { return netip.MustParseAddr(g.pick(genAddrs...)) }
func (g modelGen) addr4() netip.Addr {
	for {
		if a := g.addr(); a.Is4() {
			return a
		}
	}
}

func (g modelGen) name(kind string) string {
	switch kind {
	case KindIPPool:
		return g.pick("pa", "pb", "px", "py", "pz", "p6")
	case KindNode:
		return g.pick("n1", "n2", "n3", "n4")
	case KindWorkloadEndpoint:
		return g.pick("e1", "e2", "e3", "e4", "e5", "e6", "e7", "e8")
	case KindFloatingIP:
		return g.pick("f1", "f2", "f3", "f4", "f5", "f6")
	case KindSubnet:
		return g.pick("s1", "s2", "s3")
	case KindIPAMBlock:
		return g.pick("b1", "b2", "b3")
	case KindBGPPeer:
		return g.pick("r1", "r2", "r3", "r4")
	case KindNetworkPolicy:
		return g.pick("allow", "deny")
	case KindConfig:
		return ConfigName
	case KindBGPConfiguration:
		return "default"
	}
	panic(kind)
}

func (g modelGen) resource(kind string) Resource {
	name := g.name(kind)
	var r Resource
	switch kind {
	case KindIPPool:
		cidr := map[string]string{"pa": "10.0.0.0/28", "pb": "10.0.1.0/28", "px": "192.0.2.0/28", "py": "198.51.100.0/29", "pz": "10.0.0.0/29", "p6": "fd00::/120"}[name]
		if g.chance(4) {
			cidr = g.pick("10.0.0.0/28", "192.0.2.0/28", "10.0.0.0/30", "10.9.9.0/28")
		}
		p := &IPPool{Metadata: Metadata{Name: name}, Spec: IPPoolSpec{CIDR: netip.MustParsePrefix(cidr), BlockSize: g.pick2(30, 31)}}
		p.Spec.External = name == "px" || name == "py" || g.chance(6)
		p.Spec.Disabled = name == "pb" || g.chance(5)
		if p.Spec.CIDR.Addr().Is6() {
			p.Spec.BlockSize = 126
		}
		r = p
	case KindNode:
		n := &Node{Metadata: Metadata{Name: name, Labels: map[string]string{"rack": g.pick("a", "b")}}}
		if !g.chance(6) {
			a := netip.MustParseAddr(g.pick("172.16.0.1", "172.16.0.2", "172.16.0.3", "172.16.0.4", "10.0.0.1", "192.0.2.1"))
			n.Spec.IPv4Address = netip.PrefixFrom(a, 24)
		}
		if g.chance(3) {
			n.Spec.IPv6Address = netip.PrefixFrom(netip.MustParseAddr(g.pick("fd00::1", "fd01::1", "fd01::2")), 64)
		}
		if g.chance(2) {
			n.Spec.UnderlayInterface = g.pick("eth0", "tap0")
		}
		r = n
	case KindWorkloadEndpoint:
		ep := &WorkloadEndpoint{Metadata: Metadata{Name: name}, Spec: WorkloadEndpointSpec{
			Node:      g.pick("n1", "n2", "n3", "n4", "n9"),
			Interface: g.pick("tap0", "tap1", "tap2", "eth0"),
		}}
		for range 1 + g.r.Intn(2) {
			a := g.addr()
			ep.Spec.IPNetworks = append(ep.Spec.IPNetworks, netip.PrefixFrom(a, a.BitLen()))
		}
		r = ep
	case KindFloatingIP:
		f := &FloatingIP{Metadata: Metadata{Name: name}, Spec: FloatingIPSpec{
			IP:       netip.MustParseAddr(g.pick("192.0.2.1", "192.0.2.2", "192.0.2.3", "198.51.100.1", "10.0.0.2", "10.9.9.9", "172.16.0.1")),
			Endpoint: g.pick("e1", "e2", "e3", "e4", "e5", "e9"),
		}}
		if g.chance(3) {
			f.Spec.FixedIP = g.addr4()
		}
		r = f
	case KindSubnet:
		sn := &Subnet{Metadata: Metadata{Name: name}, Spec: SubnetSpec{
			CIDR: netip.MustParsePrefix(g.pick("10.0.0.0/29", "10.0.0.0/30", "10.0.0.4/30", "10.0.0.0/28", "192.0.2.0/29", "fd00::/126")),
		}}
		if !g.chance(4) {
			sn.Spec.GatewayIP = g.addr()
		}
		r = sn
	case KindIPAMBlock:
		r = &IPAMBlock{Metadata: Metadata{Name: name}, Spec: IPAMBlockSpec{
			CIDR: netip.MustParsePrefix(g.pick("10.0.0.0/30", "10.0.0.4/30", "10.0.1.0/30", "10.0.0.0/29", "192.0.2.0/31")),
			Pool: g.pick("pa", "pb", "px", "pz", "nope"),
			Node: g.pick("n1", "n2", "gone"),
		}}
	case KindBGPPeer:
		p := &BGPPeer{Metadata: Metadata{Name: name}, Spec: BGPPeerSpec{
			PeerIP:   netip.MustParseAddr(g.pick("172.16.0.1", "172.16.0.2", "172.16.0.9", "10.0.0.1", "fd01::1")),
			ASNumber: 64512,
		}}
		switch g.r.Intn(4) {
		case 0:
			p.Spec.Node = g.pick("n1", "n2", "n3", "n9")
		case 1:
			p.Spec.NodeSelector = g.pick("rack == 'a'", "rack == 'b'", "all()")
		}
		r = p
	case KindNetworkPolicy:
		r = &NetworkPolicy{Metadata: Metadata{Name: name}, Spec: NetworkPolicySpec{Selector: g.pick("all()", "app == 'web'")}}
	case KindConfig:
		c := &Config{Metadata: Metadata{Name: name}}
		if g.chance(2) {
			c.Spec.PrefilterDeny = []netip.Prefix{netip.MustParsePrefix(g.pick("172.16.0.0/30", "172.16.0.2/32", "fd01::/126", "203.0.113.0/24"))}
		}
		r = c
	case KindBGPConfiguration:
		r = &BGPConfiguration{Metadata: Metadata{Name: name}}
	}
	ApplyDefaults(r)
	return r
}

func (g modelGen) pick2(a, b int) int {
	if g.chance(2) {
		return a
	}
	return b
}

// model returns a random model; valid ones when valid is set (made so by
// dropping what Validate complains about).
func (g modelGen) model(valid bool) *Snapshot {
	s := NewSnapshot()
	most := map[string]int{
		KindIPPool: 6, KindNode: 4, KindWorkloadEndpoint: 8, KindFloatingIP: 6, KindSubnet: 2,
		KindIPAMBlock: 3, KindBGPPeer: 3, KindNetworkPolicy: 1, KindConfig: 1,
	}
	for _, kind := range Kinds() {
		for range g.r.Intn(most[kind] + 1) {
			s.Put(g.resource(kind))
		}
	}
	for range 10 {
		if !valid {
			break
		}
		errs := s.validate(nil)
		if len(errs) == 0 {
			break
		}
		for _, e := range errs {
			s.Remove(e.Ref)
		}
	}
	return s
}

// incrementalKinds must never need the whole model checked (Node only
// when no two BGPPeers with one peerIP select it).
var incrementalKinds = []string{KindWorkloadEndpoint, KindFloatingIP, KindIPAMBlock, KindNetworkPolicy, KindNode, KindBGPConfiguration}

func errorSet(errs []*ValidationError) []string {
	out := make([]string, 0, len(errs))
	for _, e := range errs {
		out = append(out, e.Error())
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// TestIncrementalValidationMatchesFull checks random writes (applies of 1-3
// resources, deletes) over random models, valid ones and ones with
// problems already there, with the neighbourhood check and with the whole
// model validated before and after: the errors must be the same.
func TestIncrementalValidationMatchesFull(t *testing.T) {
	g := modelGen{rand.New(rand.NewSource(16))}
	allKinds := Kinds()
	var steps, incremental, refused, fallbacks int
	for model := 0; model < 4000; model++ {
		before := g.model(model%2 == 0)
		for range 3 {
			steps++
			var changes []change
			changed := map[Ref]bool{}
			var after *Snapshot
			var prepared []Resource
			mayFallBack := false
			if g.chance(3) {
				// Delete 1-2 resources, as the stores do.
				after = before.Clone()
				existing := before.Resources("")
				for range 1 + g.r.Intn(2) {
					after.Remove(RefOf(existing[g.r.Intn(len(existing))]))
				}
				edits, ok := after.EditsSince(before)
				if !ok {
					t.Fatal("a clone with two removals does not know its edits")
				}
				for _, ref := range edits {
					old, _ := before.Get(ref)
					cur, _ := after.Get(ref)
					changes = append(changes, change{ref: ref, before: old, after: cur})
				}
				changed = nil
			} else {
				after = before.Clone()
				seen := map[Ref]bool{}
				for range 1 + g.r.Intn(3) {
					kind := incrementalKinds[g.r.Intn(len(incrementalKinds))]
					if g.chance(5) {
						kind = allKinds[g.r.Intn(len(allKinds))]
					}
					r := g.resource(kind)
					if seen[RefOf(r)] {
						continue
					}
					seen[RefOf(r)] = true
					old, _ := before.Get(RefOf(r))
					changes = append(changes, change{ref: RefOf(r), before: old, after: r})
					changed[RefOf(r)] = true
					prepared = append(prepared, r)
					after.Put(r)
				}
			}
			for _, c := range changes {
				mayFallBack = mayFallBack || !slices.Contains(incrementalKinds, c.ref.Kind) || c.ref.Kind == KindNode
			}
			want := errorSet(diffProblems(before, after, changed))
			got, ok := changeProblems(before, changes, changed)
			if !ok {
				fallbacks++
				if !mayFallBack {
					t.Fatalf("step %d: %v needed the whole model checked", steps, changes)
				}
			} else {
				incremental++
				if len(want) > 0 {
					refused++
				}
				if gotSet := errorSet(got); !slices.Equal(gotSet, want) {
					t.Fatalf("step %d: writing %s over\n%s\nincremental:\n  %s\nfull:\n  %s", steps, describeChanges(changes),
						describeModel(before), strings.Join(gotSet, "\n  "), strings.Join(want, "\n  "))
				}
			}
			// The stores' entry points agree too.
			var err error
			if prepared != nil {
				err = applyProblems(before, prepared)
			} else {
				err = newProblems(before, after, nil)
			}
			if gotSet := errorSet(ValidationErrors(err)); !slices.Equal(gotSet, want) {
				t.Fatalf("step %d: store check of %s: %v, want %v", steps, describeChanges(changes), gotSet, want)
			}
		}
	}
	t.Logf("%d writes: %d checked incrementally (%d of them refused), %d against the whole model", steps, incremental, refused, fallbacks)
	if refused < steps/10 || incremental < steps*2/3 {
		t.Fatalf("too few interesting cases: %d refused, %d incremental of %d", refused, incremental, steps)
	}
}

func describeChanges(cs []change) string {
	var parts []string
	for _, c := range cs {
		if c.after == nil {
			parts = append(parts, "delete "+c.ref.String())
			continue
		}
		parts = append(parts, fmt.Sprintf("%s %+v", c.ref, c.after))
	}
	return strings.Join(parts, "; ")
}

// bench10k is the control-plane bench's model: 10,000 endpoints with a
// /32 each in a pool, 10,000 floating IPs from an external pool mapped to
// them (and one endpoint without), 1,000 policies, 100 nodes.
func bench10k() *Snapshot {
	s := NewSnapshot()
	s.Put(pool("workloads", "10.64.0.0/16"))
	s.Put(pool("floating", "198.18.0.0/16", external))
	for i := range 100 {
		s.Put(&Node{Metadata: Metadata{Name: fmt.Sprintf("node-%d", i)}, Spec: NodeSpec{
			IPv4Address:       netip.PrefixFrom(netip.AddrFrom4([4]byte{172, 16, byte(i / 256), byte(i%256 + 1)}), 16),
			UnderlayInterface: "eth0",
		}})
	}
	for i := range 10000 {
		name := fmt.Sprintf("ep-%d", i)
		s.Put(&WorkloadEndpoint{Metadata: Metadata{Name: name, Labels: map[string]string{"app": fmt.Sprintf("app-%d", i%100)}}, Spec: WorkloadEndpointSpec{
			Node:       fmt.Sprintf("node-%d", i%100),
			Interface:  fmt.Sprintf("tap%d", i),
			IPNetworks: []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 64, byte(i / 256), byte(i % 256)}), 32)},
		}})
		s.Put(&FloatingIP{Metadata: Metadata{Name: name + "-fip"}, Spec: FloatingIPSpec{
			IP: netip.AddrFrom4([4]byte{198, 18, byte(i / 256), byte(i % 256)}), Endpoint: name,
		}})
	}
	s.Put(&WorkloadEndpoint{Metadata: Metadata{Name: "ep-spare"}, Spec: WorkloadEndpointSpec{
		Node: "node-1", Interface: "tap-spare", IPNetworks: []netip.Prefix{netip.MustParsePrefix("10.64.201.1/32")},
	}})
	for i := range 1000 {
		p := &NetworkPolicy{Metadata: Metadata{Name: fmt.Sprintf("policy-%d", i)}, Spec: NetworkPolicySpec{
			Selector: fmt.Sprintf("app == 'app-%d'", i%100),
			Ingress:  []Rule{{Action: RuleAllow, Protocol: ProtoTCP, Destination: EntityRule{Ports: []PortRange{{First: 443, Last: 443}}}}},
		}}
		ApplyDefaults(p)
		s.Put(p)
	}
	return s
}

// BenchmarkApplyProblems10k times the check of one write over bench10k:
// whole-model (what every write cost before), incremental with the
// model's index built (a snapshot checked again), and incremental with the
// index built first (a store's write, whose snapshot is read anew).
func BenchmarkApplyProblems10k(b *testing.B) {
	before := bench10k()
	if err := before.Validate(); err != nil {
		b.Fatal(err)
	}
	ep := &WorkloadEndpoint{Metadata: Metadata{Name: "ep-new"}, Spec: WorkloadEndpointSpec{
		Node: "node-7", Interface: "tap-new", IPNetworks: []netip.Prefix{netip.MustParsePrefix("10.64.200.1/32")},
	}}
	fip := &FloatingIP{Metadata: Metadata{Name: "fip-new"}, Spec: FloatingIPSpec{IP: netip.MustParseAddr("198.18.200.1"), Endpoint: "ep-spare"}}
	fipTaken := &FloatingIP{Metadata: Metadata{Name: "fip-new"}, Spec: FloatingIPSpec{IP: netip.MustParseAddr("198.18.200.1"), Endpoint: "ep-17", FixedIP: netip.MustParseAddr("10.64.0.17")}}
	pol := deepCopy(before.Policies["policy-5"]).(*NetworkPolicy)
	pol.Spec.Ingress[0].Destination.Ports[0] = PortRange{First: 8443, Last: 8443}
	writes := []struct {
		name     string
		prepared []Resource
		refused  bool
	}{
		{"endpoint", []Resource{ep}, false},
		{"floatingip", []Resource{fip}, false},
		{"floatingip-refused", []Resource{fipTaken}, true},
		{"policy", []Resource{pol}, false},
	}
	full := func(prepared []Resource) error {
		after := before.Clone()
		changed := map[Ref]bool{}
		for _, r := range prepared {
			after.Put(r)
			changed[RefOf(r)] = true
		}
		return joinValidation(diffProblems(before, after, changed))
	}
	for _, w := range writes {
		want, got := full(w.prepared), applyProblems(before, w.prepared)
		if (want != nil) != w.refused || fmt.Sprint(got) != fmt.Sprint(want) {
			b.Fatalf("%s: incremental %v, full %v", w.name, got, want)
		}
		b.Run("full/"+w.name, func(b *testing.B) {
			for b.Loop() {
				full(w.prepared)
			}
		})
		b.Run("incremental/"+w.name, func(b *testing.B) {
			for b.Loop() {
				applyProblems(before, w.prepared)
			}
		})
		b.Run("incremental+index/"+w.name, func(b *testing.B) {
			for b.Loop() {
				before.index.Store(nil)
				applyProblems(before, w.prepared)
			}
		})
	}
	// A delete the FloatingIP naming the endpoint refuses.
	del := Ref{KindWorkloadEndpoint, "ep-17"}
	b.Run("full/delete-endpoint", func(b *testing.B) {
		for b.Loop() {
			after := before.Clone()
			after.Remove(del)
			diffProblems(before, after, nil)
		}
	})
	b.Run("incremental/delete-endpoint", func(b *testing.B) {
		for b.Loop() {
			after := before.Clone()
			after.Remove(del)
			if newProblems(before, after, nil) == nil {
				b.Fatal("deleting an endpoint a FloatingIP names was allowed")
			}
		}
	})
}

// TestEditsSince checks that a delete's check trusts a snapshot's edits
// only for a clone of the snapshot it is compared with, and only while
// they are few.
func TestEditsSince(t *testing.T) {
	base := NewSnapshot()
	base.Put(pool("pa", "10.0.0.0/24"))
	c := base.Clone()
	c.Remove(Ref{KindIPPool, "pa"})
	c.Remove(Ref{KindIPPool, "absent"})
	if edits, ok := c.EditsSince(base); !ok || !slices.Equal(edits, []Ref{{KindIPPool, "pa"}}) {
		t.Fatalf("clone's edits: %v %v, want the one removal", edits, ok)
	}
	if _, ok := c.EditsSince(base.Clone()); ok {
		t.Fatal("edits trusted against a snapshot c is no clone of")
	}
	if _, ok := base.EditsSince(base); ok {
		t.Fatal("edits trusted for a snapshot that is no clone")
	}
	for i := range maxTrackedEdits + 1 {
		c.Put(&NetworkPolicy{Metadata: Metadata{Name: fmt.Sprintf("p%d", i)}})
	}
	if _, ok := c.EditsSince(base); ok {
		t.Fatal("edits trusted past maxTrackedEdits")
	}
	// Past the bound, a delete is checked against the whole model.
	if err := newProblems(base, c, nil); err != nil {
		t.Fatal(err)
	}
}

// TestSetOwnedKeepsIndex: an index kept in step by setOwned through random
// puts and removes names what one built afresh names.
func TestSetOwnedKeepsIndex(t *testing.T) {
	r := rand.New(rand.NewSource(35))
	s := NewSnapshot()
	s.Put(pool("workloads", "10.64.0.0/16"))
	ix := s.changeIndexOf().endpoints().fips()
	for step := range 2000 {
		name := fmt.Sprintf("r-%d", r.Intn(20))
		addr := netip.AddrFrom4([4]byte{10, 64, 0, byte(r.Intn(6))})
		switch r.Intn(4) {
		case 0:
			s.setOwned(Ref{KindWorkloadEndpoint, name}, nil)
		case 1:
			s.setOwned(Ref{KindFloatingIP, name}, nil)
		case 2:
			ep := &WorkloadEndpoint{Metadata: Metadata{Name: name}, Spec: WorkloadEndpointSpec{Node: "n1", Interface: fmt.Sprintf("tap%d", r.Intn(4)), IPNetworks: []netip.Prefix{netip.PrefixFrom(addr, 32)}}}
			if r.Intn(3) == 0 {
				ep.Spec.IPNetworks = append(ep.Spec.IPNetworks, netip.PrefixFrom(addr.Next(), 32))
			}
			s.setOwned(RefOf(ep), ep)
		case 3:
			f := &FloatingIP{Metadata: Metadata{Name: name}, Spec: FloatingIPSpec{IP: addr, Endpoint: fmt.Sprintf("r-%d", r.Intn(20))}}
			s.setOwned(RefOf(f), f)
		}
		if s.changeIndexOf() != ix {
			t.Fatalf("step %d: the index was dropped", step)
		}
		fresh := s.Clone().changeIndexOf().endpoints().fips()
		for what, pair := range map[string][2]map[string][]string{
			"endpointByAddr":  {flatten(ix.endpointByAddr), flatten(fresh.endpointByAddr)},
			"endpointByIface": {flatten(ix.endpointByIface), flatten(fresh.endpointByIface)},
			"fipByIP":         {flatten(ix.fipByIP), flatten(fresh.fipByIP)},
			"fipByEndpoint":   {flatten(ix.fipByEndpoint), flatten(fresh.fipByEndpoint)},
		} {
			if !reflect.DeepEqual(pair[0], pair[1]) {
				t.Fatalf("step %d: %s kept %v, built afresh %v", step, what, pair[0], pair[1])
			}
		}
	}
}

// flatten is a multiIndex as key → sorted names.
func flatten[K comparable](m multiIndex[K]) map[string][]string {
	out := map[string][]string{}
	for k := range m.one {
		var names []string
		m.each(k, func(n string) { names = append(names, n) })
		slices.Sort(names)
		out[fmt.Sprint(k)] = names
	}
	return out
}
