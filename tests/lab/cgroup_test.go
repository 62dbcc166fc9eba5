package lab

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseCPUStat(t *testing.T) {
	// cgroup v2 cpu.stat without the cpu controller (core accounting only),
	// and with it (the throttling lines are ignored).
	for _, s := range []string{
		"usage_usec 296319\nuser_usec 290000\nsystem_usec 6319\nnice_usec 0\n",
		"usage_usec 296319\nuser_usec 290000\nsystem_usec 6319\nnice_usec 0\ncore_sched.force_idle_usec 0\nnr_periods 0\nnr_throttled 0\nthrottled_usec 0\nnr_bursts 0\nburst_usec 0\n",
	} {
		st, err := ParseCPUStat(s)
		if err != nil {
			t.Fatal(err)
		}
		want := CPUStat{Usage: 296319 * time.Microsecond, User: 290 * time.Millisecond, System: 6319 * time.Microsecond}
		if st != want {
			t.Errorf("ParseCPUStat = %+v, want %+v", st, want)
		}
	}
	for _, bad := range []string{"", "user_usec 5\n", "usage_usec x\n", "usage_usec -1\n"} {
		if _, err := ParseCPUStat(bad); err == nil {
			t.Errorf("parsed %q", bad)
		}
	}
}

func TestParseCgroup2Mount(t *testing.T) {
	// This machine's kind of hybrid setup: v1 controllers under
	// /sys/fs/cgroup, v2 at /sys/fs/cgroup/unified.
	hybrid := `25 31 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
27 25 0:24 / /sys/fs/cgroup/cpu rw,relatime shared:11 - cgroup cgroup rw,cpu
`
	unified := `25 31 0:22 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
40 25 0:22 / /tmp/other\040cg rw - cgroup2 cgroup2 rw
`
	escaped := `40 25 0:22 / /tmp/my\040cg rw - cgroup2 cgroup2 rw
`
	for _, c := range []struct{ in, want string }{
		{hybrid, "/sys/fs/cgroup/unified"},
		{unified, "/sys/fs/cgroup"},
		{escaped, "/tmp/my cg"},
	} {
		got, err := parseCgroup2Mount(c.in)
		if err != nil || got != c.want {
			t.Errorf("parseCgroup2Mount = %q, %v; want %q", got, err, c.want)
		}
	}
	v1only := "27 25 0:24 / /sys/fs/cgroup/cpu rw,relatime shared:11 - cgroup cgroup rw,cpu\n"
	if got, err := parseCgroup2Mount(v1only); err == nil {
		t.Errorf("v1 only: got %q, want an error", got)
	}
}

func TestCgroupPath(t *testing.T) {
	if got := CgroupPath("/sys/fs/cgroup", "cx12ab"); got != "/sys/fs/cgroup/calyx-bench-cx12ab" {
		t.Errorf("CgroupPath = %q", got)
	}
	if got := CgroupPath("/sys/fs/cgroup/unified/", "cx12ab"); got != "/sys/fs/cgroup/unified/calyx-bench-cx12ab" {
		t.Errorf("CgroupPath = %q", got)
	}
	for name, want := range map[string]string{
		"calyx-bench-cx12ab":  "cx12ab",
		"calyx-bench-cx12AB":  "",
		"calyx-bench-cx12ab0": "",
		"calyx-bench-":        "",
		"system.slice":        "",
		"cx12ab":              "",
	} {
		if got := prefixOfCgroup(name); got != want {
			t.Errorf("prefixOfCgroup(%q) = %q, want %q", name, got, want)
		}
	}
}

// TestLabCgroup checks that a lab with Options.Cgroup starts its commands
// (foreground, background, in a namespace) in its own cgroup, that cpu.stat
// counts their CPU time, and that Close removes the cgroup.
func TestLabCgroup(t *testing.T) {
	Require(t)
	if _, err := Cgroup2Mount(); err != nil {
		SkipOrFailInCI(t, "no cgroup v2: %v", err)
	}
	l := newTestLab(t, Options{Cgroup: true})
	cg := l.Cgroup()
	if cg == nil {
		t.Fatal("no cgroup")
	}
	want := "0::/" + filepath.Base(cg.Path)
	if cg.Agents != filepath.Join(cg.Path, "agents") {
		t.Errorf("agents' cgroup %q", cg.Agents)
	}
	if _, err := cg.AgentsCPUStat(); err != nil {
		t.Error(err)
	}
	if !strings.HasPrefix(cg.Path, "/") || filepath.Base(cg.Path) != CgroupNamePrefix+l.Prefix {
		t.Fatalf("cgroup path %q", cg.Path)
	}
	res, err := l.Exec("", "cat", "/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	// The v2 line is "0::/<path under the mount>"; the lab's cgroup is
	// right under the mount.
	if !strings.Contains(res.Stdout, want+"\n") {
		t.Errorf("a command's cgroups:\n%s\nwant the line %q", res.Stdout, want)
	}
	h, err := l.AddHost("h1", "10.30.0.11/24")
	if err != nil {
		t.Fatal(err)
	}
	p, err := l.ExecBackground(h.NS, time.Minute, "sh", "-c", "cat /proc/self/cgroup; i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done")
	if err != nil {
		t.Fatal(err)
	}
	before, err := cg.CPUStat()
	if err != nil {
		t.Fatal(err)
	}
	r, err := p.Wait(30 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(r.Stdout, want+"\n") {
		t.Errorf("a background command's cgroups:\n%s\nwant the line %q", r.Stdout, want)
	}
	after, err := cg.CPUStat()
	if err != nil {
		t.Fatal(err)
	}
	if after.Usage-before.Usage < 10*time.Millisecond {
		t.Errorf("a busy loop cost the cgroup %v, want 10 ms at least", after.Usage-before.Usage)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(cg.Path); !os.IsNotExist(err) {
		t.Errorf("cgroup %s left after Close: %v", cg.Path, err)
	}
	assertGone(t, l.Prefix)
}
