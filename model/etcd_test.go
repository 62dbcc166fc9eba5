package model

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
	"weak"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/calyxnet/calyx/tests/etcdtest"
)

func TestOpenEtcdURL(t *testing.T) {
	good := []struct {
		url       string
		endpoints []string
		prefix    string
	}{
		{"etcd://127.0.0.1:2379", []string{"127.0.0.1:2379"}, "/calyx"},
		{"etcd://h1:2379,h2:2380/", []string{"h1:2379", "h2:2380"}, "/calyx"},
		{"etcd://h1,[fd00::1],[fd00::2]:4001", []string{"h1:2379", "[fd00::1]:2379", "[fd00::2]:4001"}, "/calyx"},
		{"etcd://h1:2379?prefix=/lab-1/", []string{"h1:2379"}, "/lab-1"},
	}
	for _, tt := range good {
		ds, err := Open(tt.url)
		if err != nil {
			t.Errorf("Open(%q): %v", tt.url, err)
			continue
		}
		e := ds.(*EtcdStore)
		if !reflect.DeepEqual(e.Endpoints(), tt.endpoints) || e.Prefix() != tt.prefix {
			t.Errorf("Open(%q): endpoints %v, prefix %q; want %v, %q", tt.url, e.Endpoints(), e.Prefix(), tt.endpoints, tt.prefix)
		}
		ds.Close()
	}
	// An option given to Open overrides the URL.
	ds, err := Open("etcd://h1:2379?prefix=/a", WithEtcdPrefix("/b"))
	if err != nil || ds.(*EtcdStore).Prefix() != "/b" {
		t.Errorf("WithEtcdPrefix does not override the URL: %v", err)
	} else {
		ds.Close()
	}
	bad := []struct{ url, want string }{
		{"etcd://", "want etcd://HOST:PORT[,HOST:PORT]"},
		{"etcd://h1:2379,", "want etcd://HOST:PORT[,HOST:PORT]"},
		{"etcd://h1:2379/calyx", "with no path (give a key prefix as ?prefix=/calyx)"},
		{"etcd://h1:2379?timeout=3", `unknown parameter "timeout" (want ca, cert, key or prefix)`},
		{"etcd://h1:2379?ca=/nonexistent/ca.pem", "etcd tls: reading CA: open /nonexistent/ca.pem"},
		{"etcd://h1:2379?cert=/x.pem", "etcd tls: a client certificate needs both cert and key"},
		{"etcd://fd00::1:2379", `"fd00::1:2379" is not HOST:PORT (write IPv6 addresses as [ADDR]:PORT)`},
	}
	for _, tt := range bad {
		_, err := Open(tt.url)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Open(%q) = %v; want an error containing %q", tt.url, err, tt.want)
		}
	}
}

// modelResources is a model using every kind.
func modelResources() []Resource {
	cfg := DefaultConfig()
	cfg.Spec.VXLANVNI = 4097
	return append(baseResources(),
		cfg,
		fip("web-1-fip", "198.51.100.10", "web-1", ""),
		pool("ext", "198.51.100.0/24", external),
		&NetworkPolicy{Metadata: Metadata{Name: "allow-web"}, Spec: NetworkPolicySpec{
			Selector: "app == 'web'",
			Ingress:  []Rule{{Action: RuleAllow, Protocol: ProtoTCP, Destination: EntityRule{Ports: []PortRange{{80, 80}}}}},
		}},
		block("10.65.0.0/26", "pool-a", "n1", "10.65.0.5", "web-1", "10.65.0.6", "web-2"),
		subnet("calico-v4", "10.65.0.0/24", "10.65.0.1", func(s *SubnetSpec) {
			s.DNSNameservers = []netip.Addr{netip.MustParseAddr("10.65.0.53")}
			s.HostRoutes = []HostRoute{{netip.MustParsePrefix("11.11.0.0/16"), netip.MustParseAddr("10.65.0.1")}}
		}),
		bgpConfiguration(func(s *BGPConfigurationSpec) { s.ASNumber = 65000 }),
		bgpPeer("gateway", "192.0.2.1", 64600, func(s *BGPPeerSpec) { s.Password = &BGPPassword{Value: "s3cret"} }),
	)
}

// canonical is how a store hands back rs: defaulted copies.
func canonical(rs []Resource) *Snapshot {
	s := NewSnapshot()
	for _, r := range rs {
		c := deepCopy(r)
		ApplyDefaults(c)
		s.Put(c)
	}
	return s
}

func sameModel(t *testing.T, got, want *Snapshot) {
	t.Helper()
	g, w := got.Clone(), want.Clone()
	g.Revision, w.Revision = 0, 0
	g.base, w.base = weak.Pointer[Snapshot]{}, weak.Pointer[Snapshot]{} // whose clones they are does not count
	if !reflect.DeepEqual(g, w) {
		t.Fatalf("model differs:\ngot  %s\nwant %s", describeModel(g), describeModel(w))
	}
}

func describeModel(s *Snapshot) string {
	var b strings.Builder
	for _, r := range s.Resources("") {
		fmt.Fprintf(&b, "%s %+v; ", RefOf(r), r)
	}
	return b.String()
}

func TestEtcdApplyGetDelete(t *testing.T) {
	ctx := context.Background()
	srv := etcdtest.Start(t)
	ds := openEtcdStore(t, srv)
	cli := srv.Client(t)

	s, err := ds.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sameModel(t, s, NewSnapshot())

	rs := modelResources()
	if err := ds.Apply(ctx, rs); err != nil {
		t.Fatal(err)
	}
	s, err = ds.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sameModel(t, s, canonical(rs))

	// One key per resource, holding its JSON; all written by one
	// transaction, so at one revision, which is the snapshot's.
	resp, err := cli.Get(ctx, ds.Prefix()+"/resources/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != len(rs) {
		t.Fatalf("%d keys for %d resources", len(resp.Kvs), len(rs))
	}
	for _, kv := range resp.Kvs {
		if kv.ModRevision != int64(s.Revision) {
			t.Errorf("%s written at revision %d, the snapshot is at %d", kv.Key, kv.ModRevision, s.Revision)
		}
	}
	kv, err := cli.Get(ctx, ds.Prefix()+"/resources/ippool/pool-a")
	if err != nil || len(kv.Kvs) != 1 {
		t.Fatalf("pool key: %v %v", kv, err)
	}
	if want := `{"apiVersion":"calyx.io/v1","kind":"IPPool","metadata":{"name":"pool-a"},"spec":{"cidr":"10.65.0.0/16","blockSize":26,"ipipMode":"Never","vxlanMode":"Never","natOutgoing":false,"nodeSelector":"all()","external":false,"disabled":false,"disableBGPExport":false}}`; string(kv.Kvs[0].Value) != want {
		t.Errorf("stored value:\n%s\nwant\n%s", kv.Kvs[0].Value, want)
	}

	// Applying the same again writes nothing.
	if err := ds.Apply(ctx, rs); err != nil {
		t.Fatal(err)
	}
	if s2, _ := ds.Snapshot(ctx); s2.Revision != s.Revision {
		t.Errorf("an identical apply moved the revision from %d to %d", s.Revision, s2.Revision)
	}

	r, rev, err := ds.Get(ctx, Ref{"workloadendpoints", "web-1"})
	if err != nil || rev != int64(s.Revision) || !reflect.DeepEqual(r, s.Endpoints["web-1"]) {
		t.Fatalf("Get: %+v %d %v", r, rev, err)
	}

	// Another store (another host) sees the same model.
	other := openEtcdStore(t, srv)
	s3, err := other.Snapshot(ctx)
	if err != nil || s3.Revision != s.Revision {
		t.Fatalf("other store: %v at %d", err, s3.Revision)
	}
	sameModel(t, s3, s)

	if err := ds.Delete(ctx, []Ref{{"floatingips", "web-1-fip"}, {KindConfig, ConfigName}}); err != nil {
		t.Fatal(err)
	}
	s, _ = ds.Snapshot(ctx)
	if len(s.FloatingIPs) != 0 || s.Config.Spec.VXLANVNI != DefaultVXLANVNI {
		t.Errorf("after Delete: %v, config %+v", s.FloatingIPs, s.Config.Spec)
	}
}

// The etcd store refuses what the file store refuses, with the same words,
// and writes nothing.
func TestEtcdErrorsMatchFileStore(t *testing.T) {
	ctx := context.Background()
	file := openStore(t, t.TempDir())
	srv := etcdtest.Start(t)
	etcd := openEtcdStore(t, srv)
	for _, ds := range []Datastore{file, etcd} {
		if err := ds.Apply(ctx, modelResources()); err != nil {
			t.Fatal(err)
		}
	}
	ops := []struct {
		name string
		do   func(Datastore) error
	}{
		{"address taken and outside pools, one bad among good", func(ds Datastore) error {
			return ds.Apply(ctx, []Resource{
				node("n2", "10.30.0.11/24"),
				pool("pool-b", "10.66.0.0/16"),
				wep("web-3", "n2", "tap3", "10.65.0.5/32", "10.99.0.1/32"),
			})
		}},
		{"invalid resource", func(ds Datastore) error {
			return ds.Apply(ctx, []Resource{node("n2", "10.30.0.11/24"), wep("Bad_Name", "n1", "tap9", "10.65.0.9/32")})
		}},
		{"given twice", func(ds Datastore) error {
			return ds.Apply(ctx, []Resource{node("n2", "10.30.0.11/24"), node("n2", "10.30.0.12/24")})
		}},
		{"nil", func(ds Datastore) error { return ds.Apply(ctx, []Resource{nil}) }},
		{"delete missing", func(ds Datastore) error {
			return ds.Delete(ctx, []Ref{{KindNode, "n1"}, {KindNode, "nope"}, {"ippool", "gone"}})
		}},
		{"delete unknown kind", func(ds Datastore) error { return ds.Delete(ctx, []Ref{{"Pod", "x"}}) }},
		{"delete what others need", func(ds Datastore) error {
			return ds.Delete(ctx, []Ref{{KindWorkloadEndpoint, "web-1"}, {KindIPPool, "pool-a"}})
		}},
		// Block writes, which the etcd store checks against the block's
		// pool alone.
		{"block of a missing pool", func(ds Datastore) error {
			return ds.(Versioned).Create(ctx, block("10.65.1.0/26", "nopool", "n1"))
		}},
		{"block of the wrong size", func(ds Datastore) error {
			return ds.(Versioned).Create(ctx, block("10.65.1.0/27", "pool-a", "n1"))
		}},
		{"block outside its pool", func(ds Datastore) error {
			return ds.(Versioned).Create(ctx, block("10.99.0.0/26", "pool-a", "n1"))
		}},
		{"block with an address outside it", func(ds Datastore) error {
			return ds.(Versioned).Create(ctx, block("10.65.1.0/26", "pool-a", "n1", "10.65.2.1", "h"))
		}},
		{"block exists", func(ds Datastore) error {
			return ds.(Versioned).Create(ctx, block("10.65.0.0/26", "pool-a", "n2"))
		}},
	}
	before, _ := etcd.Snapshot(ctx)
	for _, op := range ops {
		ferr, eerr := op.do(file), op.do(etcd)
		if ferr == nil || eerr == nil || ferr.Error() != eerr.Error() {
			t.Errorf("%s:\nfile store: %v\netcd store: %v", op.name, ferr, eerr)
		}
		if len(ValidationErrors(ferr)) != len(ValidationErrors(eerr)) || errors.Is(ferr, ErrNotFound) != errors.Is(eerr, ErrNotFound) {
			t.Errorf("%s: the errors wrap different things", op.name)
		}
	}
	after, _ := etcd.Snapshot(ctx)
	if after.Revision != before.Revision {
		t.Errorf("refused writes moved the revision from %d to %d", before.Revision, after.Revision)
	}
	fs, _ := file.Snapshot(ctx)
	sameModel(t, after, fs)
}

// waitSnapshot waits for a snapshot satisfying ok.
func waitSnapshot(t *testing.T, ch <-chan *Snapshot, within time.Duration, what string, ok func(*Snapshot) bool) *Snapshot {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case s, open := <-ch:
			if !open {
				t.Fatalf("%s: watch channel closed", what)
			}
			if ok(s) {
				return s
			}
		case <-deadline:
			t.Fatalf("%s: no matching snapshot within %v", what, within)
		}
	}
}

// quiet checks that nothing arrives on ch for d and that it stays open.
func quiet(t *testing.T, ch <-chan *Snapshot, d time.Duration) {
	t.Helper()
	select {
	case s, open := <-ch:
		if !open {
			t.Fatal("watch channel closed")
		}
		t.Fatalf("unexpected snapshot at revision %d", s.Revision)
	case <-time.After(d):
	}
}

func TestEtcdWatch(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv := etcdtest.Start(t)
	var mu sync.Mutex
	var reported []error
	ds := openEtcdStore(t, srv, WithErrorHandler(func(err error) {
		mu.Lock()
		reported = append(reported, err)
		mu.Unlock()
	}))
	if err := ds.Apply(ctx, baseResources()); err != nil {
		t.Fatal(err)
	}
	ch, err := ds.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	first := waitSnapshot(t, ch, waitFor, "initial", func(*Snapshot) bool { return true })
	sameModel(t, first, canonical(baseResources()))

	// A change made through another store (another host).
	other := openEtcdStore(t, srv)
	if err := other.Apply(ctx, []Resource{wep("web-3", "n1", "tap3", "10.65.0.7/32")}); err != nil {
		t.Fatal(err)
	}
	s := waitSnapshot(t, ch, waitFor, "apply", func(s *Snapshot) bool { return s.Endpoints["web-3"] != nil })
	cur, _ := other.Snapshot(ctx)
	if s.Revision != cur.Revision {
		t.Errorf("watch at revision %d, etcd at %d", s.Revision, cur.Revision)
	}

	// A burst of writes is coalesced, and the last state wins.
	for i := range 5 {
		if err := other.Apply(ctx, []Resource{wep("web-3", "n1", "tap3", fmt.Sprintf("10.65.0.%d/32", 20+i))}); err != nil {
			t.Fatal(err)
		}
	}
	if err := other.Delete(ctx, []Ref{{KindWorkloadEndpoint, "web-2"}}); err != nil {
		t.Fatal(err)
	}
	n := 0
	s = waitSnapshot(t, ch, waitFor, "burst", func(s *Snapshot) bool {
		n++
		return s.Endpoints["web-2"] == nil
	})
	if got := s.Endpoints["web-3"].Spec.IPNetworks[0].String(); got != "10.65.0.24/32" {
		t.Errorf("web-3 at %s after the burst", got)
	}
	if n > 3 {
		t.Errorf("%d snapshots for a burst of 6 writes", n)
	}

	// A value written behind calyx's back that does not parse is reported
	// and skipped; the watch goes on.
	cli := srv.Client(t)
	if _, err := cli.Put(ctx, ds.Prefix()+"/resources/node/n9", `{"kind": "Node"`); err != nil {
		t.Fatal(err)
	}
	if err := other.Apply(ctx, []Resource{node("n2", "10.30.0.12/24")}); err != nil {
		t.Fatal(err)
	}
	s = waitSnapshot(t, ch, waitFor, "after a bad value", func(s *Snapshot) bool { return s.Nodes["n2"] != nil })
	if s.Nodes["n9"] != nil {
		t.Errorf("the unparsable n9 is in the snapshot")
	}
	mu.Lock()
	if len(reported) != 1 || !strings.HasPrefix(reported[0].Error(), "etcd key "+ds.Prefix()+"/resources/node/n9: ") {
		t.Errorf("reported %v", reported)
	}
	mu.Unlock()
	if snap, err := ds.Snapshot(ctx); err != nil || snap.Nodes["n9"] != nil || snap.Nodes["n2"] == nil {
		t.Errorf("Snapshot with a bad value: %v", err)
	}
	// It can be deleted.
	if err := ds.Delete(ctx, []Ref{{KindNode, "n9"}}); err != nil {
		t.Errorf("deleting the bad value: %v", err)
	}

	// The channel closes when ctx ends, and Close closes the others.
	ch2, err := ds.Watch(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	for range ch {
	}
	ds.Close()
	for range ch2 {
	}
	if _, err := ds.Watch(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Watch after Close: %v", err)
	}
	if _, err := ds.Snapshot(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Snapshot after Close: %v", err)
	}
}

// statusRecorder collects WithStatus calls.
type statusRecorder struct{ ch chan statusEvent }

type statusEvent struct {
	ok  bool
	why string
}

func newStatusRecorder() *statusRecorder { return &statusRecorder{ch: make(chan statusEvent, 100)} }

func (r *statusRecorder) option() Option {
	return WithStatus(func(ok bool, why string) { r.ch <- statusEvent{ok, why} })
}

// wait returns the reason of the first report of ok within d.
func (r *statusRecorder) wait(t *testing.T, ok bool, d time.Duration) string {
	t.Helper()
	deadline := time.After(d)
	for {
		select {
		case ev := <-r.ch:
			if ev.ok == ok {
				return ev.why
			}
		case <-deadline:
			t.Fatalf("no status ok=%v within %v", ok, d)
		}
	}
}

// Fail static: etcd stops; the watch stays open and silent, the status
// says why; etcd comes back; changes made after that arrive.
func TestEtcdStopStart(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv := etcdtest.Start(t)
	status := newStatusRecorder()
	ds := openEtcdStore(t, srv, status.option())
	if err := ds.Apply(ctx, baseResources()); err != nil {
		t.Fatal(err)
	}
	status.wait(t, true, waitFor)
	ch, err := ds.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	first := waitSnapshot(t, ch, waitFor, "initial", func(*Snapshot) bool { return true })
	kaDone := make(chan error, 1)
	go func() { kaDone <- ds.KeepAlive(ctx, "n1", 2*time.Second) }()

	srv.Stop()
	why := status.wait(t, false, 5*time.Second)
	if !strings.Contains(why, "etcd unreachable at "+srv.Addr()) {
		t.Errorf("status reason %q does not name etcd", why)
	}
	// Requests fail, naming etcd, after the request timeout; meanwhile
	// the watch stays open and silent.
	var reqs sync.WaitGroup
	reqs.Add(2)
	go func() {
		defer reqs.Done()
		if _, err := ds.Snapshot(ctx); err == nil || !strings.HasPrefix(err.Error(), "etcd snapshot: etcd unreachable at "+srv.Addr()) ||
			!strings.HasSuffix(err.Error(), "; "+srv.Addr()+": connect: connection refused)") {
			t.Errorf("Snapshot while etcd is down: %v", err)
		}
	}()
	go func() {
		defer reqs.Done()
		if err := ds.Apply(ctx, []Resource{node("n2", "10.30.0.11/24")}); err == nil || !strings.HasPrefix(err.Error(), "etcd apply: etcd unreachable") {
			t.Errorf("Apply while etcd is down: %v", err)
		}
	}()
	quiet(t, ch, time.Second)
	reqs.Wait()

	srv.Start()
	status.wait(t, true, 10*time.Second)
	if err := ds.Apply(ctx, []Resource{node("n2", "10.30.0.11/24")}); err != nil {
		t.Fatal(err)
	}
	s := waitSnapshot(t, ch, 10*time.Second, "after restart", func(s *Snapshot) bool { return s.Nodes["n2"] != nil })
	if s.Revision <= first.Revision || len(s.Endpoints) != len(first.Endpoints) {
		t.Errorf("after restart: revision %d (was %d), %d endpoints", s.Revision, first.Revision, len(s.Endpoints))
	}
	// The node is live again, however its lease fared.
	deadline := time.Now().Add(10 * time.Second)
	for {
		live, err := ds.Live(ctx)
		if err == nil && live["n1"] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("n1 not live after the restart: %v %v", live, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	cancel()
	if err := <-kaDone; !errors.Is(err, context.Canceled) {
		t.Errorf("KeepAlive returned %v", err)
	}
}

// An agent that starts while etcd is down waits for it.
func TestEtcdWatchBeforeEtcd(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv := etcdtest.Start(t)
	seed := openEtcdStore(t, srv)
	if err := seed.Apply(ctx, baseResources()); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	status := newStatusRecorder()
	ds := openEtcdStore(t, srv, status.option())
	ch, err := ds.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	status.wait(t, false, 5*time.Second)
	quiet(t, ch, 300*time.Millisecond)
	srv.Start()
	s := waitSnapshot(t, ch, 10*time.Second, "first", func(*Snapshot) bool { return true })
	sameModel(t, s, canonical(baseResources()))
	status.wait(t, true, waitFor)
}

// proxy forwards TCP connections to etcd until cut, so that a test can
// take etcd away from one store while changing it through another.
type proxy struct {
	l      net.Listener
	target string
	mu     sync.Mutex
	cut    bool
	conns  map[net.Conn]bool
}

func startProxy(t *testing.T, target string) *proxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{l: l, target: target, conns: map[net.Conn]bool{}}
	go p.serve()
	t.Cleanup(func() {
		l.Close()
		p.Cut()
	})
	return p
}

func (p *proxy) addr() string { return p.l.Addr().String() }

func (p *proxy) serve() {
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.cut {
			p.mu.Unlock()
			c.Close()
			continue
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns[c], p.conns[up] = true, true
		p.mu.Unlock()
		go func() { io.Copy(up, c); up.Close() }()
		go func() { io.Copy(c, up); c.Close() }()
	}
}

// Cut closes every connection and refuses new ones until Restore.
func (p *proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

func (p *proxy) Restore() {
	p.mu.Lock()
	p.cut = false
	p.mu.Unlock()
}

// logRecorder keeps the messages a store logs.
type logRecorder struct {
	mu   sync.Mutex
	msgs []string
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	l.msgs = append(l.msgs, r.Message)
	l.mu.Unlock()
	return nil
}
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logRecorder) WithGroup(string) slog.Handler      { return l }

func (l *logRecorder) count(substr string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, m := range l.msgs {
		if strings.Contains(m, substr) {
			n++
		}
	}
	return n
}

// cutAndChange takes etcd away from a watching store, makes changes
// through another, runs during (e.g. a compaction), and gives etcd back.
// It returns the snapshot with the changes and the watching store's log.
func cutAndChange(t *testing.T, during func(ctx context.Context, srv *etcdtest.Server)) (*Snapshot, *logRecorder) {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	srv := etcdtest.Start(t)
	px := startProxy(t, srv.Addr())
	direct := openEtcdStore(t, srv)
	if err := direct.Apply(ctx, baseResources()); err != nil {
		t.Fatal(err)
	}
	status := newStatusRecorder()
	logs := &logRecorder{}
	ds, err := Open("etcd://"+px.addr(), WithEtcdPrefix(direct.Prefix()), WithLogger(slog.New(logs)), status.option())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ds.Close() })
	ch, err := ds.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	first := waitSnapshot(t, ch, waitFor, "initial", func(*Snapshot) bool { return true })
	status.wait(t, true, waitFor)

	px.Cut()
	status.wait(t, false, 5*time.Second)
	if err := direct.Apply(ctx, []Resource{wep("web-3", "n1", "tap3", "10.65.0.7/32")}); err != nil {
		t.Fatal(err)
	}
	if err := direct.Delete(ctx, []Ref{{KindWorkloadEndpoint, "web-2"}}); err != nil {
		t.Fatal(err)
	}
	during(ctx, srv)
	quiet(t, ch, 300*time.Millisecond)

	px.Restore()
	status.wait(t, true, 10*time.Second)
	s := waitSnapshot(t, ch, 10*time.Second, "after the cut", func(s *Snapshot) bool {
		return s.Endpoints["web-3"] != nil && s.Endpoints["web-2"] == nil
	})
	want, _ := direct.Snapshot(ctx)
	if s.Revision <= first.Revision {
		t.Errorf("revision %d after the cut, %d before", s.Revision, first.Revision)
	}
	sameModel(t, s, want)
	return s, logs
}

func TestEtcdWatchResumes(t *testing.T) {
	_, logs := cutAndChange(t, func(context.Context, *etcdtest.Server) {})
	// Resumed from its revision (by the etcd client's own retry or by
	// reopening the watch), not by reading everything again.
	if logs.count("reading everything again") != 0 {
		t.Errorf("not resumed from its revision: %q", logs.msgs)
	}
}

func TestEtcdWatchResyncsAfterCompaction(t *testing.T) {
	_, logs := cutAndChange(t, func(ctx context.Context, srv *etcdtest.Server) {
		cli := srv.Client(t)
		resp, err := cli.Get(ctx, "/")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cli.Compact(ctx, resp.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
			t.Fatal(err)
		}
	})
	if logs.count("history compacted past the watch") == 0 {
		t.Errorf("no resync after compaction: %q", logs.msgs)
	}
}

func TestEtcdLiveness(t *testing.T) {
	ctx := context.Background()
	srv := etcdtest.Start(t)
	ds := openEtcdStore(t, srv)
	if err := ds.KeepAlive(ctx, "Not_A_Name", time.Second); err == nil {
		t.Error("KeepAlive took an invalid node name")
	}
	kctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- ds.KeepAlive(kctx, "n1", time.Second) }()
	waitLive := func(want bool, within time.Duration) {
		t.Helper()
		deadline := time.Now().Add(within)
		for {
			live, err := ds.Live(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if live["n1"] == want && len(live) == map[bool]int{true: 1, false: 0}[want] {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("Live = %v; want n1 live %v within %v", live, want, within)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitLive(true, waitFor)
	// Alive for longer than the ttl while KeepAlive runs.
	time.Sleep(2500 * time.Millisecond)
	waitLive(true, 0)
	stop()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("KeepAlive returned %v", err)
	}
	// Not revoked: gone only once the ttl (etcd's minimum, 2 s) passes.
	waitLive(false, 6*time.Second)

	// Close ends KeepAlive.
	go func() { done <- ds.KeepAlive(ctx, "n2", time.Second) }()
	time.Sleep(200 * time.Millisecond)
	ds.Close()
	if err := <-done; !errors.Is(err, ErrClosed) {
		t.Errorf("KeepAlive after Close returned %v", err)
	}
}

func TestEtcdPrefixIsolation(t *testing.T) {
	ctx := context.Background()
	srv := etcdtest.Start(t)
	a, err := Open(srv.URL(), WithEtcdPrefix("/lab-a"), WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := Open(srv.URL()+"?prefix=/lab-b", WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	chB, err := b.Watch(wctx)
	if err != nil {
		t.Fatal(err)
	}
	waitSnapshot(t, chB, waitFor, "initial", func(*Snapshot) bool { return true })
	if err := a.Apply(ctx, baseResources()); err != nil {
		t.Fatal(err)
	}
	// The same names in the other prefix, with addresses that would
	// clash if the two were one model.
	if err := b.Apply(ctx, []Resource{pool("pool-a", "10.65.0.0/16"), wep("web-1", "n1", "tap1", "10.65.0.5/32")}); err != nil {
		t.Fatal(err)
	}
	sb := waitSnapshot(t, chB, waitFor, "own change", func(s *Snapshot) bool { return s.Endpoints["web-1"] != nil })
	if len(sb.Endpoints) != 1 || len(sb.Nodes) != 0 {
		t.Errorf("b sees a's model: %s", describeModel(sb))
	}
	sa, err := a.Snapshot(ctx)
	if err != nil || len(sa.Endpoints) != 2 {
		t.Fatalf("a: %v %v", err, sa)
	}
	ka, _ := a.(Liveness)
	kb, _ := b.(Liveness)
	kctx, stop := context.WithCancel(ctx)
	defer stop()
	go ka.KeepAlive(kctx, "n1", 5*time.Second)
	deadline := time.Now().Add(waitFor)
	for {
		la, _ := ka.Live(ctx)
		if la["n1"] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("n1 never live in a")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if lb, err := kb.Live(ctx); err != nil || len(lb) != 0 {
		t.Errorf("b's liveness: %v %v", lb, err)
	}
}

func TestEtcdTLS(t *testing.T) {
	ctx := context.Background()
	srv := etcdtest.StartTLS(t)
	ds, err := Open(srv.URL(), WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	defer ds.Close()
	if err := ds.Apply(ctx, baseResources()); err != nil {
		t.Fatal(err)
	}
	s, err := ds.Snapshot(ctx)
	if err != nil || len(s.Endpoints) != 2 {
		t.Fatalf("%v %v", err, s)
	}
	// The same through WithTLS, and without a client certificate, which
	// the server requires.
	f := srv.TLS()
	ds2, err := Open("etcd://"+srv.Addr(), WithTLS(f.CA, f.Cert, f.Key), WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	defer ds2.Close()
	if _, err := ds2.Snapshot(ctx); err != nil {
		t.Fatal(err)
	}
	ds3, err := Open("etcd://"+srv.Addr(), WithTLS(f.CA, "", ""), WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	defer ds3.Close()
	if _, err := ds3.Snapshot(ctx); err == nil || !strings.Contains(err.Error(), "; "+srv.Addr()+": tls: ") {
		t.Errorf("without a client certificate: %v; want the TLS failure named", err)
	}
}

// The model is read a page of keys at a time (every page at the first
// one's revision, so that a write between two pages is not half seen).
func TestEtcdReadsInPages(t *testing.T) {
	ctx := context.Background()
	srv := etcdtest.Start(t)
	ds := openEtcdStore(t, srv)
	rs := modelResources()
	if err := ds.Apply(ctx, rs); err != nil {
		t.Fatal(err)
	}
	defer func(n int64) { readPage = n }(readPage)
	readPage = 2
	s, err := ds.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sameModel(t, s, canonical(rs))
	if len(rs) <= 2*int(readPage) {
		t.Fatalf("only %d resources: no third page", len(rs))
	}

	all, rev, err := ds.readPages(ctx, ds.resPrefix)
	if err != nil || len(all) != len(rs) || rev != int64(s.Revision) {
		t.Fatalf("pages: %d keys at %d (%v), want %d at %d", len(all), rev, err, len(rs), s.Revision)
	}
}

// A block write reads and compares the block's key and its pool's only,
// writes no key every writer rewrites, and keeps the block index; other
// writes compare each kind's keys (and deletion marker) they depend on,
// not the blocks unless they write pools or blocks.
func TestEtcdBlockWritesAreLocal(t *testing.T) {
	ctx := context.Background()
	srv := etcdtest.Start(t)
	ds := openEtcdStore(t, srv)
	cli := srv.Client(t)
	if err := ds.Apply(ctx, modelResources()); err != nil {
		t.Fatal(err)
	}
	s, err := ds.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	blk := block("10.65.0.64/26", "pool-a", "n1")
	before := ds.BytesRead()
	if err := ds.Create(ctx, blk); err != nil {
		t.Fatal(err)
	}
	_, rev, err := ds.Get(ctx, RefOf(blk))
	if err != nil {
		t.Fatal(err)
	}
	blk.Spec.Allocations = map[netip.Addr]string{netip.MustParseAddr("10.65.0.70"): "h"}
	if err := ds.Update(ctx, blk, rev); err != nil {
		t.Fatal(err)
	}
	// The create read two absent/small keys; the get and the update the
	// block (twice) and the pool (twice): far less than the model.
	read := ds.BytesRead() - before
	whole := ds.BytesRead()
	if _, err := ds.Snapshot(ctx); err != nil {
		t.Fatal(err)
	}
	whole = ds.BytesRead() - whole
	t.Logf("create+get+update of a block read %d bytes; the model is %d", read, whole)
	if read == 0 || read > 1500 || read*2 > whole {
		t.Errorf("a block create, get and update read %d bytes (the model is %d)", read, whole)
	}
	if resp, err := cli.Get(ctx, ds.Prefix()+"/revision"); err != nil || len(resp.Kvs) != 0 {
		t.Errorf("the marker key every writer rewrote is written: %v %v", resp, err)
	}
	got, err := ds.NodeBlocks(ctx, "n1")
	if err != nil || len(got) != 2 || got[0].Metadata.Name != "10-65-0-0-26" || got[1].Metadata.Name != "10-65-0-64-26" {
		t.Errorf("NodeBlocks(n1) = %v, %v; want both of n1's blocks", got, err)
	}
	if got, err := ds.NodeBlocks(ctx, "n2"); err != nil || len(got) != 0 {
		t.Errorf("NodeBlocks(n2) = %v, %v; want none", got, err)
	}

	// Guards, as a write validated at rev0 commits them.
	rev0 := int64(s.Revision)
	holds := func(kind string) bool {
		t.Helper()
		ok, err := ds.commit(ctx, "test", ds.guards(rev0, kindsOf(Ref{Kind: kind})), nil)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	// Only blocks changed since rev0: an endpoint write commits, a pool
	// write does not.
	if !holds(KindWorkloadEndpoint) {
		t.Error("a block write made an endpoint write conflict")
	}
	if holds(KindIPPool) {
		t.Error("a block write did not make a pool write conflict")
	}
	// A deletion leaves no key in the range; the kind's marker tells.
	if err := ds.Delete(ctx, []Ref{{KindFloatingIP, "web-1-fip"}}); err != nil {
		t.Fatal(err)
	}
	if holds(KindWorkloadEndpoint) {
		t.Error("a floating IP deleted since did not make an endpoint write conflict")
	}
	if resp, err := cli.Get(ctx, ds.Prefix()+"/deleted/floatingip"); err != nil || len(resp.Kvs) != 1 {
		t.Errorf("deletion marker of FloatingIP: %v %v", resp, err)
	}

	// Deleting the block drops it from the index.
	_, rev, _ = ds.Get(ctx, RefOf(blk))
	if err := ds.DeleteIf(ctx, RefOf(blk), rev); err != nil {
		t.Fatal(err)
	}
	if got, err := ds.NodeBlocks(ctx, "n1"); err != nil || len(got) != 1 {
		t.Errorf("NodeBlocks(n1) after the delete = %v, %v; want one", got, err)
	}
	if resp, err := cli.Get(ctx, ds.Prefix()+"/affinity/", clientv3.WithPrefix(), clientv3.WithKeysOnly()); err != nil || len(resp.Kvs) != 1 {
		t.Errorf("block index after the delete: %v %v; want one entry", resp, err)
	}
	if names, err := ds.Names(ctx, "ipamblocks"); err != nil || len(names) != 1 {
		t.Errorf("Names(ipamblocks) = %v, %v", names, err)
	}
	if pools, err := ds.List(ctx, KindIPPool); err != nil || len(pools) != 2 {
		t.Errorf("List(IPPool) = %v, %v; want two", pools, err)
	}
}

// Racing a pool's deletion against a block created in it, or against an
// endpoint with an address of it, never lets both through: the block
// write compares the pool key, the pool delete the blocks, and the
// endpoint write the pools' deletion marker.
func TestEtcdPoolDeleteRaces(t *testing.T) {
	ctx := context.Background()
	srv := etcdtest.Start(t)
	a, b := openEtcdStore(t, srv), openEtcdStore(t, srv)
	if err := a.Apply(ctx, []Resource{node("n1", "10.30.0.10/24")}); err != nil {
		t.Fatal(err)
	}
	const rounds = 15
	deleteWon := map[string]int{}
	for i := range 2 * rounds {
		name := fmt.Sprintf("p%d", i)
		cidr := fmt.Sprintf("10.%d.0.0/16", 100+i)
		if err := a.Apply(ctx, []Resource{pool(name, cidr)}); err != nil {
			t.Fatal(err)
		}
		var other Resource = block(strings.TrimSuffix(cidr, "/16")+"/26", name, "n1")
		write := func() error { return b.Create(ctx, other) }
		what := "a block"
		if i >= rounds {
			what = "an endpoint"
			other = wep(fmt.Sprintf("w%d", i), "n1", fmt.Sprintf("tap%d", i), fmt.Sprintf("10.%d.0.1/32", 100+i))
			write = func() error { return b.Apply(ctx, []Resource{other}) }
		}
		var wg sync.WaitGroup
		var delErr, writeErr error
		wg.Add(2)
		go func() { defer wg.Done(); delErr = a.Delete(ctx, []Ref{{KindIPPool, name}}) }()
		go func() { defer wg.Done(); writeErr = write() }()
		wg.Wait()
		if delErr == nil && writeErr == nil {
			t.Errorf("round %d: the pool was deleted and %s written in it", i, what)
		}
		if delErr != nil && writeErr != nil {
			t.Errorf("round %d: both refused: %v; %v", i, delErr, writeErr)
		}
		if delErr == nil {
			deleteWon[what]++
		}
		s, err := a.Snapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Validate(); err != nil {
			t.Errorf("round %d: the model is broken: %v", i, err)
		}
	}
	t.Logf("the delete won %d of %d rounds against a block, %d against an endpoint", deleteWon["a block"], rounds, deleteWon["an endpoint"])
}

// TestEtcdIndexBlocks: a block written without the block index (by an
// older calyx, or etcdctl) is not found by NodeBlocks until IndexBlocks
// adds it; only the named node's blocks are indexed, and only once.
func TestEtcdIndexBlocks(t *testing.T) {
	ctx := context.Background()
	srv := etcdtest.Start(t)
	ds := openEtcdStore(t, srv)
	cli := srv.Client(t)
	if err := ds.Apply(ctx, modelResources()); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, b := range []*IPAMBlock{block("10.65.0.64/26", "pool-a", "n1"), block("10.65.0.128/26", "pool-a", "n2")} {
		ApplyDefaults(b)
		data, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cli.Put(ctx, ds.key(RefOf(b)), string(data)); err != nil {
			t.Fatal(err)
		}
		names = append(names, b.Metadata.Name)
	}
	count := func(node string) int {
		t.Helper()
		got, err := ds.NodeBlocks(ctx, node)
		if err != nil {
			t.Fatal(err)
		}
		return len(got)
	}
	n1 := count("n1")
	n, err := ds.IndexBlocks(ctx, "n1", append(names, "no-such-block"))
	if err != nil || n != 1 {
		t.Fatalf("IndexBlocks(n1) = %d, %v; want 1 added", n, err)
	}
	if got := count("n1"); got != n1+1 {
		t.Errorf("NodeBlocks(n1) finds %d blocks after indexing, want %d", got, n1+1)
	}
	if got := count("n2"); got != 0 {
		t.Errorf("n2's block was indexed for it without asking: %d", got)
	}
	if n, err := ds.IndexBlocks(ctx, "n1", names); err != nil || n != 0 {
		t.Errorf("IndexBlocks(n1) again = %d, %v; want 0", n, err)
	}
}
