package bgp

import (
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/calyxnet/calyx/agent/bgpstatus"
)

// Pool is what the route computations need to know of an IP pool.
type Pool struct {
	CIDR netip.Prefix
	// DisableBGPExport: nothing inside the pool is ever advertised.
	DisableBGPExport bool
	// External: a floating-IP pool; only floating IPs actually assigned are advertised.
	External bool
}

// AdvertiseInput is one node's view for Advertise.
type AdvertiseInput struct {
	// Node is the node's IPv4 underlay address, the next hop of its IPv4 routes.
	Node netip.Addr
	// Node6 is the node's IPv6 underlay address, the next hop of its IPv6 routes;
	// when it is not valid the node advertises no IPv6 route.
	Node6 netip.Addr
	// Blocks are the node's IPAM blocks.
	Blocks []netip.Prefix
	// Endpoints are the addresses of the node's local endpoints (all of them:
	// those inside one of Blocks are covered by the block's route).
	Endpoints []netip.Addr
	// FloatingIPs are the floating IPs held by the node's local endpoints.
	FloatingIPs []netip.Addr
	Pools       []Pool
	// Communities attach communities to the routes inside a prefix
	// (BGPConfiguration's prefixAdvertisements).
	Communities []PrefixCommunities
}

// PrefixCommunities are communities for every route inside Prefix, each
// "aa:nn" (standard) or "aa:nn:mm" (large).
type PrefixCommunities struct {
	Prefix      netip.Prefix
	Communities []string
}

// Advertise returns what a node advertises, sorted by prefix, without duplicates: one
// route per block, a host route (/32, /128) per local endpoint address outside every
// block of the node, and a host route per floating IP held by a local endpoint; next
// hop the node's underlay address of the prefix's family. A prefix inside a pool with
// DisableBGPExport is never advertised; of an External pool only floating IPs are.
// The pool of a prefix is the longest pool that contains it; a prefix in no pool is
// advertised.
func Advertise(in AdvertiseInput) []Advertisement {
	out := map[netip.Prefix]Advertisement{}
	add := func(p netip.Prefix, floating bool) {
		p = p.Masked()
		pool, ok := poolOf(in.Pools, p)
		if ok && (pool.DisableBGPExport || (pool.External && !floating)) {
			return
		}
		nh := in.Node
		if p.Addr().Is6() {
			nh = in.Node6
		}
		if !nh.IsValid() || nh.Is4() != p.Addr().Is4() {
			return
		}
		ad := Advertisement{Prefix: p, NextHop: nh}
		for _, pc := range in.Communities {
			if pc.Prefix.Addr().Is4() == p.Addr().Is4() && pc.Prefix.Bits() <= p.Bits() && pc.Prefix.Contains(p.Addr()) {
				addCommunities(&ad, pc.Communities)
			}
		}
		out[p] = ad
	}
	for _, b := range in.Blocks {
		if b.IsValid() {
			add(b, false)
		}
	}
	for _, a := range in.Endpoints {
		if !a.IsValid() || inAny(in.Blocks, a) {
			continue
		}
		add(hostPrefix(a), false)
	}
	for _, a := range in.FloatingIPs {
		if a.IsValid() {
			add(hostPrefix(a), true)
		}
	}
	res := make([]Advertisement, 0, len(out))
	for _, a := range out {
		res = append(res, a)
	}
	slices.SortFunc(res, func(a, b Advertisement) int { return comparePrefix(a.Prefix, b.Prefix) })
	return res
}

// addCommunities adds cs to ad, once each; a string that is neither "aa:nn" nor
// "aa:nn:mm" of numbers in range (the model refuses those) is left out.
func addCommunities(ad *Advertisement, cs []string) {
	for _, c := range cs {
		parts := strings.Split(c, ":")
		var n [3]uint32
		ok := len(parts) == 2 || len(parts) == 3
		for i, p := range parts {
			if !ok {
				break
			}
			bits := 32
			if len(parts) == 2 {
				bits = 16
			}
			v, err := strconv.ParseUint(p, 10, bits)
			ok = err == nil
			n[i] = uint32(v)
		}
		switch {
		case !ok:
		case len(parts) == 2:
			if v := n[0]<<16 | n[1]; !slices.Contains(ad.Communities, v) {
				ad.Communities = append(ad.Communities, v)
			}
		case !slices.Contains(ad.LargeCommunities, n):
			ad.LargeCommunities = append(ad.LargeCommunities, n)
		}
	}
}

// FIBRoute is a learned route for the kernel FIB (the underlay's table).
type FIBRoute = bgpstatus.FIBRoute

// Disagreement is a workload route on which BGP and the datastore differ.
type Disagreement = bgpstatus.Disagreement

// SplitLearned splits routes learned by BGP. A route whose prefix lies inside some pool
// is a workload or floating-IP route: it is compared with expected, the datastore's view
// of the other nodes' routes (prefix and next hop), and every difference, in both
// directions, is returned as a Disagreement. A route outside every pool (a default, an
// external network from the gateway) is returned as a kernel-FIB candidate. Both lists
// are sorted by prefix. A prefix that only overlaps a pool (0.0.0.0/0, a supernet) is
// outside it.
func SplitLearned(learned []Route, pools []Pool, expected []Advertisement) (disagree []Disagreement, fib []FIBRoute) {
	exp := map[netip.Prefix]netip.Addr{}
	for _, e := range expected {
		exp[e.Prefix.Masked()] = e.NextHop
	}
	seen := map[netip.Prefix]bool{}
	for _, r := range learned {
		p := r.Prefix.Masked()
		if _, in := poolOf(pools, p); !in {
			fib = append(fib, FIBRoute{Prefix: p, NextHop: r.NextHop})
			continue
		}
		seen[p] = true
		if nh, ok := exp[p]; !ok || nh != r.NextHop {
			disagree = append(disagree, Disagreement{Prefix: p, Learned: r.NextHop, Peer: r.Peer, Expected: nh})
		}
	}
	for p, nh := range exp {
		if !seen[p] {
			disagree = append(disagree, Disagreement{Prefix: p, Expected: nh})
		}
	}
	slices.SortFunc(disagree, func(a, b Disagreement) int { return comparePrefix(a.Prefix, b.Prefix) })
	slices.SortFunc(fib, func(a, b FIBRoute) int { return comparePrefix(a.Prefix, b.Prefix) })
	return disagree, fib
}

// poolOf returns the longest pool containing the whole of p.
func poolOf(pools []Pool, p netip.Prefix) (Pool, bool) {
	var best Pool
	found := false
	for _, pl := range pools {
		if !pl.CIDR.IsValid() || pl.CIDR.Addr().Is4() != p.Addr().Is4() {
			continue
		}
		if pl.CIDR.Bits() <= p.Bits() && pl.CIDR.Contains(p.Addr()) {
			if !found || pl.CIDR.Bits() > best.CIDR.Bits() {
				best, found = pl, true
			}
		}
	}
	return best, found
}

func inAny(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func hostPrefix(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen())
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}
