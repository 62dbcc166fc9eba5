package subnetsvc

import (
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/net/bpf"

	"github.com/calyxnet/calyx/agent/subnets"
)

// manyServices is n dual-stack endpoints, ifindex 100.., each with its own
// MAC and addresses.
func manyServices(n int) map[int]subnets.Service {
	out := make(map[int]subnets.Service, n)
	for i := 0; i < n; i++ {
		idx := 100 + i
		mac := net.HardwareAddr{0x52, 0x54, 0, 0, byte(i >> 8), byte(i)}
		out[idx] = subnets.Service{
			Endpoint: fmt.Sprintf("vm%d", i), Ifname: fmt.Sprintf("tap%d", i), Ifindex: idx, HostMAC: hostMAC, MAC: mac,
			V4: &subnets.Lease{Addr: netip.AddrFrom4([4]byte{10, 66, byte(i >> 8), byte(i)}), Prefix: mustPrefix("10.66.0.0/16"),
				Gateway: mustAddr("10.66.255.254"), DNS: []netip.Addr{mustAddr("10.66.0.53")}, MTU: 1450, Duration: time.Hour,
				Routes: []subnets.Route{{Dst: mustPrefix("11.11.0.0/16"), Via: mustAddr("10.66.255.254")}}},
			V6: &subnets.Lease{Addr: netip.AddrFrom16([16]byte{0xfd, 0, 0, 0x66, 14: byte(i >> 8), 15: byte(i)}), Prefix: mustPrefix("fd00:66::/64"),
				Gateway: subnets.V6Gateway, DNS: []netip.Addr{mustAddr("fd00:66::53")}, MTU: 1450, Duration: time.Hour},
		}
	}
	return out
}

// TestUpdateThousandUnchanged: with 1,000 interfaces an Update that
// changes nothing allocates nothing and keeps the published table.
func TestUpdateThousandUnchanged(t *testing.T) {
	s := newServer(nil, nil)
	svcs := manyServices(1000)
	s.Update(svcs)
	tab := s.table.Load()
	if allocs := testing.AllocsPerRun(20, func() { s.Update(svcs) }); allocs != 0 {
		t.Errorf("unchanged Update allocates %v times", allocs)
	}
	if s.table.Load() != tab {
		t.Error("unchanged Update published a new table")
	}
	if got := testutil.ToFloat64(s.m.interfaces.WithLabelValues("v6")); got != 1000 {
		t.Errorf("calyx_dhcp_interfaces{v6} %v", got)
	}
	// One changed interface: a new table that shares every other entry.
	svcs[100+500].V4.MTU = 1400
	s.Update(svcs)
	nt := s.table.Load()
	if nt == tab || nt.byIndex[600] == tab.byIndex[600] || nt.byIndex[601] != tab.byIndex[601] {
		t.Error("one change: want a new table with only that entry rebuilt")
	}
	// The caller's slices are not kept.
	svcs[601].V4.DNS[0] = mustAddr("10.66.0.99")
	if nt.byIndex[601].svc.V4.DNS[0] != mustAddr("10.66.0.53") {
		t.Error("Update kept the caller's DNS slice")
	}
}

func BenchmarkUpdateThousandUnchanged(b *testing.B) {
	s := newServer(nil, nil)
	svcs := manyServices(1000)
	s.Update(svcs)
	b.ReportAllocs()
	for b.Loop() {
		s.Update(svcs)
	}
}

func BenchmarkHandleDiscover(b *testing.B) {
	h := newHarness(b)
	f := clientV4{mt: dhcpv4.MessageTypeDiscover, srcMAC: vmMAC}.frame(b)
	b.ReportAllocs()
	for b.Loop() {
		h.s.handleV4(ifDual, f, h.now)
	}
}

// TestUpdateWhileServing: requests are answered from whichever table is
// current while Update swaps it (run with -race).
func TestUpdateWhileServing(t *testing.T) {
	h := newHarness(t)
	h.s.onLease = func(subnets.LeaseRecord) {}
	f4 := clientV4{mt: dhcpv4.MessageTypeDiscover, srcMAC: vmMAC}.frame(t)
	f6 := v6Frame(t, vmMAC, vmLL, allDHCP, clientV6(dhcpv6.MessageTypeSolicit, vmDUID, nil, [][]net.IP{nil}))
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for _, fn := range []func(){
		func() { h.s.handleV4(ifDual, f4, t0) },
		func() { h.s.handleV6(ifDual, f6, t0) },
		func() { h.s.handleV6(ifDual, rsFrame(t, vmMAC, vmLL, 255), t0) },
		func() { h.s.ra.take(time.Now()) },
	} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
					fn()
				}
			}
		}()
	}
	for i := 0; i < 200; i++ {
		svcs := testServices()
		if i%2 == 0 {
			delete(svcs, ifDual)
		} else {
			svcs[ifDual].V4.MTU = 1000 + i
		}
		h.s.Update(svcs)
	}
	close(stop)
	wg.Wait()
}

// TestFilters runs the socket filters in x/net/bpf's VM: they take DHCP
// requests and solicitations and nothing else.
func TestFilters(t *testing.T) {
	vm4, err := bpf.NewVM(v4Filter)
	if err != nil {
		t.Fatal(err)
	}
	vm6, err := bpf.NewVM(v6Filter)
	if err != nil {
		t.Fatal(err)
	}
	discover := clientV4{mt: dhcpv4.MessageTypeDiscover, srcMAC: vmMAC}.frame(t)
	toClient := clientV4{mt: dhcpv4.MessageTypeDiscover, srcMAC: vmMAC}.frame(t)
	toClient[14+20+3] = 68 // UDP destination port 68
	fragment := append([]byte(nil), discover...)
	fragment[14+7] = 1 // fragment offset 1
	tcp := append([]byte(nil), discover...)
	tcp[14+9] = 6
	solicit := v6Frame(t, vmMAC, vmLL, allDHCP, clientV6(dhcpv6.MessageTypeSolicit, vmDUID, nil, [][]net.IP{nil}))
	v6toClient := append([]byte(nil), solicit...)
	v6toClient[14+40+3] = 0x22 // port 546
	rs := rsFrame(t, vmMAC, vmLL, 255)
	ns := append([]byte(nil), rs...)
	ns[14+40] = 135 // neighbour solicitation
	for _, tc := range []struct {
		name  string
		vm    *bpf.VM
		frame []byte
		take  bool
	}{
		{"DHCPDISCOVER", vm4, discover, true},
		{"UDP to port 68", vm4, toClient, false},
		{"IPv4 fragment", vm4, fragment, false},
		{"TCP", vm4, tcp, false},
		{"DHCPv6 Solicit", vm6, solicit, true},
		{"UDP to port 546", vm6, v6toClient, false},
		{"router solicitation", vm6, rs, true},
		{"neighbour solicitation", vm6, ns, false},
	} {
		n, err := tc.vm.Run(tc.frame)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if (n > 0) != tc.take || (tc.take && n < len(tc.frame)) {
			t.Errorf("%s: filter takes %d bytes of %d, want take=%v whole", tc.name, n, len(tc.frame), tc.take)
		}
	}
}

// TestCollectors: the metrics register and every series exists at zero.
func TestCollectors(t *testing.T) {
	s := newServer(nil, nil)
	reg := prometheus.NewRegistry()
	for _, c := range s.Collectors() {
		if err := reg.Register(c); err != nil {
			t.Fatal(err)
		}
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]int{}
	for _, mf := range mfs {
		names[mf.GetName()] = len(mf.GetMetric())
		if mf.GetHelp() == "" {
			t.Errorf("%s has no help", mf.GetName())
		}
	}
	for _, n := range []string{"calyx_dhcp_messages_total", "calyx_dhcp_ignored_total", "calyx_router_advertisements_total",
		"calyx_router_solicitations_total", "calyx_dhcp_send_errors_total", "calyx_dhcp_interfaces"} {
		if names[n] == 0 {
			t.Errorf("%s missing", n)
		}
	}
}
