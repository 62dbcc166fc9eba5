package ctl

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/calyxnet/calyx/bpfmap"
	"github.com/calyxnet/calyx/policy"
)

// policyRow is one line of `policy dump`: a rule in the order the
// dataplane applies it to an endpoint, with how many new flows it decided.
type policyRow struct {
	Endpoint  string `json:"endpoint" yaml:"endpoint" table:"ENDPOINT"`
	Direction string `json:"direction" yaml:"direction" table:"DIRECTION"`
	Position  int    `json:"position" yaml:"position" table:"#"`
	Policy    string `json:"policy" yaml:"policy" table:"POLICY"`
	// Index is the rule's place in the policy's ingress or egress list;
	// -1 for what applies after every rule.
	Index int `json:"index" yaml:"index"`
	// Rule is Index for the table: "-" for -1 (a zero would read as none).
	Rule    string `json:"-" yaml:"-" table:"RULE"`
	Action  string `json:"action" yaml:"action" table:"ACTION"`
	Match   string `json:"match" yaml:"match" table:"MATCH"`
	Packets uint64 `json:"packets" yaml:"packets" table:"HITS"`
	Bytes   uint64 `json:"bytes" yaml:"bytes" table:"BYTES"`
	RuleID  uint32 `json:"ruleID" yaml:"ruleID"`
}

// policyDump lists the effective rules of the endpoints programmed on this
// host (or of one), in evaluation order per direction, with the hit
// counters of cx_policy_hits: new flows a rule decided (allowed or
// denied) and Log rules matched; packets of established flows skip the
// lookup and are not counted.
func policyDump(ctx context.Context, o Options, args []string, stdio IO) error {
	if len(args) > 1 {
		return usagef("policy dump: want at most one ENDPOINT")
	}
	m, err := bpfmap.OpenPinned(o.BPFFS)
	if err != nil {
		return err
	}
	defer m.Close()
	ds, err := o.openDatastore()
	if err != nil {
		return fmt.Errorf("open datastore: %w", err)
	}
	defer ds.Close()
	snap, err := ds.Snapshot(ctx)
	if err != nil {
		return fmt.Errorf("read the model: %w", err)
	}
	ifaces, err := m.Ifaces.All()
	if err != nil {
		return err
	}
	hits, err := m.PolicyHits()
	if err != nil {
		return err
	}
	cfg, err := m.NodeConfig()
	if err != nil {
		return err
	}
	names := endpointNamesOf(snap)
	local := map[string]uint32{} // endpoint name → its interface here
	for idx, v := range ifaces {
		if n, ok := names[v.EndpointID]; ok && v.Workload {
			local[n] = idx
		}
	}
	var eps []string
	if len(args) == 1 {
		name := args[0]
		if _, ok := snap.Endpoints[name]; !ok {
			return fmt.Errorf("policy dump: endpoint %q: no such WorkloadEndpoint", name)
		}
		if _, ok := local[name]; !ok {
			return fmt.Errorf("policy dump: endpoint %q is not programmed on this host (it runs on node %q)",
				name, snap.Endpoints[name].Spec.Node)
		}
		eps = []string{name}
	} else {
		for n := range local {
			eps = append(eps, n)
		}
		sort.Strings(eps)
	}
	var rows []policyRow
	for _, name := range eps {
		eff, err := policy.Effective(snap, name)
		if err != nil {
			return err
		}
		idx := local[name]
		rows = append(rows, directionRows(name, "ingress", eff.IngressSelected, eff.Ingress,
			bpfmap.RuleDefaultDenyIngress, idx, hits)...)
		egress := directionRows(name, "egress", eff.EgressSelected, eff.Egress, bpfmap.RuleDefaultDenyEgress, idx, hits)
		if cfg.EndpointToHost == bpfmap.EndpointToHostDrop {
			// Checked before the egress rules, for traffic to the host.
			c := hits[bpfmap.RuleHitKey{Ifindex: idx, Rule: bpfmap.RuleHostDrop}]
			egress = append([]policyRow{{Endpoint: name, Direction: "egress", Policy: "(endpointToHostAction)",
				Index: -1, Action: "deny", Match: "to this host, except DHCP, DNS and metadata",
				Packets: c.Packets, Bytes: c.Bytes, RuleID: bpfmap.RuleHostDrop}}, egress...)
			for i := range egress {
				egress[i].Position = i + 1
			}
		}
		rows = append(rows, egress...)
	}
	for i := range rows {
		rows[i].Rule = "-"
		if rows[i].Index >= 0 {
			rows[i].Rule = fmt.Sprint(rows[i].Index)
		}
	}
	return render(stdio.Out, o.Output, rows)
}

func directionRows(ep, dir string, selected bool, rules []policy.RuleInfo, defaultRule, ifindex uint32,
	hits map[bpfmap.RuleHitKey]bpfmap.Counter) []policyRow {
	if !selected {
		return []policyRow{{Endpoint: ep, Direction: dir, Position: 1, Policy: "(none)", Index: -1, Action: "allow",
			Match: "no policy selects this endpoint for " + dir}}
	}
	var rows []policyRow
	for _, r := range rules {
		c := hits[bpfmap.RuleHitKey{Ifindex: ifindex, Rule: r.ID}]
		rows = append(rows, policyRow{Endpoint: ep, Direction: dir, Position: len(rows) + 1, Policy: r.Policy,
			Index: r.Index, Action: strings.ToLower(string(r.Action)), Match: r.Text, Packets: c.Packets,
			Bytes: c.Bytes, RuleID: r.ID})
	}
	c := hits[bpfmap.RuleHitKey{Ifindex: ifindex, Rule: defaultRule}]
	return append(rows, policyRow{Endpoint: ep, Direction: dir, Position: len(rows) + 1, Policy: "(default)",
		Index: -1, Action: "deny", Match: "everything no rule allowed", Packets: c.Packets, Bytes: c.Bytes,
		RuleID: defaultRule})
}
