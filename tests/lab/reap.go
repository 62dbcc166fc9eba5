package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// netnsDir is where iproute2 keeps named network namespaces.
const netnsDir = "/run/netns"

// NetnsEtcDir is where "ip netns exec NS" finds the files it bind-mounts
// over /etc for commands in NS: NetnsEtcDir/NS/resolv.conf becomes their
// /etc/resolv.conf. The lab puts one there for every instance a DHCP
// client runs in (see ResolvConfPath) and Reap removes the directories of
// the lab's namespaces (never NetnsEtcDir itself, nor another lab's).
const NetnsEtcDir = "/etc/netns"

// Reap removes everything a lab with the given prefix left behind: it kills
// the processes still running in the lab's namespaces and its VM relays
// (which removes their taps), deletes the namespaces and their
// /etc/netns/<namespace> directories, unmounts whatever is mounted under
// /run/calyx-lab/<prefix> and removes that directory and the lab's cgroup
// (Options.Cgroup), killing what is still in it. It is what Close does
// after stopping the lab's own processes, and what "calyx-lab destroy" uses
// after a crashed run.
func Reap(prefix string) error {
	if !prefixRE.MatchString(prefix) {
		return fmt.Errorf("invalid lab prefix %q: want cx followed by 4 lowercase hex digits", prefix)
	}
	var errs []error
	names, err := namespacesWithPrefix(prefix)
	if err != nil {
		errs = append(errs, err)
	}
	// Kill everything first so no namespace is kept alive by a process
	// that is about to be killed anyway. VM relays are found by their
	// command line too: one whose namespace was deleted by hand is in no
	// namespace "ip netns pids" can list, yet still holds its taps.
	if err := killRelays(prefix); err != nil {
		errs = append(errs, err)
	}
	for _, ns := range names {
		if err := killNamespacePids(ns); err != nil {
			errs = append(errs, err)
		}
	}
	for _, ns := range names {
		if err := deleteNamespace(ns); err != nil {
			errs = append(errs, err)
		}
	}
	if err := removeNetnsEtc(prefix); err != nil {
		errs = append(errs, err)
	}
	// The lab's cgroup, once the processes in it are gone.
	if err := removeCgroup(prefix); err != nil {
		errs = append(errs, err)
	}
	dir := filepath.Join(RunRoot, prefix)
	if err := unmountUnder(dir); err != nil {
		errs = append(errs, err)
	}
	if err := os.RemoveAll(dir); err != nil {
		errs = append(errs, fmt.Errorf("remove %s: %w", dir, err))
	}
	// Leave /run/calyx-lab behind only while another lab uses it.
	_ = os.Remove(RunRoot)
	return errors.Join(errs...)
}

// ReapAll reaps every lab prefix found by Leftovers.
func ReapAll() error {
	prefixes, err := Leftovers()
	if err != nil {
		return err
	}
	var errs []error
	for _, p := range prefixes {
		if err := Reap(p); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Leftovers lists the prefixes of labs that still have a namespace, a state
// directory, an /etc/netns/<namespace> directory, a VM relay or a cgroup
// on this machine, sorted.
func Leftovers() ([]string, error) {
	set := map[string]bool{}
	entries, err := os.ReadDir(netnsDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("list namespaces: %w", err)
	}
	for _, e := range entries {
		if m := nsRE.FindStringSubmatch(e.Name()); m != nil {
			set[m[1]] = true
		}
	}
	entries, err = os.ReadDir(RunRoot)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("list %s: %w", RunRoot, err)
	}
	for _, e := range entries {
		if prefixRE.MatchString(e.Name()) {
			set[e.Name()] = true
		}
	}
	etcs, err := netnsEtcDirs("")
	if err != nil {
		return nil, err
	}
	for _, d := range etcs {
		set[nsRE.FindStringSubmatch(d)[1]] = true
	}
	relays, err := labRelays()
	if err != nil {
		return nil, err
	}
	for _, p := range relays {
		set[p] = true
	}
	for _, p := range cgroupLeftovers() {
		set[p] = true
	}
	out := make([]string, 0, len(set))
	for p := range set {
		out = append(out, p)
	}
	sort.Strings(out)
	return out, nil
}

// namespacesWithPrefix lists the named namespaces "<prefix>-...".
func namespacesWithPrefix(prefix string) ([]string, error) {
	entries, err := os.ReadDir(netnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list namespaces: %w", err)
	}
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix+"-") {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out, nil
}

// netnsEtcDirs lists the entries of NetnsEtcDir that belong to the lab
// with prefix, or to any lab for prefix "".
func netnsEtcDirs(prefix string) ([]string, error) {
	entries, err := os.ReadDir(NetnsEtcDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", NetnsEtcDir, err)
	}
	var out []string
	for _, e := range entries {
		m := nsRE.FindStringSubmatch(e.Name())
		if m != nil && (prefix == "" || m[1] == prefix) {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out, nil
}

// removeNetnsEtc removes /etc/netns/<prefix>-* (the resolv.conf files of
// the lab's instances).
func removeNetnsEtc(prefix string) error {
	names, err := netnsEtcDirs(prefix)
	if err != nil {
		return err
	}
	var errs []error
	for _, n := range names {
		if err := os.RemoveAll(filepath.Join(NetnsEtcDir, n)); err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w", filepath.Join(NetnsEtcDir, n), err))
		}
	}
	return errors.Join(errs...)
}

// runQuick runs a short cleanup command with its own timeout, independent of
// any lab context (which may already be cancelled when cleaning up).
func runQuick(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.WaitDelay = 2 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// killNamespacePids SIGKILLs every process in the namespace (they can only
// be processes a lab started there) and waits for them to be gone.
func killNamespacePids(ns string) error {
	out, err := runQuick("ip", "netns", "pids", ns)
	if err != nil {
		return fmt.Errorf("list processes in %s: %w", ns, err)
	}
	var pids []int
	for f := range strings.FieldsSeq(out) {
		pid, err := strconv.Atoi(f)
		if err != nil || pid <= 1 || pid == os.Getpid() {
			continue
		}
		pids = append(pids, pid)
	}
	return killAndWait(pids, "in "+ns)
}

// killAndWait SIGKILLs pids and waits up to 5s for them to be gone; what
// says where they were in the error.
func killAndWait(pids []int, what string) error {
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, pid := range pids {
		for processAlive(pid) {
			if time.Now().After(deadline) {
				return fmt.Errorf("process %d %s survived SIGKILL", pid, what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return nil
}

// killRelays SIGKILLs every VM relay of the lab with prefix (see
// labRelays) and waits for them to be gone.
func killRelays(prefix string) error {
	relays, err := labRelays()
	if err != nil {
		return err
	}
	var pids []int
	for pid, p := range relays {
		if p == prefix {
			pids = append(pids, pid)
		}
	}
	return killAndWait(pids, "(vm relay of "+prefix+")")
}

// labRelays finds the running VM relays ("calyx-lab vm-relay ...") by their
// command line and returns the lab prefix of each one's namespaces by pid.
// A relay keeps both its taps' namespaces alive through their fds even after
// "ip netns delete", so it must be found without them.
func labRelays() (map[int]string, error) {
	out := map[int]string{}
	err := eachProcess(func(pid int, argv []string) {
		if p := relayPrefix(argv); p != "" {
			out[pid] = p
		}
	})
	return out, err
}

// eachProcess calls f with the pid and command line of every live process
// but this one; processes that go meanwhile are passed over.
func eachProcess(f func(pid int, argv []string)) error {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return fmt.Errorf("list processes: %w", err)
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(b) == 0 || !processAlive(pid) {
			continue // gone meanwhile, or a kernel thread
		}
		f(pid, strings.Split(strings.TrimRight(string(b), "\x00"), "\x00"))
	}
	return nil
}

// relayPrefix returns the lab prefix of a VM relay's command line (from its
// --host-ns or --vm-ns), or "" when argv is not a relay of a lab.
func relayPrefix(argv []string) string {
	if len(argv) < 2 || filepath.Base(argv[0]) != "calyx-lab" || !slices.Contains(argv, "vm-relay") {
		return ""
	}
	for i, a := range argv[:len(argv)-1] {
		if a == "--host-ns" || a == "--vm-ns" {
			if m := nsRE.FindStringSubmatch(argv[i+1]); m != nil {
				return m[1]
			}
		}
	}
	return ""
}

// processAlive reports whether pid still exists and is not a zombie (a
// zombie child of ours is reaped by its own Wait goroutine).
func processAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name.
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z'
	}
	return true
}

func deleteNamespace(ns string) error {
	if _, err := runQuick("ip", "netns", "delete", ns); err != nil {
		if _, statErr := os.Stat(filepath.Join(netnsDir, ns)); errors.Is(statErr, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("delete namespace: %w", err)
	}
	return nil
}

// unmountUnder unmounts every mount point at or below dir, deepest first,
// falling back to a lazy unmount when one is busy.
func unmountUnder(dir string) error {
	mounts, err := mountPoints()
	if err != nil {
		return err
	}
	var todo []string
	for _, m := range mounts {
		if m == dir || strings.HasPrefix(m, dir+"/") {
			todo = append(todo, m)
		}
	}
	sort.Slice(todo, func(i, j int) bool { return len(todo[i]) > len(todo[j]) })
	var errs []error
	for _, m := range todo {
		// A path can be mounted over more than once; unmount until gone.
		for range 10 {
			err := syscall.Unmount(m, 0)
			if errors.Is(err, syscall.EBUSY) {
				err = syscall.Unmount(m, syscall.MNT_DETACH)
			}
			if errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOENT) {
				break // no longer a mount point
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("unmount %s: %w", m, err))
				break
			}
		}
	}
	return errors.Join(errs...)
}

// mountPoints returns the mount points of the current mount namespace.
func mountPoints() ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		out = append(out, unescapeMount(fields[4]))
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	return out, nil
}

// unescapeMount undoes mountinfo's octal escapes (\040 for space etc.).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// IsMounted reports whether dir is a mount point in this mount namespace.
func IsMounted(dir string) (bool, error) {
	mounts, err := mountPoints()
	if err != nil {
		return false, err
	}
	for _, m := range mounts {
		if m == dir {
			return true, nil
		}
	}
	return false, nil
}
