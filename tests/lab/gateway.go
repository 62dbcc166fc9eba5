package lab

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// The gateway's default names and addresses. 203.0.113.0/24 (TEST-NET-3)
// stands for the internet and 198.51.100.0/24 (TEST-NET-2) for the floating
// IPs; both exist only inside the lab's namespaces.
const (
	// GatewayName is the default gateway name (namespace <prefix>-gw).
	GatewayName = "gw"
	// InternetCIDR is the gateway's address on the internet side, with the
	// internet's prefix.
	InternetCIDR = "203.0.113.1/24"
	// ExternalClientName and ExternalClientIP are the client behind the
	// gateway.
	ExternalClientName = "client"
	ExternalClientIP   = "203.0.113.10"
	// ExternalServerName and ExternalServerIP are the server behind the
	// gateway.
	ExternalServerName = "server"
	ExternalServerIP   = "203.0.113.20"
	// ExternalPool is the name, and FloatingPool the CIDR, of the external
	// pool floating IPs come from (ExternalPoolYAML).
	ExternalPool = "floating"
	FloatingPool = "198.51.100.0/24"
	// ExternalIPv6 is the external network's IPv6 prefix (the seed's
	// external network), which the gateway announces by BGP when it speaks
	// IPv6 (FabricBGPOptions.IPv6).
	ExternalIPv6 = "2001:db8:a41:2::/64"
	// DemoFloatingIP is the floating IP the demo and "calyx-lab up" give wa.
	DemoFloatingIP = "198.51.100.10"
	// gatewayHost is the host part of the gateway's default address on its
	// segment: .254 of the segment's subnet.
	gatewayHost = 254
)

// Gateway is the data center's router: a namespace with one leg on an
// underlay segment and an "internet" side (a bridge) with external
// namespaces behind it. It forwards between the two and knows, besides its
// connected subnets, the other underlay segments (via the lab's router) and
// one /32 per floating IP routed with RouteFloatingIP. It has no route to
// the workload pool: workloads are reachable from outside only by their
// floating IPs.
//
// Hosts reach the internet through it with a specific route (their default
// route stays as it is): hosts on its segment via its address, hosts on other
// segments via their segment's router, which routes the internet to the
// gateway.
type Gateway struct {
	// Name is the gateway name; the namespace is <prefix>-<Name>.
	Name string
	// NS is the gateway namespace.
	NS string
	// Segment is the underlay segment the gateway's leg is plugged into.
	Segment *Segment
	// Address is the gateway's address on Segment, with the segment's
	// prefix (10.30.0.254/24 by default).
	Address netip.Prefix
	// Address6 is the gateway's IPv6 address on Segment once
	// AddGatewayIPv6 gave it one; invalid otherwise.
	Address6 netip.Prefix
	// Iface is the leg inside NS ("eth0").
	Iface string
	// Uplink is the segment-side end of the leg, a port of the segment's
	// bridge (<prefix>u<N>, numbered with the hosts' uplinks).
	Uplink string
	// Internet is the gateway's address on the internet side, with the
	// internet's prefix (203.0.113.1/24).
	Internet netip.Prefix
	// Bridge is the internet-side bridge inside NS that carries Internet.
	Bridge string
	// Client and Server are the external namespaces behind the gateway.
	Client, Server *External

	lab *Lab
	// fips records, per floating IP routed, the namespaces that carry a /32
	// for it (the gateway and maybe a router), so a move or removal takes
	// exactly those routes away.
	fips map[netip.Addr]fipRoute
}

// fipRoute is where a floating IP is routed.
type fipRoute struct {
	host string
	ns   []string
}

// External is a namespace on the gateway's internet side: one eth0 with a
// /24 of the internet and the default route via the gateway.
type External struct {
	// Name is the external's name; the namespace is <prefix>-<Name>.
	Name string
	// NS is the namespace.
	NS string
	// IP is the address on eth0.
	IP netip.Addr
	// Iface is the interface inside NS ("eth0").
	Iface string
	// Port is the gateway-side end of the veth, a port of the gateway's
	// internet bridge (<prefix>x<N>).
	Port string
}

// GatewayOptions configures AddGateway. The zero value gives the default
// layout: gw on the fabric segment (or the first segment) at .254, the
// internet 203.0.113.0/24 with the client at .10 and the server at .20.
type GatewayOptions struct {
	// Name is the gateway's name (default GatewayName).
	Name string
	// Segment names the segment the gateway's leg is on (default
	// FabricSegment when it exists, else the first segment).
	Segment string
	// Address is the gateway's address on the segment with the segment's
	// prefix (default: .254 of the segment's subnet).
	Address string
	// Internet is the gateway's internet-side address with prefix (default
	// InternetCIDR).
	Internet string
	// ClientIP and ServerIP are the external namespaces' addresses inside
	// Internet (defaults ExternalClientIP and ExternalServerIP).
	ClientIP, ServerIP string
}

// AddGateway creates the gateway with its client and server (see Gateway)
// and the routes that make the internet reachable from the underlay: on the
// gateway, one per other segment via the router between them; on every host
// and router, a route for the internet. Call it once the segments, routers
// and hosts exist; hosts added later get their internet route too. A lab has
// at most one gateway.
func (l *Lab) AddGateway(o GatewayOptions) (*Gateway, error) {
	if o.Name == "" {
		o.Name = GatewayName
	}
	if o.Internet == "" {
		o.Internet = InternetCIDR
	}
	if o.ClientIP == "" {
		o.ClientIP = ExternalClientIP
	}
	if o.ServerIP == "" {
		o.ServerIP = ExternalServerIP
	}
	seg, err := l.gatewaySegment(o.Segment)
	if err != nil {
		return nil, fmt.Errorf("gateway %s: %w", o.Name, err)
	}
	var addr netip.Prefix
	if o.Address == "" {
		a := seg.Gateway.Masked().Addr().As4()
		a[3] = gatewayHost
		addr = netip.PrefixFrom(netip.AddrFrom4(a), seg.Gateway.Bits())
	} else if addr, err = netip.ParsePrefix(o.Address); err != nil || !addr.Addr().Is4() {
		return nil, fmt.Errorf("gateway %s: invalid address %q: want an IPv4 address with prefix", o.Name, o.Address)
	}
	if addr.Bits() != seg.Gateway.Bits() || !seg.Gateway.Masked().Contains(addr.Addr()) {
		return nil, fmt.Errorf("gateway %s: %s is not an address of segment %s (%s)", o.Name, addr, seg.Name, seg.Gateway.Masked())
	}
	inet, err := netip.ParsePrefix(o.Internet)
	if err != nil || !inet.Addr().Is4() {
		return nil, fmt.Errorf("gateway %s: invalid internet address %q: want an IPv4 address with prefix", o.Name, o.Internet)
	}
	for _, s := range l.Segments() {
		if s.Gateway.Masked().Overlaps(inet.Masked()) {
			return nil, fmt.Errorf("gateway %s: internet %s overlaps segment %s", o.Name, inet.Masked(), s.Name)
		}
	}
	var extIPs []netip.Addr
	for _, s := range []string{o.ClientIP, o.ServerIP} {
		a, err := netip.ParseAddr(s)
		if err != nil || !a.Is4() || !inet.Masked().Contains(a) || a == inet.Addr() {
			return nil, fmt.Errorf("gateway %s: invalid external address %q: want an IPv4 address in %s other than the gateway's", o.Name, s, inet.Masked())
		}
		extIPs = append(extIPs, a)
	}
	if extIPs[0] == extIPs[1] {
		return nil, fmt.Errorf("gateway %s: client and server both at %s", o.Name, extIPs[0])
	}
	for _, n := range []string{o.Name, ExternalClientName, ExternalServerName} {
		if err := l.checkName(n); err != nil {
			return nil, fmt.Errorf("gateway %s: %w", o.Name, err)
		}
	}

	l.mu.Lock()
	if l.gateway != nil {
		l.mu.Unlock()
		return nil, fmt.Errorf("gateway %s: lab %s already has gateway %s", o.Name, l.Prefix, l.gateway.Name)
	}
	g := &Gateway{
		lab:      l,
		Name:     o.Name,
		NS:       l.NSName(o.Name),
		Segment:  seg,
		Address:  addr,
		Iface:    "eth0",
		Uplink:   l.Prefix + "u" + strconv.Itoa(l.nextUplink),
		Internet: inet,
		Bridge:   l.Prefix + "br",
		fips:     map[netip.Addr]fipRoute{},
	}
	l.nextUplink++
	for i, name := range []string{ExternalClientName, ExternalServerName} {
		e := &External{Name: name, NS: l.NSName(name), IP: extIPs[i], Iface: "eth0", Port: l.Prefix + "x" + strconv.Itoa(i+1)}
		if i == 0 {
			g.Client = e
		} else {
			g.Server = e
		}
	}
	// Registered before anything exists so the names stay reserved and
	// Close knows the namespaces even if building fails halfway (Reap
	// finds them by prefix anyway).
	l.gateway = g
	l.mu.Unlock()

	if err := l.buildGateway(g); err != nil {
		return nil, fmt.Errorf("gateway %s: %w", g.Name, err)
	}
	return g, nil
}

// AddGatewayIPv6 gives the gateway an IPv6 address (cidr, e.g.
// "2001:db8:a41:ff::254/64") on its leg beside the IPv4 one, without
// duplicate address detection, and records it in Address6.
func (l *Lab) AddGatewayIPv6(cidr string) error {
	g := l.Gateway()
	if g == nil {
		return fmt.Errorf("lab %s has no gateway (AddGateway)", l.Prefix)
	}
	p, err := netip.ParsePrefix(cidr)
	if err != nil || !p.Addr().Is6() || p.Addr().Is4In6() || p.Addr().IsLinkLocalUnicast() {
		return fmt.Errorf("gateway %s: invalid IPv6 address %q: want a global IPv6 address with prefix", g.Name, cidr)
	}
	if g.Address6.IsValid() {
		return fmt.Errorf("gateway %s: has IPv6 address %s already", g.Name, g.Address6)
	}
	l.logf("gateway %s: %s %s", g.Name, g.Iface, p)
	if err := l.ip(g.NS, "-6", "addr", "add", p.String(), "dev", g.Iface, "nodad"); err != nil {
		return fmt.Errorf("gateway %s: %w", g.Name, err)
	}
	l.mu.Lock()
	g.Address6 = p
	l.mu.Unlock()
	return nil
}

// gatewaySegment picks the segment the gateway is plugged into.
func (l *Lab) gatewaySegment(name string) (*Segment, error) {
	if name != "" {
		return l.Segment(name)
	}
	segs := l.Segments()
	if len(segs) == 0 {
		return nil, errors.New("the lab has no segment yet (add hosts or segments first)")
	}
	for _, s := range segs {
		if s.Name == FabricSegment {
			return s, nil
		}
	}
	return segs[0], nil
}

func (l *Lab) buildGateway(g *Gateway) error {
	s := g.Segment
	l.logf("gateway %s: namespace %s, %s %s on segment %s (bridge port %s), internet %s on %s",
		g.Name, g.NS, g.Iface, g.Address, s.Name, g.Uplink, g.Internet, g.Bridge)
	if err := l.ip("", "netns", "add", g.NS); err != nil {
		return err
	}
	if err := l.ip(g.NS, "link", "set", "lo", "up"); err != nil {
		return err
	}
	// Set explicitly, as on the router: a new namespace may or may not
	// inherit forwarding.
	if _, err := l.Exec(g.NS, "sysctl", "-qw", "net.ipv4.ip_forward=1"); err != nil {
		return fmt.Errorf("enable forwarding: %w", err)
	}
	if err := l.ip(s.NS, "link", "add", g.Uplink, "type", "veth", "peer", "name", g.Iface, "netns", g.NS); err != nil {
		return err
	}
	for _, st := range []struct {
		ns   string
		args []string
	}{
		{s.NS, []string{"link", "set", g.Uplink, "master", s.Bridge, "up"}},
		{g.NS, []string{"addr", "add", g.Address.String(), "dev", g.Iface}},
		{g.NS, []string{"link", "set", g.Iface, "up"}},
		{g.NS, []string{"link", "add", g.Bridge, "type", "bridge"}},
		{g.NS, []string{"addr", "add", g.Internet.String(), "dev", g.Bridge}},
		{g.NS, []string{"link", "set", g.Bridge, "up"}},
	} {
		if err := l.ip(st.ns, st.args...); err != nil {
			return err
		}
	}
	for _, e := range []*External{g.Client, g.Server} {
		if err := l.buildExternal(g, e); err != nil {
			return err
		}
	}
	// The gateway reaches the other underlay segments through the router
	// that has a leg on its own segment (the replies to natOutgoing
	// traffic of hosts there, and floating IPs routed to them).
	for _, other := range l.Segments() {
		if other == s {
			continue
		}
		via, err := l.routerBetween(s, other)
		if err != nil {
			l.logf("gateway %s: no route to segment %s: %v", g.Name, other.Name, err)
			continue
		}
		if err := l.ip(g.NS, "route", "add", other.Gateway.Masked().String(), "via", via.String()); err != nil {
			return err
		}
	}
	// Routers with a leg on the gateway's segment send the internet to it.
	for _, r := range l.Routers() {
		if _, err := r.Leg(s.Name); err != nil {
			continue
		}
		if err := l.ip(r.NS, "route", "add", g.Internet.Masked().String(), "via", g.Address.Addr().String()); err != nil {
			return err
		}
	}
	for _, h := range l.Hosts() {
		if err := l.gatewayRoute(g, h); err != nil {
			return err
		}
	}
	return nil
}

// buildExternal creates an external namespace behind the gateway.
func (l *Lab) buildExternal(g *Gateway, e *External) error {
	l.logf("external %s: namespace %s, %s %s/%d via %s (gateway port %s)", e.Name, e.NS, e.Iface, e.IP, g.Internet.Bits(), g.Internet.Addr(), e.Port)
	if err := l.ip("", "netns", "add", e.NS); err != nil {
		return err
	}
	if err := l.ip(g.NS, "link", "add", e.Port, "type", "veth", "peer", "name", e.Iface, "netns", e.NS); err != nil {
		return err
	}
	for _, st := range []struct {
		ns   string
		args []string
	}{
		{g.NS, []string{"link", "set", e.Port, "master", g.Bridge, "up"}},
		{e.NS, []string{"link", "set", "lo", "up"}},
		{e.NS, []string{"addr", "add", netip.PrefixFrom(e.IP, g.Internet.Bits()).String(), "dev", e.Iface}},
		{e.NS, []string{"link", "set", e.Iface, "up"}},
		{e.NS, []string{"route", "add", "default", "via", g.Internet.Addr().String(), "dev", e.Iface}},
	} {
		if err := l.ip(st.ns, st.args...); err != nil {
			return err
		}
	}
	return nil
}

// gatewayRoute gives host h a route for the gateway's internet: via the
// gateway when h is on its segment, else via h's segment gateway (a router
// with a leg on the gateway's segment). The host's default route is left
// alone.
func (l *Lab) gatewayRoute(g *Gateway, h *Host) error {
	via := g.Address.Addr()
	if h.Segment != g.Segment {
		if _, err := l.routerBetween(h.Segment, g.Segment); err != nil {
			l.logf("host %s: no route to the internet: %v", h.Name, err)
			return nil
		}
		via = h.Segment.Gateway.Addr()
	}
	return l.ip(h.NS, "route", "add", g.Internet.Masked().String(), "via", via.String(), "dev", h.UnderlayIface)
}

// routerBetween returns the address, on segment from, of a router that has
// a leg on both from and to.
func (l *Lab) routerBetween(from, to *Segment) (netip.Addr, error) {
	for _, r := range l.Routers() {
		a, errA := r.Leg(from.Name)
		_, errB := r.Leg(to.Name)
		if errA == nil && errB == nil {
			return a.Address.Addr(), nil
		}
	}
	return netip.Addr{}, fmt.Errorf("no router between segments %s and %s", from.Name, to.Name)
}

// Gateway returns the lab's gateway, or nil when it has none.
func (l *Lab) Gateway() *Gateway {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.gateway
}

// RouteFloatingIP makes the gateway send fip to host's underlay address: a
// /32 on the gateway via the host when it is on the gateway's segment, else
// via the router between the segments, which gets a /32 via the host too.
// A route the floating IP had before (to another host) is removed first, so
// calling it again moves the floating IP. It stands for the route the
// gateway learns by BGP (StartFabricBGP) in tests that are not about BGP.
func (l *Lab) RouteFloatingIP(fip string, host *Host) error {
	g := l.Gateway()
	if g == nil {
		return fmt.Errorf("route floating IP %s: lab %s has no gateway (AddGateway)", fip, l.Prefix)
	}
	a, err := netip.ParseAddr(fip)
	if err != nil || !a.Is4() {
		return fmt.Errorf("route floating IP: invalid address %q: want IPv4", fip)
	}
	if host == nil {
		return fmt.Errorf("route floating IP %s: no host given", a)
	}
	if err := l.UnrouteFloatingIP(fip); err != nil {
		return err
	}
	dst := netip.PrefixFrom(a, 32).String()
	rt := fipRoute{host: host.Name}
	if host.Segment == g.Segment {
		if err := l.ip(g.NS, "route", "replace", dst, "via", host.Underlay.Addr().String(), "dev", g.Iface); err != nil {
			return fmt.Errorf("route floating IP %s: %w", a, err)
		}
		rt.ns = []string{g.NS}
	} else {
		var router *Router
		var legHere *RouterLeg
		for _, r := range l.Routers() {
			lg, errA := r.Leg(g.Segment.Name)
			_, errB := r.Leg(host.Segment.Name)
			if errA == nil && errB == nil {
				router, legHere = r, lg
				break
			}
		}
		if router == nil {
			return fmt.Errorf("route floating IP %s: no router between the gateway's segment %s and %s's segment %s", a, g.Segment.Name, host.Name, host.Segment.Name)
		}
		if err := l.ip(router.NS, "route", "replace", dst, "via", host.Underlay.Addr().String()); err != nil {
			return fmt.Errorf("route floating IP %s: %w", a, err)
		}
		rt.ns = append(rt.ns, router.NS)
		// Record the router's route before the gateway's can fail, so an
		// error leaves nothing unrecorded.
		l.mu.Lock()
		g.fips[a] = rt
		l.mu.Unlock()
		if err := l.ip(g.NS, "route", "replace", dst, "via", legHere.Address.Addr().String(), "dev", g.Iface); err != nil {
			return fmt.Errorf("route floating IP %s: %w", a, err)
		}
		rt.ns = append(rt.ns, g.NS)
	}
	l.mu.Lock()
	g.fips[a] = rt
	l.mu.Unlock()
	l.logf("floating IP %s routed to %s (%s)", a, host.Name, host.Underlay.Addr())
	return nil
}

// UnrouteFloatingIP removes the routes RouteFloatingIP added for fip; it
// does nothing when there are none.
func (l *Lab) UnrouteFloatingIP(fip string) error {
	g := l.Gateway()
	if g == nil {
		return fmt.Errorf("unroute floating IP %s: lab %s has no gateway", fip, l.Prefix)
	}
	a, err := netip.ParseAddr(fip)
	if err != nil || !a.Is4() {
		return fmt.Errorf("unroute floating IP: invalid address %q: want IPv4", fip)
	}
	l.mu.Lock()
	rt, ok := g.fips[a]
	delete(g.fips, a)
	l.mu.Unlock()
	if !ok {
		return nil
	}
	var errs []error
	for _, ns := range rt.ns {
		if err := l.ip(ns, "route", "del", netip.PrefixFrom(a, 32).String()); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// FloatingIPHost returns the name of the host RouteFloatingIP sends fip to,
// or "".
func (g *Gateway) FloatingIPHost(fip netip.Addr) string {
	g.lab.mu.Lock()
	defer g.lab.mu.Unlock()
	return g.fips[fip].host
}

// Externals returns the client and the server.
func (g *Gateway) Externals() []*External { return []*External{g.Client, g.Server} }

// Describe is a few lines on the gateway and how to reach it, for
// "calyx-lab up" and the demo.
func (g *Gateway) Describe() string {
	var b strings.Builder
	fmt.Fprintf(&b, "  %-16s gateway %s: %s %s on %s (bridge port %s), internet %s; routes: the other segments via the router, floating IPs /32\n",
		g.NS, g.Name, g.Iface, g.Address, g.Segment.Name, g.Uplink, g.Internet)
	for _, e := range g.Externals() {
		fmt.Fprintf(&b, "  %-16s external %s: %s %s/%d, default via %s\n", e.NS, e.Name, e.Iface, e.IP, g.Internet.Bits(), g.Internet.Addr())
	}
	return b.String()
}
