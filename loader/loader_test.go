package loader_test

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/calyxnet/calyx/bpf"
	"github.com/calyxnet/calyx/bpfmap"
	"github.com/calyxnet/calyx/loader"
)

// requirePrivileges fails under CI (where BPF and netns must work) and
// skips elsewhere when the test cannot run.
func requirePrivileges(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatal("CI: loader tests need root (BPF, bpffs, network namespaces)")
	}
	t.Skip("not root: loader tests need BPF and network namespaces (they fail instead under CI)")
}

// inNewNetns runs the test on a locked thread inside a fresh network
// namespace with one veth pair, and puts everything back afterwards.
func inNewNetns(t *testing.T) (ifindex int) {
	t.Helper()
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	ns, err := netns.New()
	if err != nil {
		t.Fatalf("new netns: %v", err)
	}
	t.Cleanup(func() {
		netns.Set(orig)
		ns.Close()
		orig.Close()
		runtime.UnlockOSThread()
	})
	la := netlink.NewLinkAttrs()
	la.Name = "cxldr0"
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: "cxldr1"}); err != nil {
		t.Fatalf("add veth: %v", err)
	}
	l, err := netlink.LinkByName("cxldr0")
	if err != nil {
		t.Fatal(err)
	}
	return l.Attrs().Index
}

func mountBPFFS(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("bpf", dir, "bpf", 0, ""); err != nil {
		t.Fatalf("mount bpffs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	return filepath.Join(dir, "calyx")
}

func TestLoadAdoptsPinnedMapsAndLinks(t *testing.T) {
	requirePrivileges(t)
	for _, mode := range []loader.Mode{loader.ModeTCX, loader.ModeClsact} {
		t.Run(string(mode), func(t *testing.T) {
			ifindex := inNewNetns(t)
			dir := mountBPFFS(t)

			dp, err := loader.Load(dir)
			if err != nil {
				t.Fatal(err)
			}
			p := netip.MustParsePrefix("10.65.0.2/32")
			want := bpfmap.Route{Type: bpfmap.RouteLocalWorkload, Ifindex: uint32(ifindex), MAC: bpfmap.MAC{2, 0, 0, 0, 0, 1}}
			if err := dp.Maps.Routes.Put(p, want); err != nil {
				t.Fatal(err)
			}
			got, err := dp.Attach("cxldr0", ifindex, loader.RoleWorkload, mode)
			if err != nil {
				t.Fatal(err)
			}
			if got.String() != string(mode) {
				t.Fatalf("attached with %s, asked for %s", got, mode)
			}
			firstID := dp.ProgramID(loader.RoleWorkload, loader.HookIngress)
			dp.Close()

			// A second load (a restarted or upgraded agent) sees the same
			// map contents and swaps the programs in place.
			dp2, err := loader.Load(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer dp2.Close()
			routes, err := dp2.Maps.Routes.All()
			if err != nil {
				t.Fatal(err)
			}
			if routes[p] != want {
				t.Fatalf("route after reload = %+v, want %+v", routes[p], want)
			}
			if _, err := dp2.Attach("cxldr0", ifindex, loader.RoleWorkload, mode); err != nil {
				t.Fatal(err)
			}
			secondID := dp2.ProgramID(loader.RoleWorkload, loader.HookIngress)
			if secondID == firstID {
				t.Fatal("reload did not load a new program")
			}
			if running := ingressProgramID(t, dir, mode, ifindex); running != secondID {
				t.Fatalf("ingress runs program %d, want the new %d", running, secondID)
			}
			pins, err := loader.PinnedLinks(dir)
			if err != nil {
				t.Fatal(err)
			}
			if mode == loader.ModeTCX && len(pins) != 2 {
				t.Fatalf("tcx pins = %v, want ingress and egress", pins)
			}
			if mode == loader.ModeClsact && len(pins) != 0 {
				t.Fatalf("clsact left tcx pins %v", pins)
			}

			if err := dp2.Detach("cxldr0", ifindex); err != nil {
				t.Fatal(err)
			}
			if running := ingressProgramID(t, dir, mode, ifindex); running != 0 {
				t.Fatalf("program %d still attached after detach", running)
			}
			if pins, _ := loader.PinnedLinks(dir); len(pins) != 0 {
				t.Fatalf("pins left after detach: %v", pins)
			}
		})
	}
}

// ingressProgramID asks the kernel what runs on the ingress hook. For TCX
// it goes through our pin: link IDs are global and ifindexes repeat across
// namespaces, so a scan of all links could find another namespace's.
func ingressProgramID(t *testing.T, dir string, mode loader.Mode, ifindex int) uint32 {
	t.Helper()
	if mode == loader.ModeTCX {
		pins, err := loader.PinnedLinks(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range pins {
			if p.Ifindex != ifindex || p.Hook != loader.HookIngress {
				continue
			}
			l, err := link.LoadPinnedLink(p.Path, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			info, err := l.Info()
			if err != nil {
				t.Fatal(err)
			}
			if tcx := info.TCX(); tcx == nil || int(tcx.Ifindex) != ifindex {
				t.Fatalf("pinned link %s is not a TCX link on ifindex %d", p.Path, ifindex)
			}
			return uint32(info.Program)
		}
		return 0
	}
	filters, err := netlink.FilterList(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Index: ifindex}}, netlink.HANDLE_MIN_INGRESS)
	if err != nil {
		return 0
	}
	for _, f := range filters {
		if bf, ok := f.(*netlink.BpfFilter); ok {
			return uint32(bf.Id)
		}
	}
	return 0
}

func TestLoadRejectsDirOutsideBPFFS(t *testing.T) {
	requirePrivileges(t)
	if _, err := loader.Load(filepath.Join(t.TempDir(), "calyx")); err == nil {
		t.Fatal("loading with pins on a non-bpffs directory must fail")
	}
}

func TestParseMode(t *testing.T) {
	for _, ok := range []string{"auto", "tcx", "clsact"} {
		if _, err := loader.ParseMode(ok); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	if _, err := loader.ParseMode("xdp"); err == nil {
		t.Error("xdp accepted as a TC attach mode")
	}
}

// A pinned conntrack table keeps its size (resizing would drop its flows);
// a map the agent derives from the model is replaced when its layout
// changed, and the other pins are adopted as they are.
// pinNewMap creates a map of ms, pins it at path (on a bpffs) and returns
// it, closed when the test ends; the pin stays.
func pinNewMap(t *testing.T, ms *ebpf.MapSpec, path string) *ebpf.Map {
	t.Helper()
	m, err := ebpf.NewMap(ms)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	if err := m.Pin(path); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestLoadAdoptsConntrackSizeAndRebuildsDerivedMaps(t *testing.T) {
	requirePrivileges(t)
	dir := mountBPFFS(t)

	dp, err := loader.LoadWith(dir, loader.Options{Capacities: map[string]uint32{bpf.CalyxMapCxCt: 1024, bpf.CalyxMapCxPolicy: 4096}})
	if err != nil {
		t.Fatal(err)
	}
	if got := dp.Maps.ConntrackCapacity(); got != 1024 {
		t.Fatalf("conntrack capacity %d, want 1024", got)
	}
	if got := dp.Maps.Policy.Capacity(); got != 4096 {
		t.Fatalf("cx_policy capacity %d, want 4096", got)
	}
	route := netip.MustParsePrefix("10.65.0.2/32")
	if err := dp.Maps.Routes.Put(route, bpfmap.Route{Type: bpfmap.RouteHost}); err != nil {
		t.Fatal(err)
	}
	dp.Close()

	// An older build's cx_config: another value size.
	cfgPin := filepath.Join(dir, bpfmap.PinName(bpf.CalyxMapCxConfig))
	if err := os.Remove(cfgPin); err != nil {
		t.Fatal(err)
	}
	pinNewMap(t, &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1}, cfgPin)

	var notes []string
	// Asked for other sizes: the conntrack table keeps its own, cx_policy
	// (derived from the model) is made anew at the new size.
	dp, err = loader.LoadWith(dir, loader.Options{Capacities: map[string]uint32{bpf.CalyxMapCxCt: 4096, bpf.CalyxMapCxPolicy: 8192},
		Logf: func(f string, a ...any) {
			notes = append(notes, fmt.Sprintf(f, a...))
		}})
	if err != nil {
		t.Fatalf("load over an older cx_config: %v", err)
	}
	defer dp.Close()
	if got := dp.Maps.ConntrackCapacity(); got != 1024 {
		t.Errorf("conntrack capacity %d after asking for 4096, want the pinned 1024", got)
	}
	if _, err := dp.Maps.NodeConfig(); err != nil {
		t.Errorf("rebuilt cx_config unreadable: %v", err)
	}
	if _, ok, err := dp.Maps.LookupRoute(route.Addr()); err != nil || !ok {
		t.Errorf("route in the adopted cx_routes lost (found %v, err %v)", ok, err)
	}
	if got := dp.Maps.Policy.Capacity(); got != 8192 {
		t.Errorf("cx_policy capacity %d after asking for 8192, want it made anew at that size", got)
	}
	if len(notes) != 3 {
		t.Errorf("load notes %q, want one for the kept conntrack size, one for the rebuilt cx_config and one for the resized cx_policy", notes)
	}
	if _, err := loader.LoadWith("", loader.Options{Capacities: map[string]uint32{"cx_nothing": 1}}); err == nil ||
		!strings.Contains(err.Error(), "cx_nothing") {
		t.Errorf("sizing a map that does not exist: %v, want an error naming it", err)
	}
}

// A full map refuses a new key with bpfmap.ErrTableFull, whether it is an
// LPM trie (ENOSPC) or a hash (E2BIG); a key already there is replaced.
func TestTableFull(t *testing.T) {
	requirePrivileges(t)
	dp, err := loader.LoadWith("", loader.Options{Capacities: map[string]uint32{bpf.CalyxMapCxRoutes: 2, bpf.CalyxMapCxFips: 2}})
	if err != nil {
		t.Fatal(err)
	}
	defer dp.Close()
	for i := range 3 {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 65, 0, byte(i)}), 32)
		err := dp.Maps.Routes.Put(p, bpfmap.Route{Type: bpfmap.RouteHost})
		if i < 2 && err != nil || i == 2 && !errors.Is(err, bpfmap.ErrTableFull) {
			t.Errorf("route %d of a table of 2: %v", i+1, err)
		}
		a := netip.AddrFrom4([4]byte{192, 0, 2, byte(i)})
		err = dp.Maps.FIPs.Put(a, bpfmap.FloatingIP{})
		if i < 2 && err != nil || i == 2 && !errors.Is(err, bpfmap.ErrTableFull) {
			t.Errorf("floating IP %d of a table of 2: %v", i+1, err)
		}
	}
	if err := dp.Maps.Routes.Put(netip.MustParsePrefix("10.65.0.0/32"), bpfmap.Route{Type: bpfmap.RoutePool}); err != nil {
		t.Errorf("replacing an entry of a full table: %v", err)
	}
}
