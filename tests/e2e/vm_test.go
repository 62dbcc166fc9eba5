package e2e

// End-to-end tests of issue 12: virtual machines on tap devices through a
// hypervisor's lifecycle (taps before and after their endpoints, a VM
// stopped and started with a new tap, live migration to another host with
// its floating IP), and the interfaces the agent may never touch. Every
// other suite also runs with VM workloads (make test: CALYX_LAB_WORKLOAD=vm
// and mixed); these build VMs whatever that says.

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/calyxnet/calyx/tests/lab"
)

// migrationBudget is how long a migrated VM may be unreachable, from the
// moment its tap exists on the new host and its endpoint names that host.
const migrationBudget = 2 * time.Second

// endpointRow returns the row of calyxctl endpoints dump on host for name.
func endpointRow(t *testing.T, l *lab.Lab, host, name string) (lab.Endpoint, bool) {
	t.Helper()
	eps, err := l.Endpoints(host)
	if err != nil {
		t.Fatalf("endpoints dump on %s: %v", host, err)
	}
	for _, ep := range eps {
		if ep.Name == name {
			return ep, true
		}
	}
	return lab.Endpoint{}, false
}

// waitEndpointState waits until calyxctl endpoints dump on host shows name
// in state, and returns its row.
func waitEndpointState(t *testing.T, l *lab.Lab, host, name, state string) lab.Endpoint {
	t.Helper()
	var row lab.Endpoint
	err := lab.Eventually(attachTimeout, 100*time.Millisecond, func() error {
		r, ok := endpointRow(t, l, host, name)
		if !ok {
			return fmt.Errorf("endpoint %s not in calyxctl endpoints dump on %s", name, host)
		}
		if r.State != state {
			return fmt.Errorf("endpoint %s on %s is %s (%s), want %s", name, host, r.State, r.Reason, state)
		}
		row = r
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return row
}

// TestVMLifecycle: VMs whose taps exist before their endpoints and one whose
// endpoint comes first; a VM stopped (its tap goes) and started again (a new
// tap of the same name, a new ifindex) works again without an agent restart.
func TestVMLifecycle(t *testing.T) {
	l := newLabKind(t, lab.KindVM)
	h, err := l.AddHost("host-a", "10.30.0.11/24")
	if err != nil {
		t.Fatal(err)
	}
	vm1, err := l.AddWorkload(h.Name, "vm1", "10.65.0.2", "")
	if err != nil {
		t.Fatal(err)
	}
	vm2, err := l.AddWorkload(h.Name, "vm2", "10.65.0.3", "")
	if err != nil {
		t.Fatal(err)
	}
	vm3, err := l.PlanWorkload(h.Name, "vm3", "10.65.0.4", "") // its endpoint comes first
	if err != nil {
		t.Fatal(err)
	}
	if err := l.StartAgent(h.Name); err != nil {
		t.Fatal(err)
	}
	e := &env{l: l, h: h, ws: []*lab.Workload{vm1, vm2, vm3}}
	e.apply(t, l.ModelYAML())
	e.waitAttached(t, vm1, vm2)
	e.waitPing(t, vm1, vm2.IP.String())
	for _, w := range []*lab.Workload{vm1, vm2} {
		if row := waitEndpointState(t, l, h.Name, w.Name, "ready"); row.Kind != "tap" {
			t.Errorf("endpoint %s: kind %q, want tap", w.Name, row.Kind)
		}
	}
	waitEndpointState(t, l, h.Name, vm3.Name, "pending")

	// The endpoint before its tap: the VM boots later.
	if err := l.CreateWorkload(vm3); err != nil {
		t.Fatal(err)
	}
	e.waitAttached(t, vm3)
	e.waitPing(t, vm3, vm1.IP.String())
	mustPing(t, l, vm1.NS, vm3.IP.String(), 3)
	waitEndpointState(t, l, h.Name, vm3.Name, "ready")

	// Stopped: the tap is gone, the endpoint waits for it, and nothing
	// reaches the VM.
	before, _ := endpointRow(t, l, h.Name, vm2.Name)
	if err := l.StopVM(vm2); err != nil {
		t.Fatal(err)
	}
	waitEndpointState(t, l, h.Name, vm2.Name, "pending")
	if err := l.WaitNoPing(vm1.NS, vm2.IP.String(), removeTimeout); err != nil {
		t.Errorf("a stopped VM still answers: %v", err)
	}
	// Started: a new tap with the same name and a new ifindex.
	if err := l.StartVM(vm2); err != nil {
		t.Fatal(err)
	}
	e.waitAttached(t, vm2)
	e.waitPing(t, vm1, vm2.IP.String())
	e.waitPing(t, vm2, vm1.IP.String())
	after := waitEndpointState(t, l, h.Name, vm2.Name, "ready")
	if after.Ifindex == before.Ifindex || after.Kind != "tap" {
		t.Errorf("vm2 after its restart: ifindex %d (was %d), kind %s; want a new ifindex on a tap", after.Ifindex, before.Ifindex, after.Kind)
	}
	st, err := l.HostIfaceStats(vm2)
	if err != nil {
		t.Fatal(err)
	}
	if st.Ifindex != after.Ifindex {
		t.Errorf("calyxctl shows vm2 on ifindex %d, the kernel's tap is %d", after.Ifindex, st.Ifindex)
	}
	// TCP after the restart, in both directions, and the counters of the
	// delivery into the new tap.
	s, err := l.StartEcho(vm2.NS, vm2.Name, fmt.Sprintf("0.0.0.0:%d", echoPort))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r, err := lab.TCPEcho(vm1.NS, echoAddr(vm2.IP.String()), echoTimeout)
	checkEcho(t, "vm1 -> restarted vm2 (TCP)", r, err, vm2.Name, vm1.IP, netip.AddrPort{})
	if n := counter(t, l, h.Name, vm2.HostIface, "to-workload"); n == 0 {
		t.Errorf("nothing counted to-workload on the new tap %s", vm2.HostIface)
	}
	if hz, rz, err := l.AgentHealth(h.Name); err != nil || hz != 200 || rz != 200 {
		t.Errorf("agent health after the VM's restart: healthz %d readyz %d (%v)", hz, rz, err)
	}
}

// TestVMMigration: a VM with a floating IP moves to another host (its tap
// goes from host-a and appears on host-b, and its endpoint names host-b).
// A TCP connection from a third host carries on, new connections work within
// migrationBudget, every host reaches the VM at its new place, and its
// floating IP follows: from outside through the host the gateway still
// routes it to, and directly once the gateway routes it to the new host.
func TestVMMigration(t *testing.T) {
	e := fipSetupKind(t, lab.KindVM)
	l, m := e.l, e.m
	wa, wb, wc := m.WA, m.WB, m.WC
	if wa.Host != m.HostA.Name {
		t.Fatalf("wa runs on %s, want %s", wa.Host, m.HostA.Name)
	}
	// An established connection from a VM on a third host.
	conn, err := lab.DialEcho(wc.NS, echoAddr(wa.IP.String()), echoTimeout)
	if err != nil {
		t.Fatalf("wc -> wa: %v", err)
	}
	defer conn.Close()
	if _, err := conn.Exchange("before", echoTimeout); err != nil {
		t.Fatalf("wc -> wa before the migration: %v", err)
	}

	// The migration: the hypervisor moves the VM, then the model says so.
	if err := l.MigrateWorkload(wa, m.HostB.Name); err != nil {
		t.Fatal(err)
	}
	if out, err := l.Apply("", lab.EndpointYAML(wa)); err != nil {
		t.Fatalf("apply wa on host-b: %v\n%s", err, out)
	}
	moved := time.Now()

	// The established connection carries on (TCP retransmits what was
	// lost while the routes changed).
	if _, err := conn.Exchange("after", migrationBudget+echoTimeout); err != nil {
		t.Errorf("wc -> wa: the established connection did not survive the migration: %v", err)
	} else if d := time.Since(moved); d > migrationBudget {
		t.Errorf("wc -> wa: the established connection came back after %s, want within %s", d.Round(time.Millisecond), migrationBudget)
	} else {
		t.Logf("established connection back %s after the migration", d.Round(time.Millisecond))
	}
	// New connections.
	var newConn time.Duration
	err = lab.Eventually(migrationBudget+echoTimeout, 50*time.Millisecond, func() error {
		_, err := lab.TCPEcho(wc.NS, echoAddr(wa.IP.String()), 500*time.Millisecond)
		newConn = time.Since(moved)
		return err
	})
	if err != nil {
		t.Errorf("wc -> wa: no new connection after the migration: %v", err)
	} else if newConn > migrationBudget {
		t.Errorf("wc -> wa: new connections work %s after the migration, want within %s", newConn.Round(time.Millisecond), migrationBudget)
	} else {
		t.Logf("new connections work %s after the migration", newConn.Round(time.Millisecond))
	}

	// Reachable at its new place from every host: a VM on the same host
	// (local delivery), one on another, and the old host itself.
	e2 := &env{l: l, h: m.HostB}
	e2.waitAttached(t, wa)
	for _, ns := range []string{wb.NS, wc.NS, m.HostA.NS} {
		// The first packet of the host's own may wait for a neighbour.
		if err := l.WaitPing(ns, wa.IP.String(), trafficTimeout); err != nil {
			t.Errorf("%s cannot reach the migrated VM: %v", ns, err)
		}
		mustPing(t, l, ns, wa.IP.String(), 3)
	}
	r, err := lab.TCPEcho(wb.NS, echoAddr(wa.IP.String()), echoTimeout)
	checkEcho(t, "wb -> wa on its host (TCP)", r, err, wa.Name, wb.IP, netip.AddrPort{})
	if n := counter(t, l, m.HostB.Name, wa.HostIface, "to-workload"); n == 0 {
		t.Errorf("nothing delivered into wa's tap on host-b")
	}
	if _, ok := endpointRow(t, l, m.HostA.Name, wa.Name); ok {
		t.Errorf("host-a still lists wa after the migration")
	}
	if row := waitEndpointState(t, l, m.HostB.Name, wa.Name, "ready"); row.Kind != "tap" {
		t.Errorf("wa on host-b: kind %q, want tap", row.Kind)
	}

	// The floating IP follows: the gateway still sends it to host-a, which
	// forwards it to host-b; then the gateway routes it to host-b.
	r, err = lab.TCPEcho(e.client.NS, echoAddr(fipA), echoTimeout)
	checkEcho(t, "client -> floating IP via the old host", r, err, wa.Name, e.client.IP, netip.AddrPort{})
	if err := l.RouteFloatingIP(fipA, m.HostB); err != nil {
		t.Fatal(err)
	}
	r, err = lab.TCPEcho(e.client.NS, echoAddr(fipA), echoTimeout)
	checkEcho(t, "client -> floating IP at the new host", r, err, wa.Name, e.client.IP, netip.AddrPort{})
	nat, err := l.NATDump(m.HostB.Name)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, row := range nat {
		if row.FloatingIP == fipA {
			found = true
			if row.Node != m.HostB.Name || !row.Local {
				t.Errorf("nat dump on host-b: %s on node %s (local %v), want host-b, local", fipA, row.Node, row.Local)
			}
		}
	}
	if !found {
		t.Errorf("nat dump on host-b has no %s", fipA)
	}
}

// TestVMUntouchableInterfaces: endpoints naming the underlay or an
// interface that holds a host address are refused by the agent (logged,
// counted, shown by calyxctl) and the host keeps its network, while every
// other endpoint works; lo and a Node's declared underlay interface are
// refused by calyxctl apply with the field and the reason.
func TestVMUntouchableInterfaces(t *testing.T) {
	e := setupKind(t, lab.KindVM, 2)
	l, h := e.l, e.h
	// A veth in the host namespace that carries a host address (an
	// operator's management interface, say).
	mgmt := l.Prefix + "mg"
	if _, err := l.Exec(h.NS, "ip", "link", "add", mgmt, "type", "veth", "peer", "name", mgmt+"p"); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"addr", "add", "192.0.2.1/32", "dev", mgmt}, {"link", "set", mgmt, "up"}} {
		if _, err := l.Exec(h.NS, append([]string{"ip"}, args...)...); err != nil {
			t.Fatal(err)
		}
	}
	sysctl := func(ifc, key string) string {
		r, err := l.Exec(h.NS, "cat", "/proc/sys/net/ipv4/conf/"+ifc+"/"+key)
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(r.Stdout)
	}
	ulAnnounce, mgmtAnnounce := sysctl(h.UnderlayIface, "arp_announce"), sysctl(mgmt, "arp_announce")

	bad := fmt.Sprintf(`apiVersion: calyx.io/v1
kind: WorkloadEndpoint
metadata:
  name: on-underlay
spec:
  node: %[1]s
  interface: %[2]s
  ipNetworks: [10.65.0.50/32]
---
apiVersion: calyx.io/v1
kind: WorkloadEndpoint
metadata:
  name: on-mgmt
spec:
  node: %[1]s
  interface: %[3]s
  ipNetworks: [10.65.0.51/32]
`, h.Name, h.UnderlayIface, mgmt)
	e.apply(t, bad)
	waitEndpointState(t, l, h.Name, "on-underlay", "refused-underlay")
	waitEndpointState(t, l, h.Name, "on-mgmt", "refused-host-address")

	// Nothing of theirs is programmed; the underlay keeps its own programs.
	links, err := l.Links(h.Name)
	if err != nil {
		t.Fatal(err)
	}
	if rows := lab.LinksFor(links, mgmt); len(rows) > 0 {
		t.Errorf("workload programs attached to %s: %+v", mgmt, rows)
	}
	for _, row := range lab.LinksFor(links, h.UnderlayIface) {
		if strings.HasSuffix(row.Program, "_wl") {
			t.Errorf("a workload program on the underlay %s: %+v", h.UnderlayIface, row)
		}
	}
	if got := sysctl(h.UnderlayIface, "arp_announce"); got != ulAnnounce {
		t.Errorf("arp_announce on the underlay changed: %s -> %s", ulAnnounce, got)
	}
	if got := sysctl(mgmt, "arp_announce"); got != mgmtAnnounce {
		t.Errorf("arp_announce on %s changed: %s -> %s", mgmt, mgmtAnnounce, got)
	}
	routes, err := l.Routes(h.Name)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"10.65.0.50", "10.65.0.51"} {
		if rt, ok := lab.RouteFor(routes, netip.MustParseAddr(a)); ok && rt.Type == "local-workload" {
			t.Errorf("a refused endpoint's address %s is routed: %+v", a, rt)
		}
	}
	// Reported: the agent's log and metrics.
	if log := l.AgentLog(h.Name); !strings.Contains(log, "endpoint refused") || !strings.Contains(log, "on-underlay") {
		t.Errorf("the agent did not log the refused endpoints")
	}
	if text, err := l.AgentMetrics(h.Name); err != nil {
		t.Error(err)
	} else if v, ok, err := lab.MetricSum(text, `calyx_local_endpoints{state="refused"}`); err != nil || !ok || v != 2 {
		t.Errorf(`calyx_local_endpoints{state="refused"} = %v (found %v, %v), want 2`, v, ok, err)
	}

	// The host keeps its network; the other endpoints keep working.
	mustPing(t, l, h.NS, h.Segment.Gateway.Addr().String(), 3)
	mustPing(t, l, e.ws[0].NS, e.ws[1].IP.String(), 3)
	if hz, rz, err := l.AgentHealth(h.Name); err != nil || hz != 200 || rz != 200 {
		t.Errorf("agent health with refused endpoints: healthz %d readyz %d (%v)", hz, rz, err)
	}

	// Deleted, they leave no state behind.
	if out, err := l.Delete(h.Name, bad); err != nil {
		t.Fatalf("delete the refused endpoints: %v\n%s", err, out)
	}
	err = lab.Eventually(attachTimeout, 100*time.Millisecond, func() error {
		for _, n := range []string{"on-underlay", "on-mgmt"} {
			if _, ok := endpointRow(t, l, h.Name, n); ok {
				return fmt.Errorf("%s still listed", n)
			}
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}

	// What the model knows is refused at apply: lo, and the interface a
	// Node declares as its underlay.
	node := fmt.Sprintf("apiVersion: calyx.io/v1\nkind: Node\nmetadata:\n  name: %s\nspec:\n  ipv4Address: %s\n  underlayInterface: %s\n",
		h.Name, h.Underlay, h.UnderlayIface)
	e.apply(t, node)
	for _, tc := range []struct{ iface, want string }{
		{h.UnderlayIface, fmt.Sprintf(`WorkloadEndpoint/refused: spec.interface: %q is the underlay interface of Node/%s`, h.UnderlayIface, h.Name)},
		{"lo", `spec.interface: "lo" is the host's loopback interface`},
	} {
		y := fmt.Sprintf("apiVersion: calyx.io/v1\nkind: WorkloadEndpoint\nmetadata:\n  name: refused\nspec:\n  node: %s\n  interface: %s\n  ipNetworks: [10.65.0.52/32]\n",
			h.Name, tc.iface)
		out, err := l.Apply(h.Name, y)
		if err == nil {
			t.Errorf("calyxctl apply accepted an endpoint on %s", tc.iface)
		} else if !strings.Contains(out+err.Error(), tc.want) {
			t.Errorf("calyxctl apply on %s: %v\n%s\nwant %q", tc.iface, err, out, tc.want)
		}
	}
	if _, ok := endpointRow(t, l, h.Name, "refused"); ok {
		t.Errorf("a refused apply changed the model")
	}
}
