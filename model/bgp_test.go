package model

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

func bgpConfiguration(mod ...func(*BGPConfigurationSpec)) *BGPConfiguration {
	c := &BGPConfiguration{Metadata: Metadata{Name: BGPConfigurationName}}
	for _, m := range mod {
		m(&c.Spec)
	}
	ApplyDefaults(c)
	return c
}

func bgpPeer(name, ip string, as uint32, mod ...func(*BGPPeerSpec)) *BGPPeer {
	p := &BGPPeer{Metadata: Metadata{Name: name}, Spec: BGPPeerSpec{PeerIP: netip.MustParseAddr(ip), ASNumber: as}}
	for _, m := range mod {
		m(&p.Spec)
	}
	ApplyDefaults(p)
	return p
}

const (
	bgpConfigHead = "apiVersion: calyx.io/v1\nkind: BGPConfiguration\nmetadata: {name: default}\n"
	bgpPeerHead   = "apiVersion: calyx.io/v1\nkind: BGPPeer\nmetadata: {name: gw}\n"
)

func TestDecodeBGP(t *testing.T) {
	got := decodeOne(t, bgpConfigHead+`spec:
  asNumber: 65000
  nodeToNodeMeshEnabled: false
  listenPort: 1790
  logSeverityScreen: Warning
  communities: [{name: dc-only, value: "65000:100"}]
  prefixAdvertisements: [{cidr: 10.65.0.0/16, communities: [dc-only, "65000:1:2"]}]
  gracefulRestartSeconds: 300
`)
	off := false
	want := &BGPConfiguration{Metadata: Metadata{Name: "default"}, Spec: BGPConfigurationSpec{
		ASNumber: 65000, NodeToNodeMeshEnabled: &off, ListenPort: 1790, LogSeverityScreen: "Warning",
		Communities:            []Community{{"dc-only", "65000:100"}},
		PrefixAdvertisements:   []PrefixAdvertisement{{netip.MustParsePrefix("10.65.0.0/16"), []string{"dc-only", "65000:1:2"}}},
		GracefulRestartSeconds: 300,
	}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %#v\nwant %#v", got, want)
	}
	c := decodeOne(t, bgpConfigHead).(*BGPConfiguration)
	if c.Spec.ASNumber != 64512 || !c.Spec.MeshEnabled() || c.Spec.ListenPort != 179 || c.Spec.LogSeverityScreen != "Info" || c.Spec.GracefulRestartSeconds != 120 {
		t.Fatalf("defaults: %+v", c.Spec)
	}
	// asdot, as Calico accepts it.
	if c := decodeOne(t, bgpConfigHead+"spec: {asNumber: '1.10'}").(*BGPConfiguration); c.Spec.ASNumber != 65546 {
		t.Fatalf("asdot 1.10 = %d", c.Spec.ASNumber)
	}

	p := decodeOne(t, bgpPeerHead+"spec: {peerIP: 192.0.2.1, asNumber: 64600, nodeSelector: \"rack == 'a'\", password: {file: /etc/calyx/gw.key}, keepNextHop: true}").(*BGPPeer)
	wantPeer := &BGPPeer{Metadata: Metadata{Name: "gw"}, Spec: BGPPeerSpec{PeerIP: netip.MustParseAddr("192.0.2.1"), ASNumber: 64600,
		NodeSelector: "rack == 'a'", Password: &BGPPassword{File: "/etc/calyx/gw.key"}, SourceAddress: SourceUseNodeIP, KeepNextHop: true}}
	if !reflect.DeepEqual(p, wantPeer) {
		t.Fatalf("got  %#v\nwant %#v", p, wantPeer)
	}

	n := decodeOne(t, "apiVersion: calyx.io/v1\nkind: Node\nmetadata: {name: rr1}\nspec: {ipv4Address: 10.30.0.10/24, asNumber: 65001, routeReflectorClusterID: 224.0.0.1}").(*Node)
	if n.Spec.ASNumber != 65001 || n.Spec.RouteReflectorClusterID != netip.MustParseAddr("224.0.0.1") {
		t.Fatalf("node: %+v", n.Spec)
	}
	ip := decodeOne(t, "apiVersion: calyx.io/v1\nkind: IPPool\nmetadata: {name: private}\nspec: {cidr: 10.99.0.0/16, disableBGPExport: true}").(*IPPool)
	if !ip.Spec.DisableBGPExport {
		t.Fatal("disableBGPExport: true not read")
	}
}

func TestBGPShape(t *testing.T) {
	b, _ := json.Marshal(bgpConfiguration())
	want := `{"apiVersion":"calyx.io/v1","kind":"BGPConfiguration","metadata":{"name":"default"},"spec":{"asNumber":64512,"nodeToNodeMeshEnabled":true,` +
		`"listenPort":179,"logSeverityScreen":"Info","gracefulRestartSeconds":120}}`
	if string(b) != want {
		t.Fatalf("got  %s\nwant %s", b, want)
	}
	b, _ = json.Marshal(bgpPeer("gw", "192.0.2.1", 64600, func(s *BGPPeerSpec) { s.Password = &BGPPassword{Value: "x"} }))
	want = `{"apiVersion":"calyx.io/v1","kind":"BGPPeer","metadata":{"name":"gw"},"spec":{"peerIP":"192.0.2.1","asNumber":64600,` +
		`"password":{"value":"x"},"sourceAddress":"UseNodeIP","keepNextHop":false}}`
	if string(b) != want {
		t.Fatalf("got  %s\nwant %s", b, want)
	}
	var y bytes.Buffer
	if err := Encode(&y, bgpPeer("tor", "2001:db8::1", 65010, func(s *BGPPeerSpec) { s.Node = "host-a" })); err != nil {
		t.Fatal(err)
	}
	wantYAML := "apiVersion: calyx.io/v1\nkind: BGPPeer\nmetadata:\n  name: tor\nspec:\n  peerIP: 2001:db8::1\n  asNumber: 65010\n  node: host-a\n  sourceAddress: UseNodeIP\n  keepNextHop: false\n"
	if y.String() != wantYAML {
		t.Fatalf("got\n%s\nwant\n%s", y.String(), wantYAML)
	}
}

func TestDecodeBGPErrors(t *testing.T) {
	tests := []struct {
		name, doc string
		want      []string
	}{
		{"config name", "apiVersion: calyx.io/v1\nkind: BGPConfiguration\nmetadata: {name: node.host-a}\n",
			[]string{`BGPConfiguration/node.host-a): metadata.name: must be "default", got "node.host-a": there is one BGPConfiguration, shared by every node; ` +
				`a node's own AS is its Node.spec.asNumber (Calico's per-node "node.<name>" configurations are not supported)`}},
		{"as zero", bgpConfigHead + "spec: {asNumber: 0}",
			[]string{`spec.asNumber: 0 is reserved and cannot be an AS number (RFC 7607); give one between 1 and 4294967295, or omit it`}},
		{"as too big", bgpConfigHead + "spec: {asNumber: 4294967296}",
			[]string{`spec.asNumber: must be between 1 and 4294967295 (AS numbers are 32 bits, RFC 6793), got 4294967296`}},
		{"as negative", bgpConfigHead + "spec: {asNumber: -1}", []string{`spec.asNumber: must be between 1 and 4294967295`}},
		{"as trans", bgpConfigHead + "spec: {asNumber: 23456}", []string{`spec.asNumber: 23456 is AS_TRANS`}},
		{"as words", bgpConfigHead + "spec: {asNumber: private}",
			[]string{`spec.asNumber: "private" is not an AS number: write it as a number (64512) or in asdot form (1.10 for 65546)`}},
		{"listen port", bgpConfigHead + "spec: {listenPort: 70000}",
			[]string{`spec.listenPort: must be a TCP port between 1 and 65535, got 70000 (omit it for 179, BGP's port)`}},
		{"listen port zero", bgpConfigHead + "spec: {listenPort: 0}", []string{`spec.listenPort: must be a TCP port between 1 and 65535, got 0`}},
		{"graceful restart", bgpConfigHead + "spec: {gracefulRestartSeconds: 5000}",
			[]string{`spec.gracefulRestartSeconds: must be between 1 and 4095 seconds, got 5000: the graceful restart capability carries the restart time in 12 bits (RFC 4724); omit it for 120`}},
		{"severity", bgpConfigHead + "spec: {logSeverityScreen: info}",
			[]string{`spec.logSeverityScreen: "info" is not a log severity: want one of Debug, Info, Warning, Error, Fatal (did you mean "Info"?)`}},
		{"community value", bgpConfigHead + "spec: {communities: [{name: a, value: '65536:1'}, {name: a, value: '1:2'}, {name: 'x:y', value: '1:2:3'}]}",
			[]string{`spec.communities[0].value: "65536:1" is not a community: write "aa:nn" (a standard community: two numbers up to 65535`,
				`spec.communities[1].name: "a" is already the name of spec.communities[0]`,
				`spec.communities[2].name: "x:y" contains ':'`}},
		{"advertisement", bgpConfigHead + "spec: {communities: [{name: a, value: '1:2'}], prefixAdvertisements: [{cidr: 10.0.0.1/8, communities: [a, b]}, {cidr: 10.1.0.0/16}]}",
			[]string{`spec.prefixAdvertisements[0].cidr: 10.0.0.1/8 has host bits set; did you mean 10.0.0.0/8?`,
				`spec.prefixAdvertisements[0].communities[1]: "b" names no community in spec.communities (defined: a) and is not a value "aa:nn"`,
				`spec.prefixAdvertisements[1].communities: required`}},
		{"services", bgpConfigHead + "spec: {serviceClusterIPs: [{cidr: 10.96.0.0/12}]}",
			[]string{`spec.serviceClusterIPs: not supported: calyx has no Kubernetes services to advertise`}},

		{"peer without address", bgpPeerHead + "spec: {asNumber: 64600}",
			[]string{`BGPPeer/gw): spec.peerIP: required (the peer router's address, e.g. 192.0.2.1 or 2001:db8::1)`}},
		{"peer with port", bgpPeerHead + "spec: {peerIP: '192.0.2.1:1790', asNumber: 64600}",
			[]string{`spec.peerIP: "192.0.2.1:1790" has a port: give the peer's address alone (write 192.0.2.1); sessions use BGP's TCP port 179`}},
		{"peer v6 with port", bgpPeerHead + "spec: {peerIP: '[2001:db8::1]:179', asNumber: 64600}",
			[]string{`(write 2001:db8::1)`}},
		{"peer with prefix", bgpPeerHead + "spec: {peerIP: 192.0.2.1/24, asNumber: 64600}",
			[]string{`spec.peerIP: "192.0.2.1/24" is not a valid IP address: give the address alone, without a prefix length (write 192.0.2.1)`}},
		{"peer link-local", bgpPeerHead + "spec: {peerIP: 'fe80::1', asNumber: 64600}",
			[]string{`spec.peerIP: fe80::1 is a link-local address, which names no router without an interface`}},
		{"peer multicast", bgpPeerHead + "spec: {peerIP: 224.0.0.5, asNumber: 64600}",
			[]string{`spec.peerIP: 224.0.0.5 is a multicast address, not a router's address`}},
		{"peer without as", bgpPeerHead + "spec: {peerIP: 192.0.2.1}",
			[]string{`spec.asNumber: required (the peer's AS number; the same as the node's for iBGP, another for eBGP)`}},
		{"node and selector", bgpPeerHead + "spec: {peerIP: 192.0.2.1, asNumber: 64600, node: host-a, nodeSelector: all()}",
			[]string{`spec: node and nodeSelector cannot both be given: node names one node, nodeSelector chooses nodes by their labels`}},
		{"bad selector", bgpPeerHead + "spec: {peerIP: 192.0.2.1, asNumber: 64600, nodeSelector: 'rack =='}",
			[]string{`spec.nodeSelector: invalid selector "rack ==": at column`}},
		{"bad node", bgpPeerHead + "spec: {peerIP: 192.0.2.1, asNumber: 64600, node: Host_A}",
			[]string{`spec.node: "Host_A" is not a valid node name`}},
		{"password both", bgpPeerHead + "spec: {peerIP: 192.0.2.1, asNumber: 64600, password: {value: x, file: /k}}",
			[]string{`spec.password: value and file cannot both be given`}},
		{"password empty", bgpPeerHead + "spec: {peerIP: 192.0.2.1, asNumber: 64600, password: {}}",
			[]string{`spec.password: give value: <the password> or file: <absolute path of a file holding it>, or omit password for a session without TCP MD5`}},
		{"password relative file", bgpPeerHead + "spec: {peerIP: 192.0.2.1, asNumber: 64600, password: {file: gw.key}}",
			[]string{`spec.password.file: "gw.key" is relative: give an absolute path`}},
		{"password secret", bgpPeerHead + "spec: {peerIP: 192.0.2.1, asNumber: 64600, password: {secretKeyRef: {name: bgp, key: gw}}}",
			[]string{`spec.password.secretKeyRef: Kubernetes secrets are not available to calyx: give the password as value: <the password> or file:`}},
		{"source address", bgpPeerHead + "spec: {peerIP: 192.0.2.1, asNumber: 64600, sourceAddress: usenodeip}",
			[]string{`spec.sourceAddress: "usenodeip": want UseNodeIP (the session's source is the node's underlay address, the default) or None (the kernel chooses) (did you mean "UseNodeIP"?)`}},
		{"calico's next hop", bgpPeerHead + "spec: {peerIP: 192.0.2.1, asNumber: 64600, keepOriginalNextHop: true}",
			[]string{`spec.keepOriginalNextHop: calyx spells Calico's keepOriginalNextHop as keepNextHop`}},
		{"peer selector", bgpPeerHead + "spec: {peerIP: 192.0.2.1, asNumber: 64600, peerSelector: has(rr)}",
			[]string{`spec.peerSelector: not supported: calyx peers its own nodes itself`}},

		{"node as zero", "apiVersion: calyx.io/v1\nkind: Node\nmetadata: {name: n1}\nspec: {ipv4Address: 10.30.0.10/24, asNumber: 0}",
			[]string{`Node/n1): spec.asNumber: 0 is reserved`}},
		{"cluster id v6", "apiVersion: calyx.io/v1\nkind: Node\nmetadata: {name: n1}\nspec: {ipv4Address: 10.30.0.10/24, routeReflectorClusterID: 'fd00::1'}",
			[]string{`spec.routeReflectorClusterID: fd00::1 is not IPv4: a cluster ID is a 32-bit number written as an IPv4 address, e.g. 224.0.0.1`}},
		{"cluster id zero", "apiVersion: calyx.io/v1\nkind: Node\nmetadata: {name: n1}\nspec: {ipv4Address: 10.30.0.10/24, routeReflectorClusterID: 0.0.0.0}",
			[]string{`spec.routeReflectorClusterID: 0.0.0.0 is no cluster ID`}},
		{"cluster id word", "apiVersion: calyx.io/v1\nkind: Node\nmetadata: {name: n1}\nspec: {ipv4Address: 10.30.0.10/24, routeReflectorClusterID: rr1}",
			[]string{`spec.routeReflectorClusterID: "rr1" is not a valid IP address`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs, err := Decode(strings.NewReader(tt.doc))
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

func TestValidateBGPAcrossResources(t *testing.T) {
	labeled := func(n *Node, k, v string) *Node { n.Metadata.Labels = map[string]string{k: v}; return n }
	onNode := func(n string) func(*BGPPeerSpec) { return func(s *BGPPeerSpec) { s.Node = n } }
	sel := func(x string) func(*BGPPeerSpec) { return func(s *BGPPeerSpec) { s.NodeSelector = x } }
	nodes := []Resource{labeled(node("a", "10.30.0.10/24"), "rack", "1"), labeled(node("b", "10.30.0.11/24"), "rack", "2")}
	tests := []struct {
		name    string
		rs      []Resource
		changed []Ref
		want    []string // the whole errors, in order; none for valid
	}{
		{"peer naming a node yet to register", []Resource{bgpPeer("gw", "192.0.2.1", 64600, onNode("later"))}, nil, nil},
		{"same peerIP on disjoint nodes", append(nodes[:2:2],
			bgpPeer("gw-a", "192.0.2.1", 64600, onNode("a")), bgpPeer("gw-b", "192.0.2.1", 64600, sel("rack == '2'"))), nil, nil},
		{"peerIP is a node's address", append(nodes[:2:2], bgpPeer("gw", "10.30.0.11", 64600)), nil,
			[]string{"BGPPeer/gw: spec.peerIP: 10.30.0.11 is the underlay address of Node/b (spec.ipv4Address), which calyx peers with already: " +
				"nodes peer with each other over the node-to-node mesh, or through route reflectors (Node.spec.routeReflectorClusterID); " +
				"a BGPPeer is a router outside calyx, such as the data center's gateway"}},
		{"a node takes a peer's address", append(nodes[:2:2], bgpPeer("gw", "10.30.0.11", 64600)), []Ref{{KindNode, "b"}},
			[]string{"Node/b: spec.ipv4Address: 10.30.0.11 is the peerIP of BGPPeer/gw, but a node's address cannot be a BGPPeer: calyx nodes peer with each other " +
				"already (the node-to-node mesh, or route reflectors chosen by spec.routeReflectorClusterID); delete the BGPPeer or give the node another address"}},
		{"two global peers", []Resource{bgpPeer("gw1", "192.0.2.1", 64600), bgpPeer("gw2", "192.0.2.1", 64601)}, nil,
			[]string{"BGPPeer/gw2: spec.peerIP: 192.0.2.1 is also the peerIP of BGPPeer/gw1, and both select every node: a node has one session per peer address; " +
				"merge the two, or make the nodes they select disjoint with node or nodeSelector"}},
		{"the earlier one changed", []Resource{bgpPeer("gw1", "192.0.2.1", 64600), bgpPeer("gw2", "192.0.2.1", 64601, onNode("a"))}, []Ref{{KindBGPPeer, "gw1"}},
			[]string{"BGPPeer/gw1: spec.peerIP: 192.0.2.1 is also the peerIP of BGPPeer/gw2, and both select Node/a: a node has one session per peer address; " +
				"merge the two, or make the nodes they select disjoint with node or nodeSelector"}},
		{"one node named twice, not registered", []Resource{bgpPeer("p1", "192.0.2.1", 64600, onNode("x")), bgpPeer("p2", "192.0.2.1", 64600, onNode("x"))}, nil,
			[]string{"BGPPeer/p2: spec.peerIP: 192.0.2.1 is also the peerIP of BGPPeer/p1, and both select Node/x"}},
		{"selectors meeting on a node", append(nodes[:2:2],
			bgpPeer("p1", "192.0.2.1", 64600, sel("rack == '2'")), bgpPeer("p2", "192.0.2.1", 64600, sel("has(rack)"))), nil,
			[]string{"BGPPeer/p2: spec.peerIP: 192.0.2.1 is also the peerIP of BGPPeer/p1, and both select Node/b"}},
		{"global and selector", []Resource{bgpPeer("p1", "192.0.2.1", 64600, sel("rack == '9'")), bgpPeer("p2", "192.0.2.1", 64600)}, nil,
			[]string{`BGPPeer/p2: spec.peerIP: 192.0.2.1 is also the peerIP of BGPPeer/p1, and both select the nodes matching "rack == '9'"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewSnapshot()
			for _, r := range tt.rs {
				s.Put(r)
			}
			changed := map[Ref]bool{}
			for _, r := range tt.changed {
				changed[r] = true
			}
			var got []string
			for _, e := range s.validate(changed) {
				got = append(got, e.Error())
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %d errors, want %d:\n%s", len(got), len(tt.want), strings.Join(got, "\n"))
			}
			for i := range got {
				if !strings.HasPrefix(got[i], tt.want[i]) {
					t.Errorf("error %d:\n%s\nwant it to start with\n%s", i, got[i], tt.want[i])
				}
			}
		})
	}
}

func TestBGPSettingsFor(t *testing.T) {
	dual := func(name, v4, v6 string) *Node {
		n := node(name, v4)
		n.Spec.IPv6Address = netip.MustParsePrefix(v6)
		return n
	}
	withAS := func(n *Node, as uint32) *Node { n.Spec.ASNumber = as; return n }
	reflector := func(n *Node) *Node { n.Spec.RouteReflectorClusterID = netip.MustParseAddr("224.0.0.1"); return n }
	meshOff := bgpConfiguration(func(s *BGPConfigurationSpec) { off := false; s.NodeToNodeMeshEnabled = &off })
	addr := netip.MustParseAddr
	mesh := func(ip, name string, as uint32, client bool) BGPPeerSettings {
		return BGPPeerSettings{Address: addr(ip), ASNumber: as, Type: PeerMesh, Name: name, SourceAddress: SourceUseNodeIP, RouteReflectorClient: client}
	}
	gw := bgpPeer("gateway", "192.0.2.1", 64600, func(s *BGPPeerSpec) { s.Password = &BGPPassword{File: "/etc/calyx/gw.key"} })
	gwWant := BGPPeerSettings{Address: addr("192.0.2.1"), ASNumber: 64600, Type: PeerGlobal, Name: "gateway", PasswordFile: "/etc/calyx/gw.key", SourceAddress: SourceUseNodeIP}

	type peers []BGPPeerSettings
	tests := []struct {
		name string
		rs   []Resource
		node string
		// want's Peers and the fields below are compared; the rest are
		// checked once.
		as    uint32
		rr    bool
		peers peers
	}{
		{"default mesh, dual stack where both have it", []Resource{
			dual("a", "10.30.0.10/24", "2001:db8::10/64"), dual("b", "10.30.0.11/24", "2001:db8::11/64"), withAS(node("c", "10.30.1.12/24"), 65001), gw,
			bgpPeer("tor-a", "10.30.0.1", 65010, func(s *BGPPeerSpec) {
				s.Node, s.Password, s.KeepNextHop, s.SourceAddress = "a", &BGPPassword{Value: "s3cret"}, true, SourceNone
			}),
			bgpPeer("tor-c", "10.30.1.1", 65010, func(s *BGPPeerSpec) { s.Node = "c" }),
		}, "a", 64512, false, peers{
			{Address: addr("10.30.0.1"), ASNumber: 65010, Type: PeerNodeSpecific, Name: "tor-a", Password: "s3cret", KeepNextHop: true, SourceAddress: SourceNone},
			mesh("10.30.0.11", "b", 64512, false),
			mesh("10.30.1.12", "c", 65001, false),
			gwWant,
			mesh("2001:db8::11", "b", 64512, false),
		}},
		{"a node's own AS; v4-only node gets no v6 mesh peers", []Resource{
			dual("a", "10.30.0.10/24", "2001:db8::10/64"), withAS(node("c", "10.30.1.12/24"), 65001), gw,
		}, "c", 65001, false, peers{mesh("10.30.0.10", "a", 64512, false), gwWant}},
		{"mesh off, no reflectors: only BGPPeers", []Resource{
			meshOff, node("a", "10.30.0.10/24"), node("b", "10.30.0.11/24"), gw,
		}, "a", 64512, false, peers{gwWant}},
		{"one reflector, mesh off: a client peers with the reflector only", []Resource{
			meshOff, reflector(node("rr", "10.30.0.2/24")), node("a", "10.30.0.10/24"), node("b", "10.30.0.11/24"), node("c", "10.30.1.12/24"),
		}, "b", 64512, false, peers{mesh("10.30.0.2", "rr", 64512, false)}},
		{"one reflector, mesh off: the reflector peers with every client", []Resource{
			meshOff, reflector(node("rr", "10.30.0.2/24")), node("a", "10.30.0.10/24"), node("b", "10.30.0.11/24"), node("c", "10.30.1.12/24"),
		}, "rr", 64512, true, peers{mesh("10.30.0.10", "a", 64512, true), mesh("10.30.0.11", "b", 64512, true), mesh("10.30.1.12", "c", 64512, true)}},
		{"two reflectors, mesh on: reflectors peer with each other, not as clients", []Resource{
			reflector(node("rr1", "10.30.0.2/24")), reflector(node("rr2", "10.30.0.3/24")), node("a", "10.30.0.10/24"), node("b", "10.30.0.11/24"),
		}, "rr1", 64512, true, peers{mesh("10.30.0.3", "rr2", 64512, false), mesh("10.30.0.10", "a", 64512, true), mesh("10.30.0.11", "b", 64512, true)}},
		{"two reflectors, mesh on: a client peers with both, not with the other client", []Resource{
			reflector(node("rr1", "10.30.0.2/24")), reflector(node("rr2", "10.30.0.3/24")), node("a", "10.30.0.10/24"), node("b", "10.30.0.11/24"),
		}, "a", 64512, false, peers{mesh("10.30.0.2", "rr1", 64512, false), mesh("10.30.0.3", "rr2", 64512, false)}},
		{"selector peers follow labels", []Resource{
			node("a", "10.30.0.10/24"), func() *Node {
				n := node("b", "10.30.0.11/24")
				n.Metadata.Labels = map[string]string{"rack": "2"}
				return n
			}(),
			bgpPeer("tor-2", "10.30.0.1", 65010, func(s *BGPPeerSpec) { s.NodeSelector = "rack == '2'" }),
		}, "b", 64512, false, peers{
			{Address: addr("10.30.0.1"), ASNumber: 65010, Type: PeerNodeSpecific, Name: "tor-2", SourceAddress: SourceUseNodeIP},
			mesh("10.30.0.10", "a", 64512, false),
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewSnapshot()
			for _, r := range tt.rs {
				s.Put(r)
			}
			if err := s.Validate(); err != nil {
				t.Fatalf("the model is invalid: %v", err)
			}
			got, err := BGPSettingsFor(s, tt.node)
			if err != nil {
				t.Fatal(err)
			}
			if got.Node != tt.node || got.ASNumber != tt.as || got.RouteReflector() != tt.rr || got.RouterID != s.Nodes[tt.node].Spec.IPv4Address.Addr() {
				t.Errorf("node %s AS %d reflector %v router ID %s", got.Node, got.ASNumber, got.RouteReflector(), got.RouterID)
			}
			if !reflect.DeepEqual(peers(got.Peers), tt.peers) {
				t.Errorf("peers:\n%s\nwant\n%s", fmtPeers(got.Peers), fmtPeers(tt.peers))
			}
		})
	}
}

// fmtPeers writes one peer a line.
func fmtPeers(ps []BGPPeerSettings) string {
	var b strings.Builder
	for _, p := range ps {
		j, _ := json.Marshal(p)
		b.Write(j)
		b.WriteString("\n")
	}
	return b.String()
}

func TestBGPSettingsForConfig(t *testing.T) {
	s := NewSnapshot()
	n := node("a", "10.30.0.10/24")
	s.Put(n)
	got, err := BGPSettingsFor(s, "a")
	if err != nil {
		t.Fatal(err)
	}
	if got.ASNumber != 64512 || got.ListenPort != 179 || got.GracefulRestartSeconds != 120 || got.LogSeverity != "Info" || !got.MeshEnabled ||
		got.RouteReflector() || len(got.Peers) != 0 {
		t.Fatalf("defaults without a BGPConfiguration: %+v", got)
	}
	s.Put(bgpConfiguration(func(c *BGPConfigurationSpec) {
		c.ASNumber, c.ListenPort, c.GracefulRestartSeconds, c.LogSeverityScreen = 65000, 1790, 300, "Debug"
		c.Communities = []Community{{"dc-only", "65000:100"}}
		c.PrefixAdvertisements = []PrefixAdvertisement{{netip.MustParsePrefix("10.65.0.0/16"), []string{"dc-only", "65000:1:2"}}}
	}))
	got, _ = BGPSettingsFor(s, "a")
	wantPA := []PrefixAdvertisement{{netip.MustParsePrefix("10.65.0.0/16"), []string{"65000:100", "65000:1:2"}}}
	if got.ASNumber != 65000 || got.ListenPort != 1790 || got.GracefulRestartSeconds != 300 || got.LogSeverity != "Debug" ||
		!reflect.DeepEqual(got.PrefixAdvertisements, wantPA) {
		t.Fatalf("from the BGPConfiguration: %+v", got)
	}
	// The stored configuration is left as it was.
	if s.BGPConfig.Spec.PrefixAdvertisements[0].Communities[0] != "dc-only" {
		t.Fatal("BGPSettingsFor changed the snapshot's BGPConfiguration")
	}

	if _, err := BGPSettingsFor(s, "nope"); err == nil || err.Error() != "Node/nope: not found" {
		t.Errorf("missing node: %v", err)
	}
	s.Put(&Node{Metadata: Metadata{Name: "v6"}, Spec: NodeSpec{IPv6Address: netip.MustParsePrefix("2001:db8::6/64")}})
	_, err = BGPSettingsFor(s, "v6")
	if want := "Node/v6: spec.ipv4Address: required for BGP: the router ID is a 32-bit number, which calyx takes from the node's IPv4 underlay address"; err == nil || err.Error() != want {
		t.Errorf("IPv6-only node: %v", err)
	}
}
