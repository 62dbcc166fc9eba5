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
	want := "Config/default IPPool/p1 IPPool/p6 Node/n1 Node/n2 WorkloadEndpoint/web-1 WorkloadEndpoint/web-2"
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
