// Package loader loads calyx's BPF collection once, pins its maps under the
// --bpffs directory, and attaches the programs to interfaces with TCX links
// (kernel 6.6+) or clsact filters.
//
// Pinned state lives under one directory: maps at <dir>/<map>_v<layout
// version>, TCX links at <dir>/links/tcx_<ifindex>_<hook> (bpffs refuses '.'
// in names, and the interface name is in the cx_links record). A new Load
// adopts the pinned maps (their contents survive) or migrates those of an
// earlier layout (pins.go, migrate.go), and Attach swaps the programs of
// existing links atomically with link.Update, so a restart or upgrade drops
// no packet.
package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/calyxnet/calyx/bpf"
	"github.com/calyxnet/calyx/bpfmap"
)

// Dataplane is the loaded collection: programs plus the pinned maps.
type Dataplane struct {
	dir  string
	objs bpf.CalyxObjects
	Maps *bpfmap.Maps
	// pins: what the load adopted and the migrations it started (nil
	// without a pin directory).
	pins *pinSet
	// previous: while migrating, the program each link ran before this
	// Dataplane swapped it, by link pin (a clsact filter's by
	// "clsact/<ifindex>/<parent>", with the filter in previousFilters),
	// for Revert.
	previous        map[string]*ebpf.Program
	previousFilters []previousFilter
}

// EnsureBPFFS makes sure dir exists on a bpffs. The default location under
// /sys/fs/bpf is mounted when nothing is mounted there yet; any other
// directory must already be on a bpffs (KERNEL-NOTES: `ip netns exec`
// remounts /sys, so agents in namespaces keep their pins elsewhere).
func EnsureBPFFS(dir string) error {
	parent := filepath.Dir(filepath.Clean(dir))
	if !isBPFFS(parent) && !isBPFFS(dir) {
		if parent != "/sys/fs/bpf" {
			return fmt.Errorf("%s is not on a bpffs: mount one with 'mount -t bpf bpf %s'", dir, parent)
		}
		if err := unix.Mount("bpf", parent, "bpf", 0, "mode=0700"); err != nil {
			return fmt.Errorf("mount bpffs on %s: %w", parent, err)
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, "links"), 0o700); err != nil {
		return fmt.Errorf("create pin directory: %w", err)
	}
	if !isBPFFS(dir) {
		return fmt.Errorf("%s is not on a bpffs", dir)
	}
	return nil
}

func isBPFFS(path string) bool {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return false
	}
	return uint32(st.Type) == unix.BPF_FS_MAGIC
}

// Load loads the programs and opens or creates the maps pinned under dir,
// each as "<map>_v<layout version>" (bpfmap.PinName). Maps pinned at this
// build's versions keep their contents. Pins of an older layout are
// migrated: a map of the same layout is adopted, one of another is made
// anew with every entry converted (or, derived from the model, refilled by
// the agent); the old pins stay until FinishMigration, and Revert undoes
// it. Pins of a newer layout (a downgrade), or of an older one with state
// and no conversion, fail the load naming them, and nothing changes. A
// pinned map of this build's version but another layout fails with an
// error wrapping ebpf.ErrMapIncompatible: never a silent flush. With dir
// "" nothing is pinned (tests, benchmarks): the maps live as long as the
// Dataplane. Requires CAP_BPF and CAP_NET_ADMIN.
func Load(dir string) (*Dataplane, error) { return LoadWith(dir, Options{}) }

// Options tune a load.
type Options struct {
	// Capacities size maps by pinned name (model.ConfigSpec.MapCapacities;
	// a map not named keeps its compiled-in size). A rebuildable map
	// pinned with another size is made anew (the agent fills it before
	// the programs switch to it); the conntrack table keeps its pinned
	// size: resizing it would drop every flow it tracks, so a new size
	// takes effect only once its pin is gone.
	Capacities map[string]uint32
	// Logf, when set, is told what the load changed (rebuilt or resized
	// maps).
	Logf func(format string, args ...any)
}

// LoadWith is Load with options.
func LoadWith(dir string, o Options) (*Dataplane, error) {
	logf := o.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	spec, err := bpf.LoadCalyx()
	if err != nil {
		return nil, fmt.Errorf("load collection spec: %w", err)
	}
	for name, n := range o.Capacities {
		ms, ok := spec.Maps[name]
		if !ok {
			return nil, fmt.Errorf("size map %s: no such map", name)
		}
		if n > 0 {
			ms.MaxEntries = n
		}
	}
	dp := &Dataplane{dir: dir}
	opts := &ebpf.CollectionOptions{}
	if dir != "" {
		if err := EnsureBPFFS(dir); err != nil {
			return nil, err
		}
		pins, err := planPins(dir, spec, logf)
		if err != nil {
			pins.close()
			return nil, err
		}
		dp.pins = pins
		opts.MapReplacements = pins.replace
	}
	// The loader pins the maps itself (pins.go): under versioned names,
	// and only once the load has succeeded.
	for _, m := range spec.Maps {
		m.Pinning = ebpf.PinNone
	}
	if err := spec.LoadAndAssign(&dp.objs, opts); err != nil {
		dp.closePins()
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("load programs: %+v", ve)
		}
		if errors.Is(err, ebpf.ErrMapIncompatible) {
			return nil, fmt.Errorf("pinned maps in %s have another layout (delete them or migrate): %w", dir, err)
		}
		return nil, fmt.Errorf("load programs: %w", err)
	}
	dp.Maps = bpfmap.FromObjects(&dp.objs.CalyxMaps)
	if dp.pins == nil {
		return dp, nil
	}
	// The first pass of every conversion, then the pins: a failure in
	// either leaves the directory as it was.
	err = dp.convert(false)
	if err == nil {
		err = dp.pins.publish(dp.pinnedMaps(spec))
	}
	if err != nil {
		if uerr := dp.pins.unpublish(); uerr != nil {
			err = errors.Join(err, uerr)
		}
		dp.Close()
		return nil, err
	}
	for name, m := range dp.pins.replace {
		m.Close() // the collection holds its own clones
		delete(dp.pins.replace, name)
	}
	for _, mg := range dp.pins.migrations {
		logf("pinned map %s (layout v%d) migrates to %s (v%d): %s", filepath.Base(mg.oldPath), mg.from,
			bpfmap.PinName(mg.name), mg.to, mg.kind)
	}
	return dp, nil
}

// pinnedMaps returns the loaded maps that spec pins by name, by name.
func (dp *Dataplane) pinnedMaps(spec *ebpf.CollectionSpec) map[string]*ebpf.Map {
	out := map[string]*ebpf.Map{}
	for name, mp := range bpfmap.ObjectMaps(&dp.objs.CalyxMaps) {
		if _, ok := spec.Maps[name]; ok && bpfmap.Version(name) != 0 {
			out[name] = mp
		}
	}
	return out
}

func (dp *Dataplane) closePins() {
	if dp.pins != nil {
		dp.pins.close()
		dp.pins = nil
	}
}

// Dir is the pin directory.
func (dp *Dataplane) Dir() string { return dp.dir }

// Close releases the file descriptors. Pinned maps and links stay, and so
// does the traffic they carry (a migration not finished resumes with the
// next load).
func (dp *Dataplane) Close() error {
	dp.releasePrevious()
	dp.closePins()
	return dp.objs.Close()
}

// Role says which programs an interface carries.
type Role int

// Interface roles.
const (
	// RoleWorkload is the host side of a workload's tap/veth:
	// calyx_from_wl on ingress, calyx_to_wl on egress.
	RoleWorkload Role = iota
	// RoleUnderlay is the host's underlay interface: calyx_from_underlay
	// (decapsulation, direct delivery) on ingress, calyx_to_underlay (the
	// host's own traffic to remote workloads) on egress.
	RoleUnderlay
)

func (r Role) String() string {
	if r == RoleUnderlay {
		return "underlay"
	}
	return "workload"
}

// Program returns the program that runs on a hook of an interface of role r.
func (dp *Dataplane) Program(r Role, h Hook) *ebpf.Program { return dp.program(r, h) }

func (dp *Dataplane) program(r Role, h Hook) *ebpf.Program {
	switch {
	case r == RoleUnderlay && h == HookIngress:
		return dp.objs.CalyxFromUnderlay
	case r == RoleUnderlay:
		return dp.objs.CalyxToUnderlay
	case h == HookIngress:
		return dp.objs.CalyxFromWl
	}
	return dp.objs.CalyxToWl
}

// ProgramName is the name of the program on hook h of an interface of role
// r, as bpftool and tc show it.
func ProgramName(r Role, h Hook) string {
	switch {
	case r == RoleUnderlay && h == HookIngress:
		return "calyx_from_underlay"
	case r == RoleUnderlay:
		return "calyx_to_underlay"
	case h == HookIngress:
		return "calyx_from_wl"
	}
	return "calyx_to_wl"
}

// ProgramID returns the kernel ID of the program on a hook, for records
// and calyxctl.
func (dp *Dataplane) ProgramID(r Role, h Hook) uint32 {
	info, err := dp.program(r, h).Info()
	if err != nil {
		return 0
	}
	id, _ := info.ID()
	return uint32(id)
}

// Hook is where on an interface a program runs.
type Hook string

// The two hooks of an interface.
const (
	HookIngress Hook = "ingress" // from-workload, from-underlay
	HookEgress  Hook = "egress"  // to-workload, to-underlay
)

// Hooks lists both hooks in attach order.
var Hooks = []Hook{HookIngress, HookEgress}

func (dp *Dataplane) linkPin(ifindex int, h Hook) string {
	return filepath.Join(dp.dir, "links", fmt.Sprintf("tcx_%d_%s", ifindex, h))
}

// PinnedLink is a TCX link found among the pins.
type PinnedLink struct {
	Ifindex int
	Hook    Hook
	Path    string
}

// PinnedLinks lists the TCX link pins under dir/links.
func PinnedLinks(dir string) ([]PinnedLink, error) {
	ents, err := os.ReadDir(filepath.Join(dir, "links"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list link pins: %w", err)
	}
	var out []PinnedLink
	for _, e := range ents {
		parts := strings.Split(e.Name(), "_")
		if len(parts) != 3 || parts[0] != "tcx" {
			continue
		}
		idx, err := strconv.Atoi(parts[1])
		if err != nil {
			continue
		}
		out = append(out, PinnedLink{Ifindex: idx, Hook: Hook(parts[2]), Path: filepath.Join(dir, "links", e.Name())})
	}
	return out, nil
}
