package subnetsvc

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/vishvananda/netns"

	"github.com/calyxnet/calyx/agent/subnets"
	testlab "github.com/calyxnet/calyx/tests/lab"
)

// The privileged tests put the server's sockets in a "host" namespace, on
// a veth whose peer (eth0) is an "instance" in another namespace, and run
// real DHCP clients and router discovery there. They need root and the
// clients; under CI a missing one is a failure, elsewhere a skip. Run them
// under the lab lock: flock /tmp/calyx-lab.lock go test -run Privileged.

// requireLab skips (fails under CI) when the test cannot run here.
func requireLab(t *testing.T, cmds ...string) {
	t.Helper()
	fail := func(format string, args ...any) {
		t.Helper()
		testlab.SkipOrFailInCI(t, format, args...)
	}
	if os.Geteuid() != 0 {
		fail("not root: the subnet services' lab needs network namespaces and packet sockets")
	}
	for _, c := range append([]string{"ip"}, cmds...) {
		if _, err := exec.LookPath(c); err != nil {
			fail("%s missing (make deps installs it): %v", c, err)
		}
	}
}

// lab is the host and instance namespaces with the veth between them and
// a running server.
type lab struct {
	host, inst string // namespace names
	hostIf     string // host side of the veth (in host)
	ifindex    int    // its ifindex
	hostMAC    net.HardwareAddr
	instMAC    net.HardwareAddr
	dir        string
	srv        *Server

	mu     sync.Mutex
	leases []subnets.LeaseRecord
}

const instIf = "eth0"

var (
	labInstMAC = net.HardwareAddr{0x52, 0x54, 0x00, 0xca, 0x1c, 0x07}
	labHostMAC = net.HardwareAddr{0xee, 0xee, 0xee, 0xee, 0xee, 0xee}
)

// run runs a command, fails the test on error, and returns its output.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := runErr(30*time.Second, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

func runErr(timeout time.Duration, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(out), err
}

func newLab(t *testing.T) *lab {
	t.Helper()
	sfx := make([]byte, 3)
	rand.Read(sfx)
	id := hex.EncodeToString(sfx)
	l := &lab{host: "cxsvc-h-" + id, inst: "cxsvc-i-" + id, hostIf: "cxsvc" + id, hostMAC: labHostMAC, instMAC: labInstMAC, dir: t.TempDir()}
	run(t, "ip", "netns", "add", l.host)
	t.Cleanup(func() { runErr(10*time.Second, "ip", "netns", "del", l.host) })
	run(t, "ip", "netns", "add", l.inst)
	t.Cleanup(func() { runErr(10*time.Second, "ip", "netns", "del", l.inst) })
	// dhclient-script writes /etc/resolv.conf: ip netns exec binds this
	// file over it, so the host's stays untouched.
	etc := filepath.Join("/etc/netns", l.inst)
	if err := os.MkdirAll(etc, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(etc) })
	if err := os.WriteFile(filepath.Join(etc, "resolv.conf"), nil, 0o644); err != nil {
		t.Fatal(err)
	}

	run(t, "ip", "-n", l.host, "link", "add", l.hostIf, "address", l.hostMAC.String(), "type", "veth",
		"peer", "name", "cxsvcp"+id, "address", l.instMAC.String(), "netns", l.inst)
	run(t, "ip", "-n", l.inst, "link", "set", "cxsvcp"+id, "name", instIf)
	// The instance's link-local address is usable at once (DHCPv6 needs
	// it out of duplicate address detection).
	run(t, "ip", "netns", "exec", l.inst, "sysctl", "-qw", "net.ipv6.conf."+instIf+".accept_dad=0")
	run(t, "ip", "-n", l.inst, "link", "set", "lo", "up")
	run(t, "ip", "-n", l.host, "link", "set", l.hostIf, "up")
	run(t, "ip", "-n", l.inst, "link", "set", instIf, "up")
	// What BPF does for a real endpoint: answer ARP for the gateway with
	// the host side's MAC, so the client's unicast renew and release
	// reach the server.
	run(t, "ip", "-n", l.inst, "neigh", "replace", "10.65.0.1", "lladdr", l.hostMAC.String(), "dev", instIf, "nud", "permanent")

	var links []struct {
		Ifindex int `json:"ifindex"`
	}
	if err := json.Unmarshal([]byte(run(t, "ip", "-n", l.host, "-j", "link", "show", "dev", l.hostIf)), &links); err != nil || len(links) != 1 {
		t.Fatalf("ifindex of %s: %v", l.hostIf, err)
	}
	l.ifindex = links[0].Ifindex
	l.startServer(t)
	return l
}

// startServer creates the server in the host namespace (on a thread
// locked there for good: it is never handed back to the runtime) and runs
// it until the test ends.
func (l *lab) startServer(t *testing.T) {
	t.Helper()
	type result struct {
		s   *Server
		err error
	}
	ch := make(chan result)
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	go func() {
		runtime.LockOSThread() // no Unlock: the thread ends with the goroutine
		h, err := netns.GetFromName(l.host)
		if err != nil {
			ch <- result{err: err}
			return
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			ch <- result{err: err}
			return
		}
		s, err := New(log, func(r subnets.LeaseRecord) {
			l.mu.Lock()
			l.leases = append(l.leases, r)
			l.mu.Unlock()
		})
		ch <- result{s, err}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatalf("server in %s: %v", l.host, r.err)
	}
	l.srv = r.s
	gw4 := netip.MustParseAddr("10.65.0.1")
	l.srv.Update(map[int]subnets.Service{l.ifindex: {
		Endpoint: "lab-vm", Ifname: l.hostIf, Ifindex: l.ifindex, HostMAC: l.hostMAC, MAC: l.instMAC,
		V4: &subnets.Lease{
			Addr: netip.MustParseAddr("10.65.0.7"), Prefix: netip.MustParsePrefix("10.65.0.0/24"), Gateway: gw4,
			DNS: []netip.Addr{netip.MustParseAddr("10.65.0.53")},
			Routes: []subnets.Route{
				{Dst: netip.MustParsePrefix("11.11.0.0/16"), Via: gw4},
				{Dst: netip.MustParsePrefix("192.0.2.0/24"), Via: gw4},
			},
			MTU: 1450, Duration: time.Hour,
		},
		V6: &subnets.Lease{
			Addr: netip.MustParseAddr("fd00:65::7"), Prefix: netip.MustParsePrefix("fd00:65::/64"), Gateway: subnets.V6Gateway,
			DNS: []netip.Addr{netip.MustParseAddr("fd00:65::53")}, MTU: 1450, Duration: time.Hour,
		},
	}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// in runs a command in the instance namespace (with its /etc/netns files).
func (l *lab) in(t *testing.T, args ...string) string {
	t.Helper()
	return run(t, "ip", append([]string{"netns", "exec", l.inst}, args...)...)
}

// ip runs ip -n inst args.
func (l *lab) ip(t *testing.T, args ...string) string {
	t.Helper()
	return run(t, "ip", append([]string{"-n", l.inst}, args...)...)
}

// reset takes the instance back to no IPv4 address, no IPv4 routes and
// MTU 1500.
func (l *lab) reset(t *testing.T) {
	t.Helper()
	l.ip(t, "-4", "addr", "flush", "dev", instIf)
	l.ip(t, "-4", "route", "flush", "dev", instIf)
	l.ip(t, "link", "set", instIf, "mtu", "1500")
	l.ip(t, "neigh", "replace", "10.65.0.1", "lladdr", l.hostMAC.String(), "dev", instIf, "nud", "permanent")
}

// leaseSeen waits for a lease record of addr (released or not).
func (l *lab) leaseSeen(t *testing.T, addr string, released bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		l.mu.Lock()
		for _, r := range l.leases {
			if r.Addr.String() == addr && r.Released == released && r.MAC.String() == l.instMAC.String() && r.Endpoint == "lab-vm" {
				l.mu.Unlock()
				return
			}
		}
		l.mu.Unlock()
		time.Sleep(50 * time.Millisecond)
	}
	t.Errorf("no lease record for %s (released %v): %+v", addr, released, l.leases)
}

// wantLines checks that each wanted line appears in out (whitespace
// normalised) and logs the lines that matched, for the record.
func wantLines(t *testing.T, what, out string, want ...string) {
	t.Helper()
	norm := func(s string) string { return strings.Join(strings.Fields(s), " ") }
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		lines = append(lines, norm(l))
	}
	for _, w := range want {
		found := false
		for _, l := range lines {
			if strings.Contains(l, norm(w)) {
				found = true
				t.Logf("%s: %s", what, l)
				break
			}
		}
		if !found {
			t.Errorf("%s: no line with %q in:\n%s", what, w, out)
		}
	}
}

// checkV4 checks the instance's address, routes (from option 121, not
// option 3) and MTU.
func (l *lab) checkV4(t *testing.T) {
	t.Helper()
	wantLines(t, "ip -4 addr", l.ip(t, "-4", "addr", "show", "dev", instIf), "inet 10.65.0.7/24")
	wantLines(t, "ip -4 route", l.ip(t, "-4", "route", "show", "dev", instIf),
		"default via 10.65.0.1", "11.11.0.0/16 via 10.65.0.1", "192.0.2.0/24 via 10.65.0.1", "10.65.0.0/24 proto kernel scope link src 10.65.0.7")
	wantLines(t, "ip link", l.ip(t, "link", "show", "dev", instIf), "mtu 1450")
}

// udhcpcScript records what udhcpc was told and applies it as a guest's
// script does, host routes from option 121 included (Debian's default
// script knows no option 121, and writes the host's resolv.conf).
// What it was told is written last and renamed into place, so the test
// reads it whole and after the instance is configured.
const udhcpcScript = `#!/bin/sh
ev=$1
case "$ev" in
deconfig)
	ip -4 addr flush dev "$interface"
	ip link set "$interface" up
	;;
bound|renew)
	[ -n "$mtu" ] && ip link set dev "$interface" mtu "$mtu"
	ip addr replace "$ip/$mask" dev "$interface"
	if [ -n "$staticroutes" ]; then
		set -- $staticroutes
		while [ $# -ge 2 ]; do ip route replace "$1" via "$2" dev "$interface"; shift 2; done
	elif [ -n "$router" ]; then
		ip route replace default via "${router%% *}" dev "$interface"
	fi
	;;
esac
env | grep -E '^(ip|mask|subnet|router|dns|mtu|staticroutes|lease|serverid|broadcast)=' | sort > "$0.$ev.tmp"
mv "$0.$ev.tmp" "$0.$ev"
exit 0
`

func TestPrivilegedRealClients(t *testing.T) {
	requireLab(t, "udhcpc", "dhclient", "rdisc6", "sysctl")
	l := newLab(t)

	t.Run("router advertisement", func(t *testing.T) {
		// First, as when an instance boots (the IPv4 clients change the
		// link MTU, which resets the IPv6 one until the next
		// advertisement). The instance's kernel takes the advertisement: default route via
		// fe80::1, the MTU; no address from the prefix (A=0), no on-link
		// route for it (L=0).
		deadline := time.Now().Add(15 * time.Second)
		for !strings.Contains(l.ip(t, "-6", "route", "show", "default"), "via fe80::1") && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
		routes := l.ip(t, "-6", "route", "show")
		wantLines(t, "ip -6 route", routes, "default via fe80::1 dev eth0 proto ra")
		if strings.Contains(routes, "fd00:65::/64") {
			t.Errorf("an on-link route for the prefix: %s", routes)
		}
		if a := l.ip(t, "-6", "addr", "show", "dev", instIf, "scope", "global"); strings.Contains(a, "fd00:65") {
			t.Errorf("a SLAAC address from an A=0 prefix: %s", a)
		}
		if mtu := strings.TrimSpace(l.in(t, "sysctl", "-n", "net.ipv6.conf.eth0.mtu")); mtu != "1450" {
			t.Errorf("IPv6 MTU %s, want 1450 from the RA", mtu)
		}
		time.Sleep(raSolicitedGap) // not rate-limited behind the kernel's own solicitation
		out := l.in(t, "rdisc6", "-1", "-w", "1500", "-r", "3", instIf)
		t.Logf("rdisc6:\n%s", out)
		wantLines(t, "rdisc6", out,
			"Hop limit : 64", "Stateful address conf. : Yes", "Stateful other conf. : Yes",
			"Router lifetime : 1800", "MTU : 1450 bytes (valid)", "Prefix : fd00:65::/64", "On-link : No",
			"Autonomous address conf.: No", "Recursive DNS server : fd00:65::53", "Source link-layer address: EE:EE:EE:EE:EE:EE",
			"from fe80::1")
		if testutil.ToFloat64(l.srv.m.rss.WithLabelValues("answered")) < 1 {
			t.Error("no solicitation answered")
		}
	})

	t.Run("udhcpc", func(t *testing.T) {
		l.reset(t)
		script := filepath.Join(l.dir, "udhcpc.sh")
		if err := os.WriteFile(script, []byte(udhcpcScript), 0o755); err != nil {
			t.Fatal(err)
		}
		// In the foreground, so it can be told to renew (SIGUSR1, a
		// unicast REQUEST to the gateway) and to release on exit (-R).
		cmd := exec.Command("ip", "netns", "exec", l.inst, "udhcpc", "-f", "-R", "-i", instIf, "-s", script,
			"-t", "5", "-T", "1", "-O", "staticroutes", "-O", "mtu")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() {
			cmd.Process.Signal(syscall.SIGTERM)
			cmd.Wait()
			t.Logf("udhcpc output:\n%s", out.String())
		}()
		waitFile(t, script+".bound")
		env, _ := os.ReadFile(script + ".bound")
		t.Logf("udhcpc bound with:\n%s", env)
		wantLines(t, "udhcpc env", string(env), "ip=10.65.0.7", "mask=24", "router=10.65.0.1", "dns=10.65.0.53", "mtu=1450",
			"staticroutes=11.11.0.0/16 10.65.0.1 192.0.2.0/24 10.65.0.1 0.0.0.0/0 10.65.0.1", "lease=3600", "serverid=10.65.0.1")
		l.checkV4(t)
		l.leaseSeen(t, "10.65.0.7", false)

		acks := l.count("v4", "ack")
		cmd.Process.Signal(syscall.SIGUSR1)
		waitFile(t, script+".renew")
		if l.count("v4", "ack") <= acks {
			t.Error("renew answered without an ACK counted")
		}
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		l.leaseSeen(t, "10.65.0.7", true)
	})

	t.Run("udhcpc from another MAC gets nothing", func(t *testing.T) {
		l.reset(t)
		before := l.ignoredCount("v4", reasonWrongMAC)
		l.ip(t, "link", "set", instIf, "address", "52:54:00:99:99:99")
		defer l.ip(t, "link", "set", instIf, "address", l.instMAC.String())
		out, err := runErr(30*time.Second, "ip", "netns", "exec", l.inst, "udhcpc", "-f", "-q", "-n", "-i", instIf,
			"-s", "/bin/true", "-t", "2", "-T", "1")
		if err == nil {
			t.Errorf("udhcpc got a lease with another MAC:\n%s", out)
		}
		if l.ignoredCount("v4", reasonWrongMAC) < before+2 {
			t.Errorf("wrong_mac counted %v times, want 2 more than %v", l.ignoredCount("v4", reasonWrongMAC), before)
		}
		if got := l.ip(t, "-4", "addr", "show", "dev", instIf); strings.Contains(got, "inet ") {
			t.Errorf("instance has an address: %s", got)
		}
	})

	t.Run("dhclient -4", func(t *testing.T) {
		l.reset(t)
		lf, pf := filepath.Join(l.dir, "dhclient4.leases"), filepath.Join(l.dir, "dhclient4.pid")
		defer killPidfile(pf)
		// Debian's dhclient-script and its rfc3442 hook configure the
		// instance: -1 tries once, and the daemon it leaves is killed
		// above.
		out, err := runErr(60*time.Second, "ip", "netns", "exec", l.inst, "dhclient", "-4", "-1", "-v", "-lf", lf, "-pf", pf, instIf)
		if err != nil {
			t.Fatalf("dhclient -4: %v\n%s", err, out)
		}
		t.Logf("dhclient -4:\n%s", out)
		l.checkV4(t)
		wantLines(t, "resolv.conf", l.in(t, "cat", "/etc/resolv.conf"), "nameserver 10.65.0.53")
		lease, _ := os.ReadFile(lf)
		wantLines(t, "dhclient lease", string(lease), "option rfc3442-classless-static-routes 16,11,11,10,65,0,1,24,192,0,2,10,65,0,1,0,10,65,0,1;", "option interface-mtu 1450;")
		l.leaseSeen(t, "10.65.0.7", false)
		// -r releases: a unicast DHCPRELEASE to the server identifier.
		if out, err := runErr(30*time.Second, "ip", "netns", "exec", l.inst, "dhclient", "-4", "-r", "-v", "-lf", lf, "-pf", pf, instIf); err != nil {
			t.Errorf("dhclient -4 -r: %v\n%s", err, out)
		}
		l.leaseSeen(t, "10.65.0.7", true)
	})

	t.Run("dhclient -6", func(t *testing.T) {
		lf, pf := filepath.Join(l.dir, "dhclient6.leases"), filepath.Join(l.dir, "dhclient6.pid")
		defer killPidfile(pf)
		out, err := runErr(60*time.Second, "ip", "netns", "exec", l.inst, "dhclient", "-6", "-1", "-v", "-lf", lf, "-pf", pf, instIf)
		if err != nil {
			t.Fatalf("dhclient -6: %v\n%s", err, out)
		}
		t.Logf("dhclient -6:\n%s", out)
		wantLines(t, "ip -6 addr", l.ip(t, "-6", "addr", "show", "dev", instIf, "scope", "global"), "inet6 fd00:65::7/128 scope global")
		wantLines(t, "resolv.conf", l.in(t, "cat", "/etc/resolv.conf"), "nameserver fd00:65::53")
		l.leaseSeen(t, "fd00:65::7", false)
		if out, err := runErr(30*time.Second, "ip", "netns", "exec", l.inst, "dhclient", "-6", "-r", "-v", "-lf", lf, "-pf", pf, instIf); err != nil {
			t.Errorf("dhclient -6 -r: %v\n%s", err, out)
		}
		l.leaseSeen(t, "fd00:65::7", true)
	})

	t.Run("IPv6 service withdrawn while running", func(t *testing.T) {
		// Update during Run: the interface keeps DHCPv4, loses IPv6, and
		// its final advertisement (router lifetime 0) takes the instance's
		// default route away.
		before := l.ip(t, "-6", "route", "show", "default")
		wantLines(t, "before: ip -6 route", before, "default via fe80::1 dev eth0 proto ra")
		svc := l.srv.table.Load().byIndex[l.ifindex].svc
		svc.V6 = nil
		l.srv.Update(map[int]subnets.Service{l.ifindex: svc})
		deadline := time.Now().Add(10 * time.Second)
		for strings.Contains(l.ip(t, "-6", "route", "show", "default"), "fe80::1") && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
		if r := l.ip(t, "-6", "route", "show", "default"); strings.Contains(r, "fe80::1") {
			t.Errorf("default route still there after the withdrawal: %s", r)
		} else {
			t.Logf("after: ip -6 route show default: %q", r)
		}
		if n := testutil.ToFloat64(l.srv.m.ras.WithLabelValues("final")); n != 1 {
			t.Errorf("%v final advertisements, want 1", n)
		}
	})

	for fam, types := range map[string][]string{"v4": v4Types, "v6": v6Types} {
		for _, typ := range types {
			if n := l.count(fam, typ); n > 0 {
				t.Logf("calyx_dhcp_messages_total{family=%q,type=%q} %v", fam, typ, n)
			}
		}
		for _, r := range ignoreReasons {
			if n := l.ignoredCount(fam, r); n > 0 {
				t.Logf("calyx_dhcp_ignored_total{family=%q,reason=%q} %v", fam, r, n)
			}
		}
	}
	for _, r := range []string{"periodic", "solicited", "final"} {
		t.Logf("calyx_router_advertisements_total{reason=%q} %v", r, testutil.ToFloat64(l.srv.m.ras.WithLabelValues(r)))
	}
}

func (l *lab) count(fam, typ string) float64 {
	return testutil.ToFloat64(l.srv.m.messages.WithLabelValues(fam, typ))
}

func (l *lab) ignoredCount(fam, reason string) float64 {
	return testutil.ToFloat64(l.srv.m.ignored.WithLabelValues(fam, reason))
}

func waitFile(t *testing.T, path string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(path); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s never appeared", path)
}

// killPidfile ends the daemon dhclient left behind, if any.
func killPidfile(pf string) {
	b, err := os.ReadFile(pf)
	if err != nil {
		return
	}
	var pid int
	if _, err := fmt.Sscan(string(b), &pid); err == nil && pid > 1 {
		syscall.Kill(pid, syscall.SIGTERM)
	}
}
