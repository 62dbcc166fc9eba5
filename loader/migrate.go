package loader

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"

	"github.com/calyxnet/calyx/bpf"
	"github.com/calyxnet/calyx/bpfmap"
	"github.com/calyxnet/calyx/conntrack"
)

// Conntrack of layout v1 (calyx up to the commit that split it, pinned as
// "cx_ct"): one map with an entry per direction of every flow, keyed as
// cx_nat is and valued as below. An agent of this build that finds it
// pinned moves its flows into cx_ct and cx_nat (v2) instead of dropping
// them: established connections, translated ones included, carry on.

// legacyCTEntry is the value of the v1 cx_ct, byte for byte.
type legacyCTEntry struct {
	NatSaddr  [16]uint8
	NatDaddr  [16]uint8
	NatSport  uint16
	NatDport  uint16
	Dir       uint8
	Nat       uint8
	TcpFlags  uint8
	TcpSeq    uint8
	CreatedNs uint64
	LastNs    uint64
	Packets   uint64
	Bytes     uint64
	SeqEnd    uint32
	MaxWin    uint16
	Pad       uint16
	Ifindex   uint32
	RouteGen  uint32
	Route     bpf.CalyxCxRoute
	_         [4]byte
}

// v1 tcp_seq bits (the same values as v2's cx_tcp_dir.state).
const (
	legacySeqKnown      = 0x80
	legacyWScaleOffered = 0x40
	legacyWScaleMask    = 0x0f
)

func (v legacyCTEntry) domain() bpfmap.CTEntry {
	e := bpfmap.CTEntry{
		NATSrc: netip.AddrPortFrom(addr16(v.NatSaddr), swap16(v.NatSport)),
		NATDst: netip.AddrPortFrom(addr16(v.NatDaddr), swap16(v.NatDport)),
		Reply:  v.Dir == 1, NAT: v.Nat, TCPFlags: v.TcpFlags,
		Created: v.CreatedNs, Last: v.LastNs, Packets: v.Packets, Bytes: v.Bytes,
		SeqKnown: v.TcpSeq&legacySeqKnown != 0, SeqEnd: v.SeqEnd, MaxWin: v.MaxWin, WScale: -1,
	}
	if v.TcpSeq&legacyWScaleOffered != 0 {
		e.WScale = int8(v.TcpSeq & legacyWScaleMask)
	}
	return e
}

func addr16(b [16]uint8) netip.Addr { return netip.AddrFrom16(b).Unmap() }

// swap16 turns a port as the maps hold it (network order, read as a
// little-endian uint16) into its number.
func swap16(p uint16) uint16 { return p<<8 | p>>8 }

// MigrationResult is what a map's migration did, over both passes.
type MigrationResult struct {
	Entries    int // entries read from the old map (its last pass)
	Written    int // entries written into the new map
	Translated int // conntrack: cx_nat entries written
	Tracked    int // conntrack: cx_ct flows written
	Kept       int // entries the new map had already (the programs' own stand)
	Replaced   int // entries the new map had, older than the previous programs' (second pass)
}

// converter copies every entry of mg.old (a pin of version mg.from) into
// this build's maps, converting it. The first pass (final false) runs at
// the load, before any program of this build runs; the second once every
// link runs this build's programs, for what the previous programs wrote
// in between. mg.resumed says the new map was pinned by an agent that
// stopped before it finished: the converter merges, never overwrites
// newer state.
type converter func(dp *Dataplane, mg *mapMigration, final bool) error

// converters are this build's conversions, by map and by the version they
// convert from. A map with state of its own that changes layout needs one
// here; a rebuildable one may go without (the agent refills it).
var converters = map[string]map[uint32]converter{
	bpfmap.CTName:             {1: convertConntrackV1},
	bpf.CalyxMapCxEventBudget: {1: convertEventBudgetV1},
}

func converterFor(name string, from uint32) converter { return converters[name][from] }

// Migrating says whether the load found pins of a previous layout: the
// agent calls FinishMigration once every link runs this build's programs.
func (dp *Dataplane) Migrating() bool { return dp.pins != nil && len(dp.pins.migrations) > 0 }

// Migrations reports the migrations the load started (nothing when the
// pins were all of this build's layout).
func (dp *Dataplane) Migrations() []MapMigration {
	if dp.pins == nil {
		return nil
	}
	out := make([]MapMigration, 0, len(dp.pins.migrations))
	for _, mg := range dp.pins.migrations {
		out = append(out, mg.report())
	}
	return out
}

// convert runs every conversion's pass.
func (dp *Dataplane) convert(final bool) error {
	for _, mg := range dp.pins.migrations {
		if mg.kind != MigrateConvert {
			continue
		}
		if err := mg.conv(dp, mg, final); err != nil {
			return fmt.Errorf("migrate %s from v%d to v%d: %w", mg.oldPath, mg.from, mg.to, err)
		}
	}
	return nil
}

// ErrLinksNotSwapped is FinishMigration's error while some link still runs
// a previous build's programs: the agent tries again after its next sync.
var ErrLinksNotSwapped = errors.New("links still run the previous programs")

// FinishMigration completes the migrations the load started, once every
// link runs this build's programs (else an error wrapping
// ErrLinksNotSwapped, and nothing changes): the conversions' second pass
// takes what the previous programs wrote since the first, then the
// previous layout's pins are removed (the kernel frees those maps with
// their last program). A failed pass reverts (Revert) and returns the
// error: the previous layout carries the traffic as before the load.
func (dp *Dataplane) FinishMigration() ([]MapMigration, error) {
	if !dp.Migrating() {
		return nil, nil
	}
	if stale, err := dp.staleLinks(); err != nil {
		return nil, err
	} else if len(stale) > 0 {
		return nil, fmt.Errorf("%w: %s", ErrLinksNotSwapped, strings.Join(stale, ", "))
	}
	if err := dp.convert(true); err != nil {
		if rerr := dp.Revert(); rerr != nil {
			err = errors.Join(err, fmt.Errorf("revert: %w", rerr))
		}
		return nil, err
	}
	var errs []error
	for _, mg := range dp.pins.migrations {
		if err := os.Remove(mg.oldPath); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove pinned map %s: %w", mg.oldPath, err))
		}
	}
	out := dp.Migrations()
	dp.pins.close()
	dp.pins = &pinSet{dir: dp.dir}
	dp.releasePrevious()
	return out, errors.Join(errs...)
}

// staleLinks lists the pinned TCX and XDP links whose program is not one
// of this Dataplane's.
func (dp *Dataplane) staleLinks() ([]string, error) {
	ours := map[uint32]bool{}
	for _, p := range []*ebpf.Program{dp.objs.CalyxFromWl, dp.objs.CalyxToWl, dp.objs.CalyxFromUnderlay, dp.objs.CalyxToUnderlay, dp.objs.CalyxXdpPrefilter} {
		if info, err := p.Info(); err == nil {
			if id, ok := info.ID(); ok {
				ours[uint32(id)] = true
			}
		}
	}
	ents, err := os.ReadDir(filepath.Join(dp.dir, "links"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("list link pins: %w", err)
	}
	var stale []string
	for _, e := range ents {
		id, err := linkProgramID(filepath.Join(dp.dir, "links", e.Name()))
		if err != nil {
			continue // gone meanwhile, or defunct: it runs nothing
		}
		if !ours[id] {
			stale = append(stale, e.Name())
		}
	}
	return stale, nil
}

// Revert undoes the load's migration: every link it swapped runs its
// previous program again, the pins it made are removed and the ones it
// replaced put back, so the previous layout's pins and programs carry the
// traffic as they did (the previous agent, started again, adopts them).
// The Dataplane is not to be used after, but to Close it. No migration:
// nothing to do.
func (dp *Dataplane) Revert() error {
	if !dp.Migrating() {
		return nil
	}
	var errs []error
	filters := map[string]bool{}
	for _, pf := range dp.previousFilters {
		filters[pf.key] = true
		f := pf.filter
		f.Fd = dp.previous[pf.key].FD()
		if err := netlink.FilterReplace(&f); err != nil {
			errs = append(errs, fmt.Errorf("swap clsact filter of ifindex %d back: %w", f.LinkIndex, err))
		}
	}
	for pin, prev := range dp.previous {
		if filters[pin] {
			continue
		}
		if err := updatePinnedLink(pin, prev); err != nil {
			errs = append(errs, fmt.Errorf("swap %s back: %w", pin, err))
		}
	}
	dp.releasePrevious()
	if err := dp.pins.unpublish(); err != nil {
		errs = append(errs, err)
	}
	dp.pins.close()
	dp.pins = &pinSet{dir: dp.dir}
	return errors.Join(errs...)
}

func (dp *Dataplane) releasePrevious() {
	for _, p := range dp.previous {
		p.Close()
	}
	dp.previous, dp.previousFilters = nil, nil
}

// convertConntrackV1 moves every flow of the v1 cx_ct into this build's
// maps: a translated flow's two entries into cx_nat as they are, any other
// flow into its one cx_ct entry. An entry the new maps already hold
// (written by the new programs) is kept; the second pass replaces one
// whose last packet is older than the old map's (the previous programs
// carried the flow's packets after the first pass: its TCP state, FIN and
// RST included, is theirs).
func convertConntrackV1(dp *Dataplane, mg *mapMigration, final bool) error {
	var r MigrationResult
	old, path := mg.old, mg.oldPath
	var k bpf.CalyxCxNatKey
	var v legacyCTEntry
	if old.KeySize() != uint32(binary.Size(k)) || old.ValueSize() != uint32(binary.Size(v)) {
		return fmt.Errorf("key %d / value %d bytes, not the v1 layout's %d / %d",
			old.KeySize(), old.ValueSize(), binary.Size(k), binary.Size(v))
	}
	entries := map[bpfmap.CTKey]bpfmap.CTEntry{}
	it := old.Iterate()
	for it.Next(&k, &v) {
		key := bpfmap.CTKey{Src: netip.AddrPortFrom(addr16(k.Saddr), swap16(k.Sport)),
			Dst: netip.AddrPortFrom(addr16(k.Daddr), swap16(k.Dport)), Proto: k.Proto}
		entries[key] = v.domain()
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("iterate %s: %w", path, err)
	}
	r.Entries = len(entries)
	done := map[bpfmap.CTKey]bool{}
	for key, e := range entries {
		if e.NAT != 0 {
			res, err := dp.Maps.PutTranslated(key, e, final || mg.resumed)
			if err != nil {
				return err
			}
			r.count(res, &r.Translated)
			continue
		}
		if done[key] {
			continue
		}
		pk := conntrack.PairKey(key, e)
		done[key], done[pk] = true, true
		orig, o := key, e
		var reply *bpfmap.CTEntry
		if pe, ok := entries[pk]; ok {
			reply = &pe
			if e.Reply {
				orig, o, reply = pk, pe, &e
			}
		} else if e.Reply {
			// The original direction's entry was evicted: the flow
			// is rebuilt with what its reply knows.
			orig, o, reply = pk, bpfmap.CTEntry{Created: e.Created, Last: e.Last, WScale: -1}, &e
		}
		res, err := dp.Maps.PutTracked(orig, o, reply, final || mg.resumed)
		if err != nil {
			return err
		}
		r.count(res, &r.Tracked)
	}
	r.Written = r.Translated + r.Tracked
	mg.result = r
	return nil
}

func (r *MigrationResult) count(res bpfmap.PutResult, written *int) {
	switch res {
	case bpfmap.PutWritten:
		*written++
	case bpfmap.PutReplaced:
		r.Replaced++
	default:
		r.Kept++
	}
}

// eventWindowV1 is cx_event_budget's value in layout v1: a 32-bit count
// of suppressed events.
type eventWindowV1 struct {
	WindowNs   uint64
	Sent       uint32
	Suppressed uint32
}

// convertEventBudgetV1 carries each CPU's window and its count of
// suppressed events into the v2 layout (64 bits), so that
// calyx_monitor_events_suppressed_total goes on from where it was. The
// second pass adds what the previous programs suppressed since the first;
// over a resumed migration (no first pass of this agent's) a CPU keeps the
// larger count.
func convertEventBudgetV1(dp *Dataplane, mg *mapMigration, final bool) error {
	var old []eventWindowV1
	if err := mg.old.Lookup(uint32(0), &old); err != nil {
		return fmt.Errorf("read %s: %w", mg.oldPath, err)
	}
	var cur []bpf.CalyxCxEventWindow
	if err := dp.objs.CxEventBudget.Lookup(uint32(0), &cur); err != nil {
		return fmt.Errorf("read %s: %w", bpf.CalyxMapCxEventBudget, err)
	}
	first, _ := mg.state.([]uint32)
	for i := range min(len(old), len(cur)) {
		o := old[i]
		switch {
		case !final && !mg.resumed:
			cur[i] = bpf.CalyxCxEventWindow{WindowNs: o.WindowNs, Sent: o.Sent, Suppressed: uint64(o.Suppressed)}
		case first != nil:
			cur[i].Suppressed += uint64(o.Suppressed - first[i]) // the old count's growth, wrap and all
		default:
			cur[i].Suppressed = max(cur[i].Suppressed, uint64(o.Suppressed))
		}
	}
	if err := dp.objs.CxEventBudget.Put(uint32(0), cur); err != nil {
		return fmt.Errorf("write %s: %w", bpf.CalyxMapCxEventBudget, err)
	}
	if !final && !mg.resumed {
		snap := make([]uint32, len(old))
		for i, o := range old {
			snap[i] = o.Suppressed
		}
		mg.state = snap
	}
	mg.result.Entries, mg.result.Written = len(old), len(cur)
	return nil
}
