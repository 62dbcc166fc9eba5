package policy

import (
	"math/bits"
	"slices"
	"strconv"

	"github.com/calyxnet/calyx/bpfmap"
	"github.com/calyxnet/calyx/model"
)

// verdict is a final decision for a packet.
type verdict struct {
	action    bpfmap.PolicyAction
	rule, log uint32
}

// value is what one (protocol, destination port) cell decides: a verdict,
// or, when sub is not "", a function of the source port (the encoding of
// its segments, which names its sub-table once sub-tables are numbered).
type value struct {
	v   verdict
	sub string
}

// seg is a run of ports lo..hi (inclusive) with one outcome.
type seg[V comparable] struct {
	lo, hi uint16
	val    V
}

// appendSeg appends lo..hi with val, merging it into the last segment when
// that one has the same value.
func appendSeg[V comparable](segs []seg[V], lo, hi uint16, val V) []seg[V] {
	if n := len(segs); n > 0 && segs[n-1].val == val {
		segs[n-1].hi = hi
		return segs
	}
	return append(segs, seg[V]{lo, hi, val})
}

// protoFn is the decision for one protocol, over its destination ports
// (type<<8 | code for ICMP).
type protoFn struct {
	proto uint8
	segs  []seg[value]
}

// decision is a table's decision function for one remote identity: other
// for every protocol not listed, protos for those that decide otherwise.
// Its form is canonical (segments merged, protocols equal to other left
// out), so two decisions are equal exactly when they decide every packet
// the same way.
type decision struct {
	other  verdict
	protos []protoFn
	ents   []entry // entries, once computed
}

func (a *decision) equal(b *decision) bool {
	return a.other == b.other && slices.EqualFunc(a.protos, b.protos, func(x, y protoFn) bool {
		return x.proto == y.proto && slices.Equal(x.segs, y.segs)
	})
}

// decider computes decisions for the tables of one direction.
type decider struct {
	dir  int
	subs map[string][]seg[verdict] // source-port functions by encoding, across all tables
	buf  []*crule                  // scratch for cell
}

// decide computes the decision for the rules whose remote side matched,
// in evaluation order.
func (dc *decider) decide(active []*crule) *decision {
	var anyProto []*crule
	var protos []uint8
	for _, r := range active {
		if r.protos == nil {
			anyProto = append(anyProto, r)
		} else {
			protos = append(protos, r.protos...)
		}
	}
	// Rules for any protocol have no port matches (ports and icmp both
	// restrict the protocol), so protocols no rule names are decided by
	// them alone, whatever the ports.
	d := &decision{other: firstMatch(anyProto, dc.dir, 0, 0)}
	other := value{v: d.other}
	slices.Sort(protos)
	var rules []*crule
	for _, p := range slices.Compact(protos) {
		rules = rules[:0]
		for _, r := range active {
			if r.hasProto(p) {
				rules = append(rules, r)
			}
		}
		segs := dc.portFn(rules)
		if len(segs) == 1 && segs[0].val == other {
			continue
		}
		d.protos = append(d.protos, protoFn{proto: p, segs: segs})
	}
	return d
}

// firstMatch walks the rules as the datapath would have to without
// tables: the first Allow or Deny decides, Log is remembered, Pass skips
// to the next policy, and a packet no rule decides is denied.
func firstMatch(rules []*crule, dir int, dport, sport uint16) verdict {
	var log uint32
	skip := -1
	for _, r := range rules {
		if r.pol == skip || !r.dport.match(dport) || !r.sport.match(sport) {
			continue
		}
		switch r.info.Action {
		case model.RuleAllow:
			return verdict{bpfmap.PolicyAllow, r.info.ID, log}
		case model.RuleDeny:
			return verdict{bpfmap.PolicyDeny, r.info.ID, log}
		case model.RuleLog:
			if log == 0 {
				log = r.info.ID
			}
		case model.RulePass:
			skip = r.pol
		}
	}
	return verdict{bpfmap.PolicyDeny, defaultDeny[dir], log}
}

// cuts returns the points where some rule's match on one port dimension
// may change, starting with 0: each cell between two cuts is decided the
// same way throughout.
func cuts(rules []*crule, dim func(*crule) portMatch) []uint32 {
	out := []uint32{0}
	add := func(p uint32) {
		if p <= 0xffff {
			out = append(out, p)
		}
	}
	for _, r := range rules {
		dim(r).bounds(add)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func cellEnd(cs []uint32, i int) uint16 {
	if i+1 < len(cs) {
		return uint16(cs[i+1] - 1)
	}
	return 0xffff
}

func dportOf(r *crule) portMatch { return r.dport }
func sportOf(r *crule) portMatch { return r.sport }

// portFn computes one protocol's decision over destination ports.
func (dc *decider) portFn(rules []*crule) []seg[value] {
	cs := cuts(rules, dportOf)
	var segs []seg[value]
	for i, lo := range cs {
		segs = appendSeg(segs, uint16(lo), cellEnd(cs, i), dc.cell(rules, uint16(lo)))
	}
	return segs
}

// cell decides one destination-port cell, splitting it by source port
// when a rule that may be reached there matches on source ports.
func (dc *decider) cell(rules []*crule, dport uint16) value {
	cands := dc.buf[:0]
	bySport := false
	for _, r := range rules {
		if r.dport.match(dport) {
			cands = append(cands, r)
			bySport = bySport || !r.sport.isAny()
		}
	}
	dc.buf = cands
	if !bySport {
		return value{v: firstMatch(cands, dc.dir, dport, 0)}
	}
	cs := cuts(cands, sportOf)
	var segs []seg[verdict]
	for i, lo := range cs {
		segs = appendSeg(segs, uint16(lo), cellEnd(cs, i), firstMatch(cands, dc.dir, dport, uint16(lo)))
	}
	if len(segs) == 1 {
		return value{v: segs[0].val}
	}
	enc := encodeSport(segs)
	if _, ok := dc.subs[enc]; !ok {
		dc.subs[enc] = segs
	}
	return value{sub: enc}
}

func encodeSport(segs []seg[verdict]) string {
	var b []byte
	for _, s := range segs {
		b = strconv.AppendUint(b, uint64(s.lo), 10)
		b = append(b, '-')
		b = strconv.AppendUint(b, uint64(s.hi), 10)
		b = append(b, ' ')
		b = strconv.AppendUint(b, uint64(s.val.action), 10)
		b = append(b, '/')
		b = strconv.AppendUint(b, uint64(s.val.rule), 10)
		b = append(b, '/')
		b = strconv.AppendUint(b, uint64(s.val.log), 10)
		b = append(b, ';')
	}
	return string(b)
}

// rangePrefixes calls fn with the prefixes (first port, prefix length)
// that cover lo..hi exactly: the standard split into the largest aligned
// power-of-two blocks.
func rangePrefixes(lo, hi uint16, fn func(port uint16, n int)) {
	for l, h := uint32(lo), uint32(hi); l <= h; {
		size := uint32(1) << 16
		if l != 0 {
			size = l & -l
		}
		for size > h-l+1 {
			size >>= 1
		}
		fn(uint16(l), 16-bits.TrailingZeros32(size))
		l += size
	}
}

func countPrefixes(lo, hi uint16) int {
	n := 0
	rangePrefixes(lo, hi, func(uint16, int) { n++ })
	return n
}

// chooseBase picks the value for a protocol's (or sub-table's) base entry,
// the one that leaves the fewest prefix entries: every segment with
// another value needs its prefixes, and the base entry itself is free when
// it equals the fallback that covers it anyway (the any-protocol entry).
// Ties go to the value seen first, for determinism.
func chooseBase[V comparable](segs []seg[V], fallback V, hasFallback bool) V {
	cost := map[V]int{}
	var order []V
	total := 0
	for _, s := range segs {
		n := countPrefixes(s.lo, s.hi)
		if _, ok := cost[s.val]; !ok {
			order = append(order, s.val)
		}
		cost[s.val] += n
		total += n
	}
	best, bestCost := order[0], -1
	for _, v := range order {
		c := total - cost[v]
		if !hasFallback || v != fallback {
			c++
		}
		if bestCost < 0 || c < bestCost {
			best, bestCost = v, c
		}
	}
	return best
}

// entry is one cx_policy entry of a decision, without the table and
// identity it is stamped with.
type entry struct {
	bits  int
	proto uint8
	port  uint16
	val   value
}

// entries encodes a decision as LPM entries with full coverage: an
// any-protocol entry, and for each protocol that decides otherwise a base
// entry (unless it equals the any-protocol one) with prefixes for the
// port ranges that differ from the base.
func (d *decision) entries() []entry {
	if d.ents != nil {
		return d.ents
	}
	other := value{v: d.other}
	ents := []entry{{val: other}}
	for _, pf := range d.protos {
		base := chooseBase(pf.segs, other, true)
		if base != other {
			ents = append(ents, entry{bits: 8, proto: pf.proto, val: base})
		}
		for _, s := range pf.segs {
			if s.val == base {
				continue
			}
			rangePrefixes(s.lo, s.hi, func(port uint16, n int) {
				ents = append(ents, entry{bits: 8 + n, proto: pf.proto, port: port, val: s.val})
			})
		}
	}
	d.ents = ents
	return ents
}

// emitSport writes a source-port sub-table: Identity and Proto 0, a base
// entry at Bits 8 and prefixes of the source port under it.
func emitSport(out map[bpfmap.PolicyKey]bpfmap.PolicyVerdict, sub uint32, segs []seg[verdict]) {
	put := func(bits int, port uint16, v verdict) {
		out[bpfmap.PolicyKey{Table: sub, Bits: bits, Port: port}] = bpfmap.PolicyVerdict{Action: v.action, Rule: v.rule, LogRule: v.log}
	}
	base := chooseBase(segs, verdict{}, false)
	put(8, 0, base)
	for _, s := range segs {
		if s.val != base {
			rangePrefixes(s.lo, s.hi, func(port uint16, n int) { put(8+n, port, s.val) })
		}
	}
}

// number gives each of the distinct strings a number: its FNV-32a hash,
// masked, at least min, a clash bumped to the next free number. Clashes are
// resolved in the order of the strings, not of the input, so the same
// strings get the same numbers on every run and every node.
func number(contents []string, mask, min uint32) map[string]uint32 {
	return numberBy(contents, fnv32, mask, min)
}

// numberBy is number with the strings' hashes given by hash (which may
// remember them: tables' contents are long).
func numberBy(contents []string, hash func(string) uint32, mask, min uint32) map[string]uint32 {
	contents = slices.Clone(contents)
	slices.Sort(contents)
	out := make(map[string]uint32, len(contents))
	used := make(map[uint32]bool, len(contents))
	for _, c := range contents {
		n := hash(c) & mask
		for n < min || used[n] {
			n = (n + 1) & mask
		}
		used[n] = true
		out[c] = n
	}
	return out
}
