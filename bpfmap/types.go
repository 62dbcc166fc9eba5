// Package maps gives typed Go views of calyx's BPF maps. Its domain types
// (Iface, Route, CounterKey, Link) are kept apart from the bpf2go structs,
// with converters between them, so the agent and calyxctl never touch
// raw bytes.
package bpfmap

import (
	"encoding/json"
	"fmt"
	"math/bits"
	"net"
	"net/netip"
	"time"

	"github.com/calyxnet/calyx/bpf"
)

// MAC is a 6-byte Ethernet address; unlike net.HardwareAddr it is
// comparable, so desired and actual map values can be compared with ==.
type MAC [6]byte

// ParseMAC parses a colon-separated Ethernet address.
func ParseMAC(s string) (MAC, error) {
	hw, err := net.ParseMAC(s)
	if err != nil {
		return MAC{}, err
	}
	if len(hw) != 6 {
		return MAC{}, fmt.Errorf("%q is not a 6-byte MAC", s)
	}
	return MAC(hw), nil
}

// MACFrom converts a net.HardwareAddr; anything but 6 bytes gives the zero MAC.
func MACFrom(hw net.HardwareAddr) MAC {
	if len(hw) != 6 {
		return MAC{}
	}
	return MAC(hw)
}

// IsZero reports whether m is 00:00:00:00:00:00 (no MAC).
func (m MAC) IsZero() bool { return m == MAC{} }

func (m MAC) String() string {
	if m.IsZero() {
		return ""
	}
	return net.HardwareAddr(m[:]).String()
}

// MarshalText renders the MAC as text (empty for none) in JSON and YAML.
func (m MAC) MarshalText() ([]byte, error) { return []byte(m.String()), nil }

// Iface is an entry of cx_ifaces: what an attached interface is.
type Iface struct {
	Workload   bool
	CheckMAC   bool // enforce MAC as the source of everything the workload sends
	EndpointID uint32
	MAC        MAC // the workload's
	HostMAC    MAC // the host side's: the answer to every ARP request
	// IngressTable and EgressTable are the endpoint's policy tables in
	// cx_policy; 0 when no policy selects it in that direction.
	IngressTable uint32
	EgressTable  uint32
	// Kind is the device the interface is; it decides how packets are
	// delivered into the workload (see IfaceKind.Peer).
	Kind IfaceKind
	// CounterSlot is where the interface's forwarding verdicts are counted
	// in cx_slot_counters (see CounterSlots); 0: none, in cx_counters.
	CounterSlot uint16
}

// IfaceKind is the kind of device a workload interface is.
type IfaceKind uint32

// Interface kinds, as the programs see them.
const (
	IfaceOther  = IfaceKind(bpf.CalyxCxIfaceKindCX_IFACE_KIND_OTHER)
	IfaceVeth   = IfaceKind(bpf.CalyxCxIfaceKindCX_IFACE_KIND_VETH)
	IfaceNetkit = IfaceKind(bpf.CalyxCxIfaceKindCX_IFACE_KIND_NETKIT)
	IfaceTap    = IfaceKind(bpf.CalyxCxIfaceKindCX_IFACE_KIND_TAP)
)

var ifaceKindNames = map[IfaceKind]string{IfaceOther: "other", IfaceVeth: "veth", IfaceNetkit: "netkit", IfaceTap: "tap"}

func (k IfaceKind) String() string {
	if s, ok := ifaceKindNames[k]; ok {
		return s
	}
	return fmt.Sprintf("kind-%d", uint32(k))
}

// MarshalText renders the kind by name in JSON and YAML.
func (k IfaceKind) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// Peer says whether packets enter the workload with bpf_redirect_peer,
// straight into its namespace: veth and netkit (whose peer is in another
// namespace). Every other kind, a VM's tap first, is delivered to the
// interface's egress.
func (k IfaceKind) Peer() bool { return k == IfaceVeth || k == IfaceNetkit }

func (v Iface) toBPF() bpf.CalyxCxIface {
	var out bpf.CalyxCxIface
	if v.Workload {
		out.Flags |= uint32(bpf.CalyxCxIfaceFlagsCX_IFACE_WORKLOAD)
	}
	if v.CheckMAC {
		out.Flags |= uint32(bpf.CalyxCxIfaceFlagsCX_IFACE_CHECK_MAC)
	}
	out.EndpointId = v.EndpointID
	out.Mac = v.MAC
	out.HostMac = v.HostMAC
	out.IngressTable = v.IngressTable
	out.EgressTable = v.EgressTable
	out.Kind = uint32(v.Kind)
	out.CounterSlot = uint32(v.CounterSlot)
	return out
}

func ifaceFromBPF(in bpf.CalyxCxIface) Iface {
	return Iface{
		Workload:     in.Flags&uint32(bpf.CalyxCxIfaceFlagsCX_IFACE_WORKLOAD) != 0,
		CheckMAC:     in.Flags&uint32(bpf.CalyxCxIfaceFlagsCX_IFACE_CHECK_MAC) != 0,
		EndpointID:   in.EndpointId,
		MAC:          in.Mac,
		HostMAC:      in.HostMac,
		IngressTable: in.IngressTable,
		EgressTable:  in.EgressTable,
		Kind:         IfaceKind(in.Kind),
		CounterSlot:  uint16(in.CounterSlot),
	}
}

// RouteType says what a route's destination is.
type RouteType uint32

// Route types, as the programs see them.
const (
	RouteLocalWorkload  = RouteType(bpf.CalyxCxRouteTypeCX_RT_LOCAL_WORKLOAD)
	RouteRemoteWorkload = RouteType(bpf.CalyxCxRouteTypeCX_RT_REMOTE_WORKLOAD)
	RouteHost           = RouteType(bpf.CalyxCxRouteTypeCX_RT_HOST)
	// RouteNode is another node's underlay address: tunnel packets are
	// accepted only from these.
	RouteNode = RouteType(bpf.CalyxCxRouteTypeCX_RT_NODE)
	// RoutePool is a workload pool: addresses in it are not "outside" for
	// natOutgoing.
	RoutePool = RouteType(bpf.CalyxCxRouteTypeCX_RT_POOL)
	// RouteFloatingIP is a floating IP; NextHop is its instance's node.
	RouteFloatingIP = RouteType(bpf.CalyxCxRouteTypeCX_RT_FIP)
)

var routeTypeNames = map[RouteType]string{
	RouteLocalWorkload:  "local-workload",
	RouteRemoteWorkload: "remote-workload",
	RouteHost:           "host",
	RouteNode:           "node",
	RoutePool:           "pool",
	RouteFloatingIP:     "floating-ip",
}

func (t RouteType) String() string {
	if s, ok := routeTypeNames[t]; ok {
		return s
	}
	return fmt.Sprintf("type-%d", uint32(t))
}

// MarshalText renders the type by name in JSON and YAML.
func (t RouteType) MarshalText() ([]byte, error) { return []byte(t.String()), nil }

// Encap is how a remote-workload route leaves the host.
type Encap uint32

// Encapsulations.
const (
	EncapNone  = Encap(bpf.CalyxCxEncapCX_ENCAP_NONE)
	EncapIPIP  = Encap(bpf.CalyxCxEncapCX_ENCAP_IPIP)
	EncapVXLAN = Encap(bpf.CalyxCxEncapCX_ENCAP_VXLAN)
)

// Overhead is the bytes each encapsulation adds to a packet on an IPv4
// underlay (IP-in-IP and 6in4 20, VXLAN 50): the workload MTU is the
// underlay's minus this.
func (e Encap) Overhead() int {
	switch e {
	case EncapIPIP:
		return 20
	case EncapVXLAN:
		return 50
	}
	return 0
}

// OverheadOn is the bytes the encapsulation adds on an underlay of the
// given family: an IPv6 outer header is 20 bytes longer than an IPv4 one
// (IPv6-in-IPv6 40, VXLAN over IPv6 70).
func (e Encap) OverheadOn(outer6 bool) int {
	o := e.Overhead()
	if outer6 && o > 0 {
		o += 20
	}
	return o
}

func (e Encap) String() string {
	switch e {
	case EncapNone:
		return "none"
	case EncapIPIP:
		return "ipip"
	case EncapVXLAN:
		return "vxlan"
	}
	return fmt.Sprintf("encap-%d", uint32(e))
}

// MarshalText renders the encapsulation by name in JSON and YAML.
func (e Encap) MarshalText() ([]byte, error) { return []byte(e.String()), nil }

// Route is an entry of cx_routes, the BPF route table.
type Route struct {
	Type    RouteType
	Ifindex uint32     // local workload: its host-side interface
	Encap   Encap      // remote workload: how packets reach NextHop
	NextHop netip.Addr // remote: the owning node's underlay address
	MAC     MAC        // local workload: its MAC, when known
	HostMAC MAC        // local workload: the host side's MAC
	// NATOutgoing marks a local workload in a natOutgoing pool: its
	// traffic to outside every pool leaves as the node.
	NATOutgoing bool
	// Peer marks a local workload whose interface takes bpf_redirect_peer
	// (IfaceKind.Peer); the others are delivered to its egress.
	Peer bool
	// CounterSlot is a local workload's interface's (Iface.CounterSlot):
	// a delivery counts to-workload there without looking the interface up.
	CounterSlot uint16
}

// UnderlayOf names the underlay a route's next hop is on: "ipv6" for an
// IPv6 address, "ipv4" for an IPv4 one, "" for none. The programs send a
// remote workload's packets in an outer header of the next hop's family.
func UnderlayOf(nextHop netip.Addr) string {
	switch {
	case !nextHop.IsValid():
		return ""
	case nextHop.Is6() && !nextHop.Is4In6():
		return "ipv6"
	}
	return "ipv4"
}

// v4Bits is how many leading bits of a v4-mapped address come before the IPv4 part.
const v4Bits = 96

func routeKeyToBPF(p netip.Prefix) bpf.CalyxCxRouteKey {
	p = p.Masked()
	k := bpf.CalyxCxRouteKey{Prefixlen: uint32(p.Bits())}
	if p.Addr().Is4() {
		k.Prefixlen += v4Bits
	}
	k.Addr = addrTo16(p.Addr())
	return k
}

func routeKeyFromBPF(k bpf.CalyxCxRouteKey) (netip.Prefix, error) {
	a := netip.AddrFrom16(k.Addr)
	bits := int(k.Prefixlen)
	if a.Is4In6() && bits >= v4Bits {
		return netip.PrefixFrom(a.Unmap(), bits-v4Bits), nil
	}
	if bits > 128 {
		return netip.Prefix{}, fmt.Errorf("route key prefix length %d out of range", bits)
	}
	return netip.PrefixFrom(a, bits), nil
}

// addrTo16 stores IPv4 as v4-mapped, the layout every calyx map uses.
func addrTo16(a netip.Addr) [16]byte {
	if !a.IsValid() {
		return [16]byte{}
	}
	return a.As16()
}

func addrFrom16(b [16]byte) netip.Addr {
	if b == ([16]byte{}) {
		return netip.Addr{}
	}
	return netip.AddrFrom16(b).Unmap()
}

func (r Route) toBPF() bpf.CalyxCxRoute {
	out := bpf.CalyxCxRoute{
		Type:    uint32(r.Type),
		Ifindex: r.Ifindex,
		Encap:   uint16(r.Encap),
		NextHop: addrTo16(r.NextHop),
		// A local workload's interface's slot: its to-workload count.
		CounterSlot: r.CounterSlot,
		Mac:         r.MAC,
		HostMac:     r.HostMAC,
	}
	if !r.MAC.IsZero() {
		out.Flags |= uint32(bpf.CalyxCxRouteFlagsCX_RT_F_HAS_MAC)
	}
	if r.NATOutgoing {
		out.Flags |= uint32(bpf.CalyxCxRouteFlagsCX_RT_F_NAT_OUTGOING)
	}
	if r.Peer {
		out.Flags |= uint32(bpf.CalyxCxRouteFlagsCX_RT_F_PEER)
	}
	return out
}

func routeFromBPF(in bpf.CalyxCxRoute) Route {
	r := Route{
		Type:        RouteType(in.Type),
		Ifindex:     in.Ifindex,
		Encap:       Encap(in.Encap),
		NextHop:     addrFrom16(in.NextHop),
		HostMAC:     in.HostMac,
		CounterSlot: in.CounterSlot,
	}
	if in.Flags&uint32(bpf.CalyxCxRouteFlagsCX_RT_F_HAS_MAC) != 0 {
		r.MAC = in.Mac
	}
	r.NATOutgoing = in.Flags&uint32(bpf.CalyxCxRouteFlagsCX_RT_F_NAT_OUTGOING) != 0
	r.Peer = in.Flags&uint32(bpf.CalyxCxRouteFlagsCX_RT_F_PEER) != 0
	return r
}

// Reason is why a program returned the verdict it did; counters are kept
// per interface and reason.
type Reason uint32

// Reasons, as the programs count them.
const (
	ReasonPassHost        = Reason(bpf.CalyxCxReasonCX_REASON_PASS_HOST)
	ReasonDeliverLocal    = Reason(bpf.CalyxCxReasonCX_REASON_DELIVER_LOCAL)
	ReasonARPReply        = Reason(bpf.CalyxCxReasonCX_REASON_ARP_REPLY)
	ReasonToWorkload      = Reason(bpf.CalyxCxReasonCX_REASON_TO_WORKLOAD)
	ReasonEncapIPIP       = Reason(bpf.CalyxCxReasonCX_REASON_ENCAP_IPIP)
	ReasonEncapVXLAN      = Reason(bpf.CalyxCxReasonCX_REASON_ENCAP_VXLAN)
	ReasonForwardDirect   = Reason(bpf.CalyxCxReasonCX_REASON_FORWARD_DIRECT)
	ReasonDecapIPIP       = Reason(bpf.CalyxCxReasonCX_REASON_DECAP_IPIP)
	ReasonDecapVXLAN      = Reason(bpf.CalyxCxReasonCX_REASON_DECAP_VXLAN)
	ReasonICMPFragNeeded  = Reason(bpf.CalyxCxReasonCX_REASON_ICMP_FRAG_NEEDED)
	ReasonNDReply         = Reason(bpf.CalyxCxReasonCX_REASON_ND_REPLY)
	ReasonDropMalformed   = Reason(bpf.CalyxCxReasonCX_REASON_DROP_MALFORMED)
	ReasonDropSpoofIP     = Reason(bpf.CalyxCxReasonCX_REASON_DROP_SPOOF_IP)
	ReasonDropSpoofMAC    = Reason(bpf.CalyxCxReasonCX_REASON_DROP_SPOOF_MAC)
	ReasonDropNoEndpoint  = Reason(bpf.CalyxCxReasonCX_REASON_DROP_NO_ENDPOINT)
	ReasonDropUnsupported = Reason(bpf.CalyxCxReasonCX_REASON_DROP_UNSUPPORTED)
	ReasonDropARPIgnored  = Reason(bpf.CalyxCxReasonCX_REASON_DROP_ARP_IGNORED)
	ReasonDropTunnelSrc   = Reason(bpf.CalyxCxReasonCX_REASON_DROP_TUNNEL_SRC)
	ReasonDropTunnelDst   = Reason(bpf.CalyxCxReasonCX_REASON_DROP_TUNNEL_DST)
	ReasonDropTunnelVNI   = Reason(bpf.CalyxCxReasonCX_REASON_DROP_TUNNEL_VNI)
	ReasonDropNoRoute     = Reason(bpf.CalyxCxReasonCX_REASON_DROP_NO_ROUTE)
	ReasonDropTooBig      = Reason(bpf.CalyxCxReasonCX_REASON_DROP_TOO_BIG)
	ReasonDropFIB         = Reason(bpf.CalyxCxReasonCX_REASON_DROP_FIB)
	ReasonDropHelper      = Reason(bpf.CalyxCxReasonCX_REASON_DROP_HELPER)
	ReasonDropNDIgnored   = Reason(bpf.CalyxCxReasonCX_REASON_DROP_ND_IGNORED)
	ReasonDropNATPorts    = Reason(bpf.CalyxCxReasonCX_REASON_DROP_NAT_PORTS)
	ReasonDropCTFull      = Reason(bpf.CalyxCxReasonCX_REASON_DROP_CT_FULL)
	ReasonDropPolicy      = Reason(bpf.CalyxCxReasonCX_REASON_DROP_POLICY)
	ReasonDropPrefilter   = Reason(bpf.CalyxCxReasonCX_REASON_DROP_PREFILTER)
	// ReasonDropUnderlaySpoof: from the underlay with a source that is this
	// host's, a local workload's or a floating IP held here.
	ReasonDropUnderlaySpoof = Reason(bpf.CalyxCxReasonCX_REASON_DROP_UNDERLAY_SPOOF)
	// ReasonDropTunnelInnerSrc: decapsulated with an inner source the
	// sending node may not use.
	ReasonDropTunnelInnerSrc = Reason(bpf.CalyxCxReasonCX_REASON_DROP_TUNNEL_INNER_SRC)
	// ReasonDropVLAN: a workload's tagged frame.
	ReasonDropVLAN = Reason(bpf.CalyxCxReasonCX_REASON_DROP_VLAN)
	// ReasonDropTCPWindow: an RST of a tracked flow outside its window.
	ReasonDropTCPWindow = Reason(bpf.CalyxCxReasonCX_REASON_DROP_TCP_WINDOW)
	// ReasonDropFragOrphan: a fragment after the first whose first
	// fragment the hook has not seen (Config.orphanFragments Drop).
	ReasonDropFragOrphan = Reason(bpf.CalyxCxReasonCX_REASON_DROP_FRAG_ORPHAN)
)

var reasonNames = map[Reason]string{
	ReasonPassHost:           "pass-host",
	ReasonDeliverLocal:       "deliver-local",
	ReasonARPReply:           "arp-reply",
	ReasonToWorkload:         "to-workload",
	ReasonEncapIPIP:          "encap-ipip",
	ReasonEncapVXLAN:         "encap-vxlan",
	ReasonForwardDirect:      "forward-direct",
	ReasonDecapIPIP:          "decap-ipip",
	ReasonDecapVXLAN:         "decap-vxlan",
	ReasonICMPFragNeeded:     "icmp-frag-needed",
	ReasonNDReply:            "nd-reply",
	ReasonDropMalformed:      "drop-malformed",
	ReasonDropSpoofIP:        "drop-spoof-ip",
	ReasonDropSpoofMAC:       "drop-spoof-mac",
	ReasonDropNoEndpoint:     "drop-no-endpoint",
	ReasonDropUnsupported:    "drop-unsupported",
	ReasonDropARPIgnored:     "drop-arp-ignored",
	ReasonDropTunnelSrc:      "drop-tunnel-src",
	ReasonDropTunnelDst:      "drop-tunnel-dst",
	ReasonDropTunnelVNI:      "drop-tunnel-vni",
	ReasonDropNoRoute:        "drop-no-route",
	ReasonDropTooBig:         "drop-too-big",
	ReasonDropFIB:            "drop-fib",
	ReasonDropHelper:         "drop-helper",
	ReasonDropNDIgnored:      "drop-nd-ignored",
	ReasonDropNATPorts:       "drop-nat-ports",
	ReasonDropCTFull:         "drop-ct-full",
	ReasonDropPolicy:         "drop-policy",
	ReasonDropPrefilter:      "drop-prefilter",
	ReasonDropUnderlaySpoof:  "drop-underlay-spoof",
	ReasonDropTunnelInnerSrc: "drop-tunnel-inner-src",
	ReasonDropVLAN:           "drop-vlan",
	ReasonDropTCPWindow:      "drop-tcp-window",
	ReasonDropFragOrphan:     "drop-frag-orphan",
}

// Reasons lists every reason the programs count, in numeric order.
func Reasons() []Reason {
	return []Reason{ReasonPassHost, ReasonDeliverLocal, ReasonARPReply, ReasonToWorkload,
		ReasonEncapIPIP, ReasonEncapVXLAN, ReasonForwardDirect, ReasonDecapIPIP, ReasonDecapVXLAN,
		ReasonICMPFragNeeded, ReasonNDReply,
		ReasonDropMalformed, ReasonDropSpoofIP, ReasonDropSpoofMAC, ReasonDropNoEndpoint,
		ReasonDropUnsupported, ReasonDropARPIgnored, ReasonDropTunnelSrc, ReasonDropTunnelDst,
		ReasonDropTunnelVNI, ReasonDropNoRoute, ReasonDropTooBig, ReasonDropFIB, ReasonDropHelper,
		ReasonDropNDIgnored, ReasonDropNATPorts, ReasonDropCTFull, ReasonDropPolicy, ReasonDropPrefilter,
		ReasonDropUnderlaySpoof, ReasonDropTunnelInnerSrc, ReasonDropVLAN, ReasonDropTCPWindow,
		ReasonDropFragOrphan}
}

func (r Reason) String() string {
	if s, ok := reasonNames[r]; ok {
		return s
	}
	return fmt.Sprintf("reason-%d", uint32(r))
}

// ReasonByName returns the reason named name (as String gives it).
func ReasonByName(name string) (Reason, bool) {
	for r, s := range reasonNames {
		if s == name {
			return r, true
		}
	}
	return 0, false
}

// MarshalText renders the reason by name in JSON and YAML.
func (r Reason) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// IsDrop reports whether the reason is a drop.
func (r Reason) IsDrop() bool { return r >= Reason(bpf.CalyxCxReasonCX_REASON_DROP_MALFORMED) }

// CounterKey identifies one counter: an interface and a reason.
type CounterKey struct {
	Ifindex uint32
	Reason  Reason
}

// Counter is a counter summed over CPUs.
type Counter struct {
	Packets uint64
	Bytes   uint64
}

// AttachMode says how a program is attached.
type AttachMode uint32

// Attach modes.
const (
	AttachTCX    = AttachMode(bpf.CalyxCxAttachModeCX_ATTACH_TCX)
	AttachClsact = AttachMode(bpf.CalyxCxAttachModeCX_ATTACH_CLSACT)
)

func (m AttachMode) String() string {
	switch m {
	case AttachTCX:
		return "tcx"
	case AttachClsact:
		return "clsact"
	}
	return fmt.Sprintf("mode-%d", uint32(m))
}

// MarshalJSON renders the mode by name.
func (m AttachMode) MarshalJSON() ([]byte, error) { return json.Marshal(m.String()) }

// Link is the agent's record (cx_links) of the programs it attached to an
// interface.
type Link struct {
	Ifname        string
	Mode          AttachMode
	IngressProgID uint32
	EgressProgID  uint32
	EndpointID    uint32
}

func (l Link) toBPF() bpf.CalyxCxLink {
	return bpf.CalyxCxLink{Ifname: ifnameToBPF(l.Ifname), Mode: uint32(l.Mode), IngressProgId: l.IngressProgID,
		EgressProgId: l.EgressProgID, EndpointId: l.EndpointID}
}

func linkFromBPF(in bpf.CalyxCxLink) Link {
	return Link{Ifname: ifnameFromBPF(in.Ifname), Mode: AttachMode(in.Mode), IngressProgID: in.IngressProgId,
		EgressProgID: in.EgressProgId, EndpointID: in.EndpointId}
}

// ifnameToBPF stores an interface name NUL-terminated, cut to IFNAMSIZ-1.
func ifnameToBPF(name string) [16]int8 {
	var out [16]int8
	for i := 0; i < len(out)-1 && i < len(name); i++ {
		out[i] = int8(name[i])
	}
	return out
}

func ifnameFromBPF(in [16]int8) string {
	var name []byte
	for _, c := range in {
		if c == 0 {
			break
		}
		name = append(name, byte(c))
	}
	return string(name)
}

// EndpointState is what became of a local endpoint (cx_endpoints).
type EndpointState uint32

// Endpoint states, as the agent records them.
const (
	EndpointReady   = EndpointState(bpf.CalyxCxEpStateCX_EP_READY)
	EndpointPending = EndpointState(bpf.CalyxCxEpStateCX_EP_PENDING)
	// The refused states: the interface is one the agent never attaches
	// workload programs to nor changes sysctls of.
	EndpointRefusedUnderlay = EndpointState(bpf.CalyxCxEpStateCX_EP_REFUSED_UNDERLAY)
	EndpointRefusedLoopback = EndpointState(bpf.CalyxCxEpStateCX_EP_REFUSED_LOOPBACK)
	EndpointRefusedHostAddr = EndpointState(bpf.CalyxCxEpStateCX_EP_REFUSED_HOST_ADDR)
	// EndpointAttachFailed: attaching its programs (or preparing its
	// interface) failed; the agent retries with backoff and says why in
	// its log and /readyz.
	EndpointAttachFailed = EndpointState(bpf.CalyxCxEpStateCX_EP_ATTACH_FAILED)
	// EndpointConflict: the model (written behind calyxctl's back) gives
	// its interface or one of its addresses to an endpoint whose name
	// sorts first, or the address is a node's: nothing of it is
	// programmed, on every node alike.
	EndpointConflict = EndpointState(bpf.CalyxCxEpStateCX_EP_CONFLICT)
)

var endpointStateNames = map[EndpointState]string{
	EndpointReady:           "ready",
	EndpointPending:         "pending",
	EndpointRefusedUnderlay: "refused-underlay",
	EndpointRefusedLoopback: "refused-loopback",
	EndpointRefusedHostAddr: "refused-host-address",
	EndpointAttachFailed:    "attach-failed",
	EndpointConflict:        "conflict",
}

var endpointStateReasons = map[EndpointState]string{
	EndpointReady:           "attached",
	EndpointPending:         "its interface does not exist",
	EndpointRefusedUnderlay: "its interface is the underlay interface",
	EndpointRefusedLoopback: "its interface is a loopback interface",
	EndpointRefusedHostAddr: "its interface holds one of the host's own addresses",
	EndpointAttachFailed:    "attaching its programs failed; retried (the agent's log and /readyz say why)",
	EndpointConflict:        "its interface or an address is another endpoint's (the first by name keeps it) or a node's",
}

func (s EndpointState) String() string {
	if n, ok := endpointStateNames[s]; ok {
		return n
	}
	return fmt.Sprintf("state-%d", uint32(s))
}

// Reason says the state in words, for logs and calyxctl.
func (s EndpointState) Reason() string { return endpointStateReasons[s] }

// Refused says whether the agent refused to touch the endpoint's interface.
func (s EndpointState) Refused() bool {
	return s == EndpointRefusedUnderlay || s == EndpointRefusedLoopback || s == EndpointRefusedHostAddr
}

// MarshalText renders the state by name in JSON and YAML.
func (s EndpointState) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// EndpointStatus is an entry of cx_endpoints.
type EndpointStatus struct {
	State   EndpointState
	Ifindex uint32 // 0 unless the interface exists
	Ifname  string // the endpoint's spec.interface
}

func (e EndpointStatus) toBPF() bpf.CalyxCxEpStatus {
	return bpf.CalyxCxEpStatus{State: uint32(e.State), Ifindex: e.Ifindex, Ifname: ifnameToBPF(e.Ifname)}
}

func endpointStatusFromBPF(in bpf.CalyxCxEpStatus) EndpointStatus {
	return EndpointStatus{State: EndpointState(in.State), Ifindex: in.Ifindex, Ifname: ifnameFromBPF(in.Ifname)}
}

// NodeConfig is the single entry of cx_config: host-wide settings of the
// underlay. The zero value (no Address) turns tunnelling off.
type NodeConfig struct {
	Address netip.Addr // this node's underlay IPv4: outer source, decap destination
	// Address6 is this node's underlay IPv6 (Node.spec.ipv6Address), the
	// same for the IPv6 underlay; the zero value: none.
	Address6        netip.Addr
	UnderlayIfindex uint32
	UnderlayMTU     uint32 // encapsulated packets must fit this
	VXLANVNI        uint32
	VXLANPort       uint16
	// Metadata is where 169.254.169.254:80 is DNAT'd to; the zero value
	// turns the DNAT off.
	Metadata netip.AddrPort
	// RouteGen changes after every change of cx_routes: routes cached in
	// conntrack entries (the established-flow fast path) are valid only
	// for the generation they were cached in. 0 turns the cache off.
	RouteGen uint32
	// EndpointToHost is Config.endpointToHostAction.
	EndpointToHost EndpointToHost
	// PrefilterTC makes the underlay's TC ingress check cx_prefilter:
	// there are entries and no XDP program checks them first.
	PrefilterTC bool
	// FragOrphanPass lets a later fragment whose first was not seen go on
	// untracked (Config.orphanFragments Pass) instead of being dropped.
	FragOrphanPass bool
	// NATPorts are natOutgoing's source ports, [min, max]; zero means the
	// programs' built-in range.
	NATPorts [2]uint16
	// WorkloadMTU is the MTU workloads are given: a packet between two
	// workloads of this host must fit it. 0 turns the check off.
	WorkloadMTU uint32
}

func (c NodeConfig) toBPF() bpf.CalyxCxNodeConfig {
	var flags uint32
	if c.PrefilterTC {
		flags |= uint32(bpf.CalyxCxConfigFlagsCX_CFG_PREFILTER_TC)
	}
	if c.FragOrphanPass {
		flags |= uint32(bpf.CalyxCxConfigFlagsCX_CFG_FRAG_ORPHAN_PASS)
	}
	return bpf.CalyxCxNodeConfig{
		Flags:           flags,
		EndpointToHost:  uint32(c.EndpointToHost),
		NodeAddr:        addrTo16(c.Address),
		NodeAddr6:       addrTo16(c.Address6),
		UnderlayIfindex: c.UnderlayIfindex,
		UnderlayMtu:     c.UnderlayMTU,
		VxlanVni:        c.VXLANVNI,
		VxlanPort:       uint32(c.VXLANPort),
		MetadataAddr:    addrTo16(c.Metadata.Addr()),
		MetadataPort:    uint32(c.Metadata.Port()),
		RouteGen:        c.RouteGen,
		NatPortMin:      c.NATPorts[0],
		NatPortMax:      c.NATPorts[1],
		WorkloadMtu:     c.WorkloadMTU,
	}
}

func nodeConfigFromBPF(in bpf.CalyxCxNodeConfig) NodeConfig {
	c := NodeConfig{
		Address:         addrFrom16(in.NodeAddr),
		Address6:        addrFrom16(in.NodeAddr6),
		UnderlayIfindex: in.UnderlayIfindex,
		UnderlayMTU:     in.UnderlayMtu,
		VXLANVNI:        in.VxlanVni,
		VXLANPort:       uint16(in.VxlanPort),
		RouteGen:        in.RouteGen,
		EndpointToHost:  EndpointToHost(in.EndpointToHost),
		PrefilterTC:     in.Flags&uint32(bpf.CalyxCxConfigFlagsCX_CFG_PREFILTER_TC) != 0,
		FragOrphanPass:  in.Flags&uint32(bpf.CalyxCxConfigFlagsCX_CFG_FRAG_ORPHAN_PASS) != 0,
		NATPorts:        [2]uint16{in.NatPortMin, in.NatPortMax},
		WorkloadMTU:     in.WorkloadMtu,
	}
	if a := addrFrom16(in.MetadataAddr); a.IsValid() {
		c.Metadata = netip.AddrPortFrom(a, uint16(in.MetadataPort))
	}
	return c
}

// FloatingIP is an entry of cx_fips, keyed by the floating IP.
type FloatingIP struct {
	Fixed      netip.Addr // the instance's fixed IP
	Node       netip.Addr // the underlay address of the instance's node
	EndpointID uint32
	Local      bool // the instance runs on this node
}

func (f FloatingIP) toBPF() bpf.CalyxCxFip {
	out := bpf.CalyxCxFip{Fixed: addrTo16(f.Fixed), Node: addrTo16(f.Node), EndpointId: f.EndpointID}
	if f.Local {
		out.Flags |= uint32(bpf.CalyxCxFipFlagsCX_FIP_LOCAL)
	}
	return out
}

func floatingIPFromBPF(in bpf.CalyxCxFip) FloatingIP {
	return FloatingIP{Fixed: addrFrom16(in.Fixed), Node: addrFrom16(in.Node), EndpointID: in.EndpointId,
		Local: in.Flags&uint32(bpf.CalyxCxFipFlagsCX_FIP_LOCAL) != 0}
}

// Ports are in network byte order in the maps, read as little-endian
// uint16s (bpf2go's target is bpfel): swapping the bytes converts both ways.
var htons, ntohs = bits.ReverseBytes16, bits.ReverseBytes16

// Lease is an entry of cx_leases: an address a DHCP server of the agent
// leased on an interface.
type Lease struct {
	Ifindex    uint32
	Addr       netip.Addr // its family keys the entry with Ifindex
	MAC        MAC        // the client's
	EndpointID uint32
	// Expires and LastSeen are kept to the second.
	Expires, LastSeen time.Time
}

// Family is 4 or 6, by the lease's address.
func (l Lease) Family() uint32 {
	if l.Addr.Is4() {
		return 4
	}
	return 6
}

func (l Lease) toBPF() (bpf.CalyxCxLeaseKey, bpf.CalyxCxLease) {
	k := bpf.CalyxCxLeaseKey{Ifindex: l.Ifindex, Family: l.Family()}
	v := bpf.CalyxCxLease{Addr: addrTo16(l.Addr), Mac: l.MAC, EndpointId: l.EndpointID}
	if !l.Expires.IsZero() {
		v.Expires = uint64(l.Expires.Unix())
	}
	if !l.LastSeen.IsZero() {
		v.LastSeen = uint64(l.LastSeen.Unix())
	}
	return k, v
}

func leaseFromBPF(k bpf.CalyxCxLeaseKey, v bpf.CalyxCxLease) Lease {
	l := Lease{Ifindex: k.Ifindex, Addr: addrFrom16(v.Addr), MAC: v.Mac, EndpointID: v.EndpointId}
	if v.Expires != 0 {
		l.Expires = time.Unix(int64(v.Expires), 0)
	}
	if v.LastSeen != 0 {
		l.LastSeen = time.Unix(int64(v.LastSeen), 0)
	}
	return l
}
