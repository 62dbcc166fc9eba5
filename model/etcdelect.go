package model

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

var _ Elector = (*EtcdStore)(nil)

// etcdLockTTL is the lease of a lock Lead holds: how long a process that
// dies holding it keeps the others from the job. A variable so that tests
// can shorten it.
var etcdLockTTL = 10 * time.Second

// lockPrefix is where the locks of Lead live: <prefix>/locks/<name>/, one
// key per contender (etcd's concurrency.Mutex), bound to its lease.
func (e *EtcdStore) lockPrefix() string { return e.Prefix() + "/locks/" }

// Lead runs fn while holding the etcd lock <prefix>/locks/<name> (an etcd
// concurrency.Mutex on a lease of etcdLockTTL), if no other process holds
// it; see Elector. The lease is revoked when fn returns, so the lock is
// free at once; the context fn gets also ends when the store is closed.
func (e *EtcdStore) Lead(ctx context.Context, name string, fn func(ctx context.Context) error) (bool, error) {
	if !validName(name) {
		return false, fmt.Errorf("etcd election: %q is not a valid lock name", name)
	}
	if !e.startWorker() {
		return false, ErrClosed
	}
	defer e.workers.Done()
	wctx, cancel := e.workerContext(ctx)
	defer cancel()
	key := e.lockPrefix() + name
	var lease *clientv3.LeaseGrantResponse
	if err := e.request(wctx, func(ctx context.Context) error {
		var err error
		lease, err = e.cli.Grant(ctx, max(1, int64(math.Ceil(etcdLockTTL.Seconds()))))
		return err
	}); err != nil {
		return false, e.leadErr(ctx, fmt.Errorf("etcd election %s: granting a lease: %w", key, err))
	}
	// Revoked whatever happens, also when ctx ended: the lock (or our
	// place in its queue) goes with it, rather than after the ttl.
	defer func() {
		_ = e.request(context.WithoutCancel(ctx), func(ctx context.Context) error {
			_, err := e.cli.Revoke(ctx, lease.ID)
			return err
		})
	}()
	s, err := concurrency.NewSession(e.cli, concurrency.WithLease(lease.ID), concurrency.WithContext(wctx))
	if err != nil {
		return false, e.leadErr(ctx, fmt.Errorf("etcd election %s: keeping the lease alive: %w", key, err))
	}
	defer s.Orphan()
	m := concurrency.NewMutex(s, key)
	err = e.request(wctx, func(ctx context.Context) error { return m.TryLock(ctx) })
	if errors.Is(err, concurrency.ErrLocked) {
		return false, nil
	}
	if err != nil {
		return false, e.leadErr(ctx, fmt.Errorf("etcd election %s: %w", key, err))
	}
	// Held until the lease is lost: then fn must stop, another process
	// may hold the lock already.
	fctx, stop := context.WithCancel(wctx)
	defer stop()
	go func() {
		select {
		case <-s.Done():
			stop()
		case <-fctx.Done():
		}
	}()
	return true, fn(fctx)
}

// leadErr is what Lead returns for err: ctx's error when the caller gave
// up, ErrClosed when the store was closed meanwhile, err otherwise.
func (e *EtcdStore) leadErr(ctx context.Context, err error) error {
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case e.closed():
		return ErrClosed
	}
	return err
}
