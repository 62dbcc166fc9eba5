// Package bpftest is the support code for calyx's BPF program tests and
// benchmarks (layer 2: BPF_PROG_TEST_RUN): a throwaway network namespace
// with veth pairs and taps to give the programs real ifindexes, a runner
// that sets skb->ifindex, and gopacket packet builders.
//
// Why a namespace: a TC program reads skb->ifindex, and BPF_PROG_TEST_RUN
// takes it from the ifindex field of the __sk_buff context, but only as the
// index of a device that exists in the calling thread's network namespace
// (0 or 1 select the namespace's loopback, an unknown index fails with
// ENODEV). So every run happens on one OS thread that lives in a namespace
// of its own, where the veths exist; nothing is created in the caller's
// namespace and the namespace dies with that thread.
package bpftest

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// NetNS is a network namespace of its own, created for a test and owned by
// one OS thread. Everything that must see the namespace (netlink calls,
// program runs) goes through Do, which executes on that thread.
type NetNS struct {
	reqs      chan func()
	quit      chan struct{}
	exited    chan struct{}
	handle    netns.NsHandle
	closeOnce sync.Once
}

// NewNetNS starts a locked OS thread, moves it into a new network namespace
// and returns the namespace. Close it (t.Cleanup) to destroy it and every
// interface in it; the calling goroutine's thread is never moved.
func NewNetNS() (*NetNS, error) {
	n := &NetNS{reqs: make(chan func()), quit: make(chan struct{}), exited: make(chan struct{})}
	ready := make(chan error, 1)
	go n.serve(ready)
	if err := <-ready; err != nil {
		return nil, err
	}
	return n, nil
}

func (n *NetNS) serve(ready chan<- error) {
	defer close(n.exited)
	// Never unlocked: when this goroutine returns, the runtime terminates
	// the thread, and with it the last user of the namespace. A thread in a
	// foreign namespace must never go back to the scheduler's pool.
	runtime.LockOSThread()
	h, err := netns.New()
	if err != nil {
		ready <- fmt.Errorf("create network namespace: %w", err)
		return
	}
	n.handle = h
	if lo, err := netlink.LinkByName("lo"); err == nil {
		_ = netlink.LinkSetUp(lo)
	}
	ready <- nil
	for {
		select {
		case fn := <-n.reqs:
			fn()
		case <-n.quit:
			_ = h.Close()
			return
		}
	}
}

// Do runs fn on the namespace's thread and returns its error.
func (n *NetNS) Do(fn func() error) error {
	errc := make(chan error, 1)
	select {
	case n.reqs <- func() { errc <- fn() }:
	case <-n.quit:
		return errors.New("bpftest: network namespace is closed")
	}
	return <-errc
}

// Go runs fn on a new OS thread of its own in the namespace, pinned to cpu
// (-1: not pinned), and returns its error: for program runs beside the
// namespace's own thread, on several CPUs at once. The thread ends with fn.
func (n *NetNS) Go(cpu int, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: the thread is in another namespace, and Go
		// ends it when this goroutine returns.
		runtime.LockOSThread()
		if err := netns.Set(n.handle); err != nil {
			errc <- fmt.Errorf("enter %s: %w", n, err)
			return
		}
		if cpu >= 0 {
			var set unix.CPUSet
			set.Set(cpu)
			if err := unix.SchedSetaffinity(0, &set); err != nil {
				errc <- fmt.Errorf("pin to CPU %d: %w", cpu, err)
				return
			}
		}
		errc <- fn()
	}()
	return <-errc
}

// Close destroys the namespace and every interface in it. It is safe to
// call more than once.
func (n *NetNS) Close() error {
	n.closeOnce.Do(func() { close(n.quit) })
	<-n.exited
	return nil
}

// String names the namespace for messages (its device and inode).
func (n *NetNS) String() string { return n.handle.UniqueId() }

// Inode is the namespace's inode number, as in /proc/*/ns/net -> net:[inode].
func (n *NetNS) Inode() uint64 {
	var st unix.Stat_t
	if err := unix.Fstat(int(n.handle), &st); err != nil {
		return 0
	}
	return st.Ino
}

// Veth is one veth pair created in a NetNS. Host is the side a calyx
// program would be attached to.
type Veth struct {
	Name        string
	Ifindex     int
	MAC         net.HardwareAddr
	PeerName    string
	PeerIfindex int
	PeerMAC     net.HardwareAddr
}

// AddVeth creates a veth pair name/peer in the namespace with the given
// MACs (nil: the kernel picks) and brings both sides up.
func (n *NetNS) AddVeth(name, peer string, mac, peerMAC net.HardwareAddr) (Veth, error) {
	var v Veth
	err := n.Do(func() error {
		la := netlink.NewLinkAttrs()
		la.Name = name
		la.HardwareAddr = mac
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: peer, PeerHardwareAddr: peerMAC}); err != nil {
			return fmt.Errorf("add veth %s/%s: %w", name, peer, err)
		}
		host, err := netlink.LinkByName(name)
		if err != nil {
			return err
		}
		other, err := netlink.LinkByName(peer)
		if err != nil {
			return err
		}
		for _, l := range []netlink.Link{host, other} {
			if err := netlink.LinkSetUp(l); err != nil {
				return fmt.Errorf("set %s up: %w", l.Attrs().Name, err)
			}
		}
		v = Veth{
			Name: name, Ifindex: host.Attrs().Index, MAC: host.Attrs().HardwareAddr,
			PeerName: peer, PeerIfindex: other.Attrs().Index, PeerMAC: other.Attrs().HardwareAddr,
		}
		return nil
	})
	return v, err
}

// LinkIndex returns the ifindex of name in the namespace.
func (n *NetNS) LinkIndex(name string) (int, error) {
	var idx int
	err := n.Do(func() error {
		l, err := netlink.LinkByName(name)
		if err != nil {
			return err
		}
		idx = l.Attrs().Index
		return nil
	})
	return idx, err
}

// Sysctl writes value to /proc/sys/<name> (dots or slashes) as seen from
// the namespace: the net.* sysctls a thread opens are its namespace's.
func (n *NetNS) Sysctl(name, value string) error {
	path := filepath.Join("/proc/sys", strings.ReplaceAll(name, ".", "/"))
	return n.Do(func() error {
		if err := os.WriteFile(path, []byte(value), 0o644); err != nil {
			return fmt.Errorf("sysctl %s=%s: %w", name, value, err)
		}
		return nil
	})
}

// AddAddr puts addr (with its prefix, e.g. 10.30.0.10/24) on the link name.
func (n *NetNS) AddAddr(name string, addr netip.Prefix) error {
	return n.Do(func() error {
		l, err := netlink.LinkByName(name)
		if err != nil {
			return err
		}
		a := &netlink.Addr{IPNet: &net.IPNet{IP: addr.Addr().AsSlice(), Mask: net.CIDRMask(addr.Bits(), addr.Addr().BitLen())}}
		if err := netlink.AddrAdd(l, a); err != nil {
			return fmt.Errorf("add %s to %s: %w", addr, name, err)
		}
		return nil
	})
}

// AddNeigh adds a permanent neighbour entry ip → mac on the link name.
func (n *NetNS) AddNeigh(name string, ip netip.Addr, mac net.HardwareAddr) error {
	return n.Do(func() error {
		l, err := netlink.LinkByName(name)
		if err != nil {
			return err
		}
		family := netlink.FAMILY_V4
		if ip.Is6() {
			family = netlink.FAMILY_V6
		}
		nb := &netlink.Neigh{LinkIndex: l.Attrs().Index, Family: family, State: netlink.NUD_PERMANENT,
			IP: ip.AsSlice(), HardwareAddr: mac}
		if err := netlink.NeighAdd(nb); err != nil {
			return fmt.Errorf("add neighbour %s lladdr %s on %s: %w", ip, mac, name, err)
		}
		return nil
	})
}

// AddRoute adds a route to dst via gw (on-link through the link name when
// gw is not valid).
func (n *NetNS) AddRoute(name string, dst netip.Prefix, gw netip.Addr) error {
	return n.Do(func() error {
		l, err := netlink.LinkByName(name)
		if err != nil {
			return err
		}
		r := &netlink.Route{LinkIndex: l.Attrs().Index,
			Dst: &net.IPNet{IP: dst.Masked().Addr().AsSlice(), Mask: net.CIDRMask(dst.Bits(), dst.Addr().BitLen())}}
		if gw.IsValid() {
			r.Gw = gw.AsSlice()
		}
		if err := netlink.RouteAdd(r); err != nil {
			return fmt.Errorf("add route %s via %s dev %s: %w", dst, gw, name, err)
		}
		return nil
	})
}

// SetMTU sets the MTU of the link name.
func (n *NetNS) SetMTU(name string, mtu int) error {
	return n.Do(func() error {
		l, err := netlink.LinkByName(name)
		if err != nil {
			return err
		}
		return netlink.LinkSetMTU(l, mtu)
	})
}

// Tap is a tap device created in a NetNS: the host side of a VM's NIC,
// where calyx's programs are attached.
type Tap struct {
	Name    string
	Ifindex int
	MAC     net.HardwareAddr
	// File is the tap's queue, the VM's end of it (no packet-information
	// header, no virtio_net_hdr): frames written to it arrive as received
	// on the tap (its TC ingress), frames the tap transmits (after its TC
	// egress) are read from it. Nil unless AddTap was asked to keep it;
	// the caller closes it, and the namespace lives until it does.
	File *os.File
}

// AddTap creates a persistent tap device name with the given MAC in the
// namespace, with IPv6 off (the host's own router solicitations, DAD and
// MLD would otherwise go out of it) and up. Without keepFile its queue is
// closed at once: the device exists (its ifindex can be run on) but has no
// carrier, as a VM's tap whose VM has not started.
func (n *NetNS) AddTap(name string, mac net.HardwareAddr, keepFile bool) (Tap, error) {
	var t Tap
	err := n.Do(func() error {
		tt := &netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: name}, Mode: netlink.TUNTAP_MODE_TAP,
			Flags: netlink.TUNTAP_NO_PI, Queues: 1}
		if err := netlink.LinkAdd(tt); err != nil {
			return fmt.Errorf("add tap %s: %w", name, err)
		}
		if len(tt.Fds) != 1 {
			return fmt.Errorf("add tap %s: %d queues, want 1", name, len(tt.Fds))
		}
		f := tt.Fds[0]
		fail := func(err error) error {
			_ = f.Close()
			return err
		}
		l, err := netlink.LinkByName(name)
		if err != nil {
			return fail(err)
		}
		if mac != nil {
			if err := netlink.LinkSetHardwareAddr(l, mac); err != nil {
				return fail(fmt.Errorf("set %s lladdr %s: %w", name, mac, err))
			}
		}
		v6 := filepath.Join("/proc/sys/net/ipv6/conf", name, "disable_ipv6")
		if err := os.WriteFile(v6, []byte("1"), 0o644); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fail(fmt.Errorf("disable IPv6 on %s: %w", name, err))
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return fail(fmt.Errorf("set %s up: %w", name, err))
		}
		if l, err = netlink.LinkByName(name); err != nil {
			return fail(err)
		}
		t = Tap{Name: name, Ifindex: l.Attrs().Index, MAC: l.Attrs().HardwareAddr}
		if keepFile {
			t.File = f
			return nil
		}
		return f.Close()
	})
	return t, err
}

// AttachTCX attaches prog to the interface ifindex of the namespace at the
// TCX hook attach (ebpf.AttachTCXIngress or AttachTCXEgress). Closing the
// link detaches it.
func (n *NetNS) AttachTCX(prog *ebpf.Program, ifindex int, attach ebpf.AttachType) (link.Link, error) {
	var l link.Link
	err := n.Do(func() error {
		var err error
		l, err = link.AttachTCX(link.TCXOptions{Interface: ifindex, Program: prog, Attach: attach})
		return err
	})
	return l, err
}
