package e2e

// Issue 18 ("IPv6 everywhere"): every trust boundary has a hostile test
// over IPv6 too. TestHostileIPv6 is TestHostileUnderlay's counterpart on an
// IPv6 underlay (same cases, same helpers: hostileCase, watch, healthyPing)
// and TestAntiSpoofing's for IPv6 workload sources, on a veth and on a VM.

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/calyxnet/calyx/tests/lab"
)

// icmp6ID is a capture filter for ICMPv6 echo requests with id (a packet
// without extension headers, as the builders make them).
func icmp6ID(id uint16) string {
	return fmt.Sprintf("icmp6 and ip6[40] = 128 and ip6[44:2] = %#x", id)
}

// TestHostileIPv6: frames a stranger on the fabric segment (the gateway,
// which has an IPv6 address there but is no node) sends to host-a's MAC
// over the IPv6 underlay: sources that are host-a's own (wa's address, its
// IPv6 underlay address), IPv6-in-IPv6 from the stranger's address,
// IPv6-in-IPv6 forged from host-b's address with a source host-b may not
// send (wc's, on host-c), VXLAN over IPv6 with another VNI, and a
// v4-mapped source; none of it reaches wa, each is counted under its drop
// reason on host-a's underlay interface. What host-b may send (wb's source
// in IPv6-in-IPv6) is delivered. A ping6 wb -> wa runs throughout and must
// lose nothing. Then workloads spoofing IPv6 sources: wa and wb (a veth and
// a VM under CALYX_LAB_WORKLOAD=mixed) each send from an address that is
// not theirs, which is dropped at their host side, while their own address
// still works.
func TestHostileIPv6(t *testing.T) {
	l := newLab(t)
	lab.RequireTools(t, "tcpdump")
	m, err := lab.BuildMultiHostWith(l, lab.MultiHostOptions{Mode: lab.ModeVXLAN, IPv6Underlay: true})
	if err != nil {
		t.Fatalf("build three hosts: %v", err)
	}
	ha, wa, wb, wc := m.HostA, m.WA, m.WB, m.WC
	for i, w := range m.Workloads() {
		if err := l.AddIPv6(w, fmt.Sprintf("fd00:65:1::%d", i+2)); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.StartAgents(); err != nil {
		t.Fatalf("start agents: %v", err)
	}
	const pool6 = "workloads6"
	ipip, vxlan := lab.ModeVXLAN.PoolModes()
	if out, err := l.Apply("", lab.JoinYAML(m.ModelYAML(), lab.PoolModeYAML(pool6, "fd00:65:1::/64", ipip, vxlan))); err != nil {
		t.Fatalf("apply model: %v\n%s", err, out)
	}
	if err := m.WaitLinks(attachTimeout); err != nil {
		t.Fatalf("programs not attached: %v", err)
	}
	g, err := m.AddGateway()
	if err != nil {
		t.Fatalf("add gateway: %v", err)
	}
	if !g.Address6.IsValid() || !ha.Underlay6.IsValid() || !m.HostB.Underlay6.IsValid() {
		t.Fatalf("no IPv6 underlay: gateway %v, host-a %v, host-b %v", g.Address6, ha.Underlay6, m.HostB.Underlay6)
	}
	a6, b6, gw6 := ha.Underlay6.Addr(), m.HostB.Underlay6.Addr(), g.Address6.Addr()

	gwMAC, aMAC, eth, port, vni := injectInto(t, l, g, ha)
	t.Logf("injecting from %s %s (%s, %s) to %s %s (%s, %s); VXLAN port %d, VNI %d; wa is a %s, wb a %s",
		g.NS, g.Iface, gwMAC, gw6, ha.Name, ha.UnderlayIface, aMAC, a6, port, vni, wa.Kind, wb.Kind)

	if err := l.WaitPing(wb.NS, wa.IPv6.String(), trafficTimeout); err != nil {
		t.Fatalf("wb -> wa over IPv6 before the hostile traffic: %v", err)
	}
	stop := healthyPing(t, l, "wb -> wa (IPv6)", wb.NS, wa.IPv6.String())
	defer stop()

	payload := []byte("calyx issue 18: hostile IPv6")
	// Hop limit 64, as a host sends: 255 (the builders' default, for
	// neighbour discovery) would be as good, but nothing here is ND.
	hdr := func(src, dst netip.Addr) lab.IPv6Header { return lab.IPv6Header{Src: src, Dst: dst, HopLimit: 64} }
	waICMP := func(id uint16) watch {
		return watch{what: "wa receives it", ns: wa.NS, iface: wa.InstanceIface(), filter: icmp6ID(id)}
	}
	echo6 := func(src netip.Addr, id uint16) []byte {
		return lab.ICMPv6EchoPacket(hdr(src, wa.IPv6), id, 1, payload)
	}
	under := func(name, what string, frame []byte, reason string, watches ...watch) hostileCase {
		return hostileCase{name: name, what: what, from: g.NS, fromIface: g.Iface, frame: frame,
			host: ha.Name, iface: ha.UnderlayIface, reason: reason, watches: watches}
	}
	mapped := netip.AddrFrom16(wa.IP.As16())

	cases := []hostileCase{
		under("local-workload-source", fmt.Sprintf("ICMPv6 echo %s (wa itself) > wa from the underlay", wa.IPv6),
			lab.ICMPv6EchoFrame(eth, hdr(wa.IPv6, wa.IPv6), 0x6a01, 1, payload),
			reasonUnderlaySpoof, waICMP(0x6a01)),
		under("own-underlay-address-source", fmt.Sprintf("ICMPv6 echo %s (host-a's own IPv6 underlay address) > wa %s", a6, wa.IPv6),
			lab.ICMPv6EchoFrame(eth, hdr(a6, wa.IPv6), 0x6a02, 1, payload),
			reasonUnderlaySpoof, waICMP(0x6a02)),
		under("ip6ip6-stranger-source", fmt.Sprintf("IPv6-in-IPv6 %s (the gateway, no node) > %s, inner ICMPv6 %s (wb) > wa", gw6, a6, wb.IPv6),
			lab.IP6IP6Frame(eth, hdr(gw6, a6), echo6(wb.IPv6, 0x6a03)),
			lab.ReasonDropTunnelSrc, waICMP(0x6a03)),
		under("ip6ip6-inner-src-remote-workload", fmt.Sprintf("IPv6-in-IPv6 %s (host-b) > %s, inner ICMPv6 %s (wc, on host-c) > wa", b6, a6, wc.IPv6),
			lab.IP6IP6Frame(eth, hdr(b6, a6), echo6(wc.IPv6, 0x6a04)),
			reasonTunnelInnerSrc, waICMP(0x6a04)),
		under("vxlan6-wrong-vni", fmt.Sprintf("VXLAN over IPv6 %s (host-b) > %s with VNI %d (want %d), inner ICMPv6 %s (wb) > wa", b6, a6, vni+1, vni, wb.IPv6),
			lab.VXLAN6Frame(eth, hdr(b6, a6), 40123, port, vni+1,
				lab.ICMPv6EchoFrame(lab.Eth{Src: gwMAC, Dst: aMAC}, hdr(wb.IPv6, wa.IPv6), 0x6a05, 1, payload)),
			lab.ReasonDropTunnelVNI, waICMP(0x6a05)),
		under("v4-mapped-source", fmt.Sprintf("ICMPv6 echo %s (v4-mapped, never on the wire) > wa %s", mapped, wa.IPv6),
			lab.ICMPv6EchoFrame(eth, hdr(mapped, wa.IPv6), 0x6a06, 1, payload),
			reasonMalformed, waICMP(0x6a06)),
		// What stays allowed: host-b tunnelling its own workload's traffic
		// (as IPv6-in-IPv6, though the pool says VXLAN: a node takes
		// either from another node).
		func() hostileCase {
			c := under("ip6ip6-from-node-allowed", fmt.Sprintf("IPv6-in-IPv6 %s (host-b) > %s, inner ICMPv6 %s (wb, host-b's) > wa", b6, a6, wb.IPv6),
				lab.IP6IP6Frame(eth, hdr(b6, a6), echo6(wb.IPv6, 0x6a07)),
				lab.ReasonDecapIPIP, watch{what: "wa receives it", ns: wa.NS, iface: wa.InstanceIface(), filter: icmp6ID(0x6a07), wantPacket: true})
			c.quiet = []string{reasonUnderlaySpoof, reasonTunnelInnerSrc, lab.ReasonDropTunnelSrc, lab.ReasonDropTunnelVNI, reasonMalformed}
			return c
		}(),
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { c.run(t, l) })
	}

	// Workload-side anti-spoofing over IPv6 (TestAntiSpoofing's "ip" for
	// IPv6): each sender's peer is on the other host, so a spoofed packet
	// that got past the sender's host would have to cross the underlay.
	for _, s := range []struct {
		w, peer *lab.Workload
		spoofed string
	}{{wa, wb, "fd00:65:1::99"}, {wb, wa, "fd00:65:1::98"}} {
		t.Run(fmt.Sprintf("workload-spoofed-source-%s-%s", s.w.Name, s.w.Kind), func(t *testing.T) {
			spoofIPv6(t, l, s.w, s.peer, s.spoofed)
		})
	}
	stop()
}

// spoofIPv6 gives w the address spoofed (not its endpoint's, inside the
// IPv6 pool) beside its own and pings peer from it: nothing is answered,
// and drop-spoof-ip rises on w's host side. Its own address still works.
// Commands run in w.NS, the pod's namespace or the VM's (where its guest
// NIC is), alike.
func spoofIPv6(t *testing.T, l *lab.Lab, w, peer *lab.Workload, spoofed string) {
	t.Helper()
	ifc := w.InstanceIface()
	// nodad: usable at once, and no solicitation for it goes out first.
	if _, err := l.Exec(w.NS, "ip", "-6", "addr", "add", spoofed+"/128", "dev", ifc, "nodad"); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if _, err := l.Exec(w.NS, "ip", "-6", "addr", "del", spoofed+"/128", "dev", ifc); err != nil {
			t.Errorf("remove %s from %s: %v", spoofed, w.Name, err)
		}
	}()
	before := counter(t, l, w.Host, w.HostIface, reasonSpoofIP)
	st, err := l.Ping(w.NS, peer.IPv6.String(), 3, "-6", "-I", spoofed)
	if err == nil || st.Received > 0 {
		t.Errorf("ping6 %s > %s (%s) was answered (%d/%d):\n%s", spoofed, peer.IPv6, peer.Name, st.Received, st.Transmitted, st.Output)
	}
	after := waitCounter(t, l, w.Host, w.HostIface, reasonSpoofIP, before)
	t.Logf("%s (%s) from %s: %s on %s's %s %d -> %d", w.Name, w.Kind, spoofed, reasonSpoofIP, w.Host, w.HostIface, before, after)
	mustPing(t, l, w.NS, peer.IPv6.String(), 3, "-6", "-I", w.IPv6.String())
}
