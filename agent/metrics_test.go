package agent

import (
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/calyxnet/calyx/agent/calc"
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

// sample is the value of the sample of family name in reg whose labels
// include want; the test fails when there is none.
func sample(t *testing.T, reg prometheus.Gatherer, name string, want map[string]string) float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	next:
		for _, mt := range f.GetMetric() {
			for k, v := range want {
				if !labelIs(mt, k, v) {
					continue next
				}
			}
			switch {
			case mt.GetCounter() != nil:
				return mt.GetCounter().GetValue()
			case mt.GetGauge() != nil:
				return mt.GetGauge().GetValue()
			case mt.GetHistogram() != nil:
				return float64(mt.GetHistogram().GetSampleCount())
			}
		}
	}
	t.Fatalf("no %s%v", name, want)
	return 0
}

// derived is a collector of collectDerived over fixed counters.
type derived struct {
	counters map[bpfmap.CounterKey]bpfmap.Counter
	ifaces   map[uint32]endpointIface
}

func (d derived) Describe(ch chan<- *prometheus.Desc) { (&dataplaneCollector{}).Describe(ch) }
func (d derived) Collect(ch chan<- prometheus.Metric) { collectDerived(ch, d.counters, d.ifaces) }

// A workload interface's verdicts add up to its endpoint's two
// directions: to-workload into it, the other passes out of it; drops go
// to calyx_drops_total, summed over interfaces (the underlay's too).
func TestEndpointAndDropCounters(t *testing.T) {
	const tap, veth, underlay = 11, 12, 2
	ifaces := &endpointIfaces{}
	ifaces.set(map[uint32]calc.Attachment{
		tap:      {Ifname: "tap0123abcd-ef", Ifindex: tap, Endpoint: "vm-1"},
		veth:     {Ifname: "cali1", Ifindex: veth, Endpoint: "pod-1"},
		underlay: {Ifname: "eth0", Ifindex: underlay, Underlay: true},
	})
	counters := map[bpfmap.CounterKey]bpfmap.Counter{
		{Ifindex: tap, Reason: bpfmap.ReasonToWorkload}:       {Packets: 10, Bytes: 1000},
		{Ifindex: tap, Reason: bpfmap.ReasonEncapVXLAN}:       {Packets: 5, Bytes: 500},
		{Ifindex: tap, Reason: bpfmap.ReasonDeliverLocal}:     {Packets: 2, Bytes: 200},
		{Ifindex: tap, Reason: bpfmap.ReasonARPReply}:         {Packets: 1, Bytes: 42},
		{Ifindex: tap, Reason: bpfmap.ReasonDropSpoofIP}:      {Packets: 3, Bytes: 300},
		{Ifindex: underlay, Reason: bpfmap.ReasonDropSpoofIP}: {Packets: 4, Bytes: 400},
		{Ifindex: underlay, Reason: bpfmap.ReasonDecapVXLAN}:  {Packets: 9, Bytes: 900},
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(derived{counters, ifaces.all()})
	for _, tc := range []struct {
		name, endpoint, ifname, dir string
		want                        float64
	}{
		{"calyx_endpoint_packets_total", "vm-1", "tap0123abcd-ef", "to-workload", 10},
		{"calyx_endpoint_bytes_total", "vm-1", "tap0123abcd-ef", "to-workload", 1000},
		{"calyx_endpoint_packets_total", "vm-1", "tap0123abcd-ef", "from-workload", 8},
		{"calyx_endpoint_bytes_total", "vm-1", "tap0123abcd-ef", "from-workload", 742},
		// No packet yet: there, at 0.
		{"calyx_endpoint_packets_total", "pod-1", "cali1", "from-workload", 0},
		{"calyx_endpoint_packets_total", "pod-1", "cali1", "to-workload", 0},
	} {
		if got := sample(t, reg, tc.name, map[string]string{"endpoint": tc.endpoint, "interface": tc.ifname, "direction": tc.dir}); got != tc.want {
			t.Errorf("%s{endpoint=%s,direction=%s} = %v, want %v", tc.name, tc.endpoint, tc.dir, got, tc.want)
		}
	}
	if got := sample(t, reg, "calyx_drops_total", map[string]string{"reason": "drop-spoof-ip"}); got != 7 {
		t.Errorf("drops of drop-spoof-ip = %v, want 7 (3 on the tap, 4 on the underlay)", got)
	}
	if got := sample(t, reg, "calyx_drops_total", map[string]string{"reason": "drop-policy"}); got != 0 {
		t.Errorf("drops of drop-policy = %v, want 0", got)
	}
	fams, _ := reg.Gather()
	for _, f := range fams {
		for _, mt := range f.GetMetric() {
			if labelIs(mt, "interface", "eth0") {
				t.Errorf("the underlay is no endpoint: %s %v", f.GetName(), mt.GetLabel())
			}
			if f.GetName() == "calyx_drops_total" && !strings.HasPrefix(mt.GetLabel()[0].GetValue(), "drop-") {
				t.Errorf("calyx_drops_total of a verdict that is no drop: %v", mt.GetLabel())
			}
		}
	}
	if ei, ok := ifaces.get(tap); !ok || ei.endpoint != "vm-1" {
		t.Errorf("get(%d) = %+v, %v", tap, ei, ok)
	}
}

// natOutgoing's port use is that of the node's own addresses; another
// translated source (a hairpin's floating IP) is not counted.
func TestNATPortUse(t *testing.T) {
	m := newMetrics()
	node, node6, fip := netip.MustParseAddr("10.30.0.11"), netip.MustParseAddr("fd00::11"), netip.MustParseAddr("198.51.100.10")
	snat := map[netip.Addr]conntrack.PortUse{
		node:  {Flows: 700, Destinations: 3, Busiest: 600},
		node6: {Flows: 5, Destinations: 5, Busiest: 1},
		fip:   {Flows: 9, Destinations: 1, Busiest: 9},
	}
	m.natPorts(snat, bpfmap.NodeConfig{Address: node, Address6: node6, NATPorts: [2]uint16{40000, 40999}})
	for _, tc := range []struct {
		name, family string
		want         float64
	}{
		{"calyx_nat_ports_in_use", "v4", 700},
		{"calyx_nat_ports_busiest_destination", "v4", 600},
		{"calyx_nat_ports_in_use", "v6", 5},
		{"calyx_nat_ports_busiest_destination", "v6", 1},
	} {
		if got := sample(t, m.reg, tc.name, map[string]string{"family": tc.family}); got != tc.want {
			t.Errorf("%s{family=%s} = %v, want %v", tc.name, tc.family, got, tc.want)
		}
	}
	if got := sample(t, m.reg, "calyx_nat_port_range_ports", nil); got != 1000 {
		t.Errorf("range %v, want 1000", got)
	}
	// No range in cx_config: the programs' built-in one; no IPv6 address.
	m.natPorts(snat, bpfmap.NodeConfig{Address: node})
	if got := sample(t, m.reg, "calyx_nat_port_range_ports", nil); got != 10000 {
		t.Errorf("default range %v, want 10000 (20000:29999)", got)
	}
	if got := sample(t, m.reg, "calyx_nat_ports_in_use", map[string]string{"family": "v6"}); got != 0 {
		t.Errorf("v6 in use %v without an IPv6 address, want 0", got)
	}
}

// The lag runs from the first snapshot not applied yet; a reconcile
// without a new snapshot (an interface came) observes none.
func TestWatchLag(t *testing.T) {
	m := newMetrics()
	now := time.Now()
	m.applied(42, now.Add(-3*time.Second), now)
	m.applied(42, time.Time{}, now)
	fams, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == "calyx_datastore_watch_lag_seconds" {
			h := f.GetMetric()[0].GetHistogram()
			if h.GetSampleCount() != 1 || h.GetSampleSum() != 3 {
				t.Errorf("watch lag: %d samples summing %v, want one of 3s", h.GetSampleCount(), h.GetSampleSum())
			}
		}
	}
	if got := sample(t, m.reg, "calyx_datastore_revision", nil); got != 42 {
		t.Errorf("revision %v, want 42", got)
	}
}

func TestBuildInfo(t *testing.T) {
	m := newMetrics()
	if got := sample(t, m.reg, "calyx_build_info", map[string]string{"version": Version, "goversion": runtime.Version()}); got != 1 {
		t.Errorf("calyx_build_info = %v, want 1", got)
	}
}
