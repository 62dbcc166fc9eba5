package lab

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// A lab's own cgroup (Options.Cgroup): a cgroup v2 directory that every
// process the lab starts is created in (clone3 with CLONE_INTO_CGROUP), so
// the CPU time of the lab's processes (agents, iperf3, calyx-load, BIRD,
// every "ip" and calyxctl) can be read from its cpu.stat whatever else
// runs on the machine. Its name carries the run prefix, so Reap finds and
// removes it after a crashed run.

// CgroupNamePrefix starts the name of every lab's cgroup: the directory is
// <cgroup v2 mount>/calyx-bench-<prefix>.
const CgroupNamePrefix = "calyx-bench-"

// Cgroup is the lab's cgroup v2 directory. The agents run in a child of
// it, agents/, so their share can be read apart (the lab's cpu.stat counts
// the child's too).
type Cgroup struct {
	// Path is the directory (/sys/fs/cgroup/calyx-bench-cx1234).
	Path string
	// Agents is the agents' child cgroup (Path/agents).
	Agents string
	// Controllers lists the controllers the hierarchy offers
	// (cgroup.controllers of its root); cpu.stat's usage needs none.
	Controllers  []string
	fd, agentsFD int
}

// CPUStat is a reading of a cgroup's cpu.stat. Usage is the scheduler's
// exact runtime of the cgroup's tasks (cgroup core accounting, kept with
// or without the cpu controller); User and System split it at the tick.
type CPUStat struct {
	Usage, User, System time.Duration
}

// ParseCPUStat reads the usage_usec, user_usec and system_usec lines of
// a cpu.stat file; usage_usec must be there.
func ParseCPUStat(s string) (CPUStat, error) {
	var st CPUStat
	seen := false
	for _, line := range strings.Split(s, "\n") {
		f := strings.Fields(line)
		if len(f) != 2 {
			continue
		}
		var d *time.Duration
		switch f[0] {
		case "usage_usec":
			d, seen = &st.Usage, true
		case "user_usec":
			d = &st.User
		case "system_usec":
			d = &st.System
		default:
			continue
		}
		n, err := strconv.ParseUint(f[1], 10, 63)
		if err != nil {
			return CPUStat{}, fmt.Errorf("cpu.stat: %q: %w", line, err)
		}
		*d = time.Duration(n) * time.Microsecond
	}
	if !seen {
		return CPUStat{}, errors.New("cpu.stat: no usage_usec line")
	}
	return st, nil
}

// parseCgroup2Mount returns the mount point of the cgroup v2 hierarchy
// from the text of /proc/self/mountinfo: /sys/fs/cgroup when it is v2
// (unified), else the first cgroup2 mount (a hybrid setup mounts it at
// /sys/fs/cgroup/unified, beside the v1 hierarchies).
func parseCgroup2Mount(mountinfo string) (string, error) {
	var found []string
	for _, line := range strings.Split(mountinfo, "\n") {
		// ID parent major:minor root mountpoint options [optional...] - fstype source superoptions
		pre, post, ok := strings.Cut(line, " - ")
		if !ok {
			continue
		}
		pf, sf := strings.Fields(pre), strings.Fields(post)
		if len(pf) < 5 || len(sf) < 1 || sf[0] != "cgroup2" {
			continue
		}
		found = append(found, unescapeMountinfo(pf[4]))
	}
	for _, m := range found {
		if m == "/sys/fs/cgroup" {
			return m, nil
		}
	}
	if len(found) == 0 {
		return "", errors.New("no cgroup v2 hierarchy is mounted")
	}
	return found[0], nil
}

// unescapeMountinfo undoes mountinfo's octal escapes (\040 for a space).
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Cgroup2Mount returns the mount point of this machine's cgroup v2
// hierarchy.
func Cgroup2Mount() (string, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	return parseCgroup2Mount(string(b))
}

// CgroupPath is the directory of the cgroup of the lab with prefix under
// the cgroup v2 mount.
func CgroupPath(mount, prefix string) string {
	return filepath.Join(mount, CgroupNamePrefix+prefix)
}

// prefixOfCgroup returns the run prefix of a lab cgroup's directory name,
// or "" when the name is not one.
func prefixOfCgroup(name string) string {
	p, ok := strings.CutPrefix(name, CgroupNamePrefix)
	if !ok || !prefixRE.MatchString(p) {
		return ""
	}
	return p
}

// createCgroup makes the lab's cgroup and opens it for CLONE_INTO_CGROUP.
// It checks that its cpu.stat can be read.
func createCgroup(prefix string) (*Cgroup, error) {
	mount, err := Cgroup2Mount()
	if err != nil {
		return nil, err
	}
	dir := CgroupPath(mount, prefix)
	cg := &Cgroup{Path: dir, Agents: filepath.Join(dir, "agents"), fd: -1, agentsFD: -1}
	if b, err := os.ReadFile(filepath.Join(mount, "cgroup.controllers")); err == nil {
		cg.Controllers = strings.Fields(string(b))
	}
	if err := os.Mkdir(cg.Path, 0o755); err != nil {
		return nil, fmt.Errorf("create cgroup: %w", err)
	}
	undo := func(err error) (*Cgroup, error) {
		cg.closeFD()
		_ = os.Remove(cg.Agents)
		_ = os.Remove(cg.Path)
		return nil, err
	}
	if err := os.Mkdir(cg.Agents, 0o755); err != nil {
		return undo(fmt.Errorf("create cgroup: %w", err))
	}
	if _, err := cg.CPUStat(); err != nil {
		return undo(err)
	}
	if _, err := cg.AgentsCPUStat(); err != nil {
		return undo(err)
	}
	for _, d := range []struct {
		path string
		fd   *int
	}{{cg.Path, &cg.fd}, {cg.Agents, &cg.agentsFD}} {
		fd, err := syscall.Open(d.path, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
		if err != nil {
			return undo(fmt.Errorf("open cgroup %s: %w", d.path, err))
		}
		*d.fd = fd
	}
	return cg, nil
}

// readCPUStat reads the cpu.stat in dir.
func readCPUStat(dir string) (CPUStat, error) {
	b, err := os.ReadFile(filepath.Join(dir, "cpu.stat"))
	if err != nil {
		return CPUStat{}, err
	}
	st, err := ParseCPUStat(string(b))
	if err != nil {
		return CPUStat{}, fmt.Errorf("%s: %w", dir, err)
	}
	return st, nil
}

// AgentsCPUStat reads the cpu.stat of the agents' child cgroup.
func (c *Cgroup) AgentsCPUStat() (CPUStat, error) { return readCPUStat(c.Agents) }

// CPUStat reads the cgroup's cpu.stat: every process of the lab, the
// agents included.
func (c *Cgroup) CPUStat() (CPUStat, error) { return readCPUStat(c.Path) }

// HasController reports whether the hierarchy offers controller name.
func (c *Cgroup) HasController(name string) bool {
	for _, n := range c.Controllers {
		if n == name {
			return true
		}
	}
	return false
}

// closeFD closes the directory fds; new processes are no longer put in.
func (c *Cgroup) closeFD() {
	for _, fd := range []*int{&c.fd, &c.agentsFD} {
		if *fd >= 0 {
			_ = syscall.Close(*fd)
			*fd = -1
		}
	}
}

// removeCgroup kills whatever is left in the cgroup of the lab with
// prefix and removes it; a missing cgroup (or hierarchy) is fine.
func removeCgroup(prefix string) error {
	mount, err := Cgroup2Mount()
	if err != nil {
		return nil
	}
	dir := CgroupPath(mount, prefix)
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	rm := func() error {
		_ = os.Remove(filepath.Join(dir, "agents"))
		return os.Remove(dir)
	}
	if err := rm(); err == nil || errors.Is(err, os.ErrNotExist) {
		return nil
	}
	// Still populated: every process in it is the lab's (cgroup.kill
	// kills the children's too).
	_ = os.WriteFile(filepath.Join(dir, "cgroup.kill"), []byte("1"), 0)
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := rm()
		if err == nil || errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("remove cgroup %s: %w", dir, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// cgroupLeftovers lists the prefixes of lab cgroups on this machine.
func cgroupLeftovers() []string {
	mount, err := Cgroup2Mount()
	if err != nil {
		return nil
	}
	entries, err := os.ReadDir(mount)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range entries {
		if p := prefixOfCgroup(e.Name()); p != "" && e.IsDir() {
			out = append(out, p)
		}
	}
	return out
}

// Cgroup returns the lab's cgroup, nil when it has none.
func (l *Lab) Cgroup() *Cgroup { return l.cgroup }

// cgroupFD is the fd new processes are created in, -1 for none.
func (l *Lab) cgroupFD() int {
	if l.cgroup == nil {
		return -1
	}
	return l.cgroup.fd
}

// agentCgroupFD is the fd agents are created in, -1 for none.
func (l *Lab) agentCgroupFD() int {
	if l.cgroup == nil {
		return -1
	}
	return l.cgroup.agentsFD
}
