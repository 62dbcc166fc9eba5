package lab

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestParseNameservers checks the resolv.conf parser. Pure Go.
func TestParseNameservers(t *testing.T) {
	got := ParseNameservers("# written by dhclient\nsearch lab\nnameserver 10.65.0.53\n  nameserver\t11.8.0.53 \nnameserver\nnameservers 1.1.1.1\nnameserver fe80::1%eth0\n")
	want := []string{"10.65.0.53", "11.8.0.53", "fe80::1%eth0"}
	if !slices.Equal(got, want) {
		t.Errorf("ParseNameservers = %q, want %q", got, want)
	}
	if got := ParseNameservers(""); len(got) != 0 {
		t.Errorf("ParseNameservers of nothing = %q", got)
	}
}

// udhcpdConf is a busybox udhcpd configuration that serves one address,
// by MAC, on iface: the lab's stand-in for calyx's DHCP server.
func udhcpdConf(dir, iface string, w *Workload, gw, dns string, mtu int, staticRoutes string) string {
	return fmt.Sprintf(`start %s
end %s
interface %s
lease_file %s
pidfile %s
static_lease %s %s
opt subnet 255.255.255.0
opt router %s
opt dns %s
opt mtu %d
opt lease 600
opt staticroutes %s
`, w.IP, w.IP, iface, filepath.Join(dir, iface+".leases"), filepath.Join(dir, iface+".pid"), w.MAC, w.IP, gw, dns, mtu, staticRoutes)
}

// TestDHCPClients runs the real clients in a VM with two NICs that boots
// without addresses, against busybox udhcpd on the host taps (no calyx):
// udhcpc on eth0 and dhclient on eth1, then, after a reboot, the other way
// round. Each time the instance must end up as the example wants
// it (addresses with their prefixes, the default route on eth0 only, the
// host route via eth1, the MTU, DNS in the instance's resolv.conf and not
// the host's). Then, with the servers gone, every client must give up
// within its timeout with an error that says so, after sending its
// requests; and Close must leave no process, file or /etc/netns directory.
func TestDHCPClients(t *testing.T) {
	l := newVMLab(t, Options{WorkloadKind: KindVM})
	RequireDHCPClients(t)
	RequireTools(t, "busybox", "tcpdump")
	if out, err := l.Exec("", "busybox", "udhcpd", "--help"); err != nil && !strings.Contains(out.Combined(), "Usage: udhcpd") {
		SkipOrFailInCI(t, "busybox has no udhcpd: %v", err)
	}
	hostResolv, err := os.ReadFile("/etc/resolv.conf")
	if err != nil {
		t.Fatal(err)
	}
	tmpBefore, _ := filepath.Glob("/etc/resolv.conf.dhclient-new.*")

	h, err := l.AddHost("host-a", "10.30.0.11/24")
	if err != nil {
		t.Fatal(err)
	}
	vm, err := l.PlanWorkload("host-a", "vm1", "10.65.0.2", "")
	if err != nil {
		t.Fatal(err)
	}
	vm.DHCP, vm.MTU = true, 1500
	nic, err := l.AddNIC(vm, "", "11.8.0.5", "")
	if err != nil {
		t.Fatal(err)
	}
	if err := l.CreateWorkload(vm); err != nil {
		t.Fatal(err)
	}
	checkNoAddress(t, l, vm)

	// The servers: the subnets' gateway addresses on the host taps, one
	// udhcpd per tap. Option 121 carries the default route (and on eth1
	// the host route), as calyx sends it.
	srvDir := filepath.Join(l.Dir, "udhcpd")
	if err := os.MkdirAll(srvDir, 0o700); err != nil {
		t.Fatal(err)
	}
	var servers []*Proc
	startServers := func() {
		t.Helper()
		for _, s := range []struct {
			w                  *Workload
			gw, cidr, dns, rts string
		}{
			{vm, "10.65.0.1", "10.65.0.1/24", "10.65.0.53", "0.0.0.0/0 10.65.0.1"},
			{nic, "11.8.0.1", "11.8.0.1/24", "11.8.0.53", "11.11.0.0/16 11.8.0.1 0.0.0.0/0 11.8.0.1"},
		} {
			mustExec(t, l, "", "ip", "-n", h.NS, "addr", "replace", s.cidr, "dev", s.w.HostIface)
			conf := filepath.Join(srvDir, s.w.HostIface+".conf")
			if err := os.WriteFile(conf, []byte(udhcpdConf(srvDir, s.w.HostIface, s.w, s.gw, s.dns, 1400, s.rts)), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(srvDir, s.w.HostIface+".leases"), nil, 0o600); err != nil {
				t.Fatal(err)
			}
			p, err := l.ExecBackground(h.NS, 5*time.Minute, "busybox", "udhcpd", "-f", conf)
			if err != nil {
				t.Fatal(err)
			}
			servers = append(servers, p)
		}
		time.Sleep(300 * time.Millisecond)
		for _, p := range servers {
			if _, err := p.Wait(0); err == nil || !strings.Contains(err.Error(), "still running") {
				t.Fatalf("udhcpd exited: %v", err)
			}
		}
	}
	stopServers := func() {
		for _, p := range servers {
			_, _ = p.Stop(syscall.SIGTERM, 2*time.Second)
		}
		servers = nil
	}
	startServers()

	checkLeased := func(label, lastDNS string) {
		t.Helper()
		for _, c := range []struct {
			w    *Workload
			want string
		}{{vm, "10.65.0.2/24"}, {nic, "11.8.0.5/24"}} {
			a, err := l.InstanceAddrs(c.w, "", false)
			if err != nil || len(a) != 1 || a[0].String() != c.want {
				t.Errorf("%s: %s %s addresses %v, %v; want %s", label, c.w.Name, c.w.InstanceIface(), a, err, c.want)
			}
			if mtu, err := l.InstanceMTU(c.w, ""); err != nil || mtu != 1400 {
				t.Errorf("%s: %s mtu %d, %v; want 1400 from option 26", label, c.w.Name, mtu, err)
			}
		}
		routes, err := l.InstanceRoutes(vm, false)
		if err != nil {
			t.Fatal(err)
		}
		joined := strings.Join(routes, "\n")
		for _, want := range []string{"default via 10.65.0.1 dev eth0", "11.11.0.0/16 via 11.8.0.1 dev eth1",
			"10.65.0.0/24 dev eth0 proto kernel scope link src 10.65.0.2", "11.8.0.0/24 dev eth1 proto kernel scope link src 11.8.0.5"} {
			if !slices.ContainsFunc(routes, func(r string) bool { return strings.HasPrefix(r, want) }) {
				t.Errorf("%s: routes lack %q:\n%s", label, want, joined)
			}
		}
		if strings.Contains(joined, "default via 11.8.0.1") {
			t.Errorf("%s: a second default route via eth1:\n%s", label, joined)
		}
		if out := mustExec(t, l, "", "ip", "-n", vm.NS, "route", "get", "11.11.3.4"); !strings.Contains(out, "via 11.8.0.1 dev eth1") {
			t.Errorf("%s: 11.11.3.4 does not leave by eth1: %s", label, out)
		}
		rc, err := l.ReadResolvConf(vm)
		if err != nil || !slices.Equal(ParseNameservers(rc), []string{lastDNS}) {
			t.Errorf("%s: resolv.conf %q, %v; want nameserver %s", label, rc, err, lastDNS)
		}
		if err := l.WaitPing(vm.NS, "11.8.0.1", 3*time.Second); err != nil {
			t.Errorf("%s: %v", label, err)
		}
		if b, err := os.ReadFile("/etc/resolv.conf"); err != nil || string(b) != string(hostResolv) {
			t.Fatalf("%s: the host's /etc/resolv.conf changed: %q, %v", label, b, err)
		}
		if pidf, _ := filepath.Glob(filepath.Join(l.DHCPDir(vm), "*.pid")); len(pidf) > 0 {
			t.Errorf("%s: pid files left: %v", label, pidf)
		}
		if left := pidsWithArg("dhclient", filepath.Join(l.DHCPDir(vm), "dhclient4-eth0.leases")); len(left) > 0 {
			t.Errorf("%s: dhclient still running: %v", label, left)
		}
		if left := pidsWithArg("dhclient", filepath.Join(l.DHCPDir(vm), "dhclient4-eth1.leases")); len(left) > 0 {
			t.Errorf("%s: dhclient still running: %v", label, left)
		}
	}

	// eth0 by udhcpc, then eth1 by dhclient: DNS is the last one's.
	out, err := l.UDHCPC(vm, "eth0")
	t.Logf("udhcpc eth0:\n%s", out)
	if err != nil {
		t.Fatal(err)
	}
	out, err = l.DHClient(nic, "", false)
	t.Logf("dhclient -4 eth1:\n%s", out)
	if err != nil {
		t.Fatal(err)
	}
	checkLeased("udhcpc eth0, dhclient eth1", "11.8.0.53")
	if _, err := os.Stat(l.ResolvConfPath(vm)); err != nil || !strings.HasPrefix(l.ResolvConfPath(vm), "/etc/netns/"+vm.NS+"/") {
		t.Errorf("resolv.conf at %s: %v", l.ResolvConfPath(vm), err)
	}
	for _, f := range []string{"dhclient4-eth1.leases", "dhclient4-eth1.conf", "dhclient4-eth1.log", "udhcpc-eth0.log"} {
		if _, err := os.Stat(filepath.Join(l.DHCPDir(vm), f)); err != nil {
			t.Errorf("client file: %v", err)
		}
	}
	if !strings.HasPrefix(l.DHCPDir(nic), l.Dir+"/") || l.DHCPDir(nic) != l.DHCPDir(vm) {
		t.Errorf("DHCPDir %s / %s not one directory under %s", l.DHCPDir(vm), l.DHCPDir(nic), l.Dir)
	}

	// A reboot forgets the configuration; the other clients then.
	if err := l.StopVM(vm); err != nil {
		t.Fatal(err)
	}
	if err := l.StartVM(vm); err != nil {
		t.Fatal(err)
	}
	checkNoAddress(t, l, vm)
	// New taps: udhcpd, bound to the old ones, must start again (calyx
	// follows the interfaces itself).
	stopServers()
	startServers()
	out, err = l.DHClientWith(vm, "eth0", false, DHCPOptions{Timeout: 10 * time.Second})
	t.Logf("dhclient -4 eth0:\n%s", out)
	if err != nil {
		t.Fatal(err)
	}
	out, err = l.UDHCPC(vm, "eth1")
	t.Logf("udhcpc eth1:\n%s", out)
	if err != nil {
		t.Fatal(err)
	}
	checkLeased("dhclient eth0, udhcpc eth1", "11.8.0.53")

	// A release takes the address away.
	out, err = l.DHClientRelease(vm, "eth0", false)
	t.Logf("dhclient -4 -r eth0:\n%s", out)
	if err != nil {
		t.Fatal(err)
	}
	if a, err := l.InstanceAddrs(vm, "eth0", false); err != nil || len(a) != 0 {
		t.Errorf("eth0 addresses after the release: %v, %v", a, err)
	}
	if _, err := l.DHClientRelease(vm, "eth1", true); err == nil || !strings.Contains(err.Error(), "no lease") {
		t.Errorf("release without a recorded lease: %v", err)
	}
	if _, err := l.UDHCPC(vm, "eth7"); err == nil || !strings.Contains(err.Error(), "eth0, eth1") {
		t.Errorf("udhcpc on an interface the instance lacks: %v", err)
	}

	// Nobody answers: every client gives up within its timeout, having
	// asked on the wire.
	stopServers()
	capt, err := l.StartCapture(h.NS, vm.HostIface, "udp port 67 or udp port 547 or icmp6")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name    string
		timeout time.Duration
		run     func() (string, error)
		want    []string
	}{
		{"udhcpc", 2 * time.Second, func() (string, error) { return l.UDHCPCWith(vm, "", DHCPOptions{Timeout: 2 * time.Second}) },
			[]string{"udhcpc on vm1 eth0", "no lease", "2s"}},
		{"dhclient -4", 3 * time.Second, func() (string, error) {
			return l.DHClientWith(vm, "", false, DHCPOptions{Timeout: 3 * time.Second, Fresh: true})
		}, []string{"dhclient -4 on vm1 eth0", "no lease", "3s"}},
		{"dhclient -6", 3 * time.Second, func() (string, error) { return l.DHClientWith(vm, "", true, DHCPOptions{Timeout: 3 * time.Second}) },
			[]string{"dhclient -6 on vm1 eth0", "no lease", "3s"}},
		{"rdisc6", 3 * time.Second, func() (string, error) { return l.RDisc6(vm, "") },
			[]string{"rdisc6 on vm1 eth0", "no router advertisement"}},
	} {
		start := time.Now()
		out, err := c.run()
		took := time.Since(start)
		t.Logf("%s without a server, %s: %v\n%s", c.name, took.Round(time.Millisecond), err, out)
		if err == nil {
			t.Errorf("%s succeeded without a server", c.name)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q lacks %q", c.name, err, w)
			}
		}
		if took < c.timeout-time.Second || took > c.timeout+5*time.Second {
			t.Errorf("%s gave up after %s, timeout %s", c.name, took, c.timeout)
		}
	}
	pkts, err := capt.Stop()
	if err != nil {
		t.Fatal(err)
	}
	var discovers, solicits, rs int
	for _, p := range pkts {
		switch {
		case strings.Contains(p, "BOOTP/DHCP, Request from "+vm.MAC.String()):
			discovers++
		case strings.Contains(p, "dhcp6 solicit"):
			solicits++
		case strings.Contains(p, "router solicitation"):
			rs++
		}
	}
	t.Logf("on %s: %d DHCP requests, %d DHCPv6 solicits, %d router solicitations", vm.HostIface, discovers, solicits, rs)
	if discovers < 3 || solicits < 1 || rs < 3 {
		t.Errorf("on %s: %d DHCP requests (want 3 or more), %d solicits, %d router solicitations (want 3):\n%s", vm.HostIface, discovers, solicits, rs, strings.Join(pkts, "\n"))
	}
	if pids := strings.Fields(mustExec(t, l, "", "ip", "netns", "pids", vm.NS)); len(pids) != 2 {
		t.Errorf("processes in %s: %v, want only the two relays", vm.NS, pids)
	}

	prefix, dir, etc := l.Prefix, l.DHCPDir(vm), filepath.Dir(l.ResolvConfPath(vm))
	if err := l.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	assertGone(t, prefix)
	for _, p := range []string{dir, etc} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s left after Close (stat: %v)", p, err)
		}
	}
	if left, err := netnsEtcDirs(prefix); err != nil || len(left) > 0 {
		t.Errorf("/etc/netns entries of %s left: %v, %v", prefix, left, err)
	}
	if b, err := os.ReadFile("/etc/resolv.conf"); err != nil || string(b) != string(hostResolv) {
		t.Errorf("the host's /etc/resolv.conf changed: %q, %v", b, err)
	}
	if tmp, _ := filepath.Glob("/etc/resolv.conf.dhclient-new.*"); len(tmp) > len(tmpBefore) {
		t.Errorf("dhclient-script left %v", tmp)
	}
}

// TestReapNetnsEtc checks that Leftovers finds a lab's /etc/netns
// directories and Reap removes them and nothing else there.
func TestReapNetnsEtc(t *testing.T) {
	Require(t)
	prefix, err := newPrefix()
	if err != nil {
		t.Fatal(err)
	}
	_, statErr := os.Stat(NetnsEtcDir)
	created := os.IsNotExist(statErr)
	mine := filepath.Join(NetnsEtcDir, prefix+"-vm1")
	decoy := filepath.Join(NetnsEtcDir, prefix+"vm1") // no dash: no lab namespace
	t.Cleanup(func() {
		_ = os.RemoveAll(mine)
		_ = os.RemoveAll(decoy)
		if created {
			_ = os.Remove(NetnsEtcDir)
		}
	})
	for _, d := range []string{mine, decoy} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "resolv.conf"), []byte("nameserver 10.65.0.53\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	left, err := Leftovers()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(left, prefix) {
		t.Errorf("Leftovers() = %v, lacks %s (it has %s)", left, prefix, mine)
	}
	if err := Reap(prefix); err != nil {
		t.Fatalf("reap: %v", err)
	}
	if _, err := os.Stat(mine); !os.IsNotExist(err) {
		t.Errorf("%s left after Reap (stat: %v)", mine, err)
	}
	if _, err := os.Stat(filepath.Join(decoy, "resolv.conf")); err != nil {
		t.Errorf("Reap removed %s, which is no lab's: %v", decoy, err)
	}
}
