package metadataproxy

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestForwardedAddr(t *testing.T) {
	for _, tc := range []struct {
		nets []string
		want string
	}{
		{[]string{"10.65.0.2/32"}, "10.65.0.2"},
		// The IPv4 address, the one nova knows, wherever it is listed.
		{[]string{"fd00:65::2/128", "10.65.0.2/32", "10.65.0.3/32"}, "10.65.0.2"},
		{[]string{"fd00:65::2/128", "fd00:65::3/128"}, "fd00:65::2"},
		{[]string{"::ffff:10.65.0.9/128"}, "10.65.0.9"},
		{nil, "invalid IP"},
	} {
		var nets []netip.Prefix
		for _, n := range tc.nets {
			nets = append(nets, netip.MustParsePrefix(n))
		}
		if got := ForwardedAddr(nets).String(); got != tc.want {
			t.Errorf("ForwardedAddr(%v) = %s, want %s", tc.nets, got, tc.want)
		}
	}
}

// upstream is a stand-in metadata service that records what reaches it.
type upstream struct {
	srv  *httptest.Server
	mu   sync.Mutex
	reqs []seen
}

type seen struct {
	header http.Header
	body   string
	path   string
}

func newUpstream(t *testing.T) *upstream {
	u := &upstream{}
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		u.mu.Lock()
		u.reqs = append(u.reqs, seen{header: r.Header.Clone(), body: string(b), path: r.URL.Path})
		u.mu.Unlock()
		io.WriteString(w, "for "+r.Header.Get("X-Forwarded-For"))
	}))
	t.Cleanup(u.srv.Close)
	return u
}

func (u *upstream) addr() netip.AddrPort {
	return netip.MustParseAddrPort(u.srv.Listener.Addr().String())
}

func (u *upstream) seen() []seen {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.reqs)
}

// newProxy is a proxy on 127.0.0.1 (a port per listener): what is tested
// here does not depend on the link-local address, which needs a local
// route to be reached.
func newProxy(t *testing.T) *Proxy {
	p := New(Options{Listen: netip.MustParseAddrPort("127.0.0.1:0"), Logger: quiet})
	t.Cleanup(p.Close)
	return p
}

// listenAddr is where ifindex's listener is, "" when there is none.
func listenAddr(p *Proxy, ifindex int) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if l, ok := p.listeners[ifindex]; ok {
		return l.addr.String()
	}
	return ""
}

var quiet = slog.New(slog.DiscardHandler)

var client = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

func do(t *testing.T, method, addr, path string, body io.Reader, header http.Header) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+addr+path, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

var (
	w1 = Endpoint{Name: "w1", Ifname: "tap1", Ifindex: 11, Addr: netip.MustParseAddr("10.65.0.2")}
	w2 = Endpoint{Name: "w2", Ifname: "tap2", Ifindex: 12, Addr: netip.MustParseAddr("fd00:65::3")}
)

// TestIdentityHeadersReplaced: whatever a client says of who it is, the
// metadata service hears only the proxy: X-Forwarded-For is the
// interface's endpoint's address, once, and no other identity header
// passes (spelt with underscores either, which a WSGI server reads alike).
func TestIdentityHeadersReplaced(t *testing.T) {
	u := newUpstream(t)
	p := newProxy(t)
	p.Update(u.addr(), []Endpoint{w1})
	addr := listenAddr(p, w1.Ifindex)
	if addr == "" {
		t.Fatal("no listener for w1")
	}
	hostile := http.Header{
		"X-Forwarded-For":         {"10.65.0.99", "10.65.0.98"},
		"X_forwarded_for":         {"10.65.0.97"},
		"Forwarded":               {"for=10.65.0.99"},
		"X-Real-Ip":               {"10.65.0.99"},
		"X-Instance-Id":           {"someone-else"},
		"X-Instance-Id-Signature": {"forged"},
		"X-Tenant-Id":             {"other-tenant"},
		"X-Forwarded-Host":        {"evil"},
		"X-Neutron-Network-Id":    {"other-net"},
		"Connection":              {"X-Forwarded-For"},
		"Accept":                  {"text/plain"},
	}
	code, body := do(t, http.MethodGet, addr, "/latest/meta-data/", nil, hostile)
	if code != http.StatusOK || body != "for 10.65.0.2" {
		t.Fatalf("GET = %d %q, want 200 %q", code, body, "for 10.65.0.2")
	}
	reqs := u.seen()
	if len(reqs) != 1 {
		t.Fatalf("upstream saw %d requests, want 1", len(reqs))
	}
	h := reqs[0].header
	if got := h.Values("X-Forwarded-For"); !slices.Equal(got, []string{"10.65.0.2"}) {
		t.Errorf("upstream X-Forwarded-For = %q, want only w1's address", got)
	}
	for k, v := range h {
		if k != "X-Forwarded-For" && identityHeader(k) {
			t.Errorf("upstream got the client's %s: %q", k, v)
		}
	}
	if h.Get("Accept") != "text/plain" || reqs[0].path != "/latest/meta-data/" {
		t.Errorf("upstream got Accept %q, path %q: the request itself must pass unchanged", h.Get("Accept"), reqs[0].path)
	}
	if n := testutil.ToFloat64(p.m.requests.WithLabelValues(resultForwarded)); n != 1 {
		t.Errorf("forwarded requests = %v, want 1", n)
	}
}

// TestListenerReconcile: Update opens a listener per interface, keeps the
// ones that stay (taking their endpoint's new address), and closes the
// ones whose interface went or changed.
func TestListenerReconcile(t *testing.T) {
	u := newUpstream(t)
	p := newProxy(t)
	p.Update(u.addr(), []Endpoint{w1, w2})
	a1, a2 := listenAddr(p, w1.Ifindex), listenAddr(p, w2.Ifindex)
	if a1 == "" || a2 == "" || a1 == a2 {
		t.Fatalf("listeners %q %q, want one per interface", a1, a2)
	}
	for _, c := range []struct {
		addr, want string
	}{{a1, "for 10.65.0.2"}, {a2, "for fd00:65::3"}} {
		if code, body := do(t, http.MethodGet, c.addr, "/", nil, nil); code != 200 || body != c.want {
			t.Errorf("GET on %s = %d %q, want 200 %q", c.addr, code, body, c.want)
		}
	}
	if n := testutil.ToFloat64(p.m.listeners); n != 2 {
		t.Errorf("listeners gauge = %v, want 2", n)
	}

	// w1 goes; w2 gets another address and keeps its listener.
	w2b := w2
	w2b.Addr = netip.MustParseAddr("10.65.0.3")
	p.Update(u.addr(), []Endpoint{w2b})
	if got := listenAddr(p, w1.Ifindex); got != "" {
		t.Errorf("w1's listener still open at %s", got)
	}
	if _, err := net.DialTimeout("tcp", a1, time.Second); err == nil {
		t.Errorf("%s still accepts after w1 went", a1)
	}
	if got := listenAddr(p, w2.Ifindex); got != a2 {
		t.Errorf("w2's listener moved %s -> %s, want kept", a2, got)
	}
	if code, body := do(t, http.MethodGet, a2, "/", nil, nil); code != 200 || body != "for 10.65.0.3" {
		t.Errorf("GET on w2 = %d %q, want its new address", code, body)
	}

	// The ifindex now names another interface: a new listener.
	w2c := w2b
	w2c.Ifname = "tap2-new"
	p.Update(u.addr(), []Endpoint{w2c})
	if got := listenAddr(p, w2.Ifindex); got == "" || got == a2 {
		t.Errorf("listener after the interface changed = %q, want a new one (was %s)", got, a2)
	}

	// No metadata service: no listener.
	p.Update(netip.AddrPort{}, []Endpoint{w1, w2c})
	if got := listenAddr(p, w1.Ifindex) + listenAddr(p, w2.Ifindex); got != "" {
		t.Errorf("listening at %q without a metadata service", got)
	}
	if n := testutil.ToFloat64(p.m.listeners); n != 0 {
		t.Errorf("listeners gauge = %v, want 0", n)
	}
}

// TestListenFailureIsolated: an interface that cannot be listened on is
// counted and tried again at every Update; the others are served.
func TestListenFailureIsolated(t *testing.T) {
	u := newUpstream(t)
	p := New(Options{Listen: netip.MustParseAddrPort("[fe80::a9fe:a9fe]:0"), Logger: quiet})
	t.Cleanup(p.Close)
	lo := Endpoint{Name: "on-lo", Ifname: "lo", Ifindex: 1, Addr: w1.Addr}
	gone := Endpoint{Name: "gone", Ifname: "tap-gone", Ifindex: 1 << 30, Addr: w2.Addr}
	p.Update(u.addr(), []Endpoint{lo, gone})
	if listenAddr(p, lo.Ifindex) == "" {
		t.Errorf("no listener on lo beside the failing interface")
	}
	if listenAddr(p, gone.Ifindex) != "" {
		t.Errorf("listening on an interface that does not exist")
	}
	p.Update(u.addr(), []Endpoint{lo, gone})
	if n := testutil.ToFloat64(p.m.listenErrors); n != 2 {
		t.Errorf("listen errors = %v, want 2 (one per Update)", n)
	}
}

// TestBodyLimit: a body over MaxBody is refused whether its length is
// announced or not, and never reaches the service; one within passes
// whole.
func TestBodyLimit(t *testing.T) {
	u := newUpstream(t)
	p := newProxy(t)
	p.Update(u.addr(), []Endpoint{w1})
	addr := listenAddr(p, w1.Ifindex)
	big := bytes.Repeat([]byte("x"), MaxBody+1)
	if code, _ := do(t, http.MethodPost, addr, "/openstack/latest/password", bytes.NewReader(big), nil); code != http.StatusRequestEntityTooLarge {
		t.Errorf("POST of %d bytes with Content-Length = %d, want 413", len(big), code)
	}
	// A reader of unknown length goes chunked.
	if code, _ := do(t, http.MethodPost, addr, "/openstack/latest/password", io.MultiReader(bytes.NewReader(big)), nil); code != http.StatusRequestEntityTooLarge {
		t.Errorf("chunked POST of %d bytes = %d, want 413", len(big), code)
	}
	if n := len(u.seen()); n != 0 {
		t.Fatalf("upstream saw %d requests, want none", n)
	}
	if code, _ := do(t, http.MethodPost, addr, "/openstack/latest/password", strings.NewReader("secret"), nil); code != 200 {
		t.Errorf("small POST = %d, want 200", code)
	}
	if reqs := u.seen(); len(reqs) != 1 || reqs[0].body != "secret" {
		t.Errorf("upstream saw %+v, want the small POST's body", reqs)
	}
	if code, _ := do(t, http.MethodPut, addr, "/", strings.NewReader("x"), nil); code != http.StatusMethodNotAllowed {
		t.Errorf("PUT = %d, want 405", code)
	}
	if n := testutil.ToFloat64(p.m.requests.WithLabelValues(resultTooLarge)); n != 2 {
		t.Errorf("too_large = %v, want 2", n)
	}
}

// TestUpstreamDown: a service that does not answer is a 502, counted.
func TestUpstreamDown(t *testing.T) {
	u := newUpstream(t)
	down := u.addr()
	u.srv.Close()
	p := newProxy(t)
	p.Update(down, []Endpoint{w1})
	if code, _ := do(t, http.MethodGet, listenAddr(p, w1.Ifindex), "/", nil, nil); code != http.StatusBadGateway {
		t.Errorf("GET with the service down = %d, want 502", code)
	}
	if n := testutil.ToFloat64(p.m.requests.WithLabelValues(resultUpstreamError)); n != 1 {
		t.Errorf("upstream_error = %v, want 1", n)
	}
}
