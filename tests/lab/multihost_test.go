package lab

import (
	"encoding/binary"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/calyxnet/calyx/model"
)

// TestMultiHostUnderlay builds the three-host topology without agents and
// checks the underlay: hosts on one segment reach each other directly,
// hosts on different segments through the router, the router knows only its
// connected subnets, workload MTUs fit the mode, and Close removes it all.
func TestMultiHostUnderlay(t *testing.T) {
	RequireTools(t, "ip", "ping", "sysctl")
	l := newTestLab(t, Options{})
	m, err := BuildMultiHost(l, ModeVXLAN)
	if err != nil {
		t.Fatal(err)
	}

	names, err := namespacesWithPrefix(l.Prefix)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, n := range []string{"fabric", "host-a", "host-b", "host-c", "remote", "router", "wa", "wb", "wc"} {
		want = append(want, l.NSName(n))
	}
	if !slices.Equal(names, want) {
		t.Errorf("namespaces = %v, want %v", names, want)
	}

	// The gateways moved from the bridges to the router's legs.
	r := m.Router
	if len(r.Legs) != 2 {
		t.Fatalf("router has %d legs, want 2", len(r.Legs))
	}
	for _, leg := range r.Legs {
		for _, name := range []string{leg.Iface, leg.Uplink} {
			if !strings.HasPrefix(name, l.Prefix) || len(name) > 15 {
				t.Errorf("leg interface name %q: want the lab prefix and at most 15 characters", name)
			}
		}
		s := leg.Segment
		if s.Router != r.Name || leg.Address != s.Gateway {
			t.Errorf("segment %s: router %q, leg address %s, gateway %s", s.Name, s.Router, leg.Address, s.Gateway)
		}
		if a := mustExec(t, l, "", "ip", "-n", s.NS, "-o", "-4", "addr", "show", "dev", s.Bridge); strings.TrimSpace(a) != "" {
			t.Errorf("bridge of %s still has an address: %s", s.Name, a)
		}
		a := mustExec(t, l, "", "ip", "-n", r.NS, "-o", "-4", "addr", "show", "dev", leg.Iface)
		if !strings.Contains(a, leg.Address.String()) {
			t.Errorf("router leg %s lacks %s: %s", leg.Iface, leg.Address, a)
		}
		master := mustExec(t, l, "", "ip", "-n", s.NS, "-o", "link", "show", leg.Uplink)
		if !strings.Contains(master, "master "+s.Bridge) {
			t.Errorf("%s is not a port of %s: %s", leg.Uplink, s.Bridge, master)
		}
	}
	if fwd := strings.TrimSpace(mustExec(t, l, r.NS, "sysctl", "-n", "net.ipv4.ip_forward")); fwd != "1" {
		t.Errorf("router ip_forward = %q, want 1", fwd)
	}

	// Connected routes only: nothing for the workload pool, no default.
	routes := strings.Split(strings.TrimSpace(mustExec(t, l, "", "ip", "-n", r.NS, "-4", "route", "show")), "\n")
	if len(routes) != 2 {
		t.Errorf("router routes: want the two connected subnets only, got:\n%s", strings.Join(routes, "\n"))
	}
	for _, rt := range routes {
		if !strings.Contains(rt, "proto kernel scope link") {
			t.Errorf("router route %q is not a connected route", rt)
		}
	}
	if res, err := l.Exec("", "ip", "-n", r.NS, "route", "get", m.WC.IP.String()); err == nil {
		t.Errorf("router has a route to %s: %s", m.WC.IP, res.Stdout)
	}
	if b := BlockRoutes(strings.Join(routes, "\n"), netip.MustParsePrefix(WorkloadPool)); len(b) > 0 {
		t.Errorf("router routes for the pool: %v", b)
	}

	// Underlay reachability, by underlay address.
	ha, hb, hc := m.HostA, m.HostB, m.HostC
	for _, p := range []struct {
		src, dst *Host
		ttl      string // one hop fewer through the router
	}{
		{ha, hb, "ttl=64"}, {hb, ha, "ttl=64"},
		{ha, hc, "ttl=63"}, {hc, ha, "ttl=63"}, {hc, hb, "ttl=63"},
	} {
		st, err := l.Ping(p.src.NS, p.dst.Underlay.Addr().String(), 2)
		if err != nil {
			t.Errorf("%s -> %s: %v", p.src.Name, p.dst.Name, err)
			continue
		}
		if !strings.Contains(st.Output, p.ttl) {
			t.Errorf("%s -> %s: want %s in\n%s", p.src.Name, p.dst.Name, p.ttl, st.Output)
		}
	}
	if got := mustExec(t, l, "", "ip", "-n", ha.NS, "route", "get", hc.Underlay.Addr().String()); !strings.Contains(got, "via "+m.Fabric.Gateway.Addr().String()) {
		t.Errorf("host-a reaches host-c not via the router: %s", got)
	}
	if got := mustExec(t, l, "", "ip", "-n", ha.NS, "route", "get", hb.Underlay.Addr().String()); strings.Contains(got, " via ") {
		t.Errorf("host-a reaches host-b through a gateway: %s", got)
	}
	// Without agents workload traffic has nowhere to go: the router
	// drops it rather than knowing a route.
	if _, err := l.Ping(m.WA.NS, m.WC.IP.String(), 1); err == nil {
		t.Error("wa reached wc without any agent")
	}

	// Workloads: placement, addresses and MTU on both veth ends.
	for _, c := range []struct {
		w    *Workload
		host *Host
		ip   string
	}{{m.WA, ha, "10.65.1.2"}, {m.WB, hb, "10.65.2.2"}, {m.WC, hc, "10.65.3.2"}} {
		if c.w.Host != c.host.Name || c.w.IP.String() != c.ip || c.w.MTU != 1450 {
			t.Errorf("workload %s: host %s ip %s mtu %d", c.w.Name, c.w.Host, c.w.IP, c.w.MTU)
		}
		if eth := mustExec(t, l, "", "ip", "-n", c.w.NS, "-o", "link", "show", "eth0"); !strings.Contains(eth, "mtu 1450 ") {
			t.Errorf("%s eth0: want mtu 1450: %s", c.w.Name, eth)
		}
		if hs := mustExec(t, l, "", "ip", "-n", c.host.NS, "-o", "link", "show", c.w.HostIface); !strings.Contains(hs, "mtu 1450 ") {
			t.Errorf("%s host side: want mtu 1450: %s", c.w.Name, hs)
		}
	}
	// The override used for fragmentation-needed tests.
	big, err := m.AddWorkload("host-a", "wbig", "10.65.1.3", 1500)
	if err != nil {
		t.Fatal(err)
	}
	if eth := mustExec(t, l, "", "ip", "-n", big.NS, "-o", "link", "show", "eth0"); !strings.Contains(eth, "mtu 1500 ") {
		t.Errorf("wbig eth0: want mtu 1500: %s", eth)
	}
	if err := l.SetWorkloadMTU(big, 1400); err != nil {
		t.Fatal(err)
	}
	if hs := mustExec(t, l, "", "ip", "-n", ha.NS, "-o", "link", "show", big.HostIface); !strings.Contains(hs, "mtu 1400 ") || big.MTU != 1400 {
		t.Errorf("wbig host side after SetWorkloadMTU(1400): %s (MTU field %d)", hs, big.MTU)
	}
	if model := m.ModelYAML(); !strings.Contains(model, "name: wbig") || strings.Count(model, "kind: Node") != 3 {
		t.Errorf("model lacks the added workload or has the wrong nodes:\n%s", model)
	}

	if err := l.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	assertGone(t, l.Prefix)
}

// TestRouterAfterHosts adds a router to a segment whose hosts already talk
// to the gateway on the bridge: they must reach the router's leg at once,
// not after their neighbour entry for the gateway expires.
func TestRouterAfterHosts(t *testing.T) {
	RequireTools(t, "ip", "ping", "sysctl")
	l := newTestLab(t, Options{})
	ha, err := l.AddHost("host-a", "10.30.0.11/24")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Ping(ha.NS, "10.30.0.1", 1); err != nil {
		t.Fatalf("host-a -> gateway on the bridge: %v", err)
	}
	if _, err := l.AddSegment("remote", RemoteUnderlay); err != nil {
		t.Fatal(err)
	}
	hc, err := l.AddHost("host-c", "10.30.1.13/24")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		segs []string
	}{
		{"r1", nil},
		{"r1", []string{"fabric", "nowhere"}},
		{"r1", []string{"fabric", "fabric"}},
		{"host-a", []string{"fabric", "remote"}},
	} {
		if _, err := l.AddRouter(c.name, c.segs...); err == nil {
			t.Errorf("AddRouter(%q, %v) succeeded", c.name, c.segs)
		}
	}
	r, err := l.AddRouter("router", "fabric", "remote")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.AddRouter("router2", "remote"); err == nil {
		t.Error("a second router took segment remote")
	}
	if got, err := l.Router("router"); err != nil || got != r {
		t.Errorf("Router(router) = %v, %v", got, err)
	}
	if leg, err := r.Leg("remote"); err != nil || leg.Address.String() != RemoteUnderlay {
		t.Errorf("Leg(remote) = %+v, %v", leg, err)
	}
	// One attempt each: a stale neighbour entry would fail these.
	if _, err := l.Ping(ha.NS, "10.30.0.1", 1); err != nil {
		t.Errorf("host-a -> gateway on the router: %v", err)
	}
	if _, err := l.Ping(ha.NS, hc.Underlay.Addr().String(), 1); err != nil {
		t.Errorf("host-a -> host-c: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	assertGone(t, l.Prefix)
}

// TestCaptureUnderlay captures real plain, VXLAN and IP-in-IP packets on
// host-a's underlay and checks the classifier reads this machine's tcpdump
// correctly. The kernel has VXLAN devices but no ipip module, so the
// IP-in-IP packet is written to a raw socket of protocol 4.
func TestCaptureUnderlay(t *testing.T) {
	RequireTools(t, "ip", "ping", "sysctl", "tcpdump")
	l := newTestLab(t, Options{})
	m, err := BuildMultiHost(l, ModeVXLAN)
	if err != nil {
		t.Fatal(err)
	}
	ha, hb, hc := m.HostA, m.HostB, m.HostC
	vx := l.Prefix + "vx"
	for _, e := range []struct {
		h, peer *Host
		addr    string
	}{{ha, hc, "10.31.255.1/30"}, {hc, ha, "10.31.255.2/30"}} {
		for _, args := range [][]string{
			{"link", "add", vx, "type", "vxlan", "id", "42", "local", e.h.Underlay.Addr().String(),
				"remote", e.peer.Underlay.Addr().String(), "dstport", "4789", "dev", e.h.UnderlayIface},
			{"addr", "add", e.addr, "dev", vx},
			{"link", "set", vx, "up"},
		} {
			if err := l.ip(e.h.NS, args...); err != nil {
				t.Fatal(err)
			}
		}
	}

	c, err := l.StartCapture(ha.NS, ha.UnderlayIface, "ip")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Ping(ha.NS, hb.Underlay.Addr().String(), 1); err != nil {
		t.Error(err)
	}
	if err := l.WaitPing(ha.NS, "10.31.255.2", 10*time.Second); err != nil {
		t.Errorf("ping over the kernel VXLAN device: %v", err)
	}
	inner := ipv4Packet(m.WA.IP, m.WC.IP, 1, icmpEcho(0x1234, 1, []byte("calyx-lab")))
	if err := InNS(ha.NS, func() error {
		conn, err := net.ListenPacket("ip4:4", ha.Underlay.Addr().String())
		if err != nil {
			return err
		}
		defer conn.Close()
		_, err = conn.WriteTo(inner, &net.IPAddr{IP: hc.Underlay.Addr().AsSlice()})
		return err
	}); err != nil {
		t.Fatalf("send IP-in-IP: %v", err)
	}
	// host-c has no ipip module and answers "protocol 4 unreachable".
	time.Sleep(200 * time.Millisecond)
	pkts, err := c.Stop()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("captured:\n%s", strings.Join(pkts, "\n"))

	if err := CheckEncap(PacketsMentioning(pkts, hb.Underlay.Addr()), EncapNone); err != nil {
		t.Errorf("host-a <-> host-b: %v", err)
	}
	if err := CheckEncap(PacketsMentioning(pkts, netip.MustParseAddr("10.31.255.2")), EncapVXLAN); err != nil {
		t.Errorf("over the VXLAN device: %v", err)
	}
	ipip, _, _ := CaptureShows(PacketsMentioning(pkts, m.WC.IP))
	if ipip != 1 {
		t.Errorf("IP-in-IP packets mentioning %s: %d, want 1", m.WC.IP, ipip)
	}
	var unreach int
	for _, p := range pkts {
		if strings.Contains(p, "protocol 4 unreachable") {
			unreach++
			if ClassifyPacket(p) != PacketPlain {
				t.Errorf("ICMP error quoting IP-in-IP classified %q: %s", ClassifyPacket(p), p)
			}
		}
	}
	if unreach == 0 {
		t.Error("no protocol 4 unreachable from host-c")
	}
	// Stop again returns the same packets.
	again, err := c.Stop()
	if err != nil || len(again) != len(pkts) {
		t.Errorf("second Stop: %d packets, %v", len(again), err)
	}

	if _, err := l.StartCapture(ha.NS, "nosuchif", ""); err == nil {
		t.Error("capture on a missing interface started")
	}
}

// ipv4Packet builds an IPv4 packet with a valid header checksum.
func ipv4Packet(src, dst netip.Addr, proto byte, payload []byte) []byte {
	h := make([]byte, 20, 20+len(payload))
	h[0] = 0x45
	binary.BigEndian.PutUint16(h[2:], uint16(20+len(payload)))
	binary.BigEndian.PutUint16(h[6:], 0x4000) // DF
	h[8] = 64
	h[9] = proto
	copy(h[12:16], src.AsSlice())
	copy(h[16:20], dst.AsSlice())
	binary.BigEndian.PutUint16(h[10:], inetChecksum(h))
	return append(h, payload...)
}

// icmpEcho builds an ICMP echo request.
func icmpEcho(id, seq uint16, data []byte) []byte {
	b := make([]byte, 8, 8+len(data))
	b[0] = 8
	binary.BigEndian.PutUint16(b[4:], id)
	binary.BigEndian.PutUint16(b[6:], seq)
	b = append(b, data...)
	binary.BigEndian.PutUint16(b[2:], inetChecksum(b))
	return b
}

func inetChecksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// TestNodeStatusAndRoutes decodes the multi-host JSON of calyxctl (from the
// fake calyxctl) through the lab's helpers.
func TestNodeStatusAndRoutes(t *testing.T) {
	Require(t)
	bin := buildFakeBin(t)
	l := newTestLab(t, Options{BinDir: bin})
	h, err := l.AddHost("host-a", "10.30.0.11/24")
	if err != nil {
		t.Fatal(err)
	}
	st, err := l.NodeStatus(h.Name)
	if err != nil {
		t.Fatal(err)
	}
	want := NodeStatus{Node: "host-a", Underlay: "eth0", Ifindex: 2, Address: "10.30.0.11",
		UnderlayMTU: 1500, WorkloadMTU: 1450, Encap: "none,vxlan", Peers: 2, VXLANPort: 4789, VXLANVNI: 4096}
	if st != want {
		t.Errorf("node status = %+v, want %+v", st, want)
	}
	routes, err := l.Routes(h.Name)
	if err != nil {
		t.Fatal(err)
	}
	r, ok := RouteFor(routes, netip.MustParseAddr("10.65.3.2"))
	if !ok || r.Node != "host-c" || r.Encap != EncapVXLAN || r.NextHop != "10.30.1.13" || r.Type != "remote-workload" {
		t.Errorf("route for 10.65.3.2 = %+v (found %v)", r, ok)
	}
	if r, ok := RouteFor(routes, netip.MustParseAddr("10.65.2.7")); !ok || r.CIDR != "10.65.2.0/26" || r.Encap != EncapNone {
		t.Errorf("route for 10.65.2.7 = %+v (found %v)", r, ok)
	}
	if r, ok := RouteFor(routes, netip.MustParseAddr("10.65.1.2")); !ok || r.Type != "local-workload" || r.MAC != "02:00:00:00:00:01" || r.Interface != "cx0001w1" {
		t.Errorf("route for 10.65.1.2 = %+v (found %v)", r, ok)
	}
	if _, ok := RouteFor(routes, netip.MustParseAddr("10.99.0.1")); ok {
		t.Error("route found for an address no row covers")
	}
}

func TestEncapModes(t *testing.T) {
	for _, c := range []struct {
		mode        EncapMode
		ipip, vxlan string
		encap       string
		mtu         int
		sameSubnet  string // host-a -> host-b
		crossSubnet string // host-a -> host-c
	}{
		{ModeIPIP, "Always", "Never", "ipip", 1480, "ipip", "ipip"},
		{ModeVXLAN, "Never", "Always", "vxlan", 1450, "vxlan", "vxlan"},
		{ModeIPIPCrossSubnet, "CrossSubnet", "Never", "ipip", 1480, "none", "ipip"},
		{ModeVXLANCrossSubnet, "Never", "CrossSubnet", "vxlan", 1450, "none", "vxlan"},
		{ModeNever, "Never", "Never", "none", 1500, "none", "none"},
	} {
		m, err := ParseEncapMode(string(c.mode))
		if err != nil || m != c.mode {
			t.Errorf("ParseEncapMode(%q) = %q, %v", c.mode, m, err)
		}
		ipip, vxlan := c.mode.PoolModes()
		if ipip != c.ipip || vxlan != c.vxlan || c.mode.Encap() != c.encap || c.mode.WorkloadMTU() != c.mtu {
			t.Errorf("%s: modes %s/%s encap %s mtu %d", c.mode, ipip, vxlan, c.mode.Encap(), c.mode.WorkloadMTU())
		}
		a, b, cc := netip.MustParsePrefix("10.30.0.11/24"), netip.MustParsePrefix("10.30.0.12/24"), netip.MustParsePrefix("10.30.1.13/24")
		if got := c.mode.Expect(a, b); got != c.sameSubnet {
			t.Errorf("%s: a -> b %s, want %s", c.mode, got, c.sameSubnet)
		}
		if got := c.mode.Expect(a, cc); got != c.crossSubnet {
			t.Errorf("%s: a -> c %s, want %s", c.mode, got, c.crossSubnet)
		}
		if got := c.mode.Expect(cc, b); got != c.crossSubnet {
			t.Errorf("%s: c -> b %s, want %s", c.mode, got, c.crossSubnet)
		}
	}
	if len(EncapModes()) != 5 {
		t.Errorf("EncapModes() = %v", EncapModes())
	}
	for _, bad := range []string{"", "IPIP", "crosssubnet", "vxlan-always"} {
		if _, err := ParseEncapMode(bad); err == nil {
			t.Errorf("ParseEncapMode(%q) accepted", bad)
		}
	}
}

func TestPoolModeYAML(t *testing.T) {
	got := PoolModeYAML("p1", "10.65.0.0/16", "CrossSubnet", "Never")
	want := `apiVersion: calyx.io/v1
kind: IPPool
metadata:
  name: p1
spec:
  cidr: 10.65.0.0/16
  ipipMode: CrossSubnet
  vxlanMode: Never
`
	if got != want {
		t.Errorf("PoolModeYAML:\n%s\nwant:\n%s", got, want)
	}
	res, err := model.Decode(strings.NewReader(got))
	if err != nil {
		t.Fatalf("model rejects the pool: %v", err)
	}
	p, ok := res[0].(*model.IPPool)
	if !ok || p.Spec.IPIPMode != model.EncapCrossSubnet || p.Spec.VXLANMode != model.EncapNever || p.Spec.CIDR.String() != "10.65.0.0/16" {
		t.Errorf("decoded %#v", res[0])
	}
}

// TestMultiHostModelYAML renders the topology's model for every mode and
// checks it with the model's own decoder, as calyxctl apply would.
func TestMultiHostModelYAML(t *testing.T) {
	l := &Lab{Prefix: "cx0001"}
	var hosts []*Host
	for _, h := range []struct{ name, addr string }{{"host-a", "10.30.0.11/24"}, {"host-b", "10.30.0.12/24"}, {"host-c", "10.30.1.13/24"}} {
		hosts = append(hosts, &Host{Name: h.name, Underlay: netip.MustParsePrefix(h.addr)})
	}
	var ws []*Workload
	for i, w := range []struct{ name, host, ip string }{{"wa", "host-a", "10.65.1.2"}, {"wb", "host-b", "10.65.2.2"}, {"wc", "host-c", "10.65.3.2"}} {
		ws = append(ws, &Workload{Name: w.name, Host: w.host, IP: netip.MustParseAddr(w.ip), MAC: l.derivedMAC(i + 1), HostIface: "cx0001w" + string(rune('1'+i))})
	}
	for _, mode := range EncapModes() {
		y := MultiHostModelYAML(mode, hosts, ws)
		if n := strings.Count(y, "\n---\n"); n != 6 {
			t.Errorf("%s: %d separators, want 6:\n%s", mode, n, y)
		}
		res, err := model.Decode(strings.NewReader(y))
		if err != nil {
			t.Fatalf("%s: model rejects the rendering: %v\n%s", mode, err, y)
		}
		var pools, nodes, eps int
		for _, r := range res {
			switch v := r.(type) {
			case *model.IPPool:
				pools++
				ipip, vxlan := mode.PoolModes()
				if v.Metadata.Name != MultiPool || v.Spec.CIDR.String() != WorkloadPool ||
					string(v.Spec.IPIPMode) != ipip || string(v.Spec.VXLANMode) != vxlan {
					t.Errorf("%s: pool %+v", mode, v)
				}
			case *model.Node:
				nodes++
				if v.Metadata.Name == "host-c" && v.Spec.IPv4Address.String() != "10.30.1.13/24" {
					t.Errorf("%s: host-c address %s", mode, v.Spec.IPv4Address)
				}
			case *model.WorkloadEndpoint:
				eps++
				if v.Metadata.Name == "wc" && (v.Spec.Node != "host-c" || v.Spec.IPNetworks[0].String() != "10.65.3.2/32") {
					t.Errorf("%s: wc %+v", mode, v.Spec)
				}
			}
		}
		if pools != 1 || nodes != 3 || eps != 3 {
			t.Errorf("%s: %d pools, %d nodes, %d endpoints", mode, pools, nodes, eps)
		}
	}
}

// tcpdumpSample is what "tcpdump -nn -l --immediate-mode -i eth0 ip"
// (tcpdump 4.99.3, libpcap 1.10.3) printed in host-a during
// TestCaptureUnderlay: a plain ping to host-b, pings through a kernel VXLAN
// device to host-c (UDP 4789; tcpdump prints the inner frame on a line of
// its own), an IP-in-IP packet written to a raw socket, host-c's ICMP error
// for it and IGMP chatter; plus UDP to another port and its ICMP error from
// an earlier run.
const tcpdumpSample = `16:57:40.704335 IP 10.30.0.11 > 10.30.0.12: ICMP echo request, id 14389, seq 1, length 64
16:57:40.704376 IP 10.30.0.12 > 10.30.0.11: ICMP echo reply, id 14389, seq 1, length 64
16:57:40.709019 IP 10.30.0.11.57933 > 10.30.1.13.4789: VXLAN, flags [I] (0x08), vni 42
ARP, Request who-has 10.31.255.2 tell 10.31.255.1, length 28
16:57:40.709110 IP 10.30.1.13.57933 > 10.30.0.11.4789: VXLAN, flags [I] (0x08), vni 42
ARP, Reply 10.31.255.2 is-at de:9c:12:c4:11:f4, length 28
16:57:40.709121 IP 10.30.0.11.57076 > 10.30.1.13.4789: VXLAN, flags [I] (0x08), vni 42
IP 10.31.255.1 > 10.31.255.2: ICMP echo request, id 14390, seq 1, length 64
16:57:40.709149 IP 10.30.1.13.57076 > 10.30.0.11.4789: VXLAN, flags [I] (0x08), vni 42
IP 10.31.255.2 > 10.31.255.1: ICMP echo reply, id 14390, seq 1, length 64
16:57:40.710099 IP 10.30.0.11 > 10.30.1.13: IP 10.65.1.2 > 10.65.3.2: ICMP echo request, id 4660, seq 1, length 17
16:57:40.710166 IP 10.30.1.13 > 10.30.0.11: ICMP 10.30.1.13 protocol 4 unreachable, length 65
16:57:40.725399 IP 10.30.1.13.42641 > 10.30.0.11.4789: VXLAN, flags [I] (0x08), vni 42
IP6 :: > ff02::1:ffc4:11f4: ICMP6, neighbor solicitation, who has fe80::dc9c:12ff:fec4:11f4, length 32
16:57:40.737311 IP 0.0.0.0 > 224.0.0.22: igmp v3 report, 1 group record(s)
16:54:31.950306 IP 10.99.0.1.41986 > 10.99.0.2.5555: UDP, length 5
16:54:31.950312 IP 10.99.0.2 > 10.99.0.1: ICMP 10.99.0.2 udp port 5555 unreachable, length 41
16:54:30.797383 IP6 :: > ff02::16: HBH ICMP6, multicast listener report v2, 1 group record(s), length 28
16:54:32.100000 IP 10.30.0.11 > 10.30.0.12: IP6 fd00:65:1::2 > fd00:65:1::3: ICMP6, echo request, id 7, seq 1, length 64
16:54:33.100000 ARP, Request who-has 10.30.0.12 tell 10.30.0.11, length 28
`

func TestParseTcpdumpAndClassify(t *testing.T) {
	pkts := ParseTcpdump(tcpdumpSample)
	want := []string{
		PacketPlain, PacketPlain,
		PacketVXLAN, PacketVXLAN, PacketVXLAN, PacketVXLAN,
		PacketIPIP, PacketPlain,
		PacketVXLAN, PacketPlain,
		PacketPlain, PacketPlain,
		PacketPlain, // IPv6 as it is
		PacketIPIP,  // 6in4
		"",          // ARP
	}
	if len(pkts) != len(want) {
		t.Fatalf("ParseTcpdump: %d packets, want %d:\n%s", len(pkts), len(want), strings.Join(pkts, "\n"))
	}
	for i, p := range pkts {
		if got := ClassifyPacket(p); got != want[i] {
			t.Errorf("packet %d classified %q, want %q: %s", i, got, want[i], p)
		}
	}
	if !strings.HasSuffix(pkts[4], "vni 42 | IP 10.31.255.1 > 10.31.255.2: ICMP echo request, id 14390, seq 1, length 64") {
		t.Errorf("VXLAN packet not joined with its inner frame: %s", pkts[4])
	}
	if ipip, vxlan, plain := CaptureShows(pkts); ipip != 2 || vxlan != 5 || plain != 7 {
		t.Errorf("CaptureShows = ipip %d, vxlan %d, plain %d; want 2, 5, 7", ipip, vxlan, plain)
	}

	// Lines without timestamps (tcpdump -t) and older spellings.
	for line, want := range map[string]string{
		"IP 10.30.0.11 > 10.30.1.13: IP 10.65.1.2.40000 > 10.65.3.2.5201: Flags [S], seq 1, win 64240, length 0":    PacketIPIP,
		"IP 10.30.0.11 > 10.30.1.13: ipip-proto-4":                                                                  PacketIPIP,
		"IP 10.30.0.11 > 10.30.1.13: ip-proto-4 84":                                                                 PacketIPIP,
		"IP 10.30.0.11.1 > 10.30.1.13.4789: VXLAN, flags [I] (0x08), vni 4096 | IP 10.65.1.2 > 10.65.3.2: ICMP":     PacketVXLAN,
		"IP 10.65.1.2 > 10.65.2.2: ICMP echo request, id 1, seq 1, length 64":                                       PacketPlain,
		"IP6 fe80::1 > ff02::2: ICMP6, router solicitation, length 16":                                              PacketPlain,
		"IP 10.30.0.11 > 10.30.1.13: ip-proto-41 104":                                                               PacketIPIP,
		"IP6 2001:db8::11 > 2001:db8::12: IP6 fd00:65::2 > fd00:65::3: ICMP6, echo request, id 7, seq 1, length 64": PacketIPIP,
		"IP6 2001:db8::11.40000 > 2001:db8::12.4789: VXLAN, flags [I] (0x08), vni 1 | IP6 fd00:65::2 > fd00:65::3":  PacketVXLAN,
		"ARP, Request who-has 10.30.0.1 tell 10.30.0.11, length 28":                                                 "",
		"": "",
	} {
		if got := ClassifyPacket(line); got != want {
			t.Errorf("ClassifyPacket(%q) = %q, want %q", line, got, want)
		}
	}
	if got := ParseTcpdump("continuation without a packet\n\n"); len(got) != 1 {
		t.Errorf("leading continuation: %q", got)
	}
}

func TestPacketsMentioning(t *testing.T) {
	lines := []string{
		"12:00:00.000001 IP 10.65.3.2 > 10.65.1.2: ICMP echo reply, id 1, seq 1, length 64",
		"12:00:00.000002 IP 10.65.3.25 > 10.65.1.2: ICMP echo reply, id 1, seq 1, length 64",
		"12:00:00.000003 IP 10.65.1.2.40000 > 10.65.3.2.5201: Flags [S], seq 1, length 0",
		"12:00:00.000004 IP 110.65.3.2 > 10.65.1.2: ICMP echo reply, id 1, seq 1, length 64",
		"12:00:00.000005 IP 10.30.0.11 > 10.30.1.13: IP 10.65.1.2 > 10.65.3.2: ICMP echo request, id 1, seq 1, length 64",
		"12:00:00.000006 ARP, Request who-has 10.65.3.2 tell 10.65.3.20, length 28",
	}
	got := PacketsMentioning(lines, netip.MustParseAddr("10.65.3.2"))
	want := []string{lines[0], lines[2], lines[4], lines[5]}
	if !slices.Equal(got, want) {
		t.Errorf("PacketsMentioning =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestCheckEncap(t *testing.T) {
	plain := "IP 10.65.1.2 > 10.65.2.2: ICMP echo request, id 1, seq 1, length 64"
	vxlan := "IP 10.30.0.11.1234 > 10.30.1.13.4789: VXLAN, flags [I] (0x08), vni 1 | IP 10.65.1.2 > 10.65.3.2: ICMP echo request, id 1, seq 1, length 64"
	ipip := "IP 10.30.0.11 > 10.30.1.13: IP 10.65.1.2 > 10.65.3.2: ICMP echo request, id 1, seq 1, length 64"
	arp := "ARP, Request who-has 10.30.0.1 tell 10.30.0.11, length 28"
	for _, c := range []struct {
		pkts []string
		want string
		ok   bool
	}{
		{[]string{plain, plain, arp}, EncapNone, true},
		{[]string{vxlan, vxlan}, EncapVXLAN, true},
		{[]string{ipip}, EncapIPIP, true},
		{[]string{vxlan, plain}, EncapVXLAN, false},
		{[]string{ipip}, EncapVXLAN, false},
		{[]string{plain}, EncapIPIP, false},
		{[]string{arp}, EncapNone, false},
		{nil, EncapNone, false},
		{[]string{plain}, "gre", false},
	} {
		if err := CheckEncap(c.pkts, c.want); (err == nil) != c.ok {
			t.Errorf("CheckEncap(%q, %s) = %v, want ok %v", c.pkts, c.want, err, c.ok)
		}
	}
}

func TestBlockRoutes(t *testing.T) {
	out := `default via 10.30.0.1 dev eth0
10.30.0.0/24 dev eth0 proto kernel scope link src 10.30.0.11
10.65.1.2 dev cx1234w1 proto 202 scope link
10.65.3.0/26 via 10.30.0.1 dev eth0 proto 202 onlink
unreachable 10.65.0.0/16 proto 202
10.0.0.0/8 via 10.30.0.1 dev eth0
10.66.0.0/16 via 10.30.0.1 dev eth0
10.65.1.3/32 dev cx1234w2 scope link
`
	got := BlockRoutes(out, netip.MustParsePrefix(WorkloadPool))
	want := []string{
		"10.65.3.0/26 via 10.30.0.1 dev eth0 proto 202 onlink",
		"unreachable 10.65.0.0/16 proto 202",
	}
	if !slices.Equal(got, want) {
		t.Errorf("BlockRoutes =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
