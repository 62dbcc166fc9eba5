package model

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"weak"
)

// Snapshot is a view of the whole model at one revision. It is immutable
// once handed out (by a Datastore or a Watch): change a Clone instead.
type Snapshot struct {
	// Revision is the datastore's revision counter; 0 for a snapshot that
	// did not come from a datastore.
	Revision  uint64
	Pools     map[string]*IPPool
	Nodes     map[string]*Node
	Endpoints map[string]*WorkloadEndpoint
	// FloatingIPs are keyed by the FloatingIP's name.
	FloatingIPs map[string]*FloatingIP
	// Policies are keyed by the NetworkPolicy's name.
	Policies map[string]*NetworkPolicy
	// Config is never nil: it holds the defaults when no Config is stored.
	Config *Config
	// Blocks are the IPAM blocks, keyed by name (BlockName of the CIDR).
	Blocks map[string]*IPAMBlock
	// Subnets are keyed by the Subnet's name.
	Subnets map[string]*Subnet
	// BGPConfig is the stored BGPConfiguration, or nil when none is (the
	// defaults are in force: see EffectiveBGPConfiguration).
	BGPConfig *BGPConfiguration
	// BGPPeers are keyed by the BGPPeer's name.
	BGPPeers map[string]*BGPPeer

	// configStored tells a stored Config from the defaults, so Remove can
	// say whether there was anything to remove.
	configStored bool

	// index is what a write's check looks resources up by, built on first
	// use (changeIndexOf) and dropped by Put and Remove.
	index atomic.Pointer[changeIndex]
	// base is the snapshot this one was cloned from and edits what Put
	// and Remove changed since, while tracked: so a delete's check looks
	// at what it removed only (see EditsSince).
	base    weak.Pointer[Snapshot]
	edits   []Ref
	tracked bool
}

// NewSnapshot returns an empty snapshot with the default Config.
func NewSnapshot() *Snapshot {
	return &Snapshot{
		Pools:       map[string]*IPPool{},
		Nodes:       map[string]*Node{},
		Endpoints:   map[string]*WorkloadEndpoint{},
		FloatingIPs: map[string]*FloatingIP{},
		Policies:    map[string]*NetworkPolicy{},
		Config:      DefaultConfig(),
		Blocks:      map[string]*IPAMBlock{},
		Subnets:     map[string]*Subnet{},
		BGPPeers:    map[string]*BGPPeer{},
	}
}

// Clone returns a copy with new maps holding the same resource pointers;
// resources are immutable, so this is all a writer needs.
func (s *Snapshot) Clone() *Snapshot {
	c := &Snapshot{
		Revision:     s.Revision,
		Pools:        make(map[string]*IPPool, len(s.Pools)),
		Nodes:        make(map[string]*Node, len(s.Nodes)),
		Endpoints:    make(map[string]*WorkloadEndpoint, len(s.Endpoints)),
		FloatingIPs:  make(map[string]*FloatingIP, len(s.FloatingIPs)),
		Policies:     make(map[string]*NetworkPolicy, len(s.Policies)),
		Config:       s.Config,
		Blocks:       make(map[string]*IPAMBlock, len(s.Blocks)),
		Subnets:      make(map[string]*Subnet, len(s.Subnets)),
		BGPConfig:    s.BGPConfig,
		BGPPeers:     make(map[string]*BGPPeer, len(s.BGPPeers)),
		configStored: s.configStored,
		base:         weak.Make(s),
		tracked:      true,
	}
	for k, v := range s.Pools {
		c.Pools[k] = v
	}
	for k, v := range s.Nodes {
		c.Nodes[k] = v
	}
	for k, v := range s.Endpoints {
		c.Endpoints[k] = v
	}
	for k, v := range s.FloatingIPs {
		c.FloatingIPs[k] = v
	}
	for k, v := range s.Policies {
		c.Policies[k] = v
	}
	for k, v := range s.Blocks {
		c.Blocks[k] = v
	}
	for k, v := range s.Subnets {
		c.Subnets[k] = v
	}
	for k, v := range s.BGPPeers {
		c.BGPPeers[k] = v
	}
	if c.Config == nil {
		c.Config = DefaultConfig()
	}
	return c
}

func (s *Snapshot) ensureMaps() {
	if s.Pools == nil {
		s.Pools = map[string]*IPPool{}
	}
	if s.Nodes == nil {
		s.Nodes = map[string]*Node{}
	}
	if s.Endpoints == nil {
		s.Endpoints = map[string]*WorkloadEndpoint{}
	}
	if s.FloatingIPs == nil {
		s.FloatingIPs = map[string]*FloatingIP{}
	}
	if s.Policies == nil {
		s.Policies = map[string]*NetworkPolicy{}
	}
	if s.Blocks == nil {
		s.Blocks = map[string]*IPAMBlock{}
	}
	if s.Subnets == nil {
		s.Subnets = map[string]*Subnet{}
	}
	if s.BGPPeers == nil {
		s.BGPPeers = map[string]*BGPPeer{}
	}
}

// Put adds r or replaces the resource of the same kind and name.
func (s *Snapshot) Put(r Resource) {
	s.ensureMaps()
	if s.tracked || s.index.Load() != nil {
		s.touch(RefOf(r))
	}
	switch r := r.(type) {
	case *IPPool:
		s.Pools[r.Metadata.Name] = r
	case *Node:
		s.Nodes[r.Metadata.Name] = r
	case *WorkloadEndpoint:
		s.Endpoints[r.Metadata.Name] = r
	case *FloatingIP:
		s.FloatingIPs[r.Metadata.Name] = r
	case *NetworkPolicy:
		s.Policies[r.Metadata.Name] = r
	case *Config:
		s.Config = r
		s.configStored = true
	case *IPAMBlock:
		s.Blocks[r.Metadata.Name] = r
	case *Subnet:
		s.Subnets[r.Metadata.Name] = r
	case *BGPConfiguration:
		s.BGPConfig = r
	case *BGPPeer:
		s.BGPPeers[r.Metadata.Name] = r
	}
}

// Remove deletes the named resource and reports whether it was there.
// Removing the Config puts the defaults back.
func (s *Snapshot) Remove(ref Ref) bool {
	var ok bool
	switch ref.Kind {
	case KindIPPool:
		if _, ok = s.Pools[ref.Name]; ok {
			delete(s.Pools, ref.Name)
		}
	case KindNode:
		if _, ok = s.Nodes[ref.Name]; ok {
			delete(s.Nodes, ref.Name)
		}
	case KindWorkloadEndpoint:
		if _, ok = s.Endpoints[ref.Name]; ok {
			delete(s.Endpoints, ref.Name)
		}
	case KindFloatingIP:
		if _, ok = s.FloatingIPs[ref.Name]; ok {
			delete(s.FloatingIPs, ref.Name)
		}
	case KindNetworkPolicy:
		if _, ok = s.Policies[ref.Name]; ok {
			delete(s.Policies, ref.Name)
		}
	case KindConfig:
		if ref.Name == ConfigName && s.configStored {
			ok = true
			s.Config = DefaultConfig()
			s.configStored = false
		}
	case KindIPAMBlock:
		if _, ok = s.Blocks[ref.Name]; ok {
			delete(s.Blocks, ref.Name)
		}
	case KindSubnet:
		if _, ok = s.Subnets[ref.Name]; ok {
			delete(s.Subnets, ref.Name)
		}
	case KindBGPConfiguration:
		if ok = s.BGPConfig != nil && s.BGPConfig.Metadata.Name == ref.Name; ok {
			s.BGPConfig = nil
		}
	case KindBGPPeer:
		if _, ok = s.BGPPeers[ref.Name]; ok {
			delete(s.BGPPeers, ref.Name)
		}
	}
	if ok {
		s.touch(ref)
	}
	return ok
}

// Get returns the named resource, or false when there is none. Config
// "default" is always found: the defaults stand in when none is stored.
func (s *Snapshot) Get(ref Ref) (Resource, bool) {
	switch ref.Kind {
	case KindIPPool:
		if r, ok := s.Pools[ref.Name]; ok {
			return r, true
		}
	case KindNode:
		if r, ok := s.Nodes[ref.Name]; ok {
			return r, true
		}
	case KindWorkloadEndpoint:
		if r, ok := s.Endpoints[ref.Name]; ok {
			return r, true
		}
	case KindFloatingIP:
		if r, ok := s.FloatingIPs[ref.Name]; ok {
			return r, true
		}
	case KindNetworkPolicy:
		if r, ok := s.Policies[ref.Name]; ok {
			return r, true
		}
	case KindConfig:
		if ref.Name == ConfigName && s.Config != nil {
			return s.Config, true
		}
	case KindIPAMBlock:
		if r, ok := s.Blocks[ref.Name]; ok {
			return r, true
		}
	case KindSubnet:
		if r, ok := s.Subnets[ref.Name]; ok {
			return r, true
		}
	case KindBGPConfiguration:
		if s.BGPConfig != nil && s.BGPConfig.Metadata.Name == ref.Name {
			return s.BGPConfig, true
		}
	case KindBGPPeer:
		if r, ok := s.BGPPeers[ref.Name]; ok {
			return r, true
		}
	}
	return nil, false
}

// Resources returns the resources of one kind (any spelling ParseKind
// accepts) sorted by name, or with kind "" all of them in the order Config,
// BGPConfiguration, IPPool, Node, Subnet, BGPPeer, WorkloadEndpoint,
// FloatingIP, NetworkPolicy, IPAMBlock. An unknown kind yields nil. A
// BGPConfiguration is listed only when stored.
func (s *Snapshot) Resources(kind string) []Resource {
	if k, err := ParseKind(kind); err == nil {
		kind = k
	}
	if kind == "" {
		var out []Resource
		for _, k := range kindOrder {
			out = append(out, s.Resources(k)...)
		}
		return out
	}
	switch kind {
	case KindIPPool:
		return sortedResources(s.Pools)
	case KindNode:
		return sortedResources(s.Nodes)
	case KindWorkloadEndpoint:
		return sortedResources(s.Endpoints)
	case KindFloatingIP:
		return sortedResources(s.FloatingIPs)
	case KindNetworkPolicy:
		return sortedResources(s.Policies)
	case KindConfig:
		if s.Config != nil {
			return []Resource{s.Config}
		}
	case KindIPAMBlock:
		return sortedResources(s.Blocks)
	case KindSubnet:
		return sortedResources(s.Subnets)
	case KindBGPConfiguration:
		if s.BGPConfig != nil {
			return []Resource{s.BGPConfig}
		}
	case KindBGPPeer:
		return sortedResources(s.BGPPeers)
	}
	return nil
}

// FixedIP returns the address f maps to: spec.fixedIP when given, else the
// first IPv4 address in its endpoint's ipNetworks. It returns false when the
// endpoint does not exist, or when no fixedIP is given and the endpoint has
// no IPv4 address. It does not check that an explicit fixedIP belongs to the
// endpoint: Validate does.
func (s *Snapshot) FixedIP(f *FloatingIP) (netip.Addr, bool) {
	return fixedIPOf(f, s.Endpoints[f.Spec.Endpoint])
}

// fixedIPOf is FixedIP with f's endpoint given (nil when there is none).
func fixedIPOf(f *FloatingIP, ep *WorkloadEndpoint) (netip.Addr, bool) {
	if ep == nil {
		return netip.Addr{}, false
	}
	if f.Spec.FixedIP.IsValid() {
		return f.Spec.FixedIP, true
	}
	for _, p := range ep.Spec.IPNetworks {
		if p.IsValid() && p.Addr().Is4() {
			return p.Addr(), true
		}
	}
	return netip.Addr{}, false
}

func sortedResources[R Resource](m map[string]R) []Resource {
	out := make([]Resource, 0, len(m))
	for _, k := range sortedKeys(m) {
		out = append(out, m[k])
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// Validate checks the rules that span resources: no address is used by two
// endpoints nor by an endpoint and a node, every endpoint address lies in an enabled, non-external pool,
// pools do not overlap, no two endpoints on one node share an interface
// name, and no two nodes share an underlay address. For each FloatingIP:
// its ip lies in an enabled, external pool, inside no non-external pool, and
// is no other FloatingIP's, endpoint's or node's address; its endpoint
// exists; its fixed IP (given, or the endpoint's first IPv4) is one of the
// endpoint's addresses and has no other FloatingIP. So deleting an endpoint
// or pool a FloatingIP needs is refused. No Config.prefilterDeny entry may
// contain a node's address. Every IPAMBlock names an existing, enabled pool
// that contains its CIDR and whose blockSize is the CIDR's prefix length (a
// block whose node is gone is allowed: IPAM releases it). No two Subnets
// have the same cidr, no endpoint has a Subnet's gatewayIP, and no endpoint
// address is the network or broadcast address of its Subnet (the most
// specific one containing it). No BGPPeer's peerIP is a Node's address,
// and no two BGPPeers with one peerIP select the same node. It returns nil, or one
// *ValidationError per problem joined one per line. Its cost is
// O(n log n) in the number of resources.
func (s *Snapshot) Validate() error { return joinValidation(s.validate(nil)) }

// validate reports each conflict once. When a conflict involves a resource
// in changed (what an Apply is writing), the error is reported on that
// resource, since that is the one the user is looking at.
func (s *Snapshot) validate(changed map[Ref]bool) []*ValidationError {
	var errs []*ValidationError
	add := func(ref Ref, path, format string, args ...any) {
		errs = append(errs, &ValidationError{Ref: ref, Path: path, Reason: fmt.Sprintf(format, args...)})
	}
	// subject picks which of two conflicting resources an error is about.
	subject := func(kind, earlier, later string) (string, string) {
		if changed[Ref{kind, earlier}] && !changed[Ref{kind, later}] {
			return earlier, later
		}
		return later, earlier
	}

	poolNames := sortedKeys(s.Pools)
	all := newPoolIndex()
	usable := newPoolIndex()
	floating := newPoolIndex() // enabled, external: where floating IPs come from
	var floatingV4 []*IPPool
	for _, name := range poolNames {
		p := s.Pools[name]
		if !p.Spec.CIDR.IsValid() {
			continue
		}
		all.add(p)
		switch {
		case p.Spec.Disabled:
		case p.Spec.External:
			floating.add(p)
			if p.Spec.CIDR.Addr().Is4() {
				floatingV4 = append(floatingV4, p)
			}
		default:
			usable.add(p)
		}
	}

	for _, name := range poolNames {
		p := s.Pools[name]
		cidr := p.Spec.CIDR
		if !cidr.IsValid() {
			continue
		}
		for _, bits := range all.lengths(cidr.Addr()) {
			if bits > cidr.Bits() {
				break
			}
			for _, q := range all.byPrefix[netip.PrefixFrom(cidr.Addr(), bits).Masked()] {
				if q == p || (bits == cidr.Bits() && q.Metadata.Name > name) {
					continue // the same pool, or an equal pair seen from the other side
				}
				earlier, later := q.Metadata.Name, name
				if later < earlier {
					earlier, later = later, earlier
				}
				subj, other := subject(KindIPPool, earlier, later)
				add(Ref{KindIPPool, subj}, "spec.cidr", "%s overlaps IPPool/%s (%s)",
					s.Pools[subj].Spec.CIDR, other, s.Pools[other].Spec.CIDR)
			}
		}
	}

	epNames := sortedKeys(s.Endpoints)
	type owner struct {
		name  string
		index int
	}
	addrOwner := make(map[netip.Addr]owner, len(s.Endpoints))
	ifaceOwner := make(map[[2]string]string, len(s.Endpoints))
	for _, name := range epNames {
		ep := s.Endpoints[name]
		ref := Ref{KindWorkloadEndpoint, name}
		for i, p := range ep.Spec.IPNetworks {
			if !p.IsValid() {
				continue
			}
			a := p.Addr()
			if o, ok := addrOwner[a]; ok {
				if o.name != name {
					subj, other := subject(KindWorkloadEndpoint, o.name, name)
					idx := i
					if subj == o.name {
						idx = o.index
					}
					add(Ref{KindWorkloadEndpoint, subj}, fmt.Sprintf("spec.ipNetworks[%d]", idx),
						"%s is already used by WorkloadEndpoint/%s", p, other)
				}
			} else {
				addrOwner[a] = owner{name, i}
			}
			if usable.first(a) == nil {
				why := ""
				if q := all.first(a); q != nil {
					state := "external"
					if q.Spec.Disabled {
						state = "disabled"
					}
					why = fmt.Sprintf(" (IPPool/%s, which contains it, is %s)", q.Metadata.Name, state)
				}
				add(ref, fmt.Sprintf("spec.ipNetworks[%d]", i), "%s is in no enabled, non-external IPPool%s", p, why)
			}
		}
		if n, ok := s.Nodes[ep.Spec.Node]; ok && ep.Spec.Interface != "" && ep.Spec.Interface == n.Spec.UnderlayInterface {
			add(ref, "spec.interface", "%q is the underlay interface of Node/%s: the agent never attaches workload programs to it",
				ep.Spec.Interface, ep.Spec.Node)
		}
		if ep.Spec.Node != "" && ep.Spec.Interface != "" {
			key := [2]string{ep.Spec.Node, ep.Spec.Interface}
			if o, ok := ifaceOwner[key]; ok {
				subj, other := subject(KindWorkloadEndpoint, o, name)
				add(Ref{KindWorkloadEndpoint, subj}, "spec.interface", "%q on node %q is already used by WorkloadEndpoint/%s",
					ep.Spec.Interface, ep.Spec.Node, other)
			} else {
				ifaceOwner[key] = name
			}
		}
	}

	nodeAddr := make(map[netip.Addr]string, 2*len(s.Nodes))
	for _, name := range sortedKeys(s.Nodes) {
		n := s.Nodes[name]
		for _, f := range []struct {
			path string
			p    netip.Prefix
		}{{"spec.ipv4Address", n.Spec.IPv4Address}, {"spec.ipv6Address", n.Spec.IPv6Address}} {
			if !f.p.IsValid() {
				continue
			}
			if o, ok := nodeAddr[f.p.Addr()]; ok {
				subj, other := subject(KindNode, o, name)
				add(Ref{KindNode, subj}, f.path, "%s is already used by Node/%s", f.p.Addr(), other)
			} else {
				nodeAddr[f.p.Addr()] = name
			}
		}
	}

	// An endpoint may not have a node's address: its /32 would take the
	// node's underlay traffic into a workload.
	for _, name := range epNames {
		for i, p := range s.Endpoints[name].Spec.IPNetworks {
			if !p.IsValid() {
				continue
			}
			node, ok := nodeAddr[p.Addr()]
			if !ok {
				continue
			}
			if changed[Ref{KindNode, node}] && !changed[Ref{KindWorkloadEndpoint, name}] {
				add(Ref{KindNode, node}, "spec.ipv4Address", "%s is already used by WorkloadEndpoint/%s", p.Addr(), name)
				continue
			}
			add(Ref{KindWorkloadEndpoint, name}, fmt.Sprintf("spec.ipNetworks[%d]", i), "%s is the address of Node/%s", p, node)
		}
	}

	// A node's underlay traffic comes from its own address, so a prefilter
	// entry holding it would cut the node off from every other.
	if s.Config != nil && len(s.Config.Spec.PrefilterDeny) > 0 {
		cfg := RefOf(s.Config)
		deny := newPrefixIndex()
		for i, p := range s.Config.Spec.PrefilterDeny {
			if cidrProblem(p) == "" {
				deny.add(p, i)
			}
		}
		for _, name := range sortedKeys(s.Nodes) {
			n := s.Nodes[name]
			node := Ref{KindNode, name}
			for _, f := range []struct {
				field string
				p     netip.Prefix
			}{{"ipv4Address", n.Spec.IPv4Address}, {"ipv6Address", n.Spec.IPv6Address}} {
				if !f.p.IsValid() {
					continue
				}
				a := f.p.Addr()
				for _, i := range deny.containing(a) {
					deny := s.Config.Spec.PrefilterDeny[i]
					if changed[node] && !changed[cfg] {
						add(node, "spec."+f.field, "%s is inside spec.prefilterDeny[%d] (%s) of %s, which would cut %s off the underlay",
							a, i, deny, cfg, node)
					} else {
						add(cfg, fmt.Sprintf("spec.prefilterDeny[%d]", i), "%s contains %s, the %s of %s, and would cut %s off the underlay",
							deny, a, f.field, node, node)
					}
				}
			}
		}
	}

	fixedOwner := make(map[netip.Addr]string, len(s.FloatingIPs))
	fipOwner := make(map[netip.Addr]string, len(s.FloatingIPs))
	for _, name := range sortedKeys(s.FloatingIPs) {
		f := s.FloatingIPs[name]
		ref := Ref{KindFloatingIP, name}
		// Addresses Validate rejects on their own (missing, IPv6) get no
		// cross-resource errors: they would only be noise.
		if a := f.Spec.IP; a.IsValid() && a.Is4() {
			if o, ok := fipOwner[a]; ok {
				subj, other := subject(KindFloatingIP, o, name)
				add(Ref{KindFloatingIP, subj}, "spec.ip", "%s is already used by FloatingIP/%s", a, other)
			} else {
				fipOwner[a] = name
			}
			if o, ok := addrOwner[a]; ok {
				add(ref, "spec.ip", "%s is an address of WorkloadEndpoint/%s; a floating IP must not be a workload's address", a, o.name)
			} else if n, ok := nodeAddr[a]; ok {
				add(ref, "spec.ip", "%s is the address of Node/%s; a floating IP must not be a node's address", a, n)
			} else if q := all.firstWhere(a, func(p *IPPool) bool { return !p.Spec.External }); q != nil {
				add(ref, "spec.ip", "%s is inside IPPool/%s (%s), which is not external; floating IPs are taken from IPPools with external: true",
					a, q.Metadata.Name, q.Spec.CIDR)
			} else if floating.first(a) == nil {
				add(ref, "spec.ip", "%s is in no enabled, external IPPool (%s)", a, noFloatingPool(all.first(a), floatingV4))
			}
		}

		if !validName(f.Spec.Endpoint) {
			continue // reported on its own
		}
		ep := s.Endpoints[f.Spec.Endpoint]
		if ep == nil {
			add(ref, "spec.endpoint", "WorkloadEndpoint/%s does not exist", f.Spec.Endpoint)
			continue
		}
		fixed := f.Spec.FixedIP
		switch {
		case fixed.IsValid() && !fixed.Is4():
			continue // reported on its own
		case fixed.IsValid():
			if !slices.Contains(ep.Spec.IPNetworks, netip.PrefixFrom(fixed, 32)) {
				add(ref, "spec.fixedIP", "%s is not an address of WorkloadEndpoint/%s (%s)", fixed, ep.Metadata.Name, prefixList(ep.Spec.IPNetworks))
				continue
			}
		default:
			var ok bool
			if fixed, ok = s.FixedIP(f); !ok {
				add(ref, "spec.endpoint", "WorkloadEndpoint/%s has no IPv4 address (it has %s); an IPv4 floating IP needs an IPv4 fixed IP",
					ep.Metadata.Name, prefixList(ep.Spec.IPNetworks))
				continue
			}
		}
		// Traffic from the fixed IP is SNATed to its floating IP, which
		// must therefore be unique.
		if o, ok := fixedOwner[fixed]; ok {
			subj, other := subject(KindFloatingIP, o, name)
			add(Ref{KindFloatingIP, subj}, "spec.fixedIP", "%s of WorkloadEndpoint/%s already has FloatingIP/%s; an address can have only one floating IP",
				fixed, ep.Metadata.Name, other)
		} else {
			fixedOwner[fixed] = name
		}
	}

	for _, name := range sortedKeys(s.Blocks) {
		b := s.Blocks[name]
		ref := Ref{KindIPAMBlock, name}
		cidr := b.Spec.CIDR
		if !cidr.IsValid() || !validName(b.Spec.Pool) {
			continue // reported on its own
		}
		p := s.Pools[b.Spec.Pool]
		switch {
		case p == nil:
			add(ref, "spec.pool", "IPPool/%s does not exist", b.Spec.Pool)
		case p.Spec.Disabled:
			add(ref, "spec.pool", "IPPool/%s is disabled", b.Spec.Pool)
		case !p.Spec.CIDR.IsValid():
		case cidr.Bits() < p.Spec.CIDR.Bits() || !p.Spec.CIDR.Contains(cidr.Addr()):
			add(ref, "spec.cidr", "%s is not inside IPPool/%s (%s)", cidr, b.Spec.Pool, p.Spec.CIDR)
		case cidr.Bits() != p.Spec.effectiveBlockSize():
			add(ref, "spec.cidr", "%s is a /%d, but the blockSize of IPPool/%s is %d", cidr, cidr.Bits(), b.Spec.Pool, p.Spec.effectiveBlockSize())
		}
	}

	s.validateSubnets(changed, add, subject)
	s.validateBGP(changed, add, subject)

	kindRank := map[string]int{}
	for i, k := range kindOrder {
		kindRank[k] = i
	}
	slices.SortStableFunc(errs, func(a, b *ValidationError) int {
		return cmp.Or(
			cmp.Compare(kindRank[a.Ref.Kind], kindRank[b.Ref.Kind]),
			strings.Compare(a.Ref.Name, b.Ref.Name),
			strings.Compare(a.Path, b.Path),
		)
	})
	return errs
}

// noFloatingPool says why no enabled, external pool holds an address:
// container is the pool holding it, if any (a disabled external one), and
// external lists the enabled, external IPv4 pools.
func noFloatingPool(container *IPPool, external []*IPPool) string {
	if container != nil {
		return fmt.Sprintf("IPPool/%s, which contains it, is disabled", container.Metadata.Name)
	}
	if len(external) == 0 {
		return "there is none; floating IPs are taken from IPPools with external: true"
	}
	const most = 5
	parts := make([]string, 0, min(len(external), most)+1)
	for i, p := range external {
		if i == most {
			parts = append(parts, fmt.Sprintf("and %d more", len(external)-most))
			break
		}
		parts = append(parts, fmt.Sprintf("IPPool/%s (%s)", p.Metadata.Name, p.Spec.CIDR))
	}
	return "the external pools are " + strings.Join(parts, ", ")
}

// prefixList formats addresses for messages: "10.65.1.2/32, fd00::2/128".
func prefixList(ps []netip.Prefix) string {
	parts := make([]string, len(ps))
	for i, p := range ps {
		parts[i] = p.String()
	}
	return strings.Join(parts, ", ")
}

// poolIndex finds the pools containing an address with one map lookup per
// distinct prefix length in use, rather than a scan of every pool.
type poolIndex struct {
	byPrefix map[netip.Prefix][]*IPPool
	v4, v6   []int // distinct prefix lengths, ascending
}

func newPoolIndex() *poolIndex {
	return &poolIndex{byPrefix: map[netip.Prefix][]*IPPool{}}
}

func (ix *poolIndex) add(p *IPPool) {
	cidr := p.Spec.CIDR.Masked()
	ix.byPrefix[cidr] = append(ix.byPrefix[cidr], p)
	lens := &ix.v6
	if cidr.Addr().Is4() {
		lens = &ix.v4
	}
	if i, found := slices.BinarySearch(*lens, cidr.Bits()); !found {
		*lens = slices.Insert(*lens, i, cidr.Bits())
	}
}

func (ix *poolIndex) lengths(a netip.Addr) []int {
	if a.Is4() {
		return ix.v4
	}
	return ix.v6
}

// first returns the widest pool containing a, or nil.
func (ix *poolIndex) first(a netip.Addr) *IPPool {
	for _, bits := range ix.lengths(a) {
		if ps := ix.byPrefix[netip.PrefixFrom(a, bits).Masked()]; len(ps) > 0 {
			return ps[0]
		}
	}
	return nil
}

// firstWhere returns the widest pool containing a for which keep is true,
// or nil.
func (ix *poolIndex) firstWhere(a netip.Addr, keep func(*IPPool) bool) *IPPool {
	for _, bits := range ix.lengths(a) {
		for _, p := range ix.byPrefix[netip.PrefixFrom(a, bits).Masked()] {
			if keep(p) {
				return p
			}
		}
	}
	return nil
}

// prefixIndex finds the listed prefixes containing an address with one map
// lookup per distinct prefix length in use, like poolIndex.
type prefixIndex struct {
	byPrefix map[netip.Prefix][]int // masked prefix → indices in the list
	v4, v6   []int                  // distinct prefix lengths, ascending
}

func newPrefixIndex() *prefixIndex {
	return &prefixIndex{byPrefix: map[netip.Prefix][]int{}}
}

func (ix *prefixIndex) add(p netip.Prefix, i int) {
	p = p.Masked()
	ix.byPrefix[p] = append(ix.byPrefix[p], i)
	lens := &ix.v6
	if p.Addr().Is4() {
		lens = &ix.v4
	}
	if j, found := slices.BinarySearch(*lens, p.Bits()); !found {
		*lens = slices.Insert(*lens, j, p.Bits())
	}
}

// containing returns the indices of the prefixes holding a, widest first.
func (ix *prefixIndex) containing(a netip.Addr) []int {
	lens := ix.v6
	if a.Is4() {
		lens = ix.v4
	}
	var out []int
	for _, bits := range lens {
		out = append(out, ix.byPrefix[netip.PrefixFrom(a, bits).Masked()]...)
	}
	return out
}
