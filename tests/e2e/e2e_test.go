package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/calyxnet/calyx/bpf"
	"github.com/calyxnet/calyx/bpfmap"
	"github.com/calyxnet/calyx/tests/lab"
)

// TestWorkloadToWorkload: two workloads on one host ping each other both
// ways, move 100 MB over TCP, reach the host and are reached by it, with the
// programs attached by TCX and by clsact.
func TestWorkloadToWorkload(t *testing.T) {
	for _, mode := range []string{"tcx", "clsact"} {
		t.Run(mode, func(t *testing.T) {
			e := setup(t, 2, "--attach", mode)
			l, w1, w2 := e.l, e.ws[0], e.ws[1]

			links, err := l.Links(e.h.Name)
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range e.ws {
				rows := lab.LinksFor(links, w.HostIface)
				if len(rows) == 0 {
					t.Errorf("links does not list %s: %+v", w.HostIface, links)
				}
				for _, r := range rows {
					if r.Mode != mode {
						t.Errorf("%s %s hook attached with mode %q, want %q", w.HostIface, r.Hook, r.Mode, mode)
					}
				}
			}

			e.waitPing(t, w2, w1.IP.String())
			mustPing(t, l, w1.NS, w2.IP.String(), 5)
			mustPing(t, l, w2.NS, w1.IP.String(), 5)

			const n = 100 << 20
			tr, err := l.TCPTransfer(w1.NS, w2.NS, w2.IP, 5201, n, 60*time.Second)
			if err != nil {
				t.Errorf("TCP transfer w1 -> w2: %v", err)
			} else {
				t.Logf("TCP w1 -> w2: %d bytes in %s (%.2f Gbit/s, informational)", tr.Received, tr.Duration.Round(time.Millisecond), tr.Gbps())
			}
			// The transfer shows in the per-endpoint counters, by name: what
			// w1 sent, what w2 was delivered.
			metrics, err := l.AgentMetrics(e.h.Name)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range []struct {
				w   lab.Workload
				dir string
			}{{*w1, "from-workload"}, {*w2, "to-workload"}} {
				name := fmt.Sprintf(`calyx_endpoint_bytes_total{direction=%q,endpoint=%q,interface=%q}`, c.dir, c.w.Name, c.w.HostIface)
				if got, found, err := lab.MetricSum(metrics, name); err != nil || !found || got < n {
					t.Errorf("%s = %v (found %v, err %v), want at least the %d bytes moved", name, got, found, err, n)
				}
			}

			hostIP := e.h.Underlay.Addr().String()
			for _, w := range e.ws {
				if err := l.WaitPing(e.h.NS, w.IP.String(), trafficTimeout); err != nil {
					t.Errorf("host cannot reach %s: %v", w.Name, err)
				} else {
					mustPing(t, l, e.h.NS, w.IP.String(), 3)
				}
				if err := l.WaitPing(w.NS, hostIP, trafficTimeout); err != nil {
					t.Errorf("%s cannot reach the host's underlay address %s: %v", w.Name, hostIP, err)
				} else {
					mustPing(t, l, w.NS, hostIP, 3)
				}
			}
		})
	}
}

// TestAntiSpoofing: a source address or a source MAC that is not the
// endpoint's is dropped and counted.
func TestAntiSpoofing(t *testing.T) {
	e := setup(t, 3)
	l, w1, w2, w3 := e.l, e.ws[0], e.ws[1], e.ws[2]
	e.waitPing(t, w3, w2.IP.String())

	t.Run("ip", func(t *testing.T) {
		const spoofed = "10.65.0.99"
		if _, err := l.Exec("", "ip", "-n", w1.NS, "addr", "add", spoofed+"/32", "dev", "eth0"); err != nil {
			t.Fatal(err)
		}
		before := counter(t, l, e.h.Name, w1.HostIface, "drop-spoof-ip")
		st, err := l.Ping(w1.NS, w2.IP.String(), 3, "-I", spoofed)
		if err == nil || st.Received > 0 {
			t.Errorf("ping from spoofed %s was answered (%d/%d):\n%s", spoofed, st.Received, st.Transmitted, st.Output)
		}
		waitCounter(t, l, e.h.Name, w1.HostIface, "drop-spoof-ip", before)
		// The endpoint's own address still works from the same interface.
		mustPing(t, l, w1.NS, w2.IP.String(), 3, "-I", w1.IP.String())
	})

	t.Run("mac", func(t *testing.T) {
		const spoofedMAC = "02:66:66:66:66:66"
		before := counter(t, l, e.h.Name, w3.HostIface, "drop-spoof-mac")
		if _, err := l.Exec("", "ip", "-n", w3.NS, "link", "set", "eth0", "address", spoofedMAC); err != nil {
			t.Fatal(err)
		}
		st, err := l.Ping(w3.NS, w2.IP.String(), 3)
		if err == nil || st.Received > 0 {
			t.Errorf("ping with spoofed MAC %s was answered (%d/%d):\n%s", spoofedMAC, st.Received, st.Transmitted, st.Output)
		}
		waitCounter(t, l, e.h.Name, w3.HostIface, "drop-spoof-mac", before)

		// Back to the endpoint's MAC, traffic flows again.
		if _, err := l.Exec("", "ip", "-n", w3.NS, "link", "set", "eth0", "address", w3.MAC.String()); err != nil {
			t.Fatal(err)
		}
		if err := l.WaitPing(w3.NS, w2.IP.String(), trafficTimeout); err != nil {
			t.Errorf("after restoring the MAC: %v", err)
		}
	})
}

// TestEndpointDelete: deleting one endpoint stops its traffic and detaches
// its interface; the others keep working.
func TestEndpointDelete(t *testing.T) {
	e := setup(t, 3)
	l, w1, w2, w3 := e.l, e.ws[0], e.ws[1], e.ws[2]
	e.waitPing(t, w1, w3.IP.String())
	e.waitPing(t, w3, w1.IP.String())

	if out, errOut, err := l.Calyxctl(e.h.Name, "delete", "workloadendpoint", w3.Name); err != nil {
		t.Fatalf("calyxctl delete: %v\n%s%s", err, out, errOut)
	}
	if err := l.WaitNoPing(w1.NS, w3.IP.String(), removeTimeout); err != nil {
		t.Errorf("w1 -> deleted w3: %v", err)
	}
	if err := l.WaitNoPing(w3.NS, w1.IP.String(), removeTimeout); err != nil {
		t.Errorf("deleted w3 -> w1: %v", err)
	}
	if err := l.WaitNoLinks(e.h.Name, removeTimeout, w3.HostIface); err != nil {
		t.Error(err)
	}
	eps, err := l.Endpoints(e.h.Name)
	if err != nil {
		t.Fatal(err)
	}
	for _, ep := range eps {
		if ep.Name == w3.Name || ep.Interface == w3.HostIface {
			t.Errorf("endpoints dump still lists the deleted endpoint: %+v", ep)
		}
	}
	links, err := l.Links(e.h.Name)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []*lab.Workload{w1, w2} {
		if len(lab.LinksFor(links, w.HostIface)) == 0 {
			t.Errorf("links lost %s when %s was deleted", w.HostIface, w3.Name)
		}
	}
	mustPing(t, l, w1.NS, w2.IP.String(), 5)
	mustPing(t, l, w2.NS, w1.IP.String(), 5)
}

// TestAgentRestart: SIGKILLing the agent and starting it again loses no
// packet of a 20/s ping, and the new agent rewrites nothing.
func TestAgentRestart(t *testing.T) {
	e := setup(t, 2)
	l, w1, w2 := e.l, e.ws[0], e.ws[1]

	// A fixed count (10s at 20/s) rather than an interrupt, so ping waits
	// for every reply and the loss figure is exact.
	const count = 200
	ping, err := l.ExecBackground(w1.NS, 60*time.Second, "ping", "-n", "-i", "0.05", "-W", "1", "-c", strconv.Itoa(count), w2.IP.String())
	if err != nil {
		t.Fatal(err)
	}
	replies := func() int {
		out, _ := ping.Output()
		return strings.Count(out, "bytes from")
	}
	if err := lab.Eventually(5*time.Second, 50*time.Millisecond, func() error {
		if n := replies(); n < 10 {
			return fmt.Errorf("%d replies so far", n)
		}
		return nil
	}); err != nil {
		t.Fatalf("ping did not get going: %v", err)
	}

	if err := l.KillAgent(e.h.Name, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killedAt := replies()
	if err := l.StartAgent(e.h.Name); err != nil {
		t.Fatal(err)
	}
	t.Logf("agent restarted; %d replies before the kill, %d now", killedAt, replies())

	res, err := ping.Wait(45 * time.Second)
	st, perr := lab.ParsePing(res.Stdout)
	switch {
	case perr != nil:
		t.Fatalf("ping: %v (%v)", perr, err)
	case st.Transmitted != count || st.Received != st.Transmitted:
		t.Errorf("ping across the restart: %d/%d answered, want no loss (%v)\n%s", st.Received, st.Transmitted, err, lastLines(res.Stdout, 15))
	}
	if replies() <= killedAt {
		t.Errorf("no reply after the agent was killed")
	}

	metrics, err := l.AgentMetrics(e.h.Name)
	if err != nil {
		t.Fatal(err)
	}
	writes, found, err := lab.MetricSum(metrics, "calyx_sync_map_writes_total")
	if err != nil || !found {
		t.Fatalf("calyx_sync_map_writes_total not in /metrics (err %v):\n%s", err, metrics)
	}
	if writes != 0 {
		var rows []string
		for line := range strings.Lines(metrics) {
			if strings.HasPrefix(line, "calyx_sync_map_writes_total") {
				rows = append(rows, strings.TrimSpace(line))
			}
		}
		t.Errorf("restarted agent wrote %v map entries, want 0:\n%s", writes, strings.Join(rows, "\n"))
	}

	// Still fully working afterwards.
	e.waitAttached(t, e.ws...)
	mustPing(t, l, w1.NS, w2.IP.String(), 3)
	mustPing(t, l, w2.NS, w1.IP.String(), 3)
}

// TestBadInput: every invalid apply is rejected whole, names the field and
// the reason, and leaves the datastore byte-for-byte unchanged.
func TestBadInput(t *testing.T) {
	l := newLab(t)
	// No agent or namespace is needed: apply only talks to the datastore.
	base := lab.JoinYAML(
		lab.PoolYAML("lab-pool", lab.WorkloadPool),
		`apiVersion: calyx.io/v1
kind: IPPool
metadata:
  name: ext
spec:
  cidr: 10.200.0.0/24
  external: true
`,
		`apiVersion: calyx.io/v1
kind: IPPool
metadata:
  name: off
spec:
  cidr: 10.201.0.0/24
  disabled: true
`,
		`apiVersion: calyx.io/v1
kind: Node
metadata:
  name: host-a
spec:
  ipv4Address: 10.30.0.11/24
`,
		endpoint("w1", "cxtestw1", "10.65.0.2/32"),
	)
	if out, err := l.Apply("", base); err != nil {
		t.Fatalf("valid base model rejected: %v\n%s", err, out)
	}

	cases := []struct {
		name string
		yaml string
		// path must appear in stderr; at least one of reason too.
		path   string
		reason []string
		// all must all appear in stderr.
		all []string
	}{
		{
			name: "pool cidr not a prefix",
			yaml: lab.PoolYAML("bad", "10.66.0.0/33"),
			path: "spec.cidr", reason: []string{"invalid", "not a valid", "prefix", "/33"},
		},
		{
			name: "endpoint address not an address",
			yaml: endpoint("w9", "cxtestw9", "10.65.0.300/32"),
			path: "spec.ipNetworks[0]", reason: []string{"invalid", "not a valid", "parse"},
		},
		{
			name: "unknown field",
			yaml: strings.Replace(endpoint("w9", "cxtestw9", "10.65.0.9/32"), "  node:", "  color: blue\n  node:", 1),
			path: "spec.color", reason: []string{"unknown", "not allowed", "unexpected", "not found"},
		},
		{
			name: "address of another endpoint",
			yaml: endpoint("w9", "cxtestw9", "10.65.0.2/32"),
			path: "spec.ipNetworks[0]", reason: []string{"already", "duplicate", "in use", "used by", "conflict"},
		},
		{
			name: "same address twice in one apply",
			yaml: lab.JoinYAML(endpoint("wa", "cxtestwa", "10.65.0.50/32"), endpoint("wb", "cxtestwb", "10.65.0.50/32")),
			path: "spec.ipNetworks[0]", reason: []string{"already", "duplicate", "in use", "used by", "conflict"},
		},
		{
			name: "address in no pool",
			yaml: endpoint("w9", "cxtestw9", "10.99.0.5/32"),
			path: "spec.ipNetworks[0]", reason: []string{"pool"},
		},
		{
			name: "address in an external pool",
			yaml: endpoint("w9", "cxtestw9", "10.200.0.5/32"),
			path: "spec.ipNetworks[0]", reason: []string{"pool"},
		},
		{
			name: "address in a disabled pool",
			yaml: endpoint("w9", "cxtestw9", "10.201.0.5/32"),
			path: "spec.ipNetworks[0]", reason: []string{"pool"},
		},
		{
			name: "ipip and vxlan both Always",
			yaml: `apiVersion: calyx.io/v1
kind: IPPool
metadata:
  name: both
spec:
  cidr: 10.66.0.0/16
  ipipMode: Always
  vxlanMode: Always
`,
			path: "spec", reason: []string{"both", "only one", "exclusive", "cannot"}, all: []string{"ipipMode", "vxlanMode"},
		},
		{
			name: "valid documents with one invalid: nothing applied",
			yaml: lab.JoinYAML(
				lab.PoolYAML("extra", "10.66.0.0/16"),
				endpoint("w8", "cxtestw8", "10.65.0.8/32"),
				endpoint("w9", "cxtestw9", "10.99.0.9/32"),
			),
			path: "spec.ipNetworks[0]", reason: []string{"pool"},
		},
	}

	dir := t.TempDir()
	before := hashTree(t, l.DatastoreDir)
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// Through a file, the documented form (the base went through stdin).
			f := filepath.Join(dir, fmt.Sprintf("case%d.yaml", i))
			if err := os.WriteFile(f, []byte(c.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			out, errOut, err := l.Calyxctl("", "apply", "-f", f)
			if err == nil {
				t.Errorf("apply succeeded, want rejection\nstdout: %s\ninput:\n%s", out, c.yaml)
			}
			if !strings.Contains(errOut, c.path) {
				t.Errorf("stderr does not name field %s:\n%s", c.path, errOut)
			}
			if !containsAny(errOut, c.reason...) {
				t.Errorf("stderr gives no reason (want one of %q):\n%s", c.reason, errOut)
			}
			for _, s := range c.all {
				if !strings.Contains(errOut, s) {
					t.Errorf("stderr does not mention %s:\n%s", s, errOut)
				}
			}
			if after := hashTree(t, l.DatastoreDir); after != before {
				t.Errorf("datastore changed by a rejected apply: %s -> %s", before, after)
			}
		})
	}
	out, errOut, err := l.Calyxctl("", "-o", "json", "get", "workloadendpoints")
	if err != nil {
		t.Fatalf("get workloadendpoints: %v\n%s", err, errOut)
	}
	for _, name := range []string{"w8", "w9", "wa", "wb"} {
		if strings.Contains(out, `"`+name+`"`) {
			t.Errorf("rejected endpoint %s is in the datastore:\n%s", name, out)
		}
	}
}

// endpoint renders a WorkloadEndpoint on host-a without a MAC.
func endpoint(name, iface, cidr string) string {
	return "apiVersion: calyx.io/v1\nkind: WorkloadEndpoint\nmetadata:\n  name: " + name +
		"\nspec:\n  node: host-a\n  interface: " + iface + "\n  ipNetworks:\n  - " + cidr + "\n"
}

// TestEndpointBeforeInterface: an endpoint applied before its interface
// exists is attached once the interface appears, and carries traffic.
func TestEndpointBeforeInterface(t *testing.T) {
	l := newLab(t)
	h, err := l.AddHost("host-a", "10.30.0.11/24")
	if err != nil {
		t.Fatal(err)
	}
	w1, err := l.AddWorkload(h.Name, "w1", "10.65.0.2", "")
	if err != nil {
		t.Fatal(err)
	}
	w2, err := l.PlanWorkload(h.Name, "w2", "10.65.0.3", "")
	if err != nil {
		t.Fatal(err)
	}
	if err := l.StartAgent(h.Name); err != nil {
		t.Fatal(err)
	}
	e := &env{l: l, h: h, ws: []*lab.Workload{w1, w2}}
	e.apply(t, l.ModelYAML())
	e.waitAttached(t, w1)

	// The agent stays healthy with an endpoint whose interface is missing.
	if hz, rz, err := l.AgentHealth(h.Name); err != nil || hz != 200 || rz != 200 {
		t.Errorf("agent health with a missing interface: healthz %d readyz %d (%v)", hz, rz, err)
	}
	if links, err := l.Links(h.Name); err != nil {
		t.Fatal(err)
	} else if rows := lab.LinksFor(links, w2.HostIface); len(rows) > 0 {
		t.Errorf("links lists %s before it exists: %+v", w2.HostIface, rows)
	}

	if err := l.CreateWorkload(w2); err != nil {
		t.Fatal(err)
	}
	e.waitAttached(t, w2)
	e.waitPing(t, w1, w2.IP.String())
	e.waitPing(t, w2, w1.IP.String())
	mustPing(t, l, w1.NS, w2.IP.String(), 5)
	mustPing(t, l, w2.NS, w1.IP.String(), 5)
}

// TestResyncRepairsMapEdits: an entry deleted from a pinned map by hand
// (here with bpftool) comes back at the agent's next periodic resync, and
// traffic with it.
func TestResyncRepairsMapEdits(t *testing.T) {
	lab.RequireTools(t, "bpftool")
	e := setup(t, 2, "--resync-interval", "500ms")
	w2 := e.ws[1]
	a4 := w2.IP.As4()
	key := []string{"key", "hex", "80", "00", "00", "00", "00", "00", "00", "00", "00", "00", "00", "00", "00", "00", "ff", "ff"}
	for _, b := range a4 {
		key = append(key, fmt.Sprintf("%02x", b))
	}
	writes := func() float64 {
		text, err := e.l.AgentMetrics(e.h.Name)
		if err != nil {
			t.Fatal(err)
		}
		n, _, _ := lab.MetricSum(text, "calyx_sync_map_writes_total")
		return n
	}
	before := writes()
	args := append([]string{"bpftool", "map", "delete", "pinned", filepath.Join(e.h.BPFFS, bpfmap.PinName(bpf.CalyxMapCxRoutes))}, key...)
	if res, err := e.l.Exec("", args...); err != nil {
		t.Fatalf("delete %s's route with bpftool: %v\n%s", w2.Name, err, res.Combined())
	}
	err := lab.Eventually(10*time.Second, 100*time.Millisecond, func() error {
		rs, err := e.l.Routes(e.h.Name)
		if err != nil {
			return err
		}
		for _, r := range rs {
			if r.CIDR == w2.IP.String()+"/32" && r.Type == "local-workload" {
				return nil
			}
		}
		return fmt.Errorf("route for %s not restored", w2.IP)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.l.WaitPing(e.ws[0].NS, w2.IP.String(), trafficTimeout); err != nil {
		t.Errorf("w1 -> w2 after the repair: %v", err)
	}
	// The route came back by the agent's write, not by anything else.
	if d := writes() - before; d < 1 {
		t.Errorf("map writes +%v after the deletion, want the repair counted", d)
	}
	text, err := e.l.AgentMetrics(e.h.Name)
	if err != nil {
		t.Fatal(err)
	}
	if n, ok, _ := lab.MetricSum(text, "calyx_resyncs_total"); !ok || n < 1 {
		t.Errorf("calyx_resyncs_total = %v (present %v), want at least 1", n, ok)
	}
}

// TestIPv6Workloads: IPv6 workloads on one host reach each other and the host
// through their gateway fe80::1, whose neighbour solicitations calyx answers
// in BPF (no proxy NDP, no address on the host side).
func TestIPv6Workloads(t *testing.T) {
	l := newLab(t)
	h, err := l.AddHost("host-a", "10.30.0.11/24")
	if err != nil {
		t.Fatal(err)
	}
	var ws []*lab.Workload
	for i, v6 := range []string{"fd00:65::2", "fd00:65::3"} {
		w, err := l.AddWorkload(h.Name, fmt.Sprintf("w%d", i+1), fmt.Sprintf("10.65.0.%d", i+2), "")
		if err != nil {
			t.Fatal(err)
		}
		if err := l.AddIPv6(w, v6); err != nil {
			t.Fatal(err)
		}
		ws = append(ws, w)
	}
	if _, err := l.Exec(h.NS, "ip", "-6", "addr", "add", "fd00:30::11/64", "dev", h.UnderlayIface, "nodad"); err != nil {
		t.Fatal(err)
	}
	if err := l.StartAgent(h.Name); err != nil {
		t.Fatal(err)
	}
	model := lab.JoinYAML(lab.PoolYAML("v4", "10.65.0.0/16"), lab.PoolYAML("v6", "fd00:65::/64"), lab.NodeYAML(h),
		lab.EndpointYAML(ws[0]), lab.EndpointYAML(ws[1]))
	if out, err := l.Apply("", model); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	if err := l.WaitLinks(h.Name, attachTimeout, ws[0].HostIface, ws[1].HostIface); err != nil {
		t.Fatal(err)
	}
	if err := l.WaitPing(ws[0].NS, ws[1].IPv6.String(), trafficTimeout); err != nil {
		t.Fatalf("w1 -> w2 over IPv6: %v", err)
	}
	if err := l.WaitPing(h.NS, ws[0].IPv6.String(), trafficTimeout); err != nil {
		t.Errorf("host -> w1 over IPv6: %v", err)
	}
	if err := l.WaitPing(ws[1].NS, "fd00:30::11", trafficTimeout); err != nil {
		t.Errorf("w2 -> host over IPv6: %v", err)
	}
	if _, err := l.TCPTransfer(ws[0].NS, ws[1].NS, ws[1].IPv6, 5201, 16<<20, 30*time.Second); err != nil {
		t.Errorf("TCP over IPv6: %v", err)
	}
	cs, err := l.Counters(h.Name)
	if err != nil {
		t.Fatal(err)
	}
	if n := lab.CounterPackets(cs, ws[0].HostIface, "nd-reply"); n == 0 {
		t.Errorf("no nd-reply counted on %s: the gateway was not answered in BPF", ws[0].HostIface)
	}
	if n := lab.CounterPackets(cs, ws[0].HostIface, "deliver-local"); n == 0 {
		t.Errorf("no deliver-local on %s: IPv6 between workloads did not take the BPF path", ws[0].HostIface)
	}
}
