package model

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// KeepAlive registers node as live: the key <prefix>/liveness/<node>,
// bound to a lease of ttl (rounded up to whole seconds, at least one; etcd
// may round it up further to its minimum), kept alive until ctx ends. When
// the lease is lost (etcd unreachable for longer than ttl, so the key
// expired) it grants a new one, retrying with backoff. It returns
// ctx.Err() when ctx ends, ErrClosed when the store is closed, and at once
// an error for an invalid node name. The lease is not revoked when ctx
// ends: the key expires after ttl, so an agent restart does not make its
// node look dead.
func (e *EtcdStore) KeepAlive(ctx context.Context, node string, ttl time.Duration) error {
	if !validName(node) {
		return fmt.Errorf("etcd liveness: %q is not a valid node name", node)
	}
	if !e.startWorker() {
		return ErrClosed
	}
	defer e.workers.Done()
	wctx, cancel := e.workerContext(ctx)
	defer cancel()
	secs := max(1, int64(math.Ceil(ttl.Seconds())))
	key := e.livePrefix + node
	var retry retryDelay
	for {
		err := e.keepAliveOnce(wctx, key, secs, &retry)
		if wctx.Err() == nil {
			e.opts.logger.Warn("datastore: keeping the node alive in etcd", "node", node, "err", err)
		}
		if wctx.Err() != nil || !sleepCtx(wctx, retry.next()) {
			if ctx.Err() == nil {
				return ErrClosed
			}
			return ctx.Err()
		}
	}
}

// keepAliveOnce grants a lease, writes the key with it and keeps it alive
// until the lease is lost or ctx ends.
func (e *EtcdStore) keepAliveOnce(ctx context.Context, key string, secs int64, retry *retryDelay) error {
	var lease *clientv3.LeaseGrantResponse
	if err := e.request(ctx, func(ctx context.Context) error {
		var err error
		lease, err = e.cli.Grant(ctx, secs)
		return err
	}); err != nil {
		return fmt.Errorf("etcd liveness: granting a lease: %w", err)
	}
	value := time.Now().UTC().Format(time.RFC3339)
	if err := e.request(ctx, func(ctx context.Context) error {
		_, err := e.cli.Put(ctx, key, value, clientv3.WithLease(lease.ID))
		return err
	}); err != nil {
		return fmt.Errorf("etcd liveness: writing %s: %w", key, err)
	}
	ch, err := e.cli.KeepAlive(ctx, lease.ID)
	if err != nil {
		return fmt.Errorf("etcd liveness: keeping the lease alive: %w", err)
	}
	retry.reset()
	for range ch {
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return errors.New("etcd liveness: the lease expired or was lost")
}

// Live returns the nodes whose liveness key exists now. It returns
// ErrClosed after Close, or an error naming etcd when it does not answer.
func (e *EtcdStore) Live(ctx context.Context) (map[string]bool, error) {
	if e.closed() {
		return nil, ErrClosed
	}
	var resp *clientv3.GetResponse
	if err := e.request(ctx, func(ctx context.Context) error {
		var err error
		resp, err = e.cli.Get(ctx, e.livePrefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
		return err
	}); err != nil {
		return nil, fmt.Errorf("etcd liveness: %w", err)
	}
	live := make(map[string]bool, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		if n := strings.TrimPrefix(string(kv.Key), e.livePrefix); validName(n) {
			live[n] = true
		}
	}
	return live, nil
}
