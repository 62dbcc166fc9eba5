// Package mapsync makes the BPF maps equal to a calc.Desired with the fewest
// writes, in an order that never breaks traffic: new and changed entries go
// in before stale ones are removed.
package mapsync

import (
	"fmt"
	"net/netip"

	"github.com/calyxnet/calyx/agent/calc"
	"github.com/calyxnet/calyx/maps"
)

// Store is the map access mapsync needs; *maps.Maps implements it.
type Store interface {
	Ifaces() (map[uint32]maps.Iface, error)
	PutIface(ifindex uint32, v maps.Iface) error
	DeleteIface(ifindex uint32) error
	Routes() (map[netip.Prefix]maps.Route, error)
	PutRoute(p netip.Prefix, r maps.Route) error
	DeleteRoute(p netip.Prefix) error
	Config() (maps.NodeConfig, error)
	PutConfig(c maps.NodeConfig) error
}

// Counts says how many entries a step wrote or deleted, per map.
type Counts struct {
	IfacePuts, IfaceDeletes int
	RoutePuts, RouteDeletes int
	ConfigPuts              int
}

// Total is every write and delete.
func (c Counts) Total() int {
	return c.IfacePuts + c.IfaceDeletes + c.RoutePuts + c.RouteDeletes + c.ConfigPuts
}

func (c *Counts) add(o Counts) {
	c.IfacePuts += o.IfacePuts
	c.IfaceDeletes += o.IfaceDeletes
	c.RoutePuts += o.RoutePuts
	c.RouteDeletes += o.RouteDeletes
	c.ConfigPuts += o.ConfigPuts
}

// Syncer keeps a copy of what the maps hold, read once from the pins at
// start (adopting a previous agent's state), so each diff is in memory.
type Syncer struct {
	store  Store
	ifaces map[uint32]maps.Iface
	routes map[netip.Prefix]maps.Route
	config maps.NodeConfig
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
	s.ifaces, s.routes, s.config = ifaces, routes, config
	return nil
}

// Upsert writes every desired entry that is missing or different: the node
// config first (routes that encapsulate need it), then interfaces before
// routes so that no route points at an unknown interface. An error leaves
// the cache matching what was written before it.
func (s *Syncer) Upsert(d *calc.Desired) (Counts, error) {
	var c Counts
	if d.Config != s.config {
		if err := s.store.PutConfig(d.Config); err != nil {
			return c, err
		}
		s.config = d.Config
		c.ConfigPuts++
	}
	for idx, want := range d.Ifaces {
		if have, ok := s.ifaces[idx]; ok && have == want {
			continue
		}
		if err := s.store.PutIface(idx, want); err != nil {
			return c, err
		}
		s.ifaces[idx] = want
		c.IfacePuts++
	}
	for p, want := range d.Routes {
		if have, ok := s.routes[p]; ok && have == want {
			continue
		}
		if err := s.store.PutRoute(p, want); err != nil {
			return c, err
		}
		s.routes[p] = want
		c.RoutePuts++
	}
	return c, nil
}

// Prune deletes every entry that is not desired, routes before interfaces.
func (s *Syncer) Prune(d *calc.Desired) (Counts, error) {
	var c Counts
	for p := range s.routes {
		if _, ok := d.Routes[p]; ok {
			continue
		}
		if err := s.store.DeleteRoute(p); err != nil {
			return c, err
		}
		delete(s.routes, p)
		c.RouteDeletes++
	}
	for idx := range s.ifaces {
		if _, ok := d.Ifaces[idx]; ok {
			continue
		}
		if err := s.store.DeleteIface(idx); err != nil {
			return c, err
		}
		delete(s.ifaces, idx)
		c.IfaceDeletes++
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
