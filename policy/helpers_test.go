package policy

import (
	"net/netip"
	"testing"

	"github.com/calyxnet/calyx/bpfmap"
	"github.com/calyxnet/calyx/model"
	"github.com/calyxnet/calyx/selector"
)

const local = "node-a"

// ep builds an endpoint on node with the given addresses and k=v labels.
func ep(name, node string, addrs []string, labels ...string) *model.WorkloadEndpoint {
	w := &model.WorkloadEndpoint{Metadata: model.Metadata{Name: name}}
	w.Spec.Node = node
	w.Spec.Interface = "tap-" + name
	for _, a := range addrs {
		w.Spec.IPNetworks = append(w.Spec.IPNetworks, hostPrefix(netip.MustParseAddr(a)))
	}
	if len(labels) > 0 {
		w.Metadata.Labels = map[string]string{}
		for i := 0; i+1 < len(labels); i += 2 {
			w.Metadata.Labels[labels[i]] = labels[i+1]
		}
	}
	return w
}

// pol builds a policy; order nil when order < 0. Types are defaulted as the
// model does.
func pol(name string, order float64, sel string, ingress, egress []model.Rule) *model.NetworkPolicy {
	p := &model.NetworkPolicy{Metadata: model.Metadata{Name: name}}
	if order >= 0 {
		p.Spec.Order = &order
	}
	p.Spec.Selector, p.Spec.Ingress, p.Spec.Egress = sel, ingress, egress
	model.ApplyDefaults(p)
	return p
}

func snapshot(eps []*model.WorkloadEndpoint, pols ...*model.NetworkPolicy) *model.Snapshot {
	s := model.NewSnapshot()
	for _, e := range eps {
		s.Endpoints[e.Metadata.Name] = e
	}
	for _, p := range pols {
		s.Policies[p.Metadata.Name] = p
	}
	return s
}

func nets(ps ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range ps {
		out = append(out, netip.MustParsePrefix(p))
	}
	return out
}

func ports(rs ...uint16) []model.PortRange {
	var out []model.PortRange
	for i := 0; i+1 < len(rs); i += 2 {
		out = append(out, model.PortRange{First: rs[i], Last: rs[i+1]})
	}
	return out
}

func mustCompile(t testing.TB, s *model.Snapshot, hosts ...string) *Output {
	t.Helper()
	in := Input{Snapshot: s, Node: local}
	for _, h := range hosts {
		in.HostAddrs = append(in.HostAddrs, netip.MustParseAddr(h))
	}
	out, err := Compile(in)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	checkOutput(t, out)
	return out
}

// checkOutput checks invariants every Output must keep: every table an
// endpoint uses has a full identity-0 entry, every sub-table a base entry,
// and every rule number it holds is described.
func checkOutput(t testing.TB, out *Output) {
	t.Helper()
	for name, et := range out.Endpoints {
		for _, tb := range []uint32{et.Ingress, et.Egress} {
			if tb == 0 {
				continue
			}
			if tb&bpfmap.SubTableFlag != 0 {
				t.Errorf("endpoint %s: table %#x has the sub-table flag", name, tb)
			}
			if _, ok := out.Policy[bpfmap.PolicyKey{Table: tb}]; !ok {
				t.Errorf("endpoint %s: table %d has no identity-0 any-protocol entry", name, tb)
			}
		}
	}
	for k, v := range out.Policy {
		if k.Bits != 0 && (k.Bits < 8 || k.Bits > 24) {
			t.Errorf("key %+v: bad Bits", k)
		}
		if k.Bits <= 8 && k.Port != 0 || k.Bits == 0 && k.Proto != 0 {
			t.Errorf("key %+v: bits beyond the prefix are set", k)
		}
		if k.Bits > 8 && k.Port&(0xffff>>(k.Bits-8)) != 0 {
			t.Errorf("key %+v: port bits beyond the prefix are set", k)
		}
		if k.Table&bpfmap.SubTableFlag != 0 {
			if k.Identity != 0 || k.Proto != 0 || k.Bits < 8 {
				t.Errorf("sub-table key %+v: want identity 0, proto 0, bits >= 8", k)
			}
			if _, ok := out.Policy[bpfmap.PolicyKey{Table: k.Table, Bits: 8}]; !ok {
				t.Errorf("sub-table %#x has no base entry", k.Table)
			}
		} else if k.Identity != 0 {
			if _, ok := out.Policy[bpfmap.PolicyKey{Table: k.Table, Identity: k.Identity}]; !ok {
				t.Errorf("table %d identity %d: no any-protocol entry, so the identity-0 fallback would leak in", k.Table, k.Identity)
			}
		}
		switch v.Action {
		case bpfmap.PolicySport:
			if v.Sub&bpfmap.SubTableFlag == 0 || k.Table&bpfmap.SubTableFlag != 0 {
				t.Errorf("key %+v: bad sub-table verdict %+v", k, v)
			}
			if _, ok := out.Policy[bpfmap.PolicyKey{Table: v.Sub, Bits: 8}]; !ok {
				t.Errorf("key %+v: sub-table %#x missing", k, v.Sub)
			}
		case bpfmap.PolicyAllow, bpfmap.PolicyDeny:
			for _, id := range []uint32{v.Rule, v.LogRule} {
				if _, ok := out.Rules[id]; id != 0 && !ok {
					t.Errorf("key %+v: rule %d is not in Rules", k, id)
				}
			}
			if v.Rule == 0 {
				t.Errorf("key %+v: verdict without a rule", k)
			}
		default:
			t.Errorf("key %+v: bad action %v", k, v.Action)
		}
	}
}

// ruleID returns the number Compile gave a rule.
func ruleID(t testing.TB, out *Output, policy string, dir model.PolicyType, index int) uint32 {
	t.Helper()
	for id, r := range out.Rules {
		if r.Policy == policy && r.Direction == dir && r.Index == index {
			return id
		}
	}
	t.Fatalf("no rule %s/%s/%d", policy, dir, index)
	return 0
}

// query looks a packet up as the datapath would: endpoint's table for the
// direction, the remote's identity, then the policy tables.
func query(t testing.TB, out *Output, endpoint string, dir model.PolicyType, remote string, proto uint8, port, sport uint16) bpfmap.PolicyVerdict {
	t.Helper()
	table := out.Endpoints[endpoint].Ingress
	if dir == model.PolicyEgress {
		table = out.Endpoints[endpoint].Egress
	}
	e, _ := LookupIdentity(out, netip.MustParseAddr(remote))
	v, ok := Lookup(out, table, e.Identity, e.NetIdentity, proto, port, sport)
	if !ok {
		t.Fatalf("%s %s from %s proto %d port %d sport %d: no entry", endpoint, dir, remote, proto, port, sport)
	}
	return v
}

// reference evaluates policy for one packet the slow, obvious way: walk
// the policies and their rules. It returns whether any policy selects the
// endpoint, and if so the verdict, with rule numbers taken from out.
type refPacket struct {
	remote       netip.Addr
	proto        uint8
	port, sport  uint16 // port: destination port, or type<<8|code for ICMP
	dir          model.PolicyType
	localEP      *model.WorkloadEndpoint
	snap         *model.Snapshot
	remoteLabels map[string]string // of the endpoint behind remote; nil when none
	remoteIsEP   bool
	remoteAddr   netip.Addr // remote, with a floating IP replaced by its fixed IP
}

func newRefPacket(s *model.Snapshot, local *model.WorkloadEndpoint, dir model.PolicyType, remote netip.Addr, proto uint8, port, sport uint16) *refPacket {
	p := &refPacket{remote: remote, proto: proto, port: port, sport: sport, dir: dir, localEP: local, snap: s, remoteAddr: remote}
	for _, f := range s.FloatingIPs {
		if f.Spec.IP == remote {
			if fixed, ok := s.FixedIP(f); ok {
				p.remoteAddr = fixed
			}
		}
	}
	for _, e := range s.Endpoints {
		for _, n := range e.Spec.IPNetworks {
			if n.Addr() == p.remoteAddr {
				p.remoteIsEP, p.remoteLabels = true, e.Metadata.Labels
			}
		}
	}
	return p
}

func reference(t testing.TB, out *Output, p *refPacket) (bool, bpfmap.PolicyVerdict) {
	var ps []*model.NetworkPolicy
	for _, pol := range p.snap.Policies {
		ps = append(ps, pol)
	}
	model.SortPolicies(ps)
	selected := false
	var log uint32
	for _, pol := range ps {
		if !pol.Spec.AppliesTo(p.dir) || !selector.MustParse(pol.Spec.Selector).Matches(p.localEP.Metadata.Labels) {
			continue
		}
		selected = true
		rules := pol.Spec.Ingress
		if p.dir == model.PolicyEgress {
			rules = pol.Spec.Egress
		}
	rules:
		for i := range rules {
			r := &rules[i]
			if !p.matches(r) {
				continue
			}
			id := ruleID(t, out, pol.Metadata.Name, p.dir, i)
			switch r.Action {
			case model.RuleAllow:
				return true, bpfmap.PolicyVerdict{Action: bpfmap.PolicyAllow, Rule: id, LogRule: log}
			case model.RuleDeny:
				return true, bpfmap.PolicyVerdict{Action: bpfmap.PolicyDeny, Rule: id, LogRule: log}
			case model.RuleLog:
				if log == 0 {
					log = id
				}
			case model.RulePass:
				break rules
			}
		}
	}
	if !selected {
		return false, bpfmap.PolicyVerdict{Action: bpfmap.PolicyAllow}
	}
	def := bpfmap.RuleDefaultDenyIngress
	if p.dir == model.PolicyEgress {
		def = bpfmap.RuleDefaultDenyEgress
	}
	return true, bpfmap.PolicyVerdict{Action: bpfmap.PolicyDeny, Rule: def, LogRule: log}
}

func (p *refPacket) matches(r *model.Rule) bool {
	if r.Protocol != 0 && r.Protocol != p.proto {
		return false
	}
	if r.ICMP != nil {
		if p.proto != model.ProtoICMP && p.proto != model.ProtoICMPv6 {
			return false
		}
		if uint8(p.port>>8) != r.ICMP.Type || r.ICMP.HasCode && uint8(p.port) != r.ICMP.Code {
			return false
		}
	}
	hasPorts := len(r.Source.Ports)+len(r.Source.NotPorts)+len(r.Destination.Ports)+len(r.Destination.NotPorts) > 0
	if hasPorts {
		switch p.proto {
		case model.ProtoTCP, model.ProtoUDP, model.ProtoSCTP:
		default:
			return false
		}
		if !portsOK(r.Destination, p.port) || !portsOK(r.Source, p.sport) {
			return false
		}
	}
	remote, local := r.Source, r.Destination
	if p.dir == model.PolicyEgress {
		remote, local = local, remote
	}
	// Remote side: the address (a floating IP counts as its fixed IP).
	if !addrOK(remote, p.remoteAddr) {
		return false
	}
	if remote.Selector != "" && (!p.remoteIsEP || !selector.MustParse(remote.Selector).Matches(p.remoteLabels)) {
		return false
	}
	if remote.NotSelector != "" && p.remoteIsEP && selector.MustParse(remote.NotSelector).Matches(p.remoteLabels) {
		return false
	}
	// Local side: the endpoint.
	if local.Selector != "" && !selector.MustParse(local.Selector).Matches(p.localEP.Metadata.Labels) {
		return false
	}
	if local.NotSelector != "" && selector.MustParse(local.NotSelector).Matches(p.localEP.Metadata.Labels) {
		return false
	}
	if len(local.Nets)+len(local.NotNets) > 0 {
		ok := false
		for _, n := range p.localEP.Spec.IPNetworks {
			ok = ok || addrOK(local, n.Addr())
		}
		if !ok {
			return false
		}
	}
	return true
}

func portsOK(e model.EntityRule, port uint16) bool {
	in := func(rs []model.PortRange) bool {
		for _, r := range rs {
			if r.First <= port && port <= r.Last {
				return true
			}
		}
		return false
	}
	return (len(e.Ports) == 0 || in(e.Ports)) && !in(e.NotPorts)
}

func addrOK(e model.EntityRule, a netip.Addr) bool {
	in := func(ps []netip.Prefix) bool {
		for _, p := range ps {
			if p.Contains(a) {
				return true
			}
		}
		return false
	}
	return (len(e.Nets) == 0 || in(e.Nets)) && !in(e.NotNets)
}
