package policy

import (
	"encoding/binary"
	"iter"
	"maps"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"github.com/calyxnet/calyx/bpfmap"
	"github.com/calyxnet/calyx/selector"
)

// An atom is one thing a rule can ask of a remote address: "is an endpoint
// that selector S matches" (sel:S, S canonical) or "is in net N" (net:N).
// Atoms are numbered in the order of their names, so a sorted list of atom
// numbers is also sorted by name, which the identity hash relies on.
type atomTable struct {
	names  []string
	index  map[string]int32
	selOf  []*selector.Selector // by atom; nil for nets
	selIDs []int32              // the selector atoms, ascending
	nets   netIndex
}

// netIndex finds the net atoms containing a prefix with one map lookup per
// distinct prefix length, not one test per net.
type netIndex [2][]netLen // by family: 0 IPv4, 1 IPv6

type netLen struct {
	bits int
	m    map[netip.Prefix]int32
}

func family(a netip.Addr) int {
	if a.Is4() {
		return 0
	}
	return 1
}

func (ix *netIndex) add(p netip.Prefix, atom int32) {
	lens := &ix[family(p.Addr())]
	i := slices.IndexFunc(*lens, func(l netLen) bool { return l.bits == p.Bits() })
	if i < 0 {
		*lens = append(*lens, netLen{bits: p.Bits(), m: map[netip.Prefix]int32{}})
		i = len(*lens) - 1
	}
	(*lens)[i].m[p] = atom
}

// containing returns the net atoms containing p (p itself included),
// ascending.
func (ix *netIndex) containing(p netip.Prefix) []int32 {
	var out []int32
	for _, l := range ix[family(p.Addr())] {
		if l.bits > p.Bits() {
			continue
		}
		if a, ok := l.m[netip.PrefixFrom(p.Addr(), l.bits).Masked()]; ok {
			out = append(out, a)
		}
	}
	slices.Sort(out)
	return out
}

// buildAtoms numbers the remote-side atoms of every rule and fills in the
// rules' atom indices.
func buildAtoms(rs *ruleSet, sels selectorCache) (*atomTable, error) {
	seen := map[string]bool{}
	var rules []*crule
	for _, p := range rs.policies {
		for d := range dirs {
			for _, r := range p.rules[d] {
				if r.never() {
					continue
				}
				rules = append(rules, r)
				for _, n := range r.atomNames() {
					seen[n] = true
				}
			}
		}
	}
	at := &atomTable{index: make(map[string]int32, len(seen))}
	for n := range seen {
		at.names = append(at.names, n)
	}
	slices.Sort(at.names)
	at.selOf = make([]*selector.Selector, len(at.names))
	for i, n := range at.names {
		at.index[n] = int32(i)
		if s, ok := strings.CutPrefix(n, "sel:"); ok {
			sel, err := sels.get(s) // the canonical form parses to the same selector
			if err != nil {
				return nil, err
			}
			at.selOf[i] = sel
			at.selIDs = append(at.selIDs, int32(i))
		} else {
			at.nets.add(netip.MustParsePrefix(strings.TrimPrefix(n, "net:")), int32(i))
		}
	}
	at.assign(rules)
	return at, nil
}

// assign fills in the atom indices of rules, whose atoms at must have.
func (at *atomTable) assign(rules []*crule) {
	look := func(n string) int32 {
		if n == "" {
			return -1
		}
		return at.index[n]
	}
	lookAll := func(ns []string) []int32 {
		var out []int32
		for _, n := range ns {
			out = append(out, at.index[n])
		}
		return out
	}
	for _, r := range rules {
		if r.never() {
			continue
		}
		r.sel, r.notSel = look(r.remSel), look(r.remNotSel)
		r.nets, r.notNets = lookAll(r.remNets), lookAll(r.remNotNets)
	}
}

func (r *crule) atomNames() []string {
	var out []string
	for _, n := range []string{r.remSel, r.remNotSel} {
		if n != "" {
			out = append(out, n)
		}
	}
	return append(append(out, r.remNets...), r.remNotNets...)
}

// tableAtoms returns the atoms the rules of a program ask about, ascending.
func tableAtoms(prog [][]*crule) []int32 {
	var out []int32
	for _, rules := range prog {
		for _, r := range rules {
			for _, a := range []int32{r.sel, r.notSel} {
				if a >= 0 {
					out = append(out, a)
				}
			}
			out = append(append(out, r.nets...), r.notNets...)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// matchingSelAtoms returns the selector atoms labels match, ascending.
func matchingSelAtoms(at *atomTable, labels map[string]string) []int32 {
	var atoms []int32
	for _, a := range at.selIDs {
		if at.selOf[a].Matches(labels) {
			atoms = append(atoms, a)
		}
	}
	return atoms
}

func labelKey(l map[string]string) string {
	keys := make([]string, 0, len(l))
	for k := range l {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(k)
		b.WriteByte(0)
		b.WriteString(l[k])
		b.WriteByte(0)
	}
	return b.String()
}

// identity is one distinct non-empty atom set that some address has, or
// that some address's lookup falls back to.
type identity struct {
	atoms []int32 // ascending
	num   bpfmap.Identity
	// fallback is the index in identities.list of the identity the
	// lookup falls back to when a table has no entries for this one (see
	// fallbackAtoms), -1 for none (identity 0).
	fallback int32
	// isFallback is set when it is some identity's fallback.
	isFallback bool
}

// identities is the identity universe of a snapshot.
type identities struct {
	byKey map[string]*identity // by atomsKey
	list  []*identity          // in number-assignment order
	// of lists, for each atom, the indices in list of the identities
	// holding it: the inverted index that finds a table's identities.
	of [][]int32
	// netBits is, by atom, the length of its net; -1 for a selector.
	netBits []int
	// names are the identities' names (their atoms' names, one per line),
	// sorted: equal names, equal universe.
	names []string
}

// fallbackAtoms returns the atoms of the identity the datapath looks up
// after a miss on an address's own (its cx_ipcache NetIdentity), nil for
// none: for an address with selector atoms, its nets alone; for one with
// nets alone (which, all holding the address, are nested), all but the
// longest. So an endpoint in a net that every table names needs entries
// only where selectors tell it apart, and a rule net inside such a net
// only where it is named itself.
func (ids *identities) fallbackAtoms(atoms []int32) []int32 {
	nets, longest := 0, int32(-1)
	for _, a := range atoms {
		if b := ids.netBits[a]; b >= 0 {
			nets++
			if longest < 0 || b > ids.netBits[longest] {
				longest = a
			}
		}
	}
	if nets == 0 || nets == 1 && len(atoms) == 1 {
		return nil
	}
	out := make([]int32, 0, nets)
	for _, a := range atoms {
		if ids.netBits[a] >= 0 && (nets < len(atoms) || a != longest) {
			out = append(out, a)
		}
	}
	return out
}

func atomsKey(atoms []int32) string {
	b := make([]byte, 4*len(atoms))
	for i, a := range atoms {
		binary.LittleEndian.PutUint32(b[4*i:], uint32(a))
	}
	return string(b)
}

func hostPrefix(a netip.Addr) netip.Prefix { return netip.PrefixFrom(a, a.BitLen()) }

// union returns the sorted union of two ascending atom lists.
func union(a, b []int32) []int32 {
	if len(a) == 0 {
		return b
	}
	if len(b) == 0 {
		return a
	}
	out := append(append(make([]int32, 0, len(a)+len(b)), a...), b...)
	slices.Sort(out)
	return slices.Compact(out)
}

// newIdentities numbers the identities of the atom sets in keys (by
// atomsKey) and of what they fall back to.
func newIdentities(at *atomTable, keys map[string][]int32) *identities {
	ids := &identities{byKey: map[string]*identity{}, of: make([][]int32, len(at.names)), netBits: make([]int, len(at.names))}
	for a, n := range at.names {
		ids.netBits[a] = -1
		if p, ok := strings.CutPrefix(n, "net:"); ok {
			ids.netBits[a] = netip.MustParsePrefix(p).Bits()
		}
	}
	// Number the identities: FNV-32a of their atoms' names, one per line.
	// What an entry's identity falls back to is an identity too, the
	// entry's NetIdentity, whether or not some prefix has exactly its
	// atoms.
	byName := map[string]*identity{}
	add := func(atoms []int32) {
		for len(atoms) > 0 {
			k := atomsKey(atoms)
			if ids.byKey[k] != nil {
				return
			}
			id := &identity{atoms: atoms, fallback: -1}
			ids.byKey[k] = id
			parts := make([]string, len(atoms))
			for i, a := range atoms {
				parts[i] = at.names[a]
			}
			byName[strings.Join(parts, "\n")] = id
			atoms = ids.fallbackAtoms(atoms)
		}
	}
	for _, atoms := range keys {
		add(atoms)
	}
	names := slices.Sorted(mapKeys(byName))
	ids.names = names
	nums := number(names, ^uint32(0), 1)
	for _, n := range names {
		id := byName[n]
		id.num = bpfmap.Identity(nums[n])
		for _, a := range id.atoms {
			ids.of[a] = append(ids.of[a], int32(len(ids.list)))
		}
		ids.list = append(ids.list, id)
	}
	index := make(map[*identity]int32, len(ids.list))
	for i, id := range ids.list {
		index[id] = int32(i)
	}
	for _, id := range ids.list {
		if fa := ids.fallbackAtoms(id.atoms); len(fa) > 0 {
			f := ids.byKey[atomsKey(fa)]
			id.fallback = index[f]
			f.isFallback = true
		}
	}
	return ids
}

// num is the number of the identity with atoms; 0 for none.
func (ids *identities) num(atoms []int32) bpfmap.Identity {
	if len(atoms) == 0 {
		return 0
	}
	return ids.byKey[atomsKey(atoms)].num
}

// mapKeys is the standard library's bpfmap.Keys, whose package name this
// package's maps import shadows.
func mapKeys[K comparable, V any](m map[K]V) iter.Seq[K] { return maps.Keys(m) }
