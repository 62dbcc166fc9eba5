package lab

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestWorkloadKinds checks kind parsing, the lab default with its
// environment fallback, and the alternation of "mixed". Pure Go.
func TestWorkloadKinds(t *testing.T) {
	for _, s := range []string{"veth", "vm", "mixed"} {
		if k, err := ParseWorkloadKind(s); err != nil || string(k) != s {
			t.Errorf("ParseWorkloadKind(%q) = %q, %v", s, k, err)
		}
	}
	for _, s := range []string{"", "VM", "kvm", "tap"} {
		if _, err := ParseWorkloadKind(s); err == nil || !strings.Contains(err.Error(), strconv.Quote(s)) {
			t.Errorf("ParseWorkloadKind(%q): error %v does not name the value", s, err)
		}
	}
	for n, want := range map[int]WorkloadKind{1: KindVeth, 2: KindVM, 3: KindVeth, 4: KindVM, 10: KindVM} {
		if got := KindMixed.For(n); got != want {
			t.Errorf("KindMixed.For(%d) = %s, want %s", n, got, want)
		}
		if got := KindVM.For(n); got != KindVM {
			t.Errorf("KindVM.For(%d) = %s", n, got)
		}
		if got := WorkloadKind("").For(n); got != KindVeth {
			t.Errorf(`"".For(%d) = %s`, n, got)
		}
	}

	t.Setenv(WorkloadKindEnv, "")
	if k, err := defaultWorkloadKind(""); err != nil || k != KindVeth {
		t.Errorf("default without env = %s, %v; want veth", k, err)
	}
	t.Setenv(WorkloadKindEnv, "mixed")
	if k, err := defaultWorkloadKind(""); err != nil || k != KindMixed {
		t.Errorf("default with env mixed = %s, %v", k, err)
	}
	if k, err := defaultWorkloadKind(KindVM); err != nil || k != KindVM {
		t.Errorf("option vm over env mixed = %s, %v", k, err)
	}
	// New rejects a bad kind before it creates anything, so this needs no
	// privileges.
	t.Setenv(WorkloadKindEnv, "qemu")
	if _, err := New(Options{}); err == nil || !strings.Contains(err.Error(), `"qemu"`) || !strings.Contains(err.Error(), WorkloadKindEnv) {
		t.Errorf("New with $%s=qemu: %v, want an error naming the value and the variable", WorkloadKindEnv, err)
	}
	if _, err := New(Options{WorkloadKind: "container"}); err == nil || !strings.Contains(err.Error(), `"container"`) {
		t.Errorf("New with WorkloadKind container: %v", err)
	}

	// Planning creates nothing, so a lab value without namespaces will do.
	l := &Lab{Prefix: "cx0001", nextWorkload: 1, opts: Options{WorkloadKind: KindMixed}, hosts: []*Host{{Name: "host-a"}}}
	for i, want := range []WorkloadKind{KindVeth, KindVM, KindVeth, KindVM} {
		w, err := l.PlanWorkload("host-a", "w"+strconv.Itoa(i+1), "10.65.0."+strconv.Itoa(i+2), "")
		if err != nil {
			t.Fatal(err)
		}
		if w.Kind != want || w.HostIface != "cx0001w"+strconv.Itoa(i+1) {
			t.Errorf("workload %d: kind %s, host side %s; want %s, cx0001w%d", i+1, w.Kind, w.HostIface, want, i+1)
		}
	}
	w, err := l.PlanWorkloadKind("host-a", "v1", "10.65.1.2", "", KindVeth)
	if err != nil || w.Kind != KindVeth {
		t.Errorf("explicit veth on an even number: %v, %v", w, err)
	}
	if _, err := l.PlanWorkloadKind("host-a", "x1", "10.65.1.3", "", "lxc"); err == nil || !strings.Contains(err.Error(), `"lxc"`) {
		t.Errorf("PlanWorkloadKind lxc: %v", err)
	}
	w.Kind = "firecracker"
	if err := l.CreateWorkload(w); err == nil || !strings.Contains(err.Error(), `"firecracker"`) {
		t.Errorf("CreateWorkload with kind firecracker: %v", err)
	}
	if err := l.StopVM(w); err == nil {
		t.Error("StopVM accepted a workload of an invalid kind")
	}
}

// buildRelayBin compiles calyx-lab (whose vm-relay command is the VMs'
// relay) into a temporary directory, so the test runs the relay of this
// tree rather than whatever bin/ holds.
func buildRelayBin(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		SkipOrFailInCI(t, "go tool not on PATH: %v", err)
	}
	dir := t.TempDir()
	out, err := exec.Command(goBin, "build", "-o", filepath.Join(dir, "calyx-lab"), "github.com/calyxnet/calyx/cmd/calyx-lab").CombinedOutput()
	if err != nil {
		t.Fatalf("build calyx-lab: %v: %s", err, out)
	}
	return dir
}

// newVMLab is newTestLab for tests with VM workloads.
func newVMLab(t *testing.T, opts Options) *Lab {
	t.Helper()
	Require(t)
	RequireTools(t, "ip", "ping", "sysctl")
	opts.BinDir = buildRelayBin(t)
	RequireVM(t, opts.BinDir)
	return newTestLab(t, opts)
}

// routeToWorkload gives the host namespace a kernel-only path to w, as
// the benchmarks' baseline does: a /32 route to the host side, proxy ARP so
// the instance's gateway 169.254.1.1 resolves to the host side, and
// forwarding for traffic between workloads. It has to be redone whenever
// the host side is recreated (StartVM, MigrateWorkload).
func routeToWorkload(t *testing.T, l *Lab, w *Workload) {
	t.Helper()
	h, err := l.Host(w.Host)
	if err != nil {
		t.Fatal(err)
	}
	mustExec(t, l, h.NS, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv4.conf."+w.HostIface+".proxy_arp=1")
	mustExec(t, l, "", "ip", "-n", h.NS, "route", "replace", w.IP.String()+"/32", "dev", w.HostIface, "scope", "link")
}

// linkKind returns the linkinfo kind ("veth", "tun") and, for a tun, its
// type ("tap") of ifc in ns.
func linkKind(t *testing.T, l *Lab, ns, ifc string) string {
	t.Helper()
	out := mustExec(t, l, "", "ip", "-n", ns, "-d", "-j", "link", "show", "dev", ifc)
	var links []struct {
		Linkinfo struct {
			InfoKind string `json:"info_kind"`
			InfoData struct {
				Type string `json:"type"`
			} `json:"info_data"`
		} `json:"linkinfo"`
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil || len(links) != 1 {
		t.Fatalf("ip -d -j link show %s in %s: %v: %s", ifc, ns, err, out)
	}
	k := links[0].Linkinfo.InfoKind
	if d := links[0].Linkinfo.InfoData.Type; d != "" {
		k += "/" + d
	}
	return k
}

// checkInstance checks that w's eth0 is configured as the lab promises:
// the given link kind, MAC, MTU, /32, IPv6 /128, gateway routes; and that
// its host side has the kind and MTU and is up.
func checkInstance(t *testing.T, l *Lab, w *Workload, kind string) {
	t.Helper()
	h, err := l.Host(w.Host)
	if err != nil {
		t.Fatal(err)
	}
	if k := linkKind(t, l, w.NS, "eth0"); k != kind {
		t.Errorf("%s eth0 is %s, want %s", w.Name, k, kind)
	}
	if k := linkKind(t, l, h.NS, w.HostIface); k != kind {
		t.Errorf("%s host side %s is %s, want %s", w.Name, w.HostIface, k, kind)
	}
	eth := mustExec(t, l, "", "ip", "-n", w.NS, "-o", "link", "show", "eth0")
	if !strings.Contains(eth, w.MAC.String()) || !strings.Contains(eth, "mtu "+strconv.Itoa(w.MTU)+" ") || !strings.Contains(eth, "UP") {
		t.Errorf("%s eth0 lacks MAC %s, mtu %d or UP: %s", w.Name, w.MAC, w.MTU, eth)
	}
	hs := mustExec(t, l, "", "ip", "-n", h.NS, "-o", "link", "show", w.HostIface)
	if !strings.Contains(hs, "mtu "+strconv.Itoa(w.MTU)+" ") || !strings.Contains(hs, ",UP") {
		t.Errorf("%s host side lacks mtu %d or UP: %s", w.Name, w.MTU, hs)
	}
	addrs := mustExec(t, l, "", "ip", "-n", w.NS, "-o", "addr", "show", "eth0")
	want := []string{w.IP.String() + "/32"}
	if w.IPv6.IsValid() {
		want = append(want, w.IPv6.String()+"/128")
	}
	for _, a := range want {
		if !strings.Contains(addrs, a) {
			t.Errorf("%s eth0 lacks %s: %s", w.Name, a, addrs)
		}
	}
	routes := mustExec(t, l, "", "ip", "-n", w.NS, "route")
	for _, r := range []string{"default via 169.254.1.1 dev eth0", "169.254.1.1 dev eth0 scope link"} {
		if !strings.Contains(routes, r) {
			t.Errorf("%s routes lack %q:\n%s", w.Name, r, routes)
		}
	}
	if w.IPv6.IsValid() {
		if r6 := mustExec(t, l, "", "ip", "-n", w.NS, "-6", "route"); !strings.Contains(r6, "default via fe80::1 dev eth0") {
			t.Errorf("%s lacks the IPv6 default route:\n%s", w.Name, r6)
		}
	}
}

// relayPidsOf returns the pids of the running relays of the lab with prefix.
func relayPidsOf(t *testing.T, prefix string) []int {
	t.Helper()
	relays, err := labRelays()
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for pid, p := range relays {
		if p == prefix {
			pids = append(pids, pid)
		}
	}
	return pids
}

// TestVMWorkload builds a host with a VM and a veth workload and kernel-only
// routing (no agent), and checks the VM's taps and relay: traffic both ways,
// TCP super-frames crossing the relay unsegmented, stop, start (new
// ifindexes, same configuration), live migration of both kinds to a second
// host, and that Close leaves neither namespaces nor relays behind.
func TestVMWorkload(t *testing.T) {
	l := newVMLab(t, Options{WorkloadKind: KindMixed})
	ha, err := l.AddHost("host-a", "10.30.0.11/24")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.AddHost("host-b", "10.30.0.12/24"); err != nil {
		t.Fatal(err)
	}
	// Under "mixed" the first workload is a veth and the second a VM. Both
	// get MTU 1400 so that frames above it can only be super-frames.
	const mtu = 1400
	ve, err := l.PlanWorkload("host-a", "ve1", "10.65.0.3", "")
	if err != nil {
		t.Fatal(err)
	}
	vm, err := l.PlanWorkload("host-a", "vm1", "10.65.0.2", "02:00:00:00:00:02")
	if err != nil {
		t.Fatal(err)
	}
	if ve.Kind != KindVeth || vm.Kind != KindVM {
		t.Fatalf("mixed lab planned %s as %s and %s as %s", ve.Name, ve.Kind, vm.Name, vm.Kind)
	}
	for _, w := range []*Workload{ve, vm} {
		w.MTU = mtu
		if err := l.CreateWorkload(w); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.AddIPv6(vm, "fd00:65::2"); err != nil {
		t.Fatal(err)
	}
	checkInstance(t, l, ve, "veth")
	checkInstance(t, l, vm, "tun/tap")
	if !l.VMRunning(vm) || l.VMRunning(ve) {
		t.Errorf("VMRunning: vm %v, veth %v", l.VMRunning(vm), l.VMRunning(ve))
	}
	if pids := relayPidsOf(t, l.Prefix); len(pids) != 1 {
		t.Errorf("relays of %s: %v, want one", l.Prefix, pids)
	}
	// The relay lives in the VM's namespace, where Reap looks for processes.
	if out := mustExec(t, l, "", "ip", "netns", "pids", vm.NS); strings.TrimSpace(out) != strconv.Itoa(l.relay(vm).proc.Pid()) {
		t.Errorf("processes in %s: %q, want the relay %d", vm.NS, out, l.relay(vm).proc.Pid())
	}
	if err := l.SetWorkloadMTU(vm, 1450); err != nil {
		t.Fatal(err)
	}
	checkInstance(t, l, vm, "tun/tap")
	if err := l.SetWorkloadMTU(vm, mtu); err != nil {
		t.Fatal(err)
	}

	routeToWorkload(t, l, ve)
	routeToWorkload(t, l, vm)
	traffic := func(host *Host, label string, bulk bool) {
		t.Helper()
		for _, p := range [][2]string{
			{host.NS, vm.IP.String()},
			{vm.NS, host.Underlay.Addr().String()},
			{ve.NS, vm.IP.String()},
			{vm.NS, ve.IP.String()},
		} {
			if err := l.WaitPing(p[0], p[1], 5*time.Second); err != nil {
				t.Fatalf("%s: %v", label, err)
			}
			if _, err := l.Ping(p[0], p[1], 3); err != nil {
				t.Errorf("%s: %v", label, err)
			}
		}
		if !bulk {
			return
		}
		// Both directions through the relay, forwarded by the host
		// between the veth and the tap.
		for _, d := range []struct {
			src, dst *Workload
			port     int
		}{{ve, vm, 5201}, {vm, ve, 5202}} {
			tr, err := l.TCPTransfer(d.src.NS, d.dst.NS, d.dst.IP, d.port, 200<<20, 60*time.Second)
			if err != nil {
				t.Fatalf("%s: tcp %s -> %s: %v", label, d.src.Name, d.dst.Name, err)
			}
			t.Logf("%s: tcp %s -> %s: %d bytes, %.1f Gbit/s", label, d.src.Name, d.dst.Name, tr.Received, tr.Gbps())
		}
	}
	traffic(ha, "host-a", true)

	st, err := l.RelayStats(vm)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("relay: host->vm %+v, vm->host %+v", st.HostToVM, st.VMToHost)
	for dir, c := range map[string]RelayCounters{"host->vm": st.HostToVM, "vm->host": st.VMToHost} {
		// 200 MB in frames of at most the MTU would be 140,000 frames or
		// more; super-frames of tens of kilobytes prove that GSO crossed.
		if c.MaxFrame < 8*mtu || c.GSOFrames == 0 {
			t.Errorf("relay %s: largest frame %d bytes, %d GSO frames; want super-frames far above MTU %d", dir, c.MaxFrame, c.GSOFrames, mtu)
		}
		if c.Bytes < 200<<20 {
			t.Errorf("relay %s: %d bytes, less than the transfer", dir, c.Bytes)
		}
		if c.WriteErrors != 0 {
			t.Errorf("relay %s: %d write errors", dir, c.WriteErrors)
		}
	}
	hs, err := l.HostIfaceStats(vm)
	if err != nil {
		t.Fatal(err)
	}
	eth0, err := l.LinkStats(vm.NS, "eth0")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("host tap %s: %+v; vm eth0: %+v", vm.HostIface, hs, eth0)
	// Every frame the host tap transmitted is one the relay read (and
	// wrote into eth0), so the counters agree up to what is in flight. The
	// relay's counters are read first: a frame it relays after that (a
	// late ACK, a neighbour solicitation) shows on the taps only, so either
	// side may be ahead by a few.
	if d := int64(hs.TxPackets) - int64(st.HostToVM.Frames); d < -10 || d > 10 {
		t.Errorf("host tap tx_packets %d, relay read %d", hs.TxPackets, st.HostToVM.Frames)
	}
	if d := int64(st.HostToVM.Frames) - int64(eth0.RxPackets); d < -10 || d > 10 {
		t.Errorf("relay wrote %d frames into eth0, which received %d", st.HostToVM.Frames, eth0.RxPackets)
	}

	// Stop: the relay exits and takes both taps with it.
	pid := l.relay(vm).proc.Pid()
	if err := l.StopVM(vm); err != nil {
		t.Fatal(err)
	}
	if _, err := Ifindex(ha.NS, vm.HostIface); err == nil {
		t.Errorf("host tap %s still exists after StopVM", vm.HostIface)
	}
	if _, err := Ifindex(vm.NS, "eth0"); err == nil {
		t.Error("eth0 still exists after StopVM")
	}
	if processAlive(pid) || l.VMRunning(vm) {
		t.Errorf("relay %d still running after StopVM", pid)
	}
	final, err := l.RelayStats(vm)
	if err != nil || !final.Final || final.HostToVM.Frames < st.HostToVM.Frames {
		t.Errorf("relay stats after stop: %+v, %v", final, err)
	}
	if err := l.StopVM(vm); err == nil {
		t.Error("StopVM of a stopped VM succeeded")
	}
	for _, err := range []error{l.StopVM(ve), l.StartVM(ve)} {
		if err == nil || !strings.Contains(err.Error(), "veth") {
			t.Errorf("VM lifecycle on a veth workload: %v, want an error naming the kind", err)
		}
	}

	// Start: same names, new devices, same configuration.
	if err := l.StartVM(vm); err != nil {
		t.Fatal(err)
	}
	if err := l.StartVM(vm); err == nil {
		t.Error("StartVM of a running VM succeeded")
	}
	hs2, err := l.HostIfaceStats(vm)
	if err != nil {
		t.Fatal(err)
	}
	if hs2.Ifindex == hs.Ifindex {
		t.Errorf("host tap has ifindex %d again after a restart", hs2.Ifindex)
	}
	t.Logf("host tap ifindex %d before the restart, %d after", hs.Ifindex, hs2.Ifindex)
	checkInstance(t, l, vm, "tun/tap")
	routeToWorkload(t, l, vm)
	traffic(ha, "host-a after restart", false)

	// Live migration of both kinds to host-b.
	if err := l.MigrateWorkload(vm, "host-a"); err == nil {
		t.Error("migration to the same host succeeded")
	}
	if err := l.MigrateWorkload(vm, "host-z"); err == nil {
		t.Error("migration to an unknown host succeeded")
	}
	for _, w := range []*Workload{vm, ve} {
		if err := l.MigrateWorkload(w, "host-b"); err != nil {
			t.Fatal(err)
		}
		if w.Host != "host-b" || !strings.Contains(EndpointYAML(w), "node: host-b") {
			t.Errorf("%s after migration: host %s, endpoint\n%s", w.Name, w.Host, EndpointYAML(w))
		}
		if _, err := Ifindex(ha.NS, w.HostIface); err == nil {
			t.Errorf("%s still on host-a after migration", w.HostIface)
		}
	}
	hb, err := l.Host("host-b")
	if err != nil {
		t.Fatal(err)
	}
	checkInstance(t, l, vm, "tun/tap")
	checkInstance(t, l, ve, "veth")
	routeToWorkload(t, l, vm)
	routeToWorkload(t, l, ve)
	traffic(hb, "host-b after migration", true)

	// A stopped VM migrates cold: it boots on its new host.
	if err := l.StopVM(vm); err != nil {
		t.Fatal(err)
	}
	if err := l.MigrateWorkload(vm, "host-a"); err != nil {
		t.Fatal(err)
	}
	if _, err := Ifindex(ha.NS, vm.HostIface); err == nil {
		t.Error("a stopped VM's tap appeared on migration")
	}
	if err := l.StartVM(vm); err != nil {
		t.Fatal(err)
	}
	checkInstance(t, l, vm, "tun/tap")

	pid = l.relay(vm).proc.Pid()
	prefix := l.Prefix
	if err := l.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	assertGone(t, prefix)
	if processAlive(pid) {
		t.Errorf("relay %d survived Close", pid)
	}
	if pids := relayPidsOf(t, prefix); len(pids) > 0 {
		t.Errorf("relays of %s left after Close: %v", prefix, pids)
	}
}

// TestVMRelayExits checks that a relay ends by itself: when its parent dies
// (it was started with --parent) and when both its taps are deleted; and
// that Reap finds a relay whose namespaces no longer have names.
func TestVMRelayExits(t *testing.T) {
	l := newVMLab(t, Options{})
	h, err := l.AddHost("host-a", "10.30.0.11/24")
	if err != nil {
		t.Fatal(err)
	}
	vm, err := l.PlanWorkloadKind("host-a", "vm1", "10.65.0.2", "", KindVM)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.CreateWorkload(vm); err != nil {
		t.Fatal(err)
	}

	// Deleting the host tap unplugs the VM's NIC; the relay (like QEMU)
	// keeps going until its own eth0 is gone too.
	r := l.relay(vm)
	mustExec(t, l, "", "ip", "-n", h.NS, "link", "del", vm.HostIface)
	select {
	case <-r.proc.Done():
		t.Fatal("relay exited when only the host tap was deleted")
	case <-time.After(500 * time.Millisecond):
	}
	mustExec(t, l, "", "ip", "-n", vm.NS, "link", "del", "eth0")
	select {
	case <-r.proc.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("relay still running 5s after both taps were deleted")
	}
	if res, _ := r.proc.result(); res.ExitCode == 0 {
		t.Errorf("relay exited 0 after losing both taps: %s", res.Combined())
	}
	st, err := ReadRelayStats(l.RelayStatsPath(vm))
	if err != nil || !st.Final || !strings.Contains(st.Exit, "both taps failed") {
		t.Errorf("final stats after both taps failed: %+v, %v", st, err)
	}
	if l.VMRunning(vm) {
		t.Error("VMRunning after the relay exited")
	}
	if err := l.StartVM(vm); err != nil {
		t.Fatal(err)
	}

	// A relay whose parent dies exits and removes its taps: sh starts it
	// with --parent $$ and is then killed alone.
	nsB := l.NSName("vm2")
	mustExec(t, l, "", "ip", "netns", "add", nsB)
	tapB := l.Prefix + "w99"
	script := `"$0" vm-relay --host-ns "$1" --host-tap "$2" --vm-ns "$3" --vm-tap eth0 --parent $$ & sleep 60`
	sh, err := l.ExecBackground("", time.Minute, "sh", "-c", script, l.RelayBinary(), h.NS, tapB, nsB)
	if err != nil {
		t.Fatal(err)
	}
	if err := Eventually(5*time.Second, 20*time.Millisecond, func() error { _, err := Ifindex(h.NS, tapB); return err }); err != nil {
		t.Fatal(err)
	}
	if n := len(relayPidsOf(t, l.Prefix)); n != 2 {
		t.Errorf("%d relays running, want 2", n)
	}
	if err := syscall.Kill(sh.Pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := Eventually(5*time.Second, 20*time.Millisecond, func() error {
		if idx, err := Ifindex(h.NS, tapB); err == nil {
			return fmt.Errorf("%s still in %s (ifindex %d)", tapB, h.NS, idx)
		}
		return nil
	}); err != nil {
		t.Errorf("orphaned relay kept its tap: %v", err)
	}
	_, _ = sh.Stop(syscall.SIGKILL, time.Second)

	// Namespace names deleted by hand: the relay keeps both namespaces
	// alive through its fds, and Reap still finds and kills it.
	pid := l.relay(vm).proc.Pid()
	mustExec(t, l, "", "ip", "netns", "delete", vm.NS)
	mustExec(t, l, "", "ip", "netns", "delete", h.NS)
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
	if processAlive(pid) {
		t.Errorf("relay %d survived Reap", pid)
	}
	assertGone(t, l.Prefix)
}
