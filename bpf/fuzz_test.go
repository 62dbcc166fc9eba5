package bpf_test

// Fuzzing and hostile traffic (issue 15): a Go fuzz target per program,
//
//	FuzzFromWorkload  calyx_from_wl        (port byte: which workload sends)
//	FuzzToWorkload    calyx_to_wl          (port byte: which workload receives)
//	FuzzFromUnderlay  calyx_from_underlay
//	FuzzToUnderlay    calyx_to_underlay
//	FuzzPrefilterXDP  calyx_xdp_prefilter
//
// all on one model of a node (newFuzzEnv) and checked by one set of
// invariants (fuzzEnv.check). `go test ./bpf/` runs the seeds; `make fuzz`
// fuzzes each target in turn. Go's fuzzer sees the coverage of the Go code
// only, not of the BPF programs: the seeds are what leads it to the paths,
// and the checker's own branches (one per reason and path) are what it
// tells new behaviour by.
//
// The model (newKindEnv, and what newPolicyEnv has, on one node):
//
//	wl1  veth, CheckMAC, natOutgoing            no policy
//	wl2  veth, CheckMAC, 192.0.2.20 (local FIP) ingress: only wl1's identity
//	wl3  veth, CheckMAC, route without MAC,     egress: UDP 53 only
//	     192.0.2.30 (local FIP)
//	wl4  veth, no CheckMAC                      ingress: Log + allow; egress: deny all
//	vm5  tap, 192.0.2.55 (local FIP)            ingress: deny all; egress: by source port
//	vm6  tap, route without MAC, 192.0.2.66     no policy
//	stray  a veth that is no endpoint
//	192.0.2.50  floating IP of 10.66.0.5 on nodeA (IP-in-IP)
//	remote blocks: nodeA IP-in-IP and VXLAN, nodeC direct (behind the
//	router), nodeB IP-in-IP (no neighbour: redirect_neigh), nodeX VXLAN
//	(no route: drop-fib), 10.65.1.0/26 direct to a non-node next hop
//	prefilter: 203.0.113.128/25, 2001:db8:bad::/48 (at TC too)
//	endpointToHostAction Drop, metadata at 10.30.0.10:8775, the
//	established-flow fast path on (route generation 1)
//	conntrack: a few established flows (natOutgoing UDP and TCP, their
//	ports pinned; a floating IP's flow from outside; a first-hop floating
//	IP flow; the metadata; east-west)
//
// Invariants, on every input the kernel takes (it refuses some with EINVAL:
// shorter than the L3 header the ethertype promises, or longer than a
// page), and again on the hook the kernel runs next on a redirected packet:
//
//   - the verdict is one the program returns: TC_ACT_OK, _SHOT or
//     _REDIRECT (XDP_PASS or XDP_DROP);
//   - exactly one reason is counted on the interface the program runs on,
//     one packet of the frame's length; besides it only to-workload on the
//     destination of a bpf_redirect_peer delivery (one packet of what comes
//     out); SHOT goes with a drop reason, OK and REDIRECT with the reasons
//     the program documents for them (progReasons);
//   - a dropped packet, and an XDP one, is unchanged (but for a drop after
//     decapsulation, which leaves the inner packet, and drop-helper, a
//     helper refusing halfway through a rewrite);
//   - a packet that comes out (REDIRECT, or OK changed) is well-formed:
//     its Ethernet and IP lengths agree with the frame, the IPv4 header
//     checksum and the TCP/UDP/ICMP/ICMPv6 checksum are right where they
//     were right on the way in (the programs update checksums, they do not
//     verify them; a test run's skb is never CHECKSUM_PARTIAL), and right
//     in whatever the program built (encapsulation: outer header, VXLAN
//     UDP length, VNI; ICMP frag-needed; ARP and NDP replies, which must be
//     the answer to the request byte for byte); TTL one less when routed;
//   - nothing is forwarded whose source a check should have refused: a
//     workload's packet carries its own MAC (CheckMAC) and source address
//     on the way in, and on the way out that address or a translation the
//     model allows (its floating IP, the node's address for natOutgoing);
//     a packet from the underlay never comes out with a source of this
//     host's, a local workload's or a local floating IP's; a decapsulated
//     one came from a node, to this node, with an inner source that node
//     may send; a prefiltered source is dropped, at TC and XDP, and nothing
//     else is;
//   - a redirect goes where the model says, as far as the packet shows it
//     (below): a delivery to the workload the destination address belongs
//     to, with its MACs, counted to-workload there for bpf_redirect_peer
//     (a veth whose MAC is known) and marked CX_MARK_ROUTED for its egress
//     hook otherwise; an encapsulated or routed packet to an uplink,
//     towards the node that owns its destination, encapsulated as the
//     route says; a reply (ARP, NDP, frag-needed) to the sender;
//   - an ICMP frag-needed reaches the sender, after the egress hook's
//     translation, addressed to it and quoting its packet as it was sent.
//
// What a test run cannot show, and how it is made up for:
//   - The redirect target. BPF_PROG_TEST_RUN returns TC_ACT_REDIRECT but
//     neither performs the redirect nor reports where to (bpf_redirect
//     keeps the target in per-CPU state), and the project's kernel lets
//     nothing watch the helpers (an fentry program on bpf_redirect fails to
//     load with EPERM, and there are no kprobes). What the packet shows is
//     checked instead: a delivered packet's destination address is a local
//     workload's and its MACs are that workload's route's (the route the
//     program takes the ifindex from); the to-workload counted at a
//     bpf_redirect_peer delivery is on that workload's ifindex (the very
//     value passed to the helper), and on no other delivery; the mark
//     tells the egress hook a calyx program routed it; an encapsulated or
//     routed packet's source MAC is an uplink's (the FIB's answer, the
//     same that names the interface), or the header is left as it was for
//     bpf_redirect_neigh. A redirect to the wrong ifindex of a packet
//     otherwise right goes unseen here (delivery_test.go attaches the
//     programs to real interfaces for that).
//   - The hook the kernel runs next on a redirected packet is run here, as
//     the reason and the route say the program redirected it: calyx_to_wl
//     on a workload's egress (bpf_redirect to a tap, bpf_redirect_neigh,
//     the replies), calyx_to_underlay on the underlay's egress,
//     calyx_from_underlay on its ingress (the host's own frag-needed,
//     BPF_F_INGRESS). bpf_redirect_peer enters the workload's namespace,
//     where no calyx hook runs.
//   - Conntrack is the only state a run leaves behind that changes later
//     verdicts: after each input it is put back to the model's baseline, so
//     an input that fails fails again on its own.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/gopacket/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/calyxnet/calyx/bpf"
	"github.com/calyxnet/calyx/bpf/bpftest"
	"github.com/calyxnet/calyx/bpfmap"
)

// ---------------------------------------------------------------------------
// The fuzz targets.

// FuzzFromWorkload: frames a workload sends (port selects it among
// fuzzEnv.ports, stray included). Unless raw, the frame's IPv4 header and
// TCP/UDP/ICMP checksums (the inner packet's too, tunnelled) are made right
// first: most mutations break a checksum, and an invariant about
// checksums that stay right needs right ones to start from.
func FuzzFromWorkload(f *testing.F) {
	fe := newFuzzEnv(f)
	for _, s := range fe.fromWLSeeds(f) {
		f.Add(s.port, false, s.frame)
	}
	f.Fuzz(func(t *testing.T, port uint8, raw bool, frame []byte) {
		fe.check(t, pFromWL, fe.port(port), withChecksums(raw, frame))
	})
}

// FuzzToWorkload: frames the host stack sends into a workload (port and
// raw as for FuzzFromWorkload).
func FuzzToWorkload(f *testing.F) {
	fe := newFuzzEnv(f)
	for _, s := range fe.toWLSeeds(f) {
		f.Add(s.port, false, s.frame)
	}
	f.Fuzz(func(t *testing.T, port uint8, raw bool, frame []byte) {
		fe.check(t, pToWL, fe.port(port), withChecksums(raw, frame))
	})
}

// FuzzFromUnderlay: frames received on the underlay (raw as for
// FuzzFromWorkload).
func FuzzFromUnderlay(f *testing.F) {
	fe := newFuzzEnv(f)
	for _, s := range fe.fromULSeeds(f) {
		f.Add(false, s)
	}
	f.Fuzz(func(t *testing.T, raw bool, frame []byte) {
		fe.check(t, pFromUL, fe.tun.ul, withChecksums(raw, frame))
	})
}

// FuzzToUnderlay: frames the host stack sends out of the underlay (raw as
// for FuzzFromWorkload).
func FuzzToUnderlay(f *testing.F) {
	fe := newFuzzEnv(f)
	for _, s := range fe.toULSeeds(f) {
		f.Add(false, s)
	}
	f.Fuzz(func(t *testing.T, raw bool, frame []byte) {
		fe.check(t, pToUL, fe.tun.ul, withChecksums(raw, frame))
	})
}

// FuzzPrefilterXDP: frames arriving on a NIC with the XDP prefilter. A
// test run can only name a device whose driver registered XDP queues, so
// it runs on the namespace's loopback (TestPrefilterXDP).
func FuzzPrefilterXDP(f *testing.F) {
	fe := newFuzzEnv(f)
	for _, s := range fe.xdpSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		fe.checkXDP(t, frame)
	})
}

// The checker's checksum helpers agree with gopacket's: what it builds
// l3Problem finds right, a flipped bit in the payload makes the L4
// checksum wrong (or, in the header, the IPv4 header's), and
// withChecksums makes it right again, a tunnelled packet's too.
func TestFuzzChecksumHelpers(t *testing.T) {
	l2 := bpftest.L2{Src: mac(1, 0x01), Dst: mac(1, 0xee)}
	a, b := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	a6, b6 := netip.MustParseAddr("fd00::1"), netip.MustParseAddr("fd00::2")
	frames := ipv4Protocols(l2, bpftest.IPv4{Src: a, Dst: b})
	frames["udp6"] = bpftest.IPv6UDP(l2, bpftest.IPv6{Src: a6, Dst: b6}, 1, 2, []byte("payload"))
	frames["icmp6"] = icmpv6(l2, a6, b6, 64, 128)
	for name, in := range frames {
		if p := l3Problem(in[14:], nil); p != "" {
			t.Errorf("%s as built: %s", name, p)
		}
		bad := slices.Clone(in)
		end := 14 + 40 + int(be16(in[18:])) // IPv6: the payload's end
		if in[12] == 0x08 {
			end = 14 + int(be16(in[16:])) // IPv4: the packet's (then padding)
		}
		bad[end-1] ^= 0x10
		if v, ok := l4Valid(bad[14:]); !ok || v {
			t.Errorf("%s with a payload bit flipped: L4 checksum right %v (verifiable %v)", name, v, ok)
		}
		if p := l3Problem(withChecksums(false, bad)[14:], nil); p != "" {
			t.Errorf("%s with a payload bit flipped, checksums made right: %s", name, p)
		}
		if bad[12] == 0x08 {
			bad[14+8] ^= 1
			if p := l3Problem(bad[14:], nil); p != "IPv4 header checksum wrong" {
				t.Errorf("%s with its TTL changed: %q", name, p)
			}
			if p := l3Problem(bad[14:], in[14:]); p != "IPv4 header checksum wrong" {
				t.Errorf("%s with its TTL changed, made from a right one: %q", name, p)
			}
		}
	}
	inner := frames["tcp"]
	for _, tun := range [][]byte{
		bpftest.IPIP(l2, bpftest.IPv4{Src: a, Dst: b}, inner[14:]),
		bpftest.VXLAN(l2, bpftest.IPv4{Src: a, Dst: b}, 1, testVXLANPort, testVNI, inner),
	} {
		bad := slices.Clone(tun)
		at := len(bad) - len(inner) + 14 // the inner IPv4 header
		bad[at+39] ^= 0x10               // its TCP header's last byte
		if v, ok := l4Valid(bad[at:]); !ok || v {
			t.Errorf("tunnelled, a bit flipped: inner L4 checksum right %v (verifiable %v)", v, ok)
		}
		fixed := withChecksums(false, bad)
		if p := l3Problem(fixed[at:], nil); p != "" || !bpftest.IPv4HeaderChecksumOK(fixed[14:]) {
			t.Errorf("tunnelled, checksums made right: inner %q, outer header right %v", p, bpftest.IPv4HeaderChecksumOK(fixed[14:]))
		}
	}
}

// ---------------------------------------------------------------------------
// The model.

// progKind is one of the TC programs.
type progKind int

const (
	pFromWL progKind = iota
	pToWL
	pFromUL
	pToUL
)

func (p progKind) String() string {
	return [...]string{"calyx_from_wl", "calyx_to_wl", "calyx_from_underlay", "calyx_to_underlay"}[p]
}

// progReasons are the reasons each program counts on the interface it runs
// on with TC_ACT_OK and with TC_ACT_REDIRECT (TC_ACT_SHOT: drop reasons).
var progReasons = [...]struct{ ok, redirect []bpfmap.Reason }{
	pFromWL: {
		ok: []bpfmap.Reason{bpfmap.ReasonPassHost},
		redirect: []bpfmap.Reason{bpfmap.ReasonDeliverLocal, bpfmap.ReasonARPReply, bpfmap.ReasonNDReply, bpfmap.ReasonEncapIPIP,
			bpfmap.ReasonEncapVXLAN, bpfmap.ReasonForwardDirect, bpfmap.ReasonICMPFragNeeded},
	},
	pToWL: {ok: []bpfmap.Reason{bpfmap.ReasonToWorkload}},
	pFromUL: {
		ok: []bpfmap.Reason{bpfmap.ReasonPassHost},
		redirect: []bpfmap.Reason{bpfmap.ReasonDeliverLocal, bpfmap.ReasonDecapIPIP, bpfmap.ReasonDecapVXLAN, bpfmap.ReasonEncapIPIP,
			bpfmap.ReasonEncapVXLAN, bpfmap.ReasonForwardDirect, bpfmap.ReasonICMPFragNeeded},
	},
	pToUL: {
		// Encapsulated or routed, already on its way out of the right
		// interface: TC_ACT_OK.
		ok: []bpfmap.Reason{bpfmap.ReasonPassHost, bpfmap.ReasonEncapIPIP, bpfmap.ReasonEncapVXLAN, bpfmap.ReasonForwardDirect},
		redirect: []bpfmap.Reason{bpfmap.ReasonDeliverLocal, bpfmap.ReasonEncapIPIP, bpfmap.ReasonEncapVXLAN,
			bpfmap.ReasonForwardDirect, bpfmap.ReasonICMPFragNeeded},
	},
}

// wlModel is a workload as the maps describe it.
type wlModel struct {
	*endpoint
	checkMAC    bool
	peer        bool // its route has Peer: bpf_redirect_peer delivers into it
	hasMAC      bool // its route has its MAC
	natOutgoing bool
	fips        []netip.Addr // its floating IPs (instance here)
}

// fuzzEnv is the model every fuzz target runs on, and what the invariants
// read it from: the maps as newFuzzEnv wrote them.
type fuzzEnv struct {
	*kindEnv
	ports    []*endpoint // the port byte's choices: the workloads, then stray
	wl       map[uint32]*wlModel
	ul       map[uint32]*endpoint // the uplinks (ul is the underlay)
	routes   map[netip.Prefix]bpfmap.Route
	fips     map[netip.Addr]bpfmap.FloatingIP
	ipcache  map[netip.Prefix]bpfmap.IPCacheEntry
	deny     []netip.Prefix
	cfg      bpfmap.NodeConfig
	xdp      *ebpf.Program
	baseline []mapSnapshot // cx_ct_v2, cx_nat_v2
	flows    fuzzFlows
}

// fuzzFlows are the model's established flows.
type fuzzFlows struct {
	natUDP, natTCP flow // wl1 to server, natOutgoing (ports pinned)
	fipIn          flow // client to wl3's floating IP, from outside
	fipOut         flow // wl1 pinging the remote instance's floating IP
	meta           flow // wl2 to the metadata service
	east           flow // wl1 to wl2
}

const (
	fuzzPortUDP = 61234 // the pinned natOutgoing source ports
	fuzzPortTCP = 61235
)

var (
	fuzzDeny4   = netip.MustParsePrefix("203.0.113.128/25") // client 203.0.113.7 is outside it
	fuzzDeny6   = netip.MustParsePrefix("2001:db8:bad::/48")
	fuzzDenied4 = netip.MustParseAddr("203.0.113.200")
	fuzzDenied6 = netip.MustParseAddr("2001:db8:bad::9")
	fuzzOut6    = netip.MustParseAddr("2001:db8:99::1")
	fuzzHostLL  = netip.MustParseAddr("fe80::1")
)

func newFuzzEnv(tb testing.TB) *fuzzEnv {
	tb.Helper()
	fe := &fuzzEnv{kindEnv: newKindEnv(tb)}
	e, m := fe.env, fe.dp.Maps

	// Policy: newPolicyEnv's tables and identities.
	e.putTestPolicies(tb)
	e.setTables(tb, e.wl2, tableWL1, 0)
	e.setTables(tb, e.wl3, 0, tableDNS)
	e.setTables(tb, e.wl4, tableLog, tableDeny)
	e.setTables(tb, fe.vm5, tableDeny, tableSport)

	// Remote blocks in every encapsulation (newNATEnv has nodeA IP-in-IP).
	e.block(tb, e.tun.nodeA, bpfmap.EncapVXLAN)
	e.block(tb, e.tun.nodeC, bpfmap.EncapNone)
	e.block(tb, e.tun.nodeB, bpfmap.EncapIPIP)
	e.block(tb, e.tun.nodeX, bpfmap.EncapVXLAN)

	for _, p := range []netip.Prefix{fuzzDeny4, fuzzDeny6} {
		must(tb, m.Prefilter.Put(p, struct{}{}))
	}
	cfg := e.tun.cfg
	cfg.RouteGen = 1
	cfg.EndpointToHost = bpfmap.EndpointToHostDrop
	cfg.PrefilterTC = true
	must(tb, m.Config.Put(0, cfg))
	e.tun.cfg = cfg
	fe.xdp = e.dp.PrefilterProgram()

	fe.readModel(tb)
	fe.establish(tb)
	return fe
}

// readModel reads back what the invariants compare against.
func (fe *fuzzEnv) readModel(tb testing.TB) {
	tb.Helper()
	m := fe.dp.Maps
	var err error
	fe.routes, err = m.Routes.All()
	must(tb, err)
	fe.fips, err = m.FIPs.All()
	must(tb, err)
	fe.ipcache, err = m.IPCache.All()
	must(tb, err)
	pf, err := m.Prefilter.All()
	must(tb, err)
	for p := range pf {
		fe.deny = append(fe.deny, p)
	}
	fe.cfg, err = m.NodeConfig()
	must(tb, err)
	ifs, err := m.Ifaces.All()
	must(tb, err)

	fe.wl = map[uint32]*wlModel{}
	for _, ep := range []*endpoint{fe.wl1, fe.wl2, fe.wl3, fe.wl4, fe.vm5, fe.vm6} {
		ifc, ok := ifs[ep.idx()]
		rt := fe.routes[netip.PrefixFrom(ep.ip4, 32)]
		if !ok || !ifc.Workload || rt.Type != bpfmap.RouteLocalWorkload || rt.Ifindex != ep.idx() {
			tb.Fatalf("%s is not a workload in the maps", ep.name)
		}
		w := &wlModel{endpoint: ep, checkMAC: ifc.CheckMAC, peer: rt.Peer, hasMAC: rt.MAC != (bpfmap.MAC{}), natOutgoing: rt.NATOutgoing}
		for a, f := range fe.fips {
			if f.Local && f.Fixed == ep.ip4 {
				w.fips = append(w.fips, a)
			}
		}
		fe.wl[ep.idx()] = w
		fe.ports = append(fe.ports, ep)
	}
	if _, ok := ifs[fe.stray.idx()]; ok {
		tb.Fatal("stray is in cx_ifaces")
	}
	fe.ports = append(fe.ports, fe.stray)
	fe.ul = map[uint32]*endpoint{fe.tun.ul.idx(): fe.tun.ul, fe.tun.ul2.idx(): fe.tun.ul2}
}

func (fe *fuzzEnv) port(b uint8) *endpoint { return fe.ports[int(b)%len(fe.ports)] }

// route is the longest prefix in cx_routes that holds a, as cx_route_v4
// and cx_route_v6 find it (v4-mapped IPv6 addresses have none).
func (fe *fuzzEnv) route(a netip.Addr) (bpfmap.Route, bool) {
	if a.Is4In6() {
		return bpfmap.Route{}, false
	}
	best, found := -1, bpfmap.Route{}
	for p, r := range fe.routes {
		if p.Contains(a) && p.Bits() > best {
			best, found = p.Bits(), r
		}
	}
	return found, best >= 0
}

// hostIdentity says whether the ipcache marks a as one of this host's.
func (fe *fuzzEnv) hostIdentity(a netip.Addr) bool {
	best, host := -1, false
	for p, e := range fe.ipcache {
		if p.Contains(a) && p.Bits() > best {
			best, host = p.Bits(), e.Host
		}
	}
	return host
}

// localSource says whether a is this host's to send from (cx_local_source):
// its own, a local workload's or a local floating IP.
func (fe *fuzzEnv) localSource(a netip.Addr) bool {
	if fe.hostIdentity(a) {
		return true
	}
	r, ok := fe.route(a)
	switch {
	case !ok:
		return false
	case r.Type == bpfmap.RouteLocalWorkload || r.Type == bpfmap.RouteHost:
		return true
	case r.Type == bpfmap.RouteFloatingIP:
		return fe.fips[a].Local
	}
	return false
}

// innerSourceOK says whether node may tunnel a packet from src to this host.
func (fe *fuzzEnv) innerSourceOK(src, node netip.Addr) bool {
	if fe.localSource(src) {
		return false
	}
	r, ok := fe.route(src)
	switch {
	case !ok:
		return true
	case r.Type == bpfmap.RouteNode:
		return src == node
	case r.Type == bpfmap.RouteRemoteWorkload:
		return r.NextHop == node
	}
	return true
}

// isNode says whether a is another node's underlay address.
func (fe *fuzzEnv) isNode(a netip.Addr) bool {
	r, ok := fe.route(a)
	return ok && r.Type == bpfmap.RouteNode
}

// towards is the node, and the encapsulation, a packet to dst is sent to
// (a floating IP whose instance is elsewhere: its fixed IP's).
func (fe *fuzzEnv) towards(dst netip.Addr) (netip.Addr, bpfmap.Encap, bool) {
	r, ok := fe.route(dst)
	if ok && r.Type == bpfmap.RouteFloatingIP {
		if f, known := fe.fips[dst]; known && !f.Local {
			r, ok = fe.route(f.Fixed)
		}
	}
	if !ok || r.Type != bpfmap.RouteRemoteWorkload {
		return netip.Addr{}, 0, false
	}
	return r.NextHop, r.Encap, true
}

// denied says whether the prefilter's list holds a.
func (fe *fuzzEnv) denied(a netip.Addr) bool {
	for _, p := range fe.deny {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// allowedSources are the sources a workload's packet may leave with: its
// own, its floating IPs (hairpin), the node's address (natOutgoing).
func (fe *fuzzEnv) allowedSources(w *wlModel) []netip.Addr {
	out := append([]netip.Addr{w.ip4, w.ip6}, w.fips...)
	if w.natOutgoing {
		out = append(out, fe.cfg.Address)
	}
	return out
}

// establish starts the model's flows, pins the natOutgoing ports and
// keeps the conntrack table as the baseline every input starts from.
func (fe *fuzzEnv) establish(tb testing.TB) {
	tb.Helper()
	e := fe.env
	fl := &fe.flows
	fl.natUDP = mkFlow(bpfmap.ProtoUDP, e.wl1.ip4, 40000, server, 53)
	fl.natTCP = mkFlow(bpfmap.ProtoTCP, e.wl1.ip4, 40001, server, 443)
	fl.fipIn = mkFlow(bpfmap.ProtoTCP, client, 41000, fipWL3, 22)
	fl.fipOut = mkFlow(bpfmap.ProtoICMP, e.wl1.ip4, 7, fipRemote, 0)
	fl.meta = mkFlow(bpfmap.ProtoTCP, e.wl2.ip4, 40002, metadataIP, 80)
	fl.east = mkFlow(bpfmap.ProtoUDP, e.wl1.ip4, 40003, e.wl2.ip4, 53)
	for _, s := range []struct {
		f       flow
		prog    progKind
		ep      *endpoint
		l2      bpftest.L2
		verdict uint32
		reason  bpfmap.Reason
	}{
		{fl.natUDP, pFromWL, e.wl1, e.wl1.l2(), redirect, bpfmap.ReasonForwardDirect},
		{fl.natTCP, pFromWL, e.wl1, e.wl1.l2(), redirect, bpfmap.ReasonForwardDirect},
		{fl.fipIn, pFromUL, e.tun.ul, e.routerL2(), redirect, bpfmap.ReasonDeliverLocal},
		{fl.fipOut, pFromWL, e.wl1, e.wl1.l2(), redirect, bpfmap.ReasonEncapIPIP},
		{fl.meta, pFromWL, e.wl2, e.wl2.l2(), ok, bpfmap.ReasonPassHost},
		{fl.east, pFromWL, e.wl1, e.wl1.l2(), redirect, bpfmap.ReasonDeliverLocal},
	} {
		o := e.runOn(tb, fe.prog(s.prog), s.ep.ifindex, s.f.frame(s.l2, syn))
		if o.verdict != s.verdict || o.delta[bpfmap.CounterKey{Ifindex: s.ep.idx(), Reason: s.reason}].Packets != 1 {
			tb.Fatalf("baseline flow %s: %s, counted %s; want %s with %s", s.f, bpftest.VerdictName(o.verdict),
				fmtCounters(o.delta), bpftest.VerdictName(s.verdict), s.reason)
		}
	}
	fe.pinNATPort(tb, fl.natUDP, fuzzPortUDP)
	fe.pinNATPort(tb, fl.natTCP, fuzzPortTCP)
	fe.baseline = []mapSnapshot{snapshotMap(tb, fe.ct), snapshotMap(tb, fe.nat)}
}

// pinNATPort moves the natOutgoing flow f to source port port, so that
// seeds can answer it whichever port the program drew.
func (fe *fuzzEnv) pinNATPort(tb testing.TB, f flow, port uint16) {
	tb.Helper()
	var orig, reply bpf.CalyxCxNatEntry
	must(tb, fe.nat.Lookup(rawNATKey(f), &orig))
	if addrFrom16(orig.NatSaddr) != hostAddr {
		tb.Fatalf("%s is not translated to the node's address", f)
	}
	old := mkFlow(f.proto, hostAddr, bits.ReverseBytes16(orig.NatSport), f.dst.Addr(), f.dst.Port()).reverse()
	must(tb, fe.nat.Lookup(rawNATKey(old), &reply))
	must(tb, fe.nat.Delete(rawNATKey(old)))
	orig.NatSport = bits.ReverseBytes16(port)
	must(tb, fe.nat.Put(rawNATKey(f), orig))
	must(tb, fe.nat.Put(rawNATKey(mkFlow(f.proto, hostAddr, port, f.dst.Addr(), f.dst.Port()).reverse()), reply))
}

func addrFrom16(b [16]byte) netip.Addr { return netip.AddrFrom16(b).Unmap() }

// resetConntrack puts the conntrack maps back to the baseline and says
// how many entries it removed.
func (fe *fuzzEnv) resetConntrack(tb testing.TB) int {
	tb.Helper()
	n := 0
	for _, b := range fe.baseline {
		n += b.reset(tb)
	}
	return n
}

// mapSnapshot is a map's entries as raw bytes, to put it back to.
type mapSnapshot struct {
	m       *ebpf.Map
	entries map[string]string
}

func snapshotMap(tb testing.TB, m *ebpf.Map) mapSnapshot {
	tb.Helper()
	s := mapSnapshot{m: m, entries: map[string]string{}}
	k, v := make([]byte, m.KeySize()), make([]byte, m.ValueSize())
	it := m.Iterate()
	for it.Next(k, v) {
		s.entries[string(k)] = string(v)
	}
	must(tb, it.Err())
	return s
}

// reset puts the map back to the snapshot and says how many entries it
// removed.
func (s mapSnapshot) reset(tb testing.TB) int {
	tb.Helper()
	now := snapshotMap(tb, s.m)
	stale := 0
	for k, v := range now.entries {
		b, ok := s.entries[k]
		switch {
		case !ok:
			if err := s.m.Delete([]byte(k)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				tb.Fatal(err)
			}
			stale++
		case b != v:
			must(tb, s.m.Put([]byte(k), []byte(b)))
		}
	}
	for k, v := range s.entries {
		if _, ok := now.entries[k]; !ok {
			must(tb, s.m.Put([]byte(k), []byte(v)))
		}
	}
	return stale
}

func (fe *fuzzEnv) prog(p progKind) *ebpf.Program {
	return [...]*ebpf.Program{pFromWL: fe.from, pToWL: fe.to, pFromUL: fe.ulIngress, pToUL: fe.ulEgress}[p]
}

// ---------------------------------------------------------------------------
// The invariants.

// hop is one program run: on the fuzzer's frame, or on what the previous
// hop redirected.
type hop struct {
	prog progKind
	ep   *endpoint // the interface it runs on
	mark uint32
	o    outcome
}

// failer reports a broken invariant with everything needed to judge it.
type failer struct {
	t    *testing.T
	hops []hop
}

func (f failer) fatalf(format string, args ...any) {
	f.t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, format, args...)
	for i, h := range f.hops {
		fmt.Fprintf(&b, "\n hop %d: %s on %s (ifindex %d, mark %#x): %s, counted %s", i+1, h.prog, h.ep.name,
			h.ep.ifindex, h.mark, bpftest.VerdictName(h.o.verdict), fmtCounters(h.o.delta))
		fmt.Fprintf(&b, "\n  in  %x\n  out %x", h.o.in, h.o.out)
	}
	f.t.Fatal(b.String())
}

// check runs prog on frame as seen on ep, checks every invariant, follows
// a redirect to the hook the kernel would run next, and puts conntrack
// back as it was.
func (fe *fuzzEnv) check(t *testing.T, prog progKind, ep *endpoint, frame []byte) {
	t.Helper()
	defer func() { coverFlows(fe.resetConntrack(t)) }()
	h, err := fe.runHop(t, prog, ep, 0, frame)
	if errors.Is(err, unix.EINVAL) {
		return
	}
	if err != nil {
		t.Fatalf("%s on %s: %v", prog, ep.name, err)
	}
	f := failer{t: t, hops: []hop{h}}
	next, ok := fe.checkHop(f, h)
	if !ok {
		return
	}
	h2, err := fe.runHop(t, next.prog, next.ep, next.mark, h.o.out)
	if err != nil {
		f.fatalf("the next hook (%s on %s) refused the redirected packet: %v", next.prog, next.ep.name, err)
	}
	f.hops = append(f.hops, h2)
	fe.checkHop(f, h2)
	fe.checkChain(f, h, h2)
}

func (fe *fuzzEnv) runHop(t *testing.T, prog progKind, ep *endpoint, mark uint32, frame []byte) (hop, error) {
	t.Helper()
	o, err := fe.tryRunIn(t, fe.prog(prog), bpftest.Input{Data: frame, Ifindex: ep.ifindex, Mark: mark})
	if err != nil {
		return hop{}, err
	}
	return hop{prog: prog, ep: ep, mark: mark, o: o}, nil
}

// nextHop is where a redirected packet goes on.
type nextHop struct {
	prog progKind
	ep   *endpoint
	mark uint32
}

// checkHop checks one run and says which hook the kernel would run next on
// the packet, if any.
func (fe *fuzzEnv) checkHop(f failer, h hop) (nextHop, bool) {
	f.t.Helper()
	o := h.o
	reason, extra := fe.checkCounters(f, h)
	cover(h, reason)
	rs := progReasons[h.prog]
	switch o.verdict {
	case shot:
		if !reason.IsDrop() {
			f.fatalf("TC_ACT_SHOT counted as %s, not a drop", reason)
		}
	case ok:
		if !slices.Contains(rs.ok, reason) && !(h.prog == pToUL && h.mark == cxMarkRouted) {
			f.fatalf("TC_ACT_OK counted as %s; %s passes with %v", reason, h.prog, rs.ok)
		}
	case redirect:
		if !slices.Contains(rs.redirect, reason) {
			f.fatalf("TC_ACT_REDIRECT counted as %s; %s redirects with %v", reason, h.prog, rs.redirect)
		}
	default:
		f.fatalf("verdict %s", bpftest.VerdictName(o.verdict))
	}
	changed := !bytes.Equal(o.in, o.out)
	if o.verdict == shot {
		// Except, harmless (the skb is freed; only a drop monitor sees
		// it), what a drop decided after a rewrite leaves: calyx_from_underlay
		// decides policy and NAT on the inner packet after taking the outer
		// headers off (decapsulated); the MTU and the FIB are checked on
		// the translated packet (translated); and drop-helper, a helper
		// refusing halfway through a rewrite, leaves what the ones before
		// it did.
		decap := h.prog == pFromUL && (decapsulated(o, 20) || decapsulated(o, 50))
		if changed && !decap && !translated(o) && reason != bpfmap.ReasonDropHelper {
			f.fatalf("a dropped packet changed")
		}
		fe.checkDropped(f, h, reason)
		return nextHop{}, false
	}
	fe.checkRefused(f, h)
	if o.verdict == ok && !changed {
		return nextHop{}, false
	}
	if o.verdict == ok && h.mark == cxMarkRouted {
		f.fatalf("a packet another calyx program routed changed on %s", h.prog)
	}
	fe.checkOutput(f, h, reason)
	if o.verdict != redirect {
		return nextHop{}, false
	}
	return fe.checkTarget(f, h, reason, extra)
}

// coverSink keeps cover's branches apart.
var coverSink int

// cover turns what a run did into branches of Go code, the only coverage
// Go's fuzzer sees (not the BPF programs'): an input that makes a program
// count a reason it had not yet, or reach one with another kind of packet,
// a translation, a new conntrack entry or a next hook, is kept in the
// corpus and mutated further.
func cover(h hop, reason bpfmap.Reason) {
	switch reason {
	case bpfmap.ReasonPassHost:
		coverSink++
	case bpfmap.ReasonDeliverLocal:
		coverSink++
	case bpfmap.ReasonARPReply:
		coverSink++
	case bpfmap.ReasonToWorkload:
		coverSink++
	case bpfmap.ReasonEncapIPIP:
		coverSink++
	case bpfmap.ReasonEncapVXLAN:
		coverSink++
	case bpfmap.ReasonForwardDirect:
		coverSink++
	case bpfmap.ReasonDecapIPIP:
		coverSink++
	case bpfmap.ReasonDecapVXLAN:
		coverSink++
	case bpfmap.ReasonICMPFragNeeded:
		coverSink++
	case bpfmap.ReasonNDReply:
		coverSink++
	case bpfmap.ReasonDropMalformed:
		coverSink++
	case bpfmap.ReasonDropSpoofIP:
		coverSink++
	case bpfmap.ReasonDropSpoofMAC:
		coverSink++
	case bpfmap.ReasonDropNoEndpoint:
		coverSink++
	case bpfmap.ReasonDropUnsupported:
		coverSink++
	case bpfmap.ReasonDropARPIgnored:
		coverSink++
	case bpfmap.ReasonDropTunnelSrc:
		coverSink++
	case bpfmap.ReasonDropTunnelDst:
		coverSink++
	case bpfmap.ReasonDropTunnelVNI:
		coverSink++
	case bpfmap.ReasonDropNoRoute:
		coverSink++
	case bpfmap.ReasonDropTooBig:
		coverSink++
	case bpfmap.ReasonDropFIB:
		coverSink++
	case bpfmap.ReasonDropHelper:
		coverSink++
	case bpfmap.ReasonDropNDIgnored:
		coverSink++
	case bpfmap.ReasonDropNATPorts:
		coverSink++
	case bpfmap.ReasonDropCTFull:
		coverSink++
	case bpfmap.ReasonDropPolicy:
		coverSink++
	case bpfmap.ReasonDropPrefilter:
		coverSink++
	case bpfmap.ReasonDropUnderlaySpoof:
		coverSink++
	case bpfmap.ReasonDropTunnelInnerSrc:
		coverSink++
	case bpfmap.ReasonDropVLAN:
		coverSink++
	}
	in, out := h.o.in, h.o.out
	switch {
	case len(in) < 14:
	case be16(in[12:]) == 0x0806:
		coverSink++
	case be16(in[12:]) == 0x86dd:
		coverSink++
	case be16(in[12:]) != 0x0800 || len(in) < 34:
		coverSink++
	case in[23] == 6:
		coverSink++
	case in[23] == 17:
		coverSink++
	case in[23] == 1:
		coverSink++
	case in[23] == 4:
		coverSink++
	}
	if len(in) >= 34 && len(out) >= 34 && be16(in[12:]) == 0x0800 && be16(out[12:]) == 0x0800 {
		if !bytes.Equal(in[26:30], out[26:30]) {
			coverSink++
		}
		if !bytes.Equal(in[30:34], out[30:34]) {
			coverSink++
		}
	}
	switch h.prog {
	case pFromWL:
		coverSink++
	case pToWL:
		coverSink++
	case pFromUL:
		coverSink++
	case pToUL:
		coverSink++
	}
}

// coverFlows: how many conntrack entries an input left.
func coverFlows(n int) {
	switch n {
	case 0:
	case 1:
		coverSink++
	case 2:
		coverSink++
	default:
		coverSink++
	}
}

// translated says whether o.out differs from the IPv4 packet o.in only
// where NAT rewrites: the header's checksum and addresses, the L4
// header's ports and checksum (an ICMP error's quoted header).
func translated(o outcome) bool {
	in, out := o.in, o.out
	if len(in) != len(out) || !soundIPv4(in) || !bytes.Equal(in[:14+10], out[:14+10]) {
		return false
	}
	hl, tot := 14+int(in[14]&0xf)*4, 14+int(be16(in[16:]))
	l4end := min(tot, hl+8+28)
	return bytes.Equal(in[14+20:hl], out[14+20:hl]) && bytes.Equal(in[l4end:], out[l4end:])
}

// decapsulated says whether o.out is o.in without room bytes of outer
// headers after its Ethernet header, and nothing else changed.
func decapsulated(o outcome, room int) bool {
	return len(o.in) >= 14+room && bytes.Equal(o.out, slices.Concat(o.in[:14], o.in[14+room:]))
}

// checkCounters: exactly one reason on the interface the program runs on,
// one packet of the frame's length; besides, at most one to-workload on
// another model workload, of what came out. It returns the reason and that
// destination.
func (fe *fuzzEnv) checkCounters(f failer, h hop) (bpfmap.Reason, *wlModel) {
	f.t.Helper()
	o := h.o
	var reason bpfmap.Reason
	var extra *wlModel
	on := 0
	for k, c := range o.delta {
		// A delivery's to-workload may be on the interface the program
		// runs on (hairpin), except for calyx_to_wl's own verdict.
		delivered := k.Reason == bpfmap.ReasonToWorkload && fe.wl[k.Ifindex] != nil && h.prog != pToWL
		switch {
		case k.Ifindex == h.ep.idx() && !delivered:
			on++
			reason = k.Reason
			if c != (bpfmap.Counter{Packets: 1, Bytes: uint64(len(o.in))}) {
				f.fatalf("%s counted %d packets, %d bytes for one %d-byte frame", k.Reason, c.Packets, c.Bytes, len(o.in))
			}
		case delivered && extra == nil:
			extra = fe.wl[k.Ifindex]
			if c != (bpfmap.Counter{Packets: 1, Bytes: uint64(len(o.out))}) {
				f.fatalf("to-workload on %s counted %d packets, %d bytes for one %d-byte packet", extra.name, c.Packets, c.Bytes, len(o.out))
			}
		default:
			f.fatalf("counted %s on ifindex %d", k.Reason, k.Ifindex)
		}
	}
	if h.prog == pToUL && h.mark == cxMarkRouted {
		// Routed by a calyx program already: not counted twice.
		if len(o.delta) != 0 || o.verdict != ok {
			f.fatalf("a packet a calyx program routed was counted or stopped on the underlay's egress")
		}
		return 0, nil
	}
	if on != 1 {
		f.fatalf("%d reasons counted on %s, want 1", on, h.ep.name)
	}
	if extra != nil && (o.verdict != redirect || (reason != bpfmap.ReasonDeliverLocal && reason != bpfmap.ReasonDecapIPIP && reason != bpfmap.ReasonDecapVXLAN)) {
		f.fatalf("to-workload on %s for a packet that was not delivered", extra.name)
	}
	return reason, extra
}

// checkRefused: what passed or went on (any verdict but SHOT) is nothing a
// check should have refused.
func (fe *fuzzEnv) checkRefused(f failer, h hop) {
	f.t.Helper()
	in := h.o.in
	switch h.prog {
	case pFromWL:
		w := fe.wl[h.ep.idx()]
		if w == nil {
			f.fatalf("%s is no endpoint, and its packet was not dropped", h.ep.name)
		}
		if w.checkMAC && !bytes.Equal(in[6:12], w.mac) {
			f.fatalf("a frame from %s with source MAC %s was not dropped", net.HardwareAddr(in[6:12]), w.name)
		}
	case pToWL:
		if fe.wl[h.ep.idx()] == nil {
			f.fatalf("%s is no endpoint, and a packet into it was not dropped", h.ep.name)
		}
	case pFromUL:
		if src, ok := prefilterSource(in); ok && fe.denied(src) {
			f.fatalf("source %s is on the prefilter's deny list (at TC too) and was not dropped", src)
		}
		if src := ipSource(in[14:]); soundIPv4(in) && fe.localSource(src) {
			f.fatalf("a packet from the underlay with source %s, this host's own, a local workload's or a local floating IP's, was not dropped", src)
		}
	}
}

// checkDropped: the checks that refuse sources refuse only those they are
// for.
func (fe *fuzzEnv) checkDropped(f failer, h hop, reason bpfmap.Reason) {
	f.t.Helper()
	switch reason {
	case bpfmap.ReasonDropPrefilter:
		if src, ok := prefilterSource(h.o.in); !ok || !fe.denied(src) {
			f.fatalf("drop-prefilter of a frame whose source (%v) is not on the deny list", src)
		}
	case bpfmap.ReasonDropUnderlaySpoof:
		if src := ipSource(h.o.in[14:]); !fe.localSource(src) {
			f.fatalf("drop-underlay-spoof of a packet from %s, not a local source", src)
		}
	}
}

// soundIP says whether b is an IPv4 or IPv6 packet whose lengths fit:
// what a router takes (checksums aside).
func soundIP(b []byte) bool {
	switch {
	case len(b) >= 20 && b[0]>>4 == 4:
		hl, tot := int(b[0]&0xf)*4, int(be16(b[2:]))
		return hl >= 20 && tot >= hl && tot <= len(b)
	case len(b) >= 40 && b[0]>>4 == 6:
		return 40+int(be16(b[4:])) <= len(b)
	}
	return false
}

// soundIPv4 says whether frame is an untagged IPv4 packet whose header
// any router would take: version 4, a header of 20 bytes or more within
// the frame, a total length from the header's to the frame's end.
func soundIPv4(frame []byte) bool {
	return len(frame) >= 34 && be16(frame[12:]) == 0x0800 && frame[14]>>4 == 4 && soundIP(frame[14:])
}

// prefilterSource is the source address the prefilter judges a frame by:
// IPv4 or IPv6 after up to two VLAN tags.
func prefilterSource(frame []byte) (netip.Addr, bool) {
	if len(frame) < 14 {
		return netip.Addr{}, false
	}
	proto, l3 := be16(frame[12:]), frame[14:]
	for i := 0; i < 2 && (proto == 0x8100 || proto == 0x88a8); i++ {
		if len(l3) < 4 {
			return netip.Addr{}, false
		}
		proto, l3 = be16(l3[2:]), l3[4:]
	}
	switch {
	case proto == 0x0800 && len(l3) >= 20:
		return netip.AddrFrom4([4]byte(l3[12:16])), true
	case proto == 0x86dd && len(l3) >= 40:
		return netip.AddrFrom16([16]byte(l3[8:24])), true
	}
	return netip.Addr{}, false
}

// checkOutput: the packet that came out is well-formed, routed as it
// should be, from a source it may have.
func (fe *fuzzEnv) checkOutput(f failer, h hop, reason bpfmap.Reason) {
	f.t.Helper()
	in, out := h.o.in, h.o.out
	if len(out) < 14 {
		f.fatalf("%d bytes came out", len(out))
	}
	switch reason {
	case bpfmap.ReasonARPReply:
		fe.checkARPReply(f, h)
		return
	case bpfmap.ReasonNDReply:
		fe.checkNDReply(f, h)
		return
	case bpfmap.ReasonICMPFragNeeded:
		fe.checkFragNeeded(f, h)
		return
	}
	// The IP packet the program made of the input's (l3 out of ref).
	var l3, ref []byte
	switch reason {
	case bpfmap.ReasonEncapIPIP, bpfmap.ReasonEncapVXLAN:
		l3 = fe.checkEncap(f, h, reason)
		ref = in[14:]
	case bpfmap.ReasonDecapIPIP, bpfmap.ReasonDecapVXLAN:
		ref = fe.checkDecap(f, h, map[bpfmap.Reason]int{bpfmap.ReasonDecapIPIP: 20, bpfmap.ReasonDecapVXLAN: 50}[reason])
		l3 = out[14:]
	default:
		if h.prog == pFromUL && len(out) < len(in) {
			// Passed to the host decapsulated.
			ref = fe.checkDecap(f, h, len(in)-len(out))
			if !bytes.Equal(out[:14], in[:14]) {
				f.fatalf("decapsulated for the host with another Ethernet header")
			}
		} else {
			if len(out) != len(in) || !bytes.Equal(out[12:14], in[12:14]) {
				f.fatalf("%s changed the frame's length or ethertype", reason)
			}
			ref = in[14:]
		}
		l3 = out[14:]
	}
	if h.prog == pToWL && !soundIP(ref) {
		// calyx_to_wl trusts the host stack, which sends no such packet
		// (ip_output): it translates what it finds, garbage in, garbage
		// out. Every other program parses the header first.
		return
	}
	if p := l3Problem(l3, ref); p != "" {
		f.fatalf("%s: %s", reason, p)
	}
	if be16(out[12:]) != 0x0800 && be16(out[12:]) != 0x86dd && reason != bpfmap.ReasonEncapVXLAN && reason != bpfmap.ReasonEncapIPIP {
		f.fatalf("%s of ethertype %#04x", reason, be16(out[12:]))
	}
	fe.checkTTL(f, h, reason, l3, ref)
	fe.checkSource(f, h, reason, l3, ref)
	if reason == bpfmap.ReasonForwardDirect {
		fe.checkRouted(f, l3, 0, netip.Addr{})
	}
}

// checkTTL: a packet calyx routes (from a workload, or from the underlay
// into one or on to a node) loses one TTL (hop limit); the host's own and
// what goes to the host stack keep theirs.
func (fe *fuzzEnv) checkTTL(f failer, h hop, reason bpfmap.Reason, l3, ref []byte) {
	f.t.Helper()
	routed := (h.prog == pFromWL || h.prog == pFromUL) && reason != bpfmap.ReasonPassHost && h.o.verdict == redirect
	ttlOff := 8
	if l3[0]>>4 == 6 {
		ttlOff = 7
	}
	if ref[0]>>4 != l3[0]>>4 || len(ref) <= ttlOff {
		f.fatalf("%s: the packet changed IP version", reason)
	}
	want := ref[ttlOff]
	if routed {
		if want <= 1 {
			f.fatalf("%s: routed with TTL (hop limit) %d", reason, want)
		}
		want--
	}
	if l3[ttlOff] != want {
		f.fatalf("%s: TTL (hop limit) %d, want %d", reason, l3[ttlOff], want)
	}
}

// checkSource: a workload's packet came from its own address and leaves
// from one the model allows it; nothing from the underlay leaves with a
// source of this host's.
func (fe *fuzzEnv) checkSource(f failer, h hop, reason bpfmap.Reason, l3, ref []byte) {
	f.t.Helper()
	src, refSrc := ipSource(l3), ipSource(ref)
	switch h.prog {
	case pFromWL:
		w := fe.wl[h.ep.idx()]
		if refSrc != w.ip4 && refSrc != w.ip6 {
			f.fatalf("%s of a packet from %s, which is not %s's address", reason, refSrc, w.name)
		}
		if !slices.Contains(fe.allowedSources(w), src) {
			f.fatalf("%s: %s's packet leaves with source %s (allowed: %v)", reason, w.name, src, fe.allowedSources(w))
		}
	case pFromUL:
		if src.Is4() && fe.localSource(src) {
			f.fatalf("%s: a packet from the underlay leaves with source %s, this host's own, a local workload's or a local floating IP's", reason, src)
		}
	}
}

// checkRouted: a packet routed to a node goes to the one that owns its
// destination, encapsulated as the route says (nextHop zero: routed
// unencapsulated, to a node or, natOutgoing, from the node's address to
// outside every pool).
func (fe *fuzzEnv) checkRouted(f failer, l3 []byte, encap bpfmap.Encap, nextHop netip.Addr) {
	f.t.Helper()
	dst := ipDest(l3)
	node, want, known := fe.towards(dst)
	if !nextHop.IsValid() && !known {
		if _, routed := fe.route(dst); routed || ipSource(l3) != fe.cfg.Address {
			f.fatalf("routed to %s, which is no remote workload, nor natOutgoing", dst)
		}
		return
	}
	if !known || want != encap || (nextHop.IsValid() && node != nextHop) {
		f.fatalf("sent to %s as %s to node %v; the model says %s to %v", dst, encap, nextHop, want, node)
	}
}

// checkEncap checks the outer headers the program put on and returns the
// inner IP packet.
func (fe *fuzzEnv) checkEncap(f failer, h hop, reason bpfmap.Reason) []byte {
	f.t.Helper()
	in, out := h.o.in, h.o.out
	encap, room := bpfmap.EncapIPIP, 20
	if reason == bpfmap.ReasonEncapVXLAN {
		encap, room = bpfmap.EncapVXLAN, 50
	}
	if len(out) != len(in)+room || be16(in[12:]) != 0x0800 {
		f.fatalf("%s: %d bytes in, %d out; want IPv4 and %d more", reason, len(in), len(out), room)
	}
	o := out[14:]
	if be16(out[12:]) != 0x0800 || o[0] != 0x45 || int(be16(o[2:])) != len(o) || be16(o[6:]) != 0x4000 || o[8] == 0 {
		f.fatalf("%s: outer IPv4 %x is not version 4, ihl 5, the frame's length, DF, TTL > 0", reason, o[:20])
	}
	if !bpftest.IPv4HeaderChecksumOK(o) {
		f.fatalf("%s: outer IPv4 header checksum wrong", reason)
	}
	src, dst := ipSource(o), ipDest(o)
	if src != fe.cfg.Address || !fe.isNode(dst) {
		f.fatalf("%s: outer %s -> %s; want from this node (%s) to a node", reason, src, dst, fe.cfg.Address)
	}
	var inner []byte
	if encap == bpfmap.EncapIPIP {
		if o[9] != 4 {
			f.fatalf("%s: outer protocol %d", reason, o[9])
		}
		inner = o[20:]
	} else {
		u := o[20:28]
		if o[9] != 17 || be16(u[2:]) != uint16(fe.cfg.VXLANPort) || int(be16(u[4:])) != len(o)-20 {
			f.fatalf("%s: outer UDP %x: want protocol 17, port %d, length %d", reason, u, fe.cfg.VXLANPort, len(o)-20)
		}
		if sum := be16(u[6:]); sum != 0 {
			if v, ok := l4Valid(o); !ok || !v {
				f.fatalf("%s: outer UDP checksum %#04x wrong", reason, sum)
			}
		}
		vx := o[28:36]
		if vx[0] != 0x08 || binary.BigEndian.Uint32(vx[4:])>>8 != fe.cfg.VXLANVNI {
			f.fatalf("%s: VXLAN header %x: want the I flag and VNI %#x", reason, vx, fe.cfg.VXLANVNI)
		}
		if !bytes.Equal(o[36:50], in[:14]) {
			f.fatalf("%s: inner Ethernet %x, want the original %x", reason, o[36:50], in[:14])
		}
		inner = o[50:]
	}
	fe.checkRouted(f, inner, encap, dst)
	return inner
}

// checkDecap checks what a decapsulated packet came in: a tunnel packet
// from a node to this node, with an inner source that node may send. It
// returns the inner IP packet as it came.
func (fe *fuzzEnv) checkDecap(f failer, h hop, room int) []byte {
	f.t.Helper()
	in := h.o.in
	if (room != 20 && room != 50) || len(h.o.out) != len(in)-room || be16(in[12:]) != 0x0800 || len(in) < 14+room+20 {
		f.fatalf("decapsulated: %d bytes in, %d out", len(in), len(h.o.out))
	}
	o := in[14:]
	if o[0] != 0x45 || be16(o[6:])&0x3fff != 0 {
		f.fatalf("decapsulated a tunnel packet with options or fragmented: %x", o[:20])
	}
	outerSrc, outerDst := ipSource(o), ipDest(o)
	if outerDst != fe.cfg.Address || !fe.isNode(outerSrc) {
		f.fatalf("decapsulated a tunnel packet %s -> %s: not from a node to this one", outerSrc, outerDst)
	}
	switch {
	case room == 20 && o[9] == 4:
	case room == 50 && o[9] == 17 && be16(o[22:]) == uint16(fe.cfg.VXLANPort):
		vx := o[28:36]
		if vx[0]&0x08 == 0 || binary.BigEndian.Uint32(vx[4:])>>8 != fe.cfg.VXLANVNI || be16(o[48:]) != 0x0800 {
			f.fatalf("decapsulated VXLAN %x: not the I flag, our VNI and IPv4 inside", o[28:50])
		}
	default:
		f.fatalf("decapsulated %d bytes of a packet of protocol %d", room, o[9])
	}
	inner := in[14+room:]
	if src := ipSource(inner); !fe.innerSourceOK(src, outerSrc) {
		f.fatalf("decapsulated an inner packet from %s, which node %s may not send", src, outerSrc)
	}
	return inner
}

// checkTarget: the redirect goes where the model says, as far as the
// packet shows it (a test run does not report the target: see the top of
// the file); it returns the hook the kernel runs next on the packet.
func (fe *fuzzEnv) checkTarget(f failer, h hop, reason bpfmap.Reason, extra *wlModel) (nextHop, bool) {
	f.t.Helper()
	out, mark := h.o.out, h.o.ctx.Mark
	switch reason {
	case bpfmap.ReasonARPReply, bpfmap.ReasonNDReply:
		// bpf_redirect(skb->ifindex, 0): into the asking workload.
		return nextHop{pToWL, h.ep, mark}, true
	case bpfmap.ReasonICMPFragNeeded:
		// Back to the sender: a workload's egress, the underlay's egress
		// (a floating IP's packet from outside), or, for the host's own
		// packets, the underlay's ingress (BPF_F_INGRESS), as if from the node.
		switch h.prog {
		case pFromWL:
			return nextHop{pToWL, h.ep, mark}, true
		case pFromUL:
			return nextHop{pToUL, h.ep, mark}, true
		}
		return nextHop{pFromUL, h.ep, mark}, true
	case bpfmap.ReasonDeliverLocal, bpfmap.ReasonDecapIPIP, bpfmap.ReasonDecapVXLAN:
		l3 := out[14:]
		dst := ipDest(l3)
		r, _ := fe.route(dst)
		w := fe.wl[r.Ifindex]
		if r.Type != bpfmap.RouteLocalWorkload || w == nil || (dst != w.ip4 && dst != w.ip6) {
			f.fatalf("%s of a packet to %s, no local workload's address", reason, dst)
		}
		if h.prog == pFromWL && w.endpoint == h.ep && !slices.Contains(w.fips, ipSource(l3)) {
			f.fatalf("%s: reflected into its sender %s without the hairpin translation", reason, w.name)
		}
		if w.hasMAC && (!bytes.Equal(out[0:6], w.mac) || !bytes.Equal(out[6:12], w.hostMAC)) {
			f.fatalf("%s into %s: Ethernet %s -> %s, want %s -> %s", reason, w.name, net.HardwareAddr(out[6:12]),
				net.HardwareAddr(out[0:6]), w.hostMAC, w.mac)
		}
		if !w.hasMAC && !bytes.Equal(out[0:12], h.o.in[0:12]) {
			f.fatalf("%s into %s, whose MAC the route lacks (bpf_redirect_neigh), with the Ethernet addresses changed", reason, w.name)
		}
		// bpf_redirect_peer into a veth whose MAC is known (not from the
		// host's own egress): counted to-workload there, with the
		// destination's ifindex, the one redirected to. Anything else
		// goes to the interface's egress, where calyx_to_wl counts it,
		// by the mark told it is policed already.
		peer := w.peer && w.hasMAC && h.prog != pToUL
		if peer != (extra == w) {
			f.fatalf("%s into %s: to-workload counted at the delivery on %v; want it exactly for bpf_redirect_peer (peer %v, MAC known %v)",
				reason, w.name, extra, w.peer, w.hasMAC)
		}
		if peer {
			if mark != h.mark {
				f.fatalf("%s by bpf_redirect_peer changed the mark to %#x", reason, mark)
			}
			return nextHop{}, false
		}
		if mark != cxMarkRouted {
			f.fatalf("%s into %s's egress without CX_MARK_ROUTED (mark %#x): calyx_to_wl would police it again", reason, w.name, mark)
		}
		return nextHop{pToWL, w.endpoint, mark}, true
	case bpfmap.ReasonEncapIPIP, bpfmap.ReasonEncapVXLAN, bpfmap.ReasonForwardDirect:
		// The FIB's answer: the uplink's MAC as the source (bpf_redirect to
		// it), or, the neighbour unknown, the Ethernet header left to
		// bpf_redirect_neigh.
		var uplink *endpoint
		for _, u := range fe.ul {
			if bytes.Equal(out[6:12], u.hostMAC) {
				uplink = u
			}
		}
		if uplink == nil && !bytes.Equal(out[0:12], h.o.in[0:12]) {
			f.fatalf("%s from MAC %s, no uplink's, and not left to the neighbour table", reason, net.HardwareAddr(out[6:12]))
		}
		if mark != cxMarkRouted {
			f.fatalf("%s to the underlay's egress without CX_MARK_ROUTED (mark %#x): calyx_to_underlay would route it again", reason, mark)
		}
		if uplink == nil || uplink == fe.tun.ul {
			return nextHop{pToUL, fe.tun.ul, mark}, true
		}
		return nextHop{}, false // ul2 carries no calyx program
	}
	return nextHop{}, false
}

// checkChain: what the next hook did with a redirected packet.
func (fe *fuzzEnv) checkChain(f failer, h1, h2 hop) {
	f.t.Helper()
	if h2.o.verdict != ok {
		f.fatalf("the hook after the redirect did not let the packet through")
	}
	if h2.mark == cxMarkRouted && (!bytes.Equal(h2.o.in, h2.o.out) || h2.o.ctx.Mark != 0) {
		f.fatalf("a packet routed by a calyx program was changed, or kept its mark (%#x), on the next hook", h2.o.ctx.Mark)
	}
	if h1.o.delta[bpfmap.CounterKey{Ifindex: h1.ep.idx(), Reason: bpfmap.ReasonICMPFragNeeded}].Packets == 1 {
		// The error reaches the sender as it knows its packet.
		sent, icmp := h1.o.in[14:], h2.o.out[14:]
		if len(icmp) < 20+8+28 || icmp[9] != 1 || icmp[20] != 3 || icmp[21] != 4 {
			f.fatalf("frag-needed: not an ICMP frag-needed after the next hook")
		}
		q := icmp[28:]
		if ipDest(icmp) != ipSource(sent) || !bytes.Equal(q[12:20], sent[12:20]) || !bytes.Equal(q[20:24], sent[20:24]) {
			f.fatalf("frag-needed: reaches %s quoting %s -> %s (ports %x); the sender sent %s -> %s (ports %x)",
				ipDest(icmp), ipSource(q), ipDest(q), q[20:24], ipSource(sent), ipDest(sent), sent[20:24])
		}
		if bpftest.IPv4HeaderChecksumOK(sent) && !bytes.Equal(q[:20], sent[:20]) {
			f.fatalf("frag-needed: quotes the header %x, the sender sent %x", q[:20], sent[:20])
		}
	}
}

// checkARPReply: the reply to the endpoint's request for another address,
// byte for byte.
func (fe *fuzzEnv) checkARPReply(f failer, h hop) {
	f.t.Helper()
	w := fe.wl[h.ep.idx()]
	in, out := h.o.in, h.o.out
	b := in[14:]
	if be16(in[12:]) != 0x0806 || len(b) < 28 || !bytes.Equal(b[:8], []byte{0, 1, 8, 0, 6, 4, 0, 1}) {
		f.fatalf("arp-reply to a frame that is no Ethernet/IPv4 ARP request")
	}
	if !bytes.Equal(b[14:18], w.ip4.AsSlice()) || (w.checkMAC && !bytes.Equal(b[8:14], w.mac)) {
		f.fatalf("arp-reply to a request from %s/%s, not %s's", net.IP(b[14:18]), net.HardwareAddr(b[8:14]), w.name)
	}
	if bytes.Equal(b[24:28], w.ip4.AsSlice()) {
		f.fatalf("arp-reply to a request for %s's own address", w.name)
	}
	want := slices.Clone(in)
	o := want[14:]
	copy(want[0:6], in[6:12])
	copy(want[6:12], w.hostMAC)
	o[7] = 2
	copy(o[8:14], w.hostMAC)
	copy(o[14:18], b[24:28])
	copy(o[18:24], b[8:14])
	copy(o[24:28], b[14:18])
	if !bytes.Equal(out, want) {
		f.fatalf("arp-reply:\n  want %x", want)
	}
}

// checkNDReply: the neighbour advertisement of the host side's MAC for the
// target of the endpoint's solicitation.
func (fe *fuzzEnv) checkNDReply(f failer, h hop) {
	f.t.Helper()
	w := fe.wl[h.ep.idx()]
	in, out := h.o.in, h.o.out
	b := in[14:]
	if be16(in[12:]) != 0x86dd || len(b) < 64 || b[6] != 58 || b[7] != 255 || b[40] != 135 || b[41] != 0 {
		f.fatalf("nd-reply to a frame that is no neighbour solicitation with hop limit 255")
	}
	src, target := ipSource(b), netip.AddrFrom16([16]byte(b[48:64]))
	if !src.IsLinkLocalUnicast() && src != w.ip6 {
		f.fatalf("nd-reply to a solicitation from %s, not %s's", src, w.name)
	}
	if target == w.ip6 || target.IsUnspecified() {
		f.fatalf("nd-reply for %s", target)
	}
	o := out[14:]
	if len(out) != 14+40+32 || !bytes.Equal(out[0:6], in[6:12]) || !bytes.Equal(out[6:12], w.hostMAC) ||
		ipSource(o) != target || ipDest(o) != src || o[7] != 255 || be16(o[4:]) != 32 || o[6] != 58 ||
		o[40] != 136 || o[41] != 0 || binary.BigEndian.Uint32(o[44:]) != 0xe0000000 ||
		!bytes.Equal(o[64:66], []byte{2, 1}) || !bytes.Equal(o[66:72], w.hostMAC) {
		f.fatalf("nd-reply is not the advertisement of %s for %s to %s", w.hostMAC, target, src)
	}
	if p := l3Problem(o, nil); p != "" {
		f.fatalf("nd-reply: %s", p)
	}
}

// checkFragNeeded: the ICMP a too-big packet becomes, back to where it
// came from (whom it reaches is checkChain's).
func (fe *fuzzEnv) checkFragNeeded(f failer, h hop) {
	f.t.Helper()
	in, out := h.o.in, h.o.out
	if be16(in[12:]) != 0x0800 || in[14] != 0x45 || be16(in[20:])&0x4000 == 0 {
		f.fatalf("icmp-frag-needed for a packet without DF or with options")
	}
	o := out[14:]
	if len(out) != 14+20+8+40 || be16(out[12:]) != 0x0800 || o[9] != 1 || o[20] != 3 || o[21] != 4 {
		f.fatalf("icmp-frag-needed: not an 82-byte ICMP frag-needed")
	}
	if !bytes.Equal(out[0:6], in[6:12]) || !bytes.Equal(out[6:12], in[0:6]) {
		f.fatalf("icmp-frag-needed: the Ethernet addresses are not swapped")
	}
	if p := l3Problem(o, nil); p != "" {
		f.fatalf("icmp-frag-needed: %s", p)
	}
	mtu := int(be16(o[26:]))
	if !slices.Contains([]int{1450, 1480, 1500}, mtu) || int(be16(in[16:])) <= mtu {
		f.fatalf("icmp-frag-needed: MTU %d for a %d-byte packet", mtu, be16(in[16:]))
	}
}

// ---------------------------------------------------------------------------
// XDP.

func (fe *fuzzEnv) checkXDP(t *testing.T, frame []byte) {
	t.Helper()
	const xdpDrop, xdpPass = 1, 2
	before := fe.counters(t)
	var verdict uint32
	out := make([]byte, len(frame)+256)
	err := fe.ns.Do(func() error {
		opts := &ebpf.RunOptions{Data: frame, DataOut: out}
		var err error
		verdict, err = fe.xdp.Run(opts)
		out = opts.DataOut
		return err
	})
	if errors.Is(err, unix.EINVAL) {
		return
	}
	if err != nil {
		t.Fatalf("XDP run: %v", err)
	}
	delta := counterDelta(before, fe.counters(t))
	src, hasSrc := prefilterSource(frame)
	deny := hasSrc && fe.denied(src)
	switch {
	case !bytes.Equal(out, frame):
		t.Fatalf("XDP changed the frame:\n in  %x\n out %x", frame, out)
	case verdict == xdpDrop && deny:
		// A frame longer than a page less the XDP headroom and the skb's
		// tailroom comes in fragments: the program sees and counts the
		// first part. (A test run does that even for a program without
		// xdp.frags, which no driver attaches at such an MTU.)
		seen := min(len(frame), os.Getpagesize()-256-320)
		want := map[bpfmap.CounterKey]bpfmap.Counter{{Ifindex: 1, Reason: bpfmap.ReasonDropPrefilter}: {Packets: 1, Bytes: uint64(seen)}}
		if !mapsEqual(delta, want) {
			t.Fatalf("XDP_DROP counted %s, want %s: %x", fmtCounters(delta), fmtCounters(want), frame)
		}
	case verdict == xdpPass && !deny:
		if len(delta) != 0 {
			t.Fatalf("XDP_PASS counted %s: %x", fmtCounters(delta), frame)
		}
	default:
		t.Fatalf("XDP verdict %d for a frame from %v (on the deny list: %v): %x", verdict, src, deny, frame)
	}
}

// ---------------------------------------------------------------------------
// Packets.

func be16(b []byte) uint16 { return binary.BigEndian.Uint16(b) }

// ipSource and ipDest read the addresses of the IPv4 or IPv6 header at b.
func ipSource(b []byte) netip.Addr {
	if len(b) >= 20 && b[0]>>4 == 4 {
		return netip.AddrFrom4([4]byte(b[12:16]))
	}
	if len(b) >= 40 && b[0]>>4 == 6 {
		return netip.AddrFrom16([16]byte(b[8:24]))
	}
	return netip.Addr{}
}

func ipDest(b []byte) netip.Addr {
	if len(b) >= 20 && b[0]>>4 == 4 {
		return netip.AddrFrom4([4]byte(b[16:20]))
	}
	if len(b) >= 40 && b[0]>>4 == 6 {
		return netip.AddrFrom16([16]byte(b[24:40]))
	}
	return netip.Addr{}
}

// l3Problem says what is wrong with the IP packet b (its header to the end
// of the frame): lengths that do not fit the frame (what follows the IP
// packet is Ethernet padding), a wrong IPv4 header checksum, a wrong TCP,
// UDP, ICMP or ICMPv6 checksum. ref is the packet b was made from: a
// checksum wrong there may stay wrong (the programs update checksums, they
// do not verify them), and a UDP datagram without a checksum keeps none;
// nil means the program built b, and everything must be right.
func l3Problem(b, ref []byte) string {
	switch {
	case len(b) >= 20 && b[0]>>4 == 4:
		hl, tot := int(b[0]&0xf)*4, int(be16(b[2:]))
		if hl < 20 || tot < hl || tot > len(b) {
			return fmt.Sprintf("IPv4 header length %d, total length %d in %d bytes", hl, tot, len(b))
		}
		if !bpftest.IPv4HeaderChecksumOK(b) && (ref == nil || bpftest.IPv4HeaderChecksumOK(ref)) {
			return "IPv4 header checksum wrong"
		}
		if ref != nil && b[9] == 17 && udp4Sum(ref) == 0 && udp4Sum(b) != 0 {
			return "a UDP checksum appeared"
		}
		if ref != nil && b[9] == 17 && udp4Sum(ref) > 0 && udp4Sum(b) == 0 {
			return "the UDP checksum was lost"
		}
	case len(b) >= 40 && b[0]>>4 == 6:
		if 40+int(be16(b[4:])) > len(b) {
			return fmt.Sprintf("IPv6 payload length %d in %d bytes", be16(b[4:]), len(b))
		}
	default:
		return "not an IPv4 or IPv6 packet"
	}
	if v, ok := l4Valid(b); ok && !v {
		if ref == nil {
			return "L4 checksum wrong"
		}
		if rv, rok := l4Valid(ref); rok && rv {
			return "L4 checksum wrong (right in the packet it was made from)"
		}
	}
	return ""
}

// udp4Sum is the UDP checksum field of the IPv4 packet b, -1 when b is no
// unfragmented UDP datagram with room for it.
func udp4Sum(b []byte) int {
	if len(b) < 20 || b[0]>>4 != 4 || b[9] != 17 || be16(b[6:])&0x3fff != 0 {
		return -1
	}
	hl := int(b[0]&0xf) * 4
	if len(b) < hl+8 {
		return -1
	}
	return int(be16(b[hl+6:]))
}

// l4Valid says whether the TCP, UDP, ICMP or ICMPv6 checksum of the IP
// packet b is right (a zero UDP checksum over IPv4 is none: right). ok is
// false when there is none to verify: another protocol, a fragment, a
// header cut short, a UDP length that does not fit.
func l4Valid(b []byte) (valid, ok bool) {
	var seg []byte
	var pseudo uint32
	var proto uint8
	switch b[0] >> 4 {
	case 4:
		hl, tot := int(b[0]&0xf)*4, int(be16(b[2:]))
		if be16(b[6:])&0x3fff != 0 || tot > len(b) || tot < hl {
			return false, false
		}
		seg, proto = b[hl:tot], b[9]
		pseudo = sum16(0, b[12:20]) + uint32(proto)
		if proto == 1 {
			if len(seg) < 8 {
				return false, false
			}
			return fold(sum16(0, seg)) == 0, true
		}
	case 6:
		seg, proto = b[40:40+int(be16(b[4:]))], b[6]
		pseudo = sum16(0, b[8:40]) + uint32(proto)
		if proto == 58 {
			if len(seg) < 4 {
				return false, false
			}
			return fold(sum16(pseudo+uint32(len(seg)), seg)) == 0, true
		}
	}
	switch proto {
	case 6:
		if len(seg) < 20 {
			return false, false
		}
		return fold(sum16(pseudo+uint32(len(seg)), seg)) == 0, true
	case 17:
		if len(seg) < 8 {
			return false, false
		}
		ulen := int(be16(seg[4:]))
		if ulen < 8 || ulen > len(seg) {
			return false, false
		}
		if be16(seg[6:]) == 0 {
			return b[0]>>4 == 4, true
		}
		return fold(sum16(pseudo+uint32(ulen), seg[:ulen])) == 0, true
	}
	return false, false
}

// withChecksums is frame with its checksums made right (fixChecksums),
// or frame itself when raw.
func withChecksums(raw bool, frame []byte) []byte {
	if raw {
		return frame
	}
	out := slices.Clone(frame)
	if len(out) >= 14 {
		fixChecksums(be16(out[12:]), out[14:])
	}
	return out
}

// fixChecksums makes right, in place, the checksums of the packet of
// ethertype proto at b: the IPv4 header's, the TCP, UDP (unless none) or
// ICMP one of an unfragmented IPv4 packet, the TCP, UDP or ICMPv6 one of
// an IPv6 packet; a tunnelled packet's (IP-in-IP, VXLAN to port 4789)
// first. Whatever does not parse is left as it is.
func fixChecksums(proto uint16, b []byte) {
	var seg []byte
	var pseudo uint32
	var l4 uint8
	switch {
	case proto == 0x0800 && len(b) >= 20 && b[0]>>4 == 4:
		hl, tot := int(b[0]&0xf)*4, int(be16(b[2:]))
		if hl < 20 || hl > len(b) {
			return
		}
		b[10], b[11] = 0, 0
		binary.BigEndian.PutUint16(b[10:], fold(sum16(0, b[:hl])))
		if tot < hl || tot > len(b) || be16(b[6:])&0x3fff != 0 {
			return
		}
		seg, l4 = b[hl:tot], b[9]
		pseudo = sum16(0, b[12:20]) + uint32(l4)
		switch {
		case l4 == 4:
			fixChecksums(0x0800, seg)
			return
		case l4 == 1 && len(seg) >= 8:
			seg[2], seg[3] = 0, 0
			binary.BigEndian.PutUint16(seg[2:], fold(sum16(0, seg)))
			return
		case l4 == 17 && len(seg) >= 8+8+14 && be16(seg[2:]) == testVXLANPort:
			fixChecksums(be16(seg[16+12:]), seg[16+14:])
		}
	case proto == 0x86dd && len(b) >= 40 && b[0]>>4 == 6 && 40+int(be16(b[4:])) <= len(b):
		seg, l4 = b[40:40+int(be16(b[4:]))], b[6]
		pseudo = sum16(0, b[8:40]) + uint32(l4)
	default:
		return
	}
	off := map[uint8]int{6: 16, 17: 6, 58: 2}[l4]
	if off == 0 || len(seg) < off+2 || (l4 == 6 && len(seg) < 20) || (l4 == 58 && proto != 0x86dd) {
		return
	}
	n := len(seg)
	if l4 == 17 {
		n = int(be16(seg[4:]))
		if n < 8 || n > len(seg) || (proto == 0x0800 && be16(seg[6:]) == 0) {
			return
		}
	}
	seg[off], seg[off+1] = 0, 0
	c := fold(sum16(pseudo+uint32(n), seg[:n]))
	if c == 0 && l4 == 17 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(seg[off:], c)
}

// tagged inserts VLAN tags (tpid, vid pairs) after the Ethernet addresses.
func tagged(frame []byte, tags ...uint16) []byte {
	out := slices.Clone(frame[:12])
	for i := 0; i+1 < len(tags); i += 2 {
		out = binary.BigEndian.AppendUint16(out, tags[i])
		out = binary.BigEndian.AppendUint16(out, tags[i+1])
	}
	return append(out, frame[12:]...)
}

// tooBig is a UDP datagram of n bytes (IPv4), DF set.
func tooBig(l2 bpftest.L2, src, dst netip.Addr, n int) []byte {
	return bpftest.IPv4UDP(l2, bpftest.IPv4{Src: src, Dst: dst}, 40010, 53, bytes.Repeat([]byte{0x5a}, n-28))
}

// ---------------------------------------------------------------------------
// Seeds.

type portSeed struct {
	port  uint8
	frame []byte
}

// remoteDsts are an address in each remote block and the floating IPs.
func (fe *fuzzEnv) remoteDsts() []netip.Addr {
	var out []netip.Addr
	for p, r := range fe.routes {
		if r.Type == bpfmap.RouteRemoteWorkload && p.Addr().Is4() {
			out = append(out, p.Addr().Next().Next().Next().Next().Next())
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

func (fe *fuzzEnv) fromWLSeeds(tb testing.TB) []portSeed {
	var seeds []portSeed
	for _, s := range fuzzSeeds(fe.env) { // wl1's, as newEnv's FuzzFromWorkload had them
		seeds = append(seeds, portSeed{0, s})
	}
	fl := fe.flows
	local := []netip.Addr{fipWL2, fipWL3, fipVM5, fipVM6, fipRemote, metadataIP, hostAddr, server, client, internet}
	for i, ep := range fe.ports {
		p, l2 := uint8(i), ep.l2()
		add := func(frames ...[]byte) {
			for _, f := range frames {
				seeds = append(seeds, portSeed{p, f})
			}
		}
		next := fe.ports[(i+1)%(len(fe.ports)-1)]
		for _, proto := range ipv4Protocols(l2, bpftest.IPv4{Src: ep.ip4, Dst: next.ip4}) {
			add(proto)
		}
		for _, dst := range append(fe.remoteDsts(), local...) {
			add(udp4(ep, ep.ip4, dst, 64), bpftest.IPv4TCP(l2, bpftest.IPv4{Src: ep.ip4, Dst: dst}, 40004, 80))
		}
		add(tooBig(l2, ep.ip4, fe.block(tb, fe.tun.nodeA, bpfmap.EncapIPIP), 1490),
			tooBig(l2, ep.ip4, fe.block(tb, fe.tun.nodeA, bpfmap.EncapVXLAN), 1460),
			tooBig(l2, ep.ip4, fe.block(tb, fe.tun.nodeC, bpfmap.EncapNone), 1600),
			tooBig(l2, ep.ip4, fipRemote, 1490),
			udp4(ep, ep.ip4, next.ip4, 1),
			udp6(ep, ep.ip6, next.ip6, 64),
			udp6(ep, ep.ip6, fuzzOut6, 64),
			bpftest.NeighborSolicitation(l2, bpftest.IPv6{Src: netip.MustParseAddr("fe80::99"), Dst: bpftest.SolicitedNode(fuzzHostLL)}, fuzzHostLL, ep.mac),
			bpftest.NeighborSolicitation(l2, bpftest.IPv6{Src: ep.ip6, Dst: bpftest.SolicitedNode(next.ip6)}, next.ip6, ep.mac),
			bpftest.ARPRequest(ep.mac, ep.ip4, gatewayV4),
			tagged(udp4(ep, ep.ip4, next.ip4, 64), 0x8100, 100),
		)
		add(dhcpFuzzSeeds(ep)...)
		for _, fip := range fe.wlOf(ep).fips {
			add(udp4(ep, ep.ip4, fip, 64)) // hairpin
		}
	}
	// Replies and errors of the established flows, from their workloads.
	wl2, wl3 := fe.portOf(fe.wl2), fe.portOf(fe.wl3)
	xlIn := mkFlow(bpfmap.ProtoTCP, client, 41000, fe.wl3.ip4, 22)
	seeds = append(seeds,
		portSeed{wl3, xlIn.reverse().frame(fe.wl3.l2(), synAck)},
		portSeed{wl3, icmpError(fe.wl3.l2(), fe.wl3.ip4, client, 3, 3, xlIn.frame(fe.routerL2(), syn)[14:])},
		portSeed{0, fl.natUDP.frame(fe.wl1.l2(), seg{})},
		portSeed{0, fl.natTCP.frame(fe.wl1.l2(), ack)},
		portSeed{0, fl.fipOut.frame(fe.wl1.l2(), seg{})},
		portSeed{0, tooBig(fe.wl1.l2(), fe.wl1.ip4, server, 1600)},
		portSeed{wl2, fl.meta.frame(fe.wl2.l2(), ack)},
		portSeed{wl2, fl.east.reverse().frame(fe.wl2.l2(), seg{})},
	)
	return seeds
}

func (fe *fuzzEnv) toWLSeeds(tb testing.TB) []portSeed {
	var seeds []portSeed
	for i, ep := range fe.ports {
		p, l2 := uint8(i), ep.toL2()
		add := func(frames ...[]byte) {
			for _, f := range frames {
				seeds = append(seeds, portSeed{p, f})
			}
		}
		for _, src := range []netip.Addr{hostAddr, client, fe.wl1.ip4} {
			for _, proto := range ipv4Protocols(l2, bpftest.IPv4{Src: src, Dst: ep.ip4}) {
				add(proto)
			}
		}
		add(bpftest.IPv6UDP(l2, bpftest.IPv6{Src: fuzzOut6, Dst: ep.ip6}, 40000, 53, nil),
			bpftest.IPv6UDP(l2, bpftest.IPv6{Src: fuzzHostLL, Dst: ep.ip6}, 40000, 53, nil),
			bpftest.NeighborSolicitation(l2, bpftest.IPv6{Src: fuzzHostLL, Dst: bpftest.SolicitedNode(ep.ip6)}, ep.ip6, ep.hostMAC),
			bpftest.ARP(l2, layers.ARPRequest, ep.hostMAC, gatewayV4, net.HardwareAddr{0, 0, 0, 0, 0, 0}, ep.ip4),
		)
	}
	fl := fe.flows
	wl2 := fe.portOf(fe.wl2)
	metaReply := mkFlow(bpfmap.ProtoTCP, hostAddr, metadataSvc.Port(), fe.wl2.ip4, 40002)
	natQuoted := mkFlow(bpfmap.ProtoUDP, hostAddr, fuzzPortUDP, server, 53).frame(fe.wl1.toL2(), seg{})[14:]
	seeds = append(seeds,
		portSeed{wl2, metaReply.frame(fe.wl2.toL2(), synAck)},
		portSeed{0, icmpError(fe.wl1.toL2(), hostAddr, hostAddr, 3, 4, natQuoted)},
		portSeed{0, icmpError(fe.wl1.toL2(), hostAddr, fe.wl1.ip4, 3, 4, fl.fipOut.frame(fe.wl1.l2(), seg{})[14:])},
	)
	return seeds
}

func (fe *fuzzEnv) fromULSeeds(tb testing.TB) [][]byte {
	seeds := underlayFuzzSeeds(tb, fe.env)
	r, nodeA := fe.routerL2(), fe.tun.nodeA
	fl := fe.flows
	natReply := mkFlow(bpfmap.ProtoUDP, server, 53, hostAddr, fuzzPortUDP)
	seeds = append(seeds,
		natReply.frame(r, seg{}),
		mkFlow(bpfmap.ProtoTCP, server, 443, hostAddr, fuzzPortTCP).frame(r, synAck),
		icmpError(r, fe.tun.router.addr, hostAddr, 3, 4, mkFlow(bpfmap.ProtoUDP, hostAddr, fuzzPortUDP, server, 53).frame(r, seg{})[14:]),
		fl.fipIn.frame(r, ack),
		mkFlow(bpfmap.ProtoTCP, client, 41005, fipWL2, 22).frame(r, syn),
		mkFlow(bpfmap.ProtoUDP, client, 41005, fipVM5, 53).frame(r, seg{}),
		mkFlow(bpfmap.ProtoUDP, client, 41005, fipVM6, 53).frame(r, seg{}),
		mkFlow(bpfmap.ProtoTCP, client, 41005, fipRemote, 22).frame(r, syn),
		tooBig(r, client, fipRemote, 1490),
		mkFlow(bpfmap.ProtoUDP, hostAddr, 41005, fe.wl2.ip4, 53).frame(r, seg{}),
		mkFlow(bpfmap.ProtoUDP, fe.wl4.ip4, 41005, fe.wl2.ip4, 53).frame(r, seg{}),
		mkFlow(bpfmap.ProtoUDP, fipWL3, 41005, fe.wl2.ip4, 53).frame(r, seg{}),
		mkFlow(bpfmap.ProtoUDP, fuzzDenied4, 41005, hostAddr, 22).frame(r, seg{}),
		tagged(mkFlow(bpfmap.ProtoUDP, fuzzDenied4, 41005, hostAddr, 22).frame(r, seg{}), 0x88a8, 10, 0x8100, 20),
		bpftest.IPv6UDP(r, bpftest.IPv6{Src: fuzzDenied6, Dst: netip.MustParseAddr("2001:db8::10")}, 4000, 22, nil),
		bpftest.IPv6UDP(r, bpftest.IPv6{Src: fuzzOut6, Dst: fe.wl2.ip6}, 4000, 22, nil),
		bpftest.IPv4UDP(fe.nodeL2(fe.tun.nodeC), bpftest.IPv4{Src: fe.block(tb, fe.tun.nodeC, bpfmap.EncapNone), Dst: fe.wl4.ip4}, 1, 2, nil),
	)
	// Tunnelled inner sources of every kind: a node's own workload, another
	// node's, this host's, a local workload's, outside.
	for _, enc := range encaps {
		for _, src := range []netip.Addr{fe.block(tb, nodeA, enc.encap), fe.block(tb, fe.tun.nodeC, bpfmap.EncapNone),
			hostAddr, fe.wl4.ip4, fipWL2, client, fe.tun.nodeC.addr} {
			seeds = append(seeds, tunnelFrame(fe.env, nodeA, hostAddr, enc.encap, udp4(fe.wl2, src, fe.wl2.ip4, 64)))
		}
		seeds = append(seeds, tunnelFrame(fe.env, nodeA, hostAddr, enc.encap, mkFlow(bpfmap.ProtoTCP, client, 41006, fipWL3, 22).frame(r, syn)))
	}
	return seeds
}

func (fe *fuzzEnv) toULSeeds(tb testing.TB) [][]byte {
	l2 := fe.hostL2()
	var seeds [][]byte
	for _, dst := range append(fe.remoteDsts(), fipWL2, fipWL3, fipVM5, fipVM6, fipRemote, internet, server) {
		for _, proto := range ipv4Protocols(l2, bpftest.IPv4{Src: hostAddr, Dst: dst}) {
			seeds = append(seeds, proto)
		}
	}
	seeds = append(seeds,
		tooBig(l2, hostAddr, fe.block(tb, fe.tun.nodeA, bpfmap.EncapIPIP), 1490),
		tooBig(l2, hostAddr, fe.block(tb, fe.tun.nodeA, bpfmap.EncapVXLAN), 1460),
		tooBig(l2, hostAddr, fipRemote, 1490),
		bpftest.IPv4UDP(l2, bpftest.IPv4{Src: client, Dst: fe.block(tb, fe.tun.nodeA, bpfmap.EncapVXLAN)}, 1, 2, nil),
		bpftest.IPv6UDP(l2, bpftest.IPv6{Src: netip.MustParseAddr("2001:db8::10"), Dst: fuzzOut6}, 4000, 22, nil),
		bpftest.ARPRequest(l2.Src, hostAddr, fe.tun.router.addr),
		tagged(bpftest.IPv4UDP(l2, bpftest.IPv4{Src: hostAddr, Dst: fe.block(tb, fe.tun.nodeA, bpfmap.EncapIPIP)}, 1, 2, nil), 0x8100, 7),
	)
	return seeds
}

func (fe *fuzzEnv) xdpSeeds() [][]byte {
	r := fe.routerL2()
	denied := bpftest.IPv4UDP(r, bpftest.IPv4{Src: fuzzDenied4, Dst: hostAddr}, 4000, 22, nil)
	return [][]byte{
		denied,
		denied[:14+8],
		tagged(denied, 0x8100, 5),
		tagged(denied, 0x88a8, 5, 0x8100, 6),
		bpftest.IPv4UDP(r, bpftest.IPv4{Src: client, Dst: hostAddr}, 4000, 22, nil),
		bpftest.IPv6UDP(r, bpftest.IPv6{Src: fuzzDenied6, Dst: netip.MustParseAddr("2001:db8::10")}, 4000, 22, nil),
		bpftest.IPv6UDP(r, bpftest.IPv6{Src: fuzzOut6, Dst: netip.MustParseAddr("2001:db8::10")}, 4000, 22, nil),
		bpftest.ARPRequest(r.Src, fe.tun.router.addr, hostAddr),
		tunnelFrame(fe.env, fe.tun.nodeA, hostAddr, bpfmap.EncapVXLAN, udp4(fe.wl2, client, fe.wl2.ip4, 64)),
		make([]byte, 14),
	}
}

func (fe *fuzzEnv) wlOf(ep *endpoint) *wlModel {
	if w := fe.wl[ep.idx()]; w != nil {
		return w
	}
	return &wlModel{endpoint: ep}
}

func (fe *fuzzEnv) portOf(ep *endpoint) uint8 {
	return uint8(slices.Index(fe.ports, ep))
}

// fuzzSeeds are wl1's frames of newEnv's FuzzFromWorkload: ARP, IPv4 of
// every protocol and TTL to the local workloads, IPv6, malformed frames,
// DHCP.
func fuzzSeeds(e *env) [][]byte {
	w := e.wl1
	seeds := [][]byte{
		bpftest.ARPRequest(w.mac, w.ip4, gatewayV4),
		bpftest.ARPRequest(w.mac, w.ip4, gatewayV4)[:42],
		bpftest.ARPRequest(w.mac, w.ip4, w.ip4),
		bpftest.ARPRequest(w.mac, netip.IPv4Unspecified(), w.ip4),
		bpftest.ARP(w.l2(), layers.ARPReply, w.mac, w.ip4, w.hostMAC, gatewayV4),
		udp6(w, w.ip6, e.wl2.ip6, 64),
		udp6(w, w.ip6, e.wl3.ip6, 2),
		udp6(w, netip.MustParseAddr("fe80::2"), gatewayV6, 255),
		udp4(w, e.wl2.ip4, internet, 64),
		bpftest.Raw(w.l2(), 0x88cc, make([]byte, 46)),
		make([]byte, 64),
	}
	for _, dst := range []netip.Addr{e.wl2.ip4, e.wl3.ip4, e.wl4.ip4, internet, w.ip4} {
		for _, ttl := range []uint8{1, 2, 64} {
			for _, p := range ipv4Protocols(w.l2(), bpftest.IPv4{Src: w.ip4, Dst: dst, TTL: ttl}) {
				seeds = append(seeds, p)
			}
		}
	}
	for _, tc := range malformedCases(e) {
		seeds = append(seeds, tc.in)
	}
	// DHCP from 0.0.0.0: the only IPv4 that may come from no address.
	seeds = append(seeds, dhcpFuzzSeeds(w)...)
	return seeds
}

// underlayFuzzSeeds are the tunnel and direct frames of newTunnelEnv's
// FuzzFromUnderlay.
func underlayFuzzSeeds(tb testing.TB, e *env) [][]byte {
	nodeA := e.tun.nodeA
	var seeds [][]byte
	for _, enc := range encaps {
		src := e.block(tb, nodeA, enc.encap)
		for _, dst := range []netip.Addr{e.wl2.ip4, e.wl3.ip4, hostAddr, internet} {
			for _, ttl := range []uint8{1, 64} {
				for _, inner := range innerOf(src, dst, ttl) {
					seeds = append(seeds, tunnelFrame(e, nodeA, hostAddr, enc.encap, inner))
				}
			}
		}
		seeds = append(seeds,
			tunnelFrame(e, &remoteNode{addr: internet}, hostAddr, enc.encap, udp4(e.wl2, src, e.wl2.ip4, 64)),
			tunnelFrame(e, nodeA, internet, enc.encap, udp4(e.wl2, src, e.wl2.ip4, 64)))
	}
	l2 := e.nodeL2(nodeA)
	seeds = append(seeds,
		bpftest.IPv4UDP(l2, bpftest.IPv4{Src: nodeA.addr, Dst: e.wl2.ip4}, 1, 2, nil),
		bpftest.IPv4UDP(l2, bpftest.IPv4{Src: nodeA.addr, Dst: hostAddr}, 1, testVXLANPort, make([]byte, 8)),
		bpftest.ARPRequest(l2.Src, nodeA.addr, hostAddr),
		make([]byte, 64),
	)
	return seeds
}
