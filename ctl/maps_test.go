package ctl

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/calyxnet/calyx/bpf"
	"github.com/calyxnet/calyx/bpfmap"
)

// calyxctl maps lists every pin with its layout version and what it is to
// this build: this build's, an older one beside this build's (a migration
// in progress), an older one alone, a newer one.
func TestMapsShowsLayoutVersions(t *testing.T) {
	dir, _ := loadedDataplane(t, "maps' test")
	pin := func(name string) {
		t.Helper()
		m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 4, MaxEntries: 7})
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		if err := m.Pin(filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	pin(bpf.CalyxMapCxRoutes)                           // an older pin beside this build's
	pin(bpfmap.PinNameOf(bpf.CalyxMapCxCounters, 9))    // a newer one
	pin(bpfmap.PinNameOf(bpf.CalyxMapCxEventBudget, 1)) // an older version beside this build's
	pin("not_a_map")                                    // not calyx's: not listed
	// An older pin alone: this build's is not there.
	if err := os.Remove(filepath.Join(dir, bpfmap.PinName(bpf.CalyxMapCxFips))); err != nil {
		t.Fatal(err)
	}
	pin(bpf.CalyxMapCxFips)
	r := run(t, t.TempDir(), "", "--bpffs", dir, "-o", "json", "maps")
	if r.code != 0 {
		t.Fatalf("maps: %d %s", r.code, r.err)
	}
	var rows []mapRow
	if err := json.Unmarshal([]byte(r.out), &rows); err != nil {
		t.Fatalf("%v: %s", err, r.out)
	}
	state := map[string]mapRow{}
	for _, row := range rows {
		state[row.Pin] = row
	}
	if len(rows) != len(bpfmap.Names())+3 {
		t.Errorf("%d rows, want one per map of this build and the 3 others: %+v", len(rows), rows)
	}
	for pin, want := range map[string]string{
		bpfmap.PinName(bpf.CalyxMapCxRoutes):           pinCurrent,
		bpf.CalyxMapCxRoutes:                           pinMigrating,
		bpfmap.PinNameOf(bpf.CalyxMapCxCounters, 9):    pinNewer,
		bpfmap.PinNameOf(bpf.CalyxMapCxEventBudget, 1): pinMigrating,
		bpfmap.PinName(bpf.CalyxMapCxEventBudget):      pinCurrent,
		bpf.CalyxMapCxFips:                             pinOlder,
	} {
		if got := state[pin]; got.State != want {
			t.Errorf("%s: %+v, want state %q", pin, got, want)
		}
	}
	if got := state[bpfmap.PinName(bpf.CalyxMapCxEventBudget)]; got.Version != 2 || got.Build != 2 || got.Type != "PerCPUArray" {
		t.Errorf("cx_event_budget_v2: %+v", got)
	}
	if got := state[bpf.CalyxMapCxRoutes]; got.Version != 1 || got.MaxEntries != 7 {
		t.Errorf("cx_routes (unversioned): %+v, want version 1 and its 7 entries", got)
	}
}
