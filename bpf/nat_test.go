package bpf_test

// Layer 2 tests of connection tracking and NAT (nat.h) through
// BPF_PROG_TEST_RUN, Katran style as in calyx_test.go: each run's verdict,
// the exact change of every counter, the packet that comes out byte for
// byte (the expected one is built here with every checksum recomputed from
// scratch, and gopacket recomputes them again), and the conntrack entries
// the run left behind.
//
// Covered: floating-IP DNAT from outside (the instance here; on another
// node, forwarded untranslated and translated there), at a workload's
// first hop (the instance here or on another node), hairpin, and from the
// host itself; the metadata DNAT and its replies from the host stack;
// natOutgoing SNAT, its replies, and what it leaves alone; ICMP errors
// about translated flows in both directions (frag-needed included); what
// may start a flow; the entries themselves; source-port exhaustion
// (drop-nat-ports); reply-tuple clashes (drop-ct-full); and a table filled
// to capacity.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"sync"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/calyxnet/calyx/bpf"
	"github.com/calyxnet/calyx/bpf/bpftest"
	"github.com/calyxnet/calyx/bpfmap"
)

var (
	client      = netip.MustParseAddr("203.0.113.7")   // outside, behind the router
	server      = netip.MustParseAddr("198.51.100.53") // outside, behind the router
	fipWL2      = netip.MustParseAddr("192.0.2.20")    // wl2's floating IP: instance here, route with a MAC
	fipWL3      = netip.MustParseAddr("192.0.2.30")    // wl3's: instance here, route without a MAC
	fipRemote   = netip.MustParseAddr("192.0.2.50")    // an instance on nodeA (IP-in-IP)
	metadataIP  = netip.MustParseAddr("169.254.169.254")
	metadataSvc = netip.AddrPortFrom(hostAddr, 8775) // where the host serves it
	natPorts    = [2]uint16{20000, 29999}            // natOutgoing source ports (nat.h, model.DefaultNATPortRange)
	workloadNet = netip.MustParsePrefix("10.65.0.0/16")
	remoteNet   = netip.MustParsePrefix("10.66.0.0/16")
)

// natEnv is newTunnelEnv plus what NAT needs:
//
//	cx_config       metadata served at 10.30.0.10:8775
//	cx_routes       pools 10.65.0.0/16 and 10.66.0.0/16; wl1 is natOutgoing
//	cx_fips         192.0.2.20 → wl2, 192.0.2.30 → wl3 (local),
//	                192.0.2.50 → 10.66.0.5 on nodeA (IP-in-IP), each with its route
//	kernel routes   198.51.100.0/24 and 203.0.113.0/24 via the router
type natEnv struct {
	*env
	ct, nat     *ebpf.Map // cx_ct_v2 and cx_nat_v2 themselves, for raw writes
	remoteFixed netip.Addr
}

func newNATEnv(tb testing.TB) *natEnv {
	tb.Helper()
	e := newTunnelEnv(tb)
	ne := &natEnv{env: e}
	m := e.dp.Maps
	cfg := e.tun.cfg
	cfg.Metadata = metadataSvc
	must(tb, m.Config.Put(0, cfg))
	e.tun.cfg = cfg
	for _, p := range []netip.Prefix{workloadNet, remoteNet} {
		must(tb, m.Routes.Put(p, bpfmap.Route{Type: bpfmap.RoutePool}))
	}
	w := e.wl1
	must(tb, m.Routes.Put(netip.PrefixFrom(w.ip4, 32), bpfmap.Route{Type: bpfmap.RouteLocalWorkload, Ifindex: w.idx(),
		MAC: bpfmap.MACFrom(w.mac), HostMAC: bpfmap.MACFrom(w.hostMAC), NATOutgoing: true, Peer: true, CounterSlot: w.slot}))
	ne.remoteFixed = e.block(tb, e.tun.nodeA, bpfmap.EncapIPIP)
	for fip, f := range map[netip.Addr]bpfmap.FloatingIP{
		fipWL2:    {Fixed: e.wl2.ip4, Node: hostAddr, EndpointID: 2, Local: true},
		fipWL3:    {Fixed: e.wl3.ip4, Node: hostAddr, EndpointID: 3, Local: true},
		fipRemote: {Fixed: ne.remoteFixed, Node: e.tun.nodeA.addr, EndpointID: 50},
	} {
		must(tb, m.FIPs.Put(fip, f))
		must(tb, m.Routes.Put(netip.PrefixFrom(fip, 32), bpfmap.Route{Type: bpfmap.RouteFloatingIP, NextHop: f.Node}))
	}
	for _, p := range []string{"198.51.100.0/24", "203.0.113.0/24"} {
		must(tb, e.ns.AddRoute("ulh", netip.MustParsePrefix(p), e.tun.router.addr))
	}
	ne.ct = openMap(tb, e, bpfmap.CTName)
	ne.nat = openMap(tb, e, bpfmap.NATName)
	return ne
}

// openCT opens cx_ct by the ID the loaded programs use.
func openMap(tb testing.TB, e *env, name string) *ebpf.Map {
	tb.Helper()
	info, err := e.from.Info()
	must(tb, err)
	ids, ok := info.MapIDs()
	if !ok {
		tb.Fatal("the kernel does not list a program's maps")
	}
	for _, id := range ids {
		m, err := ebpf.NewMapFromID(id)
		must(tb, err)
		if mi, err := m.Info(); err == nil && mi.Name == name {
			tb.Cleanup(func() { _ = m.Close() })
			return m
		}
		_ = m.Close()
	}
	tb.Fatalf("no map %s among the programs' maps", bpfmap.CTName)
	return nil
}

// routerL2 is the Ethernet header of a frame the router sends to this
// host's underlay; ep.toL2() of one the host side sends into ep.
func (e *env) routerL2() bpftest.L2   { return e.nodeL2(e.tun.router) }
func (ep *endpoint) toL2() bpftest.L2 { return bpftest.L2{Src: ep.hostMAC, Dst: ep.mac} }

// flow is a packet's 5-tuple as conntrack keys it. For ICMP echo, src's
// port is the identifier and dst's is 0.
type flow struct {
	proto    uint8
	src, dst netip.AddrPort
}

func mkFlow(proto uint8, src netip.Addr, sport uint16, dst netip.Addr, dport uint16) flow {
	if bpfmap.IsICMP(proto) {
		dport = 0
	}
	return flow{proto, netip.AddrPortFrom(src, sport), netip.AddrPortFrom(dst, dport)}
}

// reverse is the tuple of the other direction's packets.
func (f flow) reverse() flow {
	if bpfmap.IsICMP(f.proto) {
		return mkFlow(f.proto, f.dst.Addr(), f.src.Port(), f.src.Addr(), 0)
	}
	return flow{f.proto, f.dst, f.src}
}

func (f flow) key() bpfmap.CTKey { return bpfmap.CTKey{Src: f.src, Dst: f.dst, Proto: f.proto} }

func (f flow) String() string {
	return fmt.Sprintf("%s %s -> %s", protoName[f.proto], f.src, f.dst)
}

var protoName = map[uint8]string{bpfmap.ProtoICMP: "icmp", bpfmap.ProtoTCP: "tcp", bpfmap.ProtoUDP: "udp"}

// seg says what kind of packet of a flow frame builds.
type seg struct {
	flags  uint8 // TCP flags (bpfmap.TCP*); 0 is a bare SYN
	reply  bool  // ICMP: an echo reply rather than a request
	ttl    uint8 // 0: 64
	noCsum bool  // UDP: no checksum (0)
	size   int   // IPv4 length to pad the payload to (0: a short payload)
	// TCP sequence and acknowledgement numbers; 0 takes the defaults, one
	// handshake's: the SYN at 1000, the SYN-ACK at 1999 acknowledging it,
	// and every other segment at 1001 acknowledging 1001, which is in
	// sequence (in the window) for both directions of a flow whose
	// handshake they followed.
	seq, ack uint32
	win      uint16 // TCP window field (0: 64240)
	wscale   int    // TCP: a window-scale option with shift wscale-1 (0: none)
}

var (
	syn    = seg{flags: bpfmap.TCPSyn}
	synAck = seg{flags: bpfmap.TCPSyn | bpfmap.TCPAck, reply: true}
	ack    = seg{flags: bpfmap.TCPAck}
)

// frame builds an Ethernet/IPv4 packet of f with l2 and DF set.
func (f flow) frame(l2 bpftest.L2, s seg) []byte {
	ttl := s.ttl
	if ttl == 0 {
		ttl = 64
	}
	ip := &layers.IPv4{Version: 4, IHL: 5, TTL: ttl, Flags: layers.IPv4DontFragment, Id: 0x4242,
		SrcIP: f.src.Addr().AsSlice(), DstIP: f.dst.Addr().AsSlice()}
	eth := &layers.Ethernet{SrcMAC: l2.Src, DstMAC: l2.Dst, EthernetType: layers.EthernetTypeIPv4}
	payload := []byte("calyx-nat-payload")
	var l4 gopacket.SerializableLayer
	hdr := 8
	switch f.proto {
	case bpfmap.ProtoTCP:
		ip.Protocol = layers.IPProtocolTCP
		flags := s.flags
		if flags == 0 {
			flags = bpfmap.TCPSyn
		}
		tcp := &layers.TCP{SrcPort: layers.TCPPort(f.src.Port()), DstPort: layers.TCPPort(f.dst.Port()), Seq: 1001, Window: 64240,
			SYN: flags&bpfmap.TCPSyn != 0, ACK: flags&bpfmap.TCPAck != 0, FIN: flags&bpfmap.TCPFin != 0, RST: flags&bpfmap.TCPRst != 0}
		switch {
		case tcp.SYN && !tcp.ACK:
			tcp.Seq = 1000
		case tcp.SYN:
			tcp.Seq, tcp.Ack = 1999, 1001
		case tcp.ACK:
			tcp.Ack = 1001
		}
		if s.seq != 0 {
			tcp.Seq = s.seq
		}
		if s.ack != 0 {
			tcp.Ack = s.ack
		}
		if s.win != 0 {
			tcp.Window = s.win
		}
		if s.wscale > 0 {
			tcp.Options = []layers.TCPOption{{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{5, 0xb4}},
				{OptionType: layers.TCPOptionKindNop}, {OptionType: layers.TCPOptionKindWindowScale, OptionLength: 3,
					OptionData: []byte{byte(s.wscale - 1)}}}
			hdr = 28
		}
		if tcp.SYN {
			payload = nil
		}
		_ = tcp.SetNetworkLayerForChecksum(ip)
		l4 = tcp
		if hdr == 8 {
			hdr = 20
		}
	case bpfmap.ProtoUDP:
		ip.Protocol = layers.IPProtocolUDP
		udp := &layers.UDP{SrcPort: layers.UDPPort(f.src.Port()), DstPort: layers.UDPPort(f.dst.Port())}
		_ = udp.SetNetworkLayerForChecksum(ip)
		l4 = udp
	case bpfmap.ProtoICMP:
		ip.Protocol = layers.IPProtocolICMPv4
		typ := uint8(layers.ICMPv4TypeEchoRequest)
		if s.reply {
			typ = layers.ICMPv4TypeEchoReply
		}
		l4 = &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(typ, 0), Id: f.src.Port(), Seq: 1}
	}
	if s.size > 0 {
		payload = bytes.Repeat([]byte{0x5a}, s.size-20-hdr)
	}
	out := bpftest.Serialize(eth, ip, l4, gopacket.Payload(payload))
	if s.noCsum {
		out[14+20+6], out[14+20+7] = 0, 0
	}
	return out
}

// xlate returns frame, an Ethernet/IPv4 packet without options, rewritten
// to the tuple to: addresses, ports (the echo identifier), the TTL one less
// when forwarded, and every checksum recomputed from scratch (a UDP
// checksum of 0, none, stays 0). The Ethernet header is left alone.
func xlate(frame []byte, to flow, forwarded bool) []byte {
	out := slices.Clone(frame)
	ip := out[14:]
	copy(ip[12:16], to.src.Addr().AsSlice())
	copy(ip[16:20], to.dst.Addr().AsSlice())
	if forwarded {
		ip[8]--
	}
	l4 := ip[20:binary.BigEndian.Uint16(ip[2:])]
	if ip[9] == bpfmap.ProtoICMP {
		binary.BigEndian.PutUint16(l4[4:], to.src.Port())
	} else {
		binary.BigEndian.PutUint16(l4[0:], to.src.Port())
		binary.BigEndian.PutUint16(l4[2:], to.dst.Port())
	}
	fixIPv4Checksum(ip)
	fixL4Checksum(ip)
	return out
}

// withL2 returns frame with its Ethernet addresses replaced.
func withL2(frame []byte, l2 bpftest.L2) []byte {
	out := slices.Clone(frame)
	copy(out[0:6], l2.Dst)
	copy(out[6:12], l2.Src)
	return out
}

// sum16 adds b to an Internet checksum sum (RFC 1071), unfolded.
func sum16(sum uint32, b []byte) uint32 {
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	return sum
}

func fold(sum uint32) uint16 {
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// fixL4Checksum recomputes the TCP, UDP or ICMP checksum of the IPv4
// packet ip (no options); a UDP checksum of 0 is left as none.
func fixL4Checksum(ip []byte) {
	l4 := ip[20:binary.BigEndian.Uint16(ip[2:])]
	pseudo := func() uint32 {
		s := sum16(0, ip[12:20])
		return s + uint32(ip[9]) + uint32(len(l4))
	}
	switch ip[9] {
	case bpfmap.ProtoTCP:
		l4[16], l4[17] = 0, 0
		binary.BigEndian.PutUint16(l4[16:], fold(sum16(pseudo(), l4)))
	case bpfmap.ProtoUDP:
		if l4[6] == 0 && l4[7] == 0 {
			return
		}
		l4[6], l4[7] = 0, 0
		c := fold(sum16(pseudo(), l4))
		if c == 0 {
			c = 0xffff
		}
		binary.BigEndian.PutUint16(l4[6:], c)
	case bpfmap.ProtoICMP:
		l4[2], l4[3] = 0, 0
		binary.BigEndian.PutUint16(l4[2:], fold(sum16(0, l4)))
	}
}

// wantBytes compares a packet that came out with the one expected, and
// has gopacket verify its checksums (the TTL it must carry included).
func wantBytes(t *testing.T, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		t.Errorf("packet:\n got  %x\n want %x", got, want)
	}
	if len(got) < 34 {
		return
	}
	verifyIPv4(t, got, got[22])
}

// conntrack returns every entry of cx_ct.
func (ne *natEnv) conntrack(tb testing.TB) map[bpfmap.CTKey]bpfmap.CTEntry {
	tb.Helper()
	out := map[bpfmap.CTKey]bpfmap.CTEntry{}
	must(tb, ne.dp.Maps.Conntrack(func(k bpfmap.CTKey, v bpfmap.CTEntry) bool { out[k] = v; return true }))
	return out
}

// newEntries is what after has that before had not.
func newEntries(before, after map[bpfmap.CTKey]bpfmap.CTEntry) map[bpfmap.CTKey]bpfmap.CTEntry {
	out := map[bpfmap.CTKey]bpfmap.CTEntry{}
	for k, v := range after {
		if _, ok := before[k]; !ok {
			out[k] = v
		}
	}
	return out
}

// flowEntries returns the two entries of the flow whose first packet
// arrived as orig and left as xl, and fails unless they say just that: the
// original direction (orig's tuple) rewritten to xl, not Reply; the reply
// direction (xl reversed, as replies arrive) rewritten to orig reversed,
// Reply; the NAT bits nat in both; timestamps set.
func flowEntries(t *testing.T, ct map[bpfmap.CTKey]bpfmap.CTEntry, orig, xl flow, nat uint8) (o, r bpfmap.CTEntry) {
	t.Helper()
	o, okO := ct[orig.key()]
	r, okR := ct[xl.reverse().key()]
	if !okO || !okR {
		t.Fatalf("flow %s (as %s): original entry %v, reply entry (%s) %v; table %v",
			orig, xl, okO, xl.reverse(), okR, fmtCT(ct))
	}
	if o.NATSrc != xl.src || o.NATDst != xl.dst || o.Reply || o.NAT != nat {
		t.Errorf("original entry of %s: %s -> %s reply %v nat %#x; want %s -> %s, not reply, nat %#x",
			orig, o.NATSrc, o.NATDst, o.Reply, o.NAT, xl.src, xl.dst, nat)
	}
	back := orig.reverse()
	if r.NATSrc != back.src || r.NATDst != back.dst || !r.Reply || r.NAT != nat {
		t.Errorf("reply entry of %s: %s -> %s reply %v nat %#x; want %s -> %s, reply, nat %#x",
			orig, r.NATSrc, r.NATDst, r.Reply, r.NAT, back.src, back.dst, nat)
	}
	for _, e := range []bpfmap.CTEntry{o, r} {
		if e.Created == 0 || e.Last < e.Created {
			t.Errorf("entry of %s: created %d, last %d", orig, e.Created, e.Last)
		}
	}
	return o, r
}

// wantSeen asserts an entry's counters and TCP flags.
func wantSeen(t *testing.T, what string, e bpfmap.CTEntry, packets, bytes uint64, flags uint8) {
	t.Helper()
	if e.Packets != packets || e.Bytes != bytes || e.TCPFlags != flags {
		t.Errorf("%s entry: %d packets, %d bytes, TCP flags %#02x; want %d, %d, %#02x",
			what, e.Packets, e.Bytes, e.TCPFlags, packets, bytes, flags)
	}
}

func fmtCT(ct map[bpfmap.CTKey]bpfmap.CTEntry) string {
	var b bytes.Buffer
	for k, v := range ct {
		fmt.Fprintf(&b, "\n  %s %s -> %s => %s -> %s reply=%v nat=%d", protoName[k.Proto], k.Src, k.Dst, v.NATSrc, v.NATDst, v.Reply, v.NAT)
	}
	return b.String()
}

// protos are the three kinds of tracked flow, with the ports used.
var protos = []struct {
	name         string
	proto        uint8
	sport, dport uint16
	first, reply seg // the first packet and the first reply
	next         seg // a later packet in the first direction
	firstFlags   uint8
	replyFlags   uint8
}{
	{"tcp", bpfmap.ProtoTCP, 40001, 443, syn, synAck, ack, bpfmap.TCPSyn, bpfmap.TCPSyn | bpfmap.TCPAck},
	{"udp", bpfmap.ProtoUDP, 40002, 53, seg{}, seg{}, seg{}, 0, 0},
	{"udp without checksum", bpfmap.ProtoUDP, 40003, 53, seg{noCsum: true}, seg{noCsum: true}, seg{noCsum: true}, 0, 0},
	{"icmp echo", bpfmap.ProtoICMP, 0x0777, 0, seg{}, seg{reply: true}, seg{}, 0, 0},
}

// 1. From outside to a floating IP whose instance is here: DNAT to the
// fixed IP at underlay ingress and delivered (TTL one less). The
// instance's reply gets the floating IP back as its source at its
// from-workload hook and goes to the host stack, which routes it out. A
// later packet takes the same entries, whose counters move.
func TestNATFloatingIPFromOutside(t *testing.T) {
	ne := newNATEnv(t)
	ul := ne.tun.ul
	for _, p := range protos {
		for _, tc := range []struct {
			fip netip.Addr
			wl  *endpoint
		}{{fipWL2, ne.wl2}, {fipWL3, ne.wl3}} {
			t.Run(p.name+"/"+tc.wl.name, func(t *testing.T) {
				w := tc.wl
				orig := mkFlow(p.proto, client, p.sport, tc.fip, p.dport)
				xl := mkFlow(p.proto, client, p.sport, w.ip4, p.dport)
				before := ne.conntrack(t)

				in := orig.frame(ne.routerL2(), p.first)
				o := ne.fromUL(t, in)
				want := xlate(in, xl, true)
				if w == ne.wl2 {
					o.want(t, redirect, hit{ul, bpfmap.ReasonDeliverLocal}, hit{w, bpfmap.ReasonToWorkload})
					want = withL2(want, w.toL2())
				} else {
					// No MAC: redirect_neigh; the egress hook lets it in untouched.
					o.want(t, redirect, hit{ul, bpfmap.ReasonDeliverLocal})
					e2 := ne.toWL(t, w, o.out)
					e2.want(t, ok, hit{w, bpfmap.ReasonToWorkload})
					e2.unchanged(t)
				}
				wantBytes(t, o.out, want)
				ct := ne.conntrack(t)
				if n := len(newEntries(before, ct)); n != 2 {
					t.Errorf("%d new entries, want 2: %s", n, fmtCT(newEntries(before, ct)))
				}
				oe, re := flowEntries(t, ct, orig, xl, bpfmap.NATDNAT)
				wantSeen(t, "original", oe, 1, uint64(len(in)), p.firstFlags)
				wantSeen(t, "reply", re, 0, 0, 0)

				rin := xl.reverse().frame(w.l2(), p.reply)
				r := ne.fromWL(t, w, rin)
				r.want(t, ok, hit{w, bpfmap.ReasonPassHost})
				wantBytes(t, r.out, xlate(rin, orig.reverse(), false))

				nin := orig.frame(ne.routerL2(), p.next)
				n := ne.fromUL(t, nin)
				if w == ne.wl2 {
					n.want(t, redirect, hit{ul, bpfmap.ReasonDeliverLocal}, hit{w, bpfmap.ReasonToWorkload})
					wantBytes(t, n.out, withL2(xlate(nin, xl, true), w.toL2()))
				} else {
					n.want(t, redirect, hit{ul, bpfmap.ReasonDeliverLocal})
					wantBytes(t, n.out, xlate(nin, xl, true))
				}
				ct2 := ne.conntrack(t)
				oe, re = flowEntries(t, ct2, orig, xl, bpfmap.NATDNAT)
				wantSeen(t, "original", oe, 2, uint64(len(in)+len(nin)), p.firstFlags|p.next.flags)
				wantSeen(t, "reply", re, 1, uint64(len(rin)), p.replyFlags)
				if len(ct2) != len(ct) {
					t.Errorf("an established flow created entries: %s", fmtCT(newEntries(ct, ct2)))
				}
			})
		}
	}
}

// 2. A workload to a floating IP: DNAT at its first hop. The instance here
// gets it delivered and its reply comes back with the floating IP as the
// source; the instance on nodeA gets it encapsulated, and its reply,
// decapsulated here, gets the floating IP back before delivery.
func TestNATFloatingIPFromWorkload(t *testing.T) {
	ne := newNATEnv(t)
	ul, w := ne.tun.ul, ne.wl1
	for _, p := range protos {
		t.Run(p.name+"/instance here", func(t *testing.T) {
			orig := mkFlow(p.proto, w.ip4, p.sport, fipWL2, p.dport)
			xl := mkFlow(p.proto, w.ip4, p.sport, ne.wl2.ip4, p.dport)
			in := orig.frame(w.l2(), p.first)
			o := ne.fromWL(t, w, in)
			o.want(t, redirect, hit{w, bpfmap.ReasonDeliverLocal}, hit{ne.wl2, bpfmap.ReasonToWorkload})
			wantBytes(t, o.out, withL2(xlate(in, xl, true), ne.wl2.toL2()))

			rin := xl.reverse().frame(ne.wl2.l2(), p.reply)
			r := ne.fromWL(t, ne.wl2, rin)
			r.want(t, redirect, hit{ne.wl2, bpfmap.ReasonDeliverLocal}, hit{w, bpfmap.ReasonToWorkload})
			wantBytes(t, r.out, withL2(xlate(rin, orig.reverse(), true), w.toL2()))
			oe, re := flowEntries(t, ne.conntrack(t), orig, xl, bpfmap.NATDNAT)
			wantSeen(t, "original", oe, 1, uint64(len(in)), p.firstFlags)
			wantSeen(t, "reply", re, 1, uint64(len(rin)), p.replyFlags)
		})
		t.Run(p.name+"/instance on another node", func(t *testing.T) {
			orig := mkFlow(p.proto, w.ip4, p.sport, fipRemote, p.dport)
			xl := mkFlow(p.proto, w.ip4, p.sport, ne.remoteFixed, p.dport)
			in := orig.frame(w.l2(), p.first)
			o := ne.fromWL(t, w, in)
			o.want(t, redirect, hit{w, bpfmap.ReasonEncapIPIP})
			// checkEncap compares the inner packet with what it is given.
			checkEncap(t, ne.env, outcome{in: xlate(in, xl, false), out: o.out}, ne.tun.nodeA, bpfmap.EncapIPIP, true)
			if o.ctx.Mark != cxMarkRouted {
				t.Errorf("skb->mark %#x, want %#x", o.ctx.Mark, cxMarkRouted)
			}

			inner := xl.reverse().frame(bpftest.L2{Src: mac(0x99, 0x01), Dst: mac(0x99, 0xee)}, p.reply)
			rin := tunnelFrame(ne.env, ne.tun.nodeA, hostAddr, bpfmap.EncapIPIP, inner)
			r := ne.fromUL(t, rin)
			want := withL2(slices.Concat(rin[:14], xlate(inner, orig.reverse(), true)[14:]), w.toL2())
			r.wantSized(t, redirect, sizedHit{ul, bpfmap.ReasonDecapIPIP, len(rin)}, sizedHit{w, bpfmap.ReasonToWorkload, len(want)})
			wantBytes(t, r.out, want)
			oe, re := flowEntries(t, ne.conntrack(t), orig, xl, bpfmap.NATDNAT)
			wantSeen(t, "original", oe, 1, uint64(len(in)), p.firstFlags)
			// Counted with the length it arrived with: encapsulated.
			wantSeen(t, "reply", re, 1, uint64(len(rin)), p.replyFlags)
		})
	}
}

// 3. Hairpin: an instance talking to its own floating IP gets the packet
// back with both addresses rewritten (it must see the floating IP as the
// source, or its replies would bypass the translation), out of the
// interface it came in on; its replies are translated the same way.
func TestNATHairpin(t *testing.T) {
	ne := newNATEnv(t)
	for _, p := range protos {
		for _, tc := range []struct {
			fip netip.Addr
			wl  *endpoint
		}{{fipWL2, ne.wl2}, {fipWL3, ne.wl3}} {
			t.Run(p.name+"/"+tc.wl.name, func(t *testing.T) {
				w := tc.wl
				orig := mkFlow(p.proto, w.ip4, p.sport, tc.fip, p.dport)
				xl := mkFlow(p.proto, tc.fip, p.sport, w.ip4, p.dport)
				run := func(in []byte, to flow) {
					t.Helper()
					o := ne.fromWL(t, w, in)
					want := xlate(in, to, true)
					if w == ne.wl2 {
						o.want(t, redirect, hit{w, bpfmap.ReasonDeliverLocal}, hit{w, bpfmap.ReasonToWorkload})
						want = withL2(want, w.toL2())
					} else {
						o.want(t, redirect, hit{w, bpfmap.ReasonDeliverLocal})
					}
					wantBytes(t, o.out, want)
				}
				in := orig.frame(w.l2(), p.first)
				run(in, xl)
				rin := xl.reverse().frame(w.l2(), p.reply)
				run(rin, orig.reverse())
				ct := ne.conntrack(t)
				if p.proto == bpfmap.ProtoICMP {
					// The echo identifier travels in one field both ways:
					// the reply (fixed -> floating IP, same identifier)
					// has the request's tuple, and one entry, rewriting
					// both the same way, serves the two directions.
					if xl.reverse().key() != orig.key() {
						t.Fatalf("reply tuple %s, want the request's %s", xl.reverse(), orig)
					}
					e, ok := ct[orig.key()]
					if !ok || e.NATSrc != xl.src || e.NATDst != xl.dst || e.NAT != bpfmap.NATDNAT|bpfmap.NATSNAT {
						t.Fatalf("entry of %s: %v %+v", orig, ok, e)
					}
					wantSeen(t, "the", e, 2, uint64(len(in)+len(rin)), 0)
					return
				}
				oe, re := flowEntries(t, ct, orig, xl, bpfmap.NATDNAT|bpfmap.NATSNAT)
				wantSeen(t, "original", oe, 1, uint64(len(in)), p.firstFlags)
				wantSeen(t, "reply", re, 1, uint64(len(rin)), p.replyFlags)
			})
		}
	}
}

// 4. The host's own connections to floating IPs, at the underlay's egress
// hook: an instance here gets the packet redirected into its interface
// (whose egress hook lets it in); one on nodeA gets it encapsulated. The
// replies get the floating IP back: from the local instance at its
// from-workload hook, from nodeA's instance (routed plainly to this node's
// address) at underlay ingress.
func TestNATHostToFloatingIP(t *testing.T) {
	ne := newNATEnv(t)
	ul := ne.tun.ul
	for _, p := range protos {
		for _, tc := range []struct {
			fip netip.Addr
			wl  *endpoint
		}{{fipWL2, ne.wl2}, {fipWL3, ne.wl3}} {
			t.Run(p.name+"/"+tc.wl.name, func(t *testing.T) {
				w := tc.wl
				// From a port of the NAT range, which the flow keeps.
				hostPort := natPorts[0] + p.sport%1000
				orig := mkFlow(p.proto, hostAddr, hostPort, tc.fip, p.dport)
				xl := mkFlow(p.proto, hostAddr, hostPort, w.ip4, p.dport)
				in := orig.frame(ne.hostL2(), p.first)
				o := ne.runOn(t, ne.ulEgress, ul.ifindex, in)
				o.want(t, redirect, hit{ul, bpfmap.ReasonDeliverLocal})
				want := xlate(in, xl, false)
				if w == ne.wl2 {
					want = withL2(want, w.toL2())
				}
				wantBytes(t, o.out, want)
				in2 := ne.toWL(t, w, o.out)
				in2.want(t, ok, hit{w, bpfmap.ReasonToWorkload})
				in2.unchanged(t)

				rin := xl.reverse().frame(w.l2(), p.reply)
				r := ne.fromWL(t, w, rin)
				r.want(t, ok, hit{w, bpfmap.ReasonPassHost})
				wantBytes(t, r.out, xlate(rin, orig.reverse(), false))
				oe, re := flowEntries(t, ne.conntrack(t), orig, xl, bpfmap.NATDNAT|bpfmap.NATSNAT)
				wantSeen(t, "original", oe, 1, uint64(len(in)), p.firstFlags)
				wantSeen(t, "reply", re, 1, uint64(len(rin)), p.replyFlags)
			})
		}
		t.Run(p.name+"/instance on another node", func(t *testing.T) {
			hostPort := natPorts[0] + p.sport%1000
			orig := mkFlow(p.proto, hostAddr, hostPort, fipRemote, p.dport)
			xl := mkFlow(p.proto, hostAddr, hostPort, ne.remoteFixed, p.dport)
			in := orig.frame(ne.hostL2(), p.first)
			o := ne.runOn(t, ne.ulEgress, ul.ifindex, in)
			o.want(t, ok, hit{ul, bpfmap.ReasonEncapIPIP})
			checkEncap(t, ne.env, outcome{in: xlate(in, xl, false), out: o.out}, ne.tun.nodeA, bpfmap.EncapIPIP, false)

			rin := xl.reverse().frame(ne.nodeL2(ne.tun.nodeA), p.reply)
			r := ne.fromUL(t, rin)
			r.want(t, ok, hit{ul, bpfmap.ReasonPassHost})
			wantBytes(t, r.out, xlate(rin, orig.reverse(), false))
			oe, re := flowEntries(t, ne.conntrack(t), orig, xl, bpfmap.NATDNAT|bpfmap.NATSNAT)
			wantSeen(t, "original", oe, 1, uint64(len(in)), p.firstFlags)
			wantSeen(t, "reply", re, 1, uint64(len(rin)), p.replyFlags)
		})
	}
}

// 4b. The host's own flow to a floating IP from a port outside the NAT
// range leaves from a port of the range, and its replies, to that port,
// get the host's port back: the underlay's cheap exit passes everything
// else to the node's address untouched, without a conntrack lookup.
func TestNATHostToFloatingIPPortInRange(t *testing.T) {
	ne := newNATEnv(t)
	ul := ne.tun.ul
	orig := mkFlow(bpfmap.ProtoTCP, hostAddr, 45000, fipRemote, 443)
	in := orig.frame(ne.hostL2(), syn)
	o := ne.runOn(t, ne.ulEgress, ul.ifindex, in)
	o.want(t, ok, hit{ul, bpfmap.ReasonEncapIPIP})
	inner := o.out[14+20:] // IP-in-IP: the inner IPv4 header
	port := uint16(inner[20])<<8 | uint16(inner[21])
	if port < natPorts[0] || port > natPorts[1] {
		t.Fatalf("the host's flow left from port %d, want one of %d-%d", port, natPorts[0], natPorts[1])
	}
	xl := mkFlow(bpfmap.ProtoTCP, hostAddr, port, ne.remoteFixed, 443)
	rin := xl.reverse().frame(ne.nodeL2(ne.tun.nodeA), synAck)
	r := ne.fromUL(t, rin)
	r.want(t, ok, hit{ul, bpfmap.ReasonPassHost})
	wantBytes(t, r.out, xlate(rin, orig.reverse(), false))

	// The host's other traffic, to a port outside the range: untouched.
	other := mkFlow(bpfmap.ProtoTCP, ne.remoteFixed, 443, hostAddr, 45000).frame(ne.nodeL2(ne.tun.nodeA), synAck)
	r = ne.fromUL(t, other)
	r.want(t, ok, hit{ul, bpfmap.ReasonPassHost})
	r.unchanged(t)
}

// 5. The metadata service: TCP to 169.254.169.254:80 is DNAT'd to where
// the host serves it and handed to the host stack; the host's replies get
// the address the workload asked for at the workload's egress hook.
// Anything else to that address is not translated, nor is anything when
// no metadata address is configured.
func TestNATMetadata(t *testing.T) {
	ne := newNATEnv(t)
	for _, w := range []*endpoint{ne.wl1, ne.wl4} {
		t.Run(w.name, func(t *testing.T) {
			orig := mkFlow(bpfmap.ProtoTCP, w.ip4, 40100, metadataIP, 80)
			xl := mkFlow(bpfmap.ProtoTCP, w.ip4, 40100, metadataSvc.Addr(), metadataSvc.Port())
			in := orig.frame(w.l2(), syn)
			o := ne.fromWL(t, w, in)
			o.want(t, ok, hit{w, bpfmap.ReasonPassHost})
			wantBytes(t, o.out, xlate(in, xl, false))

			rin := xl.reverse().frame(w.toL2(), synAck)
			r := ne.toWL(t, w, rin)
			r.want(t, ok, hit{w, bpfmap.ReasonToWorkload})
			wantBytes(t, r.out, xlate(rin, orig.reverse(), false))

			nin := orig.frame(w.l2(), ack)
			n := ne.fromWL(t, w, nin)
			n.want(t, ok, hit{w, bpfmap.ReasonPassHost})
			wantBytes(t, n.out, xlate(nin, xl, false))
			oe, re := flowEntries(t, ne.conntrack(t), orig, xl, bpfmap.NATDNAT)
			wantSeen(t, "original", oe, 2, uint64(len(in)+len(nin)), bpfmap.TCPSyn|bpfmap.TCPAck)
			wantSeen(t, "reply", re, 1, uint64(len(rin)), bpfmap.TCPSyn|bpfmap.TCPAck)
		})
	}
	// Not the metadata flow: untouched, to the host (wl1 is natOutgoing,
	// but link-local addresses are never forwarded, so never SNAT'd).
	for name, in := range map[string][]byte{
		"udp to port 80":         mkFlow(bpfmap.ProtoUDP, ne.wl1.ip4, 40101, metadataIP, 80).frame(ne.wl1.l2(), seg{}),
		"tcp to port 8080":       mkFlow(bpfmap.ProtoTCP, ne.wl1.ip4, 40102, metadataIP, 8080).frame(ne.wl1.l2(), syn),
		"ping":                   mkFlow(bpfmap.ProtoICMP, ne.wl1.ip4, 9, metadataIP, 0).frame(ne.wl1.l2(), seg{}),
		"udp to port 80, wl4":    mkFlow(bpfmap.ProtoUDP, ne.wl4.ip4, 40103, metadataIP, 80).frame(ne.wl4.l2(), seg{}),
		"another link-local":     mkFlow(bpfmap.ProtoTCP, ne.wl1.ip4, 40104, netip.MustParseAddr("169.254.1.1"), 80).frame(ne.wl1.l2(), syn),
		"tcp to port 80, no SYN": mkFlow(bpfmap.ProtoTCP, ne.wl1.ip4, 40105, metadataIP, 80).frame(ne.wl1.l2(), ack),
	} {
		t.Run("untranslated/"+name, func(t *testing.T) {
			src := ne.wl1
			if bytes.Equal(in[6:12], ne.wl4.mac) {
				src = ne.wl4
			}
			o := ne.fromWL(t, src, in)
			o.want(t, ok, hit{src, bpfmap.ReasonPassHost})
			o.unchanged(t)
		})
	}
	t.Run("untranslated/not configured", func(t *testing.T) {
		cfg := ne.tun.cfg
		cfg.Metadata = netip.AddrPort{}
		must(t, ne.dp.Maps.Config.Put(0, cfg))
		t.Cleanup(func() { must(t, ne.dp.Maps.Config.Put(0, ne.tun.cfg)) })
		f := mkFlow(bpfmap.ProtoTCP, ne.wl4.ip4, 40106, metadataIP, 80)
		o := ne.fromWL(t, ne.wl4, f.frame(ne.wl4.l2(), syn))
		o.want(t, ok, hit{ne.wl4, bpfmap.ReasonPassHost})
		o.unchanged(t)
		// Tracked as it is.
		flowEntries(t, ne.conntrack(t), f, f, 0)
	})
}

// natPort returns the source port (echo identifier) of the IPv4 packet in
// frame and whether it is in natOutgoing's range.
func natPort(frame []byte) (uint16, bool) {
	off := 34
	if frame[23] == bpfmap.ProtoICMP {
		off = 38
	}
	p := binary.BigEndian.Uint16(frame[off:])
	return p, p >= natPorts[0] && p <= natPorts[1]
}

// 6. natOutgoing: a workload of a natOutgoing pool talking to outside every
// pool leaves as the node, from a port in natPorts (TCP, UDP; for echo
// the identifier), routed by the FIB to the router. The reply, arriving at
// the node's address, goes back to the workload's address and port. Later
// packets keep the port; another flow gets another.
func TestNATOutgoing(t *testing.T) {
	ne := newNATEnv(t)
	ul, w := ne.tun.ul, ne.wl1
	for _, p := range protos {
		t.Run(p.name, func(t *testing.T) {
			orig := mkFlow(p.proto, w.ip4, p.sport, server, p.dport)
			in := orig.frame(w.l2(), p.first)
			o := ne.fromWL(t, w, in)
			o.want(t, redirect, hit{w, bpfmap.ReasonForwardDirect})
			port, inRange := natPort(o.out)
			if !inRange {
				t.Errorf("source port %d, want %d-%d", port, natPorts[0], natPorts[1])
			}
			xl := mkFlow(p.proto, hostAddr, port, server, p.dport)
			wantBytes(t, o.out, withL2(xlate(in, xl, true), ne.hostL2()))
			if o.ctx.Mark != cxMarkRouted {
				t.Errorf("skb->mark %#x, want %#x", o.ctx.Mark, cxMarkRouted)
			}

			rin := xl.reverse().frame(ne.routerL2(), p.reply)
			r := ne.fromUL(t, rin)
			r.want(t, redirect, hit{ul, bpfmap.ReasonDeliverLocal}, hit{w, bpfmap.ReasonToWorkload})
			wantBytes(t, r.out, withL2(xlate(rin, orig.reverse(), true), w.toL2()))

			nin := orig.frame(w.l2(), p.next)
			n := ne.fromWL(t, w, nin)
			n.want(t, redirect, hit{w, bpfmap.ReasonForwardDirect})
			wantBytes(t, n.out, withL2(xlate(nin, xl, true), ne.hostL2()))

			oe, re := flowEntries(t, ne.conntrack(t), orig, xl, bpfmap.NATSNAT)
			wantSeen(t, "original", oe, 2, uint64(len(in)+len(nin)), p.firstFlags|p.next.flags)
			wantSeen(t, "reply", re, 1, uint64(len(rin)), p.replyFlags)

			// Another flow to the same server and port: another port.
			other := mkFlow(p.proto, w.ip4, p.sport+100, server, p.dport)
			o2 := ne.fromWL(t, w, other.frame(w.l2(), p.first))
			o2.want(t, redirect, hit{w, bpfmap.ReasonForwardDirect})
			if port2, _ := natPort(o2.out); port2 == port {
				t.Errorf("two flows to %s got the same source port %d", orig.dst, port)
			}
		})
	}
}

// 7. What natOutgoing leaves alone: destinations in a pool, routed to
// another node or the host, the host's own addresses, broadcast,
// multicast, link-local and unroutable addresses (all the host stack's
// business, as without natOutgoing), a packet whose TTL runs out here
// (the host stack's time-exceeded must quote what the workload sent), and
// workloads outside natOutgoing pools (tracked, untranslated).
func TestNATOutgoingNotTranslated(t *testing.T) {
	ne := newNATEnv(t)
	w := ne.wl1
	for _, tc := range []struct {
		name string
		dst  netip.Addr
		ttl  uint8
	}{
		{"an unrouted pool address", netip.MustParseAddr("10.65.0.99"), 64},
		{"the node's address", hostAddr, 64},
		{"another address of the host", ne.tun.ul2.ip4, 64},
		{"limited broadcast", netip.MustParseAddr("255.255.255.255"), 64},
		{"the underlay's broadcast", netip.MustParseAddr("10.30.0.255"), 64},
		{"multicast", netip.MustParseAddr("224.0.0.251"), 64},
		{"link-local", netip.MustParseAddr("169.254.1.1"), 64},
		{"no route", netip.MustParseAddr("100.64.0.1"), 64},
		{"ttl 1", server, 1},
	} {
		for _, p := range protos {
			t.Run(tc.name+"/"+p.name, func(t *testing.T) {
				before := ne.conntrack(t)
				s := p.first
				s.ttl = tc.ttl
				f := mkFlow(p.proto, w.ip4, p.sport, tc.dst, p.dport)
				o := ne.fromWL(t, w, f.frame(w.l2(), s))
				o.want(t, ok, hit{w, bpfmap.ReasonPassHost})
				o.unchanged(t)
				for k, v := range newEntries(before, ne.conntrack(t)) {
					if v.NAT != 0 {
						t.Errorf("a translating entry %s %s -> %s => %s -> %s", protoName[k.Proto], k.Src, k.Dst, v.NATSrc, v.NATDst)
					}
				}
			})
		}
	}
	t.Run("a remote workload", func(t *testing.T) {
		in := mkFlow(bpfmap.ProtoTCP, w.ip4, 40200, ne.remoteFixed, 22).frame(w.l2(), syn)
		o := ne.fromWL(t, w, in)
		o.want(t, redirect, hit{w, bpfmap.ReasonEncapIPIP})
		checkEncap(t, ne.env, o, ne.tun.nodeA, bpfmap.EncapIPIP, true)
	})
	t.Run("a workload outside natOutgoing pools", func(t *testing.T) {
		for _, p := range protos {
			f := mkFlow(p.proto, ne.wl4.ip4, p.sport, server, p.dport)
			o := ne.fromWL(t, ne.wl4, f.frame(ne.wl4.l2(), p.first))
			o.want(t, ok, hit{ne.wl4, bpfmap.ReasonPassHost})
			o.unchanged(t)
			oe, _ := flowEntries(t, ne.conntrack(t), f, f, 0)
			wantSeen(t, "original", oe, 1, uint64(len(o.in)), p.firstFlags)
		}
	})
}

// 8. What may start a flow: only a bare SYN for TCP and an echo request
// for ICMP. Anything else without an entry creates none, wherever it comes
// from: from a workload it passes as it is; from the underlay to a floating
// IP held here it is dropped (drop-no-route: the host stack would route it
// back out to the fabric that routes the floating IP here).
func TestNATOnlyFirstPacketsStart(t *testing.T) {
	ne := newNATEnv(t)
	w := ne.wl1
	before := ne.conntrack(t)
	for _, s := range []struct {
		name string
		seg  seg
	}{
		{"ack", ack},
		{"syn-ack", seg{flags: bpfmap.TCPSyn | bpfmap.TCPAck}},
		{"rst", seg{flags: bpfmap.TCPRst}},
		{"fin-ack", seg{flags: bpfmap.TCPFin | bpfmap.TCPAck}},
	} {
		t.Run("tcp "+s.name+" from a natOutgoing workload", func(t *testing.T) {
			o := ne.fromWL(t, w, mkFlow(bpfmap.ProtoTCP, w.ip4, 40300, server, 443).frame(w.l2(), s.seg))
			o.want(t, ok, hit{w, bpfmap.ReasonPassHost})
			o.unchanged(t)
		})
		t.Run("tcp "+s.name+" to a floating IP from outside", func(t *testing.T) {
			// Dropped: the host stack would route it back out to the
			// fabric, which routes the floating IP here (a loop).
			o := ne.fromUL(t, mkFlow(bpfmap.ProtoTCP, client, 40301, fipWL2, 443).frame(ne.routerL2(), s.seg))
			o.want(t, shot, hit{ne.tun.ul, bpfmap.ReasonDropNoRoute})
			o.unchanged(t)
		})
		t.Run("tcp "+s.name+" to a floating IP from a workload", func(t *testing.T) {
			o := ne.fromWL(t, ne.wl4, mkFlow(bpfmap.ProtoTCP, ne.wl4.ip4, 40302, fipWL2, 443).frame(ne.wl4.l2(), s.seg))
			o.want(t, ok, hit{ne.wl4, bpfmap.ReasonPassHost})
			o.unchanged(t)
		})
	}
	t.Run("echo reply", func(t *testing.T) {
		o := ne.fromWL(t, w, mkFlow(bpfmap.ProtoICMP, w.ip4, 5, server, 0).frame(w.l2(), seg{reply: true}))
		o.want(t, ok, hit{w, bpfmap.ReasonPassHost})
		o.unchanged(t)
		o = ne.fromUL(t, mkFlow(bpfmap.ProtoICMP, client, 5, fipWL2, 0).frame(ne.routerL2(), seg{reply: true}))
		o.want(t, shot, hit{ne.tun.ul, bpfmap.ReasonDropNoRoute})
		o.unchanged(t)
	})
	t.Run("IP options", func(t *testing.T) {
		in := mkFlow(bpfmap.ProtoUDP, client, 40303, fipWL2, 53).frame(ne.routerL2(), seg{})
		// Not translated, and never looped back to the fabric through
		// the host stack.
		o := ne.fromUL(t, withOptions(in))
		o.want(t, shot, hit{ne.tun.ul, bpfmap.ReasonDropNoRoute})
		o.unchanged(t)
	})
	if after := ne.conntrack(t); len(after) != len(before) {
		t.Errorf("packets that may not start a flow created entries: %s", fmtCT(newEntries(before, after)))
	}
}

// 9. TCP flags accumulate per direction.
func TestNATConntrackTCPFlags(t *testing.T) {
	ne := newNATEnv(t)
	ul, w := ne.tun.ul, ne.wl2
	orig := mkFlow(bpfmap.ProtoTCP, client, 41000, fipWL2, 22)
	xl := mkFlow(bpfmap.ProtoTCP, client, 41000, w.ip4, 22)
	steps := []struct {
		reply bool
		flags uint8
	}{
		{false, bpfmap.TCPSyn},
		{true, bpfmap.TCPSyn | bpfmap.TCPAck},
		{false, bpfmap.TCPAck},
		{false, bpfmap.TCPAck | bpfmap.TCPFin},
		{true, bpfmap.TCPAck | bpfmap.TCPRst},
	}
	var oFlags, rFlags uint8
	var oN, rN, oB, rB uint64
	for i, s := range steps {
		if s.reply {
			in := xl.reverse().frame(w.l2(), seg{flags: s.flags})
			ne.fromWL(t, w, in).want(t, ok, hit{w, bpfmap.ReasonPassHost})
			rFlags |= s.flags
			rN++
			rB += uint64(len(in))
		} else {
			in := orig.frame(ne.routerL2(), seg{flags: s.flags})
			ne.fromUL(t, in).want(t, redirect, hit{ul, bpfmap.ReasonDeliverLocal}, hit{w, bpfmap.ReasonToWorkload})
			oFlags |= s.flags
			oN++
			oB += uint64(len(in))
		}
		oe, re := flowEntries(t, ne.conntrack(t), orig, xl, bpfmap.NATDNAT)
		wantSeen(t, fmt.Sprintf("step %d: original", i), oe, oN, oB, oFlags)
		wantSeen(t, fmt.Sprintf("step %d: reply", i), re, rN, rB, rFlags)
	}
}

// icmpError builds the ICMP error (typ, code) src sends to dst about
// quoted, an IPv4 packet from its header on (quoted whole).
func icmpError(l2 bpftest.L2, src, dst netip.Addr, typ, code uint8, quoted []byte) []byte {
	ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, TOS: 0xc0, Protocol: layers.IPProtocolICMPv4,
		SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
	eth := &layers.Ethernet{SrcMAC: l2.Src, DstMAC: l2.Dst, EthernetType: layers.EthernetTypeIPv4}
	return bpftest.Serialize(eth, ip, &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(typ, code)}, gopacket.Payload(quoted))
}

// quoteXlated is quoted (an IPv4 packet) with its tuple rewritten to to
// and its IPv4 header checksum fixed, as a NAT must leave it in an ICMP
// error. Its L4 checksum is left as it was (nat.h does not fix it).
func quoteXlated(quoted []byte, to flow) []byte {
	q := slices.Clone(quoted)
	copy(q[12:16], to.src.Addr().AsSlice())
	copy(q[16:20], to.dst.Addr().AsSlice())
	if q[9] == bpfmap.ProtoICMP {
		binary.BigEndian.PutUint16(q[24:], to.src.Port())
	} else {
		binary.BigEndian.PutUint16(q[20:], to.src.Port())
		binary.BigEndian.PutUint16(q[22:], to.dst.Port())
	}
	fixIPv4Checksum(q)
	return q
}

// checkQuote parses frame, an ICMP error, with gopacket, quoted header
// included, and checks the outer addresses, the quoted tuple and the
// checksums (outer IPv4, ICMP, quoted IPv4).
func checkQuote(t *testing.T, frame []byte, src, dst netip.Addr, quoted flow) {
	t.Helper()
	pkt := bpftest.Decode(frame)
	ip, _ := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	icmp, _ := pkt.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
	if ip == nil || icmp == nil {
		t.Fatalf("not IPv4/ICMP: %v", pkt)
	}
	if !ip.SrcIP.Equal(src.AsSlice()) || !ip.DstIP.Equal(dst.AsSlice()) {
		t.Errorf("ICMP error %v -> %v, want %s -> %s", ip.SrcIP, ip.DstIP, src, dst)
	}
	verifyIPv4(t, frame, ip.TTL) // outer header and ICMP checksums
	inner := gopacket.NewPacket(icmp.Payload, layers.LayerTypeIPv4, gopacket.Default)
	qip, _ := inner.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	if qip == nil {
		t.Fatalf("the quote is not IPv4: %v", inner)
	}
	if !bpftest.IPv4HeaderChecksumOK(icmp.Payload) {
		t.Errorf("quoted IPv4 header checksum %#04x is wrong", qip.Checksum)
	}
	var got flow
	sa, _ := netip.AddrFromSlice(qip.SrcIP)
	da, _ := netip.AddrFromSlice(qip.DstIP)
	switch q := inner.TransportLayer().(type) {
	case *layers.UDP:
		got = mkFlow(bpfmap.ProtoUDP, sa, uint16(q.SrcPort), da, uint16(q.DstPort))
	case *layers.TCP:
		got = mkFlow(bpfmap.ProtoTCP, sa, uint16(q.SrcPort), da, uint16(q.DstPort))
	default:
		qi, _ := inner.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
		if qi == nil {
			t.Fatalf("no UDP, TCP or ICMP in the quote: %v", inner)
		}
		got = mkFlow(bpfmap.ProtoICMP, sa, qi.Id, da, 0)
	}
	if got != quoted {
		t.Errorf("the quote is %s, want %s", got, quoted)
	}
}

// 10. ICMP errors about translated flows, both ways: translated as the
// flow's own packets would be, outer addresses and quoted header, with the
// ICMP and quoted IPv4 checksums fixed.
func TestNATICMPErrors(t *testing.T) {
	ne := newNATEnv(t)
	ul := ne.tun.ul
	router := ne.tun.router.addr
	for _, p := range protos {
		t.Run(p.name+"/from the instance about a floating-IP flow", func(t *testing.T) {
			w := ne.wl2
			orig := mkFlow(p.proto, client, p.sport, fipWL2, p.dport)
			xl := mkFlow(p.proto, client, p.sport, w.ip4, p.dport)
			o := ne.fromUL(t, orig.frame(ne.routerL2(), p.first))
			o.want(t, redirect, hit{ul, bpfmap.ReasonDeliverLocal}, hit{w, bpfmap.ReasonToWorkload})
			// The instance says port (or host) unreachable about what it got.
			quoted := o.out[14:]
			in := icmpError(w.l2(), w.ip4, client, layers.ICMPv4TypeDestinationUnreachable, layers.ICMPv4CodePort, quoted)
			e := ne.fromWL(t, w, in)
			e.want(t, ok, hit{w, bpfmap.ReasonPassHost})
			want := icmpError(w.l2(), fipWL2, client, layers.ICMPv4TypeDestinationUnreachable, layers.ICMPv4CodePort, quoteXlated(quoted, orig))
			wantBytes(t, e.out, want)
			checkQuote(t, e.out, fipWL2, client, orig)
			_, re := flowEntries(t, ne.conntrack(t), orig, xl, bpfmap.NATDNAT)
			wantSeen(t, "reply", re, 1, uint64(len(in)), 0) // the error counts on the flow

			// And from outside about the instance's reply: back to it.
			r := ne.fromWL(t, w, xl.reverse().frame(w.l2(), p.reply))
			r.want(t, ok, hit{w, bpfmap.ReasonPassHost})
			rq := r.out[14:]
			in = icmpError(ne.routerL2(), router, fipWL2, layers.ICMPv4TypeDestinationUnreachable, layers.ICMPv4CodeHost, rq)
			e = ne.fromUL(t, in)
			e.want(t, redirect, hit{ul, bpfmap.ReasonDeliverLocal}, hit{w, bpfmap.ReasonToWorkload})
			want = icmpError(ne.routerL2(), router, w.ip4, layers.ICMPv4TypeDestinationUnreachable, layers.ICMPv4CodeHost, quoteXlated(rq, xl.reverse()))
			want = withL2(want, w.toL2())
			want[14+8]-- // forwarded
			fixIPv4Checksum(want[14:])
			wantBytes(t, e.out, want)
			checkQuote(t, e.out, router, w.ip4, xl.reverse())
		})
		t.Run(p.name+"/from a router about a natOutgoing flow", func(t *testing.T) {
			w := ne.wl1
			orig := mkFlow(p.proto, w.ip4, p.sport, server, p.dport)
			s := p.first
			s.ttl = 2
			o := ne.fromWL(t, w, orig.frame(w.l2(), s))
			o.want(t, redirect, hit{w, bpfmap.ReasonForwardDirect})
			port, _ := natPort(o.out)
			xl := mkFlow(p.proto, hostAddr, port, server, p.dport)
			quoted := o.out[14:] // TTL 1: the router's time-exceeded
			in := icmpError(ne.routerL2(), router, hostAddr, layers.ICMPv4TypeTimeExceeded, layers.ICMPv4CodeTTLExceeded, quoted)
			e := ne.fromUL(t, in)
			e.want(t, redirect, hit{ul, bpfmap.ReasonDeliverLocal}, hit{w, bpfmap.ReasonToWorkload})
			want := icmpError(ne.routerL2(), router, w.ip4, layers.ICMPv4TypeTimeExceeded, layers.ICMPv4CodeTTLExceeded, quoteXlated(quoted, orig))
			want = withL2(want, w.toL2())
			want[14+8]--
			fixIPv4Checksum(want[14:])
			wantBytes(t, e.out, want)
			checkQuote(t, e.out, router, w.ip4, orig)
			_, re := flowEntries(t, ne.conntrack(t), orig, xl, bpfmap.NATSNAT)
			wantSeen(t, "reply", re, 1, uint64(len(in)), 0)
		})
	}
	t.Run("about a flow nobody tracks: untouched", func(t *testing.T) {
		q := mkFlow(bpfmap.ProtoUDP, hostAddr, 40400, server, 53).frame(ne.hostL2(), seg{})[14:]
		o := ne.fromUL(t, icmpError(ne.routerL2(), router, hostAddr, layers.ICMPv4TypeDestinationUnreachable, layers.ICMPv4CodePort, q))
		o.want(t, ok, hit{ul, bpfmap.ReasonPassHost})
		o.unchanged(t)
	})
	t.Run("about a tracked flow without translation: untouched", func(t *testing.T) {
		f := mkFlow(bpfmap.ProtoUDP, ne.wl4.ip4, 40401, server, 53)
		ne.fromWL(t, ne.wl4, f.frame(ne.wl4.l2(), seg{})).want(t, ok, hit{ne.wl4, bpfmap.ReasonPassHost})
		q := f.frame(ne.hostL2(), seg{})[14:]
		o := ne.fromUL(t, icmpError(ne.routerL2(), server, ne.wl4.ip4, layers.ICMPv4TypeDestinationUnreachable, layers.ICMPv4CodePort, q))
		o.want(t, redirect, hit{ul, bpfmap.ReasonDeliverLocal}, hit{ne.wl4, bpfmap.ReasonToWorkload})
		want := withL2(o.in, ne.wl4.toL2())
		want[14+8]--
		fixIPv4Checksum(want[14:])
		wantBytes(t, o.out, want)
	})
	t.Run("the host's time-exceeded for a translated packet leaves quoting the original", func(t *testing.T) {
		// The host stack forwards the DNAT'd packet; when its TTL runs
		// out, its time-exceeded to the client goes out of the underlay,
		// whose egress hook translates the quote back.
		orig := mkFlow(bpfmap.ProtoUDP, client, 40402, fipWL2, 53)
		o := ne.fromUL(t, orig.frame(ne.routerL2(), seg{ttl: 1}))
		o.want(t, ok, hit{ul, bpfmap.ReasonPassHost})
		xl := mkFlow(bpfmap.ProtoUDP, client, 40402, ne.wl2.ip4, 53)
		quoted := xlate(o.in, xl, false)[14:]
		wantBytes(t, o.out, slices.Concat(o.in[:14], quoted))
		in := icmpError(ne.hostL2(), hostAddr, client, layers.ICMPv4TypeTimeExceeded, layers.ICMPv4CodeTTLExceeded, quoted)
		e := ne.runOn(t, ne.ulEgress, ul.ifindex, in)
		e.want(t, ok, hit{ul, bpfmap.ReasonPassHost})
		checkQuote(t, e.out, hostAddr, client, orig)
		wantBytes(t, e.out, icmpError(ne.hostL2(), hostAddr, client, layers.ICMPv4TypeTimeExceeded, layers.ICMPv4CodeTTLExceeded, quoteXlated(quoted, orig)))
	})
}

// 11. natOutgoing with every source port to a server's port taken: the
// first packet of a new flow is dropped (drop-nat-ports), untouched, and
// leaves no entry. The reply keys of all 4536 ports are written through
// the map (the first candidate is random). Other server ports, and other
// protocols, still have theirs.
func TestNATOutgoingPortsExhausted(t *testing.T) {
	ne := newNATEnv(t)
	w := ne.wl1
	for _, p := range []struct {
		name  string
		proto uint8
		dport uint16
	}{{"tcp", bpfmap.ProtoTCP, 443}, {"udp", bpfmap.ProtoUDP, 53}, {"icmp echo", bpfmap.ProtoICMP, 0}} {
		t.Run(p.name, func(t *testing.T) {
			var keys []bpf.CalyxCxNatKey
			var vals []bpf.CalyxCxNatEntry
			for port := int(natPorts[0]); port <= int(natPorts[1]); port++ {
				// What replies to a flow from (node, port) carry.
				f := mkFlow(p.proto, hostAddr, uint16(port), server, p.dport).reverse()
				keys = append(keys, rawNATKey(f))
				vals = append(vals, bpf.CalyxCxNatEntry{Dir: 1, Nat: bpfmap.NATSNAT})
			}
			if n, err := ne.nat.BatchUpdate(keys, vals, nil); err != nil || n != len(keys) {
				t.Fatalf("fill %d reply keys: %d, %v", len(keys), n, err)
			}
			before := ne.conntrack(t)
			s := seg{}
			if p.proto == bpfmap.ProtoTCP {
				s = syn
			}
			o := ne.fromWL(t, w, mkFlow(p.proto, w.ip4, 40500, server, p.dport).frame(w.l2(), s))
			o.want(t, shot, hit{w, bpfmap.ReasonDropNATPorts})
			o.unchanged(t)
			if after := ne.conntrack(t); len(after) != len(before) {
				t.Errorf("a dropped flow left entries: %s", fmtCT(newEntries(before, after)))
			}
			if p.proto != bpfmap.ProtoICMP {
				o = ne.fromWL(t, w, mkFlow(p.proto, w.ip4, 40500, server, p.dport+1).frame(w.l2(), s))
				o.want(t, redirect, hit{w, bpfmap.ReasonForwardDirect})
			}
			o = ne.fromWL(t, w, mkFlow(p.proto, w.ip4, 40500, client, p.dport).frame(w.l2(), s))
			o.want(t, redirect, hit{w, bpfmap.ReasonForwardDirect})
			if _, err := ne.nat.BatchDelete(keys, nil); err != nil {
				t.Fatal(err)
			}
			o = ne.fromWL(t, w, mkFlow(p.proto, w.ip4, 40500, server, p.dport).frame(w.l2(), s))
			o.want(t, redirect, hit{w, bpfmap.ReasonForwardDirect})
		})
	}
}

// 11b. With every port to a server's port held by closed TCP flows, a new
// connection's SYN takes the port of one that has been quiet for a second
// (cx_nat_take_closed), and both of that flow's entries go. A flow that
// closed just now, or only half (a FIN one way), keeps its port; so does a
// UDP flow's, whatever its state.
func TestNATOutgoingTakesClosedFlowsPort(t *testing.T) {
	ne := newNATEnv(t)
	w := ne.wl1
	var ts unix.Timespec
	must(t, unix.ClockGettime(unix.CLOCK_MONOTONIC_COARSE, &ts))
	now := uint64(ts.Nano())
	const fin, rst, ack = 0x01, 0x04, 0x10
	for i, c := range []struct {
		name        string
		reply, orig uint8 // the old flow's flags each way; orig 0xff: no entry
		quietFor    uint64
		proto       uint8
		taken       bool
	}{
		{"FIN both ways, quiet", fin | ack, fin | ack, 5e9, bpfmap.ProtoTCP, true},
		{"RST, quiet", rst, ack, 5e9, bpfmap.ProtoTCP, true},
		{"FIN, its other entry gone (LRU), quiet", fin | ack, 0xff, 5e9, bpfmap.ProtoTCP, true},
		{"FIN both ways, just now", fin | ack, fin | ack, 0, bpfmap.ProtoTCP, false},
		{"half closed", fin | ack, ack, 5e9, bpfmap.ProtoTCP, false},
		{"UDP", fin | ack, fin | ack, 5e9, bpfmap.ProtoUDP, false},
	} {
		sport := uint16(40500 + i) // a new flow each time
		t.Run(c.name, func(t *testing.T) {
			var keys []bpf.CalyxCxNatKey
			var vals []bpf.CalyxCxNatEntry
			for port := int(natPorts[0]); port <= int(natPorts[1]); port++ {
				old := mkFlow(c.proto, w.ip4, uint16(port+10000), server, 443) // the old flow, as it left the workload
				reply := mkFlow(c.proto, hostAddr, uint16(port), server, 443).reverse()
				last := now - c.quietFor
				v := bpf.CalyxCxNatEntry{Dir: 1, Nat: bpfmap.NATSNAT, LastNs: last,
					NatSaddr: server.As16(), NatDaddr: w.ip4.As16(), NatSport: bits.ReverseBytes16(443),
					NatDport: bits.ReverseBytes16(old.src.Port())}
				v.Tcp.Flags = c.reply
				keys = append(keys, rawNATKey(reply))
				vals = append(vals, v)
				if c.orig != 0xff {
					o := vals[len(vals)-1]
					o.Dir, o.Tcp.Flags = 0, c.orig
					o.NatSaddr, o.NatDaddr = hostAddr.As16(), server.As16()
					o.NatSport, o.NatDport = bits.ReverseBytes16(uint16(port)), bits.ReverseBytes16(443)
					keys = append(keys, rawNATKey(old))
					vals = append(vals, o)
				}
			}
			if n, err := ne.nat.BatchUpdate(keys, vals, nil); err != nil || n != len(keys) {
				t.Fatalf("fill %d entries: %d, %v", len(keys), n, err)
			}
			t.Cleanup(func() {
				// One by one: a batch stops at the first key gone (the
				// taken flow's).
				for _, k := range keys {
					_ = ne.nat.Delete(k)
				}
			})
			s := seg{}
			if c.proto == bpfmap.ProtoTCP {
				s = syn
			}
			f := mkFlow(c.proto, w.ip4, sport, server, 443)
			o := ne.fromWL(t, w, f.frame(w.l2(), s))
			if !c.taken {
				o.want(t, shot, hit{w, bpfmap.ReasonDropNATPorts})
				return
			}
			o.want(t, redirect, hit{w, bpfmap.ReasonForwardDirect})
			port, ok := natPort(o.out)
			if !ok {
				t.Fatalf("left from port %d, want one of %d-%d", port, natPorts[0], natPorts[1])
			}
			// The new flow's reply entry is in the old one's place, and the
			// old flow's other entry is gone.
			var got bpf.CalyxCxNatEntry
			must(t, ne.nat.Lookup(rawNATKey(mkFlow(c.proto, hostAddr, port, server, 443).reverse()), &got))
			if bits.ReverseBytes16(got.NatDport) != sport {
				t.Errorf("reply entry of port %d undoes to workload port %d, want %d (the new flow's)", port, bits.ReverseBytes16(got.NatDport), sport)
			}
			if err := ne.nat.Lookup(rawNATKey(mkFlow(c.proto, w.ip4, port+10000, server, 443)), &got); !errors.Is(err, ebpf.ErrKeyNotExist) {
				t.Errorf("the closed flow's original entry is still there (%v)", err)
			}
		})
	}
}

// rawNATKey is f as cx_nat_v2 stores it: ports in network order (the host
// is little-endian, as the bpfel object is).
func rawNATKey(f flow) bpf.CalyxCxNatKey {
	return bpf.CalyxCxNatKey{Saddr: f.src.Addr().As16(), Daddr: f.dst.Addr().As16(),
		Sport: bits.ReverseBytes16(f.src.Port()), Dport: bits.ReverseBytes16(f.dst.Port()), Proto: f.proto}
}

// 12. A new flow whose reply tuple is already another flow's may not
// start: its replies could not be told from the other flow's, and taking
// the entry would break that flow. Dropped as drop-ct-full (its entries
// cannot be written), the other flow untouched. The flow's own reply
// entry, left behind when its original-direction entry went (LRU), is no
// clash: the flow starts again with it, reset.
func TestNATReplyTupleClash(t *testing.T) {
	ne := newNATEnv(t)
	ul, w1, w2 := ne.tun.ul, ne.wl1, ne.wl2
	// wl4 talks to wl2 directly from port 5000, then to wl2's floating IP
	// from the same port: both flows' replies would be wl2:53 -> wl4:5000.
	direct := mkFlow(bpfmap.ProtoUDP, ne.wl4.ip4, 5000, w2.ip4, 53)
	ne.fromWL(t, ne.wl4, direct.frame(ne.wl4.l2(), seg{})).want(t, redirect, hit{ne.wl4, bpfmap.ReasonDeliverLocal}, hit{w2, bpfmap.ReasonToWorkload})
	before := ne.conntrack(t)
	viaFIP := mkFlow(bpfmap.ProtoUDP, ne.wl4.ip4, 5000, fipWL2, 53)
	o := ne.fromWL(t, ne.wl4, viaFIP.frame(ne.wl4.l2(), seg{}))
	o.want(t, shot, hit{ne.wl4, bpfmap.ReasonDropCTFull})
	o.unchanged(t)
	after := ne.conntrack(t)
	if len(after) != len(before) {
		t.Errorf("the refused flow left entries: %s", fmtCT(newEntries(before, after)))
	}
	oe, re := flowEntries(t, after, direct, direct, 0)
	wantSeen(t, "original", oe, 1, uint64(len(o.in)), 0)
	wantSeen(t, "reply", re, 0, 0, 0)
	// The same from outside: a client whose port matches.
	out := mkFlow(bpfmap.ProtoTCP, w2.ip4, 22, client, 41100)
	ne.fromWL(t, w2, out.frame(w2.l2(), syn)).want(t, ok, hit{w2, bpfmap.ReasonPassHost})
	o = ne.fromUL(t, mkFlow(bpfmap.ProtoTCP, client, 41100, fipWL2, 22).frame(ne.routerL2(), syn))
	o.want(t, shot, hit{ul, bpfmap.ReasonDropCTFull})
	o.unchanged(t)

	t.Run("the flow's own reply entry", func(t *testing.T) {
		orig := mkFlow(bpfmap.ProtoUDP, w1.ip4, 5001, fipWL2, 53)
		xl := mkFlow(bpfmap.ProtoUDP, w1.ip4, 5001, w2.ip4, 53)
		in := orig.frame(w1.l2(), seg{})
		ne.fromWL(t, w1, in).want(t, redirect, hit{w1, bpfmap.ReasonDeliverLocal}, hit{w2, bpfmap.ReasonToWorkload})
		rin := xl.reverse().frame(w2.l2(), seg{})
		ne.fromWL(t, w2, rin).want(t, redirect, hit{w2, bpfmap.ReasonDeliverLocal}, hit{w1, bpfmap.ReasonToWorkload})
		if n, err := ne.dp.Maps.DeleteConntrack([]bpfmap.CTKey{orig.key()}); n != 1 || err != nil {
			t.Fatalf("delete the original entry: %d, %v", n, err)
		}
		o := ne.fromWL(t, w1, in)
		o.want(t, redirect, hit{w1, bpfmap.ReasonDeliverLocal}, hit{w2, bpfmap.ReasonToWorkload})
		wantBytes(t, o.out, withL2(xlate(in, xl, true), w2.toL2()))
		oe, re := flowEntries(t, ne.conntrack(t), orig, xl, bpfmap.NATDNAT)
		wantSeen(t, "original", oe, 1, uint64(len(in)), 0)
		// Reused, and started afresh: its counters (and, for TCP, its
		// sequence state) were the earlier flow's.
		wantSeen(t, "reply", re, 0, 0, 0)
	})
}

// 13. A conntrack table filled to capacity: LRU makes room, so new flows
// still start (and are translated), each with both entries, and the table
// never holds more than its capacity. The fill and the runs happen on one
// CPU: an LRU map keeps free entries per CPU, and a fill from several
// could not use them all.
func TestNATConntrackFull(t *testing.T) {
	ne := newNATEnv(t)
	ul, w := ne.tun.ul, ne.wl1
	must(t, ne.ns.Do(func() error {
		var allowed, one unix.CPUSet
		if err := unix.SchedGetaffinity(0, &allowed); err != nil {
			return err
		}
		for cpu := 0; cpu < 1024; cpu++ {
			if allowed.IsSet(cpu) {
				one.Set(cpu)
				return unix.SchedSetaffinity(0, &one)
			}
		}
		return fmt.Errorf("no CPU in the affinity mask")
	}))
	// Both tables full of flows of a made-up network, nothing a test
	// packet matches: tracked ones in cx_ct_v2, translated ones in
	// cx_nat_v2.
	ctCap, natCap := int(ne.ct.MaxEntries()), int(ne.nat.MaxEntries())
	ctKeys := make([]bpf.CalyxCxCtKey, ctCap)
	ctVals := make([]bpf.CalyxCxCtEntry, ctCap)
	for i := range ctKeys {
		f := mkFlow(bpfmap.ProtoUDP, netip.AddrFrom4([4]byte{100, 100, byte(i >> 8), byte(i)}), 1, netip.MustParseAddr("100.101.0.1"), 53)
		ctKeys[i] = bpf.CalyxCxCtKey{AddrA: f.src.Addr().As16(), AddrB: f.dst.Addr().As16(),
			PortA: bits.ReverseBytes16(1), PortB: bits.ReverseBytes16(53), Proto: bpfmap.ProtoUDP}
	}
	natKeys := make([]bpf.CalyxCxNatKey, natCap)
	natVals := make([]bpf.CalyxCxNatEntry, natCap)
	for i := range natKeys {
		f := mkFlow(bpfmap.ProtoUDP, netip.AddrFrom4([4]byte{100, 100, byte(i >> 8), byte(i)}), 1, netip.MustParseAddr("100.99.0.1"), 53)
		natKeys[i], natVals[i] = rawNATKey(f), bpf.CalyxCxNatEntry{Nat: bpfmap.NATDNAT}
	}
	must(t, ne.ns.Do(func() error {
		n, err := ne.ct.BatchUpdate(ctKeys, ctVals, nil)
		if err == nil && n != ctCap {
			err = fmt.Errorf("%s: %d of %d written", bpfmap.CTName, n, ctCap)
		}
		if err != nil {
			return err
		}
		n, err = ne.nat.BatchUpdate(natKeys, natVals, nil)
		if err == nil && n != natCap {
			err = fmt.Errorf("%s: %d of %d written", bpfmap.NATName, n, natCap)
		}
		return err
	}))
	size, err := ne.dp.Maps.ConntrackSize()
	must(t, err)
	if size.Tracked != ctCap || size.Translated != natCap {
		t.Fatalf("after the fill: %+v, want both tables at capacity", size)
	}

	fromOutside := mkFlow(bpfmap.ProtoUDP, client, 42000, fipWL2, 53)
	in := fromOutside.frame(ne.routerL2(), seg{})
	o := ne.fromUL(t, in)
	o.want(t, redirect, hit{ul, bpfmap.ReasonDeliverLocal}, hit{ne.wl2, bpfmap.ReasonToWorkload})
	wantBytes(t, o.out, withL2(xlate(in, mkFlow(bpfmap.ProtoUDP, client, 42000, ne.wl2.ip4, 53), true), ne.wl2.toL2()))

	natOut := mkFlow(bpfmap.ProtoTCP, w.ip4, 42001, server, 443)
	o = ne.fromWL(t, w, natOut.frame(w.l2(), syn))
	o.want(t, redirect, hit{w, bpfmap.ReasonForwardDirect})
	port, inRange := natPort(o.out)
	if !inRange {
		t.Errorf("source port %d out of range", port)
	}
	hairpin := mkFlow(bpfmap.ProtoICMP, ne.wl2.ip4, 77, fipWL2, 0)
	o = ne.fromWL(t, ne.wl2, hairpin.frame(ne.wl2.l2(), seg{}))
	o.want(t, redirect, hit{ne.wl2, bpfmap.ReasonDeliverLocal}, hit{ne.wl2, bpfmap.ReasonToWorkload})

	// A tracked flow without translation: wl3 to wl4 beside it.
	tracked := mkFlow(bpfmap.ProtoUDP, ne.wl3.ip4, 42002, ne.wl4.ip4, 53)
	o = ne.fromWL(t, ne.wl3, tracked.frame(ne.wl3.l2(), seg{}))
	o.want(t, redirect, hit{ne.wl3, bpfmap.ReasonDeliverLocal}, hit{ne.wl4, bpfmap.ReasonToWorkload})

	ct := ne.conntrack(t)
	if size, err = ne.dp.Maps.ConntrackSize(); err != nil {
		t.Fatal(err)
	}
	if size.Tracked > ctCap || size.Translated > natCap {
		t.Errorf("the tables hold %+v, more than their capacities", size)
	}
	if _, ok := ct[tracked.key()]; !ok {
		t.Errorf("no entry for %s", tracked)
	}
	flowEntries(t, ct, fromOutside, mkFlow(bpfmap.ProtoUDP, client, 42000, ne.wl2.ip4, 53), bpfmap.NATDNAT)
	flowEntries(t, ct, natOut, mkFlow(bpfmap.ProtoTCP, hostAddr, port, server, 443), bpfmap.NATSNAT)
	if e, ok := ct[hairpin.key()]; !ok || e.NAT != bpfmap.NATDNAT|bpfmap.NATSNAT { // one entry: see TestNATHairpin
		t.Errorf("no entry for %s", hairpin)
	}
	evicted, evictedCT := 0, 0
	for _, k := range natKeys {
		var v bpf.CalyxCxNatEntry
		if err := ne.nat.Lookup(k, &v); err != nil {
			evicted++
		}
	}
	for _, k := range ctKeys {
		var v bpf.CalyxCxCtEntry
		if err := ne.ct.Lookup(k, &v); err != nil {
			evictedCT++
		}
	}
	if evicted < 5 {
		t.Errorf("%d of %s's fill were evicted for 3 new translated flows (5 entries), want at least 5", evicted, bpfmap.NATName)
	}
	if evictedCT < 1 {
		t.Errorf("none of %s's fill was evicted for a new tracked flow", bpfmap.CTName)
	}
	t.Logf("capacities %d / %d: 3 new translated flows evicted %d entries, 1 tracked flow %d", natCap, ctCap, evicted, evictedCT)
}

// 14. An ICMP "fragmentation needed" for a translated flow reaches the
// sender about the packet it sent: the error cx_to_node builds (about the
// packet as translated, to its translated source) is redirected out of the
// workload's interface, whose egress hook translates it back; for the
// host's own packets, into the underlay, whose ingress hook does.
func TestNATFragNeeded(t *testing.T) {
	ne := newNATEnv(t)
	w, ul := ne.wl1, ne.tun.ul
	t.Run("the host to a floating IP on another node", func(t *testing.T) {
		mtu := underlayMTU - 20
		orig := mkFlow(bpfmap.ProtoUDP, hostAddr, 40601, fipRemote, 53)
		o := ne.runOn(t, ne.ulEgress, ul.ifindex, orig.frame(ne.hostL2(), seg{size: mtu + 1}))
		o.want(t, redirect, hit{ul, bpfmap.ReasonICMPFragNeeded})
		e := ne.fromUL(t, o.out)
		e.want(t, ok, hit{ul, bpfmap.ReasonPassHost})
		checkQuote(t, e.out, ne.tun.nodeA.addr, hostAddr, orig)
	})
	for _, tc := range []struct {
		name string
		dst  netip.Addr
		mtu  int
	}{
		{"natOutgoing", server, underlayMTU},
		{"floating IP on another node", fipRemote, underlayMTU - 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			orig := mkFlow(bpfmap.ProtoUDP, w.ip4, 40600, tc.dst, 53)
			in := orig.frame(w.l2(), seg{size: tc.mtu + 1})
			o := ne.fromWL(t, w, in)
			o.want(t, redirect, hit{w, bpfmap.ReasonICMPFragNeeded})
			// The egress hook of wl1 gets the ICMP next (bpf_redirect to
			// its egress) and translates it.
			e := ne.toWL(t, w, o.out)
			e.want(t, ok, hit{w, bpfmap.ReasonToWorkload})
			checkQuote(t, e.out, hostAddr, w.ip4, orig)
			pkt := bpftest.Decode(e.out)
			icmp, _ := pkt.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
			if icmp == nil || icmp.TypeCode != layers.CreateICMPv4TypeCode(layers.ICMPv4TypeDestinationUnreachable, layers.ICMPv4CodeFragmentationNeeded) || int(icmp.Seq) != tc.mtu {
				t.Errorf("not a fragmentation needed with MTU %d: %v", tc.mtu, pkt)
			}
		})
	}
}

// 15. From outside to a floating IP whose instance runs on another node:
// the packet is sent to that node as it came, encapsulated as the fixed
// IP's route says (or routed directly), and translated there, by the node
// whose workload answers: the reply must get the floating IP back as its
// source at the instance's first hop, and only that node can know the
// flow. The fixture plays both nodes, as in TestTunnelRoundTrip: first
// this host, then nodeA (its address in cx_config, this host a RouteNode,
// the instance on wl2's interface, the floating IP local).
func TestNATFloatingIPFromOutsideRemote(t *testing.T) {
	ne := newNATEnv(t)
	ul, nodeA := ne.tun.ul, ne.tun.nodeA
	directFixed := ne.block(t, nodeA, bpfmap.EncapNone)
	directFIP := netip.MustParseAddr("192.0.2.51")
	must(t, ne.dp.Maps.FIPs.Put(directFIP, bpfmap.FloatingIP{Fixed: directFixed, Node: nodeA.addr, EndpointID: 51}))
	must(t, ne.dp.Maps.Routes.Put(netip.PrefixFrom(directFIP, 32), bpfmap.Route{Type: bpfmap.RouteFloatingIP, NextHop: nodeA.addr}))
	asNodeA := func(fip, fixed netip.Addr) func() {
		m := ne.dp.Maps
		cfg := ne.tun.cfg
		cfg.Address = nodeA.addr
		must(t, m.Config.Put(0, cfg))
		must(t, m.Routes.Put(netip.PrefixFrom(hostAddr, 32), bpfmap.Route{Type: bpfmap.RouteNode}))
		must(t, m.Routes.Put(netip.PrefixFrom(fixed, 32), bpfmap.Route{Type: bpfmap.RouteLocalWorkload,
			Ifindex: ne.wl2.idx(), MAC: bpfmap.MACFrom(ne.wl2.mac), HostMAC: bpfmap.MACFrom(ne.wl2.hostMAC), Peer: true,
			CounterSlot: ne.wl2.slot}))
		f, _ := m.FIPs.All()
		must(t, m.FIPs.Put(fip, bpfmap.FloatingIP{Fixed: fixed, Node: nodeA.addr, EndpointID: 50, Local: true}))
		return func() {
			must(t, m.Config.Put(0, ne.tun.cfg))
			must(t, m.Routes.Put(netip.PrefixFrom(hostAddr, 32), bpfmap.Route{Type: bpfmap.RouteHost}))
			must(t, m.Routes.Delete(netip.PrefixFrom(fixed, 32)))
			must(t, m.FIPs.Put(fip, f[fip]))
		}
	}
	for _, tc := range []struct {
		name       string
		fip, fixed netip.Addr
		encap      bpfmap.Encap
		reason     bpfmap.Reason // counted on this node's underlay
		decap      bpfmap.Reason // counted on nodeA's
	}{
		{"ipip", fipRemote, ne.remoteFixed, bpfmap.EncapIPIP, bpfmap.ReasonEncapIPIP, bpfmap.ReasonDecapIPIP},
		{"direct", directFIP, directFixed, bpfmap.EncapNone, bpfmap.ReasonForwardDirect, bpfmap.ReasonDeliverLocal},
	} {
		for _, p := range protos {
			t.Run(tc.name+"/"+p.name, func(t *testing.T) {
				orig := mkFlow(p.proto, client, p.sport, tc.fip, p.dport)
				xl := mkFlow(p.proto, client, p.sport, tc.fixed, p.dport)
				before := ne.conntrack(t)
				in := orig.frame(ne.routerL2(), p.first)
				sent := ne.fromUL(t, in)
				sent.want(t, redirect, hit{ul, tc.reason})
				if tc.encap == bpfmap.EncapNone {
					wantBytes(t, sent.out, withL2(xlate(in, orig, true), bpftest.L2{Src: ul.hostMAC, Dst: nodeA.l2}))
				} else {
					checkEncap(t, ne.env, sent, nodeA, tc.encap, true)
				}
				if sent.ctx.Mark != cxMarkRouted {
					t.Errorf("skb->mark %#x, want %#x", sent.ctx.Mark, cxMarkRouted)
				}
				if n := newEntries(before, ne.conntrack(t)); len(n) != 0 {
					t.Errorf("the node that only forwards tracked the flow: %s", fmtCT(n))
					// nodeA has a table of its own.
					var keys []bpfmap.CTKey
					for k := range n {
						keys = append(keys, k)
					}
					_, err := ne.dp.Maps.DeleteConntrack(keys)
					must(t, err)
				}

				restore := asNodeA(tc.fip, tc.fixed)
				defer restore()
				got := ne.fromUL(t, sent.out)
				want := withL2(slices.Concat(sent.out[:14], xlate(in, xl, false)[14:]), ne.wl2.toL2())
				want[14+8] -= 2
				fixIPv4Checksum(want[14:])
				got.wantSized(t, redirect, sizedHit{ul, tc.decap, len(sent.out)}, sizedHit{ne.wl2, bpfmap.ReasonToWorkload, len(want)})
				wantBytes(t, got.out, want)

				rin := xl.reverse().frame(ne.wl2.l2(), p.reply)
				r := ne.fromWL(t, ne.wl2, rin)
				r.want(t, ok, hit{ne.wl2, bpfmap.ReasonPassHost})
				wantBytes(t, r.out, xlate(rin, orig.reverse(), false))
				oe, re := flowEntries(t, ne.conntrack(t), orig, xl, bpfmap.NATDNAT)
				wantSeen(t, "original", oe, 1, uint64(len(sent.out)), p.firstFlags)
				wantSeen(t, "reply", re, 1, uint64(len(rin)), p.replyFlags)
			})
		}
	}
}

// 16. Tunnel packets to a floating IP: translated and delivered when the
// instance is here (the node the packet reached forwarded it untranslated,
// TestNATFloatingIPFromOutsideRemote); dropped when it is not (decapsulated
// traffic is never forwarded on), or when it neither starts a flow nor
// belongs to one (never to the host stack, which would route it back out).
func TestNATFloatingIPDecap(t *testing.T) {
	ne := newNATEnv(t)
	ul, nodeA := ne.tun.ul, ne.tun.nodeA
	l2 := bpftest.L2{Src: mac(0x99, 0x01), Dst: mac(0x99, 0xee)}
	for _, enc := range encaps {
		t.Run(enc.name+"/instance here", func(t *testing.T) {
			orig := mkFlow(bpfmap.ProtoTCP, client, 43000+uint16(enc.encap), fipWL2, 443)
			inner := orig.frame(l2, syn)
			in := tunnelFrame(ne.env, nodeA, hostAddr, enc.encap, inner)
			o := ne.fromUL(t, in)
			want := withL2(slices.Concat(in[:14], xlate(inner, mkFlow(bpfmap.ProtoTCP, client, orig.src.Port(), ne.wl2.ip4, 443), true)[14:]), ne.wl2.toL2())
			o.wantSized(t, redirect, sizedHit{ul, enc.decap, len(in)}, sizedHit{ne.wl2, bpfmap.ReasonToWorkload, len(want)})
			wantBytes(t, o.out, want)
		})
		t.Run(enc.name+"/instance elsewhere", func(t *testing.T) {
			in := tunnelFrame(ne.env, nodeA, hostAddr, enc.encap, mkFlow(bpfmap.ProtoTCP, client, 43010, fipRemote, 443).frame(l2, syn))
			o := ne.fromUL(t, in)
			o.want(t, shot, hit{ul, bpfmap.ReasonDropNoRoute})
			o.unchanged(t)
		})
		t.Run(enc.name+"/no flow", func(t *testing.T) {
			in := tunnelFrame(ne.env, nodeA, hostAddr, enc.encap, mkFlow(bpfmap.ProtoTCP, client, 43020, fipWL2, 443).frame(l2, ack))
			before := ne.conntrack(t)
			o := ne.fromUL(t, in)
			o.want(t, shot, hit{ul, bpfmap.ReasonDropNoRoute})
			if n := newEntries(before, ne.conntrack(t)); len(n) != 0 {
				t.Errorf("entries for a segment without SYN: %s", fmtCT(n))
			}
		})
	}
	t.Run("a floating IP whose fixed IP has no route yet: dropped, not looped through the host", func(t *testing.T) {
		fip := netip.MustParseAddr("192.0.2.99")
		must(t, ne.dp.Maps.FIPs.Put(fip, bpfmap.FloatingIP{Fixed: netip.MustParseAddr("10.66.9.9"), Node: nodeA.addr}))
		must(t, ne.dp.Maps.Routes.Put(netip.PrefixFrom(fip, 32), bpfmap.Route{Type: bpfmap.RouteFloatingIP, NextHop: nodeA.addr}))
		o := ne.fromUL(t, mkFlow(bpfmap.ProtoUDP, client, 43030, fip, 53).frame(ne.routerL2(), seg{}))
		o.want(t, shot, hit{ul, bpfmap.ReasonDropNoRoute})
		o.unchanged(t)
	})
}

// Two CPUs starting the same natOutgoing flow at the same moment end with
// one flow and one port (every insert is BPF_NOEXIST; the loser gives back
// the reply entry it wrote and translates by the winner's): both packets
// leave from the same port, and the flow has exactly its two entries.
func TestNATOutgoingRaceOnePort(t *testing.T) {
	switch {
	case runtime.NumCPU() >= 2:
	case os.Getenv("CI") != "":
		t.Fatal("CI: one CPU, so the race cannot be run")
	default:
		t.Skip("one CPU: nothing runs at once (under CI=true this fails)")
	}
	ne := newNATEnv(t)
	w := ne.wl1
	stats0, err := ne.dp.Maps.ConntrackStats()
	must(t, err)
	const rounds = 400
	for round := range rounds {
		f := mkFlow(bpfmap.ProtoUDP, w.ip4, uint16(41000+round), server, 53)
		pkt := f.frame(w.l2(), seg{})
		var outs [2][]byte
		var wg sync.WaitGroup
		start := make(chan struct{})
		errs := make(chan error, 2)
		for cpu := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs <- ne.ns.Go(cpu, func() error {
					<-start
					res, err := bpftest.RunHere(ne.from, bpftest.Input{Data: pkt, Ifindex: w.ifindex})
					outs[cpu] = res.Out
					return err
				})
			}()
		}
		close(start)
		wg.Wait()
		for range 2 {
			must(t, <-errs)
		}
		p0, p1 := srcPort(outs[0]), srcPort(outs[1])
		if p0 != p1 {
			t.Fatalf("round %d: the two CPUs translated one flow to ports %d and %d", round, p0, p1)
		}
		replies := 0
		must(t, ne.dp.Maps.Conntrack(func(k bpfmap.CTKey, v bpfmap.CTEntry) bool {
			if k.Src == netip.AddrPortFrom(server, 53) && k.Dst.Addr() == hostAddr && v.NATDst == f.src {
				replies++
				if k.Dst.Port() != p0 {
					t.Errorf("round %d: a reply entry for port %d, the flow left from %d", round, k.Dst.Port(), p0)
				}
			}
			return true
		}))
		if replies != 1 {
			t.Fatalf("round %d: %d reply entries for one flow, want 1", round, replies)
		}
	}
	stats, err := ne.dp.Maps.ConntrackStats()
	must(t, err)
	t.Logf("%d rounds: %d entries written, %d given back by a CPU that lost the race", rounds,
		stats.TranslatedCreated-stats0.TranslatedCreated, stats.TranslatedDeleted-stats0.TranslatedDeleted)
}

// A translated flow whose reply entry the LRU evicted gets it back from
// its original-direction entry at the next packet after a second, so its
// replies are translated again; never over another flow's entry.
func TestNATReplyEntryRecreated(t *testing.T) {
	ne := newNATEnv(t)
	ul, w := ne.tun.ul, ne.wl2
	orig := mkFlow(bpfmap.ProtoTCP, client, 41900, fipWL2, 22)
	xl := mkFlow(bpfmap.ProtoTCP, client, 41900, w.ip4, 22)
	ne.fromUL(t, orig.frame(ne.routerL2(), syn)).want(t, redirect, hit{ul, bpfmap.ReasonDeliverLocal}, hit{w, bpfmap.ReasonToWorkload})
	rin := xl.reverse().frame(w.l2(), synAck)
	ne.fromWL(t, w, rin).want(t, ok, hit{w, bpfmap.ReasonPassHost})

	// The LRU takes the reply entry; the original's last packet is old.
	must(t, ne.nat.Delete(rawNATKey(xl.reverse())))
	var v bpf.CalyxCxNatEntry
	must(t, ne.nat.Lookup(rawNATKey(orig), &v))
	v.LastNs = 0
	must(t, ne.nat.Put(rawNATKey(orig), v))

	ne.fromUL(t, orig.frame(ne.routerL2(), ack)).want(t, redirect, hit{ul, bpfmap.ReasonDeliverLocal}, hit{w, bpfmap.ReasonToWorkload})
	r := ne.fromWL(t, w, xl.reverse().frame(w.l2(), ack))
	r.want(t, ok, hit{w, bpfmap.ReasonPassHost})
	wantBytes(t, r.out, xlate(xl.reverse().frame(w.l2(), ack), orig.reverse(), false))
	_, re := flowEntries(t, ne.conntrack(t), orig, xl, bpfmap.NATDNAT)
	if !re.Resync && !re.SeqKnown {
		t.Errorf("recreated reply entry: %+v, want it learning its sequence (resync) or learnt", re)
	}
	// Its RST before it learnt anything would be refused; after an ACK it
	// is judged by the sequence as before.
	rst := xl.reverse().frame(w.l2(), seg{flags: bpfmap.TCPRst | bpfmap.TCPAck, seq: 2000, ack: 1001})
	ne.fromWL(t, w, rst).want(t, ok, hit{w, bpfmap.ReasonPassHost})
}
