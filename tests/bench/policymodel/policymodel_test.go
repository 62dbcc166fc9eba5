package policymodel

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/calyxnet/calyx/bpfmap"
	"github.com/calyxnet/calyx/model"
	"github.com/calyxnet/calyx/policy"
)

// The models say what they claim: the measured flow is allowed by the last
// rule of the last policy selecting each end, in both directions, and every
// resource validates.
func TestPerPacketFlow(t *testing.T) {
	src, dst := netip.MustParseAddr("10.65.0.10"), netip.MustParseAddr("10.65.0.20")
	for _, rules := range []int{10, 1000} {
		pm := PerPacketModel(1000, rules, src, dst)
		if len(pm.Snapshot.Policies)*RulesPerPolicy != rules {
			t.Fatalf("%d rules: %d policies", rules, len(pm.Snapshot.Policies))
		}
		for _, p := range pm.Snapshot.Policies {
			if err := model.Validate(p); err != nil {
				t.Fatalf("%s: %v", p.Metadata.Name, err)
			}
		}
		out, err := policy.Compile(policy.Input{Snapshot: pm.Snapshot, Node: pm.Node})
		if err != nil {
			t.Fatal(err)
		}
		want := map[model.PolicyType]uint32{}
		for id, r := range out.Rules {
			if r.Policy == pm.Flow.Policy && r.Index == pm.Flow.LastRule {
				want[r.Direction] = id
			}
		}
		id := func(a netip.Addr) bpfmap.IPCacheEntry { e, _ := policy.LookupIdentity(out, a); return e }
		st, dt := out.Endpoints[pm.Src], out.Endpoints[pm.Dst]
		for _, c := range []struct {
			table uint32
			id    bpfmap.IPCacheEntry
			rule  uint32
		}{{st.Egress, id(dst), want[model.PolicyEgress]}, {dt.Ingress, id(src), want[model.PolicyIngress]}} {
			v, ok := policy.Lookup(out, c.table, c.id.Identity, c.id.NetIdentity, model.ProtoTCP, pm.Flow.Port, 30000)
			if !ok || v.Action != bpfmap.PolicyAllow || v.Rule != c.rule || c.rule == 0 {
				t.Errorf("%d rules, table %d: %+v, want allow by rule %d", rules, c.table, v, c.rule)
			}
			// One port higher is another policy's flow port, or none: denied.
			if v, _ := policy.Lookup(out, c.table, c.id.Identity, c.id.NetIdentity, model.ProtoTCP, pm.Flow.Port+1, 30000); v.Action == bpfmap.PolicyAllow {
				t.Errorf("%d rules, table %d: port %d allowed by rule %d", rules, c.table, pm.Flow.Port+1, v.Rule)
			}
		}
	}
}

func TestServerIngress(t *testing.T) {
	const port = 7007
	for _, n := range []int{10, 1000} {
		ps := ServerIngress(n, port)
		total := 0
		for _, p := range ps {
			if err := model.Validate(p); err != nil {
				t.Fatalf("%s: %v", p.Metadata.Name, err)
			}
			total += len(p.Spec.Ingress)
		}
		if total != n {
			t.Fatalf("%d rules wanted, %d made", n, total)
		}
		s := model.NewSnapshot()
		for _, p := range ps {
			s.Policies[p.Metadata.Name] = p
		}
		server := &model.WorkloadEndpoint{Metadata: model.Metadata{Name: "server", Labels: ServerLabels},
			Spec: model.WorkloadEndpointSpec{Node: "b", Interface: "tap0", IPNetworks: []netip.Prefix{netip.MustParsePrefix("10.65.2.2/32")}}}
		client := &model.WorkloadEndpoint{Metadata: model.Metadata{Name: "client", Labels: ClientLabels},
			Spec: model.WorkloadEndpointSpec{Node: "a", Interface: "tap0", IPNetworks: []netip.Prefix{netip.MustParsePrefix("10.65.1.2/32")}}}
		s.Endpoints["server"], s.Endpoints["client"] = server, client
		out, err := policy.Compile(policy.Input{Snapshot: s, Node: "b"})
		if err != nil {
			t.Fatal(err)
		}
		name, idx := ServerPolicyOf(n - 1)
		var last uint32
		for id, r := range out.Rules {
			if r.Policy == name && r.Index == idx {
				last = id
			}
		}
		cid, _ := policy.LookupIdentity(out, client.Spec.IPNetworks[0].Addr())
		table := out.Endpoints["server"].Ingress
		if v, ok := policy.Lookup(out, table, cid.Identity, cid.NetIdentity, model.ProtoTCP, port, 40000); !ok || v.Action != bpfmap.PolicyAllow || v.Rule != last || last == 0 {
			t.Errorf("%d rules: the client's connection gets %+v, want allow by the last rule %d", n, v, last)
		}
		// Another client in 10.65.0.0/16 is denied.
		oid, _ := policy.LookupIdentity(out, netip.MustParseAddr("10.65.9.9"))
		if v, _ := policy.Lookup(out, table, oid.Identity, oid.NetIdentity, model.ProtoTCP, port, 40000); v.Action == bpfmap.PolicyAllow {
			t.Errorf("%d rules: another address in 10.65.0.0/16 is allowed by %d", n, v.Rule)
		}
		if r := ServerRule(n-1, n, port); !r.ClientSelector || !strings.Contains(r.IPTables, "$CLIENT") {
			t.Errorf("last rule %+v is not the client's", r)
		}
	}
}
