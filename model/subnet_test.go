package model

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

// subnet returns a defaulted Subnet; gw "" leaves spec.gatewayIP unset.
func subnet(name, cidr, gw string, mod ...func(*SubnetSpec)) *Subnet {
	s := &Subnet{Metadata: Metadata{Name: name}, Spec: SubnetSpec{CIDR: netip.MustParsePrefix(cidr)}}
	if gw != "" {
		s.Spec.GatewayIP = netip.MustParseAddr(gw)
	}
	for _, m := range mod {
		m(&s.Spec)
	}
	ApplyDefaults(s)
	return s
}

func routes(gw string, dsts ...string) func(*SubnetSpec) {
	return func(s *SubnetSpec) {
		for _, d := range dsts {
			s.HostRoutes = append(s.HostRoutes, HostRoute{netip.MustParsePrefix(d), netip.MustParseAddr(gw)})
		}
	}
}

// instance gives an endpoint the label that makes it one NIC of an
// instance.
func instance(w *WorkloadEndpoint, name string) *WorkloadEndpoint {
	if w.Metadata.Labels == nil {
		w.Metadata.Labels = map[string]string{}
	}
	w.Metadata.Labels[InstanceLabel] = name
	return w
}

const subnetHead = "apiVersion: calyx.io/v1\nkind: Subnet\nmetadata: {name: s1}\n"

func TestDecodeSubnet(t *testing.T) {
	got := decodeOne(t, `
apiVersion: calyx.io/v1
kind: Subnet
metadata: {name: calico-v4}
spec:
  cidr: 10.65.0.0/24
  gatewayIP: 10.65.0.1
  enableDHCP: true
  dnsNameservers: [10.65.0.53]
  hostRoutes:
    - {destination: 11.11.0.0/16, nextHop: 10.65.0.1}
  leaseSeconds: 3600
  network: internal
`)
	on := true
	want := &Subnet{Metadata: Metadata{Name: "calico-v4"}, Spec: SubnetSpec{
		CIDR: netip.MustParsePrefix("10.65.0.0/24"), GatewayIP: netip.MustParseAddr("10.65.0.1"), EnableDHCP: &on,
		DNSNameservers: []netip.Addr{netip.MustParseAddr("10.65.0.53")},
		HostRoutes:     []HostRoute{{netip.MustParsePrefix("11.11.0.0/16"), netip.MustParseAddr("10.65.0.1")}},
		LeaseSeconds:   3600, Network: "internal",
	}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %#v\nwant %#v", got, want)
	}

	// Defaults: DHCP on, a day's lease; IPv6 works the same way.
	got = decodeOne(t, subnetHead+"spec: {cidr: 'fd00:65::/64', gatewayIP: 'fd00:65::1'}")
	sn := got.(*Subnet)
	if !sn.Spec.DHCPEnabled() || sn.Spec.EnableDHCP == nil || sn.Spec.LeaseSeconds != DefaultLeaseSeconds || sn.Spec.Lease() != 86400 {
		t.Fatalf("defaults: %+v", sn.Spec)
	}
	got = decodeOne(t, subnetHead+"spec: {cidr: 10.1.0.0/24, gatewayIP: 10.1.0.1, enableDHCP: false}")
	if got.(*Subnet).Spec.DHCPEnabled() {
		t.Fatal("enableDHCP: false reads as enabled")
	}
	// A Subnet built in Go with nothing set means the defaults.
	var spec SubnetSpec
	if !spec.DHCPEnabled() || spec.Lease() != DefaultLeaseSeconds {
		t.Fatalf("zero spec: DHCP %v lease %d", spec.DHCPEnabled(), spec.Lease())
	}
}

func TestSubnetShape(t *testing.T) {
	b, err := json.Marshal(subnet("calico-v4", "10.65.0.0/24", "10.65.0.1", routes("10.65.0.1", "11.11.0.0/16")))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"apiVersion":"calyx.io/v1","kind":"Subnet","metadata":{"name":"calico-v4"},"spec":{"cidr":"10.65.0.0/24","gatewayIP":"10.65.0.1",` +
		`"enableDHCP":true,"dnsNameservers":[],"hostRoutes":[{"destination":"11.11.0.0/16","nextHop":"10.65.0.1"}],"leaseSeconds":86400}}`
	if string(b) != want {
		t.Fatalf("got  %s\nwant %s", b, want)
	}
	var y bytes.Buffer
	if err := Encode(&y, subnet("s1", "10.1.0.0/24", "10.1.0.1", func(s *SubnetSpec) { s.Network = "net1" })); err != nil {
		t.Fatal(err)
	}
	wantYAML := `apiVersion: calyx.io/v1
kind: Subnet
metadata:
  name: s1
spec:
  cidr: 10.1.0.0/24
  gatewayIP: 10.1.0.1
  enableDHCP: true
  dnsNameservers: []
  hostRoutes: []
  leaseSeconds: 86400
  network: net1
`
	if y.String() != wantYAML {
		t.Fatalf("YAML:\n%s\nwant\n%s", y.String(), wantYAML)
	}
	var back Subnet
	if err := json.Unmarshal(b, &back); err != nil || back.Spec.HostRoutes[0].NextHop != netip.MustParseAddr("10.65.0.1") {
		t.Fatalf("UnmarshalJSON: %v %+v", err, back)
	}
}

func TestDecodeSubnetErrors(t *testing.T) {
	tests := []struct {
		name string
		spec string
		want []string // each must appear in the error text
	}{
		{"cidr missing", "{gatewayIP: 10.1.0.1}",
			[]string{`document 1 (Subnet/s1): spec.cidr: required (the subnet's network prefix, e.g. 10.65.0.0/24 or fd00:65::/64)`}},
		{"cidr with host bits", "{cidr: 10.1.0.1/24}",
			[]string{`spec.cidr: 10.1.0.1/24 has host bits set: the cidr is the subnet's network prefix, with the host bits zero; did you mean 10.1.0.0/24 (and gatewayIP: 10.1.0.1)?`}},
		{"cidr with host bits and a gateway", "{cidr: 10.1.0.7/24, gatewayIP: 10.1.0.1}",
			[]string{`spec.cidr: 10.1.0.7/24 has host bits set: the cidr is the subnet's network prefix, with the host bits zero; did you mean 10.1.0.0/24?`}},
		{"cidr not a cidr", "{cidr: 10.1.0.1, gatewayIP: 10.1.0.1}",
			[]string{`spec.cidr: "10.1.0.1" is not a valid CIDR`}},
		{"cidr too small", "{cidr: 10.1.0.0/31, gatewayIP: 10.1.0.1}",
			[]string{`spec.cidr: 10.1.0.0/31 is too small: a subnet needs its network address, the gateway and at least one instance, so its prefix length is at most /30`}},
		{"cidr v6 too small", "{cidr: 'fd00::/127', gatewayIP: 'fd00::1'}",
			[]string{`so its prefix length is at most /126`}},
		{"cidr reserved", "{cidr: 169.254.0.0/24, gatewayIP: 169.254.0.1}",
			[]string{`spec.cidr: 169.254.0.0/24 overlaps the IPv4 link-local range 169.254.0.0/16; instances cannot be given addresses there`}},
		{"gateway missing", "{cidr: 10.1.0.0/24}",
			[]string{`spec.gatewayIP: required: the instances' router, which stands for the local host on every host (e.g. 10.1.0.1)`}},
		{"gateway with a prefix", "{cidr: 10.1.0.0/24, gatewayIP: 10.1.0.1/24}",
			[]string{`spec.gatewayIP: "10.1.0.1/24" is not a valid IP address: give the address alone, without a prefix length (write 10.1.0.1)`}},
		{"gateway outside", "{cidr: 10.1.0.0/24, gatewayIP: 10.2.0.1}",
			[]string{`spec.gatewayIP: 10.2.0.1 is outside spec.cidr 10.1.0.0/24; the gateway is an address of the subnet (e.g. 10.1.0.1)`}},
		{"gateway other family", "{cidr: 10.1.0.0/24, gatewayIP: 'fd00::1'}",
			[]string{`spec.gatewayIP: fd00::1 is an IPv6 address, but spec.cidr 10.1.0.0/24 is IPv4; the gateway is an address of the subnet (e.g. 10.1.0.1)`}},
		{"gateway network address", "{cidr: 10.1.0.0/24, gatewayIP: 10.1.0.0}",
			[]string{`spec.gatewayIP: 10.1.0.0 is the network address of 10.1.0.0/24, not a host address; use one such as 10.1.0.1`}},
		{"gateway v6 network address", "{cidr: 'fd00::/64', gatewayIP: 'fd00::'}",
			[]string{`spec.gatewayIP: fd00:: is the network address of fd00::/64, not a host address; use one such as fd00::1`}},
		{"gateway broadcast", "{cidr: 10.1.0.0/24, gatewayIP: 10.1.0.255}",
			[]string{`spec.gatewayIP: 10.1.0.255 is the broadcast address of 10.1.0.0/24, not a host address; use one such as 10.1.0.1`}},
		{"enableDHCP not a bool", "{cidr: 10.1.0.0/24, gatewayIP: 10.1.0.1, enableDHCP: yes please}",
			[]string{`spec.enableDHCP: must be true or false, got "yes please"`}},
		{"dns not an address", "{cidr: 10.1.0.0/24, gatewayIP: 10.1.0.1, dnsNameservers: [10.1.0.53, dns.example, '']}",
			[]string{`spec.dnsNameservers[1]: "dns.example" is not a valid IP address`, `spec.dnsNameservers[2]: must be an IP address, got ""`}},
		{"dns other family", "{cidr: 10.1.0.0/24, gatewayIP: 10.1.0.1, dnsNameservers: ['fd00::53']}",
			[]string{`spec.dnsNameservers[0]: fd00::53 is an IPv6 address, but the subnet 10.1.0.0/24 is IPv4: DHCPv4 gives instances IPv4 nameservers only; list it on the IPv6 subnet`}},
		{"dns v4 on v6", "{cidr: 'fd00::/64', gatewayIP: 'fd00::1', dnsNameservers: [10.1.0.53]}",
			[]string{`spec.dnsNameservers[0]: 10.1.0.53 is an IPv4 address, but the subnet fd00::/64 is IPv6: router advertisements and DHCPv6 give instances IPv6 nameservers only`}},
		{"dns special", "{cidr: 10.1.0.0/24, gatewayIP: 10.1.0.1, dnsNameservers: [0.0.0.0, 224.0.0.1, 127.0.0.53]}",
			[]string{`spec.dnsNameservers[0]: 0.0.0.0 is the unspecified address; a nameserver is a unicast address the instances can reach`,
				`spec.dnsNameservers[1]: 224.0.0.1 is a multicast address`, `spec.dnsNameservers[2]: 127.0.0.53 is a loopback address`}},
		{"dns twice", "{cidr: 10.1.0.0/24, gatewayIP: 10.1.0.1, dnsNameservers: [10.1.0.53, 10.1.0.53]}",
			[]string{`spec.dnsNameservers[1]: 10.1.0.53 is listed twice (also spec.dnsNameservers[0])`}},
		{"host route via another next hop", "{cidr: 11.8.0.0/24, gatewayIP: 11.8.0.1, hostRoutes: [{destination: 11.11.0.0/16, nextHop: 11.8.0.9}]}",
			[]string{`document 1 (Subnet/s1): spec.hostRoutes[0].nextHop: 11.8.0.9 is not the subnet's gatewayIP 11.8.0.1: the local host is every instance's first hop ` +
				`and routes all its traffic, so a route via any other next hop could never be followed; use nextHop: 11.8.0.1`}},
		{"host route without next hop", "{cidr: 11.8.0.0/24, gatewayIP: 11.8.0.1, hostRoutes: [{destination: 11.11.0.0/16}]}",
			[]string{`spec.hostRoutes[0].nextHop: required: use nextHop: 11.8.0.1 (the subnet's gatewayIP)`}},
		{"host route without destination", "{cidr: 11.8.0.0/24, gatewayIP: 11.8.0.1, hostRoutes: [{nextHop: 11.8.0.1}]}",
			[]string{`spec.hostRoutes[0].destination: required (the network the route leads to, e.g. 11.11.0.0/16)`}},
		{"host route default", "{cidr: 11.8.0.0/24, gatewayIP: 11.8.0.1, hostRoutes: [{destination: 0.0.0.0/0, nextHop: 11.8.0.1}]}",
			[]string{`spec.hostRoutes[0].destination: 0.0.0.0/0 is the default route, which instances already have via the gatewayIP 11.8.0.1; omit it`}},
		{"host route other family", "{cidr: 11.8.0.0/24, gatewayIP: 11.8.0.1, hostRoutes: [{destination: 'fd00::/64', nextHop: 11.8.0.1}]}",
			[]string{`spec.hostRoutes[0].destination: fd00::/64 is IPv6, but the subnet 11.8.0.0/24 is IPv4; a host route is of its subnet's family`}},
		{"host route host bits", "{cidr: 11.8.0.0/24, gatewayIP: 11.8.0.1, hostRoutes: [{destination: 11.11.0.1/16, nextHop: 11.8.0.1}]}",
			[]string{`spec.hostRoutes[0].destination: 11.11.0.1/16 has host bits set; did you mean 11.11.0.0/16?`}},
		{"host route twice", "{cidr: 11.8.0.0/24, gatewayIP: 11.8.0.1, hostRoutes: [{destination: 11.11.0.0/16, nextHop: 11.8.0.1}, {destination: 11.11.0.0/16, nextHop: 11.8.0.1}]}",
			[]string{`spec.hostRoutes[1].destination: 11.11.0.0/16 is listed twice (also spec.hostRoutes[0])`}},
		{"host route unknown field", "{cidr: 11.8.0.0/24, gatewayIP: 11.8.0.1, hostRoutes: [{destination: 11.11.0.0/16, nexthop: 11.8.0.1}]}",
			[]string{`spec.hostRoutes[0].nexthop: unknown field`}},
		{"host route not a mapping", "{cidr: 11.8.0.0/24, gatewayIP: 11.8.0.1, hostRoutes: [11.11.0.0/16]}",
			[]string{`spec.hostRoutes[0]: must be a mapping, got "11.11.0.0/16"`}},
		{"lease too short", "{cidr: 10.1.0.0/24, gatewayIP: 10.1.0.1, leaseSeconds: 30}",
			[]string{`spec.leaseSeconds: must be between 60 and 2147483647 seconds, got 30: clients renew at half the lease`}},
		{"lease too long", "{cidr: 10.1.0.0/24, gatewayIP: 10.1.0.1, leaseSeconds: 4294967295}",
			[]string{`spec.leaseSeconds: must be between 60 and 2147483647 seconds, got 4294967295`}},
		{"lease zero", "{cidr: 10.1.0.0/24, gatewayIP: 10.1.0.1, leaseSeconds: 0}",
			[]string{`spec.leaseSeconds: must be between 60 and 2147483647 seconds, got 0`}},
		{"lease not a number", "{cidr: 10.1.0.0/24, gatewayIP: 10.1.0.1, leaseSeconds: 1d}",
			[]string{`spec.leaseSeconds: must be a number of seconds between 60 and 2147483647, got "1d"`}},
		{"network name", "{cidr: 10.1.0.0/24, gatewayIP: 10.1.0.1, network: Internal_Net}",
			[]string{`spec.network: "Internal_Net" is not a valid network name`}},
		{"unknown field", "{cidr: 10.1.0.0/24, gatewayIP: 10.1.0.1, gateway: 10.1.0.1}",
			[]string{`spec.gateway: unknown field`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs, err := Decode(strings.NewReader(subnetHead + "spec: " + tt.spec))
			if err == nil {
				t.Fatalf("decoded %v", rs)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error\n%v\nlacks\n%s", err, w)
				}
			}
		})
	}
}

// A value that failed to decode brings no second complaint about it.
func TestDecodeSubnetNoNoise(t *testing.T) {
	_, err := Decode(strings.NewReader(subnetHead + "spec: {cidr: 10.1.0.0/24, gatewayIP: gw, dnsNameservers: [x], hostRoutes: [{destination: y, nextHop: 10.1.0.1}]}"))
	got := ValidationErrors(err)
	if len(got) != 3 {
		t.Fatalf("want 3 errors, got %d:\n%v", len(got), err)
	}
}

func TestValidateSubnetProgrammatic(t *testing.T) {
	ok := &Subnet{Metadata: Metadata{Name: "s"}, Spec: SubnetSpec{CIDR: netip.MustParsePrefix("10.1.0.0/24"), GatewayIP: netip.MustParseAddr("10.1.0.1")}}
	if err := Validate(ok); err != nil {
		t.Fatalf("undefaulted subnet: %v", err)
	}
	bad := &Subnet{Metadata: Metadata{Name: "s"}, Spec: SubnetSpec{
		CIDR: netip.MustParsePrefix("10.1.0.0/24"), GatewayIP: netip.MustParseAddr("10.1.0.1"),
		DNSNameservers: []netip.Addr{{}}, LeaseSeconds: -5,
		HostRoutes: []HostRoute{{Destination: netip.MustParsePrefix("10.9.0.0/16"), NextHop: netip.MustParseAddr("10.1.0.2")}},
	}}
	want := []string{
		"Subnet/s: spec.dnsNameservers[0]: not a valid IP address",
		"Subnet/s: spec.hostRoutes[0].nextHop: 10.1.0.2 is not the subnet's gatewayIP 10.1.0.1",
		"Subnet/s: spec.leaseSeconds: must be between 60 and 2147483647 seconds, got -5",
	}
	err := Validate(bad)
	if n := len(ValidationErrors(err)); n != len(want) {
		t.Errorf("want %d errors, got %d:\n%v", len(want), n, err)
	}
	for _, w := range want {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("error\n%v\nlacks %s", err, w)
		}
	}
}

func TestSubnetIndex(t *testing.T) {
	s := snapshotOf(
		subnet("wide", "10.0.0.0/8", "10.0.0.1"),
		subnet("mid", "10.65.0.0/16", "10.65.0.1"),
		subnet("narrow", "10.65.1.0/24", "10.65.1.1"),
		subnet("v6", "fd00::/64", "fd00::1"),
		subnet("v6-narrow", "fd00::/120", "fd00::1"),
	)
	ix := NewSubnetIndex(s.Subnets)
	for a, want := range map[string]string{
		"10.65.1.7": "narrow", "10.65.2.7": "mid", "10.9.0.1": "wide", "11.0.0.1": "",
		"fd00::5": "v6-narrow", "fd00::1:5": "v6", "fd01::1": "",
	} {
		got := ""
		if sn := ix.Lookup(netip.MustParseAddr(a)); sn != nil {
			got = sn.Metadata.Name
		}
		if got != want {
			t.Errorf("Lookup(%s) = %q, want %q", a, got, want)
		}
	}
	if (*SubnetIndex)(nil).Lookup(netip.MustParseAddr("10.0.0.1")) != nil {
		t.Error("a nil index found something")
	}
}

func TestSnapshotValidateSubnets(t *testing.T) {
	base := []Resource{pool("a", "10.65.0.0/16"), pool("b", "11.8.0.0/16"), pool("v6", "fd00::/64")}
	tests := []struct {
		name    string
		rs      []Resource
		changed []Ref
		want    []string
	}{
		{"the network address of the most specific subnet", []Resource{
			subnet("wide", "10.65.0.0/16", "10.65.0.1"), subnet("narrow", "10.65.1.0/24", "10.65.1.1"),
			subnet("v6", "fd00::/64", "fd00::1"),
			wep("web-1", "n1", "tap1", "10.65.1.5/32", "fd00::5/128"), wep("web-2", "n1", "tap2", "10.65.1.0/32"),
		}, nil, []string{
			"Subnet/narrow: spec.cidr: 10.65.1.0/24 makes 10.65.1.0, an address of WorkloadEndpoint/web-2 (spec.ipNetworks[0]), its network address; an instance needs a host address of its subnet",
		}},
		{"valid, overlapping", []Resource{
			subnet("wide", "10.65.0.0/16", "10.65.0.1"), subnet("narrow", "10.65.1.0/24", "10.65.1.1"),
			wep("web-1", "n1", "tap1", "10.65.1.5/32"), wep("web-2", "n1", "tap2", "10.65.2.0/32"), // a host address of wide
		}, nil, nil},
		{"same cidr", []Resource{
			subnet("one", "10.65.0.0/24", "10.65.0.1"), subnet("two", "10.65.0.0/24", "10.65.0.254"),
		}, nil, []string{
			"Subnet/two: spec.cidr: 10.65.0.0/24 is already the cidr of Subnet/one; an address belongs to the most specific Subnet containing it, " +
				"so two Subnets with one cidr would leave it undecided (Subnets may overlap, but not coincide)",
		}},
		{"same cidr, the earlier one changed", []Resource{
			subnet("one", "10.65.0.0/24", "10.65.0.1"), subnet("two", "10.65.0.0/24", "10.65.0.254"),
		}, []Ref{{KindSubnet, "one"}}, []string{"Subnet/one: spec.cidr: 10.65.0.0/24 is already the cidr of Subnet/two"}},
		{"gateway is an endpoint's", []Resource{
			subnet("s", "10.65.0.0/24", "10.65.0.1"), wep("web-1", "n1", "tap1", "10.65.0.7/32", "10.65.0.1/32"),
		}, nil, []string{
			"Subnet/s: spec.gatewayIP: 10.65.0.1 is an address of WorkloadEndpoint/web-1 (spec.ipNetworks[1]); the gateway stands for the local host on every host and is never an instance's address",
		}},
		{"gateway is an endpoint's, the endpoint changed", []Resource{
			subnet("s", "10.65.0.0/24", "10.65.0.1"), wep("web-1", "n1", "tap1", "10.65.0.7/32", "10.65.0.1/32"),
		}, []Ref{{KindWorkloadEndpoint, "web-1"}}, []string{
			"WorkloadEndpoint/web-1: spec.ipNetworks[1]: 10.65.0.1/32 is the gatewayIP of Subnet/s, which stands for the local host on every host; an instance cannot have it",
		}},
		{"broadcast address, the endpoint changed", []Resource{
			subnet("s", "10.65.0.0/24", "10.65.0.1"), wep("web-1", "n1", "tap1", "10.65.0.255/32"),
		}, []Ref{{KindWorkloadEndpoint, "web-1"}}, []string{
			"WorkloadEndpoint/web-1: spec.ipNetworks[0]: 10.65.0.255/32 is the broadcast address of Subnet/s (10.65.0.0/24); an instance needs a host address of its subnet",
		}},
		{"v6: the last address is a host address", []Resource{
			subnet("v6", "fd00::/120", "fd00::1"), wep("web-1", "n1", "tap1", "fd00::ff/128"),
		}, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := snapshotOf(append(append([]Resource{}, base...), tt.rs...)...)
			changed := map[Ref]bool{}
			for _, r := range tt.changed {
				changed[r] = true
			}
			errs := s.validate(changed)
			var got []string
			for _, e := range errs {
				got = append(got, e.Error())
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %d errors, want %d:\n%s", len(got), len(tt.want), strings.Join(got, "\n"))
			}
			for i := range got {
				if !strings.HasPrefix(got[i], tt.want[i]) {
					t.Errorf("error %d:\ngot  %s\nwant %s", i, got[i], tt.want[i])
				}
			}
		})
	}
}

func TestSnapshotSubnetPutGetRemoveClone(t *testing.T) {
	sn := subnet("s", "10.65.0.0/24", "10.65.0.1")
	s := NewSnapshot()
	s.Put(sn)
	if got, ok := s.Get(Ref{KindSubnet, "s"}); !ok || got != sn {
		t.Fatalf("Get: %v %v", got, ok)
	}
	if rs := s.Resources("subnets"); len(rs) != 1 || rs[0] != sn {
		t.Fatalf("Resources: %v", rs)
	}
	c := s.Clone()
	if !c.Remove(Ref{KindSubnet, "s"}) || c.Remove(Ref{KindSubnet, "s"}) {
		t.Fatal("Remove")
	}
	if _, ok := s.Get(Ref{KindSubnet, "s"}); !ok {
		t.Fatal("removing from a clone changed the original")
	}
	var zero Snapshot
	zero.Put(sn)
	if zero.Subnets["s"] != sn {
		t.Fatal("Put on a zero Snapshot")
	}
	// A deep copy shares nothing.
	d := deepCopy(subnet("s", "10.65.0.0/24", "10.65.0.1", routes("10.65.0.1", "11.0.0.0/8"),
		func(s *SubnetSpec) { s.DNSNameservers = []netip.Addr{netip.MustParseAddr("10.65.0.53")} })).(*Subnet)
	orig := subnet("s", "10.65.0.0/24", "10.65.0.1", routes("10.65.0.1", "11.0.0.0/8"))
	cp := deepCopy(orig).(*Subnet)
	*cp.Spec.EnableDHCP = false
	cp.Spec.HostRoutes[0].NextHop = netip.Addr{}
	if !orig.Spec.DHCPEnabled() || !orig.Spec.HostRoutes[0].NextHop.IsValid() || len(d.Spec.DNSNameservers) != 1 {
		t.Fatal("deepCopy shares memory")
	}
}

func TestWarnings(t *testing.T) {
	gw := "11.8.0.1"
	withRoutes := subnet("net-b", "11.8.0.0/24", gw, routes(gw, "11.11.0.0/16"))
	noRoutes := subnet("net-a", "10.65.0.0/24", "10.65.0.1")
	single := []Resource{noRoutes, withRoutes,
		wep("vm-1-eth1", "n1", "tap1", "11.8.0.5/32"), wep("vm-2-eth0", "n1", "tap2", "11.8.0.6/32")}
	want := "Subnet/net-b: spec.hostRoutes: every instance in 11.8.0.0/24 has a single NIC: no endpoint in it " +
		"(WorkloadEndpoint/vm-1-eth1, WorkloadEndpoint/vm-2-eth0) shares its node and its calyx.io/instance label with another endpoint " +
		"(harmless, but it cannot change anything: a single-NIC instance already sends all its traffic to its gateway 11.8.0.1, the local host, " +
		"which routes it; host routes only choose between an instance's NICs)"
	if got := Warnings(snapshotOf(single...), nil); len(got) != 1 || got[0] != want {
		t.Fatalf("single-NIC instances:\ngot  %q\nwant %q", got, want)
	}
	// Only what the apply touched is warned about: the subnet, or one of
	// its endpoints.
	if got := Warnings(snapshotOf(single...), map[Ref]bool{{KindSubnet, "net-a"}: true}); len(got) != 0 {
		t.Errorf("warned about an untouched subnet: %q", got)
	}
	if got := Warnings(snapshotOf(single...), map[Ref]bool{{KindWorkloadEndpoint, "vm-2-eth0"}: true}); len(got) != 1 {
		t.Errorf("no warning when one of its endpoints changed: %q", got)
	}

	// The seed's instance: eth0 in net-a, eth1 in net-b, one instance by
	// its label on one node.
	multi := []Resource{noRoutes, withRoutes,
		instance(wep("vm-1-eth0", "n1", "tap0", "10.65.0.5/32"), "vm-1"), instance(wep("vm-1-eth1", "n1", "tap1", "11.8.0.5/32"), "vm-1")}
	if got := Warnings(snapshotOf(multi...), nil); len(got) != 0 {
		t.Errorf("a two-NIC instance: %q", got)
	}
	// The same label on two nodes is two instances.
	split := []Resource{noRoutes, withRoutes,
		instance(wep("vm-1-eth0", "n2", "tap0", "10.65.0.5/32"), "vm-1"), instance(wep("vm-1-eth1", "n1", "tap1", "11.8.0.5/32"), "vm-1")}
	if got := Warnings(snapshotOf(split...), nil); len(got) != 1 {
		t.Errorf("one label on two nodes: %q", got)
	}
	// No endpoint yet: nothing to judge. No host routes: nothing to say.
	if got := Warnings(snapshotOf(noRoutes, withRoutes), nil); len(got) != 0 {
		t.Errorf("an empty subnet: %q", got)
	}
	// The most specific subnet decides: the endpoint is in net-c, not in
	// net-b.
	inner := subnet("net-c", "11.8.0.0/28", "11.8.0.14")
	if got := Warnings(snapshotOf(withRoutes, inner, wep("vm-3", "n1", "tap3", "11.8.0.5/32")), nil); len(got) != 0 {
		t.Errorf("an endpoint of a more specific subnet: %q", got)
	}
	// Many endpoints are shortened.
	many := []Resource{withRoutes}
	for i, n := range []string{"a", "b", "c", "d", "e"} {
		many = append(many, wep(n, "n1", "tap"+n, netip.AddrFrom4([4]byte{11, 8, 0, byte(10 + i)}).String()+"/32"))
	}
	if got := Warnings(snapshotOf(many...), nil); len(got) != 1 || !strings.Contains(got[0], "(WorkloadEndpoint/a, WorkloadEndpoint/b, WorkloadEndpoint/c, and 2 more)") {
		t.Errorf("many endpoints: %q", got)
	}
}

// The stores keep subnets like every kind, and refuse what breaks the
// rules between them and endpoints, changing nothing.
func TestSubnetStore(t *testing.T) {
	forEachStore(t, func(t *testing.T, ds testStore) {
		ctx := context.Background()
		rs := append(baseResources(), subnet("calico-v4", "10.65.0.0/24", "10.65.0.1", routes("10.65.0.1", "11.11.0.0/16")))
		if err := ds.Apply(ctx, rs); err != nil {
			t.Fatal(err)
		}
		s, err := ds.Snapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got := s.Subnets["calico-v4"]; got == nil || !reflect.DeepEqual(got, rs[len(rs)-1]) {
			t.Fatalf("stored subnet: %#v", got)
		}
		err = ds.Apply(ctx, []Resource{wep("web-3", "n1", "tap3", "10.65.0.1/32")})
		var ve *ValidationError
		if !errors.As(err, &ve) || !strings.Contains(err.Error(), "WorkloadEndpoint/web-3: spec.ipNetworks[0]: 10.65.0.1/32 is the gatewayIP of Subnet/calico-v4") {
			t.Fatalf("an endpoint on the gateway: %v", err)
		}
		if err := ds.Delete(ctx, []Ref{{KindSubnet, "calico-v4"}}); err != nil {
			t.Fatal(err)
		}
		if s, _ = ds.Snapshot(ctx); len(s.Subnets) != 0 {
			t.Fatalf("after delete: %v", s.Subnets)
		}
	})
}
