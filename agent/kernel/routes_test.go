package kernel

import (
	"net/netip"
	"os"
	"runtime"
	"slices"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/calyxnet/calyx/agent/host"
	testlab "github.com/calyxnet/calyx/tests/lab"
)

// inNewNetns runs fn on a thread in a namespace of its own, with n veth
// pairs up (veth is what the lab's kernel has; it may lack dummy), and
// passes the first ends' ifindexes; the namespace goes with the test
// (nothing holds it after).
func inNewNetns(t *testing.T, n int, fn func(ifindexes []int)) {
	if os.Geteuid() != 0 {
		testlab.SkipOrFailInCI(t, "not root: the route tests need a network namespace")
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	ns, err := netns.New()
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	defer func() {
		if err := netns.Set(orig); err != nil {
			panic(err) // the thread must not go back to the pool here
		}
	}()
	var idx []int
	for i := range n {
		name := "tap" + string(rune('a'+i))
		v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "-p"}
		if err := netlink.LinkAdd(v); err != nil {
			t.Fatalf("add veth: %v", err)
		}
		for _, n := range []string{name + "-p", name} {
			l, err := netlink.LinkByName(n)
			if err != nil {
				t.Fatal(err)
			}
			if err := netlink.LinkSetUp(l); err != nil {
				t.Fatal(err)
			}
			if n == name {
				idx = append(idx, l.Attrs().Index)
			}
		}
	}
	fn(idx)
}

// TestSyncLocalRoutesIPv6OnEveryInterface: one IPv6 address answered on
// several interfaces (fe80::1, fe80::a9fe:a9fe on every workload
// interface) is a route on each, and a second sync changes nothing.
func TestSyncLocalRoutesIPv6OnEveryInterface(t *testing.T) {
	inNewNetns(t, 3, func(ifs []int) {
		var want []host.LocalRoute
		for _, a := range []string{"fe80::1", "fe80::a9fe:a9fe"} {
			for _, idx := range ifs {
				want = append(want, host.LocalRoute{Addr: netip.MustParseAddr(a), Ifindex: idx})
			}
		}
		for i, wantAdded := range []int{len(want), 0} {
			added, removed, err := SyncLocalRoutes(want)
			if err != nil || added != wantAdded || removed != 0 {
				t.Errorf("sync %d: added %d, removed %d, err %v; want %d, 0, nil", i+1, added, removed, err, wantAdded)
			}
		}
		rs, err := netlink.RouteListFiltered(netlink.FAMILY_V6, &netlink.Route{Protocol: RouteProtocol, Table: 255},
			netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
		if err != nil {
			t.Fatal(err)
		}
		var have []host.LocalRoute
		for _, r := range rs {
			a, _ := netip.AddrFromSlice(r.Dst.IP)
			have = append(have, host.LocalRoute{Addr: a, Ifindex: r.LinkIndex})
		}
		for _, w := range want {
			if !slices.Contains(have, w) {
				t.Errorf("no local route %s dev %d; have %v", w.Addr, w.Ifindex, have)
			}
		}
		// One interface's go; the others' stay.
		added, removed, err := SyncLocalRoutes(slices.DeleteFunc(want, func(r host.LocalRoute) bool { return r.Ifindex == ifs[0] }))
		if err != nil || added != 0 || removed != 2 {
			t.Errorf("sync without %d: added %d, removed %d, err %v; want 0, 2, nil", ifs[0], added, removed, err)
		}
	})
}

// TestSyncRoutesIPv6Kept: an IPv6 route to a workload (metric 0, which the
// kernel stores as 1024) stays through further syncs.
func TestSyncRoutesIPv6Kept(t *testing.T) {
	inNewNetns(t, 1, func(ifs []int) {
		want := []host.Route{
			{Dst: netip.MustParsePrefix("10.65.0.2/32"), Ifindex: ifs[0]},
			{Dst: netip.MustParsePrefix("fd00:65::2/128"), Ifindex: ifs[0]},
		}
		for i, wantAdded := range []int{2, 0, 0} {
			added, removed, err := SyncRoutes(want)
			if err != nil || added != wantAdded || removed != 0 {
				t.Errorf("sync %d: added %d, removed %d, err %v; want %d, 0, nil", i+1, added, removed, err, wantAdded)
			}
		}
		rs, err := netlink.RouteListFiltered(netlink.FAMILY_V6, &netlink.Route{Protocol: RouteProtocol},
			netlink.RT_FILTER_PROTOCOL)
		if err != nil {
			t.Fatal(err)
		}
		if len(rs) != 1 || rs[0].Dst.String() != "fd00:65::2/128" {
			t.Errorf("IPv6 calyx routes after three syncs: %v, want fd00:65::2/128", rs)
		}
	})
}
