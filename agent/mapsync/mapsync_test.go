package mapsync

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/calyxnet/calyx/agent/calc"
	"github.com/calyxnet/calyx/bpfmap"
)

// recorder is a memory-backed bpfmap.Maps that records every write in
// order ("put cx_routes 10.0.0.1/32") and can refuse one.
type recorder struct {
	m       *bpfmap.Maps
	ops     []string
	failOn  string
	failAll bool
	quiet   bool // writes by the test itself, behind the syncer's back
}

func newFake() *recorder { return newSizedFake(nil) }

// newSizedFake is newFake with tables capped by name.
func newSizedFake(sizes map[string]int) *recorder {
	r := &recorder{}
	r.m = bpfmap.NewMemory(func(op, table string, key any) error {
		if r.quiet {
			return nil
		}
		if k, ok := key.(bpfmap.PolicyKey); ok {
			key = fmt.Sprintf("%d/%d", k.Table, k.Identity)
		}
		s := fmt.Sprintf("%s %s %v", op, table, key)
		if s == r.failOn || r.failAll {
			return fmt.Errorf("injected failure on %s", s)
		}
		r.ops = append(r.ops, s)
		return nil
	}, sizes)
	return r
}

// behind runs fn with the recorder quiet.
func (r *recorder) behind(fn func(m *bpfmap.Maps)) {
	r.quiet = true
	defer func() { r.quiet = false }()
	fn(r.m)
}

func (r *recorder) config(t *testing.T) bpfmap.NodeConfig {
	t.Helper()
	c, err := r.m.NodeConfig()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func writes(c Counts, table string) Writes { return c[table] }

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
	s, err := New(f.m)
	if err != nil {
		t.Fatal(err)
	}
	c, err := s.Sync(desired(map[uint32]string{1: "10.0.0.1", 2: "10.0.0.2"}))
	if err != nil {
		t.Fatal(err)
	}
	if writes(c, ifaces) != (Writes{Puts: 2}) || writes(c, routes) != (Writes{Puts: 2}) {
		t.Fatalf("first sync counts = %+v", c)
	}
	c, _ = s.Sync(desired(map[uint32]string{1: "10.0.0.1", 2: "10.0.0.2"}))
	if c.Total() != 0 {
		t.Fatalf("second sync of the same state wrote %+v", c)
	}

	// An agent that restarts adopts what is there and writes nothing.
	s2, err := New(f.m)
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
	s, _ := New(f.m)
	s.Sync(desired(map[uint32]string{1: "10.0.0.1"}))
	f.ops = nil
	// Replace endpoint 1 with endpoint 2: the new one goes in before the old
	// one goes, interfaces before routes on the way in, routes first on the way out.
	c, err := s.Sync(desired(map[uint32]string{2: "10.0.0.2"}))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"put cx_ifaces 2", "put cx_routes 10.0.0.2/32", "delete cx_routes 10.0.0.1/32", "delete cx_ifaces 1"}
	if fmt.Sprint(f.ops) != fmt.Sprint(want) {
		t.Fatalf("ops = %v, want %v", f.ops, want)
	}
	if c.Total() != 4 {
		t.Fatalf("counts = %+v", c)
	}
}

func TestSyncChangedValue(t *testing.T) {
	f := newFake()
	s, _ := New(f.m)
	d := desired(map[uint32]string{1: "10.0.0.1"})
	s.Sync(d)
	f.ops = nil
	d.Routes[netip.MustParsePrefix("10.0.0.1/32")] = bpfmap.Route{Type: bpfmap.RouteLocalWorkload, Ifindex: 1, MAC: bpfmap.MAC{2}}
	s.Sync(d)
	if fmt.Sprint(f.ops) != "[put cx_routes 10.0.0.1/32]" {
		t.Fatalf("ops = %v", f.ops)
	}
}

func TestSyncErrorKeepsCacheTrue(t *testing.T) {
	f := newFake()
	s, _ := New(f.m)
	f.failOn = "put cx_routes 10.0.0.1/32"
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
	if fmt.Sprint(f.ops) != "[put cx_routes 10.0.0.1/32]" || c.Total() != 1 {
		t.Fatalf("retry ops = %v (%+v)", f.ops, c)
	}
}

// Entries changed behind the syncer's back are invisible to its cache until
// Reload; then one Sync repairs exactly them.
func TestReloadRepairsOutOfBandChanges(t *testing.T) {
	f := newFake()
	s, err := New(f.m)
	if err != nil {
		t.Fatal(err)
	}
	want := desired(map[uint32]string{1: "10.0.0.1", 2: "10.0.0.2"})
	if _, err := s.Sync(want); err != nil {
		t.Fatal(err)
	}
	// By hand: a route deleted, an interface entry altered, a stray route.
	f.behind(func(m *bpfmap.Maps) {
		must(t, m.Routes.Delete(netip.MustParsePrefix("10.0.0.1/32")))
		must(t, m.Ifaces.Put(2, bpfmap.Iface{Workload: true, EndpointID: 99}))
		must(t, m.Routes.Put(netip.MustParsePrefix("10.9.9.9/32"), bpfmap.Route{Type: bpfmap.RouteHost}))
	})

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
	if writes(c, routes) != (Writes{Puts: 1, Deletes: 1}) || writes(c, ifaces) != (Writes{Puts: 1}) {
		t.Errorf("repair counts = %+v, want 1 route put, 1 iface put, 1 route delete", c)
	}
	rs, _ := f.m.Routes.All()
	is, _ := f.m.Ifaces.All()
	if _, ok := rs[netip.MustParsePrefix("10.0.0.1/32")]; !ok || is[2].EndpointID != 2 {
		t.Errorf("not repaired: routes %v, ifaces %v", rs, is)
	}
	if _, ok := rs[netip.MustParsePrefix("10.9.9.9/32")]; ok {
		t.Error("stray route left in place")
	}
}

// A floating IP goes in before the route that leads to it, and its route
// goes before the floating IP on removal.
func TestFloatingIPOrder(t *testing.T) {
	f := newFake()
	s, err := New(f.m)
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
	if i, j := indexOf(f.ops, "put cx_fips 198.51.100.10"), indexOf(f.ops, "put cx_routes 198.51.100.10/32"); i < 0 || j < 0 || i > j {
		t.Errorf("add order %v: the floating IP must come before its route", f.ops)
	}
	f.ops = nil
	if _, err := s.Sync(desired(map[uint32]string{1: "10.0.0.1"})); err != nil {
		t.Fatal(err)
	}
	if i, j := indexOf(f.ops, "delete cx_routes 198.51.100.10/32"), indexOf(f.ops, "delete cx_fips 198.51.100.10"); i < 0 || j < 0 || i > j {
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
	s, err := New(f.m)
	if err != nil {
		t.Fatal(err)
	}
	cfg := bpfmap.NodeConfig{Address: netip.MustParseAddr("10.30.0.11"), UnderlayMTU: 1500}
	d := desired(map[uint32]string{1: "10.0.0.1"})
	d.Config = cfg
	if _, err := s.Sync(d); err != nil {
		t.Fatal(err)
	}
	if f.config(t).RouteGen != 1 || indexOf(f.ops, "put cx_routes 10.0.0.1/32") > lastIndexOf(f.ops, "put cx_config 0") {
		t.Fatalf("generation %d after the first sync, ops %v: want 1, bumped after the routes", f.config(t).RouteGen, f.ops)
	}
	f.ops = nil
	d = desired(map[uint32]string{1: "10.0.0.1"})
	d.Config = cfg
	if c, _ := s.Sync(d); c.Total() != 0 || f.config(t).RouteGen != 1 {
		t.Errorf("unchanged sync wrote %+v, generation %d", c, f.config(t).RouteGen)
	}
	d = desired(map[uint32]string{})
	d.Config = cfg
	if _, err := s.Sync(d); err != nil {
		t.Fatal(err)
	}
	if f.config(t).RouteGen != 2 {
		t.Errorf("generation %d after a route was deleted, want 2", f.config(t).RouteGen)
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

// A table an interface switches to is written before the switch, and the
// table it leaves is deleted only after it.
func TestPolicyTablesAroundInterfaceSwitch(t *testing.T) {
	f := newFake()
	s, err := New(f.m)
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
	want := []string{"put cx_policy 6/0", "put cx_ifaces 3", "delete cx_policy 5/0"}
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

const (
	ifaces = "cx_ifaces"
	routes = "cx_routes"
)

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// Every table the syncer keeps is named in its counts and in Tables, in the
// order it writes them; the counts of one sync name each table written.
func TestCountsByTable(t *testing.T) {
	f := newFake()
	s, err := New(f.m)
	must(t, err)
	want := []string{"cx_prefilter", "cx_config", "cx_policy", "cx_ipcache", "cx_ifaces", "cx_fips", "cx_routes", "cx_endpoints"}
	if fmt.Sprint(s.Tables()) != fmt.Sprint(want) {
		t.Errorf("tables %v, want %v", s.Tables(), want)
	}
	d := desired(map[uint32]string{1: "10.0.0.1"})
	d.Prefilter = bpfmap.Prefilter{netip.MustParsePrefix("192.0.2.0/24"): {}}
	d.IPCache = map[netip.Prefix]bpfmap.IPCacheEntry{netip.MustParsePrefix("10.0.0.1/32"): {Identity: 7}}
	d.Policy = map[bpfmap.PolicyKey]bpfmap.PolicyVerdict{{Table: 1}: {Action: bpfmap.PolicyAllow}}
	d.Endpoints = map[uint32]bpfmap.EndpointStatus{1: {}}
	c, err := s.Sync(d)
	must(t, err)
	for _, name := range []string{"cx_prefilter", "cx_policy", "cx_ipcache", "cx_ifaces", "cx_routes", "cx_endpoints"} {
		if c[name].Puts != 1 {
			t.Errorf("%s: %+v, want 1 put (all counts %v)", name, c[name], c)
		}
	}
	c, err = s.Sync(desired(nil))
	must(t, err)
	for _, name := range []string{"cx_prefilter", "cx_policy", "cx_ipcache", "cx_ifaces", "cx_routes", "cx_endpoints"} {
		if c[name].Deletes != 1 {
			t.Errorf("%s: %+v, want 1 delete (all counts %v)", name, c[name], c)
		}
	}
}

// A refused write (a full table) does not stop the others: the other
// entries of that table and every other table are written, the stale ones
// pruned, and the refusal is returned and tried again next time.
func TestRefusedWriteIsolated(t *testing.T) {
	f := newFake()
	s, err := New(f.m)
	must(t, err)
	must(t, func() error { _, err := s.Sync(desired(map[uint32]string{9: "10.0.0.9"})); return err }())
	f.failOn = "put cx_routes 10.0.0.1/32"
	d := desired(map[uint32]string{1: "10.0.0.1", 2: "10.0.0.2"})
	d.Endpoints = map[uint32]bpfmap.EndpointStatus{1: {}, 2: {}}
	c, err := s.Sync(d)
	if err == nil || !strings.Contains(err.Error(), "10.0.0.1/32") {
		t.Fatalf("sync with a refused route: %v, want the refusal named", err)
	}
	if c[routes].Puts != 1 || c[ifaces].Puts != 2 || c["cx_endpoints"].Puts != 2 || c[routes].Deletes != 1 || c[ifaces].Deletes != 1 {
		t.Errorf("counts %v: want the other route, both interfaces and states written, endpoint 9's route and interface pruned", c)
	}
	f.failOn = ""
	f.ops = nil
	c, err = s.Sync(d)
	must(t, err)
	if fmt.Sprint(f.ops) != "[put cx_routes 10.0.0.1/32]" || c.Total() != 1 {
		t.Errorf("retry: ops %v (%v), want the refused route only", f.ops, c)
	}
}

// Thousands of refusals (a full table) make one error naming the count and
// the first few.
func TestRefusalsSummarised(t *testing.T) {
	f := newFake()
	s, err := New(f.m)
	must(t, err)
	d := &calc.Desired{Routes: map[netip.Prefix]bpfmap.Route{}}
	for i := range 1000 {
		d.Routes[netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), 32)] = bpfmap.Route{Type: bpfmap.RouteHost}
	}
	f.failAll = true
	_, err = s.Upsert(d)
	if err == nil || !strings.Contains(err.Error(), "cx_routes: 1000 writes refused, the first 3") || strings.Count(err.Error(), "injected") != 3 {
		t.Errorf("error %v", err)
	}
}

// A table that would overflow is pruned first: with 3 routes' room, moving
// from routes .1-.3 to .4-.6 deletes the old ones before adding the new. A
// table the desired set alone overflows takes what fits and says it is full.
func TestFullTablePrunedFirst(t *testing.T) {
	f := newSizedFake(map[string]int{routes: 3})
	s, err := New(f.m)
	must(t, err)
	_, err = s.Sync(desired(map[uint32]string{1: "10.0.0.1", 2: "10.0.0.2", 3: "10.0.0.3"}))
	must(t, err)
	f.ops = nil
	c, err := s.Sync(desired(map[uint32]string{4: "10.0.0.4", 5: "10.0.0.5", 6: "10.0.0.6"}))
	must(t, err)
	if c[routes] != (Writes{Puts: 3, Deletes: 3}) {
		t.Errorf("route writes %+v, want 3 puts and 3 deletes", c[routes])
	}
	if i, j := lastIndexOf(f.ops, "delete cx_routes 10.0.0.3/32"), indexOf(f.ops, "put cx_routes 10.0.0.4/32"); i < 0 || j < 0 || i > j {
		t.Errorf("ops %v: the stale routes must go before the new ones come", f.ops)
	}
	_, err = s.Sync(desired(map[uint32]string{1: "10.0.0.1", 2: "10.0.0.2", 3: "10.0.0.3", 4: "10.0.0.4", 5: "10.0.0.5"}))
	if !errors.Is(err, bpfmap.ErrTableFull) {
		t.Errorf("sync beyond the table's size: %v, want ErrTableFull", err)
	}
	rs, _ := f.m.Routes.All()
	if len(rs) != 3 {
		t.Errorf("%d routes in a table of 3", len(rs))
	}
}

// TestSyncDeltaLooksOnlyAtChanges: with a Delta from the Desired the table
// holds, a sync looks only at the keys it names; after a refused write (or
// a Reload, or a Delta from elsewhere) it compares every key again.
func TestSyncDeltaLooksOnlyAtChanges(t *testing.T) {
	f := newFake()
	s, _ := New(f.m)
	pfx := func(a string) netip.Prefix { return netip.MustParsePrefix(a + "/32") }
	routesOf := func(gen, prev uint64, changed []string, rs map[string]uint32) *calc.Desired {
		d := &calc.Desired{Routes: map[netip.Prefix]bpfmap.Route{}, Delta: &calc.Delta{Prev: prev, Gen: gen, Routes: map[netip.Prefix]struct{}{}}}
		for a, idx := range rs {
			d.Routes[pfx(a)] = bpfmap.Route{Type: bpfmap.RouteRemoteWorkload, Ifindex: idx}
		}
		for _, a := range changed {
			d.Delta.Routes[pfx(a)] = struct{}{}
		}
		return d
	}
	sync := func(d *calc.Desired, wantOps string, wantErr bool) {
		t.Helper()
		f.ops = nil
		if _, err := s.Sync(d); (err != nil) != wantErr {
			t.Fatalf("gen %d: err %v, want error %v", d.Delta.Gen, err, wantErr)
		}
		slices.Sort(f.ops) // map order
		if got := strings.Join(f.ops, ", "); got != wantOps {
			t.Fatalf("gen %d: ops %q, want %q", d.Delta.Gen, got, wantOps)
		}
	}
	sync(routesOf(1, 0, nil, map[string]uint32{"10.0.0.1": 1, "10.0.0.2": 1}), "put cx_routes 10.0.0.1/32, put cx_routes 10.0.0.2/32", false)
	sync(routesOf(2, 1, []string{"10.0.0.2", "10.0.0.3"}, map[string]uint32{"10.0.0.1": 1, "10.0.0.3": 1}), "delete cx_routes 10.0.0.2/32, put cx_routes 10.0.0.3/32", false)
	// A delta that leaves out a change shows that nothing else is looked at.
	sync(routesOf(3, 2, nil, map[string]uint32{"10.0.0.1": 2, "10.0.0.3": 1}), "", false)
	// A refused write: the next sync compares everything (and so also
	// finds the change the last delta left out).
	f.failOn = "put cx_routes 10.0.0.4/32"
	sync(routesOf(4, 3, []string{"10.0.0.4"}, map[string]uint32{"10.0.0.1": 2, "10.0.0.3": 1, "10.0.0.4": 1}), "", true)
	f.failOn = ""
	sync(routesOf(5, 4, nil, map[string]uint32{"10.0.0.1": 2, "10.0.0.3": 1, "10.0.0.4": 1}), "put cx_routes 10.0.0.1/32, put cx_routes 10.0.0.4/32", false)
	// A Delta from another Desired than the one the table holds.
	sync(routesOf(7, 6, nil, map[string]uint32{"10.0.0.1": 3, "10.0.0.3": 1, "10.0.0.4": 1}), "put cx_routes 10.0.0.1/32", false)
	// After a Reload (a resync) everything is compared again.
	f.behind(func(m *bpfmap.Maps) { m.Routes.Delete(pfx("10.0.0.3")) })
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	sync(routesOf(8, 7, nil, map[string]uint32{"10.0.0.1": 3, "10.0.0.3": 1, "10.0.0.4": 1}), "put cx_routes 10.0.0.3/32", false)
}
