package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/cilium/ebpf"

	"github.com/calyxnet/calyx/bpfmap"
)

// A pin set is what the loader found under the pin directory and decided
// for each of this build's maps before it loads the programs. Every map
// calyx pins carries its layout version in its pin name
// (bpfmap.PinName): a build adopts only pins of its own versions, converts
// older ones into new maps (migrate.go), and refuses newer ones. Nothing
// on disk changes until the programs have loaded and the first conversion
// pass has succeeded (publish); until the migration is finished the old
// pins stay, so an agent that stops half-way leaves a directory the next
// one can resume from, and a revert leaves the old layout as it was.
type pinSet struct {
	dir string
	// replace: maps adopted (pinned ones, of this build's layout), by
	// map name; the load uses them instead of creating new ones.
	replace map[string]*ebpf.Map
	// migrations: maps whose previous pin (an older version, or the
	// unversioned name of builds before versions) goes once the
	// migration is finished.
	migrations []*mapMigration
	// swapOut: pins of this build's version that a new map replaces
	// (a rebuildable map of another size or layout); kept open so that a
	// revert can pin them back.
	swapOut map[string]*ebpf.Map
	// published: the pins this load made, removed again by a revert;
	// unpinned: the swapOut maps whose pins publish removed, pinned back
	// by a revert.
	published []string
	unpinned  []string
}

// Migration kinds.
const (
	// MigrateRename: the layout is unchanged, only the pin's name
	// (builds before versioned pin names): the map is adopted as it is
	// and pinned under its new name too.
	MigrateRename = "rename"
	// MigrateConvert: a new map, with every entry of the old one
	// converted into it, twice: at the load, and once every link runs
	// this build's programs (what the previous programs wrote between).
	MigrateConvert = "convert"
	// MigrateRebuild: a new, empty map of a rebuildable kind; the agent
	// fills it from the model before it swaps the programs.
	MigrateRebuild = "rebuild"
)

// mapMigration is one map's way from a pin of a previous layout to this
// build's.
type mapMigration struct {
	name    string
	from    uint32 // the previous pin's layout version
	to      uint32
	kind    string
	oldPath string
	old     *ebpf.Map
	// resumed: this build's pin was there already (an agent of this
	// build stopped before it finished the migration): a conversion
	// merges into what the map holds instead of filling it.
	resumed bool
	conv    converter
	// state is the converter's own, between its two passes.
	state  any
	result MigrationResult
}

// MapMigration reports one map's migration.
type MapMigration struct {
	Map    string
	From   uint32 // the layout version found pinned
	To     uint32 // this build's
	Kind   string // MigrateRename, MigrateConvert or MigrateRebuild
	Result MigrationResult
}

func (mg *mapMigration) report() MapMigration {
	return MapMigration{Map: mg.name, From: mg.from, To: mg.to, Kind: mg.kind, Result: mg.result}
}

func (p *pinSet) close() {
	for _, m := range p.replace {
		m.Close()
	}
	for _, m := range p.swapOut {
		m.Close()
	}
	for _, mg := range p.migrations {
		if mg.old != nil {
			mg.old.Close()
		}
	}
}

// planPins decides, for every map of spec that is pinned by name, whether
// the load adopts its pin, migrates a previous one or creates it anew. It
// opens what it adopts and changes nothing on disk. A pin of a newer
// layout than this build's (a downgrade), or of an older one with state
// this build cannot convert, fails the plan, naming the maps: nothing is
// changed and the programs running keep running.
func planPins(dir string, spec *ebpf.CollectionSpec, logf func(string, ...any)) (*pinSet, error) {
	p := &pinSet{dir: dir, replace: map[string]*ebpf.Map{}, swapOut: map[string]*ebpf.Map{}}
	pins, err := bpfmap.Pins(dir)
	if err != nil {
		return p, err
	}
	found := map[string][]bpfmap.Pin{}
	for _, pin := range pins {
		found[pin.Map] = append(found[pin.Map], pin)
	}
	var newer, lost []string
	names := make([]string, 0, len(spec.Maps))
	for name, ms := range spec.Maps {
		if ms.Pinning == ebpf.PinByName {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	for _, name := range names {
		ms := spec.Maps[name]
		want := bpfmap.Version(name)
		if want == 0 {
			return p, fmt.Errorf("map %s is pinned by the programs but has no entry in bpfmap's list", name)
		}
		cur := filepath.Join(dir, bpfmap.PinName(name))
		var prev *bpfmap.Pin
		curFound := false
		for i, f := range found[name] {
			switch {
			case f.Version > want:
				newer = append(newer, fmt.Sprintf("%s (v%d, this build v%d)", filepath.Base(f.Path), f.Version, want))
			case f.Path == cur:
				curFound = true
			case prev == nil || f.Version > prev.Version:
				prev = &found[name][i]
			}
		}
		if curFound {
			m, err := ebpf.LoadPinnedMap(cur, nil)
			if err != nil {
				return p, fmt.Errorf("open pinned map %s: %w", cur, err)
			}
			keep, err := adoptable(name, ms, m, logf)
			if err != nil {
				m.Close()
				return p, err
			}
			if keep {
				p.replace[name] = m
			} else {
				p.swapOut[name] = m
			}
		}
		if prev == nil {
			continue
		}
		mg := &mapMigration{name: name, from: prev.Version, to: want, oldPath: prev.Path, resumed: curFound}
		switch conv := converterFor(name, prev.Version); {
		case prev.Version == want:
			mg.kind = MigrateRename
		case conv != nil:
			mg.kind, mg.conv = MigrateConvert, conv
		case bpfmap.Rebuildable(name):
			mg.kind = MigrateRebuild
		default:
			lost = append(lost, fmt.Sprintf("%s (v%d, this build v%d)", filepath.Base(prev.Path), prev.Version, want))
			continue
		}
		if mg.kind != MigrateRebuild {
			if mg.old, err = ebpf.LoadPinnedMap(prev.Path, nil); err != nil {
				return p, fmt.Errorf("open pinned map %s: %w", prev.Path, err)
			}
		}
		if mg.kind == MigrateRename && curFound && p.replace[name] != nil && !sameMap(p.replace[name], mg.old) {
			// Two maps of one layout: not a rename this build began (that
			// pins one map twice) but a downgrade's leftovers, this
			// build's pin left behind while a release before versioned
			// pin names ran on its own. The running release's map wins.
			logf("pinned map %s is not %s: left by this build before a downgrade; replaced by %s, which the running programs use",
				bpfmap.PinName(name), filepath.Base(prev.Path), filepath.Base(prev.Path))
			p.swapOut[name] = p.replace[name]
			delete(p.replace, name)
			curFound, mg.resumed = false, false
		}
		if mg.kind == MigrateRename && !curFound {
			if _, err := adoptable(name, ms, mg.old, logf); err != nil {
				return p, fmt.Errorf("%s: %w", prev.Path, err)
			}
			// The same map, adopted: it is pinned under its
			// versioned name too when the load publishes.
			m, err := mg.old.Clone()
			if err != nil {
				return p, fmt.Errorf("adopt pinned map %s: %w", prev.Path, err)
			}
			p.replace[name] = m
		}
		p.migrations = append(p.migrations, mg)
	}
	switch {
	case len(newer) > 0:
		return p, fmt.Errorf("pins in %s are of a newer layout than this build knows: %s; run the newer agent, or decommission with its --cleanup first (a downgrade cannot convert what it does not know)",
			dir, strings.Join(newer, ", "))
	case len(lost) > 0:
		return p, fmt.Errorf("pins in %s are of an older layout this build has no conversion for, and they hold state: %s; upgrade through a build that converts them",
			dir, strings.Join(lost, ", "))
	}
	return p, nil
}

// adoptable says whether pinned map m can serve as this build's map name
// (spec ms): of the same layout and size. A conntrack table of another
// size is adopted at its own (ms changes to it: resizing would drop every
// flow); a rebuildable map of another size or layout is not (false: the
// load makes it anew, the agent refills it before the programs swap);
// any other map of another layout is an error wrapping
// ebpf.ErrMapIncompatible, since its state would be lost.
func adoptable(name string, ms *ebpf.MapSpec, m *ebpf.Map, logf func(string, ...any)) (bool, error) {
	same := m.Type() == ms.Type && m.KeySize() == ms.KeySize && m.ValueSize() == ms.ValueSize && m.Flags() == ms.Flags
	entries := m.MaxEntries()
	switch {
	case same && entries == ms.MaxEntries:
		return true, nil
	case same && (name == bpfmap.CTName || name == bpfmap.NATName):
		logf("conntrack table %s keeps its pinned size %d (asked for %d): resizing would drop every flow", name, entries, ms.MaxEntries)
		ms.MaxEntries = entries
		return true, nil
	case bpfmap.Rebuildable(name):
		if same {
			logf("pinned map %s holds at most %d entries, the Config asks for %d: made anew at that size; the agent refills it before the programs are swapped", name, entries, ms.MaxEntries)
		} else {
			logf("pinned map %s had another layout: replaced; the agent refills it before the programs are swapped", name)
		}
		return false, nil
	}
	return false, fmt.Errorf("pinned map %s has another layout than this build's v%d (%v key %d value %d, want %v key %d value %d): a layout change without a new version: %w",
		name, bpfmap.Version(name), m.Type(), m.KeySize(), m.ValueSize(), ms.Type, ms.KeySize, ms.ValueSize, ebpf.ErrMapIncompatible)
}

// sameMap says whether a and b are one kernel map (pinned twice).
func sameMap(a, b *ebpf.Map) bool {
	if a == nil || b == nil {
		return false
	}
	ia, err1 := a.Info()
	ib, err2 := b.Info()
	if err1 != nil || err2 != nil {
		return false
	}
	ida, ok1 := ia.ID()
	idb, ok2 := ib.ID()
	return ok1 && ok2 && ida == idb
}

// publish pins the maps this load created, and the ones it adopted from a
// pin of the same layout under their versioned names. A map that
// replaces one of this build's pins (swapOut) takes its place. On error
// what was pinned so far is still recorded, for the revert.
func (p *pinSet) publish(maps map[string]*ebpf.Map) error {
	names := make([]string, 0, len(maps))
	for name := range maps {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		path := filepath.Join(p.dir, bpfmap.PinName(name))
		_, replacing := p.swapOut[name]
		if _, ok := p.replace[name]; ok && !replacing {
			if _, err := os.Stat(path); err == nil {
				continue // adopted where it is
			}
		}
		if replacing {
			if err := os.Remove(path); err != nil {
				return fmt.Errorf("replace pinned map %s: %w", path, err)
			}
			p.unpinned = append(p.unpinned, name)
		}
		m, err := maps[name].Clone()
		if err != nil {
			return fmt.Errorf("pin map %s: %w", path, err)
		}
		err = m.Pin(path)
		m.Close()
		if err != nil {
			return fmt.Errorf("pin map %s: %w", path, err)
		}
		p.published = append(p.published, path)
	}
	return nil
}

// unpublish removes the pins publish made and pins back the ones it
// replaced: the directory is as the load found it.
func (p *pinSet) unpublish() error {
	var errs []error
	for _, path := range p.published {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove pin %s: %w", path, err))
		}
	}
	p.published = nil
	for _, name := range p.unpinned {
		path := filepath.Join(p.dir, bpfmap.PinName(name))
		c, err := p.swapOut[name].Clone()
		if err == nil {
			err = c.Pin(path)
			c.Close()
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("pin back %s: %w", path, err))
		}
	}
	p.unpinned = nil
	return errors.Join(errs...)
}
