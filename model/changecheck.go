package model

import (
	"net/netip"
	"slices"
	"sync"
)

// A write is refused for the cross-resource problems it adds (see
// newProblems). Checking the whole model before and after costs
// O(n log n) per write; this file checks only the neighbourhood of what a
// write changes, with the same verdict and messages.
//
// The neighbourhood is a set of resources: what the write changes, and
// for each key a changed resource has (before or after the write: an
// address, a (node, interface) pair, the endpoint a FloatingIP names, a
// FloatingIP's fixed IP) every resource the rules of Validate compare on
// that key, found through indexes of the model before the write. Validate
// is then run on the neighbourhood before and after the write (with every
// IPPool and the Config, which some rules read whole), and the new errors
// kept. An error involving a changed resource is then judged with
// everything it depends on; an error among resources the write left alone
// may come out wrong for want of resources outside the neighbourhood, but
// it comes out the same before and after, so it is not reported.
//
// Writes of an IPPool, Subnet, Config or BGPPeer (rare, and each able to
// change the verdict on many resources) are checked against the whole
// model, as is a Node write when two BGPPeers with one peerIP both select
// the node (whether they overlap, and at which node, depends on every
// node).

// change is one resource a write stores or deletes: its version before
// the write (nil when it is new) and after (nil when it is deleted).
type change struct {
	ref           Ref
	before, after Resource
}

// wholeModelKinds are the kinds whose writes are checked against the whole
// model.
var wholeModelKinds = map[string]bool{KindIPPool: true, KindSubnet: true, KindConfig: true, KindBGPPeer: true}

// maxTrackedEdits bounds the edits a clone remembers (a watch's clone
// takes a burst of events): past it, a check of that clone looks at the
// whole model.
const maxTrackedEdits = 64

// touch records that ref changed in s: it drops s's index and, when s
// tracks its edits, notes ref.
func (s *Snapshot) touch(ref Ref) {
	if s.index.Load() != nil {
		s.index.Store(nil)
	}
	if !s.tracked {
		return
	}
	if len(s.edits) == maxTrackedEdits {
		s.tracked, s.edits = false, nil
		return
	}
	s.edits = append(s.edits, ref)
}

// EditsSince returns the resources Put or Removed in s since it was
// cloned from base (a ref may come more than once), or false when s is no
// clone of base or changed too much to tell (more than 64 edits). A
// watch's snapshot is a clone of the one before it, so a reader that saw
// that one learns what changed without comparing every resource.
func (s *Snapshot) EditsSince(base *Snapshot) ([]Ref, bool) {
	if !s.tracked || base == nil || s.base.Value() != base {
		return nil, false
	}
	return s.edits, true
}

// ChangedNames brings last, a reader's copy of one kind's map (e.g. an
// earlier snapshot's Endpoints), up to date with now, the same map of a
// later snapshot, and returns the names whose resource differs (added,
// replaced or removed; resources are compared by pointer, as snapshots
// never change one in place). With edits from EditsSince (ok) only the
// names of kind it lists are looked at; otherwise every name is.
func ChangedNames[R any](last, now map[string]*R, kind string, edits []Ref, ok bool) []string {
	var out []string
	look := func(name string) {
		r := now[name]
		if r == nil {
			if _, had := last[name]; had {
				out = append(out, name)
				delete(last, name)
			}
			return
		}
		if last[name] != r {
			out = append(out, name)
			last[name] = r
		}
	}
	if ok {
		for _, ref := range edits {
			if ref.Kind == kind {
				look(ref.Name)
			}
		}
		return out
	}
	for name := range now {
		look(name)
	}
	if len(last) > len(now) {
		for name := range last {
			if now[name] == nil {
				look(name)
			}
		}
	}
	return out
}

// problemsOfWrite returns the cross-resource errors that writing prepared
// over before would add, as newProblems of before and the model with
// prepared put would.
func problemsOfWrite(before *Snapshot, prepared []Resource) error {
	changes := make([]change, 0, len(prepared))
	changed := make(map[Ref]bool, len(prepared))
	for _, r := range prepared {
		ref := RefOf(r)
		old, _ := before.Get(ref)
		changes = append(changes, change{ref: ref, before: old, after: r})
		changed[ref] = true
	}
	if errs, ok := changeProblems(before, changes, changed); ok {
		return joinValidation(errs)
	}
	after := before.Clone()
	for _, r := range prepared {
		after.Put(r)
	}
	return joinValidation(diffProblems(before, after, changed))
}

// problemsAfter returns the cross-resource errors of after that before
// did not have (newProblems): by what changed when after is a clone of
// before with a few edits, else by validating both whole.
func problemsAfter(before, after *Snapshot, changed map[Ref]bool) error {
	if edits, ok := after.EditsSince(before); ok {
		seen := make(map[Ref]bool, len(edits))
		changes := make([]change, 0, len(edits))
		for _, ref := range edits {
			if seen[ref] {
				continue
			}
			seen[ref] = true
			old, _ := before.Get(ref)
			cur, _ := after.Get(ref)
			if old != nil || cur != nil {
				changes = append(changes, change{ref: ref, before: old, after: cur})
			}
		}
		if errs, ok := changeProblems(before, changes, changed); ok {
			return joinValidation(errs)
		}
	}
	return joinValidation(diffProblems(before, after, changed))
}

// diffProblems returns the errors of after.validate(changed) that
// before.validate(changed) does not have.
func diffProblems(before, after *Snapshot, changed map[Ref]bool) []*ValidationError {
	old := map[string]bool{}
	for _, e := range before.validate(changed) {
		old[e.Error()] = true
	}
	var out []*ValidationError
	for _, e := range after.validate(changed) {
		if !old[e.Error()] {
			out = append(out, e)
		}
	}
	return out
}

// changeProblems returns what diffProblems would for before and before
// with changes made, judging only the changes' neighbourhood; ok is false
// when the changes need the whole model checked. It costs O(k log n) for
// k resources in the neighbourhood, once the parts of before's index it
// needs are built (O(n), once per snapshot).
func changeProblems(before *Snapshot, changes []change, changed map[Ref]bool) (errs []*ValidationError, ok bool) {
	for _, c := range changes {
		if wholeModelKinds[c.ref.Kind] {
			return nil, false
		}
	}
	nb := &neighbourhood{
		ix:     before.changeIndexOf(),
		before: before,
		after:  make(map[Ref]Resource, len(changes)),
		refs:   map[Ref]bool{},
	}
	for _, c := range changes {
		nb.after[c.ref] = c.after
	}
	for _, c := range changes {
		if !nb.around(c) {
			return nil, false
		}
	}
	return diffProblems(nb.restrict(false), nb.restrict(true), changed), true
}

// neighbourhood collects the resources a write's check needs.
type neighbourhood struct {
	ix     *changeIndex
	before *Snapshot
	after  map[Ref]Resource // the changed resources after the write; nil when deleted
	refs   map[Ref]bool
}

// get returns the resource ref names before or after the write, or nil.
func (nb *neighbourhood) get(ref Ref, after bool) Resource {
	if after {
		if r, ok := nb.after[ref]; ok {
			return r
		}
	}
	if r, ok := nb.before.Get(ref); ok {
		return r
	}
	return nil
}

func (nb *neighbourhood) endpoint(name string, after bool) *WorkloadEndpoint {
	ep, _ := nb.get(Ref{KindWorkloadEndpoint, name}, after).(*WorkloadEndpoint)
	return ep
}

// versions calls f with c's resource before and after the write, those
// that exist.
func (c change) versions(f func(r Resource, after bool)) {
	if c.before != nil {
		f(c.before, false)
	}
	if c.after != nil {
		f(c.after, true)
	}
}

// around adds c's neighbourhood; it returns false when c needs the whole
// model checked.
func (nb *neighbourhood) around(c change) bool {
	nb.refs[c.ref] = true
	whole := false
	c.versions(func(r Resource, after bool) {
		switch r := r.(type) {
		case *WorkloadEndpoint:
			for _, p := range r.Spec.IPNetworks {
				if p.IsValid() {
					nb.address(p.Addr())
				}
			}
			nb.iface(r.Spec.Node, r.Spec.Interface)
		case *FloatingIP:
			if r.Spec.IP.IsValid() {
				nb.address(r.Spec.IP)
			}
			nb.floatingIP(r, after)
		case *Node:
			for _, p := range []netip.Prefix{r.Spec.IPv4Address, r.Spec.IPv6Address} {
				if p.IsValid() {
					nb.address(p.Addr())
				}
			}
			nb.iface(r.Metadata.Name, r.Spec.UnderlayInterface)
			whole = whole || nb.ix.peersShareNode(r)
		case *IPAMBlock, *NetworkPolicy, *BGPConfiguration:
			// A block is checked against its pool, and every pool is in
			// the neighbourhood; policies and the BGP configuration have
			// no rule across resources.
		default:
			whole = true
		}
	})
	if c.ref.Kind == KindWorkloadEndpoint {
		// The FloatingIPs naming the endpoint take their fixed IP from it.
		nb.ix.fips().fipByEndpoint.each(c.ref.Name, func(name string) {
			ref := Ref{KindFloatingIP, name}
			nb.refs[ref] = true
			for _, after := range []bool{false, true} {
				if f, _ := nb.get(ref, after).(*FloatingIP); f != nil {
					nb.floatingIP(f, after)
				}
			}
		})
	}
	return !whole
}

// address adds every resource a rule compares with an address: the
// endpoints, nodes and FloatingIPs having it, the BGPPeers peering with
// it, the Subnets it is the gateway of, and the most specific Subnets
// containing it.
func (nb *neighbourhood) address(a netip.Addr) {
	ix, k := nb.ix, keyOf(a)
	ix.endpoints().endpointByAddr.each(k, nb.adder(KindWorkloadEndpoint))
	ix.fips().fipByIP.each(k, nb.adder(KindFloatingIP))
	ix.rest()
	ix.nodeByAddr.each(k, nb.adder(KindNode))
	ix.peerByIP.each(k, nb.adder(KindBGPPeer))
	ix.subnetByGateway.each(k, nb.adder(KindSubnet))
	if sn := ix.subnets.Lookup(a); sn != nil {
		ix.subnetByCIDR.each(sn.Spec.CIDR, nb.adder(KindSubnet))
	}
}

// iface adds the endpoints on node with interface name and the node,
// whose underlay interface it may be.
func (nb *neighbourhood) iface(node, name string) {
	if name == "" {
		return
	}
	nb.ix.endpoints().endpointByIface.each([2]string{node, name}, nb.adder(KindWorkloadEndpoint))
	if node != "" {
		nb.refs[Ref{KindNode, node}] = true
	}
}

// floatingIP adds what f's endpoint and fixed-IP rules compare: its
// endpoint, and every FloatingIP that may have the same fixed IP with its
// endpoint (whether one takes part depends on its endpoint). Those name an
// endpoint having that address: a fixed IP, given or not, is one of its
// endpoint's addresses, or the FloatingIP is refused before it counts.
func (nb *neighbourhood) floatingIP(f *FloatingIP, after bool) {
	if f.Spec.Endpoint == "" {
		return
	}
	nb.refs[Ref{KindWorkloadEndpoint, f.Spec.Endpoint}] = true
	fixed, ok := fixedIPOf(f, nb.endpoint(f.Spec.Endpoint, after))
	if !ok {
		return
	}
	nb.ix.endpoints().endpointByAddr.each(keyOf(fixed), func(ep string) {
		nb.refs[Ref{KindWorkloadEndpoint, ep}] = true
		nb.ix.fips().fipByEndpoint.each(ep, nb.adder(KindFloatingIP))
	})
}

func (nb *neighbourhood) adder(kind string) func(string) {
	return func(name string) { nb.refs[Ref{kind, name}] = true }
}

// restrict returns the neighbourhood before or after the write, with
// every IPPool and the Config.
func (nb *neighbourhood) restrict(after bool) *Snapshot {
	s := &Snapshot{
		Pools:       nb.before.Pools, // read only: no pool is in refs
		Nodes:       map[string]*Node{},
		Endpoints:   map[string]*WorkloadEndpoint{},
		FloatingIPs: map[string]*FloatingIP{},
		Policies:    map[string]*NetworkPolicy{},
		Config:      nb.before.Config,
		Blocks:      map[string]*IPAMBlock{},
		Subnets:     map[string]*Subnet{},
		BGPPeers:    map[string]*BGPPeer{},
	}
	for ref := range nb.refs {
		if r := nb.get(ref, after); r != nil {
			s.Put(r)
		}
	}
	return s
}

// changeIndex finds the resources a write's check needs by the keys the
// cross-resource rules compare. Its parts are built on first use (each
// O(n) in the resources it indexes), so a write that needs none (a
// policy's) costs nothing, and it is safe for concurrent use, as the
// snapshot it belongs to is.
type changeIndex struct {
	s *Snapshot

	endpointsOnce   sync.Once
	endpointByAddr  multiIndex[addrKey]
	endpointByIface multiIndex[[2]string] // (node, interface)

	fipsOnce      sync.Once
	fipByIP       multiIndex[addrKey]
	fipByEndpoint multiIndex[string]
	// endpointsBuilt and fipsBuilt say their parts exist (for update).
	endpointsBuilt, fipsBuilt bool

	restOnce        sync.Once
	nodeByAddr      multiIndex[addrKey]
	peerByIP        multiIndex[addrKey]
	sharedPeers     []*BGPPeer // those whose peerIP another BGPPeer has too
	subnetByGateway multiIndex[addrKey]
	subnetByCIDR    multiIndex[netip.Prefix]
	subnets         *SubnetIndex
}

// addrKey is an address as an index key: 16 bytes hash faster than a
// netip.Addr. An IPv4 address and its IPv4-mapped IPv6 form share a key,
// which only adds a resource to a neighbourhood.
type addrKey [16]byte

func keyOf(a netip.Addr) addrKey { return a.As16() }

// setOwned puts r (or, when r is nil, removes ref) in s and keeps the
// parts of s's index already built in step, where Put and Remove drop it.
// It is for a snapshot one writer owns and changes between checks (a
// file store's model of its last write), never one handed out.
func (s *Snapshot) setOwned(ref Ref, r Resource) {
	ix := s.index.Load()
	old, _ := s.Get(ref)
	if r != nil {
		s.Put(r)
	} else {
		s.Remove(ref)
	}
	if ix != nil {
		ix.update(ref, old, r)
		s.index.Store(ix)
	}
}

// update moves ref from old to cur (either nil when absent) in the parts
// of ix already built; a change to a kind of the rest's part drops that
// part, to be built again when next needed.
func (ix *changeIndex) update(ref Ref, old, cur Resource) {
	switch ref.Kind {
	case KindWorkloadEndpoint:
		if !ix.endpointsBuilt {
			return
		}
		each := func(r Resource, f func(addrKey), g func([2]string)) {
			if ep, ok := r.(*WorkloadEndpoint); ok && ep != nil {
				for _, p := range ep.Spec.IPNetworks {
					if p.IsValid() {
						f(keyOf(p.Addr()))
					}
				}
				if ep.Spec.Interface != "" {
					g([2]string{ep.Spec.Node, ep.Spec.Interface})
				}
			}
		}
		each(old, func(k addrKey) { ix.endpointByAddr.remove(k, ref.Name) }, func(k [2]string) { ix.endpointByIface.remove(k, ref.Name) })
		each(cur, func(k addrKey) { ix.endpointByAddr.add(k, ref.Name) }, func(k [2]string) { ix.endpointByIface.add(k, ref.Name) })
	case KindFloatingIP:
		if !ix.fipsBuilt {
			return
		}
		each := func(r Resource, f func(addrKey), g func(string)) {
			if fip, ok := r.(*FloatingIP); ok && fip != nil {
				if fip.Spec.IP.IsValid() {
					f(keyOf(fip.Spec.IP))
				}
				g(fip.Spec.Endpoint)
			}
		}
		each(old, func(k addrKey) { ix.fipByIP.remove(k, ref.Name) }, func(k string) { ix.fipByEndpoint.remove(k, ref.Name) })
		each(cur, func(k addrKey) { ix.fipByIP.add(k, ref.Name) }, func(k string) { ix.fipByEndpoint.add(k, ref.Name) })
	case KindNode, KindBGPPeer, KindSubnet:
		ix.restOnce = sync.Once{}
		ix.sharedPeers = nil
	}
}

// changeIndexOf returns s's index; s must not change while it is used, as
// a snapshot handed out does not (setOwned keeps it in step).
func (s *Snapshot) changeIndexOf() *changeIndex {
	if ix := s.index.Load(); ix != nil {
		return ix
	}
	s.index.CompareAndSwap(nil, &changeIndex{s: s})
	return s.index.Load()
}

func (ix *changeIndex) endpoints() *changeIndex {
	ix.endpointsOnce.Do(func() {
		ix.endpointsBuilt = true
		s := ix.s
		ix.endpointByAddr = newMultiIndex[addrKey](len(s.Endpoints))
		ix.endpointByIface = newMultiIndex[[2]string](len(s.Endpoints))
		for name, ep := range s.Endpoints {
			for _, p := range ep.Spec.IPNetworks {
				if p.IsValid() {
					ix.endpointByAddr.add(keyOf(p.Addr()), name)
				}
			}
			if ep.Spec.Interface != "" {
				ix.endpointByIface.add([2]string{ep.Spec.Node, ep.Spec.Interface}, name)
			}
		}
	})
	return ix
}

func (ix *changeIndex) fips() *changeIndex {
	ix.fipsOnce.Do(func() {
		ix.fipsBuilt = true
		s := ix.s
		ix.fipByIP = newMultiIndex[addrKey](len(s.FloatingIPs))
		ix.fipByEndpoint = newMultiIndex[string](len(s.FloatingIPs))
		for name, f := range s.FloatingIPs {
			if f.Spec.IP.IsValid() {
				ix.fipByIP.add(keyOf(f.Spec.IP), name)
			}
			ix.fipByEndpoint.add(f.Spec.Endpoint, name)
		}
	})
	return ix
}

func (ix *changeIndex) rest() *changeIndex {
	ix.restOnce.Do(func() {
		s := ix.s
		ix.nodeByAddr = newMultiIndex[addrKey](2 * len(s.Nodes))
		ix.peerByIP = newMultiIndex[addrKey](len(s.BGPPeers))
		ix.subnetByGateway = newMultiIndex[addrKey](len(s.Subnets))
		ix.subnetByCIDR = newMultiIndex[netip.Prefix](len(s.Subnets))
		ix.subnets = NewSubnetIndex(s.Subnets)
		for name, n := range s.Nodes {
			for _, p := range []netip.Prefix{n.Spec.IPv4Address, n.Spec.IPv6Address} {
				if p.IsValid() {
					ix.nodeByAddr.add(keyOf(p.Addr()), name)
				}
			}
		}
		for name, p := range s.BGPPeers {
			if p.Spec.PeerIP.IsValid() {
				ix.peerByIP.add(keyOf(p.Spec.PeerIP), name)
			}
		}
		for a := range ix.peerByIP.more {
			ix.peerByIP.each(a, func(name string) { ix.sharedPeers = append(ix.sharedPeers, s.BGPPeers[name]) })
		}
		for name, sn := range s.Subnets {
			if sn.Spec.GatewayIP.IsValid() {
				ix.subnetByGateway.add(keyOf(sn.Spec.GatewayIP), name)
			}
			if sn.Spec.CIDR.IsValid() {
				ix.subnetByCIDR.add(sn.Spec.CIDR, name)
			}
		}
	})
	return ix
}

// peersShareNode reports whether two BGPPeers with one peerIP both select
// n: whether such a pair overlaps, and at which node, is then decided over
// every node.
func (ix *changeIndex) peersShareNode(n *Node) bool {
	selecting := map[netip.Addr]bool{}
	for _, p := range ix.rest().sharedPeers {
		if !p.Spec.selects(n) {
			continue
		}
		if selecting[p.Spec.PeerIP] {
			return true
		}
		selecting[p.Spec.PeerIP] = true
	}
	return false
}

// multiIndex maps a key to the names having it. Most keys have one, kept
// in a map of strings so that indexing n resources is n plain map writes.
type multiIndex[K comparable] struct {
	one  map[K]string
	more map[K][]string // the names after the first
}

func newMultiIndex[K comparable](n int) multiIndex[K] {
	return multiIndex[K]{one: make(map[K]string, n), more: map[K][]string{}}
}

func (m *multiIndex[K]) add(k K, name string) {
	if _, ok := m.one[k]; !ok {
		m.one[k] = name
		return
	}
	m.more[k] = append(m.more[k], name)
}

// remove takes name off k's list.
func (m *multiIndex[K]) remove(k K, name string) {
	more := m.more[k]
	if m.one[k] == name {
		if len(more) == 0 {
			delete(m.one, k)
			return
		}
		m.one[k], more = more[0], more[1:]
	} else if i := slices.Index(more, name); i >= 0 {
		more = slices.Delete(slices.Clone(more), i, i+1)
	}
	if len(more) == 0 {
		delete(m.more, k)
	} else {
		m.more[k] = more
	}
}

// each calls f with every name having k.
func (m *multiIndex[K]) each(k K, f func(string)) {
	name, ok := m.one[k]
	if !ok {
		return
	}
	f(name)
	for _, name := range m.more[k] {
		f(name)
	}
}
