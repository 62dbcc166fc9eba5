// Package pktsock is one AF_PACKET socket for one ethertype on every
// interface of the namespace: the subnet services read requests from every
// endpoint interface through it and write replies to one interface by
// ifindex, whole Ethernet frames both ways, so one socket serves any number
// of interfaces and a request from 0.0.0.0 is seen as it came.
//
// It sees a frame after the TC ingress programs (ethertype sockets hang off
// the same hook as the IP stack, unlike ETH_P_ALL taps), so only what calyx
// passed to the host; frames it writes go through the interface's TC egress
// hook. Requires CAP_NET_RAW. The socket belongs to the network namespace
// of the thread that called Listen, whatever thread reads or writes it
// later.
package pktsock

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// ErrTruncated is returned (wrapped) by ReadFrom when a frame was longer
// than the buffer: the frame is lost, never handed over cut short.
var ErrTruncated = errors.New("frame longer than the buffer")

// Conn is the socket. Its methods may be called from any goroutine; one
// reader at a time.
type Conn struct {
	f      *os.File
	rc     syscall.RawConn
	proto  uint16 // network byte order
	closed atomic.Bool
}

// hostGuard refuses frames the kernel marked PACKET_OTHERHOST, as the IP
// stack does: unicast to another MAC, and frames that carried an 802.1Q
// tag with no VLAN device for it. The kernel strips such a tag and clears
// it from the skb before it looks for ethertype sockets, so without this
// a request an instance sent on a VLAN sub-interface would be answered as
// if it came untagged.
var hostGuard = []bpf.Instruction{
	bpf.LoadExtension{Num: bpf.ExtType},
	bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: unix.PACKET_OTHERHOST, SkipTrue: 1},
	bpf.RetConstant{Val: 0},
}

// Listen opens a socket for ethertype (unix.ETH_P_IP, unix.ETH_P_IPV6) on
// every interface, with filter (classic BPF over the whole frame, Ethernet
// header at offset 0) deciding which frames it takes; nil takes every
// frame of the ethertype. Frames not for this host are never taken: unicast
// to another MAC, or VLAN-tagged with no VLAN device for the tag.
// It fails when the socket cannot be made (no CAP_NET_RAW: EPERM) or the
// filter does not assemble or is refused by the kernel.
func Listen(ethertype uint16, filter []bpf.Instruction) (*Conn, error) {
	proto := htons(ethertype)
	// Protocol 0: the socket is hooked to no ethertype and receives nothing
	// until bind names one, so no frame gets in before the filter is on.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("packet socket for ethertype %#04x: %w", ethertype, err)
	}
	prog := append(append([]bpf.Instruction{}, hostGuard...), filter...)
	if len(filter) == 0 {
		prog = append(prog, bpf.RetConstant{Val: 1 << 18})
	}
	raw, err := bpf.Assemble(prog)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("assemble packet filter: %w", err)
	}
	fprog := unix.SockFprog{Len: uint16(len(raw)), Filter: (*unix.SockFilter)(rawPtr(raw))}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &fprog); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("attach packet filter: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: proto}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind packet socket: %w", err)
	}
	// A non-blocking descriptor makes os.File use the runtime's poller:
	// reads park the goroutine instead of a thread, deadlines are the
	// poller's, and Close wakes a blocked reader.
	f := os.NewFile(uintptr(fd), fmt.Sprintf("packet:%#04x", ethertype))
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("packet socket: %w", err)
	}
	return &Conn{f: f, rc: rc, proto: proto}, nil
}

// SetReadDeadline bounds the current and next ReadFrom calls, so a reader
// can notice that it should stop; zero waits forever. It fails only on a
// closed Conn.
func (c *Conn) SetReadDeadline(t time.Time) error {
	return c.f.SetReadDeadline(t)
}

// ReadFrom reads one frame (Ethernet header first) into buf and says
// which interface it came in on. A frame the host itself sent is skipped.
// An expired deadline returns an error for which os.IsTimeout is true; a
// frame longer than buf one that wraps ErrTruncated (read the next);
// after Close one that wraps os.ErrClosed.
func (c *Conn) ReadFrom(buf []byte) (n, ifindex int, err error) {
	for {
		var (
			from  unix.Sockaddr
			rerr  error
			total int
		)
		err := c.rc.Read(func(fd uintptr) bool {
			// MSG_TRUNC: the return value is the frame's length, so a
			// frame that did not fit is noticed.
			total, from, rerr = unix.Recvfrom(int(fd), buf, unix.MSG_TRUNC)
			return !errors.Is(rerr, unix.EAGAIN)
		})
		if err == nil {
			err = rerr
		}
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return 0, 0, c.wrap("read", err)
		}
		ll, ok := from.(*unix.SockaddrLinklayer)
		if !ok || ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		if total > len(buf) {
			return len(buf), ll.Ifindex, fmt.Errorf("read packet socket: %d-byte frame on ifindex %d: %w", total, ll.Ifindex, ErrTruncated)
		}
		return total, ll.Ifindex, nil
	}
}

// WriteTo sends frame (Ethernet header first) out of interface ifindex.
// It fails when the interface does not exist (ENXIO), is down (ENETDOWN),
// the frame is larger than its MTU allows (EMSGSIZE), or the Conn is
// closed (wraps os.ErrClosed).
func (c *Conn) WriteTo(frame []byte, ifindex int) error {
	var werr error
	err := c.rc.Write(func(fd uintptr) bool {
		werr = unix.Sendto(int(fd), frame, 0, &unix.SockaddrLinklayer{Protocol: c.proto, Ifindex: ifindex})
		return !errors.Is(werr, unix.EAGAIN)
	})
	if err == nil {
		err = werr
	}
	if err != nil {
		return c.wrap(fmt.Sprintf("write to ifindex %d", ifindex), err)
	}
	return nil
}

func (c *Conn) wrap(op string, err error) error {
	if c.closed.Load() && !errors.Is(err, os.ErrClosed) {
		return fmt.Errorf("packet socket %s: %w (%v)", op, os.ErrClosed, err)
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return err // as is, so os.IsTimeout holds
	}
	return fmt.Errorf("packet socket %s: %w", op, err)
}

// Close closes the socket and wakes a ReadFrom blocked on it. A second
// Close returns an error.
func (c *Conn) Close() error {
	c.closed.Store(true)
	return c.f.Close()
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
