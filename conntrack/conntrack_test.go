package conntrack

import (
	"net/netip"
	"testing"
	"time"

	"github.com/calyxnet/calyx/bpfmap"
)

var (
	client = netip.MustParseAddrPort("203.0.113.5:40000")
	fip    = netip.MustParseAddrPort("198.51.100.10:80")
	fixed  = netip.MustParseAddrPort("10.65.1.2:80")
)

// dnatFlow is the pair of entries a floating-IP DNAT writes.
func dnatFlow(flagsOrig, flagsReply uint8, last uint64) map[bpfmap.CTKey]bpfmap.CTEntry {
	return map[bpfmap.CTKey]bpfmap.CTEntry{
		{Src: client, Dst: fip, Proto: bpfmap.ProtoTCP}: {NATSrc: client, NATDst: fixed, NAT: bpfmap.NATDNAT,
			TCPFlags: flagsOrig, Last: last, Created: 1},
		{Src: fixed, Dst: client, Proto: bpfmap.ProtoTCP}: {NATSrc: fip, NATDst: client, NAT: bpfmap.NATDNAT, Reply: true,
			TCPFlags: flagsReply, Last: last, Created: 1},
	}
}

func TestPairAndState(t *testing.T) {
	for _, tc := range []struct {
		orig, reply uint8
		want        State
	}{
		{bpfmap.TCPSyn, 0, StateSynSent},
		{bpfmap.TCPSyn | bpfmap.TCPAck, bpfmap.TCPSyn | bpfmap.TCPAck, StateEstablished},
		{bpfmap.TCPSyn | bpfmap.TCPAck | bpfmap.TCPFin, bpfmap.TCPAck, StateClosing},
		{bpfmap.TCPSyn, bpfmap.TCPRst, StateClosing},
	} {
		flows := Pair(dnatFlow(tc.orig, tc.reply, 100))
		if len(flows) != 1 || flows[0].Orig == nil || flows[0].Reply == nil {
			t.Fatalf("flows %+v: want one flow with both directions", flows)
		}
		if got := flows[0].State(); got != tc.want {
			t.Errorf("flags %#x/%#x: state %s, want %s", tc.orig, tc.reply, got, tc.want)
		}
		if flows[0].Orig.Key.Dst != fip || flows[0].Reply.Key.Src != fixed {
			t.Errorf("directions swapped: %+v", flows[0])
		}
	}
}

func TestPairICMPAndOrphans(t *testing.T) {
	wl, node, srv := netip.MustParseAddr("10.66.0.2"), netip.MustParseAddr("10.30.0.11"), netip.MustParseAddr("203.0.113.9")
	entries := map[bpfmap.CTKey]bpfmap.CTEntry{
		// natOutgoing ping: identifier 7 became 61234.
		{Src: netip.AddrPortFrom(wl, 7), Dst: netip.AddrPortFrom(srv, 0), Proto: bpfmap.ProtoICMP}: {
			NATSrc: netip.AddrPortFrom(node, 61234), NATDst: netip.AddrPortFrom(srv, 0), NAT: bpfmap.NATSNAT},
		{Src: netip.AddrPortFrom(srv, 61234), Dst: netip.AddrPortFrom(node, 0), Proto: bpfmap.ProtoICMP}: {
			NATSrc: netip.AddrPortFrom(srv, 7), NATDst: netip.AddrPortFrom(wl, 0), NAT: bpfmap.NATSNAT, Reply: true},
		// A reply entry whose original the LRU evicted.
		{Src: fixed, Dst: client, Proto: bpfmap.ProtoUDP}: {NATSrc: fip, NATDst: client, Reply: true},
	}
	flows := Pair(entries)
	if len(flows) != 2 {
		t.Fatalf("flows = %+v, want 2", flows)
	}
	var icmp, orphan *Flow
	for i := range flows {
		if flows[i].Proto() == bpfmap.ProtoICMP {
			icmp = &flows[i]
		} else {
			orphan = &flows[i]
		}
	}
	if icmp == nil || icmp.Orig == nil || icmp.Reply == nil || icmp.State() != StateICMP {
		t.Errorf("ICMP echo entries not paired: %+v", icmp)
	}
	if orphan == nil || orphan.Orig != nil || orphan.Reply == nil || len(orphan.Keys()) != 1 {
		t.Errorf("orphan reply: %+v", orphan)
	}
}

func TestExpired(t *testing.T) {
	const start = uint64(1e12)
	est := Pair(dnatFlow(bpfmap.TCPSyn|bpfmap.TCPAck, bpfmap.TCPSyn|bpfmap.TCPAck, start))[0]
	if est.Expired(start + uint64(59*time.Minute)) {
		t.Error("an established flow idle 59 min expired; the timeout is an hour")
	}
	if !est.Expired(start + uint64(61*time.Minute)) {
		t.Error("an established flow idle 61 min did not expire")
	}
	syn := Pair(dnatFlow(bpfmap.TCPSyn, 0, start))[0]
	if !syn.Expired(start + uint64(31*time.Second)) {
		t.Error("an unanswered SYN idle 31 s did not expire")
	}
	if syn.Expired(start - 1) {
		t.Error("a flow seen after now expired")
	}
}

// Ports run out per destination: SNATPortUse counts the flows of each
// translated source address, and the most toward one destination.
func TestSNATPortUse(t *testing.T) {
	node, srv, other := netip.MustParseAddr("10.30.0.11"), netip.MustParseAddr("203.0.113.9"), netip.MustParseAddr("203.0.113.10")
	entries := map[bpfmap.CTKey]bpfmap.CTEntry{}
	snat := func(wlPort, natPort uint16, dst netip.AddrPort, proto uint8, orig, reply bool) {
		wl := netip.AddrPortFrom(netip.MustParseAddr("10.66.0.2"), wlPort)
		n := netip.AddrPortFrom(node, natPort)
		if orig {
			entries[bpfmap.CTKey{Src: wl, Dst: dst, Proto: proto}] = bpfmap.CTEntry{NATSrc: n, NATDst: dst, NAT: bpfmap.NATSNAT}
		}
		if reply {
			entries[bpfmap.CTKey{Src: dst, Dst: n, Proto: proto}] = bpfmap.CTEntry{NATSrc: dst, NATDst: wl, NAT: bpfmap.NATSNAT, Reply: true}
		}
	}
	https := netip.AddrPortFrom(srv, 443)
	snat(1000, 20001, https, bpfmap.ProtoTCP, true, true)
	snat(1001, 20002, https, bpfmap.ProtoTCP, true, true)
	snat(1002, 20003, https, bpfmap.ProtoTCP, false, true) // its original evicted: the port is still taken
	snat(1003, 20001, https, bpfmap.ProtoUDP, true, true)  // another protocol: another space
	snat(1004, 20001, netip.AddrPortFrom(other, 443), bpfmap.ProtoTCP, true, true)
	// A floating-IP DNAT alone takes no source port.
	for k, v := range dnatFlow(bpfmap.TCPSyn, 0, 1) {
		entries[k] = v
	}
	got := SNATPortUse(Pair(entries))
	want := map[netip.Addr]PortUse{node: {Flows: 5, Destinations: 3, Busiest: 3}}
	if len(got) != len(want) || got[node] != want[node] {
		t.Errorf("SNATPortUse = %+v, want %+v", got, want)
	}
}
