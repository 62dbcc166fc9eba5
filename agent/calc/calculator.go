package calc

import (
	"fmt"
	"maps"
	"net/netip"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync/atomic"

	"github.com/calyxnet/calyx/agent/host"
	"github.com/calyxnet/calyx/bpfmap"
	"github.com/calyxnet/calyx/model"
	"github.com/calyxnet/calyx/policy"
)

// Compute derives the desired dataplane state from scratch: a
// Calculator's first Compute, and the oracle its later ones must equal.
func Compute(in Input) *Desired { return NewCalculator().Compute(in) }

// Calculator derives the desired dataplane state again and again, redoing
// only what a change of the input can have changed. What every node and
// pool decides (the node's own routes and settings, other nodes, pools,
// subnets, Config, this host's addresses, the underlay and lo) is the
// basis: when it changes, everything is computed again. Otherwise each
// endpoint, floating IP and IPAM block is a source of map entries, and a
// change recomputes only the sources it touches:
//   - an endpoint: itself, the floating IPs naming it;
//   - a floating IP: itself;
//   - a block: itself and its node's endpoints inside it (a block route
//     covers them);
//   - an interface: the local endpoint on it;
//   - a conflict: every endpoint whose win or loss it changes;
//   - policy: see policy.Compiler.
//
// Where sources claim one key (a prefix, a floating IP), the one applied
// last in Compute's order wins: endpoints over blocks over floating IPs
// over the basis, and within a kind the name that sorts last. It relies on
// snapshots never changing a resource in place (model.Snapshot's
// contract). Its results equal Compute's for the same input
// (TestCalculatorIncrementalEqualsFull). The maps of a Desired it returns
// are its own and valid until the next Compute, except Endpoints, which
// the caller may change. Not safe for concurrent use.
type Calculator struct {
	policy *policy.Compiler
	basis  *basis

	gen  uint64          // of the last Compute
	last *model.Snapshot // the last Compute's, whose edits since tell what changed
	// policyChanged and ipcacheChanged are what the policy compiler said
	// changed in the Compute under way.
	policyChanged  map[bpfmap.PolicyKey]struct{}
	ipcacheChanged map[netip.Prefix]struct{}
	routes         *claims[netip.Prefix, bpfmap.Route]
	fipMap         *claims[netip.Addr, bpfmap.FloatingIP]
	eps            map[string]*epSource
	fips           map[string]*fipSource
	blocks         map[string]*blockSource
	links          map[string]host.Interface
	// seen are the resources the sources were computed from, by name.
	seen struct {
		eps    map[string]*model.WorkloadEndpoint
		fips   map[string]*model.FloatingIP
		blocks map[string]*model.IPAMBlock
	}
	// sorted are Desired's sorted lists, made again when dirty.
	sorted struct {
		dirty            bool
		kernel           []host.Route
		pending, refused []string
	}

	fipsOf     map[string]map[string]bool // floating IPs by the endpoint they name
	epsOfNode  map[string]map[string]bool // endpoints by node
	epsOfIface map[string]map[string]bool // this node's endpoints by interface
	// Endpoints' claims on addresses and on this node's interfaces, to
	// tell when a change may move a conflict.
	addrClaims  map[netip.Addr]int
	ifaceClaims map[string]int
	losers      map[string]bool
	conflicts   []string

	ifaces    *claims[uint32, bpfmap.Iface]
	slots     *counterSlots // kept across resets: the maps keep theirs
	attach    *claims[uint32, Attachment]
	endpoints map[uint32]bpfmap.EndpointStatus
	kernel    map[string][]host.Route // by endpoint
	pending   map[string]bool
	refused   map[string]bool
	// blocksOf are the routed blocks by node.
	blocksOf map[string]map[string]netip.Prefix
}

// Route ranks: a source of a higher rank wins a prefix.
const (
	rankBasis = iota
	rankFloatingIP
	rankBlock
	rankEndpoint
)

// basis is what every source's entries depend on.
type basis struct {
	node, underlay string
	prefilterXDP   bool
	hostAddrs      []netip.Addr
	nodes          map[string]*model.Node
	pools          map[string]*model.IPPool
	subnets        map[string]*model.Subnet
	config         model.ConfigSpec
	underlayLink   host.Interface
	loLink         host.Interface

	self      model.NodeSpec
	hasSelf   bool
	nodeAddrs map[netip.Addr]bool
	routes    map[netip.Prefix]bpfmap.Route
}

func newBasis(in Input) *basis {
	s := in.Snapshot
	b := &basis{
		node: in.Node, underlay: in.Underlay, prefilterXDP: in.PrefilterXDP,
		hostAddrs: slices.Clone(in.HostAddrs),
		nodes:     maps.Clone(s.Nodes), pools: maps.Clone(s.Pools), subnets: maps.Clone(s.Subnets),
		config:       s.Config.Spec,
		underlayLink: in.Links[in.Underlay], loLink: in.Links["lo"],
		routes: map[netip.Prefix]bpfmap.Route{}, nodeAddrs: map[netip.Addr]bool{},
	}
	for _, n := range s.Nodes {
		for _, p := range []netip.Prefix{n.Spec.IPv4Address, n.Spec.IPv6Address} {
			if p.IsValid() {
				b.nodeAddrs[p.Addr()] = true
			}
		}
	}
	if n, ok := s.Nodes[in.Node]; ok {
		// Its addresses choose the underlay per peer (NextHop) even
		// without an IPv4 one.
		b.self = n.Spec
		if n.Spec.IPv4Address.IsValid() {
			b.hasSelf = true
			b.routes[netip.PrefixFrom(n.Spec.IPv4Address.Addr(), 32)] = bpfmap.Route{Type: bpfmap.RouteHost}
		}
	}
	// The host's own IPv6 addresses, and the subnets' IPv6 gateways that
	// stand for it: IPv6 from a workload to them is endpointToHostAction's
	// (the programs tell IPv4 host addresses by the ipcache's host flag;
	// IPv6 has no ipcache yet). A workload's own route wins.
	hostV6 := slices.Concat(in.HostAddrs, subnetGateways(s))
	if n, ok := s.Nodes[in.Node]; ok && n.Spec.IPv6Address.IsValid() {
		hostV6 = append(hostV6, n.Spec.IPv6Address.Addr())
	}
	for _, a := range hostV6 {
		if a.Is6() && !a.Is4In6() && !a.IsLoopback() && !a.IsLinkLocalUnicast() {
			b.routes[netip.PrefixFrom(a, 128)] = bpfmap.Route{Type: bpfmap.RouteHost}
		}
	}
	for name, n := range s.Nodes {
		if name == in.Node {
			continue
		}
		// Other nodes, on either underlay: the only sources tunnel
		// packets are accepted from.
		for _, p := range []netip.Prefix{n.Spec.IPv4Address, n.Spec.IPv6Address} {
			if !p.IsValid() {
				continue
			}
			if a := p.Addr(); a != b.self.IPv4Address.Addr() && a != b.self.IPv6Address.Addr() {
				b.routes[netip.PrefixFrom(a, a.BitLen())] = bpfmap.Route{Type: bpfmap.RouteNode, NextHop: a}
			}
		}
	}
	// Pools of both families: an address in one is not "outside" for
	// natOutgoing. Workload routes (/32, /128) are more specific and win
	// the lookup.
	for _, p := range WorkloadPools(s) {
		b.routes[p] = bpfmap.Route{Type: bpfmap.RoutePool}
	}
	return b
}

// same says whether in has the basis b was made from.
func (b *basis) same(in Input) bool {
	s := in.Snapshot
	return b != nil && b.node == in.Node && b.underlay == in.Underlay && b.prefilterXDP == in.PrefilterXDP &&
		slices.Equal(b.hostAddrs, in.HostAddrs) && maps.Equal(b.nodes, s.Nodes) && maps.Equal(b.pools, s.Pools) &&
		maps.Equal(b.subnets, s.Subnets) && reflect.DeepEqual(b.config, s.Config.Spec) &&
		reflect.DeepEqual(b.underlayLink, in.Links[in.Underlay]) && reflect.DeepEqual(b.loLink, in.Links["lo"])
}

// epSource is what one endpoint contributes.
type epSource struct {
	ep     *model.WorkloadEndpoint
	loser  bool
	routes []netip.Prefix
	id     uint32 // its cx_endpoints key when local
	idx    uint32 // its interface when programmed
}

type fipSource struct {
	f  *model.FloatingIP
	ep *model.WorkloadEndpoint // the endpoint it was computed from
	ip netip.Addr              // invalid when it claims nothing
}

type blockSource struct {
	b      *model.IPAMBlock
	routed netip.Prefix // invalid when not routed
	node   string
}

// NewCalculator returns a Calculator with nothing cached.
func NewCalculator() *Calculator {
	return &Calculator{policy: policy.NewCompiler(), slots: newCounterSlots()}
}

// reset forgets every source.
func (c *Calculator) reset(b *basis) {
	c.basis = b
	c.routes = newClaims[netip.Prefix, bpfmap.Route]()
	c.routes.set(source{rankBasis, ""}, b.routes)
	c.fipMap = newClaims[netip.Addr, bpfmap.FloatingIP]()
	c.eps, c.fips, c.blocks = map[string]*epSource{}, map[string]*fipSource{}, map[string]*blockSource{}
	c.links = map[string]host.Interface{}
	c.seen.eps, c.seen.fips, c.seen.blocks = map[string]*model.WorkloadEndpoint{}, map[string]*model.FloatingIP{}, map[string]*model.IPAMBlock{}
	c.sorted.dirty = true
	c.fipsOf, c.epsOfNode, c.epsOfIface = map[string]map[string]bool{}, map[string]map[string]bool{}, map[string]map[string]bool{}
	c.addrClaims, c.ifaceClaims, c.losers, c.conflicts = map[netip.Addr]int{}, map[string]int{}, map[string]bool{}, nil
	c.ifaces, c.attach = newClaims[uint32, bpfmap.Iface](), newClaims[uint32, Attachment]()
	c.endpoints = map[uint32]bpfmap.EndpointStatus{}
	c.kernel, c.pending, c.refused = map[string][]host.Route{}, map[string]bool{}, map[string]bool{}
	c.blocksOf = map[string]map[string]netip.Prefix{}
}

// generations numbers every Compute of every Calculator, so that a Delta's
// Prev names one Desired only.
var generations atomic.Uint64

// Compute derives the desired dataplane state for in.
func (c *Calculator) Compute(in Input) *Desired {
	prev := c.gen
	c.gen = generations.Add(1)
	if in.Snapshot == nil {
		c.basis = nil
		c.slots.finish(nil) // nothing is programmed: every slot goes
		return &Desired{
			Ifaces: map[uint32]bpfmap.Iface{}, Routes: map[netip.Prefix]bpfmap.Route{}, Attach: map[uint32]Attachment{},
			FloatingIPs: map[netip.Addr]bpfmap.FloatingIP{}, Endpoints: map[uint32]bpfmap.EndpointStatus{},
		}
	}
	s := in.Snapshot
	if !c.basis.same(in) {
		c.reset(newBasis(in))
		prev = 0 // everything may have changed
	}

	// What changed: resources, and interfaces local endpoints use.
	eps := map[string]bool{}
	edits, ok := s.EditsSince(c.last)
	ok = ok && prev != 0 // after a reset every resource is new
	c.last = s
	for _, name := range model.ChangedNames(c.seen.eps, s.Endpoints, model.KindWorkloadEndpoint, edits, ok) {
		eps[name] = true
	}
	fips := map[string]bool{}
	for _, name := range model.ChangedNames(c.seen.fips, s.FloatingIPs, model.KindFloatingIP, edits, ok) {
		fips[name] = true
	}
	for _, name := range model.ChangedNames(c.seen.blocks, s.Blocks, model.KindIPAMBlock, edits, ok) {
		c.updateBlock(s, name, eps)
	}
	for name, l := range in.Links {
		if old, ok := c.links[name]; !ok || !sameInterface(old, l) {
			c.links[name] = l
			for ep := range c.epsOfIface[name] {
				eps[ep] = true
			}
		}
	}
	for name := range c.links {
		if _, ok := in.Links[name]; !ok {
			delete(c.links, name)
			for ep := range c.epsOfIface[name] {
				eps[ep] = true
			}
		}
	}
	resolve := false
	for name := range eps {
		resolve = c.index(s, name) || resolve
	}
	if resolve {
		c.resolveConflicts(s, eps)
	}
	// By name: a new interface's counter slot is the same on every run.
	for _, name := range slices.Sorted(maps.Keys(eps)) {
		c.updateEndpoint(s, in, name)
		for f := range c.fipsOf[name] {
			fips[f] = true
		}
	}
	for name := range fips {
		c.updateFloatingIP(s, name)
	}
	c.policyChanged, c.ipcacheChanged = nil, nil
	d := c.desired(in)
	d.Delta = &Delta{Prev: prev, Gen: c.gen, Routes: c.routes.takeChanged(), FloatingIPs: c.fipMap.takeChanged(),
		IPCache: c.ipcacheChanged, Policy: c.policyChanged}
	return d
}

// sameInterface says whether a and b are the same interface, alike in all
// the calculation uses.
func sameInterface(a, b host.Interface) bool {
	return a.Name == b.Name && a.Ifindex == b.Ifindex && a.MAC == b.MAC && a.MTU == b.MTU && a.Kind == b.Kind &&
		a.Loopback == b.Loopback && slices.Equal(a.Addrs, b.Addrs)
}

// updateBlock recomputes block name's route, and marks the endpoints of
// its node inside it (before or after) for recomputing in eps.
func (c *Calculator) updateBlock(s *model.Snapshot, name string, eps map[string]bool) {
	src := source{rankBlock, name}
	if old := c.blocks[name]; old != nil {
		c.routes.drop(src)
		c.markInside(old.node, old.routed, eps)
		delete(c.blocks, name)
		if m := c.blocksOf[old.node]; m != nil {
			delete(m, name)
			if len(m) == 0 {
				delete(c.blocksOf, old.node)
			}
		}
	}
	blk := s.Blocks[name]
	if blk == nil {
		return
	}
	bs := &blockSource{b: blk, node: blk.Spec.Node}
	c.blocks[name] = bs
	if blk.Spec.Node == c.basis.node || !blk.Spec.CIDR.IsValid() {
		return
	}
	node, ok := s.Nodes[blk.Spec.Node]
	if !ok {
		return
	}
	p := blk.Spec.CIDR.Masked()
	nh := NextHop(c.basis.self, node.Spec, p.Addr())
	if !nh.IsValid() {
		return // nothing could reach it
	}
	bs.routed = p
	if c.blocksOf[bs.node] == nil {
		c.blocksOf[bs.node] = map[string]netip.Prefix{}
	}
	c.blocksOf[bs.node][name] = p
	c.routes.add(src, p, bpfmap.Route{Type: bpfmap.RouteRemoteWorkload,
		Encap: EncapFor(s, c.basis.self, node.Spec, p.Addr()), NextHop: nh})
	c.markInside(bs.node, p, eps)
}

func (c *Calculator) markInside(node string, p netip.Prefix, eps map[string]bool) {
	if !p.IsValid() {
		return
	}
	for name := range c.epsOfNode[node] {
		if slices.ContainsFunc(c.eps[name].ep.Spec.IPNetworks, func(ipn netip.Prefix) bool { return p.Contains(ipn.Addr()) }) {
			eps[name] = true
		}
	}
}

// routedBlocks are the blocks of node that have a route.
func (c *Calculator) routedBlocks(node string) []netip.Prefix {
	return slices.Collect(maps.Values(c.blocksOf[node]))
}

// claimKeys are the addresses and the interface an endpoint claims.
func (c *Calculator) claimKeys(ep *model.WorkloadEndpoint) ([]netip.Addr, string) {
	var addrs []netip.Addr
	for _, ipn := range ep.Spec.IPNetworks {
		if ipn.IsValid() {
			addrs = append(addrs, ipn.Addr())
		}
	}
	iface := ""
	if ep.Spec.Node == c.basis.node {
		iface = ep.Spec.Interface
	}
	return addrs, iface
}

// index moves endpoint name's claims and index entries from the resource
// its source was computed from to s's. It says whether a conflict may have
// moved: an address or interface it claims, before or after, is claimed
// by another endpoint or is a node's.
func (c *Calculator) index(s *model.Snapshot, name string) bool {
	moved := false
	claim := func(ep *model.WorkloadEndpoint, n int) {
		addrs, iface := c.claimKeys(ep)
		for _, a := range addrs {
			if n < 0 && c.addrClaims[a] > 1 || c.basis.nodeAddrs[a] {
				moved = true
			}
			if c.addrClaims[a] += n; c.addrClaims[a] <= 0 {
				delete(c.addrClaims, a)
			}
			if n > 0 && c.addrClaims[a] > 1 {
				moved = true
			}
		}
		if iface != "" {
			if n < 0 && c.ifaceClaims[iface] > 1 {
				moved = true
			}
			if c.ifaceClaims[iface] += n; c.ifaceClaims[iface] <= 0 {
				delete(c.ifaceClaims, iface)
			}
			if n > 0 && c.ifaceClaims[iface] > 1 {
				moved = true
			}
		}
	}
	if old := c.eps[name]; old != nil && old.ep != nil {
		claim(old.ep, -1)
		removeFrom(c.epsOfNode, old.ep.Spec.Node, name)
		if old.ep.Spec.Node == c.basis.node {
			removeFrom(c.epsOfIface, old.ep.Spec.Interface, name)
		}
		if c.losers[name] {
			moved = true
		}
	}
	ep := s.Endpoints[name]
	if ep == nil {
		return moved
	}
	claim(ep, 1)
	addTo(c.epsOfNode, ep.Spec.Node, name)
	if ep.Spec.Node == c.basis.node {
		addTo(c.epsOfIface, ep.Spec.Interface, name)
	}
	return moved
}

// resolveConflicts decides every conflict again (see conflicts) and marks
// the endpoints whose win or loss changed in eps.
func (c *Calculator) resolveConflicts(s *model.Snapshot, eps map[string]bool) {
	var losers map[string]bool
	c.conflicts, losers = conflicts(s, c.basis.node)
	for name := range losers {
		if !c.losers[name] {
			eps[name] = true
		}
	}
	for name := range c.losers {
		if !losers[name] {
			eps[name] = true
		}
	}
	c.losers = losers
}

// conflicts finds the endpoints that lose what they claim to another: an
// address an endpoint whose name sorts first has (or a node's address), or,
// on this node, an interface. calyxctl refuses such models; one written
// behind its back still gives the same dataplane on every reconcile and
// every node. It returns what each loser lost (sorted) and the losers.
func conflicts(s *model.Snapshot, self string) ([]string, map[string]bool) {
	owner := map[netip.Addr]string{}
	for _, name := range slices.Sorted(maps.Keys(s.Nodes)) {
		for _, p := range []netip.Prefix{s.Nodes[name].Spec.IPv4Address, s.Nodes[name].Spec.IPv6Address} {
			if p.IsValid() {
				owner[p.Addr()] = "Node/" + name
			}
		}
	}
	ifaces := map[string]string{}
	losers := map[string]bool{}
	var lost []string
	for _, name := range slices.Sorted(maps.Keys(s.Endpoints)) {
		ep := s.Endpoints[name]
		var why []string
		for _, ipn := range ep.Spec.IPNetworks {
			if !ipn.IsValid() {
				continue
			}
			if o, ok := owner[ipn.Addr()]; ok {
				why = append(why, fmt.Sprintf("%s is %s's", ipn.Addr(), o))
			}
		}
		if ep.Spec.Node == self && ep.Spec.Interface != "" {
			if o, ok := ifaces[ep.Spec.Interface]; ok {
				why = append(why, fmt.Sprintf("interface %s is WorkloadEndpoint/%s's", ep.Spec.Interface, o))
			}
		}
		if len(why) > 0 {
			losers[name] = true
			lost = append(lost, fmt.Sprintf("WorkloadEndpoint/%s: %s", name, strings.Join(why, ", ")))
			continue
		}
		for _, ipn := range ep.Spec.IPNetworks {
			if ipn.IsValid() {
				owner[ipn.Addr()] = "WorkloadEndpoint/" + name
			}
		}
		if ep.Spec.Node == self && ep.Spec.Interface != "" {
			ifaces[ep.Spec.Interface] = name
		}
	}
	return lost, losers
}

// updateEndpoint recomputes what endpoint name contributes.
func (c *Calculator) updateEndpoint(s *model.Snapshot, in Input, name string) {
	src := source{rankEndpoint, name}
	c.sorted.dirty = true
	if old := c.eps[name]; old != nil {
		c.routes.drop(src)
		if old.id != 0 {
			delete(c.endpoints, old.id)
		}
		c.ifaces.drop(src)
		c.attach.drop(src)
		delete(c.kernel, name)
		delete(c.pending, name)
		delete(c.refused, name)
		delete(c.eps, name)
	}
	ep := s.Endpoints[name]
	if ep == nil {
		return
	}
	es := &epSource{ep: ep, loser: c.losers[name]}
	c.eps[name] = es
	local := ep.Spec.Node == c.basis.node
	if local {
		es.id = model.EndpointID(name)
	}
	if es.loser {
		if local {
			c.endpoints[es.id] = bpfmap.EndpointStatus{State: bpfmap.EndpointConflict, Ifname: ep.Spec.Interface}
		}
		return
	}
	routes := map[netip.Prefix]bpfmap.Route{}
	if !local {
		node, ok := s.Nodes[ep.Spec.Node]
		if !ok {
			return
		}
		blocks := c.routedBlocks(ep.Spec.Node)
		for _, ipn := range ep.Spec.IPNetworks {
			if inBlock(blocks, ipn.Addr()) {
				continue // its node's block route covers it
			}
			nh := NextHop(c.basis.self, node.Spec, ipn.Addr())
			if !nh.IsValid() {
				continue // no underlay address to reach it by
			}
			routes[ipn.Masked()] = bpfmap.Route{Type: bpfmap.RouteRemoteWorkload,
				Encap: EncapFor(s, c.basis.self, node.Spec, ipn.Addr()), NextHop: nh}
		}
		c.setRoutes(es, src, routes)
		return
	}
	link, ok := in.Links[ep.Spec.Interface]
	if !ok || link.Ifindex <= 0 {
		c.pending[name] = true
		c.endpoints[es.id] = bpfmap.EndpointStatus{State: bpfmap.EndpointPending, Ifname: ep.Spec.Interface}
		return
	}
	idx := uint32(link.Ifindex)
	if st := Untouchable(link, in.Underlay); st != 0 {
		c.refused[name] = true
		c.endpoints[es.id] = bpfmap.EndpointStatus{State: st, Ifindex: idx, Ifname: link.Name}
		return
	}
	es.idx = idx
	c.endpoints[es.id] = bpfmap.EndpointStatus{State: bpfmap.EndpointReady, Ifindex: idx, Ifname: link.Name}
	mac := bpfmap.MACFrom(ep.Spec.MAC)
	slot := c.slots.slot(idx)
	c.ifaces.add(src, idx, bpfmap.Iface{
		Workload:    true,
		CheckMAC:    !mac.IsZero(),
		EndpointID:  es.id,
		MAC:         mac,
		HostMAC:     link.MAC,
		Kind:        link.Kind,
		CounterSlot: slot,
	})
	c.attach.add(src, idx, Attachment{Ifname: link.Name, Ifindex: link.Ifindex, Endpoint: name})
	var kernel []host.Route
	for _, ipn := range ep.Spec.IPNetworks {
		p := ipn.Masked()
		routes[p] = bpfmap.Route{Type: bpfmap.RouteLocalWorkload, Ifindex: idx, MAC: mac, HostMAC: link.MAC,
			NATOutgoing: natOutgoing(s, ipn.Addr()), Peer: link.Kind.Peer(), CounterSlot: slot}
		kernel = append(kernel, host.Route{Dst: p, Ifindex: link.Ifindex})
	}
	c.kernel[name] = kernel
	c.setRoutes(es, src, routes)
}

func (c *Calculator) setRoutes(es *epSource, src source, routes map[netip.Prefix]bpfmap.Route) {
	c.routes.set(src, routes)
	es.routes = slices.Collect(maps.Keys(routes))
}

// updateFloatingIP recomputes floating IP name's cx_fips entry and route.
// One whose endpoint or node is unknown (being created or removed) claims
// nothing: nothing can be translated for it yet.
func (c *Calculator) updateFloatingIP(s *model.Snapshot, name string) {
	src := source{rankFloatingIP, name}
	if old := c.fips[name]; old != nil {
		c.routes.drop(src)
		c.fipMap.drop(src)
		removeFrom(c.fipsOf, old.f.Spec.Endpoint, name)
		delete(c.fips, name)
	}
	f := s.FloatingIPs[name]
	if f == nil {
		return
	}
	fs := &fipSource{f: f}
	c.fips[name] = fs
	addTo(c.fipsOf, f.Spec.Endpoint, name)
	fixed, ok := s.FixedIP(f)
	if !ok {
		return
	}
	ep, ok := s.Endpoints[f.Spec.Endpoint]
	if !ok {
		return
	}
	fs.ep = ep
	n, ok := s.Nodes[ep.Spec.Node]
	if !ok || !n.Spec.IPv4Address.IsValid() {
		return
	}
	owner := n.Spec.IPv4Address.Addr()
	fs.ip = f.Spec.IP
	c.fipMap.add(src, f.Spec.IP, bpfmap.FloatingIP{Fixed: fixed, Node: owner,
		EndpointID: model.EndpointID(ep.Metadata.Name), Local: ep.Spec.Node == c.basis.node})
	c.routes.add(src, netip.PrefixFrom(f.Spec.IP, 32), bpfmap.Route{Type: bpfmap.RouteFloatingIP, NextHop: owner})
}

// desired assembles the Desired of the current sources.
func (c *Calculator) desired(in Input) *Desired {
	s, b := in.Snapshot, c.basis
	d := &Desired{
		Ifaces:      c.ifaces.out,
		Routes:      c.routes.out,
		Attach:      c.attach.out,
		FloatingIPs: c.fipMap.out,
		Endpoints:   maps.Clone(c.endpoints),
		Conflicts:   slices.Clone(c.conflicts),
	}
	var self model.NodeSpec
	if b.hasSelf {
		self = b.self
	}
	d.Config = nodeConfig(in, s, self)
	underlay := map[uint32]Attachment{}
	if d.Config.Address.IsValid() {
		// The underlay carries tunnels and the host's own traffic to
		// remote workloads only once the node has an address.
		if ul, ok := in.Links[in.Underlay]; ok && ul.Ifindex > 0 {
			underlay[uint32(ul.Ifindex)] = Attachment{Ifname: ul.Name, Ifindex: ul.Ifindex, Underlay: true}
		}
	}
	c.attach.set(source{rankBasis, ""}, underlay)
	if c.sorted.dirty {
		c.sorted.kernel = nil
		for _, rs := range c.kernel {
			c.sorted.kernel = append(c.sorted.kernel, rs...)
		}
		keys := make(map[netip.Prefix]string, len(c.sorted.kernel))
		for _, r := range c.sorted.kernel {
			keys[r.Dst] = r.Dst.String()
		}
		sort.Slice(c.sorted.kernel, func(i, j int) bool { return keys[c.sorted.kernel[i].Dst] < keys[c.sorted.kernel[j].Dst] })
		c.sorted.pending = slices.Sorted(maps.Keys(c.pending))
		c.sorted.refused = slices.Sorted(maps.Keys(c.refused))
		c.sorted.dirty = false
	}
	d.KernelRoutes = slices.Clone(c.sorted.kernel)
	d.Pending, d.Refused = slices.Clone(c.sorted.pending), slices.Clone(c.sorted.refused)
	d.MetadataUpstream = metadataUpstream(s)
	d.LocalRoutes = localRoutes(d, in)
	d.WorkloadMTU = WorkloadMTU(int(d.Config.UnderlayMTU), s, in.Node)
	if d.Config.Address.IsValid() && d.WorkloadMTU > 0 {
		d.Config.WorkloadMTU = uint32(d.WorkloadMTU)
	}
	c.compilePolicy(d, in, self)
	d.FreshCounterSlots = c.slots.finish(d.Ifaces)
	return d
}

func addTo[K comparable](m map[K]map[string]bool, k K, name string) {
	if m[k] == nil {
		m[k] = map[string]bool{}
	}
	m[k][name] = true
}

func removeFrom[K comparable](m map[K]map[string]bool, k K, name string) {
	delete(m[k], name)
	if len(m[k]) == 0 {
		delete(m, k)
	}
}

// source is what claims map entries: a kind (its rank) and a name.
type source struct {
	rank int
	name string
}

func (a source) less(b source) bool { return a.rank < b.rank || a.rank == b.rank && a.name < b.name }

// claims merges the entries sources claim: for each key, the claim of the
// greatest source wins. Most keys have one claim, so claims are kept in a
// short list per key, not a map.
type claims[K, V comparable] struct {
	by   map[K][]claim[V]
	keys map[source][]K
	out  map[K]V
	// changed are the keys whose out entry changed (or went) since
	// takeChanged last ran.
	changed map[K]struct{}
}

type claim[V any] struct {
	src source
	v   V
}

func newClaims[K, V comparable]() *claims[K, V] {
	return &claims[K, V]{by: map[K][]claim[V]{}, keys: map[source][]K{}, out: map[K]V{}, changed: map[K]struct{}{}}
}

// takeChanged returns the keys changed since the last call.
func (c *claims[K, V]) takeChanged() map[K]struct{} {
	ch := c.changed
	c.changed = map[K]struct{}{}
	return ch
}

// set replaces src's claims with entries.
func (c *claims[K, V]) set(src source, entries map[K]V) {
	c.drop(src)
	for k, v := range entries {
		c.add(src, k, v)
	}
}

// add adds src's claim of v for k; src must not claim k already.
func (c *claims[K, V]) add(src source, k K, v V) {
	c.by[k] = append(c.by[k], claim[V]{src, v})
	c.keys[src] = append(c.keys[src], k)
	c.merge(k)
}

// drop removes src's claims.
func (c *claims[K, V]) drop(src source) {
	for _, k := range c.keys[src] {
		l := slices.DeleteFunc(c.by[k], func(cl claim[V]) bool { return cl.src == src })
		if len(l) == 0 {
			delete(c.by, k)
		} else {
			c.by[k] = l
		}
		c.merge(k)
	}
	delete(c.keys, src)
}

func (c *claims[K, V]) merge(k K) {
	old, had := c.out[k]
	l := c.by[k]
	if len(l) == 0 {
		if had {
			delete(c.out, k)
			c.changed[k] = struct{}{}
		}
		return
	}
	best := 0
	for i := 1; i < len(l); i++ {
		if l[best].src.less(l[i].src) {
			best = i
		}
	}
	if v := l[best].v; !had || v != old {
		c.out[k] = v
		c.changed[k] = struct{}{}
	}
}
