package lab

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// bpfFSMagic is BPF_FS_MAGIC from linux/magic.h.
const bpfFSMagic = 0xcafe4a11

func newTestLab(t *testing.T, opts Options) *Lab {
	t.Helper()
	Require(t)
	if opts.Logf == nil {
		opts.Logf = t.Logf
	}
	l, err := New(opts)
	if err != nil {
		t.Fatalf("new lab: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("close lab: %v", err)
		}
	})
	return l
}

// assertGone checks that nothing of the lab with prefix is left.
func assertGone(t *testing.T, prefix string) {
	t.Helper()
	names, err := namespacesWithPrefix(prefix)
	if err != nil {
		t.Fatal(err)
	}
	if len(names) > 0 {
		t.Errorf("namespaces left: %v", names)
	}
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns list: %v: %s", err, out)
	}
	if strings.Contains(string(out), prefix) {
		t.Errorf("ip netns list still shows %s:\n%s", prefix, out)
	}
	mounts, err := mountPoints()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range mounts {
		if strings.Contains(m, prefix) {
			t.Errorf("mount left: %s", m)
		}
	}
	if _, err := os.Stat(filepath.Join(RunRoot, prefix)); !os.IsNotExist(err) {
		t.Errorf("%s still exists (stat: %v)", filepath.Join(RunRoot, prefix), err)
	}
	out, err = exec.Command("ip", "-o", "link").CombinedOutput()
	if err != nil {
		t.Fatalf("ip link: %v: %s", err, out)
	}
	if strings.Contains(string(out), prefix) {
		t.Errorf("root namespace has interfaces named after %s:\n%s", prefix, out)
	}
}

func mustExec(t *testing.T, l *Lab, ns string, args ...string) string {
	t.Helper()
	res, err := l.Exec(ns, args...)
	if err != nil {
		t.Fatal(err)
	}
	return res.Stdout
}

// TestTopology builds two hosts and two workloads without an agent, checks
// what exists, then checks that Close removes all of it.
func TestTopology(t *testing.T) {
	l := newTestLab(t, Options{})
	if !prefixRE.MatchString(l.Prefix) {
		t.Fatalf("prefix %q does not match %s", l.Prefix, prefixRE)
	}
	ha, err := l.AddHost("host-a", "10.30.0.11/24")
	if err != nil {
		t.Fatal(err)
	}
	hb, err := l.AddHost("host-b", "10.30.0.12/24")
	if err != nil {
		t.Fatal(err)
	}
	w1, err := l.AddWorkload("host-a", "w1", "10.65.0.2", "02:00:00:00:00:01")
	if err != nil {
		t.Fatal(err)
	}
	w2, err := l.AddWorkload("host-a", "w2", "10.65.0.3/32", "")
	if err != nil {
		t.Fatal(err)
	}
	w2.OmitMAC = true

	names, err := namespacesWithPrefix(l.Prefix)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{l.Prefix + "-fabric", l.Prefix + "-host-a", l.Prefix + "-host-b", l.Prefix + "-w1", l.Prefix + "-w2"}
	if strings.Join(names, ",") != strings.Join(want, ",") {
		t.Errorf("namespaces = %v, want %v", names, want)
	}
	for _, w := range []*Workload{w1, w2} {
		if !strings.HasPrefix(w.HostIface, l.Prefix+"w") || len(w.HostIface) > 15 {
			t.Errorf("host iface name %q", w.HostIface)
		}
		link := mustExec(t, l, "", "ip", "-n", ha.NS, "-o", "link", "show", w.HostIface)
		if !strings.Contains(link, "state UP") && !strings.Contains(link, ",UP") {
			t.Errorf("%s not up: %s", w.HostIface, link)
		}
		eth := mustExec(t, l, "", "ip", "-n", w.NS, "-o", "link", "show", "eth0")
		if !strings.Contains(eth, w.MAC.String()) {
			t.Errorf("%s eth0 lacks MAC %s: %s", w.Name, w.MAC, eth)
		}
		addr := mustExec(t, l, "", "ip", "-n", w.NS, "-o", "-4", "addr", "show", "eth0")
		if !strings.Contains(addr, w.IP.String()+"/32") {
			t.Errorf("%s eth0 lacks %s/32: %s", w.Name, w.IP, addr)
		}
		routes := mustExec(t, l, "", "ip", "-n", w.NS, "route")
		for _, r := range []string{"default via 169.254.1.1 dev eth0", "169.254.1.1 dev eth0 scope link"} {
			if !strings.Contains(routes, r) {
				t.Errorf("%s routes lack %q:\n%s", w.Name, r, routes)
			}
		}
		lo := mustExec(t, l, "", "ip", "-n", w.NS, "-o", "link", "show", "lo")
		if !strings.Contains(lo, "UP") {
			t.Errorf("%s lo not up: %s", w.Name, lo)
		}
	}
	if w1.MAC.String() != "02:00:00:00:00:01" {
		t.Errorf("w1 MAC = %s", w1.MAC)
	}
	if w2.MAC[0] != 0x02 {
		t.Errorf("derived MAC %s is not locally administered unicast", w2.MAC)
	}

	var st syscall.Statfs_t
	if err := syscall.Statfs(l.BPFFS, &st); err != nil {
		t.Fatal(err)
	}
	if uint32(st.Type) != bpfFSMagic {
		t.Errorf("%s has fs type %#x, want bpffs", l.BPFFS, st.Type)
	}
	if fi, err := os.Stat(l.DatastoreDir); err != nil || !fi.IsDir() {
		t.Errorf("datastore dir: %v", err)
	}

	// The underlay works without any agent: host to gateway, host to host.
	if _, err := l.Ping(ha.NS, "10.30.0.1", 2); err != nil {
		t.Errorf("host-a -> gateway: %v", err)
	}
	if _, err := l.Ping(ha.NS, hb.Underlay.Addr().String(), 2); err != nil {
		t.Errorf("host-a -> host-b: %v", err)
	}
	tr, err := l.TCPTransfer(ha.NS, hb.NS, hb.Underlay.Addr(), 7000, 10<<20, 30*time.Second)
	if err != nil {
		t.Errorf("tcp transfer over the underlay: %v", err)
	} else if tr.Received != 10<<20 {
		t.Errorf("received %d bytes", tr.Received)
	}

	model := l.ModelYAML()
	for _, s := range []string{
		"kind: IPPool", "cidr: 10.65.0.0/16",
		"kind: Node", "name: host-a", "ipv4Address: 10.30.0.11/24",
		"kind: WorkloadEndpoint", "interface: " + w1.HostIface, `mac: "02:00:00:00:00:01"`, "- 10.65.0.2/32",
	} {
		if !strings.Contains(model, s) {
			t.Errorf("model lacks %q:\n%s", s, model)
		}
	}
	if strings.Contains(EndpointYAML(w2), "mac:") {
		t.Errorf("endpoint with OmitMAC renders a mac:\n%s", EndpointYAML(w2))
	}
	if n := strings.Count(model, "\n---\n"); n != 4 {
		t.Errorf("model has %d separators, want 4:\n%s", n, model)
	}

	if err := l.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	assertGone(t, l.Prefix)
	if err := l.Close(); err != nil {
		t.Errorf("second close: %v", err)
	}
}

// TestCloseAfterPartialSetup makes workload creation fail halfway and checks
// Close still removes everything, including what it did not create itself.
func TestCloseAfterPartialSetup(t *testing.T) {
	l := newTestLab(t, Options{})
	if _, err := l.AddHost("host-a", "10.30.0.11/24"); err != nil {
		t.Fatal(err)
	}
	// A namespace in the way makes CreateWorkload fail at "ip netns add".
	mustExec(t, l, "", "ip", "netns", "add", l.NSName("w1"))
	if _, err := l.AddWorkload("host-a", "w1", "10.65.0.2", ""); err == nil {
		t.Fatal("AddWorkload succeeded over an existing namespace")
	}
	if _, err := l.AddHost("bad name", "10.30.0.12/24"); err == nil {
		t.Error("AddHost accepted a name with a space")
	}
	if _, err := l.AddHost("host-c", "10.99.0.12/24"); err == nil {
		t.Error("AddHost accepted an address outside every segment")
	}
	if err := l.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	assertGone(t, l.Prefix)
}

// TestReapLeftovers simulates a crashed run: a lab with a process still
// running in it is removed by Reap alone.
func TestReapLeftovers(t *testing.T) {
	l := newTestLab(t, Options{})
	h, err := l.AddHost("host-a", "10.30.0.11/24")
	if err != nil {
		t.Fatal(err)
	}
	p, err := l.ExecBackground(h.NS, time.Minute, "sleep", "300")
	if err != nil {
		t.Fatal(err)
	}
	left, err := Leftovers()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(left, ","), l.Prefix) {
		t.Errorf("Leftovers() = %v, lacks %s", left, l.Prefix)
	}
	if err := Reap(l.Prefix); err != nil {
		t.Fatalf("reap: %v", err)
	}
	select {
	case <-p.Done():
	case <-time.After(5 * time.Second):
		t.Error("process in the lab namespace survived Reap")
	}
	assertGone(t, l.Prefix)
	if err := Reap("bogus"); err == nil {
		t.Error("Reap accepted an invalid prefix")
	}
}

// TestExecBounds checks that commands are killed at their timeout,
// including children of the command.
func TestExecBounds(t *testing.T) {
	l := newTestLab(t, Options{})
	start := time.Now()
	res, err := l.Run(Command{Args: []string{"sh", "-c", "sleep 30 & sleep 30"}, Timeout: 300 * time.Millisecond})
	if err == nil || !res.TimedOut {
		t.Errorf("Run past its timeout: err %v, result %+v", err, res)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("timed-out command took %s to return", d)
	}
	p, err := l.ExecBackground("", 300*time.Millisecond, "sleep", "30")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Wait(10 * time.Second); err == nil || !strings.Contains(err.Error(), "timeout") {
		t.Errorf("background command past its timeout: %v", err)
	}
	res, err = l.Run(Command{Args: []string{"cat"}, Stdin: "hello"})
	if err != nil || res.Stdout != "hello" {
		t.Errorf("stdin: %q, %v", res.Stdout, err)
	}
	if res, err := l.Exec("", "false"); err == nil || res.ExitCode != 1 {
		t.Errorf("false: exit %d, err %v", res.ExitCode, err)
	}
}

// buildFakeBin compiles testdata/fakebin as calyx-agent and calyxctl.
func buildFakeBin(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		SkipOrFailInCI(t, "go tool not on PATH: %v", err)
	}
	dir := t.TempDir()
	for _, name := range []string{"calyx-agent", "calyxctl"} {
		out, err := exec.Command(goBin, "build", "-o", filepath.Join(dir, name), "./testdata/fakebin").CombinedOutput()
		if err != nil {
			t.Fatalf("build fake %s: %v: %s", name, err, out)
		}
	}
	return dir
}

// TestAgentPlumbing runs a fake agent through start, readiness, metrics,
// SIGKILL, restart and Close, and a fake calyxctl through Calyxctl.
func TestAgentPlumbing(t *testing.T) {
	Require(t)
	bin := buildFakeBin(t)
	l := newTestLab(t, Options{BinDir: bin, AgentReadyTimeout: 10 * time.Second})
	h, err := l.AddHost("host-a", "10.30.0.11/24")
	if err != nil {
		t.Fatal(err)
	}
	if err := l.StartAgent(h.Name); err != nil {
		t.Fatal(err)
	}
	if err := l.StartAgent(h.Name); err == nil {
		t.Error("second StartAgent on the same host succeeded")
	}
	m, err := l.AgentMetrics(h.Name)
	if err != nil {
		t.Fatal(err)
	}
	if sum, ok, err := MetricSum(m, "calyx_sync_map_writes_total"); err != nil || !ok || sum != 3 {
		t.Errorf("first start: writes %v (found %v, err %v)", sum, ok, err)
	}
	pid := l.AgentPid(h.Name)
	if err := l.KillAgent(h.Name, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if processAlive(pid) {
		t.Errorf("agent pid %d alive after SIGKILL", pid)
	}
	if err := l.StartAgent(h.Name); err != nil {
		t.Fatal(err)
	}
	m, err = l.AgentMetrics(h.Name)
	if err != nil {
		t.Fatal(err)
	}
	if sum, _, _ := MetricSum(m, "calyx_sync_map_writes_total"); sum != 0 {
		t.Errorf("restart: writes %v, want 0", sum)
	}
	hz, rz, err := l.AgentHealth(h.Name)
	if err != nil || hz != 200 || rz != 200 {
		t.Errorf("health %d ready %d err %v", hz, rz, err)
	}
	if err := l.StopAgent(h.Name); err != nil {
		t.Errorf("SIGTERM: %v", err)
	}
	if log := l.AgentLog(h.Name); !strings.Contains(log, "fake agent got terminated") || strings.Count(log, "starting:") != 2 {
		t.Errorf("agent log:\n%s", log)
	}

	// An agent that exits at once is reported with its log.
	err = l.StartAgent(h.Name, "--fail", "yes")
	if err == nil || !strings.Contains(err.Error(), "failing as asked") {
		t.Errorf("failing agent: %v", err)
	}

	out, _, err := l.CalyxctlInput(h.Name, "kind: IPPool\n", "-o", "json", "apply", "-f", "-")
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Args  []string `json:"args"`
		Stdin string   `json:"stdin"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatal(err)
	}
	wantArgs := []string{"--datastore", "file://" + l.DatastoreDir, "--bpffs", h.BPFFS, "--agent=http://" + l.opts.MetricsAddr, "-o", "json", "apply", "-f", "-"}
	if strings.Join(got.Args, " ") != strings.Join(wantArgs, " ") || got.Stdin != "kind: IPPool\n" {
		t.Errorf("calyxctl got %q stdin %q", got.Args, got.Stdin)
	}

	// Close with the agent running kills it and removes everything.
	if err := l.StartAgent(h.Name); err != nil {
		t.Fatal(err)
	}
	pid = l.AgentPid(h.Name)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if processAlive(pid) {
		t.Errorf("agent pid %d alive after Close", pid)
	}
	assertGone(t, l.Prefix)
}

func TestMetricSum(t *testing.T) {
	text := `# HELP calyx_sync_map_writes_total Map entries written.
# TYPE calyx_sync_map_writes_total counter
calyx_sync_map_writes_total{map="endpoints"} 2
calyx_sync_map_writes_total{map="routes",x="a b}"} 3
calyx_sync_map_writes_total_extra 100
calyx_sync_map_writes_totalx 100
other 5
`
	sum, ok, err := MetricSum(text, "calyx_sync_map_writes_total")
	if err != nil || !ok || sum != 5 {
		t.Errorf("sum %v ok %v err %v, want 5", sum, ok, err)
	}
	if _, ok, _ := MetricSum(text, "missing_total"); ok {
		t.Error("found a missing metric")
	}
	sum, ok, err = MetricSum("plain 1.5 1700000000\n", "plain")
	if err != nil || !ok || sum != 1.5 {
		t.Errorf("plain: %v %v %v", sum, ok, err)
	}
}

func TestParsePing(t *testing.T) {
	st, err := ParsePing("...\n3 packets transmitted, 0 received, +3 errors, 100% packet loss, time 2003ms\n")
	if err != nil || st.Transmitted != 3 || st.Received != 0 || st.Loss() != 1 {
		t.Errorf("got %+v, %v", st, err)
	}
	st, err = ParsePing("5 packets transmitted, 5 received, 0% packet loss, time 4005ms")
	if err != nil || st.Loss() != 0 {
		t.Errorf("got %+v, %v", st, err)
	}
	if _, err := ParsePing("ping: connect: Network is unreachable"); err == nil {
		t.Error("parsed a summary from nothing")
	}
}

func TestParseIperf(t *testing.T) {
	rep, err := ParseIperf(`{"end":{"sum_sent":{"bytes":104857600},"sum_received":{"bytes":102105088,"seconds":0.5,"bits_per_second":1.6e9}}}`)
	if err != nil || rep.SentBytes != 104857600 || rep.Bytes != 102105088 || rep.BitsPerSecond != 1.6e9 {
		t.Errorf("got %+v, %v", rep, err)
	}
	if _, err := ParseIperf(`{"error":"unable to connect"}`); err == nil {
		t.Error("no error for an iperf3 error report")
	}
}
