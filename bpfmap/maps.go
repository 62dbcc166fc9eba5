package bpfmap

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"

	"github.com/calyxnet/calyx/bpf"
)

// Map names used outside this package (maps.h's; their pins carry the
// layout version too, see PinName).
const (
	CTName    = bpf.CalyxMapCxCt
	NATName   = bpf.CalyxMapCxNat
	FragsName = bpf.CalyxMapCxFrags
)

// spec declares one pinned map: its name (maps.h's), its layout version,
// whether the agent may rebuild it, and where Maps keeps it. The layout is
// calyx.h's; the domain types and their converters are in types.go and
// policy.go; the conversions from a pinned map of an older version are
// loader's (migrate.go).
type spec struct {
	name string
	// version is the layout's: it is in the pin's name (PinName), so
	// that an agent never adopts a pinned map whose bytes mean something
	// else, even at the same sizes. A change to the map's type, key,
	// value or the meaning of either takes the next version (layout_test
	// holds each version to its layout), and a map with state of its own
	// needs a conversion from the previous one.
	version uint32
	// rebuildable: the map holds only what the agent derives from the
	// model and the host, so a pinned one of another layout may be
	// replaced by an empty one that the agent fills before it swaps the
	// programs. Maps with state of their own (conntrack, counters, leases,
	// link records) are never replaced silently.
	rebuildable bool
	bind        func(m *Maps, b backing)
}

// specs is every map calyx pins, declared once. Adding a map is its C
// declaration and an entry here (plus a step in agent/mapsync when the
// agent fills it from the model).
var specs = []spec{
	{bpf.CalyxMapCxConfig, 1, true, func(m *Maps, b backing) { m.Config = newTable(b, configCodec) }},
	{bpf.CalyxMapCxPrefilter, 1, true, func(m *Maps, b backing) { m.Prefilter = newTable(b, prefilterCodec) }},
	{bpf.CalyxMapCxPolicy, 1, true, func(m *Maps, b backing) { m.Policy = newTable(b, policyCodec) }},
	{bpf.CalyxMapCxIpcache, 1, true, func(m *Maps, b backing) { m.IPCache = newTable(b, ipcacheCodec) }},
	{bpf.CalyxMapCxIfaces, 1, true, func(m *Maps, b backing) { m.Ifaces = newTable(b, ifaceCodec) }},
	{bpf.CalyxMapCxFips, 1, true, func(m *Maps, b backing) { m.FIPs = newTable(b, fipCodec) }},
	{bpf.CalyxMapCxRoutes, 1, true, func(m *Maps, b backing) { m.Routes = newTable(b, routeCodec) }},
	{bpf.CalyxMapCxEndpoints, 1, true, func(m *Maps, b backing) { m.Endpoints = newTable(b, endpointCodec) }},
	{bpf.CalyxMapCxLinks, 1, true, func(m *Maps, b backing) { m.Links = newTable(b, linkCodec) }},
	{bpf.CalyxMapCxCounters, 1, false, func(m *Maps, b backing) { m.counters = b.mp }},
	{bpf.CalyxMapCxSlotCounters, 1, false, func(m *Maps, b backing) { m.slotCounters = b.mp }},
	{bpf.CalyxMapCxCt, 2, false, func(m *Maps, b backing) { m.ct = b.mp }},
	{bpf.CalyxMapCxNat, 2, false, func(m *Maps, b backing) { m.nat = b.mp }},
	{bpf.CalyxMapCxFrags, 1, false, func(m *Maps, b backing) { m.frags = b.mp }},
	{bpf.CalyxMapCxCtStats, 1, false, func(m *Maps, b backing) { m.ctStats = b.mp }},
	{bpf.CalyxMapCxPolicyHits, 1, false, func(m *Maps, b backing) { m.hits = b.mp }},
	{bpf.CalyxMapCxPolicyLog, 1, false, func(m *Maps, b backing) { m.log = b.mp }},
	{bpf.CalyxMapCxEventBudget, 2, false, func(m *Maps, b backing) { m.budget = b.mp }},
	{bpf.CalyxMapCxDropLog, 1, false, func(m *Maps, b backing) { m.drops = b.mp }},
	{bpf.CalyxMapCxLeases, 1, false, func(m *Maps, b backing) { m.leases = b.mp }},
}

// Names lists every map calyx pins.
func Names() []string {
	out := make([]string, len(specs))
	for i, s := range specs {
		out[i] = s.name
	}
	return out
}

// Version returns the layout version of map name (0: no map of calyx's).
func Version(name string) uint32 {
	for _, s := range specs {
		if s.name == name {
			return s.version
		}
	}
	return 0
}

// PinName is the file map name is pinned as under the --bpffs directory:
// its name and its layout version, "cx_routes_v1". bpffs allows no '.'.
func PinName(name string) string { return PinNameOf(name, Version(name)) }

// PinNameOf is the pin of version v of map name.
func PinNameOf(name string, v uint32) string { return name + "_v" + strconv.FormatUint(uint64(v), 10) }

// parsePin says which map and layout version the pin file is: "<map>_v<N>"
// for version N, or a bare "<map>", which builds before versioned pin
// names left (their layouts are version 1). ok is false for a file that is
// no map of calyx's.
func parsePin(file string) (name string, version uint32, ok bool) {
	if i := strings.LastIndex(file, "_v"); i > 0 {
		if v, err := strconv.ParseUint(file[i+2:], 10, 32); err == nil && v > 0 && Version(file[:i]) != 0 {
			return file[:i], uint32(v), true
		}
	}
	if Version(file) != 0 {
		return file, 1, true
	}
	return "", 0, false
}

// Pin is a file in the pin directory that is one of calyx's maps, of any
// layout version.
type Pin struct {
	Path    string
	Map     string // its name in maps.h
	Version uint32 // its layout version (parsePin)
}

// Pins lists the pins of calyx's maps in dir, every version, in file name
// order; other files are not listed. A missing dir is an error wrapping
// os.ErrNotExist.
func Pins(dir string) ([]Pin, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list pins in %s: %w", dir, err)
	}
	var out []Pin
	for _, e := range ents {
		if name, v, ok := parsePin(e.Name()); ok && !e.IsDir() {
			out = append(out, Pin{Path: filepath.Join(dir, e.Name()), Map: name, Version: v})
		}
	}
	return out, nil
}

// Rebuildable says whether the pinned map name holds only what the agent
// derives from the model and the host (see spec.rebuildable).
func Rebuildable(name string) bool {
	for _, s := range specs {
		if s.name == name {
			return s.rebuildable
		}
	}
	return false
}

// Maps is the set of calyx maps, either loaded with the programs (agent) or
// opened from their pins (calyxctl). The tables the agent fills from the
// model are fields; maps with state of their own have methods.
type Maps struct {
	Config    *Table[uint32, NodeConfig] // one entry, key 0
	Prefilter *Table[netip.Prefix, struct{}]
	Policy    *Table[PolicyKey, PolicyVerdict]
	IPCache   *Table[netip.Prefix, IPCacheEntry]
	Ifaces    *Table[uint32, Iface]
	FIPs      *Table[netip.Addr, FloatingIP]
	Routes    *Table[netip.Prefix, Route]
	Endpoints *Table[uint32, EndpointStatus] // by endpoint id
	Links     *Table[uint32, Link]           // the agent's attach records, by ifindex

	counters, slotCounters, ct, nat, frags, ctStats, hits, log, budget, drops, leases *ebpf.Map

	all   []*ebpf.Map
	owned bool
}

// FromObjects wraps maps loaded by the loader; Close does not close them.
// It panics when objs lacks a map of the list, which only a build whose
// maps.h and specs disagree can do.
func FromObjects(objs *bpf.CalyxMaps) *Maps {
	byName := ObjectMaps(objs)
	m := &Maps{}
	for _, s := range specs {
		mp := byName[s.name]
		if mp == nil {
			panic(fmt.Sprintf("bpfmap: the loaded objects have no map %s", s.name))
		}
		s.bind(m, backing{name: s.name, mp: mp})
		m.all = append(m.all, mp)
	}
	return m
}

// ObjectMaps returns the loaded objects' maps by their name in maps.h.
func ObjectMaps(objs *bpf.CalyxMaps) map[string]*ebpf.Map {
	byName := map[string]*ebpf.Map{}
	v := reflect.ValueOf(objs).Elem()
	for i := range v.NumField() {
		if mp, ok := v.Field(i).Interface().(*ebpf.Map); ok {
			byName[v.Type().Field(i).Tag.Get("ebpf")] = mp
		}
	}
	return byName
}

// NewMemory returns Maps whose tables live in Go maps, not in the kernel:
// for tests of what fills them (agent/mapsync). hook, when set, is asked
// before every write ("put" or "delete", the table's name, the key), and
// its error refuses it; sizes caps tables by name (none: unbounded), which
// refuse a new key beyond it with ErrTableFull as a full map does. The maps
// with state of their own are absent.
func NewMemory(hook func(op, table string, key any) error, sizes map[string]int) *Maps {
	m := &Maps{}
	for _, s := range specs {
		s.bind(m, backing{name: s.name, hook: hook, memSize: sizes[s.name]})
	}
	return m
}

// OpenPinned opens every map pinned under dir. It fails, naming the map,
// when one is missing (no agent has run with that --bpffs).
func OpenPinned(dir string) (*Maps, error) { return openPinned(dir, true) }

// OpenPinnedWritable is OpenPinned for a caller that changes the maps
// (calyxctl ct flush).
func OpenPinnedWritable(dir string) (*Maps, error) { return openPinned(dir, false) }

func openPinned(dir string, readOnly bool) (*Maps, error) {
	m := &Maps{owned: true}
	for _, s := range specs {
		pin := PinNameOf(s.name, s.version)
		mp, err := ebpf.LoadPinnedMap(filepath.Join(dir, pin), &ebpf.LoadPinOptions{ReadOnly: readOnly})
		if err != nil {
			m.Close()
			if errors.Is(err, os.ErrNotExist) {
				if other := otherVersions(dir, s.name); other != "" {
					return nil, fmt.Errorf("open pinned map %s in %s: this build reads layout v%d, the directory holds %s (use the calyxctl of the agent that runs there): %w",
						pin, dir, s.version, other, err)
				}
			}
			return nil, fmt.Errorf("open pinned map %s in %s: %w", pin, dir, err)
		}
		s.bind(m, backing{name: s.name, mp: mp})
		m.all = append(m.all, mp)
	}
	return m, nil
}

// otherVersions names the pins of map name in dir of another layout
// version than this build's ("" for none).
func otherVersions(dir, name string) string {
	pins, _ := Pins(dir)
	var out []string
	for _, p := range pins {
		if p.Map == name && p.Version != Version(name) {
			out = append(out, fmt.Sprintf("%s (v%d)", filepath.Base(p.Path), p.Version))
		}
	}
	return strings.Join(out, ", ")
}

// Close releases maps opened by OpenPinned.
func (m *Maps) Close() error {
	if !m.owned {
		return nil
	}
	var errs []error
	for _, mp := range m.all {
		errs = append(errs, mp.Close())
	}
	return errors.Join(errs...)
}

// NodeConfig returns the node's entry of cx_config (the zero value before
// the agent first wrote it).
func (m *Maps) NodeConfig() (NodeConfig, error) {
	c, _, err := m.Config.Lookup(0)
	return c, err
}

// LookupRoute does what the programs do: a longest-prefix match for addr.
func (m *Maps) LookupRoute(addr netip.Addr) (Route, bool, error) {
	return m.Routes.Lookup(netip.PrefixFrom(addr, addr.BitLen()))
}

// Counters returns every counter summed over CPUs: cx_counters' and, for
// the interfaces with a counter slot (cx_ifaces, and the underlay of
// cx_config), cx_slot_counters'.
func (m *Maps) Counters() (map[CounterKey]Counter, error) {
	out := make(map[CounterKey]Counter)
	var k bpf.CalyxCxCounterKey
	var per []bpf.CalyxCxCounter
	it := m.counters.Iterate()
	for it.Next(&k, &per) {
		out[CounterKey{Ifindex: k.Ifindex, Reason: Reason(k.Reason)}] = sumCPUs(per)
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("iterate %s: %w", bpf.CalyxMapCxCounters, err)
	}
	owners, err := m.slotOwners()
	if err != nil {
		return nil, err
	}
	if len(owners) == 0 {
		return out, nil
	}
	err = m.eachSlotCounter(func(slot uint16, r Reason, c Counter) {
		if idx, ok := owners[slot]; ok && c != (Counter{}) {
			k := CounterKey{Ifindex: idx, Reason: r}
			o := out[k]
			out[k] = Counter{Packets: o.Packets + c.Packets, Bytes: o.Bytes + c.Bytes}
		}
	})
	return out, err
}

// Counter slots (cx_slot_counters): slot s holds the verdicts of reason
// r < SlotReasons at s*SlotReasons + r. CounterSlotUnderlay is the
// underlay's; the workload interfaces' are from FirstWorkloadCounterSlot up
// to CounterSlots, one each as long as they last, handed out by the agent.
const (
	SlotReasons              = Reason(bpf.CalyxCxReasonCX_REASON_DROP_MALFORMED) // the first drop
	CounterSlots             = uint16(bpf.CalyxCxCounterSlotCX_COUNTER_SLOTS)
	CounterSlotUnderlay      = uint16(bpf.CalyxCxCounterSlotCX_COUNTER_SLOT_UNDERLAY)
	FirstWorkloadCounterSlot = uint16(bpf.CalyxCxCounterSlotCX_COUNTER_SLOT_FIRST_WORKLOAD)
)

// slotOwners says which interface each counter slot in use counts for.
func (m *Maps) slotOwners() (map[uint16]uint32, error) {
	owners := map[uint16]uint32{}
	err := m.Ifaces.Each(func(idx uint32, v Iface) bool {
		if v.CounterSlot != 0 {
			owners[v.CounterSlot] = idx
		}
		return true
	})
	if err != nil {
		return nil, err
	}
	cfg, err := m.NodeConfig()
	if err != nil {
		return nil, err
	}
	if cfg.UnderlayIfindex != 0 {
		owners[CounterSlotUnderlay] = cfg.UnderlayIfindex
	}
	return owners, nil
}

// eachSlotCounter reads all of cx_slot_counters in batches, summed over CPUs.
func (m *Maps) eachSlotCounter(fn func(slot uint16, r Reason, c Counter)) error {
	const batch = 1024
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		return fmt.Errorf("read %s: %w", bpf.CalyxMapCxSlotCounters, err)
	}
	keys := make([]uint32, batch)
	vals := make([]bpf.CalyxCxCounter, batch*ncpu)
	var cursor ebpf.MapBatchCursor
	for {
		n, err := m.slotCounters.BatchLookup(&cursor, keys, vals, nil)
		for i := range n {
			slot, r := uint16(keys[i]/uint32(SlotReasons)), Reason(keys[i]%uint32(SlotReasons))
			fn(slot, r, sumCPUs(vals[i*ncpu:(i+1)*ncpu]))
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", bpf.CalyxMapCxSlotCounters, err)
		}
	}
}

// ZeroCounterSlot sets every count of slot to zero on every CPU. The agent
// calls it before an interface gets the slot, which another may have used.
func (m *Maps) ZeroCounterSlot(slot uint16) error {
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		return fmt.Errorf("zero %s slot %d: %w", bpf.CalyxMapCxSlotCounters, slot, err)
	}
	zero := make([]bpf.CalyxCxCounter, ncpu)
	for r := range uint32(SlotReasons) {
		if err := m.slotCounters.Put(uint32(slot)*uint32(SlotReasons)+r, zero); err != nil {
			return fmt.Errorf("zero %s slot %d: %w", bpf.CalyxMapCxSlotCounters, slot, err)
		}
	}
	return nil
}

// sumCPUs adds up a per-CPU counter.
func sumCPUs(per []bpf.CalyxCxCounter) Counter {
	var c Counter
	for _, v := range per {
		c.Packets += v.Packets
		c.Bytes += v.Bytes
	}
	return c
}

// DeleteCounters removes every counter of ifindex in cx_counters, so that
// a later interface that reuses the ifindex starts from zero. (A counter
// slot is zeroed when it is handed out again: ZeroCounterSlot.)
func (m *Maps) DeleteCounters(ifindex uint32) error {
	for _, r := range Reasons() {
		k := bpf.CalyxCxCounterKey{Ifindex: ifindex, Reason: uint32(r)}
		if err := m.counters.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete %s[%d/%s]: %w", bpf.CalyxMapCxCounters, ifindex, r, err)
		}
	}
	return nil
}

// Leases returns every address the agent's DHCP servers leased.
func (m *Maps) Leases() ([]Lease, error) {
	var out []Lease
	var k bpf.CalyxCxLeaseKey
	var v bpf.CalyxCxLease
	it := m.leases.Iterate()
	for it.Next(&k, &v) {
		out = append(out, leaseFromBPF(k, v))
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("iterate %s: %w", bpf.CalyxMapCxLeases, err)
	}
	return out, nil
}

// PutLease records l (keyed by its interface and family).
func (m *Maps) PutLease(l Lease) error {
	k, v := l.toBPF()
	if err := m.leases.Put(k, v); err != nil {
		return fmt.Errorf("put %s[%d/v%d]: %w", bpf.CalyxMapCxLeases, l.Ifindex, k.Family, err)
	}
	return nil
}

// DeleteLease removes the lease of family (4 or 6) on ifindex; a missing
// one is not an error.
func (m *Maps) DeleteLease(ifindex uint32, family uint32) error {
	k := bpf.CalyxCxLeaseKey{Ifindex: ifindex, Family: family}
	if err := m.leases.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete %s[%d/v%d]: %w", bpf.CalyxMapCxLeases, ifindex, family, err)
	}
	return nil
}
