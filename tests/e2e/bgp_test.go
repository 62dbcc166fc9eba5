package e2e

// End-to-end tests of issue 14 (BGP), as far as it goes: the agents' GoBGP
// speakers peer with the data center's gateway (BIRD 2), which learns the
// workloads' and floating IPs' routes and needs no static route for them.

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/calyxnet/calyx/tests/lab"
)

// bgpTimeout bounds a session coming up and a route being learned.
const bgpTimeout = 30 * time.Second

// TestBGPGatewayLearnsRoutes: with a BGPConfiguration and the gateway as a
// BGPPeer of host-a and host-b, BIRD learns each workload's /32 and the
// floating IPs' /32s with their host's underlay address as next hop, and an
// external client reaches a floating IP over the learned route alone.
func TestBGPGatewayLearnsRoutes(t *testing.T) {
	lab.RequireBIRD(t)
	e := fipSetup(t)
	l, m := e.l, e.m
	// No static route for fipA: BGP is to carry it.
	if err := l.UnrouteFloatingIP(fipA); err != nil {
		t.Fatal(err)
	}
	hosts := []*lab.Host{m.HostA, m.HostB}
	fab, err := l.StartFabricBGP(lab.FabricBGPOptions{Only: []string{m.HostA.Name, m.HostB.Name}})
	if err != nil {
		t.Fatal(err)
	}
	gw := e.g.Address.Addr()
	// The mesh is off: with it on, a node passes the routes it learned
	// from the other nodes on to the gateway with itself as next hop (no
	// export policy yet keeps a node to its own routes towards external
	// peers).
	model := "apiVersion: calyx.io/v1\nkind: BGPConfiguration\nmetadata:\n  name: default\nspec:\n  asNumber: 64512\n  nodeToNodeMeshEnabled: false\n"
	for _, h := range hosts {
		model = lab.JoinYAML(model, fmt.Sprintf("apiVersion: calyx.io/v1\nkind: BGPPeer\nmetadata:\n  name: gateway-%s\nspec:\n  peerIP: %s\n  asNumber: %d\n  node: %s\n",
			h.Name, gw, lab.DefaultFabricAS, h.Name))
	}
	if out, err := l.Apply("", model); err != nil {
		t.Fatalf("apply BGP model: %v\n%s", err, out)
	}
	for _, h := range hosts {
		if _, err := fab.Gateway.WaitEstablished(h.Underlay.Addr().String(), bgpTimeout); err != nil {
			t.Fatalf("gateway session with %s: %v\n%s", h.Name, err, l.AgentLog(h.Name))
		}
	}
	for prefix, host := range map[string]*lab.Host{
		fipA + "/32":                           m.HostA,
		netip.PrefixFrom(m.WA.IP, 32).String(): m.HostA,
		netip.PrefixFrom(m.WB.IP, 32).String(): m.HostB,
	} {
		if _, err := fab.Gateway.WaitRoute(prefix, host.Underlay.Addr().String(), bgpTimeout); err != nil {
			t.Errorf("gateway route %s via %s: %v", prefix, host.Name, err)
		}
	}
	// The external client reaches the floating IP over the learned route.
	var r lab.EchoReply
	err = lab.Eventually(bgpTimeout, 200*time.Millisecond, func() error {
		var err error
		r, err = lab.TCPEcho(e.client.NS, echoAddr(fipA), time.Second)
		return err
	})
	checkEcho(t, "client -> floating IP learned by BGP", r, err, m.WA.Name, e.client.IP, netip.AddrPort{})
	if text, err := l.AgentMetrics(m.HostA.Name); err != nil {
		t.Error(err)
	} else if v, ok, err := lab.MetricSum(text, fmt.Sprintf(`calyx_bgp_peer_up{peer="%s",type="node specific"}`, gw)); err != nil || !ok || v != 1 {
		t.Errorf("calyx_bgp_peer_up for the gateway on host-a = %v (found %v, %v), want 1", v, ok, err)
	}
}
