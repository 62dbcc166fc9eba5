// Package bpftest is the support code for calyx's BPF program tests and
// benchmarks (layer 2: BPF_PROG_TEST_RUN): a throwaway network namespace
// with veth pairs to give the programs real ifindexes, a runner that sets
// skb->ifindex, and gopacket packet builders.
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
	"runtime"
	"sync"

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
