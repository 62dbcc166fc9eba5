package policy

import (
	"maps"
	"net/netip"
	"slices"

	"github.com/calyxnet/calyx/bpfmap"
	"github.com/calyxnet/calyx/model"
)

// ipcache is cx_ipcache's content kept up to date one prefix at a time.
// Each prefix's entry is merged from what claims it: the rule net it is
// (its nets), the endpoints with that address (their nets and selector
// atoms, united), this host (the Host flag), and a floating IP, which
// stands for its fixed IP and overrides the rest (policy sees traffic to
// it as traffic to the endpoint, as after the DNAT; the /32 shadows rule
// nets around the floating IP itself). A change re-merges only the
// prefixes its sources claimed before or claim now.
type ipcache struct {
	at    *atomTable
	hosts map[netip.Prefix]bool

	eps  map[string]epClaim  // by endpoint name
	fips map[string]fipClaim // by floating IP name
	// Who claims what, as short lists: most have one name.
	epsAt  map[netip.Prefix][]string
	fipsAt map[netip.Prefix][]string
	fipsOf map[string][]string // floating IPs by the endpoint they name

	entries map[netip.Prefix]ipEntry
	// keys counts the entries holding each atom set: the identities are
	// these sets and their fallbacks, renumbered when one appears or goes.
	keys  map[string]int
	atoms map[string][]int32
	ids   *identities
	out   map[netip.Prefix]bpfmap.IPCacheEntry
	// changed are the prefixes whose out entry changed since takeChanged.
	changed map[netip.Prefix]struct{}
}

type ipEntry struct {
	atoms []int32
	host  bool
}

type epClaim struct {
	ep    *model.WorkloadEndpoint
	addrs []addrAtoms
}

type addrAtoms struct {
	p     netip.Prefix
	atoms []int32
}

// atomsAt returns the atoms the claim gives p.
func (e epClaim) atomsAt(p netip.Prefix) []int32 {
	for _, a := range e.addrs {
		if a.p == p {
			return a.atoms
		}
	}
	return nil
}

type fipClaim struct {
	f     *model.FloatingIP
	ep    *model.WorkloadEndpoint // the endpoint the claim was made from, nil when none
	p     netip.Prefix            // invalid when it claims nothing
	atoms []int32
}

// newIPCache starts an empty cache for the atoms at and this host's
// addresses.
func newIPCache(at *atomTable, hostAddrs []netip.Addr) *ipcache {
	c := &ipcache{
		at: at, hosts: map[netip.Prefix]bool{},
		eps: map[string]epClaim{}, fips: map[string]fipClaim{},
		epsAt: map[netip.Prefix][]string{}, fipsAt: map[netip.Prefix][]string{},
		fipsOf:  map[string][]string{},
		entries: map[netip.Prefix]ipEntry{},
		keys:    map[string]int{}, atoms: map[string][]int32{},
		out: map[netip.Prefix]bpfmap.IPCacheEntry{}, changed: map[netip.Prefix]struct{}{},
	}
	for _, a := range hostAddrs {
		c.hosts[hostPrefix(a)] = true
	}
	return c
}

// sameBasis says whether c was built for the atoms at and hostAddrs.
func (c *ipcache) sameBasis(at *atomTable, hostAddrs []netip.Addr) bool {
	if c == nil || !slices.Equal(c.at.names, at.names) {
		return false
	}
	hosts := map[netip.Prefix]bool{}
	for _, a := range hostAddrs {
		hosts[hostPrefix(a)] = true
	}
	return maps.Equal(hosts, c.hosts)
}

// update brings the cache to snapshot s, where the endpoints named eps
// and the floating IPs named fips may have changed (been added, replaced or
// removed) since the last update, and returns the identities. Endpoints
// match selector atoms as selAtoms says. The first update of a cache adds
// the rule nets and host addresses too, and must name every endpoint and
// floating IP.
func (c *ipcache) update(s *model.Snapshot, eps, fips []string, selAtoms func(*model.WorkloadEndpoint) []int32) *identities {
	dirty := map[netip.Prefix]bool{}
	if c.ids == nil {
		for _, n := range c.at.names {
			if p, ok := cutNet(n); ok {
				dirty[p] = true
			}
		}
		for p := range c.hosts {
			dirty[p] = true
		}
	}
	reclaim := map[string]bool{}
	for _, f := range fips {
		reclaim[f] = true
	}
	for _, name := range eps {
		c.dropEndpoint(name, dirty)
		for _, f := range c.fipsOf[name] {
			reclaim[f] = true // its fixed IP or atoms may have changed
		}
		ep := s.Endpoints[name]
		if ep == nil {
			continue
		}
		claim := epClaim{ep: ep}
		for _, n := range ep.Spec.IPNetworks {
			hp := hostPrefix(n.Addr())
			atoms := union(c.at.nets.containing(hp), selAtoms(ep))
			if i := slices.IndexFunc(claim.addrs, func(a addrAtoms) bool { return a.p == hp }); i >= 0 {
				claim.addrs[i].atoms = union(claim.addrs[i].atoms, atoms)
				continue
			}
			claim.addrs = append(claim.addrs, addrAtoms{hp, atoms})
			addTo(c.epsAt, hp, name)
			dirty[hp] = true
		}
		c.eps[name] = claim
	}
	for name := range reclaim {
		c.dropFloatingIP(name, dirty)
		f := s.FloatingIPs[name]
		if f == nil {
			continue
		}
		claim := fipClaim{f: f}
		addTo(c.fipsOf, f.Spec.Endpoint, name)
		fixed, ok := s.FixedIP(f)
		ep := s.Endpoints[f.Spec.Endpoint]
		if ok && ep != nil && f.Spec.IP.IsValid() {
			claim.ep, claim.p = ep, hostPrefix(f.Spec.IP)
			claim.atoms = union(c.at.nets.containing(hostPrefix(fixed)), selAtoms(ep))
			addTo(c.fipsAt, claim.p, name)
			dirty[claim.p] = true
		}
		c.fips[name] = claim
	}

	// Merge the dirty prefixes; the identities change when an atom set
	// appears or goes.
	changed := c.ids == nil
	for p := range dirty {
		old, had := c.entries[p]
		e, ok := c.merge(p)
		if had {
			changed = c.unref(old.atoms) || changed
			delete(c.entries, p)
		}
		if ok {
			c.entries[p] = e
			changed = c.ref(e.atoms) || changed
		}
	}
	if changed {
		ids := newIdentities(c.at, c.atoms)
		renumbered := c.ids == nil
		if !renumbered {
			for k, id := range c.ids.byKey {
				if n, ok := ids.byKey[k]; ok && n.num != id.num {
					renumbered = true
					break
				}
			}
		}
		c.ids = ids
		if renumbered {
			for p := range c.out {
				c.changed[p] = struct{}{}
			}
			clear(c.out)
			for p := range c.entries {
				c.emit(p)
			}
			return c.ids
		}
	}
	for p := range dirty {
		c.emit(p)
	}
	return c.ids
}

func cutNet(atom string) (netip.Prefix, bool) {
	if len(atom) < 4 || atom[:4] != "net:" {
		return netip.Prefix{}, false
	}
	return netip.MustParsePrefix(atom[4:]), true
}

// addTo adds name to k's list in m.
func addTo[K comparable](m map[K][]string, k K, name string) {
	if !slices.Contains(m[k], name) {
		m[k] = append(m[k], name)
	}
}

// removeFrom removes name from k's list in m.
func removeFrom[K comparable](m map[K][]string, k K, name string) {
	l := slices.DeleteFunc(m[k], func(n string) bool { return n == name })
	if len(l) == 0 {
		delete(m, k)
	} else {
		m[k] = l
	}
}

func (c *ipcache) dropEndpoint(name string, dirty map[netip.Prefix]bool) {
	old, ok := c.eps[name]
	if !ok {
		return
	}
	for _, a := range old.addrs {
		removeFrom(c.epsAt, a.p, name)
		dirty[a.p] = true
	}
	delete(c.eps, name)
}

func (c *ipcache) dropFloatingIP(name string, dirty map[netip.Prefix]bool) {
	old, ok := c.fips[name]
	if !ok {
		return
	}
	removeFrom(c.fipsOf, old.f.Spec.Endpoint, name)
	if old.p.IsValid() {
		removeFrom(c.fipsAt, old.p, name)
		dirty[old.p] = true
	}
	delete(c.fips, name)
}

// merge computes p's entry from what claims it; false when nothing does.
func (c *ipcache) merge(p netip.Prefix) (ipEntry, bool) {
	if names := c.fipsAt[p]; len(names) > 0 {
		// Of two floating IPs with one address (a model written behind
		// calyxctl's back), the last by name wins.
		last := slices.Max(names)
		return ipEntry{atoms: c.fips[last].atoms}, true
	}
	var e ipEntry
	found := false
	if _, ok := c.at.index["net:"+p.String()]; ok {
		e.atoms, found = c.at.nets.containing(p), true
	}
	for _, n := range c.epsAt[p] {
		e.atoms, found = union(e.atoms, c.eps[n].atomsAt(p)), true
	}
	if c.hosts[p] {
		if !found {
			e.atoms = c.at.nets.containing(p)
		}
		e.host, found = true, true
	}
	return e, found
}

// ref counts one more entry with atoms; true when the set is new.
func (c *ipcache) ref(atoms []int32) bool {
	if len(atoms) == 0 {
		return false
	}
	k := atomsKey(atoms)
	c.keys[k]++
	if c.keys[k] == 1 {
		c.atoms[k] = atoms
		return true
	}
	return false
}

// unref counts one entry fewer with atoms; true when the set is gone.
func (c *ipcache) unref(atoms []int32) bool {
	if len(atoms) == 0 {
		return false
	}
	k := atomsKey(atoms)
	c.keys[k]--
	if c.keys[k] == 0 {
		delete(c.keys, k)
		delete(c.atoms, k)
		return true
	}
	return false
}

// emit writes p's cx_ipcache entry, or removes it. Identity 0 is what a
// miss gives, so an entry without atoms is needed only for this host's
// addresses, or to shadow a rule net around it (a floating IP whose
// endpoint has no atoms).
func (c *ipcache) emit(p netip.Prefix) {
	e, ok := c.entries[p]
	if !ok || len(e.atoms) == 0 && !e.host && len(c.at.nets.containing(p)) == 0 {
		if _, ok := c.out[p]; ok {
			delete(c.out, p)
			c.changed[p] = struct{}{}
		}
		return
	}
	v := bpfmap.IPCacheEntry{Identity: c.ids.num(e.atoms), NetIdentity: c.ids.num(c.ids.fallbackAtoms(e.atoms)), Host: e.host}
	if old, ok := c.out[p]; !ok || old != v {
		c.out[p] = v
		c.changed[p] = struct{}{}
	}
}

// takeChanged returns the prefixes changed since the last call.
func (c *ipcache) takeChanged() map[netip.Prefix]struct{} {
	ch := c.changed
	c.changed = map[netip.Prefix]struct{}{}
	return ch
}
