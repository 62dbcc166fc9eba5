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
	mapEntries     *prometheus.GaugeVec
	mapCapacity    *prometheus.GaugeVec
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
		m.endpoints, m.ready, m.dsConnected, m.workloadMTU, m.resyncs, m.ctFlows, m.ctExpired, m.mapEntries, m.mapCapacity, m.deadNodeReleases, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
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
