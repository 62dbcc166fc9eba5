package policy

import (
	"fmt"
	"hash/fnv"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/calyxnet/calyx/bpfmap"
	"github.com/calyxnet/calyx/model"
	"github.com/calyxnet/calyx/selector"
)

// dirs are the two directions, indexed as everywhere in this package:
// 0 ingress, 1 egress.
var dirs = [2]model.PolicyType{model.PolicyIngress, model.PolicyEgress}

// defaultDeny is the rule number of "selected, but no rule allowed it".
var defaultDeny = [2]uint32{bpfmap.RuleDefaultDenyIngress, bpfmap.RuleDefaultDenyEgress}

// portProtos are the protocols whose packets have ports; a rule with port
// matches can only match them (validation insists on one of them anyway).
var portProtos = []uint8{model.ProtoTCP, model.ProtoUDP, model.ProtoSCTP}

// icmpProtos are the protocols an icmp match applies to.
var icmpProtos = []uint8{model.ProtoICMP, model.ProtoICMPv6}

// portMatch is one port dimension of a rule: the port must be in one of in
// (nil: any) and in none of notIn. For ICMP the "port" is type<<8 | code,
// which lets icmp matches share all the range machinery with ports.
type portMatch struct {
	in, notIn []model.PortRange
}

// newPortMatch builds a portMatch; an empty list is "not given".
func newPortMatch(in, notIn []model.PortRange) portMatch {
	var m portMatch
	if len(in) > 0 {
		m.in = in
	}
	if len(notIn) > 0 {
		m.notIn = notIn
	}
	return m
}

func (m portMatch) isAny() bool { return m.in == nil && m.notIn == nil }

func (m portMatch) match(p uint16) bool {
	if m.in != nil && !inRanges(m.in, p) {
		return false
	}
	return !inRanges(m.notIn, p)
}

// bounds calls add with every point where the match may change: the first
// port of each range and the one after its last.
func (m portMatch) bounds(add func(uint32)) {
	for _, rs := range [][]model.PortRange{m.in, m.notIn} {
		for _, r := range rs {
			add(uint32(r.First))
			add(uint32(r.Last) + 1)
		}
	}
}

func inRanges(rs []model.PortRange, p uint16) bool {
	for _, r := range rs {
		if r.First <= p && p <= r.Last {
			return true
		}
	}
	return false
}

// crule is a rule compiled for one direction. The remote side is kept as
// atoms (the remote's identity decides it); the local side is kept as is,
// to be evaluated against each local endpoint.
type crule struct {
	info RuleInfo
	pol  int // the index of its policy in evaluation order: Pass skips to the next one
	// protos lists the protocols the rule matches, sorted; nil is any,
	// empty (non-nil) is none (e.g. icmp and ports together).
	protos       []uint8
	dport, sport portMatch

	// Remote side: atom names ("" when not given), then, once the atom
	// table exists, their indices (-1 when not given).
	remSel, remNotSel   string
	remNets, remNotNets []string
	sel, notSel         int32
	nets, notNets       []int32

	// Local side.
	locSel, locNotSel   *selector.Selector
	locNets, locNotNets []netip.Prefix

	// enc is the rule's canonical encoding, a piece of a table's content.
	enc string
	// name is its place: policy, direction and index (ruleName).
	name string
}

func (r *crule) never() bool { return r.protos != nil && len(r.protos) == 0 }

// hasProto reports whether the rule can match protocol p.
func (r *crule) hasProto(p uint8) bool {
	if r.protos == nil {
		return true
	}
	_, ok := slices.BinarySearch(r.protos, p)
	return ok
}

// remoteMatch decides the remote side for a remote whose atoms (as far as
// this rule's table cares) are proj, sorted.
func (r *crule) remoteMatch(proj []int32) bool {
	has := func(a int32) bool { _, ok := slices.BinarySearch(proj, a); return ok }
	if len(r.nets) > 0 && !slices.ContainsFunc(r.nets, has) {
		return false
	}
	if slices.ContainsFunc(r.notNets, has) {
		return false
	}
	if r.sel >= 0 && !has(r.sel) {
		return false
	}
	return r.notSel < 0 || !has(r.notSel)
}

// localMatch decides the local side for endpoint ep.
func (r *crule) localMatch(ep *model.WorkloadEndpoint) bool {
	labels := ep.Metadata.Labels
	if r.locSel != nil && !r.locSel.Matches(labels) {
		return false
	}
	if r.locNotSel != nil && r.locNotSel.Matches(labels) {
		return false
	}
	if len(r.locNets) == 0 && len(r.locNotNets) == 0 {
		return true
	}
	// Simplification: the packet's local address is not part of the
	// lookup key, so nets and notNets on the local side are decided per
	// endpoint: they match when any one of its addresses passes both. For
	// the usual single-address endpoint (or one address per family with
	// nets of one family) that is exact.
	for _, p := range ep.Spec.IPNetworks {
		a := p.Addr()
		if (len(r.locNets) == 0 || netsContain(r.locNets, a)) && !netsContain(r.locNotNets, a) {
			return true
		}
	}
	return false
}

func netsContain(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// cpolicy is a policy with its rules compiled.
type cpolicy struct {
	name    string
	sel     *selector.Selector
	applies [2]bool
	rules   [2][]*crule
	atoms   []string // the atoms its rules ask about, once each
}

// ruleSet is every policy of a snapshot compiled, in evaluation order.
type ruleSet struct {
	policies []*cpolicy
	byID     map[uint32]*crule
}

// selectorCache parses each distinct selector string once.
type selectorCache map[string]*selector.Selector

func (c selectorCache) get(s string) (*selector.Selector, error) {
	if sel, ok := c[s]; ok {
		return sel, nil
	}
	sel, err := selector.Parse(s)
	if err != nil {
		return nil, err
	}
	c[s] = sel
	return sel, nil
}

// compilePolicy compiles the rules of one policy, not yet numbered nor
// placed: compileRules does that for the whole set.
func compilePolicy(p *model.NetworkPolicy, sels selectorCache) (*cpolicy, error) {
	cp := &cpolicy{name: p.Metadata.Name}
	sel := p.Spec.Selector
	if strings.TrimSpace(sel) == "" {
		sel = "all()" // what the model defaults it to
	}
	var err error
	if cp.sel, err = sels.get(sel); err != nil {
		return nil, fmt.Errorf("policy %q: selector: %w", cp.name, err)
	}
	for d, t := range dirs {
		if !p.Spec.AppliesTo(t) {
			continue
		}
		cp.applies[d] = true
		rules := p.Spec.Ingress
		if d == 1 {
			rules = p.Spec.Egress
		}
		for j := range rules {
			r, err := compileRule(&rules[j], d, sels)
			if err != nil {
				return nil, fmt.Errorf("policy %q: %s rule %d: %w", cp.name, strings.ToLower(string(t)), j, err)
			}
			r.info.Policy, r.info.Direction, r.info.Index = cp.name, t, j
			r.name = ruleName(r)
			if !r.never() {
				for _, a := range r.atomNames() {
					if !slices.Contains(cp.atoms, a) {
						cp.atoms = append(cp.atoms, a)
					}
				}
			}
			cp.rules[d] = append(cp.rules[d], r)
		}
	}
	return cp, nil
}

// compileRules compiles every policy of s and numbers its rules. A policy
// found in cache (by resource: snapshots never change a resource in place)
// is not compiled again; cache is updated to hold s's policies only.
func compileRules(s *model.Snapshot, sels selectorCache, cache map[*model.NetworkPolicy]*cpolicy) (*ruleSet, error) {
	rs, _, err := compileRulesAgain(s, sels, cache, nil)
	return rs, err
}

// ruleNumbers are the rule numbers of the last compile, by rule name in
// evaluation order: equal names, equal numbers.
type ruleNumbers struct {
	names []string
	ids   map[string]uint32
}

// compileRulesAgain is compileRules, also saying whether a rule compiled
// before (one of cache's) got another number. last, when not nil, holds
// the numbers of the last compile and is updated.
func compileRulesAgain(s *model.Snapshot, sels selectorCache, cache map[*model.NetworkPolicy]*cpolicy, last *ruleNumbers) (*ruleSet, bool, error) {
	ps := make([]*model.NetworkPolicy, 0, len(s.Policies))
	for _, p := range s.Policies {
		ps = append(ps, p)
	}
	model.SortPolicies(ps)

	rs := &ruleSet{byID: make(map[uint32]*crule, len(cache))}
	var all []*crule
	fresh := make(map[*model.NetworkPolicy]*cpolicy, len(ps))
	for i, p := range ps {
		cp := cache[p]
		if cp == nil {
			var err error
			if cp, err = compilePolicy(p, sels); err != nil {
				return nil, false, err
			}
		}
		fresh[p] = cp
		for d := range dirs {
			for _, r := range cp.rules[d] {
				r.pol = i
				all = append(all, r)
			}
		}
		rs.policies = append(rs.policies, cp)
	}
	if cache != nil {
		clear(cache)
		maps.Copy(cache, fresh)
	}

	// Rule numbers come from the rule's place, so that a rule keeps its
	// counters across recompiles while it keeps its place.
	names := make([]string, len(all))
	for i, r := range all {
		names[i] = r.name
	}
	var ids map[string]uint32
	if last != nil && slices.Equal(last.names, names) {
		ids = last.ids
	} else {
		ids = number(names, ^uint32(0), bpfmap.FirstRuleID)
		if last != nil {
			last.names, last.ids = names, ids
		}
	}
	renumbered := false
	for i, r := range all {
		id := ids[names[i]]
		if r.enc == "" || r.info.ID != id {
			renumbered = renumbered || r.enc != ""
			r.info.ID = id
			r.enc = r.encode()
		}
		rs.byID[id] = r
	}
	return rs, renumbered, nil
}

func ruleName(r *crule) string {
	return r.info.Policy + "/" + string(r.info.Direction) + "/" + strconv.Itoa(r.info.Index)
}

func fnv32(s string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(s))
	return h.Sum32()
}

// compileRule compiles rule r of direction d (0 ingress, 1 egress).
func compileRule(r *model.Rule, d int, sels selectorCache) (*crule, error) {
	c := &crule{sel: -1, notSel: -1}
	c.info.Action = r.Action
	c.info.Text = ruleText(r, sels)

	if r.Protocol != 0 {
		c.protos = []uint8{r.Protocol}
	}
	if r.ICMP != nil {
		c.protos = intersect(c.protos, icmpProtos)
		t := uint16(r.ICMP.Type) << 8
		rng := model.PortRange{First: t, Last: t | 0xff}
		if r.ICMP.HasCode {
			rng = model.PortRange{First: t | uint16(r.ICMP.Code), Last: t | uint16(r.ICMP.Code)}
		}
		c.dport.in = []model.PortRange{rng}
	}
	if len(r.Source.Ports)+len(r.Source.NotPorts)+len(r.Destination.Ports)+len(r.Destination.NotPorts) > 0 {
		c.protos = intersect(c.protos, portProtos)
		// An icmp match and ports together match nothing (protos is
		// empty then), so the dport dimension can hold either.
		if r.ICMP == nil {
			c.dport = newPortMatch(r.Destination.Ports, r.Destination.NotPorts)
		}
		c.sport = newPortMatch(r.Source.Ports, r.Source.NotPorts)
	}

	remote, local := &r.Source, &r.Destination
	if d == 1 {
		remote, local = local, remote
	}
	var err error
	if c.remSel, err = selAtom(remote.Selector, sels); err != nil {
		return nil, fmt.Errorf("selector: %w", err)
	}
	if c.remNotSel, err = selAtom(remote.NotSelector, sels); err != nil {
		return nil, fmt.Errorf("notSelector: %w", err)
	}
	for _, n := range remote.Nets {
		c.remNets = append(c.remNets, netAtom(n))
	}
	for _, n := range remote.NotNets {
		c.remNotNets = append(c.remNotNets, netAtom(n))
	}
	if local.Selector != "" {
		if c.locSel, err = sels.get(local.Selector); err != nil {
			return nil, fmt.Errorf("selector: %w", err)
		}
	}
	if local.NotSelector != "" {
		if c.locNotSel, err = sels.get(local.NotSelector); err != nil {
			return nil, fmt.Errorf("notSelector: %w", err)
		}
	}
	c.locNets, c.locNotNets = local.Nets, local.NotNets
	return c, nil
}

// intersect returns the protocols in both a (nil: any) and b.
func intersect(a, b []uint8) []uint8 {
	out := []uint8{}
	for _, p := range b {
		if a == nil || slices.Contains(a, p) {
			out = append(out, p)
		}
	}
	return out
}

func selAtom(s string, sels selectorCache) (string, error) {
	if s == "" {
		return "", nil
	}
	sel, err := sels.get(s)
	if err != nil {
		return "", err
	}
	return "sel:" + sel.String(), nil
}

func netAtom(p netip.Prefix) string { return "net:" + p.Masked().String() }

// encode renders everything about the rule that a table's entries depend
// on, so that changing a rule changes the number of every table holding it.
// The local side is not part of it: it only decides whether the rule is in
// a table at all.
func (r *crule) encode() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d %s %v", r.info.ID, r.info.Action, r.protos)
	for _, m := range []portMatch{r.dport, r.sport} {
		fmt.Fprintf(&b, " %v!%v", m.in, m.notIn)
	}
	fmt.Fprintf(&b, " %q!%q %q!%q", r.remSel, r.remNotSel, r.remNets, r.remNotNets)
	return b.String()
}

// ruleText renders a rule on one line, as calyxctl shows it:
//
//	allow tcp from selector role == "web" to ports 80,8000:8080
func ruleText(r *model.Rule, sels selectorCache) string {
	parts := []string{strings.ToLower(string(r.Action))}
	if r.Protocol != 0 {
		parts = append(parts, strings.ToLower(model.ProtocolName(r.Protocol)))
	}
	if r.ICMP != nil {
		parts = append(parts, "type", strconv.Itoa(int(r.ICMP.Type)))
		if r.ICMP.HasCode {
			parts = append(parts, "code", strconv.Itoa(int(r.ICMP.Code)))
		}
	}
	if s := entityText(&r.Source, sels); s != "" {
		parts = append(parts, "from", s)
	}
	if s := entityText(&r.Destination, sels); s != "" {
		parts = append(parts, "to", s)
	}
	return strings.Join(parts, " ")
}

func entityText(e *model.EntityRule, sels selectorCache) string {
	var parts []string
	add := func(what string, items []string) {
		if len(items) > 0 {
			parts = append(parts, what, strings.Join(items, ","))
		}
	}
	add("nets", prefixStrings(e.Nets))
	add("not nets", prefixStrings(e.NotNets))
	for _, s := range []struct{ what, sel string }{{"selector", e.Selector}, {"not selector", e.NotSelector}} {
		if s.sel == "" {
			continue
		}
		text := s.sel
		if sel, err := sels.get(s.sel); err == nil {
			text = sel.String()
		}
		parts = append(parts, s.what, text)
	}
	add("ports", portStrings(e.Ports))
	add("not ports", portStrings(e.NotPorts))
	return strings.Join(parts, " ")
}

func prefixStrings(ps []netip.Prefix) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.String())
	}
	return out
}

func portStrings(rs []model.PortRange) []string {
	var out []string
	for _, r := range rs {
		s := strconv.Itoa(int(r.First))
		if r.Last != r.First {
			s += ":" + strconv.Itoa(int(r.Last))
		}
		out = append(out, s)
	}
	return out
}

// program returns, for local endpoint ep and direction d, the rules that
// apply to it grouped by policy in evaluation order (policies none of
// whose rules can match are left out), and whether any policy selects it.
func (rs *ruleSet) program(ep *model.WorkloadEndpoint, d int) (prog [][]*crule, selected bool) {
	for _, p := range rs.policies {
		if !p.applies[d] || !p.sel.Matches(ep.Metadata.Labels) {
			continue
		}
		selected = true
		var rules []*crule
		for _, r := range p.rules[d] {
			if !r.never() && r.localMatch(ep) {
				rules = append(rules, r)
			}
		}
		if rules != nil {
			prog = append(prog, rules)
		}
	}
	return prog, selected
}

// defaultRuleInfo describes the special rule numbers a table may hold.
func defaultRuleInfo(d int) RuleInfo {
	return RuleInfo{
		ID:        defaultDeny[d],
		Direction: dirs[d],
		Index:     -1,
		Action:    model.RuleDeny,
		Text:      "deny: default for " + strings.ToLower(string(dirs[d])) + ", no rule allowed it",
	}
}
