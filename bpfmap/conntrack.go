package bpfmap

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"

	"github.com/cilium/ebpf"

	"github.com/calyxnet/calyx/bpf"
)

// Conntrack lives in two maps (calyx.h): cx_ct_v2 holds a flow without
// translation as one entry found from either direction, cx_nat_v2 a
// translated flow as one entry per direction. This file shows both the
// same way, as directions: a CTKey (the tuple a direction's packets carry
// when they arrive) and a CTEntry (what they are rewritten to, and what
// was seen of them). A cx_ct_v2 flow shows as two directions that rewrite
// to themselves.

// Protocol numbers conntrack tracks.
const (
	ProtoICMP   = 1
	ProtoTCP    = 6
	ProtoUDP    = 17
	ProtoICMPv6 = 58
)

// IsICMP says whether proto is ICMP of either family, whose flows are echo
// exchanges keyed by their identifier (the source port; the destination
// port is 0).
func IsICMP(proto uint8) bool { return proto == ProtoICMP || proto == ProtoICMPv6 }

// ProtoName names an IP protocol as calyxctl shows and filters it: tcp,
// udp, icmp, icmpv6, or the number.
func ProtoName(p uint8) string {
	switch p {
	case ProtoTCP:
		return "tcp"
	case ProtoUDP:
		return "udp"
	case ProtoICMP:
		return "icmp"
	case ProtoICMPv6:
		return "icmpv6"
	}
	return strconv.Itoa(int(p))
}

// CTKey is the tuple of one direction of a flow: packets as they arrive.
// For ICMP echo, SrcPort is the identifier and DstPort 0.
type CTKey struct {
	Src, Dst netip.AddrPort
	Proto    uint8
}

// NAT bits of a translated flow.
const (
	NATDNAT = uint8(bpf.CalyxCxNatCX_NAT_DNAT)
	NATSNAT = uint8(bpf.CalyxCxNatCX_NAT_SNAT)
)

// TCP flags conntrack records per direction.
const (
	TCPFin = 0x01
	TCPSyn = 0x02
	TCPRst = 0x04
	TCPAck = 0x10
)

// CTEntry is one direction of a flow: what its packets become, and what
// was seen of them.
type CTEntry struct {
	NATSrc, NATDst netip.AddrPort
	Reply          bool   // the reply direction
	NAT            uint8  // NATDNAT | NATSNAT; 0: a cx_ct_v2 flow
	TCPFlags       uint8  // the TCP flags of this direction's in-sequence segments
	Created, Last  uint64 // CLOCK_MONOTONIC ns; Last moves at most once a second
	Packets, Bytes uint64
	// TCP sequence tracking: whether it has begun (SeqKnown), the
	// sequence number after the last this direction sent, the largest
	// window it advertised (unscaled) and the window-scale shift its SYN
	// offered (-1: none). Resync: the entry was recreated from the other
	// direction's and learns its sequence from its next ACK.
	SeqKnown, Resync bool
	SeqEnd           uint32
	MaxWin           uint16
	WScale           int8
	// Ifindex is the workload interface this direction comes from, whose
	// source check it skips (0: none yet); RouteGen, for a translated
	// flow, the route generation its cached route belongs to (0: none).
	Ifindex, RouteGen uint32
}

// Translated says whether the direction is a cx_nat_v2 entry's.
func (e CTEntry) Translated() bool { return e.NAT != 0 }

func tcpDirFromBPF(e *CTEntry, seqEnd uint32, maxWin uint16, flags, state uint8) {
	e.TCPFlags = flags
	e.SeqKnown = state&uint8(bpf.CalyxCxCtSeqCX_CT_SEQ_KNOWN) != 0
	e.Resync = state&uint8(bpf.CalyxCxCtSeqCX_CT_SEQ_RESYNC) != 0
	e.SeqEnd, e.MaxWin, e.WScale = seqEnd, maxWin, -1
	if state&uint8(bpf.CalyxCxCtSeqCX_CT_WSCALE_OFFERED) != 0 {
		e.WScale = int8(state & uint8(bpf.CalyxCxCtSeqCX_CT_WSCALE_MASK))
	}
}

func tcpStateToBPF(e CTEntry) uint8 {
	var st uint8
	if e.SeqKnown {
		st |= uint8(bpf.CalyxCxCtSeqCX_CT_SEQ_KNOWN)
	}
	if e.Resync {
		st |= uint8(bpf.CalyxCxCtSeqCX_CT_SEQ_RESYNC)
	}
	if e.WScale >= 0 {
		st |= uint8(bpf.CalyxCxCtSeqCX_CT_WSCALE_OFFERED) | uint8(e.WScale)&uint8(bpf.CalyxCxCtSeqCX_CT_WSCALE_MASK)
	}
	return st
}

func natKeyToBPF(k CTKey) bpf.CalyxCxNatKey {
	return bpf.CalyxCxNatKey{Saddr: addrTo16(k.Src.Addr()), Daddr: addrTo16(k.Dst.Addr()),
		Sport: htons(k.Src.Port()), Dport: htons(k.Dst.Port()), Proto: k.Proto}
}

func natKeyFromBPF(k bpf.CalyxCxNatKey) CTKey {
	return CTKey{Src: netip.AddrPortFrom(addrFrom16(k.Saddr), ntohs(k.Sport)),
		Dst: netip.AddrPortFrom(addrFrom16(k.Daddr), ntohs(k.Dport)), Proto: k.Proto}
}

func natEntryFromBPF(v bpf.CalyxCxNatEntry) CTEntry {
	e := CTEntry{
		NATSrc: netip.AddrPortFrom(addrFrom16(v.NatSaddr), ntohs(v.NatSport)),
		NATDst: netip.AddrPortFrom(addrFrom16(v.NatDaddr), ntohs(v.NatDport)),
		Reply:  v.Dir == uint8(bpf.CalyxCxCtDirCX_CT_REPLY), NAT: v.Nat,
		Created: v.CreatedNs, Last: v.LastNs, Packets: v.Packets, Bytes: v.Bytes,
		Ifindex: v.Ifindex, RouteGen: v.RouteGen,
	}
	tcpDirFromBPF(&e, v.Tcp.SeqEnd, v.Tcp.MaxWin, v.Tcp.Flags, v.Tcp.State)
	return e
}

func natEntryToBPF(e CTEntry) bpf.CalyxCxNatEntry {
	v := bpf.CalyxCxNatEntry{
		NatSaddr: addrTo16(e.NATSrc.Addr()), NatDaddr: addrTo16(e.NATDst.Addr()),
		NatSport: htons(e.NATSrc.Port()), NatDport: htons(e.NATDst.Port()), Nat: e.NAT,
		CreatedNs: e.Created, LastNs: e.Last, Packets: e.Packets, Bytes: e.Bytes,
	}
	if e.Reply {
		v.Dir = uint8(bpf.CalyxCxCtDirCX_CT_REPLY)
	}
	// The fast path's cache (ifindex, route) is not carried: the first
	// packet fills it again.
	v.Tcp.SeqEnd, v.Tcp.MaxWin, v.Tcp.Flags, v.Tcp.State = e.SeqEnd, e.MaxWin, e.TCPFlags, tcpStateToBPF(e)
	return v
}

// ctNormalize is the cx_ct_v2 key of a direction's tuple and the side (0:
// a, 1: b) its source is, as cx_ct_key_of computes them.
func ctNormalize(k CTKey) (bpf.CalyxCxCtKey, int) {
	s, d := k.Src.Addr().Unmap(), k.Dst.Addr().Unmap()
	c := s.Compare(d)
	side := 0
	if c > 0 || (c == 0 && !IsICMP(k.Proto) && k.Src.Port() > k.Dst.Port()) {
		side = 1
	}
	out := bpf.CalyxCxCtKey{Proto: k.Proto}
	a, b := k.Src, k.Dst
	if side == 1 {
		a, b = b, a
	}
	out.AddrA, out.AddrB = addrTo16(a.Addr()), addrTo16(b.Addr())
	if IsICMP(k.Proto) {
		out.PortA = htons(k.Src.Port())
	} else {
		out.PortA, out.PortB = htons(a.Port()), htons(b.Port())
	}
	return out, side
}

// ctDirections shows a cx_ct_v2 entry as its two directions, the
// original first.
func ctDirections(k bpf.CalyxCxCtKey, v bpf.CalyxCxCtEntry) [2]struct {
	Key   CTKey
	Entry CTEntry
} {
	ends := [2]netip.AddrPort{
		netip.AddrPortFrom(addrFrom16(k.AddrA), ntohs(k.PortA)),
		netip.AddrPortFrom(addrFrom16(k.AddrB), ntohs(k.PortB)),
	}
	orig := 0
	if v.Side[1].Tcp.State&uint8(bpf.CalyxCxCtSeqCX_CT_SIDE_ORIG) != 0 {
		orig = 1
	}
	var out [2]struct {
		Key   CTKey
		Entry CTEntry
	}
	for i, s := range []int{orig, 1 - orig} {
		src, dst := ends[s], ends[1-s]
		if IsICMP(k.Proto) {
			src = netip.AddrPortFrom(src.Addr(), ntohs(k.PortA))
			dst = netip.AddrPortFrom(dst.Addr(), 0)
		}
		sd := v.Side[s]
		e := CTEntry{NATSrc: src, NATDst: dst, Reply: i == 1, Created: v.CreatedNs, Last: v.LastNs,
			Packets: uint64(sd.Packets), Bytes: v.Bytes[s], Ifindex: sd.Ifindex}
		tcpDirFromBPF(&e, sd.Tcp.SeqEnd, sd.Tcp.MaxWin, sd.Tcp.Flags, sd.Tcp.State)
		out[i].Key = CTKey{Src: src, Dst: dst, Proto: k.Proto}
		out[i].Entry = e
	}
	return out
}

// Conntrack calls fn for every direction of every tracked flow, the
// translated ones' first, until fn returns false. Entries come and go while
// it runs (LRU maps): a flow may be seen in a state it has since left, or
// missed. The maps are read in batches (BPF_MAP_LOOKUP_BATCH): one system
// call per few thousand entries, not two per entry.
func (m *Maps) Conntrack(fn func(CTKey, CTEntry) bool) error {
	more := true
	err := eachEntry(m.nat, NATName, func(k bpf.CalyxCxNatKey, v bpf.CalyxCxNatEntry) bool {
		more = fn(natKeyFromBPF(k), natEntryFromBPF(v))
		return more
	})
	if err != nil || !more {
		return err
	}
	return eachEntry(m.ct, CTName, func(k bpf.CalyxCxCtKey, v bpf.CalyxCxCtEntry) bool {
		for _, d := range ctDirections(k, v) {
			if !fn(d.Key, d.Entry) {
				return false
			}
		}
		return true
	})
}

// batchSize is how many entries one batch call reads or deletes.
const batchSize = 4096

// eachEntry calls fn for every entry of mp until it returns false, in
// batches; where the kernel refuses batches it falls back to iterating.
func eachEntry[K, V any](mp *ebpf.Map, name string, fn func(K, V) bool) error {
	keys, vals := make([]K, batchSize), make([]V, batchSize)
	var cursor ebpf.MapBatchCursor
	for {
		n, err := mp.BatchLookup(&cursor, keys, vals, nil)
		for i := range n {
			if !fn(keys[i], vals[i]) {
				return nil
			}
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil
		}
		if errors.Is(err, ebpf.ErrNotSupported) && n == 0 {
			break
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", name, err)
		}
	}
	var k K
	var v V
	it := mp.Iterate()
	for it.Next(&k, &v) {
		if !fn(k, v) {
			return nil
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("iterate %s: %w", name, err)
	}
	return nil
}

// deleteKeys removes keys from mp in batches and returns how many it
// removed; keys that are gone already are passed over.
func deleteKeys[K any](mp *ebpf.Map, name string, keys []K) (int, error) {
	deleted := 0
	for len(keys) > 0 {
		chunk := keys[:min(len(keys), batchSize)]
		n, err := mp.BatchDelete(chunk, nil)
		deleted += n
		switch {
		case err == nil:
			keys = keys[len(chunk):]
		case errors.Is(err, ebpf.ErrKeyNotExist):
			// The batch stops at a missing key: go on after it.
			keys = keys[n+1:]
		case errors.Is(err, ebpf.ErrNotSupported):
			for _, k := range keys {
				if err := mp.Delete(k); err == nil {
					deleted++
				} else if !errors.Is(err, ebpf.ErrKeyNotExist) {
					return deleted, fmt.Errorf("delete %s entry: %w", name, err)
				}
			}
			return deleted, nil
		default:
			return deleted, fmt.Errorf("delete %s entries: %w", name, err)
		}
	}
	return deleted, nil
}

// DeleteFlows removes flows by their map entries: translated flows'
// directions from cx_nat_v2 (translated) and tracked flows from cx_ct_v2
// (tracked: either direction's tuple). Missing entries are not errors. It
// returns how many entries each map lost.
func (m *Maps) DeleteFlows(translated, tracked []CTKey) (nNAT, nCT int, err error) {
	nk := make([]bpf.CalyxCxNatKey, len(translated))
	for i, k := range translated {
		nk[i] = natKeyToBPF(k)
	}
	if nNAT, err = deleteKeys(m.nat, NATName, nk); err != nil {
		return nNAT, 0, err
	}
	ck := make([]bpf.CalyxCxCtKey, len(tracked))
	for i, k := range tracked {
		ck[i], _ = ctNormalize(k)
	}
	nCT, err = deleteKeys(m.ct, CTName, ck)
	return nNAT, nCT, err
}

// DeleteConntrack removes the flows' entries that keys name (a direction's
// tuple: its cx_nat_v2 entry, or its flow's one cx_ct_v2 entry); missing
// ones are not errors. It returns how many map entries were removed.
func (m *Maps) DeleteConntrack(keys []CTKey) (int, error) {
	tracked, translated, err := m.DeleteConntrackByTable(keys)
	return tracked + translated, err
}

// DeleteConntrackByTable is DeleteConntrack counting the entries removed
// from cx_ct_v2 and from cx_nat_v2 apart.
func (m *Maps) DeleteConntrackByTable(keys []CTKey) (tracked, translated int, err error) {
	for _, k := range keys {
		err := m.nat.Delete(natKeyToBPF(k))
		if err == nil {
			translated++
			continue
		}
		if !errors.Is(err, ebpf.ErrKeyNotExist) {
			return tracked, translated, fmt.Errorf("delete %s entry: %w", NATName, err)
		}
		ck, _ := ctNormalize(k)
		err = m.ct.Delete(ck)
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			continue
		}
		if err != nil {
			return tracked, translated, fmt.Errorf("delete %s entry: %w", CTName, err)
		}
		tracked++
	}
	return tracked, translated, nil
}

// FragsInFlight counts cx_frags' entries: fragmented datagrams whose later
// fragments may still come.
func (m *Maps) FragsInFlight() (int, error) {
	return countEntries[bpf.CalyxCxFragKey, bpf.CalyxCxFrag](m.frags, FragsName)
}

// Put outcomes of PutTranslated and PutTracked.
type PutResult int

const (
	PutKept     PutResult = iota // the maps' own entry stands
	PutWritten                   // there was none: written
	PutReplaced                  // the maps' entry was older (its last packet): replaced
)

// PutTranslated writes one direction of a translated flow into cx_nat_v2.
// An entry the tuple has already stands unless newer is set and its last
// packet is older than e's. The migration of an older layout uses it.
func (m *Maps) PutTranslated(k CTKey, e CTEntry, newer bool) (PutResult, error) {
	if e.NAT == 0 {
		return PutKept, fmt.Errorf("put %s entry %v: no translation (NAT bits 0)", NATName, k)
	}
	var cur bpf.CalyxCxNatEntry
	return m.putOrNewer(m.nat, NATName, natKeyToBPF(k), natEntryToBPF(e), newer, e.Last, &cur,
		func() uint64 { return cur.LastNs })
}

// PutTracked writes a flow without translation into cx_ct_v2 from its
// directions (reply may be nil when only the original is known). An entry
// the flow has already stands unless newer is set and its last packet is
// older than the directions'.
func (m *Maps) PutTracked(orig CTKey, o CTEntry, reply *CTEntry, newer bool) (PutResult, error) {
	ck, side := ctNormalize(orig)
	var v bpf.CalyxCxCtEntry
	v.CreatedNs, v.LastNs = o.Created, o.Last
	set := func(s int, e CTEntry, isOrig bool) {
		sd := &v.Side[s]
		sd.Packets = uint32(e.Packets)
		sd.Ifindex = e.Ifindex
		sd.Tcp.SeqEnd, sd.Tcp.MaxWin, sd.Tcp.Flags, sd.Tcp.State = e.SeqEnd, e.MaxWin, e.TCPFlags, tcpStateToBPF(e)
		if isOrig {
			sd.Tcp.State |= uint8(bpf.CalyxCxCtSeqCX_CT_SIDE_ORIG)
		}
		v.Bytes[s] = e.Bytes
	}
	set(side, o, true)
	if reply != nil {
		set(1-side, *reply, false)
		v.LastNs = max(v.LastNs, reply.Last)
		v.CreatedNs = min(v.CreatedNs, reply.Created)
	}
	var cur bpf.CalyxCxCtEntry
	return m.putOrNewer(m.ct, CTName, ck, v, newer, v.LastNs, &cur, func() uint64 { return cur.LastNs })
}

// putOrNewer writes k's value v unless k has one; with newer, one whose
// last packet (curLast, read into cur) is older than last is replaced.
func (m *Maps) putOrNewer(mp *ebpf.Map, name string, k, v any, newer bool, last uint64, cur any,
	curLast func() uint64) (PutResult, error) {
	err := mp.Update(k, v, ebpf.UpdateNoExist)
	if err == nil {
		return PutWritten, nil
	}
	if !errors.Is(err, ebpf.ErrKeyExist) {
		return PutKept, fmt.Errorf("put %s entry: %w", name, err)
	}
	if !newer {
		return PutKept, nil
	}
	if err := mp.Lookup(k, cur); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return PutKept, nil // gone meanwhile (LRU)
		}
		return PutKept, fmt.Errorf("read %s entry: %w", name, err)
	}
	if curLast() >= last {
		return PutKept, nil
	}
	if err := mp.Update(k, v, ebpf.UpdateExist); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return PutKept, fmt.Errorf("replace %s entry: %w", name, err)
	}
	return PutReplaced, nil
}

// ConntrackSize is what the conntrack maps hold now and can hold.
type ConntrackSize struct {
	Tracked, TrackedCapacity       int // cx_ct_v2: flows
	Translated, TranslatedCapacity int // cx_nat_v2: directions (two per flow)
	Frags, FragsCapacity           int // cx_frags: fragmented datagrams in flight
}

// ConntrackSize counts the conntrack maps' entries (a walk of each: as
// costly as a dump).
func (m *Maps) ConntrackSize() (ConntrackSize, error) {
	s := ConntrackSize{TrackedCapacity: int(m.ct.MaxEntries()), TranslatedCapacity: int(m.nat.MaxEntries()),
		FragsCapacity: int(m.frags.MaxEntries())}
	var err error
	if s.Tracked, err = countEntries[bpf.CalyxCxCtKey, bpf.CalyxCxCtEntry](m.ct, CTName); err != nil {
		return s, err
	}
	if s.Translated, err = countEntries[bpf.CalyxCxNatKey, bpf.CalyxCxNatEntry](m.nat, NATName); err != nil {
		return s, err
	}
	s.Frags, err = countEntries[bpf.CalyxCxFragKey, bpf.CalyxCxFrag](m.frags, FragsName)
	return s, err
}

func countEntries[K, V any](mp *ebpf.Map, name string) (int, error) {
	var k K
	var v V
	n := 0
	it := mp.Iterate()
	for it.Next(&k, &v) {
		n++
	}
	if err := it.Err(); err != nil {
		return n, fmt.Errorf("count %s: %w", name, err)
	}
	return n, nil
}

// ConntrackCapacity is cx_ct_v2's size.
func (m *Maps) ConntrackCapacity() uint32 { return m.ct.MaxEntries() }

// ConntrackCapacities are the sizes of cx_ct_v2, cx_nat_v2 and cx_frags.
func (m *Maps) ConntrackCapacities() (tracked, translated, frags int) {
	return int(m.ct.MaxEntries()), int(m.nat.MaxEntries()), int(m.frags.MaxEntries())
}

// ConntrackStats are what the programs did to the conntrack maps since
// they were pinned (cx_ct_stats, summed over CPUs).
type ConntrackStats struct {
	TrackedCreated, TrackedDeleted       uint64 // cx_ct_v2 entries
	TranslatedCreated, TranslatedDeleted uint64 // cx_nat_v2 entries
	FragOrphans                          uint64 // later fragments without their first
}

// ConntrackStats reads cx_ct_stats.
func (m *Maps) ConntrackStats() (ConntrackStats, error) {
	var s ConntrackStats
	for _, c := range []struct {
		stat bpf.CalyxCxCtStat
		out  *uint64
	}{
		{bpf.CalyxCxCtStatCX_CTS_CT_CREATED, &s.TrackedCreated},
		{bpf.CalyxCxCtStatCX_CTS_CT_DELETED, &s.TrackedDeleted},
		{bpf.CalyxCxCtStatCX_CTS_NAT_CREATED, &s.TranslatedCreated},
		{bpf.CalyxCxCtStatCX_CTS_NAT_DELETED, &s.TranslatedDeleted},
		{bpf.CalyxCxCtStatCX_CTS_FRAG_ORPHANS, &s.FragOrphans},
	} {
		var per []uint64
		if err := m.ctStats.Lookup(uint32(c.stat), &per); err != nil {
			return s, fmt.Errorf("read %s[%d]: %w", bpf.CalyxMapCxCtStats, c.stat, err)
		}
		for _, v := range per {
			*c.out += v
		}
	}
	return s, nil
}
