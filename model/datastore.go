package model

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
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

// ErrNotFound is wrapped by errors about resources that do not exist.
var ErrNotFound = errors.New("not found")

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
}

func defaultOptions() options {
	return options{
		logger:   slog.Default(),
		debounce: 20 * time.Millisecond,
		maxDelay: 100 * time.Millisecond,
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
// before sending a snapshot (default 20ms); a snapshot is never delayed by
// more than five times this during a long burst.
func WithDebounce(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.debounce = d
			o.maxDelay = 5 * d
		}
	}
}

// Open opens the datastore named by a URL: "file:///var/lib/calyx" or a
// bare absolute path opens (creating if needed) a file datastore at that
// directory. "etcd://HOST:PORT[,HOST:PORT]" returns an error wrapping
// ErrNotImplemented for now. Any other URL is an error naming the problem.
func Open(rawURL string, opts ...Option) (Datastore, error) {
	if strings.HasPrefix(rawURL, "/") {
		return OpenFile(rawURL, opts...)
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
		return nil, fmt.Errorf("etcd datastore %w", ErrNotImplemented)
	case "":
		return nil, fmt.Errorf("invalid datastore url %q: want file:///DIR, an absolute path, or etcd://HOST:PORT", rawURL)
	}
	return nil, fmt.Errorf("unsupported datastore scheme %q in %q (want file or etcd)", u.Scheme, rawURL)
}
