package loader_test

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/calyxnet/calyx/bpf"
	"github.com/calyxnet/calyx/bpfmap"
	"github.com/calyxnet/calyx/loader"
)

// previousRelease leaves dir as the release before versioned pin names
// left it: every map of layout v1 pinned under its bare name (cx_ct_v2 and
// cx_nat_v2 had theirs already), cx_event_budget in layout
// v1 (32-bit suppressed counts, CPU i's at 1000+i), a route in cx_routes,
// and that release's programs on the veth's TCX hooks. It returns the
// ingress program's ID.
func previousRelease(t *testing.T, dir string, ifindex int, mode loader.Mode) (route netip.Prefix, oldProg uint32) {
	t.Helper()
	dp, err := loader.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer dp.Close()
	route = netip.MustParsePrefix("10.65.0.2/32")
	if err := dp.Maps.Routes.Put(route, bpfmap.Route{Type: bpfmap.RouteLocalWorkload, Ifindex: uint32(ifindex), MAC: bpfmap.MAC{2, 0, 0, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if _, err := dp.Attach("cxldr0", ifindex, loader.RoleWorkload, mode); err != nil {
		t.Fatal(err)
	}
	oldProg = dp.ProgramID(loader.RoleWorkload, loader.HookIngress)
	for _, name := range bpfmap.Names() {
		if bpfmap.Version(name) != 1 {
			continue
		}
		if err := os.Rename(filepath.Join(dir, bpfmap.PinName(name)), filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Remove(filepath.Join(dir, bpfmap.PinName(bpf.CalyxMapCxEventBudget))); err != nil {
		t.Fatal(err)
	}
	v1 := pinNewMap(t, &ebpf.MapSpec{Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 16, MaxEntries: 1},
		filepath.Join(dir, bpf.CalyxMapCxEventBudget))
	n, err := ebpf.PossibleCPU()
	if err != nil {
		t.Fatal(err)
	}
	vals := make([]windowV1, n)
	for i := range vals {
		vals[i] = windowV1{WindowNs: 1, Sent: 3, Suppressed: uint32(1000 + i)}
	}
	if err := v1.Put(uint32(0), vals); err != nil {
		t.Fatal(err)
	}
	return route, oldProg
}

type windowV1 struct {
	WindowNs   uint64
	Sent       uint32
	Suppressed uint32
}

func pinsIn(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if !e.IsDir() {
			out = append(out, e.Name())
		}
	}
	return out
}

func suppressed(t *testing.T, dp *loader.Dataplane) uint64 {
	t.Helper()
	n, err := dp.Maps.EventsSuppressed()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// An agent of this build over the previous release's pins: maps of an
// unchanged layout are adopted under their versioned names (their entries
// are the same objects), cx_event_budget is converted from v1, the old
// pins stay until every link runs this build's programs, and a load that
// stopped before it finished (an agent killed mid-migration) is resumed
// by the next one. Then the old pins are gone and the counts carried on,
// the previous programs' latest included.
func TestUpgradeFromUnversionedPins(t *testing.T) {
	requirePrivileges(t)
	ifindex := inNewNetns(t)
	dir := mountBPFFS(t)
	route, oldProg := previousRelease(t, dir, ifindex, loader.ModeTCX)
	cpus, _ := ebpf.PossibleCPU()
	var want uint64
	for i := range cpus {
		want += uint64(1000 + i)
	}

	// A first agent loads and stops before its first sync.
	dp, err := loader.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	for _, mg := range dp.Migrations() {
		kinds[mg.Kind]++
	}
	if kinds[loader.MigrateRename] != len(bpfmap.Names())-3 || kinds[loader.MigrateConvert] != 1 || len(dp.Migrations()) != len(bpfmap.Names())-2 {
		t.Errorf("migrations %+v, want every map of v1 renamed, cx_event_budget converted, cx_ct and cx_nat adopted as they are", dp.Migrations())
	}
	if got := suppressed(t, dp); got != want {
		t.Errorf("suppressed after the conversion: %d, want the v1 map's %d", got, want)
	}
	dp.Close()

	dp, err = loader.Load(dir)
	if err != nil {
		t.Fatalf("resume the migration: %v", err)
	}
	defer dp.Close()
	if !dp.Migrating() {
		t.Fatal("the second load does not resume the migration")
	}
	if _, ok, err := dp.Maps.LookupRoute(route.Addr()); err != nil || !ok {
		t.Errorf("route in the adopted cx_routes: found %v, %v", ok, err)
	}
	if _, err := dp.FinishMigration(); !errors.Is(err, loader.ErrLinksNotSwapped) {
		t.Errorf("finish before the swap: %v, want ErrLinksNotSwapped", err)
	}
	if _, err := dp.Attach("cxldr0", ifindex, loader.RoleWorkload, loader.ModeTCX); err != nil {
		t.Fatal(err)
	}
	if running := ingressProgramID(t, dir, loader.ModeTCX, ifindex); running == oldProg {
		t.Fatal("the link still runs the previous program")
	}
	// The previous programs suppressed 5 more events on CPU 0 before the
	// swap.
	old, err := ebpf.LoadPinnedMap(filepath.Join(dir, bpf.CalyxMapCxEventBudget), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	vals := make([]windowV1, cpus)
	if err := old.Lookup(uint32(0), &vals); err != nil {
		t.Fatal(err)
	}
	vals[0].Suppressed += 5
	if err := old.Put(uint32(0), vals); err != nil {
		t.Fatal(err)
	}
	done, err := dp.FinishMigration()
	if err != nil || len(done) != len(bpfmap.Names())-2 {
		t.Fatalf("finish: %d maps, %v", len(done), err)
	}
	if got := suppressed(t, dp); got != want+5 {
		t.Errorf("suppressed after the second pass: %d, want %d (a resumed migration keeps each CPU's larger count)", got, want+5)
	}
	var wantPins []string
	for _, name := range bpfmap.Names() {
		wantPins = append(wantPins, bpfmap.PinName(name))
	}
	slices.Sort(wantPins)
	if got := pinsIn(t, dir); !slices.Equal(got, wantPins) {
		t.Errorf("pins after the migration %q, want %q", got, wantPins)
	}
	if _, ok, err := dp.Maps.LookupRoute(route.Addr()); err != nil || !ok {
		t.Errorf("route after the migration: found %v, %v", ok, err)
	}
	dp.Close()

	// Down to the previous release and up again: that release pinned a
	// cx_ct_stats of its own beside this build's (left behind); the next
	// load takes the running release's.
	spec, err := bpf.LoadCalyx()
	if err != nil {
		t.Fatal(err)
	}
	ms := spec.Maps[bpf.CalyxMapCxCtStats].Copy()
	ms.Pinning = ebpf.PinNone
	theirs := pinNewMap(t, ms, filepath.Join(dir, bpf.CalyxMapCxCtStats))
	dp, err = loader.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer dp.Close()
	if _, err := dp.Attach("cxldr0", ifindex, loader.RoleWorkload, loader.ModeTCX); err != nil {
		t.Fatal(err)
	}
	if _, err := dp.FinishMigration(); err != nil {
		t.Fatal(err)
	}
	pinnedID := func(pin string) ebpf.MapID {
		m, err := ebpf.LoadPinnedMap(filepath.Join(dir, pin), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		info, _ := m.Info()
		id, _ := info.ID()
		return id
	}
	info, _ := theirs.Info()
	if want, _ := info.ID(); pinnedID(bpfmap.PinName(bpf.CalyxMapCxCtStats)) != want {
		t.Errorf("after a downgrade and back, %s is not the map the previous release ran with", bpfmap.PinName(bpf.CalyxMapCxCtStats))
	}
}

// A migration whose second pass fails reverts: the links (TCX links or
// clsact filters) run the previous programs again, this build's pins are
// gone and the previous ones are as they were, so that the previous agent
// (or a fixed build) carries on.
func TestMigrationRevertsOnFailure(t *testing.T) {
	requirePrivileges(t)
	for _, mode := range []loader.Mode{loader.ModeTCX, loader.ModeClsact} {
		t.Run(string(mode), func(t *testing.T) {
			ifindex := inNewNetns(t)
			dir := mountBPFFS(t)
			_, oldProg := previousRelease(t, dir, ifindex, mode)
			before := pinsIn(t, dir)

			restore := loader.FailFinalPass(bpf.CalyxMapCxEventBudget, 1)
			defer restore()
			dp, err := loader.Load(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer dp.Close()
			if _, err := dp.Attach("cxldr0", ifindex, loader.RoleWorkload, mode); err != nil {
				t.Fatal(err)
			}
			if running := ingressProgramID(t, dir, mode, ifindex); running == oldProg {
				t.Fatal("the attach did not swap the program")
			}
			if _, err := dp.FinishMigration(); err == nil || !strings.Contains(err.Error(), "injected failure") {
				t.Fatalf("finish: %v, want the injected failure", err)
			}
			if running := ingressProgramID(t, dir, mode, ifindex); running != oldProg {
				t.Errorf("ingress runs program %d after the revert, want the previous %d", running, oldProg)
			}
			if got := pinsIn(t, dir); !slices.Equal(got, before) {
				t.Errorf("pins after the revert %q, want the previous release's %q", got, before)
			}
			restore()
			dp.Close()
			// The directory migrates as if nothing had happened.
			dp2, err := loader.Load(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer dp2.Close()
			if _, err := dp2.Attach("cxldr0", ifindex, loader.RoleWorkload, mode); err != nil {
				t.Fatal(err)
			}
			if _, err := dp2.FinishMigration(); err != nil {
				t.Fatalf("migration after the revert: %v", err)
			}
		})
	}
}

// Pins this build cannot take over fail the load, naming them, and change
// nothing: a newer layout (a downgrade), and an older one with state and
// no conversion.
func TestLoadRefusesLayoutsItCannotMigrate(t *testing.T) {
	requirePrivileges(t)
	for _, c := range []struct{ pin, want string }{
		{bpfmap.PinNameOf(bpf.CalyxMapCxCounters, 9), "newer layout"},
		{bpf.CalyxMapCxNat, "no conversion"},
	} {
		t.Run(c.pin, func(t *testing.T) {
			dir := mountBPFFS(t)
			if err := loader.EnsureBPFFS(dir); err != nil {
				t.Fatal(err)
			}
			pinNewMap(t, &ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 4, MaxEntries: 1}, filepath.Join(dir, c.pin))
			_, err := loader.Load(dir)
			if err == nil || !strings.Contains(err.Error(), c.pin+" ") || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("load over %s: %v, want an error naming it (%s)", c.pin, err, c.want)
			}
			if got := pinsIn(t, dir); !slices.Equal(got, []string{c.pin}) {
				t.Errorf("pins after the refused load %q, want only %s", got, c.pin)
			}
		})
	}
}
