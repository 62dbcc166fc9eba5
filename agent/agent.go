// Package agent runs calyx's control loop: it follows the datastore and the
// host's interfaces, computes the desired dataplane (calc), writes the
// difference into the pinned maps (mapsync), attaches programs to workload
// interfaces (loader) and keeps the local /32 routes (kernel).
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/calyxnet/calyx/agent/bgp"
	"github.com/calyxnet/calyx/agent/calc"
	"github.com/calyxnet/calyx/agent/host"
	"github.com/calyxnet/calyx/agent/kernel"
	"github.com/calyxnet/calyx/agent/mapsync"
	"github.com/calyxnet/calyx/agent/metadataproxy"
	"github.com/calyxnet/calyx/agent/monitor"
	"github.com/calyxnet/calyx/agent/subnetsvc"
	"github.com/calyxnet/calyx/agent/undo"
	"github.com/calyxnet/calyx/bpf"
	"github.com/calyxnet/calyx/bpfmap"
	"github.com/calyxnet/calyx/conntrack"
	"github.com/calyxnet/calyx/ipam"
	"github.com/calyxnet/calyx/loader"
	"github.com/calyxnet/calyx/model"
	"github.com/calyxnet/calyx/policy"
)

// Config is the agent's command-line configuration.
type Config struct {
	Node      string
	Datastore string
	Underlay  string
	BPFFS     string
	Metrics   string
	Attach    loader.Mode
	// XDP says where the host prefilter runs on the underlay.
	XDP    loader.XDPMode
	Logger *slog.Logger
	// ResyncInterval is how often the agent re-reads the pinned maps and
	// repairs whatever differs from the model; 0 turns it off.
	ResyncInterval time.Duration
	// EtcdCA, EtcdCert and EtcdKey are PEM files for an etcd datastore
	// over TLS: the CA that signed etcd's certificate, and the agent's
	// client certificate and key (both or neither).
	EtcdCA, EtcdCert, EtcdKey string
	// NodeTTL is the lease that keeps this node live in an etcd datastore:
	// the node shows as not live that long after its agent stops. 0 means
	// DefaultNodeTTL.
	NodeTTL time.Duration
	// BGPWithdrawOnStop withdraws this node's BGP routes when the agent
	// stops. Off, a stop is a graceful restart for the peers: they keep the
	// routes (the dataplane keeps forwarding) until the next agent
	// re-advertises them, which is what an upgrade wants.
	BGPWithdrawOnStop bool
	// DebugFailAttachFile names a file of interface names, one per line,
	// whose attach the agent makes fail while they are listed: the test of
	// what one failing interface does to the others (Felix has such
	// DebugSimulate settings). "" in production.
	DebugFailAttachFile string
	// EmptyBlockGrace is how long one of this node's IPAM blocks may stay
	// empty (no allocation, no endpoint address inside) before the agent
	// gives it back to the pool; 0 keeps them.
	EmptyBlockGrace time.Duration
	// DeadNodeGrace is how long another node holding IPAM blocks may stay
	// without a live agent (its liveness key in an etcd datastore gone,
	// as seen by this agent the whole time) before the agents, one at a
	// time by lock, give back what of its blocks no endpoint uses; 0 keeps
	// them. A datastore without liveness (the file store) never does.
	DeadNodeGrace time.Duration
}

// DefaultNodeTTL is the default Config.NodeTTL.
const DefaultNodeTTL = 30 * time.Second

// startupTimeout bounds each datastore request made while starting (the
// first read of the model, the first try at registering the node): an
// unreachable datastore must not keep the agent from adopting the
// dataplane and reporting why it is not ready. It is longer than the etcd
// store's own request timeout (5s), so that the store gives up first and
// reports the outage (WithStatus): a caller's deadline says nothing about
// etcd.
const startupTimeout = 10 * time.Second

// Agent is one running agent.
type Agent struct {
	cfg Config
	log *slog.Logger
	ds  model.Datastore
	dp  *loader.Dataplane
	// ledger records what the agent changed on the host, for --cleanup
	// (nil without a pin directory).
	ledger *undo.Ledger
	// monitor hands drop events to /monitor's clients (calyxctl monitor).
	monitor *monitor.Hub
	syncer  *mapsync.Syncer
	metrics *metrics
	// calc computes the desired dataplane from each snapshot, redoing
	// only what changed; a resync starts it afresh.
	calc *calc.Calculator
	// writesSinceFree are the map writes since the garbage was last
	// given back to the system; freeing says that is under way.
	writesSinceFree int
	freeing         atomic.Bool

	snap     *model.Snapshot
	underlay string                    // the underlay interface's name
	records  map[uint32]bpfmap.Link    // cx_links, as last written
	attached map[uint32]string         // ifindex → ifname attached by this process
	failed   map[uint32]*attachFailure // workload interfaces whose attach failed, by ifindex
	// poolsChecked is the pool set uncovered was computed for: listing the
	// kernel's routes (with every local /32) is not repeated on every
	// reconcile, only when the pools change and at every resync.
	poolsChecked string
	uncovered    []netip.Prefix
	// pinsSwept is set once the TCX pins left by a previous agent are checked.
	pinsSwept bool
	// xdp says the XDP prefilter runs on the underlay.
	xdp bool
	// refused is what was last logged of the endpoints whose interface
	// the agent may not touch, so each change is logged once.
	refused string
	// conflicts is what was last logged of calc.Desired.Conflicts.
	conflicts string
	// svc serves DHCP and router advertisements to local endpoints; nil
	// when it could not start.
	svc *subnetsvc.Server
	// metadata serves the metadata service on [fe80::a9fe:a9fe]:80 of
	// local endpoint interfaces, for IPv6 instances.
	metadata *metadataproxy.Proxy
	// bgp is this node's BGP speaker, running while the model has a
	// BGPConfiguration; adopted says the agent started over a dataplane a
	// previous agent left forwarding (its peers keep our routes meanwhile).
	bgp     bgpState
	adopted bool
	// migrating: the load found pins of a previous layout and began
	// their migration; its second pass and the old pins' removal wait
	// until every link runs this build's programs.
	migrating bool
	// ctx is Run's, for what reconcile starts.
	ctx context.Context

	// rules names the rules in Log events (policy's numbers): the last
	// Desired's, which the calculator changes in place, under rulesMu.
	rulesMu sync.Mutex
	rules   map[uint32]policy.RuleInfo

	// kick asks the main loop for a reconcile (interfaces changed, the
	// datastore came back).
	kick chan struct{}
	// dsBack tells registerLoop that the datastore is reachable again.
	dsBack chan struct{}

	mu       sync.Mutex
	ready    bool
	notReady string
	// dsDown says why the datastore is unreachable, "" while it is not.
	// The agent is not ready then, and the dataplane stays as it is.
	dsDown string
}

// reconcileRetry is the delay before a failed reconcile is tried again,
// doubled per failure in a row up to reconcileRetryMax.
const (
	reconcileRetry    = time.Second
	reconcileRetryMax = 30 * time.Second
)

// bulkWrites is the map writes (over one reconcile or several) after which
// the agent returns its garbage to the system at once (see loop).
const bulkWrites = 10000

// debounce coalesces bursts of interface changes (a batch of taps made
// together) into one reconcile; snapshots come debounced by the watch.
const debounce = 5 * time.Millisecond

// Run starts the agent and blocks until ctx ends. Pinned maps and links
// are left in place on return, so traffic keeps flowing until the next
// agent adopts them.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.NodeTTL == 0 {
		cfg.NodeTTL = DefaultNodeTTL
	}
	a := &Agent{cfg: cfg, log: cfg.Logger, attached: make(map[uint32]string), failed: make(map[uint32]*attachFailure), notReady: "starting",
		kick: make(chan struct{}, 1), dsBack: make(chan struct{}, 1), ctx: ctx}
	a.metrics = newMetrics()
	a.monitor = monitor.NewHub()
	a.metrics.reg.MustRegister(bgpCollector{a})
	if cfg.Metrics != "" {
		srv, err := a.serveHTTP(cfg.Metrics)
		if err != nil {
			return err
		}
		defer srv.Close()
	}
	if err := a.openDatastore(); err != nil {
		return err
	}
	defer a.ds.Close()
	if cfg.BPFFS != "" {
		if err := loader.EnsureBPFFS(cfg.BPFFS); err != nil {
			return err
		}
		unlock, err := loader.Lock(cfg.BPFFS)
		if err != nil {
			return err
		}
		defer unlock()
		if a.ledger, err = undo.Open(cfg.BPFFS); err != nil {
			return err
		}
		defer a.ledger.Close()
	}
	if err := kernel.EnableForwarding(a.ledger); err != nil {
		return err
	}
	if err := a.findUnderlay(); err != nil {
		return err
	}
	// The Config (the maps' sizes) is read alone and the node registered
	// before the watch starts, so that its first snapshot holds this
	// node as it is now.
	capacities, modelErr := a.register(ctx)
	// The watch's first snapshot is the whole model read and parsed:
	// begun now, that happens while the kernel verifies the programs.
	type watchStart struct {
		snaps <-chan *model.Snapshot
		err   error
	}
	watching := make(chan watchStart, 1)
	go func() {
		snaps, err := a.ds.Watch(ctx)
		watching <- watchStart{snaps, err}
	}()
	watchTaken := false
	defer func() {
		if !watchTaken {
			<-watching // before the store closes: Close waits for the watch
		}
	}()
	if err := a.loadDataplane(capacities); err != nil {
		return err
	}
	defer a.dp.Close()
	a.startBackground(ctx, modelErr)
	watchErr := func(err error) {
		if ctx.Err() == nil { // not the subscription's socket closed as the agent stops
			a.log.Warn("watch interfaces", "err", err)
		}
	}
	if err := kernel.WatchLinks(ctx, a.poke, watchErr); err != nil {
		return err
	}
	w := <-watching
	watchTaken = true
	if w.err != nil {
		return fmt.Errorf("watch datastore: %w", w.err)
	}
	snaps := w.snaps
	a.log.Info("agent started", "node", cfg.Node, "bpffs", cfg.BPFFS, "datastore", cfg.Datastore, "attach", cfg.Attach)
	return a.loop(ctx, snaps)
}

// openDatastore opens the model's store, reporting its outages.
func (a *Agent) openDatastore() error {
	dsOpts, err := model.TLSOptions(a.cfg.Datastore, a.cfg.EtcdCA, a.cfg.EtcdCert, a.cfg.EtcdKey)
	if err != nil {
		return err
	}
	dsOpts = append(dsOpts, model.WithLogger(a.log), model.WithStatus(a.datastoreStatus))
	if a.ds, err = model.Open(a.cfg.Datastore, dsOpts...); err != nil {
		return fmt.Errorf("open datastore: %w", err)
	}
	return nil
}

// register reads the Config alone, for the maps' sizes (nil: the
// defaults), and registers this node. Its error says the model could not
// be read, or the node not registered: the dataplane then stays as it is
// and the registration is retried in the background (startBackground).
func (a *Agent) register(ctx context.Context) (map[string]uint32, error) {
	sctx, cancel := context.WithTimeout(ctx, startupTimeout)
	defer cancel()
	cfg, err := a.storedConfig(sctx)
	if err != nil {
		// A pinned conntrack table keeps its size anyway; the dataplane
		// stays as it is until the model can be read.
		a.log.Warn("cannot read the model at start; the dataplane stays as it is until it can", "err", err)
		return nil, err
	}
	return cfg.MapCapacities(), a.registerNode(sctx)
}

// loadDataplane loads the programs against the pinned maps (adopting what
// a previous agent left), with capacities as the maps' sizes, and reads
// the maps into the syncer. On success a.dp is set.
func (a *Agent) loadDataplane(capacities map[string]uint32) error {
	dp, err := loader.LoadWith(a.cfg.BPFFS, loader.Options{Capacities: capacities,
		Logf: func(format string, args ...any) { a.log.Warn(fmt.Sprintf(format, args...)) }})
	if err != nil {
		return err
	}
	if a.syncer, err = mapsync.New(dp.Maps); err == nil {
		a.records, err = dp.Maps.Links.All()
	}
	if err != nil {
		dp.Close()
		return err
	}
	a.dp = dp
	if dp.Migrating() {
		// Pins of a previous layout: the maps are converted (a first
		// pass is done), adopted or refilled. The programs still running
		// on the links use the old maps until the first sync swaps them;
		// a second pass then takes what they added, and the old pins go.
		for _, mg := range dp.Migrations() {
			a.log.Info("migrating a pinned map of a previous layout", "map", mg.Map, "from", mg.From, "to", mg.To,
				"kind", mg.Kind, "entries", mg.Result.Entries, "written", mg.Result.Written)
		}
		a.migrating = true
	}
	a.metrics.registerDataplane(dp.Maps)
	a.registerMonitorMetrics(dp.Maps)
	a.metrics.syncedTables(a.syncer.Tables())
	a.adopted = len(a.records) > 0
	return nil
}

// storedConfig reads the Config alone (the defaults when none is stored).
// When that read fails (a file that does not parse, say) the whole model
// is read instead, which skips what does not parse, as the watch does.
func (a *Agent) storedConfig(ctx context.Context) (model.ConfigSpec, error) {
	if v, ok := a.ds.(model.Versioned); ok {
		r, _, err := v.Get(ctx, model.Ref{Kind: model.KindConfig, Name: model.ConfigName})
		if errors.Is(err, model.ErrNotFound) {
			return model.DefaultConfig().Spec, nil
		}
		if c, ok := r.(*model.Config); ok && err == nil {
			return c.Spec, nil
		}
	}
	s, err := a.ds.Snapshot(ctx)
	if err != nil {
		return model.ConfigSpec{}, err
	}
	return s.Config.Spec, nil
}

// findUnderlay settles the underlay interface: the configured one, or the
// one holding the host's address.
func (a *Agent) findUnderlay() error {
	a.underlay = a.cfg.Underlay
	if a.underlay != "" {
		return nil
	}
	var err error
	if a.underlay, _, err = kernel.UnderlayAddress(""); err != nil {
		return fmt.Errorf("find the underlay interface: %w", err)
	}
	return nil
}

// startBackground starts what runs beside the main loop: among it the
// node's registration again when the start's failed (regErr).
func (a *Agent) startBackground(ctx context.Context, regErr error) {
	if err := regErr; err != nil {
		a.log.Warn("node not registered yet; retrying in the background", "node", a.cfg.Node, "err", err)
		go a.registerLoop(ctx)
	}
	if lv, ok := a.ds.(model.Liveness); ok {
		go a.keepAlive(ctx, lv)
	}
	go a.collectConntrack(ctx)
	go a.indexOwnBlocks(ctx)
	go a.releaseBlocks(ctx)
	go a.logPolicy(ctx)
	go a.monitorDrops(ctx)
	a.startSubnetServices(ctx)
	a.startMetadataProxy(ctx)
}

// loop reconciles after every change of the model or the interfaces
// (debounced), retries a failed reconcile, and re-reads the maps every
// resync interval, until ctx ends.
func (a *Agent) loop(ctx context.Context, snaps <-chan *model.Snapshot) error {
	var timer, resync <-chan time.Time
	failures := 0 // reconciles failed in a row
	// arrived is when the watch delivered the oldest snapshot no
	// reconcile has applied yet (zero: none), for the watch lag.
	var arrived time.Time
	startGarbageFreed := false
	if a.cfg.ResyncInterval > 0 {
		t := time.NewTicker(a.cfg.ResyncInterval)
		defer t.Stop()
		resync = t.C
	}
	for {
		select {
		case <-resync:
			// Entries changed behind the agent's back are only seen by
			// reading the maps again; the reconcile then repairs them.
			if err := a.syncer.Reload(); err != nil {
				a.log.Error("resync: read maps", "err", err)
				continue
			}
			a.metrics.resyncs.Inc()
			a.poolsChecked = "" // and the kernel's routes are looked at again
			a.calc = nil        // and the model is computed in full
			if timer == nil {
				timer = time.After(0)
			}
		case <-ctx.Done():
			a.log.Info("agent stopping; dataplane stays as it is")
			a.stopBGP(a.cfg.BGPWithdrawOnStop)
			return nil
		case s, ok := <-snaps:
			if !ok {
				return errors.New("datastore watch ended")
			}
			a.snap = s
			if arrived.IsZero() {
				arrived = time.Now()
			}
			// The watch has gathered the burst already: reconcile now
			// (a retry waiting for its backoff is tried again too).
			timer = time.After(0)
		case <-a.kick:
			if timer == nil {
				timer = time.After(debounce)
			}
		case <-timer:
			timer = nil
			if a.snap == nil {
				continue
			}
			if err := a.reconcile(); err != nil {
				failures++
				delay := min(reconcileRetry<<min(failures-1, 10), reconcileRetryMax)
				a.metrics.syncErrors.Inc()
				a.log.Error("reconcile failed; retrying", "err", err, "failures", failures, "retryIn", delay)
				a.setReady(false, err.Error())
				timer = time.After(delay)
			} else {
				failures = 0
				a.metrics.applied(a.snap.Revision, arrived, time.Now())
				arrived = time.Time{}
				if a.migrating {
					if err := a.finishMigration(); err != nil {
						return err
					}
				}
				if !startGarbageFreed || a.writesSinceFree >= bulkWrites {
					// A start (the whole model read and parsed, every
					// map written) or bulk changes leave much garbage:
					// give it back to the system now, not over minutes;
					// beside the loop, so that no change waits for it.
					if a.freeing.CompareAndSwap(false, true) {
						go func() {
							debug.FreeOSMemory()
							a.freeing.Store(false)
						}()
					}
					startGarbageFreed, a.writesSinceFree = true, 0
				}
			}
		}
	}
}

// reconcile brings the dataplane to the desired state of the current
// snapshot and interfaces, in the design's order: compute, then the maps
// and programs (entries first, then programs, then removal of what is
// stale, so traffic stays whole), then the host's routes, then what is
// announced (DHCP, BGP).
func (a *Agent) reconcile() error {
	start := time.Now()
	links, err := kernel.Links()
	if err != nil {
		return err
	}
	hostAddrs, err := kernel.HostAddrs()
	if err != nil {
		return err
	}
	if a.calc == nil {
		a.calc = a.newCalculator()
	}
	// The calculator changes the maps of the Desired it last returned,
	// Rules among them, which logPolicy reads: not meanwhile.
	a.rulesMu.Lock()
	calcStart := time.Now()
	d := a.calc.Compute(calc.Input{Snapshot: a.snap, Node: a.cfg.Node, Underlay: a.underlay, Links: links,
		HostAddrs: hostAddrs, PrefilterXDP: a.xdp})
	a.metrics.calcSeconds.Observe(time.Since(calcStart).Seconds())
	if d.PolicyErr == nil {
		a.rules = d.Rules
	}
	a.rulesMu.Unlock()
	writes, progErr := a.program(d)
	a.writesSinceFree += writes
	if d.PolicyErr != nil {
		return progErr
	}
	// What every node advertises, once per reconcile: syncBGP sends this
	// node's, the host routes check the others' against what BGP learned.
	var bgpIn map[string]*bgp.AdvertiseInput
	if a.snap.BGPConfig != nil {
		bgpIn = advertiseInputs(a.snap)
	}
	routeChanges, routeErr := a.syncHostRoutes(d, bgpIn)
	a.updateSubnetServices(links, d)
	a.updateMetadataProxy(d)
	a.syncBGP(a.ctx, bgpIn)
	a.report(d, start, writes, routeChanges)
	// What failed is retried (the loop backs off); everything else is done.
	return errors.Join(progErr, routeErr)
}

// program writes the maps and attaches the programs d asks for, then
// removes what it no longer does. It returns the map writes made. A map
// that refuses writes or an attach that fails does not stop the rest: what
// failed is returned (all of it, joined) after everything else was done.
func (a *Agent) program(d *calc.Desired) (int, error) {
	if d.PolicyErr != nil {
		// Nothing changes until the model compiles again.
		return 0, fmt.Errorf("compile network policy: %w", d.PolicyErr)
	}
	var errs []error
	// Endpoints whose attach failed before stay so until a retry works:
	// their state is written as such, not flipped to ready and back.
	a.markAttachFailed(d)
	for _, slot := range d.FreshCounterSlots {
		// Before the interface that gets it is written: it starts at 0.
		errs = append(errs, a.dp.Maps.ZeroCounterSlot(slot))
	}
	up, err := a.syncer.Upsert(d)
	a.metrics.countWrites(up)
	writes := up.Total()
	errs = append(errs, err)
	errs = append(errs, a.attach(d))
	a.reserveNATPorts(d)
	tc := len(d.Prefilter) > 0 && !a.xdp
	if tc != d.Config.PrefilterTC || a.markAttachFailed(d) {
		// The underlay's XDP prefilter came or went with this attach, or
		// endpoints' attaches failed or recovered: cx_endpoints says so.
		d.Config.PrefilterTC = tc
		again, err := a.syncer.Upsert(d)
		a.metrics.countWrites(again)
		writes += again.Total()
		errs = append(errs, err)
	}
	errs = append(errs, a.detachStale(d))
	pr, err := a.syncer.Prune(d)
	a.metrics.countWrites(pr)
	return writes + pr.Total(), errors.Join(append(errs, err)...)
}

// counterSlotFill is how full cx_slot_counters is: the entries of the
// slots in use (the underlay's and each workload interface's). Full, the
// interfaces after the last slot are counted in cx_counters.
func counterSlotFill(d *calc.Desired) mapsync.Fill {
	used := 1
	for _, v := range d.Ifaces {
		if v.CounterSlot != 0 {
			used++
		}
	}
	reasons := int(bpfmap.SlotReasons)
	return mapsync.Fill{Table: bpf.CalyxMapCxSlotCounters, Entries: used * reasons, Capacity: int(bpfmap.CounterSlots) * reasons}
}

// newCalculator starts computing the model afresh, keeping the counter
// slots the interfaces have in the maps (and with them their counts).
func (a *Agent) newCalculator() *calc.Calculator {
	c := calc.NewCalculator()
	held := map[uint32]uint16{}
	err := a.dp.Maps.Ifaces.Each(func(idx uint32, v bpfmap.Iface) bool {
		held[idx] = v.CounterSlot
		return true
	})
	if err != nil {
		// The interfaces get new slots, zeroed: their counts start again.
		a.log.Warn("read counter slots", "err", err)
	}
	c.AdoptCounterSlots(held)
	return c
}

// reserveNATPorts keeps the host's own sockets out of natOutgoing's ports.
func (a *Agent) reserveNATPorts(d *calc.Desired) {
	p := d.Config.NATPorts
	if p[0] == 0 {
		return
	}
	if changed, err := kernel.ReserveNATPorts(a.ledger, p[0], p[1]); err != nil {
		// The host's own sockets may then collide with a translated
		// flow's port: worth a warning, no reason to stop.
		a.log.Warn("reserve the natOutgoing ports from the host's sockets", "err", err)
	} else if changed {
		a.log.Info("reserved natOutgoing ports", "sysctl", "net.ipv4.ip_local_reserved_ports", "ports", fmt.Sprintf("%d-%d", p[0], p[1]))
	}
}

// syncHostRoutes makes the host's FIB hold d's routes, the pool routes
// where no kernel route covers a pool, and the routes learned over BGP
// (bgpIn: what every node advertises). It returns how many routes it added
// and removed.
func (a *Agent) syncHostRoutes(d *calc.Desired, bgpIn map[string]*bgp.AdvertiseInput) (int, error) {
	uncovered, err := a.uncoveredPools()
	if err != nil {
		return 0, err
	}
	// A workload whose attach failed is down: no route leads to it.
	routes := slices.DeleteFunc(slices.Concat(d.KernelRoutes, calc.PoolRoutes(d, uncovered)), func(r host.Route) bool {
		return a.attachFailedOn(r.Ifindex)
	})
	bgpRoutes := a.bgpLearned(routes, bgpIn)
	added, removed, err := kernel.SyncRoutes(slices.Concat(routes, bgpRoutes))
	a.metrics.kernelRoutes.Add(float64(added + removed))
	if err != nil && len(bgpRoutes) > 0 {
		// Maybe a route learned over BGP: the dataplane's own routes
		// must not depend on it.
		a.markFIBFailed(err)
		added, removed, err = kernel.SyncRoutes(routes)
		a.metrics.kernelRoutes.Add(float64(added + removed))
	}
	if err != nil {
		return added + removed, err
	}
	local := slices.DeleteFunc(slices.Clone(d.LocalRoutes), func(r host.LocalRoute) bool {
		return a.attachFailedOn(r.Ifindex)
	})
	ladded, lremoved, err := kernel.SyncLocalRoutes(local)
	a.metrics.kernelRoutes.Add(float64(ladded + lremoved))
	if err != nil {
		// The gateways answer pings and renewals; the dataplane does
		// not need them, so this is no reason to stop.
		a.log.Warn("local routes (subnet gateways, fe80::1, the metadata address)", "err", err)
	}
	return added + removed + ladded + lremoved, nil
}

// report publishes a finished reconcile: metrics, the synced log line,
// readiness.
func (a *Agent) report(d *calc.Desired, start time.Time, writes, routeChanges int) {
	a.metrics.endpoints.WithLabelValues("programmed").Set(float64(len(d.Ifaces)))
	a.metrics.endpoints.WithLabelValues("pending").Set(float64(len(d.Pending)))
	a.metrics.endpoints.WithLabelValues("refused").Set(float64(len(d.Refused)))
	a.metrics.endpoints.WithLabelValues("attach-failed").Set(float64(len(a.failed)))
	a.logRefused(d)
	a.logConflicts(d)
	a.metrics.workloadMTU.Set(float64(d.WorkloadMTU))
	a.metrics.ifaces.set(d.Attach)
	a.metrics.natPortRange.Set(natRangeSize(d.Config.NATPorts)) // and at each conntrack collection
	for _, f := range a.syncer.Fill() {
		a.metrics.mapFill(f)
	}
	a.metrics.mapFill(counterSlotFill(d))
	a.metrics.syncs.Inc()
	a.metrics.syncSeconds.Observe(time.Since(start).Seconds())
	a.log.Info("synced", "revision", a.snap.Revision, "endpoints", len(d.Ifaces), "pending", len(d.Pending),
		"mapWrites", writes, "kernelRoutes", routeChanges, "workloadMTU", d.WorkloadMTU,
		"took", time.Since(start).Round(time.Microsecond))
	if len(d.Pending) > 0 {
		a.log.Debug("endpoints waiting for their interface", "endpoints", strings.Join(d.Pending, ","))
	}
	if why := a.attachFailures(); why != "" {
		// The rest of the node is programmed; these endpoints are not.
		a.setReady(false, why)
		return
	}
	a.setReady(true, "")
}

// logRefused says, once per change, which endpoints name an interface the
// agent may not touch (the underlay, lo, one with a host address) and why.
// Nothing of theirs is programmed; every other endpoint is.
func (a *Agent) logRefused(d *calc.Desired) {
	var b strings.Builder
	for _, name := range d.Refused {
		st := d.Endpoints[model.EndpointID(name)]
		fmt.Fprintf(&b, "%s:%s:%s;", name, st.Ifname, st.State)
	}
	if b.String() == a.refused {
		return
	}
	a.refused = b.String()
	for _, name := range d.Refused {
		st := d.Endpoints[model.EndpointID(name)]
		a.log.Error("endpoint refused: its interface is not touched", "endpoint", name, "interface", st.Ifname,
			"state", st.State.String(), "reason", st.State.Reason())
	}
}

// logConflicts says, once per change, which endpoints lost a conflict of
// the model (calc.Desired.Conflicts): they are not programmed.
func (a *Agent) logConflicts(d *calc.Desired) {
	all := strings.Join(d.Conflicts, "\n")
	if all == a.conflicts {
		return
	}
	a.conflicts = all
	for _, c := range d.Conflicts {
		a.log.Error("endpoint not programmed: the model gives what it claims to another (the first by name keeps it)", "conflict", c)
	}
}

// attach attaches the programs to every interface d wants them on and
// records each link. A workload interface whose attach fails does not stop
// the others nor the reconcile: it is taken down (nothing it sends or is
// sent may pass unchecked), its endpoint is marked attach-failed in d, and
// it is tried again with backoff (attachRetry). The underlay's failure is
// the node's: returned (the reconcile fails and is retried), after the
// workloads were attached.
func (a *Agent) attach(d *calc.Desired) error {
	now := time.Now()
	var underlayErr error
	for idx, at := range d.Attach {
		if a.attached[idx] == at.Ifname {
			continue
		}
		f := a.failed[idx]
		if f != nil && f.ifname == at.Ifname && now.Before(f.next) {
			continue
		}
		err := a.attachOne(d, idx, at)
		switch {
		case err == nil:
			delete(a.failed, idx)
		case at.Underlay:
			underlayErr = fmt.Errorf("attach to the underlay %s: %w", at.Ifname, err)
		default:
			a.attachFailed(idx, at, err, f)
		}
	}
	for idx, f := range a.failed {
		if at, ok := d.Attach[idx]; !ok || at.Ifname != f.ifname {
			delete(a.failed, idx)
		}
	}
	return underlayErr
}

// markAttachFailed gives the endpoints whose attach failed (a.failed) the
// attach-failed state in d, and the ones marked so that are attached now
// their ready state back. It says whether it changed d.
func (a *Agent) markAttachFailed(d *calc.Desired) bool {
	changed := false
	for id, st := range d.Endpoints {
		idx := st.Ifindex
		f, failed := a.failed[idx]
		failed = failed && st.Ifname == f.ifname
		switch {
		case failed && st.State == bpfmap.EndpointReady:
			st.State = bpfmap.EndpointAttachFailed
		case !failed && st.State == bpfmap.EndpointAttachFailed:
			st.State = bpfmap.EndpointReady
		default:
			continue
		}
		d.Endpoints[id] = st
		changed = true
	}
	return changed
}

// attachFailure is a workload interface whose attach failed.
type attachFailure struct {
	ifname, endpoint string
	err              error
	tries            int
	next             time.Time // no new try before
}

// attachRetry is the first retry's delay, doubled per failure up to
// attachRetryMax.
const (
	attachRetry    = time.Second
	attachRetryMax = time.Minute
)

// attachFailed takes a workload interface whose attach failed down and
// schedules the next try.
func (a *Agent) attachFailed(idx uint32, at calc.Attachment, err error, prev *attachFailure) {
	f := &attachFailure{ifname: at.Ifname, endpoint: at.Endpoint, err: err, tries: 1}
	if prev != nil && prev.ifname == at.Ifname {
		f.tries = prev.tries + 1
	}
	delay := min(attachRetry<<min(f.tries-1, 10), attachRetryMax)
	f.next = time.Now().Add(delay)
	a.failed[idx] = f
	a.metrics.attachFailures.Inc()
	if derr := kernel.SetLinkUp(at.Ifindex, false); derr != nil {
		a.log.Warn("take a workload interface whose attach failed down", "interface", at.Ifname, "err", derr)
	}
	delete(a.attached, idx)
	a.log.Error("attach failed; interface down, retrying", "interface", at.Ifname, "ifindex", idx, "endpoint", at.Endpoint,
		"err", err, "tries", f.tries, "retryIn", delay)
	time.AfterFunc(delay, a.poke)
}

// attachFailedOn says whether ifindex is a workload interface whose
// attach failed (it is down: no route may lead to it).
func (a *Agent) attachFailedOn(ifindex int) bool {
	_, failed := a.failed[uint32(ifindex)]
	return failed
}

// attachFailures says which endpoints' attach failed, for /readyz ("" when
// none did).
func (a *Agent) attachFailures() string {
	if len(a.failed) == 0 {
		return ""
	}
	var out []string
	for _, f := range a.failed {
		out = append(out, fmt.Sprintf("endpoint %s (%s): %v", f.endpoint, f.ifname, f.err))
	}
	slices.Sort(out)
	return "attach failed: " + strings.Join(out, "; ")
}

// simulatedAttachFailure is Config.DebugFailAttachFile's failure for
// ifname, if it is listed.
func (a *Agent) simulatedAttachFailure(ifname string) error {
	if a.cfg.DebugFailAttachFile == "" {
		return nil
	}
	b, err := os.ReadFile(a.cfg.DebugFailAttachFile)
	if err != nil {
		return nil // no file: nothing fails
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if strings.TrimSpace(line) == ifname {
			return fmt.Errorf("attach %s: simulated failure (--debug-fail-attach-file %s)", ifname, a.cfg.DebugFailAttachFile)
		}
	}
	return nil
}

// attachOne prepares an interface and attaches its programs, then records
// the link in cx_links.
func (a *Agent) attachOne(d *calc.Desired, idx uint32, at calc.Attachment) error {
	if err := a.simulatedAttachFailure(at.Ifname); err != nil {
		return err
	}
	if !at.Underlay {
		if err := kernel.PrepareWorkloadInterface(a.ledger, at.Ifname, d.Config.Metadata.Addr().IsLoopback()); err != nil {
			return err
		}
	}
	role := loader.RoleWorkload
	if at.Underlay {
		role = loader.RoleUnderlay
	}
	mode, err := a.dp.Attach(at.Ifname, at.Ifindex, role, a.cfg.Attach)
	if err != nil {
		return err
	}
	if at.Underlay {
		if err := a.attachPrefilter(at.Ifname, at.Ifindex); err != nil {
			return err
		}
	}
	// Up only once its programs run: a workload never passes unchecked.
	if err := kernel.SetLinkUp(at.Ifindex, true); err != nil {
		return err
	}
	a.attached[idx] = at.Ifname
	a.metrics.attaches.WithLabelValues(mode.String()).Inc()
	rec := bpfmap.Link{
		Ifname:        at.Ifname,
		Mode:          mode,
		IngressProgID: a.dp.ProgramID(role, loader.HookIngress),
		EgressProgID:  a.dp.ProgramID(role, loader.HookEgress),
		EndpointID:    d.Ifaces[idx].EndpointID,
	}
	if a.records[idx] != rec {
		if err := a.dp.Maps.Links.Put(idx, rec); err != nil {
			return err
		}
		a.records[idx] = rec
	}
	a.log.Debug("attached", "interface", at.Ifname, "ifindex", idx, "role", role, "endpoint", at.Endpoint, "mode", mode)
	return nil
}

// attachPrefilter puts the XDP prefilter on the underlay where --xdp
// says, and records whether it runs (the TC check stands in when not).
func (a *Agent) attachPrefilter(ifname string, ifindex int) error {
	mode := a.cfg.XDP
	if mode == "" {
		mode = loader.XDPAuto
	}
	veth, err := kernel.IsVeth(ifname)
	if err != nil {
		return err
	}
	if mode == loader.XDPOff || mode == loader.XDPAuto && veth {
		a.xdp = false
		return a.dp.DetachXDP(ifindex)
	}
	if err := a.dp.AttachXDP(ifname, ifindex); err != nil {
		if mode == loader.XDPNative {
			return err
		}
		a.log.Warn("no XDP on the underlay; the prefilter runs at TC", "interface", ifname, "err", err)
		a.xdp = false
		return nil
	}
	a.xdp = true
	a.log.Info("XDP prefilter attached", "interface", ifname)
	return nil
}

// logPolicy logs each packet a Log rule matched and hands every policy
// event to the monitor, until ctx ends.
func (a *Agent) logPolicy(ctx context.Context) {
	r, err := a.dp.Maps.PolicyLog()
	readRing(ctx, a.log, "policy log", r, err, func(ev bpfmap.PolicyEvent) {
		rule := a.ruleName(ev.Rule)
		a.monitor.Publish(a.policyEvent(ev, rule))
		if ev.Kind == bpfmap.PolicyEventLog {
			a.log.Info("policy log", "rule", rule, "ifindex", ev.Ifindex, "proto", ev.Proto, "src", ev.Src,
				"dst", ev.Dst, "allowed", ev.Allowed)
		}
	})
}

// detachStale removes programs, link records, pins and counters of
// interfaces that are no longer (or, after a restart, no longer the same)
// local endpoints.
func (a *Agent) detachStale(d *calc.Desired) error {
	detached := false
	defer func() {
		if detached && a.ledger != nil {
			// The settings of interfaces that went need no putting back.
			if _, err := a.ledger.Prune(); err != nil {
				a.log.Warn("prune the undo ledger", "err", err)
			}
		}
	}()
	for idx, rec := range a.records {
		if at, ok := d.Attach[idx]; ok && at.Ifname == rec.Ifname {
			continue
		}
		detached = true
		if err := a.dp.Detach(rec.Ifname, int(idx)); err != nil {
			a.log.Warn("detach", "interface", rec.Ifname, "ifindex", idx, "err", err)
		}
		if err := a.dp.Maps.Links.Delete(idx); err != nil {
			return err
		}
		if err := a.dp.DetachXDP(int(idx)); err != nil {
			a.log.Warn("detach xdp", "interface", rec.Ifname, "ifindex", idx, "err", err)
		}
		if err := a.dp.Maps.DeleteCounters(idx); err != nil {
			return err
		}
		if err := a.dp.Maps.DeletePolicyHits(idx); err != nil {
			return err
		}
		delete(a.records, idx)
		delete(a.attached, idx)
		// Its endpoint is gone from d: the last reconcile's says which it was.
		ei, _ := a.metrics.ifaces.get(idx)
		a.log.Info("detached", "interface", rec.Ifname, "ifindex", idx, "endpoint", ei.endpoint)
	}
	// Pins outlive only a previous agent (Detach removes its own), so they
	// are swept once, when this agent adopts the dataplane.
	if a.pinsSwept {
		return nil
	}
	pins, err := loader.PinnedLinks(a.dp.Dir())
	if err != nil {
		return err
	}
	for _, p := range pins {
		if _, ok := d.Attach[uint32(p.Ifindex)]; ok {
			continue
		}
		if err := loader.RemoveStalePin(p); err != nil {
			return err
		}
	}
	a.pinsSwept = true
	return nil
}

// poke asks the main loop for a reconcile; it never blocks.
func (a *Agent) poke() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// registerConflicts bounds the read-modify-write retries of registerNode
// when others write the Node at the same time.
const registerConflicts = 5

// registerNode creates this agent's Node, or updates the spec.ipv4Address
// of an existing one to the underlay's address (with its prefix), keeping
// its labels and every other field, as an operator would expect of a new
// or re-addressed hypervisor. The update is a compare-and-swap, so a
// concurrent edit of the Node is never lost.
func (a *Agent) registerNode(ctx context.Context) error {
	ifname, addr, err := kernel.UnderlayAddress(a.underlay)
	if err != nil {
		return err
	}
	return a.registerAddress(ctx, ifname, addr)
}

// registerAddress is registerNode with the underlay's name and address.
func (a *Agent) registerAddress(ctx context.Context, ifname string, addr netip.Prefix) error {
	v, ok := a.ds.(model.Versioned)
	if !ok {
		return a.registerNodeApply(ctx, ifname, addr)
	}
	ref := model.Ref{Kind: model.KindNode, Name: a.cfg.Node}
	for range registerConflicts {
		r, rev, err := v.Get(ctx, ref)
		if errors.Is(err, model.ErrNotFound) {
			n := &model.Node{Metadata: model.Metadata{Name: a.cfg.Node}, Spec: model.NodeSpec{IPv4Address: addr, UnderlayInterface: ifname}}
			err = v.Create(ctx, n)
			if errors.Is(err, model.ErrExists) {
				continue // created meanwhile: update that one
			}
			if err != nil {
				return err
			}
			a.log.Info("registered node", "node", a.cfg.Node, "underlay", ifname, "address", addr)
			return nil
		}
		if err != nil {
			return err
		}
		old, ok := r.(*model.Node)
		if !ok {
			return fmt.Errorf("%s: the datastore returned a %T", ref, r)
		}
		if old.Spec.IPv4Address == addr && old.Spec.UnderlayInterface == ifname {
			a.log.Info("node registered already", "node", a.cfg.Node, "address", addr)
			return nil
		}
		n := *old
		n.Spec.IPv4Address = addr
		n.Spec.UnderlayInterface = ifname
		err = v.Update(ctx, &n, rev)
		if errors.Is(err, model.ErrConflict) {
			continue
		}
		if err != nil {
			return err
		}
		a.log.Info("updated node address", "node", a.cfg.Node, "underlay", ifname, "address", addr, "was", old.Spec.IPv4Address)
		return nil
	}
	return fmt.Errorf("%s: changed by others %d times while registering; giving up for now", ref, registerConflicts)
}

// registerNodeApply is registerNode for a datastore without
// compare-and-swap: it only creates a missing Node.
func (a *Agent) registerNodeApply(ctx context.Context, ifname string, addr netip.Prefix) error {
	snap, err := a.ds.Snapshot(ctx)
	if err != nil {
		return err
	}
	if _, ok := snap.Nodes[a.cfg.Node]; ok {
		return nil
	}
	n := &model.Node{Metadata: model.Metadata{Name: a.cfg.Node}, Spec: model.NodeSpec{IPv4Address: addr, UnderlayInterface: ifname}}
	if err := a.ds.Apply(ctx, []model.Resource{n}); err != nil {
		return err
	}
	a.log.Info("registered node", "node", a.cfg.Node, "underlay", ifname, "address", addr)
	return nil
}

// registerLoop retries registerNode with backoff, and at once when the
// datastore comes back, until it succeeds or ctx ends.
func (a *Agent) registerLoop(ctx context.Context) {
	wait := time.Second
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		case <-a.dsBack:
		}
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := a.registerNode(rctx)
		cancel()
		if err == nil || ctx.Err() != nil {
			return
		}
		wait = min(2*wait, 30*time.Second)
		a.log.Warn("node not registered yet", "node", a.cfg.Node, "retryIn", wait, "err", err)
	}
}

// keepAlive keeps this node's liveness lease until ctx ends; the store
// reconnects by itself.
func (a *Agent) keepAlive(ctx context.Context, lv model.Liveness) {
	err := lv.KeepAlive(ctx, a.cfg.Node, a.cfg.NodeTTL)
	switch {
	case errors.Is(err, model.ErrNotImplemented):
		a.log.Debug("the datastore keeps no node liveness", "datastore", a.cfg.Datastore)
	case err != nil && ctx.Err() == nil:
		a.log.Error("node liveness stopped", "node", a.cfg.Node, "err", err)
	}
}

// datastoreStatus is told by the datastore when it loses or regains its
// backend. While it is lost the agent is not ready and changes nothing:
// the watch sends no snapshot, so the dataplane keeps forwarding with
// what it has. Once it is back, the agent is ready again after the next
// successful reconcile.
func (a *Agent) datastoreStatus(ok bool, why string) {
	a.mu.Lock()
	was := a.dsDown
	if ok {
		a.dsDown = ""
		if was != "" {
			a.ready, a.notReady = false, "datastore reachable again; resyncing"
		}
	} else {
		if why == "" {
			why = "no answer"
		}
		a.dsDown = why
	}
	a.setMetricsLocked()
	a.mu.Unlock()
	switch {
	case !ok && was == "":
		a.log.Warn("datastore unreachable; the dataplane stays as it is", "err", why)
	case ok && was != "":
		a.log.Info("datastore reachable again; resyncing")
		a.poke()
		select {
		case a.dsBack <- struct{}{}:
		default:
		}
	}
}

func (a *Agent) setReady(ok bool, why string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if ok {
		a.ready, a.notReady = true, ""
	} else {
		a.ready, a.notReady = false, why
	}
	a.setMetricsLocked()
}

// setMetricsLocked mirrors readiness into the gauges; a.mu is held.
func (a *Agent) setMetricsLocked() {
	ready, connected := 0.0, 0.0
	if a.ready && a.dsDown == "" {
		ready = 1
	}
	if a.dsDown == "" {
		connected = 1
	}
	a.metrics.ready.Set(ready)
	a.metrics.dsConnected.Set(connected)
}

// readiness says whether the dataplane matches the model and the model can
// be read, and if not, why.
func (a *Agent) readiness() (bool, string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.dsDown != "" {
		return false, "datastore unreachable: " + a.dsDown
	}
	return a.ready, a.notReady
}

func (a *Agent) serveHTTP(addr string) (*http.Server, error) {
	mux := http.NewServeMux()
	mux.Handle("/metrics", a.metrics.handler())
	mux.Handle(monitor.Path, a.monitor.Handler())
	a.serveBGP(mux)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		ok, why := a.readiness()
		if !ok {
			http.Error(w, "not ready: "+why, http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listener %s: %w", addr, err)
	}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("metrics server", "err", err)
		}
	}()
	return srv, nil
}

// ctGCInterval is how often idle conntrack flows are removed.
const ctGCInterval = 10 * time.Second

// releaseBlocks gives back IPAM blocks nothing uses, looking every
// quarter of the shorter grace (at least every second): this node's blocks
// that stayed empty for Config.EmptyBlockGrace, and those of nodes dead for
// Config.DeadNodeGrace (deadNodeReleaser).
func (a *Agent) releaseBlocks(ctx context.Context) {
	st, ok := a.ds.(ipam.Store)
	every := lookInterval(a.cfg.EmptyBlockGrace, a.cfg.DeadNodeGrace)
	if !ok || every == 0 {
		return
	}
	since := map[string]seenEmpty{}
	var dead *deadNodeReleaser
	if a.cfg.DeadNodeGrace > 0 {
		dead = newDeadNodeReleaser(a.cfg.Node, a.cfg.DeadNodeGrace, st, a.log, a.metrics)
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
		if a.cfg.EmptyBlockGrace > 0 {
			a.releaseEmptyBlocks(ctx, st, since)
		}
		if dead != nil {
			if err := dead.step(ctx, time.Now()); err != nil && ctx.Err() == nil {
				a.log.Warn("release the IPAM blocks of dead nodes", "err", err)
			}
		}
	}
}

// blockIndexer is a datastore that finds a node's IPAM blocks through an
// index (etcd), which blocks written before it existed are missing from.
type blockIndexer interface {
	IndexBlocks(ctx context.Context, node string, names []string) (int, error)
}

// indexOwnBlocks puts this node's IPAM blocks that the datastore's block
// index lacks into it, once per start, so that allocations on this node
// find them (after an upgrade from a store without the index). A failure
// is logged; the next start tries again.
func (a *Agent) indexOwnBlocks(ctx context.Context) {
	ix, ok := a.ds.(blockIndexer)
	ls, ok2 := a.ds.(model.Lister)
	if !ok || !ok2 {
		return
	}
	rs, err := ls.List(ctx, model.KindIPAMBlock)
	if err != nil {
		a.log.Warn("index this node's IPAM blocks", "err", err)
		return
	}
	var names []string
	for _, r := range rs {
		if b, ok := r.(*model.IPAMBlock); ok && b.Spec.Node == a.cfg.Node {
			names = append(names, b.Metadata.Name)
		}
	}
	n, err := ix.IndexBlocks(ctx, a.cfg.Node, names)
	if err != nil {
		a.log.Warn("index this node's IPAM blocks", "err", err)
	}
	if n > 0 {
		a.log.Info("indexed this node's IPAM blocks written without the index", "blocks", n)
	}
}

// lookInterval is a quarter of the shortest positive grace, at least a
// second; 0 when none is positive.
func lookInterval(graces ...time.Duration) time.Duration {
	var least time.Duration
	for _, g := range graces {
		if g > 0 && (least == 0 || g < least) {
			least = g
		}
	}
	if least == 0 {
		return 0
	}
	return max(least/4, time.Second)
}

// seenEmpty is when one of this node's blocks was first seen empty, at
// which revision.
type seenEmpty struct {
	rev int64
	at  time.Time
}

// releaseEmptyBlocks gives back this node's IPAM blocks that stayed empty
// for Config.EmptyBlockGrace, as recorded in since. A block goes at the
// revision it was first seen empty at, so an address handed out of it
// meanwhile keeps it (and restarts its clock).
func (a *Agent) releaseEmptyBlocks(ctx context.Context, st ipam.Store, since map[string]seenEmpty) {
	grace := a.cfg.EmptyBlockGrace
	empty, err := ipam.EmptyBlocks(ctx, st, a.cfg.Node)
	if err != nil {
		a.log.Debug("look for empty IPAM blocks", "err", err)
		return
	}
	now := time.Now()
	for name := range since {
		if _, ok := empty[name]; !ok {
			delete(since, name)
		}
	}
	for name, rev := range empty {
		s, ok := since[name]
		if !ok || s.rev != rev {
			since[name] = seenEmpty{rev: rev, at: now}
			continue
		}
		if now.Sub(s.at) < grace {
			continue
		}
		delete(since, name)
		if err := ipam.ReleaseEmptyBlock(ctx, st, name, rev); err != nil {
			a.log.Warn("release an empty IPAM block", "block", name, "err", err)
			continue
		}
		a.log.Info("released an empty IPAM block", "block", name, "emptyFor", now.Sub(s.at).Round(time.Second))
	}
}

// finishMigration completes the pinned maps' migration once every link
// runs this build's programs (until then it waits for the next sync): the
// previous programs' latest writes are converted too, and the old pins
// go. A failed conversion reverts (the previous layout's maps and
// programs carry the traffic as they did) and stops the agent with the
// error: the previous agent can be started again as it was.
func (a *Agent) finishMigration() error {
	done, err := a.dp.FinishMigration()
	if errors.Is(err, loader.ErrLinksNotSwapped) {
		a.log.Info("migration waits for links", "err", err)
		return nil
	}
	a.migrating = false
	if done == nil && err != nil {
		a.log.Error("migration failed: reverted to the previous layout's maps and programs", "err", err)
		return fmt.Errorf("migrate pinned maps: %w", err)
	}
	if err != nil {
		a.log.Error("migration finished, but an old pin was not removed", "err", err)
	}
	for _, mg := range done {
		a.log.Info("pinned map migrated; its previous pin removed", "map", mg.Map, "from", mg.From, "to", mg.To, "kind", mg.Kind,
			"entries", mg.Result.Entries, "written", mg.Result.Written, "kept", mg.Result.Kept, "replaced", mg.Result.Replaced)
	}
	return nil
}

// collectConntrack removes conntrack flows idle past their timeout until
// ctx ends. The table is pinned: a restarted agent simply carries on.
func (a *Agent) collectConntrack(ctx context.Context) {
	t := time.NewTicker(ctGCInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		r, err := conntrack.GC(a.dp.Maps, conntrack.Now())
		if err != nil {
			a.log.Warn("conntrack collection", "err", err)
			continue
		}
		a.metrics.ctFlows.Set(float64(r.Flows - r.Expired))
		a.metrics.ctExpired.Add(float64(r.Expired))
		stats, err := a.dp.Maps.ConntrackStats()
		size := bpfmap.ConntrackSize{}
		if err == nil {
			size.Frags, err = a.dp.Maps.FragsInFlight()
		}
		if err != nil {
			a.log.Warn("conntrack statistics", "err", err)
			continue
		}
		size.TrackedCapacity, size.TranslatedCapacity, size.FragsCapacity = a.dp.Maps.ConntrackCapacities()
		a.metrics.mapFill(mapsync.Fill{Table: bpfmap.CTName, Entries: r.TrackedEntries - r.TrackedDeleted, Capacity: size.TrackedCapacity})
		a.metrics.mapFill(mapsync.Fill{Table: bpfmap.NATName, Entries: r.TranslatedEntries - r.TranslatedDeleted, Capacity: size.TranslatedCapacity})
		a.metrics.conntrack(r, stats, size)
		if cfg, err := a.dp.Maps.NodeConfig(); err == nil {
			a.metrics.natPorts(r.SNAT, cfg)
		} else {
			a.log.Warn("natOutgoing port use", "err", err)
		}
		if r.Expired > 0 {
			a.log.Debug("conntrack collected", "flows", r.Flows, "expired", r.Expired, "entriesDeleted", r.Deleted)
		}
	}
}

// uncoveredPools returns the workload pools no kernel route covers (see
// kernel.UncoveredPools), from the last check unless the pools changed.
func (a *Agent) uncoveredPools() ([]netip.Prefix, error) {
	pools := calc.WorkloadPools(a.snap)
	key := fmt.Sprint(pools)
	if key == a.poolsChecked {
		return a.uncovered, nil
	}
	uncovered, err := kernel.UncoveredPools(pools)
	if err != nil {
		return nil, err
	}
	a.poolsChecked, a.uncovered = key, uncovered
	return uncovered, nil
}
