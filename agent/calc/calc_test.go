package calc

import (
	"net"
	"net/netip"
	"testing"

	"github.com/calyxnet/calyx/maps"
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
	hostMAC1 := maps.MAC{0xaa, 0, 0, 0, 0, 1}
	hostMAC2 := maps.MAC{0xaa, 0, 0, 0, 0, 2}
	d := Compute(Input{
		Snapshot: snapshot(t),
		Node:     "host-a",
		Links: map[string]Interface{
			"tap1": {Name: "tap1", Ifindex: 11, MAC: hostMAC1},
			"tap2": {Name: "tap2", Ifindex: 12, MAC: hostMAC2},
			"eth0": {Name: "eth0", Ifindex: 2},
		},
	})

	wantIfaces := map[uint32]maps.Iface{
		11: {Workload: true, CheckMAC: true, EndpointID: EndpointID("w1"), MAC: maps.MAC{2, 0, 0, 0, 0, 1}, HostMAC: hostMAC1},
		12: {Workload: true, EndpointID: EndpointID("w2"), HostMAC: hostMAC2},
	}
	if len(d.Ifaces) != len(wantIfaces) {
		t.Fatalf("ifaces = %v, want %v", d.Ifaces, wantIfaces)
	}
	for k, v := range wantIfaces {
		if d.Ifaces[k] != v {
			t.Errorf("iface %d = %+v, want %+v", k, d.Ifaces[k], v)
		}
	}

	wantRoutes := map[string]maps.Route{
		"10.30.0.11/32": {Type: maps.RouteHost},
		"10.65.0.2/32":  {Type: maps.RouteLocalWorkload, Ifindex: 11, MAC: maps.MAC{2, 0, 0, 0, 0, 1}, HostMAC: hostMAC1},
		"10.65.0.20/32": {Type: maps.RouteLocalWorkload, Ifindex: 11, MAC: maps.MAC{2, 0, 0, 0, 0, 1}, HostMAC: hostMAC1},
		"10.65.0.3/32":  {Type: maps.RouteLocalWorkload, Ifindex: 12, HostMAC: hostMAC2},
		"10.65.1.9/32":  {Type: maps.RouteRemoteWorkload, NextHop: netip.MustParseAddr("10.30.0.12")},
	}
	if len(d.Routes) != len(wantRoutes) {
		t.Errorf("routes = %v, want %d entries", d.Routes, len(wantRoutes))
	}
	for p, v := range wantRoutes {
		if got := d.Routes[netip.MustParsePrefix(p)]; got != v {
			t.Errorf("route %s = %+v, want %+v", p, got, v)
		}
	}

	if len(d.Attach) != 2 || d.Attach[11].Ifname != "tap1" || d.Attach[12].Endpoint != "w2" {
		t.Errorf("attach = %+v", d.Attach)
	}
	wantKernel := []KernelRoute{
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
	in := Input{Snapshot: snapshot(t), Node: "host-a", Links: map[string]Interface{"tap1": {Name: "tap1", Ifindex: 3}}}
	a, b := Compute(in), Compute(in)
	if len(a.Routes) != len(b.Routes) || len(a.Ifaces) != len(b.Ifaces) {
		t.Fatal("two computations of one input differ")
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
	if EndpointID("web-1") != EndpointID("web-1") || EndpointID("web-1") == EndpointID("web-2") {
		t.Fatal("endpoint IDs must be stable per name and differ between names")
	}
}
