package model

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

func pool(name, cidr string, mod ...func(*IPPoolSpec)) *IPPool {
	p := &IPPool{Metadata: Metadata{Name: name}, Spec: IPPoolSpec{CIDR: netip.MustParsePrefix(cidr)}}
	for _, m := range mod {
		m(&p.Spec)
	}
	ApplyDefaults(p)
	return p
}

func disabled(s *IPPoolSpec) { s.Disabled = true }
func external(s *IPPoolSpec) { s.External = true }

func wep(name, node, iface string, addrs ...string) *WorkloadEndpoint {
	w := &WorkloadEndpoint{Metadata: Metadata{Name: name}, Spec: WorkloadEndpointSpec{Node: node, Interface: iface}}
	for _, a := range addrs {
		w.Spec.IPNetworks = append(w.Spec.IPNetworks, netip.MustParsePrefix(a))
	}
	return w
}

func node(name, v4 string) *Node {
	return &Node{Metadata: Metadata{Name: name}, Spec: NodeSpec{IPv4Address: netip.MustParsePrefix(v4)}}
}

// fip returns a FloatingIP; fixed "" leaves spec.fixedIP unset.
func fip(name, ip, endpoint, fixed string) *FloatingIP {
	f := &FloatingIP{Metadata: Metadata{Name: name}, Spec: FloatingIPSpec{Endpoint: endpoint}}
	if ip != "" {
		f.Spec.IP = netip.MustParseAddr(ip)
	}
	if fixed != "" {
		f.Spec.FixedIP = netip.MustParseAddr(fixed)
	}
	return f
}

func snapshotOf(rs ...Resource) *Snapshot {
	s := NewSnapshot()
	for _, r := range rs {
		s.Put(r)
	}
	return s
}

func TestSnapshotValidate(t *testing.T) {
	tests := []struct {
		name string
		rs   []Resource
		want []string // empty: valid
	}{
		{"valid", []Resource{
			pool("a", "10.65.0.0/16"), pool("b", "10.66.0.0/16"), pool("v6", "fd00::/64"),
			node("n1", "10.30.0.10/24"), node("n2", "10.30.0.11/24"),
			wep("web-1", "n1", "tap1", "10.65.0.5/32", "fd00::5/128"), wep("web-2", "n1", "tap2", "10.66.0.5/32"),
			wep("web-3", "n2", "tap1", "10.65.0.6/32"),
		}, nil},
		{"duplicate address", []Resource{
			pool("a", "10.65.0.0/16"),
			wep("web-1", "n1", "tap1", "10.65.0.5/32"), wep("web-2", "n1", "tap2", "10.65.0.9/32", "10.65.0.5/32"),
		}, []string{"WorkloadEndpoint/web-2: spec.ipNetworks[1]: 10.65.0.5/32 is already used by WorkloadEndpoint/web-1"}},
		{"address in no pool", []Resource{
			pool("a", "10.65.0.0/16"), wep("web-1", "n1", "tap1", "10.99.0.1/32"),
		}, []string{"WorkloadEndpoint/web-1: spec.ipNetworks[0]: 10.99.0.1/32 is in no enabled, non-external IPPool"}},
		{"address in disabled pool", []Resource{
			pool("a", "10.65.0.0/16", disabled), wep("web-1", "n1", "tap1", "10.65.0.1/32"),
		}, []string{"WorkloadEndpoint/web-1: spec.ipNetworks[0]: 10.65.0.1/32 is in no enabled, non-external IPPool (IPPool/a, which contains it, is disabled)"}},
		{"address in external pool", []Resource{
			pool("fip", "192.0.2.0/24", external), wep("web-1", "n1", "tap1", "192.0.2.7/32"),
		}, []string{"WorkloadEndpoint/web-1: spec.ipNetworks[0]: 192.0.2.7/32 is in no enabled, non-external IPPool (IPPool/fip, which contains it, is external)"}},
		{"v6 address with only a v4 pool", []Resource{
			pool("a", "10.65.0.0/16"), wep("web-1", "n1", "tap1", "10.65.0.1/32", "fd00::1/128"),
		}, []string{"WorkloadEndpoint/web-1: spec.ipNetworks[1]: fd00::1/128 is in no enabled, non-external IPPool"}},
		{"overlapping pools", []Resource{
			pool("a", "10.65.0.0/17"), pool("b", "10.65.0.0/16"),
		}, []string{"IPPool/b: spec.cidr: 10.65.0.0/16 overlaps IPPool/a (10.65.0.0/17)"}},
		{"nested pool", []Resource{
			pool("a", "10.0.0.0/8"), pool("b", "10.65.128.0/20"),
		}, []string{"IPPool/b: spec.cidr: 10.65.128.0/20 overlaps IPPool/a (10.0.0.0/8)"}},
		{"equal pools", []Resource{
			pool("a", "10.65.0.0/16"), pool("b", "10.65.0.0/16", disabled),
		}, []string{"IPPool/b: spec.cidr: 10.65.0.0/16 overlaps IPPool/a (10.65.0.0/16)"}},
		{"same interface on a node", []Resource{
			pool("a", "10.65.0.0/16"), wep("web-1", "n1", "tap1", "10.65.0.1/32"), wep("web-2", "n1", "tap1", "10.65.0.2/32"),
		}, []string{`WorkloadEndpoint/web-2: spec.interface: "tap1" on node "n1" is already used by WorkloadEndpoint/web-1`}},
		{"endpoint on the node's underlay", []Resource{
			pool("a", "10.65.0.0/16"),
			&Node{Metadata: Metadata{Name: "n1"}, Spec: NodeSpec{IPv4Address: netip.MustParsePrefix("10.30.0.10/24"), UnderlayInterface: "eth0"}},
			wep("web-1", "n1", "eth0", "10.65.0.1/32"), wep("web-2", "n2", "eth0", "10.65.0.2/32"),
		}, []string{`WorkloadEndpoint/web-1: spec.interface: "eth0" is the underlay interface of Node/n1: the agent never attaches workload programs to it`}},
		{"endpoint with a node's address", []Resource{
			pool("a", "10.65.0.0/16"), node("n1", "10.65.0.10/16"),
			wep("web-1", "n1", "tap1", "10.65.0.10/32"),
		}, []string{"WorkloadEndpoint/web-1: spec.ipNetworks[0]: 10.65.0.10/32 is the address of Node/n1"}},
		{"same node address", []Resource{
			node("n1", "10.30.0.10/24"), node("n2", "10.30.0.10/24"),
		}, []string{"Node/n2: spec.ipv4Address: 10.30.0.10 is already used by Node/n1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := snapshotOf(tt.rs...).Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error\n%s\ndoes not contain\n%s", err, w)
				}
			}
			if n := len(ValidationErrors(err)); n != len(tt.want) {
				t.Errorf("want %d errors, got %d:\n%s", len(tt.want), n, err)
			}
		})
	}
}

func TestSnapshotValidatePrefersChanged(t *testing.T) {
	s := snapshotOf(pool("a", "10.65.0.0/16"), wep("web-1", "n1", "tap1", "10.65.0.5/32"), wep("web-2", "n1", "tap2", "10.65.0.5/32"))
	errs := s.validate(map[Ref]bool{{KindWorkloadEndpoint, "web-1"}: true})
	if len(errs) != 1 || errs[0].Error() != "WorkloadEndpoint/web-1: spec.ipNetworks[0]: 10.65.0.5/32 is already used by WorkloadEndpoint/web-2" {
		t.Fatalf("got %v", errs)
	}
}

// bigSnapshot has 100 pools and 10,000 endpoints spread over them.
func bigSnapshot() *Snapshot {
	s := NewSnapshot()
	for i := 0; i < 100; i++ {
		s.Put(pool(fmt.Sprintf("pool-%d", i), fmt.Sprintf("10.%d.0.0/16", i)))
	}
	for i := 0; i < 10000; i++ {
		addr := fmt.Sprintf("10.%d.%d.%d/32", i%100, i/100/250, i/100%250+1)
		s.Put(wep(fmt.Sprintf("ep-%d", i), fmt.Sprintf("node-%d", i%50), fmt.Sprintf("tap%d", i), addr))
	}
	return s
}

func TestSnapshotValidateLarge(t *testing.T) {
	s := bigSnapshot()
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	s.Put(wep("dup", "node-1", "tapx", "10.5.0.1/32"))
	if err := s.Validate(); err == nil || !strings.Contains(err.Error(), "is already used by") {
		t.Fatalf("got %v", err)
	}
}

func BenchmarkSnapshotValidate(b *testing.B) {
	s := bigSnapshot()
	for b.Loop() {
		_ = s.Validate()
	}
}

func TestSnapshotPutGetRemoveResources(t *testing.T) {
	s := NewSnapshot()
	if s.Config == nil || s.Config.Spec.VXLANPort != 4789 {
		t.Fatalf("default config missing: %+v", s.Config)
	}
	for _, r := range sampleResources() {
		s.Put(r)
	}
	var names []string
	for _, r := range s.Resources("") {
		names = append(names, RefOf(r).String())
	}
	want := "Config/default BGPConfiguration/default IPPool/p1 IPPool/p6 Node/n1 Node/n2 Subnet/calico-v4 Subnet/v6 BGPPeer/gateway BGPPeer/tor-a WorkloadEndpoint/web-1 WorkloadEndpoint/web-2 FloatingIP/web-1-fip FloatingIP/web-2-fip"
	if got := strings.Join(names, " "); got != want {
		t.Fatalf("Resources(\"\") = %s\nwant %s", got, want)
	}
	if got := s.Resources(KindNode); len(got) != 2 || got[0].Meta().Name != "n1" {
		t.Fatalf("Resources(Node) = %v", got)
	}

	c := s.Clone()
	if !c.Remove(Ref{KindIPPool, "p1"}) || c.Remove(Ref{KindIPPool, "p1"}) {
		t.Fatal("Remove of an existing pool did not report true once")
	}
	if _, ok := s.Get(Ref{KindIPPool, "p1"}); !ok {
		t.Fatal("removing from a clone changed the original")
	}
	if _, ok := c.Get(Ref{KindIPPool, "p1"}); ok {
		t.Fatal("pool still in clone")
	}
	if r, ok := c.Get(Ref{KindConfig, "default"}); !ok || r == nil {
		t.Fatal("config not found")
	}
	if !c.Remove(Ref{KindConfig, "default"}) || c.Remove(Ref{KindConfig, "default"}) {
		t.Fatal("Remove(Config) should report true once")
	}
	if c.Config == nil {
		t.Fatal("Config nil after Remove")
	}
	if c.Remove(Ref{KindNode, "nope"}) {
		t.Fatal("Remove of a missing node reported true")
	}
}

func TestSnapshotFloatingIPPutGetRemoveClone(t *testing.T) {
	s := NewSnapshot()
	f1 := fip("web-1-fip", "198.51.100.10", "web-1", "")
	f2 := fip("a-fip", "198.51.100.11", "web-2", "10.65.1.3")
	s.Put(f1)
	s.Put(f2)
	if got, ok := s.Get(Ref{KindFloatingIP, "web-1-fip"}); !ok || got != f1 {
		t.Fatalf("Get = %v, %v", got, ok)
	}
	if got := s.Resources("floatingips"); len(got) != 2 || got[0] != f2 || got[1] != f1 {
		t.Fatalf("Resources(floatingips) = %v", got)
	}

	c := s.Clone()
	f1b := fip("web-1-fip", "198.51.100.12", "web-1", "")
	c.Put(f1b)
	if !c.Remove(Ref{KindFloatingIP, "a-fip"}) || c.Remove(Ref{KindFloatingIP, "a-fip"}) {
		t.Fatal("Remove of an existing floating IP did not report true once")
	}
	if s.FloatingIPs["web-1-fip"] != f1 || s.FloatingIPs["a-fip"] != f2 || len(s.FloatingIPs) != 2 {
		t.Fatal("changing a clone changed the original")
	}
	if c.FloatingIPs["web-1-fip"] != f1b || len(c.FloatingIPs) != 1 {
		t.Fatalf("clone: %v", c.FloatingIPs)
	}
	if _, ok := c.Get(Ref{KindFloatingIP, "a-fip"}); ok {
		t.Fatal("removed floating IP still found")
	}

	// A zero Snapshot gets its maps on the first Put, and clones of it are
	// usable too.
	var z Snapshot
	z.Put(f1)
	if z.FloatingIPs["web-1-fip"] != f1 || z.Clone().FloatingIPs["web-1-fip"] != f1 {
		t.Fatal("Put into a zero Snapshot")
	}
}

func TestSnapshotFixedIP(t *testing.T) {
	s := snapshotOf(
		wep("web-1", "n1", "tap1", "10.65.1.2/32", "10.65.1.3/32"),
		wep("v6-first", "n1", "tap2", "fd00::2/128", "10.65.1.9/32"),
		wep("v6-only", "n1", "tap3", "fd00::3/128"),
	)
	tests := []struct {
		f    *FloatingIP
		want string // "" for false
	}{
		{fip("f", "198.51.100.10", "web-1", ""), "10.65.1.2"},
		{fip("f", "198.51.100.10", "web-1", "10.65.1.3"), "10.65.1.3"},
		{fip("f", "198.51.100.10", "v6-first", ""), "10.65.1.9"},
		{fip("f", "198.51.100.10", "v6-only", ""), ""},
		{fip("f", "198.51.100.10", "v6-only", "10.65.1.7"), "10.65.1.7"}, // explicit: Validate checks it
		{fip("f", "198.51.100.10", "gone", ""), ""},
		{fip("f", "198.51.100.10", "gone", "10.65.1.2"), ""},
	}
	for _, tt := range tests {
		got, ok := s.FixedIP(tt.f)
		if tt.want == "" {
			if ok || got.IsValid() {
				t.Errorf("FixedIP(%+v) = %v, %v; want false", tt.f.Spec, got, ok)
			}
			continue
		}
		if !ok || got != netip.MustParseAddr(tt.want) {
			t.Errorf("FixedIP(%+v) = %v, %v; want %s", tt.f.Spec, got, ok, tt.want)
		}
	}
}

// fipBase is a valid model floating IPs are added to: a workload pool, an
// external pool and endpoints with IPv4 and IPv6 addresses.
func fipBase() []Resource {
	return []Resource{
		pool("wl", "10.65.0.0/16"), pool("wl6", "fd00::/64"), pool("ext", "198.51.100.0/24", external),
		node("n1", "10.30.0.10/24"),
		wep("web-1", "n1", "tap1", "10.65.1.2/32", "fd00::2/128"),
		wep("web-2", "n1", "tap2", "10.65.1.3/32", "10.65.1.4/32"),
		wep("v6-only", "n1", "tap3", "fd00::3/128"),
	}
}

func TestSnapshotValidateFloatingIPs(t *testing.T) {
	with := func(rs ...Resource) []Resource { return append(fipBase(), rs...) }
	var manyExternal []Resource
	for i := range 7 {
		manyExternal = append(manyExternal, pool(fmt.Sprintf("ext-%d", i), fmt.Sprintf("192.0.%d.0/24", i), external))
	}
	tests := []struct {
		name string
		rs   []Resource
		want []string // exact errors; empty: valid
	}{
		{"valid", with(
			fip("web-1-fip", "198.51.100.10", "web-1", ""),
			fip("web-2-fip-a", "198.51.100.11", "web-2", "10.65.1.3"),
			fip("web-2-fip-b", "198.51.100.12", "web-2", "10.65.1.4"),
		), nil},
		{"fixed IP defaults past IPv6 addresses", with(
			wep("v6-first", "n1", "tap4", "fd00::4/128", "10.65.1.5/32"), fip("f", "198.51.100.10", "v6-first", ""),
		), nil},
		{"no external pool", []Resource{
			pool("wl", "10.65.0.0/16"), wep("web-1", "n1", "tap1", "10.65.1.2/32"), fip("f", "198.51.100.10", "web-1", ""),
		}, []string{"FloatingIP/f: spec.ip: 198.51.100.10 is in no enabled, external IPPool (there is none; floating IPs are taken from IPPools with external: true)"}},
		{"outside the external pools", with(fip("f", "203.0.113.5", "web-1", "")),
			[]string{"FloatingIP/f: spec.ip: 203.0.113.5 is in no enabled, external IPPool (the external pools are IPPool/ext (198.51.100.0/24))"}},
		{"outside many external pools", append(with(fip("f", "203.0.113.5", "web-1", "")), manyExternal...),
			[]string{"FloatingIP/f: spec.ip: 203.0.113.5 is in no enabled, external IPPool (the external pools are IPPool/ext (198.51.100.0/24), " +
				"IPPool/ext-0 (192.0.0.0/24), IPPool/ext-1 (192.0.1.0/24), IPPool/ext-2 (192.0.2.0/24), IPPool/ext-3 (192.0.3.0/24), and 3 more)"}},
		{"only an IPv6 external pool", []Resource{
			pool("wl", "10.65.0.0/16"), pool("ext6", "2001:db8::/64", external),
			wep("web-1", "n1", "tap1", "10.65.1.2/32"), fip("f", "198.51.100.10", "web-1", ""),
		}, []string{"FloatingIP/f: spec.ip: 198.51.100.10 is in no enabled, external IPPool (there is none; floating IPs are taken from IPPools with external: true)"}},
		{"in a disabled external pool", with(pool("ext-off", "203.0.113.0/24", external, disabled), fip("f", "203.0.113.5", "web-1", "")),
			[]string{"FloatingIP/f: spec.ip: 203.0.113.5 is in no enabled, external IPPool (IPPool/ext-off, which contains it, is disabled)"}},
		{"inside a workload pool", with(fip("f", "10.65.200.1", "web-1", "")),
			[]string{"FloatingIP/f: spec.ip: 10.65.200.1 is inside IPPool/wl (10.65.0.0/16), which is not external; floating IPs are taken from IPPools with external: true"}},
		{"inside a disabled workload pool", with(pool("old", "10.99.0.0/16", disabled), fip("f", "10.99.0.1", "web-1", "")),
			[]string{"FloatingIP/f: spec.ip: 10.99.0.1 is inside IPPool/old (10.99.0.0/16), which is not external; floating IPs are taken from IPPools with external: true"}},
		{"a workload's address", with(fip("f", "10.65.1.3", "web-1", "")),
			[]string{"FloatingIP/f: spec.ip: 10.65.1.3 is an address of WorkloadEndpoint/web-2; a floating IP must not be a workload's address"}},
		{"a node's address", with(node("edge", "198.51.100.20/24"), fip("f", "198.51.100.20", "web-1", "")),
			[]string{"FloatingIP/f: spec.ip: 198.51.100.20 is the address of Node/edge; a floating IP must not be a node's address"}},
		{"used by two floating IPs", with(fip("a", "198.51.100.10", "web-1", ""), fip("b", "198.51.100.10", "web-2", "")),
			[]string{"FloatingIP/b: spec.ip: 198.51.100.10 is already used by FloatingIP/a"}},
		{"endpoint does not exist", with(fip("f", "198.51.100.10", "web-9", "")),
			[]string{"FloatingIP/f: spec.endpoint: WorkloadEndpoint/web-9 does not exist"}},
		{"fixed IP not the endpoint's", with(fip("f", "198.51.100.10", "web-1", "10.65.9.9")),
			[]string{"FloatingIP/f: spec.fixedIP: 10.65.9.9 is not an address of WorkloadEndpoint/web-1 (10.65.1.2/32, fd00::2/128)"}},
		{"fixed IP of another endpoint", with(fip("f", "198.51.100.10", "web-1", "10.65.1.3")),
			[]string{"FloatingIP/f: spec.fixedIP: 10.65.1.3 is not an address of WorkloadEndpoint/web-1 (10.65.1.2/32, fd00::2/128)"}},
		{"endpoint without IPv4", with(fip("f", "198.51.100.10", "v6-only", "")),
			[]string{"FloatingIP/f: spec.endpoint: WorkloadEndpoint/v6-only has no IPv4 address (it has fd00::3/128); an IPv4 floating IP needs an IPv4 fixed IP"}},
		{"one fixed IP, two floating IPs", with(fip("a", "198.51.100.10", "web-1", ""), fip("b", "198.51.100.11", "web-1", "10.65.1.2")),
			[]string{"FloatingIP/b: spec.fixedIP: 10.65.1.2 of WorkloadEndpoint/web-1 already has FloatingIP/a; an address can have only one floating IP"}},
		{"several problems at once", with(fip("f", "10.65.200.1", "web-1", "10.65.9.9"), fip("g", "198.51.100.10", "nope", "")), []string{
			"FloatingIP/f: spec.fixedIP: 10.65.9.9 is not an address of WorkloadEndpoint/web-1 (10.65.1.2/32, fd00::2/128)",
			"FloatingIP/f: spec.ip: 10.65.200.1 is inside IPPool/wl (10.65.0.0/16), which is not external; floating IPs are taken from IPPools with external: true",
			"FloatingIP/g: spec.endpoint: WorkloadEndpoint/nope does not exist",
		}},
		// What Validate rejects on its own is not reported again here.
		{"single-resource problems are not repeated", with(
			fip("v6", "2001:db8::10", "web-1", ""), fip("noendpoint", "198.51.100.10", "", ""),
			fip("v6fixed", "198.51.100.11", "web-1", "fd00::2"), fip("noip", "", "web-2", ""),
		), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			errs := snapshotOf(tt.rs...).validate(nil)
			var got []string
			for _, e := range errs {
				got = append(got, e.Error())
			}
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Fatalf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

func TestSnapshotValidateFloatingIPPrefersChanged(t *testing.T) {
	s := snapshotOf(append(fipBase(), fip("a", "198.51.100.10", "web-1", ""), fip("b", "198.51.100.10", "web-2", "10.65.1.4"),
		fip("c", "198.51.100.11", "web-2", ""), fip("d", "198.51.100.12", "web-2", "10.65.1.3"))...)
	errs := s.validate(map[Ref]bool{{KindFloatingIP, "a"}: true, {KindFloatingIP, "c"}: true})
	var got []string
	for _, e := range errs {
		got = append(got, e.Error())
	}
	want := "FloatingIP/a: spec.ip: 198.51.100.10 is already used by FloatingIP/b\n" +
		"FloatingIP/c: spec.fixedIP: 10.65.1.3 of WorkloadEndpoint/web-2 already has FloatingIP/d; an address can have only one floating IP"
	if strings.Join(got, "\n") != want {
		t.Fatalf("got\n%s\nwant\n%s", strings.Join(got, "\n"), want)
	}
}

// Removing what a FloatingIP needs (its endpoint, its external pool, the
// endpoint's address it maps to) makes the snapshot invalid, which is how
// Delete and Apply refuse such changes.
func TestSnapshotFloatingIPReferences(t *testing.T) {
	base := snapshotOf(append(fipBase(), fip("web-1-fip", "198.51.100.10", "web-1", "10.65.1.2"))...)
	if err := base.Validate(); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		change func(*Snapshot)
		want   string
	}{
		{"endpoint removed", func(s *Snapshot) { s.Remove(Ref{KindWorkloadEndpoint, "web-1"}) },
			"FloatingIP/web-1-fip: spec.endpoint: WorkloadEndpoint/web-1 does not exist"},
		{"external pool removed", func(s *Snapshot) { s.Remove(Ref{KindIPPool, "ext"}) },
			"FloatingIP/web-1-fip: spec.ip: 198.51.100.10 is in no enabled, external IPPool (there is none; floating IPs are taken from IPPools with external: true)"},
		{"external pool disabled", func(s *Snapshot) { s.Put(pool("ext", "198.51.100.0/24", external, disabled)) },
			"FloatingIP/web-1-fip: spec.ip: 198.51.100.10 is in no enabled, external IPPool (IPPool/ext, which contains it, is disabled)"},
		{"pool made internal", func(s *Snapshot) { s.Put(pool("ext", "198.51.100.0/24")) },
			"FloatingIP/web-1-fip: spec.ip: 198.51.100.10 is inside IPPool/ext (198.51.100.0/24), which is not external; floating IPs are taken from IPPools with external: true"},
		{"fixed IP taken off the endpoint", func(s *Snapshot) { s.Put(wep("web-1", "n1", "tap1", "10.65.1.7/32")) },
			"FloatingIP/web-1-fip: spec.fixedIP: 10.65.1.2 is not an address of WorkloadEndpoint/web-1 (10.65.1.7/32)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := base.Clone()
			tt.change(s)
			err := s.Validate()
			if err == nil || err.Error() != tt.want {
				t.Fatalf("got %v\nwant %s", err, tt.want)
			}
			if base.Validate() != nil {
				t.Fatal("the change reached the original snapshot")
			}
		})
	}
	// Removing the floating IP with its endpoint is fine.
	s := base.Clone()
	s.Remove(Ref{KindWorkloadEndpoint, "web-1"})
	s.Remove(Ref{KindFloatingIP, "web-1-fip"})
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
}
