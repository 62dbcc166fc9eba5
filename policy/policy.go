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
	"errors"
	"fmt"
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
	// PolicyChanged and IPCacheChanged, from a Compiler, name the keys of
	// Policy and IPCache whose entries changed (or went) since its last
	// Compile; nil when every key may have (the first Compile, a
	// rebuild).
	PolicyChanged  map[bpfmap.PolicyKey]struct{}
	IPCacheChanged map[netip.Prefix]struct{}
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
// nothing compiled, when a selector does not parse. It is a Compiler's
// first Compile: the full computation, which incremental ones must equal.
func Compile(in Input) (*Output, error) { return NewCompiler().Compile(in) }

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
	rs, err := compileRules(s, selectorCache{}, nil)
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
