package subnets

import (
	"net"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/calyxnet/calyx/agent/host"
	"github.com/calyxnet/calyx/bpfmap"
	"github.com/calyxnet/calyx/model"
)

func subnet(name, cidr, gw string, mod ...func(*model.SubnetSpec)) *model.Subnet {
	s := &model.Subnet{Metadata: model.Metadata{Name: name}, Spec: model.SubnetSpec{
		CIDR: netip.MustParsePrefix(cidr), GatewayIP: netip.MustParseAddr(gw)}}
	for _, m := range mod {
		m(&s.Spec)
	}
	return s
}

func noDHCP(s *model.SubnetSpec) { off := false; s.EnableDHCP = &off }

func ep(name, node, iface, mac string, addrs ...string) *model.WorkloadEndpoint {
	w := &model.WorkloadEndpoint{Metadata: model.Metadata{Name: name}, Spec: model.WorkloadEndpointSpec{Node: node, Interface: iface}}
	if mac != "" {
		w.Spec.MAC, _ = net.ParseMAC(mac)
	}
	for _, a := range addrs {
		w.Spec.IPNetworks = append(w.Spec.IPNetworks, netip.MustParsePrefix(a))
	}
	return w
}

func snap(rs ...model.Resource) *model.Snapshot {
	s := model.NewSnapshot()
	for _, r := range rs {
		s.Put(r)
	}
	return s
}

var (
	hostMAC0 = bpfmap.MAC{0xee, 0xee, 0, 0, 0, 0}
	hostMAC1 = bpfmap.MAC{0xee, 0xee, 0, 0, 0, 1}
	links    = map[string]host.Interface{
		"tap0": {Name: "tap0", Ifindex: 10, MAC: hostMAC0, Kind: bpfmap.IfaceTap},
		"tap1": {Name: "tap1", Ifindex: 11, MAC: hostMAC1, Kind: bpfmap.IfaceTap},
		"eth0": {Name: "eth0", Ifindex: 2, MAC: bpfmap.MAC{2, 2, 2, 2, 2, 2}},
		"br0":  {Name: "br0", Ifindex: 3, Addrs: []netip.Addr{netip.MustParseAddr("192.168.1.1")}},
	}
)

func mac(s string) net.HardwareAddr { m, _ := net.ParseMAC(s); return m }
func addr(s string) netip.Addr      { return netip.MustParseAddr(s) }
func prefix(s string) netip.Prefix  { return netip.MustParsePrefix(s) }

// The seed's subnets: calico-v4 with DNS, net-b with a host route.
var (
	calicoV4 = subnet("calico-v4", "10.65.0.0/24", "10.65.0.1", func(s *model.SubnetSpec) {
		s.DNSNameservers = []netip.Addr{addr("10.65.0.53")}
		s.Network = "internal"
	})
	netB = subnet("net-b", "11.8.0.0/24", "11.8.0.1", func(s *model.SubnetSpec) {
		s.HostRoutes = []model.HostRoute{{Destination: prefix("11.11.0.0/16"), NextHop: addr("11.8.0.1")}}
		s.LeaseSeconds = 600
	})
	v6 = subnet("v6", "fd00:65::/64", "fd00:65::1", func(s *model.SubnetSpec) {
		s.DNSNameservers = []netip.Addr{addr("fd00:65::53")}
	})
)

func TestCompute(t *testing.T) {
	day := 24 * time.Hour
	v4Lease := &Lease{Addr: addr("10.65.0.2"), Prefix: prefix("10.65.0.0/24"), Gateway: addr("10.65.0.1"),
		DNS: []netip.Addr{addr("10.65.0.53")}, MTU: 1450, Duration: day, Subnet: "calico-v4", Network: "internal"}
	tests := []struct {
		name string
		rs   []model.Resource
		want map[int]Service
	}{
		{"the seed's instance: one lease per NIC, host routes via the gateway", []model.Resource{
			calicoV4, netB,
			ep("vm-1-eth0", "host-a", "tap0", "02:00:00:00:00:01", "10.65.0.2/32"),
			ep("vm-1-eth1", "host-a", "tap1", "02:00:00:00:00:02", "11.8.0.2/32"),
		}, map[int]Service{
			10: {Endpoint: "vm-1-eth0", Ifname: "tap0", Ifindex: 10, HostMAC: net.HardwareAddr(hostMAC0[:]), MAC: mac("02:00:00:00:00:01"), V4: v4Lease},
			11: {Endpoint: "vm-1-eth1", Ifname: "tap1", Ifindex: 11, HostMAC: net.HardwareAddr(hostMAC1[:]), MAC: mac("02:00:00:00:00:02"),
				V4: &Lease{Addr: addr("11.8.0.2"), Prefix: prefix("11.8.0.0/24"), Gateway: addr("11.8.0.1"),
					Routes: []Route{{Dst: prefix("11.11.0.0/16"), Via: addr("11.8.0.1")}}, MTU: 1450, Duration: 10 * time.Minute, Subnet: "net-b"}},
		}},
		{"the most specific subnet wins", []model.Resource{
			subnet("wide", "10.0.0.0/8", "10.0.0.1"), calicoV4,
			ep("vm-1", "host-a", "tap0", "02:00:00:00:00:01", "10.65.0.2/32"),
		}, map[int]Service{
			10: {Endpoint: "vm-1", Ifname: "tap0", Ifindex: 10, HostMAC: net.HardwareAddr(hostMAC0[:]), MAC: mac("02:00:00:00:00:01"), V4: v4Lease},
		}},
		{"the most specific subnet has DHCP off: nothing, not the wider one", []model.Resource{
			calicoV4, subnet("narrow", "10.65.0.0/28", "10.65.0.14", noDHCP),
			ep("vm-1", "host-a", "tap0", "02:00:00:00:00:01", "10.65.0.2/32"),
		}, map[int]Service{}},
		{"DHCP off", []model.Resource{
			subnet("s", "10.65.0.0/24", "10.65.0.1", noDHCP),
			ep("vm-1", "host-a", "tap0", "02:00:00:00:00:01", "10.65.0.2/32"),
		}, map[int]Service{}},
		{"no MAC in the model: nothing is served", []model.Resource{
			calicoV4, ep("vm-1", "host-a", "tap0", "", "10.65.0.2/32"),
		}, map[int]Service{}},
		{"refused interfaces: the underlay, one with a host address", []model.Resource{
			calicoV4,
			ep("vm-1", "host-a", "eth0", "02:00:00:00:00:01", "10.65.0.2/32"),
			ep("vm-2", "host-a", "br0", "02:00:00:00:00:02", "10.65.0.3/32"),
		}, map[int]Service{}},
		{"an interface that does not exist yet", []model.Resource{
			calicoV4, ep("vm-1", "host-a", "tap9", "02:00:00:00:00:01", "10.65.0.2/32"),
		}, map[int]Service{}},
		{"other nodes' endpoints are ignored", []model.Resource{
			calicoV4, ep("vm-1", "host-b", "tap0", "02:00:00:00:00:01", "10.65.0.2/32"),
		}, map[int]Service{}},
		{"no address in any subnet", []model.Resource{
			calicoV4, ep("vm-1", "host-a", "tap0", "02:00:00:00:00:01", "10.66.0.2/32"),
		}, map[int]Service{}},
		{"dual stack: the first address of each family with a subnet", []model.Resource{
			calicoV4, v6,
			ep("vm-1", "host-a", "tap0", "02:00:00:00:00:01", "10.99.0.9/32", "fd00:65::2/128", "10.65.0.2/32", "10.65.0.3/32", "fd00:65::3/128"),
		}, map[int]Service{
			10: {Endpoint: "vm-1", Ifname: "tap0", Ifindex: 10, HostMAC: net.HardwareAddr(hostMAC0[:]), MAC: mac("02:00:00:00:00:01"), V4: v4Lease,
				V6: &Lease{Addr: addr("fd00:65::2"), Prefix: prefix("fd00:65::/64"), Gateway: addr("fd00:65::1"),
					DNS: []netip.Addr{addr("fd00:65::53")}, MTU: 1450, Duration: day, Subnet: "v6"}},
		}},
		{"IPv6 only", []model.Resource{
			v6, ep("vm-1", "host-a", "tap1", "02:00:00:00:00:02", "fd00:65::2/128"),
		}, map[int]Service{
			11: {Endpoint: "vm-1", Ifname: "tap1", Ifindex: 11, HostMAC: net.HardwareAddr(hostMAC1[:]), MAC: mac("02:00:00:00:00:02"),
				V6: &Lease{Addr: addr("fd00:65::2"), Prefix: prefix("fd00:65::/64"), Gateway: addr("fd00:65::1"),
					DNS: []netip.Addr{addr("fd00:65::53")}, MTU: 1450, Duration: day, Subnet: "v6"}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Compute(snap(tt.rs...), "host-a", "eth0", links, 1450)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", describe(got), describe(tt.want))
			}
		})
	}
}

// describe spells the leases out for a failure message.
func describe(m map[int]Service) map[int]string {
	out := map[int]string{}
	for k, s := range m {
		d := s.Endpoint + " " + s.Ifname + " host " + s.HostMAC.String() + " mac " + s.MAC.String()
		for _, l := range []*Lease{s.V4, s.V6} {
			if l != nil {
				d += " " + l.Addr.String() + " in " + l.Prefix.String() + " gw " + l.Gateway.String() + " " + l.Subnet + "/" + l.Network
				for _, r := range l.Routes {
					d += " route " + r.Dst.String() + " via " + r.Via.String()
				}
				d += " " + l.Duration.String()
			}
		}
		out[k] = d
	}
	return out
}

func TestComputeSharesNothing(t *testing.T) {
	s := snap(calicoV4, ep("vm-1", "host-a", "tap0", "02:00:00:00:00:01", "10.65.0.2/32"))
	got := Compute(s, "host-a", "eth0", links, 0)
	svc := got[10]
	svc.MAC[0] = 0xff
	svc.V4.DNS[0] = addr("1.1.1.1")
	if s.Endpoints["vm-1"].Spec.MAC[0] != 0x02 || calicoV4.Spec.DNSNameservers[0] != addr("10.65.0.53") {
		t.Fatal("Compute's result shares memory with the model")
	}
	if svc.V4.MTU != 0 {
		t.Errorf("MTU 0 (not said) became %d", svc.V4.MTU)
	}
	if got := Compute(nil, "host-a", "eth0", links, 1450); len(got) != 0 {
		t.Errorf("nil snapshot: %v", got)
	}
}

// Two endpoints naming one interface (which the model refuses) give the
// same answer every time: the first by name.
func TestComputeOneInterfaceTwoEndpoints(t *testing.T) {
	s := snap(calicoV4,
		ep("b", "host-a", "tap0", "02:00:00:00:00:02", "10.65.0.3/32"),
		ep("a", "host-a", "tap0", "02:00:00:00:00:01", "10.65.0.2/32"))
	for range 20 {
		if got := Compute(s, "host-a", "eth0", links, 0); got[10].Endpoint != "a" {
			t.Fatalf("served %q", got[10].Endpoint)
		}
	}
}
