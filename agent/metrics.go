package agent

import (
	"net"
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/calyxnet/calyx/agent/mapsync"
	"github.com/calyxnet/calyx/bpfmap"
	"github.com/calyxnet/calyx/conntrack"
)

type metrics struct {
	reg            *prometheus.Registry
	mapWrites      *prometheus.CounterVec
	syncs          prometheus.Counter
	syncErrors     prometheus.Counter
	syncSeconds    prometheus.Histogram
	kernelRoutes   prometheus.Counter
	attaches       *prometheus.CounterVec
	attachFailures prometheus.Counter
	endpoints      *prometheus.GaugeVec
	ready          prometheus.Gauge
	dsConnected    prometheus.Gauge
	workloadMTU    prometheus.Gauge
	resyncs        prometheus.Counter
	ctFlows        prometheus.Gauge
	ctExpired      prometheus.Counter
	// Conntrack by table: "ct" (cx_ct_v2, tracked flows), "nat"
	// (cx_nat_v2, translated flows' directions), "frags" (cx_frags).
	ctEntries   *prometheus.GaugeVec
	ctCapacity  *prometheus.GaugeVec
	ctCreated   *prometheus.CounterVec
	ctEvictions *prometheus.CounterVec
	fragOrphans prometheus.Counter
	ctLast      ctSample // the previous collection's, for the deltas
	mapEntries  *prometheus.GaugeVec
	mapCapacity *prometheus.GaugeVec
	// deadNodeReleases counts what this agent gave back of dead nodes'
	// IPAM blocks, by release: "block" (a whole block went back to its
	// pool) or "allocations" (the unused allocations of a block still in
	// use).
	deadNodeReleases *prometheus.CounterVec
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		mapWrites: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "calyx_sync_map_writes_total",
			Help: "Dataplane map entries written or deleted by the syncer since start (0 after a restart that found everything right).",
		}, []string{"map", "op"}),
		syncs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "calyx_syncs_total", Help: "Completed reconciles of the dataplane with the model.",
		}),
		syncErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "calyx_sync_errors_total", Help: "Reconciles that failed and were retried.",
		}),
		syncSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "calyx_sync_duration_seconds", Help: "Time to compute and apply one reconcile.",
			// 100 µs to 52 s: a first sync of 50,000 endpoints included.
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 20),
		}),
		kernelRoutes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "calyx_kernel_route_changes_total", Help: "Local /32 kernel routes added or removed.",
		}),
		attaches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "calyx_program_attaches_total", Help: "Program attaches and in-place program swaps, by mode.",
		}, []string{"mode"}),
		attachFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "calyx_attach_failures_total", Help: "Workload interfaces whose programs could not be attached (each is taken down and tried again with backoff).",
		}),
		endpoints: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "calyx_local_endpoints", Help: "Local endpoints: programmed, waiting for their interface (pending), or refused (their interface is the underlay, a loopback or holds a host address), or attach-failed.",
		}, []string{"state"}),
		ready: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "calyx_ready", Help: "1 once the dataplane matches the model.",
		}),
		dsConnected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "calyx_datastore_connected", Help: "0 while the datastore is unreachable (the dataplane then stays as it was).",
		}),
		ctFlows: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "calyx_conntrack_flows", Help: "Flows in the conntrack table after the last collection.",
		}),
		ctExpired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "calyx_conntrack_expired_total", Help: "Flows removed for being idle past their state's timeout.",
		}),
		ctEntries: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "calyx_conntrack_entries", Help: "Entries in each conntrack map after the last collection (table: ct, nat, frags).",
		}, []string{"table"}),
		ctCapacity: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "calyx_conntrack_capacity", Help: "Entries each conntrack map can hold (table: ct, nat, frags).",
		}, []string{"table"}),
		ctCreated: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "calyx_conntrack_created_total", Help: "Entries the programs wrote into each conntrack map (table: ct, nat).",
		}, []string{"table"}),
		ctEvictions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "calyx_conntrack_evictions_total", Help: "Entries the LRU evicted from each conntrack map to make room (table: ct, nat), as told between two collections by what was written, deleted and is left.",
		}, []string{"table"}),
		fragOrphans: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "calyx_fragments_orphan_total", Help: "Later IP fragments that came without their first (dropped unless Config.orphanFragments is Pass).",
		}),
		resyncs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "calyx_resyncs_total", Help: "Periodic re-reads of the pinned maps (repairs show in calyx_sync_map_writes_total).",
		}),
		mapEntries: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "calyx_map_entries", Help: "Entries in each BPF map the agent fills (after its last sync; cx_ct after its last collection).",
		}, []string{"map"}),
		mapCapacity: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "calyx_map_capacity", Help: "The most entries each BPF map can hold (max_entries).",
		}, []string{"map"}),
		workloadMTU: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "calyx_workload_mtu_bytes", Help: "The MTU workloads must use (bytes): the underlay's minus the largest encapsulation overhead the pools may use.",
		}),
		deadNodeReleases: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "calyx_ipam_dead_node_releases_total",
			Help: "IPAM blocks of dead nodes (no liveness for --dead-node-grace) this agent gave back: release=block for a whole block, release=allocations for the unused allocations of a block an endpoint still uses.",
		}, []string{"release"}),
	}
	for _, r := range []string{"block", "allocations"} {
		m.deadNodeReleases.WithLabelValues(r)
	}
	m.dsConnected.Set(1)
	m.reg.MustRegister(m.mapWrites, m.syncs, m.syncErrors, m.syncSeconds, m.kernelRoutes, m.attaches, m.attachFailures,
		m.endpoints, m.ready, m.dsConnected, m.workloadMTU, m.resyncs, m.ctFlows, m.ctExpired, m.ctEntries, m.ctCapacity, m.ctCreated, m.ctEvictions, m.fragOrphans, m.mapEntries, m.mapCapacity, m.deadNodeReleases, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// syncedTables makes calyx_sync_map_writes_total show every table the
// syncer keeps from the start, at 0.
func (m *metrics) syncedTables(names []string) {
	for _, name := range names {
		for _, op := range []string{"put", "delete"} {
			m.mapWrites.WithLabelValues(name, op)
		}
	}
}

// mapFill sets calyx_map_entries and calyx_map_capacity of one map.
func (m *metrics) mapFill(f mapsync.Fill) {
	m.mapEntries.WithLabelValues(f.Table).Set(float64(f.Entries))
	m.mapCapacity.WithLabelValues(f.Table).Set(float64(f.Capacity))
}

func (m *metrics) countWrites(c mapsync.Counts) {
	for name, w := range c {
		m.mapWrites.WithLabelValues(name, "put").Add(float64(w.Puts))
		m.mapWrites.WithLabelValues(name, "delete").Add(float64(w.Deletes))
	}
}

func (m *metrics) registerDataplane(mp *bpfmap.Maps) {
	m.reg.MustRegister(&dataplaneCollector{maps: mp})
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// dataplaneCollector exports the BPF counters, read from the map at scrape
// time, so nothing on the packet path depends on Prometheus.
type dataplaneCollector struct{ maps *bpfmap.Maps }

var (
	dpPackets = prometheus.NewDesc("calyx_dataplane_packets_total",
		"Packets by verdict reason and interface, summed over CPUs.", []string{"interface", "reason"}, nil)
	dpBytes = prometheus.NewDesc("calyx_dataplane_bytes_total",
		"Bytes by verdict reason and interface, summed over CPUs.", []string{"interface", "reason"}, nil)
)

func (c *dataplaneCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- dpPackets
	ch <- dpBytes
}

func (c *dataplaneCollector) Collect(ch chan<- prometheus.Metric) {
	counters, err := c.maps.Counters()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(dpPackets, err)
		return
	}
	// By name: an ifindex changes when an interface is made again, and
	// every restart of a VM makes its tap again.
	names := map[uint32]string{}
	for k, v := range counters {
		name, ok := names[k.Ifindex]
		if !ok {
			name = interfaceName(k.Ifindex)
			names[k.Ifindex] = name
		}
		ch <- prometheus.MustNewConstMetric(dpPackets, prometheus.CounterValue, float64(v.Packets), name, k.Reason.String())
		ch <- prometheus.MustNewConstMetric(dpBytes, prometheus.CounterValue, float64(v.Bytes), name, k.Reason.String())
	}
}

// interfaceName is the name of the interface ifindex, or "ifindex-N" for
// one that is gone (its counters go with the next sync).
func interfaceName(ifindex uint32) string {
	if ifc, err := net.InterfaceByIndex(int(ifindex)); err == nil {
		return ifc.Name
	}
	return "ifindex-" + strconv.FormatUint(uint64(ifindex), 10)
}

// ctSample is what one conntrack collection read.
type ctSample struct {
	valid                             bool
	stats                             bpfmap.ConntrackStats
	trackedEntries, translatedEntries int
}

// conntrack publishes a collection: the maps' fill, and what the programs
// created and the LRU evicted since the previous one. An LRU map evicts
// without telling; what was written, less what was deleted (by the
// programs, by the collection) and less what the map grew by, is what it
// evicted.
func (m *metrics) conntrack(r conntrack.GCResult, stats bpfmap.ConntrackStats, size bpfmap.ConntrackSize) {
	now := ctSample{valid: true, stats: stats, trackedEntries: r.TrackedEntries - r.TrackedDeleted,
		translatedEntries: r.TranslatedEntries - r.TranslatedDeleted}
	m.ctEntries.WithLabelValues("ct").Set(float64(now.trackedEntries))
	m.ctEntries.WithLabelValues("nat").Set(float64(now.translatedEntries))
	m.ctEntries.WithLabelValues("frags").Set(float64(size.Frags))
	m.ctCapacity.WithLabelValues("ct").Set(float64(size.TrackedCapacity))
	m.ctCapacity.WithLabelValues("nat").Set(float64(size.TranslatedCapacity))
	m.ctCapacity.WithLabelValues("frags").Set(float64(size.FragsCapacity))
	prev := m.ctLast
	m.ctLast = now
	if !prev.valid {
		for _, table := range []string{"ct", "nat"} {
			// Shown from the first collection on, at 0.
			m.ctCreated.WithLabelValues(table)
			m.ctEvictions.WithLabelValues(table)
		}
		return
	}
	delta := func(a, b uint64) float64 {
		if a < b { // the map was made anew
			return 0
		}
		return float64(a - b)
	}
	created := delta(stats.TrackedCreated, prev.stats.TrackedCreated)
	m.ctCreated.WithLabelValues("ct").Add(created)
	if ev := created - delta(stats.TrackedDeleted, prev.stats.TrackedDeleted) - float64(r.TrackedDeleted) -
		float64(now.trackedEntries-prev.trackedEntries); ev > 0 {
		m.ctEvictions.WithLabelValues("ct").Add(ev)
	}
	created = delta(stats.TranslatedCreated, prev.stats.TranslatedCreated)
	m.ctCreated.WithLabelValues("nat").Add(created)
	if ev := created - delta(stats.TranslatedDeleted, prev.stats.TranslatedDeleted) - float64(r.TranslatedDeleted) -
		float64(now.translatedEntries-prev.translatedEntries); ev > 0 {
		m.ctEvictions.WithLabelValues("nat").Add(ev)
	}
	m.fragOrphans.Add(delta(stats.FragOrphans, prev.stats.FragOrphans))
}
