package calc

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"testing"

	"github.com/calyxnet/calyx/agent/host"
	"github.com/calyxnet/calyx/bpfmap"
	"github.com/calyxnet/calyx/model"
	"github.com/calyxnet/calyx/tests/bench/policymodel"
)

// BenchmarkCompute10k is one full Compute of the control-plane bench's
// model: 10,000 endpoints (1,000 on this node, their interfaces present),
// each with a floating IP, and 1,000 policies. It is what every change
// costs the agent today (issue 16 makes a change recompute only what
// depends on it).
func BenchmarkCompute10k(b *testing.B) {
	in := benchInput()
	d := Compute(in)
	if len(d.Ifaces) != 1000 || d.PolicyErr != nil || len(d.FloatingIPs) != 10000 {
		b.Fatalf("compute: %d interfaces, %d floating IPs, policy %v", len(d.Ifaces), len(d.FloatingIPs), d.PolicyErr)
	}
	b.ResetTimer()
	for b.Loop() {
		Compute(in)
	}
}

// benchInput is the control-plane bench's model as a calc.Input.
func benchInput() Input {
	s := model.NewSnapshot()
	s.Put(&model.IPPool{Metadata: model.Metadata{Name: "wl"}, Spec: model.IPPoolSpec{CIDR: netip.MustParsePrefix("10.64.0.0/14")}})
	s.Put(&model.IPPool{Metadata: model.Metadata{Name: "fip"}, Spec: model.IPPoolSpec{CIDR: netip.MustParsePrefix("172.16.0.0/16"), External: true}})
	s.Put(&model.Node{Metadata: model.Metadata{Name: "local"}, Spec: model.NodeSpec{IPv4Address: netip.MustParsePrefix("10.30.0.11/24")}})
	s.Put(&model.Node{Metadata: model.Metadata{Name: "remote"}, Spec: model.NodeSpec{IPv4Address: netip.MustParsePrefix("10.30.0.12/24")}})
	links := map[string]host.Interface{}
	for i := range 10000 {
		node, ifname := "remote", fmt.Sprintf("tap%d", i)
		if i < 1000 {
			node = "local"
			links[ifname] = host.Interface{Name: ifname, Ifindex: 100 + i, MAC: bpfmap.MAC{2, 0, 0, 0, byte(i >> 8), byte(i)}, Kind: bpfmap.IfaceTap}
		}
		addr := netip.AddrFrom4([4]byte{10, 64, byte(i >> 8), byte(i)})
		name := fmt.Sprintf("ep-%05d", i)
		s.Put(&model.WorkloadEndpoint{Metadata: model.Metadata{Name: name, Labels: policymodel.Labels(i)},
			Spec: model.WorkloadEndpointSpec{Node: node, Interface: ifname, IPNetworks: []netip.Prefix{netip.PrefixFrom(addr, 32)}}})
		s.Put(&model.FloatingIP{Metadata: model.Metadata{Name: "fip-" + name},
			Spec: model.FloatingIPSpec{IP: netip.AddrFrom4([4]byte{172, 16, byte(i >> 8), byte(i)}), Endpoint: name}})
	}
	for _, p := range policymodel.Policies(1000) {
		s.Put(p)
	}
	return Input{Snapshot: s, Node: "local", Links: links}
}

// BenchmarkChange10k is one change of the control-plane bench's model,
// computed by a Calculator that computed the model before it: what a
// change costs the agent. Each change is a new snapshot (a clone with one
// resource replaced), as the datastore's watch delivers it.
func BenchmarkChange10k(b *testing.B) {
	for _, bc := range []struct {
		name   string
		change func(s *model.Snapshot, i int)
	}{
		{"endpoint-added", func(s *model.Snapshot, i int) {
			name := fmt.Sprintf("new-%05d", i)
			s.Put(&model.WorkloadEndpoint{Metadata: model.Metadata{Name: name, Labels: policymodel.Labels(i)},
				Spec: model.WorkloadEndpointSpec{Node: "remote", Interface: "x" + name,
					IPNetworks: []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 65, byte(i >> 8), byte(i)}), 32)}}})
		}},
		{"floating-ip-added", func(s *model.Snapshot, i int) {
			name := fmt.Sprintf("fip-new-%05d", i)
			s.Put(&model.FloatingIP{Metadata: model.Metadata{Name: name},
				Spec: model.FloatingIPSpec{IP: netip.AddrFrom4([4]byte{172, 17, byte(i >> 8), byte(i)}), Endpoint: fmt.Sprintf("ep-%05d", i%10000)}})
		}},
		{"rule-ports-changed", func(s *model.Snapshot, i int) {
			names := slices.Sorted(maps.Keys(s.Policies))
			old := s.Policies[names[(i*7919)%len(names)]]
			p := *old
			p.Spec.Ingress = slices.Clone(old.Spec.Ingress)
			for j := range p.Spec.Ingress {
				if r := &p.Spec.Ingress[j]; len(r.Destination.Ports) > 0 {
					r.Destination.Ports = []model.PortRange{{First: uint16(1000 + i%5000), Last: uint16(1000 + i%5000)}}
					break
				}
			}
			s.Put(&p)
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			in := benchInput()
			c := NewCalculator()
			c.Compute(in)
			i := 0
			for b.Loop() {
				b.StopTimer()
				s := in.Snapshot.Clone()
				bc.change(s, i)
				in.Snapshot = s
				b.StartTimer()
				c.Compute(in)
				i++
			}
		})
	}
}
