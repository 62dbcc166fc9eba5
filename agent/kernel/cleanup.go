package kernel

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/calyxnet/calyx/agent/host"
)

// RemoveOwnRoutes deletes every route tagged RouteProtocol, in every table
// and both families (block, workload and BGP-learned routes; the local
// routes the host answers to): all the routes calyx made, and no other.
// It carries on past a failure and returns them all with the count.
func RemoveOwnRoutes() (int, error) {
	n := 0
	var errs []error
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rs, err := netlink.RouteListFiltered(fam, &netlink.Route{Protocol: RouteProtocol, Table: unix.RT_TABLE_UNSPEC},
			netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
		if err != nil {
			errs = append(errs, fmt.Errorf("list calyx routes: %w", err))
			continue
		}
		for i := range rs {
			if err := netlink.RouteDel(&rs[i]); err != nil && !errors.Is(err, unix.ESRCH) {
				errs = append(errs, fmt.Errorf("delete route %s table %d: %w", rs[i].Dst, rs[i].Table, err))
				continue
			}
			n++
		}
	}
	return n, errors.Join(errs...)
}

// RemoveGatewayNeighbours deletes the permanent neighbour entries
// pinGatewayNeighbour made: host.UnderlayGateway at the interface's own
// MAC. An operator's entry for that address (another MAC) stays.
func RemoveGatewayNeighbours() (int, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return 0, fmt.Errorf("list interfaces: %w", err)
	}
	n := 0
	var errs []error
	for _, l := range links {
		ns, err := netlink.NeighList(l.Attrs().Index, netlink.FAMILY_V4)
		if err != nil {
			errs = append(errs, fmt.Errorf("list neighbours of %s: %w", l.Attrs().Name, err))
			continue
		}
		for i := range ns {
			a, _ := netip.AddrFromSlice(ns[i].IP)
			if a.Unmap() != host.UnderlayGateway || ns[i].State&netlink.NUD_PERMANENT == 0 ||
				!bytes.Equal(ns[i].HardwareAddr, l.Attrs().HardwareAddr) {
				continue
			}
			if err := netlink.NeighDel(&ns[i]); err != nil && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("delete neighbour %s on %s: %w", a, l.Attrs().Name, err))
				continue
			}
			n++
		}
	}
	return n, errors.Join(errs...)
}
