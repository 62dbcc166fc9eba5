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
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/calyxnet/calyx/tests/lab"
	"github.com/gopacket/gopacket/layers"
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
	reasonARPIgnored     = "drop-arp-ignored"
	reasonNDIgnored      = "drop-nd-ignored"
	reasonNDReply        = "nd-reply"
	reasonDeliverLocal   = "deliver-local"
	reasonTCPWindow      = "drop-tcp-window"
	reasonFragOrphan     = "drop-frag-orphan"
)

// newReasons are the reasons issue 15 adds to the dataplane.
var newReasons = map[string]bool{reasonUnderlaySpoof: true, reasonTunnelInnerSrc: true, reasonVLAN: true, reasonTCPWindow: true}

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
	// prepare, when set, runs before the captures start and returns what
	// undoes it, run once the verdict is checked.
	prepare func(t *testing.T) (undo func())
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
	if c.prepare != nil {
		defer c.prepare(t)()
	}
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

// injectInto is what a frame from the gateway g to host h's underlay needs:
// both MACs, the Ethernet header between them, and h's VXLAN port and VNI
// (node status; the defaults when it says none).
func injectInto(t *testing.T, l *lab.Lab, g *lab.Gateway, h *lab.Host) (gwMAC, hMAC net.HardwareAddr, eth lab.Eth, port uint16, vni uint32) {
	t.Helper()
	gwMAC = mustMAC(t, l, g.NS, g.Iface)
	hMAC = mustMAC(t, l, h.NS, h.UnderlayIface)
	st, err := l.NodeStatus(h.Name)
	if err != nil {
		t.Fatal(err)
	}
	port, vni = uint16(st.VXLANPort), st.VXLANVNI
	if port == 0 {
		port = lab.DefaultVXLANPort
	}
	if vni == 0 {
		vni = lab.DefaultVXLANVNI
	}
	return gwMAC, hMAC, lab.Eth{Src: gwMAC, Dst: hMAC}, port, vni
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
// foreign inner source, a wrong VNI, a stranger's outer source, outer
// fragments and options), a TCP segment to a floating IP that starts no
// flow, TTL 1 and 0, runts and lying lengths. What calyx must accept (a
// tunnel packet from a node with an outside inner source) is checked too.
func TestHostileUnderlay(t *testing.T) {
	e := fipSetup(t)
	l, m, g := e.l, e.m, e.g
	ha, wa := m.HostA, m.WA
	aAddr := ha.Underlay.Addr()
	bAddr := m.HostB.Underlay.Addr()
	fA := netip.MustParseAddr(fipA)
	client := e.client.IP

	gwMAC, aMAC, eth, port, vni := injectInto(t, l, g, ha)
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
	// underPort is under for a frame the segment's bridge would not pass:
	// its netfilter hook (br_netfilter) drops malformed IPv4 before it is
	// forwarded. It is written on host-a's port of the bridge instead,
	// straight into host-a's underlay interface, as from the gateway.
	underPort := func(name, what string, frame []byte, reason string, watches ...watch) hostileCase {
		c := under(name, what, frame, reason, watches...)
		c.from, c.fromIface = ha.Segment.NS, ha.Uplink
		return c
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
		// (g) tunnel packets from a node with fragmented or optioned outer
		// headers: nodes send neither (DF always, IHL 5).
		under("g-vxlan-outer-first-fragment", fmt.Sprintf("VXLAN %s (host-b) > %s, outer header a first fragment (MF)", bAddr, aAddr),
			lab.VXLANFrame(eth, lab.IPv4Header{Src: bAddr, Dst: aAddr, MF: true}, 40123, port, vni, innerEcho(client, wa.IP, 0x9001)),
			reasonMalformed, waICMP(0x9001)),
		under("g-vxlan-outer-options", fmt.Sprintf("VXLAN %s (host-b) > %s, outer header with Router Alert (IHL 6)", bAddr, aAddr),
			lab.VXLANFrame(eth, lab.IPv4Header{Src: bAddr, Dst: aAddr, Options: []layers.IPv4Option{lab.RouterAlert}}, 40123, port, vni, innerEcho(client, wa.IP, 0x9002)),
			reasonMalformed, waICMP(0x9002)),
		under("g-ipip-outer-later-fragment", fmt.Sprintf("IP-in-IP %s (host-b) > %s, outer header a fragment at offset 800", bAddr, aAddr),
			lab.IPIPFrame(eth, lab.IPv4Header{Src: bAddr, Dst: aAddr, FragOffset: 100}, lab.ICMPEchoPacket(lab.IPv4Header{Src: client, Dst: wa.IP}, 0x9003, 1, payload)),
			reasonMalformed, waICMP(0x9003)),
		// (h) TTL: what expires at host-a goes to its stack, which answers
		// time-exceeded; nothing reaches wa.
		under("h-ttl1-to-workload", fmt.Sprintf("ICMP echo TTL 1 %s (outside) > wa %s, routed to host-a", client, wa.IP),
			lab.ICMPEchoFrame(eth, lab.IPv4Header{Src: client, Dst: wa.IP, TTL: 1}, 0x9101, 1, payload),
			reasonPassHost, waICMP(0x9101),
			watch{what: "host-a sends time-exceeded", ns: ha.NS, iface: ha.UnderlayIface, wantPacket: true,
				filter: fmt.Sprintf("ether src %s and %s", aMAC, icmpErrorAbout("icmp-timxceed", 0x9101))}),
		under("h-ttl0-to-workload", fmt.Sprintf("ICMP echo TTL 0 %s (outside) > wa %s, routed to host-a", client, wa.IP),
			lab.ICMPEchoFrame(eth, lab.IPv4Header{Src: client, Dst: wa.IP, ZeroTTL: true}, 0x9102, 1, payload),
			reasonPassHost, waICMP(0x9102)),
		under("h-vxlan-inner-ttl1", fmt.Sprintf("VXLAN %s (host-b) > %s, inner ICMP TTL 1 %s (outside) > wa", bAddr, aAddr, client),
			vxlan(bAddr, aAddr, vni, lab.ICMPEchoFrame(lab.Eth{Src: gwMAC, Dst: aMAC}, lab.IPv4Header{Src: client, Dst: wa.IP, TTL: 1}, 0x9103, 1, payload)),
			reasonPassHost, waICMP(0x9103)),
		// (i) runts and lying lengths, bare and inside tunnels.
		underPort("i-tiny-ipv4", "Ethernet header and 10 bytes of an IPv4 header (outside > wa)",
			lab.ICMPEchoFrame(eth, lab.IPv4Header{Src: client, Dst: wa.IP}, 0x9201, 1, payload)[:14+10],
			reasonMalformed),
		underPort("i-total-length-past-frame", fmt.Sprintf("ICMP echo %s > wa whose IPv4 total length says 200 bytes more than it has", client),
			lab.ICMPEchoFrame(eth, lab.IPv4Header{Src: client, Dst: wa.IP, TotalLength: uint16(20 + 8 + len(payload) + 200)}, 0x9202, 1, payload),
			reasonMalformed, waICMP(0x9202)),
		under("i-vxlan-inner-tiny", fmt.Sprintf("VXLAN %s (host-b) > %s carrying an Ethernet header and 10 bytes of IPv4", bAddr, aAddr),
			vxlan(bAddr, aAddr, vni, innerEcho(client, wa.IP, 0x9203)[:14+10]),
			reasonMalformed),
		under("i-vxlan-inner-total-length-past-frame", fmt.Sprintf("VXLAN %s (host-b) > %s, inner IPv4 total length 200 bytes past its end", bAddr, aAddr),
			vxlan(bAddr, aAddr, vni, lab.ICMPEchoFrame(lab.Eth{Src: gwMAC, Dst: aMAC}, lab.IPv4Header{Src: client, Dst: wa.IP, TotalLength: uint16(20 + 8 + len(payload) + 200)}, 0x9204, 1, payload)),
			reasonMalformed, waICMP(0x9204)),
		under("i-ipip-inner-tiny", fmt.Sprintf("IP-in-IP %s (host-b) > %s carrying 10 bytes of an IPv4 header", bAddr, aAddr),
			ipip(bAddr, lab.ICMPEchoPacket(lab.IPv4Header{Src: client, Dst: wa.IP}, 0x9205, 1, payload)[:10]),
			reasonMalformed),
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { c.run(t, l) })
	}
	t.Run("j-blind-reset-on-established-flow", func(t *testing.T) {
		blindReset(t, e, eth, under)
	})
	stop()
}

// seqRE reads a TCP segment's absolute sequence numbers from tcpdump's
// line for the first segment of a connection it sees.
var seqRE = regexp.MustCompile(`seq (\d+):(\d+)`)

// blindReset (finding 8): a TCP connection from the outside client to wa's
// floating IP is established; a stranger on the underlay who knows its
// addresses and ports but not its sequence numbers sends RSTs and a FIN
// half the sequence space away from the client's. The RSTs are dropped
// (drop-tcp-window), the FIN passes unrecorded, the flow's conntrack state
// stays established and the connection carries data afterwards.
func blindReset(t *testing.T, e *fipEnv, eth lab.Eth, under func(name, what string, frame []byte, reason string, watches ...watch) hostileCase) {
	l, g, ha := e.l, e.g, e.m.HostA
	fA := netip.MustParseAddr(fipA)
	dst := netip.AddrPortFrom(fA, echoPort)
	conn, err := lab.DialEcho(e.client.NS, dst.String(), trafficTimeout)
	if err != nil {
		t.Fatalf("client -> %s: %v", dst, err)
	}
	defer conn.Close()
	src := conn.Local()
	cp, err := l.StartCapture(g.NS, g.Iface, fmt.Sprintf("tcp and src host %s and src port %d", src.Addr(), src.Port()))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exchange("before the blind reset", trafficTimeout); err != nil {
		t.Fatalf("exchange before: %v", err)
	}
	pkts, err := cp.Stop()
	var next uint32
	for _, p := range pkts {
		if m := seqRE.FindStringSubmatch(p); m != nil {
			n, _ := strconv.ParseUint(m[2], 10, 32)
			next = uint32(n)
			break
		}
	}
	if err != nil || next == 0 {
		t.Fatalf("the client's sequence number: capture %v, packets %q", err, pkts)
	}
	// Half the sequence space away: outside any window a receiver has.
	blind := next + 1<<31
	t.Logf("client %s -> %s: next sequence number %d; the blind segments use %d", src, dst, next, blind)
	flowOf := func() (lab.CTFlow, bool) {
		flows, err := l.CTDump(ha.Name)
		if err != nil {
			t.Fatalf("ct dump: %v", err)
		}
		for _, f := range flows {
			if f.Proto == "tcp" && f.Src == src.String() && f.Dst == dst.String() {
				return f, true
			}
		}
		return lab.CTFlow{}, false
	}
	f, ok := flowOf()
	if !ok || f.State != "established" {
		t.Fatalf("host-a's conntrack before: flow %s found %v, want established", f, ok)
	}
	frame := func(flags lab.TCPFlags) []byte {
		return lab.TCPFrame(eth, lab.IPv4Header{Src: src.Addr(), Dst: fA}, src.Port(), echoPort, flags, blind, 1)
	}
	for _, c := range []hostileCase{
		under("rst", fmt.Sprintf("TCP RST %s > %s at sequence %d", src, dst, blind), frame(lab.TCPRst), reasonTCPWindow),
		under("rst-ack", fmt.Sprintf("TCP RST|ACK %s > %s at sequence %d", src, dst, blind), frame(lab.TCPRst|lab.TCPAck), reasonTCPWindow),
		// A FIN out of sequence is the end's to ignore: it passes, and
		// changes nothing here.
		under("fin", fmt.Sprintf("TCP FIN|ACK %s > %s at sequence %d", src, dst, blind), frame(lab.TCPFin|lab.TCPAck), reasonDeliverLocal),
	} {
		t.Run(c.name, func(t *testing.T) { c.run(t, l) })
	}
	if f, ok := flowOf(); !ok || f.State != "established" {
		t.Errorf("host-a's conntrack after the blind segments: flow %s found %v, want established", f, ok)
	}
	if _, err := conn.Exchange("after the blind reset", trafficTimeout); err != nil {
		t.Errorf("the connection after the blind segments: %v", err)
	}
	// The ends' own FINs are in sequence: closing the connection is seen.
	_ = conn.Close()
	if err := lab.Eventually(hostileWait, 100*time.Millisecond, func() error {
		if f, ok := flowOf(); !ok || f.State != "closing" {
			return fmt.Errorf("flow %s found %v, want closing", f, ok)
		}
		return nil
	}); err != nil {
		t.Errorf("host-a's conntrack after the client closed: %v", err)
	}
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

// neighbour is one entry of "ip -j neigh show dev IFACE".
type neighbour struct {
	Dst    string   `json:"dst"`
	LLAddr string   `json:"lladdr"`
	State  []string `json:"state"`
}

// neighbours lists the neighbour entries (IPv4 and IPv6) on iface in ns.
func neighbours(t *testing.T, l *lab.Lab, ns, iface string) []neighbour {
	t.Helper()
	res, err := l.Exec(ns, "ip", "-j", "neigh", "show", "dev", iface)
	if err != nil {
		t.Fatalf("neighbours of %s in %s: %v", iface, ns, err)
	}
	var out []neighbour
	if s := strings.TrimSpace(res.Stdout); s != "" {
		if err := json.Unmarshal([]byte(s), &out); err != nil {
			t.Fatalf("ip -j neigh show dev %s in %s: %v\n%s", iface, ns, err, s)
		}
	}
	return out
}

// gatewayMACs is what w's instance has resolved its IPv4 and IPv6 gateways
// to, by gateway address; an entry without a MAC is left out.
func gatewayMACs(t *testing.T, l *lab.Lab, w *lab.Workload) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, n := range neighbours(t, l, w.NS, w.InstanceIface()) {
		if (n.Dst == lab.WorkloadGateway || n.Dst == lab.WorkloadGatewayV6) && n.LLAddr != "" {
			m[n.Dst] = n.LLAddr
		}
	}
	return m
}

// linkLocal returns the IPv6 link-local address of iface in ns.
func linkLocal(t *testing.T, l *lab.Lab, ns, iface string) netip.Addr {
	t.Helper()
	var a netip.Addr
	err := lab.Eventually(5*time.Second, 100*time.Millisecond, func() error {
		res, err := l.Exec(ns, "ip", "-j", "-6", "addr", "show", "dev", iface, "scope", "link")
		if err != nil {
			return err
		}
		var links []struct {
			AddrInfo []struct {
				Local     string `json:"local"`
				Tentative bool   `json:"tentative"`
			} `json:"addr_info"`
		}
		if err := json.Unmarshal([]byte(res.Stdout), &links); err != nil {
			return err
		}
		for _, li := range links {
			for _, ai := range li.AddrInfo {
				if p, err := netip.ParseAddr(ai.Local); err == nil && p.IsLinkLocalUnicast() && !ai.Tentative {
					a = p
					return nil
				}
			}
		}
		return fmt.Errorf("no usable link-local address on %s in %s:\n%s", iface, ns, res.Stdout)
	})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// setMTU sets the MTU of iface in ns and returns what sets it back.
func setMTU(t *testing.T, l *lab.Lab, ns, iface string, mtu, back int) func() {
	t.Helper()
	if _, err := l.Exec(ns, "ip", "link", "set", iface, "mtu", strconv.Itoa(mtu)); err != nil {
		t.Fatalf("MTU %d on %s in %s: %v", mtu, iface, ns, err)
	}
	return func() {
		if _, err := l.Exec(ns, "ip", "link", "set", iface, "mtu", strconv.Itoa(back)); err != nil {
			t.Errorf("MTU %d back on %s in %s: %v", back, iface, ns, err)
		}
	}
}

// ipID is a capture filter for IPv4 packets (fragments included) with
// identification id.
func ipID(id uint16) string { return fmt.Sprintf("ip and ip[4:2] = %#x", id) }

// icmpErrorAbout is a capture filter for ICMP errors of type typ (a
// tcpdump name: icmp-timxceed, icmp-unreach) quoting an echo request with
// id (the quoted header without options).
func icmpErrorAbout(typ string, id uint16) string {
	return fmt.Sprintf("icmp and icmp[icmptype] = %s and icmp[8+20+4:2] = %#x", typ, id)
}

// hostileEndpointToHostDrop is the Config with endpointToHostAction Drop.
const hostileEndpointToHostDrop = `apiVersion: calyx.io/v1
kind: Config
metadata:
  name: default
spec:
  endpointToHostAction: Drop
`

// TestHostileWorkload: frames wa writes on its own interface: UDP to port
// 67 of a workload its egress policy denies (DHCP's exemption from policy
// is for the host's server only), DHCP requests that must still pass or
// are spoofing, spoofed source addresses and MACs, VLAN tags, fragments and
// IP options, TTL 1 and 0, runts, lying lengths and frames over the MTU,
// and ARP and NDP poisoning: wa claiming the gateway's address or another
// workload's (wd beside it on host-a, wb on host-b), whose neighbour
// entries must stay as they were.
func TestHostileWorkload(t *testing.T) {
	l := newLab(t)
	lab.RequireTools(t, "tcpdump")
	m, err := lab.BuildMultiHost(l, lab.ModeVXLANCrossSubnet)
	if err != nil {
		t.Fatalf("build three hosts: %v", err)
	}
	ha, wa, wb, wc := m.HostA, m.WA, m.WB, m.WC
	// wd: a neighbour of wa on host-a, whose addresses wa claims.
	wd, err := m.AddWorkload(ha.Name, "wd", "10.65.1.3", 0)
	if err != nil {
		t.Fatalf("add wd: %v", err)
	}
	// IPv6 for NDP: the claimant wa and the victims wd and wb.
	for w, a := range map[*lab.Workload]string{wa: "fd00:65:0:1::2", wd: "fd00:65:0:1::3", wb: "fd00:65:0:2::2"} {
		if err := l.AddIPv6(w, a); err != nil {
			t.Fatalf("IPv6 for %s: %v", w.Name, err)
		}
	}
	if err := m.StartAgents(); err != nil {
		t.Fatalf("start agents: %v", err)
	}
	docs := []string{m.PoolYAML(m.Mode), lab.PoolYAML("v6", "fd00:65::/48")}
	for _, h := range m.Hosts() {
		docs = append(docs, lab.NodeYAML(h))
	}
	docs = append(docs, lab.LabeledEndpointYAML(wa, map[string]string{"role": "hostile"}), lab.EndpointYAML(wb), lab.EndpointYAML(wc),
		lab.EndpointYAML(wd))
	if out, err := l.Apply("", lab.JoinYAML(docs...)); err != nil {
		t.Fatalf("apply model: %v\n%s", err, out)
	}
	if err := m.WaitLinks(attachTimeout); err != nil {
		t.Fatalf("programs not attached: %v", err)
	}
	for _, w := range []*lab.Workload{wb, wc, wd} {
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

	// The victims resolve their gateways (IPv4 from their pings; IPv6 by
	// pinging fe80::1, which calyx resolves and nothing answers).
	mustPing(t, l, wd.NS, wc.IP.String(), 1)
	for _, w := range []*lab.Workload{wd, wb} {
		_, _ = l.Exec(w.NS, "ping", "-6", "-n", "-c", "1", "-W", "1", lab.WorkloadGatewayV6+"%"+w.InstanceIface())
	}
	victims := map[*lab.Workload]map[string]string{}
	for _, w := range []*lab.Workload{wd, wb} {
		victims[w] = gatewayMACs(t, l, w)
		if len(victims[w]) != 2 {
			t.Fatalf("%s has not resolved both gateways: %v (%v)", w.Name, victims[w], neighbours(t, l, w.NS, w.InstanceIface()))
		}
		t.Logf("%s's gateways before: %v", w.Name, victims[w])
	}

	hostMAC := mustMAC(t, l, ha.NS, wa.HostIface)
	eth := lab.Eth{Src: wa.MAC, Dst: hostMAC}
	t.Logf("injecting from %s %s (%s) to its host side %s (%s)", wa.NS, wa.InstanceIface(), wa.MAC, wa.HostIface, hostMAC)
	bcast := netip.MustParseAddr("255.255.255.255")
	zero := netip.IPv4Unspecified()
	gw := netip.MustParseAddr(lab.WorkloadGateway)
	gw6 := netip.MustParseAddr(lab.WorkloadGatewayV6)
	waLL := linkLocal(t, l, wa.NS, wa.InstanceIface())
	strangerMAC := net.HardwareAddr{0x02, 0x66, 0x66, 0x66, 0x66, 0x66}
	fromWA := func(name, what string, frame []byte, reason string, watches ...watch) hostileCase {
		return hostileCase{name: name, what: what, from: wa.NS, fromIface: wa.InstanceIface(), frame: frame,
			host: ha.Name, iface: wa.HostIface, reason: reason, watches: watches}
	}
	// allowed is fromWA for a frame calyx must pass on as reason, and
	// count under no drop reason.
	allowed := func(name, what string, frame []byte, reason string, watches ...watch) hostileCase {
		c := fromWA(name, what, frame, reason, watches...)
		c.quiet = []string{reasonMalformed, reasonPolicy, reasonSpoofIP, reasonSpoofMAC, lab.ReasonDropTooBig}
		return c
	}
	wbUDP := func(port int) watch {
		return watch{what: "wb receives it", ns: wb.NS, iface: wb.InstanceIface(), filter: fmt.Sprintf("udp dst port %d", port)}
	}
	wcICMP := func(id uint16) watch {
		return watch{what: "wc receives it", ns: wc.NS, iface: wc.InstanceIface(), filter: icmpID(id)}
	}
	// gets is a capture in w's instance of packets with IP id (or, with
	// want, one that must see it).
	gets := func(w *lab.Workload, id uint16, want bool) watch {
		return watch{what: w.Name + " receives it", ns: w.NS, iface: w.InstanceIface(), filter: ipID(id), wantPacket: want}
	}
	// waGets is a capture in wa of an ICMP error about its echo id.
	waGets := func(what, typ string, id uint16) watch {
		return watch{what: what, ns: wa.NS, iface: wa.InstanceIface(), filter: icmpErrorAbout(typ, id), wantPacket: true}
	}
	payload := []byte("calyx issue 15: hostile workload")
	chunk := []byte(strings.Repeat("calyx issue 15: a fragment. ", 4))
	discover := lab.DHCPMessage(lab.DHCPRequestOptions{ClientMAC: wa.MAC, Xid: 0x15150001})
	wlMTU := wa.MTU
	if wlMTU == 0 {
		wlMTU = m.Mode.WorkloadMTU()
	}
	// bigEcho is an ICMP echo whose IP packet is the MTU + 4 bytes: the
	// longest frame a veth takes past its MTU (it allows for a VLAN tag),
	// which a tap takes too.
	bigEcho := func(dst netip.Addr, id uint16, noDF bool) []byte {
		return lab.ICMPEchoFrame(eth, lab.IPv4Header{Src: wa.IP, Dst: dst, ID: id, NoDF: noDF}, id, 1,
			make([]byte, wlMTU+4-20-8))
	}
	// overMTU lets wa's instance write frames over its MTU for a case.
	overMTU := func(t *testing.T) func() { return setMTU(t, l, wa.NS, wa.InstanceIface(), wlMTU+100, wlMTU) }
	arp := func(dst net.HardwareAddr, a lab.ARP) []byte {
		if a.SenderMAC == nil {
			a.SenderMAC = wa.MAC
		}
		return lab.ARPFrame(lab.Eth{Src: wa.MAC, Dst: dst}, a)
	}
	allNodes := lab.Eth{Src: wa.MAC, Dst: lab.IPv6MulticastMAC(lab.AllNodes)}
	solicit := func(target netip.Addr) (lab.Eth, netip.Addr) {
		sn := lab.SolicitedNode(target)
		return lab.Eth{Src: wa.MAC, Dst: lab.IPv6MulticastMAC(sn)}, sn
	}
	// ndDrop is a poisoning NDP message from wa: dropped, as a spoofed
	// sender (the ARP equivalent) or as an ignored NDP message.
	ndDrop := func(name, what string, frame []byte) hostileCase {
		c := fromWA(name, what, frame, reasonSpoofIP)
		c.alsoOK = []string{reasonNDIgnored}
		return c
	}

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

		// Fragments and IP options. A first fragment meets wa's egress
		// policy with its ports, and calyx remembers them (cx_frags) for
		// the later fragments of its datagram, which are matched and
		// passed like it; a later fragment without its first is dropped
		// (drop-frag-orphan), whatever the policy. Packets with options
		// meet the policy on their own: what it denies (wb) gets nothing,
		// what it allows (wc) gets them as sent.
		fromWA("frag-later-to-denied-workload", fmt.Sprintf("UDP fragment at offset 1480 (no L4 header) %s > %s (wb, denied)", wa.IP, wb.IP),
			lab.IPv4Frame(eth, lab.IPv4Header{Src: wa.IP, Dst: wb.IP, ID: 0x4f01, FragOffset: 185}, layers.IPProtocolUDP, chunk),
			reasonFragOrphan, gets(wb, 0x4f01, false)),
		fromWA("frag-first-to-denied-workload", fmt.Sprintf("first UDP fragment (MF) %s:40400 > %s:7000 (wb, denied)", wa.IP, wb.IP),
			lab.UDPFrame(eth, lab.IPv4Header{Src: wa.IP, Dst: wb.IP, ID: 0x4f02, MF: true}, 40400, 7000, chunk),
			reasonPolicy, gets(wb, 0x4f02, false)),
		fromWA("frag-middle-to-denied-workload", fmt.Sprintf("ICMP fragment at offset 8 with MF %s > %s (wb, denied)", wa.IP, wb.IP),
			lab.IPv4Frame(eth, lab.IPv4Header{Src: wa.IP, Dst: wb.IP, ID: 0x4f03, MF: true, FragOffset: 1}, layers.IPProtocolICMPv4, chunk),
			reasonFragOrphan, gets(wb, 0x4f03, false)),
		fromWA("ip-options-to-denied-workload", fmt.Sprintf("ICMP echo with Router Alert (IHL 6) %s > %s (wb, denied)", wa.IP, wb.IP),
			lab.ICMPEchoFrame(eth, lab.IPv4Header{Src: wa.IP, Dst: wb.IP, ID: 0x4f04, Options: []layers.IPv4Option{lab.RouterAlert}}, 0x4f04, 1, payload),
			reasonPolicy, gets(wb, 0x4f04, false)),
		fromWA("frag-later-alone-to-workload-allowed", fmt.Sprintf("UDP fragment at offset 1480, its first never sent, %s > %s (wc, allowed)", wa.IP, wc.IP),
			lab.IPv4Frame(eth, lab.IPv4Header{Src: wa.IP, Dst: wc.IP, ID: 0x4f05, FragOffset: 185}, layers.IPProtocolUDP, chunk),
			reasonFragOrphan, gets(wc, 0x4f05, false)),
		allowed("frag-first-to-workload-allowed", fmt.Sprintf("first UDP fragment (MF) %s > %s:7000 (wc, allowed): forwarded", wa.IP, wc.IP),
			lab.UDPFrame(eth, lab.IPv4Header{Src: wa.IP, Dst: wc.IP, ID: 0x4f06, MF: true}, 40401, 7000, chunk),
			lab.ReasonEncapVXLAN, gets(wc, 0x4f06, true)),
		// The same datagram's later fragment: matched by its first's ports.
		allowed("frag-later-after-first-to-workload-allowed", fmt.Sprintf("UDP fragment at offset 1480 of that datagram %s > %s (wc, allowed): forwarded", wa.IP, wc.IP),
			lab.IPv4Frame(eth, lab.IPv4Header{Src: wa.IP, Dst: wc.IP, ID: 0x4f06, FragOffset: 185}, layers.IPProtocolUDP, chunk),
			lab.ReasonEncapVXLAN, gets(wc, 0x4f06, true)),
		allowed("ip-options-to-workload-allowed", fmt.Sprintf("ICMP echo with Router Alert %s > %s (wc, allowed): forwarded", wa.IP, wc.IP),
			lab.ICMPEchoFrame(eth, lab.IPv4Header{Src: wa.IP, Dst: wc.IP, ID: 0x4f07, Options: []layers.IPv4Option{lab.RouterAlert}}, 0x4f07, 1, payload),
			lab.ReasonEncapVXLAN, gets(wc, 0x4f07, true)),
		fromWA("frag-later-alone-to-local-workload", fmt.Sprintf("UDP fragment at offset 1480, its first never sent, %s > %s (wd, beside wa)", wa.IP, wd.IP),
			lab.IPv4Frame(eth, lab.IPv4Header{Src: wa.IP, Dst: wd.IP, ID: 0x4f08, FragOffset: 185}, layers.IPProtocolUDP, chunk),
			reasonFragOrphan, gets(wd, 0x4f08, false)),

		// TTL: a packet that expires at its first router goes to the host
		// stack, which answers time-exceeded (before any policy: the
		// error quotes the packet as sent, and nothing is forwarded).
		fromWA("ttl1-to-workload", fmt.Sprintf("ICMP echo TTL 1 %s > %s (wc)", wa.IP, wc.IP),
			lab.ICMPEchoFrame(eth, lab.IPv4Header{Src: wa.IP, Dst: wc.IP, ID: 0x5001, TTL: 1}, 0x5001, 1, payload),
			reasonPassHost, gets(wc, 0x5001, false), waGets("wa is told time-exceeded", "icmp-timxceed", 0x5001)),
		// A new flow the egress policy denies is denied at TTL 1 too.
		fromWA("ttl1-to-denied-workload", fmt.Sprintf("ICMP echo TTL 1 %s > %s (wb, denied)", wa.IP, wb.IP),
			lab.ICMPEchoFrame(eth, lab.IPv4Header{Src: wa.IP, Dst: wb.IP, ID: 0x5002, TTL: 1}, 0x5002, 1, payload),
			reasonPolicy, gets(wb, 0x5002, false)),
		fromWA("ttl1-to-local-workload", fmt.Sprintf("ICMP echo TTL 1 %s > %s (wd, beside wa)", wa.IP, wd.IP),
			lab.ICMPEchoFrame(eth, lab.IPv4Header{Src: wa.IP, Dst: wd.IP, ID: 0x5003, TTL: 1}, 0x5003, 1, payload),
			reasonPassHost, gets(wd, 0x5003, false), waGets("wa is told time-exceeded", "icmp-timxceed", 0x5003)),
		fromWA("ttl0-to-workload", fmt.Sprintf("ICMP echo TTL 0 %s > %s (wc)", wa.IP, wc.IP),
			lab.ICMPEchoFrame(eth, lab.IPv4Header{Src: wa.IP, Dst: wc.IP, ID: 0x5004, ZeroTTL: true}, 0x5004, 1, payload),
			reasonPassHost, gets(wc, 0x5004, false)),

		// Runts and lying lengths.
		fromWA("tiny-ipv4", "Ethernet header and 10 bytes of an IPv4 header (wa > wc)",
			lab.ICMPEchoFrame(eth, lab.IPv4Header{Src: wa.IP, Dst: wc.IP, ID: 0x5101}, 0x5101, 1, payload)[:14+10],
			reasonMalformed, gets(wc, 0x5101, false)),
		fromWA("tiny-ethernet-only", "an Ethernet header saying IPv4 and nothing after it",
			lab.ICMPEchoFrame(eth, lab.IPv4Header{Src: wa.IP, Dst: wc.IP}, 0x5102, 1, nil)[:14],
			reasonMalformed),
		fromWA("tiny-arp", "an Ethernet header saying ARP and 10 bytes of ARP",
			arp(lab.BroadcastMAC, lab.ARP{Op: lab.ARPRequest, SenderIP: wa.IP, TargetIP: gw})[:14+10],
			reasonMalformed),
		fromWA("total-length-past-frame", fmt.Sprintf("ICMP echo wa > wc whose IPv4 total length says %d, the packet %d bytes", 20+8+len(payload)+200, 20+8+len(payload)),
			lab.ICMPEchoFrame(eth, lab.IPv4Header{Src: wa.IP, Dst: wc.IP, ID: 0x5103, TotalLength: uint16(20 + 8 + len(payload) + 200)}, 0x5103, 1, payload),
			reasonMalformed, gets(wc, 0x5103, false)),
		fromWA("total-length-below-header", "ICMP echo wa > wc whose IPv4 total length says 16, shorter than its header",
			lab.ICMPEchoFrame(eth, lab.IPv4Header{Src: wa.IP, Dst: wc.IP, ID: 0x5104, TotalLength: 16}, 0x5104, 1, payload),
			reasonMalformed, gets(wc, 0x5104, false)),
		// Frames over the MTU: through a tunnel that they do not fit,
		// "fragmentation needed" (DF) or a drop; to a workload beside wa,
		// whose interface has the same MTU, they must not arrive either.
		func() hostileCase {
			c := fromWA("oversized-to-workload", fmt.Sprintf("ICMP echo wa > wc of %d bytes (MTU %d), DF", wlMTU+4, wlMTU),
				bigEcho(wc.IP, 0x5201, false), lab.ReasonICMPFragNeeded,
				gets(wc, 0x5201, false), waGets("wa is told fragmentation needed", "icmp-unreach", 0x5201))
			c.prepare = overMTU
			return c
		}(),
		func() hostileCase {
			c := fromWA("oversized-no-df-to-workload", fmt.Sprintf("ICMP echo wa > wc of %d bytes (MTU %d), no DF", wlMTU+4, wlMTU),
				bigEcho(wc.IP, 0x5202, true), lab.ReasonDropTooBig, gets(wc, 0x5202, false))
			c.prepare = overMTU
			return c
		}(),
		func() hostileCase {
			c := fromWA("oversized-to-local-workload", fmt.Sprintf("ICMP echo wa > wd (beside wa) of %d bytes (MTU %d), DF", wlMTU+4, wlMTU),
				bigEcho(wd.IP, 0x5203, false), lab.ReasonICMPFragNeeded, gets(wd, 0x5203, false))
			c.alsoOK = []string{lab.ReasonDropTooBig, reasonMalformed}
			c.prepare = overMTU
			return c
		}(),

		// ARP poisoning: wa claiming the gateway's address or another
		// workload's as the sender. None of it may reach the host's
		// neighbour table (nor, through it, anyone's traffic).
		fromWA("arp-request-claims-gateway", fmt.Sprintf("ARP request who-has %s tell %s (the gateway) at wa's MAC", wd.IP, gw),
			arp(lab.BroadcastMAC, lab.ARP{Op: lab.ARPRequest, SenderIP: gw, TargetIP: wd.IP}), reasonSpoofIP),
		fromWA("arp-reply-claims-gateway", fmt.Sprintf("ARP reply %s (the gateway) is-at wa's MAC, to the host", gw),
			arp(hostMAC, lab.ARP{Op: lab.ARPReply, SenderIP: gw, TargetMAC: hostMAC, TargetIP: wd.IP}), reasonSpoofIP),
		fromWA("arp-gratuitous-claims-gateway", fmt.Sprintf("gratuitous ARP for %s (the gateway) at wa's MAC", gw),
			arp(lab.BroadcastMAC, lab.ARP{Op: lab.ARPRequest, SenderIP: gw, TargetIP: gw}), reasonSpoofIP),
		fromWA("arp-reply-claims-local-workload", fmt.Sprintf("ARP reply %s (wd, beside wa) is-at wa's MAC", wd.IP),
			arp(hostMAC, lab.ARP{Op: lab.ARPReply, SenderIP: wd.IP, TargetMAC: hostMAC, TargetIP: gw}), reasonSpoofIP),
		fromWA("arp-gratuitous-claims-local-workload", fmt.Sprintf("gratuitous ARP reply for %s (wd) at wa's MAC, broadcast", wd.IP),
			arp(lab.BroadcastMAC, lab.ARP{Op: lab.ARPReply, SenderIP: wd.IP, TargetMAC: lab.BroadcastMAC, TargetIP: wd.IP}), reasonSpoofIP),
		fromWA("arp-request-claims-remote-workload", fmt.Sprintf("ARP request who-has %s tell %s (wb, on host-b)", gw, wb.IP),
			arp(lab.BroadcastMAC, lab.ARP{Op: lab.ARPRequest, SenderIP: wb.IP, TargetIP: gw}), reasonSpoofIP),
		fromWA("arp-sender-mac-not-its-own", fmt.Sprintf("ARP reply %s (wa) is-at %s, from wa's MAC", wa.IP, strangerMAC),
			arp(hostMAC, lab.ARP{Op: lab.ARPReply, SenderMAC: strangerMAC, SenderIP: wa.IP, TargetMAC: hostMAC, TargetIP: gw}), reasonSpoofMAC),
		fromWA("arp-gratuitous-own-address", fmt.Sprintf("gratuitous ARP request for %s (wa's own)", wa.IP),
			arp(lab.BroadcastMAC, lab.ARP{Op: lab.ARPRequest, SenderIP: wa.IP, TargetIP: wa.IP}), reasonARPIgnored),
		fromWA("arp-probe-for-gateway", fmt.Sprintf("ARP probe (sender 0.0.0.0) for %s (the gateway)", gw),
			arp(lab.BroadcastMAC, lab.ARP{Op: lab.ARPRequest, SenderIP: zero, TargetIP: gw}), reasonARPIgnored),
		fromWA("arp-rarp-opcode", "ARP opcode 3 (RARP request) from wa's own address",
			arp(lab.BroadcastMAC, lab.ARP{Op: 3, SenderIP: wa.IP, TargetIP: gw}), reasonMalformed),

		// NDP poisoning: unsolicited advertisements (override) that the
		// gateway or another workload's address is at wa's MAC, and
		// solicitations whose source claims another's address.
		ndDrop("nd-na-claims-gateway", fmt.Sprintf("unsolicited NA (override, router) %s (the gateway) is at wa's MAC, from %s", gw6, waLL),
			lab.NeighborAdvertFrame(allNodes, lab.IPv6Header{Src: waLL, Dst: lab.AllNodes}, gw6, lab.NAOverride|lab.NARouter, wa.MAC)),
		ndDrop("nd-na-claims-local-workload", fmt.Sprintf("unsolicited NA (override) %s (wd) is at wa's MAC, from %s", wd.IPv6, waLL),
			lab.NeighborAdvertFrame(allNodes, lab.IPv6Header{Src: waLL, Dst: lab.AllNodes}, wd.IPv6, lab.NAOverride, wa.MAC)),
		ndDrop("nd-na-claims-remote-workload", fmt.Sprintf("unsolicited NA (override) %s (wb) is at wa's MAC, from wa's own %s", wb.IPv6, wa.IPv6),
			lab.NeighborAdvertFrame(allNodes, lab.IPv6Header{Src: wa.IPv6, Dst: lab.AllNodes}, wb.IPv6, lab.NAOverride, wa.MAC)),
		fromWA("nd-na-from-spoofed-source", fmt.Sprintf("unsolicited NA %s (wd) is at wa's MAC, from %s (wd)", wd.IPv6, wd.IPv6),
			lab.NeighborAdvertFrame(allNodes, lab.IPv6Header{Src: wd.IPv6, Dst: lab.AllNodes}, wd.IPv6, lab.NAOverride, wa.MAC),
			reasonSpoofIP),
		func() hostileCase {
			c := fromWA("nd-na-own-address-allowed", fmt.Sprintf("unsolicited NA %s (wa's own) is at wa's MAC: the host's to learn", wa.IPv6),
				lab.NeighborAdvertFrame(allNodes, lab.IPv6Header{Src: waLL, Dst: lab.AllNodes}, wa.IPv6, lab.NAOverride, wa.MAC),
				reasonPassHost)
			c.quiet = []string{reasonSpoofIP, reasonNDIgnored, reasonMalformed}
			return c
		}(),
		func() hostileCase {
			e, sn := solicit(gw6)
			return fromWA("nd-ns-spoofed-global-source", fmt.Sprintf("NS who-has %s from %s (wd) at wa's MAC", gw6, wd.IPv6),
				lab.NeighborSolicitFrame(e, lab.IPv6Header{Src: wd.IPv6, Dst: sn}, gw6, wa.MAC), reasonSpoofIP)
		}(),
		func() hostileCase {
			// A link-local source is the link's own business: calyx
			// answers it (to wa, where it came from), and nothing of it
			// reaches the host stack (a frame is counted once: nd-reply,
			// not pass-host).
			e, sn := solicit(wd.IPv6)
			return fromWA("nd-ns-from-gateway-address", fmt.Sprintf("NS who-has %s (wd) from %s (the gateway's address) at wa's MAC", wd.IPv6, gw6),
				lab.NeighborSolicitFrame(e, lab.IPv6Header{Src: gw6, Dst: sn}, wd.IPv6, wa.MAC), reasonNDReply)
		}(),
		func() hostileCase {
			e, sn := solicit(gw6)
			return fromWA("nd-ns-dad-for-gateway", fmt.Sprintf("duplicate-address NS (from ::) for %s (the gateway)", gw6),
				lab.NeighborSolicitFrame(e, lab.IPv6Header{Src: netip.IPv6Unspecified(), Dst: sn}, gw6, nil), reasonNDIgnored)
		}(),
		func() hostileCase {
			e, sn := solicit(gw6)
			return fromWA("nd-ns-hop-limit-64", fmt.Sprintf("NS who-has %s with hop limit 64 (from beyond the link)", gw6),
				lab.NeighborSolicitFrame(e, lab.IPv6Header{Src: waLL, Dst: sn, HopLimit: 64}, gw6, wa.MAC), reasonMalformed)
		}(),
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { c.run(t, l) })
	}

	// What the poisoning reached: the victims still resolve their
	// gateways to their own host sides, and the host learnt nothing on
	// wa's interface but wa's own addresses.
	t.Run("neighbour-tables-unchanged", func(t *testing.T) {
		for _, w := range []*lab.Workload{wd, wb} {
			if got := gatewayMACs(t, l, w); !maps.Equal(got, victims[w]) {
				t.Errorf("%s's gateway entries changed: %v, were %v", w.Name, got, victims[w])
			}
		}
		own := map[string]bool{wa.IP.String(): true, wa.IPv6.String(): true, waLL.String(): true}
		for _, n := range neighbours(t, l, ha.NS, wa.HostIface) {
			if !own[n.Dst] && n.LLAddr != "" {
				t.Errorf("host-a learnt %s at %s on wa's interface %s (%v)", n.Dst, n.LLAddr, wa.HostIface, n.State)
			}
		}
		for _, n := range neighbours(t, l, ha.NS, wd.HostIface) {
			if n.LLAddr != "" && n.LLAddr != wd.MAC.String() {
				t.Errorf("host-a holds %s at %s on wd's interface %s, want wd's MAC %s", n.Dst, n.LLAddr, wd.HostIface, wd.MAC)
			}
		}
	})

	// TTL 1 to the host itself: the host stack takes a packet for its own
	// address whatever its TTL, so it must meet endpointToHostAction as
	// any other does.
	t.Run("ttl1-to-host-under-endpointToHost-drop", func(t *testing.T) {
		hostAddr := ha.Underlay.Addr()
		if out, err := l.Apply("", hostileEndpointToHostDrop); err != nil {
			t.Fatalf("apply endpointToHostAction Drop: %v\n%s", err, out)
		}
		if err := l.WaitNoPing(wa.NS, hostAddr.String(), trafficTimeout); err != nil {
			t.Fatalf("wa still reaches host-a %s with endpointToHostAction Drop: %v", hostAddr, err)
		}
		c := fromWA("ttl1-to-host", fmt.Sprintf("ICMP echo TTL 1 %s > %s (host-a, endpointToHostAction Drop)", wa.IP, hostAddr),
			lab.ICMPEchoFrame(eth, lab.IPv4Header{Src: wa.IP, Dst: hostAddr, ID: 0x5301, TTL: 1}, 0x5301, 1, payload),
			reasonPolicy,
			watch{what: "host-a answers wa", ns: wa.NS, iface: wa.InstanceIface(),
				filter: "icmp and icmp[icmptype] = icmp-echoreply and icmp[4:2] = 0x5301"})
		c.run(t, l)
	})
	stop()
}
