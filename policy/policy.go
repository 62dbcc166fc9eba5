// Package policy compiles NetworkPolicy into the contents of cx_ipcache
// and cx_policy, so that the datapath decides a new flow with at most three
// lookups whatever the number of policies and rules (DESIGN.md, principle
// 2).
//
// The idea: every question a rule can ask about the remote address ("is it
// in net N", "is it an endpoint selector S matches") is an atom. The set of
// atoms an address satisfies is its identity, which cx_ipcache gives by
// longest-prefix match. Rules about the local endpoint are decided here,
// per endpoint, so what remains of an endpoint's policy is a function of
// (remote identity, protocol, destination port, source port), written out
// as an LPM table per distinct program. Endpoints whose programs are equal
// share a table, and within a table only identities that decide otherwise
// than what the lookup falls back to have entries of their own: an
// identity falls back to its net identity (that of its nets alone, which
// cx_ipcache gives alongside), and that to identity 0 (the world). So an
// endpoint in a net that many rules name needs entries only in the tables
// whose selectors tell it apart.
package policy

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	"github.com/calyxnet/calyx/bpfmap"
	"github.com/calyxnet/calyx/model"
)

// Input is what Compile needs.
type Input struct {
	Snapshot *model.Snapshot
	// Node is the node tables are built for: its endpoints are those
	// with WorkloadEndpoint.Spec.Node == Node.
	Node string
	// HostAddrs are this node's own addresses; their cx_ipcache entries
	// have Host set.
	HostAddrs []netip.Addr
}

// Output is the desired content of the policy maps of one node.
type Output struct {
	// IPCache is cx_ipcache: the identity of each prefix.
	IPCache map[netip.Prefix]bpfmap.IPCacheEntry
	// Policy is cx_policy: tables and source-port sub-tables.
	Policy map[bpfmap.PolicyKey]bpfmap.PolicyVerdict
	// Endpoints gives the tables of each local endpoint selected in at
	// least one direction, by endpoint name.
	Endpoints map[string]EndpointTables
	// Rules describes every rule number Policy may hold: every rule of
	// every policy, and the default-deny specials.
	Rules map[uint32]RuleInfo
}

// EndpointTables are an endpoint's cx_policy tables. 0 means no policy
// selects it in that direction: everything is allowed.
type EndpointTables struct{ Ingress, Egress uint32 }

// RuleInfo describes one rule number.
type RuleInfo struct {
	ID        uint32
	Policy    string // "" for the default-deny specials
	Direction model.PolicyType
	Index     int // in the policy's ingress or egress list; -1 for specials
	Action    model.RuleAction
	// Text is the rule on one line, e.g.
	// `allow tcp from selector role == "web" to ports 80,8000:8080`.
	Text string
}

// ErrUnknownEndpoint is returned by Effective for an endpoint the snapshot
// does not have.
var ErrUnknownEndpoint = errors.New("no such workload endpoint")

// table is one distinct program: what a table's entries are computed from.
type table struct {
	dir     int
	prog    [][]*crule
	content string
	num     uint32
}

// Compile computes the policy maps' content for in.Node. It fails, with
// nothing compiled, when a selector does not parse.
func Compile(in Input) (*Output, error) {
	s := in.Snapshot
	sels := selectorCache{}
	rs, err := compileRules(s, sels)
	if err != nil {
		return nil, fmt.Errorf("compile policy: %w", err)
	}
	at, err := buildAtoms(rs, sels)
	if err != nil {
		return nil, fmt.Errorf("compile policy: %w", err)
	}
	out := &Output{
		Endpoints: map[string]EndpointTables{},
		Rules:     map[uint32]RuleInfo{},
	}
	if len(s.Policies) == 0 {
		// No rule names anything: every address is identity 0, and only
		// this host's own addresses need entries (endpointToHostAction).
		// Not walking every endpoint keeps a change of a large model cheap.
		out.IPCache = map[netip.Prefix]bpfmap.IPCacheEntry{}
		out.Policy = map[bpfmap.PolicyKey]bpfmap.PolicyVerdict{}
		for _, a := range in.HostAddrs {
			out.IPCache[hostPrefix(a)] = bpfmap.IPCacheEntry{Host: true}
		}
		return out, nil
	}
	var ids *identities
	out.IPCache, ids = buildIPCache(s, in.HostAddrs, at, labelSelAtoms(s, at))

	// Programs of the local endpoints, deduplicated by the rules they
	// hold. The key is cheap (rule numbers); the content, which the table
	// number hashes, is built once per distinct program.
	byKey := map[string]*table{}
	epTables := map[string][2]*table{}
	for _, name := range slices.Sorted(mapKeys(s.Endpoints)) {
		ep := s.Endpoints[name]
		if ep.Spec.Node != in.Node {
			continue
		}
		var ts [2]*table
		for d := range dirs {
			prog, selected := rs.program(ep, d)
			if !selected {
				continue
			}
			k := programKey(d, prog)
			t := byKey[k]
			if t == nil {
				t = &table{dir: d, prog: prog, content: programContent(d, prog)}
				byKey[k] = t
			}
			ts[d] = t
		}
		if ts[0] != nil || ts[1] != nil {
			epTables[name] = ts
		}
	}
	var contents []string
	byContent := map[string]*table{}
	for _, t := range byKey {
		contents = append(contents, t.content)
		byContent[t.content] = t
	}
	for c, n := range number(contents, ^bpfmap.SubTableFlag, 1) {
		byContent[c].num = n
	}
	for name, ts := range epTables {
		var et EndpointTables
		if ts[0] != nil {
			et.Ingress = ts[0].num
		}
		if ts[1] != nil {
			et.Egress = ts[1].num
		}
		out.Endpoints[name] = et
	}

	// Decisions of every table, then, once every sub-table is known and
	// numbered, their entries, stamped for each identity they apply to
	// into a map sized for all of them.
	subs := map[string][]seg[verdict]{}
	deciders := [2]*decider{{dir: 0, subs: subs}, {dir: 1, subs: subs}}
	proj := make([][]int32, len(ids.list)) // scratch: each identity's atoms in the current table
	tables := slices.Collect(maps.Values(byKey))
	slices.SortFunc(tables, func(a, b *table) int { return cmp.Compare(a.num, b.num) })
	results := make([]tableDecisions, len(tables))
	for i, t := range tables {
		results[i] = decideTable(t, deciders[t.dir], ids, proj)
	}
	subNums := number(slices.Collect(mapKeys(subs)), ^bpfmap.SubTableFlag, 1)
	resolve := func(v value) bpfmap.PolicyVerdict {
		if v.sub != "" {
			return bpfmap.PolicyVerdict{Action: bpfmap.PolicySport, Sub: subNums[v.sub] | bpfmap.SubTableFlag}
		}
		return bpfmap.PolicyVerdict{Action: v.v.action, Rule: v.v.rule, LogRule: v.v.log}
	}
	size := 0
	for _, r := range results {
		for _, g := range r.groups {
			size += len(g.d.entries()) * len(g.ids)
		}
	}
	out.Policy = make(map[bpfmap.PolicyKey]bpfmap.PolicyVerdict, size+4*len(subs))
	for _, r := range results {
		for _, g := range r.groups {
			for _, e := range g.d.entries() {
				v := resolve(e.val)
				for _, id := range g.ids {
					out.Policy[bpfmap.PolicyKey{Table: r.num, Identity: id, Bits: e.bits, Proto: e.proto, Port: e.port}] = v
				}
			}
		}
	}
	for enc, segs := range subs {
		emitSport(out.Policy, subNums[enc]|bpfmap.SubTableFlag, segs)
	}

	for id, r := range rs.byID {
		out.Rules[id] = r.info
	}
	for d := range dirs {
		out.Rules[defaultDeny[d]] = defaultRuleInfo(d)
	}
	return out, nil
}

// tableDecisions is what a table decides: for each group of identities
// that decide alike, the decision. Identity 0 comes first; identities that
// decide like their fallback are in no group.
type tableDecisions struct {
	num    uint32
	groups []idGroup
}

type idGroup struct {
	d   *decision
	ids []bpfmap.Identity
}

// decideTable computes identity 0's decision for a table, then, for each
// group of identities that look the same to the table's rules, their
// decision when the lookup would otherwise get it wrong: when it differs
// from that of the identity's fallback (the identity the lookup tries
// next, or identity 0), or, for an identity that is some other one's
// fallback, from identity 0's (the lookup goes no further than one
// fallback). So a fallback without entries decides like identity 0, and
// falling back to an identity always gets that identity's decision.
func decideTable(t *table, dc *decider, ids *identities, proj [][]int32) tableDecisions {
	var flat []*crule
	for _, rules := range t.prog {
		flat = append(flat, rules...)
	}
	active := func(p []int32) []*crule {
		var out []*crule
		for _, r := range flat {
			if r.remoteMatch(p) {
				out = append(out, r)
			}
		}
		return out
	}
	d0 := dc.decide(active(nil))
	res := tableDecisions{num: t.num, groups: []idGroup{{d: d0, ids: []bpfmap.Identity{0}}}}

	// The inverted index gives, for each of the table's atoms, the
	// identities holding it; what else an identity holds does not matter
	// here.
	var touched []int32
	for _, a := range tableAtoms(t.prog) {
		for _, i := range ids.of[a] {
			if len(proj[i]) == 0 {
				touched = append(touched, i)
			}
			proj[i] = append(proj[i], a)
		}
	}
	slices.Sort(touched)
	// Decisions by projection, computed once each.
	decs := map[string]*decision{"": d0}
	decide := func(p []int32) *decision {
		k := atomsKey(p)
		d, ok := decs[k]
		if !ok {
			d = dc.decide(active(p))
			decs[k] = d
		}
		return d
	}
	group := map[*decision]int{} // index in res.groups
	for _, i := range touched {
		id := ids.list[i]
		var fp []int32 // the fallback's projection, a subset of this one's
		if id.fallback >= 0 {
			fp = proj[id.fallback]
		}
		if len(fp) == len(proj[i]) && !id.isFallback {
			continue // the table cannot tell it from its fallback
		}
		d := decide(proj[i])
		if d.equal(decide(fp)) && (!id.isFallback || d.equal(d0)) {
			continue
		}
		g, ok := group[d]
		if !ok {
			g = len(res.groups)
			res.groups = append(res.groups, idGroup{d: d})
			group[d] = g
		}
		res.groups[g].ids = append(res.groups[g].ids, id.num)
	}
	for _, i := range touched {
		proj[i] = proj[i][:0]
	}
	return res
}

// programKey identifies a program by its rule numbers (never 0, so 0
// separates policies, whose boundaries matter to Pass).
func programKey(d int, prog [][]*crule) string {
	b := []byte{byte(d)}
	for _, rules := range prog {
		for _, r := range rules {
			b = append(b, byte(r.info.ID), byte(r.info.ID>>8), byte(r.info.ID>>16), byte(r.info.ID>>24))
		}
		b = append(b, 0, 0, 0, 0)
	}
	return string(b)
}

// programContent is the canonical encoding a table number is the hash of:
// the direction and every rule, grouped by policy.
func programContent(d int, prog [][]*crule) string {
	var b strings.Builder
	b.WriteString(string(dirs[d]))
	for _, rules := range prog {
		b.WriteString("\npolicy")
		for _, r := range rules {
			b.WriteString("\n  ")
			b.WriteString(r.enc)
		}
	}
	return b.String()
}

// Lookup does what the datapath does for a new flow once it has the remote
// identity (id) and net identity (netID, the identity of its nets alone;
// see bpfmap.IPCacheEntry): the LPM lookup of (table, identity, protocol,
// port), falling back to the net identity, then to identity 0, then the
// source-port sub-table when the verdict says so. port is the destination port for TCP, UDP and SCTP, type<<8 | code
// for ICMP and ICMPv6, 0 otherwise. Table 0 allows everything. It returns
// false when no entry matches, which a complete Output never does for a
// table it holds.
func Lookup(out *Output, table uint32, id, netID bpfmap.Identity, proto uint8, port, sport uint16) (bpfmap.PolicyVerdict, bool) {
	if table == 0 {
		return bpfmap.PolicyVerdict{Action: bpfmap.PolicyAllow}, true
	}
	get := func(k bpfmap.PolicyKey) (bpfmap.PolicyVerdict, bool, error) {
		v, ok := lpm(out.Policy, k.Table, k.Identity, k.Proto, k.Port)
		return v, ok, nil
	}
	v, ok, _ := bpfmap.ResolvePolicy(get, table, id, netID, proto, port, sport)
	return v, ok
}

// lpm finds the longest entry of (table, id) matching proto and port.
func lpm(m map[bpfmap.PolicyKey]bpfmap.PolicyVerdict, table uint32, id bpfmap.Identity, proto uint8, port uint16) (bpfmap.PolicyVerdict, bool) {
	for b := 24; b >= 0; b-- {
		k := bpfmap.PolicyKey{Table: table, Identity: id, Bits: b}
		switch {
		case b == 0:
		case b < 8:
			continue // no entry matches part of the protocol
		default:
			k.Proto, k.Port = proto, port&^(0xffff>>(b-8))
		}
		if v, ok := m[k]; ok {
			return v, true
		}
	}
	return bpfmap.PolicyVerdict{}, false
}

// LookupIdentity does the datapath's cx_ipcache lookup: the entry of the
// longest prefix holding a, or false on a miss (identity 0, not the host).
func LookupIdentity(out *Output, a netip.Addr) (bpfmap.IPCacheEntry, bool) {
	for b := a.BitLen(); b >= 0; b-- {
		if e, ok := out.IPCache[netip.PrefixFrom(a, b).Masked()]; ok {
			return e, true
		}
	}
	return bpfmap.IPCacheEntry{}, false
}

// EndpointPolicy is the policy that applies to one endpoint, as calyxctl
// policy dump shows it.
type EndpointPolicy struct {
	Endpoint string
	// IngressSelected and EgressSelected say whether any policy selects
	// the endpoint in that direction; when none does, everything is
	// allowed, else what no rule allows is denied.
	IngressSelected, EgressSelected bool
	// Ingress and Egress are the rules that may apply, in evaluation order:
	// those of the policies selecting the endpoint whose local side (the
	// destination for ingress, the source for egress) matches it. Rules of
	// one policy are adjacent; RuleInfo.Policy tells where one ends.
	Ingress, Egress []RuleInfo
}

// Effective lists the rules that apply to the named endpoint. Rule numbers
// are those Compile gives for the same snapshot.
func Effective(s *model.Snapshot, endpoint string) (EndpointPolicy, error) {
	ep := s.Endpoints[endpoint]
	if ep == nil {
		return EndpointPolicy{}, fmt.Errorf("endpoint %q: %w", endpoint, ErrUnknownEndpoint)
	}
	rs, err := compileRules(s, selectorCache{})
	if err != nil {
		return EndpointPolicy{}, fmt.Errorf("effective policy of %q: %w", endpoint, err)
	}
	res := EndpointPolicy{Endpoint: endpoint}
	for d := range dirs {
		prog, selected := rs.program(ep, d)
		var infos []RuleInfo
		for _, rules := range prog {
			for _, r := range rules {
				infos = append(infos, r.info)
			}
		}
		if d == 0 {
			res.IngressSelected, res.Ingress = selected, infos
		} else {
			res.EgressSelected, res.Egress = selected, infos
		}
	}
	return res, nil
}
