// Package metadataproxy serves the metadata service to instances over IPv6,
// as OpenStack's neutron does with haproxy: a listener on
// [fe80::a9fe:a9fe]:80 on each local endpoint interface forwards requests to
// the metadata service (nova's metadata API, Config.metadataAddress) with
// X-Forwarded-For set to the instance the interface belongs to.
//
// IPv4 instances reach the service by a DNAT in BPF, which keeps their
// source address: that is how the service tells them apart. IPv6 cannot do
// the same (Linux drops a packet to ::1 that arrives on another interface),
// and a request from a link-local address says nothing of who sent it. The
// interface a connection came in on does: the proxy vouches for that
// interface's endpoint, and for nothing a client says about itself.
package metadataproxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/netutil"
	"golang.org/x/sys/unix"
)

// Limits on what one instance may ask of the host: each interface has its
// own listener, so an instance that reaches them ties up its own only.
const (
	// MaxBody is the largest request body forwarded (nova takes a POSTed
	// password of a few hundred bytes, nothing larger).
	MaxBody = 64 << 10
	// MaxConns is the connections one interface may hold open at once;
	// more wait to be accepted.
	MaxConns = 32
	// maxHeaderBytes bounds a request's header.
	maxHeaderBytes = 16 << 10
	// A client must send its header within readHeaderTimeout and the
	// whole request within readTimeout; an idle keep-alive connection is
	// closed after idleTimeout.
	readHeaderTimeout = 10 * time.Second
	readTimeout       = 30 * time.Second
	writeTimeout      = 60 * time.Second
	idleTimeout       = 60 * time.Second
	// The metadata service must accept within dialTimeout and answer
	// within responseTimeout.
	dialTimeout     = 5 * time.Second
	responseTimeout = 30 * time.Second
)

// Endpoint is a local endpoint interface the proxy listens on, and the
// instance it vouches for there.
type Endpoint struct {
	// Name is the WorkloadEndpoint's name (for the log).
	Name    string
	Ifname  string
	Ifindex int
	// Addr is the address X-Forwarded-For gives the metadata service for
	// requests on this interface (ForwardedAddr).
	Addr netip.Addr
}

// ForwardedAddr is the address the proxy names an endpoint by: its first
// IPv4 address, the one nova knows the instance by, else its first IPv6
// address; zero when it has none.
func ForwardedAddr(nets []netip.Prefix) netip.Addr {
	var v6 netip.Addr
	for _, p := range nets {
		a := p.Addr().Unmap()
		if a.Is4() {
			return a
		}
		if !v6.IsValid() {
			v6 = a
		}
	}
	return v6
}

// Options configure a Proxy.
type Options struct {
	// Listen is the address and port listened on, on every endpoint
	// interface (fe80::a9fe:a9fe port 80). A link-local address is
	// scoped to each interface; it need not be assigned (a local route
	// makes the host accept it).
	Listen netip.AddrPort
	Logger *slog.Logger
}

// Proxy is the metadata proxy of every local endpoint interface.
type Proxy struct {
	opts     Options
	log      *slog.Logger
	rp       *httputil.ReverseProxy
	upstream atomic.Pointer[url.URL]
	m        *metrics

	mu        sync.Mutex
	closed    bool
	listeners map[int]*listener // by ifindex
	// failed is the last listen error logged per ifindex, so that an
	// interface failing at every sync is logged once per change.
	failed map[int]string
}

// listener serves one endpoint interface.
type listener struct {
	ifname string
	ep     atomic.Pointer[Endpoint]
	addr   net.Addr
	srv    *http.Server
	done   chan struct{}
}

// ctxKey carries the endpoint a request came in for to Rewrite.
type ctxKey struct{}

// New returns a proxy with no listeners; Update opens them.
func New(opts Options) *Proxy {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	p := &Proxy{opts: opts, log: opts.Logger, m: newMetrics(),
		listeners: make(map[int]*listener), failed: make(map[int]string)}
	p.rp = &httputil.ReverseProxy{
		Rewrite: p.rewrite,
		Transport: &http.Transport{
			// Never a proxy from the environment: the service is local.
			Proxy:                 nil,
			DialContext:           (&net.Dialer{Timeout: dialTimeout}).DialContext,
			ResponseHeaderTimeout: responseTimeout,
			MaxIdleConnsPerHost:   8,
			IdleConnTimeout:       90 * time.Second,
		},
		ModifyResponse: func(*http.Response) error {
			p.m.requests.WithLabelValues(resultForwarded).Inc()
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			p.m.requests.WithLabelValues(resultUpstreamError).Inc()
			p.log.Warn("metadata service unreachable", "endpoint", endpointOf(r).Name, "err", err)
			w.WriteHeader(http.StatusBadGateway)
		},
		ErrorLog: slog.NewLogLogger(opts.Logger.Handler(), slog.LevelDebug),
	}
	return p
}

// Update makes the proxy forward to upstream and listen on exactly the
// interfaces of eps (a zero upstream: none). A listener whose interface is
// unchanged is kept (its endpoint's address may change under it); one whose
// interface went, or whose ifindex now names another interface, is closed.
// An interface that cannot be listened on is logged and counted and tried
// again at the next Update; the others are served regardless.
func (p *Proxy) Update(upstream netip.AddrPort, eps []Endpoint) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	want := make(map[int]Endpoint, len(eps))
	if upstream.IsValid() {
		p.upstream.Store(&url.URL{Scheme: "http", Host: upstream.String()})
		for _, ep := range eps {
			if ep.Ifindex > 0 && ep.Addr.IsValid() {
				want[ep.Ifindex] = ep
			}
		}
	}
	// Stale ones first: a new interface of the same name may need the
	// address they hold.
	for idx, l := range p.listeners {
		if ep, ok := want[idx]; !ok || ep.Ifname != l.ifname {
			l.close()
			delete(p.listeners, idx)
			p.log.Info("metadata proxy closed", "interface", l.ifname, "ifindex", idx)
		}
	}
	for idx := range p.failed {
		if _, ok := want[idx]; !ok {
			delete(p.failed, idx)
		}
	}
	for idx, ep := range want {
		if l, ok := p.listeners[idx]; ok {
			l.ep.Store(&ep)
			continue
		}
		l, err := p.listen(ep)
		if err != nil {
			p.m.listenErrors.Inc()
			if p.failed[idx] != err.Error() {
				p.failed[idx] = err.Error()
				p.log.Warn("metadata proxy cannot listen on an endpoint interface; retrying at the next sync",
					"endpoint", ep.Name, "interface", ep.Ifname, "err", err)
			}
			continue
		}
		delete(p.failed, idx)
		p.listeners[idx] = l
		p.log.Info("metadata proxy listening", "endpoint", ep.Name, "interface", ep.Ifname, "address", l.addr, "forwardedFor", ep.Addr)
	}
	p.m.listeners.Set(float64(len(p.listeners)))
}

// Close closes every listener and their connections; later Updates do
// nothing.
func (p *Proxy) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for idx, l := range p.listeners {
		l.close()
		delete(p.listeners, idx)
	}
	p.m.listeners.Set(0)
}

// listen opens ep's listener and starts serving it.
func (p *Proxy) listen(ep Endpoint) (*listener, error) {
	a := p.opts.Listen.Addr()
	network := "tcp4"
	if a.Is6() {
		network = "tcp6"
	}
	if a.Is6() && a.IsLinkLocalUnicast() {
		// By index, not name: the interface this endpoint was computed
		// for, not one renamed into its place since.
		a = a.WithZone(strconv.Itoa(ep.Ifindex))
	}
	addr := netip.AddrPortFrom(a, p.opts.Listen.Port()).String()
	lc := net.ListenConfig{Control: freebind}
	ln, err := lc.Listen(context.Background(), network, addr)
	if err != nil {
		return nil, fmt.Errorf("metadata proxy on %s: %w", ep.Ifname, err)
	}
	l := &listener{ifname: ep.Ifname, addr: ln.Addr(), done: make(chan struct{})}
	l.ep.Store(&ep)
	l.srv = &http.Server{
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { p.serve(w, r, l) }),
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(p.log.Handler(), slog.LevelDebug),
	}
	go func() {
		defer close(l.done)
		_ = l.srv.Serve(netutil.LimitListener(ln, MaxConns))
	}()
	return l, nil
}

// freebind lets the listener bind the metadata address, which is on no
// interface: the host answers to it by a local route only.
func freebind(network, _ string, c syscall.RawConn) error {
	level, opt := unix.SOL_IP, unix.IP_FREEBIND
	if network == "tcp6" {
		level, opt = unix.SOL_IPV6, unix.IPV6_FREEBIND
	}
	var serr error
	if err := c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), level, opt, 1) }); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("set freebind: %w", serr)
	}
	return nil
}

func (l *listener) close() {
	_ = l.srv.Close()
	<-l.done
}

// serve checks one request of l's instance and hands it to the reverse
// proxy, with the endpoint it is vouched for.
func (p *Proxy) serve(w http.ResponseWriter, r *http.Request, l *listener) {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodPost:
	default:
		// What nova's metadata API answers; anything else (CONNECT,
		// say) has no business here.
		p.m.requests.WithLabelValues(resultRefused).Inc()
		w.Header().Set("Allow", "GET, HEAD, POST")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if r.ContentLength > MaxBody {
		p.m.requests.WithLabelValues(resultTooLarge).Inc()
		http.Error(w, "request body too large", http.StatusRequestEntityTooLarge)
		return
	}
	// Read whole before anything is sent on: a body over the limit is
	// refused here, not cut off half-way to the service.
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBody))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			p.m.requests.WithLabelValues(resultTooLarge).Inc()
			http.Error(w, "request body too large", http.StatusRequestEntityTooLarge)
			return
		}
		p.m.requests.WithLabelValues(resultRefused).Inc()
		http.Error(w, "cannot read the request body", http.StatusBadRequest)
		return
	}
	r.Body, r.ContentLength, r.TransferEncoding = http.NoBody, 0, nil
	if len(body) > 0 {
		r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
	}
	// No protocol switch: the connection would be a tunnel to the
	// service past every check here.
	r.Header.Del("Upgrade")
	p.rp.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, l.ep.Load())))
}

// rewrite sends the request to the metadata service, saying which instance
// it comes from and nothing the client said about that.
func (p *Proxy) rewrite(pr *httputil.ProxyRequest) {
	pr.SetURL(p.upstream.Load())
	for k := range pr.Out.Header {
		if identityHeader(k) {
			pr.Out.Header.Del(k)
		}
	}
	pr.Out.Header.Set("X-Forwarded-For", endpointOf(pr.In).Addr.String())
}

// identityHeader says whether a request header tells the metadata service
// (or a proxy before it) who is asking: only the proxy may set those. Names
// are compared as a WSGI server sees them (nova is one), which takes
// X_Forwarded_For for X-Forwarded-For.
func identityHeader(name string) bool {
	n := strings.ToLower(strings.ReplaceAll(name, "_", "-"))
	switch n {
	case "forwarded", "x-real-ip", "x-tenant-id", "x-client-ip", "client-ip", "true-client-ip":
		return true
	}
	for _, prefix := range []string{"x-forwarded-", "x-instance-id", "x-neutron-"} {
		if strings.HasPrefix(n, prefix) {
			return true
		}
	}
	return false
}

// endpointOf is the endpoint serve vouched for r's connection.
func endpointOf(r *http.Request) *Endpoint {
	if ep, ok := r.Context().Value(ctxKey{}).(*Endpoint); ok {
		return ep
	}
	return &Endpoint{}
}
