// Package kernel is the agent's side of the host's own network stack:
// the interface inventory (netlink), the /32 routes to local workloads and
// the sysctls the dataplane relies on.
package kernel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/calyxnet/calyx/agent/host"
	"github.com/calyxnet/calyx/agent/undo"
	"github.com/calyxnet/calyx/bpfmap"
)

// RouteProtocol tags the kernel routes calyx owns, so a restarted agent
// finds (and prunes) its own routes and never touches anyone else's.
const RouteProtocol = netlink.RouteProtocol(202)

// ForwardingSysctls are the sysctls routing through the host needs:
// bpf_fib_lookup answers FWD_DISABLED without them.
var ForwardingSysctls = []string{"/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"}

// EnableForwarding sets ForwardingSysctls, recording in ledger (nil: none)
// what each was before.
func EnableForwarding(ledger *undo.Ledger) error {
	for _, p := range ForwardingSysctls {
		if _, err := undo.SetSysctl(ledger, p, "1"); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("enable forwarding (%s): %w", filepath.Base(filepath.Dir(p)), err)
		}
	}
	return nil
}

// reservedPortsPath is the sysctl that keeps ports from the host's own
// ephemeral (and port-0 bind) choices.
const reservedPortsPath = "/proc/sys/net/ipv4/ip_local_reserved_ports"

// ReserveNATPorts makes sure net.ipv4.ip_local_reserved_ports holds the
// ports [lo, hi] natOutgoing translates to, so that the host's own
// connections never take a port a translated flow may use (their reply
// tuples would be one). Entries already there (the operator's) are kept;
// it reports whether it changed the sysctl, and records in ledger (nil:
// none) what it was before.
func ReserveNATPorts(ledger *undo.Ledger, lo, hi uint16) (bool, error) {
	b, err := os.ReadFile(reservedPortsPath)
	if err != nil {
		return false, fmt.Errorf("read %s: %w", reservedPortsPath, err)
	}
	cur := strings.TrimSpace(string(b))
	if portsCovered(cur, lo, hi) {
		return false, nil
	}
	next := fmt.Sprintf("%d-%d", lo, hi)
	if cur != "" {
		next = cur + "," + next
	}
	if _, err := undo.SetSysctl(ledger, reservedPortsPath, next); err != nil {
		return false, fmt.Errorf("write %s: %w", reservedPortsPath, err)
	}
	return true, nil
}

// portsCovered says whether the sysctl's list ("a-b,c,...") holds every
// port of [lo, hi] (in one entry: the agent writes one).
func portsCovered(list string, lo, hi uint16) bool {
	for _, e := range strings.Split(list, ",") {
		a, b, ok := strings.Cut(strings.TrimSpace(e), "-")
		if !ok {
			b = a
		}
		x, err1 := strconv.ParseUint(a, 10, 16)
		y, err2 := strconv.ParseUint(b, 10, 16)
		if err1 == nil && err2 == nil && x <= uint64(lo) && y >= uint64(hi) {
			return true
		}
	}
	return false
}

// Links lists the host's interfaces, each with its kind (how packets are
// delivered into a workload behind it) and whether it is a loopback or
// holds one of the host's own addresses (link-local ones aside): such an
// interface never becomes a workload's.
func Links() (map[string]host.Interface, error) {
	ls, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	as, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("list host addresses: %w", err)
	}
	addrs := make(map[int][]netip.Addr)
	for _, a := range as {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok || ip.Unmap().IsLinkLocalUnicast() {
			continue
		}
		addrs[a.LinkIndex] = append(addrs[a.LinkIndex], ip.Unmap())
	}
	out := make(map[string]host.Interface, len(ls))
	for _, l := range ls {
		a := l.Attrs()
		out[a.Name] = host.Interface{Name: a.Name, Ifindex: a.Index, MAC: bpfmap.MACFrom(a.HardwareAddr), MTU: a.MTU,
			Kind: linkKind(l), Loopback: a.Flags&net.FlagLoopback != 0, Addrs: addrs[a.Index]}
	}
	return out, nil
}

// linkKind says how a packet enters a workload behind l: bpf_redirect_peer
// works into a veth or netkit peer in another namespace only (into a peer
// in this one the kernel drops it); a tap and anything else take the packet
// at their egress.
func linkKind(l netlink.Link) bpfmap.IfaceKind {
	switch l.Type() {
	case "veth", "netkit":
		if l.Attrs().NetNsID < 0 {
			// The peer is in this namespace.
			return bpfmap.IfaceOther
		}
		if l.Type() == "netkit" {
			return bpfmap.IfaceNetkit
		}
		return bpfmap.IfaceVeth
	case "tuntap":
		if t, ok := l.(*netlink.Tuntap); ok && t.Mode == netlink.TUNTAP_MODE_TUN {
			return bpfmap.IfaceOther
		}
		return bpfmap.IfaceTap
	}
	return bpfmap.IfaceOther
}

// WatchLinks calls onChange (from its own goroutine) whenever an interface
// appears, changes or goes. It returns once the subscription is in place,
// so a caller that lists links afterwards misses no event. When the
// subscription fails later (the socket's buffer overflowed: ENOBUFS, events
// were lost), onError is told, the subscription is made again (retried
// every second until it is), and onChange is called once it is: the
// caller lists the links again, so nothing lost stays unseen.
func WatchLinks(ctx context.Context, onChange func(), onError func(error)) error {
	return watchLinks(ctx, subscribeLinks, onChange, onError, time.Second)
}

// linkSubscriber starts a subscription whose updates arrive on ch until it
// fails or done is closed; ch is closed when it ends.
type linkSubscriber func(ch chan netlink.LinkUpdate, done chan struct{}, onError func(error)) error

func subscribeLinks(ch chan netlink.LinkUpdate, done chan struct{}, onError func(error)) error {
	return netlink.LinkSubscribeWithOptions(ch, done, netlink.LinkSubscribeOptions{ErrorCallback: onError})
}

func watchLinks(ctx context.Context, subscribe linkSubscriber, onChange func(), onError func(error), retry time.Duration) error {
	start := func() (chan netlink.LinkUpdate, chan struct{}, error) {
		ch, done := make(chan netlink.LinkUpdate, 256), make(chan struct{})
		if err := subscribe(ch, done, onError); err != nil {
			return nil, nil, fmt.Errorf("subscribe to link updates: %w", err)
		}
		return ch, done, nil
	}
	ch, done, err := start()
	if err != nil {
		return err
	}
	go func() {
		for {
			select {
			case <-ctx.Done():
				close(done)
				return
			case _, ok := <-ch:
				if ok {
					onChange()
					continue
				}
			}
			// The subscription ended: make it again, then have the
			// caller look at every link.
			close(done)
			onError(errors.New("link updates subscription ended; subscribing again"))
			for {
				if ch, done, err = start(); err == nil {
					break
				}
				onError(err)
				select {
				case <-ctx.Done():
					return
				case <-time.After(retry):
				}
			}
			onChange()
		}
	}()
	return nil
}

// SetLinkUp brings an interface up or down. A workload's host side comes
// up only once its programs are attached, and goes down when they could
// not be: a workload must never reach anything unchecked.
func SetLinkUp(ifindex int, up bool) error {
	l, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		return fmt.Errorf("find ifindex %d: %w", ifindex, err)
	}
	if (l.Attrs().Flags&net.FlagUp != 0) == up {
		return nil
	}
	set, state := netlink.LinkSetDown, "down"
	if up {
		set, state = netlink.LinkSetUp, "up"
	}
	if err := set(l); err != nil {
		return fmt.Errorf("set %s %s: %w", l.Attrs().Name, state, err)
	}
	return nil
}

// PrepareWorkloadInterface sets the sysctls a workload interface needs:
// arp_announce=2, so that the host's ARP requests to the workload carry an
// address of its own and not the packet's source (a packet from 127.0.0.1,
// the metadata service, would make the workload drop the ARP as martian);
// and with localnet, route_localnet=1, so that packets DNAT'd to a loopback
// address (the metadata service) and their replies are routed here. What
// each was before goes to ledger (nil: nowhere).
func PrepareWorkloadInterface(ledger *undo.Ledger, ifname string, localnet bool) error {
	settings := map[string]string{"arp_announce": "2"}
	if localnet {
		settings["route_localnet"] = "1"
	}
	for key, val := range settings {
		p := filepath.Join("/proc/sys/net/ipv4/conf", ifname, key)
		if _, err := undo.SetSysctl(ledger, p, val); err != nil {
			return fmt.Errorf("%s on %s: %w", key, ifname, err)
		}
	}
	return nil
}

// ip6DefaultMetric is the metric the kernel gives an IPv6 route added
// with none (IP6_RT_PRIO_USER).
const ip6DefaultMetric = 1024

// SyncRoutes makes the kernel's calyx-owned routes equal to want: missing
// ones are added first, then stale ones removed. It returns how many it
// added and removed.
func SyncRoutes(want []host.Route) (added, removed int, err error) {
	type key struct {
		dst    netip.Prefix
		metric int
	}
	have := make(map[key]host.Route)
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rs, err := netlink.RouteListFiltered(fam, &netlink.Route{Protocol: RouteProtocol, Table: unix.RT_TABLE_MAIN},
			netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
		if err != nil {
			return 0, 0, fmt.Errorf("list calyx routes: %w", err)
		}
		for _, r := range rs {
			var dst netip.Prefix
			if r.Dst == nil {
				dst = netip.PrefixFrom(netip.IPv4Unspecified(), 0) // the default route
				if fam == netlink.FAMILY_V6 {
					dst = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
				}
			} else {
				p, ok := netip.AddrFromSlice(r.Dst.IP)
				if !ok {
					continue
				}
				ones, _ := r.Dst.Mask.Size()
				dst = netip.PrefixFrom(p.Unmap(), ones)
			}
			var gw netip.Addr
			if a, ok := netip.AddrFromSlice(r.Gw); ok {
				gw = a.Unmap()
			}
			have[key{dst, r.Priority}] = host.Route{Dst: dst, Ifindex: r.LinkIndex, Gateway: gw, Metric: r.Priority}
		}
	}
	// One route the kernel refuses does not keep the others out (nor
	// stale ones in): every failure is returned, after the rest is done.
	var errs []error
	wantSet := make(map[key]bool, len(want))
	for _, w := range want {
		if w.Metric == 0 && w.Dst.Addr().Is6() {
			// What the kernel makes of it, and lists: compared as 0,
			// the route would be stale at every sync after the first,
			// replaced and then deleted.
			w.Metric = ip6DefaultMetric
		}
		k := key{w.Dst, w.Metric}
		wantSet[k] = true
		if h, ok := have[k]; ok && h.Ifindex == w.Ifindex && h.Gateway == w.Gateway {
			continue
		}
		if w.Gateway == host.UnderlayGateway {
			if err := pinGatewayNeighbour(w.Ifindex, w.Gateway); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		r := routeFor(w)
		if err := netlink.RouteReplace(r); err != nil {
			errs = append(errs, fmt.Errorf("add route %s dev %d: %w", w.Dst, w.Ifindex, err))
			continue
		}
		added++
	}
	for k, h := range have {
		if wantSet[k] {
			continue
		}
		if err := netlink.RouteDel(routeFor(h)); err != nil &&
			!errors.Is(err, unix.ESRCH) && !errors.Is(err, unix.ENODEV) {
			errs = append(errs, fmt.Errorf("delete route %s: %w", k.dst, err))
			continue
		}
		removed++
	}
	return added, removed, errors.Join(errs...)
}

// ResolveGateway returns the interface and directly reachable gateway the
// kernel FIB uses towards nh: nh itself when it is on a connected network,
// else the router the FIB sends nh's packets to (one level of recursion, for
// a BGP next hop beyond a router, such as a multihop gateway's).
func ResolveGateway(nh netip.Addr) (ifindex int, gw netip.Addr, err error) {
	rs, err := netlink.RouteGet(nh.AsSlice())
	if err != nil {
		return 0, netip.Addr{}, fmt.Errorf("route to next hop %s: %w", nh, err)
	}
	if len(rs) == 0 {
		return 0, netip.Addr{}, fmt.Errorf("route to next hop %s: none", nh)
	}
	r := rs[0]
	if r.Type == unix.RTN_LOCAL {
		return 0, netip.Addr{}, fmt.Errorf("next hop %s is this host", nh)
	}
	gw = nh
	if a, ok := netip.AddrFromSlice(r.Gw); ok && a.IsValid() && !a.IsUnspecified() {
		gw = a.Unmap()
	}
	return r.LinkIndex, gw, nil
}

func routeFor(w host.Route) *netlink.Route {
	r := &netlink.Route{
		LinkIndex: w.Ifindex,
		Dst:       &net.IPNet{IP: w.Dst.Addr().AsSlice(), Mask: net.CIDRMask(w.Dst.Bits(), w.Dst.Addr().BitLen())},
		Scope:     netlink.SCOPE_LINK,
		Protocol:  RouteProtocol,
		Table:     unix.RT_TABLE_MAIN,
		Priority:  w.Metric,
	}
	if w.Gateway.IsValid() {
		r.Scope = netlink.SCOPE_UNIVERSE
		r.Gw = w.Gateway.AsSlice()
		r.Flags = int(netlink.FLAG_ONLINK)
	}
	return r
}

// SyncLocalRoutes makes the kernel's calyx-owned routes of the local table
// equal to want: addresses the host answers to without holding them on any
// interface (a subnet's gateway IP, which stands for the host on every
// host; the workloads' IPv6 gateway fe80::1 and the metadata service's
// fe80::a9fe:a9fe on each workload interface).
// Missing ones are added first, then stale ones removed. It returns how many
// it added and removed, and every route it could not add or remove.
func SyncLocalRoutes(want []host.LocalRoute) (added, removed int, err error) {
	have := make(map[host.LocalRoute]bool)
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rs, err := netlink.RouteListFiltered(fam, &netlink.Route{Protocol: RouteProtocol, Table: unix.RT_TABLE_LOCAL},
			netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
		if err != nil {
			return 0, 0, fmt.Errorf("list calyx local routes: %w", err)
		}
		for _, r := range rs {
			if r.Dst == nil {
				continue
			}
			if a, ok := netip.AddrFromSlice(r.Dst.IP); ok {
				have[host.LocalRoute{Addr: a.Unmap(), Ifindex: r.LinkIndex}] = true
			}
		}
	}
	// One interface refusing a route (IPv6 disabled on it, say) costs
	// that route only: the others are still written.
	var errs []error
	wantSet := make(map[host.LocalRoute]bool, len(want))
	for _, w := range want {
		wantSet[w] = true
		if have[w] {
			continue
		}
		if err := addLocalRoute(w); err != nil {
			errs = append(errs, fmt.Errorf("add local route %s dev %d: %w", w.Addr, w.Ifindex, err))
			continue
		}
		added++
	}
	for h := range have {
		if wantSet[h] {
			continue
		}
		if err := netlink.RouteDel(localRouteFor(h)); err != nil && !errors.Is(err, unix.ESRCH) && !errors.Is(err, unix.ENODEV) {
			errs = append(errs, fmt.Errorf("delete local route %s dev %d: %w", h.Addr, h.Ifindex, err))
			continue
		}
		removed++
	}
	return added, removed, errors.Join(errs...)
}

// addLocalRoute adds one local route. An IPv6 one is appended: IPv6 takes
// a replace for the route to the same address at the same metric on any
// interface, so fe80::1 on a second workload interface would take it from
// the first (and the next sync back, by turns). IPv4 ones (on lo, one per
// address) are replaced, which takes over one that is there already.
func addLocalRoute(w host.LocalRoute) error {
	if w.Addr.Is4() {
		return netlink.RouteReplace(localRouteFor(w))
	}
	err := netlink.RouteAppend(localRouteFor(w))
	if errors.Is(err, unix.EEXIST) {
		// The same route of another protocol: the host answers anyway.
		return nil
	}
	return err
}

func localRouteFor(w host.LocalRoute) *netlink.Route {
	bits := w.Addr.BitLen()
	return &netlink.Route{
		LinkIndex: w.Ifindex,
		Dst:       &net.IPNet{IP: w.Addr.AsSlice(), Mask: net.CIDRMask(bits, bits)},
		Scope:     netlink.SCOPE_HOST,
		Type:      unix.RTN_LOCAL,
		Protocol:  RouteProtocol,
		Table:     unix.RT_TABLE_LOCAL,
	}
}

// pinGatewayNeighbour makes gw resolve to the interface's own MAC, so the
// kernel hands packets routed via gw to the interface (and its egress
// program) at once instead of waiting for an ARP reply no one sends.
func pinGatewayNeighbour(ifindex int, gw netip.Addr) error {
	l, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		return fmt.Errorf("interface %d: %w", ifindex, err)
	}
	n := &netlink.Neigh{LinkIndex: ifindex, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT,
		IP: gw.AsSlice(), HardwareAddr: l.Attrs().HardwareAddr}
	if err := netlink.NeighSet(n); err != nil {
		return fmt.Errorf("pin neighbour %s on %s: %w", gw, l.Attrs().Name, err)
	}
	return nil
}

// UncoveredPools returns the pools that no kernel route other than calyx's
// own covers: the host's own packets to them would find no way out.
func UncoveredPools(pools []netip.Prefix) ([]netip.Prefix, error) {
	rs, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	var out []netip.Prefix
	for _, p := range pools {
		if !p.Addr().Is4() {
			continue
		}
		covered := false
		for _, r := range rs {
			if r.Protocol == RouteProtocol || r.Type != unix.RTN_UNICAST {
				continue
			}
			if r.Dst == nil {
				covered = true // the default route
				break
			}
			a, ok := netip.AddrFromSlice(r.Dst.IP)
			ones, _ := r.Dst.Mask.Size()
			if ok && ones <= p.Bits() && netip.PrefixFrom(a.Unmap(), ones).Contains(p.Addr()) {
				covered = true
				break
			}
		}
		if !covered {
			out = append(out, p)
		}
	}
	return out, nil
}

// UnderlayAddress returns the first global IPv4 address (with prefix) of
// the named interface, or of the default route's interface when name is "".
func UnderlayAddress(name string) (string, netip.Prefix, error) {
	var l netlink.Link
	var err error
	if name == "" {
		name, err = defaultRouteInterface()
		if err != nil {
			return "", netip.Prefix{}, err
		}
	}
	l, err = netlink.LinkByName(name)
	if err != nil {
		return name, netip.Prefix{}, fmt.Errorf("underlay interface %s: %w", name, err)
	}
	addrs, err := netlink.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		return name, netip.Prefix{}, fmt.Errorf("addresses of %s: %w", name, err)
	}
	for _, a := range addrs {
		if a.Scope != unix.RT_SCOPE_UNIVERSE {
			continue
		}
		ip, ok := netip.AddrFromSlice(a.IP.To4())
		if !ok {
			continue
		}
		ones, _ := a.Mask.Size()
		return name, netip.PrefixFrom(ip, ones), nil
	}
	return name, netip.Prefix{}, fmt.Errorf("underlay interface %s has no global IPv4 address", name)
}

func defaultRouteInterface() (string, error) {
	rs, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return "", fmt.Errorf("list routes: %w", err)
	}
	for _, r := range rs {
		if r.Dst == nil || r.Dst.IP.IsUnspecified() {
			if l, err := netlink.LinkByIndex(r.LinkIndex); err == nil {
				return l.Attrs().Name, nil
			}
		}
	}
	return "", errors.New("no default route: pass --underlay")
}

// HostAddrs lists the host's own addresses on every interface, IPv6
// link-local ones aside: the addresses a workload reaches its host by.
func HostAddrs() ([]netip.Addr, error) {
	as, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("list host addresses: %w", err)
	}
	var out []netip.Addr
	for _, a := range as {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		if ip.IsLinkLocalUnicast() && ip.Is6() {
			continue
		}
		if !slices.Contains(out, ip) {
			out = append(out, ip)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out, nil
}

// IsVeth says whether the interface is a veth (the lab's underlays):
// an XDP program there would cost its peer GRO and TSO.
func IsVeth(name string) (bool, error) {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return false, fmt.Errorf("look up %s: %w", name, err)
	}
	return l.Type() == "veth", nil
}
