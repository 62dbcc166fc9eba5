package lab

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
)

var (
	privOnce sync.Once
	privErr  error
)

// Require stops the test unless the lab can run here: root, working
// "ip netns" and a mountable bpffs. In CI (the CI environment variable is
// non-empty) a missing privilege is a failure (t.Fatalf): CI must never skip
// these tests. Elsewhere the test is skipped with the reason.
func Require(t testing.TB) {
	t.Helper()
	privOnce.Do(func() { privErr = checkPrivileges() })
	if privErr != nil {
		SkipOrFailInCI(t, "network-namespace lab unavailable: %v", privErr)
	}
}

// RequireTools stops the test (CI: fail, elsewhere: skip) unless every named
// program is on PATH. The message names the Debian package of the tools
// whose package has another name (see ToolPackage).
func RequireTools(t testing.TB, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			SkipOrFailInCI(t, "tool %s not installed (Debian package %s): %v", n, ToolPackage(n), err)
		}
	}
}

// toolPackages are the Debian packages of the tools the lab runs whose
// package is not named after them.
var toolPackages = map[string]string{
	"dhclient":        "isc-dhcp-client",
	"dhclient-script": "isc-dhcp-client",
	"rdisc6":          "ndisc6",
	"unshare":         "util-linux",
	"ip":              "iproute2",
	"ping":            "iputils-ping",
	"sysctl":          "procps",
	"bird":            BIRDPackage,
	"birdc":           BIRDPackage,
}

// ToolPackage returns the Debian package that installs tool.
func ToolPackage(tool string) string {
	if p, ok := toolPackages[tool]; ok {
		return p
	}
	return tool
}

// DHCPClientTools are the programs DHClient, UDHCPC and RDisc6 run in an
// instance: Debian packages isc-dhcp-client, udhcpc and ndisc6, and
// util-linux's unshare.
var DHCPClientTools = []string{"dhclient", "dhclient-script", "udhcpc", "rdisc6", "unshare", "sysctl"}

// RequireDHCPClients stops the test (CI: fail, elsewhere: skip) unless the
// DHCP and router-solicitation clients the lab runs in instances are
// installed (DHCPClientTools).
func RequireDHCPClients(t testing.TB) {
	t.Helper()
	RequireTools(t, DHCPClientTools...)
}

// RequireBinaries stops the test (CI: fail, elsewhere: skip) unless
// calyx-agent and calyxctl exist in binDir ("" means DefaultBinDir()), and
// what VMs need (RequireVM) when $CALYX_LAB_WORKLOAD asks for them.
func RequireBinaries(t testing.TB, binDir string) {
	t.Helper()
	if binDir == "" {
		binDir = DefaultBinDir()
	}
	if k, err := defaultWorkloadKind(""); err != nil {
		t.Fatal(err)
	} else if k != KindVeth {
		RequireVM(t, binDir)
	}
	for _, n := range []string{"calyx-agent", "calyxctl"} {
		p := filepath.Join(binDir, n)
		if fi, err := os.Stat(p); err != nil || fi.Mode()&0o111 == 0 {
			SkipOrFailInCI(t, "%s missing or not executable (run make build, or set CALYX_BIN_DIR): %v", p, err)
		}
	}
}

// RequireVM stops the test (CI: fail, elsewhere: skip) unless VM workloads
// can run: /dev/net/tun exists and calyx-lab (the relay) is in binDir (""
// means DefaultBinDir()).
func RequireVM(t testing.TB, binDir string) {
	t.Helper()
	if binDir == "" {
		binDir = DefaultBinDir()
	}
	if fi, err := os.Stat("/dev/net/tun"); err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		SkipOrFailInCI(t, "/dev/net/tun missing or not a character device: %v", err)
	}
	p := filepath.Join(binDir, "calyx-lab")
	if fi, err := os.Stat(p); err != nil || fi.Mode()&0o111 == 0 {
		SkipOrFailInCI(t, "%s (the VM relay) missing or not executable (run make build, or set CALYX_BIN_DIR): %v", p, err)
	}
}

// SkipOrFailInCI is the one place privileged tests (the lab's and every
// package's) decide between skipping and failing: when CI is set they fail,
// because a skip there would hide a broken runner.
func SkipOrFailInCI(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf("CI is set, so not skipping: "+format, args...)
	}
	t.Skipf(format+" (set CI=1 to make this a failure)", args...)
}

// checkPrivileges probes what the lab needs by doing it once: creating and
// deleting a namespace, and mounting and unmounting a bpffs.
func checkPrivileges() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("not root (euid %d)", os.Geteuid())
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return fmt.Errorf("iproute2: %w", err)
	}
	var b [2]byte
	if _, err := rand.Read(b[:]); err != nil {
		return fmt.Errorf("random: %w", err)
	}
	// A name Reap would recognise, should the probe itself be interrupted.
	ns := "cx" + hex.EncodeToString(b[:]) + "-probe"
	if _, err := runQuick("ip", "netns", "add", ns); err != nil {
		return err
	}
	if _, err := runQuick("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"); err != nil {
		return errors.Join(err, deleteNamespace(ns))
	}
	if err := deleteNamespace(ns); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "calyx-lab-bpffs-probe")
	if err != nil {
		return fmt.Errorf("temp dir: %w", err)
	}
	defer os.Remove(dir)
	if err := syscall.Mount("bpf", dir, "bpf", 0, ""); err != nil {
		return fmt.Errorf("mount bpffs: %w", err)
	}
	if err := syscall.Unmount(dir, 0); err != nil {
		return errors.Join(fmt.Errorf("unmount probe bpffs: %w", err), syscall.Unmount(dir, syscall.MNT_DETACH))
	}
	return nil
}
