package ipam_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/calyxnet/calyx/ipam"
	"github.com/calyxnet/calyx/model"
	"github.com/calyxnet/calyx/tests/etcdtest"
)

// opener opens one more client of the datastore under test: each claimer
// gets its own, as each agent would.
type opener func(t *testing.T) ipam.Store

func fileOpener(dir string) opener {
	return func(t *testing.T) ipam.Store {
		ds, err := model.OpenFile(dir)
		if err != nil {
			t.Error(err)
			return nil
		}
		t.Cleanup(func() { ds.Close() })
		return ds
	}
}

func etcdOpener(url string) opener {
	return func(t *testing.T) ipam.Store {
		ds, err := model.Open(url, model.WithLogger(slog.New(slog.DiscardHandler)))
		if err != nil {
			t.Error(err)
			return nil
		}
		t.Cleanup(func() { ds.Close() })
		st, ok := ds.(ipam.Store)
		if !ok {
			t.Errorf("the etcd datastore (%T) does not implement model.Versioned", ds)
			return nil
		}
		return st
	}
}

// countLost counts the creates another claimer won.
type countLost struct {
	ipam.Store
	n *atomic.Int64
}

func (c countLost) Create(ctx context.Context, r model.Resource) error {
	err := c.Store.Create(ctx, r)
	if errors.Is(err, model.ErrExists) {
		c.n.Add(1)
	}
	return err
}

const (
	claimers   = 20
	poolCIDR   = "10.65.0.0/26"
	poolBlocks = 8 // /29 blocks of a /26
)

// setup stores the pool and one Node per claimer.
func setup(t *testing.T, ds ipam.Store) {
	t.Helper()
	a, ok := ds.(interface {
		Apply(context.Context, []model.Resource) error
	})
	if !ok {
		t.Fatalf("%T cannot Apply", ds)
	}
	rs := []model.Resource{pool("p", poolCIDR, 29)}
	for i := range claimers {
		rs = append(rs, node(fmt.Sprintf("node-%02d", i), nil))
	}
	if err := a.Apply(context.Background(), rs); err != nil {
		t.Fatal(err)
	}
}

// testConcurrentClaims runs claimers nodes at once, each claiming blocks
// until it is told the pool is exhausted, from a pool of fewer blocks than
// there are nodes, and checks no block went to two of them.
func testConcurrentClaims(t *testing.T, open opener) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	setup(t, open(t))

	type result struct {
		claimed []*model.IPAMBlock
		err     error
	}
	results := make([]result, claimers)
	stores := make([]ipam.Store, claimers)
	var lost atomic.Int64
	for i := range stores {
		st := open(t)
		if st == nil {
			t.FailNow()
		}
		stores[i] = countLost{st, &lost}
	}
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range claimers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for {
				b, err := ipam.ClaimBlock(ctx, stores[i], fmt.Sprintf("node-%02d", i), "")
				if err != nil {
					results[i].err = err
					return
				}
				results[i].claimed = append(results[i].claimed, b)
			}
		}()
	}
	close(start)
	wg.Wait()

	pl := netip.MustParsePrefix(poolCIDR)
	holder := map[netip.Prefix]string{}
	for i, r := range results {
		nd := fmt.Sprintf("node-%02d", i)
		if !errors.Is(r.err, ipam.ErrPoolExhausted) || !strings.Contains(r.err.Error(), "pool exhausted") {
			t.Errorf("%s stopped with %v, want a 'pool exhausted' error", nd, r.err)
		}
		for _, b := range r.claimed {
			c := b.Spec.CIDR
			if prev, ok := holder[c]; ok {
				t.Errorf("block %s handed to both %s and %s", c, prev, nd)
			}
			holder[c] = nd
			if c.Bits() != 29 || c.Masked() != c || !pl.Contains(c.Addr()) {
				t.Errorf("%s got %s, which is not a /29 block of %s", nd, c, pl)
			}
			if b.Spec.Node != nd || b.Spec.Pool != "p" {
				t.Errorf("%s got %+v", nd, b.Spec)
			}
		}
	}
	// Evidence the claims raced: creates that found the block taken.
	t.Logf("%d claims lost a race for a block and moved on", lost.Load())
	if len(holder) != poolBlocks {
		t.Errorf("%d blocks claimed, want all %d of the pool", len(holder), poolBlocks)
	}
	// The datastore agrees with what the claimers were told.
	stored := blocks(t, open(t))
	if len(stored) != len(holder) {
		t.Errorf("%d blocks stored, %d claimed", len(stored), len(holder))
	}
	for name, b := range stored {
		if holder[b.Spec.CIDR] != b.Spec.Node || name != model.BlockName(b.Spec.CIDR) {
			t.Errorf("stored block %s: %+v, but %q was told it holds it", name, b.Spec, holder[b.Spec.CIDR])
		}
	}
}

// testConcurrentAllocations has every node allocate addresses at once,
// several goroutines per node, until the pool runs out, and checks no
// address was handed out twice and every block records exactly what was
// handed out of it.
func testConcurrentAllocations(t *testing.T, open opener) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	setup(t, open(t))
	const nodes, perNode = 6, 3
	var mu sync.Mutex
	given := map[netip.Addr]string{}
	start := make(chan struct{})
	var wg sync.WaitGroup
	for n := range nodes {
		for g := range perNode {
			st := open(t)
			if st == nil {
				t.FailNow()
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				nd := fmt.Sprintf("node-%02d", n)
				for i := 0; ; i++ {
					h := fmt.Sprintf("%s-g%d-%d", nd, g, i)
					a, err := ipam.Allocate(ctx, st, nd, h)
					if err != nil {
						if !errors.Is(err, ipam.ErrPoolExhausted) {
							t.Errorf("%s: %v", h, err)
						}
						return
					}
					mu.Lock()
					if prev, ok := given[a]; ok {
						t.Errorf("%s handed to both %s and %s", a, prev, h)
					}
					given[a] = h
					mu.Unlock()
				}
			}()
		}
	}
	close(start)
	wg.Wait()
	if len(given) != 64 {
		t.Errorf("%d addresses handed out, want all 64 of %s", len(given), poolCIDR)
	}
	recorded := 0
	for _, b := range blocks(t, open(t)) {
		for a, h := range b.Spec.Allocations {
			recorded++
			if given[a] != h {
				t.Errorf("block %s records %s for %s, but it was handed to %q", b.Spec.CIDR, a, h, given[a])
			}
			if !strings.HasPrefix(h, b.Spec.Node+"-") {
				t.Errorf("%s (%s) was allocated in block %s of another node, %s", a, h, b.Spec.CIDR, b.Spec.Node)
			}
		}
	}
	if recorded != len(given) {
		t.Errorf("blocks record %d allocations, %d were handed out", recorded, len(given))
	}
}

func TestConcurrentClaimsFileStore(t *testing.T) {
	testConcurrentClaims(t, fileOpener(t.TempDir()))
}

func TestConcurrentAllocationsFileStore(t *testing.T) {
	testConcurrentAllocations(t, fileOpener(t.TempDir()))
}

// TestConcurrentClaimsEtcd is the proof: many agents claiming
// blocks at once against a real etcd never get the same block.
func TestConcurrentClaimsEtcd(t *testing.T) {
	srv := etcdtest.Start(t)
	testConcurrentClaims(t, etcdOpener(srv.URL()))
}

func TestConcurrentAllocationsEtcd(t *testing.T) {
	srv := etcdtest.Start(t)
	testConcurrentAllocations(t, etcdOpener(srv.URL()))
}

// TestConcurrentAllocateReadsOneBlock is the proof that an allocation
// reads its node's block, not the model: 100 allocations at once for 10
// nodes, against a real etcd holding 1,000 other nodes and 5,000
// endpoints, hand out 100 different addresses and read, each, well under
// 1% of what reading the model reads.
func TestConcurrentAllocateReadsOneBlock(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv := etcdtest.Start(t)
	open := func() *model.EtcdStore {
		ds, err := model.Open(srv.URL(), model.WithLogger(slog.New(slog.DiscardHandler)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ds.Close() })
		return ds.(*model.EtcdStore)
	}
	const nodes, allocations, fillerNodes, fillerEndpoints = 10, 100, 1000, 5000
	admin := open()
	rs := []model.Resource{pool("p", "10.65.0.0/16", 26), pool("filler", "10.128.0.0/12", 26)}
	for i := range nodes {
		rs = append(rs, node(fmt.Sprintf("node-%02d", i), nil))
	}
	if err := admin.Apply(ctx, rs); err != nil {
		t.Fatal(err)
	}
	// The filler is written with etcd's client, as the store would
	// store it, 100 keys a transaction: quicker than validating it.
	var filler []model.Resource
	for i := range fillerNodes {
		filler = append(filler, &model.Node{Metadata: model.Metadata{Name: fmt.Sprintf("filler-%04d", i), Labels: map[string]string{"rack": fmt.Sprint(i % 40)}},
			Spec: model.NodeSpec{IPv4Address: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 31, byte(i / 250), byte(i%250 + 1)}), 16)}})
	}
	for i := range fillerEndpoints {
		filler = append(filler, &model.WorkloadEndpoint{
			Metadata: model.Metadata{Name: fmt.Sprintf("ep-%05d", i), Labels: map[string]string{"app": fmt.Sprintf("app-%d", i%50), "tier": "web"}},
			Spec: model.WorkloadEndpointSpec{Node: fmt.Sprintf("filler-%04d", i%fillerNodes), Interface: fmt.Sprintf("tap%d", i),
				IPNetworks: []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 128, byte(i >> 8), byte(i)}), 32)}}})
	}
	cli := srv.Client(t)
	for start := 0; start < len(filler); start += 100 {
		var ops []clientv3.Op
		for _, r := range filler[start:min(start+100, len(filler))] {
			model.ApplyDefaults(r)
			data, err := json.Marshal(r)
			if err != nil {
				t.Fatal(err)
			}
			ops = append(ops, clientv3.OpPut(admin.Prefix()+"/resources/"+strings.ToLower(r.Kind())+"/"+r.Meta().Name, string(data)))
		}
		if _, err := cli.Txn(ctx).Then(ops...).Commit(); err != nil {
			t.Fatal(err)
		}
	}
	before := admin.BytesRead()
	s, err := admin.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	modelBytes := admin.BytesRead() - before
	if len(s.Nodes) != nodes+fillerNodes || len(s.Endpoints) != fillerEndpoints {
		t.Fatalf("the model holds %d nodes and %d endpoints", len(s.Nodes), len(s.Endpoints))
	}

	// One store per node, as each node's agent or calyxctl has its own.
	stores := make([]*model.EtcdStore, nodes)
	for i := range stores {
		stores[i] = open()
	}
	got := make([]netip.Addr, allocations)
	errs := make([]error, allocations)
	begin := make(chan struct{})
	var wg sync.WaitGroup
	for g := range allocations {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-begin
			got[g], errs[g] = ipam.Allocate(ctx, stores[g%nodes], fmt.Sprintf("node-%02d", g%nodes), fmt.Sprintf("handle-%03d", g))
		}()
	}
	t0 := time.Now()
	close(begin)
	wg.Wait()
	took := time.Since(t0)

	seen := map[netip.Addr]int{}
	for g, a := range got {
		if errs[g] != nil {
			t.Errorf("allocation %d: %v", g, errs[g])
			continue
		}
		if o, dup := seen[a]; dup {
			t.Errorf("%s handed to allocations %d and %d", a, o, g)
		}
		seen[a] = g
	}
	var read uint64
	for _, st := range stores {
		read += st.BytesRead()
	}
	perAlloc := read / allocations
	t.Logf("model: %d nodes, %d endpoints, %d bytes read whole; %d allocations for %d nodes in %v read %d bytes, %d per allocation (%.3f%% of the model)",
		len(s.Nodes), len(s.Endpoints), modelBytes, allocations, nodes, took, read, perAlloc, 100*float64(perAlloc)/float64(modelBytes))
	if perAlloc*100 >= modelBytes {
		t.Errorf("an allocation read %d bytes, not under 1%% of the model's %d", perAlloc, modelBytes)
	}
	// Without the race, an allocation reads the node, the pools and the
	// node's block a few times.
	st := stores[0]
	before = st.BytesRead()
	const alone = 10
	for i := range alone {
		if _, err := ipam.Allocate(ctx, st, "node-00", fmt.Sprintf("alone-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("one at a time, an allocation read %d bytes", (st.BytesRead()-before)/alone)
	s, err = admin.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d blocks claimed", len(s.Blocks))
	recorded := 0
	for _, b := range s.Blocks {
		recorded += len(b.Spec.Allocations)
	}
	if recorded != len(seen)+alone || len(seen) != allocations {
		t.Errorf("blocks record %d allocations, %d distinct addresses were handed out, want %d", recorded, len(seen), allocations)
	}
}
