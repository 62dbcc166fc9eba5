package model

import (
	"bytes"
	"encoding/json"
	"errors"
	"net"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

func decodeOne(t *testing.T, doc string) Resource {
	t.Helper()
	rs, err := Decode(strings.NewReader(doc))
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if len(rs) != 1 {
		t.Fatalf("Decode returned %d resources, want 1", len(rs))
	}
	return rs[0]
}

func TestDecodeGood(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want Resource
	}{
		{
			name: "ippool v4 with defaults",
			doc: `
apiVersion: calyx.io/v1
kind: IPPool
metadata:
  name: internal-v4
  labels: {tier: internal}
spec:
  cidr: 10.65.0.0/16
  natOutgoing: true
`,
			want: &IPPool{
				Metadata: Metadata{Name: "internal-v4", Labels: map[string]string{"tier": "internal"}},
				Spec: IPPoolSpec{
					CIDR: netip.MustParsePrefix("10.65.0.0/16"), BlockSize: 26,
					IPIPMode: EncapNever, VXLANMode: EncapNever, NATOutgoing: true, NodeSelector: "all()",
				},
			},
		},
		{
			name: "ippool v6 explicit fields",
			doc: `
apiVersion: calyx.io/v1
kind: IPPool
metadata: {name: v6}
spec:
  cidr: fd00:65::/48
  blockSize: 120
  ipipMode: Never
  vxlanMode: CrossSubnet
  nodeSelector: "rack == 'a'"
  external: true
  disabled: true
`,
			want: &IPPool{
				Metadata: Metadata{Name: "v6"},
				Spec: IPPoolSpec{
					CIDR: netip.MustParsePrefix("fd00:65::/48"), BlockSize: 120,
					IPIPMode: EncapNever, VXLANMode: EncapCrossSubnet, NodeSelector: "rack == 'a'",
					External: true, Disabled: true,
				},
			},
		},
		{
			name: "ippool v6 default block size",
			doc:  "apiVersion: calyx.io/v1\nkind: IPPool\nmetadata: {name: v6}\nspec: {cidr: 'fd00::/64'}\n",
			want: &IPPool{
				Metadata: Metadata{Name: "v6"},
				Spec: IPPoolSpec{CIDR: netip.MustParsePrefix("fd00::/64"), BlockSize: 122,
					IPIPMode: EncapNever, VXLANMode: EncapNever, NodeSelector: "all()"},
			},
		},
		{
			name: "node",
			doc: `
apiVersion: calyx.io/v1
kind: Node
metadata: {name: host-1}
spec:
  ipv4Address: 10.30.0.10/24
  ipv6Address: 2001:db8::10/64
  asNumber: 64512
`,
			want: &Node{
				Metadata: Metadata{Name: "host-1"},
				Spec: NodeSpec{
					IPv4Address: netip.MustParsePrefix("10.30.0.10/24"),
					IPv6Address: netip.MustParsePrefix("2001:db8::10/64"),
					ASNumber:    64512,
				},
			},
		},
		{
			name: "workload endpoint",
			doc: `
apiVersion: calyx.io/v1
kind: WorkloadEndpoint
metadata:
  name: web-1
  labels: {app: web, "calyx.io/tenant": blue}
spec:
  node: host-1
  interface: tap0a1b2c3d-4e
  mac: 02:00:00:00:00:01
  ipNetworks:
  - 10.65.0.5/32
  - fd00:65::5/128
`,
			want: &WorkloadEndpoint{
				Metadata: Metadata{Name: "web-1", Labels: map[string]string{"app": "web", "calyx.io/tenant": "blue"}},
				Spec: WorkloadEndpointSpec{
					Node: "host-1", Interface: "tap0a1b2c3d-4e",
					MAC:        net.HardwareAddr{2, 0, 0, 0, 0, 1},
					IPNetworks: []netip.Prefix{netip.MustParsePrefix("10.65.0.5/32"), netip.MustParsePrefix("fd00:65::5/128")},
				},
			},
		},
		{
			name: "floating ip with fixed ip",
			doc: `
apiVersion: calyx.io/v1
kind: FloatingIP
metadata:
  name: web-1-fip
  labels: {tenant: blue}
spec:
  ip: 198.51.100.10
  endpoint: web-1
  fixedIP: 10.65.1.2
`,
			want: &FloatingIP{
				Metadata: Metadata{Name: "web-1-fip", Labels: map[string]string{"tenant": "blue"}},
				Spec: FloatingIPSpec{IP: netip.MustParseAddr("198.51.100.10"), Endpoint: "web-1",
					FixedIP: netip.MustParseAddr("10.65.1.2")},
			},
		},
		{
			name: "floating ip without fixed ip stores no default",
			doc:  "apiVersion: calyx.io/v1\nkind: FloatingIP\nmetadata: {name: f}\nspec: {ip: 198.51.100.10, endpoint: web-1}\n",
			want: &FloatingIP{
				Metadata: Metadata{Name: "f"},
				Spec:     FloatingIPSpec{IP: netip.MustParseAddr("198.51.100.10"), Endpoint: "web-1"},
			},
		},
		{
			name: "floating ip with null and empty fixed ip",
			doc:  "apiVersion: calyx.io/v1\nkind: FloatingIP\nmetadata: {name: f}\nspec: {ip: '198.51.100.10', endpoint: web-1, fixedIP: ''}\n",
			want: &FloatingIP{
				Metadata: Metadata{Name: "f"},
				Spec:     FloatingIPSpec{IP: netip.MustParseAddr("198.51.100.10"), Endpoint: "web-1"},
			},
		},
		{
			name: "config all defaults, no spec",
			doc:  "apiVersion: calyx.io/v1\nkind: Config\nmetadata: {name: default}\n",
			want: &Config{
				Metadata: Metadata{Name: "default"},
				Spec: ConfigSpec{VXLANVNI: 4096, VXLANPort: 4789, MetadataAddress: "127.0.0.1:8775",
					EndpointToHostAction: "Accept", MapSizes: defaultMapSizes(nil), NATPortRange: DefaultNATPortRange},
			},
		},
		{
			name: "config explicit, zero map size means default",
			doc: `
apiVersion: calyx.io/v1
kind: Config
metadata: {name: default}
spec:
  vxlanVNI: 77
  vxlanPort: 8472
  metadataAddress: "[fd00::1]:80"
  endpointToHostAction: Drop
  routeMapSize: 1024
  endpointMapSize: 0
  ctMapSize: 0x10000
  natPortRange: "40000:49999"
`,
			want: &Config{
				Metadata: Metadata{Name: "default"},
				Spec: ConfigSpec{VXLANVNI: 77, VXLANPort: 8472, MetadataAddress: "[fd00::1]:80",
					EndpointToHostAction: "Drop", MapSizes: defaultMapSizes(map[string]uint32{"routeMapSize": 1024, "ctMapSize": 65536}),
					NATPortRange: "40000:49999"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := decodeOne(t, tt.doc)
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got  %#v\nwant %#v", got, tt.want)
			}
		})
	}
}

func TestDecodeMultiDocumentSkipsEmpty(t *testing.T) {
	in := `
# leading comment
---
apiVersion: calyx.io/v1
kind: Node
metadata: {name: a}
spec: {ipv4Address: 10.30.0.1/24}
---
---
# only a comment
---
apiVersion: calyx.io/v1
kind: Node
metadata: {name: b}
spec: {ipv4Address: 10.30.0.2/24}
`
	rs, err := Decode(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 2 || rs[0].Meta().Name != "a" || rs[1].Meta().Name != "b" {
		t.Fatalf("got %v", rs)
	}
	if rs, err := Decode(strings.NewReader("")); err != nil || len(rs) != 0 {
		t.Fatalf("empty input: %v, %v", rs, err)
	}
}

func sampleResources() []Resource {
	return []Resource{
		DefaultConfig(),
		&IPPool{Metadata: Metadata{Name: "p1", Labels: map[string]string{"a": "b"}},
			Spec: IPPoolSpec{CIDR: netip.MustParsePrefix("10.65.0.0/16"), BlockSize: 24, IPIPMode: EncapCrossSubnet,
				VXLANMode: EncapNever, NATOutgoing: true, NodeSelector: "all()", DisableBGPExport: true}},
		&IPPool{Metadata: Metadata{Name: "p6"},
			Spec: IPPoolSpec{CIDR: netip.MustParsePrefix("fd00:65::/64"), BlockSize: 122, IPIPMode: EncapNever,
				VXLANMode: EncapAlways, NodeSelector: "all()", External: true, Disabled: true}},
		&Node{Metadata: Metadata{Name: "n1"}, Spec: NodeSpec{IPv4Address: netip.MustParsePrefix("10.30.0.10/24")}},
		&Node{Metadata: Metadata{Name: "n2"}, Spec: NodeSpec{
			IPv4Address: netip.MustParsePrefix("10.30.1.10/24"), IPv6Address: netip.MustParsePrefix("2001:db8::2/64"), ASNumber: 65000,
			RouteReflectorClusterID: netip.MustParseAddr("224.0.0.1")}},
		&WorkloadEndpoint{Metadata: Metadata{Name: "web-1", Labels: map[string]string{"app": "web"}},
			Spec: WorkloadEndpointSpec{Node: "n1", Interface: "tap1", MAC: net.HardwareAddr{2, 0, 0, 0, 0, 1},
				IPNetworks: []netip.Prefix{netip.MustParsePrefix("10.65.0.5/32"), netip.MustParsePrefix("fd00:65::5/128")}}},
		&WorkloadEndpoint{Metadata: Metadata{Name: "web-2"},
			Spec: WorkloadEndpointSpec{Node: "n2", Interface: "veth-web-2",
				IPNetworks: []netip.Prefix{netip.MustParsePrefix("10.65.1.5/32")}}},
		&FloatingIP{Metadata: Metadata{Name: "web-1-fip", Labels: map[string]string{"app": "web"}},
			Spec: FloatingIPSpec{IP: netip.MustParseAddr("198.51.100.10"), Endpoint: "web-1", FixedIP: netip.MustParseAddr("10.65.0.5")}},
		&FloatingIP{Metadata: Metadata{Name: "web-2-fip"},
			Spec: FloatingIPSpec{IP: netip.MustParseAddr("198.51.100.11"), Endpoint: "web-2"}},
		subnet("calico-v4", "10.65.0.0/24", "10.65.0.1", func(s *SubnetSpec) {
			s.DNSNameservers = []netip.Addr{netip.MustParseAddr("10.65.0.53"), netip.MustParseAddr("10.65.0.54")}
			s.HostRoutes = []HostRoute{{netip.MustParsePrefix("11.11.0.0/16"), netip.MustParseAddr("10.65.0.1")}}
			s.Network = "internal"
		}),
		subnet("v6", "fd00:65::/64", "fd00:65::1", func(s *SubnetSpec) { off := false; s.EnableDHCP = &off; s.LeaseSeconds = 600 }),
		bgpConfiguration(func(s *BGPConfigurationSpec) {
			off := false
			s.ASNumber, s.NodeToNodeMeshEnabled, s.ListenPort, s.LogSeverityScreen, s.GracefulRestartSeconds = 65000, &off, 1790, "Debug", 300
			s.Communities = []Community{{"no-export-dc", "65000:100"}, {"large", "4200000000:1:2"}}
			s.PrefixAdvertisements = []PrefixAdvertisement{{netip.MustParsePrefix("10.65.0.0/16"), []string{"no-export-dc", "65000:200"}}}
		}),
		bgpPeer("gateway", "192.0.2.1", 64600, func(s *BGPPeerSpec) { s.Password = &BGPPassword{File: "/etc/calyx/bgp-gw.key"} }),
		bgpPeer("tor-a", "2001:db8:ff::1", 4200000001, func(s *BGPPeerSpec) {
			s.NodeSelector, s.Password, s.SourceAddress, s.KeepNextHop = "rack == 'a'", &BGPPassword{Value: "s3cret"}, SourceNone, true
		}),
	}
}

func TestRoundTripYAML(t *testing.T) {
	want := sampleResources()
	var b bytes.Buffer
	if err := Encode(&b, want...); err != nil {
		t.Fatal(err)
	}
	got, err := Decode(&b)
	if err != nil {
		t.Fatalf("decoding our own output: %v\n%s", err, b.String())
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("round trip changed resources:\ngot  %#v\nwant %#v", got, want)
	}
}

func TestRoundTripJSON(t *testing.T) {
	for _, r := range sampleResources() {
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		back, _ := NewResource(r.Kind())
		if err := json.Unmarshal(b, back); err != nil {
			t.Fatalf("%s: %v\n%s", RefOf(r), err, b)
		}
		if !reflect.DeepEqual(back, r) {
			t.Fatalf("%s: JSON round trip changed it:\ngot  %#v\nwant %#v", RefOf(r), back, r)
		}
	}
}

func TestJSONShape(t *testing.T) {
	r := sampleResources()[5]
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"apiVersion":"calyx.io/v1","kind":"WorkloadEndpoint","metadata":{"name":"web-1","labels":{"app":"web"}},` +
		`"spec":{"node":"n1","interface":"tap1","mac":"02:00:00:00:00:01","ipNetworks":["10.65.0.5/32","fd00:65::5/128"]}}`
	if string(b) != want {
		t.Fatalf("got  %s\nwant %s", b, want)
	}
	// A value (not a pointer) marshals the same way, and so does a slice of
	// Resources, which is what calyxctl prints.
	v, _ := json.Marshal(*r.(*WorkloadEndpoint))
	if string(v) != want {
		t.Fatalf("value marshal differs: %s", v)
	}
	all, _ := json.Marshal([]Resource{r})
	if string(all) != "["+want+"]" {
		t.Fatalf("slice marshal differs: %s", all)
	}
	pool, _ := json.Marshal(sampleResources()[1])
	for _, key := range []string{`"cidr":"10.65.0.0/16"`, `"blockSize":24`, `"ipipMode":"CrossSubnet"`, `"vxlanMode":"Never"`,
		`"natOutgoing":true`, `"nodeSelector":"all()"`, `"external":false`, `"disabled":false`} {
		if !strings.Contains(string(pool), key) {
			t.Errorf("pool JSON %s lacks %s", pool, key)
		}
	}
}

func TestFloatingIPShape(t *testing.T) {
	rs := sampleResources()
	explicit, defaulted := rs[7], rs[8]
	b, err := json.Marshal(explicit)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"apiVersion":"calyx.io/v1","kind":"FloatingIP","metadata":{"name":"web-1-fip","labels":{"app":"web"}},` +
		`"spec":{"ip":"198.51.100.10","endpoint":"web-1","fixedIP":"10.65.0.5"}}`
	if string(b) != want {
		t.Fatalf("got  %s\nwant %s", b, want)
	}
	// No fixedIP is stored when none was given: it follows the endpoint.
	b, _ = json.Marshal(defaulted)
	want = `{"apiVersion":"calyx.io/v1","kind":"FloatingIP","metadata":{"name":"web-2-fip"},` +
		`"spec":{"ip":"198.51.100.11","endpoint":"web-2"}}`
	if string(b) != want {
		t.Fatalf("got  %s\nwant %s", b, want)
	}
	var y bytes.Buffer
	if err := Encode(&y, explicit, defaulted); err != nil {
		t.Fatal(err)
	}
	wantYAML := `apiVersion: calyx.io/v1
kind: FloatingIP
metadata:
  name: web-1-fip
  labels:
    app: web
spec:
  ip: 198.51.100.10
  endpoint: web-1
  fixedIP: 10.65.0.5
---
apiVersion: calyx.io/v1
kind: FloatingIP
metadata:
  name: web-2-fip
spec:
  ip: 198.51.100.11
  endpoint: web-2
`
	if y.String() != wantYAML {
		t.Fatalf("YAML:\n%s\nwant\n%s", y.String(), wantYAML)
	}
	var f FloatingIP
	if err := yaml.Unmarshal(y.Bytes(), &f); err != nil || !reflect.DeepEqual(&f, explicit) {
		t.Fatalf("yaml.Unmarshal into FloatingIP: %v %#v", err, f)
	}
	if err := json.Unmarshal([]byte(`{"apiVersion":"calyx.io/v1","kind":"FloatingIP","metadata":{"name":"f"},"spec":{"ip":"::1","endpoint":"w"}}`), &f); err == nil ||
		!strings.Contains(err.Error(), "FloatingIP/f: spec.ip: ::1 is an IPv6 address; IPv6 floating IPs are not supported yet") {
		t.Fatalf("json.Unmarshal of a bad FloatingIP: %v", err)
	}
}

const fipHead = "apiVersion: calyx.io/v1\nkind: FloatingIP\nmetadata: {name: web-1-fip}\n"

// TestDecodeFloatingIPErrors checks every way a FloatingIP's fields can be
// wrong: each case yields exactly one error, at path, with reason.
func TestDecodeFloatingIPErrors(t *testing.T) {
	tests := []struct {
		name, spec   string
		path, reason string
	}{
		{"ip missing", "{endpoint: web-1}", "spec.ip", "required"},
		{"ip empty", "{ip: '', endpoint: web-1}", "spec.ip", "required"},
		{"ip null", "{ip: null, endpoint: web-1}", "spec.ip", "required"},
		{"ip not a string", "{ip: 5, endpoint: web-1}", "spec.ip", "must be a string, got integer 5"},
		{"ip a list", "{ip: [198.51.100.10], endpoint: web-1}", "spec.ip", "must be a string, got a list"},
		{"ip not an address", "{ip: 198.51.100.300, endpoint: web-1}", "spec.ip", `"198.51.100.300" is not a valid IP address`},
		{"ip a hostname", "{ip: fip.example.com, endpoint: web-1}", "spec.ip", `"fip.example.com" is not a valid IP address`},
		{"ip with prefix length", "{ip: 198.51.100.10/32, endpoint: web-1}", "spec.ip",
			`"198.51.100.10/32" is not a valid IP address: give the address alone, without a prefix length (write 198.51.100.10)`},
		{"ip IPv6", "{ip: '2001:db8::10', endpoint: web-1}", "spec.ip", "2001:db8::10 is an IPv6 address; IPv6 floating IPs are not supported yet"},
		{"ip IPv4-mapped", "{ip: '::ffff:198.51.100.10', endpoint: web-1}", "spec.ip",
			`"::ffff:198.51.100.10": IPv4-mapped IPv6 addresses are not allowed, write the IPv4 form`},
		{"ip with zone", "{ip: 'fe80::1%eth0', endpoint: web-1}", "spec.ip", `"fe80::1%eth0": an address with a zone (%eth0) is not allowed`},
		{"ip unspecified", "{ip: 0.0.0.0, endpoint: web-1}", "spec.ip", "0.0.0.0 is the unspecified address; a floating IP must be a unicast host address"},
		{"ip loopback", "{ip: 127.0.0.1, endpoint: web-1}", "spec.ip", "127.0.0.1 is a loopback address; a floating IP must be a unicast host address"},
		{"ip multicast", "{ip: 224.0.0.5, endpoint: web-1}", "spec.ip", "224.0.0.5 is a multicast address; a floating IP must be a unicast host address"},
		{"ip link-local", "{ip: 169.254.10.1, endpoint: web-1}", "spec.ip", "169.254.10.1 is a link-local address; a floating IP must be a unicast host address"},
		{"ip broadcast", "{ip: 255.255.255.255, endpoint: web-1}", "spec.ip", "255.255.255.255 is the broadcast address; a floating IP must be a unicast host address"},
		{"ip duplicate key", "{ip: 198.51.100.10, ip: 198.51.100.11, endpoint: web-1}", "spec.ip", "duplicate field"},
		{"endpoint missing", "{ip: 198.51.100.10}", "spec.endpoint", "required (the name of a WorkloadEndpoint)"},
		{"endpoint empty", "{ip: 198.51.100.10, endpoint: ''}", "spec.endpoint", "required (the name of a WorkloadEndpoint)"},
		{"endpoint not a string", "{ip: 198.51.100.10, endpoint: 7}", "spec.endpoint", "must be a string, got integer 7"},
		{"endpoint a mapping", "{ip: 198.51.100.10, endpoint: {name: web-1}}", "spec.endpoint", "must be a string, got a mapping"},
		{"endpoint bad name", "{ip: 198.51.100.10, endpoint: Web_1}", "spec.endpoint", `"Web_1" is not a valid WorkloadEndpoint name`},
		{"endpoint a ref", "{ip: 198.51.100.10, endpoint: WorkloadEndpoint/web-1}", "spec.endpoint", `"WorkloadEndpoint/web-1" is not a valid WorkloadEndpoint name`},
		{"fixedIP not a string", "{ip: 198.51.100.10, endpoint: web-1, fixedIP: true}", "spec.fixedIP", "must be a string, got boolean true"},
		{"fixedIP not an address", "{ip: 198.51.100.10, endpoint: web-1, fixedIP: 10.65.1}", "spec.fixedIP", `"10.65.1" is not a valid IP address`},
		{"fixedIP with prefix length", "{ip: 198.51.100.10, endpoint: web-1, fixedIP: 10.65.1.2/32}", "spec.fixedIP",
			`"10.65.1.2/32" is not a valid IP address: give the address alone, without a prefix length (write 10.65.1.2)`},
		{"fixedIP IPv6", "{ip: 198.51.100.10, endpoint: web-1, fixedIP: 'fd00::2'}", "spec.fixedIP",
			"fd00::2 is an IPv6 address; the fixed IP of an IPv4 floating IP must be one of the endpoint's IPv4 addresses"},
		{"fixedIP IPv4-mapped", "{ip: 198.51.100.10, endpoint: web-1, fixedIP: '::ffff:10.65.1.2'}", "spec.fixedIP",
			`"::ffff:10.65.1.2": IPv4-mapped IPv6 addresses are not allowed, write the IPv4 form`},
		{"fixedIP multicast", "{ip: 198.51.100.10, endpoint: web-1, fixedIP: 239.1.1.1}", "spec.fixedIP",
			"239.1.1.1 is a multicast address; the fixed IP must be one of the endpoint's unicast addresses"},
		{"fixedIP loopback", "{ip: 198.51.100.10, endpoint: web-1, fixedIP: 127.0.0.1}", "spec.fixedIP",
			"127.0.0.1 is a loopback address; the fixed IP must be one of the endpoint's unicast addresses"},
		{"unknown field", "{ip: 198.51.100.10, endpoint: web-1, port: 80}", "spec.port", "unknown field"},
		{"Calico-style field name", "{ip: 198.51.100.10, endpoint: web-1, fixedIp: 10.65.1.2}", "spec.fixedIp", "unknown field"},
		{"spec not a mapping", "[198.51.100.10]", "spec", "must be a mapping, got a list"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs, err := Decode(strings.NewReader(fipHead + "spec: " + tt.spec + "\n"))
			if err == nil || rs != nil {
				t.Fatalf("got %v, %v; want an error", rs, err)
			}
			verrs := ValidationErrors(err)
			want := "document 1 (FloatingIP/web-1-fip): " + tt.path + ": " + tt.reason
			if len(verrs) != 1 || verrs[0].Path != tt.path || err.Error() != want {
				t.Fatalf("error\n%s\nwant exactly\n%s", err, want)
			}
		})
	}
}

func TestDecodeFloatingIPEveryProblem(t *testing.T) {
	for _, tt := range []struct {
		name, doc string
		want      []string
	}{
		{"no spec", fipHead, []string{"spec.ip: required", "spec.endpoint: required (the name of a WorkloadEndpoint)"}},
		{"all bad", fipHead + "spec: {ip: 'fd00::10', endpoint: 'A', fixedIP: x, extra: 1}", []string{
			"spec.ip: fd00::10 is an IPv6 address; IPv6 floating IPs are not supported yet",
			`spec.endpoint: "A" is not a valid WorkloadEndpoint name`,
			`spec.fixedIP: "x" is not a valid IP address`,
			"spec.extra: unknown field",
		}},
		{"bad name and kind spelling", "apiVersion: calyx.io/v1\nkind: floatingip\nmetadata: {name: Fip}\nspec: {ip: 198.51.100.10, endpoint: web-1}",
			[]string{`kind: unknown kind "floatingip" (did you mean "FloatingIP"?)`}},
		{"bad name", "apiVersion: calyx.io/v1\nkind: FloatingIP\nmetadata: {name: Fip}\nspec: {ip: 198.51.100.10, endpoint: web-1}",
			[]string{`metadata.name: "Fip" is not a valid name`}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode(strings.NewReader(tt.doc))
			if err == nil {
				t.Fatal("no error")
			}
			if n := len(ValidationErrors(err)); n != len(tt.want) {
				t.Errorf("want %d errors, got %d:\n%s", len(tt.want), n, err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error\n%s\ndoes not contain\n%s", err, w)
				}
			}
		})
	}
}

func TestValidateFloatingIPProgrammatic(t *testing.T) {
	a := netip.MustParseAddr
	tests := []struct {
		spec FloatingIPSpec
		want string // "" for valid
	}{
		{FloatingIPSpec{IP: a("198.51.100.10"), Endpoint: "web-1"}, ""},
		{FloatingIPSpec{IP: a("198.51.100.10"), Endpoint: "web-1", FixedIP: a("10.65.1.2")}, ""},
		{FloatingIPSpec{Endpoint: "web-1"}, "FloatingIP/f: spec.ip: required"},
		{FloatingIPSpec{IP: a("::ffff:198.51.100.10"), Endpoint: "web-1"},
			"FloatingIP/f: spec.ip: ::ffff:198.51.100.10: IPv4-mapped IPv6 addresses are not allowed, write the IPv4 form"},
		{FloatingIPSpec{IP: a("fe80::1%eth0"), Endpoint: "web-1"},
			"FloatingIP/f: spec.ip: fe80::1%eth0 is an IPv6 address; IPv6 floating IPs are not supported yet"},
		{FloatingIPSpec{IP: a("198.51.100.10"), Endpoint: "web-1", FixedIP: a("::ffff:10.65.1.2")},
			"FloatingIP/f: spec.fixedIP: ::ffff:10.65.1.2: IPv4-mapped IPv6 addresses are not allowed, write the IPv4 form"},
		{FloatingIPSpec{IP: a("198.51.100.10"), Endpoint: "web-1", FixedIP: a("0.0.0.0")},
			"FloatingIP/f: spec.fixedIP: 0.0.0.0 is the unspecified address; the fixed IP must be one of the endpoint's unicast addresses"},
	}
	for _, tt := range tests {
		err := Validate(&FloatingIP{Metadata: Metadata{Name: "f"}, Spec: tt.spec})
		got := ""
		if err != nil {
			got = err.Error()
		}
		if got != tt.want {
			t.Errorf("Validate(%+v) = %q; want %q", tt.spec, got, tt.want)
		}
	}
}

func TestUnmarshalYAMLIntoResource(t *testing.T) {
	var p IPPool
	err := yaml.Unmarshal([]byte("apiVersion: calyx.io/v1\nkind: IPPool\nmetadata: {name: p}\nspec: {cidr: 10.1.0.0/16}\n"), &p)
	if err != nil {
		t.Fatal(err)
	}
	if p.Spec.BlockSize != 26 || p.Spec.CIDR.String() != "10.1.0.0/16" {
		t.Fatalf("got %+v", p)
	}
	var n Node
	err = yaml.Unmarshal([]byte("apiVersion: calyx.io/v1\nkind: IPPool\nmetadata: {name: p}\nspec: {cidr: 10.1.0.0/16}\n"), &n)
	if err == nil || !strings.Contains(err.Error(), "kind: must be Node, got IPPool") {
		t.Fatalf("got %v", err)
	}
}

const poolHead = "apiVersion: calyx.io/v1\nkind: IPPool\nmetadata: {name: p1}\n"
const wepHead = "apiVersion: calyx.io/v1\nkind: WorkloadEndpoint\nmetadata: {name: web-1}\n"

func TestDecodeErrors(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want []string // each must appear in the error text
	}{
		{"bad cidr in ipNetworks", wepHead + "spec: {node: n1, interface: tap1, ipNetworks: [10.0.0.1/32, 10.0.0.300/32]}",
			[]string{`document 1 (WorkloadEndpoint/web-1): spec.ipNetworks[1]: "10.0.0.300/32" is not a valid CIDR`}},
		{"bad pool cidr", poolHead + "spec: {cidr: 10.0.0/8}",
			[]string{`document 1 (IPPool/p1): spec.cidr: "10.0.0/8" is not a valid CIDR`}},
		{"pool cidr with host bits", poolHead + "spec: {cidr: 10.0.0.1/24}",
			[]string{`spec.cidr: 10.0.0.1/24 has host bits set; did you mean 10.0.0.0/24?`}},
		{"pool cidr missing", poolHead + "spec: {natOutgoing: true}",
			[]string{`document 1 (IPPool/p1): spec.cidr: required`}},
		{"unknown field in spec", poolHead + "spec: {cidr: 10.0.0.0/16, foo: 1}",
			[]string{`document 1 (IPPool/p1): spec.foo: unknown field`}},
		{"unknown field in metadata", "apiVersion: calyx.io/v1\nkind: IPPool\nmetadata: {name: p1, namespace: x}\nspec: {cidr: 10.0.0.0/16}",
			[]string{`document 1 (IPPool/p1): metadata.namespace: unknown field`}},
		{"unknown field at top level", poolHead + "spec: {cidr: 10.0.0.0/16}\nstatus: {}",
			[]string{`document 1 (IPPool/p1): status: unknown field`}},
		{"duplicate field", poolHead + "spec: {cidr: 10.0.0.0/16, cidr: 10.1.0.0/16}",
			[]string{`spec.cidr: duplicate field`}},
		{"both encaps", poolHead + "spec: {cidr: 10.0.0.0/16, ipipMode: Always, vxlanMode: CrossSubnet}",
			[]string{`document 1 (IPPool/p1): spec: ipipMode and vxlanMode cannot both be enabled`}},
		{"bad encap mode", poolHead + "spec: {cidr: 10.0.0.0/16, ipipMode: always}",
			[]string{`spec.ipipMode: must be one of Never, Always, CrossSubnet, got "always"`}},
		{"both encaps on v6", poolHead + "spec: {cidr: 'fd00::/64', ipipMode: CrossSubnet, vxlanMode: Always}",
			[]string{`document 1 (IPPool/p1): spec: ipipMode and vxlanMode cannot both be enabled`}},
		{"block size too big", poolHead + "spec: {cidr: 10.0.0.0/16, blockSize: 40}",
			[]string{`document 1 (IPPool/p1): spec.blockSize: must be between 20 and 32 for IPv4, got 40`}},
		{"block size v6", poolHead + "spec: {cidr: 'fd00::/64', blockSize: 26}",
			[]string{`spec.blockSize: must be between 116 and 128 for IPv6, got 26`}},
		{"block size larger than pool", poolHead + "spec: {cidr: 10.0.0.0/24, blockSize: 22}",
			[]string{`spec.blockSize: must be at least the cidr's prefix length 24`}},
		{"block size explicit zero", poolHead + "spec: {cidr: 10.0.0.0/16, blockSize: 0}",
			[]string{`spec.blockSize: must be between 20 and 32 for IPv4, got 0`}},
		{"block size wrong type", poolHead + "spec: {cidr: 10.0.0.0/16, blockSize: big}",
			[]string{`spec.blockSize: must be an integer`, `got "big"`}},
		{"pool overlaps loopback", poolHead + "spec: {cidr: 127.0.0.0/16}",
			[]string{`spec.cidr: 127.0.0.0/16 overlaps the IPv4 loopback range 127.0.0.0/8`}},
		{"bool as string", poolHead + "spec: {cidr: 10.0.0.0/16, natOutgoing: 'true'}",
			[]string{`spec.natOutgoing: must be true or false, got "true"`}},
		{"bad mac", wepHead + "spec: {node: n1, interface: tap1, mac: 'zz:00:00:00:00:01', ipNetworks: [10.0.0.1/32]}",
			[]string{`document 1 (WorkloadEndpoint/web-1): spec.mac: "zz:00:00:00:00:01" is not a valid MAC address`}},
		{"multicast mac", wepHead + "spec: {node: n1, interface: tap1, mac: '01:00:5e:00:00:01', ipNetworks: [10.0.0.1/32]}",
			[]string{`spec.mac: 01:00:5e:00:00:01 is a multicast MAC address`}},
		{"long mac", wepHead + "spec: {node: n1, interface: tap1, mac: '02:00:00:00:00:00:00:01', ipNetworks: [10.0.0.1/32]}",
			[]string{`spec.mac: 02:00:00:00:00:00:00:01 is not a 6-byte Ethernet MAC address`}},
		{"non-/32 ipNetwork", wepHead + "spec: {node: n1, interface: tap1, ipNetworks: [10.0.0.0/24]}",
			[]string{`document 1 (WorkloadEndpoint/web-1): spec.ipNetworks[0]: 10.0.0.0/24 must be a single address (/32)`}},
		{"non-/128 ipNetwork", wepHead + "spec: {node: n1, interface: tap1, ipNetworks: ['fd00::1/64']}",
			[]string{`spec.ipNetworks[0]: fd00::1/64 must be a single address (/128)`}},
		{"bare address", wepHead + "spec: {node: n1, interface: tap1, ipNetworks: [10.0.0.1]}",
			[]string{`spec.ipNetworks[0]: "10.0.0.1" is not a valid CIDR (write 10.0.0.1/32)`}},
		{"duplicate ipNetwork", wepHead + "spec: {node: n1, interface: tap1, ipNetworks: [10.0.0.1/32, 10.0.0.1/32]}",
			[]string{`spec.ipNetworks[1]: 10.0.0.1/32 is listed twice (also spec.ipNetworks[0])`}},
		{"no ipNetworks", wepHead + "spec: {node: n1, interface: tap1}",
			[]string{`spec.ipNetworks: at least one address is required`}},
		{"ipNetworks not a list", wepHead + "spec: {node: n1, interface: tap1, ipNetworks: 10.0.0.1/32}",
			[]string{`spec.ipNetworks: must be a list, got "10.0.0.1/32"`}},
		{"bad interface", wepHead + "spec: {node: n1, interface: 'a-very-long-interface-name', ipNetworks: [10.0.0.1/32]}",
			[]string{`spec.interface: "a-very-long-interface-name" is not a valid interface name: at most 15 bytes`}},
		{"interface dotdot", wepHead + "spec: {node: n1, interface: '..', ipNetworks: [10.0.0.1/32]}",
			[]string{`spec.interface: ".." is not a valid interface name`}},
		{"loopback interface", wepHead + "spec: {node: n1, interface: lo, ipNetworks: [10.0.0.1/32]}",
			[]string{`spec.interface: "lo" is the host's loopback interface: a workload's interface is its own tap or veth`}},
		{"missing node and interface", wepHead + "spec: {ipNetworks: [10.0.0.1/32]}",
			[]string{`spec.node: required`, `spec.interface: required`}},
		{"wrong apiVersion", "apiVersion: v2\nkind: IPPool\nmetadata: {name: p1}\nspec: {cidr: 10.0.0.0/16}",
			[]string{`document 1 (IPPool/p1): apiVersion: must be "calyx.io/v1", got "v2"`}},
		{"missing apiVersion", "kind: IPPool\nmetadata: {name: p1}\nspec: {cidr: 10.0.0.0/16}",
			[]string{`apiVersion: required`}},
		{"unknown kind", "apiVersion: calyx.io/v1\nkind: Pod\nmetadata: {name: p1}\n",
			[]string{`document 1: kind: unknown kind "Pod" (want one of IPPool, Node, Subnet, WorkloadEndpoint, FloatingIP, NetworkPolicy, Config, IPAMBlock, BGPConfiguration, BGPPeer)`}},
		{"kind in wrong case", "apiVersion: calyx.io/v1\nkind: ippool\nmetadata: {name: p1}\n",
			[]string{`kind: unknown kind "ippool" (did you mean "IPPool"?)`}},
		{"missing name", "apiVersion: calyx.io/v1\nkind: IPPool\nmetadata: {}\nspec: {cidr: 10.0.0.0/16}",
			[]string{`document 1 (IPPool): metadata.name: required`}},
		{"bad name", "apiVersion: calyx.io/v1\nkind: IPPool\nmetadata: {name: Pool_1}\nspec: {cidr: 10.0.0.0/16}",
			[]string{`document 1 (IPPool/Pool_1): metadata.name: "Pool_1" is not a valid name`}},
		{"name not a string", "apiVersion: calyx.io/v1\nkind: IPPool\nmetadata: {name: [a]}\nspec: {cidr: 10.0.0.0/16}",
			[]string{`metadata.name: must be a string, got a list`}},
		{"bad label", "apiVersion: calyx.io/v1\nkind: IPPool\nmetadata: {name: p1, labels: {'a b': x}}\nspec: {cidr: 10.0.0.0/16}",
			[]string{`metadata.labels["a b"]: invalid label key`}},
		{"label value not a string", "apiVersion: calyx.io/v1\nkind: IPPool\nmetadata: {name: p1, labels: {v: 2}}\nspec: {cidr: 10.0.0.0/16}",
			[]string{`metadata.labels["v"]: must be a string, got integer 2`}},
		{"missing metadata", "apiVersion: calyx.io/v1\nkind: IPPool\nspec: {cidr: 10.0.0.0/16}",
			[]string{`document 1 (IPPool): metadata: required`}},
		{"spec not a mapping", poolHead + "spec: [1]",
			[]string{`spec: must be a mapping, got a list`}},
		{"document not a mapping", "- a\n- b\n",
			[]string{`document 1: a resource must be a mapping`}},
		{"node address without prefix", "apiVersion: calyx.io/v1\nkind: Node\nmetadata: {name: n1}\nspec: {ipv4Address: 10.30.0.10}",
			[]string{`spec.ipv4Address: "10.30.0.10" has no prefix length`}},
		{"node v4 field holds v6", "apiVersion: calyx.io/v1\nkind: Node\nmetadata: {name: n1}\nspec: {ipv4Address: '2001:db8::1/64'}",
			[]string{`spec.ipv4Address: must be an IPv4 address with prefix length, got 2001:db8::1/64`}},
		{"node network address", "apiVersion: calyx.io/v1\nkind: Node\nmetadata: {name: n1}\nspec: {ipv4Address: 10.30.0.0/24}",
			[]string{`spec.ipv4Address: 10.30.0.0 is the network address of 10.30.0.0/24`}},
		{"node without address", "apiVersion: calyx.io/v1\nkind: Node\nmetadata: {name: n1}\nspec: {asNumber: 1}",
			[]string{`spec.ipv4Address: required`}},
		{"config name", "apiVersion: calyx.io/v1\nkind: Config\nmetadata: {name: other}\n",
			[]string{`document 1 (Config/other): metadata.name: must be "default"`}},
		{"config vni range", "apiVersion: calyx.io/v1\nkind: Config\nmetadata: {name: default}\nspec: {vxlanVNI: 16777216}",
			[]string{`spec.vxlanVNI: must be between 1 and 16777215, got 16777216`}},
		{"config port type", "apiVersion: calyx.io/v1\nkind: Config\nmetadata: {name: default}\nspec: {vxlanPort: '4789'}",
			[]string{`spec.vxlanPort: must be an integer between 1 and 65535, got "4789"`}},
		{"config metadata address", "apiVersion: calyx.io/v1\nkind: Config\nmetadata: {name: default}\nspec: {metadataAddress: 'localhost:8775'}",
			[]string{`spec.metadataAddress: "localhost:8775" is not a valid IP:port address`}},
		{"config action", "apiVersion: calyx.io/v1\nkind: Config\nmetadata: {name: default}\nspec: {endpointToHostAction: Reject}",
			[]string{`spec.endpointToHostAction: must be one of Drop, Accept, Return, got "Reject"`}},
		{"config NAT ports, privileged", "apiVersion: calyx.io/v1\nkind: Config\nmetadata: {name: default}\nspec: {natPortRange: '80:5000'}",
			[]string{`spec.natPortRange: "80:5000": MIN 80 is a privileged port: use 1024 or more`}},
		{"config NAT ports, too few", "apiVersion: calyx.io/v1\nkind: Config\nmetadata: {name: default}\nspec: {natPortRange: '30000:30099'}",
			[]string{`spec.natPortRange: "30000:30099": 100 ports: use at least 1024`}},
		{"config NAT ports, reversed", "apiVersion: calyx.io/v1\nkind: Config\nmetadata: {name: default}\nspec: {natPortRange: '40000:30000'}",
			[]string{`spec.natPortRange: "40000:30000": MAX 30000 is below MIN 40000`}},
		{"config NAT ports, a dash", "apiVersion: calyx.io/v1\nkind: Config\nmetadata: {name: default}\nspec: {natPortRange: '20000-29999'}",
			[]string{`spec.natPortRange: "20000-29999": want MIN:MAX, e.g. 20000:29999`}},
		{"yaml syntax", poolHead + "spec: {cidr: [}\n",
			[]string{`document 1: yaml: line`}},
		{"later document numbered", poolHead + "spec: {cidr: 10.0.0.0/16}\n---\n---\n" + poolHead + "spec: {cidr: 10.0.0.0/16, blockSize: 40}",
			[]string{`document 3 (IPPool/p1): spec.blockSize: must be between 20 and 32 for IPv4, got 40`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs, err := Decode(strings.NewReader(tt.doc))
			if err == nil {
				t.Fatalf("no error; decoded %v", rs)
			}
			if rs != nil {
				t.Errorf("resources returned along with an error: %v", rs)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error\n%s\ndoes not contain\n%s", err, w)
				}
			}
		})
	}
}

func TestDecodeReportsEveryProblemAndNoNoise(t *testing.T) {
	doc := wepHead + `spec:
  node: n1
  interface: tap1
  mac: 0
  color: red
  ipNetworks: [10.0.0.300/32, 10.0.0.2/24]
`
	_, err := Decode(strings.NewReader(doc))
	if err == nil {
		t.Fatal("no error")
	}
	verrs := ValidationErrors(err)
	got := map[string]string{}
	for _, v := range verrs {
		if v.Document != 1 || v.Ref != (Ref{KindWorkloadEndpoint, "web-1"}) {
			t.Errorf("error %q has document %d ref %v", v, v.Document, v.Ref)
		}
		if _, dup := got[v.Path]; dup {
			t.Errorf("two errors for %s: %q and %q", v.Path, got[v.Path], v.Reason)
		}
		got[v.Path] = v.Reason
	}
	for _, p := range []string{"spec.mac", "spec.color", "spec.ipNetworks[0]", "spec.ipNetworks[1]"} {
		if _, ok := got[p]; !ok {
			t.Errorf("no error for %s; got %v", p, got)
		}
	}
	if len(got) != 4 {
		t.Errorf("want 4 errors, got %v", got)
	}
	if n := strings.Count(err.Error(), "\n"); n != 3 {
		t.Errorf("want one error per line, got:\n%s", err)
	}
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Error("errors.As cannot find a *ValidationError")
	}
}

func TestValidateProgrammatic(t *testing.T) {
	// Zero values with defaults are accepted without ApplyDefaults.
	p := &IPPool{Metadata: Metadata{Name: "p"}, Spec: IPPoolSpec{CIDR: netip.MustParsePrefix("10.0.0.0/16")}}
	if err := Validate(p); err != nil {
		t.Fatal(err)
	}
	c := &Config{Metadata: Metadata{Name: "default"}}
	if err := Validate(c); err != nil {
		t.Fatal(err)
	}
	w := &WorkloadEndpoint{Metadata: Metadata{Name: "w"}, Spec: WorkloadEndpointSpec{Node: "n", Interface: "tap0",
		IPNetworks: []netip.Prefix{netip.MustParsePrefix("10.0.0.1/32")}, MAC: net.HardwareAddr{0, 0, 0, 0, 0, 0}}}
	err := Validate(w)
	if err == nil || err.Error() != "WorkloadEndpoint/w: spec.mac: must not be all zeros" {
		t.Fatalf("got %v", err)
	}
}

func TestApplyDefaultsIdempotent(t *testing.T) {
	for _, r := range sampleResources() {
		c := deepCopy(r)
		ApplyDefaults(c)
		if !reflect.DeepEqual(c, r) {
			t.Errorf("%s: ApplyDefaults changed an already defaulted resource", RefOf(r))
		}
	}
}

// defaultMapSizes is every map-size setting at its default but those given.
func defaultMapSizes(set map[string]uint32) map[string]uint32 {
	out := map[string]uint32{}
	for _, ms := range MapSizeSettings {
		out[ms.Key] = ms.Default
		if v, ok := set[ms.Key]; ok {
			out[ms.Key] = v
		}
	}
	return out
}

// An IPv6 pool may use ipipMode: 6in4 (protocol 41) on an IPv4 underlay,
// IPv6-in-IPv6 on an IPv6 one.
func TestDecodeIPv6PoolIPIP(t *testing.T) {
	for _, mode := range []EncapMode{EncapAlways, EncapCrossSubnet} {
		rs, err := Decode(strings.NewReader(poolHead + "spec: {cidr: '2001:db8:a41:3::/64', ipipMode: " + string(mode) + "}"))
		if err != nil {
			t.Fatalf("ipipMode %s on an IPv6 pool: %v", mode, err)
		}
		if p, ok := rs[0].(*IPPool); !ok || p.Spec.IPIPMode != mode || p.Spec.BlockSize != DefaultBlockSizeV6 && p.Spec.BlockSize != 0 {
			t.Errorf("decoded %+v", rs[0])
		}
	}
}
