package policy

import (
	"errors"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/calyxnet/calyx/bpfmap"
	"github.com/calyxnet/calyx/model"
)

const (
	tcp    = model.ProtoTCP
	udp    = model.ProtoUDP
	icmp   = model.ProtoICMP
	icmpv6 = model.ProtoICMPv6
	in     = model.PolicyIngress
	eg     = model.PolicyEgress
)

func allow(r model.Rule) model.Rule { r.Action = model.RuleAllow; return r }
func deny(r model.Rule) model.Rule  { r.Action = model.RuleDeny; return r }
func logR(r model.Rule) model.Rule  { r.Action = model.RuleLog; return r }
func pass(r model.Rule) model.Rule  { r.Action = model.RulePass; return r }
func rules(rs ...model.Rule) []model.Rule {
	return rs
}

// The endpoints of the match tests: web1 and web2 are local, the others on
// another node.
func testEndpoints() []*model.WorkloadEndpoint {
	return []*model.WorkloadEndpoint{
		ep("web1", local, []string{"10.0.0.10"}, "role", "web", "env", "prod"),
		ep("web2", local, []string{"10.0.0.11", "fd00::11"}, "role", "web", "env", "dev"),
		ep("db1", "node-b", []string{"10.0.0.20"}, "role", "db", "env", "prod"),
		ep("api1", "node-b", []string{"10.0.1.30"}, "role", "api", "env", "dev"),
	}
}

type check struct {
	ep          string // default web1
	dir         model.PolicyType
	remote      string
	proto       uint8
	port, sport uint16
	want        bpfmap.PolicyAction
	rule        string // "policy/index" in dir, "default", or "" for no table
	log         string // "policy/index" or ""
}

func TestVerdicts(t *testing.T) {
	tcpRule := func(dst model.EntityRule) model.Rule { return model.Rule{Protocol: tcp, Destination: dst} }
	A, D := bpfmap.PolicyAllow, bpfmap.PolicyDeny
	tests := []struct {
		name   string
		pols   []*model.NetworkPolicy
		checks []check
	}{
		{"protocol", []*model.NetworkPolicy{pol("p", 1, "all()", rules(allow(model.Rule{Protocol: tcp})), nil)}, []check{
			{remote: "8.8.8.8", proto: tcp, port: 80, want: A, rule: "p/0"},
			{remote: "8.8.8.8", proto: udp, port: 80, want: D, rule: "default"},
			{remote: "8.8.8.8", proto: 47, want: D, rule: "default"},
			{dir: eg, remote: "8.8.8.8", proto: udp, want: A}, // no egress policy: no table
		}},
		{"icmp type", []*model.NetworkPolicy{pol("p", 1, "all()", rules(allow(model.Rule{Protocol: icmp, ICMP: &model.ICMPMatch{Type: 8}})), nil)}, []check{
			{remote: "8.8.8.8", proto: icmp, port: 8 << 8, want: A, rule: "p/0"},
			{remote: "8.8.8.8", proto: icmp, port: 8<<8 | 3, want: A, rule: "p/0"},
			{remote: "8.8.8.8", proto: icmp, port: 0, want: D, rule: "default"},
			{remote: "8.8.8.8", proto: icmp, port: 9 << 8, want: D, rule: "default"},
			{remote: "fd00::99", proto: icmpv6, port: 8 << 8, want: D, rule: "default"},
		}},
		{"icmp type and code", []*model.NetworkPolicy{pol("p", 1, "all()", rules(allow(model.Rule{Protocol: icmpv6, ICMP: &model.ICMPMatch{Type: 1, Code: 4, HasCode: true}})), nil)}, []check{
			{remote: "fd00::99", proto: icmpv6, port: 1<<8 | 4, want: A, rule: "p/0"},
			{remote: "fd00::99", proto: icmpv6, port: 1<<8 | 3, want: D, rule: "default"},
			{remote: "fd00::99", proto: icmp, port: 1<<8 | 4, want: D, rule: "default"},
		}},
		{"nets", []*model.NetworkPolicy{pol("p", 1, "all()", rules(allow(model.Rule{Source: model.EntityRule{Nets: nets("192.168.1.0/24", "fd00::/64")}})), nil)}, []check{
			{remote: "192.168.1.5", proto: tcp, want: A, rule: "p/0"},
			{remote: "fd00::99", proto: udp, want: A, rule: "p/0"},
			{remote: "192.168.2.5", proto: tcp, want: D, rule: "default"},
			{remote: "10.0.0.20", proto: tcp, want: D, rule: "default"},
		}},
		{"notNets", []*model.NetworkPolicy{pol("p", 1, "all()", rules(allow(model.Rule{Source: model.EntityRule{NotNets: nets("10.0.0.0/24")}})), nil)}, []check{
			{remote: "10.0.0.20", proto: tcp, want: D, rule: "default"},
			{remote: "10.0.0.99", proto: tcp, want: D, rule: "default"},
			{remote: "10.0.1.30", proto: tcp, want: A, rule: "p/0"},
			{remote: "8.8.8.8", proto: tcp, want: A, rule: "p/0"},
		}},
		{"net inside net", []*model.NetworkPolicy{pol("p", 1, "all()", rules(allow(model.Rule{Source: model.EntityRule{Nets: nets("10.0.0.0/16"), NotNets: nets("10.0.1.0/24")}})), nil)}, []check{
			{remote: "10.0.0.20", proto: tcp, want: A, rule: "p/0"},
			{remote: "10.0.2.1", proto: tcp, want: A, rule: "p/0"},
			{remote: "10.0.1.30", proto: tcp, want: D, rule: "default"},
			{remote: "10.0.1.99", proto: tcp, want: D, rule: "default"},
			{remote: "10.1.0.1", proto: tcp, want: D, rule: "default"},
		}},
		{"selector", []*model.NetworkPolicy{pol("p", 1, "all()", rules(allow(model.Rule{Source: model.EntityRule{Selector: `role == "db"`}})), nil)}, []check{
			{remote: "10.0.0.20", proto: tcp, want: A, rule: "p/0"},
			{remote: "10.0.1.30", proto: tcp, want: D, rule: "default"},
			{remote: "8.8.8.8", proto: tcp, want: D, rule: "default"}, // no endpoint: never matches a selector
		}},
		{"selector all() needs an endpoint", []*model.NetworkPolicy{pol("p", 1, "all()", rules(allow(model.Rule{Source: model.EntityRule{Selector: `all()`}})), nil)}, []check{
			{remote: "10.0.1.30", proto: tcp, want: A, rule: "p/0"},
			{remote: "10.0.1.31", proto: tcp, want: D, rule: "default"},
		}},
		{"notSelector", []*model.NetworkPolicy{pol("p", 1, "all()", rules(allow(model.Rule{Source: model.EntityRule{NotSelector: `role == "db"`}})), nil)}, []check{
			{remote: "10.0.0.20", proto: tcp, want: D, rule: "default"},
			{remote: "10.0.1.30", proto: tcp, want: A, rule: "p/0"},
			{remote: "8.8.8.8", proto: tcp, want: A, rule: "p/0"}, // no endpoint: satisfies notSelector
		}},
		{"ports and ranges", []*model.NetworkPolicy{pol("p", 1, "all()", rules(allow(tcpRule(model.EntityRule{Ports: ports(80, 80, 8000, 8080)}))), nil)}, []check{
			{remote: "8.8.8.8", proto: tcp, port: 80, want: A, rule: "p/0"},
			{remote: "8.8.8.8", proto: tcp, port: 79, want: D, rule: "default"},
			{remote: "8.8.8.8", proto: tcp, port: 81, want: D, rule: "default"},
			{remote: "8.8.8.8", proto: tcp, port: 7999, want: D, rule: "default"},
			{remote: "8.8.8.8", proto: tcp, port: 8000, want: A, rule: "p/0"},
			{remote: "8.8.8.8", proto: tcp, port: 8043, want: A, rule: "p/0"},
			{remote: "8.8.8.8", proto: tcp, port: 8080, want: A, rule: "p/0"},
			{remote: "8.8.8.8", proto: tcp, port: 8081, want: D, rule: "default"},
			{remote: "8.8.8.8", proto: udp, port: 80, want: D, rule: "default"},
		}},
		{"notPorts", []*model.NetworkPolicy{pol("p", 1, "all()", rules(allow(tcpRule(model.EntityRule{NotPorts: ports(22, 22)}))), nil)}, []check{
			{remote: "8.8.8.8", proto: tcp, port: 22, want: D, rule: "default"},
			{remote: "8.8.8.8", proto: tcp, port: 21, want: A, rule: "p/0"},
			{remote: "8.8.8.8", proto: tcp, port: 65535, want: A, rule: "p/0"},
		}},
		{"source ports", []*model.NetworkPolicy{pol("p", 1, "all()", rules(
			allow(model.Rule{Protocol: udp, Source: model.EntityRule{Ports: ports(53, 53)}, Destination: model.EntityRule{Ports: ports(1024, 65535)}}),
			allow(model.Rule{Protocol: udp, Destination: model.EntityRule{Ports: ports(2000, 2000)}}),
		), nil)}, []check{
			{remote: "8.8.8.8", proto: udp, port: 5000, sport: 53, want: A, rule: "p/0"},
			{remote: "8.8.8.8", proto: udp, port: 5000, sport: 54, want: D, rule: "default"},
			{remote: "8.8.8.8", proto: udp, port: 2000, sport: 54, want: A, rule: "p/1"},
			{remote: "8.8.8.8", proto: udp, port: 80, sport: 53, want: D, rule: "default"},
		}},
		{"egress", []*model.NetworkPolicy{pol("p", 1, "all()", nil, rules(allow(tcpRule(model.EntityRule{Selector: `role == "db"`, Ports: ports(5432, 5432)}))))}, []check{
			{dir: eg, remote: "10.0.0.20", proto: tcp, port: 5432, want: A, rule: "p/0"},
			{dir: eg, remote: "10.0.0.20", proto: tcp, port: 5433, want: D, rule: "default"},
			{dir: eg, remote: "10.0.1.30", proto: tcp, port: 5432, want: D, rule: "default"},
			{remote: "10.0.0.20", proto: tcp, port: 5432, want: A}, // ingress: no table
		}},
		{"local selector and notSelector", []*model.NetworkPolicy{pol("p", 1, "all()", rules(
			allow(model.Rule{Protocol: tcp, Destination: model.EntityRule{Selector: `env == "dev"`}}),
			allow(model.Rule{Protocol: udp, Destination: model.EntityRule{NotSelector: `env == "dev"`}}),
		), nil)}, []check{
			{ep: "web1", remote: "8.8.8.8", proto: tcp, want: D, rule: "default"},
			{ep: "web2", remote: "8.8.8.8", proto: tcp, want: A, rule: "p/0"},
			{ep: "web1", remote: "8.8.8.8", proto: udp, want: A, rule: "p/1"},
			{ep: "web2", remote: "8.8.8.8", proto: udp, want: D, rule: "default"},
		}},
		{"local nets", []*model.NetworkPolicy{pol("p", 1, "all()", nil, rules(
			allow(model.Rule{Protocol: tcp, Source: model.EntityRule{Nets: nets("fd00::/64")}}),
			allow(model.Rule{Protocol: udp, Source: model.EntityRule{NotNets: nets("10.0.0.10/32")}}),
		))}, []check{
			{ep: "web1", dir: eg, remote: "8.8.8.8", proto: tcp, want: D, rule: "default"},
			{ep: "web2", dir: eg, remote: "8.8.8.8", proto: tcp, want: A, rule: "p/0"}, // one of its addresses is in the net
			{ep: "web1", dir: eg, remote: "8.8.8.8", proto: udp, want: D, rule: "default"},
			{ep: "web2", dir: eg, remote: "8.8.8.8", proto: udp, want: A, rule: "p/1"},
		}},
		{"policy order", []*model.NetworkPolicy{
			pol("late", 10, "all()", rules(deny(model.Rule{Protocol: tcp})), nil),
			pol("early", 5, "all()", rules(allow(tcpRule(model.EntityRule{Ports: ports(22, 22)}))), nil),
			pol("a-unordered", -1, "all()", rules(allow(model.Rule{})), nil),
		}, []check{
			{remote: "8.8.8.8", proto: tcp, port: 22, want: A, rule: "early/0"},
			{remote: "8.8.8.8", proto: tcp, port: 23, want: D, rule: "late/0"},
			{remote: "8.8.8.8", proto: udp, port: 23, want: A, rule: "a-unordered/0"}, // no order: last
		}},
		{"order ties by name", []*model.NetworkPolicy{
			pol("b", 1, "all()", rules(deny(model.Rule{})), nil),
			pol("a", 1, "all()", rules(allow(model.Rule{})), nil),
		}, []check{
			{remote: "8.8.8.8", proto: tcp, want: A, rule: "a/0"},
		}},
		{"rule order, allow and deny", []*model.NetworkPolicy{pol("p", 1, "all()", rules(
			deny(tcpRule(model.EntityRule{Ports: ports(22, 22)})),
			allow(model.Rule{Protocol: tcp}),
			deny(tcpRule(model.EntityRule{Ports: ports(80, 80)})), // shadowed
		), nil)}, []check{
			{remote: "8.8.8.8", proto: tcp, port: 22, want: D, rule: "p/0"},
			{remote: "8.8.8.8", proto: tcp, port: 80, want: A, rule: "p/1"},
		}},
		{"log", []*model.NetworkPolicy{pol("p", 1, "all()", rules(
			logR(model.Rule{Protocol: tcp}),
			logR(model.Rule{}),
			allow(tcpRule(model.EntityRule{Ports: ports(80, 80)})),
		), nil)}, []check{
			{remote: "8.8.8.8", proto: tcp, port: 80, want: A, rule: "p/2", log: "p/0"},
			{remote: "8.8.8.8", proto: tcp, port: 81, want: D, rule: "default", log: "p/0"},
			{remote: "8.8.8.8", proto: udp, port: 80, want: D, rule: "default", log: "p/1"},
		}},
		{"pass", []*model.NetworkPolicy{
			pol("first", 1, "all()", rules(
				pass(model.Rule{Source: model.EntityRule{Selector: `role == "db"`}}),
				logR(model.Rule{}),
				deny(model.Rule{}),
			), nil),
			pol("second", 2, "all()", rules(allow(model.Rule{Source: model.EntityRule{Nets: nets("10.0.0.0/24")}})), nil),
		}, []check{
			{remote: "10.0.0.20", proto: tcp, want: A, rule: "second/0"},
			{remote: "10.0.1.30", proto: tcp, want: D, rule: "first/2", log: "first/1"},
		}},
		{"pass in the last policy", []*model.NetworkPolicy{pol("p", 1, "all()", rules(pass(model.Rule{}), allow(model.Rule{})), nil)}, []check{
			{remote: "8.8.8.8", proto: tcp, want: D, rule: "default"},
		}},
		{"default deny", []*model.NetworkPolicy{pol("p", 1, `role == "web"`, nil, nil)}, []check{
			{remote: "10.0.0.20", proto: tcp, port: 80, want: D, rule: "default"},
			{remote: "8.8.8.8", proto: 47, want: D, rule: "default"},
			{dir: eg, remote: "8.8.8.8", proto: tcp, want: A},
		}},
		{"default deny egress", []*model.NetworkPolicy{pol("p", 1, `role == "web"`, nil, rules(allow(model.Rule{Protocol: udp})))}, []check{
			{dir: eg, remote: "8.8.8.8", proto: tcp, want: D, rule: "default"},
			{dir: eg, remote: "8.8.8.8", proto: udp, want: A, rule: "p/0"},
		}},
		{"not selected", []*model.NetworkPolicy{pol("p", 1, `role == "db"`, rules(deny(model.Rule{})), nil)}, []check{
			{remote: "10.0.0.20", proto: tcp, want: A},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := mustCompile(t, snapshot(testEndpoints(), tt.pols...))
			for _, c := range tt.checks {
				if c.ep == "" {
					c.ep = "web1"
				}
				if c.dir == "" {
					c.dir = in
				}
				v := query(t, out, c.ep, c.dir, c.remote, c.proto, c.port, c.sport)
				want := bpfmap.PolicyVerdict{Action: c.want, Rule: ref(t, out, c.dir, c.rule), LogRule: ref(t, out, c.dir, c.log)}
				if v != want {
					t.Errorf("%s %s from %s proto %d port %d sport %d: got %+v, want %+v", c.ep, c.dir, c.remote, c.proto, c.port, c.sport, v, want)
				}
			}
		})
	}
}

// ref turns "policy/index" or "default" into a rule number.
func ref(t *testing.T, out *Output, dir model.PolicyType, s string) uint32 {
	switch s {
	case "":
		return 0
	case "default":
		if dir == eg {
			return bpfmap.RuleDefaultDenyEgress
		}
		return bpfmap.RuleDefaultDenyIngress
	}
	p, i, _ := strings.Cut(s, "/")
	n, _ := strconv.Atoi(i)
	return ruleID(t, out, p, dir, n)
}

func TestSourcePortSubTable(t *testing.T) {
	s := snapshot(testEndpoints(), pol("p", 1, "all()", rules(
		allow(model.Rule{Protocol: udp, Source: model.EntityRule{Ports: ports(53, 53)}, Destination: model.EntityRule{Ports: ports(1024, 65535)}}),
	), nil))
	out := mustCompile(t, s)
	table := out.Endpoints["web1"].Ingress
	v, ok := lpm(out.Policy, table, 0, udp, 5000)
	if !ok || v.Action != bpfmap.PolicySport || v.Sub&bpfmap.SubTableFlag == 0 {
		t.Fatalf("udp 5000: got %+v, %v; want a source-port verdict", v, ok)
	}
	// The sub-table: deny by default, allow source port 53.
	id := ruleID(t, out, "p", in, 0)
	want := map[bpfmap.PolicyKey]bpfmap.PolicyVerdict{
		{Table: v.Sub, Bits: 8}:            {Action: bpfmap.PolicyDeny, Rule: bpfmap.RuleDefaultDenyIngress},
		{Table: v.Sub, Bits: 24, Port: 53}: {Action: bpfmap.PolicyAllow, Rule: id},
	}
	for k, got := range out.Policy {
		if k.Table == v.Sub && got != want[k] {
			t.Errorf("sub-table entry %+v = %+v, want %+v", k, got, want[k])
		}
	}
	// Below 1024 the source port does not matter.
	if v, _ := lpm(out.Policy, table, 0, udp, 80); v.Action != bpfmap.PolicyDeny {
		t.Errorf("udp 80: got %+v, want deny", v)
	}
}

func TestRangePrefixes(t *testing.T) {
	tests := []struct {
		lo, hi uint16
		want   string
	}{
		{80, 80, "80/16"},
		{0, 65535, "0/0"},
		{8000, 8080, "8000/10 8064/12 8080/16"},
		{1024, 65535, "1024/6 2048/5 4096/4 8192/3 16384/2 32768/1"},
		{0, 1023, "0/6"},
		{1, 6, "1/16 2/15 4/15 6/16"},
		{65535, 65535, "65535/16"},
		{65534, 65535, "65534/15"},
	}
	for _, tt := range tests {
		var got []string
		rangePrefixes(tt.lo, tt.hi, func(p uint16, n int) { got = append(got, strconv.Itoa(int(p))+"/"+strconv.Itoa(n)) })
		if s := strings.Join(got, " "); s != tt.want {
			t.Errorf("rangePrefixes(%d, %d) = %s, want %s", tt.lo, tt.hi, s, tt.want)
		}
	}
	// Exactly covering, for many ranges.
	for lo := 0; lo < 70000; lo += 997 {
		for _, w := range []int{0, 1, 2, 255, 256, 1000, 40000} {
			hi := min(lo+w, 65535)
			if lo > 65535 {
				continue
			}
			next := uint32(lo)
			rangePrefixes(uint16(lo), uint16(hi), func(p uint16, n int) {
				if uint32(p) != next || p&^(0xffff<<(16-n)) != 0 && n < 16 {
					t.Fatalf("range %d-%d: prefix %d/%d not aligned or not contiguous", lo, hi, p, n)
				}
				next += 1 << (16 - n)
			})
			if next != uint32(hi)+1 {
				t.Fatalf("range %d-%d covered up to %d", lo, hi, next-1)
			}
		}
	}
}

func TestPortEncodingUsesBaseline(t *testing.T) {
	// Allowing everything but 22 takes a baseline allow and one deny
	// entry, not a split of the allowed ranges.
	s := snapshot(testEndpoints(), pol("p", 1, "all()", rules(
		deny(model.Rule{Protocol: tcp, Destination: model.EntityRule{Ports: ports(22, 22)}}),
		allow(model.Rule{Protocol: tcp}),
	), nil))
	out := mustCompile(t, s)
	table := out.Endpoints["web1"].Ingress
	var got []bpfmap.PolicyKey
	for k := range out.Policy {
		if k.Table == table {
			got = append(got, k)
		}
	}
	slices.SortFunc(got, func(a, b bpfmap.PolicyKey) int { return a.Bits - b.Bits })
	want := []bpfmap.PolicyKey{
		{Table: table},
		{Table: table, Bits: 8, Proto: tcp},
		{Table: table, Bits: 24, Proto: tcp, Port: 22},
	}
	if !slices.Equal(got, want) {
		t.Errorf("keys %+v, want %+v", got, want)
	}
}

func TestIdentities(t *testing.T) {
	eps := []*model.WorkloadEndpoint{
		ep("web1", local, []string{"10.0.0.10"}, "role", "web"),
		ep("db1", "node-b", []string{"10.0.0.20"}, "role", "db"),
		ep("lone", "node-b", []string{"172.16.0.1"}, "role", "lone"),
		ep("other", "node-b", []string{"172.16.0.2"}, "role", "db"),
	}
	s := snapshot(eps, pol("p", 1, "all()", rules(
		allow(model.Rule{Source: model.EntityRule{Nets: nets("10.0.0.0/16"), NotNets: nets("10.0.0.0/24")}}),
		allow(model.Rule{Source: model.EntityRule{Selector: `role == "db"`}}),
		allow(model.Rule{Source: model.EntityRule{Nets: nets("203.0.113.0/24")}}),
	), nil))
	s.FloatingIPs["f1"] = &model.FloatingIP{Metadata: model.Metadata{Name: "f1"}, Spec: model.FloatingIPSpec{IP: netip.MustParseAddr("203.0.113.5"), Endpoint: "web1"}}
	s.FloatingIPs["f2"] = &model.FloatingIP{Metadata: model.Metadata{Name: "f2"}, Spec: model.FloatingIPSpec{IP: netip.MustParseAddr("198.51.100.7"), Endpoint: "db1"}}
	s.FloatingIPs["f3"] = &model.FloatingIP{Metadata: model.Metadata{Name: "f3"}, Spec: model.FloatingIPSpec{IP: netip.MustParseAddr("203.0.113.8"), Endpoint: "lone"}}
	out := mustCompile(t, s, "10.0.0.1", "192.0.2.1")

	id := func(atoms ...string) bpfmap.Identity {
		if len(atoms) == 0 {
			return 0
		}
		return bpfmap.Identity(fnv32(strings.Join(atoms, "\n")))
	}
	const n16, n24, n113, db = "net:10.0.0.0/16", "net:10.0.0.0/24", "net:203.0.113.0/24", `sel:role == "db"`
	// NetIdentity is what the lookup falls back to: the nets alone for an
	// address with selectors, all nets but the longest for one with nets
	// alone.
	want := map[string]bpfmap.IPCacheEntry{
		"10.0.0.0/16":     {Identity: id(n16)},
		"10.0.0.0/24":     {Identity: id(n16, n24), NetIdentity: id(n16)},             // net inside net
		"203.0.113.0/24":  {Identity: id(n113)},                                       // a rule net
		"10.0.0.10/32":    {Identity: id(n16, n24), NetIdentity: id(n16)},             // endpoint in nets, no selector
		"10.0.0.20/32":    {Identity: id(n16, n24, db), NetIdentity: id(n16, n24)},    // endpoint in nets with a selector
		"172.16.0.2/32":   {Identity: id(db)},                                         // endpoint in no net
		"10.0.0.1/32":     {Identity: id(n16, n24), NetIdentity: id(n16), Host: true}, // host in nets
		"192.0.2.1/32":    {Host: true},                                               // host in no net
		"203.0.113.5/32":  {Identity: id(n16, n24), NetIdentity: id(n16)},             // floating IP: its fixed IP's, shadowing the net
		"198.51.100.7/32": {Identity: id(n16, n24, db), NetIdentity: id(n16, n24)},    // floating IP of a selected endpoint
		"203.0.113.8/32":  {},                                                         // floating IP of an endpoint without atoms: shadows the net
		// 172.16.0.1 (lone) has no atoms and no net around it: a miss does.
	}
	if len(out.IPCache) != len(want) {
		t.Errorf("ipcache has %d entries, want %d: %v", len(out.IPCache), len(want), out.IPCache)
	}
	for p, w := range want {
		if got, ok := out.IPCache[netip.MustParsePrefix(p)]; !ok || got != w {
			t.Errorf("ipcache[%s] = %+v (present %v), want %+v", p, got, ok, w)
		}
	}
	for addr, w := range map[string]bpfmap.Identity{"10.0.5.5": id(n16), "10.0.0.99": id(n16, n24), "172.16.0.1": 0, "8.8.8.8": 0, "203.0.113.9": id(n113)} {
		if got, _ := LookupIdentity(out, netip.MustParseAddr(addr)); got.Identity != w {
			t.Errorf("identity of %s = %d, want %d", addr, got.Identity, w)
		}
	}

	// Verdicts through floating IPs follow the endpoint.
	v := query(t, out, "web1", in, "198.51.100.7", tcp, 80, 0)
	if v.Rule != ruleID(t, out, "p", in, 1) {
		t.Errorf("from db1's floating IP: got %+v, want rule p/1 (selector)", v)
	}
	v = query(t, out, "web1", in, "203.0.113.5", tcp, 80, 0)
	if v.Rule != bpfmap.RuleDefaultDenyIngress {
		t.Errorf("from web1's floating IP: got %+v, want default deny (its fixed IP is in the notNets)", v)
	}
	v = query(t, out, "web1", in, "203.0.113.8", tcp, 80, 0)
	if v.Rule != bpfmap.RuleDefaultDenyIngress {
		t.Errorf("from lone's floating IP: got %+v, want default deny (lone is in no net, though its floating IP is)", v)
	}
	v = query(t, out, "web1", in, "203.0.113.6", tcp, 80, 0)
	if v.Rule != ruleID(t, out, "p", in, 2) {
		t.Errorf("from the floating range: got %+v, want p/2", v)
	}

	// Identities are the same on another node and on a recompile.
	other, err := Compile(Input{Snapshot: s, Node: "node-b"})
	if err != nil {
		t.Fatal(err)
	}
	for p, e := range other.IPCache {
		if e.Identity != out.IPCache[p].Identity {
			t.Errorf("node-b: %s has identity %d, node-a %d", p, e.Identity, out.IPCache[p].Identity)
		}
	}
}

func TestTableSharing(t *testing.T) {
	eps := []*model.WorkloadEndpoint{
		ep("web1", local, []string{"10.0.0.10"}, "role", "web", "n", "1"),
		ep("web2", local, []string{"10.0.0.11"}, "role", "web", "n", "2"),
		ep("db1", local, []string{"10.0.0.20"}, "role", "db"),
		ep("db2", local, []string{"10.0.0.21"}, "role", "db"),
		ep("free", local, []string{"10.0.0.30"}, "role", "free"),
		ep("remote", "node-b", []string{"10.0.0.40"}, "role", "web"),
	}
	p1 := pol("web", 1, `role == "web"`, rules(allow(model.Rule{Protocol: tcp, Destination: model.EntityRule{Ports: ports(80, 80)}})), nil)
	p2 := pol("db", 1, `role == "db"`, rules(allow(model.Rule{Source: model.EntityRule{Selector: `role == "web"`}})), nil)
	p3 := pol("db-egress", 2, `role == "db"`, nil, rules(deny(model.Rule{Destination: model.EntityRule{Selector: `n == "2"`}})))
	out := mustCompile(t, snapshot(eps, p1, p2, p3))

	e := out.Endpoints
	if e["web1"].Ingress == 0 || e["web1"] != e["web2"] {
		t.Errorf("web1 %+v and web2 %+v should share one ingress table and have no egress table", e["web1"], e["web2"])
	}
	if e["db1"] != e["db2"] || e["db1"].Ingress == e["web1"].Ingress || e["db1"].Egress == 0 {
		t.Errorf("db1 %+v and db2 %+v should share tables different from web's %+v", e["db1"], e["db2"], e["web1"])
	}
	if _, ok := e["free"]; ok {
		t.Errorf("free is selected by no policy but has tables %+v", e["free"])
	}
	if _, ok := e["remote"]; ok {
		t.Errorf("remote is not on this node but has tables")
	}
	if len(e) != 4 {
		t.Errorf("endpoints %v, want web1, web2, db1, db2", e)
	}

	// Only identities that decide otherwise than the world get entries:
	// the web table asks nothing about the remote, so it has identity 0
	// only.
	for k := range out.Policy {
		if k.Table == e["web1"].Ingress && k.Identity != 0 {
			t.Errorf("web table has an entry for identity %d", k.Identity)
		}
	}

	// A changed rule gives a new table number; an unrelated change does not.
	p1b := pol("web", 1, `role == "web"`, rules(allow(model.Rule{Protocol: tcp, Destination: model.EntityRule{Ports: ports(81, 81)}})), nil)
	out2 := mustCompile(t, snapshot(eps, p1b, p2, p3))
	if out2.Endpoints["web1"].Ingress == e["web1"].Ingress {
		t.Errorf("web table kept number %d after its rule changed", e["web1"].Ingress)
	}
	if out2.Endpoints["db1"] != e["db1"] {
		t.Errorf("db tables changed number (%+v -> %+v) though their rules did not", e["db1"], out2.Endpoints["db1"])
	}
}

func TestRuleIDsAndText(t *testing.T) {
	p := pol("web", 1, "all()", rules(
		allow(model.Rule{Protocol: tcp, Source: model.EntityRule{Selector: `role=='web'`}, Destination: model.EntityRule{Ports: ports(80, 80, 8000, 8080)}}),
		deny(model.Rule{Source: model.EntityRule{Nets: nets("10.0.0.0/8"), NotNets: nets("10.1.0.0/16"), NotSelector: "has(x)"}}),
		logR(model.Rule{Protocol: icmp, ICMP: &model.ICMPMatch{Type: 3, Code: 4, HasCode: true}}),
		pass(model.Rule{Protocol: udp, Source: model.EntityRule{NotPorts: ports(53, 53)}}),
	), rules(allow(model.Rule{})))
	out := mustCompile(t, snapshot(testEndpoints(), p))
	want := []RuleInfo{
		{Policy: "web", Direction: in, Index: 0, Action: model.RuleAllow, Text: `allow tcp from selector role == "web" to ports 80,8000:8080`},
		{Policy: "web", Direction: in, Index: 1, Action: model.RuleDeny, Text: `deny from nets 10.0.0.0/8 not nets 10.1.0.0/16 not selector has(x)`},
		{Policy: "web", Direction: in, Index: 2, Action: model.RuleLog, Text: `log icmp type 3 code 4`},
		{Policy: "web", Direction: in, Index: 3, Action: model.RulePass, Text: `pass udp from not ports 53`},
		{Policy: "web", Direction: eg, Index: 0, Action: model.RuleAllow, Text: `allow`},
	}
	for _, w := range want {
		w.ID = fnv32("web/" + string(w.Direction) + "/" + strconv.Itoa(w.Index))
		if got := out.Rules[w.ID]; got != w {
			t.Errorf("rule %d: got %+v, want %+v", w.ID, got, w)
		}
	}
	if len(out.Rules) != len(want)+2 {
		t.Errorf("%d rules, want %d and the two defaults", len(out.Rules), len(want))
	}
	if r := out.Rules[bpfmap.RuleDefaultDenyEgress]; r.Direction != eg || r.Action != model.RuleDeny {
		t.Errorf("default egress rule: %+v", r)
	}
}

func TestNumberClashes(t *testing.T) {
	// With a 2-bit mask and a minimum of 1 there are three numbers: four
	// strings cannot all fit, three must get all of them, deterministically
	// whatever the input order.
	in := []string{"policy-a/Ingress/0", "policy-b/Ingress/0", "policy-c/Egress/3"}
	a := number(in, 3, 1)
	b := number([]string{in[2], in[0], in[1]}, 3, 1)
	seen := map[uint32]bool{}
	for _, s := range in {
		if a[s] < 1 || a[s] > 3 || seen[a[s]] || a[s] != b[s] {
			t.Errorf("number: %q got %d (other order %d), numbers so far %v", s, a[s], b[s], seen)
		}
		seen[a[s]] = true
	}
	// Without clashes a number is just the masked hash.
	if got := number([]string{"x"}, ^uint32(0), 1)["x"]; got != fnv32("x") {
		t.Errorf("number(x) = %d, want fnv32 %d", got, fnv32("x"))
	}
	// Rule numbers are stable and at least FirstRuleID.
	s := snapshot(testEndpoints(), pol("p", 1, "all()", rules(allow(model.Rule{}), allow(model.Rule{})), nil))
	r1, _ := compileRules(s, selectorCache{}, nil)
	r2, _ := compileRules(s, selectorCache{}, nil)
	for id, r := range r1.byID {
		if id < bpfmap.FirstRuleID || r2.byID[id] == nil || r2.byID[id].info != r.info {
			t.Errorf("rule %d: not stable or below FirstRuleID", id)
		}
	}
}

func TestEffective(t *testing.T) {
	s := snapshot(testEndpoints(),
		pol("b", 2, `role == "web"`, rules(allow(model.Rule{Destination: model.EntityRule{Selector: `env == "dev"`}}), deny(model.Rule{})), nil),
		pol("a", 1, "all()", rules(logR(model.Rule{})), rules(allow(model.Rule{}))),
		pol("c", 3, `role == "db"`, rules(allow(model.Rule{})), nil),
	)
	got, err := Effective(s, "web1")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range got.Ingress {
		names = append(names, r.Policy+"/"+strconv.Itoa(r.Index))
	}
	if !got.IngressSelected || !got.EgressSelected || strings.Join(names, " ") != "a/0 b/1" || len(got.Egress) != 1 {
		t.Errorf("Effective(web1) = %+v; ingress %v, want a/0 b/1", got, names)
	}
	out := mustCompile(t, s)
	for _, r := range append(got.Ingress, got.Egress...) {
		if out.Rules[r.ID] != r {
			t.Errorf("Effective rule %+v differs from Compile's %+v", r, out.Rules[r.ID])
		}
	}
	got, _ = Effective(s, "api1")
	if !got.IngressSelected || len(got.Ingress) != 1 {
		t.Errorf("Effective(api1) = %+v", got)
	}
	if _, err := Effective(s, "nope"); !errors.Is(err, ErrUnknownEndpoint) {
		t.Errorf("Effective(nope): %v, want ErrUnknownEndpoint", err)
	}
}

func TestCompileErrors(t *testing.T) {
	for _, p := range []*model.NetworkPolicy{
		pol("bad", 1, "role ==", nil, nil),
		pol("bad", 1, "all()", rules(allow(model.Rule{Source: model.EntityRule{Selector: "x in {"}})), nil),
		pol("bad", 1, "all()", nil, rules(allow(model.Rule{Source: model.EntityRule{NotSelector: "a = 'b'"}}))),
	} {
		_, err := Compile(Input{Snapshot: snapshot(testEndpoints(), p), Node: local})
		if err == nil || !strings.Contains(err.Error(), `policy "bad"`) {
			t.Errorf("Compile: got %v, want an error naming the policy", err)
		}
	}
}
