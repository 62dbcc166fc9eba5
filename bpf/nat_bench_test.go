package bpf_test

// Per-packet cost of the conntrack paths, measured like the overlay paths
// (one fresh packet per syscall, net-ns/op subtracts the harness): the
// first run of each benchmark starts the flow, every later one is a packet
// of an established flow.

import (
	"testing"

	"github.com/calyxnet/calyx/bpfmap"
)

// BenchmarkFIPDNATEstablished is a packet from outside to a floating IP of
// a local instance on an established flow: conntrack hit, DNAT with both
// checksums, delivery (calyx_from_underlay).
func BenchmarkFIPDNATEstablished(b *testing.B) { benchFIPDNATEstablished(b, false) }

// BenchmarkFIPDNATEstablishedFull is BenchmarkFIPDNATEstablished with both
// conntrack maps 90% full.
func BenchmarkFIPDNATEstablishedFull(b *testing.B) { benchFIPDNATEstablished(b, true) }

func benchFIPDNATEstablished(b *testing.B, full bool) {
	ne := newNATEnv(b)
	if full {
		fillConntrack(b, ne.env, 0.9)
	}
	pkt := mkFlow(bpfmap.ProtoUDP, client, 40000, fipWL2, 53).frame(ne.routerL2(), seg{})
	before := ne.counters(b)
	res := benchOnePacket(b, ne.env, ne.ulIngress, ne.tun.ul.ifindex, pkt, redirect)
	wantCountedSized(b, ne.env, before, res, 1,
		sizedKey{bpfmap.CounterKey{Ifindex: ne.tun.ul.idx(), Reason: bpfmap.ReasonDeliverLocal}, len(pkt)},
		sizedKey{bpfmap.CounterKey{Ifindex: ne.wl2.idx(), Reason: bpfmap.ReasonToWorkload}, len(pkt)})
}

// BenchmarkFastPathLocalDeliver is BenchmarkLocalDeliverFresh on an
// established flow: the flow's cx_ct_v2 entry says its source was checked.
func BenchmarkFastPathLocalDeliver(b *testing.B) { benchFastPathLocalDeliver(b, false) }

// BenchmarkFastPathLocalDeliverFull is BenchmarkFastPathLocalDeliver with
// both conntrack maps 90% full.
func BenchmarkFastPathLocalDeliverFull(b *testing.B) { benchFastPathLocalDeliver(b, true) }

func benchFastPathLocalDeliver(b *testing.B, full bool) {
	e := newTunnelEnv(b)
	if full {
		fillConntrack(b, e, 0.9)
	}
	cfg := e.tun.cfg
	cfg.RouteGen = 1
	must(b, e.dp.Maps.Config.Put(0, cfg))
	src, dst := e.wl1, e.wl2
	pkt := udp4(src, src.ip4, dst.ip4, 64)
	before := e.counters(b)
	res := benchOnePacket(b, e, e.from, src.ifindex, pkt, redirect)
	wantCounted(b, e, before, res, 1, len(pkt),
		bpfmap.CounterKey{Ifindex: src.idx(), Reason: bpfmap.ReasonDeliverLocal},
		bpfmap.CounterKey{Ifindex: dst.idx(), Reason: bpfmap.ReasonToWorkload})
}

// BenchmarkFastPathTCP is BenchmarkFastPathLocalDeliver for a TCP flow
// (its SYN sent first): every packet is the next pure ACK, in sequence, the
// free case of sequence tracking (finding 8 of issue 15).
func BenchmarkFastPathTCP(b *testing.B) { benchFastPathTCP(b, 1001) }

// BenchmarkFastPathTCPBehind is BenchmarkFastPathTCP with every packet
// behind the flow's end (a retransmission): the case that looks the other
// direction's entry up.
func BenchmarkFastPathTCPBehind(b *testing.B) { benchFastPathTCP(b, 999) }

func benchFastPathTCP(b *testing.B, seq uint32) {
	e := newTunnelEnv(b)
	cfg := e.tun.cfg
	cfg.RouteGen = 1
	must(b, e.dp.Maps.Config.Put(0, cfg))
	src, dst := e.wl1, e.wl2
	f := mkFlow(bpfmap.ProtoTCP, src.ip4, 40000, dst.ip4, 80)
	e.fromWL(b, src, f.frame(src.l2(), seg{flags: bpfmap.TCPSyn, seq: 1000}))
	// The reply's SYN-ACK makes the other direction known (its window).
	e.fromWL(b, dst, f.reverse().frame(dst.l2(), seg{flags: bpfmap.TCPSyn | bpfmap.TCPAck, seq: 5000, ack: 1001}))
	pkt := f.frame(src.l2(), seg{flags: bpfmap.TCPAck, seq: seq, ack: 5001})
	pkt = pkt[:14+40] // no payload: a pure ACK
	pkt[14+2], pkt[14+3] = 0, 40
	fixIPv4Checksum(pkt[14:])
	fixL4Checksum(pkt[14:])
	before := e.counters(b)
	res := benchOnePacket(b, e, e.from, src.ifindex, pkt, redirect)
	wantCounted(b, e, before, res, 1, len(pkt),
		bpfmap.CounterKey{Ifindex: src.idx(), Reason: bpfmap.ReasonDeliverLocal},
		bpfmap.CounterKey{Ifindex: dst.idx(), Reason: bpfmap.ReasonToWorkload})
}
