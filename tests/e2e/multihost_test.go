package e2e

// End-to-end tests of issue 3: workloads on three hosts (host-a and host-b on
// one underlay subnet, host-c on another behind a router that knows only the
// two underlay subnets) reach each other with routing, encapsulation and
// decapsulation done in BPF, in every pool mode.

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/calyxnet/calyx/tests/lab"
)

// multiHost builds the three-host lab with agents on every host and the
// model applied in mode, and waits until programs are attached everywhere.
func multiHost(t *testing.T, mode lab.EncapMode) *lab.MultiHost {
	t.Helper()
	l := newLab(t)
	lab.RequireTools(t, "tcpdump")
	m, err := lab.BuildMultiHost(l, mode)
	if err != nil {
		t.Fatalf("build three hosts: %v", err)
	}
	if err := m.StartAgents(); err != nil {
		t.Fatalf("start agents: %v", err)
	}
	if out, err := m.Apply(); err != nil {
		t.Fatalf("apply model: %v\n%s", err, out)
	}
	if err := m.WaitLinks(attachTimeout); err != nil {
		t.Fatalf("programs not attached: %v", err)
	}
	// Each host's underlay carries the decap and host-egress programs, and
	// the kernel confirms they run.
	for _, h := range m.Hosts() {
		links, err := l.Links(h.Name)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]string{"ingress": "calyx_from_underlay", "egress": "calyx_to_underlay"}
		for _, lk := range lab.LinksFor(links, h.UnderlayIface) {
			if want[lk.Hook] == lk.Program && lk.Attached {
				delete(want, lk.Hook)
			}
		}
		if len(want) > 0 {
			t.Fatalf("%s: underlay %s lacks running programs %v; links: %+v", h.Name, h.UnderlayIface, want, links)
		}
	}
	return m
}

// waitEncap waits until host's route to w says encap.
func waitEncap(t *testing.T, m *lab.MultiHost, host *lab.Host, w *lab.Workload, encap string) {
	t.Helper()
	waitRouteEncap(t, m, host, w, netip.PrefixFrom(w.IP, 32), encap)
}

// waitRouteEncap waits until host's route cidr (w's address) is a remote
// workload's via w's host with encap.
func waitRouteEncap(t *testing.T, m *lab.MultiHost, host *lab.Host, w *lab.Workload, prefix netip.Prefix, encap string) {
	t.Helper()
	cidr := prefix.String()
	err := lab.Eventually(attachTimeout, 100*time.Millisecond, func() error {
		rs, err := m.Lab.Routes(host.Name)
		if err != nil {
			return err
		}
		for _, r := range rs {
			if r.CIDR == cidr {
				if r.Type != "remote-workload" || r.Encap != encap || r.Node != w.Host {
					return fmt.Errorf("route %s is %s via %s (%s) encap %s, want remote-workload via %s encap %s",
						cidr, r.Type, r.Node, r.NextHop, r.Encap, w.Host, encap)
				}
				return nil
			}
		}
		return fmt.Errorf("no route for %s on %s", cidr, host.Name)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestMultiHostModes runs every pool mode in one lab, switching the mode in
// the model while the agents keep running: for each, ping and a TCP transfer
// between workloads on the three hosts where the mode allows it, a capture
// on host-a's underlay proving the encapsulation used, and host traffic.
func TestMultiHostModes(t *testing.T) {
	m := multiHost(t, lab.ModeVXLAN) // workload MTU 1450 fits every mode
	l := m.Lab
	pids := map[string]int{}
	for _, h := range m.Hosts() {
		pids[h.Name] = l.AgentPid(h.Name)
	}

	for _, mode := range []lab.EncapMode{lab.ModeVXLAN, lab.ModeIPIP, lab.ModeIPIPCrossSubnet, lab.ModeVXLANCrossSubnet, lab.ModeNever} {
		t.Run(string(mode), func(t *testing.T) {
			if out, err := m.SetMode(mode); err != nil {
				t.Fatalf("set mode: %v\n%s", err, out)
			}
			waitEncap(t, m, m.HostA, m.WB, m.Expect(m.HostA, m.HostB))
			waitEncap(t, m, m.HostA, m.WC, m.Expect(m.HostA, m.HostC))
			waitEncap(t, m, m.HostC, m.WA, m.Expect(m.HostC, m.HostA))
			waitEncap(t, m, m.HostB, m.WC, m.Expect(m.HostB, m.HostC))

			// Only one capture at a time, so each shows one pair's packets.
			for _, p := range []struct{ src, dst *lab.Workload }{{m.WA, m.WB}, {m.WA, m.WC}, {m.WB, m.WC}} {
				srcHost, _ := l.Host(p.src.Host)
				dstHost, _ := l.Host(p.dst.Host)
				crossRouter := srcHost.Segment != dstHost.Segment
				name := fmt.Sprintf("%s->%s", p.src.Name, p.dst.Name)
				if mode == lab.ModeNever && crossRouter {
					// The router knows only the underlay subnets: without
					// encapsulation nothing gets across it.
					if st, _ := l.Ping(p.src.NS, p.dst.IP.String(), 2, "-W", "1"); st.Received != 0 {
						t.Errorf("%s: %d pings answered in Never mode across the router, want none", name, st.Received)
					}
					continue
				}
				want := m.Expect(srcHost, dstHost)
				c, err := l.StartCapture(srcHost.NS, srcHost.UnderlayIface, "host "+dstHost.Underlay.Addr().String()+" or host "+p.dst.IP.String())
				if err != nil {
					t.Fatalf("capture: %v", err)
				}
				perr := l.WaitPing(p.src.NS, p.dst.IP.String(), trafficTimeout)
				lines, cerr := c.Stop()
				if perr != nil {
					t.Errorf("%s: ping: %v", name, perr)
					continue
				}
				if cerr != nil {
					t.Fatalf("capture: %v", cerr)
				}
				ipip, vxlan, plain := lab.CaptureShows(lab.PacketsMentioning(lines, p.dst.IP))
				got := map[string]int{lab.EncapIPIP: ipip, lab.EncapVXLAN: vxlan, lab.EncapNone: plain}
				if got[want] == 0 || ipip+vxlan+plain != got[want] {
					t.Errorf("%s: capture on %s shows ipip %d, vxlan %d, plain %d; want only %s:\n%s",
						name, srcHost.Name, ipip, vxlan, plain, want, strings.Join(lines, "\n"))
				}
				tr, err := l.TCPTransfer(p.src.NS, p.dst.NS, p.dst.IP, 5201, 32<<20, 30*time.Second)
				if err != nil {
					t.Errorf("%s: TCP transfer: %v", name, err)
					continue
				}
				t.Logf("%s (%s): 32 MiB in %v (%.2f Gbit/s)", name, want, tr.Duration.Round(time.Millisecond), tr.Gbps())
			}

			// The host's own stack reaches remote workloads through the
			// same BPF routes (underlay egress hook), with no kernel route.
			for _, w := range []*lab.Workload{m.WB, m.WC} {
				if mode == lab.ModeNever && w == m.WC {
					continue
				}
				if err := l.WaitPing(m.HostA.NS, w.IP.String(), trafficTimeout); err != nil {
					t.Errorf("host-a -> %s: %v", w.Name, err)
				}
			}
		})
	}

	// The switches happened without restarts.
	for _, h := range m.Hosts() {
		if pid := l.AgentPid(h.Name); pid != pids[h.Name] {
			t.Errorf("agent on %s restarted (pid %d -> %d)", h.Name, pids[h.Name], pid)
		}
	}
	// The FIB keeps only the underlay and local /32s on every host.
	for _, h := range m.Hosts() {
		res, err := l.Exec(h.NS, "ip", "route")
		if err != nil {
			t.Fatal(err)
		}
		if br := lab.BlockRoutes(res.Stdout, netip.MustParsePrefix(lab.WorkloadPool)); len(br) > 0 {
			t.Errorf("%s has kernel routes for workload blocks: %v", h.Name, br)
		}
		for _, line := range strings.Split(strings.TrimSpace(res.Stdout), "\n") {
			dst := strings.Fields(line)[0]
			if strings.HasPrefix(dst, "10.65.") && !strings.Contains(line, "proto 202") {
				t.Errorf("%s: kernel route %q is not one of calyx's local /32s", h.Name, line)
			}
		}
	}
}

// TestMultiHostFragNeeded: a workload whose MTU is larger than the tunnel
// allows gets an ICMP "fragmentation needed" built in BPF, so path MTU
// discovery works and TCP still gets through.
func TestMultiHostFragNeeded(t *testing.T) {
	m := multiHost(t, lab.ModeVXLAN)
	l := m.Lab
	big, err := m.AddWorkload("host-a", "wbig", "10.65.1.9", lab.UnderlayMTU)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := l.Apply("", lab.EndpointYAML(big)); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	if err := l.WaitLinks("host-a", attachTimeout, big.HostIface); err != nil {
		t.Fatal(err)
	}
	if err := l.WaitPing(big.NS, m.WC.IP.String(), trafficTimeout); err != nil {
		t.Fatal(err)
	}
	res, _ := l.Exec(big.NS, "ping", "-c", "1", "-W", "1", "-M", "do", "-s", "1472", m.WC.IP.String())
	if want := fmt.Sprintf("mtu = %d", lab.UnderlayMTU-lab.VXLANOverhead); !strings.Contains(res.Combined(), "Frag needed") || !strings.Contains(res.Combined(), want) {
		t.Errorf("ping -M do -s 1472 from an MTU %d workload: want an ICMP frag needed with %q, got:\n%s", lab.UnderlayMTU, want, res.Combined())
	}
	rt, _ := l.Exec(big.NS, "ip", "route", "get", m.WC.IP.String())
	if !strings.Contains(rt.Stdout, fmt.Sprintf("mtu %d", lab.UnderlayMTU-lab.VXLANOverhead)) {
		t.Errorf("the workload did not learn the path MTU:\n%s", rt.Stdout)
	}
	cs, err := l.Counters("host-a")
	if err != nil {
		t.Fatal(err)
	}
	if n := lab.CounterPackets(cs, big.HostIface, "icmp-frag-needed"); n == 0 {
		t.Errorf("icmp-frag-needed not counted on %s", big.HostIface)
	}
	// A TCP stream from the big-MTU workload still crosses: its segments
	// are cut to fit, by PMTU discovery or by the encap lowering the GSO size.
	if _, err := l.TCPTransfer(big.NS, m.WC.NS, m.WC.IP, 5202, 16<<20, 30*time.Second); err != nil {
		t.Errorf("TCP from the MTU %d workload: %v", lab.UnderlayMTU, err)
	}
}

// TestTunnelFromStrangerDropped: encapsulated packets from an address that is
// not a node, or to an address that is not the receiving node, are dropped and
// counted by host-a's underlay ingress, and never reach the workload.
func TestTunnelFromStrangerDropped(t *testing.T) {
	m := multiHost(t, lab.ModeVXLAN)
	l := m.Lab
	hostAMAC, err := linkMAC(l, m.HostA.NS, m.HostA.UnderlayIface)
	if err != nil {
		t.Fatal(err)
	}
	counters := func(reason string) uint64 {
		cs, err := l.Counters("host-a")
		if err != nil {
			t.Fatal(err)
		}
		return lab.CounterPackets(cs, m.HostA.UnderlayIface, reason)
	}
	inner := innerICMP(t, netip.MustParseAddr("10.65.2.2"), m.WA.IP)
	vxlanPayload := append([]byte{0x08, 0, 0, 0, 0, 0x10, 0, 0}, // VNI 4096, the default
		gopacketEth(t, inner)...)

	srcBefore, dstBefore := counters("drop-tunnel-src"), counters("drop-tunnel-dst")
	deliveredBefore := counters("deliver-local")

	// The router (10.30.0.1) is no node: VXLAN and IP-in-IP from it.
	if err := lab.InNS(m.Router.NS, func() error {
		if err := sendUDP(m.HostA.Underlay.Addr(), 4789, vxlanPayload, 3); err != nil {
			return err
		}
		return sendRaw(syscall.IPPROTO_IPIP, m.HostA.Underlay.Addr(), inner, 3)
	}); err != nil {
		t.Fatalf("send from the router: %v", err)
	}
	// host-b is a node, but sends to an address that is not host-a's, on
	// host-a's MAC (as a misconfigured or malicious peer could).
	stray := "10.30.0.99"
	if _, err := l.Exec(m.HostB.NS, "ip", "neigh", "replace", stray, "lladdr", hostAMAC, "dev", m.HostB.UnderlayIface, "nud", "permanent"); err != nil {
		t.Fatal(err)
	}
	if err := lab.InNS(m.HostB.NS, func() error {
		return sendUDP(netip.MustParseAddr(stray), 4789, vxlanPayload, 3)
	}); err != nil {
		t.Fatalf("send from host-b: %v", err)
	}

	err = lab.Eventually(5*time.Second, 100*time.Millisecond, func() error {
		if d := counters("drop-tunnel-src") - srcBefore; d < 6 {
			return fmt.Errorf("drop-tunnel-src +%d, want +6 (3 VXLAN, 3 IP-in-IP from the router)", d)
		}
		if d := counters("drop-tunnel-dst") - dstBefore; d < 3 {
			return fmt.Errorf("drop-tunnel-dst +%d, want +3 (VXLAN from host-b to %s)", d, stray)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
	if d := counters("deliver-local") - deliveredBefore; d != 0 {
		t.Errorf("%d packets delivered to workloads during the injection, want 0", d)
	}
}

// innerICMP is an IPv4 ICMP echo from src to dst.
func innerICMP(t *testing.T, src, dst netip.Addr) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		&layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolICMPv4, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()},
		&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoRequest, 0), Id: 7, Seq: 1},
		gopacket.Payload("calyx-injected"))
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// gopacketEth prefixes an IPv4 packet with an Ethernet header, as VXLAN
// carries it.
func gopacketEth(t *testing.T, ip []byte) []byte {
	t.Helper()
	eth := make([]byte, 14, 14+len(ip))
	copy(eth[0:6], []byte{0x02, 0, 0, 0, 0, 1})
	copy(eth[6:12], []byte{0x02, 0, 0, 0, 0, 2})
	binary.BigEndian.PutUint16(eth[12:], 0x0800)
	return append(eth, ip...)
}

// sendUDP sends payload count times in UDP datagrams to dst:port.
func sendUDP(dst netip.Addr, port int, payload []byte, count int) error {
	c, err := net.DialUDP("udp4", nil, &net.UDPAddr{IP: dst.AsSlice(), Port: port})
	if err != nil {
		return err
	}
	defer c.Close()
	for i := 0; i < count; i++ {
		if _, err := c.Write(payload); err != nil {
			return fmt.Errorf("send to %s:%d: %w", dst, port, err)
		}
	}
	return nil
}

// sendRaw sends payload count times over a raw IPv4 socket of protocol
// proto to dst: the kernel adds the outer header (for IPPROTO_IPIP, an
// IP-in-IP packet from this namespace's address).
func sendRaw(proto int, dst netip.Addr, payload []byte, count int) error {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_RAW, proto)
	if err != nil {
		return fmt.Errorf("raw socket: %w", err)
	}
	defer syscall.Close(fd)
	sa := &syscall.SockaddrInet4{Addr: dst.As4()}
	for i := 0; i < count; i++ {
		if err := syscall.Sendto(fd, payload, 0, sa); err != nil {
			return fmt.Errorf("sendto %s: %w", dst, err)
		}
	}
	return nil
}

// linkMAC returns the MAC of iface in namespace ns.
func linkMAC(l *lab.Lab, ns, iface string) (string, error) {
	res, err := l.Exec(ns, "cat", "/sys/class/net/"+iface+"/address")
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(res.Stdout), nil
}

// TestHostTrafficWithoutDefaultRoute: on a host where no kernel route covers
// the pool (no default route), the agent adds one route for the whole pool
// towards the underlay, so the host's own packets reach the underlay egress
// program; the FIB still has no route per block or per host.
func TestHostTrafficWithoutDefaultRoute(t *testing.T) {
	l := newLab(t)
	lab.RequireTools(t, "tcpdump")
	m, err := lab.BuildMultiHost(l, lab.ModeVXLANCrossSubnet)
	if err != nil {
		t.Fatalf("build three hosts: %v", err)
	}
	// host-a keeps a route to host-c's subnet only: nothing covers 10.65/16.
	for _, args := range [][]string{
		{"ip", "route", "del", "default"},
		{"ip", "route", "add", m.Remote.Gateway.Masked().String(), "via", m.Fabric.Gateway.Addr().String()},
	} {
		if _, err := l.Exec(m.HostA.NS, args...); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.StartAgents(); err != nil {
		t.Fatalf("start agents: %v", err)
	}
	if out, err := m.Apply(); err != nil {
		t.Fatalf("apply model: %v\n%s", err, out)
	}
	if err := m.WaitLinks(attachTimeout); err != nil {
		t.Fatal(err)
	}
	err = lab.Eventually(attachTimeout, 100*time.Millisecond, func() error {
		res, err := l.Exec(m.HostA.NS, "ip", "route", "show", lab.WorkloadPool)
		if err != nil {
			return err
		}
		if !strings.Contains(res.Stdout, "via 169.254.1.1 dev eth0 proto 202 onlink") {
			return fmt.Errorf("no pool route on host-a: %q", res.Stdout)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []*lab.Workload{m.WB, m.WC} {
		if err := l.WaitPing(m.HostA.NS, w.IP.String(), trafficTimeout); err != nil {
			t.Errorf("host-a -> %s without a default route: %v", w.Name, err)
		}
	}
	// host-b has a default route: no pool route there.
	res, err := l.Exec(m.HostB.NS, "ip", "route")
	if err != nil {
		t.Fatal(err)
	}
	if br := lab.BlockRoutes(res.Stdout, netip.MustParsePrefix(lab.WorkloadPool)); len(br) > 0 {
		t.Errorf("host-b has a default route, yet pool routes: %v", br)
	}
}

// TestMultiHostAgentRestart: killing and restarting the agents on both ends
// of a tunnelled flow (VXLAN through the router) loses no packet, and the
// restarted agents adopt the dataplane without rewriting it.
func TestMultiHostAgentRestart(t *testing.T) {
	m := multiHost(t, lab.ModeVXLANCrossSubnet)
	l := m.Lab
	if err := l.WaitPing(m.WA.NS, m.WC.IP.String(), trafficTimeout); err != nil {
		t.Fatal(err)
	}
	const count = 200 // 10 s at 20/s: ping waits for every reply, the loss is exact
	ping, err := l.ExecBackground(m.WA.NS, 60*time.Second, "ping", "-n", "-i", "0.05", "-W", "1", "-c", fmt.Sprint(count), m.WC.IP.String())
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	for _, h := range []*lab.Host{m.HostA, m.HostC} {
		if err := l.KillAgent(h.Name, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
	}
	for _, h := range []*lab.Host{m.HostA, m.HostC} {
		if err := l.StartAgent(h.Name); err != nil {
			t.Fatal(err)
		}
	}
	res, err := ping.Wait(45 * time.Second)
	st, perr := lab.ParsePing(res.Stdout)
	switch {
	case perr != nil:
		t.Fatalf("ping: %v (%v)", perr, err)
	case st.Transmitted != count || st.Received != st.Transmitted:
		t.Errorf("ping wa -> wc across both restarts: %d/%d answered, want no loss", st.Received, st.Transmitted)
	}
	for _, h := range []*lab.Host{m.HostA, m.HostC} {
		text, err := l.AgentMetrics(h.Name)
		if err != nil {
			t.Fatal(err)
		}
		if n, ok, _ := lab.MetricSum(text, "calyx_sync_map_writes_total"); !ok || n != 0 {
			t.Errorf("restarted agent on %s wrote %v map entries (present %v), want 0", h.Name, n, ok)
		}
		// Every table the agent fills shows how full it is.
		for _, mp := range []string{"cx_routes", "cx_ifaces", "cx_policy", "cx_ipcache", "cx_endpoints", "cx_config"} {
			n, ok, _ := lab.MetricSum(text, fmt.Sprintf(`calyx_map_capacity{map="%s"}`, mp))
			if !ok || n < 1 {
				t.Errorf("%s: calyx_map_capacity of %s is %v (present %v)", h.Name, mp, n, ok)
			}
			if _, ok, _ := lab.MetricSum(text, fmt.Sprintf(`calyx_map_entries{map="%s"}`, mp)); !ok {
				t.Errorf("%s: no calyx_map_entries of %s", h.Name, mp)
			}
		}
		if n, _, _ := lab.MetricSum(text, `calyx_map_entries{map="cx_routes"}`); n < 2 {
			t.Errorf("%s: calyx_map_entries of cx_routes is %v, want its routes", h.Name, n)
		}
		// The counter slots in use: the underlay's and its workloads'
		// (16 reasons each).
		if n, _, _ := lab.MetricSum(text, `calyx_map_entries{map="cx_slot_counters"}`); n < 2*16 {
			t.Errorf("%s: calyx_map_entries of cx_slot_counters is %v, want the underlay's and a workload's slots", h.Name, n)
		}
	}
}

// waitEncap6 waits until host's route to w's IPv6 address says encap.
func waitEncap6(t *testing.T, m *lab.MultiHost, host *lab.Host, w *lab.Workload, encap string) {
	t.Helper()
	waitRouteEncap(t, m, host, w, netip.PrefixFrom(w.IPv6, 128), encap)
}

// TestMultiHostIPv6: dual-stack workloads on three hosts of an IPv4
// underlay reach each other over IPv6 in every pool mode, the IPv6 pool
// switched with the IPv4 one: VXLAN with an IPv6 inner frame, 6in4
// (protocol 41) for ipipMode, and direct routing within a segment; a
// capture on the sender's underlay proves the encapsulation, ping6, TCP
// and UDP get through, and path MTU discovery over the tunnel works (a
// datagram too big gets Packet Too Big, the retry fits).
func TestMultiHostIPv6(t *testing.T) { testMultiHostIPv6(t, false) }

// TestMultiHostIPv6Underlay is TestMultiHostIPv6 with an IPv6 underlay on
// the fabric segment: host-a and host-b (both with an ipv6Address) carry
// their workloads' IPv6 over it (IPv6 in IPv6, VXLAN over IPv6, direct),
// while host-c, IPv4 only, is still reached over the IPv4 underlay.
func TestMultiHostIPv6Underlay(t *testing.T) { testMultiHostIPv6(t, true) }

func testMultiHostIPv6(t *testing.T, ipv6Underlay bool) {
	l := newLab(t)
	lab.RequireTools(t, "tcpdump")
	m, err := lab.BuildMultiHostWith(l, lab.MultiHostOptions{Mode: lab.ModeVXLAN, IPv6Underlay: ipv6Underlay})
	if err != nil {
		t.Fatalf("build three hosts: %v", err)
	}
	for i, w := range []*lab.Workload{m.WA, m.WB, m.WC} {
		if err := l.AddIPv6(w, fmt.Sprintf("fd00:65:1::%d", i+2)); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.StartAgents(); err != nil {
		t.Fatalf("start agents: %v", err)
	}
	const pool6 = "workloads6"
	pools := func(mode lab.EncapMode) string {
		ipip, vxlan := mode.PoolModes()
		return lab.JoinYAML(m.PoolYAML(mode), lab.PoolModeYAML(pool6, "fd00:65:1::/64", ipip, vxlan))
	}
	ipip, vxlan := lab.ModeVXLAN.PoolModes()
	if out, err := l.Apply("", lab.JoinYAML(m.ModelYAML(), lab.PoolModeYAML(pool6, "fd00:65:1::/64", ipip, vxlan))); err != nil {
		t.Fatalf("apply model: %v\n%s", err, out)
	}
	if err := m.WaitLinks(attachTimeout); err != nil {
		t.Fatalf("programs not attached: %v", err)
	}
	for _, w := range []*lab.Workload{m.WA, m.WB, m.WC} {
		if _, err := l.StartEcho(w.NS, w.Name+"-echo6", "[::]:7000"); err != nil {
			t.Fatal(err)
		}
	}

	for _, mode := range []lab.EncapMode{lab.ModeVXLAN, lab.ModeIPIP, lab.ModeVXLANCrossSubnet, lab.ModeNever} {
		t.Run(string(mode), func(t *testing.T) {
			if out, err := l.Apply("", pools(mode)); err != nil {
				t.Fatalf("set mode: %v\n%s", err, out)
			}
			m.Mode = mode
			waitEncap6(t, m, m.HostA, m.WB, m.Expect(m.HostA, m.HostB))
			waitEncap6(t, m, m.HostA, m.WC, m.Expect(m.HostA, m.HostC))
			for _, p := range []struct{ src, dst *lab.Workload }{{m.WA, m.WB}, {m.WA, m.WC}, {m.WC, m.WB}} {
				srcHost, _ := l.Host(p.src.Host)
				dstHost, _ := l.Host(p.dst.Host)
				name := fmt.Sprintf("%s->%s", p.src.Name, p.dst.Name)
				if mode == lab.ModeNever && srcHost.Segment != dstHost.Segment {
					continue // the router knows no workload routes
				}
				// Direct routing needs the next hop's MAC, which IPv4
				// resolves (lab.WaitPing retries meanwhile).
				if err := l.WaitPing(p.src.NS, p.dst.IP.String(), trafficTimeout); err != nil {
					t.Fatalf("%s over IPv4: %v", name, err)
				}
				want := m.Expect(srcHost, dstHost)
				c, err := l.StartCapture(srcHost.NS, srcHost.UnderlayIface, "host "+dstHost.Underlay.Addr().String()+" or ip6")
				if ipv6Underlay && dstHost.Underlay6.IsValid() && srcHost.Underlay6.IsValid() {
					t.Logf("%s: over the IPv6 underlay (%s -> %s)", name, srcHost.Underlay6.Addr(), dstHost.Underlay6.Addr())
				}
				if err != nil {
					t.Fatalf("capture: %v", err)
				}
				perr := l.WaitPing(p.src.NS, p.dst.IPv6.String(), trafficTimeout)
				lines, cerr := c.Stop()
				if perr != nil {
					t.Errorf("%s: ping6: %v", name, perr)
					continue
				}
				if cerr != nil {
					t.Fatalf("capture: %v", cerr)
				}
				ipip, vxlan, plain := lab.CaptureShows(lab.PacketsMentioning(lines, p.dst.IPv6))
				got := map[string]int{lab.EncapIPIP: ipip, lab.EncapVXLAN: vxlan, lab.EncapNone: plain}
				if got[want] == 0 || ipip+vxlan+plain != got[want] {
					t.Errorf("%s: capture on %s shows ipip %d, vxlan %d, plain %d; want only %s:\n%s",
						name, srcHost.Name, ipip, vxlan, plain, want, strings.Join(lines, "\n"))
				}
				if _, err := lab.UDPEcho(p.src.NS, netip.AddrPortFrom(p.dst.IPv6, 7000).String(), echoTimeout); err != nil {
					t.Errorf("%s: UDP over IPv6: %v", name, err)
				}
				tr, err := l.TCPTransfer(p.src.NS, p.dst.NS, p.dst.IPv6, 5201, 16<<20, 30*time.Second)
				if err != nil {
					t.Errorf("%s: TCP over IPv6: %v", name, err)
					continue
				}
				t.Logf("%s over IPv6 (%s): 16 MiB in %v (%.2f Gbit/s)", name, want, tr.Duration.Round(time.Millisecond), tr.Gbps())
			}
		})
	}

	// Restart without loss over IPv6: the agents of both ends are killed
	// and started again while a ping6 runs and a TCP connection is open
	// (over the IPv6 underlay between host-a and host-b when it is there).
	if out, err := l.Apply("", pools(lab.ModeVXLAN)); err != nil {
		t.Fatalf("set mode: %v\n%s", err, out)
	}
	peer := m.WC
	if ipv6Underlay {
		peer = m.WB
	}
	waitEncap6(t, m, m.HostA, peer, lab.EncapVXLAN)
	if err := l.WaitPing(m.WA.NS, peer.IPv6.String(), trafficTimeout); err != nil {
		t.Fatal(err)
	}
	held, err := lab.DialEcho(m.WA.NS, netip.AddrPortFrom(peer.IPv6, 7000).String(), echoTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	const count = 200 // 10 s at 20/s
	ping, err := l.ExecBackground(m.WA.NS, 60*time.Second, "ping", "-6", "-n", "-i", "0.05", "-W", "1", "-c", fmt.Sprint(count), peer.IPv6.String())
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	peerHost, _ := l.Host(peer.Host)
	for _, h := range []*lab.Host{m.HostA, peerHost} {
		if err := l.KillAgent(h.Name, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
	}
	for _, h := range []*lab.Host{m.HostA, peerHost} {
		if err := l.StartAgent(h.Name); err != nil {
			t.Fatal(err)
		}
	}
	res, err := ping.Wait(45 * time.Second)
	if st, perr := lab.ParsePing(res.Stdout); perr != nil {
		t.Errorf("ping6: %v (%v)", perr, err)
	} else if st.Transmitted != count || st.Received != st.Transmitted {
		t.Errorf("ping6 wa -> %s across both restarts: %d/%d answered, want no loss", peer.Name, st.Received, st.Transmitted)
	}
	if _, err := held.Exchange("after the restarts", echoTimeout); err != nil {
		t.Errorf("the IPv6 TCP connection did not survive the restarts: %v", err)
	}

	if ipv6Underlay {
		t.Run("nat-outgoing", func(t *testing.T) {
			checkNAT66(t, m, func(nat bool) string {
				ipip, vxlan := lab.ModeVXLAN.PoolModes()
				return lab.JoinYAML(m.PoolYAML(lab.ModeVXLAN), lab.PoolNATYAML(pool6, "fd00:65:1::/64", ipip, vxlan, nat))
			})
		})
		return
	}
	// Path MTU discovery over the tunnel: from a workload whose MTU is
	// the underlay's, a 1500-byte ping6 across the router (VXLAN) gets a
	// Packet Too Big from calyx (IPv6 is never fragmented on the way);
	// the workload learns the path MTU, and its next ping, fragmented at
	// the source, gets through.
	if out, err := l.Apply("", pools(lab.ModeVXLAN)); err != nil {
		t.Fatalf("set mode: %v\n%s", err, out)
	}
	waitEncap6(t, m, m.HostA, m.WC, lab.EncapVXLAN)
	big, err := m.AddWorkload(m.HostA.Name, "wbig", "10.65.1.9", lab.UnderlayMTU)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.AddIPv6(big, "fd00:65:1::9"); err != nil {
		t.Fatal(err)
	}
	if out, err := l.Apply("", lab.EndpointYAML(big)); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	if err := l.WaitLinks(m.HostA.Name, attachTimeout, big.HostIface); err != nil {
		t.Fatal(err)
	}
	if err := l.WaitPing(big.NS, m.WC.IPv6.String(), trafficTimeout); err != nil {
		t.Fatal(err)
	}
	pmtu := lab.UnderlayMTU - lab.VXLANOverhead
	res, _ = l.Exec(big.NS, "ping", "-6", "-c", "1", "-W", "1", "-s", "1452", m.WC.IPv6.String())
	if !strings.Contains(res.Combined(), "Packet too big") || !strings.Contains(res.Combined(), fmt.Sprintf("mtu=%d", pmtu)) {
		t.Errorf("ping6 -s 1452 from an MTU %d workload: want a Packet Too Big with mtu=%d, got:\n%s", lab.UnderlayMTU, pmtu, res.Combined())
	}
	rt, _ := l.Exec(big.NS, "ip", "-6", "route", "get", m.WC.IPv6.String())
	if !strings.Contains(rt.Stdout, fmt.Sprintf("mtu %d", pmtu)) {
		t.Errorf("the workload did not learn the IPv6 path MTU:\n%s", rt.Stdout)
	}
	cs, err := l.Counters(m.HostA.Name)
	if err != nil {
		t.Fatal(err)
	}
	if n := lab.CounterPackets(cs, big.HostIface, "icmp-frag-needed"); n == 0 {
		t.Errorf("no Packet Too Big counted on %s (icmp-frag-needed)", big.HostIface)
	}
	if _, err := l.Ping(big.NS, m.WC.IPv6.String(), 2, "-s", "1452"); err != nil {
		t.Errorf("ping6 of 1500 bytes after Packet Too Big (fragmented at the source): %v", err)
	}
	if _, err := l.TCPTransfer(big.NS, m.WC.NS, m.WC.IPv6, 5202, 16<<20, 30*time.Second); err != nil {
		t.Errorf("TCP over IPv6 from the MTU %d workload: %v", lab.UnderlayMTU, err)
	}
}

// checkNAT66 is natOutgoing for an IPv6 pool (NAT66) over the IPv6
// underlay: a server outside every pool (on the gateway, at its fabric
// IPv6 address) cannot answer wa without it; with it, wa's and wb's TCP,
// UDP and ping6 reach it from their node's IPv6 address and a port of the
// NAT range, and host-a's ct dump shows the translated flow. pools renders
// the pools with the IPv6 pool's natOutgoing.
func checkNAT66(t *testing.T, m *lab.MultiHost, pools func(nat bool) string) {
	l := m.Lab
	g := m.Gateway
	if g == nil {
		var err error
		if g, err = m.AddGateway(); err != nil {
			t.Fatal(err)
		}
	}
	server := netip.AddrPortFrom(g.Address6.Addr(), echoPort+1)
	if _, err := l.StartEcho(g.NS, "outside6", server.String()); err != nil {
		t.Fatal(err)
	}
	if _, err := lab.TCPEcho(m.WA.NS, server.String(), noReplyTimeout); err == nil {
		t.Errorf("wa -> %s worked without natOutgoing: the server has no route to the pool", server)
	}
	if out, err := l.Apply("", pools(true)); err != nil {
		t.Fatalf("natOutgoing on: %v\n%s", err, out)
	}
	for _, w := range []*lab.Workload{m.WA, m.WB} {
		h, _ := l.Host(w.Host)
		node := h.Underlay6.Addr()
		name := fmt.Sprintf("%s on %s -> %s", w.Name, h.Name, server)
		var r lab.EchoReply
		err := lab.Eventually(attachTimeout, 200*time.Millisecond, func() error {
			var err error
			r, err = lab.TCPEcho(w.NS, server.String(), noReplyTimeout)
			return err
		})
		checkEcho(t, name+" tcp", r, err, "outside6", node, server)
		if err == nil && (r.Peer.Port() < 20000 || r.Peer.Port() > 29999) {
			t.Errorf("%s: NAT66 source port %d, want 20000-29999", name, r.Peer.Port())
		}
		r, err = lab.UDPEcho(w.NS, server.String(), echoTimeout)
		checkEcho(t, name+" udp", r, err, "outside6", node, server)
		checkPingFrom(t, l, name, w.NS, server.Addr().String(), 2)
	}
	c, err := lab.DialEcho(m.WA.NS, server.String(), echoTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Exchange("nat66", echoTimeout); err != nil {
		t.Fatal(err)
	}
	local := c.Local()
	f := waitFlow(t, l, m.HostA.Name, "NAT66 flow", func(f lab.CTFlow) bool {
		return f.Proto == "tcp" && f.Src == local.String() && f.Dst == server.String()
	})
	if f.Src != "" {
		rd, err := netip.ParseAddrPort(f.ReplyDst)
		if f.NAT != lab.NATSNAT || f.ReplySrc != server.String() || err != nil || rd.Addr() != m.HostA.Underlay6.Addr() ||
			rd.Port() < 20000 || rd.Port() > 29999 {
			t.Errorf("NAT66 flow on host-a: %s; want nat snat, reply %s -> [%s]:20000-29999", f, server, m.HostA.Underlay6.Addr())
		}
	}
	if out, err := l.Apply("", pools(false)); err != nil {
		t.Fatalf("natOutgoing off: %v\n%s", err, out)
	}
}
