package e2e

// End-to-end tests of the conntrack split (cx_ct_v2 for tracked flows,
// cx_nat_v2 for translated ones, cx_frags for fragments): a flood of
// tracked flows against one tenant must not cost another tenant its
// translations; fragmented UDP goes through natOutgoing and a floating IP
// whole, both ways; and an agent of the previous layout (one cx_ct) is
// replaced by this build's under live translated connections, which carry
// on in the new maps.

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/calyxnet/calyx/tests/lab"
)

// natPortLow and natPortHigh are Config.natPortRange's default.
const natPortLow, natPortHigh = 20000, 29999

// ctEnv is the three-host lab with the gateway, natOutgoing on, fipA on wa
// (host-a) and echo servers in wa and the external server.
type ctEnv struct {
	m      *lab.MultiHost
	l      *lab.Lab
	g      *lab.Gateway
	client *lab.External
	server *lab.External
	echo   map[string]*lab.EchoServer
}

// ctOptions shapes ctSetup.
type ctOptions struct {
	kind lab.WorkloadKind
	// mtu is the workloads' MTU (0: the mode's).
	mtu int
	// config is applied before any agent starts (map sizes are read at
	// start).
	config string
	// agentBinary is the calyx-agent every host starts with ("": this
	// build's).
	agentBinary string
	// extra adds workloads before the agents start.
	extra func(m *lab.MultiHost) error
	// labels are endpoint labels by workload name.
	labels map[string]map[string]string
	// docs are further model documents applied with the model.
	docs []string
}

// ctSetup builds the lab of the conntrack tests.
func ctSetup(t *testing.T, o ctOptions) *ctEnv {
	t.Helper()
	l := newLabKind(t, o.kind)
	m, err := lab.BuildMultiHostWith(l, lab.MultiHostOptions{Mode: lab.ModeVXLANCrossSubnet, WorkloadMTU: o.mtu})
	if err != nil {
		t.Fatalf("build three hosts: %v", err)
	}
	g, err := m.AddGateway()
	if err != nil {
		t.Fatalf("add gateway: %v", err)
	}
	if o.extra != nil {
		if err := o.extra(m); err != nil {
			t.Fatal(err)
		}
	}
	e := &ctEnv{m: m, l: l, g: g, client: g.Client, server: g.Server, echo: map[string]*lab.EchoServer{}}
	if err := l.WaitPing(g.NS, m.HostA.Underlay.Addr().String(), trafficTimeout); err != nil {
		t.Fatalf("gateway -> host-a underlay: %v", err)
	}
	if err := l.WaitPing(m.HostA.NS, e.server.IP.String(), trafficTimeout); err != nil {
		t.Fatalf("host-a -> external server: %v", err)
	}
	if o.config != "" {
		if out, err := l.Apply("", o.config); err != nil {
			t.Fatalf("apply config: %v\n%s\n%s", err, out, o.config)
		}
	}
	for _, h := range m.Hosts() {
		if err := l.StartAgentBinary(h.Name, o.agentBinary); err != nil {
			t.Fatalf("start agent: %v", err)
		}
	}
	m.NATOutgoing = true
	docs := []string{m.PoolYAML(m.Mode)}
	for _, h := range l.Hosts() {
		docs = append(docs, lab.NodeYAML(h))
	}
	for _, w := range l.Workloads() {
		docs = append(docs, lab.LabeledEndpointYAML(w, o.labels[w.Name]))
	}
	docs = append(docs, lab.ExternalPoolYAML(lab.ExternalPool, lab.FloatingPool),
		lab.FloatingIPYAML("fip-wa", fipA, m.WA.Name))
	docs = append(docs, o.docs...)
	model := lab.JoinYAML(docs...)
	if out, err := l.Apply("", model); err != nil {
		t.Fatalf("apply model: %v\n%s\nmodel:\n%s", err, out, model)
	}
	if o.agentBinary == "" {
		// An earlier build's pins are not this calyxctl's to read:
		// with one, traffic alone says the programs are attached.
		if err := m.WaitLinks(attachTimeout); err != nil {
			t.Fatalf("programs not attached: %v", err)
		}
	}
	if err := l.RouteFloatingIP(fipA, m.HostA); err != nil {
		t.Fatal(err)
	}
	for _, s := range []struct {
		ns, name, addr string
	}{
		{m.WA.NS, m.WA.Name, fmt.Sprintf("0.0.0.0:%d", echoPort)},
		{e.server.NS, e.server.Name, echoAddr(e.server.IP.String())},
	} {
		srv, err := l.StartEcho(s.ns, s.name, s.addr)
		if err != nil {
			t.Fatal(err)
		}
		e.echo[s.name] = srv
	}
	if err := l.WaitPing(e.client.NS, fipA, trafficTimeout); err != nil {
		t.Fatalf("client cannot reach floating IP %s: %v", fipA, err)
	}
	if err := lab.Eventually(trafficTimeout, 200*time.Millisecond, func() error {
		_, err := lab.TCPEcho(m.WA.NS, echoAddr(e.server.IP.String()), noReplyTimeout)
		return err
	}); err != nil {
		t.Fatalf("wa -> external server (natOutgoing): %v", err)
	}
	return e
}

// fipFlowCheck checks an echo over client -> fipA: wa answered, saw the
// client's own address, and the reply came from the floating IP.
func (e *ctEnv) fipFlowCheck(r lab.EchoReply) error {
	if r.Server != e.m.WA.Name || r.Peer.Addr() != e.client.IP || r.From != netip.AddrPortFrom(netip.MustParseAddr(fipA), echoPort) {
		return fmt.Errorf("answered by %s, who saw %s, reply from %s; want %s seeing %s, reply from %s:%d",
			r.Server, r.Peer, r.From, e.m.WA.Name, e.client.IP, fipA, echoPort)
	}
	return nil
}

// snatFlowCheck checks an echo over wa -> server: the server saw host-a's
// address and a port of the NAT range.
func (e *ctEnv) snatFlowCheck(r lab.EchoReply) error {
	a := e.m.HostA.Underlay.Addr()
	if r.Server != e.server.Name || r.Peer.Addr() != a || r.Peer.Port() < natPortLow || r.Peer.Port() > natPortHigh {
		return fmt.Errorf("answered by %s, who saw %s; want %s seeing %s:%d-%d", r.Server, r.Peer, e.server.Name, a, natPortLow, natPortHigh)
	}
	return nil
}

// steady is a held echo connection exchanging a line every interval until
// stopped, every answer checked.
type steady struct {
	what  string
	conn  *lab.EchoConn
	check func(lab.EchoReply) error
	done  chan struct{}
	wg    sync.WaitGroup

	mu       sync.Mutex
	sent, ok int
	maxRTT   time.Duration
	peers    map[netip.AddrPort]bool
	problems []string
}

// steadyTimeout bounds one exchange of a steady connection: a stall up to
// this long (retransmissions while the machine is saturated, an agent
// swapping programs) is allowed, an error or no answer is not.
const steadyTimeout = 10 * time.Second

// startSteady dials addr from ns and starts exchanging.
func startSteady(t *testing.T, what, ns, addr string, interval time.Duration, check func(lab.EchoReply) error) *steady {
	t.Helper()
	c, err := lab.DialEcho(ns, addr, echoTimeout)
	if err != nil {
		t.Fatalf("%s: dial %s: %v", what, addr, err)
	}
	s := &steady{what: what, conn: c, check: check, done: make(chan struct{}), peers: map[netip.AddrPort]bool{}}
	t.Cleanup(func() { s.halt(); c.Close() })
	// The first exchange before anything else happens.
	r, err := c.Exchange(what+" 0", echoTimeout)
	if err == nil {
		err = check(r)
	}
	if err != nil {
		t.Fatalf("%s: first exchange: %v", what, err)
	}
	s.sent, s.ok = 1, 1
	s.peers[r.Peer] = true
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for seq := 1; ; seq++ {
			select {
			case <-s.done:
				return
			case <-tick.C:
			}
			start := time.Now()
			r, err := c.Exchange(what+" "+strconv.Itoa(seq), steadyTimeout)
			rtt := time.Since(start)
			if err == nil {
				err = check(r)
			}
			s.mu.Lock()
			s.sent++
			s.maxRTT = max(s.maxRTT, rtt)
			if err != nil {
				s.problems = append(s.problems, fmt.Sprintf("exchange %d at %s: %v", seq, start.Format("15:04:05.000"), err))
			} else {
				s.ok++
				s.peers[r.Peer] = true
			}
			failed := err != nil
			s.mu.Unlock()
			if failed {
				return // the connection's stream is out of step now
			}
		}
	}()
	return s
}

func (s *steady) halt() {
	select {
	case <-s.done:
	default:
		close(s.done)
	}
	s.wg.Wait()
}

// stop ends the exchanges and fails the test unless every one was
// answered, checked, by the same peer (one connection, one translation).
func (s *steady) stop(t *testing.T) {
	t.Helper()
	s.halt()
	s.mu.Lock()
	defer s.mu.Unlock()
	t.Logf("%s: %d/%d exchanges answered, slowest %s, peers seen %v", s.what, s.ok, s.sent, s.maxRTT.Round(time.Millisecond), keys(s.peers))
	if len(s.problems) > 0 || s.ok != s.sent {
		t.Errorf("%s: %d/%d exchanges answered:\n%s", s.what, s.ok, s.sent, strings.Join(s.problems, "\n"))
	}
	if len(s.peers) != 1 {
		t.Errorf("%s: the server saw the connection as %v, want one address and port throughout", s.what, keys(s.peers))
	}
}

// count returns the exchanges answered so far.
func (s *steady) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ok
}

func keys[K comparable, V any](m map[K]V) []K {
	out := make([]K, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// metricValue returns the sample of metric name with exactly the label set
// labels (`table="ct"`), and whether there is one.
func metricValue(text, name, labels string) (float64, bool) {
	prefix := name + "{" + labels + "} "
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), prefix); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f, err == nil
		}
	}
	return 0, false
}

// ctMetrics is host's conntrack figures for table.
func ctMetrics(t *testing.T, l *lab.Lab, host, table string) (entries, capacity, created, evictions float64) {
	t.Helper()
	text, err := l.AgentMetrics(host)
	if err != nil {
		t.Fatal(err)
	}
	lbl := fmt.Sprintf("table=%q", table)
	entries, _ = metricValue(text, "calyx_conntrack_entries", lbl)
	capacity, _ = metricValue(text, "calyx_conntrack_capacity", lbl)
	created, _ = metricValue(text, "calyx_conntrack_created_total", lbl)
	evictions, _ = metricValue(text, "calyx_conntrack_evictions_total", lbl)
	return
}

// findFlow returns the flow of flows whose original direction is src -> dst.
func findFlow(flows []lab.CTFlow, proto, src, dst string) (lab.CTFlow, bool) {
	for _, f := range flows {
		if f.Proto == proto && f.Src == src && f.Dst == dst {
			return f, true
		}
	}
	return lab.CTFlow{}, false
}

// checkNATFlows requires host-a's ct dump (filtered to wa) to list the
// client's connection to fipA as a DNAT flow and wa's to the server as an
// SNAT flow, both in the nat table.
func (e *ctEnv) checkNATFlows(t *testing.T, fip, snat *steady) {
	t.Helper()
	m := e.m
	flows, err := e.l.CTDumpFiltered(m.HostA.Name, "--endpoint", m.WA.IP.String(), "--proto", "tcp")
	if err != nil {
		t.Fatalf("ct dump on host-a: %v", err)
	}
	var rows []string
	for _, f := range flows {
		rows = append(rows, f.Table+" "+f.String())
	}
	for _, c := range []struct {
		s        *steady
		dst, nat string
	}{
		{fip, echoAddr(fipA), lab.NATDNAT},
		{snat, echoAddr(e.server.IP.String()), lab.NATSNAT},
	} {
		src := c.s.conn.Local().String()
		f, ok := findFlow(flows, "tcp", src, c.dst)
		switch {
		case !ok:
			t.Errorf("ct dump --endpoint %s on host-a: no flow %s -> %s (%s); flows:\n%s", m.WA.IP, src, c.dst, c.s.what, strings.Join(rows, "\n"))
		case f.Table != "nat" || f.NAT != c.nat || f.State != "established":
			t.Errorf("ct dump on host-a, %s: %s %s; want table nat, nat %s, state established", c.s.what, f.Table, f, c.nat)
		}
	}
}

// The Config of TestConntrackFloodKeepsTranslations: cx_ct_v2 as small as
// it can be, so that the flood fills it many times over.
const ctMinConfig = `apiVersion: calyx.io/v1
kind: Config
metadata:
  name: default
spec:
  ctMapSize: 1024
`

// floodPort is the port tenant B's policy allows and the flood goes to.
const floodPort = 8000

// floodPolicy lets anything reach tenant B on TCP floodPort.
var floodPolicy = fmt.Sprintf(`apiVersion: calyx.io/v1
kind: NetworkPolicy
metadata:
  name: tenant-b-ingress
spec:
  selector: tenant == "b"
  types: [Ingress]
  ingress:
  - action: Allow
    protocol: TCP
    destination:
      ports: [%d]
`, floodPort)

// TestConntrackFloodKeepsTranslations: with cx_ct_v2 at its minimum (1024
// flows), a million TCP SYNs from spoofed sources to tenant B's wf (on
// host-a, its policy allowing the port, so each is a new tracked flow)
// evict tracked flows by the hundred thousand, while tenant A's two
// translated connections on the same host (the client to wa's floating IP,
// wa to the external server by natOutgoing) exchange a line every 20 ms
// throughout: every one is answered, still translated, and both flows are
// in the nat table afterwards.
func TestConntrackFloodKeepsTranslations(t *testing.T) {
	const floodCount = 1_000_000
	var wf *lab.Workload
	e := ctSetup(t, ctOptions{
		kind:   lab.KindVeth,
		config: ctMinConfig,
		extra: func(m *lab.MultiHost) error {
			var err error
			wf, err = m.AddWorkload(m.HostA.Name, "wf", "10.65.1.3", 0)
			return err
		},
		labels: map[string]map[string]string{"wa": {"tenant": "a"}, "wf": {"tenant": "b"}},
		docs:   []string{floodPolicy},
	})
	l, m, g := e.l, e.m, e.g
	ha := m.HostA
	// wf's answers to the spoofed sources (RSTs: nothing listens) die in
	// wf rather than crowd the fabric.
	if _, err := l.Exec(wf.NS, "ip", "route", "add", "blackhole", lab.SpoofNet.String()); err != nil {
		t.Fatal(err)
	}
	// Its policy allows no ping in; out, wf's programs are attached.
	if err := l.WaitPing(wf.NS, m.WB.IP.String(), trafficTimeout); err != nil {
		t.Fatalf("wf -> wb: %v", err)
	}

	// The evictions are told between two of the agent's collections (10
	// s apart): the flood must come after the first.
	if err := lab.Eventually(15*time.Second, 250*time.Millisecond, func() error {
		if _, c, _, _ := ctMetrics(t, l, ha.Name, "ct"); c == 0 {
			return fmt.Errorf("no conntrack collection yet")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	_, capacity, created0, evicted0 := ctMetrics(t, l, ha.Name, "ct")
	if capacity != 1024 {
		t.Errorf("calyx_conntrack_capacity{table=\"ct\"} on host-a = %v, want 1024 (Config.ctMapSize)", capacity)
	}

	fip := startSteady(t, "client -> FIP(wa)", e.client.NS, echoAddr(fipA), 20*time.Millisecond, e.fipFlowCheck)
	snat := startSteady(t, "wa -> server (natOutgoing)", m.WA.NS, echoAddr(e.server.IP.String()), 20*time.Millisecond, e.snatFlowCheck)
	time.Sleep(300 * time.Millisecond)

	gwMAC := mustMAC(t, l, g.NS, g.Iface)
	aMAC := mustMAC(t, l, ha.NS, ha.UnderlayIface)
	stopFlood := make(chan struct{})
	t.Cleanup(func() {
		select {
		case <-stopFlood:
		default:
			close(stopFlood)
		}
	})
	res, err := lab.SYNFlood(lab.SYNFloodConfig{
		NS: g.NS, Iface: g.Iface, Eth: lab.Eth{Src: gwMAC, Dst: aMAC},
		Dst: netip.AddrPortFrom(wf.IP, floodPort), Count: floodCount,
	}, stopFlood)
	if err != nil {
		t.Fatalf("flood: %v (sent %d)", err, res.Sent)
	}
	t.Logf("flood: %d SYNs from random sources in %s to %s:%d in %s: %.0f SYNs/s (%d batches refused and written again)",
		res.Sent, lab.SpoofNet, wf.IP, floodPort, res.Elapsed.Round(time.Millisecond), res.Rate(), res.Refused)
	if res.Sent != floodCount {
		t.Errorf("flood sent %d SYNs, want %d", res.Sent, floodCount)
	}
	// A moment after, the flows carry on.
	n := fip.count() + snat.count()
	if err := lab.Eventually(5*time.Second, 50*time.Millisecond, func() error {
		if fip.count()+snat.count() < n+20 {
			return fmt.Errorf("no exchange since the flood")
		}
		return nil
	}); err != nil {
		t.Errorf("tenant A's connections after the flood: %v", err)
	}
	fip.stop(t)
	snat.stop(t)

	// The flood went through cx_ct_v2: the next collection after it
	// (one during it tells only part) counts its flows and evictions.
	var entries, created, evicted float64
	err = lab.Eventually(25*time.Second, 500*time.Millisecond, func() error {
		entries, _, created, evicted = ctMetrics(t, l, ha.Name, "ct")
		if evicted <= evicted0 || created-created0 < float64(res.Sent)/2 {
			return fmt.Errorf("calyx_conntrack_evictions_total{table=\"ct\"} %v, created_total %v (%v before the flood), entries %v",
				evicted, created, created0, entries)
		}
		return nil
	})
	natEntries, natCapacity, natCreated, natEvicted := ctMetrics(t, l, ha.Name, "nat")
	t.Logf("host-a conntrack after the flood: ct entries %v/%v, created %v (+%v), evicted %v (+%v); nat entries %v/%v, created %v, evicted %v",
		entries, capacity, created, created-created0, evicted, evicted-evicted0, natEntries, natCapacity, natCreated, natEvicted)
	if err != nil {
		t.Errorf("the agent did not see the flood fill cx_ct_v2 (at least half its SYNs tracked, evictions): %v", err)
	}
	if natEvicted != 0 {
		t.Errorf("calyx_conntrack_evictions_total{table=\"nat\"} on host-a = %v, want 0: the flood reached the translations", natEvicted)
	}
	e.checkNATFlows(t, fip, snat)
	if flows, err := l.CTDumpFiltered(ha.Name, "--endpoint", wf.IP.String(), "--port", strconv.Itoa(floodPort)); err != nil {
		t.Error(err)
	} else {
		if len(flows) < 512 || flows[0].Table != "ct" {
			t.Errorf("ct dump --endpoint %s on host-a: %d flows, want cx_ct_v2 (up to 1024) full of the flood's", wf.IP, len(flows))
		}
		t.Logf("ct dump --endpoint wf --port %d on host-a: %d flows", floodPort, len(flows))
	}
}

// udpPolicy lets only UDP echoPort reach wa.
var udpPolicy = fmt.Sprintf(`apiVersion: calyx.io/v1
kind: NetworkPolicy
metadata:
  name: wa-udp-only
spec:
  selector: tenant == "a"
  types: [Ingress]
  ingress:
  - action: Allow
    protocol: UDP
    destination:
      ports: [%d]
`, echoPort)

// bigPayload is n printable bytes, different for every seed.
func bigPayload(seed uint64, n int) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	b := make([]byte, n)
	for i := range b {
		b[i] = alphabet[rng.IntN(len(alphabet))]
	}
	return string(b)
}

// TestFragmentedUDPThroughNAT: 3,000-byte UDP datagrams (DNS over EDNS0
// sized), which the sending kernels fragment at the workloads' MTU 1500,
// through natOutgoing (wa -> the external server, which echoes 3,000 bytes
// back) and through a floating IP (the client -> fipA -> wa, echoing back),
// with an ingress policy on wa allowing only that UDP port: every datagram
// arrives whole both ways, the peers see the translated addresses, and on
// host-a's underlay every later fragment leaves translated (none with wa's
// own address).
func TestFragmentedUDPThroughNAT(t *testing.T) {
	const size, rounds = 3000, 5
	e := ctSetup(t, ctOptions{
		mtu:    lab.UnderlayMTU,
		labels: map[string]map[string]string{"wa": {"tenant": "a"}},
	})
	l, m := e.l, e.m
	lab.RequireTools(t, "tcpdump")
	if out, err := l.Apply("", udpPolicy); err != nil {
		t.Fatalf("apply policy: %v\n%s", err, out)
	}
	fA := netip.MustParseAddr(fipA)
	// The policy is in force: the client's TCP to the floating IP no
	// longer connects.
	if err := lab.Eventually(attachTimeout, 200*time.Millisecond, func() error {
		if _, err := lab.TCPEcho(e.client.NS, echoAddr(fipA), noReplyTimeout); err == nil {
			return fmt.Errorf("TCP to %s still answered", fipA)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	hostA := m.HostA.Underlay.Addr()
	// Later fragments (offset not 0) on host-a's underlay, both ways.
	cp, err := l.StartCapture(m.HostA.NS, m.HostA.UnderlayIface, "ip and (ip[6:2] & 0x1fff) != 0")
	if err != nil {
		t.Fatal(err)
	}
	server := netip.AddrPortFrom(e.server.IP, echoPort)
	fipDst := netip.AddrPortFrom(fA, echoPort)
	for i := range rounds {
		p := bigPayload(uint64(2*i+1), size)
		r, err := lab.UDPEchoPayload(m.WA.NS, server.String(), p, echoTimeout)
		checkEcho(t, fmt.Sprintf("wa -> server, %d bytes, round %d", size, i), r, err, e.server.Name, hostA, server)
		if err == nil && (r.Peer.Port() < natPortLow || r.Peer.Port() > natPortHigh) {
			t.Errorf("wa -> server: the server saw source port %d, want %d-%d", r.Peer.Port(), natPortLow, natPortHigh)
		}
		p = bigPayload(uint64(2*i+2), size)
		r, err = lab.UDPEchoPayload(e.client.NS, fipDst.String(), p, echoTimeout)
		checkEcho(t, fmt.Sprintf("client -> FIP(wa), %d bytes, round %d", size, i), r, err, m.WA.Name, e.client.IP, fipDst)
	}
	lines, err := cp.Stop()
	if err != nil {
		t.Fatal(err)
	}
	var snatOut, fipOut, serverIn, clientIn int
	var leaks []string
	for _, ln := range lines {
		switch {
		case strings.Contains(ln, fmt.Sprintf(" %s > %s:", hostA, e.server.IP)):
			snatOut++
		case strings.Contains(ln, fmt.Sprintf(" %s > %s:", fA, e.client.IP)):
			fipOut++
		case strings.Contains(ln, fmt.Sprintf(" %s > %s:", e.server.IP, hostA)):
			serverIn++
		case strings.Contains(ln, fmt.Sprintf(" %s > %s:", e.client.IP, fA)):
			clientIn++
		case strings.Contains(ln, m.WA.IP.String()):
			leaks = append(leaks, ln)
		}
	}
	t.Logf("later fragments on host-a's underlay: %d wa->server (SNAT), %d server->host-a, %d client->FIP, %d FIP->client (DNAT reversed)", snatOut, serverIn, clientIn, fipOut)
	for _, c := range []struct {
		what string
		n    int
	}{{"wa -> server, translated", snatOut}, {"server -> host-a", serverIn}, {"client -> FIP", clientIn}, {"wa -> client, from the FIP", fipOut}} {
		if c.n < rounds {
			t.Errorf("host-a's underlay carried %d later fragments %s, want at least %d (one a datagram): were the datagrams fragmented?", c.n, c.what, rounds)
		}
	}
	if len(leaks) > 0 {
		t.Errorf("later fragments left host-a untranslated (with wa's address):\n%s", strings.Join(leaks, "\n"))
	}
	// The policy still holds for what it does not allow, fragments or not.
	if _, err := lab.UDPEcho(e.client.NS, fmt.Sprintf("%s:%d", fipA, echoPort+1), noReplyTimeout); err == nil {
		t.Errorf("client -> FIP(wa) UDP %d answered, the policy allows only %d", echoPort+1, echoPort)
	}
	text, err := l.AgentMetrics(m.HostA.Name)
	if err != nil {
		t.Fatal(err)
	}
	if n, ok, _ := lab.MetricSum(text, "calyx_fragments_orphan_total"); !ok || n != 0 {
		t.Errorf("calyx_fragments_orphan_total on host-a = %v (present %v), want 0: no fragment came without its first", n, ok)
	}
}
