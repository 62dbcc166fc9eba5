package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/calyxnet/calyx/bpf"
	"github.com/calyxnet/calyx/bpfmap"
	"github.com/calyxnet/calyx/tests/lab"
)

// previousReleaseCommit is the release before this one's layout change:
// its pins have no versions in their names (but cx_ct_v2 and cx_nat_v2),
// and its cx_event_budget counts suppressed events in 32 bits.
const previousReleaseCommit = "2c7f20db3b3e17c7f6bc1ac775aa5f728d2989af"

// upgradePolicy lets TCP echoPort, ICMP and ICMPv6 reach wa, nothing else:
// the flows to wa during the upgrade are ones policy decided.
var upgradePolicy = fmt.Sprintf(`apiVersion: calyx.io/v1
kind: NetworkPolicy
metadata:
  name: web-ingress
spec:
  selector: role == "web"
  types: [Ingress]
  ingress:
  - action: Allow
    protocol: TCP
    destination:
      ports: [%d]
  - action: Allow
    protocol: ICMP
  - action: Allow
    protocol: ICMPv6
`, echoPort)

// TestUpgradeFromPreviousRelease: every host runs the previous release's
// agent; host-a has a veth and a VM workload (wa and wv, one of each),
// wv and wb (host-b) dual-stack. On host-a, four TCP connections exchange
// a line every 20 ms (a client to wa's floating IP, wa and wv to the
// external server by natOutgoing, wb to wa, which policy admits), and four
// pings every 10 ms (to the floating IP, by natOutgoing from wa and from
// wv, and wb to wv over IPv6). A spoofed flood has had the
// monitor's budget suppress events. host-a's agent is stopped (programs
// and pins stay) and this build's started on the same pins: it adopts the
// renamed maps, converts cx_event_budget from v1, swaps the programs and
// removes the old pins. No ping is lost, no exchange fails, both
// translated connections keep their translation, the policy still holds,
// and the suppressed count goes on from where it was. Then back to the
// previous release the same way: again nothing is lost.
func TestUpgradeFromPreviousRelease(t *testing.T) {
	old := buildAgentAt(t, previousReleaseCommit)
	ipip, vxlan := lab.ModeVXLANCrossSubnet.PoolModes()
	var wv *lab.Workload
	e := ctSetup(t, ctOptions{kind: lab.KindMixed, agentBinary: old,
		extra: func(m *lab.MultiHost) error {
			var err error
			if wv, err = m.AddWorkload(m.HostA.Name, "wv", "10.65.1.3", 0); err != nil {
				return err
			}
			if err := m.Lab.AddIPv6(wv, "fd00:65:1::4"); err != nil {
				return err
			}
			return m.Lab.AddIPv6(m.WB, "fd00:65:1::3")
		},
		labels: map[string]map[string]string{"wa": {"role": "web"}, "wv": {"role": "web"}},
		docs:   []string{upgradePolicy, lab.PoolModeYAML("workloads6", "fd00:65:1::/64", ipip, vxlan)}})
	l, m := e.l, e.m
	ha := m.HostA
	if m.WA.Kind == wv.Kind {
		t.Fatalf("wa and wv are both %s workloads; the test wants a VM and a veth on host-a", wv.Kind)
	}
	t.Logf("on host-a, wa is a %s workload, wv a %s", m.WA.Kind, wv.Kind)
	pinned := func(name string) bool {
		_, err := os.Stat(filepath.Join(ha.BPFFS, name))
		return err == nil
	}
	if !pinned(bpf.CalyxMapCxRoutes) || pinned(bpfmap.PinName(bpf.CalyxMapCxRoutes)) {
		t.Fatalf("host-a's pins under the previous release: want cx_routes unversioned")
	}
	if err := lab.Eventually(trafficTimeout, 200*time.Millisecond, func() error {
		_, err := lab.TCPEcho(m.WB.NS, echoAddr(m.WA.IP.String()), noReplyTimeout)
		return err
	}); err != nil {
		t.Fatalf("wb -> wa (policy allows): %v", err)
	}
	if err := l.WaitPing(m.WB.NS, wv.IPv6.String(), trafficTimeout); err != nil {
		t.Fatalf("wb -> wv over IPv6: %v", err)
	}

	// The previous release's budget (256 events a second per CPU)
	// suppresses most of a flood of spoofed frames from wa.
	waMAC, err := l.MAC(m.WA.NS, "eth0")
	if err != nil {
		t.Fatal(err)
	}
	spoofed := lab.ICMPEchoFrame(lab.Eth{Src: waMAC, Dst: lab.BroadcastMAC},
		lab.IPv4Header{Src: netip.MustParseAddr("10.65.0.99"), Dst: e.server.IP}, 0x55, 1, []byte("spoofed"))
	if err := l.InjectCount(m.WA.NS, "eth0", 3000, spoofed); err != nil {
		t.Fatal(err)
	}
	suppressed := func() float64 {
		t.Helper()
		text, err := l.AgentMetrics(ha.Name)
		if err != nil {
			t.Fatal(err)
		}
		n, ok, err := lab.MetricSum(text, "calyx_monitor_events_suppressed_total")
		if err != nil || !ok {
			t.Fatalf("calyx_monitor_events_suppressed_total on host-a: present %v, %v", ok, err)
		}
		return n
	}
	before := suppressed()
	if before == 0 {
		t.Fatalf("the spoofed flood had no event suppressed on host-a")
	}

	fip := startSteady(t, "client -> FIP(wa)", e.client.NS, echoAddr(fipA), 20*time.Millisecond, e.fipFlowCheck)
	snat := startSteady(t, "wa -> server (natOutgoing)", m.WA.NS, echoAddr(e.server.IP.String()), 20*time.Millisecond, e.snatFlowCheck)
	ew := startSteady(t, "wb -> wa (policy)", m.WB.NS, echoAddr(m.WA.IP.String()), 20*time.Millisecond, func(r lab.EchoReply) error {
		if r.Server != m.WA.Name || r.Peer.Addr() != m.WB.IP {
			return fmt.Errorf("answered by %s, who saw %s; want %s seeing %s", r.Server, r.Peer, m.WA.Name, m.WB.IP)
		}
		return nil
	})
	vmSnat := startSteady(t, "wv -> server (natOutgoing)", wv.NS, echoAddr(e.server.IP.String()), 20*time.Millisecond, func(r lab.EchoReply) error {
		if a := ha.Underlay.Addr(); r.Server != e.server.Name || r.Peer.Addr() != a || r.Peer.Port() < natPortLow || r.Peer.Port() > natPortHigh {
			return fmt.Errorf("answered by %s, who saw %s; want %s seeing %s:%d-%d", r.Server, r.Peer, e.server.Name, a, natPortLow, natPortHigh)
		}
		return nil
	})
	// across runs switchAgent while four pings every 10 ms (to the
	// floating IP, by natOutgoing from wa and from wv, wb to wv over IPv6)
	// go on: each one must be answered.
	across := func(what string, switchAgent func()) {
		t.Helper()
		const pings = 1000
		type pingRun struct {
			what string
			st   lab.PingStats
			err  error
		}
		runs := []*pingRun{{what: "client -> FIP(wa)"}, {what: "wa -> server (natOutgoing)"}, {what: "wv -> server (natOutgoing)"}, {what: "wb -> wv (IPv6)"}}
		var wg sync.WaitGroup
		for i, args := range [][2]string{{e.client.NS, fipA}, {m.WA.NS, e.server.IP.String()}, {wv.NS, e.server.IP.String()}, {m.WB.NS, wv.IPv6.String()}} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				runs[i].st, runs[i].err = l.Ping(args[0], args[1], pings, "-i", "0.01", "-q")
			}()
		}
		time.Sleep(2 * time.Second)
		switchAgent()
		wg.Wait()
		for _, r := range runs {
			t.Logf("ping %s across the %s: %d/%d answered", r.what, what, r.st.Received, r.st.Transmitted)
			if r.err != nil || r.st.Transmitted != pings || r.st.Received != pings {
				t.Errorf("ping %s across the %s: %d/%d answered (%v), want every one", r.what, what, r.st.Received, r.st.Transmitted, r.err)
			}
		}
		e.checkNATFlows(t, fip, snat)
	}

	across("upgrade", func() {
		if err := l.StopAgent(ha.Name); err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond)
		started := time.Now()
		if err := l.StartAgent(ha.Name); err != nil {
			t.Fatal(err)
		}
		t.Logf("this build's agent on host-a ready after %s", time.Since(started).Round(time.Millisecond))
		if err := lab.Eventually(20*time.Second, 100*time.Millisecond, func() error {
			if pinned(bpf.CalyxMapCxRoutes) || pinned(bpf.CalyxMapCxEventBudget) {
				return fmt.Errorf("the previous release's pins are still in %s", ha.BPFFS)
			}
			return nil
		}); err != nil {
			t.Errorf("after the first sync: %v\n%s", err, lastLines(l.AgentLog(ha.Name), 30))
		} else {
			t.Logf("old pins removed %s after this build's agent started", time.Since(started).Round(time.Millisecond))
		}
		for _, name := range bpfmap.Names() {
			if !pinned(bpfmap.PinName(name)) {
				t.Errorf("%s not pinned in %s", bpfmap.PinName(name), ha.BPFFS)
			}
		}
	})
	log := l.AgentLog(ha.Name)
	migrated := 0
	for line := range strings.Lines(log) {
		if strings.Contains(line, "pinned map migrated") {
			migrated++
			if strings.Contains(line, bpf.CalyxMapCxEventBudget) {
				t.Logf("host-a agent: %s", strings.TrimSpace(line))
			}
		}
	}
	if want := len(bpfmap.Names()) - 2; migrated != want {
		t.Errorf("host-a's agent logged %d maps migrated, want %d (all but cx_ct and cx_nat, whose pins keep their names):\n%s", migrated, want, lastLines(log, 40))
	}
	if after := suppressed(); after < before {
		t.Errorf("calyx_monitor_events_suppressed_total on host-a: %v after the upgrade, %v before: the count did not carry over", after, before)
	} else {
		t.Logf("suppressed events: %v before the upgrade, %v after", before, after)
	}
	// The policy holds for what it does not allow, and new connections
	// are translated.
	if _, err := lab.TCPEcho(m.WB.NS, fmt.Sprintf("%s:%d", m.WA.IP, echoPort+1), noReplyTimeout); err == nil {
		t.Errorf("wb -> wa:%d answered after the upgrade; the policy allows only %d", echoPort+1, echoPort)
	}
	r, err := lab.TCPEcho(e.client.NS, echoAddr(fipA), echoTimeout)
	if err == nil {
		err = e.fipFlowCheck(r)
	}
	if err != nil {
		t.Errorf("new connection client -> FIP(wa) after the upgrade: %v", err)
	}

	// Back to the previous release: it adopts the conntrack pins (their
	// names are its own) and makes its other maps anew; the flows carry
	// on, translated as they were.
	across("downgrade", func() {
		if err := l.StopAgent(ha.Name); err != nil {
			t.Fatal(err)
		}
		if err := l.StartAgentBinary(ha.Name, old); err != nil {
			t.Fatal(err)
		}
		if err := lab.Eventually(20*time.Second, 100*time.Millisecond, func() error {
			if !pinned(bpf.CalyxMapCxRoutes) {
				return fmt.Errorf("the previous release made no cx_routes in %s", ha.BPFFS)
			}
			return nil
		}); err != nil {
			t.Error(err)
		}
	})
	for _, s := range []*steady{fip, snat, ew, vmSnat} {
		s.stop(t)
	}
}

// buildAgentAt builds calyx-agent at commit into a temporary directory,
// from a detached worktree of the repository the test runs in (removed
// again), and returns its path.
func buildAgentAt(t *testing.T, commit string) string {
	t.Helper()
	lab.RequireTools(t, "git", "go")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	run := func(dir string, args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, args[0], args[1:]...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			return string(out), fmt.Errorf("%s: %w\n%s", strings.Join(args, " "), err, lastLines(string(out), 20))
		}
		return string(out), nil
	}
	top, err := run(".", "git", "rev-parse", "--show-toplevel")
	if err != nil {
		lab.SkipOrFailInCI(t, "the previous release's agent (%s) is built from this repository's history, but this is no git repository: %v", commit, err)
	}
	top = strings.TrimSpace(top)
	if _, err := run(top, "git", "cat-file", "-e", commit+"^{commit}"); err != nil {
		lab.SkipOrFailInCI(t, "commit %s (the previous release) is not in %s (a shallow clone? fetch main's history): %v", commit, top, err)
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	if _, err := run(top, "git", "worktree", "add", "--detach", src, commit); err != nil {
		t.Fatalf("worktree of %s: %v", commit, err)
	}
	remove := func() {
		if _, err := os.Stat(src); err != nil {
			return
		}
		if _, err := run(top, "git", "worktree", "remove", "--force", src); err != nil {
			t.Errorf("remove worktree: %v", err)
		}
	}
	t.Cleanup(remove)
	bin := filepath.Join(dir, "calyx-agent-old")
	start := time.Now()
	if _, err := run(src, "go", "build", "-o", bin, "./cmd/calyx-agent"); err != nil {
		t.Fatalf("build the agent of %s: %v", commit, err)
	}
	remove()
	t.Logf("built calyx-agent of %s in %s", commit[:12], time.Since(start).Round(time.Millisecond))
	return bin
}
