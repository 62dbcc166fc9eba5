package bgp

// Privileged tests: two speakers, each in a child process of the test binary started
// with `ip netns exec NS` (see runHelper), joined by a veth pair.
//
// Why child processes: GoBGP opens its listener in the Serve goroutine and dials from
// per-peer goroutines it starts itself. A network namespace belongs to an OS thread, and
// goroutines started from a thread locked with runtime.LockOSThread do not inherit it
// (they run on any thread of the process), so netns.Set around Start would put the
// listener and the dials wherever those goroutines happen to run. A process started by
// `ip netns exec` has every thread in the namespace, which is also how the agent runs.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	testlab "github.com/calyxnet/calyx/tests/lab"
)

const helperEnv = "CALYX_BGP_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "1" {
		runHelper(os.Stdin, os.Stdout)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

type helperReq struct {
	Op       string
	Config   *Config         `json:",omitempty"`
	Peers    []Peer          `json:",omitempty"`
	Adverts  []Advertisement `json:",omitempty"`
	Withdraw bool            `json:",omitempty"`
}

type helperMsg struct {
	Event   bool         `json:",omitempty"` // a learned-set change, not a reply
	Err     string       `json:",omitempty"`
	Learned []Route      `json:",omitempty"`
	Peers   []PeerStatus `json:",omitempty"`
}

// runHelper serves one speaker over JSON lines: one reply per request, and an event
// line each time the learned set changes.
func runHelper(in io.Reader, out io.Writer) {
	var mu sync.Mutex
	enc := json.NewEncoder(out)
	send := func(m helperMsg) {
		mu.Lock()
		defer mu.Unlock()
		_ = enc.Encode(m)
	}
	var s *Speaker
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		var r helperReq
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			send(helperMsg{Err: err.Error()})
			continue
		}
		var err error
		var reply helperMsg
		switch r.Op {
		case "start":
			cfg := *r.Config
			cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
			s, err = Start(contextBackground(), cfg)
			if err == nil {
				s.OnLearned(func(rs []Route) { send(helperMsg{Event: true, Learned: rs}) })
			}
		case "peers":
			err = s.SetPeers(r.Peers)
		case "adverts":
			err = s.SetAdvertisements(r.Adverts)
		case "learned":
			reply.Learned = s.Learned()
		case "status":
			reply.Peers = s.Peers()
		case "stop":
			err = s.Stop(r.Withdraw)
		default:
			err = fmt.Errorf("unknown op %q", r.Op)
		}
		if err != nil {
			reply.Err = err.Error()
		}
		send(reply)
	}
}

// child is a speaker in a child process inside a network namespace.
type child struct {
	t       *testing.T
	name    string
	cmd     *exec.Cmd
	enc     *json.Encoder
	replies chan helperMsg
	mu      sync.Mutex
	events  [][]Route
	notify  chan struct{}
	log     *lockedBuf
}

type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func startChild(t *testing.T, name, ns string) *child {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	c := &child{t: t, name: name, replies: make(chan helperMsg, 16), notify: make(chan struct{}, 1), log: &lockedBuf{}}
	c.cmd = exec.Command("ip", "netns", "exec", ns, exe, "-test.run=^$")
	c.cmd.Env = append(os.Environ(), helperEnv+"=1")
	c.cmd.Stderr = c.log
	stdin, err := c.cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := c.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c.enc = json.NewEncoder(stdin)
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var m helperMsg
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				continue
			}
			if m.Event {
				c.mu.Lock()
				c.events = append(c.events, m.Learned)
				c.mu.Unlock()
				select {
				case c.notify <- struct{}{}:
				default:
				}
				continue
			}
			c.replies <- m
		}
		close(c.replies)
	}()
	t.Cleanup(func() {
		c.kill()
		if t.Failed() {
			t.Logf("%s log:\n%s", c.name, c.log.String())
		}
	})
	return c
}

func (c *child) kill() {
	if c.cmd.ProcessState == nil {
		_ = c.cmd.Process.Kill()
		_ = c.cmd.Wait()
	}
}

func (c *child) call(r helperReq) helperMsg {
	c.t.Helper()
	if err := c.enc.Encode(r); err != nil {
		c.t.Fatalf("%s %s: %v", c.name, r.Op, err)
	}
	select {
	case m, ok := <-c.replies:
		if !ok {
			c.t.Fatalf("%s %s: helper exited\n%s", c.name, r.Op, c.log.String())
		}
		if m.Err != "" {
			c.t.Fatalf("%s %s: %s", c.name, r.Op, m.Err)
		}
		return m
	case <-time.After(20 * time.Second):
		c.t.Fatalf("%s %s: no reply", c.name, r.Op)
	}
	return helperMsg{}
}

func (c *child) eventsSnapshot() [][]Route {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([][]Route(nil), c.events...)
}

// waitFor polls cond every 100 ms until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	last := ""
	for time.Now().Before(deadline) {
		ok, s := cond()
		if ok {
			return
		}
		last = s
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("timed out after %v waiting for %s; last: %s", d, what, last)
}

func (c *child) established(peer netip.Addr) (bool, string) {
	for _, p := range c.call(helperReq{Op: "status"}).Peers {
		if p.Address == peer {
			return p.Established, fmt.Sprintf("%+v", p)
		}
	}
	return false, "peer not listed"
}

func findRoute(rs []Route, p netip.Prefix) (Route, bool) {
	for _, r := range rs {
		if r.Prefix == p {
			return r, true
		}
	}
	return Route{}, false
}

var labSeq atomic.Int32

// lab makes two namespaces joined by a veth: A has 10.99.0.1/24 and
// fd00:99::1/64, B 10.99.0.2/24 and fd00:99::2/64.
// Everything is removed at cleanup, pass or fail.
func lab(t *testing.T) (nsA, nsB string) {
	t.Helper()
	if os.Geteuid() != 0 {
		testlab.SkipOrFailInCI(t, "not root: the BGP speaker tests need network namespaces (CAP_NET_ADMIN, CAP_SYS_ADMIN)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatal("iproute2's ip is needed: ", err)
	}
	id := fmt.Sprintf("%d%d", os.Getpid()%100000, labSeq.Add(1))
	nsA, nsB = "cbgpa"+id, "cbgpb"+id
	va, vb := "cba"+id, "cbb"+id
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	t.Cleanup(func() {
		_ = exec.Command("ip", "netns", "del", nsA).Run()
		_ = exec.Command("ip", "netns", "del", nsB).Run()
		_ = exec.Command("ip", "link", "del", va).Run()
	})
	run("netns", "add", nsA)
	run("netns", "add", nsB)
	run("link", "add", va, "type", "veth", "peer", "name", vb)
	run("link", "set", va, "netns", nsA)
	run("link", "set", vb, "netns", nsB)
	run("-n", nsA, "addr", "add", "10.99.0.1/24", "dev", va)
	run("-n", nsB, "addr", "add", "10.99.0.2/24", "dev", vb)
	run("-n", nsA, "addr", "add", "fd00:99::1/64", "dev", va, "nodad")
	run("-n", nsB, "addr", "add", "fd00:99::2/64", "dev", vb, "nodad")
	for _, x := range [][2]string{{nsA, va}, {nsB, vb}} {
		run("-n", x[0], "link", "set", "lo", "up")
		run("-n", x[0], "link", "set", x[1], "up")
	}
	return nsA, nsB
}

var (
	addrA  = netip.MustParseAddr("10.99.0.1")
	addrB  = netip.MustParseAddr("10.99.0.2")
	addrA6 = netip.MustParseAddr("fd00:99::1")
	addrB6 = netip.MustParseAddr("fd00:99::2")
)

func speakerConfig(id netip.Addr, asn uint32, restarting bool) *Config {
	return &Config{ASN: asn, RouterID: id, GracefulRestartSeconds: 30, ConnectRetry: time.Second, Restarting: restarting}
}

// TestSpeakersEstablishAdvertiseWithdrawRestart: the session establishes; B learns A's
// /26 and /32 with A's next hop; a withdrawn /32 goes; A stopped without withdrawal and
// restarted within the restart time: B keeps the routes, stale, and gets them again,
// never losing them; after a SIGKILL the same, and End-of-RIB drops what the new A no
// longer advertises; a stop with withdrawal removes them.
func TestSpeakersEstablishAdvertiseWithdrawRestart(t *testing.T) {
	nsA, nsB := lab(t)
	a := startChild(t, "A", nsA)
	b := startChild(t, "B", nsB)
	a.call(helperReq{Op: "start", Config: speakerConfig(addrA, 64512, false)})
	b.call(helperReq{Op: "start", Config: speakerConfig(addrB, 64512, false)})
	a.call(helperReq{Op: "peers", Peers: []Peer{{Address: addrB, ASN: 64512, Type: PeerTypeMesh}}})
	b.call(helperReq{Op: "peers", Peers: []Peer{{Address: addrA, ASN: 64512, Type: PeerTypeMesh}}})
	block, host := netip.MustParsePrefix("10.244.1.0/26"), netip.MustParsePrefix("10.244.9.7/32")
	adverts := []Advertisement{{Prefix: block, NextHop: addrA}, {Prefix: host, NextHop: addrA}}
	a.call(helperReq{Op: "adverts", Adverts: adverts})
	b.call(helperReq{Op: "adverts"})

	waitFor(t, 20*time.Second, "A-B Established", func() (bool, string) { return b.established(addrA) })
	if ok, s := a.established(addrB); !ok {
		t.Fatalf("A's view: %s", s)
	}
	learnedBoth := func() (bool, string) {
		rs := b.call(helperReq{Op: "learned"}).Learned
		r1, ok1 := findRoute(rs, block)
		r2, ok2 := findRoute(rs, host)
		ok := ok1 && ok2 && r1.NextHop == addrA && r2.NextHop == addrA && r1.Peer == addrA && !r1.Stale && !r2.Stale
		return ok, fmt.Sprintf("%+v", rs)
	}
	waitFor(t, 10*time.Second, "B learns the /26 and the /32 via A", learnedBoth)
	st := b.call(helperReq{Op: "status"}).Peers
	if len(st) != 1 || st[0].State != "up" || st[0].Info != "Established" || st[0].Type != PeerTypeMesh || st[0].PrefixesReceived != 2 {
		t.Errorf("B's status: %+v", st)
	}
	waitFor(t, 5*time.Second, "A's status counts 2 advertised", func() (bool, string) {
		st := a.call(helperReq{Op: "status"}).Peers
		return len(st) == 1 && st[0].PrefixesAdvertised == 2, fmt.Sprintf("%+v", st)
	})

	// Withdraw the /32.
	a.call(helperReq{Op: "adverts", Adverts: adverts[:1]})
	waitFor(t, 10*time.Second, "B loses the /32 and keeps the /26", func() (bool, string) {
		rs := b.call(helperReq{Op: "learned"}).Learned
		_, okB := findRoute(rs, block)
		_, okH := findRoute(rs, host)
		return okB && !okH, fmt.Sprintf("%+v", rs)
	})
	a.call(helperReq{Op: "adverts", Adverts: adverts})
	waitFor(t, 10*time.Second, "B learns the /32 again", learnedBoth)

	// Graceful restart: stop without withdrawal, a new process within the restart time.
	mark := len(b.eventsSnapshot())
	a.call(helperReq{Op: "stop", Withdraw: false})
	a.kill()
	waitFor(t, 10*time.Second, "B marks A's routes stale", func() (bool, string) {
		rs := b.call(helperReq{Op: "learned"}).Learned
		r1, ok1 := findRoute(rs, block)
		r2, ok2 := findRoute(rs, host)
		return ok1 && ok2 && r1.Stale && r2.Stale, fmt.Sprintf("%+v", rs)
	})
	time.Sleep(2 * time.Second)
	a2 := startChild(t, "A2", nsA)
	a2.call(helperReq{Op: "start", Config: speakerConfig(addrA, 64512, true)})
	a2.call(helperReq{Op: "peers", Peers: []Peer{{Address: addrB, ASN: 64512, Type: PeerTypeMesh}}})
	a2.call(helperReq{Op: "adverts", Adverts: adverts})
	waitFor(t, 25*time.Second, "B has A's routes fresh again", learnedBoth)
	sawStale := false
	for i, ev := range b.eventsSnapshot()[mark:] {
		r1, ok1 := findRoute(ev, block)
		r2, ok2 := findRoute(ev, host)
		if !ok1 || !ok2 {
			t.Errorf("B's learned set %d after the stop lacks A's routes: %+v", i, ev)
		}
		sawStale = sawStale || r1.Stale || r2.Stale
	}
	if !sawStale {
		t.Error("B never reported A's routes stale")
	}
	if st := b.call(helperReq{Op: "status"}).Peers; len(st) != 1 || st[0].SessionFlaps != 1 || !st[0].Established {
		t.Errorf("B's status after the restart: %+v", st)
	}

	// SIGKILL, and a new A that no longer has the /32: B keeps both, stale, until A's
	// End-of-RIB, which drops the /32 that was not re-advertised.
	a2.kill()
	waitFor(t, 10*time.Second, "B marks A's routes stale after a SIGKILL", func() (bool, string) {
		rs := b.call(helperReq{Op: "learned"}).Learned
		r1, ok1 := findRoute(rs, block)
		r2, ok2 := findRoute(rs, host)
		return ok1 && ok2 && r1.Stale && r2.Stale, fmt.Sprintf("%+v", rs)
	})
	a3 := startChild(t, "A3", nsA)
	a3.call(helperReq{Op: "start", Config: speakerConfig(addrA, 64512, true)})
	a3.call(helperReq{Op: "peers", Peers: []Peer{{Address: addrB, ASN: 64512, Type: PeerTypeMesh}}})
	a3.call(helperReq{Op: "adverts", Adverts: adverts[:1]})
	waitFor(t, 25*time.Second, "B has the /26 fresh and not the /32", func() (bool, string) {
		rs := b.call(helperReq{Op: "learned"}).Learned
		r1, ok1 := findRoute(rs, block)
		_, ok2 := findRoute(rs, host)
		return ok1 && !r1.Stale && !ok2, fmt.Sprintf("%+v", rs)
	})

	// A clean stop withdraws.
	a3.call(helperReq{Op: "stop", Withdraw: true})
	waitFor(t, 10*time.Second, "B loses A's routes", func() (bool, string) {
		rs := b.call(helperReq{Op: "learned"}).Learned
		return len(rs) == 0, fmt.Sprintf("%+v", rs)
	})
}

// TestSpeakersMD5: a password mismatch keeps the session down; the same password on
// both sides establishes it.
func TestSpeakersMD5(t *testing.T) {
	nsA, nsB := lab(t)
	a := startChild(t, "A", nsA)
	b := startChild(t, "B", nsB)
	a.call(helperReq{Op: "start", Config: speakerConfig(addrA, 65001, false)})
	b.call(helperReq{Op: "start", Config: speakerConfig(addrB, 65002, false)})
	a.call(helperReq{Op: "adverts", Adverts: []Advertisement{{Prefix: netip.MustParsePrefix("10.244.1.0/26"), NextHop: addrA}}})
	b.call(helperReq{Op: "adverts"})
	a.call(helperReq{Op: "peers", Peers: []Peer{{Address: addrB, ASN: 65002, Type: PeerTypeGlobal, Password: "right horse"}}})
	b.call(helperReq{Op: "peers", Peers: []Peer{{Address: addrA, ASN: 65001, Type: PeerTypeGlobal, Password: "wrong battery"}}})
	deadline := time.Now().Add(6 * time.Second)
	for time.Now().Before(deadline) {
		if ok, s := b.established(addrA); ok {
			t.Fatalf("established with mismatched passwords: %s", s)
		}
		time.Sleep(200 * time.Millisecond)
	}
	st := b.call(helperReq{Op: "status"}).Peers
	if len(st) != 1 || st[0].State != "start" || st[0].Info == "Established" {
		t.Errorf("B's status with a wrong password: %+v", st)
	}
	b.call(helperReq{Op: "peers", Peers: []Peer{{Address: addrA, ASN: 65001, Type: PeerTypeGlobal, Password: "right horse"}}})
	waitFor(t, 20*time.Second, "Established with matching passwords", func() (bool, string) { return b.established(addrA) })
	waitFor(t, 10*time.Second, "B learns A's block", func() (bool, string) {
		rs := b.call(helperReq{Op: "learned"}).Learned
		r, ok := findRoute(rs, netip.MustParsePrefix("10.244.1.0/26"))
		return ok && r.NextHop == addrA, fmt.Sprintf("%+v", rs)
	})
}

func contextBackground() context.Context { return context.Background() }

// TestSpeakersIPv6: A's IPv6 block reaches B with A's IPv6 next hop over an
// IPv4 session that negotiated ipv6-unicast (MP-BGP), and over an IPv6
// session; the IPv4 routes keep their IPv4 next hop.
func TestSpeakersIPv6(t *testing.T) {
	nsA, nsB := lab(t)
	block6, block4 := netip.MustParsePrefix("fd00:65::40/122"), netip.MustParsePrefix("10.244.1.0/26")
	adverts := []Advertisement{{Prefix: block4, NextHop: addrA}, {Prefix: block6, NextHop: addrA6}}
	for _, tc := range []struct {
		name         string
		peerA, peerB Peer
	}{
		{"MP-BGP on the IPv4 session",
			Peer{Address: addrB, ASN: 65002, Type: PeerTypeGlobal, IPv6Unicast: true},
			Peer{Address: addrA, ASN: 65001, Type: PeerTypeGlobal, IPv6Unicast: true}},
		{"IPv6 session",
			Peer{Address: addrB6, ASN: 65002, Type: PeerTypeGlobal},
			Peer{Address: addrA6, ASN: 65001, Type: PeerTypeGlobal}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := startChild(t, "A", nsA)
			b := startChild(t, "B", nsB)
			a.call(helperReq{Op: "start", Config: speakerConfig(addrA, 65001, false)})
			b.call(helperReq{Op: "start", Config: speakerConfig(addrB, 65002, false)})
			a.call(helperReq{Op: "adverts", Adverts: adverts})
			b.call(helperReq{Op: "adverts"})
			a.call(helperReq{Op: "peers", Peers: []Peer{tc.peerA}})
			b.call(helperReq{Op: "peers", Peers: []Peer{tc.peerB}})
			waitFor(t, 20*time.Second, "Established", func() (bool, string) { return b.established(tc.peerB.Address) })
			waitFor(t, 10*time.Second, "B learns A's IPv6 block with A's IPv6 next hop", func() (bool, string) {
				rs := b.call(helperReq{Op: "learned"}).Learned
				r, ok := findRoute(rs, block6)
				return ok && r.NextHop == addrA6 && r.Peer == tc.peerB.Address, fmt.Sprintf("%+v", rs)
			})
			rs := b.call(helperReq{Op: "learned"}).Learned
			r, ok := findRoute(rs, block4)
			if tc.peerB.Address.Is4() && (!ok || r.NextHop != addrA) {
				t.Errorf("IPv4 block over the IPv4 session: %+v", rs)
			}
			if tc.peerB.Address.Is6() && ok {
				t.Errorf("IPv4 block over an IPv6-only session: %+v", rs)
			}
			st := b.call(helperReq{Op: "status"}).Peers
			if len(st) != 1 || st[0].PrefixesReceived < 1 {
				t.Errorf("B's peer status: %+v", st)
			}
		})
	}
}
