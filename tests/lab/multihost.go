package lab

import (
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// EncapMode names how the multi-host topology's pool encapsulates traffic
// between hosts: one value per ipipMode/vxlanMode pair the tests exercise.
type EncapMode string

// The encapsulation modes of the multi-host topology.
const (
	// ModeIPIP is ipipMode Always, vxlanMode Never.
	ModeIPIP EncapMode = "ipip"
	// ModeVXLAN is ipipMode Never, vxlanMode Always.
	ModeVXLAN EncapMode = "vxlan"
	// ModeIPIPCrossSubnet is ipipMode CrossSubnet, vxlanMode Never.
	ModeIPIPCrossSubnet EncapMode = "ipip-crosssubnet"
	// ModeVXLANCrossSubnet is ipipMode Never, vxlanMode CrossSubnet.
	ModeVXLANCrossSubnet EncapMode = "vxlan-crosssubnet"
	// ModeNever is both Never: direct routing, which works only between
	// hosts on one segment because the router knows no workload routes.
	ModeNever EncapMode = "never"
)

// Pool encapsulation mode values (IPPool spec.ipipMode / spec.vxlanMode).
const (
	PoolNever       = "Never"
	PoolAlways      = "Always"
	PoolCrossSubnet = "CrossSubnet"
)

// Encapsulation names as "calyxctl routes dump" reports them (Route.Encap).
const (
	EncapNone  = "none"
	EncapIPIP  = "ipip"
	EncapVXLAN = "vxlan"
)

// MTU arithmetic of the lab's underlay: every underlay veth keeps the
// default MTU, and encapsulation adds an outer IPv4 header (IP-in-IP) or
// outer IPv4 + UDP + VXLAN + inner Ethernet headers (VXLAN).
const (
	UnderlayMTU   = 1500
	IPIPOverhead  = 20
	VXLANOverhead = 50
)

// EncapModes returns every mode, in a stable order (for help texts and
// table-driven tests).
func EncapModes() []EncapMode {
	return []EncapMode{ModeIPIP, ModeVXLAN, ModeIPIPCrossSubnet, ModeVXLANCrossSubnet, ModeNever}
}

// ParseEncapMode accepts a mode name as printed by EncapModes.
func ParseEncapMode(s string) (EncapMode, error) {
	for _, m := range EncapModes() {
		if string(m) == s {
			return m, nil
		}
	}
	names := make([]string, 0, 5)
	for _, m := range EncapModes() {
		names = append(names, string(m))
	}
	return "", fmt.Errorf("unknown encapsulation mode %q: want one of %s", s, strings.Join(names, ", "))
}

// PoolModes returns the pool's spec.ipipMode and spec.vxlanMode for m.
func (m EncapMode) PoolModes() (ipipMode, vxlanMode string) {
	switch m {
	case ModeIPIP:
		return PoolAlways, PoolNever
	case ModeVXLAN:
		return PoolNever, PoolAlways
	case ModeIPIPCrossSubnet:
		return PoolCrossSubnet, PoolNever
	case ModeVXLANCrossSubnet:
		return PoolNever, PoolCrossSubnet
	}
	return PoolNever, PoolNever
}

// Encap returns the encapsulation m uses when it encapsulates: EncapIPIP,
// EncapVXLAN or EncapNone.
func (m EncapMode) Encap() string {
	switch m {
	case ModeIPIP, ModeIPIPCrossSubnet:
		return EncapIPIP
	case ModeVXLAN, ModeVXLANCrossSubnet:
		return EncapVXLAN
	}
	return EncapNone
}

// CrossSubnet reports whether m encapsulates only between subnets.
func (m EncapMode) CrossSubnet() bool {
	return m == ModeIPIPCrossSubnet || m == ModeVXLANCrossSubnet
}

// WorkloadMTU is the largest workload MTU whose packets still fit the
// underlay once encapsulated: 1480 for IP-in-IP, 1450 for VXLAN, 1500
// without encapsulation. CrossSubnet modes need the smaller value too,
// because a workload's MTU cannot depend on the destination.
func (m EncapMode) WorkloadMTU() int {
	switch m.Encap() {
	case EncapIPIP:
		return UnderlayMTU - IPIPOverhead
	case EncapVXLAN:
		return UnderlayMTU - VXLANOverhead
	}
	return UnderlayMTU
}

// Expect returns the encapsulation m should use on the underlay between
// nodes with underlay addresses src and dst (with prefix): EncapNone within
// one subnet in CrossSubnet modes and always in ModeNever, else m.Encap().
// Subnets compare as the Node resource defines them: dst's address inside
// src's prefix.
func (m EncapMode) Expect(src, dst netip.Prefix) string {
	if m.CrossSubnet() && src.Masked().Contains(dst.Addr()) {
		return EncapNone
	}
	return m.Encap()
}

// PoolModeYAML renders an IPPool with the given name, CIDR and
// encapsulation modes (each Never, Always or CrossSubnet) and defaults for
// everything else.
func PoolModeYAML(name, cidr, ipipMode, vxlanMode string) string {
	return Pool{Name: name, CIDR: cidr, IPIPMode: ipipMode, VXLANMode: vxlanMode}.YAML()
}

// PoolNATYAML is PoolModeYAML with spec.natOutgoing set to natOutgoing.
func PoolNATYAML(name, cidr, ipipMode, vxlanMode string, natOutgoing bool) string {
	return Pool{Name: name, CIDR: cidr, IPIPMode: ipipMode, VXLANMode: vxlanMode, NATOutgoing: natOutgoing}.YAML()
}

// The multi-host topology's names and addresses.
const (
	// MultiPool is the name of the multi-host topology's pool
	// (WorkloadPool).
	MultiPool = "workloads"
	// FabricSegment is the segment of host-a and host-b.
	FabricSegment = "fabric"
	// RemoteSegment is the segment of host-c, behind the router.
	RemoteSegment = "remote"
	// MultiRouter is the router between the two segments.
	MultiRouter = "router"
	// RemoteUnderlay is the remote segment's gateway with prefix.
	RemoteUnderlay = "10.30.1.1/24"
	// FabricUnderlay6 is the fabric segment's IPv6 subnet when the
	// topology has an IPv6 underlay (MultiHostOptions.IPv6Underlay): a
	// host or the gateway at 10.30.0.N gets 2001:db8:a41:ff::N/64 (N's
	// decimal digits, read as hex).
	FabricUnderlay6 = "2001:db8:a41:ff::/64"
)

// FabricIPv6 is the IPv6 underlay address, with FabricUnderlay6's prefix,
// of the fabric address v4 (10.30.0.11 gives 2001:db8:a41:ff::11/64).
func FabricIPv6(v4 netip.Addr) netip.Prefix {
	return netip.MustParsePrefix(fmt.Sprintf("2001:db8:a41:ff::%d/64", v4.As4()[3]))
}

// MultiHost is the three-host topology:
//
//	<prefix>-fabric  10.30.0.0/24   host-a 10.30.0.11 (wa 10.65.1.2)
//	                                host-b 10.30.0.12 (wb 10.65.2.2)
//	<prefix>-router  10.30.0.1 on fabric, 10.30.1.1 on remote, forwarding,
//	                 connected routes only
//	<prefix>-remote  10.30.1.0/24   host-c 10.30.1.13 (wc 10.65.3.2)
//
// host-a and host-b share a subnet; host-c is in another one, reachable
// only through the router, which has no route to the workload pool. So
// wa <-> wb works with any mode (direct routing included), and wa <-> wc
// only when the hosts encapsulate.
type MultiHost struct {
	// Lab is the lab the topology was built in.
	Lab *Lab
	// Mode is the pool's current encapsulation (see SetMode).
	Mode EncapMode
	// NATOutgoing is the pool's natOutgoing (see SetNATOutgoing).
	NATOutgoing bool
	// Gateway is the external gateway, once AddGateway has built it.
	Gateway *Gateway
	// IPv6Underlay: the fabric segment's hosts and the gateway have IPv6
	// underlay addresses too (MultiHostOptions.IPv6Underlay).
	IPv6Underlay bool
	// Fabric and Remote are the two underlay segments.
	Fabric, Remote *Segment
	// Router routes between Fabric and Remote.
	Router *Router
	// HostA and HostB are on Fabric, HostC on Remote.
	HostA, HostB, HostC *Host
	// WA runs on HostA, WB on HostB, WC on HostC.
	WA, WB, WC *Workload
}

// MultiHostOptions configures BuildMultiHostWith.
type MultiHostOptions struct {
	// Mode is the pool's encapsulation.
	Mode EncapMode
	// WorkloadMTU is the MTU of wa, wb and wc; 0 means Mode.WorkloadMTU().
	// Set a larger one (e.g. 1500 with VXLAN) to make workloads send
	// packets that do not fit once encapsulated.
	WorkloadMTU int
	// IPv6Underlay gives the hosts on the fabric segment (host-a, host-b)
	// an IPv6 underlay address beside their IPv4 one (FabricIPv6 of it:
	// their Nodes get an ipv6Address), and the gateway one when AddGateway
	// builds it. host-c, behind the router, stays IPv4-only: IPv6 is not
	// routed between the segments. Off by default.
	IPv6Underlay bool
}

// BuildMultiHost adds the three-host topology (see MultiHost) to l with
// workload MTUs fitting mode. It starts no agents and applies no model:
// see StartAgents and ModelYAML.
func BuildMultiHost(l *Lab, mode EncapMode) (*MultiHost, error) {
	return BuildMultiHostWith(l, MultiHostOptions{Mode: mode})
}

// BuildMultiHostWith is BuildMultiHost with options.
func BuildMultiHostWith(l *Lab, o MultiHostOptions) (*MultiHost, error) {
	if _, err := ParseEncapMode(string(o.Mode)); err != nil {
		return nil, err
	}
	mtu := o.WorkloadMTU
	if mtu == 0 {
		mtu = o.Mode.WorkloadMTU()
	}
	m := &MultiHost{Lab: l, Mode: o.Mode, IPv6Underlay: o.IPv6Underlay}
	var err error
	if m.Fabric, err = l.AddSegment(FabricSegment, DefaultUnderlay); err != nil {
		return nil, err
	}
	if m.Remote, err = l.AddSegment(RemoteSegment, RemoteUnderlay); err != nil {
		return nil, err
	}
	if m.Router, err = l.AddRouter(MultiRouter, FabricSegment, RemoteSegment); err != nil {
		return nil, err
	}
	for _, h := range []struct {
		dst       **Host
		name, ip  string
		wdst      **Workload
		wname, wi string
	}{
		{&m.HostA, "host-a", "10.30.0.11/24", &m.WA, "wa", "10.65.1.2"},
		{&m.HostB, "host-b", "10.30.0.12/24", &m.WB, "wb", "10.65.2.2"},
		{&m.HostC, "host-c", "10.30.1.13/24", &m.WC, "wc", "10.65.3.2"},
	} {
		if *h.dst, err = l.AddHost(h.name, h.ip); err != nil {
			return nil, err
		}
		if o.IPv6Underlay && (*h.dst).Segment == m.Fabric {
			if err := l.AddUnderlayIPv6(*h.dst, FabricIPv6((*h.dst).Underlay.Addr()).String()); err != nil {
				return nil, err
			}
		}
		if *h.wdst, err = m.AddWorkload(h.name, h.wname, h.wi, mtu); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// AddWorkload creates another workload on host with the given MTU (0: the
// current mode's WorkloadMTU). It is part of ModelYAML from then on; apply
// its EndpointYAML to make it known to the agents.
func (m *MultiHost) AddWorkload(host, name, ip string, mtu int) (*Workload, error) {
	w, err := m.Lab.PlanWorkload(host, name, ip, "")
	if err != nil {
		return nil, err
	}
	if mtu == 0 {
		mtu = m.Mode.WorkloadMTU()
	}
	w.MTU = mtu
	if err := m.Lab.CreateWorkload(w); err != nil {
		return nil, err
	}
	return w, nil
}

// Hosts returns host-a, host-b and host-c.
func (m *MultiHost) Hosts() []*Host { return []*Host{m.HostA, m.HostB, m.HostC} }

// Workloads returns wa, wb and wc.
func (m *MultiHost) Workloads() []*Workload { return []*Workload{m.WA, m.WB, m.WC} }

// Expect returns the encapsulation the current mode should use on the
// underlay from host src to host dst (EncapNone, EncapIPIP or EncapVXLAN).
func (m *MultiHost) Expect(src, dst *Host) string { return m.Mode.Expect(src.Underlay, dst.Underlay) }

// PoolYAML renders the topology's pool with mode's encapsulation and the
// current NATOutgoing.
func (m *MultiHost) PoolYAML(mode EncapMode) string {
	ipip, vxlan := mode.PoolModes()
	return PoolNATYAML(MultiPool, WorkloadPool, ipip, vxlan, m.NATOutgoing)
}

// ModelYAML renders the whole model of the lab for the current mode: the
// pool, a Node per host and a WorkloadEndpoint per workload of the lab
// (including any added with AddWorkload). One Apply reaches every agent:
// they share the lab's datastore.
func (m *MultiHost) ModelYAML() string {
	docs := []string{m.PoolYAML(m.Mode)}
	for _, h := range m.Lab.Hosts() {
		docs = append(docs, NodeYAML(h))
	}
	for _, w := range m.Lab.Workloads() {
		docs = append(docs, EndpointYAML(w))
	}
	return JoinYAML(docs...)
}

// MultiHostModelYAML renders the pool MultiPool (WorkloadPool with mode's
// ipipMode and vxlanMode), a Node per host and a WorkloadEndpoint per
// workload, as one multi-document stream.
func MultiHostModelYAML(mode EncapMode, hosts []*Host, workloads []*Workload) string {
	ipip, vxlan := mode.PoolModes()
	docs := []string{PoolModeYAML(MultiPool, WorkloadPool, ipip, vxlan)}
	for _, h := range hosts {
		docs = append(docs, NodeYAML(h))
	}
	for _, w := range workloads {
		docs = append(docs, EndpointYAML(w))
	}
	return JoinYAML(docs...)
}

// Apply applies the whole model (ModelYAML) and returns calyxctl's output.
func (m *MultiHost) Apply() (string, error) { return m.Lab.Apply("", m.ModelYAML()) }

// SetMode re-applies just the pool with mode's encapsulation; running agents
// must switch without a restart. Workload MTUs are left as they are (change
// them with Lab.SetWorkloadMTU when the new mode needs a smaller one).
func (m *MultiHost) SetMode(mode EncapMode) (string, error) {
	if _, err := ParseEncapMode(string(mode)); err != nil {
		return "", err
	}
	out, err := m.Lab.Apply("", m.PoolYAML(mode))
	if err != nil {
		return out, fmt.Errorf("switch pool %s to %s: %w", MultiPool, mode, err)
	}
	m.Mode = mode
	return out, nil
}

// SetNATOutgoing re-applies just the pool with natOutgoing on or off (and
// the current mode).
func (m *MultiHost) SetNATOutgoing(on bool) (string, error) {
	prev := m.NATOutgoing
	m.NATOutgoing = on
	out, err := m.Lab.Apply("", m.PoolYAML(m.Mode))
	if err != nil {
		m.NATOutgoing = prev
		return out, fmt.Errorf("set natOutgoing %v on pool %s: %w", on, MultiPool, err)
	}
	return out, nil
}

// AddGateway adds the external gateway on the fabric segment with its
// client and server (Lab.AddGateway with the default options), with an
// IPv6 address too when the topology has an IPv6 underlay, and records it
// in m.Gateway.
func (m *MultiHost) AddGateway() (*Gateway, error) {
	g, err := m.Lab.AddGateway(GatewayOptions{Segment: FabricSegment})
	if err != nil {
		return nil, err
	}
	if m.IPv6Underlay {
		if err := m.Lab.AddGatewayIPv6(FabricIPv6(g.Address.Addr()).String()); err != nil {
			return nil, err
		}
	}
	m.Gateway = g
	return g, nil
}

// StartAgents starts an agent on every host that has none running, with
// extraArgs, one after the other (see Lab.StartAgent).
func (m *MultiHost) StartAgents(extraArgs ...string) error {
	for _, h := range m.Lab.Hosts() {
		if m.Lab.AgentPid(h.Name) != 0 {
			continue
		}
		if err := m.Lab.StartAgent(h.Name, extraArgs...); err != nil {
			return err
		}
	}
	return nil
}

// WaitLinks waits until every host's agent lists programs on the host side
// of each of its workloads.
func (m *MultiHost) WaitLinks(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for _, h := range m.Lab.Hosts() {
		ifaces := m.hostIfaces(h.Name)
		if len(ifaces) == 0 {
			continue
		}
		if err := m.Lab.WaitLinks(h.Name, max(time.Until(deadline), time.Second), ifaces...); err != nil {
			return err
		}
	}
	return nil
}

// hostIfaces lists the host sides of the created workloads on host.
func (m *MultiHost) hostIfaces(host string) []string {
	var out []string
	for _, w := range m.Lab.Workloads() {
		if w.Host == host && w.Created {
			out = append(out, w.HostIface)
		}
	}
	return out
}

// BlockRoutes returns the lines of "ip route" output whose destination is
// pool itself or a block inside it (anything inside pool but a host route).
// calyx keeps those in BPF; the kernel should only have /32s to local
// workloads. Wider routes that merely cover the pool (default, 10.0.0.0/8)
// are not listed.
func BlockRoutes(ipRoute string, pool netip.Prefix) []string {
	var out []string
	for line := range strings.SplitSeq(ipRoute, "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		dst := fields[0]
		// Route types ("unreachable 10.65.0.0/16") come before the
		// destination.
		switch dst {
		case "unicast", "unreachable", "blackhole", "prohibit", "throw", "local", "broadcast", "multicast":
			if len(fields) < 2 {
				continue
			}
			dst = fields[1]
		}
		p, err := netip.ParsePrefix(dst)
		if err != nil || p.Addr().Is4() != pool.Addr().Is4() {
			continue // "default", a bare address (a host route), or garbage
		}
		if p.Bits() < p.Addr().BitLen() && p.Bits() >= pool.Bits() && pool.Contains(p.Addr()) {
			out = append(out, strings.TrimSpace(line))
		}
	}
	return out
}
