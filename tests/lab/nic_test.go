package lab

import (
	"strings"
	"testing"
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
