package mapsync

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/calyxnet/calyx/agent/calc"
	"github.com/calyxnet/calyx/bpfmap"
)

// fakeStore records every write in order.
type fakeStore struct {
	ifaces map[uint32]bpfmap.Iface
	routes map[netip.Prefix]bpfmap.Route
	config bpfmap.NodeConfig
	fips   map[netip.Addr]bpfmap.FloatingIP
	ipc    map[netip.Prefix]bpfmap.IPCacheEntry
	policy map[bpfmap.PolicyKey]bpfmap.PolicyVerdict
	prefil bpfmap.Prefilter
	eps    map[uint32]bpfmap.EndpointStatus
	ops    []string
	failOn string
}

func newFake() *fakeStore {
	return &fakeStore{ifaces: map[uint32]bpfmap.Iface{}, routes: map[netip.Prefix]bpfmap.Route{}}
}

func (f *fakeStore) Ifaces() (map[uint32]bpfmap.Iface, error) {
	out := map[uint32]bpfmap.Iface{}
	for k, v := range f.ifaces {
		out[k] = v
	}
	return out, nil
}

func (f *fakeStore) Routes() (map[netip.Prefix]bpfmap.Route, error) {
	out := map[netip.Prefix]bpfmap.Route{}
	for k, v := range f.routes {
		out[k] = v
	}
	return out, nil
}

func (f *fakeStore) Config() (bpfmap.NodeConfig, error) { return f.config, nil }

func (f *fakeStore) FloatingIPs() (map[netip.Addr]bpfmap.FloatingIP, error) {
	out := map[netip.Addr]bpfmap.FloatingIP{}
	for k, v := range f.fips {
		out[k] = v
	}
	return out, nil
}

func (f *fakeStore) PutFloatingIP(ip netip.Addr, v bpfmap.FloatingIP) error {
	if err := f.op("put fip " + ip.String()); err != nil {
		return err
	}
	if f.fips == nil {
		f.fips = map[netip.Addr]bpfmap.FloatingIP{}
	}
	f.fips[ip] = v
	return nil
}

func (f *fakeStore) DeleteFloatingIP(ip netip.Addr) error {
	if err := f.op("delete fip " + ip.String()); err != nil {
		return err
	}
	delete(f.fips, ip)
	return nil
}

func (f *fakeStore) PutConfig(c bpfmap.NodeConfig) error {
	if err := f.op("put config"); err != nil {
		return err
	}
	f.config = c
	return nil
}

func (f *fakeStore) op(s string) error {
	if s == f.failOn {
		return fmt.Errorf("injected failure on %s", s)
	}
	f.ops = append(f.ops, s)
	return nil
}

func (f *fakeStore) PutIface(i uint32, v bpfmap.Iface) error {
	if err := f.op(fmt.Sprintf("put iface %d", i)); err != nil {
		return err
	}
	f.ifaces[i] = v
	return nil
}

func (f *fakeStore) DeleteIface(i uint32) error {
	if err := f.op(fmt.Sprintf("del iface %d", i)); err != nil {
		return err
	}
	delete(f.ifaces, i)
	return nil
}

func (f *fakeStore) PutRoute(p netip.Prefix, r bpfmap.Route) error {
	if err := f.op("put route " + p.String()); err != nil {
		return err
	}
	f.routes[p] = r
	return nil
}

func (f *fakeStore) DeleteRoute(p netip.Prefix) error {
	if err := f.op("del route " + p.String()); err != nil {
		return err
	}
	delete(f.routes, p)
	return nil
}

func desired(eps map[uint32]string) *calc.Desired {
	d := &calc.Desired{Ifaces: map[uint32]bpfmap.Iface{}, Routes: map[netip.Prefix]bpfmap.Route{}}
	for idx, ip := range eps {
		d.Ifaces[idx] = bpfmap.Iface{Workload: true, EndpointID: idx}
		d.Routes[netip.MustParsePrefix(ip+"/32")] = bpfmap.Route{Type: bpfmap.RouteLocalWorkload, Ifindex: idx}
	}
	return d
}

func TestSyncWritesOnlyDifferences(t *testing.T) {
	f := newFake()
	s, err := New(f)
	if err != nil {
		t.Fatal(err)
	}
	c, err := s.Sync(desired(map[uint32]string{1: "10.0.0.1", 2: "10.0.0.2"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.IfacePuts != 2 || c.RoutePuts != 2 || c.IfaceDeletes+c.RouteDeletes != 0 {
		t.Fatalf("first sync counts = %+v", c)
	}
	c, _ = s.Sync(desired(map[uint32]string{1: "10.0.0.1", 2: "10.0.0.2"}))
	if c.Total() != 0 {
		t.Fatalf("second sync of the same state wrote %+v", c)
	}

	// An agent that restarts adopts what is there and writes nothing.
	s2, err := New(f)
	if err != nil {
		t.Fatal(err)
	}
	f.ops = nil
	c, _ = s2.Sync(desired(map[uint32]string{1: "10.0.0.1", 2: "10.0.0.2"}))
	if c.Total() != 0 || len(f.ops) != 0 {
		t.Fatalf("adopting sync wrote %+v: %v", c, f.ops)
	}
}

func TestSyncOrder(t *testing.T) {
	f := newFake()
	s, _ := New(f)
	s.Sync(desired(map[uint32]string{1: "10.0.0.1"}))
	f.ops = nil
	// Replace endpoint 1 with endpoint 2: the new one goes in before the old
	// one goes, interfaces before routes on the way in, routes first on the way out.
	c, err := s.Sync(desired(map[uint32]string{2: "10.0.0.2"}))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"put iface 2", "put route 10.0.0.2/32", "del route 10.0.0.1/32", "del iface 1"}
	if fmt.Sprint(f.ops) != fmt.Sprint(want) {
		t.Fatalf("ops = %v, want %v", f.ops, want)
	}
	if c.Total() != 4 {
		t.Fatalf("counts = %+v", c)
	}
}

func TestSyncChangedValue(t *testing.T) {
	f := newFake()
	s, _ := New(f)
	d := desired(map[uint32]string{1: "10.0.0.1"})
	s.Sync(d)
	f.ops = nil
	d.Routes[netip.MustParsePrefix("10.0.0.1/32")] = bpfmap.Route{Type: bpfmap.RouteLocalWorkload, Ifindex: 1, MAC: bpfmap.MAC{2}}
	s.Sync(d)
	if fmt.Sprint(f.ops) != "[put route 10.0.0.1/32]" {
		t.Fatalf("ops = %v", f.ops)
	}
}

func TestSyncErrorKeepsCacheTrue(t *testing.T) {
	f := newFake()
	s, _ := New(f)
	f.failOn = "put route 10.0.0.1/32"
	if _, err := s.Sync(desired(map[uint32]string{1: "10.0.0.1"})); err == nil {
		t.Fatal("want the injected error")
	}
	f.failOn = ""
	f.ops = nil
	c, err := s.Sync(desired(map[uint32]string{1: "10.0.0.1"}))
	if err != nil {
		t.Fatal(err)
	}
	// The interface went in before the failure; only the route is retried.
	if fmt.Sprint(f.ops) != "[put route 10.0.0.1/32]" || c.Total() != 1 {
		t.Fatalf("retry ops = %v (%+v)", f.ops, c)
	}
}

// Entries changed behind the syncer's back are invisible to its cache until
// Reload; then one Sync repairs exactly them.
func TestReloadRepairsOutOfBandChanges(t *testing.T) {
	f := newFake()
	s, err := New(f)
	if err != nil {
		t.Fatal(err)
	}
	want := desired(map[uint32]string{1: "10.0.0.1", 2: "10.0.0.2"})
	if _, err := s.Sync(want); err != nil {
		t.Fatal(err)
	}
	// By hand: a route deleted, an interface entry altered, a stray route.
	delete(f.routes, netip.MustParsePrefix("10.0.0.1/32"))
	f.ifaces[2] = bpfmap.Iface{Workload: true, EndpointID: 99}
	f.routes[netip.MustParsePrefix("10.9.9.9/32")] = bpfmap.Route{Type: bpfmap.RouteHost}

	if c, _ := s.Sync(want); c.Total() != 0 {
		t.Fatalf("sync from a stale cache wrote %+v; it cannot see the changes", c)
	}
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	c, err := s.Sync(want)
	if err != nil {
		t.Fatal(err)
	}
	if c.RoutePuts != 1 || c.IfacePuts != 1 || c.RouteDeletes != 1 || c.IfaceDeletes != 0 {
		t.Errorf("repair counts = %+v, want 1 route put, 1 iface put, 1 route delete", c)
	}
	if _, ok := f.routes[netip.MustParsePrefix("10.0.0.1/32")]; !ok || f.ifaces[2].EndpointID != 2 {
		t.Errorf("not repaired: routes %v, ifaces %v", f.routes, f.ifaces)
	}
	if _, ok := f.routes[netip.MustParsePrefix("10.9.9.9/32")]; ok {
		t.Error("stray route left in place")
	}
}

// A floating IP goes in before the route that leads to it, and its route
// goes before the floating IP on removal.
func TestFloatingIPOrder(t *testing.T) {
	f := newFake()
	s, err := New(f)
	if err != nil {
		t.Fatal(err)
	}
	fip := netip.MustParseAddr("198.51.100.10")
	d := desired(map[uint32]string{1: "10.0.0.1"})
	d.FloatingIPs = map[netip.Addr]bpfmap.FloatingIP{fip: {Fixed: netip.MustParseAddr("10.0.0.1"), Local: true}}
	d.Routes[netip.PrefixFrom(fip, 32)] = bpfmap.Route{Type: bpfmap.RouteFloatingIP}
	f.ops = nil
	if _, err := s.Sync(d); err != nil {
		t.Fatal(err)
	}
	if i, j := indexOf(f.ops, "put fip 198.51.100.10"), indexOf(f.ops, "put route 198.51.100.10/32"); i < 0 || j < 0 || i > j {
		t.Errorf("add order %v: the floating IP must come before its route", f.ops)
	}
	f.ops = nil
	if _, err := s.Sync(desired(map[uint32]string{1: "10.0.0.1"})); err != nil {
		t.Fatal(err)
	}
	if i, j := indexOf(f.ops, "del route 198.51.100.10/32"), indexOf(f.ops, "delete fip 198.51.100.10"); i < 0 || j < 0 || i > j {
		t.Errorf("remove order %v: the route must go before the floating IP", f.ops)
	}
}

func indexOf(ops []string, op string) int {
	for i, o := range ops {
		if o == op {
			return i
		}
	}
	return -1
}

// Every change of the routes moves cx_config to a new route generation
// (after the route writes), so that routes cached by the fast path are
// looked up again; a sync that changes no route leaves it alone.
func TestRouteGeneration(t *testing.T) {
	f := newFake()
	s, err := New(f)
	if err != nil {
		t.Fatal(err)
	}
	cfg := bpfmap.NodeConfig{Address: netip.MustParseAddr("10.30.0.11"), UnderlayMTU: 1500}
	d := desired(map[uint32]string{1: "10.0.0.1"})
	d.Config = cfg
	if _, err := s.Sync(d); err != nil {
		t.Fatal(err)
	}
	if f.config.RouteGen != 1 || indexOf(f.ops, "put route 10.0.0.1/32") > lastIndexOf(f.ops, "put config") {
		t.Fatalf("generation %d after the first sync, ops %v: want 1, bumped after the routes", f.config.RouteGen, f.ops)
	}
	f.ops = nil
	d = desired(map[uint32]string{1: "10.0.0.1"})
	d.Config = cfg
	if c, _ := s.Sync(d); c.Total() != 0 || f.config.RouteGen != 1 {
		t.Errorf("unchanged sync wrote %+v, generation %d", c, f.config.RouteGen)
	}
	d = desired(map[uint32]string{})
	d.Config = cfg
	if _, err := s.Sync(d); err != nil {
		t.Fatal(err)
	}
	if f.config.RouteGen != 2 {
		t.Errorf("generation %d after a route was deleted, want 2", f.config.RouteGen)
	}
}

func lastIndexOf(ops []string, op string) int {
	for i := len(ops) - 1; i >= 0; i-- {
		if ops[i] == op {
			return i
		}
	}
	return -1
}

func (f *fakeStore) IPCache() (map[netip.Prefix]bpfmap.IPCacheEntry, error) {
	return clone(f.ipc), nil
}

func (f *fakeStore) PutIPCache(p netip.Prefix, e bpfmap.IPCacheEntry) error {
	if err := f.op("put ipcache " + p.String()); err != nil {
		return err
	}
	if f.ipc == nil {
		f.ipc = map[netip.Prefix]bpfmap.IPCacheEntry{}
	}
	f.ipc[p] = e
	return nil
}

func (f *fakeStore) DeleteIPCache(p netip.Prefix) error {
	if err := f.op("delete ipcache " + p.String()); err != nil {
		return err
	}
	delete(f.ipc, p)
	return nil
}

func (f *fakeStore) Policy() (map[bpfmap.PolicyKey]bpfmap.PolicyVerdict, error) {
	return clone(f.policy), nil
}

func (f *fakeStore) PutPolicy(k bpfmap.PolicyKey, v bpfmap.PolicyVerdict) error {
	if err := f.op(fmt.Sprintf("put policy %d/%d", k.Table, k.Identity)); err != nil {
		return err
	}
	if f.policy == nil {
		f.policy = map[bpfmap.PolicyKey]bpfmap.PolicyVerdict{}
	}
	f.policy[k] = v
	return nil
}

func (f *fakeStore) DeletePolicy(k bpfmap.PolicyKey) error {
	if err := f.op(fmt.Sprintf("delete policy %d/%d", k.Table, k.Identity)); err != nil {
		return err
	}
	delete(f.policy, k)
	return nil
}

func (f *fakeStore) Prefilter() (bpfmap.Prefilter, error) { return clone(f.prefil), nil }

func (f *fakeStore) PutPrefilter(p netip.Prefix) error {
	if err := f.op("put prefilter " + p.String()); err != nil {
		return err
	}
	if f.prefil == nil {
		f.prefil = bpfmap.Prefilter{}
	}
	f.prefil[p] = struct{}{}
	return nil
}

func (f *fakeStore) DeletePrefilter(p netip.Prefix) error {
	if err := f.op("delete prefilter " + p.String()); err != nil {
		return err
	}
	delete(f.prefil, p)
	return nil
}

func (f *fakeStore) EndpointStatuses() (map[uint32]bpfmap.EndpointStatus, error) {
	return clone(f.eps), nil
}

func (f *fakeStore) PutEndpointStatus(id uint32, st bpfmap.EndpointStatus) error {
	if err := f.op(fmt.Sprintf("put endpoint %d %s", id, st.State)); err != nil {
		return err
	}
	if f.eps == nil {
		f.eps = map[uint32]bpfmap.EndpointStatus{}
	}
	f.eps[id] = st
	return nil
}

func (f *fakeStore) DeleteEndpointStatus(id uint32) error {
	if err := f.op(fmt.Sprintf("delete endpoint %d", id)); err != nil {
		return err
	}
	delete(f.eps, id)
	return nil
}

func clone[K comparable, V any](m map[K]V) map[K]V {
	out := make(map[K]V, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// A table an interface switches to is written before the switch, and the
// table it leaves is deleted only after it.
func TestPolicyTablesAroundInterfaceSwitch(t *testing.T) {
	f := newFake()
	s, err := New(f)
	if err != nil {
		t.Fatal(err)
	}
	old := bpfmap.PolicyKey{Table: 5}
	d := &calc.Desired{Ifaces: map[uint32]bpfmap.Iface{3: {Workload: true, IngressTable: 5}},
		Policy: map[bpfmap.PolicyKey]bpfmap.PolicyVerdict{old: {Action: bpfmap.PolicyDeny, Rule: 1}}}
	if _, err := s.Sync(d); err != nil {
		t.Fatal(err)
	}
	f.ops = nil
	neu := bpfmap.PolicyKey{Table: 6}
	d = &calc.Desired{Ifaces: map[uint32]bpfmap.Iface{3: {Workload: true, IngressTable: 6}},
		Policy: map[bpfmap.PolicyKey]bpfmap.PolicyVerdict{neu: {Action: bpfmap.PolicyAllow, Rule: 20}}}
	if _, err := s.Sync(d); err != nil {
		t.Fatal(err)
	}
	want := []string{"put policy 6/0", "put iface 3", "delete policy 5/0"}
	if fmt.Sprint(f.ops) != fmt.Sprint(want) {
		t.Errorf("ops %v, want %v", f.ops, want)
	}

	// A Desired whose policy did not compile changes nothing.
	f.ops = nil
	bad := &calc.Desired{PolicyErr: fmt.Errorf("broken")}
	if _, err := s.Sync(bad); err == nil || len(f.ops) != 0 {
		t.Errorf("sync of an uncompilable policy: err %v, ops %v; want an error and no writes", err, f.ops)
	}
}
