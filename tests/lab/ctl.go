package lab

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
)

// Endpoint is one row of "calyxctl endpoints dump -o json".
type Endpoint struct {
	Name      string   `json:"name"`
	Interface string   `json:"interface"`
	Ifindex   int      `json:"ifindex"`
	IPs       []string `json:"ips"`
	MAC       string   `json:"mac"`
	// Kind is the interface's kind (veth, tap, ...), "-" when not attached.
	Kind string `json:"kind"`
	// State is ready, pending or refused-*; Reason says why in words.
	State  string `json:"state"`
	Reason string `json:"reason"`
}

// Route is one row of "calyxctl routes dump -o json".
type Route struct {
	CIDR string `json:"cidr"`
	// Type is "local-workload", "remote-workload", "host" or "node".
	Type      string `json:"type"`
	Interface string `json:"interface"`
	Ifindex   int    `json:"ifindex"`
	NextHop   string `json:"nextHop"`
	// Node is the node a remote route leads to.
	Node string `json:"node"`
	// Encap is how traffic on the route leaves the host: EncapIPIP,
	// EncapVXLAN or EncapNone.
	Encap string `json:"encap"`
	// Underlay is the underlay a remote workload's route goes over, "ipv4"
	// or "ipv6" (the next hop's family).
	Underlay string `json:"underlay"`
	// MAC is a local workload's MAC.
	MAC string `json:"mac"`
}

// NodeStatus is the one object of "calyxctl node status -o json": the
// agent's view of its own node.
type NodeStatus struct {
	Node string `json:"node"`
	// Underlay is the underlay interface name, Ifindex its index and
	// Address the node's underlay address.
	Underlay string `json:"underlay"`
	Ifindex  int    `json:"ifindex"`
	Address  string `json:"address"`
	// UnderlayMTU is the underlay interface's MTU; WorkloadMTU what
	// workloads should use with the encapsulations in use.
	UnderlayMTU int `json:"underlayMTU"`
	WorkloadMTU int `json:"workloadMTU"`
	// Encap is a comma-separated list of the encapsulations the node's
	// routes use, e.g. "vxlan", or "none,vxlan" in a CrossSubnet mode
	// with peers on both sides.
	Encap string `json:"encap"`
	// Peers is the number of other nodes the agent routes to.
	Peers     int    `json:"peers"`
	VXLANPort int    `json:"vxlanPort"`
	VXLANVNI  uint32 `json:"vxlanVNI"`
	// BGP is the agent's BGP report; nil when calyxctl could not reach
	// the agent.
	BGP *NodeBGPStatus `json:"bgp"`
}

// NodeBGPStatus is node status's "bgp" object.
type NodeBGPStatus struct {
	// Running says the speaker runs; Reason says why not.
	Running   bool            `json:"running"`
	Reason    string          `json:"reason"`
	IPv4Peers []BGPPeerStatus `json:"ipv4Peers"`
	IPv6Peers []BGPPeerStatus `json:"ipv6Peers"`
	// Disagreements are workload routes on which BGP and the datastore
	// differ: Learned is BGP's next hop and Expected the datastore's
	// ("" when that side has no route).
	Disagreements []struct {
		Prefix   string `json:"prefix"`
		Learned  string `json:"learned"`
		Peer     string `json:"peer"`
		Expected string `json:"expected"`
	} `json:"disagreements"`
	// FIB are the learned routes outside every pool, for the kernel FIB.
	FIB []struct {
		Prefix    string `json:"prefix"`
		NextHop   string `json:"nextHop"`
		Via       string `json:"via"`
		Installed bool   `json:"installed"`
		Error     string `json:"error"`
	} `json:"fib"`
	// PeerErrors are the configured peers the speaker could not use.
	PeerErrors []string `json:"peerErrors"`
}

// BGPPeerStatus is one row of node status's BGP tables.
type BGPPeerStatus struct {
	PeerAddress string `json:"peerAddress"`
	// PeerType is "node-to-node mesh", "global" or "node specific".
	PeerType string `json:"peerType"`
	// State is "up" when Established, "start" otherwise.
	State string `json:"state"`
	// Since is RFC 3339, "" when the session never changed state.
	Since string `json:"since"`
	// Info is the FSM state, with the last disconnect cause when not
	// Established.
	Info               string `json:"info"`
	Established        bool   `json:"established"`
	PrefixesReceived   uint64 `json:"prefixesReceived"`
	PrefixesAdvertised uint64 `json:"prefixesAdvertised"`
}

// BGPRoute is one row of "calyxctl bgp routes -o json".
type BGPRoute struct {
	Prefix  string `json:"prefix"`
	NextHop string `json:"nextHop"`
	// Peer is the peer it came from or goes to; "" for the node's own.
	Peer  string `json:"peer"`
	Stale bool   `json:"stale"`
}

// Counter reasons of the multi-host paths ("calyxctl counters dump").
const (
	ReasonEncapIPIP      = "encap-ipip"
	ReasonEncapVXLAN     = "encap-vxlan"
	ReasonForwardDirect  = "forward-direct"
	ReasonDecapIPIP      = "decap-ipip"
	ReasonDecapVXLAN     = "decap-vxlan"
	ReasonICMPFragNeeded = "icmp-frag-needed"
	ReasonDropTunnelSrc  = "drop-tunnel-src"
	ReasonDropTunnelDst  = "drop-tunnel-dst"
	ReasonDropTunnelVNI  = "drop-tunnel-vni"
	ReasonDropNoRoute    = "drop-no-route"
	ReasonDropTooBig     = "drop-too-big"
	ReasonDropFIB        = "drop-fib"
)

// Counter is one row of "calyxctl counters dump -o json".
type Counter struct {
	Interface string `json:"interface"`
	Ifindex   int    `json:"ifindex"`
	Reason    string `json:"reason"`
	Packets   uint64 `json:"packets"`
	Bytes     uint64 `json:"bytes"`
}

// Link is one row of "calyxctl links -o json".
type Link struct {
	Interface string `json:"interface"`
	Ifindex   int    `json:"ifindex"`
	Hook      string `json:"hook"`
	Mode      string `json:"mode"`
	Program   string `json:"program"`
	ProgramID uint32 `json:"programID"`
	// Attached says the kernel runs ProgramID on the hook (not just that
	// the agent recorded it).
	Attached bool `json:"attached"`
}

// CtlArgs returns calyxctl's command line with the lab's datastore and the
// host's bpffs directory (the lab's bpffs root when host is ""), and for a
// host its agent's listener as --agent (calyxctl runs in the host's
// namespace, where the agent serves on MetricsAddr).
func (l *Lab) CtlArgs(host string, args ...string) ([]string, error) {
	bpffs := l.BPFFS
	if host != "" {
		h, err := l.Host(host)
		if err != nil {
			return nil, err
		}
		bpffs = h.BPFFS
	}
	full := append([]string{l.CtlBinary()}, l.datastoreArgs()...)
	full = append(full, "--bpffs", bpffs)
	if host != "" {
		// One word, so that the fake calyxctl's verb() (which knows only
		// the flags it was written for) skips it as a flag.
		full = append(full, "--agent=http://"+l.opts.MetricsAddr)
	}
	return append(full, args...), nil
}

// Calyxctl runs calyxctl against the lab's datastore and host's bpffs,
// inside the host's namespace as an operator on that host would (the kernel
// facts it reports, such as which programs run on an ifindex, are per
// namespace); with host "" in the root namespace, or in the etcd namespace
// when the lab has an etcd (the root namespace cannot reach it). Put global
// flags such as "-o json" before the verb.
func (l *Lab) Calyxctl(host string, args ...string) (stdout, stderr string, err error) {
	return l.CalyxctlInput(host, "", args...)
}

// CalyxctlInput is Calyxctl with stdin (for "apply -f -").
func (l *Lab) CalyxctlInput(host, stdin string, args ...string) (stdout, stderr string, err error) {
	full, err := l.CtlArgs(host, args...)
	if err != nil {
		return "", "", err
	}
	var ns string
	if host != "" {
		h, err := l.Host(host)
		if err != nil {
			return "", "", err
		}
		ns = h.NS
	} else if e := l.Etcd(); e != nil {
		ns = e.NS
	}
	res, err := l.Run(Command{NS: ns, Args: full, Stdin: stdin})
	return res.Stdout, res.Stderr, err
}

// CalyxctlJSON runs calyxctl with "-o json" and decodes stdout into v.
func (l *Lab) CalyxctlJSON(host string, v any, args ...string) error {
	out, _, err := l.Calyxctl(host, append([]string{"-o", "json"}, args...)...)
	if err != nil {
		return err
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		return fmt.Errorf("calyxctl %s: decode JSON: %w: %s", strings.Join(args, " "), err, tail(out, 10))
	}
	return nil
}

// Apply feeds yaml to "calyxctl apply -f -" and returns its combined
// output.
func (l *Lab) Apply(host, yaml string) (string, error) {
	out, errOut, err := l.CalyxctlInput(host, yaml, "apply", "-f", "-")
	return out + errOut, err
}

// Delete feeds yaml to "calyxctl delete -f -".
func (l *Lab) Delete(host, yaml string) (string, error) {
	out, errOut, err := l.CalyxctlInput(host, yaml, "delete", "-f", "-")
	return out + errOut, err
}

// Endpoints returns "calyxctl endpoints dump" for host.
func (l *Lab) Endpoints(host string) ([]Endpoint, error) {
	var v []Endpoint
	return v, l.CalyxctlJSON(host, &v, "endpoints", "dump")
}

// Routes returns "calyxctl routes dump" for host.
func (l *Lab) Routes(host string) ([]Route, error) {
	var v []Route
	return v, l.CalyxctlJSON(host, &v, "routes", "dump")
}

// NodeStatus returns "calyxctl node status" for host.
func (l *Lab) NodeStatus(host string) (NodeStatus, error) {
	var v []NodeStatus
	if err := l.CalyxctlJSON(host, &v, "node", "status"); err != nil {
		return NodeStatus{}, err
	}
	if len(v) != 1 {
		return NodeStatus{}, fmt.Errorf("calyxctl node status on %s: got %d objects, want 1", host, len(v))
	}
	return v[0], nil
}

// NodeStatusTable returns the table output of "calyxctl node status" for
// host: the node row and the BGP sections.
func (l *Lab) NodeStatusTable(host string) (string, error) {
	out, _, err := l.Calyxctl(host, "node", "status")
	return out, err
}

// BGPRoutes returns "calyxctl bgp routes" for host: the prefixes the node
// originates, or with peer those it sends to peer; with received, every
// best path it learned, or with peer what peer sent (its Adj-RIB-In).
func (l *Lab) BGPRoutes(host string, received bool, peer string) ([]BGPRoute, error) {
	args := []string{"bgp", "routes", "--advertised"}
	if received {
		args[2] = "--received"
	}
	if peer != "" {
		args = append(args, peer)
	}
	var v []BGPRoute
	return v, l.CalyxctlJSON(host, &v, args...)
}

// RouteFor returns the row of routes the BPF route lookup would pick for
// addr: the longest CIDR containing it. Remote workloads may be covered by
// a block route rather than a /32, so tests should not look rows up by
// exact CIDR.
func RouteFor(routes []Route, addr netip.Addr) (Route, bool) {
	best, bits := Route{}, -1
	for _, r := range routes {
		p, err := netip.ParsePrefix(r.CIDR)
		if err != nil {
			continue
		}
		if p.Contains(addr) && p.Bits() > bits {
			best, bits = r, p.Bits()
		}
	}
	return best, bits >= 0
}

// CounterTotal sums the packets of every row with reason, on any interface.
func CounterTotal(rows []Counter, reason string) uint64 {
	var n uint64
	for _, r := range rows {
		if r.Reason == reason {
			n += r.Packets
		}
	}
	return n
}

// Counters returns "calyxctl counters dump" for host.
func (l *Lab) Counters(host string) ([]Counter, error) {
	var v []Counter
	return v, l.CalyxctlJSON(host, &v, "counters", "dump")
}

// Links returns "calyxctl links" for host.
func (l *Lab) Links(host string) ([]Link, error) {
	var v []Link
	return v, l.CalyxctlJSON(host, &v, "links")
}

// CounterPackets sums the packets of rows for iface and reason.
func CounterPackets(rows []Counter, iface, reason string) uint64 {
	var n uint64
	for _, r := range rows {
		if r.Interface == iface && r.Reason == reason {
			n += r.Packets
		}
	}
	return n
}

// LinksFor returns the rows of links that are on iface.
func LinksFor(links []Link, iface string) []Link {
	var out []Link
	for _, k := range links {
		if k.Interface == iface {
			out = append(out, k)
		}
	}
	return out
}

// NATRow is one row of "calyxctl nat dump -o json": a floating IP as the
// host's cx_fips map holds it.
type NATRow struct {
	FloatingIP string `json:"floatingIP"`
	FixedIP    string `json:"fixedIP"`
	Endpoint   string `json:"endpoint"`
	Node       string `json:"node"`
	// Local says the instance runs on the host dumped.
	Local bool `json:"local"`
	// Sessions is the number of translated flows involving the floating
	// IP in the host's conntrack table.
	Sessions int `json:"sessions"`
}

// The nat kinds of "calyxctl ct dump" (CTFlow.NAT).
const (
	NATNone     = "none"
	NATDNAT     = "dnat"
	NATSNAT     = "snat"
	NATDNATSNAT = "dnat+snat"
)

// Drop reasons of the NAT paths ("calyxctl counters dump").
const (
	ReasonDropNATPorts = "drop-nat-ports"
	ReasonDropCTFull   = "drop-ct-full"
)

// CTFlow is one row of "calyxctl ct dump -o json": a tracked flow, its
// original direction (Src -> Dst as the first packet arrived) and the reply
// direction as it is expected on the wire (ReplySrc -> ReplyDst, after the
// translation). Addresses are "ip:port", for ICMP "ip id N".
type CTFlow struct {
	// Table is the map the flow is in: "ct" (cx_ct_v2, untranslated) or
	// "nat" (cx_nat_v2, translated); empty from a calyxctl without it.
	Table        string  `json:"table"`
	Proto        string  `json:"proto"`
	Src          string  `json:"src"`
	Dst          string  `json:"dst"`
	ReplySrc     string  `json:"replySrc"`
	ReplyDst     string  `json:"replyDst"`
	NAT          string  `json:"nat"`
	State        string  `json:"state"`
	AgeSeconds   float64 `json:"ageSeconds"`
	IdleSeconds  float64 `json:"idleSeconds"`
	Packets      uint64  `json:"packets"`
	Bytes        uint64  `json:"bytes"`
	ReplyPackets uint64  `json:"replyPackets"`
	ReplyBytes   uint64  `json:"replyBytes"`
}

// SrcAddr, DstAddr, ReplySrcAddr and ReplyDstAddr return the address part
// of the flow's ends (without port or ICMP id); the zero Addr when absent.
func (f CTFlow) SrcAddr() netip.Addr      { return flowAddr(f.Src) }
func (f CTFlow) DstAddr() netip.Addr      { return flowAddr(f.Dst) }
func (f CTFlow) ReplySrcAddr() netip.Addr { return flowAddr(f.ReplySrc) }
func (f CTFlow) ReplyDstAddr() netip.Addr { return flowAddr(f.ReplyDst) }

// flowAddr reads "ip:port", "ip id N" or "ip".
func flowAddr(s string) netip.Addr {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr()
	}
	f := strings.Fields(s)
	if len(f) == 0 {
		return netip.Addr{}
	}
	a, _ := netip.ParseAddr(f[0])
	return a
}

// String is one line for messages.
func (f CTFlow) String() string {
	return fmt.Sprintf("%s %s -> %s (reply %s -> %s) nat %s state %s pkts %d/%d", f.Proto, f.Src, f.Dst, f.ReplySrc, f.ReplyDst, f.NAT, f.State, f.Packets, f.ReplyPackets)
}

// NATDump returns "calyxctl nat dump" for host.
func (l *Lab) NATDump(host string) ([]NATRow, error) {
	var v []NATRow
	return v, l.CalyxctlJSON(host, &v, "nat", "dump")
}

// CTDump returns "calyxctl ct dump" for host.
func (l *Lab) CTDump(host string) ([]CTFlow, error) {
	var v []CTFlow
	return v, l.CalyxctlJSON(host, &v, "ct", "dump")
}

// CTDumpFiltered returns "calyxctl ct dump" for host with filter flags
// (--endpoint NAME|IP, --proto tcp|udp|icmp, --port N).
func (l *Lab) CTDumpFiltered(host string, filter ...string) ([]CTFlow, error) {
	var v []CTFlow
	return v, l.CalyxctlJSON(host, &v, append([]string{"ct", "dump"}, filter...)...)
}

// CTFlush runs "calyxctl ct flush" on host and returns how many entries it
// deleted.
func (l *Lab) CTFlush(host string) (int, error) {
	var v []struct {
		Deleted int `json:"deleted"`
	}
	out, _, err := l.Calyxctl(host, "-o", "json", "ct", "flush")
	if err != nil {
		return 0, err
	}
	// One object or an array of one: accept both.
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		var one struct {
			Deleted int `json:"deleted"`
		}
		if err2 := json.Unmarshal([]byte(out), &one); err2 != nil {
			return 0, fmt.Errorf("calyxctl ct flush: decode JSON: %w: %s", err, tail(out, 5))
		}
		return one.Deleted, nil
	}
	if len(v) != 1 {
		return 0, fmt.Errorf("calyxctl ct flush: got %d objects, want 1: %s", len(v), tail(out, 5))
	}
	return v[0].Deleted, nil
}

// FlowsBetween returns the flows whose original direction goes from src to
// dst (addresses only; the zero Addr matches any).
func FlowsBetween(flows []CTFlow, proto string, src, dst netip.Addr) []CTFlow {
	var out []CTFlow
	for _, f := range flows {
		if proto != "" && f.Proto != proto {
			continue
		}
		if src.IsValid() && f.SrcAddr() != src {
			continue
		}
		if dst.IsValid() && f.DstAddr() != dst {
			continue
		}
		out = append(out, f)
	}
	return out
}
