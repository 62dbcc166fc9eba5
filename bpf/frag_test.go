package bpf_test

// Fragments: the first fragment's ports are remembered (cx_frags), so the
// later ones are matched by policy and translated like it; a later
// fragment without its first is dropped and counted, unless
// Config.orphanFragments passes it.

import (
	"bytes"
	"encoding/binary"
	"slices"
	"testing"

	"github.com/calyxnet/calyx/bpfmap"
)

// fragmentAt splits the Ethernet/IPv4 frame (no options) into two
// fragments: the first with the IP payload's first at bytes (a multiple of
// 8) and MF, the second with the rest at offset at. Both keep the IP ID.
func fragmentAt(frame []byte, at int) (first, rest []byte) {
	ip := frame[14:]
	tot := int(binary.BigEndian.Uint16(ip[2:]))
	payload := ip[20:tot]
	mk := func(part []byte, fragOff uint16) []byte {
		out := slices.Concat(frame[:14+20], part)
		h := out[14:]
		binary.BigEndian.PutUint16(h[2:], uint16(20+len(part)))
		binary.BigEndian.PutUint16(h[6:], fragOff)
		fixIPv4Checksum(h)
		return out
	}
	return mk(payload[:at], 0x2000), mk(payload[at:], uint16(at/8))
}

// srcPort reads the UDP source port of a frame (a first fragment).
func srcPort(frame []byte) uint16 { return binary.BigEndian.Uint16(frame[14+20:]) }

func wantFrag(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		t.Errorf("%s:\n got  %x\n want %x", what, got, want)
	}
}

// A 1200-byte UDP datagram through natOutgoing, both ways, in two
// fragments each: every fragment is translated; the datagram's checksum,
// in the first, stays right for the whole.
func TestFragmentsNATOutgoing(t *testing.T) {
	ne := newNATEnv(t)
	w, ul := ne.wl1, ne.tun.ul
	orig := mkFlow(bpfmap.ProtoUDP, w.ip4, 40700, server, 53)
	full := orig.frame(w.l2(), seg{size: 1200})
	first, rest := fragmentAt(full, 512)

	o := ne.fromWL(t, w, first)
	o.want(t, redirect, hit{w, bpfmap.ReasonForwardDirect})
	port := srcPort(o.out)
	if port < natPorts[0] || port > natPorts[1] {
		t.Fatalf("first fragment left from port %d", port)
	}
	xl := mkFlow(bpfmap.ProtoUDP, hostAddr, port, server, 53)
	wantFirst, wantRest := fragmentAt(xlate(full, xl, true), 512)
	wantFrag(t, "first fragment", o.out[14:], wantFirst[14:])
	o = ne.fromWL(t, w, rest)
	o.want(t, redirect, hit{w, bpfmap.ReasonForwardDirect})
	wantFrag(t, "second fragment", o.out[14:], wantRest[14:])

	// The reply, fragmented by the server.
	reply := xl.reverse().frame(ne.routerL2(), seg{size: 1200})
	rFirst, rRest := fragmentAt(reply, 1024)
	wantRFirst, wantRRest := fragmentAt(xlate(reply, orig.reverse(), true), 1024)
	o = ne.fromUL(t, rFirst)
	o.want(t, redirect, hit{ul, bpfmap.ReasonDeliverLocal}, hit{w, bpfmap.ReasonToWorkload})
	wantFrag(t, "first fragment of the reply", o.out[14:], wantRFirst[14:])
	o = ne.fromUL(t, rRest)
	o.want(t, redirect, hit{ul, bpfmap.ReasonDeliverLocal}, hit{w, bpfmap.ReasonToWorkload})
	wantFrag(t, "second fragment of the reply", o.out[14:], wantRRest[14:])

	oe, re := flowEntries(t, ne.conntrack(t), orig, xl, bpfmap.NATSNAT)
	if oe.Packets != 2 || re.Packets != 2 {
		t.Errorf("the flow counted %d and %d packets, want 2 each way", oe.Packets, re.Packets)
	}
}

// From outside to a floating IP whose instance has ingress policy (UDP 53
// only): both fragments of an allowed datagram are translated and
// delivered; the later fragment of a denied one is denied as its first
// was (by its port, not as port 0).
func TestFragmentsFloatingIPIngressPolicy(t *testing.T) {
	ne := newNATEnv(t)
	ne.putTestPolicies(t)
	w, ul := ne.wl2, ne.tun.ul
	ne.setTables(t, w, tableDNS, 0)

	orig := mkFlow(bpfmap.ProtoUDP, client, 41700, fipWL2, 53)
	xl := mkFlow(bpfmap.ProtoUDP, client, 41700, w.ip4, 53)
	full := orig.frame(ne.routerL2(), seg{size: 3000})
	first, rest := fragmentAt(full, 1480)
	wantFirst, wantRest := fragmentAt(xlate(full, xl, true), 1480)
	o := ne.fromUL(t, first)
	o.want(t, redirect, hit{ul, bpfmap.ReasonDeliverLocal}, hit{w, bpfmap.ReasonToWorkload})
	wantFrag(t, "first fragment", o.out[14:], wantFirst[14:])
	o = ne.fromUL(t, rest)
	o.want(t, redirect, hit{ul, bpfmap.ReasonDeliverLocal}, hit{w, bpfmap.ReasonToWorkload})
	wantFrag(t, "second fragment", o.out[14:], wantRest[14:])

	// The instance's fragmented answer leaves with the floating IP.
	reply := xl.reverse().frame(w.l2(), seg{size: 3000})
	rFirst, rRest := fragmentAt(reply, 1480)
	wantRFirst, wantRRest := fragmentAt(xlate(reply, orig.reverse(), false), 1480)
	o = ne.fromWL(t, w, rFirst)
	o.want(t, ok, hit{w, bpfmap.ReasonPassHost})
	wantFrag(t, "first fragment of the answer", o.out[14:], wantRFirst[14:])
	o = ne.fromWL(t, w, rRest)
	o.want(t, ok, hit{w, bpfmap.ReasonPassHost})
	wantFrag(t, "second fragment of the answer", o.out[14:], wantRRest[14:])

	// Port 54 is denied: both fragments, the later by its first's port.
	denied := mkFlow(bpfmap.ProtoUDP, client, 41701, fipWL2, 54).frame(ne.routerL2(), seg{size: 3000})
	binary.BigEndian.PutUint16(denied[14+4:], 0x4343) // another datagram
	fixIPv4Checksum(denied[14:])
	dFirst, dRest := fragmentAt(denied, 1480)
	before := ne.hits(t)
	ne.fromUL(t, dFirst).want(t, shot, hit{ul, bpfmap.ReasonDropPolicy})
	ne.fromUL(t, dRest).want(t, shot, hit{ul, bpfmap.ReasonDropPolicy})
	ne.wantHits(t, before, bpfmap.RuleHitKey{Ifindex: w.idx(), Rule: ruleDeny}, bpfmap.RuleHitKey{Ifindex: w.idx(), Rule: ruleDeny})
}

// A later fragment without its first: from a workload, dropped and
// counted; from the underlay to the host itself, the host's to reassemble
// or time out; with Config.orphanFragments Pass, untracked.
func TestFragmentsOrphan(t *testing.T) {
	ne := newNATEnv(t)
	w, ul := ne.wl1, ne.tun.ul
	full := mkFlow(bpfmap.ProtoUDP, w.ip4, 40800, ne.wl2.ip4, 53).frame(w.l2(), seg{size: 1200})
	_, rest := fragmentAt(full, 512)
	o := ne.fromWL(t, w, rest)
	o.want(t, shot, hit{w, bpfmap.ReasonDropFragOrphan})
	o.unchanged(t)

	toHost := mkFlow(bpfmap.ProtoUDP, client, 40801, hostAddr, 9000).frame(ne.routerL2(), seg{size: 1200})
	_, hostRest := fragmentAt(toHost, 512)
	ne.fromUL(t, hostRest).want(t, ok, hit{ul, bpfmap.ReasonPassHost})

	toFIP := mkFlow(bpfmap.ProtoUDP, client, 40802, fipWL2, 53).frame(ne.routerL2(), seg{size: 1200})
	_, fipRest := fragmentAt(toFIP, 512)
	ne.fromUL(t, fipRest).want(t, shot, hit{ul, bpfmap.ReasonDropFragOrphan})

	cfg := ne.tun.cfg
	cfg.FragOrphanPass = true
	must(t, ne.dp.Maps.Config.Put(0, cfg))
	defer func() { must(t, ne.dp.Maps.Config.Put(0, ne.tun.cfg)) }()
	ne.fromWL(t, w, rest).want(t, redirect, hit{w, bpfmap.ReasonDeliverLocal}, hit{ne.wl2, bpfmap.ReasonToWorkload})
}
