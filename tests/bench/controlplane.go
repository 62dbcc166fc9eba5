// Package bench measures calyx against the kernel's own way of doing the
// same job and reports figures; it asserts nothing. `make bench` runs it.
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

	"github.com/calyxnet/calyx/maps"
	"github.com/calyxnet/calyx/model"
	"golang.org/x/sys/unix"
)

// ControlPlaneResult is what one control-plane run measured.
type ControlPlaneResult struct {
	Endpoints      int
	FirstSync      time.Duration   // agent start → the last initial route in the map
	AddLatencies   []time.Duration // apply of one more endpoint → its route in the map
	ApplyTimes     []time.Duration // of which the datastore apply call (validation + write)
	AgentRSSKiB    int
	ModelWriteTime time.Duration // writing the model into the file datastore
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

// ControlPlane runs a real calyx-agent in its own network namespace against
// a file datastore holding n endpoints (on another node, so each is a route
// in the BPF map), and measures how long one more endpoint takes to reach
// the map, adds times over.
func ControlPlane(ctx context.Context, binDir string, n, adds int) (*ControlPlaneResult, error) {
	prefix := fmt.Sprintf("cxb%04x", os.Getpid()&0xffff)
	work := filepath.Join("/run/calyx-bench", prefix)
	bpffs := filepath.Join(work, "bpffs")
	ns := prefix + "-cp"
	cleanup := func() {
		exec.Command("ip", "netns", "del", ns).Run()
		unix.Unmount(bpffs, unix.MNT_DETACH)
		os.RemoveAll(work)
		os.Remove(filepath.Dir(work)) // only when no other run uses it
	}
	cleanup()
	defer cleanup()
	if err := os.MkdirAll(bpffs, 0o700); err != nil {
		return nil, err
	}
	if err := unix.Mount("bpf", bpffs, "bpf", 0, ""); err != nil {
		return nil, fmt.Errorf("mount bpffs: %w", err)
	}
	for _, args := range [][]string{
		{"netns", "add", ns},
		{"-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1"},
		{"-n", ns, "addr", "add", "10.30.0.11/24", "dev", "eth0"},
		{"-n", ns, "link", "set", "eth0", "up"},
		{"-n", ns, "link", "set", "lo", "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}

	dsURL := "file://" + filepath.Join(work, "datastore")
	ds, err := model.Open(dsURL)
	if err != nil {
		return nil, err
	}
	defer ds.Close()
	rs := []model.Resource{
		&model.IPPool{Metadata: model.Metadata{Name: "bench"}, Spec: model.IPPoolSpec{CIDR: netip.MustParsePrefix("10.64.0.0/10"), BlockSize: 26, NodeSelector: "all()"}},
		&model.Node{Metadata: model.Metadata{Name: "local"}, Spec: model.NodeSpec{IPv4Address: netip.MustParsePrefix("10.30.0.11/24")}},
		&model.Node{Metadata: model.Metadata{Name: "remote"}, Spec: model.NodeSpec{IPv4Address: netip.MustParsePrefix("10.30.0.12/24")}},
	}
	for i := 0; i < n; i++ {
		rs = append(rs, endpoint(i))
	}
	res := &ControlPlaneResult{Endpoints: n}
	t0 := time.Now()
	if err := ds.Apply(ctx, rs); err != nil {
		return nil, fmt.Errorf("write model: %w", err)
	}
	res.ModelWriteTime = time.Since(t0)

	agentBPFFS := filepath.Join(bpffs, "local")
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns, filepath.Join(binDir, "calyx-agent"),
		"--node", "local", "--datastore", dsURL, "--bpffs", agentBPFFS, "--underlay", "eth0",
		"--metrics", "127.0.0.1:9091", "--log-level", "warn")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	defer func() {
		cmd.Process.Signal(unix.SIGTERM)
		cmd.Wait()
	}()

	m, err := waitForMaps(agentBPFFS, 30*time.Second)
	if err != nil {
		return nil, err
	}
	defer m.Close()
	if err := waitForRoute(m, endpointAddr(n-1).Addr(), 60*time.Second); err != nil {
		return nil, fmt.Errorf("initial sync: %w", err)
	}
	res.FirstSync = time.Since(start)

	for j := 0; j < adds; j++ {
		ep := endpoint(n + j)
		t := time.Now()
		if err := ds.Apply(ctx, []model.Resource{ep}); err != nil {
			return nil, err
		}
		res.ApplyTimes = append(res.ApplyTimes, time.Since(t))
		if err := waitForRoute(m, ep.Spec.IPNetworks[0].Addr(), 10*time.Second); err != nil {
			return nil, fmt.Errorf("add %d: %w", j, err)
		}
		res.AddLatencies = append(res.AddLatencies, time.Since(t))
	}
	res.AgentRSSKiB = rssKiB(cmd.Process.Pid)
	return res, nil
}

func waitForMaps(dir string, limit time.Duration) (*maps.Maps, error) {
	deadline := time.Now().Add(limit)
	for {
		m, err := maps.OpenPinned(dir)
		if err == nil {
			return m, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("agent did not pin its maps: %w", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func waitForRoute(m *maps.Maps, a netip.Addr, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		r, ok, err := m.LookupRoute(a)
		if err != nil {
			return err
		}
		if ok && r.Type == maps.RouteRemoteWorkload {
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
