package bpfmap

import (
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"

	"github.com/cilium/ebpf"

	"github.com/calyxnet/calyx/bpf"
)

// Pinned map names, as they appear under the --bpffs directory.
const (
	IfacesName    = bpf.CalyxMapCxIfaces
	RoutesName    = bpf.CalyxMapCxRoutes
	CountersName  = bpf.CalyxMapCxCounters
	LinksName     = bpf.CalyxMapCxLinks
	ConfigName    = bpf.CalyxMapCxConfig
	FIPsName      = bpf.CalyxMapCxFips
	CTName        = bpf.CalyxMapCxCt
	IPCacheName   = bpf.CalyxMapCxIpcache
	PolicyName    = bpf.CalyxMapCxPolicy
	HitsName      = bpf.CalyxMapCxPolicyHits
	LogName       = bpf.CalyxMapCxPolicyLog
	PrefiltName   = bpf.CalyxMapCxPrefilter
	EndpointsName = bpf.CalyxMapCxEndpoints
	LeasesName    = bpf.CalyxMapCxLeases
)

// Names lists every map calyx pins.
var Names = []string{IfacesName, RoutesName, CountersName, LinksName, ConfigName, FIPsName, CTName,
	IPCacheName, PolicyName, HitsName, LogName, PrefiltName, EndpointsName, LeasesName}

// Maps is the set of calyx maps, either loaded with the programs (agent) or
// opened from their pins (calyxctl).
type Maps struct {
	ifaces   *ebpf.Map
	routes   *ebpf.Map
	counters *ebpf.Map
	links    *ebpf.Map
	config   *ebpf.Map
	fips     *ebpf.Map
	ct       *ebpf.Map
	ipcache  *ebpf.Map
	policy   *ebpf.Map
	hits     *ebpf.Map
	log      *ebpf.Map
	prefilt  *ebpf.Map
	eps      *ebpf.Map
	leases   *ebpf.Map
	owned    bool
}

// FromObjects wraps maps loaded by the loader; Close does not close them.
func FromObjects(objs *bpf.CalyxMaps) *Maps {
	return &Maps{ifaces: objs.CxIfaces, routes: objs.CxRoutes, counters: objs.CxCounters, links: objs.CxLinks, config: objs.CxConfig,
		fips: objs.CxFips, ct: objs.CxCt, ipcache: objs.CxIpcache, policy: objs.CxPolicy, hits: objs.CxPolicyHits,
		log: objs.CxPolicyLog, prefilt: objs.CxPrefilter, eps: objs.CxEndpoints,
		leases: objs.CxLeases}
}

// OpenPinned opens every map pinned under dir. It fails, naming the map,
// when one is missing (no agent has run with that --bpffs).
func OpenPinned(dir string) (*Maps, error) { return openPinned(dir, true) }

// OpenPinnedWritable is OpenPinned for a caller that changes the maps
// (calyxctl ct flush).
func OpenPinnedWritable(dir string) (*Maps, error) { return openPinned(dir, false) }

func openPinned(dir string, readOnly bool) (*Maps, error) {
	m := &Maps{owned: true}
	dst := []**ebpf.Map{&m.ifaces, &m.routes, &m.counters, &m.links, &m.config, &m.fips, &m.ct,
		&m.ipcache, &m.policy, &m.hits, &m.log, &m.prefilt, &m.eps, &m.leases}
	for i, name := range Names {
		mp, err := ebpf.LoadPinnedMap(filepath.Join(dir, name), &ebpf.LoadPinOptions{ReadOnly: readOnly})
		if err != nil {
			m.Close()
			return nil, fmt.Errorf("open pinned map %s in %s: %w", name, dir, err)
		}
		*dst[i] = mp
	}
	return m, nil
}

// Close releases maps opened by OpenPinned.
func (m *Maps) Close() error {
	if !m.owned {
		return nil
	}
	var errs []error
	for _, mp := range []*ebpf.Map{m.ifaces, m.routes, m.counters, m.links, m.config, m.fips, m.ct,
		m.ipcache, m.policy, m.hits, m.log, m.prefilt, m.eps, m.leases} {
		if mp != nil {
			errs = append(errs, mp.Close())
		}
	}
	return errors.Join(errs...)
}

// Ifaces returns every entry of cx_ifaces by ifindex.
func (m *Maps) Ifaces() (map[uint32]Iface, error) {
	out := make(map[uint32]Iface)
	var k uint32
	var v bpf.CalyxCxIface
	it := m.ifaces.Iterate()
	for it.Next(&k, &v) {
		out[k] = ifaceFromBPF(v)
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("iterate %s: %w", IfacesName, err)
	}
	return out, nil
}

// PutIface creates or replaces the entry for ifindex.
func (m *Maps) PutIface(ifindex uint32, v Iface) error {
	if err := m.ifaces.Put(ifindex, v.toBPF()); err != nil {
		return fmt.Errorf("put %s[%d]: %w", IfacesName, ifindex, err)
	}
	return nil
}

// DeleteIface removes the entry for ifindex; a missing entry is not an error.
func (m *Maps) DeleteIface(ifindex uint32) error {
	if err := m.ifaces.Delete(ifindex); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete %s[%d]: %w", IfacesName, ifindex, err)
	}
	return nil
}

// Routes returns every entry of cx_routes by prefix (IPv4 prefixes unmapped).
func (m *Maps) Routes() (map[netip.Prefix]Route, error) {
	return lpmEntries(m.routes, RoutesName, routeFromBPF)
}

// lpmEntries reads an LPM map keyed like cx_routes, converting its values.
func lpmEntries[V, O any](mp *ebpf.Map, name string, conv func(V) O) (map[netip.Prefix]O, error) {
	out := make(map[netip.Prefix]O)
	var k bpf.CalyxCxRouteKey
	var v V
	it := mp.Iterate()
	for it.Next(&k, &v) {
		p, err := routeKeyFromBPF(k)
		if err != nil {
			return nil, err
		}
		out[p] = conv(v)
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("iterate %s: %w", name, err)
	}
	return out, nil
}

// PutRoute creates or replaces the route for p.
func (m *Maps) PutRoute(p netip.Prefix, r Route) error {
	if err := m.routes.Put(routeKeyToBPF(p), r.toBPF()); err != nil {
		return fmt.Errorf("put %s[%s]: %w", RoutesName, p, err)
	}
	return nil
}

// DeleteRoute removes the route for p; a missing route is not an error.
func (m *Maps) DeleteRoute(p netip.Prefix) error {
	if err := m.routes.Delete(routeKeyToBPF(p)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete %s[%s]: %w", RoutesName, p, err)
	}
	return nil
}

// LookupRoute does what the programs do: a longest-prefix match for addr.
func (m *Maps) LookupRoute(addr netip.Addr) (Route, bool, error) {
	bits := 128
	if addr.Is4() {
		bits = 32
	}
	var v bpf.CalyxCxRoute
	err := m.routes.Lookup(routeKeyToBPF(netip.PrefixFrom(addr, bits)), &v)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return Route{}, false, nil
	}
	if err != nil {
		return Route{}, false, fmt.Errorf("lookup %s[%s]: %w", RoutesName, addr, err)
	}
	return routeFromBPF(v), true, nil
}

// Counters returns every counter summed over CPUs.
func (m *Maps) Counters() (map[CounterKey]Counter, error) {
	out := make(map[CounterKey]Counter)
	var k bpf.CalyxCxCounterKey
	var per []bpf.CalyxCxCounter
	it := m.counters.Iterate()
	for it.Next(&k, &per) {
		out[CounterKey{Ifindex: k.Ifindex, Reason: Reason(k.Reason)}] = sumCPUs(per)
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("iterate %s: %w", CountersName, err)
	}
	return out, nil
}

// sumCPUs adds up a per-CPU counter.
func sumCPUs(per []bpf.CalyxCxCounter) Counter {
	var c Counter
	for _, v := range per {
		c.Packets += v.Packets
		c.Bytes += v.Bytes
	}
	return c
}

// DeleteCounters removes every counter of ifindex, so that a later interface
// that reuses the ifindex starts from zero.
func (m *Maps) DeleteCounters(ifindex uint32) error {
	for _, r := range Reasons() {
		k := bpf.CalyxCxCounterKey{Ifindex: ifindex, Reason: uint32(r)}
		if err := m.counters.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete %s[%d/%s]: %w", CountersName, ifindex, r, err)
		}
	}
	return nil
}

// Links returns the agent's attach records by ifindex.
func (m *Maps) Links() (map[uint32]Link, error) {
	out := make(map[uint32]Link)
	var k uint32
	var v bpf.CalyxCxLink
	it := m.links.Iterate()
	for it.Next(&k, &v) {
		out[k] = linkFromBPF(v)
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("iterate %s: %w", LinksName, err)
	}
	return out, nil
}

// PutLink records what is attached to ifindex.
func (m *Maps) PutLink(ifindex uint32, l Link) error {
	if err := m.links.Put(ifindex, l.toBPF()); err != nil {
		return fmt.Errorf("put %s[%d]: %w", LinksName, ifindex, err)
	}
	return nil
}

// DeleteLink removes the record for ifindex; a missing one is not an error.
func (m *Maps) DeleteLink(ifindex uint32) error {
	if err := m.links.Delete(ifindex); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete %s[%d]: %w", LinksName, ifindex, err)
	}
	return nil
}

// EndpointStatuses returns the agent's state of each local endpoint by
// endpoint id.
func (m *Maps) EndpointStatuses() (map[uint32]EndpointStatus, error) {
	out := make(map[uint32]EndpointStatus)
	var k uint32
	var v bpf.CalyxCxEpStatus
	it := m.eps.Iterate()
	for it.Next(&k, &v) {
		out[k] = endpointStatusFromBPF(v)
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("iterate %s: %w", EndpointsName, err)
	}
	return out, nil
}

// PutEndpointStatus records the state of endpoint id.
func (m *Maps) PutEndpointStatus(id uint32, st EndpointStatus) error {
	if err := m.eps.Put(id, st.toBPF()); err != nil {
		return fmt.Errorf("put %s[%d]: %w", EndpointsName, id, err)
	}
	return nil
}

// DeleteEndpointStatus removes the state of endpoint id; a missing one is
// not an error.
func (m *Maps) DeleteEndpointStatus(id uint32) error {
	if err := m.eps.Delete(id); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete %s[%d]: %w", EndpointsName, id, err)
	}
	return nil
}

// Leases returns every address the agent's DHCP servers leased.
func (m *Maps) Leases() ([]Lease, error) {
	var out []Lease
	var k bpf.CalyxCxLeaseKey
	var v bpf.CalyxCxLease
	it := m.leases.Iterate()
	for it.Next(&k, &v) {
		out = append(out, leaseFromBPF(k, v))
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("iterate %s: %w", LeasesName, err)
	}
	return out, nil
}

// PutLease records l (keyed by its interface and family).
func (m *Maps) PutLease(l Lease) error {
	k, v := l.toBPF()
	if err := m.leases.Put(k, v); err != nil {
		return fmt.Errorf("put %s[%d/v%d]: %w", LeasesName, l.Ifindex, k.Family, err)
	}
	return nil
}

// DeleteLease removes the lease of family (4 or 6) on ifindex; a missing
// one is not an error.
func (m *Maps) DeleteLease(ifindex uint32, family uint32) error {
	k := bpf.CalyxCxLeaseKey{Ifindex: ifindex, Family: family}
	if err := m.leases.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete %s[%d/v%d]: %w", LeasesName, ifindex, family, err)
	}
	return nil
}

// Config returns the node's entry of cx_config (the zero value before the
// agent first wrote it).
func (m *Maps) Config() (NodeConfig, error) {
	var v bpf.CalyxCxNodeConfig
	if err := m.config.Lookup(uint32(0), &v); err != nil {
		return NodeConfig{}, fmt.Errorf("lookup %s[0]: %w", ConfigName, err)
	}
	return nodeConfigFromBPF(v), nil
}

// PutConfig replaces the node's entry of cx_config.
func (m *Maps) PutConfig(c NodeConfig) error {
	if err := m.config.Put(uint32(0), c.toBPF()); err != nil {
		return fmt.Errorf("put %s[0]: %w", ConfigName, err)
	}
	return nil
}

// FloatingIPs returns cx_fips by floating IP.
func (m *Maps) FloatingIPs() (map[netip.Addr]FloatingIP, error) {
	out := make(map[netip.Addr]FloatingIP)
	var k bpf.CalyxCxFipKey
	var v bpf.CalyxCxFip
	it := m.fips.Iterate()
	for it.Next(&k, &v) {
		out[addrFrom16(k.Addr)] = floatingIPFromBPF(v)
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("iterate %s: %w", FIPsName, err)
	}
	return out, nil
}

// PutFloatingIP creates or replaces the entry of a floating IP.
func (m *Maps) PutFloatingIP(ip netip.Addr, f FloatingIP) error {
	if err := m.fips.Put(bpf.CalyxCxFipKey{Addr: addrTo16(ip)}, f.toBPF()); err != nil {
		return fmt.Errorf("put %s[%s]: %w", FIPsName, ip, err)
	}
	return nil
}

// DeleteFloatingIP removes a floating IP; a missing one is not an error.
func (m *Maps) DeleteFloatingIP(ip netip.Addr) error {
	if err := m.fips.Delete(bpf.CalyxCxFipKey{Addr: addrTo16(ip)}); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete %s[%s]: %w", FIPsName, ip, err)
	}
	return nil
}

// Conntrack calls fn for every conntrack entry until fn returns false.
// Entries come and go while it runs (an LRU map): an entry may be seen
// in a state it has since left, or missed.
func (m *Maps) Conntrack(fn func(CTKey, CTEntry) bool) error {
	var k bpf.CalyxCxCtKey
	var v bpf.CalyxCxCtEntry
	it := m.ct.Iterate()
	for it.Next(&k, &v) {
		if !fn(ctKeyFromBPF(k), ctEntryFromBPF(v)) {
			return nil
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("iterate %s: %w", CTName, err)
	}
	return nil
}

// DeleteConntrack removes the entries of keys; missing ones are not errors.
// It returns how many were removed.
func (m *Maps) DeleteConntrack(keys []CTKey) (int, error) {
	n := 0
	for _, k := range keys {
		err := m.ct.Delete(ctKeyToBPF(k))
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			continue
		}
		if err != nil {
			return n, fmt.Errorf("delete %s entry: %w", CTName, err)
		}
		n++
	}
	return n, nil
}

// ConntrackCapacity is cx_ct's size.
func (m *Maps) ConntrackCapacity() uint32 { return m.ct.MaxEntries() }

// LookupFloatingIP returns the entry of a floating IP, if there is one.
func (m *Maps) LookupFloatingIP(ip netip.Addr) (FloatingIP, bool, error) {
	var v bpf.CalyxCxFip
	err := m.fips.Lookup(bpf.CalyxCxFipKey{Addr: addrTo16(ip)}, &v)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return FloatingIP{}, false, nil
	}
	if err != nil {
		return FloatingIP{}, false, fmt.Errorf("lookup %s[%s]: %w", FIPsName, ip, err)
	}
	return floatingIPFromBPF(v), true, nil
}
