// Package host holds what the agent knows and wants of the host's own
// network: its interfaces and the routes the agent keeps in its FIB. calc
// computes them (purely), kernel reads and writes them (netlink); neither
// depends on the other.
package host

import (
	"net/netip"

	"github.com/calyxnet/calyx/bpfmap"
)

// Interface is what the host knows of one of its network interfaces.
type Interface struct {
	Name    string
	Ifindex int
	MAC     bpfmap.MAC
	MTU     int
	// Kind decides how packets are delivered into a workload behind it.
	Kind bpfmap.IfaceKind
	// Loopback is set on lo (and any other loopback device).
	Loopback bool
	// Addrs are the host's own addresses on it, link-local ones aside.
	Addrs []netip.Addr
}

// Route is a route the agent keeps in the host's FIB: /32 (/128)
// routes to local workloads, so the host's own stack can reach them, and,
// only where no kernel route covers a pool, one route for the whole pool
// towards the underlay (Gateway set), so the host's own packets reach the
// underlay egress program that routes them in BPF.
type Route struct {
	Dst     netip.Prefix
	Ifindex int
	Gateway netip.Addr // zero: a link-scope route to Ifindex
	// Metric is the route's priority; routes learned over BGP use
	// calc.BGPRouteMetric so that the host's own routes to the same prefix win
	// and are never replaced.
	Metric int
}

// LocalRoute is an address the host answers to on interface Ifindex
// without holding it (a local-table route): a subnet's gateway IP (on lo),
// the workloads' IPv6 gateway fe80::1 or the metadata service's
// fe80::a9fe:a9fe on a workload interface.
type LocalRoute struct {
	Addr    netip.Addr
	Ifindex int
}

// UnderlayGateway is the next hop of the agent's pool routes. It is no real
// router: the agent pins its neighbour entry to the underlay's own MAC, and
// calyx_to_underlay rewrites both MACs for the real next hop.
var UnderlayGateway = netip.MustParseAddr("169.254.1.1")
