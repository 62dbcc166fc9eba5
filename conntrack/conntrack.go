// Package conntrack reads calyx's BPF connection tracking as flows: it
// pairs the two directions of each flow (bpfmap shows a cx_ct_v2 flow's one
// entry as two directions, and a translated flow has an entry per
// direction in cx_nat_v2), names the flow's state, and expires flows that
// have been idle past their state's timeout. The agent's garbage collector
// and calyxctl share it.
package conntrack

import (
	"cmp"
	"net/netip"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"github.com/calyxnet/calyx/bpfmap"
)

// Timeouts by state: how long a flow may stay idle before it is removed.
// The programs never delete entries; without this the LRU would only make
// room when full.
var Timeouts = map[State]time.Duration{
	StateSynSent:     30 * time.Second,
	StateEstablished: time.Hour,
	StateClosing:     30 * time.Second,
	StateUDP:         60 * time.Second,
	StateICMP:        30 * time.Second,
	StateOther:       60 * time.Second,
}

// State is what has been seen of a flow.
type State string

// Flow states.
const (
	StateSynSent     State = "syn-sent"    // TCP: a SYN, no answer yet
	StateEstablished State = "established" // TCP: answered, no FIN or RST
	StateClosing     State = "closing"     // TCP: FIN or RST seen
	StateUDP         State = "udp"
	StateICMP        State = "icmp"
	StateOther       State = "other"
)

// Entry is one direction of a flow: its key and entry.
type Entry struct {
	Key   bpfmap.CTKey
	Value bpfmap.CTEntry
}

// Flow is a tracked flow: its original direction (the first packet's) and
// its reply direction. Either may be missing when the LRU evicted it.
type Flow struct {
	Orig, Reply *Entry
}

// PairKey is the key of the other direction of an entry: what packets the
// other way carry once the entry's rewrite has happened.
func PairKey(k bpfmap.CTKey, v bpfmap.CTEntry) bpfmap.CTKey {
	if bpfmap.IsICMP(k.Proto) {
		// The echo identifier travels in both directions in one field.
		return bpfmap.CTKey{Src: netip.AddrPortFrom(v.NATDst.Addr(), v.NATSrc.Port()), Dst: netip.AddrPortFrom(v.NATSrc.Addr(), 0), Proto: k.Proto}
	}
	return bpfmap.CTKey{Src: v.NATDst, Dst: v.NATSrc, Proto: k.Proto}
}

// Flows reads the table and pairs its entries, in a stable order.
func Flows(m *bpfmap.Maps) ([]Flow, error) {
	flows, err := flowsUnsorted(m)
	sortFlows(flows)
	return flows, err
}

func flowsUnsorted(m *bpfmap.Maps) ([]Flow, error) {
	entries := make(map[bpfmap.CTKey]bpfmap.CTEntry)
	if err := m.Conntrack(func(k bpfmap.CTKey, v bpfmap.CTEntry) bool {
		entries[k] = v
		return true
	}); err != nil {
		return nil, err
	}
	return pair(entries), nil
}

// Pair groups entries into flows, in a stable order.
func Pair(entries map[bpfmap.CTKey]bpfmap.CTEntry) []Flow {
	flows := pair(entries)
	sortFlows(flows)
	return flows
}

// sortFlows orders flows by protocol, then their first entry's tuple.
func sortFlows(flows []Flow) {
	slices.SortFunc(flows, func(a, b Flow) int {
		ka, kb := a.any().Key, b.any().Key
		return cmp.Or(cmp.Compare(ka.Proto, kb.Proto), ka.Src.Compare(kb.Src), ka.Dst.Compare(kb.Dst))
	})
}

func pair(entries map[bpfmap.CTKey]bpfmap.CTEntry) []Flow {
	seen := make(map[bpfmap.CTKey]bool, len(entries))
	var flows []Flow
	for k, v := range entries {
		if seen[k] {
			continue
		}
		seen[k] = true
		e := &Entry{Key: k, Value: v}
		var other *Entry
		pk := PairKey(k, v)
		if pv, ok := entries[pk]; ok && !seen[pk] && pv.Reply != v.Reply {
			seen[pk] = true
			other = &Entry{Key: pk, Value: pv}
		}
		f := Flow{Orig: e, Reply: other}
		if v.Reply {
			f = Flow{Orig: other, Reply: e}
		}
		flows = append(flows, f)
	}
	return flows
}

func (f Flow) any() *Entry {
	if f.Orig != nil {
		return f.Orig
	}
	return f.Reply
}

// Proto is the flow's IP protocol number.
func (f Flow) Proto() uint8 { return f.any().Key.Proto }

// NAT is the flow's translation bits (bpfmap.NATDNAT, bpfmap.NATSNAT).
func (f Flow) NAT() uint8 { return f.any().Value.NAT }

// State names what has been seen of the flow.
func (f Flow) State() State {
	switch f.Proto() {
	case bpfmap.ProtoUDP:
		return StateUDP
	case bpfmap.ProtoICMP, bpfmap.ProtoICMPv6:
		return StateICMP
	case bpfmap.ProtoTCP:
	default:
		return StateOther
	}
	var orig, reply uint8
	if f.Orig != nil {
		orig = f.Orig.Value.TCPFlags
	}
	if f.Reply != nil {
		reply = f.Reply.Value.TCPFlags
	}
	switch {
	case (orig|reply)&(bpfmap.TCPFin|bpfmap.TCPRst) != 0:
		return StateClosing
	case reply&bpfmap.TCPAck != 0:
		return StateEstablished
	}
	return StateSynSent
}

// Created is when the flow's first entry was written (CLOCK_MONOTONIC ns).
func (f Flow) Created() uint64 {
	c := f.any().Value.Created
	if f.Orig != nil && f.Reply != nil {
		c = min(f.Orig.Value.Created, f.Reply.Value.Created)
	}
	return c
}

// Last is when the flow last carried a packet (CLOCK_MONOTONIC ns).
func (f Flow) Last() uint64 {
	l := f.any().Value.Last
	if f.Orig != nil && f.Reply != nil {
		l = max(f.Orig.Value.Last, f.Reply.Value.Last)
	}
	return l
}

// Expired says whether the flow has been idle past its state's timeout.
func (f Flow) Expired(now uint64) bool {
	return now > f.Last() && time.Duration(now-f.Last()) > Timeouts[f.State()]
}

// Keys are the flow's entries' keys.
func (f Flow) Keys() []bpfmap.CTKey {
	var ks []bpfmap.CTKey
	for _, e := range []*Entry{f.Orig, f.Reply} {
		if e != nil {
			ks = append(ks, e.Key)
		}
	}
	return ks
}

// Now is CLOCK_MONOTONIC in ns: the clock bpf_ktime_get_ns reads.
func Now() uint64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return uint64(time.Now().UnixNano()) // unreachable on Linux
	}
	return uint64(ts.Nano())
}

// GCResult is what one collection did.
type GCResult struct {
	// Entries are the map entries the collection saw (a translated flow
	// has one per direction, a tracked one a single entry), Deleted
	// those it removed.
	Flows, Expired, Entries, Deleted int
	// The same per map: cx_ct_v2 (Tracked) and cx_nat_v2 (Translated).
	TrackedEntries, TranslatedEntries int
	TrackedDeleted, TranslatedDeleted int
	// SNAT is the source-port use of the flows left (not expired), by the
	// address their source is translated to (SNATPortUse).
	SNAT map[netip.Addr]PortUse
}

// PortUse is how the source ports of one translated source address are
// used. A source port need only be unique per destination (address, port,
// protocol), so the ports of a range run out toward one destination, not
// overall: Busiest is what to compare with the range.
type PortUse struct {
	// Flows are the flows whose source is translated to the address: one
	// port each, toward their destination.
	Flows int
	// Destinations are the distinct destinations those flows go to.
	Destinations int
	// Busiest is the most flows toward one destination.
	Busiest int
}

// snatDest is a source-translated flow's translated source address and
// destination: the space one source port is taken in.
type snatDest struct {
	src, dst netip.Addr
	port     uint16
	proto    uint8
}

// SNATPortUse counts the source ports that flows with a translated source
// (bpfmap.NATSNAT: natOutgoing, the host's own flows to a floating IP,
// hairpins) hold, by the address the source is translated to. A flow whose
// original-direction entry the LRU evicted is counted from its reply entry,
// which keeps the port taken.
func SNATPortUse(flows []Flow) map[netip.Addr]PortUse {
	perDest := map[snatDest]int{}
	for _, f := range flows {
		if f.NAT()&bpfmap.NATSNAT == 0 {
			continue
		}
		var d snatDest
		if f.Orig != nil {
			v := f.Orig.Value
			d = snatDest{src: v.NATSrc.Addr(), dst: v.NATDst.Addr(), port: v.NATDst.Port(), proto: f.Proto()}
		} else {
			// The reply comes from the destination to the translated source.
			k := f.Reply.Key
			d = snatDest{src: k.Dst.Addr(), dst: k.Src.Addr(), port: k.Src.Port(), proto: f.Proto()}
		}
		if bpfmap.IsICMP(d.proto) {
			// An echo's identifier is its port; the destination has none.
			d.port = 0
		}
		d.src, d.dst = d.src.Unmap(), d.dst.Unmap()
		perDest[d]++
	}
	out := map[netip.Addr]PortUse{}
	for d, n := range perDest {
		u := out[d.src]
		u.Flows += n
		u.Destinations++
		u.Busiest = max(u.Busiest, n)
		out[d.src] = u
	}
	return out
}

// Translated says whether the flow is translated (its entries are in
// cx_nat_v2); an untranslated one has one cx_ct_v2 entry.
func (f Flow) Translated() bool { return f.NAT() != 0 }

// GC removes the flows that have been idle past their timeout and returns
// what it saw. A flow that carries a packet while it is being removed
// starts again as a new flow on its next packet (TCP: only at a SYN). The
// maps are read and the expired flows deleted in batches, unsorted: a
// collection costs a few system calls per thousand flows.
func GC(m *bpfmap.Maps, now uint64) (GCResult, error) {
	flows, err := flowsUnsorted(m)
	if err != nil {
		return GCResult{}, err
	}
	r := GCResult{Flows: len(flows)}
	var translated, tracked []bpfmap.CTKey
	var live []Flow // the source-translated flows that stay
	for _, f := range flows {
		if f.Translated() {
			r.TranslatedEntries += len(f.Keys())
		} else {
			r.TrackedEntries++
		}
		if !f.Expired(now) {
			if f.NAT()&bpfmap.NATSNAT != 0 {
				live = append(live, f)
			}
			continue
		}
		r.Expired++
		if f.Translated() {
			translated = append(translated, f.Keys()...)
		} else {
			tracked = append(tracked, f.any().Key)
		}
	}
	r.Entries = r.TrackedEntries + r.TranslatedEntries
	r.SNAT = SNATPortUse(live)
	r.TranslatedDeleted, r.TrackedDeleted, err = m.DeleteFlows(translated, tracked)
	r.Deleted = r.TrackedDeleted + r.TranslatedDeleted
	return r, err
}

// Flush removes every entry and returns how many.
func Flush(m *bpfmap.Maps) (int, error) {
	var keys []bpfmap.CTKey
	if err := m.Conntrack(func(k bpfmap.CTKey, _ bpfmap.CTEntry) bool {
		keys = append(keys, k)
		return true
	}); err != nil {
		return 0, err
	}
	return m.DeleteConntrack(keys)
}
