// Package calc turns a model snapshot into the full desired content of every
// calyx map. It is a pure function: no syscalls, no clock, no globals, so
// start-up, resync and each change go through the same tested code.
package calc

import (
	"hash/fnv"
	"net/netip"
	"sort"

	"github.com/calyxnet/calyx/maps"
	"github.com/calyxnet/calyx/model"
)

// Interface is what the host knows of one of its network interfaces.
type Interface struct {
	Name    string
	Ifindex int
	MAC     maps.MAC
}

// Input is everything Compute needs.
type Input struct {
	Snapshot *model.Snapshot
	Node     string               // this agent's node name
	Links    map[string]Interface // the host's interfaces by name
}

// Attachment is an interface that must carry the workload programs.
type Attachment struct {
	Ifname   string
	Ifindex  int
	Endpoint string
}

// KernelRoute is a route the agent keeps in the host's FIB: only /32 (/128)
// routes to local workloads, so the host's own stack can reach them.
type KernelRoute struct {
	Dst     netip.Prefix
	Ifindex int
}

// Desired is the full content the dataplane should have.
type Desired struct {
	Ifaces       map[uint32]maps.Iface
	Routes       map[netip.Prefix]maps.Route
	Attach       map[uint32]Attachment // by ifindex
	KernelRoutes []KernelRoute         // sorted by Dst
	// Pending lists local endpoints whose interface does not exist yet;
	// they are programmed as soon as it appears.
	Pending []string
}

// EndpointID is the numeric identity of an endpoint in the maps. It is a
// hash of the name: stable across restarts and hosts without coordination.
func EndpointID(name string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(name))
	return h.Sum32()
}

// Compute derives the desired dataplane state.
func Compute(in Input) *Desired {
	d := &Desired{
		Ifaces: make(map[uint32]maps.Iface),
		Routes: make(map[netip.Prefix]maps.Route),
		Attach: make(map[uint32]Attachment),
	}
	s := in.Snapshot
	if s == nil {
		return d
	}

	if n, ok := s.Nodes[in.Node]; ok && n.Spec.IPv4Address.IsValid() {
		d.Routes[netip.PrefixFrom(n.Spec.IPv4Address.Addr(), 32)] = maps.Route{Type: maps.RouteHost}
	}

	for _, ep := range s.Endpoints {
		if ep.Spec.Node != in.Node {
			node, ok := s.Nodes[ep.Spec.Node]
			if !ok || !node.Spec.IPv4Address.IsValid() {
				continue // no underlay address to reach it by
			}
			for _, ipn := range ep.Spec.IPNetworks {
				d.Routes[ipn.Masked()] = maps.Route{Type: maps.RouteRemoteWorkload, NextHop: node.Spec.IPv4Address.Addr()}
			}
			continue
		}
		link, ok := in.Links[ep.Spec.Interface]
		if !ok || link.Ifindex <= 0 {
			d.Pending = append(d.Pending, ep.Metadata.Name)
			continue
		}
		id := EndpointID(ep.Metadata.Name)
		mac := maps.MACFrom(ep.Spec.MAC)
		idx := uint32(link.Ifindex)
		d.Ifaces[idx] = maps.Iface{
			Workload:   true,
			CheckMAC:   !mac.IsZero(),
			EndpointID: id,
			MAC:        mac,
			HostMAC:    link.MAC,
		}
		d.Attach[idx] = Attachment{Ifname: link.Name, Ifindex: link.Ifindex, Endpoint: ep.Metadata.Name}
		for _, ipn := range ep.Spec.IPNetworks {
			p := ipn.Masked()
			d.Routes[p] = maps.Route{Type: maps.RouteLocalWorkload, Ifindex: idx, MAC: mac, HostMAC: link.MAC}
			d.KernelRoutes = append(d.KernelRoutes, KernelRoute{Dst: p, Ifindex: link.Ifindex})
		}
	}
	sort.Slice(d.KernelRoutes, func(i, j int) bool {
		return d.KernelRoutes[i].Dst.String() < d.KernelRoutes[j].Dst.String()
	})
	sort.Strings(d.Pending)
	return d
}
