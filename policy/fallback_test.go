package policy

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/calyxnet/calyx/bpfmap"
	"github.com/calyxnet/calyx/model"
)

// entriesOf counts the entries of each (table, identity).
func entriesOf(out *Output) map[[2]uint32]int {
	n := map[[2]uint32]int{}
	for k := range out.Policy {
		if k.Table&bpfmap.SubTableFlag == 0 {
			n[[2]uint32{k.Table, uint32(k.Identity)}]++
		}
	}
	return n
}

// TestNetFallback: endpoints inside a net that every table names (the
// cluster's CIDR) get entries only in tables whose selectors tell them
// apart; the rest fall back to the net's identity, and a rule net inside
// it to the net's, so that it has entries only where it is named.
func TestNetFallback(t *testing.T) {
	var eps []*model.WorkloadEndpoint
	for i := range 8 {
		role := []string{"web", "db", "api", "cache"}[i%4]
		node := local
		if i >= 4 {
			node = "node-b"
		}
		eps = append(eps, ep(fmt.Sprintf("ep%d", i), node, []string{fmt.Sprintf("10.1.0.%d", i+1)}, "role", role, "app", role))
	}
	// An endpoint whose address is itself a rule net: the identity of its
	// nets alone has no cx_ipcache entry of its own.
	eps = append(eps, ep("exact", "node-b", []string{"10.96.0.10"}, "role", "dns"))
	cluster := pol("cluster", 1, "all()", rules(
		allow(model.Rule{Protocol: icmp, Source: model.EntityRule{Nets: nets("10.0.0.0/8")}}),
		deny(model.Rule{Protocol: tcp, Source: model.EntityRule{Nets: nets("10.0.0.0/8")}, Destination: model.EntityRule{Ports: ports(22, 22)}}),
		logR(model.Rule{Protocol: tcp, Source: model.EntityRule{NotNets: nets("10.0.0.0/8")}}),
	), rules(
		pass(model.Rule{Destination: model.EntityRule{NotNets: nets("10.0.0.0/8")}}),
		allow(model.Rule{Protocol: udp, Destination: model.EntityRule{Nets: nets("10.96.0.10/32"), Ports: ports(53, 53)}}),
	))
	web := pol("web", 2, `role == "web"`, rules(
		allow(model.Rule{Protocol: tcp, Source: model.EntityRule{Selector: `role == "api"`}, Destination: model.EntityRule{Ports: ports(80, 80)}}),
		deny(model.Rule{Source: model.EntityRule{Nets: nets("10.200.0.0/24")}}),
		allow(model.Rule{Protocol: tcp, Source: model.EntityRule{Nets: nets("10.0.0.0/8")}, Destination: model.EntityRule{Ports: ports(443, 443)}}),
	), rules(
		allow(model.Rule{Protocol: tcp, Destination: model.EntityRule{Selector: `role == "db"`, Ports: ports(5432, 5432)}}),
	))
	db := pol("db", 2, `role == "db"`, rules(
		allow(model.Rule{Protocol: tcp, Source: model.EntityRule{Selector: `role == "web"`}, Destination: model.EntityRule{Ports: ports(5432, 5432)}}),
		allow(model.Rule{Protocol: tcp, Source: model.EntityRule{Nets: nets("10.96.0.10/32")}}),
	), nil)
	out := mustCompile(t, snapshot(eps, cluster, web, db))

	id := func(atoms ...string) bpfmap.Identity { return bpfmap.Identity(fnv32(strings.Join(atoms, "\n"))) }
	const n8, n24, dns, sweb, sapi, sdb = "net:10.0.0.0/8", "net:10.200.0.0/24", "net:10.96.0.10/32", `sel:role == "web"`, `sel:role == "api"`, `sel:role == "db"`
	for p, w := range map[string]bpfmap.IPCacheEntry{
		"10.0.0.0/8":     {Identity: id(n8)},
		"10.200.0.0/24":  {Identity: id(n8, n24), NetIdentity: id(n8)},
		"10.1.0.1/32":    {Identity: id(n8, sweb), NetIdentity: id(n8)},
		"10.1.0.4/32":    {Identity: id(n8)}, // cache: no selector names it; one net: no fallback but 0
		"10.96.0.10/32":  {Identity: id(n8, dns), NetIdentity: id(n8)},
		"10.200.0.77/32": {}, // not in the cache: the /24 covers it
	} {
		got, ok := out.IPCache[netip.MustParsePrefix(p)]
		if w == (bpfmap.IPCacheEntry{}) {
			if ok {
				t.Errorf("ipcache[%s] = %+v, want none", p, got)
			}
			continue
		}
		if got != w {
			t.Errorf("ipcache[%s] = %+v, want %+v", p, got, w)
		}
	}

	// Who has entries where.
	n := entriesOf(out)
	webIn, webEg := out.Endpoints["ep0"].Ingress, out.Endpoints["ep0"].Egress
	dbIn, dbEg := out.Endpoints["ep1"].Ingress, out.Endpoints["ep1"].Egress
	for _, c := range []struct {
		table uint32
		id    bpfmap.Identity
		want  bool
	}{
		{webIn, id(n8), true},        // the cluster net decides otherwise than the world
		{dbIn, id(n8), true},         //
		{webIn, id(n8, sapi), true},  // api may reach web on 80
		{webIn, id(n8, sweb), false}, // web is, to web's ingress, the cluster net
		{webIn, id(n8, sdb), false},  //
		{dbIn, id(n8, sweb), true},   // web may reach db
		{dbIn, id(n8, sapi), false},  //
		{webIn, id(n8, n24), true},   // named by web's ingress
		{dbIn, id(n8, n24), false},   // not named by db's: falls back to 10/8
		{dbIn, id(n8, dns), true},    // named by db's ingress
		{webIn, id(n8, dns), false},  //
		{webEg, id(n8, dns), true},   // cluster egress names it
		{webEg, id(n8, sdb), true},   // web may reach db on 5432
		{webEg, id(n8, sweb), false}, //
		{dbEg, id(n8, sweb), false},  //
	} {
		if got := n[[2]uint32{c.table, uint32(c.id)}] > 0; got != c.want {
			t.Errorf("table %d identity %d: has entries %v, want %v", c.table, c.id, got, c.want)
		}
	}

	// Verdicts, through the fallbacks.
	rule := func(p string, d model.PolicyType, i int) uint32 { return ruleID(t, out, p, d, i) }
	for _, c := range []struct {
		ep     string
		dir    model.PolicyType
		remote string
		proto  uint8
		port   uint16
		want   uint32
	}{
		{"ep0", in, "10.1.0.3", tcp, 80, rule("web", in, 0)},               // api to web: selector entry
		{"ep0", in, "10.1.0.2", tcp, 80, bpfmap.RuleDefaultDenyIngress},    // db to web: falls back to 10/8
		{"ep0", in, "10.1.0.2", tcp, 443, rule("web", in, 2)},              // by the net
		{"ep0", in, "10.1.0.2", icmp, 0x0800, rule("cluster", in, 0)},      //
		{"ep0", in, "10.1.0.3", tcp, 22, rule("cluster", in, 1)},           // the net's rule comes first
		{"ep0", in, "10.200.0.9", tcp, 443, rule("web", in, 1)},            // the rule net inside 10/8
		{"ep1", in, "10.200.0.9", tcp, 443, bpfmap.RuleDefaultDenyIngress}, // falls back to 10/8
		{"ep1", in, "10.200.0.9", icmp, 0x0800, rule("cluster", in, 0)},    //
		{"ep1", in, "10.96.0.10", tcp, 8080, rule("db", in, 1)},            // the endpoint that is a rule net
		{"ep1", in, "10.1.0.1", tcp, 5432, rule("db", in, 0)},              //
		{"ep1", in, "10.1.0.4", tcp, 5432, bpfmap.RuleDefaultDenyIngress},  //
		{"ep1", in, "8.8.8.8", tcp, 5432, bpfmap.RuleDefaultDenyIngress},   // the world
		{"ep0", eg, "10.96.0.10", udp, 53, rule("cluster", eg, 1)},         //
		{"ep0", eg, "10.1.0.2", tcp, 5432, rule("web", eg, 0)},             //
		{"ep0", eg, "10.1.0.6", tcp, 5432, rule("web", eg, 0)},             // a db on another node
		{"ep0", eg, "10.1.0.3", tcp, 5432, bpfmap.RuleDefaultDenyEgress},   //
		{"ep0", eg, "8.8.8.8", tcp, 5432, bpfmap.RuleDefaultDenyEgress},    // passed, then nothing
	} {
		if v := query(t, out, c.ep, c.dir, c.remote, c.proto, c.port, 1000); v.Rule != c.want {
			t.Errorf("%s %s %s proto %d port %d: got %+v, want rule %d", c.ep, c.dir, c.remote, c.proto, c.port, v, c.want)
		}
	}
}

// TestBenchModelFits: the benchmark's model (1,000 policies, 10,000
// endpoints, the cluster CIDR named by every table) fits cx_policy, whose
// capacity is 1M entries, with room to spare.
func TestBenchModelFits(t *testing.T) {
	out, err := Compile(Input{Snapshot: benchSnapshot(), Node: "node-0", HostAddrs: []netip.Addr{netip.MustParseAddr("10.30.0.10")}})
	if err != nil {
		t.Fatal(err)
	}
	checkOutput(t, out)
	if n := len(out.Policy); n >= 750_000 {
		t.Errorf("%d cx_policy entries, want well under 1M", n)
	}
	t.Logf("%d cx_policy entries, %d cx_ipcache entries", len(out.Policy), len(out.IPCache))
}

// Without any policy only the host's own addresses need an identity: a
// change to a large model does not walk every endpoint.
func TestCompileWithoutPolicies(t *testing.T) {
	s := benchSnapshot()
	s.Policies = nil
	host := netip.MustParseAddr("10.30.0.10")
	out, err := Compile(Input{Snapshot: s, Node: "node-0", HostAddrs: []netip.Addr{host}})
	if err != nil {
		t.Fatal(err)
	}
	want := map[netip.Prefix]bpfmap.IPCacheEntry{netip.PrefixFrom(host, 32): {Host: true}}
	if len(out.Policy) != 0 || len(out.Endpoints) != 0 || !ipcacheEqual(out.IPCache, want) {
		t.Errorf("no policies: %d policy entries, %d endpoints with tables, ipcache %v; want none, none, %v",
			len(out.Policy), len(out.Endpoints), out.IPCache, want)
	}
}

func ipcacheEqual(a, b map[netip.Prefix]bpfmap.IPCacheEntry) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
