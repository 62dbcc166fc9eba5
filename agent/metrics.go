package agent

import (
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/calyxnet/calyx/agent/calc"
	"github.com/calyxnet/calyx/agent/mapsync"
	"github.com/calyxnet/calyx/bpfmap"
	"github.com/calyxnet/calyx/conntrack"
	"github.com/calyxnet/calyx/model"
)

// Version is the agent's version, set at build time with -ldflags
// "-X github.com/calyxnet/calyx/agent.Version=..." (the Makefile does, as
// for calyxctl's). It is calyx_build_info's version label.
var Version = "dev"

type metrics struct {
	reg         *prometheus.Registry
	mapWrites   *prometheus.CounterVec
	syncs       prometheus.Counter
	syncErrors  prometheus.Counter
	syncSeconds prometheus.Histogram
	// calcSeconds is the compute step of a reconcile alone (snapshot to
	// desired dataplane), which syncSeconds includes.
	calcSeconds prometheus.Histogram
	// watchLag is from a snapshot's arrival from the watch to the end of
	// the reconcile that applied it; revision is that snapshot's.
	watchLag       prometheus.Histogram
	revision       prometheus.Gauge
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
	// natPortRange, natPortsInUse and natPortsBusiest: natOutgoing's
	// source ports (see natPorts).
	natPortRange    prometheus.Gauge
	natPortsInUse   *prometheus.GaugeVec
	natPortsBusiest *prometheus.GaugeVec
	// ifaces names the endpoint of each workload interface, for the
	// per-endpoint counters read at scrape time.
	ifaces *endpointIfaces
}

// histogramBuckets are the buckets of the agent's durations: 100 µs to
// 52 s, a first sync of 50,000 endpoints included.
var histogramBuckets = prometheus.ExponentialBuckets(0.0001, 2, 20)

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
			Buckets: histogramBuckets,
		}),
		calcSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "calyx_calc_duration_seconds",
			Help:    "Time of a reconcile's compute step alone: the model snapshot and the interfaces to the desired content of every map (part of calyx_sync_duration_seconds).",
			Buckets: histogramBuckets,
		}),
		watchLag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "calyx_datastore_watch_lag_seconds",
			Help: "From the datastore watch handing the agent a snapshot (after the watch coalesced its burst of changes) to the end of the reconcile that applied it, retries included. " +
				"The datastore records no commit time, so the time from a write to the watch seeing it is not in it; compare calyx_datastore_revision across nodes for that.",
			Buckets: histogramBuckets,
		}),
		revision: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "calyx_datastore_revision",
			Help: "The datastore revision of the snapshot the dataplane was last reconciled with (etcd: the store's revision; file store: its change counter).",
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
	m.natPortRange = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "calyx_nat_port_range_ports",
		Help: "Source ports in natOutgoing's range (Config.natPortRange): what one node address has toward each destination (address, port, protocol).",
	})
	m.natPortsInUse = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "calyx_nat_ports_in_use",
		Help: "Flows whose source is translated to this node's address (natOutgoing), by family (v4, v6), after the last conntrack collection: each holds one source port toward its destination.",
	}, []string{"family"})
	m.natPortsBusiest = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "calyx_nat_ports_busiest_destination",
		Help: "Source ports of this node's address in use toward the one destination (address, port, protocol) that uses most, by family (v4, v6), after the last conntrack collection. " +
			"At calyx_nat_port_range_ports new flows to it are dropped (reason drop-nat-ports).",
	}, []string{"family"})
	m.ifaces = &endpointIfaces{}
	for _, family := range []string{"v4", "v6"} {
		// Shown before the first conntrack collection, at 0.
		m.natPortsInUse.WithLabelValues(family)
		m.natPortsBusiest.WithLabelValues(family)
	}
	for _, r := range []string{"block", "allocations"} {
		m.deadNodeReleases.WithLabelValues(r)
	}
	m.dsConnected.Set(1)
	m.reg.MustRegister(m.mapWrites, m.syncs, m.syncErrors, m.syncSeconds, m.calcSeconds, m.watchLag, m.revision, m.kernelRoutes, m.attaches, m.attachFailures,
		m.endpoints, m.ready, m.dsConnected, m.workloadMTU, m.resyncs, m.ctFlows, m.ctExpired, m.ctEntries, m.ctCapacity, m.ctCreated, m.ctEvictions, m.fragOrphans, m.mapEntries, m.mapCapacity, m.deadNodeReleases,
		m.natPortRange, m.natPortsInUse, m.natPortsBusiest, buildInfo(), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// buildInfo is calyx_build_info: always 1, its labels say what runs.
func buildInfo() prometheus.Collector {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "calyx_build_info",
		Help:        "1, with the agent's version (git describe at build, which names the commit; dev without the Makefile) and the Go version it was built with.",
		ConstLabels: prometheus.Labels{"version": Version, "goversion": runtime.Version()},
	})
	g.Set(1)
	return g
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
	m.reg.MustRegister(&dataplaneCollector{maps: mp, ifaces: m.ifaces})
}

// applied publishes a reconcile that succeeded with the snapshot of
// revision, done at done: when the watch delivered a snapshot since the
// last one that succeeded, first at arrived (not zero), the lag since.
func (m *metrics) applied(revision uint64, arrived, done time.Time) {
	m.revision.Set(float64(revision))
	if !arrived.IsZero() {
		m.watchLag.Observe(done.Sub(arrived).Seconds())
	}
}

// natPorts publishes natOutgoing's port use from a conntrack collection's
// SNAT (by translated source address): the flows translated to the node's
// addresses of cfg, and the range of cfg (the default when unset).
func (m *metrics) natPorts(snat map[netip.Addr]conntrack.PortUse, cfg bpfmap.NodeConfig) {
	m.natPortRange.Set(natRangeSize(cfg.NATPorts))
	for family, addr := range map[string]netip.Addr{"v4": cfg.Address, "v6": cfg.Address6} {
		var u conntrack.PortUse
		if addr.IsValid() {
			u = snat[addr.Unmap()]
		}
		m.natPortsInUse.WithLabelValues(family).Set(float64(u.Flows))
		m.natPortsBusiest.WithLabelValues(family).Set(float64(u.Busiest))
	}
}

// natRangeSize is the number of ports in natOutgoing's range [min, max],
// the programs' built-in one (the model's default) when unset.
func natRangeSize(p [2]uint16) float64 {
	lo, hi := p[0], p[1]
	if lo == 0 || hi < lo {
		lo, hi = (&model.ConfigSpec{}).NATPorts()
	}
	return float64(hi) - float64(lo) + 1
}

// endpointIfaces is which local endpoint each workload interface serves,
// as the last reconcile attached them. The main loop writes it, scrapes
// read it.
type endpointIfaces struct {
	mu        sync.Mutex
	byIfindex map[uint32]endpointIface
}

// endpointIface is a workload interface's endpoint and name.
type endpointIface struct{ endpoint, ifname string }

// set records the workload interfaces of attach (the underlay is none).
func (e *endpointIfaces) set(attach map[uint32]calc.Attachment) {
	by := make(map[uint32]endpointIface, len(attach))
	for idx, at := range attach {
		if !at.Underlay {
			by[idx] = endpointIface{endpoint: at.Endpoint, ifname: at.Ifname}
		}
	}
	e.mu.Lock()
	e.byIfindex = by
	e.mu.Unlock()
}

// get returns the endpoint interface of ifindex, as last set.
func (e *endpointIfaces) get(ifindex uint32) (endpointIface, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	ei, ok := e.byIfindex[ifindex]
	return ei, ok
}

// all returns a copy of the endpoint interfaces by ifindex.
func (e *endpointIfaces) all() map[uint32]endpointIface {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make(map[uint32]endpointIface, len(e.byIfindex))
	for idx, ei := range e.byIfindex {
		out[idx] = ei
	}
	return out
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// dataplaneCollector exports the BPF counters, read from the map at scrape
// time, so nothing on the packet path depends on Prometheus: by interface
// and reason as the programs keep them, and summed per endpoint and
// direction and per drop reason.
type dataplaneCollector struct {
	maps   *bpfmap.Maps
	ifaces *endpointIfaces
}

var (
	dpPackets = prometheus.NewDesc("calyx_dataplane_packets_total",
		"Packets by verdict reason and interface, summed over CPUs.", []string{"interface", "reason"}, nil)
	dpBytes = prometheus.NewDesc("calyx_dataplane_bytes_total",
		"Bytes by verdict reason and interface, summed over CPUs.", []string{"interface", "reason"}, nil)
	// The direction of a packet on a workload interface is told by its
	// verdict: to-workload is counted where a packet enters the workload,
	// every other verdict on its interface by the program that got the
	// packet from it.
	endpointHelp = " by local endpoint, its interface and direction: from-workload counts what the workload sent and the dataplane passed on or answered " +
		"(every verdict on its interface but to-workload and the drops), to-workload what was delivered into it. " +
		"Drops are in calyx_drops_total and, per interface, calyx_dataplane_packets_total{reason=~\"drop-.*\"}."
	epPackets = prometheus.NewDesc("calyx_endpoint_packets_total", "Packets"+endpointHelp,
		[]string{"endpoint", "interface", "direction"}, nil)
	epBytes = prometheus.NewDesc("calyx_endpoint_bytes_total", "Bytes (as the programs got the packets)"+endpointHelp,
		[]string{"endpoint", "interface", "direction"}, nil)
	drops = prometheus.NewDesc("calyx_drops_total",
		"Packets the programs dropped, by reason, summed over interfaces and CPUs (calyx_dataplane_packets_total has them per interface).",
		[]string{"reason"}, nil)
)

// Directions of calyx_endpoint_packets_total.
const (
	dirFromWorkload = "from-workload"
	dirToWorkload   = "to-workload"
)

func (c *dataplaneCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- dpPackets
	ch <- dpBytes
	ch <- epPackets
	ch <- epBytes
	ch <- drops
}

func (c *dataplaneCollector) Collect(ch chan<- prometheus.Metric) {
	counters, err := c.maps.Counters()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(dpPackets, err)
		return
	}
	collectDerived(ch, counters, c.ifaces.all())
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

// collectDerived sends what the verdict counters add up to: per endpoint
// and direction (every endpoint interface, at 0 before its first packet)
// and per drop reason (every one, at 0 when none was dropped), so that
// rates start at the first packet.
func collectDerived(ch chan<- prometheus.Metric, counters map[bpfmap.CounterKey]bpfmap.Counter, ifaces map[uint32]endpointIface) {
	type dirKey struct {
		ifindex uint32
		dir     string
	}
	perDir := map[dirKey]bpfmap.Counter{}
	perDrop := map[bpfmap.Reason]bpfmap.Counter{}
	add := func(a, b bpfmap.Counter) bpfmap.Counter {
		return bpfmap.Counter{Packets: a.Packets + b.Packets, Bytes: a.Bytes + b.Bytes}
	}
	for k, v := range counters {
		switch {
		case k.Reason.IsDrop():
			perDrop[k.Reason] = add(perDrop[k.Reason], v)
		case k.Reason == bpfmap.ReasonToWorkload:
			perDir[dirKey{k.Ifindex, dirToWorkload}] = add(perDir[dirKey{k.Ifindex, dirToWorkload}], v)
		default:
			perDir[dirKey{k.Ifindex, dirFromWorkload}] = add(perDir[dirKey{k.Ifindex, dirFromWorkload}], v)
		}
	}
	for idx, ei := range ifaces {
		for _, dir := range []string{dirFromWorkload, dirToWorkload} {
			v := perDir[dirKey{idx, dir}]
			ch <- prometheus.MustNewConstMetric(epPackets, prometheus.CounterValue, float64(v.Packets), ei.endpoint, ei.ifname, dir)
			ch <- prometheus.MustNewConstMetric(epBytes, prometheus.CounterValue, float64(v.Bytes), ei.endpoint, ei.ifname, dir)
		}
	}
	for _, r := range bpfmap.Reasons() {
		if r.IsDrop() {
			ch <- prometheus.MustNewConstMetric(drops, prometheus.CounterValue, float64(perDrop[r].Packets), r.String())
		}
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
