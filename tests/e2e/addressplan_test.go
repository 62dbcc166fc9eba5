package e2e

// End-to-end test of the seed's address plan (issue 18): two networks, each
// with an IPv4 and an IPv6 subnet,
//
//	external  172.18.208.0/24 (floating IPs)  2001:db8:a41:2::/64 (behind the gateway)
//	internal  10.65.0.0/16    (private)       2001:db8:a41:3::/64 (routed, "externally reachable")
//
// with instances on three hosts that boot without an address and get it by
// DHCPv4 and RA + DHCPv6 from the internal Subnets, the data center's
// gateway (BIRD) learning the internal IPv6 blocks by BGP, an external IPv6
// client reaching an instance's IPv6 address directly (no NAT), and the
// private IPv4 range reachable from outside only by floating IPs, leaving by
// natOutgoing.
//
// The external network is not a calyx Subnet: no instance is attached to it,
// and a Subnet's gatewayIP stands for the local host on every host, which
// would shadow the real router's address on it. Its IPv4 subnet is the
// external pool the floating IPs come from; its IPv6 subnet is the
// gateway's external side, where the client lives.

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/calyxnet/calyx/model"
	"github.com/calyxnet/calyx/tests/lab"
)

// The address plan.
const (
	planExt4 = "172.18.208.0/24" // external IPv4: the floating IPs
	planExt6 = lab.ExternalIPv6  // external IPv6: 2001:db8:a41:2::/64
	planInt4 = lab.WorkloadPool  // internal IPv4: 10.65.0.0/16, private
	planInt6 = "2001:db8:a41:3::/64"
	// The gateway's and the client's addresses on the external IPv6
	// network (the gateway's internet side).
	planGW6     = "2001:db8:a41:2::1"
	planClient6 = "2001:db8:a41:2::10"
	// The internal Subnets' gateway IPs (the local host on every host).
	planGWInt4 = "10.65.0.1"
	planGWInt6 = "2001:db8:a41:3::1"
	// host-a's and host-b's IPv6 blocks (host-c has no IPv6 underlay
	// address: it advertises no IPv6 route).
	planBlockA = "2001:db8:a41:3::1:0/122"
	planBlockB = "2001:db8:a41:3::2:0/122"
	// Floating IPs of inst-a (host-a) and inst-c (host-c, behind the
	// router).
	planFipA = "172.18.208.10"
	planFipC = "172.18.208.30"
	// The IPv6 pool's name.
	planPool6 = "internal6"
)

// planInstance is an instance of the plan: a workload that boots without
// an address, and the client that gets its IPv4 lease.
type planInstance struct {
	w        *lab.Workload
	ip4, ip6 string
	udhcpc   bool
}

// planSubnet renders a Subnet of network with one DNS server.
func planSubnet(name, network, cidr, gateway, dns string) string {
	return fmt.Sprintf("apiVersion: calyx.io/v1\nkind: Subnet\nmetadata:\n  name: %s\nspec:\n  cidr: %s\n  gatewayIP: %s\n  dnsNameservers: [%s]\n  network: %s\n",
		name, cidr, gateway, dns, network)
}

// TestAddressPlan builds the seed's address plan in the three-host lab
// (VXLAN CrossSubnet; host-a and host-b with an IPv6 underlay on the fabric
// segment, host-c behind the router IPv4-only) with the gateway's and the
// router's BIRD, and checks:
//   - inst-a, inst-b and inst-c (one per host) get their IPv4 by DHCPv4
//     (dhclient, udhcpc) and their IPv6 by RA (default route via fe80::1) and
//     DHCPv6 from the internal Subnets;
//   - internal traffic across hosts over IPv4 and IPv6: inst-a <-> inst-c
//     and inst-c <-> inst-b over the IPv4 underlay, inst-a <-> inst-b over
//     the IPv6 underlay (both nodes have ipv6Address);
//   - the gateway's BIRD learns host-a's and host-b's IPv6 blocks with the
//     nodes' IPv6 addresses as next hops, the floating IPs with their
//     nodes' IPv4 addresses, and nothing of the private IPv4 range
//     (disableBGPExport);
//   - the external IPv6 client reaches inst-a's and inst-b's IPv6 addresses
//     directly (ping6, TCP, UDP), the instances see its own address, and
//     the instances reach it back from their own addresses (no NAT66);
//   - the client cannot reach inst-a's private IPv4 address, but reaches
//     its floating IP (and inst-c's, on host-c), seen with its own address;
//   - inst-a's, inst-b's and wc's IPv4 to the outside leaves by
//     natOutgoing: the server sees their node's address.
func TestAddressPlan(t *testing.T) {
	lab.RequireBIRD(t)
	lab.RequireDHCPClients(t)
	l := newLab(t)
	m, err := lab.BuildMultiHostWith(l, lab.MultiHostOptions{Mode: lab.ModeVXLANCrossSubnet, IPv6Underlay: true})
	if err != nil {
		t.Fatalf("build three hosts: %v", err)
	}
	g, err := m.AddGateway()
	if err != nil {
		t.Fatalf("add gateway: %v", err)
	}
	client, server := g.Client, g.Server

	// The external IPv6 network behind the gateway: the gateway at ::1 on
	// its internet side (forwarding IPv6), the client at ::10.
	for _, st := range []struct {
		ns   string
		args []string
	}{
		{g.NS, []string{"sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"}},
		{g.NS, []string{"ip", "-6", "addr", "add", planGW6 + "/64", "dev", g.Bridge, "nodad"}},
		{client.NS, []string{"ip", "-6", "addr", "add", planClient6 + "/64", "dev", client.Iface, "nodad"}},
		{client.NS, []string{"ip", "-6", "route", "add", "default", "via", planGW6, "dev", client.Iface}},
	} {
		if res, err := l.Exec(st.ns, st.args...); err != nil {
			t.Fatalf("%s in %s: %v\n%s", strings.Join(st.args, " "), st.ns, err, res.Combined())
		}
	}
	if err := l.WaitPing(client.NS, g.Address6.Addr().String(), trafficTimeout); err != nil {
		t.Fatalf("client -> gateway's fabric IPv6 address: %v", err)
	}

	// The instances: one per host, booting without an address.
	insts := []*planInstance{
		{ip4: "10.65.1.10", ip6: "2001:db8:a41:3::1:10"},               // host-a, in block A
		{ip4: "10.65.2.10", ip6: "2001:db8:a41:3::2:10", udhcpc: true}, // host-b, in block B
		{ip4: "10.65.3.10", ip6: "2001:db8:a41:3::3:10"},               // host-c, no block
	}
	for i, h := range m.Hosts() {
		p := insts[i]
		w, err := l.PlanWorkload(h.Name, "inst-"+h.Name[len("host-"):], p.ip4, "")
		if err != nil {
			t.Fatal(err)
		}
		w.DHCP = true
		// The link's MTU fits VXLAN over IPv4; the lease's (option 26)
		// is smaller where the node has an IPv6 underlay.
		w.MTU = m.Mode.WorkloadMTU()
		if err := l.CreateWorkload(w); err != nil {
			t.Fatal(err)
		}
		if err := l.AddIPv6(w, p.ip6); err != nil {
			t.Fatal(err)
		}
		p.w = w
	}
	ia, ib, ic := insts[0].w, insts[1].w, insts[2].w

	if err := m.StartAgents(); err != nil {
		t.Fatalf("start agents: %v", err)
	}
	docs := []string{
		// Private: never advertised, leaves by natOutgoing.
		lab.Pool{Name: lab.MultiPool, CIDR: planInt4, VXLANMode: lab.PoolCrossSubnet, NATOutgoing: true, DisableBGPExport: true}.YAML(),
		// Routed: advertised, never translated.
		lab.Pool{Name: planPool6, CIDR: planInt6, VXLANMode: lab.PoolCrossSubnet}.YAML(),
		lab.Pool{Name: "external4", CIDR: planExt4, External: true}.YAML(),
		planSubnet("internal-v4", "internal", planInt4, planGWInt4, "10.65.0.53"),
		planSubnet("internal-v6", "internal", planInt6, planGWInt6, "2001:db8:a41:3::53"),
	}
	for _, h := range l.Hosts() {
		docs = append(docs, lab.NodeYAML(h))
	}
	for _, w := range l.Workloads() {
		docs = append(docs, lab.EndpointYAML(w))
	}
	docs = append(docs,
		lab.FloatingIPYAML("fip-inst-a", planFipA, ia.Name),
		lab.FloatingIPYAML("fip-inst-c", planFipC, ic.Name),
		lab.BGPConfigurationYAML(nodeAS, true),
		lab.BGPPeer{Name: "gateway", PeerIP: g.Address.Addr(), AS: lab.DefaultFabricAS}.YAML(),
		lab.BGPPeer{Name: "gateway6-a", PeerIP: g.Address6.Addr(), AS: lab.DefaultFabricAS, Node: m.HostA.Name}.YAML(),
		lab.BGPPeer{Name: "gateway6-b", PeerIP: g.Address6.Addr(), AS: lab.DefaultFabricAS, Node: m.HostB.Name}.YAML(),
	)
	for _, h := range m.Hosts() {
		leg, err := m.Router.Leg(h.Segment.Name)
		if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, lab.BGPPeer{Name: "router-" + h.Name, PeerIP: leg.Address.Addr(), AS: lab.DefaultFabricAS, Node: h.Name}.YAML())
	}
	if out, err := l.Apply("", lab.JoinYAML(docs...)); err != nil {
		t.Fatalf("apply model: %v\n%s", err, out)
	}
	for _, b := range []struct {
		cidr string
		h    *lab.Host
	}{{planBlockA, m.HostA}, {planBlockB, m.HostB}} {
		bp := netip.MustParsePrefix(b.cidr)
		y := fmt.Sprintf("apiVersion: calyx.io/v1\nkind: IPAMBlock\nmetadata:\n  name: %s\nspec:\n  cidr: %s\n  pool: %s\n  node: %s\n",
			model.BlockName(bp), bp, planPool6, b.h.Name)
		if out, errOut, err := l.CalyxctlInput("", y, "apply", "--force", "-f", "-"); err != nil {
			t.Fatalf("apply %s's IPv6 block: %v\n%s%s", b.h.Name, err, out, errOut)
		}
	}
	if err := m.WaitLinks(attachTimeout); err != nil {
		t.Fatalf("programs not attached: %v", err)
	}

	// DHCPv4, RA and DHCPv6 from each instance's own host.
	for _, p := range insts {
		w := p.w
		var out string
		if p.udhcpc {
			out, err = l.UDHCPC(w, "")
		} else {
			out, err = l.DHClient(w, "", false)
		}
		if err != nil {
			t.Fatalf("%s: DHCPv4: %v\n%s", w.Name, err, out)
		}
		// Option 26: the underlay's MTU minus VXLAN's overhead, over
		// IPv6 (70 bytes) on a node with an IPv6 underlay address.
		mtu := m.Mode.WorkloadMTU()
		if h, err := l.Host(w.Host); err != nil {
			t.Fatal(err)
		} else if h.Underlay6.IsValid() {
			mtu -= 20
		}
		wantLease(t, l, w, false, netip.PrefixFrom(w.IP, 16), mtu, "default via "+planGWInt4+" dev eth0")
		rc, err := l.ReadResolvConf(w)
		if err != nil {
			t.Fatal(err)
		}
		if ns := lab.ParseNameservers(rc); !slices.Contains(ns, "10.65.0.53") {
			t.Errorf("%s: nameservers %v, want 10.65.0.53 from DHCPv4", w.Name, ns)
		}
		if out, err := l.RDisc6(w, ""); err != nil {
			t.Errorf("%s: rdisc6: %v\n%s", w.Name, err, out)
		} else if !strings.Contains(out, "from fe80::1") {
			t.Errorf("%s: rdisc6 saw no advertisement from fe80::1:\n%s", w.Name, out)
		}
		if out, err := l.DHClient(w, "", true); err != nil {
			t.Fatalf("%s: DHCPv6: %v\n%s", w.Name, err, out)
		}
		err = lab.Eventually(15*time.Second, 200*time.Millisecond, func() error {
			lines, err := l.InstanceRoutes(w, true)
			if err != nil {
				return err
			}
			if !slices.ContainsFunc(lines, func(l string) bool { return strings.HasPrefix(l, "default via fe80::1 dev eth0") }) {
				return fmt.Errorf("no IPv6 default route via fe80::1 in\n%s", strings.Join(lines, "\n"))
			}
			return nil
		})
		if err != nil {
			t.Errorf("%s: %v", w.Name, err)
		}
		addrs, err := l.InstanceAddrs(w, "", true)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(addrs, func(a netip.Prefix) bool { return a.Addr() == w.IPv6 }) {
			t.Errorf("%s: IPv6 addresses %v, want %s from DHCPv6", w.Name, addrs, w.IPv6)
		}
		rc, err = l.ReadResolvConf(w)
		if err != nil {
			t.Fatal(err)
		}
		if ns := lab.ParseNameservers(rc); !slices.Contains(ns, "2001:db8:a41:3::53") {
			t.Errorf("%s: nameservers %v, want 2001:db8:a41:3::53 from DHCPv6", w.Name, ns)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	// Echo servers: in every instance (both families), in the client
	// (IPv6) and in the server (IPv4).
	for _, w := range []*lab.Workload{ia, ib, ic, m.WC} {
		for _, a := range []string{"0.0.0.0", "::"} {
			if _, err := l.StartEcho(w.NS, w.Name, echoAddr(a)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := l.StartEcho(client.NS, client.Name, echoAddr(planClient6)); err != nil {
		t.Fatal(err)
	}
	if _, err := l.StartEcho(server.NS, server.Name, echoAddr(server.IP.String())); err != nil {
		t.Fatal(err)
	}

	t.Run("internal", func(t *testing.T) {
		// IPv4 and IPv6 across hosts; for IPv6, host-a <-> host-c and
		// host-c <-> host-b go over the IPv4 underlay (host-c has no IPv6
		// address), host-a <-> host-b over the IPv6 one, as routes dump
		// on host-a says.
		routes, err := l.Routes(m.HostA.Name)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string][3]string{ // next hop, underlay, encap
			planBlockB:                {m.HostB.Underlay6.Addr().String(), "ipv6", lab.EncapNone},
			ic.IPv6.String() + "/128": {m.HostC.Underlay.Addr().String(), "ipv4", lab.EncapVXLAN},
			ib.IP.String() + "/32":    {m.HostB.Underlay.Addr().String(), "ipv4", lab.EncapNone},
			ic.IP.String() + "/32":    {m.HostC.Underlay.Addr().String(), "ipv4", lab.EncapVXLAN},
		}
		wantRemoteRoutes(t, "host-a", routes, want)
		for _, p := range [][2]*lab.Workload{{ia, ic}, {ic, ib}, {ia, ib}, {ib, ia}} {
			for _, dst := range []netip.Addr{p[1].IP, p[1].IPv6} {
				name := fmt.Sprintf("%s on %s -> %s (%s on %s)", p[0].Name, p[0].Host, dst, p[1].Name, p[1].Host)
				if err := l.WaitPing(p[0].NS, dst.String(), trafficTimeout); err != nil {
					t.Errorf("%s: %v", name, err)
					continue
				}
				checkPingFrom(t, l, name, p[0].NS, dst.String(), 3)
				r, err := lab.TCPEcho(p[0].NS, echoAddr(dst.String()), echoTimeout)
				src := p[0].IP
				if dst.Is6() {
					src = p[0].IPv6
				}
				checkEcho(t, name+" tcp", r, err, p[1].Name, src, netip.AddrPortFrom(dst, echoPort))
			}
		}
	})

	// BIRD on the gateway and the router: every session up.
	fab, err := l.StartFabricBGP(lab.FabricBGPOptions{IPv6: true})
	if err != nil {
		t.Fatalf("start BIRD: %v", err)
	}
	for _, h := range m.Hosts() {
		protos := map[*lab.BIRD][]string{fab.Gateway: {lab.BIRDProtocolName(h.Name)}}
		if h.Underlay6.IsValid() {
			protos[fab.Gateway] = append(protos[fab.Gateway], lab.BIRDProtocolName(h.Name)+"6")
		}
		for _, r := range fab.Routers {
			protos[r] = []string{lab.BIRDProtocolName(h.Name)}
		}
		for b, ps := range protos {
			for _, p := range ps {
				if _, err := b.WaitEstablished(p, bgpTimeout); err != nil {
					t.Fatalf("%s's session %s with %s: %v\n%s", b.Name, p, h.Name, err, l.AgentLog(h.Name))
				}
			}
		}
	}
	gw := fab.Gateway

	t.Run("gateway-routes", func(t *testing.T) {
		for _, r := range []struct {
			prefix string
			nh     netip.Addr
		}{
			{planBlockA, m.HostA.Underlay6.Addr()},
			{planBlockB, m.HostB.Underlay6.Addr()},
			{planFipA + "/32", m.HostA.Underlay.Addr()},
			{planFipC + "/32", m.HostC.Underlay.Addr()},
		} {
			if _, err := gw.WaitRoute(r.prefix, r.nh.String(), bgpTimeout); err != nil {
				t.Errorf("gateway route %s via %s: %v", r.prefix, r.nh, err)
			}
		}
		// In the gateway's kernel too: it forwards by them.
		for _, r := range []struct{ prefix, nh string }{
			{planBlockA, m.HostA.Underlay6.Addr().String()},
			{planBlockB, m.HostB.Underlay6.Addr().String()},
		} {
			err := lab.Eventually(bgpTimeout, 500*time.Millisecond, func() error {
				res, err := l.Exec(g.NS, "ip", "-6", "route", "show", r.prefix)
				if err != nil {
					return err
				}
				if !strings.Contains(res.Stdout, "via "+r.nh) {
					return fmt.Errorf("ip -6 route show %s on the gateway: %q, want via %s", r.prefix, res.Stdout, r.nh)
				}
				return nil
			})
			if err != nil {
				t.Error(err)
			}
		}
		// Nothing of the private range, nothing IPv6 from host-c.
		routes, err := gw.Routes()
		if err != nil {
			t.Fatal(err)
		}
		private := netip.MustParsePrefix(planInt4)
		for _, r := range routes {
			if r.Source == "BGP" && r.Prefix.Overlaps(private) {
				t.Errorf("the gateway learned %s from %s (next hop %s): the private range is never advertised", r.Prefix, r.Protocol, r.BGPNextHop)
			}
		}
		if err := gw.WaitNoRoute(ic.IPv6.String()+"/128", 2*time.Second); err != nil {
			t.Errorf("host-c without IPv6: %v", err)
		}
	})

	t.Run("external-ipv6", func(t *testing.T) {
		c6 := netip.MustParseAddr(planClient6)
		for _, w := range []*lab.Workload{ia, ib} {
			dst := w.IPv6.String()
			name := fmt.Sprintf("client %s -> %s (%s on %s)", c6, dst, w.Name, w.Host)
			if err := l.WaitPing(client.NS, dst, trafficTimeout); err != nil {
				t.Errorf("%s: %v", name, err)
				continue
			}
			checkPingFrom(t, l, name, client.NS, dst, 3)
			// The instance sees the client's own address: routed, not
			// translated.
			r, err := lab.TCPEcho(client.NS, echoAddr(dst), echoTimeout)
			checkEcho(t, name+" tcp", r, err, w.Name, c6, netip.AddrPortFrom(w.IPv6, echoPort))
			r, err = lab.UDPEcho(client.NS, echoAddr(dst), echoTimeout)
			checkEcho(t, name+" udp", r, err, w.Name, c6, netip.AddrPortFrom(w.IPv6, echoPort))
			// And back: the instance's IPv6 to the outside leaves with
			// its own address (no NAT66).
			back := fmt.Sprintf("%s on %s -> client %s", w.Name, w.Host, c6)
			r, err = lab.TCPEcho(w.NS, echoAddr(planClient6), echoTimeout)
			checkEcho(t, back+" tcp", r, err, client.Name, w.IPv6, netip.AddrPortFrom(c6, echoPort))
			checkPingFrom(t, l, back, w.NS, planClient6, 2)
		}
	})

	t.Run("external-ipv4", func(t *testing.T) {
		// The private address: no route to it from outside.
		if st, _ := l.Ping(client.NS, ia.IP.String(), 2); st.Received != 0 {
			t.Errorf("client -> %s's private %s: %d pings answered, want none", ia.Name, ia.IP, st.Received)
		}
		if r, err := lab.TCPEcho(client.NS, echoAddr(ia.IP.String()), noReplyTimeout); err == nil {
			t.Errorf("client -> %s's private %s: answered by %s", ia.Name, ia.IP, r.Server)
		}
		// Its floating IP, and inst-c's behind the router: the
		// instances see the client's own address.
		for _, p := range []struct {
			fip string
			w   *lab.Workload
		}{{planFipA, ia}, {planFipC, ic}} {
			fip := netip.MustParseAddr(p.fip)
			name := fmt.Sprintf("client -> %s (%s on %s)", p.fip, p.w.Name, p.w.Host)
			if err := l.WaitPing(client.NS, p.fip, trafficTimeout); err != nil {
				t.Errorf("%s: %v", name, err)
				continue
			}
			checkPingFrom(t, l, name, client.NS, p.fip, 3)
			r, err := lab.TCPEcho(client.NS, echoAddr(p.fip), echoTimeout)
			checkEcho(t, name+" tcp", r, err, p.w.Name, client.IP, netip.AddrPortFrom(fip, echoPort))
			r, err = lab.UDPEcho(client.NS, echoAddr(p.fip), echoTimeout)
			checkEcho(t, name+" udp", r, err, p.w.Name, client.IP, netip.AddrPortFrom(fip, echoPort))
		}
	})

	t.Run("nat-outgoing", func(t *testing.T) {
		srv := netip.AddrPortFrom(server.IP, echoPort)
		// Every instance leaves as its node, inst-a too: as in
		// networking-calico, a floating IP translates what is sent to
		// it (and an instance's hairpin to its own), not what the
		// instance opens to the outside.
		for _, p := range []struct {
			w    *lab.Workload
			seen netip.Addr
		}{
			{ib, m.HostB.Underlay.Addr()},
			{m.WC, m.HostC.Underlay.Addr()},
			{ia, m.HostA.Underlay.Addr()},
		} {
			name := fmt.Sprintf("%s on %s -> server %s", p.w.Name, p.w.Host, srv)
			var r lab.EchoReply
			err := lab.Eventually(trafficTimeout, 200*time.Millisecond, func() error {
				var err error
				r, err = lab.TCPEcho(p.w.NS, srv.String(), noReplyTimeout)
				return err
			})
			checkEcho(t, name+" tcp", r, err, server.Name, p.seen, srv)
			r, err = lab.UDPEcho(p.w.NS, srv.String(), echoTimeout)
			checkEcho(t, name+" udp", r, err, server.Name, p.seen, srv)
			checkPingFrom(t, l, name, p.w.NS, server.IP.String(), 2)
		}
	})
}
