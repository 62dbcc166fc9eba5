// Package ipam hands out workload addresses by blocks, as Calico does: a
// node claims a block (an aligned range of IPPool.spec.blockSize) of a pool
// whose nodeSelector matches it, and takes its workloads' addresses from its
// own blocks, so the other nodes need one route per block instead of one per
// workload.
//
// Every write is a compare-and-swap on one IPAMBlock resource
// (model.Versioned): a block is claimed by creating it, which fails when
// another node created it first, and an address is allocated by updating
// the block at the revision it was read at. So two nodes never hold the same
// block and two callers never get the same address, with any number of
// agents and calyxctl processes sharing a datastore.
//
// Allocate and ClaimBlock read only what they need (model.Lister): the
// node, the pools, the node's own blocks, and for a claim the names of the
// blocks held; never the whole model, so their cost does not grow with the
// number of endpoints, policies or other nodes' blocks.
package ipam

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/calyxnet/calyx/model"
	"github.com/calyxnet/calyx/selector"
)

// Store is what IPAM needs of a datastore: narrow reads for allocations
// and claims, a snapshot for the rarer operations that look at every
// block, and compare-and-swap writes and deletes of single resources.
// Every model.Datastore implements it.
type Store interface {
	Snapshot(ctx context.Context) (*model.Snapshot, error)
	model.Versioned
	model.Lister
}

// ErrPoolExhausted is wrapped by errors saying that no pool the node may use
// has a free block (or, from Allocate, that its blocks are full and no block
// is left to claim).
var ErrPoolExhausted = errors.New("pool exhausted")

// ErrNoPool is wrapped by errors saying that no pool may be used by a node:
// none exists, or each one is disabled, external, or has a nodeSelector that
// does not match the node's labels.
var ErrNoPool = errors.New("no usable IPPool")

// maxAttempts bounds the compare-and-swap retries of one operation. Each
// retry re-reads what it changes, so only a caller losing this many races
// in a row gives up.
const maxAttempts = 100

// ClaimBlock claims a new block for node and returns it. With pool "" the
// first pool (IPv4 before IPv6, then by name) the node may use that has a
// free block is taken; otherwise only the named one. Blocks are carved in
// order from the start of the pool, skipping the ones held: the lowest free
// block is claimed. A node may use a pool that is enabled, not external,
// and whose nodeSelector matches the labels of its Node, which must exist.
//
// A block is claimed by creating its IPAMBlock, which fails when it exists:
// racing claimers each get a different block, and the ones left without
// get an error wrapping ErrPoolExhausted.
func ClaimBlock(ctx context.Context, ds Store, node, pool string) (*model.IPAMBlock, error) {
	n, pools, err := nodeAndPools(ctx, ds, node)
	if err != nil {
		return nil, err
	}
	return claim(ctx, ds, n, pools, pool, false)
}

// claim is ClaimBlock with the node and the pools read. With adopt, a
// block that another caller claimed for the same node while this one was
// trying to is returned instead of claiming one more: concurrent
// allocations on one node then share the block they race for.
func claim(ctx context.Context, ds Store, n *model.Node, all map[string]*model.IPPool, pool string, adopt bool) (*model.IPAMBlock, error) {
	node := n.Metadata.Name
	pools, err := poolsFor(all, n, pool)
	if err != nil {
		return nil, err
	}
	taken, err := takenBlocks(ctx, ds)
	if err != nil {
		return nil, err
	}
	var full []string
	for _, p := range pools {
		b, err := claimIn(ctx, ds, node, p, taken, adopt)
		if err == nil {
			return b, nil
		}
		if !errors.Is(err, ErrPoolExhausted) {
			return nil, err
		}
		full = append(full, fmt.Sprintf("%s (%s, %d blocks of /%d)", model.Ref{Kind: model.KindIPPool, Name: p.Metadata.Name},
			p.Spec.CIDR, blockCount(p), blockSize(p)))
	}
	return nil, &exhaustedError{node: node, pools: full}
}

// exhaustedError says no pool a node may use has a free block.
type exhaustedError struct {
	node  string
	pools []string // each pool tried, described
}

func (e *exhaustedError) Error() string {
	return fmt.Sprintf("ipam: no free block for node %q: every block of %s is held: %v", e.node, strings.Join(e.pools, ", "), ErrPoolExhausted)
}

func (e *exhaustedError) Unwrap() error { return ErrPoolExhausted }

// claimIn claims the lowest free block of p, or returns ErrPoolExhausted;
// with adopt, see claim.
func claimIn(ctx context.Context, ds Store, node string, p *model.IPPool, taken map[string]bool, adopt bool) (*model.IPAMBlock, error) {
	for cidr, ok := firstBlock(p), true; ok; cidr, ok = nextBlock(p, cidr) {
		if taken[model.BlockName(cidr)] {
			continue
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		b := &model.IPAMBlock{
			Metadata: model.Metadata{Name: model.BlockName(cidr)},
			Spec:     model.IPAMBlockSpec{CIDR: cidr, Pool: p.Metadata.Name, Node: node},
		}
		// A conflict means the datastore changed while the create was
		// checked against it (another claim, anywhere): try again.
		_, err := retry(ctx, func() (struct{}, bool, error) {
			err := ds.Create(ctx, b)
			return struct{}{}, !errors.Is(err, model.ErrConflict), err
		})
		if err == nil {
			return b, nil
		}
		if !errors.Is(err, model.ErrExists) {
			return nil, fmt.Errorf("ipam: claiming block %s of %s for node %q: %w", cidr,
				model.Ref{Kind: model.KindIPPool, Name: p.Metadata.Name}, node, err)
		}
		if adopt {
			got, _, err := getBlock(ctx, ds, model.RefOf(b))
			if err == nil && got.Spec.Node == node {
				return got, nil
			}
		}
		// Another node claimed it since the names were read: try the next
		// one.
		taken[model.BlockName(cidr)] = true
	}
	return nil, ErrPoolExhausted
}

// Allocate hands out one free address of node's blocks to handle (an
// endpoint's name or an orchestrator's handle), claiming a new block when
// every block the node holds is full. It is idempotent per handle and
// node: when handle already holds an address in one of node's blocks (a
// retried allocation whose answer was lost), that address is returned
// again. A handle is looked up among node's blocks only (so that an
// allocation reads O(1) blocks, not all of them): the same handle on
// another node gets another address. IPv4 blocks are used before IPv6
// ones, lower blocks before higher, and the lowest free address of a block
// first. The node's own addresses are never handed out. Addresses other
// resources use without an allocation (an endpoint with a static address
// inside a block) are not looked for, since finding them means reading
// every endpoint; the datastore refuses an endpoint that would reuse one.
// The error wraps ErrPoolExhausted when the node's blocks are full and
// none is left to claim, ErrNoPool when the node may use no pool at all,
// and model.ErrNotFound when the Node does not exist.
func Allocate(ctx context.Context, ds Store, node, handle string) (netip.Addr, error) {
	if handle == "" {
		return netip.Addr{}, errors.New("ipam: allocate: a handle is required")
	}
	for attempt := 0; attempt < maxAttempts; attempt++ {
		n, pools, err := nodeAndPools(ctx, ds, node)
		if err != nil {
			return netip.Addr{}, err
		}
		blocks, err := ds.NodeBlocks(ctx, node)
		if err != nil {
			return netip.Addr{}, err
		}
		if a, _, ok := heldBy(blocks, handle); ok {
			return a, nil
		}
		used := nodeAddrs(n)
		for _, b := range usableBlocks(blocks, pools, n) {
			a, err := allocateIn(ctx, ds, b.Metadata.Name, node, handle, used)
			if err == nil {
				return a, nil
			}
			if !errors.Is(err, errFull) {
				return netip.Addr{}, err
			}
		}
		b, err := claim(ctx, ds, n, pools, "", true)
		if ex := (*exhaustedError)(nil); errors.As(err, &ex) {
			return netip.Addr{}, fmt.Errorf("ipam: node %q has no free address: its blocks are full and every block of %s is held: %w",
				node, strings.Join(ex.pools, ", "), ErrPoolExhausted)
		}
		if err != nil {
			return netip.Addr{}, err
		}
		a, err := allocateIn(ctx, ds, b.Metadata.Name, node, handle, used)
		if err == nil {
			return a, nil
		}
		if !errors.Is(err, errFull) {
			return netip.Addr{}, err
		}
		// The new block filled up (or went) before we could use it: start
		// over from a fresh read.
	}
	return netip.Addr{}, fmt.Errorf("ipam: allocate for node %q: gave up after %d attempts lost to concurrent writers", node, maxAttempts)
}

// heldBy finds the address handle holds in blocks (the first block, in
// their order, when several), and its block.
func heldBy(blocks []*model.IPAMBlock, handle string) (netip.Addr, *model.IPAMBlock, bool) {
	for _, b := range blocks {
		for a, h := range b.Spec.Allocations {
			if h == handle {
				return a, b, true
			}
		}
	}
	return netip.Addr{}, nil, false
}

// ReleaseHandle frees the address handle holds (in the block first by
// name, should handles of several nodes share the name). It is an error
// wrapping model.ErrNotFound when the handle holds none.
func ReleaseHandle(ctx context.Context, ds Store, handle string) (netip.Addr, error) {
	rs, err := ds.List(ctx, model.KindIPAMBlock)
	if err != nil {
		return netip.Addr{}, err
	}
	blocks := make([]*model.IPAMBlock, 0, len(rs))
	for _, r := range rs {
		if b, ok := r.(*model.IPAMBlock); ok {
			blocks = append(blocks, b)
		}
	}
	a, _, ok := heldBy(blocks, handle)
	if !ok {
		return netip.Addr{}, fmt.Errorf("ipam: handle %q holds no address: %w", handle, model.ErrNotFound)
	}
	return a, Release(ctx, ds, a)
}

// EmptyBlocks returns the blocks node holds that nothing uses: no
// allocation, and no endpoint, floating IP or node address inside. Each
// comes with the revision it was read at (model.Versioned.Get), which
// ReleaseEmptyBlock needs.
func EmptyBlocks(ctx context.Context, ds Store, node string) (map[string]int64, error) {
	snap, err := ds.Snapshot(ctx)
	if err != nil {
		return nil, err
	}
	used := usedAddrs(snap)
	out := map[string]int64{}
	for name, b := range snap.Blocks {
		if b.Spec.Node != node || len(b.Spec.Allocations) > 0 || holdsAny(b.Spec.CIDR, used) {
			continue
		}
		got, rev, err := getBlock(ctx, ds, model.Ref{Kind: model.KindIPAMBlock, Name: name})
		if errors.Is(err, model.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if got.Spec.Node == node && len(got.Spec.Allocations) == 0 {
			out[name] = rev
		}
	}
	return out, nil
}

// holdsAny says whether p holds one of used.
func holdsAny(p netip.Prefix, used map[netip.Addr]bool) bool {
	for a := range used {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// ReleaseEmptyBlock deletes block name only if it is still at rev, the
// revision EmptyBlocks read it empty at: an address allocated (and maybe
// released) since makes it a conflict (model.ErrConflict), and the block
// stays.
func ReleaseEmptyBlock(ctx context.Context, ds Store, name string, rev int64) error {
	if err := ds.DeleteIf(ctx, model.Ref{Kind: model.KindIPAMBlock, Name: name}, rev); err != nil {
		return fmt.Errorf("ipam: releasing empty block %s: %w", name, err)
	}
	return nil
}

// errFull says a block has no free address (or is no longer the node's).
var errFull = errors.New("block full")

// allocateIn takes the lowest free address of the named block for handle,
// retrying when another writer changed the block in between. It returns
// errFull when the block has no free address or is no longer node's.
func allocateIn(ctx context.Context, ds Store, name, node, handle string, used map[netip.Addr]bool) (netip.Addr, error) {
	ref := model.Ref{Kind: model.KindIPAMBlock, Name: name}
	return retry(ctx, func() (netip.Addr, bool, error) {
		b, rev, err := getBlock(ctx, ds, ref)
		if errors.Is(err, model.ErrNotFound) {
			return netip.Addr{}, true, errFull
		}
		if err != nil {
			return netip.Addr{}, true, err
		}
		if b.Spec.Node != node {
			return netip.Addr{}, true, errFull
		}
		a, ok := freeAddr(b, used)
		if !ok {
			return netip.Addr{}, true, errFull
		}
		nb := cloneBlock(b)
		nb.Spec.Allocations[a] = handle
		err = ds.Update(ctx, nb, rev)
		if errors.Is(err, model.ErrConflict) {
			return netip.Addr{}, false, err
		}
		if err != nil {
			return netip.Addr{}, true, fmt.Errorf("ipam: allocating %s in block %s: %w", a, b.Spec.CIDR, err)
		}
		return a, true, nil
	})
}

// Release frees addr in the block that holds it. It is an error wrapping
// model.ErrNotFound when no block holds addr or addr is not allocated. The
// block stays with its node, empty or not.
func Release(ctx context.Context, ds Store, addr netip.Addr) error {
	snap, err := ds.Snapshot(ctx)
	if err != nil {
		return err
	}
	var blk *model.IPAMBlock
	for _, b := range snap.Blocks {
		if b.Spec.CIDR.Contains(addr) {
			blk = b
			break
		}
	}
	if blk == nil {
		return fmt.Errorf("ipam: %s is in no IPAM block: %w", addr, model.ErrNotFound)
	}
	ref := model.RefOf(blk)
	_, err = retry(ctx, func() (struct{}, bool, error) {
		b, rev, err := getBlock(ctx, ds, ref)
		if errors.Is(err, model.ErrNotFound) {
			return struct{}{}, true, fmt.Errorf("ipam: %s is in no IPAM block: %w", addr, model.ErrNotFound)
		}
		if err != nil {
			return struct{}{}, true, err
		}
		if _, ok := b.Spec.Allocations[addr]; !ok {
			return struct{}{}, true, fmt.Errorf("ipam: %s is not allocated (block %s of node %q): %w",
				addr, b.Spec.CIDR, b.Spec.Node, model.ErrNotFound)
		}
		nb := cloneBlock(b)
		delete(nb.Spec.Allocations, addr)
		err = ds.Update(ctx, nb, rev)
		if errors.Is(err, model.ErrConflict) {
			return struct{}{}, false, err
		}
		if err != nil {
			return struct{}{}, true, fmt.Errorf("ipam: releasing %s in block %s: %w", addr, b.Spec.CIDR, err)
		}
		return struct{}{}, true, nil
	})
	return err
}

// ReleaseNode frees every block held by node, a node that no longer exists,
// with the allocations left in them (its workloads went with it), so other
// nodes can claim them. It refuses while the Node exists: its workloads may
// still use addresses of its blocks. Addresses that WorkloadEndpoints still
// use are never handed out again by Allocate, freed or not.
func ReleaseNode(ctx context.Context, ds Store, node string) error {
	snap, err := ds.Snapshot(ctx)
	if err != nil {
		return err
	}
	if _, ok := snap.Nodes[node]; ok {
		return fmt.Errorf("ipam: Node/%s still exists; its blocks are released only once it is deleted", node)
	}
	var names []string
	for name, b := range snap.Blocks {
		if b.Spec.Node == node {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	for _, name := range names {
		ref := model.Ref{Kind: model.KindIPAMBlock, Name: name}
		// Delete it only as read, still the node's: another ReleaseNode
		// may have freed it and a node claimed it again in between.
		_, err := retry(ctx, func() (struct{}, bool, error) {
			b, rev, err := getBlock(ctx, ds, ref)
			if errors.Is(err, model.ErrNotFound) {
				return struct{}{}, true, nil
			}
			if err != nil {
				return struct{}{}, true, err
			}
			if b.Spec.Node != node {
				return struct{}{}, true, nil
			}
			err = ds.DeleteIf(ctx, ref, rev)
			if errors.Is(err, model.ErrConflict) {
				return struct{}{}, false, err
			}
			if err != nil {
				return struct{}{}, true, fmt.Errorf("ipam: releasing block %s of node %q: %w", b.Spec.CIDR, node, err)
			}
			return struct{}{}, true, nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// DeadBlockRelease is what ReleaseDeadNode gave back of one block.
type DeadBlockRelease struct {
	Block netip.Prefix
	// Deleted says the whole block went back to the pool (with its
	// allocations); otherwise Freed of its allocations were released and
	// the block stays with its node.
	Deleted bool
	// Freed is how many allocations went, with the block or out of it.
	Freed int
}

// ReleaseDeadNode gives back what node, whose agent is gone (the caller
// decides that, from liveness), holds and nothing uses: each of its blocks
// in which no endpoint, floating IP or node address falls is deleted, and
// in the others only the allocations of addresses nothing uses are freed.
// An address still in use is never freed, so it cannot be handed out
// twice: the node's endpoints are the orchestrator's to delete, and a
// later call frees what they held. Each block is written at the revision
// it was read at (Update or DeleteIf): a block that changed meanwhile is
// in use by someone and is left for a later call, not retried. It returns
// what it released, in block order, also with an error (what was
// released before the error).
func ReleaseDeadNode(ctx context.Context, ds Store, node string) ([]DeadBlockRelease, error) {
	snap, err := ds.Snapshot(ctx)
	if err != nil {
		return nil, err
	}
	used := usedAddrs(snap)
	var held []*model.IPAMBlock
	for _, b := range snap.Blocks {
		if b.Spec.Node == node {
			held = append(held, b)
		}
	}
	slices.SortFunc(held, func(a, b *model.IPAMBlock) int { return comparePrefix(a.Spec.CIDR, b.Spec.CIDR) })
	var out []DeadBlockRelease
	for _, sb := range held {
		ref := model.RefOf(sb)
		b, rev, err := getBlock(ctx, ds, ref)
		if errors.Is(err, model.ErrNotFound) {
			continue
		}
		if err != nil {
			return out, err
		}
		if b.Spec.Node != node {
			continue
		}
		del, free := deadBlockFrees(b, used)
		switch {
		case del:
			err = ds.DeleteIf(ctx, ref, rev)
		case len(free) > 0:
			nb := cloneBlock(b)
			for _, a := range free {
				delete(nb.Spec.Allocations, a)
			}
			err = ds.Update(ctx, nb, rev)
		default:
			continue
		}
		if errors.Is(err, model.ErrConflict) {
			continue
		}
		if err != nil {
			return out, fmt.Errorf("ipam: releasing block %s of dead node %q: %w", b.Spec.CIDR, node, err)
		}
		r := DeadBlockRelease{Block: b.Spec.CIDR, Deleted: del, Freed: len(free)}
		if del {
			r.Freed = len(b.Spec.Allocations)
		}
		out = append(out, r)
	}
	return out, nil
}

// deadBlockFrees says what of b, a dead node's block, may go, given the
// addresses in use: the whole block (del) when none of them falls in it,
// otherwise the allocations (in address order) of addresses not in use.
func deadBlockFrees(b *model.IPAMBlock, used map[netip.Addr]bool) (del bool, free []netip.Addr) {
	if !holdsAny(b.Spec.CIDR, used) {
		return true, nil
	}
	for a := range b.Spec.Allocations {
		if !used[a] {
			free = append(free, a)
		}
	}
	slices.SortFunc(free, netip.Addr.Compare)
	return false, free
}

// retry runs op until it reports done, backing off a little (with jitter)
// between attempts so racing writers spread out.
func retry[T any](ctx context.Context, op func() (T, bool, error)) (T, error) {
	var zero T
	delay := time.Millisecond
	var last error
	for attempt := 0; attempt < maxAttempts; attempt++ {
		v, done, err := op()
		if done {
			return v, err
		}
		last = err
		select {
		case <-ctx.Done():
			return zero, ctx.Err()
		case <-time.After(delay/2 + rand.N(delay)):
		}
		delay = min(2*delay, 50*time.Millisecond)
	}
	return zero, fmt.Errorf("ipam: gave up after %d attempts lost to concurrent writers: %w", maxAttempts, last)
}

// getBlock reads one block with its revision.
func getBlock(ctx context.Context, ds Store, ref model.Ref) (*model.IPAMBlock, int64, error) {
	r, rev, err := ds.Get(ctx, ref)
	if err != nil {
		return nil, 0, err
	}
	b, ok := r.(*model.IPAMBlock)
	if !ok {
		return nil, 0, fmt.Errorf("ipam: %s: datastore returned a %T", ref, r)
	}
	return b, rev, nil
}

// cloneBlock copies b with its own Allocations map (never nil), so the
// resource read from the store, which is shared, is not changed.
func cloneBlock(b *model.IPAMBlock) *model.IPAMBlock {
	c := *b
	c.Spec.Allocations = make(map[netip.Addr]string, len(b.Spec.Allocations)+1)
	for a, h := range b.Spec.Allocations {
		c.Spec.Allocations[a] = h
	}
	if l := b.Metadata.Labels; l != nil {
		c.Metadata.Labels = make(map[string]string, len(l))
		for k, v := range l {
			c.Metadata.Labels[k] = v
		}
	}
	return &c
}

// nodeAndPools reads the named Node and every IPPool (by name). A missing
// Node is an error wrapping model.ErrNotFound.
func nodeAndPools(ctx context.Context, ds Store, node string) (*model.Node, map[string]*model.IPPool, error) {
	if node == "" {
		return nil, nil, errors.New("ipam: a node name is required")
	}
	r, _, err := ds.Get(ctx, model.Ref{Kind: model.KindNode, Name: node})
	if errors.Is(err, model.ErrNotFound) {
		return nil, nil, fmt.Errorf("ipam: Node/%s: %w (a node takes blocks only once it is registered)", node, model.ErrNotFound)
	}
	if err != nil {
		return nil, nil, err
	}
	n, ok := r.(*model.Node)
	if !ok {
		return nil, nil, fmt.Errorf("ipam: Node/%s: datastore returned a %T", node, r)
	}
	rs, err := ds.List(ctx, model.KindIPPool)
	if err != nil {
		return nil, nil, err
	}
	pools := make(map[string]*model.IPPool, len(rs))
	for _, r := range rs {
		if p, ok := r.(*model.IPPool); ok {
			pools[p.Metadata.Name] = p
		}
	}
	return n, pools, nil
}

// usable says why node n may not take blocks of pool p, or "" when it may.
func usable(p *model.IPPool, n *model.Node) string {
	switch {
	case p.Spec.Disabled:
		return "is disabled"
	case p.Spec.External:
		return "is external (floating IPs only)"
	case !p.Spec.CIDR.IsValid() || blockSize(p) < p.Spec.CIDR.Bits() || blockSize(p) > p.Spec.CIDR.Addr().BitLen():
		return fmt.Sprintf("has no valid cidr and blockSize (%s, %d)", p.Spec.CIDR, blockSize(p))
	}
	expr := p.Spec.NodeSelector
	if expr == "" {
		expr = model.DefaultNodeSelector
	}
	sel, err := selector.Parse(expr)
	if err != nil {
		return fmt.Sprintf("has an invalid nodeSelector %q: %v", expr, err)
	}
	if !sel.Matches(n.Metadata.Labels) {
		return fmt.Sprintf("has nodeSelector %q, which does not match Node/%s", expr, n.Metadata.Name)
	}
	return ""
}

// poolsFor lists the pools n may take blocks of, in the order they are
// tried (IPv4 first, then by name); with name set, just that pool.
func poolsFor(all map[string]*model.IPPool, n *model.Node, name string) ([]*model.IPPool, error) {
	if name != "" {
		p, ok := all[name]
		if !ok {
			return nil, fmt.Errorf("ipam: IPPool/%s: %w", name, model.ErrNotFound)
		}
		if why := usable(p, n); why != "" {
			return nil, fmt.Errorf("ipam: IPPool/%s %s: %w", name, why, ErrNoPool)
		}
		return []*model.IPPool{p}, nil
	}
	var out []*model.IPPool
	var why []string
	for _, p := range all {
		if w := usable(p, n); w != "" {
			why = append(why, fmt.Sprintf("IPPool/%s %s", p.Metadata.Name, w))
			continue
		}
		out = append(out, p)
	}
	if len(out) == 0 {
		if len(why) == 0 {
			return nil, fmt.Errorf("ipam: node %q: there is no IPPool: %w", n.Metadata.Name, ErrNoPool)
		}
		slices.Sort(why)
		return nil, fmt.Errorf("ipam: node %q may use no pool (%s): %w", n.Metadata.Name, strings.Join(why, "; "), ErrNoPool)
	}
	slices.SortFunc(out, func(a, b *model.IPPool) int {
		return cmp.Or(cmp.Compare(a.Spec.CIDR.Addr().BitLen(), b.Spec.CIDR.Addr().BitLen()),
			strings.Compare(a.Metadata.Name, b.Metadata.Name))
	})
	return out, nil
}

// usableBlocks lists the blocks of n's among blocks that addresses may
// still be taken from (in a pool n may use), IPv4 first, then in address
// order.
func usableBlocks(blocks []*model.IPAMBlock, pools map[string]*model.IPPool, n *model.Node) []*model.IPAMBlock {
	var out []*model.IPAMBlock
	for _, b := range blocks {
		if b.Spec.Node != n.Metadata.Name {
			continue
		}
		if p, ok := pools[b.Spec.Pool]; !ok || usable(p, n) != "" {
			continue
		}
		out = append(out, b)
	}
	slices.SortFunc(out, func(a, b *model.IPAMBlock) int { return comparePrefix(a.Spec.CIDR, b.Spec.CIDR) })
	return out
}

// comparePrefix orders prefixes IPv4 first, then by address, then by length.
func comparePrefix(a, b netip.Prefix) int {
	return cmp.Or(cmp.Compare(a.Addr().BitLen(), b.Addr().BitLen()), a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
}

// usedAddrs are the addresses in use although no block need list them:
// those of endpoints, floating IPs and nodes. A block holding one is not
// empty (EmptyBlocks).
func usedAddrs(snap *model.Snapshot) map[netip.Addr]bool {
	used := make(map[netip.Addr]bool)
	for _, ep := range snap.Endpoints {
		for _, p := range ep.Spec.IPNetworks {
			used[p.Addr()] = true
		}
	}
	for _, f := range snap.FloatingIPs {
		used[f.Spec.IP] = true
	}
	for _, n := range snap.Nodes {
		for _, p := range []netip.Prefix{n.Spec.IPv4Address, n.Spec.IPv6Address} {
			if p.IsValid() {
				used[p.Addr()] = true
			}
		}
	}
	return used
}

// nodeAddrs are n's own addresses, which Allocate never hands out.
func nodeAddrs(n *model.Node) map[netip.Addr]bool {
	used := make(map[netip.Addr]bool, 2)
	for _, p := range []netip.Prefix{n.Spec.IPv4Address, n.Spec.IPv6Address} {
		if p.IsValid() {
			used[p.Addr()] = true
		}
	}
	return used
}

// freeAddr returns the lowest address of b neither allocated nor used.
func freeAddr(b *model.IPAMBlock, used map[netip.Addr]bool) (netip.Addr, bool) {
	cidr := b.Spec.CIDR.Masked()
	for a := cidr.Addr(); a.IsValid() && cidr.Contains(a); a = a.Next() {
		if _, ok := b.Spec.Allocations[a]; ok || used[a] {
			continue
		}
		return a, true
	}
	return netip.Addr{}, false
}

// takenBlocks reads the names of the blocks held. A block's name is its
// cidr (model.BlockName), and every block of a pool has the pool's
// blockSize, so a candidate block is held exactly when its name is taken.
func takenBlocks(ctx context.Context, ds Store) (map[string]bool, error) {
	names, err := ds.Names(ctx, model.KindIPAMBlock)
	if err != nil {
		return nil, err
	}
	taken := make(map[string]bool, len(names))
	for _, n := range names {
		taken[n] = true
	}
	return taken, nil
}

// blockSize is p's blockSize, or its family's default when unset.
func blockSize(p *model.IPPool) int {
	switch {
	case p.Spec.BlockSize != 0:
		return p.Spec.BlockSize
	case p.Spec.CIDR.Addr().Is4():
		return model.DefaultBlockSizeV4
	}
	return model.DefaultBlockSizeV6
}

// firstBlock is the lowest block of p.
func firstBlock(p *model.IPPool) netip.Prefix {
	return netip.PrefixFrom(p.Spec.CIDR.Masked().Addr(), blockSize(p))
}

// nextBlock is the block after c in p, or false after the last one.
func nextBlock(p *model.IPPool, c netip.Prefix) (netip.Prefix, bool) {
	last := lastAddr(c)
	next := last.Next()
	if !next.IsValid() || !p.Spec.CIDR.Contains(next) {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(next, blockSize(p)), true
}

// lastAddr is the highest address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	host := p.Addr().BitLen() - p.Bits()
	for i := len(b) - 1; i >= 0 && host > 0; i-- {
		n := min(host, 8)
		b[i] |= byte(1<<n - 1)
		host -= n
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// blockCount is how many blocks p has, saturated for display.
func blockCount(p *model.IPPool) uint64 {
	shift := blockSize(p) - p.Spec.CIDR.Bits()
	if shift >= 63 {
		return 1 << 63
	}
	return 1 << shift
}

// BlockSize is how many addresses a block holds, saturated for display.
func BlockSize(b netip.Prefix) uint64 {
	shift := b.Addr().BitLen() - b.Bits()
	if shift >= 63 {
		return 1 << 63
	}
	return 1 << shift
}
