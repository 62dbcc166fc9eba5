package bench

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/calyxnet/calyx/bpfmap"
	"github.com/calyxnet/calyx/model"
	"golang.org/x/sys/unix"
)

// controlPlaneParams size one control-plane run.
type controlPlaneParams struct {
	endpoints, adds, starts int
}

func cpParams(quick bool) controlPlaneParams {
	if quick {
		return controlPlaneParams{endpoints: 2000, adds: 20, starts: 1}
	}
	return controlPlaneParams{endpoints: 10000, adds: 100, starts: 3}
}

// The goal of issue 2, judged at 10,000 endpoints only.
const cpGoalEndpoints = 10000

func controlPlaneSection(quick bool) *Section {
	p := cpParams(quick)
	n := fmtCount(p.endpoints)
	ms := func(id, label string) Case {
		return Case{ID: id, Label: label, Unit: "ms", Better: LowerIsBetter}
	}
	start := ms("cp.start.endpoints", fmt.Sprintf("program %s endpoints + %s floating IPs from an empty start (agent start → last route and floating IP in the maps)", n, n))
	add := ms("cp.change.endpoint", fmt.Sprintf("one endpoint added at %s (datastore write → route in the map)", n))
	add.Percentiles = true
	add.Goal = &Goal{Issue: "issue 2", Text: "an endpoint added to a model of 10,000 is programmed well under a second (p99 ≤ 500 ms)", MaxValue: 500, Stat: "p99"}
	apply := ms("cp.change.endpoint-apply", "of which the datastore apply call (validate the whole model + write)")
	apply.Percentiles = true
	fip := ms("cp.change.fip", fmt.Sprintf("one floating IP added at %s (datastore write → NAT entry in the map)", n))
	fip.Percentiles = true
	write := ms("cp.write.endpoints", fmt.Sprintf("write %s endpoints to the file datastore (one apply)", n))
	rss := Case{ID: "cp.rss", Label: fmt.Sprintf("agent RSS with %s endpoints + %s floating IPs programmed", n, n), Unit: "MiB", Better: LowerIsBetter}
	return &Section{
		Key:   "controlplane",
		Title: "Control plane",
		Tables: []Table{
			{Title: "From an empty start", Note: "With policy: see the policy section.", Cases: []Case{start, write}},
			{Title: "One change at that size", Note: "p50 and p99 over every change made.", Cases: []Case{add, apply, fip},
				Extras: []Extra{{Detail: extraP99, Header: "p99 ms", Format: "%.1f"}}},
			{Title: "Memory", Cases: []Case{rss}},
		},
		Run: func(ctx context.Context, o *Options, rec *Recorder) error {
			rec.Param("controlplane.endpoints", p.endpoints)
			rec.Param("controlplane.adds", p.adds)
			rec.Param("controlplane.starts", p.starts)
			if p.endpoints < cpGoalEndpoints {
				rec.NotJudged(add.ID, fmt.Sprintf("quick pass: %s endpoints, the goal is set at 10,000", n))
			}
			rec.logf("control plane: %d endpoints, %d cold starts, %d single adds", p.endpoints, p.starts, p.adds)
			return ControlPlane(ctx, o.BinDir, p, rec)
		},
		Method: func(rec *Recorder) string {
			return fmt.Sprintf("A real `calyx-agent` in its own network namespace follows a file datastore holding %s endpoints on another node, each with a floating IP, so each is a route and a floating-IP entry in the BPF maps; "+
				"there is no kernel counterpart, so these figures have no ratio. The agent is started %s from empty maps (a fresh bpffs directory each time); "+
				"then %d endpoints are added one at a time, each timed from the datastore write to its route being visible in the pinned map, and as many floating IPs, each timed to its cx_fips entry. "+
				"RSS is the agent's after its initial sync.\n", n, times(rec.ParamInt("controlplane.starts")), rec.ParamInt("controlplane.adds"))
		},
	}
}

// times writes "once", "twice", "3 times".
func times(n int) string {
	switch n {
	case 1:
		return "once"
	case 2:
		return "twice"
	}
	return fmt.Sprintf("%d times", n)
}

// fmtCount writes n with thousands separators.
func fmtCount(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// Percentile returns the p-th percentile (0..100) of ds.
func Percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(p / 100 * float64(len(s)-1))
	return s[i]
}

// endpointAddr gives endpoint i a unique address in 10.64.0.0/10.
func endpointAddr(i int) netip.Prefix {
	a := netip.AddrFrom4([4]byte{10, byte(64 + i>>16), byte(i >> 8), byte(i)})
	return netip.PrefixFrom(a, 32)
}

func endpoint(i int) *model.WorkloadEndpoint {
	return &model.WorkloadEndpoint{
		Metadata: model.Metadata{Name: fmt.Sprintf("ep-%d", i)},
		Spec: model.WorkloadEndpointSpec{Node: "remote", Interface: fmt.Sprintf("tap%d", i),
			IPNetworks: []netip.Prefix{endpointAddr(i)}},
	}
}

func msOf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// ControlPlane runs a real calyx-agent in its own network namespace against
// a file datastore holding p.endpoints endpoints (on another node, so each
// is a route in the BPF map): p.starts cold starts from empty maps, then
// p.adds endpoints added one at a time to the last agent.
func ControlPlane(ctx context.Context, binDir string, p controlPlaneParams, rec *Recorder) error {
	cl, err := newCPLab("cp")
	if err != nil {
		return err
	}
	defer cl.close()
	ns, bpffs, dsURL, ds := cl.ns, cl.bpffs, cl.dsURL, cl.ds
	rs := cpBaseModel()
	for i := 0; i < p.endpoints; i++ {
		rs = append(rs, endpoint(i), floatingIP(i))
	}
	t0 := time.Now()
	if err := ds.Apply(ctx, rs); err != nil {
		return fmt.Errorf("write model: %w", err)
	}
	rec.Add("cp.write.endpoints", 0, msOf(time.Since(t0)))

	for s := 0; s < p.starts; s++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		last := s == p.starts-1
		err := coldStart(ctx, binDir, ns, dsURL, filepath.Join(bpffs, fmt.Sprintf("start%d", s)), p, s, last, ds, rec)
		if err != nil {
			return fmt.Errorf("start %d: %w", s+1, err)
		}
	}
	return nil
}

// cpLab is a control-plane run's lab: a network namespace with an eth0
// (the underlay, 10.30.0.11/24), a bpffs mount of its own and a file
// datastore, all under /run/calyx-bench.
type cpLab struct {
	ns, work, bpffs, dsURL string
	ds                     model.Datastore
}

// newCPLab builds the lab; name tells it from another run's.
func newCPLab(name string) (*cpLab, error) {
	prefix := fmt.Sprintf("cxb%04x", os.Getpid()&0xffff)
	c := &cpLab{work: filepath.Join("/run/calyx-bench", prefix+"-"+name), ns: prefix + "-" + name}
	c.bpffs = filepath.Join(c.work, "bpffs")
	c.remove()
	fail := func(err error) (*cpLab, error) { c.close(); return nil, err }
	if err := os.MkdirAll(c.bpffs, 0o700); err != nil {
		return fail(err)
	}
	if err := unix.Mount("bpf", c.bpffs, "bpf", 0, ""); err != nil {
		return fail(fmt.Errorf("mount bpffs: %w", err))
	}
	for _, args := range [][]string{
		{"netns", "add", c.ns},
		{"-n", c.ns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1"},
		{"-n", c.ns, "addr", "add", "10.30.0.11/24", "dev", "eth0"},
		{"-n", c.ns, "link", "set", "eth0", "up"},
		{"-n", c.ns, "link", "set", "lo", "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			return fail(fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, out))
		}
	}
	c.dsURL = "file://" + filepath.Join(c.work, "datastore")
	ds, err := model.Open(c.dsURL)
	if err != nil {
		return fail(err)
	}
	c.ds = ds
	return c, nil
}

// remove takes down whatever of the lab exists.
func (c *cpLab) remove() {
	exec.Command("ip", "netns", "del", c.ns).Run()
	unix.Unmount(c.bpffs, unix.MNT_DETACH)
	os.RemoveAll(c.work)
	os.Remove(filepath.Dir(c.work)) // only when no other run uses it
}

func (c *cpLab) close() {
	if c.ds != nil {
		c.ds.Close()
	}
	c.remove()
}

// cpBaseModel is what every control-plane model holds besides its
// endpoints: the workload and floating pools, this node and another.
func cpBaseModel() []model.Resource {
	return []model.Resource{
		&model.IPPool{Metadata: model.Metadata{Name: "bench"}, Spec: model.IPPoolSpec{CIDR: netip.MustParsePrefix("10.64.0.0/10"), BlockSize: 26, NodeSelector: "all()"}},
		&model.Node{Metadata: model.Metadata{Name: "local"}, Spec: model.NodeSpec{IPv4Address: netip.MustParsePrefix("10.30.0.11/24")}},
		&model.Node{Metadata: model.Metadata{Name: "remote"}, Spec: model.NodeSpec{IPv4Address: netip.MustParsePrefix("10.30.0.12/24")}},
		&model.IPPool{Metadata: model.Metadata{Name: "floating"}, Spec: model.IPPoolSpec{CIDR: netip.MustParsePrefix("198.18.0.0/15"), External: true}},
	}
}

// coldStart starts an agent on empty maps in dir, records how long it takes
// to program every endpoint and its RSS then; on the last start it also
// times single adds. The agent and its pins are removed on return.
func coldStart(ctx context.Context, binDir, ns, dsURL, dir string, p controlPlaneParams, round int, adds bool, ds model.Datastore, rec *Recorder) error {
	defer os.RemoveAll(dir) // unpins maps and links: the programs detach
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns, filepath.Join(binDir, "calyx-agent"),
		"--node", "local", "--datastore", dsURL, "--bpffs", dir, "--underlay", "eth0",
		"--metrics", "127.0.0.1:9091", "--log-level", "warn")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() {
		cmd.Process.Signal(unix.SIGTERM)
		cmd.Wait()
	}()
	m, err := waitForMaps(dir, 30*time.Second)
	if err != nil {
		return err
	}
	defer m.Close()
	if err := waitForRoute(m, endpointAddr(p.endpoints-1).Addr(), 60*time.Second); err != nil {
		return fmt.Errorf("initial sync: %w", err)
	}
	if err := waitForFloatingIP(m, floatingAddr(p.endpoints-1), 60*time.Second); err != nil {
		return fmt.Errorf("initial sync: %w", err)
	}
	sync := time.Since(start)
	rec.Add("cp.start.endpoints", round, msOf(sync))
	rss := float64(rssKiB(cmd.Process.Pid)) / 1024
	rec.Add("cp.rss", round, rss)
	rec.logf("control plane: start %d: %d endpoints programmed in %s, RSS %.1f MiB", round+1, p.endpoints, sync.Round(time.Millisecond), rss)
	if !adds {
		return nil
	}
	var lat []time.Duration
	for j := 0; j < p.adds; j++ {
		ep := endpoint(p.endpoints + j)
		t := time.Now()
		if err := ds.Apply(ctx, []model.Resource{ep}); err != nil {
			return err
		}
		rec.Add("cp.change.endpoint-apply", j, msOf(time.Since(t)))
		if err := waitForRoute(m, ep.Spec.IPNetworks[0].Addr(), 10*time.Second); err != nil {
			return fmt.Errorf("add %d: %w", j, err)
		}
		d := time.Since(t)
		lat = append(lat, d)
		rec.Add("cp.change.endpoint", j, msOf(d))
	}
	rec.logf("control plane: one endpoint added at %d: p50 %s, p99 %s", p.endpoints, Percentile(lat, 50).Round(10*time.Microsecond), Percentile(lat, 99).Round(10*time.Microsecond))
	lat = lat[:0]
	for j := 0; j < p.adds; j++ {
		f := floatingIP(p.endpoints + j)
		t := time.Now()
		if err := ds.Apply(ctx, []model.Resource{f}); err != nil {
			return err
		}
		if err := waitForFloatingIP(m, f.Spec.IP, 10*time.Second); err != nil {
			return fmt.Errorf("floating IP add %d: %w", j, err)
		}
		d := time.Since(t)
		lat = append(lat, d)
		rec.Add("cp.change.fip", j, msOf(d))
	}
	rec.logf("control plane: one floating IP added at %d: p50 %s, p99 %s", p.endpoints, Percentile(lat, 50).Round(10*time.Microsecond), Percentile(lat, 99).Round(10*time.Microsecond))
	return nil
}

// floatingAddr is the floating IP of endpoint i, in 198.18.0.0/15.
func floatingAddr(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{198, byte(18 + i>>16), byte(i >> 8), byte(i)})
}

func floatingIP(i int) *model.FloatingIP {
	return &model.FloatingIP{Metadata: model.Metadata{Name: fmt.Sprintf("fip-%d", i)},
		Spec: model.FloatingIPSpec{IP: floatingAddr(i), Endpoint: fmt.Sprintf("ep-%d", i)}}
}

func waitForFloatingIP(m *bpfmap.Maps, a netip.Addr, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		_, ok, err := m.FIPs.Lookup(a)
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("floating IP %s not programmed within %s", a, limit)
		}
		time.Sleep(200 * time.Microsecond)
	}
}

func waitForMaps(dir string, limit time.Duration) (*bpfmap.Maps, error) {
	deadline := time.Now().Add(limit)
	for {
		m, err := bpfmap.OpenPinned(dir)
		if err == nil {
			return m, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("agent did not pin its maps: %w", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func waitForRoute(m *bpfmap.Maps, a netip.Addr, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		r, ok, err := m.LookupRoute(a)
		if err != nil {
			return err
		}
		if ok && r.Type == bpfmap.RouteRemoteWorkload {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("route for %s not programmed within %s", a, limit)
		}
		time.Sleep(200 * time.Microsecond)
	}
}

// rssKiB reads the resident set of the agent (the child of `ip netns exec`,
// which execs it, so the pid is the agent's).
func rssKiB(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			v, _ := strconv.Atoi(f[1])
			return v
		}
	}
	return 0
}
