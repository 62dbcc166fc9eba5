package e2e

// End-to-end tests of issue 4: floating IPs, natOutgoing, the metadata
// service and conntrack, in the three-host lab (VXLAN CrossSubnet) with an
// external gateway on the fabric segment and a client and a server behind it
// on 203.0.113.0/24. The gateway knows no workload route: from outside,
// workloads are reachable only by their floating IPs, which the gateway
// routes to the instance's host as a /32 (a static route here; bgp_test.go has
// the gateway learn it by BGP).

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/calyxnet/calyx/tests/lab"
)

// The floating IPs of the tests, from lab.FloatingPool.
const (
	fipA = "198.51.100.10" // wa's, on host-a (same segment as the gateway)
	fipC = "198.51.100.30" // wc's, on host-c (behind the router)
	// echoPort is where every echo server listens, TCP and UDP.
	echoPort = 7000
	// echoTimeout bounds one echo exchange that must work.
	echoTimeout = 5 * time.Second
	// noReplyTimeout is how long a connection that must not work is tried.
	noReplyTimeout = 2 * time.Second
)

// fipEnv is the three-host lab with the gateway, the external pool, a
// floating IP for wa and one for wc, and an echo server in every workload
// and in the external server.
type fipEnv struct {
	m      *lab.MultiHost
	l      *lab.Lab
	g      *lab.Gateway
	client *lab.External
	server *lab.External
	// echo servers by name: wa, wb, wc, server.
	echo map[string]*lab.EchoServer
}

// hostOf returns the host of workload w.
func (e *fipEnv) hostOf(t *testing.T, w *lab.Workload) *lab.Host {
	t.Helper()
	h, err := e.l.Host(w.Host)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// fipSetup builds the lab, starts the agents, applies the model with both
// floating IPs, routes them on the gateway and waits until the client
// reaches both.
func fipSetup(t *testing.T) *fipEnv { return fipSetupKind(t, "") }

// fipSetupKind is fipSetup with workloads of kind (see newLabKind).
func fipSetupKind(t *testing.T, kind lab.WorkloadKind) *fipEnv {
	t.Helper()
	l := newLabKind(t, kind)
	lab.RequireTools(t, "tcpdump")
	m, err := lab.BuildMultiHost(l, lab.ModeVXLANCrossSubnet)
	if err != nil {
		t.Fatalf("build three hosts: %v", err)
	}
	g, err := m.AddGateway()
	if err != nil {
		t.Fatalf("add gateway: %v", err)
	}
	e := &fipEnv{m: m, l: l, g: g, client: g.Client, server: g.Server, echo: map[string]*lab.EchoServer{}}
	// Before any agent runs: the gateway reaches every host's underlay,
	// and host-c reaches the internet through the router.
	for _, h := range m.Hosts() {
		if err := l.WaitPing(g.NS, h.Underlay.Addr().String(), trafficTimeout); err != nil {
			t.Fatalf("gateway -> %s underlay: %v", h.Name, err)
		}
		if err := l.WaitPing(h.NS, e.server.IP.String(), trafficTimeout); err != nil {
			t.Fatalf("%s -> external server: %v", h.Name, err)
		}
	}

	if err := m.StartAgents(); err != nil {
		t.Fatalf("start agents: %v", err)
	}
	model := lab.JoinYAML(m.ModelYAML(),
		lab.ExternalPoolYAML(lab.ExternalPool, lab.FloatingPool),
		lab.FloatingIPYAML("fip-wa", fipA, m.WA.Name),
		lab.FloatingIPYAML("fip-wc", fipC, m.WC.Name))
	if out, err := l.Apply("", model); err != nil {
		t.Fatalf("apply model: %v\n%s\nmodel:\n%s", err, out, model)
	}
	if err := m.WaitLinks(attachTimeout); err != nil {
		t.Fatalf("programs not attached: %v", err)
	}
	if err := l.RouteFloatingIP(fipA, m.HostA); err != nil {
		t.Fatal(err)
	}
	if err := l.RouteFloatingIP(fipC, m.HostC); err != nil {
		t.Fatal(err)
	}
	for _, w := range m.Workloads() {
		s, err := l.StartEcho(w.NS, w.Name, fmt.Sprintf("0.0.0.0:%d", echoPort))
		if err != nil {
			t.Fatal(err)
		}
		e.echo[w.Name] = s
	}
	s, err := l.StartEcho(e.server.NS, e.server.Name, fmt.Sprintf("%s:%d", e.server.IP, echoPort))
	if err != nil {
		t.Fatal(err)
	}
	e.echo[e.server.Name] = s
	for _, fip := range []string{fipA, fipC} {
		if err := l.WaitPing(e.client.NS, fip, trafficTimeout); err != nil {
			t.Fatalf("client cannot reach floating IP %s: %v", fip, err)
		}
	}
	return e
}

// addr is "ip:echoPort".
func echoAddr(ip string) string { return net.JoinHostPort(ip, strconv.Itoa(echoPort)) }

// checkEcho requires an echo reply from server, which saw the peer address
// peer (any port when the zero Addr is not given), arriving from from.
func checkEcho(t *testing.T, what string, r lab.EchoReply, err error, server string, peer netip.Addr, from netip.AddrPort) {
	t.Helper()
	if err != nil {
		t.Errorf("%s: %v", what, err)
		return
	}
	if r.Server != server {
		t.Errorf("%s: answered by %s, want %s", what, r.Server, server)
	}
	if r.Peer.Addr() != peer {
		t.Errorf("%s: the server saw the peer %s, want %s", what, r.Peer, peer)
	}
	if from.IsValid() && r.From != from {
		t.Errorf("%s: the reply came from %s, want %s", what, r.From, from)
	}
}

// checkPingFrom pings dst from ns count times and requires every reply to
// come from dst itself.
func checkPingFrom(t *testing.T, l *lab.Lab, what, ns, dst string, count int) {
	t.Helper()
	st, err := l.Ping(ns, dst, count)
	if err != nil {
		t.Errorf("%s: ping %s: %v\n%s", what, dst, err, st.Output)
		return
	}
	if !slices.Equal(st.From, []string{dst}) {
		t.Errorf("%s: ping %s: replies from %v, want only from %s\n%s", what, dst, st.From, dst, st.Output)
	}
}

// captureICMP pings dst from ns while capturing ICMP on iface in capNS, and
// returns the echo requests captured.
func captureICMP(t *testing.T, l *lab.Lab, capNS, iface, ns, dst string) []string {
	t.Helper()
	c, err := l.StartCapture(capNS, iface, "icmp")
	if err != nil {
		t.Fatalf("capture: %v", err)
	}
	st, perr := l.Ping(ns, dst, 2)
	lines, cerr := c.Stop()
	if perr != nil {
		t.Errorf("ping %s from %s: %v\n%s", dst, ns, perr, st.Output)
	}
	if cerr != nil {
		t.Fatalf("capture: %v", cerr)
	}
	var reqs []string
	for _, line := range lines {
		if strings.Contains(line, "ICMP echo request") {
			reqs = append(reqs, line)
		}
	}
	return reqs
}

// requestsFrom requires that every captured echo request goes from src to
// dst, and that there is at least one.
func requestsFrom(t *testing.T, what string, reqs []string, src, dst string) {
	t.Helper()
	want := "IP " + src + " > " + dst + ": ICMP echo request"
	if len(reqs) == 0 {
		t.Errorf("%s: no ICMP echo request captured, want %q", what, want)
		return
	}
	for _, r := range reqs {
		if !strings.Contains(r, want) {
			t.Errorf("%s: captured %q, want every request to read %q\nall:\n%s", what, r, want, strings.Join(reqs, "\n"))
			return
		}
	}
}

// waitFlow waits until host's conntrack holds a flow matching match.
func waitFlow(t *testing.T, l *lab.Lab, host, what string, match func(lab.CTFlow) bool) lab.CTFlow {
	t.Helper()
	var found lab.CTFlow
	var flows []lab.CTFlow
	err := lab.Eventually(5*time.Second, 100*time.Millisecond, func() error {
		var err error
		if flows, err = l.CTDump(host); err != nil {
			return err
		}
		for _, f := range flows {
			if match(f) {
				found = f
				return nil
			}
		}
		return fmt.Errorf("no such flow")
	})
	if err != nil {
		var rows []string
		for _, f := range flows {
			rows = append(rows, f.String())
		}
		t.Errorf("ct dump on %s: no %s: %v; flows:\n%s", host, what, err, strings.Join(rows, "\n"))
	}
	return found
}

// portOf returns the port of "ip:port", or -1.
func portOf(s string) int {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return -1
	}
	return int(ap.Port())
}

// TestFloatingIP: everything floating IPs, natOutgoing and the metadata
// service must show, in one lab: an external client reaches instances on two
// hosts by their floating IPs over TCP, UDP and ping and the instances see
// its real address; hairpin, east-west and host traffic to floating IPs;
// natOutgoing; the metadata service; an established connection surviving an
// agent restart; nat dump, ct dump and ct flush; moving and deleting a
// floating IP.
func TestFloatingIP(t *testing.T) {
	e := fipSetup(t)
	l, m := e.l, e.m
	clientIP := e.client.IP
	fA, fC := netip.MustParseAddr(fipA), netip.MustParseAddr(fipC)

	// One connection stays open from here to the agent restart.
	held, err := lab.DialEcho(e.client.NS, echoAddr(fipA), echoTimeout)
	if err != nil {
		t.Fatalf("client -> %s: %v", fipA, err)
	}
	defer held.Close()
	r, err := held.Exchange("before the restart", echoTimeout)
	checkEcho(t, "held connection client -> FIP(wa)", r, err, m.WA.Name, clientIP, netip.AddrPortFrom(fA, echoPort))

	t.Run("external", func(t *testing.T) {
		for _, p := range []struct {
			fip string
			w   *lab.Workload
		}{{fipA, m.WA}, {fipC, m.WC}} {
			name := fmt.Sprintf("client -> %s (%s on %s)", p.fip, p.w.Name, p.w.Host)
			fip := netip.MustParseAddr(p.fip)
			r, err := lab.TCPEcho(e.client.NS, echoAddr(p.fip), echoTimeout)
			checkEcho(t, name+" tcp", r, err, p.w.Name, clientIP, netip.AddrPortFrom(fip, echoPort))
			r, err = lab.UDPEcho(e.client.NS, echoAddr(p.fip), echoTimeout)
			checkEcho(t, name+" udp", r, err, p.w.Name, clientIP, netip.AddrPortFrom(fip, echoPort))
			checkPingFrom(t, l, name, e.client.NS, p.fip, 3)
			// The instance sees the client's own address, and its own
			// fixed IP as the destination.
			reqs := captureICMP(t, l, p.w.NS, "eth0", e.client.NS, p.fip)
			requestsFrom(t, name+": capture in the instance", reqs, clientIP.String(), p.w.IP.String())
		}
	})

	t.Run("nat-dump", func(t *testing.T) {
		want := map[string]lab.NATRow{
			fipA: {FloatingIP: fipA, FixedIP: m.WA.IP.String(), Endpoint: m.WA.Name, Node: m.HostA.Name},
			fipC: {FloatingIP: fipC, FixedIP: m.WC.IP.String(), Endpoint: m.WC.Name, Node: m.HostC.Name},
		}
		for _, h := range m.Hosts() {
			rows, err := l.NATDump(h.Name)
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]lab.NATRow{}
			for _, r := range rows {
				got[r.FloatingIP] = r
			}
			for fip, w := range want {
				g, ok := got[fip]
				if !ok {
					t.Errorf("nat dump on %s: no row for %s: %+v", h.Name, fip, rows)
					continue
				}
				if g.FixedIP != w.FixedIP || g.Endpoint != w.Endpoint || g.Node != w.Node || g.Local != (w.Node == h.Name) {
					t.Errorf("nat dump on %s: %+v, want fixedIP %s endpoint %s node %s local %v", h.Name, g, w.FixedIP, w.Endpoint, w.Node, w.Node == h.Name)
				}
			}
			if len(rows) != len(want) {
				t.Errorf("nat dump on %s: %d rows, want %d: %+v", h.Name, len(rows), len(want), rows)
			}
		}
		// The held connection is an active session of fip-wa on host-a.
		rows, err := l.NATDump(m.HostA.Name)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rows {
			if r.FloatingIP == fipA && r.Sessions == 0 {
				t.Errorf("nat dump on host-a: %s has no session, but a connection to it is open: %+v", fipA, r)
			}
		}
		out, _, err := l.Calyxctl(m.HostA.Name, "nat", "dump")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, fipA) || !strings.Contains(out, "active NAT sessions") {
			t.Errorf("nat dump (table) on host-a lacks %s or the active sessions:\n%s", fipA, out)
		}
		t.Logf("calyxctl nat dump on host-a:\n%s", out)
	})

	t.Run("ct-dump", func(t *testing.T) {
		// The held connection: DNAT from the client to wa on host-a.
		local := held.Local()
		f := waitFlow(t, l, m.HostA.Name, "DNAT flow of the held connection", func(f lab.CTFlow) bool {
			return f.Proto == "tcp" && f.Src == local.String() && f.Dst == echoAddr(fipA)
		})
		if f.Src != "" {
			if f.NAT != lab.NATDNAT || f.ReplySrc != echoAddr(m.WA.IP.String()) || f.ReplyDst != local.String() {
				t.Errorf("held connection on host-a: %s; want nat dnat, reply %s -> %s", f, echoAddr(m.WA.IP.String()), local)
			}
			if f.Packets == 0 || f.ReplyPackets == 0 {
				t.Errorf("held connection on host-a: %s; want packets counted both ways", f)
			}
		}
	})

	t.Run("hairpin", func(t *testing.T) {
		c, err := lab.DialEcho(m.WA.NS, echoAddr(fipA), echoTimeout)
		if err != nil {
			t.Fatalf("wa -> its own %s: %v", fipA, err)
		}
		defer c.Close()
		r, err := c.Exchange("hairpin", echoTimeout)
		// wa must see its floating IP as the peer, or its replies
		// would bypass the translation.
		checkEcho(t, "wa -> FIP(wa) tcp", r, err, m.WA.Name, fA, netip.AddrPortFrom(fA, echoPort))
		local := c.Local()
		f := waitFlow(t, l, m.HostA.Name, "hairpin flow", func(f lab.CTFlow) bool {
			return f.Proto == "tcp" && f.Src == local.String() && f.Dst == echoAddr(fipA)
		})
		if f.Src != "" && f.NAT != lab.NATDNATSNAT {
			t.Errorf("hairpin flow on host-a: %s; want nat dnat+snat", f)
		}
		r, err = lab.UDPEcho(m.WA.NS, echoAddr(fipA), echoTimeout)
		checkEcho(t, "wa -> FIP(wa) udp", r, err, m.WA.Name, fA, netip.AddrPortFrom(fA, echoPort))
		checkPingFrom(t, l, "wa -> FIP(wa)", m.WA.NS, fipA, 2)
	})

	t.Run("east-west", func(t *testing.T) {
		for _, p := range []struct {
			src *lab.Workload
			fip string
			dst *lab.Workload
		}{{m.WB, fipA, m.WA}, {m.WB, fipC, m.WC}, {m.WC, fipA, m.WA}} {
			name := fmt.Sprintf("%s -> FIP(%s) %s", p.src.Name, p.dst.Name, p.fip)
			fip := netip.MustParseAddr(p.fip)
			c, err := lab.DialEcho(p.src.NS, echoAddr(p.fip), echoTimeout)
			if err != nil {
				t.Errorf("%s: %v", name, err)
				continue
			}
			r, err := c.Exchange("east-west", echoTimeout)
			checkEcho(t, name+" tcp", r, err, p.dst.Name, p.src.IP, netip.AddrPortFrom(fip, echoPort))
			// Translated at the sender's host, the first hop.
			local := c.Local()
			srcHost := e.hostOf(t, p.src)
			f := waitFlow(t, l, srcHost.Name, name+" flow", func(f lab.CTFlow) bool {
				return f.Proto == "tcp" && f.Src == local.String() && f.Dst == echoAddr(p.fip)
			})
			if f.Src != "" && (f.NAT != lab.NATDNAT || f.ReplySrc != echoAddr(p.dst.IP.String())) {
				t.Errorf("%s on %s: %s; want nat dnat, reply from %s", name, srcHost.Name, f, echoAddr(p.dst.IP.String()))
			}
			c.Close()
			r, err = lab.UDPEcho(p.src.NS, echoAddr(p.fip), echoTimeout)
			checkEcho(t, name+" udp", r, err, p.dst.Name, p.src.IP, netip.AddrPortFrom(fip, echoPort))
			checkPingFrom(t, l, name, p.src.NS, p.fip, 2)
		}
	})

	t.Run("host", func(t *testing.T) {
		// The host's own processes, translated at the underlay egress:
		// host-a to its own instance, host-b and host-c to a remote one.
		for _, p := range []struct {
			h   *lab.Host
			fip string
			dst *lab.Workload
		}{{m.HostA, fipA, m.WA}, {m.HostB, fipA, m.WA}, {m.HostC, fipA, m.WA}, {m.HostB, fipC, m.WC}} {
			name := fmt.Sprintf("%s -> FIP(%s) %s", p.h.Name, p.dst.Name, p.fip)
			fip := netip.MustParseAddr(p.fip)
			r, err := lab.TCPEcho(p.h.NS, echoAddr(p.fip), echoTimeout)
			checkEcho(t, name+" tcp", r, err, p.dst.Name, p.h.Underlay.Addr(), netip.AddrPortFrom(fip, echoPort))
			r, err = lab.UDPEcho(p.h.NS, echoAddr(p.fip), echoTimeout)
			checkEcho(t, name+" udp", r, err, p.dst.Name, p.h.Underlay.Addr(), netip.AddrPortFrom(fip, echoPort))
			checkPingFrom(t, l, name, p.h.NS, p.fip, 2)
		}
	})

	t.Run("metadata", func(t *testing.T) {
		// Each host serves its own workloads' metadata on its loopback.
		for _, h := range []*lab.Host{m.HostA, m.HostB} {
			if _, err := l.StartHTTP(h.NS, "metadata-"+h.Name, "127.0.0.1:8775"); err != nil {
				t.Fatal(err)
			}
		}
		for _, w := range []*lab.Workload{m.WA, m.WB} {
			code, body, err := lab.HTTPGet(w.NS, "169.254.169.254:80", "/latest/meta-data/", echoTimeout)
			if err != nil {
				t.Errorf("%s: GET http://169.254.169.254/latest/meta-data/: %v", w.Name, err)
				continue
			}
			want := fmt.Sprintf("metadata-%s %s:", w.Host, w.IP)
			if code != 200 || !strings.HasPrefix(body, want) || !strings.Contains(body, "/latest/meta-data/") {
				t.Errorf("%s: GET http://169.254.169.254/latest/meta-data/: %d %q; want 200 from the metadata server of %s, seeing the workload's address (%q...)", w.Name, code, body, w.Host, want)
			}
		}
	})

	t.Run("restart", func(t *testing.T) {
		// The connection opened at the start is still up, and stays up
		// across a SIGKILL of host-a's agent and its restart: conntrack
		// is pinned and the programs keep running without the agent.
		if r, err := held.Exchange("before the kill", echoTimeout); err != nil || r.Server != m.WA.Name {
			t.Fatalf("held connection before the kill: %+v %v", r, err)
		}
		if err := l.KillAgent(m.HostA.Name, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		r, err := held.Exchange("agent down", echoTimeout)
		checkEcho(t, "held connection while host-a's agent is down", r, err, m.WA.Name, clientIP, netip.AddrPortFrom(fA, echoPort))
		if err := l.StartAgent(m.HostA.Name); err != nil {
			t.Fatal(err)
		}
		r, err = held.Exchange("after the restart", echoTimeout)
		checkEcho(t, "held connection after host-a's agent restarted", r, err, m.WA.Name, clientIP, netip.AddrPortFrom(fA, echoPort))
		// New connections work too, and the adopted maps were right.
		r, err = lab.TCPEcho(e.client.NS, echoAddr(fipA), echoTimeout)
		checkEcho(t, "new connection after the restart", r, err, m.WA.Name, clientIP, netip.AddrPortFrom(fA, echoPort))
		text, err := l.AgentMetrics(m.HostA.Name)
		if err != nil {
			t.Fatal(err)
		}
		if n, ok, _ := lab.MetricSum(text, "calyx_sync_map_writes_total"); !ok || n != 0 {
			t.Errorf("restarted agent on host-a wrote %v map entries (metric present %v), want 0", n, ok)
		}
		if _, ok, _ := lab.MetricSum(text, "calyx_conntrack_flows"); !ok {
			t.Errorf("agent metrics lack calyx_conntrack_flows")
		}
	})

	t.Run("nat-outgoing", func(t *testing.T) {
		server := netip.AddrPortFrom(e.server.IP, echoPort)
		// Off: the server would answer a workload address the internet
		// has no route for.
		if _, err := lab.TCPEcho(m.WB.NS, server.String(), noReplyTimeout); err == nil {
			t.Errorf("wb -> external server worked without natOutgoing: the gateway has no route to the pool")
		}
		if out, err := m.SetNATOutgoing(true); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		for _, w := range []*lab.Workload{m.WB, m.WC} {
			h := e.hostOf(t, w)
			name := fmt.Sprintf("%s on %s -> external server", w.Name, h.Name)
			var r lab.EchoReply
			err := lab.Eventually(attachTimeout, 200*time.Millisecond, func() error {
				var err error
				r, err = lab.TCPEcho(w.NS, server.String(), noReplyTimeout)
				return err
			})
			checkEcho(t, name+" tcp", r, err, e.server.Name, h.Underlay.Addr(), server)
			// The workload's own ephemeral port (32768-60999) is outside
			// the default natPortRange: a port of the range.
			if err == nil && (r.Peer.Port() < 20000 || r.Peer.Port() > 29999) {
				t.Errorf("%s: SNAT source port %d, want 20000-29999 (Config.natPortRange's default)", name, r.Peer.Port())
			}
			r, err = lab.UDPEcho(w.NS, server.String(), echoTimeout)
			checkEcho(t, name+" udp", r, err, e.server.Name, h.Underlay.Addr(), server)
			checkPingFrom(t, l, name, w.NS, e.server.IP.String(), 2)
			reqs := captureICMP(t, l, e.server.NS, "eth0", w.NS, e.server.IP.String())
			requestsFrom(t, name+": capture at the server", reqs, h.Underlay.Addr().String(), e.server.IP.String())
		}
		// ct dump on host-b: the SNAT flow, replies expected at host-b's
		// address on a port of the natOutgoing range.
		c, err := lab.DialEcho(m.WB.NS, server.String(), echoTimeout)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Exchange("snat", echoTimeout); err != nil {
			t.Fatal(err)
		}
		local := c.Local()
		f := waitFlow(t, l, m.HostB.Name, "natOutgoing flow", func(f lab.CTFlow) bool {
			return f.Proto == "tcp" && f.Src == local.String() && f.Dst == server.String()
		})
		if f.Src != "" {
			rd, err := netip.ParseAddrPort(f.ReplyDst)
			if f.NAT != lab.NATSNAT || f.ReplySrc != server.String() || err != nil || rd.Addr() != m.HostB.Underlay.Addr() || rd.Port() < 20000 || rd.Port() > 29999 {
				t.Errorf("natOutgoing flow on host-b: %s; want nat snat, reply %s -> %s:20000-29999", f, server, m.HostB.Underlay.Addr())
			}
		}
		// The range is kept from host-b's own sockets.
		if res, err := l.Exec(m.HostB.NS, "sysctl", "-n", "net.ipv4.ip_local_reserved_ports"); err != nil || !strings.Contains(res.Stdout, "20000-29999") {
			t.Errorf("host-b's net.ipv4.ip_local_reserved_ports = %q (%v), want it to hold 20000-29999", res.Stdout, err)
		}
		c.Close()
		if out, err := m.SetNATOutgoing(false); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
	})

	t.Run("ct-flush", func(t *testing.T) {
		held.Close()
		flows, err := l.CTDump(m.HostA.Name)
		if err != nil {
			t.Fatal(err)
		}
		if len(flows) == 0 {
			t.Fatalf("ct dump on host-a is empty before the flush")
		}
		n, err := l.CTFlush(m.HostA.Name)
		if err != nil {
			t.Fatal(err)
		}
		if n < len(flows) {
			t.Errorf("ct flush on host-a deleted %d entries, but %d flows were listed just before", n, len(flows))
		}
		after, err := l.CTDump(m.HostA.Name)
		if err != nil {
			t.Fatal(err)
		}
		if len(after) != 0 {
			var rows []string
			for _, f := range after {
				rows = append(rows, f.String())
			}
			t.Errorf("ct dump on host-a after the flush lists %d flows, want none:\n%s", len(after), strings.Join(rows, "\n"))
		}
		// New flows are tracked and translated again.
		r, err := lab.TCPEcho(e.client.NS, echoAddr(fipA), echoTimeout)
		checkEcho(t, "client -> FIP(wa) after the flush", r, err, m.WA.Name, clientIP, netip.AddrPortFrom(fA, echoPort))
	})

	t.Run("move", func(t *testing.T) {
		// fip-wa moves to wb on host-b (wc has a floating IP already, and an address can have only one); the gateway's route follows.
		if out, err := l.Apply("", lab.FloatingIPYAML("fip-wa", fipA, m.WB.Name)); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		if err := l.RouteFloatingIP(fipA, m.HostB); err != nil {
			t.Fatal(err)
		}
		var r lab.EchoReply
		err := lab.Eventually(attachTimeout, 200*time.Millisecond, func() error {
			var err error
			r, err = lab.TCPEcho(e.client.NS, echoAddr(fipA), noReplyTimeout)
			if err == nil && r.Server != m.WB.Name {
				return fmt.Errorf("answered by %s", r.Server)
			}
			return err
		})
		checkEcho(t, "client -> FIP moved to wb, tcp", r, err, m.WB.Name, clientIP, netip.AddrPortFrom(fA, echoPort))
		r, err = lab.UDPEcho(e.client.NS, echoAddr(fipA), echoTimeout)
		checkEcho(t, "client -> FIP moved to wb, udp", r, err, m.WB.Name, clientIP, netip.AddrPortFrom(fA, echoPort))
		r, err = lab.TCPEcho(m.WC.NS, echoAddr(fipA), echoTimeout)
		checkEcho(t, "wc -> FIP moved to wb, tcp", r, err, m.WB.Name, m.WC.IP, netip.AddrPortFrom(fA, echoPort))
		checkPingFrom(t, l, "client -> FIP moved to wb", e.client.NS, fipA, 2)
		rows, err := l.NATDump(m.HostA.Name)
		if err != nil {
			t.Fatal(err)
		}
		for _, row := range rows {
			if row.FloatingIP == fipA && (row.Endpoint != m.WB.Name || row.FixedIP != m.WB.IP.String() || row.Node != m.HostB.Name || row.Local) {
				t.Errorf("nat dump on host-a after the move: %+v, want endpoint wb on host-b, not local", row)
			}
		}
	})

	t.Run("delete", func(t *testing.T) {
		if out, err := l.Delete("", lab.FloatingIPYAML("fip-wa", fipA, m.WB.Name)); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		// The gateway still routes the address to host-b: only calyx
		// decides that nothing answers any more.
		err := lab.Eventually(attachTimeout, 200*time.Millisecond, func() error {
			if r, err := lab.TCPEcho(e.client.NS, echoAddr(fipA), noReplyTimeout); err == nil {
				return fmt.Errorf("a new connection to %s was answered by %s", fipA, r.Server)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		seenA, seenB := len(e.echo[m.WA.Name].Seen()), len(e.echo[m.WB.Name].Seen())
		if _, err := lab.TCPEcho(e.client.NS, echoAddr(fipA), noReplyTimeout); err == nil {
			t.Errorf("client -> deleted %s: connected", fipA)
		}
		if _, err := lab.UDPEcho(e.client.NS, echoAddr(fipA), noReplyTimeout); err == nil {
			t.Errorf("client -> deleted %s: udp answered", fipA)
		}
		if st, _ := l.Ping(e.client.NS, fipA, 2); st.Received != 0 {
			t.Errorf("client -> deleted %s: %d pings answered", fipA, st.Received)
		}
		for _, s := range []struct {
			srv    *lab.EchoServer
			before int
		}{{e.echo[m.WA.Name], seenA}, {e.echo[m.WB.Name], seenB}} {
			if got := s.srv.SeenSince(s.before); len(got) > 0 {
				t.Errorf("%s received %v after %s was deleted", s.srv.Name, got, fipA)
			}
		}
		rows, err := l.NATDump(m.HostB.Name)
		if err != nil {
			t.Fatal(err)
		}
		for _, row := range rows {
			if row.FloatingIP == fipA {
				t.Errorf("nat dump on host-b still lists the deleted %s: %+v", fipA, row)
			}
		}
		// The other floating IP is untouched.
		r, err := lab.TCPEcho(e.client.NS, echoAddr(fipC), echoTimeout)
		checkEcho(t, "client -> FIP(wc) after deleting the other", r, err, m.WC.Name, clientIP, netip.AddrPortFrom(fC, echoPort))
	})
}
