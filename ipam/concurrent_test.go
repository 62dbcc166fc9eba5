package ipam_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

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
