package model

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// This file holds what lets IPAM work on a large model without reading
// it: the compare-and-swap of one IPAMBlock, the per-node block index, and
// the narrow reads of Lister.

// writeBlock puts the IPAMBlock b (or, with b nil, deletes ref) in one
// transaction guarded by cmp, the compare on the block's key that check
// verified against the key as read (exists, ModRevision). A put is checked
// on its own (prepareOne did that) and against its pool only, read with
// the block and guarded by a compare on the pool key's ModRevision, so a
// pool changed or deleted meanwhile makes the write start over; no other
// key is read or compared (see EtcdStore for why no other block can
// overlap it). check's and the validation's errors are returned as they
// are.
func (e *EtcdStore) writeBlock(ctx context.Context, what string, ref Ref, b *IPAMBlock, check func(cur storedKV, ok bool) error, cmp clientv3.Cmp) error {
	key := e.key(ref)
	var poolKey string
	keys := []string{key}
	if b != nil {
		poolKey = e.key(Ref{Kind: KindIPPool, Name: b.Spec.Pool})
		keys = append(keys, poolKey)
	}
	return e.retryWrites(ctx, what, func() (bool, error) {
		kvs, err := e.readKeys(ctx, keys...)
		if err != nil {
			return false, fmt.Errorf("etcd %s %s: %w", what, ref, err)
		}
		cur, ok := kvs[key]
		if err := check(cur, ok); err != nil {
			return false, err
		}
		// before is the part of the model the block's rules read: the
		// block as stored and its pool.
		before := NewSnapshot()
		var old *IPAMBlock
		if ok {
			if stored, isBlock := e.parse(key, cur.value, cur.modRev).(*IPAMBlock); isBlock {
				old = stored
				before.Put(old)
			}
		}
		cmps := []clientv3.Cmp{cmp}
		var ops []clientv3.Op
		if b == nil {
			ops = append(ops, clientv3.OpDelete(key))
			ops = append(ops, e.affinityOps(old, nil)...)
		} else {
			if pool, ok := kvs[poolKey]; ok {
				if p := e.parse(poolKey, pool.value, pool.modRev); p != nil {
					before.Put(p)
				}
				cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(poolKey), "=", pool.modRev))
			}
			// Without its pool the block is refused here: nothing to
			// compare.
			if err := applyProblems(before, []Resource{b}); err != nil {
				return false, err
			}
			if ops, err = e.putOps([]Resource{b}, kvs, before); err != nil || len(ops) == 0 {
				return true, err
			}
		}
		return e.commit(ctx, what, cmps, ops)
	})
}

// affinityKey is the block index entry saying node holds block name.
func (e *EtcdStore) affinityKey(node, name string) string {
	return e.affPrefix + node + "/" + name
}

// affinityOps keep the block index in step with a block going from old
// (as stored; nil when new or unreadable) to b (nil when deleted).
func (e *EtcdStore) affinityOps(old, b *IPAMBlock) []clientv3.Op {
	var ops []clientv3.Op
	if old != nil && (b == nil || old.Spec.Node != b.Spec.Node) && validName(old.Spec.Node) {
		ops = append(ops, clientv3.OpDelete(e.affinityKey(old.Spec.Node, old.Metadata.Name)))
	}
	if b != nil && (old == nil || old.Spec.Node != b.Spec.Node) {
		ops = append(ops, clientv3.OpPut(e.affinityKey(b.Spec.Node, b.Metadata.Name), ""))
	}
	return ops
}

// keysPerTxn bounds the reads batched in one transaction, below etcd's
// default --max-txn-ops of 128.
const keysPerTxn = 100

// readKeys reads keys, each as stored (absent keys are left out), in
// transactions of at most keysPerTxn reads; one transaction is one
// revision.
func (e *EtcdStore) readKeys(ctx context.Context, keys ...string) (map[string]storedKV, error) {
	out := make(map[string]storedKV, len(keys))
	for batch := range slices.Chunk(keys, keysPerTxn) {
		ops := make([]clientv3.Op, len(batch))
		for i, k := range batch {
			ops[i] = clientv3.OpGet(k)
		}
		var resp *clientv3.TxnResponse
		if err := e.request(ctx, func(ctx context.Context) error {
			var err error
			resp, err = e.cli.Txn(ctx).Then(ops...).Commit()
			return err
		}); err != nil {
			return nil, err
		}
		for _, r := range resp.Responses {
			kvs := r.GetResponseRange().GetKvs()
			e.count(kvs)
			for _, kv := range kvs {
				out[string(kv.Key)] = storedKV{value: kv.Value, modRev: kv.ModRevision}
			}
		}
	}
	return out, nil
}

// NodeBlocks returns the IPAMBlocks whose spec.node is node, sorted by
// name, reading only those (through the block index, see EtcdStore): a
// block written without the index (before it existed, or by etcdctl) is
// missed. Blocks that do not parse are skipped. It returns an error for an
// invalid node name, ErrClosed, or an error naming etcd.
func (e *EtcdStore) NodeBlocks(ctx context.Context, node string) ([]*IPAMBlock, error) {
	names, err := e.indexed(ctx, node, "etcd blocks")
	if err != nil {
		return nil, err
	}
	index := make([]string, len(names))
	for i, name := range names {
		index[i] = e.key(Ref{Kind: KindIPAMBlock, Name: name})
	}
	kvs, err := e.readKeys(ctx, index...)
	if err != nil {
		return nil, fmt.Errorf("etcd blocks of node %q: %w", node, err)
	}
	var out []*IPAMBlock
	for _, key := range index {
		kv, ok := kvs[key]
		if !ok {
			continue
		}
		if b, ok := e.parse(key, kv.value, kv.modRev).(*IPAMBlock); ok && b.Spec.Node == node {
			out = append(out, b)
		}
	}
	return out, nil
}

// readKind reads the keys of kind (any spelling ParseKind accepts), with
// opts, and returns them with the canonical kind.
func (e *EtcdStore) readKind(ctx context.Context, kind, what string, opts ...clientv3.OpOption) (string, []*mvccpb.KeyValue, error) {
	k, err := ParseKind(kind)
	if err != nil {
		return "", nil, err
	}
	var kvs []*mvccpb.KeyValue
	if err := e.request(ctx, func(ctx context.Context) error {
		var err error
		kvs, _, err = e.readPages(ctx, e.kindPrefix(k), opts...)
		return err
	}); err != nil {
		return "", nil, fmt.Errorf("etcd %s %s: %w", what, k, err)
	}
	return k, kvs, nil
}

// List returns the resources of kind as Snapshot.Resources lists them,
// reading only that kind's keys. Values that do not parse are skipped.
// It returns an error for an unknown kind, ErrClosed, or an error naming
// etcd.
func (e *EtcdStore) List(ctx context.Context, kind string) ([]Resource, error) {
	if e.closed() {
		return nil, ErrClosed
	}
	k, kvs, err := e.readKind(ctx, kind, "list")
	if err != nil {
		return nil, err
	}
	s := NewSnapshot()
	for _, kv := range kvs {
		if r := e.parse(string(kv.Key), kv.Value, kv.ModRevision); r != nil {
			s.Put(r)
		}
	}
	return s.Resources(k), nil
}

// Names returns the names of the stored resources of kind, sorted,
// reading keys only. It returns an error for an unknown kind, ErrClosed,
// or an error naming etcd.
func (e *EtcdStore) Names(ctx context.Context, kind string) ([]string, error) {
	if e.closed() {
		return nil, ErrClosed
	}
	k, kvs, err := e.readKind(ctx, kind, "names", clientv3.WithKeysOnly())
	if err != nil {
		return nil, err
	}
	prefix := e.kindPrefix(k)
	names := make([]string, 0, len(kvs))
	for _, kv := range kvs {
		if name := strings.TrimPrefix(string(kv.Key), prefix); validName(name) {
			names = append(names, name)
		}
	}
	return names, nil
}

// IndexBlocks puts into the block index those of names (IPAMBlocks) whose
// spec.node is node and that it lacks: blocks written before the index
// existed (a store upgraded from an older calyx) or by hand (etcdctl).
// Allocate finds a node's blocks through the index only, so an agent runs
// this for its own node once it has read the model. Each entry goes in
// with a compare on its block's ModRevision, so a block changed meanwhile
// is left for the next run. It returns how many entries it added,
// ErrClosed, or an error naming etcd.
func (e *EtcdStore) IndexBlocks(ctx context.Context, node string, names []string) (int, error) {
	have, err := e.indexed(ctx, node, "etcd block index")
	if err != nil {
		return 0, err
	}
	indexed := make(map[string]bool, len(have))
	for _, name := range have {
		indexed[name] = true
	}
	var keys []string
	for _, name := range names {
		if !indexed[name] && validName(name) {
			keys = append(keys, e.key(Ref{Kind: KindIPAMBlock, Name: name}))
		}
	}
	if len(keys) == 0 {
		return 0, nil
	}
	kvs, err := e.readKeys(ctx, keys...)
	if err != nil {
		return 0, fmt.Errorf("etcd block index of node %q: %w", node, err)
	}
	added := 0
	for _, key := range keys {
		kv, ok := kvs[key]
		if !ok {
			continue
		}
		b, ok := e.parse(key, kv.value, kv.modRev).(*IPAMBlock)
		if !ok || b.Spec.Node != node {
			continue
		}
		var resp *clientv3.TxnResponse
		if err := e.request(ctx, func(ctx context.Context) error {
			var err error
			resp, err = e.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", kv.modRev)).
				Then(clientv3.OpPut(e.affinityKey(node, b.Metadata.Name), "")).Commit()
			return err
		}); err != nil {
			return added, fmt.Errorf("etcd block index of node %q: %w", node, err)
		}
		if resp.Succeeded {
			added++
		}
	}
	return added, nil
}

// indexed returns the names of the blocks the index says node holds;
// what names the call in errors.
func (e *EtcdStore) indexed(ctx context.Context, node, what string) ([]string, error) {
	if e.closed() {
		return nil, ErrClosed
	}
	if !validName(node) {
		return nil, fmt.Errorf("%s of node %q: not a valid node name", what, node)
	}
	prefix := e.affinityKey(node, "")
	var entries []*mvccpb.KeyValue
	if err := e.request(ctx, func(ctx context.Context) error {
		var err error
		entries, _, err = e.readPages(ctx, prefix, clientv3.WithKeysOnly())
		return err
	}); err != nil {
		return nil, fmt.Errorf("%s of node %q: %w", what, node, err)
	}
	names := make([]string, len(entries))
	for i, kv := range entries {
		names[i] = strings.TrimPrefix(string(kv.Key), prefix)
	}
	return names, nil
}
