package e2e

// End-to-end tests of issue 14 (BGP): the agents' GoBGP speakers peer with
// each other (node-to-node mesh or a route reflector), with the data
// center's gateway and with the router between the two underlay subnets,
// both BIRD 2. The gateway and the router learn the workloads' and floating
// IPs' routes and need no static route for them.

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/calyxnet/calyx/tests/lab"
)

// bgpTimeout bounds a session coming up and a route being learned.
const bgpTimeout = 30 * time.Second

// nodeAS is the nodes' AS in these tests (BGPConfiguration's default).
const nodeAS = 64512

// privateFIP is a floating IP of a pool with disableBGPExport: it is never
// advertised.
const (
	privatePool = "192.0.2.0/24"
	privateFIP  = "192.0.2.20"
)

// bgpEnv is fipSetup's lab with BGP on: the gateway's and the router's BIRD
// peer with every host, and the floating IPs have no static route.
type bgpEnv struct {
	*fipEnv
	fab    *lab.FabricBGP
	gw     netip.Addr
	peers  []lab.BGPPeer
	router map[string]netip.Addr // the router's address on each host's segment
}

// bgpSetup builds fipSetup's three hosts, removes the floating IPs' static
// routes, starts BIRD on the gateway and the router, and applies a
// BGPConfiguration (mesh as given), the gateway as a global BGPPeer and the
// router as one node-specific BGPPeer per host (its leg on the host's
// segment), plus extra.
func bgpSetup(t *testing.T, mesh bool, fab lab.FabricBGPOptions, extra ...string) *bgpEnv {
	t.Helper()
	lab.RequireBIRD(t)
	e := &bgpEnv{fipEnv: fipSetup(t), router: map[string]netip.Addr{}}
	l, m := e.l, e.m
	for _, fip := range []string{fipA, fipC} {
		if err := l.UnrouteFloatingIP(fip); err != nil {
			t.Fatal(err)
		}
	}
	var err error
	if e.fab, err = l.StartFabricBGP(fab); err != nil {
		t.Fatal(err)
	}
	e.gw = e.g.Address.Addr()
	e.peers = []lab.BGPPeer{{Name: "gateway", PeerIP: e.gw, AS: lab.DefaultFabricAS}}
	for _, h := range m.Hosts() {
		leg, err := m.Router.Leg(h.Segment.Name)
		if err != nil {
			t.Fatal(err)
		}
		e.router[h.Name] = leg.Address.Addr()
		e.peers = append(e.peers, lab.BGPPeer{Name: "router-" + h.Name, PeerIP: leg.Address.Addr(), AS: lab.DefaultFabricAS, Node: h.Name})
	}
	docs := []string{lab.BGPConfigurationYAML(nodeAS, mesh)}
	for _, p := range e.peers {
		docs = append(docs, p.YAML())
	}
	docs = append(docs, extra...)
	if out, err := l.Apply("", lab.JoinYAML(docs...)); err != nil {
		t.Fatalf("apply BGP model: %v\n%s", err, out)
	}
	return e
}

// waitGatewaySessions waits until the gateway's and the router's BIRD have
// an Established session with every host.
func (e *bgpEnv) waitFabricSessions(t *testing.T) {
	t.Helper()
	for _, h := range e.m.Hosts() {
		for _, b := range e.fab.All() {
			if _, err := b.WaitEstablished(lab.BIRDProtocolName(h.Name), bgpTimeout); err != nil {
				t.Fatalf("%s's session with %s: %v\n%s", b.Name, h.Name, err, e.l.AgentLog(h.Name))
			}
		}
	}
}

// owners are the /32s the gateway must learn, each from its host only.
func (e *bgpEnv) owners(fipAHost *lab.Host) map[string]*lab.Host {
	m := e.m
	return map[string]*lab.Host{
		fipA + "/32":                           fipAHost,
		fipC + "/32":                           m.HostC,
		netip.PrefixFrom(m.WA.IP, 32).String(): m.HostA,
		netip.PrefixFrom(m.WB.IP, 32).String(): m.HostB,
		netip.PrefixFrom(m.WC.IP, 32).String(): m.HostC,
	}
}

// checkGatewayRoutes waits until BIRD on the gateway selects each owned
// prefix with its host as next hop, then checks that no other host
// advertised it (every BGP route for the prefix has the owner's next hop):
// a node sends the gateway only its own routes, even with the mesh on.
func checkGatewayRoutes(t *testing.T, gw *lab.BIRD, owners map[string]*lab.Host) {
	t.Helper()
	for prefix, host := range owners {
		if _, err := gw.WaitRoute(prefix, host.Underlay.Addr().String(), bgpTimeout); err != nil {
			t.Errorf("gateway route %s via %s: %v", prefix, host.Name, err)
			continue
		}
		rs, err := gw.RoutesFor(prefix)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			if r.Source == "BGP" && r.BGPNextHop != host.Underlay.Addr() {
				t.Errorf("gateway learned %s from %s with next hop %s: only %s (%s) may advertise it", prefix, r.Protocol, r.BGPNextHop, host.Name, host.Underlay.Addr())
			}
		}
	}
}

// waitNodeStatus waits until calyxctl node status on host shows want
// IPv4 peers, all Established, and no disagreement between BGP and the
// datastore; it returns the last status.
func waitNodeStatus(t *testing.T, l *lab.Lab, host string, want int) lab.NodeStatus {
	t.Helper()
	var st lab.NodeStatus
	err := lab.Eventually(bgpTimeout, 500*time.Millisecond, func() error {
		var err error
		if st, err = l.NodeStatus(host); err != nil {
			return err
		}
		if st.BGP == nil || !st.BGP.Running {
			return fmt.Errorf("BGP not running: %+v", st.BGP)
		}
		if len(st.BGP.IPv4Peers) != want {
			return fmt.Errorf("%d IPv4 peers, want %d: %+v", len(st.BGP.IPv4Peers), want, st.BGP.IPv4Peers)
		}
		for _, p := range st.BGP.IPv4Peers {
			if !p.Established || p.Info != "Established" || p.State != "up" {
				return fmt.Errorf("peer %s (%s) is %s %q", p.PeerAddress, p.PeerType, p.State, p.Info)
			}
		}
		if len(st.BGP.Disagreements) > 0 {
			return fmt.Errorf("BGP and the datastore disagree: %+v", st.BGP.Disagreements)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("node status on %s: %v\n%s", host, err, l.AgentLog(host))
	}
	return st
}

// TestBGPFabric: three hosts on two subnets with the node-to-node mesh,
// the gateway and the router as BGP peers.
//   - every session is Established, in BIRD and in calyxctl node status
//     (table and JSON), and BGP agrees with the datastore;
//   - the gateway learns each workload's and floating IP's /32 from its
//     host only, nothing of a disableBGPExport pool, and an external client
//     reaches both floating IPs over the learned routes alone;
//   - the hosts install the gateway's internet prefix in the kernel FIB
//     (calyx's protocol, metric 1024), never in the BPF route map;
//   - an agent SIGKILLed and restarted: BIRD keeps its routes throughout and
//     a ping through its floating IP loses nothing;
//   - a floating IP moved to another host: the gateway's route follows
//     within 5 s and new connections reach the new instance;
//   - Never mode across the router works with BGP (the router learns the
//     workloads' routes; TestMultiHostModes shows it does not without);
//   - SIGTERM keeps the routes at the gateway, SIGTERM with
//     --bgp-withdraw-on-stop withdraws them.
func TestBGPFabric(t *testing.T) {
	e := bgpSetup(t, true, lab.FabricBGPOptions{},
		lab.Pool{Name: "private-fips", CIDR: privatePool, External: true, DisableBGPExport: true}.YAML(),
		lab.FloatingIPYAML("fip-private", privateFIP, "wb"))
	l, m := e.l, e.m
	if m.WB.Name != "wb" {
		t.Fatalf("workload b is %q, the model above says wb", m.WB.Name)
	}
	e.waitFabricSessions(t)
	for _, h := range m.Hosts() {
		// Two mesh peers, the gateway and the router.
		st := waitNodeStatus(t, l, h.Name, 4)
		types := map[string]int{}
		for _, p := range st.BGP.IPv4Peers {
			types[p.PeerType]++
		}
		if types["node-to-node mesh"] != 2 || types["global"] != 1 || types["node specific"] != 1 {
			t.Errorf("%s: peer types %v, want 2 node-to-node mesh, 1 global, 1 node specific", h.Name, types)
		}
	}
	table, err := l.NodeStatusTable(m.HostC.Name)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"IPv4 BGP status", "PEER ADDRESS", e.gw.String(), "global", "node-to-node mesh", "Established", "No IPv6 peers found."} {
		if !strings.Contains(table, want) {
			t.Errorf("node status table on host-c lacks %q:\n%s", want, table)
		}
	}

	checkGatewayRoutes(t, e.fab.Gateway, e.owners(m.HostA))
	if err := e.fab.Gateway.WaitNoRoute(privateFIP+"/32", 2*time.Second); err != nil {
		t.Errorf("disableBGPExport: %v", err)
	}
	for _, fip := range []struct{ ip, wl string }{{fipA, m.WA.Name}, {fipC, m.WC.Name}} {
		var r lab.EchoReply
		err := lab.Eventually(bgpTimeout, 200*time.Millisecond, func() error {
			var err error
			r, err = lab.TCPEcho(e.client.NS, echoAddr(fip.ip), time.Second)
			return err
		})
		checkEcho(t, "client -> floating IP "+fip.ip+" learned by BGP", r, err, fip.wl, e.client.IP, netip.AddrPort{})
	}

	// The internet's prefix, learned from the gateway and the router, is
	// in each host's FIB under calyx's protocol, not in the BPF routes.
	internet := e.g.Internet.Masked().String()
	for _, h := range m.Hosts() {
		err := lab.Eventually(bgpTimeout, 500*time.Millisecond, func() error {
			res, err := l.Exec(h.NS, "ip", "route", "show", internet, "proto", "202")
			if err != nil {
				return err
			}
			if !strings.Contains(res.Stdout, "metric 1024") {
				return fmt.Errorf("ip route show %s proto 202: %q", internet, res.Stdout)
			}
			return nil
		})
		if err != nil {
			t.Errorf("%s: learned route for the internet: %v", h.Name, err)
		}
		routes, err := l.Routes(h.Name)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range routes {
			if r.CIDR == internet {
				t.Errorf("%s: the internet's prefix is in the BPF route map: %+v", h.Name, r)
			}
		}
	}
	st, err := l.NodeStatus(m.HostA.Name)
	if err != nil {
		t.Fatal(err)
	}
	installed := false
	for _, f := range st.BGP.FIB {
		installed = installed || (f.Prefix == internet && f.Installed)
	}
	if !installed {
		t.Errorf("host-a node status: %s not among the installed FIB routes: %+v", internet, st.BGP.FIB)
	}
	if text, err := l.AgentMetrics(m.HostA.Name); err != nil {
		t.Error(err)
	} else if v, ok, err := lab.MetricSum(text, fmt.Sprintf(`calyx_bgp_peer_up{peer="%s",type="global"}`, e.gw)); err != nil || !ok || v != 1 {
		t.Errorf("calyx_bgp_peer_up for the gateway on host-a = %v (found %v, %v), want 1", v, ok, err)
	}

	t.Run("hostile announcements from the fabric", func(t *testing.T) { testBGPHostileAnnouncements(t, e) })
	t.Run("agent SIGKILLed and restarted", func(t *testing.T) { testBGPRestart(t, e) })
	t.Run("floating IP moves", func(t *testing.T) { testBGPFloatingIPMove(t, e) })
	t.Run("Never mode across the router", func(t *testing.T) { testBGPNeverAcrossRouter(t, e) })
	t.Run("stop with and without withdrawing", func(t *testing.T) { testBGPStop(t, e) })
}

// testBGPStop stops host-c's agent with SIGTERM: by default the gateway
// keeps its routes (a graceful restart, as an upgrade wants); with
// --bgp-withdraw-on-stop they are withdrawn at once.
func testBGPStop(t *testing.T, e *bgpEnv) {
	l, m := e.l, e.m
	wc := netip.PrefixFrom(m.WC.IP, 32).String()
	if err := l.StopAgent(m.HostC.Name); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	if _, err := e.fab.Gateway.WaitRoute(wc, m.HostC.Underlay.Addr().String(), time.Second); err != nil {
		t.Errorf("a plain stop withdrew host-c's routes: %v", err)
	}
	if err := l.StartAgent(m.HostC.Name, "--bgp-withdraw-on-stop"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.fab.Gateway.WaitProtocol(lab.BIRDProtocolName(m.HostC.Name), bgpTimeout, func(p lab.BIRDProtocol) error {
		if !p.Established() || p.GRActive {
			return fmt.Errorf("%s %q, graceful restart active %v", p.State, p.Info, p.GRActive)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := l.StopAgent(m.HostC.Name); err != nil {
		t.Fatal(err)
	}
	if err := e.fab.Gateway.WaitNoRoute(wc, 5*time.Second); err != nil {
		t.Errorf("--bgp-withdraw-on-stop: %v", err)
	}
	t.Logf("--bgp-withdraw-on-stop: host-c's routes gone from the gateway %v after SIGTERM", time.Since(start).Round(time.Millisecond))
	if err := l.StartAgent(m.HostC.Name); err != nil {
		t.Fatal(err)
	}
}

// testBGPHostileAnnouncements has the gateway announce a prefix inside the
// workload pool and a default route. The pool prefix never reaches the BPF
// route map or the kernel FIB and shows in node status as a disagreement;
// the default goes to the FIB at metric 1024 beside the host's own default,
// which stays in force.
func testBGPHostileAnnouncements(t *testing.T, e *bgpEnv) {
	l, m := e.l, e.m
	const inPool = "10.65.200.0/24"
	opts := e.fab.Gateway.Options()
	orig := opts.Announce
	opts.Announce = append(slices.Clone(orig), netip.MustParsePrefix(inPool), netip.MustParsePrefix("0.0.0.0/0"))
	if err := e.fab.Gateway.Reconfigure(opts); err != nil {
		t.Fatal(err)
	}
	defer func() {
		opts.Announce = orig
		if err := e.fab.Gateway.Reconfigure(opts); err != nil {
			t.Error(err)
		}
		waitNodeStatus(t, l, m.HostA.Name, 4)
	}()
	h := m.HostA
	err := lab.Eventually(bgpTimeout, 500*time.Millisecond, func() error {
		st, err := l.NodeStatus(h.Name)
		if err != nil {
			return err
		}
		for _, d := range st.BGP.Disagreements {
			if d.Prefix == inPool && d.Learned == e.gw.String() && d.Expected == "" {
				t.Logf("%s's node status: %+v", h.Name, d)
				return nil
			}
		}
		return fmt.Errorf("no disagreement for %s: %+v", inPool, st.BGP.Disagreements)
	})
	if err != nil {
		t.Errorf("%s: %v", h.Name, err)
	}
	routes, err := l.Routes(h.Name)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range routes {
		if r.CIDR == inPool {
			t.Errorf("%s: a pool prefix learned from the fabric is in the BPF route map: %+v", h.Name, r)
		}
	}
	err = lab.Eventually(bgpTimeout, 500*time.Millisecond, func() error {
		res, err := l.Exec(h.NS, "ip", "route", "show", "default")
		if err != nil {
			return err
		}
		if !strings.Contains(res.Stdout, "proto 202") || !strings.Contains(res.Stdout, "metric 1024") {
			return fmt.Errorf("no learned default at metric 1024: %q", res.Stdout)
		}
		return nil
	})
	if err != nil {
		t.Errorf("%s: %v", h.Name, err)
	}
	res, err := l.Exec(h.NS, "ip", "route", "show", "default")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("ip route show default on %s:\n%s", h.Name, res.Stdout)
	if lines := strings.Split(strings.TrimSpace(res.Stdout), "\n"); len(lines) != 2 || strings.Contains(lines[0], "proto 202") {
		t.Errorf("%s: the host's own default must stay first, beside the learned one:\n%s", h.Name, res.Stdout)
	}
	if res, err := l.Exec(h.NS, "ip", "route", "show", inPool); err != nil || strings.TrimSpace(res.Stdout) != "" {
		t.Errorf("%s: kernel route for the pool prefix %s: %q (%v)", h.Name, inPool, res.Stdout, err)
	}
}

// testBGPRestart kills host-a's agent with SIGKILL during a ping through its
// floating IP and starts it again at once: the gateway keeps host-a's
// routes (stale) until the new agent re-advertises them, and no ping is
// lost.
func testBGPRestart(t *testing.T, e *bgpEnv) {
	l, m := e.l, e.m
	owned := []string{fipA + "/32", netip.PrefixFrom(m.WA.IP, 32).String()}
	var (
		wg    sync.WaitGroup
		ping  lab.PingStats
		perr  error
		stop  = make(chan struct{})
		gone  []string
		polls int
	)
	pinged := make(chan struct{})
	go func() {
		defer close(pinged)
		ping, perr = l.Ping(e.client.NS, fipA, 75) // 15 s
	}()
	wg.Add(1)
	go func() {
		// Watch the gateway's table the whole time.
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
			}
			for _, p := range owned {
				rs, err := e.fab.Gateway.RoutesFor(p)
				if err != nil {
					continue
				}
				polls++
				found := false
				for _, r := range rs {
					found = found || (r.Source == "BGP" && r.BGPNextHop == m.HostA.Underlay.Addr())
				}
				if !found {
					gone = append(gone, time.Now().Format("15:04:05.000")+" "+p)
				}
			}
		}
	}()
	time.Sleep(2 * time.Second)
	start := time.Now()
	if err := l.KillAgent(m.HostA.Name, syscall.SIGKILL); err != nil {
		t.Error(err)
	}
	if err := l.StartAgent(m.HostA.Name); err != nil {
		t.Fatal(err)
	}
	t.Logf("host-a's agent killed and ready again in %v", time.Since(start).Round(time.Millisecond))
	if _, err := e.fab.Gateway.WaitEstablished(lab.BIRDProtocolName(m.HostA.Name), bgpTimeout); err != nil {
		t.Error(err)
	}
	// The restarted agent sends its routes and End-of-RIB: the gateway's
	// session leaves graceful restart with the routes fresh.
	if _, err := e.fab.Gateway.WaitProtocol(lab.BIRDProtocolName(m.HostA.Name), bgpTimeout, func(p lab.BIRDProtocol) error {
		if p.GRActive {
			return fmt.Errorf("still in graceful restart")
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
	<-pinged
	close(stop)
	wg.Wait()
	if perr != nil || ping.Received != ping.Transmitted {
		t.Errorf("ping through %s across the restart: %d/%d answered (%v)", fipA, ping.Received, ping.Transmitted, perr)
	}
	if len(gone) > 0 {
		t.Errorf("the gateway lost host-a's routes during the restart: %v", gone)
	}
	t.Logf("ping across the restart: %d/%d answered; gateway table polled %d times, routes always there", ping.Received, ping.Transmitted, polls)
	checkGatewayRoutes(t, e.fab.Gateway, e.owners(m.HostA))
	waitNodeStatus(t, l, m.HostA.Name, 4)
}

// testBGPFloatingIPMove moves fipA from wa (host-a) to wb (host-b).
func testBGPFloatingIPMove(t *testing.T, e *bgpEnv) {
	l, m := e.l, e.m
	// wb holds the unexported floating IP; an address has one at most.
	if out, err := l.Delete("", lab.FloatingIPYAML("fip-private", privateFIP, m.WB.Name)); err != nil {
		t.Fatalf("delete fip-private: %v\n%s", err, out)
	}
	start := time.Now()
	if out, err := l.Apply("", lab.FloatingIPYAML("fip-wa", fipA, m.WB.Name)); err != nil {
		t.Fatalf("move %s to %s: %v\n%s", fipA, m.WB.Name, err, out)
	}
	if _, err := e.fab.Gateway.WaitRoute(fipA+"/32", m.HostB.Underlay.Addr().String(), 10*time.Second); err != nil {
		t.Fatalf("gateway route for %s after the move: %v", fipA, err)
	}
	took := time.Since(start)
	t.Logf("the gateway's route for %s followed the move in %v", fipA, took.Round(time.Millisecond))
	if took > 5*time.Second {
		t.Errorf("the gateway's route followed the move in %v, want within 5s", took)
	}
	checkGatewayRoutes(t, e.fab.Gateway, e.owners(m.HostB))
	var r lab.EchoReply
	err := lab.Eventually(bgpTimeout, 200*time.Millisecond, func() error {
		var err error
		r, err = lab.TCPEcho(e.client.NS, echoAddr(fipA), time.Second)
		if err == nil && r.Server != m.WB.Name {
			return fmt.Errorf("answered by %s", r.Server)
		}
		return err
	})
	checkEcho(t, "client -> moved floating IP", r, err, m.WB.Name, e.client.IP, netip.AddrPort{})
	waitNodeStatus(t, l, m.HostA.Name, 4)
}

// testBGPNeverAcrossRouter switches the pool to Never: wa (fabric) and wc
// (remote) reach each other unencapsulated through the router, which
// learned their routes from their hosts.
func testBGPNeverAcrossRouter(t *testing.T, e *bgpEnv) {
	l, m := e.l, e.m
	if out, err := m.SetMode(lab.ModeNever); err != nil {
		t.Fatalf("Never mode: %v\n%s", err, out)
	}
	router := e.fab.Routers[0]
	for _, w := range []*lab.Workload{m.WA, m.WC} {
		host, _ := l.Host(w.Host)
		if _, err := router.WaitRoute(netip.PrefixFrom(w.IP, 32).String(), host.Underlay.Addr().String(), bgpTimeout); err != nil {
			t.Fatalf("router: %v", err)
		}
	}
	for _, p := range [][2]*lab.Workload{{m.WA, m.WC}, {m.WC, m.WA}} {
		if err := l.WaitPing(p[0].NS, p[1].IP.String(), bgpTimeout); err != nil {
			t.Fatalf("%s -> %s in Never mode across the router: %v", p[0].Name, p[1].Name, err)
		}
		srcHost, _ := l.Host(p[0].Host)
		c, err := l.StartCapture(srcHost.NS, srcHost.UnderlayIface, "host "+p[1].IP.String())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := l.Ping(p[0].NS, p[1].IP.String(), 3); err != nil {
			t.Errorf("%s -> %s: %v", p[0].Name, p[1].Name, err)
		}
		pkts, err := c.Stop()
		if err != nil {
			t.Fatal(err)
		}
		if len(pkts) == 0 {
			t.Errorf("%s -> %s: no unencapsulated packet to %s on %s's underlay", p[0].Name, p[1].Name, p[1].IP, srcHost.Name)
		}
	}
}

// TestBGPRouteReflectorAndMD5: the mesh off and host-a a route reflector:
// host-b and host-c (its clients) learn each other's routes through it. The
// fabric's sessions use TCP MD5; the gateway's and router's side of host-c's
// have another password, so those stay down and node status says so.
func TestBGPRouteReflectorAndMD5(t *testing.T) {
	const password = "calyx-md5-s3cret"
	fab := lab.FabricBGPOptions{Hosts: map[string]lab.BIRDPeer{
		"host-a": {Password: password}, "host-b": {Password: password}, "host-c": {Password: "not-" + password},
	}}
	e := bgpSetup(t, false, fab)
	l, m := e.l, e.m
	// Every session with the fabric (BIRD on the gateway and the router)
	// has the password; host-a reflects.
	// The floating IPs' routes carry communities (prefixAdvertisements).
	docs := []string{lab.NodeYAML(m.HostA) + "  routeReflectorClusterID: 10.30.0.11\n",
		lab.BGPConfigurationYAML(nodeAS, false) + "  communities:\n  - name: tenant-fips\n    value: 64512:1:2\n" +
			"  prefixAdvertisements:\n  - cidr: " + lab.FloatingPool + "\n    communities: [tenant-fips, \"65000:100\"]\n"}
	for _, p := range e.peers {
		p.Password = password
		docs = append(docs, p.YAML())
	}
	if out, err := l.Apply("", lab.JoinYAML(docs...)); err != nil {
		t.Fatalf("apply route reflector and password: %v\n%s", err, out)
	}
	for _, h := range []*lab.Host{m.HostA, m.HostB} {
		if _, err := e.fab.Gateway.WaitEstablished(lab.BIRDProtocolName(h.Name), bgpTimeout); err != nil {
			t.Fatalf("gateway's MD5 session with %s: %v", h.Name, err)
		}
	}
	// host-a: two clients, the gateway, the router; host-b: host-a, the
	// gateway, the router.
	waitNodeStatus(t, l, m.HostA.Name, 4)
	waitNodeStatus(t, l, m.HostB.Name, 3)
	wb, wc := netip.PrefixFrom(m.WB.IP, 32).String(), netip.PrefixFrom(m.WC.IP, 32).String()
	for _, c := range []struct {
		host    *lab.Host
		prefix  string
		nextHop *lab.Host
	}{{m.HostB, wc, m.HostC}, {m.HostC, wb, m.HostB}} {
		err := lab.Eventually(bgpTimeout, 500*time.Millisecond, func() error {
			routes, err := l.BGPRoutes(c.host.Name, true, "")
			if err != nil {
				return err
			}
			for _, r := range routes {
				if r.Prefix == c.prefix {
					if r.NextHop != c.nextHop.Underlay.Addr().String() || r.Peer != m.HostA.Underlay.Addr().String() {
						return fmt.Errorf("%s via %s from %s, want via %s from the reflector %s", r.Prefix, r.NextHop, r.Peer, c.nextHop.Underlay.Addr(), m.HostA.Underlay.Addr())
					}
					return nil
				}
			}
			return fmt.Errorf("%s not learned: %+v", c.prefix, routes)
		})
		if err != nil {
			t.Errorf("%s learns %s through the reflector: %v", c.host.Name, c.prefix, err)
		}
	}

	r, err := e.fab.Gateway.WaitRoute(fipA+"/32", m.HostA.Underlay.Addr().String(), bgpTimeout)
	if err != nil {
		t.Fatal(err)
	}
	if c, lc := r.Attrs["BGP.community"], r.Attrs["BGP.large_community"]; c != "(65000,100)" || lc != "(64512, 1, 2)" {
		t.Errorf("gateway's route for %s: communities %q, large communities %q; want (65000,100) and (64512, 1, 2)", fipA, c, lc)
	}

	// host-c's gateway session: wrong password on the other side.
	time.Sleep(3 * time.Second)
	if p, err := e.fab.Gateway.Protocol(lab.BIRDProtocolName(m.HostC.Name)); err != nil {
		t.Error(err)
	} else if p.Established() {
		t.Errorf("gateway's session with host-c is up with a wrong password: %+v", p)
	}
	st, err := l.NodeStatus(m.HostC.Name)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, p := range st.BGP.IPv4Peers {
		if p.PeerAddress != e.gw.String() {
			continue
		}
		found = true
		if p.Established || p.State == "up" || p.Info == "Established" {
			t.Errorf("host-c's node status shows the gateway session up with a wrong password: %+v", p)
		}
	}
	if !found {
		t.Errorf("host-c's node status has no row for the gateway: %+v", st.BGP.IPv4Peers)
	}
	table, err := l.NodeStatusTable(m.HostC.Name)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("host-c's node status:\n%s", table)
}
