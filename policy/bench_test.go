package policy

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/calyxnet/calyx/model"
)

// benchSnapshot builds a model of the size the compiler must handle in a
// few seconds, shaped like a real cluster: 1,000 deployments of 10 replicas
// (10,000 endpoints, one replica of each on each of 10 nodes, so 1,000 on
// node-0), one policy per deployment for 990 of them and 10 global ones,
// 10 rules each, using selectors, nets, port ranges, ICMP, Log and Pass.
func benchSnapshot() *model.Snapshot {
	s := model.NewSnapshot()
	components := []string{"web", "api", "worker", "db"}
	for d := range 1000 {
		labels := []string{
			"app", fmt.Sprintf("app-%d", d/4),
			"component", components[d%4],
			"team", fmt.Sprintf("team-%d", d%20),
			"env", []string{"prod", "staging", "dev"}[(d/4)%3],
		}
		if d%100 == 0 {
			labels = append(labels, "role", "monitoring")
		}
		for r := range 10 {
			i := d*10 + r
			e := ep(fmt.Sprintf("ep-%05d", i), fmt.Sprintf("node-%d", r), nil, labels...)
			e.Spec.IPNetworks = []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 1, byte(i / 256), byte(i % 256)}), 32)}
			s.Endpoints[e.Metadata.Name] = e
		}
	}
	to := func(p ...uint16) model.EntityRule { return model.EntityRule{Ports: ports(p...)} }
	for j := range 990 {
		app := j / 4
		ingress := []model.Rule{
			allow(model.Rule{Protocol: tcp, Source: model.EntityRule{Selector: fmt.Sprintf(`app == "app-%d"`, app)}, Destination: to(80, 80, 443, 443)}),
			allow(model.Rule{Protocol: tcp, Source: model.EntityRule{Selector: fmt.Sprintf(`app == "app-%d" && component == "web"`, (app+1)%250)}, Destination: to(8000, 8080)}),
			allow(model.Rule{Protocol: tcp, Source: model.EntityRule{Selector: fmt.Sprintf(`team == "team-%d" && env == "prod"`, j%20)}, Destination: to(9090, 9090)}),
			allow(model.Rule{Protocol: udp, Source: model.EntityRule{Nets: nets(fmt.Sprintf("192.168.%d.0/24", j%256))}, Destination: to(5353, 5353)}),
			deny(model.Rule{Source: model.EntityRule{Nets: nets(fmt.Sprintf("10.200.%d.0/24", j%256))}}),
			allow(model.Rule{Protocol: icmp, ICMP: &model.ICMPMatch{Type: 8}, Source: model.EntityRule{Selector: fmt.Sprintf(`app == "app-%d"`, app)}}),
			logR(model.Rule{Protocol: tcp, Destination: to(22, 22)}),
		}
		egress := []model.Rule{
			allow(model.Rule{Protocol: tcp, Destination: model.EntityRule{Selector: fmt.Sprintf(`app == "app-%d" && component == "db"`, (app+7)%250), Ports: ports(5432, 5432)}}),
			allow(model.Rule{Protocol: udp, Destination: model.EntityRule{Nets: nets("10.96.0.10/32"), Ports: ports(53, 53)}}),
			pass(model.Rule{Destination: model.EntityRule{NotNets: nets("10.0.0.0/8")}}),
		}
		sel := fmt.Sprintf(`app == "app-%d" && component == "%s"`, app, components[j%4])
		p := pol(fmt.Sprintf("deploy-%04d", j), float64(100+j), sel, ingress, egress)
		s.Policies[p.Metadata.Name] = p
	}
	for g := range 10 {
		ingress := []model.Rule{
			deny(model.Rule{Source: model.EntityRule{Nets: nets(fmt.Sprintf("10.250.%d.0/24", g))}}),
			allow(model.Rule{Protocol: tcp, Source: model.EntityRule{Selector: `role == "monitoring"`}, Destination: to(9100, 9100)}),
			allow(model.Rule{Protocol: icmp, ICMP: &model.ICMPMatch{Type: 8, Code: 0, HasCode: true}, Source: model.EntityRule{Nets: nets("10.0.0.0/8")}}),
			logR(model.Rule{Protocol: tcp, Destination: to(23, 23)}),
			deny(model.Rule{Protocol: tcp, Source: model.EntityRule{Ports: ports(0, 1023)}, Destination: to(6000, 6100)}),
		}
		egress := []model.Rule{
			allow(model.Rule{Protocol: tcp, Destination: model.EntityRule{NotNets: nets("10.0.0.0/8", "192.168.0.0/16"), Ports: ports(443, 443)}}),
			allow(model.Rule{Protocol: udp, Destination: model.EntityRule{Selector: `app == "app-0"`, Ports: ports(53, 53)}}),
			deny(model.Rule{Destination: model.EntityRule{Nets: nets(fmt.Sprintf("10.251.%d.0/24", g))}}),
			logR(model.Rule{Protocol: tcp, Destination: model.EntityRule{Ports: ports(25, 25)}}),
			allow(model.Rule{Protocol: icmp, Destination: model.EntityRule{Nets: nets("10.0.0.0/8")}}),
		}
		order := float64(g) // the first five before every deployment's policy, the rest after
		if g >= 5 {
			order = 2000 + float64(g)
		}
		p := pol(fmt.Sprintf("global-%d", g), order, "has(app)", ingress, egress)
		s.Policies[p.Metadata.Name] = p
	}
	return s
}

func BenchmarkCompile1000Policies10000Endpoints(b *testing.B) {
	s := benchSnapshot()
	in := Input{Snapshot: s, Node: "node-0", HostAddrs: []netip.Addr{netip.MustParseAddr("10.30.0.10")}}
	var out *Output
	for b.Loop() {
		var err error
		if out, err = Compile(in); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(out.Policy)), "policy-entries")
	b.ReportMetric(float64(len(out.IPCache)), "ipcache-entries")
	b.ReportMetric(float64(len(out.Endpoints)), "endpoints")
}
