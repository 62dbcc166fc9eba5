package lab

// A SYN flood for the conntrack tests: TCP SYNs from spoofed, random
// sources written as fast as one thread can to an AF_PACKET socket in a lab
// namespace. It is in-process (InjectCount, for a handful of crafted frames,
// runs calyx-lab once per call and caps the count): each frame is patched
// from a template, its source address, source port and checksums changed.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"runtime"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// SpoofNet is where SYNFlood's spoofed sources come from by default:
// 198.18.0.0/15, the benchmarking range (RFC 2544), which no lab namespace
// uses or routes.
var SpoofNet = netip.MustParsePrefix("198.18.0.0/15")

// SYNFloodConfig is a flood of TCP SYNs.
type SYNFloodConfig struct {
	// NS and Iface: where the frames are written (as a neighbour on that
	// link sends them).
	NS, Iface string
	// Eth are the frames' MAC addresses (Dst: the next hop's).
	Eth Eth
	// Dst is the destination address and port of every SYN.
	Dst netip.AddrPort
	// Sources: each SYN's source address is random in it (default
	// SpoofNet), its source port random in 1024-65535.
	Sources netip.Prefix
	// Count is how many SYNs to write.
	Count int
	// Seed makes the sources reproducible (0: a fixed seed).
	Seed uint64
}

// FloodResult is what SYNFlood did.
type FloodResult struct {
	// Sent is the number of frames the kernel took.
	Sent int
	// Refused is the number of batches the kernel refused (ENOBUFS,
	// EAGAIN), written again.
	Refused int
	// Elapsed is how long the writing took.
	Elapsed time.Duration
}

// Rate is frames sent per second.
func (r FloodResult) Rate() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Sent) / r.Elapsed.Seconds()
}

// floodBatch is how many frames go to the kernel in one sendmmsg.
const floodBatch = 64

// SYNFlood writes c.Count SYNs, in batches of floodBatch by sendmmsg, to an
// AF_PACKET socket bound to c.Iface in c.NS (the qdisc bypassed), and
// returns how many the kernel took. It stops early, with what it sent,
// when stop is closed.
func SYNFlood(c SYNFloodConfig, stop <-chan struct{}) (res FloodResult, err error) {
	if c.Count <= 0 {
		return res, errors.New("syn flood: no count")
	}
	if !c.Dst.Addr().Is4() {
		return res, fmt.Errorf("syn flood: destination %s is not IPv4", c.Dst)
	}
	src := c.Sources
	if !src.IsValid() {
		src = SpoofNet
	}
	if !src.Addr().Is4() || src.Bits() > 32 {
		return res, fmt.Errorf("syn flood: sources %s: want an IPv4 prefix", src)
	}
	src = src.Masked()
	var fd, ifindex int
	err = InNS(c.NS, func() error {
		ifi, err := net.InterfaceByName(c.Iface)
		if err != nil {
			return err
		}
		ifindex = ifi.Index
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		return err
	})
	if err != nil {
		return res, fmt.Errorf("syn flood: socket on %s in %s: %w", c.Iface, c.NS, err)
	}
	defer unix.Close(fd)
	sa := &unix.SockaddrLinklayer{Ifindex: ifindex}
	if err := unix.Bind(fd, sa); err != nil {
		return res, fmt.Errorf("syn flood: bind to %s: %w", c.Iface, err)
	}
	// Straight to the driver: the flood is the test, not the qdisc.
	_ = unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_QDISC_BYPASS, 1)

	tmpl := TCPFrame(c.Eth, IPv4Header{Src: src.Addr(), Dst: c.Dst.Addr(), ID: 1}, 1024, c.Dst.Port(), TCPSyn, 0, 0)
	const ipOff, tcpOff = 14, 14 + 20
	if len(tmpl) < tcpOff+20 {
		return res, fmt.Errorf("syn flood: template frame of %d bytes, want %d", len(tmpl), tcpOff+20)
	}
	// 54 bytes, without the padding to Ethernet's minimum the builder
	// adds (the veth takes shorter frames).
	tmpl = tmpl[:tcpOff+20]
	seed := c.Seed
	if seed == 0 {
		seed = 0xca17
	}
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	base := binary.BigEndian.Uint32(src.Addr().AsSlice())
	hostBits := 32 - src.Bits()

	frames := make([][]byte, floodBatch)
	iovs := make([]unix.Iovec, floodBatch)
	msgs := make([]mmsghdr, floodBatch)
	for i := range frames {
		frames[i] = append([]byte(nil), tmpl...)
		iovs[i].Base = &frames[i][0]
		iovs[i].SetLen(len(frames[i]))
		msgs[i].hdr.Iov = &iovs[i]
		msgs[i].hdr.SetIovlen(1)
	}
	// fill patches frame f: a new source, port, sequence number and IP id.
	fill := func(f []byte, n int) {
		var a uint32
		if hostBits > 0 {
			a = base | rng.Uint32()>>(32-hostBits)
		} else {
			a = base
		}
		ip, tcp := f[ipOff:tcpOff], f[tcpOff:tcpOff+20]
		binary.BigEndian.PutUint16(ip[4:], uint16(n))
		binary.BigEndian.PutUint32(ip[12:], a)
		ip[10], ip[11] = 0, 0
		binary.BigEndian.PutUint16(ip[10:], csumFold(csumAdd(0, ip)))
		binary.BigEndian.PutUint16(tcp[0:], uint16(1024+rng.IntN(65536-1024)))
		binary.BigEndian.PutUint32(tcp[4:], rng.Uint32())
		tcp[16], tcp[17] = 0, 0
		// Pseudo-header: addresses, protocol, TCP length.
		sum := csumAdd(0, ip[12:20])
		sum += uint32(unix.IPPROTO_TCP) + uint32(len(tcp))
		binary.BigEndian.PutUint16(tcp[16:], csumFold(csumAdd(sum, tcp)))
	}

	start := time.Now()
	defer func() { res.Elapsed = time.Since(start) }()
	for res.Sent < c.Count {
		select {
		case <-stop:
			return res, nil
		default:
		}
		n := min(floodBatch, c.Count-res.Sent)
		for i := range n {
			fill(frames[i], res.Sent+i)
		}
		done, err := sendmmsg(fd, msgs[:n])
		switch {
		case err == unix.ENOBUFS || err == unix.EAGAIN || err == unix.EINTR:
			res.Refused++ // written again with new sources
			runtime.Gosched()
		case err != nil:
			return res, fmt.Errorf("syn flood: sendmmsg on %s: %w", c.Iface, err)
		default:
			res.Sent += done
		}
	}
	return res, nil
}

// mmsghdr is struct mmsghdr.
type mmsghdr struct {
	hdr unix.Msghdr
	len uint32
	_   [4]byte
}

func sendmmsg(fd int, msgs []mmsghdr) (int, error) {
	n, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&msgs[0])), uintptr(len(msgs)), 0, 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

// csumAdd adds b, as big-endian 16-bit words, to sum.
func csumAdd(sum uint32, b []byte) uint32 {
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	return sum
}

// csumFold folds sum to 16 bits and complements it.
func csumFold(sum uint32) uint16 {
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}
