package subnetsvc

import (
	"encoding/binary"
	"net"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/calyxnet/calyx/agent/subnets"
)

// rsFrame is a router solicitation from srcMAC/src (:: sends no source
// link-layer option, as RFC 4861 says) with the given hop limit.
func rsFrame(t testing.TB, srcMAC net.HardwareAddr, src net.IP, hopLimit uint8) []byte {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: srcMAC, DstMAC: multicastMAC(allRouters), EthernetType: layers.EthernetTypeIPv6}
	ip := &layers.IPv6{Version: 6, HopLimit: hopLimit, NextHeader: layers.IPProtocolICMPv6, SrcIP: src, DstIP: allRouters}
	icmp := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(layers.ICMPv6TypeRouterSolicitation, 0)}
	icmp.SetNetworkLayerForChecksum(ip)
	rs := &layers.ICMPv6RouterSolicitation{}
	if !src.IsUnspecified() {
		rs.Options = layers.ICMPv6Options{{Type: layers.ICMPv6OptSourceAddress, Data: srcMAC}}
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, serializeOpts, eth, ip, icmp, rs); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// raContent is what a router advertisement says, decoded.
type raContent struct {
	dstMAC         string
	dst            string
	flags          uint8
	routerLifetime uint16
	curHopLimit    uint8
	slla           string
	mtu            uint32
	prefix         string
	prefixFlags    uint8
	prefixValid    uint32
	rdnss          []string
	rdnssLifetime  uint32
	order          []layers.ICMPv6Opt
}

// decodeRA checks what every advertisement must be (from fe80::1 and the
// host side's MAC, hop limit 255, ICMPv6 134 code 0, checksums) and
// returns its content.
func decodeRA(t *testing.T, frame []byte) raContent {
	t.Helper()
	p := decode(t, frame)
	eth := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	ip, _ := p.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
	icmp, _ := p.Layer(layers.LayerTypeICMPv6).(*layers.ICMPv6)
	ra, _ := p.Layer(layers.LayerTypeICMPv6RouterAdvertisement).(*layers.ICMPv6RouterAdvertisement)
	if ip == nil || icmp == nil || ra == nil {
		t.Fatalf("not a router advertisement: %v", p)
	}
	if !ip.SrcIP.Equal(net.ParseIP("fe80::1")) || ip.HopLimit != 255 || icmp.TypeCode.Code() != 0 {
		t.Errorf("from %s hop limit %d code %d, want fe80::1, 255, 0", ip.SrcIP, ip.HopLimit, icmp.TypeCode.Code())
	}
	c := raContent{dstMAC: eth.DstMAC.String(), dst: ip.DstIP.String(), flags: ra.Flags,
		routerLifetime: ra.RouterLifetime, curHopLimit: ra.HopLimit}
	for _, o := range ra.Options {
		c.order = append(c.order, o.Type)
		switch o.Type {
		case layers.ICMPv6OptSourceAddress:
			c.slla = net.HardwareAddr(o.Data).String()
		case layers.ICMPv6OptMTU:
			c.mtu = binary.BigEndian.Uint32(o.Data[2:])
		case layers.ICMPv6OptPrefixInfo:
			c.prefix = (&net.IPNet{IP: net.IP(o.Data[14:30]), Mask: net.CIDRMask(int(o.Data[0]), 128)}).String()
			c.prefixFlags = o.Data[1]
			c.prefixValid = binary.BigEndian.Uint32(o.Data[2:])
		case layers.ICMPv6OptRecursiveDNSServer:
			c.rdnssLifetime = binary.BigEndian.Uint32(o.Data[2:])
			for a := o.Data[6:]; len(a) >= 16; a = a[16:] {
				c.rdnss = append(c.rdnss, net.IP(a[:16]).String())
			}
		}
	}
	return c
}

func checkRA(t *testing.T, c raContent, dstMAC, dst string, lifetime uint16) {
	t.Helper()
	if c.dstMAC != dstMAC || c.dst != dst {
		t.Errorf("to %s/%s, want %s/%s", c.dstMAC, c.dst, dstMAC, dst)
	}
	if c.flags != 0xc0 {
		t.Errorf("flags %#x, want M and O (0xc0)", c.flags)
	}
	if c.routerLifetime != lifetime || c.curHopLimit != 64 {
		t.Errorf("router lifetime %d cur hop limit %d, want %d, 64", c.routerLifetime, c.curHopLimit, lifetime)
	}
	if c.slla != hostMAC.String() {
		t.Errorf("source link-layer address %s, want %s", c.slla, hostMAC)
	}
	if c.mtu != 1450 {
		t.Errorf("MTU option %d, want 1450", c.mtu)
	}
	if c.prefix != "fd00:65::/64" || c.prefixFlags != 0 {
		t.Errorf("prefix %s flags %#x, want fd00:65::/64 with L=0 A=0", c.prefix, c.prefixFlags)
	}
	if len(c.rdnss) != 1 || c.rdnss[0] != "fd00:65::53" || c.rdnssLifetime != uint32(lifetime) {
		t.Errorf("RDNSS %v lifetime %d", c.rdnss, c.rdnssLifetime)
	}
	want := []layers.ICMPv6Opt{layers.ICMPv6OptSourceAddress, layers.ICMPv6OptMTU, layers.ICMPv6OptPrefixInfo, layers.ICMPv6OptRecursiveDNSServer}
	if len(c.order) != len(want) {
		t.Errorf("options %v, want %v", c.order, want)
	}
	for i := range c.order {
		if i < len(want) && c.order[i] != want[i] {
			t.Errorf("options %v, want %v", c.order, want)
			break
		}
	}
}

func TestRouterSolicitation(t *testing.T) {
	answered := func(h *harness) float64 { return testutil.ToFloat64(h.s.m.rss.WithLabelValues("answered")) }
	t.Run("from link-local → unicast advertisement", func(t *testing.T) {
		h := newHarness(t)
		out := h.s.handleV6(ifDual, rsFrame(t, vmMAC, vmLL, 255), h.now)
		if len(out) != 1 {
			t.Fatalf("%d replies", len(out))
		}
		checkRA(t, decodeRA(t, out[0]), vmMAC.String(), vmLL.String(), 1800)
		if answered(h) != 1 || testutil.ToFloat64(h.s.m.ras.WithLabelValues("solicited")) != 1 {
			t.Error("not counted")
		}
	})
	t.Run("from :: → to all nodes", func(t *testing.T) {
		h := newHarness(t)
		out := h.s.handleV6(ifDual, rsFrame(t, vmMAC, net.IPv6unspecified, 255), h.now)
		if len(out) != 1 {
			t.Fatalf("%d replies", len(out))
		}
		checkRA(t, decodeRA(t, out[0]), "33:33:00:00:00:01", "ff02::1", 1800)
	})
	for _, tc := range []struct {
		name, reason string
		idx          int
		frame        func(t *testing.T) []byte
	}{
		{"another MAC", reasonWrongMAC, ifDual, func(t *testing.T) []byte { return rsFrame(t, otherMAC, vmLL, 255) }},
		{"hop limit not 255", reasonMalformed, ifDual, func(t *testing.T) []byte { return rsFrame(t, vmMAC, vmLL, 64) }},
		{"v4-only endpoint", reasonNoLease, ifV4, func(t *testing.T) []byte { return rsFrame(t, vmMAC, vmLL, 255) }},
		{"no endpoint", reasonNotEndpoint, ifAbsent, func(t *testing.T) []byte { return rsFrame(t, vmMAC, vmLL, 255) }},
	} {
		t.Run(tc.name+" → ignored", func(t *testing.T) {
			h := newHarness(t)
			if out := h.s.handleV6(tc.idx, tc.frame(t), h.now); len(out) != 0 {
				t.Fatalf("%d replies, want none", len(out))
			}
			if h.ignored("v6", tc.reason) != 1 || testutil.ToFloat64(h.s.m.rss.WithLabelValues("ignored")) != 1 {
				t.Errorf("not counted as ignored (%s)", tc.reason)
			}
		})
	}
	t.Run("rate limited per interface", func(t *testing.T) {
		h := newHarness(t)
		rs := rsFrame(t, vmMAC, vmLL, 255)
		n := 0
		for i := 0; i < 3; i++ { // three at once: one answer
			n += len(h.s.handleV6(ifDual, rs, h.now))
		}
		h.now = h.now.Add(raSolicitedGap)
		n += len(h.s.handleV6(ifDual, rs, h.now))
		if n != 2 || answered(h) != 2 || testutil.ToFloat64(h.s.m.rss.WithLabelValues("rate_limited")) != 2 {
			t.Errorf("%d answers to 3 at once and one %v later; want 2", n, raSolicitedGap)
		}
	})
}

// TestRASchedule: an IPv6 interface gets its first advertisements
// raInitialInterval apart, then one every raMinInterval..raMaxInterval;
// an unchanged Update keeps the schedule, a changed lease starts it over,
// and a withdrawn service gets one advertisement with lifetime 0.
func TestRASchedule(t *testing.T) {
	h := newHarness(t)
	s := h.s
	now := t0
	finals, due, next := s.ra.take(now.Add(raFirstJitter))
	if len(finals) != 0 || len(due) != 1 || due[0].idx != ifDual {
		t.Fatalf("first take: finals %d due %v; want the one IPv6 interface due", len(finals), due)
	}
	checkRA(t, decodeRA(t, due[0].frame), "33:33:00:00:00:01", "ff02::1", 1800)
	now = now.Add(raFirstJitter)
	var gaps []time.Duration
	for i := 0; i < 5; i++ {
		_, due, n := s.ra.take(next)
		if len(due) != 1 {
			t.Fatalf("round %d: %d due at the time take said", i, len(due))
		}
		gaps = append(gaps, next.Sub(now))
		now, next = next, n
	}
	for i, g := range gaps {
		initial := i < raInitialCount-1
		if initial && g != raInitialInterval || !initial && (g < raMinInterval || g > raMaxInterval) {
			t.Errorf("gap %d: %v (initial %v)", i, g, initial)
		}
	}

	// The same services again: nothing restarts.
	s.Update(testServices())
	if _, due, n := s.ra.take(now); len(due) != 0 || !n.Equal(next) {
		t.Errorf("unchanged Update: %d due, next %v; want none, %v", len(due), n, next)
	}
	// A new MTU: advertised again within the jitter.
	svcs := testServices()
	svcs[ifDual].V6.MTU = 1400
	s.Update(svcs)
	if _, due, _ := s.ra.take(now.Add(raFirstJitter)); len(due) != 1 || decodeRA(t, due[0].frame).mtu != 1400 {
		t.Errorf("changed MTU: %d due", len(due))
	}
	// The IPv6 service goes: one final advertisement, router lifetime 0.
	svcs = testServices()
	svcs[ifDual] = subnets.Service{Endpoint: "vm-dual", Ifindex: ifDual, HostMAC: hostMAC, MAC: vmMAC, V4: svcs[ifDual].V4}
	s.Update(svcs)
	finals, due, next = s.ra.take(now.Add(time.Hour))
	if len(finals) != 1 || len(due) != 0 || !next.IsZero() {
		t.Fatalf("after withdrawal: %d finals %d due next %v", len(finals), len(due), next)
	}
	c := decodeRA(t, finals[0].frame)
	if c.routerLifetime != 0 || c.rdnssLifetime != 0 || c.prefixValid != 0 {
		t.Errorf("final advertisement lifetimes: router %d RDNSS %d prefix %d, want 0", c.routerLifetime, c.rdnssLifetime, c.prefixValid)
	}
}
