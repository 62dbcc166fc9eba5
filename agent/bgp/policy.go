package bgp

import (
	"context"
	"fmt"
	"net/netip"
	"slices"

	api "github.com/osrg/gobgp/v4/api"
)

// The export policy keeps each node to its own routes towards the fabric. GoBGP
// evaluates one global export policy for every peer; its statements select the
// receiving peer through neighbor sets, which SetPeers keeps equal to the peers
// configured:
//
//   - nodeSet (mesh and route-reflector sessions with other calyx nodes): routes
//     learned over eBGP are rejected. Each node learns the fabric's routes (a
//     default, the external networks) from its own sessions; relaying them over
//     iBGP would make a node a transit path for its neighbours.
//   - externalSet (every other peer: the gateway, a ToR): only routes this node
//     originates are sent. Without it a node passes the routes it learned from the
//     mesh on to the gateway with itself as next hop, and the gateway may then send
//     another node's floating-IP traffic through it.
//   - keepNextHopSet (peers with KeepNextHop): the next hop is left as it is.
//
// A neighbor set with no entry matches every peer in GoBGP, so each set always holds
// sentinelNeighbors, addresses no peer can have. The sets are changed in place (entries
// added and removed): GoBGP's statements keep the set object they were defined with,
// and a set replaced by AddDefinedSet's Replace would go unseen by them.
const (
	exportPolicy   = "calyx-export"
	nodeSet        = "calyx-nodes"
	externalSet    = "calyx-external"
	keepNextHopSet = "calyx-keep-next-hop"
)

var sentinelNeighbors = []string{"0.0.0.0/32", "::/128"}

// installExportPolicy defines the neighbor sets (sentinels only), the policy and
// its assignment as the global export policy, default accept.
func installExportPolicy(ctx context.Context, a policyAPI) error {
	for _, name := range []string{nodeSet, externalSet, keepNextHopSet} {
		if err := a.AddDefinedSet(ctx, &api.AddDefinedSetRequest{DefinedSet: neighborSet(name, nil, true)}); err != nil {
			return fmt.Errorf("bgp: neighbor set %s: %w", name, err)
		}
	}
	reject := &api.Actions{RouteAction: api.RouteAction_ROUTE_ACTION_REJECT}
	when := func(set string, rt api.Conditions_RouteType) *api.Conditions {
		return &api.Conditions{NeighborSet: &api.MatchSet{Type: api.MatchSet_TYPE_ANY, Name: set}, RouteType: rt}
	}
	pol := &api.Policy{Name: exportPolicy, Statements: []*api.Statement{
		{Name: "external-no-ibgp-learned", Conditions: when(externalSet, api.Conditions_ROUTE_TYPE_INTERNAL), Actions: reject},
		{Name: "external-no-ebgp-learned", Conditions: when(externalSet, api.Conditions_ROUTE_TYPE_EXTERNAL), Actions: reject},
		{Name: "nodes-no-ebgp-learned", Conditions: when(nodeSet, api.Conditions_ROUTE_TYPE_EXTERNAL), Actions: reject},
		{Name: "keep-next-hop", Conditions: &api.Conditions{NeighborSet: &api.MatchSet{Type: api.MatchSet_TYPE_ANY, Name: keepNextHopSet}},
			Actions: &api.Actions{RouteAction: api.RouteAction_ROUTE_ACTION_UNSPECIFIED, Nexthop: &api.NexthopAction{Unchanged: true}}},
	}}
	if err := a.AddPolicy(ctx, &api.AddPolicyRequest{Policy: pol}); err != nil {
		return fmt.Errorf("bgp: export policy: %w", err)
	}
	err := a.AddPolicyAssignment(ctx, &api.AddPolicyAssignmentRequest{Assignment: &api.PolicyAssignment{
		Name: "global", Direction: api.PolicyDirection_POLICY_DIRECTION_EXPORT,
		Policies: []*api.Policy{{Name: exportPolicy}}, DefaultAction: api.RouteAction_ROUTE_ACTION_ACCEPT,
	}})
	if err != nil {
		return fmt.Errorf("bgp: assign export policy: %w", err)
	}
	return nil
}

// exportSets returns the members of each neighbor set for peers.
func exportSets(peers map[netip.Addr]Peer) map[string][]netip.Addr {
	out := map[string][]netip.Addr{nodeSet: nil, externalSet: nil, keepNextHopSet: nil}
	for a, p := range peers {
		if p.Type == PeerTypeMesh {
			out[nodeSet] = append(out[nodeSet], a)
		} else {
			out[externalSet] = append(out[externalSet], a)
		}
		if p.KeepNextHop {
			out[keepNextHopSet] = append(out[keepNextHopSet], a)
		}
	}
	for _, l := range out {
		slices.SortFunc(l, func(a, b netip.Addr) int { return a.Compare(b) })
	}
	return out
}

// neighborSet is the API's form of a neighbor set of members (and the
// sentinels when sentinels is set).
func neighborSet(name string, members []netip.Addr, sentinels bool) *api.DefinedSet {
	var list []string
	if sentinels {
		list = slices.Clone(sentinelNeighbors)
	}
	for _, a := range members {
		list = append(list, netip.PrefixFrom(a, a.BitLen()).String())
	}
	return &api.DefinedSet{DefinedType: api.DefinedType_DEFINED_TYPE_NEIGHBOR, Name: name, List: list}
}

// policyAPI is the part of GoBGP the export policy uses.
type policyAPI interface {
	AddDefinedSet(context.Context, *api.AddDefinedSetRequest) error
	AddPolicy(context.Context, *api.AddPolicyRequest) error
	AddPolicyAssignment(context.Context, *api.AddPolicyAssignmentRequest) error
}
