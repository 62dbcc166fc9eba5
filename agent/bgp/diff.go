package bgp

import (
	"net/netip"
	"slices"
)

// peerDiff is what SetPeers changes in GoBGP.
type peerDiff struct {
	add, update []Peer
	del         []netip.Addr
}

// diffPeers compares the peers configured now with the wanted set (one per address,
// the last one winning). A peer whose settings changed is updated in place, except
// when the change needs a new session anyway (ASN, password, passive, source
// address, multihop TTL, the families negotiated): then it is deleted and added again. Lists are sorted by
// address.
func diffPeers(have map[netip.Addr]Peer, want []Peer) peerDiff {
	w := map[netip.Addr]Peer{}
	for _, p := range want {
		w[p.Address] = p
	}
	var d peerDiff
	for a, p := range w {
		old, ok := have[a]
		switch {
		case !ok:
			d.add = append(d.add, p)
		case old == p:
		case old.ASN != p.ASN || old.Password != p.Password || old.Passive != p.Passive || old.LocalAddress != p.LocalAddress ||
			old.Multihop != p.Multihop || old.IPv6Unicast != p.IPv6Unicast:
			d.del = append(d.del, a)
			d.add = append(d.add, p)
		default:
			d.update = append(d.update, p)
		}
	}
	for a := range have {
		if _, ok := w[a]; !ok {
			d.del = append(d.del, a)
		}
	}
	byAddr := func(a, b Peer) int { return a.Address.Compare(b.Address) }
	slices.SortFunc(d.add, byAddr)
	slices.SortFunc(d.update, byAddr)
	slices.SortFunc(d.del, func(a, b netip.Addr) int { return a.Compare(b) })
	return d
}

// diffAdverts compares the advertised paths with the wanted set (one per prefix, the
// last one winning): add holds new paths and changed ones (a new path for a prefix
// replaces the old one, with no withdrawal in between), del the prefixes to withdraw.
func diffAdverts(have map[netip.Prefix]Advertisement, want []Advertisement) (add []Advertisement, del []Advertisement) {
	w := map[netip.Prefix]Advertisement{}
	for _, a := range want {
		a.Prefix = a.Prefix.Masked()
		w[a.Prefix] = a
	}
	for p, a := range w {
		if old, ok := have[p]; !ok || !sameAdvert(old, a) {
			add = append(add, a)
		}
	}
	for p, a := range have {
		if _, ok := w[p]; !ok {
			del = append(del, a)
		}
	}
	by := func(a, b Advertisement) int { return comparePrefix(a.Prefix, b.Prefix) }
	slices.SortFunc(add, by)
	slices.SortFunc(del, by)
	return add, del
}

func sameAdvert(a, b Advertisement) bool {
	return a.Prefix == b.Prefix && a.NextHop == b.NextHop && slices.Equal(a.Communities, b.Communities) &&
		slices.Equal(a.LargeCommunities, b.LargeCommunities)
}
