package bpf_test

// The fixture of the BPF program tests: a throwaway network namespace with
// one veth pair per workload (their ifindexes are what the programs look
// up), a freshly loaded, unpinned collection, and helpers that run a
// program on a packet and return the verdict, the packet that came out and
// the change in every counter.

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/calyxnet/calyx/bpf/bpftest"
	"github.com/calyxnet/calyx/bpfmap"
	"github.com/calyxnet/calyx/loader"
)

var (
	bpfOnce sync.Once
	bpfErr  error
)

// requireBPF skips tb when BPF programs cannot be loaded and run here (not
// root, no BPF syscall, no BPF_PROG_TEST_RUN, no network namespaces) — unless
// the CI environment variable is set: in CI a missing privilege or kernel
// feature is a failure, never a skip (DESIGN.md, "Tests, in three layers").
func requireBPF(tb testing.TB) {
	tb.Helper()
	bpfOnce.Do(func() { bpfErr = probeBPF() })
	if bpfErr == nil {
		return
	}
	if os.Getenv("CI") != "" {
		tb.Fatalf("BPF program tests cannot run, and CI is set so this fails instead of skipping: %v", bpfErr)
	}
	tb.Skipf("BPF program tests need root and BPF_PROG_TEST_RUN (set CI=1 to fail instead of skip): %v", bpfErr)
}

// probeBPF loads the smallest TC program and runs it once in a new network
// namespace: everything the fixture needs.
func probeBPF() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("not root (euid %d)", os.Geteuid())
	}
	prog, err := emptyTCProgram()
	if err != nil {
		return fmt.Errorf("load a TC program: %w", err)
	}
	defer prog.Close()
	ns, err := bpftest.NewNetNS()
	if err != nil {
		return err
	}
	defer ns.Close()
	if _, err := ns.Run(prog, bpftest.Input{Data: make([]byte, bpftest.MinPacket)}); err != nil {
		return fmt.Errorf("BPF_PROG_TEST_RUN: %w", err)
	}
	return nil
}

// emptyTCProgram returns TC_ACT_OK and does nothing else: the harness's own
// cost in benchmarks.
func emptyTCProgram() (*ebpf.Program, error) {
	return ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "cx_test_empty", Type: ebpf.SchedCLS, License: "Dual BSD/GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, bpftest.ActOK), asm.Return()},
	})
}

// endpoint is one workload: a veth pair whose host side carries the
// programs; the peer's MAC is the workload's.
type endpoint struct {
	name    string
	ifindex int
	hostMAC net.HardwareAddr // the host side's (the veth in the namespace)
	mac     net.HardwareAddr // the workload's (its peer)
	ip4     netip.Addr
	ip6     netip.Addr
	slot    uint16 // its counter slot; 0: counted in cx_counters
}

func (ep *endpoint) idx() uint32 { return uint32(ep.ifindex) }

// l2 is the Ethernet header of a frame the workload sends to the host.
func (ep *endpoint) l2() bpftest.L2 { return bpftest.L2{Src: ep.mac, Dst: ep.hostMAC} }

// env is the standard topology every test starts from:
//
//	wl1   10.65.0.10 fd00:65::10  CheckMAC   the usual sender
//	wl2   10.65.0.20 fd00:65::20  CheckMAC   destination, route has its MAC
//	wl3   10.65.0.30 fd00:65::30  CheckMAC   destination, route has NO MAC
//	wl4   10.65.0.40 fd00:65::40  no CheckMAC (any source MAC accepted)
//	stray  a veth that is not in cx_ifaces
//	10.65.1.0/26   remote workload block (another node)
//	10.30.0.10/32  host (this node's underlay address)
type env struct {
	ns                  *bpftest.NetNS
	dp                  *loader.Dataplane
	from, to            *ebpf.Program
	ulIngress, ulEgress *ebpf.Program // calyx_from_underlay, calyx_to_underlay
	wl1, wl2, wl3, wl4  *endpoint
	stray               *endpoint
	tun                 *tunnelEnv // newTunnelEnv only
}

var (
	hostAddr    = netip.MustParseAddr("10.30.0.10")
	remoteBlock = netip.MustParsePrefix("10.65.1.0/26")
	remoteWL    = netip.MustParseAddr("10.65.1.5")
	gatewayV4   = netip.MustParseAddr("169.254.1.1")
)

func mac(last byte, kind byte) net.HardwareAddr {
	return net.HardwareAddr{0x02, 0xca, 0x1e, kind, 0x00, last}
}

// newEnv builds the namespace, the veths and the maps of env. Everything is
// released by tb.Cleanup, pass or fail; nothing is pinned and nothing is
// created in the caller's namespace.
func newEnv(tb testing.TB) *env {
	tb.Helper()
	requireBPF(tb)
	ns, err := bpftest.NewNetNS()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = ns.Close() })
	dp, err := loader.Load("")
	if err != nil {
		tb.Fatalf("load the collection: %v", err)
	}
	tb.Cleanup(func() { _ = dp.Close() })
	e := &env{ns: ns, dp: dp, from: dp.Program(loader.RoleWorkload, loader.HookIngress), to: dp.Program(loader.RoleWorkload, loader.HookEgress),
		ulIngress: dp.Program(loader.RoleUnderlay, loader.HookIngress), ulEgress: dp.Program(loader.RoleUnderlay, loader.HookEgress)}

	mk := func(n byte, checkMAC, hasMAC bool) *endpoint {
		name := fmt.Sprintf("wl%d", n)
		if n == 9 {
			name = "stray"
		}
		v, err := ns.AddVeth(name+"h", name+"w", mac(n, 0xee), mac(n, 0x01))
		if err != nil {
			tb.Fatal(err)
		}
		ep := &endpoint{name: name, ifindex: v.Ifindex, hostMAC: v.MAC, mac: v.PeerMAC,
			ip4: netip.AddrFrom4([4]byte{10, 65, 0, n * 10}),
			ip6: netip.AddrFrom16([16]byte{0: 0xfd, 2: 0x00, 3: 0x65, 15: 0x10 * n})}
		if n == 9 {
			return ep
		}
		if n != 4 {
			// wl4 has none, as an interface beyond the last slot: its
			// verdicts are counted in cx_counters.
			ep.slot = bpfmap.FirstWorkloadCounterSlot + uint16(n)
		}
		must(tb, dp.Maps.Ifaces.Put(ep.idx(), bpfmap.Iface{Workload: true, CheckMAC: checkMAC,
			EndpointID: uint32(n), MAC: bpfmap.MACFrom(ep.mac), HostMAC: bpfmap.MACFrom(ep.hostMAC), Kind: bpfmap.IfaceVeth,
			CounterSlot: ep.slot}))
		rt := bpfmap.Route{Type: bpfmap.RouteLocalWorkload, Ifindex: ep.idx(), HostMAC: bpfmap.MACFrom(ep.hostMAC), Peer: true,
			CounterSlot: ep.slot}
		if hasMAC {
			rt.MAC = bpfmap.MACFrom(ep.mac)
		}
		must(tb, dp.Maps.Routes.Put(netip.PrefixFrom(ep.ip4, 32), rt))
		must(tb, dp.Maps.Routes.Put(netip.PrefixFrom(ep.ip6, 128), rt))
		return ep
	}
	e.wl1 = mk(1, true, true)
	e.wl2 = mk(2, true, true)
	e.wl3 = mk(3, true, false)
	e.wl4 = mk(4, false, true)
	e.stray = mk(9, false, false)
	must(tb, dp.Maps.Routes.Put(remoteBlock, bpfmap.Route{Type: bpfmap.RouteRemoteWorkload,
		NextHop: netip.MustParseAddr("10.30.0.11")}))
	must(tb, dp.Maps.Routes.Put(netip.PrefixFrom(hostAddr, 32), bpfmap.Route{Type: bpfmap.RouteHost}))
	return e
}

func must(tb testing.TB, err error) {
	tb.Helper()
	if err != nil {
		tb.Fatal(err)
	}
}

// outcome is one run: the verdict, the packet after the program and the
// change of every counter it caused.
type outcome struct {
	in      []byte
	ifindex int
	verdict uint32
	out     []byte
	ctx     bpftest.SkbCtx // the context after the run (skb->mark)
	delta   map[bpfmap.CounterKey]bpfmap.Counter
}

func (e *env) counters(tb testing.TB) map[bpfmap.CounterKey]bpfmap.Counter {
	tb.Helper()
	c, err := e.dp.Maps.Counters()
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

func counterDelta(before, after map[bpfmap.CounterKey]bpfmap.Counter) map[bpfmap.CounterKey]bpfmap.Counter {
	d := make(map[bpfmap.CounterKey]bpfmap.Counter)
	for k, a := range after {
		b := before[k]
		if a != b {
			d[k] = bpfmap.Counter{Packets: a.Packets - b.Packets, Bytes: a.Bytes - b.Bytes}
		}
	}
	return d
}

// runOn runs prog once on pkt as seen on ifindex.
func (e *env) runOn(tb testing.TB, prog *ebpf.Program, ifindex int, pkt []byte) outcome {
	tb.Helper()
	o, err := e.tryRun(tb, prog, ifindex, pkt)
	if err != nil {
		tb.Fatalf("run on ifindex %d (%d bytes): %v", ifindex, len(pkt), err)
	}
	return o
}

func (e *env) tryRun(tb testing.TB, prog *ebpf.Program, ifindex int, pkt []byte) (outcome, error) {
	tb.Helper()
	return e.tryRunIn(tb, prog, bpftest.Input{Data: pkt, Ifindex: ifindex})
}

// runIn runs prog once on in (with its mark, GSO size).
func (e *env) runIn(tb testing.TB, prog *ebpf.Program, in bpftest.Input) outcome {
	tb.Helper()
	o, err := e.tryRunIn(tb, prog, in)
	if err != nil {
		tb.Fatalf("run on ifindex %d (%d bytes): %v", in.Ifindex, len(in.Data), err)
	}
	return o
}

func (e *env) tryRunIn(tb testing.TB, prog *ebpf.Program, input bpftest.Input) (outcome, error) {
	tb.Helper()
	before := e.counters(tb)
	pkt := input.Data
	in := slices.Clone(pkt)
	res, err := e.ns.Run(prog, input)
	if err != nil {
		return outcome{}, err
	}
	if !bytes.Equal(in, pkt) {
		tb.Fatal("the runner modified the input slice")
	}
	return outcome{in: in, ifindex: input.Ifindex, verdict: res.Verdict, out: res.Out, ctx: res.Ctx,
		delta: counterDelta(before, e.counters(tb))}, nil
}

// fromWL runs calyx_from_wl on a frame sent by ep.
func (e *env) fromWL(tb testing.TB, ep *endpoint, pkt []byte) outcome {
	tb.Helper()
	return e.runOn(tb, e.from, ep.ifindex, pkt)
}

// toWL runs calyx_to_wl on a frame the host sends into ep.
func (e *env) toWL(tb testing.TB, ep *endpoint, pkt []byte) outcome {
	tb.Helper()
	return e.runOn(tb, e.to, ep.ifindex, pkt)
}

// hit is one counter a run must have bumped by one packet of the input's
// length.
type hit struct {
	ep     *endpoint
	reason bpfmap.Reason
}

// sizedHit is a hit of one packet of a given length: a counter on the
// interface a resized packet went out of (to-workload after a decap).
type sizedHit struct {
	ep     *endpoint
	reason bpfmap.Reason
	bytes  int
}

// want asserts the verdict and that the counters changed by exactly hits
// (one packet, len(in) bytes each) and nothing else. The reasons it
// confirms count toward the coverage check in TestMain.
func (o outcome) want(tb testing.TB, verdict uint32, hits ...hit) {
	tb.Helper()
	sized := make([]sizedHit, len(hits))
	for i, h := range hits {
		sized[i] = sizedHit{h.ep, h.reason, len(o.in)}
	}
	o.wantSized(tb, verdict, sized...)
}

// wantSized is want with the byte count of each hit given.
func (o outcome) wantSized(tb testing.TB, verdict uint32, hits ...sizedHit) {
	tb.Helper()
	if o.verdict != verdict {
		tb.Errorf("verdict %s, want %s (counters moved: %s)", bpftest.VerdictName(o.verdict),
			bpftest.VerdictName(verdict), fmtCounters(o.delta))
	}
	want := make(map[bpfmap.CounterKey]bpfmap.Counter)
	for _, h := range hits {
		want[bpfmap.CounterKey{Ifindex: h.ep.idx(), Reason: h.reason}] = bpfmap.Counter{Packets: 1, Bytes: uint64(h.bytes)}
	}
	if !mapsEqual(o.delta, want) {
		tb.Errorf("counters moved by %s, want %s", fmtCounters(o.delta), fmtCounters(want))
		return
	}
	if o.verdict == verdict {
		for _, h := range hits {
			markSeen(h.reason)
		}
	}
}

// unchanged asserts the program left the packet as it was.
func (o outcome) unchanged(tb testing.TB) {
	tb.Helper()
	if !bytes.Equal(o.in, o.out) {
		tb.Errorf("packet changed:\n in  %x\n out %x", o.in, o.out)
	}
}

// mapsEqual says whether two maps hold the same entries.
func mapsEqual[K, V comparable](a, b map[K]V) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func fmtCounters(m map[bpfmap.CounterKey]bpfmap.Counter) string {
	if len(m) == 0 {
		return "{}"
	}
	var parts []string
	for k, v := range m {
		parts = append(parts, fmt.Sprintf("if%d/%s=%dp/%dB", k.Ifindex, k.Reason, v.Packets, v.Bytes))
	}
	sort.Strings(parts)
	return "{" + strings.Join(parts, " ") + "}"
}

// Reasons confirmed by a passing assertion, for the coverage check.
var (
	seenMu sync.Mutex
	seen   = map[bpfmap.Reason]bool{}
	bpfRan bool
)

func markSeen(r bpfmap.Reason) {
	seenMu.Lock()
	defer seenMu.Unlock()
	seen[r] = true
	bpfRan = true
}

// reasonsInC returns the CX_REASON_* names the programs count with
// (cx_verdict and friends, in every source but calyx.h, which defines
// them), minus CX_REASON_MAX.
func reasonsInC() ([]string, error) {
	files, err := filepath.Glob("*.[ch]")
	if err != nil {
		return nil, err
	}
	used := map[string]bool{}
	for _, f := range files {
		if f == "calyx.h" {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		for _, m := range regexp.MustCompile(`\bCX_REASON_([A-Z_]+)\b`).FindAllStringSubmatch(string(src), -1) {
			if m[1] != "MAX" && m[1] != "FIRST_DROP" {
				used[m[1]] = true
			}
		}
	}
	if len(used) == 0 {
		return nil, errors.New("no CX_REASON_ in the programs' sources")
	}
	out := make([]string, 0, len(used))
	for n := range used {
		out = append(out, n)
	}
	sort.Strings(out)
	return out, nil
}

// reasonEnum parses enum cx_reason in calyx.h: name → value.
func reasonEnum() (map[string]uint32, error) {
	src, err := os.ReadFile("calyx.h")
	if err != nil {
		return nil, err
	}
	body := regexp.MustCompile(`(?s)enum cx_reason \{(.*?)\};`).FindSubmatch(src)
	if body == nil {
		return nil, errors.New("enum cx_reason not found in calyx.h")
	}
	out := map[string]uint32{}
	for _, m := range regexp.MustCompile(`CX_REASON_([A-Z_]+)\s*=\s*(\d+)`).FindAllSubmatch(body[1], -1) {
		var v uint32
		fmt.Sscanf(string(m[2]), "%d", &v)
		out[string(m[1])] = v
	}
	delete(out, "MAX")
	return out, nil
}

// reasonByCName maps a C enumerator (without CX_REASON_) to bpfmap.Reason.
func reasonByCName(enum map[string]uint32, name string) (bpfmap.Reason, bool) {
	v, ok := enum[name]
	if !ok {
		return 0, false
	}
	r := bpfmap.Reason(v)
	return r, slices.Contains(bpfmap.Reasons(), r)
}

// checkReasonCoverage fails when a reason the C programs count was never
// confirmed by a test in this package. It runs only after a complete,
// passing run that actually ran BPF programs.
func checkReasonCoverage() error {
	names, err := reasonsInC()
	if err != nil {
		return err
	}
	enum, err := reasonEnum()
	if err != nil {
		return err
	}
	var missing []string
	for _, n := range names {
		r, ok := reasonByCName(enum, n)
		if !ok {
			missing = append(missing, "CX_REASON_"+n+" (no bpfmap.Reason)")
			continue
		}
		if !seen[r] {
			missing = append(missing, fmt.Sprintf("%s (CX_REASON_%s)", r, n))
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("reasons counted by the programs that no test asserted: %s", strings.Join(missing, ", "))
	}
	return nil
}

func TestMain(m *testing.M) {
	code := m.Run()
	if code != 0 || testing.Short() || partialRun() {
		os.Exit(code)
	}
	seenMu.Lock()
	ran := bpfRan
	seenMu.Unlock()
	if !ran {
		// Every BPF test skipped (requireBPF): nothing to check.
		os.Exit(code)
	}
	if err := checkReasonCoverage(); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: reason coverage:", err)
		os.Exit(1)
	}
	fmt.Println("reason coverage: every reason counted by the programs was asserted by a test")
	os.Exit(code)
}

// partialRun reports whether -run, -skip or -fuzz narrowed the run, in
// which case not every test ran and coverage says nothing.
func partialRun() bool {
	for _, name := range []string{"test.run", "test.skip", "test.fuzz"} {
		if f := flag.Lookup(name); f != nil && f.Value.String() != "" {
			return true
		}
	}
	return false
}

// tunnelEnv is the underlay added by newTunnelEnv:
//
//	ul   veth ulh/ulp, 10.30.0.10/24: the underlay (cx_config points at it)
//	ul2  veth ul2h/ul2p, 10.31.0.10/24: a second uplink the FIB never picks
//	nodeA   10.30.0.20  on-link, permanent neighbour: FIB SUCCESS
//	nodeB   10.30.0.21  on-link, no neighbour: FIB NO_NEIGH
//	nodeC   10.40.0.30  behind router 10.30.0.1 (permanent neighbour)
//	nodeX   10.99.0.20  no route at all: FIB fails
//
// Each is a RouteNode in cx_routes; e.block(node, encap) adds a remote
// workload block owned by node and reached with encap. Forwarding is on in
// the namespace (bpf_fib_lookup says FWD_DISABLED otherwise).
type tunnelEnv struct {
	ul, ul2                    *endpoint // ip4: the interface's address; mac: its peer's
	nodeA, nodeB, nodeC, nodeX *remoteNode
	router                     *remoteNode
	cfg                        bpfmap.NodeConfig
	blocks                     map[blockKey]netip.Prefix
}

// remoteNode is another node as the underlay sees it.
type remoteNode struct {
	name string
	addr netip.Addr
	// l2 is the MAC the FIB gives for it (its own or its router's), nil
	// when the neighbour is unknown.
	l2 net.HardwareAddr
}

type blockKey struct {
	node  *remoteNode
	encap bpfmap.Encap
}

const (
	testVNI       = 0x00c0ca
	testVXLANPort = 4789
	underlayMTU   = 1500
)

func newTunnelEnv(tb testing.TB) *env {
	tb.Helper()
	e := newEnv(tb)
	ns := e.ns
	for _, s := range []string{"net.ipv4.ip_forward", "net.ipv4.conf.all.forwarding", "net.ipv4.conf.default.forwarding"} {
		must(tb, ns.Sysctl(s, "1"))
	}
	tun := &tunnelEnv{blocks: map[blockKey]netip.Prefix{}}
	e.tun = tun
	mkUL := func(name string, n byte, addr netip.Prefix) *endpoint {
		v, err := ns.AddVeth(name+"h", name+"p", mac(n, 0xee), mac(n, 0x01))
		must(tb, err)
		must(tb, ns.AddAddr(v.Name, addr))
		return &endpoint{name: name, ifindex: v.Ifindex, hostMAC: v.MAC, mac: v.PeerMAC, ip4: addr.Addr()}
	}
	tun.ul = mkUL("ul", 0x10, netip.MustParsePrefix("10.30.0.10/24"))
	tun.ul2 = mkUL("ul2", 0x11, netip.MustParsePrefix("10.31.0.10/24"))
	if tun.ul.ip4 != hostAddr {
		tb.Fatalf("underlay address %s is not hostAddr %s", tun.ul.ip4, hostAddr)
	}
	node := func(name, addr string, l2 net.HardwareAddr) *remoteNode {
		n := &remoteNode{name: name, addr: netip.MustParseAddr(addr), l2: l2}
		must(tb, e.dp.Maps.Routes.Put(netip.PrefixFrom(n.addr, 32), bpfmap.Route{Type: bpfmap.RouteNode}))
		return n
	}
	tun.router = &remoteNode{name: "router", addr: netip.MustParseAddr("10.30.0.1"), l2: mac(0x01, 0xbb)}
	tun.nodeA = node("nodeA", "10.30.0.20", mac(0x20, 0xbb))
	tun.nodeB = node("nodeB", "10.30.0.21", nil)
	tun.nodeC = node("nodeC", "10.40.0.30", tun.router.l2)
	tun.nodeX = node("nodeX", "10.99.0.20", nil)
	must(tb, ns.AddNeigh("ulh", tun.nodeA.addr, tun.nodeA.l2))
	must(tb, ns.AddNeigh("ulh", tun.router.addr, tun.router.l2))
	must(tb, ns.AddRoute("ulh", netip.MustParsePrefix("10.40.0.0/24"), tun.router.addr))
	tun.cfg = bpfmap.NodeConfig{Address: hostAddr, UnderlayIfindex: tun.ul.idx(), UnderlayMTU: underlayMTU,
		VXLANVNI: testVNI, VXLANPort: testVXLANPort}
	must(tb, e.dp.Maps.Config.Put(0, tun.cfg))
	return e
}

// block returns the address .5 of a /26 of remote workloads on node
// reached with encap, adding the route on first use.
func (e *env) block(tb testing.TB, node *remoteNode, encap bpfmap.Encap) netip.Addr {
	tb.Helper()
	k := blockKey{node, encap}
	p, ok := e.tun.blocks[k]
	if !ok {
		p = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 66, byte(len(e.tun.blocks)), 0}), 26)
		must(tb, e.dp.Maps.Routes.Put(p, bpfmap.Route{Type: bpfmap.RouteRemoteWorkload, Encap: encap, NextHop: node.addr}))
		e.tun.blocks[k] = p
	}
	return p.Addr().Next().Next().Next().Next().Next()
}

// fromUL runs calyx_from_underlay on a frame received on the underlay.
func (e *env) fromUL(tb testing.TB, pkt []byte) outcome {
	tb.Helper()
	return e.runOn(tb, e.ulIngress, e.tun.ul.ifindex, pkt)
}

// nodeL2 is the Ethernet header of a frame from node (or its router) to
// this host's underlay.
func (e *env) nodeL2(n *remoteNode) bpftest.L2 {
	src := n.l2
	if src == nil {
		src = mac(0x21, 0xbb)
	}
	return bpftest.L2{Src: src, Dst: e.tun.ul.hostMAC}
}

// hostL2 is the Ethernet header of a frame the host stack sends out of
// the underlay (to its router).
func (e *env) hostL2() bpftest.L2 {
	return bpftest.L2{Src: e.tun.ul.hostMAC, Dst: e.tun.router.l2}
}
