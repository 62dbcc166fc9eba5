package lab

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// TestNICModel checks the records AddNIC makes and how ModelYAML renders
// an instance with two NICs, on a lab value without namespaces (planning
// creates nothing). Pure Go.
func TestNICModel(t *testing.T) {
	l := &Lab{Prefix: "cx0001", nextWorkload: 1, opts: Options{WorkloadKind: KindVeth}, hosts: []*Host{{Name: "host-a"}}}
	ve, err := l.PlanWorkload("host-a", "ve1", "10.65.0.3", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.AddNIC(ve, "", "11.8.0.3", ""); err == nil || !strings.Contains(err.Error(), "veth") {
		t.Errorf("AddNIC to a veth workload: %v, want an error naming the kind", err)
	}
	vm, err := l.PlanWorkloadKind("host-a", "vm1", "10.65.0.2", "02:00:00:00:00:02", KindVM)
	if err != nil {
		t.Fatal(err)
	}
	vm.DHCP, vm.MTU = true, 1450
	nic, err := l.AddNIC(vm, "", "11.8.0.5", "")
	if err != nil {
		t.Fatal(err)
	}
	if nic.Name != "vm1-eth1" || nic.Iface != "eth1" || nic.NS != vm.NS || nic.Host != "host-a" || nic.Kind != KindVM ||
		!nic.DHCP || nic.MTU != 1450 || nic.HostIface != "cx0001w3" || nic.Instance != "vm1" || vm.Instance != "vm1" {
		t.Errorf("NIC record %+v (instance of vm1: %q)", nic, vm.Instance)
	}
	if !nic.IsSecondaryNIC() || vm.IsSecondaryNIC() || nic.InstanceName() != "vm1" || vm.InstanceIface() != "eth0" {
		t.Errorf("IsSecondaryNIC %v/%v, InstanceName %s, vm iface %s", nic.IsSecondaryNIC(), vm.IsSecondaryNIC(), nic.InstanceName(), vm.InstanceIface())
	}
	// Through the NIC, onto the same instance; a used name or address is
	// refused.
	nic2, err := l.AddNIC(nic, "vm1-data", "11.9.0.5", "")
	if err != nil || nic2.Iface != "eth2" || nic2.Instance != "vm1" {
		t.Fatalf("second NIC: %+v, %v", nic2, err)
	}
	if _, err := l.AddNIC(vm, "vm1-eth1", "11.10.0.5", ""); err == nil {
		t.Error("AddNIC reused a name")
	}
	if _, err := l.AddNIC(vm, "", "11.8.0.5", ""); err == nil || !strings.Contains(err.Error(), "11.8.0.5") {
		t.Errorf("AddNIC reused an address: %v", err)
	}
	if got := l.NICs(nic); len(got) != 3 || got[0] != vm || got[1] != nic || got[2] != nic2 {
		t.Errorf("NICs(vm1-eth1) = %v", got)
	}
	if err := l.CreateWorkload(nic); err == nil || !strings.Contains(err.Error(), "create vm1") {
		t.Errorf("CreateWorkload of a NIC: %v", err)
	}

	y := l.ModelYAML()
	for _, s := range []string{"name: vm1\n  labels:\n    calyx.io/instance: \"vm1\"\n", "name: vm1-eth1\n  labels:\n    calyx.io/instance: \"vm1\"\n",
		"interface: cx0001w3\n  mac: \"" + nic.MAC.String() + "\"\n  ipNetworks:\n  - 11.8.0.5/32\n", "- 10.65.0.2/32"} {
		if !strings.Contains(y, s) {
			t.Errorf("ModelYAML lacks %q:\n%s", s, y)
		}
	}
	if strings.Contains(EndpointYAML(ve), "labels") {
		t.Errorf("a single-NIC endpoint has labels:\n%s", EndpointYAML(ve))
	}
	got := LabeledEndpointYAML(nic, map[string]string{"role": "db"})
	if strings.Count(got, "labels:") != 1 || !strings.Contains(got, "    calyx.io/instance: \"vm1\"\n    role: \"db\"\n") {
		t.Errorf("LabeledEndpointYAML of a NIC:\n%s", got)
	}
}

// checkNoAddress checks that every NIC of w's instance exists, is up with
// its MAC and MTU, has a link-local IPv6 address past DAD and neither an
// IPv4 nor a global IPv6 address, and that the instance has no IPv4 route.
func checkNoAddress(t *testing.T, l *Lab, w *Workload) {
	t.Helper()
	for _, n := range l.NICs(w) {
		ifc := n.InstanceIface()
		if k := linkKind(t, l, n.NS, ifc); k != "tun/tap" {
			t.Errorf("%s %s is %s", n.Name, ifc, k)
		}
		link := mustExec(t, l, "", "ip", "-n", n.NS, "-o", "link", "show", ifc)
		if !strings.Contains(link, n.MAC.String()) || !strings.Contains(link, fmt.Sprintf("mtu %d ", n.MTU)) || !strings.Contains(link, ",UP") {
			t.Errorf("%s %s lacks MAC %s, mtu %d or UP: %s", n.Name, ifc, n.MAC, n.MTU, link)
		}
		for _, v6 := range []bool{false, true} {
			if a, err := l.InstanceAddrs(n, ifc, v6); err != nil || len(a) != 0 {
				t.Errorf("%s %s (v6 %v) has addresses %v, %v; want none before DHCP", n.Name, ifc, v6, a, err)
			}
		}
		if ll, err := l.WaitLinkLocal(n, ifc, 3*time.Second); err != nil || !ll.IsLinkLocalUnicast() {
			t.Errorf("%s %s link-local: %v, %v", n.Name, ifc, ll, err)
		}
	}
	if r, err := l.InstanceRoutes(w, false); err != nil || len(r) != 0 {
		t.Errorf("%s has IPv4 routes before DHCP: %q, %v", w.InstanceName(), r, err)
	}
	r6, err := l.InstanceRoutes(w, true)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range r6 {
		if strings.HasPrefix(r, "default") {
			t.Errorf("%s has an IPv6 default route before DHCP: %s", w.InstanceName(), r)
		}
	}
}

// TestVMNICs builds, without an agent, a VM with two NICs that boots
// without addresses (DHCP) and a static VM that gets a second NIC while
// running, and checks both through stop, start and migration, and that
// Close leaves nothing.
func TestVMNICs(t *testing.T) {
	l := newVMLab(t, Options{WorkloadKind: KindVM})
	ha, err := l.AddHost("host-a", "10.30.0.11/24")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.AddHost("host-b", "10.30.0.12/24"); err != nil {
		t.Fatal(err)
	}
	vm, err := l.PlanWorkload("host-a", "vm1", "10.65.0.2", "")
	if err != nil {
		t.Fatal(err)
	}
	vm.DHCP, vm.MTU = true, 1400
	nic, err := l.AddNIC(vm, "", "11.8.0.5", "")
	if err != nil {
		t.Fatal(err)
	}
	if nic.Created {
		t.Error("NIC of a planned VM created")
	}
	if err := l.CreateWorkload(vm); err != nil {
		t.Fatal(err)
	}
	if !vm.Created || !nic.Created || !l.VMRunning(vm) || !l.VMRunning(nic) {
		t.Fatalf("after CreateWorkload: created %v/%v, running %v/%v", vm.Created, nic.Created, l.VMRunning(vm), l.VMRunning(nic))
	}
	if err := l.AddIPv6(vm, "fd00:65::2"); err != nil {
		t.Fatal(err)
	}
	checkNoAddress(t, l, vm)
	if n := len(relayPidsOf(t, l.Prefix)); n != 2 {
		t.Errorf("%d relays, want one per NIC", n)
	}
	if !strings.Contains(EndpointYAML(vm), "- fd00:65::2/128") {
		t.Errorf("the model lost the DHCP instance's IPv6 address:\n%s", EndpointYAML(vm))
	}

	// A static VM gets a second NIC while it runs: its address is
	// reachable through it and what is sent from it leaves by it.
	st, err := l.PlanWorkload("host-a", "vm2", "10.65.0.3", "")
	if err != nil {
		t.Fatal(err)
	}
	st.MTU = 1500
	if err := l.CreateWorkload(st); err != nil {
		t.Fatal(err)
	}
	stn, err := l.AddNIC(st, "", "11.8.0.6", "")
	if err != nil {
		t.Fatal(err)
	}
	if !stn.Created || !l.VMRunning(stn) {
		t.Fatal("hot-plugged NIC not running")
	}
	if err := l.AddIPv6(stn, "fd00:11::6"); err != nil {
		t.Fatal(err)
	}
	checkStatic := func(label string) {
		t.Helper()
		checkInstance(t, l, st, "tun/tap")
		addrs, err := l.InstanceAddrs(stn, "", false)
		if err != nil || len(addrs) != 1 || addrs[0] != netip.MustParsePrefix("11.8.0.6/32") {
			t.Errorf("%s: vm2 eth1 addresses %v, %v", label, addrs, err)
		}
		if a6, err := l.InstanceAddrs(stn, "", true); err != nil || len(a6) != 1 || a6[0].Addr() != stn.IPv6 {
			t.Errorf("%s: vm2 eth1 IPv6 addresses %v, %v", label, a6, err)
		}
		for _, c := range []struct{ fam, from, to, dev string }{
			{"-4", "11.8.0.6", "10.30.0.11", "dev eth1"},
			{"-4", "10.65.0.3", "10.30.0.11", "dev eth0"},
			{"-6", "fd00:11::6", "fd00:30::1", "dev eth1"},
		} {
			if out := mustExec(t, l, "", "ip", "-n", st.NS, c.fam, "route", "get", c.to, "from", c.from); !strings.Contains(out, c.dev) {
				t.Errorf("%s: vm2 route from %s: %s, want %s", label, c.from, strings.TrimSpace(out), c.dev)
			}
		}
		h, err := l.Host(stn.Host)
		if err != nil {
			t.Fatal(err)
		}
		routeToWorkload(t, l, stn)
		before, err := l.HostIfaceStats(stn)
		if err != nil {
			t.Fatal(err)
		}
		if err := l.WaitPing(h.NS, stn.IP.String(), 5*time.Second); err != nil {
			t.Errorf("%s: %v", label, err)
		}
		if _, err := l.Ping(h.NS, stn.IP.String(), 3); err != nil {
			t.Errorf("%s: %v", label, err)
		}
		after, err := l.HostIfaceStats(stn)
		if err != nil {
			t.Fatal(err)
		}
		// The replies came back through eth1's tap.
		if d := after.RxPackets - before.RxPackets; d < 3 {
			t.Errorf("%s: %s received %d packets during 4 pings of %s", label, stn.HostIface, d, stn.IP)
		}
	}
	checkStatic("hot-plugged")

	// StopVM through the NIC stops the whole instance.
	idx0, _ := Ifindex(ha.NS, vm.HostIface)
	idx1, _ := Ifindex(ha.NS, nic.HostIface)
	if err := l.StopVM(nic); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*Workload{vm, nic} {
		if l.VMRunning(n) {
			t.Errorf("%s running after StopVM", n.Name)
		}
		if _, err := Ifindex(ha.NS, n.HostIface); err == nil {
			t.Errorf("host tap %s left after StopVM", n.HostIface)
		}
		if _, err := Ifindex(n.NS, n.InstanceIface()); err == nil {
			t.Errorf("%s left after StopVM", n.InstanceIface())
		}
	}
	if err := l.StopVM(vm); err == nil {
		t.Error("StopVM of a stopped VM succeeded")
	}
	if _, err := l.DHClient(vm, "", false); err == nil || !strings.Contains(err.Error(), "running") {
		t.Errorf("DHClient on a stopped VM: %v", err)
	}
	if err := l.StartVM(vm); err != nil {
		t.Fatal(err)
	}
	if err := l.StartVM(nic); err == nil {
		t.Error("StartVM of a running VM succeeded")
	}
	if i0, _ := Ifindex(ha.NS, vm.HostIface); i0 == idx0 {
		t.Errorf("host tap of eth0 has ifindex %d again", i0)
	}
	if i1, _ := Ifindex(ha.NS, nic.HostIface); i1 == idx1 {
		t.Errorf("host tap of eth1 has ifindex %d again", i1)
	}
	checkNoAddress(t, l, vm)
	// A NIC added to a stopped VM appears when it boots.
	if err := l.StopVM(st); err != nil {
		t.Fatal(err)
	}
	late, err := l.AddNIC(st, "", "11.9.0.6", "")
	if err != nil {
		t.Fatal(err)
	}
	if late.Iface != "eth2" || l.VMRunning(late) || !late.Created {
		t.Errorf("NIC added to a stopped VM: %+v, running %v", late, l.VMRunning(late))
	}
	if err := l.StartVM(st); err != nil {
		t.Fatal(err)
	}
	if !l.VMRunning(late) {
		t.Error("NIC added while stopped not running after StartVM")
	}
	checkStatic("restarted")

	// Migration through the NIC moves every NIC.
	for _, w := range []*Workload{nic, st} {
		if err := l.MigrateWorkload(w, "host-b"); err != nil {
			t.Fatal(err)
		}
	}
	hb, err := l.Host("host-b")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range append(l.NICs(vm), l.NICs(st)...) {
		if n.Host != "host-b" || !strings.Contains(EndpointYAML(n), "node: host-b") {
			t.Errorf("%s after migration: host %s", n.Name, n.Host)
		}
		if _, err := Ifindex(hb.NS, n.HostIface); err != nil {
			t.Errorf("%s not on host-b: %v", n.Name, err)
		}
		if _, err := Ifindex(ha.NS, n.HostIface); err == nil {
			t.Errorf("%s still on host-a", n.HostIface)
		}
	}
	checkNoAddress(t, l, vm)
	checkStatic("migrated")
	if n := len(relayPidsOf(t, l.Prefix)); n != 5 {
		t.Errorf("%d relays, want 5 (2 + 3 NICs)", n)
	}

	prefix := l.Prefix
	if err := l.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	assertGone(t, prefix)
	if pids := relayPidsOf(t, prefix); len(pids) > 0 {
		t.Errorf("relays of %s left after Close: %v", prefix, pids)
	}
}
