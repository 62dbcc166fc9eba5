package lab

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// standIn starts BIRD inside host h as a stand-in for calyx's BGP speaker:
// the host's AS, no kernel export, announcing prefixes to the given
// neighbors with the host's underlay address as next hop.
func standIn(t *testing.T, l *Lab, h *Host, neighbors []BIRDNeighbor, announce ...string) *BIRD {
	t.Helper()
	o := BIRDOptions{Name: "standin-" + h.Name, NS: h.NS, RouterID: h.Underlay.Addr(), AS: DefaultNodeAS, Neighbors: neighbors, NoKernel: true}
	for _, a := range announce {
		o.Announce = append(o.Announce, netip.MustParsePrefix(a))
	}
	b, err := l.StartBIRD(o)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// captureBIRD saves birdc output into testdata/bird when
// CALYX_CAPTURE_BIRD is set, to refresh the parsers' test data.
func captureBIRD(t *testing.T, b *BIRD, file string, args ...string) string {
	t.Helper()
	out, err := b.Birdc(args...)
	if err != nil {
		t.Fatal(err)
	}
	if os.Getenv("CALYX_CAPTURE_BIRD") != "" {
		if err := os.WriteFile(filepath.Join("testdata", "bird", file), []byte(out), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// TestBIRDGateway builds the three-host topology with the gateway, runs
// BIRD as the data center's gateway and router (AS 65000) and BIRD
// stand-ins for calyx's speaker on the hosts (AS 64512), and checks: the
// sessions come up (host-c's with the gateway multihop through the router),
// the gateway and the router learn the blocks and the floating IP with the
// hosts' underlay addresses as next hops and install them in their kernel
// tables (an external client reaches the floating IP with no static
// route), the hosts learn the internet, graceful restart is negotiated and
// keeps a killed peer's routes as stale, an MD5 mismatch keeps a session
// down until the passwords agree (Reconfigure), a clean stop withdraws, and
// Close leaves no bird, socket or file behind.
func TestBIRDGateway(t *testing.T) {
	RequireTools(t, "ip", "ping", "sysctl")
	RequireBIRD(t)
	l := newTestLab(t, Options{})
	m, err := BuildMultiHost(l, ModeVXLAN)
	if err != nil {
		t.Fatal(err)
	}
	g, err := m.AddGateway()
	if err != nil {
		t.Fatal(err)
	}
	const md5 = "calyx-md5"
	fo := FabricBGPOptions{Hosts: map[string]BIRDPeer{m.HostB.Name: {Password: md5}}}
	fab, err := l.StartFabricBGP(fo)
	if err != nil {
		t.Fatal(err)
	}
	gw := fab.Gateway
	if len(fab.Routers) != 1 {
		t.Fatalf("%d router BIRDs, want 1", len(fab.Routers))
	}
	rt := fab.Routers[0]
	conf, err := os.ReadFile(gw.ConfPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("gateway bird.conf:\n%s", conf)
	for _, want := range []string{
		"router id 10.30.0.254;", "protocol bgp host_a {", "local 10.30.0.254 as 65000;", "neighbor 10.30.0.11 as 64512;",
		"protocol bgp host_c {", "multihop 2;", "route 10.30.1.0/24 via 10.30.0.1;", "route 203.0.113.0/24 blackhole;",
		"graceful restart on;", `password "calyx-md5";`,
	} {
		if !strings.Contains(string(conf), want) {
			t.Errorf("gateway bird.conf lacks %q", want)
		}
	}

	gwAddr, fabricRouter, remoteRouter := g.Address.Addr(), m.Fabric.Gateway.Addr(), m.Remote.Gateway.Addr()
	peers := func(h *Host, gwPassword, routerPassword string) []BIRDNeighbor {
		gn := BIRDNeighbor{Name: "dc_gateway", Address: gwAddr, AS: DefaultFabricAS, Password: gwPassword}
		rn := BIRDNeighbor{Name: "dc_router", Address: fabricRouter, AS: DefaultFabricAS, Password: routerPassword}
		if h.Segment == m.Remote {
			gn.Multihop = 2
			rn.Address = remoteRouter
		}
		return []BIRDNeighbor{gn, rn}
	}
	sa := standIn(t, l, m.HostA, peers(m.HostA, "", ""), "10.65.1.0/26", "198.51.100.10/32")
	sb := standIn(t, l, m.HostB, peers(m.HostB, "not-"+md5, md5), "10.65.2.0/26")
	sc := standIn(t, l, m.HostC, peers(m.HostC, "", ""), "10.65.3.0/26")

	// Sessions.
	for _, p := range []string{"host_a", "host_c"} {
		pr, err := gw.WaitEstablished(p, 30*time.Second)
		if err != nil {
			t.Fatalf("gateway: %v", err)
		}
		if !pr.GracefulRestart() || pr.NeighborRestartTime != DefaultGracefulRestartTime {
			t.Errorf("gateway %s: graceful restart local %v neighbor %v (time %d), want both on with %d s", p, pr.LocalGR, pr.NeighborGR, pr.NeighborRestartTime, DefaultGracefulRestartTime)
		}
		if pr.LocalAS != DefaultFabricAS || pr.NeighborAS != DefaultNodeAS || pr.InputFilter != BIRDImportFilter {
			t.Errorf("gateway %s: local AS %d neighbor AS %d input filter %q", p, pr.LocalAS, pr.NeighborAS, pr.InputFilter)
		}
	}
	for _, p := range []string{"host_a", "host_b", "host_c"} {
		if _, err := rt.WaitEstablished(p, 30*time.Second); err != nil {
			t.Fatalf("router: %v", err)
		}
	}
	// By address too.
	if _, err := gw.WaitEstablished(m.HostA.Underlay.Addr().String(), time.Second); err != nil {
		t.Error(err)
	}

	// Routes learned, with the hosts' underlay addresses as BGP next hops.
	for _, c := range []struct {
		b              *BIRD
		prefix, nh, gw string
	}{
		{gw, "10.65.1.0/26", "10.30.0.11", "10.30.0.11"},
		{gw, "198.51.100.10/32", "10.30.0.11", "10.30.0.11"},
		{gw, "10.65.3.0/26", "10.30.1.13", "10.30.0.1"}, // multihop: resolved via the router
		{rt, "10.65.1.0/26", "10.30.0.11", "10.30.0.11"},
		{rt, "10.65.2.0/26", "10.30.0.12", "10.30.0.12"},
		{rt, "10.65.3.0/26", "10.30.1.13", "10.30.1.13"},
		{rt, "198.51.100.10/32", "10.30.0.11", "10.30.0.11"},
	} {
		r, err := c.b.WaitRoute(c.prefix, c.nh, 20*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if r.NextHop().String() != c.gw || r.Stale || len(r.ASPath) != 1 || r.ASPath[0] != DefaultNodeAS {
			t.Errorf("%s: %s: gateway %s stale %v AS path %v, want gateway %s, fresh, [%d]", c.b.Name, c.prefix, r.NextHop(), r.Stale, r.ASPath, c.gw, DefaultNodeAS)
		}
	}
	// Installed in the kernel tables.
	kern := func(b *BIRD) string {
		out, err := b.KernelRoutes()
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	err = Eventually(10*time.Second, 200*time.Millisecond, func() error {
		k := kern(gw) + kern(rt)
		for _, want := range []string{"10.65.1.0/26 via 10.30.0.11 ", "198.51.100.10 via 10.30.0.11 ", "10.65.3.0/26 via 10.30.0.1 ",
			"10.65.3.0/26 via 10.30.1.13 ", "10.65.2.0/26 via 10.30.0.12 "} {
			if !strings.Contains(k, want) {
				return &missingErr{want, k}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// The stand-ins learned the internet from both.
	for _, c := range []struct {
		b  *BIRD
		nh string
	}{{sa, "10.30.0.254"}, {sc, "10.30.1.1"}} {
		if _, err := c.b.WaitRoute("203.0.113.0/24", "", 10*time.Second); err != nil {
			t.Fatal(err)
		}
		rs, err := c.b.RoutesFor("203.0.113.0/24")
		if err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(rs, func(r BIRDRoute) bool { return r.BGPNextHop.String() == c.nh }) {
			t.Errorf("%s: no route for the internet via %s: %+v", c.b.Name, c.nh, rs)
		}
	}
	// An external client reaches the floating IP through the learned route.
	if err := l.ip(m.HostA.NS, "addr", "add", "198.51.100.10/32", "dev", "lo"); err != nil {
		t.Fatal(err)
	}
	if err := l.WaitPing(g.Client.NS, "198.51.100.10", 10*time.Second); err != nil {
		t.Fatalf("client -> floating IP over the BGP route: %v", err)
	}

	// MD5: host-b's session with the gateway (wrong password) stays down,
	// its session with the router (right password) is up.
	time.Sleep(3 * time.Second)
	pb, err := gw.Protocol("host_b")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("gateway host_b with a wrong password: %s %q (BGP state %s)", pb.State, pb.Info, pb.BGPState)
	if pb.Established() || pb.State == "up" || !slices.Contains([]string{"Active", "Connect", "Idle", "OpenSent"}, pb.BGPState) {
		t.Errorf("gateway host_b with an MD5 mismatch: state %s info %q", pb.State, pb.Info)
	}
	if rs, _ := gw.RoutesFor("10.65.2.0/26"); len(rs) != 0 {
		t.Errorf("gateway learned host-b's block despite the MD5 mismatch: %+v", rs)
	}
	captureBIRD(t, gw, "protocols.txt", "show", "protocols")
	captureBIRD(t, gw, "protocols-all.txt", "show", "protocols", "all")
	captureBIRD(t, gw, "route-all.txt", "show", "route", "all")
	captureBIRD(t, rt, "route-all-router.txt", "show", "route", "all")
	captureBIRD(t, sa, "route-all-standin.txt", "show", "route", "all")
	// The passwords agree once the gateway is reconfigured.
	o := gw.Options()
	for i := range o.Neighbors {
		if o.Neighbors[i].Name == "host_b" {
			o.Neighbors[i].Password = "not-" + md5
		}
	}
	if err := gw.Reconfigure(o); err != nil {
		t.Fatal(err)
	}
	if _, err := gw.WaitEstablished("host_b", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := gw.WaitRoute("10.65.2.0/26", "10.30.0.12", 10*time.Second); err != nil {
		t.Fatal(err)
	}

	// Graceful restart: host-a's speaker killed, the gateway keeps its
	// routes as stale (in the kernel too) until it comes back.
	if err := sa.Kill(); err != nil {
		t.Fatal(err)
	}
	pa, err := gw.WaitProtocol("host_a", 10*time.Second, func(p BIRDProtocol) error {
		if !p.GRActive {
			return &missingErr{"graceful restart active", strings.Join(p.Details, "\n")}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("gateway host_a after its peer was killed: %s %q", pa.State, pa.Info)
	rs, err := gw.RoutesFor("10.65.1.0/26")
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 1 || !rs[0].Stale || rs[0].BGPNextHop.String() != "10.30.0.11" {
		t.Errorf("gateway during host-a's restart: %+v, want one stale route via 10.30.0.11", rs)
	}
	if k := kern(gw); !strings.Contains(k, "10.65.1.0/26 via 10.30.0.11 ") {
		t.Errorf("gateway's kernel lost host-a's block during the restart:\n%s", k)
	}
	captureBIRD(t, gw, "protocols-all-gr.txt", "show", "protocols", "all", "host_a")
	captureBIRD(t, gw, "route-all-gr.txt", "show", "route", "all")
	sa = standIn(t, l, m.HostA, peers(m.HostA, "", ""), "10.65.1.0/26", "198.51.100.10/32")
	if _, err := gw.WaitProtocol("host_a", 30*time.Second, func(p BIRDProtocol) error {
		if !p.Established() || p.GRActive {
			return &missingErr{"Established, restart done", p.State + " " + p.Info}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if r, err := gw.WaitRoute("10.65.1.0/26", "10.30.0.11", 5*time.Second); err != nil || r.Stale {
		t.Errorf("after host-a's restart: %+v, %v", r, err)
	}

	// A clean stop withdraws.
	if err := sc.Stop(); err != nil {
		t.Fatal(err)
	}
	for _, b := range []*BIRD{gw, rt} {
		if err := b.WaitNoRoute("10.65.3.0/26", 10*time.Second); err != nil {
			t.Error(err)
		}
	}
	if _, err := os.Stat(sc.Dir); !os.IsNotExist(err) {
		t.Errorf("%s still there after Stop: %v", sc.Dir, err)
	}

	// Close: no bird, socket or file left.
	birds := []*BIRD{gw, rt, sa, sb}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	for _, b := range birds {
		for _, p := range []string{b.Dir, b.ConfPath, b.SocketPath, b.PIDPath} {
			if _, err := os.Stat(p); !os.IsNotExist(err) {
				t.Errorf("%s left after Close: %v", p, err)
			}
		}
	}
	_ = eachProcess(func(pid int, argv []string) {
		if filepath.Base(argv[0]) == "bird" && strings.Contains(strings.Join(argv, " "), l.Dir) {
			t.Errorf("bird still running after Close: pid %d %v", pid, argv)
		}
	})
	assertGone(t, l.Prefix)
}

type missingErr struct{ want, got string }

func (e *missingErr) Error() string { return "want " + e.want + ", got:\n" + e.got }

func readBIRDTestdata(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "bird", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// The parsers on output captured from BIRD 2.0.12 in TestBIRDGateway
// (CALYX_CAPTURE_BIRD=1 refreshes it).
func TestParseBIRDProtocols(t *testing.T) {
	protos, err := ParseBIRDProtocols(readBIRDTestdata(t, "protocols.txt"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range protos {
		names = append(names, p.Name)
	}
	if want := []string{"device1", "kernel1", "announce", "underlay", "host_a", "host_b", "host_c"}; !slices.Equal(names, want) {
		t.Fatalf("names %v, want %v", names, want)
	}
	a, b := protos[4], protos[5]
	if a.Proto != "BGP" || a.Table != "---" || a.State != "up" || a.Info != "Established" || !a.Established() || a.Since == "" {
		t.Errorf("host_a: %+v", a)
	}
	if b.State != "start" || b.BGPState != "Connect" || b.Established() {
		t.Errorf("host_b (MD5 mismatch): %+v", b)
	}
	if protos[0].Info != "" || protos[0].BGPState != "" {
		t.Errorf("device1: %+v", protos[0])
	}

	protos, err = ParseBIRDProtocols("BIRD 2.0.12 ready.\n" + readBIRDTestdata(t, "protocols-all.txt"))
	if err != nil {
		t.Fatal(err)
	}
	a, err = findBIRDProtocol(protos, "10.30.0.11")
	if err != nil {
		t.Fatal(err)
	}
	if a.Name != "host_a" || a.BGPState != "Established" || a.NeighborAS != 64512 || a.LocalAS != 65000 || a.NeighborID != "10.30.0.11" ||
		!a.LocalGR || !a.NeighborGR || !a.GracefulRestart() || a.NeighborRestartTime != 120 || a.GRActive ||
		a.Imported != 2 || a.Exported != 1 || a.Preferred != 2 || a.InputFilter != BIRDImportFilter {
		t.Errorf("host_a: %+v", a)
	}
	b, err = findBIRDProtocol(protos, "host_b")
	if err != nil {
		t.Fatal(err)
	}
	if b.Established() || b.BGPState != "Connect" || b.NeighborGR || b.NeighborAddress.String() != "10.30.0.12" {
		t.Errorf("host_b: %+v", b)
	}
	if _, err := findBIRDProtocol(protos, "host_x"); err == nil {
		t.Error("found host_x")
	}

	protos, err = ParseBIRDProtocols(readBIRDTestdata(t, "protocols-all-gr.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if len(protos) != 1 {
		t.Fatalf("%d protocols", len(protos))
	}
	a = protos[0]
	if !a.GRActive || a.Established() || a.BGPState != "Active" || a.Info != "Active        Socket: Connection closed" || a.LastError != "Socket: Connection closed" || a.Imported != 2 {
		t.Errorf("host_a in graceful restart: %+v", a)
	}
	if _, err := ParseBIRDProtocols("garbage\n"); err == nil {
		t.Error("garbage parsed")
	}
}

func TestParseBIRDRoutes(t *testing.T) {
	routes, err := ParseBIRDRoutes(readBIRDTestdata(t, "route-all.txt"))
	if err != nil {
		t.Fatal(err)
	}
	byPrefix := map[string]BIRDRoute{}
	for _, r := range routes {
		byPrefix[r.Prefix.String()] = r
	}
	if len(routes) != 5 || len(byPrefix) != 5 {
		t.Fatalf("routes: %+v", routes)
	}
	a := byPrefix["10.65.1.0/26"]
	if a.Table != "master4" || a.Type != "unicast" || a.Protocol != "host_a" || !a.Primary || a.Preference != 100 || a.Source != "BGP" ||
		a.NextHop().String() != "10.30.0.11" || !slices.Equal(a.Ifaces, []string{"eth0"}) || a.BGPNextHop.String() != "10.30.0.11" ||
		!slices.Equal(a.ASPath, []uint32{64512}) || a.Origin != "IGP" || a.Attrs["BGP.local_pref"] != "100" || a.From.IsValid() || a.Stale {
		t.Errorf("10.65.1.0/26: %+v", a)
	}
	c := byPrefix["10.65.3.0/26"] // multihop: "from", resolved gateway
	if c.Protocol != "host_c" || c.From.String() != "10.30.1.13" || c.NextHop().String() != "10.30.0.1" || c.BGPNextHop.String() != "10.30.1.13" || !c.Primary {
		t.Errorf("10.65.3.0/26: %+v", c)
	}
	if s := byPrefix["203.0.113.0/24"]; s.Type != "blackhole" || s.Protocol != "announce" || s.Source != "static" || s.Preference != 200 || s.NextHop().IsValid() {
		t.Errorf("203.0.113.0/24: %+v", s)
	}

	// Two routes for one network (from the gateway and the router): the
	// second has no network column.
	routes, err = ParseBIRDRoutes(readBIRDTestdata(t, "route-all-standin.txt"))
	if err != nil {
		t.Fatal(err)
	}
	var inet []BIRDRoute
	for _, r := range routes {
		if r.Prefix.String() == "203.0.113.0/24" {
			inet = append(inet, r)
		}
	}
	if len(inet) != 2 || inet[0].Primary == inet[1].Primary || inet[0].Protocol == inet[1].Protocol {
		t.Errorf("203.0.113.0/24 on the stand-in: %+v", inet)
	}

	// Stale during graceful restart, from the protocols' state.
	routes, err = ParseBIRDRoutes(readBIRDTestdata(t, "route-all-gr.txt"))
	if err != nil {
		t.Fatal(err)
	}
	protos, err := ParseBIRDProtocols(readBIRDTestdata(t, "protocols-all-gr.txt"))
	if err != nil {
		t.Fatal(err)
	}
	MarkStaleBIRDRoutes(routes, protos)
	for _, r := range routes {
		if want := r.Protocol == "host_a"; r.Stale != want {
			t.Errorf("%s from %s: stale %v, want %v", r.Prefix, r.Protocol, r.Stale, want)
		}
	}
	if _, err := ParseBIRDRoutes("Table master4:\nnonsense\n"); err == nil {
		t.Error("nonsense parsed")
	}
}

func TestBIRDConfig(t *testing.T) {
	o := BIRDOptions{
		Name: "gw", NS: "cx0000-gw", RouterID: netip.MustParseAddr("10.30.0.254"),
		Neighbors: []BIRDNeighbor{
			{Name: "host_a", Address: netip.MustParseAddr("10.30.0.11"), Password: "pw", Passive: true},
			{Address: netip.MustParseAddr("10.30.1.13"), AS: 64513, Multihop: 2},
		},
		Announce: []netip.Prefix{netip.MustParsePrefix("203.0.113.1/24")},
		Resolve:  []BIRDStatic{{Prefix: netip.MustParsePrefix("10.30.1.0/24"), Via: netip.MustParseAddr("10.30.0.1")}},
	}
	conf, err := o.Config()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"router id 10.30.0.254;", "export filter { if source = RTS_BGP then accept; reject; };",
		"protocol static announce {\n\tipv4;\n\troute 203.0.113.0/24 blackhole;", "protocol static underlay {\n\tipv4;\n\troute 10.30.1.0/24 via 10.30.0.1;",
		"protocol bgp host_a {\n\tlocal 10.30.0.254 as 65000;\n\tneighbor 10.30.0.11 as 64512;\n\tpassive on;\n\tpassword \"pw\";\n\tgraceful restart on;\n\tgraceful restart time 120;",
		"protocol bgp p_10_30_1_13 {\n\tlocal 10.30.0.254 as 65000;\n\tneighbor 10.30.1.13 as 64513;\n\tmultihop 2;",
		"import filter calyx_import;", "export where proto = \"announce\";",
	} {
		if !strings.Contains(conf, want) {
			t.Errorf("config lacks %q:\n%s", want, conf)
		}
	}
	if strings.Contains(conf, "ipv6") {
		t.Errorf("IPv6 channel without IPv6:\n%s", conf)
	}
	o.IPv6, o.NoKernel, o.NoGracefulRestart = true, true, true
	conf, err = o.Config()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"protocol static announce6 {\n\tipv6;", "\tipv6 {\n\t\timport filter calyx_import;", "graceful restart off;"} {
		if !strings.Contains(conf, want) {
			t.Errorf("config lacks %q:\n%s", want, conf)
		}
	}
	if strings.Contains(conf, "protocol kernel") {
		t.Errorf("kernel protocol with NoKernel:\n%s", conf)
	}
	for _, bad := range []BIRDOptions{
		{NS: "x"},
		{NS: "x", RouterID: o.RouterID, Neighbors: []BIRDNeighbor{{Name: "a-b", Address: o.RouterID}}},
		{NS: "x", RouterID: o.RouterID, Neighbors: []BIRDNeighbor{{Name: "a", Address: o.RouterID}, {Name: "a", Address: o.RouterID}}},
		{NS: "x", RouterID: o.RouterID, Neighbors: []BIRDNeighbor{{Address: o.RouterID, Password: `a"b`}}},
		{NS: "x", RouterID: o.RouterID, Neighbors: []BIRDNeighbor{{Name: "a"}}},
	} {
		if _, err := bad.Config(); err == nil {
			t.Errorf("%+v: no error", bad)
		}
	}
	if got := BIRDProtocolName("host-a"); got != "host_a" {
		t.Errorf("BIRDProtocolName(host-a) = %q", got)
	}
}

// An IPv6 neighbor's session has the IPv6 channel only, from Address6; an
// IPv4 session with IPv6 has an IPv6 channel whose next hop is Address6.
func TestBIRDConfigIPv6(t *testing.T) {
	o := BIRDOptions{
		Name: "gw", NS: "cx0000-gw", RouterID: netip.MustParseAddr("10.30.0.254"), Address6: netip.MustParseAddr("2001:db8:a41:ff::254"),
		Neighbors: []BIRDNeighbor{
			{Name: "host_a", Address: netip.MustParseAddr("10.30.0.11")},
			{Name: "host_a6", Address: netip.MustParseAddr("2001:db8:a41:ff::11")},
		},
		Announce: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix(ExternalIPv6)},
	}
	conf, err := o.Config()
	if err != nil {
		t.Fatal(err)
	}
	v6session := "protocol bgp host_a6 {\n\tlocal 2001:db8:a41:ff::254 as 65000;\n\tneighbor 2001:db8:a41:ff::11 as 64512;"
	for _, want := range []string{v6session, "protocol static announce6 {\n\tipv6;\n\troute 2001:db8:a41:2::/64 blackhole;", "protocol kernel {\n\tipv6 {"} {
		if !strings.Contains(conf, want) {
			t.Errorf("config lacks %q:\n%s", want, conf)
		}
	}
	if s := conf[strings.Index(conf, "protocol bgp host_a6"):]; strings.Contains(s, "ipv4 {") {
		t.Errorf("IPv4 channel on the IPv6 session:\n%s", s)
	}
	if s := conf[strings.Index(conf, "protocol bgp host_a {"):strings.Index(conf, "protocol bgp host_a6")]; strings.Contains(s, "ipv6 {") {
		t.Errorf("IPv6 channel on the IPv4 session without IPv6:\n%s", s)
	}
	o.IPv6 = true
	if conf, err = o.Config(); err != nil {
		t.Fatal(err)
	}
	s := conf[strings.Index(conf, "protocol bgp host_a {"):strings.Index(conf, "protocol bgp host_a6")]
	if !strings.Contains(s, "\tipv4 {") || !strings.Contains(s, "\tipv6 {\n\t\timport filter calyx_import;\n\t\texport where proto = \"announce6\";\n\t\tnext hop address 2001:db8:a41:ff::254;\n\t};") {
		t.Errorf("IPv4 session with MP-BGP IPv6:\n%s", s)
	}
}

func TestNodeYAMLIPv6(t *testing.T) {
	h := &Host{Name: "host-a", Underlay: netip.MustParsePrefix("10.30.0.11/24")}
	if y := NodeYAML(h); strings.Contains(y, "ipv6Address") {
		t.Errorf("IPv4-only host: %s", y)
	}
	h.Underlay6 = FabricIPv6(h.Underlay.Addr())
	if y := NodeYAML(h); !strings.Contains(y, "  ipv4Address: 10.30.0.11/24\n  ipv6Address: 2001:db8:a41:ff::11/64\n") {
		t.Errorf("dual-stack host: %s", y)
	}
}
