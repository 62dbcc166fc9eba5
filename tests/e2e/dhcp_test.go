package e2e

// End-to-end tests of issue 13: subnet services for instances. VMs boot
// with no address and real clients (Debian's dhclient -4/-6, busybox
// udhcpc, the kernel's own RA handling) get their address, prefix, default
// route via the subnet's gateway IP, host routes (option 121), DNS and the
// tunnel MTU (option 26) from the agent on their host, then reach
// instances on other hosts through calyx.

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/calyxnet/calyx/tests/lab"
)

// subnetDoc renders a Subnet; routes are "destination,nextHop" pairs.
func subnetDoc(name, cidr, gateway string, dns []string, routes ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: calyx.io/v1\nkind: Subnet\nmetadata:\n  name: %s\nspec:\n  cidr: %s\n  gatewayIP: %s\n", name, cidr, gateway)
	if len(dns) > 0 {
		fmt.Fprintf(&b, "  dnsNameservers: [%s]\n", strings.Join(dns, ", "))
	}
	if len(routes) > 0 {
		b.WriteString("  hostRoutes:\n")
		for _, r := range routes {
			dst, via, _ := strings.Cut(r, ",")
			fmt.Fprintf(&b, "  - {destination: %s, nextHop: %s}\n", dst, via)
		}
	}
	return b.String()
}

// leaseRow is a row of calyxctl dhcp leases -o json.
type leaseRow struct {
	Endpoint  string `json:"endpoint"`
	MAC       string `json:"mac"`
	Address   string `json:"address"`
	ExpiresIn int64  `json:"expiresInSeconds"`
}

// dhcpVM plans a VM on host that boots without an address; its endpoint
// still says the address DHCP hands out.
func dhcpVM(t *testing.T, l *lab.Lab, host, name, ip string) *lab.Workload {
	t.Helper()
	w, err := l.PlanWorkloadKind(host, name, ip, "", lab.KindVM)
	if err != nil {
		t.Fatal(err)
	}
	w.DHCP = true
	if err := l.CreateWorkload(w); err != nil {
		t.Fatal(err)
	}
	return w
}

// wantLease checks what a client configured on w's interface: its address
// with the subnet's prefix, the routes (each a prefix of an `ip route` line)
// and the MTU (0: not checked).
func wantLease(t *testing.T, l *lab.Lab, w *lab.Workload, v6 bool, addr netip.Prefix, mtu int, routes ...string) {
	t.Helper()
	addrs, err := l.InstanceAddrs(w, "", v6)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(addrs, addr) {
		t.Errorf("%s %s: addresses %v, want %s", w.Name, w.InstanceIface(), addrs, addr)
	}
	lines, err := l.InstanceRoutes(w, v6)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range routes {
		if !slices.ContainsFunc(lines, func(l string) bool { return strings.HasPrefix(l, want) }) {
			t.Errorf("%s: no route %q in\n%s", w.Name, want, strings.Join(lines, "\n"))
		}
	}
	if mtu > 0 {
		if got, err := l.InstanceMTU(w, ""); err != nil || got != mtu {
			t.Errorf("%s %s: MTU %d (%v), want %d", w.Name, w.InstanceIface(), got, err, mtu)
		}
	}
}

// TestDHCPInstances: VMs on two hosts in one subnet (VXLAN between the
// hosts) boot with no address and get everything by DHCP from their own
// host, the same gateway IP at the same time; they reach each other across
// hosts and their gateway. A request from a MAC that is not the endpoint's
// gets nothing, and a host route via another next hop is refused.
func TestDHCPInstances(t *testing.T) {
	lab.RequireDHCPClients(t)
	l := newLabKind(t, lab.KindVM)
	ha, err := l.AddHost("host-a", "10.30.0.11/24")
	if err != nil {
		t.Fatal(err)
	}
	hb, err := l.AddHost("host-b", "10.30.0.12/24")
	if err != nil {
		t.Fatal(err)
	}
	vm1 := dhcpVM(t, l, ha.Name, "vm1", "10.65.0.11")
	vm2 := dhcpVM(t, l, ha.Name, "vm2", "10.65.0.12")
	vm3 := dhcpVM(t, l, hb.Name, "vm3", "10.65.0.13")
	for _, h := range []*lab.Host{ha, hb} {
		if err := l.StartAgent(h.Name); err != nil {
			t.Fatal(err)
		}
	}
	subnet := subnetDoc("lab-v4", "10.65.0.0/24", "10.65.0.1", []string{"10.65.0.53"})
	model := lab.JoinYAML(l.ModelYAML(), subnet)
	if out, err := l.Apply("", model); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	// VXLAN between the hosts: the workload MTU (option 26) is 1450.
	if out, err := l.Apply("", lab.PoolModeYAML("lab-pool", lab.WorkloadPool, "Never", "Always")); err != nil {
		t.Fatalf("apply pool: %v\n%s", err, out)
	}
	for _, h := range []*lab.Host{ha, hb} {
		var ifaces []string
		for _, w := range []*lab.Workload{vm1, vm2, vm3} {
			if w.Host == h.Name {
				ifaces = append(ifaces, w.HostIface)
			}
		}
		if err := l.WaitLinks(h.Name, attachTimeout, ifaces...); err != nil {
			t.Fatal(err)
		}
	}

	// Real clients: dhclient on vm1 and vm3 (two hosts), udhcpc on vm2.
	for _, c := range []struct {
		w   *lab.Workload
		run func(*lab.Workload, string) (string, error)
	}{
		{vm1, func(w *lab.Workload, ifc string) (string, error) { return l.DHClient(w, ifc, false) }},
		{vm2, l.UDHCPC},
		{vm3, func(w *lab.Workload, ifc string) (string, error) { return l.DHClient(w, ifc, false) }},
	} {
		if out, err := c.run(c.w, ""); err != nil {
			t.Fatalf("%s: %v\n%s", c.w.Name, err, out)
		}
		wantLease(t, l, c.w, false, netip.PrefixFrom(c.w.IP, 24), 1450, "default via 10.65.0.1 dev eth0")
		rc, err := l.ReadResolvConf(c.w)
		if err != nil {
			t.Fatal(err)
		}
		if ns := lab.ParseNameservers(rc); !slices.Contains(ns, "10.65.0.53") {
			t.Errorf("%s: nameservers %v, want 10.65.0.53", c.w.Name, ns)
		}
	}
	// Both hosts' instances use the same gateway IP, and everything works.
	for _, p := range [][2]*lab.Workload{{vm1, vm3}, {vm3, vm2}, {vm2, vm1}} {
		if err := l.WaitPing(p[0].NS, p[1].IP.String(), trafficTimeout); err != nil {
			t.Errorf("%s -> %s: %v", p[0].Name, p[1].Name, err)
		}
	}
	for _, w := range []*lab.Workload{vm1, vm3} {
		mustPing(t, l, w.NS, "10.65.0.1", 2) // the gateway is the instance's own host
	}

	// calyxctl dhcp leases: each host lists its own instances.
	for h, ws := range map[string][]*lab.Workload{ha.Name: {vm1, vm2}, hb.Name: {vm3}} {
		var rows []leaseRow
		if err := l.CalyxctlJSON(h, &rows, "dhcp", "leases"); err != nil {
			t.Fatal(err)
		}
		for _, w := range ws {
			i := slices.IndexFunc(rows, func(r leaseRow) bool { return r.Endpoint == w.Name })
			if i < 0 {
				t.Errorf("dhcp leases on %s: no lease of %s in %+v", h, w.Name, rows)
				continue
			}
			if r := rows[i]; r.Address != w.IP.String() || r.MAC != w.MAC.String() || r.ExpiresIn < 86000 {
				t.Errorf("dhcp leases on %s: %+v, want %s at %s for about a day", h, r, w.Name, w.IP)
			}
		}
	}
	if text, err := l.AgentMetrics(ha.Name); err != nil {
		t.Error(err)
	} else if v, ok, err := lab.MetricSum(text, `calyx_dhcp_messages_total{family="v4",type="ack"}`); err != nil || !ok || v < 2 {
		t.Errorf("DHCPv4 acks counted on host-a: %v (found %v, %v), want at least 2", v, ok, err)
	}

	// A request from a MAC that is not the endpoint's gets nothing.
	spoofed := "02:00:00:00:99:99"
	before := counter(t, l, ha.Name, vm2.HostIface, "drop-spoof-mac")
	if _, err := l.Exec(vm2.NS, "ip", "link", "set", "eth0", "address", spoofed); err != nil {
		t.Fatal(err)
	}
	if out, err := l.UDHCPCWith(vm2, "", lab.DHCPOptions{Timeout: 3 * time.Second, Fresh: true}); err == nil {
		t.Errorf("udhcpc from %s on %s got a lease:\n%s", spoofed, vm2.Name, out)
	}
	if after := counter(t, l, ha.Name, vm2.HostIface, "drop-spoof-mac"); after <= before {
		t.Errorf("drop-spoof-mac on %s: %d -> %d, want the requests counted", vm2.HostIface, before, after)
	}
	if _, err := l.Exec(vm2.NS, "ip", "link", "set", "eth0", "address", vm2.MAC.String()); err != nil {
		t.Fatal(err)
	}

	// A host route via another next hop is refused; the model is unchanged.
	bad := subnetDoc("lab-v4", "10.65.0.0/24", "10.65.0.1", []string{"10.65.0.53"}, "11.11.0.0/16,10.65.0.9")
	out, err := l.Apply("", bad)
	if err == nil {
		t.Errorf("a host route via 10.65.0.9 was accepted")
	} else if !strings.Contains(out+err.Error(), "spec.hostRoutes[0].nextHop: 10.65.0.9 is not the subnet's gatewayIP 10.65.0.1") {
		t.Errorf("apply with a host route via 10.65.0.9: %v\n%s", err, out)
	}
	got, _, err := l.Calyxctl("", "-o", "yaml", "get", "subnet", "lab-v4")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(got, "11.11.0.0") {
		t.Errorf("the refused host route is in the model:\n%s", got)
	}
}

// TestDHCPSeedExample is the seed document's example exactly: an instance
// with eth0 on 10.65.0.0/24 (gateway 10.65.0.1) and eth1 on 11.8.0.0/24
// (gateway 11.8.0.1, host route 11.11.0.0/16 via 11.8.0.1) ends up with
// the default route via 10.65.0.1 on eth0, 11.11.0.0/16 via 11.8.0.1 on
// eth1 and the two connected subnets, and its packets to 11.11.x.x leave by
// eth1's tap.
func TestDHCPSeedExample(t *testing.T) {
	lab.RequireDHCPClients(t)
	l := newLabKind(t, lab.KindVM)
	h, err := l.AddHost("host-a", "10.30.0.11/24")
	if err != nil {
		t.Fatal(err)
	}
	vm := dhcpVM(t, l, h.Name, "vm", "10.65.0.10")
	eth1, err := l.AddNIC(vm, "", "11.8.0.10", "")
	if err != nil {
		t.Fatal(err)
	}
	if err := l.StartAgent(h.Name); err != nil {
		t.Fatal(err)
	}
	model := lab.JoinYAML(l.ModelYAML(), lab.PoolYAML("second", "11.8.0.0/16"),
		subnetDoc("net-a", "10.65.0.0/24", "10.65.0.1", nil),
		subnetDoc("net-b", "11.8.0.0/24", "11.8.0.1", nil, "11.11.0.0/16,11.8.0.1"))
	if out, err := l.Apply(h.Name, model); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	if err := l.WaitLinks(h.Name, attachTimeout, vm.HostIface, eth1.HostIface); err != nil {
		t.Fatal(err)
	}
	for _, w := range []*lab.Workload{vm, eth1} { // eth0 first: it brings the default route
		if out, err := l.DHClient(w, "", false); err != nil {
			t.Fatalf("dhclient on %s: %v\n%s", w.InstanceIface(), err, out)
		}
	}
	lines, err := l.InstanceRoutes(vm, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("ip route in the instance:\n%s", strings.Join(lines, "\n"))
	want := []string{"default via 10.65.0.1 dev eth0", "10.65.0.0/24 dev eth0", "11.8.0.0/24 dev eth1", "11.11.0.0/16 via 11.8.0.1 dev eth1"}
	for _, w := range want {
		if !slices.ContainsFunc(lines, func(l string) bool { return strings.HasPrefix(l, w) }) {
			t.Errorf("no route %q", w)
		}
	}
	for _, line := range lines {
		if !slices.ContainsFunc(want, func(w string) bool { return strings.HasPrefix(line, w) }) {
			t.Errorf("a route beyond the seed's: %q", line)
		}
	}
	// Packets to 11.11.x.x leave by eth1's tap, none by eth0's. The pings
	// are large, so the instance's own small link-local traffic (router
	// solicitations, MLD) on either tap cannot be taken for them.
	const size, count = 1200, 3
	frame := uint64(14 + 20 + 8 + size)
	b0 := counterBytes(t, l, h.Name, vm.HostIface, "pass-host")
	b1 := counterBytes(t, l, h.Name, eth1.HostIface, "pass-host")
	_, _ = l.Ping(vm.NS, "11.11.0.5", count, "-s", fmt.Sprint(size)) // nobody answers: the host has no route there
	a0 := counterBytes(t, l, h.Name, vm.HostIface, "pass-host")
	a1 := counterBytes(t, l, h.Name, eth1.HostIface, "pass-host")
	if a1-b1 < count*frame || a0-b0 >= frame {
		t.Errorf("pings to 11.11.0.5: %d more bytes out of eth1's tap, %d out of eth0's; want at least %d and fewer than %d",
			a1-b1, a0-b0, count*frame, frame)
	}
}

// counterBytes returns the bytes counted on iface for reason.
func counterBytes(t *testing.T, l *lab.Lab, host, iface, reason string) uint64 {
	t.Helper()
	rows, err := l.Counters(host)
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, r := range rows {
		if r.Interface == iface && r.Reason == reason {
			n += r.Bytes
		}
	}
	return n
}

// TestDHCPDualStack: one instance gets IPv4 by DHCPv4 and IPv6 by router
// advertisement (its default route: fe80::1, the local host) and DHCPv6,
// then pings the host side (the subnets' gateway IPs) and another local
// instance over both.
func TestDHCPDualStack(t *testing.T) {
	lab.RequireDHCPClients(t)
	l := newLabKind(t, lab.KindVM)
	h, err := l.AddHost("host-a", "10.30.0.11/24")
	if err != nil {
		t.Fatal(err)
	}
	ds := dhcpVM(t, l, h.Name, "ds", "10.65.0.20")
	if err := l.AddIPv6(ds, "fd00:65::20"); err != nil {
		t.Fatal(err)
	}
	peer, err := l.AddWorkload(h.Name, "peer", "10.65.0.21", "")
	if err != nil {
		t.Fatal(err)
	}
	if err := l.AddIPv6(peer, "fd00:65::21"); err != nil {
		t.Fatal(err)
	}
	if err := l.StartAgent(h.Name); err != nil {
		t.Fatal(err)
	}
	model := lab.JoinYAML(l.ModelYAML(), lab.PoolYAML("v6", "fd00:65::/64"),
		subnetDoc("v4", "10.65.0.0/24", "10.65.0.1", []string{"10.65.0.53"}),
		subnetDoc("v6", "fd00:65::/64", "fd00:65::1", []string{"fd00:65::53"}))
	if out, err := l.Apply(h.Name, model); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	if err := l.WaitLinks(h.Name, attachTimeout, ds.HostIface, peer.HostIface); err != nil {
		t.Fatal(err)
	}
	if out, err := l.DHClient(ds, "", false); err != nil {
		t.Fatalf("dhclient -4: %v\n%s", err, out)
	}
	// The router advertisement: solicited by rdisc6, and taken by the
	// instance's kernel for its default route.
	if out, err := l.RDisc6(ds, ""); err != nil {
		t.Errorf("rdisc6: %v\n%s", err, out)
	} else if !strings.Contains(out, "from fe80::1") {
		t.Errorf("rdisc6 saw no advertisement from fe80::1:\n%s", out)
	}
	if out, err := l.DHClient(ds, "", true); err != nil {
		t.Fatalf("dhclient -6: %v\n%s", err, out)
	}
	wantLease(t, l, ds, false, netip.MustParsePrefix("10.65.0.20/24"), 0, "default via 10.65.0.1 dev eth0")
	err = lab.Eventually(15*time.Second, 200*time.Millisecond, func() error {
		lines, err := l.InstanceRoutes(ds, true)
		if err != nil {
			return err
		}
		if !slices.ContainsFunc(lines, func(l string) bool { return strings.HasPrefix(l, "default via fe80::1 dev eth0") }) {
			return fmt.Errorf("no IPv6 default route via fe80::1 in\n%s", strings.Join(lines, "\n"))
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
	addrs, err := l.InstanceAddrs(ds, "", true)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(addrs, func(p netip.Prefix) bool { return p.Addr() == netip.MustParseAddr("fd00:65::20") }) {
		t.Errorf("IPv6 addresses %v, want fd00:65::20 from DHCPv6", addrs)
	}
	for _, dst := range []string{"10.65.0.1", "fd00:65::1", peer.IP.String(), "fd00:65::21"} {
		if err := l.WaitPing(ds.NS, dst, trafficTimeout); err != nil {
			t.Errorf("ds -> %s: %v", dst, err)
		}
	}
}
