package ctl

import (
	"errors"
	"fmt"
	"os"
	"sort"

	"github.com/cilium/ebpf"

	"github.com/calyxnet/calyx/bpfmap"
)

// mapRow is one pinned map of calyx's, as calyxctl maps shows it.
type mapRow struct {
	Map     string `json:"map" table:"MAP"`
	Pin     string `json:"pin" table:"PIN"`
	Version uint32 `json:"version" table:"VERSION"`
	// Build is this calyxctl's layout version of the map.
	Build      uint32 `json:"build" table:"BUILD"`
	Type       string `json:"type" table:"TYPE"`
	MaxEntries uint32 `json:"maxEntries" table:"MAX-ENTRIES"`
	State      string `json:"state" table:"STATE"`
}

// Pin states, from this build's point of view.
const (
	pinCurrent   = "current"
	pinMigrating = "old: migrating" // an older layout beside this build's: an agent is migrating it
	pinOlder     = "older"          // an older layout alone: an agent of an earlier release runs
	pinNewer     = "newer"          // a newer layout than this build knows
)

// mapsCmd lists the maps pinned under the --bpffs directory with their
// layout versions, from the pin names (it opens each read-only for its type
// and size): during an upgrade it shows which maps are migrating.
func mapsCmd(o Options, stdio IO) error {
	ents, err := os.ReadDir(o.BPFFS)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("no pins in %s: no agent has run with that --bpffs", o.BPFFS)
	}
	if err != nil {
		return fmt.Errorf("list pins in %s: %w", o.BPFFS, err)
	}
	versions := map[string]map[uint32]bool{}
	for _, e := range ents {
		if name, v, ok := bpfmap.ParsePin(e.Name()); ok && !e.IsDir() {
			if versions[name] == nil {
				versions[name] = map[uint32]bool{}
			}
			versions[name][v] = true
		}
	}
	var rows []mapRow
	for _, e := range ents {
		name, v, ok := bpfmap.ParsePin(e.Name())
		if !ok || e.IsDir() {
			continue
		}
		r := mapRow{Map: name, Pin: e.Name(), Version: v, Build: bpfmap.Version(name)}
		switch {
		case v == r.Build && e.Name() == bpfmap.PinName(name):
			r.State = pinCurrent
		case v > r.Build:
			r.State = pinNewer
		case versions[name][r.Build] && e.Name() != bpfmap.PinName(name):
			r.State = pinMigrating
		default:
			r.State = pinOlder
		}
		m, err := ebpf.LoadPinnedMap(o.BPFFS+"/"+e.Name(), &ebpf.LoadPinOptions{ReadOnly: true})
		if err != nil {
			return fmt.Errorf("open pinned map %s: %w", e.Name(), err)
		}
		r.Type, r.MaxEntries = m.Type().String(), m.MaxEntries()
		m.Close()
		rows = append(rows, r)
	}
	sort.Slice(rows, func(i, j int) bool {
		if rows[i].Map != rows[j].Map {
			return rows[i].Map < rows[j].Map
		}
		return rows[i].Version < rows[j].Version
	})
	return render(stdio.Out, o.Output, rows)
}
