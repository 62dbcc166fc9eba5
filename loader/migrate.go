package loader

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"

	"github.com/calyxnet/calyx/bpf"
	"github.com/calyxnet/calyx/bpfmap"
	"github.com/calyxnet/calyx/conntrack"
)

// Conntrack of the layout before v2 (calyx up to the commit that split
// it): one map, cx_ct, with an entry per direction of every flow, keyed as
// cx_nat_v2 is and valued as below. An agent of this build that finds it
// pinned moves its flows into cx_ct_v2 and cx_nat_v2 instead of dropping
// them: established connections, translated ones included, carry on.
const legacyCTName = "cx_ct"

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

// MigrationResult is what one pass over the previous layout's conntrack did.
type MigrationResult struct {
	Entries    int // v1 entries read
	Translated int // cx_nat_v2 entries written
	Tracked    int // cx_ct_v2 flows written
	Kept       int // entries the new maps had already (the programs' own stand)
	Replaced   int // entries the new maps had, older than the previous programs' (second pass)
}

// LegacyConntrack says whether a conntrack map of the previous layout is
// pinned under the Dataplane's directory.
func (dp *Dataplane) LegacyConntrack() bool {
	if dp.dir == "" {
		return false
	}
	_, err := os.Stat(filepath.Join(dp.dir, legacyCTName))
	return err == nil
}

// MigrateConntrack copies every flow of the previous layout's pinned cx_ct
// into this build's maps, converting it: a translated flow's two entries
// into cx_nat_v2 as they are, any other flow into its one cx_ct_v2 entry.
// An entry the new maps already hold (written by the new programs) is kept.
// The old map stays pinned: programs of the previous build may still run
// on interfaces whose links are not swapped yet, and their new flows go
// there, so the agent runs it again (final) once every link runs this
// build's programs, then calls RemoveLegacyConntrack. That pass also
// replaces an entry whose last packet is older than the old map's: the
// previous programs carried the flow's packets after the first pass (its
// TCP state, FIN and RST included, is theirs). No legacy map: a zero
// result.
func (dp *Dataplane) MigrateConntrack(final bool) (MigrationResult, error) {
	var r MigrationResult
	if !dp.LegacyConntrack() {
		return r, nil
	}
	path := filepath.Join(dp.dir, legacyCTName)
	old, err := ebpf.LoadPinnedMap(path, &ebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		return r, fmt.Errorf("open pinned map %s: %w", path, err)
	}
	defer old.Close()
	var k bpf.CalyxCxNatKey
	var v legacyCTEntry
	if old.KeySize() != uint32(binary.Size(k)) || old.ValueSize() != uint32(binary.Size(v)) {
		return r, fmt.Errorf("migrate %s: key %d / value %d bytes, not the previous layout's %d / %d",
			path, old.KeySize(), old.ValueSize(), binary.Size(k), binary.Size(v))
	}
	entries := map[bpfmap.CTKey]bpfmap.CTEntry{}
	it := old.Iterate()
	for it.Next(&k, &v) {
		key := bpfmap.CTKey{Src: netip.AddrPortFrom(addr16(k.Saddr), swap16(k.Sport)),
			Dst: netip.AddrPortFrom(addr16(k.Daddr), swap16(k.Dport)), Proto: k.Proto}
		entries[key] = v.domain()
	}
	if err := it.Err(); err != nil {
		return r, fmt.Errorf("iterate %s: %w", path, err)
	}
	r.Entries = len(entries)
	done := map[bpfmap.CTKey]bool{}
	for key, e := range entries {
		if e.NAT != 0 {
			res, err := dp.Maps.PutTranslated(key, e, final)
			if err != nil {
				return r, fmt.Errorf("migrate %s: %w", path, err)
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
		res, err := dp.Maps.PutTracked(orig, o, reply, final)
		if err != nil {
			return r, fmt.Errorf("migrate %s: %w", path, err)
		}
		r.count(res, &r.Tracked)
	}
	return r, nil
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

// RemoveLegacyConntrack unpins the previous layout's conntrack map, once
// no program uses it (every link runs this build's). The kernel frees it
// with its last reference.
func (dp *Dataplane) RemoveLegacyConntrack() error {
	if !dp.LegacyConntrack() {
		return nil
	}
	path := filepath.Join(dp.dir, legacyCTName)
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove pinned map %s: %w", path, err)
	}
	return nil
}
