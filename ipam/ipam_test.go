package ipam_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/calyxnet/calyx/ipam"
	"github.com/calyxnet/calyx/model"
)

// fileStore returns a file datastore holding rs.
func fileStore(t *testing.T, rs ...model.Resource) *model.FileStore {
	t.Helper()
	ds, err := model.OpenFile(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ds.Close() })
	if len(rs) > 0 {
		if err := ds.Apply(context.Background(), rs); err != nil {
			t.Fatalf("apply: %v", err)
		}
	}
	return ds
}

func pool(name, cidr string, blockSize int, mod ...func(*model.IPPoolSpec)) *model.IPPool {
	p := &model.IPPool{Metadata: model.Metadata{Name: name}, Spec: model.IPPoolSpec{CIDR: netip.MustParsePrefix(cidr), BlockSize: blockSize}}
	for _, m := range mod {
		m(&p.Spec)
	}
	return p
}

var nodeAddrs atomic.Uint32

// node returns a Node with a fresh underlay address.
func node(name string, labels map[string]string) *model.Node {
	n := nodeAddrs.Add(1)
	addr := netip.AddrFrom4([4]byte{10, 30, byte(n >> 8), byte(n)})
	return &model.Node{Metadata: model.Metadata{Name: name, Labels: labels},
		Spec: model.NodeSpec{IPv4Address: netip.PrefixFrom(addr, 16)}}
}

func blocks(t *testing.T, ds ipam.Store) map[string]*model.IPAMBlock {
	t.Helper()
	s, err := ds.Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return s.Blocks
}

func TestClaimBlockCarvesInOrder(t *testing.T) {
	ctx := context.Background()
	ds := fileStore(t, pool("p", "10.65.0.0/24", 26), node("a", nil), node("b", nil))
	for i, tc := range []struct{ node, want string }{
		{"a", "10.65.0.0/26"}, {"b", "10.65.0.64/26"}, {"a", "10.65.0.128/26"},
	} {
		b, err := ipam.ClaimBlock(ctx, ds, tc.node, "")
		if err != nil {
			t.Fatalf("claim %d: %v", i, err)
		}
		want := netip.MustParsePrefix(tc.want)
		if b.Spec.CIDR != want || b.Spec.Node != tc.node || b.Spec.Pool != "p" || b.Metadata.Name != model.BlockName(want) {
			t.Errorf("claim %d = %s %+v, want %s of pool p for %s", i, b.Metadata.Name, b.Spec, want, tc.node)
		}
	}
	got := blocks(t, ds)
	if len(got) != 3 || got[model.BlockName(netip.MustParsePrefix("10.65.0.64/26"))].Spec.Node != "b" {
		t.Errorf("stored blocks = %v", got)
	}
}

func TestClaimBlockSkipsHeldBlocks(t *testing.T) {
	ctx := context.Background()
	held := netip.MustParsePrefix("10.65.0.0/26")
	ds := fileStore(t, pool("p", "10.65.0.0/24", 26), node("a", nil), node("b", nil),
		&model.IPAMBlock{Metadata: model.Metadata{Name: model.BlockName(held)}, Spec: model.IPAMBlockSpec{CIDR: held, Pool: "p", Node: "b"}})
	b, err := ipam.ClaimBlock(ctx, ds, "a", "p")
	if err != nil {
		t.Fatal(err)
	}
	if b.Spec.CIDR != netip.MustParsePrefix("10.65.0.64/26") {
		t.Errorf("claimed %s, want 10.65.0.64/26 (10.65.0.0/26 is b's)", b.Spec.CIDR)
	}
}

func TestPoolExhausted(t *testing.T) {
	ctx := context.Background()
	ds := fileStore(t, pool("small", "10.65.0.0/28", 30), node("a", nil))
	for i := range 4 {
		if _, err := ipam.ClaimBlock(ctx, ds, "a", ""); err != nil {
			t.Fatalf("claim %d of 4: %v", i, err)
		}
	}
	_, err := ipam.ClaimBlock(ctx, ds, "a", "")
	if !errors.Is(err, ipam.ErrPoolExhausted) {
		t.Fatalf("fifth claim: %v, want ErrPoolExhausted", err)
	}
	for _, want := range []string{"pool exhausted", "IPPool/small", "10.65.0.0/28", "4 blocks of /30", `node "a"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	// Allocate fills the four blocks (16 addresses), then says why not.
	for i := range 16 {
		if _, err := ipam.Allocate(ctx, ds, "a", fmt.Sprintf("h%d", i)); err != nil {
			t.Fatalf("allocation %d of 16: %v", i, err)
		}
	}
	_, err = ipam.Allocate(ctx, ds, "a", "h16")
	if !errors.Is(err, ipam.ErrPoolExhausted) || !strings.Contains(err.Error(), "no free address") {
		t.Errorf("allocation 17: %v, want a 'no free address ... pool exhausted' error", err)
	}
}

func TestAllocate(t *testing.T) {
	ctx := context.Background()
	// 10.65.0.1 is node a's own address: IPAM must skip it.
	a := node("a", nil)
	a.Spec.IPv4Address = netip.MustParsePrefix("10.65.0.1/24")
	ds := fileStore(t, pool("p", "10.65.0.0/24", 30), a, node("b", nil))
	var got []string
	for i := range 5 {
		a, err := ipam.Allocate(ctx, ds, "a", fmt.Sprintf("wl-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, a.String())
	}
	// The block 10.65.0.0/30 has three free addresses; the fourth and
	// fifth allocations claim the next block.
	want := []string{"10.65.0.0", "10.65.0.2", "10.65.0.3", "10.65.0.4", "10.65.0.5"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("allocated %v, want %v", got, want)
	}
	bs := blocks(t, ds)
	if len(bs) != 2 {
		t.Fatalf("blocks = %v, want two", bs)
	}
	first := bs[model.BlockName(netip.MustParsePrefix("10.65.0.0/30"))]
	if first == nil || first.Spec.Node != "a" || len(first.Spec.Allocations) != 3 ||
		first.Spec.Allocations[netip.MustParseAddr("10.65.0.2")] != "wl-1" {
		t.Errorf("first block = %+v", first)
	}
	// b's allocation claims b's own block, not a's.
	got8, err := ipam.Allocate(ctx, ds, "b", "wl-b")
	if err != nil || got8 != netip.MustParseAddr("10.65.0.8") {
		t.Errorf("b got %s, %v; want 10.65.0.8 from its own new block", got8, err)
	}
	// An endpoint that took 10.65.0.6 without IPAM (an OpenStack
	// subnet) is not looked for (that would read every endpoint), so a
	// gets it; the datastore refuses the second endpoint with it.
	static := &model.WorkloadEndpoint{Metadata: model.Metadata{Name: "static"}, Spec: model.WorkloadEndpointSpec{
		Node: "b", Interface: "tap0", IPNetworks: []netip.Prefix{netip.MustParsePrefix("10.65.0.6/32")}}}
	if err := ds.Apply(ctx, []model.Resource{static}); err != nil {
		t.Fatal(err)
	}
	got6, err := ipam.Allocate(ctx, ds, "a", "wl-5")
	if err != nil || got6 != netip.MustParseAddr("10.65.0.6") {
		t.Fatalf("a got %s, %v; want 10.65.0.6", got6, err)
	}
	dup := &model.WorkloadEndpoint{Metadata: model.Metadata{Name: "wl-5"}, Spec: model.WorkloadEndpointSpec{
		Node: "a", Interface: "tap5", IPNetworks: []netip.Prefix{netip.PrefixFrom(got6, 32)}}}
	if err := ds.Apply(ctx, []model.Resource{dup}); err == nil || !strings.Contains(err.Error(), "already used by WorkloadEndpoint/static") {
		t.Errorf("an endpoint reusing the static address: %v, want refused", err)
	}
	if _, err := ipam.Allocate(ctx, ds, "a", ""); err == nil {
		t.Error("an allocation without a handle succeeded")
	}
	if _, err := ipam.Allocate(ctx, ds, "ghost", "h"); !errors.Is(err, model.ErrNotFound) {
		t.Errorf("allocation for an unknown node: %v, want not found", err)
	}
}

func TestRelease(t *testing.T) {
	ctx := context.Background()
	ds := fileStore(t, pool("p", "10.65.0.0/24", 26), node("a", nil))
	a1, _ := ipam.Allocate(ctx, ds, "a", "one")
	a2, _ := ipam.Allocate(ctx, ds, "a", "two")
	if err := ipam.Release(ctx, ds, a1); err != nil {
		t.Fatal(err)
	}
	bs := blocks(t, ds)
	if len(bs) != 1 {
		t.Fatalf("blocks after release = %v, want the block kept", bs)
	}
	for _, b := range bs {
		if _, ok := b.Spec.Allocations[a1]; ok || b.Spec.Allocations[a2] != "two" {
			t.Errorf("allocations after releasing %s: %v", a1, b.Spec.Allocations)
		}
	}
	if again, err := ipam.Allocate(ctx, ds, "a", "three"); err != nil || again != a1 {
		t.Errorf("next allocation = %s, %v; want the released %s", again, err, a1)
	}
	if err := ipam.Release(ctx, ds, netip.MustParseAddr("10.65.0.40")); !errors.Is(err, model.ErrNotFound) ||
		!strings.Contains(err.Error(), "not allocated") {
		t.Errorf("releasing an unallocated address: %v", err)
	}
	if err := ipam.Release(ctx, ds, netip.MustParseAddr("10.65.1.1")); !errors.Is(err, model.ErrNotFound) ||
		!strings.Contains(err.Error(), "no IPAM block") {
		t.Errorf("releasing an address in no block: %v", err)
	}
}

func TestNodeSelector(t *testing.T) {
	ctx := context.Background()
	ds := fileStore(t,
		pool("a-rack1", "10.65.0.0/24", 26, func(s *model.IPPoolSpec) { s.NodeSelector = `rack == "r1"` }),
		pool("b-any", "10.66.0.0/24", 26),
		node("n1", map[string]string{"rack": "r1"}), node("n2", map[string]string{"rack": "r2"}))
	for nd, want := range map[string]string{"n1": "a-rack1", "n2": "b-any"} {
		b, err := ipam.ClaimBlock(ctx, ds, nd, "")
		if err != nil {
			t.Fatal(err)
		}
		if b.Spec.Pool != want {
			t.Errorf("%s claimed from %s, want %s", nd, b.Spec.Pool, want)
		}
	}
	_, err := ipam.ClaimBlock(ctx, ds, "n2", "a-rack1")
	if !errors.Is(err, ipam.ErrNoPool) || !strings.Contains(err.Error(), `nodeSelector "rack == \"r1\""`) {
		t.Errorf("n2 claiming from a-rack1: %v, want ErrNoPool naming the selector", err)
	}
	if _, err := ipam.ClaimBlock(ctx, ds, "n2", "nope"); !errors.Is(err, model.ErrNotFound) {
		t.Errorf("claiming from an unknown pool: %v, want not found", err)
	}
}

func TestExternalAndDisabledPoolsSkipped(t *testing.T) {
	ctx := context.Background()
	ext := pool("a-ext", "198.51.100.0/24", 26, func(s *model.IPPoolSpec) { s.External = true })
	off := pool("b-off", "10.99.0.0/24", 26, func(s *model.IPPoolSpec) { s.Disabled = true })
	ds := fileStore(t, ext, off, node("n", nil))
	_, err := ipam.ClaimBlock(ctx, ds, "n", "")
	if !errors.Is(err, ipam.ErrNoPool) {
		t.Fatalf("claim with only external and disabled pools: %v, want ErrNoPool", err)
	}
	for _, want := range []string{"IPPool/a-ext is external", "IPPool/b-off is disabled"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if _, err := ipam.Allocate(ctx, ds, "n", "h"); !errors.Is(err, ipam.ErrNoPool) {
		t.Errorf("allocate: %v, want ErrNoPool", err)
	}
	if err := ds.Apply(ctx, []model.Resource{pool("c-ok", "10.65.0.0/24", 26)}); err != nil {
		t.Fatal(err)
	}
	b, err := ipam.ClaimBlock(ctx, ds, "n", "")
	if err != nil || b.Spec.Pool != "c-ok" {
		t.Errorf("claim = %v, %v; want a block of c-ok", b, err)
	}
}

func TestIPv4BeforeIPv6(t *testing.T) {
	ctx := context.Background()
	ds := fileStore(t, pool("a-v6", "fd00:65::/120", 124), pool("b-v4", "10.65.0.0/24", 26), node("n", nil))
	a, err := ipam.Allocate(ctx, ds, "n", "h")
	if err != nil || a != netip.MustParseAddr("10.65.0.0") {
		t.Fatalf("first allocation = %s, %v; want 10.65.0.0 (IPv4 pools first)", a, err)
	}
	b, err := ipam.ClaimBlock(ctx, ds, "n", "a-v6")
	if err != nil || b.Spec.CIDR != netip.MustParsePrefix("fd00:65::/124") {
		t.Fatalf("v6 claim = %v, %v", b, err)
	}
	b, err = ipam.ClaimBlock(ctx, ds, "n", "a-v6")
	if err != nil || b.Spec.CIDR != netip.MustParsePrefix("fd00:65::10/124") || b.Metadata.Name != model.BlockName(b.Spec.CIDR) {
		t.Fatalf("second v6 claim = %v, %v", b, err)
	}
}

func TestReleaseNode(t *testing.T) {
	ctx := context.Background()
	ds := fileStore(t, pool("p", "10.65.0.0/25", 26), node("a", nil), node("b", nil))
	for range 2 {
		if _, err := ipam.ClaimBlock(ctx, ds, "a", ""); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ipam.Allocate(ctx, ds, "a", "wl"); err != nil {
		t.Fatal(err)
	}
	if _, err := ipam.ClaimBlock(ctx, ds, "b", ""); !errors.Is(err, ipam.ErrPoolExhausted) {
		t.Fatalf("b's claim while a holds both blocks: %v", err)
	}
	if err := ipam.ReleaseNode(ctx, ds, "a"); err == nil || !strings.Contains(err.Error(), "still exists") {
		t.Errorf("ReleaseNode of a live node: %v, want a refusal", err)
	}
	if len(blocks(t, ds)) != 2 {
		t.Fatal("ReleaseNode of a live node freed blocks")
	}
	if err := ds.Delete(ctx, []model.Ref{{Kind: model.KindNode, Name: "a"}}); err != nil {
		t.Fatalf("deleting node a: %v", err)
	}
	if err := ipam.ReleaseNode(ctx, ds, "a"); err != nil {
		t.Fatal(err)
	}
	if bs := blocks(t, ds); len(bs) != 0 {
		t.Errorf("blocks after ReleaseNode = %v, want none", bs)
	}
	if err := ipam.ReleaseNode(ctx, ds, "a"); err != nil {
		t.Errorf("second ReleaseNode: %v, want nothing to do", err)
	}
	b, err := ipam.ClaimBlock(ctx, ds, "b", "")
	if err != nil || b.Spec.CIDR != netip.MustParsePrefix("10.65.0.0/26") {
		t.Errorf("b's claim after a's release = %v, %v; want 10.65.0.0/26", b, err)
	}
}

// A retried allocation (same handle) gets the address the first one got,
// on that node; on another node it is another allocation. ReleaseHandle
// frees them.
func TestAllocateIdempotentPerHandle(t *testing.T) {
	ctx := context.Background()
	ds := fileStore(t, pool("p", "10.65.0.0/24", 28), node("a", nil), node("b", nil))
	first, err := ipam.Allocate(ctx, ds, "a", "vm-42")
	if err != nil {
		t.Fatal(err)
	}
	again, err := ipam.Allocate(ctx, ds, "a", "vm-42")
	if err != nil || again != first {
		t.Errorf("retried allocation: %s, %v; want %s again", again, err, first)
	}
	if other, err := ipam.Allocate(ctx, ds, "a", "vm-43"); err != nil || other == first {
		t.Errorf("another handle got %s, %v", other, err)
	}
	// A handle is per node: on b it is another allocation, in b's block.
	onB, err := ipam.Allocate(ctx, ds, "b", "vm-42")
	if err != nil || onB == first {
		t.Errorf("the handle on another node: %s, %v; want an address of b's own", onB, err)
	}
	// ReleaseHandle frees one, then the other (block names order them).
	for _, want := range []netip.Addr{first, onB} {
		a, err := ipam.ReleaseHandle(ctx, ds, "vm-42")
		if err != nil || a != want {
			t.Errorf("release by handle: %s, %v; want %s", a, err, want)
		}
	}
	if _, err := ipam.ReleaseHandle(ctx, ds, "vm-42"); !errors.Is(err, model.ErrNotFound) {
		t.Errorf("third release by handle: %v, want not found", err)
	}
}

// Empty blocks are the node's blocks nothing uses (no allocation, no
// endpoint address inside); one is released only at the revision it was
// found empty at.
func TestEmptyBlocks(t *testing.T) {
	ctx := context.Background()
	ds := fileStore(t, pool("p", "10.65.0.0/24", 28), node("a", nil), node("b", nil))
	if _, err := ipam.Allocate(ctx, ds, "a", "vm-1"); err != nil { // claims 10.65.0.0/28
		t.Fatal(err)
	}
	for _, n := range []string{"a", "a", "b"} { // 10.65.0.16/28, .32/28 for a; .48/28 for b
		if _, err := ipam.ClaimBlock(ctx, ds, n, ""); err != nil {
			t.Fatal(err)
		}
	}
	// An endpoint that took an address of a's third block without IPAM.
	if err := ds.Apply(ctx, []model.Resource{&model.WorkloadEndpoint{Metadata: model.Metadata{Name: "static"},
		Spec: model.WorkloadEndpointSpec{Node: "a", Interface: "tap0", IPNetworks: []netip.Prefix{netip.MustParsePrefix("10.65.0.33/32")}}}}); err != nil {
		t.Fatal(err)
	}
	second := model.BlockName(netip.MustParsePrefix("10.65.0.16/28"))
	empty, err := ipam.EmptyBlocks(ctx, ds, "a")
	if _, ok := empty[second]; err != nil || len(empty) != 1 || !ok {
		t.Fatalf("empty blocks of a: %v, %v; want %s only", empty, err, second)
	}
	// An address handed out of it since: the release is a conflict and the
	// block stays.
	ref := model.Ref{Kind: model.KindIPAMBlock, Name: second}
	r, rev, err := ds.Get(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	b := r.(*model.IPAMBlock)
	b.Spec.Allocations = map[netip.Addr]string{netip.MustParseAddr("10.65.0.17"): "vm-2"}
	if err := ds.Update(ctx, b, rev); err != nil {
		t.Fatal(err)
	}
	if err := ipam.ReleaseEmptyBlock(ctx, ds, second, empty[second]); !errors.Is(err, model.ErrConflict) {
		t.Fatalf("release of a block used since: %v, want a conflict", err)
	}
	if _, _, err := ds.Get(ctx, ref); err != nil {
		t.Fatalf("the block went: %v", err)
	}
	// Given back, it is empty again, and goes.
	if err := ipam.Release(ctx, ds, netip.MustParseAddr("10.65.0.17")); err != nil {
		t.Fatal(err)
	}
	empty, err = ipam.EmptyBlocks(ctx, ds, "a")
	if err != nil || len(empty) != 1 {
		t.Fatalf("empty blocks of a: %v, %v", empty, err)
	}
	if err := ipam.ReleaseEmptyBlock(ctx, ds, second, empty[second]); err != nil {
		t.Fatal(err)
	}
	if _, _, err := ds.Get(ctx, ref); !errors.Is(err, model.ErrNotFound) {
		t.Errorf("the released block is still there: %v", err)
	}
}
