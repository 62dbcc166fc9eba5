package lab

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/calyxnet/calyx/tests/etcdtest"
)

// EtcdBinary is where Debian's etcd-server package puts etcd.
const EtcdBinary = "/usr/bin/etcd"

// The etcd node's defaults.
const (
	// EtcdName is the default name of the etcd node (its namespace is
	// <prefix>-etcd).
	EtcdName = "etcd"
	// EtcdClientPort is the port etcd serves clients on.
	EtcdClientPort = 2379
	// etcdHost is the host part of etcd's default address on its
	// segment: .2 (the gateway is .1, the external gateway .254, hosts
	// .11 and up).
	etcdHost = 2
)

// Etcd is the lab's shared datastore: one etcd server in its own namespace
// <prefix>-etcd, plugged into an underlay segment like a host (eth0 with an
// address of the segment, default route via the segment's gateway), so every
// host namespace reaches it through the underlay: hosts on the segment
// directly, hosts on other segments through the router. Once added, it is
// the datastore of every agent started afterwards and of calyxctl (see
// DatastoreURL); calyxctl without a host runs inside the etcd namespace,
// since the root namespace has no route into the lab.
//
// etcd listens on Address:2379 (and 127.0.0.1:2379 inside its namespace);
// its data directory and log are under the lab directory. Stop and Start
// take it away and bring it back with the same data, to show that agents
// fail static.
type Etcd struct {
	// Name is the etcd node's name; the namespace is <prefix>-<Name>.
	Name string
	// NS is the etcd namespace.
	NS string
	// Segment is the underlay segment etcd is plugged into.
	Segment *Segment
	// Address is etcd's address with the segment's prefix length.
	Address netip.Prefix
	// Iface is etcd's interface in NS ("eth0"); Uplink its peer, a port of
	// the segment's bridge.
	Iface, Uplink string
	// DataDir holds etcd's data; LogPath its output (appended across
	// restarts).
	DataDir, LogPath string
	// TLS says etcd serves clients over TLS and requires a client
	// certificate signed by CAFile; CertFile and KeyFile are the client
	// certificate agents and calyxctl use (--etcd-cert, --etcd-key).
	TLS                       bool
	CAFile, CertFile, KeyFile string

	lab        *Lab
	binary     string
	serverCert string
	serverKey  string
	proc       *Proc
	logFile    *os.File
}

// EtcdOptions configures AddEtcd. The zero value is usable.
type EtcdOptions struct {
	// Segment names the segment to plug etcd into; default: the first
	// segment.
	Segment string
	// Address is etcd's address with prefix; default .2 of the segment.
	Address string
	// TLS serves clients over TLS with client certificates (a CA, a server
	// and a client certificate are made for the lab).
	TLS bool
	// Binary is the etcd to run; default EtcdBinary.
	Binary string
}

// AddEtcd creates the etcd namespace on a segment, starts etcd and waits
// until it answers. Add it after the router (AddRouter moves the segment's
// gateway) or before: either way its default route follows the gateway.
// Agents started afterwards use it as their datastore.
func (l *Lab) AddEtcd(o EtcdOptions) (*Etcd, error) {
	if o.Binary == "" {
		o.Binary = EtcdBinary
	}
	if _, err := os.Stat(o.Binary); err != nil {
		return nil, fmt.Errorf("etcd: %w (install etcd-server, or run make deps)", err)
	}
	var seg *Segment
	var err error
	if o.Segment != "" {
		seg, err = l.Segment(o.Segment)
	} else if segs := l.Segments(); len(segs) > 0 {
		seg = segs[0]
	} else {
		err = errors.New("the lab has no segment yet (add hosts or segments first)")
	}
	if err != nil {
		return nil, fmt.Errorf("etcd: %w", err)
	}
	var addr netip.Prefix
	if o.Address == "" {
		a := seg.Gateway.Masked().Addr().As4()
		a[3] = etcdHost
		addr = netip.PrefixFrom(netip.AddrFrom4(a), seg.Gateway.Bits())
	} else if addr, err = netip.ParsePrefix(o.Address); err != nil || !addr.Addr().Is4() {
		return nil, fmt.Errorf("etcd: invalid address %q: want an IPv4 address with prefix", o.Address)
	}
	if addr.Bits() != seg.Gateway.Bits() || !seg.Gateway.Masked().Contains(addr.Addr()) || addr.Addr() == seg.Gateway.Addr() {
		return nil, fmt.Errorf("etcd: %s is not a free address of segment %s (%s)", addr, seg.Name, seg.Gateway.Masked())
	}
	for _, h := range l.Hosts() {
		if h.Underlay.Addr() == addr.Addr() {
			return nil, fmt.Errorf("etcd: %s is host %s's address", addr.Addr(), h.Name)
		}
	}

	l.mu.Lock()
	if l.etcd != nil {
		l.mu.Unlock()
		return nil, fmt.Errorf("etcd: lab %s has one already", l.Prefix)
	}
	e := &Etcd{
		Name:    EtcdName,
		NS:      l.NSName(EtcdName),
		Segment: seg,
		Address: addr,
		Iface:   "eth0",
		Uplink:  l.Prefix + "u" + strconv.Itoa(l.nextUplink),
		DataDir: filepath.Join(l.Dir, "etcd", "data"),
		LogPath: filepath.Join(l.Dir, "etcd.log"),
		TLS:     o.TLS,
		lab:     l,
		binary:  o.Binary,
	}
	l.nextUplink++
	// Registered first so Close stops it whatever happens below.
	l.etcd = e
	l.mu.Unlock()

	l.logf("etcd: namespace %s, eth0 %s on segment %s", e.NS, addr, seg.Name)
	if err := l.plugEtcd(e); err != nil {
		return nil, fmt.Errorf("etcd: %w", err)
	}
	if o.TLS {
		if err := e.makeCerts(filepath.Join(l.Dir, "etcd", "tls")); err != nil {
			return nil, fmt.Errorf("etcd: certificates: %w", err)
		}
	}
	if err := e.Start(); err != nil {
		return nil, err
	}
	return e, nil
}

func (l *Lab) plugEtcd(e *Etcd) error {
	s := e.Segment
	if err := l.ip("", "netns", "add", e.NS); err != nil {
		return err
	}
	if err := l.ip(s.NS, "link", "add", e.Uplink, "type", "veth", "peer", "name", e.Iface, "netns", e.NS); err != nil {
		return err
	}
	for _, st := range []struct {
		ns   string
		args []string
	}{
		{s.NS, []string{"link", "set", e.Uplink, "master", s.Bridge, "up"}},
		{e.NS, []string{"link", "set", "lo", "up"}},
		{e.NS, []string{"addr", "add", e.Address.String(), "dev", e.Iface}},
		{e.NS, []string{"link", "set", e.Iface, "up"}},
		{e.NS, []string{"route", "add", "default", "via", s.Gateway.Addr().String(), "dev", e.Iface}},
	} {
		if err := l.ip(st.ns, st.args...); err != nil {
			return err
		}
	}
	return nil
}

// Etcd returns the lab's etcd, or nil.
func (l *Lab) Etcd() *Etcd {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.etcd
}

// URL is the --datastore value for etcd: etcd://ADDRESS:2379.
func (e *Etcd) URL() string {
	return "etcd://" + netip.AddrPortFrom(e.Address.Addr(), EtcdClientPort).String()
}

// Endpoint is etcd's client address, ADDRESS:2379.
func (e *Etcd) Endpoint() string {
	return netip.AddrPortFrom(e.Address.Addr(), EtcdClientPort).String()
}

// ClientArgs returns the TLS flags agents and calyxctl need (none without
// TLS).
func (e *Etcd) ClientArgs() []string {
	if !e.TLS {
		return nil
	}
	return []string{"--etcd-ca", e.CAFile, "--etcd-cert", e.CertFile, "--etcd-key", e.KeyFile}
}

// Running reports whether etcd's process is running.
func (e *Etcd) Running() bool {
	e.lab.mu.Lock()
	defer e.lab.mu.Unlock()
	return e.proc != nil
}

// Start starts etcd (again, with the same data, address and certificates)
// and waits until it reports healthy.
func (e *Etcd) Start() error {
	l := e.lab
	l.mu.Lock()
	running := e.proc != nil
	l.mu.Unlock()
	if running {
		return errors.New("etcd is already running")
	}
	if err := os.MkdirAll(e.DataDir, 0o700); err != nil {
		return fmt.Errorf("etcd: %w", err)
	}
	scheme := "http"
	if e.TLS {
		scheme = "https"
	}
	client := scheme + "://" + e.Endpoint()
	args := []string{e.binary,
		"--name", e.Name,
		"--data-dir", e.DataDir,
		"--listen-client-urls", client + "," + scheme + "://127.0.0.1:" + strconv.Itoa(EtcdClientPort),
		"--advertise-client-urls", client,
		// One member: peers only on its own loopback.
		"--listen-peer-urls", "http://127.0.0.1:2380",
		"--initial-advertise-peer-urls", "http://127.0.0.1:2380",
		"--initial-cluster", e.Name + "=http://127.0.0.1:2380",
		"--initial-cluster-state", "new",
		"--logger", "zap",
		"--log-outputs", "stderr",
	}
	if e.TLS {
		args = append(args, "--cert-file", e.serverCert, "--key-file", e.serverKey,
			"--trusted-ca-file", e.CAFile, "--client-cert-auth")
	}
	f, err := os.OpenFile(e.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("etcd: open log: %w", err)
	}
	fmt.Fprintf(f, "=== calyx-lab: %s starting: %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(args, " "))
	// Like an agent, etcd outlives the lab process with "calyx-lab up";
	// Stop or Close ends it.
	p, err := l.startProcDetached(e.NS, args, f)
	if err != nil {
		f.Close()
		return fmt.Errorf("etcd: %w", err)
	}
	l.mu.Lock()
	e.proc, e.logFile = p, f
	l.mu.Unlock()
	if err := e.waitHealthy(p, 20*time.Second); err != nil {
		_ = e.stop(syscall.SIGKILL)
		return fmt.Errorf("etcd: %w\n--- %s (tail) ---\n%s", err, e.LogPath, l.logTail(e.LogPath, 30))
	}
	l.logf("etcd ready at %s (pid %d, log %s)", e.URL(), p.Pid(), e.LogPath)
	return nil
}

// Stop stops etcd (SIGTERM, SIGKILL after 10s) and waits for it to exit;
// its data stays for Start.
func (e *Etcd) Stop() error { return e.stop(syscall.SIGTERM) }

func (e *Etcd) stop(sig syscall.Signal) error {
	l := e.lab
	l.mu.Lock()
	p, f := e.proc, e.logFile
	e.proc, e.logFile = nil, nil
	l.mu.Unlock()
	if p == nil {
		return nil
	}
	l.logf("etcd: sending %s", sig)
	_ = p.Signal(sig)
	var err error
	select {
	case <-p.Done():
	case <-time.After(10 * time.Second):
		_ = p.Signal(syscall.SIGKILL)
		<-p.Done()
		err = fmt.Errorf("etcd did not exit within 10s of %s; killed", sig)
	}
	res, _ := p.result()
	fmt.Fprintf(f, "=== calyx-lab: %s exited (status %d) after %s\n", time.Now().Format(time.RFC3339Nano), res.ExitCode, sig)
	f.Close()
	return err
}

// waitHealthy polls etcd's /health from inside its namespace.
func (e *Etcd) waitHealthy(p *Proc, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	last := errors.New("no answer yet")
	for time.Now().Before(deadline) {
		select {
		case <-p.Done():
			res, _ := p.result()
			return fmt.Errorf("exited with status %d before it was healthy", res.ExitCode)
		case <-e.lab.ctx.Done():
			return fmt.Errorf("waiting for etcd: %w", e.lab.ctx.Err())
		default:
		}
		code, body, err := e.health(2 * time.Second)
		switch {
		case err != nil:
			last = err
		case code == 200 && strings.Contains(body, `"true"`):
			return nil
		default:
			last = fmt.Errorf("/health answered %d: %s", code, strings.TrimSpace(body))
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("not healthy after %s: %w", timeout, last)
}

// health GETs /health on etcd's client address from inside its namespace,
// over TLS with the client certificate when etcd uses TLS.
func (e *Etcd) health(timeout time.Duration) (int, string, error) {
	conn, err := DialTCP(e.NS, e.Endpoint(), timeout)
	if err != nil {
		return 0, "", err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(timeout)); err != nil {
		return 0, "", err
	}
	var c net.Conn = conn
	if e.TLS {
		cfg, err := e.clientTLS()
		if err != nil {
			return 0, "", err
		}
		tc := tls.Client(conn, cfg)
		if err := tc.Handshake(); err != nil {
			return 0, "", fmt.Errorf("TLS handshake: %w", err)
		}
		c = tc
	}
	req := "GET /health HTTP/1.0\r\nHost: " + e.Endpoint() + "\r\nConnection: close\r\n\r\n"
	if _, err := io.WriteString(c, req); err != nil {
		return 0, "", err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

func (e *Etcd) clientTLS() (*tls.Config, error) {
	ca, err := os.ReadFile(e.CAFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, fmt.Errorf("no certificate in %s", e.CAFile)
	}
	cert, err := tls.LoadX509KeyPair(e.CertFile, e.KeyFile)
	if err != nil {
		return nil, err
	}
	return &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, ServerName: e.Address.Addr().String()}, nil
}

// makeCerts writes a CA, etcd's server certificate (for its address and
// 127.0.0.1) and a client certificate into dir.
func (e *Etcd) makeCerts(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	files, err := etcdtest.WriteCerts(dir, "calyx-lab "+e.lab.Prefix+" CA",
		net.IP(e.Address.Addr().AsSlice()), net.IPv4(127, 0, 0, 1))
	if err != nil {
		return fmt.Errorf("etcd certificates: %w", err)
	}
	e.CAFile, e.CertFile, e.KeyFile = files.CA, files.Cert, files.Key
	e.serverCert, e.serverKey = filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem")
	return nil
}

// AgentReadyz returns the status code and body of the host agent's /readyz.
func (l *Lab) AgentReadyz(host string) (int, string, error) {
	h, err := l.Host(host)
	if err != nil {
		return 0, "", err
	}
	return HTTPGet(h.NS, l.opts.MetricsAddr, "/readyz", 5*time.Second)
}

// NodeRow is one object of "calyxctl get nodes -o json": the Node and,
// with a datastore that keeps liveness, status.live.
type NodeRow struct {
	Metadata struct {
		Name   string            `json:"name"`
		Labels map[string]string `json:"labels"`
	} `json:"metadata"`
	Spec struct {
		IPv4Address string `json:"ipv4Address"`
	} `json:"spec"`
	Status *struct {
		Live bool `json:"live"`
	} `json:"status"`
}

// Nodes returns "calyxctl get nodes" (run where Calyxctl with host "" runs).
func (l *Lab) Nodes() ([]NodeRow, error) {
	var v []NodeRow
	return v, l.CalyxctlJSON("", &v, "get", "nodes")
}

// RequireEtcd stops the test (CI: fail, elsewhere: skip) unless etcd is
// installed.
func RequireEtcd(t testing.TB) {
	t.Helper()
	if _, err := os.Stat(EtcdBinary); err != nil {
		SkipOrFailInCI(t, "etcd not installed (apt-get install etcd-server, or make deps): %v", err)
	}
}

// upEtcd adds the etcd of Options.Datastore (with TLS) for Up and UpMulti.
func (l *Lab) upEtcd() error {
	if l.opts.Datastore != DatastoreEtcd {
		return nil
	}
	_, err := l.AddEtcd(EtcdOptions{TLS: true})
	return err
}

// describeEtcd tells the user of "calyx-lab up" where the lab's etcd is
// and how to take it away.
func (l *Lab) describeEtcd(out io.Writer) {
	e := l.Etcd()
	if e == nil {
		return
	}
	fmt.Fprintf(out, "\nthe datastore is etcd at %s (TLS with client certificates: %v), namespace %s on segment %s, log %s\n",
		e.URL(), e.TLS, e.NS, e.Segment.Name, e.LogPath)
	hosts := l.Hosts()
	if len(hosts) == 0 {
		return
	}
	ctl, _ := l.CtlArgs(hosts[0].Name)
	fmt.Fprintf(out, "  ip netns exec %s %s get nodes        # LIVE: the agents keep their leases\n", hosts[0].NS, strings.Join(ctl, " "))
	fmt.Fprintf(out, "take it away to see the agents fail static (traffic flows, /readyz says why they are not ready):\n")
	fmt.Fprintf(out, "  kill -STOP $(ip netns pids %s)     # ... and kill -CONT to bring it back\n", e.NS)
	fmt.Fprintf(out, "  ip netns exec %s curl -s %s/readyz\n", hosts[0].NS, l.opts.MetricsAddr)
}
