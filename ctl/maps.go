package ctl

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
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
	pins, err := bpfmap.Pins(o.BPFFS)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("no pins in %s: no agent has run with that --bpffs", o.BPFFS)
	}
	if err != nil {
		return err
	}
	current := map[string]bool{} // this build's pin of the map is there
	for _, p := range pins {
		if filepath.Base(p.Path) == bpfmap.PinName(p.Map) {
			current[p.Map] = true
		}
	}
	var rows []mapRow
	for _, p := range pins {
		file := filepath.Base(p.Path)
		r := mapRow{Map: p.Map, Pin: file, Version: p.Version, Build: bpfmap.Version(p.Map)}
		switch {
		case file == bpfmap.PinName(p.Map):
			r.State = pinCurrent
		case p.Version > r.Build:
			r.State = pinNewer
		case current[p.Map]:
			r.State = pinMigrating
		default:
			r.State = pinOlder
		}
		m, err := ebpf.LoadPinnedMap(p.Path, &ebpf.LoadPinOptions{ReadOnly: true})
		if err != nil {
			return fmt.Errorf("open pinned map %s: %w", p.Path, err)
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
