package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/calyxnet/calyx/tests/lab"
)

// Where the package puts its files (packaging/nfpm.yaml).
const (
	pkgName       = "calyx"
	pkgAgent      = "/usr/bin/calyx-agent"
	pkgCtl        = "/usr/bin/calyxctl"
	pkgUnit       = "/lib/systemd/system/calyx-agent.service"
	pkgConfig     = "/etc/calyx/agent.yaml"
	pkgCompletion = "/usr/share/bash-completion/completions/calyxctl"
	// pkgPinRecord is where prerm notes the config's pin directory for
	// postrm purge.
	pkgPinRecord = "/run/calyx-package-pin-dir"
)

// unitCaps are the capability names a unit file may grant, with their
// numbers (to compare with /proc/PID/status).
var unitCaps = map[string]uint{
	"CAP_BPF":              unix.CAP_BPF,
	"CAP_PERFMON":          unix.CAP_PERFMON,
	"CAP_NET_ADMIN":        unix.CAP_NET_ADMIN,
	"CAP_NET_RAW":          unix.CAP_NET_RAW,
	"CAP_NET_BIND_SERVICE": unix.CAP_NET_BIND_SERVICE,
	"CAP_SYS_ADMIN":        unix.CAP_SYS_ADMIN,
}

// TestPackage installs the Debian package that `make package` built
// (bin/pkg/calyx_*.deb, or $CALYX_DEB) with dpkg -i and checks its files
// and its unit (systemd-analyze verify). It runs the installed calyx-agent
// as calyx-agent.service would (the unit's ExecStart, with the unit's
// capabilities only and no new privileges, by setpriv) in a lab host, with
// the installed /etc/calyx/agent.yaml naming the lab host's pin directory:
// the agent attaches two workloads, which ping each other. Then it stops
// the agent and purges the package: no agent is left running, the pins
// are gone (their TCX links detached), and so are /etc/calyx and the
// binaries. The package is purged pass or fail.
func TestPackage(t *testing.T) {
	lab.Require(t)
	lab.RequireTools(t, "dpkg", "dpkg-query", "setpriv", "systemd-analyze")
	deb := findDeb(t)
	if st := pkgStatus(); st != "" {
		lab.SkipOrFailInCI(t, "package %s is on this machine already (%s): this test would replace and purge it; 'dpkg --purge %s' first", pkgName, st, pkgName)
	}

	// Veth workloads whatever CALYX_LAB_WORKLOAD says: the package is
	// what this test is about.
	l := newLabKind(t, lab.KindVeth)
	h, err := l.AddHost("host-a", "10.30.0.11/24")
	if err != nil {
		t.Fatal(err)
	}
	w1, err := l.AddWorkload(h.Name, "w1", "10.65.0.2", "")
	if err != nil {
		t.Fatal(err)
	}
	w2, err := l.AddWorkload(h.Name, "w2", "10.65.0.3", "")
	if err != nil {
		t.Fatal(err)
	}
	// Registered after newLab, so it runs before the lab goes: whatever
	// happened, the agent stops and the package is purged.
	t.Cleanup(func() {
		if l.AgentPid(h.Name) != 0 {
			_ = l.StopAgent(h.Name)
		}
		if pkgStatus() != "" {
			if out, err := exec.Command("dpkg", "--purge", pkgName).CombinedOutput(); err != nil {
				t.Errorf("cleanup: dpkg --purge %s: %v\n%s", pkgName, err, out)
			}
		}
	})

	start := time.Now()
	if out, err := exec.Command("dpkg", "-i", deb).CombinedOutput(); err != nil {
		t.Fatalf("dpkg -i %s: %v\n%s", deb, err, out)
	}
	t.Logf("dpkg -i %s: %s", filepath.Base(deb), time.Since(start).Round(time.Millisecond))
	for _, p := range []string{pkgAgent, pkgCtl, pkgUnit, pkgConfig, pkgCompletion} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("installed package: %v", err)
		}
	}
	conffiles, err := exec.Command("dpkg-query", "-W", "-f=${Conffiles}", pkgName).Output()
	if err != nil || !strings.Contains(string(conffiles), pkgConfig) {
		t.Errorf("%s is not a conffile of the package (%v): %q", pkgConfig, err, conffiles)
	}
	// The installed completion is calyxctl's own.
	if want, err := exec.Command(pkgCtl, "completion", "bash").Output(); err != nil {
		t.Errorf("%s completion bash: %v", pkgCtl, err)
	} else if got, _ := os.ReadFile(pkgCompletion); !bytes.Equal(got, want) {
		t.Errorf("%s differs from '%s completion bash'", pkgCompletion, pkgCtl)
	}
	// With the binary installed, ExecStart resolves.
	if out, err := exec.Command("systemd-analyze", "verify", pkgUnit).CombinedOutput(); err != nil || strings.Contains(string(out), "calyx-agent") {
		t.Errorf("systemd-analyze verify %s: %v\n%s", pkgUnit, err, out)
	}

	unit, err := os.ReadFile(pkgUnit)
	if err != nil {
		t.Fatal(err)
	}
	wrapper, caps := unitWrapper(t, string(unit))

	shipped, err := os.ReadFile(pkgConfig)
	if err != nil {
		t.Fatal(err)
	}

	// An unknown key in the installed config stops the installed agent,
	// naming the key and the file.
	writeConfig(t, "no-such-key: 1\n")
	err = l.StartAgentBinary(h.Name, wrapper)
	if err == nil {
		t.Fatal("the installed agent started with an unknown key in its config file")
	}
	if !strings.Contains(err.Error(), `unknown key "no-such-key"`) || !strings.Contains(err.Error(), pkgConfig) {
		t.Errorf("agent with a bad config: %v\nwant an error naming the key and %s", err, pkgConfig)
	}

	// The shipped file, with this host's pin directory (which purge must
	// remove), attach tcx (the agent logs it) and log-level error, which the
	// lab's --log-level debug overrides.
	cfg := setKey(t, string(shipped), "bpffs", h.BPFFS)
	cfg = setKey(t, cfg, "attach", "tcx")
	cfg = setKey(t, cfg, "log-level", "error")
	writeConfig(t, cfg)
	if err := l.StartAgentBinary(h.Name, wrapper); err != nil {
		t.Fatal(err)
	}
	if got, err := capEff(l.AgentPid(h.Name)); err != nil {
		t.Error(err)
	} else if got != caps {
		t.Errorf("the agent runs with capabilities %#x, want the unit's %#x", got, caps)
	}
	log := l.AgentLog(h.Name)
	if !strings.Contains(log, "attach=tcx") {
		t.Errorf("the agent's log does not show attach=tcx from %s:\n%s", pkgConfig, lastLines(log, 20))
	}
	if !strings.Contains(log, "level=DEBUG") {
		t.Errorf("the command line's --log-level debug did not win over the file's error:\n%s", lastLines(log, 20))
	}

	e := &env{l: l, h: h, ws: []*lab.Workload{w1, w2}}
	e.apply(t, l.ModelYAML())
	e.waitAttached(t, w1, w2)
	e.waitPing(t, w1, w2.IP.String())
	mustPing(t, l, w1.NS, w2.IP.String(), 1)
	if n, _, err := lab.TCPrograms(h.NS, w1.HostIface); err != nil || n == 0 {
		t.Errorf("%s: %d TCX programs attached before the purge (%v)", w1.HostIface, n, err)
	}

	if err := l.StopAgent(h.Name); err != nil {
		t.Error(err)
	}
	// What the unit does not grant shows as a failure in the log (the
	// DHCP server's packet socket, port 67) while the rest runs on.
	for _, line := range strings.Split(l.AgentLog(h.Name), "\n") {
		if strings.Contains(line, "level=ERROR") || containsAny(strings.ToLower(line), "operation not permitted", "permission denied") {
			t.Errorf("the agent, run as its unit, logged: %s", line)
		}
	}
	start = time.Now()
	out, err := exec.Command("dpkg", "--purge", pkgName).CombinedOutput()
	if err != nil {
		t.Fatalf("dpkg --purge %s: %v\n%s", pkgName, err, out)
	}
	t.Logf("dpkg --purge: %s", time.Since(start).Round(time.Millisecond))
	if st := pkgStatus(); st != "" {
		t.Errorf("after dpkg --purge the package is still %q", st)
	}
	for _, p := range []string{pkgAgent, pkgCtl, pkgUnit, "/etc/calyx", pkgCompletion, pkgPinRecord, h.BPFFS} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("after dpkg --purge %s is still there (%v)", p, err)
		}
	}
	if pids := agentPids(t); len(pids) > 0 {
		t.Errorf("after dpkg --purge an installed calyx-agent is still running: pids %v", pids)
	}
	if n, _, err := lab.TCPrograms(h.NS, w1.HostIface); err != nil || n != 0 {
		t.Errorf("%s: %d TCX programs still attached after the purge (%v)", w1.HostIface, n, err)
	}
}

// findDeb returns the package to install: $CALYX_DEB, else the one .deb
// `make package` left in bin/pkg.
func findDeb(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("CALYX_DEB"); p != "" {
		return p
	}
	debs, _ := filepath.Glob(filepath.Join(binDir(), "pkg", pkgName+"_*.deb"))
	if len(debs) != 1 {
		lab.SkipOrFailInCI(t, "want one %s_*.deb in %s (run make package), found %d", pkgName, filepath.Join(binDir(), "pkg"), len(debs))
	}
	return debs[0]
}

// pkgStatus is the package's dpkg status ("install ok installed",
// "deinstall ok config-files", ...), or "" when dpkg does not know it.
func pkgStatus() string {
	out, err := exec.Command("dpkg-query", "-W", "-f=${Status}", pkgName).Output()
	if err != nil || strings.HasSuffix(strings.TrimSpace(string(out)), "not-installed") {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// writeConfig replaces the installed config file.
func writeConfig(t *testing.T, content string) {
	t.Helper()
	if err := os.WriteFile(pkgConfig, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// setKey gives key a value in the config text, in place of the shipped
// line.
func setKey(t *testing.T, cfg, key, value string) string {
	t.Helper()
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(key) + `:.*$`)
	if !re.MatchString(cfg) {
		t.Fatalf("the shipped config has no key %q", key)
	}
	return re.ReplaceAllLiteralString(cfg, key+": "+value)
}

// unitWrapper writes a script that runs what the unit runs as the unit
// would (its ExecStart, its capability bounding set, no new privileges,
// its memlock limit where this process may raise it), passing on its
// arguments, and returns it with the capability set the unit grants.
func unitWrapper(t *testing.T, unit string) (string, uint64) {
	t.Helper()
	settings := map[string]string{}
	for _, line := range strings.Split(unit, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), "="); ok && !strings.HasPrefix(k, "#") {
			settings[k] = v
		}
	}
	for _, k := range []string{"ExecStart", "CapabilityBoundingSet", "LimitMEMLOCK"} {
		if settings[k] == "" {
			t.Fatalf("the unit has no %s=", k)
		}
	}
	if settings["Restart"] != "on-failure" {
		t.Errorf("the unit's Restart=%q, want on-failure", settings["Restart"])
	}
	var caps uint64
	setpriv := "-all"
	for _, c := range strings.Fields(settings["CapabilityBoundingSet"]) {
		n, ok := unitCaps[c]
		if !ok {
			t.Fatalf("the unit grants %s: not one this test knows the agent to need", c)
		}
		caps |= 1 << n
		setpriv += ",+" + strings.ToLower(strings.TrimPrefix(c, "CAP_"))
	}
	if amb := settings["AmbientCapabilities"]; amb != "" && amb != settings["CapabilityBoundingSet"] {
		t.Errorf("the unit's AmbientCapabilities %q differ from its CapabilityBoundingSet", amb)
	}
	nnp := ""
	if settings["NoNewPrivileges"] == "yes" {
		nnp = "--no-new-privs "
	}
	memlock := settings["LimitMEMLOCK"]
	if memlock == "infinity" {
		memlock = "unlimited"
	}
	script := fmt.Sprintf(`#!/bin/sh
# calyx-agent as %s runs it.
ulimit -l %s 2>/dev/null || :
exec setpriv --bounding-set=%s %s-- %s "$@"
`, pkgUnit, memlock, setpriv, nnp, settings["ExecStart"])
	p := filepath.Join(t.TempDir(), "calyx-agent-as-unit")
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p, caps
}

// capEff reads a process's effective capabilities.
func capEff(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("capabilities of pid %d: %w", pid, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		}
	}
	return 0, fmt.Errorf("capabilities of pid %d: no CapEff line", pid)
}

// agentPids lists the processes running the installed calyx-agent (also
// after its file was removed).
func agentPids(t *testing.T) []int {
	t.Helper()
	exes, _ := filepath.Glob("/proc/[0-9]*/exe")
	var pids []int
	for _, e := range exes {
		target, err := os.Readlink(e)
		if err != nil || (target != pkgAgent && target != pkgAgent+" (deleted)") {
			continue
		}
		pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(e)))
		pids = append(pids, pid)
	}
	return pids
}
