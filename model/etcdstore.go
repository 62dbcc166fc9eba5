package model

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// EtcdStore keeps the model in etcd v3, for deployments of many hosts:
// one key per resource, <prefix>/resources/<kind lowercase>/<name>, holding
// the resource's JSON. Every write is one etcd transaction, validated
// against what it read and committed only if what its checks depend on is
// unchanged; it retries a few times when it was not. Liveness keys live
// under <prefix>/liveness/, bound to leases.
//
// How writes are kept apart, without one key every writer rewrites (which
// made all writers in a cluster wait for each other):
//
//   - IPAMBlock writes by Create, Update and DeleteIf (IPAM's claims,
//     allocations and releases) are compare-and-swaps on the block's own
//     key: they read the block and its IPPool (two keys, not the model),
//     check the block on its own and against that pool (exists, enabled,
//     contains the cidr, blockSize is its length), and commit only if the
//     block key is as read (CreateRevision 0 for a create, the given
//     ModRevision otherwise) and, for a put, the pool key is at the
//     ModRevision read, so a pool changed or deleted meanwhile makes the
//     write start over. Blocks cannot overlap: a block's name is its cidr
//     (BlockName, checked by Validate), so two blocks of one cidr are one
//     key, which the create compare catches; blocks of different cidrs
//     would have to differ in size, or lie in two pools, and every block
//     has its pool's blockSize and lies inside it while pools do not
//     overlap (both checked whenever a pool or block is written).
//   - Every other write reads the whole model, validates the model it
//     would make, and commits with one compare per kind: no key under the
//     kind's prefix written after the revision read (a range compare on
//     ModRevision), and no key of the kind deleted since (a deleted key
//     leaves nothing in the range to compare, so each write that deletes
//     resources of a kind also rewrites that kind's deletion marker,
//     <prefix>/deleted/<kind>, and writers compare those markers too). The
//     compares cover every kind but IPAMBlock, which only writes of pools
//     or blocks compare (blocks are read only by the rules about blocks
//     and their pools; and a deleted block breaks no rule, so block
//     deletions need no marker). So endpoint, policy or node writes do not
//     wait for IPAM's block writes nor the other way round, while any two
//     writes that one rule reads both of still conflict.
//
// The store keeps a per-node index of blocks, <prefix>/affinity/<node>/<block>
// (empty values), written in the transaction of every block write, so IPAM
// finds a node's blocks without reading the others (NodeBlocks). Blocks
// written before the index existed, or behind calyx's back, are not in it.
//
// Writes made behind calyx's back (etcdctl put) are seen by readers and
// watches, and a value that does not parse is logged and skipped like a
// broken file in the file store, but such writes are not validated and not
// serialized with calyx's writers.
//
// One apply is one transaction, so the etcd server's --max-txn-ops
// (default 128) bounds how many resources one Apply or Delete may hold
// (it also counts one deletion marker per kind deleted, and the compares,
// two per kind), and --max-request-bytes (default 1.5 MiB) their
// size. Deployments that apply large files raise both, e.g.
// --max-txn-ops=10000 --max-request-bytes=33554432.
type EtcdStore struct {
	cli       *clientv3.Client
	endpoints []string
	tlsConfig *tls.Config
	opts      options

	resPrefix  string // <prefix>/resources/
	livePrefix string // <prefix>/liveness/
	delPrefix  string // <prefix>/deleted/: a marker per kind, rewritten by deletes
	affPrefix  string // <prefix>/affinity/: <node>/<block> for each block

	bytesRead atomic.Uint64 // see BytesRead

	mu   sync.Mutex
	memo map[string]memoEntry // key → the last version parsed

	statusMu    sync.Mutex
	statusKnown bool
	statusOK    bool

	lifeMu    sync.Mutex // orders workers.Add against Close
	done      chan struct{}
	closeOnce sync.Once
	workers   sync.WaitGroup
}

var (
	_ Datastore = (*EtcdStore)(nil)
	_ Versioned = (*EtcdStore)(nil)
	_ Liveness  = (*EtcdStore)(nil)
)

// Timing of the etcd store; variables so that tests can shorten them.
var (
	// etcdRequestTimeout bounds every request, so that a call made while
	// etcd is unreachable fails rather than waits for ever.
	etcdRequestTimeout = 5 * time.Second
	// etcdProbeInterval is how often a watch checks that etcd answers,
	// and etcdProbeTimeout how long it waits for the answer.
	etcdProbeInterval = time.Second
	etcdProbeTimeout  = 2 * time.Second
	// etcdRetryMin and etcdRetryMax bound the backoff of watches and
	// KeepAlive between attempts to reach etcd.
	etcdRetryMin = 100 * time.Millisecond
	etcdRetryMax = 3 * time.Second
	// etcdWriteAttempts is how many times a write is tried when other
	// writers keep changing the model under it.
	etcdWriteAttempts = 50
)

const defaultEtcdPort = "2379"

// memoEntry is the parse of one key's value at one revision. res is the
// last version that parsed: a value that does not parse keeps the
// previous one, as a broken file does in the file store.
type memoEntry struct {
	modRev int64
	res    Resource
	bad    bool
}

// openEtcdURL opens the etcd store an "etcd://" URL names.
func openEtcdURL(rawURL string, opts []Option) (Datastore, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("invalid datastore url %q: %s", rawURL, fmt.Sprintf(format, args...))
	}
	rest := strings.TrimPrefix(rawURL, "etcd://")
	if rest == rawURL {
		return nil, bad("want etcd://HOST:PORT[,HOST:PORT]")
	}
	hosts, query, _ := strings.Cut(rest, "?")
	if i := strings.Index(hosts, "/"); i >= 0 {
		if hosts[i:] != "/" {
			return nil, bad("want etcd://HOST:PORT[,HOST:PORT] with no path (give a key prefix as ?prefix=%s)", hosts[i:])
		}
		hosts = hosts[:i]
	}
	var urlOpts []Option
	if query != "" {
		q, err := url.ParseQuery(query)
		if err != nil {
			return nil, bad("%v", err)
		}
		var ca, cert, key string
		for k, vs := range q {
			if len(vs) != 1 {
				return nil, bad("%s given %d times", k, len(vs))
			}
			switch k {
			case "ca":
				ca = vs[0]
			case "cert":
				cert = vs[0]
			case "key":
				key = vs[0]
			case "prefix":
				urlOpts = append(urlOpts, WithEtcdPrefix(vs[0]))
			default:
				return nil, bad("unknown parameter %q (want ca, cert, key or prefix)", k)
			}
		}
		if ca != "" || cert != "" || key != "" {
			urlOpts = append(urlOpts, WithTLS(ca, cert, key))
		}
	}
	var endpoints []string
	for _, h := range strings.Split(hosts, ",") {
		if h == "" {
			return nil, bad("want etcd://HOST:PORT[,HOST:PORT]")
		}
		if _, _, err := net.SplitHostPort(h); err != nil {
			// No port: etcd's client port.
			if strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]") {
				h = h + ":" + defaultEtcdPort
			} else if !strings.Contains(h, ":") {
				h = net.JoinHostPort(h, defaultEtcdPort)
			} else {
				return nil, bad("%q is not HOST:PORT (write IPv6 addresses as [ADDR]:PORT)", h)
			}
		}
		endpoints = append(endpoints, h)
	}
	return OpenEtcd(endpoints, append(urlOpts, opts...)...)
}

// OpenEtcd returns an etcd store using the given endpoints ("HOST:PORT";
// an http:// or https:// in front is ignored: WithTLS decides).
// It does not contact etcd: while etcd is unreachable the store's requests
// fail after a few seconds (and Watch waits for it), so an agent can start
// while etcd is down. It returns an error for no endpoints or TLS files
// that cannot be read.
func OpenEtcd(endpoints []string, opts ...Option) (*EtcdStore, error) {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	if len(endpoints) == 0 {
		return nil, errors.New("etcd datastore: no endpoints")
	}
	prefix := strings.TrimRight(o.etcdPrefix, "/")
	var tlsConfig *tls.Config
	if o.tlsCA != "" || o.tlsCert != "" || o.tlsKey != "" {
		var err error
		if tlsConfig, err = etcdTLSConfig(o.tlsCA, o.tlsCert, o.tlsKey); err != nil {
			return nil, fmt.Errorf("etcd tls: %w", err)
		}
	}
	scheme := "http://"
	if tlsConfig != nil {
		scheme = "https://"
	}
	hosts := make([]string, len(endpoints))
	eps := make([]string, len(endpoints))
	for i, ep := range endpoints {
		hosts[i] = strings.TrimPrefix(strings.TrimPrefix(ep, "http://"), "https://")
		eps[i] = scheme + hosts[i]
	}
	dialOptions := []grpc.DialOption{
		// Reconnect within a few seconds of etcd coming back, not after
		// gRPC's default backoff of up to two minutes.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
			MinConnectTimeout: 2 * time.Second,
		}),
	}
	if o.etcdDial != nil {
		dialOptions = append(dialOptions, grpc.WithContextDialer(o.etcdDial))
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:            eps,
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 5 * time.Second,
		PermitWithoutStream:  true,
		TLS:                  tlsConfig,
		MaxCallSendMsgSize:   64 << 20,
		Logger:               zap.NewNop(),
		DialOptions:          dialOptions,
	})
	if err != nil {
		return nil, fmt.Errorf("etcd client: %w", err)
	}
	return &EtcdStore{
		cli:        cli,
		endpoints:  hosts,
		tlsConfig:  tlsConfig,
		opts:       o,
		resPrefix:  prefix + "/resources/",
		livePrefix: prefix + "/liveness/",
		delPrefix:  prefix + "/deleted/",
		affPrefix:  prefix + "/affinity/",
		memo:       map[string]memoEntry{},
		done:       make(chan struct{}),
	}, nil
}

func etcdTLSConfig(caFile, certFile, keyFile string) (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("reading CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("reading CA: no PEM certificate in %s", caFile)
		}
		c.RootCAs = pool
	}
	if (certFile == "") != (keyFile == "") {
		return nil, errors.New("a client certificate needs both cert and key")
	}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("loading client certificate: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

// Endpoints returns the etcd endpoints the store uses ("HOST:PORT").
func (e *EtcdStore) Endpoints() []string { return append([]string(nil), e.endpoints...) }

// Prefix returns the store's key prefix, without a trailing "/".
func (e *EtcdStore) Prefix() string { return strings.TrimSuffix(e.resPrefix, "/resources/") }

func (e *EtcdStore) closed() bool {
	select {
	case <-e.done:
		return true
	default:
		return false
	}
}

// Close stops every watch (their channels are closed) and KeepAlive, waits
// for them, and closes the connection to etcd. It always returns nil.
func (e *EtcdStore) Close() error {
	e.closeOnce.Do(func() {
		e.lifeMu.Lock()
		close(e.done)
		e.lifeMu.Unlock()
		e.workers.Wait()
		_ = e.cli.Close()
	})
	return nil
}

// startWorker counts a goroutine that Close must wait for; false after
// Close.
func (e *EtcdStore) startWorker() bool {
	e.lifeMu.Lock()
	defer e.lifeMu.Unlock()
	if e.closed() {
		return false
	}
	e.workers.Add(1)
	return true
}

// workerContext returns ctx, also cancelled by Close.
func (e *EtcdStore) workerContext(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		select {
		case <-e.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

func (e *EtcdStore) report(err error) {
	e.opts.logger.Warn("datastore: skipping etcd value", "prefix", e.Prefix(), "err", err)
	if e.opts.onError != nil {
		e.opts.onError(err)
	}
}

// setStatus reports a change of etcd's reachability through WithStatus.
func (e *EtcdStore) setStatus(ok bool, why string) {
	e.statusMu.Lock()
	defer e.statusMu.Unlock()
	if e.statusKnown && e.statusOK == ok {
		return
	}
	e.statusKnown, e.statusOK = true, ok
	if ok {
		e.opts.logger.Info("datastore: etcd reachable", "endpoints", e.endpoints)
	} else {
		e.opts.logger.Warn("datastore: etcd unreachable", "endpoints", e.endpoints, "why", why)
	}
	if e.opts.status != nil {
		e.opts.status(ok, why)
	}
}

// observe updates the status from a request's outcome: success says etcd
// is reachable, a transport failure that it is not. Other errors (a
// request etcd refused) say nothing about reachability.
func (e *EtcdStore) observe(ctx context.Context, err error) {
	switch {
	case err == nil:
		e.setStatus(true, "")
	case ctx.Err() != nil:
		// The caller gave up; that says nothing about etcd.
	case unreachable(err):
		e.setStatus(false, e.describe(ctx, err).Error())
	}
}

// unreachable reports whether err means etcd could not be reached (or
// has no leader), as opposed to etcd refusing the request.
func unreachable(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		return ee.Code() == codes.Unavailable || ee.Code() == codes.DeadlineExceeded
	}
	if s, ok := status.FromError(err); ok {
		return s.Code() == codes.Unavailable || s.Code() == codes.DeadlineExceeded
	}
	return false
}

// describe makes a transport error say which etcd could not be reached.
func (e *EtcdStore) describe(ctx context.Context, err error) error {
	if ctx.Err() == nil && unreachable(err) {
		return fmt.Errorf("etcd unreachable at %s: %w", strings.Join(e.endpoints, ","), err)
	}
	return err
}

// request runs one etcd request bounded by etcdRequestTimeout, updates
// the status from its outcome and describes a transport error.
func (e *EtcdStore) request(ctx context.Context, do func(ctx context.Context) error) error {
	rctx, cancel := context.WithTimeout(ctx, etcdRequestTimeout)
	defer cancel()
	err := do(rctx)
	if err != nil && ctx.Err() == nil && rctx.Err() != nil {
		// The client waits for a connection until the deadline, which
		// hides why there is none: look for ourselves.
		err = fmt.Errorf("%w (no answer within %v%s)", err, etcdRequestTimeout, e.diagnose())
	}
	e.observe(ctx, err)
	if err != nil {
		return e.describe(ctx, err)
	}
	return nil
}

// diagnose tries each endpoint directly (TCP, then the TLS handshake) and
// returns what failed, as "; HOST:PORT: reason" for each, or "".
func (e *EtcdStore) diagnose() string {
	var b strings.Builder
	for _, ep := range e.endpoints {
		if why := probeEndpoint(ep, e.tlsConfig); why != "" {
			fmt.Fprintf(&b, "; %s: %s", ep, why)
		}
	}
	return b.String()
}

func probeEndpoint(ep string, tc *tls.Config) string {
	const wait = 500 * time.Millisecond
	c, err := net.DialTimeout("tcp", ep, wait)
	if err != nil {
		var oe *net.OpError
		if errors.As(err, &oe) && oe.Err != nil {
			err = oe.Err
		}
		return err.Error()
	}
	defer c.Close()
	if tc == nil {
		return ""
	}
	cfg := tc.Clone()
	if cfg.ServerName == "" {
		cfg.ServerName, _, _ = net.SplitHostPort(ep)
	}
	tlsConn := tls.Client(c, cfg)
	_ = tlsConn.SetDeadline(time.Now().Add(wait))
	if err := tlsConn.Handshake(); err != nil {
		return "tls: " + strings.TrimPrefix(err.Error(), "tls: ")
	}
	// With TLS 1.3 a server that refuses the client's certificate says so
	// only after the handshake.
	var one [1]byte
	if _, err := tlsConn.Read(one[:]); err != nil {
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			return "tls: " + strings.TrimPrefix(err.Error(), "tls: ")
		}
	}
	return ""
}

func (e *EtcdStore) key(ref Ref) string { return e.resPrefix + kindDir(ref.Kind) + "/" + ref.Name }

// refOfKey maps a resource key back to its Ref. A key that names no kind
// or holds an invalid name is an error.
func (e *EtcdStore) refOfKey(key string) (Ref, error) {
	rest := strings.TrimPrefix(key, e.resPrefix)
	dir, name, ok := strings.Cut(rest, "/")
	kind, known := kindOfDir(dir)
	switch {
	case !ok || !known:
		return Ref{}, fmt.Errorf("etcd key %s: not <prefix>/resources/<kind>/<name> with a known kind; ignored", key)
	case !validName(name):
		return Ref{}, fmt.Errorf("etcd key %s: the name is not a valid resource name (lowercase letters, digits, '-' and '.'); ignored", key)
	}
	return Ref{Kind: kind, Name: name}, nil
}

// parse returns the resource to show for key at modRev, parsing value
// only when the memo does not already hold that version. A value that does
// not parse is reported once and the previous good version, if any, is
// returned. It returns nil when there is nothing to show.
func (e *EtcdStore) parse(key string, value []byte, modRev int64) Resource {
	e.mu.Lock()
	old, had := e.memo[key]
	e.mu.Unlock()
	if had && old.modRev == modRev {
		return old.res
	}
	// Parsed without the lock, so that a large read parses on every CPU.
	ref, err := e.refOfKey(key)
	var res Resource
	if err == nil {
		res, err = parseStored(value, ref, "etcd key "+key)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	old, had = e.memo[key] // as it is now
	switch {
	case had && old.modRev == modRev:
		return old.res // parsed meanwhile by another reader
	case had && old.modRev > modRev:
		// An older version than one already seen: parsed for this
		// reader without disturbing the memo.
		return res
	case err != nil:
		e.memo[key] = memoEntry{modRev: modRev, res: old.res, bad: true}
		e.report(err)
		if ref.Kind == "" {
			return nil // the key names no resource
		}
		return old.res
	}
	e.memo[key] = memoEntry{modRev: modRev, res: res}
	return res
}

// storedKV is a key's value and revision as read.
type storedKV struct {
	value  []byte
	modRev int64
}

// BytesRead is how many bytes of keys and values the store has read from
// etcd since it was opened: the sum, over every answer to a Get or a Txn,
// of the length of each key and value in it. Watch events are not
// counted. It tells tests and benchmarks how much of the model an
// operation reads; it never fails.
func (e *EtcdStore) BytesRead() uint64 { return e.bytesRead.Load() }

// count adds what kvs hold to BytesRead.
func (e *EtcdStore) count(kvs []*mvccpb.KeyValue) {
	var n int
	for _, kv := range kvs {
		n += len(kv.Key) + len(kv.Value)
	}
	e.bytesRead.Add(uint64(n))
}

// read returns the model at the current revision, with every resource key
// read (parsed or not).
func (e *EtcdStore) read(ctx context.Context) (*Snapshot, map[string]storedKV, error) {
	var all []*mvccpb.KeyValue
	var rev int64
	err := e.request(ctx, func(ctx context.Context) error {
		var err error
		all, rev, err = e.readPages(ctx, e.resPrefix)
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	s := NewSnapshot()
	s.Revision = uint64(rev)
	parsed := make([]Resource, len(all))
	eachParallel(len(all), func(i int) {
		parsed[i] = e.parse(string(all[i].Key), all[i].Value, all[i].ModRevision)
	})
	kvs := make(map[string]storedKV, len(all))
	for i, kv := range all {
		kvs[string(kv.Key)] = storedKV{value: kv.Value, modRev: kv.ModRevision}
		if parsed[i] != nil {
			s.Put(parsed[i])
		}
	}
	e.mu.Lock()
	for key, m := range e.memo {
		if _, ok := kvs[key]; !ok && m.modRev <= rev {
			delete(e.memo, key)
		}
	}
	e.mu.Unlock()
	return s, kvs, nil
}

// readPage is how many keys one read request asks etcd for: a model of
// 50,000 endpoints is then many small answers, not one that etcd builds
// (and holds) whole.
var readPage int64 = 1000

// readPages reads every key under prefix, readPage keys per request, all
// at the revision of the first request (a consistent snapshot), and
// returns them with that revision; opts are added to every request (e.g.
// clientv3.WithKeysOnly()). Should the revision be compacted meanwhile,
// the error says so and the caller's retry starts over.
func (e *EtcdStore) readPages(ctx context.Context, prefix string, opts ...clientv3.OpOption) ([]*mvccpb.KeyValue, int64, error) {
	end := clientv3.GetPrefixRangeEnd(prefix)
	key := prefix
	var all []*mvccpb.KeyValue
	var rev int64
	for {
		o := append([]clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(readPage)}, opts...)
		if rev > 0 {
			o = append(o, clientv3.WithRev(rev))
		}
		resp, err := e.cli.Get(ctx, key, o...)
		if err != nil {
			return nil, 0, err
		}
		e.count(resp.Kvs)
		if rev == 0 {
			rev = resp.Header.Revision
		}
		all = append(all, resp.Kvs...)
		if !resp.More || len(resp.Kvs) == 0 {
			return all, rev, nil
		}
		// The next page starts just after the last key read.
		key = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// Snapshot reads every resource at etcd's current revision, which becomes
// the snapshot's Revision. Values that do not parse are logged and
// skipped. It returns ErrClosed after Close, or an error naming etcd when
// it does not answer within a few seconds.
func (e *EtcdStore) Snapshot(ctx context.Context) (*Snapshot, error) {
	if e.closed() {
		return nil, ErrClosed
	}
	s, _, err := e.read(ctx)
	if err != nil {
		return nil, fmt.Errorf("etcd snapshot: %w", err)
	}
	return s, nil
}

// plan is what a write does: the operations of its transaction, the
// conditions it needs besides what it read being unchanged, and the kinds
// it puts or deletes (which decide what "what it read" is, see guards).
type plan struct {
	ops     []clientv3.Op
	cmps    []clientv3.Cmp
	kinds   map[string]bool // kinds put or deleted
	deleted map[string]bool // kinds deleted
}

// kindPrefix is where the keys of kind live, "/" included.
func (e *EtcdStore) kindPrefix(kind string) string { return e.resPrefix + kindDir(kind) + "/" }

// deletionMarker is the key every write that deletes resources of kind
// rewrites, so that writers that read the kind see the deletion.
func (e *EtcdStore) deletionMarker(kind string) string { return e.delPrefix + kindDir(kind) }

// guards are the compares that let a write validated against the model at
// rev commit only if nothing its cross-resource checks read has changed
// since: for each kind, no key under the kind's prefix modified after rev
// (a range compare: it sees puts) and the kind's deletion marker not
// rewritten after rev (it sees deletes, which leave no key to compare).
// IPAMBlocks are compared only when the write puts or deletes pools or
// blocks: no other rule reads them. Block deletions have no marker: a
// block going away breaks no rule.
func (e *EtcdStore) guards(rev int64, kinds map[string]bool) []clientv3.Cmp {
	var cmps []clientv3.Cmp
	for _, kind := range kindOrder {
		if kind == KindIPAMBlock {
			if kinds[KindIPPool] || kinds[KindIPAMBlock] {
				cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(e.kindPrefix(kind)), "<", rev+1).WithPrefix())
			}
			continue
		}
		cmps = append(cmps,
			clientv3.Compare(clientv3.ModRevision(e.kindPrefix(kind)), "<", rev+1).WithPrefix(),
			clientv3.Compare(clientv3.ModRevision(e.deletionMarker(kind)), "<", rev+1))
	}
	return cmps
}

// write runs one write that reads the whole model: it reads it, lets build
// check it and plan the transaction, and commits that only if nothing the
// checks read changed since (guards), retrying from the read when
// something did. build's errors are returned as they are; a plan with no
// operations writes nothing.
func (e *EtcdStore) write(ctx context.Context, what string, build func(before *Snapshot, kvs map[string]storedKV) (plan, error)) error {
	return e.retryWrites(ctx, what, func() (bool, error) {
		before, kvs, err := e.read(ctx)
		if err != nil {
			return false, fmt.Errorf("etcd %s: %w", what, err)
		}
		p, err := build(before, kvs)
		if err != nil || len(p.ops) == 0 {
			return true, err
		}
		rev := int64(before.Revision)
		cmps := append(e.guards(rev, p.kinds), p.cmps...)
		ops := p.ops
		for _, kind := range kindOrder {
			if p.deleted[kind] && kind != KindIPAMBlock {
				ops = append(ops, clientv3.OpPut(e.deletionMarker(kind), strconv.FormatInt(rev, 10)))
			}
		}
		return e.commit(ctx, what, cmps, ops)
	})
}

// retryWrites runs try until it has committed (true) or fails, pausing a
// little between attempts; after etcdWriteAttempts it gives up with
// ErrConflict. try's errors are returned as they are.
func (e *EtcdStore) retryWrites(ctx context.Context, what string, try func() (bool, error)) error {
	for attempt := 1; ; attempt++ {
		done, err := try()
		if err != nil || done {
			return err
		}
		if attempt == etcdWriteAttempts {
			return fmt.Errorf("etcd %s: %w: other writers kept changing the model (%d attempts)", what, ErrConflict, attempt)
		}
		// Another writer won the race: read again, after a pause that
		// spreads out writers that lost together.
		pause := time.Duration(rand.Int64N(int64(min(attempt, 20)) * int64(2*time.Millisecond)))
		select {
		case <-ctx.Done():
			return fmt.Errorf("etcd %s: %w", what, ctx.Err())
		case <-e.done:
			return ErrClosed
		case <-time.After(pause):
		}
	}
}

// commit runs one transaction and says whether its compares held.
func (e *EtcdStore) commit(ctx context.Context, what string, cmps []clientv3.Cmp, ops []clientv3.Op) (bool, error) {
	var resp *clientv3.TxnResponse
	err := e.request(ctx, func(ctx context.Context) error {
		var err error
		resp, err = e.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
		return err
	})
	if err != nil {
		if errors.Is(err, rpctypes.ErrTooManyOps) || errors.Is(err, rpctypes.ErrRequestTooLarge) {
			return false, fmt.Errorf("etcd %s: %w (one apply is one transaction: raise the etcd server's --max-txn-ops and --max-request-bytes, or apply fewer resources at once)", what, err)
		}
		return false, fmt.Errorf("etcd %s: %w", what, err)
	}
	return resp.Succeeded, nil
}

// putOps plans puts of the resources whose stored value differs, and the
// block index entries of the blocks among them (before holds the blocks
// as stored).
func (e *EtcdStore) putOps(prepared []Resource, kvs map[string]storedKV, before *Snapshot) ([]clientv3.Op, error) {
	var ops []clientv3.Op
	for _, r := range prepared {
		data, err := json.Marshal(r)
		if err != nil {
			return nil, fmt.Errorf("encoding %s: %w", RefOf(r), err)
		}
		key := e.key(RefOf(r))
		if cur, ok := kvs[key]; ok && bytes.Equal(cur.value, data) {
			continue // stored as is; rewriting would only wake watchers
		}
		ops = append(ops, clientv3.OpPut(key, string(data)))
		if b, ok := r.(*IPAMBlock); ok {
			ops = append(ops, e.affinityOps(before.Blocks[b.Metadata.Name], b)...)
		}
	}
	return ops, nil
}

// kindsOf is the set of the kinds of refs.
func kindsOf(refs ...Ref) map[string]bool {
	kinds := make(map[string]bool, len(refs))
	for _, ref := range refs {
		kinds[ref.Kind] = true
	}
	return kinds
}

// refsOf lists the refs of rs.
func refsOf(rs []Resource) []Ref {
	refs := make([]Ref, len(rs))
	for i, r := range rs {
		refs[i] = RefOf(r)
	}
	return refs
}

// Apply validates rs (each resource after defaulting, then the model that
// would result) and writes them all or none in one etcd transaction.
// Resources already stored as they are given are not rewritten. It returns
// the validation errors (as *ValidationError, exactly as the file store
// does), an error for a resource given twice, ErrClosed, or an error
// naming etcd when it failed or did not answer; ErrConflict wrapped when
// other writers kept changing the model through 50 attempts.
func (e *EtcdStore) Apply(ctx context.Context, rs []Resource) error {
	if e.closed() {
		return ErrClosed
	}
	prepared, err := prepareApply(rs)
	if err != nil || len(prepared) == 0 {
		return err
	}
	return e.write(ctx, "apply", func(before *Snapshot, kvs map[string]storedKV) (plan, error) {
		if err := applyProblems(before, prepared); err != nil {
			return plan{}, err
		}
		ops, err := e.putOps(prepared, kvs, before)
		return plan{ops: ops, kinds: kindsOf(refsOf(prepared)...)}, err
	})
}

// Delete removes refs all or none in one etcd transaction. Every ref must
// name a stored key (a value that does not parse can be deleted); the
// resulting model must not gain cross-resource errors. It returns errors
// wrapping ErrNotFound for missing resources, the validation errors,
// ErrClosed, or an error naming etcd when it failed or did not answer.
func (e *EtcdStore) Delete(ctx context.Context, refs []Ref) error {
	if e.closed() {
		return ErrClosed
	}
	norm, err := normalizeRefs(refs)
	if err != nil || len(norm) == 0 {
		return err
	}
	return e.write(ctx, "delete", func(before *Snapshot, kvs map[string]storedKV) (plan, error) {
		after := before.Clone()
		var errs []error
		var ops []clientv3.Op
		seen := map[Ref]bool{}
		for _, ref := range norm {
			if seen[ref] {
				continue
			}
			seen[ref] = true
			key := e.key(ref)
			if _, ok := kvs[key]; !ok {
				errs = append(errs, fmt.Errorf("%s: %w", ref, ErrNotFound))
				continue
			}
			after.Remove(ref)
			ops = append(ops, clientv3.OpDelete(key))
			if ref.Kind == KindIPAMBlock {
				ops = append(ops, e.affinityOps(before.Blocks[ref.Name], nil)...)
			}
		}
		if len(errs) > 0 {
			return plan{}, errors.Join(errs...)
		}
		if err := newProblems(before, after, nil); err != nil {
			return plan{}, err
		}
		kinds := kindsOf(norm...)
		return plan{ops: ops, kinds: kinds, deleted: kinds}, nil
	})
}

// Get returns the resource ref names and its key's ModRevision. It returns
// an error wrapping ErrNotFound when the key does not exist, the parse
// error when its value does not parse, ErrClosed, or an error naming etcd.
func (e *EtcdStore) Get(ctx context.Context, ref Ref) (Resource, int64, error) {
	if e.closed() {
		return nil, 0, ErrClosed
	}
	ref, err := normalizeRef(ref)
	if err != nil {
		return nil, 0, err
	}
	var resp *clientv3.GetResponse
	if err := e.request(ctx, func(ctx context.Context) error {
		var err error
		resp, err = e.cli.Get(ctx, e.key(ref))
		return err
	}); err != nil {
		return nil, 0, fmt.Errorf("etcd get %s: %w", ref, err)
	}
	e.count(resp.Kvs)
	if len(resp.Kvs) == 0 {
		return nil, 0, fmt.Errorf("%s: %w", ref, ErrNotFound)
	}
	kv := resp.Kvs[0]
	r, err := parseStored(kv.Value, ref, "etcd key "+string(kv.Key))
	if err != nil {
		return nil, 0, err
	}
	return r, kv.ModRevision, nil
}

// Create writes r only if its key does not exist; otherwise it returns an
// error wrapping ErrExists. Otherwise it behaves as Apply of r alone,
// except that an IPAMBlock is checked against its pool only and written
// with a compare on its key and its pool's (see EtcdStore).
func (e *EtcdStore) Create(ctx context.Context, r Resource) error {
	if e.closed() {
		return ErrClosed
	}
	c, err := prepareOne(r)
	if err != nil {
		return err
	}
	ref := RefOf(c)
	key := e.key(ref)
	if b, ok := c.(*IPAMBlock); ok {
		return e.writeBlock(ctx, "create", ref, b, func(_ storedKV, ok bool) error {
			if ok {
				return fmt.Errorf("%s: %w", ref, ErrExists)
			}
			return nil
		}, clientv3.Compare(clientv3.CreateRevision(key), "=", 0))
	}
	return e.write(ctx, "create", func(before *Snapshot, kvs map[string]storedKV) (plan, error) {
		if _, ok := kvs[key]; ok {
			return plan{}, fmt.Errorf("%s: %w", ref, ErrExists)
		}
		if err := applyProblems(before, []Resource{c}); err != nil {
			return plan{}, err
		}
		ops, err := e.putOps([]Resource{c}, kvs, before)
		return plan{ops: ops, kinds: kindsOf(ref), cmps: []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(key), "=", 0)}}, err
	})
}

// atRevision says (nil) whether ref's key, read as cur (ok: it exists), is
// at ModRevision rev; otherwise its error wraps ErrConflict, and
// ErrNotFound too when the key is gone.
func atRevision(ref Ref, cur storedKV, ok bool, rev int64) error {
	switch {
	case !ok:
		return fmt.Errorf("%s: %w: deleted since it was read (%w)", ref, ErrConflict, ErrNotFound)
	case cur.modRev != rev:
		return fmt.Errorf("%s: %w: changed since it was read (revision %d, now %d)", ref, ErrConflict, rev, cur.modRev)
	}
	return nil
}

// DeleteIf deletes ref only if its key's ModRevision is rev (one
// transaction with that compare); otherwise it returns an error wrapping
// ErrConflict, and ErrNotFound too when the key is gone. It is checked
// like Delete; an IPAMBlock, which no rule needs, is not checked.
func (e *EtcdStore) DeleteIf(ctx context.Context, ref Ref, rev int64) error {
	if e.closed() {
		return ErrClosed
	}
	ref, err := normalizeRef(ref)
	if err != nil {
		return err
	}
	key := e.key(ref)
	isAt := func(cur storedKV, ok bool) error { return atRevision(ref, cur, ok, rev) }
	cmp := clientv3.Compare(clientv3.ModRevision(key), "=", rev)
	if ref.Kind == KindIPAMBlock {
		return e.writeBlock(ctx, "delete", ref, nil, isAt, cmp)
	}
	return e.write(ctx, "delete", func(before *Snapshot, kvs map[string]storedKV) (plan, error) {
		cur, ok := kvs[key]
		if err := isAt(cur, ok); err != nil {
			return plan{}, err
		}
		after := before.Clone()
		after.Remove(ref)
		if err := newProblems(before, after, nil); err != nil {
			return plan{}, err
		}
		kinds := kindsOf(ref)
		return plan{ops: []clientv3.Op{clientv3.OpDelete(key)}, cmps: []clientv3.Cmp{cmp}, kinds: kinds, deleted: kinds}, nil
	})
}

// Update replaces r only if its key's ModRevision is rev; otherwise it
// returns an error wrapping ErrConflict, and ErrNotFound too when the key
// is gone. Otherwise it behaves as Apply of r alone, except that an
// IPAMBlock is checked against its pool only and written with a compare
// on its key and its pool's (see EtcdStore).
func (e *EtcdStore) Update(ctx context.Context, r Resource, rev int64) error {
	if e.closed() {
		return ErrClosed
	}
	c, err := prepareOne(r)
	if err != nil {
		return err
	}
	ref := RefOf(c)
	key := e.key(ref)
	isAt := func(cur storedKV, ok bool) error { return atRevision(ref, cur, ok, rev) }
	cmp := clientv3.Compare(clientv3.ModRevision(key), "=", rev)
	if b, ok := c.(*IPAMBlock); ok {
		return e.writeBlock(ctx, "update", ref, b, isAt, cmp)
	}
	return e.write(ctx, "update", func(before *Snapshot, kvs map[string]storedKV) (plan, error) {
		cur, ok := kvs[key]
		if err := isAt(cur, ok); err != nil {
			return plan{}, err
		}
		if err := applyProblems(before, []Resource{c}); err != nil {
			return plan{}, err
		}
		ops, err := e.putOps([]Resource{c}, kvs, before)
		return plan{ops: ops, kinds: kindsOf(ref), cmps: []clientv3.Cmp{cmp}}, err
	})
}
