package e2e

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/calyxnet/calyx/tests/lab"
)

// hostState is what an agent may change on its host, as text to compare:
// routes of every table (but the kernel's own), permanent neighbour entries, qdiscs and TC/XDP
// programs, the sysctls it sets, and whether its pin directory exists.
func hostState(t *testing.T, l *lab.Lab, h *lab.Host, ifaces []string) map[string]string {
	t.Helper()
	st := map[string]string{}
	run := func(key string, args ...string) {
		res, err := l.Exec(h.NS, args...)
		if err != nil {
			t.Fatalf("%s on %s: %v\n%s", strings.Join(args, " "), h.Name, err, res.Combined())
		}
		var lines []string
		for _, line := range strings.Split(strings.TrimSpace(res.Stdout), "\n") {
			// The kernel's own routes come and go with addresses (an
			// interface's link-local once its DAD is over) and with
			// forwarding (anycast routes), not with calyx's (proto 202).
			if !strings.Contains(line, "proto kernel") {
				lines = append(lines, line)
			}
		}
		slices.Sort(lines)
		st[key] = strings.Join(lines, "\n")
	}
	run("routes4", "ip", "-4", "route", "show", "table", "all")
	run("routes6", "ip", "-6", "route", "show", "table", "all")
	run("neighbours", "ip", "neigh", "show", "nud", "permanent")
	run("qdiscs", "tc", "qdisc", "show")
	run("xdp", "ip", "-o", "link", "show")
	var progs []string
	for _, name := range append([]string{h.UnderlayIface}, ifaces...) {
		in, out, err := lab.TCPrograms(h.NS, name)
		if err != nil {
			t.Fatalf("programs on %s %s: %v", h.Name, name, err)
		}
		progs = append(progs, fmt.Sprintf("%s: %d ingress, %d egress programs", name, in, out))
	}
	st["programs"] = strings.Join(progs, "\n")
	sysctls := []string{"net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding", "net.ipv4.ip_local_reserved_ports"}
	for _, i := range ifaces {
		sysctls = append(sysctls, "net.ipv4.conf."+i+".arp_announce", "net.ipv4.conf."+i+".route_localnet")
		run("filters "+i, "tc", "filter", "show", "dev", i, "ingress")
	}
	for _, s := range sysctls {
		run(s, "sysctl", "-n", s)
	}
	_, err := os.Stat(h.BPFFS)
	st["pins"] = fmt.Sprintf("pin directory present: %v", err == nil)
	return st
}

// diffState lists the keys whose value differs, with both values.
func diffState(a, b map[string]string) []string {
	var out []string
	for k, v := range a {
		if b[k] != v {
			out = append(out, fmt.Sprintf("%s:\n  before: %q\n  after:  %q", k, v, b[k]))
		}
	}
	slices.Sort(out)
	return out
}

// TestCleanup: calyx-agent --cleanup decommissions a host. The host (a veth
// and a VM workload, the sysctls the agent sets put to other values first)
// is recorded before the agent starts; the agent programs it (programs,
// routes, sysctls, pins) and carries traffic; --cleanup is refused while it
// runs, changing nothing; once it is stopped, --cleanup leaves the host as
// recorded, and a second run finds nothing left to do.
func TestCleanup(t *testing.T) {
	l := newLab(t)
	h, err := l.AddHost("host-a", "10.30.0.11/24")
	if err != nil {
		t.Fatal(err)
	}
	var ws []*lab.Workload
	for i, kind := range []lab.WorkloadKind{lab.KindVeth, lab.KindVM} {
		w, err := l.PlanWorkloadKind(h.Name, fmt.Sprintf("w%d", i+1), fmt.Sprintf("10.65.0.%d", i+2), "", kind)
		if err != nil {
			t.Fatal(err)
		}
		if err := l.CreateWorkload(w); err != nil {
			t.Fatal(err)
		}
		ws = append(ws, w)
	}
	ifaces := []string{ws[0].HostIface, ws[1].HostIface}
	// Values the agent changes, so that putting them back shows.
	settings := [][]string{{"net.ipv4.ip_forward=0"}, {"net.ipv6.conf.all.forwarding=0"},
		{"net.ipv4.ip_local_reserved_ports=4000-4010"}}
	for _, i := range ifaces {
		settings = append(settings, []string{"net.ipv4.conf." + i + ".arp_announce=1"}, []string{"net.ipv4.conf." + i + ".route_localnet=0"})
	}
	for _, s := range settings {
		if res, err := l.Exec(h.NS, "sysctl", "-qw", s[0]); err != nil {
			t.Fatalf("sysctl %s: %v\n%s", s[0], err, res.Combined())
		}
	}
	before := hostState(t, l, h, ifaces)

	if err := l.StartAgent(h.Name); err != nil {
		t.Fatal(err)
	}
	model := lab.JoinYAML(lab.Pool{Name: "pool", CIDR: "10.65.0.0/16", NATOutgoing: true}.YAML(), lab.NodeYAML(h),
		lab.EndpointYAML(ws[0]), lab.EndpointYAML(ws[1]))
	if out, err := l.Apply("", model); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	if err := l.WaitLinks(h.Name, attachTimeout, ifaces...); err != nil {
		t.Fatal(err)
	}
	if err := l.WaitPing(ws[0].NS, ws[1].IP.String(), trafficTimeout); err != nil {
		t.Fatalf("w1 -> w2 under the agent: %v", err)
	}
	running := hostState(t, l, h, ifaces)
	for _, k := range []string{"programs", "routes4", "net.ipv4.ip_forward", "net.ipv4.ip_local_reserved_ports",
		"net.ipv4.conf." + ifaces[0] + ".arp_announce", "pins"} {
		if running[k] == before[k] {
			t.Errorf("the agent changed nothing of %s (%q): the test would prove nothing", k, before[k])
		}
	}

	cleanup := func() lab.Result {
		res, _ := l.Exec(h.NS, l.AgentBinary(), "--cleanup", "--bpffs", h.BPFFS)
		return res
	}
	t.Run("refused-while-running", func(t *testing.T) {
		res := cleanup()
		if res.ExitCode == 0 || !strings.Contains(res.Stderr, "stop the agent first") {
			t.Errorf("--cleanup with the agent running: exit %d, want a failure saying to stop the agent first:\n%s", res.ExitCode, res.Combined())
		}
		if d := diffState(running, hostState(t, l, h, ifaces)); len(d) > 0 {
			t.Errorf("a refused --cleanup changed the host:\n%s", strings.Join(d, "\n"))
		}
		mustPing(t, l, ws[0].NS, ws[1].IP.String(), 1)
	})

	if err := l.StopAgent(h.Name); err != nil {
		t.Fatal(err)
	}
	res := cleanup()
	if res.ExitCode != 0 {
		t.Fatalf("--cleanup: exit %d\n%s", res.ExitCode, res.Combined())
	}
	t.Logf("--cleanup: %s", res.Stdout)
	if d := diffState(before, hostState(t, l, h, ifaces)); len(d) > 0 {
		t.Errorf("after --cleanup the host differs from before the agent:\n%s", strings.Join(d, "\n"))
	}
	if again := cleanup(); again.ExitCode != 0 || !strings.Contains(again.Stdout, "detached 0 links, 0 clsact filters (0 qdiscs); removed 0 routes, 0 neighbour entries, 0 pins; restored 0 settings") {
		t.Errorf("a second --cleanup: exit %d, want nothing left to do:\n%s", again.ExitCode, again.Combined())
	}
}
