package model

import (
	"context"
	"fmt"
)

// Elector runs a job in at most one of the processes sharing a datastore at
// a time: a cluster-wide chore (such as giving back the IPAM blocks of dead
// nodes) that every agent is ready to do but only one should. Only the etcd
// store implements it for real; the file store's Lead returns an error
// wrapping ErrNotImplemented.
type Elector interface {
	// Lead runs fn while holding the lock called name, if no other process
	// holds it now; it does not wait for it. It reports whether fn ran,
	// with fn's error. led is false with a nil error when another process
	// holds the lock. The lock is held by a lease that is kept alive while
	// fn runs: if it is lost (etcd unreachable for longer than its ttl), the
	// context fn gets is cancelled, since another process may take the lock
	// by then. A process that dies holding the lock frees it once its lease
	// expires. The lock is released when fn returns. Lead returns an error
	// for a name that is not a valid resource name, one naming etcd when it
	// cannot be reached (led is false then, fn did not run), ErrClosed after
	// Close, and ctx.Err() when ctx ends before fn runs.
	Lead(ctx context.Context, name string, fn func(ctx context.Context) error) (led bool, err error)
}

var _ Elector = (*FileStore)(nil)

// Lead returns an error wrapping ErrNotImplemented: a file datastore lives
// on one machine, where there is no one to elect.
func (f *FileStore) Lead(ctx context.Context, name string, fn func(ctx context.Context) error) (bool, error) {
	return false, fmt.Errorf("file datastore election of %q: %w", name, ErrNotImplemented)
}
