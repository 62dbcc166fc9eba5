package policy

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"

	"github.com/calyxnet/calyx/bpfmap"
	"github.com/calyxnet/calyx/model"
)

// Compiler compiles the policy of one node again and again, redoing only
// what a change of the snapshot can have changed:
//   - a policy's rules when that policy changed (all rules are renumbered
//     then, which keeps the numbers of rules that keep their place);
//   - the cx_ipcache entries of the addresses a changed endpoint or
//     floating IP claims, before and after;
//   - the program of a local endpoint that changed or that a changed policy
//     selects (in its old or its new form), and the tables that appear or
//     go with such programs;
//   - the decisions of new tables, or of every table when the identities
//     change (an atom set appears or goes), and the cx_policy entries of
//     what was decided again or numbered anew.
//
// A change of the rules' atoms, of this host's addresses, of the node, or a
// rule given another number rebuilds everything. It relies on snapshots
// never changing a resource in place (model.Snapshot's contract): a
// resource whose pointer is the same is the same. Its results equal
// Compile's for the same input (TestCompilerIncrementalEqualsFull). The
// maps of an Output it returns are its own, valid until the next Compile.
// Not safe for concurrent use.
type Compiler struct {
	sels selectorCache
	node string

	// policyChanged are the cx_policy keys changed since the last
	// Compile; allChanged says a map was made anew instead.
	policyChanged map[bpfmap.PolicyKey]struct{}
	allChanged    bool

	// What the last compile saw: the snapshot, and by name.
	last *model.Snapshot
	eps  map[string]*model.WorkloadEndpoint
	fips map[string]*model.FloatingIP
	pols map[string]*model.NetworkPolicy

	cpols    map[*model.NetworkPolicy]*cpolicy // compiled, by resource
	rs       *ruleSet
	at       *atomTable
	numbers  ruleNumbers
	atomRefs map[string]int // how many policies ask about each atom
	polIndex map[string]int // each policy's place in rs.policies

	tableSetChanged bool // a table came or went since they were numbered

	labelKeys map[string]string  // by endpoint name
	labelAtom map[string][]int32 // selector atoms by label key
	ipc       *ipcache
	ids       *identities

	progs    map[string]*program   // local endpoints' programs, by name
	tables   map[string]*liveTable // by programKey
	subs     map[string]*liveSub   // source-port functions, by encoding
	subSegs  map[string][]seg[verdict]
	deciders [2]*decider

	out *Output
}

// program is a local endpoint's rules by direction (see ruleSet.program),
// how many policies select it, and its tables (nil where none does).
type program struct {
	ep     *model.WorkloadEndpoint
	prog   [2][][]*crule
	nsel   [2]int
	tables [2]*liveTable
}

// newProgram computes ep's program from the policies of rs that select
// it, in order.
func newProgram(ep *model.WorkloadEndpoint, selecting []*cpolicy) *program {
	p := &program{ep: ep}
	for _, cp := range selecting {
		p.addSelected(cp)
	}
	return p
}

// selecting returns the policies of rs that select endpoints with labels
// (whose label key is key), in order, asking memo first.
func selecting(rs *ruleSet, key string, labels map[string]string, memo map[string][]*cpolicy) []*cpolicy {
	if out, ok := memo[key]; ok {
		return out
	}
	var out []*cpolicy
	for _, cp := range rs.policies {
		if (cp.applies[0] || cp.applies[1]) && cp.sel.Matches(labels) {
			out = append(out, cp)
		}
	}
	memo[key] = out
	return out
}

// add puts cp's rules into p, in cp's place (the policy index of its
// rules), if cp selects p's endpoint. The rule lists are copied, never
// changed in place: tables hold them.
func (p *program) add(cp *cpolicy) {
	if (cp.applies[0] || cp.applies[1]) && cp.sel.Matches(p.ep.Metadata.Labels) {
		p.addSelected(cp)
	}
}

// addSelected puts cp's rules into p, in cp's place; cp selects p's
// endpoint.
func (p *program) addSelected(cp *cpolicy) {
	for d := range dirs {
		if !cp.applies[d] {
			continue
		}
		p.nsel[d]++
		var rules []*crule
		for _, r := range cp.rules[d] {
			if !r.never() && r.localMatch(p.ep) {
				rules = append(rules, r)
			}
		}
		if rules == nil {
			continue
		}
		at, _ := slices.BinarySearchFunc(p.prog[d], rules[0].pol, func(g []*crule, pol int) int { return g[0].pol - pol })
		p.prog[d] = slices.Insert(slices.Clip(p.prog[d]), at, rules)
	}
}

// remove takes the rules of cp, a policy's compiled form that is no longer
// current, out of p, if cp selected p's endpoint.
func (p *program) remove(cp *cpolicy) {
	if !(cp.applies[0] || cp.applies[1]) || !cp.sel.Matches(p.ep.Metadata.Labels) {
		return
	}
	for d := range dirs {
		if !cp.applies[d] {
			continue
		}
		p.nsel[d]--
		p.prog[d] = slices.DeleteFunc(slices.Clone(p.prog[d]), func(g []*crule) bool { return slices.Contains(cp.rules[d], g[0]) })
	}
}

// liveTable is a table in use: its users (endpoint names), its decisions
// (nil until decided), the source-port functions they use and the
// cx_policy keys it wrote.
type liveTable struct {
	key   string
	t     *table
	hash  uint32 // of its content
	users map[string]bool
	dec   *tableDecisions
	subs  []string
	keys  []bpfmap.PolicyKey
	emit  bool // its entries are to be written (again)
}

// liveSub is a source-port function in use by tables.
type liveSub struct {
	users int
	num   uint32
	keys  []bpfmap.PolicyKey
}

// NewCompiler returns a Compiler with nothing cached.
func NewCompiler() *Compiler {
	c := &Compiler{sels: selectorCache{}}
	c.reset()
	return c
}

// reset forgets everything derived from a snapshot.
func (c *Compiler) reset() {
	c.eps, c.fips, c.pols = map[string]*model.WorkloadEndpoint{}, map[string]*model.FloatingIP{}, map[string]*model.NetworkPolicy{}
	c.cpols = map[*model.NetworkPolicy]*cpolicy{}
	c.numbers, c.atomRefs = ruleNumbers{}, map[string]int{}
	c.rs, c.at, c.ipc, c.ids, c.out = nil, nil, nil, nil, nil
	c.labelKeys, c.labelAtom = map[string]string{}, map[string][]int32{}
	c.resetTables()
}

// resetTables forgets the programs, tables and cx_policy content.
func (c *Compiler) resetTables() {
	c.progs, c.tables, c.subs = map[string]*program{}, map[string]*liveTable{}, map[string]*liveSub{}
	c.subSegs = map[string][]seg[verdict]{}
	c.deciders = [2]*decider{{dir: 0, subs: c.subSegs}, {dir: 1, subs: c.subSegs}}
	if c.out != nil {
		c.out.Policy = map[bpfmap.PolicyKey]bpfmap.PolicyVerdict{}
		c.out.Endpoints = map[string]EndpointTables{}
	}
	c.allChanged = true
}

// setPolicy and delPolicy change a cx_policy entry and note its key for
// the Output's PolicyChanged.
func (c *Compiler) setPolicy(k bpfmap.PolicyKey, v bpfmap.PolicyVerdict) {
	if old, ok := c.out.Policy[k]; ok && old == v {
		return
	}
	c.out.Policy[k] = v
	c.policyChanged[k] = struct{}{}
}

func (c *Compiler) delPolicy(k bpfmap.PolicyKey) {
	if _, ok := c.out.Policy[k]; !ok {
		return
	}
	delete(c.out.Policy, k)
	c.policyChanged[k] = struct{}{}
}

// Compile computes the policy maps' content for in.Node, as the package's
// Compile does. On an error the caches are dropped, so the next Compile
// starts afresh.
func (c *Compiler) Compile(in Input) (*Output, error) {
	if c.policyChanged == nil {
		c.policyChanged = map[bpfmap.PolicyKey]struct{}{}
	}
	out, err := c.compile(in)
	if err != nil {
		c.reset()
		return out, err
	}
	// What changed since the last Compile, unless a map was made anew
	// (then every key may have).
	out.PolicyChanged, out.IPCacheChanged = nil, nil
	if !c.allChanged && out == c.out {
		out.PolicyChanged = c.policyChanged
		out.IPCacheChanged = c.ipc.takeChanged()
	}
	c.policyChanged, c.allChanged = map[bpfmap.PolicyKey]struct{}{}, false
	if c.ipc != nil && out.IPCacheChanged == nil {
		c.ipc.takeChanged()
	}
	return out, nil
}

func (c *Compiler) compile(in Input) (*Output, error) {
	s := in.Snapshot
	if in.Node != c.node {
		c.reset()
		c.node = in.Node
	}

	// The rules, when a policy changed.
	rebuild := c.out == nil
	var gone, came []*cpolicy
	if changedPolicySet(c.pols, s.Policies) || rebuild {
		var rs *ruleSet
		renumbered := false
		var err error
		if !rebuild {
			gone, came, err = c.replacePolicies(s)
			if err != nil {
				return nil, fmt.Errorf("compile policy: %w", err)
			}
			rs = c.rs
		}
		if rs == nil || gone == nil && came == nil {
			before := c.policySet()
			rs, renumbered, err = compileRulesAgain(s, c.sels, c.cpols, &c.numbers)
			if err != nil {
				return nil, fmt.Errorf("compile policy: %w", err)
			}
			gone, came = changedPolicies(before, rs)
			c.polIndex = map[string]int{}
			for i, cp := range rs.policies {
				c.polIndex[cp.name] = i
			}
		}
		if rebuild || renumbered || c.at == nil || c.countAtoms(gone, came) {
			// New atoms: every address's identity may change.
			at, err := buildAtoms(rs, c.sels)
			if err != nil {
				return nil, fmt.Errorf("compile policy: %w", err)
			}
			rebuild = rebuild || renumbered || c.at == nil || !slices.Equal(c.at.names, at.names)
			c.at = at
			c.recountAtoms(rs)
		} else {
			for _, cp := range came {
				c.at.assign(slices.Concat(cp.rules[0], cp.rules[1]))
			}
		}
		c.rs = rs
		c.pols = maps.Clone(s.Policies)
		if c.out != nil && !rebuild {
			for _, cp := range gone {
				for _, r := range slices.Concat(cp.rules[0], cp.rules[1]) {
					delete(c.out.Rules, r.info.ID)
				}
			}
			for _, cp := range came {
				for _, r := range slices.Concat(cp.rules[0], cp.rules[1]) {
					c.out.Rules[r.info.ID] = r.info
				}
			}
		}
	}
	if len(s.Policies) == 0 {
		// No rule names anything: every address is identity 0, and only
		// this host's own addresses need entries (endpointToHostAction).
		// Not walking every endpoint keeps a change of a large model cheap.
		out := &Output{
			IPCache:   map[netip.Prefix]bpfmap.IPCacheEntry{},
			Policy:    map[bpfmap.PolicyKey]bpfmap.PolicyVerdict{},
			Endpoints: map[string]EndpointTables{},
			Rules:     c.rules(),
		}
		for _, a := range in.HostAddrs {
			out.IPCache[hostPrefix(a)] = bpfmap.IPCacheEntry{Host: true}
		}
		c.reset()
		c.node = in.Node
		return out, nil
	}
	if !rebuild && !c.ipc.sameBasis(c.at, in.HostAddrs) {
		rebuild = true
	}

	// What changed among endpoints and floating IPs.
	var eps, fips []string
	if rebuild {
		c.labelAtom = map[string][]int32{}
		c.ipc = newIPCache(c.at, in.HostAddrs)
		c.allChanged = true
		c.ids = nil
		c.resetTables()
		c.eps, c.fips = map[string]*model.WorkloadEndpoint{}, map[string]*model.FloatingIP{}
		c.out = &Output{Policy: map[bpfmap.PolicyKey]bpfmap.PolicyVerdict{}, Endpoints: map[string]EndpointTables{}, Rules: c.rules()}
		c.tableSetChanged = true
	}
	c.ipc.at = c.at // the same atoms, numbered alike
	edits, ok := s.EditsSince(c.last)
	ok = ok && !rebuild
	c.last = s
	eps = model.ChangedNames(c.eps, s.Endpoints, model.KindWorkloadEndpoint, edits, ok)
	fips = model.ChangedNames(c.fips, s.FloatingIPs, model.KindFloatingIP, edits, ok)
	for _, name := range eps {
		if ep := s.Endpoints[name]; ep != nil {
			c.labelKeys[name] = labelKey(ep.Metadata.Labels)
		} else {
			delete(c.labelKeys, name)
		}
	}
	if len(c.labelAtom) > 2*len(s.Endpoints)+64 {
		clear(c.labelAtom) // label sets gone; recomputed as needed
	}

	// cx_ipcache and the identities.
	ids := c.ipc.update(s, eps, fips, c.selAtoms)
	c.out.IPCache = c.ipc.out
	idsChanged := ids != c.ids
	c.ids = ids

	// Programs, tables, decisions and entries.
	c.programs(s, eps, gone, came)
	if idsChanged {
		for _, lt := range c.tables {
			c.forget(lt)
		}
	}
	c.decide()
	return c.out, nil
}

// replacePolicies handles the common change: policies replaced by new
// versions that keep their place (order) and their rules' places, so that
// every rule keeps its number. It compiles only those and puts them in
// rs.policies in place, and returns their old and new forms. It returns
// nil, nil when the change is not such (a policy added or removed, moved,
// or given more or fewer rules): compileRulesAgain then does it all.
func (c *Compiler) replacePolicies(s *model.Snapshot) (gone, came []*cpolicy, err error) {
	if c.rs == nil || len(s.Policies) != len(c.pols) {
		return nil, nil, nil
	}
	type swap struct {
		i   int
		old *model.NetworkPolicy
		p   *model.NetworkPolicy
	}
	var swaps []swap
	for name, p := range s.Policies {
		old, ok := c.pols[name]
		if !ok {
			return nil, nil, nil
		}
		if old == p {
			continue
		}
		if !sameOrder(old.Spec.Order, p.Spec.Order) || len(old.Spec.Ingress) != len(p.Spec.Ingress) ||
			len(old.Spec.Egress) != len(p.Spec.Egress) || old.Spec.AppliesTo(model.PolicyIngress) != p.Spec.AppliesTo(model.PolicyIngress) ||
			old.Spec.AppliesTo(model.PolicyEgress) != p.Spec.AppliesTo(model.PolicyEgress) {
			return nil, nil, nil
		}
		swaps = append(swaps, swap{c.polIndex[name], old, p})
	}
	for _, sw := range swaps {
		cp, err := compilePolicy(sw.p, c.sels)
		if err != nil {
			return nil, nil, err
		}
		prev := c.rs.policies[sw.i]
		for d := range dirs {
			for j, r := range cp.rules[d] {
				// Same place, same name, same number.
				r.pol, r.info.ID = sw.i, prev.rules[d][j].info.ID
				r.enc = r.encode()
				c.rs.byID[r.info.ID] = r
			}
		}
		c.rs.policies[sw.i] = cp
		delete(c.cpols, sw.old)
		c.cpols[sw.p] = cp
		gone, came = append(gone, prev), append(came, cp)
	}
	return gone, came, nil
}

func sameOrder(a, b *float64) bool { return a == nil && b == nil || a != nil && b != nil && *a == *b }

// countAtoms counts the atoms of the policies that went and came; true
// when an atom is asked about by none now, or was by none before.
func (c *Compiler) countAtoms(gone, came []*cpolicy) bool {
	changed := false
	for _, cp := range gone {
		for _, a := range cp.atoms {
			if c.atomRefs[a]--; c.atomRefs[a] <= 0 {
				delete(c.atomRefs, a)
				changed = true
			}
		}
	}
	for _, cp := range came {
		for _, a := range cp.atoms {
			if c.atomRefs[a]++; c.atomRefs[a] == 1 {
				changed = true
			}
		}
	}
	return changed
}

// recountAtoms counts the atoms of every policy of rs.
func (c *Compiler) recountAtoms(rs *ruleSet) {
	clear(c.atomRefs)
	for _, cp := range rs.policies {
		for _, a := range cp.atoms {
			c.atomRefs[a]++
		}
	}
}

// selAtoms returns the selector atoms ep's labels match, computed once per
// label set.
func (c *Compiler) selAtoms(ep *model.WorkloadEndpoint) []int32 {
	k, ok := c.labelKeys[ep.Metadata.Name]
	if !ok {
		k = labelKey(ep.Metadata.Labels)
	}
	atoms, ok := c.labelAtom[k]
	if !ok {
		atoms = matchingSelAtoms(c.at, ep.Metadata.Labels)
		c.labelAtom[k] = atoms
	}
	return atoms
}

// changedPolicySet says whether now holds other policies than last.
func changedPolicySet(last, now map[string]*model.NetworkPolicy) bool {
	if len(last) != len(now) {
		return true
	}
	for name, p := range now {
		if last[name] != p {
			return true
		}
	}
	return false
}

// policySet is the compiled policies of the last compile, by name.
func (c *Compiler) policySet() map[string]*cpolicy {
	out := map[string]*cpolicy{}
	if c.rs != nil {
		for _, p := range c.rs.policies {
			out[p.name] = p
		}
	}
	return out
}

// changedPolicies returns the compiled policies of before that rs no
// longer has (the old form of changed policies, removed ones) and those of
// rs that before did not have (new forms, added ones).
func changedPolicies(before map[string]*cpolicy, rs *ruleSet) (gone, came []*cpolicy) {
	now := map[string]bool{}
	for _, p := range rs.policies {
		now[p.name] = true
		if old := before[p.name]; old != p {
			came = append(came, p)
			if old != nil {
				gone = append(gone, old)
			}
		}
	}
	for name, old := range before {
		if !now[name] {
			gone = append(gone, old)
		}
	}
	return gone, came
}

// rules describes every rule number cx_policy may hold.
func (c *Compiler) rules() map[uint32]RuleInfo {
	out := map[uint32]RuleInfo{}
	if c.rs != nil {
		for id, r := range c.rs.byID {
			out[id] = r.info
		}
	}
	for d := range dirs {
		out[defaultDeny[d]] = defaultRuleInfo(d)
	}
	return out
}

// programs recomputes the programs of the local endpoints among eps,
// patches those of the endpoints a policy that went (gone) or came selects,
// and updates the tables they use.
func (c *Compiler) programs(s *model.Snapshot, eps []string, gone, came []*cpolicy) {
	affected := map[string]bool{}
	for _, name := range eps {
		if ep := s.Endpoints[name]; ep != nil && ep.Spec.Node == c.node || c.progs[name] != nil {
			affected[name] = true
		}
	}
	patched := map[string]*program{}
	if len(gone)+len(came) > 0 {
		for name, p := range c.progs {
			if affected[name] || !selectedByAny(p.ep, gone) && !selectedByAny(p.ep, came) {
				continue // a program no changed policy selects stays as it is
			}
			np := &program{ep: p.ep, prog: p.prog, nsel: p.nsel}
			for _, cp := range gone {
				np.remove(cp)
			}
			for _, cp := range came {
				np.add(cp)
			}
			if np.nsel != p.nsel || !slices.EqualFunc(np.prog[:], p.prog[:], sameRules) {
				affected[name] = true
				patched[name] = np
			}
		}
	}
	memo := map[string][]*cpolicy{} // selecting policies by label key
	// First every affected endpoint leaves its tables, so that a table
	// whose rules changed is gone before its key is used again.
	for name := range affected {
		if p := c.progs[name]; p != nil {
			for _, lt := range p.tables {
				if lt != nil {
					c.leave(lt, name)
				}
			}
			delete(c.progs, name)
			delete(c.out.Endpoints, name)
		}
	}
	for name := range affected {
		ep := s.Endpoints[name]
		if ep == nil || ep.Spec.Node != c.node {
			continue
		}
		p := patched[name]
		if p == nil {
			p = newProgram(ep, selecting(c.rs, c.labelKeys[name], ep.Metadata.Labels, memo))
		}
		for d := range dirs {
			prog, selected := p.prog[d], p.nsel[d] > 0
			if !selected {
				continue
			}
			k := programKey(d, prog)
			lt := c.tables[k]
			if lt == nil {
				content := programContent(d, prog)
				lt = &liveTable{key: k, t: &table{dir: d, prog: prog, content: content}, hash: fnv32(content), users: map[string]bool{}}
				c.tables[k] = lt
				c.tableSetChanged = true
			}
			lt.users[name] = true
			p.tables[d] = lt
		}
		c.progs[name] = p
	}
	if c.tableSetChanged {
		c.numberTables()
		c.tableSetChanged = false
	}
	for name := range affected {
		if p := c.progs[name]; p != nil && (p.tables[0] != nil || p.tables[1] != nil) {
			c.out.Endpoints[name] = p.endpointTables()
		}
	}
}

func (p *program) endpointTables() EndpointTables {
	var et EndpointTables
	if p.tables[0] != nil {
		et.Ingress = p.tables[0].t.num
	}
	if p.tables[1] != nil {
		et.Egress = p.tables[1].t.num
	}
	return et
}

// leave takes name off lt's users; a table without users is removed with
// its entries.
func (c *Compiler) leave(lt *liveTable, name string) {
	delete(lt.users, name)
	if len(lt.users) > 0 {
		return
	}
	c.forget(lt)
	delete(c.tables, lt.key)
	c.tableSetChanged = true
}

// forget removes lt's decisions and entries: it is decided again.
func (c *Compiler) forget(lt *liveTable) {
	for _, k := range lt.keys {
		c.delPolicy(k)
	}
	lt.keys = nil
	for _, enc := range lt.subs {
		sub := c.subs[enc]
		if sub.users--; sub.users == 0 {
			for _, k := range sub.keys {
				c.delPolicy(k)
			}
			delete(c.subs, enc)
			delete(c.subSegs, enc)
		}
	}
	lt.subs, lt.dec = nil, nil
}

// numberTables numbers the tables in use by their content; a table whose
// number changes is written again, and its users' tables are updated.
func (c *Compiler) numberTables() {
	contents := make([]string, 0, len(c.tables))
	hashes := make(map[string]uint32, len(c.tables))
	for _, lt := range c.tables {
		contents = append(contents, lt.t.content)
		hashes[lt.t.content] = lt.hash
	}
	nums := numberBy(contents, func(s string) uint32 { return hashes[s] }, ^bpfmap.SubTableFlag, 1)
	for _, lt := range c.tables {
		n := nums[lt.t.content]
		if lt.t.num == n {
			continue
		}
		if lt.t.num != 0 {
			for _, k := range lt.keys {
				c.delPolicy(k)
			}
			lt.keys = nil
			lt.emit = true
			for name := range lt.users {
				c.out.Endpoints[name] = c.progs[name].endpointTables()
			}
		}
		lt.t.num = n
	}
}

// decide decides the tables that are not, numbers the source-port
// functions and writes the entries that are new or numbered anew.
func (c *Compiler) decide() {
	proj := make([][]int32, len(c.ids.list)) // scratch: each identity's atoms in the current table
	subsAdded := false
	for _, lt := range c.tables {
		if lt.dec != nil {
			continue
		}
		dec := decideTable(lt.t, c.deciders[lt.t.dir], c.ids, proj)
		lt.dec, lt.emit = &dec, true
		seen := map[string]bool{}
		for _, g := range dec.groups {
			for _, e := range g.d.entries() {
				if enc := e.val.sub; enc != "" && !seen[enc] {
					seen[enc] = true
					lt.subs = append(lt.subs, enc)
					sub := c.subs[enc]
					if sub == nil {
						sub = &liveSub{}
						c.subs[enc] = sub
						subsAdded = true
					}
					sub.users++
				}
			}
		}
	}
	// Source-port functions no table uses any more (a table decided
	// again may use others now).
	for enc, sub := range c.subs {
		if sub.users == 0 {
			for _, k := range sub.keys {
				c.delPolicy(k)
			}
			delete(c.subs, enc)
			delete(c.subSegs, enc)
			subsAdded = true
		}
	}
	if subsAdded {
		nums := number(slices.Collect(maps.Keys(c.subs)), ^bpfmap.SubTableFlag, 1)
		renumbered := map[string]bool{}
		for enc, sub := range c.subs {
			n := nums[enc] | bpfmap.SubTableFlag
			if sub.num == n {
				continue
			}
			for _, k := range sub.keys {
				c.delPolicy(k)
			}
			if sub.num != 0 {
				renumbered[enc] = true
			}
			sub.num, sub.keys = n, nil
		}
		for _, lt := range c.tables {
			if !lt.emit && slices.ContainsFunc(lt.subs, func(enc string) bool { return renumbered[enc] }) {
				for _, k := range lt.keys {
					c.delPolicy(k)
				}
				lt.keys, lt.emit = nil, true
			}
		}
		for enc, sub := range c.subs {
			if sub.keys == nil {
				part := map[bpfmap.PolicyKey]bpfmap.PolicyVerdict{}
				emitSport(part, sub.num, c.subSegs[enc])
				for k, v := range part {
					c.setPolicy(k, v)
					sub.keys = append(sub.keys, k)
				}
			}
		}
	}
	resolve := func(v value) bpfmap.PolicyVerdict {
		if v.sub != "" {
			return bpfmap.PolicyVerdict{Action: bpfmap.PolicySport, Sub: c.subs[v.sub].num}
		}
		return bpfmap.PolicyVerdict{Action: v.v.action, Rule: v.v.rule, LogRule: v.v.log}
	}
	for _, lt := range c.tables {
		if !lt.emit {
			continue
		}
		lt.emit = false
		for _, g := range lt.dec.groups {
			for _, e := range g.d.entries() {
				v := resolve(e.val)
				for _, id := range g.ids {
					k := bpfmap.PolicyKey{Table: lt.t.num, Identity: id, Bits: e.bits, Proto: e.proto, Port: e.port}
					c.setPolicy(k, v)
					lt.keys = append(lt.keys, k)
				}
			}
		}
	}
}

// selectedByAny says whether one of cps selects ep (as add and remove
// decide).
func selectedByAny(ep *model.WorkloadEndpoint, cps []*cpolicy) bool {
	for _, cp := range cps {
		if (cp.applies[0] || cp.applies[1]) && cp.sel.Matches(ep.Metadata.Labels) {
			return true
		}
	}
	return false
}

// sameRules says whether two programs of one direction hold the same rules.
func sameRules(a, b [][]*crule) bool {
	return slices.EqualFunc(a, b, func(x, y []*crule) bool { return slices.Equal(x, y) })
}
