// Package policymodel builds the NetworkPolicy models calyx's policy
// benchmarks measure (issue 5), so that the per-packet benchmark in bpf/,
// the control-plane run and the two-host run use the same shapes.
//
// Two shapes:
//
//   - Policies(n): n policies of 10 rules each (5 ingress, 5 egress) over
//     endpoints labelled by Labels, with selectors, nets, notNets,
//     notSelector, single ports and port ranges, Allow and Deny. Policy j
//     applies to the endpoints of a pair of apps (2j mod 100, 2j+1 mod
//     100), so at 1,000 policies each pair is selected by 20 of them (200
//     rules per endpoint). The flow Flow describes — TCP from an app-0
//     endpoint to an app-1 endpoint — is allowed by the last egress rule
//     of the last policy selecting app-0 and by the last ingress rule of
//     the last policy selecting app-1; every earlier rule lets it through.
//   - ServerIngress(n): n ingress rules on one server endpoint, each one
//     an iptables rule as well (IPTablesRules), the one allowing the
//     client last: iptables' worst case.
package policymodel

import (
	"fmt"
	"net/netip"

	"github.com/calyxnet/calyx/model"
)

// Apps is the number of distinct app labels.
const Apps = 100

// RulesPerPolicy is the size of every policy of Policies.
const RulesPerPolicy = 10

// pairs is the number of app pairs policies select.
const pairs = Apps / 2

var envs = []string{"prod", "dev", "staging"}

// App names app k.
func App(k int) string { return fmt.Sprintf("app-%d", k%Apps) }

// Labels are endpoint i's labels: app-(i mod 100), role-(i mod 10) and an
// env among prod, dev and staging.
func Labels(i int) map[string]string {
	return map[string]string{"app": App(i), "role": fmt.Sprintf("role-%d", i%10), "env": envs[i%3]}
}

// PolicyName names policy j.
func PolicyName(j int) string { return fmt.Sprintf("bench-pol-%04d", j) }

func ports(ps ...uint16) []model.PortRange {
	var out []model.PortRange
	for i := 0; i+1 < len(ps); i += 2 {
		out = append(out, model.PortRange{First: ps[i], Last: ps[i+1]})
	}
	return out
}

func prefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

// FlowPortBase is the destination port of policy 0's flow rules; policy j's
// allow port FlowPortBase+j.
const FlowPortBase = 7000

// Policy returns policy j of Policies.
func Policy(j int) *model.NetworkPolicy {
	a := (2 * j) % Apps
	b := a + 1
	flow := uint16(FlowPortBase + j)
	order := float64(j)
	tcp, udp := model.ProtoTCP, model.ProtoUDP
	allow, deny := model.RuleAllow, model.RuleDeny
	p := &model.NetworkPolicy{
		Metadata: model.Metadata{Name: PolicyName(j)},
		Spec: model.NetworkPolicySpec{
			Order:    &order,
			Selector: fmt.Sprintf("app in {%q, %q}", App(a), App(b)),
			Types:    []model.PolicyType{model.PolicyIngress, model.PolicyEgress},
			Ingress: []model.Rule{
				{Action: allow, Protocol: tcp, Source: model.EntityRule{Selector: fmt.Sprintf("role == \"role-%d\"", j%10)},
					Destination: model.EntityRule{Ports: ports(80, 80, 443, 443)}},
				{Action: allow, Protocol: tcp, Source: model.EntityRule{Selector: fmt.Sprintf("app == %q && env == \"prod\"", App(a+2))},
					Destination: model.EntityRule{Ports: ports(8000, 8080)}},
				{Action: deny, Source: model.EntityRule{Nets: prefixes(fmt.Sprintf("172.16.%d.0/24", j%256), fmt.Sprintf("172.17.%d.0/24", j/256%256))}},
				{Action: allow, Protocol: udp, Source: model.EntityRule{Nets: prefixes("10.66.0.0/16"), NotNets: prefixes(fmt.Sprintf("10.66.%d.0/24", j%4))},
					Destination: model.EntityRule{Ports: ports(53, 53, 5353, 5353)}},
				{Action: allow, Protocol: tcp, Source: model.EntityRule{Selector: fmt.Sprintf("app == %q", App(a)), NotSelector: "env == \"staging\""},
					Destination: model.EntityRule{Ports: ports(flow, flow)}},
			},
			Egress: []model.Rule{
				{Action: allow, Protocol: tcp, Destination: model.EntityRule{Selector: fmt.Sprintf("app == %q", App(a+7)), Ports: ports(5432, 5432)}},
				{Action: allow, Protocol: tcp, Destination: model.EntityRule{Nets: prefixes("0.0.0.0/0"), NotNets: prefixes("10.0.0.0/8"), Ports: ports(443, 443)}},
				{Action: allow, Protocol: udp, Destination: model.EntityRule{Nets: prefixes("10.96.0.0/12"), Ports: ports(53, 53)}},
				{Action: deny, Protocol: tcp, Destination: model.EntityRule{Ports: ports(25, 25, 465, 587)}},
				{Action: allow, Protocol: tcp, Destination: model.EntityRule{Selector: fmt.Sprintf("app == %q", App(b)), Ports: ports(flow, flow)}},
			},
		},
	}
	model.ApplyDefaults(p)
	return p
}

// Policies returns n policies of RulesPerPolicy rules each.
func Policies(n int) []*model.NetworkPolicy {
	out := make([]*model.NetworkPolicy, n)
	for j := range out {
		out[j] = Policy(j)
	}
	return out
}

// Flow is the measured flow of Policies(n): TCP from an endpoint labelled
// app-0 (role-0, env prod) to one labelled app-1, to Port.
type Flow struct {
	Port uint16
	// Policy is the last policy selecting both ends: its last egress rule
	// (index LastRule) allows the flow out of the source, its last ingress
	// rule into the destination.
	Policy   string
	LastRule int
}

// FlowOf returns the flow Policies(n) allows last.
func FlowOf(n int) Flow {
	last := (n - 1) / pairs * pairs // the last j ≡ 0 (mod 50)
	return Flow{Port: uint16(FlowPortBase + last), Policy: PolicyName(last), LastRule: RulesPerPolicy/2 - 1}
}

// PerPacket is the per-packet benchmark's model.
type PerPacket struct {
	Snapshot *model.Snapshot
	// Node is the node of Src and Dst, whose tables are measured.
	Node     string
	Src, Dst string // endpoint names
	Flow     Flow
}

// PerPacketModel returns a model of endpoints endpoints on ten nodes
// (endpoint i on node-(i*10/endpoints)), labelled by Labels, and
// policies totalling rules rules (a multiple of RulesPerPolicy). Endpoint 0
// (app-0) has address src, endpoint 1 (app-1) dst, both on node-0; the
// others have addresses in 10.66.0.0/16.
func PerPacketModel(endpoints, rules int, src, dst netip.Addr) PerPacket {
	s := model.NewSnapshot()
	pool := &model.IPPool{Metadata: model.Metadata{Name: "bench"}, Spec: model.IPPoolSpec{CIDR: netip.MustParsePrefix("10.64.0.0/10")}}
	model.ApplyDefaults(pool)
	s.Pools[pool.Metadata.Name] = pool
	for k := range 10 {
		n := &model.Node{Metadata: model.Metadata{Name: fmt.Sprintf("node-%d", k)},
			Spec: model.NodeSpec{IPv4Address: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 30, 0, byte(10 + k)}), 24)}}
		s.Nodes[n.Metadata.Name] = n
	}
	for i := range endpoints {
		a := netip.AddrFrom4([4]byte{10, 66, byte(i / 250), byte(i%250 + 1)})
		switch i {
		case 0:
			a = src
		case 1:
			a = dst
		}
		e := &model.WorkloadEndpoint{
			Metadata: model.Metadata{Name: fmt.Sprintf("ep-%04d", i), Labels: Labels(i)},
			Spec: model.WorkloadEndpointSpec{Node: fmt.Sprintf("node-%d", i*10/endpoints), Interface: fmt.Sprintf("tap%04d", i),
				IPNetworks: []netip.Prefix{netip.PrefixFrom(a, 32)}},
		}
		s.Endpoints[e.Metadata.Name] = e
	}
	for _, p := range Policies(rules / RulesPerPolicy) {
		s.Policies[p.Metadata.Name] = p
	}
	return PerPacket{Snapshot: s, Node: "node-0", Src: "ep-0000", Dst: "ep-0001", Flow: FlowOf(rules / RulesPerPolicy)}
}

// ServerLabels and ClientLabels are the labels ServerIngress selects by.
var (
	ServerLabels = map[string]string{"app": "load-server"}
	ClientLabels = map[string]string{"role": "load-client"}
)

// ServerRulesPerPolicy is the size of each of ServerIngress's policies
// (the last one may be smaller).
const ServerRulesPerPolicy = 10

// ServerIngress returns policies totalling n ingress rules on the
// endpoints labelled ServerLabels: rule g (0-based, across policies in
// order) is ServerRule(g, n, port). None but the last matches a TCP
// connection from an address in 10.65.0.0/16 to port; the last allows it
// from endpoints labelled ClientLabels.
func ServerIngress(n int, port uint16) []*model.NetworkPolicy {
	var out []*model.NetworkPolicy
	for j := 0; j*ServerRulesPerPolicy < n; j++ {
		order := float64(j)
		p := &model.NetworkPolicy{
			Metadata: model.Metadata{Name: fmt.Sprintf("bench-server-%04d", j)},
			Spec: model.NetworkPolicySpec{Order: &order, Selector: "app == \"load-server\"",
				Types: []model.PolicyType{model.PolicyIngress}},
		}
		for g := j * ServerRulesPerPolicy; g < min(n, (j+1)*ServerRulesPerPolicy); g++ {
			p.Spec.Ingress = append(p.Spec.Ingress, ServerRule(g, n, port).Rule)
		}
		model.ApplyDefaults(p)
		out = append(out, p)
	}
	return out
}

// ServerPolicyOf names the policy and index of rule g of ServerIngress.
func ServerPolicyOf(g int) (string, int) {
	return fmt.Sprintf("bench-server-%04d", g/ServerRulesPerPolicy), g % ServerRulesPerPolicy
}

// Rule is one rule of ServerIngress, in both forms.
type Rule struct {
	Rule model.Rule
	// IPTables is the rule's iptables match and target (without -A
	// CHAIN); ClientSelector is set on the rule whose source is the
	// client endpoint, whose address the caller fills in for
	// "$CLIENT".
	IPTables       string
	ClientSelector bool
}

// ServerRule returns rule g of ServerIngress(n, port). The rules cycle
// through four kinds, so that iptables evaluates each one as far as the
// kernel's lookup would have to: a source that does not match
// (172.16.0.0/12 host addresses), a source that matches the client's
// 10.65.0.0/16 with a destination port that does not, another protocol
// (UDP, denied), a source net that does not match with a port range.
func ServerRule(g, n int, port uint16) Rule {
	tcp, udp := model.ProtoTCP, model.ProtoUDP
	if g == n-1 {
		return Rule{Rule: model.Rule{Action: model.RuleAllow, Protocol: tcp,
			Source:      model.EntityRule{Selector: "role == \"load-client\""},
			Destination: model.EntityRule{Ports: ports(port, port)}},
			IPTables: fmt.Sprintf("-s $CLIENT/32 -p tcp -m tcp --dport %d -j ACCEPT", port), ClientSelector: true}
	}
	switch g % 4 {
	case 0:
		src := fmt.Sprintf("172.%d.%d.%d/32", 16+g>>16&0xf, g>>8&0xff, g&0xff)
		return Rule{Rule: model.Rule{Action: model.RuleAllow, Protocol: tcp, Source: model.EntityRule{Nets: prefixes(src)},
			Destination: model.EntityRule{Ports: ports(port, port)}},
			IPTables: fmt.Sprintf("-s %s -p tcp -m tcp --dport %d -j ACCEPT", src, port)}
	case 1:
		p := uint16(10000 + g)
		return Rule{Rule: model.Rule{Action: model.RuleAllow, Protocol: tcp, Source: model.EntityRule{Nets: prefixes("10.65.0.0/16")},
			Destination: model.EntityRule{Ports: ports(p, p)}},
			IPTables: fmt.Sprintf("-s 10.65.0.0/16 -p tcp -m tcp --dport %d -j ACCEPT", p)}
	case 2:
		return Rule{Rule: model.Rule{Action: model.RuleDeny, Protocol: udp, Source: model.EntityRule{Nets: prefixes("10.65.0.0/16")},
			Destination: model.EntityRule{Ports: ports(53, 53)}},
			IPTables: "-s 10.65.0.0/16 -p udp -m udp --dport 53 -j DROP"}
	default:
		src := fmt.Sprintf("192.168.%d.0/24", g>>8&0xff)
		return Rule{Rule: model.Rule{Action: model.RuleAllow, Protocol: tcp, Source: model.EntityRule{Nets: prefixes(src)},
			Destination: model.EntityRule{Ports: ports(8000, 8080)}},
			IPTables: fmt.Sprintf("-s %s -p tcp -m tcp --dport 8000:8080 -j ACCEPT", src)}
	}
}
