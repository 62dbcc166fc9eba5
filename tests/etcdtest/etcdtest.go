// Package etcdtest runs a real etcd server for tests: Debian's etcd binary
// (package etcd-server, /usr/bin/etcd) on loopback, with free ports and a
// temporary data directory, all removed when the test ends, pass or fail.
//
// When etcd is not installed the test is skipped, unless CI is set: there
// a missing etcd is a failure, never a skip. `make deps` installs it.
package etcdtest

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Binary is where Debian's etcd-server package installs etcd; PATH is
// searched when it is not there.
const Binary = "/usr/bin/etcd"

// startTimeout bounds how long a start may take before the test fails.
const startTimeout = 20 * time.Second

// Server is one single-member etcd cluster on 127.0.0.1. Its methods fail
// the test (t.Fatal) on error, so call them from the test's goroutine.
type Server struct {
	t          testing.TB
	bin        string
	dir        string // temporary; holds the data directory and the log
	clientPort int
	peerPort   int
	tls        *TLSFiles

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	closed bool
}

// TLSFiles are the PEM files of a server started with StartTLS: the CA
// that signed the server's and the client's certificates, and the client's
// certificate and key.
type TLSFiles struct {
	CA, Cert, Key string
}

// Start starts etcd and waits until it serves requests. The server is
// stopped and its files removed when the test ends. Without an etcd binary
// the test is skipped, or fails when CI is set.
func Start(t testing.TB) *Server {
	t.Helper()
	return start(t, false)
}

// StartTLS is Start with TLS on the client port: the server requires a
// client certificate signed by the CA in TLS().
func StartTLS(t testing.TB) *Server {
	t.Helper()
	return start(t, true)
}

func start(t testing.TB, withTLS bool) *Server {
	t.Helper()
	bin, err := findBinary()
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI is set, so not skipping: %v", err)
		}
		t.Skipf("%v (set CI=1 to make this a failure)", err)
	}
	s := &Server{t: t, bin: bin, dir: t.TempDir()}
	if withTLS {
		files, err := WriteCerts(s.dir, "calyx etcdtest CA", net.IPv4(127, 0, 0, 1))
		if err != nil {
			t.Fatalf("etcdtest: making certificates: %v", err)
		}
		s.tls = &files
	}
	ports, err := freePorts(2)
	if err != nil {
		t.Fatalf("etcdtest: finding free ports: %v", err)
	}
	s.clientPort, s.peerPort = ports[0], ports[1]
	// Registered after t.TempDir, so it runs first: the process is gone
	// before its directory is removed.
	t.Cleanup(func() {
		if t.Failed() {
			if tail := s.LogTail(40); tail != "" {
				t.Logf("etcdtest: last lines of the etcd log:\n%s", tail)
			}
		}
		s.Close()
	})
	s.Start()
	return s
}

func findBinary() (string, error) {
	if fi, err := os.Stat(Binary); err == nil && !fi.IsDir() {
		return Binary, nil
	}
	if p, err := exec.LookPath("etcd"); err == nil {
		return p, nil
	}
	return "", errors.New("etcd not found (install Debian's etcd-server package: make deps)")
}

func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func (s *Server) scheme() string {
	if s.tls != nil {
		return "https"
	}
	return "http"
}

// URL returns the datastore URL of the server, "etcd://127.0.0.1:PORT",
// with ca, cert and key query parameters for a TLS server.
func (s *Server) URL() string {
	u := "etcd://127.0.0.1:" + strconv.Itoa(s.clientPort)
	if s.tls != nil {
		u += "?ca=" + s.tls.CA + "&cert=" + s.tls.Cert + "&key=" + s.tls.Key
	}
	return u
}

// Endpoints returns the client endpoints, e.g. "http://127.0.0.1:PORT",
// for clientv3.Config or etcdctl --endpoints.
func (s *Server) Endpoints() []string {
	return []string{s.scheme() + "://127.0.0.1:" + strconv.Itoa(s.clientPort)}
}

// Addr returns the client address, "127.0.0.1:PORT".
func (s *Server) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.clientPort) }

// TLS returns the certificate files of a server started with StartTLS, or
// nil.
func (s *Server) TLS() *TLSFiles { return s.tls }

// DataDir returns the server's data directory.
func (s *Server) DataDir() string { return filepath.Join(s.dir, "data") }

func (s *Server) logPath() string { return filepath.Join(s.dir, "etcd.log") }

// Running reports whether the server process is running.
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cmd != nil
}

// Start starts the server if it is stopped (again with the same data
// directory and ports) and waits until it serves requests.
func (s *Server) Start() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		s.t.Fatal("etcdtest: Start after Close")
	}
	if s.cmd != nil {
		return
	}
	peer := "http://127.0.0.1:" + strconv.Itoa(s.peerPort)
	client := s.Endpoints()[0]
	args := []string{
		"--name", "calyx-test",
		"--data-dir", s.DataDir(),
		"--listen-client-urls", client,
		"--advertise-client-urls", client,
		"--listen-peer-urls", peer,
		"--initial-advertise-peer-urls", peer,
		"--initial-cluster", "calyx-test=" + peer,
		"--initial-cluster-state", "new",
		"--logger", "zap",
		"--log-outputs", s.logPath(),
		// As the calyx documentation asks of a deployment: one apply is
		// one transaction, so big applies need room.
		"--max-txn-ops", "10000",
		"--max-request-bytes", strconv.Itoa(32 << 20),
	}
	if s.tls != nil {
		args = append(args,
			"--client-cert-auth",
			"--trusted-ca-file", s.tls.CA,
			"--cert-file", filepath.Join(s.dir, "server.pem"),
			"--key-file", filepath.Join(s.dir, "server-key.pem"),
		)
	}
	cmd := exec.Command(s.bin, args...)
	cmd.Env = cleanEnv()
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("etcdtest: starting %s: %v", s.bin, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	s.cmd, s.exited = cmd, exited
	if err := s.waitReady(exited); err != nil {
		s.stopLocked()
		s.t.Fatalf("etcdtest: %v\n%s", err, s.LogTail(30))
	}
}

// cleanEnv drops ETCD_* variables, which etcd reads as flags.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ETCD_") {
			env = append(env, kv)
		}
	}
	return env
}

func (s *Server) httpClient() (*http.Client, error) {
	tr := &http.Transport{}
	if s.tls != nil {
		cfg, err := s.tls.config()
		if err != nil {
			return nil, err
		}
		tr.TLSClientConfig = cfg
	}
	return &http.Client{Transport: tr, Timeout: time.Second}, nil
}

func (s *Server) waitReady(exited <-chan struct{}) error {
	hc, err := s.httpClient()
	if err != nil {
		return err
	}
	defer hc.CloseIdleConnections()
	url := s.Endpoints()[0] + "/health"
	deadline := time.Now().Add(startTimeout)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return errors.New("etcd exited during start-up")
		default:
		}
		resp, err := hc.Get(url)
		if err == nil {
			var b [256]byte
			n, _ := resp.Body.Read(b[:])
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && strings.Contains(string(b[:n]), `"true"`) {
				return nil
			}
			err = fmt.Errorf("%s: %s %s", url, resp.Status, strings.TrimSpace(string(b[:n])))
		}
		last = err
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("etcd not healthy within %v: %v", startTimeout, last)
}

// Stop stops the server (SIGTERM, then SIGKILL after 5 s), keeping its
// data; Start brings it back. Stopping a stopped server does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopLocked()
}

func (s *Server) stopLocked() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(5 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
	s.cmd, s.exited = nil, nil
}

// Close stops the server for good. The test's cleanup calls it; calling it
// again does nothing.
func (s *Server) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopLocked()
	s.closed = true
}

// LogTail returns the last n lines of the server's log.
func (s *Server) LogTail(n int) string {
	f, err := os.Open(s.logPath())
	if err != nil {
		return ""
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}

// Client returns an etcd client for the server, closed when the test ends:
// for a test to look at or change etcd behind a datastore's back.
func (s *Server) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	cfg := clientv3.Config{
		Endpoints:   s.Endpoints(),
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	}
	if s.tls != nil {
		tc, err := s.tls.config()
		if err != nil {
			t.Fatalf("etcdtest: %v", err)
		}
		cfg.TLS = tc
	}
	c, err := clientv3.New(cfg)
	if err != nil {
		t.Fatalf("etcdtest: client: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// Etcdctl runs etcdctl (package etcd-client) against the server with the
// API v3 and returns its combined output.
func (s *Server) Etcdctl(ctx context.Context, args ...string) (string, error) {
	base := []string{"--endpoints", strings.Join(s.Endpoints(), ",")}
	if s.tls != nil {
		base = append(base, "--cacert", s.tls.CA, "--cert", s.tls.Cert, "--key", s.tls.Key)
	}
	cmd := exec.CommandContext(ctx, "etcdctl", append(base, args...)...)
	cmd.Env = append(cleanEnv(), "ETCDCTL_API=3")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("etcdctl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

func (f *TLSFiles) config() (*tls.Config, error) {
	return clientTLSConfig(f.CA, f.Cert, f.Key)
}
