package calc

import (
	"fmt"
	"net"
	"net/netip"
	"reflect"
	"slices"
	"testing"

	"github.com/calyxnet/calyx/agent/host"
	"github.com/calyxnet/calyx/bpfmap"
	"github.com/calyxnet/calyx/model"
)

func snapshot(t *testing.T) *model.Snapshot {
	t.Helper()
	s := model.NewSnapshot()
	s.Put(&model.IPPool{Metadata: model.Metadata{Name: "p"}, Spec: model.IPPoolSpec{CIDR: netip.MustParsePrefix("10.65.0.0/16")}})
	s.Put(&model.Node{Metadata: model.Metadata{Name: "host-a"}, Spec: model.NodeSpec{IPv4Address: netip.MustParsePrefix("10.30.0.11/24")}})
	s.Put(&model.Node{Metadata: model.Metadata{Name: "host-b"}, Spec: model.NodeSpec{IPv4Address: netip.MustParsePrefix("10.30.0.12/24")}})
	mac, _ := net.ParseMAC("02:00:00:00:00:01")
	s.Put(&model.WorkloadEndpoint{Metadata: model.Metadata{Name: "w1"}, Spec: model.WorkloadEndpointSpec{
		Node: "host-a", Interface: "tap1", MAC: mac,
		IPNetworks: []netip.Prefix{netip.MustParsePrefix("10.65.0.2/32"), netip.MustParsePrefix("10.65.0.20/32")}}})
	s.Put(&model.WorkloadEndpoint{Metadata: model.Metadata{Name: "w2"}, Spec: model.WorkloadEndpointSpec{
		Node: "host-a", Interface: "tap2", IPNetworks: []netip.Prefix{netip.MustParsePrefix("10.65.0.3/32")}}})
	s.Put(&model.WorkloadEndpoint{Metadata: model.Metadata{Name: "w3"}, Spec: model.WorkloadEndpointSpec{
		Node: "host-a", Interface: "tap3", IPNetworks: []netip.Prefix{netip.MustParsePrefix("10.65.0.4/32")}}})
	s.Put(&model.WorkloadEndpoint{Metadata: model.Metadata{Name: "remote"}, Spec: model.WorkloadEndpointSpec{
		Node: "host-b", Interface: "tap9", IPNetworks: []netip.Prefix{netip.MustParsePrefix("10.65.1.9/32")}}})
	return s
}

func TestCompute(t *testing.T) {
	hostMAC1 := bpfmap.MAC{0xaa, 0, 0, 0, 0, 1}
	hostMAC2 := bpfmap.MAC{0xaa, 0, 0, 0, 0, 2}
	d := Compute(Input{
		Snapshot: snapshot(t),
		Node:     "host-a",
		Links: map[string]host.Interface{
			"tap1": {Name: "tap1", Ifindex: 11, MAC: hostMAC1},
			"tap2": {Name: "tap2", Ifindex: 12, MAC: hostMAC2},
			"eth0": {Name: "eth0", Ifindex: 2},
		},
	})

	wantIfaces := map[uint32]bpfmap.Iface{
		// Counter slots from the first by endpoint name.
		11: {Workload: true, CheckMAC: true, EndpointID: model.EndpointID("w1"), MAC: bpfmap.MAC{2, 0, 0, 0, 0, 1}, HostMAC: hostMAC1, CounterSlot: 2},
		12: {Workload: true, EndpointID: model.EndpointID("w2"), HostMAC: hostMAC2, CounterSlot: 3},
	}
	if len(d.Ifaces) != len(wantIfaces) {
		t.Fatalf("ifaces = %v, want %v", d.Ifaces, wantIfaces)
	}
	for k, v := range wantIfaces {
		if d.Ifaces[k] != v {
			t.Errorf("iface %d = %+v, want %+v", k, d.Ifaces[k], v)
		}
	}

	wantRoutes := map[string]bpfmap.Route{
		"10.30.0.11/32": {Type: bpfmap.RouteHost},
		"10.65.0.2/32":  {Type: bpfmap.RouteLocalWorkload, Ifindex: 11, MAC: bpfmap.MAC{2, 0, 0, 0, 0, 1}, HostMAC: hostMAC1, CounterSlot: 2},
		"10.65.0.20/32": {Type: bpfmap.RouteLocalWorkload, Ifindex: 11, MAC: bpfmap.MAC{2, 0, 0, 0, 0, 1}, HostMAC: hostMAC1, CounterSlot: 2},
		"10.65.0.3/32":  {Type: bpfmap.RouteLocalWorkload, Ifindex: 12, HostMAC: hostMAC2, CounterSlot: 3},
		"10.65.1.9/32":  {Type: bpfmap.RouteRemoteWorkload, NextHop: netip.MustParseAddr("10.30.0.12")},
		"10.30.0.12/32": {Type: bpfmap.RouteNode, NextHop: netip.MustParseAddr("10.30.0.12")},
		"10.65.0.0/16":  {Type: bpfmap.RoutePool},
	}
	if len(d.Routes) != len(wantRoutes) {
		t.Errorf("routes = %v, want %d entries", d.Routes, len(wantRoutes))
	}
	for p, v := range wantRoutes {
		if got := d.Routes[netip.MustParsePrefix(p)]; got != v {
			t.Errorf("route %s = %+v, want %+v", p, got, v)
		}
	}

	// No Underlay named in the input: only the workloads are attached.
	if len(d.Attach) != 2 || d.Attach[11].Ifname != "tap1" || d.Attach[12].Endpoint != "w2" {
		t.Errorf("attach = %+v", d.Attach)
	}
	wantKernel := []host.Route{
		{Dst: netip.MustParsePrefix("10.65.0.2/32"), Ifindex: 11},
		{Dst: netip.MustParsePrefix("10.65.0.20/32"), Ifindex: 11},
		{Dst: netip.MustParsePrefix("10.65.0.3/32"), Ifindex: 12},
	}
	if len(d.KernelRoutes) != len(wantKernel) {
		t.Fatalf("kernel routes = %v, want %v", d.KernelRoutes, wantKernel)
	}
	for i := range wantKernel {
		if d.KernelRoutes[i] != wantKernel[i] {
			t.Errorf("kernel route %d = %v, want %v", i, d.KernelRoutes[i], wantKernel[i])
		}
	}
	// No kernel route for a remote endpoint: the FIB is for the underlay.
	if len(d.Pending) != 1 || d.Pending[0] != "w3" {
		t.Errorf("pending = %v, want [w3] (tap3 does not exist)", d.Pending)
	}
}

func TestComputeIsDeterministic(t *testing.T) {
	in := Input{Snapshot: snapshot(t), Node: "host-a", Links: map[string]host.Interface{"tap1": {Name: "tap1", Ifindex: 3}}}
	a, b := Compute(in), Compute(in)
	if len(a.Routes) != len(b.Routes) || len(a.Ifaces) != len(b.Ifaces) {
		t.Fatal("two computations of one input differ")
	}
	for k, v := range a.Ifaces {
		if b.Ifaces[k] != v {
			t.Fatalf("interface %d differs between runs (counter slots by name)", k)
		}
	}
	for k, v := range a.Routes {
		if b.Routes[k] != v {
			t.Fatalf("route %s differs between runs", k)
		}
	}
}

func TestComputeEmpty(t *testing.T) {
	d := Compute(Input{Node: "x"})
	if len(d.Routes)+len(d.Ifaces)+len(d.Attach) != 0 {
		t.Fatalf("nil snapshot gave %+v", d)
	}
}

func TestEndpointIDStable(t *testing.T) {
	if model.EndpointID("web-1") != model.EndpointID("web-1") || model.EndpointID("web-1") == model.EndpointID("web-2") {
		t.Fatal("endpoint IDs must be stable per name and differ between names")
	}
}

// threeNodes is the lab's topology: a and b share 10.30.0.0/24, c is on
// 10.30.1.0/24 behind a router.
func threeNodes(ipip, vxlan model.EncapMode) *model.Snapshot {
	s := model.NewSnapshot()
	s.Put(&model.IPPool{Metadata: model.Metadata{Name: "p"}, Spec: model.IPPoolSpec{
		CIDR: netip.MustParsePrefix("10.65.0.0/16"), IPIPMode: ipip, VXLANMode: vxlan}})
	for name, addr := range map[string]string{"a": "10.30.0.11/24", "b": "10.30.0.12/24", "c": "10.30.1.13/24"} {
		s.Put(&model.Node{Metadata: model.Metadata{Name: name}, Spec: model.NodeSpec{IPv4Address: netip.MustParsePrefix(addr)}})
	}
	for name, ep := range map[string][2]string{"wa": {"a", "10.65.1.2/32"}, "wb": {"b", "10.65.2.2/32"}, "wc": {"c", "10.65.3.2/32"}} {
		s.Put(&model.WorkloadEndpoint{Metadata: model.Metadata{Name: name}, Spec: model.WorkloadEndpointSpec{
			Node: ep[0], Interface: "tap-" + name, IPNetworks: []netip.Prefix{netip.MustParsePrefix(ep[1])}}})
	}
	return s
}

func TestComputeEncapPerPoolMode(t *testing.T) {
	for _, tc := range []struct {
		ipip, vxlan model.EncapMode
		toB, toC    bpfmap.Encap
		workloadMTU int
		encapsInUse []bpfmap.Encap
	}{
		{model.EncapAlways, model.EncapNever, bpfmap.EncapIPIP, bpfmap.EncapIPIP, 1480, []bpfmap.Encap{bpfmap.EncapIPIP}},
		{model.EncapNever, model.EncapAlways, bpfmap.EncapVXLAN, bpfmap.EncapVXLAN, 1450, []bpfmap.Encap{bpfmap.EncapVXLAN}},
		{model.EncapCrossSubnet, model.EncapNever, bpfmap.EncapNone, bpfmap.EncapIPIP, 1480, []bpfmap.Encap{bpfmap.EncapNone, bpfmap.EncapIPIP}},
		{model.EncapNever, model.EncapCrossSubnet, bpfmap.EncapNone, bpfmap.EncapVXLAN, 1450, []bpfmap.Encap{bpfmap.EncapNone, bpfmap.EncapVXLAN}},
		{model.EncapNever, model.EncapNever, bpfmap.EncapNone, bpfmap.EncapNone, 1500, []bpfmap.Encap{bpfmap.EncapNone}},
	} {
		t.Run(string(tc.ipip)+"/"+string(tc.vxlan), func(t *testing.T) {
			d := Compute(Input{Snapshot: threeNodes(tc.ipip, tc.vxlan), Node: "a", Underlay: "eth0",
				Links: map[string]host.Interface{
					"eth0":   {Name: "eth0", Ifindex: 2, MTU: 1500},
					"tap-wa": {Name: "tap-wa", Ifindex: 7},
				}})
			for dst, want := range map[string]struct {
				encap bpfmap.Encap
				node  string
			}{"10.65.2.2/32": {tc.toB, "10.30.0.12"}, "10.65.3.2/32": {tc.toC, "10.30.1.13"}} {
				got := d.Routes[netip.MustParsePrefix(dst)]
				if got.Type != bpfmap.RouteRemoteWorkload || got.Encap != want.encap || got.NextHop != netip.MustParseAddr(want.node) {
					t.Errorf("route %s = %+v, want remote-workload via %s encap %s", dst, got, want.node, want.encap)
				}
			}
			if d.WorkloadMTU != tc.workloadMTU {
				t.Errorf("workload MTU %d, want %d", d.WorkloadMTU, tc.workloadMTU)
			}
			inUse := encapsInUse(d)
			if len(inUse) != len(tc.encapsInUse) {
				t.Errorf("encaps in use %v, want %v", inUse, tc.encapsInUse)
			}
			for i := range tc.encapsInUse {
				if i < len(inUse) && inUse[i] != tc.encapsInUse[i] {
					t.Errorf("encaps in use %v, want %v", inUse, tc.encapsInUse)
				}
			}
			// Both other nodes are tunnel peers; this node is the host.
			for _, n := range []string{"10.30.0.12", "10.30.1.13"} {
				if r := d.Routes[netip.MustParsePrefix(n+"/32")]; r.Type != bpfmap.RouteNode {
					t.Errorf("node %s route = %+v, want node", n, r)
				}
			}
			if r := d.Routes[netip.MustParsePrefix("10.30.0.11/32")]; r.Type != bpfmap.RouteHost {
				t.Errorf("own address route = %+v, want host", r)
			}
			wantCfg := bpfmap.NodeConfig{Address: netip.MustParseAddr("10.30.0.11"), UnderlayIfindex: 2, UnderlayMTU: 1500,
				VXLANVNI: model.DefaultVXLANVNI, VXLANPort: model.DefaultVXLANPort,
				Metadata: netip.MustParseAddrPort(model.DefaultMetadataAddress), NATPorts: [2]uint16{20000, 29999},
				WorkloadMTU: uint32(tc.workloadMTU)}
			if d.Config != wantCfg {
				t.Errorf("config = %+v, want %+v", d.Config, wantCfg)
			}
			if at := d.Attach[2]; !at.Underlay || at.Ifname != "eth0" {
				t.Errorf("underlay attachment = %+v, want eth0 as underlay", at)
			}
			// No kernel route for any remote workload or block.
			for _, kr := range d.KernelRoutes {
				if kr.Dst != netip.MustParsePrefix("10.65.1.2/32") {
					t.Errorf("unexpected kernel route %v", kr)
				}
			}
		})
	}
}

func TestComputeConfigFromModel(t *testing.T) {
	s := threeNodes(model.EncapNever, model.EncapAlways)
	s.Put(&model.Config{Metadata: model.Metadata{Name: "default"}, Spec: model.ConfigSpec{VXLANVNI: 77, VXLANPort: 4790}})
	d := Compute(Input{Snapshot: s, Node: "a", Underlay: "eth0", Links: map[string]host.Interface{"eth0": {Name: "eth0", Ifindex: 2, MTU: 9000}}})
	if d.Config.VXLANVNI != 77 || d.Config.VXLANPort != 4790 || d.WorkloadMTU != 8950 {
		t.Errorf("config %+v, workload MTU %d; want VNI 77, port 4790, MTU 8950", d.Config, d.WorkloadMTU)
	}
	// A node without an underlay address has no config and no underlay
	// attachment: nothing can be tunnelled yet.
	d = Compute(Input{Snapshot: s, Node: "new", Underlay: "eth0", Links: map[string]host.Interface{"eth0": {Name: "eth0", Ifindex: 2, MTU: 1500}}})
	if d.Config.Address.IsValid() || len(d.Attach) != 0 {
		t.Errorf("unregistered node: config %+v, attach %+v", d.Config, d.Attach)
	}
}

func TestPoolRoutes(t *testing.T) {
	s := threeNodes(model.EncapNever, model.EncapAlways)
	s.Put(&model.IPPool{Metadata: model.Metadata{Name: "fip"}, Spec: model.IPPoolSpec{CIDR: netip.MustParsePrefix("198.51.100.0/24"), External: true}})
	s.Put(&model.IPPool{Metadata: model.Metadata{Name: "off"}, Spec: model.IPPoolSpec{CIDR: netip.MustParsePrefix("10.99.0.0/16"), Disabled: true}})
	pools := WorkloadPools(s)
	if len(pools) != 1 || pools[0] != netip.MustParsePrefix("10.65.0.0/16") {
		t.Fatalf("workload pools = %v, want only 10.65.0.0/16 (external and disabled pools are not routed)", pools)
	}
	in := Input{Snapshot: s, Node: "a", Underlay: "eth0", Links: map[string]host.Interface{"eth0": {Name: "eth0", Ifindex: 2, MTU: 1500}}}
	rs := PoolRoutes(Compute(in), pools)
	want := host.Route{Dst: netip.MustParsePrefix("10.65.0.0/16"), Ifindex: 2, Gateway: host.UnderlayGateway}
	if len(rs) != 1 || rs[0] != want {
		t.Errorf("pool routes = %v, want [%v]", rs, want)
	}
	// Without an underlay carrying the programs, a pool route would lead
	// nowhere: none.
	in.Underlay = "missing"
	if rs := PoolRoutes(Compute(in), pools); len(rs) != 0 {
		t.Errorf("pool routes without an underlay = %v, want none", rs)
	}
}

func TestComputeFloatingIPsAndNATOutgoing(t *testing.T) {
	s := threeNodes(model.EncapNever, model.EncapAlways)
	s.Put(&model.IPPool{Metadata: model.Metadata{Name: "fip"}, Spec: model.IPPoolSpec{CIDR: netip.MustParsePrefix("198.51.100.0/24"), External: true}})
	s.Put(&model.IPPool{Metadata: model.Metadata{Name: "nat"}, Spec: model.IPPoolSpec{CIDR: netip.MustParsePrefix("10.66.0.0/16"), NATOutgoing: true}})
	s.Put(&model.WorkloadEndpoint{Metadata: model.Metadata{Name: "wn"}, Spec: model.WorkloadEndpointSpec{
		Node: "a", Interface: "tap-wn", IPNetworks: []netip.Prefix{netip.MustParsePrefix("10.66.0.2/32")}}})
	s.Put(&model.FloatingIP{Metadata: model.Metadata{Name: "fa"}, Spec: model.FloatingIPSpec{IP: netip.MustParseAddr("198.51.100.10"), Endpoint: "wa"}})
	s.Put(&model.FloatingIP{Metadata: model.Metadata{Name: "fc"}, Spec: model.FloatingIPSpec{IP: netip.MustParseAddr("198.51.100.30"), Endpoint: "wc"}})
	if err := s.Validate(); err != nil {
		t.Fatalf("model: %v", err)
	}
	d := Compute(Input{Snapshot: s, Node: "a", Underlay: "eth0", Links: map[string]host.Interface{
		"eth0": {Name: "eth0", Ifindex: 2, MTU: 1500}, "tap-wa": {Name: "tap-wa", Ifindex: 7}, "tap-wn": {Name: "tap-wn", Ifindex: 8}}})

	want := map[netip.Addr]bpfmap.FloatingIP{
		netip.MustParseAddr("198.51.100.10"): {Fixed: netip.MustParseAddr("10.65.1.2"), Node: netip.MustParseAddr("10.30.0.11"), EndpointID: model.EndpointID("wa"), Local: true},
		netip.MustParseAddr("198.51.100.30"): {Fixed: netip.MustParseAddr("10.65.3.2"), Node: netip.MustParseAddr("10.30.1.13"), EndpointID: model.EndpointID("wc")},
	}
	if len(d.FloatingIPs) != len(want) {
		t.Fatalf("floating IPs = %v, want %v", d.FloatingIPs, want)
	}
	for ip, f := range want {
		if d.FloatingIPs[ip] != f {
			t.Errorf("floating IP %s = %+v, want %+v", ip, d.FloatingIPs[ip], f)
		}
		if r := d.Routes[netip.PrefixFrom(ip, 32)]; r.Type != bpfmap.RouteFloatingIP || r.NextHop != f.Node {
			t.Errorf("route of %s = %+v, want floating-ip via %s", ip, r, f.Node)
		}
	}
	// Only workload pools are "inside"; the external pool is not routed.
	for p, want := range map[string]bool{"10.65.0.0/16": true, "10.66.0.0/16": true, "198.51.100.0/24": false} {
		if _, ok := d.Routes[netip.MustParsePrefix(p)]; ok != want {
			t.Errorf("pool route %s present %v, want %v", p, ok, want)
		}
	}
	if !d.Routes[netip.MustParsePrefix("10.66.0.2/32")].NATOutgoing || d.Routes[netip.MustParsePrefix("10.65.1.2/32")].NATOutgoing {
		t.Errorf("natOutgoing flags: wn %v (want true), wa %v (want false)",
			d.Routes[netip.MustParsePrefix("10.66.0.2/32")].NATOutgoing, d.Routes[netip.MustParsePrefix("10.65.1.2/32")].NATOutgoing)
	}
}

// encapsInUse lists the encapsulations d's remote-workload routes use, sorted.
func encapsInUse(d *Desired) []bpfmap.Encap {
	seen := map[bpfmap.Encap]bool{}
	var out []bpfmap.Encap
	for _, r := range d.Routes {
		if r.Type == bpfmap.RouteRemoteWorkload && !seen[r.Encap] {
			seen[r.Encap] = true
			out = append(out, r.Encap)
		}
	}
	slices.Sort(out)
	return out
}

func block(cidr, pool, node string) *model.IPAMBlock {
	p := netip.MustParsePrefix(cidr)
	return &model.IPAMBlock{Metadata: model.Metadata{Name: model.BlockName(p)}, Spec: model.IPAMBlockSpec{CIDR: p, Pool: pool, Node: node}}
}

func endpoint(name, node string, addrs ...string) *model.WorkloadEndpoint {
	ep := &model.WorkloadEndpoint{Metadata: model.Metadata{Name: name}, Spec: model.WorkloadEndpointSpec{Node: node, Interface: "tap-" + name}}
	for _, a := range addrs {
		ep.Spec.IPNetworks = append(ep.Spec.IPNetworks, netip.MustParsePrefix(a))
	}
	return ep
}

// TestComputeBlockRoutes: another node's block is one route to that node;
// its endpoints inside it need no /32 of their own, while an endpoint address
// outside its node's blocks (an OpenStack subnet spanning hosts) keeps one.
func TestComputeBlockRoutes(t *testing.T) {
	// a and b share an underlay subnet, c is behind a router: CrossSubnet
	// IP-in-IP goes to c only. The second pool always uses VXLAN.
	s := threeNodes(model.EncapCrossSubnet, model.EncapNever)
	s.Put(&model.IPPool{Metadata: model.Metadata{Name: "vx"}, Spec: model.IPPoolSpec{
		CIDR: netip.MustParsePrefix("10.70.0.0/16"), VXLANMode: model.EncapAlways}})
	s.Put(block("10.65.1.0/26", "p", "a"))  // this node's own: no route
	s.Put(block("10.65.2.0/26", "p", "b"))  // holds wb (10.65.2.2) and wb2
	s.Put(block("10.65.3.0/26", "p", "c"))  // holds wc (10.65.3.2)
	s.Put(block("10.65.4.0/26", "p", "b"))  // no endpoint yet: routed all the same
	s.Put(block("10.70.0.0/26", "vx", "b")) // VXLAN pool
	s.Put(endpoint("wb2", "b", "10.65.2.3/32", "10.70.0.5/32", "10.65.77.7/32"))
	// c's endpoint with an address inside b's block: its /32 wins over
	// b's block route.
	s.Put(endpoint("wc2", "c", "10.65.2.50/32"))
	// a's own endpoint inside b's block is still delivered locally.
	s.Put(endpoint("wa2", "a", "10.65.4.9/32"))
	// A node that is gone: its block and endpoints route nowhere.
	s.Put(block("10.65.5.0/26", "p", "gone"))
	s.Put(endpoint("wg", "gone", "10.65.5.2/32", "10.65.6.2/32"))
	// A node with no underlay address yet: likewise.
	s.Put(&model.Node{Metadata: model.Metadata{Name: "new"}})
	s.Put(block("10.65.7.0/26", "p", "new"))

	d := Compute(Input{Snapshot: s, Node: "a", Underlay: "eth0", Links: map[string]host.Interface{
		"eth0": {Name: "eth0", Ifindex: 2, MTU: 1500}, "tap-wa": {Name: "tap-wa", Ifindex: 7}, "tap-wa2": {Name: "tap-wa2", Ifindex: 8}}})

	b, c := netip.MustParseAddr("10.30.0.12"), netip.MustParseAddr("10.30.1.13")
	want := map[string]bpfmap.Route{
		"10.65.2.0/26":  {Type: bpfmap.RouteRemoteWorkload, NextHop: b},
		"10.65.4.0/26":  {Type: bpfmap.RouteRemoteWorkload, NextHop: b},
		"10.65.3.0/26":  {Type: bpfmap.RouteRemoteWorkload, NextHop: c, Encap: bpfmap.EncapIPIP},
		"10.70.0.0/26":  {Type: bpfmap.RouteRemoteWorkload, NextHop: b, Encap: bpfmap.EncapVXLAN},
		"10.65.77.7/32": {Type: bpfmap.RouteRemoteWorkload, NextHop: b},
		"10.65.2.50/32": {Type: bpfmap.RouteRemoteWorkload, NextHop: c, Encap: bpfmap.EncapIPIP},
		"10.65.1.2/32":  {Type: bpfmap.RouteLocalWorkload, Ifindex: 7, CounterSlot: 2},
		"10.65.4.9/32":  {Type: bpfmap.RouteLocalWorkload, Ifindex: 8, CounterSlot: 3},
		"10.65.0.0/16":  {Type: bpfmap.RoutePool},
		"10.70.0.0/16":  {Type: bpfmap.RoutePool},
		"10.30.0.11/32": {Type: bpfmap.RouteHost},
		"10.30.0.12/32": {Type: bpfmap.RouteNode, NextHop: b},
		"10.30.1.13/32": {Type: bpfmap.RouteNode, NextHop: c},
	}
	for p, w := range want {
		if got, ok := d.Routes[netip.MustParsePrefix(p)]; !ok || got != w {
			t.Errorf("route %s = %+v (present %v), want %+v", p, got, ok, w)
		}
	}
	// Nothing else: no /32 for endpoints inside their node's block, none
	// for this node's own block, none for a gone or address-less node.
	for p, r := range d.Routes {
		if _, ok := want[p.String()]; !ok {
			t.Errorf("unexpected route %s = %+v", p, r)
		}
	}
	// Blocks are the dataplane's business: no kernel route for them.
	for _, kr := range d.KernelRoutes {
		if kr.Dst.Bits() != 32 || kr.Gateway.IsValid() {
			t.Errorf("unexpected kernel route %v", kr)
		}
	}
}

// TestComputeBlockMoves: when a block changes hands (its node deleted and
// the block claimed by another), its route follows and the endpoints of the
// old node's that remain are routed by /32 only while their node exists.
func TestComputeBlockMoves(t *testing.T) {
	s := threeNodes(model.EncapNever, model.EncapNever)
	s.Put(block("10.65.2.0/26", "p", "b"))
	in := Input{Snapshot: s, Node: "a"}
	blk := netip.MustParsePrefix("10.65.2.0/26")
	if r := Compute(in).Routes[blk]; r.NextHop != netip.MustParseAddr("10.30.0.12") {
		t.Fatalf("block route = %+v, want via b", r)
	}
	if _, ok := Compute(in).Routes[netip.MustParsePrefix("10.65.2.2/32")]; ok {
		t.Error("wb has a /32 although b's block covers it")
	}
	s = s.Clone()
	s.Remove(model.Ref{Kind: model.KindNode, Name: "b"})
	in.Snapshot = s
	d := Compute(in)
	for _, p := range []string{"10.65.2.0/26", "10.65.2.2/32", "10.30.0.12/32"} {
		if r, ok := d.Routes[netip.MustParsePrefix(p)]; ok {
			t.Errorf("node b is gone but %s routes %+v", p, r)
		}
	}
	s = s.Clone()
	s.Put(block("10.65.2.0/26", "p", "c"))
	in.Snapshot = s
	if r := Compute(in).Routes[blk]; r.NextHop != netip.MustParseAddr("10.30.1.13") {
		t.Errorf("block route after c claimed it = %+v, want via c", r)
	}
}

// TestInterfaceKinds: a tap's routes are delivered to its egress, a veth's
// (peer in another namespace) by redirect_peer; the kind is recorded in
// cx_ifaces for both.
func TestInterfaceKinds(t *testing.T) {
	d := Compute(Input{
		Snapshot: snapshot(t),
		Node:     "host-a",
		Links: map[string]host.Interface{
			"tap1": {Name: "tap1", Ifindex: 11, Kind: bpfmap.IfaceTap},
			"tap2": {Name: "tap2", Ifindex: 12, Kind: bpfmap.IfaceVeth},
			"tap3": {Name: "tap3", Ifindex: 13, Kind: bpfmap.IfaceOther},
		},
	})
	for idx, want := range map[uint32]bpfmap.IfaceKind{11: bpfmap.IfaceTap, 12: bpfmap.IfaceVeth, 13: bpfmap.IfaceOther} {
		if got := d.Ifaces[idx].Kind; got != want {
			t.Errorf("iface %d kind = %s, want %s", idx, got, want)
		}
	}
	for p, peer := range map[string]bool{"10.65.0.2/32": false, "10.65.0.20/32": false, "10.65.0.3/32": true, "10.65.0.4/32": false} {
		if got := d.Routes[netip.MustParsePrefix(p)].Peer; got != peer {
			t.Errorf("route %s peer = %v, want %v", p, got, peer)
		}
	}
	for _, ep := range []string{"w1", "w2", "w3"} {
		if st := d.Endpoints[model.EndpointID(ep)]; st.State != bpfmap.EndpointReady {
			t.Errorf("endpoint %s state = %s, want ready", ep, st.State)
		}
	}
}

// TestUntouchableInterfaces: an endpoint naming the underlay, lo or an
// interface with a host address gets nothing written or attached and is
// reported; the others are programmed as usual.
func TestUntouchableInterfaces(t *testing.T) {
	s := snapshot(t)
	d := Compute(Input{
		Snapshot: s,
		Node:     "host-a",
		Underlay: "tap1",
		Links: map[string]host.Interface{
			"tap1": {Name: "tap1", Ifindex: 11, Kind: bpfmap.IfaceVeth, Addrs: []netip.Addr{netip.MustParseAddr("10.30.0.11")}},
			"tap2": {Name: "tap2", Ifindex: 12, Kind: bpfmap.IfaceOther, Loopback: true},
			"tap3": {Name: "tap3", Ifindex: 13, Kind: bpfmap.IfaceOther, Addrs: []netip.Addr{netip.MustParseAddr("192.0.2.1")}},
		},
	})
	want := map[string]bpfmap.EndpointState{"w1": bpfmap.EndpointRefusedUnderlay, "w2": bpfmap.EndpointRefusedLoopback,
		"w3": bpfmap.EndpointRefusedHostAddr}
	for ep, st := range want {
		if got := d.Endpoints[model.EndpointID(ep)]; got.State != st || got.Ifname == "" {
			t.Errorf("endpoint %s = %+v, want state %s", ep, got, st)
		}
	}
	if !slices.Equal(d.Refused, []string{"w1", "w2", "w3"}) {
		t.Errorf("refused = %v", d.Refused)
	}
	if len(d.Ifaces) != 0 || len(d.KernelRoutes) != 0 {
		t.Errorf("refused endpoints programmed: ifaces %v, kernel routes %v", d.Ifaces, d.KernelRoutes)
	}
	for _, p := range []string{"10.65.0.2/32", "10.65.0.3/32", "10.65.0.4/32"} {
		if _, ok := d.Routes[netip.MustParsePrefix(p)]; ok {
			t.Errorf("refused endpoint's route %s written", p)
		}
	}
	// The underlay itself is attached as the underlay, never as w1's.
	if at, ok := d.Attach[11]; !ok || !at.Underlay || at.Endpoint != "" {
		t.Errorf("underlay attachment = %+v", at)
	}
	for idx := range d.Attach {
		if idx != 11 {
			t.Errorf("attached %d", idx)
		}
	}
	// A missing interface is pending, not refused.
	d = Compute(Input{Snapshot: s, Node: "host-a", Links: map[string]host.Interface{}})
	if st := d.Endpoints[model.EndpointID("w1")]; st.State != bpfmap.EndpointPending || st.Ifname != "tap1" {
		t.Errorf("w1 without interface = %+v, want pending on tap1", st)
	}
}

// TestLocalRoutes: every Subnet's gateway IP is answered by the host on lo,
// fe80::1 and the metadata service's fe80::a9fe:a9fe on every workload
// interface, and the gateways are host identities for policy.
func TestLocalRoutes(t *testing.T) {
	s := snapshot(t)
	s.Put(&model.Subnet{Metadata: model.Metadata{Name: "v4"}, Spec: model.SubnetSpec{
		CIDR: netip.MustParsePrefix("10.65.0.0/24"), GatewayIP: netip.MustParseAddr("10.65.0.1")}})
	s.Put(&model.Subnet{Metadata: model.Metadata{Name: "v6"}, Spec: model.SubnetSpec{
		CIDR: netip.MustParsePrefix("fd00:65::/64"), GatewayIP: netip.MustParseAddr("fd00:65::1")}})
	d := Compute(Input{Snapshot: s, Node: "host-a", Links: map[string]host.Interface{
		"lo":   {Name: "lo", Ifindex: 1, Loopback: true},
		"tap1": {Name: "tap1", Ifindex: 11, Kind: bpfmap.IfaceTap},
	}})
	want := []host.LocalRoute{
		{Addr: netip.MustParseAddr("10.65.0.1"), Ifindex: 1},
		{Addr: netip.MustParseAddr("fd00:65::1"), Ifindex: 1},
		{Addr: V6Gateway, Ifindex: 11},
		{Addr: netip.MustParseAddr("fe80::a9fe:a9fe"), Ifindex: 11},
	}
	if !slices.Equal(d.LocalRoutes, want) {
		t.Errorf("local routes = %v, want %v", d.LocalRoutes, want)
	}
	if e, ok := d.IPCache[netip.MustParsePrefix("10.65.0.1/32")]; !ok || !e.Host {
		t.Errorf("gateway identity = %+v (present %v), want a host identity", e, ok)
	}
}

// TestMetadataUpstream: Config.metadataAddress of either family is the
// proxy's upstream, and only an IPv4 one the DNAT target of
// 169.254.169.254; without one the host does not answer to
// fe80::a9fe:a9fe.
func TestMetadataUpstream(t *testing.T) {
	links := map[string]host.Interface{
		"eth0": {Name: "eth0", Ifindex: 2, MTU: 1500},
		"tap1": {Name: "tap1", Ifindex: 11, Kind: bpfmap.IfaceTap},
	}
	for _, tc := range []struct {
		addr     string
		upstream netip.AddrPort
		dnat     netip.AddrPort
	}{
		{"127.0.0.1:8775", netip.MustParseAddrPort("127.0.0.1:8775"), netip.MustParseAddrPort("127.0.0.1:8775")},
		{"[fd00:30::1]:8775", netip.MustParseAddrPort("[fd00:30::1]:8775"), netip.AddrPort{}},
		{"", netip.AddrPort{}, netip.AddrPort{}},
	} {
		s := snapshot(t)
		s.Put(&model.Config{Metadata: model.Metadata{Name: "default"}, Spec: model.ConfigSpec{MetadataAddress: tc.addr}})
		d := Compute(Input{Snapshot: s, Node: "host-a", Underlay: "eth0", Links: links})
		if d.MetadataUpstream != tc.upstream || d.Config.Metadata != tc.dnat {
			t.Errorf("metadataAddress %q: upstream %v, DNAT %v; want %v, %v", tc.addr, d.MetadataUpstream, d.Config.Metadata, tc.upstream, tc.dnat)
		}
		answered := slices.Contains(d.LocalRoutes, host.LocalRoute{Addr: V6Metadata, Ifindex: 11})
		if answered != tc.upstream.IsValid() {
			t.Errorf("metadataAddress %q: local route for %s on tap1 %v, want %v (%v)", tc.addr, V6Metadata, answered, tc.upstream.IsValid(), d.LocalRoutes)
		}
	}
}

// The host's IPv6 addresses (its own, the node's ipv6Address) are host
// routes, so that IPv6 from a workload to them follows
// endpointToHostAction; link-local, loopback and IPv4 ones are not added
// (IPv4 host addresses are told by the ipcache's host flag).
func TestComputeIPv6HostRoutes(t *testing.T) {
	s := snapshot(t)
	n := s.Nodes["host-a"]
	n.Spec.IPv6Address = netip.MustParsePrefix("fd00:30::11/64")
	s.Put(n)
	hostAddrs := []netip.Addr{netip.MustParseAddr("fd00:99::1"), netip.MustParseAddr("::1"),
		netip.MustParseAddr("fe80::1"), netip.MustParseAddr("192.168.7.1")}
	d := Compute(Input{Snapshot: s, Node: "host-a", HostAddrs: hostAddrs})
	for _, p := range []string{"fd00:99::1/128", "fd00:30::11/128"} {
		if r, ok := d.Routes[netip.MustParsePrefix(p)]; !ok || r.Type != bpfmap.RouteHost {
			t.Errorf("route %s = %+v (%v), want host", p, r, ok)
		}
	}
	for _, p := range []string{"::1/128", "fe80::1/128", "192.168.7.1/32"} {
		if r, ok := d.Routes[netip.MustParsePrefix(p)]; ok {
			t.Errorf("route %s = %+v, want none", p, r)
		}
	}
}

// A model written behind calyxctl's back that gives one address to two
// endpoints, one interface to two endpoints of a node, or a node's address
// to an endpoint: the first endpoint by name keeps what it claims, the
// other is not programmed and is reported, the same on every compute.
func TestConflictsResolvedByName(t *testing.T) {
	s := model.NewSnapshot()
	s.Put(&model.IPPool{Metadata: model.Metadata{Name: "p"}, Spec: model.IPPoolSpec{CIDR: netip.MustParsePrefix("10.65.0.0/16")}})
	s.Put(&model.Node{Metadata: model.Metadata{Name: "a"}, Spec: model.NodeSpec{IPv4Address: netip.MustParsePrefix("10.30.0.11/24")}})
	s.Put(&model.Node{Metadata: model.Metadata{Name: "b"}, Spec: model.NodeSpec{IPv4Address: netip.MustParsePrefix("10.65.0.99/24")}})
	ep := func(name, node, iface, addr string) {
		s.Put(&model.WorkloadEndpoint{Metadata: model.Metadata{Name: name},
			Spec: model.WorkloadEndpointSpec{Node: node, Interface: iface, IPNetworks: []netip.Prefix{netip.MustParsePrefix(addr + "/32")}}})
	}
	ep("a1", "a", "tap1", "10.65.0.2")
	ep("a2", "a", "tap2", "10.65.0.2")  // a1's address
	ep("a3", "a", "tap1", "10.65.0.3")  // a1's interface
	ep("a4", "a", "tap4", "10.65.0.99") // node b's address
	ep("b1", "b", "tap1", "10.65.0.5")  // another node may use tap1
	ep("b2", "b", "tap2", "10.65.0.5")  // b1's address
	links := map[string]host.Interface{}
	for i, n := range []string{"tap1", "tap2", "tap4"} {
		links[n] = host.Interface{Name: n, Ifindex: 10 + i, MAC: bpfmap.MAC{2, 0, 0, 0, 0, byte(i)}, Kind: bpfmap.IfaceTap}
	}
	var first *Desired
	for range 20 {
		d := Compute(Input{Snapshot: s, Node: "a", Links: links})
		if first == nil {
			first = d
			continue
		}
		if !reflect.DeepEqual(d.Routes, first.Routes) || !reflect.DeepEqual(d.Ifaces, first.Ifaces) ||
			!reflect.DeepEqual(d.Conflicts, first.Conflicts) || !reflect.DeepEqual(d.Endpoints, first.Endpoints) {
			t.Fatalf("two computes of one model differ:\n%v\n%v", first.Conflicts, d.Conflicts)
		}
	}
	d := first
	want := []string{
		"WorkloadEndpoint/a2: 10.65.0.2 is WorkloadEndpoint/a1's",
		"WorkloadEndpoint/a3: interface tap1 is WorkloadEndpoint/a1's",
		"WorkloadEndpoint/a4: 10.65.0.99 is Node/b's",
		"WorkloadEndpoint/b2: 10.65.0.5 is WorkloadEndpoint/b1's",
	}
	if !reflect.DeepEqual(d.Conflicts, want) {
		t.Errorf("conflicts\n%q\nwant\n%q", d.Conflicts, want)
	}
	if r := d.Routes[netip.MustParsePrefix("10.65.0.2/32")]; r.Ifindex != 10 {
		t.Errorf("10.65.0.2 routed to %+v, want a1's tap1 (ifindex 10)", r)
	}
	if _, ok := d.Ifaces[11]; ok {
		t.Errorf("a2's tap2 programmed: %+v", d.Ifaces[11])
	}
	for _, name := range []string{"a2", "a3", "a4"} {
		if st := d.Endpoints[model.EndpointID(name)]; st.State != bpfmap.EndpointConflict {
			t.Errorf("%s: state %s, want conflict", name, st.State)
		}
	}
	if r := d.Routes[netip.MustParsePrefix("10.65.0.5/32")]; r.Type != bpfmap.RouteRemoteWorkload {
		t.Errorf("10.65.0.5 (b1, remote) routed %+v", r)
	}
}

// A new Calculator keeps the counter slots the maps hold (an agent
// restart keeps the interfaces' counts); a new interface gets the lowest
// slot nobody holds, zeroed first (fresh); beyond the last slot an
// interface gets none (counted in the hash).
func TestCounterSlotsAdoptedAndExhausted(t *testing.T) {
	links := map[string]host.Interface{
		"tap1": {Name: "tap1", Ifindex: 11}, "tap2": {Name: "tap2", Ifindex: 12}, "tap3": {Name: "tap3", Ifindex: 13},
	}
	c := NewCalculator()
	c.AdoptCounterSlots(map[uint32]uint16{11: 7, 12: 2, 99: 3, 13: bpfmap.CounterSlots})
	d := c.Compute(Input{Snapshot: snapshot(t), Node: "host-a", Links: links})
	if d.Ifaces[11].CounterSlot != 7 || d.Ifaces[12].CounterSlot != 2 {
		t.Errorf("held slots not kept: tap1 %d (want 7), tap2 %d (want 2)", d.Ifaces[11].CounterSlot, d.Ifaces[12].CounterSlot)
	}
	if s := d.Ifaces[13].CounterSlot; s != 4 || !slices.Equal(d.FreshCounterSlots, []uint16{4}) {
		t.Errorf("tap3 got slot %d, fresh %v; want 4, [4] (2 and 7 held by others, 3 by a gone interface until this Compute ends)", s, d.FreshCounterSlots)
	}

	s := model.NewSnapshot()
	s.Put(&model.Node{Metadata: model.Metadata{Name: "host-a"}, Spec: model.NodeSpec{IPv4Address: netip.MustParsePrefix("10.30.0.11/24")}})
	many := map[string]host.Interface{}
	n := int(bpfmap.CounterSlots-bpfmap.FirstWorkloadCounterSlot) + 5
	for i := range n {
		name := fmt.Sprintf("ep%04d", i)
		s.Put(endpoint(name, "host-a", netip.AddrFrom4([4]byte{10, 65, byte(i >> 8), byte(i)}).String()+"/32"))
		many["tap-"+name] = host.Interface{Name: "tap-" + name, Ifindex: 100 + i}
	}
	d = Compute(Input{Snapshot: s, Node: "host-a", Links: many})
	without := 0
	for _, v := range d.Ifaces {
		if v.CounterSlot == 0 {
			without++
		}
	}
	if len(d.Ifaces) != n || without != 5 || len(d.FreshCounterSlots) != n-5 {
		t.Errorf("%d interfaces: %d without a slot, %d fresh; want %d, 5, %d", len(d.Ifaces), without, len(d.FreshCounterSlots), n, n-5)
	}
}

// dualStack is a dual-stack model: IPv4 pool p and IPv6 pool p6 (whose
// modes are given), nodes a, b (same subnets as a in both families), c
// (other subnets in both), d (IPv4 only, a's subnet) and e (another IPv4
// subnet, a's IPv6 subnet), each with a dual-stack workload; b holds an
// IPv6 block.
func dualStack(ipip6, vxlan6 model.EncapMode, selfV6 bool) *model.Snapshot {
	s := model.NewSnapshot()
	s.Put(&model.IPPool{Metadata: model.Metadata{Name: "p"}, Spec: model.IPPoolSpec{CIDR: netip.MustParsePrefix("10.65.0.0/16")}})
	s.Put(&model.IPPool{Metadata: model.Metadata{Name: "p6"}, Spec: model.IPPoolSpec{
		CIDR: netip.MustParsePrefix("2001:db8:a41:3::/64"), IPIPMode: ipip6, VXLANMode: vxlan6}})
	nodes := map[string][2]string{
		"a": {"10.30.0.11/24", "2001:db8:a41:ff::11/64"},
		"b": {"10.30.0.12/24", "2001:db8:a41:ff::12/64"},
		"c": {"10.30.1.13/24", "2001:db8:a41:fe::13/64"},
		"d": {"10.30.0.14/24", ""},
		"e": {"10.30.1.15/24", "2001:db8:a41:ff::15/64"},
	}
	for name, a := range nodes {
		spec := model.NodeSpec{IPv4Address: netip.MustParsePrefix(a[0])}
		if a[1] != "" && (name != "a" || selfV6) {
			spec.IPv6Address = netip.MustParsePrefix(a[1])
		}
		s.Put(&model.Node{Metadata: model.Metadata{Name: name}, Spec: spec})
	}
	for i, n := range []string{"a", "b", "c", "d", "e"} {
		s.Put(endpoint("w"+n, n, fmt.Sprintf("10.65.%d.2/32", i+1), fmt.Sprintf("2001:db8:a41:3::%d:2/128", i+1)))
	}
	s.Put(block("2001:db8:a41:3::2:0/122", "p6", "b"))
	return s
}

// The underlay of an IPv6 workload is chosen per peer: IPv6 when both
// nodes have an ipv6Address, IPv4 otherwise; CrossSubnet looks at the
// chosen underlay's subnet; IPv4 workloads stay on the IPv4 underlay.
func TestComputeIPv6UnderlayPerPeer(t *testing.T) {
	type via struct {
		nh    string
		encap bpfmap.Encap
	}
	ipip, vxlan, none := bpfmap.EncapIPIP, bpfmap.EncapVXLAN, bpfmap.EncapNone
	for _, tc := range []struct {
		name          string
		ipip6, vxlan6 model.EncapMode
		selfV6        bool
		want          map[string]via // by IPv6 destination
		mtu           int
	}{
		{"ipip always", model.EncapAlways, model.EncapNever, true, map[string]via{
			"2001:db8:a41:3::2:0/122": {"2001:db8:a41:ff::12", ipip}, // b's block
			"2001:db8:a41:3::3:2/128": {"2001:db8:a41:fe::13", ipip},
			"2001:db8:a41:3::4:2/128": {"10.30.0.14", ipip}, // d has no IPv6: 6in4
			"2001:db8:a41:3::5:2/128": {"2001:db8:a41:ff::15", ipip},
		}, 1460},
		{"ipip cross-subnet", model.EncapCrossSubnet, model.EncapNever, true, map[string]via{
			"2001:db8:a41:3::2:0/122": {"2001:db8:a41:ff::12", none},
			"2001:db8:a41:3::3:2/128": {"2001:db8:a41:fe::13", ipip},
			"2001:db8:a41:3::4:2/128": {"10.30.0.14", none},          // a's IPv4 subnet
			"2001:db8:a41:3::5:2/128": {"2001:db8:a41:ff::15", none}, // another IPv4 subnet, a's IPv6 one
		}, 1460},
		{"vxlan cross-subnet", model.EncapNever, model.EncapCrossSubnet, true, map[string]via{
			"2001:db8:a41:3::2:0/122": {"2001:db8:a41:ff::12", none},
			"2001:db8:a41:3::3:2/128": {"2001:db8:a41:fe::13", vxlan},
			"2001:db8:a41:3::4:2/128": {"10.30.0.14", none},
			"2001:db8:a41:3::5:2/128": {"2001:db8:a41:ff::15", none},
		}, 1430},
		{"direct", model.EncapNever, model.EncapNever, true, map[string]via{
			"2001:db8:a41:3::2:0/122": {"2001:db8:a41:ff::12", none},
			"2001:db8:a41:3::3:2/128": {"2001:db8:a41:fe::13", none},
			"2001:db8:a41:3::4:2/128": {"10.30.0.14", none},
		}, 1500},
		// This node has no IPv6 address: every peer over IPv4, CrossSubnet
		// by the IPv4 subnets, IPv4 overheads.
		{"no IPv6 here, ipip cross-subnet", model.EncapCrossSubnet, model.EncapNever, false, map[string]via{
			"2001:db8:a41:3::2:0/122": {"10.30.0.12", none},
			"2001:db8:a41:3::3:2/128": {"10.30.1.13", ipip},
			"2001:db8:a41:3::4:2/128": {"10.30.0.14", none},
			"2001:db8:a41:3::5:2/128": {"10.30.1.15", ipip},
		}, 1480},
		{"no IPv6 here, vxlan always", model.EncapNever, model.EncapAlways, false, map[string]via{
			"2001:db8:a41:3::2:0/122": {"10.30.0.12", vxlan},
			"2001:db8:a41:3::5:2/128": {"10.30.1.15", vxlan},
		}, 1450},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := dualStack(tc.ipip6, tc.vxlan6, tc.selfV6)
			if err := s.Validate(); err != nil {
				t.Fatalf("model: %v", err)
			}
			d := Compute(Input{Snapshot: s, Node: "a", Underlay: "eth0", Links: map[string]host.Interface{
				"eth0": {Name: "eth0", Ifindex: 2, MTU: 1500}, "tap-wa": {Name: "tap-wa", Ifindex: 7}}})
			for dst, w := range tc.want {
				got := d.Routes[netip.MustParsePrefix(dst)]
				want := bpfmap.Route{Type: bpfmap.RouteRemoteWorkload, NextHop: netip.MustParseAddr(w.nh), Encap: w.encap}
				if got != want {
					t.Errorf("route %s = %+v, want %+v", dst, got, want)
				}
			}
			// b's endpoint is inside its block: no /128 of its own.
			if r, ok := d.Routes[netip.MustParsePrefix("2001:db8:a41:3::2:2/128")]; ok {
				t.Errorf("route inside b's block: %+v", r)
			}
			// IPv4 workloads stay on the IPv4 underlay, the pool's mode (Never).
			for dst, nh := range map[string]string{"10.65.2.2/32": "10.30.0.12", "10.65.3.2/32": "10.30.1.13", "10.65.5.2/32": "10.30.1.15"} {
				want := bpfmap.Route{Type: bpfmap.RouteRemoteWorkload, NextHop: netip.MustParseAddr(nh)}
				if got := d.Routes[netip.MustParsePrefix(dst)]; got != want {
					t.Errorf("route %s = %+v, want %+v", dst, got, want)
				}
			}
			if d.WorkloadMTU != tc.mtu {
				t.Errorf("workload MTU %d, want %d", d.WorkloadMTU, tc.mtu)
			}
			// cx_config carries this node's IPv6 underlay address: the
			// outer source the programs encapsulate from.
			if tc.selfV6 != d.Config.Address6.IsValid() || (tc.selfV6 && !d.Config.Address6.Is6()) {
				t.Errorf("cx_config IPv6 address %v, want one: %v", d.Config.Address6, tc.selfV6)
			}
			// Every peer address of either family is a tunnel source; the
			// pools of both families are inside; this node's are the host's.
			for _, n := range []string{"10.30.0.12", "2001:db8:a41:ff::12", "10.30.1.13", "2001:db8:a41:fe::13", "10.30.0.14", "2001:db8:a41:ff::15"} {
				a := netip.MustParseAddr(n)
				want := bpfmap.Route{Type: bpfmap.RouteNode, NextHop: a}
				if got := d.Routes[netip.PrefixFrom(a, a.BitLen())]; got != want {
					t.Errorf("node route %s = %+v, want %+v", n, got, want)
				}
			}
			for _, p := range []string{"10.65.0.0/16", "2001:db8:a41:3::/64"} {
				if got := d.Routes[netip.MustParsePrefix(p)]; got != (bpfmap.Route{Type: bpfmap.RoutePool}) {
					t.Errorf("pool route %s = %+v, want pool", p, got)
				}
			}
			if tc.selfV6 {
				if got := d.Routes[netip.MustParsePrefix("2001:db8:a41:ff::11/128")]; got.Type != bpfmap.RouteHost {
					t.Errorf("own IPv6 address route = %+v, want host", got)
				}
			}
		})
	}
}

// The workload MTU fits the largest encapsulation in use: an IPv6 outer
// header only where this node and a peer both have an IPv6 address, and
// only for IPv6 pools.
func TestWorkloadMTUFamilies(t *testing.T) {
	for _, tc := range []struct {
		name                  string
		v4ipip, v4vxlan       model.EncapMode
		v6ipip, v6vxlan       model.EncapMode
		selfV6, peerV6, noV6P bool
		want                  int
	}{
		{"v6 ipip, IPv6 underlay: ip6ip6", model.EncapNever, model.EncapNever, model.EncapAlways, model.EncapNever, true, true, false, 1460},
		{"v6 vxlan, IPv6 underlay", model.EncapNever, model.EncapNever, model.EncapNever, model.EncapCrossSubnet, true, true, false, 1430},
		{"v6 ipip, no IPv6 here: 6in4", model.EncapNever, model.EncapNever, model.EncapAlways, model.EncapNever, false, true, false, 1480},
		{"v6 vxlan, no IPv6 peer", model.EncapNever, model.EncapNever, model.EncapNever, model.EncapAlways, true, false, false, 1450},
		{"v4 vxlan beats ip6ip6", model.EncapNever, model.EncapAlways, model.EncapAlways, model.EncapNever, true, true, false, 1450},
		{"v4 ipip, v6 vxlan over IPv6", model.EncapAlways, model.EncapNever, model.EncapNever, model.EncapAlways, true, true, false, 1430},
		{"no IPv6 pool: IPv6 underlay unused", model.EncapNever, model.EncapAlways, model.EncapNever, model.EncapNever, true, true, true, 1450},
		{"nothing encapsulated", model.EncapNever, model.EncapNever, model.EncapNever, model.EncapNever, true, true, false, 1500},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := model.NewSnapshot()
			s.Put(&model.IPPool{Metadata: model.Metadata{Name: "p"}, Spec: model.IPPoolSpec{CIDR: netip.MustParsePrefix("10.65.0.0/16"), IPIPMode: tc.v4ipip, VXLANMode: tc.v4vxlan}})
			if !tc.noV6P {
				s.Put(&model.IPPool{Metadata: model.Metadata{Name: "p6"}, Spec: model.IPPoolSpec{CIDR: netip.MustParsePrefix("fd00:65::/64"), IPIPMode: tc.v6ipip, VXLANMode: tc.v6vxlan}})
			}
			a := model.NodeSpec{IPv4Address: netip.MustParsePrefix("10.30.0.11/24")}
			b := model.NodeSpec{IPv4Address: netip.MustParsePrefix("10.30.0.12/24")}
			if tc.selfV6 {
				a.IPv6Address = netip.MustParsePrefix("fd00:30::11/64")
			}
			if tc.peerV6 {
				b.IPv6Address = netip.MustParsePrefix("fd00:30::12/64")
			}
			s.Put(&model.Node{Metadata: model.Metadata{Name: "a"}, Spec: a})
			s.Put(&model.Node{Metadata: model.Metadata{Name: "b"}, Spec: b})
			if got := WorkloadMTU(1500, s, "a"); got != tc.want {
				t.Errorf("WorkloadMTU = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestNextHopAndUnderlay(t *testing.T) {
	v4 := model.NodeSpec{IPv4Address: netip.MustParsePrefix("10.30.0.11/24")}
	ds := model.NodeSpec{IPv4Address: netip.MustParsePrefix("10.30.0.12/24"), IPv6Address: netip.MustParsePrefix("fd00:30::12/64")}
	v6only := model.NodeSpec{IPv6Address: netip.MustParsePrefix("fd00:30::13/64")}
	self := model.NodeSpec{IPv4Address: netip.MustParsePrefix("10.30.0.10/24"), IPv6Address: netip.MustParsePrefix("fd00:30::10/64")}
	w4, w6 := netip.MustParseAddr("10.65.0.2"), netip.MustParseAddr("fd00:65::2")
	for _, tc := range []struct {
		name         string
		self, remote model.NodeSpec
		addr         netip.Addr
		want         string
		underlay     string
	}{
		{"v4 workload, dual-stack peer", self, ds, w4, "10.30.0.12", "ipv4"},
		{"v6 workload, both dual-stack", self, ds, w6, "fd00:30::12", "ipv6"},
		{"v6 workload, IPv4-only peer", self, v4, w6, "10.30.0.11", "ipv4"},
		{"v6 workload, IPv4-only here", v4, ds, w6, "10.30.0.12", "ipv4"},
		{"v6 workload, IPv6-only peer", self, v6only, w6, "fd00:30::13", "ipv6"},
		{"v4 workload, IPv6-only peer", self, v6only, w4, "", ""},
		{"v6 workload, IPv6-only peer, IPv4-only here", v4, v6only, w6, "", ""},
	} {
		got := NextHop(tc.self, tc.remote, tc.addr)
		if tc.want == "" {
			if got.IsValid() {
				t.Errorf("%s: next hop %s, want none", tc.name, got)
			}
			continue
		}
		if got != netip.MustParseAddr(tc.want) || bpfmap.UnderlayOf(got) != tc.underlay {
			t.Errorf("%s: next hop %s (%s), want %s (%s)", tc.name, got, bpfmap.UnderlayOf(got), tc.want, tc.underlay)
		}
	}
}
