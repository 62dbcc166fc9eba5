package agent

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/calyxnet/calyx/agent/bgp"
	"github.com/calyxnet/calyx/agent/bgpstatus"
	"github.com/calyxnet/calyx/model"
)

const bgpModel = `apiVersion: calyx.io/v1
kind: IPPool
metadata: {name: pods}
spec: {cidr: 10.65.0.0/16}
---
apiVersion: calyx.io/v1
kind: IPPool
metadata: {name: fips}
spec: {cidr: 198.51.100.0/24, external: true}
---
apiVersion: calyx.io/v1
kind: Node
metadata: {name: host-a}
spec: {ipv4Address: 10.30.0.11/24}
---
apiVersion: calyx.io/v1
kind: Node
metadata: {name: host-c}
spec: {ipv4Address: 10.30.1.13/24}
---
apiVersion: calyx.io/v1
kind: WorkloadEndpoint
metadata: {name: wa}
spec: {node: host-a, interface: cxw1, ipNetworks: [10.65.1.2/32]}
---
apiVersion: calyx.io/v1
kind: WorkloadEndpoint
metadata: {name: wc}
spec: {node: host-c, interface: cxw3, ipNetworks: [10.65.3.2/32]}
---
apiVersion: calyx.io/v1
kind: FloatingIP
metadata: {name: fip-wc}
spec: {ip: 198.51.100.30, endpoint: wc}
---
apiVersion: calyx.io/v1
kind: BGPConfiguration
metadata: {name: default}
spec:
  communities: [{name: fips, value: "64512:7"}]
  prefixAdvertisements: [{cidr: 198.51.100.0/24, communities: [fips]}]
---
apiVersion: calyx.io/v1
kind: BGPPeer
metadata: {name: gateway}
spec: {peerIP: 10.30.0.254, asNumber: 65000}
---
apiVersion: calyx.io/v1
kind: BGPPeer
metadata: {name: tor-c}
spec: {peerIP: 10.30.1.1, asNumber: 65000, node: host-c, sourceAddress: None}
`

func bgpSnapshot(t *testing.T) *model.Snapshot {
	t.Helper()
	rs, err := model.Decode(strings.NewReader(bgpModel))
	if err != nil {
		t.Fatal(err)
	}
	s := model.NewSnapshot()
	for _, r := range rs {
		s.Put(r)
	}
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	return s
}

// What each node advertises comes from one pass over the model, with the
// prefixAdvertisements' communities resolved.
func TestAdvertiseInputs(t *testing.T) {
	in := advertiseInputs(bgpSnapshot(t))
	got := map[string][]bgp.Advertisement{}
	for n, i := range in {
		got[n] = bgp.Advertise(*i)
	}
	a, c := netip.MustParseAddr("10.30.0.11"), netip.MustParseAddr("10.30.1.13")
	want := map[string][]bgp.Advertisement{
		"host-a": {{Prefix: netip.MustParsePrefix("10.65.1.2/32"), NextHop: a}},
		"host-c": {{Prefix: netip.MustParsePrefix("10.65.3.2/32"), NextHop: c},
			{Prefix: netip.MustParsePrefix("198.51.100.30/32"), NextHop: c, Communities: []uint32{64512<<16 | 7}}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v\nwant %v", got, want)
	}
}

// Sessions start from the node's address unless sourceAddress is None; an
// eBGP peer off the node's subnet gets a multihop session.
func TestBGPPeersSourceAndMultihop(t *testing.T) {
	s := bgpSnapshot(t)
	st, err := model.BGPSettingsFor(s, "host-c")
	if err != nil {
		t.Fatal(err)
	}
	peers, errs := bgpPeers(st, s.Nodes["host-c"])
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	byAddr := map[string]bgp.Peer{}
	for _, p := range peers {
		byAddr[p.Address.String()] = p
	}
	if p := byAddr["10.30.0.254"]; p.Multihop != multihopTTL || p.LocalAddress != netip.MustParseAddr("10.30.1.13") || p.Type != bgp.PeerTypeGlobal {
		t.Errorf("gateway beyond the router: %+v", p)
	}
	if p := byAddr["10.30.1.1"]; p.Multihop != 0 || p.LocalAddress.IsValid() || p.Type != bgp.PeerTypeNodeSpecific {
		t.Errorf("ToR on the node's subnet, sourceAddress None: %+v", p)
	}
	if p := byAddr["10.30.0.11"]; p.Multihop != 0 || p.Type != bgp.PeerTypeMesh || !p.Passive {
		t.Errorf("mesh peer (iBGP, no multihop setting; lower address, so it dials): %+v", p)
	}
	if p := byAddr["10.30.0.254"]; p.Passive {
		t.Errorf("a gateway is always dialled: %+v", p)
	}
	// host-a (10.30.0.11) dials host-c (10.30.1.13): the lower address connects.
	stA, err := model.BGPSettingsFor(s, "host-a")
	if err != nil {
		t.Fatal(err)
	}
	peersA, _ := bgpPeers(stA, s.Nodes["host-a"])
	mesh := 0
	for _, p := range peersA {
		if p.Type == bgp.PeerTypeMesh {
			mesh++
			if p.Passive {
				t.Errorf("host-a, the lowest address, waits for mesh peer %s", p.Address)
			}
		}
	}
	if mesh == 0 {
		t.Errorf("host-a has no mesh peers: %+v", peersA)
	}
	st.Peers = append(st.Peers, model.BGPPeerSettings{Address: netip.MustParseAddr("10.30.0.9"), ASNumber: 65001, Name: "nofile", PasswordFile: "/nonexistent/calyx-password"})
	peers, errs = bgpPeers(st, s.Nodes["host-c"])
	if len(peers) != 3 || len(errs) != 1 || !strings.Contains(errs[0], "peer 10.30.0.9 (nofile): password file") {
		t.Errorf("unreadable password file: %d peers, errors %q", len(peers), errs)
	}
}

// IPv4 sessions carry IPv6 unicast (MP-BGP) when the node has an
// ipv6Address, and with other nodes always; an IPv6 session is IPv6 only.
func TestBGPPeersIPv6Unicast(t *testing.T) {
	s := bgpSnapshot(t)
	peersOf := func() map[string]bgp.Peer {
		t.Helper()
		st, err := model.BGPSettingsFor(s, "host-c")
		if err != nil {
			t.Fatal(err)
		}
		peers, errs := bgpPeers(st, s.Nodes["host-c"])
		if len(errs) > 0 {
			t.Fatal(errs)
		}
		out := map[string]bgp.Peer{}
		for _, p := range peers {
			out[p.Address.String()] = p
		}
		return out
	}
	for a, want := range map[string]bool{"10.30.0.254": false, "10.30.1.1": false, "10.30.0.11": true} {
		if p := peersOf()[a]; p.IPv6Unicast != want {
			t.Errorf("node without IPv6: %s ipv6Unicast %v, want %v", a, p.IPv6Unicast, want)
		}
	}
	for name, v6 := range map[string]string{"host-c": "2001:db8:a41:ff::13/64", "host-a": "2001:db8:a41:ff::11/64"} {
		n := *s.Nodes[name]
		n.Spec.IPv6Address = netip.MustParsePrefix(v6)
		s.Put(&n)
	}
	s.Put(&model.BGPPeer{Metadata: model.Metadata{Name: "gateway6"}, Spec: model.BGPPeerSpec{PeerIP: netip.MustParseAddr("2001:db8:a41:ff::fe"), ASNumber: 65000}})
	got := peersOf()
	for a, want := range map[string]bool{"10.30.0.254": true, "10.30.1.1": true, "10.30.0.11": true, "2001:db8:a41:ff::11": false, "2001:db8:a41:ff::fe": false} {
		p, ok := got[a]
		if !ok || p.IPv6Unicast != want {
			t.Errorf("dual-stack node: %s %+v (present %v), want ipv6Unicast %v", a, p, ok, want)
		}
	}
	// The IPv6 sessions start from the node's IPv6 address.
	if p := got["2001:db8:a41:ff::fe"]; p.LocalAddress != netip.MustParseAddr("2001:db8:a41:ff::13") || p.Multihop != 0 {
		t.Errorf("IPv6 gateway on the node's IPv6 subnet: %+v", p)
	}
}

// A learned route goes to the kernel FIB only with a next hop of its own
// family.
func TestFIBNextHopProblem(t *testing.T) {
	for _, tc := range []struct {
		prefix, nh string
		ok         bool
	}{
		{"203.0.113.0/24", "10.30.0.254", true},
		{"2001:db8:a41:2::/64", "2001:db8:a41:ff::254", true},
		{"2001:db8:a41:2::/64", "::ffff:10.30.0.254", false},
		{"2001:db8:a41:2::/64", "10.30.0.254", false},
		{"203.0.113.0/24", "2001:db8:a41:ff::254", false},
		{"203.0.113.0/24", "", false},
	} {
		f := bgpstatus.FIBRoute{Prefix: netip.MustParsePrefix(tc.prefix)}
		if tc.nh != "" {
			f.NextHop = netip.MustParseAddr(tc.nh)
		}
		if got := fibNextHopProblem(f); (got == "") != tc.ok {
			t.Errorf("%s via %s: %q, want ok %v", tc.prefix, tc.nh, got, tc.ok)
		}
	}
}
