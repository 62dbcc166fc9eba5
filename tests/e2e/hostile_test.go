package e2e

// End-to-end tests of issue 15 (trust boundaries): hostile traffic built by
// hand (tests/lab/inject.go) and written with a raw packet socket, from a
// machine on the underlay segment that is not a calyx host (the data
// center's gateway) and from inside a workload. Each case injects a few
// copies of one frame and requires the counter of the verdict it must get
// to rise by as many, on the interface where calyx decides; where the frame
// must not arrive anywhere, captures say so. A ping between wb and wc runs
// throughout and must lose nothing.

import (
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/calyxnet/calyx/tests/lab"
)

// Counter reasons of the hostile tests besides lab's Reason* constants.
const (
	// reasonUnderlaySpoof and reasonTunnelInnerSrc are new with issue 15's
	// BPF change: a dataplane without them counts neither.
	reasonUnderlaySpoof  = "drop-underlay-spoof"
	reasonTunnelInnerSrc = "drop-tunnel-inner-src"
	reasonSpoofIP        = "drop-spoof-ip"
	reasonSpoofMAC       = "drop-spoof-mac"
	reasonPolicy         = "drop-policy"
	reasonPassHost       = "pass-host"
	reasonMalformed      = "drop-malformed"
	reasonVLAN           = "drop-vlan"
)

// newReasons are the reasons issue 15 adds to the dataplane.
var newReasons = map[string]bool{reasonUnderlaySpoof: true, reasonTunnelInnerSrc: true, reasonVLAN: true}

// tagged inserts 802.1Q/802.1ad tags (VLAN 100) after frame's MAC addresses,
// outermost first.
func tagged(frame []byte, tpids ...uint16) []byte {
	out := append([]byte(nil), frame[:12]...)
	for _, tp := range tpids {
		out = append(out, byte(tp>>8), byte(tp), 0x00, 0x64)
	}
	return append(out, frame[12:]...)
}

const (
	// hostileCopies is how many times each hostile frame is written.
	hostileCopies = 3
	// hostileWait bounds the wait for a counter to rise by hostileCopies.
	hostileWait = 3 * time.Second
	// healthyRound is the size of one round of the healthy ping.
	healthyRound = 50
)

// healthyPing pings dst from ns in rounds of healthyRound (0.2 s apart)
// until stopped; stop waits for the round under way and fails the test if
// any reply was missing.
func healthyPing(t *testing.T, l *lab.Lab, what, ns, dst string) (stop func()) {
	t.Helper()
	done := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var tx, rx, rounds int
	var problems []string
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			default:
			}
			st, err := l.Ping(ns, dst, healthyRound)
			mu.Lock()
			rounds++
			tx += st.Transmitted
			rx += st.Received
			if err != nil {
				problems = append(problems, fmt.Sprintf("round %d: %v\n%s", rounds, err, lastLines(st.Output, 5)))
			}
			mu.Unlock()
		}
	}()
	var once sync.Once
	return func() {
		t.Helper()
		once.Do(func() {
			close(done)
			wg.Wait()
			mu.Lock()
			defer mu.Unlock()
			t.Logf("healthy flow %s: %d rounds, %d/%d answered", what, rounds, rx, tx)
			if len(problems) > 0 || rx != tx || tx == 0 {
				t.Errorf("healthy flow %s lost packets beside the hostile traffic: %d/%d answered in %d rounds\n%s",
					what, rx, tx, rounds, strings.Join(problems, "\n"))
			}
		})
	}
}

// watch is a capture that must see nothing (or, with want, something).
type watch struct {
	what       string
	ns, iface  string
	filter     string
	wantPacket bool
}

// hostileCase is one hand-built frame and the verdict it must get.
type hostileCase struct {
	name string
	// what says what the frame is, for messages.
	what string
	// from and fromIface is where the frame is written.
	from, fromIface string
	frame           []byte
	// host and iface are where the verdict is counted, as reason.
	host, iface, reason string
	// alsoOK are reasons that satisfy the case as well as reason (a
	// verdict today's dataplane gives that is still safe).
	alsoOK []string
	// quiet are reasons on iface that must not rise (beside reason).
	quiet []string
	// watches are captures while the frame goes.
	watches []watch
}

// counterSnapshot is every counter of a host by "iface reason".
func counterSnapshot(t *testing.T, l *lab.Lab, host string) map[string]uint64 {
	t.Helper()
	rows, err := l.Counters(host)
	if err != nil {
		t.Fatalf("counters of %s: %v", host, err)
	}
	m := map[string]uint64{}
	for _, r := range rows {
		m[r.Interface+" "+r.Reason] += r.Packets
	}
	return m
}

// risen lists the counters on iface that rose between before and after.
func risen(before, after map[string]uint64, iface string) string {
	var out []string
	for k, v := range after {
		if d := v - before[k]; strings.HasPrefix(k, iface+" ") && d > 0 {
			out = append(out, fmt.Sprintf("%s +%d", strings.TrimPrefix(k, iface+" "), d))
		}
	}
	sort.Strings(out)
	if len(out) == 0 {
		return "nothing"
	}
	return strings.Join(out, ", ")
}

// run injects c.frame hostileCopies times and checks its verdict.
func (c hostileCase) run(t *testing.T, l *lab.Lab) {
	t.Helper()
	var caps []*lab.Capture
	for _, w := range c.watches {
		cp, err := l.StartCapture(w.ns, w.iface, w.filter)
		if err != nil {
			t.Fatalf("capture %s: %v", w.what, err)
		}
		caps = append(caps, cp)
	}
	before := counterSnapshot(t, l, c.host)
	reasons := append([]string{c.reason}, c.alsoOK...)
	rise := func(after map[string]uint64) (sum uint64) {
		for _, r := range reasons {
			k := c.iface + " " + r
			sum += after[k] - before[k]
		}
		return sum
	}
	if err := l.InjectCount(c.from, c.fromIface, hostileCopies, c.frame); err != nil {
		t.Fatalf("inject %s: %v", c.what, err)
	}
	var after map[string]uint64
	err := lab.Eventually(hostileWait, 100*time.Millisecond, func() error {
		after = counterSnapshot(t, l, c.host)
		if d := rise(after); d < hostileCopies {
			return fmt.Errorf("+%d", d)
		}
		return nil
	})
	want := strings.Join(reasons, " or ")
	if err != nil {
		note := ""
		if newReasons[c.reason] {
			note = fmt.Sprintf("\n(%s is one of issue 15's new drop reasons: a dataplane without them counts none)", c.reason)
		}
		t.Errorf("%s: want %s on %s's %s to rise by %d, it rose by %d; what rose on %s instead: %s%s",
			c.what, want, c.host, c.iface, hostileCopies, rise(after), c.iface, risen(before, after, c.iface), note)
	} else if len(c.alsoOK) > 0 {
		t.Logf("%s: counted on %s: %s", c.what, c.iface, risen(before, after, c.iface))
	}
	for _, q := range c.quiet {
		k := c.iface + " " + q
		if d := after[k] - before[k]; d > 0 {
			t.Errorf("%s: %s on %s's %s rose by %d, want none (all that rose: %s)", c.what, q, c.host, c.iface, d, risen(before, after, c.iface))
		}
	}
	for i, cp := range caps {
		w := c.watches[i]
		pkts, err := cp.Stop()
		if err != nil {
			t.Errorf("capture %s: %v", w.what, err)
			continue
		}
		switch {
		case w.wantPacket && len(pkts) == 0:
			t.Errorf("%s: %s (tcpdump -i %s '%s' in %s) saw nothing, want the packet", c.what, w.what, w.iface, w.filter, w.ns)
		case !w.wantPacket && len(pkts) > 0:
			t.Errorf("%s: %s (tcpdump -i %s '%s' in %s) saw %d packet(s), want none:\n%s", c.what, w.what, w.iface, w.filter, w.ns, len(pkts), strings.Join(pkts, "\n"))
		}
	}
}

// icmpID is a capture filter for ICMP echo requests with id.
func icmpID(id uint16) string {
	return fmt.Sprintf("icmp and icmp[icmptype] = icmp-echo and icmp[4:2] = %#x", id)
}

// mustMAC returns the MAC of iface in ns.
func mustMAC(t *testing.T, l *lab.Lab, ns, iface string) net.HardwareAddr {
	t.Helper()
	mac, err := l.MAC(ns, iface)
	if err != nil {
		t.Fatal(err)
	}
	return mac
}

// TestHostileUnderlay: frames a stranger on the underlay segment (the
// gateway's leg on the fabric segment, no calyx host) sends to host-a's
// MAC: spoofed sources (host-a's own address, its workload's, its floating
// IP's) and hand-made tunnel packets (a node's outer source with a
// foreign inner source, a wrong VNI, a stranger's outer source), and a TCP
// segment to a floating IP that starts no flow. What calyx must accept (a
// tunnel packet from a node with an outside inner source) is checked too.
func TestHostileUnderlay(t *testing.T) {
	e := fipSetup(t)
	l, m, g := e.l, e.m, e.g
	ha, wa := m.HostA, m.WA
	aAddr := ha.Underlay.Addr()
	bAddr := m.HostB.Underlay.Addr()
	fA := netip.MustParseAddr(fipA)
	client := e.client.IP

	gwMAC := mustMAC(t, l, g.NS, g.Iface)
	aMAC := mustMAC(t, l, ha.NS, ha.UnderlayIface)
	eth := lab.Eth{Src: gwMAC, Dst: aMAC}
	st, err := l.NodeStatus(ha.Name)
	if err != nil {
		t.Fatal(err)
	}
	port, vni := uint16(st.VXLANPort), st.VXLANVNI
	if port == 0 {
		port = lab.DefaultVXLANPort
	}
	if vni == 0 {
		vni = lab.DefaultVXLANVNI
	}
	t.Logf("injecting from %s %s (%s) to %s %s (%s); VXLAN port %d, VNI %d", g.NS, g.Iface, gwMAC, ha.Name, ha.UnderlayIface, aMAC, port, vni)

	if err := l.WaitPing(m.WB.NS, m.WC.IP.String(), trafficTimeout); err != nil {
		t.Fatalf("wb -> wc before the hostile traffic: %v", err)
	}
	stop := healthyPing(t, l, "wb -> wc", m.WB.NS, m.WC.IP.String())
	defer stop()

	payload := []byte("calyx issue 15: hostile")
	waICMP := func(id uint16) watch {
		return watch{what: "wa receives it", ns: wa.NS, iface: wa.InstanceIface(), filter: icmpID(id)}
	}
	// An inner frame as a node would put in VXLAN: to host-a's MAC.
	innerEcho := func(src, dst netip.Addr, id uint16) []byte {
		return lab.ICMPEchoFrame(lab.Eth{Src: gwMAC, Dst: aMAC}, lab.IPv4Header{Src: src, Dst: dst}, id, 1, payload)
	}
	vxlan := func(outerSrc, outerDst netip.Addr, vni uint32, inner []byte) []byte {
		return lab.VXLANFrame(eth, lab.IPv4Header{Src: outerSrc, Dst: outerDst}, 40123, port, vni, inner)
	}
	ipip := func(outerSrc netip.Addr, inner []byte) []byte {
		return lab.IPIPFrame(eth, lab.IPv4Header{Src: outerSrc, Dst: aAddr}, inner)
	}
	under := func(name, what string, frame []byte, reason string, watches ...watch) hostileCase {
		return hostileCase{name: name, what: what, from: g.NS, fromIface: g.Iface, frame: frame,
			host: ha.Name, iface: ha.UnderlayIface, reason: reason, watches: watches}
	}

	cases := []hostileCase{
		// (a) host-a's own underlay address as the source.
		under("a-own-underlay-address", fmt.Sprintf("ICMP echo %s (host-a's own address) > wa %s from the underlay", aAddr, wa.IP),
			lab.ICMPEchoFrame(eth, lab.IPv4Header{Src: aAddr, Dst: wa.IP}, 0xa001, 1, payload),
			reasonUnderlaySpoof, waICMP(0xa001)),
		// (b) a local workload's address as the source.
		under("b-local-workload-source-icmp", fmt.Sprintf("ICMP echo %s (wa itself) > wa from the underlay", wa.IP),
			lab.ICMPEchoFrame(eth, lab.IPv4Header{Src: wa.IP, Dst: wa.IP}, 0xb001, 1, payload),
			reasonUnderlaySpoof, waICMP(0xb001)),
		under("b-local-workload-source-tcp-syn", fmt.Sprintf("TCP SYN %s:40002 (wa) > host-a %s:22 from the underlay", wa.IP, aAddr),
			lab.TCPFrame(eth, lab.IPv4Header{Src: wa.IP, Dst: aAddr}, 40002, 22, lab.TCPSyn, 1, 0),
			reasonUnderlaySpoof,
			// Passed to host-a's stack, its RST would go to wa.
			watch{what: "an answer reaches wa", ns: wa.NS, iface: wa.InstanceIface(), filter: "tcp port 40002"}),
		// (c) the floating IP host-a holds as the source.
		under("c-floating-ip-source-to-workload", fmt.Sprintf("ICMP echo %s (wa's floating IP) > wa %s from outside", fA, wa.IP),
			lab.ICMPEchoFrame(eth, lab.IPv4Header{Src: fA, Dst: wa.IP}, 0xc001, 1, payload),
			reasonUnderlaySpoof, waICMP(0xc001)),
		under("c-floating-ip-source-to-host", fmt.Sprintf("ICMP echo %s (wa's floating IP) > host-a %s from outside", fA, aAddr),
			lab.ICMPEchoFrame(eth, lab.IPv4Header{Src: fA, Dst: aAddr}, 0xc002, 1, payload),
			reasonUnderlaySpoof,
			watch{what: "host-a answers", ns: ha.NS, iface: ha.UnderlayIface,
				filter: fmt.Sprintf("ether src %s and icmp and icmp[4:2] = 0xc002", aMAC)},
			watch{what: "the answer reaches wa", ns: wa.NS, iface: wa.InstanceIface(), filter: "icmp and icmp[4:2] = 0xc002"}),
		// (d) VXLAN from a node's address whose inner source is no
		// address that node may send for.
		under("d-vxlan-inner-src-remote-workload", fmt.Sprintf("VXLAN %s (host-b) > %s, inner ICMP %s (wc, on host-c) > wa", bAddr, aAddr, m.WC.IP),
			vxlan(bAddr, aAddr, vni, innerEcho(m.WC.IP, wa.IP, 0xd001)),
			reasonTunnelInnerSrc, waICMP(0xd001)),
		under("d-vxlan-inner-src-host-a", fmt.Sprintf("VXLAN %s (host-b) > %s, inner ICMP %s (host-a itself) > wa", bAddr, aAddr, aAddr),
			vxlan(bAddr, aAddr, vni, innerEcho(aAddr, wa.IP, 0xd002)),
			reasonTunnelInnerSrc, waICMP(0xd002)),
		under("d-ipip-inner-src-remote-workload", fmt.Sprintf("IP-in-IP %s (host-b) > %s, inner ICMP %s (wc, on host-c) > wa", bAddr, aAddr, m.WC.IP),
			ipip(bAddr, lab.ICMPEchoPacket(lab.IPv4Header{Src: m.WC.IP, Dst: wa.IP}, 0xd003, 1, payload)),
			reasonTunnelInnerSrc, waICMP(0xd003)),
		// What stays allowed: a node's tunnel may carry traffic from
		// outside the pools (a floating IP's flow forwarded by the node
		// the data center routed it to).
		func() hostileCase {
			c := under("d-vxlan-inner-src-external-allowed", fmt.Sprintf("VXLAN %s (host-b) > %s, inner ICMP %s (outside) > wa", bAddr, aAddr, client),
				vxlan(bAddr, aAddr, vni, innerEcho(client, wa.IP, 0xd004)),
				lab.ReasonDecapVXLAN, watch{what: "wa receives it", ns: wa.NS, iface: wa.InstanceIface(), filter: icmpID(0xd004), wantPacket: true})
			c.quiet = []string{reasonTunnelInnerSrc, lab.ReasonDropTunnelSrc, lab.ReasonDropTunnelVNI, reasonMalformed}
			return c
		}(),
		// (e) a TCP segment without SYN to a floating IP held here: no
		// flow starts, and the host stack must not route it back out.
		under("e-fip-ack-without-flow", fmt.Sprintf("TCP ACK %s:40200 (the client) > %s:%d (wa's floating IP), no flow", client, fA, echoPort),
			lab.TCPFrame(eth, lab.IPv4Header{Src: client, Dst: fA}, 40200, echoPort, lab.TCPAck, 12345, 67890),
			lab.ReasonDropNoRoute,
			watch{what: "host-a sends it back out", ns: ha.NS, iface: ha.UnderlayIface,
				filter: fmt.Sprintf("ether src %s and dst host %s", aMAC, fA)},
			watch{what: "wa receives it", ns: wa.NS, iface: wa.InstanceIface(), filter: "tcp port 40200"}),
		// (f) tunnel packets that are not a node's to this one.
		under("f-vxlan-wrong-vni", fmt.Sprintf("VXLAN %s (host-b) > %s with VNI %d (want %d)", bAddr, aAddr, vni+1, vni),
			vxlan(bAddr, aAddr, vni+1, innerEcho(client, wa.IP, 0xf001)),
			lab.ReasonDropTunnelVNI, waICMP(0xf001)),
		under("f-vxlan-stranger-source", fmt.Sprintf("VXLAN %s (the gateway, no node) > %s", g.Address.Addr(), aAddr),
			vxlan(g.Address.Addr(), aAddr, vni, innerEcho(client, wa.IP, 0xf002)),
			lab.ReasonDropTunnelSrc, waICMP(0xf002)),
		under("f-ipip-stranger-source", fmt.Sprintf("IP-in-IP %s (the gateway, no node) > %s", g.Address.Addr(), aAddr),
			ipip(g.Address.Addr(), lab.ICMPEchoPacket(lab.IPv4Header{Src: client, Dst: wa.IP}, 0xf003, 1, payload)),
			lab.ReasonDropTunnelSrc, waICMP(0xf003)),
		under("f-vxlan-to-another-node", fmt.Sprintf("VXLAN %s (host-b) > %s (host-b's own address, not host-a's) to host-a's MAC", bAddr, bAddr),
			vxlan(bAddr, bAddr, vni, innerEcho(client, wa.IP, 0xf004)),
			lab.ReasonDropTunnelDst, waICMP(0xf004)),
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { c.run(t, l) })
	}
	stop()
}

// hostileEgressPolicy lets wa (role hostile) reach everything but wb.
func hostileEgressPolicy(wb netip.Addr) string {
	return fmt.Sprintf(`apiVersion: calyx.io/v1
kind: NetworkPolicy
metadata:
  name: hostile-egress
spec:
  selector: role == "hostile"
  types: [Egress]
  egress:
  - action: Deny
    destination:
      nets: [%s/32]
  - action: Allow
`, wb)
}

// TestHostileWorkload: frames wa writes on its own interface: UDP to port
// 67 of a workload its egress policy denies (DHCP's exemption from policy
// is for the host's server only), DHCP requests that must still pass or
// are spoofing, and spoofed source addresses and MACs.
func TestHostileWorkload(t *testing.T) {
	l := newLab(t)
	lab.RequireTools(t, "tcpdump")
	m, err := lab.BuildMultiHost(l, lab.ModeVXLANCrossSubnet)
	if err != nil {
		t.Fatalf("build three hosts: %v", err)
	}
	ha, wa, wb, wc := m.HostA, m.WA, m.WB, m.WC
	if err := m.StartAgents(); err != nil {
		t.Fatalf("start agents: %v", err)
	}
	docs := []string{m.PoolYAML(m.Mode)}
	for _, h := range m.Hosts() {
		docs = append(docs, lab.NodeYAML(h))
	}
	docs = append(docs, lab.LabeledEndpointYAML(wa, map[string]string{"role": "hostile"}), lab.EndpointYAML(wb), lab.EndpointYAML(wc))
	if out, err := l.Apply("", lab.JoinYAML(docs...)); err != nil {
		t.Fatalf("apply model: %v\n%s", err, out)
	}
	if err := m.WaitLinks(attachTimeout); err != nil {
		t.Fatalf("programs not attached: %v", err)
	}
	for _, w := range []*lab.Workload{wb, wc} {
		if err := l.WaitPing(wa.NS, w.IP.String(), trafficTimeout); err != nil {
			t.Fatalf("wa -> %s before any policy: %v", w.Name, err)
		}
	}
	if err := l.WaitPing(wb.NS, wc.IP.String(), trafficTimeout); err != nil {
		t.Fatalf("wb -> wc: %v", err)
	}
	stop := healthyPing(t, l, "wb -> wc", wb.NS, wc.IP.String())
	defer stop()

	if out, err := l.Apply("", hostileEgressPolicy(wb.IP)); err != nil {
		t.Fatalf("apply policy: %v\n%s", err, out)
	}
	if err := l.WaitNoPing(wa.NS, wb.IP.String(), trafficTimeout); err != nil {
		t.Fatalf("wa's egress policy does not deny wb: %v", err)
	}
	mustPing(t, l, wa.NS, wc.IP.String(), 3)

	hostMAC := mustMAC(t, l, ha.NS, wa.HostIface)
	eth := lab.Eth{Src: wa.MAC, Dst: hostMAC}
	t.Logf("injecting from %s %s (%s) to its host side %s (%s)", wa.NS, wa.InstanceIface(), wa.MAC, wa.HostIface, hostMAC)
	bcast := netip.MustParseAddr("255.255.255.255")
	zero := netip.IPv4Unspecified()
	strangerMAC := net.HardwareAddr{0x02, 0x66, 0x66, 0x66, 0x66, 0x66}
	fromWA := func(name, what string, frame []byte, reason string, watches ...watch) hostileCase {
		return hostileCase{name: name, what: what, from: wa.NS, fromIface: wa.InstanceIface(), frame: frame,
			host: ha.Name, iface: wa.HostIface, reason: reason, watches: watches}
	}
	wbUDP := func(port int) watch {
		return watch{what: "wb receives it", ns: wb.NS, iface: wb.InstanceIface(), filter: fmt.Sprintf("udp dst port %d", port)}
	}
	wcICMP := func(id uint16) watch {
		return watch{what: "wc receives it", ns: wc.NS, iface: wc.InstanceIface(), filter: icmpID(id)}
	}
	payload := []byte("calyx issue 15: hostile workload")
	discover := lab.DHCPMessage(lab.DHCPRequestOptions{ClientMAC: wa.MAC, Xid: 0x15150001})

	cases := []hostileCase{
		// (i) UDP to port 67 is DHCP only when it goes to the host.
		fromWA("i-udp67-to-denied-workload", fmt.Sprintf("UDP %s:68 > %s:67 (wb, denied by wa's egress policy)", wa.IP, wb.IP),
			lab.UDPFrame(eth, lab.IPv4Header{Src: wa.IP, Dst: wb.IP}, 68, 67, discover),
			reasonPolicy, wbUDP(67)),
		// The same policy on another port, as a control: it denies.
		fromWA("i-control-udp7000-to-denied-workload", fmt.Sprintf("UDP %s:40300 > %s:7000 (wb, denied)", wa.IP, wb.IP),
			lab.UDPFrame(eth, lab.IPv4Header{Src: wa.IP, Dst: wb.IP}, 40300, 7000, payload),
			reasonPolicy, wbUDP(7000)),
		// (ii) an unconfigured client's DISCOVER still passes to the host.
		func() hostileCase {
			c := fromWA("ii-dhcp-discover-broadcast", "DHCP DISCOVER 0.0.0.0:68 > 255.255.255.255:67, broadcast, chaddr = wa's MAC",
				lab.UDPFrame(lab.Eth{Src: wa.MAC, Dst: lab.BroadcastMAC}, lab.IPv4Header{Src: zero, Dst: bcast}, 68, 67, discover),
				reasonPassHost)
			c.quiet = []string{reasonSpoofIP, reasonSpoofMAC, reasonMalformed, reasonPolicy}
			return c
		}(),
		// DHCP that is spoofing: another MAC's lease, a relay's giaddr.
		fromWA("ii-dhcp-discover-other-chaddr", "DHCP DISCOVER from 0.0.0.0 asking for another MAC's lease",
			lab.UDPFrame(lab.Eth{Src: wa.MAC, Dst: lab.BroadcastMAC}, lab.IPv4Header{Src: zero, Dst: bcast}, 68, 67,
				lab.DHCPMessage(lab.DHCPRequestOptions{ClientMAC: strangerMAC, Xid: 0x15150002})),
			reasonSpoofMAC),
		fromWA("ii-dhcp-request-with-giaddr", "DHCP REQUEST from 0.0.0.0 posing as a relay (giaddr set)",
			lab.UDPFrame(lab.Eth{Src: wa.MAC, Dst: lab.BroadcastMAC}, lab.IPv4Header{Src: zero, Dst: bcast}, 68, 67,
				lab.DHCPMessage(lab.DHCPRequestOptions{ClientMAC: wa.MAC, Xid: 0x15150003, RelayIP: netip.MustParseAddr("10.65.9.1")})),
			reasonSpoofIP),
		// A DHCP request from 0.0.0.0 to the gateway's MAC is a renewal
		// only when it goes to the host (a subnet's gateway IP); to wb it
		// is spoofing.
		fromWA("ii-udp-from-zero-not-dhcp", fmt.Sprintf("DHCP DISCOVER 0.0.0.0:68 > %s:67 (wb) to the gateway's MAC", wb.IP),
			lab.UDPFrame(eth, lab.IPv4Header{Src: zero, Dst: wb.IP}, 68, 67, discover),
			reasonSpoofIP, wbUDP(67)),
		// (iii) spoofed source address and MAC, by hand.
		fromWA("iii-spoofed-source-ip", fmt.Sprintf("ICMP echo %s (wb's address) > wc from wa", wb.IP),
			lab.ICMPEchoFrame(eth, lab.IPv4Header{Src: wb.IP, Dst: wc.IP}, 0xe001, 1, payload),
			reasonSpoofIP, wcICMP(0xe001)),
		fromWA("iii-spoofed-source-mac", fmt.Sprintf("ICMP echo wa > wc from MAC %s", strangerMAC),
			lab.ICMPEchoFrame(lab.Eth{Src: strangerMAC, Dst: hostMAC}, lab.IPv4Header{Src: wa.IP, Dst: wc.IP}, 0xe002, 1, payload),
			reasonSpoofMAC, wcICMP(0xe002)),
		// (vii) VLAN tags: the host side's kernel moves the tag into
		// skb->vlan_tci before calyx's program runs, which must still see
		// it and drop the frame rather than forward it untagged.
		fromWA("vii-vlan-tagged", "ICMP echo wa > wc with an 802.1Q tag (VLAN 100)",
			tagged(lab.ICMPEchoFrame(eth, lab.IPv4Header{Src: wa.IP, Dst: wc.IP}, 0xe003, 1, payload), 0x8100),
			reasonVLAN, wcICMP(0xe003)),
		fromWA("vii-qinq-tagged", "ICMP echo wa > wc with 802.1ad and 802.1Q tags",
			tagged(lab.ICMPEchoFrame(eth, lab.IPv4Header{Src: wa.IP, Dst: wc.IP}, 0xe004, 1, payload), 0x88a8, 0x8100),
			reasonVLAN, wcICMP(0xe004)),
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { c.run(t, l) })
	}
	stop()
}
