package lab

import (
	"fmt"
	"net/netip"
	"strconv"
)

// Router is a namespace that routes between underlay segments. It knows
// only the subnets it is connected to: no default route and, in particular,
// no route to the workload pool, so workload traffic crosses it only when a
// host encapsulated it towards another host's underlay address.
type Router struct {
	// Name is the router name; the namespace is <prefix>-<Name>.
	Name string
	// NS is the router namespace.
	NS string
	// Legs are the router's interfaces, one per segment, in the order the
	// segments were given to AddRouter.
	Legs []*RouterLeg
}

// RouterLeg is a router's interface on one segment.
type RouterLeg struct {
	// Segment is the segment the leg is plugged into.
	Segment *Segment
	// Iface is the leg inside the router namespace (<prefix>r<N>).
	Iface string
	// Uplink is the segment-side end of the leg's veth, a bridge port in
	// the segment namespace (<prefix>u<N>, numbered with the hosts'
	// uplinks).
	Uplink string
	// Address is the leg's address: the segment's gateway.
	Address netip.Prefix
}

// AddRouter creates router namespace <prefix>-<name> with one leg per named
// segment and IPv4 forwarding on. Each leg is a veth plugged into the
// segment's bridge; the segment's gateway address moves from the bridge to
// the leg, so hosts whose default route points at the gateway now reach the
// router. The router gets no routes beyond the connected subnets the kernel
// adds for its addresses.
func (l *Lab) AddRouter(name string, segments ...string) (*Router, error) {
	if err := l.checkName(name); err != nil {
		return nil, err
	}
	if len(segments) == 0 {
		return nil, fmt.Errorf("router %s: no segments given", name)
	}
	seen := map[string]bool{}
	segs := make([]*Segment, 0, len(segments))
	for _, sn := range segments {
		if seen[sn] {
			return nil, fmt.Errorf("router %s: segment %s given twice", name, sn)
		}
		seen[sn] = true
		s, err := l.Segment(sn)
		if err != nil {
			return nil, fmt.Errorf("router %s: %w", name, err)
		}
		segs = append(segs, s)
	}

	l.mu.Lock()
	for _, s := range segs {
		if s.Router != "" {
			l.mu.Unlock()
			return nil, fmt.Errorf("router %s: segment %s already has router %s", name, s.Name, s.Router)
		}
	}
	r := &Router{Name: name, NS: l.NSName(name)}
	for _, s := range segs {
		leg := &RouterLeg{
			Segment: s,
			Iface:   l.Prefix + "r" + strconv.Itoa(l.nextLeg),
			Uplink:  l.Prefix + "u" + strconv.Itoa(l.nextUplink),
			Address: s.Gateway,
		}
		l.nextLeg++
		l.nextUplink++
		if len(leg.Iface) > 15 || len(leg.Uplink) > 15 {
			l.mu.Unlock()
			return nil, fmt.Errorf("router %s: interface names %s/%s are longer than 15 characters", name, leg.Iface, leg.Uplink)
		}
		r.Legs = append(r.Legs, leg)
		// Claimed now so a concurrent AddRouter cannot take the segment
		// too; on failure Close removes the half-built router anyway.
		s.Router = name
	}
	// Registered before anything exists so the name stays reserved and
	// the router is listed even if building it fails halfway.
	l.routers = append(l.routers, r)
	l.mu.Unlock()

	l.logf("router %s: namespace %s between %v", name, r.NS, segments)
	if err := l.ip("", "netns", "add", r.NS); err != nil {
		return nil, fmt.Errorf("router %s: %w", name, err)
	}
	if err := l.ip(r.NS, "link", "set", "lo", "up"); err != nil {
		return nil, fmt.Errorf("router %s: %w", name, err)
	}
	// Set explicitly: a new namespace may inherit forwarding from the root
	// namespace's settings or not, depending on the machine.
	if _, err := l.Exec(r.NS, "sysctl", "-qw", "net.ipv4.ip_forward=1"); err != nil {
		return nil, fmt.Errorf("router %s: enable forwarding: %w", name, err)
	}
	for _, leg := range r.Legs {
		if err := l.plugLeg(r, leg); err != nil {
			return nil, fmt.Errorf("router %s: %w", name, err)
		}
	}
	return r, nil
}

// plugLeg creates one router leg and moves the segment's gateway onto it.
func (l *Lab) plugLeg(r *Router, leg *RouterLeg) error {
	s := leg.Segment
	l.logf("router %s: leg %s %s on segment %s (bridge port %s)", r.Name, leg.Iface, leg.Address, s.Name, leg.Uplink)
	// Created inside the namespaces directly, like host uplinks, so
	// nothing appears in the root namespace.
	if err := l.ip(s.NS, "link", "add", leg.Uplink, "type", "veth", "peer", "name", leg.Iface, "netns", r.NS); err != nil {
		return err
	}
	for _, st := range []struct {
		ns   string
		args []string
	}{
		{s.NS, []string{"link", "set", leg.Uplink, "master", s.Bridge, "up"}},
		// Off the bridge first, so the address is never on two
		// interfaces of one L2 segment at once.
		{s.NS, []string{"addr", "del", leg.Address.String(), "dev", s.Bridge}},
		{r.NS, []string{"addr", "add", leg.Address.String(), "dev", leg.Iface}},
		{r.NS, []string{"link", "set", leg.Iface, "up"}},
	} {
		if err := l.ip(st.ns, st.args...); err != nil {
			return err
		}
	}
	// Hosts already on the segment may still map the gateway to the
	// bridge's MAC, which no longer answers for it; without this they
	// would black-hole traffic until the neighbour entry expires.
	for _, h := range l.Hosts() {
		if h.Segment != s {
			continue
		}
		if err := l.ip(h.NS, "neigh", "flush", "to", leg.Address.Addr().String(), "dev", h.UnderlayIface); err != nil {
			return err
		}
	}
	if e := l.Etcd(); e != nil && e.Segment == s {
		if err := l.ip(e.NS, "neigh", "flush", "to", leg.Address.Addr().String(), "dev", e.Iface); err != nil {
			return err
		}
	}
	return nil
}

// Router returns the router with the given name.
func (l *Lab) Router(name string) (*Router, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range l.routers {
		if r.Name == name {
			return r, nil
		}
	}
	return nil, fmt.Errorf("no router %q in lab %s", name, l.Prefix)
}

// Routers returns the routers in creation order.
func (l *Lab) Routers() []*Router {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*Router(nil), l.routers...)
}

// Leg returns the router's leg on the named segment.
func (r *Router) Leg(segment string) (*RouterLeg, error) {
	for _, leg := range r.Legs {
		if leg.Segment.Name == segment {
			return leg, nil
		}
	}
	return nil, fmt.Errorf("router %s has no leg on segment %s", r.Name, segment)
}
