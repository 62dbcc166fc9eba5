package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/calyxnet/calyx/bpfmap"
	"github.com/calyxnet/calyx/model"
	"github.com/calyxnet/calyx/tests/bench/policymodel"
	"github.com/calyxnet/calyx/tests/lab"
)

// The policy section (issue 5): what network policy costs a new flow, per
// packet and end to end against iptables with the same rules. The two
// parts run one after the other in one section; the models are
// tests/bench/policymodel's. What it costs the control plane is the scale
// section's.

// Case IDs of the policy section.
const (
	casePolicyPPNone = "policy.pp.none"
	casePolicyPP10   = "policy.pp.10"
	casePolicyPP10k  = "policy.pp.10000"
)

// policyPPRules are the per-packet benchmark's sizes, by case (see
// bpf/policy_bench_test.go's BenchmarkPolicyNewFlow).
var policyPPRules = []struct {
	id    string
	rules int
}{{casePolicyPPNone, 0}, {casePolicyPP10, 10}, {casePolicyPP10k, 10000}}

// policyCRRRules are the rule counts of the two-host comparison.
var policyCRRRules = []int{10, 10000}

// Paths of the two-host comparison.
const (
	policyPathBPF      = "bpf"
	policyPathIPTables = "iptables"
)

func policyCRRID(rules int, path string) string { return fmt.Sprintf("policy.crr.%d.%s", rules, path) }

// policyParams size one policy run.
type policyParams struct {
	// Per-packet: go test -benchtime ppRuns x -count ppCount.
	ppRuns, ppCount int
	// Two hosts: rounds of every case, seconds per crr run.
	rounds, loadSecs int
}

func policyParamsFor(quick bool) policyParams {
	if quick {
		return policyParams{ppRuns: 20000, ppCount: 1, rounds: 1, loadSecs: 1}
	}
	return policyParams{ppRuns: 100000, ppCount: 5, rounds: 5, loadSecs: 3}
}

func policySection(quick bool) *Section {
	p := policyParamsFor(quick)
	ns := func(id, label string) Case { return Case{ID: id, Label: label, Unit: "ns", Better: LowerIsBetter} }
	pp := []Case{
		ns(casePolicyPPNone, "new flow, no policy on either endpoint"),
		ns(casePolicyPP10, "new flow, 10 rules"),
		ns(casePolicyPP10k, "new flow, 10,000 rules over 1,000 endpoints"),
	}
	pp[2].Baseline = casePolicyPP10
	pp[2].Goal = &Goal{Issue: "issue 5", Text: "a new flow's per-packet cost with 10,000 rules ≤ 1.2 × with 10 rules", MaxRatio: 1.2}

	var crr []Case
	for _, n := range policyCRRRules {
		ipt := policyCRRID(n, policyPathIPTables)
		crr = append(crr,
			Case{ID: policyCRRID(n, policyPathBPF), Label: fmt.Sprintf("calyx BPF policy, %s rules", fmtCount(n)), Unit: "connections/s", Better: HigherIsBetter, Baseline: ipt},
			Case{ID: ipt, Label: fmt.Sprintf("iptables, the same %s rules", fmtCount(n)), Unit: "connections/s", Better: HigherIsBetter, Kernel: true},
		)
	}

	s := &Section{
		Key:   "policy",
		Title: "Policy at scale: 10 vs 10,000 rules, BPF vs iptables",
		Tables: []Table{
			{Title: "Per-packet cost of a new flow through calyx_from_wl, both endpoints' policy consulted (BPF_PROG_TEST_RUN)",
				Note:  "ns per packet, a TCP SYN of a new flow each run, the harness's cost subtracted (as in the per-packet section). The ratio is to the same path with 10 rules; the kernel has no counterpart that runs through BPF_PROG_TEST_RUN.",
				Cases: pp,
				Extras: []Extra{
					{Detail: "ns", Header: "uncorrected ns (median)", Stat: "median", Format: "%.0f"},
					{Detail: "policyEntries", Header: "cx_policy entries", Stat: "max", Format: "%.0f"},
					{Detail: "ipcacheEntries", Header: "cx_ipcache entries", Stat: "max", Format: "%.0f"},
				}},
			{Title: "New connections to a server whose ingress policy allows the client by its last rule (calyx-load crr, two hosts)",
				Cases: crr,
				Extras: append(loadExtras(),
					Extra{Detail: "lastRuleShare", Header: "SYNs decided by the last rule per connection (min)", Stat: "min", Format: "%.3f"})},
		},
	}
	s.Run = func(ctx context.Context, o *Options, rec *Recorder) error {
		rec.Param("policy.ppRuns", p.ppRuns)
		rec.Param("policy.ppCount", p.ppCount)
		rec.Param("policy.rounds", p.rounds)
		rec.Param("policy.loadSeconds", p.loadSecs)
		rec.logf("policy: per-packet (%d runs × %d), two hosts (%d rounds, crr %d s)",
			p.ppRuns, p.ppCount, p.rounds, p.loadSecs)
		if err := policyPerPacket(ctx, o, p, rec); err != nil {
			return fmt.Errorf("per-packet: %w", err)
		}
		if err := PolicyTwoHost(ctx, o.BinDir, p, rec); err != nil {
			return fmt.Errorf("two hosts: %w", err)
		}
		return nil
	}
	s.Method = policyMethod
	return s
}

// policyMethod explains the section.
func policyMethod(rec *Recorder) string {
	var b strings.Builder
	n10k := policymodel.FlowOf(10000 / policymodel.RulesPerPolicy)
	fmt.Fprintf(&b, "The models are built in Go by `tests/bench/policymodel` and compiled by `policy/`, as the agent does.\n\n")
	fmt.Fprintf(&b, "- **Per packet**: `go test -run '^$' -bench '^BenchmarkPolicyNewFlow$' -benchtime %dx -count %d ./bpf/` (bpf/policy_bench_test.go); each figure is the median of %s, each the mean of %d runs, minus the empty program's cost at repeat=1 (as in the per-packet section). ",
		rec.ParamInt("policy.ppRuns"), rec.ParamInt("policy.ppCount"), plural(rec.ParamInt("policy.ppCount"), "sample"), rec.ParamInt("policy.ppRuns"))
	fmt.Fprintf(&b, "The model: 1,000 WorkloadEndpoints on 10 nodes labelled with 100 apps, 10 roles and 3 envs, and %s policies of 10 rules (5 ingress, 5 egress: selectors, `in` and `&&` selectors, notSelector, nets, notNets, single ports and port ranges, Allow and Deny). ",
		"1 or 1,000")
	fmt.Fprintf(&b, "Each policy selects the endpoints of two apps; at 10,000 rules each endpoint is selected by 20 policies (200 rules). Tables are compiled for node-0 (100 endpoints), whose two endpoints stand for the benchmark's wl1 (app-0) and wl2 (app-1); ")
	fmt.Fprintf(&b, "every packet is a TCP SYN wl1 → wl2 to the port that only the last rule of the last policy selecting them allows (port %d at 10,000 rules): wl1's egress table and wl2's ingress table are both looked up (per direction one cx_ipcache LPM lookup for the remote's identity, then cx_policy LPM lookups until one matches: the identity's own entries, its nets' identity, identity 0), and both allow it. ", n10k.Port)
	fmt.Fprintf(&b, "Every run is a new flow: each packet in a batch of 4,096 has its own source port, and cx_ct is emptied between batches, outside the timed runs, so the LRU conntrack table never fills or evicts and every run creates its entry the same way. ")
	fmt.Fprintf(&b, "Every benchmark checks the verdict of every run (redirect), the path's counters (deliver-local on wl1, to-workload on wl2, one packet per run), that the two allowing rules' hit counters rose by exactly one per run (a policy decision in both tables every time) and that each batch left a conntrack entry per packet. ")
	none, p10, p10k := Median(rec.Values(casePolicyPPNone)), Median(rec.Values(casePolicyPP10)), Median(rec.Values(casePolicyPP10k))
	if none > 0 && p10 > 0 && p10k > 0 {
		fmt.Fprintf(&b, "Most of a new flow's cost is not policy's: without any policy the same new flow costs %.0f ns (conntrack creates the flow's two cx_ct entries, then local delivery), so policy itself — the figure minus that one — adds %.0f ns with 10 rules and %.0f ns with 10,000 rules (%s and %s cx_policy entries). ",
			none, p10-none, p10k-none, fmtCount(int(maxOf(detailValues(rec, casePolicyPP10, "policyEntries")))), fmtCount(int(maxOf(detailValues(rec, casePolicyPP10k, "policyEntries")))))
	}
	b.WriteString("\n")
	fmt.Fprintf(&b, "- **New connections, BPF vs iptables** (two hosts, as in the two-host section, with direct routing and MTU 1500): the server workload wb on host-b runs `calyx-load serve`; wa on host-a runs `calyx-load crr` (%d s per run, one connection at a time: connect, 1-byte request, 1-byte response, close). ", rec.ParamInt("policy.loadSeconds"))
	fmt.Fprintf(&b, "wb's ingress is selected by policies totalling N rules (10 per policy); none but the last matches wa's connections — four kinds in turn: a /32 source in 172.16/12, a source net holding wa with another port, UDP, a 192.168 /24 source with a port range — and the last allows TCP to the server's port from the endpoint labelled `role: load-client` (wa). ")
	fmt.Fprintf(&b, "*calyx*: both agents run, the pool is direct (no encapsulation) and host-b's calyx_from_underlay applies wb's ingress table; before each run calyx's conntrack on both hosts is flushed (`calyxctl ct flush`), and wa reuses a port in TIME-WAIT only after a run's length and a second (`net.ipv4.tcp_tw_reuse_delay=%d`, for both paths; with the default 1 s a SYN met the cx_ct entry of an earlier connection with the same ports, which calyx keeps 30 s after it closed, and skipped policy as a packet of that flow), so that every connection is a new flow. ", rec.ParamInt("policy.twReuseDelayMs"))
	fmt.Fprintf(&b, "*iptables*: calyx is taken out as in the two-host section (agents stopped, programs detached and checked, calyx's routes flushed), the hosts route the workloads' /32s as plain kernel routing does, and host-b's FORWARD chain jumps for traffic out of wb's veth to a chain holding `-m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT`, then the same N rules as iptables rules in the same order (the selector as wa's /32), then DROP; loaded with `iptables-restore` (iptables 1.8.9, nf_tables backend). ")
	fmt.Fprintf(&b, "%s; in each round the two cases of a size are measured one after the other, the sizes in turn, every other round backwards. ", plural(rec.ParamInt("policy.rounds"), "round"))
	fmt.Fprintf(&b, "**Proof of the path**, every run: calyx — the last rule's hit counter on wb (`calyxctl policy dump`) rises by at least one per connection (the *SYNs decided by the last rule* column); iptables — the last rule's packet counter rises by at least one per connection, calyx's counters do not move, and nothing of calyx is attached.\n")
	return b.String()
}

// policyPerPacket records the per-packet cases from go test's output: the
// one the Makefile wrote (--bpf-bench) when it holds them, else from a run
// of BenchmarkPolicyNewFlow made here.
func policyPerPacket(ctx context.Context, o *Options, p policyParams, rec *Recorder) error {
	by := map[string][]goBench{}
	collect := func(path string) error {
		rows, err := parseGoBench(path)
		if err != nil {
			return err
		}
		for _, r := range rows {
			if strings.HasPrefix(r.name, "PolicyNewFlow/") {
				by[r.name] = append(by[r.name], r)
			}
		}
		return nil
	}
	if o.BPFBench != "" {
		if err := collect(o.BPFBench); err != nil {
			return err
		}
	}
	if len(by) == 0 {
		root, err := lab.RepoRoot()
		if err != nil {
			return err
		}
		dir := filepath.Join(root, "bench", "out")
		if o.JSON != "" {
			dir = filepath.Join(filepath.Dir(o.JSON), "out")
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		out := filepath.Join(dir, "bpf-policy.txt")
		args := []string{"test", "-run", "^$", "-bench", "^BenchmarkPolicyNewFlow$", "-benchtime", fmt.Sprintf("%dx", p.ppRuns), "-count", strconv.Itoa(p.ppCount), "./bpf/"}
		rec.logf("policy per packet: go %s > %s", strings.Join(args, " "), out)
		f, err := os.Create(out)
		if err != nil {
			return err
		}
		cmd := exec.CommandContext(ctx, "go", args...)
		cmd.Dir, cmd.Stdout, cmd.Stderr = root, f, f
		err = cmd.Run()
		f.Close()
		if err != nil {
			b, _ := os.ReadFile(out)
			return fmt.Errorf("go test -bench BenchmarkPolicyNewFlow: %w\n%s", err, tailLines(string(b), 30))
		}
		if err := collect(out); err != nil {
			return err
		}
	}
	for _, c := range policyPPRules {
		bs := by[fmt.Sprintf("PolicyNewFlow/rules=%d", c.rules)]
		if len(bs) == 0 {
			return fmt.Errorf("no result of BenchmarkPolicyNewFlow/rules=%d", c.rules)
		}
		for i, b := range bs {
			if b.net == 0 {
				return fmt.Errorf("BenchmarkPolicyNewFlow/rules=%d reports no net-ns/op", c.rules)
			}
			rec.Add(c.id, i, b.net)
			rec.Detail(c.id, "ns", b.ns)
			rec.Detail(c.id, "policyEntries", b.metrics["policy-entries"])
			rec.Detail(c.id, "ipcacheEntries", b.metrics["ipcache-entries"])
		}
		rec.logf("policy per packet, %d rules: %.0f ns net (median of %d), %.0f cx_policy entries", c.rules, Median(rec.Values(c.id)), len(bs), bs[0].metrics["policy-entries"])
		rec.Param("policy.ppRuns", bs[0].runs)
		rec.Param("policy.ppCount", len(bs))
	}
	return nil
}

// detailValues returns a case's recorded values of a detail.
func detailValues(rec *Recorder, id, key string) []float64 {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return append([]float64(nil), rec.details[id][key]...)
}

func maxOf(xs []float64) float64 {
	_, hi := minMax(xs)
	return hi
}

func tailLines(s string, n int) string {
	ls := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(ls) > n {
		ls = ls[len(ls)-n:]
	}
	return strings.Join(ls, "\n")
}

// ---- control plane ----

// cpAgent is a calyx-agent whose log is read for its "synced" lines.
type cpAgent struct {
	cmd   *exec.Cmd
	syncs chan agentSync
	done  chan struct{}
	mu    sync.Mutex
	tail  []string
	// started is when the "agent started" line came (maps loaded, the
	// model read once, the node registered, the watch opened).
	started time.Time
}

// agentSync is one "synced" line: the model revision the reconcile
// covered, when the line came, and what the line says the reconcile took
// and wrote.
type agentSync struct {
	rev    uint64
	at     time.Time
	took   time.Duration
	writes int
}

var (
	syncedLine = regexp.MustCompile(`\bmsg=synced revision=(\d+)`)
	syncedTook = regexp.MustCompile(`\btook=(\S+)`)
	syncedMaps = regexp.MustCompile(`\bmapWrites=(\d+)`)
)

// startCPAgent starts an agent in ns on empty maps in dir, logging at info
// level so that every sync is seen.
func startCPAgent(ctx context.Context, binDir, ns, dsURL, dir string) (*cpAgent, error) {
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns, filepath.Join(binDir, "calyx-agent"),
		"--node", "local", "--datastore", dsURL, "--bpffs", dir, "--underlay", "eth0",
		"--metrics", "127.0.0.1:9091", "--log-level", "info")
	r, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stdout = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	a := &cpAgent{cmd: cmd, syncs: make(chan agentSync, 1<<16), done: make(chan struct{})}
	go a.read(r)
	return a, nil
}

// read follows the agent's log until it exits; warnings and errors go to
// standard error.
func (a *cpAgent) read(r io.Reader) {
	defer close(a.done)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		now := time.Now()
		if m := syncedLine.FindStringSubmatch(line); m != nil {
			s := agentSync{at: now}
			s.rev, _ = strconv.ParseUint(m[1], 10, 64)
			if t := syncedTook.FindStringSubmatch(line); t != nil {
				s.took, _ = time.ParseDuration(t[1])
			}
			if w := syncedMaps.FindStringSubmatch(line); w != nil {
				s.writes, _ = strconv.Atoi(w[1])
			}
			select {
			case a.syncs <- s:
			default: // nobody waits for this many
			}
		}
		if strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") {
			fmt.Fprintln(os.Stderr, "calyx-agent:", line)
		}
		a.mu.Lock()
		if a.started.IsZero() && strings.Contains(line, `msg="agent started"`) {
			a.started = now
		}
		a.tail = append(a.tail, line)
		if len(a.tail) > 20 {
			a.tail = a.tail[1:]
		}
		a.mu.Unlock()
	}
}

// waitSynced returns when the agent logged a sync of revision rev or
// later, and the time that line came.
func (a *cpAgent) waitSynced(rev uint64, limit time.Duration) (time.Time, error) {
	s, err := a.waitSync(rev, limit)
	return s.at, err
}

// waitSync returns the first "synced" line of revision rev or later.
func (a *cpAgent) waitSync(rev uint64, limit time.Duration) (agentSync, error) {
	timer := time.NewTimer(limit)
	defer timer.Stop()
	for {
		select {
		case s := <-a.syncs:
			if s.rev >= rev {
				return s, nil
			}
		case <-a.done:
			return agentSync{}, fmt.Errorf("the agent exited waiting for revision %d: %s", rev, a.lastLines())
		case <-timer.C:
			return agentSync{}, fmt.Errorf("no sync of revision %d within %s: %s", rev, limit, a.lastLines())
		}
	}
}

// startedAt is when the agent logged "agent started" (zero: not yet).
func (a *cpAgent) startedAt() time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.started
}

func (a *cpAgent) lastLines() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return strings.Join(a.tail, "\n")
}

func (a *cpAgent) stop() {
	a.cmd.Process.Signal(unix.SIGTERM)
	a.cmd.Wait()
	<-a.done
}

// polEndpoint is endpoint i of the policy control-plane model: labelled,
// on this node when local.
func polEndpoint(i int, local bool) *model.WorkloadEndpoint {
	e := endpoint(i)
	e.Metadata.Labels = policymodel.Labels(i)
	if local {
		e.Spec.Node = "local"
	}
	return e
}

// ---- two hosts ----

// policyBench is the two-host lab of the policy comparison.
type policyBench struct {
	*encapBench
	ds model.Datastore
	// rules is the rule count of the policies in the datastore (0: none);
	// ipt that of host-b's iptables chain (0: none); routed says the
	// kernel routes of plain routing are in place.
	rules, ipt int
	routed     bool
	// lastRule is the rule number of the last rule of the current set.
	lastRule uint32
	calyx0   uint64 // calyx's packet counters when calyx was taken out
}

const policyChain = "CXBENCH"

// policySchedule is round r's order: each size's two cases one after the
// other, the sizes in turn; odd rounds backwards.
func policySchedule(r int) []struct {
	rules int
	bpf   bool
} {
	type c = struct {
		rules int
		bpf   bool
	}
	var out []c
	for i, n := range policyCRRRules {
		if i%2 == 0 {
			out = append(out, c{n, true}, c{n, false})
		} else {
			out = append(out, c{n, false}, c{n, true})
		}
	}
	if r%2 == 1 {
		for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
			out[i], out[j] = out[j], out[i]
		}
	}
	return out
}

// PolicyTwoHost measures new connections to wb with its ingress policy
// enforced by calyx and by iptables (see policyMethod).
func PolicyTwoHost(ctx context.Context, binDir string, p policyParams, rec *Recorder) (err error) {
	b, err := openEncapBench(ctx, binDir, lab.KindVeth, twoHostParams{rounds: p.rounds, loadSecs: p.loadSecs, conns: 1}, rec, "policy two-host", twoHostWorkloads...)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, b.l.Close()) }()
	l := b.l
	pb := &policyBench{encapBench: b}
	if pb.ds, err = model.Open(l.DatastoreURL()); err != nil {
		return err
	}
	defer pb.ds.Close()
	if err := b.setMTU(lab.UnderlayMTU); err != nil {
		return err
	}
	direct := EncapCase{Key: CaseBPFDirect, Label: "calyx BPF direct", BPF: true, Mode: lab.ModeNever, MTU: lab.UnderlayMTU}
	if _, err := b.proveBPF(direct, b.waWB()); err != nil {
		return err
	}
	if err := pb.label(ctx); err != nil {
		return err
	}
	// A client port in TIME-WAIT is reused after tcp_tw_reuse_delay (1 s
	// by default); calyx keeps a closed flow's conntrack entry 30 s, and a
	// SYN that meets it is taken for a packet of that flow and skips
	// policy. Ports are therefore reused only after a run's length and a
	// second, and calyx's conntrack is flushed before each run: every
	// connection is a new flow, for calyx and iptables alike.
	delay := (p.loadSecs + 1) * 1000
	rec.Param("policy.twReuseDelayMs", delay)
	if _, err := l.Exec(b.m.WA.NS, "sysctl", "-qw", fmt.Sprintf("net.ipv4.tcp_tw_reuse_delay=%d", delay)); err != nil {
		return fmt.Errorf("this kernel cannot delay the reuse of TIME-WAIT ports: %w", err)
	}
	defer func() { err = errors.Join(err, pb.removeIPTables()) }()
	for r := range p.rounds {
		for _, c := range policySchedule(r) {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := pb.measure(ctx, c.rules, c.bpf, r); err != nil {
				path := map[bool]string{true: "BPF", false: "iptables"}[c.bpf]
				return fmt.Errorf("round %d, %s with %d rules: %w", r+1, path, c.rules, err)
			}
		}
		var parts []string
		for _, n := range policyCRRRules {
			if pr := rec.pairedRatios(policyCRRID(n, policyPathBPF), policyCRRID(n, policyPathIPTables)); len(pr) > 0 {
				parts = append(parts, fmt.Sprintf("%d rules %.2f", n, pr[len(pr)-1]))
			}
		}
		rec.logf("policy round %d/%d BPF/iptables: %s", r+1, p.rounds, strings.Join(parts, ", "))
	}
	return nil
}

// label gives wa and wb the labels the policies select by.
func (pb *policyBench) label(ctx context.Context) error {
	s, err := pb.ds.Snapshot(ctx)
	if err != nil {
		return err
	}
	var rs []model.Resource
	for _, w := range []struct {
		name   string
		labels map[string]string
	}{{pb.m.WA.Name, policymodel.ClientLabels}, {pb.m.WB.Name, policymodel.ServerLabels}} {
		e := s.Endpoints[w.name]
		if e == nil {
			return fmt.Errorf("no endpoint %s in the model", w.name)
		}
		c := *e
		c.Metadata.Labels = w.labels
		rs = append(rs, &c)
	}
	return pb.ds.Apply(ctx, rs)
}

// setPolicies makes the datastore hold ServerIngress(n) and nothing else
// of the benchmark's.
func (pb *policyBench) setPolicies(ctx context.Context, n int) error {
	if pb.rules == n {
		return nil
	}
	s, err := pb.ds.Snapshot(ctx)
	if err != nil {
		return err
	}
	pols := policymodel.ServerIngress(n, loadPort)
	keep := map[string]bool{}
	rs := make([]model.Resource, len(pols))
	for i, p := range pols {
		rs[i] = p
		keep[p.Metadata.Name] = true
	}
	var stale []model.Ref
	for name, p := range s.Policies {
		if !keep[name] {
			stale = append(stale, model.RefOf(p))
		}
	}
	if len(stale) > 0 {
		if err := pb.ds.Delete(ctx, stale); err != nil {
			return err
		}
	}
	if err := pb.ds.Apply(ctx, rs); err != nil {
		return err
	}
	pb.rules = n
	name, idx := policymodel.ServerPolicyOf(n - 1)
	rows, err := pb.policyRows()
	if err != nil {
		return err
	}
	pb.lastRule = 0
	for _, r := range rows {
		if r.Direction == "ingress" && r.Policy == name && r.Index == idx {
			pb.lastRule = r.RuleID
		}
	}
	if pb.lastRule == 0 {
		return fmt.Errorf("calyxctl policy dump %s lists no rule %s[%d]", pb.m.WB.Name, name, idx)
	}
	return nil
}

// policyRow is a row of calyxctl policy dump's JSON.
type policyRow struct {
	Direction string `json:"direction"`
	Policy    string `json:"policy"`
	Index     int    `json:"index"`
	Packets   uint64 `json:"packets"`
	RuleID    uint32 `json:"ruleID"`
}

// policyRows is calyxctl policy dump of wb on host-b.
func (pb *policyBench) policyRows() ([]policyRow, error) {
	var rows []policyRow
	err := pb.l.CalyxctlJSON(pb.m.HostB.Name, &rows, "policy", "dump", pb.m.WB.Name)
	return rows, err
}

// lastRuleHits is the hit counter of the current set's last rule on wb.
func (pb *policyBench) lastRuleHits() (uint64, error) {
	rows, err := pb.policyRows()
	if err != nil {
		return 0, err
	}
	for _, r := range rows {
		if r.RuleID == pb.lastRule && r.Direction == "ingress" {
			return r.Packets, nil
		}
	}
	return 0, fmt.Errorf("calyxctl policy dump %s lists no rule %d", pb.m.WB.Name, pb.lastRule)
}

// waitProgrammed waits until host-b's maps give wb's ingress table and,
// for a TCP connection from wa to the server's port, an allow by the last
// rule.
func (pb *policyBench) waitProgrammed() error {
	hb := pb.m.HostB
	return lab.Eventually(60*time.Second, 200*time.Millisecond, func() error {
		m, err := bpfmap.OpenPinned(hb.BPFFS)
		if err != nil {
			return err
		}
		defer m.Close()
		ifs, err := m.Ifaces.All()
		if err != nil {
			return err
		}
		var table uint32
		for _, v := range ifs {
			if v.Workload && v.IngressTable != 0 {
				table = v.IngressTable
			}
		}
		if table == 0 {
			return fmt.Errorf("%s: no workload interface has an ingress table", hb.Name)
		}
		ipc, err := m.IPCache.All()
		if err != nil {
			return err
		}
		id := identityOf(ipc, pb.m.WA.IP)
		v, ok, err := m.LookupPolicy(table, id.Identity, id.NetIdentity, model.ProtoTCP, loadPort, 40000)
		if err != nil {
			return err
		}
		if !ok || v.Action != bpfmap.PolicyAllow || v.Rule != pb.lastRule {
			return fmt.Errorf("%s: table %d gives wa's connections %+v (found %v), want allow by rule %d", hb.Name, table, v, ok, pb.lastRule)
		}
		return nil
	})
}

// identityOf is the entry of a in cx_ipcache (longest prefix).
func identityOf(ipc map[netip.Prefix]bpfmap.IPCacheEntry, a netip.Addr) bpfmap.IPCacheEntry {
	for bits := a.BitLen(); bits >= 0; bits-- {
		if e, ok := ipc[netip.PrefixFrom(a, bits).Masked()]; ok {
			return e
		}
	}
	return bpfmap.IPCacheEntry{}
}

// toBPF takes the kernel's setup away and brings calyx back with n rules.
func (pb *policyBench) toBPF(ctx context.Context, n int) error {
	if err := pb.removeIPTables(); err != nil {
		return err
	}
	if pb.routed {
		if err := pb.kernelTeardown(EncapCase{Key: CaseKernelRouted}); err != nil {
			return err
		}
		pb.routed = false
	}
	// With the agents stopped the new set is in the datastore before they
	// start; with them running they recompile on the change.
	if err := pb.setPolicies(ctx, n); err != nil {
		return err
	}
	if err := pb.encapBench.toBPF(); err != nil {
		return err
	}
	return pb.waitProgrammed()
}

// toKernel takes calyx out and sets up plain routing and the iptables
// chain of n rules on host-b.
func (pb *policyBench) toKernel(n int) error {
	if pb.bpfUp {
		if err := pb.encapBench.toKernel(); err != nil {
			return err
		}
		c, err := pb.calyxPackets()
		if err != nil {
			return err
		}
		pb.calyx0 = c
	}
	if !pb.routed {
		if _, err := pb.kernelSetup(EncapCase{Key: CaseKernelRouted}, pb.waWB()); err != nil {
			return err
		}
		pb.routed = true
		res, err := pb.l.Exec(pb.m.HostA.NS, "ip", "route", "get", pb.m.WB.IP.String(), "from", pb.m.WA.IP.String(), "iif", pb.m.WA.HostIface)
		if err != nil {
			return err
		}
		if !strings.Contains(res.Stdout, "dev "+pb.m.HostA.UnderlayIface+" ") {
			return fmt.Errorf("host-a routes %s not through %s: %s", pb.m.WB.IP, pb.m.HostA.UnderlayIface, res.Stdout)
		}
	}
	if pb.ipt != n {
		if err := pb.removeIPTables(); err != nil {
			return err
		}
		if err := pb.l.WaitPing(pb.m.WA.NS, pb.m.WB.IP.String(), 10*time.Second); err != nil {
			return err
		}
		if err := pb.loadIPTables(n); err != nil {
			return err
		}
	}
	return nil
}

// loadIPTables installs host-b's chain of n rules (see policyMethod).
func (pb *policyBench) loadIPTables(n int) error {
	var b strings.Builder
	fmt.Fprintf(&b, "*filter\n:%s - [0:0]\n-A %s -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n", policyChain, policyChain)
	for g := range n {
		r := policymodel.ServerRule(g, n, loadPort)
		fmt.Fprintf(&b, "-A %s %s\n", policyChain, strings.ReplaceAll(r.IPTables, "$CLIENT", pb.m.WA.IP.String()))
	}
	fmt.Fprintf(&b, "-A %s -j DROP\n-A FORWARD -o %s -j %s\nCOMMIT\n", policyChain, pb.m.WB.HostIface, policyChain)
	res, err := pb.l.Run(lab.Command{NS: pb.m.HostB.NS, Args: []string{"iptables-restore", "--noflush"}, Stdin: b.String(), Timeout: 2 * time.Minute})
	if err != nil {
		return fmt.Errorf("iptables-restore: %w: %s", err, res.Stderr)
	}
	pb.ipt = n
	return nil
}

// removeIPTables removes host-b's chain, if there is one.
func (pb *policyBench) removeIPTables() error {
	if pb.ipt == 0 {
		return nil
	}
	if err := pb.sh(pb.m.HostB.NS,
		[]string{"iptables", "-w", "-D", "FORWARD", "-o", pb.m.WB.HostIface, "-j", policyChain},
		[]string{"iptables", "-w", "-F", policyChain},
		[]string{"iptables", "-w", "-X", policyChain},
	); err != nil {
		return err
	}
	pb.ipt = 0
	return nil
}

// lastIPTablesRule returns the packet counter of the chain's rule that
// allows wa (after the ESTABLISHED rule and n-1 others).
func (pb *policyBench) lastIPTablesRule() (uint64, error) {
	res, err := pb.l.Exec(pb.m.HostB.NS, "iptables", "-w", "-v", "-x", "-n", "-L", policyChain, strconv.Itoa(pb.ipt+1))
	if err != nil {
		return 0, err
	}
	f := strings.Fields(res.Stdout)
	if len(f) < 8 || f[2] != "ACCEPT" || f[7] != pb.m.WA.IP.String() || !strings.Contains(res.Stdout, fmt.Sprintf("dpt:%d", loadPort)) {
		return 0, fmt.Errorf("rule %d of %s is not the one allowing wa: %q", pb.ipt+1, policyChain, res.Stdout)
	}
	return strconv.ParseUint(f[0], 10, 64)
}

// measure runs crr with n rules on one path and proves that every
// connection was decided by the last rule.
func (pb *policyBench) measure(ctx context.Context, n int, bpf bool, round int) error {
	path := policyPathIPTables
	var counter func() (uint64, error)
	if bpf {
		path = policyPathBPF
		if err := pb.toBPF(ctx, n); err != nil {
			return err
		}
		for _, h := range pb.hosts() {
			if _, err := pb.l.CTFlush(h.Name); err != nil {
				return err
			}
		}
		counter = pb.lastRuleHits
	} else {
		if err := pb.toKernel(n); err != nil {
			return err
		}
		counter = pb.lastIPTablesRule
	}
	id := policyCRRID(n, path)
	c0, err := counter()
	if err != nil {
		return err
	}
	res, err := pb.runLoad("crr", pb.waWB())
	if err != nil {
		return err
	}
	c1, err := counter()
	if err != nil {
		return err
	}
	decided := c1 - c0
	if decided < uint64(res.Transactions) {
		return fmt.Errorf("the last rule decided %d new flows for %d connections", decided, res.Transactions)
	}
	if !bpf {
		c, err := pb.calyxPackets()
		if err != nil {
			return err
		}
		if c != pb.calyx0 {
			return fmt.Errorf("calyx counters rose by %d packets with calyx out: it is still in the path", c-pb.calyx0)
		}
		for _, h := range pb.hosts() {
			if err := checkDetached(pb.l, h, pb.ifaces(h)); err != nil {
				return err
			}
		}
	}
	pb.rec.Add(id, round, res.PerSecond)
	recordLoad(pb.rec, id, res)
	pb.rec.Detail(id, "lastRuleShare", float64(decided)/float64(res.Transactions))
	pb.logf("policy round %d/%d %-9s %5d rules %9.0f connections/s (%d by the last rule for %d)", round+1, pb.p.rounds, path, n, res.PerSecond, decided, res.Transactions)
	return nil
}
