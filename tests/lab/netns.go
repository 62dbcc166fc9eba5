package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"strings"
	"time"

	"github.com/vishvananda/netns"
)

// InNS runs fn on an OS thread switched into the named network namespace
// ("" runs fn in the current namespace). Sockets fn creates belong to that
// namespace for their whole life, so they may be used from any goroutine
// afterwards. fn must not start goroutines that create sockets.
func InNS(ns string, fn func() error) error {
	if ns == "" {
		return fn()
	}
	errc := make(chan error, 1)
	// A fresh goroutine, so that if restoring the namespace fails we can
	// exit it while still locked: the runtime then discards the thread
	// instead of reusing it in the wrong namespace.
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("get current namespace: %w", err)
			return
		}
		defer orig.Close()
		target, err := netns.GetFromName(ns)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open namespace %s: %w", ns, err)
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter namespace %s: %w", ns, err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			// Stay locked: the thread dies with this goroutine.
			errc <- errors.Join(ferr, fmt.Errorf("restore namespace: %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// DialTCP connects to addr from inside namespace ns.
func DialTCP(ns, addr string, timeout time.Duration) (net.Conn, error) {
	var conn net.Conn
	err := InNS(ns, func() error {
		// An address literal makes the dial a single synchronous attempt
		// on this thread (no resolver, no happy-eyeballs goroutine).
		c, err := net.DialTimeout("tcp", addr, timeout)
		conn = c
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("dial %s in %s: %w", addr, ns, err)
	}
	return conn, nil
}

// ListenTCP listens on addr inside namespace ns.
func ListenTCP(ns, addr string) (*net.TCPListener, error) {
	var ln net.Listener
	err := InNS(ns, func() error {
		l, err := net.Listen("tcp", addr)
		ln = l
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen on %s in %s: %w", addr, ns, err)
	}
	return ln.(*net.TCPListener), nil
}

// HTTPGet does a plain HTTP/1.0 GET of http://addr/path from inside
// namespace ns and returns the status code and body. It dials in-process
// rather than shelling out, so it needs neither curl nor wget. addr may be
// a link-local address with its zone ("[fe80::a9fe:a9fe%eth0]:80").
func HTTPGet(ns, addr, path string, timeout time.Duration) (int, string, error) {
	return HTTPGetWith(ns, addr, path, nil, timeout)
}

// HTTPGetWith is HTTPGet sending header too (as given: a hostile client
// may repeat or misspell a header).
func HTTPGetWith(ns, addr, path string, header http.Header, timeout time.Duration) (int, string, error) {
	conn, err := DialTCP(ns, addr, timeout)
	if err != nil {
		return 0, "", err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(timeout)); err != nil {
		return 0, "", fmt.Errorf("set deadline: %w", err)
	}
	host := addr
	if ap, err := netip.ParseAddrPort(addr); err == nil {
		// The zone is the client's business, not the server's (as curl).
		host = netip.AddrPortFrom(ap.Addr().WithZone(""), ap.Port()).String()
	}
	var req strings.Builder
	req.WriteString("GET " + path + " HTTP/1.0\r\nHost: " + host + "\r\nUser-Agent: calyx-lab\r\nConnection: close\r\n")
	for k, vs := range header {
		for _, v := range vs {
			req.WriteString(k + ": " + v + "\r\n")
		}
	}
	req.WriteString("\r\n")
	if _, err := io.WriteString(conn, req.String()); err != nil {
		return 0, "", fmt.Errorf("send GET %s: %w", path, err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return 0, "", fmt.Errorf("read response to GET %s: %w", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, string(body), fmt.Errorf("read body of GET %s: %w", path, err)
	}
	return resp.StatusCode, string(body), nil
}

// Transfer is the outcome of a TCP transfer.
type Transfer struct {
	// Sent and Received count payload bytes at each end.
	Sent, Received int64
	// Duration is from connect to the receiver seeing EOF.
	Duration time.Duration
}

// Gbps returns the receive rate in Gbit/s (for display, never for asserts).
func (t Transfer) Gbps() float64 {
	if t.Duration <= 0 {
		return 0
	}
	return float64(t.Received) * 8 / t.Duration.Seconds() / 1e9
}

// TCPTransfer sends n bytes over one TCP connection from namespace srcNS to
// dst:port, listening in dstNS. Both ends run in this process, so there is no
// race with a server starting up. It fails unless all n bytes arrive within
// timeout.
func (l *Lab) TCPTransfer(srcNS, dstNS string, dst netip.Addr, port int, n int64, timeout time.Duration) (Transfer, error) {
	ap := netip.AddrPortFrom(dst, uint16(port))
	return l.TCPTransferVia(srcNS, ap, dstNS, ap, n, timeout)
}

// TCPTransferVia is TCPTransfer where the sender dials dial and the receiver
// listens on listen (e.g. a floating IP and 0.0.0.0 with the same port, for
// a transfer through a NAT).
func (l *Lab) TCPTransferVia(srcNS string, dial netip.AddrPort, dstNS string, listen netip.AddrPort, n int64, timeout time.Duration) (Transfer, error) {
	addr := dial.String()
	l.logf("tcp transfer: %d bytes %s -> %s (listening on %s in %s)", n, srcNS, addr, listen, dstNS)
	ln, err := ListenTCP(dstNS, listen.String())
	if err != nil {
		return Transfer{}, err
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(l.ctx, timeout)
	defer cancel()
	deadline, _ := ctx.Deadline()
	if err := ln.SetDeadline(deadline); err != nil {
		return Transfer{}, fmt.Errorf("listener deadline: %w", err)
	}

	type recvResult struct {
		n   int64
		end time.Time
		err error
	}
	recvc := make(chan recvResult, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			recvc <- recvResult{err: fmt.Errorf("accept: %w", err)}
			return
		}
		defer c.Close()
		_ = c.SetDeadline(deadline)
		got, err := io.Copy(io.Discard, c)
		recvc <- recvResult{n: got, end: time.Now(), err: err}
	}()

	start := time.Now()
	conn, err := DialTCP(srcNS, addr, time.Until(deadline))
	if err != nil {
		return Transfer{}, err
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	_ = conn.SetDeadline(deadline)
	buf := make([]byte, 256<<10)
	var sent int64
	for sent < n {
		chunk := min(int64(len(buf)), n-sent)
		w, err := conn.Write(buf[:chunk])
		sent += int64(w)
		if err != nil {
			conn.Close()
			return Transfer{Sent: sent}, fmt.Errorf("send to %s after %d bytes: %w", addr, sent, err)
		}
	}
	if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
		conn.Close()
		return Transfer{Sent: sent}, fmt.Errorf("close write: %w", err)
	}
	r := <-recvc
	conn.Close()
	t := Transfer{Sent: sent, Received: r.n, Duration: r.end.Sub(start)}
	if r.err != nil {
		return t, fmt.Errorf("receive on %s after %d bytes: %w", addr, r.n, r.err)
	}
	if r.n != n {
		return t, fmt.Errorf("receive on %s: got %d bytes, want %d", addr, r.n, n)
	}
	return t, nil
}
