package bpf_test

// What BPF_PROG_TEST_RUN does with an skb program on this kernel, pinned
// down as tests, because the program tests and benchmarks rely on it.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/calyxnet/calyx/bpf/bpftest"
	"github.com/calyxnet/calyx/bpfmap"
)

// The context's ifindex selects skb->dev among the devices of the running
// thread's namespace: unknown ones fail, 0 and 1 are loopback.
func TestHarnessContextIfindex(t *testing.T) {
	e := newEnv(t)
	pkt := udp4(e.wl1, e.wl1.ip4, internet, 64)
	if _, err := e.tryRun(t, e.from, 4000, pkt); !errors.Is(err, unix.ENODEV) {
		t.Errorf("ifindex 4000 (no such device): err %v, want ENODEV", err)
	}
	lo := &endpoint{name: "lo", ifindex: 1}
	for _, idx := range []int{0, 1} {
		o := e.runOn(t, e.from, idx, pkt)
		o.want(t, shot, hit{lo, bpfmap.ReasonDropNoEndpoint}) // counted under skb->ifindex 1
	}
	e.fromWL(t, e.wl1, pkt).want(t, ok, hit{e.wl1, bpfmap.ReasonPassHost})
	// The veths exist in the fixture's namespace only: the same ifindex
	// from this goroutine's thread (the test binary's namespace) is
	// another device or none.
	if l, err := netlink.LinkByName(e.wl1.name + "h"); err == nil {
		t.Errorf("%s is visible outside the fixture's namespace (index %d)", l.Attrs().Name, l.Attrs().Index)
	}
}

// Repeat runs the program again and again on the SAME skb: every
// iteration sees what the last one wrote. A forwarded packet loses one TTL
// per iteration and, once the L2 rewrite has put another source MAC in,
// fails a CheckMAC endpoint's MAC check. Benchmarks with Repeat > 1 must
// use paths that leave the packet as they found it (or stay on the same
// path when they don't); verdict and DataOut are the last iteration's.
func TestHarnessRepeatReusesSKB(t *testing.T) {
	e := newEnv(t)
	src := e.wl4 // no CheckMAC
	in := udp4(src, src.ip4, e.wl2.ip4, 64)
	delta, res := repeatRun(t, e, src, in, 100)
	n := uint64(len(in))
	want := map[bpfmap.CounterKey]bpfmap.Counter{
		{Ifindex: src.idx(), Reason: bpfmap.ReasonDeliverLocal}: {Packets: 63, Bytes: 63 * n},
		{Ifindex: e.wl2.idx(), Reason: bpfmap.ReasonToWorkload}: {Packets: 63, Bytes: 63 * n},
		{Ifindex: src.idx(), Reason: bpfmap.ReasonPassHost}:     {Packets: 37, Bytes: 37 * n},
	}
	if !mapsEqual(delta, want) {
		t.Errorf("100 runs on one skb from TTL 64 counted %s, want %s", fmtCounters(delta), fmtCounters(want))
	}
	if res.Verdict != ok || res.Out[14+8] != 1 {
		t.Errorf("last run: %s with TTL %d, want TC_ACT_OK with TTL 1", bpftest.VerdictName(res.Verdict), res.Out[14+8])
	}

	in = udp4(e.wl1, e.wl1.ip4, e.wl2.ip4, 64) // wl1 has CheckMAC
	delta, _ = repeatRun(t, e, e.wl1, in, 2)
	n = uint64(len(in))
	want = map[bpfmap.CounterKey]bpfmap.Counter{
		{Ifindex: e.wl1.idx(), Reason: bpfmap.ReasonDeliverLocal}: {Packets: 1, Bytes: n},
		{Ifindex: e.wl2.idx(), Reason: bpfmap.ReasonToWorkload}:   {Packets: 1, Bytes: n},
		{Ifindex: e.wl1.idx(), Reason: bpfmap.ReasonDropSpoofMAC}: {Packets: 1, Bytes: n},
	}
	if !mapsEqual(delta, want) {
		t.Errorf("2 runs on one skb from a CheckMAC endpoint counted %s, want %s", fmtCounters(delta), fmtCounters(want))
	}
}

// repeatRun runs calyx_from_wl repeat times on one skb and returns the
// counter change, trying again when a signal interrupted the loop (then
// the kernel ran part of it twice and the counters say so).
func repeatRun(t *testing.T, e *env, ep *endpoint, in []byte, repeat uint32) (map[bpfmap.CounterKey]bpfmap.Counter, bpftest.Result) {
	t.Helper()
	for range 10 {
		before := e.counters(t)
		res, err := e.ns.Run(e.from, bpftest.Input{Data: in, Ifindex: ep.ifindex, Repeat: repeat})
		if err != nil {
			t.Fatal(err)
		}
		if res.Interrupted == 0 {
			return counterDelta(before, e.counters(t)), res
		}
		t.Logf("interrupted %d times; again", res.Interrupted)
	}
	t.Fatal("every attempt was interrupted by a signal")
	return nil, bpftest.Result{}
}

// DataOut: the kernel copies min(len(DataOut), skb->len) bytes and fails
// with ENOSPC when the packet did not fit; a DataOut of length 0 but
// non-zero capacity is "no size hint" and the kernel writes the whole
// packet into it (cilium/ebpf panics if that overran the capacity).
// bpftest.Run always passes len(in)+256.
func TestHarnessDataOut(t *testing.T) {
	e := newEnv(t)
	in := udp4(e.wl1, e.wl1.ip4, internet, 64)
	run := func(out []byte) ([]byte, error) {
		var res []byte
		err := e.ns.Do(func() error {
			opts := &ebpf.RunOptions{Data: in, DataOut: out, Context: &bpftest.SkbCtx{Ifindex: uint32(e.wl1.ifindex)}}
			_, err := e.from.Run(opts)
			res = opts.DataOut
			return err
		})
		return res, err
	}
	if _, err := run(make([]byte, len(in)-1)); !errors.Is(err, unix.ENOSPC) {
		t.Errorf("DataOut one byte short: err %v, want ENOSPC", err)
	}
	for _, out := range [][]byte{make([]byte, len(in)), make([]byte, len(in)+100), make([]byte, 0, len(in)+100)} {
		got, err := run(out)
		if err != nil || len(got) != len(in) {
			t.Errorf("DataOut len %d cap %d: %d bytes back, err %v; want %d", len(out), cap(out), len(got), err, len(in))
		}
	}
	if got, err := run(nil); err != nil || len(got) != 0 {
		t.Errorf("no DataOut: %d bytes, err %v", len(got), err)
	}
}

// The fixture's namespace is gone after Close, and the caller's thread
// never left its own namespace.
func TestNetNSFixture(t *testing.T) {
	requireBPF(t)
	mine, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer mine.Close()
	ns, err := bpftest.NewNetNS()
	if err != nil {
		t.Fatal(err)
	}
	ino := ns.Inode()
	if _, err := ns.AddVeth("cxfix0", "cxfix1", nil, nil); err != nil {
		t.Fatal(err)
	}
	idx, err := ns.LinkIndex("cxfix0")
	if err != nil || idx == 0 {
		t.Fatalf("veth not found in the namespace: %v", err)
	}
	if _, err := net.InterfaceByName("cxfix0"); err == nil {
		t.Error("the veth leaked into the caller's namespace")
	}
	want := fmt.Sprintf("net:[%d]", ino)
	inNS := func() []string {
		tasks, _ := filepath.Glob("/proc/self/task/*/ns/net")
		var in []string
		for _, p := range tasks {
			if l, err := os.Readlink(p); err == nil && l == want {
				in = append(in, p)
			}
		}
		return in
	}
	if got := inNS(); len(got) != 1 {
		t.Fatalf("threads in the fixture's namespace %s: %v, want exactly one", want, got)
	}
	if err := ns.Close(); err != nil {
		t.Fatal(err)
	}
	if err := ns.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := ns.Do(func() error { return nil }); err == nil {
		t.Error("Do after Close succeeded")
	}
	now, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer now.Close()
	if !now.Equal(mine) {
		t.Errorf("the calling thread moved from %s to %s", mine, now)
	}
	// No thread of this process may still be in the namespace (the serving
	// thread exits once its goroutine returns; give it a moment).
	deadline := time.Now().Add(2 * time.Second)
	for {
		left := inNS()
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("threads still in the closed namespace %s: %v", want, left)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// bpftest.SkbCtx is struct __sk_buff: same size, the fields the tests set
// or read at the kernel's offsets (checked against the running kernel's BTF).
func TestHarnessSkbCtxLayout(t *testing.T) {
	var c bpftest.SkbCtx
	if got := binary.Size(c); got != int(unsafe.Sizeof(c)) {
		t.Fatalf("SkbCtx has implicit padding: binary.Size %d, unsafe.Sizeof %d", got, unsafe.Sizeof(c))
	}
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		// KERNEL-NOTES: the project's kernels have BTF; in CI its absence
		// is a failure, elsewhere a reason to skip.
		if os.Getenv("CI") != "" {
			t.Fatalf("no kernel BTF, and CI is set so this fails instead of skipping: %v", err)
		}
		t.Skipf("no kernel BTF (set CI=1 to fail instead of skip): %v", err)
	}
	var skb *btf.Struct
	if err := spec.TypeByName("__sk_buff", &skb); err != nil {
		t.Fatal(err)
	}
	if skb.Size != uint32(unsafe.Sizeof(c)) {
		t.Errorf("struct __sk_buff is %d bytes, SkbCtx %d", skb.Size, unsafe.Sizeof(c))
	}
	want := map[string]uintptr{
		"mark": unsafe.Offsetof(c.Mark), "priority": unsafe.Offsetof(c.Priority),
		"ingress_ifindex": unsafe.Offsetof(c.IngressIfindex), "ifindex": unsafe.Offsetof(c.Ifindex),
		"cb": unsafe.Offsetof(c.CB), "tstamp": unsafe.Offsetof(c.Tstamp), "wire_len": unsafe.Offsetof(c.WireLen),
		"gso_segs": unsafe.Offsetof(c.GSOSegs), "gso_size": unsafe.Offsetof(c.GSOSize),
		"hwtstamp": unsafe.Offsetof(c.HWTstamp),
	}
	for _, m := range skb.Members {
		if off, ok := want[m.Name]; ok {
			if uintptr(m.Offset.Bytes()) != off {
				t.Errorf("__sk_buff.%s at %d, SkbCtx at %d", m.Name, m.Offset.Bytes(), off)
			}
			delete(want, m.Name)
		}
	}
	if len(want) > 0 {
		t.Errorf("not in the kernel's __sk_buff: %v", want)
	}
}

// Mark and GSOSize reach the skb; the context comes back after the run.
func TestHarnessContextInOut(t *testing.T) {
	e := newTunnelEnv(t)
	in := bpftest.IPv4UDP(e.hostL2(), bpftest.IPv4{Src: hostAddr, Dst: internet}, 1, 2, nil)
	res, err := e.ns.Run(e.ulEgress, bpftest.Input{Data: in, Ifindex: e.tun.ul.ifindex, Mark: 0x77})
	if err != nil || res.Ctx.Mark != 0x77 || res.Ctx.Ifindex != uint32(e.tun.ul.ifindex) {
		t.Errorf("mark 0x77 in: err %v, context out %+v", err, res.Ctx)
	}
	res, err = e.ns.Run(e.ulEgress, bpftest.Input{Data: in, Ifindex: e.tun.ul.ifindex, GSOSize: 1400})
	if err != nil || res.Ctx.GSOSize != 1400 {
		t.Errorf("gso_size 1400 in: err %v, gso_size out %d", err, res.Ctx.GSOSize)
	}
}
