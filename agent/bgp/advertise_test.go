package bgp

import (
	"net/netip"
	"reflect"
	"testing"
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func ip(s string) netip.Addr    { return netip.MustParseAddr(s) }

func TestAdvertise(t *testing.T) {
	node, node6 := ip("192.168.1.10"), ip("fd00::10")
	pools := []Pool{
		{CIDR: pfx("10.244.0.0/16")},
		{CIDR: pfx("10.99.0.0/16"), DisableBGPExport: true},
		{CIDR: pfx("203.0.113.0/24"), External: true},
		{CIDR: pfx("fd10::/48")},
	}
	adv := func(p string, nh netip.Addr) Advertisement { return Advertisement{Prefix: pfx(p), NextHop: nh} }
	cases := []struct {
		name string
		in   AdvertiseInput
		want []Advertisement
	}{
		{"empty", AdvertiseInput{Node: node, Pools: pools}, []Advertisement{}},
		{"block and inside endpoint", AdvertiseInput{Node: node, Pools: pools,
			Blocks: []netip.Prefix{pfx("10.244.1.0/26")}, Endpoints: []netip.Addr{ip("10.244.1.5")}},
			[]Advertisement{adv("10.244.1.0/26", node)}},
		{"endpoint outside its blocks", AdvertiseInput{Node: node, Pools: pools,
			Blocks: []netip.Prefix{pfx("10.244.1.0/26")}, Endpoints: []netip.Addr{ip("10.244.7.9")}},
			[]Advertisement{adv("10.244.1.0/26", node), adv("10.244.7.9/32", node)}},
		{"disableBGPExport block, endpoint and floating IP", AdvertiseInput{Node: node, Pools: pools,
			Blocks: []netip.Prefix{pfx("10.99.1.0/26")}, Endpoints: []netip.Addr{ip("10.99.2.1")}, FloatingIPs: []netip.Addr{ip("10.99.3.3")}},
			[]Advertisement{}},
		{"external pool: only floating IPs", AdvertiseInput{Node: node, Pools: pools,
			Blocks: []netip.Prefix{pfx("203.0.113.0/26")}, Endpoints: []netip.Addr{ip("203.0.113.77")}, FloatingIPs: []netip.Addr{ip("203.0.113.5")}},
			[]Advertisement{adv("203.0.113.5/32", node)}},
		{"floating IP inside own block still a /32", AdvertiseInput{Node: node, Pools: pools,
			Blocks: []netip.Prefix{pfx("10.244.1.0/26")}, FloatingIPs: []netip.Addr{ip("10.244.1.9")}},
			[]Advertisement{adv("10.244.1.0/26", node), adv("10.244.1.9/32", node)}},
		{"ipv6 with and without Node6", AdvertiseInput{Node: node, Node6: node6, Pools: pools,
			Blocks: []netip.Prefix{pfx("fd10::/122")}, Endpoints: []netip.Addr{ip("fd10:0:0:1::5")}},
			[]Advertisement{adv("fd10::/122", node6), adv("fd10:0:0:1::5/128", node6)}},
		{"ipv6 without Node6 skipped", AdvertiseInput{Node: node, Pools: pools, Blocks: []netip.Prefix{pfx("fd10::/122")}},
			[]Advertisement{}},
		{"duplicates and unmasked", AdvertiseInput{Node: node, Pools: pools,
			Blocks: []netip.Prefix{pfx("10.244.1.3/26"), pfx("10.244.1.0/26")}, FloatingIPs: []netip.Addr{ip("198.51.100.1"), ip("198.51.100.1")}},
			[]Advertisement{adv("10.244.1.0/26", node), adv("198.51.100.1/32", node)}},
		{"longest pool wins", AdvertiseInput{Node: node, Pools: append(pools, Pool{CIDR: pfx("10.244.128.0/17"), DisableBGPExport: true}),
			Blocks: []netip.Prefix{pfx("10.244.1.0/26"), pfx("10.244.130.0/26")}},
			[]Advertisement{adv("10.244.1.0/26", node)}},
		{"communities of every prefixAdvertisement containing the route", AdvertiseInput{Node: node, Pools: pools,
			Blocks: []netip.Prefix{pfx("10.244.1.0/26"), pfx("10.244.200.0/26")}, FloatingIPs: []netip.Addr{ip("203.0.113.5")},
			Communities: []PrefixCommunities{
				{Prefix: pfx("10.244.0.0/16"), Communities: []string{"65000:100", "64512:1:2"}},
				{Prefix: pfx("10.244.1.0/24"), Communities: []string{"65000:100", "65000:200"}},
				{Prefix: pfx("10.244.1.0/28"), Communities: []string{"1:1"}}, // narrower than the block
				{Prefix: pfx("203.0.113.5/32"), Communities: []string{"65535:65535", "bad", "70000:1"}},
			}},
			[]Advertisement{
				{Prefix: pfx("10.244.1.0/26"), NextHop: node, Communities: []uint32{65000<<16 | 100, 65000<<16 | 200}, LargeCommunities: [][3]uint32{{64512, 1, 2}}},
				{Prefix: pfx("10.244.200.0/26"), NextHop: node, Communities: []uint32{65000<<16 | 100}, LargeCommunities: [][3]uint32{{64512, 1, 2}}},
				{Prefix: pfx("203.0.113.5/32"), NextHop: node, Communities: []uint32{0xffffffff}},
			}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := Advertise(c.in)
			if !reflect.DeepEqual(got, c.want) {
				t.Errorf("got %v\nwant %v", got, c.want)
			}
		})
	}
}

func TestSplitLearned(t *testing.T) {
	pools := []Pool{{CIDR: pfx("10.244.0.0/16")}, {CIDR: pfx("203.0.113.0/24"), External: true}}
	gw, n2, n3 := ip("192.168.1.1"), ip("192.168.1.2"), ip("192.168.1.3")
	learned := []Route{
		{Prefix: pfx("0.0.0.0/0"), NextHop: gw, Peer: gw},
		{Prefix: pfx("10.0.0.0/8"), NextHop: gw, Peer: gw},      // a supernet of a pool: underlay
		{Prefix: pfx("10.244.2.0/26"), NextHop: n2, Peer: n2},   // agrees
		{Prefix: pfx("10.244.3.0/26"), NextHop: n2, Peer: n2},   // datastore says n3
		{Prefix: pfx("203.0.113.5/32"), NextHop: n3, Peer: gw},  // unknown to the datastore
		{Prefix: pfx("198.51.100.0/24"), NextHop: gw, Peer: gw}, // external network
	}
	expected := []Advertisement{
		{Prefix: pfx("10.244.2.0/26"), NextHop: n2},
		{Prefix: pfx("10.244.3.0/26"), NextHop: n3},
		{Prefix: pfx("10.244.4.0/26"), NextHop: n3}, // not learned
	}
	dis, fib := SplitLearned(learned, pools, expected)
	wantDis := []Disagreement{
		{Prefix: pfx("10.244.3.0/26"), Learned: n2, Peer: n2, Expected: n3},
		{Prefix: pfx("10.244.4.0/26"), Expected: n3},
		{Prefix: pfx("203.0.113.5/32"), Learned: n3, Peer: gw},
	}
	wantFIB := []FIBRoute{
		{Prefix: pfx("0.0.0.0/0"), NextHop: gw},
		{Prefix: pfx("10.0.0.0/8"), NextHop: gw},
		{Prefix: pfx("198.51.100.0/24"), NextHop: gw},
	}
	if !reflect.DeepEqual(dis, wantDis) {
		t.Errorf("disagreements %v\nwant %v", dis, wantDis)
	}
	if !reflect.DeepEqual(fib, wantFIB) {
		t.Errorf("fib %v\nwant %v", fib, wantFIB)
	}
	if d, f := SplitLearned(nil, pools, nil); d != nil || f != nil {
		t.Errorf("empty: %v %v", d, f)
	}
}
