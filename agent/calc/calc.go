// Package calc turns a model snapshot into the full desired content of every
// calyx map. It is a pure function: no syscalls, no clock, no globals, so
// start-up, resync and each change go through the same tested code.
package calc

import (
	"net/netip"
	"slices"
	"sort"

	"github.com/calyxnet/calyx/agent/host"
	"github.com/calyxnet/calyx/bpfmap"
	"github.com/calyxnet/calyx/model"
	"github.com/calyxnet/calyx/policy"
)

// Input is everything Compute needs.
type Input struct {
	Snapshot *model.Snapshot
	Node     string                    // this agent's node name
	Underlay string                    // the underlay interface's name
	Links    map[string]host.Interface // the host's interfaces by name
	// HostAddrs are this host's own addresses (beyond its Node's):
	// workloads' traffic to them is governed by endpointToHostAction.
	HostAddrs []netip.Addr
	// PrefilterXDP says the underlay runs the XDP prefilter, so its TC
	// program need not check the deny list again.
	PrefilterXDP bool
}

// Attachment is an interface that must carry calyx programs: a local
// endpoint's interface, or the underlay.
type Attachment struct {
	Ifname   string
	Ifindex  int
	Endpoint string // empty for the underlay
	Underlay bool
}

// BGPRouteMetric is the metric of the routes the agent installs for what
// BGP learned from the fabric (a default, the external networks).
const BGPRouteMetric = 1024

// PoolRoutes returns the pool routes for the IPv4 pools in uncovered (the
// ones no kernel route covers), via host.UnderlayGateway on the underlay. None
// until the underlay carries calyx's programs.
func PoolRoutes(d *Desired, uncovered []netip.Prefix) []host.Route {
	ul := int(d.Config.UnderlayIfindex)
	if ul <= 0 || !d.Config.Address.IsValid() {
		return nil
	}
	if _, ok := d.Attach[uint32(ul)]; !ok {
		return nil
	}
	var out []host.Route
	for _, p := range uncovered {
		if p.Addr().Is4() {
			out = append(out, host.Route{Dst: p.Masked(), Ifindex: ul, Gateway: host.UnderlayGateway})
		}
	}
	return out
}

// WorkloadPools lists the enabled, non-external pools: the ones the host's
// own stack must be able to reach.
func WorkloadPools(s *model.Snapshot) []netip.Prefix {
	var out []netip.Prefix
	if s == nil {
		return out
	}
	for _, p := range s.Pools {
		if !p.Spec.Disabled && !p.Spec.External {
			out = append(out, p.Spec.CIDR.Masked())
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}

// Desired is the full content the dataplane should have.
type Desired struct {
	Ifaces       map[uint32]bpfmap.Iface
	Routes       map[netip.Prefix]bpfmap.Route
	Attach       map[uint32]Attachment // by ifindex
	KernelRoutes []host.Route          // sorted by Dst
	// LocalRoutes are the addresses the host answers to without holding
	// them: every Subnet's gatewayIP (on lo), and fe80::1 and (with a
	// metadata service) V6Metadata on every workload interface. Sorted.
	LocalRoutes []host.LocalRoute
	// MetadataUpstream is Config.metadataAddress, either family: where the
	// agent's proxy on [V6Metadata]:80 forwards instances' requests (and,
	// when IPv4, Config.Metadata too, the DNAT target of
	// 169.254.169.254:80). Zero: no metadata service.
	MetadataUpstream netip.AddrPort
	// Config is cx_config: the node's underlay settings. Zero (no
	// Address) until this node has an underlay address in the model.
	Config bpfmap.NodeConfig
	// FloatingIPs is cx_fips: every floating IP of the model whose
	// instance is known, the same on every node.
	FloatingIPs map[netip.Addr]bpfmap.FloatingIP
	// WorkloadMTU is the MTU workloads must use so that their packets fit
	// the underlay in every encapsulation in use.
	WorkloadMTU int
	// Pending lists local endpoints whose interface does not exist yet;
	// they are programmed as soon as it appears.
	Pending []string
	// Refused lists local endpoints whose interface the agent may not
	// touch (the underlay, a loopback, one holding a host address); nothing
	// of theirs is written or attached. Sorted.
	Refused []string
	// Conflicts says, for each endpoint that lost a conflict in a model
	// written behind calyxctl's back (two endpoints with one address, or
	// one interface on this node; an endpoint with a node's address), what
	// it lost and to whom. The first endpoint by name wins, so every
	// reconcile and every node decides alike; the loser is not
	// programmed (a local one is EndpointConflict). Sorted.
	Conflicts []string
	// Endpoints is cx_endpoints: the state of every local endpoint, by
	// endpoint id.
	Endpoints map[uint32]bpfmap.EndpointStatus
	// IPCache, Policy and Rules are the compiled network policy
	// (package policy); PolicyErr is set, and they are empty, when it could
	// not be compiled: the agent then changes nothing.
	IPCache   map[netip.Prefix]bpfmap.IPCacheEntry
	Policy    map[bpfmap.PolicyKey]bpfmap.PolicyVerdict
	Rules     map[uint32]policy.RuleInfo
	PolicyErr error
	// Prefilter is cx_prefilter: Config.prefilterDeny.
	Prefilter bpfmap.Prefilter
	// FreshCounterSlots are the counter slots handed to interfaces in
	// this Compute (Iface.CounterSlot): another interface may have counted
	// into them, so they are zeroed before the interfaces are written.
	FreshCounterSlots []uint16
	// Delta, when not nil, names what may differ from an earlier Desired:
	// a syncer whose maps hold exactly that one need look at no other
	// entries of the tables it covers.
	Delta *Delta
}

// Delta is what changed in the large tables between two Computes of one
// Calculator: every key of Routes, FloatingIPs, IPCache and Policy whose entry in the
// Desired numbered Gen differs from (or is absent in) the one numbered
// Prev. Prev 0 names no Desired: compare everything.
type Delta struct {
	Prev, Gen   uint64
	Routes      map[netip.Prefix]struct{}
	FloatingIPs map[netip.Addr]struct{}
	// IPCache and Policy are nil when the policy compiler cannot say.
	IPCache map[netip.Prefix]struct{}
	Policy  map[bpfmap.PolicyKey]struct{}
}

// Untouchable says why an interface may never carry a workload, whatever
// an endpoint says: the underlay (the host's own network), a loopback, or
// one that holds a host address (the host's, not a workload's). Attaching
// workload programs there, or setting a workload's sysctls, would cut the
// host off. 0: it may.
func Untouchable(link host.Interface, underlay string) bpfmap.EndpointState {
	switch {
	case link.Name == underlay:
		return bpfmap.EndpointRefusedUnderlay
	case link.Loopback || link.Name == "lo":
		return bpfmap.EndpointRefusedLoopback
	case len(link.Addrs) > 0:
		return bpfmap.EndpointRefusedHostAddr
	}
	return 0
}

// V6Gateway is every workload's IPv6 gateway: answered in BPF (neighbour
// solicitations), by the host (a local route on each workload interface)
// and the source of router advertisements and DHCPv6 replies.
var V6Gateway = netip.MustParseAddr("fe80::1")

// V6Metadata is the metadata service's IPv6 address, as OpenStack serves it
// (169.254.169.254 written in the link-local prefix): the host answers to
// it on each workload interface (a local route), where the agent's metadata
// proxy listens on port 80. A link-local address says nothing of who is
// asking, so the proxy vouches for the instance by the interface a request
// came in on.
var V6Metadata = netip.MustParseAddr("fe80::a9fe:a9fe")

// localRoutes lists what the host answers to without holding it: each
// Subnet's gatewayIP, which stands for the local host on every host (an
// instance pings its gateway, renews its lease with it), and fe80::1 and,
// when there is a metadata service, V6Metadata on each workload interface.
func localRoutes(d *Desired, in Input) []host.LocalRoute {
	var out []host.LocalRoute
	if lo, ok := in.Links["lo"]; ok && lo.Ifindex > 0 {
		for _, gw := range subnetGateways(in.Snapshot) {
			out = append(out, host.LocalRoute{Addr: gw, Ifindex: lo.Ifindex})
		}
	}
	for idx := range d.Ifaces {
		out = append(out, host.LocalRoute{Addr: V6Gateway, Ifindex: int(idx)})
		if d.MetadataUpstream.IsValid() {
			out = append(out, host.LocalRoute{Addr: V6Metadata, Ifindex: int(idx)})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if c := out[i].Addr.Compare(out[j].Addr); c != 0 {
			return c < 0
		}
		return out[i].Ifindex < out[j].Ifindex
	})
	return out
}

// subnetGateways are the gatewayIPs of every Subnet (sorted, once each).
func subnetGateways(s *model.Snapshot) []netip.Addr {
	var out []netip.Addr
	for _, sn := range s.Subnets {
		if gw := sn.Spec.GatewayIP; gw.IsValid() && !slices.Contains(out, gw) {
			out = append(out, gw)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// inBlock says whether one of blocks holds a.
func inBlock(blocks []netip.Prefix, a netip.Addr) bool {
	for _, b := range blocks {
		if b.Contains(a) {
			return true
		}
	}
	return false
}

// compilePolicy fills the policy maps and each local endpoint's tables,
// and the prefilter.
func (c *Calculator) compilePolicy(d *Desired, in Input, self model.NodeSpec) {
	s := in.Snapshot
	d.Prefilter = make(bpfmap.Prefilter, len(s.Config.Spec.PrefilterDeny))
	for _, p := range s.Config.Spec.PrefilterDeny {
		d.Prefilter[p.Masked()] = struct{}{}
	}
	d.Config.PrefilterTC = len(d.Prefilter) > 0 && !in.PrefilterXDP
	d.Config.FragOrphanPass = s.Config.Spec.OrphanFragments == model.ActionPass
	switch s.Config.Spec.EndpointToHostAction {
	case model.ActionDrop:
		d.Config.EndpointToHost = bpfmap.EndpointToHostDrop
	case model.ActionReturn:
		d.Config.EndpointToHost = bpfmap.EndpointToHostReturn
	default:
		d.Config.EndpointToHost = bpfmap.EndpointToHostAccept
	}
	hosts := append([]netip.Addr(nil), in.HostAddrs...)
	for _, p := range []netip.Prefix{self.IPv4Address, self.IPv6Address} {
		if p.IsValid() && !slices.Contains(hosts, p.Addr()) {
			hosts = append(hosts, p.Addr())
		}
	}
	// A subnet's gateway IP is the local host: its DHCP replies reach
	// workloads under ingress policy, as the host's own packets do.
	for _, gw := range subnetGateways(s) {
		if !slices.Contains(hosts, gw) {
			hosts = append(hosts, gw)
		}
	}
	out, err := c.policy.Compile(policy.Input{Snapshot: s, Node: in.Node, HostAddrs: hosts})
	if err != nil {
		d.PolicyErr = err
		return
	}
	d.IPCache, d.Policy, d.Rules = out.IPCache, out.Policy, out.Rules
	c.policyChanged, c.ipcacheChanged = out.PolicyChanged, out.IPCacheChanged
	for idx, v := range d.Ifaces {
		a := d.Attach[idx]
		t := out.Endpoints[a.Endpoint]
		v.IngressTable, v.EgressTable = t.Ingress, t.Egress
		d.Ifaces[idx] = v
	}
}

// nodeConfig is cx_config for this node.
func nodeConfig(in Input, s *model.Snapshot, self model.NodeSpec) bpfmap.NodeConfig {
	if !self.IPv4Address.IsValid() {
		return bpfmap.NodeConfig{}
	}
	c := bpfmap.NodeConfig{
		Address:   self.IPv4Address.Addr(),
		VXLANVNI:  s.Config.Spec.VXLANVNI,
		VXLANPort: s.Config.Spec.VXLANPort,
	}
	if self.IPv6Address.IsValid() {
		// The IPv6 underlay's outer source and decap destination.
		c.Address6 = self.IPv6Address.Addr()
	}
	if c.VXLANVNI == 0 {
		c.VXLANVNI = model.DefaultVXLANVNI
	}
	if c.VXLANPort == 0 {
		c.VXLANPort = model.DefaultVXLANPort
	}
	if ul, ok := in.Links[in.Underlay]; ok {
		c.UnderlayIfindex = uint32(ul.Ifindex)
		c.UnderlayMTU = uint32(ul.MTU)
	}
	lo, hi := s.Config.Spec.NATPorts()
	c.NATPorts = [2]uint16{lo, hi}
	// Validated by the model. IPv4 instances reach the metadata service
	// by DNAT, which only an IPv4 address can be the target of; an IPv6
	// one is served by the agent's proxy only (MetadataUpstream).
	if ap := metadataUpstream(s); ap.Addr().Is4() {
		c.Metadata = ap
	}
	return c
}

// metadataUpstream is Config.metadataAddress, zero when unset (or, against
// the model's validation, not an address and port).
func metadataUpstream(s *model.Snapshot) netip.AddrPort {
	ap, err := netip.ParseAddrPort(s.Config.Spec.MetadataAddress)
	if err != nil {
		return netip.AddrPort{}
	}
	return ap
}

// poolOf returns the longest pool that holds addr (by name on a tie).
func poolOf(s *model.Snapshot, addr netip.Addr) *model.IPPool {
	var pool *model.IPPool
	for _, p := range s.Pools {
		if p.Spec.CIDR.Contains(addr) && (pool == nil || p.Spec.CIDR.Bits() > pool.Spec.CIDR.Bits() ||
			p.Spec.CIDR.Bits() == pool.Spec.CIDR.Bits() && p.Metadata.Name < pool.Metadata.Name) {
			pool = p
		}
	}
	return pool
}

// natOutgoing says whether traffic from addr to outside every pool leaves
// as the node (its pool's natOutgoing): as the node's IPv4 address, or for
// an IPv6 pool as its ipv6Address (NAT66; without one it leaves untranslated).
func natOutgoing(s *model.Snapshot, addr netip.Addr) bool {
	p := poolOf(s, addr)
	return p != nil && p.Spec.NATOutgoing && !p.Spec.Disabled
}

// NextHop is the underlay address of node remote that traffic from node
// self to addr (one of remote's workloads) is sent to. The underlay is
// chosen per peer: an IPv4 workload is reached over the IPv4 underlay; an
// IPv6 one over the IPv6 underlay when both nodes have an ipv6Address,
// over the IPv4 underlay otherwise. Invalid when remote has no address on
// that underlay: it cannot be reached.
func NextHop(self, remote model.NodeSpec, addr netip.Addr) netip.Addr {
	if addr.Is6() && !addr.Is4In6() && self.IPv6Address.IsValid() && remote.IPv6Address.IsValid() {
		return remote.IPv6Address.Addr()
	}
	if remote.IPv4Address.IsValid() {
		return remote.IPv4Address.Addr()
	}
	return netip.Addr{}
}

// EncapFor decides how traffic from node self to addr, hosted by node
// remote, leaves: by the mode of the pool that holds addr (the longest
// one). CrossSubnet encapsulates only when remote's address on the chosen
// underlay (NextHop) is outside self's subnet of that family
// (Node.spec.ipv4Address's or ipv6Address's prefix). For an IPv6 pool
// ipipMode is 6in4 on an IPv4 underlay and IPv6-in-IPv6 on an IPv6 one
// (bpfmap.EncapIPIP either way: the outer family is the next hop's).
func EncapFor(s *model.Snapshot, self, remote model.NodeSpec, addr netip.Addr) bpfmap.Encap {
	pool := poolOf(s, addr)
	if pool == nil {
		return bpfmap.EncapNone
	}
	nh := NextHop(self, remote, addr)
	own := self.IPv4Address
	if bpfmap.UnderlayOf(nh) == "ipv6" {
		own = self.IPv6Address
	}
	crossSubnet := !own.IsValid() || !nh.IsValid() || !own.Masked().Contains(nh)
	applies := func(m model.EncapMode) bool {
		return m == model.EncapAlways || m == model.EncapCrossSubnet && crossSubnet
	}
	switch {
	case applies(pool.Spec.IPIPMode):
		return bpfmap.EncapIPIP
	case applies(pool.Spec.VXLANMode):
		return bpfmap.EncapVXLAN
	}
	return bpfmap.EncapNone
}

// IPv6UnderlayInUse says whether node self sends over the IPv6 underlay:
// it has an ipv6Address and so does another node.
func IPv6UnderlayInUse(s *model.Snapshot, self string) bool {
	n, ok := s.Nodes[self]
	if !ok || !n.Spec.IPv6Address.IsValid() {
		return false
	}
	for name, o := range s.Nodes {
		if name != self && o.Spec.IPv6Address.IsValid() {
			return true
		}
	}
	return false
}

// WorkloadMTU is the MTU a workload of node self must use for its packets
// to fit an underlay of underlayMTU in every encapsulation the enabled
// pools may use (a CrossSubnet pool may encapsulate): IPv4 pools' on the
// IPv4 underlay, IPv6 pools' on the IPv6 underlay when it is in use
// (IPv6UnderlayInUse; 20 bytes more), else on the IPv4 one. 0 when the
// underlay MTU is unknown.
func WorkloadMTU(underlayMTU int, s *model.Snapshot, self string) int {
	if underlayMTU <= 0 {
		return 0
	}
	v6Underlay := IPv6UnderlayInUse(s, self)
	overhead := 0
	for _, p := range s.Pools {
		if p.Spec.Disabled || p.Spec.External {
			continue
		}
		outer6 := v6Underlay && p.Spec.CIDR.Addr().Is6()
		if p.Spec.IPIPMode.Enabled() {
			overhead = max(overhead, bpfmap.EncapIPIP.OverheadOn(outer6))
		}
		if p.Spec.VXLANMode.Enabled() {
			overhead = max(overhead, bpfmap.EncapVXLAN.OverheadOn(outer6))
		}
	}
	return underlayMTU - overhead
}
