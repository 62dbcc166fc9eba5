package model

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Datastore stores resources and lets the agent follow changes.
type Datastore interface {
	// Snapshot returns the current model.
	Snapshot(ctx context.Context) (*Snapshot, error)
	// Apply validates every resource and the snapshot that would result
	// (cross-resource rules); if anything fails nothing is written.
	// Resources are created or replaced.
	Apply(ctx context.Context, rs []Resource) error
	// Delete removes the named resources, all or nothing: an unknown ref is
	// an error ("IPPool/x: not found") and nothing is removed. The resulting
	// snapshot is validated too (deleting a pool that endpoints still use,
	// or an endpoint a FloatingIP refers to, is an error).
	Delete(ctx context.Context, refs []Ref) error
	// Watch sends the current snapshot first, then a new snapshot after
	// every change, coalescing bursts. The channel is closed when ctx ends
	// or the datastore is closed.
	Watch(ctx context.Context) (<-chan *Snapshot, error)
	// Close stops every watch and releases resources.
	Close() error
}

// Versioned is implemented by every Datastore: compare-and-swap on single
// resources, for read-modify-write cycles such as IPAM's.
type Versioned interface {
	// Get returns the stored resource and its revision (etcd: the key's
	// ModRevision; file store: a number that changes whenever the
	// resource's file does), or an error wrapping ErrNotFound. A Config
	// that is not stored is not found: the defaults have no revision.
	Get(ctx context.Context, ref Ref) (Resource, int64, error)
	// Create writes r only if no resource of its kind and name exists;
	// otherwise it returns an error wrapping ErrExists. It is validated
	// like Apply.
	Create(ctx context.Context, r Resource) error
	// Update replaces r only if the stored revision (as Get returns it)
	// equals rev; otherwise it returns an error wrapping ErrConflict (and
	// ErrNotFound as well when the resource is gone). It is validated like
	// Apply.
	Update(ctx context.Context, r Resource, rev int64) error
	// DeleteIf deletes the resource ref names only if its stored revision
	// equals rev; otherwise it returns an error wrapping ErrConflict (and
	// ErrNotFound as well when it is gone). It is checked like Delete.
	DeleteIf(ctx context.Context, ref Ref, rev int64) error
}

// Liveness tells which nodes' agents are running. Only the etcd store
// implements it for real; the file store's methods return an error
// wrapping ErrNotImplemented.
type Liveness interface {
	// KeepAlive registers node as live with a lease of ttl (at least a
	// second; etcd may round it up) and keeps it alive until ctx ends,
	// reconnecting with backoff; it returns only when ctx ends (with
	// ctx.Err()), the store is closed (ErrClosed), or at once for an
	// invalid node name. While it cannot reach etcd the node's key expires
	// on its own; it is not revoked when ctx ends either, so a restarted
	// agent does not flap its node's liveness.
	KeepAlive(ctx context.Context, node string, ttl time.Duration) error
	// Live returns the nodes whose liveness key exists now.
	Live(ctx context.Context) (map[string]bool, error)
}

// ErrNotFound is wrapped by errors about resources that do not exist.
var ErrNotFound = errors.New("not found")

// ErrExists is wrapped by Create's error when the resource already exists.
var ErrExists = errors.New("already exists")

// ErrConflict is wrapped by Update's error when the resource changed since
// the revision given, and by the etcd store's error when a write gave up
// because other writers kept changing the model under it.
var ErrConflict = errors.New("conflict")

// ErrClosed is returned by a Datastore's methods after Close.
var ErrClosed = errors.New("datastore is closed")

// ErrNotImplemented is returned by Open for datastore kinds that are planned
// but not built yet.
var ErrNotImplemented = errors.New("not implemented yet")

// Option configures a datastore opened with Open or OpenFile.
type Option func(*options)

type options struct {
	logger   *slog.Logger
	onError  func(error)
	debounce time.Duration
	maxDelay time.Duration

	// file store only: a test hook asked before each step of a commit
	// whether to stop there as if the process died (see FileStore.crash).
	crashAt func(step string) bool

	// etcd only
	etcdPrefix             string
	tlsCA, tlsCert, tlsKey string
	etcdDial               func(ctx context.Context, addr string) (net.Conn, error)
	status                 func(ok bool, why string)
}

func defaultOptions() options {
	return options{
		logger: slog.Default(),
		// A commit is read whole under the lock (file) or arrives in one
		// response (etcd), so the debounce only gathers separate writes
		// made together; it is short so that one change is seen at once.
		debounce: 2 * time.Millisecond,
		maxDelay: 100 * time.Millisecond,

		etcdPrefix: DefaultEtcdPrefix,
	}
}

// WithLogger sets the logger for problems that do not fail a call, chiefly
// resource files that cannot be parsed and are skipped. The default is
// slog.Default().
func WithLogger(l *slog.Logger) Option {
	return func(o *options) {
		if l != nil {
			o.logger = l
		}
	}
}

// WithErrorHandler sets a function called, in addition to logging, with
// each such problem (e.g. to count it or to fail a test).
func WithErrorHandler(fn func(error)) Option { return func(o *options) { o.onError = fn } }

// WithDebounce sets how long Watch waits for a burst of changes to end
// before sending a snapshot (default 2ms, with bursts cut at 100ms); a snapshot is never delayed by
// more than five times this during a long burst.
func WithDebounce(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.debounce = d
			o.maxDelay = 5 * d
		}
	}
}

// WithStatus sets a function the etcd store calls with ok=false and the
// reason when it loses etcd (requests failing, the watch's health probe
// failing) and with ok=true when it regains it; the first outcome is
// reported too. Calls are serialized and made only on changes; fn must not
// block or call the store. The file store never calls it.
func WithStatus(fn func(ok bool, why string)) Option {
	return func(o *options) { o.status = fn }
}

// WithTLS makes the etcd store connect over TLS, trusting the CA in caFile
// (the system's CAs when "") and, when certFile and keyFile are given,
// authenticating with that client certificate. Open fails if a file cannot
// be read.
func WithTLS(caFile, certFile, keyFile string) Option {
	return func(o *options) { o.tlsCA, o.tlsCert, o.tlsKey = caFile, certFile, keyFile }
}

// WithEtcdDialer makes the etcd store reach etcd through dial instead of
// dialling the address itself: for a process that is not in etcd's
// network namespace (the benchmark lab reaches etcd this way).
func WithEtcdDialer(dial func(ctx context.Context, addr string) (net.Conn, error)) Option {
	return func(o *options) { o.etcdDial = dial }
}

// DefaultEtcdPrefix is where the etcd store keeps its keys unless told
// otherwise.
const DefaultEtcdPrefix = "/calyx"

// WithEtcdPrefix sets the key prefix of the etcd store (default "/calyx"):
// resources live at <prefix>/resources/<kind lowercase>/<name>, liveness
// at <prefix>/liveness/<node>. Stores with different prefixes do not see
// each other. A trailing "/" is ignored.
func WithEtcdPrefix(p string) Option {
	return func(o *options) { o.etcdPrefix = p }
}

// Open opens the datastore named by a URL: "file:///var/lib/calyx" or a
// bare absolute path opens (creating if needed) a file datastore at that
// directory; "etcd://HOST:PORT[,HOST:PORT...]" opens an etcd store (see
// OpenEtcd) whose URL may carry the query parameters prefix, ca, cert and
// key, e.g. "etcd://10.0.0.1:2379,10.0.0.2:2379?ca=/etc/calyx/ca.pem&cert=/etc/calyx/client.pem&key=/etc/calyx/client-key.pem&prefix=/calyx".
// Options given to Open override the URL's. Any other URL is an error
// naming the problem.
func Open(rawURL string, opts ...Option) (Datastore, error) {
	if strings.HasPrefix(rawURL, "/") {
		return OpenFile(rawURL, opts...)
	}
	if strings.HasPrefix(rawURL, "etcd://") {
		// Not url.Parse: a list of hosts is not a URL's host.
		return openEtcdURL(rawURL, opts)
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("invalid datastore url %q: %w", rawURL, err)
	}
	switch u.Scheme {
	case "file":
		if (u.Host != "" && u.Host != "localhost") || !filepath.IsAbs(u.Path) {
			return nil, fmt.Errorf("invalid datastore url %q: want an absolute path, e.g. file:///var/lib/calyx", rawURL)
		}
		return OpenFile(u.Path, opts...)
	case "etcd":
		return nil, fmt.Errorf("invalid datastore url %q: want etcd://HOST:PORT[,HOST:PORT]", rawURL)
	case "":
		return nil, fmt.Errorf("invalid datastore url %q: want file:///DIR, an absolute path, or etcd://HOST:PORT", rawURL)
	}
	return nil, fmt.Errorf("unsupported datastore scheme %q in %q (want file or etcd)", u.Scheme, rawURL)
}

// TLSOptions checks the etcd TLS files given (as --etcd-ca, --etcd-cert and
// --etcd-key) for a datastore URL and returns the options that use them.
// It returns an error, naming the flag, when they are given for a datastore
// that is not etcd://, when a client certificate comes without its key or
// the other way round, or when a file cannot be read. None given: nil, nil.
func TLSOptions(url, ca, cert, key string) ([]Option, error) {
	if ca == "" && cert == "" && key == "" {
		return nil, nil
	}
	if !strings.HasPrefix(url, "etcd://") {
		return nil, fmt.Errorf("--etcd-ca, --etcd-cert and --etcd-key need an etcd:// datastore, not %q", url)
	}
	if (cert == "") != (key == "") {
		return nil, errors.New("--etcd-cert and --etcd-key go together: give both or neither")
	}
	for _, f := range []struct{ flag, path string }{{"--etcd-ca", ca}, {"--etcd-cert", cert}, {"--etcd-key", key}} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			return nil, fmt.Errorf("%s: %w", f.flag, err)
		}
	}
	return []Option{WithTLS(ca, cert, key)}, nil
}
