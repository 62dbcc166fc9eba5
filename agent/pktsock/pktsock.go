// Package pktsock is one AF_PACKET socket for one ethertype on every
// interface of the namespace: the subnet services read requests from every
// endpoint interface through it and write replies to one interface by
// ifindex, whole Ethernet frames both ways, so one socket serves any number
// of interfaces and a request from 0.0.0.0 is seen as it came.
//
// It sees a frame after the TC ingress programs (ethertype sockets hang off
// the same hook as the IP stack, unlike ETH_P_ALL taps), so only what calyx
// passed to the host; frames it writes go through the interface's TC egress
// hook. Requires CAP_NET_RAW.
package pktsock

import (
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// Conn is the socket.
type Conn struct {
	fd    int
	proto uint16
}

// Listen opens a socket for ethertype (unix.ETH_P_IP, unix.ETH_P_IPV6) on
// every interface, with filter (classic BPF over the whole frame) deciding
// which frames it takes; nil takes every frame of the ethertype.
func Listen(ethertype uint16, filter []bpf.Instruction) (*Conn, error) {
	proto := htons(ethertype)
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(proto))
	if err != nil {
		return nil, fmt.Errorf("packet socket for ethertype %#04x: %w", ethertype, err)
	}
	c := &Conn{fd: fd, proto: proto}
	if len(filter) > 0 {
		raw, err := bpf.Assemble(filter)
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("assemble packet filter: %w", err)
		}
		prog := unix.SockFprog{Len: uint16(len(raw)), Filter: (*unix.SockFilter)(rawPtr(raw))}
		if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &prog); err != nil {
			c.Close()
			return nil, fmt.Errorf("attach packet filter: %w", err)
		}
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: proto}); err != nil {
		c.Close()
		return nil, fmt.Errorf("bind packet socket: %w", err)
	}
	return c, nil
}

// SetReadDeadline bounds the next ReadFrom, so a reader can notice that
// it should stop; zero waits forever.
func (c *Conn) SetReadDeadline(t time.Time) error {
	var tv unix.Timeval
	if !t.IsZero() {
		d := time.Until(t)
		if d < time.Millisecond {
			d = time.Millisecond
		}
		tv = unix.NsecToTimeval(d.Nanoseconds())
	}
	return unix.SetsockoptTimeval(c.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
}

// ReadFrom reads one frame (Ethernet header first) into buf and says
// which interface it came in on. A frame the host itself sent is skipped.
// An expired deadline returns an error for which os.IsTimeout is true.
func (c *Conn) ReadFrom(buf []byte) (n, ifindex int, err error) {
	for {
		n, from, err := unix.Recvfrom(c.fd, buf, 0)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EWOULDBLOCK) {
				return 0, 0, os.ErrDeadlineExceeded
			}
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return 0, 0, fmt.Errorf("read packet socket: %w", err)
		}
		ll, ok := from.(*unix.SockaddrLinklayer)
		if !ok {
			continue
		}
		if ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		return n, ll.Ifindex, nil
	}
}

// WriteTo sends frame (Ethernet header first) out of interface ifindex.
func (c *Conn) WriteTo(frame []byte, ifindex int) error {
	if err := unix.Sendto(c.fd, frame, 0, &unix.SockaddrLinklayer{Protocol: c.proto, Ifindex: ifindex}); err != nil {
		return fmt.Errorf("write to ifindex %d: %w", ifindex, err)
	}
	return nil
}

// Close closes the socket.
func (c *Conn) Close() error { return unix.Close(c.fd) }

func htons(v uint16) uint16 { return v<<8 | v>>8 }
