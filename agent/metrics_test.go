package agent

import (
	"testing"

	dto "github.com/prometheus/client_model/go"

	"github.com/calyxnet/calyx/bpfmap"
	"github.com/calyxnet/calyx/conntrack"
)

// The LRU evicts without telling: between two collections, what the
// programs wrote, less what they and the collection deleted and less what
// the map grew by, is what it evicted.
func TestConntrackEvictionsFromCounts(t *testing.T) {
	m := newMetrics()
	size := bpfmap.ConntrackSize{TrackedCapacity: 1024, TranslatedCapacity: 2048, FragsCapacity: 8192, Frags: 3}
	m.conntrack(conntrack.GCResult{TrackedEntries: 1000, TranslatedEntries: 10},
		bpfmap.ConntrackStats{TrackedCreated: 5000, TranslatedCreated: 10}, size)
	// Then 3,000 new tracked flows into a full table, 20 collected, 5
	// reopened (deleted by the programs); 4 new translated entries, none
	// evicted.
	m.conntrack(conntrack.GCResult{TrackedEntries: 1024, TrackedDeleted: 20, TranslatedEntries: 14},
		bpfmap.ConntrackStats{TrackedCreated: 8000, TrackedDeleted: 5, TranslatedCreated: 14, FragOrphans: 2}, size)
	counter := func(name, table string) float64 {
		t.Helper()
		fams, err := m.reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range fams {
			if f.GetName() != name {
				continue
			}
			for _, mt := range f.GetMetric() {
				if table == "" || labelIs(mt, "table", table) {
					if c := mt.GetCounter(); c != nil {
						return c.GetValue()
					}
					return mt.GetGauge().GetValue()
				}
			}
		}
		t.Fatalf("no %s{table=%q}", name, table)
		return 0
	}
	// 3,000 written, 5 + 20 deleted, the table grew by 1004 - 1000 = 4.
	if got := counter("calyx_conntrack_evictions_total", "ct"); got != 3000-25-4 {
		t.Errorf("ct evictions %v, want %d", got, 3000-25-4)
	}
	if got := counter("calyx_conntrack_evictions_total", "nat"); got != 0 {
		t.Errorf("nat evictions %v, want 0", got)
	}
	if got := counter("calyx_conntrack_created_total", "ct"); got != 3000 {
		t.Errorf("ct created %v, want 3000", got)
	}
	if got := counter("calyx_conntrack_entries", "ct"); got != 1004 {
		t.Errorf("ct entries %v, want 1004", got)
	}
	if got := counter("calyx_conntrack_capacity", "nat"); got != 2048 {
		t.Errorf("nat capacity %v, want 2048", got)
	}
	if got := counter("calyx_fragments_orphan_total", ""); got != 2 {
		t.Errorf("orphan fragments %v, want 2", got)
	}
}

func labelIs(m *dto.Metric, name, value string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == name && l.GetValue() == value {
			return true
		}
	}
	return false
}
