package policy

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"testing"

	"github.com/calyxnet/calyx/model"
)

// Vocabularies small enough that random rules overlap, nest and clash.
var (
	propNets = []string{
		"10.0.0.0/8", "10.0.0.0/24", "10.0.0.0/28", "10.0.0.16/29", "10.0.0.5/32",
		"203.0.113.0/24", "203.0.113.2/32", "192.168.0.0/16", "0.0.0.0/0", "fd00::/64", "fd00::/124",
	}
	propSelectors = []string{
		`role == "web"`, `role in {"db", "api"}`, `env != "prod"`, `has(tier)`, `all()`,
		`!has(env) && role == "cache"`, `tier == "1" || role == "db"`, `role not in {"web"}`,
	}
	propPorts  = []uint16{0, 1, 22, 53, 79, 80, 81, 443, 1023, 1024, 8000, 8080, 65534, 65535}
	propProtos = []uint8{0, 0, 0, tcp, tcp, udp, model.ProtoSCTP, icmp, icmpv6, 47}
)

func pick[T any](r *rand.Rand, xs []T) T { return xs[r.IntN(len(xs))] }

func randRanges(r *rand.Rand) []model.PortRange {
	var out []model.PortRange
	for range 1 + r.IntN(2) {
		a, b := pick(r, propPorts), pick(r, propPorts)
		if r.IntN(3) == 0 {
			b = a
		}
		out = append(out, model.PortRange{First: min(a, b), Last: max(a, b)})
	}
	return out
}

func randEntity(r *rand.Rand, proto uint8, remote bool) model.EntityRule {
	var e model.EntityRule
	p := 3 // local sides get fewer matches, as in real policy
	if !remote {
		p = 8
	}
	if r.IntN(p) == 0 {
		for range 1 + r.IntN(2) {
			e.Nets = append(e.Nets, netip.MustParsePrefix(pick(r, propNets)))
		}
	}
	if r.IntN(p+1) == 0 {
		e.NotNets = append(e.NotNets, netip.MustParsePrefix(pick(r, propNets)))
	}
	if r.IntN(p) == 0 {
		e.Selector = pick(r, propSelectors)
	}
	if r.IntN(p+1) == 0 {
		e.NotSelector = pick(r, propSelectors)
	}
	if proto == tcp || proto == udp || proto == model.ProtoSCTP {
		if r.IntN(2) == 0 {
			e.Ports = randRanges(r)
		}
		if r.IntN(4) == 0 {
			e.NotPorts = randRanges(r)
		}
	}
	return e
}

func randRule(r *rand.Rand, dir model.PolicyType) model.Rule {
	var ru model.Rule
	ru.Action = pick(r, []model.RuleAction{model.RuleAllow, model.RuleAllow, model.RuleDeny, model.RuleDeny, model.RuleLog, model.RulePass})
	ru.Protocol = pick(r, propProtos)
	if (ru.Protocol == icmp || ru.Protocol == icmpv6) && r.IntN(2) == 0 {
		ru.ICMP = &model.ICMPMatch{Type: pick(r, []uint8{0, 3, 8}), Code: pick(r, []uint8{0, 4}), HasCode: r.IntN(2) == 0}
	}
	// Source ports are rarer than destination ports.
	src, dst := randEntity(r, ru.Protocol, dir == in), randEntity(r, ru.Protocol, dir == eg)
	if r.IntN(3) != 0 {
		src.Ports, src.NotPorts = nil, nil
	}
	ru.Source, ru.Destination = src, dst
	return ru
}

func randSnapshot(r *rand.Rand) *model.Snapshot {
	s := model.NewSnapshot()
	for i := range 30 {
		node := local
		if i%2 == 1 {
			node = "node-b"
		}
		labels := []string{"role", pick(r, []string{"web", "db", "api", "cache"})}
		if r.IntN(3) != 0 {
			labels = append(labels, "env", pick(r, []string{"prod", "dev"}))
		}
		if r.IntN(3) == 0 {
			labels = append(labels, "tier", pick(r, []string{"1", "2"}))
		}
		addrs := []string{fmt.Sprintf("10.0.0.%d", i+2)}
		if r.IntN(4) == 0 {
			addrs = append(addrs, fmt.Sprintf("fd00::%x", i+2))
		}
		e := ep(fmt.Sprintf("ep%02d", i), node, addrs, labels...)
		s.Endpoints[e.Metadata.Name] = e
	}
	for i := range 3 {
		name := fmt.Sprintf("fip%d", i)
		s.FloatingIPs[name] = &model.FloatingIP{Metadata: model.Metadata{Name: name}, Spec: model.FloatingIPSpec{
			IP: netip.AddrFrom4([4]byte{203, 0, 113, byte(i + 1)}), Endpoint: fmt.Sprintf("ep%02d", 10*i+r.IntN(10)),
		}}
	}
	for i := range 4 + r.IntN(6) {
		var types []model.PolicyType
		switch r.IntN(3) {
		case 0:
			types = []model.PolicyType{in}
		case 1:
			types = []model.PolicyType{eg}
		default:
			types = []model.PolicyType{in, eg}
		}
		order := float64(pick(r, []int{-1, 1, 2, 3, 5}))
		var ing, egr []model.Rule
		for _, d := range types {
			for range r.IntN(6) {
				if d == in {
					ing = append(ing, randRule(r, d))
				} else {
					egr = append(egr, randRule(r, d))
				}
			}
		}
		p := pol(fmt.Sprintf("pol%d", i), order, pick(r, propSelectors), ing, egr)
		p.Spec.Types = types
		s.Policies[p.Metadata.Name] = p
	}
	return s
}

// addClusterPolicy adds a policy for every endpoint whose rules name the
// cluster's net, 10.0.0.0/8, many times, as well as selectors: every
// endpoint and rule net inside it then has that net in its identity, and
// the lookup falls back to it wherever nothing else tells them apart.
func addClusterPolicy(r *rand.Rand, s *model.Snapshot) {
	cluster := model.EntityRule{Nets: nets("10.0.0.0/8")}
	notCluster := model.EntityRule{NotNets: nets("10.0.0.0/8")}
	withPorts := func(e model.EntityRule, p ...uint16) model.EntityRule { e.Ports = ports(p...); return e }
	ing := []model.Rule{
		{Action: model.RuleAllow, Protocol: icmp, ICMP: &model.ICMPMatch{Type: 8}, Source: cluster},
		{Action: model.RuleDeny, Protocol: tcp, Source: cluster, Destination: model.EntityRule{Ports: ports(22, 22)}},
		{Action: model.RuleLog, Protocol: tcp, Source: notCluster},
		{Action: model.RuleAllow, Protocol: tcp, Source: model.EntityRule{Selector: pick(r, propSelectors), Nets: nets("10.0.0.0/8")}, Destination: model.EntityRule{Ports: ports(80, 81)}},
		{Action: model.RulePass, Source: model.EntityRule{Nets: nets("10.0.0.0/8"), NotSelector: pick(r, propSelectors)}},
	}
	egr := []model.Rule{
		{Action: model.RuleAllow, Protocol: udp, Destination: withPorts(cluster, 53, 53)},
		{Action: model.RulePass, Destination: notCluster},
		{Action: model.RuleDeny, Protocol: tcp, Destination: model.EntityRule{Selector: pick(r, propSelectors), Ports: ports(443, 443)}},
		{Action: model.RuleAllow, Protocol: icmp, Destination: cluster},
	}
	p := pol("cluster", float64(pick(r, []int{0, 2, 4, 10})), "all()", ing, egr)
	s.Policies[p.Metadata.Name] = p
}

// randRemote picks a remote address: an endpoint's, a floating IP, a host
// address, an address in one of the nets, or the world.
func randRemote(r *rand.Rand, s *model.Snapshot, hosts []netip.Addr) netip.Addr {
	switch r.IntN(6) {
	case 0, 1:
		e := s.Endpoints[fmt.Sprintf("ep%02d", r.IntN(30))]
		return pick(r, e.Spec.IPNetworks).Addr()
	case 2:
		return netip.AddrFrom4([4]byte{203, 0, 113, byte(1 + r.IntN(4))})
	case 3:
		return pick(r, hosts)
	case 4:
		p := netip.MustParsePrefix(pick(r, propNets))
		b := p.Addr().AsSlice()
		for i := p.Bits(); i < len(b)*8; i++ {
			if r.IntN(2) == 0 {
				b[i/8] |= 0x80 >> (i % 8)
			}
		}
		a, _ := netip.AddrFromSlice(b)
		return a
	}
	return pick(r, []netip.Addr{netip.MustParseAddr("8.8.8.8"), netip.MustParseAddr("2001:db8::1")})
}

func randPort(r *rand.Rand) uint16 {
	switch r.IntN(3) {
	case 0:
		return uint16(r.IntN(65536))
	case 1:
		return pick(r, propPorts) + 1
	}
	return pick(r, propPorts)
}

// TestAgainstReference compares Lookup(Compile(...)) with walking the
// policies, for random policy sets and random packets.
func TestAgainstReference(t *testing.T) {
	hosts := []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("192.0.2.1")}
	checked := 0
	for seed := range uint64(60) {
		r := rand.New(rand.NewPCG(seed, 42))
		s := randSnapshot(r)
		if seed%2 == 1 {
			addClusterPolicy(r, s)
		}
		for _, p := range s.Policies {
			if err := model.Validate(p); err != nil {
				t.Fatalf("seed %d: random policy %s is invalid: %v", seed, p.Metadata.Name, err)
			}
		}
		out, err := Compile(Input{Snapshot: s, Node: local, HostAddrs: hosts})
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		checkOutput(t, out)
		if seed < 5 {
			again, _ := Compile(Input{Snapshot: s, Node: local, HostAddrs: hosts})
			if !reflect.DeepEqual(out, again) {
				t.Fatalf("seed %d: two compiles of one snapshot differ", seed)
			}
		}
		var locals []*model.WorkloadEndpoint
		for _, name := range slices.Sorted(mapKeys(s.Endpoints)) {
			if e := s.Endpoints[name]; e.Spec.Node == local {
				locals = append(locals, e)
			}
		}
		for range 400 {
			remote := randRemote(r, s, hosts)
			proto := pick(r, []uint8{tcp, tcp, udp, model.ProtoSCTP, icmp, icmpv6, 47})
			var port, sport uint16
			switch proto {
			case icmp, icmpv6:
				port = uint16(pick(r, []uint8{0, 3, 8, 11}))<<8 | uint16(pick(r, []uint8{0, 1, 4}))
			case 47:
			default:
				port, sport = randPort(r), randPort(r)
			}
			le := pick(r, locals)
			dir := pick(r, []model.PolicyType{in, eg})
			pkt := newRefPacket(s, le, dir, remote, proto, port, sport)
			selected, want := reference(t, out, pkt)

			tables := out.Endpoints[le.Metadata.Name]
			table := tables.Ingress
			if dir == eg {
				table = tables.Egress
			}
			if selected != (table != 0) {
				t.Fatalf("seed %d: %s %s: selected %v but table %d", seed, le.Metadata.Name, dir, selected, table)
			}
			e, _ := LookupIdentity(out, remote)
			got, ok := Lookup(out, table, e.Identity, e.NetIdentity, proto, port, sport)
			if !ok || got != want {
				t.Fatalf("seed %d: %s %s remote %s (identity %d) proto %d port %d sport %d:\n got %+v (found %v)\nwant %+v\n%s",
					seed, le.Metadata.Name, dir, remote, e.Identity, proto, port, sport, got, ok, want, describe(out))
			}
			checked++
		}
	}
	t.Logf("%d packets agree", checked)
}

// describe lists the rules, to make a failure readable.
func describe(out *Output) string {
	var s string
	for id, r := range out.Rules {
		s += fmt.Sprintf("  %d %s/%s/%d: %s\n", id, r.Policy, r.Direction, r.Index, r.Text)
	}
	return s
}
