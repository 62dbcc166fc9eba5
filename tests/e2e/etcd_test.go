package e2e

// End-to-end tests of issue 6: three agents share one etcd (with TLS and
// client certificates) in the lab. Nodes come from the agents' registration
// and stay live through their leases; workloads applied with calyxctl on the
// etcd are reachable across hosts; etcd taken away for 30 s while traffic
// flows loses no packet, the agents say why they are not ready and converge
// on a change made once etcd is back; a deleted node takes its routes with it
// on every other host.

import (
	"fmt"
	"net/netip"
	"os"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/calyxnet/calyx/tests/lab"
)

const (
	// etcdOutage is how long etcd stays away in TestEtcdFailStatic.
	etcdOutage = 30 * time.Second
	// nodeTTL is the agents' --node-ttl: a stopped agent's node shows as
	// not live within it.
	nodeTTL = 5 * time.Second
	// pingInterval paces the streams that run through the outage.
	pingInterval = 50 * time.Millisecond
)

// etcdLab is the three-host lab with the lab's etcd as the only datastore.
type etcdLab struct {
	m    *lab.MultiHost
	l    *lab.Lab
	etcd *lab.Etcd
}

// newEtcdLab builds the three hosts, adds etcd (TLS) on the fabric segment,
// applies a Node for host-a with a label and a stale address (registration
// must keep the one and fix the other), starts the agents (they register
// the rest) and applies the pool and the endpoints.
func newEtcdLab(t *testing.T) *etcdLab {
	t.Helper()
	lab.RequireEtcd(t)
	l := newLab(t)
	m, err := lab.BuildMultiHost(l, lab.ModeVXLAN)
	if err != nil {
		t.Fatalf("build three hosts: %v", err)
	}
	e, err := l.AddEtcd(lab.EtcdOptions{Segment: lab.FabricSegment, TLS: true})
	if err != nil {
		t.Fatalf("etcd: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("=== etcd log (%s, tail):\n%s", e.LogPath, lastLines(readFile(e.LogPath), 40))
		}
	})
	t.Logf("etcd at %s in %s (TLS, client certificates)", e.URL(), e.NS)

	stale := "apiVersion: calyx.io/v1\nkind: Node\nmetadata:\n  name: host-a\n  labels: {rack: r1}\nspec:\n  ipv4Address: 10.30.0.99/24\n"
	if out, err := l.Apply("", stale); err != nil {
		t.Fatalf("apply host-a's node: %v\n%s", err, out)
	}
	if err := m.StartAgents("--node-ttl", nodeTTL.String()); err != nil {
		t.Fatalf("start agents: %v", err)
	}
	docs := []string{m.PoolYAML(m.Mode)}
	for _, w := range m.Workloads() {
		docs = append(docs, lab.EndpointYAML(w))
	}
	if out, err := l.Apply("", lab.JoinYAML(docs...)); err != nil {
		t.Fatalf("apply pool and endpoints: %v\n%s", err, out)
	}
	if err := m.WaitLinks(attachTimeout); err != nil {
		t.Fatalf("programs not attached: %v", err)
	}
	return &etcdLab{m: m, l: l, etcd: e}
}

// TestEtcdSharedDatastore: nodes registered by the agents (labels kept,
// address fixed) and live; workloads reachable across hosts (ping and TCP);
// a node deleted with calyxctl loses its routes on every other host.
func TestEtcdSharedDatastore(t *testing.T) {
	el := newEtcdLab(t)
	l, m := el.l, el.m

	// Registration: every node has its underlay address, host-a kept its
	// label; all are live.
	waitNodes(t, l, func(nodes map[string]lab.NodeRow) error {
		for _, h := range m.Hosts() {
			n, ok := nodes[h.Name]
			if !ok {
				return fmt.Errorf("no node %s", h.Name)
			}
			if n.Spec.IPv4Address != h.Underlay.String() {
				return fmt.Errorf("node %s has ipv4Address %s, want %s", h.Name, n.Spec.IPv4Address, h.Underlay)
			}
			if n.Status == nil || !n.Status.Live {
				return fmt.Errorf("node %s is not live: %+v", h.Name, n.Status)
			}
		}
		if nodes["host-a"].Metadata.Labels["rack"] != "r1" {
			return fmt.Errorf("host-a lost its label: %v", nodes["host-a"].Metadata.Labels)
		}
		return nil
	})
	table, _, err := l.Calyxctl("", "get", "nodes")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("calyxctl get nodes:\n%s", table)
	if !strings.Contains(table, "LIVE") || strings.Count(table, " yes\n") != 3 {
		t.Errorf("get nodes table does not show three live nodes:\n%s", table)
	}

	checkReachable(t, l, [][2]*lab.Workload{{m.WA, m.WB}, {m.WA, m.WC}, {m.WB, m.WC}})

	// host-c goes: its agent first (it would register the node again),
	// then the node. Its endpoint stays in the model; without its node
	// nothing routes to it.
	if err := l.StopAgent(m.HostC.Name); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	waitNodes(t, l, func(nodes map[string]lab.NodeRow) error {
		if n := nodes["host-c"]; n.Status == nil || n.Status.Live {
			return fmt.Errorf("host-c still live: %+v", n.Status)
		}
		return nil
	})
	t.Logf("host-c not live %v after its agent stopped (--node-ttl %v)", time.Since(start).Round(100*time.Millisecond), nodeTTL)
	if out, _, err := l.Calyxctl("", "delete", "node", "host-c"); err != nil {
		t.Fatalf("delete node host-c: %v\n%s", err, out)
	}
	start = time.Now()
	hostC := m.HostC.Underlay.Addr()
	for _, h := range []*lab.Host{m.HostA, m.HostB} {
		err := lab.Eventually(removeTimeout, 100*time.Millisecond, func() error {
			rs, err := l.Routes(h.Name)
			if err != nil {
				return err
			}
			for _, r := range rs {
				p, _ := netip.ParsePrefix(r.CIDR)
				if r.Node == "host-c" || r.NextHop == hostC.String() || p.Contains(hostC) || (r.Type == "remote-workload" && p.Contains(m.WC.IP)) {
					return fmt.Errorf("%s still routes %s (%s via %s, node %s)", h.Name, r.CIDR, r.Type, r.NextHop, r.Node)
				}
			}
			return nil
		})
		if err != nil {
			t.Error(err)
		}
	}
	t.Logf("host-c's routes gone from host-a and host-b %v after calyxctl delete node", time.Since(start).Round(time.Millisecond))
	if err := l.WaitNoPing(m.WA.NS, m.WC.IP.String(), removeTimeout); err != nil {
		t.Errorf("wa still reaches wc after host-c was deleted: %v", err)
	}
	mustPing(t, l, m.WA.NS, m.WB.IP.String(), 3)
	nodes := getNodes(t, l)
	if _, ok := nodes["host-c"]; ok || len(nodes) != 2 {
		t.Errorf("nodes after delete: %v", nodes)
	}
}

// TestEtcdFailStatic: etcd goes away for 30 s while pings (every 50 ms) and
// a TCP connection run between the hosts: nothing is lost, the dataplane is
// untouched, every agent's /readyz says the datastore is unreachable; once
// etcd is back a new workload is applied and every agent converges on it.
func TestEtcdFailStatic(t *testing.T) {
	el := newEtcdLab(t)
	l, m, e := el.l, el.m, el.etcd
	checkReachable(t, l, [][2]*lab.Workload{{m.WA, m.WB}, {m.WA, m.WC}, {m.WB, m.WC}})

	// The workload added after the outage: its interface exists from the
	// start, its endpoint comes later.
	wd, err := m.AddWorkload(m.HostC.Name, "wd", "10.65.3.5", 0)
	if err != nil {
		t.Fatal(err)
	}

	// Streams through the outage: pings across the router and within
	// the segment, and one TCP connection exchanging a line every 100 ms.
	count := int((etcdOutage + 12*time.Second) / pingInterval)
	type stream struct {
		name string
		p    *lab.Proc
	}
	var streams []stream
	pingsStarted := time.Now()
	for _, p := range [][2]*lab.Workload{{m.WA, m.WB}, {m.WA, m.WC}, {m.WC, m.WB}} {
		proc, err := l.ExecBackground(p[0].NS, etcdOutage+40*time.Second, "ping", "-n", "-q",
			"-i", fmt.Sprintf("%.2f", pingInterval.Seconds()), "-W", "1", "-c", fmt.Sprint(count), p[1].IP.String())
		if err != nil {
			t.Fatal(err)
		}
		streams = append(streams, stream{p[0].Name + "->" + p[1].Name, proc})
	}
	echo, err := l.StartEcho(m.WC.NS, "wc", netip.AddrPortFrom(m.WC.IP, 7000).String())
	if err != nil {
		t.Fatal(err)
	}
	conn, err := lab.DialEcho(m.WA.NS, echo.Addr.String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var tcpMu sync.Mutex
	var tcpOK int
	var tcpErr error
	stopTCP := make(chan struct{})
	tcpDone := make(chan struct{})
	go func() {
		defer close(tcpDone)
		for i := 0; ; i++ {
			select {
			case <-stopTCP:
				return
			case <-time.After(100 * time.Millisecond):
			}
			_, err := conn.Exchange(fmt.Sprintf("line %d", i), 2*time.Second)
			tcpMu.Lock()
			if err != nil {
				tcpErr = err
				tcpMu.Unlock()
				return
			}
			tcpOK++
			tcpMu.Unlock()
		}
	}()
	time.Sleep(2 * time.Second)

	before := dataplanes(t, l, m.Hosts())
	if err := e.Stop(); err != nil {
		t.Fatalf("stop etcd: %v", err)
	}
	stopped := time.Now()
	t.Logf("etcd stopped")

	// Every agent says why it is not ready.
	notReady := map[string]time.Duration{}
	for _, h := range m.Hosts() {
		var body string
		err := lab.Eventually(20*time.Second, 100*time.Millisecond, func() error {
			code, b, err := l.AgentReadyz(h.Name)
			if err != nil {
				return err
			}
			body = strings.TrimSpace(b)
			if code != 503 || !strings.Contains(body, "datastore unreachable") {
				return fmt.Errorf("/readyz on %s answered %d %q", h.Name, code, body)
			}
			return nil
		})
		if err != nil {
			t.Errorf("agent on %s does not report the outage: %v", h.Name, err)
			continue
		}
		notReady[h.Name] = time.Since(stopped)
		t.Logf("%s /readyz after %v: 503 %q", h.Name, notReady[h.Name].Round(10*time.Millisecond), body)
	}

	// calyxctl says the datastore is unreachable, and does not hang.
	res, err := l.Run(lab.Command{NS: m.HostA.NS, Args: ctlArgs(t, l, m.HostA.Name, "get", "nodes"), Timeout: 30 * time.Second})
	if err == nil || res.TimedOut {
		t.Errorf("calyxctl get nodes while etcd is down: exit %d, timed out %v: %s", res.ExitCode, res.TimedOut, res.Combined())
	} else {
		t.Logf("calyxctl get nodes while etcd is down: exit %d: %s", res.ExitCode, strings.TrimSpace(res.Stderr))
	}

	// Nothing changed in any dataplane: the same routes and endpoints
	// (calyxctl cannot name nodes and endpoints now, so names are left
	// out), and not one map write since etcd went.
	// An agent restarted now adopts the dataplane as it is and waits for
	// the model.
	if err := l.StopAgent(m.HostA.Name); err != nil {
		t.Fatal(err)
	}
	restarted := time.Now()
	if err := l.StartAgentUnready(m.HostA.Name, "--node-ttl", nodeTTL.String()); err != nil {
		t.Fatal(err)
	}
	err = lab.Eventually(20*time.Second, 100*time.Millisecond, func() error {
		code, b, err := l.AgentReadyz(m.HostA.Name)
		if err != nil {
			return err
		}
		if code != 503 || !strings.Contains(b, "datastore unreachable") {
			return fmt.Errorf("/readyz of the restarted agent answered %d %q", code, strings.TrimSpace(b))
		}
		t.Logf("agent on host-a restarted during the outage: /readyz %v later: 503 %q", time.Since(restarted).Round(10*time.Millisecond), strings.TrimSpace(b))
		return nil
	})
	if err != nil {
		t.Error(err)
	}
	time.Sleep(time.Until(stopped.Add(etcdOutage * 2 / 3)))
	during := dataplanes(t, l, m.Hosts())
	// The restarted agent has written nothing at all.
	a := before[m.HostA.Name]
	a.MapWrites = 0
	before[m.HostA.Name] = a
	for _, h := range m.Hosts() {
		if !reflect.DeepEqual(before[h.Name], during[h.Name]) {
			t.Errorf("%s's dataplane changed while etcd was down:\nbefore %+v\nduring %+v", h.Name, before[h.Name], during[h.Name])
		}
	}
	time.Sleep(time.Until(stopped.Add(etcdOutage)))
	// Still not ready at the end.
	for _, h := range m.Hosts() {
		if code, body, err := l.AgentReadyz(h.Name); err != nil || code != 503 || !strings.Contains(body, "datastore unreachable") {
			t.Errorf("%s /readyz at the end of the outage: %d %q %v", h.Name, code, body, err)
		}
	}

	if err := e.Start(); err != nil {
		t.Fatalf("start etcd: %v", err)
	}
	back := time.Now()
	t.Logf("etcd back after %v", back.Sub(stopped).Round(10*time.Millisecond))
	if end := pingsStarted.Add(time.Duration(count) * pingInterval); back.After(end) {
		t.Errorf("the pings ended %v before etcd came back: the outage took longer than planned", back.Sub(end))
	}

	// A change made once etcd is back reaches every agent.
	var out string
	err = lab.Eventually(20*time.Second, 200*time.Millisecond, func() error {
		o, err := l.Apply("", lab.EndpointYAML(wd))
		out = o
		return err
	})
	if err != nil {
		t.Fatalf("apply wd after etcd returned: %v\n%s", err, out)
	}
	applied := time.Now()
	for _, h := range m.Hosts() {
		if h == m.HostC {
			if err := l.WaitLinks(h.Name, attachTimeout, wd.HostIface); err != nil {
				t.Error(err)
			}
			continue
		}
		err := lab.Eventually(attachTimeout, 50*time.Millisecond, func() error {
			rs, err := l.Routes(h.Name)
			if err != nil {
				return err
			}
			if r, ok := lab.RouteFor(rs, wd.IP); !ok || r.Type != "remote-workload" || r.Node != m.HostC.Name {
				return fmt.Errorf("%s has no route to wd (%+v)", h.Name, r)
			}
			return nil
		})
		if err != nil {
			t.Error(err)
		}
	}
	converged := time.Since(applied)
	for _, src := range []*lab.Workload{m.WA, m.WB} {
		if err := l.WaitPing(src.NS, wd.IP.String(), trafficTimeout); err != nil {
			t.Errorf("%s cannot reach wd after etcd returned: %v", src.Name, err)
		}
	}
	t.Logf("wd applied %v after etcd returned; every agent had it %v after the apply; wa and wb reach it %v after the apply",
		applied.Sub(back).Round(time.Millisecond), converged.Round(time.Millisecond), time.Since(applied).Round(time.Millisecond))
	for _, h := range m.Hosts() {
		err := lab.Eventually(20*time.Second, 100*time.Millisecond, func() error {
			code, body, err := l.AgentReadyz(h.Name)
			if err != nil {
				return err
			}
			if code != 200 {
				return fmt.Errorf("/readyz on %s: %d %q", h.Name, code, strings.TrimSpace(body))
			}
			return nil
		})
		if err != nil {
			t.Error(err)
		} else {
			t.Logf("%s ready again %v after etcd returned", h.Name, time.Since(back).Round(10*time.Millisecond))
		}
	}

	// Not one packet lost, the TCP connection never stalled.
	for _, s := range streams {
		res, err := s.p.Wait(etcdOutage + 30*time.Second)
		st, perr := lab.ParsePing(res.Stdout)
		if perr != nil {
			t.Errorf("%s: %v %v", s.name, err, perr)
			continue
		}
		t.Logf("%s: %d sent, %d received during the outage window", s.name, st.Transmitted, st.Received)
		if st.Transmitted != count || st.Received != st.Transmitted {
			t.Errorf("%s lost packets: %d/%d answered (want %d)", s.name, st.Received, st.Transmitted, count)
		}
	}
	close(stopTCP)
	<-tcpDone
	tcpMu.Lock()
	defer tcpMu.Unlock()
	t.Logf("TCP wa->wc: %d exchanges through the outage", tcpOK)
	if tcpErr != nil {
		t.Errorf("TCP connection wa->wc broke after %d exchanges: %v", tcpOK, tcpErr)
	}
}

// dataplane is what a host's agent programmed, as calyxctl dumps it
// without the names it takes from the model, and how many map writes the
// agent made so far.
type dataplane struct {
	Routes    []lab.Route
	Endpoints []lab.Endpoint
	MapWrites float64
}

// dataplanes dumps every host's dataplane, the hosts in parallel.
func dataplanes(t *testing.T, l *lab.Lab, hosts []*lab.Host) map[string]dataplane {
	t.Helper()
	out := map[string]dataplane{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make([]error, len(hosts))
	for i, h := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var d dataplane
			var err error
			if d.Routes, err = l.Routes(h.Name); err != nil {
				errs[i] = err
				return
			}
			if d.Endpoints, err = l.Endpoints(h.Name); err != nil {
				errs[i] = err
				return
			}
			for j := range d.Routes {
				d.Routes[j].Node = ""
			}
			for j := range d.Endpoints {
				d.Endpoints[j].Name = ""
			}
			text, err := l.AgentMetrics(h.Name)
			if err != nil {
				errs[i] = err
				return
			}
			if d.MapWrites, _, err = lab.MetricSum(text, "calyx_sync_map_writes_total"); err != nil {
				errs[i] = err
				return
			}
			mu.Lock()
			out[h.Name] = d
			mu.Unlock()
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func ctlArgs(t *testing.T, l *lab.Lab, host string, args ...string) []string {
	t.Helper()
	full, err := l.CtlArgs(host, args...)
	if err != nil {
		t.Fatal(err)
	}
	return full
}

// checkReachable pings and sends a TCP transfer for every pair.
func checkReachable(t *testing.T, l *lab.Lab, pairs [][2]*lab.Workload) {
	t.Helper()
	for _, p := range pairs {
		src, dst := p[0], p[1]
		if err := l.WaitPing(src.NS, dst.IP.String(), trafficTimeout); err != nil {
			t.Fatalf("%s -> %s: %v", src.Name, dst.Name, err)
		}
		mustPing(t, l, src.NS, dst.IP.String(), 3)
		tr, err := l.TCPTransfer(src.NS, dst.NS, dst.IP, 5201, 4<<20, 20*time.Second)
		if err != nil {
			t.Errorf("%s -> %s: TCP: %v", src.Name, dst.Name, err)
			continue
		}
		t.Logf("%s -> %s: ping ok, 4 MiB over TCP in %v", src.Name, dst.Name, tr.Duration.Round(time.Millisecond))
	}
}

func getNodes(t *testing.T, l *lab.Lab) map[string]lab.NodeRow {
	t.Helper()
	rows, err := l.Nodes()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]lab.NodeRow{}
	for _, r := range rows {
		out[r.Metadata.Name] = r
	}
	return out
}

// waitNodes waits until check accepts "calyxctl get nodes".
func waitNodes(t *testing.T, l *lab.Lab, check func(map[string]lab.NodeRow) error) {
	t.Helper()
	err := lab.Eventually(20*time.Second, 200*time.Millisecond, func() error {
		rows, err := l.Nodes()
		if err != nil {
			return err
		}
		nodes := map[string]lab.NodeRow{}
		for _, r := range rows {
			nodes[r.Metadata.Name] = r
		}
		return check(nodes)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// readFile returns a file's content, or why it cannot be read.
func readFile(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	return string(b)
}
