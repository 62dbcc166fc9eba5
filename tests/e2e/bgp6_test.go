package e2e

// End-to-end test of BGP for IPv6 (issue 18): nodes with an IPv6 underlay
// address advertise their IPv6 blocks and routes, next hop that address,
// over IPv6 sessions and over MP-BGP on IPv4 sessions; node status fills
// its IPv6 table; routes dump says which underlay carries each route.

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/calyxnet/calyx/model"
	"github.com/calyxnet/calyx/tests/lab"
)

// The IPv6 pool of TestBGPIPv6 (the seed's internal IPv6 network), host-a's
// block in it, and the workloads' IPv6 addresses: wa's inside the block,
// wb's and wc's static outside every block.
const (
	pool6   = "2001:db8:a41:3::/64"
	block6A = "2001:db8:a41:3::1:0/122"
	wa6     = "2001:db8:a41:3::1:2"
	wb6     = "2001:db8:a41:3::2:2"
	wc6     = "2001:db8:a41:3::3:2"
)

// TestBGPIPv6: host-a and host-b (fabric segment) have IPv6 underlay
// addresses, host-c (behind the router) has none. The gateway's BIRD has
// an IPv4 session with every host, with an IPv6 channel (MP-BGP), and an
// IPv6 session with host-a and host-b.
//   - the gateway learns host-a's IPv6 block and host-b's /128 with the
//     node's IPv6 address as BGP next hop, over the IPv6 session and over
//     the IPv4 session, and nothing IPv6 from host-c;
//   - node status on host-a fills its IPv6 BGP status table (JSON and
//     table) with the IPv6 mesh peer and the gateway, all Established, and
//     BGP agrees with the datastore everywhere (host-c, without IPv6,
//     learns the others' IPv6 routes over its IPv4 mesh sessions);
//   - the gateway's external IPv6 prefix goes to host-a's and host-b's
//     kernel FIB (calyx's protocol, metric 1024), never to the BPF routes;
//   - routes dump on host-a: wb's IPv6 route goes over the IPv6 underlay
//     (host-b's IPv6 address), wc's over the IPv4 one (host-c has no IPv6).
func TestBGPIPv6(t *testing.T) {
	lab.RequireBIRD(t)
	l := newLab(t)
	m, err := lab.BuildMultiHostWith(l, lab.MultiHostOptions{Mode: lab.ModeVXLANCrossSubnet, IPv6Underlay: true})
	if err != nil {
		t.Fatalf("build three hosts: %v", err)
	}
	g, err := m.AddGateway()
	if err != nil {
		t.Fatalf("add gateway: %v", err)
	}
	if !m.HostA.Underlay6.IsValid() || !m.HostB.Underlay6.IsValid() || m.HostC.Underlay6.IsValid() || !g.Address6.IsValid() {
		t.Fatalf("IPv6 underlay: host-a %v, host-b %v, host-c %v, gateway %v", m.HostA.Underlay6, m.HostB.Underlay6, m.HostC.Underlay6, g.Address6)
	}
	for _, h := range []*lab.Host{m.HostA, m.HostB} {
		if err := l.WaitPing(g.NS, h.Underlay6.Addr().String(), trafficTimeout); err != nil {
			t.Fatalf("gateway -> %s IPv6 underlay: %v", h.Name, err)
		}
	}
	for w, a := range map[*lab.Workload]string{m.WA: wa6, m.WB: wb6, m.WC: wc6} {
		if err := l.AddIPv6(w, a); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.StartAgents(); err != nil {
		t.Fatalf("start agents: %v", err)
	}
	gw6 := g.Address6.Addr()
	docs := []string{m.ModelYAML(),
		lab.Pool{Name: "workloads6", CIDR: pool6, VXLANMode: lab.PoolCrossSubnet}.YAML(),
		lab.BGPConfigurationYAML(nodeAS, true),
		lab.BGPPeer{Name: "gateway", PeerIP: g.Address.Addr(), AS: lab.DefaultFabricAS}.YAML(),
		// The gateway's IPv6 address only for the nodes that have IPv6.
		lab.BGPPeer{Name: "gateway6-a", PeerIP: gw6, AS: lab.DefaultFabricAS, Node: m.HostA.Name}.YAML(),
		lab.BGPPeer{Name: "gateway6-b", PeerIP: gw6, AS: lab.DefaultFabricAS, Node: m.HostB.Name}.YAML(),
	}
	if out, err := l.Apply("", lab.JoinYAML(docs...)); err != nil {
		t.Fatalf("apply model: %v\n%s", err, out)
	}
	bp := netip.MustParsePrefix(block6A)
	blockYAML := fmt.Sprintf("apiVersion: calyx.io/v1\nkind: IPAMBlock\nmetadata:\n  name: %s\nspec:\n  cidr: %s\n  pool: workloads6\n  node: %s\n",
		model.BlockName(bp), bp, m.HostA.Name)
	if out, errOut, err := l.CalyxctlInput("", blockYAML, "apply", "--force", "-f", "-"); err != nil {
		t.Fatalf("apply host-a's IPv6 block: %v\n%s%s", err, out, errOut)
	}
	if err := m.WaitLinks(attachTimeout); err != nil {
		t.Fatalf("programs not attached: %v", err)
	}
	gbo, err := l.GatewayBIRDOptions(lab.FabricBGPOptions{IPv6: true})
	if err != nil {
		t.Fatal(err)
	}
	gw, err := l.StartBIRD(gbo)
	if err != nil {
		t.Fatalf("start BIRD on the gateway: %v", err)
	}
	for _, h := range m.Hosts() {
		protos := []string{lab.BIRDProtocolName(h.Name)}
		if h.Underlay6.IsValid() {
			protos = append(protos, lab.BIRDProtocolName(h.Name)+"6")
		}
		for _, p := range protos {
			if _, err := gw.WaitEstablished(p, bgpTimeout); err != nil {
				t.Fatalf("gateway's session %s with %s: %v\n%s", p, h.Name, err, l.AgentLog(h.Name))
			}
		}
	}

	// The gateway learns each IPv6 route from its node, with the node's
	// IPv6 address as next hop, over both sessions.
	for prefix, h := range map[string]*lab.Host{block6A: m.HostA, wb6 + "/128": m.HostB} {
		nh := h.Underlay6.Addr()
		if _, err := gw.WaitRoute(prefix, nh.String(), bgpTimeout); err != nil {
			t.Errorf("gateway route %s via %s: %v", prefix, h.Name, err)
			continue
		}
		err := lab.Eventually(bgpTimeout, 500*time.Millisecond, func() error {
			rs, err := gw.RoutesFor(prefix)
			if err != nil {
				return err
			}
			from := map[string]bool{}
			for _, r := range rs {
				if r.Source != "BGP" {
					continue
				}
				if r.BGPNextHop != nh {
					return fmt.Errorf("%s from %s with next hop %s, want %s", prefix, r.Protocol, r.BGPNextHop, nh)
				}
				from[r.Protocol] = true
			}
			v4, v6 := lab.BIRDProtocolName(h.Name), lab.BIRDProtocolName(h.Name)+"6"
			if !from[v4] || !from[v6] {
				return fmt.Errorf("%s learned over %v, want the IPv4 session %s (MP-BGP) and the IPv6 session %s", prefix, from, v4, v6)
			}
			return nil
		})
		if err != nil {
			t.Errorf("gateway: %v", err)
		}
	}
	// host-c has no IPv6 address: it advertises no IPv6 route.
	if err := gw.WaitNoRoute(wc6+"/128", 2*time.Second); err != nil {
		t.Errorf("host-c without IPv6: %v", err)
	}

	// node status: the IPv6 table on host-a and host-b (the IPv6 mesh
	// session and the gateway), none on host-c; BGP agrees with the
	// datastore everywhere.
	for _, h := range m.Hosts() {
		st := waitNodeStatus(t, l, h.Name, 3) // two mesh peers and the gateway over IPv4
		want := map[string]string{}
		switch h {
		case m.HostA:
			want = map[string]string{gw6.String(): "node specific", m.HostB.Underlay6.Addr().String(): "node-to-node mesh"}
		case m.HostB:
			want = map[string]string{gw6.String(): "node specific", m.HostA.Underlay6.Addr().String(): "node-to-node mesh"}
		}
		err := lab.Eventually(bgpTimeout, 500*time.Millisecond, func() error {
			st, err := l.NodeStatus(h.Name)
			if err != nil {
				return err
			}
			if st.BGP == nil || len(st.BGP.IPv6Peers) != len(want) {
				return fmt.Errorf("IPv6 peers %+v, want %v", st.BGP, want)
			}
			for _, p := range st.BGP.IPv6Peers {
				if want[p.PeerAddress] != p.PeerType || !p.Established || p.State != "up" {
					return fmt.Errorf("IPv6 peer %+v, want one of %v, up", p, want)
				}
			}
			if len(st.BGP.Disagreements) > 0 {
				return fmt.Errorf("BGP and the datastore disagree: %+v", st.BGP.Disagreements)
			}
			return nil
		})
		if err != nil {
			t.Errorf("node status on %s: %v (IPv4 peers %+v)", h.Name, err, st.BGP.IPv4Peers)
		}
	}
	table, err := l.NodeStatusTable(m.HostA.Name)
	if err != nil {
		t.Fatal(err)
	}
	i := strings.Index(table, "IPv6 BGP status")
	if i < 0 || !strings.Contains(table[i:], gw6.String()) || !strings.Contains(table[i:], m.HostB.Underlay6.Addr().String()) ||
		!strings.Contains(table[i:], "Established") || strings.Contains(table, "No IPv6 peers found.") {
		t.Errorf("node status table on host-a: want the IPv6 table with %s and %s Established:\n%s", gw6, m.HostB.Underlay6.Addr(), table)
	}

	// The gateway's external IPv6 prefix: in host-a's and host-b's FIB
	// (learned over both sessions), never in the BPF route map.
	for _, h := range []*lab.Host{m.HostA, m.HostB} {
		err := lab.Eventually(bgpTimeout, 500*time.Millisecond, func() error {
			res, err := l.Exec(h.NS, "ip", "-6", "route", "show", lab.ExternalIPv6, "proto", "202")
			if err != nil {
				return err
			}
			if !strings.Contains(res.Stdout, "via "+gw6.String()) || !strings.Contains(res.Stdout, "metric 1024") {
				return fmt.Errorf("ip -6 route show %s proto 202: %q", lab.ExternalIPv6, res.Stdout)
			}
			return nil
		})
		if err != nil {
			t.Errorf("%s: learned IPv6 route: %v", h.Name, err)
		}
	}

	// routes dump on host-a: the underlay of each remote IPv6 route.
	routes, err := l.Routes(m.HostA.Name)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][3]string{ // next hop, underlay, encap
		wb6 + "/128":             {m.HostB.Underlay6.Addr().String(), "ipv6", lab.EncapNone}, // one IPv6 subnet
		wc6 + "/128":             {m.HostC.Underlay.Addr().String(), "ipv4", lab.EncapVXLAN}, // across the router
		m.WB.IP.String() + "/32": {m.HostB.Underlay.Addr().String(), "ipv4", lab.EncapNone},
	}
	for _, r := range routes {
		if r.CIDR == lab.ExternalIPv6 {
			t.Errorf("host-a: the external IPv6 prefix is in the BPF route map: %+v", r)
		}
	}
	wantRemoteRoutes(t, "host-a", routes, want)
}

// wantRemoteRoutes checks that routes (host's routes dump) has each CIDR of
// want as a remote workload's route with its next hop, underlay and encap.
func wantRemoteRoutes(t *testing.T, host string, routes []lab.Route, want map[string][3]string) {
	t.Helper()
	for _, r := range routes {
		w, ok := want[r.CIDR]
		if !ok {
			continue
		}
		delete(want, r.CIDR)
		if r.Type != "remote-workload" || r.NextHop != w[0] || r.Underlay != w[1] || r.Encap != w[2] {
			t.Errorf("%s route %+v, want next hop %s, underlay %s, encap %s", host, r, w[0], w[1], w[2])
		}
	}
	if len(want) > 0 {
		t.Errorf("%s has no route for %v", host, want)
	}
}
