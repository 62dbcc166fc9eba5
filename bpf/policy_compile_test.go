package bpf_test

// BPF_PROG_TEST_RUN of NetworkPolicy as the agent programs it: policies in
// the model, compiled by package policy, written into the maps, and packets
// through calyx_from_wl. One case per match type, for rule order, Log,
// Pass, default deny and replies; each checks the verdict, the drop
// counter and which rule decided (its hit counter).

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/calyxnet/calyx/bpf/bpftest"
	"github.com/calyxnet/calyx/bpfmap"
	"github.com/calyxnet/calyx/model"
	"github.com/calyxnet/calyx/policy"
)

// compiledEnv is newTunnelEnv with wl1-wl4 as endpoints of node n1 in a
// model with policies, compiled and programmed. Labels:
//
//	wl1 role=client tier=a   wl3 role=client tier=b
//	wl2 role=web             wl4 role=other
func compiledEnv(t *testing.T, policies ...*model.NetworkPolicy) (*env, *policy.Output) {
	t.Helper()
	e := newTunnelEnv(t)
	s := model.NewSnapshot()
	s.Put(&model.Node{Metadata: model.Metadata{Name: "n1"}, Spec: model.NodeSpec{IPv4Address: netip.MustParsePrefix("10.30.0.10/24")}})
	labels := map[*endpoint]map[string]string{
		e.wl1: {"role": "client", "tier": "a"}, e.wl2: {"role": "web"},
		e.wl3: {"role": "client", "tier": "b"}, e.wl4: {"role": "other"},
	}
	for ep, l := range labels {
		s.Put(&model.WorkloadEndpoint{Metadata: model.Metadata{Name: ep.name, Labels: l},
			Spec: model.WorkloadEndpointSpec{Node: "n1", Interface: ep.name + "h", IPNetworks: []netip.Prefix{netip.PrefixFrom(ep.ip4, 32)}}})
	}
	for _, p := range policies {
		model.ApplyDefaults(p)
		if err := model.Validate(p); err != nil {
			t.Fatalf("policy %s: %v", p.Metadata.Name, err)
		}
		s.Put(p)
	}
	out, err := policy.Compile(policy.Input{Snapshot: s, Node: "n1", HostAddrs: []netip.Addr{hostAddr}})
	if err != nil {
		t.Fatal(err)
	}
	for p, v := range out.IPCache {
		must(t, e.dp.Maps.IPCache.Put(p, v))
	}
	e.putPolicy(t, out.Policy)
	for ep := range labels {
		tb := out.Endpoints[ep.name]
		e.setTables(t, ep, tb.Ingress, tb.Egress)
	}
	return e, out
}

func ingressPolicy(name string, order float64, rules ...model.Rule) *model.NetworkPolicy {
	return &model.NetworkPolicy{Metadata: model.Metadata{Name: name}, Spec: model.NetworkPolicySpec{
		Order: &order, Selector: `role == "web"`, Types: []model.PolicyType{model.PolicyIngress}, Ingress: rules}}
}

func ports(rs ...[2]uint16) []model.PortRange {
	var out []model.PortRange
	for _, r := range rs {
		out = append(out, model.PortRange{First: r[0], Last: r[1]})
	}
	return out
}

func host32(a netip.Addr) []netip.Prefix { return []netip.Prefix{netip.PrefixFrom(a, 32)} }

// probe is one packet to wl2 and what must become of it: allowed or not,
// and the rule that decided ("p[1]", or "default").
type probe struct {
	name  string
	pkt   func(e *env) (*endpoint, []byte)
	allow bool
	rule  string
}

func tcpTo(port uint16, src func(e *env) *endpoint) func(e *env) (*endpoint, []byte) {
	return func(e *env) (*endpoint, []byte) {
		s := src(e)
		return s, bpftest.IPv4TCP(s.l2(), bpftest.IPv4{Src: s.ip4, Dst: e.wl2.ip4, TTL: 64}, 40000, port)
	}
}

func udpTo(sport, port uint16, src func(e *env) *endpoint) func(e *env) (*endpoint, []byte) {
	return func(e *env) (*endpoint, []byte) {
		s := src(e)
		return s, bpftest.IPv4UDP(s.l2(), bpftest.IPv4{Src: s.ip4, Dst: e.wl2.ip4, TTL: 64}, sport, port, nil)
	}
}

func pingFrom(src func(e *env) *endpoint) func(e *env) (*endpoint, []byte) {
	return func(e *env) (*endpoint, []byte) {
		s := src(e)
		return s, bpftest.IPv4ICMPEcho(s.l2(), bpftest.IPv4{Src: s.ip4, Dst: e.wl2.ip4, TTL: 64}, 7, 1)
	}
}

var (
	fromWL1 = func(e *env) *endpoint { return e.wl1 }
	fromWL3 = func(e *env) *endpoint { return e.wl3 }
	fromWL4 = func(e *env) *endpoint { return e.wl4 }
)

func TestCompiledPolicyMatchTypes(t *testing.T) {
	allow := model.RuleAllow
	var icmpEcho = &model.ICMPMatch{Type: 8}
	var icmpEcho1 = &model.ICMPMatch{Type: 8, Code: 1, HasCode: true}
	sel := func(s string) model.EntityRule { return model.EntityRule{Selector: s} }
	cases := []struct {
		name     string
		policies []*model.NetworkPolicy
		probes   []probe
	}{
		{"protocol", []*model.NetworkPolicy{ingressPolicy("p", 1, model.Rule{Action: allow, Protocol: model.ProtoTCP})}, []probe{
			{"tcp", tcpTo(80, fromWL1), true, "p[0]"},
			{"udp", udpTo(40000, 80, fromWL1), false, "default"},
		}},
		{"icmp type", []*model.NetworkPolicy{ingressPolicy("p", 1, model.Rule{Action: allow, Protocol: model.ProtoICMP, ICMP: icmpEcho})}, []probe{
			{"echo", pingFrom(fromWL1), true, "p[0]"},
			{"tcp", tcpTo(80, fromWL1), false, "default"},
		}},
		{"icmp type and code", []*model.NetworkPolicy{ingressPolicy("p", 1, model.Rule{Action: allow, Protocol: model.ProtoICMP, ICMP: icmpEcho1})}, []probe{
			{"echo code 0", pingFrom(fromWL1), false, "default"},
		}},
		{"nets", []*model.NetworkPolicy{ingressPolicy("p", 1, model.Rule{Action: allow, Source: model.EntityRule{Nets: host32(wl1Addr)}})}, []probe{
			{"in", tcpTo(80, fromWL1), true, "p[0]"},
			{"out", tcpTo(80, fromWL4), false, "default"},
		}},
		{"notNets", []*model.NetworkPolicy{ingressPolicy("p", 1, model.Rule{Action: allow, Source: model.EntityRule{NotNets: host32(wl1Addr)}})}, []probe{
			{"in", tcpTo(80, fromWL1), false, "default"},
			{"out", tcpTo(80, fromWL4), true, "p[0]"},
		}},
		{"selector", []*model.NetworkPolicy{ingressPolicy("p", 1, model.Rule{Action: allow, Source: sel(`role == "client"`)})}, []probe{
			{"client", tcpTo(80, fromWL1), true, "p[0]"},
			{"other", tcpTo(80, fromWL4), false, "default"},
		}},
		{"notSelector", []*model.NetworkPolicy{ingressPolicy("p", 1, model.Rule{Action: allow, Source: model.EntityRule{NotSelector: `role == "client"`}})}, []probe{
			{"client", tcpTo(80, fromWL1), false, "default"},
			{"other", tcpTo(80, fromWL4), true, "p[0]"},
		}},
		{"ports", []*model.NetworkPolicy{ingressPolicy("p", 1, model.Rule{Action: allow, Protocol: model.ProtoTCP,
			Destination: model.EntityRule{Ports: ports([2]uint16{443, 443}, [2]uint16{8000, 8080})}})}, []probe{
			{"443", tcpTo(443, fromWL1), true, "p[0]"},
			{"8042 in range", tcpTo(8042, fromWL1), true, "p[0]"},
			{"8081", tcpTo(8081, fromWL1), false, "default"},
			{"80", tcpTo(80, fromWL1), false, "default"},
		}},
		{"notPorts", []*model.NetworkPolicy{ingressPolicy("p", 1, model.Rule{Action: allow, Protocol: model.ProtoTCP,
			Destination: model.EntityRule{NotPorts: ports([2]uint16{443, 443})}})}, []probe{
			{"443", tcpTo(443, fromWL1), false, "default"},
			{"80", tcpTo(80, fromWL1), true, "p[0]"},
		}},
		{"source ports", []*model.NetworkPolicy{ingressPolicy("p", 1, model.Rule{Action: allow, Protocol: model.ProtoUDP,
			Source: model.EntityRule{Ports: ports([2]uint16{40000, 40000})}})}, []probe{
			{"40000", udpTo(40000, 53, fromWL1), true, "p[0]"},
			{"40001", udpTo(40001, 53, fromWL1), false, "default"},
		}},
		{"deny before allow", []*model.NetworkPolicy{ingressPolicy("p", 1,
			model.Rule{Action: model.RuleDeny, Source: sel(`tier == "a"`)},
			model.Rule{Action: allow, Source: sel(`role == "client"`)})}, []probe{
			{"tier a", tcpTo(80, fromWL1), false, "p[0]"},
			{"tier b", tcpTo(80, fromWL3), true, "p[1]"},
		}},
		{"log then allow", []*model.NetworkPolicy{ingressPolicy("p", 1,
			model.Rule{Action: model.RuleLog, Protocol: model.ProtoTCP},
			model.Rule{Action: allow, Source: sel(`role == "client"`)})}, []probe{
			{"logged", tcpTo(80, fromWL1), true, "p[1]+log p[0]"},
			{"not logged", udpTo(40000, 53, fromWL1), true, "p[1]"},
		}},
		{"pass", []*model.NetworkPolicy{
			ingressPolicy("p", 1, model.Rule{Action: model.RulePass, Source: sel(`role == "client"`)},
				model.Rule{Action: allow}),
			ingressPolicy("q", 2, model.Rule{Action: allow, Source: model.EntityRule{Nets: host32(wl1Addr)}}),
		}, []probe{
			{"passed, then allowed by q", tcpTo(80, fromWL1), true, "q[0]"},
			{"passed, nothing in q", tcpTo(80, fromWL3), false, "default"},
			{"not passed", tcpTo(80, fromWL4), true, "p[1]"},
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e, out := compiledEnv(t, c.policies...)
			for _, p := range c.probes {
				src, pkt := p.pkt(e)
				before := e.hits(t)
				o := e.fromWL(t, src, pkt)
				if p.allow {
					o.want(t, redirect, hit{src, bpfmap.ReasonDeliverLocal}, hit{e.wl2, bpfmap.ReasonToWorkload})
				} else {
					o.want(t, shot, hit{src, bpfmap.ReasonDropPolicy})
				}
				if got := decidedBy(t, e, out, before, e.wl2); got != p.rule {
					t.Errorf("%s: decided by %s, want %s", p.name, got, p.rule)
				}
			}
		})
	}
}

// wl1Addr is wl1's address (newEnv), which policies name before the env exists.
var wl1Addr = netip.MustParseAddr("10.65.0.10")

// decidedBy names the rules whose hit counters on ep moved since before:
// "p[1]", "default", or "p[1]+log p[0]".
func decidedBy(t *testing.T, e *env, out *policy.Output, before map[bpfmap.RuleHitKey]bpfmap.Counter, ep *endpoint) string {
	t.Helper()
	var decided, logged string
	for k, c := range e.hits(t) {
		if k.Ifindex != ep.idx() || c.Packets == before[k].Packets {
			continue
		}
		name := "default"
		if ri, ok := out.Rules[k.Rule]; ok && ri.Policy != "" {
			name = fmt.Sprintf("%s[%d]", ri.Policy, ri.Index)
			if ri.Action == model.RuleLog {
				logged = name
				continue
			}
		}
		decided = name
	}
	if logged != "" {
		return decided + "+log " + logged
	}
	return decided
}

// Replies of a flow the compiled policy allowed pass the other end's
// egress policy (which allows nothing), and a new flow that way does not.
func TestCompiledPolicyReplies(t *testing.T) {
	lockdown := &model.NetworkPolicy{Metadata: model.Metadata{Name: "web-closed"}, Spec: model.NetworkPolicySpec{
		Selector: `role == "web"`, Types: []model.PolicyType{model.PolicyIngress, model.PolicyEgress},
		Ingress: []model.Rule{{Action: model.RuleAllow, Source: model.EntityRule{Selector: `role == "client"`}}}}}
	e, _ := compiledEnv(t, lockdown)
	a, b := e.wl1, e.wl2
	req := bpftest.IPv4UDP(a.l2(), bpftest.IPv4{Src: a.ip4, Dst: b.ip4, TTL: 64}, 40000, 53, nil)
	e.fromWL(t, a, req).want(t, redirect, hit{a, bpfmap.ReasonDeliverLocal}, hit{b, bpfmap.ReasonToWorkload})
	reply := bpftest.IPv4UDP(b.l2(), bpftest.IPv4{Src: b.ip4, Dst: a.ip4, TTL: 64}, 53, 40000, nil)
	e.fromWL(t, b, reply).want(t, redirect, hit{b, bpfmap.ReasonDeliverLocal}, hit{a, bpfmap.ReasonToWorkload})
	other := bpftest.IPv4UDP(b.l2(), bpftest.IPv4{Src: b.ip4, Dst: a.ip4, TTL: 64}, 53, 40001, nil)
	e.fromWL(t, b, other).want(t, shot, hit{b, bpfmap.ReasonDropPolicy})
}
