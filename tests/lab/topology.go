package lab

import (
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
)

// WorkloadGateway is the address every workload uses as its default gateway;
// calyx answers ARP for it (and any other address) in BPF with the host
// side's MAC.
const WorkloadGateway = "169.254.1.1"

// WorkloadGatewayV6 is the IPv6 gateway of every workload; calyx answers
// neighbour solicitations for it (and any other address) in BPF.
const WorkloadGatewayV6 = "fe80::1"

// Segment is an underlay L2 segment: a namespace holding a Linux bridge that
// carries the segment's gateway address. Hosts join it with a veth. AddRouter
// puts a router namespace between segments; the gateway address then moves
// to the router's leg on this segment.
type Segment struct {
	// Name is the segment name; the namespace is <prefix>-<Name>.
	Name string
	// NS is the namespace holding the bridge.
	NS string
	// Bridge is the bridge interface inside NS.
	Bridge string
	// Gateway is the segment's gateway address with its prefix length,
	// e.g. 10.30.0.1/24; hosts use it as their default route. It is on the
	// bridge until a router takes it over.
	Gateway netip.Prefix
	// Router is the name of the router whose leg carries Gateway, or ""
	// while the bridge carries it.
	Router string
}

// Host is a calyx host: a namespace with an underlay eth0 in which an agent
// can run.
type Host struct {
	// Name is the host name, also the agent's --node and the Node resource
	// name.
	Name string
	// NS is the host namespace, <prefix>-<Name>.
	NS string
	// Underlay is the host's underlay address with prefix, e.g.
	// 10.30.0.11/24.
	Underlay netip.Prefix
	// UnderlayIface is the underlay interface inside NS ("eth0").
	UnderlayIface string
	// Underlay6 is the host's IPv6 underlay address with prefix, beside
	// Underlay, once AddUnderlayIPv6 gave it one (the Node's ipv6Address);
	// invalid otherwise: the lab's underlay is IPv4-only by default.
	Underlay6 netip.Prefix
	// Uplink is the segment-side end of the underlay veth (in the segment
	// namespace, a bridge port).
	Uplink string
	// Segment is the segment the host is joined to.
	Segment *Segment
	// BPFFS is the host agent's --bpffs directory.
	BPFFS string
}

// Workload is a workload namespace attached to a host: by a veth pair (a
// pod, KindVeth) or by two taps joined by a relay process (a virtual
// machine, KindVM; see StartVM).
type Workload struct {
	// Name is the workload name; also its WorkloadEndpoint name.
	Name string
	// Host is the name of the host the workload runs on.
	Host string
	// NS is the workload namespace, <prefix>-<Name>.
	NS string
	// IP is the workload's address (a /32 on its eth0).
	IP netip.Addr
	// IPv6, when set (AddIPv6), is a second address, a /128 on eth0, with
	// the default IPv6 route via WorkloadGatewayV6.
	IPv6 netip.Addr
	// MAC is the MAC address of the workload's instance interface (Iface).
	MAC net.HardwareAddr
	// HostIface is the host-side interface in the host namespace
	// (<prefix>w<N>), the veth end or the tap; it is the endpoint's
	// spec.interface.
	HostIface string
	// Kind is KindVeth or KindVM (empty means KindVeth). PlanWorkload sets
	// it from the lab's default; it may be changed before CreateWorkload.
	Kind WorkloadKind
	// OmitMAC leaves spec.mac out of the rendered WorkloadEndpoint so the
	// agent has to learn the MAC (the neighbour path).
	OmitMAC bool
	// MTU is the MTU of both ends of the workload's veth or of both taps;
	// 0 leaves the kernel default (1500). Set it between PlanWorkload and
	// CreateWorkload.
	MTU int
	// Created is set once the namespace and the interfaces exist (see
	// PlanWorkload). A VM stopped with StopVM stays created.
	Created bool
	// Iface is the instance's side of this endpoint inside NS: "eth0" for
	// a workload, "eth1", "eth2", ... for the further NICs AddNIC gives a
	// VM. Empty means "eth0".
	Iface string
	// DHCP makes the instance boot without an address, as a guest whose
	// address comes from DHCP: its interface gets its MAC and MTU and is
	// brought up (IPv6 link-local only, with duplicate-address detection
	// off so a DHCPv6 client can bind at once), but neither IP, IPv6 nor a
	// route. A DHCP client (DHClient, UDHCPC) configures it. IP and IPv6
	// stay in the rendered WorkloadEndpoint: the model assigns the address,
	// DHCP hands it out. Set it between PlanWorkload and CreateWorkload
	// (or before StartVM); every boot (StartVM, MigrateWorkload) leaves the
	// instance unconfigured again.
	DHCP bool
	// Instance groups the NICs of one instance (a VM with several
	// interfaces): AddNIC sets it, on the new NIC and on the workload it
	// was added to, to the name of that workload, whose namespace all of
	// them share. The rendered WorkloadEndpoints carry it as the label
	// calyx.io/instance. Empty for a workload with a single interface.
	Instance string
}

// InstanceIface returns the instance-side interface of w: Iface, or "eth0"
// when it is empty.
func (w *Workload) InstanceIface() string {
	if w.Iface == "" {
		return "eth0"
	}
	return w.Iface
}

// InstanceName returns the name of the instance w is a NIC of: Instance, or
// w's own name for a workload with a single interface.
func (w *Workload) InstanceName() string {
	if w.Instance == "" {
		return w.Name
	}
	return w.Instance
}

// IsSecondaryNIC reports whether w is a NIC added by AddNIC, not the
// instance's first interface (the workload that owns the namespace).
func (w *Workload) IsSecondaryNIC() bool {
	return w.Instance != "" && w.Instance != w.Name
}

// AddSegment creates an underlay segment: namespace <prefix>-<name> with a
// bridge carrying gatewayCIDR (e.g. "10.30.0.1/24").
func (l *Lab) AddSegment(name, gatewayCIDR string) (*Segment, error) {
	if err := l.checkName(name); err != nil {
		return nil, err
	}
	gw, err := netip.ParsePrefix(gatewayCIDR)
	if err != nil || !gw.Addr().Is4() {
		return nil, fmt.Errorf("segment %s: invalid gateway %q: want an IPv4 address with prefix", name, gatewayCIDR)
	}
	l.mu.Lock()
	for _, s := range l.segments {
		if s.Gateway.Masked().Overlaps(gw.Masked()) {
			l.mu.Unlock()
			return nil, fmt.Errorf("segment %s: %s overlaps segment %s", name, gw, s.Name)
		}
	}
	// The bridge name repeats across segments: each lives in its own
	// namespace.
	s := &Segment{Name: name, NS: l.NSName(name), Bridge: l.Prefix + "br", Gateway: gw}
	l.segments = append(l.segments, s)
	l.mu.Unlock()

	l.logf("segment %s: namespace %s, bridge %s %s", name, s.NS, s.Bridge, gw)
	if err := l.ip("", "netns", "add", s.NS); err != nil {
		return nil, fmt.Errorf("segment %s: %w", name, err)
	}
	for _, st := range [][]string{
		{"link", "set", "lo", "up"},
		{"link", "add", s.Bridge, "type", "bridge"},
		{"addr", "add", gw.String(), "dev", s.Bridge},
		{"link", "set", s.Bridge, "up"},
	} {
		if err := l.ip(s.NS, st...); err != nil {
			return nil, fmt.Errorf("segment %s: %w", name, err)
		}
	}
	return s, nil
}

// segmentFor returns the segment whose subnet contains addr, creating the
// default segment ("fabric", DefaultUnderlay) when there is none at all.
func (l *Lab) segmentFor(addr netip.Addr) (*Segment, error) {
	l.mu.Lock()
	segs := append([]*Segment(nil), l.segments...)
	l.mu.Unlock()
	if len(segs) == 0 {
		s, err := l.AddSegment("fabric", DefaultUnderlay)
		if err != nil {
			return nil, err
		}
		segs = []*Segment{s}
	}
	for _, s := range segs {
		if s.Gateway.Masked().Contains(addr) {
			return s, nil
		}
	}
	return nil, fmt.Errorf("no segment contains %s (add one with AddSegment)", addr)
}

// AddHost creates host namespace <prefix>-<name> joined to the segment that
// contains underlayCIDR (e.g. "10.30.0.11/24"; the default segment
// 10.30.0.1/24 is created on first use), with eth0 carrying that address, lo
// up and a default route via the segment's gateway.
func (l *Lab) AddHost(name, underlayCIDR string) (*Host, error) {
	if err := l.checkName(name); err != nil {
		return nil, err
	}
	pfx, err := netip.ParsePrefix(underlayCIDR)
	if err != nil || !pfx.Addr().Is4() {
		return nil, fmt.Errorf("host %s: invalid underlay address %q: want an IPv4 address with prefix", name, underlayCIDR)
	}
	seg, err := l.segmentFor(pfx.Addr())
	if err != nil {
		return nil, fmt.Errorf("host %s: %w", name, err)
	}
	if pfx.Bits() != seg.Gateway.Bits() {
		return nil, fmt.Errorf("host %s: %s does not match segment %s prefix length", name, pfx, seg.Gateway)
	}
	l.mu.Lock()
	h := &Host{
		Name:          name,
		NS:            l.NSName(name),
		Underlay:      pfx,
		UnderlayIface: "eth0",
		Uplink:        l.Prefix + "u" + strconv.Itoa(l.nextUplink),
		Segment:       seg,
		BPFFS:         filepath.Join(l.BPFFS, name),
	}
	l.nextUplink++
	l.hosts = append(l.hosts, h)
	l.mu.Unlock()

	l.logf("host %s: namespace %s, eth0 %s via %s", name, h.NS, pfx, seg.Gateway.Addr())
	if err := l.ip("", "netns", "add", h.NS); err != nil {
		return nil, fmt.Errorf("host %s: %w", name, err)
	}
	// Create the pair inside the namespaces directly so nothing ever
	// appears (or collides) in the root namespace.
	if err := l.ip(seg.NS, "link", "add", h.Uplink, "type", "veth", "peer", "name", h.UnderlayIface, "netns", h.NS); err != nil {
		return nil, fmt.Errorf("host %s: %w", name, err)
	}
	for _, st := range []struct {
		ns   string
		args []string
	}{
		{seg.NS, []string{"link", "set", h.Uplink, "master", seg.Bridge, "up"}},
		{h.NS, []string{"link", "set", "lo", "up"}},
		{h.NS, []string{"addr", "add", pfx.String(), "dev", h.UnderlayIface}},
		{h.NS, []string{"link", "set", h.UnderlayIface, "up"}},
		{h.NS, []string{"route", "add", "default", "via", seg.Gateway.Addr().String(), "dev", h.UnderlayIface}},
	} {
		if err := l.ip(st.ns, st.args...); err != nil {
			return nil, fmt.Errorf("host %s: %w", name, err)
		}
	}
	if g := l.Gateway(); g != nil {
		if err := l.gatewayRoute(g, h); err != nil {
			return nil, fmt.Errorf("host %s: %w", name, err)
		}
	}
	return h, nil
}

// AddUnderlayIPv6 gives host h an IPv6 underlay address (cidr, e.g.
// "2001:db8:a41:ff::11/64") on its underlay interface beside the IPv4 one,
// without duplicate address detection, and records it in h.Underlay6 (the
// Node's ipv6Address from then on). Hosts and the gateway on one segment
// reach each other over it directly (the segment's bridge); no IPv6 route
// leads beyond the segment.
func (l *Lab) AddUnderlayIPv6(h *Host, cidr string) error {
	p, err := netip.ParsePrefix(cidr)
	if err != nil || !p.Addr().Is6() || p.Addr().Is4In6() || p.Addr().IsLinkLocalUnicast() {
		return fmt.Errorf("host %s: invalid IPv6 underlay address %q: want a global IPv6 address with prefix", h.Name, cidr)
	}
	if h.Underlay6.IsValid() {
		return fmt.Errorf("host %s: has IPv6 underlay address %s already", h.Name, h.Underlay6)
	}
	l.logf("host %s: %s %s", h.Name, h.UnderlayIface, p)
	if err := l.ip(h.NS, "-6", "addr", "add", p.String(), "dev", h.UnderlayIface, "nodad"); err != nil {
		return fmt.Errorf("host %s: %w", h.Name, err)
	}
	l.mu.Lock()
	h.Underlay6 = p
	l.mu.Unlock()
	return nil
}

// Host returns the host with the given name.
func (l *Lab) Host(name string) (*Host, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, h := range l.hosts {
		if h.Name == name {
			return h, nil
		}
	}
	return nil, fmt.Errorf("no host %q in lab %s", name, l.Prefix)
}

// Segment returns the segment with the given name.
func (l *Lab) Segment(name string) (*Segment, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.segments {
		if s.Name == name {
			return s, nil
		}
	}
	return nil, fmt.Errorf("no segment %q in lab %s", name, l.Prefix)
}

// Segments returns the segments in creation order.
func (l *Lab) Segments() []*Segment {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*Segment(nil), l.segments...)
}

// Hosts returns the hosts in creation order.
func (l *Lab) Hosts() []*Host {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*Host(nil), l.hosts...)
}

// Workloads returns the workloads (planned or created) in creation order.
func (l *Lab) Workloads() []*Workload {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*Workload(nil), l.workloads...)
}

// Workload returns the workload with the given name.
func (l *Lab) Workload(name string) (*Workload, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, w := range l.workloads {
		if w.Name == name {
			return w, nil
		}
	}
	return nil, fmt.Errorf("no workload %q in lab %s", name, l.Prefix)
}

// AddWorkload plans and creates a workload on host: namespace
// <prefix>-<name>, a veth (or, for a VM, a tap pair with a relay) whose host
// side <prefix>w<N> is up in the host namespace and whose other end is eth0
// in the workload namespace with mac (empty: one derived from the prefix),
// ip as a /32, a link-scope route to 169.254.1.1 and the default route via
// it. The kind is the lab's default (Options.WorkloadKind).
func (l *Lab) AddWorkload(host, name, ip, mac string) (*Workload, error) {
	w, err := l.PlanWorkload(host, name, ip, mac)
	if err != nil {
		return nil, err
	}
	if err := l.CreateWorkload(w); err != nil {
		return nil, err
	}
	return w, nil
}

// PlanWorkload reserves a workload's names, address and MAC without creating
// anything, so its WorkloadEndpoint can be applied before its interface
// exists. CreateWorkload builds it later. Its kind is the lab's default
// (Options.WorkloadKind, resolved by the workload's number for KindMixed).
func (l *Lab) PlanWorkload(host, name, ip, mac string) (*Workload, error) {
	return l.PlanWorkloadKind(host, name, ip, mac, "")
}

// PlanWorkloadKind is PlanWorkload with an explicit kind: KindVeth, KindVM,
// KindMixed (by the workload's number), or "" for the lab's default.
func (l *Lab) PlanWorkloadKind(host, name, ip, mac string, kind WorkloadKind) (*Workload, error) {
	if kind == "" {
		kind = l.opts.WorkloadKind
	}
	if _, err := ParseWorkloadKind(string(kind)); err != nil {
		return nil, fmt.Errorf("workload %s: %w", name, err)
	}
	if err := l.checkName(name); err != nil {
		return nil, err
	}
	h, err := l.Host(host)
	if err != nil {
		return nil, err
	}
	addr, err := parseHostAddr(ip)
	if err != nil {
		return nil, fmt.Errorf("workload %s: %w", name, err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, o := range l.workloads {
		if o.IP == addr {
			return nil, fmt.Errorf("workload %s: address %s already used by workload %s", name, addr, o.Name)
		}
	}
	n := l.nextWorkload
	var hw net.HardwareAddr
	if mac == "" {
		hw = l.derivedMAC(n)
	} else if hw, err = net.ParseMAC(mac); err != nil || len(hw) != 6 {
		return nil, fmt.Errorf("workload %s: invalid MAC %q", name, mac)
	}
	l.nextWorkload++
	w := &Workload{
		Name:      name,
		Host:      h.Name,
		NS:        l.NSName(name),
		IP:        addr,
		MAC:       hw,
		HostIface: l.Prefix + "w" + strconv.Itoa(n),
		Kind:      kind.For(n),
		Iface:     "eth0",
	}
	if len(w.HostIface) > 15 {
		return nil, fmt.Errorf("workload %s: interface name %s is longer than 15 characters", name, w.HostIface)
	}
	l.workloads = append(l.workloads, w)
	return w, nil
}

// CreateWorkload builds a planned workload's namespace and its veth, or for
// a VM its relay and taps (one per NIC planned with AddNIC), with w.MTU on
// both ends when it is set. A NIC is created with its instance, not by
// itself.
func (l *Lab) CreateWorkload(w *Workload) error {
	if w.Created {
		return fmt.Errorf("workload %s already created", w.Name)
	}
	if w.IsSecondaryNIC() {
		return fmt.Errorf("workload %s is NIC %s of instance %s: create %s instead", w.Name, w.InstanceIface(), w.Instance, w.Instance)
	}
	if w.MTU < 0 {
		return fmt.Errorf("workload %s: invalid MTU %d", w.Name, w.MTU)
	}
	kind, err := w.kind()
	if err != nil {
		return err
	}
	h, err := l.Host(w.Host)
	if err != nil {
		return err
	}
	addr := w.IP.String() + "/32"
	if w.DHCP {
		addr = "no address (DHCP)"
	}
	l.logf("workload %s (%s): namespace %s, %s %s %s, host side %s in %s", w.Name, kind, w.NS, w.InstanceIface(), addr, w.MAC, w.HostIface, h.NS)
	if err := l.ip("", "netns", "add", w.NS); err != nil {
		return fmt.Errorf("workload %s: %w", w.Name, err)
	}
	nics := l.NICs(w)
	for _, n := range nics {
		if n.MTU < 0 {
			return fmt.Errorf("workload %s: invalid MTU %d", n.Name, n.MTU)
		}
		if err := l.plug(n, h); err != nil {
			return err
		}
	}
	l.mu.Lock()
	for _, n := range nics {
		n.Created = true
	}
	l.mu.Unlock()
	return nil
}

// NICs returns the workloads of w's instance in creation order: the
// instance's first interface (the workload that owns the namespace) and
// then the NICs AddNIC gave it. For a workload without added NICs it is
// just w.
func (l *Lab) NICs(w *Workload) []*Workload {
	if w.Instance == "" {
		return []*Workload{w}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []*Workload
	for _, o := range l.workloads {
		if o.Instance == w.Instance {
			out = append(out, o)
		}
	}
	return out
}

// AddNIC gives VM w another NIC, as a hypervisor adds a second virtio-net
// device: a new workload record sharing w's namespace, with its own
// instance interface (eth1, eth2, ... in order), its own host-side tap
// <prefix>w<N> and its own relay, and its own WorkloadEndpoint (in
// ModelYAML) named name ("" means "<w>-eth<N>"). ip is the NIC's IPv4
// address and mac its MAC ("" derives one, as for a workload). The NIC
// inherits w's host, MTU and DHCP; AddNIC sets Instance on both, so both
// endpoints carry the label calyx.io/instance: <w>.
//
// On a planned VM the NIC is planned too (its MTU and DHCP may be changed
// until CreateWorkload(w) creates both); on a running VM it is hot-plugged
// at once; on a stopped VM it appears at StartVM. StopVM, StartVM and
// MigrateWorkload act on every NIC of the instance, whichever of its
// records they are given. A static (non-DHCP) further NIC gets its /32
// and, so that what is sent from its address leaves through it, a routing
// rule "from <ip> lookup <table>" whose table routes via 169.254.1.1 on
// that NIC (the default route stays on eth0).
func (l *Lab) AddNIC(w *Workload, name, ip, mac string) (*Workload, error) {
	k, err := w.kind()
	if err != nil {
		return nil, err
	}
	if k != KindVM {
		return nil, fmt.Errorf("add nic to %s: workload is a %s, not a %s: only VMs have further NICs", w.Name, k, KindVM)
	}
	inst := w
	if w.IsSecondaryNIC() {
		if inst, err = l.Workload(w.Instance); err != nil {
			return nil, fmt.Errorf("add nic to %s: %w", w.Name, err)
		}
	}
	nics := l.NICs(inst)
	iface := "eth" + strconv.Itoa(len(nics))
	if name == "" {
		name = inst.Name + "-" + iface
	}
	nic, err := l.PlanWorkloadKind(inst.Host, name, ip, mac, KindVM)
	if err != nil {
		return nil, fmt.Errorf("add nic to %s: %w", inst.Name, err)
	}
	l.mu.Lock()
	nic.NS = inst.NS
	nic.Iface = iface
	nic.MTU = inst.MTU
	nic.DHCP = inst.DHCP
	nic.Instance = inst.Name
	inst.Instance = inst.Name
	created := inst.Created
	l.mu.Unlock()
	if !created {
		return nic, nil
	}
	if l.relay(inst) != nil {
		h, err := l.Host(inst.Host)
		if err != nil {
			return nil, err
		}
		l.logf("workload %s: hot-plugging NIC %s (%s)", inst.Name, nic.Name, iface)
		if err := l.plug(nic, h); err != nil {
			return nil, fmt.Errorf("add nic to %s: %w", inst.Name, err)
		}
	}
	l.mu.Lock()
	nic.Created = true
	l.mu.Unlock()
	return nic, nil
}

// nicTable is the routing table (and the rule preference) of the n-th NIC
// of a static instance (eth<n>, n >= 1): routes via the gateway on that NIC
// for what is sent from its addresses.
func nicTable(iface string) (string, error) {
	n, err := strconv.Atoi(strings.TrimPrefix(iface, "eth"))
	if err != nil || n < 1 || !strings.HasPrefix(iface, "eth") {
		return "", fmt.Errorf("interface %s: not a further NIC eth<N>", iface)
	}
	return strconv.Itoa(1000 + n), nil
}

// plug connects the existing workload namespace to host h: it creates the
// veth pair, or starts the VM's relay (which creates both taps), then
// configures w's instance interface as the instance expects it (MAC, /32,
// gateway routes, MTU, IPv6 if the workload has it; only MAC, MTU and up
// with DHCP) and brings the host side up. CreateWorkload, StartVM and
// MigrateWorkload share it, so a restarted or moved instance comes back
// exactly as it was first built. It plugs one NIC.
func (l *Lab) plug(w *Workload, h *Host) error {
	kind, err := w.kind()
	if err != nil {
		return err
	}
	ifc := w.InstanceIface()
	switch kind {
	case KindVM:
		if err := l.startRelay(w, h); err != nil {
			return err
		}
	default:
		// Created inside the namespaces directly, so nothing appears in
		// the root namespace.
		if err := l.ip(h.NS, "link", "add", w.HostIface, "type", "veth", "peer", "name", ifc, "netns", w.NS); err != nil {
			return fmt.Errorf("workload %s: %w", w.Name, err)
		}
	}
	if w.MTU > 0 {
		if err := l.setLinkMTU(h.NS, w, w.MTU); err != nil {
			return err
		}
	}
	for _, args := range [][]string{
		{"link", "set", "lo", "up"},
		{"link", "set", ifc, "address", w.MAC.String()},
	} {
		if err := l.ip(w.NS, args...); err != nil {
			return fmt.Errorf("workload %s: %w", w.Name, err)
		}
	}
	switch {
	case w.DHCP:
		// No DAD on the link-local address: a DHCPv6 client can bind
		// to it as soon as the link is up. Set before the link comes
		// up, when the address is made.
		if _, err := l.Exec(w.NS, "sysctl", "-qw", "net.ipv6.conf."+ifc+".accept_dad=0"); err != nil {
			return fmt.Errorf("workload %s: %w", w.Name, err)
		}
		if err := l.ip(w.NS, "link", "set", ifc, "up"); err != nil {
			return fmt.Errorf("workload %s: %w", w.Name, err)
		}
	case w.IsSecondaryNIC():
		table, err := nicTable(ifc)
		if err != nil {
			return fmt.Errorf("workload %s: %w", w.Name, err)
		}
		// The rule outlives the interface (a stopped VM keeps it):
		// replace it on every boot.
		_ = l.ip(w.NS, "rule", "del", "pref", table)
		for _, args := range [][]string{
			{"addr", "add", w.IP.String() + "/32", "dev", ifc},
			{"link", "set", ifc, "up"},
			{"route", "add", WorkloadGateway, "dev", ifc, "scope", "link", "table", table},
			{"route", "add", "default", "via", WorkloadGateway, "dev", ifc, "table", table},
			{"rule", "add", "from", w.IP.String(), "lookup", table, "pref", table},
		} {
			if err := l.ip(w.NS, args...); err != nil {
				return fmt.Errorf("workload %s: %w", w.Name, err)
			}
		}
	default:
		for _, args := range [][]string{
			{"addr", "add", w.IP.String() + "/32", "dev", ifc},
			{"link", "set", ifc, "up"},
			{"route", "add", WorkloadGateway, "dev", ifc, "scope", "link"},
			{"route", "add", "default", "via", WorkloadGateway, "dev", ifc},
		} {
			if err := l.ip(w.NS, args...); err != nil {
				return fmt.Errorf("workload %s: %w", w.Name, err)
			}
		}
	}
	if w.IPv6.IsValid() && !w.DHCP {
		if err := l.configureIPv6(w, w.IPv6); err != nil {
			return err
		}
	}
	// The host side comes up last, once the instance is ready to answer.
	if err := l.ip(h.NS, "link", "set", w.HostIface, "up"); err != nil {
		return fmt.Errorf("workload %s: %w", w.Name, err)
	}
	return nil
}

// SetWorkloadMTU changes the MTU of a created workload's veth or taps, both
// ends, e.g. after switching a pool to a mode with a different overhead. For
// a stopped VM it only records the MTU for StartVM.
func (l *Lab) SetWorkloadMTU(w *Workload, mtu int) error {
	if mtu <= 0 {
		return fmt.Errorf("workload %s: invalid MTU %d", w.Name, mtu)
	}
	h, err := l.Host(w.Host)
	if err != nil {
		return err
	}
	if l.interfacesUp(w) {
		if err := l.setLinkMTU(h.NS, w, mtu); err != nil {
			return err
		}
	}
	l.mu.Lock()
	w.MTU = mtu
	l.mu.Unlock()
	return nil
}

// setLinkMTU sets mtu on the workload's instance interface and on its host
// side. Both ends get it because a veth drops frames longer than the
// receiving end's MTU before any program sees them: a host side smaller
// than the instance's would hide
// oversize packets from the BPF code that must answer them with "fragmentation
// needed". For a VM both taps get it, as a hypervisor gives the host tap the
// guest NIC's MTU.
func (l *Lab) setLinkMTU(hostNS string, w *Workload, mtu int) error {
	m := strconv.Itoa(mtu)
	if err := l.ip(w.NS, "link", "set", w.InstanceIface(), "mtu", m); err != nil {
		return fmt.Errorf("workload %s: %w", w.Name, err)
	}
	if err := l.ip(hostNS, "link", "set", w.HostIface, "mtu", m); err != nil {
		return fmt.Errorf("workload %s: %w", w.Name, err)
	}
	return nil
}

// derivedMAC returns a locally administered unicast MAC unique within the
// lab and recognisable in captures: 02:<prefix hex>:00:<n>.
func (l *Lab) derivedMAC(n int) net.HardwareAddr {
	p, err := hex.DecodeString(l.Prefix[2:])
	if err != nil || len(p) != 2 {
		p = []byte{0, 0} // unreachable: the prefix was validated
	}
	return net.HardwareAddr{0x02, p[0], p[1], 0x00, byte(n >> 8), byte(n)}
}

// checkName rejects names that are unsafe or already used by another
// segment, router, host or workload (they share the namespace name space).
func (l *Lab) checkName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("invalid name %q: want lowercase letters, digits and dashes", name)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.segments {
		if s.Name == name {
			return fmt.Errorf("name %q already used by a segment", name)
		}
	}
	for _, h := range l.hosts {
		if h.Name == name {
			return fmt.Errorf("name %q already used by a host", name)
		}
	}
	for _, w := range l.workloads {
		if w.Name == name {
			return fmt.Errorf("name %q already used by a workload", name)
		}
	}
	for _, r := range l.routers {
		if r.Name == name {
			return fmt.Errorf("name %q already used by a router", name)
		}
	}
	if g := l.gateway; g != nil {
		if g.Name == name {
			return fmt.Errorf("name %q already used by the gateway", name)
		}
		for _, e := range g.Externals() {
			if e.Name == name {
				return fmt.Errorf("name %q already used by an external namespace", name)
			}
		}
	}
	return nil
}

// parseHostAddr accepts "10.65.0.2" or "10.65.0.2/32".
func parseHostAddr(s string) (netip.Addr, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil || p.Bits() != p.Addr().BitLen() {
			return netip.Addr{}, fmt.Errorf("invalid workload address %q: want a host address", s)
		}
		s = p.Addr().String()
	}
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4() {
		return netip.Addr{}, errors.Join(fmt.Errorf("invalid workload address %q: want an IPv4 address", s), err)
	}
	return a, nil
}

// AddIPv6 gives a created workload an IPv6 address (a /128 on its instance
// interface, without duplicate-address detection so it is usable at once)
// and a default IPv6 route via WorkloadGatewayV6 (for a further NIC, in its
// own table for what is sent from the address, as its IPv4 routes). Apply
// the workload's EndpointYAML afterwards so that the address is in the
// model. A DHCP workload only records it: the model has it, DHCPv6 hands it
// out.
func (l *Lab) AddIPv6(w *Workload, addr string) error {
	a, err := netip.ParseAddr(addr)
	if err != nil || !a.Is6() || a.Is4In6() {
		return fmt.Errorf("workload %s: invalid IPv6 address %q", w.Name, addr)
	}
	if !w.Created {
		return fmt.Errorf("workload %s: not created yet", w.Name)
	}
	// A stopped VM has no interface: StartVM configures the address.
	if l.interfacesUp(w) && !w.DHCP {
		if err := l.configureIPv6(w, a); err != nil {
			return err
		}
	}
	l.mu.Lock()
	w.IPv6 = a
	l.mu.Unlock()
	return nil
}

// configureIPv6 puts a on w's instance interface and the default IPv6
// route via the gateway: in the main table for the instance's first
// interface, in the NIC's table with a rule for a further NIC.
func (l *Lab) configureIPv6(w *Workload, a netip.Addr) error {
	ifc := w.InstanceIface()
	cmds := [][]string{{"-6", "addr", "add", a.String() + "/128", "dev", ifc, "nodad"}}
	if w.IsSecondaryNIC() {
		table, err := nicTable(ifc)
		if err != nil {
			return fmt.Errorf("workload %s: %w", w.Name, err)
		}
		_ = l.ip(w.NS, "-6", "rule", "del", "pref", table)
		cmds = append(cmds,
			[]string{"-6", "route", "add", "default", "via", WorkloadGatewayV6, "dev", ifc, "table", table},
			[]string{"-6", "rule", "add", "from", a.String(), "lookup", table, "pref", table})
	} else {
		cmds = append(cmds, []string{"-6", "route", "add", "default", "via", WorkloadGatewayV6, "dev", ifc})
	}
	for _, args := range cmds {
		if err := l.ip(w.NS, args...); err != nil {
			return fmt.Errorf("workload %s: %w", w.Name, err)
		}
	}
	return nil
}
