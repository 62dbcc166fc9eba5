package bpf_test

import (
	"testing"

	"github.com/calyxnet/calyx/bpfmap"
)

// Forwarding verdicts of an interface with a counter slot are counted in
// cx_slot_counters (zeroing the slot takes them back to 0), those of one
// without in cx_counters, and drops always there: Counters() shows them
// alike, per interface.
func TestCounterSlots(t *testing.T) {
	e := newEnv(t)
	if e.wl1.slot == 0 || e.wl2.slot == 0 || e.wl4.slot != 0 {
		t.Fatalf("fixture: wl1 and wl2 need counter slots, wl4 none (have %d, %d, %d)", e.wl1.slot, e.wl2.slot, e.wl4.slot)
	}
	for range 3 {
		e.fromWL(t, e.wl1, udp4(e.wl1, e.wl1.ip4, e.wl2.ip4, 64)).want(t, redirect,
			hit{e.wl1, bpfmap.ReasonDeliverLocal}, hit{e.wl2, bpfmap.ReasonToWorkload})
		e.fromWL(t, e.wl4, udp4(e.wl4, e.wl4.ip4, e.wl2.ip4, 64)).want(t, redirect,
			hit{e.wl4, bpfmap.ReasonDeliverLocal}, hit{e.wl2, bpfmap.ReasonToWorkload})
	}
	// A forged source from wl1: a drop, counted in cx_counters.
	e.fromWL(t, e.wl1, udp4(e.wl1, e.wl2.ip4, internet, 64)).want(t, shot, hit{e.wl1, bpfmap.ReasonDropSpoofIP})

	before := e.counters(t)
	n := uint64(len(udp4(e.wl1, e.wl1.ip4, e.wl2.ip4, 64)))
	for k, want := range map[bpfmap.CounterKey]bpfmap.Counter{
		{Ifindex: e.wl1.idx(), Reason: bpfmap.ReasonDeliverLocal}: {Packets: 3, Bytes: 3 * n},
		{Ifindex: e.wl4.idx(), Reason: bpfmap.ReasonDeliverLocal}: {Packets: 3, Bytes: 3 * n},
		{Ifindex: e.wl2.idx(), Reason: bpfmap.ReasonToWorkload}:   {Packets: 6, Bytes: 6 * n},
		{Ifindex: e.wl1.idx(), Reason: bpfmap.ReasonDropSpoofIP}:  {Packets: 1, Bytes: n},
	} {
		if before[k] != want {
			t.Errorf("%d/%s: %+v, want %+v", k.Ifindex, k.Reason, before[k], want)
		}
	}

	// Zeroing wl1's slot takes its forwarding counts back, not its drop
	// (cx_counters) nor wl4's (no slot).
	must(t, e.dp.Maps.ZeroCounterSlot(e.wl1.slot))
	after := e.counters(t)
	if c := after[bpfmap.CounterKey{Ifindex: e.wl1.idx(), Reason: bpfmap.ReasonDeliverLocal}]; c != (bpfmap.Counter{}) {
		t.Errorf("wl1 deliver-local after its slot was zeroed: %+v, want none", c)
	}
	for _, k := range []bpfmap.CounterKey{
		{Ifindex: e.wl1.idx(), Reason: bpfmap.ReasonDropSpoofIP},
		{Ifindex: e.wl4.idx(), Reason: bpfmap.ReasonDeliverLocal},
		{Ifindex: e.wl2.idx(), Reason: bpfmap.ReasonToWorkload},
	} {
		if after[k] != before[k] {
			t.Errorf("%d/%s after wl1's slot was zeroed: %+v, want %+v as before", k.Ifindex, k.Reason, after[k], before[k])
		}
	}
}

// The underlay's verdicts are counted in its slot (CounterSlotUnderlay)
// when the program runs on cx_config's underlay interface.
func TestCounterSlotUnderlay(t *testing.T) {
	e := newTunnelEnv(t)
	ul := e.tun.ul
	before := e.counters(t)
	e.fromUL(t, udp4(ul, e.tun.nodeA.addr, hostAddr, 64)).want(t, ok, hit{ul, bpfmap.ReasonPassHost})
	d := counterDelta(before, e.counters(t))
	if d[bpfmap.CounterKey{Ifindex: ul.idx(), Reason: bpfmap.ReasonPassHost}].Packets != 1 {
		t.Fatalf("the host's own packet from the underlay counted %s, want pass-host on the underlay", fmtCounters(d))
	}
	must(t, e.dp.Maps.ZeroCounterSlot(bpfmap.CounterSlotUnderlay))
	if c := e.counters(t)[bpfmap.CounterKey{Ifindex: ul.idx(), Reason: bpfmap.ReasonPassHost}]; c != (bpfmap.Counter{}) {
		t.Errorf("underlay pass-host after its slot was zeroed: %+v, want none", c)
	}
}
