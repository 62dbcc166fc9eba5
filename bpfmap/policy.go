package bpfmap

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"

	"github.com/calyxnet/calyx/bpf"
)

// Identity is the numeric identity of a remote address for policy: the set
// of selectors and nets of every policy rule that it matches. Identity 0
// matches none of them (the world).
type Identity uint32

// IPCacheEntry is an entry of cx_ipcache: the identity of the addresses of
// a prefix (longest match wins).
type IPCacheEntry struct {
	Identity Identity
	// NetIdentity is where a table without entries for Identity sends
	// the lookup next (then to 0): the identity of the address's nets
	// alone when it matches selectors, else of its nets but the longest
	// (they are nested); 0 when that is empty. An endpoint in a net many
	// rules name (the cluster's CIDR) thus needs no entries of its own
	// where only that net decides.
	NetIdentity Identity
	// Host marks this node's own addresses: traffic from them into a
	// workload is always allowed, and traffic to them from a workload is
	// governed by Config.endpointToHostAction.
	Host bool
}

// PolicyAction is what a cx_policy entry decides.
type PolicyAction uint8

// Policy actions. PolicySport means the decision depends on the source
// port too: look up the sub-table Verdict.Sub with the source port.
const (
	PolicyAllow PolicyAction = 1
	PolicyDeny  PolicyAction = 2
	PolicySport PolicyAction = 3
)

func (a PolicyAction) String() string {
	switch a {
	case PolicyAllow:
		return "allow"
	case PolicyDeny:
		return "deny"
	case PolicySport:
		return "by-source-port"
	}
	return "unknown"
}

// SubTableFlag marks the table numbers of source-port sub-tables.
const SubTableFlag uint32 = 1 << 31

// Special rule numbers; real rules have numbers >= FirstRuleID.
const (
	RuleDefaultDenyIngress uint32 = 1 // selected for ingress, no rule allowed it
	RuleDefaultDenyEgress  uint32 = 2 // selected for egress, no rule allowed it
	RuleHostDrop           uint32 = 3 // to this host, endpointToHostAction Drop
	FirstRuleID            uint32 = 16
)

// PolicyKey is a key of cx_policy, an LPM trie. Table and Identity always
// match exactly; Bits says how much of (Proto, Port) does: 0 any protocol,
// 8 this protocol with any port, 8+n this protocol and the first n bits of
// Port. For TCP, UDP and SCTP Port is the destination port; for ICMP and
// ICMPv6 it is type<<8 | code. In a source-port sub-table (Table has
// SubTableFlag) Identity and Proto are 0 and Port is the source port.
//
// A packet's lookup is (its endpoint's table, the remote identity, its
// protocol, its port) and, when that finds nothing, the same with the
// remote's net identity, then with identity 0: a table has entries for
// identity 0 covering every protocol and port, and for another identity
// (each with full coverage) only where it decides otherwise than the one
// it falls back to.
type PolicyKey struct {
	Table    uint32
	Identity Identity
	Bits     int
	Proto    uint8
	Port     uint16
}

// PolicyVerdict is a value of cx_policy.
type PolicyVerdict struct {
	Action PolicyAction
	// Rule is the rule that decided (for hit counters), or one of the
	// Rule* specials.
	Rule uint32
	// LogRule is the first Log rule the packet matched before Rule, or 0.
	LogRule uint32
	// Sub is the source-port sub-table when Action is PolicySport.
	Sub uint32
}

// RuleHitKey is a key of cx_policy_hits: one rule's hits on one endpoint's
// interface.
type RuleHitKey struct {
	Ifindex uint32
	Rule    uint32
}

// EndpointToHost is what becomes of a workload's traffic to its own host
// (Config.endpointToHostAction), as cx_config holds it.
type EndpointToHost uint8

// The endpoint-to-host actions.
const (
	EndpointToHostAccept EndpointToHost = 0 // always allowed
	EndpointToHostDrop   EndpointToHost = 1 // dropped, except DHCP, DNS to the host and metadata
	EndpointToHostReturn EndpointToHost = 2 // the endpoint's egress policy decides
)

// Prefilter is the content of cx_prefilter: source prefixes the underlay
// drops first.
type Prefilter map[netip.Prefix]struct{}

func (k PolicyKey) toBPF() bpf.CalyxCxPolicyKey {
	return bpf.CalyxCxPolicyKey{
		Prefixlen: uint32(64 + k.Bits),
		Table:     k.Table,
		Identity:  uint32(k.Identity),
		Proto:     k.Proto,
		Port:      [2]uint8{uint8(k.Port >> 8), uint8(k.Port)},
	}
}

func policyKeyFromBPF(k bpf.CalyxCxPolicyKey) PolicyKey {
	return PolicyKey{Table: k.Table, Identity: Identity(k.Identity), Bits: int(k.Prefixlen) - 64, Proto: k.Proto,
		Port: uint16(k.Port[0])<<8 | uint16(k.Port[1])}
}

func (v PolicyVerdict) toBPF() bpf.CalyxCxPolicyVerdict {
	return bpf.CalyxCxPolicyVerdict{Action: uint32(v.Action), Rule: v.Rule, LogRule: v.LogRule, Sub: v.Sub}
}

func policyVerdictFromBPF(v bpf.CalyxCxPolicyVerdict) PolicyVerdict {
	return PolicyVerdict{Action: PolicyAction(v.Action), Rule: v.Rule, LogRule: v.LogRule, Sub: v.Sub}
}

func (e IPCacheEntry) toBPF() bpf.CalyxCxIdentity {
	out := bpf.CalyxCxIdentity{Id: uint32(e.Identity), NetId: uint32(e.NetIdentity)}
	if e.Host {
		out.Flags |= uint32(bpf.CalyxCxIdentityFlagsCX_ID_HOST)
	}
	return out
}

func ipcacheEntryFromBPF(v bpf.CalyxCxIdentity) IPCacheEntry {
	return IPCacheEntry{Identity: Identity(v.Id), NetIdentity: Identity(v.NetId),
		Host: v.Flags&uint32(bpf.CalyxCxIdentityFlagsCX_ID_HOST) != 0}
}

// ResolvePolicy is the programs' lookup order in a table (cx_policy_lookup
// in bpf/policy.h), over get, a longest-prefix match of a full key (Bits
// 24): the remote's identity, else its net identity, else identity 0, then
// a source-port sub-table when the verdict says so. It returns false when
// nothing matches; get's error ends it.
func ResolvePolicy(get func(PolicyKey) (PolicyVerdict, bool, error), table uint32, id, netID Identity,
	proto uint8, port, sport uint16) (PolicyVerdict, bool, error) {
	v, ok, err := get(PolicyKey{Table: table, Identity: id, Bits: 24, Proto: proto, Port: port})
	if err == nil && !ok && netID != 0 && netID != id {
		v, ok, err = get(PolicyKey{Table: table, Identity: netID, Bits: 24, Proto: proto, Port: port})
	}
	if err == nil && !ok && id != 0 {
		v, ok, err = get(PolicyKey{Table: table, Bits: 24, Proto: proto, Port: port})
	}
	if err == nil && ok && v.Action == PolicySport {
		v, ok, err = get(PolicyKey{Table: v.Sub, Bits: 24, Port: sport})
	}
	return v, ok, err
}

// LookupPolicy is ResolvePolicy on cx_policy itself: the verdict the
// programs would find for a packet to or from a remote of identity id and
// net identity netID.
func (m *Maps) LookupPolicy(table uint32, id, netID Identity, proto uint8, port, sport uint16) (PolicyVerdict, bool, error) {
	return ResolvePolicy(m.Policy.Lookup, table, id, netID, proto, port, sport)
}

// PolicyHits returns every rule's hit counter, summed over CPUs.
func (m *Maps) PolicyHits() (map[RuleHitKey]Counter, error) {
	out := make(map[RuleHitKey]Counter)
	var k bpf.CalyxCxRuleHitKey
	var per []bpf.CalyxCxCounter
	it := m.hits.Iterate()
	for it.Next(&k, &per) {
		out[RuleHitKey{Ifindex: k.Ifindex, Rule: k.Rule}] = sumCPUs(per)
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("iterate %s: %w", bpf.CalyxMapCxPolicyHits, err)
	}
	return out, nil
}

// DeletePolicyHits removes every rule counter of ifindex, so that a later
// interface that reuses the ifindex starts from zero.
func (m *Maps) DeletePolicyHits(ifindex uint32) error {
	var keys []bpf.CalyxCxRuleHitKey
	var k bpf.CalyxCxRuleHitKey
	var per []bpf.CalyxCxCounter
	it := m.hits.Iterate()
	for it.Next(&k, &per) {
		if k.Ifindex == ifindex {
			keys = append(keys, k)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("iterate %s: %w", bpf.CalyxMapCxPolicyHits, err)
	}
	for _, k := range keys {
		if err := m.hits.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete %s[%d/%d]: %w", bpf.CalyxMapCxPolicyHits, k.Ifindex, k.Rule, err)
		}
	}
	return nil
}

// PolicyEventKind says why the dataplane sent a PolicyEvent.
type PolicyEventKind uint8

// The kinds of PolicyEvent.
const (
	// PolicyEventLog: a Log rule matched (Rule is the Log rule).
	PolicyEventLog = PolicyEventKind(bpf.CalyxCxPolicyEventKindCX_PEV_LOG)
	// PolicyEventDeny: policy denied a new flow (Rule is the deciding
	// rule, a default deny included).
	PolicyEventDeny = PolicyEventKind(bpf.CalyxCxPolicyEventKindCX_PEV_DENY)
)

// PolicyEvent is one packet a Log rule matched, or the first packet of a
// flow policy denied. Each CPU sends at most CX_EVENTS_PER_SEC (calyx.h)
// a second; EventsSuppressed counts the rest.
type PolicyEvent struct {
	Kind    PolicyEventKind
	Ifindex uint32
	Rule    uint32
	Proto   uint8
	Src     netip.AddrPort
	Dst     netip.AddrPort // for ICMP the port is type<<8 | code
	Allowed bool
}

// EventsSuppressed returns how many policy events the dataplane's per-CPU
// budget has suppressed since the map was created, summed over CPUs.
func (m *Maps) EventsSuppressed() (uint64, error) {
	var per []bpf.CalyxCxEventWindow
	if err := m.budget.Lookup(uint32(0), &per); err != nil {
		return 0, fmt.Errorf("read %s: %w", bpf.CalyxMapCxEventBudget, err)
	}
	var n uint64
	for _, w := range per {
		n += uint64(w.Suppressed)
	}
	return n, nil
}

// RingReader reads a ring buffer's records, each decoded as a T.
type RingReader[T any] struct {
	r      *ringbuf.Reader
	decode func([]byte) (T, error)
}

func openRing[T any](m *ebpf.Map, name string, decode func([]byte) (T, error)) (*RingReader[T], error) {
	r, err := ringbuf.NewReader(m)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", name, err)
	}
	return &RingReader[T]{r: r, decode: decode}, nil
}

// Read blocks for the next record; after Close it returns an error that
// wraps os.ErrClosed.
func (l *RingReader[T]) Read() (T, error) {
	rec, err := l.r.Read()
	if err != nil {
		var zero T
		return zero, err
	}
	return l.decode(rec.RawSample)
}

// Close stops the reader.
func (l *RingReader[T]) Close() error { return l.r.Close() }

// PolicyLogReader reads PolicyEvents.
type PolicyLogReader = RingReader[PolicyEvent]

// PolicyLog opens a reader of the policy events (Log rules, denials).
// Close it to stop a pending Read.
func (m *Maps) PolicyLog() (*PolicyLogReader, error) {
	return openRing(m.log, bpf.CalyxMapCxPolicyLog, func(raw []byte) (PolicyEvent, error) {
		var e bpf.CalyxCxPolicyEvent
		if err := binary.Read(bytes.NewReader(raw), binary.NativeEndian, &e); err != nil {
			return PolicyEvent{}, fmt.Errorf("decode %s event: %w", bpf.CalyxMapCxPolicyLog, err)
		}
		return PolicyEvent{Kind: PolicyEventKind(e.Kind), Ifindex: e.Ifindex, Rule: e.Rule, Proto: e.Proto,
			Src:     netip.AddrPortFrom(addrFrom16(e.Saddr), e.Sport),
			Dst:     netip.AddrPortFrom(addrFrom16(e.Daddr), e.Dport),
			Allowed: e.Allowed != 0}, nil
	})
}

// DropEvent is one packet the dataplane dropped (but those policy denied,
// which come as PolicyEvents with their rule), within the per-CPU event
// budget: Head is the start of the packet as it was dropped, from its
// Ethernet header (at most 128 bytes; none for a runt).
type DropEvent struct {
	Ifindex uint32
	Reason  Reason
	Len     uint32 // the packet's length as the program got it
	Head    []byte
}

// DropLogReader reads DropEvents.
type DropLogReader = RingReader[DropEvent]

// DropLog opens a reader of the dataplane's drop events. Close it to stop
// a pending Read.
func (m *Maps) DropLog() (*DropLogReader, error) {
	return openRing(m.drops, bpf.CalyxMapCxDropLog, func(raw []byte) (DropEvent, error) {
		var e bpf.CalyxCxDropEvent
		if err := binary.Read(bytes.NewReader(raw), binary.NativeEndian, &e); err != nil {
			return DropEvent{}, fmt.Errorf("decode %s event: %w", bpf.CalyxMapCxDropLog, err)
		}
		n := min(int(e.HeadLen), len(e.Head))
		return DropEvent{Ifindex: e.Ifindex, Reason: Reason(e.Reason), Len: e.Len, Head: bytes.Clone(e.Head[:n])}, nil
	})
}
