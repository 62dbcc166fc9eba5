package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Real DHCP clients in the lab's instances, as a guest runs them: Debian's
// isc-dhcp-client (dhclient -4 / -6 with its own dhclient-script and hooks)
// and busybox udhcpc. They run inside the instance's namespace through
// "ip netns exec", which bind-mounts /etc/netns/<namespace>/resolv.conf over
// /etc/resolv.conf for them: the lab creates that file (empty) before a
// client first runs, so what the client's script writes is the instance's
// resolver configuration (ReadResolvConf) and never the host's. Every client
// is bounded in time; its pid, lease and configuration files and a log of
// each run are under DHCPDir. Close (Reap) removes both.

// DefaultDHCPTimeout is how long a client tries to get a lease when
// DHCPOptions.Timeout is zero.
const DefaultDHCPTimeout = 20 * time.Second

// dhcpBackstop is how long a client may run beyond its own timeout before
// the lab kills it: its script and the exit take a moment.
const dhcpBackstop = 15 * time.Second

// DHCPOptions tunes DHClientWith and UDHCPCWith.
type DHCPOptions struct {
	// Timeout is how long the client tries before it gives up:
	// dhclient's "timeout" statement, udhcpc's number of DHCPDISCOVERs
	// (one a second). Whole seconds, at least one. Zero means
	// DefaultDHCPTimeout.
	Timeout time.Duration
	// Fresh removes dhclient's lease file first, so it starts like a new
	// guest (DHCPDISCOVER, or SOLICIT) instead of asking again for the
	// address it had (INIT-REBOOT, as a rebooted guest does; and on a
	// timeout it would try that recorded lease). udhcpc keeps no lease.
	Fresh bool
	// Args are extra client arguments, put before the interface name.
	Args []string
}

func (o DHCPOptions) timeout() (time.Duration, int) {
	t := o.Timeout
	if t <= 0 {
		t = DefaultDHCPTimeout
	}
	secs := max(1, int(math.Ceil(t.Seconds())))
	return time.Duration(secs) * time.Second, secs
}

// DHCPDir returns the directory that holds the DHCP client files of w's
// instance (all its NICs): /run/calyx-lab/<prefix>/dhcp/<instance>/.
func (l *Lab) DHCPDir(w *Workload) string {
	return filepath.Join(l.Dir, "dhcp", w.InstanceName())
}

// ResolvConfPath returns the file that is /etc/resolv.conf for commands in
// w's instance: /etc/netns/<namespace>/resolv.conf (one per instance, so
// its NICs' clients share it, as in a guest).
func (l *Lab) ResolvConfPath(w *Workload) string {
	return filepath.Join(NetnsEtcDir, w.NS, "resolv.conf")
}

// ReadResolvConf returns the instance's /etc/resolv.conf as its DHCP
// clients wrote it (ParseNameservers finds the servers in it). It is an
// error before any client ran in the instance.
func (l *Lab) ReadResolvConf(w *Workload) (string, error) {
	b, err := os.ReadFile(l.ResolvConfPath(w))
	if err != nil {
		return "", fmt.Errorf("resolv.conf of %s: %w", w.InstanceName(), err)
	}
	return string(b), nil
}

// ParseNameservers returns the addresses of the "nameserver" lines of a
// resolv.conf, in order.
func ParseNameservers(resolvConf string) []string {
	var out []string
	for line := range strings.Lines(resolvConf) {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "nameserver" {
			out = append(out, f[1])
		}
	}
	return out
}

// InstanceRoutes returns the lines of "ip route" (v6: "ip -6 route") in w's
// instance, e.g. "default via 10.65.0.1 dev eth0" or
// "11.11.0.0/16 via 11.8.0.1 dev eth1".
func (l *Lab) InstanceRoutes(w *Workload, v6 bool) ([]string, error) {
	args := []string{"ip", "-n", w.NS}
	if v6 {
		args = append(args, "-6")
	}
	res, err := l.Exec("", append(args, "route", "show")...)
	if err != nil {
		return nil, fmt.Errorf("routes of %s: %w", w.InstanceName(), err)
	}
	var out []string
	for line := range strings.Lines(res.Stdout) {
		if line = strings.TrimSpace(line); line != "" {
			out = append(out, line)
		}
	}
	return out, nil
}

// ifaceAddr is one address of "ip -j addr show".
type ifaceAddr struct {
	Family    string `json:"family"`
	Local     string `json:"local"`
	PrefixLen int    `json:"prefixlen"`
	Scope     string `json:"scope"`
	Tentative bool   `json:"tentative"`
	DADFailed bool   `json:"dadfailed"`
}

// ifaceAddrs returns the addresses of family ("inet", "inet6") on ifc in ns
// and the interface's MTU.
func (l *Lab) ifaceAddrs(ns, ifc, family string) ([]ifaceAddr, int, error) {
	res, err := l.Exec("", "ip", "-n", ns, "-j", "addr", "show", "dev", ifc)
	if err != nil {
		return nil, 0, err
	}
	var links []struct {
		MTU      int         `json:"mtu"`
		AddrInfo []ifaceAddr `json:"addr_info"`
	}
	if err := json.Unmarshal([]byte(res.Stdout), &links); err != nil || len(links) != 1 {
		return nil, 0, fmt.Errorf("addresses of %s in %s: unexpected ip output (%v): %s", ifc, ns, err, tail(res.Stdout, 5))
	}
	var out []ifaceAddr
	for _, a := range links[0].AddrInfo {
		if a.Family == family {
			out = append(out, a)
		}
	}
	return out, links[0].MTU, nil
}

// InstanceAddrs returns the global addresses (with their prefix lengths)
// of family v6 or IPv4 on interface iface of w's instance ("" means w's
// own), e.g. 10.65.0.2/24 once a DHCP client configured it.
func (l *Lab) InstanceAddrs(w *Workload, iface string, v6 bool) ([]netip.Prefix, error) {
	ifc, err := l.instanceIface(w, iface)
	if err != nil {
		return nil, err
	}
	family := "inet"
	if v6 {
		family = "inet6"
	}
	addrs, _, err := l.ifaceAddrs(w.NS, ifc, family)
	if err != nil {
		return nil, fmt.Errorf("addresses of %s %s: %w", w.InstanceName(), ifc, err)
	}
	var out []netip.Prefix
	for _, a := range addrs {
		if a.Scope != "global" {
			continue
		}
		ip, err := netip.ParseAddr(a.Local)
		if err != nil {
			return nil, fmt.Errorf("addresses of %s %s: %w", w.InstanceName(), ifc, err)
		}
		out = append(out, netip.PrefixFrom(ip, a.PrefixLen))
	}
	return out, nil
}

// InstanceMTU returns the MTU of interface iface of w's instance ("" means
// w's own), e.g. what DHCP option 26 set.
func (l *Lab) InstanceMTU(w *Workload, iface string) (int, error) {
	ifc, err := l.instanceIface(w, iface)
	if err != nil {
		return 0, err
	}
	_, mtu, err := l.ifaceAddrs(w.NS, ifc, "inet")
	if err != nil {
		return 0, fmt.Errorf("mtu of %s %s: %w", w.InstanceName(), ifc, err)
	}
	return mtu, nil
}

// instanceIface checks that iface ("" means w's own) is an interface of
// w's instance that exists now, and returns its name.
func (l *Lab) instanceIface(w *Workload, iface string) (string, error) {
	if iface == "" {
		iface = w.InstanceIface()
	}
	var names []string
	for _, n := range l.NICs(w) {
		names = append(names, n.InstanceIface())
	}
	if !slices.Contains(names, iface) {
		return "", fmt.Errorf("instance %s has no interface %s (its NICs: %s)", w.InstanceName(), iface, strings.Join(names, ", "))
	}
	if !w.Created {
		return "", fmt.Errorf("instance %s: not created yet", w.InstanceName())
	}
	if _, err := Ifindex(w.NS, iface); err != nil {
		return "", fmt.Errorf("instance %s: %w (is the VM running?)", w.InstanceName(), err)
	}
	return iface, nil
}

// WaitLinkLocal waits up to timeout until interface iface of w's instance
// ("" means w's own) has an IPv6 link-local address that is no longer
// tentative (duplicate-address detection is over), which a DHCPv6 client
// needs to bind to, and returns it.
func (l *Lab) WaitLinkLocal(w *Workload, iface string, timeout time.Duration) (netip.Addr, error) {
	ifc, err := l.instanceIface(w, iface)
	if err != nil {
		return netip.Addr{}, err
	}
	var ll netip.Addr
	err = Eventually(timeout, 50*time.Millisecond, func() error {
		addrs, _, err := l.ifaceAddrs(w.NS, ifc, "inet6")
		if err != nil {
			return err
		}
		for _, a := range addrs {
			if a.Scope != "link" {
				continue
			}
			if a.DADFailed {
				return fmt.Errorf("link-local %s failed duplicate-address detection", a.Local)
			}
			if a.Tentative {
				return fmt.Errorf("link-local %s still tentative", a.Local)
			}
			ll, err = netip.ParseAddr(a.Local)
			return err
		}
		return errors.New("no link-local address")
	})
	if err != nil {
		return netip.Addr{}, fmt.Errorf("instance %s %s: %w", w.InstanceName(), ifc, err)
	}
	return ll, nil
}

// prepareDHCP checks that a client can run for iface of w's instance and
// makes what it needs: the instance's resolv.conf under NetnsEtcDir (so
// that "ip netns exec" bind-mounts it over /etc/resolv.conf) and DHCPDir.
func (l *Lab) prepareDHCP(w *Workload, iface, tool string) (string, error) {
	if _, err := exec.LookPath(tool); err != nil {
		return "", fmt.Errorf("%s: %w", tool, err)
	}
	ifc, err := l.instanceIface(w, iface)
	if err != nil {
		return "", err
	}
	// Without a host /etc/resolv.conf to mount over, "ip netns exec"
	// would only warn and the client's script would write the host's.
	if fi, err := os.Stat("/etc/resolv.conf"); err != nil || !fi.Mode().IsRegular() {
		return "", fmt.Errorf("%s in %s: the host's /etc/resolv.conf is not a regular file (%v): the client's resolv.conf could not be bind-mounted over it", tool, w.InstanceName(), err)
	}
	if !strings.HasPrefix(w.NS, l.Prefix+"-") {
		return "", fmt.Errorf("%s in %s: namespace %s is not the lab's", tool, w.InstanceName(), w.NS)
	}
	if err := os.MkdirAll(filepath.Dir(l.ResolvConfPath(w)), 0o755); err != nil {
		return "", fmt.Errorf("%s in %s: %w", tool, w.InstanceName(), err)
	}
	f, err := os.OpenFile(l.ResolvConfPath(w), os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return "", fmt.Errorf("%s in %s: %w", tool, w.InstanceName(), err)
	}
	f.Close()
	if err := os.MkdirAll(l.DHCPDir(w), 0o700); err != nil {
		return "", fmt.Errorf("%s in %s: %w", tool, w.InstanceName(), err)
	}
	return ifc, nil
}

// dhcpLog appends one client run to its log file in DHCPDir.
func (l *Lab) dhcpLog(path string, args []string, res Result, err error) {
	f, ferr := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if ferr != nil {
		return
	}
	defer f.Close()
	fmt.Fprintf(f, "=== calyx-lab: %s: %s\n%s\n=== exit %d", time.Now().Format(time.RFC3339Nano), strings.Join(args, " "), strings.TrimSpace(res.Combined()), res.ExitCode)
	if err != nil {
		fmt.Fprintf(f, ": %v", err)
	}
	fmt.Fprintln(f)
}

// dhclientConf is Debian's default dhclient.conf (its option 121
// definition and request list, without the host name it sends and the NTP
// servers, whose hook would configure the host's timesyncd), with the
// lab's timing: give up after %d seconds, retransmit from 1 s on and at
// least every 2 s, and ask for a recorded address (INIT-REBOOT) for at most
// 5 s before starting over.
const dhclientConf = `# calyx-lab: Debian's default dhclient.conf with the lab's timing.
option rfc3442-classless-static-routes code 121 = array of unsigned integer 8;
request subnet-mask, broadcast-address, time-offset, routers,
	domain-name, domain-name-servers, domain-search, host-name,
	dhcp6.name-servers, dhcp6.domain-search, dhcp6.fqdn, dhcp6.sntp-servers,
	netbios-name-servers, netbios-scope, interface-mtu,
	rfc3442-classless-static-routes;
timeout %d;
initial-interval 1;
backoff-cutoff 2;
reboot 5;
`

// dhclientFiles returns the configuration, pid, lease and log files of
// dhclient for ifc of w's instance.
func (l *Lab) dhclientFiles(w *Workload, ifc string, v6 bool) (conf, pid, leases, log string) {
	fam := "4"
	if v6 {
		fam = "6"
	}
	base := filepath.Join(l.DHCPDir(w), "dhclient"+fam+"-"+ifc)
	return base + ".conf", base + ".pid", base + ".leases", base + ".log"
}

// DHClient runs Debian's DHCP client once on interface iface of w's
// instance ("" means w's own): DHClientWith with the default options.
func (l *Lab) DHClient(w *Workload, iface string, v6 bool) (string, error) {
	return l.DHClientWith(w, iface, v6, DHCPOptions{})
}

// DHClientWith runs "dhclient -4" (v6: "dhclient -6") once ("-1", verbose)
// on interface iface of w's instance ("" means w's own), as a guest does at
// boot, with Debian's dhclient-script and its hooks (rfc3442 classless
// routes, resolv.conf), a configuration of the lab's (dhclientConf: Debian's
// request list, timeout opts.Timeout) and its pid and lease files in
// DHCPDir. It runs in a UTS namespace of its own, so that a host name from
// the server cannot rename the host. For -6 it first waits for the
// interface's link-local address to leave duplicate-address detection.
//
// dhclient returns once it is bound (the script has configured the
// interface) or has given up after the timeout. A bound dhclient goes on in
// the background to renew; the lab kills that daemon at once (SIGKILL: no
// release, the configuration stays) and removes its pid file, so nothing
// of the client keeps running. The lease file stays for the next run (see
// DHCPOptions.Fresh) and for DHClientRelease. The output is dhclient's
// (verbose, on stderr); the error, when it got no lease, names the client,
// the instance, the interface and the timeout.
func (l *Lab) DHClientWith(w *Workload, iface string, v6 bool, opts DHCPOptions) (string, error) {
	fam := "-4"
	if v6 {
		fam = "-6"
	}
	what := "dhclient " + fam
	ifc, err := l.prepareDHCP(w, iface, "dhclient")
	if err != nil {
		return "", err
	}
	what += " on " + w.InstanceName() + " " + ifc
	if v6 {
		if _, err := l.WaitLinkLocal(w, ifc, 5*time.Second); err != nil {
			return "", fmt.Errorf("%s: %w", what, err)
		}
	}
	timeout, secs := opts.timeout()
	conf, pidf, leases, logf := l.dhclientFiles(w, ifc, v6)
	if err := os.WriteFile(conf, fmt.Appendf(nil, dhclientConf, secs), 0o600); err != nil {
		return "", fmt.Errorf("%s: %w", what, err)
	}
	if opts.Fresh {
		if err := os.Remove(leases); err != nil && !errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("%s: %w", what, err)
		}
	}
	if err := removePidFile(pidf); err != nil {
		return "", fmt.Errorf("%s: %w", what, err)
	}
	args := []string{"unshare", "--uts", "dhclient", fam, "-1", "-v",
		"-cf", conf, "-pf", pidf, "-lf", leases, "-sf", dhclientScript()}
	args = append(append(args, opts.Args...), ifc)
	res, err := l.Run(Command{NS: w.NS, Args: args, Timeout: timeout + dhcpBackstop})
	// Bound, it forked a daemon (a new session, so the timeout did not
	// reach it): stop it without a release. Unbound, there is none, but
	// look anyway.
	kerr := errors.Join(killAndWait(pidsWithArg("dhclient", leases), "(dhclient of "+w.InstanceName()+" "+ifc+")"), removePidFile(pidf))
	l.dhcpLog(logf, args, res, err)
	out := res.Combined()
	switch {
	case res.TimedOut:
		return out, fmt.Errorf("%s: still running %s after its timeout %s, killed: %s", what, dhcpBackstop, timeout, tail(out, 10))
	case res.ExitCode == 2:
		return out, fmt.Errorf("%s: no lease within its timeout %s (exit 2): %s", what, timeout, tail(out, 10))
	case err != nil:
		return out, fmt.Errorf("%s: %w", what, err)
	case kerr != nil:
		return out, fmt.Errorf("%s: %w", what, kerr)
	}
	return out, nil
}

// DHClientRelease runs "dhclient -4 -r" (v6: "-6 -r") on interface iface
// of w's instance ("" means w's own) with the files of DHClient's runs: it
// sends a DHCPRELEASE (DHCPv6 Release) for the lease recorded there and
// its script removes the address (v4 also the routes). It fails when no
// lease was recorded.
func (l *Lab) DHClientRelease(w *Workload, iface string, v6 bool) (string, error) {
	fam := "-4"
	if v6 {
		fam = "-6"
	}
	ifc, err := l.prepareDHCP(w, iface, "dhclient")
	if err != nil {
		return "", err
	}
	what := "dhclient " + fam + " -r on " + w.InstanceName() + " " + ifc
	conf, pidf, leases, logf := l.dhclientFiles(w, ifc, v6)
	if _, err := os.Stat(leases); err != nil {
		return "", fmt.Errorf("%s: no lease recorded: %w", what, err)
	}
	if _, err := os.Stat(conf); err != nil {
		return "", fmt.Errorf("%s: %w", what, err)
	}
	// No daemon of the lab's is running; a pid file would make
	// "dhclient -r" signal whatever process has that pid now.
	if err := removePidFile(pidf); err != nil {
		return "", fmt.Errorf("%s: %w", what, err)
	}
	args := []string{"unshare", "--uts", "dhclient", fam, "-r", "-v",
		"-cf", conf, "-pf", pidf, "-lf", leases, "-sf", dhclientScript(), ifc}
	res, err := l.Run(Command{NS: w.NS, Args: args, Timeout: dhcpBackstop})
	kerr := errors.Join(killAndWait(pidsWithArg("dhclient", leases), "(dhclient of "+w.InstanceName()+" "+ifc+")"), removePidFile(pidf))
	l.dhcpLog(logf, args, res, err)
	if err != nil {
		return res.Combined(), fmt.Errorf("%s: %w", what, err)
	}
	if kerr != nil {
		return res.Combined(), fmt.Errorf("%s: %w", what, kerr)
	}
	return res.Combined(), nil
}

// removePidFile removes a client's pid file once its process is gone: a
// later "dhclient -r" would signal whatever process has that pid by then.
func removePidFile(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// dhclientScript returns Debian's dhclient-script.
func dhclientScript() string {
	if p, err := exec.LookPath("dhclient-script"); err == nil {
		return p
	}
	return "/sbin/dhclient-script"
}

// udhcpcScript is the lab's script for udhcpc. Debian's udhcpc package
// ships /etc/udhcpc/default.script, which ignores option 121 (classless
// static routes, $staticroutes) and always uses option 3: this one applies
// what a guest's would, with ip: address and mask, MTU (option 26), the
// classless static routes, else the first router as default route (RFC
// 3442: a client that gets option 121 ignores option 3), and the DNS
// servers and domain into /etc/resolv.conf (the instance's). A route that
// exists already (a second NIC's default route) is reported and skipped,
// as dhclient's hook does.
const udhcpcScript = `#!/bin/sh
# calyx-lab: udhcpc script (see UDHCPC in tests/lab/dhcp.go).
say() { echo "udhcpc-script: $interface: $*" >&2; }
case "$1" in
deconfig)
	ip -4 addr flush dev "$interface"
	ip -4 route flush dev "$interface"
	ip link set dev "$interface" up
	;;
bound|renew)
	if [ -n "$mtu" ]; then
		ip link set dev "$interface" mtu "$mtu" || say "mtu $mtu failed"
	fi
	if [ "$1" = bound ]; then
		ip -4 addr flush dev "$interface"
	fi
	ip -4 addr replace "$ip/${mask:-$subnet}" ${broadcast:+broadcast "$broadcast"} \
		${lease:+valid_lft "$lease" preferred_lft "$lease"} dev "$interface" || exit 1
	say "address $ip/${mask:-$subnet} mtu ${mtu:-unset} router ${router:-none} staticroutes ${staticroutes:-none} dns ${dns:-none}"
	if [ -n "$staticroutes" ]; then
		set -- $staticroutes
		while [ $# -ge 2 ]; do
			if [ "$2" = 0.0.0.0 ]; then
				ip -4 route add "$1" dev "$interface" || say "route $1 dev $interface not added"
			else
				ip -4 route add "$1" via "$2" dev "$interface" || say "route $1 via $2 not added"
			fi
			shift 2
		done
	elif [ -n "$router" ]; then
		set -- $router
		ip -4 route add default via "$1" dev "$interface" || say "default via $1 not added"
	fi
	{
		[ -n "$domain" ] && echo "search $domain"
		for s in $dns; do echo "nameserver $s"; done
	} > /etc/resolv.conf
	;;
leasefail|nak)
	say "$1${message:+: $message}"
	;;
esac
exit 0
`

// UDHCPC runs busybox udhcpc once on interface iface of w's instance (""
// means w's own): UDHCPCWith with the default options.
func (l *Lab) UDHCPC(w *Workload, iface string) (string, error) {
	return l.UDHCPCWith(w, iface, DHCPOptions{})
}

// UDHCPCWith runs busybox's udhcpc on interface iface of w's instance (""
// means w's own) until it has a lease or gives up: "udhcpc -i IFACE -f -q
// -n -t N -T 1" (N = opts.Timeout in seconds: one DHCPDISCOVER a second),
// asking for the MTU and the classless static routes besides udhcpc's
// defaults ("-O mtu -O staticroutes"), with the lab's script (udhcpcScript,
// written to DHCPDir's parent) and its pid file in DHCPDir. It exits once
// bound (-q, no release), so nothing keeps running. The output is
// udhcpc's and its script's; the error, when it got no lease, names the
// client, the instance, the interface and the timeout.
func (l *Lab) UDHCPCWith(w *Workload, iface string, opts DHCPOptions) (string, error) {
	ifc, err := l.prepareDHCP(w, iface, "udhcpc")
	if err != nil {
		return "", err
	}
	what := "udhcpc on " + w.InstanceName() + " " + ifc
	timeout, secs := opts.timeout()
	script := filepath.Join(filepath.Dir(l.DHCPDir(w)), "udhcpc.script")
	if err := os.WriteFile(script, []byte(udhcpcScript), 0o700); err != nil {
		return "", fmt.Errorf("%s: %w", what, err)
	}
	base := filepath.Join(l.DHCPDir(w), "udhcpc-"+ifc)
	args := []string{"udhcpc", "-i", ifc, "-f", "-q", "-n", "-t", strconv.Itoa(secs), "-T", "1",
		"-s", script, "-p", base + ".pid", "-O", "mtu", "-O", "staticroutes"}
	args = append(args, opts.Args...)
	res, err := l.Run(Command{NS: w.NS, Args: args, Timeout: timeout + dhcpBackstop})
	l.dhcpLog(base+".log", args, res, err)
	out := res.Combined()
	switch {
	case res.TimedOut:
		return out, fmt.Errorf("%s: still running %s after its timeout %s, killed: %s", what, dhcpBackstop, timeout, tail(out, 10))
	case err != nil && strings.Contains(out, "no lease"):
		return out, fmt.Errorf("%s: no lease within its timeout %s (%d DHCPDISCOVERs 1s apart): %s", what, timeout, secs, tail(out, 10))
	case err != nil:
		return out, fmt.Errorf("%s: %w", what, err)
	}
	return out, nil
}

// pidsWithArg returns the live processes named prog (argv[0]'s base name)
// that have arg among their arguments: the lab's own clients, told apart by
// their files' paths.
func pidsWithArg(prog, arg string) []int {
	var out []int
	_ = eachProcess(func(pid int, argv []string) {
		if len(argv) > 1 && filepath.Base(argv[0]) == prog && slices.Contains(argv[1:], arg) {
			out = append(out, pid)
		}
	})
	return out
}

// RDisc6 solicits router advertisements on interface iface of w's instance
// ("" means w's own) with ndisc6's rdisc6 ("rdisc6 -n -r 3 -w 1000": three
// router solicitations a second apart) and returns what it printed of the
// advertisements (flags "Stateful address conf.", MTU, prefixes, "Recursive
// DNS server", "from <router>"). It first waits for the link-local address
// to leave duplicate-address detection. The error, when no router
// answered, names the instance and the interface.
func (l *Lab) RDisc6(w *Workload, iface string) (string, error) {
	if _, err := exec.LookPath("rdisc6"); err != nil {
		return "", fmt.Errorf("rdisc6: %w", err)
	}
	ifc, err := l.instanceIface(w, iface)
	if err != nil {
		return "", err
	}
	what := "rdisc6 on " + w.InstanceName() + " " + ifc
	if _, err := l.WaitLinkLocal(w, ifc, 5*time.Second); err != nil {
		return "", fmt.Errorf("%s: %w", what, err)
	}
	res, err := l.Run(Command{NS: w.NS, Args: []string{"rdisc6", "-n", "-r", "3", "-w", "1000", ifc}, Timeout: 10 * time.Second})
	if err != nil {
		return res.Combined(), fmt.Errorf("%s: no router advertisement after 3 solicitations: %s", what, tail(res.Combined(), 5))
	}
	return res.Combined(), nil
}
