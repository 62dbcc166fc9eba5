// Package mapsync makes the BPF maps equal to a calc.Desired with the fewest
// writes, in an order that never breaks traffic: new and changed entries go
// in before stale ones are removed.
package mapsync

import (
	"fmt"
	"net/netip"

	"github.com/calyxnet/calyx/agent/calc"
	"github.com/calyxnet/calyx/bpfmap"
)

// Store is the map access mapsync needs; *bpfmap.Maps implements it.
type Store interface {
	Ifaces() (map[uint32]bpfmap.Iface, error)
	PutIface(ifindex uint32, v bpfmap.Iface) error
	DeleteIface(ifindex uint32) error
	Routes() (map[netip.Prefix]bpfmap.Route, error)
	PutRoute(p netip.Prefix, r bpfmap.Route) error
	DeleteRoute(p netip.Prefix) error
	Config() (bpfmap.NodeConfig, error)
	PutConfig(c bpfmap.NodeConfig) error
	FloatingIPs() (map[netip.Addr]bpfmap.FloatingIP, error)
	PutFloatingIP(ip netip.Addr, f bpfmap.FloatingIP) error
	DeleteFloatingIP(ip netip.Addr) error
	IPCache() (map[netip.Prefix]bpfmap.IPCacheEntry, error)
	PutIPCache(p netip.Prefix, e bpfmap.IPCacheEntry) error
	DeleteIPCache(p netip.Prefix) error
	Policy() (map[bpfmap.PolicyKey]bpfmap.PolicyVerdict, error)
	PutPolicy(k bpfmap.PolicyKey, v bpfmap.PolicyVerdict) error
	DeletePolicy(k bpfmap.PolicyKey) error
	Prefilter() (bpfmap.Prefilter, error)
	PutPrefilter(p netip.Prefix) error
	DeletePrefilter(p netip.Prefix) error
	EndpointStatuses() (map[uint32]bpfmap.EndpointStatus, error)
	PutEndpointStatus(id uint32, st bpfmap.EndpointStatus) error
	DeleteEndpointStatus(id uint32) error
}

// Counts says how many entries a step wrote or deleted, per map.
type Counts struct {
	IfacePuts, IfaceDeletes         int
	RoutePuts, RouteDeletes         int
	ConfigPuts                      int
	FIPPuts, FIPDeletes             int
	IPCachePuts, IPCacheDeletes     int
	PolicyPuts, PolicyDeletes       int
	PrefilterPuts, PrefilterDeletes int
	EndpointPuts, EndpointDeletes   int
}

// Total is every write and delete.
func (c Counts) Total() int {
	return c.IfacePuts + c.IfaceDeletes + c.RoutePuts + c.RouteDeletes + c.ConfigPuts + c.FIPPuts + c.FIPDeletes +
		c.IPCachePuts + c.IPCacheDeletes + c.PolicyPuts + c.PolicyDeletes + c.PrefilterPuts + c.PrefilterDeletes +
		c.EndpointPuts + c.EndpointDeletes
}

func (c *Counts) add(o Counts) {
	c.IfacePuts += o.IfacePuts
	c.IfaceDeletes += o.IfaceDeletes
	c.RoutePuts += o.RoutePuts
	c.RouteDeletes += o.RouteDeletes
	c.ConfigPuts += o.ConfigPuts
	c.FIPPuts += o.FIPPuts
	c.FIPDeletes += o.FIPDeletes
	c.IPCachePuts += o.IPCachePuts
	c.IPCacheDeletes += o.IPCacheDeletes
	c.PolicyPuts += o.PolicyPuts
	c.PolicyDeletes += o.PolicyDeletes
	c.PrefilterPuts += o.PrefilterPuts
	c.PrefilterDeletes += o.PrefilterDeletes
	c.EndpointPuts += o.EndpointPuts
	c.EndpointDeletes += o.EndpointDeletes
}

// Syncer keeps a copy of what the maps hold, read once from the pins at
// start (adopting a previous agent's state), so each diff is in memory.
type Syncer struct {
	store  Store
	ifaces map[uint32]bpfmap.Iface
	routes map[netip.Prefix]bpfmap.Route
	config bpfmap.NodeConfig
	fips   map[netip.Addr]bpfmap.FloatingIP
	ipc    map[netip.Prefix]bpfmap.IPCacheEntry
	policy map[bpfmap.PolicyKey]bpfmap.PolicyVerdict
	prefil bpfmap.Prefilter
	eps    map[uint32]bpfmap.EndpointStatus
}

// New reads the current map contents.
func New(store Store) (*Syncer, error) {
	s := &Syncer{store: store}
	if err := s.Reload(); err != nil {
		return nil, err
	}
	return s, nil
}

// Reload replaces the cache with what the maps hold now, so that the next
// Upsert and Prune also repair entries changed behind the agent's back
// (by hand with bpftool, or by anything else that writes the pins).
func (s *Syncer) Reload() error {
	ifaces, err := s.store.Ifaces()
	if err != nil {
		return fmt.Errorf("read current interfaces: %w", err)
	}
	routes, err := s.store.Routes()
	if err != nil {
		return fmt.Errorf("read current routes: %w", err)
	}
	config, err := s.store.Config()
	if err != nil {
		return fmt.Errorf("read current node config: %w", err)
	}
	fips, err := s.store.FloatingIPs()
	if err != nil {
		return fmt.Errorf("read current floating IPs: %w", err)
	}
	ipc, err := s.store.IPCache()
	if err != nil {
		return fmt.Errorf("read current policy identities: %w", err)
	}
	pol, err := s.store.Policy()
	if err != nil {
		return fmt.Errorf("read current policy tables: %w", err)
	}
	prefil, err := s.store.Prefilter()
	if err != nil {
		return fmt.Errorf("read current prefilter: %w", err)
	}
	eps, err := s.store.EndpointStatuses()
	if err != nil {
		return fmt.Errorf("read current endpoint states: %w", err)
	}
	s.ifaces, s.routes, s.config, s.fips = ifaces, routes, config, fips
	s.ipc, s.policy, s.prefil, s.eps = ipc, pol, prefil, eps
	return nil
}

// Upsert writes every desired entry that is missing or different: the node
// config first (routes that encapsulate need it), then the policy tables
// and identities before the interfaces that point at them (a table is
// never changed in place: a changed one has a new number), then
// interfaces and floating IPs before routes so that no route points at an
// unknown interface or an untranslatable floating IP. An error leaves the
// cache matching what was written before it. A Desired whose policy did
// not compile is refused whole.
func (s *Syncer) Upsert(d *calc.Desired) (Counts, error) {
	var c Counts
	if d.PolicyErr != nil {
		return c, fmt.Errorf("compile network policy: %w", d.PolicyErr)
	}
	putPrefilter := func(p netip.Prefix, _ struct{}) error { return s.store.PutPrefilter(p) }
	if err := upsert(s.prefil, d.Prefilter, putPrefilter, &c.PrefilterPuts); err != nil {
		return c, err
	}
	// The route generation is the syncer's, not the model's.
	d.Config.RouteGen = s.config.RouteGen
	if d.Config != s.config {
		if err := s.store.PutConfig(d.Config); err != nil {
			return c, err
		}
		s.config = d.Config
		c.ConfigPuts++
	}
	if err := upsert(s.policy, d.Policy, s.store.PutPolicy, &c.PolicyPuts); err != nil {
		return c, err
	}
	if err := upsert(s.ipc, d.IPCache, s.store.PutIPCache, &c.IPCachePuts); err != nil {
		return c, err
	}
	if err := upsert(s.ifaces, d.Ifaces, s.store.PutIface, &c.IfacePuts); err != nil {
		return c, err
	}
	// Floating IPs before routes: a route to a floating IP is only useful
	// once it can be translated.
	if err := upsert(s.fips, d.FloatingIPs, s.store.PutFloatingIP, &c.FIPPuts); err != nil {
		return c, err
	}
	if err := upsert(s.routes, d.Routes, s.store.PutRoute, &c.RoutePuts); err != nil {
		return c, err
	}
	if err := upsert(s.eps, d.Endpoints, s.store.PutEndpointStatus, &c.EndpointPuts); err != nil {
		return c, err
	}
	if c.RoutePuts > 0 {
		return c, s.bumpRouteGen(&c)
	}
	return c, nil
}

// upsert writes every entry of want that have lacks or holds otherwise,
// recording each write in have and counting it in n. It stops at the first
// error, with have matching what was written.
func upsert[K, V comparable](have, want map[K]V, put func(K, V) error, n *int) error {
	for k, w := range want {
		if h, ok := have[k]; ok && h == w {
			continue
		}
		if err := put(k, w); err != nil {
			return err
		}
		have[k] = w
		*n++
	}
	return nil
}

// prune deletes every entry of have that want lacks, as upsert writes.
func prune[K comparable, V, W any](have map[K]V, want map[K]W, del func(K) error, n *int) error {
	for k := range have {
		if _, ok := want[k]; ok {
			continue
		}
		if err := del(k); err != nil {
			return err
		}
		delete(have, k)
		*n++
	}
	return nil
}

// bumpRouteGen moves cx_config to a new route generation once the routes
// changed, so that the programs stop using routes cached in conntrack
// entries (the established-flow fast path) and look them up again. Never
// 0, which turns the cache off.
func (s *Syncer) bumpRouteGen(c *Counts) error {
	cfg := s.config
	cfg.RouteGen++
	if cfg.RouteGen == 0 {
		cfg.RouteGen = 1
	}
	if !cfg.Address.IsValid() {
		// Unconfigured: the programs ignore cx_config altogether.
		return nil
	}
	if err := s.store.PutConfig(cfg); err != nil {
		return err
	}
	s.config = cfg
	c.ConfigPuts++
	return nil
}

// Prune deletes every entry that is not desired: routes, then floating
// IPs, then interfaces, then the identities and policy tables no
// interface uses any more, then the prefilter.
func (s *Syncer) Prune(d *calc.Desired) (Counts, error) {
	var c Counts
	if d.PolicyErr != nil {
		return c, fmt.Errorf("compile network policy: %w", d.PolicyErr)
	}
	if err := prune(s.routes, d.Routes, s.store.DeleteRoute, &c.RouteDeletes); err != nil {
		return c, err
	}
	if c.RouteDeletes > 0 {
		if err := s.bumpRouteGen(&c); err != nil {
			return c, err
		}
	}
	if err := prune(s.fips, d.FloatingIPs, s.store.DeleteFloatingIP, &c.FIPDeletes); err != nil {
		return c, err
	}
	if err := prune(s.ifaces, d.Ifaces, s.store.DeleteIface, &c.IfaceDeletes); err != nil {
		return c, err
	}
	if err := prune(s.ipc, d.IPCache, s.store.DeleteIPCache, &c.IPCacheDeletes); err != nil {
		return c, err
	}
	if err := prune(s.policy, d.Policy, s.store.DeletePolicy, &c.PolicyDeletes); err != nil {
		return c, err
	}
	if err := prune(s.prefil, d.Prefilter, s.store.DeletePrefilter, &c.PrefilterDeletes); err != nil {
		return c, err
	}
	if err := prune(s.eps, d.Endpoints, s.store.DeleteEndpointStatus, &c.EndpointDeletes); err != nil {
		return c, err
	}
	return c, nil
}

// Sync is Upsert followed by Prune.
func (s *Syncer) Sync(d *calc.Desired) (Counts, error) {
	c, err := s.Upsert(d)
	if err != nil {
		return c, err
	}
	p, err := s.Prune(d)
	c.add(p)
	return c, err
}
