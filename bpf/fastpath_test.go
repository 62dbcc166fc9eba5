package bpf_test

// The established-flow fast paths of calyx_from_wl: a translated flow's
// route is cached in its cx_nat_v2 entry and used, without the LPM lookups,
// for as long as cx_config's route generation stays the same; a tracked
// flow skips the source check of a side whose interface it recorded.

import (
	"net/netip"
	"testing"

	"github.com/calyxnet/calyx/bpfmap"
)

// ctEntry returns the conntrack entry of key, failing when there is none.
func ctEntry(t *testing.T, e *env, key bpfmap.CTKey) bpfmap.CTEntry {
	t.Helper()
	var got *bpfmap.CTEntry
	must(t, e.dp.Maps.Conntrack(func(k bpfmap.CTKey, v bpfmap.CTEntry) bool {
		if k == key {
			got = &v
			return false
		}
		return true
	}))
	if got == nil {
		t.Fatalf("no conntrack entry %v", key)
	}
	return *got
}

// A translated flow caches its route in its cx_nat_v2 entry.
func TestFastPathUsesCachedRouteUntilRoutesChange(t *testing.T) {
	ne := newNATEnv(t)
	e := ne.env
	m := e.dp.Maps
	cfg := e.tun.cfg
	cfg.RouteGen = 7
	must(t, m.Config.Put(0, cfg))
	src, dst := e.wl1, e.wl2
	f := mkFlow(bpfmap.ProtoUDP, src.ip4, 40000, fipWL2, 53)
	in := f.frame(src.l2(), seg{})

	// First packet: the slow path, which caches its route.
	o := e.fromWL(t, src, in)
	o.want(t, redirect, hit{src, bpfmap.ReasonDeliverLocal}, hit{dst, bpfmap.ReasonToWorkload})
	ent := ctEntry(t, e, f.key())
	if ent.Ifindex != src.idx() || ent.RouteGen != 7 {
		t.Fatalf("entry caches ifindex %d generation %d, want %d and 7", ent.Ifindex, ent.RouteGen, src.idx())
	}

	// The route goes, but the generation stays: the cached route is used
	// (which shows the LPM was not consulted).
	must(t, m.Routes.Delete(netip.PrefixFrom(dst.ip4, 32)))
	o = e.fromWL(t, src, in)
	o.want(t, redirect, hit{src, bpfmap.ReasonDeliverLocal}, hit{dst, bpfmap.ReasonToWorkload})
	if got := ctEntry(t, e, f.key()).Packets; got != 2 {
		t.Errorf("entry counted %d packets, want 2", got)
	}

	// A new generation: the route is looked up again, and is gone.
	cfg.RouteGen = 8
	must(t, m.Config.Put(0, cfg))
	o = e.fromWL(t, src, in)
	o.want(t, ok, hit{src, bpfmap.ReasonPassHost})
}

// A tracked flow without translation records, per side, the interface
// whose source check its packets passed: later packets from there skip the
// check (its LPM lookup), and route by the table as it is now.
func TestFastPathSkipsCheckedSource(t *testing.T) {
	e := newTunnelEnv(t)
	m := e.dp.Maps
	src, dst := e.wl1, e.wl2
	in := udp4(src, src.ip4, dst.ip4, 64)
	key := bpfmap.CTKey{Src: netip.AddrPortFrom(src.ip4, 40000), Dst: netip.AddrPortFrom(dst.ip4, 53), Proto: bpfmap.ProtoUDP}
	o := e.fromWL(t, src, in)
	o.want(t, redirect, hit{src, bpfmap.ReasonDeliverLocal}, hit{dst, bpfmap.ReasonToWorkload})
	if ent := ctEntry(t, e, key); ent.Ifindex != src.idx() || ent.RouteGen != 0 {
		t.Fatalf("entry records ifindex %d generation %d, want %d and no route", ent.Ifindex, ent.RouteGen, src.idx())
	}
	// The source's own route goes: the flow's packets still pass (checked
	// when it started), a new flow from that address does not.
	must(t, m.Routes.Delete(netip.PrefixFrom(src.ip4, 32)))
	o = e.fromWL(t, src, in)
	o.want(t, redirect, hit{src, bpfmap.ReasonDeliverLocal}, hit{dst, bpfmap.ReasonToWorkload})
	other := mkFlow(bpfmap.ProtoUDP, src.ip4, 40001, dst.ip4, 53)
	o = e.fromWL(t, src, other.frame(src.l2(), seg{}))
	o.want(t, shot, hit{src, bpfmap.ReasonDropSpoofIP})
	// The reply side's interface is recorded at its first packet.
	rin := udp4(dst, dst.ip4, src.ip4, 64)
	rin = mkFlow(bpfmap.ProtoUDP, dst.ip4, 53, src.ip4, 40000).frame(dst.l2(), seg{})
	e.fromWL(t, dst, rin)
	if ent := ctEntry(t, e, bpfmap.CTKey{Src: key.Dst, Dst: key.Src, Proto: bpfmap.ProtoUDP}); ent.Ifindex != dst.idx() {
		t.Errorf("reply side records ifindex %d, want %d", ent.Ifindex, dst.idx())
	}
}

// The cache is per interface: the same tuple from another interface is a
// spoof and takes the slow path, which drops it.
func TestFastPathIsPerInterface(t *testing.T) {
	e := newTunnelEnv(t)
	m := e.dp.Maps
	cfg := e.tun.cfg
	cfg.RouteGen = 1
	must(t, m.Config.Put(0, cfg))
	src, dst, other := e.wl1, e.wl2, e.wl4
	o := e.fromWL(t, src, udp4(src, src.ip4, dst.ip4, 64))
	o.want(t, redirect, hit{src, bpfmap.ReasonDeliverLocal}, hit{dst, bpfmap.ReasonToWorkload})

	// wl4 checks no MAC, so only the source address gives it away.
	spoof := udp4(other, src.ip4, dst.ip4, 64)
	o = e.fromWL(t, other, spoof)
	o.want(t, shot, hit{other, bpfmap.ReasonDropSpoofIP})
}

// With generation 0 (an agent that predates the cache) nothing is cached.
func TestFastPathOffWithoutGeneration(t *testing.T) {
	ne := newNATEnv(t)
	e := ne.env
	src, dst := e.wl1, e.wl2
	f := mkFlow(bpfmap.ProtoUDP, src.ip4, 40000, fipWL2, 53)
	o := e.fromWL(t, src, f.frame(src.l2(), seg{}))
	o.want(t, redirect, hit{src, bpfmap.ReasonDeliverLocal}, hit{dst, bpfmap.ReasonToWorkload})
	if ent := ctEntry(t, e, f.key()); ent.RouteGen != 0 {
		t.Errorf("generation 0 cached a route (generation %d)", ent.RouteGen)
	}
}
