package lab

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// EchoServer is an in-process TCP and UDP echo server listening on one
// address and port in a namespace. Every reply says who answered and which
// peer address the server saw, so tests can prove what a NAT did:
//
//	<server name> <peer ip:port> <what was received>
//
// TCP answers each line received with one such line, for as long as the
// connection stays open; UDP answers each datagram with one datagram. Every
// connection and datagram is also recorded (Seen). The lab closes servers it
// still has on Close.
type EchoServer struct {
	// Name is what every reply starts with (e.g. the workload's name).
	Name string
	// NS is the namespace the sockets live in.
	NS string
	// Addr is the address and port listened on (TCP and UDP).
	Addr netip.AddrPort

	lab   *Lab
	tcp   *net.TCPListener
	udp   *net.UDPConn
	wg    sync.WaitGroup
	mu    sync.Mutex
	seen  []EchoPeer
	conns map[net.Conn]struct{}
	done  bool
}

// EchoPeer is one connection or datagram an EchoServer received.
type EchoPeer struct {
	// Proto is "tcp" or "udp".
	Proto string
	// Peer is the source address and port the server saw.
	Peer netip.AddrPort
	// Local is the address the packet was addressed to, as the server's
	// socket saw it (for TCP the accepted connection's local address; for
	// UDP the listening address).
	Local netip.AddrPort
}

// StartEcho starts an echo server named name on addr ("ip:port" or
// "[ip6]:port"; 0.0.0.0 or [::] for every address of that family in the
// namespace) in namespace ns, for TCP and UDP.
func (l *Lab) StartEcho(ns, name, addr string) (*EchoServer, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, fmt.Errorf("echo server %s: invalid address %q: %w", name, addr, err)
	}
	fam := family(ap.Addr())
	s := &EchoServer{Name: name, NS: ns, Addr: ap, lab: l, conns: map[net.Conn]struct{}{}}
	err = InNS(ns, func() error {
		t, err := net.ListenTCP("tcp"+fam, net.TCPAddrFromAddrPort(ap))
		if err != nil {
			return err
		}
		u, err := net.ListenUDP("udp"+fam, net.UDPAddrFromAddrPort(ap))
		if err != nil {
			t.Close()
			return err
		}
		s.tcp, s.udp = t, u
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("echo server %s on %s in %s: %w", name, addr, ns, err)
	}
	l.logf("echo server %s: tcp+udp %s in %s", name, ap, ns)
	l.trackCloser(s)
	s.wg.Add(2)
	go s.serveTCP()
	go s.serveUDP()
	return s, nil
}

func (s *EchoServer) record(p EchoPeer) {
	s.mu.Lock()
	s.seen = append(s.seen, p)
	s.mu.Unlock()
}

func (s *EchoServer) serveTCP() {
	defer s.wg.Done()
	for {
		c, err := s.tcp.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.done {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		peer := c.RemoteAddr().(*net.TCPAddr).AddrPort()
		local := c.LocalAddr().(*net.TCPAddr).AddrPort()
		s.record(EchoPeer{Proto: "tcp", Peer: unmap(peer), Local: unmap(local)})
		go func() {
			defer s.wg.Done()
			defer func() {
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
				c.Close()
			}()
			r := bufio.NewReader(c)
			for {
				line, err := r.ReadString('\n')
				if line = strings.TrimRight(line, "\r\n"); line != "" {
					if _, werr := fmt.Fprintf(c, "%s %s %s\n", s.Name, unmap(peer), line); werr != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		}()
	}
}

func (s *EchoServer) serveUDP() {
	defer s.wg.Done()
	buf := make([]byte, 64<<10)
	for {
		n, from, err := s.udp.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		from = unmap(from)
		s.record(EchoPeer{Proto: "udp", Peer: from, Local: s.Addr})
		reply := fmt.Sprintf("%s %s %s", s.Name, from, strings.TrimRight(string(buf[:n]), "\r\n"))
		_, _ = s.udp.WriteToUDPAddrPort([]byte(reply), from)
	}
}

// Seen returns every connection and datagram received so far.
func (s *EchoServer) Seen() []EchoPeer {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]EchoPeer(nil), s.seen...)
}

// SeenSince returns what was received after the first n records (n from an
// earlier len(Seen())).
func (s *EchoServer) SeenSince(n int) []EchoPeer {
	all := s.Seen()
	if n >= len(all) {
		return nil
	}
	return all[n:]
}

// Close stops the server and closes every connection it has open.
func (s *EchoServer) Close() error {
	s.mu.Lock()
	if s.done {
		s.mu.Unlock()
		return nil
	}
	s.done = true
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	err := errors.Join(s.tcp.Close(), s.udp.Close())
	s.wg.Wait()
	s.lab.forgetCloser(s)
	return err
}

// EchoReply is an EchoServer's answer as a client got it.
type EchoReply struct {
	// Server is the name of the server that answered.
	Server string
	// Peer is the client address the server saw (after any NAT).
	Peer netip.AddrPort
	// From is the address the reply came from, as the client saw it: for
	// UDP the reply datagram's source, for TCP the connection's remote end.
	From netip.AddrPort
	// Local is the client's own address and port.
	Local netip.AddrPort
	// Data is what the server echoed.
	Data string
}

// parseEchoReply reads "<name> <peer> <data>".
func parseEchoReply(s string) (EchoReply, error) {
	f := strings.SplitN(strings.TrimRight(s, "\r\n"), " ", 3)
	if len(f) < 2 {
		return EchoReply{}, fmt.Errorf("malformed echo reply %q", s)
	}
	peer, err := netip.ParseAddrPort(f[1])
	if err != nil {
		return EchoReply{}, fmt.Errorf("malformed echo reply %q: %w", s, err)
	}
	r := EchoReply{Server: f[0], Peer: peer}
	if len(f) == 3 {
		r.Data = f[2]
	}
	return r, nil
}

// EchoConn is a TCP connection to an EchoServer that stays open across
// exchanges (to show an established flow surviving something).
type EchoConn struct {
	conn net.Conn
	r    *bufio.Reader
}

// DialEcho connects to an echo server at addr from namespace ns.
func DialEcho(ns, addr string, timeout time.Duration) (*EchoConn, error) {
	c, err := DialTCP(ns, addr, timeout)
	if err != nil {
		return nil, err
	}
	return &EchoConn{conn: c, r: bufio.NewReader(c)}, nil
}

// Exchange sends one line and reads the server's answer to it.
func (c *EchoConn) Exchange(line string, timeout time.Duration) (EchoReply, error) {
	if strings.ContainsAny(line, "\r\n") {
		return EchoReply{}, fmt.Errorf("echo line %q holds a line break", line)
	}
	if err := c.conn.SetDeadline(time.Now().Add(timeout)); err != nil {
		return EchoReply{}, err
	}
	if _, err := io.WriteString(c.conn, line+"\n"); err != nil {
		return EchoReply{}, fmt.Errorf("send to %s: %w", c.conn.RemoteAddr(), err)
	}
	s, err := c.r.ReadString('\n')
	if err != nil {
		return EchoReply{}, fmt.Errorf("read from %s: %w", c.conn.RemoteAddr(), err)
	}
	r, err := parseEchoReply(s)
	if err != nil {
		return r, err
	}
	r.From = unmap(c.conn.RemoteAddr().(*net.TCPAddr).AddrPort())
	r.Local = unmap(c.conn.LocalAddr().(*net.TCPAddr).AddrPort())
	if r.Data != line {
		return r, fmt.Errorf("echo from %s: got %q back, sent %q", r.From, r.Data, line)
	}
	return r, nil
}

// Local returns the connection's local address.
func (c *EchoConn) Local() netip.AddrPort {
	return unmap(c.conn.LocalAddr().(*net.TCPAddr).AddrPort())
}

// Close closes the connection.
func (c *EchoConn) Close() error { return c.conn.Close() }

// TCPEcho opens a TCP connection from ns to the echo server at addr,
// exchanges one line and closes it.
func TCPEcho(ns, addr string, timeout time.Duration) (EchoReply, error) {
	c, err := DialEcho(ns, addr, timeout)
	if err != nil {
		return EchoReply{}, err
	}
	defer c.Close()
	return c.Exchange("hello over tcp", timeout)
}

// UDPEcho sends a datagram from ns to the echo server at addr and waits for
// the answer, resending up to three times within timeout (the first may be
// lost to neighbour resolution). The socket is not connected, so a reply
// from any source is read, and From says which one it was.
func UDPEcho(ns, addr string, timeout time.Duration) (EchoReply, error) {
	return UDPEchoPayload(ns, addr, "hello over udp", timeout)
}

// UDPEchoPayload is UDPEcho sending msg (without line breaks; any size a
// datagram takes, so that it leaves fragmented when larger than the MTU)
// and requiring the echo to carry it back unchanged.
func UDPEchoPayload(ns, addr, msg string, timeout time.Duration) (EchoReply, error) {
	if strings.ContainsAny(msg, "\r\n") {
		return EchoReply{}, fmt.Errorf("udp echo: payload holds a line break")
	}
	dst, err := netip.ParseAddrPort(addr)
	if err != nil {
		return EchoReply{}, fmt.Errorf("udp echo: invalid address %q: %w", addr, err)
	}
	var conn *net.UDPConn
	if err := InNS(ns, func() error {
		c, err := net.ListenUDP("udp"+family(dst.Addr()), &net.UDPAddr{})
		conn = c
		return err
	}); err != nil {
		return EchoReply{}, fmt.Errorf("udp echo from %s: %w", ns, err)
	}
	defer conn.Close()
	deadline := time.Now().Add(timeout)
	per := timeout / 3
	buf := make([]byte, 64<<10)
	var last error
	for time.Now().Before(deadline) {
		if _, err := conn.WriteToUDPAddrPort([]byte(msg), dst); err != nil {
			return EchoReply{}, fmt.Errorf("udp echo from %s to %s: %w", ns, dst, err)
		}
		rd := time.Now().Add(per)
		if rd.After(deadline) {
			rd = deadline
		}
		_ = conn.SetReadDeadline(rd)
		n, from, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			last = err
			continue
		}
		r, err := parseEchoReply(string(buf[:n]))
		if err != nil {
			return r, err
		}
		r.From = unmap(from)
		r.Local = unmap(conn.LocalAddr().(*net.UDPAddr).AddrPort())
		if r.Data != msg {
			return r, fmt.Errorf("udp echo from %s: got %d bytes back (%.40q...), sent %d (%.40q...)", r.From, len(r.Data), r.Data, len(msg), msg)
		}
		return r, nil
	}
	return EchoReply{}, fmt.Errorf("udp echo from %s to %s: no reply within %s: %w", ns, dst, timeout, last)
}

// unmap turns an IPv4-mapped IPv6 address back into IPv4.
func unmap(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// HTTPServer is an in-process HTTP server in a namespace that answers every
// request with 200 and "<name> <peer ip:port> <path>", followed by
// " forwarded-for=<X-Forwarded-For>" when the request has that header, and
// records each request (e.g. to stand for a host's metadata service, which
// knows an instance proxied to it by that header).
type HTTPServer struct {
	// Name starts every answer.
	Name string
	// NS is the namespace and Addr the address listened on.
	NS   string
	Addr netip.AddrPort

	lab  *Lab
	srv  *http.Server
	done chan struct{}
	mu   sync.Mutex
	reqs []HTTPRequest
}

// HTTPRequest is one request an HTTPServer answered.
type HTTPRequest struct {
	// Peer is the client address the server saw.
	Peer netip.AddrPort
	// Host is the request's Host header (the address the client asked for).
	Host string
	// Path is the request path.
	Path string
	// ForwardedFor is every X-Forwarded-For value the request had.
	ForwardedFor []string
}

// StartHTTP starts an HTTPServer named name on addr in namespace ns.
func (l *Lab) StartHTTP(ns, name, addr string) (*HTTPServer, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, fmt.Errorf("http server %s: invalid address %q: %w", name, addr, err)
	}
	ln, err := ListenTCP(ns, addr)
	if err != nil {
		return nil, fmt.Errorf("http server %s: %w", name, err)
	}
	s := &HTTPServer{Name: name, NS: ns, Addr: ap, lab: l, done: make(chan struct{})}
	s.srv = &http.Server{
		ReadHeaderTimeout: 5 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			peer, _ := netip.ParseAddrPort(r.RemoteAddr)
			peer = unmap(peer)
			s.mu.Lock()
			xff := r.Header.Values("X-Forwarded-For")
			s.reqs = append(s.reqs, HTTPRequest{Peer: peer, Host: r.Host, Path: r.URL.Path, ForwardedFor: xff})
			s.mu.Unlock()
			forwarded := ""
			if len(xff) > 0 {
				forwarded = " forwarded-for=" + strings.Join(xff, ",")
			}
			fmt.Fprintf(w, "%s %s %s%s\n", s.Name, peer, r.URL.Path, forwarded)
		}),
	}
	l.logf("http server %s: %s in %s", name, ap, ns)
	l.trackCloser(s)
	go func() {
		defer close(s.done)
		_ = s.srv.Serve(ln)
	}()
	return s, nil
}

// Requests returns the requests answered so far.
func (s *HTTPServer) Requests() []HTTPRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]HTTPRequest(nil), s.reqs...)
}

// Close stops the server and its connections.
func (s *HTTPServer) Close() error {
	err := s.srv.Close()
	<-s.done
	s.lab.forgetCloser(s)
	return err
}

// family is "4" or "6": the suffix of a's family's network names.
func family(a netip.Addr) string {
	if a.Is4() || a.Is4In6() {
		return "4"
	}
	return "6"
}
