package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// WorkloadKind says how a workload's instance is attached to its host.
type WorkloadKind string

// The workload kinds, and KindMixed, a lab default that alternates them.
const (
	// KindVeth is a pod: a veth pair, eth0 in the workload namespace.
	KindVeth WorkloadKind = "veth"
	// KindVM is a virtual machine as libvirt/QEMU with vhost-net makes
	// it: a tap on the host (the host side) whose fd a relay process
	// joins to a second tap, eth0 in the workload namespace (the guest
	// NIC), with virtio_net_hdr and TSO/checksum offload on both.
	KindVM WorkloadKind = "vm"
	// KindMixed, as the lab default, makes even-numbered workloads VMs and
	// odd-numbered ones veths, so every multi-workload topology has both.
	KindMixed WorkloadKind = "mixed"
)

// WorkloadKindEnv names the environment variable that sets the default
// workload kind when Options.WorkloadKind is empty: veth, vm or mixed.
const WorkloadKindEnv = "CALYX_LAB_WORKLOAD"

// ParseWorkloadKind accepts "veth", "vm" and "mixed".
func ParseWorkloadKind(s string) (WorkloadKind, error) {
	switch k := WorkloadKind(s); k {
	case KindVeth, KindVM, KindMixed:
		return k, nil
	}
	return "", fmt.Errorf("invalid workload kind %q: want %s, %s or %s", s, KindVeth, KindVM, KindMixed)
}

// For returns the kind of workload number n (the N of its <prefix>w<N>
// host side) under default k: KindMixed gives KindVM for even n and
// KindVeth for odd n, "" gives KindVeth, any other kind itself.
func (k WorkloadKind) For(n int) WorkloadKind {
	switch k {
	case KindMixed:
		if n%2 == 0 {
			return KindVM
		}
		return KindVeth
	case "":
		return KindVeth
	}
	return k
}

// defaultWorkloadKind resolves Options.WorkloadKind, falling back to
// $CALYX_LAB_WORKLOAD and then KindVeth.
func defaultWorkloadKind(opt WorkloadKind) (WorkloadKind, error) {
	if opt != "" {
		k, err := ParseWorkloadKind(string(opt))
		if err != nil {
			return "", fmt.Errorf("Options.WorkloadKind: %w", err)
		}
		return k, nil
	}
	env := os.Getenv(WorkloadKindEnv)
	if env == "" {
		return KindVeth, nil
	}
	k, err := ParseWorkloadKind(env)
	if err != nil {
		return "", fmt.Errorf("$%s: %w", WorkloadKindEnv, err)
	}
	return k, nil
}

// kind returns the workload's concrete kind (an empty Kind is a veth).
func (w *Workload) kind() (WorkloadKind, error) {
	switch w.Kind {
	case "", KindVeth:
		return KindVeth, nil
	case KindVM:
		return KindVM, nil
	}
	return "", fmt.Errorf("workload %s: invalid kind %q: want %s or %s", w.Name, w.Kind, KindVeth, KindVM)
}

// vmRelay is one running relay process: a running VM.
type vmRelay struct {
	proc      *Proc
	statsPath string
	logFile   *os.File
}

// RelayBinary is the program the lab runs as a VM's relay: the running
// executable when it is calyx-lab itself (so "go run" works), else calyx-lab
// in the lab's BinDir.
func (l *Lab) RelayBinary() string {
	if exe, err := os.Executable(); err == nil && filepath.Base(exe) == "calyx-lab" {
		return exe
	}
	return filepath.Join(l.BinDir, "calyx-lab")
}

// RelayStatsPath is the file a VM's relay writes its RelayStats to.
func (l *Lab) RelayStatsPath(w *Workload) string {
	return filepath.Join(l.Dir, "vm-"+w.Name+".json")
}

// RelayLogPath is the file a VM's relay output is appended to (across
// restarts, each start marked by a header line).
func (l *Lab) RelayLogPath(w *Workload) string {
	return filepath.Join(l.Dir, "vm-"+w.Name+".log")
}

// startRelay starts the relay of VM w with its host tap in h and waits
// until it has created both taps.
func (l *Lab) startRelay(w *Workload, h *Host) error {
	l.mu.Lock()
	_, running := l.relays[w.Name]
	l.mu.Unlock()
	if running {
		return fmt.Errorf("workload %s: vm already running", w.Name)
	}
	bin := l.RelayBinary()
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("workload %s: vm relay binary: %w (run make build, or set the bin dir)", w.Name, err)
	}
	statsPath := l.RelayStatsPath(w)
	// The relay writes the file once both taps exist: an old one would
	// look like readiness.
	if err := os.Remove(statsPath); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("workload %s: %w", w.Name, err)
	}
	args := []string{bin, "vm-relay",
		"--host-ns", h.NS, "--host-tap", w.HostIface,
		"--vm-ns", w.NS, "--vm-tap", w.InstanceIface(),
		"--stats", statsPath,
	}
	// A lab that outlives this process ("calyx-lab up") keeps its VMs
	// running; any other lab's VMs stop when this process dies, whatever
	// kills it.
	if !l.outlive {
		args = append(args, "--parent", strconv.Itoa(os.Getpid()))
	}
	logPath := l.RelayLogPath(w)
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("workload %s: open relay log: %w", w.Name, err)
	}
	fmt.Fprintf(f, "=== calyx-lab: %s starting: %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(args, " "))
	// Started inside the workload namespace, so Reap finds it there like
	// any process of the lab; it enters the host namespace itself for the
	// host tap. Not bound to the lab's context: a VM runs until StopVM or
	// Close (or, with "calyx-lab up", until the lab is destroyed).
	p, err := l.startProcDetached(w.NS, args, f)
	if err != nil {
		f.Close()
		return fmt.Errorf("workload %s: %w", w.Name, err)
	}
	r := &vmRelay{proc: p, statsPath: statsPath, logFile: f}
	l.mu.Lock()
	l.relays[w.Name] = r
	l.mu.Unlock()

	err = pollWhile(p, 10*time.Second, 20*time.Millisecond, func() error {
		st, err := ReadRelayStats(statsPath)
		if err != nil {
			return err
		}
		if st.PID != p.Pid() {
			return fmt.Errorf("stats file of pid %d, want %d", st.PID, p.Pid())
		}
		return nil
	})
	if err != nil {
		_ = l.stopRelay(w.Name, r)
		return fmt.Errorf("workload %s: vm relay did not create its taps: %w\n--- %s (tail) ---\n%s", w.Name, err, logPath, l.logTail(logPath, 20))
	}
	l.logf("workload %s: vm relay pid %d, taps %s in %s and %s in %s", w.Name, p.Pid(), w.HostIface, h.NS, w.InstanceIface(), w.NS)
	return nil
}

// pollWhile is Eventually for a condition a running process must bring
// about: it gives up as soon as p has exited.
func pollWhile(p *Proc, timeout, interval time.Duration, f func() error) error {
	return Eventually(timeout, interval, func() error {
		select {
		case <-p.Done():
			return fmt.Errorf("pid %d exited", p.Pid())
		default:
		}
		return f()
	})
}

// stopRelay stops a relay with SIGTERM (SIGKILL after 3s) and forgets it.
// Its taps are gone when it has exited.
func (l *Lab) stopRelay(name string, r *vmRelay) error {
	res, err := r.proc.Stop(syscall.SIGTERM, 3*time.Second)
	fmt.Fprintf(r.logFile, "=== calyx-lab: %s exited (status %d)\n", time.Now().Format(time.RFC3339Nano), res.ExitCode)
	r.logFile.Close()
	l.mu.Lock()
	if l.relays[name] == r {
		delete(l.relays, name)
	}
	l.mu.Unlock()
	return err
}

// relay returns the running relay of VM w, or nil. A relay that exited by
// itself (both taps deleted, killed from outside) is forgotten here: its VM
// is stopped and StartVM may boot it again.
func (l *Lab) relay(w *Workload) *vmRelay {
	l.mu.Lock()
	r := l.relays[w.Name]
	l.mu.Unlock()
	if r == nil {
		return nil
	}
	select {
	case <-r.proc.Done():
		_ = l.stopRelay(w.Name, r)
		return nil
	default:
		return r
	}
}

// interfacesUp reports whether w's instance interface and host side exist:
// always for a veth workload, while the relay runs for a VM (for a NIC, its
// own relay).
func (l *Lab) interfacesUp(w *Workload) bool {
	if k, _ := w.kind(); k == KindVM {
		return l.relay(w) != nil
	}
	return true
}

// VMRunning reports whether VM w's relay is running (its taps exist). For an
// instance with several NICs it is about the NIC w.
func (l *Lab) VMRunning(w *Workload) bool { return l.relay(w) != nil }

// requireVM returns an error unless w is a created VM.
func requireVM(w *Workload, op string) error {
	k, err := w.kind()
	if err != nil {
		return err
	}
	if k != KindVM {
		return fmt.Errorf("%s %s: workload is a %s, not a %s: it has no hypervisor", op, w.Name, k, KindVM)
	}
	if !w.Created {
		return fmt.Errorf("%s %s: workload not created yet", op, w.Name)
	}
	return nil
}

// StopVM stops VM w as a hypervisor stops a guest: the relays of all its
// NICs (w may be any NIC of the instance) are killed, so every tap pair
// vanishes (the host sides from the host namespace, eth0, eth1, ... from
// the workload namespace, with their addresses and routes). It returns once
// every tap is gone. The namespace stays; StartVM boots the VM again.
func (l *Lab) StopVM(w *Workload) error {
	if err := requireVM(w, "stop vm"); err != nil {
		return err
	}
	h, err := l.Host(w.Host)
	if err != nil {
		return err
	}
	nics := l.NICs(w)
	stopped := 0
	var errs []error
	for _, n := range nics {
		r := l.relay(n)
		if r == nil {
			continue
		}
		stopped++
		l.logf("workload %s: stopping vm NIC %s (relay pid %d)", n.Name, n.InstanceIface(), r.proc.Pid())
		if err := l.stopRelay(n.Name, r); err != nil {
			errs = append(errs, err)
		}
	}
	if stopped == 0 {
		return fmt.Errorf("stop vm %s: not running", w.InstanceName())
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("stop vm %s: %w", w.InstanceName(), err)
	}
	err = Eventually(5*time.Second, 20*time.Millisecond, func() error {
		for _, n := range nics {
			for _, c := range []struct{ ns, ifc string }{{h.NS, n.HostIface}, {n.NS, n.InstanceIface()}} {
				if idx, err := Ifindex(c.ns, c.ifc); err == nil {
					return fmt.Errorf("%s still in %s (ifindex %d)", c.ifc, c.ns, idx)
				}
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("stop vm %s: %w", w.InstanceName(), err)
	}
	return nil
}

// StartVM boots a VM stopped by StopVM again, with every NIC (w may be any
// NIC of the instance; a NIC whose relay still runs is left alone): new
// relays create new taps with the same names (and new ifindexes) and each
// instance interface is configured as before (MAC, address, gateway
// routes, MTU, IPv6; with DHCP no address until a client runs), as after a
// guest reboot. It fails if every NIC is running already.
func (l *Lab) StartVM(w *Workload) error {
	if err := requireVM(w, "start vm"); err != nil {
		return err
	}
	var todo []*Workload
	for _, n := range l.NICs(w) {
		if l.relay(n) == nil {
			todo = append(todo, n)
		}
	}
	if len(todo) == 0 {
		return fmt.Errorf("start vm %s: already running", w.InstanceName())
	}
	h, err := l.Host(w.Host)
	if err != nil {
		return err
	}
	l.logf("workload %s: starting vm on %s", w.InstanceName(), h.Name)
	for _, n := range todo {
		if err := l.plug(n, h); err != nil {
			return fmt.Errorf("start vm %s: %w", w.InstanceName(), err)
		}
	}
	return nil
}

// MigrateWorkload moves created workload w to host newHost, as a live
// migration does: the host side is removed from the old host and created
// with the same name on the new one, and the instance's namespace keeps
// its identity (its interfaces come back with the same MACs, addresses,
// routes and MTU; with DHCP unconfigured, as after a reboot). A veth is
// recreated between the workload and the new host; a running VM gets new
// relays whose host taps are on the new host, for every NIC (w may be any
// NIC of the instance); a stopped VM only changes host (StartVM boots it
// there). Host is updated on every NIC.
func (l *Lab) MigrateWorkload(w *Workload, newHost string) error {
	kind, err := w.kind()
	if err != nil {
		return err
	}
	if !w.Created {
		return fmt.Errorf("migrate %s: workload not created yet", w.Name)
	}
	oh, err := l.Host(w.Host)
	if err != nil {
		return err
	}
	nh, err := l.Host(newHost)
	if err != nil {
		return fmt.Errorf("migrate %s: %w", w.Name, err)
	}
	if nh == oh {
		return fmt.Errorf("migrate %s: already on %s", w.Name, nh.Name)
	}
	nics := l.NICs(w)
	l.logf("workload %s (%s): migrating from %s to %s", w.InstanceName(), kind, oh.Name, nh.Name)
	replug := true
	switch kind {
	case KindVM:
		running := false
		for _, n := range nics {
			running = running || l.relay(n) != nil
		}
		if !running {
			replug = false
		} else if err := l.StopVM(w); err != nil {
			return fmt.Errorf("migrate %s: %w", w.Name, err)
		}
	default:
		// Deleting one end of a veth deletes the pair: eth0 goes too.
		if err := l.ip(oh.NS, "link", "del", w.HostIface); err != nil {
			return fmt.Errorf("migrate %s: %w", w.Name, err)
		}
	}
	// From here on the instance is on no host but the new one.
	l.mu.Lock()
	for _, n := range nics {
		n.Host = nh.Name
	}
	l.mu.Unlock()
	if !replug {
		return nil
	}
	for _, n := range nics {
		if err := l.plug(n, nh); err != nil {
			return fmt.Errorf("migrate %s: %w", w.Name, err)
		}
	}
	return nil
}

// IfaceStats are an interface's kernel counters (ip -s link).
type IfaceStats struct {
	// Ifindex is the interface's index in its namespace.
	Ifindex                                 int
	RxPackets, RxBytes, RxDropped, RxErrors uint64
	TxPackets, TxBytes, TxDropped, TxErrors uint64
}

// LinkStats reads the counters of interface ifc in namespace ns.
func (l *Lab) LinkStats(ns, ifc string) (IfaceStats, error) {
	args := []string{"ip"}
	if ns != "" {
		args = append(args, "-n", ns)
	}
	res, err := l.Exec("", append(args, "-s", "-j", "link", "show", "dev", ifc)...)
	if err != nil {
		return IfaceStats{}, err
	}
	var links []struct {
		Ifindex int `json:"ifindex"`
		Stats64 struct {
			Rx struct {
				Bytes, Packets, Errors, Dropped uint64
			} `json:"rx"`
			Tx struct {
				Bytes, Packets, Errors, Dropped uint64
			} `json:"tx"`
		} `json:"stats64"`
	}
	if err := json.Unmarshal([]byte(res.Stdout), &links); err != nil || len(links) != 1 {
		return IfaceStats{}, fmt.Errorf("stats of %s in %s: unexpected ip output (%v): %s", ifc, ns, err, tail(res.Stdout, 5))
	}
	s := links[0].Stats64
	return IfaceStats{
		Ifindex:   links[0].Ifindex,
		RxPackets: s.Rx.Packets, RxBytes: s.Rx.Bytes, RxDropped: s.Rx.Dropped, RxErrors: s.Rx.Errors,
		TxPackets: s.Tx.Packets, TxBytes: s.Tx.Bytes, TxDropped: s.Tx.Dropped, TxErrors: s.Tx.Errors,
	}, nil
}

// HostIfaceStats reads the counters of w's host side in its host namespace.
// For a VM, TxPackets is what the tap handed to the VM (read by the relay)
// and TxDropped what it dropped because the VM did not read it in time:
// compare them with what calyx counted as delivered into the tap.
func (l *Lab) HostIfaceStats(w *Workload) (IfaceStats, error) {
	h, err := l.Host(w.Host)
	if err != nil {
		return IfaceStats{}, err
	}
	st, err := l.LinkStats(h.NS, w.HostIface)
	if err != nil {
		return st, fmt.Errorf("workload %s: %w", w.Name, err)
	}
	return st, nil
}

// RelayStats returns the counters of VM w's relay. While it runs, the relay
// is asked (SIGUSR1) for a fresh copy and the call waits for it; after
// StopVM it returns what the relay wrote when it exited (Final set).
func (l *Lab) RelayStats(w *Workload) (RelayStats, error) {
	if err := requireVM(w, "relay stats of"); err != nil {
		return RelayStats{}, err
	}
	r := l.relay(w)
	if r == nil {
		st, err := ReadRelayStats(l.RelayStatsPath(w))
		if err != nil {
			return st, fmt.Errorf("workload %s: vm not running: %w", w.Name, err)
		}
		return st, nil
	}
	prev, err := ReadRelayStats(r.statsPath)
	if err != nil {
		return prev, fmt.Errorf("workload %s: %w", w.Name, err)
	}
	if err := r.proc.Signal(syscall.SIGUSR1); err != nil {
		return prev, fmt.Errorf("workload %s: %w", w.Name, err)
	}
	var st RelayStats
	err = pollWhile(r.proc, 5*time.Second, 10*time.Millisecond, func() error {
		s, err := ReadRelayStats(r.statsPath)
		if err != nil {
			return err
		}
		if s.Updates <= prev.Updates {
			return fmt.Errorf("relay has not answered SIGUSR1 (updates %d)", s.Updates)
		}
		st = s
		return nil
	})
	if err != nil {
		return st, fmt.Errorf("workload %s: relay stats: %w", w.Name, err)
	}
	return st, nil
}

// Ifindex returns the index of interface ifc in namespace ns ("" for the
// current one). It runs no command, so it is cheap enough to poll.
func Ifindex(ns, ifc string) (int, error) {
	var idx int
	err := InNS(ns, func() error {
		i, err := net.InterfaceByName(ifc)
		if err != nil {
			return err
		}
		idx = i.Index
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("interface %s in %s: %w", ifc, ns, err)
	}
	return idx, nil
}

// hostSide describes w's host side for the lab's printouts: the veth, or
// the tap and the pid of the relay behind it.
func (l *Lab) hostSide(w *Workload) string {
	if k, _ := w.kind(); k != KindVM {
		return "veth " + w.HostIface
	}
	if r := l.relay(w); r != nil {
		return fmt.Sprintf("tap %s (vm, relay pid %d, log %s)", w.HostIface, r.proc.Pid(), l.RelayLogPath(w))
	}
	return fmt.Sprintf("tap %s (vm, stopped)", w.HostIface)
}

// CheckDelivered compares, for every running VM of the lab whose host runs
// calyx, what calyx counted as delivered into the VM (to-workload on its
// host-side tap) with what the tap handed to the VM's queue (its
// tx_packets, plus tx_dropped for a full queue). A packet counted but never
// transmitted is one the kernel freed after calyx's verdict (a redirect the
// tap cannot take): the error names the VM and both figures. Packets in
// flight between the count and the transmission make a difference for a
// moment only, so a difference must persist over a few readings. Hosts
// whose calyxctl cannot read the pins (no agent ever ran there) are
// skipped; skipped says which and why.
func (l *Lab) CheckDelivered() (skipped []string, err error) {
	var errs []error
	for _, w := range l.Workloads() {
		if k, kerr := w.kind(); kerr != nil || k != KindVM || !l.VMRunning(w) {
			continue
		}
		var counted, sent uint64
		ok := false
		for try := 0; try < 5 && !ok; try++ {
			if try > 0 {
				time.Sleep(100 * time.Millisecond)
			}
			rows, cerr := l.Counters(w.Host)
			if cerr != nil {
				skipped = append(skipped, fmt.Sprintf("%s on %s: %v", w.Name, w.Host, cerr))
				ok = true
				break
			}
			st, serr := l.HostIfaceStats(w)
			if serr != nil {
				skipped = append(skipped, fmt.Sprintf("%s: %v", w.Name, serr))
				ok = true
				break
			}
			counted = CounterPackets(rows, w.HostIface, "to-workload")
			sent = st.TxPackets + st.TxDropped
			ok = counted <= sent
		}
		if !ok {
			errs = append(errs, fmt.Errorf("VM %s: calyx counted %d packets delivered into %s on %s, the tap transmitted %d: %d never reached the VM",
				w.Name, counted, w.HostIface, w.Host, sent, counted-sent))
		}
	}
	return skipped, errors.Join(errs...)
}
