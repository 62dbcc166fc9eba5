package ctl

import (
	"encoding/json"
	"strings"
	"testing"
)

// The seed's instance: eth0 on calico-v4, eth1 on net-b with a host route.
const subnetModel = `apiVersion: calyx.io/v1
kind: IPPool
metadata: {name: wl}
spec: {cidr: 10.65.0.0/16}
---
apiVersion: calyx.io/v1
kind: IPPool
metadata: {name: wl-b}
spec: {cidr: 11.8.0.0/16}
---
apiVersion: calyx.io/v1
kind: Subnet
metadata: {name: calico-v4}
spec: {cidr: 10.65.0.0/24, gatewayIP: 10.65.0.1, dnsNameservers: [10.65.0.53, 10.65.0.54], network: internal}
---
apiVersion: calyx.io/v1
kind: Subnet
metadata: {name: net-b}
spec:
  cidr: 11.8.0.0/24
  gatewayIP: 11.8.0.1
  enableDHCP: false
  hostRoutes: [{destination: 11.11.0.0/16, nextHop: 11.8.0.1}, {destination: 11.12.0.0/16, nextHop: 11.8.0.1}]
  leaseSeconds: 600
`

const vmNICs = `apiVersion: calyx.io/v1
kind: WorkloadEndpoint
metadata: {name: vm-1-eth0, labels: {calyx.io/instance: vm-1}}
spec: {node: host-a, interface: tap0, mac: "02:00:00:00:00:01", ipNetworks: [10.65.0.2/32]}
---
apiVersion: calyx.io/v1
kind: WorkloadEndpoint
metadata: {name: vm-1-eth1, labels: {calyx.io/instance: vm-1}}
spec: {node: host-a, interface: tap1, mac: "02:00:00:00:00:02", ipNetworks: [11.8.0.2/32]}
`

func TestSubnetApplyGetDelete(t *testing.T) {
	ds := t.TempDir()
	header := "NAME  CIDR  GATEWAY  DHCP  DNS  HOST-ROUTES  NETWORK\n"
	if r := run(t, ds, "", "get", "subnets"); r.code != 0 || r.out != header {
		t.Fatalf("get subnets on an empty store: %d %q %q", r.code, r.out, r.err)
	}
	r := run(t, ds, subnetModel, "apply", "-f", "-")
	if r.code != 0 || !strings.Contains(r.out, "applied Subnet/calico-v4\n") || !strings.Contains(r.out, "applied Subnet/net-b\n") {
		t.Fatalf("apply: %d %q %q", r.code, r.out, r.err)
	}
	if r.err != "" {
		t.Errorf("subnets without endpoints warned: %q", r.err)
	}
	wantTable := "NAME       CIDR          GATEWAY    DHCP  DNS                    HOST-ROUTES                NETWORK\n" +
		"calico-v4  10.65.0.0/24  10.65.0.1  yes   10.65.0.53,10.65.0.54  -                          internal\n" +
		"net-b      11.8.0.0/24   11.8.0.1   no    -                      11.11.0.0/16,11.12.0.0/16  -\n"
	for _, kind := range []string{"subnets", "Subnet", "SUBNETS", "subnet"} {
		if r = run(t, ds, "", "get", kind); r.code != 0 || r.out != wantTable {
			t.Errorf("get %s: %d %q\n%s\nwant\n%s", kind, r.code, r.err, r.out, wantTable)
		}
	}
	if r = run(t, ds, "", "get", "subnet", "net-b"); r.code != 0 || !strings.HasPrefix(r.out, "NAME   CIDR ") || !strings.Contains(r.out, "\nnet-b  11.8.0.0/24") {
		t.Errorf("get subnet net-b: %d %q %q", r.code, r.out, r.err)
	}
	if r = run(t, ds, "", "get", "subnet", "nope"); r.code != 1 || !strings.Contains(r.err, "Subnet/nope: not found") {
		t.Errorf("get of a missing subnet: %d %q", r.code, r.err)
	}

	r = run(t, ds, "", "get", "subnet", "calico-v4", "-o", "json")
	var objs []map[string]any
	if err := json.Unmarshal([]byte(r.out), &objs); err != nil || len(objs) != 1 {
		t.Fatalf("get -o json: %v\n%s", err, r.out)
	}
	spec := objs[0]["spec"].(map[string]any)
	if objs[0]["kind"] != "Subnet" || spec["gatewayIP"] != "10.65.0.1" || spec["enableDHCP"] != true || spec["leaseSeconds"] != 86400.0 {
		t.Errorf("get -o json = %v", objs)
	}

	// YAML output applies back and changes nothing.
	r = run(t, ds, "", "get", "subnets", "-o", "yaml")
	if r.code != 0 || !strings.Contains(r.out, "nextHop: 11.8.0.1") {
		t.Fatalf("get -o yaml: %d %q\n%s", r.code, r.err, r.out)
	}
	before := snapshotDir(t, ds)
	if back := run(t, ds, r.out, "apply", "-f", "-"); back.code != 0 {
		t.Fatalf("re-applying get -o yaml failed: %s\n%s", back.err, r.out)
	}
	assertSameDir(t, before, snapshotDir(t, ds))

	// A two-NIC instance: the host routes can choose between its NICs, so
	// no warning.
	if r = run(t, ds, vmNICs, "apply", "-f", "-"); r.code != 0 || r.err != "" {
		t.Fatalf("apply a two-NIC instance: %d %q", r.code, r.err)
	}

	if r = run(t, ds, "", "delete", "subnet", "net-b"); r.code != 0 || r.out != "deleted Subnet/net-b\n" {
		t.Fatalf("delete subnet: %d %q %q", r.code, r.out, r.err)
	}
	if r = run(t, ds, "", "delete", "Subnets", "net-b"); r.code != 1 || !strings.Contains(r.err, "Subnet/net-b: not found") {
		t.Fatalf("deleting it again: %d %q", r.code, r.err)
	}
}

// A host route on a subnet whose instances all have one NIC is accepted,
// with a warning on stderr.
func TestSubnetApplyWarns(t *testing.T) {
	ds := t.TempDir()
	single := strings.ReplaceAll(vmNICs, "calyx.io/instance: vm-1}", "app: vm}")
	r := run(t, ds, subnetModel+"---\n"+single, "apply", "-f", "-")
	if r.code != 0 {
		t.Fatalf("apply: %d %q", r.code, r.err)
	}
	want := "warning: Subnet/net-b: spec.hostRoutes: every instance in 11.8.0.0/24 has a single NIC: no endpoint in it (WorkloadEndpoint/vm-1-eth1) " +
		"shares its node and its calyx.io/instance label with another endpoint (harmless, but it cannot change anything: "
	if !strings.HasPrefix(r.err, want) || strings.Count(r.err, "\n") != 1 {
		t.Errorf("stderr:\n%s\nwant a line starting\n%s", r.err, want)
	}
	if !strings.Contains(r.out, "applied Subnet/net-b\n") {
		t.Errorf("stdout %q", r.out)
	}
	// Applying something else says nothing about it.
	if r = run(t, ds, "apiVersion: calyx.io/v1\nkind: IPPool\nmetadata: {name: other}\nspec: {cidr: 10.99.0.0/16}\n", "apply", "-f", "-"); r.code != 0 || r.err != "" {
		t.Errorf("unrelated apply: %d %q", r.code, r.err)
	}
}

func TestSubnetApplyRejectsBadInput(t *testing.T) {
	cases := []struct {
		name, doc, want string
	}{
		{"host route via another next hop",
			"kind: Subnet\nmetadata: {name: net-c}\nspec: {cidr: 10.65.1.0/24, gatewayIP: 10.65.1.1, hostRoutes: [{destination: 11.11.0.0/16, nextHop: 10.65.1.9}]}",
			"document 2 (Subnet/net-c): spec.hostRoutes[0].nextHop: 10.65.1.9 is not the subnet's gatewayIP 10.65.1.1: the local host is every instance's first hop " +
				"and routes all its traffic, so a route via any other next hop could never be followed; use nextHop: 10.65.1.1"},
		{"gateway outside",
			"kind: Subnet\nmetadata: {name: net-c}\nspec: {cidr: 10.65.1.0/24, gatewayIP: 10.65.2.1}",
			"(Subnet/net-c): spec.gatewayIP: 10.65.2.1 is outside spec.cidr 10.65.1.0/24"},
		{"gateway is an endpoint's address",
			"kind: Subnet\nmetadata: {name: net-c}\nspec: {cidr: 10.65.0.0/25, gatewayIP: 10.65.0.2}",
			"Subnet/net-c: spec.gatewayIP: 10.65.0.2 is an address of WorkloadEndpoint/vm-1-eth0 (spec.ipNetworks[0]); the gateway stands for the local host on every host"},
		{"an endpoint on the gateway",
			"kind: WorkloadEndpoint\nmetadata: {name: vm-2}\nspec: {node: host-a, interface: tap9, ipNetworks: [10.65.0.1/32]}",
			"WorkloadEndpoint/vm-2: spec.ipNetworks[0]: 10.65.0.1/32 is the gatewayIP of Subnet/calico-v4, which stands for the local host on every host; an instance cannot have it"},
		{"same cidr",
			"kind: Subnet\nmetadata: {name: net-c}\nspec: {cidr: 11.8.0.0/24, gatewayIP: 11.8.0.254}",
			"Subnet/net-c: spec.cidr: 11.8.0.0/24 is already the cidr of Subnet/net-b"},
	}
	ds := t.TempDir()
	if r := run(t, ds, subnetModel+"---\n"+vmNICs, "apply", "-f", "-"); r.code != 0 {
		t.Fatal(r.err)
	}
	before := snapshotDir(t, ds)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// A valid document first: the whole apply must still be refused.
			doc := "apiVersion: calyx.io/v1\nkind: IPPool\nmetadata: {name: ok}\nspec: {cidr: 10.70.0.0/16}\n---\napiVersion: calyx.io/v1\n" + tc.doc + "\n"
			r := run(t, ds, doc, "apply", "-f", "-")
			if r.code != 1 {
				t.Fatalf("exit = %d, want 1; stderr %q", r.code, r.err)
			}
			if !strings.Contains(r.err, tc.want) {
				t.Errorf("stderr %q does not contain %q", r.err, tc.want)
			}
			assertSameDir(t, before, snapshotDir(t, ds))
		})
	}
}
