package loader_test

import (
	"encoding/binary"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/calyxnet/calyx/bpfmap"
	"github.com/calyxnet/calyx/conntrack"
	"github.com/calyxnet/calyx/loader"
)

// legacyEntry builds a value of the v1 cx_ct (136 bytes) the way calyx
// before the v2 layout wrote it.
func legacyEntry(natSrc, natDst netip.AddrPort, reply bool, nat uint8, packets uint64) []byte {
	return legacyEntryAt(natSrc, natDst, reply, nat, packets, 2000)
}

// legacyEntryAt is legacyEntry whose last packet was at last (ns).
func legacyEntryAt(natSrc, natDst netip.AddrPort, reply bool, nat uint8, packets, last uint64) []byte {
	v := make([]byte, 136)
	a, b := natSrc.Addr().As16(), natDst.Addr().As16()
	copy(v[0:16], a[:])
	copy(v[16:32], b[:])
	binary.BigEndian.PutUint16(v[32:], natSrc.Port())
	binary.BigEndian.PutUint16(v[34:], natDst.Port())
	if reply {
		v[36] = 1
	}
	v[37] = nat
	v[38] = bpfmap.TCPSyn | bpfmap.TCPAck       // tcp_flags
	v[39] = 0x80 | 0x40 | 7                     // sequence known, window scale 7 offered
	binary.LittleEndian.PutUint64(v[40:], 1000) // created
	binary.LittleEndian.PutUint64(v[48:], last)
	binary.LittleEndian.PutUint64(v[56:], packets)
	binary.LittleEndian.PutUint64(v[64:], packets*100)
	binary.LittleEndian.PutUint32(v[72:], 123456) // seq_end
	binary.LittleEndian.PutUint16(v[76:], 64240)  // max_win
	return v
}

func legacyKey(src, dst netip.AddrPort, proto uint8) []byte {
	k := make([]byte, 40)
	a, b := src.Addr().As16(), dst.Addr().As16()
	copy(k[0:16], a[:])
	copy(k[16:32], b[:])
	binary.BigEndian.PutUint16(k[32:], src.Port())
	binary.BigEndian.PutUint16(k[34:], dst.Port())
	k[36] = proto
	return k
}

// An agent of this build over the pins of conntrack layout v1 moves every
// flow of its cx_ct into cx_ct_v2 and cx_nat_v2: a translated flow's two
// directions as they were, a tracked flow into one entry (its reply alone
// too, when the original went), TCP state and counters kept. A second pass
// keeps what the new maps hold; then the old pin goes.
func TestMigrateLegacyConntrack(t *testing.T) {
	requirePrivileges(t)
	dir := mountBPFFS(t)
	if err := loader.EnsureBPFFS(dir); err != nil {
		t.Fatal(err)
	}
	old := pinNewMap(t, &ebpf.MapSpec{Type: ebpf.LRUHash, KeySize: 40, ValueSize: 136, MaxEntries: 1024}, filepath.Join(dir, "cx_ct"))
	ap := netip.MustParseAddrPort
	client, fip, fixed := ap("203.0.113.7:40001"), ap("192.0.2.20:443"), ap("10.65.0.20:443")
	wl1, wl2 := ap("10.65.0.10:5000"), ap("10.65.0.11:53")
	lone1, lone2 := ap("10.65.0.12:6000"), ap("10.65.0.13:80")
	put := func(k, v []byte) {
		if err := old.Put(k, v); err != nil {
			t.Fatal(err)
		}
	}
	// A floating IP's TCP flow: client -> fip, DNAT to fixed.
	put(legacyKey(client, fip, bpfmap.ProtoTCP), legacyEntry(client, fixed, false, bpfmap.NATDNAT, 5))
	put(legacyKey(fixed, client, bpfmap.ProtoTCP), legacyEntry(fip, client, true, bpfmap.NATDNAT, 4))
	// A tracked UDP flow between two workloads.
	put(legacyKey(wl1, wl2, bpfmap.ProtoUDP), legacyEntry(wl1, wl2, false, 0, 3))
	put(legacyKey(wl2, wl1, bpfmap.ProtoUDP), legacyEntry(wl2, wl1, true, 0, 2))
	// A tracked TCP flow whose original entry the LRU evicted.
	put(legacyKey(lone2, lone1, bpfmap.ProtoTCP), legacyEntry(lone2, lone1, true, 0, 7))

	dp, err := loader.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer dp.Close()
	r, ok := migration(dp.Migrations(), bpfmap.CTName)
	if !ok || r.Kind != loader.MigrateConvert || r.From != 1 || r.To != 2 {
		t.Fatalf("migrations %+v, want cx_ct converted from v1 to v2", dp.Migrations())
	}
	if r := r.Result; r.Entries != 5 || r.Translated != 2 || r.Tracked != 2 || r.Kept != 0 {
		t.Errorf("migration %+v, want 5 entries read, 2 translated, 2 tracked written", r)
	}
	flows, err := conntrack.Flows(dp.Maps)
	if err != nil {
		t.Fatal(err)
	}
	byOrig := map[bpfmap.CTKey]conntrack.Flow{}
	for _, f := range flows {
		if f.Orig != nil {
			byOrig[f.Orig.Key] = f
		}
	}
	f, ok := byOrig[bpfmap.CTKey{Src: client, Dst: fip, Proto: bpfmap.ProtoTCP}]
	if !ok || f.Reply == nil || f.NAT() != bpfmap.NATDNAT || f.Orig.Value.NATDst != fixed || f.Reply.Value.NATSrc != fip {
		t.Errorf("floating-IP flow: %+v", f)
	} else if o := f.Orig.Value; o.Packets != 5 || !o.SeqKnown || o.SeqEnd != 123456 || o.WScale != 7 || f.State() != conntrack.StateEstablished {
		t.Errorf("floating-IP flow's state: %+v (%s)", o, f.State())
	}
	f, ok = byOrig[bpfmap.CTKey{Src: wl1, Dst: wl2, Proto: bpfmap.ProtoUDP}]
	if !ok || f.Reply == nil || f.NAT() != 0 || f.Orig.Value.Packets != 3 || f.Reply.Value.Packets != 2 || f.Reply.Value.Bytes != 200 {
		t.Errorf("tracked flow: %+v", f)
	}
	f, ok = byOrig[bpfmap.CTKey{Src: lone1, Dst: lone2, Proto: bpfmap.ProtoTCP}]
	if !ok || f.Reply == nil || f.Reply.Value.Packets != 7 {
		t.Errorf("tracked flow rebuilt from its reply: %+v", f)
	}

	// Again (the agent's pass once every link runs the new programs):
	// what the new maps hold stands, unless the previous programs saw the
	// flow after the first pass: the tracked flow's newer packets (the
	// old map's last packet later than the new map's) replace it.
	put(legacyKey(wl1, wl2, bpfmap.ProtoUDP), legacyEntryAt(wl1, wl2, false, 0, 9, 5000))
	done, err := dp.FinishMigration()
	if r, _ := migration(done, bpfmap.CTName); err != nil || r.Result.Kept != 3 || r.Result.Replaced != 1 || r.Result.Written != 0 {
		t.Errorf("second pass %+v, %v: want 3 kept, the tracked flow's entry replaced", r, err)
	}
	flows, err = conntrack.Flows(dp.Maps)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range flows {
		if f.Orig != nil && f.Orig.Key == (bpfmap.CTKey{Src: wl1, Dst: wl2, Proto: bpfmap.ProtoUDP}) && (f.Orig.Value.Packets != 9 || f.Last() != 5000) {
			t.Errorf("tracked flow after the second pass: %d packets, last %d; want the old map's 9 and 5000", f.Orig.Value.Packets, f.Last())
		}
	}
	// The collection (batched reads and deletes) expires them all.
	gc, err := conntrack.GC(dp.Maps, 1<<62)
	if err != nil || gc.Flows != 3 || gc.Expired != 3 || gc.TranslatedDeleted != 2 || gc.TrackedDeleted != 2 {
		t.Errorf("collection %+v, %v: want 3 flows expired, 2 cx_nat and 2 cx_ct entries deleted", gc, err)
	}
	if left, err := conntrack.Flows(dp.Maps); err != nil || len(left) != 0 {
		t.Errorf("after the collection: %d flows, %v", len(left), err)
	}
	if _, err := os.Stat(filepath.Join(dir, "cx_ct")); !os.IsNotExist(err) {
		t.Errorf("the old pin is still there: %v", err)
	}
	if dp.Migrating() {
		t.Error("Migrating after FinishMigration")
	}
}

// migration finds map name's among ms.
func migration(ms []loader.MapMigration, name string) (loader.MapMigration, bool) {
	for _, m := range ms {
		if m.Map == name {
			return m, true
		}
	}
	return loader.MapMigration{}, false
}
